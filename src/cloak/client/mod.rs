//! Client → server: encrypt the literals and bind parameters bound for PII columns, swap
//! refused statements for a marker, and encrypt PII fields of COPY FROM STDIN data.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

mod checks;
mod copy_in;
mod search;
mod typed_values;

use std::collections::BTreeSet;

use checks::TextCheck;
use typed_values::{SearchValue, TypedParam};

use super::access::check_writers;
use super::tracker::AmbiguousStatement;
use super::typed::Session;
use super::{lock, Cloak, SessionState};
use crate::crypto::{is_envelope, CryptoError};
use crate::pgtype::Kind;
use crate::policy::ColumnId;
use crate::protocol::filter::{BlockingJob, Filter, FilterError};
use crate::protocol::frame::Header;
use crate::protocol::messages::{Bind, MessageError, Parse, Query};
use crate::protocol::tags::Frontend;
use crate::sql::{literal_value, splice, Analysis, LiteralKind, Refusal, StatementPlan};

pub struct ClientCloak {
    cloak: Arc<Cloak>,
    state: Arc<Mutex<SessionState>>,
    /// Mirrors `state.copy_in.is_some()` so that `holds` needs no lock.
    copying: bool,
    /// A COPY FROM STDIN row could not be encrypted: pgcloak sent CopyFail in its place and
    /// drops the client's remaining COPY data (plaintext) until its CopyDone or CopyFail.
    copy_failed: bool,
    /// The analysis of a long statement, made on the blocking pool (see `prepare`).
    offloaded: Arc<Mutex<Option<(String, Analysis)>>>,
    /// The settings values of typed PII columns are read with, as of the message now
    /// being rewritten (followed only when the policy has typed columns).
    session: Session,
    /// The `ServerParams::version` `session` was copied at.
    session_version: u64,
}

/// Statements longer than this are analysed off the session's thread, so that the other
/// sessions on its core are relayed meanwhile.
const OFFLOAD_BYTES: usize = 64 * 1024;

impl ClientCloak {
    pub(super) fn new(cloak: Arc<Cloak>, state: Arc<Mutex<SessionState>>) -> ClientCloak {
        ClientCloak {
            cloak,
            state,
            copying: false,
            copy_failed: false,
            offloaded: Arc::default(),
            session: Session::default(),
            session_version: 0,
        }
    }

    /// Prepends the catalog query to the frame of a statement that touches a PII table when
    /// the column map is unknown (first PII statement, or DDL since) and the server will run
    /// a Query here on its own; its answer comes before this statement's and is pgcloak's.
    fn with_catalog(&self, state: &mut SessionState, frame: Bytes) -> Bytes {
        let current = self.cloak.catalog_generation();
        if !state.tracker.wants_catalog(current) {
            return frame;
        }
        state.tracker.sent_catalog(current);
        let query = super::catalog::query_frame(self.cloak.cache.policy());
        let mut out = BytesMut::with_capacity(query.len() + frame.len());
        out.extend_from_slice(&query);
        out.extend_from_slice(&frame);
        out.freeze()
    }

    /// The analysis of a statement's text, or the refusal to send instead of it.
    fn analyse(
        &self,
        raw_sql: &[u8],
        sql: impl FnOnce() -> Result<String, MessageError>,
    ) -> Result<Outcome, FilterError> {
        let offloaded = lock_slot(&self.offloaded).take();
        match self.check_text(raw_sql) {
            TextCheck::PassOn => Ok(Outcome::Plain),
            TextCheck::Refuse(refusal) => Ok(Outcome::Refused(refusal)),
            TextCheck::Analyse => {
                let sql = sql().map_err(FilterError::MalformedClient)?;
                let analysis = match offloaded {
                    Some((text, analysis)) if text == sql => analysis,
                    _ => self.cloak.cache.analyze(&sql),
                };
                Ok(match analysis {
                    Analysis::Plain => Outcome::Plain,
                    Analysis::Refused(refusal) => Outcome::Refused(refusal),
                    Analysis::Plan(plan) => Outcome::Plan(sql, plan),
                })
            }
        }
    }

