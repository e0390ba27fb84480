//! pgcloak as the SCRAM endpoint of both legs (config `auth`), for when a SCRAM exchange
//! cannot be relayed: channel binding ties it to one TLS session, and with TLS on both legs
//! there are two. When Postgres asks for SASL, pgcloak runs SCRAM-SHA-256 with the client
//! against the user's verifier (SCRAM-SHA-256-PLUS bound to pgcloak's certificate when the
//! client leg is TLS), recovers the ClientKey from the client's proof, and logs in upstream
//! as the same user with it (PLUS bound to Postgres's certificate when offered). Any other
//! request of Postgres's (md5, cleartext, AuthenticationOk) is relayed as before.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::messages::{Authentication, SaslInitialResponse, SaslResponse};
use crate::auth::{tls_server_end_point, ClientExchange, ScramError, ServerExchange, Verifier};
use crate::protocol::error::{error_response, sqlstate, Severity};

/// Authentication messages are small; anything longer is not one.
const MAX_AUTH_FRAME: usize = 64 * 1024;
/// SQLSTATE invalid_password: what Postgres answers a wrong password and an unknown user.
const INVALID_PASSWORD: &str = "28P01";

/// Where the users' SCRAM verifiers come from.
pub struct AuthSource {
    lookup: Lookup,
    /// Makes an unknown user's mock exchange look like a real one (fixed per process).
    secret: [u8; 32],
}

enum Lookup {
    /// user → verifier (`auth.file`).
    File(HashMap<String, Verifier>),
    /// `auth.query` over pgcloak's own connection as `auth.user`, opened when first needed
    /// and again after it breaks.
    Query {
        config: Box<tokio_postgres::Config>,
        tls: Option<Arc<crate::tls::UpstreamTls>>,
        query: String,
        client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    },
}

impl std::fmt::Debug for AuthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.lookup {
            Lookup::File(users) => write!(f, "AuthSource::File({} users)", users.len()),
            Lookup::Query { query, .. } => write!(f, "AuthSource::Query({query:?})"),
        }
    }
}

/// The default `auth.query`.
pub const DEFAULT_AUTH_QUERY: &str =
    "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1";

impl AuthSource {
    fn with(lookup: Lookup) -> AuthSource {
        let mut secret = [0u8; 32];
        // Without randomness the mock salt is still per user, only predictable.
        let _ = getrandom::fill(&mut secret);
        AuthSource { lookup, secret }
    }

    pub fn from_file(users: HashMap<String, Verifier>) -> AuthSource {
        AuthSource::with(Lookup::File(users))
    }

    /// Verifiers read with `query` (one parameter: the user name; columns: name,
    /// verifier) over a connection made with `config` and the upstream leg's TLS.
    pub fn from_query(
        config: tokio_postgres::Config,
        tls: Option<Arc<crate::tls::UpstreamTls>>,
        query: String,
    ) -> AuthSource {
        AuthSource::with(Lookup::Query {
            config: Box::new(config),
            tls,
            query,
            client: tokio::sync::Mutex::new(None),
        })
    }

    /// The user's verifier; `None` for a user without one (unknown, no password, or md5).
    async fn verifier(&self, user: &str) -> Result<Option<Verifier>, String> {
        let (config, tls, query, client) = match &self.lookup {
            Lookup::File(users) => return Ok(users.get(user).cloned()),
            Lookup::Query {
                config,
                tls,
                query,
                client,
            } => (config, tls, query, client),
        };
        let mut client = client.lock().await;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            *client = Some(connect(config, tls.as_deref()).await?);
        }
        let Some(connection) = client.as_ref() else {
            return Err("no connection".into());
        };
        let rows = connection
            .query(query.as_str(), &[&user])
            .await
            .map_err(|e| format!("auth.query failed: {e}"))?;
        let text: Option<String> = rows
            .first()
            .and_then(|row| row.try_get::<_, Option<String>>(1).ok())
            .flatten();
        Ok(text.and_then(|t| Verifier::parse(&t).ok()))
    }
}

