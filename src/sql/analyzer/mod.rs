//! The walk over one parsed statement. Uses of PII columns that work on ciphertext are
//! recognised in the places they may occur (projections, `=`/`IN`/`IS NULL` predicates,
//! GROUP BY on deterministic columns, INSERT/UPDATE values, COPY), and each recognised
//! reference is recorded. Afterwards every PII reference anywhere in the statement must have
//! been recognised: anything else (a function, LIKE, a range, ORDER BY, a construct this
//! walk does not know) is refused. Unknown means refused, never passed on.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::Spanned;
use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, CopyLegacyCsvOption, CopyLegacyOption, CopyOption,
    CopySource, CopyTarget, Delete, Expr, FromTable, InTarget, Insert, OnConflictAction, OnInsert,
    Query, SelectItem, SetExpr, Statement, TableAlias, TableFactor, TableObject, Update, Visit,
    Visitor,
};
use sqlparser::tokenizer::Span;

use super::kinds::{self, Kind};
use super::levels::{self, Level, Output, Outputs, Relation, Resolved};
use super::names::{
    configured_table, name_parts, named_table, normalize, PiiColumn, Scope, TableKey,
};
use super::queries::output_name;
use super::splice::LineIndex;
use super::{
    Analysis, CopyFormat, CopyInPlan, CopyOptions, CopyOutFields, LiteralKind, LiteralSlot,
    ParamSlot, ParamUse, Refusal, Search, StatementPlan,
};
use crate::crypto::Mode;

use crate::policy::{ColumnId, Policy};
pub(super) use predicates::array_constructor_cast;
pub(super) use recording::{foreign_cast_refusal, Place};
pub(super) use values::{
    bound, bound_for, foreign_cast, is_typed, seen_cast, strip, strip_for, Bound, SeenCast,
};
use values::{placeholder, MAX_PARAMS};

mod copy;
mod predicates;
mod recording;
mod values;
mod writes;

pub(super) type Result<T = ()> = std::result::Result<T, Refusal>;

/// Where a column reference stands in the SQL text: (line, column) of its start and end.
type SpanKey = (u64, u64, u64, u64);

fn span_key(expr: &Expr) -> SpanKey {
    span_of(expr.span())
}

fn span_of(span: Span) -> SpanKey {
    (
        span.start.line,
        span.start.column,
        span.end.line,
        span.end.column,
    )
}

