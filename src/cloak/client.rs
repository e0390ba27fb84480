//! Client → server: encrypt the literals and bind parameters bound for PII columns, swap
//! refused statements for a marker, and encrypt PII fields of COPY FROM STDIN data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::{lock, Cloak, Expect, SessionState};
use crate::crypto::{is_envelope, CryptoError};
use crate::policy::ColumnId;
use crate::protocol::filter::{Filter, FilterError};
use crate::protocol::frame::Header;
use crate::protocol::messages::{Bind, MessageError, Parse, Query};
use crate::sql::{literal_value, splice, Analysis, Refusal, StatementPlan};

/// Parameter type OIDs a PII parameter may be declared with: unspecified, text, varchar,
/// unknown.
const TEXT_OIDS: [u32; 4] = [0, 25, 1043, 705];
/// Unspecified, text[], varchar[]: what `column = ANY($n)` may declare.
const TEXT_ARRAY_OIDS: [u32; 3] = [0, 1009, 1015];

pub struct ClientCloak {
    cloak: Arc<Cloak>,
    state: Arc<Mutex<SessionState>>,
    /// Mirrors `state.copy_in.is_some()` so that `holds` needs no lock.
    copying: bool,
    /// Whether the server had answered everything when the frame being handled arrived.
    idle_before_frame: bool,
    /// The catalog query is on its way: its answer is pgcloak's, not the client's.
    catalog_in_flight: Arc<AtomicBool>,
}

/// Reading the catalog is retried at most this often per session (e.g. while a failed
/// transaction makes every query fail).
const CATALOG_ATTEMPTS: u32 = 3;

impl ClientCloak {
    pub(super) fn new(
        cloak: Arc<Cloak>,
        state: Arc<Mutex<SessionState>>,
        catalog_in_flight: Arc<AtomicBool>,
    ) -> ClientCloak {
        ClientCloak {
            cloak,
            state,
            copying: false,
            idle_before_frame: false,
            catalog_in_flight,
        }
    }

    /// Prepends the catalog query to `frame` when the column map is missing and the server
    /// has answered everything, so the catalog's answer comes next and nothing else.
    fn with_catalog(&self, frame: Bytes) -> Bytes {
        let mut state = lock(&self.state);
        let wanted = state.columns.is_none()
            && !self.catalog_in_flight.load(Ordering::Acquire)
            && state.catalog_attempts < CATALOG_ATTEMPTS;
        if !(wanted && self.idle_before_frame) {
            return frame;
        }
        self.catalog_in_flight.store(true, Ordering::Release);
        state.catalog_attempts += 1;
        state.pending += 1;
        let query = super::catalog::query_frame(self.cloak.cache.policy());
        let mut out = BytesMut::with_capacity(query.len() + frame.len());
        out.extend_from_slice(&query);
        out.extend_from_slice(&frame);
        out.freeze()
    }

    fn query(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        let raw_sql = body.split(|&b| b == 0).next().unwrap_or_default();
        self.end_copy();
        let outcome = match self.check_text(raw_sql) {
            TextCheck::PassOn => return Ok(frame),
            TextCheck::Refuse(refusal) => Err(refusal),
            TextCheck::Analyse => {
                let query = Query::decode(body).map_err(malformed)?;
                match self.cloak.cache.analyze(&query.sql) {
                    Analysis::Plain => return Ok(frame),
                    Analysis::Refused(refusal) => Err(refusal),
                    Analysis::Plan(plan) => self
                        .check_executes(&plan)
                        .and_then(|()| self.encrypt_literals(&query.sql, &plan))
                        .inspect(|_| self.note_plan(&plan)),
                }
            }
        };
        let sql = outcome.unwrap_or_else(|refusal| lock(&self.state).refuse(refusal));
        Ok(encode(|out| Query { sql }.encode(out)))
    }

