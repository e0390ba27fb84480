//! Logs that cannot leak: whatever `RUST_LOG` asks for, however specific its directives for
//! sqlparser, tokio-postgres or pgcloak's own modules, a PII workload through `pgcloak serve`
//! leaves no plaintext value and no dependency record in its stderr.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use common::{pgcloak_bin, serve_process, try_connect, PASSWORD};
use futures::SinkExt as _;
use pgcloak::pgtemp::{free_port, PgTemp};

/// The distinctive plaintext values of the workload; none may appear in a log.
const LITERAL: &str = "literal-pii-7q3z@leak.example";
const PARAM: &str = "param-pii-8w4x@leak.example";
const PARSE_ERROR: &str = "parse-error-pii-9e5c@leak.example";
const COPIED: &str = "copy-pii-2r6v@leak.example";
const NAME_LITERAL: &str = "Xanthippe-Literal";
const NAME_PARAM: &str = "Yolanda-Param";
const SECRETS: [&str; 6] = [
    LITERAL,
    PARAM,
    PARSE_ERROR,
    COPIED,
    NAME_LITERAL,
    NAME_PARAM,
];

/// `RUST_LOG` values to try, and whether they enable pgcloak's own info records (the proof
/// that the log is written at all).
const VARIANTS: [(&str, bool); 8] = [
    ("trace", true),
    ("debug", true),
    ("info,sqlparser=trace", true),
    ("info,sqlparser::parser=debug", true),
    ("tokio_postgres=trace", false),
    ("pgcloak=trace", true),
    ("pgcloak::cloak=trace,pgcloak::sql=trace", false),
    ("trace,sqlparser=trace,tokio_postgres=trace", true),
];

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgcloak-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// SIGTERM, then waits for a clean exit.
async fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pgcloak did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Literals and parameters on PII columns, in both protocols; a statement that does not
/// parse, holding a literal; a COPY in and out.
async fn workload(url: &str) {
    let client = try_connect(url).await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO people (email, name) VALUES ('{LITERAL}', '{NAME_LITERAL}')"
        ))
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO people (email, name) VALUES ($1, $2)",
            &[&PARAM, &NAME_PARAM],
        )
        .await
        .unwrap();
    let rows = client
        .simple_query(&format!(
            "SELECT name FROM people WHERE email = '{LITERAL}'"
        ))
        .await
        .unwrap();
    assert!(rows.len() > 1, "a row and CommandComplete");
    let row = client
        .query_one("SELECT name FROM people WHERE email = $1", &[&PARAM])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), NAME_PARAM);
    let refused = client
        .simple_query(&format!(
            "SELECT * FROM people WHERE email = '{PARSE_ERROR}' AND AND"
        ))
        .await
        .unwrap_err();
    assert!(!refused.to_string().contains(PARSE_ERROR), "{refused}");

    let sink = client
        .copy_in("COPY people (email, name) FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let data = format!("{COPIED}\tCopy-Name\n");
    sink.send(Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
    let out = client
        .copy_out("COPY people (email) TO STDOUT")
        .await
        .unwrap();
    futures::pin_mut!(out);
    let mut copied = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut out).await {
        copied.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&copied).contains(COPIED));
}

/// What a log must not hold: a plaintext value, or any record of a dependency (text format
/// prints the target before the message, JSON as `"target"`).
fn assert_clean(log: &str, what: &str) {
    for secret in SECRETS {
        let line = log.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "{what}: {secret} in the log: {line:?}");
    }
    for dependency in ["sqlparser", "tokio_postgres", "hyper", "axum", "mio"] {
        let line = log.lines().find(|l| l.contains(dependency));
        assert!(line.is_none(), "{what}: a {dependency} record: {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rust_log_value_lets_plaintext_into_the_log() {
    let pg = PgTemp::builder()
        .superuser_password(PASSWORD)
        .start()
        .unwrap();
    let direct = try_connect(&pg.url("postgres")).await.unwrap();
    direct
        .batch_execute("CREATE TABLE people (id serial PRIMARY KEY, email text, name text)")
        .await
        .unwrap();
    let dir = scratch_dir();
    let key = Command::new(pgcloak_bin()).arg("keygen").output().unwrap();
    assert!(key.status.success());
    let key = String::from_utf8(key.stdout).unwrap();

    let json = [("trace", true)].map(|v| (v, true));
    let plain = VARIANTS.map(|v| (v, false));
    for ((rust_log, expect_own), json) in plain.into_iter().chain(json) {
        let what = format!("RUST_LOG={rust_log}{}", if json { " (json)" } else { "" });
        let port = free_port().unwrap();
        let config = dir.join("pgcloak.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{port}\"\nupstream:\n  host: 127.0.0.1\n  port: {}\n\
                 keys:\n  master_key_env: PGCLOAK_LOGS_TEST_KEY\n\
                 tables:\n  people:\n    email: deterministic\n    name: randomized\n",
                pg.port()
            ),
        )
        .unwrap();
        let log = dir.join("pgcloak.log");
        let mut env = vec![
            ("PGCLOAK_LOGS_TEST_KEY", key.trim()),
            ("RUST_LOG", rust_log),
        ];
        if json {
            env.push(("PGCLOAK_LOG_FORMAT", "json"));
        }
        let (child, url) = serve_process(&config, port, &log, &env).await;
        workload(&url).await;
        stop(child).await;

        let log = std::fs::read_to_string(&log).unwrap();
        assert_clean(&log, &what);
        if expect_own {
            // Not vacuous: pgcloak's own records are there (a session was opened and closed).
            assert!(log.contains("session closed"), "{what}: {log}");
            assert!(log.contains("pgcloak::proxy"), "{what}: {log}");
        }
        if json {
            assert!(
                log.lines().all(|l| l.starts_with('{')),
                "{what}: not JSON: {log}"
            );
        }
        // Postgres holds only ciphertext: the values above were PII on their way through.
        let clear: i64 = direct
            .query_one(
                "SELECT count(*) FROM people WHERE email NOT LIKE 'pgc1$%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(clear, 0, "{what}");
        direct.batch_execute("TRUNCATE people").await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
