//! COPY ... FROM STDIN data into a PII table: rows arrive in CopyData frames of any size
//! (a row may span frames, a frame may hold many rows). Complete rows are parsed in the
//! COPY text or CSV format, their PII fields encrypted, and the row re-assembled; the
//! ciphertext needs no escaping or quoting in either format.

mod copy_in;
mod dialect;

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use super::access::{Denial, Unreadable};
use super::typed::{self, Session};
use crate::crypto::{is_envelope, CryptoError, Keyring};
use crate::pgtype::{Kind, PgType};

pub use copy_in::CopyIn;
pub use dialect::Dialect;

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
    /// A typed PII field Postgres would refuse (`message` names the column, never the value).
    #[error("COPY row {row}: {message}")]
    Value {
        row: u64,
        code: &'static str,
        message: String,
    },
    #[error(
        "COPY with delimiter {0:?} cannot carry pgcloak ciphertext; use the default delimiter"
    )]
    Delimiter(char),
    #[error("COPY CSV with quote {0:?} cannot carry pgcloak ciphertext; use the default quote")]
    Quote(char),
}

impl CopyError {
    /// The SQLSTATE the client gets: Postgres's for an invalid typed value, else 22P04
    /// (bad_copy_file_format).
    pub fn code(&self) -> &'static str {
        match self {
            CopyError::Value { code, .. } => code,
            _ => "22P04",
        }
    }
}

/// Why a row of COPY TO output is not returned.
#[derive(Debug)]
pub enum CopyOutError {
    /// An envelope that does not decrypt (in `column`, when the field is a PII column's).
    Crypto(CryptoError, Option<String>),
    /// A PII column's field holds a value that is not an envelope.
    NotEncrypted(String),
    /// A typed value that cannot be printed (a setting pgcloak does not follow).
    Value(crate::sql::Refusal),
    /// A value of a column the session's user may not read (the message says so).
    Denied(String),
}

/// A field of COPY TO rows that holds a PII column.
#[derive(Debug, Clone)]
pub struct PiiField {
    pub position: usize,
    pub column: String,
    /// The column may still hold plaintext (`migrating: true`): returned as it is.
    pub migrating: bool,
    /// The type its values are printed as.
    pub ty: PgType,
}

