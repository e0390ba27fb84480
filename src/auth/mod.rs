//! Authentication as an endpoint, for when pgcloak cannot relay a login: SCRAM-SHA-256 as
//! the server towards the client and as the client towards Postgres, the way PgBouncer
//! does it. Channel binding ties a SCRAM exchange to one TLS session, so with TLS on both
//! legs pgcloak runs one exchange per leg: it checks the client's proof against the user's
//! verifier (from `pg_authid` or an auth file), recovers the ClientKey from that proof and
//! logs in upstream with it. pgcloak never sees or stores a password.
//!
//! Everything here is pure (no sockets, no files): the proxy does the I/O.
//! - [`verifier`]: the stored `SCRAM-SHA-256$...` verifier, parsed and formatted.
//! - [`auth_file`]: a PgBouncer-style auth file of user → verifier.
//! - [`scram`]: the two exchanges, [`ServerExchange`] and [`ClientExchange`].
//! - [`channel_binding`]: the `tls-server-end-point` data of a certificate.
//! - [`messages`]: the wire messages of the SASL exchange.

pub mod auth_file;
pub mod channel_binding;
mod keys;
pub mod messages;
pub mod scram;
pub mod verifier;

pub use auth_file::{parse_auth_file, AuthFileError};
pub use channel_binding::{tls_server_end_point, ChannelBindingError};
pub use scram::{
    ClientExchange, ClientKey, ScramError, ServerExchange, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
pub use verifier::{Verifier, VerifierError};
