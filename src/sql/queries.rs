//! Queries in the walk: SELECT lists, FROM lists (tables, subqueries, CTEs, joins), set
//! operations, ORDER BY and GROUP BY, and what each query's output columns carry, so that
//! a query used as a table, a value or a copy is checked like the columns it shows.

use sqlparser::ast::{
    Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, JoinConstraint,
    JoinOperator, ObjectName, OrderByKind, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, SetOperator, SetQuantifier, Statement, TableAlias,
    TableFactor, TableWithJoins, Value, With,
};

use super::analyzer::{strip, Result, Walk};
use super::levels::{self, Level, Output, Outputs, Relation};
use super::names::{configured_table, name_parts, normalize, PiiColumn};
use super::Refusal;
use crate::crypto::Mode;

impl Walk<'_> {
    /// Walks a query and says what its output columns carry.
    pub(super) fn query(&mut self, query: &Query) -> Result<Outputs> {
        let ctes_in_reach = self.ctes.len();
        let outputs = self.query_in_scope(query);
        self.ctes.truncate(ctes_in_reach);
        outputs
    }

    fn query_in_scope(&mut self, query: &Query) -> Result<Outputs> {
        if let Some(with) = &query.with {
            self.ctes(with)?;
        }
        let outputs = self.set_expr(&query.body)?;
        if let Some(order_by) = &query.order_by {
            if let OrderByKind::Expressions(exprs) = &order_by.kind {
                for item in exprs {
                    // An output column by name or position, else an input column.
                    by_unknown_position(&outputs, &item.expr, "ORDER BY")?;
                    let column = output_pii(&outputs, &item.expr).or_else(|| self.pii(&item.expr));
                    if let Some(column) = column {
                        return Err(Refusal::unsupported(format!(
                            "ORDER BY {} cannot work: the column is encrypted by pgcloak and ciphertext order is meaningless; sort the rows in the application",
                            column.id
                        )));
                    }
                    self.other(&item.expr)?;
                }
            }
        }
        Ok(outputs)
    }

    /// Walks the CTEs of a WITH and puts them in reach, each with what its columns carry.
    pub(super) fn ctes(&mut self, with: &With) -> Result {
        for cte in &with.cte_tables {
            let name = normalize(&cte.alias.name);
            // Inside its own query (WITH RECURSIVE) its columns are not known yet.
            self.ctes.push((name.clone(), None));
            let outputs = self.query(&cte.query)?;
            let outputs = self.renamed(outputs, Some(&cte.alias))?;
            self.scope.derived(&name, &outputs);
            for (_, alias) in self.cte_aliases.iter().filter(|(cte, _)| *cte == name) {
                self.scope.derived(alias, &outputs);
            }
            if let Some(last) = self.ctes.last_mut() {
                last.1 = Some(outputs);
            }
        }
        Ok(())
    }

    /// Refuses a query whose result would be stored (`what`) when it holds a PII column:
    /// the copy would be ciphertext outside the policy, where searches silently miss.
    pub(super) fn not_copied(&self, outputs: &Outputs, what: &str) -> Result {
        match outputs.first_pii() {
            Some(column) => Err(Refusal::unsupported(format!(
                "{what} would receive {} as ciphertext, outside the pgcloak policy, where searches would silently compare plaintext with ciphertext; read the rows through pgcloak and write them with VALUES and parameters",
                column.id
            ))),
            None => Ok(()),
        }
    }

    pub(super) fn set_expr(&mut self, body: &SetExpr) -> Result<Outputs> {
        match body {
            SetExpr::Select(select) => self.select(select),
            SetExpr::Query(query) => self.query(query),
            SetExpr::SetOperation {
                op,
                set_quantifier,
                left,
                right,
            } => {
                let left = self.set_expr(left)?;
                let right = self.set_expr(right)?;
                self.set_operation(op, set_quantifier, left, right)
            }
            SetExpr::Values(values) => {
                for row in &values.rows {
                    for expr in &row.content {
                        self.other(expr)?;
                    }
                }
                let width = values.rows.first().map_or(0, |row| row.content.len());
                Ok(Outputs {
                    columns: (1..=width)
                        .map(|i| (Some(format!("column{i}")), Output::Plain))
                        .collect(),
                    complete: true,
                })
            }
            SetExpr::Insert(statement)
            | SetExpr::Update(statement)
            | SetExpr::Delete(statement) => match statement {
                Statement::Insert(insert) => self.insert(insert),
                Statement::Update(update) => self.update(update),
                Statement::Delete(delete) => self.delete(delete),
                other => self.statement(other).map(|()| Outputs::default()),
            },
            SetExpr::Merge(statement) => match statement {
                Statement::Merge(merge) => self.merge(merge),
                other => self.statement(other).map(|()| Outputs::default()),
            },
            // `TABLE name` is `SELECT * FROM name`.
            SetExpr::Table(table) => match table_name(table) {
                Some(name) => Ok(self.table_relation(&name, None)?.expand(self.policy)),
                None => Ok(Outputs::default()),
            },
        }
    }

    /// UNION, INTERSECT and EXCEPT compare whole rows (all but UNION ALL): a PII column
    /// must meet the same deterministic column, or one sharing its key, in every branch.
    fn set_operation(
        &self,
        op: &SetOperator,
        quantifier: &SetQuantifier,
        left: Outputs,
        right: Outputs,
    ) -> Result<Outputs> {
        let compares =
            !(matches!(op, SetOperator::Union) && matches!(quantifier, SetQuantifier::All));
        let Some(pii) = left.first_pii().or(right.first_pii()).cloned() else {
            let complete = left.complete && right.complete;
            return Ok(Outputs {
                columns: left.columns,
                complete,
            });
        };
        let refusal = |column: &PiiColumn| {
            Refusal::unsupported(format!(
                "{op} compares whole rows, and {} is encrypted by pgcloak where the other branch does not hold the same deterministic column (or one sharing its key): equal values would not match; use UNION ALL, or select the same column in every branch",
                column.id
            ))
        };
        if !(left.complete && right.complete) {
            if compares {
                return Err(refusal(&pii));
            }
            let columns = left
                .columns
                .into_iter()
                .map(|(name, output)| (name, mixed(output)))
                .chain(right.columns.into_iter().filter_map(|(_, output)| {
                    output.column().is_some().then(|| (None, mixed(output)))
                }))
                .collect();
            return Ok(Outputs {
                columns,
                complete: false,
            });
        }
        let mut columns = Vec::with_capacity(left.columns.len());
        for ((name, a), (_, b)) in left.columns.into_iter().zip(right.columns) {
            let merged = match (&a, &b) {
                (Output::Plain, Output::Plain) => Output::Plain,
                (Output::Pii(x), Output::Pii(y)) if self.same_key(x, y) => Output::Pii(x.clone()),
                _ => mixed(if a.column().is_some() { a } else { b }),
            };
            if compares {
                match &merged {
                    Output::Plain => {}
                    Output::Pii(column) if column.mode == Mode::Deterministic => {
                        self.compared_by_ciphertext(column);
                    }
                    Output::Pii(column) | Output::Mixed(column) => return Err(refusal(column)),
                }
            }
            columns.push((name, merged));
        }
        Ok(Outputs {
            columns,
            complete: true,
        })
    }

    fn select(&mut self, select: &Select) -> Result<Outputs> {
        self.in_level(Level::new(), |walk| walk.select_in_scope(select))
    }

    /// Runs `inner` with `level` as the innermost FROM list.
    pub(super) fn in_level<T>(
        &mut self,
        level: Level,
        inner: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.levels.push(level);
        let outcome = inner(self);
        self.levels.pop();
        outcome
    }

    fn select_in_scope(&mut self, select: &Select) -> Result<Outputs> {
        for from in &select.from {
            self.from(from)?;
        }
        let distinct = matches!(select.distinct, Some(Distinct::Distinct | Distinct::On(_)));
        let mut outputs = Outputs {
            columns: Vec::with_capacity(select.projection.len()),
            complete: true,
        };
        for item in &select.projection {
            let shown = match item {
                SelectItem::UnnamedExpr(expr)
                | SelectItem::ExprWithAlias { expr, .. }
                | SelectItem::ExprWithAliases { expr, .. } => {
                    if distinct {
                        self.require_deterministic(expr, "SELECT DISTINCT")?;
                    }
                    let name = output_name(item, expr);
                    let output = self.projection(expr)?;
                    outputs.columns.push((name, output));
                    continue;
                }
                SelectItem::Wildcard(_) => {
                    let level = self.levels.last().map(Vec::as_slice).unwrap_or_default();
                    levels::expand_all(level, self.policy)
                }
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) => match levels::relation(&self.levels, &name_parts(name).join(".")) {
                    Some(relation) => relation.expand(self.policy),
                    None => Outputs::default(),
                },
                SelectItem::QualifiedWildcard(..) => Outputs::default(),
            };
            if distinct {
                for column in shown.columns.iter().filter_map(|(_, o)| o.column()) {
                    self.searchable(column, "SELECT DISTINCT")?;
                    self.compared_by_ciphertext(column);
                }
            }
            outputs.complete &= shown.complete;
            outputs.columns.extend(shown.columns);
        }
        if let Some(selection) = &select.selection {
            self.predicate(selection)?;
        }
        if let GroupByExpr::Expressions(exprs, _) = &select.group_by {
            for expr in exprs {
                by_unknown_position(&outputs, expr, "GROUP BY")?;
                if let Some(column) = output_pii(&outputs, expr) {
                    self.searchable(&column, "GROUP BY")?;
                    self.compared_by_ciphertext(&column);
                }
                self.require_deterministic(expr, "GROUP BY")?;
                if !self.recognise(expr) {
                    self.other(expr)?;
                }
            }
        }
        if let Some(having) = &select.having {
            self.predicate(having)?;
        }
        if let Some(into) = &select.into {
            let targets: Vec<String> = into.targets.iter().map(Expr::to_string).collect();
            self.not_copied(&outputs, &format!("SELECT INTO {}", targets.join(", ")))?;
        }
        Ok(outputs)
    }

    /// Adds the relations of a FROM item to the innermost FROM list, checking its joins.
    pub(super) fn from(&mut self, from: &TableWithJoins) -> Result {
        self.table_factor(&from.relation)?;
        for join in &from.joins {
            let left = self.levels.last().map_or(0, Vec::len);
            self.table_factor(&join.relation)?;
            match join_constraint(&join.join_operator) {
                Some(JoinConstraint::On(on)) => self.predicate(on)?,
                Some(JoinConstraint::Using(names) | JoinConstraint::UsingAlias(names, _)) => {
                    self.join_using(names, left)?
                }
                Some(JoinConstraint::Natural) => self.natural_join()?,
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn table_factor(&mut self, factor: &TableFactor) -> Result {
        let relation = match factor {
            TableFactor::Table { name, alias, .. } => self.table_relation(name, alias.as_ref())?,
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                let outputs = if *lateral {
                    self.query(subquery)?
                } else {
                    // A subquery in FROM sees the FROM lists around it, not its siblings.
                    let siblings = self.levels.pop();
                    let outputs = self.query(subquery);
                    self.levels.extend(siblings);
                    outputs?
                };
                let outputs = self.renamed(outputs, alias.as_ref())?;
                let name = alias.as_ref().map(|alias| normalize(&alias.name));
                if let Some(name) = &name {
                    self.scope.derived(name, &outputs);
                }
                Relation::Derived { name, outputs }
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let before = self.levels.last().map_or(0, Vec::len);
                self.from(table_with_joins)?;
                let Some(alias) = alias else {
                    return Ok(());
                };
                // `(a JOIN b) AS j`: a and b are hidden; j shows their columns.
                let joined = self
                    .levels
                    .last_mut()
                    .map(|level| level.split_off(before.min(level.len())))
                    .unwrap_or_default();
                let outputs = levels::expand_all(&joined, self.policy);
                let outputs = self.renamed(outputs, Some(alias))?;
                let name = normalize(&alias.name);
                self.scope.derived(&name, &outputs);
                Relation::Derived {
                    name: Some(name),
                    outputs,
                }
            }
            // Table functions, UNNEST, ...: their arguments are checked by the final pass.
            _ => Relation::Other {
                names: table_alias(factor).into_iter().collect(),
            },
        };
        if let Some(level) = self.levels.last_mut() {
            level.push(relation);
        }
        Ok(())
    }

    /// A table (or CTE) in a FROM list.
    pub(super) fn table_relation(
        &mut self,
        name: &ObjectName,
        alias: Option<&TableAlias>,
    ) -> Result<Relation> {
        let parts = name_parts(name);
        let alias_name = alias.map(|alias| normalize(&alias.name));
        // An unqualified name means a CTE in reach before a table.
        if let [bare] = parts.as_slice() {
            if let Some((_, outputs)) = self.ctes.iter().rev().find(|(cte, _)| cte == bare) {
                let name = alias_name.unwrap_or_else(|| bare.clone());
                return Ok(match outputs.clone() {
                    Some(outputs) => {
                        // Under an alias, the CTE's PII columns go by the alias.
                        let outputs = self.renamed(outputs, alias)?;
                        self.scope.derived(&name, &outputs);
                        Relation::Derived {
                            outputs,
                            name: Some(name),
                        }
                    }
                    None => {
                        // Inside its own (recursive) query: the alias gets the CTE's PII
                        // columns once they are known.
                        self.cte_aliases.push((bare.clone(), name.clone()));
                        Relation::Opaque { names: vec![name] }
                    }
                });
            }
        }
        let mut names = vec![parts.join(".")];
        names.extend(parts.last().cloned());
        match configured_table(name, self.policy) {
            Some(table) => {
                if let Some(alias) = alias.filter(|alias| !alias.columns.is_empty()) {
                    return Err(Refusal::unsupported(format!(
                        "FROM {name} {alias} renames the columns of a table with encrypted columns by position, which pgcloak cannot follow without the table's column order; alias the columns in the select list instead (SELECT col AS other_name ...)"
                    )));
                }
                names.extend(alias_name);
                Ok(Relation::Table { names, table })
            }
            None => Ok(Relation::Other {
                names: alias_name.map_or(names, |alias| vec![alias]),
            }),
        }
    }

    /// Renames `outputs` by the column list of `alias`, if it has one.
    pub(super) fn renamed(&self, outputs: Outputs, alias: Option<&TableAlias>) -> Result<Outputs> {
        let Some(alias) = alias else {
            return Ok(outputs);
        };
        let names: Vec<String> = alias.columns.iter().map(|c| normalize(&c.name)).collect();
        outputs.renamed(&names).ok_or_else(|| {
            Refusal::unsupported(format!(
                "the column list of {alias} renames columns by position, but a * in its query includes encrypted columns whose position pgcloak does not know; list the columns in the query"
            ))
        })
    }

    /// `JOIN ... USING (col)` compares the two sides' `col`: both plain, or both the same
    /// deterministic column (or columns sharing a key).
    fn join_using(&self, names: &[ObjectName], left: usize) -> Result {
        let level = self.levels.last().map(Vec::as_slice).unwrap_or_default();
        let (left, right) = level.split_at(left.min(level.len()));
        for name in names {
            let Some(column) = name_parts(name).pop() else {
                continue;
            };
            let a = levels::pii_of(left, &column, self.policy);
            let b = levels::pii_of(right, &column, self.policy);
            match (&a, &b) {
                (None, None) => {}
                (Some(Output::Pii(x)), Some(Output::Pii(y)))
                    if x.mode == Mode::Deterministic && self.same_key(x, y) =>
                {
                    self.compared_by_ciphertext(x);
                    self.compared_by_ciphertext(y);
                }
                _ => {
                    let column = a.or(b);
                    let column = column.as_ref().and_then(Output::column);
                    return Err(Refusal::unsupported(format!(
                        "JOIN ... USING ({}) compares {}, encrypted by pgcloak, with a column that is not the same deterministic column (or one sharing its key): equal values would not match; join ON columns that share a deterministic key, or join in the application",
                        name,
                        column.map_or(name.to_string(), |c| c.id.to_string())
                    )));
                }
            }
        }
        Ok(())
    }

    /// NATURAL JOIN joins on whichever columns share a name, which pgcloak cannot see.
    fn natural_join(&self) -> Result {
        let level = self.levels.last().map(Vec::as_slice).unwrap_or_default();
        match levels::expand_all(level, self.policy).first_pii() {
            Some(column) => Err(Refusal::unsupported(format!(
                "NATURAL JOIN joins on every column name the two sides share, and {} is encrypted by pgcloak; name the join columns with JOIN ... ON or USING",
                column.id
            ))),
            None => Ok(()),
        }
    }

    /// An output column: a PII column (possibly cast to text) is decrypted in the result;
    /// count() of one reveals nothing but NULL-ness (and equality, for DISTINCT).
    pub(super) fn projection(&mut self, expr: &Expr) -> Result<Output> {
        if let Expr::Subquery(query) = strip(expr) {
            return Ok(self.query(query)?.single());
        }
        if let Some(column) = self.pii(expr) {
            self.recognise(expr);
            return Ok(Output::Pii(column));
        }
        // `col IS [NOT] NULL` works on ciphertext (NULL stays NULL), as in a WHERE.
        if let Expr::IsNull(inner) | Expr::IsNotNull(inner) = strip(expr) {
            if self.recognise(inner) {
                return Ok(Output::Plain);
            }
        }
        if let Expr::Function(function) = expr {
            let name = function.name.to_string().to_lowercase();
            if let (true, FunctionArguments::List(list)) = (name == "count", &function.args) {
                if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_slice() {
                    if list.duplicate_treatment.is_some() {
                        self.require_deterministic(arg, "count(DISTINCT ...)")?;
                    }
                    if self.recognise(arg) {
                        return Ok(Output::Plain);
                    }
                }
            }
        }
        self.other(expr)?;
        Ok(Output::Plain)
    }
}

/// The PII column an ORDER BY or GROUP BY item names as an output column: by its name
/// (`ORDER BY e` after `email AS e`) or position (`ORDER BY 1`).
fn output_pii(outputs: &Outputs, expr: &Expr) -> Option<PiiColumn> {
    match expr {
        Expr::Identifier(ident) => {
            let name = normalize(ident);
            outputs
                .columns
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                .and_then(|(_, output)| output.column().cloned())
        }
        Expr::Value(value) => {
            let Value::Number(n, _) = &value.value else {
                return None;
            };
            // After a `*`, positions are not known: see `by_unknown_position`.
            let position: usize = n.parse().ok().filter(|_| outputs.complete)?;
            outputs
                .columns
                .get(position.checked_sub(1)?)?
                .1
                .column()
                .cloned()
        }
        _ => None,
    }
}

/// `ORDER BY 2` / `GROUP BY 2` after a `*` that shows PII columns: which column that is,
/// pgcloak cannot tell.
fn by_unknown_position(outputs: &Outputs, expr: &Expr, clause: &str) -> Result {
    let positional = matches!(expr, Expr::Value(v) if matches!(v.value, Value::Number(..)));
    match (positional && !outputs.complete, outputs.first_pii()) {
        (true, Some(column)) => Err(Refusal::unsupported(format!(
            "{clause} {expr} comes after a * that includes {} (encrypted by pgcloak) at a position pgcloak does not know; name the column instead",
            column.id
        ))),
        _ => Ok(()),
    }
}

/// The name a `TABLE name` command reads.
pub(super) fn table_name(table: &sqlparser::ast::Table) -> Option<ObjectName> {
    let parts = table.schema_name.iter().chain(&table.table_name).cloned();
    let name = ObjectName::from(parts.collect::<Vec<_>>());
    table.table_name.as_ref().map(|_| name)
}

/// The alias name of a table function, UNNEST, ... in FROM.
fn table_alias(factor: &TableFactor) -> Option<String> {
    match factor {
        TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::TableFunction { alias, .. } => alias.as_ref().map(|a| normalize(&a.name)),
        _ => None,
    }
}

/// A UNION ALL column holding a PII column's values among others.
fn mixed(output: Output) -> Output {
    match output {
        Output::Pii(column) => Output::Mixed(column),
        other => other,
    }
}

/// The name of a select-list item's output column that pgcloak may need to find again: its
/// alias; else, as Postgres names it, a column's own name through casts and parentheses, or
/// a function's name.
pub(super) fn output_name(item: &SelectItem, expr: &Expr) -> Option<String> {
    if let SelectItem::ExprWithAlias { alias, .. } = item {
        return Some(normalize(alias));
    }
    match strip(expr) {
        Expr::Identifier(ident) => Some(normalize(ident)),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalize),
        Expr::Function(function) => name_parts(&function.name).pop(),
        _ => None,
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c) => Some(c),
        _ => None,
    }
}
