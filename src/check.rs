//! `pgcloak check --upstream-dsn DSN`: checks the configured PII columns against a live
//! database. Every column must exist (names match exactly, as Postgres stores them) and have
//! a type that can hold a ciphertext envelope: `text`, or `varchar` without a limit or with
//! one large enough. Relations that reach PII columns without being in the policy (views,
//! partitions, inheritance children) are reported too. Two catalog queries
//! ([`CATALOG_QUERY`], [`DERIVED_QUERY`]) fetch the facts; the rest is pure logic
//! ([`check_column`], [`classify`], [`check_derived`]) so it is unit-tested without a server.

use std::path::Path;
use std::time::Duration;

use pgcloak::config::Config;
use pgcloak::crypto::{envelope_len, Mode};
use pgcloak::policy::ColumnId;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

/// A `varchar(n)` must hold the ciphertext of at least this many plaintext bytes.
const MIN_PLAINTEXT: usize = 64;
/// Also quoted in messages, as the size of a typical "short string" column.
const TYPICAL_PLAINTEXT: usize = 255;

/// Every column (NULL for a table without columns) of every relation whose schema and name
/// match a configured one case-insensitively; the exact match is made in [`check_column`].
const CATALOG_QUERY: &str =
    "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), \
            d.adbin IS NOT NULL AND pg_get_expr(d.adbin, d.adrelid) !~* '^NULL(::.*)?$' \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
     AND lower(n.nspname) = ANY($1) AND lower(c.relname) = ANY($2)";

/// Relations that reach configured PII columns without being in the policy: views whose
/// definition reads them (their `pg_rewrite` dependencies) and partitions or inheritance
/// children of their tables, at any depth. `$1`: the configured `schema.table.column`s.
/// Per row: the relation's schema and name, the PII column it reaches, and whether it is a
/// view (else a partition or child).
const DERIVED_QUERY: &str = "
WITH RECURSIVE pii AS (
    SELECT c.oid AS relid, a.attnum, n.nspname || '.' || c.relname || '.' || a.attname AS id
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname || '.' || c.relname || '.' || a.attname = ANY($1)
), children(relid, id) AS (
    SELECT i.inhrelid, p.id FROM pg_inherits i JOIN pii p ON p.relid = i.inhparent
    UNION
    SELECT i.inhrelid, ch.id FROM pg_inherits i JOIN children ch ON ch.relid = i.inhparent
)
SELECT n.nspname, v.relname, p.id, true
FROM pg_depend d
JOIN pii p ON d.refobjid = p.relid AND d.refobjsubid = p.attnum
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class AND v.oid <> p.relid
JOIN pg_namespace n ON n.oid = v.relnamespace
WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
UNION
SELECT n.nspname, c.relname, ch.id, false
FROM children ch JOIN pg_class c ON c.oid = ch.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY 1, 2, 3";

/// One row of [`DERIVED_QUERY`].
struct DerivedRow {
    schema: String,
    relation: String,
    pii_column: String,
    view: bool,
}

/// One row of [`CATALOG_QUERY`]: schema, table, column and its `format_type`, and whether
/// the column has a DEFAULT other than NULL.
struct CatalogRow {
    schema: String,
    table: String,
    column: Option<(String, String)>,
    has_default: bool,
}

/// Connects to `dsn`, prints a line per good column and fails with one line per problem.
pub fn upstream(config: &Config, path: &Path, dsn: &str) -> Result<(), String> {
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
    let lower = |f: fn(&ColumnId) -> &str| -> Vec<String> {
        columns.iter().map(|(id, _)| f(id).to_lowercase()).collect()
    };
    let (schemas, tables) = (lower(|id| &id.schema), lower(|id| &id.table));
    let ids: Vec<String> = columns.iter().map(|(id, _)| id.to_string()).collect();
    let (rows, derived) = runtime.block_on(async {
        let (client, connection) = (pg.connect(NoTls).await)
            .map_err(|e| format!("cannot connect to {target}: {}", chain(&e)))?;
        tokio::spawn(async move { drop(connection.await) });
        let catalog_error = |e: tokio_postgres::Error| {
            format!("cannot read the catalog of {target}: {}", chain(&e))
        };
        let rows =
            (client.query(CATALOG_QUERY, &[&schemas, &tables]).await).map_err(catalog_error)?;
        let derived = (client.query(DERIVED_QUERY, &[&ids]).await).map_err(catalog_error)?;
        Ok::<_, String>((rows, derived))
    })?;
    let derived: Vec<DerivedRow> = (derived.iter())
        .map(|r| DerivedRow {
            schema: r.get(0),
            relation: r.get(1),
            pii_column: r.get(2),
            view: r.get(3),
        })
        .filter(|r| policy.table(Some(&r.schema), &r.relation).is_none())
        .collect();
    let rows: Vec<CatalogRow> = (rows.iter())
        .map(|r| CatalogRow {
            schema: r.get(0),
            table: r.get(1),
            column: r.get::<_, Option<String>>(2).zip(r.get(3)),
            has_default: r.get::<_, Option<bool>>(4).unwrap_or(false),
        })
        .collect();
    let mut problems = Vec::new();
    for (id, mode) in &columns {
        match check_column(id, *mode, &rows) {
            Ok(line) => println!("{line}"),
            Err(line) => problems.push(line),
        }
    }
    problems.extend(check_derived(&derived));
    match problems.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} problem(s) with the PII columns in {target}:\n  {}",
            problems.join("\n  ")
        )),
    }
}

