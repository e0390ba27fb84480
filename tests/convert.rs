//! `pgcloak encrypt`, `rotate` and `decrypt` against a real Postgres: plaintext written
//! directly becomes envelopes in place (a run stopped mid-way resumes), a rotation moves
//! every value to the current key and a mode change to the new mode, and decrypt gives the
//! original plaintext back. Through pgcloak every row reads back identical throughout.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{pgcloak_bin, PASSWORD};
use pgcloak::crypto::MasterKey;
use pgcloak::pgtemp::PgTemp;

const ROWS: i32 = 3000;

struct Setup {
    pg: PgTemp,
    dir: std::path::PathBuf,
    dsn: String,
}

impl Setup {
    fn start() -> Setup {
        let pg = PgTemp::builder()
            .superuser_password(PASSWORD)
            .start()
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "pgcloak-convert-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["k1", "k2"] {
            std::fs::write(dir.join(name), MasterKey::generate().to_base64()).unwrap();
        }
        let dsn = format!(
            "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            pg.port()
        );
        let setup = Setup { pg, dir, dsn };
        setup.sql(&format!(
            "CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE, name text);
             INSERT INTO users SELECT i, 'user' || i || '@example.com', CASE WHEN i % 7 = 0 THEN NULL ELSE 'Name ' || i END FROM generate_series(1, {ROWS}) i;
             CREATE TABLE notes (body text, author text);
             INSERT INTO notes SELECT 'note ' || i, 'author ' || (i % 10) FROM generate_series(1, 250) i;
             CREATE TABLE visits (org text, n int, guest text, PRIMARY KEY (org, n));
             INSERT INTO visits SELECT 'org' || (i % 3), i, 'guest ' || i FROM generate_series(1, 300) i;"
        ));
        setup
    }

    /// Writes the config: `keys` YAML, then the policy with `name` in `name_mode`.
    fn config(&self, keys: &str, name_mode: &str) -> std::path::PathBuf {
        self.write_config(
            "pgcloak.yaml",
            keys,
            &format!("  users:\n    email: deterministic\n    name: {name_mode}\n  notes:\n    author: deterministic\n  visits:\n    guest: randomized\n"),
        )
    }

    /// Writes `file` in the setup's directory: this Postgres, `keys` YAML, `tables` YAML.
    fn write_config(&self, file: &str, keys: &str, tables: &str) -> std::path::PathBuf {
        let path = self.dir.join(file);
        std::fs::write(
            &path,
            format!(
                "listen: \"127.0.0.1:0\"\nupstream:\n  host: 127.0.0.1\n  port: {}\nkeys:\n{keys}\ntables:\n{tables}",
                self.pg.port()
            ),
        )
        .unwrap();
        path
    }

    fn sql(&self, sql: &str) -> String {
        let out = common::stdout(&common::psql(
            &self.dsn,
            &["-v", "ON_ERROR_STOP=1", "-Atc", sql],
        ));
        out.trim().to_owned()
    }

    fn tool(&self, config: &std::path::Path, args: &[&str]) -> std::process::Output {
        Command::new(pgcloak_bin())
            .args(args)
            .arg("--config")
            .arg(config)
            .args(["--upstream-dsn", &self.dsn])
            .output()
            .unwrap()
    }
}

