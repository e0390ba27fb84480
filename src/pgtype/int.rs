//! `smallint`, `integer`, `bigint`, `boolean` and `uuid`: Postgres 15's input rules
//! (`pg_strtoint*`, `parse_bool`, `string_to_uuid`), their send/recv formats, and the
//! canonical forms (the output text: `42`, `t`, lowercase hyphenated uuid).

use super::{sqlstate, Kind, ValueError};

/// The whitespace C's `isspace` accepts, which Postgres skips around numbers and booleans.
pub(crate) fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

pub(crate) fn trim_c_space(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_c_space(c as u8))
}

fn int_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Int2 => "smallint",
        Kind::Int4 => "integer",
        _ => "bigint",
    }
}

fn int_range(kind: Kind) -> (i64, i64) {
    match kind {
        Kind::Int2 => (i16::MIN as i64, i16::MAX as i64),
        Kind::Int4 => (i32::MIN as i64, i32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Postgres 15's `pg_strtoint16/32/64`: whitespace, an optional sign, decimal digits
/// (no underscores, no hex: those came in 16).
pub(crate) fn int_in(kind: Kind, input: &str) -> Result<Vec<u8>, ValueError> {
    let name = int_name(kind);
    let s = trim_c_space(input);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::syntax(name, input));
    }
    let out_of_range = || {
        ValueError::new(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("value \"{input}\" is out of range for type {name}"),
        )
    };
    let mut v: i128 = 0;
    for b in digits.bytes() {
        v = v * 10 + i128::from(b - b'0');
        if v > i128::from(u64::MAX) {
            return Err(out_of_range());
        }
    }
    let v = if neg { -v } else { v };
    let (lo, hi) = int_range(kind);
    if v < i128::from(lo) || v > i128::from(hi) {
        return Err(out_of_range());
    }
    Ok(v.to_string().into_bytes())
}

fn canonical_int(kind: Kind, canonical: &[u8]) -> Result<i64, ValueError> {
    let (lo, hi) = int_range(kind);
    std::str::from_utf8(canonical)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| ValueError::corrupt(int_name(kind)))
}

pub(crate) fn int_recv(kind: Kind, input: &[u8]) -> Result<Vec<u8>, ValueError> {
    let v = match kind {
        Kind::Int2 => i64::from(i16::from_be_bytes(fixed(input)?)),
        Kind::Int4 => i64::from(i32::from_be_bytes(fixed(input)?)),
        _ => i64::from_be_bytes(fixed(input)?),
    };
    Ok(v.to_string().into_bytes())
}

pub(crate) fn int_send(kind: Kind, canonical: &[u8]) -> Result<Vec<u8>, ValueError> {
    let v = canonical_int(kind, canonical)?;
    Ok(match kind {
        Kind::Int2 => (v as i16).to_be_bytes().to_vec(),
        Kind::Int4 => (v as i32).to_be_bytes().to_vec(),
        _ => v.to_be_bytes().to_vec(),
    })
}

/// Exactly `N` bytes, as a fixed-size recv function reads them.
pub(crate) fn fixed<const N: usize>(input: &[u8]) -> Result<[u8; N], ValueError> {
    input
        .try_into()
        .map_err(|_| ValueError::binary_length(N, input.len()))
}