/// `host:port` of the DSN's first host; never the password.
fn describe(pg: &tokio_postgres::Config) -> String {
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    match pg.get_hosts().first() {
        Some(Host::Tcp(name)) => format!("{name}:{port}"),
        Some(Host::Unix(dir)) => format!("{}:{port}", dir.display()),
        None => "the upstream (no host in --upstream-dsn)".into(),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let causes = std::iter::successors(Some(e), |e| e.source());
    causes.map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}

const RENAME: &str = "or correct the name under `tables`";

/// The OK line of one configured column, or its problem line.
fn check_column(id: &ColumnId, mode: Mode, rows: &[CatalogRow]) -> Result<String, String> {
    let same = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
    let fold = |name: &str| {
        format!("Postgres folds unquoted names to lower case, so write `{name}` under `tables`")
    };
    let (schema, table, column) = (&id.schema, &id.table, &id.column);
    let alter = format!("ALTER TABLE {}.{}", ident(schema), ident(table));
    let col = ident(column);
    let mut columns = (rows.iter())
        .filter(|r| &r.schema == schema && &r.table == table)
        .peekable();
    if columns.peek().is_none() {
        let missing = format!("{id}: table {schema}.{table} does not exist");
        let similar = (rows.iter()).find(|r| same(&r.schema, schema) && same(&r.table, table));
        return Err(match similar {
            Some(r) => format!(
                "{missing}, but {}.{} does; {}",
                r.schema,
                r.table,
                fold(&r.table)
            ),
            None => format!("{missing}: create it, {RENAME}"),
        });
    }
    let columns: Vec<_> = columns
        .filter_map(|r| r.column.as_ref().map(|c| (c, r.has_default)))
        .collect();
    let with_default = columns.iter().any(|((c, _), d)| c == column && *d);
    let columns: Vec<_> = columns.into_iter().map(|(c, _)| c).collect();
    let Some((_, type_name)) = columns.iter().find(|(c, _)| c == column) else {
        return Err(match columns.iter().find(|(c, _)| same(c, column)) {
            Some((c, _)) => format!("{id}: column does not exist, but {c} does; {}", fold(c)),
            None => format!("{id}: column does not exist: {alter} ADD COLUMN {col} text, {RENAME}"),
        });
    };
    if let Err(why) = classify(type_name, mode) {
        return Err(format!("{id}: {why}: {alter} ALTER COLUMN {col} TYPE text"));
    }
    if with_default {
        return Err(format!(
            "{id}: has a DEFAULT, which Postgres stores in clear in rows that omit the column: {alter} ALTER COLUMN {col} DROP DEFAULT"
        ));
    }
    Ok(format!("{id}: {type_name}, {mode} — ok"))
}

/// One problem per relation of `rows` (not in the policy) that reaches PII columns:
/// pgcloak recognises PII columns by the table names in a statement, so values written
/// through it would pass in clear, and searches on a view would compare plaintext with
/// ciphertext.
fn check_derived(rows: &[DerivedRow]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rows;
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.schema == first.schema && r.relation == first.relation)
            .count();
        let (group, tail) = rest.split_at(same);
        rest = tail;
        let reached: Vec<&str> = group.iter().map(|r| r.pii_column.as_str()).collect();
        let reached = reached.join(", ");
        let name = format!("{}.{}", first.schema, first.relation);
        let configure =
            "add it under `tables` with its PII columns and `same_key_as: <the column>`";
        out.push(match first.view {
            true => format!(
                "{name}: a view showing {reached}, not in the policy: searches on it would compare plaintext with ciphertext and values written through it would be stored in clear; {configure}"
            ),
            false => format!(
                "{name}: a partition or child table of the table holding {reached}, not in the policy: rows written to it directly are stored in clear; {configure}"
            ),
        });
    }
    out
}

