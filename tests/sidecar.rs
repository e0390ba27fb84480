//! The JWE sidecar against a throwaway Postgres, with the proxy in front of the same
//! database: records sent by parties as JWE (compact and JSON, every accepted algorithm),
//! stored as ciphertext, read in plaintext through the proxy and fetched back encrypted to
//! the party; every rejection with a check that nothing was stored.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as URL_SAFE;
use base64::Engine as _;
use common::{KeyKind, SidecarStack};
use josekit::jwe::{self, JweHeader, JweHeaderSet};
use pgcloak::sidecar::jose;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `payload` signed by `party` with its own key (RS256, ES256 or EdDSA by key type).
fn signed_by(s: &SidecarStack, key_file: &str, kid: &str, payload: &[u8]) -> String {
    let signer = jose::signer(&s.key(key_file)).unwrap();
    jose::sign(payload, signer.as_ref(), kid).unwrap()
}

/// A record signed by `party` with its own key.
fn signed(s: &SidecarStack, party: &str, record: &Value) -> String {
    signed_by(
        s,
        &format!("{party}.pem"),
        party,
        record.to_string().as_bytes(),
    )
}

/// A compact JWE to the sidecar's key (RSA-OAEP-256 or ECDH-ES, A256GCM, cty JWT).
fn to_sidecar(s: &SidecarStack, plaintext: &str) -> String {
    let encrypter = jose::encrypter(&s.key("sidecar.pub.pem")).unwrap();
    jose::encrypt(plaintext.as_bytes(), encrypter.as_ref(), true, false).unwrap()
}

/// A compact JWE with an explicit `alg` (through `encrypter`) and `enc`.
fn compact_with(plaintext: &str, encrypter: &dyn jwe::JweEncrypter, enc: &str) -> String {
    let mut header = JweHeader::new();
    header.set_content_encryption(enc);
    header.set_content_type("JWT");
    jwe::serialize_compact(plaintext.as_bytes(), &header, encrypter).unwrap()
}

/// A flattened JSON JWE with an explicit `alg` and `enc`.
fn json_with(plaintext: &str, encrypter: &dyn jwe::JweEncrypter, enc: &str) -> String {
    let mut header = JweHeaderSet::new();
    header.set_content_encryption(enc, true);
    header.set_content_type("JWT", true);
    jwe::serialize_flattened_json(plaintext.as_bytes(), Some(&header), None, None, encrypter)
        .unwrap()
}

