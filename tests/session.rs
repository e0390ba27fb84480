//! The session's state follows what the server did, through the proxy with real Postgres:
//! rejected and skipped requests never change what pgcloak encrypts, FunctionCall and DDL
//! keep the catalog right, a bad COPY row fails the COPY not the session, values pgcloak
//! must not return fail the query, and server messages never carry ciphertext.

mod common;

use std::sync::Arc;

use common::wire::{error_codes, tags, Wire};
use common::Stack;
use futures::SinkExt;
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

const SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, first_name text, nick text);
";

fn cloak(key: &MasterKey) -> Arc<Cloak> {
    let policy = Policy::from_yaml(&serde_yaml::from_str(POLICY).unwrap()).unwrap();
    Arc::new(Cloak::with_key(policy, key))
}

/// Postgres trusting loopback (for the raw client) behind a cloaked proxy.
async fn stack_with(key: &MasterKey) -> (Stack, Client) {
    let builder = PgTemp::builder().hba_line("host all all 127.0.0.1/32 trust");
    let stack = Stack::start_full(builder, |_| {}, Some(cloak(key))).await;
    let direct = stack.connect_direct().await;
    direct.batch_execute(SCHEMA).await.unwrap();
    (stack, direct)
}

async fn stack() -> (Stack, Client) {
    stack_with(&MasterKey::generate()).await
}

async fn wire(stack: &Stack) -> Wire {
    Wire::connect(stack.addr(), "postgres", "postgres").await
}

/// Every email stored, read directly: each must be an envelope or NULL.
async fn assert_all_encrypted(direct: &Client) {
    for row in direct
        .query("SELECT email, first_name FROM users", &[])
        .await
        .unwrap()
    {
        for i in 0..2 {
            let value: Option<String> = row.get(i);
            if let Some(value) = value {
                assert!(value.starts_with("pgc1$"), "stored in clear: {value}");
            }
        }
    }
}

/// Inserts a row through pgcloak (`writer`), then copies its first_name ciphertext into
/// email directly in Postgres.
async fn copy_first_name_into_email(writer: &Client, direct: &Client) {
    writer
        .execute(
            "INSERT INTO users (email, first_name) VALUES ($1, $2)",
            &[&"after@example.com", &"Ann"],
        )
        .await
        .unwrap();
    direct
        .execute("UPDATE users SET email = first_name", &[])
        .await
        .unwrap();
}

