//! What a value written to or compared with a PII column is (a literal, a parameter, NULL,
//! DEFAULT, anything else), seen through the parentheses and casts that do not change it:
//! casts to text types, and for a typed column casts to its declared type. Leaf helpers of
//! the walk, free of its state.

use sqlparser::ast::{ArrayElemTypeDef, DataType, Expr, UnaryOperator, Value};
use sqlparser::tokenizer::Span;

use super::super::LiteralKind;
use crate::pgtype::{Kind, PgType};

/// What a value bound for a PII column is.
pub(in crate::sql) enum Bound {
    Literal(LiteralKind, Span),
    Param(usize, Span),
    Null,
    Default,
    Other,
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

/// A cast around a value bound for a column that the analysis sees through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::sql) struct SeenCast {
    /// To the column's declared type (not a text type): the rewrite puts `text` there.
    pub declared: bool,
    /// To an array type (`date[]`).
    pub array: bool,
}

/// Whether a value bound for a column of type `ty` may be seen through a cast to
/// `data_type`: a text type, or `ty` itself when the column is typed (without a typmod or
/// with the column's: another would change the value, as `numeric(10,1)` rounds). With
/// `arrays`, also an array of either.
pub(in crate::sql) fn seen_cast(
    data_type: &DataType,
    ty: &PgType,
    arrays: bool,
) -> Option<SeenCast> {
    let (element, array) = match data_type {
        DataType::Array(ArrayElemTypeDef::SquareBracket(element, None)) if arrays => {
            (element.as_ref(), true)
        }
        _ => (data_type, false),
    };
    let name = element.to_string();
    if is_text_type(&name) {
        return Some(SeenCast {
            declared: false,
            array,
        });
    }
    is_declared_type(&name, ty).then_some(SeenCast {
        declared: true,
        array,
    })
}

/// Whether a type name is `ty`, a typed column's declared type, as a cast that keeps its
/// values (no other typmod).
pub(in crate::sql) fn is_declared_type(name: &str, ty: &PgType) -> bool {
    if !is_typed(ty) {
        return false;
    }
    PgType::parse(name).is_ok_and(|cast| {
        cast.kind() == ty.kind() && (cast.typmod() == -1 || cast.typmod() == ty.typmod())
    })
}

/// A column whose declared type is not a text type: casts to that type are seen through.
pub(in crate::sql) fn is_typed(ty: &PgType) -> bool {
    !matches!(ty.kind(), Kind::Text | Kind::Varchar)
}

fn is_number_type(ty: &PgType) -> bool {
    use Kind::*;
    matches!(ty.kind(), Int2 | Int4 | Int8 | Numeric | Float4 | Float8)
}

/// Parentheses and the casts [`seen_cast`] allows, around a value bound for a column of
/// type `ty`.
pub(in crate::sql) fn strip_for<'e>(expr: &'e Expr, ty: &PgType, arrays: bool) -> &'e Expr {
    match expr {
        Expr::Nested(inner) => strip_for(inner, ty, arrays),
        Expr::Cast {
            expr: inner,
            data_type,
            format: None,
            ..
        } if seen_cast(data_type, ty, arrays).is_some() => strip_for(inner, ty, arrays),
        _ => expr,
    }
}

/// The type of a cast not seen through for a column of type `ty` right around a literal or
/// parameter (`$1::bigint` for an integer column, `DATE '...'` for a text one), for the
/// refusal's message.
pub(in crate::sql) fn foreign_cast(expr: &Expr, ty: &PgType, arrays: bool) -> Option<String> {
    match strip_for(expr, ty, arrays) {
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } if matches!(
            strip_for(inner, ty, arrays),
            Expr::Value(_) | Expr::TypedString(_)
        ) =>
        {
            Some(data_type.to_string().to_lowercase())
        }
        Expr::TypedString(typed) => Some(typed.data_type.to_string().to_lowercase()),
        _ => None,
    }
}

/// A type a PII value or column may be cast to without changing it: text, varchar without
/// a length. (An explicit cast to `varchar(n)` silently truncates the ciphertext; `citext`
/// would compare ciphertexts case-insensitively, so `email::citext = 'ANN@X.COM'` would
/// look for the ciphertext of the upper-case text and silently find nothing.)
fn is_text_type(name: &str) -> bool {
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

/// Classifies a value as a text column would take it (NULL and DEFAULT checks).
pub(in crate::sql) fn bound(expr: &Expr) -> Bound {
    bound_for(expr, &PgType::new(Kind::Text), false)
}

/// Classifies a value written to or compared with a PII column of type `ty`; with
/// `arrays`, a value standing for an array of them (`= ANY($1::date[])`).
pub(in crate::sql) fn bound_for(expr: &Expr, ty: &PgType, arrays: bool) -> Bound {
    let inner = strip_for(expr, ty, arrays);
    match inner {
        Expr::Value(v) => match &v.value {
            Value::Null => Bound::Null,
            // The literal's own span: a cast around it (`'x'::text`) stays in the text.
            Value::SingleQuotedString(_) => Bound::Literal(LiteralKind::Quoted, v.span),
            Value::EscapedStringLiteral(_) => Bound::Literal(LiteralKind::Escaped, v.span),
            Value::DollarQuotedString(_) => Bound::Literal(LiteralKind::DollarQuoted, v.span),
            // A typed number column canonicalises any number; a text one stores it as written.
            Value::Number(n, _)
                if !arrays && (is_number_type(ty) || (!is_typed(ty) && canonical_number(n))) =>
            {
                Bound::Literal(LiteralKind::Number, v.span)
            }
            Value::Boolean(_) if !arrays && ty.kind() == Kind::Bool => {
                Bound::Literal(LiteralKind::Boolean, v.span)
            }
            Value::Placeholder(_) => match placeholder(&v.value) {
                Some(n) => Bound::Param(n, v.span),
                None => Bound::Other,
            },
            _ => Bound::Other,
        },
        // `-5`: the span is the number's; the recording finds the minus before it.
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: number,
        } if !arrays && is_number_type(ty) => match number.as_ref() {
            Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
                Bound::Literal(LiteralKind::NegativeNumber, v.span)
            }
            _ => Bound::Other,
        },
        // `DATE '2020-01-02'`: the string is the literal; its type name is a cast's.
        Expr::TypedString(typed)
            if !arrays
                && !typed.uses_odbc_syntax
                && seen_cast(&typed.data_type, ty, false).is_some() =>
        {
            match &typed.value.value {
                Value::SingleQuotedString(_) => {
                    Bound::Literal(LiteralKind::Quoted, typed.value.span)
                }
                Value::EscapedStringLiteral(_) => {
                    Bound::Literal(LiteralKind::Escaped, typed.value.span)
                }
                Value::DollarQuotedString(_) => {
                    Bound::Literal(LiteralKind::DollarQuoted, typed.value.span)
                }
                _ => Bound::Other,
            }
        }
        Expr::Identifier(ident)
            if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") =>
        {
            Bound::Default
        }
        _ => Bound::Other,
    }
}
