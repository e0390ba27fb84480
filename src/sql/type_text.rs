//! Finding the tokens of a value's wrappers in the SQL text: the parser's spans cover only
//! the value (`$1` of `$1::date`, `'2020-01-02'` of `DATE '2020-01-02'`, `5` of `-5`), so
//! the `::`, `CAST(`, `AS`, type names and a unary minus are read from the text next to
//! it. Each helper accepts blanks between tokens and nothing else: a comment or an
//! unexpected spelling gives None, and the caller refuses rather than guess.

use std::ops::Range;

/// The offset of `token` ending right before `pos` (blanks between allowed).
pub(super) fn before(sql: &str, pos: usize, token: &str) -> Option<usize> {
    let text = sql.get(..pos)?.trim_end();
    text.ends_with(token).then(|| text.len() - token.len())
}

/// The offset right after `token` starting at `pos` (blanks before it allowed).
pub(super) fn after(sql: &str, pos: usize, token: &str) -> Option<usize> {
    let at = skip_blanks(sql, pos)?;
    sql.get(at..)?.starts_with(token).then(|| at + token.len())
}

fn skip_blanks(sql: &str, pos: usize) -> Option<usize> {
    let rest = sql.get(pos..)?;
    Some(pos + (rest.len() - rest.trim_start().len()))
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$'
}

/// The start of the keyword `word` (any case) that ends right before `pos`.
pub(super) fn before_word(sql: &str, pos: usize, word: &str) -> Option<usize> {
    let text = sql.get(..pos)?.trim_end();
    let start = text.len().checked_sub(word.len())?;
    let found = text.get(start..)?.eq_ignore_ascii_case(word);
    let bounded = start == 0 || !is_word_byte(text.as_bytes()[start - 1]);
    (found && bounded).then_some(start)
}

/// The end of the keyword `word` (any case) that starts at `pos`, after blanks.
pub(super) fn after_word(sql: &str, pos: usize, word: &str) -> Option<usize> {
    let at = skip_blanks(sql, pos)?;
    let text = sql.get(at..)?;
    let found = text.get(..word.len())?.eq_ignore_ascii_case(word);
    let bounded = text
        .as_bytes()
        .get(word.len())
        .is_none_or(|&b| !is_word_byte(b));
    (found && bounded).then(|| at + word.len())
}

/// The words that may follow a type name's first word in the types a PII column may be
/// declared as (`double precision`, `timestamp with time zone`, ...).
fn continuations(first: &str) -> &'static [&'static [&'static str]] {
    match first.to_ascii_lowercase().as_str() {
        "character" => &[&["varying"]],
        "double" => &[&["precision"]],
        "time" | "timestamp" => &[&["with", "time", "zone"], &["without", "time", "zone"]],
        _ => &[],
    }
}

/// The range of the type name starting at `pos` after blanks: its words and a modifier
/// (`numeric(10, 2)`), not an array suffix. What it names is checked by [`names`].
pub(super) fn type_name_after(sql: &str, pos: usize) -> Option<Range<usize>> {
    let start = skip_blanks(sql, pos)?;
    let bytes = sql.as_bytes();
    if !bytes.get(start)?.is_ascii_alphabetic() {
        return None;
    }
    let mut end = start;
    while bytes.get(end).is_some_and(|&b| is_word_byte(b)) {
        end += 1;
    }
    let first = sql.get(start..end)?;
    for words in continuations(first) {
        let found = words
            .iter()
            .try_fold(end, |at, word| after_word(sql, at, word));
        if let Some(found) = found {
            end = found;
            break;
        }
    }
    if let Some(close) = modifier_after(sql, end) {
        end = close;
    }
    Some(start..end)
}

/// The end of a type modifier `( digits [, digits] )` right after `pos` (blanks allowed).
fn modifier_after(sql: &str, pos: usize) -> Option<usize> {
    let open = after(sql, pos, "(")?;
    let close = open + sql.get(open..)?.find(')')?;
    let inside = sql.get(open..close)?;
    let plain = inside
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b',' || b == b'-' || b == b' ');
    plain.then_some(close + 1)
}

/// The range of the type name ending right before `pos` (blanks between): `DATE` of
/// `DATE '2020-01-02'`, `timestamp with time zone` of `timestamp with time zone '...'`.
/// `data_type` is the parser's printed name, which the text found must spell.
pub(super) fn type_name_before(sql: &str, pos: usize, data_type: &str) -> Option<Range<usize>> {
    let end = sql.get(..pos)?.trim_end().len();
    let bytes = sql.as_bytes();
    // Candidate starts: the starts of the (at most five) words before `end`.
    let mut at = end;
    for _ in 0..5 {
        let text = sql.get(..at)?.trim_end();
        at = text.len();
        if text.ends_with(')') {
            at = text.rfind('(')?;
            at = sql.get(..at)?.trim_end().len();
        }
        let word_end = at;
        while at > 0 && is_word_byte(bytes[at - 1]) {
            at -= 1;
        }
        if at == word_end {
            return None;
        }
        let found = type_name_after(sql, at).filter(|r| r.end == end);
        if let Some(range) = found {
            if names(sql.get(range.clone())?, data_type) && !in_line_comment(sql, at) {
                return Some(range);
            }
        }
    }
    None
}

