//! Predicates: where a PII column may be compared (=, IN, IS NULL, ANY) and with what.

use super::recording::Place;
use super::*;
use crate::pgtype::{Kind, PgType};

impl Walk<'_> {
    // ---- predicates ----------------------------------------------------------------

    pub(in crate::sql) fn predicate(&mut self, expr: &Expr) -> Result {
        match expr {
            Expr::Nested(inner) => self.predicate(inner),
            Expr::UnaryOp { expr: inner, .. } => self.predicate(inner),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And | BinaryOperator::Or => {
                    self.predicate(left)?;
                    self.predicate(right)
                }
                BinaryOperator::Eq => self.compare(left, right, Search::Equal),
                BinaryOperator::NotEq => self.compare(left, right, Search::NotEqual),
                _ => self.other(expr),
            },
            Expr::IsDistinctFrom(left, right) | Expr::IsNotDistinctFrom(left, right) => {
                self.compare(left, right, Search::Fixed)
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
                    self.not_as_text(left, &column)?;
                    self.recognise(left);
                    for item in list {
                        self.bind_search_value(item, &column, Search::ListItem)?;
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
            } => {
                let column = self.pii(left);
                let ty = column
                    .as_ref()
                    .map_or(PgType::new(Kind::Text), |c| self.declared_type(c));
                match (column, strip_for(right, &ty, true)) {
                    (Some(column), Expr::Value(_)) => {
                        self.searchable(&column, "= ANY(...)")?;
                        self.not_as_text(left, &column)?;
                        let place = Place::searched(right, true, Search::Equal);
                        match bound_for(right, &ty, true) {
                            Bound::Param(n, span) => self.bind_param(n, span, &column, place)?,
                            Bound::Literal(value, span) => {
                                self.bind_literal(value, span, &column, place)?
                            }
                            Bound::Null => self.casts_around(right, &column, true)?,
                            _ => return self.other(expr),
                        }
                        self.recognise(left);
                        Ok(())
                    }
                    (Some(column), Expr::Array(array)) => {
                        self.searchable(&column, "= ANY(ARRAY[...])")?;
                        self.not_as_text(left, &column)?;
                        if crate::sql::operand::declares(right, &ty, true) {
                            return Err(array_constructor_cast(&column, &ty));
                        }
                        self.recognise(left);
                        for item in &array.elem {
                            self.bind_search_value(item, &column, Search::ListItem)?;
                        }
                        Ok(())
                    }
                    (_, Expr::Subquery(subquery)) => {
                        self.compare_with_query(left, subquery, "= ANY(SELECT ...)")
                    }
                    (Some(column), _) => match foreign_cast(right, &ty, true) {
                        Some(cast) => Err(foreign_cast_refusal(&column, &ty, &cast)),
                        None => self.other(expr),
                    },
                    _ => self.other(expr),
                }
            }
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
    /// same column (equal ciphertexts mean equal values). `search`: how a value on the right
    /// is compared (a value on the left is [`Search::Fixed`]).
    pub(super) fn compare(&mut self, left: &Expr, right: &Expr, search: Search) -> Result {
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
                self.not_as_text(left, &l)?;
                self.not_as_text(right, &r)?;
                if !self.same_key(&l, &r) {
                    return Err(different_keys(&l, &r));
                }
                self.compared_by_ciphertext(&l);
                self.compared_by_ciphertext(&r);
                self.recognise(left);
                self.recognise(right);
                Ok(())
            }
            (Some(column), None) => {
                self.searchable(&column, "=")?;
                self.not_as_text(left, &column)?;
                self.recognise(left);
                self.bind_search_value(right, &column, search)
            }
            (None, Some(column)) => {
                self.searchable(&column, "=")?;
                self.not_as_text(right, &column)?;
                self.recognise(right);
                self.bind_search_value(left, &column, Search::Fixed)
            }
            (None, None) => {
                self.other(left)?;
                self.other(right)
            }
        }
    }

    /// `value = (SELECT ...)`, `value IN (SELECT ...)`: the query's one output column is
    /// compared with `value` like a column would be.
    pub(super) fn compare_with_query(
        &mut self,
        value: &Expr,
        query: &Query,
        operation: &str,
    ) -> Result {
        let output = self.query(query)?.single();
        match (self.pii(value), output) {
            (None, Output::Plain) => self.other(value),
            (Some(column), Output::Pii(selected)) => {
                self.searchable(&column, operation)?;
                self.searchable(&selected, operation)?;
                self.not_as_text(value, &column)?;
                if !self.same_key(&column, &selected) {
                    return Err(different_keys(&column, &selected));
                }
                self.compared_by_ciphertext(&column);
                self.compared_by_ciphertext(&selected);
                self.recognise(value);
                Ok(())
            }
            // A literal or parameter compared with an encrypted subquery result.
            (None, Output::Pii(selected)) => {
                self.searchable(&selected, operation)?;
                self.compared_by_ciphertext(&selected);
                self.bind_search_value(value, &selected, Search::Fixed)
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

    pub(in crate::sql) fn searchable(&self, column: &PiiColumn, operation: &str) -> Result {
        match column.mode {
            Mode::Deterministic => Ok(()),
            Mode::Randomized => Err(Refusal::unsupported(format!(
                "{operation} on {} cannot work: the column is encrypted in randomized mode, so equal values have different ciphertexts; make it `deterministic` in the pgcloak policy to search it by equality, or filter in the application",
                column.id
            ))),
        }
    }

    /// `expr`, when it is a PII column, has its values compared with each other
    /// (`GROUP BY`, `DISTINCT`): only a deterministic column can be.
    pub(in crate::sql) fn require_deterministic(&self, expr: &Expr, operation: &str) -> Result {
        match self.pii(expr) {
            Some(column) => {
                self.searchable(&column, operation)?;
                self.not_as_text(expr, &column)?;
                self.compared_by_ciphertext(&column);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The value side of `pii_column = value`.
    pub(super) fn bind_search_value(
        &mut self,
        expr: &Expr,
        column: &PiiColumn,
        search: Search,
    ) -> Result {
        let place = Place::searched(expr, false, search);
        let ty = self.declared_type(column);
        match bound_for(expr, &ty, false) {
            Bound::Literal(value, span) => self.bind_literal(value, span, column, place),
            Bound::Param(n, span) => self.bind_param(n, span, column, place),
            Bound::Null => self.casts_around(expr, column, false),
            Bound::Default | Bound::Other => match foreign_cast(expr, &ty, false) {
                Some(cast) => Err(foreign_cast_refusal(column, &ty, &cast)),
                None => Err(Refusal::unsupported(format!(
                "{} is encrypted by pgcloak and can only be compared with a literal or a bind parameter (cast, if at all, to text or to its declared type without another modifier), not an expression; compute the value in the application and pass it as a parameter",
                column.id
            ))),
            },
        }
    }

    /// A typed PII column cast to text (`dob::text = '...'`): Postgres would compare the
    /// texts, where pgcloak's ciphertexts compare values of the declared type (`1.50` and
    /// `1.5` are one numeric but two texts), so the answer could silently differ.
    pub(in crate::sql) fn not_as_text(&self, expr: &Expr, column: &PiiColumn) -> Result {
        let mut inner = expr;
        while let Expr::Nested(next) = inner {
            inner = next;
        }
        let ty = self.declared_type(column);
        match inner {
            Expr::Cast { .. } if is_typed(&ty) => Err(Refusal::unsupported(format!(
                "{} is declared as {} in the pgcloak policy, and pgcloak compares its values as {}, not as text: compare the column itself, without a cast",
                column.id,
                ty.name(),
                ty.name()
            ))),
            _ => Ok(()),
        }
    }
}

/// `col = ANY(ARRAY[...]::date[])`: the array constructor's end is not in the parser's
/// spans, so the cast's type name cannot be found to be rewritten.
pub(in crate::sql) fn array_constructor_cast(column: &PiiColumn, ty: &PgType) -> Refusal {
    let name = ty.name();
    Refusal::unsupported(format!(
        "pgcloak cannot rewrite a cast to {name}[] around ARRAY[...] for {}; cast each element (ARRAY['...'::{name}, ...]) or write the array as '{{...}}'::{name}[] or a parameter $1::{name}[]",
        column.id
    ))
}
