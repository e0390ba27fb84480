//! One COPY format's fields: where they begin and end in a row, their values (escapes and
//! quotes resolved), and how a value is written back. Fields are found as ranges into the
//! row (no copy), with `memchr` jumping to the next byte that matters.

use std::borrow::Cow;
use std::ops::Range;

use crate::sql::{CopyFormat, CopyOptions};

use super::CopyError;

/// The bytes a COPY's options stand for, with the format's defaults filled in.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub(super) csv: bool,
    pub(super) delimiter: u8,
    pub(super) quote: u8,
    pub(super) escape: u8,
    pub(super) null: Vec<u8>,
    pub(super) header: bool,
}

impl Dialect {
    pub fn new(options: &CopyOptions) -> Dialect {
        let csv = options.format == CopyFormat::Csv;
        let delimiter = options.delimiter.unwrap_or(if csv { ',' } else { '\t' });
        let quote = options.quote.unwrap_or('"');
        let null =
            options
                .null
                .clone()
                .unwrap_or_else(|| if csv { String::new() } else { "\\N".into() });
        Dialect {
            csv,
            delimiter: delimiter as u8,
            quote: quote as u8,
            escape: options.escape.unwrap_or(quote) as u8,
            null: null.into_bytes(),
            header: options.header,
        }
    }

    /// Ciphertext must pass through unquoted: a delimiter from its alphabet would split it,
    /// a CSV quote from its alphabet would open a quoted field inside it.
    pub(super) fn check_delimiter(&self) -> Result<(), CopyError> {
        let in_envelope = |c: char| c.is_ascii_alphanumeric() || "$-_".contains(c);
        let delimiter = self.delimiter as char;
        if in_envelope(delimiter) {
            return Err(CopyError::Delimiter(delimiter));
        }
        if self.csv && in_envelope(self.quote as char) {
            return Err(CopyError::Quote(self.quote as char));
        }
        Ok(())
    }

    /// The raw fields of a row (still escaped or quoted), as ranges into it, in `fields`.
    pub fn split(&self, row: &[u8], fields: &mut Vec<Range<usize>>) {
        fields.clear();
        let mut start = 0;
        let mut i = 0;
        if !self.csv {
            // A backslash escapes the byte after it, an escaped delimiter included.
            while let Some(at) = memchr::memchr2(self.delimiter, b'\\', &row[i..]) {
                let at = i + at;
                if row[at] == b'\\' {
                    i = at + 2;
                    if i >= row.len() {
                        break;
                    }
                } else {
                    fields.push(start..at);
                    start = at + 1;
                    i = at + 1;
                }
            }
            fields.push(start..row.len());
            return;
        }
        let mut quoted = false;
        while i < row.len() {
            let found = match quoted {
                false => memchr::memchr2(self.delimiter, self.quote, &row[i..]),
                true => memchr::memchr2(self.quote, self.escape, &row[i..]),
            };
            let Some(at) = found.map(|at| i + at) else {
                break;
            };
            let b = row[at];
            if quoted && b == self.escape && self.escape != self.quote {
                i = at + 2; // the escaped byte is part of the field
            } else if b == self.quote {
                quoted = !quoted;
                i = at + 1;
            } else {
                fields.push(start..at);
                start = at + 1;
                i = at + 1;
            }
        }
        fields.push(start..row.len());
    }

    /// A field's value: in text, backslash escapes resolved; in CSV, quotes removed and
    /// escaped quotes restored. Borrowed when there is nothing to resolve.
    pub fn value<'a>(&self, field: &'a [u8]) -> Cow<'a, [u8]> {
        match self.csv {
            false if memchr::memchr(b'\\', field).is_none() => Cow::Borrowed(field),
            false => Cow::Owned(unescape_text(field)),
            true if memchr::memchr(self.quote, field).is_none() => Cow::Borrowed(field),
            true => Cow::Owned(self.unquote_csv(field)),
        }
    }

    /// A CSV field's value: quotes removed, escaped quotes restored.
    fn unquote_csv(&self, field: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(field.len());
        let mut quoted = false;
        let mut i = 0;
        while i < field.len() {
            let b = field[i];
            if quoted && b == self.escape && field.get(i + 1) == Some(&self.quote) {
                out.push(self.quote);
                i += 2;
                continue;
            }
            if b == self.quote {
                quoted = !quoted;
            } else {
                out.push(b);
            }
            i += 1;
        }
        out
    }

    /// `value` written as one field of this format (in CSV quoted if `quote`, as
    /// FORCE_QUOTE asks, or if it must be).
    pub(super) fn write_field(&self, value: &[u8], quote: bool, out: &mut Vec<u8>) {
        if self.csv {
            let needs_quotes = quote
                || value.is_empty()
                || value == self.null.as_slice()
                || value
                    .iter()
                    .any(|&b| b == self.delimiter || b == self.quote || b == b'\n' || b == b'\r');
            if !needs_quotes {
                out.extend_from_slice(value);
                return;
            }
            out.push(self.quote);
            for &b in value {
                if b == self.quote || b == self.escape {
                    out.push(self.escape);
                }
                out.push(b);
            }
            out.push(self.quote);
            return;
        }
        let special = |b: u8| matches!(b, b'\\' | b'\n' | b'\r' | b'\t') || b == self.delimiter;
        if !value.iter().any(|&b| special(b)) {
            out.extend_from_slice(value);
            return;
        }
        for &b in value {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ if b == self.delimiter => {
                    out.push(b'\\');
                    out.push(b);
                }
                _ => out.push(b),
            }
        }
    }
}

