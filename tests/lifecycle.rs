//! Connections coming and going: vanished clients leave no backend, upstream restarts cost
//! only their sessions, the connection limit, malformed frames, and psql end to end.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, try_connect, Stack};
use pgcloak::pgtemp::PgTemp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

async fn backends_named(stack: &Stack, name: &str) -> i64 {
    let direct = stack.connect_direct().await;
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_leaves_no_backend_behind() {
    let stack = Stack::start().await;
    // One psql busy in pg_sleep, one idle at its prompt; both killed with SIGKILL.
    for (name, args) in [
        ("busy_victim", vec!["-c", "SELECT pg_sleep(120)"]),
        ("idle_victim", vec![]),
    ] {
        let url = format!("{}?application_name={name}", stack.proxy_url());
        let mut child = Command::new("psql")
            .arg(&url)
            .args(["-X", "-w"])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run psql");
        let connected = eventually(Duration::from_secs(10), || async {
            backends_named(&stack, name).await == 1
        })
        .await;
        assert!(connected, "{name}: psql never connected");
        child.kill().unwrap();
        child.wait().unwrap();
        let gone = eventually(Duration::from_secs(10), || async {
            backends_named(&stack, name).await == 0
        })
        .await;
        assert!(
            gone,
            "{name}: backend still there after its client was killed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stopped_and_restarted() {
    let mut stack = Stack::start().await;
    let client = stack.connect().await;
    client.simple_query("SELECT 1").await.unwrap();

    stack.pg.stop().unwrap();
    // The session on the stopped server ends with an error, not a hang.
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed()
            || err.code() == Some(&SqlState::ADMIN_SHUTDOWN)
            || err.code() == Some(&SqlState::CONNECTION_FAILURE),
        "unexpected error: {err}"
    );
    // New clients get a Postgres-style connection error naming the upstream.
    let Err(err) = try_connect(&stack.proxy_url()).await else {
        panic!("connected while the upstream is down");
    };
    let db = err.as_db_error().expect("an ErrorResponse from pgcloak");
    assert_eq!(
        db.code(),
        &SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION
    );
    assert!(
        db.message()
            .contains("cannot connect to the upstream server"),
        "{}",
        db.message()
    );

    stack.pg.restart().unwrap();
    let client = stack.connect().await;
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_53300() {
    let stack = Stack::start_with(PgTemp::builder(), |s| s.max_connections = 3).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(stack.connect().await);
    }
    let Err(err) = try_connect(&stack.proxy_url()).await else {
        panic!("a fourth client was let in");
    };
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code(), &SqlState::TOO_MANY_CONNECTIONS);
    assert!(
        db.message().contains("max_connections is 3"),
        "{}",
        db.message()
    );
    // Existing sessions are unaffected; a freed slot is usable again.
    clients[0].simple_query("SELECT 1").await.unwrap();
    drop(clients.pop());
    let reconnected = eventually(Duration::from_secs(10), || async {
        try_connect(&stack.proxy_url()).await.is_ok()
    })
    .await;
    assert!(reconnected);
}

/// A raw connection logged in as `trust_user`, read up to its first ReadyForQuery.
async fn raw_session(stack: &Stack) -> TcpStream {
    let mut stream = TcpStream::connect(stack.addr()).await.unwrap();
    let mut body = 196608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0trust_user\0database\0postgres\0\0");
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await.unwrap();
    loop {
        let (tag, _) = read_frame(&mut stream).await.expect("startup response");
        if tag == b'Z' {
            return stream;
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).await.ok()?;
    Some((header[0], body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_client() {
    let builder = PgTemp::builder().hba_line("host all trust_user 127.0.0.1/32 trust");
    let stack = Stack::start_with(builder, |s| s.max_message_bytes = 1024 * 1024).await;
    stack
        .connect_direct()
        .await
        .batch_execute("CREATE ROLE trust_user LOGIN")
        .await
        .unwrap();
    let bystander = stack.connect().await;

    for (what, frame) in [
        ("length below 4", vec![b'Q', 0, 0, 0, 2]),
        ("oversized", vec![b'Q', 0, 0x20, 0, 0]),
    ] {
        let mut stream = raw_session(&stack).await;
        stream.write_all(&frame).await.unwrap();
        let (tag, body) = read_frame(&mut stream)
            .await
            .unwrap_or_else(|| panic!("{what}: no error sent"));
        assert_eq!(tag, b'E', "{what}");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("C08P01"), "{what}: {body}");
        assert!(
            read_frame(&mut stream).await.is_none(),
            "{what}: connection stays open"
        );
        let row = bystander.query_one("SELECT 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
    }

    // A garbage startup packet gets a protocol error too.
    let mut stream = TcpStream::connect(stack.addr()).await.unwrap();
    stream
        .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4])
        .await
        .unwrap();
    let (tag, body) = read_frame(&mut stream)
        .await
        .expect("error for garbage startup");
    assert_eq!(tag, b'E');
    assert!(String::from_utf8_lossy(&body).contains("C08P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_end_to_end() {
    let stack = Stack::start().await;
    let out = stack.psql(&[
        "-c",
        "CREATE TABLE fruit (id serial PRIMARY KEY, name text NOT NULL)",
        "-c",
        "INSERT INTO fruit (name) VALUES ('apple'), ('pear')",
    ]);
    common::stdout(&out);
    // Backslash commands query the catalog through the proxy.
    let out = common::stdout(&stack.psql(&["-c", "\\dt"]));
    assert!(out.contains("fruit"), "{out}");
    let out = common::stdout(&stack.psql(&["-c", "\\d fruit"]));
    assert!(out.contains("name") && out.contains("text"), "{out}");

    // \copy in and out, through COPY ... FROM STDIN / TO STDOUT.
    let dir = std::env::temp_dir().join(format!("pgcloak-psql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv_in = dir.join("in.csv");
    std::fs::write(&csv_in, "plum\nfig\n").unwrap();
    let copy_in = format!("\\copy fruit (name) FROM '{}' CSV", csv_in.display());
    common::stdout(&stack.psql(&["-c", &copy_in]));
    let out = common::stdout(&stack.psql(&[
        "-At",
        "-c",
        "SELECT string_agg(name, ',' ORDER BY id) FROM fruit",
    ]));
    assert_eq!(out.trim(), "apple,pear,plum,fig");
    let out = common::stdout(&stack.psql(&["-c", "\\copy fruit TO STDOUT CSV"]));
    assert_eq!(out, "1,apple\n2,pear\n3,plum\n4,fig\n");
    std::fs::remove_dir_all(&dir).unwrap();

    // 1,000,000 rows in the simple protocol.
    let out =
        common::stdout(&stack.psql(&["-At", "-c", "SELECT g FROM generate_series(1, 1000000) g"]));
    assert_eq!(out.lines().count(), 1_000_000);
    assert_eq!(out.lines().last(), Some("1000000"));

    // An error looks exactly as it does without the proxy: same exit code, same output.
    let args = [
        "-c",
        "\\set VERBOSITY verbose",
        "-c",
        "SELECT * FROM missing",
    ];
    let through = stack.psql(&args);
    let direct = common::psql(&stack.pg.url("postgres"), &args);
    assert!(!through.status.success());
    assert_eq!(through.status.code(), direct.status.code());
    let stderr = String::from_utf8_lossy(&through.stderr);
    assert!(stderr.contains("42P01"), "{stderr}");
    assert_eq!(stderr, String::from_utf8_lossy(&direct.stderr));
}