/// `parse_bool`: `t/true/yes/on/1/f/false/no/off/0`, any case, unique prefixes, whitespace.
pub(crate) fn bool_in(input: &str) -> Result<Vec<u8>, ValueError> {
    let s = trim_c_space(input).to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| s.len() >= min && word.starts_with(s.as_str());
    let v = if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || s == "1" {
        true
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || s == "0" {
        false
    } else {
        return Err(ValueError::syntax("boolean", input));
    };
    Ok(if v { b"t".to_vec() } else { b"f".to_vec() })
}

pub(crate) fn bool_recv(input: &[u8]) -> Result<Vec<u8>, ValueError> {
    let [b] = fixed::<1>(input)?;
    Ok(if b != 0 { b"t".to_vec() } else { b"f".to_vec() })
}

pub(crate) fn bool_send(canonical: &[u8]) -> Result<Vec<u8>, ValueError> {
    match canonical {
        b"t" => Ok(vec![1]),
        b"f" => Ok(vec![0]),
        _ => Err(ValueError::corrupt("boolean")),
    }
}

/// `string_to_uuid`: 32 hex digits, a hyphen allowed after any group of four, optional
/// braces, no whitespace.
pub(crate) fn uuid_in(input: &str) -> Result<Vec<u8>, ValueError> {
    let bytes = parse_uuid(input.as_bytes()).ok_or_else(|| ValueError::syntax("uuid", input))?;
    Ok(format_uuid(&bytes).into_bytes())
}

fn parse_uuid(src: &[u8]) -> Option<[u8; 16]> {
    let (braces, mut rest) = match src.strip_prefix(b"{") {
        Some(r) => (true, r),
        None => (false, src),
    };
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let [hi, lo, ..] = rest else { return None };
        let hex = |c: u8| (c as char).to_digit(16);
        *byte = (hex(*hi)? * 16 + hex(*lo)?) as u8;
        rest = &rest[2..];
        if rest.first() == Some(&b'-') && i % 2 == 1 && i < 15 {
            rest = &rest[1..];
        }
    }
    if braces {
        rest = rest.strip_prefix(b"}")?;
    }
    rest.is_empty().then_some(out)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

pub(crate) fn uuid_recv(input: &[u8]) -> Result<Vec<u8>, ValueError> {
    Ok(format_uuid(&fixed::<16>(input)?).into_bytes())
}

pub(crate) fn uuid_send(canonical: &[u8]) -> Result<Vec<u8>, ValueError> {
    parse_uuid(canonical)
        .map(|b| b.to_vec())
        .ok_or_else(|| ValueError::corrupt("uuid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(kind: Kind, s: &str) -> Result<String, &'static str> {
        int_in(kind, s)
            .map(|v| String::from_utf8(v).unwrap())
            .map_err(|e| e.sqlstate)
    }

    #[test]
    fn integers_as_postgres_15() {
        assert_eq!(int(Kind::Int4, " +42\n"), Ok("42".into()));
        assert_eq!(int(Kind::Int4, "-0007"), Ok("-7".into()));
        assert_eq!(int(Kind::Int2, "32768"), Err("22003"));
        assert_eq!(int(Kind::Int2, "-32768"), Ok("-32768".into()));
        assert_eq!(
            int(Kind::Int8, "-9223372036854775808"),
            Ok("-9223372036854775808".into())
        );
        assert_eq!(int(Kind::Int8, "99999999999999999999999"), Err("22003"));
        for bad in ["", " ", "1_000", "0x10", "1.0", "- 1", "1e3", "１"] {
            assert_eq!(int(Kind::Int4, bad), Err("22P02"), "{bad}");
        }
        let e = int_in(Kind::Int4, "x").unwrap_err();
        assert_eq!(e.message, "invalid input syntax for type integer: \"x\"");
        assert_eq!(int_send(Kind::Int2, b"-2").unwrap(), vec![0xff, 0xfe]);
        assert_eq!(int_recv(Kind::Int4, &[0, 0, 1, 0]).unwrap(), b"256");
        assert_eq!(int_recv(Kind::Int4, &[0, 1]).unwrap_err().sqlstate, "08P01");
    }

    #[test]
    fn booleans() {
        for t in ["t", "TRUE", " yes ", "on", "1", "tr", "Y"] {
            assert_eq!(bool_in(t).unwrap(), b"t", "{t}");
        }
        for f in ["f", "False", "no", "off", "0", "of", "n"] {
            assert_eq!(bool_in(f).unwrap(), b"f", "{f}");
        }
        for bad in ["o", "2", "truex", "", "yess"] {
            assert_eq!(bool_in(bad).unwrap_err().sqlstate, "22P02", "{bad}");
        }
        assert_eq!(bool_recv(&[7]).unwrap(), b"t");
    }

    #[test]
    fn uuids() {
        let want = b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".to_vec();
        for s in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(uuid_in(s).unwrap(), want, "{s}");
        }
        for bad in [
            " a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0e-ebc999c0b4ef8bb6d6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert!(uuid_in(bad).is_err(), "{bad}");
        }
        assert_eq!(uuid_recv(&uuid_send(&want).unwrap()).unwrap(), want);
    }
}
