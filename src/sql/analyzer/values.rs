//! What a value written to or compared with a PII column is (a literal, a parameter, NULL,
//! DEFAULT, anything else), seen through the parentheses and text casts that do not change
//! it: leaf helpers of the walk, free of its state.

use sqlparser::ast::{Expr, Value};
use sqlparser::tokenizer::Span;

use super::super::LiteralKind;

/// What a value bound for a PII column is.
pub(in crate::sql) enum Bound<'e> {
    Literal(LiteralKind, Span),
    Param(usize, Span),
    Null,
    Default,
    Other(&'e Expr),
}

/// Parentheses and casts to text types are transparent for PII purposes.
pub(in crate::sql) fn strip(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(inner) => strip(inner),
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } if is_text_type(&data_type.to_string()) => strip(inner),
        _ => expr,
    }
}

/// `$1::text[]` or `ARRAY[...]::varchar[]`: the array itself.
pub(in crate::sql) fn strip_text_array_cast(expr: &Expr) -> &Expr {
    match strip(expr) {
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => match data_type.to_string().strip_suffix("[]") {
            Some(element) if is_text_type(element) => strip_text_array_cast(inner),
            _ => strip(expr),
        },
        other => other,
    }
}

/// A type a PII value or column may be cast to without changing it: text, varchar without
/// a length. (An explicit cast to `varchar(n)` silently truncates the ciphertext; `citext`
/// would compare ciphertexts case-insensitively, so `email::citext = 'ANN@X.COM'` would
/// look for the ciphertext of the upper-case text and silently find nothing.)
pub(in crate::sql) fn is_text_type(name: &str) -> bool {
    matches!(
        name.to_lowercase().as_str(),
        "text" | "varchar" | "character varying"
    )
}

/// A numeric literal Postgres stores in a text column exactly as written (`42`, `1.50`),
/// so that its ciphertext decrypts to what the column would have held; `1e5`, `007` or
/// `.5` would be stored as `100000`, `7`, `0.5`.
fn canonical_number(n: &str) -> bool {
    let (int, frac) = match n.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (n, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && (int == "0" || !int.starts_with('0')) && frac.is_none_or(digits)
}

/// The number of a `$n` placeholder; usize::MAX for a number too large to be one (refused
/// by `bind_param`).
pub(in crate::sql) fn placeholder(value: &Value) -> Option<usize> {
    match value {
        Value::Placeholder(p) => {
            let digits = p.strip_prefix('$')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse().unwrap_or(usize::MAX))
        }
        _ => None,
    }
}

/// Postgres numbers parameters from $1 and allows at most 65535 of them (the Bind message
/// counts them in 16 bits).
pub(in crate::sql) const MAX_PARAMS: usize = 65535;

/// Classifies a value written to or compared with a PII column.
pub(in crate::sql) fn bound(expr: &Expr) -> Bound<'_> {
    let inner = strip(expr);
    match inner {
        Expr::Value(v) => match &v.value {
            Value::Null => Bound::Null,
            // The literal's own span: a cast around it (`'x'::text`) stays in the text.
            Value::SingleQuotedString(_) => Bound::Literal(LiteralKind::Quoted, v.span),
            Value::EscapedStringLiteral(_) => Bound::Literal(LiteralKind::Escaped, v.span),
            Value::DollarQuotedString(_) => Bound::Literal(LiteralKind::DollarQuoted, v.span),
            Value::Number(n, _) if canonical_number(n) => {
                Bound::Literal(LiteralKind::Number, v.span)
            }
            Value::Placeholder(_) => match placeholder(&v.value) {
                Some(n) => Bound::Param(n, v.span),
                None => Bound::Other(inner),
            },
            _ => Bound::Other(inner),
        },
        Expr::Identifier(ident)
            if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") =>
        {
            Bound::Default
        }
        _ => Bound::Other(inner),
    }
}
