//! The startup phase on the client side: answer SSLRequest and GSSENCRequest with 'N'
//! (TLS comes later), then return the StartupMessage or CancelRequest that follows.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::startup::{self, StartupError, StartupPacket};

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
}

/// Reads startup-phase packets until a StartupMessage or CancelRequest arrives.
pub async fn read_startup<S>(stream: &mut S) -> Result<StartupPacket, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A client may ask for GSS encryption, then TLS, then start; never more than that.
    const MAX_REQUESTS: usize = 2;
    for _ in 0..=MAX_REQUESTS {
        match read_packet(stream).await? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                stream.write_all(b"N").await?;
            }
            packet => return Ok(packet),
        }
    }
    Err(HandshakeError::TooManyRequests(MAX_REQUESTS))
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

    #[tokio::test]
    async fn ssl_request_is_declined_then_startup_returned() {
        let (mut client, mut proxy) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { read_startup(&mut proxy).await });
        client
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"N");
        let body = b"\0\x03\0\0user\0u\0\0";
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(body);
        client.write_all(&packet).await.unwrap();
        let startup = task.await.unwrap().unwrap();
        assert_eq!(startup.param("user"), Some("u"));
    }

    #[tokio::test]
    async fn endless_ssl_requests_are_cut_off() {
        let (mut client, mut proxy) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { read_startup(&mut proxy).await });
        for _ in 0..3 {
            let _ = client
                .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
                .await;
        }
        assert!(matches!(
            task.await.unwrap(),
            Err(HandshakeError::TooManyRequests(2))
        ));
    }
}
