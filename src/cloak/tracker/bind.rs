//! Which statement a Bind sent now will run: the requests still due may re-Parse or Close
//! its name, and the server has not said yet whether they succeed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Due, Tracker};
use crate::sql::{ParamSlot, StatementPlan};

impl Tracker {
    /// What a Bind of `statement` sent now will run, as far as encryption is concerned:
    /// `Ok(params)` when every outcome of the requests still due leads to the same PII
    /// parameters (or to an error of the server's), `Err(())` when they differ (a re-Parse
    /// of a live name, or a Close, whose fate the server has not told yet).
    pub fn bind_params(
        &self,
        statement: &str,
    ) -> Result<Option<Arc<StatementPlan>>, AmbiguousStatement> {
        let unnamed = statement.is_empty();
        let redefines = |due: &Due| match due {
            Due::Parse { name, .. } => name == statement,
            Due::Close {
                statement: true,
                name,
            } => name == statement,
            Due::Query { .. } => unnamed,
            _ => false,
        };
        // The usual case: nothing still due may change what the name means, so the Bind
        // runs what the server holds now (or fails, using no value). This is what the walk
        // below gives when it finds no such request.
        if !self.due.iter().any(redefines) {
            return Ok(self.statements.get(statement).and_then(|s| s.plan.clone()));
        }
        // What the server may hold under this name when it reaches the Bind (None: nothing).
        let mut candidates: Vec<Candidate> = match self.statements.get(statement) {
            Some(s) if s.maybe_gone => vec![Some(s.plan.clone()), None],
            Some(s) => vec![Some(s.plan.clone())],
            None => vec![None],
        };
        let last_sync = self.due.iter().rposition(|d| matches!(d, Due::Sync { .. }));
        let mut earlier_in_batch = false;
        for (i, due) in self.due.iter().enumerate() {
            // A request after another in its batch is skipped if that one fails.
            let may_skip =
                std::mem::replace(&mut earlier_in_batch, !matches!(due, Due::Sync { .. }));
            let outcome: Candidate = match due {
                Due::Parse { name, plan } if name == statement => Some(plan.clone()),
                Due::Close {
                    statement: true,
                    name,
                } if name == statement => None,
                // A simple Query drops the unnamed statement (the catalog's runs in a named
                // one).
                Due::Query { .. } if unnamed => None,
                _ => continue,
            };
            let parse = matches!(due, Due::Parse { .. });
            // In the Bind's own batch every earlier request succeeded, or the server skips
            // the Bind as well.
            if last_sync.is_none_or(|s| i > s) {
                candidates = vec![outcome];
                continue;
            }
            let mut next = Vec::new();
            for candidate in candidates {
                if parse && !unnamed && candidate.is_some() {
                    add(&mut next, candidate); // 42P05: the name is in use, the old one stays
                    continue;
                }
                add(&mut next, outcome.clone());
                if parse {
                    add(&mut next, None); // the Parse failed
                }
                if may_skip {
                    add(&mut next, candidate); // skipped after an earlier error
                }
            }
            candidates = next;
        }
        // A name the server will not hold fails the Bind, which then uses no value.
        let mut plans = candidates.into_iter().flatten();
        let Some(first) = plans.next() else {
            return Ok(None);
        };
        match plans.all(|other| params_of(&other) == params_of(&first)) {
            true => Ok(first),
            false => Err(AmbiguousStatement),
        }
    }
}

/// The statement a Bind names may be one of several whose PII parameters differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousStatement;

/// What the server may hold under a statement name: nothing, or a statement and its plan.
type Candidate = Option<Option<Arc<StatementPlan>>>;

/// The PII parameters of a plan: all that matters to a Bind.
fn params_of(plan: &Option<Arc<StatementPlan>>) -> Option<&BTreeMap<usize, ParamSlot>> {
    plan.as_ref().map(|p| &p.params).filter(|p| !p.is_empty())
}

/// Adds a candidate unless an equivalent one is there (keeps the set small in pipelines).
fn add(set: &mut Vec<Candidate>, candidate: Candidate) {
    let same = |other: &Candidate| match (other, &candidate) {
        (None, None) => true,
        (Some(a), Some(b)) => params_of(a) == params_of(b),
        _ => false,
    };
    if !set.iter().any(same) {
        set.push(candidate);
    }
}
