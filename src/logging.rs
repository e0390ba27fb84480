//! Logging for the `pgcloak` binary: records go to stderr as text, or one JSON object per
//! line with `PGCLOAK_LOG_FORMAT=json`; `RUST_LOG` picks levels (default `info`).
//!
//! Only pgcloak's own records are ever written. Dependencies log statement text and bound
//! parameters (sqlparser at debug, tokio-postgres at debug/trace), i.e. PII, so they are
//! stopped at the source rather than by a directive `RUST_LOG` could outrank:
//! - records of the `log` crate (sqlparser, tokio-postgres) have no bridge into tracing: a
//!   logger that drops everything takes the one global `log` slot, so no `LogTracer` can be
//!   installed later, and the `log` max level is `Off`, so their macros return at once;
//! - tracing records (hyper, axum, ...) pass a target filter ([`is_own_target`]) applied in
//!   addition to the `RUST_LOG` filter, which no directive can widen.

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt as _;

/// The crate name every pgcloak target starts with (the library's modules and the binary).
const OWN_CRATE: &str = "pgcloak";

/// Whether a record with this target comes from pgcloak itself: `pgcloak` or `pgcloak::...`,
/// never another crate whose name merely starts with `pgcloak`.
pub fn is_own_target(target: &str) -> bool {
    match target.strip_prefix(OWN_CRATE) {
        Some(rest) => rest.is_empty() || rest.starts_with("::"),
        None => false,
    }
}

/// A `log` logger that keeps nothing: it occupies the global slot so no bridge can.
struct Discard;

impl log::Log for Discard {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        false
    }

    fn log(&self, _: &log::Record<'_>) {}

    fn flush(&self) {}
}

static DISCARD: Discard = Discard;

/// Installs the global subscriber. Call once, first thing in `main`; a second call (or a
/// subscriber installed by someone else) leaves the first in place.
pub fn init() {
    // Fails only if a logger is already installed, which nothing in pgcloak does; the max
    // level below still turns the `log` macros off either way.
    let _ = log::set_logger(&DISCARD);
    log::set_max_level(log::LevelFilter::Off);

    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let own = filter_fn(|metadata| is_own_target(metadata.target()));
    let json = std::env::var("PGCLOAK_LOG_FORMAT").as_deref() == Ok("json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // `set_global_default`, not `init()`: the latter would also install a `LogTracer` when
    // tracing-subscriber's `tracing-log` feature is on (it is off in Cargo.toml).
    let installed = if json {
        let subscriber = tracing_subscriber::registry()
            .with(own)
            .with(env)
            .with(fmt.json());
        tracing::subscriber::set_global_default(subscriber)
    } else {
        let subscriber = tracing_subscriber::registry().with(own).with(env).with(fmt);
        tracing::subscriber::set_global_default(subscriber)
    };
    if installed.is_err() {
        eprintln!("pgcloak: a log subscriber was already installed; keeping it");
    }
}

#[cfg(test)]
mod tests {
    use super::is_own_target;

    #[test]
    fn only_pgcloak_targets_are_own() {
        for own in [
            "pgcloak",
            "pgcloak::cloak",
            "pgcloak::sql::analyzer",
            "pgcloak::",
        ] {
            assert!(is_own_target(own), "{own}");
        }
        for foreign in [
            "",
            "sqlparser",
            "sqlparser::parser",
            "tokio_postgres::query",
            "pgcloakx",
            "pgcloak_helper",
            "pgcloak:",
            "my::pgcloak",
            "log",
            "PGCLOAK",
        ] {
            assert!(!is_own_target(foreign), "{foreign}");
        }
    }
}
