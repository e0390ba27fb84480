//! `pgcloak demo`: a throwaway local Postgres with pgcloak in front of it, for trying the
//! proxy with psql in one command. Everything is removed on Ctrl-C (and what a killed demo
//! left behind, by the next start: see [`pgcloak::pgtemp`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use pgcloak::cloak::Cloak;
use pgcloak::config::Config;
use pgcloak::crypto::MasterKey;
use pgcloak::pgtemp::PgTemp;
use pgcloak::proxy::Proxy;
use tokio_util::sync::CancellationToken;

const DEMO_PASSWORD: &str = "pgcloak";
/// The table config/demo.yaml protects, created before the proxy starts.
const DEMO_SCHEMA: &str = "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, first_name text, last_name text, plan text)";

/// The default config, built in so that an installed `pgcloak demo` runs from any directory.
const BUILT_IN_CONFIG: &str = include_str!("../config/demo.yaml");

/// Runs the demo with `config_path` (None: [`BUILT_IN_CONFIG`]), listening on `port` when
/// given instead of the config's port.
pub fn run(config_path: Option<PathBuf>, port: Option<u16>) -> Result<(), String> {
    let (config, config_path) = match config_path {
        Some(path) => (Config::load(&path), path),
        None => {
            let path = PathBuf::from("config/demo.yaml (built in)");
            (Config::parse(BUILT_IN_CONFIG, &path), path)
        }
    };
    let config = config.map_err(|e| e.to_string())?;
    let mut settings = config.settings(&config_path).map_err(|e| e.to_string())?;
    if let Some(port) = port {
        settings.listen.set_port(port);
    }
    let policy = config.policy(&config_path).map_err(|e| e.to_string())?;
    let cloak = Arc::new(Cloak::with_key(policy, &MasterKey::generate()));
    // Checked before the throwaway Postgres takes seconds to start; the bind below reports
    // the same way should the port be taken in between.
    std::net::TcpListener::bind(settings.listen)
        .map_err(|e| cannot_listen(settings.listen, &e, &config_path))?;

    eprintln!("starting a throwaway PostgreSQL…");
    // Started on this thread, so the server also dies if pgcloak is killed.
    let postgres = PgTemp::builder()
        .superuser_password(DEMO_PASSWORD)
        .start()
        .map_err(|e| format!("cannot start the demo PostgreSQL: {e}"))?;
    settings.upstream_host = postgres.host().to_owned();
    settings.upstream_port = postgres.port();

    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start runtime: {e}"))?;
    let result = runtime.block_on(async {
        create_demo_schema(&postgres).await?;
        let proxy = Proxy::bind(settings.clone())
            .await
            .map_err(|e| cannot_listen(settings.listen, &e, &config_path))?
            .with_cloak(cloak);
        let addr = proxy.local_addr().map_err(|e| e.to_string())?;
        // Before the banner: a Ctrl-C right after it must stop the demo in order.
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::cancel_on_signal(shutdown.clone()));
        println!();
        println!("PostgreSQL (direct):  {}", postgres.url("postgres"));
        println!(
            "PostgreSQL data directory: {}",
            postgres.data_dir().display()
        );
        println!("pgcloak is listening: {addr}");
        println!();
        println!("Connect through pgcloak with:");
        println!(
            "  psql \"postgresql://{}:{DEMO_PASSWORD}@{addr}/postgres\"",
            postgres.superuser()
        );
        println!();
        println!("Try, through pgcloak:");
        println!("  INSERT INTO users (email, first_name, last_name, plan) VALUES ('ann@example.com', 'Ann', 'Lee', 'pro');");
        println!("  SELECT * FROM users WHERE email = 'ann@example.com';");
        println!("and the same SELECT directly against PostgreSQL to see what it stores.");
        println!();
        println!("Press Ctrl-C to stop; the demo database is deleted on exit.");
        proxy.run(shutdown).await;
        Ok(())
    });
    drop(runtime);
    drop(postgres);
    eprintln!("demo stopped; throwaway PostgreSQL removed");
    result
}

/// The error for a listen address the demo cannot bind, naming the port and the flag.
fn cannot_listen(addr: SocketAddr, error: &std::io::Error, config: &Path) -> String {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "cannot listen on {addr}: port {} is already in use (another pgcloak demo?); \
             choose another with `pgcloak demo --port N` (--port 0 picks a free one)",
            addr.port()
        )
    } else {
        format!(
            "cannot listen on {addr} (`listen` in {}, port from --port if given): {error}",
            config.display()
        )
    }
}

async fn create_demo_schema(postgres: &PgTemp) -> Result<(), String> {
    let (client, connection) =
        tokio_postgres::connect(&postgres.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to the demo PostgreSQL: {e}"))?;
    tokio::spawn(connection);
    client
        .batch_execute(DEMO_SCHEMA)
        .await
        .map_err(|e| format!("cannot create the demo table: {e}"))
}
