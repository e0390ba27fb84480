//! The text extent of a value bound for a PII column together with the wrappers the
//! analysis looks through (parentheses, casts to text types and to a typed column's declared
//! type, a typed string's type name: see `analyzer::strip_for`), and where the type names of
//! casts to the declared type stand, which the rewrite turns into `text`. The parser's spans
//! cover only the value itself (`$1` of `$1::date`), so the wrappers' tokens are found in the
//! text around it (`type_text`). Anything unexpected there (a comment, another spelling)
//! gives None, and the caller refuses rather than guess.

use std::ops::Range;

use sqlparser::ast::{CastKind, DataType, Expr, UnaryOperator};

use super::analyzer::{seen_cast, SeenCast};
use super::type_text::{
    after, after_word, array_suffix, before, before_word, names, type_name_after, type_name_before,
};
use crate::pgtype::PgType;

/// A value's wrappers, found in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// The value with its wrappers.
    pub extent: Range<usize>,
    /// The type names of casts to the column's declared type, innermost first.
    pub casts: Vec<Range<usize>>,
}

/// Whether the wrappers of `expr`, a value bound for a column of type `ty`, include a cast
/// to the declared type (which must then be located, or the statement refused).
pub(crate) fn declares(expr: &Expr, ty: &PgType, arrays: bool) -> bool {
    wrappers(expr, ty, arrays)
        .is_some_and(|w| w.iter().any(|w| w.cast().is_some_and(|c| c.declared)))
}

/// Where the wrappers of `expr` (a value bound for a column of type `ty`; with `arrays`, an
/// array of such values) stand in `sql`, given the range of the value inside them.
pub(crate) fn locate(
    sql: &str,
    expr: &Expr,
    value: Range<usize>,
    ty: &PgType,
    arrays: bool,
) -> Option<Located> {
    let (mut start, mut end) = (value.start, value.end);
    let mut casts = Vec::new();
    for wrapper in wrappers(expr, ty, arrays)?.iter().rev() {
        match wrapper {
            Wrapper::Parens => {
                start = before(sql, start, "(")?;
                end = after(sql, end, ")")?;
            }
            Wrapper::Colons(cast, data_type) => {
                let name = cast_type(sql, after(sql, end, "::")?, *cast, data_type)?;
                end = name.end;
                if cast.declared {
                    casts.push(name.name);
                }
            }
            Wrapper::CastCall(cast, data_type) => {
                start = before_word(sql, before(sql, start, "(")?, "cast")?;
                let name = cast_type(sql, after_word(sql, end, "as")?, *cast, data_type)?;
                end = after(sql, name.end, ")")?;
                if cast.declared {
                    casts.push(name.name);
                }
            }
            Wrapper::TypedString(cast, data_type) => {
                let name = type_name_before(sql, start, &data_type.to_string())?;
                start = name.start;
                if cast.declared {
                    casts.push(name);
                }
            }
        }
    }
    Some(Located {
        extent: start..end,
        casts,
    })
}

/// The wrappers of `expr` from the outside in, down to the value; None when one is not
/// seen through for `ty`.
fn wrappers<'e>(expr: &'e Expr, ty: &PgType, arrays: bool) -> Option<Vec<Wrapper<'e>>> {
    let mut wrappers = Vec::new();
    let mut inner = expr;
    loop {
        match inner {
            Expr::Nested(next) => {
                wrappers.push(Wrapper::Parens);
                inner = next;
            }
            Expr::Cast {
                expr: next,
                kind,
                data_type,
                format: None,
            } => {
                let cast = seen_cast(data_type, ty, arrays)?;
                wrappers.push(match kind {
                    CastKind::DoubleColon => Wrapper::Colons(cast, data_type),
                    CastKind::Cast => Wrapper::CastCall(cast, data_type),
                    _ => return None,
                });
                inner = next;
            }
            Expr::TypedString(typed) if !arrays && !typed.uses_odbc_syntax => {
                let cast = seen_cast(&typed.data_type, ty, false)?;
                wrappers.push(Wrapper::TypedString(cast, &typed.data_type));
                return Some(wrappers);
            }
            // The value's range already starts at the minus.
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                ..
            } => return Some(wrappers),
            _ => return Some(wrappers),
        }
    }
}

