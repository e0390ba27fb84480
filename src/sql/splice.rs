//! Replacing literals in SQL text without re-printing it: the parser's spans (1-based line
//! and column, counted in characters) become byte ranges, and the text between them is kept
//! byte for byte, comments and formatting included. Each conversion takes constant time, so
//! a statement with tens of thousands of literals converts in time linear in its size.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Span, Token, Tokenizer};

use super::{LiteralKind, LiteralSlot, Refusal};

/// Characters between two entries of [`LineIndex::checkpoints`]: a lookup walks at most
/// this many characters, so converting every span of a statement stays linear in its size.
const CHECKPOINT_EVERY: usize = 64;

/// Turns parser locations into byte offsets in constant time per location.
pub(crate) struct LineIndex<'a> {
    sql: &'a str,
    /// For each line: how many characters of the text come before it.
    line_chars: Vec<usize>,
    /// Byte offset of every `CHECKPOINT_EVERY`-th character; empty when the text is ASCII
    /// (characters are bytes).
    checkpoints: Vec<usize>,
    /// Characters in the whole text.
    chars: usize,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(sql: &'a str) -> LineIndex<'a> {
        let mut line_chars = vec![0];
        let mut checkpoints = Vec::new();
        let chars = if sql.is_ascii() {
            line_chars.extend(memchr::memchr_iter(b'\n', sql.as_bytes()).map(|i| i + 1));
            sql.len()
        } else {
            let mut count = 0;
            for (i, c) in sql.char_indices() {
                if count % CHECKPOINT_EVERY == 0 {
                    checkpoints.push(i);
                }
                count += 1;
                if c == '\n' {
                    line_chars.push(count);
                }
            }
            count
        };
        LineIndex {
            sql,
            line_chars,
            checkpoints,
            chars,
        }
    }

    /// The byte offset of a parser location, if it lies in the text.
    pub(crate) fn offset(&self, location: Location) -> Option<usize> {
        let line = usize::try_from(location.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(location.column).ok()?.checked_sub(1)?;
        // A column may run past its line's end, as the text runs on from the line's start.
        let char_index = self.line_chars.get(line)?.checked_add(column)?;
        if char_index > self.chars {
            return None;
        }
        if char_index == self.chars {
            return Some(self.sql.len()); // the end of the text is a valid exclusive end
        }
        if self.checkpoints.is_empty() {
            return Some(char_index);
        }
        let from = *self.checkpoints.get(char_index / CHECKPOINT_EVERY)?;
        let (i, _) = self.sql[from..]
            .char_indices()
            .nth(char_index % CHECKPOINT_EVERY)?;
        Some(from + i)
    }

    /// The text the index is of.
    pub(crate) fn text(&self) -> &'a str {
        self.sql
    }

    /// The byte range of a span (its end is exclusive).
    pub(crate) fn range(&self, span: Span) -> Option<std::ops::Range<usize>> {
        let start = self.offset(span.start)?;
        let end = self.offset(span.end)?;
        (start < end).then_some(start..end)
    }
}

/// The value of a literal slot, unescaped from `sql`, the text the slot's plan was made
/// for. Plans hold no values, so the cloak reads each one here when it rewrites the text.
/// The literal is tokenized again by the parser's own tokenizer: the value is exactly what
/// the analysis saw.
pub fn literal_value(sql: &str, slot: &LiteralSlot) -> Result<String, Refusal> {
    let lost = || {
        Refusal::unsupported(format!(
            "pgcloak could not read the value for {} back from the statement text; bind it as a parameter instead",
            slot.column
        ))
    };
    let text = sql.get(slot.range.clone()).ok_or_else(lost)?;
    match slot.kind {
        LiteralKind::Number => return Ok(text.to_owned()),
        LiteralKind::Boolean if text.eq_ignore_ascii_case("true") => return Ok("true".into()),
        LiteralKind::Boolean if text.eq_ignore_ascii_case("false") => return Ok("false".into()),
        LiteralKind::Boolean => return Err(lost()),
        LiteralKind::NegativeNumber => {
            // Blanks may stand between the minus and the number; a comment may not.
            let number = text.strip_prefix('-').ok_or_else(lost)?.trim_start();
            let tokens = Tokenizer::new(&PostgreSqlDialect {}, number)
                .tokenize()
                .map_err(|_| lost())?;
            return match <[Token; 1]>::try_from(tokens) {
                Ok([Token::Number(n, false)]) => Ok(format!("-{n}")),
                _ => Err(lost()),
            };
        }
        _ => {}
    }
    // The tokenizer's error quotes the text: it is not passed on.
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .map_err(|_| lost())?;
    match (slot.kind, <[Token; 1]>::try_from(tokens)) {
        (LiteralKind::Quoted, Ok([Token::SingleQuotedString(value)]))
        | (LiteralKind::Escaped, Ok([Token::EscapedStringLiteral(value)])) => Ok(value),
        (LiteralKind::DollarQuoted, Ok([Token::DollarQuotedString(quoted)])) => Ok(quoted.value),
        _ => Err(lost()),
    }
}

