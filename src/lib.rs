//! pgcloak: a transparent PostgreSQL wire-protocol proxy that encrypts PII columns.
//!
//! Module map (data flows one way: bytes → frames → analysis → crypto → frames → bytes):
//! - [`config`]: the YAML file, its validation and typed settings.
//! - [`protocol`]: framing, startup packets, the messages pgcloak decodes; no I/O.
//! - [`proxy`]: the listener, one task per client, the startup relay and both pumps.
//! - [`tls`]: certificates and keys, the client-facing acceptor, the upstream connector.
//! - [`policy`]: which table.column is PII and in which mode.
//! - [`sql`]: statement analysis: the literals and parameters bound for PII columns, and
//!   what must be refused.
//! - [`auth`]: SCRAM-SHA-256 as server towards clients and as client towards Postgres, for
//!   logins pgcloak cannot relay (TLS on both legs); verifiers and the auth file.
//! - [`crypto`]: keys, the randomized and deterministic ciphers, the stored envelope.
//! - [`keys`]: the master keys, where each comes from (environment, file, HSM), and which
//!   one new values are written under.
//! - [`cloak`]: applying analysis and crypto to one session's frames.
//! - [`sidecar`]: the JWE HTTP API through which integrating parties send and fetch records.
//! - [`logging`]: the binary's log subscriber, which writes pgcloak's own records only.
//! - [`background`]: the handle of the proxy or sidecar running in the background.
//! - [`pgtype`]: value codecs of typed PII columns (text and binary wire forms, the canonical
//!   form that is encrypted), exact to Postgres 15; pure, no I/O.
//! - [`pgtemp`]: a throwaway PostgreSQL cluster for tests and `pgcloak demo`.

pub mod auth;
pub mod background;
pub mod cloak;
pub mod config;
pub mod crypto;
pub mod keys;
pub mod logging;
pub mod pgtemp;
pub mod pgtype;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod sidecar;
pub mod sql;
pub mod tls;
