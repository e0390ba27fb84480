//! The text extent of a compared value together with the wrappers the analysis looks
//! through (parentheses, and casts to text types: see `analyzer::strip`). The parser's spans
//! cover only the value itself (`$1` of `$1::text`), so a rewrite of the whole operand
//! (`= $1::text` → `= ANY($1::text::text[])`) finds the wrappers' tokens in the text around
//! it. Anything unexpected there (a comment, another spelling) gives None, and the caller
//! refuses rather than guess.

use std::ops::Range;

use sqlparser::ast::{CastKind, Expr};

/// The byte range of `expr` in `sql`, given the range of the value inside its wrappers.
pub(crate) fn operand_extent(sql: &str, expr: &Expr, value: Range<usize>) -> Option<Range<usize>> {
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
                ..
            } => {
                if !super::analyzer::is_text_type(&data_type.to_string()) {
                    return None;
                }
                wrappers.push(match kind {
                    CastKind::DoubleColon => Wrapper::Colons,
                    CastKind::Cast => Wrapper::CastCall,
                    _ => return None,
                });
                inner = next;
            }
            _ => break,
        }
    }
    let (mut start, mut end) = (value.start, value.end);
    for wrapper in wrappers.iter().rev() {
        match wrapper {
            Wrapper::Parens => {
                start = before(sql, start, "(")?;
                end = after(sql, end, ")")?;
            }
            Wrapper::Colons => end = type_name(sql, after(sql, end, "::")?)?,
            Wrapper::CastCall => {
                start = before_word(sql, before(sql, start, "(")?, "cast")?;
                end = after(sql, type_name(sql, after_word(sql, end, "as")?)?, ")")?;
            }
        }
    }
    Some(start..end)
}

enum Wrapper {
    Parens,
    /// `value::type`
    Colons,
    /// `CAST(value AS type)`
    CastCall,
}

/// The offset of `token` ending right before `pos` (blanks between allowed).
fn before(sql: &str, pos: usize, token: &str) -> Option<usize> {
    let text = sql.get(..pos)?.trim_end();
    text.ends_with(token).then(|| text.len() - token.len())
}

/// The offset right after `token` starting at `pos` (blanks before it allowed).
fn after(sql: &str, pos: usize, token: &str) -> Option<usize> {
    let rest = sql.get(pos..)?;
    let text = rest.trim_start();
    let at = pos + (rest.len() - text.len());
    text.starts_with(token).then(|| at + token.len())
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$'
}

/// The start of the keyword `word` (any case) that ends right before `pos`.
fn before_word(sql: &str, pos: usize, word: &str) -> Option<usize> {
    let text = sql.get(..pos)?.trim_end();
    let start = text.len().checked_sub(word.len())?;
    let found = text.get(start..)?.eq_ignore_ascii_case(word);
    let bounded = start == 0 || !is_word_byte(text.as_bytes()[start - 1]);
    (found && bounded).then_some(start)
}

/// The end of the keyword `word` (any case) that starts at `pos`, after blanks.
fn after_word(sql: &str, pos: usize, word: &str) -> Option<usize> {
    let rest = sql.get(pos..)?;
    let text = rest.trim_start();
    let at = pos + (rest.len() - text.len());
    let found = text.get(..word.len())?.eq_ignore_ascii_case(word);
    let bounded = text
        .as_bytes()
        .get(word.len())
        .is_none_or(|&b| !is_word_byte(b));
    (found && bounded).then(|| at + word.len())
}

/// The end of a text type name (`text`, `varchar`, `character varying`) starting at `pos`.
fn type_name(sql: &str, pos: usize) -> Option<usize> {
    if let Some(end) = after_word(sql, pos, "character") {
        return after_word(sql, end, "varying");
    }
    after_word(sql, pos, "varchar").or_else(|| after_word(sql, pos, "text"))
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
