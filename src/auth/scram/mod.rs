//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres speaks it, both ends: [`ServerExchange`]
//! checks a client's proof and recovers its ClientKey; [`ClientExchange`] logs in to
//! Postgres with that ClientKey. Messages are the SASL payloads only: the wire frames that
//! carry them are in [`super::messages`].
//!
//! Parsing is strict, with Postgres's refusals: an authorization identity (`a=`), a
//! mandatory extension (`m=`), a channel-binding downgrade (gs2 flag `y` when the server
//! offers `SCRAM-SHA-256-PLUS`) and binding data the mechanism does not call for are all
//! errors. The user name in client-first-message is ignored, as Postgres ignores it: the
//! user is the one of the startup packet.

mod attrs;
mod client;
mod server;
#[cfg(test)]
mod tests;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

pub use super::keys::ClientKey;
pub use client::ClientExchange;
pub use server::{ServerExchange, MOCK_ITERATIONS};

pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Random bytes in a nonce, as Postgres and libpq use (base64: 24 characters).
const NONCE_BYTES: usize = 18;

/// Why a SCRAM exchange failed. After any error the exchange is over: every later call
/// returns [`ScramError::OutOfOrder`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The peer sent something that is not a SCRAM message of the expected kind.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("the client selected an invalid SASL authentication mechanism")]
    InvalidMechanism,
    /// gs2 flag `y` while the server offered channel binding: a man in the middle may have
    /// removed `SCRAM-SHA-256-PLUS` from the list the client saw.
    #[error("SCRAM channel binding negotiation error: the client supports SCRAM channel binding but thinks the server does not, while this server does support it")]
    ChannelBindingDowngrade,
    #[error("the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data")]
    UnexpectedChannelBinding,
    #[error("the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data")]
    MissingChannelBinding,
    #[error("unsupported SCRAM channel-binding type (only tls-server-end-point is supported)")]
    UnsupportedChannelBindingType,
    /// The binding data in client-final-message is not what this end of the TLS session
    /// computes, or the gs2 header differs from the one in client-first-message.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    #[error("the client uses an authorization identity, which is not supported")]
    AuthzidNotSupported,
    #[error("the client requires an unsupported SCRAM extension")]
    UnsupportedExtension,
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The proof does not verify: wrong password, tampered proof, or an unknown user (so
    /// that unknown users and wrong passwords look the same).
    #[error("password authentication failed")]
    WrongPassword,
    #[error("SCRAM message out of order")]
    OutOfOrder,
    #[error("could not generate a random SCRAM nonce")]
    Random,
    /// Client side: the server's mechanism list has no SCRAM-SHA-256.
    #[error("the server offers neither SCRAM-SHA-256 nor SCRAM-SHA-256-PLUS")]
    MechanismNotOffered,
    /// Client side: the ClientKey is not the one the verifier was made from.
    #[error("the ClientKey does not match the verifier")]
    KeyMismatch,
    /// Client side: the server's salt or iteration count is not the verifier's, so the
    /// verifier is stale (the password changed) or belongs to another user.
    #[error("the server's SCRAM salt or iteration count differs from the verifier's")]
    VerifierMismatch,
    /// Client side: the server could not prove it knows the verifier.
    #[error("invalid SCRAM server signature")]
    ServerSignatureMismatch,
    /// Client side: the server ended the exchange with `e=<value>`.
    #[error("the server reported a SCRAM error: {0}")]
    ServerError(String),
}

impl ScramError {
    /// The SQLSTATE Postgres reports for this failure of a client's login:
    /// `28P01` (invalid_password) for a proof that does not verify, else `08P01`
    /// (protocol_violation).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ScramError::WrongPassword => "28P01",
            _ => "08P01",
        }
    }
}

/// A fresh nonce: [`NONCE_BYTES`] random bytes in base64 (printable, never a comma).
fn random_nonce() -> Result<String, ScramError> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|_| ScramError::Random)?;
    Ok(STANDARD.encode(bytes))
}
