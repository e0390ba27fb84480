//! What a statement needs of the session before pgcloak rewrites it: text it can read
//! (UTF-8), and settings and prepared statements under which its analysis holds.

use super::ClientCloak;
use crate::cloak::access::check_writers;
use crate::cloak::{lock, SessionState};
use crate::sql::{Refusal, StatementPlan};

impl ClientCloak {
    /// Statement text pgcloak cannot read as UTF-8 (a session whose client_encoding is not
    /// UTF8, or invalid bytes): passed on untouched when it cannot concern a PII table
    /// (Postgres decodes it as usual), refused when it may, since PII values in it, in its
    /// parameters or in its results would be encrypted or returned in the wrong encoding.
    pub(super) fn check_text(&self, raw_sql: &[u8]) -> TextCheck {
        let encoding = lock(&self.state).tracker.params.foreign_encoding.clone();
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

    /// What the session must allow for a statement that touches a PII table.
    ///
    /// SQL `EXECUTE name(args)` passes its arguments as SQL values, not through Bind: refused
    /// when `name` was prepared (with Parse) with a parameter bound for a PII column. (SQL
    /// PREPARE of such a statement is refused by the analysis.)
    ///
    /// A backslash in an ordinary '...' literal is read by the server according to
    /// standard_conforming_strings, which a request still in flight may change: such a
    /// statement is analysed only while the server reported the setting on and has answered
    /// everything (otherwise what pgcloak takes for a string may not be one for Postgres).
    pub(super) fn check_session(
        &self,
        state: &SessionState,
        plan: &StatementPlan,
    ) -> Result<(), Refusal> {
        let tracker = &state.tracker;
        if plan.lexing_depends_on_scs
            && !(tracker.params.standard_conforming_strings && tracker.idle())
        {
            return Err(Refusal::unsupported(
                "this statement touches a table with encrypted columns and has a backslash in a '...' string, which Postgres reads differently when standard_conforming_strings is off; pgcloak analyses such statements only while standard_conforming_strings is on and no other request is in flight: SET standard_conforming_strings = on, send the statement on its own, or pass the value as a parameter".into(),
            ));
        }
        for name in &plan.executes {
            if let Some(slot) = tracker
                .statement(name)
                .and_then(|s| s.plan.as_ref())
                .and_then(|p| p.params.values().next())
            {
                return Err(Refusal::unsupported(format!(
                    "EXECUTE {name}(...) would pass its arguments to {} unencrypted: pgcloak encrypts a prepared statement's parameters only when they come with Bind; execute it through your driver (the extended protocol)",
                    slot.column
                )));
            }
        }
        let role = tracker.params.session_user.as_deref();
        check_writers(self.cloak.policy(), plan, role)
    }
}

/// What to do with a statement's text, before analysis.
pub(super) enum TextCheck {
    Analyse,
    PassOn,
    Refuse(Refusal),
}