/// Decrypts the envelopes in one row of COPY TO output (Postgres sends one row per
/// CopyData), appending the row to `out`. Envelopes need no escaping or quoting, so each
/// stands whole as a field. `pii` lists the fields that hold PII columns, in position order:
/// each must be NULL or an envelope of that column, or plaintext where the column is
/// `migrating`. `fields` is scratch space, reused across rows. Values of typed columns are
/// printed as their type under `session`'s settings (an envelope in a field of no known
/// column, as in `COPY (query) TO`, as the type of the column its key names).
#[allow(clippy::too_many_arguments)]
pub fn decrypt_row(
    row: &[u8],
    dialect: &Dialect,
    keyring: &Keyring,
    policy: &crate::policy::Policy,
    pii: &[PiiField],
    fields: &mut Vec<Range<usize>>,
    session: &Session,
    unreadable: Option<&Unreadable>,
    out: &mut Vec<u8>,
) -> Result<(), CopyOutError> {
    let body = row.strip_suffix(b"\n").unwrap_or(row);
    out.reserve(row.len());
    let mut pii = pii.iter().peekable();
    dialect.split(body, fields);
    for (i, range) in fields.iter().enumerate() {
        let field = &body[range.clone()];
        if i > 0 {
            out.push(dialect.delimiter);
        }
        let column = match pii.peek() {
            Some(f) if f.position == i => pii.next(),
            _ => None,
        };
        // FORCE_QUOTE quotes an envelope; nothing else does.
        let quoted = dialect.csv && field.first() == Some(&dialect.quote);
        let value = dialect.value(field);
        // By the column whose key an envelope is under; plaintext by its PII field.
        let denial = unreadable.and_then(|unreadable| match is_envelope(&value) {
            true => unreadable.denial(keyring.column_of(&value)?),
            false if quoted || *field != *dialect.null => unreadable.denial(&column?.column),
            false => None,
        });
        match denial {
            None => {}
            Some(Denial::Mask(mask)) => {
                dialect.write_field(mask.as_bytes(), quoted, out);
                continue;
            }
            Some(Denial::Refused(message)) => return Err(CopyOutError::Denied(message)),
        }
        if is_envelope(&value) {
            match keyring.decrypt(&value, column.map(|c| c.column.as_str())) {
                Ok(plaintext) => {
                    let ty = match column {
                        Some(c) => c.ty,
                        None => (keyring.column_of(&value))
                            .map_or(PgType::new(Kind::Text), |c| policy.column_type(c)),
                    };
                    let name = column.map_or("a typed PII column", |c| c.column.as_str());
                    let printed = typed::render(&ty, &plaintext, false, session, &name)
                        .map_err(CopyOutError::Value)?;
                    dialect.write_field(&printed, quoted, out)
                }
                Err(error) => {
                    return Err(CopyOutError::Crypto(
                        error,
                        column.map(|c| c.column.clone()),
                    ))
                }
            }
        } else if let Some(column) =
            column.filter(|c| (quoted || *field != *dialect.null) && !c.migrating)
        {
            return Err(CopyOutError::NotEncrypted(column.column.clone()));
        } else {
            out.extend_from_slice(field);
        }
    }
    if body.len() < row.len() {
        out.push(b'\n');
    }
    Ok(())
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
    use crate::sql::{CopyFormat, CopyInPlan, CopyOptions};

    #[test]
    fn copy_out_rows_check_their_pii_fields() {
        use crate::crypto::{MasterKey, Mode};
        let email = "public.users.email".to_owned();
        let keyring = Keyring::new(
            &MasterKey::generate(),
            &[(email.clone(), Mode::Deterministic)],
        );
        let envelope = keyring.encrypt(&email, b"a\tb").unwrap();
        let pii = [PiiField {
            position: 1,
            column: email.clone(),
            migrating: false,
            ty: PgType::new(Kind::Text),
        }];
        let session = Session::default();
        let policy = crate::policy::Policy::default();
        let decrypt_row = |row: &[u8], dialect: &Dialect| {
            let mut out = Vec::new();
            decrypt_row(
                row,
                dialect,
                &keyring,
                &policy,
                &pii,
                &mut Vec::new(),
                &session,
                None,
                &mut out,
            )
            .map(|()| out)
        };
        let text = Dialect::new(&CopyOptions::default());
        let row = format!("7\t{envelope}\t{envelope}\n");
        let out = decrypt_row(row.as_bytes(), &text).unwrap();
        assert_eq!(out, b"7\ta\\tb\ta\\tb\n");
        assert!(decrypt_row(b"7\t\\N\tx\n", &text).is_ok());
        for row in [&b"7\tplain\n"[..], b"7\t\n", b"7\tpgc1\n"] {
            let err = decrypt_row(row, &text).unwrap_err();
            assert!(
                matches!(err, CopyOutError::NotEncrypted(ref c) if *c == email),
                "{row:?}"
            );
        }
        // An escaped delimiter does not shift the fields.
        let row = format!("a\\\tb\t{envelope}\n");
        assert!(decrypt_row(row.as_bytes(), &text).is_ok());
        let csv = Dialect::new(&CopyOptions {
            format: CopyFormat::Csv,
            ..CopyOptions::default()
        });
        let row = format!("\"x,y\",\"{envelope}\"\n");
        let out = decrypt_row(row.as_bytes(), &csv).unwrap();
        assert_eq!(out, b"\"x,y\",\"a\tb\"\n");
        assert!(decrypt_row(b"1,\n", &csv).is_ok());
        assert!(decrypt_row(b"1,\"\"\n", &csv).is_err());
    }

    #[test]
    fn csv_quote_from_the_envelope_alphabet_is_refused() {
        // Found by fuzz/copy_in: with QUOTE 'b' an envelope holding a `b` was written
        // unquoted and Postgres would read a quoted field inside it.
        let plan = CopyInPlan {
            options: CopyOptions {
                format: CopyFormat::Csv,
                quote: Some('b'),
                ..CopyOptions::default()
            },
            fields: vec![None],
        };
        let keyring = Keyring::new(&crate::crypto::MasterKey::generate(), &[]);
        let error = CopyIn::new(plan).feed(b"x\n", &keyring).unwrap_err();
        assert!(matches!(error, CopyError::Quote('b')), "{error}");
    }

    #[test]
    fn line_ends_are_kept() {
        // Found by fuzz/copy_in: `\r\r\n` became `\r\n`, and every CRLF became LF.
        let plan = CopyInPlan {
            options: CopyOptions::default(),
            fields: vec![None, None],
        };
        let keyring = Keyring::new(&crate::crypto::MasterKey::generate(), &[]);
        let mut copy = CopyIn::new(plan);
        let data = b"a\tb\r\nc\td\r\r\ne\tf\r";
        let mut out = copy.feed(data, &keyring).unwrap();
        out.extend(copy.finish(&keyring).unwrap());
        assert_eq!(out, data);
    }
}
