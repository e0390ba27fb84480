//! `pgcloak demo`: a throwaway local Postgres with pgcloak in front of it, for trying the
//! proxy with psql in one command. Everything is removed on Ctrl-C.

use std::path::PathBuf;

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

pub fn run(config_path: PathBuf) -> Result<(), String> {
    let config = Config::load(&config_path).map_err(|e| e.to_string())?;
    let mut settings = config.settings(&config_path).map_err(|e| e.to_string())?;
    let policy = config.policy(&config_path).map_err(|e| e.to_string())?;
    let cloak = Arc::new(Cloak::with_key(policy, &MasterKey::generate()));

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
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?
            .with_cloak(cloak);
        let addr = proxy.local_addr().map_err(|e| e.to_string())?;
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
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::cancel_on_signal(shutdown.clone()));
        proxy.run(shutdown).await;
        Ok(())
    });
    drop(runtime);
    drop(postgres);
    eprintln!("demo stopped; throwaway PostgreSQL removed");
    result
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
