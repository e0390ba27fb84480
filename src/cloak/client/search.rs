//! Searches on a deterministic column whose values may be stored in more than one form:
//! under each configured master key until `pgcloak rotate` has re-encrypted them. A search
//! must match every form, so the statement is rewritten where the analysis says how the
//! value is compared ([`Search`]):
//!
//! - `col = 'v'` → `col = ANY('{f1,f2}'::text[])`, `col <> 'v'` → `col <> ALL(...)`;
//! - `col IN ('v', ...)`, `ARRAY['v', ...]` → one item per form;
//! - `col = $n` → `col = ANY($n::text::text[])` (the parameter stays text to the client;
//!   its value is sent as the array of forms), `col <> $n` → `ALL(...)`;
//! - `col = ANY($n)` and `= ANY('{...}')` → every form of every element.
//!
//! Everything else is refused while a column has several forms: a comparison that matches
//! one form only (`'v' = col`, `IS DISTINCT FROM`, a parameter inside `IN (...)`), and a
//! comparison of the column's values with each other (joins, GROUP BY, DISTINCT, UNION,
//! UNIQUE), where equal values would no longer have equal ciphertexts. With one form per
//! value nothing here applies and statements run as planned.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bytes::Bytes;

use super::ClientCloak;
use crate::cloak::array;
use crate::crypto::{is_envelope, Mode};
use crate::policy::ColumnId;
use crate::sql::{LiteralSlot, ParamSlot, Refusal, Search, StatementPlan};

impl ClientCloak {
    /// The parameters used only as search values, when some column may store a value in
    /// more than one form (otherwise none is rewritten, and nothing is computed).
    pub(super) fn searched_params(&self, plan: &StatementPlan) -> BTreeSet<usize> {
        if !self.any_transition() {
            return BTreeSet::new();
        }
        (param_uses(plan).into_iter())
            .filter(|(_, uses)| uses.searched && !uses.written)
            .map(|(n, _)| n)
            .collect()
    }

    /// Whether any column may now store a value in more than one form or be changing mode:
    /// without, nothing here has anything to do (checked first, for the common case).
    fn any_transition(&self) -> bool {
        let policy = self.cloak.policy();
        self.cloak.keyring.key_names().len() > 1
            || policy.has_migrating()
            || policy.has_changing_mode()
    }

    /// Whether a value of `column` may be stored in more than one form.
    fn several_forms(&self, column: &ColumnId) -> bool {
        let keyring = &self.cloak.keyring;
        let name = column.to_string();
        keyring.mode(&name) == Some(Mode::Deterministic)
            && (keyring.key_names().len() > 1 || self.cloak.policy().is_migrating(&name))
    }

    /// Why a value of `column` has several stored forms, for messages.
    fn why_forms(&self, column: &ColumnId) -> String {
        let keys = self.cloak.keyring.key_names();
        let mut reasons = Vec::new();
        if keys.len() > 1 {
            reasons.push(format!(
                "under more than one master key ({}) until `pgcloak rotate` has finished",
                keys.join(", ")
            ));
        }
        if self.cloak.policy().is_migrating(&column.to_string()) {
            reasons.push(
                "as plaintext and as envelopes (`migrating: true`) until `pgcloak encrypt` has finished"
                    .to_owned(),
            );
        }
        reasons.join(", and ")
    }

