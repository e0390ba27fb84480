//! The session settings that change how values are read and printed, followed from the
//! server's ParameterStatus messages. A value pgcloak cannot follow is refused by
//! [`Settings::set`], so the proxy can refuse the session rather than format wrongly.

use chrono::{NaiveDateTime, Offset, TimeZone as _};
use chrono_tz::{OffsetName as _, Tz};

/// A ParameterStatus value pgcloak cannot follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgcloak does not support {name} = '{value}' for typed PII columns")]
pub struct Unsupported {
    pub name: String,
    pub value: String,
}

/// DateStyle's output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateStyle {
    Iso,
    Sql,
    German,
}

/// DateStyle's field order, used to read ambiguous dates like `01/02/2020` (and by `SQL`
/// output: `DMY` prints day first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOrder {
    Mdy,
    Dmy,
    Ymd,
}

/// The session TimeZone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zone {
    /// A fixed offset east of UTC in seconds, with the abbreviation Postgres prints
    /// (`<+02>-02` is reported for `SET TIME ZONE 2`).
    Fixed { east: i32, abbrev: String },
    /// An IANA zone (tzdata as bundled by `chrono-tz`).
    Iana(Tz),
}

/// Text I/O settings of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub date_style: DateStyle,
    pub date_order: DateOrder,
    pub zone: Zone,
    pub extra_float_digits: i32,
    /// Parsed and kept; no typed column is an interval.
    pub interval_style: String,
    pub bytea_hex: bool,
}

impl Default for Settings {
    /// `DateStyle = ISO, MDY`, `TimeZone = UTC`, `extra_float_digits = 1`, hex bytea: the
    /// server reports its real values at startup, which [`Settings::set`] then applies.
    fn default() -> Settings {
        Settings {
            date_style: DateStyle::Iso,
            date_order: DateOrder::Mdy,
            zone: Zone::Iana(Tz::UTC),
            extra_float_digits: 1,
            interval_style: "postgres".into(),
            bytea_hex: true,
        }
    }
}

impl Settings {
    /// Applies one ParameterStatus. Names that do not change text I/O are ignored.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), Unsupported> {
        let unsupported = || Unsupported {
            name: name.to_string(),
            value: value.to_string(),
        };
        match name.to_ascii_lowercase().as_str() {
            "datestyle" => {
                let (mut style, mut order) = (self.date_style, self.date_order);
                for word in value.split([',', ' ']).filter(|w| !w.is_empty()) {
                    match word.to_ascii_lowercase().as_str() {
                        "iso" => style = DateStyle::Iso,
                        "sql" => style = DateStyle::Sql,
                        "german" => style = DateStyle::German,
                        "mdy" | "us" | "noneuro" | "noneuropean" => order = DateOrder::Mdy,
                        "dmy" | "euro" | "european" => order = DateOrder::Dmy,
                        "ymd" => order = DateOrder::Ymd,
                        _ => return Err(unsupported()),
                    }
                }
                self.date_style = style;
                self.date_order = order;
            }
            "timezone" => self.zone = parse_zone(value).ok_or_else(unsupported)?,
            "extra_float_digits" => {
                let n: i32 = value.trim().parse().map_err(|_| unsupported())?;
                if !(-15..=3).contains(&n) {
                    return Err(unsupported());
                }
                self.extra_float_digits = n;
            }
            "intervalstyle" => self.interval_style = value.to_string(),
            "bytea_output" => match value.to_ascii_lowercase().as_str() {
                "hex" => self.bytea_hex = true,
                "escape" => self.bytea_hex = false,
                _ => return Err(unsupported()),
            },
            _ => {}
        }
        Ok(())
    }
}

/// An IANA name, or the POSIX form `<abbrev>offset` Postgres reports for numeric zones
/// (`<+02>-02`, `<-03:30>+03:30`: POSIX offsets count west).
pub(crate) fn parse_zone(value: &str) -> Option<Zone> {
    if let Some(rest) = value.strip_prefix('<') {
        let (abbrev, offset) = rest.split_once('>')?;
        let west = parse_hms_offset(offset)?;
        return Some(Zone::Fixed {
            east: -west,
            abbrev: abbrev.to_string(),
        });
    }
    value.parse::<Tz>().ok().map(Zone::Iana)
}

