//! E'...' escapes are unescaped exactly as Postgres reads them before encryption, or the
//! statement is refused (sqlparser rejects what it does not unescape: never a different
//! value).

use super::*;

#[test]
fn escape_strings_are_unescaped_as_postgres_reads_them() {
    for (text, expected) in [
        (r"E'a\tb'", "a\tb"),
        (r"E'a\nb'", "a\nb"),
        (r"E'\r\b\f'", "\r\u{8}\u{c}"),
        (r"E'\x41\x4a'", "AJ"),
        (r"E'\x4'", "\u{4}"),
        (r"E'\101'", "A"),
        (r"E'\u00e9'", "é"),
        (r"E'\U0001F600'", "😀"),
        (r"E'\\'", "\\"),
        (r"E'\''", "'"),
        (r"e'\q'", "q"),
    ] {
        let sql = format!("INSERT INTO users (email) VALUES ({text})");
        let value = plan(&sql)
            .literals
            .first()
            .map(|s| crate::sql::literal_value(&sql, s).unwrap());
        assert_eq!(value.as_deref(), Some(expected), "{text}");
    }
    // Postgres accepts (UTF-8 bytes, surrogate pairs) or rejects (NUL, out of range) these;
    // pgcloak refuses them rather than guess.
    for text in [
        r"E'\xC3\xA9'",
        r"E'\uD83D\uDE00'",
        r"E'\0'",
        r"E'\400'",
        r"E'\u00'",
    ] {
        refused(&format!("INSERT INTO users (email) VALUES ({text})"));
    }
}
