//! Server → client: decrypt envelopes in result rows, and put pgcloak's message back into
//! the server's error for a refused statement's marker.
//!
//! Values are recognised by their envelope, so rows are decrypted whatever produced them
//! (views, subqueries, UNION, RETURNING, text or binary format). A value that fails to
//! decrypt fails the query: the client gets an error instead of the row, and the rest of
//! the server's answer up to ReadyForQuery is dropped, as when a query fails mid-result.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::access::{Denial, Unreadable, INSUFFICIENT_PRIVILEGE};
use super::catalog::ColumnMap;
use super::copy::{decrypt_row, CopyOutError, Dialect, PiiField};
use super::tracker::{Owner, Source};
use super::typed::{self, Session};
use super::{lock, Cloak, SessionState};
use crate::crypto::{is_envelope, CryptoError};
use crate::pgtype::{Kind, PgType};
use crate::protocol::error::{error_response, Severity};
use crate::protocol::filter::{Filter, FilterError};
use crate::protocol::frame::Header;
use crate::protocol::messages::{DataRow, ErrorFields};
use crate::protocol::tags::Backend;
use crate::sql::CopyOutFields;

#[path = "server_typed.rs"]
mod server_typed;
use server_typed::ResultTypes;

/// The envelope prefix, searched for in whole DataRows before decoding them.
const ENVELOPE_PREFIX: &[u8] = b"pgc1$";
const MARKER_PREFIX: &str = "pgcloak_refused_";
/// SQLSTATE data_corrupted: a stored value pgcloak will not return as it is.
const DATA_CORRUPTED: &str = "XX001";

pub struct ServerCloak {
    cloak: Arc<Cloak>,
    state: Arc<Mutex<SessionState>>,
    finder: memchr::memmem::Finder<'static>,
    /// After a value that must not be returned: drop everything until ReadyForQuery.
    discarding: bool,
    /// COPY TO STDOUT of a PII table in progress: its rows are decrypted.
    copy_out: Option<CopyOut>,
    /// Whether the frame whose header was just seen is held (decided before the tracker
    /// takes it, so that held frames reach it in `rewrite`, all others in `on_frame`).
    holding: bool,
    /// The settings typed values are printed with (followed when the policy has typed
    /// columns).
    session: Session,
    /// The types of the result now arriving, for the columns and formats they were
    /// worked out from.
    result: ResultTypes,
    /// Scratch: a typed value's canonical form, between decryption and printing.
    canonical: Vec<u8>,
    /// The columns the session's user may not read (None: it reads them all).
    unreadable: Option<Unreadable>,
    /// The user `unreadable` was worked out for.
    reader: Option<String>,
}

impl ServerCloak {
    pub(super) fn new(cloak: Arc<Cloak>, state: Arc<Mutex<SessionState>>) -> ServerCloak {
        ServerCloak {
            state,
            finder: memchr::memmem::Finder::new(ENVELOPE_PREFIX),
            discarding: false,
            copy_out: None,
            holding: false,
            session: Session::default(),
            result: ResultTypes::default(),
            canonical: Vec::new(),
            unreadable: Unreadable::for_role(cloak.policy(), None),
            reader: None,
            cloak,
        }
    }

    /// Feeds one server message to the tracker and the cloak's own state.
    fn receive(&mut self, message: Backend, body: Option<&[u8]>) -> Owner {
        let shared = Arc::clone(&self.state);
        let mut state = lock(&shared);
        self.receive_locked(&mut state, message, body)
    }

