//! The JWE sidecar: an HTTP API for integrating parties that send and fetch records
//! encrypted end to end. A party encrypts a signed record (a JWS inside a JWE) to pgcloak's
//! public key; the sidecar decrypts it, checks the signature and the party's permissions,
//! encrypts the PII columns with the proxy's own keyring and inserts the row upstream. A
//! fetch returns the row decrypted and re-encrypted as a JWE to the party's key.
//!
//! Files: `config` (the `sidecar` section), `jose` (JWE/JWS), `claims` (JWT claims in a
//! record, the replay guard), `record` (columns, PII
//! encryption, row JSON), `typed` (JSON values of typed PII columns), `store` (pool, catalog, INSERT/SELECT), `routes` (handlers),
//! `metrics` (Prometheus text), `error` (statuses and JSON errors).

mod claims;
mod config;
mod error;
mod https;
pub mod jose;
mod metrics;
mod record;
mod routes;
mod store;
mod typed;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Party, PartyConfig, SidecarConfig, SidecarSettings, TableName};
pub use error::{ApiError, Reason};
pub use routes::MAX_BODY_BYTES;

use crate::background::Background;
use crate::cloak::Cloak;

/// A bound, not yet running sidecar.
pub struct Sidecar {
    listener: TcpListener,
    /// HTTPS when `sidecar.tls` is set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<routes::AppState>,
}

/// A sidecar running in the background (tests use this).
pub type SidecarHandle = Background;

impl Sidecar {
    /// Binds the listener and prepares the pool (connections open on first use). `cloak`
    /// must be the proxy's, so both encrypt with the same keys.
    pub async fn bind(settings: SidecarSettings, cloak: Arc<Cloak>) -> Result<Sidecar, String> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| format!("sidecar: cannot listen on {}: {e}", settings.listen))?;
        let store = store::Store::new(&settings)?;
        let tls = settings.tls.clone();
        let state = Arc::new(routes::AppState {
            cloak,
            store,
            server_key: settings.server_key,
            parties: settings.parties,
            metrics: metrics::Metrics::default(),
            jose_slots: tokio::sync::Semaphore::new(jose_slots()),
            replay: claims::ReplayGuard::default(),
        });
        Ok(Sidecar {
            listener,
            tls,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then lets requests in flight finish.
    pub async fn run(self, shutdown: CancellationToken) {
        let parties = self.state.parties.len();
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(listen = %addr, parties, "pgcloak sidecar listening");
        }
        let app = routes::router(self.state);
        let served = match self.tls {
            Some(acceptor) => match https::TlsListener::new(self.listener, acceptor) {
                Ok(listener) => {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await
                }
                Err(e) => Err(e),
            },
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "sidecar stopped with an error");
        }
        tracing::info!("pgcloak sidecar stopped");
    }

    /// Runs the sidecar on the current runtime in the background.
    pub fn spawn(self) -> std::io::Result<SidecarHandle> {
        let addr = self.local_addr()?;
        Ok(Background::spawn(addr, |shutdown| self.run(shutdown)))
    }
}

/// Decryptions run at once: twice the cores, so the cores stay busy while results are
/// handed back.
fn jose_slots() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 2)
}