/// Whether a column of type `type_name` (as printed by `format_type`) can hold `mode`
/// ciphertexts; `Err` says why not.
fn classify(type_name: &str, mode: Mode) -> Result<(), String> {
    if type_name == "text" || type_name == "character varying" {
        return Ok(());
    }
    let limit = (type_name.strip_prefix("character varying("))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(n) = limit {
        let need = envelope_len(MIN_PLAINTEXT, mode);
        let typical = envelope_len(TYPICAL_PLAINTEXT, mode);
        if n >= need {
            return Ok(());
        }
        return Err(format!(
            "{type_name} is too short: a {mode} ciphertext takes {need} characters for a \
             {MIN_PLAINTEXT}-byte value, {typical} for {TYPICAL_PLAINTEXT} bytes \
             (use text, or at least varchar({typical}))"
        ));
    }
    if type_name == "citext" || type_name.ends_with(".citext") {
        let why = "compares case-insensitively, but ciphertext is case-sensitive";
        return Err(format!("{type_name} {why}, so lookups would silently miss"));
    }
    if type_name == "bpchar" || type_name.starts_with("character(") {
        return Err(format!(
            "{type_name} pads values with spaces, corrupting ciphertext"
        ));
    }
    Err(format!("{type_name} cannot hold ciphertext, which is text"))
}

/// An identifier as SQL needs it written: as is when lower-case and plain, else quoted.
fn ident(name: &str) -> String {
    let start = |c: char| c.is_ascii_lowercase() || c == '_';
    let plain = |c: char| start(c) || c.is_ascii_digit() || c == '$';
    match name.starts_with(start) && name.chars().all(plain) {
        true => name.to_owned(),
        false => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_family_types_are_classified() {
        let (d, r) = (Mode::Deterministic, Mode::Randomized);
        let need = envelope_len(MIN_PLAINTEXT, r);
        let varchar = format!("character varying({need})");
        for ok in ["text", "character varying", &varchar] {
            assert_eq!(classify(ok, r), Ok(()), "{ok}");
        }
        let short = classify(&format!("character varying({})", need - 1), r).unwrap_err();
        assert!(short.contains(&format!("takes {need} characters")));
        let rejected = [
            ("citext", "case-insensitively"),
            ("ext.citext", "case-insensitively"),
            ("character(200)", "pads"),
            ("bpchar", "pads"),
            ("integer", "cannot hold"),
            ("character varying(200)[]", "cannot hold"),
        ];
        for (type_name, why) in rejected {
            let err = classify(type_name, d).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn columns_are_matched_exactly_with_case_hints() {
        let row = |column: &str, type_name: &str| CatalogRow {
            schema: "public".into(),
            table: "users".into(),
            column: Some((column.into(), type_name.into())),
            has_default: column == "nick",
        };
        let rows = [
            row("email", "text"),
            row("age", "integer"),
            row("nick", "text"),
        ];
        let check = |table: &str, column: &str| {
            let (schema, table, column) = ("public".into(), table.into(), column.into());
            let id = ColumnId {
                schema,
                table,
                column,
            };
            check_column(&id, Mode::Deterministic, &rows)
        };
        let ok = check("users", "email").unwrap();
        assert_eq!(ok, "public.users.email: text, deterministic — ok");
        let problem = |table, column| check(table, column).unwrap_err();
        let age = problem("users", "age");
        assert!(age.starts_with("public.users.age: integer cannot hold"));
        assert!(age.ends_with("ALTER TABLE public.users ALTER COLUMN age TYPE text"));
        assert!(problem("users", "Email").contains("but email does; Postgres folds unquoted"));
        assert!(problem("users", "phone").contains("ADD COLUMN phone text"));
        assert!(problem("users", "nick").ends_with("ALTER COLUMN nick DROP DEFAULT"));
        let upper = problem("Users", "email");
        assert!(upper.contains("public.Users does not exist, but public.users does"));
        assert!(problem("orders", "card").contains("public.orders does not exist: create it"));
    }

    #[test]
    fn relations_reaching_pii_columns_outside_the_policy() {
        let row = |relation: &str, pii_column: &str, view: bool| DerivedRow {
            schema: "public".into(),
            relation: relation.into(),
            pii_column: pii_column.into(),
            view,
        };
        let rows = [
            row("names", "public.users.email", true),
            row("names", "public.users.first_name", true),
            row("users_2024", "public.users.email", false),
        ];
        let out = check_derived(&rows);
        assert_eq!(out.len(), 2);
        assert!(
            out[0].starts_with(
                "public.names: a view showing public.users.email, public.users.first_name, not in the policy"
            ),
            "{}",
            out[0]
        );
        assert!(
            out[1].starts_with("public.users_2024: a partition or child table"),
            "{}",
            out[1]
        );
    }

    #[test]
    fn identifiers_are_quoted_when_needed() {
        assert_eq!(ident("users_2$"), "users_2$");
        assert_eq!(ident("Users"), "\"Users\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
