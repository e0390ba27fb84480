//! Typed PII columns in the sidecar (issue 13): a party's JSON value for a column declared
//! `type: date`, `numeric`, `boolean`, `jsonb`, ... becomes that type's canonical form, the
//! bytes the proxy encrypts for the same value (so a deterministic search through the proxy
//! finds what a party stored), and a decrypted canonical form becomes JSON again.
//!
//! Each type takes the JSON kind that fits it: numbers (or a string holding one) for the
//! numeric types, booleans (or a string Postgres reads as one) for boolean, any JSON for
//! json/jsonb, strings for the rest. A JSON number is an IEEE double once parsed, so a
//! number that may have lost digits on the way is refused rather than stored rounded: more
//! than 15 significant digits, or an integer beyond 2^53 written with a fraction or exponent.

use serde_json::{Number, Value};

use crate::pgtype::{self, sqlstate, Kind, PgType, Settings};

/// Why a value was refused for its declared type: Postgres's SQLSTATE for the same input
/// (None when the refusal is pgcloak's own) and a message that quotes no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub sqlstate: Option<&'static str>,
    pub why: String,
}

/// Integers up to this magnitude are exact in a double.
const EXACT_IN_DOUBLE: f64 = 9_007_199_254_740_992.0; // 2^53
/// Doubles from here on are out of range for every integer type.
const BEYOND_BIGINT: f64 = 9_223_372_036_854_775_808.0; // 2^63

/// The text a JSON value is bound as for a plain column; `None` for null.
pub fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => Some(value.to_string()),
    }
}

/// The canonical form of `value` for a PII column of type `ty`; `None` for null. A `text`
/// column takes any JSON as before issue 13: its text.
pub fn canonical(ty: &PgType, value: &Value) -> Result<Option<Vec<u8>>, Refusal> {
    use Kind::*;
    let text = match (ty.kind(), value) {
        (_, Value::Null) => return Ok(None),
        (Text, value) => return Ok(text_of(value).map(String::into_bytes)),
        (Varchar, value) => text_of(value).unwrap_or_default(),
        (Int2 | Int4 | Int8, Value::Number(n)) => integer_text(ty, n)?,
        (Numeric, Value::Number(n)) => exact_text(n)?,
        (Float4 | Float8, Value::Number(n)) => n.to_string(),
        (Int2 | Int4 | Int8 | Numeric | Float4 | Float8 | Bool, Value::String(s)) => s.clone(),
        (Bool, Value::Bool(b)) => b.to_string(),
        (Json | Jsonb, value) => value.to_string(),
        (Date | Time | Timestamp | Timestamptz | Uuid | Bytea, Value::String(s)) => s.clone(),
        (kind, value) => return Err(wrong_kind(ty, kind, value)),
    };
    pgtype::from_text(ty, &text, &Settings::default())
        .map(Some)
        .map_err(|e| Refusal {
            sqlstate: Some(e.sqlstate),
            why: e.without_value(),
        })
}

/// The JSON of a decrypted canonical value: numbers as numbers, booleans as booleans,
/// json/jsonb as JSON, the rest as strings.
pub fn json_of(ty: &PgType, canonical: &[u8]) -> Value {
    pgtype::to_json(ty, canonical)
}

