//! `pgcloak encrypt`, `rotate` and `decrypt`: converting the stored values of PII columns in
//! place, online, against Postgres directly.
//!
//! Each table is walked in batches by its primary key (by `ctid` when it has none): a batch
//! reads the next rows that still need work (the data says what is left, so a run that was
//! stopped resumes by starting again, and a second run finds nothing to do), converts their
//! values here, and writes them back in one short transaction whose UPDATE matches each row
//! by its key *and* the values read, so a row the application changed meanwhile (through
//! pgcloak, which encrypts) is left as the application wrote it. Only the batch's rows are
//! locked, only while its UPDATE runs.
//!
//! - encrypt: plaintext → an envelope under the current key.
//! - rotate: an envelope under another key, or in the other mode, → one under the current
//!   key in the configured mode.
//! - decrypt: an envelope → its plaintext (the way out of pgcloak).

mod progress;
mod sql;

use std::time::{Duration, Instant};

use pgcloak::crypto::Keyring;
use pgcloak::policy::{ColumnId, Policy};
use tokio_postgres::Client;

use sql::{ident, Keys};

/// What a run does to each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Encrypt,
    Rotate,
    Decrypt,
}

impl Direction {
    fn verb(self) -> &'static str {
        match self {
            Direction::Encrypt => "encrypt",
            Direction::Rotate => "rotate",
            Direction::Decrypt => "decrypt",
        }
    }
}

/// How a run goes.
pub struct Options {
    pub direction: Direction,
    /// `schema.table` or `table` (public); None: every table of the policy.
    pub table: Option<String>,
    /// Only these columns of the table; None: all its PII columns.
    pub columns: Option<Vec<String>>,
    pub batch_size: usize,
    /// Count what would change, change nothing.
    pub dry_run: bool,
}

/// What a run did to one table.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rows rewritten.
    pub rows: u64,
    /// Values converted, per column.
    pub values: Vec<(String, u64)>,
    /// Rows the application changed between read and write (left as it wrote them).
    pub skipped: u64,
    /// Values that could not be converted (not valid envelopes of their column, or not
    /// UTF-8): left as they are, counted per column.
    pub failed: Vec<(String, u64)>,
}

/// The tables and columns a run converts, from the policy and the options.
pub fn plan(
    policy: &Policy,
    options: &Options,
) -> Result<Vec<(String, String, Vec<ColumnId>)>, String> {
    let mut tables: Vec<(String, String, Vec<ColumnId>)> = Vec::new();
    for (id, _) in policy.columns() {
        match tables
            .iter_mut()
            .find(|(s, t, _)| *s == id.schema && *t == id.table)
        {
            Some((_, _, columns)) => columns.push(id),
            None => tables.push((id.schema.clone(), id.table.clone(), vec![id])),
        }
    }
    if let Some(wanted) = &options.table {
        let (schema, table) = match wanted.split_once('.') {
            Some((s, t)) => (s.to_owned(), t.to_owned()),
            None => ("public".to_owned(), wanted.clone()),
        };
        tables.retain(|(s, t, _)| *s == schema && *t == table);
        if tables.is_empty() {
            return Err(format!(
                "--table {wanted}: the policy names no PII columns of {schema}.{table}"
            ));
        }
    }
    if let Some(wanted) = &options.columns {
        let Some((schema, table, columns)) = tables.first_mut().filter(|_| options.table.is_some())
        else {
            return Err("--columns needs --table".into());
        };
        for name in wanted {
            if !columns.iter().any(|c| &c.column == name) {
                return Err(format!(
                    "--columns: {name} is not a PII column of {schema}.{table} in the policy"
                ));
            }
        }
        columns.retain(|c| wanted.contains(&c.column));
    }
    Ok(tables)
}