    fn receive_locked(
        &mut self,
        state: &mut SessionState,
        message: Backend,
        body: Option<&[u8]>,
    ) -> Owner {
        // The request this COPY answers (a Query, or an Execute of a prepared statement).
        let copying = match message {
            Backend::CopyOutResponse => state.tracker.answering_plan().cloned(),
            _ => None,
        };
        let owner = state.tracker.received(message, body);
        if state.tracker.take_ddl_committed() {
            self.cloak.catalog_changed();
        }
        if message == Backend::ParameterStatus && self.cloak.policy().has_typed() {
            let params = &state.tracker.params;
            self.session = Session {
                settings: params.settings.clone(),
                unsupported: params.unsupported.clone(),
                settled: true,
            };
        }
        if message == Backend::ParameterStatus && state.tracker.params.session_user != self.reader {
            self.reader = state.tracker.params.session_user.clone();
            self.unreadable = Unreadable::for_role(self.cloak.policy(), self.reader.as_deref());
        }
        if owner == Owner::Client {
            match message {
                Backend::CopyOutResponse => {
                    self.copy_out = copying.and_then(|plan| {
                        let options = plan.copy_out.as_ref()?;
                        let policy = self.cloak.policy();
                        let pii =
                            pii_fields(plan.copy_out_fields.as_ref(), state.tracker.columns());
                        Some(CopyOut {
                            dialect: Dialect::new(options),
                            pii: (pii.into_iter())
                                .map(|(position, column)| PiiField {
                                    migrating: policy.is_migrating(&column),
                                    ty: policy.column_type(&column),
                                    position,
                                    column,
                                })
                                .collect(),
                            header: options.header,
                            fields: Vec::new(),
                        })
                    });
                }
                Backend::CopyDone => self.copy_out = None,
                Backend::ReadyForQuery => {
                    self.copy_out = None;
                    // Every reply is in: a marker not reported by now never will be.
                    if state.tracker.idle() {
                        state.refusals.clear();
                    }
                }
                _ => {}
            }
        }
        owner
    }

    fn copy_data(&mut self, frame: Bytes) -> Bytes {
        let Some(copy) = &mut self.copy_out else {
            return frame;
        };
        if std::mem::take(&mut copy.header)
            || (copy.pii.is_empty() && self.finder.find(&frame).is_none())
        {
            return frame;
        }
        let row = &frame[Header::SIZE..];
        // The frame is written in place: its header, then the row, then its length.
        let mut out = Vec::with_capacity(frame.len() + frame.len() / 2);
        out.extend_from_slice(&[b'd', 0, 0, 0, 0]);
        let keyring = &self.cloak.keyring;
        match decrypt_row(
            row,
            &copy.dialect,
            keyring,
            self.cloak.policy(),
            &copy.pii,
            &mut copy.fields,
            &self.session,
            self.unreadable.as_ref(),
            &mut out,
        ) {
            Ok(()) => framed(out),
            Err(CopyOutError::Crypto(error, column)) => {
                self.fail(&undecryptable(&error, column.as_deref()))
            }
            Err(CopyOutError::NotEncrypted(column)) => self.fail(&not_encrypted(&column)),
            Err(CopyOutError::Denied(message)) => self.fail_with(INSUFFICIENT_PRIVILEGE, &message),
            Err(CopyOutError::Value(refusal)) => self.fail_with(refusal.code, &refusal.message),
        }
    }

    /// The error a client gets instead of a row pgcloak must not return; the rest of the
    /// answer up to ReadyForQuery is dropped, as when a query fails mid-result.
    fn fail(&mut self, message: &str) -> Bytes {
        self.fail_with(DATA_CORRUPTED, message)
    }

    fn fail_with(&mut self, code: &str, message: &str) -> Bytes {
        self.discarding = true;
        self.copy_out = None;
        error_response(Severity::Error, code, message).freeze()
    }

    /// True when a DataRow with this body goes to the client as it is: no field of the
    /// result comes from a PII column and no value in it looks like an envelope.
    fn row_passes(&self, state: &SessionState, body: &[u8]) -> bool {
        let pii = (state.tracker.result_columns())
            .is_some_and(|c| c.iter().any(|s| matches!(s, Source::Pii(_))));
        !pii && self.finder.find(body).is_none()
    }