    /// Refuses a statement that compares values of a column with several forms in a way no
    /// rewrite can make match every form.
    pub(super) fn check_forms(&self, plan: &StatementPlan) -> Result<(), Refusal> {
        if !self.any_transition() {
            return Ok(());
        }
        let policy = self.cloak.policy();
        let searched_params = (plan.param_uses.iter())
            .filter(|u| u.search.is_some())
            .filter_map(|u| plan.params.get(&u.n).map(|s| &s.column));
        let searched = (plan.literals.iter())
            .filter(|s| s.search.is_some())
            .map(|s| &s.column)
            .chain(searched_params)
            .chain(plan.compared_by_ciphertext.iter());
        for column in searched {
            if policy.is_changing_mode(&column.to_string()) {
                // A value still in the old (randomized) mode matches no ciphertext.
                return Err(Refusal::unsupported(format!(
                    "{column} is changing mode (`previous_mode` in the pgcloak policy): until `pgcloak rotate` has rewritten every value in the new mode, a search or comparison on it could miss values, so it is refused; run `pgcloak rotate`, then remove `previous_mode`"
                )));
            }
        }
        if let Some(column) = plan
            .compared_by_ciphertext
            .iter()
            .find(|c| self.several_forms(c))
        {
            return Err(Refusal::unsupported(format!(
                "this statement compares values of {column} with each other (a join, GROUP BY, DISTINCT, UNION, a UNIQUE constraint, or the unique index INSERT ... ON CONFLICT consults), which cannot work while they are stored in more than one form, {}: equal values may be stored differently; run it afterwards, or compare in the application",
                self.why_forms(column)
            )));
        }
        for slot in plan
            .literals
            .iter()
            .filter(|s| self.several_forms(&s.column))
        {
            if slot.search == Some(Search::Fixed) {
                return Err(self.fixed(&slot.column));
            }
        }
        for (n, uses) in param_uses(plan) {
            let Some(slot) = plan
                .params
                .get(&n)
                .filter(|s| self.several_forms(&s.column))
            else {
                continue;
            };
            if uses.written && uses.searched {
                return Err(Refusal::unsupported(format!(
                    "${n} is both written to and searched for in {} here, and a search must match every stored form of the value while the column's values are stored {}; pass the value twice, as two parameters",
                    slot.column,
                    self.why_forms(&slot.column)
                )));
            }
            match uses.one_form {
                Some(Search::ListItem) => return Err(Refusal::unsupported(format!(
                    "a parameter inside IN (...) or ARRAY[...] can match only one stored form of {}, whose values are stored {}; pass the values as one array parameter ({} = ANY($1)) instead",
                    slot.column,
                    self.why_forms(&slot.column),
                    slot.column.column
                ))),
                Some(_) => return Err(self.fixed(&slot.column)),
                None => {}
            }
        }
        Ok(())
    }

    fn fixed(&self, column: &ColumnId) -> Refusal {
        Refusal::unsupported(format!(
            "this comparison can match only one stored form of a value of {column}, whose values are stored {}; write it as `{} = value`, `{} IN (...)` or `{} = ANY(...)`",
            self.why_forms(column),
            column.column,
            column.column,
            column.column
        ))
    }

    /// Every form a search for `value` in `column` must match, the current key's first. An
    /// envelope stays as it is (it is one stored form already).
    fn forms(
        &self,
        column: &ColumnId,
        value: &[u8],
        binary: bool,
    ) -> Result<Vec<Vec<u8>>, Refusal> {
        if is_envelope(value) {
            return Ok(vec![self.encrypt_value(column, value, binary)?.to_vec()]);
        }
        let value = &*self.canonical(column, value, binary)?;
        let text = self.column_type(column).kind() == crate::pgtype::Kind::Text;
        if text && std::str::from_utf8(value).is_err() {
            return Err(super::not_utf8(column));
        }
        let name = column.to_string();
        let mut forms: Vec<Vec<u8>> = self
            .cloak
            .keyring
            .search_ciphertexts(&name, value)
            .map(|forms| forms.into_iter().map(String::into_bytes).collect())
            .map_err(|e| Refusal {
                code: "XX000",
                message: format!("pgcloak could not encrypt the value for {column}: {e}"),
            })?;
        if self.cloak.policy().is_migrating(&name) {
            forms.push(value.to_vec()); // a row `pgcloak encrypt` has not reached yet
        }
        Ok(forms)
    }

