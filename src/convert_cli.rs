//! The command line of `pgcloak encrypt`, `rotate` and `decrypt` (see [`crate::convert`]).

use std::path::PathBuf;

use pgcloak::cloak::Cloak;
use pgcloak::config::Config;

use crate::convert::{self, Direction, Options};

/// `"name"`, quotes doubled.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The YAML config file (its policy and keys).
    #[arg(long, short)]
    config: PathBuf,
    /// The database, directly (not through pgcloak): postgresql://user:pw@host:port/db.
    #[arg(long, value_name = "DSN")]
    upstream_dsn: String,
    /// Only this table (`table` or `schema.table`); default: every table of the policy.
    #[arg(long)]
    table: Option<String>,
    /// Only these PII columns of --table (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "table")]
    columns: Option<Vec<String>>,
    /// Rows per batch (each batch is one short transaction).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_size: u64,
    /// Connections writing batches at once (each batch is still one short transaction). One
    /// leaves the application most of the database; more convert faster and take more of it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    jobs: u64,
    /// Count what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// encrypt: first make typed PII columns (`type: date`, ...) that are not text in
    /// Postgres yet text, one ALTER TABLE per table. It rewrites the table under an ACCESS
    /// EXCLUSIVE lock: the application's reads and writes of it wait until it is done.
    #[arg(long)]
    alter_types: bool,
}

pub fn run(direction: Direction, args: ConvertArgs) -> Result<(), String> {
    if direction == Direction::Decrypt && args.columns.is_none() {
        return Err(
            "decrypt needs --table and --columns: name the columns that leave pgcloak".into(),
        );
    }
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let settings = config.settings(&args.config).map_err(|e| e.to_string())?;
    let Some(cloak) = Cloak::from_config(&config, &args.config).map_err(|e| e.to_string())? else {
        return Err(format!(
            "{}: names no PII columns (no `tables`)",
            args.config.display()
        ));
    };
    let options = Options {
        direction,
        table: args.table,
        columns: args.columns,
        batch_size: args.batch_size as usize,
        dry_run: args.dry_run,
        alter_types: args.alter_types,
    };
    if options.alter_types && direction != Direction::Encrypt {
        return Err(format!(
            "--alter-types is for `pgcloak encrypt`, not `{}`",
            direction.verb()
        ));
    }
    let tables = convert::plan(cloak.policy(), &options)?;
    let pg: tokio_postgres::Config = args
        .upstream_dsn
        .parse()
        .map_err(|e| format!("--upstream-dsn: {}", crate::check::chain(&e)))?;
    let target = crate::check::describe(&pg);
    // Writers run on the workers while this thread reads and converts.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    runtime.block_on(async {
        let tls = settings.upstream_tls.as_deref();
        let connect = || async {
            (crate::check::connect_direct(&pg, tls).await)
                .map_err(|e| format!("cannot connect to {target}: {}", crate::check::chain(&e)))
        };
        let client = connect().await?;
        let mut writers = Vec::new();
        for _ in 0..if options.dry_run { 1 } else { args.jobs } {
            writers.push(std::sync::Arc::new(connect().await?));
        }
        // Every column's Postgres type first: a column that cannot be converted stops the
        // run before any table is touched.
        let mut alters = Vec::with_capacity(tables.len());
        let mut problems = Vec::new();
        for (schema, table, columns) in &tables {
            let stored = convert::types::stored_types(&client, schema, table, columns)
                .await
                .map_err(|e| format!("{schema}.{table}: {}", crate::check::chain(&e)))?;
            let policy = cloak.policy();
            match convert::types::to_alter(policy, columns, &stored, direction, options.alter_types) {
                Ok(alter) => alters.push(alter),
                Err(lines) => problems.extend(lines),
            }
        }
        if !problems.is_empty() {
            return Err(format!(
                "{} column(s) cannot be converted as they are:\n  {}",
                problems.len(),
                problems.join("\n  ")
            ));
        }
        let mut failures = 0;
        for ((schema, table, columns), alter) in tables.iter().zip(alters) {
            let shown = format!("{schema}.{table}");
            if !alter.is_empty() {
                let name = format!("{}.{}", ident(schema), ident(table));
                let sql = convert::types::alter_sql(&name, &alter);
                let lock = format!("rewrites {shown} under an ACCESS EXCLUSIVE lock: the application's reads and writes of it wait until it is done");
                if options.dry_run {
                    println!("{shown}: would run {sql} (this {lock})");
                } else {
                    println!("{shown}: {sql} (this {lock}) ...");
                    let (altered, took) = convert::timed(convert::types::alter(&client, &sql)).await;
                    altered.map_err(|e| format!("{shown}: {}", crate::check::chain(&e)))?;
                    println!("{shown}: column type(s) altered to text in {:.1} s", took.as_secs_f64());
                }
            }
            let work = convert::TableColumns {
                schema,
                table,
                columns,
                types: (columns.iter())
                    .map(|c| cloak.policy().column_type(&c.to_string()))
                    .collect(),
                not_text: if options.dry_run { alter } else { Vec::new() },
            };
            let (outcome, took) = convert::timed(convert::run_table(
                &client,
                &writers,
                cloak.keyring(),
                &work,
                &options,
            ))
            .await;
            let outcome = outcome?;
            failures += outcome.failed.iter().map(|(_, n)| n).sum::<u64>();
            println!(
                "{}",
                convert::summary(&shown, &outcome, direction, options.dry_run, took)
            );
            if direction == Direction::Rotate && !options.dry_run {
                for (column, n) in &outcome.failed {
                    let id = format!("{schema}.{table}.{column}");
                    if *n == 0 && cloak.policy().is_changing_mode(&id) {
                        println!("{id}: every value is in its new mode; remove `previous_mode` from its policy");
                    }
                }
            }
            if direction == Direction::Decrypt && !options.dry_run {
                for (column, ty) in columns.iter().zip(&work.types) {
                    if ty.kind() != pgcloak::pgtype::Kind::Text {
                        let (name, c, ty) = (format!("{}.{}", ident(schema), ident(table)), ident(&column.column), ty.name());
                        println!("{column}: its values are the canonical text of {ty}; once no envelope is left, give it its type back: ALTER TABLE {name} ALTER COLUMN {c} TYPE {ty} USING {c}::{ty}");
                    }
                }
            }
            if direction == Direction::Encrypt && !options.dry_run {
                let left = convert::plaintext_left(&client, schema, table, columns)
                    .await
                    .map_err(|e| format!("{shown}: {}", crate::check::chain(&e)))?;
                for (column, n) in left {
                    let migrating = cloak.policy().is_migrating(&column.to_string());
                    match (n, migrating) {
                        (0, true) => println!("{column}: no plaintext is left; remove `migrating: true` from its policy"),
                        (0, false) => {}
                        (n, _) => println!("{column}: {n} plaintext value(s) are still there (written directly meanwhile?); run `pgcloak encrypt` again"),
                    }
                }
            }
        }
        match failures {
            0 => Ok(()),
            n => Err(format!(
                "{n} value(s) could not be converted and were left as they are (see above)"
            )),
        }
    })
}