pub(super) fn analyze_statements(sql: &str, statements: &[Statement], policy: &Policy) -> Analysis {
    let index = LineIndex::new(sql);
    let mut plan = StatementPlan {
        lexing_depends_on_scs: super::lexing::depends_on_scs(sql),
        ..StatementPlan::default()
    };
    if plan.lexing_depends_on_scs && statements.len() > 1 {
        return Analysis::Refused(super::lexing::multi_statement_refusal());
    }
    let mut touched = false;
    // COPY ... FROM STDIN / TO STDOUT statements of any table: the session follows one COPY
    // of each direction per query string.
    let (mut copies_in, mut copies_out) = (0, 0);
    for statement in statements {
        match statement {
            Statement::Copy {
                to: false,
                target: CopyTarget::Stdin,
                ..
            } => copies_in += 1,
            Statement::Copy {
                to: true,
                target: CopyTarget::Stdout,
                ..
            } => copies_out += 1,
            Statement::Execute {
                name: Some(name),
                parameters,
                using,
                ..
            } if !(parameters.is_empty() && using.is_empty()) => {
                touched = true;
                plan.executes.push(name_parts(name).join("."));
                continue;
            }
            // Code that runs inside the server: refused when it names a PII table or builds
            // SQL at run time (EXECUTE), which could name one unseen.
            Statement::CreateFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateRule(_)
                if policy.may_touch(&statement.to_string()) =>
            {
                return Analysis::Refused(Refusal::unsupported(
                    "this function, procedure or rule names a table with encrypted columns or runs dynamic SQL (EXECUTE), and pgcloak cannot check or encrypt what runs inside it: values it writes would be stored in clear; write PII through plain statements, or create it on a connection that bypasses pgcloak after checking that it handles no PII values".into(),
                ));
            }
            _ => {}
        }
        let scope = Scope::of(statement, policy);
        if scope.is_empty() {
            // A kind the walk does not model may name a table outside the places the
            // parser marks as relations (`CREATE TRIGGER ... ON users`).
            let kind = kinds::kind(statement);
            if kind == Kind::Modelled {
                continue; // the table name occurred in the text, but not as a table
            }
            let Some(table) = named_table(&statement.to_string(), policy) else {
                continue;
            };
            if kind == Kind::NotModelled {
                return Analysis::Refused(not_modelled(statement, &table));
            }
            touched = true;
            plan.changes_schema = true;
            continue;
        }
        touched = true;
        let mut walk = Walk {
            policy,
            index: &index,
            scope,
            plan: &mut plan,
            recognised: HashSet::new(),
            bound_params: HashSet::new(),
            levels: Vec::new(),
            ctes: Vec::new(),
            cte_aliases: Vec::new(),
            cleared: RefCell::default(),
            deferred: RefCell::default(),
            compared: RefCell::default(),
        };
        let outcome = walk
            .statement(statement)
            .and_then(|()| walk.deferred.take().map_or(Ok(()), Err))
            .and_then(|()| walk.check_all_recognised(statement));
        if let Err(refusal) = outcome {
            return Analysis::Refused(refusal);
        }
        for column in walk.compared.take() {
            let column = plan.intern(&column);
            if !plan.compared_by_ciphertext.contains(&column) {
                plan.compared_by_ciphertext.push(column);
            }
        }
    }
    if !touched && !plan.lexing_depends_on_scs {
        return Analysis::Plain;
    }
    if (plan.copy_in.is_some() && copies_in > 1) || (plan.copy_out.is_some() && copies_out > 1) {
        return Analysis::Refused(Refusal::unsupported(
            "a COPY of a table with encrypted columns must be the only COPY in its query string, so that pgcloak knows which data is whose; send each COPY as a query of its own".into(),
        ));
    }
    plan.literals.sort_by_key(|slot| slot.range.start);
    plan.casts.sort_by_key(|range| (range.start, range.end));
    plan.casts.dedup();
    if let Some(refusal) = overlapping_casts(&plan) {
        return Analysis::Refused(refusal);
    }
    Analysis::Plan(Arc::new(plan))
}

/// The rewrite replaces each cast's type name and each literal: they must not overlap
/// (they cannot when the walk located them right; this keeps a mistake from garbling SQL).
fn overlapping_casts(plan: &StatementPlan) -> Option<Refusal> {
    // Both lists are sorted: one merged pass, linear in a bulk INSERT's thousands of slots.
    let mut ranges: Vec<&std::ops::Range<usize>> = plan
        .literals
        .iter()
        .map(|slot| &slot.range)
        .chain(&plan.casts)
        .collect();
    ranges.sort_by_key(|range| range.start);
    let overlap = ranges.windows(2).any(|w| w[0].end > w[1].start);
    overlap.then(|| {
        Refusal::unsupported(
            "pgcloak could not tell apart the casts and values bound for encrypted columns in this statement; write each cast as value::type, or bind the values as parameters".into(),
        )
    })
}

