//! Authentication is relayed to Postgres unchanged: SCRAM, md5 and trust logins work, and a
//! wrong password gets the server's own error.

mod common;

use common::{try_connect, Stack, PASSWORD};
use pgcloak::pgtemp::PgTemp;
use tokio_postgres::error::SqlState;

async fn stack_with_roles() -> Stack {
    let builder = PgTemp::builder()
        .hba_line("host all md5_user 127.0.0.1/32 md5")
        .hba_line("host all trust_user 127.0.0.1/32 trust");
    let stack = Stack::start_with(builder, |_| {}).await;
    stack
        .connect_direct()
        .await
        .batch_execute(
            "CREATE ROLE scram_user LOGIN PASSWORD 'scram-pw';
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN PASSWORD 'md5-pw';
             CREATE ROLE trust_user LOGIN;",
        )
        .await
        .unwrap();
    stack
}

async fn whoami(url: &str) -> String {
    let client = try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("login {url}: {e}"));
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_and_trust_logins_work() {
    let stack = stack_with_roles().await;
    let direct = stack.connect_direct().await;
    let row = direct
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_user'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, &str>(0).starts_with("SCRAM-SHA-256$"));

    assert_eq!(
        whoami(&stack.url("scram_user", "scram-pw", "postgres")).await,
        "scram_user"
    );
    assert_eq!(
        whoami(&stack.url("md5_user", "md5-pw", "postgres")).await,
        "md5_user"
    );
    assert_eq!(
        whoami(&stack.url("trust_user", "anything", "postgres")).await,
        "trust_user"
    );
    assert_eq!(
        whoami(&stack.url("postgres", PASSWORD, "postgres")).await,
        "postgres"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_the_servers_error() {
    let stack = stack_with_roles().await;
    for (user, method) in [("scram_user", "SCRAM"), ("md5_user", "md5")] {
        let err = try_connect(&stack.url(user, "wrong", "postgres"))
            .await
            .err();
        let err = err.unwrap_or_else(|| panic!("{method} login with a wrong password succeeded"));
        let db = err
            .as_db_error()
            .expect("a server error, not a dropped connection");
        assert_eq!(db.code(), &SqlState::INVALID_PASSWORD);
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
    // The proxy keeps serving after failed logins.
    assert_eq!(
        whoami(&stack.url("scram_user", "scram-pw", "postgres")).await,
        "scram_user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_with_scram() {
    let stack = stack_with_roles().await;
    let out = common::psql(
        &stack.url("scram_user", "scram-pw", "postgres"),
        &["-At", "-c", "SELECT current_user"],
    );
    assert_eq!(common::stdout(&out).trim(), "scram_user");
    let out = common::psql(
        &stack.url("scram_user", "nope", "postgres"),
        &["-c", "SELECT 1"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed for user \"scram_user\""),
        "{stderr}"
    );
}
