//! Who may decrypt: a column's `readers` see plaintext, other roles get SQLSTATE 42501 or
//! the column's mask wherever one of its values appears in a result (rows in both formats,
//! RETURNING, COPY TO, error fields); `writers` limits whose values pgcloak encrypts for it;
//! the role is the session's user as Postgres reports it.

mod common;

use common::{Stack, PASSWORD};
use futures::TryStreamExt;
use tokio_postgres::{Client, SimpleQueryMessage};

const POLICY: &str = "
users:
  email: { mode: deterministic, readers: [app, support] }
  name: { mode: randomized, readers: [app], mask: '•••' }
  ssn: { mode: randomized, readers: [app], writers: [app] }
  note: randomized
";

const SCHEMA: &str = "
CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE, name text, ssn text, note text);
CREATE ROLE app LOGIN PASSWORD 's3cret-pw';
CREATE ROLE support LOGIN PASSWORD 's3cret-pw';
CREATE ROLE bob LOGIN PASSWORD 's3cret-pw';
CREATE ROLE carol LOGIN PASSWORD 's3cret-pw' IN ROLE app;
GRANT bob TO app;
GRANT ALL ON users TO app, support, bob, carol;
";

async fn stack() -> (Stack, Client) {
    let stack = Stack::start_cloaked(POLICY).await;
    stack
        .connect_direct()
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let app = as_role(&stack, "app").await;
    app.batch_execute(
        "INSERT INTO users (id, email, name, ssn, note) VALUES (1, 'ann@example.com', 'Ann Smith', '123-45-6789', 'likes tea')",
    )
    .await
    .unwrap();
    (stack, app)
}

async fn as_role(stack: &Stack, role: &str) -> Client {
    common::connect(&stack.url(role, PASSWORD, "postgres")).await
}

fn refused_42501(error: tokio_postgres::Error, role: &str, column: &str) {
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42501", "{db}");
    assert!(db.message().contains(&format!("\"{role}\"")), "{db}");
    assert!(db.message().contains(column), "{db}");
    assert!(
        !db.message().contains("ann@"),
        "the value is never in the message: {db}"
    );
}

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_reader_sees_plaintext_in_both_protocols() {
    let (stack, app) = stack().await;
    let row = app
        .query_one("SELECT email, name, ssn, note FROM users WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ann@example.com");
    assert_eq!(row.get::<_, String>(2), "123-45-6789");
    let support = as_role(&stack, "support").await;
    let rows = support
        .simple_query("SELECT email, note FROM users")
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&rows),
        [[Some("ann@example.com".into()), Some("likes tea".into())]]
    );
    // support reads email but not name, which it sees masked, nor ssn.
    let row = support
        .query_one("SELECT name FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "•••");
    let e = support
        .query("SELECT ssn FROM users", &[])
        .await
        .unwrap_err();
    refused_42501(e, "support", "public.users.ssn");
}

#[tokio::test]
async fn other_roles_are_refused_or_masked_wherever_a_value_appears() {
    let (stack, _app) = stack().await;
    let bob = as_role(&stack, "bob").await;
    // Rows: binary (extended protocol) and text (simple), through views of any shape.
    let e = bob.query("SELECT email FROM users", &[]).await.unwrap_err();
    refused_42501(e, "bob", "public.users.email");
    let e = bob
        .simple_query("SELECT (SELECT email FROM users LIMIT 1) AS e")
        .await
        .unwrap_err();
    refused_42501(e, "bob", "public.users.email");
    let row = bob
        .query_one("SELECT name, note FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "•••");
    assert_eq!(row.get::<_, String>(1), "likes tea");
    let rows = bob
        .simple_query("SELECT name FROM users UNION ALL SELECT name FROM users")
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&rows),
        [[Some("•••".into())], [Some("•••".into())]]
    );
    // The session goes on, and a transaction in which a read was refused is failed.
    assert_eq!(
        bob.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    // Searches and writes stay allowed (no `writers` on email).
    let found = bob
        .query(
            "SELECT id FROM users WHERE email = $1",
            &[&"ann@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    bob.execute(
        "INSERT INTO users (id, email, name) VALUES (2, $1, 'Bob B')",
        &[&"bob@example.com"],
    )
    .await
    .unwrap();

    // RETURNING of a column bob may not read.
    let e = bob
        .query(
            "UPDATE users SET note = 'x' WHERE id = 2 RETURNING email",
            &[],
        )
        .await
        .unwrap_err();
    refused_42501(e, "bob", "public.users.email");
    let rows = bob
        .simple_query("UPDATE users SET note = 'y' WHERE id = 2 RETURNING name")
        .await
        .unwrap();
    assert_eq!(simple_rows(&rows), [[Some("•••".into())]]);

    // COPY TO: refused for email, masked for name.
    let copy = |sql: &'static str| {
        let bob = &bob;
        async move {
            let stream = bob.copy_out(sql).await?;
            let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
            Ok::<_, tokio_postgres::Error>(String::from_utf8(chunks.concat()).unwrap())
        }
    };
    let e = copy("COPY users (id, email) TO STDOUT").await.unwrap_err();
    refused_42501(e, "bob", "public.users.email");
    let out = copy("COPY (SELECT id, name FROM users ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    assert_eq!(out, "1\t•••\n2\t•••\n");
    let out = copy("COPY users (id, name) TO STDOUT WITH (FORMAT csv)")
        .await
        .unwrap();
    assert!(out.contains("1,•••"), "{out}");

    // Error fields: the unique violation quotes the stored email.
    let e = bob
        .execute(
            "INSERT INTO users (id, email) VALUES (3, 'ann@example.com')",
            &[],
        )
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "23505");
    let detail = db.detail().unwrap_or_default();
    assert!(
        !detail.contains("pgc1$") && !detail.contains("ann@"),
        "{detail}"
    );
    assert!(detail.contains("may not read"), "{detail}");
}

