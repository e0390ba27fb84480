//! PII columns through the proxy: every write reaches Postgres as ciphertext, every read
//! through pgcloak comes back as plaintext, and what cannot work on ciphertext is refused.
//! Each test checks both sides: through the proxy, and directly in Postgres.

mod common;

use bytes::Bytes;
use common::Stack;
use futures::{SinkExt, TryStreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

const POLICY: &str = "
users:
  email: deterministic
  first_name: randomized
  last_name: { mode: randomized }
billing.cards:
  holder: randomized
";

const SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, first_name text, last_name text, nick text);
CREATE SCHEMA billing;
CREATE TABLE billing.cards (id serial PRIMARY KEY, user_id int, holder text);
CREATE VIEW user_names AS SELECT id, first_name, email FROM users;
";

async fn stack() -> (Stack, Client, Client) {
    let stack = Stack::start_cloaked(POLICY).await;
    let direct = stack.connect_direct().await;
    direct.batch_execute(SCHEMA).await.unwrap();
    let client = stack.connect().await;
    (stack, client, direct)
}

/// The stored value of `column` for user `id`, read directly from Postgres.
async fn stored(direct: &Client, column: &str, id: i32) -> Option<String> {
    let sql = format!("SELECT {column} FROM users WHERE id = $1");
    direct.query_one(&sql, &[&id]).await.unwrap().get(0)
}

/// Asserts a stored value is an envelope that does not contain the plaintext. Short
/// plaintexts ("Al") turn up in random base64 by chance (CI once saw `...rnHAlltm...`), so
/// the substring check is made for plaintexts of 6 bytes or more only; for every length the
/// value must be an envelope, which pgcloak writes only by encrypting.
fn assert_ciphertext(stored: Option<String>, plaintext: &str) {
    let stored = stored.expect("a stored value, not NULL");
    assert!(stored.starts_with("pgc1$"), "not an envelope: {stored}");
    assert!(
        plaintext.len() < 6 || !stored.contains(plaintext),
        "plaintext visible in {stored}"
    );
}

fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_writes_are_encrypted_and_read_back() {
    let (_stack, client, direct) = stack().await;
    client
        .batch_execute(
            "INSERT INTO users (email, first_name, last_name, nick) VALUES ('ann@example.com', 'Ann', E'O\\'Neil', 'annie'), ('bob@example.com', 'Bob', NULL, 'bobby');
             UPDATE users SET last_name = 'Builder' WHERE email = 'bob@example.com';",
        )
        .await
        .unwrap();
    assert_ciphertext(stored(&direct, "email", 1).await, "ann@example.com");
    assert_ciphertext(stored(&direct, "first_name", 1).await, "Ann");
    assert_ciphertext(stored(&direct, "last_name", 2).await, "Builder");
    assert_eq!(stored(&direct, "nick", 1).await.as_deref(), Some("annie"));

    let got = rows(
        &client
            .simple_query("SELECT email, first_name, last_name, nick FROM users ORDER BY id")
            .await
            .unwrap(),
    );
    assert_eq!(
        got,
        [
            vec![
                Some("ann@example.com".into()),
                Some("Ann".into()),
                Some("O'Neil".into()),
                Some("annie".into())
            ],
            vec![
                Some("bob@example.com".into()),
                Some("Bob".into()),
                Some("Builder".into()),
                Some("bobby".into())
            ],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_parameters_are_encrypted() {
    let (_stack, client, direct) = stack().await;
    let insert = client
        .prepare("INSERT INTO users (email, first_name, last_name) VALUES ($1, $2, $3) RETURNING id, email, first_name")
        .await
        .unwrap();
    for (i, name) in ["Cleo", "Dan", "Éva"].iter().enumerate() {
        let email = format!("{}@example.com", name.to_lowercase());
        let row = client
            .query_one(&insert, &[&email, name, &None::<String>])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i as i32 + 1);
        assert_eq!(row.get::<_, &str>(1), email);
        assert_eq!(row.get::<_, &str>(2), *name);
    }
    assert_ciphertext(stored(&direct, "first_name", 3).await, "Éva");
    assert_eq!(
        stored(&direct, "last_name", 3).await,
        None,
        "NULL stays NULL"
    );

    // Equality on the deterministic column, by parameter and by literal, many times.
    let by_email = client
        .prepare("SELECT id, first_name FROM users WHERE email = $1")
        .await
        .unwrap();
    for _ in 0..3 {
        let row = client
            .query_one(&by_email, &[&"dan@example.com"])
            .await
            .unwrap();
        assert_eq!((row.get::<_, i32>(0), row.get::<_, &str>(1)), (2, "Dan"));
    }
    let rows = client
        .query(
            "SELECT first_name FROM users WHERE email IN ('cleo@example.com', $1) ORDER BY id",
            &[&"éva@example.com"],
        )
        .await
        .unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["Cleo", "Éva"]);
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM users WHERE email = $1",
            &[&"nobody@example.com"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_joins_views_ctes_and_unions_are_decrypted() {
    let (_stack, client, _direct) = stack().await;
    client
        .batch_execute(
            "INSERT INTO users (email, first_name) VALUES ('eve@example.com', 'Eve');
             INSERT INTO billing.cards (user_id, holder) VALUES (1, 'EVE E');",
        )
        .await
        .unwrap();
    for sql in [
        "SELECT u.first_name, c.holder FROM users u JOIN billing.cards c ON c.user_id = u.id",
        "WITH x AS (SELECT first_name, id FROM users) SELECT x.first_name, c.holder FROM x, billing.cards c",
        "SELECT (SELECT first_name FROM users), (SELECT holder FROM billing.cards)",
        "SELECT first_name, holder FROM user_names, billing.cards",
    ] {
        let row = client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!((row.get::<_, &str>(0), row.get::<_, &str>(1)), ("Eve", "EVE E"), "{sql}");
    }
    let got = rows(
        &client
            .simple_query("SELECT first_name FROM users UNION ALL SELECT holder FROM billing.cards")
            .await
            .unwrap(),
    );
    assert_eq!(got, [vec![Some("Eve".into())], vec![Some("EVE E".into())]]);
    // A cursor (psycopg's named cursors, SQLAlchemy's stream_results): FETCH in the simple
    // and the extended protocol.
    client
        .batch_execute(
            "BEGIN; DECLARE c SCROLL CURSOR FOR SELECT first_name, email FROM users WHERE email = 'eve@example.com'",
        )
        .await
        .unwrap();
    let fetched = rows(&client.simple_query("FETCH 1 FROM c").await.unwrap());
    assert_eq!(
        fetched,
        [vec![Some("Eve".into()), Some("eve@example.com".into())]]
    );
    let row = client.query_one("FETCH FIRST FROM c", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(1), "eve@example.com");
    client.batch_execute("COMMIT").await.unwrap();
    // UNIQUE and ON CONFLICT work on the deterministic column.
    let err = client
        .execute(
            "INSERT INTO users (email) VALUES ($1)",
            &[&"eve@example.com"],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION));
    client
        .execute(
            "INSERT INTO users (email, first_name) VALUES ($1, $2) ON CONFLICT (email) DO UPDATE SET first_name = EXCLUDED.first_name",
            &[&"eve@example.com", &"Evelyn"],
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT first_name FROM users WHERE email = 'eve@example.com'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "Evelyn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_encrypts_and_copy_out_decrypts() {
    let (_stack, client, direct) = stack().await;
    let sink = client
        .copy_in("COPY users (email, first_name, nick) FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    // Rows split across CopyData frames at awkward places, with escapes and NULL.
    let data = "fay@example.com\tF\\tay\tf\ngus@example.com\t\\N\tg\n";
    for chunk in data.as_bytes().chunks(7) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_ciphertext(stored(&direct, "email", 1).await, "fay@example.com");
    assert_eq!(stored(&direct, "first_name", 2).await, None);

    let sink = client
        .copy_in("COPY users (email, first_name) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(
        b"hal@example.com,\"Hal, \"\"the\"\" 9000\"\n",
    ))
    .await
    .unwrap();
    sink.finish().await.unwrap();
    let row = client
        .query_one(
            "SELECT first_name FROM users WHERE email = 'hal@example.com'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "Hal, \"the\" 9000");

    let row = client
        .query_one(
            "SELECT first_name FROM users WHERE email = $1",
            &[&"fay@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "F\tay");

    // COPY TO STDOUT decrypts, escaping or quoting the plaintext for its format.
    assert_eq!(
        copy_out(&client, "COPY users (email, first_name) TO STDOUT").await,
        "fay@example.com\tF\\tay\ngus@example.com\t\\N\nhal@example.com\tHal, \"the\" 9000\n"
    );
    assert_eq!(
        copy_out(
            &client,
            "COPY (SELECT first_name FROM users WHERE email = 'hal@example.com') TO STDOUT (FORMAT csv)"
        )
        .await,
        "\"Hal, \"\"the\"\" 9000\"\n"
    );
}

/// All of a COPY ... TO STDOUT, as text.
async fn copy_out(client: &Client, sql: &str) -> String {
    let chunks: Vec<Bytes> = client
        .copy_out(sql)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_statements_are_refused_and_the_session_goes_on() {
    let (_stack, mut client, direct) = stack().await;
    client
        .batch_execute("INSERT INTO users (email, first_name) VALUES ('ivy@example.com', 'Ivy')")
        .await
        .unwrap();
    for (sql, column) in [
        (
            "SELECT * FROM users WHERE first_name = 'Ivy'",
            "public.users.first_name",
        ),
        (
            "SELECT * FROM users WHERE email LIKE 'ivy%'",
            "public.users.email",
        ),
        ("SELECT * FROM users ORDER BY email", "public.users.email"),
        ("SELECT lower(email) FROM users", "public.users.email"),
        (
            // citext would compare ciphertexts, not emails, case-insensitively.
            "SELECT id FROM users WHERE email::citext = 'IVY@EXAMPLE.COM'",
            "public.users.email",
        ),
        (
            "INSERT INTO users (email) VALUES (lower('X@Y'))",
            "public.users.email",
        ),
        (
            "INSERT INTO users (email) SELECT nick FROM users",
            "public.users.email",
        ),
    ] {
        // Simple protocol and extended protocol alike.
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{sql}");
        assert!(
            err.as_db_error().unwrap().message().contains(column),
            "{sql}: {err}"
        );
        let err = client.prepare(sql).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{sql}");
    }
    // Inside a transaction the refusal aborts it, as any error does.
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO users (email) VALUES ($1)",
        &[&"jay@example.com"],
    )
    .await
    .unwrap();
    assert!(tx
        .simple_query("SELECT * FROM users WHERE first_name = 'x'")
        .await
        .is_err());
    let err = tx.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    tx.rollback().await.unwrap();
    assert_eq!(count(&direct, "SELECT count(*) FROM users").await, 1);
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

/// SQL PREPARE/EXECUTE and function bodies, the roads around literals and Bind: PREPARE's
/// literals are encrypted; a PII parameter whose value EXECUTE would pass in clear is
/// refused, whether the statement was prepared in SQL or through the protocol (Parse); a
/// function that names a PII table cannot be created through pgcloak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_execute_and_functions_cannot_store_plaintext() {
    let (_stack, client, direct) = stack().await;
    client
        .batch_execute(
            "PREPARE add_ann AS INSERT INTO users (email, first_name) VALUES ('ann@example.com', 'Ann');
             EXECUTE add_ann;
             PREPARE by_id(int) AS SELECT email, first_name FROM users WHERE id = $1",
        )
        .await
        .unwrap();
    assert_ciphertext(stored(&direct, "email", 1).await, "ann@example.com");
    assert_ciphertext(stored(&direct, "first_name", 1).await, "Ann");
    assert_eq!(
        rows_of(&client, "EXECUTE by_id(1)").await,
        [vec![
            Some("ann@example.com".to_owned()),
            Some("Ann".to_owned())
        ]]
    );

    let refused = |sql: &'static str, column: &'static str| {
        let client = &client;
        async move {
            let err = client.simple_query(sql).await.unwrap_err();
            let db = err.as_db_error().expect("a server error");
            assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED, "{sql}");
            assert!(db.message().contains(column), "{sql}: {}", db.message());
            assert!(!db.message().contains("leak"), "{sql}: {}", db.message());
        }
    };
    refused(
        "PREPARE add(text) AS INSERT INTO users (email) VALUES ($1)",
        "public.users.email",
    )
    .await;
    // Through the protocol, tokio-postgres names its statement; SQL EXECUTE of that name
    // would hand the argument to Postgres in clear.
    let statement = client
        .prepare("INSERT INTO users (first_name) VALUES ($1)")
        .await
        .unwrap();
    let name: String = client
        .query_one(
            "SELECT name FROM pg_prepared_statements WHERE statement = 'INSERT INTO users (first_name) VALUES ($1)'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let execute = format!("EXECUTE {name}('leak')");
    let err = client.simple_query(&execute).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED);
    assert!(
        db.message().contains("public.users.first_name"),
        "{}",
        db.message()
    );
    // Through Bind, the same statement stores ciphertext.
    client.execute(&statement, &[&"Bea"]).await.unwrap();
    assert_ciphertext(stored(&direct, "first_name", 2).await, "Bea");
    refused(
        "CREATE FUNCTION add_user(e text) RETURNS void LANGUAGE sql AS $$ INSERT INTO users (email) VALUES (e) $$",
        "function, procedure or rule",
    )
    .await;

    assert_eq!(
        count(
            &direct,
            "SELECT count(*) FROM users WHERE email LIKE '%leak%' OR first_name LIKE '%leak%'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &direct,
            "SELECT count(*) FROM pg_proc WHERE proname = 'add_user'"
        )
        .await,
        0
    );
}

/// A session whose search_path finds billing.cards by its bare name still has its values
/// encrypted; numbers are stored as Postgres would print them; a cast that would truncate
/// the ciphertext is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_numbers_and_length_casts() {
    let (_stack, client, direct) = stack().await;
    client
        .batch_execute(
            "SET search_path = billing, public;
             INSERT INTO cards (user_id, holder) VALUES (1, 'Ann Holder');",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO cards (user_id, holder) VALUES (2, $1)",
            &[&"Bo Holder"],
        )
        .await
        .unwrap();
    let holders: Vec<String> = client
        .query("SELECT holder FROM cards ORDER BY user_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(holders, ["Ann Holder", "Bo Holder"]);
    for (id, holder) in [(1, "Ann Holder"), (2, "Bo Holder")] {
        let stored: Option<String> = direct
            .query_one(
                "SELECT holder FROM billing.cards WHERE user_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_ciphertext(stored, holder);
    }

    client
        .batch_execute("INSERT INTO users (email, first_name) VALUES (42, 1.50)")
        .await
        .unwrap();
    let row = client
        .query_one("SELECT email, first_name FROM users WHERE email = 42", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("42".to_owned(), "1.50".to_owned())
    );
    assert_ciphertext(stored(&direct, "email", 1).await, "42");
    for sql in [
        "INSERT INTO users (email) VALUES ('long-enough@example.com'::varchar(20))",
        "INSERT INTO users (email) VALUES (1e5)",
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{sql}");
    }
    assert_eq!(count(&direct, "SELECT count(*) FROM users").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_moved_ciphertext_fails_the_query_not_the_session() {
    let (_stack, client, direct) = stack().await;
    client
        .batch_execute("INSERT INTO users (email, first_name, last_name) VALUES ('kim@example.com', 'Kim', 'Lee')")
        .await
        .unwrap();
    // Flip one character of the stored ciphertext, directly in Postgres.
    direct
        .batch_execute("UPDATE users SET first_name = overlay(first_name placing (CASE WHEN substr(first_name, 30, 1) = 'A' THEN 'B' ELSE 'A' END) from 30 for 1)")
        .await
        .unwrap();
    let err = client
        .query("SELECT first_name FROM users", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("XX001"));
    // The same session and every other one go on.
    assert_eq!(
        client
            .query_one("SELECT last_name FROM users", &[])
            .await
            .unwrap()
            .get::<_, &str>(0),
        "Lee"
    );
    let other = common::connect(&_stack.proxy_url()).await;
    assert_eq!(
        other
            .query_one("SELECT email FROM users", &[])
            .await
            .unwrap()
            .get::<_, &str>(0),
        "kim@example.com"
    );

    // A ciphertext copied into another PII column is refused, not decrypted as the other.
    direct
        .batch_execute("UPDATE users SET last_name = email")
        .await
        .unwrap();
    let err = client
        .simple_query("SELECT last_name FROM users")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("XX001"));
    let message = err.as_db_error().unwrap().message();
    assert!(message.contains("public.users.last_name"), "{message}");
    // Also through a named statement, whose rows come without a RowDescription in front.
    let statement = client
        .prepare("SELECT id, last_name FROM users")
        .await
        .unwrap();
    for _ in 0..2 {
        let err = client.query(&statement, &[]).await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("XX001"));
    }
    let by_id = client
        .prepare("SELECT email FROM users WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(
        client
            .query_one(&by_id, &[&1i32])
            .await
            .unwrap()
            .get::<_, &str>(0),
        "kim@example.com"
    );
    let row = client
        .query_one("SELECT email FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "kim@example.com");
}

/// A session with client_encoding LATIN1 (psql with PGCLIENTENCODING): statements that
/// cannot concern a PII table pass as before, in their own encoding; those that may are
/// refused (pgcloak encrypts and decrypts UTF-8) until the session switches to UTF8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_another_encoding_cannot_touch_pii() {
    let (stack, _client, direct) = stack().await;
    let psql_latin1 = |script: &[u8]| {
        let path = std::env::temp_dir().join(format!("pgcloak-latin1-{}.sql", std::process::id()));
        std::fs::write(&path, script).unwrap();
        let out = std::process::Command::new("psql")
            .arg(stack.proxy_url())
            .args(["-X", "-At", "-w", "-f"])
            .arg(&path)
            .env("PGCLIENTENCODING", "LATIN1")
            .output()
            .expect("run psql");
        let _ = std::fs::remove_file(&path);
        out
    };
    // caf\xe9 is "café" in LATIN1, not valid UTF-8: Postgres converts it, as without pgcloak.
    let out = psql_latin1(b"SELECT 'caf\xe9' AS plain;\nSELECT convert_to('caf\xe9', 'UTF8');\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"caf\xe9\n\\x636166c3a9\n");
    let out = psql_latin1(
        b"INSERT INTO users (email, first_name) VALUES ('a@example.com', 'Ren\xe9');\n\
          SELECT first_name FROM users;\n\
          SET client_encoding = 'UTF8';\n\
          INSERT INTO users (email, first_name) VALUES ('b@example.com', 'Rene');\n\
          SELECT first_name FROM users;\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("client_encoding is LATIN1").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "SET\nINSERT 0 1\nRene\n"
    );
    let stored: Vec<Option<String>> = direct
        .query("SELECT first_name FROM users", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_ciphertext(stored[0].clone(), "Rene");
}

/// pg_dump through pgcloak writes plaintext (it reads like any client); restoring that dump
/// through pgcloak into another database (psql -f, statement by statement: CREATE TABLE,
/// ALTER SEQUENCE ... OWNED BY, COPY ... FROM stdin, constraints) stores ciphertext again,
/// under the same keys, and it reads and searches as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_and_restore_through_pgcloak() {
    let (stack, client, direct) = stack().await;
    // POLICY does not name the view user_names: a restore through pgcloak would refuse to
    // create it (searches on it would go wrong), as the views tests show.
    direct.batch_execute("DROP VIEW user_names").await.unwrap();
    client
        .batch_execute(
            "INSERT INTO users (email, first_name, last_name, nick) VALUES
                ('ann@example.com', 'Ann', 'Lee', 'annie'), ('bo@example.com', 'Bo', NULL, NULL);
             INSERT INTO billing.cards (user_id, holder) VALUES (1, 'ANN LEE');",
        )
        .await
        .unwrap();
    let dump = std::process::Command::new("pg_dump")
        .arg(stack.proxy_url())
        .arg("--no-password")
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8(dump.stdout).unwrap();
    assert!(text.contains("ann@example.com\tAnn\tLee\tannie"), "{text}");
    assert!(!text.contains("pgc1$"), "{text}");

    direct
        .batch_execute("CREATE DATABASE restored")
        .await
        .unwrap();
    let path = std::env::temp_dir().join(format!("pgcloak-dump-{}.sql", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let restored_url = stack.url("postgres", common::PASSWORD, "restored");
    let out = common::psql(&restored_url, &["-q", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let restored_direct = common::connect(&stack.pg.url("restored")).await;
    let stored: Option<String> = restored_direct
        .query_one("SELECT email FROM users WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    // Same keys in every database: the restored ciphertext equals the original's.
    assert_eq!(stored, stored_email(&direct, 1).await);
    assert_ciphertext(stored, "ann@example.com");
    let holder: Option<String> = restored_direct
        .query_one("SELECT holder FROM billing.cards", &[])
        .await
        .unwrap()
        .get(0);
    assert_ciphertext(holder, "ANN LEE");
    let restored = common::connect(&restored_url).await;
    let row = restored
        .query_one(
            "SELECT first_name, last_name FROM users WHERE email = $1",
            &[&"bo@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, &str>(0), row.get::<_, Option<&str>>(1)),
        ("Bo", None)
    );
}

async fn stored_email(direct: &Client, id: i32) -> Option<String> {
    stored(direct, "email", id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_results_and_psql_see_plaintext() {
    let (stack, client, _direct) = stack().await;
    client
        .execute(
            "INSERT INTO users (email, first_name) VALUES ($1, $2)",
            &[&"lou@example.com", &"Lou"],
        )
        .await
        .unwrap();
    // tokio-postgres asks for binary results: text-family values are their UTF-8 bytes.
    let stream = client
        .query_raw(
            "SELECT first_name, email FROM users",
            std::iter::empty::<&str>(),
        )
        .await
        .unwrap();
    let rows: Vec<_> = stream.try_collect().await.unwrap();
    assert_eq!(rows[0].get::<_, &str>(0), "Lou");
    let out = common::stdout(&stack.psql(&["-At", "-c", "SELECT first_name, email FROM users"]));
    assert_eq!(out.trim(), "Lou|lou@example.com");
    let direct = common::stdout(&common::psql(
        &stack.pg.url("postgres"),
        &["-At", "-c", "SELECT first_name FROM users"],
    ));
    assert_ciphertext(Some(direct.trim().to_owned()), "Lou");
}

/// Schema made through pgcloak: UNIQUE, PRIMARY KEY and indexes on a deterministic column
/// work on ciphertext; what cannot hold on ciphertext (UNIQUE on a randomized column, a
/// plaintext DEFAULT) is refused before Postgres sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_through_the_proxy_keeps_constraints_that_work_on_ciphertext() {
    let stack = Stack::start_cloaked(POLICY).await;
    let client = stack.connect().await;
    let direct = stack.connect_direct().await;
    client
        .batch_execute(
            "CREATE TABLE users (id serial, email varchar NOT NULL, first_name text, last_name text,
                                 PRIMARY KEY (id), UNIQUE (email));
             CREATE INDEX ix_users_first_name ON users (first_name);
             CREATE UNIQUE INDEX ix_users_email_first ON users (email, id);",
        )
        .await
        .unwrap();
    for (sql, expected) in [
        (
            "CREATE UNIQUE INDEX u ON users (last_name)",
            "a UNIQUE index on public.users.last_name cannot work",
        ),
        (
            "ALTER TABLE users ALTER COLUMN email SET DEFAULT 'nobody@example.com'",
            "a DEFAULT for public.users.email would be stored in clear",
        ),
        (
            "CREATE INDEX ix_lower ON users (lower(email))",
            "public.users.email is encrypted by pgcloak",
        ),
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED, "{sql}");
        assert!(db.message().contains(expected), "{sql}: {}", db.message());
    }
    let indexes: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'users'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        indexes, 4,
        "pkey, unique email, first_name, email+id; nothing refused"
    );

    client
        .execute(
            "INSERT INTO users (email, first_name) VALUES ($1, $2)",
            &[&"ann@example.com", &"Ann"],
        )
        .await
        .unwrap();
    let err = client
        .execute(
            "INSERT INTO users (email, first_name) VALUES ($1, $2)",
            &[&"ann@example.com", &"Another Ann"],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION));
    client
        .execute(
            "INSERT INTO users (email, first_name) VALUES ('ann@example.com', 'Ann B') ON CONFLICT (email) DO UPDATE SET first_name = EXCLUDED.first_name",
            &[],
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT first_name FROM users WHERE email = $1",
            &[&"ann@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "Ann B");
    assert_ciphertext(stored(&direct, "email", 1).await, "ann@example.com");
    assert_ciphertext(stored(&direct, "first_name", 1).await, "Ann B");
}

/// `email = ANY($1)` with an array parameter (binary from tokio-postgres, text as most
/// drivers send lists), an array literal, `= ANY(ARRAY[...])` with literals, and the
/// INSERT ... SELECT ... FROM (VALUES ...) form ORMs send for multi-row inserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_arrays_and_insert_from_values_are_encrypted() {
    let (_stack, client, direct) = stack().await;
    let ids: Vec<i32> = client
        .query(
            "INSERT INTO users (email, first_name, last_name)
             SELECT v.e, v.f::varchar, v.l FROM (VALUES ($1, $2, $3, 0), ($4, $5, $6, 1), ('cy@example.com', 'Cy', NULL, 2))
                AS v(e, f, l, n) ORDER BY v.n RETURNING id",
            &[&"al@example.com", &"Al", &"One", &"bo@example.com", &"Bo", &"Two"],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    for (id, email, first) in [
        (1, "al@example.com", "Al"),
        (2, "bo@example.com", "Bo"),
        (3, "cy@example.com", "Cy"),
    ] {
        assert_ciphertext(stored(&direct, "email", id).await, email);
        assert_ciphertext(stored(&direct, "first_name", id).await, first);
    }
    assert_eq!(stored(&direct, "last_name", 3).await, None);

    // Binary text[] parameter (tokio-postgres), with a NULL element.
    let wanted: Vec<Option<&str>> = vec![
        Some("al@example.com"),
        None,
        Some("cy@example.com"),
        Some("nobody@example.com"),
    ];
    let rows = client
        .query(
            "SELECT id, first_name FROM users WHERE email = ANY($1) ORDER BY id",
            &[&wanted],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(1, "Al".to_owned()), (3, "Cy".to_owned())]);
    // Text-format array parameter, as most drivers send lists.
    let statement = client
        .prepare_typed(
            "SELECT count(*) FROM users WHERE email = ANY($1::text[])",
            &[tokio_postgres::types::Type::TEXT_ARRAY],
        )
        .await
        .unwrap();
    let text_array = TextParam("{\"bo@example.com\", al@example.com ,NULL}");
    let count: i64 = client
        .query_one(&statement, &[&text_array])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    // Literals in an ARRAY constructor.
    let got = rows_of(
        &client,
        "SELECT first_name FROM users WHERE email = ANY(ARRAY['bo@example.com', 'zz@example.com'])",
    )
    .await;
    assert_eq!(got, [vec![Some("Bo".to_owned())]]);
    // An array literal in the SQL text (psql users write lists this way).
    let got = rows_of(
        &client,
        "SELECT first_name FROM users WHERE email = ANY('{\"bo@example.com\", cy@example.com, NULL}') ORDER BY id",
    )
    .await;
    assert_eq!(
        got,
        [vec![Some("Bo".to_owned())], vec![Some("Cy".to_owned())]]
    );
    let err = client
        .simple_query("SELECT 1 FROM users WHERE email = ANY('{{al@example.com}}'::text[])")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INVALID_TEXT_REPRESENTATION);
    assert!(!db.message().contains("al@example.com"), "{}", db.message());
    // A malformed array is refused with its own error; the session goes on.
    let bad = TextParam("{{\"al@example.com\"}}");
    let err = client.query_one(&statement, &[&bad]).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert!(
        db.message().contains("public.users.email"),
        "{}",
        db.message()
    );
    assert!(!db.message().contains("al@example.com"), "{}", db.message());
    assert_eq!(
        rows_of(&client, "SELECT 1").await,
        [vec![Some("1".to_owned())]]
    );
}

/// Searches through subqueries in FROM, CTEs and ORM-style `anon_1` wrappers are
/// encrypted like searches on the table; a plain `email` column of another table keeps its
/// plaintext comparisons; what would compare plaintext with ciphertext is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_through_subqueries_and_ctes_are_encrypted() {
    let (_stack, client, direct) = stack().await;
    direct
        .batch_execute("CREATE TABLE contacts (id int, email text)")
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO users (email, first_name, nick) VALUES ('ann@example.com', 'Ann', 'annie'), ('bob@example.com', 'Bob', 'bob@example.com');
             INSERT INTO contacts VALUES (1, 'ann@example.com'), (2, 'zed@example.com');",
        )
        .await
        .unwrap();
    let ann = vec![vec![Some("Ann".to_owned())]];
    for sql in [
        "SELECT x.f FROM (SELECT first_name AS f, email AS e FROM users) x WHERE x.e = 'ann@example.com'",
        "WITH x AS (SELECT * FROM users) SELECT first_name FROM x WHERE email = 'ann@example.com'",
        "SELECT first_name FROM users u, LATERAL (SELECT u.email AS e) l WHERE l.e = 'ann@example.com'",
        "SELECT first_name FROM users WHERE email = (SELECT email FROM users WHERE nick = 'annie')",
        // Plain contacts.email, inside a statement that also reads users.
        "SELECT first_name FROM users WHERE id IN (SELECT c.id FROM contacts c WHERE c.email = 'ann@example.com')",
    ] {
        assert_eq!(rows_of(&client, sql).await, ann, "{sql}");
    }
    let rows = client
        .query(
            "SELECT anon_1.users_first_name FROM (SELECT users.first_name AS users_first_name, users.email AS users_email FROM users) AS anon_1 WHERE anon_1.users_email = $1",
            &[&"bob@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, &str>(0), "Bob");
    for (sql, column) in [
        // Bob's nick equals his email in plaintext, never in ciphertext.
        ("SELECT id FROM users WHERE nick IN (SELECT email FROM users)", "public.users.email"),
        ("SELECT email FROM users UNION SELECT nick FROM users", "public.users.email"),
        ("SELECT x.f FROM (SELECT first_name AS f FROM users) x WHERE x.f = 'Ann'", "public.users.first_name"),
        ("SELECT * FROM users JOIN contacts USING (email)", "public.users.email"),
        // contacts.email or users.email: pgcloak cannot tell, so it asks for a qualifier.
        ("SELECT first_name FROM users WHERE id IN (SELECT id FROM contacts WHERE email = 'ann@example.com')", "qualify it"),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED, "{sql}");
        assert!(db.message().contains(column), "{sql}: {}", db.message());
    }
    assert_eq!(
        rows_of(&client, "SELECT 1").await,
        [vec![Some("1".to_owned())]]
    );
}

/// INSERT ... SELECT: the insert-if-absent idiom with parameters is encrypted, a row copied
/// within its own columns stays readable, and nothing reaches Postgres in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_encrypts_parameters_and_copies_ciphertext() {
    let (_stack, client, direct) = stack().await;
    let insert_absent = "INSERT INTO users (email, first_name) SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = $1)";
    for _ in 0..2 {
        client
            .execute(insert_absent, &[&"ivy@example.com", &"Ivy"])
            .await
            .unwrap();
    }
    assert_eq!(count(&client, "SELECT count(*) FROM users").await, 1);
    assert_ciphertext(stored(&direct, "email", 1).await, "ivy@example.com");
    assert_ciphertext(stored(&direct, "first_name", 1).await, "Ivy");
    // A copy of the row within the same columns (its email changed afterwards: UNIQUE).
    client
        .batch_execute(
            "INSERT INTO users (first_name, last_name) SELECT first_name, last_name FROM users WHERE email = 'ivy@example.com'",
        )
        .await
        .unwrap();
    assert_eq!(
        rows_of(&client, "SELECT first_name FROM users WHERE id = 2").await,
        [vec![Some("Ivy".to_owned())]]
    );
    assert_eq!(
        stored(&direct, "first_name", 2).await,
        stored(&direct, "first_name", 1).await
    );
    let err = client
        .simple_query("INSERT INTO users (email) SELECT nick FROM users")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
}

/// The number a `SELECT count(*) ...` without parameters returns.
async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn rows_of(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    rows(&client.simple_query(sql).await.unwrap())
}

/// A parameter sent in text format as given (tokio-postgres sends its own types binary).
#[derive(Debug)]
struct TextParam(&'static str);

impl tokio_postgres::types::ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &tokio_postgres::types::Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Columns that share a key (`same_key_as`): a JOIN on them compares ciphertexts, a
/// foreign key between them holds, and a view's column configured that way can be searched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_sharing_a_key_join_and_views_are_searchable() {
    let policy = format!(
        "{POLICY}
orders:
  customer_email: {{ mode: deterministic, same_key_as: users.email }}
user_names:
  email: {{ mode: deterministic, same_key_as: users.email }}
  first_name: {{ mode: randomized, same_key_as: users.first_name }}
"
    );
    let stack = Stack::start_cloaked(&policy).await;
    let direct = stack.connect_direct().await;
    direct.batch_execute(SCHEMA).await.unwrap();
    let client = stack.connect().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, customer_email text REFERENCES users (email), item text);
             INSERT INTO users (email, first_name) VALUES ('ann@example.com', 'Ann'), ('bob@example.com', 'Bob');
             INSERT INTO orders (customer_email, item) VALUES ('ann@example.com', 'book'), ('ann@example.com', 'pen');",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO orders (customer_email, item) VALUES ($1, $2)",
            &[&"bob@example.com", &"ink"],
        )
        .await
        .unwrap();
    // Both columns store the same deterministic ciphertext for the same email.
    assert_eq!(count(&direct, "SELECT count(*) FROM orders o JOIN users u ON o.customer_email = u.email WHERE o.customer_email LIKE 'pgc1$d$%'").await, 3);
    let rows = client
        .query(
            "SELECT u.first_name, o.item, o.customer_email FROM users u JOIN orders o ON o.customer_email = u.email WHERE u.email = $1 ORDER BY o.item",
            &[&"ann@example.com"],
        )
        .await
        .unwrap();
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [
            ("Ann", "book", "ann@example.com"),
            ("Ann", "pen", "ann@example.com")
        ]
    );
    // The foreign key compares ciphertexts: an unknown customer is rejected by Postgres.
    let err = client
        .execute(
            "INSERT INTO orders (customer_email, item) VALUES ($1, 'x')",
            &[&"nobody@example.com"],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION));
    // A view's columns, configured with the keys of their source columns.
    let row = client
        .query_one(
            "SELECT id, first_name FROM user_names WHERE email = $1",
            &[&"bob@example.com"],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, &str>(1)), (2, "Bob"));
    // Written through the configured view: encrypted, and readable from the table.
    client
        .execute(
            "INSERT INTO user_names (email, first_name) VALUES ($1, $2)",
            &[&"cy@example.com", &"Cy"],
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT id, first_name FROM users WHERE email = 'cy@example.com'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(1), "Cy");
    let id: i32 = row.get(0);
    assert_ciphertext(stored(&direct, "email", id).await, "cy@example.com");
    assert_ciphertext(stored(&direct, "first_name", id).await, "Cy");
    // Views showing PII columns and child tables that the policy does not name cannot be
    // created through pgcloak: searches on them, or writes through them, would go wrong.
    for sql in [
        "CREATE VIEW emails AS SELECT id, email FROM users",
        "CREATE VIEW email_counts AS SELECT email, count(*) FROM users GROUP BY email",
        "CREATE TABLE old_users () INHERITS (users)",
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{sql}");
        assert!(err
            .as_db_error()
            .unwrap()
            .message()
            .contains("not in the pgcloak policy"));
    }
    // Columns with their own keys still cannot be compared.
    let err = client
        .query(
            "SELECT 1 FROM users u JOIN billing.cards c ON c.holder = u.first_name",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
}
