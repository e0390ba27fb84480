//! pgcloak: a transparent PostgreSQL wire-protocol proxy that will encrypt PII columns.
//!
//! Module map (data flows one way: bytes → frames → proxy → bytes):
//! - [`config`]: the YAML file, its validation and typed settings.
//! - [`protocol`]: framing, startup packets and the messages pgcloak writes; no I/O.
//! - [`proxy`]: the listener, one task per client, the startup relay and both pumps.
//! - [`pgtemp`]: a throwaway PostgreSQL cluster for tests and `pgcloak demo`.

pub mod config;
pub mod pgtemp;
pub mod protocol;
pub mod proxy;
