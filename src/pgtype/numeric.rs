//! `numeric`: arbitrary-precision decimal input (`set_var_from_str`: whitespace, sign,
//! digits, exponent, `NaN`, `Infinity`/`inf`), `numeric(p,s)` rounding half away from zero
//! and its overflow errors, the storage limits (`value overflows numeric format`), and the
//! binary format (ndigits, weight, sign, dscale, base-10000 digits). Digits stay decimal
//! digits throughout: nothing goes through a float.
//!
//! Canonical form: without a typmod the value with trailing fractional zeros stripped
//! (`1.50` → `1.5`, `-0.0` → `0`); with `numeric(p,s)` rounded to `s` and printed with
//! exactly `max(s,0)` fractional digits, as Postgres stores it.

use super::int::{is_c_space, trim_c_space};
use super::types::numeric_typmod;
use super::{sqlstate, ValueError};

/// A finite decimal: `digits × 10^-scale`, `digits` without leading zeros (empty for 0).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dec {
    neg: bool,
    digits: Vec<u8>,
    scale: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Num {
    NaN,
    PosInf,
    NegInf,
    /// A finite value and its display scale (`dscale`).
    Finite(Dec, i64),
}

const NBASE: u32 = 10_000;
const DSCALE_MAX: i64 = 0x3fff;
const WEIGHT_MAX: i64 = i16::MAX as i64;

fn overflow() -> ValueError {
    ValueError::new(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        "value overflows numeric format",
    )
}

impl Dec {
    fn new(neg: bool, mut digits: Vec<u8>, scale: i64) -> Dec {
        let lead = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..lead);
        let neg = neg && !digits.is_empty();
        // Zero's scale is its display scale's business, kept apart (dscale).
        let scale = if digits.is_empty() { 0 } else { scale };
        Dec { neg, digits, scale }
    }

    /// Decimal exponent of the leading digit (None for zero).
    fn leading_exponent(&self) -> Option<i64> {
        (!self.digits.is_empty()).then(|| self.digits.len() as i64 - 1 - self.scale)
    }

    /// Rounds to `scale` fractional digits, half away from zero (`round_var`).
    fn round(&mut self, scale: i64) {
        if self.scale <= scale {
            return;
        }
        let drop = (self.scale - scale) as usize;
        let round_up = if drop > self.digits.len() {
            false
        } else {
            self.digits[self.digits.len() - drop] >= 5
        };
        let keep = self.digits.len().saturating_sub(drop);
        self.digits.truncate(keep);
        self.scale = scale;
        if round_up {
            let mut i = self.digits.len();
            loop {
                if i == 0 {
                    self.digits.insert(0, 1);
                    break;
                }
                i -= 1;
                if self.digits[i] == 9 {
                    self.digits[i] = 0;
                } else {
                    self.digits[i] += 1;
                    break;
                }
            }
        }
        *self = Dec::new(self.neg, std::mem::take(&mut self.digits), self.scale);
    }

    /// Drops digits beyond `scale` towards zero (`trunc_var`).
    fn truncate(&mut self, scale: i64) {
        if self.scale > scale {
            let drop = (self.scale - scale) as usize;
            let keep = self.digits.len().saturating_sub(drop);
            self.digits.truncate(keep);
            self.scale = scale;
            *self = Dec::new(self.neg, std::mem::take(&mut self.digits), self.scale);
        }
    }

    /// Removes trailing zeros that sit after the decimal point.
    fn strip_fraction_zeros(&mut self) {
        while self.scale > 0 && self.digits.last() == Some(&0) {
            self.digits.pop();
            self.scale -= 1;
        }
        if self.digits.is_empty() {
            self.scale = 0;
        }
    }

    /// `numeric_out` with `dscale` fractional digits.
    fn to_text(&self, dscale: i64) -> String {
        let mut out = String::new();
        if self.neg {
            out.push('-');
        }
        let len = self.digits.len() as i64;
        let int_len = len - self.scale;
        let digit = |i: i64| -> char {
            if (0..len).contains(&i) {
                (b'0' + self.digits[i as usize]) as char
            } else {
                '0'
            }
        };
        if int_len <= 0 {
            out.push('0');
        } else {
            (0..int_len).for_each(|i| out.push(digit(i)));
        }
        if dscale > 0 {
            out.push('.');
            (int_len..int_len + dscale).for_each(|i| out.push(digit(i)));
        }
        out
    }
}