/// Converts one table.
/// `client` reads the batches and `writer` (another connection to the same database)
/// writes them, so that reading one overlaps writing the one before.
pub async fn run_table(
    client: &Client,
    writer: &Client,
    keyring: &Keyring,
    schema: &str,
    table: &str,
    columns: &[ColumnId],
    options: &Options,
) -> Result<Outcome, String> {
    let name = format!("{}.{}", ident(schema), ident(table));
    let shown = format!("{schema}.{table}");
    let failed = |e: tokio_postgres::Error| format!("{shown}: {}", crate::check::chain(&e));
    let keys = keys(client, schema, table).await.map_err(failed)?;
    let with_headers: Vec<(String, String)> = columns
        .iter()
        .map(|c| {
            let header = keyring.current_header(&c.to_string()).unwrap_or_default();
            (c.column.clone(), header)
        })
        .collect();
    let counts = client
        .query_one(&sql::count(&name, &with_headers, options.direction), &[])
        .await
        .map_err(failed)?;
    let pending: Vec<u64> = (1..=columns.len())
        .map(|i| counts.get::<_, i64>(i) as u64)
        .collect();
    let mut outcome = Outcome {
        values: columns.iter().map(|c| (c.column.clone(), 0)).collect(),
        failed: columns.iter().map(|c| (c.column.clone(), 0)).collect(),
        ..Outcome::default()
    };
    if options.dry_run {
        for ((_, n), pending) in outcome.values.iter_mut().zip(&pending) {
            *n = *pending;
        }
        return Ok(outcome);
    }
    let total = counts.get::<_, i64>(0) as u64;
    let mut bar = progress::Progress::new(&format!("{} {shown}", options.direction.verb()), total);
    // Prepared once: the texts are the same for every batch.
    let first = sql::select_batch(
        &name,
        &keys,
        &with_headers,
        options.direction,
        true,
        options.batch_size,
    );
    let next = sql::select_batch(
        &name,
        &keys,
        &with_headers,
        options.direction,
        false,
        options.batch_size,
    );
    let (first, next, update) = (
        client.prepare(&first).await.map_err(failed)?,
        client.prepare(&next).await.map_err(failed)?,
        writer
            .prepare(&sql::update(&name, &keys, &with_headers))
            .await
            .map_err(failed)?,
    );
    let k = keys.columns.len();
    let mut rows = client.query(&first, &[]).await.map_err(failed)?;
    while let Some(final_row) = rows.last() {
        let last: Vec<String> = (0..k).map(|i| final_row.get::<_, String>(i)).collect();
        // One array per key column, then (old, new) per PII column, for the changed rows.
        let mut arrays: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(rows.len()); k + 2 * columns.len()];
        for row in &rows {
            let mut converted = Vec::with_capacity(columns.len());
            let mut any = false;
            for (i, column) in columns.iter().enumerate() {
                let old: Option<String> = row.get(k + i);
                let new = match &old {
                    Some(value) => match convert(keyring, column, value, options.direction) {
                        Ok(Some(new)) => {
                            outcome.values[i].1 += 1;
                            any = true;
                            Some(new)
                        }
                        Ok(None) => old.clone(),
                        Err(()) => {
                            outcome.failed[i].1 += 1;
                            old.clone()
                        }
                    },
                    None => None,
                };
                converted.push((old, new));
            }
            if !any {
                continue;
            }
            for (i, array) in arrays.iter_mut().take(k).enumerate() {
                array.push(Some(row.get::<_, String>(i)));
            }
            for (i, (old, new)) in converted.into_iter().enumerate() {
                arrays[k + 2 * i].push(old);
                arrays[k + 2 * i + 1].push(new);
            }
        }
        let changed = arrays.first().map_or(0, Vec::len) as u64;
        bar.advance(rows.len() as u64);
        // The next batch (rows after this one's keys) is read while this one is written, on
        // the other connection.
        let after: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            last.iter().map(|k| k as _).collect();
        let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            arrays.iter().map(|a| a as _).collect();
        let write = async {
            match changed {
                0 => Ok(0),
                _ => writer.execute(&update, &values).await,
            }
        };
        let (read, written) = tokio::join!(client.query(&next, &after), write);
        let written = written.map_err(failed)?;
        outcome.rows += written;
        outcome.skipped += changed - written;
        rows = read.map_err(failed)?;
    }
    bar.finish();
    Ok(outcome)
}

