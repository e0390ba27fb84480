//! Typed PII columns through the proxy, compared with real columns of the same types: the
//! table `pii` has each type as an encrypted column (text in Postgres), the table `real`
//! the same columns with their real types, not in the policy. Everything the application
//! sees of `pii` through pgcloak — RowDescription types, text and binary results,
//! ParameterDescription, errors, COPY — must equal what it sees of `real`.

mod common;

use common::{Raw, Stack};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

/// (column, type, mode) of both tables.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("i2", "smallint", "randomized"),
    ("i4", "integer", "deterministic"),
    ("i8", "bigint", "deterministic"),
    ("n", "numeric", "randomized"),
    ("n2", "numeric(10,2)", "deterministic"),
    ("f4", "real", "deterministic"),
    ("f8", "double precision", "deterministic"),
    ("b", "boolean", "randomized"),
    ("d", "date", "deterministic"),
    ("t", "time", "randomized"),
    ("ts", "timestamp", "deterministic"),
    ("tz", "timestamptz", "deterministic"),
    ("u", "uuid", "deterministic"),
    ("jb", "jsonb", "deterministic"),
    ("j", "json", "randomized"),
    ("by", "bytea", "randomized"),
    ("vc", "varchar(12)", "deterministic"),
];

/// One row of values for COLUMNS, as SQL literals Postgres reads the same in both tables.
const ROWS: &[&[&str]] = &[
    &[
        "-7",
        "42",
        "9007199254740993",
        "3.25",
        "1.5",
        "1.25",
        "0.1",
        "true",
        "2020-1-2",
        "04:05:06.5",
        "2020-01-02 03:04:05",
        "2020-01-02 03:04:05+02",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{\"b\": [1, 2.5], \"a\": null}",
        "{ \"kept\" : \"as is\" }",
        "\\x00ff10",
        "hello",
    ],
    &[
        "0",
        "-2147483648",
        "-1",
        "-0.001",
        "99999999.99",
        "-1.5",
        "1e-300",
        "f",
        "0044-03-15 BC",
        "24:00:00",
        "infinity",
        "1999-12-31 23:59:59.999999-08",
        "00000000-0000-0000-0000-000000000000",
        "[]",
        "[1,2]",
        "\\x",
        "  spaced  ",
    ],
];

fn policy() -> String {
    let mut yaml = String::from("pii:\n");
    for (column, ty, mode) in COLUMNS {
        yaml.push_str(&format!("  {column}: {{ mode: {mode}, type: '{ty}' }}\n"));
    }
    yaml
}

async fn stack() -> (Stack, Client) {
    let stack = Stack::start_cloaked(&policy()).await;
    let direct = stack.connect_direct().await;
    let pii: Vec<String> = COLUMNS
        .iter()
        .map(|(c, _, _)| format!("{c} text"))
        .collect();
    let real: Vec<String> = COLUMNS.iter().map(|(c, t, _)| format!("{c} {t}")).collect();
    direct
        .batch_execute(&format!(
            "CREATE TABLE pii (id int PRIMARY KEY, {}); CREATE TABLE real (id int PRIMARY KEY, {});",
            pii.join(", "),
            real.join(", ")
        ))
        .await
        .unwrap();
    let client = stack.connect().await;
    (stack, client)
}

fn names() -> String {
    COLUMNS
        .iter()
        .map(|(c, _, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Inserts ROWS into both tables with literals (simple protocol).
async fn insert_literals(client: &Client) {
    for table in ["pii", "real"] {
        for (id, row) in ROWS.iter().enumerate() {
            let values: Vec<String> = row.iter().map(|v| literal(v)).collect();
            client
                .batch_execute(&format!(
                    "INSERT INTO {table} (id, {}) VALUES ({id}, {})",
                    names(),
                    values.join(", ")
                ))
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"));
        }
    }
}

/// Every row of `table` in binary format: the types and the raw values.
async fn binary_rows(client: &Client, table: &str) -> (Vec<Type>, Vec<Vec<Option<Raw>>>) {
    let rows = client
        .query(&format!("SELECT {} FROM {table} ORDER BY id", names()), &[])
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"));
    let types = rows[0]
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    let values = rows
        .iter()
        .map(|row| (0..COLUMNS.len()).map(|i| row.get(i)).collect())
        .collect();
    (types, values)
}

/// Every row of `table` in text format (simple protocol).
async fn text_rows(client: &Client, table: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(&format!("SELECT {} FROM {table} ORDER BY id", names()))
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..COLUMNS.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn typed_columns_look_like_real_columns_in_text_and_binary() {
    let (stack, client) = stack().await;
    insert_literals(&client).await;
    let (pii_types, pii) = binary_rows(&client, "pii").await;
    let (real_types, real) = binary_rows(&client, "real").await;
    assert_eq!(pii_types, real_types);
    assert_eq!(pii, real);
    assert_eq!(
        text_rows(&client, "pii").await,
        text_rows(&client, "real").await
    );
    // Postgres holds envelopes only.
    let direct = stack.connect_direct().await;
    let stored = direct
        .query(&format!("SELECT {} FROM pii", names()), &[])
        .await
        .unwrap();
    for row in &stored {
        for (i, (column, _, _)) in COLUMNS.iter().enumerate() {
            let value: String = row.get(i);
            assert!(value.starts_with("pgc1$"), "{column}: {value}");
        }
    }
}

#[tokio::test]
async fn binary_parameters_are_described_and_read_as_their_type() {
    let (_stack, client) = stack().await;
    let placeholders: Vec<String> = (2..COLUMNS.len() + 2).map(|n| format!("${n}")).collect();
    let sql = |table: &str| {
        format!(
            "INSERT INTO {table} (id, {}) VALUES ($1, {})",
            names(),
            placeholders.join(", ")
        )
    };
    let pii = client.prepare(&sql("pii")).await.unwrap();
    let real = client.prepare(&sql("real")).await.unwrap();
    assert_eq!(pii.params(), real.params());
    // The real table's binary values (written by Postgres from the literals) are sent as
    // parameters for both tables: the same bytes, read as the same values.
    insert_literals(&client).await;
    let (_, rows) = binary_rows(&client, "real").await;
    client
        .batch_execute("DELETE FROM pii; DELETE FROM real")
        .await
        .unwrap();
    for (id, row) in rows.iter().enumerate() {
        let id = id as i32;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id];
        params.extend(row.iter().map(|v| v as &(dyn ToSql + Sync)));
        client.execute(&pii, &params).await.unwrap();
        client.execute(&real, &params).await.unwrap();
    }
    let (_, pii_rows) = binary_rows(&client, "pii").await;
    assert_eq!(pii_rows, rows);
    assert_eq!(
        text_rows(&client, "pii").await,
        text_rows(&client, "real").await
    );
}

#[tokio::test]
async fn deterministic_typed_columns_are_searched_by_value() {
    let (_stack, client) = stack().await;
    insert_literals(&client).await;
    // Equal values in other spellings find the row, as in the real table.
    for (column, value) in [
        ("i4", "0042"),
        ("i8", "-1"),
        ("n2", "99999999.990"),
        ("f8", "1.0e-300"),
        ("d", "2020-01-02"),
        ("ts", "infinity"),
        ("u", "a0eebc999c0b4ef8bb6d6bb9bd380a11"),
        ("vc", "hello"),
        ("jb", "{\"b\":[1,2.5],\"a\":null}"),
        ("tz", "2020-01-02 01:04:05Z"),
    ] {
        for table in ["pii", "real"] {
            let sql = format!("SELECT id FROM {table} WHERE {column} = {}", literal(value));
            let rows = client
                .query(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(rows.len(), 1, "{sql}");
        }
    }
    // A binary parameter, as the statement describes it.
    let statement = client
        .prepare("SELECT id FROM pii WHERE d = $1")
        .await
        .unwrap();
    assert_eq!(statement.params(), [Type::DATE]);
    let days: i32 = 7306; // 2020-01-02
    let rows = client
        .query(&statement, &[&Raw(days.to_be_bytes().to_vec())])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let rows = client
        .query("SELECT id FROM pii WHERE i4 = $1", &[&42i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn invalid_values_fail_as_postgres_fails_them() {
    let (_stack, client) = stack().await;
    for (column, value) in [
        ("d", "2020-13-45"),
        ("d", "not a date"),
        ("i2", "40000"),
        ("i4", "4x"),
        ("n2", "123456789.5"),
        ("b", "maybe"),
        ("u", "123"),
        ("jb", "{"),
        ("tz", "2020-01-02 25:00"),
        ("vc", "thirteen chars"),
    ] {
        let insert = |table: &str| {
            format!(
                "INSERT INTO {table} (id, {column}) VALUES (1, {})",
                literal(value)
            )
        };
        let real = client.batch_execute(&insert("real")).await.unwrap_err();
        let pii = client.batch_execute(&insert("pii")).await.unwrap_err();
        let (real, pii) = (real.as_db_error().unwrap(), pii.as_db_error().unwrap());
        assert_eq!(
            pii.code(),
            real.code(),
            "{column} = {value}: {}",
            pii.message()
        );
        assert!(
            pii.message().contains(&format!("pii.{column}")),
            "{}",
            pii.message()
        );
        assert!(!pii.message().contains(value), "{}", pii.message());
    }
    // The session goes on.
    client.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn nulls_stay_null() {
    let (_stack, client) = stack().await;
    client
        .batch_execute("INSERT INTO pii (id) VALUES (1)")
        .await
        .unwrap();
    let params: Vec<Option<i32>> = vec![None];
    client
        .execute("INSERT INTO pii (id, i4) VALUES (2, $1)", &[&params[0]])
        .await
        .unwrap();
    let rows = client
        .query("SELECT i4, d FROM pii ORDER BY id", &[])
        .await
        .unwrap();
    for row in rows {
        assert_eq!(row.get::<_, Option<i32>>(0), None);
        assert_eq!(row.get::<_, Option<Raw>>(1), None);
    }
}

#[tokio::test]
async fn date_style_and_time_zone_follow_the_session() {
    let (_stack, client) = stack().await;
    insert_literals(&client).await;
    for setting in [
        "SET DateStyle = 'SQL, DMY'",
        "SET DateStyle = 'German'",
        "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'America/New_York'",
        "SET DateStyle = 'SQL, MDY'; SET TimeZone = 'Asia/Kathmandu'",
    ] {
        client.batch_execute(setting).await.unwrap();
        assert_eq!(
            text_rows(&client, "pii").await,
            text_rows(&client, "real").await,
            "{setting}"
        );
    }
    // Input is read with the session's settings too: 03/04/2020 is 3 April under DMY.
    client
        .batch_execute(
            "SET DateStyle = 'ISO, DMY'; INSERT INTO pii (id, d) VALUES (9, '03/04/2020')",
        )
        .await
        .unwrap_err(); // several statements in one Query: the value waits for settled settings
    client
        .batch_execute("SET DateStyle = 'ISO, DMY'")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO pii (id, d) VALUES (9, '03/04/2020')")
        .await
        .unwrap();
    let rows = client
        .simple_query("SELECT d FROM pii WHERE id = 9")
        .await
        .unwrap();
    let SimpleQueryMessage::Row(row) = &rows[1] else {
        panic!("{rows:?}")
    };
    assert_eq!(row.get(0), Some("2020-04-03"));
    // A DateStyle pgcloak does not follow: dates are refused rather than printed wrongly.
    client
        .batch_execute("SET DateStyle = 'Postgres'")
        .await
        .unwrap();
    let error = client.simple_query("SELECT d FROM pii").await.unwrap_err();
    let message = error.as_db_error().unwrap().message();
    assert!(message.contains("DateStyle"), "{message}");
    assert!(client.simple_query("SELECT i4 FROM pii").await.is_ok());
}

#[tokio::test]
async fn copy_in_and_out_read_and_print_the_types() {
    use futures::SinkExt;
    let (_stack, client) = stack().await;
    let mut data = String::new();
    for (id, row) in ROWS.iter().enumerate() {
        let fields: Vec<String> = row.iter().map(|v| v.replace('\\', "\\\\")).collect();
        data.push_str(&format!("{id}\t{}\n", fields.join("\t")));
    }
    for table in ["pii", "real"] {
        let sink = client
            .copy_in(&format!("COPY {table} (id, {}) FROM STDIN", names()))
            .await
            .unwrap();
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
        sink.finish()
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    assert_eq!(
        binary_rows(&client, "pii").await,
        binary_rows(&client, "real").await
    );
    for format in ["", " WITH (FORMAT csv)", " (query)"] {
        let mut out = Vec::new();
        for table in ["pii", "real"] {
            use futures::TryStreamExt;
            let sql = match format {
                // No source column: the envelope's key names it, and its type prints it.
                " (query)" => format!("COPY (SELECT id, by, d, tz FROM {table}) TO STDOUT"),
                _ => format!("COPY {table} (id, {}) TO STDOUT{format}", names()),
            };
            let stream = client.copy_out(&sql).await.unwrap();
            let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
            out.push(chunks.concat());
        }
        assert_eq!(
            String::from_utf8_lossy(&out[0]),
            String::from_utf8_lossy(&out[1])
        );
    }
    // An invalid field fails the COPY with Postgres's SQLSTATE; the session goes on.
    let sink = client.copy_in("COPY pii (id, d) FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"7\t2020-02-30\n"))
        .await
        .unwrap();
    let error = sink.finish().await.unwrap_err();
    assert_eq!(
        error.as_db_error().unwrap().code().code(),
        "22008",
        "{error}"
    );
    client.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn casts_drivers_add_are_read_through() {
    let (_stack, client) = stack().await;
    for table in ["pii", "real"] {
        client
            .batch_execute(&format!(
                "INSERT INTO {table} (id, d, n2, i4, b, tz) VALUES \
                 (1, '2020-01-02'::date, CAST('1.5' AS numeric(10,2)), -5, true, \
                  '2020-01-02 03:04:05+00'::timestamp with time zone), \
                 (2, DATE '2021-02-03', 2.25::numeric, - 7, FALSE, NULL::timestamptz)"
            ))
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    assert_eq!(
        binary_rows(&client, "pii").await,
        binary_rows(&client, "real").await
    );
    for sql in [
        "SELECT id FROM {t} WHERE d = $1::date",
        "SELECT id FROM {t} WHERE d = CAST($1 AS date)",
        "SELECT id FROM {t} WHERE d IN ('2020-01-02'::date, DATE '1999-01-01')",
    ] {
        for table in ["pii", "real"] {
            let sql = sql.replace("{t}", table);
            let rows = match sql.contains("$1") {
                true => {
                    client
                        .query(&sql, &[&Raw(7306i32.to_be_bytes().to_vec())])
                        .await
                }
                false => client.query(&sql, &[]).await,
            };
            let rows = rows.unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(rows.len(), 1, "{sql}");
        }
    }
    // = ANY with a binary date[] parameter: element OID 1082, ndim 1, two elements.
    let mut array = Vec::new();
    for word in [1i32, 0, 1082, 2, 1] {
        array.extend_from_slice(&word.to_be_bytes());
    }
    for days in [7306i32, 7704] {
        array.extend_from_slice(&4i32.to_be_bytes());
        array.extend_from_slice(&days.to_be_bytes());
    }
    for table in ["pii", "real"] {
        let sql = format!("SELECT id FROM {table} WHERE d = ANY($1) ORDER BY id");
        let statement = client.prepare(&sql).await.unwrap();
        assert_eq!(statement.params(), [Type::DATE_ARRAY], "{table}");
        let rows = client
            .query(&statement, &[&Raw(array.clone())])
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{table}");
    }
    // A search value a numeric(10,2) column cannot hold (or an int8 for an integer column)
    // equals nothing, in Postgres as through pgcloak; `<>` then matches every value.
    for (sql, n) in [
        ("SELECT id FROM {t} WHERE n2 = '1.505'", 0),
        ("SELECT id FROM {t} WHERE n2 = '123456789012.5'", 0),
        ("SELECT id FROM {t} WHERE n2 <> '1.505'", 2),
        ("SELECT id FROM {t} WHERE n2 IN ('1.505', '1.50')", 1),
    ] {
        for table in ["pii", "real"] {
            let sql = sql.replace("{t}", table);
            let rows = client
                .query(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(rows.len(), n, "{sql}");
        }
    }
    for table in ["pii", "real"] {
        // Declared bigint in Parse, as psycopg declares a Python int.
        let sql = format!("SELECT id FROM {table} WHERE i4 = $1");
        let statement = client.prepare_typed(&sql, &[Type::INT8]).await.unwrap();
        let rows = client.query(&statement, &[&(1i64 << 40)]).await.unwrap();
        assert!(rows.is_empty(), "{sql}");
        let rows = client.query(&statement, &[&-5i64]).await.unwrap();
        assert_eq!(rows.len(), 1, "{sql}");
    }
    // An unquoted number compared with a real column is compared in double precision by
    // Postgres: refused rather than answered differently.
    let error = client
        .query("SELECT id FROM pii WHERE f4 = 1.1", &[])
        .await
        .unwrap_err();
    assert_eq!(error.as_db_error().unwrap().code().code(), "0A000");
    let rows = client
        .query(
            "SELECT id FROM pii WHERE n2 = $1::numeric",
            &[&Raw(vec![0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 19, 136])],
        )
        .await;
    assert!(rows.is_ok(), "{rows:?}");
}

#[tokio::test]
async fn a_migrating_typed_column_reads_its_plaintext_as_the_type() {
    let stack =
        Stack::start_cloaked("m:\n  dob: { mode: deterministic, type: date, migrating: true }\n")
            .await;
    let direct = stack.connect_direct().await;
    // Rows written before the column joined the policy, as `ALTER ... TYPE text USING
    // dob::text` leaves them (ISO).
    direct
        .batch_execute(
            "CREATE TABLE m (id int PRIMARY KEY, dob text); \
             INSERT INTO m VALUES (1, '2020-01-02'), (2, NULL)",
        )
        .await
        .unwrap();
    let client = stack.connect().await;
    client
        .execute(
            "INSERT INTO m (id, dob) VALUES (3, $1)",
            &[&Raw(7306i32.to_be_bytes().to_vec())],
        )
        .await
        .unwrap();
    let rows = client
        .query("SELECT dob FROM m ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].columns()[0].type_(), &Type::DATE);
    let days: Vec<Option<Raw>> = rows.iter().map(|r| r.get(0)).collect();
    let day = Some(Raw(7306i32.to_be_bytes().to_vec()));
    assert_eq!(days, [day.clone(), None, day]);
    // A search matches the plaintext row and the encrypted one.
    let rows = client
        .query("SELECT id FROM m WHERE dob = '2020-1-2' ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [1, 3]
    );
    // A stored plaintext that is no date fails the query, naming the column.
    direct
        .batch_execute("INSERT INTO m VALUES (4, 'soon')")
        .await
        .unwrap();
    let error = client.query("SELECT dob FROM m", &[]).await.unwrap_err();
    let error = error.as_db_error().unwrap();
    assert_eq!(error.code().code(), "22007", "{}", error.message());
    assert!(error.message().contains("m.dob") && !error.message().contains("soon"));
}
