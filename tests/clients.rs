//! Real non-Rust clients through the proxy: psycopg 3, SQLAlchemy 2 on psycopg 3, and
//! node-postgres. The scripts and their pinned dependencies live in tests/clients/;
//! `tests/clients/setup.sh` installs them. Without them these tests skip, unless
//! PGCLOAK_REQUIRE_CLIENTS=1 (as in CI), where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A script that has not finished by then has hung (they take a few seconds).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `program script URL` in tests/clients against a fresh Postgres behind the proxy,
/// and asserts that it exits 0 and prints `ok_line`. `installed` is the path under
/// tests/clients that setup.sh creates for this client.
async fn run_client(program: &str, installed: &str, script: &str, ok_line: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    // A relative path is under tests/clients; a bare name is looked up on PATH.
    let program = if program.contains('/') {
        dir.join(program)
    } else {
        PathBuf::from(program)
    };
    if !dir.join(installed).exists() {
        if std::env::var("PGCLOAK_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("tests/clients/{installed} is missing: run tests/clients/setup.sh");
        }
        eprintln!("skipping: run tests/clients/setup.sh to test Python/Node clients");
        return;
    }
    let stack = common::Stack::start().await;
    let child = tokio::process::Command::new(&program)
        .arg(script)
        .arg(stack.proxy_url())
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{script} stderr:\n{stderr}");
    assert!(
        output.status.success() && stdout.lines().any(|line| line == ok_line),
        "{script} failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
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
