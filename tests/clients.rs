//! Real non-Rust clients through the proxy: psycopg 3, SQLAlchemy 2 and Django 5.2 on psycopg 3,
//! node-postgres, and (on PII tables) asyncpg, psycopg2 and pg8000. The scripts and their pinned dependencies live in tests/clients/;
//! `tests/clients/setup.sh` installs them. Without them these tests skip, unless
//! PGCLOAK_REQUIRE_CLIENTS=1 (as in CI), where they fail.

mod common;

use common::client_program;

use std::path::Path;

/// Runs `program script URL ARGS...` in tests/clients against the stack's proxy, asserts
/// that it exits 0 and prints `ok_line`, and returns its stdout.
async fn run_script(
    stack: &common::Stack,
    program: &Path,
    script: &str,
    args: &[&str],
    ok_line: &str,
) -> String {
    common::run_client_script(stack, program.as_os_str(), &[script], args, ok_line).await
}

/// Runs `program script URL` against a fresh Postgres behind a proxy without a policy.
async fn run_client(program: &str, installed: &str, script: &str, ok_line: &str) {
    let Some(program) = client_program(program, installed) else {
        return;
    };
    let stack = common::Stack::start().await;
    run_script(&stack, &program, script, &[], ok_line).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg() {
    let python = ".venv/bin/python";
    run_client(python, python, "psycopg_smoke.py", "psycopg OK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy() {
    let python = ".venv/bin/python";
    run_client(python, python, "sqlalchemy_smoke.py", "sqlalchemy OK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let pg = "node_modules/pg/package.json";
    run_client("node", pg, "node_pg_smoke.js", "node-postgres OK").await;
}

/// The policy the PII client scripts run under: sqlalchemy_pii.py's SQLAlchemy model
/// (`users`), its psycopg table (`contacts`), a model with a too-short varchar (`sa_short`)
/// and one with an index on a deterministic column (`sa_indexed`); node_pg_pii.js's table
/// (`node_people`); python_drivers_pii.py's (`py_people`); django_pii.py's model
/// (`dj_people`) and its too-short CharField (`dj_short`).
const PII_POLICY: &str = "
users:
  email: deterministic
  first_name: randomized
  last_name: randomized
contacts:
  email: deterministic
  first_name: randomized
  last_name: randomized
sa_short:
  first_name: randomized
sa_indexed:
  email: deterministic
node_people:
  email: deterministic
  first_name: randomized
  last_name: randomized
py_people:
  email: deterministic
  first_name: randomized
  last_name: randomized
dj_people:
  email: deterministic
  first_name: randomized
  last_name: randomized
dj_short:
  first_name: randomized
";

/// The envelope prefix of each PII column of PII_POLICY's users, contacts, node_people and
/// py_people.
fn envelope_prefix(column: &str) -> &'static str {
    match column {
        "email" => "pgc1$d$",
        "first_name" | "last_name" => "pgc1$r$",
        other => panic!("{other} is not a PII column of PII_POLICY"),
    }
}

/// One `stored TABLE ID COLUMN HEX|-` line of a PII client script: a value as the
/// application reads it back through pgcloak.
struct Stored {
    table: String,
    id: i32,
    column: String,
    plaintext: Option<String>,
}

fn parse_stored(stdout: &str) -> Vec<Stored> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("stored "))
        .map(|rest| {
            let fields: Vec<&str> = rest.split(' ').collect();
            let [table, id, column, value] = fields[..] else {
                panic!("bad stored line: {rest}");
            };
            let plaintext = (value != "-").then(|| {
                let bytes: Vec<u8> = (0..value.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&value[i..i + 2], 16).expect("hex"))
                    .collect();
                String::from_utf8(bytes).expect("UTF-8")
            });
            Stored {
                table: table.to_owned(),
                id: id.parse().expect("id"),
                column: column.to_owned(),
                plaintext,
            }
        })
        .collect()
}

/// SQLAlchemy's ORM and psycopg on PII columns through a proxy with a policy; afterwards,
/// straight from Postgres, every value the application wrote is ciphertext of the right
/// mode, never the plaintext, and equal emails (only they) share a ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_psycopg_pii() {
    let python = ".venv/bin/python";
    let Some(program) = client_program(python, python) else {
        return;
    };
    let tables = [("users", 20), ("contacts", 360)];
    let (_stack, direct) = run_pii_script(&program, "sqlalchemy_pii.py", &tables).await;
    // Plain columns stay plain.
    let note: String = direct
        .query_one("SELECT note FROM contacts WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "plain note");
}

/// Runs a PII client script (tests/clients/<script>, printing `<stem> OK` and `stored`
/// lines) through a proxy with PII_POLICY, then checks from Postgres that `tables` hold the
/// rows it reported, as ciphertext. Returns a direct client for further checks.
async fn run_pii_script(
    program: &Path,
    script: &str,
    tables: &[(&str, i64)],
) -> (common::Stack, tokio_postgres::Client) {
    let stack = common::Stack::start_cloaked(PII_POLICY).await;
    let stem = script.split('.').next().unwrap_or(script);
    let stdout = run_script(&stack, program, script, &[], &format!("{stem} OK")).await;
    let stored = parse_stored(&stdout);
    let direct = stack.connect_direct().await;
    assert_stored_encrypted(&direct, &stored, tables).await;
    (stack, direct)
}

