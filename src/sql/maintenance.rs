//! Statements sqlparser cannot parse but that cannot carry or read a column's values:
//! `ALTER SEQUENCE ... OWNED BY t.c` (in every pg_dump of a table with a serial column),
//! VACUUM, ANALYZE, REINDEX, CLUSTER. Such a statement passes even when it names
//! a PII table — but only alone in its SQL string: another statement beside it could not be
//! checked, so the string is still refused.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

/// True when `sql` is exactly one statement of a kind that cannot touch column values.
pub(super) fn is_lone_maintenance(sql: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    let mut words = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .peekable();
    let first = words.next();
    let second = words.peek().copied();
    let safe = matches!(
        (keyword(first), keyword(second)),
        (Some(Keyword::ALTER), Some(Keyword::SEQUENCE))
            | (
                Some(Keyword::VACUUM | Keyword::ANALYZE | Keyword::REINDEX | Keyword::CLUSTER),
                _
            )
    );
    // One statement: no `;` but trailing ones (comments are whitespace tokens).
    let mut rest = tokens.iter().skip_while(|t| **t != Token::SemiColon);
    safe && rest.all(|t| matches!(t, Token::SemiColon | Token::Whitespace(_)))
}

fn keyword(token: Option<&Token>) -> Option<Keyword> {
    match token {
        Some(Token::Word(word)) => Some(word.keyword),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_maintenance_statements_pass_and_nothing_beside_them() {
        for sql in [
            "ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;",
            "alter sequence users_id_seq owned by users.id ; ",
            "VACUUM (VERBOSE, ANALYZE) users",
            "ANALYZE users",
            "REINDEX TABLE users",
            "CLUSTER users USING users_pkey",
            "-- restore\nALTER SEQUENCE s OWNED BY users.id",
        ] {
            assert!(is_lone_maintenance(sql), "{sql}");
        }
        for sql in [
            "ALTER SEQUENCE s OWNED BY users.id; INSERT INTO users (email) VALUES ('x')",
            "VACUUM users; DO $$ BEGIN INSERT INTO users (email) VALUES ('x'); END $$",
            "DO $$ BEGIN INSERT INTO users (email) VALUES ('x'); END $$",
            "ALTER TABLE users OWNER TO app",
            "SELECT 1",
            "",
        ] {
            assert!(!is_lone_maintenance(sql), "{sql}");
        }
    }
}
