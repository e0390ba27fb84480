//! `INSERT INTO t (cols) SELECT v.a, v.b::text FROM (VALUES (...), (...)) AS v(a, b) ...`:
//! the rows still come from literals and parameters, only routed through a derived table.
//! SQLAlchemy sends this shape for every multi-row ORM flush ("insertmanyvalues", with an
//! extra counter column to ORDER BY). Each selected column is traced back to its VALUES
//! column, whose values are then encrypted for the target column like a plain VALUES list.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Query, Select, SelectItem, SetExpr, TableFactor, Values, Visit, Visitor,
};

use super::analyzer::{strip, strip_for, Result, Walk};
use super::names::{normalize, PiiColumn};

impl Walk<'_> {
    /// Binds the VALUES rows behind `source` to `targets` (the INSERT's column list, PII
    /// or not), or returns Ok(false) when `source` is not that shape.
    pub(super) fn insert_from_values(
        &mut self,
        source: &Query,
        targets: &[Option<PiiColumn>],
    ) -> Result<bool> {
        let Some((select, values, names)) = values_select(source) else {
            return Ok(false);
        };
        if select.projection.len() != targets.len() {
            return Ok(false);
        }
        // For each target column, the VALUES column it is taken from.
        let mut sources = Vec::with_capacity(targets.len());
        let mut others = Vec::new();
        // The casts to a typed target's declared type around the VALUES column selected.
        let mut casts = Vec::new();
        for (item, target) in select.projection.iter().zip(targets) {
            let expr = match item {
                SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => expr,
                _ => return Ok(false),
            };
            let source = match target {
                Some(column) => {
                    value_column(strip_for(expr, &self.declared_type(column), false), &names)
                }
                None => value_column(strip(expr), &names),
            };
            match (target, source) {
                (Some(_), None) => return Ok(false),
                (Some(column), Some(_)) => casts.push((expr, column)),
                (None, _) => others.push(expr),
            }
            sources.push(source.filter(|_| target.is_some()));
        }
        let width = names.len();
        let mut bound = vec![false; width];
        for row in &values.rows {
            if row.content.len() != width {
                return Ok(false);
            }
        }
        for (target, source) in targets.iter().zip(&sources) {
            if let (Some(column), Some(k)) = (target, source) {
                if bound[*k] {
                    return Ok(false); // one VALUES column feeding two targets
                }
                bound[*k] = true;
                for row in &values.rows {
                    self.bind_write_value(&row.content[*k], column, false)?;
                }
            }
        }
        for (expr, column) in casts {
            self.casts_around(expr, column, false)?;
        }
        for (k, _) in bound.iter().enumerate().filter(|(_, b)| !**b) {
            for row in &values.rows {
                self.other(&row.content[k])?;
            }
        }
        // Everything else may use the plain VALUES columns only: a PII value (encrypted in
        // the VALUES) must not flow into another column, a filter or the sort order.
        let order_by = match source.order_by.as_ref().map(|o| &o.kind) {
            Some(sqlparser::ast::OrderByKind::Expressions(exprs)) => {
                exprs.iter().map(|item| &item.expr).collect()
            }
            _ => Vec::new(),
        };
        let rest = others
            .into_iter()
            .chain(select.selection.as_ref())
            .chain(order_by);
        for expr in rest {
            let mut uses = UsesColumns {
                names: &names,
                bound: &bound,
            };
            if expr.visit(&mut uses).is_break() {
                return Ok(false);
            }
            self.other(expr)?;
        }
        Ok(true)
    }
}

/// Breaks at a reference to a VALUES column that feeds a PII column.
struct UsesColumns<'n> {
    names: &'n [String],
    bound: &'n [bool],
}

impl Visitor for UsesColumns<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match value_column(expr, self.names) {
            Some(k) if self.bound[k] => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// `SELECT ... FROM (VALUES ...) AS alias(names)` and nothing else around it: the select,
/// its VALUES and the derived table's column names (PostgreSQL's `column1`, ... by default).
fn values_select(query: &Query) -> Option<(&Select, &Values, Vec<String>)> {
    if query.with.is_some() || query.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain = select.distinct.is_none()
        && select.having.is_none()
        && matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !plain || !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Derived {
        lateral: false,
        subquery,
        alias,
        ..
    } = &from.relation
    else {
        return None;
    };
    if subquery.with.is_some() || subquery.order_by.is_some() {
        return None;
    }
    let SetExpr::Values(values) = subquery.body.as_ref() else {
        return None;
    };
    let width = values.rows.first()?.content.len();
    let alias = alias.as_ref()?;
    let mut names: Vec<String> = alias.columns.iter().map(|c| normalize(&c.name)).collect();
    if names.len() > width {
        return None;
    }
    names.extend((names.len() + 1..=width).map(|i| format!("column{i}")));
    let qualifier = normalize(&alias.name);
    let names = names
        .into_iter()
        .map(|n| format!("{qualifier}.{n}"))
        .collect();
    Some((select, values, names))
}

/// The index of the VALUES column `expr` names (`alias.name` or bare `name`).
fn value_column(expr: &Expr, names: &[String]) -> Option<usize> {
    let qualified = match expr {
        Expr::Identifier(ident) => {
            let name = normalize(ident);
            let found: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| n.rsplit('.').next() == Some(name.as_str()))
                .map(|(i, _)| i)
                .collect();
            return match found.as_slice() {
                [i] => Some(*i),
                _ => None,
            };
        }
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [qualifier, name] => format!("{}.{}", normalize(qualifier), normalize(name)),
            _ => return None,
        },
        _ => return None,
    };
    names.iter().position(|n| *n == qualified)
}
