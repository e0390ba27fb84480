//! Value codecs for typed PII columns (issue 13): pure, I/O-free conversions between the
//! forms a value takes on the wire (text and binary, as Postgres 15 reads and writes them)
//! and the *canonical form*, the bytes pgcloak encrypts.
//!
//! In Postgres a typed PII column stays `text` holding an envelope; through pgcloak the
//! application sees the declared type. Deterministic encryption makes equality search work on
//! ciphertext only if values Postgres considers equal have equal canonical bytes, so every
//! codec here parses with the session [`Settings`] and canonicalises without them.
//!
//! The canonical form of each type is Postgres's own text output under fixed settings
//! (`DateStyle = ISO, YMD`, `TimeZone = UTC`, `extra_float_digits = 1`), so a decrypted value
//! is readable and is valid input for the type (`pgcloak decrypt` then `ALTER COLUMN ... TYPE
//! date USING col::date` works). Per type:
//! - `text`, `varchar`: the UTF-8 bytes unchanged (envelopes stored before issue 13 stay
//!   valid). `varchar(n)` input is checked and trailing spaces beyond `n` are cut.
//! - integers: the decimal digits, `-` if negative, no `+`, no leading zeros.
//! - `numeric`: without a typmod, the value with trailing fractional zeros stripped (`1.50`
//!   and `1.5` are equal in Postgres, so both are `1.5`; the application sees `1.5` where
//!   Postgres would print `1.50`). With `numeric(p,s)` the value is rounded to scale `s`
//!   (half away from zero) as Postgres does on input and keeps that fixed scale, so the
//!   output equals Postgres's byte for byte. `NaN`, `Infinity`, `-Infinity` as Postgres
//!   spells them; `-0` is `0`.
//! - `real`, `double precision`: the shortest round-trip digits in Postgres's notation
//!   (`1e+15`, `1e-05`), `NaN`, `Infinity`, `-Infinity`. `-0` is `0` (Postgres: `-0 = 0`),
//!   so a stored negative zero reads back as `0`.
//! - `boolean`: `t` or `f`. `uuid`: lowercase hyphenated.
//! - `date`, `time`, `timestamp`: ISO output (`2020-01-02`, `0044-03-15 BC`, `infinity`).
//! - `timestamptz`: the instant in UTC, ISO (`2020-01-02 03:04:05.5+00`); the session
//!   TimeZone only changes how it is read and printed.
//! - `json`: the text as given (Postgres keeps it verbatim; `json` has no equality).
//! - `jsonb`: Postgres's normalised text (keys sorted by length then bytes, last duplicate
//!   wins, `{"a": 1, "b": [1, 2]}` spacing, numbers as numeric output).
//! - `bytea`: the raw bytes.
//!
//! Files: [`settings`] (session settings from ParameterStatus), `int.rs` (integers,
//! boolean, uuid), `float.rs`, `numeric.rs`, `json.rs`, `bytes.rs` (text, varchar, bytea),
//! `datetime/` (date, time, timestamp, timestamptz).

mod bytes;
mod datetime;
mod float;
mod int;
mod json;
mod numeric;
pub mod settings;
mod types;

pub use settings::{Settings, Unsupported};
pub use types::{Kind, PgType};

/// A value Postgres would refuse, with the SQLSTATE and message Postgres gives for it, or an
/// input form pgcloak does not follow (`unsupported`): it is refused rather than misread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub sqlstate: &'static str,
    pub message: String,
    /// True when Postgres may accept this input but pgcloak does not support its form.
    pub unsupported: bool,
}

impl ValueError {
    pub(crate) fn new(sqlstate: &'static str, message: impl Into<String>) -> ValueError {
        ValueError {
            sqlstate,
            message: message.into(),
            unsupported: false,
        }
    }

