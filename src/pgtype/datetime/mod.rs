//! `date`, `time`, `timestamp` and `timestamptz`: their representations (days and
//! microseconds since 2000-01-01, as Postgres holds them), the calendar (Postgres's
//! `date2j`/`j2date`, proleptic Gregorian, year 0 = 1 BC), range checks, binary formats,
//! and dispatch to [`parse`] (text input) and [`format`] (text output).
//!
//! Canonical form: the ISO output with `TimeZone = UTC`; a timestamptz is an instant, so
//! `2020-01-02 04:04:05+01` and `2020-01-02 03:04:05Z` are both `2020-01-02 03:04:05+00`.

mod format;
mod parse;
mod tokens;

use super::settings::Settings;
use super::{sqlstate, Kind, ValueError};

pub(crate) const USECS_PER_DAY: i64 = 86_400_000_000;
/// `date2j(2000, 1, 1)`.
pub(crate) const POSTGRES_EPOCH_JDATE: i64 = 2_451_545;
/// Days from 1970-01-01 to 2000-01-01.
pub(crate) const UNIX_EPOCH_DAYS: i64 = 10_957;
const DATE_END_JULIAN: i64 = 2_147_483_494;
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

/// A decoded value of one of the four types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value {
    /// Days since 2000-01-01; `i32::MIN`/`i32::MAX` are -infinity/infinity.
    Date(i32),
    /// Microseconds since midnight, 0..=24:00:00.
    Time(i64),
    /// Microseconds since 2000-01-01 00:00 (UTC for timestamptz); `i64::MIN`/`i64::MAX`
    /// are -infinity/infinity.
    Timestamp(i64),
}

pub(crate) fn date2j(year: i64, month: i64, day: i64) -> i64 {
    let (mut y, mut m) = (year, month);
    if m > 2 {
        m += 1;
        y += 4800;
    } else {
        m += 13;
        y += 4799;
    }
    let century = y.div_euclid(100);
    let mut julian = y * 365 - 32167;
    julian += y.div_euclid(4) - century + century.div_euclid(4);
    julian + 7834 * m / 256 + day
}

pub(crate) fn j2date(jd: i64) -> (i64, i64, i64) {
    let mut julian = jd + 32044;
    let mut quad = julian.div_euclid(146_097);
    let extra = (julian - quad * 146_097) * 4 + 3;
    julian += 60 + quad * 3 + extra.div_euclid(146_097);
    quad = julian.div_euclid(1461);
    julian -= quad * 1461;
    let mut y = julian * 4 / 1461;
    julian = if y != 0 {
        (julian + 305) % 365
    } else {
        (julian + 306) % 366
    } + 123;
    y += quad * 4;
    let quad = julian * 2141 / 65536;
    let day = julian - 7834 * quad / 256;
    let month = (quad + 10) % 12 + 1;
    (y - 4800, month, day)
}

pub(crate) fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

pub(crate) fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `IS_VALID_JULIAN`: from 4714-11-01 BC to 5874898-06 (exclusive) in astronomical years.
pub(crate) fn is_valid_julian(year: i64, month: i64) -> bool {
    (year > -4713 || (year == -4713 && month >= 11))
        && (year < 5_874_898 || (year == 5_874_898 && month < 6))
}

pub(crate) fn is_valid_date(days: i64) -> bool {
    (-POSTGRES_EPOCH_JDATE..DATE_END_JULIAN - POSTGRES_EPOCH_JDATE).contains(&days)
}

pub(crate) fn is_valid_timestamp(us: i64) -> bool {
    (MIN_TIMESTAMP..END_TIMESTAMP).contains(&us)
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Date => "date",
        Kind::Time => "time without time zone",
        Kind::Timestamp => "timestamp without time zone",
        _ => "timestamp with time zone",
    }
}

pub(crate) fn from_text(
    kind: Kind,
    input: &str,
    settings: &Settings,
) -> Result<Vec<u8>, ValueError> {
    // The common case, read the same under every setting: already canonical.
    if kind == Kind::Date && iso_date(input).is_some() {
        return Ok(input.as_bytes().to_vec());
    }
    let value = parse::parse(kind, input, settings)?;
    Ok(format::canonical(kind, value).into_bytes())
}

