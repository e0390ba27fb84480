//! The `tls-server-end-point` channel binding of RFC 5929 section 4.1: a hash of the
//! server's certificate, with the hash function of the certificate's signature algorithm
//! (SHA-256 when that is MD5 or SHA-1). Postgres computes it the same way
//! (`be_tls_get_certificate_hash`), and refuses certificates whose signature algorithm has no
//! single hash function (Ed25519, RSA-PSS): so does this.

use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::x509::X509;

/// The channel-binding type pgcloak supports, as named in the gs2 header.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelBindingError {
    #[error("the certificate is not valid DER")]
    InvalidCertificate,
    #[error("the certificate's signature algorithm ({0}) has no single hash function for tls-server-end-point channel binding")]
    UnsupportedSignatureAlgorithm(String),
}

/// The `tls-server-end-point` binding data of the DER certificate `cert_der`.
pub fn tls_server_end_point(cert_der: &[u8]) -> Result<Vec<u8>, ChannelBindingError> {
    let cert = X509::from_der(cert_der).map_err(|_| ChannelBindingError::InvalidCertificate)?;
    let algorithm = cert.signature_algorithm().object().nid();
    let unsupported = || {
        ChannelBindingError::UnsupportedSignatureAlgorithm(
            algorithm.long_name().unwrap_or("unknown").to_owned(),
        )
    };
    let digest = algorithm
        .signature_algorithms()
        .ok_or_else(unsupported)?
        .digest;
    let digest = match digest {
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        other => MessageDigest::from_nid(other).ok_or_else(unsupported)?,
    };
    hash(digest, cert_der)
        .map(|bytes| bytes.to_vec())
        .map_err(|_| unsupported())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::pkey::PKey;
    use openssl::x509::X509NameBuilder;
    use sha2::Digest;

    fn certificate(digest: MessageDigest) -> Vec<u8> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "pgcloak-test").unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder.sign(&key, digest).unwrap();
        builder.build().to_der().unwrap()
    }

    #[test]
    fn hash_follows_the_signature_algorithm() {
        let der = certificate(MessageDigest::sha256());
        assert_eq!(
            tls_server_end_point(&der).unwrap(),
            sha2::Sha256::digest(&der).to_vec()
        );
        let der = certificate(MessageDigest::sha384());
        assert_eq!(
            tls_server_end_point(&der).unwrap(),
            sha2::Sha384::digest(&der).to_vec()
        );
        let der = certificate(MessageDigest::sha512());
        assert_eq!(
            tls_server_end_point(&der).unwrap(),
            sha2::Sha512::digest(&der).to_vec()
        );
    }

    #[test]
    fn sha1_signatures_are_hashed_with_sha256() {
        let der = certificate(MessageDigest::sha1());
        assert_eq!(
            tls_server_end_point(&der).unwrap(),
            sha2::Sha256::digest(&der).to_vec()
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(
            tls_server_end_point(b"not a certificate"),
            Err(ChannelBindingError::InvalidCertificate)
        );
    }
}
