//! Bulk inserts from arrays: `INSERT INTO t (a, b) SELECT * FROM UNNEST($1::varchar[],
//! $2::text[])` (Django 5.2's bulk_create, sqlx's bulk-insert idiom), the same with the
//! arrays written inline (`'{...}'::text[]`, `ARRAY['a', 'b']`), with an alias and column
//! list (`AS x(a, b)`), and `INSERT ... SELECT unnest($1::text[]), unnest($2::text[])`.
//! Each array is matched to its target column by position; an array feeding a PII column is
//! encrypted element by element (an array parameter or literal slot), or element-wise as
//! literals and parameters when written as `ARRAY[...]`.

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Query, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, TableFactor,
};

use super::analyzer::{
    array_constructor_cast, bound_for, is_typed, strip, strip_for, Bound, Place, Result, Walk,
};
use super::names::{name_parts, normalize, PiiColumn};
use super::Refusal;

impl Walk<'_> {
    /// Binds the arrays behind `source` to `targets` (the INSERT's column list), or returns
    /// Ok(false) when `source` is not one of the shapes above.
    pub(super) fn insert_from_unnest(
        &mut self,
        source: &Query,
        targets: &[Option<PiiColumn>],
    ) -> Result<bool> {
        let Some(columns) = unnest_columns(source) else {
            return Ok(false);
        };
        if columns.len() != targets.len() {
            return Ok(false);
        }
        // Each array feeds one target at most when it feeds a PII column.
        let mut fed = vec![0usize; columns.len()];
        for column in &columns {
            if let Column::Array(k) = column {
                fed[*k] += 1;
            }
        }
        let shape_fits = columns
            .iter()
            .zip(targets)
            .all(|(column, target)| match column {
                Column::Array(k) => target.is_none() || fed[*k] == 1,
                Column::Other(_) => target.is_none(),
            });
        if !shape_fits {
            return Ok(false);
        }
        let arrays = unnest_arrays(source);
        let mut bound = vec![false; arrays.len()];
        for (column, target) in columns.iter().zip(targets) {
            match (column, target) {
                (Column::Array(k), Some(pii)) => {
                    bound[*k] = true;
                    self.bind_array(arrays[*k], pii)?;
                }
                (Column::Other(expr), _) => self.other(expr)?,
                (Column::Array(_), None) => {}
            }
        }
        for (k, array) in arrays.iter().enumerate() {
            if !bound[k] {
                self.other(array)?;
            }
        }
        Ok(true)
    }

    /// An array whose elements are written into `column`.
    fn bind_array(&mut self, array: &Expr, column: &PiiColumn) -> Result {
        let ty = self.declared_type(column);
        let element = if is_typed(&ty) {
            ty.name()
        } else {
            "varchar".to_owned()
        };
        let cannot = || {
            Refusal::unsupported(format!(
                "the array inserted into {} cannot be encrypted by pgcloak: pass it as a parameter or literal of type text[] or {element}[] (or as ARRAY[...] of literals and parameters), without a length limit on its elements",
                column.id
            ))
        };
        let place = Place::written(array, true);
        match strip_for(array, &ty, true) {
            Expr::Array(elements) => {
                if super::operand::declares(array, &ty, true) {
                    return Err(array_constructor_cast(column, &ty));
                }
                for element in &elements.elem {
                    self.bind_write_value(element, column, false)?;
                }
                Ok(())
            }
            inner @ Expr::Value(_) => match bound_for(array, &ty, true) {
                Bound::Param(n, span) => self.bind_param(n, span, column, place),
                Bound::Literal(value, span) if is_array_literal(inner) => {
                    self.bind_literal(value, span, column, place)
                }
                Bound::Null => self.casts_around(array, column, true),
                _ => Err(cannot()),
            },
            _ => Err(cannot()),
        }
    }
}

/// What an output column of the source query is.
enum Column<'q> {
    /// The elements of the k-th array.
    Array(usize),
    /// Anything else (a plain value of the select list).
    Other(&'q Expr),
}

/// A quoted literal (not a number): `'{a,b}'`, `E'{...}'`, `$${...}$$`.
fn is_array_literal(expr: &Expr) -> bool {
    use sqlparser::ast::Value;
    matches!(
        expr,
        Expr::Value(v) if matches!(
            v.value,
            Value::SingleQuotedString(_)
                | Value::EscapedStringLiteral(_)
                | Value::DollarQuotedString(_)
        )
    )
}

