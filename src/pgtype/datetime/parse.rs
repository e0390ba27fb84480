//! Text input of dates and times: a tokenizer shaped like Postgres's `ParseDateTime` and a
//! decoder that follows `DecodeDateTime`/`DecodeNumber` for the forms pgcloak supports:
//! numeric dates in DateStyle order (`2020-01-02`, `1/2/2020`, `01.02.2020`), month names
//! (`Jan 2 2020`, `2-jan-2020`), weekday names (ignored), `HH:MM[:SS[.ffffff]]`, `T`,
//! `AM`/`PM`, `AD`/`BC`, offsets (`+02`, `+0230`, `-03:30`), `Z`/`UTC`/`GMT`, IANA zone
//! names, `infinity`, `-infinity`, `epoch`. Anything else Postgres might accept (Julian
//! days, `y2020m01d02`, run-together `20200102`, day-of-year, zone abbreviations like
//! `EST`, leap seconds) is refused as unsupported, never guessed; the clock words (`now`,
//! `today`, ...) are refused with 0A000.

use super::super::settings::{self, DateOrder, Settings, Zone};
use super::tokens::{is_weekday, month, tokenize, Ctx, Tok};
use super::{
    date2j, days_in_month, is_valid_date, is_valid_julian, is_valid_timestamp, Value,
    POSTGRES_EPOCH_JDATE, UNIX_EPOCH_DAYS, USECS_PER_DAY,
};
use crate::pgtype::{sqlstate, Kind, ValueError};

#[derive(Default)]
struct Fields {
    year: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    two_digit_year: bool,
    text_month: bool,
    /// Hour, minute, second, microseconds.
    time: Option<(i64, i64, i64, i64)>,
    offset: Option<i32>,
    zone: Option<Zone>,
    bc: Option<bool>,
    pm: Option<bool>,
    weekday: bool,
}

impl Fields {
    fn date_complete(&self) -> bool {
        self.year.is_some() && self.month.is_some() && self.day.is_some()
    }

    /// `DecodeNumber` for a plain number field of `flen` digits.
    fn number(&mut self, cx: &Ctx, digits: &str, order: DateOrder) -> Result<(), ValueError> {
        let flen = digits.len();
        let val: i64 = digits
            .parse()
            .ok()
            .filter(|v| *v <= i64::from(i32::MAX))
            .ok_or_else(|| cx.field_overflow())?;
        if flen == 3 && self.year.is_some() && self.month.is_none() && self.day.is_none() {
            return Err(cx.unsupported("a day of the year"));
        }
        let ymd_or_long = flen >= 3 || order == DateOrder::Ymd;
        let set_year = match (
            self.year.is_some(),
            self.month.is_some(),
            self.day.is_some(),
        ) {
            (false, false, false) => {
                if ymd_or_long {
                    self.year = Some(val);
                    true
                } else if order == DateOrder::Dmy {
                    self.day = Some(val);
                    false
                } else {
                    self.month = Some(val);
                    false
                }
            }
            (true, false, false) | (false, false, true) => {
                self.month = Some(val);
                false
            }
            (false, true, false) => {
                if self.text_month && ymd_or_long {
                    self.year = Some(val);
                    true
                } else {
                    self.day = Some(val);
                    false
                }
            }
            (true, true, false) => {
                if self.text_month && flen >= 3 && self.two_digit_year {
                    self.day = self.year;
                    self.year = Some(val);
                    self.two_digit_year = false;
                } else {
                    self.day = Some(val);
                }
                false
            }
            (false, true, true) => {
                self.year = Some(val);
                true
            }
            (true, true, true) => return Err(cx.unsupported("run-together digits")),
            (true, false, true) => return Err(cx.bad_format()),
        };
        if set_year {
            self.two_digit_year = flen <= 2;
        }
        Ok(())
    }

