//! Stack for deep expressions. sqlparser builds `a OR b OR c ...` (and every other infix or
//! postfix chain) as a left-deep tree without recursing, but walking that tree, and dropping
//! it, recurse once per operator: a 10,000-term OR chain needs a few MiB of stack, more than
//! a session thread has, and overflowing it would abort the whole process. So before parsing,
//! [`bound`] reads the tokens (the ones the parser then reads) for an upper bound on the
//! tree's depth; analysis runs on a
//! stack grown to fit it, and a statement deeper than [`MAX_DEPTH`] is refused (54001, as
//! Postgres refuses expressions that exhaust its own stack).

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::Refusal;

/// The deepest statement analysed; deeper ones are refused.
pub(super) const MAX_DEPTH: usize = 100_000;

/// Stack per level of depth, with room to spare: walking and dropping measured ~600 bytes
/// per level in release builds and ~3 KiB unoptimised.
const BYTES_PER_LEVEL: usize = if cfg!(debug_assertions) {
    6 << 10
} else {
    1 << 10
};
/// Stack for everything besides the chains: parser recursion (at most 50 levels), the
/// analysis's fixed frames.
const BASE_STACK: usize = 1 << 20;

/// Runs `analyse` on a stack deep enough for a statement whose depth is at most `depth`.
pub(super) fn with_stack_for<T>(depth: usize, analyse: impl FnOnce() -> T) -> T {
    let need = BASE_STACK + depth.saturating_mul(BYTES_PER_LEVEL);
    stacker::maybe_grow(need, need, analyse)
}

pub(super) fn too_deep() -> Refusal {
    Refusal {
        code: "54001",
        message: format!(
            "this statement names a table with encrypted columns and its expressions are nested or chained more than {MAX_DEPTH} levels deep, more than pgcloak analyses; split it (for long OR chains of equalities, use col = ANY($1) or IN (...))"
        ),
    }
}

/// An upper bound on the depth of the syntax tree parsed from `tokens`. Every token that can extend an
/// expression (operators, keywords, `[`, `.`: anything but identifiers, literals,
/// parameters, commas and brackets) counts one level within its comma-separated item; a
/// bracketed group counts as deep as its deepest item, plus one.
pub(super) fn bound(tokens: &[TokenWithSpan]) -> usize {
    let mut levels = vec![Level::default()];
    // Sum of `item()` over `levels`: the depth of the path to the current token.
    let mut path = 0usize;
    let mut deepest = 0usize;
    for TokenWithSpan { token, .. } in tokens {
        let top = levels.len() - 1;
        match token {
            Token::LParen | Token::LBrace => levels.push(Level::default()),
            Token::LBracket => {
                levels[top].ops += 1;
                path += 1;
                levels.push(Level::default());
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                if top > 0 {
                    let group = levels.remove(top);
                    path -= group.item();
                    let outer = &mut levels[top - 1];
                    let before = outer.item();
                    outer.inner = outer.inner.max(group.best.max(group.item()) + 1);
                    path = path - before + outer.item();
                }
            }
            Token::Comma => {
                let level = &mut levels[top];
                path -= level.item();
                level.best = level.best.max(level.item());
                level.ops = 0;
                level.inner = 0;
            }
            Token::SemiColon => {
                levels = vec![Level::default()];
                path = 0;
            }
            token if flat(token) => {}
            _ => {
                levels[top].ops += 1;
                path += 1;
            }
        }
        deepest = deepest.max(path + levels.len());
    }
    deepest
}

/// One open bracket (or the statement itself).
#[derive(Default)]
struct Level {
    /// Chain tokens in the current comma-separated item.
    ops: usize,
    /// The deepest group closed in the current item.
    inner: usize,
    /// The deepest finished item.
    best: usize,
}

impl Level {
    fn item(&self) -> usize {
        self.ops + self.inner
    }
}

/// Tokens that cannot extend an expression chain by themselves.
fn flat(token: &Token) -> bool {
    match token {
        Token::Word(word) => word.keyword == Keyword::NoKeyword,
        Token::Whitespace(_)
        | Token::Number(..)
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::EOF => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn bound(sql: &str) -> usize {
        Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .map_or(0, |tokens| super::bound(&tokens))
    }

    #[test]
    fn the_bound_covers_chains_and_groups() {
        assert!(bound("SELECT a FROM t") < 10);
        let ors = vec!["a = 1"; 1000].join(" OR ");
        assert!(bound(&format!("SELECT * FROM t WHERE {ors}")) >= 2000);
        // Nested groups add up; each group's deepest item counts, not the last one.
        assert!(bound("SELECT ((a OR b) OR c) OR d") >= 6);
        let deep_first = format!("SELECT f({}, 1)", vec!["a"; 500].join(" + "));
        assert!(bound(&deep_first) >= 500);
        let subscripts = format!("SELECT a{}", "[1]".repeat(300));
        assert!(bound(&subscripts) >= 300);
    }

    #[test]
    fn flat_lists_stay_shallow() {
        let list = (0..30_000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(bound(&format!("SELECT * FROM t WHERE a IN ({list})")) < 20);
        let rows = vec!["('a@x'::text, -1, $1)"; 8000].join(", ");
        assert!(bound(&format!("INSERT INTO t (a, b, c) VALUES {rows}")) < 20);
    }

    #[test]
    fn unbalanced_brackets_and_bad_text_do_not_panic() {
        for sql in [")))", "((((", "]]", "a, , ;;", "'unterminated", "SELECT (]"] {
            let _ = bound(sql);
        }
    }
}
