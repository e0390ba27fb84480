//! COPY ... FROM STDIN data into a PII table: rows arrive in CopyData frames of any size
//! (a row may span frames, a frame may hold many rows). Complete rows are parsed in the
//! COPY text or CSV format, their PII fields encrypted, and the row re-assembled; the
//! ciphertext needs no escaping or quoting in either format.

use std::ops::Range;

use crate::cloak::typed::{self, Session};
use crate::crypto::{is_envelope, Keyring};
use crate::pgtype::{Kind, PgType};
use crate::policy::Policy;
use crate::sql::CopyInPlan;

use super::{CopyError, Dialect};

/// One COPY FROM STDIN in progress.
pub struct CopyIn {
    dialect: Dialect,
    /// Per field of a row, the PII column it fills (`schema.table.column`), if any, and
    /// the type the application sees.
    columns: Vec<Option<(String, PgType)>>,
    /// The settings typed fields are read with.
    session: Session,
    /// Bytes of a row not yet complete.
    pending: Vec<u8>,
    /// Rows seen so far (for error messages and the header line).
    rows: u64,
    finished: bool,
    /// Scratch: the fields of the current row.
    fields: Vec<Range<usize>>,
}

impl CopyIn {
    /// A COPY whose PII columns are all text.
    pub fn new(plan: CopyInPlan) -> CopyIn {
        CopyIn::typed(plan, &Policy::default(), Session::default())
    }

    /// A COPY whose PII fields are read as the policy's types, under `session`'s settings.
    pub fn typed(plan: CopyInPlan, policy: &Policy, session: Session) -> CopyIn {
        let column = |id: &crate::policy::ColumnId| {
            let name = id.to_string();
            let ty = policy.column_type(&name);
            (name, ty)
        };
        CopyIn {
            dialect: Dialect::new(&plan.options),
            columns: (plan.fields.iter())
                .map(|c| c.as_ref().map(column))
                .collect(),
            session,
            pending: Vec::new(),
            rows: 0,
            finished: false,
            fields: Vec::new(),
        }
    }

    /// Takes the payload of one CopyData frame; returns the complete rows it finished,
    /// encrypted. Incomplete trailing bytes wait for the next frame.
    pub fn feed(&mut self, data: &[u8], keyring: &Keyring) -> Result<Vec<u8>, CopyError> {
        self.dialect.check_delimiter()?;
        // Rows are read straight from `data` unless one began in an earlier frame.
        let mut carried = std::mem::take(&mut self.pending);
        let bytes: &[u8] = match carried.is_empty() {
            true => data,
            false => {
                carried.extend_from_slice(data);
                &carried
            }
        };
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 2 + 64);
        let mut start = 0;
        while let Some(end) = self.row_end(bytes, start) {
            self.row(&bytes[start..end], keyring, &mut out)?;
            out.push(b'\n');
            start = end + 1;
        }
        self.pending = bytes[start..].to_vec();
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
    fn row_end(&self, bytes: &[u8], start: usize) -> Option<usize> {
        let bytes = &bytes[start..];
        let (quote, escape) = (self.dialect.quote, self.dialect.escape);
        if !self.dialect.csv {
            return memchr::memchr(b'\n', bytes).map(|i| start + i);
        }
        // CSV: a newline inside quotes belongs to the field.
        let mut quoted = false;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if quoted && b == escape && escape != quote && bytes.get(i + 1).is_some() {
                i += 2;
                continue;
            }
            if b == quote {
                quoted = !quoted;
            } else if b == b'\n' && !quoted {
                return Some(start + i);
            }
            i += 1;
        }
        None
    }

    /// One line without its `\n`; a `\r` before it (CRLF line ends) is kept, so the line
    /// ends stay as the client wrote them and Postgres detects the same ones.
    fn row(&mut self, line: &[u8], keyring: &Keyring, out: &mut Vec<u8>) -> Result<(), CopyError> {
        match line.strip_suffix(b"\r") {
            Some(row) => {
                self.fields(row, keyring, out)?;
                out.push(b'\r');
                Ok(())
            }
            None => self.fields(line, keyring, out),
        }
    }

    fn fields(
        &mut self,
        row: &[u8],
        keyring: &Keyring,
        out: &mut Vec<u8>,
    ) -> Result<(), CopyError> {
        self.rows += 1;
        let header = self.dialect.header && self.rows == 1;
        if header || self.finished || row == b"\\." {
            self.finished |= row == b"\\.";
            out.extend_from_slice(row);
            return Ok(());
        }
        let mut fields = std::mem::take(&mut self.fields);
        self.dialect.split(row, &mut fields);
        let result = self.write_fields(row, &fields, keyring, out);
        self.fields = fields;
        result
    }

    fn write_fields(
        &self,
        row: &[u8],
        fields: &[Range<usize>],
        keyring: &Keyring,
        out: &mut Vec<u8>,
    ) -> Result<(), CopyError> {
        if fields.len() != self.columns.len() {
            return Err(CopyError::FieldCount {
                row: self.rows,
                expected: self.columns.len(),
                found: fields.len(),
            });
        }
        for (i, (range, column)) in fields.iter().zip(&self.columns).enumerate() {
            let field = &row[range.clone()];
            if i > 0 {
                out.push(self.dialect.delimiter);
            }
            match column {
                Some((column, ty)) if field != self.dialect.null.as_slice() => {
                    self.encrypt(column, ty, &self.dialect.value(field), keyring, out)?;
                }
                _ => out.extend_from_slice(field),
            }
        }
        Ok(())
    }

    /// Appends the envelope of `value` (a field of `column`) to `out`.
    fn encrypt(
        &self,
        column: &str,
        ty: &PgType,
        value: &[u8],
        keyring: &Keyring,
        out: &mut Vec<u8>,
    ) -> Result<(), CopyError> {
        let crypto = |source| CopyError::Crypto {
            column: column.to_owned(),
            row: self.rows,
            source,
        };
        if is_envelope(value) {
            // A restored dump: already ciphertext of this column; never encrypted twice.
            keyring.decrypt(value, Some(column)).map_err(crypto)?;
            out.extend_from_slice(value);
            return Ok(());
        }
        if ty.kind() != Kind::Text {
            let value =
                typed::canonical(ty, value, false, &self.session, &column).map_err(|refusal| {
                    CopyError::Value {
                        row: self.rows,
                        code: refusal.code,
                        message: refusal.message,
                    }
                })?;
            return keyring.encrypt_into(column, &value, out).map_err(crypto);
        }
        if std::str::from_utf8(value).is_err() {
            return Err(CopyError::NotUtf8 {
                column: column.to_owned(),
                row: self.rows,
            });
        }
        keyring.encrypt_into(column, value, out).map_err(crypto)
    }
}