/// A PS256 JWS made with OpenSSL directly (RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt).
fn ps256(key_pem: &[u8], kid: &str, record: &Value) -> String {
    use openssl::hash::MessageDigest;
    use openssl::rsa::Padding;
    use openssl::sign::{RsaPssSaltlen, Signer};
    let header = URL_SAFE.encode(json!({ "alg": "PS256", "kid": kid }).to_string());
    let input = format!("{header}.{}", URL_SAFE.encode(record.to_string()));
    let key = openssl::pkey::PKey::private_key_from_pem(key_pem).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
    signer
        .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
        .unwrap();
    signer.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
    signer.update(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE.encode(signer.sign_to_vec().unwrap()))
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `error` message of a JSON error body.
    fn error(&self) -> String {
        let body = self.json();
        let message = body["error"].as_str();
        message
            .unwrap_or_else(|| panic!("no error: {body}"))
            .to_owned()
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = (response.headers().get("content-type"))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.text().await.unwrap();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn post(
    s: &SidecarStack,
    table: &str,
    content_type: &str,
    body: impl Into<String>,
) -> Answer {
    let url = s.url(&format!("/v1/ingest/{table}"));
    let request = s
        .http
        .post(url)
        .header("content-type", content_type)
        .body(body.into());
    answer(request.send().await.unwrap()).await
}

/// Posts `record` signed by `party` as a compact JWE, expecting 201; returns the id.
async fn ingest(s: &SidecarStack, party: &str, table: &str, record: &Value) -> Value {
    let jwe = to_sidecar(s, &signed(s, party, record));
    let answer = post(s, table, "application/jose", jwe).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.json()["id"].clone()
}

/// Posts `size` bytes chunked (no Content-Length) over a raw connection; the status.
async fn chunked_post(s: &SidecarStack, size: usize) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(s.sidecar.addr())
        .await
        .unwrap();
    let head =
        "POST /v1/ingest/users HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/jose\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let mut request = head.as_bytes().to_vec();
    let mut left = size;
    while left > 0 {
        let n = left.min(64 * 1024);
        request.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        request.resize(request.len() + n, b'a');
        request.extend_from_slice(b"\r\n");
        left -= n;
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer before it has read everything: a failed write is no failure.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no answer: {response:?}"));
    status.parse().unwrap()
}

/// A bearer token for `party` with these claims.
fn token(s: &SidecarStack, party: &str, claims: Value) -> String {
    signed_by(
        s,
        &format!("{party}.pem"),
        party,
        claims.to_string().as_bytes(),
    )
}

fn good_token(s: &SidecarStack, party: &str) -> String {
    token(s, party, json!({ "sub": party, "exp": now() + 120 }))
}

async fn get(s: &SidecarStack, table: &str, id: &str, authorization: Option<&str>) -> Answer {
    let id: String = url_escape(id);
    let mut request = s.http.get(s.url(&format!("/v1/records/{table}/{id}")));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    answer(request.send().await.unwrap()).await
}

fn url_escape(text: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
    (text.bytes())
        .map(|b| match keep(b) {
            true => (b as char).to_string(),
            false => format!("%{b:02X}"),
        })
        .collect()
}

/// Fetches a record as `party` and decrypts the answer with the party's private key.
async fn fetch(s: &SidecarStack, party: &str, table: &str, id: &str, key_file: &str) -> Value {
    let bearer = format!("Bearer {}", good_token(s, party));
    let answer = get(s, table, id, Some(&bearer)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.content_type, "application/jose");
    let key = jose::ServerKey::from_pem(&s.key(key_file)).unwrap();
    let plaintext = key.decrypt_compact(answer.body.as_bytes()).unwrap();
    serde_json::from_slice(&plaintext).unwrap()
}

/// The user row read through the proxy (plaintext) and directly from Postgres.
async fn user_both_ways(s: &SidecarStack, id: i32) -> (Vec<Option<String>>, Vec<Option<String>>) {
    let sql = "SELECT email, first_name, last_name, age::text FROM users WHERE id = $1";
    let read = |row: tokio_postgres::Row| (0..4).map(|i| row.get(i)).collect::<Vec<_>>();
    let proxied = s
        .stack
        .connect()
        .await
        .query_one(sql, &[&id])
        .await
        .unwrap();
    let direct = s
        .stack
        .connect_direct()
        .await
        .query_one(sql, &[&id])
        .await
        .unwrap();
    (read(proxied), read(direct))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn josekit_records_in_both_forms_are_stored_encrypted_and_fetched_back() {
    let s = SidecarStack::start(KeyKind::Rsa).await;
    let server_pub = s.key("sidecar.pub.pem");
    let oaep = jwe::RSA_OAEP.encrypter_from_pem(&server_pub).unwrap();
    let oaep256 = jwe::RSA_OAEP_256.encrypter_from_pem(&server_pub).unwrap();
    let ps_signed = |record: &Value| ps256(&s.key("partner-a.pem"), "partner-a", record);
    let record = |n: usize| {
        json!({ "email": format!("ann{n}@example.com"), "first_name": format!("Ann{n}"),
                "last_name": "Lee", "age": 40 + n })
    };
    // (content type, body) for the four combinations of form, alg, enc and JWS alg.
    let bodies = [
        (
            "application/jose",
            to_sidecar(&s, &signed(&s, "partner-a", &record(0))),
        ),
        (
            "application/jose",
            compact_with(&ps_signed(&record(1)), &oaep, "A128GCM"),
        ),
        (
            "application/jose+json",
            json_with(&signed(&s, "partner-a", &record(2)), &oaep, "A128CBC-HS256"),
        ),
        (
            "application/jose+json",
            json_with(&ps_signed(&record(3)), &oaep256, "A256GCM"),
        ),
        (
            "application/jose",
            compact_with(
                &signed(&s, "partner-a", &record(4)),
                &oaep256,
                "A128CBC-HS256",
            ),
        ),
    ];
    for (n, (content_type, body)) in bodies.into_iter().enumerate() {
        let answer = post(&s, "users", content_type, body).await;
        assert_eq!(answer.status, 201, "body {n}: {}", answer.body);
        assert_eq!(answer.json(), json!({ "id": n + 1 }));
        let id = n as i32 + 1;
        let (proxied, direct) = user_both_ways(&s, id).await;
        let expected = record(n);
        assert_eq!(proxied[0].as_deref(), expected["email"].as_str());
        assert_eq!(proxied[1].as_deref(), expected["first_name"].as_str());
        assert_eq!(proxied[2].as_deref(), Some("Lee"));
        assert_eq!(proxied[3], Some((40 + n).to_string()));
        for (column, value) in ["email", "first_name", "last_name"].iter().zip(&direct) {
            let value = value.as_deref().unwrap();
            assert!(value.starts_with("pgc1$"), "{column} stored as {value}");
        }
        assert_eq!(direct[3], Some((40 + n).to_string()), "age is not PII");
    }
    // The deterministic email is searchable through the proxy.
    let proxy = s.stack.connect().await;
    let rows = proxy
        .query("SELECT id FROM users WHERE email = 'ann3@example.com'", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);

    // Fetch: the party's columns plus the key, never the others.
    proxy
        .execute(
            "UPDATE users SET plan = 'pro', internal_note = 'vip' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    let row = fetch(&s, "partner-a", "users", "1", "partner-a.pem").await;
    assert_eq!(
        row,
        json!({ "id": 1, "email": "ann0@example.com", "first_name": "Ann0", "last_name": "Lee", "age": 40 })
    );

    // A composite key comes back as an object and fetches by that object.
    let membership = json!({ "org": "acme", "member": 7, "role": "admin" });
    let id = ingest(&s, "partner-a", "memberships", &membership).await;
    assert_eq!(id, json!({ "org": "acme", "member": 7 }));
    let row = fetch(
        &s,
        "partner-a",
        "public.memberships",
        &id.to_string(),
        "partner-a.pem",
    )
    .await;
    assert_eq!(row, membership);
    let direct = s.stack.connect_direct().await;
    let role: String = direct
        .query_one("SELECT role FROM memberships", &[])
        .await
        .unwrap()
        .get(0);
    assert!(role.starts_with("pgc1$r$"), "{role}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_server_key_takes_the_ecdh_es_family_from_ec_and_ed25519_parties() {
    let s = SidecarStack::start(KeyKind::Ec).await;
    let server_pub = s.key("sidecar.pub.pem");
    let algs = [
        (
            jwe::ECDH_ES.encrypter_from_pem(&server_pub).unwrap(),
            "A256GCM",
        ),
        (
            jwe::ECDH_ES_A128KW.encrypter_from_pem(&server_pub).unwrap(),
            "A128GCM",
        ),
        (
            jwe::ECDH_ES_A256KW.encrypter_from_pem(&server_pub).unwrap(),
            "A128CBC-HS256",
        ),
    ];
    let mut n = 0;
    for (encrypter, enc) in &algs {
        for party in ["partner-b", "partner-c"] {
            n += 1;
            let record = json!({ "item": format!("widget-{n}"), "qty": n });
            let signed = signed(&s, party, &record);
            let (content_type, body) = match n % 2 {
                0 => ("application/jose", compact_with(&signed, encrypter, enc)),
                _ => ("application/jose+json", json_with(&signed, encrypter, enc)),
            };
            let answer = post(&s, "orders", content_type, body).await;
            assert_eq!(answer.status, 201, "{party} {enc}: {}", answer.body);
            assert_eq!(answer.json(), json!({ "id": n }));
        }
    }
    // Responses: ECDH-ES to partner-b's P-256 key, to partner-c's X25519 key.
    let row = fetch(&s, "partner-b", "orders", "1", "partner-b.pem").await;
    assert_eq!(row, json!({ "id": 1, "item": "widget-1", "qty": 1 }));
    let row = fetch(&s, "partner-c", "orders", "2", "partner-c-x25519.pem").await;
    assert_eq!(row, json!({ "id": 2, "item": "widget-2", "qty": 2 }));
    // partner-b may write users.email only; it is encrypted like the proxy does.
    let id = ingest(
        &s,
        "partner-b",
        "users",
        &json!({ "email": "bo@example.com" }),
    )
    .await;
    let proxy = s.stack.connect().await;
    let sql = "SELECT id FROM users WHERE email = 'bo@example.com'";
    let found: i32 = proxy.query_one(sql, &[]).await.unwrap().get(0);
    assert_eq!(json!(found), id);

    // RSA algorithms do not apply to an EC server key.
    let intruder_rsa = jwe::RSA_OAEP
        .encrypter_from_pem(s.key("intruder.pub.pem"))
        .unwrap();
    let body = compact_with(
        &signed(&s, "partner-b", &json!({ "item": "x" })),
        &intruder_rsa,
        "A256GCM",
    );
    let answer = post(&s, "orders", "application/jose", body).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.error().contains("RSA-OAEP is not accepted"),
        "{}",
        answer.body
    );
}

/// (what, table, Content-Type, body, status, part of the error message)
type IngestCase = (
    &'static str,
    &'static str,
    &'static str,
    String,
    u16,
    &'static str,
);
/// (what, table, id, Authorization, status, part of the error message)
type FetchCase = (
    &'static str,
    &'static str,
    &'static str,
    Option<String>,
    u16,
    &'static str,
);

/// The submitted values used in rejected requests: none may appear in an error body.
const SECRETS: [&str; 4] = ["secret-mail@example.com", "Zelda", "Quux", "not-a-number"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingest_rejection_is_clear_and_stores_nothing() {
    let s = SidecarStack::start(KeyKind::Rsa).await;
    ingest(
        &s,
        "partner-a",
        "users",
        &json!({ "email": SECRETS[0], "first_name": "Ann" }),
    )
    .await;
    let good =
        json!({ "email": "new@example.com", "first_name": SECRETS[1], "last_name": SECRETS[2] });
    let jwe_of = |plaintext: &str| to_sidecar(&s, plaintext);
    let signed_a = |record: &Value| signed(&s, "partner-a", record);
    let intruder_jwe = {
        let encrypter = jose::encrypter(&s.key("intruder.pub.pem")).unwrap();
        jose::encrypt(signed_a(&good).as_bytes(), encrypter.as_ref(), true, false).unwrap()
    };
    let unsigned_none = {
        let header = URL_SAFE.encode(r#"{"alg":"none","kid":"partner-a"}"#);
        format!("{header}.{}.", URL_SAFE.encode(good.to_string()))
    };
    #[rustfmt::skip]
    let cases: Vec<IngestCase> = vec![
        ("malformed JSON body", "users", "application/jose+json", "{\"protected\":".into(), 400, "not a JWE"),
        ("wrong content type", "users", "text/plain", jwe_of(&signed_a(&good)), 400, "Content-Type"),
        ("no content type", "users", "", jwe_of(&signed_a(&good)), 400, "Content-Type"),
        ("not a JWE", "users", "application/jose", "hello.world".into(), 400, "not a JWE"),
        ("JWS where a JWE belongs", "users", "application/jose", signed_a(&good), 400, "not a JWE"),
        ("wrong recipient", "users", "application/jose", intruder_jwe, 400, "cannot be decrypted"),
        ("payload not an object", "users", "application/jose", jwe_of(&signed_a(&json!([SECRETS[1]]))), 400, "not a JSON object"),
        ("empty record", "users", "application/jose", jwe_of(&signed_a(&json!({}))), 400, "names no columns"),
        ("unknown column", "users", "application/jose", jwe_of(&signed_a(&json!({ "nickname": SECRETS[1] }))), 400, "unknown column public.users.nickname"),
        ("bad value", "users", "application/jose", jwe_of(&signed_a(&json!({ "email": "x@y", "age": SECRETS[3] }))), 400, "does not fit"),
        ("ciphertext as value", "users", "application/jose", jwe_of(&signed_a(&json!({ "email": "pgc1$d$AAAAAAAA$AAAA" }))), 400, "looks like a pgcloak ciphertext"),
        ("duplicate unique email", "users", "application/jose", jwe_of(&signed_a(&json!({ "email": SECRETS[0] }))), 409, "already exists"),
        ("unsigned JSON payload", "users", "application/jose", jwe_of(&good.to_string()), 401, "not signed"),
        ("alg none", "users", "application/jose", jwe_of(&unsigned_none), 401, "not signed"),
        ("unknown party", "users", "application/jose", jwe_of(&signed_by(&s, "intruder.pem", "partner-z", good.to_string().as_bytes())), 401, "unknown party"),
        ("forged signature", "users", "application/jose", jwe_of(&signed_by(&s, "intruder.pem", "partner-a", good.to_string().as_bytes())), 401, "does not verify"),
        ("table not allowed", "orders", "application/jose", jwe_of(&signed_a(&json!({ "item": SECRETS[1] }))), 403, "may not use table orders"),
        ("column not allowed", "users", "application/jose", jwe_of(&signed_a(&json!({ "email": "z@z", "plan": SECRETS[2] }))), 403, "may not write public.users.plan"),
        ("another party's column", "users", "application/jose", jwe_of(&signed(&s, "partner-b", &good)), 403, "may not write public.users.first_name"),
        ("over 1 MiB", "users", "application/jose", "a".repeat(1024 * 1024 + 1), 413, "larger than"),
    ];
    for (what, table, content_type, body, status, message) in cases {
        let (users, orders) = (s.count("users").await, s.count("orders").await);
        let answer = post(&s, table, content_type, body).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert!(
            answer.content_type.starts_with("application/json"),
            "{what}"
        );
        let error = answer.error();
        assert!(error.contains(message), "{what}: {error}");
        for secret in SECRETS {
            assert!(
                !answer.body.contains(secret),
                "{what} echoes a value: {}",
                answer.body
            );
        }
        assert_eq!(
            (s.count("users").await, s.count("orders").await),
            (users, orders),
            "{what} stored something"
        );
    }
    assert_eq!(s.count("users").await, 1);
    // Without a Content-Length, the limit applies to what arrives.
    assert_eq!(chunked_post(&s, 1024 * 1024 + 1).await, 413);

    let metrics = answer(s.http.get(s.url("/metrics")).send().await.unwrap()).await;
    assert_eq!(metrics.status, 200);
    for line in [
        "pgcloak_sidecar_requests_total{route=\"/v1/ingest/{table}\",status=\"201\"} 1",
        "pgcloak_sidecar_requests_total{route=\"/v1/ingest/{table}\",status=\"400\"} 11",
        "pgcloak_sidecar_requests_total{route=\"/v1/ingest/{table}\",status=\"401\"} 4",
        "pgcloak_sidecar_requests_total{route=\"/v1/ingest/{table}\",status=\"403\"} 3",
        "pgcloak_sidecar_rejections_total{reason=\"bad_signature\"} 1",
        "pgcloak_sidecar_rejections_total{reason=\"too_large\"} 2",
        "pgcloak_sidecar_rejections_total{reason=\"undecryptable\"} 1",
        "pgcloak_sidecar_request_duration_seconds_count{route=\"/v1/ingest/{table}\"} 22",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "missing {line} in\n{}",
            metrics.body
        );
    }
    for secret in SECRETS {
        assert!(!metrics.body.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_needs_a_fresh_token_of_a_party_allowed_the_table() {
    let s = SidecarStack::start(KeyKind::Rsa).await;
    let id = ingest(
        &s,
        "partner-a",
        "users",
        &json!({ "email": "f@example.com" }),
    )
    .await;
    assert_eq!(id, json!(1));
    let bearer = |token: String| Some(format!("Bearer {token}"));
    let claims = |sub: &str, exp: i64| json!({ "sub": sub, "exp": exp });
    let forged = signed_by(
        &s,
        "intruder.pem",
        "partner-a",
        claims("partner-a", now() + 60).to_string().as_bytes(),
    );
    #[rustfmt::skip]
    let cases: Vec<FetchCase> = vec![
        ("no token", "users", "1", None, 401, "missing"),
        ("basic auth", "users", "1", Some("Basic cGFydG5lci1hOng=".into()), 401, "Bearer"),
        ("garbage token", "users", "1", bearer("garbage".into()), 401, "not signed"),
        ("expired", "users", "1", bearer(token(&s, "partner-a", claims("partner-a", now() - 120))), 401, "expired"),
        ("too long-lived", "users", "1", bearer(token(&s, "partner-a", claims("partner-a", now() + 3600))), 401, "more than 300 s ahead"),
        ("no exp", "users", "1", bearer(token(&s, "partner-a", json!({ "sub": "partner-a" }))), 401, "no numeric `exp`"),
        ("sub is another party", "users", "1", bearer(token(&s, "partner-a", claims("partner-b", now() + 60))), 401, "`sub`"),
        ("forged", "users", "1", bearer(forged), 401, "does not verify"),
        ("unknown party", "users", "1", bearer(signed_by(&s, "intruder.pem", "nobody", claims("nobody", now() + 60).to_string().as_bytes())), 401, "unknown party"),
        ("another party's table", "orders", "1", bearer(good_token(&s, "partner-a")), 403, "may not use table orders"),
        ("table of no party", "pg_authid", "1", bearer(good_token(&s, "partner-a")), 403, "may not use table"),
        ("no such record", "users", "999", bearer(good_token(&s, "partner-a")), 404, "no record"),
        ("id of the wrong type", "users", "abc", bearer(good_token(&s, "partner-a")), 400, "does not fit"),
        ("composite id not an object", "memberships", "7", bearer(good_token(&s, "partner-a")), 400, "JSON object of org, member"),
    ];
    for (what, table, id, authorization, status, message) in cases {
        let answer = get(&s, table, id, authorization.as_deref()).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert!(answer.error().contains(message), "{what}: {}", answer.body);
        assert!(!answer.body.contains("f@example.com"), "{what}");
    }
    // partner-b may read users, but only the email column (and the key).
    let row = fetch(&s, "partner-b", "users", "1", "partner-b.pem").await;
    assert_eq!(row, json!({ "id": 1, "email": "f@example.com" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_upstream() {
    let mut s = SidecarStack::start(KeyKind::Rsa).await;
    let health = answer(s.http.get(s.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({ "status": "ok" }))
    );
    let missing = answer(s.http.get(s.url("/v2/nothing")).send().await.unwrap()).await;
    assert_eq!(missing.status, 404);
    s.stack.pg.stop().unwrap();
    let health = answer(s.http.get(s.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(health.status, 503);
    assert!(health.error().contains("not reachable"));
    let jwe = to_sidecar(
        &s,
        &signed(&s, "partner-a", &json!({ "email": "down@example.com" })),
    );
    let answer = post(&s, "users", "application/jose", jwe).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
}

/// An independent JOSE implementation (Python jwcrypto, tests/sidecar/jwcrypto_party.py)
/// ingests in both serializations and as a JWT with `jti` (once), fetches and decrypts; the
/// rows are then checked through
/// the proxy (plaintext) and directly (ciphertext). Skips without tests/clients/setup.sh,
/// unless PGCLOAK_REQUIRE_CLIENTS=1 (as in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwcrypto_party_interoperates() {
    let s = SidecarStack::start(KeyKind::Rsa).await;
    let Some(report) = common::jwcrypto_party(&s.url(""), &s.dir, None).await else {
        return;
    };
    let ids = report["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    for (id, record) in ids.iter().zip(report["records"].as_array().unwrap()) {
        let (proxied, direct) = user_both_ways(&s, id.as_i64().unwrap() as i32).await;
        assert_eq!(proxied[0].as_deref(), record["email"].as_str());
        assert_eq!(proxied[1].as_deref(), record["first_name"].as_str());
        assert_eq!(proxied[2].as_deref(), record["last_name"].as_str());
        assert_eq!(proxied[3], record["age"].as_i64().map(|a| a.to_string()));
        for value in &direct[..3] {
            assert!(value.as_deref().unwrap().starts_with("pgc1$"), "{value:?}");
        }
    }
    // The two records above and partner-d's single-use one (its replay was refused).
    assert_eq!(
        s.count("users").await,
        3,
        "the forged or replayed record was stored"
    );
}

/// The README's walk-through: `pgcloak jwe encrypt` makes the body, `pgcloak jwe token` the
/// bearer token, `pgcloak jwe decrypt` opens the fetched record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_party_ingests_and_fetches() {
    let s = SidecarStack::start(KeyKind::Rsa).await;
    let jwe = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new(common::pgcloak_bin())
            .arg("jwe")
            .args(args)
            .current_dir(&s.dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "pgcloak jwe {args:?}: {stderr}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let record = r#"{"email": "cli@example.com", "first_name": "Cy", "age": 5}"#;
    let sign = ["--sign-with", "partner-a.pem", "--kid", "partner-a"];
    let compact = jwe(
        &[&["encrypt", "--to", "sidecar.pub.pem"][..], &sign].concat(),
        record.as_bytes(),
    );
    // As `curl --data-binary @file` sends it: with the final newline.
    let answer = post(&s, "users", "application/jose", format!("{compact}\n")).await;
    assert_eq!((answer.status, answer.json()), (201, json!({ "id": 1 })));
    // The command signs a `jti`: the same body posted again is a replay.
    let again = post(&s, "users", "application/jose", compact).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again
        .error()
        .contains("already sent a record with this `jti`"));
    let flattened = jwe(
        &[&["encrypt", "--json", "--to", "sidecar.pub.pem"][..], &sign].concat(),
        br#"{"email": "cli2@example.com"}"#,
    );
    let answer = post(&s, "users", "application/jose+json", flattened).await;
    assert_eq!((answer.status, answer.json()), (201, json!({ "id": 2 })));
    let unsigned = jwe(&["encrypt", "--to", "sidecar.pub.pem"], record.as_bytes());
    assert_eq!(
        post(&s, "users", "application/jose", unsigned).await.status,
        401
    );

    let token = jwe(
        &[
            "token",
            "--sign-with",
            "partner-a.pem",
            "--kid",
            "partner-a",
        ],
        b"",
    );
    let answer = get(&s, "users", "1", Some(&format!("Bearer {token}"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let row = jwe(
        &["decrypt", "--key", "partner-a.pem"],
        answer.body.as_bytes(),
    );
    let row: Value = serde_json::from_str(&row).unwrap();
    let expected = json!({ "id": 1, "email": "cli@example.com", "first_name": "Cy", "last_name": null, "age": 5 });
    assert_eq!(row, expected);

    // keygen writes a usable pair, the private half readable by its owner only.
    jwe(&["keygen", "--out", "fresh", "--name", "party"], b"");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.dir.join("fresh/party.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let round = jwe(&["encrypt", "--to", "fresh/party.pub.pem"], b"[1]");
    assert_eq!(
        jwe(&["decrypt", "--key", "fresh/party.pem"], round.as_bytes()),
        "[1]"
    );
}

/// A record with a `jti` is stored once: posted again (a replay) it is refused 409 while its
/// `exp` lasts, unless the first post was not stored. Claims are not columns; claims that do
/// not hold are refused 401; a party configured with `require_jti` must send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_a_jti_is_stored_once() {
    let s = SidecarStack::start(KeyKind::Rsa).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = |kid: &str, key: &str, record: Value| {
        to_sidecar(&s, &signed_by(&s, key, kid, record.to_string().as_bytes()))
    };
    let record = json!({ "email": "once@example.com", "jti": "rec-1", "iat": now, "exp": now + 120, "sub": "partner-a" });
    let once = body("partner-a", "partner-a.pem", record);
    let first = post(&s, "users", "application/jose", once.clone()).await;
    assert_eq!((first.status, first.json()), (201, json!({ "id": 1 })));
    let again = post(&s, "users", "application/jose", once).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again
        .error()
        .contains("partner-a has already sent a record with this `jti`"));
    assert_eq!(s.count("users").await, 1);
    // The same record posted 8 times at once: stored once.
    let burst = body(
        "partner-a",
        "partner-a.pem",
        json!({ "email": "burst@example.com", "jti": "rec-burst", "exp": now + 120 }),
    );
    let answers = futures::future::join_all(
        (0..8).map(|_| post(&s, "users", "application/jose", burst.clone())),
    )
    .await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(s.count("users").await, 2);
    // A record that was not stored is not remembered: posted again it fails the same way.
    let duplicate = body(
        "partner-a",
        "partner-a.pem",
        json!({ "email": "once@example.com", "jti": "rec-2", "exp": now + 120 }),
    );
    for _ in 0..2 {
        let answer = post(&s, "users", "application/jose", duplicate.clone()).await;
        assert_eq!(answer.status, 409, "{}", answer.body);
        assert!(
            answer.error().contains("same key already exists"),
            "{}",
            answer.body
        );
    }
    // Another party's `jti` is its own.
    let other = body(
        "partner-b",
        "partner-b.pem",
        json!({ "email": "b@example.com", "jti": "rec-1", "exp": now + 120 }),
    );
    assert_eq!(
        post(&s, "users", "application/jose", other).await.status,
        201
    );
    for (what, kid, record, message) in [
        (
            "expired",
            "partner-a",
            json!({ "email": "x1@example.com", "exp": now - 100 }),
            "the record has expired",
        ),
        (
            "far ahead",
            "partner-a",
            json!({ "email": "x2@example.com", "jti": "r", "exp": now + 3600 }),
            "more than 300 s ahead",
        ),
        (
            "jti without exp",
            "partner-a",
            json!({ "email": "x3@example.com", "jti": "r3" }),
            "needs an `exp`",
        ),
        (
            "another issuer",
            "partner-a",
            json!({ "email": "x4@example.com", "iss": "partner-b" }),
            "`iss` must be the party id",
        ),
        (
            "audience",
            "partner-a",
            json!({ "email": "x5@example.com", "aud": "someone" }),
            "`aud` is not accepted",
        ),
        (
            "required jti",
            "partner-d",
            json!({ "email": "x6@example.com" }),
            "party partner-d must send `jti` and `exp`",
        ),
    ] {
        let answer = post(
            &s,
            "users",
            "application/jose",
            body(kid, "partner-a.pem", record),
        )
        .await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
        assert!(answer.error().contains(message), "{what}: {}", answer.body);
    }
    let with_jti = body(
        "partner-d",
        "partner-a.pem",
        json!({ "email": "d@example.com", "jti": "d-1", "exp": now + 60 }),
    );
    assert_eq!(
        post(&s, "users", "application/jose", with_jti).await.status,
        201
    );
    assert_eq!(s.count("users").await, 4);

    let metrics = answer(s.http.get(s.url("/metrics")).send().await.unwrap()).await;
    for line in [
        "pgcloak_sidecar_rejections_total{reason=\"replayed\"} 8",
        "pgcloak_sidecar_rejections_total{reason=\"bad_claims\"} 6",
        "pgcloak_sidecar_rejections_total{reason=\"conflict\"} 2",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "missing {line} in\n{}",
            metrics.body
        );
    }
}

/// docs/openapi.yaml is valid YAML and describes exactly the routes the sidecar serves.
#[test]
fn openapi_describes_the_routes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let paths = doc["paths"].as_mapping().unwrap();
    let names: Vec<&str> = paths.keys().filter_map(|k| k.as_str()).collect();
    let routes = [
        "/v1/ingest/{table}",
        "/v1/records/{table}/{id}",
        "/healthz",
        "/metrics",
    ];
    assert_eq!(names, routes);
    let ingest = &doc["paths"]["/v1/ingest/{table}"]["post"]["responses"];
    for status in ["201", "400", "401", "403", "413"] {
        assert!(ingest.get(status).is_some(), "ingest {status}");
    }
}

/// `pgcloak serve` with a `sidecar` section runs both, sharing one keyring: a record posted
/// to its sidecar reads as plaintext through its proxy. At trace level, its log holds none of
/// the submitted values, accepted or refused; SIGTERM stops both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_proxy_and_sidecar_on_one_keyring_and_logs_no_values() {
    let s = SidecarStack::start(KeyKind::Rsa).await;
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (proxy_port, sidecar_port) = (port(0), port(1));
    let config = s.dir.join("serve.yaml");
    let tables = common::SIDECAR_POLICY.replace('\n', "\n  ");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{proxy_port}\"\nupstream: {{ host: 127.0.0.1, port: {} }}\n\
             keys: {{ master_key_env: SERVE_TEST_KEY }}\ntables:{tables}\n\
             sidecar:\n  listen: \"127.0.0.1:{sidecar_port}\"\n  database: postgres\n  user: postgres\n  \
             password_env: SERVE_TEST_PW\n  private_key_file: sidecar.pem\n  parties:\n    partner-a:\n      \
             public_key_file: partner-a.pub.pem\n      tables: {{ users: [email, first_name] }}\n",
            s.stack.pg.port()
        ),
    )
    .unwrap();
    let log = s.dir.join("serve.log");
    let mut child = std::process::Command::new(common::pgcloak_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .env("PGCLOAK_LOG_FORMAT", "json")
        .env(
            "SERVE_TEST_KEY",
            pgcloak::crypto::MasterKey::generate().to_base64(),
        )
        .env("SERVE_TEST_PW", common::PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{sidecar_port}");
    let http = reqwest::Client::new();
    let healthy = common::eventually(std::time::Duration::from_secs(20), || async {
        let health = http.get(format!("{base}/healthz")).send().await;
        health.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        healthy,
        "the sidecar of pgcloak serve did not become healthy"
    );

    let post = |record: Value| {
        let body = to_sidecar(&s, &signed(&s, "partner-a", &record));
        let request = http.post(format!("{base}/v1/ingest/users"));
        async move {
            request
                .header("content-type", "application/jose")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let secret = json!({ "email": "serve-secret@example.com", "first_name": "Xanthippe" });
    assert_eq!(post(secret.clone()).await, 201);
    let refused = json!({ "email": "refused-secret@example.com", "plan": "Quokka" });
    assert_eq!(post(refused).await, 403);
    assert_eq!(
        post(json!({ "email": "x@example.com", "age": "Wombat" })).await,
        403
    );

    let url = format!(
        "postgresql://postgres:{}@127.0.0.1:{proxy_port}/postgres",
        common::PASSWORD
    );
    let proxy = common::connect(&url).await;
    let row = proxy
        .query_one(
            "SELECT first_name FROM users WHERE email = 'serve-secret@example.com'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Xanthippe");
    drop(proxy);

    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stopped = common::eventually(std::time::Duration::from_secs(20), || {
        let exited = child.try_wait().unwrap();
        async move { exited.is_some() }
    })
    .await;
    assert!(stopped, "pgcloak serve did not stop on SIGTERM");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("pgcloak sidecar listening"), "{log}");
    assert!(log.contains(r#""reason":"column_not_allowed""#), "{log}");
    for value in [
        "serve-secret",
        "Xanthippe",
        "refused-secret",
        "Quokka",
        "Wombat",
    ] {
        assert!(!log.contains(value), "the log holds {value}:\n{log}");
    }
}