/// The end of `[]` right after `pos` (blanks allowed).
pub(super) fn array_suffix(sql: &str, pos: usize) -> Option<usize> {
    after(sql, after(sql, pos, "[")?, "]")
}

/// Whether the type name `written` in the text is `printed`, the parser's name of a cast's
/// type, up to case and blanks.
pub(super) fn names(written: &str, printed: &str) -> bool {
    normal(written) == normal(printed)
}

/// Lower case, blanks between words as one space, none around `(`, `,` and `)`.
fn normal(name: &str) -> String {
    let spaced = name
        .to_ascii_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = String::with_capacity(spaced.len());
    for c in spaced.chars() {
        if c == ' ' && matches!(out.chars().last(), Some('(' | ',')) {
            continue;
        }
        if matches!(c, '(' | ',' | ')') && out.ends_with(' ') {
            out.pop();
        }
        out.push(c);
    }
    out
}

/// The offset of the unary minus right before `pos` (the number of `-5` or `- 5`). A
/// minus that could be the end of another operator or comment (`*-`, `--`) gives None.
pub(super) fn minus_before(sql: &str, pos: usize) -> Option<usize> {
    let minus = before(sql, pos, "-")?;
    let prior = sql.get(..minus)?.chars().next_back();
    let separated =
        prior.is_none_or(|c| c.is_whitespace() || matches!(c, '(' | ',' | '=' | '<' | '>'));
    (separated && !in_line_comment(sql, minus)).then_some(minus)
}

/// Whether `pos` may lie in a `--` comment: its line holds `--` before it (perhaps inside a
/// string, which only makes the caller refuse).
fn in_line_comment(sql: &str, pos: usize) -> bool {
    let Some(text) = sql.get(..pos) else {
        return true;
    };
    let line = text.rfind('\n').map_or(text, |i| &text[i + 1..]);
    line.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_after(sql: &str) -> Option<&str> {
        type_name_after(sql, 0).map(|r| &sql[r])
    }

    #[test]
    fn type_names_are_read_whole() {
        assert_eq!(name_after(" date)"), Some("date"));
        assert_eq!(
            name_after("Timestamp With Time  Zone[]"),
            Some("Timestamp With Time  Zone")
        );
        assert_eq!(
            name_after("timestamp without time zone,"),
            Some("timestamp without time zone")
        );
        assert_eq!(name_after("timestamp with x"), Some("timestamp"));
        assert_eq!(
            name_after("numeric( 10 , 2 ) AND"),
            Some("numeric( 10 , 2 )")
        );
        assert_eq!(name_after("double precision"), Some("double precision"));
        assert_eq!(
            name_after("character varying(4)"),
            Some("character varying(4)")
        );
        assert_eq!(name_after("/* c */ date"), None);
        assert_eq!(name_after("\"date\""), None);
    }

    #[test]
    fn names_compare_up_to_case_and_blanks() {
        assert!(names("numeric( 10 , 2 )", "NUMERIC(10,2)"));
        assert!(names(
            "timestamp  with\ttime zone",
            "TIMESTAMP WITH TIME ZONE"
        ));
        assert!(!names("numeric(10,3)", "NUMERIC(10,2)"));
        assert!(!names("timestamptz", "TIMESTAMP WITH TIME ZONE"));
    }

    #[test]
    fn type_names_before_a_literal() {
        fn find<'s>(sql: &'s str, printed: &str) -> Option<&'s str> {
            let pos = sql.find('\'').unwrap();
            type_name_before(sql, pos, printed).map(|r| &sql[r])
        }
        assert_eq!(find("x = DATE '2020-01-02'", "DATE"), Some("DATE"));
        assert_eq!(
            find("(timestamp with time zone\n'x'", "TIMESTAMP WITH TIME ZONE"),
            Some("timestamp with time zone")
        );
        assert_eq!(
            find("=numeric(10,2) '1'", "NUMERIC(10,2)"),
            Some("numeric(10,2)")
        );
        assert_eq!(find("date /* c */ '2020-01-02'", "DATE"), None);
        assert_eq!(find("DATE -- date\n '2020-01-02'", "DATE"), None);
        assert_eq!(find("x = time '10:00'", "TIMESTAMP"), None);
    }

    #[test]
    fn a_unary_minus_is_found_only_where_it_is_one() {
        let find = |sql: &str| minus_before(sql, sql.rfind('5').unwrap());
        assert_eq!(find("a = -5"), Some(4));
        assert_eq!(find("a = - \n 5"), Some(4));
        assert_eq!(find("(-5"), Some(1));
        assert_eq!(find("a @-5"), None);
        assert_eq!(find("a = /* */-5"), None);
        assert_eq!(find("a = '--', -5"), None);
        assert_eq!(find("a = 5"), None);
    }
}
