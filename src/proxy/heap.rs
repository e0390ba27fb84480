//! Freed memory back to the OS. glibc's malloc keeps freed pages in its per-thread arenas,
//! so after a burst (large statements, wide rows) RSS stays at the peak although nothing is
//! allocated. When the last open session ends, `malloc_trim` returns those pages.

use std::sync::atomic::{AtomicUsize, Ordering};

static OPEN_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// Held for the life of a session.
pub struct OpenSession(());

impl OpenSession {
    pub fn new() -> OpenSession {
        OPEN_SESSIONS.fetch_add(1, Ordering::Relaxed);
        OpenSession(())
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        if OPEN_SESSIONS.fetch_sub(1, Ordering::AcqRel) == 1 {
            trim();
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
