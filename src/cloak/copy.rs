//! COPY ... FROM STDIN data into a PII table: rows arrive in CopyData frames of any size
//! (a row may span frames, a frame may hold many rows). Complete rows are parsed in the
//! COPY text or CSV format, their PII fields encrypted, and the row re-assembled; the
//! ciphertext needs no escaping or quoting in either format.

use bytes::{BufMut, BytesMut};

use crate::crypto::{is_envelope, CryptoError, Keyring};
use crate::sql::{CopyFormat, CopyInPlan};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("COPY row {row} has {found} fields, but the column list names {expected}")]
    FieldCount {
        row: u64,
        expected: usize,
        found: usize,
    },
    #[error("COPY data for {column} on row {row}: {source}")]
    Crypto {
        column: String,
        row: u64,
        source: CryptoError,
    },
    #[error("COPY data for {column} on row {row} is not valid UTF-8")]
    NotUtf8 { column: String, row: u64 },
    #[error(
        "COPY with delimiter {0:?} cannot carry pgcloak ciphertext; use the default delimiter"
    )]
    Delimiter(char),
}

/// One COPY FROM STDIN in progress.
pub struct CopyIn {
    plan: CopyInPlan,
    delimiter: u8,
    quote: u8,
    escape: u8,
    null: Vec<u8>,
    /// Bytes of a row not yet complete.
    pending: Vec<u8>,
    /// Rows seen so far (for error messages and the header line).
    rows: u64,
    finished: bool,
}

impl CopyIn {
    pub fn new(plan: CopyInPlan) -> CopyIn {
        let csv = plan.format == CopyFormat::Csv;
        let delimiter = plan.delimiter.unwrap_or(if csv { ',' } else { '\t' });
        let quote = plan.quote.unwrap_or('"');
        let null = plan
            .null
            .clone()
            .unwrap_or_else(|| if csv { String::new() } else { "\\N".into() });
        CopyIn {
            delimiter: delimiter as u8,
            quote: quote as u8,
            escape: plan.escape.unwrap_or(quote) as u8,
            null: null.into_bytes(),
            plan,
            pending: Vec::new(),
            rows: 0,
            finished: false,
        }
    }

    /// Takes the payload of one CopyData frame; returns the complete rows it finished,
    /// encrypted. Incomplete trailing bytes wait for the next frame.
    pub fn feed(&mut self, data: &[u8], keyring: &Keyring) -> Result<Vec<u8>, CopyError> {
        let delimiter = self.delimiter as char;
        if delimiter.is_ascii_alphanumeric() || "$-_=".contains(delimiter) {
            return Err(CopyError::Delimiter(delimiter));
        }
        self.pending.extend_from_slice(data);
        let mut out = Vec::with_capacity(self.pending.len() + 64);
        let mut start = 0;
        while let Some(end) = self.row_end(start) {
            let row = self.pending[start..end].to_vec();
            self.row(&row, keyring, &mut out)?;
            out.push(b'\n');
            start = end + 1;
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// At CopyDone: a last row without a newline.
    pub fn finish(mut self, keyring: &Keyring) -> Result<Vec<u8>, CopyError> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let row = std::mem::take(&mut self.pending);
            self.row(&row, keyring, &mut out)?;
        }
        Ok(out)
    }

    /// The index of the newline ending the row that starts at `start`.
    fn row_end(&self, start: usize) -> Option<usize> {
        let bytes = &self.pending[start..];
        if self.plan.format == CopyFormat::Text {
            return memchr::memchr(b'\n', bytes).map(|i| start + i);
        }
        // CSV: a newline inside quotes belongs to the field.
        let mut quoted = false;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if quoted && b == self.escape && self.escape != self.quote && bytes.get(i + 1).is_some()
            {
                i += 2;
                continue;
            }
            if b == self.quote {
                quoted = !quoted;
            } else if b == b'\n' && !quoted {
                return Some(start + i);
            }
            i += 1;
        }
        None
    }

    fn row(&mut self, row: &[u8], keyring: &Keyring, out: &mut Vec<u8>) -> Result<(), CopyError> {
        let row = row.strip_suffix(b"\r").unwrap_or(row);
        self.rows += 1;
        let header = self.plan.header && self.rows == 1;
        if header || self.finished || row == b"\\." {
            self.finished |= row == b"\\.";
            out.extend_from_slice(row);
            return Ok(());
        }
        let fields = self.split(row);
        if fields.len() != self.plan.fields.len() {
            return Err(CopyError::FieldCount {
                row: self.rows,
                expected: self.plan.fields.len(),
                found: fields.len(),
            });
        }
        for (i, (field, column)) in fields.iter().zip(&self.plan.fields).enumerate() {
            if i > 0 {
                out.push(self.delimiter);
            }
            match column {
                Some(column) if field.as_slice() != self.null.as_slice() => {
                    let value = match self.plan.format {
                        CopyFormat::Text => unescape_text(field),
                        CopyFormat::Csv => self.unquote_csv(field),
                    };
                    let column = column.to_string();
                    let ciphertext = self.encrypt(&column, &value, keyring)?;
                    out.extend_from_slice(&ciphertext);
                }
                _ => out.extend_from_slice(field),
            }
        }
        Ok(())
    }

    fn encrypt(&self, column: &str, value: &[u8], keyring: &Keyring) -> Result<Vec<u8>, CopyError> {
        let crypto = |source| CopyError::Crypto {
            column: column.to_owned(),
            row: self.rows,
            source,
        };
        if is_envelope(value) {
            // A restored dump: already ciphertext of this column; never encrypted twice.
            keyring.decrypt(value, Some(column)).map_err(crypto)?;
            return Ok(value.to_vec());
        }
        if std::str::from_utf8(value).is_err() {
            return Err(CopyError::NotUtf8 {
                column: column.to_owned(),
                row: self.rows,
            });
        }
        keyring
            .encrypt(column, value)
            .map(String::into_bytes)
            .map_err(crypto)
    }

    /// Splits a row into raw fields (still escaped or quoted).
    fn split(&self, row: &[u8]) -> Vec<Vec<u8>> {
        let mut fields = vec![Vec::new()];
        let mut quoted = false;
        let mut i = 0;
        while i < row.len() {
            let b = row[i];
            let field = fields.last_mut().expect("fields is never empty");
            match self.plan.format {
                CopyFormat::Text if b == b'\\' => {
                    field.push(b);
                    if let Some(&next) = row.get(i + 1) {
                        field.push(next);
                        i += 1;
                    }
                }
                CopyFormat::Csv if quoted && b == self.escape && self.escape != self.quote => {
                    field.push(b);
                    if let Some(&next) = row.get(i + 1) {
                        field.push(next);
                        i += 1;
                    }
                }
                CopyFormat::Csv if b == self.quote => {
                    quoted = !quoted;
                    field.push(b);
                }
                _ if b == self.delimiter && !quoted => fields.push(Vec::new()),
                _ => field.push(b),
            }
            i += 1;
        }
        fields
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
}

/// A text-format field's value: backslash escapes resolved.
fn unescape_text(field: &[u8]) -> Vec<u8> {
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

/// Appends a CopyData frame carrying `data`.
pub fn copy_data_frame(out: &mut BytesMut, data: &[u8]) {
    out.put_u8(b'd');
    out.put_u32(data.len() as u32 + 4);
    out.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_are_resolved() {
        assert_eq!(unescape_text(b"a\\tb\\\\c\\nd"), b"a\tb\\c\nd");
        assert_eq!(unescape_text(b"\\x41\\101\\q"), b"AAq");
        assert_eq!(unescape_text(b"end\\"), b"end\\");
    }
}
