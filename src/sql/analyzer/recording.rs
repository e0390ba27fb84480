//! Recording what the walk finds into the plan: the literals and parameters bound for PII
//! columns (with how each search value is compared), and the columns compared by
//! ciphertext.

use super::*;

impl Walk<'_> {
    pub(in crate::sql) fn bind_literal(
        &mut self,
        kind: LiteralKind,
        span: Span,
        column: &ColumnId,
        array: bool,
        search: Option<(Search, Option<&Expr>)>,
    ) -> Result {
        let range = self.index.range(span).ok_or_else(|| {
            Refusal::unsupported(format!(
                "pgcloak could not locate the value for {column} in the statement text; bind it as a parameter instead"
            ))
        })?;
        let column = self.plan.intern(column);
        let operand = self.operand(search, &range);
        self.plan.literals.push(LiteralSlot {
            range,
            kind,
            column,
            array,
            search: search.map(|(search, _)| search),
            operand,
        });
        Ok(())
    }

    pub(in crate::sql) fn bind_param(
        &mut self,
        n: usize,
        span: Span,
        column: &PiiColumn,
        array: bool,
        search: Option<(Search, Option<&Expr>)>,
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
        let range = self.index.range(span).ok_or_else(|| {
            Refusal::unsupported(format!(
                "pgcloak could not locate ${n} for {} in the statement text",
                column.id
            ))
        })?;
        let operand = self.operand(search, &range);
        self.plan.param_uses.push(ParamUse {
            n,
            range,
            search: search.map(|(search, _)| search),
            operand,
        });
        match self.plan.params.get(&n) {
            Some(existing) if *existing != slot => Err(param_reused(n, &column.id)),
            _ => {
                self.plan.params.insert(n, slot);
                Ok(())
            }
        }
    }

    /// The extent of an `Equal` / `NotEqual` search value's whole operand `expr` (see
    /// [`LiteralSlot::operand`]), given the value's own range.
    fn operand(
        &self,
        search: Option<(Search, Option<&Expr>)>,
        value: &std::ops::Range<usize>,
    ) -> Option<std::ops::Range<usize>> {
        match search? {
            (Search::Equal | Search::NotEqual, Some(expr)) => {
                crate::sql::operand::operand_extent(self.index.text(), expr, value.clone())
            }
            _ => None,
        }
    }

    /// `column`'s values are compared with each other (not with a search value): equal
    /// values must have equal ciphertexts (see [`StatementPlan::compared_by_ciphertext`]).
    pub(in crate::sql) fn compared_by_ciphertext(&self, column: &PiiColumn) {
        let mut compared = self.compared.borrow_mut();
        if !compared.contains(&column.id) {
            compared.push(column.id.clone());
        }
    }
}
