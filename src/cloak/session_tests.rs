//! A whole cloak session on bytes: the client's and the server's frames through both
//! filters, as the pump passes them (on_frame for every header, rewrite for held frames).

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::crypto::MasterKey;
use crate::protocol::filter::Filter;
use crate::protocol::frame::parse_header;

fn cloak() -> Arc<Cloak> {
    let yaml = "users:\n  email: deterministic\n  first_name: randomized\n";
    let policy = Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap();
    Arc::new(Cloak::with_key(policy, &MasterKey::generate()))
}

/// Passes `input` (whole frames) through `filter` the way the pump does.
fn pass(filter: &mut impl Filter, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(header) = parse_header(rest) {
        let (frame, tail) = rest.split_at(header.frame_size());
        filter.on_frame(header, frame);
        if filter.holds(header.tag) {
            out.extend_from_slice(&filter.rewrite(Bytes::copy_from_slice(frame)).unwrap());
        } else {
            out.extend_from_slice(frame);
        }
        rest = tail;
    }
    assert!(rest.is_empty());
    out
}

fn frame(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    body(&mut b);
    let mut out = vec![tag];
    out.extend_from_slice(&(b.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&b);
    out
}

fn cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn query(sql: &str) -> Vec<u8> {
    frame(b'Q', |b| cstr(b, sql))
}

fn data_row(fields: &[Option<&[u8]>]) -> Vec<u8> {
    frame(b'D', |b| {
        b.put_u16(fields.len() as u16);
        for f in fields {
            match f {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    })
}

/// RowDescription of text fields with these (table OID, attnum) sources.
fn row_description(sources: &[(u32, i16)]) -> Vec<u8> {
    frame(b'T', |b| {
        b.put_u16(sources.len() as u16);
        for (i, (table, attnum)) in sources.iter().enumerate() {
            cstr(b, &format!("f{i}"));
            b.put_u32(*table);
            b.put_i16(*attnum);
            b.put_u32(25);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
    })
}

fn ready() -> Vec<u8> {
    frame(b'Z', |b| b.put_u8(b'I'))
}

fn complete(tag: &str) -> Vec<u8> {
    frame(b'C', |b| cstr(b, tag))
}

fn tags_of(mut bytes: &[u8]) -> String {
    let mut tags = String::new();
    while let Some(header) = parse_header(bytes) {
        tags.push(header.tag as char);
        bytes = &bytes[header.frame_size()..];
    }
    tags
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// users.email is (16385, 2), first_name (16385, 3).
fn catalog_answer() -> Vec<u8> {
    let tag = |t: u8| frame(t, |_| {});
    let mut out = [tag(b'3'), tag(b'3'), tag(b'1'), tag(b'2')].concat();
    for (attnum, column) in [
        ("2", "public.users.email"),
        ("3", "public.users.first_name"),
    ] {
        out.extend(data_row(&[
            Some(b"16385"),
            Some(attnum.as_bytes()),
            Some(column.as_bytes()),
        ]));
    }
    out.extend(complete("SELECT 2"));
    out.extend([tag(b'3'), tag(b'3'), ready()].concat());
    out
}

/// The catalog batch pgcloak sends (Close, Close, Parse, Bind, Execute, Close, Close, Sync)
/// in front of `client`'s tags.
fn after_catalog(client: &str) -> String {
    format!("CCPBECCS{client}")
}

#[test]
fn a_session_on_bytes() {
    let cloak = cloak();
    let (mut client, mut server) = cloak.session();
    // Startup: passed as is.
    let startup = [frame(b'R', |b| b.put_u32(0)), ready()].concat();
    assert_eq!(pass(&mut server, &startup), startup);

    // The first PII statement: the catalog query goes first, the literal is encrypted.
    let sent = pass(
        &mut client,
        &query("INSERT INTO users (email) VALUES ('ann@example.com')"),
    );
    assert_eq!(tags_of(&sent), after_catalog("Q"));
    assert!(!contains(&sent, b"ann@example.com"));
    assert!(contains(&sent, b"pgc1$d$"));
    // Its answer is pgcloak's; the INSERT's is the client's.
    assert!(pass(&mut server, &catalog_answer()).is_empty());
    let insert_answer = [complete("INSERT 0 1"), ready()].concat();
    assert_eq!(pass(&mut server, &insert_answer), insert_answer);

    // Extended protocol: the parameter is encrypted, the row decrypted.
    let statement = "SELECT email FROM users WHERE email = $1";
    let batch = [
        frame(b'P', |b| {
            cstr(b, "s");
            cstr(b, statement);
            b.put_u16(0);
        }),
        frame(b'D', |b| {
            b.put_u8(b'S');
            cstr(b, "s");
        }),
        frame(b'S', |_| {}),
        frame(b'B', |b| {
            cstr(b, "");
            cstr(b, "s");
            b.put_u16(0);
            b.put_u16(1);
            b.put_i32(15);
            b.put_slice(b"ann@example.com");
            b.put_u16(0);
        }),
        frame(b'E', |b| {
            cstr(b, "");
            b.put_i32(0);
        }),
        frame(b'S', |_| {}),
    ]
    .concat();
    let sent = pass(&mut client, &batch);
    assert_eq!(tags_of(&sent), "PDSBES", "no catalog inside a batch");
    assert!(!contains(&sent, b"ann@example.com"));
    let envelope = cloak
        .keyring()
        .encrypt("public.users.email", b"ann@example.com")
        .unwrap();
    let answer = [
        frame(b'1', |_| {}),
        frame(b't', |b| b.put_u16(0)),
        row_description(&[(16385, 2)]),
        ready(),
        frame(b'2', |_| {}),
        data_row(&[Some(envelope.as_bytes())]),
        complete("SELECT 1"),
        ready(),
    ]
    .concat();
    let received = pass(&mut server, &answer);
    assert_eq!(tags_of(&received), "1tTZ2DCZ");
    assert!(contains(&received, b"ann@example.com"));
    assert!(!contains(&received, b"pgc1$"));

    // Plaintext where the statement's RowDescription says email: an error, not the row.
    pass(
        &mut client,
        &[
            frame(b'B', |b| {
                cstr(b, "");
                cstr(b, "s");
                b.put_u16(0);
                b.put_u16(1);
                b.put_i32(1);
                b.put_slice(b"x");
                b.put_u16(0);
            }),
            frame(b'E', |b| {
                cstr(b, "");
                b.put_i32(0);
            }),
            frame(b'S', |_| {}),
        ]
        .concat(),
    );
    let answer = [
        frame(b'2', |_| {}),
        data_row(&[Some(b"in-clear@example.com")]),
        complete("SELECT 1"),
        ready(),
    ]
    .concat();
    let received = pass(&mut server, &answer);
    assert_eq!(tags_of(&received), "2EZ");
    assert!(!contains(&received, b"in-clear"));

    // A notice quoting an envelope reaches the client with the plaintext.
    let notice = frame(b'N', |b| {
        b.put_u8(b'S');
        cstr(b, "NOTICE");
        b.put_u8(b'M');
        cstr(b, &format!("value {envelope} seen"));
        b.put_u8(0);
    });
    let received = pass(&mut server, &notice);
    assert!(contains(&received, b"value ann@example.com seen"));
}

#[test]
fn ddl_completion_reads_the_catalog_again_before_the_next_pii_statement() {
    let cloak = cloak();
    let (mut client, mut server) = cloak.session();
    pass(&mut server, &ready());
    let sent = pass(&mut client, &query("SELECT email FROM users"));
    assert_eq!(tags_of(&sent), after_catalog("Q"));
    pass(&mut server, &catalog_answer());
    pass(&mut server, &[complete("SELECT 0"), ready()].concat());
    assert_eq!(tags_of(&pass(&mut client, &query("DROP TABLE users"))), "Q");
    pass(&mut server, &[complete("DROP TABLE"), ready()].concat());
    // A plain statement needs no catalog; the next PII statement gets it first.
    assert_eq!(tags_of(&pass(&mut client, &query("SELECT 1"))), "Q");
    pass(&mut server, &[complete("SELECT 1"), ready()].concat());
    let sent = pass(&mut client, &query("SELECT email FROM users"));
    assert_eq!(tags_of(&sent), after_catalog("Q"));
}

#[test]
fn ddl_with_a_notice_then_a_multi_statement_pii_query() {
    let cloak = cloak();
    let (mut client, mut server) = cloak.session();
    pass(&mut server, &ready());
    pass(&mut client, &query("SELECT email FROM users"));
    pass(&mut server, &catalog_answer());
    pass(&mut server, &[complete("SELECT 0"), ready()].concat());
    assert_eq!(
        tags_of(&pass(&mut client, &query("DROP TABLE IF EXISTS scratch"))),
        "Q"
    );
    let notice = frame(b'N', |b| {
        b.put_u8(b'M');
        cstr(b, "skipping");
        b.put_u8(0);
    });
    let answer = [notice, complete("DROP TABLE"), ready()].concat();
    assert_eq!(tags_of(&pass(&mut server, &answer)), "NCZ");
    let sent = pass(
        &mut client,
        &query("SELECT * FROM users ORDER BY id; SELECT * FROM orders ORDER BY id;"),
    );
    assert_eq!(tags_of(&sent), after_catalog("Q"));
    assert_eq!(tags_of(&pass(&mut server, &catalog_answer())), "");
    let answer = [
        row_description(&[(16385, 1)]),
        complete("SELECT 0"),
        row_description(&[(16390, 1)]),
        complete("SELECT 0"),
        ready(),
    ]
    .concat();
    assert_eq!(tags_of(&pass(&mut server, &answer)), "TCTCZ");
}
