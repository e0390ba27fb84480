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
    /// Lower-cased table names, for the cheap "could this SQL touch a PII table" check.
    needles: Vec<String>,
}

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
                let mode = parse_column_spec(spec, &column_key)?;
                table_policy.columns.insert(column.to_owned(), mode);
            }
            let id = (schema.to_owned(), table.to_owned());
            if policy.tables.insert(id, table_policy).is_some() {
                return Err(err(key, "is configured twice"));
            }
        }
        policy.needles = policy
            .tables
            .keys()
            .map(|(_, table)| table.to_lowercase())
            .collect();
        policy.needles.sort();
        policy.needles.dedup();
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

    /// True when some configured table's name occurs in `sql`, ignoring case. Statements
    /// for which this is false cannot name a PII table and skip analysis.
    pub fn may_touch(&self, sql: &str) -> bool {
        if self.needles.is_empty() {
            return false;
        }
        let lower = sql.to_lowercase();
        self.needles
            .iter()
            .any(|needle| lower.contains(needle.as_str()))
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

/// `email: deterministic` or the long form `email: { mode: deterministic }`.
fn parse_column_spec(spec: &Value, key: &str) -> Result<Mode, PolicyError> {
    let err = |key: String, message: String| PolicyError { key, message };
    let mode_text = match spec {
        Value::String(mode) => mode.as_str(),
        Value::Mapping(map) => {
            for k in map.keys() {
                if k.as_str() != Some("mode") {
                    let name = k.as_str().unwrap_or("?");
                    return Err(err(
                        format!("{key}.{name}"),
                        "unknown key (expected `mode`)".into(),
                    ));
                }
            }
            map.get("mode").and_then(Value::as_str).ok_or_else(|| {
                err(
                    format!("{key}.mode"),
                    "missing: randomized or deterministic".into(),
                )
            })?
        }
        _ => {
            return Err(err(
                key.to_owned(),
                "expected a mode (randomized or deterministic) or { mode: ... }".into(),
            ))
        }
    };
    mode_text.parse::<Mode>().map_err(|_| {
        err(
            key.to_owned(),
            format!("unknown mode {mode_text:?} (expected randomized or deterministic)"),
        )
    })
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
    fn may_touch_is_a_case_insensitive_name_check() {
        let p = policy(EXAMPLE).unwrap();
        assert!(p.may_touch("select * from USERS"));
        assert!(p.may_touch("insert into billing.cards values (1)"));
        assert!(!p.may_touch("select 1"));
        assert!(!Policy::default().may_touch("select * from users"));
    }
}