    fn parse(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        let mut fields = body.splitn(3, |&b| b == 0);
        let (raw_name, raw_sql) = (fields.next(), fields.next().unwrap_or_default());
        let name = String::from_utf8_lossy(raw_name.unwrap_or_default()).into_owned();
        self.end_copy();
        {
            // Whatever this Parse holds replaces what the name meant before.
            let mut state = lock(&self.state);
            state.statements.remove(&name);
            state.statement_columns.remove(&name);
        }
        let (mut parse, outcome) = match self.check_text(raw_sql) {
            TextCheck::PassOn => return Ok(frame),
            TextCheck::Refuse(refusal) => {
                let (sql, param_types) = (String::new(), Vec::new());
                (
                    Parse {
                        name,
                        sql,
                        param_types,
                    },
                    Err(refusal),
                )
            }
            TextCheck::Analyse => {
                let parse = Parse::decode(body).map_err(malformed)?;
                let outcome = match self.cloak.cache.analyze(&parse.sql) {
                    Analysis::Plain => return Ok(frame),
                    Analysis::Refused(refusal) => Err(refusal),
                    Analysis::Plan(plan) => check_param_types(&parse, &plan)
                        .and_then(|()| self.check_executes(&plan))
                        .and_then(|()| self.encrypt_literals(&parse.sql, &plan))
                        .map(|sql| (sql, plan)),
                };
                (parse, outcome)
            }
        };
        match outcome {
            Ok((sql, plan)) => {
                parse.sql = sql;
                self.note_plan(&plan);
                if !plan.params.is_empty() {
                    lock(&self.state)
                        .statements
                        .insert(parse.name.clone(), plan);
                }
            }
            Err(refusal) => {
                parse.sql = lock(&self.state).refuse(refusal);
                parse.param_types.clear();
            }
        }
        Ok(encode(|out| parse.encode(out)))
    }

    fn bind(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        if let Some((portal, statement)) = bind_names(body) {
            lock(&self.state).portals.insert(portal, statement);
        }
        if lock(&self.state).statements.is_empty() {
            return Ok(frame);
        }
        let mut bind = Bind::decode(body).map_err(malformed)?;
        let Some(plan) = lock(&self.state).statements.get(&bind.statement).cloned() else {
            return Ok(frame);
        };
        for (&n, slot) in &plan.params {
            let Some(Some(value)) = n.checked_sub(1).and_then(|i| bind.params.get(i)) else {
                continue; // NULL stays NULL; a missing parameter is the server's error
            };
            let binary = match bind.param_formats.as_slice() {
                [] => false,
                [one] => *one == 1,
                formats => formats.get(n - 1) == Some(&1),
            };
            let encrypted = if slot.array {
                self.encrypt_array(&slot.column, value, binary)
            } else {
                self.encrypt_value(&slot.column, value)
            };
            match encrypted {
                Ok(ciphertext) => bind.params[n - 1] = Some(ciphertext),
                Err(refusal) => {
                    // Bind has no SQL: naming a statement that does not exist makes the
                    // server fail this Bind, and the marker in its error brings ours back.
                    bind.statement = lock(&self.state).refuse(refusal);
                    bind.params.clear();
                    bind.param_formats.clear();
                    break;
                }
            }
        }
        Ok(encode(|out| bind.encode(out)))
    }

    fn close(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        // Close: 'S' statement or 'P' portal, then the name.
        let mut state = lock(&self.state);
        match split_kind_name(body) {
            Some((b'S', name)) => {
                state.statements.remove(name);
                state.statement_columns.remove(name);
            }
            Some((b'P', name)) => {
                state.portals.remove(name);
            }
            _ => {}
        }
        Ok(frame)
    }

    /// Describe: 'S' statement or 'P' portal; its answer says what rows will look like.
    fn describe(&mut self, body: &[u8], frame: Bytes) -> Bytes {
        let expect = match split_kind_name(body) {
            Some((b'S', name)) => Expect::DescribeStatement(name.to_owned()),
            _ => Expect::DescribePortal,
        };
        lock(&self.state).expects.push_back(expect);
        frame
    }

    /// Execute: the portal name, then the row limit.
    fn execute(&mut self, body: &[u8], frame: Bytes) -> Bytes {
        let portal = body
            .iter()
            .position(|&b| b == 0)
            .and_then(|end| std::str::from_utf8(&body[..end]).ok())
            .unwrap_or_default();
        lock(&self.state)
            .expects
            .push_back(Expect::Execute(portal.to_owned()));
        frame
    }

    fn copy_data(&mut self, body: &[u8]) -> Result<Bytes, FilterError> {
        let mut state = lock(&self.state);
        let Some(copy) = state.copy_in.as_mut() else {
            return Ok(encode(|out| super::copy::copy_data_frame(out, body)));
        };
        let rows = copy
            .feed(body, &self.cloak.keyring)
            .map_err(|e| FilterError(e.to_string()))?;
        Ok(encode(|out| super::copy::copy_data_frame(out, &rows)))
    }

    fn copy_end(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        let mut state = lock(&self.state);
        let rest = match state.copy_in.take() {
            Some(copy) if frame[0] == b'c' => copy
                .finish(&self.cloak.keyring)
                .map_err(|e| FilterError(e.to_string()))?,
            _ => Vec::new(),
        };
        self.copying = false;
        if rest.is_empty() {
            return Ok(frame);
        }
        let mut out = BytesMut::new();
        super::copy::copy_data_frame(&mut out, &rest);
        out.extend_from_slice(&frame);
        Ok(out.freeze())
    }