/// A text-format field's value: backslash escapes resolved.
pub(super) fn unescape_text(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] != b'\\' || i + 1 == field.len() {
            out.push(field[i]);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let digits = take_digits(field, &mut i, 2, 16);
                out.push(digits.unwrap_or(b'x'));
            }
            b'0'..=b'7' => {
                i -= 1;
                let digits = take_digits(field, &mut i, 3, 8);
                out.push(digits.unwrap_or(next));
            }
            other => out.push(other),
        }
    }
    out
}

fn take_digits(field: &[u8], i: &mut usize, max: usize, radix: u32) -> Option<u8> {
    let mut value: u32 = 0;
    let mut n = 0;
    while n < max {
        let Some(digit) = field.get(*i).and_then(|&b| (b as char).to_digit(radix)) else {
            break;
        };
        value = value * radix + digit;
        *i += 1;
        n += 1;
    }
    (n > 0).then_some(value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(dialect: &Dialect, row: &'a [u8]) -> Vec<&'a [u8]> {
        let mut ranges = Vec::new();
        dialect.split(row, &mut ranges);
        ranges.into_iter().map(|r| &row[r]).collect()
    }

    /// The byte-at-a-time reading of the formats, which `split` must agree with.
    fn reference(dialect: &Dialect, row: &[u8]) -> Vec<Vec<u8>> {
        let mut fields = vec![Vec::new()];
        let mut quoted = false;
        let mut i = 0;
        while i < row.len() {
            let b = row[i];
            let field = fields.last_mut().unwrap();
            match dialect.csv {
                false if b == b'\\' => {
                    field.push(b);
                    if let Some(&next) = row.get(i + 1) {
                        field.push(next);
                        i += 1;
                    }
                }
                true if quoted && b == dialect.escape && dialect.escape != dialect.quote => {
                    field.push(b);
                    if let Some(&next) = row.get(i + 1) {
                        field.push(next);
                        i += 1;
                    }
                }
                true if b == dialect.quote => {
                    quoted = !quoted;
                    field.push(b);
                }
                _ if b == dialect.delimiter && !quoted => fields.push(Vec::new()),
                _ => field.push(b),
            }
            i += 1;
        }
        fields
    }

    #[test]
    fn split_agrees_with_the_byte_at_a_time_reading() {
        let text = Dialect::new(&CopyOptions::default());
        let csv = Dialect::new(&CopyOptions {
            format: CopyFormat::Csv,
            ..CopyOptions::default()
        });
        let csv_escape = Dialect::new(&CopyOptions {
            format: CopyFormat::Csv,
            escape: Some('\\'),
            ..CopyOptions::default()
        });
        // Every row of up to 6 bytes over an alphabet of the bytes that matter.
        let alphabet = b"a\t,\"\\";
        let mut rows: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..6 {
            let longer: Vec<Vec<u8>> = rows
                .iter()
                .filter(|r| r.len() == rows.last().map_or(0, Vec::len))
                .flat_map(|r| {
                    alphabet.iter().map(move |&b| {
                        let mut r = r.clone();
                        r.push(b);
                        r
                    })
                })
                .collect();
            rows.extend(longer);
        }
        for row in &rows {
            for dialect in [&text, &csv, &csv_escape] {
                let ours: Vec<Vec<u8>> = fields(dialect, row).iter().map(|f| f.to_vec()).collect();
                assert_eq!(ours, reference(dialect, row), "{row:?} csv={}", dialect.csv);
            }
        }
    }

    #[test]
    fn values_resolve_escapes_and_quotes() {
        let text = Dialect::new(&CopyOptions::default());
        assert!(matches!(text.value(b"plain"), Cow::Borrowed(_)));
        assert_eq!(&*text.value(b"a\\tb"), b"a\tb");
        let csv = Dialect::new(&CopyOptions {
            format: CopyFormat::Csv,
            ..CopyOptions::default()
        });
        assert!(matches!(csv.value(b"plain"), Cow::Borrowed(_)));
        assert_eq!(&*csv.value(b"\"say \"\"hi\"\"\""), b"say \"hi\"");
    }

    #[test]
    fn fields_are_written_escaped_per_format() {
        let text = Dialect::new(&CopyOptions::default());
        let mut out = Vec::new();
        text.write_field(b"a\tb\\c\nd", false, &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd");
        let csv = Dialect::new(&CopyOptions {
            format: CopyFormat::Csv,
            ..CopyOptions::default()
        });
        for (value, written) in [
            (&b"plain"[..], &b"plain"[..]),
            (b"a,b", b"\"a,b\""),
            (b"say \"hi\"", b"\"say \"\"hi\"\"\""),
            (b"", b"\"\""),
        ] {
            let mut out = Vec::new();
            csv.write_field(value, false, &mut out);
            assert_eq!(out, written);
        }
    }

    #[test]
    fn text_escapes_are_resolved() {
        assert_eq!(unescape_text(b"a\\tb\\\\c\\nd"), b"a\tb\\c\nd");
        assert_eq!(unescape_text(b"\\x41\\101\\q"), b"AAq");
        assert_eq!(unescape_text(b"end\\"), b"end\\");
    }
}