    fn data_row(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        let typed = self.cloak.policy().has_typed();
        let columns = {
            let shared = Arc::clone(&self.state);
            let state = lock(&shared);
            if self.row_passes(&state, &frame[Header::SIZE..]) {
                return Ok(frame);
            }
            if typed {
                let formats = state.tracker.result_formats();
                self.result_types(state.tracker.result_columns(), formats);
            }
            state.tracker.result_columns().cloned()
        };
        let row =
            DataRow::decode(&frame.slice(Header::SIZE..)).map_err(FilterError::MalformedServer)?;
        // The new row is written as it is decided: its header, the field count, each field
        // (a length, then the bytes as they were or decrypted in place), then its length.
        let mut out = Vec::with_capacity(frame.len());
        out.extend_from_slice(&frame[..Header::SIZE + 2]);
        let mut changed = false;
        for (i, field) in row.fields.iter().enumerate() {
            let Some(value) = field.as_ref() else {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            };
            let source = columns
                .as_ref()
                .and_then(|c| c.get(i))
                .unwrap_or(&Source::Unknown);
            let column = match source {
                Source::Pii(column) => Some(column.as_str()),
                _ => None,
            };
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            let printed = match typed {
                true => self.typed_field(i, value, source, &mut out),
                false => self.field(value, source, &mut out),
            };
            match printed {
                Ok(decrypted) => changed |= decrypted,
                Err(Failure::NotEncrypted) => {
                    return Ok(self.fail(&not_encrypted(column.unwrap_or("a PII column"))))
                }
                Err(Failure::Crypto(error)) => return Ok(self.fail(&undecryptable(&error, column))),
                Err(Failure::Value(refusal)) => {
                    return Ok(self.fail_with(refusal.code, &refusal.message))
                }
                Err(Failure::Denied(message)) => {
                    return Ok(self.fail_with(INSUFFICIENT_PRIVILEGE, &message))
                }
            }
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Ok(if changed { framed(out) } else { frame })
    }

    /// What a value becomes for a user who may not read its column: an envelope by the
    /// column whose key it is under, plaintext by the PII column the result names. None: it
    /// is returned (decrypted) as usual.
    pub(super) fn denial(&self, value: &[u8], source: &Source) -> Option<Denial<'_>> {
        let unreadable = self.unreadable.as_ref()?;
        let column = match source {
            _ if is_envelope(value) => self.cloak.keyring.column_of(value)?,
            Source::Pii(column) => column.as_str(),
            _ => return None,
        };
        unreadable.denial(column)
    }

    /// Appends one field's value as the client gets it; true when it was decrypted.
    fn field(&self, value: &[u8], source: &Source, out: &mut Vec<u8>) -> Result<bool, Failure> {
        match self.denial(value, source) {
            None => {}
            Some(Denial::Mask(mask)) => {
                out.extend_from_slice(mask.as_bytes());
                return Ok(true);
            }
            Some(Denial::Refused(message)) => return Err(Failure::Denied(message)),
        }
        let column = match source {
            Source::Pii(column) => Some(column.as_str()),
            _ => None,
        };
        if !is_envelope(value) {
            // Plaintext of a `migrating` column is returned as it is (encrypt turns it
            // into envelopes); anywhere else it is an error, never passed on silently.
            if column.is_some_and(|c| !self.cloak.policy().is_migrating(c)) {
                return Err(Failure::NotEncrypted);
            }
            out.extend_from_slice(value);
            return Ok(false);
        }
        match self.cloak.keyring.decrypt_into(value, column, out) {
            Ok(()) => Ok(true),
            // A plain column's text that merely looks like an envelope is its value.
            Err(_) if *source == Source::Plain => {
                out.extend_from_slice(value);
                Ok(false)
            }
            Err(error) => Err(Failure::Crypto(error)),
        }
    }

    /// ErrorResponse or NoticeResponse: pgcloak's message for a refused statement's marker;
    /// otherwise the server's, with the envelopes it quotes (e.g. a unique violation's
    /// `Key (email)=(...)`) decrypted as in a row.
    fn message(&mut self, frame: Bytes) -> Bytes {
        let Ok(mut fields) = ErrorFields::decode(&frame[Header::SIZE..]) else {
            return frame;
        };
        if let Some(refusal) = fields
            .get(b'M')
            .and_then(marker_in)
            .and_then(|marker| lock(&self.state).refusals.remove(marker))
        {
            let severity = match fields.get(b'V').or(fields.get(b'S')) {
                Some("FATAL") | Some("PANIC") => Severity::Fatal,
                _ => Severity::Error,
            };
            return error_response(severity, refusal.code, &refusal.message).freeze();
        }
        if self.finder.find(&frame[Header::SIZE..]).is_none() {
            return frame;
        }
        for (_, value) in &mut fields.fields {
            *value = self.decrypt_text(value);
        }
        let mut out = BytesMut::with_capacity(frame.len());
        fields.encode(frame[0], &mut out);
        out.freeze()
    }

