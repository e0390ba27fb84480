//! Micro-benchmarks for the per-value and per-statement costs pgcloak adds:
//!
//! - `crypto/*`: encrypt and decrypt one 32-byte value in each mode (target ≤ 1 µs each);
//! - `sql/*`: analysis of a typical INSERT and SELECT, cold and through the cache (target
//!   ≤ 1 µs cached), and of a statement that names no PII table (target ≤ 1 µs added);
//! - `sql_long/*`: analysis of a 30,000-item `IN` list on a PII column and of an 8,000-row
//!   VALUES insert into a PII table (target: linear in size, within 3× of what Postgres
//!   takes to run the statement directly, about 40 ms for each here);
//! - `pgtype/*`: a typed column's value read into its canonical form (text and binary) and
//!   printed back (text and binary), per value, for date, numeric and timestamptz (what
//!   typed columns add to the crypto cost);
//! - `datarow/*`: the server-side filter on a DataRow with two envelopes and on one with none
//!   (the pass-through cost), and `DataRow::{decode, encode}` alone.
//!
//! Run with `cargo bench --bench micro`; the group config (short warm-up and measurement, no
//! plots) keeps the whole run well under two minutes. Results on a busy machine are noisy:
//! compare runs with `--baseline`, and read the medians in `target/criterion/*/new/`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};

use pgcloak::cloak::Cloak;
use pgcloak::crypto::{Keyring, MasterKey, Mode};
use pgcloak::policy::Policy;
use pgcloak::protocol::filter::Filter;
use pgcloak::protocol::messages::DataRow;
use pgcloak::sql::{analyze, Analysis, AnalysisCache};

const EMAIL: &str = "public.users.email";
const FIRST_NAME: &str = "public.users.first_name";

/// 32 bytes: the value size the targets are stated for.
const VALUE: &[u8; 32] = b"alice.example@example-mail.com!!";

const POLICY_YAML: &str =
    "users:\n  email: deterministic\n  first_name: randomized\n  last_name: randomized\n";

const INSERT: &str = "INSERT INTO users (email, first_name, last_name) VALUES ($1, $2, $3)";
const SELECT: &str = "SELECT id, email, first_name FROM users WHERE email = $1";
/// pgbench's read statement: names no PII table.
const PLAIN: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

fn policy() -> Policy {
    Policy::from_yaml(&serde_yaml::from_str(POLICY_YAML).unwrap()).unwrap()
}

fn keyring(master: &MasterKey) -> Keyring {
    Keyring::new(
        master,
        &[
            (EMAIL.to_string(), Mode::Deterministic),
            (FIRST_NAME.to_string(), Mode::Randomized),
        ],
    )
}