pub(super) struct Walk<'a> {
    pub(super) policy: &'a Policy,
    index: &'a LineIndex<'a>,
    pub(super) scope: Scope,
    plan: &'a mut StatementPlan,
    /// PII references seen in a place where they work on ciphertext, by their place in
    /// the SQL text (which, unlike a node's address, survives cloning a subquery).
    recognised: HashSet<SpanKey>,
    /// Occurrences of parameters bound for a PII column: every other occurrence of such a
    /// parameter would receive its ciphertext where the plaintext was meant.
    bound_params: HashSet<SpanKey>,
    /// The FROM lists the walk is inside, innermost last.
    pub(super) levels: Vec<Level>,
    /// The CTEs in reach, innermost last, with their outputs (None inside their own query).
    pub(super) ctes: Vec<(String, Option<Outputs>)>,
    /// (CTE, alias) of references to a CTE inside its own recursive query.
    pub(super) cte_aliases: Vec<(String, String)>,
    /// References the statement-wide scope takes for PII columns that the FROM lists show to
    /// be plain columns (`orders.email` in a subquery of a statement that also reads users).
    cleared: RefCell<HashSet<SpanKey>>,
    /// A refusal found while resolving a name (ambiguous, or a mixed UNION column), raised
    /// when the walk ends.
    deferred: RefCell<Option<Refusal>>,
    /// See [`Walk::compared_by_ciphertext`]; moved into the plan when the walk ends.
    compared: RefCell<Vec<ColumnId>>,
}

impl<'a> Walk<'a> {
    pub(super) fn statement(&mut self, statement: &Statement) -> Result {
        match kinds::kind(statement) {
            Kind::Modelled => {}
            // It may name a PII table but not use its columns: any column reference in it
            // is refused by the final check.
            Kind::NamesOnly => {
                self.plan.changes_schema = true;
                return Ok(());
            }
            Kind::NotModelled => return Err(self.not_modelled(statement)),
        }
        match statement {
            Statement::Query(query) => self.query(query).map(drop),
            Statement::Insert(insert) => self.insert(insert).map(drop),
            Statement::Update(update) => self.update(update).map(drop),
            Statement::Delete(delete) => self.delete(delete).map(drop),
            Statement::Merge(merge) => self.merge(merge).map(drop),
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => self.copy(source, *to, target, options, legacy_options),
            Statement::Explain { statement, .. } => self.statement(statement),
            // DECLARE ... CURSOR FOR <query> (psycopg's named cursors, SQLAlchemy's
            // stream_results): FETCH returns the query's rows, decrypted like any result.
            Statement::Declare { stmts, .. } => {
                for declare in stmts {
                    if let Some(query) = &declare.for_query {
                        self.query(query)?;
                    }
                }
                Ok(())
            }
            Statement::Prepare { statement, .. } => {
                self.statement(statement)?;
                match self.plan.params.values().next() {
                    Some(slot) => Err(Refusal::unsupported(format!(
                        "PREPARE of a statement with a parameter bound for {} cannot work: pgcloak cannot encrypt the values EXECUTE passes; use your driver's prepared statements (the extended protocol) or put the values in the statement",
                        slot.column
                    ))),
                    None => Ok(()),
                }
            }
            Statement::CreateTable(create) => {
                self.plan.changes_schema = true;
                self.create_table(create)
            }
            Statement::CreateView(view) => {
                self.plan.changes_schema = true;
                self.create_view(view)
            }
            Statement::CreateIndex(index) => {
                self.plan.changes_schema = true;
                self.create_index(index)
            }
            Statement::AlterTable(alter) => {
                self.plan.changes_schema = true;
                self.alter_table(alter)
            }
            // A kind the allowlist calls modelled that this walk does not dispatch (and SQL
            // EXECUTE, whose arguments the session checks): fail closed.
            Statement::Execute { .. } => Ok(()),
            _ => Err(self.not_modelled(statement)),
        }
    }

    fn not_modelled(&self, statement: &Statement) -> Refusal {
        let table = self
            .scope
            .first_table()
            .or_else(|| named_table(&statement.to_string(), self.policy));
        match table {
            Some(table) => not_modelled(statement, &table),
            None => Refusal::unsupported(format!(
                "pgcloak does not model {} statements, and this one involves a table whose columns pgcloak encrypts; run it on a connection that bypasses pgcloak after checking that it handles no PII values",
                kinds::label(statement)
            )),
        }
    }

    /// Records `expr` as a PII reference used where ciphertext works; false if it is none.
    pub(super) fn recognise(&mut self, expr: &Expr) -> bool {
        let inner = strip(expr);
        if self.pii(inner).is_some() {
            self.recognised.insert(span_key(inner));
            true
        } else {
            false
        }
    }

