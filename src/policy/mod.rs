//! Which table.column holds PII and how it is encrypted: the `tables` section of the config,
//! validated with errors that name the exact key, and lookups used by SQL analysis.
//!
//! Names follow Postgres: `users` means `public.users`; a name is matched exactly as written
//! in the config, which is how Postgres stores it (unquoted SQL identifiers fold to lower
//! case before they are compared).

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml::Value;

use crate::crypto::Mode;
use crate::pgtype::PgType;

mod access;
mod spec;
pub use access::Access;
use spec::parse_column_spec;

/// The identity of a PII column, as bound into its keys and ciphertexts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnId {
    pub schema: String,
    pub table: String,
    pub column: String,
}

impl fmt::Display for ColumnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.schema, self.table, self.column)
    }
}

/// The PII columns of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePolicy {
    pub columns: BTreeMap<String, Mode>,
}

/// Every configured table, keyed by (schema, table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    tables: BTreeMap<(String, String), TablePolicy>,
    /// Columns configured with `same_key_as`: column → the column whose key it uses (one
    /// that has its own key). Their ciphertexts are interchangeable, so they compare equal.
    shared_keys: BTreeMap<ColumnId, ColumnId>,
    /// Lower-cased table names, for the cheap "could this SQL touch a PII table" check.
    needles: Needles,
    /// Identities (`schema.table.column`) of columns with `migrating: true`: they may still
    /// hold plaintext, which reads return as it is and searches match too.
    migrating: std::collections::BTreeSet<String>,
    /// Identities of columns with `previous_mode`: their mode was changed and `pgcloak
    /// rotate` may not have rewritten every value yet.
    changing_mode: std::collections::BTreeSet<String>,
    /// Identities of columns declared with a type other than `text`, with that type.
    types: BTreeMap<String, PgType>,
    /// Identities of columns with `readers` or `writers`, with their rules.
    access: BTreeMap<String, Access>,
}

/// The lower-cased table names with their searchers, built once: the check runs for every
/// statement a client sends, most of which touch no PII table.
#[derive(Clone, Default)]
struct Needles {
    names: Vec<String>,
    tables: Vec<memchr::memmem::Finder<'static>>,
    /// `execute` and `u&"` (see [`Policy::may_touch`]).
    always: Vec<memchr::memmem::Finder<'static>>,
}

impl Needles {
    fn new(mut names: Vec<String>) -> Needles {
        names.sort();
        names.dedup();
        let finder = |needle: &str| memchr::memmem::Finder::new(needle.as_bytes()).into_owned();
        Needles {
            tables: names.iter().map(|name| finder(name)).collect(),
            always: vec![finder("execute"), finder("u&\"")],
            names,
        }
    }

    fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn names_in(&self, lower: &[u8]) -> bool {
        self.tables.iter().any(|f| f.find(lower).is_some())
    }
}

impl PartialEq for Needles {
    fn eq(&self, other: &Needles) -> bool {
        self.names == other.names
    }
}

impl Eq for Needles {}

impl fmt::Debug for Needles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.names.fmt(f)
    }
}

/// Statements up to this length are lower-cased on the stack for the check.
const STACK_SQL: usize = 512;

/// A problem in the `tables` section; `key` is the dotted path to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct PolicyError {
    pub key: String,
    pub message: String,
}

