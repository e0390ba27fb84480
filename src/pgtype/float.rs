//! `real` and `double precision`: `float4in`/`float8in` (strtod rules, whitespace, range
//! errors on overflow and on underflow to zero) and `float4out`/`float8out` byte for byte:
//! with `extra_float_digits > 0` the shortest round-trip digits (Ryu, fixed notation for
//! decimal exponents -4..15, -4..6 for real), otherwise `%.*g` with 15 (6) +
//! extra_float_digits digits. Canonical form: the shortest output, `-0` folded into `0`.

use super::int::trim_c_space;
use super::{sqlstate, Kind, Settings, ValueError};

fn type_name(kind: Kind) -> &'static str {
    if kind == Kind::Float4 {
        "real"
    } else {
        "double precision"
    }
}

/// The value a float column holds, at its own precision.
#[derive(Debug, Clone, Copy)]
enum Float {
    F4(f32),
    F8(f64),
}

impl Float {
    fn as_f64(self) -> f64 {
        match self {
            Float::F4(v) => f64::from(v),
            Float::F8(v) => v,
        }
    }
}

pub(crate) fn float_in(kind: Kind, input: &str) -> Result<Vec<u8>, ValueError> {
    let name = type_name(kind);
    let s = trim_c_space(input);
    let syntax = || ValueError::syntax(name, input);
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    if lower.starts_with("0x") || lower.starts_with("nan(") {
        return Err(ValueError::unsupported(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("pgcloak does not support hexadecimal or nan(...) input for type {name}"),
        ));
    }
    let special = matches!(lower.as_str(), "inf" | "infinity" | "nan");
    if !special && !is_decimal(body) {
        return Err(syntax());
    }
    let out_of_range = || {
        ValueError::new(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("\"{s}\" is out of range for type {name}"),
        )
    };
    let nonzero_digits = body
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().any(|b| matches!(b, b'1'..=b'9')));
    let value = match kind {
        Kind::Float4 => Float::F4(s.parse::<f32>().map_err(|_| syntax())?),
        _ => Float::F8(s.parse::<f64>().map_err(|_| syntax())?),
    };
    let v = value.as_f64();
    if !special && (v.is_infinite() || (v == 0.0 && nonzero_digits)) {
        return Err(out_of_range());
    }
    Ok(canonical(value).into_bytes())
}

/// strtod's decimal form: digits with an optional point (at least one digit), then an
/// optional exponent with at least one digit.
fn is_decimal(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    let points = mantissa.bytes().filter(|&b| b == b'.').count();
    if digits == 0 || points > 1 || digits + points != mantissa.len() {
        return false;
    }
    match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

fn canonical(value: Float) -> String {
    match value {
        // -0 = 0 in Postgres: one canonical zero.
        _ if value.as_f64() == 0.0 => "0".into(),
        _ => shortest(value),
    }
}

fn parse_canonical(kind: Kind, canonical: &[u8]) -> Result<Float, ValueError> {
    let corrupt = || ValueError::corrupt(type_name(kind));
    let s = std::str::from_utf8(canonical).map_err(|_| corrupt())?;
    match kind {
        Kind::Float4 => s.parse::<f32>().map(Float::F4).map_err(|_| corrupt()),
        _ => s.parse::<f64>().map(Float::F8).map_err(|_| corrupt()),
    }
}

/// Postgres's text for a non-finite value, if it is one.
fn special_text(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("Infinity")
    } else if v == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// `float8out_internal` with `extra_float_digits > 0`: Ryu's shortest digits.
fn shortest(value: Float) -> String {
    if let Some(s) = special_text(value.as_f64()) {
        return s.into();
    }
    let (sci, fixed_max) = match value {
        Float::F4(v) => (shortest_f32(v), 6),
        Float::F8(v) => (
            tie_to_even(
                format!("{v:e}"),
                |p| format!("{:.*e}", p, v),
                |s| s.parse::<f64>().ok() == Some(v),
            ),
            15,
        ),
    };
    let (neg, digits, exp) = split_sci(&sci);
    layout(neg, &digits, exp, fixed_max)
}

/// Rust's shortest digits for an f32 may sit exactly on the midpoint to a neighbour (they
/// still read back by round-half-even); Postgres's Ryu excludes those bounds and prints one
/// digit more. Midpoints of f32 values are exact in f64, so the case is detectable.
fn shortest_f32(v: f32) -> String {
    let sci = tie_to_even(
        format!("{v:e}"),
        |p| format!("{:.*e}", p, v),
        |s| s.parse::<f32>().ok() == Some(v),
    );
    let Ok(decimal) = sci.parse::<f64>() else {
        return sci;
    };
    let x = f64::from(v);
    let bits = v.to_bits();
    let up = f64::from(f32::from_bits(bits + 1));
    let down = f64::from(f32::from_bits(bits.wrapping_sub(1)));
    let on_bound =
        decimal == (x + up) / 2.0 || (bits & 0x7fff_ffff != 0 && decimal == (x + down) / 2.0);
    if on_bound {
        let (_, digits, _) = split_sci(&sci);
        return format!("{:.*e}", digits.len(), v);
    }
    sci
}

/// Rust's shortest digits round an exact tie up; Ryu (as Postgres uses it) rounds it to
/// even. The correctly rounded (half-even) form with as many digits is Ryu's choice when it
/// still reads back as the value.
fn tie_to_even(
    shortest: String,
    with_precision: impl Fn(usize) -> String,
    reads_back: impl Fn(&str) -> bool,
) -> String {
    let (_, digits, _) = split_sci(&shortest);
    let rounded = with_precision(digits.len().saturating_sub(1));
    if rounded != shortest && reads_back(&rounded) {
        rounded
    } else {
        shortest
    }
}

/// Splits Rust's `{:e}` output (`-1.25e-7`) into sign, digits and decimal exponent.
fn split_sci(sci: &str) -> (bool, String, i32) {
    let (neg, body) = match sci.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, sci),
    };
    let (mantissa, exp) = body.split_once('e').unwrap_or((body, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (neg, digits, exp.parse().unwrap_or(0))
}

/// Places digits `d1 d2 ...` (value `d1.d2... × 10^exp`) as Ryu does in Postgres: fixed
/// notation when `-4 <= exp < fixed_max`, else `d.ddde+XX`.
fn layout(neg: bool, digits: &str, exp: i32, fixed_max: i32) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if (-4..fixed_max).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
    out
}