    /// An expression not otherwise understood: its own PII references stay unrecognised
    /// (and so are refused), but subqueries inside it are analysed in full. A subquery in
    /// it may not select a PII column (other than under EXISTS): whatever the expression does
    /// with the value, it would do it to ciphertext.
    pub(super) fn other(&mut self, expr: &Expr) -> Result {
        let mut finder = TopLevelQueries::default();
        let _ = expr.visit(&mut finder);
        for reference in &finder.references {
            self.pii(reference); // clears plain columns, defers ambiguous ones
        }
        for (query, under_exists) in finder.found {
            let outputs = self.query(&query)?;
            if let (false, Some(column)) = (under_exists, outputs.first_pii()) {
                return Err(Refusal::unsupported(format!(
                    "a subquery selecting {}, encrypted by pgcloak, is used inside an expression, which would work on its ciphertext; select the column itself, or compute in the application",
                    column.id
                )));
            }
        }
        Ok(())
    }

    /// The PII column `expr` names (through casts to text and parentheses): by the FROM
    /// lists around it where they tell, else by the statement-wide scope.
    pub(super) fn pii(&self, expr: &Expr) -> Option<PiiColumn> {
        let inner = strip(expr);
        if let Some((qualifier, column)) = reference(inner) {
            let resolved =
                levels::resolve(&self.levels, self.policy, qualifier.as_deref(), &column);
            match resolved {
                Resolved::Pii(found) => return Some(found),
                Resolved::Plain => {
                    self.cleared.borrow_mut().insert(span_key(inner));
                    return None;
                }
                Resolved::Ambiguous(found) => {
                    self.defer(format!(
                        "{inner} may be a column of a table in this subquery or {} further out, which pgcloak encrypts; qualify it with its table name or alias",
                        found.id
                    ));
                    return Some(found);
                }
                Resolved::Mixed(found) => {
                    self.defer(format!(
                        "{inner} mixes values of {} (encrypted by pgcloak) with other values from a UNION ALL; select from each branch's table directly",
                        found.id
                    ));
                    return Some(found);
                }
                Resolved::Unknown => {}
            }
        }
        let mut found = self.scope.resolve(inner, self.policy);
        // Several configured tables with this column: treat it as the first; the final
        // check still requires every reference to be recognised.
        (!found.is_empty()).then(|| found.swap_remove(0))
    }

    pub(super) fn column(&self, table: &(String, String), column: &str) -> Option<PiiColumn> {
        let mode = *self
            .policy
            .table(Some(&table.0), &table.1)?
            .columns
            .get(column)?;
        Some(PiiColumn {
            id: ColumnId {
                schema: table.0.clone(),
                table: table.1.clone(),
                column: column.to_owned(),
            },
            mode,
        })
    }

    fn defer(&self, message: String) {
        let mut deferred = self.deferred.borrow_mut();
        if deferred.is_none() {
            *deferred = Some(Refusal::unsupported(message));
        }
    }

    /// Whether two PII columns are encrypted with the same key (one column, or `same_key_as`).
    pub(super) fn same_key(&self, a: &PiiColumn, b: &PiiColumn) -> bool {
        self.policy.key_of(&a.id) == self.policy.key_of(&b.id)
    }

    /// Every PII reference in the statement must have been recognised.
    fn check_all_recognised(&self, statement: &Statement) -> Result {
        let mut check = Unrecognised {
            walk: self,
            found: None,
        };
        let _ = statement.visit(&mut check);
        match check.found {
            None => Ok(()),
            Some(Found::Column(id)) => Err(Refusal::unsupported(format!(
                "{id} is encrypted by pgcloak: it can be selected, tested with IS NULL, and (in deterministic mode) compared with = or IN against literals or parameters, grouped and counted; functions, LIKE, ranges, sorting and arithmetic on it cannot work on ciphertext, so do them in the application"
            ))),
            Some(Found::Param(n, column)) => Err(param_reused(n, &column)),
            Some(Found::WholeRow(name)) => Err(Refusal::unsupported(format!(
                "a whole-row reference to {name} would carry its encrypted columns out as ciphertext; select the columns by name"
            ))),
        }
    }
}

