//! Real client libraries on typed PII columns (issue 13: `dob: { mode: deterministic, type:
//! date }`): psycopg 3, asyncpg, node-postgres, PgJDBC and Django 5.2 write and read dates,
//! numerics, booleans, JSON, timestamps, integers, UUIDs and bytes as their own types
//! through pgcloak, while Postgres holds text envelopes. Each driver script (tests/clients/)
//! runs every statement on `<prefix>_pii` (PII columns, text in Postgres) and on
//! `<prefix>_real` (the same columns with real types, no policy) and compares what the
//! application sees. `tests/clients/setup.sh` installs the clients; without them these tests
//! skip, unless PGCLOAK_REQUIRE_CLIENTS=1.
//!
//! Each test without a suffix is what every driver does by default; the suffixed ones
//! (small ints, naive datetimes, DateStyle input, explicit casts, Django's client-side
//! binding) are what Postgres accepts and pgcloak refused when they were written: they fail
//! until pgcloak accepts them, and they run alone so that they block nothing else.

mod common;

use common::{client_program, jdbc_classpath, Stack};

use std::ffi::OsStr;

/// (column, type, mode) of the tables the driver scripts share (`ps_`, `asy_`, `node_`,
/// `jdbc_`).
const TYPED_COLUMNS: &[(&str, &str, &str)] = &[
    ("dob", "date", "deterministic"),
    ("amount", "numeric(10,2)", "deterministic"),
    ("active", "boolean", "randomized"),
    ("attrs", "jsonb", "deterministic"),
    ("seen", "timestamptz", "deterministic"),
    ("n", "integer", "deterministic"),
    ("uid", "uuid", "deterministic"),
    ("blob", "bytea", "randomized"),
];

/// django_typed.py's model (django_app.TypedPerson, table `dj_typed`).
const DJANGO_COLUMNS: &[(&str, &str, &str)] = &[
    ("email", "text", "deterministic"),
    ("dob", "date", "deterministic"),
    ("balance", "numeric(10,2)", "deterministic"),
    ("active", "boolean", "randomized"),
    ("prefs", "jsonb", "deterministic"),
    ("joined", "timestamptz", "deterministic"),
];

fn policy() -> String {
    let mut yaml = String::new();
    let tables = ["ps", "asy", "node", "jdbc"]
        .map(|prefix| (format!("{prefix}_pii"), TYPED_COLUMNS))
        .into_iter()
        .chain([("dj_typed".to_owned(), DJANGO_COLUMNS)]);
    for (table, columns) in tables {
        yaml.push_str(&format!("{table}:\n"));
        for (column, ty, mode) in columns {
            yaml.push_str(&format!("  {column}: {{ mode: {mode}, type: '{ty}' }}\n"));
        }
    }
    yaml
}

/// A proxy with the policy, and `<prefix>_pii` (PII columns as text) and `<prefix>_real`
/// (real types) created straight in Postgres.
async fn typed_stack(prefix: &str) -> (Stack, tokio_postgres::Client) {
    let stack = Stack::start_cloaked(&policy()).await;
    let direct = stack.connect_direct().await;
    let columns = |real: bool| {
        TYPED_COLUMNS
            .iter()
            .map(|(c, t, _)| format!("{c} {}", if real { t } else { &"text" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    direct
        .batch_execute(&format!(
            "CREATE TABLE {prefix}_pii (id int PRIMARY KEY, {}); \
             CREATE TABLE {prefix}_real (id int PRIMARY KEY, {});",
            columns(false),
            columns(true)
        ))
        .await
        .unwrap();
    (stack, direct)
}

/// Straight from Postgres: `table` has at least `rows` rows with a value in every PII
/// column, and every value stored in those columns is an envelope of the column's mode.
async fn assert_envelopes(
    direct: &tokio_postgres::Client,
    table: &str,
    columns: &[(&str, &str, &str)],
    rows: usize,
) {
    let names: Vec<&str> = columns.iter().map(|(c, _, _)| *c).collect();
    let stored = direct
        .query(&format!("SELECT {} FROM {table}", names.join(", ")), &[])
        .await
        .unwrap();
    for (i, (column, _, mode)) in columns.iter().enumerate() {
        let prefix = match *mode {
            "deterministic" => "pgc1$d$",
            _ => "pgc1$r$",
        };
        let values: Vec<String> = stored.iter().filter_map(|r| r.get(i)).collect();
        assert!(
            values.len() >= rows,
            "{table}.{column}: {} values stored, expected at least {rows}",
            values.len()
        );
        for value in values {
            assert!(
                value.starts_with(prefix),
                "{table}.{column} holds {value:?}"
            );
        }
    }
}

/// The psycopg script's checks; each also runs alone (`psycopg_typed.py URL check`).
async fn psycopg_checks(checks: &[&str]) {
    let python = ".venv/bin/python";
    let Some(program) = client_program(python, python) else {
        return;
    };
    let (stack, direct) = typed_stack("ps").await;
    common::run_client_script(
        &stack,
        program.as_os_str(),
        &["psycopg_typed.py"],
        checks,
        "psycopg_typed OK",
    )
    .await;
    let rows = if checks.is_empty() { 6 } else { 0 };
    assert_envelopes(&direct, "ps_pii", TYPED_COLUMNS, rows).await;
}

/// psycopg 3 on every typed column: execute (text parameters with psycopg's OIDs) and
/// executemany (pipeline, binary parameters), Python types read back (date, Decimal with
/// numeric(10,2)'s scale, bool, dict/list, aware datetime, int, UUID, bytes), equality, IN and
/// `= ANY` searches in text and binary, NULLs, invalid values refused with Postgres's
/// SQLSTATE, COPY in and out (text, CSV, typed rows), binary results, DateStyle changed
/// mid-session — each compared with the same table of real types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_typed() {
    psycopg_checks(&[
        "check_insert_and_select",
        "check_equality_search",
        "check_nulls",
        "check_invalid_values",
        "check_copy",
        "check_binary_results",
        "check_date_style",
    ])
    .await;
}

/// Dates written in the session's DateStyle after `SET DateStyle = 'SQL, DMY'` (a text
/// parameter `03/04/2020` with psycopg's extended protocol) are read as Postgres reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_typed_date_style_input() {
    psycopg_checks(&["check_date_style_input"]).await;
}

/// psycopg sends a Python int by its magnitude: 7 as int2, 2**40 as int8. Postgres reads
/// both for an integer column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_typed_small_ints() {
    psycopg_checks(&["check_small_int_parameters"]).await;
}

/// psycopg sends a naive datetime as timestamp (1114); Postgres reads it for a timestamptz
/// column in the session's TimeZone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_typed_naive_datetime() {
    psycopg_checks(&["check_naive_datetime_for_timestamptz"]).await;
}

