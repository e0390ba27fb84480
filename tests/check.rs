//! `pgcloak check --upstream-dsn`: the configured PII columns checked against a real database:
//! their types, the relations reaching them, and their stored values.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::Stack;
use pgcloak::cloak::Cloak;
use pgcloak::crypto::{Keyring, MasterKey, Mode};
use pgcloak::pgtemp::PgTemp;
use pgcloak::policy::Policy;
use tokio_postgres::NoTls;

const KEY_VAR: &str = "PGCLOAK_CHECK_TEST_KEY";
const HEADER: &str = "listen: \"127.0.0.1:6432\"\nupstream:\n  host: 127.0.0.1\n  port: 5432\nkeys:\n  master_key_env: PGCLOAK_CHECK_TEST_KEY\n";

fn pgcloak(args: &[&str], key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .args(args)
        .env(KEY_VAR, key)
        .output()
        .unwrap()
}

fn write_config(dir: &Path, name: &str, tables: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{HEADER}tables:\n{tables}")).unwrap();
    path
}

fn check(config: &Path, dsn: &str, key: &str) -> (Output, String, String) {
    check_with(config, dsn, key, &[])
}

fn check_with(config: &Path, dsn: &str, key: &str, extra: &[&str]) -> (Output, String, String) {
    let config = config.to_str().unwrap();
    let mut args = vec!["check", "--config", config, "--upstream-dsn", dsn];
    args.extend_from_slice(extra);
    let out = pgcloak(&args, key);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// A throwaway Postgres (superuser password `pw`) holding `schema`: the cluster, its DSN
/// and a client.
async fn database(schema: &str) -> (PgTemp, String, tokio_postgres::Client) {
    let pg = PgTemp::builder().superuser_password("pw").start().unwrap();
    let dsn = pg.url("postgres");
    let (client, connection) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(schema).await.unwrap();
    (pg, dsn, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_every_column_that_cannot_hold_ciphertext() {
    let (pg, dsn, client) = database(
        "CREATE TABLE users (id serial PRIMARY KEY, email text, bio varchar(500), \
         nickname varchar(20), age integer, code char(10), \
         greeting text DEFAULT 'hello', note text DEFAULT NULL)",
    )
    .await;

    let dir = std::env::temp_dir().join(format!("pgcloak-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keygen = pgcloak(&["keygen"], "");
    assert!(keygen.status.success());
    let key = String::from_utf8(keygen.stdout).unwrap().trim().to_owned();

    let bad = write_config(
        &dir,
        "bad.yaml",
        "  users:\n    email: deterministic\n    bio: randomized\n    nickname: deterministic\n    \
         age: randomized\n    code: deterministic\n    phone: randomized\n    Email: randomized\n    \
         greeting: randomized\n    note: randomized\n  \
         orders:\n    card: randomized\n",
    );
    let (out, stdout, stderr) = check(&bad, &dsn, &key);
    println!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(!out.status.success());
    let port = pg.port();
    assert!(
        stderr.contains(&format!(
            "7 problem(s) with the PII columns in 127.0.0.1:{port}:"
        )),
        "{stderr}"
    );
    let expected = [
        "public.users.nickname: character varying(20) is too short",
        "ALTER TABLE public.users ALTER COLUMN nickname TYPE text",
        "public.users.age: integer cannot hold ciphertext",
        "ALTER TABLE public.users ALTER COLUMN age TYPE text",
        "public.users.code: character(10) pads values with spaces",
        "ALTER TABLE public.users ALTER COLUMN code TYPE text",
        "public.users.phone: column does not exist: ALTER TABLE public.users ADD COLUMN phone text",
        "public.users.Email: column does not exist, but email does; Postgres folds unquoted names",
        "public.orders.card: table public.orders does not exist",
        "public.users.greeting: has a DEFAULT, which Postgres stores in clear",
        "ALTER TABLE public.users ALTER COLUMN greeting DROP DEFAULT",
    ];
    for text in expected {
        assert!(stderr.contains(text), "missing {text:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("public.users.email:"), "{stderr}");
    assert!(!stderr.contains("public.users.bio"), "{stderr}");
    assert!(
        !stderr.contains(":pw@") && !stderr.contains("pw"),
        "{stderr}"
    );
    assert!(stdout.contains("public.users.email: text, deterministic — ok"));
    assert!(stdout.contains("public.users.bio: character varying(500), randomized — ok"));
    assert!(stdout.contains("public.users.note: text, randomized — ok"));
    assert!(!stderr.contains("hello"), "{stderr}");

    let good = write_config(
        &dir,
        "good.yaml",
        "  users:\n    email: deterministic\n    bio: randomized\n",
    );
    let (out, stdout, stderr) = check(&good, &dsn, &key);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("public.users.email: text, deterministic — ok"));
    assert!(stdout.contains("public.users.bio: character varying(500), randomized — ok"));
    assert!(stdout.contains("good.yaml: OK"), "{stdout}");

    // Without --upstream-dsn, check still only validates the file and loads the key.
    let out = pgcloak(&["check", "--config", bad.to_str().unwrap()], &key);
    assert!(out.status.success());

    drop(client);
    let wrong_port = format!(
        "postgresql://postgres:hunter2@127.0.0.1:{}/postgres",
        port + 1
    );
    let (out, _, stderr) = check(&good, &wrong_port, &key);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot connect to 127.0.0.1:{}", port + 1)),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Relations that reach PII columns without pgcloak seeing the PII table's name — views,
/// partitions, inheritance children — are problems until the policy names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_views_and_children_outside_the_policy() {
    let (_pg, dsn, _client) = database(
        "CREATE TABLE users (id int, email text, plan text);
         CREATE VIEW user_emails AS SELECT id, email AS address FROM users;
         CREATE VIEW email_counts AS SELECT email, count(*) FROM users GROUP BY email;
         CREATE VIEW plans AS SELECT id, plan FROM users;
         CREATE TABLE events (at date, email text) PARTITION BY RANGE (at);
         CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         CREATE TABLE old_users (legacy bool) INHERITS (users);
         CREATE TABLE everyone (id int, email text, plan text);
         ALTER TABLE users INHERIT everyone;",
    )
    .await;
    let dir = std::env::temp_dir().join(format!("pgcloak-check-derived-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = String::from_utf8(pgcloak(&["keygen"], "").stdout)
        .unwrap()
        .trim()
        .to_owned();
    let tables = "  users:\n    email: deterministic\n  events:\n    email: deterministic\n";
    let config = write_config(&dir, "derived.yaml", tables);
    let (out, stdout, stderr) = check(&config, &dsn, &key);
    println!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(!out.status.success());
    assert!(stderr.contains("5 problem(s)"), "{stderr}");
    for text in [
        "public.user_emails: a view showing public.users.email, not in the policy",
        "public.email_counts: a view showing public.users.email, not in the policy",
        "public.events_2026: a partition or child table of the table holding public.events.email",
        "public.old_users: a partition or child table of the table holding public.users.email",
        "public.everyone: a parent (inherited or partitioned) of the table holding public.users.email",
    ] {
        assert!(stderr.contains(text), "missing {text:?} in:\n{stderr}");
    }
    assert!(!stdout.contains("public.plans") && !stderr.contains("public.plans"));

    // Named in the policy (sharing the keys of the columns they reach), they are fine.
    let tables = format!(
        "{tables}  user_emails:\n    address: {{ mode: deterministic, same_key_as: users.email }}\n  \
         events_2026:\n    email: {{ mode: deterministic, same_key_as: events.email }}\n  \
         old_users:\n    email: {{ mode: deterministic, same_key_as: users.email }}\n  \
         email_counts:\n    email: {{ mode: deterministic, same_key_as: users.email }}\n  \
         everyone:\n    email: {{ mode: deterministic, same_key_as: users.email }}\n"
    );
    let config = write_config(&dir, "derived-ok.yaml", &tables);
    let (out, stdout, stderr) = check(&config, &dsn, &key);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The number in `text` right after `prefix`.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Values written through pgcloak pass; plaintext, envelopes under another master key and
/// envelopes copied from another column, written directly, are counted per column and fail
/// the check, which never prints them. `--sample N` reads a random sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_counts_values_that_are_not_envelopes_of_their_column() {
    const TABLES: &str = "people:\n  email: deterministic\n  name: randomized\n";
    let master = MasterKey::generate();
    let key = master.to_base64();
    let policy = Policy::from_yaml(&serde_yaml::from_str(TABLES).unwrap()).unwrap();
    let cloak = Arc::new(Cloak::with_key(policy, &master));
    let stack = Stack::start_full(PgTemp::builder(), |_| {}, Some(cloak)).await;
    let dsn = stack.pg.url("postgres");
    let direct = stack.connect_direct().await;
    direct
        .batch_execute("CREATE TABLE people (id serial PRIMARY KEY, email text, name text)")
        .await
        .unwrap();
    let rows: Vec<String> = (0..50)
        .map(|i| format!("('person{i}@example.com', 'Name {i}')"))
        .collect();
    let proxied = stack.connect().await;
    let insert = format!(
        "INSERT INTO people (email, name) VALUES {}, (NULL, NULL)",
        rows.join(", ")
    );
    proxied.batch_execute(&insert).await.unwrap();

    let dir = std::env::temp_dir().join(format!("pgcloak-check-values-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(
        &dir,
        "values.yaml",
        &TABLES
            .replace("people:", "  people:")
            .replace("\n  ", "\n    "),
    );
    let (out, stdout, stderr) = check(&config, &dsn, &key);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for column in ["email", "name"] {
        let line =
            format!("public.people.{column}: 50 value(s), all envelopes of this column — ok");
        assert!(stdout.contains(&line), "{stdout}");
    }

    // A sample of a larger (analysed) table reads at most N values.
    direct
        .batch_execute(
            "INSERT INTO people (email) SELECT p.email FROM people p, generate_series(1, 40) \
             WHERE p.email IS NOT NULL; ANALYZE people",
        )
        .await
        .unwrap();
    let (out, stdout, stderr) = check_with(&config, &dsn, &key, &["--sample", "100"]);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let sampled = number_after(&stdout, "public.people.email: a sample of ").unwrap();
    assert!((1..=100).contains(&sampled), "{stdout}");
    assert!(
        stdout.contains("all envelopes of this column — ok"),
        "{stdout}"
    );

    // Written directly: 3 in clear, 1 under another master key, 1 copied from `name`.
    let other = Keyring::new(
        &MasterKey::generate(),
        &[("public.people.email".into(), Mode::Deterministic)],
    );
    let foreign = other
        .encrypt("public.people.email", b"foreign@example.com")
        .unwrap();
    direct
        .execute(
            "INSERT INTO people (email) VALUES ('clear1@example.com'), ('clear2@example.com'), \
             ('pgcloak-looks-like@example.com'), ($1)",
            &[&foreign],
        )
        .await
        .unwrap();
    direct
        .batch_execute("UPDATE people SET email = name WHERE id = 1")
        .await
        .unwrap();
    let total = 50 + 50 * 40 + 4;
    for extra in [&[][..], &["--sample", "100000"][..]] {
        let (out, stdout, stderr) = check_with(&config, &dsn, &key, extra);
        println!("--- stdout\n{stdout}--- stderr\n{stderr}");
        assert!(!out.status.success());
        assert!(
            stderr.contains("1 problem(s) with the PII columns"),
            "{stderr}"
        );
        let read = match extra.is_empty() {
            true => format!("{total} value(s)"),
            false => format!("a sample of {total} value(s)"),
        };
        let line = format!("public.people.email: 5 of {read} are not envelopes of this column: ");
        assert!(stderr.contains(&line), "{stderr}");
        for text in [
            "3 stored in clear",
            "WHERE email NOT LIKE 'pgc1$%'",
            "1 written under a key pgcloak does not hold",
            "1 copied from another PII column",
        ] {
            assert!(stderr.contains(text), "missing {text:?} in:\n{stderr}");
        }
        assert!(!stderr.contains("damaged"), "{stderr}");
        assert!(stdout.contains("public.people.name: "), "{stdout}");
        for value in ["clear1", "clear2", "looks-like", "foreign", &foreign[16..]] {
            assert!(
                !stdout.contains(value) && !stderr.contains(value),
                "{value} printed"
            );
        }
    }

    // --sample needs --upstream-dsn and a positive N.
    let config_arg = config.to_str().unwrap();
    let out = pgcloak(&["check", "--config", config_arg, "--sample", "5"], &key);
    assert!(!out.status.success());
    let (out, _, stderr) = check_with(&config, &dsn, &key, &["--sample", "0"]);
    assert!(
        !out.status.success() && stderr.contains("--sample"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