enum Wrapper<'e> {
    Parens,
    /// `value::type`
    Colons(SeenCast, &'e DataType),
    /// `CAST(value AS type)`
    CastCall(SeenCast, &'e DataType),
    /// `type 'value'`: the innermost.
    TypedString(SeenCast, &'e DataType),
}

impl Wrapper<'_> {
    fn cast(&self) -> Option<SeenCast> {
        match self {
            Wrapper::Parens => None,
            Wrapper::Colons(cast, _)
            | Wrapper::CastCall(cast, _)
            | Wrapper::TypedString(cast, _) => Some(*cast),
        }
    }
}

/// A cast's type name in the text: the name's range (without `[]`) and where the cast's
/// type ends (after `[]` for an array).
struct CastType {
    name: Range<usize>,
    end: usize,
}

/// The type name of a cast at `pos`, which must spell the cast's `data_type`.
fn cast_type(sql: &str, pos: usize, cast: SeenCast, data_type: &DataType) -> Option<CastType> {
    let name = type_name_after(sql, pos)?;
    let (printed, end) = match (cast.array, data_type) {
        (true, DataType::Array(sqlparser::ast::ArrayElemTypeDef::SquareBracket(element, None))) => {
            (element.to_string(), array_suffix(sql, name.end)?)
        }
        (false, _) => (data_type.to_string(), name.end),
        _ => return None,
    };
    names(sql.get(name.clone())?, &printed).then_some(CastType { name, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgtype::Kind;

    /// The byte range of `expr` in `sql`, given the range of the value inside its text-type
    /// wrappers (a value bound for a text column).
    fn operand_extent(sql: &str, expr: &Expr, value: Range<usize>) -> Option<Range<usize>> {
        locate(sql, expr, value, &PgType::new(Kind::Text), false).map(|found| found.extent)
    }

    use sqlparser::ast::{SetExpr, Spanned, Statement};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    /// The extent of the right operand of `WHERE email = <operand>`, as text.
    fn extent(operand: &str) -> Option<String> {
        let sql = format!("SELECT 1 FROM t WHERE email = {operand} AND id = 1");
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql).unwrap();
        let Statement::Query(query) = &statements[0] else {
            panic!()
        };
        let SetExpr::Select(select) = &*query.body else {
            panic!()
        };
        let Some(Expr::BinaryOp { left, .. }) = &select.selection else {
            panic!()
        };
        let Expr::BinaryOp { right, .. } = &**left else {
            panic!()
        };
        let mut value = &**right;
        while let Expr::Nested(inner) | Expr::Cast { expr: inner, .. } = value {
            value = inner;
        }
        let index = crate::sql::splice::LineIndex::new(&sql);
        let range = index.range(value.span()).unwrap();
        operand_extent(&sql, right, range).map(|r| sql[r].to_owned())
    }

    #[test]
    fn wrappers_around_a_value_are_part_of_its_extent() {
        for operand in [
            "$1",
            "'x'",
            "$1::text",
            "$1 :: VARCHAR",
            "'x'::character varying",
            "($1)",
            "( ( 'x' ) :: text )",
            "CAST($1 AS text)",
            "cast ( $1 as Character  Varying )",
            "(CAST(($1)::text AS varchar))",
        ] {
            assert_eq!(extent(operand).as_deref(), Some(operand), "{operand}");
        }
    }

    #[test]
    fn anything_unexpected_gives_none() {
        assert_eq!(extent("$1 /* c */ ::text"), None);
        assert_eq!(
            extent("$1::varchar(20)"),
            None,
            "not stripped by the analysis"
        );
    }

    #[test]
    fn casts_to_a_declared_type_are_located() {
        let date = PgType::parse("date").unwrap();
        let sql = "SELECT 1 FROM t WHERE d = CAST(($1)::text AS date) AND e = 1";
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let Statement::Query(query) = &statements[0] else {
            panic!()
        };
        let SetExpr::Select(select) = &*query.body else {
            panic!()
        };
        let Some(Expr::BinaryOp { left, .. }) = &select.selection else {
            panic!()
        };
        let Expr::BinaryOp { right, .. } = &**left else {
            panic!()
        };
        let value = sql.find("$1").unwrap();
        let found = locate(sql, right, value..value + 2, &date, false).unwrap();
        assert_eq!(&sql[found.extent], "CAST(($1)::text AS date)");
        let casts: Vec<&str> = found.casts.iter().map(|r| &sql[r.clone()]).collect();
        assert_eq!(casts, ["date"]);
        assert!(declares(right, &date, false));
        assert!(!declares(right, &PgType::new(Kind::Text), false));
        // Not seen through for a text column at all.
        assert_eq!(operand_extent(sql, right, value..value + 2), None);
    }
}