    /// `invalid input syntax for type <ty>: "<input>"` (22P02).
    pub(crate) fn syntax(ty: &str, input: &str) -> ValueError {
        ValueError::new(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type {ty}: \"{input}\""),
        )
    }

    /// An input form that pgcloak refuses rather than risk reading differently from Postgres.
    pub(crate) fn unsupported(sqlstate: &'static str, message: impl Into<String>) -> ValueError {
        ValueError {
            sqlstate,
            message: message.into(),
            unsupported: true,
        }
    }

    /// The message without the input it quotes without the input it quotes (`invalid input syntax for type date: "x"`,
    /// `value "99999" is out of range for type smallint`, `"1e99" is out of range for type
    /// real`, `invalid byte sequence for encoding "UTF8": 0x00`).
    pub fn without_value(&self) -> String {
        let mut cut = self.message.as_str();
        for marker in [": \"", "\": "] {
            if let Some(at) = cut.find(marker) {
                // Keep the closing quote of `"UTF8": ...`, drop the opening one of `: "x"`.
                let keep = if marker.starts_with('"') { at + 1 } else { at };
                cut = &cut[..keep];
            }
        }
        const RANGE: &str = "\" is out of range for type ";
        match cut.rfind(RANGE) {
            Some(at) => format!("value{}", &cut[at + 1..]),
            None => cut.to_owned(),
        }
    }

    /// The canonical bytes do not decode: the envelope held something this type cannot.
    pub(crate) fn corrupt(ty: &str) -> ValueError {
        ValueError::new(
            sqlstate::DATA_CORRUPTED,
            format!("stored value is not a valid canonical {ty}"),
        )
    }

    /// Binary input of the wrong size (Postgres: 08P01 from pq_getmsg*, or 22P03 when
    /// bytes are left over).
    pub(crate) fn binary_length(expected: usize, got: usize) -> ValueError {
        if got < expected {
            ValueError::new(
                sqlstate::PROTOCOL_VIOLATION,
                "insufficient data left in message",
            )
        } else {
            ValueError::new(
                sqlstate::INVALID_BINARY_REPRESENTATION,
                "incorrect binary data format",
            )
        }
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.sqlstate)
    }
}

impl std::error::Error for ValueError {}

/// The SQLSTATEs these codecs return.
pub mod sqlstate {
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const INVALID_BINARY_REPRESENTATION: &str = "22P03";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub const UNTRANSLATABLE_CHARACTER: &str = "22P05";
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const DATA_CORRUPTED: &str = "XX001";
}

/// Reads a literal, a text-format parameter or a COPY text field into the canonical form.
pub fn from_text(ty: &PgType, input: &str, settings: &Settings) -> Result<Vec<u8>, ValueError> {
    use Kind::*;
    match ty.kind() {
        Text | Varchar => bytes::text_in(ty, input.as_bytes()),
        Int2 | Int4 | Int8 => int::int_in(ty.kind(), input),
        Bool => int::bool_in(input),
        Uuid => int::uuid_in(input),
        Float4 | Float8 => float::float_in(ty.kind(), input),
        Numeric => numeric::numeric_in(ty.typmod(), input),
        Json => json::json_in(input),
        Jsonb => json::jsonb_in(input),
        Bytea => bytes::bytea_in(input),
        Date | Time | Timestamp | Timestamptz => datetime::from_text(ty.kind(), input, settings),
    }
}

/// Reads a binary-format Bind parameter (the type's recv format) into the canonical form.
pub fn from_binary(ty: &PgType, input: &[u8]) -> Result<Vec<u8>, ValueError> {
    use Kind::*;
    match ty.kind() {
        Text | Varchar => bytes::text_in(ty, input),
        Int2 | Int4 | Int8 => int::int_recv(ty.kind(), input),
        Bool => int::bool_recv(input),
        Uuid => int::uuid_recv(input),
        Float4 | Float8 => float::float_recv(ty.kind(), input),
        Numeric => numeric::numeric_recv(ty.typmod(), input),
        Json => json::json_recv(input),
        Jsonb => json::jsonb_recv(input),
        Bytea => Ok(input.to_vec()),
        Date | Time | Timestamp | Timestamptz => datetime::from_binary(ty.kind(), input),
    }
}

/// Prints a canonical value as Postgres prints the type under `settings` (DataRow text,
/// COPY TO).
pub fn to_text(ty: &PgType, canonical: &[u8], settings: &Settings) -> Result<String, ValueError> {
    use Kind::*;
    match ty.kind() {
        Bytea => Ok(bytes::bytea_out(canonical, settings)),
        Float4 | Float8 => float::float_out(ty.kind(), canonical, settings),
        Date | Time | Timestamp | Timestamptz => datetime::to_text(ty.kind(), canonical, settings),
        // Every other canonical form is the output text itself.
        _ => String::from_utf8(canonical.to_vec()).map_err(|_| ValueError::corrupt(&ty.name())),
    }
}

/// Whether [`to_text`] under `settings` gives the canonical bytes themselves (the common
/// case: ISO DateStyle, UTC for timestamptz, `extra_float_digits` >= 1), so a printed value
/// needs no conversion.
pub fn prints_canonical(ty: &PgType, settings: &Settings) -> bool {
    use settings::{DateStyle, Zone};
    use Kind::*;
    let utc = matches!(&settings.zone, Zone::Iana(tz) if *tz == chrono_tz::Tz::UTC || *tz == chrono_tz::Tz::Etc__UTC)
        || matches!(&settings.zone, Zone::Fixed { east: 0, .. });
    match ty.kind() {
        Bytea => false,
        Float4 | Float8 => settings.extra_float_digits > 0,
        Date | Time | Timestamp => settings.date_style == DateStyle::Iso,
        Timestamptz => settings.date_style == DateStyle::Iso && utc,
        Text | Varchar | Int2 | Int4 | Int8 | Numeric | Bool | Uuid | Json | Jsonb => true,
    }
}

