//! TLS on both legs: the configuration, loading and checking certificates and keys, the
//! client-facing acceptor and the upstream connector with libpq's sslmode semantics.
//!
//! Everything is built once from the config by [`ServerTls::load`] and [`UpstreamTls::load`]
//! (the one place a reload will call again). rustls with the ring provider; TLS 1.2 minimum,
//! 1.3 preferred.

mod files;
mod postgres;
mod server;
mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use files::{subject, CertificateSummary, LoadedIdentity};
pub use postgres::PostgresTls;
pub use server::ALPN_POSTGRESQL;
pub use server::{https_acceptor, ClientCertMode, ClientTlsMode, ServerTls};
pub use upstream::{UpstreamStream, UpstreamTls, UpstreamTlsError, UpstreamTlsMode};

/// `tls:` — the client-facing leg.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM chain, the server's certificate first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// PEM CA certificates that client certificates must chain to (mTLS).
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: ClientCertMode,
}

/// `upstream.tls:` — the leg to Postgres.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    pub mode: UpstreamTlsMode,
    /// PEM CA certificates; omitted: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must be valid for (verify-full); default: upstream.host.
    pub server_name: Option<String>,
    /// A client certificate towards Postgres.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A certificate, key or TLS setting that cannot be used, with the config key and file.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// The config key, e.g. `tls.cert_file`.
    pub key: String,
    pub message: String,
}

impl TlsError {
    fn new(key: &str, message: impl Into<String>) -> TlsError {
        TlsError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The crypto provider of every TLS config pgcloak builds.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 first, then 1.2; nothing older.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// `path` as written in the config file, relative to the file's directory.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    match path.is_absolute() {
        true => path.to_path_buf(),
        false => base.join(path),
    }
}

#[cfg(test)]
mod tests;