impl Policy {
    /// Reads the `tables` section.
    pub fn from_yaml(tables: &Value) -> Result<Policy, PolicyError> {
        let err = |key: String, message: &str| PolicyError {
            key,
            message: message.to_owned(),
        };
        let map = tables
            .as_mapping()
            .ok_or_else(|| err("tables".into(), "must be a map of table name to columns"))?;
        let mut policy = Policy::default();
        // (column, the `same_key_as` text, its config key), resolved once all are read.
        let mut sharing: Vec<(ColumnId, String, String)> = Vec::new();
        for (name, columns) in map {
            let name = name
                .as_str()
                .ok_or_else(|| err("tables".into(), "table names must be strings"))?;
            let key = format!("tables.{name}");
            let (schema, table) = split_table_name(name)
                .ok_or_else(|| err(key.clone(), "expected `table` or `schema.table`"))?;
            let columns = columns
                .as_mapping()
                .ok_or_else(|| err(key.clone(), "must be a map of column name to mode"))?;
            if columns.is_empty() {
                return Err(err(key, "names no columns"));
            }
            let mut table_policy = TablePolicy::default();
            for (column, spec) in columns {
                let column = column
                    .as_str()
                    .ok_or_else(|| err(key.clone(), "column names must be strings"))?;
                let column_key = format!("{key}.{column}");
                if column.is_empty() || column.contains('.') {
                    return Err(err(column_key, "is not a column name"));
                }
                let spec = parse_column_spec(spec, &column_key)?;
                let (mode, same_key_as) = (spec.mode, spec.same_key_as);
                table_policy.columns.insert(column.to_owned(), mode);
                if spec.ty != PgType::new(crate::pgtype::Kind::Text) {
                    policy
                        .types
                        .insert(format!("{schema}.{table}.{column}"), spec.ty);
                }
                if !spec.access.is_open() {
                    policy
                        .access
                        .insert(format!("{schema}.{table}.{column}"), spec.access);
                }
                if spec.migrating {
                    policy
                        .migrating
                        .insert(format!("{schema}.{table}.{column}"));
                }
                match spec.previous_mode {
                    Some(previous) if previous == mode => {
                        return Err(err(
                            format!("{column_key}.previous_mode"),
                            "is the column's mode: name the mode it had before, or remove previous_mode",
                        ))
                    }
                    Some(_) => {
                        policy.changing_mode.insert(format!("{schema}.{table}.{column}"));
                    }
                    None => {}
                }
                if let Some(other) = same_key_as {
                    let id = ColumnId {
                        schema: schema.to_owned(),
                        table: table.to_owned(),
                        column: column.to_owned(),
                    };
                    sharing.push((id, other, format!("{column_key}.same_key_as")));
                }
            }
            let id = (schema.to_owned(), table.to_owned());
            if policy.tables.insert(id, table_policy).is_some() {
                return Err(err(key, "is configured twice"));
            }
        }
        for (id, other, key) in sharing {
            let owner = policy.resolve_column(&other).ok_or_else(|| {
                err(
                    key.clone(),
                    "must name a configured PII column, as `table.column` or `schema.table.column`",
                )
            })?;
            if policy.shared_keys.contains_key(&owner) || owner == id {
                return Err(err(
                    key,
                    "must name a column that has its own key (not one with `same_key_as`)",
                ));
            }
            if policy.mode(&owner) != policy.mode(&id) {
                return Err(err(
                    key,
                    "names a column with another mode; columns sharing a key must have the same mode",
                ));
            }
            if policy.column_type(&owner.to_string()) != policy.column_type(&id.to_string()) {
                return Err(err(
                    key,
                    "names a column of another type; columns sharing a key must have the same type",
                ));
            }
            if policy.access(&owner.to_string()) != policy.access(&id.to_string()) {
                return Err(err(
                    key,
                    "names a column with other `readers`, `writers` or `mask`; the envelopes of columns sharing a key cannot be told apart, so they must have the same rules",
                ));
            }
            policy.shared_keys.insert(id, owner);
        }
        if let Some((id, _)) = policy
            .shared_keys
            .iter()
            .find(|(_, owner)| policy.shared_keys.contains_key(*owner))
        {
            return Err(err(
                format!("tables.{}.{}.same_key_as", id.table, id.column),
                "must name a column that has its own key (not one with `same_key_as`)",
            ));
        }
        policy.needles = Needles::new(
            policy
                .tables
                .keys()
                .map(|(_, table)| table.to_lowercase())
                .collect(),
        );
        Ok(policy)
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The policy of `schema.table` (`schema` None means `public`).
    pub fn table(&self, schema: Option<&str>, table: &str) -> Option<&TablePolicy> {
        let key = (schema.unwrap_or("public").to_owned(), table.to_owned());
        self.tables.get(&key)
    }

    /// The schema of the configured table an unqualified `table` may mean: `public` when
    /// public.table is configured, else the first other schema configuring that name.
    pub fn schema_of_unqualified(&self, table: &str) -> Option<&str> {
        if self.table(None, table).is_some() {
            return Some("public");
        }
        self.tables
            .keys()
            .find(|(_, name)| name == table)
            .map(|(schema, _)| schema.as_str())
    }

    /// True when `sql` may read or write a PII column, ignoring case: some configured
    /// table's name occurs in it, or `execute` (SQL EXECUTE runs a prepared statement that
    /// may bind PII parameters), or `u&"` (a Unicode-escaped identifier may spell a table's
    /// name). Statements for which this is false skip analysis.
    pub fn may_touch(&self, sql: &str) -> bool {
        if self.needles.is_empty() {
            return false;
        }
        // For ASCII text, ASCII lower case is what to_lowercase gives.
        let mut stack = [0u8; STACK_SQL];
        let owned;
        let lower: &[u8] = match stack.get_mut(..sql.len()) {
            Some(buf) if sql.is_ascii() => {
                buf.copy_from_slice(sql.as_bytes());
                buf.make_ascii_lowercase();
                buf
            }
            _ => {
                owned = sql.to_lowercase();
                owned.as_bytes()
            }
        };
        self.needles.always.iter().any(|f| f.find(lower).is_some()) || self.needles.names_in(lower)
    }

    /// True when some configured table's name occurs in `text`, ignoring case.
    pub fn names_a_table(&self, text: &str) -> bool {
        self.needles.names_in(text.to_lowercase().as_bytes())
    }

    /// Whether `column` (its identity, `schema.table.column`) is configured with
    /// `migrating: true`: it may still hold plaintext.
    pub fn is_migrating(&self, column: &str) -> bool {
        self.migrating.contains(column)
    }

    /// The type the application sees for `column` (its identity, `schema.table.column`):
    /// `text` unless the policy declares another.
    pub fn column_type(&self, column: &str) -> PgType {
        (self.types.get(column).copied()).unwrap_or(PgType::new(crate::pgtype::Kind::Text))
    }

    /// Who may read and write `column` (its identity); None: every role.
    pub fn access(&self, column: &str) -> Option<&Access> {
        self.access.get(column)
    }

    /// Columns with `readers` or `writers`, by identity.
    pub fn restricted(&self) -> impl Iterator<Item = (&str, &Access)> + '_ {
        self.access.iter().map(|(c, a)| (c.as_str(), a))
    }

