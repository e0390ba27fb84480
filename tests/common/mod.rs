//! Shared by the integration tests: a throwaway Postgres with pgcloak in front of it, and
//! clients for both.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod certs;
pub mod skip;
pub mod tls;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use std::sync::Arc;

use pgcloak::cloak::Cloak;
use pgcloak::config::ProxySettings;
use pgcloak::crypto::MasterKey;
use pgcloak::pgtemp::{PgTemp, PgTempBuilder};
use pgcloak::policy::Policy;
use pgcloak::proxy::{Proxy, ProxyHandle};
use tokio_postgres::{Client, NoTls};

pub const PASSWORD: &str = "s3cret-pw";

/// Settings for a proxy on a free loopback port in front of `pg`.
pub fn settings_for(pg: &PgTemp) -> ProxySettings {
    ProxySettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_host: pg.host().to_owned(),
        upstream_port: pg.port(),
        connect_timeout: Duration::from_secs(5),
        max_connections: 200,
        shutdown_grace: Duration::from_secs(5),
        max_message_bytes: 64 * 1024 * 1024,
        session_threads: None,
        client_tls: None,
        upstream_tls: None,
        auth: None,
    }
}

/// A throwaway Postgres and a pgcloak in front of it.
pub struct Stack {
    pub pg: PgTemp,
    pub proxy: ProxyHandle,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(PgTemp::builder(), |_| {}).await
    }

    pub async fn start_with(
        builder: PgTempBuilder,
        tweak: impl FnOnce(&mut ProxySettings),
    ) -> Stack {
        Stack::start_full(builder, tweak, None).await
    }

    /// A stack whose proxy encrypts the columns of `policy_yaml` (the `tables` section)
    /// with a fresh random master key.
    pub async fn start_cloaked(policy_yaml: &str) -> Stack {
        let policy = Policy::from_yaml(&serde_yaml::from_str(policy_yaml).unwrap()).unwrap();
        let cloak = Arc::new(Cloak::with_key(policy, &MasterKey::generate()));
        Stack::start_full(PgTemp::builder(), |_| {}, Some(cloak)).await
    }

    pub async fn start_full(
        builder: PgTempBuilder,
        tweak: impl FnOnce(&mut ProxySettings),
        cloak: Option<Arc<Cloak>>,
    ) -> Stack {
        let pg = builder
            .superuser_password(PASSWORD)
            .start()
            .expect("start postgres");
        let mut settings = settings_for(&pg);
        tweak(&mut settings);
        let mut proxy = Proxy::bind(settings).await.unwrap();
        if let Some(cloak) = cloak {
            proxy = proxy.with_cloak(cloak);
        }
        let proxy = proxy.spawn().unwrap();
        Stack { pg, proxy }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// A libpq URL through the proxy.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgresql://{user}:{password}@{}/{db}", self.addr())
    }

    /// The superuser's URL through the proxy.
    pub fn proxy_url(&self) -> String {
        self.url("postgres", PASSWORD, "postgres")
    }

    /// A tokio-postgres client through the proxy, as the superuser.
    pub async fn connect(&self) -> Client {
        connect(&self.proxy_url()).await
    }

    /// A tokio-postgres client straight to Postgres, bypassing the proxy.
    pub async fn connect_direct(&self) -> Client {
        connect(&self.pg.url("postgres")).await
    }

    /// Runs psql through the proxy with the given arguments.
    pub fn psql(&self, args: &[&str]) -> Output {
        psql(&self.proxy_url(), args)
    }
}

pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

pub async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// psql with `-X` (no ~/.psqlrc) and `-v ON_ERROR_STOP=1`, never prompting for a password.
pub fn psql(url: &str, args: &[&str]) -> Output {
    std::process::Command::new("psql")
        .arg(url)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-w"])
        .args(args)
        .output()
        .expect("run psql (apt-get install postgresql-client)")
}

pub fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `check` every 100 ms for up to `limit`; true once it holds. Used to wait for
/// asynchronous server-side effects, never to assert on timing.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pgcloak binary built for these tests.
pub fn pgcloak_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgcloak"))
}

/// `pgcloak serve --config config` as a child process with only `env` setting the log
/// (RUST_LOG and PGCLOAK_LOG_FORMAT are cleared first), stderr to `log`; returns once it
/// accepts clients on `port`, with the URL to reach it.
pub async fn serve_process(
    config: &Path,
    port: u16,
    log: &Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let child = spawn_serve(config, log, env);
    let url = format!("postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres");
    let started = eventually(Duration::from_secs(20), || async {
        try_connect(&url).await.is_ok()
    })
    .await;
    assert!(started, "pgcloak did not start");
    (child, url)
}

