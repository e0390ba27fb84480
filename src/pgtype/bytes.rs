//! `text`, `varchar(n)` and `bytea`. Text is UTF-8 passed through (the server encoding is
//! UTF-8; Postgres refuses NUL and invalid sequences); `varchar(n)` is checked as an
//! assignment to a `varchar(n)` column is; bytea reads the hex and escape formats.

use super::{sqlstate, PgType, Settings, ValueError};

/// Text and varchar: the bytes unchanged, checked as UTF-8 without NUL, and for
/// `varchar(n)` at most `n` characters once trailing spaces beyond `n` are cut.
pub(crate) fn text_in(ty: &PgType, input: &[u8]) -> Result<Vec<u8>, ValueError> {
    let bad_byte = |at: usize| {
        let seq: String = input[at..]
            .iter()
            .take(4)
            .map(|b| format!("0x{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        ValueError::new(
            sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            format!("invalid byte sequence for encoding \"UTF8\": {seq}"),
        )
    };
    let text = std::str::from_utf8(input).map_err(|e| bad_byte(e.valid_up_to()))?;
    if let Some(at) = input.iter().position(|&b| b == 0) {
        return Err(bad_byte(at));
    }
    let Some(max) = ty.varchar_len() else {
        return Ok(input.to_vec());
    };
    match text.char_indices().nth(max) {
        None => Ok(input.to_vec()),
        Some((cut, _)) if text[cut..].bytes().all(|b| b == b' ') => Ok(input[..cut].to_vec()),
        Some(_) => Err(ValueError::new(
            sqlstate::STRING_DATA_RIGHT_TRUNCATION,
            format!("value too long for type character varying({max})"),
        )),
    }
}

/// `byteain`: `\x` followed by hex pairs (whitespace between pairs), or the escape format
/// (`\\` and `\ooo` with a first digit 0-3).
pub(crate) fn bytea_in(input: &str) -> Result<Vec<u8>, ValueError> {
    let s = input.as_bytes();
    if let Some(hex) = s.strip_prefix(b"\\x") {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut i = 0;
        let digit = |c: u8| {
            (c as char).to_digit(16).map(|d| d as u8).ok_or_else(|| {
                ValueError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!(
                        "invalid hexadecimal digit: \"{}\"",
                        String::from_utf8_lossy(&[c])
                    ),
                )
            })
        };
        while i < hex.len() {
            if matches!(hex[i], b' ' | b'\t' | b'\n' | b'\r') {
                i += 1;
                continue;
            }
            let hi = digit(hex[i])?;
            let Some(&lo) = hex.get(i + 1) else {
                return Err(ValueError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "invalid hexadecimal data: odd number of digits",
                ));
            };
            out.push(hi << 4 | digit(lo)?);
            i += 2;
        }
        return Ok(out);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
        } else if s.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            match s.get(i + 1..i + 4) {
                Some([a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                    out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
                    i += 4;
                }
                _ => {
                    return Err(ValueError::new(
                        sqlstate::INVALID_TEXT_REPRESENTATION,
                        "invalid input syntax for type bytea",
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// `byteaout` under `bytea_output`.
pub(crate) fn bytea_out(raw: &[u8], settings: &Settings) -> String {
    let mut s = String::with_capacity(raw.len() * 2 + 2);
    if settings.bytea_hex {
        s.push_str("\\x");
        for b in raw {
            s.push_str(&format!("{b:02x}"));
        }
    } else {
        for &b in raw {
            match b {
                b'\\' => s.push_str("\\\\"),
                0x20..=0x7e => s.push(b as char),
                _ => s.push_str(&format!("\\{b:03o}")),
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varchar_limits_like_an_assignment() {
        let ty = PgType::parse("varchar(3)").unwrap();
        assert_eq!(text_in(&ty, "abc   ".as_bytes()).unwrap(), b"abc");
        assert_eq!(text_in(&ty, "éèà".as_bytes()).unwrap(), "éèà".as_bytes());
        let e = text_in(&ty, b"abcd").unwrap_err();
        assert_eq!(
            (e.sqlstate, e.message.as_str()),
            ("22001", "value too long for type character varying(3)")
        );
        let text = PgType::parse("text").unwrap();
        assert_eq!(text_in(&text, b"a\0b").unwrap_err().sqlstate, "22021");
        assert_eq!(text_in(&text, b"\xff").unwrap_err().sqlstate, "22021");
    }

    #[test]
    fn bytea_formats() {
        assert_eq!(bytea_in("\\x41 42\n43").unwrap(), b"ABC");
        assert_eq!(bytea_in("\\x4").unwrap_err().sqlstate, "22023");
        assert_eq!(
            bytea_in("\\x4g").unwrap_err().message,
            "invalid hexadecimal digit: \"g\""
        );
        assert_eq!(bytea_in("a\\\\b\\001\\377").unwrap(), b"a\\b\x01\xff");
        assert_eq!(bytea_in("\\400").unwrap_err().sqlstate, "22P02");
        let mut esc = Settings::default();
        esc.set("bytea_output", "escape").unwrap();
        assert_eq!(bytea_out(b"a\\\x01\xff", &esc), "a\\\\\\001\\377");
        assert_eq!(bytea_out(b"\x01\xab", &Settings::default()), "\\x01ab");
    }
}
