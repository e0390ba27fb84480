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
//!
//! A column declared with a `type` is converted in its canonical form (see [`types`]).

mod progress;
mod sql;
pub mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgcloak::crypto::Keyring;
use pgcloak::pgtype::{PgType, Settings};
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
    pub fn verb(self) -> &'static str {
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
    /// Make typed PII columns that are not text yet text first (`--alter-types`).
    pub alter_types: bool,
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

/// The PII columns of one table to convert, with their declared types.
pub struct TableColumns<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub columns: &'a [ColumnId],
    pub types: Vec<PgType>,
    /// Columns that are not text in Postgres yet (a dry run of `--alter-types`): every
    /// value is plaintext.
    pub not_text: Vec<ColumnId>,
}

/// Converts one table.
/// `client` reads the batches and each of `writers` (other connections to the same database)
/// writes one at a time.
pub async fn run_table(
    client: &Client,
    writers: &[Arc<Client>],
    keyring: &Keyring,
    work: &TableColumns<'_>,
    options: &Options,
) -> Result<Outcome, String> {
    let (schema, table, columns) = (work.schema, work.table, work.columns);
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
    let pending: Vec<String> = (with_headers.iter().zip(columns))
        .map(|((c, header), id)| match work.not_text.contains(id) {
            true => format!("({} IS NOT NULL)", ident(c)),
            false => sql::needs(options.direction, c, header),
        })
        .collect();
    let counts = client
        .query_one(&sql::count(&name, &pending), &[])
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
    let (first, next) = (
        client.prepare(&first).await.map_err(failed)?,
        client.prepare(&next).await.map_err(failed)?,
    );
    let update_sql = sql::update(&name, &keys, &with_headers);
    let mut updates = Vec::with_capacity(writers.len());
    for writer in writers {
        updates.push(writer.prepare(&update_sql).await.map_err(failed)?);
    }
    // Batches are read (keyset, in key order) and converted here, and written by one task
    // per writer connection, so that each batch's UPDATE overlaps reading and converting the
    // next ones, and several UPDATEs (disjoint key ranges) run at once.
    let (queue, batches) = tokio::sync::mpsc::channel::<Batch>(writers.len());
    let batches = Arc::new(tokio::sync::Mutex::new(batches));
    let tasks: Vec<_> = writers
        .iter()
        .zip(updates)
        .map(|(writer, update)| {
            let (writer, batches) = (writer.clone(), batches.clone());
            tokio::spawn(async move { write_batches(&writer, &update, &batches).await })
        })
        .collect();
    drop(batches);
    let settings = Settings::default();
    let read = |rows: Vec<tokio_postgres::Row>| {
        let how = (keyring, &settings, options.direction);
        Batch::of(&rows, keys.columns.len(), columns, &work.types, how)
    };
    let reading = async {
        let mut batch = read(client.query(&first, &[]).await.map_err(failed)?);
        while batch.read > 0 {
            for (i, (values, failed)) in batch.values.iter().zip(&batch.failed).enumerate() {
                outcome.values[i].1 += values;
                outcome.failed[i].1 += failed;
            }
            bar.advance(batch.read);
            let last = batch.last.clone();
            if batch.changed > 0 && queue.send(batch).await.is_err() {
                break; // a writer failed: its error is reported below
            }
            let after: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                last.iter().map(|k| k as _).collect();
            batch = read(client.query(&next, &after).await.map_err(failed)?);
        }
        drop(queue);
        Ok::<_, String>(())
    };
    let read_result = reading.await;
    for task in tasks {
        let (rows, skipped) = task
            .await
            .map_err(|e| format!("{shown}: a writer stopped: {e}"))?
            .map_err(failed)?;
        outcome.rows += rows;
        outcome.skipped += skipped;
    }
    read_result?;
    bar.finish();
    Ok(outcome)
}

/// Writes batches from the queue until it is closed: (rows written, rows left alone because
/// the application changed them since they were read).
async fn write_batches(
    writer: &Client,
    update: &tokio_postgres::Statement,
    batches: &tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Batch>>,
) -> Result<(u64, u64), tokio_postgres::Error> {
    let (mut rows, mut skipped) = (0, 0);
    loop {
        let Some(batch) = batches.lock().await.recv().await else {
            return Ok((rows, skipped));
        };
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = batch
            .arrays
            .iter()
            .map(|a| a as _)
            .chain(batch.first.iter().chain(&batch.last).map(|k| k as _))
            .collect();
        let written = match writer.execute(update, &params).await {
            Ok(n) => n,
            Err(e) => {
                batches.lock().await.close(); // the reader stops at its next batch
                return Err(e);
            }
        };
        rows += written;
        skipped += batch.changed - written;
    }
}

/// One batch as read and converted, ready to be written.
struct Batch {
    /// Rows read.
    read: u64,
    /// Rows with at least one converted value (the length of each array).
    changed: u64,
    /// One array per key column, then (old, new) per PII column, for the changed rows.
    arrays: Vec<Vec<Option<String>>>,
    /// The first and last keys read, as text (the UPDATE's range, the next batch's start).
    first: Vec<String>,
    last: Vec<String>,
    /// Values converted and values that could not be, per column.
    values: Vec<u64>,
    failed: Vec<u64>,
}

impl Batch {
    /// `rows`: `k` key columns as text, then one column per PII column (of `types`).
    fn of(
        rows: &[tokio_postgres::Row],
        k: usize,
        columns: &[ColumnId],
        types: &[PgType],
        (keyring, settings, direction): (&Keyring, &Settings, Direction),
    ) -> Batch {
        let key = |row: Option<&tokio_postgres::Row>| -> Vec<String> {
            row.map_or_else(Vec::new, |row| (0..k).map(|i| row.get(i)).collect())
        };
        let names: Vec<String> = columns.iter().map(ColumnId::to_string).collect();
        let mut batch = Batch {
            read: rows.len() as u64,
            changed: 0,
            arrays: vec![Vec::with_capacity(rows.len()); k + 2 * columns.len()],
            first: key(rows.first()),
            last: key(rows.last()),
            values: vec![0; columns.len()],
            failed: vec![0; columns.len()],
        };
        for row in rows {
            let mut converted = Vec::with_capacity(columns.len());
            for (i, (name, ty)) in names.iter().zip(types).enumerate() {
                let old: Option<String> = row.get(k + i);
                let convert = |v| types::convert(keyring, name, ty, settings, v, direction);
                let new = match old.as_deref().map(convert) {
                    Some(Ok(Some(new))) => {
                        batch.values[i] += 1;
                        Some(new)
                    }
                    Some(Err(())) => {
                        batch.failed[i] += 1;
                        None
                    }
                    Some(Ok(None)) | None => None,
                };
                converted.push((old, new));
            }
            if converted.iter().all(|(_, new)| new.is_none()) {
                continue;
            }
            batch.changed += 1;
            for (i, array) in batch.arrays.iter_mut().take(k).enumerate() {
                array.push(Some(row.get::<_, String>(i)));
            }
            for (i, (old, new)) in converted.into_iter().enumerate() {
                // A value that needs nothing (or cannot be converted) is written back as it is.
                let new = new.or_else(|| old.clone());
                batch.arrays[k + 2 * i].push(old);
                batch.arrays[k + 2 * i + 1].push(new);
            }
        }
        batch
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
    let pending: Vec<String> = columns
        .iter()
        .map(|c| sql::needs(Direction::Encrypt, &c.column, ""))
        .collect();
    let row = client.query_one(&sql::count(&name, &pending), &[]).await?;
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