    /// `DecodeDate`: month names first, then the numbers in order; must complete the date.
    fn date(
        &mut self,
        cx: &Ctx,
        tok: &str,
        delim: char,
        order: DateOrder,
    ) -> Result<(), ValueError> {
        if self.year.is_some() || self.month.is_some() || self.day.is_some() || self.time.is_some()
        {
            return Err(cx.unsupported("a date after other date or time fields"));
        }
        let parts: Vec<&str> = tok.split(delim).collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(cx.unsupported("a date without three fields"));
        }
        let mut numbers = Vec::new();
        for p in &parts {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                numbers.push(*p);
            } else if let Some(m) = month(p) {
                if self.month.is_some() {
                    return Err(cx.bad_format());
                }
                self.month = Some(m);
                self.text_month = true;
            } else {
                return Err(cx.unsupported("a word inside a date"));
            }
        }
        let text_month = self.text_month;
        for n in numbers {
            self.number(cx, n, order)?;
        }
        self.text_month = text_month;
        if !self.date_complete() {
            return Err(cx.bad_format());
        }
        Ok(())
    }

    fn time(&mut self, cx: &Ctx, tok: &str) -> Result<(), ValueError> {
        if self.time.is_some() {
            return Err(cx.bad_format());
        }
        let parts: Vec<&str> = tok.split(':').collect();
        let (h, m, s) = match parts.as_slice() {
            [h, m] if !m.contains('.') => (*h, *m, "0"),
            [h, m, s] => (*h, *m, *s),
            _ => return Err(cx.unsupported("this time layout")),
        };
        let (s, frac) = match s.split_once('.') {
            Some((s, f)) => (s, Some(f)),
            None => (s, None),
        };
        let num = |p: &str| -> Result<i64, ValueError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 9 {
                return Err(cx.unsupported("this time layout"));
            }
            p.parse().map_err(|_| cx.bad_format())
        };
        let (h, m, s) = (num(h)?, num(m)?, num(s)?);
        let fsec = match frac {
            None => 0,
            Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
                // Postgres: rint(strtod(".fff") * 1e6).
                let v: f64 = format!("0.{f}").parse().map_err(|_| cx.bad_format())?;
                (v * 1e6).round_ties_even() as i64
            }
            Some(_) => return Err(cx.unsupported("this fraction")),
        };
        if m > 59 || s > 60 {
            return Err(cx.field_overflow());
        }
        if s == 60 {
            return Err(cx.unsupported("a leap second"));
        }
        // Postgres checks the hour as it reads the field, before later fields.
        if h > 24 {
            return Err(cx.field_overflow());
        }
        if h == 24 && (m, s, fsec) != (0, 0, 0) {
            return Err(cx.unsupported("24:xx with minutes"));
        }
        self.time = Some((h, m, s, fsec));
        Ok(())
    }

    fn offset(&mut self, cx: &Ctx, tok: &str) -> Result<(), ValueError> {
        if self.offset.is_some() || self.zone.is_some() {
            return Err(cx.bad_format());
        }
        let sign = if tok.starts_with('-') { -1 } else { 1 };
        let body = &tok[1..];
        let parts: Vec<&str> = body.split(':').collect();
        let num = |p: &str| -> Result<i64, ValueError> {
            if p.is_empty() || p.len() > 6 {
                return Err(cx.unsupported("this offset layout"));
            }
            p.parse().map_err(|_| cx.bad_format())
        };
        let (h, m, s) = match parts.as_slice() {
            [hm] if hm.len() > 2 => {
                let v = num(hm)?;
                (v / 100, v % 100, 0)
            }
            [h] => (num(h)?, 0, 0),
            [h, m] => (num(h)?, num(m)?, 0),
            [h, m, s] => (num(h)?, num(m)?, num(s)?),
            _ => return Err(cx.bad_format()),
        };
        if h > 15 || m >= 60 || s >= 60 {
            return Err(ValueError::new(
                "22009",
                format!("time zone displacement out of range: \"{}\"", cx.input),
            ));
        }
        self.offset = Some(sign * (h * 3600 + m * 60 + s) as i32);
        Ok(())
    }

    fn word(&mut self, cx: &Ctx, word: &str, next_is_time: bool) -> Result<(), ValueError> {
        if let Some(m) = month(word) {
            match self.month {
                // `20 jan 2` in MDY: the number read as a month was the day.
                Some(n) if !self.text_month && self.day.is_none() && (1..=31).contains(&n) => {
                    self.day = Some(n)
                }
                Some(_) => return Err(cx.bad_format()),
                None => {}
            }
            self.month = Some(m);
            self.text_month = true;
            return Ok(());
        }
        match word {
            "ad" | "bc" if self.bc.is_none() => self.bc = Some(word == "bc"),
            "am" | "pm" if self.pm.is_none() => self.pm = Some(word == "pm"),
            "t" if next_is_time => {}
            "z" | "utc" | "gmt" => {
                if self.offset.is_some() || self.zone.is_some() {
                    return Err(cx.bad_format());
                }
                self.offset = Some(0);
            }
            w if is_weekday(w) && !self.weekday => self.weekday = true,
            "now" | "today" | "tomorrow" | "yesterday" | "allballs" => {
                return Err(clock_word(word))
            }
            "ad" | "bc" | "am" | "pm" => return Err(cx.bad_format()),
            _ => return Err(cx.unsupported("this word")),
        }
        Ok(())
    }
}

