//! Reading PEM certificates and keys, and refusing the ones that cannot work: unreadable,
//! empty, expired or not yet valid, or a key that does not belong to its certificate. Each
//! error names the config key and the file.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::TlsError;

/// What `pgcloak check` reports of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    pub subject: String,
    /// RFC 3339, UTC.
    pub not_after: String,
}

/// A certificate chain with its private key, checked to belong together.
#[derive(Debug, Clone)]
pub struct LoadedIdentity {
    pub certified: Arc<CertifiedKey>,
    pub summary: CertificateSummary,
}

/// Every certificate in the PEM file at `path` (the config key `key`), each valid now.
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let read = |e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(e) => {
            TlsError::new(key, format!("cannot read {shown}: {e}"))
        }
        e => TlsError::new(key, format!("{shown} is not a PEM certificate file: {e}")),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::new(
            key,
            format!("{shown} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)"),
        ));
    }
    for cert in &certs {
        check_validity(key, path, cert)?;
    }
    Ok(certs)
}

/// The CA certificates in the PEM file at `path`, as trust anchors.
pub fn load_roots(key: &str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|e| {
            TlsError::new(
                key,
                format!("{}: not a usable CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

/// The private key in the PEM file at `path`.
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display();
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(e) => TlsError::new(key, format!("cannot read {shown}: {e}")),
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::new(
            key,
            format!("{shown} holds no private key (expected PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")"),
        ),
        e => TlsError::new(key, format!("{shown} is not a PEM private key file: {e}")),
    })
}

/// The chain at `cert_path` and the key at `key_path`, which must belong together.
pub fn load_identity(
    (cert_key, cert_path): (&str, &Path),
    (key_key, key_path): (&str, &Path),
) -> Result<LoadedIdentity, TlsError> {
    let certs = load_certs(cert_key, cert_path)?;
    let key = load_key(key_key, key_path)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        TlsError::new(
            key_key,
            format!("{}: unsupported private key: {e}", key_path.display()),
        )
    })?;
    let summary = summary(&certs[0]);
    let certified = CertifiedKey::new(certs, signer);
    certified.keys_match().map_err(|_| {
        TlsError::new(
            key_key,
            format!(
                "{} is not the private key of the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    Ok(LoadedIdentity {
        certified: Arc::new(certified),
        summary,
    })
}

/// The subject of a DER certificate, for logs (e.g. `CN=app, O=Example`).
pub fn subject(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(parsed.subject().to_string())
}

fn summary(cert: &CertificateDer<'_>) -> CertificateSummary {
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, parsed)) => CertificateSummary {
            subject: parsed.subject().to_string(),
            not_after: parsed
                .validity()
                .not_after
                .to_rfc2822()
                .unwrap_or_else(|_| parsed.validity().not_after.to_string()),
        },
        Err(_) => CertificateSummary {
            subject: "(unparsable)".to_owned(),
            not_after: "(unknown)".to_owned(),
        },
    }
}

fn check_validity(key: &str, path: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let shown = path.display();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| TlsError::new(key, format!("{shown}: a certificate cannot be parsed: {e}")))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let validity = parsed.validity();
    let subject = parsed.subject();
    if validity.not_after.timestamp() < now {
        return Err(TlsError::new(
            key,
            format!(
                "{shown}: the certificate of {subject} expired on {}",
                validity.not_after
            ),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(TlsError::new(
            key,
            format!(
                "{shown}: the certificate of {subject} is not valid before {}",
                validity.not_before
            ),
        ));
    }
    Ok(())
}
