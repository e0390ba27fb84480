//! Predicates: where a PII column may be compared (=, IN, IS NULL, ANY) and with what.

use super::*;

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
            } => match (self.pii(left), strip_text_array_cast(right)) {
                (Some(column), array @ Expr::Value(_)) => {
                    self.searchable(&column, "= ANY(...)")?;
                    match bound(array) {
                        Bound::Param(n, span) => {
                            self.bind_param(n, span, &column, true, Some((Search::Equal, None)))?
                        }
                        Bound::Literal(value, span) => self.bind_literal(
                            value,
                            span,
                            &column.id,
                            true,
                            Some((Search::Equal, None)),
                        )?,
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
                        self.bind_search_value(item, &column, Search::ListItem)?;
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
                self.recognise(left);
                self.bind_search_value(right, &column, search)
            }
            (None, Some(column)) => {
                self.searchable(&column, "=")?;
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
        let search = Some((search, Some(expr)));
        match bound(expr) {
            Bound::Literal(value, span) => {
                self.bind_literal(value, span, &column.id, false, search)
            }
            Bound::Param(n, span) => self.bind_param(n, span, column, false, search),
            Bound::Null => Ok(()),
            Bound::Default | Bound::Other(_) => Err(Refusal::unsupported(format!(
                "{} is encrypted by pgcloak and can only be compared with a literal or a bind parameter, not an expression; compute the value in the application and pass it as a parameter",
                column.id
            ))),
        }
    }
}
