//! A service (the proxy or the sidecar) running in the background on the current runtime,
//! stopped by cancelling its token: what tests and the demo hold on to.

use std::future::Future;
use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Background {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Background {
    /// Spawns `run(token)`; the service listens on `addr` and stops when the token is
    /// cancelled.
    pub fn spawn<F, Fut>(addr: SocketAddr, run: F) -> Background
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Background {
            addr,
            shutdown,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the service's graceful shutdown.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