/// `make_result`'s limits: the base-10000 weight fits an int16, dscale 14 bits.
fn check_storage(dec: &Dec, dscale: i64) -> Result<(), ValueError> {
    let weight = dec.leading_exponent().map_or(0, |e| e.div_euclid(4));
    if weight > WEIGHT_MAX || dscale > DSCALE_MAX {
        return Err(overflow());
    }
    Ok(())
}

fn parse(input: &str) -> Result<Num, ValueError> {
    let syntax = || ValueError::syntax("numeric", input);
    let s = trim_c_space(input);
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "nan" => return Ok(Num::NaN),
        "infinity" | "+infinity" | "inf" | "+inf" => return Ok(Num::PosInf),
        "-infinity" | "-inf" => return Ok(Num::NegInf),
        _ => {}
    }
    let b = s.as_bytes();
    let mut i = 0;
    let neg = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let (mut digits, mut frac, mut point) = (Vec::new(), 0i64, false);
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => {
                digits.push(c - b'0');
                frac += i64::from(point);
            }
            b'.' if !point => point = true,
            _ => break,
        }
        i += 1;
    }
    if digits.is_empty() {
        return Err(syntax());
    }
    let mut exponent = 0i64;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let start = i;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let digits_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == digits_start {
            return Err(syntax());
        }
        // strtol saturates; Postgres refuses |exponent| >= INT_MAX / 2 as an overflow.
        exponent = s[start..i].parse::<i64>().unwrap_or(i64::MAX);
        if s[start..].starts_with('-') && exponent == i64::MAX {
            exponent = i64::MIN;
        }
        if exponent >= i64::from(i32::MAX / 2) || exponent <= -i64::from(i32::MAX / 2) {
            return Err(overflow());
        }
    }
    if !b[i..].iter().all(|&c| is_c_space(c)) {
        return Err(syntax());
    }
    let scale = frac - exponent;
    Ok(Num::Finite(Dec::new(neg, digits, scale), scale.max(0)))
}

/// Applies `numeric(p,s)` (`apply_typmod`); `typmod < 4` means none.
fn apply_typmod(num: Num, typmod: i32) -> Result<Num, ValueError> {
    if typmod < 4 {
        return Ok(num);
    }
    let (p, s) = numeric_typmod(typmod);
    match num {
        Num::NaN => Ok(Num::NaN),
        Num::PosInf | Num::NegInf => Err(ValueError::new(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "numeric field overflow: A field with precision {p}, scale {s} cannot hold an \
                 infinite value."
            ),
        )),
        Num::Finite(mut dec, _) => {
            dec.round(i64::from(s));
            let max_digits = i64::from(p - s);
            let int_digits = dec.leading_exponent().map_or(0, |e| e + 1);
            if int_digits > max_digits {
                let limit = if max_digits > 0 {
                    format!("10^{max_digits}")
                } else {
                    "1".into()
                };
                return Err(ValueError::new(
                    sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                    format!(
                        "numeric field overflow: A field with precision {p}, scale {s} must \
                         round to an absolute value less than {limit}."
                    ),
                ));
            }
            Ok(Num::Finite(dec, i64::from(s.max(0))))
        }
    }
}

fn canonical(num: Num, typmod: i32) -> Result<Vec<u8>, ValueError> {
    let num = apply_typmod(num, typmod)?;
    Ok(match num {
        Num::NaN => b"NaN".to_vec(),
        Num::PosInf => b"Infinity".to_vec(),
        Num::NegInf => b"-Infinity".to_vec(),
        Num::Finite(mut dec, dscale) => {
            check_storage(&dec, dscale)?;
            if typmod < 4 {
                dec.strip_fraction_zeros();
                let scale = dec.scale.max(0);
                dec.to_text(scale).into_bytes()
            } else {
                dec.to_text(dscale).into_bytes()
            }
        }
    })
}