    fn query(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        let raw_sql = body.split(|&b| b == 0).next().unwrap_or_default();
        self.end_copy();
        let outcome = self.analyse(raw_sql, || Query::decode(body).map(|q| q.sql))?;
        let shared = Arc::clone(&self.state);
        let mut state = lock(&shared);
        // Several statements in one Query: an earlier one may change the settings.
        let text = raw_sql.trim_ascii_end();
        let single = !text.strip_suffix(b";").unwrap_or(text).contains(&b';');
        self.follow_session(&state, single && !state.tracker.settings_may_change());
        let mut planned = None;
        let out = match outcome {
            Outcome::Plain => frame,
            Outcome::Refused(refusal) => {
                let sql = state.refuse(refusal);
                encode(|out| Query { sql }.encode(out))
            }
            Outcome::Plan(sql, plan) => {
                let checked = self
                    .check_session(&state, &plan)
                    .and_then(|()| self.encrypt_literals(&sql, &plan));
                let sql = match checked {
                    Ok(sql) => {
                        self.note_plan(&mut state, &plan);
                        planned = Some(plan);
                        sql
                    }
                    Err(refusal) => state.refuse(refusal),
                };
                let frame = encode(|out| Query { sql }.encode(out));
                self.with_catalog(&mut state, frame)
            }
        };
        state.tracker.sent_query_planned(planned);
        Ok(out)
    }

    fn parse(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        let mut fields = body.splitn(3, |&b| b == 0);
        let (raw_name, raw_sql) = (fields.next(), fields.next().unwrap_or_default());
        let name = String::from_utf8_lossy(raw_name.unwrap_or_default()).into_owned();
        self.end_copy();
        let mut decoded = None;
        let outcome = self.analyse(raw_sql, || {
            let parse = Parse::decode(body)?;
            let sql = parse.sql.clone();
            decoded = Some(parse);
            Ok(sql)
        })?;
        let shared = Arc::clone(&self.state);
        let mut state = lock(&shared);
        self.follow_session(&state, !state.tracker.settings_may_change());
        let (out, plan) = match outcome {
            Outcome::Plain => (frame, None),
            Outcome::Refused(refusal) => (refused_parse(&mut state, name.clone(), refusal), None),
            Outcome::Plan(sql, plan) => {
                let Some(mut parse) = decoded else {
                    return Ok(frame); // analyse decoded it, or returned early
                };
                let mut plan = plan;
                let checked = self
                    .param_types(&mut parse, &mut plan)
                    .and_then(|()| self.check_session(&state, &plan))
                    .and_then(|()| self.encrypt_literals(&sql, &plan));
                match checked {
                    Ok(sql) => {
                        parse.sql = sql;
                        self.note_plan(&mut state, &plan);
                        let frame = encode(|out| parse.encode(out));
                        (self.with_catalog(&mut state, frame), Some(plan))
                    }
                    Err(refusal) => (refused_parse(&mut state, name.clone(), refusal), None),
                }
            }
        };
        state.tracker.sent_parse(&name, plan);
        Ok(out)
    }

    fn bind(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        let Some((portal, statement)) = bind_names(body) else {
            return Err(FilterError::MalformedClient(MessageError::Truncated(
                "Bind",
            )));
        };
        let shared = Arc::clone(&self.state);
        let mut state = lock(&shared);
        self.follow_session(&state, !state.tracker.settings_may_change());
        let out = match state.tracker.bind_params(&statement) {
            Ok(Some(plan)) if !plan.params.is_empty() => {
                let bind = Bind::decode(body).map_err(FilterError::MalformedClient)?;
                // The user may have changed since Parse (SET SESSION AUTHORIZATION).
                let role = state.tracker.params.session_user.as_deref();
                match check_writers(self.cloak.policy(), &plan, role) {
                    Ok(()) => self.encrypt_params(&mut state, bind, &plan),
                    Err(refusal) => refused_bind(&mut state, bind, refusal),
                }
            }
            Ok(_) => frame,
            Err(AmbiguousStatement) => {
                let refusal = Refusal::unsupported(format!(
                    "pgcloak cannot tell which statement \"{statement}\" names for this Bind: a Parse or Close of that name sent earlier has not been answered yet, and the statements it may be differ in which parameters are encrypted; send Sync and wait for its ReadyForQuery before re-using a statement name"
                ));
                let bind = Bind::decode(body).map_err(FilterError::MalformedClient)?;
                refused_bind(&mut state, bind, refusal)
            }
        };
        match self.cloak.policy().has_typed() {
            // The rows' formats decide how typed values are printed.
            true => {
                let formats = result_formats(body).ok_or(FilterError::MalformedClient(
                    MessageError::Truncated("Bind"),
                ))?;
                state
                    .tracker
                    .sent_bind_formats(&portal, &statement, Arc::new(formats));
            }
            false => state.tracker.sent_bind(&portal, &statement),
        }
        Ok(out)
    }

