//! `pgcloak demo`: a throwaway local Postgres with pgcloak in front of it, for trying the
//! proxy with psql in one command. Everything is removed on Ctrl-C.

use std::path::PathBuf;

use pgcloak::config::Config;
use pgcloak::pgtemp::PgTemp;
use pgcloak::proxy::Proxy;
use tokio_util::sync::CancellationToken;

const DEMO_PASSWORD: &str = "pgcloak";

pub fn run(config_path: PathBuf) -> Result<(), String> {
    let config = Config::load(&config_path).map_err(|e| e.to_string())?;
    let mut settings = config.settings(&config_path).map_err(|e| e.to_string())?;

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
        let proxy = Proxy::bind(settings.clone())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
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