/// The type's send format of a canonical value (DataRow binary).
pub fn to_binary(ty: &PgType, canonical: &[u8]) -> Result<Vec<u8>, ValueError> {
    use Kind::*;
    match ty.kind() {
        Text | Varchar | Json | Bytea => Ok(canonical.to_vec()),
        Jsonb => {
            let mut out = Vec::with_capacity(canonical.len() + 1);
            out.push(1);
            out.extend_from_slice(canonical);
            Ok(out)
        }
        Int2 | Int4 | Int8 => int::int_send(ty.kind(), canonical),
        Bool => int::bool_send(canonical),
        Uuid => int::uuid_send(canonical),
        Float4 | Float8 => float::float_send(ty.kind(), canonical),
        Numeric => numeric::numeric_send(canonical),
        Date | Time | Timestamp | Timestamptz => datetime::to_binary(ty.kind(), canonical),
    }
}

/// The value for the HTTP sidecar's JSON: integers, floats and numerics as JSON numbers when
/// the number is finite (a numeric is a number when `serde_json` can hold its digits exactly,
/// else its text as a string), booleans as booleans, json/jsonb as the JSON itself, every
/// other type (and anything that does not decode) as its canonical text in a string.
pub fn to_json(ty: &PgType, canonical: &[u8]) -> serde_json::Value {
    use serde_json::Value;
    use Kind::*;
    let text = || String::from_utf8_lossy(canonical).into_owned();
    match ty.kind() {
        Bool => Value::Bool(canonical == b"t"),
        Int2 | Int4 | Int8 => std::str::from_utf8(canonical)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Value::from)
            .unwrap_or_else(|| Value::String(text())),
        Float4 | Float8 => std::str::from_utf8(canonical)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text())),
        Numeric => numeric::to_json(canonical).unwrap_or_else(|| Value::String(text())),
        Json | Jsonb => serde_json::from_slice(canonical).unwrap_or_else(|_| Value::String(text())),
        Bytea => Value::String(bytes::bytea_out(canonical, &Settings::default())),
        Date | Time | Timestamp | Timestamptz | Text | Varchar | Uuid => Value::String(text()),
    }
}

#[cfg(test)]
mod tests {
    use super::ValueError;

    #[test]
    fn quoted_inputs_are_cut_from_messages() {
        let cases = [
            (
                "invalid input syntax for type date: \"x\"",
                "invalid input syntax for type date",
            ),
            (
                "value \"1\" is out of range for type integer",
                "value is out of range for type integer",
            ),
            (
                "\"1e99\" is out of range for type real",
                "value is out of range for type real",
            ),
            (
                "invalid byte sequence for encoding \"UTF8\": 0x00",
                "invalid byte sequence for encoding \"UTF8\"",
            ),
            ("numeric field overflow", "numeric field overflow"),
        ];
        for (message, cut) in cases {
            assert_eq!(ValueError::new("22P02", message).without_value(), cut);
        }
    }

    #[test]
    fn printing_the_canonical_form_is_recognised() {
        use super::*;
        let mut sql = Settings::default();
        sql.set("DateStyle", "SQL, DMY").unwrap();
        let mut tokyo = Settings::default();
        tokyo.set("TimeZone", "Asia/Tokyo").unwrap();
        for (name, text) in [
            ("date", "2020-01-02"),
            ("timestamptz", "2020-01-02 03:04:05+02"),
            ("double precision", "0.1"),
            ("numeric(10,2)", "1.5"),
            ("bytea", "\\x00ff"),
            ("time", "04:05:06"),
        ] {
            let ty = PgType::parse(name).unwrap();
            for settings in [Settings::default(), sql.clone(), tokyo.clone()] {
                let canonical = from_text(&ty, text, &settings).unwrap();
                let printed = to_text(&ty, &canonical, &settings).unwrap();
                if prints_canonical(&ty, &settings) {
                    assert_eq!(printed.as_bytes(), canonical, "{name}");
                }
            }
        }
        assert!(prints_canonical(
            &PgType::parse("date").unwrap(),
            &Settings::default()
        ));
        assert!(!prints_canonical(&PgType::parse("date").unwrap(), &sql));
        assert!(!prints_canonical(
            &PgType::parse("timestamptz").unwrap(),
            &tokyo
        ));
    }
}
