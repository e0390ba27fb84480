//! Text output of dates and times as `EncodeDateOnly`, `EncodeTimeOnly` and
//! `EncodeDateTime` print them for DateStyle ISO, SQL and German, with the session TimeZone
//! for timestamptz (offset and abbreviation from the zone at that instant).

use super::super::settings::{self, DateOrder, DateStyle, Settings};
use super::{j2date, Value, POSTGRES_EPOCH_JDATE, UNIX_EPOCH_DAYS, USECS_PER_DAY};
use crate::pgtype::{Kind, ValueError};

/// The canonical text: ISO in UTC.
pub(crate) fn canonical(kind: Kind, value: Value) -> String {
    let utc = Settings::default();
    format(kind, value, &utc).unwrap_or_default()
}

pub(crate) fn format(kind: Kind, value: Value, s: &Settings) -> Result<String, ValueError> {
    Ok(match value {
        Value::Date(i32::MAX) | Value::Timestamp(i64::MAX) => "infinity".into(),
        Value::Date(i32::MIN) | Value::Timestamp(i64::MIN) => "-infinity".into(),
        Value::Date(d) => {
            let (y, m, day) = j2date(i64::from(d) + POSTGRES_EPOCH_JDATE);
            let mut out = date_part(y, m, day, s);
            push_bc(&mut out, y);
            out
        }
        Value::Time(t) => time_part(t),
        Value::Timestamp(us) => {
            let (offset, abbrev) = if kind == Kind::Timestamptz {
                let unix = us.div_euclid(1_000_000) + UNIX_EPOCH_DAYS * 86_400;
                let (east, abbrev) = settings::offset_at_utc(&s.zone, unix);
                (Some(east), abbrev)
            } else {
                (None, String::new())
            };
            let local = us + i64::from(offset.unwrap_or(0)) * 1_000_000;
            let days = local.div_euclid(USECS_PER_DAY);
            let (y, m, d) = j2date(days + POSTGRES_EPOCH_JDATE);
            let mut out = date_part(y, m, d, s);
            out.push(' ');
            out.push_str(&time_part(local.rem_euclid(USECS_PER_DAY)));
            if let Some(east) = offset {
                match s.date_style {
                    DateStyle::Iso => out.push_str(&settings::numeric_abbrev(east)),
                    DateStyle::Sql | DateStyle::German => {
                        out.push(' ');
                        out.push_str(&abbrev);
                    }
                }
            }
            push_bc(&mut out, y);
            out
        }
    })
}

fn display_year(y: i64) -> i64 {
    if y > 0 {
        y
    } else {
        1 - y
    }
}

fn push_bc(out: &mut String, y: i64) {
    if y <= 0 {
        out.push_str(" BC");
    }
}

fn date_part(y: i64, m: i64, d: i64, s: &Settings) -> String {
    let year = display_year(y);
    match s.date_style {
        DateStyle::Iso => format!("{year:04}-{m:02}-{d:02}"),
        DateStyle::Sql if s.date_order == DateOrder::Dmy => format!("{d:02}/{m:02}/{year:04}"),
        DateStyle::Sql => format!("{m:02}/{d:02}/{year:04}"),
        DateStyle::German => format!("{d:02}.{m:02}.{year:04}"),
    }
}

/// `HH:MM:SS` and the fraction with trailing zeros trimmed.
fn time_part(t: i64) -> String {
    let secs = t / 1_000_000;
    let frac = t % 1_000_000;
    let mut out = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        let f = format!("{frac:06}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(style: &str, zone: &str) -> Settings {
        let mut s = Settings::default();
        s.set("DateStyle", style).unwrap();
        s.set("TimeZone", zone).unwrap();
        s
    }

    #[test]
    fn styles() {
        // 2020-07-02 03:04:05.5 UTC
        let us = (7488 * 86_400 + 3 * 3600 + 4 * 60 + 5) * 1_000_000 + 500_000;
        let ts = Value::Timestamp(us);
        let f = |st: &str, z: &str, k: Kind| format(k, ts, &with(st, z)).unwrap();
        assert_eq!(
            f("ISO, MDY", "UTC", Kind::Timestamptz),
            "2020-07-02 03:04:05.5+00"
        );
        assert_eq!(
            f("ISO, MDY", "Europe/Paris", Kind::Timestamptz),
            "2020-07-02 05:04:05.5+02"
        );
        assert_eq!(
            f("SQL, MDY", "Europe/Paris", Kind::Timestamptz),
            "07/02/2020 05:04:05.5 CEST"
        );
        assert_eq!(
            f("SQL, DMY", "<+02>-02", Kind::Timestamptz),
            "02/07/2020 05:04:05.5 +02"
        );
        assert_eq!(
            f("German, DMY", "Asia/Dubai", Kind::Timestamptz),
            "02.07.2020 07:04:05.5 +04"
        );
        assert_eq!(
            f("SQL, DMY", "Asia/Dubai", Kind::Timestamp),
            "02/07/2020 03:04:05.5"
        );
        let bc = Value::Date(-(2000 + 44) * 366);
        assert!(format(Kind::Date, bc, &Settings::default())
            .unwrap()
            .ends_with(" BC"));
        assert_eq!(time_part(USECS_PER_DAY), "24:00:00");
    }
}
