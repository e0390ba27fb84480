//! Column encryption: key derivation, the two encryption modes and the stored envelope.
//!
//! One 256-bit [`MasterKey`] yields, by HKDF-SHA256, a separate key per configured column and
//! mode. [`Mode::Randomized`] is AES-256-GCM with a fresh random 96-bit nonce per value;
//! [`Mode::Deterministic`] is AES-SIV (RFC 5297, 512-bit key), which maps equal plaintexts to
//! equal ciphertexts so the database can compare them. Both authenticate the column identity,
//! so a value copied into another column fails to decrypt.
//!
//! A ciphertext is stored as ASCII text, `pgc1$<m>$<kid>$<payload>`; the layout, the exact
//! derivation strings and test vectors are in `docs/FORMAT.md`. NULL is never encrypted: the
//! caller keeps NULL as NULL. The empty string is a value like any other and round-trips.
//!
//! Files: `error` (error types), `master` (the master key), `derive` (HKDF strings),
//! `envelope` (parsing and layout of the stored text), `keyring` (per-column ciphers,
//! encrypt/decrypt), `nonce` (batched OS randomness for GCM nonces).

mod derive;
mod envelope;
mod error;
mod keyring;
mod master;
mod nonce;
mod siv;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

use std::fmt;
use std::str::FromStr;

pub use envelope::{envelope_len, is_envelope, ENVELOPE_PREFIX};
pub use error::{CryptoError, KeyError, ParseModeError};
pub use keyring::Keyring;
pub use master::MasterKey;

/// How a column's values are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Mode {
    /// AES-256-GCM with a random nonce: equal plaintexts give different ciphertexts. Reveals
    /// only length and NULL-ness; nothing but `IS NULL` can be evaluated on ciphertext.
    #[default]
    Randomized,
    /// AES-SIV: equal plaintexts give equal ciphertexts, so `=`, `IN`, joins, `GROUP BY`,
    /// `DISTINCT` and unique constraints work on ciphertext. Additionally reveals equality.
    Deterministic,
}

impl Mode {
    /// The configuration name: `randomized` or `deterministic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Randomized => "randomized",
            Mode::Deterministic => "deterministic",
        }
    }

    /// The other mode.
    pub fn other(self) -> Mode {
        match self {
            Mode::Randomized => Mode::Deterministic,
            Mode::Deterministic => Mode::Randomized,
        }
    }

    /// The one-character tag of the mode in an envelope: `r` or `d`.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Mode::Randomized => b'r',
            Mode::Deterministic => b'd',
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ParseModeError;

    /// `randomized` or `deterministic`, ASCII case-insensitive.
    fn from_str(text: &str) -> Result<Mode, ParseModeError> {
        if text.eq_ignore_ascii_case("randomized") {
            Ok(Mode::Randomized)
        } else if text.eq_ignore_ascii_case("deterministic") {
            Ok(Mode::Deterministic)
        } else {
            Err(ParseModeError(text.to_owned()))
        }
    }
}
