//! pgcloak as the SCRAM endpoint across two TLS legs (auth.file, auth.query) with psql,
//! tokio-postgres, psycopg 3, node-postgres, PgJDBC and sqlx; CancelRequest to a TLS-only Postgres; the
//! sidecar's HTTPS listener and upstream TLS; the TLS session log line.

mod common;

use std::sync::Arc;

use common::tls::{failed, ok, pki, psql_through, root, tls_only_postgres, verifier_line};
use common::{psql, Stack, PASSWORD};
use pgcloak::pgtemp::PgTemp;
use pgcloak::tls::{ClientTlsMode, UpstreamTlsMode};

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
async fn psycopg_node_postgres_and_jdbc_through_two_tls_legs() {
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
    let java = common::jdbc_classpath().map(|jar| ("java", ["-cp", jar]));
    for (program, args, ok_line) in [
        (python.as_os_str(), vec!["tls_clients.py"], "psycopg TLS OK"),
        (
            node.as_os_str(),
            vec!["node_tls.js"],
            "node-postgres TLS OK",
        ),
    ]
    .into_iter()
    .chain(java.map(|(java, cp)| {
        let mut args = cp.to_vec();
        args.push("java/JdbcTls.java");
        (std::ffi::OsStr::new(java), args, "jdbc TLS OK")
    })) {
        let script = args.last().copied().unwrap_or_default();
        let out = tokio::process::Command::new(program)
            .args(&args)
            .args([&url, &ca])
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
    let clients = 2 + usize::from(common::jdbc_classpath().is_some());
    assert!(
        stored.lines().count() == clients && stored.lines().all(|l| l.starts_with("pgc1$")),
        "{stored}"
    );
    proxy.shutdown().await;
}

/// sqlx (its own rustls client and SCRAM, named prepared statements) with
/// `sslmode=require` and `verify-full`, writing and searching a PII column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_through_two_tls_legs() {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    use sqlx::{Connection, Row};
    let pki = pki();
    let pg = tls_only_postgres(&pki)
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    let mut settings = common::settings_for(&pg);
    let users = pgcloak::auth::parse_auth_file(&verifier_line(&pg)).unwrap();
    settings.client_tls = Some(pki.server_tls(ClientTlsMode::Require, false));
    settings.upstream_tls = Some(pki.upstream_tls(UpstreamTlsMode::VerifyFull, "ca.crt", None));
    settings.auth = Some(Arc::new(pgcloak::proxy::login::AuthSource::from_file(
        users,
    )));
    let policy = pgcloak::policy::Policy::from_yaml(
        &serde_yaml::from_str("sqlx_people:\n  email: deterministic\n").unwrap(),
    )
    .unwrap();
    let cloak = Arc::new(pgcloak::cloak::Cloak::with_key(
        policy,
        &pgcloak::crypto::MasterKey::generate(),
    ));
    let proxy = pgcloak::proxy::Proxy::bind(settings)
        .await
        .unwrap()
        .with_cloak(cloak)
        .spawn()
        .unwrap();
    let options = PgConnectOptions::new()
        .host("localhost")
        .port(proxy.addr().port())
        .username("postgres")
        .password(PASSWORD)
        .database("postgres");
    let modes = [
        options.clone().ssl_mode(PgSslMode::Require),
        options
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(&pki.ca),
    ];
    for (id, options) in modes.into_iter().enumerate() {
        let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE IF NOT EXISTS sqlx_people (id int, email text)")
            .execute(&mut conn)
            .await
            .unwrap();
        let email = format!("sqlx{id}@example.com");
        sqlx::query("INSERT INTO sqlx_people (id, email) VALUES ($1, $2)")
            .bind(id as i32)
            .bind(&email)
            .execute(&mut conn)
            .await
            .unwrap();
        let row = sqlx::query("SELECT email FROM sqlx_people WHERE email = $1")
            .bind(&email)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), email);
        conn.close().await.unwrap();
    }
    let direct = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres?sslmode=require",
        pg.port()
    );
    let stored = ok(&psql(&direct, &["-Atc", "SELECT email FROM sqlx_people"]));
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
