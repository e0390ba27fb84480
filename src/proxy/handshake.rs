//! The startup phase on the client side: TLS when configured (after SSLRequest, or
//! directly when the first bytes are a TLS ClientHello, as libpq 17's
//! `sslnegotiation=direct` sends), GSSENCRequest answered 'N', then the StartupMessage or
//! CancelRequest that follows.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::protocol::startup::{self, StartupError, StartupPacket};
use crate::tls::{ClientTlsMode, ServerTls, ALPN_POSTGRESQL};

/// The client's connection: plaintext, or TLS terminated by pgcloak.
pub type ClientStream = Either<TcpStream, TlsStream<TcpStream>>;

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("client closed the connection during startup")]
    Closed,
    #[error("startup I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] StartupError),
    #[error("client sent more than {0} encryption requests")]
    TooManyRequests(usize),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("the client started TLS directly without ALPN \"postgresql\"")]
    NoAlpn,
    #[error("the client sent {0} inside TLS")]
    RequestInsideTls(&'static str),
    /// A plaintext StartupMessage while `tls.mode` is require.
    #[error("pgcloak requires TLS")]
    TlsRequired,
}

/// Reads startup-phase packets until a StartupMessage or CancelRequest arrives, setting up
/// TLS on the way when `tls` is configured and the client asks for it.
pub async fn negotiate(
    mut tcp: TcpStream,
    tls: Option<&ServerTls>,
) -> Result<(ClientStream, StartupPacket), (ClientStream, HandshakeError)> {
    if let Some(tls) = tls {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => return Err((Either::Left(tcp), HandshakeError::Closed)),
            Ok(_) if first[0] == TLS_HANDSHAKE_RECORD => return direct(tcp, tls).await,
            Ok(_) => {}
            Err(e) => return Err((Either::Left(tcp), e.into())),
        }
    }
    // A client may ask for GSS encryption, then TLS, then start; never more than that.
    const MAX_REQUESTS: usize = 2;
    for _ in 0..=MAX_REQUESTS {
        let packet = match read_packet(&mut tcp).await {
            Ok(packet) => packet,
            Err(e) => return Err((Either::Left(tcp), e)),
        };
        let answer = match packet {
            StartupPacket::SslRequest => match tls {
                Some(tls) => {
                    if let Err(e) = tcp.write_all(b"S").await {
                        return Err((Either::Left(tcp), e.into()));
                    }
                    return inside_tls(tcp, tls).await;
                }
                None => b"N",
            },
            StartupPacket::GssEncRequest => b"N",
            StartupPacket::Startup { .. }
                if tls.is_some_and(|t| t.mode == ClientTlsMode::Require) =>
            {
                return Err((Either::Left(tcp), HandshakeError::TlsRequired))
            }
            packet => return Ok((Either::Left(tcp), packet)),
        };
        if let Err(e) = tcp.write_all(answer).await {
            return Err((Either::Left(tcp), e.into()));
        }
    }
    Err((
        Either::Left(tcp),
        HandshakeError::TooManyRequests(MAX_REQUESTS),
    ))
}

/// Direct TLS negotiation: the ClientHello must name ALPN `postgresql`.
async fn direct(
    tcp: TcpStream,
    tls: &ServerTls,
) -> Result<(ClientStream, StartupPacket), (ClientStream, HandshakeError)> {
    let stream = match tls.acceptor.accept(tcp).into_fallible().await {
        Ok(stream) => stream,
        Err((e, tcp)) => return Err((Either::Left(tcp), HandshakeError::Tls(e))),
    };
    if stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err((Either::Right(stream), HandshakeError::NoAlpn));
    }
    startup_in(stream).await
}

/// TLS after the client's SSLRequest was answered 'S'.
async fn inside_tls(
    tcp: TcpStream,
    tls: &ServerTls,
) -> Result<(ClientStream, StartupPacket), (ClientStream, HandshakeError)> {
    match tls.acceptor.accept(tcp).into_fallible().await {
        Ok(stream) => startup_in(stream).await,
        Err((e, tcp)) => Err((Either::Left(tcp), HandshakeError::Tls(e))),
    }
}

/// The StartupMessage or CancelRequest inside an established TLS session.
async fn startup_in(
    mut stream: TlsStream<TcpStream>,
) -> Result<(ClientStream, StartupPacket), (ClientStream, HandshakeError)> {
    match read_packet(&mut stream).await {
        Ok(StartupPacket::SslRequest) => Err((
            Either::Right(stream),
            HandshakeError::RequestInsideTls("an SSLRequest"),
        )),
        Ok(StartupPacket::GssEncRequest) => Err((
            Either::Right(stream),
            HandshakeError::RequestInsideTls("a GSSENCRequest"),
        )),
        Ok(packet) => Ok((Either::Right(stream), packet)),
        Err(e) => Err((Either::Right(stream), e)),
    }
}

async fn read_packet<S>(stream: &mut S) -> Result<StartupPacket, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(HandshakeError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let total = startup::check_len(u32::from_be_bytes(len))?;
    let mut raw = BytesMut::zeroed(total);
    raw[..4].copy_from_slice(&len);
    stream.read_exact(&mut raw[4..]).await?;
    Ok(startup::parse(raw.freeze())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn ssl_request_is_declined_then_startup_returned() {
        let (mut client, proxy) = pair().await;
        let task = tokio::spawn(async move { negotiate(proxy, None).await.map(|(_, p)| p) });
        client.write_all(&startup::SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"N");
        let body = b"\0\x03\0\0user\0u\0\0";
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(body);
        client.write_all(&packet).await.unwrap();
        let startup = task.await.unwrap().map_err(|(_, e)| e).unwrap();
        assert_eq!(startup.param("user"), Some("u"));
    }

    #[tokio::test]
    async fn endless_ssl_requests_are_cut_off() {
        let (mut client, proxy) = pair().await;
        let task = tokio::spawn(async move { negotiate(proxy, None).await.map(|(_, p)| p) });
        for _ in 0..3 {
            let _ = client.write_all(&startup::SSL_REQUEST).await;
        }
        assert!(matches!(
            task.await.unwrap(),
            Err((_, HandshakeError::TooManyRequests(2)))
        ));
    }
}
