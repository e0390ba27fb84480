//! One client connection from accept to close: the startup handshake, the upstream
//! connection, and the two pumps running concurrently until either side ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::either::Either;
use tracing::{debug, info, warn};

use super::handshake::{negotiate, ClientStream, HandshakeError};
use super::login::{login, Legs};
use super::observe::{ClientFrames, Observed, ServerFrames};
use super::pump::{Pump, PumpError};
use crate::cloak::{Cloak, ServerCloak};
use crate::config::ProxySettings;
use crate::protocol::error::{error_response, sqlstate, Severity};
use crate::protocol::startup::{cancel_request, StartupPacket};
use crate::tls::{UpstreamStream, UpstreamTlsError};

/// A client that has not finished its startup packet by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long we try to deliver our own last error to a client before giving up.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(5);
/// Read sizes: clients mostly send small messages; result sets come the other way.
const CLIENT_READ_SIZE: usize = 8 * 1024;
const UPSTREAM_READ_SIZE: usize = 32 * 1024;
/// Postgres never sends a message longer than this; the length field is an i32.
const MAX_UPSTREAM_FRAME: u32 = i32::MAX as u32;

/// Serves one accepted client. `permit` is `None` when the proxy is at max_connections:
/// such a client is answered with SQLSTATE 53300 once it has sent its startup packet.
pub async fn serve(
    tcp: TcpStream,
    conn: u64,
    settings: Arc<ProxySettings>,
    cloak: Option<Arc<Cloak>>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = settings.client_tls.as_deref();
    let (mut client, packet) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, negotiate(tcp, tls))
        .await
    {
        Ok(Ok(negotiated)) => negotiated,
        Ok(Err((_, HandshakeError::Closed))) => {
            debug!(conn, "client closed during startup");
            return;
        }
        Ok(Err((mut client, e @ (HandshakeError::Protocol(_) | HandshakeError::TlsRequired)))) => {
            warn!(conn, error = %e, "startup refused; closing client");
            let code = match e {
                HandshakeError::TlsRequired => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                _ => sqlstate::PROTOCOL_VIOLATION,
            };
            let frame = error_response(Severity::Fatal, code, &e.to_string());
            let _ = client.write_all(&frame).await;
            let _ = client.flush().await;
            return;
        }
        Ok(Err((_, e))) => {
            warn!(conn, error = %e, "startup failed; closing client");
            return;
        }
        Err(_) => {
            warn!(
                conn,
                "client sent no startup packet within {HANDSHAKE_TIMEOUT:?}; closing"
            );
            return;
        }
    };
    if let Either::Right(stream) = &client {
        let session = stream.get_ref().1;
        let subject = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| crate::tls::subject(cert));
        info!(
            conn,
            tls = ?session.protocol_version(),
            client_certificate = subject.as_deref().unwrap_or("none"),
            "client TLS established"
        );
    }
    match packet {
        // Cancels are honoured even at the connection limit, as Postgres does.
        StartupPacket::CancelRequest { raw } => forward_cancel(&raw, conn, &settings).await,
        StartupPacket::Startup { .. } if permit.is_none() => {
            warn!(
                conn,
                max_connections = settings.max_connections,
                "connection limit reached; refusing client"
            );
            let message = format!(
                "sorry, too many clients already (pgcloak max_connections is {})",
                settings.max_connections
            );
            let frame = error_response(Severity::Fatal, sqlstate::TOO_MANY_CONNECTIONS, &message);
            let _ = client.write_all(&frame).await;
            let _ = client.flush().await;
        }
        StartupPacket::Startup { ref raw, .. } => {
            info!(
                conn,
                user = packet.param("user").unwrap_or(""),
                database = packet.param("database").unwrap_or(""),
                "session starting"
            );
            let user = packet.param("user").unwrap_or("").to_owned();
            relay(client, raw, &user, conn, &settings, cloak.as_ref()).await;
        }
        // negotiate answers encryption requests itself and never returns them.
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {}
    }
    drop(permit);
}