    /// Encrypts the parameters a statement binds for PII columns.
    fn encrypt_params(
        &self,
        state: &mut SessionState,
        mut bind: Bind,
        plan: &StatementPlan,
    ) -> Bytes {
        let searched = self.searched_params(plan);
        // Typed parameters used as search values, and those also written.
        let (mut typed_searches, mut written) = (BTreeSet::new(), BTreeSet::new());
        if self.cloak.policy().has_typed() {
            for usage in &plan.param_uses {
                match usage.search {
                    Some(_) => typed_searches.insert(usage.n),
                    None => written.insert(usage.n),
                };
            }
        }
        for (&n, slot) in &plan.params {
            let Some(Some(value)) = n.checked_sub(1).and_then(|i| bind.params.get(i)) else {
                continue; // NULL stays NULL; a missing parameter is the server's error
            };
            let binary = match bind.param_formats.as_slice() {
                [] => false,
                [one] => *one == 1,
                formats => formats.get(n - 1) == Some(&1),
            };
            let search_only = typed_searches.contains(&n) && !written.contains(&n);
            let typed = match self.typed_param(slot, value, binary, search_only) {
                Ok(typed) => typed,
                Err(refusal) => return refused_bind(state, bind, refusal),
            };
            let (value, binary) = match &typed {
                TypedParam::As(value, binary) => (&value[..], *binary),
                TypedParam::MatchesNothing => {
                    let form =
                        self.matching_nothing(&slot.column)
                            .map(|c| match searched.contains(&n) {
                                true => Bytes::from(super::array::text_array(&[c])),
                                false => c,
                            });
                    match form {
                        Ok(form) => bind.params[n - 1] = Some(form),
                        Err(refusal) => return refused_bind(state, bind, refusal),
                    }
                    continue;
                }
            };
            let encrypted = match self.search_param(&searched, n, slot, value, binary) {
                Ok(Some(forms)) => Ok(forms),
                Err(refusal) => Err(refusal),
                Ok(None) if slot.array => self.encrypt_array(&slot.column, value, binary),
                Ok(None) => self.encrypt_value(&slot.column, value, binary),
            };
            match encrypted {
                Ok(ciphertext) => bind.params[n - 1] = Some(ciphertext),
                Err(refusal) => return refused_bind(state, bind, refusal),
            }
        }
        encode(|out| bind.encode(out))
    }

    fn close(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        let (kind, name) = split_kind_name(body).ok_or(FilterError::MalformedClient(
            MessageError::Truncated("Close"),
        ))?;
        lock(&self.state).tracker.sent_close(kind == b'S', &name);
        Ok(frame)
    }

    /// Describe: 'S' statement or 'P' portal; its answer says what rows will look like.
    fn describe(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        let (kind, name) = split_kind_name(body).ok_or(FilterError::MalformedClient(
            MessageError::Truncated("Describe"),
        ))?;
        lock(&self.state).tracker.sent_describe(kind == b'S', &name);
        Ok(frame)
    }

