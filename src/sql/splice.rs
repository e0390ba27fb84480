//! Replacing literals in SQL text without re-printing it: the parser's spans (1-based line
//! and column, counted in characters) become byte ranges, and the text between them is kept
//! byte for byte, comments and formatting included.

use sqlparser::tokenizer::{Location, Span};

/// Byte offsets of the start of each line of `sql`.
pub(crate) struct LineIndex<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(sql: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { sql, starts }
    }

    /// The byte offset of a parser location, if it lies in the text.
    pub(crate) fn offset(&self, location: Location) -> Option<usize> {
        let line = usize::try_from(location.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(location.column).ok()?.checked_sub(1)?;
        let start = *self.starts.get(line)?;
        let rest = &self.sql[start..];
        if column == 0 {
            return Some(start);
        }
        match rest.char_indices().nth(column) {
            Some((i, _)) => Some(start + i),
            // The end of the text is a valid exclusive end.
            None if rest.chars().count() == column => Some(self.sql.len()),
            None => None,
        }
    }

    /// The byte range of a span (its end is exclusive).
    pub(crate) fn range(&self, span: Span) -> Option<std::ops::Range<usize>> {
        let start = self.offset(span.start)?;
        let end = self.offset(span.end)?;
        (start < end).then_some(start..end)
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
    fn out_of_range_locations_are_none() {
        let index = LineIndex::new("SELECT 1");
        assert_eq!(index.offset(loc(3, 1)), None);
        assert_eq!(index.offset(loc(1, 40)), None);
        assert_eq!(index.offset(loc(0, 0)), None);
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
