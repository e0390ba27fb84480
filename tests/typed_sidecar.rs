//! The JWE sidecar on typed PII columns (issue 13), against a throwaway Postgres: a record's
//! values arrive as the JSON kinds that fit their declared types, are stored as envelopes of
//! their canonical forms (what the proxy encrypts for the same values), come back from a
//! fetch as those JSON kinds, and values the type does not accept are refused naming the
//! column and Postgres's SQLSTATE, never the value, with nothing stored.

mod common;

use std::sync::Arc;

use common::{write_key_pair, KeyKind, PASSWORD};
use pgcloak::cloak::Cloak;
use pgcloak::crypto::MasterKey;
use pgcloak::pgtemp::PgTemp;
use pgcloak::policy::Policy;
use pgcloak::sidecar::jose;
use serde_json::{json, Value};

const SCHEMA: &str = "
CREATE TABLE people (id serial PRIMARY KEY, born text, salary text, consent text, profile text,
                     seen text, token text, photo text, score text, age text, plan text,
                     visits int);
CREATE TABLE badges (code text PRIMARY KEY, holder text);
CREATE TABLE legacy (id serial PRIMARY KEY, born date);
";

const POLICY: &str = "
people:
  born: { mode: deterministic, type: date }
  salary: { mode: randomized, type: numeric }
  consent: { mode: randomized, type: boolean }
  profile: { mode: randomized, type: jsonb }
  seen: { mode: randomized, type: timestamptz }
  token: { mode: deterministic, type: uuid }
  photo: { mode: randomized, type: bytea }
  score: { mode: randomized, type: double precision }
  age: { mode: deterministic, type: smallint }
badges:
  code: { mode: deterministic, type: uuid }
legacy:
  born: { mode: deterministic, type: date }
";

const PARTIES: &str = "
  parties:
    partner-a:
      public_key_file: partner-a.pub.pem
      tables:
        people: [born, salary, consent, profile, seen, token, photo, score, age, plan, visits]
        badges: [code, holder]
        legacy: [born]
";

const PASSWORD_ENV: &str = "PGCLOAK_TEST_TYPED_SIDECAR_PASSWORD";

struct Setup {
    pg: PgTemp,
    cloak: Arc<Cloak>,
    dir: std::path::PathBuf,
    sidecar: pgcloak::sidecar::SidecarHandle,
    http: reqwest::Client,
}

impl Setup {
    async fn start() -> Setup {
        let pg = PgTemp::builder()
            .superuser_password(PASSWORD)
            .start()
            .unwrap();
        let dir = common::fresh_dir("typed-sidecar");
        write_key_pair(&dir, "sidecar", KeyKind::Rsa);
        write_key_pair(&dir, "partner-a", KeyKind::Rsa);
        let policy = Policy::from_yaml(&serde_yaml::from_str(POLICY).unwrap()).unwrap();
        let cloak = Arc::new(Cloak::with_key(policy, &MasterKey::generate()));
        let direct = common::connect(&pg.url("postgres")).await;
        direct.batch_execute(SCHEMA).await.unwrap();
        // SAFETY of set_var: the only test of this binary that reads it sets it.
        std::env::set_var(PASSWORD_ENV, PASSWORD);
        let sidecar = common::spawn_sidecar(&dir, &pg, PASSWORD_ENV, PARTIES, cloak.clone()).await;
        Setup {
            pg,
            cloak,
            dir,
            sidecar,
            http: reqwest::Client::new(),
        }
    }