/// Checks what a PII client script reported (`stored` lines) against Postgres: each table
/// holds the expected rows and all their PII values were reported; every value the
/// application reads back is, stored, an envelope of the column's mode that contains no
/// plaintext; distinct emails have distinct ciphertexts and equal first names (the script
/// stores some twice) different ones.
async fn assert_stored_encrypted(
    direct: &tokio_postgres::Client,
    stored: &[Stored],
    tables: &[(&str, i64)],
) {
    for &(table, rows) in tables {
        let count: i64 = direct
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        let reported = stored.iter().filter(|s| s.table == table).count() as i64;
        assert_eq!(
            reported,
            count * 3,
            "{table}: every row's 3 PII values are reported"
        );
        assert_eq!(count, rows, "{table}: rows left by the script");
    }
    let plaintexts: Vec<&str> = stored
        .iter()
        .filter_map(|s| s.plaintext.as_deref())
        .collect();
    // email plaintext -> its ciphertext, per table (each column has its own key).
    let mut email_ciphertexts = std::collections::HashMap::new();
    let mut first_names = std::collections::HashMap::new();
    for s in stored {
        let row = direct
            .query_one(
                &format!("SELECT {} FROM {} WHERE id = $1", s.column, s.table),
                &[&s.id],
            )
            .await
            .unwrap();
        let ciphertext: Option<String> = row.get(0);
        let what = format!("{}.{} of id {}", s.table, s.column, s.id);
        let (Some(plaintext), Some(ciphertext)) = (&s.plaintext, &ciphertext) else {
            assert_eq!(
                ciphertext, None,
                "{what}: NULL through pgcloak, not in Postgres"
            );
            assert!(
                s.plaintext.is_none(),
                "{what}: NULL in Postgres, not through pgcloak"
            );
            continue;
        };
        let prefix = envelope_prefix(&s.column);
        assert!(
            ciphertext.starts_with(prefix),
            "{what}: stored {ciphertext:?}"
        );
        // Plaintexts this long cannot turn up in base64 by chance.
        for p in plaintexts.iter().filter(|p| p.len() >= 6) {
            assert!(
                !ciphertext.contains(p),
                "{what}: stored {ciphertext:?} contains {p:?}"
            );
        }
        let key = (s.table.clone(), plaintext.clone());
        match s.column.as_str() {
            "email" => {
                let previous = email_ciphertexts.insert(key, ciphertext.clone());
                assert!(
                    previous.is_none(),
                    "{what}: email {plaintext:?} stored twice"
                );
            }
            "first_name" => first_names
                .entry(key)
                .or_insert_with(Vec::new)
                .push(ciphertext.clone()),
            _ => {}
        }
    }
    // Deterministic: distinct emails, distinct ciphertexts.
    let mut distinct: Vec<_> = email_ciphertexts.values().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), email_ciphertexts.len());
    // Randomized: equal first names ("Alan", "Batch", "Multi", ...) stored differently.
    let repeated: Vec<_> = first_names.values().filter(|c| c.len() > 1).collect();
    assert!(
        !repeated.is_empty(),
        "sqlalchemy_pii.py stores a first name twice"
    );
    for ciphertexts in repeated {
        let mut unique = ciphertexts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ciphertexts.len(), "{ciphertexts:?}");
    }
}

/// node-postgres on PII columns through a proxy with a policy (parameters as untyped text,
/// named statements, JS arrays as text[], a pool, refusals); then, straight from Postgres,
/// every value it wrote is ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_pii() {
    let Some(program) = client_program("node", "node_modules/pg/package.json") else {
        return;
    };
    let tables = [("node_people", 15)];
    let (_stack, direct) = run_pii_script(&program, "node_pg_pii.js", &tables).await;
    let note: Option<String> = direct
        .query_one("SELECT note FROM node_people WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note.as_deref(), Some("first"));
}

/// asyncpg, psycopg2 and pg8000 on PII columns through a proxy with a policy; then,
/// straight from Postgres, every value they wrote is ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_pii() {
    let python = ".venv/bin/python";
    let Some(program) = client_program(python, python) else {
        return;
    };
    run_pii_script(&program, "python_drivers_pii.py", &[("py_people", 6)]).await;
}

/// Django 5.2 on psycopg 3 through a proxy with a policy: `migrate` (CreateModel, then an
/// AlterField CharField -> TextField on a PII column, `ALTER COLUMN ... TYPE text USING
/// "email"::text`), bulk_create's `INSERT ... SELECT * FROM UNNEST(...)` of 500 rows
/// (inlined arrays and array parameters), filter/get/update/save/delete; then, straight from
/// Postgres, every value it wrote is ciphertext and the column is text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_pii() {
    let python = ".venv/bin/python";
    let Some(program) = client_program(python, python) else {
        return;
    };
    let (_stack, direct) = run_pii_script(&program, "django_pii.py", &[("dj_people", 520)]).await;
    let row = direct
        .query_one(
            "SELECT (SELECT data_type FROM information_schema.columns \
               WHERE table_name = 'dj_people' AND column_name = 'email'), \
             (SELECT count(*) FROM django_migrations WHERE app = 'django_app'), \
             (SELECT note FROM dj_people WHERE note = 'bulk note 1'), \
             to_regclass('dj_short') IS NULL",
            &[],
        )
        .await
        .unwrap();
    let (data_type, applied): (String, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (data_type.as_str(), applied),
        ("text", 2),
        "AlterField applied"
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("bulk note 1")
    );
    assert!(
        row.get::<_, bool>(3),
        "the too-short CharField's table was refused"
    );
}
