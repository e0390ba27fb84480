//! The attribute syntax of RFC 5802 section 7: comma-separated `a=value` pairs, a value
//! being any UTF-8 but NUL and `,`. Splitting on commas is therefore exact.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::super::keys::KEY_LEN;
use super::ScramError;

/// A message as text: UTF-8 without NUL (Postgres reads it as a C string).
pub fn text<'a>(data: &'a [u8], what: &'static str) -> Result<&'a str, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed(what))?;
    if text.is_empty() || text.contains('\0') {
        return Err(ScramError::Malformed(what));
    }
    Ok(text)
}

/// The value of attribute `name` in `part` (`None` when there is no such part).
pub fn value<'a>(
    part: Option<&'a str>,
    name: char,
    missing: &'static str,
) -> Result<&'a str, ScramError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(ScramError::Malformed(missing))
}

/// Optional extensions after the attributes a message must have: each one `a=value`.
pub fn extensions<'a>(
    rest: impl Iterator<Item = &'a str>,
    what: &'static str,
) -> Result<(), ScramError> {
    for part in rest {
        let mut chars = part.chars();
        let named = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !named || chars.next() != Some('=') {
            return Err(ScramError::Malformed(what));
        }
    }
    Ok(())
}

/// True for a valid nonce: printable ASCII but `,`, at least one character.
pub fn is_printable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A base64 proof or signature of exactly [`KEY_LEN`] bytes.
pub fn key(b64: &str, what: &'static str) -> Result<[u8; KEY_LEN], ScramError> {
    STANDARD
        .decode(b64)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(ScramError::Malformed(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_need_the_right_name_and_an_equals_sign() {
        assert_eq!(value(Some("r=abc"), 'r', "x"), Ok("abc"));
        assert_eq!(value(Some("r="), 'r', "x"), Ok(""));
        assert_eq!(
            value(Some("s=abc"), 'r', "x"),
            Err(ScramError::Malformed("x"))
        );
        assert_eq!(
            value(Some("rabc"), 'r', "x"),
            Err(ScramError::Malformed("x"))
        );
        assert_eq!(value(None, 'r', "x"), Err(ScramError::Malformed("x")));
    }

    #[test]
    fn extensions_must_be_attributes() {
        assert!(extensions(["x=1", "y="].into_iter(), "e").is_ok());
        assert!(extensions(["1=1"].into_iter(), "e").is_err());
        assert!(extensions([""].into_iter(), "e").is_err());
        assert!(extensions(["xy=1"].into_iter(), "e").is_err());
    }

    #[test]
    fn text_refuses_nul_empty_and_invalid_utf8() {
        assert_eq!(text(b"n,,", "m"), Ok("n,,"));
        assert!(text(b"", "m").is_err());
        assert!(text(b"n,\0,", "m").is_err());
        assert!(text(&[0xff, 0xfe], "m").is_err());
    }

    #[test]
    fn nonces_are_printable_without_commas() {
        assert!(is_printable(
            "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        ));
        assert!(!is_printable(""));
        assert!(!is_printable("a b"));
        assert!(!is_printable("é"));
    }
}