fn clock_word(word: &str) -> ValueError {
    ValueError::unsupported(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "pgcloak does not evaluate '{word}' for an encrypted column: its value depends on \
             the clock; compute it in SQL outside the encrypted column or send the value"
        ),
    )
}

pub(crate) fn parse(kind: Kind, input: &str, settings: &Settings) -> Result<Value, ValueError> {
    let cx = Ctx { kind, input };
    let trimmed = input
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .to_ascii_lowercase();
    let epoch_days = -UNIX_EPOCH_DAYS;
    match (trimmed.as_str(), kind) {
        ("infinity" | "+infinity", Kind::Date) => return Ok(Value::Date(i32::MAX)),
        ("-infinity", Kind::Date) => return Ok(Value::Date(i32::MIN)),
        ("epoch", Kind::Date) => return Ok(Value::Date(epoch_days as i32)),
        ("infinity" | "+infinity", Kind::Timestamp | Kind::Timestamptz) => {
            return Ok(Value::Timestamp(i64::MAX))
        }
        ("-infinity", Kind::Timestamp | Kind::Timestamptz) => {
            return Ok(Value::Timestamp(i64::MIN))
        }
        ("epoch", Kind::Timestamp | Kind::Timestamptz) => {
            return Ok(Value::Timestamp(epoch_days * USECS_PER_DAY))
        }
        ("infinity" | "+infinity" | "-infinity" | "epoch", _) => {
            return Err(cx.unsupported("this special value"))
        }
        _ => {}
    }
    let toks = tokenize(&cx)?;
    let mut f = Fields::default();
    for (i, tok) in toks.iter().enumerate() {
        let next_is_time = matches!(toks.get(i + 1), Some(Tok::Time(_)));
        match tok {
            Tok::Date(t, d) => f.date(&cx, t, *d, settings.date_order)?,
            Tok::Time(t) => f.time(&cx, t)?,
            Tok::Offset(t) => {
                if f.time.is_none() && !f.date_complete() {
                    return Err(cx.unsupported("an offset before the date"));
                }
                f.offset(&cx, t)?
            }
            Tok::Word(w) => match w.as_str() {
                "infinity" | "+infinity" | "-infinity" | "epoch" => {
                    return Err(cx.unsupported("a special value with other fields"))
                }
                "-now" | "+now" => return Err(clock_word(w)),
                _ => f.word(&cx, w, next_is_time)?,
            },
            Tok::Zone(z) => {
                if f.offset.is_some() || f.zone.is_some() {
                    return Err(cx.bad_format());
                }
                f.zone = Some(
                    settings::parse_zone(z)
                        .filter(|z| matches!(z, Zone::Iana(_)))
                        .ok_or_else(|| cx.unsupported("this time zone name"))?,
                );
            }
            Tok::Num(n) => {
                if n.len() >= 6 {
                    return Err(cx.unsupported("run-together digits"));
                }
                if f.date_complete() {
                    return Err(cx.unsupported("a number after the date"));
                }
                f.number(&cx, n, settings.date_order)?
            }
        }
    }
    finish(&cx, f, settings)
}