pub(crate) fn numeric_in(typmod: i32, input: &str) -> Result<Vec<u8>, ValueError> {
    let num = parse(input)?;
    if let Num::Finite(dec, dscale) = &num {
        check_storage(dec, *dscale)?;
    }
    canonical(num, typmod)
}

/// Parses a canonical value back (it is valid numeric input); its dscale is the number of
/// fractional digits printed.
fn parse_canonical(canonical: &[u8]) -> Result<Num, ValueError> {
    std::str::from_utf8(canonical)
        .ok()
        .and_then(|s| parse(s).ok())
        .ok_or_else(|| ValueError::corrupt("numeric"))
}

pub(crate) fn numeric_send(canonical: &[u8]) -> Result<Vec<u8>, ValueError> {
    let (sign, dec, dscale): (u16, Dec, i64) = match parse_canonical(canonical)? {
        Num::NaN => (0xC000, Dec::new(false, vec![], 0), 0),
        Num::PosInf => (0xD000, Dec::new(false, vec![], 0), 0),
        Num::NegInf => (0xF000, Dec::new(false, vec![], 0), 0),
        Num::Finite(d, dscale) => (if d.neg { 0x4000 } else { 0 }, d, dscale),
    };
    let mut groups: Vec<u16> = Vec::new();
    let mut weight: i64 = 0;
    if let Some(lead) = dec.leading_exponent() {
        weight = lead.div_euclid(4);
        let last = -dec.scale; // exponent of the last digit
        let last_group = last.div_euclid(4);
        let digit_at = |e: i64| -> u16 {
            let idx = lead - e;
            if (0..dec.digits.len() as i64).contains(&idx) {
                u16::from(dec.digits[idx as usize])
            } else {
                0
            }
        };
        let mut g = weight;
        while g >= last_group {
            let base = g * 4;
            groups.push((0..4).rev().fold(0, |acc, k| acc * 10 + digit_at(base + k)));
            g -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
    }
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as u16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(dscale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

pub(crate) fn numeric_recv(typmod: i32, input: &[u8]) -> Result<Vec<u8>, ValueError> {
    let short = || ValueError::binary_length(input.len() + 1, input.len());
    let word = |at: usize| -> Result<u16, ValueError> {
        input
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(short)
    };
    let invalid = |what: &str| {
        ValueError::new(
            sqlstate::INVALID_BINARY_REPRESENTATION,
            format!("invalid {what} in external \"numeric\" value"),
        )
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = word(6)?;
    if !matches!(sign, 0 | 0x4000 | 0xC000 | 0xD000 | 0xF000) {
        return Err(invalid("sign"));
    }
    if i64::from(dscale) > DSCALE_MAX {
        return Err(invalid("scale"));
    }
    let mut digits = Vec::with_capacity(ndigits * 4);
    for i in 0..ndigits {
        let d = word(8 + 2 * i)?;
        if u32::from(d) >= NBASE {
            return Err(invalid("digit"));
        }
        digits.extend([d / 1000, d / 100 % 10, d / 10 % 10, d % 10].map(|x| x as u8));
    }
    if input.len() != 8 + 2 * ndigits {
        return Err(ValueError::binary_length(8 + 2 * ndigits, input.len()));
    }
    let num = match sign {
        0xC000 => Num::NaN,
        0xD000 => Num::PosInf,
        0xF000 => Num::NegInf,
        _ => {
            // Digit group i stands for 10000^(weight - i).
            let scale = (ndigits as i64 - 1 - weight) * 4;
            let mut dec = Dec::new(sign == 0x4000, digits, scale);
            dec.truncate(i64::from(dscale));
            Num::Finite(dec, i64::from(dscale))
        }
    };
    canonical(num, typmod)
}

/// A JSON number when the value is an i64, or has at most 15 significant digits (an f64
/// then prints them back exactly); else None (the caller uses the text).
pub(crate) fn to_json(canonical: &[u8]) -> Option<serde_json::Value> {
    let s = std::str::from_utf8(canonical).ok()?;
    if let Ok(i) = s.parse::<i64>() {
        return Some(i.into());
    }
    let significant = s
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .count();
    if significant > 15
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    serde_json::Number::from_f64(v).map(serde_json::Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typmod(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    fn num(t: i32, s: &str) -> Result<String, String> {
        numeric_in(t, s)
            .map(|v| String::from_utf8(v).unwrap())
            .map_err(|e| format!("{} {}", e.sqlstate, e.message))
    }

    #[test]
    fn canonical_without_typmod_strips_fraction_zeros() {
        for (input, want) in [
            (" 1.50 ", "1.5"),
            ("1.0", "1"),
            ("-0.000", "0"),
            ("1.5e3", "1500"),
            ("1.50e1", "15"),
            ("0012.3400", "12.34"),
            (".5", "0.5"),
            ("5.", "5"),
            ("1e-3", "0.001"),
            ("NaN", "NaN"),
            ("-inf", "-Infinity"),
            ("+Infinity", "Infinity"),
        ] {
            assert_eq!(num(-1, input), Ok(want.into()), "{input}");
        }
        for bad in ["", ".", "1e", "+NaN", "1.2.3", "1 2", "e5", "0x1"] {
            assert!(num(-1, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn typmod_rounds_half_away_and_keeps_scale() {
        assert_eq!(num(typmod(10, 2), "1.005"), Ok("1.01".into()));
        assert_eq!(num(typmod(10, 2), "-1.005"), Ok("-1.01".into()));
        assert_eq!(num(typmod(10, 2), "1"), Ok("1.00".into()));
        assert_eq!(num(typmod(10, 2), "-0.001"), Ok("0.00".into()));
        assert_eq!(num(typmod(3, -2), "12345"), Ok("12300".into()));
        assert_eq!(num(typmod(2, 5), "0.000123"), Ok("0.00012".into()));
        assert!(num(typmod(4, 2), "99.995")
            .unwrap_err()
            .starts_with("22003"));
        assert!(num(typmod(4, 2), "Infinity")
            .unwrap_err()
            .starts_with("22003"));
        assert_eq!(num(typmod(4, 2), "NaN"), Ok("NaN".into()));
    }

    #[test]
    fn storage_limits() {
        assert!(num(-1, "1e131071").is_ok());
        assert!(num(-1, "1e131072").unwrap_err().starts_with("22003"));
        assert!(num(-1, "0.0e-20000").unwrap_err().starts_with("22003"));
        assert!(num(-1, "1e2000000000").unwrap_err().starts_with("22003"));
    }

    #[test]
    fn binary_round_trip() {
        for (text, bytes) in [
            ("0", vec![0, 0, 0, 0, 0, 0, 0, 0]),
            (
                "12345.678",
                vec![0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c],
            ),
            ("-0.01", vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0, 100]),
            ("NaN", vec![0, 0, 0, 0, 0xC0, 0, 0, 0]),
            ("10000", vec![0, 1, 0, 1, 0, 0, 0, 0, 0, 1]),
        ] {
            assert_eq!(numeric_send(text.as_bytes()).unwrap(), bytes, "{text}");
            assert_eq!(numeric_recv(-1, &bytes).unwrap(), text.as_bytes());
        }
        assert_eq!(
            numeric_recv(-1, &[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10])
                .unwrap_err()
                .sqlstate,
            "22P03"
        );
        assert_eq!(
            numeric_recv(-1, &[0, 0, 0, 0, 0x12, 0, 0, 0])
                .unwrap_err()
                .sqlstate,
            "22P03"
        );
        assert_eq!(
            numeric_recv(-1, &[0, 1, 0, 0]).unwrap_err().sqlstate,
            "08P01"
        );
    }
}
