//! The leg to Postgres: SSLRequest, then a TLS handshake verified as libpq's sslmode says.
//! `prefer` falls back to plaintext only when the server answers N; every other failure,
//! and any verification failure, fails the client's connection (never a silent downgrade).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::files::{load_identity, load_roots};
use super::{provider, resolve, TlsError, UpstreamTlsConfig, VERSIONS};

/// `upstream.tls.mode`, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    Disable,
    /// TLS when the server offers it, unverified; plaintext when it answers N.
    Prefer,
    /// TLS, unverified.
    Require,
    /// TLS, the certificate chains to a trusted CA.
    VerifyCa,
    /// TLS, the certificate chains to a trusted CA and is valid for the host name.
    VerifyFull,
}

/// The upstream leg, ready to connect.
#[derive(Clone)]
pub struct UpstreamTls {
    pub mode: UpstreamTlsMode,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("mode", &self.mode)
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Why the upstream leg could not be set up; each fails the client with 08001.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("the upstream server does not support TLS (it answered the SSLRequest with N), and upstream.tls.mode is {0}")]
    NotOffered(&'static str),
    #[error("the upstream server answered the SSLRequest with {0:?}, not S or N")]
    BadAnswer(u8),
    #[error("TLS handshake with the upstream server failed: {0}")]
    Handshake(String),
    #[error("I/O error during the upstream TLS negotiation: {0}")]
    Io(#[from] std::io::Error),
}

/// The upstream stream: plaintext (mode disable, or prefer and the server said N) or TLS.
pub type UpstreamStream = tokio_util::either::Either<TcpStream, TlsStream<TcpStream>>;

impl UpstreamTls {
    /// Loads and checks everything `upstream.tls:` names; `host` is upstream.host.
    pub fn load(
        config: &UpstreamTlsConfig,
        host: &str,
        base: &Path,
    ) -> Result<UpstreamTls, TlsError> {
        let name = config
            .server_name
            .clone()
            .unwrap_or_else(|| host.to_owned());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            TlsError::new(
                "upstream.tls.server_name",
                format!("{name:?} is not a host name or IP address"),
            )
        })?;
        let provider = provider();
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = match config.mode {
            UpstreamTlsMode::Disable | UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => {
                Arc::new(Unverified(algorithms))
            }
            UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull => {
                let roots = roots(config, base)?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::new("upstream.tls.ca_file", e.to_string()))?;
                match config.mode {
                    UpstreamTlsMode::VerifyCa => Arc::new(AnyName(webpki)),
                    _ => webpki,
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::new("upstream.tls", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let client = match (&config.cert_file, &config.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let identity = load_identity(
                    ("upstream.tls.cert_file", &resolve(base, cert)),
                    ("upstream.tls.key_file", &resolve(base, key)),
                )?;
                let certified = &identity.certified;
                builder
                    .with_client_auth_cert(certified.cert.clone(), private_key(config, base)?)
                    .map_err(|e| TlsError::new("upstream.tls.key_file", e.to_string()))?
            }
            (Some(_), None) => {
                return Err(TlsError::new(
                    "upstream.tls.key_file",
                    "cert_file is set, key_file is missing",
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError::new(
                    "upstream.tls.cert_file",
                    "key_file is set, cert_file is missing",
                ))
            }
        };
        Ok(UpstreamTls {
            mode: config.mode,
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }

    /// Negotiates TLS on a fresh upstream connection (before the startup packet).
    pub async fn negotiate(&self, mut tcp: TcpStream) -> Result<UpstreamStream, UpstreamTlsError> {
        if self.mode == UpstreamTlsMode::Disable {
            return Ok(UpstreamStream::Left(tcp));
        }
        tcp.write_all(&crate::protocol::startup::SSL_REQUEST)
            .await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {}
            b'N' if self.mode == UpstreamTlsMode::Prefer => return Ok(UpstreamStream::Left(tcp)),
            b'N' => return Err(UpstreamTlsError::NotOffered(self.mode_name())),
            other => return Err(UpstreamTlsError::BadAnswer(other)),
        }
        self.handshake(tcp)
            .await
            .map(UpstreamStream::Right)
            .map_err(|e| UpstreamTlsError::Handshake(e.to_string()))
    }

    /// The TLS handshake after the server answered S, verified as the mode says; a refused
    /// certificate's error says why in words an operator can act on.
    pub async fn handshake<S>(&self, io: S) -> std::io::Result<TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.connector
            .connect(self.server_name.clone(), io)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), self.reason(&e)))
    }

    fn mode_name(&self) -> &'static str {
        match self.mode {
            UpstreamTlsMode::Disable => "disable",
            UpstreamTlsMode::Prefer => "prefer",
            UpstreamTlsMode::Require => "require",
            UpstreamTlsMode::VerifyCa => "verify-ca",
            UpstreamTlsMode::VerifyFull => "verify-full",
        }
    }

    /// A handshake failure in words an operator can act on.
    fn reason(&self, error: &std::io::Error) -> String {
        let Some(rustls::Error::InvalidCertificate(cert)) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return error.to_string();
        };
        let name = self.server_name.to_str();
        match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the server's certificate is not valid for the host name {name:?} (upstream.tls.server_name, default upstream.host)")
            }
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a trusted CA (upstream.tls.ca_file, or the system's trust store when it is omitted)".to_owned()
            }
            CertificateError::Other(other) if format!("{other:?}").contains("UnsupportedCertVersion") => {
                "the server's certificate is an X.509 version 1 certificate (as `openssl x509 -req` makes without extensions); make a version 3 certificate with a subjectAltName".to_owned()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        }
    }
}

fn roots(config: &UpstreamTlsConfig, base: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &config.ca_file {
        Some(ca) => return load_roots("upstream.tls.ca_file", &resolve(base, ca)),
        None => {
            let system = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(system.certs);
            if added == 0 {
                return Err(TlsError::new(
                    "upstream.tls.ca_file",
                    "omitted, and the system's trust store holds no certificate: name the CA file",
                ));
            }
        }
    }
    Ok(roots)
}

fn private_key(
    config: &UpstreamTlsConfig,
    base: &Path,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    let key = config.key_file.as_deref().unwrap_or(Path::new(""));
    super::files::load_key("upstream.tls.key_file", &resolve(base, key))
}

/// `require` and `prefer`: encryption without verification, as libpq does. Handshake
/// signatures are still checked (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must verify; the host name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
