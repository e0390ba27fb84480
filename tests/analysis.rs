//! SQL analysis through the proxy: statements the analyzer models are encrypted, statements
//! it does not model are refused with 0A000 when they involve a PII table, and nothing
//! reaches a PII column in clear. Each test checks the stored values directly in Postgres.

mod common;

use common::Stack;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

const POLICY: &str = "
users:
  email: deterministic
  first_name: randomized
people:
  email: deterministic
";

const SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, first_name text, nick text);
CREATE TABLE plain (id int, note text);
CREATE TABLE parent (id int, email text, first_name text, nick text);
CREATE TABLE listed (id int, email text, first_name text, nick text) PARTITION BY LIST (id);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
";

async fn stack() -> (Stack, Client, Client) {
    let stack = Stack::start_cloaked(POLICY).await;
    let direct = stack.connect_direct().await;
    direct.batch_execute(SCHEMA).await.unwrap();
    let client = stack.connect().await;
    (stack, client, direct)
}

/// Runs `sql` through the proxy (simple protocol) and asserts pgcloak refused it with 0A000
/// and a message containing `fragment`.
async fn assert_refused(client: &Client, sql: &str, fragment: &str) {
    let error = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql}: expected a refusal"));
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: {error}"));
    assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED, "{sql}: {db}");
    assert!(db.message().contains(fragment), "{sql}: {}", db.message());
}