    fn key(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).unwrap()
    }

    /// Posts `record`, signed by partner-a, as a compact JWE: (status, JSON body).
    async fn post(&self, table: &str, record: &Value) -> (u16, Value) {
        let signer = jose::signer(&self.key("partner-a.pem")).unwrap();
        let jws = jose::sign(record.to_string().as_bytes(), signer.as_ref(), "partner-a").unwrap();
        let encrypter = jose::encrypter(&self.key("sidecar.pub.pem")).unwrap();
        let jwe = jose::encrypt(jws.as_bytes(), encrypter.as_ref(), true, false).unwrap();
        let url = format!("http://{}/v1/ingest/{table}", self.sidecar.addr());
        let response = (self.http.post(url))
            .header("content-type", "application/jose")
            .body(jwe)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// Fetches a record as partner-a and opens the JWE answer: (status, JSON).
    async fn fetch(&self, table: &str, id: &str) -> (u16, Value) {
        let claims = json!({ "sub": "partner-a", "exp": now() + 120 });
        let signer = jose::signer(&self.key("partner-a.pem")).unwrap();
        let token =
            jose::sign(claims.to_string().as_bytes(), signer.as_ref(), "partner-a").unwrap();
        let url = format!("http://{}/v1/records/{table}/{id}", self.sidecar.addr());
        let response = (self.http.get(url))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        if status != 200 {
            return (
                status,
                serde_json::from_str(&body).unwrap_or(Value::String(body)),
            );
        }
        let key = jose::ServerKey::from_pem(&self.key("partner-a.pem")).unwrap();
        let plaintext = key.decrypt_compact(body.as_bytes()).unwrap();
        (status, serde_json::from_slice(&plaintext).unwrap())
    }

    /// The stored text of `columns` of one row, read directly from Postgres.
    async fn stored(&self, sql: &str) -> Vec<Option<String>> {
        let direct = common::connect(&self.pg.url("postgres")).await;
        let row = direct.query_one(sql, &[]).await.unwrap();
        (0..row.len()).map(|i| row.get(i)).collect()
    }

    /// The canonical form inside an envelope of `column` (`schema.table.column`).
    fn opened(&self, column: &str, envelope: &str) -> Vec<u8> {
        let plain = self
            .cloak
            .keyring()
            .decrypt(envelope.as_bytes(), Some(column));
        plain.unwrap_or_else(|e| panic!("{column}: {e}")).to_vec()
    }

    async fn count(&self, table: &str) -> i64 {
        let direct = common::connect(&self.pg.url("postgres")).await;
        let sql = format!("SELECT count(*) FROM {table}");
        direct.query_one(&sql, &[]).await.unwrap().get(0)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_secs() as i64
}

const TYPED: [&str; 9] = [
    "born", "salary", "consent", "profile", "seen", "token", "photo", "score", "age",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_records_are_stored_as_canonical_envelopes_and_fetched_as_their_json_kinds() {
    let s = Setup::start().await;
    // Each kind as a party's JSON naturally sends it.
    let record = json!({
        "born": "2020-1-2", "salary": 1234.50, "consent": true,
        "profile": { "tags": ["a", "b"], "level": 3, "name": "Ann" },
        "seen": "2020-01-02 03:04:05.5+02", "token": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "photo": "\\x89504e47", "score": 0.1, "age": 42, "plan": "pro", "visits": 7
    });
    let (status, body) = s.post("people", &record).await;
    assert_eq!((status, &body), (201, &json!({ "id": 1 })));
    let columns = TYPED.join(", ");
    let stored = s
        .stored(&format!("SELECT {columns}, plan, visits::text FROM people"))
        .await;
    let expected: [&[u8]; 9] = [
        b"2020-01-02",
        b"1234.5",
        b"t",
        b"{\"name\": \"Ann\", \"tags\": [\"a\", \"b\"], \"level\": 3}",
        b"2020-01-02 01:04:05.5+00",
        b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        &[0x89, b'P', b'N', b'G'],
        b"0.1",
        b"42",
    ];
    for ((column, value), canonical) in TYPED.iter().zip(&stored).zip(expected) {
        let value = value.as_deref().unwrap();
        assert!(value.starts_with("pgc1$"), "{column} stored as {value}");
        let opened = s.opened(&format!("public.people.{column}"), value);
        assert_eq!(
            opened,
            canonical,
            "{column}: {}",
            String::from_utf8_lossy(&opened)
        );
    }
    assert_eq!(stored[9].as_deref(), Some("pro"), "plan is not PII");
    assert_eq!(stored[10].as_deref(), Some("7"), "visits is not PII");

    let (status, row) = s.fetch("people", "1").await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(
        row,
        json!({
            "id": 1, "born": "2020-01-02", "salary": 1234.5, "consent": true,
            "profile": { "name": "Ann", "tags": ["a", "b"], "level": 3 },
            "seen": "2020-01-02 01:04:05.5+00", "token": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "photo": "\\x89504e47", "score": 0.1, "age": 42, "plan": "pro", "visits": 7
        })
    );

    // The same values in other forms Postgres accepts encrypt to the same canonical forms:
    // equal deterministic ciphertexts, so the proxy's searches find both rows.
    let other = json!({
        "born": "2020-01-02", "salary": "1234.500", "consent": "yes", "profile": "plain",
        "token": "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "score": "1e-1", "age": " 42 ",
        "seen": null
    });
    let (status, body) = s.post("people", &other).await;
    assert_eq!((status, &body), (201, &json!({ "id": 2 })));
    let pairs = s
        .stored(
            "SELECT ((SELECT born FROM people WHERE id = 1) = born)::text, \
                 ((SELECT token FROM people WHERE id = 1) = token)::text, \
                 ((SELECT age FROM people WHERE id = 1) = age)::text, (seen IS NULL)::text \
                 FROM people WHERE id = 2",
        )
        .await;
    assert_eq!(pairs, vec![Some("true".into()); 4]);
    let (_, row) = s.fetch("people", "2").await;
    let wanted = json!({ "salary": 1234.5, "consent": true, "profile": "plain", "score": 0.1 });
    for (column, value) in wanted.as_object().unwrap() {
        assert_eq!(&row[column], value, "{column}: {row}");
    }
    assert_eq!(row["seen"], Value::Null);

    // A deterministic typed key is looked up by its canonical form.
    let badge = json!({ "code": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "holder": "x" });
    let (status, id) = s.post("badges", &badge).await;
    assert_eq!(
        (status, &id),
        (
            201,
            &json!({ "id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" })
        )
    );
    let (status, row) = s
        .fetch("badges", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["holder"], "x");
    let (status, _) = s
        .fetch("badges", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")
        .await;
    assert_eq!(status, 200, "an uppercase id finds the same row");
    let (status, body) = s.fetch("badges", "not-a-uuid").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_a_typed_column_does_not_accept_are_refused_naming_column_and_sqlstate() {
    let s = Setup::start().await;
    // (column, value, what the error says besides the column)
    let cases: Vec<(&str, Value, &str)> = vec![
        ("born", json!("2020-13-45"), "SQLSTATE 22008"),
        ("born", json!("someday-7731"), "SQLSTATE 22007"),
        ("born", json!(20200102), "send a JSON string, not a number"),
        ("age", json!(1.5), "SQLSTATE 22P02"),
        (
            "age",
            json!(77777),
            "value is out of range for type smallint (SQLSTATE 22003)",
        ),
        ("age", json!("77777"), "SQLSTATE 22003"),
        (
            "age",
            json!(true),
            "send a JSON number or a string holding one, not a boolean",
        ),
        (
            "salary",
            json!("12.3.4"),
            "invalid input syntax for type numeric (SQLSTATE 22P02)",
        ),
        ("salary", json!(0.30000000000000004), "send it as a string"),
        ("salary", json!({ "amount": 1 }), "not an object"),
        (
            "consent",
            json!("maybe-7731"),
            "invalid input syntax for type boolean (SQLSTATE 22P02)",
        ),
        ("consent", json!(1), "not a number"),
        (
            "token",
            json!("7731-not-a-uuid"),
            "invalid input syntax for type uuid (SQLSTATE 22P02)",
        ),
        ("photo", json!("\\x7g31"), "SQLSTATE 22023"),
        (
            "score",
            json!("1e999"),
            "value is out of range for type double precision (SQLSTATE 22003)",
        ),
        ("seen", json!("2020-01-02 25:00:00+00"), "SQLSTATE 22008"),
        ("profile", json!({ "a": "x\u{0}y" }), "SQLSTATE 22P05"),
    ];
    for (column, value, said) in cases {
        let (status, body) = s.post("people", &json!({ column: value.clone() })).await;
        assert_eq!(status, 400, "{column} {value}: {body}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(
            error.contains(&format!("public.people.{column}")),
            "{error}"
        );
        assert!(error.contains(said), "{column} {value}: {error}");
        for secret in [
            "7731", "2020-13", "77777", "12.3.4", "maybe", "1e999", "25:00",
        ] {
            assert!(!error.contains(secret), "the value leaks: {error}");
        }
    }
    assert_eq!(s.count("people").await, 0, "nothing was stored");

    // A typed PII column that is still `date` in Postgres cannot hold envelopes.
    let (status, body) = s.post("legacy", &json!({ "born": "2020-01-02" })).await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("public.legacy.born is a PII column but not text"),
        "{error}"
    );
    assert!(error.contains("pgcloak check --upstream-dsn"), "{error}");
    assert_eq!(s.count("legacy").await, 0);
}
