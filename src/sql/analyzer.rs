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
    Query, SelectItem, SetExpr, Statement, TableAlias, TableFactor, TableObject, Update, Value,
    Visit, Visitor,
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
    ParamSlot, Refusal, StatementPlan,
};
use crate::crypto::Mode;
use crate::policy::{ColumnId, Policy};

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
        };
        let outcome = walk
            .statement(statement)
            .and_then(|()| walk.deferred.take().map_or(Ok(()), Err))
            .and_then(|()| walk.check_all_recognised(statement));
        if let Err(refusal) = outcome {
            return Analysis::Refused(refusal);
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
    Analysis::Plan(Arc::new(plan))
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
}

/// What a value bound for a PII column is.
pub(super) enum Bound<'e> {
    Literal(LiteralKind, Span),
    Param(usize, Span),
    Null,
    Default,
    Other(&'e Expr),
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

    // ---- predicates ----------------------------------------------------------------

    pub(super) fn predicate(&mut self, expr: &Expr) -> Result {
        match expr {
            Expr::Nested(inner) => self.predicate(inner),
            Expr::UnaryOp { expr: inner, .. } => self.predicate(inner),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And | BinaryOperator::Or => {
                    self.predicate(left)?;
                    self.predicate(right)
                }
                BinaryOperator::Eq | BinaryOperator::NotEq => self.compare(left, right),
                _ => self.other(expr),
            },
            Expr::IsDistinctFrom(left, right) | Expr::IsNotDistinctFrom(left, right) => {
                self.compare(left, right)
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                if self.recognise(inner) {
                    Ok(())
                } else {
                    self.other(inner)
                }
            }
            Expr::In {
                expr: left,
                target: InTarget::List(list),
                ..
            } => match self.pii(left) {
                Some(column) => {
                    self.searchable(&column, "IN (...)")?;
                    self.recognise(left);
                    for item in list {
                        self.bind_search_value(item, &column)?;
                    }
                    Ok(())
                }
                None => self.other(expr),
            },
            Expr::In {
                expr: left,
                target: InTarget::Subquery(subquery),
                ..
            } => self.compare_with_query(left, subquery, "IN (SELECT ...)"),
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => match (self.pii(left), strip_text_array_cast(right)) {
                (Some(column), array @ Expr::Value(_)) => {
                    self.searchable(&column, "= ANY(...)")?;
                    match bound(array) {
                        Bound::Param(n, span) => self.bind_param(n, span, &column, true)?,
                        Bound::Literal(value, span) => {
                            self.bind_literal(value, span, &column.id, true)?
                        }
                        Bound::Null => {}
                        _ => return self.other(expr),
                    }
                    self.recognise(left);
                    Ok(())
                }
                (Some(column), Expr::Array(array)) => {
                    self.searchable(&column, "= ANY(ARRAY[...])")?;
                    self.recognise(left);
                    for item in &array.elem {
                        self.bind_search_value(item, &column)?;
                    }
                    Ok(())
                }
                (_, Expr::Subquery(subquery)) => {
                    self.compare_with_query(left, subquery, "= ANY(SELECT ...)")
                }
                _ => self.other(expr),
            },
            Expr::AllOp {
                left,
                compare_op: BinaryOperator::NotEq,
                right,
            } => match strip(right) {
                Expr::Subquery(subquery) => {
                    self.compare_with_query(left, subquery, "<> ALL(SELECT ...)")
                }
                _ => self.other(expr),
            },
            Expr::Exists { subquery, .. } => self.query(subquery).map(drop),
            _ => self.other(expr),
        }
    }

    /// `a = b`: a PII column compared with a value (encrypted deterministically) or with the
    /// same column (equal ciphertexts mean equal values).
    fn compare(&mut self, left: &Expr, right: &Expr) -> Result {
        match (strip(left), strip(right)) {
            (value, Expr::Subquery(query)) | (Expr::Subquery(query), value) => {
                return self.compare_with_query(value, query, "=")
            }
            _ => {}
        }
        match (self.pii(left), self.pii(right)) {
            (Some(l), Some(r)) => {
                self.searchable(&l, "=")?;
                self.searchable(&r, "=")?;
                if !self.same_key(&l, &r) {
                    return Err(different_keys(&l, &r));
                }
                self.recognise(left);
                self.recognise(right);
                Ok(())
            }
            (Some(column), None) => {
                self.searchable(&column, "=")?;
                self.recognise(left);
                self.bind_search_value(right, &column)
            }
            (None, Some(column)) => {
                self.searchable(&column, "=")?;
                self.recognise(right);
                self.bind_search_value(left, &column)
            }
            (None, None) => {
                self.other(left)?;
                self.other(right)
            }
        }
    }

    /// `value = (SELECT ...)`, `value IN (SELECT ...)`: the query's one output column is
    /// compared with `value` like a column would be.
    fn compare_with_query(&mut self, value: &Expr, query: &Query, operation: &str) -> Result {
        let output = self.query(query)?.single();
        match (self.pii(value), output) {
            (None, Output::Plain) => self.other(value),
            (Some(column), Output::Pii(selected)) => {
                self.searchable(&column, operation)?;
                self.searchable(&selected, operation)?;
                if !self.same_key(&column, &selected) {
                    return Err(different_keys(&column, &selected));
                }
                self.recognise(value);
                Ok(())
            }
            // A literal or parameter compared with an encrypted subquery result.
            (None, Output::Pii(selected)) => {
                self.searchable(&selected, operation)?;
                self.bind_search_value(value, &selected)
            }
            (Some(column), Output::Plain) => Err(Refusal::unsupported(format!(
                "{operation} compares {}, encrypted by pgcloak, with what a subquery selects, which is not the same column (or one sharing its key); compare with literals or parameters, or in the application",
                column.id
            ))),
            (_, Output::Mixed(selected)) => Err(Refusal::unsupported(format!(
                "{operation} compares with a subquery column that mixes {} (encrypted by pgcloak) with other values; select one column in the subquery, or compare in the application",
                selected.id
            ))),
        }
    }

    pub(super) fn searchable(&self, column: &PiiColumn, operation: &str) -> Result {
        match column.mode {
            Mode::Deterministic => Ok(()),
            Mode::Randomized => Err(Refusal::unsupported(format!(
                "{operation} on {} cannot work: the column is encrypted in randomized mode, so equal values have different ciphertexts; make it `deterministic` in the pgcloak policy to search it by equality, or filter in the application",
                column.id
            ))),
        }
    }

    pub(super) fn require_deterministic(&self, expr: &Expr, operation: &str) -> Result {
        match self.pii(expr) {
            Some(column) => self.searchable(&column, operation),
            None => Ok(()),
        }
    }

    /// The value side of `pii_column = value`.
    fn bind_search_value(&mut self, expr: &Expr, column: &PiiColumn) -> Result {
        match bound(expr) {
            Bound::Literal(value, span) => self.bind_literal(value, span, &column.id, false),
            Bound::Param(n, span) => self.bind_param(n, span, column, false),
            Bound::Null => Ok(()),
            Bound::Default | Bound::Other(_) => Err(Refusal::unsupported(format!(
                "{} is encrypted by pgcloak and can only be compared with a literal or a bind parameter, not an expression; compute the value in the application and pass it as a parameter",
                column.id
            ))),
        }
    }

    // ---- writes --------------------------------------------------------------------

    pub(super) fn insert(&mut self, insert: &Insert) -> Result<Outputs> {
        let target = match &insert.table {
            TableObject::TableName(name) => configured_table(name, self.policy),
            _ => None,
        };
        if let (Some(table), Some(alias)) = (&target, &insert.table_alias) {
            self.scope.alias(&normalize(&alias.alias), table.clone());
        }
        let pii_targets: Vec<Option<PiiColumn>> = insert
            .columns
            .iter()
            .map(|column| {
                let name = column
                    .0
                    .last()
                    .and_then(|part| part.as_ident())
                    .map(normalize);
                target
                    .as_ref()
                    .zip(name)
                    .and_then(|(table, name)| self.column(table, &name))
            })
            .collect();
        if let Some(table) = &target {
            if insert.columns.is_empty() {
                return Err(Refusal::unsupported(format!(
                    "INSERT INTO {}.{} must name its columns, because pgcloak encrypts some of them and needs to know which value goes where: INSERT INTO {} (col, ...) VALUES (...)",
                    table.0, table.1, table.1
                )));
            }
            self.scope.alias("excluded", table.clone());
        }
        let ctes_in_reach = self.ctes.len();
        let outputs = self.insert_in_scope(insert, target.as_ref(), &pii_targets);
        self.ctes.truncate(ctes_in_reach);
        outputs
    }

    fn insert_in_scope(
        &mut self,
        insert: &Insert,
        target: Option<&TableKey>,
        pii_targets: &[Option<PiiColumn>],
    ) -> Result<Outputs> {
        if let Some(source) = &insert.source {
            if let Some(with) = &source.with {
                self.ctes(with)?;
            }
            match source.body.as_ref() {
                SetExpr::Values(values) => {
                    for row in &values.rows {
                        for (i, expr) in row.content.iter().enumerate() {
                            match pii_targets.get(i).cloned().flatten() {
                                Some(column) => self.bind_write_value(expr, &column, false)?,
                                None => self.other(expr)?,
                            }
                        }
                    }
                }
                _ if pii_targets.iter().flatten().next().is_some()
                    && (self.insert_from_values(source, pii_targets)?
                        || self.insert_from_unnest(source, pii_targets)?) => {}
                body => {
                    let into = format!("INSERT INTO {}", insert.table);
                    self.insert_select(body, pii_targets, &into)?;
                }
            }
        }
        // ON CONFLICT and RETURNING see the target table (the source query does not).
        let mut level = Level::new();
        if let TableObject::TableName(name) = &insert.table {
            let alias = insert.table_alias.as_ref().map(|alias| TableAlias {
                explicit: true,
                name: alias.alias.clone(),
                columns: Vec::new(),
                at: None,
            });
            level.push(self.table_relation(name, alias.as_ref())?);
            if let Some(table) = target {
                level.push(Relation::Table {
                    names: vec!["excluded".to_owned()],
                    table: table.clone(),
                });
            }
        }
        self.in_level(level, |walk| walk.insert_tail(insert, target))
    }

    /// INSERT ... SELECT: a PII target takes a literal or parameter of the select list
    /// (encrypted as in VALUES: `INSERT ... SELECT $1 WHERE NOT EXISTS (...)`) or the same
    /// column, or one sharing its key and mode (a ciphertext copied within the policy); a
    /// plain target may not take a PII column.
    fn insert_select(
        &mut self,
        body: &SetExpr,
        targets: &[Option<PiiColumn>],
        into: &str,
    ) -> Result {
        let mut bound_here = vec![false; targets.len()];
        if let SetExpr::Select(select) = body {
            for (i, (item, target)) in select.projection.iter().zip(targets).enumerate() {
                let (
                    SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. },
                    Some(column),
                ) = (item, target)
                else {
                    continue;
                };
                if let Bound::Literal(..) | Bound::Param(..) | Bound::Null = bound(expr) {
                    self.bind_write_value(expr, column, false)?;
                    bound_here[i] = true;
                }
            }
        }
        let outputs = self.set_expr(body)?;
        let cannot = |column: &PiiColumn| {
            Refusal::unsupported(format!(
                "INSERT ... SELECT into {} cannot be encrypted: pgcloak only sees values written as literals or bind parameters, or copied from the same column (or one sharing its key); insert the rows with VALUES and parameters from the application",
                column.id
            ))
        };
        for (i, target) in targets.iter().enumerate() {
            let output = outputs.columns.get(i).map(|(_, output)| output);
            match (target, output) {
                (Some(_), _) if bound_here[i] => {}
                (Some(column), Some(Output::Pii(source)))
                    if outputs.complete
                        && column.mode == source.mode
                        && self.same_key(column, source) => {}
                (Some(column), _) => return Err(cannot(column)),
                (None, _) => {}
            }
        }
        // Plain targets: no PII column may reach them, wherever it stands.
        let plain: Vec<(Option<String>, Output)> = outputs
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !outputs.complete || targets.get(*i).is_none_or(Option::is_none))
            .map(|(_, column)| column.clone())
            .collect();
        self.not_copied(
            &Outputs {
                columns: plain,
                complete: outputs.complete,
            },
            into,
        )
    }

    fn insert_tail(&mut self, insert: &Insert, target: Option<&TableKey>) -> Result<Outputs> {
        if let Some(OnInsert::OnConflict(on_conflict)) = &insert.on {
            if let OnConflictAction::DoUpdate(update) = &on_conflict.action {
                for assignment in &update.assignments {
                    self.assignment(&assignment.target, &assignment.value, target)?;
                }
                if let Some(selection) = &update.selection {
                    self.predicate(selection)?;
                }
            }
        }
        self.returning(insert.returning.as_deref())
    }

    pub(super) fn update(&mut self, update: &Update) -> Result<Outputs> {
        self.in_level(Level::new(), |walk| walk.update_in_scope(update))
    }

    fn update_in_scope(&mut self, update: &Update) -> Result<Outputs> {
        let target = match &update.table.relation {
            TableFactor::Table { name, .. } => configured_table(name, self.policy),
            _ => None,
        };
        self.from(&update.table)?;
        // FROM items are in reach of SET and WHERE alike.
        if let Some(from) = &update.from {
            let tables = match from {
                sqlparser::ast::UpdateTableFromKind::BeforeSet(tables)
                | sqlparser::ast::UpdateTableFromKind::AfterSet(tables) => tables,
            };
            for table in tables {
                self.from(table)?;
            }
        }
        for assignment in &update.assignments {
            self.assignment(&assignment.target, &assignment.value, target.as_ref())?;
        }
        if let Some(selection) = &update.selection {
            self.predicate(selection)?;
        }
        self.returning(update.returning.as_deref())
    }

    pub(super) fn delete(&mut self, delete: &Delete) -> Result<Outputs> {
        self.in_level(Level::new(), |walk| walk.delete_in_scope(delete))
    }

    fn delete_in_scope(&mut self, delete: &Delete) -> Result<Outputs> {
        let (FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables)) = &delete.from;
        for table in tables.iter().chain(delete.using.iter().flatten()) {
            self.from(table)?;
        }
        if let Some(selection) = &delete.selection {
            self.predicate(selection)?;
        }
        self.returning(delete.returning.as_deref())
    }

    /// RETURNING: shown like a select list.
    pub(super) fn returning(&mut self, items: Option<&[SelectItem]>) -> Result<Outputs> {
        let mut outputs = Outputs {
            columns: Vec::new(),
            complete: true,
        };
        for item in items.unwrap_or_default() {
            match item {
                SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                    let name = output_name(item, expr);
                    let output = self.projection(expr)?;
                    outputs.columns.push((name, output));
                }
                _ => {
                    // RETURNING *: the target's columns (the first relation of the level).
                    let level = self.levels.last().map(Vec::as_slice).unwrap_or_default();
                    let shown = level
                        .first()
                        .map(|r| r.expand(self.policy))
                        .unwrap_or_default();
                    outputs.complete &= shown.complete;
                    outputs.columns.extend(shown.columns);
                }
            }
        }
        Ok(outputs)
    }

    /// `SET column = value` in UPDATE or ON CONFLICT DO UPDATE.
    pub(super) fn assignment(
        &mut self,
        target: &AssignmentTarget,
        value: &Expr,
        table: Option<&(String, String)>,
    ) -> Result {
        let column = match (target, table) {
            (AssignmentTarget::ColumnName(name), Some(table)) => name
                .0
                .last()
                .and_then(|part| part.as_ident())
                .and_then(|ident| self.column(table, &normalize(ident))),
            (AssignmentTarget::Tuple(names), Some(table)) => {
                let pii = names.iter().find_map(|name| {
                    let ident = name.0.last()?.as_ident()?;
                    self.column(table, &normalize(ident))
                });
                if let Some(column) = pii {
                    return Err(Refusal::unsupported(format!(
                        "SET (...) = (...) including {} cannot be encrypted; assign the column on its own: SET {} = $1",
                        column.id, column.id.column
                    )));
                }
                None
            }
            _ => None,
        };
        match column {
            Some(column) => self.bind_write_value(value, &column, true),
            None => self.other(value),
        }
    }

    /// A value written into a PII column: a literal, a parameter, NULL or DEFAULT; in an
    /// assignment also the column itself or `EXCLUDED.column`.
    pub(super) fn bind_write_value(
        &mut self,
        expr: &Expr,
        column: &PiiColumn,
        assignment: bool,
    ) -> Result {
        match bound(expr) {
            Bound::Literal(value, span) => self.bind_literal(value, span, &column.id, false),
            Bound::Param(n, span) => self.bind_param(n, span, column, false),
            Bound::Null | Bound::Default => Ok(()),
            Bound::Other(inner) => {
                let same_column = self.pii(inner).is_some_and(|c| self.same_key(&c, column));
                if assignment && same_column {
                    self.recognise(inner);
                    return Ok(());
                }
                Err(Refusal::unsupported(format!(
                    "pgcloak cannot encrypt the value for {}: it is an expression, not a literal or bind parameter; compute the value in the application and bind it as a parameter",
                    column.id
                )))
            }
        }
    }

    fn copy(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result {
        let (table_name, columns) = match source {
            CopySource::Query(query) => {
                self.query(query)?;
                // The query reads a PII table (else this statement would be plain).
                copy_out_encoding(options, "this COPY")?;
                self.plan.copy_out = Some(copy_options(options, legacy, "this COPY")?);
                return Ok(());
            }
            CopySource::Table {
                table_name,
                columns,
            } => (table_name, columns),
        };
        let Some(table) = configured_table(table_name, self.policy) else {
            return Ok(());
        };
        let what = format!("{}.{}", table.0, table.1);
        let parsed = copy_options(options, legacy, &what)?;
        if to {
            copy_out_encoding(options, &what)?;
            self.plan.copy_out = Some(parsed);
            self.plan.copy_out_fields = Some(if columns.is_empty() {
                CopyOutFields::AllOf(table.0.clone(), table.1.clone())
            } else {
                CopyOutFields::Listed(
                    (columns.iter())
                        .map(|ident| self.column(&table, &normalize(ident)).map(|c| c.id))
                        .collect(),
                )
            });
            return Ok(());
        }
        if !matches!(target, CopyTarget::Stdin) {
            return Err(Refusal::unsupported(format!(
                "COPY {what} FROM a server file or program cannot be encrypted by pgcloak; use COPY ... FROM STDIN (psql: \\copy)"
            )));
        }
        if columns.is_empty() {
            return Err(Refusal::unsupported(format!(
                "COPY {what} FROM STDIN must name its columns, because pgcloak encrypts some of them and needs to know which field goes where: COPY {} (col, ...) FROM STDIN",
                table.1
            )));
        }
        let fields: Vec<Option<ColumnId>> = columns
            .iter()
            .map(|ident| self.column(&table, &normalize(ident)).map(|c| c.id))
            .collect();
        self.unsupported_copy_in_options(options, legacy, &table, &fields)?;
        self.plan.copy_in = Some(CopyInPlan {
            options: parsed,
            fields,
        });
        Ok(())
    }

    /// COPY FROM options pgcloak does not implement, refused where they would change how a
    /// PII field is read: FORCE_NOT_NULL / FORCE_NULL on a PII column (NULL or empty is
    /// decided before encryption), an ENCODING other than UTF8 (values are encrypted as the
    /// bytes they are).
    fn unsupported_copy_in_options(
        &self,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
        table: &TableKey,
        fields: &[Option<ColumnId>],
    ) -> Result {
        let legacy_csv = legacy.iter().flat_map(|option| match option {
            CopyLegacyOption::Csv(csv) => csv.as_slice(),
            _ => &[],
        });
        let forced = (options.iter())
            .flat_map(|option| match option {
                CopyOption::ForceNotNull(columns) | CopyOption::ForceNull(columns) => {
                    columns.as_slice()
                }
                _ => &[],
            })
            .chain(legacy_csv.flat_map(|option| match option {
                CopyLegacyCsvOption::ForceNotNull(columns) => columns.as_slice(),
                _ => &[],
            }));
        for ident in forced {
            if let Some(column) = self.column(table, &normalize(ident)) {
                return Err(Refusal::unsupported(format!(
                    "FORCE_NOT_NULL / FORCE_NULL on {} is not supported by pgcloak, which decides NULL before encrypting; drop the option (send NULL as the NULL string)",
                    column.id
                )));
            }
        }
        let encoding = options.iter().find_map(|option| match option {
            CopyOption::Encoding(name) => Some(name),
            _ => None,
        });
        if let Some(name) = encoding {
            let utf8 = name.eq_ignore_ascii_case("utf8") || name.eq_ignore_ascii_case("utf-8");
            if let (false, Some(column)) = (utf8, fields.iter().flatten().next()) {
                return Err(Refusal::unsupported(format!(
                    "COPY ... ENCODING '{name}' into {column} is not supported by pgcloak, which encrypts UTF-8; convert the data to UTF-8 and drop the option"
                )));
            }
        }
        Ok(())
    }

    // ---- recording -----------------------------------------------------------------

    pub(super) fn bind_literal(
        &mut self,
        kind: LiteralKind,
        span: Span,
        column: &ColumnId,
        array: bool,
    ) -> Result {
        let range = self.index.range(span).ok_or_else(|| {
            Refusal::unsupported(format!(
                "pgcloak could not locate the value for {column} in the statement text; bind it as a parameter instead"
            ))
        })?;
        let column = self.plan.intern(column);
        self.plan.literals.push(LiteralSlot {
            range,
            kind,
            column,
            array,
        });
        Ok(())
    }

    pub(super) fn bind_param(
        &mut self,
        n: usize,
        span: Span,
        column: &PiiColumn,
        array: bool,
    ) -> Result {
        if n == 0 || n > MAX_PARAMS {
            let shown = if n == usize::MAX {
                "a number this large".to_owned()
            } else {
                format!("${n}")
            };
            return Err(Refusal::unsupported(format!(
                "the statement uses {shown} as a parameter for {}, but parameters are numbered from $1 to ${MAX_PARAMS}; number them from $1",
                column.id
            )));
        }
        let slot = ParamSlot {
            column: self.plan.intern(&column.id),
            array,
        };
        self.bound_params.insert(span_of(span));
        match self.plan.params.get(&n) {
            Some(existing) if *existing != slot => Err(param_reused(n, &column.id)),
            _ => {
                self.plan.params.insert(n, slot);
                Ok(())
            }
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

/// Parentheses and casts to text types are transparent for PII purposes.
pub(super) fn strip(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(inner) => strip(inner),
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } if is_text_type(&data_type.to_string()) => strip(inner),
        _ => expr,
    }
}

/// `$1::text[]` or `ARRAY[...]::varchar[]`: the array itself.
pub(super) fn strip_text_array_cast(expr: &Expr) -> &Expr {
    match strip(expr) {
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => match data_type.to_string().strip_suffix("[]") {
            Some(element) if is_text_type(element) => strip_text_array_cast(inner),
            _ => strip(expr),
        },
        other => other,
    }
}

/// A type a PII value or column may be cast to without changing it: text, varchar without
/// a length. (An explicit cast to `varchar(n)` silently truncates the ciphertext; `citext`
/// would compare ciphertexts case-insensitively, so `email::citext = 'ANN@X.COM'` would
/// look for the ciphertext of the upper-case text and silently find nothing.)
fn is_text_type(name: &str) -> bool {
    matches!(
        name.to_lowercase().as_str(),
        "text" | "varchar" | "character varying"
    )
}

/// A numeric literal Postgres stores in a text column exactly as written (`42`, `1.50`),
/// so that its ciphertext decrypts to what the column would have held; `1e5`, `007` or
/// `.5` would be stored as `100000`, `7`, `0.5`.
fn canonical_number(n: &str) -> bool {
    let (int, frac) = match n.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (n, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && (int == "0" || !int.starts_with('0')) && frac.is_none_or(digits)
}

/// The number of a `$n` placeholder; usize::MAX for a number too large to be one (refused
/// by `bind_param`).
fn placeholder(value: &Value) -> Option<usize> {
    match value {
        Value::Placeholder(p) => {
            let digits = p.strip_prefix('$')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse().unwrap_or(usize::MAX))
        }
        _ => None,
    }
}

/// Postgres numbers parameters from $1 and allows at most 65535 of them (the Bind message
/// counts them in 16 bits).
const MAX_PARAMS: usize = 65535;

/// Classifies a value written to or compared with a PII column.
pub(super) fn bound(expr: &Expr) -> Bound<'_> {
    let inner = strip(expr);
    match inner {
        Expr::Value(v) => match &v.value {
            Value::Null => Bound::Null,
            // The literal's own span: a cast around it (`'x'::text`) stays in the text.
            Value::SingleQuotedString(_) => Bound::Literal(LiteralKind::Quoted, v.span),
            Value::EscapedStringLiteral(_) => Bound::Literal(LiteralKind::Escaped, v.span),
            Value::DollarQuotedString(_) => Bound::Literal(LiteralKind::DollarQuoted, v.span),
            Value::Number(n, _) if canonical_number(n) => {
                Bound::Literal(LiteralKind::Number, v.span)
            }
            Value::Placeholder(_) => match placeholder(&v.value) {
                Some(n) => Bound::Param(n, v.span),
                None => Bound::Other(inner),
            },
            _ => Bound::Other(inner),
        },
        Expr::Identifier(ident)
            if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") =>
        {
            Bound::Default
        }
        _ => Bound::Other(inner),
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

/// The data format of a COPY; binary cannot be rewritten, so it is refused.
/// COPY TO with an ENCODING other than UTF8: Postgres would convert the ciphertext, and the
/// plaintext pgcloak puts in its place is UTF-8.
fn copy_out_encoding(options: &[CopyOption], what: &str) -> Result {
    for option in options {
        if let CopyOption::Encoding(name) = option {
            if !(name.eq_ignore_ascii_case("utf8") || name.eq_ignore_ascii_case("utf-8")) {
                return Err(Refusal::unsupported(format!(
                    "COPY ... TO with ENCODING '{name}' of {what} is not supported by pgcloak, which returns decrypted values as UTF-8; drop the option and convert the output"
                )));
            }
        }
    }
    Ok(())
}

fn copy_options(
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
    what: &str,
) -> Result<CopyOptions> {
    let binary = || {
        Refusal::unsupported(format!(
            "binary COPY of {what} cannot be encrypted or decrypted by pgcloak; use FORMAT text or csv"
        ))
    };
    let mut plan = CopyOptions::default();
    for option in options {
        match option {
            CopyOption::Format(format) => match normalize(format).as_str() {
                "text" => plan.format = CopyFormat::Text,
                "csv" => plan.format = CopyFormat::Csv,
                _ => return Err(binary()),
            },
            CopyOption::Delimiter(c) => plan.delimiter = Some(*c),
            CopyOption::Null(null) => plan.null = Some(null.clone()),
            CopyOption::Header(header) => plan.header = *header,
            CopyOption::Quote(c) => plan.quote = Some(*c),
            CopyOption::Escape(c) => plan.escape = Some(*c),
            _ => {}
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Binary => return Err(binary()),
            CopyLegacyOption::Delimiter(c) => plan.delimiter = Some(*c),
            CopyLegacyOption::Null(null) => plan.null = Some(null.clone()),
            CopyLegacyOption::Csv(csv) => {
                plan.format = CopyFormat::Csv;
                for option in csv {
                    match option {
                        CopyLegacyCsvOption::Header => plan.header = true,
                        CopyLegacyCsvOption::Quote(c) => plan.quote = Some(*c),
                        CopyLegacyCsvOption::Escape(c) => plan.escape = Some(*c),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(plan)
}
