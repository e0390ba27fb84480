//! Several master keys through the proxy: rows written under an older key (k1) stay
//! readable and searchable once a newer key (k2) is current; new rows are written under
//! k2; searches match both keys' ciphertexts in every form pgcloak can rewrite, and what
//! would match one form only is refused, never silently incomplete.

mod common;

use std::sync::Arc;

use common::Stack;
use pgcloak::cloak::Cloak;
use pgcloak::crypto::MasterKey;
use pgcloak::keys::MasterKeys;
use pgcloak::policy::Policy;
use tokio_postgres::Client;

const POLICY: &str = "users:\n  email: deterministic\n  name: randomized\n";
const SCHEMA: &str = "CREATE TABLE users (id int PRIMARY KEY, email text, name text)";

fn cloak(keys: MasterKeys) -> Arc<Cloak> {
    let policy = Policy::from_yaml(&serde_yaml::from_str(POLICY).unwrap()).unwrap();
    Arc::new(Cloak::with_keys(policy, &keys).unwrap())
}

fn key(text: &str) -> MasterKey {
    MasterKey::from_base64(text).unwrap()
}

/// Postgres holding rows 1 and 2 written under k1 alone, and pgcloak with k2 current and
/// k1 still configured, which has written rows 3 and 4. The client is connected to that
/// pgcloak.
async fn rotating() -> (Stack, Client, Client) {
    let (k1, k2) = (
        MasterKey::generate().to_base64(),
        MasterKey::generate().to_base64(),
    );
    let old = Stack::start_full(
        pgcloak::pgtemp::PgTemp::builder(),
        |_| {},
        Some(cloak(MasterKeys::single(key(&k1)))),
    )
    .await;
    let direct = old.connect_direct().await;
    direct.batch_execute(SCHEMA).await.unwrap();
    let before = old.connect().await;
    before
        .execute(
            "INSERT INTO users (id, email, name) VALUES (1, 'a@x', 'Ann'), (2, $1, 'Bo')",
            &[&"b@x"],
        )
        .await
        .unwrap();
    let keys =
        MasterKeys::new(vec![("k2".into(), key(&k2)), ("k1".into(), key(&k1))], "k2").unwrap();
    let proxy = pgcloak::proxy::Proxy::bind(common::settings_for(&old.pg))
        .await
        .unwrap()
        .with_cloak(cloak(keys))
        .spawn()
        .unwrap();
    let mut stack = old;
    std::mem::replace(&mut stack.proxy, proxy).shutdown().await;
    let client = stack.connect().await;
    client
        .execute(
            "INSERT INTO users (id, email, name) VALUES (3, 'c@x', 'Cy'), (4, $1, 'Di')",
            &[&"d@x"],
        )
        .await
        .unwrap();
    (stack, client, direct)
}

