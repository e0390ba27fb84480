//! Lexing that depends on `standard_conforming_strings`. pgcloak (sqlparser's
//! PostgreSqlDialect) lexes '...' literals as Postgres does with the setting on: a backslash
//! is an ordinary character. With it off, Postgres reads a backslash in '...' as an escape
//! (`'a\'` does not end there), so the token structure of a string is the same under both
//! settings exactly when no ordinary '...' literal contains a backslash (E'...', $$...$$
//! and U&'...' are lexed the same either way). A string that names a PII table and has such
//! a literal gets `lexing_depends_on_scs` in its plan (the session refuses it unless the
//! setting is known to be on); with several statements it is refused outright.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::Refusal;

/// True when an ordinary '...' literal of `sql` contains a backslash (or the text cannot
/// be tokenized, which is treated the same way: fail closed).
pub(super) fn depends_on_scs(sql: &str) -> bool {
    if !sql.contains('\\') {
        return false;
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return true;
    };
    tokens.iter().any(|token| match token {
        Token::SingleQuotedString(s)
        | Token::NationalStringLiteral(s)
        | Token::HexStringLiteral(s) => s.contains('\\'),
        _ => false,
    })
}

pub(super) fn multi_statement_refusal() -> Refusal {
    Refusal::unsupported(
        "this query string names a table with encrypted columns and has several statements, and one of its '...' literals contains a backslash: with standard_conforming_strings off Postgres would split it into statements differently than pgcloak reads it; send the statements one at a time, or write the literal as E'...' with the backslash doubled".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ordinary_literals_with_a_backslash_depend_on_the_setting() {
        for sql in [
            r"SELECT 'a\'",
            r"INSERT INTO users (email) VALUES ('v\tx')",
            r"SELECT 'x\'; INSERT INTO users (email) VALUES (''p''); --'",
        ] {
            assert!(depends_on_scs(sql), "{sql}");
        }
        for sql in [
            "SELECT 'plain'",
            r"SELECT E'a\tb'",
            r"SELECT $$a\b$$",
            r"SELECT U&'caf\00e9'",
            r"SELECT 1 -- a \ in a comment",
            r#"SELECT "odd\name" FROM users"#,
        ] {
            assert!(!depends_on_scs(sql), "{sql}");
        }
    }
}