/// A date written exactly `YYYY-MM-DD` (year 0001 to 9999, a valid day): the canonical form
/// of every such date. Its days since 2000-01-01.
fn iso_date(text: &str) -> Option<i32> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        (b[range.clone()].iter().all(u8::is_ascii_digit)).then(|| {
            b[range]
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let valid =
        year >= 1 && (1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day);
    valid.then(|| (date2j(year, month, day) - POSTGRES_EPOCH_JDATE) as i32)
}

fn decode_canonical(kind: Kind, canonical: &[u8]) -> Result<Value, ValueError> {
    if kind == Kind::Date {
        if let Some(days) = std::str::from_utf8(canonical).ok().and_then(iso_date) {
            return Ok(Value::Date(days));
        }
    }
    std::str::from_utf8(canonical)
        .ok()
        .and_then(|s| parse::parse(kind, s, &Settings::default()).ok())
        .ok_or_else(|| ValueError::corrupt(type_name(kind)))
}

pub(crate) fn to_text(
    kind: Kind,
    canonical: &[u8],
    settings: &Settings,
) -> Result<String, ValueError> {
    let value = decode_canonical(kind, canonical)?;
    format::format(kind, value, settings)
}

pub(crate) fn to_binary(kind: Kind, canonical: &[u8]) -> Result<Vec<u8>, ValueError> {
    Ok(match decode_canonical(kind, canonical)? {
        Value::Date(d) => d.to_be_bytes().to_vec(),
        Value::Time(t) | Value::Timestamp(t) => t.to_be_bytes().to_vec(),
    })
}

pub(crate) fn from_binary(kind: Kind, input: &[u8]) -> Result<Vec<u8>, ValueError> {
    let value = match kind {
        Kind::Date => {
            let d = i32::from_be_bytes(super::int::fixed(input)?);
            if d != i32::MIN && d != i32::MAX && !is_valid_date(i64::from(d)) {
                return Err(ValueError::new(
                    sqlstate::DATETIME_FIELD_OVERFLOW,
                    "date out of range",
                ));
            }
            Value::Date(d)
        }
        Kind::Time => {
            let t = i64::from_be_bytes(super::int::fixed(input)?);
            if !(0..=USECS_PER_DAY).contains(&t) {
                return Err(ValueError::new(
                    sqlstate::DATETIME_FIELD_OVERFLOW,
                    "time out of range",
                ));
            }
            Value::Time(t)
        }
        _ => {
            let t = i64::from_be_bytes(super::int::fixed(input)?);
            if t != i64::MIN && t != i64::MAX && !is_valid_timestamp(t) {
                return Err(ValueError::new(
                    sqlstate::DATETIME_FIELD_OVERFLOW,
                    "timestamp out of range",
                ));
            }
            Value::Timestamp(t)
        }
    };
    Ok(format::canonical(kind, value).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_matches_postgres() {
        assert_eq!(date2j(2000, 1, 1), POSTGRES_EPOCH_JDATE);
        // The ISO fast path agrees with the parser on every day of several centuries, and
        // leaves everything else to it.
        let settings = Settings::default();
        for days in (-800_000..800_000).step_by(7) {
            let text = format::canonical(Kind::Date, Value::Date(days));
            match iso_date(&text) {
                Some(fast) => assert_eq!(fast, days, "{text}"),
                None => assert!(text.ends_with(" BC") || text.len() != 10, "{text}"),
            }
            let parsed = parse::parse(Kind::Date, &text, &settings).ok();
            assert!(
                matches!(parsed, Some(Value::Date(d)) if d == days),
                "{text}"
            );
        }
        for text in [
            "2020-02-30",
            "2021-02-29",
            "0000-01-01",
            "2020-13-01",
            "2020-1-02",
            " 2020-01-02",
        ] {
            assert_eq!(iso_date(text), None, "{text}");
        }
        assert_eq!(iso_date("2000-01-01"), Some(0));
        assert_eq!(iso_date("2020-02-29"), Some(7364));
        assert_eq!(date2j(294_277, 1, 1), 109_203_528);
        assert_eq!(date2j(5_874_898, 1, 1), DATE_END_JULIAN);
        assert_eq!(date2j(-4713, 11, 24), 0);
        for jd in [
            0,
            1,
            2_451_545,
            2_440_588,
            1_721_425,
            2_147_483_493,
            1_000_000,
        ] {
            let (y, m, d) = j2date(jd);
            assert_eq!(date2j(y, m, d), jd, "{jd}");
        }
        assert_eq!(j2date(2_440_588), (1970, 1, 1));
    }

    #[test]
    fn binary_checks_ranges() {
        assert_eq!(
            from_binary(Kind::Date, &0i32.to_be_bytes()).unwrap(),
            b"2000-01-01"
        );
        assert_eq!(
            from_binary(Kind::Date, &i32::MAX.to_be_bytes()).unwrap(),
            b"infinity"
        );
        let e = from_binary(Kind::Date, &(-3_000_000i32).to_be_bytes()).unwrap_err();
        assert_eq!(e.sqlstate, "22008");
        assert_eq!(
            from_binary(Kind::Date, &[0, 0]).unwrap_err().sqlstate,
            "08P01"
        );
        assert_eq!(
            from_binary(Kind::Time, &(-1i64).to_be_bytes())
                .unwrap_err()
                .sqlstate,
            "22008"
        );
        let ts = to_binary(Kind::Timestamptz, b"2000-01-01 00:00:01+00").unwrap();
        assert_eq!(ts, 1_000_000i64.to_be_bytes());
    }
}