fn crypto(c: &mut Criterion) {
    let keyring = keyring(&MasterKey::generate());
    let mut group = c.benchmark_group("crypto");
    for (name, column) in [("deterministic", EMAIL), ("randomized", FIRST_NAME)] {
        let envelope = keyring.encrypt(column, VALUE).unwrap();
        assert_eq!(
            &keyring.decrypt(envelope.as_bytes(), Some(column)).unwrap()[..],
            VALUE
        );
        group.bench_function(format!("encrypt_32B/{name}"), |b| {
            b.iter(|| {
                keyring
                    .encrypt(black_box(column), black_box(VALUE))
                    .unwrap()
            })
        });
        group.bench_function(format!("decrypt_32B/{name}"), |b| {
            b.iter(|| {
                keyring
                    .decrypt(black_box(envelope.as_bytes()), Some(black_box(column)))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn sql(c: &mut Criterion) {
    let policy = policy();
    let cache = AnalysisCache::new(Arc::new(self::policy()), pgcloak::sql::DEFAULT_CACHE_BYTES);
    let mut group = c.benchmark_group("sql");
    for (name, sql) in [("insert", INSERT), ("select", SELECT), ("no_pii", PLAIN)] {
        group.bench_function(format!("analyze_cold/{name}"), |b| {
            b.iter(|| analyze(black_box(sql), &policy))
        });
        cache.analyze(sql); // warm the cache
        group.bench_function(format!("analyze_cached/{name}"), |b| {
            b.iter(|| cache.analyze(black_box(sql)))
        });
    }
    // ORM-style statements of ~1.3 kB: may_touch lower-cases and the cache hashes the whole
    // text, so both costs grow with its length.
    let long_plain = long_select("pgbench_accounts");
    let long_pii = long_select("users");
    for (name, sql) in [("no_pii_long", &long_plain), ("select_long", &long_pii)] {
        cache.analyze(sql);
        group.bench_function(format!("analyze_cached/{name}"), |b| {
            b.iter(|| cache.analyze(black_box(sql)))
        });
    }
    // The pre-filter every statement goes through before the cache.
    for (name, sql) in [("select", SELECT), ("no_pii", PLAIN)] {
        group.bench_function(format!("may_touch/{name}"), |b| {
            b.iter(|| policy.may_touch(black_box(sql)))
        });
    }
    group.finish();
}

/// Statements with tens of thousands of PII literals: analysis must stay linear in size.
fn sql_long(c: &mut Criterion) {
    let policy = policy();
    let mut group = c.benchmark_group("sql_long");
    group.sample_size(10);
    for (name, sql) in [
        ("in_list_30000", in_list(30_000)),
        ("values_8000", values_rows(8_000)),
    ] {
        assert!(matches!(analyze(&sql, &policy), Analysis::Plan(_)));
        group.bench_function(format!("analyze_cold/{name}"), |b| {
            b.iter(|| analyze(black_box(&sql), &policy))
        });
    }
    group.finish();
}

/// `SELECT id, email FROM users WHERE email IN ('user0@example.com', ...)`.
fn in_list(items: usize) -> String {
    let items: Vec<String> = (0..items)
        .map(|i| format!("'user{i}@example.com'"))
        .collect();
    format!(
        "SELECT id, email FROM users WHERE email IN ({})",
        items.join(", ")
    )
}

/// `INSERT INTO users (email, first_name, last_name) VALUES (...), ...`.
fn values_rows(rows: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|i| format!("('user{i}@example.com', 'First{i}', 'Last{i}')"))
        .collect();
    format!(
        "INSERT INTO users (email, first_name, last_name) VALUES {}",
        rows.join(", ")
    )
}

/// `SELECT t.column_00, ..., t.column_59 FROM <table> t WHERE t.id = $1`, about 1.3 kB.
fn long_select(table: &str) -> String {
    let columns: Vec<String> = (0..60).map(|i| format!("t.some_column_{i:02}")).collect();
    format!(
        "SELECT {} FROM {table} t WHERE t.id = $1",
        columns.join(", ")
    )
}

/// A whole DataRow frame ('D', length, body) of the given fields.
fn data_row_frame(fields: Vec<Option<Bytes>>) -> Bytes {
    let mut out = BytesMut::new();
    DataRow { fields }.encode(&mut out);
    out.freeze()
}

fn datarow(c: &mut Criterion) {
    let master = MasterKey::generate();
    // Same master and column identities as the cloak's keyring: its envelopes decrypt there.
    let keyring = keyring(&master);
    let cloak = Arc::new(Cloak::with_key(policy(), &master));
    let (_client, mut server) = cloak.session();

    let email = keyring.encrypt(EMAIL, VALUE).unwrap();
    let first_name = keyring.encrypt(FIRST_NAME, b"Alice").unwrap();
    let pii_row = data_row_frame(vec![
        Some(Bytes::from_static(b"42")),
        Some(Bytes::from(email)),
        Some(Bytes::from(first_name)),
        Some(Bytes::from_static(b"Smith")),
    ]);
    let plain_row = data_row_frame(vec![
        Some(Bytes::from_static(b"42")),
        Some(Bytes::from_static(b"alice.example@example-mail.com!!")),
        Some(Bytes::from_static(b"Alice")),
        Some(Bytes::from_static(b"Smith")),
    ]);

    // Sanity: the filter decrypts the PII row and passes the plain one through unchanged.
    let decrypted = server.rewrite(pii_row.clone()).unwrap();
    let row = DataRow::decode(&decrypted.slice(5..)).unwrap();
    assert_eq!(row.fields[1].as_deref(), Some(&VALUE[..]));
    assert_eq!(row.fields[2].as_deref(), Some(&b"Alice"[..]));
    assert_eq!(server.rewrite(plain_row.clone()).unwrap(), plain_row);

    let mut group = c.benchmark_group("datarow");
    group.bench_function("filter/2_envelopes", |b| {
        b.iter(|| server.rewrite(black_box(pii_row.clone())).unwrap())
    });
    group.bench_function("filter/no_envelopes", |b| {
        b.iter(|| server.rewrite(black_box(plain_row.clone())).unwrap())
    });
    let body = pii_row.slice(5..);
    group.bench_function("decode", |b| {
        b.iter(|| DataRow::decode(black_box(&body)).unwrap())
    });
    let decoded = DataRow::decode(&body).unwrap();
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(pii_row.len());
            black_box(&decoded).encode(&mut out);
            out
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .without_plots()
}

fn pgtype(c: &mut Criterion) {
    use pgcloak::pgtype::{from_binary, from_text, to_binary, to_text, PgType, Settings};
    let settings = Settings::default();
    let mut group = c.benchmark_group("pgtype");
    for (name, ty, text) in [
        ("date", "date", "2020-01-02"),
        ("numeric", "numeric(10,2)", "12345.67"),
        (
            "timestamptz",
            "timestamptz",
            "2020-01-02 03:04:05.123456+02",
        ),
    ] {
        let ty = PgType::parse(ty).unwrap();
        let canonical = from_text(&ty, text, &settings).unwrap();
        let binary = to_binary(&ty, &canonical).unwrap();
        group.bench_function(format!("from_text/{name}"), |b| {
            b.iter(|| from_text(&ty, black_box(text), &settings).unwrap())
        });
        group.bench_function(format!("from_binary/{name}"), |b| {
            b.iter(|| from_binary(&ty, black_box(&binary)).unwrap())
        });
        group.bench_function(format!("to_text/{name}"), |b| {
            b.iter(|| to_text(&ty, black_box(&canonical), &settings).unwrap())
        });
        group.bench_function(format!("to_binary/{name}"), |b| {
            b.iter(|| to_binary(&ty, black_box(&canonical)).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = crypto, sql, sql_long, datarow, pgtype
}
criterion_main!(benches);
