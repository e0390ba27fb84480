//! Session threads: one single-threaded tokio runtime per core, like PgBouncer's one event
//! loop per process. A session lives on one thread from accept to close, with both of its
//! sockets registered there, so relaying a message never wakes another thread; on a
//! multi-threaded runtime the two sockets' wakeups and work stealing moved sessions between
//! threads, and the context switches cost more than the relaying itself.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` session threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
            next: AtomicUsize::new(0),
        };
        for i in 0..count.max(1) {
            // Sockets and timers only: no signal or process driver to poll at every park.
            let runtime = Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("pgcloak-session-{i}"))
                .spawn(move || {
                    // Runs the sessions spawned onto this runtime until told to stop; the
                    // sessions still open then are dropped with the runtime.
                    let _ = runtime.block_on(stopped);
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// One thread per available core.
    pub fn per_core() -> std::io::Result<Workers> {
        Workers::start(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Runs `session` on the next thread, round robin, tracked by `tracker`.
    pub fn spawn<F>(&self, tracker: &TaskTracker, session: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        tracker.spawn_on(session, &self.handles[i]);
    }

    /// Stops the threads, dropping any session still running on them, and waits for them.
    /// Blocks: call it outside async code or from `spawn_blocking`.
    pub fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
