//! Between a party's JSON and the table's row: which columns a record may set, encryption of
//! the PII columns' values with the proxy's keyring (typed ones in their canonical form, see
//! [`super::typed`]), and the JSON of a fetched row and of a primary key (a scalar, or an
//! object for composite keys).

use std::collections::BTreeSet;

use serde_json::{Map, Number, Value};

use super::error::{ApiError, Reason};
use super::store::{JsonKind, TableInfo, TextParam};
use super::typed::{self, text_of};
use crate::cloak::Cloak;
use crate::crypto::{is_envelope, Mode};
use crate::pgtype::{Kind, PgType};

/// The columns and text values of one INSERT, PII values already envelopes.
pub struct Insert {
    pub columns: Vec<String>,
    pub values: Vec<TextParam>,
}

/// A PII column: its mode, keyring identity and declared type.
struct Pii {
    mode: Mode,
    id: String,
    ty: PgType,
}

/// The configured mode, keyring identity and type of a column, if it is PII.
fn pii(cloak: &Cloak, table: &TableInfo, column: &str) -> Option<Pii> {
    let policy = cloak
        .policy()
        .table(Some(&table.name.schema), &table.name.table)?;
    let mode = *policy.columns.get(column)?;
    let id = format!("{}.{column}", table.name);
    let ty = cloak.policy().column_type(&id);
    Some(Pii { mode, id, ty })
}

/// The envelope of a PII column's JSON value (None for null): its canonical form for its
/// declared type, encrypted. A value that does not fit the type is refused naming the
/// column and, where Postgres would refuse it too, Postgres's SQLSTATE; never the value.
fn encrypt(cloak: &Cloak, pii: &Pii, value: &Value) -> Result<Option<String>, ApiError> {
    let canonical = typed::canonical(&pii.ty, value).map_err(|refusal| {
        let code = refusal
            .sqlstate
            .map(|s| format!(" (SQLSTATE {s})"))
            .unwrap_or_default();
        let message = format!(
            "the value of {} does not fit its type {}: {}{code}",
            pii.id,
            pii.ty.name(),
            refusal.why
        );
        ApiError::new(Reason::InvalidValue, message)
    })?;
    let Some(canonical) = canonical else {
        return Ok(None);
    };
    let envelope = cloak.keyring().encrypt(&pii.id, &canonical);
    let envelope =
        envelope.map_err(|_| ApiError::internal(format!("cannot encrypt {}", pii.id)))?;
    Ok(Some(envelope))
}

/// Checks a record against the table and the party's permission, and encrypts the values
/// bound for PII columns. Messages name columns, never values.
pub fn prepare_insert(
    record: Map<String, Value>,
    table: &TableInfo,
    allowed: &BTreeSet<String>,
    cloak: &Cloak,
) -> Result<Insert, ApiError> {
    if record.is_empty() {
        return Err(ApiError::new(
            Reason::NotObject,
            "the record names no columns",
        ));
    }
    let name = &table.name;
    for column in record.keys() {
        if table.column(column).is_none() {
            let message = format!("unknown column {name}.{}", printable(column));
            return Err(ApiError::new(Reason::UnknownColumn, message));
        }
    }
    for column in record.keys() {
        if !allowed.contains(column) {
            let message = format!("this party may not write {name}.{column}");
            return Err(ApiError::new(Reason::ColumnNotAllowed, message));
        }
    }
    let mut insert = Insert {
        columns: Vec::with_capacity(record.len()),
        values: Vec::with_capacity(record.len()),
    };
    for (column, value) in record {
        let looks_sealed = match &value {
            Value::String(s) => is_envelope(s.as_bytes()),
            _ => false,
        };
        if looks_sealed {
            // Stored as is, a copied ciphertext would be decrypted for whoever reads it.
            let message = format!(
                "the value of {name}.{column} looks like a pgcloak ciphertext; send plaintext"
            );
            return Err(ApiError::new(Reason::InvalidValue, message));
        }
        let text = match pii(cloak, table, &column) {
            Some(pii) => {
                holds_envelopes(table, &column, &pii)?;
                encrypt(cloak, &pii, &value)?
            }
            None => text_of(&value),
        };
        insert.columns.push(column);
        insert.values.push(TextParam(text));
    }
    Ok(insert)
}

/// Refuses a PII column whose Postgres type cannot hold envelopes (a typed column not
/// converted yet): Postgres would refuse the envelope, and the party is not at fault.
fn holds_envelopes(table: &TableInfo, column: &str, pii: &Pii) -> Result<(), ApiError> {
    if table.column(column).is_none_or(|c| c.holds_text) {
        return Ok(());
    }
    let message = format!(
        "{} is a PII column but not text in the database, so it cannot hold ciphertext; \
         `pgcloak check --upstream-dsn` says how to convert it",
        pii.id
    );
    Err(ApiError::internal(message))
}

