//! One column's entry in `tables`: `email: deterministic`, or the long form
//! `email: { mode: deterministic, type: date, same_key_as: table.column, migrating: true,
//! previous_mode: randomized, readers: [app], writers: [app], mask: "•••" }`.

use serde_yaml::{Mapping, Value};

use super::access::{parse_access, Access};
use super::PolicyError;
use crate::crypto::Mode;
use crate::pgtype::{Kind, PgType};

/// One column's entry, validated.
#[derive(Debug)]
pub(super) struct ColumnSpec {
    pub mode: Mode,
    /// The type the application sees (`text` when absent).
    pub ty: PgType,
    pub same_key_as: Option<String>,
    pub migrating: bool,
    pub previous_mode: Option<Mode>,
    /// Who may read and write it through pgcloak.
    pub access: Access,
}

const KEYS: [&str; 8] = [
    "mode",
    "type",
    "same_key_as",
    "migrating",
    "previous_mode",
    "readers",
    "writers",
    "mask",
];

pub(super) fn parse_column_spec(spec: &Value, key: &str) -> Result<ColumnSpec, PolicyError> {
    let err = |at: &str, message: String| PolicyError {
        key: if at.is_empty() {
            key.to_owned()
        } else {
            format!("{key}.{at}")
        },
        message,
    };
    let map = match spec {
        Value::String(mode) => {
            return Ok(ColumnSpec {
                mode: parse_mode(mode).map_err(|m| err("", m))?,
                ty: PgType::new(Kind::Text),
                same_key_as: None,
                migrating: false,
                previous_mode: None,
                access: Access::default(),
            })
        }
        Value::Mapping(map) => map,
        _ => {
            return Err(err(
                "",
                "expected a mode (randomized or deterministic) or { mode: ... }".into(),
            ))
        }
    };
    for k in map.keys() {
        let name = k.as_str().unwrap_or("?");
        if !KEYS.contains(&name) {
            return Err(err(
                name,
                "unknown key (expected `mode`, `type`, `same_key_as`, `migrating`, `previous_mode`, `readers`, `writers` or `mask`)"
                    .into(),
            ));
        }
    }
    let mode = match string(map, "mode") {
        Some(Ok(mode)) => parse_mode(mode).map_err(|m| err("", m))?,
        Some(Err(())) | None => {
            return Err(err("mode", "missing: randomized or deterministic".into()))
        }
    };
    let ty = match string(map, "type") {
        None => PgType::new(Kind::Text),
        Some(Ok(name)) => PgType::parse(name).map_err(|m| err("type", m))?,
        Some(Err(())) => return Err(err("type", "expected a type name such as date".into())),
    };
    if mode == Mode::Deterministic && !ty.searchable() {
        return Err(err(
            "type",
            format!("{} has no equality in Postgres, so a deterministic column of it could not be searched; make it randomized, or declare it jsonb", ty.name()),
        ));
    }
    let same_key_as = match string(map, "same_key_as") {
        None => None,
        Some(Ok(other)) => Some(other.to_owned()),
        Some(Err(())) => {
            return Err(err(
                "same_key_as",
                "expected a column name, `table.column` or `schema.table.column`".into(),
            ))
        }
    };
    let migrating = match map.get("migrating") {
        None => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(err("migrating", "expected true or false".into())),
    };
    let previous_mode = match string(map, "previous_mode") {
        None => None,
        Some(Ok(text)) => Some(parse_mode(text).map_err(|m| err("previous_mode", m))?),
        Some(Err(())) => {
            return Err(err(
                "previous_mode",
                "expected randomized or deterministic".into(),
            ))
        }
    };
    let access = parse_access(map, &ty).map_err(|(at, message)| err(at, message))?;
    Ok(ColumnSpec {
        mode,
        ty,
        same_key_as,
        migrating,
        previous_mode,
        access,
    })
}

/// `map[name]` as a string: None when absent, `Err` when it is something else.
fn string<'m>(map: &'m Mapping, name: &str) -> Option<Result<&'m str, ()>> {
    map.get(name).map(|v| v.as_str().ok_or(()))
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    text.parse::<Mode>()
        .map_err(|_| format!("unknown mode {text:?} (expected randomized or deterministic)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<ColumnSpec, PolicyError> {
        parse_column_spec(&serde_yaml::from_str(yaml).unwrap(), "tables.t.c")
    }

    #[test]
    fn reads_types() {
        let s = spec("{ mode: deterministic, type: date }").unwrap();
        assert_eq!(s.ty.kind(), Kind::Date);
        let s = spec("{ mode: randomized, type: 'numeric(10,2)' }").unwrap();
        assert_eq!(s.ty.name(), "numeric(10,2)");
        assert_eq!(spec("randomized").unwrap().ty.kind(), Kind::Text);
        assert_eq!(spec("{ mode: randomized }").unwrap().ty.kind(), Kind::Text);
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = spec("{ mode: randomized, type: money }").unwrap_err();
        assert_eq!(e.key, "tables.t.c.type");
        assert!(e.message.contains("money"), "{e}");
        let e = spec("{ mode: randomized, type: [date] }").unwrap_err();
        assert_eq!(e.key, "tables.t.c.type");
        let e = spec("{ mode: deterministic, type: json }").unwrap_err();
        assert_eq!(e.key, "tables.t.c.type");
        assert!(e.message.contains("jsonb"), "{e}");
        assert!(spec("{ mode: randomized, type: json }").is_ok());
        let e = spec("{ mode: randomized, kind: date }").unwrap_err();
        assert_eq!(e.key, "tables.t.c.kind");
    }
}
