//! The tokenizer of date and time input, shaped like Postgres's `ParseDateTime`: numbers,
//! dates with their delimiter, times, offsets, words and zone names, plus the month and
//! weekday names (see `parse.rs` for what the tokens are decoded into).

use crate::pgtype::{sqlstate, Kind, ValueError};

#[derive(Debug)]
pub(super) enum Tok {
    Num(String),
    /// A date with its delimiter: `2020-01-02`, `jan-02-2020`.
    Date(String, char),
    Time(String),
    /// `+02`, `-03:30`.
    Offset(String),
    Word(String),
    /// An IANA zone name, case kept.
    Zone(String),
}

pub(super) struct Ctx<'a> {
    pub(super) kind: Kind,
    pub(super) input: &'a str,
}

impl Ctx<'_> {
    pub(super) fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Date => "date",
            Kind::Time => "time",
            Kind::Timestamp => "timestamp",
            _ => "timestamp with time zone",
        }
    }

    pub(super) fn bad_format(&self) -> ValueError {
        ValueError::new(
            sqlstate::INVALID_DATETIME_FORMAT,
            format!(
                "invalid input syntax for type {}: \"{}\"",
                self.type_name(),
                self.input
            ),
        )
    }

    pub(super) fn field_overflow(&self) -> ValueError {
        ValueError::new(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("date/time field value out of range: \"{}\"", self.input),
        )
    }

    pub(super) fn out_of_range(&self) -> ValueError {
        let what = if self.kind == Kind::Date {
            "date"
        } else {
            "timestamp"
        };
        ValueError::new(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("{what} out of range: \"{}\"", self.input),
        )
    }

    pub(super) fn unsupported(&self, what: &str) -> ValueError {
        ValueError::unsupported(
            sqlstate::INVALID_DATETIME_FORMAT,
            format!(
                "pgcloak does not support this {} input form ({what}); write it as ISO 8601, \
                 e.g. 2020-01-02 03:04:05+00",
                self.type_name()
            ),
        )
    }
}

pub(super) fn tokenize(cx: &Ctx) -> Result<Vec<Tok>, ValueError> {
    let s = cx.input.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let scan = |i: &mut usize, ok: &dyn Fn(u8) -> bool| {
        let start = *i;
        while *i < s.len() && ok(s[*i]) {
            *i += 1;
        }
        String::from_utf8_lossy(&s[start..*i]).to_ascii_lowercase()
    };
    while i < s.len() {
        let c = s[i];
        if !c.is_ascii() {
            return Err(cx.unsupported("non-ASCII characters"));
        }
        if c.is_ascii_whitespace() || c == b',' {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            scan(&mut i, &|b| b.is_ascii_digit());
            match s.get(i).copied() {
                Some(b':') => {
                    i = start;
                    toks.push(Tok::Time(scan(&mut i, &|b| {
                        b.is_ascii_digit() || b == b':' || b == b'.'
                    })));
                }
                Some(d @ (b'-' | b'/' | b'.')) => {
                    i += 1;
                    let text_month = s.get(i).is_some_and(u8::is_ascii_alphabetic);
                    i = start;
                    let tok = scan(&mut i, &|b| {
                        b.is_ascii_digit() || b == d || (text_month && b.is_ascii_alphabetic())
                    });
                    if d == b'.' && tok.matches('.').count() == 1 {
                        return Err(cx.unsupported("a number with a fraction"));
                    }
                    toks.push(Tok::Date(tok, d as char));
                }
                _ => toks.push(Tok::Num(String::from_utf8_lossy(&s[start..i]).into())),
            }
        } else if c.is_ascii_alphabetic() {
            let start = i;
            let word = scan(&mut i, &|b| b.is_ascii_alphabetic());
            match s.get(i).copied() {
                Some(b'/' | b'_') => {
                    i = start;
                    scan(&mut i, &|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'+' | b'-')
                    });
                    toks.push(Tok::Zone(String::from_utf8_lossy(&s[start..i]).into()));
                }
                Some(d @ (b'-' | b'.')) if month(&word).is_some() => {
                    i = start;
                    let tok = scan(&mut i, &|b| b.is_ascii_alphanumeric() || b == d);
                    toks.push(Tok::Date(tok, d as char));
                }
                Some(b'-' | b'+' | b'.' | b':') => {
                    return Err(cx.unsupported("a word joined to a sign or number"))
                }
                _ => toks.push(Tok::Word(word)),
            }
        } else if c == b'+' || c == b'-' {
            i += 1;
            match s.get(i) {
                Some(b) if b.is_ascii_digit() => {
                    let rest = scan(&mut i, &|b| b.is_ascii_digit() || b == b':');
                    toks.push(Tok::Offset(format!("{}{rest}", c as char)));
                }
                Some(b) if b.is_ascii_alphabetic() => {
                    let rest = scan(&mut i, &|b| b.is_ascii_alphabetic());
                    toks.push(Tok::Word(format!("{}{rest}", c as char)));
                }
                _ => return Err(cx.unsupported("a sign without a number")),
            }
        } else {
            return Err(cx.unsupported("punctuation"));
        }
    }
    Ok(toks)
}

pub(super) fn month(word: &str) -> Option<i64> {
    Some(match word {
        "jan" | "january" => 1,
        "feb" | "february" => 2,
        "mar" | "march" => 3,
        "apr" | "april" => 4,
        "may" => 5,
        "jun" | "june" => 6,
        "jul" | "july" => 7,
        "aug" | "august" => 8,
        "sep" | "sept" | "september" => 9,
        "oct" | "october" => 10,
        "nov" | "november" => 11,
        "dec" | "december" => 12,
        _ => return None,
    })
}

pub(super) fn is_weekday(word: &str) -> bool {
    matches!(
        word,
        "sun"
            | "sunday"
            | "mon"
            | "monday"
            | "tue"
            | "tues"
            | "tuesday"
            | "wed"
            | "wednesday"
            | "thu"
            | "thur"
            | "thurs"
            | "thursday"
            | "fri"
            | "friday"
            | "sat"
            | "saturday"
    )
}
