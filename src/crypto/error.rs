//! Error types of the crypto module.
//!
//! Every message here is safe to log and to send to a client: none of them ever contains a
//! plaintext, a key (or any part of one) or a whole ciphertext. Column identities and key ids
//! are not secret (key ids are printed in every stored envelope) and do appear.

/// Why a value could not be encrypted or an envelope could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The column is not configured for encryption, so the keyring holds no key for it.
    #[error("column {0} is not configured for encryption (no key in the keyring)")]
    UnknownColumn(String),
    /// The value is not a well-formed envelope; the reason never quotes the value.
    #[error("malformed encrypted value: {0}")]
    Malformed(&'static str),
    /// The envelope is well formed but its key id is not in the keyring: the value was encrypted
    /// for a column that is not configured here, or with another master key or key version.
    #[error(
        "encrypted value uses a key id that is not in the keyring \
         (other master key, key version or unconfigured column)"
    )]
    UnknownKey,
    /// The envelope's key id belongs to another configured column than the one it was read from.
    #[error("encrypted value belongs to column {found}, not to column {expected}")]
    WrongColumn {
        /// The column the caller read the value from.
        expected: String,
        /// The column the envelope's key id names.
        found: String,
    },
    /// Authentication failed: the envelope was tampered with, or was produced with another key.
    #[error("decryption failed: the encrypted value was modified or made with another key")]
    Decrypt,
    /// The cipher refused the input (only for values far beyond PostgreSQL's 1 GB field limit).
    #[error("encryption failed: value too large")]
    Encrypt,
    /// The operating system's random number generator failed to produce a nonce.
    #[error("the operating system random number generator failed")]
    Random,
}

/// Why a master key could not be loaded. Never includes the key text or any byte of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is empty (after trimming whitespace).
    #[error(
        "master key is empty (expected 32 bytes in standard base64, e.g. from `pgcloak keygen`)"
    )]
    Empty,
    /// The text is not standard base64 with padding.
    #[error("master key is not valid standard base64 (with `=` padding): {0}")]
    Base64(&'static str),
    /// The text decodes to the wrong number of bytes.
    #[error("master key must decode to exactly 32 bytes, found {found} bytes")]
    WrongLength {
        /// How many bytes the base64 text decoded to.
        found: usize,
    },
}

/// A mode name other than `randomized` or `deterministic`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encryption mode {0:?} (expected `randomized` or `deterministic`)")]
pub struct ParseModeError(pub String);
