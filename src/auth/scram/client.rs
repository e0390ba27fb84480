//! The client end: pgcloak towards Postgres, logging in with a ClientKey (recovered from the
//! client's own proof) instead of a password, and checking that Postgres knows the
//! verifier's ServerKey.
//!
//! ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage), StoredKey = SHA-256(ClientKey);
//! ServerSignature = HMAC(ServerKey, AuthMessage).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::super::keys::{ct_eq, hmac, xor, ClientKey, KEY_LEN};
use super::super::verifier::Verifier;
use super::attrs::{extensions, is_printable, key, text, value};
use super::{random_nonce, ScramError, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};

/// Longest `e=` value repeated in an error.
const MAX_SERVER_ERROR: usize = 64;

/// One SCRAM-SHA-256 login to Postgres, pgcloak being the client.
pub struct ClientExchange {
    client_key: ClientKey,
    verifier: Verifier,
    /// The `tls-server-end-point` data of Postgres's certificate, on a TLS upstream leg.
    channel_binding: Option<Vec<u8>>,
    state: State,
}

enum State {
    Initial,
    FirstSent {
        gs2_header: &'static str,
        client_first_bare: String,
        client_nonce: String,
    },
    FinalSent {
        server_signature: [u8; KEY_LEN],
    },
    Done,
}

impl ClientExchange {
    /// An exchange logging in with `client_key`, which must be the key `verifier` (the user's
    /// verifier, as Postgres stores it) was made from. `channel_binding` is the
    /// [`tls_server_end_point`](super::super::tls_server_end_point) data of Postgres's
    /// certificate when the upstream leg is TLS, else `None`.
    pub fn new(
        client_key: ClientKey,
        verifier: Verifier,
        channel_binding: Option<Vec<u8>>,
    ) -> Result<ClientExchange, ScramError> {
        if !verifier.matches(&client_key) {
            return Err(ScramError::KeyMismatch);
        }
        Ok(ClientExchange {
            client_key,
            verifier,
            channel_binding,
            state: State::Initial,
        })
    }

    /// Picks a mechanism from `offered` (the list of AuthenticationSASL) and returns it with
    /// client-first-message, for SASLInitialResponse. `SCRAM-SHA-256-PLUS` is chosen when
    /// offered and there is binding data; on TLS without it the gs2 flag is `y`.
    pub fn client_first<S: AsRef<str>>(
        &mut self,
        offered: &[S],
    ) -> Result<(&'static str, String), ScramError> {
        let nonce = random_nonce()?;
        self.client_first_with_nonce(offered, "", &nonce)
    }

    /// `user` goes into `n=`; Postgres ignores it, so pgcloak sends it empty, as libpq does.
    pub(super) fn client_first_with_nonce<S: AsRef<str>>(
        &mut self,
        offered: &[S],
        user: &str,
        client_nonce: &str,
    ) -> Result<(&'static str, String), ScramError> {
        if !matches!(self.state, State::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = State::Done;
        let offers = |name: &str| offered.iter().any(|m| m.as_ref() == name);
        let (mechanism, gs2_header) =
            if self.channel_binding.is_some() && offers(SCRAM_SHA_256_PLUS) {
                // The only binding type pgcloak computes: `channel_binding::TLS_SERVER_END_POINT`.
                (SCRAM_SHA_256_PLUS, "p=tls-server-end-point,,")
            } else if offers(SCRAM_SHA_256) {
                let flag = if self.channel_binding.is_some() {
                    "y,,"
                } else {
                    "n,,"
                };
                (SCRAM_SHA_256, flag)
            } else {
                return Err(ScramError::MechanismNotOffered);
            };
        let client_first_bare = format!("n={},r={client_nonce}", saslname(user));
        let message = format!("{gs2_header}{client_first_bare}");
        self.state = State::FirstSent {
            gs2_header,
            client_first_bare,
            client_nonce: client_nonce.to_owned(),
        };
        Ok((mechanism, message))
    }

    /// Takes server-first-message (from AuthenticationSASLContinue) and returns
    /// client-final-message, for SASLResponse.
    pub fn server_first(&mut self, data: &[u8]) -> Result<String, ScramError> {
        let State::FirstSent {
            gs2_header,
            client_first_bare,
            client_nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let server_first = text(data, "server-first-message is not text")?;
        let mut parts = server_first.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::UnsupportedExtension);
        }
        let nonce = value(first, 'r', "server-first-message has no nonce (r=)")?;
        if !is_printable(nonce)
            || nonce.len() <= client_nonce.len()
            || !nonce.starts_with(&client_nonce)
        {
            return Err(ScramError::NonceMismatch);
        }
        let salt = value(parts.next(), 's', "server-first-message has no salt (s=)")?;
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramError::Malformed("server-first-message has an invalid salt"))?;
        let iterations = value(
            parts.next(),
            'i',
            "server-first-message has no iteration count (i=)",
        )?;
        let iterations: u32 = iterations.parse().map_err(|_| {
            ScramError::Malformed("server-first-message has an invalid iteration count")
        })?;
        extensions(parts, "server-first-message has an invalid attribute")?;
        if salt != self.verifier.salt() || iterations != self.verifier.iterations() {
            return Err(ScramError::VerifierMismatch);
        }

        let mut cbind = gs2_header.as_bytes().to_vec();
        if gs2_header.starts_with("p=") {
            cbind.extend_from_slice(self.channel_binding.as_deref().unwrap_or_default());
        }
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(self.verifier.stored_key(), auth_message.as_bytes());
        let proof = xor(self.client_key.bytes(), &signature);
        self.state = State::FinalSent {
            server_signature: hmac(self.verifier.server_key(), auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)))
    }

    /// Takes server-final-message (from AuthenticationSASLFinal): `Ok` when the server's
    /// signature proves it holds the verifier.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let State::FinalSent { server_signature } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let message = text(data, "server-final-message is not text")?;
        let mut parts = message.split(',');
        let first = parts.next();
        if let Some(error) = first.and_then(|p| p.strip_prefix("e=")) {
            let shown = error
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_SERVER_ERROR);
            return Err(ScramError::ServerError(shown.collect()));
        }
        let signature = value(first, 'v', "server-final-message has no signature (v=)")?;
        let signature = key(signature, "server-final-message has an invalid signature")?;
        extensions(parts, "server-final-message has an invalid attribute")?;
        if !ct_eq(&signature, &server_signature) {
            return Err(ScramError::ServerSignatureMismatch);
        }
        Ok(())
    }
}

/// A user name as RFC 5802's saslname: `=` and `,` escaped as `=3D` and `=2C`.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}