    /// Text with each envelope in it replaced by its plaintext, or by a placeholder where it
    /// cannot be decrypted: ciphertext never reaches the client.
    fn decrypt_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("pgc1$") {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '$' | '-' | '_')))
                .unwrap_or(tail.len());
            let envelope = &tail.as_bytes()[..end];
            match self.denial(envelope, &Source::Unknown) {
                None => {}
                Some(Denial::Mask(mask)) => {
                    out.push_str(mask);
                    rest = &tail[end..];
                    continue;
                }
                Some(Denial::Refused(_)) => {
                    out.push_str("(a value encrypted by pgcloak that this role may not read)");
                    rest = &tail[end..];
                    continue;
                }
            }
            let ty = (self.cloak.keyring.column_of(envelope))
                .map_or(PgType::new(Kind::Text), |c| {
                    self.cloak.policy().column_type(c)
                });
            let printed = (self.cloak.keyring.decrypt(envelope, None).ok()).and_then(|p| {
                Some(
                    typed::render(&ty, &p, false, &self.session, &"")
                        .ok()?
                        .to_vec(),
                )
            });
            match printed {
                Some(plaintext) => out.push_str(&String::from_utf8_lossy(&plaintext)),
                None => out.push_str("(a value encrypted by pgcloak that it cannot decrypt)"),
            }
            rest = &tail[end..];
        }
        out.push_str(rest);
        out
    }

    /// ReadyForQuery after a failed decryption: the client saw an error, so a transaction
    /// in progress is reported failed and must be rolled back, as after any error.
    fn ready_after_discard(&mut self, frame: Bytes) -> Bytes {
        self.discarding = false;
        if frame.len() == Header::SIZE + 1 && frame[Header::SIZE] == b'T' {
            let mut out = BytesMut::from(&frame[..]);
            out[Header::SIZE] = b'E';
            return out.freeze();
        }
        frame
    }
}

/// Why a field is not returned.
enum Failure {
    NotEncrypted,
    Crypto(CryptoError),
    Value(crate::sql::Refusal),
    /// The session's user may not read the value's column (the message says so).
    Denied(String),
}

/// A COPY TO STDOUT whose rows pgcloak decrypts.
struct CopyOut {
    dialect: Dialect,
    /// The fields of each row that hold PII columns.
    pii: Vec<PiiField>,
    /// The next row is the header line.
    header: bool,
    /// Scratch: the fields of the current row.
    fields: Vec<std::ops::Range<usize>>,
}

/// Where the PII columns are in the rows of a `COPY table TO`.
fn pii_fields(
    fields: Option<&CopyOutFields>,
    catalog: Option<&Arc<ColumnMap>>,
) -> Vec<(usize, String)> {
    match fields {
        None => Vec::new(),
        Some(CopyOutFields::Listed(columns)) => (columns.iter().enumerate())
            .filter_map(|(i, c)| Some((i, c.as_ref()?.to_string())))
            .collect(),
        Some(CopyOutFields::AllOf(schema, table)) => {
            catalog.map_or_else(Vec::new, |map| map.copy_fields(schema, table).to_vec())
        }
    }
}

/// A message written in place (its tag, a 4-byte placeholder, its body) with its length
/// filled in.
fn framed(mut out: Vec<u8>) -> Bytes {
    let len = (out.len() - 1) as u32;
    out[1..Header::SIZE].copy_from_slice(&len.to_be_bytes());
    Bytes::from(out)
}

