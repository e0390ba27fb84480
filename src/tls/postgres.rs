//! The upstream leg's TLS settings for pgcloak's own connections to Postgres made with
//! tokio-postgres (the `auth.query` connection): the same verification as the relay's, and
//! channel binding (tls-server-end-point) so Postgres's SCRAM-SHA-256-PLUS works.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use super::{UpstreamTls, UpstreamTlsMode};

impl UpstreamTls {
    /// The tokio-postgres sslmode matching this leg (verification is rustls's).
    pub fn ssl_mode(&self) -> SslMode {
        match self.mode {
            UpstreamTlsMode::Disable => SslMode::Disable,
            UpstreamTlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }
}

/// What tokio-postgres connects over: a TcpStream (connect_raw) or its own Socket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> Io for S {}

impl<S: Io> MakeTlsConnect<S> for UpstreamTls {
    type Stream = PostgresTls<S>;
    type TlsConnect = UpstreamTls;
    type Error = io::Error;

    fn make_tls_connect(&mut self, _domain: &str) -> io::Result<UpstreamTls> {
        Ok(self.clone())
    }
}

impl<S: Io> TlsConnect<S> for UpstreamTls {
    type Stream = PostgresTls<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PostgresTls<S>>> + Send>>;

    fn connect(self, io: S) -> Self::Future {
        Box::pin(async move { self.handshake(io).await.map(PostgresTls) })
    }
}

/// A TLS stream to Postgres, as tokio-postgres wants it.
pub struct PostgresTls<S>(tokio_rustls::client::TlsStream<S>);

impl<S: Io> tokio_postgres::tls::TlsStream for PostgresTls<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let certificate = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        match certificate.and_then(|c| crate::auth::tls_server_end_point(c).ok()) {
            Some(data) => ChannelBinding::tls_server_end_point(data),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: Io> AsyncRead for PostgresTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: Io> AsyncWrite for PostgresTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
