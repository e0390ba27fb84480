//! The server end: pgcloak towards a client. It checks the client's proof against the
//! user's verifier and, when it verifies, hands back the ClientKey the proof reveals.
//!
//! ClientSignature = HMAC(StoredKey, AuthMessage), ClientKey = ClientProof XOR
//! ClientSignature, and the proof verifies when SHA-256(ClientKey) = StoredKey.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::super::channel_binding::TLS_SERVER_END_POINT;
use super::super::keys::{ct_eq, hmac, sha256, xor, ClientKey};
use super::super::verifier::Verifier;
use super::attrs::{extensions, is_printable, key, text, value};
use super::{random_nonce, ScramError, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};

/// The iteration count of the mock verifier of an unknown user: Postgres's default
/// (`scram_iterations`). Verifiers made with another count tell unknown users apart.
pub const MOCK_ITERATIONS: u32 = 4096;

/// Bytes of the mock salt, as long as the salt Postgres makes.
const MOCK_SALT_BYTES: usize = 16;

/// One SCRAM-SHA-256 login of one client, pgcloak being the server.
pub struct ServerExchange {
    verifier: Verifier,
    /// An unknown user: the exchange runs to the end and then fails like a wrong password.
    doomed: bool,
    /// The `tls-server-end-point` data of pgcloak's certificate, on a TLS client leg.
    channel_binding: Option<Vec<u8>>,
    state: State,
}

enum State {
    Initial,
    FirstSent {
        /// The gs2 header as the client sent it (`n,,`, `y,,`, `p=tls-server-end-point,,`).
        gs2_header: String,
        bound: bool,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

impl ServerExchange {
    /// An exchange checking against `verifier`. `channel_binding` is the
    /// [`tls_server_end_point`](super::super::tls_server_end_point) data of pgcloak's own
    /// certificate when the client leg is TLS, else `None`.
    pub fn new(verifier: Verifier, channel_binding: Option<Vec<u8>>) -> ServerExchange {
        ServerExchange {
            verifier,
            doomed: false,
            channel_binding,
            state: State::Initial,
        }
    }

    /// An exchange for a user that has no verifier: the salt is derived from `server_secret`
    /// and the user name, so it is the same at every attempt, as a real user's would be, and
    /// the exchange fails at [`client_final`](Self::client_final) with the error of a wrong
    /// password. Postgres does the same (`scram_mock_salt`).
    pub fn for_unknown_user(
        server_secret: &[u8],
        user: &str,
        channel_binding: Option<Vec<u8>>,
    ) -> ServerExchange {
        let derive = |label: &str| hmac(server_secret, format!("{label}\0{user}").as_bytes());
        let salt = derive("pgcloak mock salt")[..MOCK_SALT_BYTES].to_vec();
        let verifier = Verifier::from_parts(
            MOCK_ITERATIONS,
            salt,
            derive("pgcloak mock StoredKey"),
            derive("pgcloak mock ServerKey"),
        );
        ServerExchange {
            doomed: true,
            ..ServerExchange::new(verifier, channel_binding)
        }
    }

    /// The mechanisms to offer in AuthenticationSASL, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.channel_binding.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Takes the client's choice of mechanism and its client-first-message (from
    /// SASLInitialResponse) and returns server-first-message.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<String, ScramError> {
        let nonce = random_nonce()?;
        self.client_first_with_nonce(mechanism, data, &nonce)
    }

    pub(super) fn client_first_with_nonce(
        &mut self,
        mechanism: &str,
        data: &[u8],
        server_nonce: &str,
    ) -> Result<String, ScramError> {
        if !matches!(self.state, State::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = State::Done;
        let plus = match mechanism {
            SCRAM_SHA_256_PLUS if self.channel_binding.is_some() => true,
            SCRAM_SHA_256 => false,
            _ => return Err(ScramError::InvalidMechanism),
        };
        let message = text(data, "client-first-message is not text")?;
        let (flag, rest) = message.split_once(',').ok_or(ScramError::Malformed(
            "client-first-message has no gs2 header",
        ))?;
        let bound = match flag {
            "n" | "y" if plus => return Err(ScramError::MissingChannelBinding),
            "n" => false,
            // The client could bind but believes we cannot: refuse, as Postgres does.
            "y" if self.channel_binding.is_some() => {
                return Err(ScramError::ChannelBindingDowngrade)
            }
            "y" => false,
            _ => match flag.strip_prefix("p=") {
                Some(_) if !plus => return Err(ScramError::UnexpectedChannelBinding),
                Some(TLS_SERVER_END_POINT) => true,
                Some(_) => return Err(ScramError::UnsupportedChannelBindingType),
                None => {
                    return Err(ScramError::Malformed(
                        "client-first-message has an invalid channel-binding flag",
                    ))
                }
            },
        };
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed(
            "client-first-message has an incomplete gs2 header",
        ))?;
        if authzid.starts_with("a=") {
            return Err(ScramError::AuthzidNotSupported);
        }
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "client-first-message has an invalid gs2 header",
            ));
        }
        let mut parts = bare.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::UnsupportedExtension);
        }
        // The user name is ignored: the login is for the user of the startup packet.
        value(first, 'n', "client-first-message has no user name (n=)")?;
        let client_nonce = value(parts.next(), 'r', "client-first-message has no nonce (r=)")?;
        if !is_printable(client_nonce) {
            return Err(ScramError::Malformed(
                "client-first-message has an invalid nonce",
            ));
        }
        extensions(parts, "client-first-message has an invalid attribute")?;

        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(self.verifier.salt()),
            self.verifier.iterations()
        );
        self.state = State::FirstSent {
            gs2_header: message[..message.len() - bare.len()].to_owned(),
            bound,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes client-final-message (from SASLResponse). When the proof verifies, returns
    /// server-final-message (for AuthenticationSASLFinal) and the client's ClientKey.
    pub fn client_final(&mut self, data: &[u8]) -> Result<(String, ClientKey), ScramError> {
        let State::FirstSent {
            gs2_header,
            bound,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let message = text(data, "client-final-message is not text")?;
        let (without_proof, proof) = message.rsplit_once(',').ok_or(ScramError::Malformed(
            "client-final-message has no proof (p=)",
        ))?;
        let proof = value(Some(proof), 'p', "client-final-message has no proof (p=)")?;
        let proof = key(proof, "client-final-message has an invalid proof")?;
        let mut parts = without_proof.split(',');
        let cbind = value(
            parts.next(),
            'c',
            "client-final-message has no channel binding (c=)",
        )?;
        let cbind = STANDARD.decode(cbind).map_err(|_| {
            ScramError::Malformed("client-final-message has invalid channel-binding data")
        })?;
        let mut expected = gs2_header.into_bytes();
        if bound {
            // `bound` is only set when the server has binding data.
            expected.extend_from_slice(self.channel_binding.as_deref().unwrap_or_default());
        }
        if !ct_eq(&cbind, &expected) {
            return Err(ScramError::ChannelBindingMismatch);
        }
        let final_nonce = value(parts.next(), 'r', "client-final-message has no nonce (r=)")?;
        if final_nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }
        extensions(parts, "client-final-message has an invalid attribute")?;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(self.verifier.stored_key(), auth_message.as_bytes());
        let client_key = Zeroizing::new(xor(&proof, &signature));
        if self.doomed || !ct_eq(&sha256(&client_key[..]), self.verifier.stored_key()) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(self.verifier.server_key(), auth_message.as_bytes());
        Ok((
            format!("v={}", STANDARD.encode(server_signature)),
            ClientKey::from_bytes(*client_key),
        ))
    }
}