    /// Whether any column has `writers`.
    pub fn has_writers(&self) -> bool {
        self.access.values().any(|a| a.writers.is_some())
    }

    /// Whether any column is declared with a type other than `text`.
    pub fn has_typed(&self) -> bool {
        !self.types.is_empty()
    }

    /// Whether any column has `migrating: true`.
    pub fn has_migrating(&self) -> bool {
        !self.migrating.is_empty()
    }

    /// Whether any column has `previous_mode`.
    pub fn has_changing_mode(&self) -> bool {
        !self.changing_mode.is_empty()
    }

    /// Whether `column` has `previous_mode`: values in its old mode may still be stored.
    pub fn is_changing_mode(&self, column: &str) -> bool {
        self.changing_mode.contains(column)
    }

    /// The column whose key `column` is encrypted with: itself, or its `same_key_as`.
    pub fn key_of<'a>(&'a self, column: &'a ColumnId) -> &'a ColumnId {
        self.shared_keys.get(column).unwrap_or(column)
    }

    /// Columns that use another column's key, with that column.
    pub fn shared_keys(&self) -> impl Iterator<Item = (&ColumnId, &ColumnId)> + '_ {
        self.shared_keys.iter()
    }

    fn mode(&self, id: &ColumnId) -> Option<Mode> {
        let table = self.tables.get(&(id.schema.clone(), id.table.clone()))?;
        table.columns.get(&id.column).copied()
    }

    /// `table.column` or `schema.table.column`, if configured.
    fn resolve_column(&self, name: &str) -> Option<ColumnId> {
        let (table, column) = name.rsplit_once('.')?;
        let (schema, table) = split_table_name(table)?;
        let id = ColumnId {
            schema: schema.to_owned(),
            table: table.to_owned(),
            column: column.to_owned(),
        };
        self.mode(&id).map(|_| id)
    }

    /// Every PII column with its mode, for deriving keys.
    pub fn columns(&self) -> impl Iterator<Item = (ColumnId, Mode)> + '_ {
        self.tables.iter().flat_map(|((schema, table), policy)| {
            policy.columns.iter().map(move |(column, mode)| {
                let id = ColumnId {
                    schema: schema.clone(),
                    table: table.clone(),
                    column: column.clone(),
                };
                (id, *mode)
            })
        })
    }
}