const INSERT: &str = "INSERT INTO users (email) VALUES ($1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_reparse_and_skipped_close_keep_encrypting() {
    let (stack, direct) = stack().await;
    let mut w = wire(&stack).await;
    let answer = w.parse("s1", INSERT).sync().round_trip(1).await;
    assert_eq!(tags(&answer), "1Z");

    // 42P05: s1 stays the INSERT, whose parameter must still be encrypted.
    w.parse("s1", "SELECT $1::text").sync();
    w.bind("", "s1", &[Some("reparse@example.com")])
        .execute("")
        .sync();
    let answer = w.round_trip(2).await;
    assert_eq!(error_codes(&answer), ["42P05"]);

    // A Close after an error in its batch is skipped: s1 still exists.
    w.parse("bad", "SELEC 1").close(b'S', "s1").sync();
    w.bind("", "s1", &[Some("close@example.com")])
        .execute("")
        .sync();
    let answer = w.round_trip(2).await;
    assert_eq!(error_codes(&answer), ["42601"]);
    assert_eq!(
        direct
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        2
    );
    assert_all_encrypted(&direct).await;

    // Pipelined before any answer, re-using the name after an unanswered Close: pgcloak
    // cannot know which statement s1 will be, and refuses the Bind.
    w.parse("bad", "SELEC 1").close(b'S', "s1").sync();
    w.parse("s1", "SELECT $1::text").sync();
    w.bind("", "s1", &[Some("ambiguous@example.com")])
        .execute("")
        .sync();
    let answer = w.round_trip(3).await;
    let codes = error_codes(&answer);
    assert!(codes.contains(&"0A000".to_owned()), "{codes:?}");
    assert_all_encrypted(&direct).await;
    let answer = w
        .query("SELECT email FROM users ORDER BY id")
        .round_trip(1)
        .await;
    let emails: Vec<_> = answer
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.fields()[0].clone().unwrap())
        .collect();
    assert_eq!(emails, ["reparse@example.com", "close@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statement_skipped_after_an_error_keeps_encrypting() {
    let (stack, direct) = stack().await;
    let mut w = wire(&stack).await;
    w.parse("", INSERT).sync();
    // The re-Parse of the unnamed statement is skipped (the Execute before it fails).
    w.execute("nonexistent").parse("", "SELECT $1::text").sync();
    w.bind("", "", &[Some("unnamed@example.com")])
        .execute("")
        .sync();
    w.round_trip(3).await;
    assert_all_encrypted(&direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_in_the_first_write_gets_its_own_answer() {
    let (stack, direct) = stack().await;
    let oid: u32 = direct
        .query_one("SELECT 'int4pl(integer,integer)'::regprocedure::oid", &[])
        .await
        .unwrap()
        .get(0);
    direct
        .execute("INSERT INTO users (nick) VALUES ('plain-nick')", &[])
        .await
        .unwrap();
    let mut w = wire(&stack).await;
    w.function_call(oid, &["2", "3"])
        .query("SELECT nick, email FROM users");
    let answer = w.round_trip(2).await;
    assert_eq!(
        tags(&answer),
        "VZTDCZ",
        "no catalog rows reach the client: {:?}",
        answer.iter().find_map(|m| m.field(b'M'))
    );
    assert_eq!(&answer[0].body[4..], b"5");
    assert_eq!(answer[3].fields()[0].as_deref(), Some("plain-nick"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_in_the_session_refreshes_the_column_map() {
    let (stack, direct) = stack().await;
    let client = stack.connect().await;
    client
        .execute(INSERT, &[&"before@example.com"])
        .await
        .unwrap();
    client
        .batch_execute(
            "DROP TABLE users; CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, first_name text, nick text)",
        )
        .await
        .unwrap();
    // Ciphertext of first_name copied into email: it must not decrypt as email.
    copy_first_name_into_email(&client, &direct).await;
    let err = client
        .query("SELECT email FROM users", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("XX001"), "{err}");
    // The session goes on.
    client.simple_query("SELECT 1").await.unwrap();
}

/// The error of a query that returned a value pgcloak must not return.
async fn refused(client: &Client, sql: &str) -> String {
    let err = client.query(sql, &[]).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "XX001", "{}", db.message());
    db.message().to_owned()
}

const RECREATE: &str = "DROP TABLE users; CREATE TABLE users (id serial PRIMARY KEY, nick text, email text UNIQUE, first_name text)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_committed_by_another_session_refreshes_every_map() {
    let (stack, direct) = stack().await;
    let reader = stack.connect().await;
    reader
        .execute(INSERT, &[&"before@example.com"])
        .await
        .unwrap();
    reader.query("SELECT email FROM users", &[]).await.unwrap();
    // Another session re-creates the table (new OID, other attribute numbers), in an
    // explicit transaction whose commit comes in a later round trip.
    let migrator = stack.connect().await;
    migrator.batch_execute("BEGIN").await.unwrap();
    migrator.batch_execute(RECREATE).await.unwrap();
    migrator.batch_execute("COMMIT").await.unwrap();
    // A ciphertext copied from another column, then a value written in clear: the
    // reader's map must know the new table to refuse them.
    copy_first_name_into_email(&migrator, &direct).await;
    refused(&reader, "SELECT email FROM users").await;
    direct
        .execute("UPDATE users SET email = 'direct@example.com'", &[])
        .await
        .unwrap();
    let message = refused(&reader, "SELECT id, email FROM users").await;
    assert!(message.contains("not encrypted"), "{message}");
    reader.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_map_again_keeps_the_clients_unnamed_statement() {
    let (stack, direct) = stack().await;
    let mut w = wire(&stack).await;
    let answer = w.parse("", INSERT).sync().round_trip(1).await;
    assert_eq!(tags(&answer), "1Z");
    // Another session's DDL makes this session read its map again, in front of its next
    // PII statement: that must not drop the unnamed statement the client still uses.
    let other = stack.connect().await;
    other
        .batch_execute("CREATE TABLE unrelated (x int)")
        .await
        .unwrap();
    w.parse("s1", "SELECT email FROM users WHERE email = $1")
        .sync();
    w.bind("", "", &[Some("kept@example.com")])
        .execute("")
        .sync();
    let answer = w.round_trip(2).await;
    assert_eq!(tags(&answer), "1Z2CZ", "{:?}", error_codes(&answer));
    assert_all_encrypted(&direct).await;
    let stored: i64 = direct
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_sent_to_postgres_directly_is_noticed_within_catalog_max_age() {
    let key = MasterKey::generate();
    let policy = Policy::from_yaml(&serde_yaml::from_str(POLICY).unwrap()).unwrap();
    let cloak =
        Cloak::with_key(policy, &key).with_catalog_max_age(std::time::Duration::from_secs(1));
    let builder = PgTemp::builder().hba_line("host all all 127.0.0.1/32 trust");
    let stack = Stack::start_full(builder, |_| {}, Some(Arc::new(cloak))).await;
    let direct = stack.connect_direct().await;
    direct.batch_execute(SCHEMA).await.unwrap();
    let reader = stack.connect().await;
    reader.query("SELECT email FROM users", &[]).await.unwrap();
    direct.batch_execute(RECREATE).await.unwrap();
    direct
        .execute(
            "INSERT INTO users (email) VALUES ('direct@example.com')",
            &[],
        )
        .await
        .unwrap();
    // Not a timing assertion: waiting past the maximum age makes the next PII statement
    // read the map again, whenever it runs.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let message = refused(&reader, "SELECT email FROM users").await;
    assert!(message.contains("not encrypted"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_copy_row_fails_the_copy_not_the_session() {
    let (stack, direct) = stack().await;
    let client = stack.connect().await;
    let sink = client
        .copy_in("COPY users (email, first_name) FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"ok@example.com\tAnn\ntoo@example.com\tmany\tfields\nlater@example.com\tBob\n",
    ))
    .await
    .unwrap();
    let err = sink.finish().await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "22P04", "{err}");
    assert!(db.message().contains("fields"), "{}", db.message());
    assert!(!db.message().contains("too@example"), "{}", db.message());
    // Nothing was stored, and the session is fine.
    let n: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    client
        .execute(INSERT, &[&"next@example.com"])
        .await
        .unwrap();
    assert_all_encrypted(&direct).await;

    // Same through the raw protocol, the bad row in a later CopyData than the good one.
    let mut w = wire(&stack).await;
    let answer = w.query("COPY users (email) FROM STDIN").round_trip(0).await;
    assert!(answer.is_empty());
    assert_eq!(w.read().await.tag, b'G');
    w.copy_data("raw-ok@example.com\n")
        .copy_data("raw-bad@example.com\textra\n")
        .copy_data("raw-more@example.com\n")
        .copy_done();
    let answer = w.round_trip(1).await;
    assert_eq!(error_codes(&answer), ["22P04"]);
    let answer = w.query("SELECT 1").round_trip(1).await;
    assert_eq!(tags(&answer), "TDCZ");
    assert_all_encrypted(&direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_pgcloak_must_not_return_fail_the_query() {
    let key = MasterKey::generate();
    let (stack, direct) = stack_with(&key).await;
    // A second pgcloak with another master key writes into the same database.
    let other = pgcloak::proxy::Proxy::bind(common::settings_for(&stack.pg))
        .await
        .unwrap()
        .with_cloak(cloak(&MasterKey::generate()))
        .spawn()
        .unwrap();
    let other_client = common::connect(&format!(
        "postgresql://postgres:{}@{}/postgres",
        common::PASSWORD,
        other.addr()
    ))
    .await;
    other_client
        .execute(INSERT, &[&"foreign@example.com"])
        .await
        .unwrap();
    let client = stack.connect().await;
    for sql in [
        "SELECT email FROM users",
        "SELECT lower(nick), email FROM users",
    ] {
        let err = client.query(sql, &[]).await.unwrap_err();
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "XX001");
        assert!(
            db.message().contains("public.users.email"),
            "{}",
            db.message()
        );
        assert!(db.message().contains("key"), "{}", db.message());
    }
    // Without a known source (an expression) the envelope is not returned either.
    let err = client.simple_query("SELECT email || '' FROM users").await;
    assert!(err.is_err(), "ciphertext returned for an expression");
    direct.execute("DELETE FROM users", &[]).await.unwrap();

    // Plaintext in a PII column (written directly): refused, not returned as is.
    direct
        .execute(
            "INSERT INTO users (email) VALUES ('direct@example.com')",
            &[],
        )
        .await
        .unwrap();
    let err = client
        .query("SELECT id, email FROM users", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "XX001");
    assert!(db.message().contains("not encrypted"), "{}", db.message());
    assert!(!db.message().contains("direct@"), "{}", db.message());
    // In the simple protocol too, and the session goes on.
    assert!(client
        .simple_query("SELECT email FROM users")
        .await
        .is_err());
    client.simple_query("SELECT 1").await.unwrap();
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_quote_plaintext_not_ciphertext() {
    let (stack, _direct) = stack().await;
    let client = stack.connect().await;
    client.execute(INSERT, &[&"dup@example.com"]).await.unwrap();
    for attempt in [
        client.execute(INSERT, &[&"dup@example.com"]).await,
        client
            .execute("INSERT INTO users (email) VALUES ('dup@example.com')", &[])
            .await,
    ] {
        let err = attempt.unwrap_err();
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "23505");
        let detail = db.detail().unwrap_or_default();
        assert!(detail.contains("(email)=(dup@example.com)"), "{detail}");
        assert!(!format!("{db:?}").contains("pgc1$"), "{db:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_literals_follow_standard_conforming_strings() {
    let (stack, direct) = stack().await;
    let client = stack.connect().await;
    // On (the default) and nothing in flight: the backslash is a character.
    client
        .simple_query(r"INSERT INTO users (email) VALUES ('back\slash@example.com')")
        .await
        .unwrap();
    client
        .batch_execute("SET standard_conforming_strings = off")
        .await
        .unwrap();
    let err = client
        .simple_query(r"INSERT INTO users (email) VALUES ('x\'); --')")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "0A000");
    assert!(
        db.message().contains("standard_conforming_strings"),
        "{}",
        db.message()
    );
    // Without a backslash in an ordinary literal both readings agree: accepted.
    client
        .simple_query(r"INSERT INTO users (email) VALUES (E'tab\there@example.com')")
        .await
        .unwrap();
    // Turned off and used in one string: refused too.
    client
        .batch_execute("SET standard_conforming_strings = on")
        .await
        .unwrap();
    let err = client
        .simple_query(
            r"SET standard_conforming_strings = off; INSERT INTO users (email) VALUES ('a\'); --')",
        )
        .await;
    assert!(err.is_err());
    assert_all_encrypted(&direct).await;
    let emails: Vec<String> = client
        .query("SELECT email FROM users ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(emails, [r"back\slash@example.com", "tab\there@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_over_64_kb_are_analysed_off_the_session_thread() {
    let (stack, direct) = stack().await;
    let client = stack.connect().await;
    client
        .execute(INSERT, &[&"needle@example.com"])
        .await
        .unwrap();
    let mut list: Vec<String> = (0..4_000)
        .map(|i| format!("'hay{i}@example.com'"))
        .collect();
    list.push("'needle@example.com'".into());
    let sql = format!(
        "SELECT count(*) FROM users WHERE email IN ({})",
        list.join(", ")
    );
    assert!(sql.len() > 64 * 1024);
    let other = stack.connect().await;
    let (big, small) = tokio::join!(client.simple_query(&sql), other.simple_query("SELECT 1"));
    small.unwrap();
    let rows = big.unwrap();
    let count = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("1"));
    // And as a Parse.
    let n: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    assert_all_encrypted(&direct).await;
}
