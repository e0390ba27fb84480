//! One session's protocol state as the server confirmed it, and the replies still due.
//!
//! Both directions feed it, without I/O: the client side says what it sent (in order), the
//! server side what arrived. Prepared statements and portals exist when the server answered
//! ParseComplete / BindComplete and stop existing at CloseComplete; a request the server
//! rejected, or skipped after an error until Sync, never takes effect. Every request that
//! gets a reply is queued, so "idle" is an empty queue and every reply has an owner: the
//! client, or pgcloak's own catalog query.

use std::collections::VecDeque;
use std::sync::Arc;

mod bind;
mod completion;
mod names;
mod params;

use super::catalog::{self, CatalogState, ColumnMap};
pub use super::catalog::{Catalog, Generation, ATTEMPTS as CATALOG_ATTEMPTS};
use crate::protocol::messages::RowDescription;
use crate::protocol::tags::Backend;
use crate::sql::StatementPlan;
pub use bind::AmbiguousStatement;
use names::Names;
pub use params::ServerParams;

/// Where a result field comes from, as the RowDescription and the column map say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An expression, or the column map is not known.
    Unknown,
    /// A table column the policy does not name.
    Plain,
    /// A PII column: `schema.table.column`.
    Pii(String),
}

/// The source of each field of a result.
pub type Columns = Vec<Source>;

/// A prepared statement the server holds.
#[derive(Debug, Clone, Default)]
pub struct Statement {
    /// What analysis found: `None` for a statement that touches no PII table.
    pub plan: Option<Arc<StatementPlan>>,
    /// Its result columns, once a Describe answered.
    pub columns: Option<Arc<Columns>>,
    /// SQL DEALLOCATE ran since: the server may no longer hold it.
    maybe_gone: bool,
}

/// Result format codes as Bind gives them: none (all text), one (for every field), or one
/// per field; 0 text, 1 binary.
pub type Formats = Arc<Vec<u16>>;

/// Whether field `i` of a result with these formats is binary.
pub fn is_binary(formats: &[u16], i: usize) -> bool {
    match formats {
        [] => false,
        [all] => *all == 1,
        each => each.get(i) == Some(&1),
    }
}

/// A portal the server holds.
#[derive(Debug, Clone, Default)]
struct Portal {
    /// The statement it was bound from.
    statement: String,
    /// Its result formats, from the Bind.
    formats: Formats,
    /// Its result columns, when a Describe of the portal answered.
    columns: Option<Arc<Columns>>,
}

/// A request whose reply has not fully arrived.
#[derive(Debug, Clone)]
enum Due {
    Parse {
        name: String,
        plan: Option<Arc<StatementPlan>>,
    },
    Bind {
        portal: String,
        statement: String,
        formats: Formats,
    },
    DescribeStatement(String),
    DescribePortal(String),
    /// `copy_ends`: as for Sync; a COPY it starts ends at the client's next copy end.
    Execute {
        portal: String,
        copy_ends: u64,
    },
    Close {
        statement: bool,
        name: String,
    },
    /// `copy_ends`: the client's CopyDone/CopyFail messages sent before this Sync.
    Sync {
        copy_ends: u64,
    },
    /// `copy_ends`: as for Execute (and one more for each COPY of the Query already begun).
    Query {
        copy_ends: u64,
        /// What analysis found for it (a COPY TO's rows are decrypted by it).
        plan: Option<Arc<StatementPlan>>,
    },
    FunctionCall,
    /// pgcloak's catalog query: its answer goes to pgcloak, not to the client.
    Catalog,
}

impl Due {
    /// Answered by ReadyForQuery rather than by a message of its own.
    fn ends_at_ready(&self) -> bool {
        matches!(
            self,
            Due::Sync { .. } | Due::Query { .. } | Due::FunctionCall | Due::Catalog
        )
    }
}

/// What a server message is, as far as the cloak must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Part of the answer to the client: forward (rows decrypted).
    Client,
    /// Part of the answer to pgcloak's catalog query: do not forward.
    Catalog,
}

/// One session's tracked state.
#[derive(Debug, Default)]
pub struct Tracker {
    statements: Names<Statement>,
    portals: Names<Portal>,
    due: VecDeque<Due>,
    /// An extended-protocol message failed and no Sync was queued: the server discards
    /// everything the client sends until its next Sync.
    skipping: bool,
    /// Extended-protocol messages were sent since the last Sync.
    unsynced: bool,
    catalog: CatalogState,
    /// Result columns of the rows now arriving.
    current: Option<Arc<Columns>>,
    /// Their formats.
    current_formats: Formats,
    /// The columns of the RowDescription received last.
    described: Option<Arc<Columns>>,
    /// The client's CopyDone/CopyFail messages sent.
    copy_ends_sent: u64,
    /// The server is in copy-in mode until the client's copy end number `n` (0-based).
    copy_in: Option<u64>,
    pub params: ServerParams,
}

