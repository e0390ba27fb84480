#![allow(dead_code)] // each test binary uses a part
//! Certificates made for tests with rcgen: a CA, and leaf certificates it signs, written as
//! PEM files (also used by src/tls/tests.rs through #[path]).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// What a leaf certificate is for, and whether it is still valid.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    Server,
    Client,
    ExpiredServer,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// Writes the CA certificate to `dir/stem.crt`.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.crt"));
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// Writes `dir/stem.crt` (signed by this CA, for `names`) and `dir/stem.key`.
    pub fn issue(
        &self,
        dir: &Path,
        stem: &str,
        common_name: &str,
        names: &[&str],
        leaf: Leaf,
    ) -> (PathBuf, PathBuf) {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![match leaf {
            Leaf::Client => ExtendedKeyUsagePurpose::ClientAuth,
            _ => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        if leaf == Leaf::ExpiredServer {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}