/// Every stored value of `column` in users, read directly from Postgres: none may be
/// anything but an envelope.
async fn assert_all_encrypted(direct: &Client, column: &str) {
    let sql = format!("SELECT {column} FROM users WHERE {column} IS NOT NULL");
    for row in direct.query(&sql, &[]).await.unwrap() {
        let value: String = row.get(0);
        assert!(
            value.starts_with("pgc1$"),
            "{column} stored in clear: {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_pgcloak_does_not_model_are_refused_on_pii_tables() {
    let (_stack, client, direct) = stack().await;
    assert_refused(
        &client,
        "CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION touch()",
        "CREATE TRIGGER statements, and this one names public.users",
    )
    .await;
    assert_refused(
        &client,
        "CREATE POLICY p ON users USING (email = current_user)",
        "pgcloak does not model",
    )
    .await;
    // Nothing was created.
    let triggers: i64 = direct
        .query_one("SELECT count(*) FROM pg_trigger WHERE tgname = 't'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0);
    // The same kinds on other tables, and kinds that only name a PII table, pass.
    client
        .batch_execute(
            "CREATE TRIGGER t BEFORE INSERT ON plain FOR EACH ROW EXECUTE FUNCTION touch();
             GRANT SELECT ON users TO PUBLIC;
             COMMENT ON COLUMN users.email IS 'encrypted by pgcloak';",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO users (email) VALUES ($1)",
            &[&"ann@example.com"],
        )
        .await
        .unwrap();
    assert_all_encrypted(&direct, "email").await;
}

/// MERGE through the proxy: INSERT and UPDATE actions store ciphertext, the ON condition
/// searches a deterministic column, DELETE works; what cannot be encrypted is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_values_are_encrypted() {
    let (_stack, client, direct) = stack().await;
    client
        .batch_execute(
            "MERGE INTO users u USING (SELECT 1 AS k) s ON false WHEN NOT MATCHED THEN INSERT (email, first_name) VALUES ('x@example.com', 'Annabel')",
        )
        .await
        .unwrap();
    client
        .execute(
            "MERGE INTO users u USING (SELECT 1 AS k) s ON u.email = $1 WHEN MATCHED THEN UPDATE SET first_name = $2 WHEN NOT MATCHED THEN INSERT (email, first_name) VALUES ($3, $4)",
            &[&"x@example.com", &"Beatrice", &"x@example.com", &"unused"],
        )
        .await
        .unwrap();
    client
        .execute(
            "MERGE INTO users u USING (SELECT 1 AS k) s ON u.email = $1 WHEN MATCHED THEN UPDATE SET first_name = $2 WHEN NOT MATCHED THEN INSERT (email, first_name) VALUES ($3, $4)",
            &[&"y@example.com", &"unused", &"y@example.com", &"Clementine"],
        )
        .await
        .unwrap();
    assert_all_encrypted(&direct, "email").await;
    assert_all_encrypted(&direct, "first_name").await;
    let rows = client
        .query("SELECT email, first_name FROM users ORDER BY id", &[])
        .await
        .unwrap();
    let read: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        read,
        [
            ("x@example.com".to_owned(), "Beatrice".to_owned()),
            ("y@example.com".to_owned(), "Clementine".to_owned())
        ]
    );
    client
        .batch_execute(
            "MERGE INTO users u USING (SELECT 1 AS k) s ON u.email = 'y@example.com' WHEN MATCHED THEN DELETE",
        )
        .await
        .unwrap();
    let left: i64 = direct
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
    assert_refused(
        &client,
        "MERGE INTO users u USING (SELECT 'z@example.com' AS e) s ON u.email = s.e WHEN NOT MATCHED THEN INSERT (email) VALUES (s.e)",
        "public.users.email",
    )
    .await;
    assert_refused(
        &client,
        "MERGE INTO plain p USING users u ON p.id = u.id WHEN NOT MATCHED THEN INSERT (id, note) VALUES (u.id, u.email)",
        "public.users.email is encrypted",
    )
    .await;
    assert_refused(
        &client,
        "MERGE INTO users u USING plain p ON u.id = p.id WHEN MATCHED AND u.email LIKE 'x%' THEN DELETE",
        "public.users.email is encrypted",
    )
    .await;
}

/// Issue 10 items 3-6, 8-10 through the proxy: relations keep their PII columns, a PII table
/// stays out of unconfigured parents, column type changes keep the ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_carry_their_pii_columns() {
    let (_stack, client, direct) = stack().await;
    client
        .execute(
            "INSERT INTO users (email, first_name) VALUES ($1, $2)",
            &[&"ann@example.com", &"Ann"],
        )
        .await
        .unwrap();
    let child = "would become a partition or child of";
    for (sql, fragment) in [
        ("ALTER TABLE listed ATTACH PARTITION users DEFAULT", child),
        ("ALTER TABLE users INHERIT parent", child),
        ("CREATE TABLE people (id int, email text) INHERITS (parent)", child),
        ("CREATE TABLE t AS TABLE users", "would receive public.users."),
        ("SELECT t FROM (SELECT email FROM users) t", "whole-row"),
        ("SELECT row_to_json(t) FROM (SELECT email FROM users) t", "whole-row"),
        ("SELECT t::text FROM (SELECT email FROM users) t", "whole-row"),
        ("WITH t AS (SELECT email FROM users) SELECT to_jsonb(t.*) FROM t", "whole-row"),
        ("WITH c AS (SELECT email FROM users) SELECT x.email FROM c AS x WHERE x.email LIKE 'a%'", "public.users.email is encrypted"),
        ("WITH c AS (SELECT email FROM users) SELECT lower(x.email) FROM c AS x", "public.users.email is encrypted"),
        ("WITH c AS (SELECT email FROM users) SELECT x.email FROM c AS x WHERE x.email > 'a'", "public.users.email is encrypted"),
        ("ALTER TABLE users ALTER COLUMN email TYPE text USING lower(email)", "would compute new values of public.users.email"),
        ("CREATE TABLE people (id int, email varchar(30))", "public.people.email cannot be varchar(30)"),
    ] {
        assert_refused(&client, sql, fragment).await;
    }
    // Nothing above reached Postgres.
    let inherits: i64 = direct
        .query_one("SELECT count(*) FROM pg_inherits", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inherits, 0);
    // A CTE under an alias searched by equality: the literal is encrypted.
    let found = client
        .query(
            "WITH c AS (SELECT email FROM users) SELECT x.email FROM c AS x WHERE x.email = 'ann@example.com'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // Django's AlterField, Knex's .alter(): the ciphertext stays as it is.
    client
        .batch_execute(
            "ALTER TABLE users ALTER COLUMN email TYPE varchar(200) USING email::varchar;
             ALTER TABLE users ALTER COLUMN email TYPE text USING email::text;
             ALTER TABLE users ALTER COLUMN first_name TYPE varchar USING first_name;",
        )
        .await
        .unwrap();
    assert_all_encrypted(&direct, "email").await;
    let row = client
        .query_one(
            "SELECT email, first_name FROM users WHERE email = $1",
            &[&"ann@example.com"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(1), "Ann");
    client
        .batch_execute("CREATE TABLE people (id int, email varchar(43))")
        .await
        .unwrap();
}

/// A parameter declared with a type that cannot hold ciphertext: the message names the type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_type_messages_name_the_type() {
    let (_stack, client, _direct) = stack().await;
    let error = client
        .prepare_typed("SELECT id FROM users WHERE email = $1", &[Type::DATE])
        .await
        .expect_err("a date parameter for an encrypted column");
    let db = error.as_db_error().expect("an error from the server side");
    assert!(
        db.message().contains("declared as date"),
        "{}",
        db.message()
    );
    assert!(!db.message().contains("OID"), "{}", db.message());
}

/// Bulk inserts from arrays (Django 5.2's bulk_create, sqlx): each element of an array
/// feeding a PII column is encrypted, in binary array parameters and in inline literals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnest_bulk_inserts_are_encrypted_element_by_element() {
    let (_stack, client, direct) = stack().await;
    let emails = vec!["a@example.com".to_owned(), "b@example.com".to_owned()];
    let names = vec![Some("Ann".to_owned()), None];
    let nicks = vec!["annie".to_owned(), "bobby".to_owned()];
    let inserted = client
        .execute(
            "INSERT INTO \"users\" (\"email\", \"first_name\", \"nick\") SELECT * FROM UNNEST($1::varchar[], $2::text[], $3::varchar[]) RETURNING \"users\".\"id\"",
            &[&emails, &names, &nicks],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 2);
    client
        .batch_execute(
            "INSERT INTO users (email, first_name, nick) SELECT * FROM UNNEST('{c@example.com,\"d@example.com\"}'::varchar[], ARRAY['Cecile', 'Dorothea']::text[], '{c,d}'::text[]) AS x(e, f, n);
             INSERT INTO users (email, first_name) SELECT unnest(ARRAY['e@example.com']), unnest('{Eleonore}'::text[]);",
        )
        .await
        .unwrap();
    assert_all_encrypted(&direct, "email").await;
    assert_all_encrypted(&direct, "first_name").await;
    let nick: String = direct
        .query_one("SELECT nick FROM users WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nick, "annie");
    let rows = client
        .query("SELECT email, first_name FROM users ORDER BY id", &[])
        .await
        .unwrap();
    let read: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        read,
        [
            ("a@example.com".to_owned(), Some("Ann".to_owned())),
            ("b@example.com".to_owned(), None),
            ("c@example.com".to_owned(), Some("Cecile".to_owned())),
            ("d@example.com".to_owned(), Some("Dorothea".to_owned())),
            ("e@example.com".to_owned(), Some("Eleonore".to_owned())),
        ]
    );
    // Deterministic ciphertexts: the array-inserted values are found by equality.
    let found = client
        .query("SELECT id FROM users WHERE email = $1", &[&"d@example.com"])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_refused(
        &client,
        "INSERT INTO users (email) SELECT lower(x.e) FROM UNNEST('{X@example.com}'::text[]) AS x(e)",
        "INSERT ... SELECT into public.users.email",
    )
    .await;
}

