//! Where the PII columns live in this database: (table OID, attribute number) of each,
//! read from the catalog through the session itself (pgcloak holds no credentials), so
//! result columns can be matched to their source and a ciphertext found in the wrong
//! column is refused rather than decrypted.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::policy::Policy;
use crate::protocol::messages::{DataRow, Query};

/// (table OID, attnum) → "schema.table.column".
pub type ColumnMap = HashMap<(u32, i16), String>;

/// The catalog query for every configured column, as a Query frame.
pub fn query_frame(policy: &Policy) -> Bytes {
    let triples: Vec<String> = policy
        .columns()
        .map(|(id, _)| {
            format!(
                "({}, {}, {})",
                literal(&id.schema),
                literal(&id.table),
                literal(&id.column)
            )
        })
        .collect();
    let sql = format!(
        "SELECT c.oid, a.attnum, n.nspname || '.' || c.relname || '.' || a.attname \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.attnum > 0 AND NOT a.attisdropped \
         AND (n.nspname::text, c.relname::text, a.attname::text) IN ({})",
        triples.join(", ")
    );
    let mut out = BytesMut::new();
    Query { sql }.encode(&mut out);
    out.freeze()
}

/// Adds one text-format row of the catalog query's answer to `map`.
pub fn add_row(row: &DataRow, map: &mut ColumnMap) {
    let text = |i: usize| {
        row.fields
            .get(i)
            .and_then(|f| f.as_ref())
            .and_then(|f| std::str::from_utf8(f).ok())
    };
    if let (Some(oid), Some(attnum), Some(column)) = (text(0), text(1), text(2)) {
        if let (Ok(oid), Ok(attnum)) = (oid.parse(), attnum.parse()) {
            map.insert((oid, attnum), column.to_owned());
        }
    }
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_every_column_quoted() {
        let policy = Policy::from_yaml(
            &serde_yaml::from_str("users:\n  email: deterministic\n  \"o'k\": randomized\n")
                .unwrap(),
        )
        .unwrap();
        let frame = query_frame(&policy);
        let sql = String::from_utf8_lossy(&frame);
        assert!(sql.contains("('public', 'users', 'email')"), "{sql}");
        assert!(sql.contains("('public', 'users', 'o''k')"), "{sql}");
    }

    #[test]
    fn rows_fill_the_map() {
        let row = DataRow {
            fields: vec![
                Some(Bytes::from_static(b"16385")),
                Some(Bytes::from_static(b"2")),
                Some(Bytes::from_static(b"public.users.email")),
            ],
        };
        let mut map = ColumnMap::new();
        add_row(&row, &mut map);
        assert_eq!(
            map.get(&(16385, 2)).map(String::as_str),
            Some("public.users.email")
        );
    }
}