/// Why the upstream leg could not be opened.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("{0}")]
    Connect(#[from] std::io::Error),
    #[error("{0}")]
    Tls(#[from] UpstreamTlsError),
}

async fn connect_upstream(settings: &ProxySettings) -> Result<UpstreamStream, UpstreamError> {
    let addr = (settings.upstream_host.as_str(), settings.upstream_port);
    let tcp = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    tcp.set_nodelay(true)?;
    Ok(match &settings.upstream_tls {
        Some(tls) => tokio::time::timeout(settings.connect_timeout, tls.negotiate(tcp))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS negotiation timed out")
            })??,
        None => Either::Left(tcp),
    })
}

/// A CancelRequest goes to the upstream on a connection of its own, bytes unchanged.
async fn forward_cancel(raw: &[u8], conn: u64, settings: &ProxySettings) {
    match connect_upstream(settings).await {
        Ok(mut upstream) => {
            if let Err(e) = upstream.write_all(raw).await {
                warn!(conn, error = %e, "could not forward cancel request");
            } else {
                let _ = upstream.flush().await;
                debug!(conn, "cancel request forwarded");
            }
        }
        Err(e) => warn!(conn, error = %e, "could not reach upstream to forward cancel request"),
    }
}

type BoxRead = Box<dyn AsyncRead + Send + Sync + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// The two halves of a plaintext or TLS stream (a TCP socket splits without a lock).
fn halves<T>(stream: Either<TcpStream, T>) -> (BoxRead, BoxWrite)
where
    T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
{
    match stream {
        Either::Left(tcp) => {
            let (read, write) = tcp.into_split();
            (Box::new(read), Box::new(write))
        }
        Either::Right(tls) => {
            let (read, write) = tokio::io::split(tls);
            (Box::new(read), Box::new(write))
        }
    }
}

