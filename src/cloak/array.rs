//! Array parameters (`email = ANY($1)`): each element is encrypted, the array is rebuilt.
//! Text format is PostgreSQL's array literal (`{a,"b c",NULL}`); binary format is the
//! `array_send` layout (ndim, has-null flag, element type, dimensions, then each element as
//! a length-prefixed value). Only one-dimensional arrays of text-family elements are
//! accepted: a value pgcloak cannot read is refused, never passed on in clear.

use bytes::{BufMut, BytesMut};

/// Element type OIDs whose binary form is the UTF-8 text itself: text, varchar, bpchar, name.
const TEXT_ELEMENT_OIDS: [u32; 4] = [25, 1043, 1042, 19];

/// Why an array parameter could not be rewritten. Never contains the parameter's content.
#[derive(Debug, PartialEq, Eq)]
pub struct ArrayError(pub &'static str);

/// Rewrites a text-format array literal, mapping each non-NULL element through `encrypt`.
pub fn map_text<E>(
    value: &[u8],
    mut encrypt: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Result<Vec<u8>, E>, ArrayError> {
    map_text_to_many(value, |plain| encrypt(plain).map(|e| vec![e]))
}

/// [`map_text`] with each non-NULL element replaced by as many elements as `encrypt`
/// returns (every stored form a search must match).
pub fn map_text_to_many<E>(
    value: &[u8],
    mut encrypt: impl FnMut(&[u8]) -> Result<Vec<Vec<u8>>, E>,
) -> Result<Result<Vec<u8>, E>, ArrayError> {
    let elements = parse_text(value)?;
    let mut out = Vec::with_capacity(value.len() * 4 + 2);
    out.push(b'{');
    for element in elements.iter() {
        match element {
            None => {
                out.extend_from_slice(b"NULL");
                out.push(b',');
            }
            Some(plain) => {
                let encrypted = match encrypt(plain) {
                    Ok(e) => e,
                    Err(e) => return Ok(Err(e)),
                };
                for form in encrypted {
                    quote(&form, &mut out);
                    out.push(b',');
                }
            }
        }
    }
    if out.len() > 1 {
        out.pop(); // the last comma
    }
    out.push(b'}');
    Ok(Ok(out))
}

/// A text-format array literal of `elements` (`{"a","b"}`).
pub fn text_array(elements: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut out = vec![b'{'];
    for (i, element) in elements.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        quote(element.as_ref(), &mut out);
    }
    out.push(b'}');
    out
}

/// Rewrites a binary-format array, mapping each non-NULL element through `encrypt`.
/// `typed`: the element type of a typed PII column (`date` for `dob = ANY($1)`), accepted
/// besides text types; the rewritten array's elements are text (the envelopes).
pub fn map_binary<E>(
    value: &[u8],
    typed: Option<u32>,
    mut encrypt: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Result<Vec<u8>, E>, ArrayError> {
    map_binary_to_many(value, typed, |plain| encrypt(plain).map(|e| vec![e]))
}

/// [`map_binary`] with each non-NULL element replaced by as many as `encrypt` returns.
pub fn map_binary_to_many<E>(
    value: &[u8],
    typed: Option<u32>,
    mut encrypt: impl FnMut(&[u8]) -> Result<Vec<Vec<u8>>, E>,
) -> Result<Result<Vec<u8>, E>, ArrayError> {
    let mut input = value;
    let ndim = read_i32(&mut input)?;
    let has_null = read_i32(&mut input)?;
    let element_type = read_i32(&mut input)? as u32;
    if ndim == 0 && typed == Some(element_type) {
        let mut empty = value.to_vec();
        empty[8..12].copy_from_slice(&25u32.to_be_bytes());
        return Ok(Ok(empty));
    }
    if ndim == 0 {
        return Ok(Ok(value.to_vec()));
    }
    if ndim != 1 {
        return Err(ArrayError("only one-dimensional arrays can be encrypted"));
    }
    let element_type = match element_type {
        oid if TEXT_ELEMENT_OIDS.contains(&oid) => oid,
        oid if typed == Some(oid) => 25,
        _ => {
            return Err(ArrayError(
                "the array's elements are not of the column's type",
            ))
        }
    };
    let count = read_i32(&mut input)?;
    let lower_bound = read_i32(&mut input)?;
    let count = usize::try_from(count).map_err(|_| ArrayError("negative array length"))?;
    let mut out = BytesMut::with_capacity(value.len() * 3);
    // The element count is written once the elements are known.
    for word in [1, has_null, element_type as i32, 0, lower_bound] {
        out.put_i32(word);
    }
    let mut written: i32 = 0;
    for _ in 0..count {
        let len = read_i32(&mut input)?;
        if len == -1 {
            out.put_i32(-1);
            written = written
                .checked_add(1)
                .ok_or(ArrayError("too many elements"))?;
            continue;
        }
        let len = usize::try_from(len).map_err(|_| ArrayError("bad element length"))?;
        if input.len() < len {
            return Err(ArrayError("array element runs past the end of the value"));
        }
        let (plain, rest) = input.split_at(len);
        input = rest;
        let encrypted = match encrypt(plain) {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        for form in encrypted {
            out.put_i32(i32::try_from(form.len()).map_err(|_| ArrayError("element too long"))?);
            out.put_slice(&form);
            written = written
                .checked_add(1)
                .ok_or(ArrayError("too many elements"))?;
        }
    }
    if !input.is_empty() {
        return Err(ArrayError("trailing bytes after the array's elements"));
    }
    out[12..16].copy_from_slice(&written.to_be_bytes());
    Ok(Ok(out.to_vec()))
}

fn read_i32(input: &mut &[u8]) -> Result<i32, ArrayError> {
    let Some((word, rest)) = input.split_first_chunk::<4>() else {
        return Err(ArrayError("array value is truncated"));
    };
    *input = rest;
    Ok(i32::from_be_bytes(*word))
}

/// The elements of a one-dimensional array literal; None for NULL.
fn parse_text(value: &[u8]) -> Result<Vec<Option<Vec<u8>>>, ArrayError> {
    let text = value.trim_ascii();
    let inner = text
        .strip_prefix(b"{")
        .and_then(|t| t.strip_suffix(b"}"))
        .ok_or(ArrayError(
            "not an array literal of the form {a,b,...} (explicit bounds are not supported)",
        ))?;
    let mut elements = Vec::new();
    if inner.trim_ascii().is_empty() {
        return Ok(elements);
    }
    let mut rest = inner;
    loop {
        rest = rest.trim_ascii_start();
        let (element, after) = match rest.first() {
            Some(b'"') => quoted(&rest[1..])?,
            Some(b'{') => {
                return Err(ArrayError("only one-dimensional arrays can be encrypted"));
            }
            _ => unquoted(rest)?,
        };
        elements.push(element);
        let after = after.trim_ascii_start();
        match after.split_first() {
            None => return Ok(elements),
            Some((b',', more)) => rest = more,
            Some(_) => return Err(ArrayError("malformed array literal")),
        }
    }
}

/// A double-quoted element (after its opening quote): backslash escapes any character.
fn quoted(input: &[u8]) -> Result<(Option<Vec<u8>>, &[u8]), ArrayError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\\' if i + 1 < input.len() => {
                out.push(input[i + 1]);
                i += 2;
            }
            b'"' => return Ok((Some(out), &input[i + 1..])),
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Err(ArrayError("unterminated quoted array element"))
}

/// An unquoted element up to the next comma: surrounding blanks dropped, `NULL` is NULL.
fn unquoted(input: &[u8]) -> Result<(Option<Vec<u8>>, &[u8]), ArrayError> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut escaped_end = 0;
    while i < input.len() {
        match input[i] {
            b',' => break,
            b'"' | b'{' | b'}' => return Err(ArrayError("malformed array literal")),
            b'\\' if i + 1 < input.len() => {
                out.push(input[i + 1]);
                i += 2;
                escaped_end = out.len();
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    // Trailing blanks are dropped unless escaped.
    while out.len() > escaped_end && out.last().is_some_and(u8::is_ascii_whitespace) {
        out.pop();
    }
    if escaped_end == 0 && out.eq_ignore_ascii_case(b"NULL") {
        return Ok((None, &input[i..]));
    }
    if out.is_empty() {
        return Err(ArrayError("empty array element"));
    }
    Ok((Some(out), &input[i..]))
}

fn quote(value: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &byte in value {
        if byte == b'"' || byte == b'\\' {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(v: &[u8]) -> Result<Vec<u8>, ()> {
        Ok(v.to_ascii_uppercase())
    }

    fn text(value: &str) -> Result<String, ArrayError> {
        map_text(value.as_bytes(), upper).map(|r| String::from_utf8(r.unwrap()).unwrap())
    }

    #[test]
    fn text_arrays_are_rewritten_element_by_element() {
        assert_eq!(text("{a,b}").unwrap(), r#"{"A","B"}"#);
        assert_eq!(
            text(r#" { "x, \"y\"" , NULL, "null", z\,w ,  sp ace  } "#).unwrap(),
            r#"{"X, \"Y\"",NULL,"NULL","Z,W","SP ACE"}"#
        );
        assert_eq!(text("{}").unwrap(), "{}");
        assert_eq!(text(r#"{"a\\b"}"#).unwrap(), r#"{"A\\B"}"#);
    }

    #[test]
    fn text_arrays_pgcloak_cannot_read_are_refused() {
        for bad in [
            "a,b",
            "{{a},{b}}",
            "[1:2]={a,b}",
            "{a,,b}",
            r#"{"a}"#,
            "{a\"b}",
            "{a} x",
        ] {
            assert!(text(bad).is_err(), "{bad}");
        }
    }

    fn binary(elements: &[Option<&[u8]>], element_type: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_i32(1);
        out.put_i32(elements.iter().any(Option::is_none) as i32);
        out.put_u32(element_type);
        out.put_i32(elements.len() as i32);
        out.put_i32(1);
        for element in elements {
            match element {
                Some(e) => {
                    out.put_i32(e.len() as i32);
                    out.put_slice(e);
                }
                None => out.put_i32(-1),
            }
        }
        out.to_vec()
    }

    #[test]
    fn binary_arrays_are_rewritten_element_by_element() {
        let input = binary(&[Some(b"ab"), None, Some(b"")], 25);
        let output = map_binary(&input, None, upper).unwrap().unwrap();
        assert_eq!(output, binary(&[Some(b"AB"), None, Some(b"")], 25));
        let empty = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25];
        assert_eq!(map_binary(&empty, None, upper).unwrap().unwrap(), empty);
    }

    #[test]
    fn binary_arrays_of_a_typed_column_become_text_arrays() {
        let input = binary(&[Some(b"\0\0\0\x01")], 23);
        let output = map_binary(&input, Some(23), upper).unwrap().unwrap();
        assert_eq!(output, binary(&[Some(b"\0\0\0\x01")], 25));
        let empty = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23];
        let output = map_binary(&empty, Some(23), upper).unwrap().unwrap();
        assert_eq!(output[8..], [0, 0, 0, 25]);
        assert!(map_binary(&input, Some(1082), upper).is_err());
    }

    #[test]
    fn binary_arrays_pgcloak_cannot_read_are_refused() {
        assert!(map_binary(&binary(&[Some(b"\0\0\0\x01")], 23), None, upper).is_err());
        let mut truncated = binary(&[Some(b"abc")], 25);
        truncated.pop();
        assert!(map_binary(&truncated, None, upper).is_err());
        let mut trailing = binary(&[Some(b"abc")], 25);
        trailing.push(0);
        assert!(map_binary(&trailing, None, upper).is_err());
        assert!(map_binary(&[0, 0], None, upper).is_err());
    }
}