/// asyncpg (every parameter binary as the ParameterDescription says, binary results): the
/// described types equal the real table's; Python objects in (date, Decimal, bool, dict
/// through a json codec and str without one, aware datetime, int, UUID, bytes) and back
/// typed; `= $1`, `= ANY($1)` with a list of dates, IN, IS NULL; NULLs; values the server
/// refuses (numeric overflow, invalid JSON) with Postgres's SQLSTATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_typed() {
    asyncpg_checks(&[
        "check_described_types",
        "check_insert_and_fetch",
        "check_equality_search",
        "check_invalid_values",
        "check_jsonb_as_text",
    ])
    .await;
}

/// asyncpg with parameters cast to the column's type: `dob = $1::date`,
/// `uid = ANY($1::uuid[])`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_typed_explicit_casts() {
    asyncpg_checks(&["check_insert_and_fetch", "check_explicit_casts"]).await;
}

async fn asyncpg_checks(checks: &[&str]) {
    let python = ".venv/bin/python";
    let Some(program) = client_program(python, python) else {
        return;
    };
    let (stack, direct) = typed_stack("asy").await;
    let script = ["asyncpg_typed.py"];
    common::run_client_script(
        &stack,
        program.as_os_str(),
        &script,
        checks,
        "asyncpg_typed OK",
    )
    .await;
    assert_envelopes(&direct, "asy_pii", TYPED_COLUMNS, 3).await;
}

/// node-postgres (untyped text parameters, a Date sent with its offset, a Buffer in
/// binary): dates and timestamps parsed as Date, numeric as a string with numeric(10,2)'s
/// scale, booleans, jsonb as objects; named statements; `= $1`, `= ANY($1)`, IN; invalid
/// values refused with Postgres's error code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_typed() {
    let Some(program) = client_program("node", "node_modules/pg/package.json") else {
        return;
    };
    let (stack, direct) = typed_stack("node").await;
    let script = ["node_pg_typed.js"];
    common::run_client_script(
        &stack,
        program.as_os_str(),
        &script,
        &[],
        "node_pg_typed OK",
    )
    .await;
    assert_envelopes(&direct, "node_pii", TYPED_COLUMNS, 2).await;
}

/// PgJDBC 42.x (setObject(LocalDate), setBigDecimal, setBoolean, PGobject jsonb,
/// OffsetDateTime, UUID; getObject(i, LocalDate.class) / OffsetDateTime.class), in text and
/// (prepareThreshold=-1) binary transfer: round trip, `= ?`, IN, `= ANY(?)`, invalid values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_typed() {
    let Some(jar) = jdbc_classpath() else {
        return;
    };
    let (stack, direct) = typed_stack("jdbc").await;
    let args = ["-cp", jar, "java/JdbcTyped.java"];
    common::run_client_script(&stack, OsStr::new("java"), &args, &[], "jdbc_typed OK").await;
    assert_envelopes(&direct, "jdbc_pii", TYPED_COLUMNS, 2).await;
}

/// Django 5.2 on psycopg 3 with DateField, DecimalField(10, 2), BooleanField, JSONField and
/// an aware DateTimeField on typed PII columns: the CreateModel Django would generate is
/// refused (the columns would be date, numeric, ...); the RunSQL migration with text columns
/// in SeparateDatabaseAndState applies; create, filter by value, bulk_create, update and save
/// read back with Django's types, with `server_side_binding` (psycopg's typed parameters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_typed_server_side_binding() {
    django_checks("server").await;
}

/// The same with Django's default client-side binding: psycopg inlines the values as
/// `'1981-02-02'::date`, `'{...}'::jsonb`, `'2024-01-01 13:00:00+02:00'::timestamptz`, and
/// bulk_create's UNNEST arrays as `'{...}'::date[]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_typed_client_side_binding() {
    django_checks("default").await;
}

async fn django_checks(alias: &str) {
    let python = ".venv/bin/python";
    let Some(program) = client_program(python, python) else {
        return;
    };
    let stack = Stack::start_cloaked(&policy()).await;
    let script = ["django_typed.py"];
    common::run_client_script(
        &stack,
        program.as_os_str(),
        &script,
        &[alias],
        "django_typed OK",
    )
    .await;
    let direct = stack.connect_direct().await;
    // email and note are not NULL; the others of bulk_create's rows are mostly set.
    assert_envelopes(&direct, "dj_typed", DJANGO_COLUMNS, 45).await;
    let types: Vec<String> = direct
        .query(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_name = 'dj_typed' AND column_name <> 'id' ORDER BY column_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(types.iter().all(|t| t == "text"), "{types:?}");
}