    /// The text range a search literal whose column has several forms replaces, and its
    /// replacement; None when the literal is encrypted as planned.
    pub(super) fn search_literal(
        &self,
        slot: &LiteralSlot,
        value: &str,
    ) -> Result<Option<(Range<usize>, String)>, Refusal> {
        let Some(search) = slot.search.filter(|_| self.several_forms(&slot.column)) else {
            return Ok(None);
        };
        let quoted = |bytes: &[u8]| sql_string(&String::from_utf8_lossy(bytes));
        if slot.array {
            let forms = self.array_forms(&slot.column, value.as_bytes(), false)?;
            return Ok(Some((slot.range.clone(), quoted(&forms))));
        }
        let forms = self.forms(&slot.column, value.as_bytes(), false)?;
        let all = || quoted(&array::text_array(&forms));
        let replaced = match search {
            Search::Equal => (
                self.operand(slot.operand.as_ref(), &slot.column)?,
                format!("ANY({}::text[])", all()),
            ),
            Search::NotEqual => (
                self.operand(slot.operand.as_ref(), &slot.column)?,
                format!("ALL({}::text[])", all()),
            ),
            Search::ListItem => (
                slot.range.clone(),
                forms
                    .iter()
                    .map(|f| quoted(f))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Search::Fixed => return Err(self.fixed(&slot.column)), // check_forms refused it
        };
        Ok(Some(replaced))
    }

    /// The operand a rewrite replaces, or a refusal when the analysis could not find it.
    fn operand(
        &self,
        operand: Option<&Range<usize>>,
        column: &ColumnId,
    ) -> Result<Range<usize>, Refusal> {
        operand.cloned().ok_or_else(|| {
            Refusal::unsupported(format!(
                "pgcloak must rewrite this comparison with {column} to match every stored form of the value (its values are stored {}), and could not find where the compared value ends; write it as `{} = value` without comments or casts other than ::text",
                self.why_forms(column),
                column.column
            ))
        })
    }

    /// `$n` → `ANY($n::text::text[])` (or `ALL`) where a parameter searches a column with
    /// several forms (its value becomes the array of forms, see [`Self::search_param`]).
    pub(super) fn param_rewrites(
        &self,
        plan: &StatementPlan,
    ) -> Result<Vec<(Range<usize>, String)>, Refusal> {
        let mut rewrites = Vec::new();
        if !self.any_transition() {
            return Ok(rewrites);
        }
        for usage in &plan.param_uses {
            let Some(slot) = plan.params.get(&usage.n) else {
                continue;
            };
            if slot.array || !self.several_forms(&slot.column) {
                continue;
            }
            let quantifier = match usage.search {
                Some(Search::Equal) => "ANY",
                Some(Search::NotEqual) => "ALL",
                _ => continue, // refused by check_forms
            };
            let operand = self.operand(usage.operand.as_ref(), &slot.column)?;
            rewrites.push((operand, format!("{quantifier}(${}::text::text[])", usage.n)));
        }
        Ok(rewrites)
    }

    /// The value of a search parameter whose column has several forms: the array of forms
    /// (the statement was rewritten by [`Self::param_rewrites`]); None when it is encrypted
    /// as planned. The array's text is also its binary form as `text`.
    /// `searched`: the parameters used only as search values ([`Self::searched_params`]).
    pub(super) fn search_param(
        &self,
        searched: &BTreeSet<usize>,
        n: usize,
        slot: &ParamSlot,
        value: &[u8],
        binary: bool,
    ) -> Result<Option<Bytes>, Refusal> {
        if !searched.contains(&n) || !self.several_forms(&slot.column) {
            return Ok(None);
        }
        if slot.array {
            return self
                .array_forms(&slot.column, value, binary)
                .map(|a| Some(Bytes::from(a)));
        }
        let forms = self.forms(&slot.column, value, binary)?;
        Ok(Some(Bytes::from(array::text_array(&forms))))
    }

    /// An array compared with `= ANY(...)`, each element replaced by all its forms.
    fn array_forms(
        &self,
        column: &ColumnId,
        value: &[u8],
        binary: bool,
    ) -> Result<Vec<u8>, Refusal> {
        let forms = |element: &[u8]| self.forms(column, element, binary);
        let mapped = match binary {
            true => array::map_binary_to_many(value, self.typed_element(column), forms),
            false => array::map_text_to_many(value, forms),
        };
        match mapped {
            Ok(result) => result,
            Err(e) => Err(Refusal {
                code: "22P02",
                message: format!(
                    "the array compared with {column} cannot be encrypted by pgcloak: {}; pass a one-dimensional array of text values",
                    e.0
                ),
            }),
        }
    }
}

/// `text` as an `E'...'` string literal: read the same whatever standard_conforming_strings
/// says (a plaintext form of a `migrating` column may hold quotes and backslashes).
fn sql_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// How a statement uses one parameter bound for a PII column.
#[derive(Default)]
struct ParamUses {
    written: bool,
    searched: bool,
    /// The first search use that matches one stored form only (`Fixed`, `ListItem`).
    one_form: Option<Search>,
}

/// Each PII parameter's uses, in one pass over the plan.
fn param_uses(plan: &StatementPlan) -> BTreeMap<usize, ParamUses> {
    let mut uses: BTreeMap<usize, ParamUses> = BTreeMap::new();
    for usage in &plan.param_uses {
        let entry = uses.entry(usage.n).or_default();
        match usage.search {
            None => entry.written = true,
            Some(search) => {
                entry.searched = true;
                if matches!(search, Search::Fixed | Search::ListItem) {
                    entry.one_form.get_or_insert(search);
                }
            }
        }
    }
    uses
}