    fn note_plan(&mut self, plan: &StatementPlan) {
        let mut state = lock(&self.state);
        if plan.changes_schema {
            // Tables may be dropped and created again: their OIDs must be read anew.
            state.columns = None;
            state.catalog_attempts = 0;
        }
        if let Some(copy) = &plan.copy_in {
            state.start_copy(copy);
            self.copying = true;
        }
        if plan.copy_out.is_some() {
            state.copy_out = plan.copy_out.clone();
        }
    }

    fn end_copy(&mut self) {
        if self.copying {
            lock(&self.state).copy_in = None;
            self.copying = false;
        }
    }

    /// Statement text pgcloak cannot read as UTF-8 (a session whose client_encoding is not
    /// UTF8, or invalid bytes): passed on untouched when it cannot concern a PII table
    /// (Postgres decodes it as usual), refused when it may, since PII values in it, in its
    /// parameters or in its results would be encrypted or returned in the wrong encoding.
    fn check_text(&self, raw_sql: &[u8]) -> TextCheck {
        let encoding = lock(&self.state).foreign_encoding.clone();
        let utf8 = std::str::from_utf8(raw_sql).is_ok();
        if encoding.is_none() && utf8 {
            return TextCheck::Analyse;
        }
        // Table names are ASCII, which every client encoding Postgres accepts keeps as is.
        if !self
            .cloak
            .cache
            .policy()
            .may_touch(&String::from_utf8_lossy(raw_sql))
        {
            return TextCheck::PassOn;
        }
        TextCheck::Refuse(Refusal {
            code: "22021",
            message: match encoding {
                Some(encoding) => format!(
                    "this session's client_encoding is {encoding}, and pgcloak encrypts and decrypts PII values as UTF-8, so statements on tables with encrypted columns need client_encoding UTF8: SET client_encoding = 'UTF8' (or PGCLIENTENCODING=UTF8)"
                ),
                None => "this statement names a table with encrypted columns and is not valid UTF-8".into(),
            },
        })
    }

    /// SQL `EXECUTE name(args)` passes its arguments as SQL values, not through Bind: refused
    /// when `name` was prepared (with Parse) with a parameter bound for a PII column. (SQL
    /// PREPARE of such a statement is refused by the analysis.)
    fn check_executes(&self, plan: &StatementPlan) -> Result<(), Refusal> {
        let state = lock(&self.state);
        for name in &plan.executes {
            if let Some(slot) = state
                .statements
                .get(name)
                .and_then(|p| p.params.values().next())
            {
                return Err(Refusal::unsupported(format!(
                    "EXECUTE {name}(...) would pass its arguments to {} unencrypted: pgcloak encrypts a prepared statement's parameters only when they come with Bind; execute it through your driver (the extended protocol)",
                    slot.column
                )));
            }
        }
        Ok(())
    }

    /// The SQL with each PII literal replaced by its ciphertext.
    fn encrypt_literals(&self, sql: &str, plan: &StatementPlan) -> Result<String, Refusal> {
        if plan.literals.is_empty() {
            return Ok(sql.to_owned());
        }
        let mut replacements = Vec::with_capacity(plan.literals.len());
        for slot in &plan.literals {
            let value = literal_value(sql, slot)?;
            let ciphertext = if slot.array {
                self.encrypt_array(&slot.column, value.as_bytes(), false)?
            } else {
                self.encrypt_value(&slot.column, value.as_bytes())?
            };
            let text = String::from_utf8_lossy(&ciphertext);
            replacements.push((slot.range.clone(), format!("'{text}'")));
        }
        Ok(splice(sql, &replacements))
    }

    /// Encrypts each element of an array parameter or literal (`column = ANY($n)`).
    fn encrypt_array(
        &self,
        column: &ColumnId,
        value: &[u8],
        binary: bool,
    ) -> Result<Bytes, Refusal> {
        let encrypt = |element: &[u8]| self.encrypt_value(column, element).map(|b| b.to_vec());
        let mapped = if binary {
            super::array::map_binary(value, encrypt)
        } else {
            super::array::map_text(value, encrypt)
        };
        match mapped {
            Ok(Ok(array)) => Ok(Bytes::from(array)),
            Ok(Err(refusal)) => Err(refusal),
            Err(e) => Err(Refusal {
                code: "22P02",
                message: format!(
                    "the array compared with {column} cannot be encrypted by pgcloak: {}; pass a one-dimensional array of text values",
                    e.0
                ),
            }),
        }
    }