fn not_encrypted(column: &str) -> String {
    format!(
        "{column} holds a value that is not encrypted (written before the column joined the pgcloak policy, or directly to Postgres), and pgcloak does not return it as it is; mark the column `migrating: true` while `pgcloak encrypt` encrypts the existing values (`pgcloak check --upstream-dsn` counts them), or remove the column from the policy"
    )
}

fn undecryptable(error: &CryptoError, column: Option<&str>) -> String {
    let place = match column {
        Some(column) => format!("a value of {column}"),
        None => "a value in this result".to_owned(),
    };
    match error {
        CryptoError::UnknownKey => format!(
            "pgcloak cannot decrypt {place}: it was written under a key pgcloak does not hold (another master key or key version); the row is not returned. Configure the key it was written under"
        ),
        error => format!(
            "pgcloak could not decrypt {place}: {error}. The stored ciphertext was altered, copied from another column, or written with another key; the row is not returned"
        ),
    }
}

/// The marker named in a server error message, if any.
fn marker_in(message: &str) -> Option<&str> {
    let start = message.find(MARKER_PREFIX)?;
    let rest = &message[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

impl Filter for ServerCloak {
    /// Decides whether the frame is held for `rewrite`. A frame the tracker must read but
    /// that goes out unchanged (RowDescription, CommandComplete, ...; a DataRow without PII
    /// or envelopes) is taken here when it is whole in `bytes`, which is the usual case:
    /// holding it would cost a copy of the buffer's bookkeeping and a write slice of its own.
    fn on_frame(&mut self, header: Header, bytes: &[u8]) {
        let message = Backend::from_tag(header.tag);
        let shared = Arc::clone(&self.state);
        let mut state = lock(&shared);
        let catalog = !message.is_async() && state.tracker.answering_catalog();
        let body = bytes.get(Header::SIZE..header.frame_size());
        self.holding = self.discarding
            || catalog
            || match message {
                // Its transaction status says whether this session's DDL was committed.
                Backend::ReadyForQuery if state.tracker.awaits_commit() => body.is_none(),
                // Typed PII columns and parameters are described with their declared type.
                Backend::RowDescription | Backend::ParameterDescription
                    if self.cloak.policy().has_typed() =>
                {
                    true
                }
                Backend::RowDescription | Backend::ParameterStatus | Backend::CommandComplete => {
                    body.is_none()
                }
                Backend::DataRow => !body.is_some_and(|body| self.row_passes(&state, body)),
                Backend::ErrorResponse | Backend::NoticeResponse => true,
                Backend::CopyData => self.copy_out.is_some(),
                _ => false,
            };
        if !self.holding {
            self.receive_locked(&mut state, message, body);
        }
    }

    fn holds(&self, _tag: u8) -> bool {
        self.holding
    }

    fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        let message = Backend::from_tag(frame[0]);
        if self.receive(message, Some(&frame[Header::SIZE..])) == Owner::Catalog {
            return Ok(Bytes::new());
        }
        if self.discarding {
            return Ok(match message {
                Backend::ReadyForQuery => self.ready_after_discard(frame),
                // Notices and notifications are not part of the failed answer.
                Backend::NoticeResponse => self.message(frame),
                Backend::NotificationResponse | Backend::ParameterStatus => frame,
                _ => Bytes::new(),
            });
        }
        Ok(match message {
            Backend::DataRow => return self.data_row(frame),
            Backend::RowDescription | Backend::ParameterDescription
                if self.cloak.policy().has_typed() =>
            {
                self.describe_types(frame, message == Backend::ParameterDescription)
            }
            Backend::ErrorResponse | Backend::NoticeResponse => self.message(frame),
            Backend::CopyData => self.copy_data(frame),
            _ => frame,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_found_in_server_messages() {
        assert_eq!(
            marker_in("syntax error at or near \"pgcloak_refused_12\""),
            Some("pgcloak_refused_12")
        );
        assert_eq!(
            marker_in("prepared statement \"pgcloak_refused_3\" does not exist"),
            Some("pgcloak_refused_3")
        );
        assert_eq!(marker_in("syntax error at or near \"SELEC\""), None);
    }
}
