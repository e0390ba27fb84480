//! `json` and `jsonb`. Both are parsed by Postgres's rules (RFC 8259: strict numbers,
//! escaped control characters, whitespace of space, tab, CR, LF). `json` keeps the text
//! as given. `jsonb`'s canonical form is Postgres's normalised output: keys sorted by
//! length then bytes, the last of duplicate keys wins, `", "` and `": "` separators,
//! strings re-escaped as `escape_json` does, `\u` escapes decoded (`\u0000` and lone
//! surrogates refused), numbers as numeric values with trailing fractional zeros stripped
//! (Postgres prints `1.50` but holds it equal to `1.5`, so the canonical form must merge
//! them; the application sees `1.5`).

use super::{numeric, sqlstate, ValueError};

/// Deeper documents are refused (Postgres's limit depends on its stack size).
const MAX_DEPTH: usize = 1000;

enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    /// jsonb: decode strings and build the tree.
    build: bool,
}

fn syntax(detail: &str) -> ValueError {
    ValueError::new(
        sqlstate::INVALID_TEXT_REPRESENTATION,
        format!("invalid input syntax for type json: {detail}"),
    )
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, ValueError> {
        if depth > MAX_DEPTH {
            return Err(ValueError::unsupported(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("pgcloak does not support JSON nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.skip_ws();
        match self.s.get(self.at) {
            None => Err(syntax("The input string ended unexpectedly.")),
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                self.skip_ws();
                if self.s.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(fields));
                }
                loop {
                    self.skip_ws();
                    if self.s.get(self.at) != Some(&b'"') {
                        return Err(syntax("Expected string."));
                    }
                    let key = self.string()?;
                    self.skip_ws();
                    if self.s.get(self.at) != Some(&b':') {
                        return Err(syntax("Expected \":\"."));
                    }
                    self.at += 1;
                    let v = self.value(depth + 1)?;
                    if self.build {
                        fields.push((key, v));
                    }
                    self.skip_ws();
                    match self.s.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(fields));
                        }
                        _ => return Err(syntax("Expected \",\" or \"}\".")),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.s.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    let v = self.value(depth + 1)?;
                    if self.build {
                        items.push(v);
                    }
                    self.skip_ws();
                    match self.s.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(syntax("Expected \",\" or \"]\".")),
                    }
                }
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80)
                {
                    self.at += 1;
                }
                match &self.s[start..self.at] {
                    b"true" => Ok(Json::Bool(true)),
                    b"false" => Ok(Json::Bool(false)),
                    b"null" => Ok(Json::Null),
                    _ => Err(syntax("Expected JSON value.")),
                }
            }
        }
    }

    fn number(&mut self) -> Result<Json, ValueError> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.s.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            p.at - from
        };
        if self.s.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let mut ok = match self.s.get(self.at) {
            Some(b'0') => {
                self.at += 1;
                true
            }
            Some(b'1'..=b'9') => digits(self) > 0,
            _ => false,
        };
        if self.s.get(self.at) == Some(&b'.') {
            self.at += 1;
            ok &= digits(self) > 0;
        }
        if matches!(self.s.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.s.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            ok &= digits(self) > 0;
        }
        // Trailing letters or digits make the whole token invalid (`01`, `1x`).
        if !ok
            || self
                .s
                .get(self.at)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80)
        {
            return Err(syntax("Token is invalid."));
        }
        let text = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
        Ok(Json::Number(text))
    }

    fn hex4(&mut self) -> Result<u32, ValueError> {
        let hex = self
            .s
            .get(self.at..self.at + 4)
            .ok_or_else(|| syntax("\"\\u\" must be followed by four hexadecimal digits."))?;
        let v = std::str::from_utf8(hex)
            .ok()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| syntax("\"\\u\" must be followed by four hexadecimal digits."))?;
        self.at += 4;
        Ok(v)
    }

    /// A string token; decoded when building (jsonb), else only validated.
    fn string(&mut self) -> Result<String, ValueError> {
        self.at += 1;
        let mut out = String::new();
        let mut high: Option<u32> = None;
        loop {
            let Some(&c) = self.s.get(self.at) else {
                return Err(syntax("The input string ended unexpectedly."));
            };
            self.at += 1;
            if c != b'\\' && high.is_some() && self.build {
                return Err(syntax(
                    "Unicode low surrogate must follow a high surrogate.",
                ));
            }
            match c {
                b'"' => return Ok(out),
                0..=0x1f => return Err(syntax("Character with value 0x.. must be escaped.")),
                b'\\' => {
                    let Some(&e) = self.s.get(self.at) else {
                        return Err(syntax("The input string ended unexpectedly."));
                    };
                    self.at += 1;
                    let plain =
                        match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let cp = self.hex4()?;
                                if !self.build {
                                    continue;
                                }
                                match (high.take(), cp) {
                                    (None, 0xd800..=0xdbff) => {
                                        high = Some(cp);
                                        continue;
                                    }
                                    (Some(_), 0xd800..=0xdbff) | (None, 0xdc00..=0xdfff) => {
                                        return Err(syntax(
                                            "Unicode low surrogate must follow a high surrogate.",
                                        ))
                                    }
                                    (Some(h), 0xdc00..=0xdfff) => {
                                        let full = 0x10000 + ((h - 0xd800) << 10) + (cp - 0xdc00);
                                        out.push(char::from_u32(full).unwrap_or('\u{fffd}'));
                                        continue;
                                    }
                                    (Some(_), _) => {
                                        return Err(syntax(
                                            "Unicode low surrogate must follow a high surrogate.",
                                        ))
                                    }
                                    (None, 0) => return Err(ValueError::new(
                                        sqlstate::UNTRANSLATABLE_CHARACTER,
                                        "unsupported Unicode escape sequence: \\u0000 cannot be \
                                         converted to text.",
                                    )),
                                    (None, cp) => char::from_u32(cp).unwrap_or('\u{fffd}'),
                                }
                            }
                            _ => return Err(syntax("Escape sequence is invalid.")),
                        };
                    if high.is_some() && self.build {
                        return Err(syntax(
                            "Unicode low surrogate must follow a high surrogate.",
                        ));
                    }
                    if self.build {
                        out.push(plain);
                    }
                }
                _ => {
                    if self.build {
                        // Copy the whole UTF-8 sequence (the input is a &str).
                        let start = self.at - 1;
                        let mut end = self.at;
                        while end < self.s.len() && (self.s[end] & 0xc0) == 0x80 {
                            end += 1;
                        }
                        out.push_str(&String::from_utf8_lossy(&self.s[start..end]));
                        self.at = end;
                    }
                }
            }
        }
    }
}

