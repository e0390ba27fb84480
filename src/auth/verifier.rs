//! The SCRAM-SHA-256 verifier Postgres stores in `pg_authid.rolpassword`:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 throughout. It is
//! enough to check a client's proof and to verify a server's signature, not to compute a
//! proof from scratch.
//!
//! Errors say which part is wrong and never repeat the value: a verifier is a secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::keys::{hmac, salted_password, sha256, ClientKey, KEY_LEN};

const PREFIX: &str = "SCRAM-SHA-256$";

/// Why a string is not a SCRAM-SHA-256 verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    /// An md5 hash (`md5` + 32 hex digits): it cannot check a SCRAM proof.
    #[error("it is an md5 password hash, not a SCRAM-SHA-256 verifier; set the password again with password_encryption = 'scram-sha-256'")]
    Md5,
    /// No recognisable prefix: most likely a plain-text password.
    #[error("it is not a SCRAM-SHA-256 verifier (it does not start with \"SCRAM-SHA-256$\"); plain-text passwords are not supported")]
    NotScram,
    #[error("malformed SCRAM-SHA-256 verifier: {0}")]
    Malformed(&'static str),
}

/// A user's SCRAM-SHA-256 verifier. Its keys are wiped on drop and never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Verifier, VerifierError> {
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Err(if is_md5(text) {
                VerifierError::Md5
            } else {
                VerifierError::NotScram
            });
        };
        let (params, keys) = rest.split_once('$').ok_or(VerifierError::Malformed(
            "the '$' before the keys is missing",
        ))?;
        let (iterations, salt) = params.split_once(':').ok_or(VerifierError::Malformed(
            "the ':' between iteration count and salt is missing",
        ))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(VerifierError::Malformed(
            "the ':' between StoredKey and ServerKey is missing",
        ))?;
        let iterations = match iterations.parse::<u32>() {
            Ok(n) if n > 0 && iterations.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(VerifierError::Malformed(
                    "the iteration count is not a positive integer",
                ))
            }
        };
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| VerifierError::Malformed("the salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(VerifierError::Malformed("the salt is empty"));
        }
        Ok(Verifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    /// The verifier of `password` (no SASLprep: see [`salted_password`]). For tests and
    /// tooling; a running proxy reads verifiers, it never sees passwords.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = salted_password(password, salt, iterations);
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&hmac(&salted[..], b"Client Key")),
            server_key: hmac(&salted[..], b"Server Key"),
        }
    }

    /// Parts in the order of the text form; for the mock verifier of an unknown user.
    pub(crate) fn from_parts(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
    ) -> Verifier {
        Verifier {
            iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// The text form Postgres stores, which [`parse`](Self::parse) reads back.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub(crate) fn stored_key(&self) -> &[u8; KEY_LEN] {
        &self.stored_key
    }

    pub(crate) fn server_key(&self) -> &[u8; KEY_LEN] {
        &self.server_key
    }

    /// True when `key` is the ClientKey this verifier was made from.
    pub fn matches(&self, key: &ClientKey) -> bool {
        super::keys::ct_eq(&key.stored_key(), &self.stored_key)
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for Verifier {
    type Err = VerifierError;

    fn from_str(s: &str) -> Result<Verifier, VerifierError> {
        Verifier::parse(s)
    }
}

fn is_md5(text: &str) -> bool {
    text.len() == 35 && text.starts_with("md5") && text[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn decode_key(b64: &str, what: &'static str) -> Result<[u8; KEY_LEN], VerifierError> {
    let invalid = match what {
        "StoredKey" => "the StoredKey is not base64 of 32 bytes",
        _ => "the ServerKey is not base64 of 32 bytes",
    };
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| VerifierError::Malformed(invalid))?;
    bytes
        .try_into()
        .map_err(|_| VerifierError::Malformed(invalid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's user "user" with password "pencil".
    const RFC7677: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn derives_the_rfc_7677_verifier_from_the_password() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = Verifier::from_password("pencil", &salt, 4096);
        assert_eq!(verifier.encode(), RFC7677);
        assert_eq!(Verifier::parse(RFC7677).unwrap(), verifier);
        assert!(verifier.matches(&ClientKey::from_password("pencil", &salt, 4096)));
        assert!(!verifier.matches(&ClientKey::from_password("pencil!", &salt, 4096)));
    }

    #[test]
    fn parse_and_encode_round_trip() {
        let verifier = Verifier::from_password("pw", b"0123456789abcdef", 10);
        let parsed: Verifier = verifier.encode().parse().unwrap();
        assert_eq!(parsed, verifier);
        assert_eq!(parsed.iterations(), 10);
        assert_eq!(parsed.salt(), b"0123456789abcdef");
    }

    #[test]
    fn names_what_is_wrong() {
        let md5 = format!("md5{}", "a".repeat(32));
        assert_eq!(Verifier::parse(&md5), Err(VerifierError::Md5));
        assert_eq!(Verifier::parse("hunter2"), Err(VerifierError::NotScram));
        assert_eq!(Verifier::parse(""), Err(VerifierError::NotScram));
        let key = STANDARD.encode([1u8; 32]);
        let cases = [
            (
                "SCRAM-SHA-256$4096:c2FsdA==".to_owned(),
                "'$' before the keys",
            ),
            (
                format!("SCRAM-SHA-256$4096$c2FsdA==:{key}:{key}"),
                "iteration count and salt",
            ),
            (
                format!("SCRAM-SHA-256$4096:c2FsdA==${key}"),
                "StoredKey and ServerKey",
            ),
            (
                format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
                "positive integer",
            ),
            (
                format!("SCRAM-SHA-256$+5:c2FsdA==${key}:{key}"),
                "positive integer",
            ),
            (
                format!("SCRAM-SHA-256$x:c2FsdA==${key}:{key}"),
                "positive integer",
            ),
            (
                format!("SCRAM-SHA-256$4096:!!${key}:{key}"),
                "salt is not valid",
            ),
            (format!("SCRAM-SHA-256$4096:${key}:{key}"), "salt is empty"),
            (
                format!("SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:{key}"),
                "StoredKey",
            ),
            (
                format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}x"),
                "ServerKey",
            ),
        ];
        for (text, needle) in cases {
            let err = Verifier::parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains(&key), "error repeats the secret: {err}");
        }
    }

    #[test]
    fn debug_hides_the_keys() {
        let verifier = Verifier::parse(RFC7677).unwrap();
        assert_eq!(format!("{verifier:?}"), "Verifier { iterations: 4096, .. }");
    }
}