fn finish(cx: &Ctx, f: Fields, settings: &Settings) -> Result<Value, ValueError> {
    let has_date = f.year.is_some() || f.month.is_some() || f.day.is_some();
    match cx.kind {
        Kind::Time if f.time.is_none() => return Err(cx.bad_format()),
        Kind::Time if !has_date && f.bc.is_some() => return Err(cx.bad_format()),
        Kind::Time => {}
        _ if !f.date_complete() => return Err(cx.bad_format()),
        _ => {}
    }
    let mut year = 0;
    if has_date {
        let (Some(y), Some(m), Some(d)) = (f.year, f.month, f.day) else {
            return Err(cx.bad_format());
        };
        // ValidateDate: AD/BC, two-digit years, month and day ranges.
        year = if f.bc == Some(true) {
            if y <= 0 {
                return Err(cx.field_overflow());
            }
            1 - y
        } else if f.two_digit_year {
            match y {
                0..=69 => y + 2000,
                70..=99 => y + 1900,
                _ => y,
            }
        } else if y <= 0 {
            return Err(cx.field_overflow());
        } else {
            y
        };
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || d > days_in_month(year, m) {
            return Err(cx.field_overflow());
        }
    }
    let (mut h, m, s, fsec) = f.time.unwrap_or((0, 0, 0, 0));
    if let Some(pm) = f.pm {
        if h > 12 {
            return Err(cx.field_overflow());
        }
        if !pm && h == 12 {
            h = 0;
        } else if pm && h != 12 {
            h += 12;
        }
    }
    if h > 24 || (h == 24 && (m, s, fsec) != (0, 0, 0)) {
        return Err(if h == 24 {
            cx.unsupported("24:xx with minutes")
        } else {
            cx.field_overflow()
        });
    }
    let time_us = ((h * 60 + m) * 60 + s) * 1_000_000 + fsec;
    if cx.kind == Kind::Time {
        if time_us > USECS_PER_DAY {
            return Err(cx.field_overflow());
        }
        return Ok(Value::Time(time_us));
    }
    let (Some(mon), Some(day)) = (f.month, f.day) else {
        return Err(cx.bad_format());
    };
    if !is_valid_julian(year, mon) {
        return Err(cx.out_of_range());
    }
    let days = date2j(year, mon, day) - POSTGRES_EPOCH_JDATE;
    if cx.kind == Kind::Date {
        if !is_valid_date(days) {
            return Err(cx.out_of_range());
        }
        return Ok(Value::Date(days as i32));
    }
    let local = days
        .checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(time_us))
        .ok_or_else(|| cx.out_of_range())?;
    let mut us = local;
    if cx.kind == Kind::Timestamptz {
        let east = match (&f.offset, &f.zone) {
            (Some(off), _) => *off,
            (None, zone) => {
                let zone = zone.as_ref().unwrap_or(&settings.zone);
                let local_secs = local.div_euclid(1_000_000) + UNIX_EPOCH_DAYS * 86_400;
                settings::offset_for_local(zone, local_secs).ok_or_else(|| cx.out_of_range())?
            }
        };
        us = local - i64::from(east) * 1_000_000;
    }
    if !is_valid_timestamp(us) {
        return Err(cx.out_of_range());
    }
    Ok(Value::Timestamp(us))
}

#[cfg(test)]
mod tests {
    use super::super::format::canonical;
    use super::*;