/// `pgcloak serve --config config` as a child process, as [`serve_process`] starts it,
/// without waiting for it.
pub fn spawn_serve(config: &Path, log: &Path, env: &[(&str, &str)]) -> std::process::Child {
    std::process::Command::new(pgcloak_bin())
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("PGCLOAK_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Runs tests/sidecar/jwcrypto_party.py (an independent JOSE implementation) against the
/// sidecar at `url` with the key files in `dir` (and `ca` to verify an https:// URL); its
/// report `{"ids": [...], "records": [...]}`. None when setup.sh has not installed Python's
/// clients (the test skips: see [`skip`]).
pub async fn jwcrypto_party(url: &str, dir: &Path, ca: Option<&Path>) -> Option<serde_json::Value> {
    let python = client_program(".venv/bin/python", ".venv/bin/python")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sidecar/jwcrypto_party.py");
    let child = tokio::process::Command::new(&python)
        .arg(script)
        .arg(url)
        .arg(dir)
        .args(ca)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("jwcrypto_party.py took over 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.lines().any(|l| l == "jwcrypto OK"),
        "jwcrypto_party.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    Some(serde_json::from_str(stdout.lines().next().unwrap()).unwrap())
}

/// The tables the sidecar tests write: `users` (PII email/first_name/last_name), a
/// composite-key `memberships` (PII role) and a plain `orders`.
pub const SIDECAR_SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, first_name text, last_name text,
                    plan text, age int, internal_note text);
CREATE TABLE memberships (org text, member int, role text, PRIMARY KEY (org, member));
CREATE TABLE orders (id bigserial PRIMARY KEY, item text, qty int);
";

pub const SIDECAR_POLICY: &str = "
users:
  email: deterministic
  first_name: randomized
  last_name: randomized
memberships:
  role: randomized
";

/// partner-a (RSA) writes users and memberships; partner-b (EC P-256) writes orders and
/// users.email; partner-c (Ed25519 signatures, X25519 for responses) writes orders;
/// partner-d (partner-a's key) writes users.email and must send `jti` and `exp`.
const SIDECAR_PARTIES: &str = "
  parties:
    partner-a:
      public_key_file: partner-a.pub.pem
      tables:
        users: [email, first_name, last_name, age]
        public.memberships: [org, member, role]
    partner-b:
      public_key_file: partner-b.pub.pem
      tables:
        orders: [item, qty]
        users: [email]
    partner-c:
      public_key_file: partner-c.pub.pem
      encryption_key_file: partner-c-x25519.pub.pem
      tables:
        orders: [item, qty]
    partner-d:
      public_key_file: partner-a.pub.pem
      require_jti: true
      tables:
        users: [email]
";

const SIDECAR_PASSWORD_ENV: &str = "PGCLOAK_TEST_SIDECAR_PASSWORD";

/// Key types the tests generate.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    Rsa,
    Ec,
    Ed25519,
    X25519,
}

/// Writes DIR/NAME.pem (PKCS#8) and DIR/NAME.pub.pem (SPKI).
pub fn write_key_pair(dir: &Path, name: &str, kind: KeyKind) {
    use openssl::pkey::PKey;
    let key = match kind {
        KeyKind::Rsa => PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap(),
        KeyKind::Ec => {
            let group =
                openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
        }
        KeyKind::Ed25519 => PKey::generate_ed25519().unwrap(),
        KeyKind::X25519 => PKey::generate_x25519().unwrap(),
    };
    let private = key.private_key_to_pem_pkcs8().unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), private).unwrap();
    let public = key.public_key_to_pem().unwrap();
    std::fs::write(dir.join(format!("{name}.pub.pem")), public).unwrap();
}

/// A throwaway Postgres with [`SIDECAR_SCHEMA`], the proxy and the JWE sidecar sharing one
/// cloak ([`SIDECAR_POLICY`]), and the key files of the server and the three parties.
pub struct SidecarStack {
    pub stack: Stack,
    pub sidecar: pgcloak::sidecar::SidecarHandle,
    pub cloak: Arc<Cloak>,
    pub dir: std::path::PathBuf,
    pub http: reqwest::Client,
}