/// `[+-]h[h][:mm[:ss]]` in seconds.
fn parse_hms_offset(s: &str) -> Option<i32> {
    let (sign, digits) = match s.as_bytes().first()? {
        b'-' => (-1, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let mut secs = 0i32;
    let mut parts = 0;
    for (i, part) in digits.split(':').enumerate() {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: i32 = part.parse().ok()?;
        secs += n * [3600, 60, 1].get(i)?;
        parts += 1;
    }
    (parts > 0).then_some(sign * secs)
}

/// The UTC offset (seconds east) and abbreviation of `zone` at a UTC instant given as
/// seconds since 1970.
pub(crate) fn offset_at_utc(zone: &Zone, unix_secs: i64) -> (i32, String) {
    match zone {
        Zone::Fixed { east, abbrev } => (*east, abbrev.clone()),
        Zone::Iana(tz) => match chrono::DateTime::from_timestamp(future_equivalent(unix_secs), 0) {
            Some(utc) => {
                let off = tz.offset_from_utc_datetime(&utc.naive_utc());
                let east = off.fix().local_minus_utc();
                let abbrev = off.abbreviation().map(str::to_string);
                (east, abbrev.unwrap_or_else(|| tzdata_abbrev(east)))
            }
            None => (0, "UTC".into()),
        },
    }
}

/// The offset (seconds east) that Postgres applies to a local time in `zone` (seconds
/// since 1970 as if it were UTC): in a fall-back overlap the later offset, in a
/// spring-forward gap the offset from before the gap.
pub(crate) fn offset_for_local(zone: &Zone, local_secs: i64) -> Option<i32> {
    match zone {
        Zone::Fixed { east, .. } => Some(*east),
        Zone::Iana(tz) => {
            let shifted = future_equivalent(local_secs);
            let naive: NaiveDateTime = chrono::DateTime::from_timestamp(shifted, 0)?.naive_utc();
            match tz.offset_from_local_datetime(&naive) {
                chrono::LocalResult::Single(off) => Some(off.fix().local_minus_utc()),
                chrono::LocalResult::Ambiguous(_, later) => Some(later.fix().local_minus_utc()),
                chrono::LocalResult::None => Some(offset_at_utc(zone, local_secs - 12 * 3600).0),
            }
        }
    }
}

/// Postgres applies a zone's current rules (its POSIX TZ string) forever; the tzdata that
/// `chrono-tz` bundles lists transitions only until about 2100. From 2090 on, an instant is
/// moved to the same date and time in a year of 2030..2058 whose calendar is the same (weekday
/// of January 1 and leap year), where the table follows the current rules.
fn future_equivalent(unix_secs: i64) -> i64 {
    use super::datetime::{date2j, j2date};
    const UNIX_EPOCH_JDATE: i64 = 2_440_588;
    let jd = unix_secs.div_euclid(86_400) + UNIX_EPOCH_JDATE;
    let (year, _, _) = j2date(jd);
    if year < 2090 {
        return unix_secs;
    }
    let kind = |y: i64| {
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        ((date2j(y, 1, 1) + 1).rem_euclid(7), leap)
    };
    let want = kind(year);
    match (2030..2090).find(|&y| kind(y) == want) {
        Some(y) => unix_secs + (date2j(y, 1, 1) - date2j(year, 1, 1)) * 86_400,
        None => unix_secs,
    }
}

/// tzdata's numeric abbreviation (`%z`: `+05`, `+0630`) for zones that have no letters.
fn tzdata_abbrev(east: i32) -> String {
    let sign = if east < 0 { '-' } else { '+' };
    let a = east.unsigned_abs();
    match (a / 3600, a / 60 % 60) {
        (h, 0) => format!("{sign}{h:02}"),
        (h, m) => format!("{sign}{h:02}{m:02}"),
    }
}

/// `+02`, `-03:30` as Postgres prints an offset without abbreviation.
pub(crate) fn numeric_abbrev(east: i32) -> String {
    let sign = if east < 0 { '-' } else { '+' };
    let a = east.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    match (m, s) {
        (0, 0) => format!("{sign}{h:02}"),
        (_, 0) => format!("{sign}{h:02}:{m:02}"),
        _ => format!("{sign}{h:02}:{m:02}:{s:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_parameter_status() {
        let mut s = Settings::default();
        s.set("DateStyle", "SQL, DMY").unwrap();
        assert_eq!(
            (s.date_style, s.date_order),
            (DateStyle::Sql, DateOrder::Dmy)
        );
        s.set("TimeZone", "<+02>-02").unwrap();
        assert_eq!(
            s.zone,
            Zone::Fixed {
                east: 7200,
                abbrev: "+02".into()
            }
        );
        s.set("TimeZone", "Europe/Paris").unwrap();
        assert_eq!(offset_at_utc(&s.zone, 1_593_658_800), (7200, "CEST".into()));
        s.set("extra_float_digits", "0").unwrap();
        s.set("bytea_output", "escape").unwrap();
        s.set("application_name", "x").unwrap();
        assert_eq!((s.extra_float_digits, s.bytea_hex), (0, false));
    }

    #[test]
    fn refuses_what_it_cannot_follow() {
        let mut s = Settings::default();
        assert!(s.set("DateStyle", "Postgres, MDY").is_err());
        assert!(s.set("TimeZone", "EST5EDT,M3.2.0,M11.1.0x").is_err());
        assert!(s.set("extra_float_digits", "9").is_err());
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn local_times_in_transitions() {
        let ny = Zone::Iana(Tz::America__New_York);
        // 2020-03-08 02:30 does not exist in New York: read with the offset before (-5).
        assert_eq!(offset_for_local(&ny, 1_583_634_600), Some(-5 * 3600));
        // 2020-11-01 01:30 happens twice: the later (standard) offset.
        assert_eq!(offset_for_local(&ny, 1_604_194_200), Some(-5 * 3600));
        assert_eq!(numeric_abbrev(-12600), "-03:30");
        // 2150-07-01 12:00 UTC: New York keeps daylight saving time as Postgres assumes.
        assert_eq!(offset_at_utc(&ny, 5_695_963_200).0, -4 * 3600);
    }
}