    /// Encrypts one value for `column`. A value that already is an envelope of this
    /// column (a restored dump) is kept, never encrypted twice.
    fn encrypt_value(&self, column: &ColumnId, value: &[u8]) -> Result<Bytes, Refusal> {
        let column_name = column.to_string();
        if is_envelope(value) {
            return match self.cloak.keyring.decrypt(value, Some(&column_name)) {
                Ok(_) => Ok(Bytes::copy_from_slice(value)),
                Err(e) => Err(Refusal::unsupported(format!(
                    "the value for {column} looks like a pgcloak ciphertext but is not a valid one for this column ({}); send the plaintext instead",
                    describe(&e)
                ))),
            };
        }
        if std::str::from_utf8(value).is_err() {
            return Err(Refusal {
                code: "22021",
                message: format!("the value for {column} is not valid UTF-8"),
            });
        }
        self.cloak
            .keyring
            .encrypt(&column_name, value)
            .map(Bytes::from)
            .map_err(|e| Refusal {
                code: "XX000",
                message: format!(
                    "pgcloak could not encrypt the value for {column}: {}",
                    describe(&e)
                ),
            })
    }
}

impl Filter for ClientCloak {
    fn on_frame(&mut self, header: Header, _bytes: &[u8]) {
        let mut state = lock(&self.state);
        self.idle_before_frame = state.pending == 0 && !state.unsynced;
        match header.tag {
            b'Q' => {
                state.pending += 1;
                state.expects.push_back(Expect::Query);
            }
            b'S' => {
                state.pending += 1;
                state.unsynced = false;
                state.expects.push_back(Expect::Sync);
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => state.unsynced = true,
            _ => {}
        }
    }

    fn holds(&self, tag: u8) -> bool {
        matches!(tag, b'Q' | b'P' | b'B' | b'C' | b'D' | b'E')
            || (self.copying && matches!(tag, b'd' | b'c' | b'f'))
    }

    fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        let body = frame.slice(Header::SIZE..);
        match frame[0] {
            b'Q' => self.query(&body, frame).map(|f| self.with_catalog(f)),
            b'P' => self.parse(&body, frame).map(|f| self.with_catalog(f)),
            b'B' => self.bind(&body, frame),
            b'C' => self.close(&body, frame),
            b'D' => Ok(self.describe(&body, frame)),
            b'E' => Ok(self.execute(&body, frame)),
            b'd' => self.copy_data(&body),
            b'c' | b'f' => self.copy_end(frame),
            _ => Ok(frame),
        }
    }
}

/// What to do with a statement's text, before analysis.
enum TextCheck {
    Analyse,
    PassOn,
    Refuse(Refusal),
}

/// A Close or Describe body: the kind byte and the name.
fn split_kind_name(body: &[u8]) -> Option<(u8, &str)> {
    match body {
        [kind, name @ .., 0] => std::str::from_utf8(name).ok().map(|name| (*kind, name)),
        _ => None,
    }
}

/// The portal and statement names at the start of a Bind body.
fn bind_names(body: &[u8]) -> Option<(String, String)> {
    let mut parts = body.splitn(3, |&b| b == 0);
    let portal = std::str::from_utf8(parts.next()?).ok()?;
    let statement = std::str::from_utf8(parts.next()?).ok()?;
    parts.next()?;
    Some((portal.to_owned(), statement.to_owned()))
}

/// Declared parameter types must be text for PII parameters: the ciphertext is text.
fn check_param_types(parse: &Parse, plan: &StatementPlan) -> Result<(), Refusal> {
    for (&n, slot) in &plan.params {
        let oid = parse.param_types.get(n - 1).copied().unwrap_or(0);
        let allowed: &[u32] = if slot.array {
            &TEXT_ARRAY_OIDS
        } else {
            &TEXT_OIDS
        };
        if !allowed.contains(&oid) {
            return Err(Refusal {
                code: "42804",
                message: format!(
                    "parameter ${n} is bound for the encrypted column {} but declared with type OID {oid}; declare it as text, text[] for = ANY(...), or leave its type unspecified",
                    slot.column
                ),
            });
        }
    }
    Ok(())
}

fn describe(error: &CryptoError) -> String {
    error.to_string()
}

fn malformed(error: MessageError) -> FilterError {
    FilterError(format!("malformed message from client: {error}"))
}

fn encode(f: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    f(&mut out);
    out.freeze()
}
