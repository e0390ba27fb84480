//! The one place a test skips for want of a client program (Python's and Node's clients from
//! tests/clients/setup.sh, PgJDBC and a JDK, SoftHSM2).
//!
//! A skipped test still shows as `ok` in libtest's report, so each test binary that skipped
//! any prints a summary after its `test result:` line, to stderr and past libtest's output
//! capture: `SKIPPED: 3 tests in clients for want of client programs`, one line per test
//! and what to install. With PGCLOAK_REQUIRE_CLIENTS=1 (set by .ci/run) a missing client
//! fails its test instead.

use std::io::Write as _;
use std::sync::{Mutex, PoisonError};

/// What this test binary skipped: (test name, what was missing, how to install it).
static SKIPPED: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

/// Records that the running test skips (all or part of itself) because `what` is missing,
/// installed by `fix`; panics instead when PGCLOAK_REQUIRE_CLIENTS=1.
pub fn missing_client(what: &str, fix: &str) {
    if std::env::var("PGCLOAK_REQUIRE_CLIENTS").as_deref() == Ok("1") {
        panic!("{what} is missing: {fix} (PGCLOAK_REQUIRE_CLIENTS=1 requires every client)");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_owned();
    let mut skipped = SKIPPED.lock().unwrap_or_else(PoisonError::into_inner);
    if skipped.is_empty() {
        // SAFETY: registers a plain extern "C" function, run once at process exit.
        unsafe { libc::atexit(print_summary) };
    }
    skipped.push((test, what.to_owned(), fix.to_owned()));
}

/// The summary [`missing_client`] arranged for; runs after libtest's own report.
extern "C" fn print_summary() {
    let mut skipped = SKIPPED.lock().unwrap_or_else(PoisonError::into_inner);
    skipped.sort();
    let mut tests: Vec<&str> = skipped.iter().map(|(test, ..)| test.as_str()).collect();
    tests.dedup();
    let binary = std::env::args().next().unwrap_or_default();
    let binary = std::path::Path::new(&binary)
        .file_name()
        .and_then(|name| name.to_str())
        .map_or("this test binary", |name| {
            name.rsplit_once('-').map_or(name, |(stem, _hash)| stem)
        })
        .to_owned();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "SKIPPED: {} tests in {binary} for want of client programs (counted above as passed):",
        tests.len()
    );
    for (test, what, fix) in skipped.iter() {
        let _ = writeln!(err, "  {test}: {what} is missing ({fix})");
    }
    let _ = writeln!(
        err,
        "  run tests/clients/setup.sh; PGCLOAK_REQUIRE_CLIENTS=1 makes a missing client fail"
    );
}