/// `$0` bound for a PII column is refused instead of indexing parameter -1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_zero_is_refused() {
    let (_stack, client, _direct) = stack().await;
    let error = client
        .prepare("SELECT id FROM users WHERE email = $0")
        .await
        .expect_err("$0 for an encrypted column");
    let db = error.as_db_error().expect("an error from the server side");
    assert_eq!(db.code(), &SqlState::FEATURE_NOT_SUPPORTED);
    assert!(db.message().contains("uses $0"), "{}", db.message());
    // The session goes on.
    client.simple_query("SELECT 1").await.unwrap();
}

/// sqlx's bulk-insert idiom on the wire as sqlx sends it: a Parse naming the parameter types
/// (text[], int8[]), Bind with every array in binary format. NULL elements, empty arrays,
/// the `AS x(a, b)` column-alias form and RETURNING; each value is an envelope at rest and
/// comes back as plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_unnest_bulk_insert_with_binary_arrays() {
    let (_stack, client, direct) = stack().await;
    direct
        .batch_execute("CREATE TABLE people (id serial PRIMARY KEY, email text, score int8)")
        .await
        .unwrap();
    let typed = [Type::TEXT_ARRAY, Type::INT8_ARRAY];
    let forms = [
        "INSERT INTO people (email, score) SELECT * FROM UNNEST($1::text[], $2::int8[]) RETURNING id, email",
        "INSERT INTO people (email, score) SELECT * FROM UNNEST($1::text[], $2::int8[]) AS x(e, s) RETURNING id, email",
        "INSERT INTO people (email, score) SELECT x.e, x.s FROM UNNEST($1::text[], $2::int8[]) AS x(e, s) RETURNING id, email",
        // Untyped in the SQL: the types come from the Parse alone.
        "INSERT INTO people (score, email) SELECT s, e FROM UNNEST($2, $1) AS x(s, e) RETURNING id, email",
    ];
    let mut expected = Vec::new();
    for (k, sql) in forms.iter().enumerate() {
        let statement = client.prepare_typed(sql, &typed).await.unwrap();
        assert_eq!(statement.params(), typed);
        let emails: Vec<Option<String>> = (0..50)
            .map(|i| (i % 7 != 3).then(|| format!("sqlx{k}-{i}@example.com")))
            .collect();
        let scores: Vec<i64> = (0..50).map(|i| i * 1000 + k as i64).collect();
        let rows = client.query(&statement, &[&emails, &scores]).await.unwrap();
        let returned: Vec<Option<String>> = rows.iter().map(|r| r.get(1)).collect();
        assert_eq!(returned, emails, "{sql}: RETURNING decrypts");
        expected.extend(emails.into_iter().zip(scores));
        // Empty arrays insert nothing, and a NULL array too.
        let none: Vec<Option<String>> = Vec::new();
        let rows = client.query(&statement, &[&none, &Vec::<i64>::new()]).await;
        assert_eq!(rows.unwrap().len(), 0, "{sql}: empty arrays");
        let null: Option<Vec<String>> = None;
        let rows = client.query(&statement, &[&null, &Vec::<i64>::new()]).await;
        assert_eq!(rows.unwrap().len(), 0, "{sql}: NULL array");
    }
    // Through pgcloak: every row back, in order, plaintext.
    let rows = client
        .query("SELECT email, score FROM people ORDER BY id", &[])
        .await
        .unwrap();
    let read: Vec<(Option<String>, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(read, expected);
    // At rest: envelopes (NULL stays NULL), never the plaintext; scores stay plain.
    let rows = direct
        .query("SELECT email, score FROM people ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, (email, score)) in rows.iter().zip(&expected) {
        let stored: Option<String> = row.get(0);
        match (email, stored) {
            (Some(email), Some(stored)) => {
                assert!(stored.starts_with("pgc1$d$"), "stored {stored}");
                assert!(!stored.contains(email.as_str()), "stored {stored}");
            }
            (None, None) => {}
            (email, stored) => panic!("{email:?} stored as {stored:?}"),
        }
        assert_eq!(row.get::<_, i64>(1), *score);
    }
    // Deterministic: an array-inserted value is found by equality, with a binary parameter.
    let found: i64 = client
        .query_one(
            "SELECT score FROM people WHERE email = $1",
            &[&"sqlx2-11@example.com"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 11_002);
    // An array declared as anything but text[]/varchar[] for a PII column is refused at Parse.
    let error = client
        .prepare_typed(
            "INSERT INTO people (email, score) SELECT * FROM UNNEST($1, $2)",
            &[Type::INT8_ARRAY, Type::INT8_ARRAY],
        )
        .await
        .expect_err("an int8[] array for an encrypted column");
    let db = error.as_db_error().expect("an error from the server side");
    assert_eq!(db.code(), &SqlState::DATATYPE_MISMATCH);
    assert!(
        db.message().contains("public.people.email"),
        "{}",
        db.message()
    );
}
