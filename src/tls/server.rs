//! The client-facing leg: pgcloak's certificate, whether plaintext clients are allowed, and
//! optional client certificates (mTLS).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

use super::files::{load_identity, load_roots, CertificateSummary};
use super::{provider, resolve, ClientTlsConfig, TlsError, VERSIONS};

/// The ALPN protocol of PostgreSQL's direct TLS negotiation (`sslnegotiation=direct`).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// `tls.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// TLS when the client asks for it; plaintext clients are served too.
    Allow,
    /// Clients that do not use TLS are refused (SQLSTATE 28000).
    #[default]
    Require,
}

/// `tls.client_cert`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// A client may present a certificate; if it does, it must chain to client_ca_file.
    #[default]
    Optional,
    /// A client without a valid certificate fails the handshake.
    Require,
}

/// The client leg, ready to accept.
#[derive(Clone)]
pub struct ServerTls {
    pub acceptor: TlsAcceptor,
    pub mode: ClientTlsMode,
    /// pgcloak's own certificate (DER), for SCRAM channel binding.
    pub certificate: Vec<u8>,
    pub summary: CertificateSummary,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .field("subject", &self.summary.subject)
            .finish()
    }
}

impl ServerTls {
    /// Loads and checks everything `tls:` names; paths are relative to `base` (the config
    /// file's directory).
    pub fn load(config: &ClientTlsConfig, base: &Path) -> Result<ServerTls, TlsError> {
        let identity = load_identity(
            ("tls.cert_file", &resolve(base, &config.cert_file)),
            ("tls.key_file", &resolve(base, &config.key_file)),
        )?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::new("tls", e.to_string()))?;
        let builder = match &config.client_ca_file {
            None if config.client_cert == ClientCertMode::Require => {
                return Err(TlsError::new(
                    "tls.client_cert",
                    "`require` needs tls.client_ca_file (the CA client certificates chain to)",
                ))
            }
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = load_roots("tls.client_ca_file", &resolve(base, ca))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = match config.client_cert {
                    ClientCertMode::Optional => verifier.allow_unauthenticated(),
                    ClientCertMode::Require => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::new("tls.client_ca_file", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let certificate = identity
            .certified
            .end_entity_cert()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let mut server = builder.with_cert_resolver(Arc::new(Fixed(identity.certified.clone())));
        // Offered to clients that use ALPN (direct negotiation requires it); clients that
        // send none are still accepted after SSLRequest.
        server.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            mode: config.mode,
            certificate,
            summary: identity.summary,
        })
    }
}

/// An HTTPS acceptor (ALPN `http/1.1`) for the sidecar's listener: `cert_key`/`key_key` are
/// the config keys named in errors.
pub fn https_acceptor(cert: (&str, &Path), key: (&str, &Path)) -> Result<TlsAcceptor, TlsError> {
    let identity = load_identity(cert, key)?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::new(cert.0, e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(identity.certified)));
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The one certificate pgcloak presents, whatever the client's SNI.
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}