/// Replaces each `(range, text)` in `sql`; ranges must be sorted and not overlap.
pub fn splice(sql: &str, replacements: &[(std::ops::Range<usize>, String)]) -> String {
    let extra: usize = replacements.iter().map(|(_, text)| text.len()).sum();
    let mut out = String::with_capacity(sql.len() + extra);
    let mut pos = 0;
    for (range, text) in replacements {
        out.push_str(&sql[pos..range.start]);
        out.push_str(text);
        pos = range.end;
    }
    out.push_str(&sql[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(line: u64, column: u64) -> Location {
        Location { line, column }
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let sql = "SELECT 'é', 'x'\n  , 'ü'";
        let index = LineIndex::new(sql);
        // 'x' starts at character 13 of line 1; 'é' is two bytes.
        let range = index.range(Span::new(loc(1, 13), loc(1, 16))).unwrap();
        assert_eq!(&sql[range], "'x'");
        let range = index.range(Span::new(loc(2, 5), loc(2, 8))).unwrap();
        assert_eq!(&sql[range], "'ü'");
    }

    #[test]
    fn end_of_text_is_a_valid_end() {
        let sql = "SELECT 'a'";
        let range = LineIndex::new(sql)
            .range(Span::new(loc(1, 8), loc(1, 11)))
            .unwrap();
        assert_eq!(&sql[range], "'a'");
    }

    #[test]
    fn every_location_matches_counting_from_the_line_start() {
        // Long lines with multi-byte characters past several checkpoints.
        let line: String = (0..300)
            .map(|i| if i % 7 == 0 { 'é' } else { 'x' })
            .collect();
        let sql = format!("{line}\n€{line}\n\nend");
        let index = LineIndex::new(&sql);
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        for (l, start) in starts.iter().enumerate() {
            let rest = &sql[*start..];
            for column in 0..=rest.chars().count() {
                let expected = rest
                    .char_indices()
                    .nth(column)
                    .map_or(sql.len(), |(i, _)| start + i);
                let location = loc(l as u64 + 1, column as u64 + 1);
                assert_eq!(index.offset(location), Some(expected), "{l}:{column}");
            }
            let past = loc(l as u64 + 1, rest.chars().count() as u64 + 2);
            assert_eq!(index.offset(past), None);
        }
    }

    #[test]
    fn out_of_range_locations_are_none() {
        let index = LineIndex::new("SELECT 1");
        assert_eq!(index.offset(loc(3, 1)), None);
        assert_eq!(index.offset(loc(1, 40)), None);
        assert_eq!(index.offset(loc(0, 0)), None);
    }

    fn slot(sql: &str, literal: &str, kind: LiteralKind) -> LiteralSlot {
        let start = sql.find(literal).unwrap();
        LiteralSlot {
            range: start..start + literal.len(),
            kind,
            column: std::sync::Arc::new(crate::policy::ColumnId {
                schema: "public".into(),
                table: "users".into(),
                column: "email".into(),
            }),
            array: false,
            search: None,
            operand: None,
        }
    }

    #[test]
    fn literal_values_are_unescaped_from_the_text() {
        let sql = "SELECT 'it''s', E'a\\tb\\'c', $q$x'y$q$, 1.50, 'é'";
        let value = |literal, kind| literal_value(sql, &slot(sql, literal, kind)).unwrap();
        assert_eq!(value("'it''s'", LiteralKind::Quoted), "it's");
        assert_eq!(value("E'a\\tb\\'c'", LiteralKind::Escaped), "a\tb'c");
        assert_eq!(value("$q$x'y$q$", LiteralKind::DollarQuoted), "x'y");
        assert_eq!(value("1.50", LiteralKind::Number), "1.50");
        assert_eq!(value("'é'", LiteralKind::Quoted), "é");
    }

    #[test]
    fn numbers_and_booleans_are_read_as_written() {
        let sql = "SELECT 1e5, - 5, -.5, TRUE, false, - /* c */ 5, tru";
        let value = |literal, kind| literal_value(sql, &slot(sql, literal, kind));
        assert_eq!(value("1e5", LiteralKind::Number).unwrap(), "1e5");
        assert_eq!(value("- 5", LiteralKind::NegativeNumber).unwrap(), "-5");
        assert_eq!(value("-.5", LiteralKind::NegativeNumber).unwrap(), "-.5");
        assert_eq!(value("TRUE", LiteralKind::Boolean).unwrap(), "true");
        assert_eq!(value("false", LiteralKind::Boolean).unwrap(), "false");
        assert!(value("- /* c */ 5", LiteralKind::NegativeNumber).is_err());
        assert!(value("1e5", LiteralKind::NegativeNumber).is_err());
        assert!(value("tru", LiteralKind::Boolean).is_err());
    }

    #[test]
    fn a_slot_that_does_not_fit_the_text_is_refused_without_the_text() {
        let sql = "SELECT 'secret', E'other'";
        for (literal, kind) in [
            ("'secret'", LiteralKind::Escaped),
            ("'secret', E'other'", LiteralKind::Quoted),
            ("'secr", LiteralKind::Quoted),
        ] {
            let refusal = literal_value(sql, &slot(sql, literal, kind)).unwrap_err();
            assert!(!refusal.message.contains("secret"), "{}", refusal.message);
            assert!(refusal.message.contains("public.users.email"));
        }
        let mut beyond = slot(sql, "'secret'", LiteralKind::Quoted);
        beyond.range = 20..80;
        assert!(literal_value(sql, &beyond).is_err());
    }

    #[test]
    fn splice_keeps_everything_else() {
        let sql = "INSERT /* keep */ INTO t VALUES ('a', 'b') -- tail";
        let a = sql.find("'a'").unwrap();
        let b = sql.find("'b'").unwrap();
        let out = splice(sql, &[(a..a + 3, "'X'".into()), (b..b + 3, "NULL".into())]);
        assert_eq!(out, "INSERT /* keep */ INTO t VALUES ('X', NULL) -- tail");
    }
}