async fn connect(
    config: &tokio_postgres::Config,
    tls: Option<&crate::tls::UpstreamTls>,
) -> Result<tokio_postgres::Client, String> {
    let failed = |e: tokio_postgres::Error| format!("cannot connect as auth.user: {e}");
    let hosts = config.get_hosts();
    let host = match hosts.first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => return Err("auth: no upstream host".into()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect as auth.user: {e}"))?;
    match tls {
        Some(tls) => {
            let mut config = config.clone();
            config.ssl_mode(tls.ssl_mode());
            let mut tls = tls.clone();
            let connect =
                tokio_postgres::tls::MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(
                    &mut tls, &host,
                )
                .map_err(|e| e.to_string())?;
            let (client, connection) = config.connect_raw(tcp, connect).await.map_err(failed)?;
            tokio::spawn(connection);
            Ok(client)
        }
        None => {
            let (client, connection) = config
                .connect_raw(tcp, tokio_postgres::NoTls)
                .await
                .map_err(failed)?;
            tokio::spawn(connection);
            Ok(client)
        }
    }
}

/// One message: its tag and body.
struct Frame {
    tag: u8,
    body: Bytes,
}

impl Frame {
    fn bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.body.len() + 5);
        out.extend_from_slice(&[self.tag]);
        out.extend_from_slice(&(self.body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(&self.body);
        out.freeze()
    }
}

async fn read_frame<R: AsyncRead + Unpin>(stream: &mut R) -> std::io::Result<Frame> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_AUTH_FRAME).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a message of {len} bytes during authentication"),
        ));
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await?;
    Ok(Frame {
        tag: header[0],
        body: Bytes::from(body),
    })
}

async fn send<W: AsyncWrite + Unpin>(stream: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

fn auth_frame(message: Authentication) -> BytesMut {
    let mut out = BytesMut::new();
    message.encode(&mut out);
    out
}

/// Why a login did not complete. The client has been told (or is gone) in every case.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("I/O error during authentication: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client's SCRAM exchange failed: {0}")]
    Client(ScramError),
    #[error("the SCRAM login upstream failed: {0}")]
    Upstream(String),
    #[error("the upstream server refused the login")]
    Refused,
}

/// What the endpoint needs to know about the two legs.
pub struct Legs {
    /// pgcloak's certificate (DER) when the client leg is TLS.
    pub client_certificate: Option<Vec<u8>>,
    /// Postgres's certificate (DER) when the upstream leg is TLS.
    pub upstream_certificate: Option<Vec<u8>>,
}

/// Reads Postgres's first answer to the startup packet. A SASL request is answered by
/// pgcloak's two exchanges; anything else is passed to the client and left to the relay.
/// On success the upstream's next bytes (AuthenticationOk, ParameterStatus, ...) are
/// unread, for the relay.
pub async fn login<C, U>(
    client: &mut C,
    upstream: &mut U,
    user: &str,
    source: &Arc<AuthSource>,
    legs: Legs,
) -> Result<(), LoginError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let first = read_frame(upstream).await?;
    let offered = match (first.tag, Authentication::decode(&first.body)) {
        (b'R', Ok(Authentication::Sasl(offered))) => offered,
        _ => {
            // md5, cleartext, trust, an error: as without `auth`.
            send(client, &first.bytes()).await?;
            return Ok(());
        }
    };
    let client_binding = legs
        .client_certificate
        .as_deref()
        .and_then(|cert| tls_server_end_point(cert).ok());
    let verifier = match source.verifier(user).await {
        Ok(verifier) => verifier,
        Err(e) => {
            unable(
                client,
                &format!("pgcloak could not read the login verifier: {e}"),
            )
            .await;
            return Err(LoginError::Upstream(e));
        }
    };
    let mut server = match &verifier {
        Some(verifier) => ServerExchange::new(verifier.clone(), client_binding),
        None => ServerExchange::for_unknown_user(&source.secret, user, client_binding),
    };
    let key = match client_side(client, &mut server).await {
        Ok(done) => done,
        Err(LoginError::Client(e)) => {
            let code = match e.sqlstate() {
                INVALID_PASSWORD => INVALID_PASSWORD,
                _ => sqlstate::PROTOCOL_VIOLATION,
            };
            let message = match code {
                INVALID_PASSWORD => format!("password authentication failed for user \"{user}\""),
                _ => format!("pgcloak: {e}"),
            };
            let _ = send(client, &error_response(Severity::Fatal, code, &message)).await;
            return Err(LoginError::Client(e));
        }
        Err(e) => return Err(e),
    };
    let (server_final, client_key) = key;
    let Some(verifier) = verifier else {
        // A mock exchange never succeeds; this is unreachable in practice.
        return Err(LoginError::Refused);
    };
    let upstream_binding = legs
        .upstream_certificate
        .as_deref()
        .and_then(|cert| tls_server_end_point(cert).ok());
    match upstream_side(upstream, client_key, verifier, upstream_binding, &offered).await {
        Ok(()) => {}
        Err(UpstreamOutcome::Error(frame)) => {
            // Postgres's own error (e.g. the verifier in the auth file is out of date).
            let _ = send(client, &frame.bytes()).await;
            return Err(LoginError::Refused);
        }
        Err(UpstreamOutcome::Failed(e)) => {
            unable(
                client,
                &format!("pgcloak could not log in to the upstream server: {e}"),
            )
            .await;
            return Err(LoginError::Upstream(e));
        }
    }
    send(
        client,
        &auth_frame(Authentication::SaslFinal(server_final.into_bytes())),
    )
    .await?;
    Ok(())
}