#[tokio::test]
async fn writers_limit_whose_values_are_encrypted() {
    let (stack, app) = stack().await;
    let bob = as_role(&stack, "bob").await;
    for sql in [
        "INSERT INTO users (id, ssn) VALUES (5, '000-00-0000')",
        "UPDATE users SET ssn = '000-00-0000' WHERE id = 1",
    ] {
        let e = bob.simple_query(sql).await.unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "42501", "{sql}: {db}");
        assert!(
            db.message().contains("may not write public.users.ssn"),
            "{db}"
        );
        assert!(!db.message().contains("000-00"), "{db}");
    }
    let e = bob
        .execute(
            "INSERT INTO users (id, ssn) VALUES (5, $1)",
            &[&"000-00-0000"],
        )
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42501");
    let sink = bob
        .copy_in::<_, bytes::Bytes>("COPY users (id, ssn) FROM STDIN")
        .await;
    assert_eq!(
        sink.err()
            .and_then(|e| e.as_db_error().map(|d| d.code().code().to_owned())),
        Some("42501".into())
    );
    // A search by ssn is not a write; other columns are written as usual.
    let n = bob
        .query(
            "SELECT id FROM users WHERE note IS NOT NULL AND ssn IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n.len(), 1);
    bob.execute("INSERT INTO users (id, note) VALUES (6, $1)", &[&"n"])
        .await
        .unwrap();
    app.execute("UPDATE users SET ssn = $1 WHERE id = 6", &[&"111-11-1111"])
        .await
        .unwrap();
    let direct = stack.connect_direct().await;
    let stored: String = direct
        .query_one("SELECT ssn FROM users WHERE id = 6", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("pgc1$"));
    let count: i64 = direct
        .query_one("SELECT count(*) FROM users WHERE id = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[tokio::test]
async fn the_role_is_the_session_user_as_postgres_reports_it() {
    let (stack, _app) = stack().await;
    // Membership in a reader role does not make a reader, nor does SET ROLE to it.
    let carol = as_role(&stack, "carol").await;
    let e = carol
        .query("SELECT email FROM users", &[])
        .await
        .unwrap_err();
    refused_42501(e, "carol", "public.users.email");
    carol.batch_execute("SET ROLE app").await.unwrap();
    let e = carol
        .query("SELECT email FROM users", &[])
        .await
        .unwrap_err();
    refused_42501(e, "carol", "public.users.email");
    // A reader stays one after SET ROLE (pgcloak decrypts for the session's user).
    let app = as_role(&stack, "app").await;
    app.batch_execute("SET ROLE bob").await.unwrap();
    let row = app.query_one("SELECT email FROM users", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "ann@example.com");
    // SET SESSION AUTHORIZATION is followed, as the server confirms it.
    let postgres = stack.connect().await;
    let e = postgres
        .query("SELECT email FROM users", &[])
        .await
        .unwrap_err();
    refused_42501(e, "postgres", "public.users.email");
    postgres
        .batch_execute("SET SESSION AUTHORIZATION app")
        .await
        .unwrap();
    let row = postgres
        .query_one("SELECT email FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ann@example.com");
    // A rolled-back change is undone by the server, and pgcloak follows its report.
    postgres
        .batch_execute("BEGIN; SET SESSION AUTHORIZATION bob; ROLLBACK")
        .await
        .unwrap();
    let row = postgres
        .query_one("SELECT email FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ann@example.com");
    postgres
        .batch_execute("RESET SESSION AUTHORIZATION")
        .await
        .unwrap();
    let e = postgres
        .query("SELECT email FROM users", &[])
        .await
        .unwrap_err();
    refused_42501(e, "postgres", "public.users.email");
}
