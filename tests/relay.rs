//! Query traffic through the proxy with tokio-postgres: both protocols, statements and
//! portals, pipelining, transactions, COPY, LISTEN/NOTIFY, notices, cancel, big results.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{connect, Stack};
use futures::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

fn no_params() -> impl ExactSizeIterator<Item = &'static (dyn ToSql + Sync)> {
    std::iter::empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries() {
    let stack = Stack::start().await;
    let client = stack.connect().await;

    let messages = client
        .simple_query("CREATE TABLE t (id int, name text); INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT name FROM t ORDER BY id")
        .await
        .unwrap();
    let names: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["a", "b"]);

    let row = client
        .query_one(
            "SELECT name, id + $1 FROM t WHERE id = $2",
            &[&10i32, &2i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "b");
    assert_eq!(row.get::<_, i32>(1), 12);

    // Unnamed statement: Parse/Bind/Execute in one round trip.
    let rows = client
        .query_typed("SELECT $1::text || '!'", &[(&"hi", Type::TEXT)])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, &str>(0), "hi!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_reused_and_pipelined() {
    let stack = Stack::start().await;
    let client = stack.connect().await;
    let add = client.prepare("SELECT $1::int + $2::int").await.unwrap();
    for i in 0..100i32 {
        let row = client.query_one(&add, &[&i, &1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    // Polled together, these queries share the connection without waiting for each other.
    let futures = (0..200i32).map(|i| {
        let client = &client;
        let add = &add;
        async move {
            client
                .query_one(add, &[&i, &i])
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    });
    let sums = futures::future::join_all(futures).await;
    assert_eq!(sums, (0..200).map(|i| i * 2).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_fetch_rows_in_batches() {
    let stack = Stack::start().await;
    let mut client = stack.connect().await;
    let tx = client.transaction().await.unwrap();
    let statement = tx
        .prepare("SELECT g FROM generate_series(1, 25) g")
        .await
        .unwrap();
    let portal = tx.bind(&statement, &[]).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 10).await.unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 10);
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    tx.commit().await.unwrap();
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_roll_back() {
    let stack = Stack::start().await;
    let mut client = stack.connect().await;
    client
        .batch_execute("CREATE TABLE acct (n int)")
        .await
        .unwrap();

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO acct VALUES (1)", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO acct VALUES (2)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A failed statement aborts the transaction until ROLLBACK, exactly as in Postgres.
    client.batch_execute("BEGIN").await.unwrap();
    let err = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let err = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();

    let rows = client.query("SELECT n FROM acct", &[]).await.unwrap();
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_error_then_good_query_on_same_connection() {
    let stack = Stack::start().await;
    let client = stack.connect().await;
    let err = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::SYNTAX_ERROR));
    assert!(err
        .as_db_error()
        .unwrap()
        .message()
        .contains("syntax error at or near \"SELEC\""));
    let err = client
        .prepare("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let stack = Stack::start().await;
    let client = stack.connect().await;
    client
        .batch_execute("CREATE TABLE items (id int, name text)")
        .await
        .unwrap();

    let sink = client
        .copy_in("COPY items (id, name) FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let mut expected = String::new();
    for i in 0..10_000 {
        expected.push_str(&format!("{i}\titem {i}\n"));
    }
    for chunk in expected.as_bytes().chunks(7000) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 10_000);

    let stream = client
        .copy_out("COPY (SELECT id, name FROM items ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), expected.as_bytes());

    // A COPY that fails mid-stream reports the server's error and leaves the session usable.
    let sink = client.copy_in("COPY items (id) FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(b"not-a-number\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));
    let row = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_notices_are_delivered() {
    let stack = Stack::start().await;
    let (listener, mut connection) = tokio_postgres::connect(&stack.proxy_url(), NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(messages.for_each(move |message| {
        if let Ok(message) = message {
            let _ = tx.send(message);
        }
        futures::future::ready(())
    }));

    listener.batch_execute("LISTEN events").await.unwrap();
    let notifier = stack.connect().await;
    notifier
        .batch_execute("NOTIFY events, 'payload-1'")
        .await
        .unwrap();
    // The notification arrives while the listener is idle: the proxy must not hold it back.
    let message = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notification within 10 s")
        .unwrap();
    match message {
        AsyncMessage::Notification(n) => {
            assert_eq!((n.channel(), n.payload()), ("events", "payload-1"));
        }
        other => panic!("expected a notification, got {other:?}"),
    }

    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notice within 10 s")
        .unwrap();
    match message {
        AsyncMessage::Notice(notice) => assert_eq!(notice.message(), "hello from plpgsql"),
        other => panic!("expected a notice, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_pg_sleep() {
    let stack = Stack::start().await;
    let client = stack.connect().await;
    let token = client.cancel_token();
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });

    let direct = stack.connect_direct().await;
    let running = common::eventually(Duration::from_secs(10), || async {
        let row = direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'", &[])
            .await
            .unwrap();
        row.get::<_, i64>(0) == 1
    })
    .await;
    assert!(running, "pg_sleep never started");

    // The cancel goes to the proxy's address, on a new connection.
    token.cancel_query(NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), query)
        .await
        .expect("cancelled query returns")
        .unwrap();
    assert_eq!(result.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_result_streams_through() {
    let stack = Stack::start().await;
    let client = stack.connect().await;
    let rows = client
        .query_raw(
            "SELECT g, md5(g::text) FROM generate_series(1, 1000000) g",
            no_params(),
        )
        .await
        .unwrap();
    futures::pin_mut!(rows);
    let (mut count, mut sum) = (0u64, 0i64);
    while let Some(row) = rows.try_next().await.unwrap() {
        count += 1;
        sum += row.get::<_, i32>(0) as i64;
        assert_eq!(row.get::<_, &str>(1).len(), 32);
    }
    assert_eq!(count, 1_000_000);
    assert_eq!(sum, 500_000_500_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_megabyte_value_round_trips() {
    let stack = Stack::start().await;
    let client = stack.connect().await;
    client
        .batch_execute("CREATE TABLE blobs (v text, b bytea)")
        .await
        .unwrap();
    let text: String = (0..8 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let bytes: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    client
        .execute("INSERT INTO blobs VALUES ($1, $2)", &[&text, &bytes])
        .await
        .unwrap();
    let row = client
        .query_one("SELECT v, b FROM blobs", &[])
        .await
        .unwrap();
    assert!(
        row.get::<_, &str>(0) == text,
        "text value changed in transit"
    );
    assert!(
        row.get::<_, &[u8]>(1) == bytes,
        "bytea value changed in transit"
    );

    // The same size in a simple-protocol Query message and its result.
    let sql = format!("SELECT length('{text}')");
    let messages = client.simple_query(&sql).await.unwrap();
    let length = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(length.as_deref(), Some("8388608"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients() {
    let stack = Stack::start().await;
    let url = format!("{}?application_name=fifty", stack.proxy_url());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(51));
    let mut tasks = Vec::new();
    for n in 0..50i32 {
        let url = url.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await;
            client
                .batch_execute("CREATE TEMP TABLE mine (n int)")
                .await
                .unwrap();
            for i in 0..20i32 {
                client
                    .execute("INSERT INTO mine VALUES ($1)", &[&(n * 100 + i)])
                    .await
                    .unwrap();
            }
            barrier.wait().await; // all 50 connected at once
            barrier.wait().await; // until the count below is taken
            let row = client
                .query_one("SELECT sum(n)::int FROM mine", &[])
                .await
                .unwrap();
            row.get::<_, i32>(0) == (0..20).map(|i| n * 100 + i).sum::<i32>()
        }));
    }
    barrier.wait().await;
    let direct = stack.connect_direct().await;
    let row = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fifty'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 50);
    barrier.wait().await;
    for task in tasks {
        assert!(task.await.unwrap(), "a client saw another client's data");
    }
}
