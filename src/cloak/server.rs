//! Server → client: decrypt envelopes in result rows, and put pgcloak's message back into
//! the server's error for a refused statement's marker.
//!
//! Values are recognised by their envelope, so rows are decrypted whatever produced them
//! (views, subqueries, UNION, RETURNING, text or binary format). A value that fails to
//! decrypt fails the query: the client gets an error instead of the row, and the rest of
//! the server's answer up to ReadyForQuery is dropped, as when a query fails mid-result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::catalog::{add_row, ColumnMap};
use super::copy::{copy_data_frame, decrypt_row, Dialect};
use super::{lock, Cloak, Expect, SessionState};
use crate::crypto::{is_envelope, CryptoError};
use crate::protocol::error::{error_response, Severity};
use crate::protocol::filter::{Filter, FilterError};
use crate::protocol::frame::Header;
use crate::protocol::messages::{DataRow, ErrorFields, RowDescription};

/// The envelope prefix, searched for in whole DataRows before decoding them.
const ENVELOPE_PREFIX: &[u8] = b"pgc1$";
const MARKER_PREFIX: &str = "pgcloak_refused_";

pub struct ServerCloak {
    cloak: Arc<Cloak>,
    state: Arc<Mutex<SessionState>>,
    finder: memchr::memmem::Finder<'static>,
    /// After a failed decryption: drop everything until ReadyForQuery.
    discarding: bool,
    /// COPY TO STDOUT of a PII table in progress: its rows are decrypted.
    copy_out: Option<Dialect>,
    /// The catalog query's answer is arriving: collected here, not forwarded.
    loading: Option<ColumnMap>,
    /// The PII column each field of the current result set comes from, as far as known.
    expected: Vec<Option<String>>,
    /// `expected` has been worked out for the current result set.
    resolved: bool,
    catalog_in_flight: Arc<AtomicBool>,
    catalog_failed: bool,
}

impl ServerCloak {
    pub(super) fn new(
        cloak: Arc<Cloak>,
        state: Arc<Mutex<SessionState>>,
        catalog_in_flight: Arc<AtomicBool>,
    ) -> ServerCloak {
        ServerCloak {
            cloak,
            state,
            finder: memchr::memmem::Finder::new(ENVELOPE_PREFIX),
            discarding: false,
            copy_out: None,
            loading: None,
            expected: Vec::new(),
            resolved: false,
            catalog_in_flight,
            catalog_failed: false,
        }
    }

    /// A frame of the catalog query's answer: rows fill the map, nothing is forwarded.
    fn catalog_frame(&mut self, frame: Bytes) -> Bytes {
        match frame[0] {
            b'D' => {
                if let (Ok(row), Some(map)) = (
                    DataRow::decode(&frame.slice(Header::SIZE..)),
                    self.loading.as_mut(),
                ) {
                    add_row(&row, map);
                }
            }
            // E.g. in a failed transaction: the map stays unknown and is read again later.
            b'E' => self.catalog_failed = true,
            b'Z' => {
                let map = self.loading.take();
                if let (Some(map), false) = (map, std::mem::take(&mut self.catalog_failed)) {
                    lock(&self.state).columns = Some(Arc::new(map));
                }
                self.catalog_in_flight.store(false, Ordering::Release);
                return Bytes::new();
            }
            _ => {}
        }
        Bytes::new()
    }

    /// RowDescription: which PII column each field of the rows it describes comes from.
    /// Answering a Describe of a statement, it is kept for that statement's later Executes.
    fn row_description(&mut self, frame: Bytes) -> Bytes {
        let mut state = lock(&self.state);
        let expected: Vec<Option<String>> = match (
            &state.columns,
            RowDescription::decode(&frame[Header::SIZE..]),
        ) {
            (Some(columns), Ok(description)) => description
                .sources
                .iter()
                .map(|source| columns.get(source).cloned())
                .collect(),
            _ => Vec::new(),
        };
        match state.expects.front().cloned() {
            Some(Expect::DescribeStatement(name)) => {
                state.expects.pop_front();
                state.statement_columns.insert(name, Arc::new(expected));
            }
            Some(Expect::DescribePortal) => {
                state.expects.pop_front();
                self.expected = expected;
                self.resolved = true;
            }
            _ => {
                self.expected = expected;
                self.resolved = true;
            }
        }
        frame
    }

    /// Rows of an Execute without a RowDescription in front: described by the statement
    /// the portal was bound from, if that statement was described.
    fn resolve_expected(&mut self) {
        self.resolved = true;
        let state = lock(&self.state);
        if let Some(Expect::Execute(portal)) = state.expects.front() {
            let columns = state
                .portals
                .get(portal)
                .and_then(|statement| state.statement_columns.get(statement));
            if let Some(columns) = columns {
                self.expected = columns.as_ref().clone();
            }
        }
    }

    fn end_result(&mut self) {
        self.expected.clear();
        self.resolved = false;
    }

    fn copy_data(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        let (Some(dialect), true) = (&self.copy_out, self.finder.find(&frame).is_some()) else {
            return Ok(frame);
        };
        match decrypt_row(&frame[Header::SIZE..], dialect, &self.cloak.keyring) {
            Ok(row) => {
                let mut out = BytesMut::with_capacity(row.len() + Header::SIZE);
                copy_data_frame(&mut out, &row);
                Ok(out.freeze())
            }
            Err(error) => Ok(self.fail(&error)),
        }
    }

    /// The error a client gets instead of a row that does not decrypt.
    fn fail(&mut self, error: &CryptoError) -> Bytes {
        self.discarding = true;
        self.copy_out = None;
        let message = format!(
            "pgcloak could not decrypt a value in this result: {error}. The stored ciphertext was altered, copied from another column, or written with another key; the row is not returned"
        );
        error_response(Severity::Error, "XX001", &message).freeze()
    }

