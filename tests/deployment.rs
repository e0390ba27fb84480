//! The deployment the README describes, run as `pgcloak serve` with one config file: a
//! Postgres that accepts only TLS and SCRAM; pgcloak requiring TLS from clients, verifying
//! Postgres's certificate (verify-full), and reading verifiers with `auth.query` as a role
//! that may call one SECURITY DEFINER function and nothing else; a PII policy; and the JWE
//! sidecar on HTTPS, reaching Postgres over TLS. Driven by psql and by an independent JOSE
//! party (Python jwcrypto) over HTTPS; Postgres is checked to hold only ciphertext.

mod common;

use std::time::Duration;

use common::tls::{failed, ok, pki, root, tls_only_postgres};
use common::{psql, KeyKind, PASSWORD, SIDECAR_POLICY, SIDECAR_SCHEMA};

/// What the README tells a user to run as a superuser so that pgcloak's `auth.user` needs
/// no access to pg_authid: the PgBouncer-style lookup function.
const AUTH_SETUP: &str = "
CREATE ROLE pgcloak_auth LOGIN PASSWORD 'auth-pw';
CREATE SCHEMA pgcloak;
CREATE FUNCTION pgcloak.user_lookup(i_username text, OUT uname name, OUT phash text)
RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
  FROM pg_authid WHERE rolname = i_username AND rolcanlogin