/// The digits of an integral JSON number; a fraction is refused as Postgres refuses `1.5`
/// for an integer (22P02), a value out of range as it does (22003, from the codec).
fn integer_text(ty: &PgType, n: &Number) -> Result<String, Refusal> {
    if n.is_i64() || n.is_u64() {
        return Ok(n.to_string());
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() != 0.0 || !f.is_finite() {
        return Err(Refusal {
            sqlstate: Some(sqlstate::INVALID_TEXT_REPRESENTATION),
            why: format!(
                "invalid input syntax for type {}: a number with a fraction",
                ty.name()
            ),
        });
    }
    if f.abs() > EXACT_IN_DOUBLE && f.abs() < BEYOND_BIGINT {
        return Err(may_have_lost_digits());
    }
    // Out of the type's range (possibly every integer type's): the codec says so.
    Ok(format!("{f:.0}"))
}

/// The text of a JSON number for numeric, refused when the double it was read into may
/// differ from what the party wrote.
fn exact_text(n: &Number) -> Result<String, Refusal> {
    let text = n.to_string();
    if n.is_i64() || n.is_u64() {
        return Ok(text);
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if significant_digits(&text) > 15 || f.abs() >= EXACT_IN_DOUBLE {
        return Err(may_have_lost_digits());
    }
    Ok(text)
}

fn may_have_lost_digits() -> Refusal {
    Refusal {
        sqlstate: None,
        why: "a JSON number is read as a double, which holds this one only approximately; \
              send it as a string (\"12345678901234567.89\")"
            .into(),
    }
}

/// Significant digits of a number as serde_json prints it (`1.2345e-7`, `123.5`).
fn significant_digits(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

fn wrong_kind(ty: &PgType, kind: Kind, value: &Value) -> Refusal {
    use Kind::*;
    let expected = match kind {
        Int2 | Int4 | Int8 | Numeric | Float4 | Float8 => "a JSON number or a string holding one",
        Bool => "a JSON boolean or a string Postgres reads as one (\"true\", \"f\", ...)",
        _ => "a JSON string",
    };
    let got = match value {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Null => "null",
    };
    Refusal {
        sqlstate: None,
        why: format!("its type is {}: send {expected}, not {got}", ty.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ty(name: &str) -> PgType {
        PgType::parse(name).unwrap()
    }

    fn canon(name: &str, value: Value) -> Result<String, Refusal> {
        canonical(&ty(name), &value).map(|c| String::from_utf8_lossy(&c.unwrap()).into_owned())
    }

    #[test]
    fn each_type_takes_the_json_kind_that_fits() {
        assert_eq!(canon("integer", json!(42)).unwrap(), "42");
        assert_eq!(canon("integer", json!(" -7 ")).unwrap(), "-7");
        assert_eq!(canon("bigint", json!(40.0)).unwrap(), "40");
        assert_eq!(canon("numeric", json!(1.50)).unwrap(), "1.5");
        assert_eq!(canon("numeric", json!("1.50")).unwrap(), "1.5");
        assert_eq!(canon("numeric(10,2)", json!(3)).unwrap(), "3.00");
        assert_eq!(canon("double precision", json!(0.1)).unwrap(), "0.1");
        assert_eq!(canon("boolean", json!(true)).unwrap(), "t");
        assert_eq!(canon("boolean", json!("no")).unwrap(), "f");
        assert_eq!(canon("date", json!("2020-1-2")).unwrap(), "2020-01-02");
        assert_eq!(
            canon("jsonb", json!({"b": [1, 2], "a": 1})).unwrap(),
            "{\"a\": 1, \"b\": [1, 2]}"
        );
        assert_eq!(canon("jsonb", json!("x")).unwrap(), "\"x\"");
        assert_eq!(canon("text", json!(12)).unwrap(), "12");
        assert_eq!(canonical(&ty("date"), &Value::Null), Ok(None));
        let bytes = canonical(&ty("bytea"), &json!("\\x00ff")).unwrap().unwrap();
        assert_eq!(bytes, vec![0, 255]);
    }

    #[test]
    fn values_postgres_refuses_are_refused_with_its_sqlstate_and_without_the_value() {
        let refused = |name: &str, value: Value| canon(name, value).unwrap_err();
        let r = refused("integer", json!(1.5));
        assert_eq!(r.sqlstate, Some("22P02"));
        let r = refused("smallint", json!(40000));
        assert_eq!(r.sqlstate, Some("22003"));
        assert_eq!(r.why, "value is out of range for type smallint");
        assert_eq!(refused("integer", json!(1e30)).sqlstate, Some("22003"));
        let r = refused("date", json!("2020-13-45"));
        assert!(r.sqlstate.is_some_and(|s| s.starts_with("22")), "{r:?}");
        assert!(!r.why.contains("2020"), "{r:?}");
        let r = refused("uuid", json!("nope"));
        assert_eq!(r.why, "invalid input syntax for type uuid");
        assert_eq!(refused("varchar(3)", json!("abcd")).sqlstate, Some("22001"));
        assert_eq!(refused("boolean", json!("maybe")).sqlstate, Some("22P02"));
        let r = refused("boolean", json!(1));
        assert_eq!((r.sqlstate, r.why.contains("not a number")), (None, true));
        assert!(refused("date", json!(20200102))
            .why
            .contains("send a JSON string"));
        assert!(refused("numeric", json!(0.30000000000000004))
            .why
            .contains("as a string"));
        assert!(refused("bigint", json!(1e17)).why.contains("as a string"));
    }
}