/// FATAL 08001 to the client (best effort: it may be gone).
async fn unable<C: AsyncWrite + Unpin>(client: &mut C, message: &str) {
    let frame = error_response(
        Severity::Fatal,
        sqlstate::CLIENT_UNABLE_TO_ESTABLISH_CONNECTION,
        message,
    );
    let _ = send(client, &frame).await;
}

/// The exchange with the client: offer, client-first, server-first, client-final.
async fn client_side<C>(
    client: &mut C,
    server: &mut ServerExchange,
) -> Result<(String, crate::auth::ClientKey), LoginError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mechanisms = server.mechanisms().iter().map(|m| m.to_string()).collect();
    send(client, &auth_frame(Authentication::Sasl(mechanisms))).await?;
    let initial = expect_password_message(client).await?;
    let initial = SaslInitialResponse::decode(&initial)
        .map_err(|_| LoginError::Client(ScramError::Malformed("SASLInitialResponse")))?;
    let data = match initial.data {
        Some(data) => data,
        // No initial response (length -1): ask for it with an empty challenge, as Postgres
        // does, and take client-first-message from the next SASLResponse.
        None => {
            send(
                client,
                &auth_frame(Authentication::SaslContinue(Vec::new())),
            )
            .await?;
            SaslResponse::decode(&expect_password_message(client).await?).data
        }
    };
    let server_first = server
        .client_first(&initial.mechanism, &data)
        .map_err(LoginError::Client)?;
    send(
        client,
        &auth_frame(Authentication::SaslContinue(server_first.into_bytes())),
    )
    .await?;
    let response = SaslResponse::decode(&expect_password_message(client).await?);
    server
        .client_final(&response.data)
        .map_err(LoginError::Client)
}

async fn expect_password_message<C: AsyncRead + Unpin>(
    client: &mut C,
) -> Result<Bytes, LoginError> {
    let frame = read_frame(client).await?;
    if frame.tag != b'p' {
        return Err(LoginError::Client(ScramError::Malformed(
            "expected a SASL response ('p') from the client",
        )));
    }
    Ok(frame.body)
}

enum UpstreamOutcome {
    /// Postgres answered with an ErrorResponse: passed to the client as it is.
    Error(Frame),
    Failed(String),
}

/// The exchange with Postgres, logging in with the client's key.
async fn upstream_side<U>(
    upstream: &mut U,
    key: crate::auth::ClientKey,
    verifier: Verifier,
    binding: Option<Vec<u8>>,
    offered: &[String],
) -> Result<(), UpstreamOutcome>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let failed = |e: &dyn std::fmt::Display| UpstreamOutcome::Failed(e.to_string());
    let mut exchange = ClientExchange::new(key, verifier, binding).map_err(|e| failed(&e))?;
    let (mechanism, first) = exchange.client_first(offered).map_err(|e| failed(&e))?;
    let mut out = BytesMut::new();
    SaslInitialResponse {
        mechanism: mechanism.to_owned(),
        data: Some(first.into_bytes()),
    }
    .encode(&mut out);
    send(upstream, &out).await.map_err(|e| failed(&e))?;
    let server_first = match next_auth(upstream).await? {
        Authentication::SaslContinue(data) => data,
        other => return Err(UpstreamOutcome::Failed(format!("unexpected {other:?}"))),
    };
    let client_final = exchange
        .server_first(&server_first)
        .map_err(|e| failed(&e))?;
    let mut out = BytesMut::new();
    SaslResponse {
        data: client_final.into_bytes(),
    }
    .encode(&mut out);
    send(upstream, &out).await.map_err(|e| failed(&e))?;
    match next_auth(upstream).await? {
        Authentication::SaslFinal(data) => exchange.server_final(&data).map_err(|e| failed(&e)),
        other => Err(UpstreamOutcome::Failed(format!("unexpected {other:?}"))),
    }
}

