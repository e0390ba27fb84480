//! The session tracker (src/cloak/tracker/) fed arbitrary sequences of well-framed
//! messages from both sides: the client's requests (simple and extended protocol,
//! pipelined or not, FunctionCall, COPY, pgcloak's own catalog query in front of a Query or
//! Parse when the tracker asks for it) and the server's replies, which come from a small
//! model of a PostgreSQL backend that the harness keeps independently of the tracker
//! (errors, 42P05 on a re-Parse of a live name, skipping until Sync, copy-in mode that
//! ignores Sync, the unnamed statement dropped by a simple Query but kept by the catalog's
//! named batch).
//!
//! Invariants: never panics; every server message is attributed to the request it answers
//! (the catalog's replies to pgcloak, every other reply to the client, in the order the
//! requests were sent); the tracker never expects fewer replies than the server will still
//! send (no reply is lost), and when the server has answered everything it is idle (or
//! skipping until Sync exactly when the server is); the statements it holds are those the
//! server holds; a Bind it does not call ambiguous encrypts exactly when the statement the
//! server will bind has PII parameters.
#![no_main]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pgcloak::cloak::tracker::{Generation, Owner, Tracker};

/// No DDL elsewhere, no time passing.
const G: Generation = Generation { ddl: 0, epoch: 0 };
use pgcloak::policy::ColumnId;
use pgcloak::protocol::tags::Backend;
use pgcloak::sql::{ParamSlot, StatementPlan};

/// What a statement does when it runs.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rows(u8),
    Command,
    Ddl,
    Empty,
    /// Fails when it runs (a constraint violation, say).
    Fail,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum QueryStatement {
    Run(Kind),
    CopyIn,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// `catalog`: pgcloak's catalog query goes in front when the tracker wants it
    /// (`Some(fails)`).
    Query {
        statements: Vec<QueryStatement>,
        catalog: Option<bool>,
    },
    Parse {
        name: u8,
        kind: Kind,
        pii: bool,
        fail: bool,
        catalog: Option<bool>,
    },
    Bind {
        statement: u8,
        portal: bool,
        fail: bool,
    },
    Describe {
        statement: bool,
        name: u8,
        fail: bool,
    },
    Execute {
        portal: u8,
        fail: bool,
        suspend: bool,
    },
    Close {
        statement: bool,
        name: u8,
    },
    Sync,
    Flush,
    FunctionCall {
        fail: bool,
    },
    CopyData,
    CopyDone,
    CopyFail,
    /// The server processes up to n + 1 of the messages it has received.
    Server(u8),
    /// A notice, notification or parameter status between two messages.
    Async(u8),
}

/// Statement names: "" and "s1" never COPY, "cp" always does; so a client always knows
/// whether an Execute starts a COPY (it must then send a CopyDone or CopyFail before any
/// message other than CopyData, Sync and Flush, as the protocol requires).
const STATEMENTS: [&str; 3] = ["", "s1", "cp"];
const PORTALS: [&str; 2] = ["", "p1"];

/// A statement's kind: `None` for the COPY statement.
type StatementKind = Option<Kind>;

/// A message on its way to the server.
#[derive(Debug, Clone)]
enum In {
    Query(Vec<QueryStatement>),
    Catalog {
        fail: bool,
    },
    Parse {
        name: String,
        kind: StatementKind,
        pii: bool,
        fail: bool,
    },
    Bind {
        portal: String,
        statement: String,
        fail: bool,
    },
    Describe {
        statement: bool,
        name: String,
        fail: bool,
    },
    Execute {
        portal: String,
        fail: bool,
        suspend: bool,
    },
    Close {
        statement: bool,
        name: String,
    },
    Sync,
    Flush,
    FunctionCall {
        fail: bool,
    },
    CopyData,
    CopyEnd {
        done: bool,
    },
}

impl In {
    fn extended(&self) -> bool {
        matches!(
            self,
            In::Parse { .. }
                | In::Bind { .. }
                | In::Describe { .. }
                | In::Execute { .. }
                | In::Close { .. }
                | In::Flush
        )
    }
}

/// One reply: its tag, its body, whose it is.
type Out = (u8, Vec<u8>, Owner);

#[derive(Debug, Clone)]
enum Copy {
    /// Started by a simple Query: the statements after the COPY, and whose Query it is.
    Simple(Vec<QueryStatement>, Owner),
    Extended,
}

