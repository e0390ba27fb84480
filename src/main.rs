//! The `pgcloak` command: parse the CLI, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pgcloak::cloak::Cloak;
use pgcloak::config::Config;
use pgcloak::crypto::MasterKey;
use pgcloak::policy::Policy;
use pgcloak::proxy::Proxy;
use pgcloak::sidecar::Sidecar;
use tokio_util::sync::CancellationToken;

mod check;
mod convert;
mod convert_cli;
mod demo;
mod jwe_cli;
mod keygen;

#[derive(Parser)]
#[command(
    name = "pgcloak",
    version,
    about = "A transparent PostgreSQL proxy that encrypts PII columns"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (and the JWE sidecar when the config has a `sidecar` section).
    Serve {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file; exits non-zero with a message naming the bad key.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Also check the PII columns in this database (postgresql://user:pw@host:port/db):
        /// they must exist, have a type that can hold ciphertext, and hold only envelopes
        /// of their column (every row is read, unless --sample is given).
        #[arg(long, value_name = "DSN")]
        upstream_dsn: Option<String>,
        /// With --upstream-dsn: read a random sample of at most N values per PII column
        /// instead of every row.
        #[arg(long, value_name = "N", requires = "upstream_dsn",
              value_parser = clap::value_parser!(u64).range(1..))]
        sample: Option<u64>,
    },
    /// Encrypt the plaintext already in PII columns, in place and online (in batches).
    Encrypt(convert_cli::ConvertArgs),
    /// Re-encrypt values not under `keys.current` or not in their column's mode.
    Rotate(convert_cli::ConvertArgs),
    /// Turn the envelopes of PII columns back into plaintext (leaving pgcloak).
    Decrypt(convert_cli::ConvertArgs),
    /// Print a fresh random master key (base64 of 32 bytes) for `keys.master_key_env`, or
    /// with --wrap-pkcs11 write it wrapped by an HSM key (`keys.master_keys.<name>.wrapped_file`).
    Keygen(keygen::KeygenArgs),
    /// Key pairs, encryption and tokens for the JWE sidecar (the party's side).
    Jwe {
        #[command(subcommand)]
        command: jwe_cli::JweCommand,
    },
    /// Start a throwaway local Postgres and pgcloak in front of it, until Ctrl-C.
    Demo {
        /// The demo's config (default: config/demo.yaml, built into the binary); its
        /// upstream is replaced by the throwaway Postgres.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The port pgcloak listens on (default: the config's `listen`, 6432); 0 picks a
        /// free one.
        #[arg(long, short)]
        port: Option<u16>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgcloak::logging::init();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Encrypt(args) => convert_cli::run(convert::Direction::Encrypt, args),
        Command::Rotate(args) => convert_cli::run(convert::Direction::Rotate, args),
        Command::Decrypt(args) => convert_cli::run(convert::Direction::Decrypt, args),
        Command::Check {
            config,
            upstream_dsn,
            sample,
        } => check(config, upstream_dsn, sample),
        Command::Keygen(args) => keygen::run(args),
        Command::Jwe { command } => jwe_cli::run(command),
        Command::Demo { config, port } => demo::run(config, port),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pgcloak: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: PathBuf, upstream_dsn: Option<String>, sample: Option<u64>) -> Result<(), String> {
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    let cloak = Cloak::from_config(&config, &path).map_err(|e| e.to_string())?;
    let settings = config.settings(&path).map_err(|e| e.to_string())?;
    config
        .sidecar_with(&path, &settings)
        .map_err(|e| e.to_string())?;
    if let Some(tls) = &settings.client_tls {
        println!(
            "tls: certificate of {} valid until {}, mode {:?}",
            tls.summary.subject, tls.summary.not_after, tls.mode
        );
    }
    if let Some(warning) = tls_warning(&settings) {
        println!("warning: {warning}");
    }
    if let Some(dsn) = upstream_dsn {
        let keyring = cloak.as_deref().map(Cloak::keyring);
        let tls = settings.upstream_tls.as_deref();
        check::upstream(&config, &path, keyring, &dsn, sample, tls)?;
    }
    println!("{}: OK", path.display());
    Ok(())
}

/// SCRAM across two TLS sessions: channel binding ties the client's exchange to its TLS
/// session with pgcloak, so Postgres (on its own TLS session) refuses it.
fn tls_warning(settings: &pgcloak::config::ProxySettings) -> Option<&'static str> {
    let upstream_tls = settings
        .upstream_tls
        .as_ref()
        .is_some_and(|t| t.mode != pgcloak::tls::UpstreamTlsMode::Disable);
    (settings.client_tls.is_some() && upstream_tls && settings.auth.is_none()).then_some(
        "TLS on both legs without an `auth` section: SCRAM logins are relayed, and libpq clients (psql, psycopg, default channel_binding=prefer) fail channel binding against Postgres; configure `auth` (pgcloak as the SCRAM endpoint), or connect clients with channel_binding=disable",
    )
}

fn serve(path: PathBuf) -> Result<(), String> {
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    let settings = config.settings(&path).map_err(|e| e.to_string())?;
    if let Some(warning) = tls_warning(&settings) {
        tracing::warn!("{warning}");
    }
    let cloak = Cloak::from_config(&config, &path).map_err(|e| e.to_string())?;
    let sidecar = config
        .sidecar_with(&path, &settings)
        .map_err(|e| e.to_string())?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start runtime: {e}"))?;
    runtime.block_on(async {
        let mut proxy = Proxy::bind(settings.clone())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
        if let Some(cloak) = &cloak {
            proxy = proxy.with_cloak(cloak.clone());
        }
        let sidecar = match sidecar {
            Some(sidecar_settings) => {
                // Without a `tables` section every column is plain: the sidecar still needs a
                // (column-less) keyring.
                let cloak = cloak.unwrap_or_else(|| {
                    Arc::new(Cloak::with_key(Policy::default(), &MasterKey::generate()))
                });
                Some(Sidecar::bind(sidecar_settings, cloak).await?)
            }
            None => None,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match sidecar {
            Some(sidecar) => {
                tokio::join!(proxy.run(shutdown.clone()), sidecar.run(shutdown));
            }
            None => proxy.run(shutdown).await,
        }
        Ok(())
    })
}

/// Cancels `token` on the first SIGTERM or SIGINT. The handlers are installed when this is
/// called (inside a runtime), not when the future is first polled, so a signal sent right
/// after, e.g. once the demo has printed its banner, is not lost.
pub(crate) fn cancel_on_signal(token: CancellationToken) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = signals else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        token.cancel();
    }
}