fn parse(input: &str, build: bool) -> Result<Json, ValueError> {
    let mut p = Parser {
        s: input.as_bytes(),
        at: 0,
        build,
    };
    let v = p.value(0)?;
    p.skip_ws();
    if p.at != p.s.len() {
        return Err(syntax("Expected end of input."));
    }
    Ok(v)
}

pub(crate) fn json_in(input: &str) -> Result<Vec<u8>, ValueError> {
    parse(input, false)?;
    Ok(input.as_bytes().to_vec())
}

pub(crate) fn json_recv(input: &[u8]) -> Result<Vec<u8>, ValueError> {
    let text = super::bytes::text_in(&super::PgType::new(super::Kind::Text), input)?;
    json_in(std::str::from_utf8(&text).map_err(|_| ValueError::corrupt("json"))?)
}

pub(crate) fn jsonb_in(input: &str) -> Result<Vec<u8>, ValueError> {
    let tree = parse(input, true)?;
    let mut out = String::with_capacity(input.len());
    write_jsonb(normalise(tree)?, &mut out);
    Ok(out.into_bytes())
}

pub(crate) fn jsonb_recv(input: &[u8]) -> Result<Vec<u8>, ValueError> {
    match input.split_first() {
        Some((1, text)) => {
            let text = super::bytes::text_in(&super::PgType::new(super::Kind::Text), text)?;
            jsonb_in(std::str::from_utf8(&text).map_err(|_| ValueError::corrupt("jsonb"))?)
        }
        Some((v, _)) => Err(ValueError::new(
            "XX000",
            format!("unsupported jsonb version number {v}"),
        )),
        None => Err(ValueError::binary_length(1, 0)),
    }
}