/// A PostgreSQL backend, as far as message order goes.
#[derive(Debug, Clone, Default)]
struct Server {
    input: VecDeque<(u64, In)>,
    /// Statement name → (kind, binds a PII parameter).
    statements: HashMap<String, (StatementKind, bool)>,
    portals: HashMap<String, StatementKind>,
    /// Discarding messages until Sync (after an error in an extended-protocol message).
    discard: bool,
    copy: Option<Copy>,
    /// Replies that end a request: each request that gets a reply gets exactly one.
    terminals: usize,
    /// A Bind processed: (its id, it succeeded, the statement binds a PII parameter).
    binds: Vec<(u64, bool, bool)>,
}

const ERROR: &[u8] = b"SERROR\0C42000\0Mfailed\0\0";

impl Server {
    fn error(&mut self, out: &mut Vec<Out>, extended: bool, owner: Owner) {
        out.push((b'E', ERROR.to_vec(), owner));
        self.discard |= extended;
    }

    fn end(&mut self, out: &mut Vec<Out>, tag: u8, body: &[u8], owner: Owner) {
        out.push((tag, body.to_vec(), owner));
        self.terminals += 1;
    }

    fn ready(&mut self, out: &mut Vec<Out>, owner: Owner) {
        self.portals.clear(); // the implicit transaction ends
        self.end(out, b'Z', b"I", owner);
    }

    /// Runs a simple Query's statements from `statements`; false when it stopped in COPY.
    fn run(&mut self, statements: &[QueryStatement], out: &mut Vec<Out>, owner: Owner) -> bool {
        for (i, statement) in statements.iter().enumerate() {
            match statement {
                QueryStatement::CopyIn => {
                    out.push((b'G', b"\0\0\0".to_vec(), owner));
                    self.copy = Some(Copy::Simple(statements[i + 1..].to_vec(), owner));
                    return false;
                }
                QueryStatement::Run(Kind::Fail) => {
                    out.push((b'E', ERROR.to_vec(), owner));
                    return true;
                }
                QueryStatement::Run(kind) => self.rows(*kind, false, out, owner, false),
            }
        }
        true
    }

    /// A statement's result: rows and CommandComplete (no terminal count for a Query's).
    fn rows(&mut self, kind: Kind, suspend: bool, out: &mut Vec<Out>, owner: Owner, execute: bool) {
        if !execute && kind == Kind::Empty {
            return; // an empty statement among others produces nothing
        }
        let (tag, body): (u8, &[u8]) = match kind {
            Kind::Rows(n) => {
                if !execute {
                    out.push((b'T', b"\0\0".to_vec(), owner));
                }
                for _ in 0..n % 3 {
                    out.push((b'D', b"\0\0".to_vec(), owner));
                }
                match suspend && execute {
                    true => (b's', b""),
                    false => (b'C', b"SELECT 1\0"),
                }
            }
            Kind::Command => (b'C', b"INSERT 0 1\0"),
            Kind::Ddl => (b'C', b"CREATE TABLE\0"),
            Kind::Empty => (b'I', b""),
            Kind::Fail => unreachable!(),
        };
        out.push((tag, body.to_vec(), owner));
        if execute {
            self.terminals += 1;
        }
    }