    /// Execute: the portal name, then the row limit.
    fn execute(&mut self, body: &[u8], frame: Bytes) -> Result<Bytes, FilterError> {
        let portal = body
            .iter()
            .position(|&b| b == 0)
            .and_then(|end| std::str::from_utf8(&body[..end]).ok())
            .ok_or(FilterError::MalformedClient(MessageError::Truncated(
                "Execute",
            )))?;
        lock(&self.state).tracker.sent_execute(portal);
        Ok(frame)
    }

    /// The SQL with each PII literal replaced by its ciphertext.
    fn encrypt_literals(&self, sql: &str, plan: &StatementPlan) -> Result<String, Refusal> {
        self.check_forms(plan)?;
        let mut replacements = self.param_rewrites(plan)?;
        if plan.literals.is_empty() && replacements.is_empty() && plan.casts.is_empty() {
            return Ok(sql.to_owned());
        }
        replacements.reserve(plan.literals.len());
        let typed = self.cloak.policy().has_typed();
        for slot in &plan.literals {
            let value = literal_value(sql, slot)?;
            if typed && slot.search.is_some() && !slot.array {
                let number = matches!(slot.kind, LiteralKind::Number | LiteralKind::NegativeNumber);
                let found = self.check_search(&slot.column, value.as_bytes(), false, number)?;
                if found == SearchValue::MatchesNothing {
                    let nothing = self.matching_nothing(&slot.column)?;
                    let text = String::from_utf8_lossy(&nothing);
                    replacements.push((slot.range.clone(), format!("'{text}'")));
                    continue;
                }
            }
            if let Some(replaced) = self.search_literal(slot, &value)? {
                replacements.push(replaced);
                continue;
            }
            let ciphertext = if slot.array {
                self.encrypt_array(&slot.column, value.as_bytes(), false)?
            } else {
                self.encrypt_value(&slot.column, value.as_bytes(), false)?
            };
            let text = String::from_utf8_lossy(&ciphertext);
            replacements.push((slot.range.clone(), format!("'{text}'")));
        }
        // In Postgres a typed PII column is text: casts to its type become casts to text
        // (unless a rewrite replaced the operand they are part of).
        let rewritten: Vec<_> = replacements.iter().map(|(r, _)| r.clone()).collect();
        for cast in &plan.casts {
            if !rewritten
                .iter()
                .any(|r| r.start <= cast.start && cast.end <= r.end)
            {
                replacements.push((cast.clone(), "text".to_owned()));
            }
        }
        replacements.sort_by_key(|(range, _)| range.start);
        Ok(splice(sql, &replacements))
    }