/// One value converted, Ok(None) when it needs nothing, Err when it cannot be (left as is).
fn convert(
    keyring: &Keyring,
    column: &ColumnId,
    value: &str,
    direction: Direction,
) -> Result<Option<String>, ()> {
    let name = column.to_string();
    let envelope = pgcloak::crypto::is_envelope(value.as_bytes());
    match direction {
        Direction::Encrypt if envelope => Ok(None),
        Direction::Encrypt => keyring
            .encrypt(&name, value.as_bytes())
            .map(Some)
            .map_err(drop),
        Direction::Rotate if !envelope || keyring.is_current(value.as_bytes(), &name) => Ok(None),
        Direction::Rotate => {
            let plain = keyring
                .decrypt(value.as_bytes(), Some(&name))
                .map_err(drop)?;
            keyring.encrypt(&name, &plain).map(Some).map_err(drop)
        }
        Direction::Decrypt if !envelope => Ok(None),
        Direction::Decrypt => {
            let plain = keyring
                .decrypt(value.as_bytes(), Some(&name))
                .map_err(drop)?;
            String::from_utf8(plain.to_vec()).map(Some).map_err(drop)
        }
    }
}

/// Per column, the values that are still plaintext.
pub async fn plaintext_left(
    client: &Client,
    schema: &str,
    table: &str,
    columns: &[ColumnId],
) -> Result<Vec<(ColumnId, u64)>, tokio_postgres::Error> {
    let name = format!("{}.{}", ident(schema), ident(table));
    let pairs: Vec<(String, String)> = columns
        .iter()
        .map(|c| (c.column.clone(), String::new()))
        .collect();
    let row = client
        .query_one(&sql::count(&name, &pairs, Direction::Encrypt), &[])
        .await?;
    Ok(columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), row.get::<_, i64>(i + 1) as u64))
        .collect())
}

/// The primary key columns of a table with their types; `ctid` when it has none.
async fn keys(client: &Client, schema: &str, table: &str) -> Result<Keys, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indisprimary AND n.nspname = $1 AND c.relname = $2
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&schema, &table],
        )
        .await?;
    let columns: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(Keys {
        columns: match columns.is_empty() {
            true => vec![("ctid".into(), "tid".into())],
            false => columns,
        },
    })
}

/// The summary line of one table.
pub fn summary(
    shown: &str,
    outcome: &Outcome,
    direction: Direction,
    dry_run: bool,
    took: Duration,
) -> String {
    let per_column: Vec<String> = outcome
        .values
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    if dry_run {
        return format!(
            "{shown}: would {} {} value(s) ({})",
            direction.verb(),
            outcome.values.iter().map(|(_, n)| n).sum::<u64>(),
            per_column.join(", ")
        );
    }
    let rate = outcome.rows as f64 / took.as_secs_f64().max(0.001);
    let mut line = format!(
        "{shown}: {} row(s) rewritten in {:.1} s ({rate:.0} rows/s); values: {}",
        outcome.rows,
        took.as_secs_f64(),
        per_column.join(", ")
    );
    if outcome.skipped > 0 {
        line.push_str(&format!(
            "; {} row(s) changed by the application meanwhile, left as it wrote them",
            outcome.skipped
        ));
    }
    let failed: Vec<String> = outcome
        .failed
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    if !failed.is_empty() {
        line.push_str(&format!(
            "; NOT converted (not a valid value of the column, left as is): {}",
            failed.join(", ")
        ));
    }
    line
}

/// Times a future.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}