/// A column name safe to quote in a message: names are the party's keys, not values, but
/// an overlong or odd one is cut so messages stay short.
fn printable(name: &str) -> String {
    let cut: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    if cut.len() < name.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// The JSON of one column's stored text: PII decrypted, numbers, booleans and JSON as such.
fn json_of(
    cloak: &Cloak,
    table: &TableInfo,
    column: &str,
    text: Option<String>,
) -> Result<Value, ApiError> {
    let Some(text) = text else {
        return Ok(Value::Null);
    };
    if let Some(Pii { id, ty, .. }) = pii(cloak, table, column) {
        let plain = cloak
            .keyring()
            .decrypt(text.as_bytes(), Some(&id))
            .map_err(|_| {
                ApiError::internal(format!("the stored value of {id} cannot be decrypted"))
            })?;
        if ty.kind() != Kind::Text {
            return Ok(typed::json_of(&ty, &plain));
        }
        let plain = String::from_utf8(plain.to_vec())
            .map_err(|_| ApiError::internal(format!("the stored value of {id} is not UTF-8")))?;
        return Ok(Value::String(plain));
    }
    let kind = table.column(column).map_or(JsonKind::String, |c| c.kind);
    Ok(match kind {
        JsonKind::Number => match text.parse::<Number>() {
            Ok(n) => Value::Number(n),
            Err(_) => Value::String(text), // NaN, Infinity
        },
        JsonKind::Bool => Value::Bool(text == "true"),
        JsonKind::Json => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        JsonKind::String => Value::String(text),
    })
}

/// The JSON of a primary key: the value itself, or an object for a composite key.
pub fn key_json(
    cloak: &Cloak,
    table: &TableInfo,
    texts: Vec<Option<String>>,
) -> Result<Value, ApiError> {
    let mut values = Map::new();
    for (column, text) in table.primary_key.iter().zip(texts) {
        values.insert(column.clone(), json_of(cloak, table, column, text)?);
    }
    match table.primary_key.len() {
        0 => Ok(Value::Null),
        1 => Ok(values
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or(Value::Null)),
        _ => Ok(Value::Object(values)),
    }
}

/// A fetched row as JSON: `columns[i]` → `texts[i]`.
pub fn row_json(
    cloak: &Cloak,
    table: &TableInfo,
    columns: &[&str],
    texts: Vec<Option<String>>,
) -> Result<Map<String, Value>, ApiError> {
    let mut row = Map::new();
    for (column, text) in columns.iter().zip(texts) {
        row.insert((*column).to_owned(), json_of(cloak, table, column, text)?);
    }
    Ok(row)
}

/// The key parameters for `id` from a URL: the value itself for a one-column key; for a
/// composite key a JSON object naming every key column. Deterministic PII key columns are
/// encrypted to match what is stored.
pub fn parse_id(cloak: &Cloak, table: &TableInfo, id: &str) -> Result<Vec<TextParam>, ApiError> {
    let name = &table.name;
    let values: Vec<Value> = match table.primary_key.as_slice() {
        [] => {
            let message = format!("{name} has no primary key, so its records cannot be fetched");
            return Err(ApiError::new(Reason::NotFound, message));
        }
        [_] => vec![Value::String(id.to_owned())],
        columns => {
            let columns_list = columns.join(", ");
            let bad = || {
                let message = format!(
                    "{name} has a composite key: the id is a JSON object of {columns_list}"
                );
                ApiError::new(Reason::MalformedBody, message)
            };
            let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(id) else {
                return Err(bad());
            };
            if object.len() != columns.len() {
                return Err(bad());
            }
            let mut values = Vec::with_capacity(columns.len());
            for column in columns {
                match object.remove(column) {
                    Some(Value::Null) | None => return Err(bad()),
                    Some(value) => values.push(value),
                }
            }
            values
        }
    };
    let mut params = Vec::with_capacity(values.len());
    for (column, value) in table.primary_key.iter().zip(values) {
        let text = match pii(cloak, table, column) {
            Some(pii) if pii.mode == Mode::Deterministic => encrypt(cloak, &pii, &value)?,
            Some(pii) => {
                let message = format!(
                    "{} is a randomized PII column: records cannot be looked up by it",
                    pii.id
                );
                return Err(ApiError::new(Reason::NotFound, message));
            }
            None => text_of(&value),
        };
        params.push(TextParam(text));
    }
    Ok(params)
}