    /// Processes the next message; None when there is none.
    fn step(&mut self) -> Option<Vec<Out>> {
        let (id, message) = self.input.pop_front()?;
        let mut out = Vec::new();
        let client = Owner::Client;
        if let Some(copy) = self.copy.clone() {
            match message {
                In::CopyData | In::Sync | In::Flush => {}
                In::CopyEnd { done } => {
                    self.copy = None;
                    match (copy, done) {
                        (Copy::Simple(rest, owner), true) => {
                            out.push((b'C', b"COPY 1\0".to_vec(), owner));
                            self.run(&rest, &mut out, owner);
                            if self.copy.is_none() {
                                self.ready(&mut out, owner);
                            }
                        }
                        (Copy::Simple(_, owner), false) => {
                            out.push((b'E', ERROR.to_vec(), owner));
                            self.ready(&mut out, owner);
                        }
                        (Copy::Extended, true) => self.end(&mut out, b'C', b"COPY 1\0", client),
                        (Copy::Extended, false) => {
                            self.terminals += 1;
                            self.error(&mut out, true, client);
                        }
                    }
                }
                other => panic!("harness bug: {other:?} sent during COPY"),
            }
            return Some(out);
        }
        if self.discard {
            if matches!(message, In::Sync) {
                self.discard = false;
                self.ready(&mut out, client);
            }
            return Some(out);
        }
        let extended = message.extended();
        match message {
            In::Query(statements) => {
                self.statements.remove("");
                self.portals.remove("");
                if statements.is_empty() {
                    out.push((b'I', Vec::new(), client));
                    self.ready(&mut out, client);
                } else if self.run(&statements, &mut out, client) {
                    self.ready(&mut out, client);
                }
            }
            In::Catalog { fail } => {
                // Close, Close, Parse, Bind, Execute, Close, Close, Sync under a name of
                // its own: the client's unnamed statement and portal stay.
                let owner = Owner::Catalog;
                out.push((b'3', Vec::new(), owner));
                out.push((b'3', Vec::new(), owner));
                if fail {
                    out.push((b'E', ERROR.to_vec(), owner));
                } else {
                    out.push((b'1', Vec::new(), owner));
                    out.push((b'2', Vec::new(), owner));
                    out.push((b'D', b"\0\0".to_vec(), owner));
                    out.push((b'C', b"SELECT 1\0".to_vec(), owner));
                    out.push((b'3', Vec::new(), owner));
                    out.push((b'3', Vec::new(), owner));
                }
                self.ready(&mut out, owner);
            }
            In::Parse {
                name,
                kind,
                pii,
                fail,
            } => {
                if name.is_empty() {
                    self.statements.remove(""); // before parsing, even if parsing fails
                }
                if fail || self.statements.contains_key(&name) {
                    self.terminals += 1;
                    self.error(&mut out, extended, client); // 42P05 for a live name
                } else {
                    self.statements.insert(name, (kind, pii));
                    self.end(&mut out, b'1', b"", client);
                }
            }
            In::Bind {
                portal,
                statement,
                fail,
            } => {
                let found = self.statements.get(&statement).copied();
                let in_use = !portal.is_empty() && self.portals.contains_key(&portal);
                let ok = found.is_some() && !fail && !in_use;
                self.binds.push((id, ok, found.is_some_and(|(_, pii)| pii)));
                match found {
                    Some((kind, _)) if ok => {
                        self.portals.insert(portal, kind);
                        self.end(&mut out, b'2', b"", client);
                    }
                    _ => {
                        self.terminals += 1;
                        self.error(&mut out, extended, client);
                    }
                }
            }
            In::Describe {
                statement,
                name,
                fail,
            } => {
                let kind = match statement {
                    true => self.statements.get(&name).map(|(kind, _)| *kind),
                    false => self.portals.get(&name).copied(),
                };
                match kind {
                    Some(kind) if !fail => {
                        if statement {
                            out.push((b't', b"\0\0".to_vec(), client));
                        }
                        let rows = matches!(kind, Some(Kind::Rows(_)));
                        match rows {
                            true => self.end(&mut out, b'T', b"\0\0", client),
                            false => self.end(&mut out, b'n', b"", client),
                        }
                    }
                    _ => {
                        self.terminals += 1;
                        self.error(&mut out, extended, client);
                    }
                }
            }
            In::Execute {
                portal,
                fail,
                suspend,
            } => match self.portals.get(&portal).copied() {
                None | Some(Some(Kind::Fail)) => {
                    self.terminals += 1;
                    self.error(&mut out, extended, client);
                }
                Some(Some(kind)) => {
                    if fail {
                        if let Kind::Rows(n) = kind {
                            for _ in 0..n % 2 {
                                out.push((b'D', b"\0\0".to_vec(), client));
                            }
                        }
                        self.terminals += 1;
                        self.error(&mut out, extended, client);
                    } else {
                        self.rows(kind, suspend, &mut out, client, true);
                    }
                }
                Some(None) if fail => {
                    self.terminals += 1;
                    self.error(&mut out, extended, client);
                }
                Some(None) => {
                    out.push((b'G', b"\0\0\0".to_vec(), client));
                    self.copy = Some(Copy::Extended);
                }
            },
            In::Close { statement, name } => {
                match statement {
                    true => self.statements.remove(&name).is_some(),
                    false => self.portals.remove(&name).is_some(),
                };
                self.end(&mut out, b'3', b"", client);
            }
            In::Sync => self.ready(&mut out, client),
            In::Flush | In::CopyData | In::CopyEnd { .. } => {}
            In::FunctionCall { fail } => {
                match fail {
                    true => out.push((b'E', ERROR.to_vec(), client)),
                    false => out.push((b'V', b"\0\0\0\x01x".to_vec(), client)),
                }
                self.ready(&mut out, client);
            }
        }
        Some(out)
    }