$$;
REVOKE ALL ON FUNCTION pgcloak.user_lookup(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgcloak TO pgcloak_auth;
GRANT EXECUTE ON FUNCTION pgcloak.user_lookup(text) TO pgcloak_auth;
";

/// The application's roles: `app` with an ASCII password, `ünï` with one that SASLprep
/// (RFC 4013) changes: U+FB01 (the "fi" ligature) becomes "fi", U+00A0 a space; `legacy`
/// with an md5 password and `trusted` without one (pg_hba.conf: md5 and trust), whose
/// logins pgcloak relays even with `auth`.
const APP_ROLES: &str = "
CREATE ROLE app LOGIN PASSWORD 'app-pw';
CREATE ROLE \"ünï\" LOGIN PASSWORD 'pä\u{fb01}\u{a0}wörd';
GRANT SELECT, INSERT, UPDATE, DELETE ON users TO app, \"ünï\";
GRANT USAGE ON SEQUENCE users_id_seq TO app, \"ünï\";
SET password_encryption = md5;
CREATE ROLE legacy LOGIN PASSWORD 'legacy-pw';
CREATE ROLE trusted LOGIN;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_tls_auth_query_policy_and_https_sidecar() {
    let pki = pki();
    let pg = tls_only_postgres(&pki)
        .hba_line("hostssl all legacy 127.0.0.1/32 md5")
        .hba_line("hostssl all trusted 127.0.0.1/32 trust")
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    let direct = |user: &str, password: &str| {
        format!(
            "postgresql://{user}:{password}@localhost:{}/postgres?sslmode=verify-full&{}",
            pg.port(),
            root(&pki)
        )
    };
    let superuser = direct("postgres", PASSWORD);
    let setup = format!("{SIDECAR_SCHEMA}{AUTH_SETUP}{APP_ROLES}");
    ok(&psql(&superuser, &["-v", "ON_ERROR_STOP=1", "-qc", &setup]));
    // The lookup role cannot read pg_authid itself.
    let err = failed(&psql(
        &direct("pgcloak_auth", "auth-pw"),
        &["-Atc", "SELECT rolpassword FROM pg_authid"],
    ));
    assert!(err.contains("permission denied"), "{err}");

    common::write_key_pair(&pki.dir, "sidecar", KeyKind::Rsa);
    common::write_key_pair(&pki.dir, "partner-a", KeyKind::Rsa);
    let master_key = pgcloak::crypto::MasterKey::generate().to_base64();
    let port = pgcloak::pgtemp::free_port().unwrap();
    let sidecar_port = pgcloak::pgtemp::free_port().unwrap();
    let policy = SIDECAR_POLICY.replace('\n', "\n  ");
    let config = pki.file("deployment.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{port}\"
upstream:
  host: localhost
  port: {}
  tls: {{ mode: verify-full, ca_file: ca.crt }}
tls: {{ cert_file: proxy.crt, key_file: proxy.key, mode: require }}
auth:
  user: pgcloak_auth
  password_env: E2E_AUTH_PW
  query: \"SELECT uname, phash FROM pgcloak.user_lookup($1)\"
keys: {{ master_key_env: E2E_MASTER_KEY }}
tables:{policy}
sidecar:
  listen: \"127.0.0.1:{sidecar_port}\"
  database: postgres
  user: app
  password_env: E2E_APP_PW
  private_key_file: sidecar.pem
  tls: {{ cert_file: proxy.crt, key_file: proxy.key }}
  parties:
    partner-a:
      public_key_file: partner-a.pub.pem
      tables: {{ users: [email, first_name, last_name, age] }}
    partner-d:
      public_key_file: partner-a.pub.pem
      require_jti: true
      tables: {{ users: [email] }}
",
            pg.port()
        ),
    )
    .unwrap();
    let log = pki.file("deployment.log");
    let env = [
        ("E2E_AUTH_PW", "auth-pw"),
        ("E2E_APP_PW", "app-pw"),
        ("E2E_MASTER_KEY", master_key.as_str()),
    ];
    let mut child = common::spawn_serve(&config, &log, &env);
    let through = |user: &str, password: &str, binding: &str| {
        format!(
            "postgresql://{user}:{password}@localhost:{port}/postgres?sslmode=verify-full&{}&channel_binding={binding}",
            root(&pki)
        )
    };
    let app = through("app", "app-pw", "require");
    let started = common::eventually(Duration::from_secs(20), || async {
        psql(&app, &["-Atc", "SELECT 1"]).status.success()
    })
    .await;
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(started, "pgcloak did not start:\n{}", text());

    // PII through psql with libpq's default channel binding and with it required.
    let insert = "INSERT INTO users (email, first_name) VALUES ('e2e@example.com', 'Ana')";
    ok(&psql(
        &through("app", "app-pw", "prefer"),
        &["-Atc", insert],
    ));
    let select = "SELECT first_name FROM users WHERE email = 'e2e@example.com'";
    assert_eq!(ok(&psql(&app, &["-Atc", select])), "Ana");
    let err = failed(&psql(
        &through("app", "wrong", "prefer"),
        &["-Atc", "SELECT 1"],
    ));
    assert!(
        err.contains("password authentication failed for user \"app\""),
        "{err}"
    );
    // md5 and trust logins are relayed: Postgres checks them as it would directly.
    for (user, password) in [("legacy", "legacy-pw"), ("trusted", "")] {
        let url = through(user, password, "disable");
        assert_eq!(ok(&psql(&url, &["-Atc", "SELECT current_user"])), user);
    }
    let err = failed(&psql(
        &through("legacy", "wrong", "disable"),
        &["-Atc", "SELECT 1"],
    ));
    assert!(
        err.contains("password authentication failed for user \"legacy\""),
        "{err}"
    );
    // A password that SASLprep normalises logs in as typed and in its normalised form.
    for password in ["pä\u{fb01}\u{a0}wörd", "päfi wörd"] {
        let url = through("%C3%BCn%C3%AF", &urlencode(password), "require");
        assert_eq!(ok(&psql(&url, &["-Atc", "SELECT current_user"])), "ünï");
    }

    // An independent JOSE party over HTTPS, verifying the sidecar's certificate.
    let sidecar = format!("https://localhost:{sidecar_port}");
    let ca = pki.file("ca.crt");
    if let Some(report) = common::jwcrypto_party(&sidecar, &pki.dir, Some(&ca)).await {
        for record in report["records"].as_array().unwrap() {
            let email = record["email"].as_str().unwrap();
            let sql = format!("SELECT first_name FROM users WHERE email = '{email}'");
            let expected = record["first_name"].as_str().unwrap();
            assert_eq!(ok(&psql(&app, &["-Atc", &sql])), expected);
        }
    }

    // Postgres holds only envelopes in the PII columns.
    let stored = ok(&psql(
        &superuser,
        &[
            "-Atc",
            "SELECT count(*), count(*) FILTER (WHERE email LIKE 'pgc1$%' \
             AND (first_name IS NULL OR first_name LIKE 'pgc1$%')) FROM users",
        ],
    ));
    let (rows, sealed) = stored.split_once('|').unwrap();
    assert_eq!(rows, sealed, "a PII value is stored in clear");
    assert!(rows.parse::<u32>().unwrap() >= 1);
    // The tools that connect to Postgres directly reach it over `upstream.tls` too.
    let dsn = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres",
        pg.port()
    );
    for args in [
        vec!["check", "--upstream-dsn", dsn.as_str()],
        vec!["encrypt", "--dry-run", "--upstream-dsn", dsn.as_str()],
    ] {
        let output = std::process::Command::new(common::pgcloak_bin())
            .args(&args)
            .arg("--config")
            .arg(&config)
            .envs(env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("public.users"), "{args:?}: {stdout}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = text();
    for secret in ["e2e@example.com", "Ana", "app-pw", "auth-pw"] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
}

/// Percent-encoding for a URL's user-info part.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