async fn ids(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<i32> {
    let rows = client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort();
    ids
}

async fn simple_ids(client: &Client, sql: &str) -> Vec<i32> {
    let mut ids: Vec<i32> = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_under_both_keys_are_read_and_found() {
    let (_stack, client, direct) = rotating().await;
    // Stored: two key ids in the email column, every value an envelope.
    let kids: Vec<String> = direct
        .query("SELECT DISTINCT substr(email, 8, 8) FROM users", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kids.len(), 2, "{kids:?}");
    let all = client
        .query("SELECT id, email, name FROM users ORDER BY id", &[])
        .await
        .unwrap();
    let read: Vec<(i32, String, String)> =
        all.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        read,
        [
            (1, "a@x".into(), "Ann".into()),
            (2, "b@x".into(), "Bo".into()),
            (3, "c@x".into(), "Cy".into()),
            (4, "d@x".into(), "Di".into())
        ]
    );

    // Literals (simple protocol), old key and new key alike.
    for (sql, expected) in [
        ("SELECT id FROM users WHERE email = 'a@x'", vec![1]),
        ("SELECT id FROM users WHERE email = 'c@x'", vec![3]),
        ("SELECT id FROM users WHERE email = 'a@x'::text", vec![1]),
        ("SELECT id FROM users WHERE email = ('b@x')", vec![2]),
        (
            "SELECT id FROM users WHERE email = CAST('d@x' AS varchar)",
            vec![4],
        ),
        ("SELECT id FROM users WHERE email <> 'a@x'", vec![2, 3, 4]),
        (
            "SELECT id FROM users WHERE email IN ('a@x', 'c@x')",
            vec![1, 3],
        ),
        (
            "SELECT id FROM users WHERE email NOT IN ('a@x', 'c@x')",
            vec![2, 4],
        ),
        (
            "SELECT id FROM users WHERE email = ANY(ARRAY['b@x', 'd@x'])",
            vec![2, 4],
        ),
        (
            "SELECT id FROM users WHERE email = ANY('{a@x,d@x}')",
            vec![1, 4],
        ),
        (
            "SELECT id FROM users WHERE email = 'a@x' OR email = 'd@x'",
            vec![1, 4],
        ),
        ("SELECT id FROM users WHERE email = 'nobody@x'", vec![]),
    ] {
        assert_eq!(simple_ids(&client, sql).await, expected, "{sql}");
    }
    // Parameters (extended protocol, prepared by tokio-postgres).
    let by_param = "SELECT id FROM users WHERE email = $1";
    for (email, expected) in [
        ("a@x", vec![1]),
        ("b@x", vec![2]),
        ("c@x", vec![3]),
        ("zz", vec![]),
    ] {
        assert_eq!(ids(&client, by_param, &[&email]).await, expected, "{email}");
    }
    assert_eq!(
        ids(
            &client,
            "SELECT id FROM users WHERE email = $1::text",
            &[&"b@x"]
        )
        .await,
        [2]
    );
    assert_eq!(
        ids(&client, "SELECT id FROM users WHERE email <> $1", &[&"b@x"]).await,
        [1, 3, 4]
    );
    let emails = vec!["a@x", "d@x"];
    assert_eq!(
        ids(
            &client,
            "SELECT id FROM users WHERE email = ANY($1)",
            &[&emails]
        )
        .await,
        [1, 4]
    );
    // A NULL parameter matches nothing, as in Postgres.
    let none: Option<&str> = None;
    assert_eq!(ids(&client, by_param, &[&none]).await, Vec::<i32>::new());

    // Writes found by a search under either key.
    let n = client
        .execute(
            "UPDATE users SET name = $1 WHERE email = $2",
            &[&"Annie", &"a@x"],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = client
        .execute("DELETE FROM users WHERE email = 'd@x'", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let row = client
        .query_one("SELECT name FROM users WHERE email = 'a@x'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Annie");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_matches_one_key_only_is_refused() {
    let (_stack, client, _direct) = rotating().await;
    for sql in [
        "SELECT id FROM users WHERE 'a@x' = email",
        "SELECT id FROM users WHERE email IS NOT DISTINCT FROM 'a@x'",
        "SELECT email, count(*) FROM users GROUP BY email",
        "SELECT DISTINCT email FROM users",
        "SELECT a.id FROM users a JOIN users b ON a.email = b.email",
        "SELECT id FROM users WHERE email IN (SELECT email FROM users WHERE id = 1)",
        "SELECT id FROM users WHERE email = 'a@x' /* c */ ::text",
        // A value stored under k1 is no conflict for its k2 ciphertext: a duplicate would
        // be inserted, or the wrong row left alone.
        "INSERT INTO users (id, email) VALUES (9, 'a@x') ON CONFLICT (email) DO NOTHING",
        "INSERT INTO users (id, email) VALUES (1, 'z@x') ON CONFLICT DO NOTHING",
        "INSERT INTO users (id, email) VALUES (1, 'z@x') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email",
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "0A000", "{sql}: {}", db.message());
        assert!(
            db.message().contains("public.users.email"),
            "{sql}: {}",
            db.message()
        );
        assert!(db.message().contains("k2, k1"), "{sql}: {}", db.message());
        assert!(!db.message().contains("a@x"), "{}", db.message());
        assert!(!db.message().contains("z@x"), "{}", db.message());
    }
    for sql in [
        "SELECT id FROM users WHERE email IN ($1, $2)",
        "INSERT INTO users (id, email) SELECT 9, $1 WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = $1)",
    ] {
        let err = client.prepare(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "0A000", "{sql}: {}", db.message());
    }
    // The session goes on.
    assert_eq!(
        simple_ids(&client, "SELECT id FROM users WHERE email = 'b@x'").await,
        [2]
    );
}

/// A mode change in progress (`previous_mode`): reads work, every search is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_changing_mode_reads_but_is_not_searched() {
    let key_text = MasterKey::generate().to_base64();
    let before = "users:\n  email: deterministic\n  name: randomized\n";
    let policy = Policy::from_yaml(&serde_yaml::from_str(before).unwrap()).unwrap();
    let stack = Stack::start_full(
        pgcloak::pgtemp::PgTemp::builder(),
        |_| {},
        Some(Arc::new(
            Cloak::with_keys(policy, &MasterKeys::single(key(&key_text))).unwrap(),
        )),
    )
    .await;
    stack
        .connect_direct()
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    let client = stack.connect().await;
    client
        .execute(
            "INSERT INTO users (id, email, name) VALUES (1, 'a@x', 'Ann')",
            &[],
        )
        .await
        .unwrap();
    let after = "users:\n  email: deterministic\n  name: { mode: deterministic, previous_mode: randomized }\n";
    let policy = Policy::from_yaml(&serde_yaml::from_str(after).unwrap()).unwrap();
    let cloak = Arc::new(Cloak::with_keys(policy, &MasterKeys::single(key(&key_text))).unwrap());
    let proxy = pgcloak::proxy::Proxy::bind(common::settings_for(&stack.pg))
        .await
        .unwrap()
        .with_cloak(cloak)
        .spawn()
        .unwrap();
    let url = format!(
        "postgresql://postgres:{}@{}/postgres",
        common::PASSWORD,
        proxy.addr()
    );
    let client = common::connect(&url).await;
    let row = client
        .query_one("SELECT name FROM users WHERE email = 'a@x'", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "Ann",
        "the randomized envelope still reads"
    );
    for sql in [
        "SELECT id FROM users WHERE name = 'Ann'",
        "SELECT name, count(*) FROM users GROUP BY name",
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert!(
            db.message().contains("public.users.name is changing mode"),
            "{}",
            db.message()
        );
    }
    let err = client
        .prepare("SELECT id FROM users WHERE name = $1")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|d| d.message().contains("previous_mode")),
        "{err}"
    );
    proxy.shutdown().await;
}
