//! pgcloak's SCRAM client end against a real Postgres 15: the ClientKey that the server end
//! recovers from a client's proof logs in to Postgres, with the verifier read from
//! `pg_authid`, and a key for another password is refused with Postgres's own 28P01. No
//! TLS, so no channel binding: this proves the key schedule and the message flow.

use bytes::BytesMut;
use pgcloak::auth::messages::{Authentication, SaslInitialResponse, SaslResponse};
use pgcloak::auth::{ClientExchange, ClientKey, ServerExchange, Verifier, SCRAM_SHA_256};
use pgcloak::pgtemp::PgTemp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

const PASSWORD: &str = "s3cret-pw";

async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.unwrap();
    let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.unwrap();
    (header[0], body)
}

/// The next Authentication request, or the SQLSTATE of the ErrorResponse sent instead.
async fn read_auth(stream: &mut TcpStream) -> Result<Authentication, String> {
    match read_frame(stream).await {
        (b'R', body) => Ok(Authentication::decode(&body).unwrap()),
        (b'E', body) => Err(sqlstate(&body)),
        (tag, _) => panic!("unexpected message {:?}", tag as char),
    }
}

fn sqlstate(error_body: &[u8]) -> String {
    error_body
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8_lossy(code).into_owned())
        .unwrap_or_default()
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (name, value) in [("user", user), ("database", "postgres")] {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// Logs in as `user` with `key`; Ok once the server is ReadyForQuery.
async fn login(pg: &PgTemp, user: &str, key: ClientKey, verifier: Verifier) -> Result<(), String> {
    let mut stream = TcpStream::connect((pg.host(), pg.port())).await.unwrap();
    stream.write_all(&startup_packet(user)).await.unwrap();
    let Authentication::Sasl(mechanisms) = read_auth(&mut stream).await? else {
        panic!("expected AuthenticationSASL");
    };
    assert_eq!(mechanisms, [SCRAM_SHA_256], "no TLS, so no PLUS");
    let mut client = ClientExchange::new(key, verifier, None).unwrap();
    let (mechanism, first) = client.client_first(&mechanisms).unwrap();
    let mut out = BytesMut::new();
    SaslInitialResponse {
        mechanism: mechanism.to_owned(),
        data: Some(first.into_bytes()),
    }
    .encode(&mut out);
    stream.write_all(&out).await.unwrap();

    let Authentication::SaslContinue(server_first) = read_auth(&mut stream).await? else {
        panic!("expected AuthenticationSASLContinue");
    };
    let last = client.server_first(&server_first).unwrap();
    out.clear();
    SaslResponse {
        data: last.into_bytes(),
    }
    .encode(&mut out);
    stream.write_all(&out).await.unwrap();

    let Authentication::SaslFinal(server_final) = read_auth(&mut stream).await? else {
        panic!("expected AuthenticationSASLFinal");
    };
    client.server_final(&server_final).unwrap();
    assert_eq!(read_auth(&mut stream).await, Ok(Authentication::Ok));
    loop {
        match read_frame(&mut stream).await {
            (b'Z', _) => return Ok(()),
            (b'E', body) => return Err(sqlstate(&body)),
            _ => {}
        }
    }
}

#[tokio::test]
async fn recovered_client_key_logs_in_to_postgres() {
    let pg = PgTemp::builder()
        .superuser_password(PASSWORD)
        .start()
        .expect("start postgres");
    let (db, connection) = tokio_postgres::connect(&pg.url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = db
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&pg.superuser()],
        )
        .await
        .unwrap();
    let verifier = Verifier::parse(row.get(0)).unwrap();
    let (salt, iterations) = (verifier.salt().to_vec(), verifier.iterations());

    // The application proves the password to pgcloak's server end, which recovers its key.
    let app_key = ClientKey::from_password(PASSWORD, &salt, iterations);
    let mut app = ClientExchange::new(app_key, verifier.clone(), None).unwrap();
    let mut proxy = ServerExchange::new(verifier.clone(), None);
    let (mechanism, first) = app.client_first(proxy.mechanisms()).unwrap();
    let server_first = proxy.client_first(mechanism, first.as_bytes()).unwrap();
    let last = app.server_first(server_first.as_bytes()).unwrap();
    let (server_final, recovered) = proxy.client_final(last.as_bytes()).unwrap();
    app.server_final(server_final.as_bytes()).unwrap();

    // pgcloak logs in to Postgres with the recovered key alone.
    login(&pg, pg.superuser(), recovered, verifier)
        .await
        .expect("login with the recovered ClientKey");

    // The key of another password (same salt, so the exchange gets as far as the proof).
    let wrong = Verifier::from_password("not-the-password", &salt, iterations);
    let wrong_key = ClientKey::from_password("not-the-password", &salt, iterations);
    assert_eq!(
        login(&pg, pg.superuser(), wrong_key, wrong).await,
        Err("28P01".to_owned())
    );
}
