//! Recording what the walk finds into the plan: the literals and parameters bound for PII
//! columns (with how each search value is compared), and the columns compared by
//! ciphertext.

use super::*;
use crate::pgtype::{Kind, PgType};

/// Where a value bound for a PII column stands and how it is used.
#[derive(Clone, Copy)]
pub(in crate::sql) struct Place<'e> {
    /// The value as written, with the parentheses and casts around it.
    pub expr: &'e Expr,
    /// `= ANY(v)`, UNNEST(v): the value is an array whose elements are encrypted.
    pub array: bool,
    /// Where it is searched for (None: it is written).
    pub search: Option<Search>,
}

impl<'e> Place<'e> {
    pub(in crate::sql) fn written(expr: &'e Expr, array: bool) -> Place<'e> {
        Place {
            expr,
            array,
            search: None,
        }
    }

    pub(in crate::sql) fn searched(expr: &'e Expr, array: bool, search: Search) -> Place<'e> {
        Place {
            expr,
            array,
            search: Some(search),
        }
    }

    /// A search a rewrite may replace whole (see [`LiteralSlot::operand`]).
    fn replaceable(&self) -> bool {
        !self.array && matches!(self.search, Some(Search::Equal | Search::NotEqual))
    }
}

impl Walk<'_> {
    /// Records the type name written right after `name` (a column definition's) as one to
    /// write as `text`, if it is there and spells `printed`.
    pub(in crate::sql) fn type_as_text_after(&mut self, name: Span, printed: &str) -> bool {
        let sql = self.index.text();
        let range = (self.index.range(name))
            .and_then(|name| crate::sql::type_text::type_name_after(sql, name.end))
            .filter(|r| {
                sql.get(r.clone())
                    .is_some_and(|w| crate::sql::type_text::names(w, printed))
            });
        match range {
            Some(range) => {
                self.plan.casts.push(range);
                true
            }
            None => false,
        }
    }

    pub(in crate::sql) fn bind_literal(
        &mut self,
        kind: LiteralKind,
        span: Span,
        column: &PiiColumn,
        place: Place,
    ) -> Result {
        let lost = || {
            Refusal::unsupported(format!(
                "pgcloak could not locate the value for {} in the statement text; bind it as a parameter instead",
                column.id
            ))
        };
        let mut range = self.index.range(span).ok_or_else(lost)?;
        if kind == LiteralKind::NegativeNumber {
            range.start = super::super::type_text::minus_before(self.index.text(), range.start)
                .ok_or_else(lost)?;
        }
        let operand = self.wrappers(column, place, &range)?;
        let column = self.plan.intern(&column.id);
        self.plan.literals.push(LiteralSlot {
            range,
            kind,
            column,
            array: place.array,
            search: place.search,
            operand,
        });
        Ok(())
    }

    pub(in crate::sql) fn bind_param(
        &mut self,
        n: usize,
        span: Span,
        column: &PiiColumn,
        place: Place,
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
            array: place.array,
            declared: None,
        };
        self.bound_params.insert(span_of(span));
        let range = self.index.range(span).ok_or_else(|| {
            Refusal::unsupported(format!(
                "pgcloak could not locate ${n} for {} in the statement text",
                column.id
            ))
        })?;
        let operand = self.wrappers(column, place, &range)?;
        self.plan.param_uses.push(ParamUse {
            n,
            range,
            search: place.search,
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

    /// Records the casts to `column`'s declared type around a value (its range `value`),
    /// and gives the extent of a replaceable search operand (see [`LiteralSlot::operand`]).
    fn wrappers(
        &mut self,
        column: &PiiColumn,
        place: Place,
        value: &std::ops::Range<usize>,
    ) -> Result<Option<std::ops::Range<usize>>> {
        let ty = self.declared_type(column);
        let sql = self.index.text();
        let located = crate::sql::operand::locate(sql, place.expr, value.clone(), &ty, place.array);
        match located {
            Some(located) => {
                self.plan.casts.extend(located.casts);
                Ok(place.replaceable().then_some(located.extent))
            }
            None if crate::sql::operand::declares(place.expr, &ty, place.array) => {
                Err(unlocatable_cast(column, &ty))
            }
            None => Ok(None),
        }
    }

    /// Records the casts to `column`'s declared type around a value that is not itself
    /// encrypted: NULL (`NULL::date`), or a reference to values bound for the column elsewhere
    /// (`v.b::date` of `INSERT ... SELECT v.b::date FROM (VALUES ...) v(b)`).
    pub(in crate::sql) fn casts_around(
        &mut self,
        expr: &Expr,
        column: &PiiColumn,
        arrays: bool,
    ) -> Result {
        let ty = self.declared_type(column);
        if !crate::sql::operand::declares(expr, &ty, arrays) {
            return Ok(());
        }
        let inner = strip_for(expr, &ty, arrays);
        let sql = self.index.text();
        let located = self
            .index
            .range(inner.span())
            .and_then(|range| crate::sql::operand::locate(sql, expr, range, &ty, arrays))
            .ok_or_else(|| unlocatable_cast(column, &ty))?;
        self.plan.casts.extend(located.casts);
        Ok(())
    }

    /// The type the application sees for `column` (text unless the policy says otherwise).
    pub(in crate::sql) fn declared_type(&self, column: &PiiColumn) -> PgType {
        if !self.policy.has_typed() {
            return PgType::new(Kind::Text);
        }
        self.policy.column_type(&column.id.to_string())
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

/// A cast to a typed column's declared type whose type name pgcloak cannot find exactly in
/// the text, so cannot rewrite to `text`.
fn unlocatable_cast(column: &PiiColumn, ty: &PgType) -> Refusal {
    Refusal::unsupported(format!(
        "pgcloak could not find the type name of the cast to {} around the value for {} in the statement text (it must rewrite it to text, the column's type in Postgres); write the cast as value::{} or CAST(value AS {}) with no comment inside, or leave it out",
        ty.name(),
        column.id,
        ty.name(),
        ty.name()
    ))
}

/// A value for `column` cast to `cast`, another type than its declared type `ty` or text.
pub(in crate::sql) fn foreign_cast_refusal(column: &PiiColumn, ty: &PgType, cast: &str) -> Refusal {
    let fix = if is_typed(ty) {
        format!(
            "cast it to {} (with no other modifier) or to text",
            ty.name()
        )
    } else {
        "cast it to text".to_owned()
    };
    Refusal::unsupported(format!(
        "the value for {} is cast to {cast}, which is not the column's type ({}) in the pgcloak policy: the cast could change the value, or make Postgres read the encrypted text as {cast}; {fix}, or leave the cast out",
        column.id,
        ty.name()
    ))
}