/// Connects upstream, forwards the startup packet, and relays until either side ends.
async fn relay(
    mut client: ClientStream,
    startup: &[u8],
    user: &str,
    conn: u64,
    settings: &ProxySettings,
    cloak: Option<&Arc<Cloak>>,
) {
    let started = Instant::now();
    let upstream_addr = format!("{}:{}", settings.upstream_host, settings.upstream_port);
    let mut upstream = match connect_upstream(settings).await {
        Ok(upstream) => upstream,
        Err(e) => {
            warn!(conn, upstream = %upstream_addr, error = %e, "cannot connect to upstream");
            let message =
                format!("pgcloak: cannot connect to the upstream server {upstream_addr}: {e}");
            let frame = error_response(
                Severity::Fatal,
                sqlstate::CLIENT_UNABLE_TO_ESTABLISH_CONNECTION,
                &message,
            );
            let _ = client.write_all(&frame).await;
            let _ = client.flush().await;
            return;
        }
    };
    if let Err(e) = write_flushed(&mut upstream, startup).await {
        warn!(conn, error = %e, "upstream closed during startup");
        let frame = error_response(
            Severity::Fatal,
            sqlstate::CONNECTION_FAILURE,
            "pgcloak: upstream server closed the connection during startup",
        );
        let _ = write_flushed(&mut client, &frame).await;
        return;
    }

    if let Some(source) = &settings.auth {
        let legs = Legs {
            client_certificate: match &client {
                Either::Right(_) => settings.client_tls.as_ref().map(|t| t.certificate.clone()),
                Either::Left(_) => None,
            },
            upstream_certificate: match &upstream {
                Either::Right(tls) => tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec()),
                Either::Left(_) => None,
            },
        };
        if let Err(e) = login(&mut client, &mut upstream, user, source, legs).await {
            warn!(conn, error = %e, "login failed");
            return;
        }
    }
    let client_tls = matches!(client, Either::Right(_));
    let upstream_tls = matches!(upstream, Either::Right(_));
    let (client_read, client_write) = halves(client);
    let (upstream_read, upstream_write) = halves(upstream);
    let (client_cloak, server_cloak) = match cloak {
        Some(cloak) => {
            let (client, server) = cloak.session();
            (Some(client), Some(server))
        }
        None => (None, None),
    };
    let mut to_upstream = Pump::new(
        client_read,
        upstream_write,
        Observed {
            observer: ClientFrames::default(),
            filter: client_cloak,
        },
        settings.max_message_bytes,
        CLIENT_READ_SIZE,
    );
    let mut to_client = Pump::new(
        upstream_read,
        client_write,
        Observed {
            observer: ServerFrames {
                hide_channel_binding: !client_tls && upstream_tls,
                ..ServerFrames::default()
            },
            filter: server_cloak,
        },
        MAX_UPSTREAM_FRAME,
        UPSTREAM_READ_SIZE,
    );

    let reason = tokio::select! {
        // Both pumps are polled at each wakeup anyway; a fixed order spares the random
        // draw.
        biased;
        result = to_upstream.run() => match result {
            Ok(()) | Err(PumpError::Read(_)) => {
                if !to_upstream.filter().observer.saw_terminate {
                    cancel_vanished_client_query(&to_client, conn, settings).await;
                }
                "client closed"
            }
            Err(PumpError::Write(e)) => {
                warn!(conn, error = %e, "upstream write failed");
                farewell(&mut to_client, sqlstate::CONNECTION_FAILURE, "pgcloak: lost the connection to the upstream server").await;
                "upstream lost"
            }
            Err(e @ (PumpError::Frame(_) | PumpError::Filter(_))) => {
                // Only the header is described; the message body is never logged.
                warn!(conn, error = %e, "malformed message from client; closing it");
                farewell(&mut to_client, sqlstate::PROTOCOL_VIOLATION, &format!("pgcloak: {e}")).await;
                "malformed client message"
            }
        },
        result = to_client.run() => match result {
            Err(PumpError::Write(_)) => {
                cancel_vanished_client_query(&to_client, conn, settings).await;
                "client closed"
            }
            Ok(()) | Err(PumpError::Read(_) | PumpError::Frame(_) | PumpError::Filter(_)) => {
                // After the server's own FATAL, or after the client said goodbye, stay quiet.
                if to_client.filter().observer.last_tag != Some(b'E') && !to_upstream.filter().observer.saw_terminate {
                    farewell(&mut to_client, sqlstate::CONNECTION_FAILURE, "pgcloak: the upstream server closed the connection unexpectedly").await;
                }
                "upstream closed"
            }
        },
    };
    // Dropping both pumps closes both sockets: the upstream backend ends with the client.
    info!(
        conn,
        reason,
        bytes_from_client = to_upstream.forwarded(),
        bytes_to_client = to_client.forwarded(),
        duration_ms = started.elapsed().as_millis() as u64,
        "session closed"
    );
}

type ServerSide = Observed<ServerFrames, ServerCloak>;

/// A client that vanished without Terminate may have left a query running, and a busy
/// backend does not notice its closed socket until the query ends: cancel it. (An idle
/// backend ignores a cancel.) Closing the upstream socket afterwards ends the backend.
async fn cancel_vanished_client_query<R, W>(
    to_client: &Pump<R, W, ServerSide>,
    conn: u64,
    settings: &ProxySettings,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    if let Some(key) = &to_client.filter().observer.backend_key {
        forward_cancel(&cancel_request(key), conn, settings).await;
    }
}

/// Sends the client a FATAL error of ours after whatever the upstream already sent.
async fn farewell<R, W>(to_client: &mut Pump<R, W, ServerSide>, code: &str, message: &str)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let frame = error_response(Severity::Fatal, code, message);
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, to_client.finish_with(&frame)).await;
}

async fn write_flushed<W: AsyncWrite + Unpin>(stream: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}