impl Tracker {
    /// Nothing is awaited from the server and it processes the next message normally.
    pub fn idle(&self) -> bool {
        self.due.is_empty() && !self.skipping
    }

    /// Whether a request still due may change the session's settings (DateStyle, TimeZone)
    /// before the server reads what is sent next: an Execute, a simple Query or a function
    /// call (a SET, a function with SET, COMMIT or ROLLBACK). Parse, Bind, Describe, Close,
    /// Sync and pgcloak's catalog query change none.
    pub fn settings_may_change(&self) -> bool {
        self.due.iter().any(|due| {
            matches!(
                due,
                Due::Execute { .. } | Due::Query { .. } | Due::FunctionCall
            )
        })
    }

    /// The number of requests whose replies are still due.
    pub fn replies_due(&self) -> usize {
        self.due.len()
    }

    /// The server will discard extended messages until the client's next Sync.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// The column map, when it was read and no DDL happened since.
    pub fn columns(&self) -> Option<&Arc<ColumnMap>> {
        self.catalog.map()
    }

    pub fn catalog(&self) -> &Catalog {
        self.catalog.catalog()
    }

    /// Whether the next ReadyForQuery's transaction status is needed (this session's DDL
    /// waits for its commit).
    pub fn awaits_commit(&self) -> bool {
        self.catalog.awaits_commit()
    }

    /// Whether DDL of this session was committed since the last call: the other sessions
    /// must read the catalog again.
    pub fn take_ddl_committed(&mut self) -> bool {
        self.catalog.take_ddl_committed()
    }

    /// The next reply the server sends (other than notices, notifications and parameter
    /// status) answers pgcloak's catalog query.
    pub fn answering_catalog(&self) -> bool {
        matches!(self.due.front(), Some(Due::Catalog))
    }

    /// Result columns of the rows now arriving, as far as known.
    pub fn result_columns(&self) -> Option<&Arc<Columns>> {
        self.current.as_ref()
    }

    /// The formats of the rows now arriving (see [`is_binary`]).
    pub fn result_formats(&self) -> &Formats {
        &self.current_formats
    }

    /// The columns of the RowDescription just received, as far as known.
    pub fn described(&self) -> Option<&Arc<Columns>> {
        self.described.as_ref()
    }

    /// The statement a ParameterDescription arriving now describes.
    pub fn describing_statement(&self) -> Option<&Statement> {
        match self.due.front()? {
            Due::DescribeStatement(name) => self.statements.get(name),
            _ => None,
        }
    }

    /// A confirmed statement.
    pub fn statement(&self, name: &str) -> Option<&Statement> {
        self.statements.get(name)
    }

    // ---- client side: what was sent, in order ----

    fn push(&mut self, due: Due) {
        if !self.skipping {
            self.due.push_back(due);
            if self.due.len() == 1 {
                self.start_front();
            }
        }
    }

    pub fn sent_query(&mut self) {
        self.sent_query_planned(None);
    }

    /// A simple Query, with the plan analysis made for it (None: plain or refused).
    pub fn sent_query_planned(&mut self, plan: Option<Arc<StatementPlan>>) {
        self.push(Due::Query {
            copy_ends: self.copy_ends_sent,
            plan,
        });
    }

    /// The plan of the request now being answered: its Query's, or the statement's that the
    /// executing portal was bound from. Asked when a CopyOutResponse arrives.
    pub fn answering_plan(&self) -> Option<&Arc<StatementPlan>> {
        match self.due.front()? {
            Due::Query { plan, .. } => plan.as_ref(),
            Due::Execute { portal, .. } => {
                let statement = &self.portals.get(portal)?.statement;
                self.statements.get(statement)?.plan.as_ref()
            }
            _ => None,
        }
    }

    pub fn sent_function_call(&mut self) {
        self.push(Due::FunctionCall);
    }

    pub fn sent_parse(&mut self, name: &str, plan: Option<Arc<StatementPlan>>) {
        self.unsynced = true;
        self.push(Due::Parse {
            name: name.to_owned(),
            plan,
        });
    }

    pub fn sent_bind(&mut self, portal: &str, statement: &str) {
        self.sent_bind_formats(portal, statement, Formats::default());
    }