    fn data_row(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        if self.finder.find(&frame[Header::SIZE..]).is_none() {
            return Ok(frame);
        }
        if !self.resolved {
            self.resolve_expected();
        }
        let mut row = DataRow::decode(&frame.slice(Header::SIZE..))
            .map_err(|e| FilterError(format!("malformed message from server: {e}")))?;
        for (i, field) in row.fields.iter_mut().enumerate() {
            let Some(field) = field else { continue };
            if !is_envelope(field) {
                continue;
            }
            let expected = self.expected.get(i).and_then(|c| c.as_deref());
            match self.cloak.keyring.decrypt(field, expected) {
                Ok(plaintext) => *field = Bytes::copy_from_slice(&plaintext),
                // Not one of our keys: an envelope-looking value of someone else's.
                Err(CryptoError::UnknownKey) => {}
                Err(error) => return Ok(self.fail(&error)),
            }
        }
        let mut out = BytesMut::with_capacity(frame.len());
        row.encode(&mut out);
        Ok(out.freeze())
    }

    fn error(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        let Ok(fields) = ErrorFields::decode(&frame[Header::SIZE..]) else {
            return Ok(frame);
        };
        let Some(message) = fields.get(b'M') else {
            return Ok(frame);
        };
        let Some(marker) = marker_in(message) else {
            return Ok(frame);
        };
        let Some(refusal) = lock(&self.state).refusals.remove(marker) else {
            return Ok(frame);
        };
        let severity = match fields.get(b'V').or(fields.get(b'S')) {
            Some("FATAL") | Some("PANIC") => Severity::Fatal,
            _ => Severity::Error,
        };
        Ok(error_response(severity, refusal.code, &refusal.message).freeze())
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

/// The marker named in a server error message, if any.
fn marker_in(message: &str) -> Option<&str> {
    let start = message.find(MARKER_PREFIX)?;
    let rest = &message[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

impl ServerCloak {
    /// ParameterStatus: notes the session's client_encoding (reported at startup and on
    /// every change), which decides whether pgcloak can handle its PII statements.
    fn parameter_status(&self, frame: &[u8]) {
        let mut fields = frame[Header::SIZE..].split(|&b| b == 0);
        if fields.next() != Some(b"client_encoding".as_slice()) {
            return;
        }
        let value = String::from_utf8_lossy(fields.next().unwrap_or_default());
        lock(&self.state).foreign_encoding =
            (!value.eq_ignore_ascii_case("UTF8")).then(|| value.into_owned());
    }
}

impl Filter for ServerCloak {
    fn on_frame(&mut self, header: Header, _bytes: &[u8]) {
        let tag = header.tag;
        // The first frame after the catalog query was sent starts its answer: the client's
        // own answers had all arrived before it was sent. Async messages are not part of it.
        if self.loading.is_none()
            && !matches!(tag, b'A' | b'N' | b'S')
            && self.catalog_in_flight.load(Ordering::Acquire)
        {
            self.loading = Some(ColumnMap::new());
        }
        if self.loading.is_some() {
            if tag == b'Z' {
                let mut state = lock(&self.state);
                state.pending = state.pending.saturating_sub(1);
            }
            return;
        }
        match tag {
            // CopyOutResponse: the COPY TO this session sent is starting.
            b'H' => self.copy_out = lock(&self.state).copy_out.take().map(|o| Dialect::new(&o)),
            b'c' => self.copy_out = None,
            // BindComplete: a new portal, whose rows are described anew.
            b'2' => self.end_result(),
            // The end of an Execute's rows.
            b'C' | b's' | b'I' => {
                self.end_result();
                let mut state = lock(&self.state);
                if matches!(state.expects.front(), Some(Expect::Execute(_))) {
                    state.expects.pop_front();
                }
            }
            // NoData: a Describe answered without rows to describe.
            b'n' => {
                let mut state = lock(&self.state);
                if matches!(
                    state.expects.front(),
                    Some(Expect::DescribeStatement(_) | Expect::DescribePortal)
                ) {
                    state.expects.pop_front();
                }
            }
            // An error: the server skips the rest of the batch until Sync.
            b'E' => {
                self.end_result();
                let mut state = lock(&self.state);
                while matches!(
                    state.expects.front(),
                    Some(
                        Expect::DescribeStatement(_) | Expect::DescribePortal | Expect::Execute(_)
                    )
                ) {
                    state.expects.pop_front();
                }
            }
            b'Z' => {
                self.copy_out = None;
                self.end_result();
                let mut state = lock(&self.state);
                state.pending = state.pending.saturating_sub(1);
                while let Some(expect) = state.expects.pop_front() {
                    if matches!(expect, Expect::Sync | Expect::Query) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }

    fn holds(&self, tag: u8) -> bool {
        self.discarding
            || self.loading.is_some()
            || matches!(tag, b'D' | b'E' | b'T' | b'S')
            || (tag == b'd' && self.copy_out.is_some())
    }

    fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        if frame[0] == b'S' {
            self.parameter_status(&frame);
        }
        if self.loading.is_some() && !matches!(frame[0], b'A' | b'N' | b'S') {
            return Ok(self.catalog_frame(frame));
        }
        if self.discarding {
            return Ok(match frame[0] {
                b'Z' => self.ready_after_discard(frame),
                // Notices and notifications are not part of the failed answer.
                b'N' | b'A' | b'S' => frame,
                _ => Bytes::new(),
            });
        }
        match frame[0] {
            b'D' => self.data_row(frame),
            b'T' => Ok(self.row_description(frame)),
            b'E' => self.error(frame),
            b'd' => self.copy_data(frame),
            _ => Ok(frame),
        }
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
