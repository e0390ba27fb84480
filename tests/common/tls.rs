//! TLS test fixtures: a CA and certificates (rcgen), pgcloak's TLS settings made from
//! them, and psql helpers.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use super::certs::{Ca, Leaf};
use super::{psql, Stack, PASSWORD};
use pgcloak::pgtemp::PgTemp;
use pgcloak::tls::{
    ClientCertMode, ClientTlsConfig, ClientTlsMode, ServerTls, UpstreamTls, UpstreamTlsConfig,
    UpstreamTlsMode,
};

/// A directory with a CA, pgcloak's certificate (localhost, 127.0.0.1), a client
/// certificate, and Postgres's own certificate from the same CA (db, and db-expired).
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
}

pub fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!(
        "pgcloak-tls-it-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("pgcloak test CA");
    let ca_file = ca.write(&dir, "ca");
    ca.issue(
        &dir,
        "proxy",
        "pgcloak.test",
        &["localhost", "127.0.0.1"],
        Leaf::Server,
    );
    ca.issue(
        &dir,
        "db",
        "db.test",
        &["localhost", "127.0.0.1"],
        Leaf::Server,
    );
    ca.issue(
        &dir,
        "db-expired",
        "db.test",
        &["localhost", "127.0.0.1"],
        Leaf::ExpiredServer,
    );
    ca.issue(&dir, "client", "app-client", &[], Leaf::Client);
    Ca::new("another CA").write(&dir, "other-ca");
    Pki { dir, ca: ca_file }
}

impl Pki {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn server_tls(&self, mode: ClientTlsMode, client_ca: bool) -> Arc<ServerTls> {
        let config = ClientTlsConfig {
            cert_file: "proxy.crt".into(),
            key_file: "proxy.key".into(),
            mode,
            client_ca_file: client_ca.then(|| "ca.crt".into()),
            client_cert: match client_ca {
                true => ClientCertMode::Require,
                false => ClientCertMode::Optional,
            },
        };
        Arc::new(ServerTls::load(&config, &self.dir).unwrap())
    }

    pub fn upstream_tls(
        &self,
        mode: UpstreamTlsMode,
        ca: &str,
        name: Option<&str>,
    ) -> Arc<UpstreamTls> {
        let config = UpstreamTlsConfig {
            mode,
            ca_file: Some(ca.into()),
            server_name: name.map(str::to_owned),
            cert_file: None,
            key_file: None,
        };
        Arc::new(UpstreamTls::load(&config, "localhost", &self.dir).unwrap())
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap()
    }
}

/// psql to pgcloak as localhost (so verify-full checks the name) with extra URL parameters.
pub fn psql_through(stack: &Stack, params: &str, sql: &str) -> Output {
    let url = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres?{params}",
        stack.addr().port()
    );
    psql(&url, &["-Atc", sql])
}

pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "psql succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn root(pki: &Pki) -> String {
    format!("sslrootcert={}", pki.ca.display())
}

/// Postgres accepting only TLS from loopback (hostnossl rejected), with db.crt.
pub fn tls_only_postgres(pki: &Pki) -> pgcloak::pgtemp::PgTempBuilder {
    PgTemp::builder()
        .tls(&pki.read("db.crt"), &pki.read("db.key"))
        .hba_line("hostnossl all all 127.0.0.1/32 reject")
}

/// The superuser's SCRAM verifier, read straight from a TLS-only Postgres.
pub fn verifier_line(pg: &PgTemp) -> String {
    let direct = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres?sslmode=require",
        pg.port()
    );
    let verifier = ok(&psql(
        &direct,
        &[
            "-Atc",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'",
        ],
    ));
    format!("\"postgres\" \"{verifier}\"\n")
}
