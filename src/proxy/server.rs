//! The accept loop: one task per client (on the session threads of workers.rs), a connection limit, and graceful shutdown
//! (stop accepting, let sessions finish for a bounded time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::session;
use super::workers::Workers;
use crate::background::Background;
use crate::cloak::Cloak;
use crate::config::ProxySettings;

/// A bound, not yet running proxy.
pub struct Proxy {
    listener: TcpListener,
    settings: Arc<ProxySettings>,
    cloak: Option<Arc<Cloak>>,
}

/// A proxy running in the background (tests and the demo use this).
pub type ProxyHandle = Background;

impl Proxy {
    pub async fn bind(settings: ProxySettings) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(settings.listen).await?;
        Ok(Proxy {
            listener,
            settings: Arc::new(settings),
            cloak: None,
        })
    }

    /// Encrypts and decrypts PII columns in every session with this policy and keys.
    pub fn with_cloak(mut self, cloak: Arc<Cloak>) -> Proxy {
        self.cloak = Some(cloak);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves clients until `shutdown` is cancelled, then waits up to the configured grace
    /// period for open sessions to end.
    pub async fn run(self, shutdown: CancellationToken) {
        let Proxy {
            listener,
            settings,
            cloak,
        } = self;
        let limit = Arc::new(Semaphore::new(settings.max_connections));
        let sessions = TaskTracker::new();
        let workers = match settings
            .session_threads
            .map_or_else(Workers::per_core, Workers::start)
        {
            Ok(workers) => workers,
            Err(e) => {
                error!(error = %e, "cannot start the session threads");
                return;
            }
        };
        let next_conn = AtomicU64::new(1);
        info!(listen = %settings.listen, upstream_host = %settings.upstream_host, upstream_port = settings.upstream_port, "pgcloak listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let conn = next_conn.fetch_add(1, Ordering::Relaxed);
                    info!(conn, %peer, "client connected");
                    let permit = limit.clone().try_acquire_owned().ok();
                    // Re-registered on the session's own thread (see workers.rs).
                    let stream = match stream.into_std() {
                        Ok(stream) => stream,
                        Err(e) => {
                            warn!(conn, error = %e, "cannot hand the client to a session thread");
                            continue;
                        }
                    };
                    let (settings, cloak) = (settings.clone(), cloak.clone());
                    let open = super::heap::OpenSession::new();
                    workers.spawn(&sessions, async move {
                        let _open = open;
                        match TcpStream::from_std(stream) {
                            Ok(stream) => {
                                session::serve(stream, conn, settings, cloak, permit).await
                            }
                            Err(e) => warn!(conn, error = %e, "cannot register the client socket"),
                        }
                    });
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        sessions.close();
        info!(
            open_sessions = sessions.len(),
            grace_seconds = settings.shutdown_grace.as_secs(),
            "shutting down: no longer accepting, waiting for sessions"
        );
        if tokio::time::timeout(settings.shutdown_grace, sessions.wait())
            .await
            .is_err()
        {
            warn!(
                open_sessions = sessions.len(),
                "grace period over; closing remaining sessions"
            );
        }
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
        info!("pgcloak stopped");
    }

    /// Runs the proxy on the current runtime in the background.
    pub fn spawn(self) -> std::io::Result<ProxyHandle> {
        let addr = self.local_addr()?;
        Ok(Background::spawn(addr, |shutdown| self.run(shutdown)))
    }
}