    /// Replies that end a request, still to come for what the server has received
    /// (a COPY waiting for its end counts as one).
    fn terminals_to_come(&self) -> usize {
        let mut dry = self.clone();
        let before = dry.terminals;
        while dry.step().is_some() {}
        dry.terminals - before + usize::from(dry.copy.is_some())
    }
}

fn pii_plan() -> Arc<StatementPlan> {
    let column = ColumnId {
        schema: "public".into(),
        table: "users".into(),
        column: "email".into(),
    };
    let mut params = BTreeMap::new();
    params.insert(
        1,
        ParamSlot {
            column: Arc::new(column),
            array: false,
            declared: None,
        },
    );
    Arc::new(StatementPlan {
        params,
        ..StatementPlan::default()
    })
}

struct Session {
    tracker: Tracker,
    server: Server,
    next_id: u64,
    /// COPYs the client started and has not ended with CopyDone/CopyFail yet (a Query may
    /// hold several).
    copy_pending: usize,
    pii: Arc<StatementPlan>,
}

impl Session {
    fn send(&mut self, message: In) {
        let t = &mut self.tracker;
        let mut bind_answer = None;
        match &message {
            In::Query(statements) => {
                t.sent_query();
                let copies = statements
                    .iter()
                    .filter(|s| matches!(s, QueryStatement::CopyIn));
                self.copy_pending += copies.count();
            }
            In::Catalog { .. } => t.sent_catalog(G),
            In::Parse { name, pii, .. } => t.sent_parse(name, pii.then(|| self.pii.clone())),
            In::Bind {
                portal, statement, ..
            } => {
                bind_answer = Some(t.bind_params(statement).ok());
                t.sent_bind(portal, statement);
            }
            In::Describe {
                statement, name, ..
            } => t.sent_describe(*statement, name),
            In::Execute { portal, .. } => {
                t.sent_execute(portal);
                if portal == "cp" {
                    self.copy_pending += 1;
                }
            }
            In::Close { statement, name } => t.sent_close(*statement, name),
            In::Sync => t.sent_sync(),
            In::Flush => t.sent_flush(),
            In::FunctionCall { .. } => t.sent_function_call(),
            In::CopyData => {}
            In::CopyEnd { .. } => {
                t.sent_copy_end();
                self.copy_pending = self.copy_pending.saturating_sub(1);
            }
        }
        self.next_id += 1;
        self.server.input.push_back((self.next_id, message));
        if let Some(answer) = bind_answer {
            self.check_bind(self.next_id, answer);
        }
    }

    /// The tracker's answer for Bind `id`, against the statement the server binds.
    fn check_bind(&self, id: u64, answer: Option<Option<Arc<StatementPlan>>>) {
        let Some(plan) = answer else {
            return; // ambiguous: the cloak refuses the Bind
        };
        let encrypts = plan.is_some_and(|p| !p.params.is_empty());
        let mut dry = self.server.clone();
        loop {
            if let Some(&(_, ok, pii)) = dry.binds.iter().find(|b| b.0 == id) {
                // A Bind the server rejects uses no value.
                assert!(
                    !ok || encrypts == pii,
                    "Bind encrypts: {encrypts}, statement binds PII: {pii}"
                );
                return;
            }
            if dry.step().is_none() {
                return; // discarded after an error
            }
        }
    }

    /// A client request; non-COPY messages wait for the COPY the client started to end.
    fn client(&mut self, message: In) {
        let copy_message = matches!(
            message,
            In::CopyData | In::CopyEnd { .. } | In::Sync | In::Flush
        );
        while self.copy_pending > 0 && !copy_message {
            self.send(In::CopyEnd { done: true });
        }
        self.send(message);
    }

    fn catalog(&mut self, catalog: Option<bool>) {
        if let Some(fail) = catalog {
            if self.tracker.wants_catalog(G) && self.copy_pending == 0 {
                self.send(In::Catalog { fail });
            }
        }
    }

