//! TLS on both legs through `pgcloak`, with psql (libpq) and a rustls client, against a
//! real Postgres that accepts only TLS where the test says so.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use common::certs::{Ca, Leaf};
use common::{psql, Stack, PASSWORD};
use pgcloak::pgtemp::PgTemp;
use pgcloak::tls::{
    ClientCertMode, ClientTlsConfig, ClientTlsMode, ServerTls, UpstreamTls, UpstreamTlsConfig,
    UpstreamTlsMode,
};

/// A directory with a CA, pgcloak's certificate (localhost, 127.0.0.1), a client
/// certificate, and Postgres's own certificate from the same CA.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
}

fn pki() -> Pki {
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
    ca.issue(&dir, "client", "app-client", &[], Leaf::Client);
    Ca::new("another CA").write(&dir, "other-ca");
    Pki { dir, ca: ca_file }
}

impl Pki {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn server_tls(&self, mode: ClientTlsMode, client_ca: bool) -> Arc<ServerTls> {
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

    fn upstream_tls(
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

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap()
    }
}

/// psql to pgcloak as localhost (so verify-full checks the name) with extra URL parameters.
fn psql_through(stack: &Stack, params: &str, sql: &str) -> Output {
    let url = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres?{params}",
        stack.addr().port()
    );
    psql(&url, &["-Atc", sql])
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "psql succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn root(pki: &Pki) -> String {
    format!("sslrootcert={}", pki.ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_pgcloak_over_tls_and_plaintext_is_refused_when_required() {
    let pki = pki();
    let tls = pki.server_tls(ClientTlsMode::Require, false);
    let stack = Stack::start_full(PgTemp::builder(), |s| s.client_tls = Some(tls), None).await;
    let root = root(&pki);
    for mode in ["require", "verify-ca", "verify-full"] {
        let out = psql_through(&stack, &format!("sslmode={mode}&{root}"), "SELECT 1");
        assert_eq!(ok(&out), "1", "sslmode={mode}");
    }
    // The default, prefer, uses TLS too; disable is refused with a Postgres-style FATAL.
    assert_eq!(ok(&psql_through(&stack, "sslmode=prefer", "SELECT 2")), "2");
    let err = failed(&psql_through(&stack, "sslmode=disable", "SELECT 1"));
    assert!(err.contains("pgcloak requires TLS"), "{err}");
    // A client that does not trust pgcloak's CA stops at verification.
    let other = format!(
        "sslmode=verify-full&sslrootcert={}",
        pki.file("other-ca.crt").display()
    );
    let err = failed(&psql_through(&stack, &other, "SELECT 1"));
    assert!(err.contains("certificate verify failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_mode_serves_both_and_mtls_wants_a_certificate() {
    let pki = pki();
    let allow = pki.server_tls(ClientTlsMode::Allow, false);
    let stack = Stack::start_full(PgTemp::builder(), |s| s.client_tls = Some(allow), None).await;
    assert_eq!(
        ok(&psql_through(&stack, "sslmode=disable", "SELECT 1")),
        "1"
    );
    assert_eq!(
        ok(&psql_through(&stack, "sslmode=require", "SELECT 1")),
        "1"
    );
    drop(stack);

    let mtls = pki.server_tls(ClientTlsMode::Require, true);
    let stack = Stack::start_full(PgTemp::builder(), |s| s.client_tls = Some(mtls), None).await;
    let root = root(&pki);
    let err = failed(&psql_through(
        &stack,
        &format!("sslmode=verify-full&{root}"),
        "SELECT 1",
    ));
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let with_cert = format!(
        "sslmode=verify-full&{root}&sslcert={}&sslkey={}",
        pki.file("client.crt").display(),
        pki.file("client.key").display()
    );
    std::fs::set_permissions(
        pki.file("client.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(ok(&psql_through(&stack, &with_cert, "SELECT 1")), "1");
}

/// Postgres accepting only TLS from loopback (hostnossl rejected), with db.crt.
fn tls_only_postgres(pki: &Pki) -> pgcloak::pgtemp::PgTempBuilder {
    PgTemp::builder()
        .tls(&pki.read("db.crt"), &pki.read("db.key"))
        .hba_line("hostnossl all all 127.0.0.1/32 reject")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_reaches_a_tls_only_postgres_and_verifies_it() {
    let pki = pki();
    let verified = pki.upstream_tls(UpstreamTlsMode::VerifyFull, "ca.crt", None);
    let stack = Stack::start_full(
        tls_only_postgres(&pki),
        |s| s.upstream_tls = Some(verified),
        None,
    )
    .await;
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    assert_eq!(ok(&stack.psql(&["-Atc", sql])), "t");

    // Wrong host name, unknown CA: the client gets 08001 with the reason, never plaintext.
    for (upstream, reason) in [
        (
            pki.upstream_tls(
                UpstreamTlsMode::VerifyFull,
                "ca.crt",
                Some("db.example.com"),
            ),
            "not valid for the host name",
        ),
        (
            pki.upstream_tls(UpstreamTlsMode::VerifyFull, "other-ca.crt", None),
            "not signed by a trusted CA",
        ),
    ] {
        let port = stack.pg.port();
        let host = stack.pg.host().to_owned();
        let proxy = pgcloak::proxy::Proxy::bind(pgcloak::config::ProxySettings {
            upstream_tls: Some(upstream),
            ..common::settings_for(&stack.pg)
        })
        .await
        .unwrap()
        .spawn()
        .unwrap();
        let url = format!("postgresql://postgres:{PASSWORD}@{}/postgres", proxy.addr());
        let err = failed(&psql(&url, &["-Atc", "SELECT 1"]));
        assert!(err.contains(reason), "{err}");
        assert!(err.contains(&format!("{host}:{port}")), "{err}");
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_only_when_the_server_has_no_tls() {
    let pki = pki();
    let prefer = pki.upstream_tls(UpstreamTlsMode::Prefer, "ca.crt", None);
    let stack = Stack::start_full(PgTemp::builder(), |s| s.upstream_tls = Some(prefer), None).await;
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    assert_eq!(ok(&stack.psql(&["-Atc", sql])), "f");
    drop(stack);
    let require = pki.upstream_tls(UpstreamTlsMode::Require, "ca.crt", None);
    let stack =
        Stack::start_full(PgTemp::builder(), |s| s.upstream_tls = Some(require), None).await;
    let err = failed(&stack.psql(&["-Atc", "SELECT 1"]));
    assert!(err.contains("does not support TLS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_legs_tls_with_pii_encrypted_end_to_end() {
    let pki = pki();
    let client_tls = pki.server_tls(ClientTlsMode::Require, false);
    let upstream = pki.upstream_tls(UpstreamTlsMode::VerifyFull, "ca.crt", None);
    let policy = pgcloak::policy::Policy::from_yaml(
        &serde_yaml::from_str("users:\n  email: deterministic\n").unwrap(),
    )
    .unwrap();
    let cloak = Arc::new(pgcloak::cloak::Cloak::with_key(
        policy,
        &pgcloak::crypto::MasterKey::generate(),
    ));
    let stack = Stack::start_full(
        tls_only_postgres(&pki),
        |s| {
            s.client_tls = Some(client_tls);
            s.upstream_tls = Some(upstream);
        },
        Some(cloak),
    )
    .await;
    // SCRAM across two TLS sessions needs pgcloak as the SCRAM endpoint (not built yet):
    // until then libpq clients disable channel binding.
    let params = format!("sslmode=verify-full&{}&channel_binding=disable", root(&pki));
    ok(&psql_through(
        &stack,
        &params,
        "CREATE TABLE users (id int, email text); INSERT INTO users (id, email) VALUES (1, 'ann@example.com')",
    ));
    assert_eq!(
        ok(&psql_through(
            &stack,
            &params,
            "SELECT email FROM users WHERE email = 'ann@example.com'"
        )),
        "ann@example.com"
    );
    // Straight to Postgres (over TLS): ciphertext only.
    let direct = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres?sslmode=require",
        stack.pg.port()
    );
    let stored = ok(&psql(&direct, &["-Atc", "SELECT email FROM users"]));
    assert!(stored.starts_with("pgc1$"), "{stored}");
}

/// A TLS client as libpq 17's `sslnegotiation=direct`: a ClientHello first, ALPN as given.
async fn direct_tls(stack: &Stack, pki: &Pki, alpn: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = pki.read("ca.crt");
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
    let tcp = tokio::net::TcpStream::connect(stack.addr()).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let mut body = 196608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    tls.write_all(&startup).await?;
    tls.flush().await?;
    let mut answer = vec![0u8; 1];
    tls.read_exact(&mut answer).await?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_negotiation_needs_alpn_postgresql() {
    let pki = pki();
    let tls = pki.server_tls(ClientTlsMode::Require, false);
    let stack = Stack::start_full(PgTemp::builder(), |s| s.client_tls = Some(tls), None).await;
    let answer = direct_tls(&stack, &pki, Some(b"postgresql")).await.unwrap();
    assert_eq!(answer, b"R", "an authentication request from Postgres");
    assert!(
        direct_tls(&stack, &pki, None).await.is_err(),
        "direct TLS without ALPN is closed"
    );
}

/// The superuser's SCRAM verifier, read straight from a TLS-only Postgres.
fn verifier_line(pg: &PgTemp) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_through_both_tls_legs_with_pgcloak_as_the_endpoint() {
    let pki = pki();
    let client_tls = pki.server_tls(ClientTlsMode::Require, false);
    let upstream = pki.upstream_tls(UpstreamTlsMode::VerifyFull, "ca.crt", None);
    let source = Arc::new(std::sync::Mutex::new(None));
    let auth = source.clone();
    let mut stack = Stack::start_full(
        tls_only_postgres(&pki),
        |s| {
            s.client_tls = Some(client_tls);
            s.upstream_tls = Some(upstream);
            *auth.lock().unwrap() = Some(s.clone());
        },
        None,
    )
    .await;
    // Restart the proxy with the verifier now that Postgres exists.
    let users = pgcloak::auth::parse_auth_file(&verifier_line(&stack.pg)).unwrap();
    let mut settings = source.lock().unwrap().take().unwrap();
    settings.auth = Some(Arc::new(pgcloak::proxy::login::AuthSource::from_file(
        users,
    )));
    let proxy = pgcloak::proxy::Proxy::bind(settings)
        .await
        .unwrap()
        .spawn()
        .unwrap();
    std::mem::replace(&mut stack.proxy, proxy).shutdown().await;

    let root = root(&pki);
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    // libpq's default channel_binding=prefer, and require: both use SCRAM-SHA-256-PLUS.
    for binding in ["prefer", "require", "disable"] {
        let params = format!("sslmode=verify-full&{root}&channel_binding={binding}");
        assert_eq!(
            ok(&psql_through(&stack, &params, sql)),
            "t",
            "channel_binding={binding}"
        );
    }
    // tokio-postgres on rustls (pgcloak's own connector, verify-full against the CA), with
    // channel binding to pgcloak's certificate.
    let mut rustls_client =
        (*pki.upstream_tls(UpstreamTlsMode::VerifyFull, "ca.crt", None)).clone();
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .port(stack.addr().port())
        .user("postgres")
        .password(PASSWORD)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let tcp = tokio::net::TcpStream::connect(stack.addr()).await.unwrap();
    let connect = tokio_postgres::tls::MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(
        &mut rustls_client,
        "localhost",
    )
    .unwrap();
    let (client, connection) = config.connect_raw(tcp, connect).await.unwrap();
    tokio::spawn(connection);
    let row = client.query_one(sql, &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "the upstream leg is TLS");

    // A wrong password and an unknown user get Postgres's error, alike.
    for (user, password) in [("postgres", "wrong"), ("nobody", PASSWORD)] {
        let url = format!(
            "postgresql://{user}:{password}@localhost:{}/postgres?sslmode=verify-full&{root}",
            stack.addr().port()
        );
        let err = failed(&psql(&url, &["-Atc", "SELECT 1"]));
        assert!(
            err.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_reads_verifiers_over_the_upstream_tls_leg() {
    let pki = pki();
    let pg = tls_only_postgres(&pki)
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("PGCLOAK_TLS_TEST_AUTH_PW", PASSWORD) };
    let yaml = format!(
        "listen: \"127.0.0.1:0\"
upstream:
  host: localhost
  port: {}
  tls: {{ mode: verify-full, ca_file: ca.crt }}
tls: {{ cert_file: proxy.crt, key_file: proxy.key }}
auth: {{ user: postgres, password_env: PGCLOAK_TLS_TEST_AUTH_PW }}
",
        pg.port()
    );
    let path = pki.file("pgcloak.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = pgcloak::config::Config::load(&path).unwrap();
    let settings = config.settings(&path).unwrap();
    let proxy = pgcloak::proxy::Proxy::bind(settings)
        .await
        .unwrap()
        .spawn()
        .unwrap();
    let url = |password: &str, binding: &str| {
        format!(
            "postgresql://postgres:{password}@localhost:{}/postgres?sslmode=verify-full&{}&channel_binding={binding}",
            proxy.addr().port(),
            root(&pki)
        )
    };
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for binding in ["prefer", "require"] {
        assert_eq!(ok(&psql(&url(PASSWORD, binding), &["-Atc", sql])), "t");
    }
    let err = failed(&psql(&url("wrong", "prefer"), &["-Atc", "SELECT 1"]));
    assert!(
        err.contains("password authentication failed for user \"postgres\""),
        "{err}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_node_postgres_through_two_tls_legs() {
    let python = common::client_program(".venv/bin/python", ".venv/bin/python");
    let node = common::client_program("node", "node_modules/pg/package.json");
    let (Some(python), Some(node)) = (python, node) else {
        return;
    };
    let pki = pki();
    let client_tls = pki.server_tls(ClientTlsMode::Require, false);
    let upstream = pki.upstream_tls(UpstreamTlsMode::VerifyFull, "ca.crt", None);
    let policy = pgcloak::policy::Policy::from_yaml(
        &serde_yaml::from_str("tls_people:\n  email: deterministic\n").unwrap(),
    )
    .unwrap();
    let cloak = Arc::new(pgcloak::cloak::Cloak::with_key(
        policy,
        &pgcloak::crypto::MasterKey::generate(),
    ));
    let pg = tls_only_postgres(&pki)
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    let mut settings = common::settings_for(&pg);
    let users = pgcloak::auth::parse_auth_file(&verifier_line(&pg)).unwrap();
    settings.client_tls = Some(client_tls);
    settings.upstream_tls = Some(upstream);
    settings.auth = Some(Arc::new(pgcloak::proxy::login::AuthSource::from_file(
        users,
    )));
    let proxy = pgcloak::proxy::Proxy::bind(settings)
        .await
        .unwrap()
        .with_cloak(cloak)
        .spawn()
        .unwrap();
    let url = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres",
        proxy.addr().port()
    );
    let ca = pki.ca.display().to_string();
    for (program, script, ok_line) in [
        (&python, "tls_clients.py", "psycopg TLS OK"),
        (&node, "node_tls.js", "node-postgres TLS OK"),
    ] {
        let out = tokio::process::Command::new(program)
            .args([script, &url, &ca])
            .current_dir(common::clients_dir())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(ok_line),
            "{script}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let direct = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres?sslmode=require",
        pg.port()
    );
    let stored = ok(&psql(
        &direct,
        &["-Atc", "SELECT email FROM tls_people ORDER BY id"],
    ));
    assert!(
        stored.lines().count() == 2 && stored.lines().all(|l| l.starts_with("pgc1$")),
        "{stored}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_a_tls_only_postgres_through_pgcloak() {
    let pki = pki();
    let upstream = pki.upstream_tls(UpstreamTlsMode::VerifyFull, "ca.crt", None);
    let stack = Stack::start_full(
        tls_only_postgres(&pki),
        |s| s.upstream_tls = Some(upstream),
        None,
    )
    .await;
    // A plaintext tokio-postgres client: SCRAM-SHA-256-PLUS is hidden from it.
    let client = stack.connect().await;
    let token = client.cancel_token();
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    // The cancel may race the query's start: send it until the query ends.
    let mut result = None;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        if query.is_finished() {
            result = Some(query.await.unwrap());
            break;
        }
    }
    let err = result.expect("the query was cancelled").unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_reaches_a_tls_only_postgres_with_upstream_tls() {
    use common::KeyKind;
    let pki = pki();
    let pg = tls_only_postgres(&pki)
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    common::write_key_pair(&pki.dir, "sidecar", KeyKind::Rsa);
    common::write_key_pair(&pki.dir, "partner", KeyKind::Rsa);
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("PGCLOAK_TLS_TEST_SIDECAR_PW", PASSWORD) };
    let healthz = |tls: &str, https: bool| {
        let yaml = format!(
            "listen: \"127.0.0.1:0\"
upstream:
  host: localhost
  port: {}
{tls}
sidecar:
  listen: \"127.0.0.1:0\"
  database: postgres
  user: postgres
  password_env: PGCLOAK_TLS_TEST_SIDECAR_PW
  private_key_file: sidecar.pem
{}
  parties:
    partner:
      public_key_file: partner.pub.pem
      tables:
        users: [email]
",
            pg.port(),
            match https {
                true => "  tls: { cert_file: proxy.crt, key_file: proxy.key }",
                false => "",
            }
        );
        let path = pki.file("sidecar.yaml");
        std::fs::write(&path, yaml).unwrap();
        let config = pgcloak::config::Config::load(&path).unwrap();
        let settings = config.sidecar(&path).unwrap().unwrap();
        let ca = pki.read("ca.crt");
        async move {
            let policy = pgcloak::policy::Policy::default();
            let cloak = Arc::new(pgcloak::cloak::Cloak::with_key(
                policy,
                &pgcloak::crypto::MasterKey::generate(),
            ));
            let sidecar = pgcloak::sidecar::Sidecar::bind(settings, cloak)
                .await
                .unwrap()
                .spawn()
                .unwrap();
            let status = match https {
                true => https_status(sidecar.addr(), &ca).await,
                false => reqwest::get(format!("http://{}/healthz", sidecar.addr()))
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            };
            sidecar.shutdown().await;
            status
        }
    };
    let with_tls = healthz("  tls: { mode: verify-full, ca_file: ca.crt }", false).await;
    assert_eq!(with_tls, 200);
    let without = healthz("", false).await;
    assert_ne!(without, 200, "hostnossl is rejected");
    // HTTPS on the sidecar's own listener, verified against the CA.
    let https = healthz("  tls: { mode: verify-full, ca_file: ca.crt }", true).await;
    assert_eq!(https, 200);
}

/// GET /healthz over HTTPS with a rustls client trusting `ca_pem`; the status code.
async fn https_status(addr: std::net::SocketAddr, ca_pem: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tls_session_logs_its_client_certificate_subject() {
    let pki = pki();
    let pg = PgTemp::builder()
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    let port = pgcloak::pgtemp::free_port().unwrap();
    let config = pki.file("logged.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{port}\"
upstream:
  host: 127.0.0.1
  port: {}
tls: {{ cert_file: proxy.crt, key_file: proxy.key, mode: allow, client_ca_file: ca.crt }}
",
            pg.port()
        ),
    )
    .unwrap();
    let log = pki.file("pgcloak.log");
    let (mut child, _) = common::serve_process(&config, port, &log, &[("RUST_LOG", "info")]).await;
    std::fs::set_permissions(
        pki.file("client.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let url = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{port}/postgres?sslmode=verify-full&{}&sslcert={}&sslkey={}",
        root(&pki),
        pki.file("client.crt").display(),
        pki.file("client.key").display()
    );
    assert_eq!(ok(&psql(&url, &["-Atc", "SELECT 1"])), "1");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("client TLS established") && l.contains("CN=app-client"))
        .unwrap_or_else(|| panic!("no TLS session line with the subject:\n{text}"));
    assert!(line.contains("TLSv1_3"), "{line}");
}