/// Sorts keys, keeps the last duplicate, turns numbers into canonical numerics.
fn normalise(v: Json) -> Result<Json, ValueError> {
    Ok(match v {
        Json::Number(n) => {
            let canonical = numeric::numeric_in(-1, &n)?;
            Json::Number(String::from_utf8_lossy(&canonical).into_owned())
        }
        Json::Array(items) => {
            Json::Array(items.into_iter().map(normalise).collect::<Result<_, _>>()?)
        }
        Json::Object(fields) => {
            let mut fields: Vec<(String, Json)> = fields
                .into_iter()
                .map(|(k, v)| Ok((k, normalise(v)?)))
                .collect::<Result<_, ValueError>>()?;
            // A stable sort keeps duplicates in input order; the last one wins.
            fields.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
            let mut unique: Vec<(String, Json)> = Vec::with_capacity(fields.len());
            for (k, v) in fields {
                match unique.last_mut() {
                    Some(last) if last.0 == k => last.1 = v,
                    _ => unique.push((k, v)),
                }
            }
            Json::Object(unique)
        }
        other => other,
    })
}

fn write_jsonb(v: Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&n),
        Json::String(s) => escape(&s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        Json::Object(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                escape(&k, out);
                out.push_str(": ");
                write_jsonb(v, out);
            }
            out.push('}');
        }
    }
}

/// `escape_json`.
fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonb(s: &str) -> String {
        String::from_utf8(jsonb_in(s).unwrap()).unwrap()
    }

    #[test]
    fn jsonb_normalises_as_postgres() {
        assert_eq!(
            jsonb(r#"{"b":1.50,"aa":[1e2,-0,"x\u00e9\n\/"],"a":{}, "b":2}"#),
            r#"{"a": {}, "b": 2, "aa": [100, 0, "xé\n/"]}"#
        );
        assert_eq!(jsonb(" [ ] "), "[]");
        assert_eq!(jsonb(r#""\ud83d\ude00\u0001""#), "\"😀\\u0001\"");
        assert_eq!(jsonb_in(r#""\u0000""#).unwrap_err().sqlstate, "22P05");
        assert_eq!(jsonb_in(r#""\ud800""#).unwrap_err().sqlstate, "22P02");
        assert_eq!(
            jsonb(r#"{"a":1,"b":2}"#),
            jsonb(r#"{ "b" : 2 , "a" : 1.0 , "a": 1 }"#)
        );
    }

    #[test]
    fn json_validates_and_keeps_text() {
        assert_eq!(
            json_in(r#" {"b":1, "b":2} "#).unwrap(),
            br#" {"b":1, "b":2} "#
        );
        assert!(json_in(r#""\u0000\ud800""#).is_ok());
        for bad in [
            "",
            " ",
            "[1,]",
            "01",
            "1.",
            ".5",
            "-",
            "tru",
            "\"\\x\"",
            "true false",
            "{\"a\"}",
            "\"\u{1}\"",
            "NaN",
            "1e",
        ] {
            assert_eq!(json_in(bad).unwrap_err().sqlstate, "22P02", "{bad}");
        }
        assert_eq!(jsonb_recv(b"\x01[1]").unwrap(), b"[1]");
        assert_eq!(jsonb_recv(b"\x02[1]").unwrap_err().sqlstate, "XX000");
    }
}
