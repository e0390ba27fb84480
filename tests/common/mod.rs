//! Shared by the integration tests: a throwaway Postgres with pgcloak in front of it, and
//! clients for both.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::path::Path;
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

    async fn start_full(
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