    fn canon(kind: Kind, s: &str, style: &str) -> Result<String, &'static str> {
        let mut set = Settings::default();
        set.set("DateStyle", style).unwrap();
        set.set("TimeZone", "America/New_York").unwrap();
        parse(kind, s, &set)
            .map(|v| canonical(kind, v))
            .map_err(|e| e.sqlstate)
    }

    #[test]
    fn dates_in_each_order() {
        let d = |s, st| canon(Kind::Date, s, st);
        assert_eq!(d("2020-1-2", "ISO, MDY"), Ok("2020-01-02".into()));
        assert_eq!(d(" 01/02/2020 ", "ISO, MDY"), Ok("2020-01-02".into()));
        assert_eq!(d("01/02/2020", "ISO, DMY"), Ok("2020-02-01".into()));
        assert_eq!(d("01-02-03", "ISO, MDY"), Ok("2003-01-02".into()));
        assert_eq!(d("01-02-03", "ISO, YMD"), Ok("2001-02-03".into()));
        assert_eq!(d("Jan 2 2020", "ISO, DMY"), Ok("2020-01-02".into()));
        assert_eq!(d("20 jan 2", "ISO, MDY"), Ok("2002-01-20".into()));
        assert_eq!(
            d("Thu, January 2, 2020", "ISO, MDY"),
            Ok("2020-01-02".into())
        );
        assert_eq!(d("2-jan-2020", "ISO, MDY"), Ok("2020-01-02".into()));
        assert_eq!(d("0044-03-15 BC", "ISO, MDY"), Ok("0044-03-15 BC".into()));
        assert_eq!(
            d("2020-01-02 03:04:05+02", "ISO, MDY"),
            Ok("2020-01-02".into())
        );
        assert_eq!(d("2020-02-30", "ISO, MDY"), Err("22008"));
        assert_eq!(d("2020-13-01", "ISO, MDY"), Err("22008"));
        assert_eq!(d("0000-01-01", "ISO, MDY"), Err("22008"));
        assert_eq!(d("4714-11-23 BC", "ISO, MDY"), Err("22008"));
        assert_eq!(d("2020-01", "ISO, MDY"), Err("22007"));
        assert_eq!(d("today", "ISO, MDY"), Err("0A000"));
        assert_eq!(d("J2451545", "ISO, MDY"), Err("22007"));
    }

    #[test]
    fn timestamps_and_zones() {
        let t = |k, s| canon(k, s, "ISO, MDY");
        assert_eq!(
            t(Kind::Timestamp, "2020-01-02T03:04:05.1234565Z"),
            Ok("2020-01-02 03:04:05.123456".into())
        );
        assert_eq!(
            t(Kind::Timestamptz, "2020-01-02T03:04:05.1234565Z"),
            Ok("2020-01-02 03:04:05.123456+00".into())
        );
        assert_eq!(
            t(Kind::Timestamptz, "2020-01-02 03:04:05 +02:30"),
            Ok("2020-01-02 00:34:05+00".into())
        );
        assert_eq!(
            t(Kind::Timestamptz, "2020-01-02 03:04:05-0800"),
            Ok("2020-01-02 11:04:05+00".into())
        );
        assert_eq!(
            t(Kind::Timestamptz, "2020-07-02 03:04:05"),
            Ok("2020-07-02 07:04:05+00".into())
        );
        assert_eq!(
            t(Kind::Timestamptz, "2020-07-02 03:04:05 Europe/Paris"),
            Ok("2020-07-02 01:04:05+00".into())
        );
        assert_eq!(t(Kind::Timestamptz, "2020-01-02 +16"), Err("22009"));
        assert_eq!(
            t(Kind::Timestamptz, "epoch"),
            Ok("1970-01-01 00:00:00+00".into())
        );
        assert_eq!(
            t(Kind::Timestamp, "2020-01-01 24:00"),
            Ok("2020-01-02 00:00:00".into())
        );
        assert_eq!(t(Kind::Timestamp, "2020-01-01 25:00"), Err("22008"));
        assert_eq!(t(Kind::Timestamp, "294277-01-01"), Err("22008"));
        assert_eq!(t(Kind::Timestamp, "2020-01-02 03:04:05 EST"), Err("22007"));
        assert_eq!(
            t(Kind::Timestamp, "Jan 2 2020 3:04 PM"),
            Ok("2020-01-02 15:04:00".into())
        );
    }

    #[test]
    fn times() {
        let t = |s| canon(Kind::Time, s, "ISO, MDY");
        assert_eq!(t("24:00"), Ok("24:00:00".into()));
        assert_eq!(t("12:30 am"), Ok("00:30:00".into()));
        assert_eq!(t("13:30 pm"), Err("22008"));
        assert_eq!(t("25:00"), Err("22008"));
        assert_eq!(t("2020-01-02"), Err("22007"));
        assert_eq!(t("23:59:59.9999999"), Ok("24:00:00".into()));
        assert_eq!(t("allballs"), Err("0A000"));
    }
}
