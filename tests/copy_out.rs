//! COPY ... TO STDOUT of a PII table through the proxy: envelopes decrypted in every format
//! and quoting, and a PII field that holds plaintext (written directly) or an envelope
//! pgcloak cannot decrypt fails the COPY (XX001) instead of being returned as it is; the
//! session goes on.

mod common;

use std::sync::Arc;

use common::wire::{error_codes, Wire};
use common::Stack;
use futures::TryStreamExt;
use pgcloak::cloak::Cloak;
use pgcloak::crypto::MasterKey;
use pgcloak::pgtemp::PgTemp;
use pgcloak::policy::Policy;
use tokio_postgres::Client;

const POLICY: &str = "
users:
  email: deterministic
  first_name: randomized
";

// `gone` is dropped and `total` generated: neither is in COPY's default column list, so
// first_name's field position is not its attnum.
const SCHEMA: &str = "
CREATE TABLE users (id int PRIMARY KEY, gone text, email text, n int,
                    total int GENERATED ALWAYS AS (n * 2) STORED, first_name text);
ALTER TABLE users DROP COLUMN gone;
";

async fn stack() -> (Stack, Client, Client) {
    let policy = Policy::from_yaml(&serde_yaml::from_str(POLICY).unwrap()).unwrap();
    let cloak = Arc::new(Cloak::with_key(policy, &MasterKey::generate()));
    let builder = PgTemp::builder().hba_line("host all all 127.0.0.1/32 trust");
    let stack = Stack::start_full(builder, |_| {}, Some(cloak)).await;
    let direct = stack.connect_direct().await;
    direct.batch_execute(SCHEMA).await.unwrap();
    let client = stack.connect().await;
    client
        .batch_execute(
            "INSERT INTO users (id, email, n, first_name) VALUES
               (1, 'ann@example.com', 1, 'Ann, \"the\" first'),
               (2, 'bob@example.com', 2, NULL),
               (3, NULL, 3, 'tab\there')",
        )
        .await
        .unwrap();
    (stack, direct, client)
}

async fn copy_out(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let stream = client.copy_out(sql).await?;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
    Ok(chunks.iter().map(|c| String::from_utf8_lossy(c)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_decrypts_every_format() {
    let (_stack, _direct, client) = stack().await;
    let text = copy_out(&client, "COPY users TO STDOUT").await.unwrap();
    assert_eq!(
        text,
        "1\tann@example.com\t1\tAnn, \"the\" first\n2\tbob@example.com\t2\t\\N\n3\t\\N\t3\ttab\\there\n"
    );
    let csv = copy_out(
        &client,
        "COPY users (first_name, id) TO STDOUT (FORMAT csv, HEADER, FORCE_QUOTE (first_name, id))",
    )
    .await
    .unwrap();
    assert_eq!(
        csv,
        "first_name,id\n\"Ann, \"\"the\"\" first\",\"1\"\n,\"2\"\n\"tab\there\",\"3\"\n"
    );
    let listed = copy_out(&client, "COPY users (email) TO STDOUT WITH (DELIMITER '|')")
        .await
        .unwrap();
    assert_eq!(listed, "ann@example.com\nbob@example.com\n\\N\n");
    let query = copy_out(
        &client,
        "COPY (SELECT email FROM users WHERE id = 1) TO STDOUT",
    )
    .await
    .unwrap();
    assert_eq!(query, "ann@example.com\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_in_a_pii_field_fails_the_copy_not_the_session() {
    let (_stack, direct, client) = stack().await;
    direct
        .execute(
            "INSERT INTO users (id, email, n, first_name) VALUES (9, 'pgc1-lookalike', 9, 'clear name')",
            &[],
        )
        .await
        .unwrap();
    for sql in [
        "COPY users TO STDOUT",
        "COPY public.users (id, first_name) TO STDOUT",
        "COPY users (email) TO STDOUT (FORMAT csv)",
        "COPY users TO STDOUT (FORMAT csv, FORCE_QUOTE (first_name))",
    ] {
        let err = copy_out(&client, sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "XX001", "{sql}");
        assert!(
            db.message().contains("not encrypted"),
            "{sql}: {}",
            db.message()
        );
        assert!(
            !db.message().contains("clear name") && !db.message().contains("lookalike"),
            "{}",
            db.message()
        );
    }
    // Plain fields of that row are fine, and the session goes on.
    let plain = copy_out(&client, "COPY users (id, n) TO STDOUT")
        .await
        .unwrap();
    assert!(plain.contains("9\t9\n"), "{plain}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_with_another_encoding_is_refused() {
    let (_stack, _direct, client) = stack().await;
    let err = copy_out(&client, "COPY users TO STDOUT (ENCODING 'LATIN1')")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "0A000");
    assert!(db.message().contains("ENCODING"), "{}", db.message());
    let ok = copy_out(&client, "COPY users (id) TO STDOUT (ENCODING 'UTF8')").await;
    assert!(ok.is_ok(), "{ok:?}");
}

/// The COPY rows of an answer, as text.
fn copy_rows(answer: &[common::wire::Message]) -> Vec<String> {
    (answer.iter())
        .filter(|m| m.tag == b'd')
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_copy_is_decrypted_by_its_own_request() {
    let (stack, _direct, client) = stack().await;
    let mut w = Wire::connect(stack.addr(), "postgres", "postgres").await;
    // Pipelined in one write: a plain COPY, then one of users. Each CopyOutResponse belongs
    // to its own request: the second COPY's rows are decrypted, the first's untouched.
    let answer = w
        .query("COPY (SELECT 'pgc1-like' AS x) TO STDOUT")
        .query("COPY users (id, email) TO STDOUT")
        .round_trip(2)
        .await;
    assert_eq!(
        copy_rows(&answer),
        [
            "pgc1-like\n",
            "1\tann@example.com\n",
            "2\tbob@example.com\n",
            "3\t\\N\n"
        ]
    );
    // A COPY of users that the server fails leaves nothing behind for the next COPY.
    let answer = w
        .query("COPY users (no_such_column) TO STDOUT")
        .query("COPY (SELECT 'plain text') TO STDOUT")
        .round_trip(2)
        .await;
    assert_eq!(error_codes(&answer), ["42703"]);
    assert_eq!(copy_rows(&answer), ["plain text\n"]);
    // Extended protocol: one prepared COPY executed twice, both decrypted.
    let answer = w
        .parse("c", "COPY users (email) TO STDOUT")
        .bind("", "c", &[])
        .execute("")
        .bind("", "c", &[])
        .execute("")
        .sync()
        .round_trip(1)
        .await;
    let rows = copy_rows(&answer);
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(rows.iter().all(|r| !r.contains("pgc1$")), "{rows:?}");
    assert_eq!(rows.iter().filter(|r| *r == "ann@example.com\n").count(), 2);
    // And the session is still in step for a driver.
    let text = copy_out(&client, "COPY users (first_name) TO STDOUT")
        .await
        .unwrap();
    assert!(text.starts_with("Ann, \"the\" first\n"), "{text}");
}