fn ok(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

const K1: &str = "  master_key_file: k1";
const K2_THEN_K1: &str =
    "  current: k2\n  master_keys:\n    k2: { file: k2 }\n    k1: { file: k1 }";
const K2: &str = "  current: k2\n  master_keys:\n    k2: { file: k2 }";

/// pgcloak in this process with `config` (its policy and keys), and a client of it.
async fn proxy_for(
    config: &std::path::Path,
) -> (pgcloak::background::Background, tokio_postgres::Client) {
    let loaded = pgcloak::config::Config::load(config).unwrap();
    let cloak = pgcloak::cloak::Cloak::from_config(&loaded, config)
        .unwrap()
        .unwrap();
    let proxy = pgcloak::proxy::Proxy::bind(loaded.settings(config).unwrap())
        .await
        .unwrap()
        .with_cloak(cloak)
        .spawn()
        .unwrap();
    let url = format!("postgresql://postgres:{PASSWORD}@{}/postgres", proxy.addr());
    let client = common::connect(&url).await;
    (proxy, client)
}

/// A second row with an existing `email`, inserted through pgcloak, violates UNIQUE.
async fn assert_unique_enforced(client: &tokio_postgres::Client, email: &str) {
    let dup = client
        .execute("INSERT INTO users (id, email) VALUES (0, $1)", &[&email])
        .await
        .unwrap_err();
    assert_eq!(
        dup.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
}

/// Every row as pgcloak with `config` shows it: `id|email|name` lines.
async fn through_pgcloak(config: &std::path::Path) -> String {
    let (proxy, client) = proxy_for(config).await;
    let rows = client
        .query("SELECT id, email, name FROM users ORDER BY id", &[])
        .await
        .unwrap();
    let found = client
        .query(
            "SELECT id FROM users WHERE email = 'user42@example.com'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "the search finds the row");
    assert_unique_enforced(&client, "user7@example.com").await;
    proxy.shutdown().await;
    rows.iter()
        .map(|r| {
            format!(
                "{}|{}|{}",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<String>>(2).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_rotate_change_mode_and_decrypt_in_place() {
    let s = Setup::start();
    let original =
        s.sql("SELECT id || '|' || email || '|' || coalesce(name, '') FROM users ORDER BY id");
    let notes = s.sql("SELECT author FROM notes ORDER BY body");
    let config = s.config(K1, "randomized");

    // Dry run: counts, changes nothing.
    let dry = ok(&s.tool(&config, &["encrypt", "--dry-run"]));
    let named = ROWS - ROWS / 7;
    assert!(
        dry.contains(&format!(
            "public.users: would encrypt {} value(s) (email: {ROWS}, name: {named})",
            ROWS + named
        )),
        "{dry}"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM users WHERE email LIKE 'pgc1$%'"),
        "0"
    );

    // Stopped mid-way (small batches, killed once some are done), then run again.
    let mut child = Command::new(pgcloak_bin())
        .args([
            "encrypt",
            "--batch-size",
            "5",
            "--table",
            "users",
            "--config",
        ])
        .arg(&config)
        .args(["--upstream-dsn", &s.dsn])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = common::eventually(Duration::from_secs(30), || async {
        s.sql("SELECT count(*) FROM users WHERE email LIKE 'pgc1$%'") != "0"
    })
    .await;
    assert!(started);
    let _ = child.kill();
    let _ = child.wait();
    let done: i32 = s
        .sql("SELECT count(*) FROM users WHERE email LIKE 'pgc1$%'")
        .parse()
        .unwrap();
    assert!(done > 0 && done < ROWS, "killed mid-way: {done} of {ROWS}");
    // Several writers; a table without a primary key (by ctid), one with a composite key.
    let visits = s.sql("SELECT org || n || guest FROM visits ORDER BY org, n");
    let second = ok(&s.tool(&config, &["encrypt", "--batch-size", "40", "--jobs", "3"]));
    assert!(
        second.contains("public.users:")
            && second.contains("public.notes: 250 row(s)")
            && second.contains("public.visits: 300 row(s)"),
        "{second}"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM visits WHERE guest NOT LIKE 'pgc1$r$%'"),
        "0"
    );
    assert_eq!(
        s.sql(
            "SELECT count(*) FROM users WHERE email NOT LIKE 'pgc1$%' OR name NOT LIKE 'pgc1$r$%'"
        ),
        "0",
        "{second} {}",
        s.sql("SELECT min(id), max(id), count(*) FILTER (WHERE email NOT LIKE 'pgc1$%'), count(*) FILTER (WHERE name NOT LIKE 'pgc1$r$%') FROM users WHERE email NOT LIKE 'pgc1$%' OR name NOT LIKE 'pgc1$r$%'")
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM users WHERE name IS NULL"),
        (ROWS / 7).to_string(),
        "NULL stays NULL"
    );
    let again = ok(&s.tool(&config, &["encrypt"]));
    assert!(
        again.contains("public.users: 0 row(s)"),
        "idempotent: {again}"
    );
    assert_eq!(through_pgcloak(&config).await, original);

    // Rotation to k2, with the name column changing mode (randomized → deterministic).
    let config = s.config(
        K2_THEN_K1,
        "{ mode: deterministic, previous_mode: randomized }",
    );
    let k1_email = s.sql("SELECT left(email, 16) FROM users WHERE id = 1");
    let check = |config: &std::path::Path| {
        let output = Command::new(pgcloak_bin())
            .args(["check", "--config"])
            .arg(config)
            .args(["--upstream-dsn", &s.dsn])
            .output()
            .unwrap();
        ok(&output)
    };
    let before = check(&config);
    assert!(
        before.contains(&format!(
            "public.users.email: {ROWS} value(s), all envelopes of this column (under k1: {ROWS})"
        )),
        "{before}"
    );
    let rotated = ok(&s.tool(&config, &["rotate"]));
    assert!(
        rotated.contains(&format!("public.users: {ROWS} row(s)")),
        "{rotated}"
    );
    assert!(
        rotated
            .contains("public.users.name: every value is in its new mode; remove `previous_mode`"),
        "{rotated}"
    );
    assert_eq!(
        s.sql("SELECT count(DISTINCT left(email, 16)) FROM users"),
        "1"
    );
    let after = check(&config);
    assert!(
        after.contains(&format!("(under k2: {ROWS})")) && !after.contains("k1:"),
        "{after}"
    );
    assert_ne!(
        s.sql("SELECT left(email, 16) FROM users WHERE id = 1"),
        k1_email
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM users WHERE name NOT LIKE 'pgc1$d$%'"),
        "0"
    );
    // k1 can go: everything reads under k2 alone.
    let config = s.config(K2, "deterministic");
    assert_eq!(through_pgcloak(&config).await, original);

    // The way out.
    let out = ok(&s.tool(
        &config,
        &["decrypt", "--table", "users", "--columns", "email,name"],
    ));
    assert!(out.contains("public.users:"), "{out}");
    assert_eq!(
        s.sql("SELECT id || '|' || email || '|' || coalesce(name, '') FROM users ORDER BY id"),
        original
    );
    let out = ok(&s.tool(
        &config,
        &["decrypt", "--table", "notes", "--columns", "author"],
    ));
    assert!(out.contains("public.notes: 250 row(s)"), "{out}");
    assert_eq!(s.sql("SELECT author FROM notes ORDER BY body"), notes);
    let out = ok(&s.tool(
        &config,
        &[
            "decrypt",
            "--table",
            "visits",
            "--columns",
            "guest",
            "--jobs",
            "2",
        ],
    ));
    assert!(out.contains("public.visits: 300 row(s)"), "{out}");
    assert_eq!(
        s.sql("SELECT org || n || guest FROM visits ORDER BY org, n"),
        visits
    );
}

#[test]
fn mistakes_are_named() {
    let s = Setup::start();
    let config = s.config(K1, "randomized");
    for (args, expected) in [
        (vec!["decrypt"], "decrypt needs --table and --columns"),
        (
            vec!["encrypt", "--table", "orders"],
            "--table orders: the policy names no PII columns of public.orders",
        ),
        (
            vec!["encrypt", "--table", "users", "--columns", "id"],
            "--columns: id is not a PII column of public.users",
        ),
    ] {
        let output = s.tool(&config, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
    // A value that is not a valid envelope of its column is counted and left as is.
    s.sql("UPDATE users SET email = 'pgc1$d$AAAAAAAA$AAAA' WHERE id = 1");
    let config = s.config(K2_THEN_K1, "randomized");
    let output = s.tool(
        &config,
        &["rotate", "--table", "users", "--columns", "email"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success() && stdout.contains("NOT converted") && stdout.contains("email: 1"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        s.sql("SELECT email FROM users WHERE id = 1"),
        "pgc1$d$AAAAAAAA$AAAA"
    );
}

/// `migrating: true` while `pgcloak encrypt` runs: an application reads, searches and writes
/// through pgcloak the whole time, and every answer is right, before, during and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_keeps_working_through_an_online_encrypt() {
    let s = Setup::start();
    let path = s.write_config(
        "migrating.yaml",
        K1,
        "  users:\n    email: { mode: deterministic, migrating: true }\n    name: { mode: randomized, migrating: true }\n",
    );
    let (proxy, app) = proxy_for(&path).await;

    // Before: plaintext rows read as they are and are found by equality.
    let row = app
        .query_one(
            "SELECT name FROM users WHERE email = $1",
            &[&"user5@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Name 5");
    let found = app
        .simple_query(
            "SELECT id FROM users WHERE email IN ('user6@example.com', 'user8@example.com')",
        )
        .await
        .unwrap();
    assert_eq!(
        found
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count(),
        2
    );

    // A plaintext with a quote and a backslash is matched as itself.
    s.sql("INSERT INTO users (id, email) VALUES (-1, E'o''brien\\\\q@example.com')");
    let odd = app
        .simple_query("SELECT id FROM users WHERE email = 'o''brien\\q@example.com'")
        .await
        .unwrap();
    assert_eq!(
        odd.iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count(),
        1
    );
    let odd = app
        .query(
            "SELECT id FROM users WHERE email = $1",
            &[&"o'brien\\q@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(odd.len(), 1);

    // During: encrypt in small batches while the application works.
    let mut child = Command::new(pgcloak_bin())
        .args(["encrypt", "--batch-size", "50", "--config"])
        .arg(&path)
        .args(["--upstream-dsn", &s.dsn])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut checked = 0;
    let mut next_id = ROWS + 1;
    let mut during = 0;
    loop {
        let running = child.try_wait().unwrap().is_none();
        let id = 1 + (checked * 37) % ROWS;
        let email = format!("user{id}@example.com");
        let row = app
            .query_one("SELECT id, name FROM users WHERE email = $1", &[&email])
            .await
            .unwrap_or_else(|e| panic!("{email}: {e}"));
        assert_eq!(row.get::<_, i32>(0), id);
        let expected = (id % 7 != 0).then(|| format!("Name {id}"));
        assert_eq!(row.get::<_, Option<String>>(1), expected);
        // A new row, and an update of an existing one, through pgcloak.
        let new_email = format!("new{next_id}@example.com");
        app.execute(
            "INSERT INTO users (id, email, name) VALUES ($1, $2, $3)",
            &[&next_id, &new_email, &"Fresh"],
        )
        .await
        .unwrap();
        let got = app
            .query_one("SELECT id FROM users WHERE email = $1", &[&new_email])
            .await
            .unwrap();
        assert_eq!(got.get::<_, i32>(0), next_id);
        next_id += 1;
        checked += 1;
        if running {
            during += 1;
        } else {
            break;
        }
    }
    let output = child.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{summary}");
    assert!(during > 0, "the application worked while encrypt ran");
    eprintln!("{during} read+insert+search rounds while encrypt ran");

    // After: every value an envelope, every row as it was.
    assert_eq!(
        s.sql("SELECT count(*) FROM users WHERE email NOT LIKE 'pgc1$%' OR name NOT LIKE 'pgc1$%'"),
        "0"
    );
    let rows = app
        .query(
            "SELECT id, email, name FROM users WHERE id BETWEEN 1 AND $1 ORDER BY id",
            &[&ROWS],
        )
        .await
        .unwrap();
    for row in &rows {
        let id: i32 = row.get(0);
        assert_eq!(row.get::<_, String>(1), format!("user{id}@example.com"));
        assert_eq!(
            row.get::<_, Option<String>>(2),
            (id % 7 != 0).then(|| format!("Name {id}"))
        );
    }
    assert_eq!(rows.len(), ROWS as usize);
    assert_unique_enforced(&app, "user9@example.com").await;
    assert!(summary.contains("no plaintext is left"), "{summary}");
    proxy.shutdown().await;
}