async fn next_auth<U: AsyncRead + Unpin>(
    upstream: &mut U,
) -> Result<Authentication, UpstreamOutcome> {
    let frame = read_frame(upstream)
        .await
        .map_err(|e| UpstreamOutcome::Failed(e.to_string()))?;
    match frame.tag {
        b'R' => {
            Authentication::decode(&frame.body).map_err(|e| UpstreamOutcome::Failed(e.to_string()))
        }
        b'E' => Err(UpstreamOutcome::Error(frame)),
        tag => Err(UpstreamOutcome::Failed(format!(
            "unexpected message {:?} during authentication",
            tag as char
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ClientKey;

    const PASSWORD: &str = "pencil";

    fn verifier() -> Verifier {
        Verifier::from_password(PASSWORD, b"0123456789abcdef", 4096)
    }

    /// Postgres's side of the upstream leg: a SCRAM server for `verifier`, then
    /// AuthenticationOk.
    async fn fake_postgres(mut io: tokio::io::DuplexStream) {
        send(
            &mut io,
            &auth_frame(Authentication::Sasl(vec!["SCRAM-SHA-256".into()])),
        )
        .await
        .unwrap();
        let mut server = ServerExchange::new(verifier(), None);
        let initial =
            SaslInitialResponse::decode(&read_frame(&mut io).await.unwrap().body).unwrap();
        let first = server
            .client_first(&initial.mechanism, &initial.data.unwrap())
            .unwrap();
        send(
            &mut io,
            &auth_frame(Authentication::SaslContinue(first.into_bytes())),
        )
        .await
        .unwrap();
        let response = SaslResponse::decode(&read_frame(&mut io).await.unwrap().body);
        let (last, _) = server.client_final(&response.data).unwrap();
        send(
            &mut io,
            &auth_frame(Authentication::SaslFinal(last.into_bytes())),
        )
        .await
        .unwrap();
        send(&mut io, &auth_frame(Authentication::Ok))
            .await
            .unwrap();
    }

    /// A client that sends its SASLInitialResponse without data (length -1).
    async fn client_without_initial_data(mut io: tokio::io::DuplexStream) -> Vec<u8> {
        let offer = read_frame(&mut io).await.unwrap();
        let Ok(Authentication::Sasl(offered)) = Authentication::decode(&offer.body) else {
            panic!("no SASL offer");
        };
        let key = ClientKey::from_password(PASSWORD, b"0123456789abcdef", 4096);
        let mut exchange = ClientExchange::new(key, verifier(), None).unwrap();
        let (mechanism, first) = exchange.client_first(&offered).unwrap();
        let mut out = BytesMut::new();
        SaslInitialResponse {
            mechanism: mechanism.to_owned(),
            data: None,
        }
        .encode(&mut out);
        send(&mut io, &out).await.unwrap();
        let empty = read_frame(&mut io).await.unwrap();
        assert_eq!(
            Authentication::decode(&empty.body),
            Ok(Authentication::SaslContinue(Vec::new()))
        );
        let mut out = BytesMut::new();
        SaslResponse {
            data: first.into_bytes(),
        }
        .encode(&mut out);
        send(&mut io, &out).await.unwrap();
        let Ok(Authentication::SaslContinue(server_first)) =
            Authentication::decode(&read_frame(&mut io).await.unwrap().body)
        else {
            panic!("no server-first");
        };
        let last = exchange.server_first(&server_first).unwrap();
        let mut out = BytesMut::new();
        SaslResponse {
            data: last.into_bytes(),
        }
        .encode(&mut out);
        send(&mut io, &out).await.unwrap();
        let Ok(Authentication::SaslFinal(server_final)) =
            Authentication::decode(&read_frame(&mut io).await.unwrap().body)
        else {
            panic!("no server-final");
        };
        exchange.server_final(&server_final).unwrap();
        // What is left for the relay: Postgres's AuthenticationOk.
        let mut rest = vec![0u8; 9];
        io.read_exact(&mut rest).await.unwrap();
        rest
    }

    #[tokio::test]
    async fn an_initial_response_without_data_is_asked_for() {
        let (client, mut client_end) = tokio::io::duplex(4096);
        let (upstream, mut upstream_end) = tokio::io::duplex(4096);
        let postgres = tokio::spawn(fake_postgres(upstream));
        let app = tokio::spawn(client_without_initial_data(client));
        let users = HashMap::from([("app".to_owned(), verifier())]);
        let source = Arc::new(AuthSource::from_file(users));
        let legs = Legs {
            client_certificate: None,
            upstream_certificate: None,
        };
        login(&mut client_end, &mut upstream_end, "app", &source, legs)
            .await
            .unwrap();
        postgres.await.unwrap();
        // The relay forwards AuthenticationOk.
        let ok = read_frame(&mut upstream_end).await.unwrap().bytes();
        send(&mut client_end, &ok).await.unwrap();
        assert_eq!(app.await.unwrap(), b"R\0\0\0\x08\0\0\0\0");
    }
}