    /// A Bind with its result formats (needed when results hold typed PII columns).
    pub fn sent_bind_formats(&mut self, portal: &str, statement: &str, formats: Formats) {
        self.unsynced = true;
        self.push(Due::Bind {
            portal: portal.to_owned(),
            statement: statement.to_owned(),
            formats,
        });
    }

    pub fn sent_describe(&mut self, statement: bool, name: &str) {
        self.unsynced = true;
        self.push(if statement {
            Due::DescribeStatement(name.to_owned())
        } else {
            Due::DescribePortal(name.to_owned())
        });
    }

    pub fn sent_execute(&mut self, portal: &str) {
        self.unsynced = true;
        self.push(Due::Execute {
            portal: portal.to_owned(),
            copy_ends: self.copy_ends_sent,
        });
    }

    pub fn sent_close(&mut self, statement: bool, name: &str) {
        self.unsynced = true;
        self.push(Due::Close {
            statement,
            name: name.to_owned(),
        });
    }

    pub fn sent_flush(&mut self) {
        self.unsynced = true;
    }

    pub fn sent_sync(&mut self) {
        if self.copy_in == Some(self.copy_ends_sent) {
            return; // sent in copy-in mode (after CopyInResponse): the server ignores it
        }
        self.skipping = false;
        self.unsynced = false;
        self.due.push_back(Due::Sync {
            copy_ends: self.copy_ends_sent,
        });
    }

    /// CopyDone or CopyFail: ends the COPY FROM STDIN the server is in, if any.
    pub fn sent_copy_end(&mut self) {
        self.copy_ends_sent += 1;
    }

    /// Whether pgcloak may send its catalog query now, in front of the client's next Query
    /// or Parse: the map is unknown, and the server will process a Query here as one of its
    /// own (not inside an extended-protocol batch, not while discarding until Sync).
    pub fn wants_catalog(&self, current: Generation) -> bool {
        self.catalog.wants(current)
            && !self.unsynced
            && !self.skipping
            && !self.client_uses(catalog::STATEMENT)
    }

    /// Whether the client holds, or may soon hold, a statement or portal called `name`
    /// (the catalog batch closes its own name first, so it must not be the client's).
    fn client_uses(&self, name: &str) -> bool {
        self.statements.contains_key(name)
            || self.portals.contains_key(name)
            || self.due.iter().any(|d| match d {
                Due::Parse { name: n, .. } => n == name,
                Due::Bind { portal, .. } => portal == name,
                _ => false,
            })
    }

    /// The catalog query goes out now.
    pub fn sent_catalog(&mut self, generation: Generation) {
        self.catalog.requested(generation);
        self.due.push_back(Due::Catalog);
    }

    // ---- server side: what arrived ----

    /// Takes one server message (`body` is given whenever the message is whole by then; the
    /// cloak makes sure it is for RowDescription, CommandComplete, ParameterStatus and the
    /// answer to its catalog query) and says whose answer it is.
    pub fn received(&mut self, message: Backend, body: Option<&[u8]>) -> Owner {
        if message == Backend::ParameterStatus {
            if let Some(body) = body {
                self.parameter_status(body);
            }
            return Owner::Client;
        }
        if message.is_async() {
            return Owner::Client;
        }
        if matches!(self.due.front(), Some(Due::Catalog)) {
            self.catalog_reply(message, body);
            return Owner::Catalog;
        }
        match message {
            Backend::ParseComplete => {
                if let Some(Due::Parse { name, plan }) =
                    self.pop_if(|d| matches!(d, Due::Parse { .. }))
                {
                    self.statements.insert(
                        name,
                        Statement {
                            plan,
                            columns: None,
                            maybe_gone: false,
                        },
                    );
                }
            }
            Backend::BindComplete => {
                if let Some(Due::Bind {
                    portal,
                    statement,
                    formats,
                }) = self.pop_if(|d| matches!(d, Due::Bind { .. }))
                {
                    self.portals.insert(
                        portal,
                        Portal {
                            statement,
                            formats,
                            columns: None,
                        },
                    );
                    self.start_front();
                }
            }
            Backend::CloseComplete => {
                if let Some(Due::Close { statement, name }) =
                    self.pop_if(|d| matches!(d, Due::Close { .. }))
                {
                    if statement {
                        self.statements.remove(&name);
                    } else {
                        self.portals.remove(&name);
                    }
                }
            }
            Backend::RowDescription => self.row_description(body),
            Backend::NoData => {
                self.pop_if(|d| matches!(d, Due::DescribeStatement(_) | Due::DescribePortal(_)));
            }
            Backend::CommandComplete => {
                if let Some(tag) = body {
                    self.command_complete(tag);
                }
                self.current = None;
                self.pop_if(|d| matches!(d, Due::Execute { .. }));
                self.start_front();
            }
            Backend::PortalSuspended | Backend::EmptyQueryResponse => {
                self.current = None;
                self.pop_if(|d| matches!(d, Due::Execute { .. }));
                self.start_front();
            }
            Backend::CopyInResponse => self.copy_in_started(),
            Backend::ErrorResponse => self.error(),
            Backend::ReadyForQuery => {
                self.ready();
                self.catalog.ready(body.and_then(|b| b.first().copied()));
            }
            _ => {}
        }
        Owner::Client
    }