fn split_table_name(name: &str) -> Option<(&str, &str)> {
    let mut parts = name.split('.');
    let (first, second, rest) = (parts.next()?, parts.next(), parts.next());
    match (second, rest) {
        (None, _) if !first.is_empty() => Some(("public", first)),
        (Some(table), None) if !first.is_empty() && !table.is_empty() => Some((first, table)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<Policy, PolicyError> {
        Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap())
    }

    const EXAMPLE: &str = "
users:
  email: deterministic
  first_name: randomized
  last_name: { mode: randomized }
billing.cards:
  holder: randomized
";

    #[test]
    fn reads_short_and_long_forms() {
        let p = policy(EXAMPLE).unwrap();
        let users = p.table(None, "users").unwrap();
        assert_eq!(users.columns["email"], Mode::Deterministic);
        assert_eq!(users.columns["last_name"], Mode::Randomized);
        assert_eq!(p.table(Some("public"), "users"), Some(users));
        assert!(p.table(Some("billing"), "cards").is_some());
        assert!(p.table(None, "cards").is_none());
        assert_eq!(p.columns().count(), 4);
        let ids: Vec<String> = p.columns().map(|(id, _)| id.to_string()).collect();
        assert!(ids.contains(&"billing.cards.holder".to_owned()));
    }

    #[test]
    fn errors_name_the_key() {
        let e = policy("users:\n  email: determinstic\n").unwrap_err();
        assert_eq!(e.key, "tables.users.email");
        assert!(e.message.contains("\"determinstic\""), "{e}");
        let e = policy("users:\n  email: { mode: randomized, size: 3 }\n").unwrap_err();
        assert_eq!(e.key, "tables.users.email.size");
        let e = policy("a.b.c:\n  x: randomized\n").unwrap_err();
        assert_eq!(e.key, "tables.a.b.c");
        let e = policy("users: {}\n").unwrap_err();
        assert_eq!(e.to_string(), "`tables.users`: names no columns");
        let e = policy("users:\n  email: { }\n").unwrap_err();
        assert_eq!(e.key, "tables.users.email.mode");
    }

    #[test]
    fn columns_may_share_a_key() {
        let p = policy(
            "users:\n  email: deterministic\norders:\n  customer_email: { mode: deterministic, same_key_as: users.email }\n  note: { mode: randomized }\n",
        )
        .unwrap();
        let id = |t: &str, c: &str| ColumnId {
            schema: "public".into(),
            table: t.into(),
            column: c.into(),
        };
        assert_eq!(
            p.key_of(&id("orders", "customer_email")),
            &id("users", "email")
        );
        assert_eq!(p.key_of(&id("users", "email")), &id("users", "email"));
        assert_eq!(p.key_of(&id("orders", "note")), &id("orders", "note"));
        assert_eq!(p.shared_keys().count(), 1);
        for (yaml, message) in [
            ("users:\n  a: deterministic\n  b: { mode: deterministic, same_key_as: users.c }\n", "must name a configured PII column"),
            ("users:\n  a: randomized\n  b: { mode: deterministic, same_key_as: users.a }\n", "another mode"),
            ("users:\n  a: { mode: deterministic, type: date }\n  b: { mode: deterministic, same_key_as: users.a }\n", "another type"),
            ("users:\n  a: deterministic\n  b: { mode: deterministic, same_key_as: users.a }\n  c: { mode: deterministic, same_key_as: public.users.b }\n", "has its own key"),
            ("users:\n  a: { mode: deterministic, same_key_as: users.a }\n", "has its own key"),
            ("users:\n  a: { mode: deterministic, readers: [x] }\n  b: { mode: deterministic, same_key_as: users.a }\n", "other `readers`"),
            ("users:\n  a: deterministic\n  b: { mode: deterministic, same_key_as: [a] }\n", "expected a column name"),
        ] {
            let e = policy(yaml).unwrap_err();
            assert!(e.key.ends_with(".same_key_as"), "{yaml}: {e}");
            assert!(e.message.contains(message), "{yaml}: {e}");
        }
    }

    #[test]
    fn may_touch_is_a_case_insensitive_name_and_execute_check() {
        let p = policy(EXAMPLE).unwrap();
        assert!(p.may_touch("select * from USERS"));
        assert!(p.may_touch("insert into billing.cards values (1)"));
        assert!(!p.may_touch("select 1"));
        assert!(p.may_touch("EXECUTE p('x')"));
        assert!(!p.names_a_table("EXECUTE p('x')"));
        assert!(p.names_a_table("select * from USERS"));
        assert!(!Policy::default().may_touch("select * from users"));
        assert!(!Policy::default().may_touch("execute p('x')"));
    }

    #[test]
    fn may_touch_reads_long_and_non_ascii_statements() {
        let p = policy(EXAMPLE).unwrap();
        let padding = "x".repeat(2 * STACK_SQL);
        assert!(p.may_touch(&format!("select '{padding}' from Users")));
        assert!(!p.may_touch(&format!("select '{padding}'")));
        assert!(p.may_touch("select 'é' from USERS"));
        assert!(p.may_touch("select 'é'; ExEcUtE p"));
        assert!(p.may_touch("select * from U&\"x\""));
        assert!(!p.may_touch("select 'é'"));
    }
}