    /// Encrypts each element of an array parameter or literal (`column = ANY($n)`).
    fn encrypt_array(
        &self,
        column: &ColumnId,
        value: &[u8],
        binary: bool,
    ) -> Result<Bytes, Refusal> {
        let encrypt =
            |element: &[u8]| (self.encrypt_value(column, element, binary)).map(|b| b.to_vec());
        let mapped = if binary {
            super::array::map_binary(value, self.typed_element(column), encrypt)
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

    /// Encrypts one value for `column`, sent as text or binary. A value that already is an
    /// envelope of this column (a restored dump) is kept, never encrypted twice.
    fn encrypt_value(
        &self,
        column: &ColumnId,
        value: &[u8],
        binary: bool,
    ) -> Result<Bytes, Refusal> {
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
        let ty = self.column_type(column);
        let value = super::typed::canonical(&ty, value, binary, &self.session, column)?;
        if ty.kind() == Kind::Text && std::str::from_utf8(&value).is_err() {
            return Err(not_utf8(column));
        }
        self.cloak
            .keyring
            .encrypt(&column_name, &value)
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
    /// Messages answered by the server that the cloak does not hold are counted here.
    fn on_frame(&mut self, header: Header, _bytes: &[u8]) {
        let tracker = || lock(&self.state);
        match Frontend::from_tag(header.tag) {
            Frontend::Sync => tracker().tracker.sent_sync(),
            Frontend::Flush => tracker().tracker.sent_flush(),
            Frontend::FunctionCall => tracker().tracker.sent_function_call(),
            Frontend::CopyDone | Frontend::CopyFail => tracker().tracker.sent_copy_end(),
            _ => {}
        }
    }

    fn prepare(&mut self, frame: &Bytes) -> Option<BlockingJob> {
        if frame.len() <= OFFLOAD_BYTES {
            return None;
        }
        let body = &frame[Header::SIZE..];
        let raw_sql = match Frontend::from_tag(frame[0]) {
            Frontend::Query => body.split(|&b| b == 0).next()?,
            Frontend::Parse => body.splitn(3, |&b| b == 0).nth(1)?,
            _ => return None,
        };
        let sql = std::str::from_utf8(raw_sql).ok()?.to_owned();
        let (cloak, slot) = (self.cloak.clone(), self.offloaded.clone());
        Some(Box::new(move || {
            let analysis = cloak.cache.analyze(&sql);
            *lock_slot(&slot) = Some((sql, analysis));
        }))
    }

    fn holds(&self, tag: u8) -> bool {
        match Frontend::from_tag(tag) {
            Frontend::Query
            | Frontend::Parse
            | Frontend::Bind
            | Frontend::Close
            | Frontend::Describe
            | Frontend::Execute => true,
            Frontend::CopyData | Frontend::CopyDone | Frontend::CopyFail => self.copying,
            _ => false,
        }
    }

    fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        let body = frame.slice(Header::SIZE..);
        match Frontend::from_tag(frame[0]) {
            Frontend::Query => self.query(&body, frame),
            Frontend::Parse => self.parse(&body, frame),
            Frontend::Bind => self.bind(&body, frame),
            Frontend::Close => self.close(&body, frame),
            Frontend::Describe => self.describe(&body, frame),
            Frontend::Execute => self.execute(&body, frame),
            Frontend::CopyData => Ok(self.copy_data(&body)),
            Frontend::CopyDone | Frontend::CopyFail => Ok(self.copy_end(frame)),
            _ => Ok(frame),
        }
    }
}

fn lock_slot<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A statement's text after the checks and analysis that do not depend on the session.
enum Outcome {
    Plain,
    Refused(Refusal),
    Plan(String, Arc<StatementPlan>),
}

/// A Parse whose statement is refused: the marker as its SQL, no declared types.
fn refused_parse(state: &mut SessionState, name: String, refusal: Refusal) -> Bytes {
    let parse = Parse {
        name,
        sql: state.refuse(refusal),
        param_types: Vec::new(),
    };
    encode(|out| parse.encode(out))
}

/// Bind has no SQL: naming a statement that does not exist makes the server fail this
/// Bind, and the marker in its error brings the refusal back.
fn refused_bind(state: &mut SessionState, mut bind: Bind, refusal: Refusal) -> Bytes {
    bind.statement = state.refuse(refusal);
    bind.params.clear();
    bind.param_formats.clear();
    encode(|out| bind.encode(out))
}

/// A Close or Describe body: the kind byte and the name (names in another client encoding
/// are kept lossily: they only need to stay distinct keys).
fn split_kind_name(body: &[u8]) -> Option<(u8, std::borrow::Cow<'_, str>)> {
    match body {
        [kind, name @ .., 0] => Some((*kind, String::from_utf8_lossy(name))),
        _ => None,
    }
}

/// The portal and statement names at the start of a Bind body.
fn bind_names(body: &[u8]) -> Option<(String, String)> {
    let mut parts = body.splitn(3, |&b| b == 0);
    let portal = String::from_utf8_lossy(parts.next()?).into_owned();
    let statement = String::from_utf8_lossy(parts.next()?).into_owned();
    parts.next()?;
    Some((portal, statement))
}

/// The result format codes at the end of a Bind body.
fn result_formats(body: &[u8]) -> Option<Vec<u16>> {
    Bind::decode(body).ok().map(|bind| bind.result_formats)
}

fn not_utf8(column: &ColumnId) -> Refusal {
    Refusal {
        code: "22021",
        message: format!("the value for {column} is not valid UTF-8"),
    }
}

fn describe(error: &CryptoError) -> String {
    error.to_string()
}

fn encode(f: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    f(&mut out);
    out.freeze()
}
