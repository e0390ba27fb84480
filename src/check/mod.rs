//! `pgcloak check --upstream-dsn DSN`: checks the configured PII columns against a live
//! database, in three parts:
//! - [`columns`]: every column exists and has a type that can hold a ciphertext envelope;
//! - [`derived`]: relations that reach PII columns outside the policy (views, partitions,
//!   inheritance children);
//! - [`values`]: the stored values of each column are its envelopes (all rows, or a random
//!   sample with `--sample N`), not plaintext or envelopes under a key pgcloak does not hold.
//!
//! Catalog queries and a streamed COPY fetch the facts; the rest is pure logic, unit-tested
//! without a server. Nothing printed ever quotes a stored value or the DSN's password.

mod columns;
mod derived;
mod values;

use std::path::Path;
use std::time::Duration;

use pgcloak::config::Config;
use pgcloak::crypto::{Keyring, Mode};
use pgcloak::policy::ColumnId;
use pgcloak::tls::UpstreamTls;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};

use columns::{check_column, CatalogRow, CATALOG_QUERY};
use derived::{check_derived, DerivedRow, DERIVED_QUERY};

/// Connects to `dsn`, prints a line per good column and fails with one line per problem.
/// `keyring`: the configured column keys (`None` when the policy names no columns).
/// `sample`: read at most this many values per column instead of all of them.
pub fn upstream(
    config: &Config,
    path: &Path,
    keyring: Option<&Keyring>,
    dsn: &str,
    sample: Option<u64>,
    tls: Option<&UpstreamTls>,
) -> Result<(), String> {
    let policy = config.policy(path).map_err(|e| e.to_string())?;
    let columns: Vec<(ColumnId, Mode)> = policy.columns().collect();
    let mut pg: tokio_postgres::Config = dsn
        .parse()
        .map_err(|e| format!("--upstream-dsn: {}", chain(&e)))?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(10));
    }
    let target = describe(&pg);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let problems = runtime.block_on(async {
        let client = (connect_direct(&pg, tls).await)
            .map_err(|e| format!("cannot connect to {target}: {}", chain(&e)))?;
        let (rows, derived) = catalog(&client, &columns)
            .await
            .map_err(|e| format!("cannot read the catalog of {target}: {}", chain(&e)))?;
        let derived: Vec<DerivedRow> = (derived.into_iter())
            .filter(|r| policy.table(Some(&r.schema), &r.relation).is_none())
            .collect();
        let mut problems = Vec::new();
        let mut present = Vec::new();
        for (id, mode) in &columns {
            let declared = policy.column_type(&id.to_string());
            match check_column(id, *mode, &declared, &rows) {
                Ok(line) => {
                    println!("{line}");
                    present.push(id);
                }
                Err(line) => problems.push(line),
            }
        }
        problems.extend(check_derived(&derived));
        // Values only of the columns that exist with a usable type.
        if let Some(keyring) = keyring {
            for id in present {
                let counted = values::count(&client, keyring, id, sample).await;
                let keys = keyring.key_names().len();
                let migrating = policy.is_migrating(&id.to_string());
                let reported =
                    counted.and_then(|counts| values::report(id, &counts, sample, keys, migrating));
                match reported {
                    Ok(line) => println!("{line}"),
                    Err(line) => problems.push(line),
                }
            }
        }
        Ok::<_, String>(problems)
    })?;
    match problems.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} problem(s) with the PII columns in {target}:\n  {}",
            problems.join("\n  ")
        )),
    }
}

/// The rows of [`CATALOG_QUERY`] and [`DERIVED_QUERY`] for the configured `columns`.
async fn catalog(
    client: &Client,
    columns: &[(ColumnId, Mode)],
) -> Result<(Vec<CatalogRow>, Vec<DerivedRow>), tokio_postgres::Error> {
    let lower = |f: fn(&ColumnId) -> &str| -> Vec<String> {
        columns.iter().map(|(id, _)| f(id).to_lowercase()).collect()
    };
    let (schemas, tables) = (lower(|id| &id.schema), lower(|id| &id.table));
    let ids: Vec<String> = columns.iter().map(|(id, _)| id.to_string()).collect();
    let rows = client.query(CATALOG_QUERY, &[&schemas, &tables]).await?;
    let derived = client.query(DERIVED_QUERY, &[&ids]).await?;
    let rows = (rows.iter())
        .map(|r| CatalogRow {
            schema: r.get(0),
            table: r.get(1),
            column: r.get::<_, Option<String>>(2).zip(r.get(3)),
            has_default: r.get::<_, Option<bool>>(4).unwrap_or(false),
        })
        .collect();
    let derived = (derived.iter())
        .map(|r| DerivedRow {
            schema: r.get(0),
            relation: r.get(1),
            pii_column: r.get(2),
            kind: r.get(3),
        })
        .collect();
    Ok((rows, derived))
}

/// Connects to Postgres directly (the `--upstream-dsn` of check, encrypt, rotate and
/// decrypt), over the config's `upstream.tls` when it has one (its mode, CA and server
/// name), so that a TLS-only database is reached as pgcloak reaches it.
pub(crate) async fn connect_direct(
    pg: &tokio_postgres::Config,
    tls: Option<&UpstreamTls>,
) -> Result<Client, tokio_postgres::Error> {
    let client = match tls {
        Some(tls) => {
            let mut pg = pg.clone();
            pg.ssl_mode(tls.ssl_mode());
            let (client, connection) = pg.connect(tls.clone()).await?;
            tokio::spawn(async move { drop(connection.await) });
            client
        }
        None => {
            let (client, connection) = pg.connect(NoTls).await?;
            tokio::spawn(async move { drop(connection.await) });
            client
        }
    };
    Ok(client)
}

/// `host:port` of the DSN's first host; never the password.
pub(crate) fn describe(pg: &tokio_postgres::Config) -> String {
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    match pg.get_hosts().first() {
        Some(Host::Tcp(name)) => format!("{name}:{port}"),
        Some(Host::Unix(dir)) => format!("{}:{port}", dir.display()),
        None => "the upstream (no host in --upstream-dsn)".into(),
    }
}

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let causes = std::iter::successors(Some(e), |e| e.source());
    causes.map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}