    fn pop_if(&mut self, pred: impl Fn(&Due) -> bool) -> Option<Due> {
        if self.due.front().is_some_and(pred) {
            let due = self.due.pop_front();
            self.start_front();
            return due;
        }
        None
    }

    /// The front request's rows are described by its portal (Execute without a
    /// RowDescription in front).
    fn start_front(&mut self) {
        if let Some(Due::Execute { portal, .. }) = self.due.front() {
            let portal = self.portals.get(portal);
            self.current_formats = portal.map(|p| p.formats.clone()).unwrap_or_default();
            self.current = portal.and_then(|p| {
                p.columns.clone().or_else(|| {
                    self.statements
                        .get(&p.statement)
                        .and_then(|s| s.columns.clone())
                })
            });
        }
    }

    fn describe(&self, description: Option<&RowDescription>) -> Option<Arc<Columns>> {
        let map = self.columns()?;
        let description = description?;
        let source = |&(table, attnum): &(u32, i16)| match map.get(&(table, attnum)) {
            Some(column) => Source::Pii(column.clone()),
            None if table != 0 && attnum > 0 => Source::Plain,
            None => Source::Unknown,
        };
        Some(Arc::new(description.sources.iter().map(source).collect()))
    }

    fn row_description(&mut self, body: Option<&[u8]>) {
        let description = body.and_then(|body| RowDescription::decode(body).ok());
        let columns = self.describe(description.as_ref());
        self.described = columns.clone();
        match self.due.front() {
            Some(Due::DescribeStatement(name)) => {
                if let Some(statement) = self.statements.get_mut(name) {
                    statement.columns = columns;
                }
                self.pop_if(|_| true);
            }
            Some(Due::DescribePortal(name)) => {
                if let Some(portal) = self.portals.get_mut(name) {
                    portal.columns = columns;
                }
                self.pop_if(|_| true);
            }
            // A simple Query's result set (or an Execute's, described anew), in the
            // formats it names.
            _ => {
                self.current = columns;
                self.current_formats = Arc::new(description.map_or_else(Vec::new, |d| d.formats));
            }
        }
    }

    /// ErrorResponse: a simple Query or FunctionCall is still answered by ReadyForQuery;
    /// after an extended-protocol request the server skips everything until Sync.
    fn error(&mut self) {
        self.current = None;
        self.copy_in = None; // an error ends copy-in mode
        match self.due.front() {
            None
            | Some(Due::Sync { .. } | Due::Query { .. } | Due::FunctionCall | Due::Catalog) => {}
            Some(front) => {
                // An unnamed Parse drops the old unnamed statement before it parses.
                if matches!(front, Due::Parse { name, .. } if name.is_empty()) {
                    self.statements.remove("");
                }
                while let Some(due) = self.due.front() {
                    if matches!(due, Due::Sync { .. }) {
                        return;
                    }
                    if matches!(due, Due::Catalog) {
                        self.catalog.skipped();
                    }
                    self.due.pop_front();
                }
                self.skipping = true;
            }
        }
    }

    fn ready(&mut self) {
        self.current = None;
        // The startup's ReadyForQuery (nothing due) ends nothing.
        while let Some(due) = self.due.pop_front() {
            if due.ends_at_ready() {
                if matches!(due, Due::Query { .. }) {
                    // A simple Query ran in the unnamed statement and portal.
                    self.statements.remove("");
                    self.portals.remove("");
                }
                break;
            }
        }
        self.start_front();
    }

    fn catalog_reply(&mut self, message: Backend, body: Option<&[u8]>) {
        if self.catalog.reply(message, body) {
            self.due.pop_front();
            self.start_front();
        }
    }
}

#[cfg(test)]
mod tests;
