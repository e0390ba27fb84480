//! Where the PII columns live in this database: (table OID, attribute number) of each,
//! read from the catalog through the session itself (pgcloak holds no credentials), so
//! result columns can be matched to their source and a ciphertext found in the wrong
//! column is refused rather than decrypted.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::policy::Policy;
use crate::protocol::messages::{self, Bind, DataRow, Parse};
use crate::protocol::tags::Backend;

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

/// Which catalog a map was read from, as far as pgcloak can tell: `ddl` counts the DDL
/// statements sessions through this pgcloak committed, `epoch` the periods of
/// `catalog_max_age` that passed (DDL sent to Postgres directly is noticed with it). A map
/// read under an older generation is read again before the session's next PII statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generation {
    pub ddl: u64,
    pub epoch: u64,
}

/// How many catalog reads in a row a session tries before giving up (e.g. while a failed
/// transaction makes every query fail); a successful read or DDL starts the count anew.
pub const ATTEMPTS: u32 = 3;

/// Whether this session knows where the PII columns are.
#[derive(Debug, Clone, Default)]
pub enum Catalog {
    /// Not read yet, or invalidated by this session's DDL.
    #[default]
    Unknown,
    /// The catalog query is queued or its answer is arriving.
    Requested {
        map: ColumnMap,
        failed: bool,
        generation: Generation,
    },
    Known {
        map: Arc<ColumnMap>,
        generation: Generation,
    },
}

/// The session's catalog state and what it noticed of its own DDL.
#[derive(Debug, Default)]
pub struct CatalogState {
    catalog: Catalog,
    attempts: u32,
    /// DDL completed and the server has not reported the session idle since: other sessions
    /// must read the catalog again once it is committed.
    ddl_uncommitted: bool,
    /// DDL of this session committed; taken by the cloak, which tells the other sessions.
    ddl_committed: bool,
}

impl CatalogState {
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The map, when it was read and this session ran no DDL since (it may be of an older
    /// generation until the next PII statement reads it again).
    pub fn map(&self) -> Option<&Arc<ColumnMap>> {
        match &self.catalog {
            Catalog::Known { map, .. } => Some(map),
            _ => None,
        }
    }

    /// Whether the map must be read (again) for the catalog of generation `current`.
    pub fn wants(&self, current: Generation) -> bool {
        let stale = match &self.catalog {
            Catalog::Unknown => true,
            Catalog::Requested { .. } => false,
            Catalog::Known { generation, .. } => *generation != current,
        };
        stale && self.attempts < ATTEMPTS
    }

    /// The catalog query went out.
    pub fn requested(&mut self, generation: Generation) {
        self.attempts += 1;
        self.catalog = Catalog::Requested {
            map: ColumnMap::new(),
            failed: false,
            generation,
        };
    }

    /// The query was skipped after an earlier error: it must be sent again.
    pub fn skipped(&mut self) {
        self.catalog = Catalog::Unknown;
    }

    /// One message of the catalog query's answer; true at its ReadyForQuery.
    pub fn reply(&mut self, message: Backend, body: Option<&[u8]>) -> bool {
        match message {
            Backend::DataRow => {
                if let (Catalog::Requested { map, .. }, Some(body)) = (&mut self.catalog, body) {
                    if let Ok(row) = DataRow::decode(&Bytes::copy_from_slice(body)) {
                        add_row(&row, map);
                    }
                }
            }
            Backend::ErrorResponse => {
                if let Catalog::Requested { failed, .. } = &mut self.catalog {
                    *failed = true;
                }
            }
            Backend::ReadyForQuery => {
                self.catalog = match std::mem::take(&mut self.catalog) {
                    Catalog::Requested {
                        map,
                        failed: false,
                        generation,
                    } => {
                        self.attempts = 0;
                        Catalog::Known {
                            map: Arc::new(map),
                            generation,
                        }
                    }
                    _ => Catalog::Unknown,
                };
                return true;
            }
            _ => {}
        }
        false
    }

    /// This session's DDL completed: its OIDs and attribute numbers must be read anew (the
    /// session sees its own uncommitted DDL), and the other sessions' once it commits.
    pub fn ddl(&mut self) {
        self.catalog = Catalog::Unknown;
        self.attempts = 0;
        self.ddl_uncommitted = true;
    }

    /// ReadyForQuery to the client with its transaction status.
    pub fn ready(&mut self, status: Option<u8>) {
        if self.ddl_uncommitted && status == Some(b'I') {
            self.ddl_uncommitted = false;
            self.ddl_committed = true;
        }
    }

    /// Whether the server is to report the transaction status of its next ReadyForQuery.
    pub fn awaits_commit(&self) -> bool {
        self.ddl_uncommitted
    }

    /// Whether this session's DDL was committed since the last call.
    pub fn take_ddl_committed(&mut self) -> bool {
        std::mem::take(&mut self.ddl_committed)
    }
}

/// The name of the statement and of the portal the catalog query runs in. Named, so the
/// client's unnamed statement and portal survive it (a simple Query would drop them).
pub const STATEMENT: &str = "pgcloak_catalog";

/// The catalog query for every configured column, as an extended-protocol batch of its own:
/// Parse, Bind and Execute under [`STATEMENT`], closed before (a failed earlier attempt,
/// e.g. one a client's CancelRequest hit, may have left them open; closing a name that does
/// not exist is no error) and after, then Sync. Its answer (3 3 1 2 D… C 3 3 Z, or an
/// error and Z) is pgcloak's. The tracker sends it only while the client uses neither name.
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
    messages::encode_close(&mut out, b'P', STATEMENT);
    messages::encode_close(&mut out, b'S', STATEMENT);
    Parse {
        name: STATEMENT.to_owned(),
        sql,
        param_types: Vec::new(),
    }
    .encode(&mut out);
    Bind {
        portal: STATEMENT.to_owned(),
        statement: STATEMENT.to_owned(),
        param_formats: Vec::new(),
        params: Vec::new(),
        result_formats: Vec::new(),
    }
    .encode(&mut out);
    messages::encode_execute(&mut out, STATEMENT, 0);
    messages::encode_close(&mut out, b'P', STATEMENT);
    messages::encode_close(&mut out, b'S', STATEMENT);
    messages::encode_sync(&mut out);
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