/// The configured column named by a reference that was not recognised, if any.
struct Unrecognised<'w, 'a> {
    walk: &'w Walk<'a>,
    found: Option<Found>,
}

enum Found {
    Column(ColumnId),
    WholeRow(String),
    /// A parameter bound for a PII column, used again where it is not.
    Param(usize, ColumnId),
}

impl Visitor for Unrecognised<'_, '_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Value(value) = expr {
            let slot =
                placeholder(&value.value).and_then(|n| Some((n, self.walk.plan.params.get(&n)?)));
            if let Some((n, slot)) = slot {
                if !self.walk.bound_params.contains(&span_of(value.span)) {
                    self.found = Some(Found::Param(n, (*slot.column).clone()));
                    return ControlFlow::Break(());
                }
            }
        }
        // Only the references themselves: a cast or parentheses around one is not one.
        let column = self
            .walk
            .scope
            .resolve(expr, self.walk.policy)
            .into_iter()
            .next();
        if let Some(column) = column {
            let span = span_key(expr);
            if !self.walk.recognised.contains(&span) && !self.walk.cleared.borrow().contains(&span)
            {
                self.found = Some(Found::Column(column.id));
                return ControlFlow::Break(());
            }
        } else if self.walk.scope.is_whole_row(expr) {
            self.found = Some(Found::WholeRow(expr.to_string()));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Subqueries directly inside an expression (not those nested in other subqueries), each
/// with whether it is the query of an EXISTS; and the column references outside them.
#[derive(Default)]
struct TopLevelQueries {
    depth: usize,
    exists: bool,
    found: Vec<(Query, bool)>,
    references: Vec<Expr>,
}

impl Visitor for TopLevelQueries {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if self.depth == 0 {
            match expr {
                Expr::Exists { .. } => self.exists = true,
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                    self.references.push(expr.clone())
                }
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.depth == 0 {
            self.found
                .push((query.clone(), std::mem::take(&mut self.exists)));
        }
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// A statement of a kind the walk does not model that names `table`.
fn not_modelled(statement: &Statement, table: &TableKey) -> Refusal {
    Refusal::unsupported(format!(
        "pgcloak does not model {} statements, and this one names {}.{}, whose columns pgcloak encrypts: it cannot tell what the statement does with their values, so it is refused rather than passed on unchecked; run it on a connection that bypasses pgcloak after checking that it handles no PII values",
        kinds::label(statement),
        table.0,
        table.1
    ))
}

/// Parameter `$n`, bound for `column`, is used again elsewhere: Postgres would get the one
/// value pgcloak sends, its ciphertext, for every use.
fn param_reused(n: usize, column: &ColumnId) -> Refusal {
    Refusal::unsupported(format!(
        "parameter ${n} is used for {column} and elsewhere; pgcloak encrypts a parameter for one column only: pass the value as a separate parameter for each use"
    ))
}

fn different_keys(a: &PiiColumn, b: &PiiColumn) -> Refusal {
    Refusal::unsupported(format!(
        "comparing {} with {} cannot work: pgcloak encrypts each column with its own key, so equal values have different ciphertexts; give one `same_key_as: <the other>` in the pgcloak policy, or compare in the application",
        a.id, b.id
    ))
}

/// `name` or `qualifier.name` of a column reference.
fn reference(expr: &Expr) -> Option<(Option<String>, String)> {
    match expr {
        Expr::Identifier(ident) => Some((None, normalize(ident))),
        Expr::CompoundIdentifier(parts) => {
            let (column, qualifier) = parts.split_last()?;
            let qualifier: Vec<String> = qualifier.iter().map(normalize).collect();
            Some((Some(qualifier.join(".")), normalize(column)))
        }
        _ => None,
    }
}