/// C's `%.*g`: exponent style when the exponent is < -4 or >= the precision, trailing zeros
/// removed.
fn printf_g(v: f64, precision: i32) -> String {
    let p = precision.max(1);
    let sci = format!("{:.*e}", (p - 1) as usize, v);
    let (neg, digits, exp) = split_sci(&sci);
    if exp < -4 || exp >= p {
        return layout(neg, &digits, exp, i32::MIN);
    }
    let fixed = format!("{:.*}", (p - 1 - exp) as usize, v);
    if fixed.contains('.') {
        fixed
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        fixed
    }
}

pub(crate) fn float_out(
    kind: Kind,
    canonical: &[u8],
    settings: &Settings,
) -> Result<String, ValueError> {
    let value = parse_canonical(kind, canonical)?;
    let efd = settings.extra_float_digits;
    if efd > 0 {
        return Ok(shortest(value));
    }
    let v = value.as_f64();
    if let Some(s) = special_text(v) {
        return Ok(s.into());
    }
    let base = if kind == Kind::Float4 { 6 } else { 15 };
    Ok(printf_g(v, base + efd))
}

pub(crate) fn float_recv(kind: Kind, input: &[u8]) -> Result<Vec<u8>, ValueError> {
    let value = match kind {
        Kind::Float4 => Float::F4(f32::from_be_bytes(super::int::fixed(input)?)),
        _ => Float::F8(f64::from_be_bytes(super::int::fixed(input)?)),
    };
    Ok(canonical(value).into_bytes())
}

pub(crate) fn float_send(kind: Kind, canonical: &[u8]) -> Result<Vec<u8>, ValueError> {
    Ok(match parse_canonical(kind, canonical)? {
        Float::F4(v) => v.to_be_bytes().to_vec(),
        Float::F8(v) => v.to_be_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(kind: Kind, input: &str, efd: i32) -> String {
        let settings = Settings {
            extra_float_digits: efd,
            ..Settings::default()
        };
        float_out(kind, &float_in(kind, input).unwrap(), &settings).unwrap()
    }

    #[test]
    fn shortest_output_with_postgres_exponents() {
        for (input, want) in [
            ("1e15", "1e+15"),
            ("123456789012345", "123456789012345"),
            ("1e-5", "1e-05"),
            ("0.0001", "0.0001"),
            ("1.5e300", "1.5e+300"),
            ("  -2.5  ", "-2.5"),
            ("-0", "0"),
            ("inf", "Infinity"),
            ("-Infinity", "-Infinity"),
            ("nan", "NaN"),
            ("0.1", "0.1"),
            ("1e-310", "1e-310"),
        ] {
            assert_eq!(out(Kind::Float8, input, 1), want, "{input}");
        }
        assert_eq!(out(Kind::Float4, "1000000", 1), "1e+06");
        assert_eq!(out(Kind::Float4, "123456", 1), "123456");
        assert_eq!(out(Kind::Float4, "0.1", 1), "0.1");
        assert_eq!(out(Kind::Float4, "44577391", 1), "4.4577392e+07");
        assert_eq!(out(Kind::Float4, "3467056.21", 1), "3.4670562e+06");
    }

    #[test]
    fn printf_output_without_extra_digits() {
        assert_eq!(out(Kind::Float8, "0.1", 0), "0.1");
        assert_eq!(out(Kind::Float8, "0.1", 3), "0.1");
        assert_eq!(out(Kind::Float8, "1e15", 0), "1e+15");
        assert_eq!(out(Kind::Float8, "123456789012345", 0), "123456789012345");
        assert_eq!(
            out(Kind::Float8, "1234567890123456", 0),
            "1.23456789012346e+15"
        );
        assert_eq!(out(Kind::Float8, "3.14159", -10), "3.1416");
        assert_eq!(out(Kind::Float4, "0.1", 0), "0.1");
        assert_eq!(out(Kind::Float4, "1234567", 0), "1.23457e+06");
    }

    #[test]
    fn input_errors() {
        for bad in ["", " ", "1e", ".", "1..2", "e5", "1 2", "infx"] {
            assert_eq!(
                float_in(Kind::Float8, bad).unwrap_err().sqlstate,
                "22P02",
                "{bad}"
            );
        }
        for big in ["1e400", "-1e400", "1e-400"] {
            assert_eq!(
                float_in(Kind::Float8, big).unwrap_err().sqlstate,
                "22003",
                "{big}"
            );
        }
        assert_eq!(
            float_in(Kind::Float4, "1e39").unwrap_err().sqlstate,
            "22003"
        );
        assert_eq!(
            float_in(Kind::Float4, "1e-50").unwrap_err().sqlstate,
            "22003"
        );
        assert!(float_in(Kind::Float8, "0x10").unwrap_err().unsupported);
        assert_eq!(float_in(Kind::Float8, "0e-999").unwrap(), b"0");
    }
}