/// The arrays a source of one of the shapes reads, in order.
fn unnest_arrays(source: &Query) -> Vec<&Expr> {
    let SetExpr::Select(select) = source.body.as_ref() else {
        return Vec::new();
    };
    match select.from.as_slice() {
        [from] => match &from.relation {
            TableFactor::UNNEST { array_exprs, .. } => array_exprs.iter().collect(),
            _ => Vec::new(),
        },
        _ => select
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                    unnest_call(expr)
                }
                _ => None,
            })
            .collect(),
    }
}

/// The output columns of `SELECT ... FROM UNNEST(...)` or `SELECT unnest(...), ...`, when
/// the query is exactly that: no WITH, WHERE, GROUP BY, DISTINCT, ORDER BY, LIMIT or join.
fn unnest_columns(source: &Query) -> Option<Vec<Column<'_>>> {
    if source.with.is_some()
        || source.order_by.is_some()
        || source.limit_clause.is_some()
        || source.fetch.is_some()
    {
        return None;
    }
    let SetExpr::Select(select) = source.body.as_ref() else {
        return None;
    };
    let plain = select.distinct.is_none()
        && select.selection.is_none()
        && select.having.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if !plain {
        return None;
    }
    match select.from.as_slice() {
        [] => {
            let mut k = 0;
            let mut columns = Vec::new();
            for item in &select.projection {
                let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
                else {
                    return None;
                };
                columns.push(match unnest_call(expr) {
                    Some(_) => {
                        k += 1;
                        Column::Array(k - 1)
                    }
                    None => Column::Other(expr),
                });
            }
            Some(columns)
        }
        [from] if from.joins.is_empty() => {
            let TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset: false,
                with_ordinality,
                ..
            } = &from.relation
            else {
                return None;
            };
            let width = array_exprs.len();
            let alias_name = alias.as_ref().map(|a| normalize(&a.name));
            let mut names: Vec<String> = alias
                .iter()
                .flat_map(|a| &a.columns)
                .map(|c| normalize(&c.name))
                .collect();
            if names.len() > width + usize::from(*with_ordinality) {
                return None;
            }
            // Without a column list a single array's column is named `unnest`.
            if names.is_empty() && width == 1 {
                names.push(alias_name.clone().unwrap_or_else(|| "unnest".to_owned()));
            }
            let wildcard = |item: &SelectItem| match item {
                SelectItem::Wildcard(_) => true,
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) => alias_name.as_deref() == Some(name_parts(name).join(".").as_str()),
                _ => false,
            };
            // `*` with ORDINALITY also shows the counter: not followed here.
            if *with_ordinality && select.projection.iter().any(wildcard) {
                return None;
            }
            let mut columns = Vec::new();
            for item in &select.projection {
                match item {
                    item if wildcard(item) => columns.extend((0..width).map(Column::Array)),
                    SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                        match named_column(strip(expr), &names, alias_name.as_deref()) {
                            Some(k) if k < width => columns.push(Column::Array(k)),
                            Some(_) => columns.push(Column::Other(expr)), // ordinality
                            None if mentions(expr, &names) => return None,
                            None => columns.push(Column::Other(expr)),
                        }
                    }
                    _ => return None,
                }
            }
            Some(columns)
        }
        _ => None,
    }
}

/// `unnest(array)` with one argument: the array.
fn unnest_call(expr: &Expr) -> Option<&Expr> {
    let Expr::Function(function) = expr else {
        return None;
    };
    if name_parts(&function.name).last().map(String::as_str) != Some("unnest")
        || function.over.is_some()
        || function.filter.is_some()
    {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(array))] if list.clauses.is_empty() => {
            Some(array)
        }
        _ => None,
    }
}

/// The position of the UNNEST column `expr` names (`a` or `x.a`).
fn named_column(expr: &Expr, names: &[String], alias: Option<&str>) -> Option<usize> {
    let name = match expr {
        Expr::Identifier(ident) => normalize(ident),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [qualifier, name] if Some(normalize(qualifier).as_str()) == alias => normalize(name),
            _ => return None,
        },
        _ => return None,
    };
    names.iter().position(|n| *n == name)
}

/// Whether `expr` uses an UNNEST column inside a larger expression (`lower(a)`): the values
/// would be ciphertext there.
fn mentions(expr: &Expr, names: &[String]) -> bool {
    use sqlparser::ast::{Visit, Visitor};
    use std::ops::ControlFlow;
    struct Finder<'n>(&'n [String]);
    impl Visitor for Finder<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let name = match expr {
                Expr::Identifier(ident) => Some(normalize(ident)),
                Expr::CompoundIdentifier(parts) => parts.last().map(normalize),
                _ => None,
            };
            match name {
                Some(name) if self.0.contains(&name) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    expr.visit(&mut Finder(names)).is_break()
}
