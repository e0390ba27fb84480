//! The master key: 32 secret bytes from which every column key is derived.
//!
//! Loaded from standard base64 (the form `pgcloak keygen` prints), wiped from memory on drop,
//! and never printed: its `Debug` is `MasterKey(..)` and load errors never quote the input.

use base64::engine::general_purpose::STANDARD;
use base64::{DecodeError, Engine as _};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::KeyError;

/// Length of the master key in bytes (256 bits).
pub(crate) const MASTER_KEY_LEN: usize = 32;

/// The 256-bit master key. Zeroized on drop; deliberately neither `Clone` nor `Display`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl MasterKey {
    /// Parses standard base64 with padding (surrounding whitespace is trimmed), which must decode
    /// to exactly 32 bytes. The error says what is wrong (and the length found) but never
    /// quotes the text or any byte of it.
    pub fn from_base64(text: &str) -> Result<MasterKey, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        // `Zeroizing<Vec<u8>>` wipes the whole allocation, spare capacity included, whether
        // the length check below passes or not.
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text)
                .map_err(|e| KeyError::Base64(describe(&e)))?,
        );
        MasterKey::from_slice(&decoded)
    }

    /// Copies exactly 32 bytes (an HSM's unwrapped key); the caller keeps `bytes` in a
    /// zeroizing buffer. The error gives the length found, never a byte.
    pub(crate) fn from_slice(bytes: &[u8]) -> Result<MasterKey, KeyError> {
        let bytes: &[u8; MASTER_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongLength { found: bytes.len() })?;
        Ok(MasterKey(*bytes))
    }

    /// 32 fresh bytes from the operating system's random number generator.
    ///
    /// # Panics
    /// Only if the operating system's random number generator fails.
    pub fn generate() -> MasterKey {
        let mut key = MasterKey([0; MASTER_KEY_LEN]);
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut key.0).expect("the operating system random number generator failed");
        key
    }

    /// Standard base64 with padding (44 characters), for `pgcloak keygen`.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The key bytes, for the key derivation only.
    pub(crate) fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// A master key from raw bytes (test vectors).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey(bytes)
    }
}

/// In constant time: two names for one key are found by comparing keys.
impl PartialEq for MasterKey {
    fn eq(&self, other: &MasterKey) -> bool {
        self.0
            .iter()
            .zip(other.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for MasterKey {}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A reason for a base64 failure that does not echo the offending byte (a key character).
fn describe(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::InvalidByte(..) => "invalid character",
        DecodeError::InvalidLength(_) => "invalid length",
        DecodeError::InvalidLastSymbol { .. } => "invalid last character",
        DecodeError::InvalidPadding => "invalid padding",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn parses_and_prints_standard_base64() {
        let key = MasterKey::from_base64(&format!("  {TEXT}\n")).unwrap();
        assert_eq!(key.bytes(), &std::array::from_fn::<u8, 32, _>(|i| i as u8));
        assert_eq!(key.to_base64(), TEXT);
    }

    #[test]
    fn generate_gives_distinct_keys_that_round_trip() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        assert_ne!(a.bytes(), b.bytes());
        assert_eq!(
            MasterKey::from_base64(&a.to_base64()).unwrap().bytes(),
            a.bytes()
        );
    }

    #[test]
    fn errors_are_precise_and_never_quote_the_input() {
        let short = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="; // 20 bytes
        let cases: Vec<(String, KeyError)> = [
            ("", KeyError::Empty),
            ("  \n", KeyError::Empty),
            (short, KeyError::WrongLength { found: 20 }),
            (
                &format!("{TEXT}{TEXT}"),
                KeyError::Base64("invalid character"),
            ),
            (
                &STANDARD.encode([7u8; 33]),
                KeyError::WrongLength { found: 33 },
            ),
            (
                &TEXT.replace('A', "*"),
                KeyError::Base64("invalid character"),
            ),
            (
                TEXT.trim_end_matches('='),
                KeyError::Base64("invalid padding"),
            ),
            (&TEXT[..10], KeyError::Base64("invalid padding")),
            ("AAECA", KeyError::Base64("invalid length")),
        ]
        .into_iter()
        .map(|(text, err)| (text.to_string(), err))
        .collect();
        for (text, expected) in cases {
            let err = MasterKey::from_base64(&text).unwrap_err();
            assert_eq!(err, expected, "input {text:?}");
            let message = err.to_string();
            for fragment in [text.trim(), "c2VjcmV0", "AAECAwQF", "*"] {
                if !fragment.is_empty() {
                    assert!(!message.contains(fragment), "{message:?} quotes the input");
                }
            }
        }
        assert!(MasterKey::from_base64(short)
            .unwrap_err()
            .to_string()
            .contains("found 20 bytes"));
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = MasterKey::from_bytes([0xAB; 32]);
        let debug = format!("{key:?} {key:#?}");
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
        assert!(!debug.contains("171") && !debug.to_lowercase().contains("ab"));
    }
}