    fn deliver(&mut self, out: Vec<Out>) {
        for (tag, body, owner) in out {
            let message = Backend::from_tag(tag);
            let got = self.tracker.received(message, Some(&body));
            assert_eq!(got, owner, "{message:?} attributed to the wrong requester");
        }
    }

    fn check(&self) {
        let to_come = self.server.terminals_to_come();
        assert!(
            self.tracker.replies_due() >= to_come,
            "a reply would be lost: tracker expects {}, server will send {to_come}",
            self.tracker.replies_due()
        );
        if self.server.input.is_empty() && self.server.copy.is_none() {
            assert_eq!(
                self.tracker.skipping(),
                self.server.discard,
                "skipping until Sync"
            );
            assert_eq!(
                self.tracker.replies_due(),
                0,
                "replies expected that will never come"
            );
            for name in STATEMENTS {
                assert_eq!(
                    self.tracker.statement(name).is_some(),
                    self.server.statements.contains_key(name),
                    "statement {name:?}"
                );
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut s = Session {
        tracker: Tracker::default(),
        server: Server::default(),
        next_id: 0,
        copy_pending: 0,
        pii: pii_plan(),
    };
    s.tracker.received(Backend::ReadyForQuery, Some(b"I")); // the startup's
    for op in ops.into_iter().take(200) {
        match op {
            Op::Query {
                statements,
                catalog,
            } => {
                s.catalog(catalog);
                s.client(In::Query(statements.into_iter().take(3).collect()));
            }
            Op::Parse {
                name,
                kind,
                pii,
                fail,
                catalog,
            } => {
                s.catalog(catalog);
                let name = STATEMENTS[name as usize % 3].to_owned();
                let kind = (name != "cp").then_some(kind);
                s.client(In::Parse {
                    name,
                    kind,
                    pii,
                    fail,
                });
            }
            Op::Bind {
                statement,
                portal,
                fail,
            } => {
                let statement = STATEMENTS[statement as usize % 3].to_owned();
                let portal = match statement.as_str() {
                    "cp" => "cp".to_owned(),
                    _ => PORTALS[usize::from(portal)].to_owned(),
                };
                s.client(In::Bind {
                    portal,
                    statement,
                    fail,
                });
            }
            Op::Describe {
                statement,
                name,
                fail,
            } => {
                let name = match statement {
                    true => STATEMENTS[name as usize % 3],
                    false => ["", "p1", "cp"][name as usize % 3],
                };
                s.client(In::Describe {
                    statement,
                    name: name.to_owned(),
                    fail,
                });
            }
            Op::Execute {
                portal,
                fail,
                suspend,
            } => {
                let portal = ["", "p1", "cp"][portal as usize % 3].to_owned();
                s.client(In::Execute {
                    portal,
                    fail,
                    suspend,
                });
            }
            Op::Close { statement, name } => {
                let name = match statement {
                    true => STATEMENTS[name as usize % 3],
                    false => ["", "p1", "cp"][name as usize % 3],
                };
                s.client(In::Close {
                    statement,
                    name: name.to_owned(),
                });
            }
            Op::Sync => s.client(In::Sync),
            Op::Flush => s.client(In::Flush),
            Op::FunctionCall { fail } => s.client(In::FunctionCall { fail }),
            Op::CopyData => s.client(In::CopyData),
            Op::CopyDone => s.client(In::CopyEnd { done: true }),
            Op::CopyFail => s.client(In::CopyEnd { done: false }),
            Op::Server(n) => {
                for _ in 0..=n % 8 {
                    let Some(out) = s.server.step() else { break };
                    s.deliver(out);
                }
            }
            Op::Async(which) => {
                let (tag, body): (u8, &[u8]) = match which % 4 {
                    0 => (b'N', b"SNOTICE\0C00000\0Mnote\0\0"),
                    1 => (b'A', b"\0\0\0\x01chan\0payload\0"),
                    2 => (b'S', b"standard_conforming_strings\0off\0"),
                    _ => (b'S', b"client_encoding\0UTF8\0"),
                };
                s.deliver(vec![(tag, body.to_vec(), Owner::Client)]);
            }
        }
        s.check();
    }
    // The client ends its COPY, if any; the server answers everything.
    while s.copy_pending > 0 {
        s.send(In::CopyEnd { done: true });
    }
    while let Some(out) = s.server.step() {
        s.deliver(out);
        s.check();
    }
    s.check();
});
