//! Where the PII columns live in this database: (table OID, attribute number) of each,
//! read from the catalog through the session itself (pgcloak holds no credentials), so
//! result columns can be matched to their source and a ciphertext found in the wrong
//! column is refused rather than decrypted.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::policy::Policy;
use crate::protocol::messages::{DataRow, Query};

/// Where the configured columns live in this database.
#[derive(Debug, Clone, Default)]
pub struct ColumnMap {
    /// (table OID, attnum) → "schema.table.column".
    by_attribute: HashMap<(u32, i16), String>,
    /// (schema, table) → (field position, "schema.table.column") of its PII columns in the
    /// rows of `COPY table TO`, whose default column list is every column that is neither
    /// dropped nor generated, in attnum order.
    copy_fields: HashMap<(String, String), Vec<(usize, String)>>,
}

impl ColumnMap {
    pub fn new() -> ColumnMap {
        ColumnMap::default()
    }

    /// The configured column at (table OID, attnum).
    pub fn get(&self, attribute: &(u32, i16)) -> Option<&String> {
        self.by_attribute.get(attribute)
    }

    /// The PII fields of `COPY schema.table TO` rows: (position, column).
    pub fn copy_fields(&self, schema: &str, table: &str) -> &[(usize, String)] {
        self.copy_fields
            .get(&(schema.to_owned(), table.to_owned()))
            .map_or(&[], Vec::as_slice)
    }
}

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
        "SELECT c.oid, a.attnum, n.nspname || '.' || c.relname || '.' || a.attname, \
         n.nspname, c.relname, \
         CASE WHEN a.attgenerated = '' THEN (SELECT count(*) FROM pg_catalog.pg_attribute b \
           WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND b.attnum < a.attnum \
           AND NOT b.attisdropped AND b.attgenerated = '') END \
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
            map.by_attribute.insert((oid, attnum), column.to_owned());
        }
        let position = text(5).and_then(|p| p.parse().ok());
        if let (Some(schema), Some(table), Some(position)) = (text(3), text(4), position) {
            let fields = (map.copy_fields)
                .entry((schema.to_owned(), table.to_owned()))
                .or_default();
            fields.push((position, column.to_owned()));
            fields.sort();
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
                Some(Bytes::from_static(b"public")),
                Some(Bytes::from_static(b"users")),
                Some(Bytes::from_static(b"1")),
            ],
        };
        let mut map = ColumnMap::new();
        add_row(&row, &mut map);
        assert_eq!(
            map.get(&(16385, 2)).map(String::as_str),
            Some("public.users.email")
        );
        assert_eq!(
            map.copy_fields("public", "users"),
            &[(1, "public.users.email".to_owned())]
        );
        assert!(map.copy_fields("public", "other").is_empty());
    }
}