impl SidecarStack {
    /// `server_key`: the type of the sidecar's own key (RSA or EC).
    pub async fn start(server_key: KeyKind) -> SidecarStack {
        let dir = fresh_dir("sidecar");
        write_key_pair(&dir, "sidecar", server_key);
        write_key_pair(&dir, "partner-a", KeyKind::Rsa);
        write_key_pair(&dir, "partner-b", KeyKind::Ec);
        write_key_pair(&dir, "partner-c", KeyKind::Ed25519);
        write_key_pair(&dir, "partner-c-x25519", KeyKind::X25519);
        write_key_pair(&dir, "intruder", KeyKind::Rsa);

        let policy = Policy::from_yaml(&serde_yaml::from_str(SIDECAR_POLICY).unwrap()).unwrap();
        let cloak = Arc::new(Cloak::with_key(policy, &MasterKey::generate()));
        let stack = Stack::start_full(PgTemp::builder(), |_| {}, Some(cloak.clone())).await;
        stack
            .connect_direct()
            .await
            .batch_execute(SIDECAR_SCHEMA)
            .await
            .unwrap();

        // SAFETY of set_var: every test sets the same value.
        std::env::set_var(SIDECAR_PASSWORD_ENV, PASSWORD);
        let sidecar = spawn_sidecar(
            &dir,
            &stack.pg,
            SIDECAR_PASSWORD_ENV,
            SIDECAR_PARTIES,
            cloak.clone(),
        )
        .await;
        SidecarStack {
            stack,
            sidecar,
            cloak,
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sidecar.addr())
    }

    /// The bytes of a key file (`partner-a.pem`, `sidecar.pub.pem`, ...).
    pub fn key(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).unwrap()
    }

    /// Rows in `table`, counted directly in Postgres.
    pub async fn count(&self, table: &str) -> i64 {
        let client = self.stack.connect_direct().await;
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap();
        row.get(0)
    }
}

impl Drop for SidecarStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The client program (`program` under tests/clients when it contains a slash, else looked
/// up on PATH), or None when setup.sh has not installed it and the test should skip (see
/// [`skip`]). `installed` is the path under tests/clients that setup.sh creates for this
/// client.
pub fn client_program(program: &str, installed: &str) -> Option<PathBuf> {
    let dir = clients_dir();
    if !dir.join(installed).exists() {
        let what = format!("tests/clients/{installed}");
        skip::missing_client(&what, "run tests/clients/setup.sh");
        return None;
    }
    Some(if program.contains('/') {
        dir.join(program)
    } else {
        PathBuf::from(program)
    })
}

/// PgJDBC's jar (Debian's libpostgresql-jdbc-java, which .ci/run installs) when it and a
/// `java` are installed; otherwise None and the JDBC part of a test is skipped (see
/// [`skip`]).
pub fn jdbc_classpath() -> Option<&'static str> {
    const JAR: &str = "/usr/share/java/postgresql.jar";
    let java = std::process::Command::new("java").arg("-version").output();
    if Path::new(JAR).exists() && java.is_ok_and(|o| o.status.success()) {
        return Some(JAR);
    }
    skip::missing_client(
        &format!("{JAR} or java"),
        "apt-get install libpostgresql-jdbc-java default-jdk-headless",
    );
    None
}

pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// A client script that has not finished by then has hung (they take a few seconds).
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `program args... URL extra...` in tests/clients against the stack's proxy, asserts
/// that it exits 0 within [`SCRIPT_TIMEOUT`] and prints `ok_line`, and returns its stdout.
pub async fn run_client_script(
    stack: &Stack,
    program: &std::ffi::OsStr,
    args: &[&str],
    extra: &[&str],
    ok_line: &str,
) -> String {
    let child = tokio::process::Command::new(program)
        .args(args)
        .arg(stack.proxy_url())
        .args(extra)
        .current_dir(clients_dir())
        .kill_on_drop(true)
        .output();
    let script = args.last().copied().unwrap_or_default();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{script} stderr:\n{stderr}");
    assert!(
        output.status.success() && stdout.lines().any(|line| line == ok_line),
        "{script} failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

/// A new empty directory under the system's temporary one, unique to this process and call
/// (`pgcloak-<what>-<pid>-<n>`).
pub fn fresh_dir(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pgcloak-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Any value, as the raw bytes of its text or binary format: read from any column, and sent
/// as any parameter type.
#[derive(Debug, Clone, PartialEq)]
pub struct Raw(pub Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Raw, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

impl tokio_postgres::types::ToSql for Raw {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The JWE sidecar on a free port in front of `pg`, with the config it reads from `dir`
/// (`sidecar.pem` there, the database password in `password_env`, the `parties` section
/// as YAML) and `cloak`'s keys.
pub async fn spawn_sidecar(
    dir: &Path,
    pg: &PgTemp,
    password_env: &str,
    parties: &str,
    cloak: Arc<Cloak>,
) -> pgcloak::sidecar::SidecarHandle {
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nupstream:\n  host: {}\n  port: {}\nsidecar:\n  listen: \"127.0.0.1:0\"\n  \
         database: postgres\n  user: postgres\n  password_env: {password_env}\n  \
         private_key_file: sidecar.pem\n{parties}",
        pg.host(),
        pg.port()
    );
    let path = dir.join("pgcloak.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let config = pgcloak::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let settings = config
        .sidecar(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap();
    pgcloak::sidecar::Sidecar::bind(settings, cloak)
        .await
        .unwrap()
        .spawn()
        .unwrap()
}
