//! Values of typed PII columns (`type: date`, ...) between the forms the application uses
//! and the canonical form pgcloak encrypts (see [`crate::pgtype`]): what arrives (a literal,
//! a parameter in text or binary format, a COPY field) is read as Postgres would read that
//! type under the session's settings; what is returned is printed as Postgres prints it.
//! Text columns pass through unchanged, without a copy.

use std::borrow::Cow;
use std::fmt::Display;

use crate::pgtype::{self, Kind, PgType, Settings, Unsupported, ValueError};
use crate::sql::Refusal;

/// The session settings values are read and printed with, or the setting pgcloak cannot
/// follow (then text values of typed columns are refused rather than misread).
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub settings: Settings,
    pub unsupported: Option<Unsupported>,
    /// Nothing in flight may change the settings before the server reads this value (the
    /// session is idle, or in a COPY the server confirmed); otherwise a value whose reading
    /// depends on them is refused.
    pub settled: bool,
}

impl Session {
    fn check(&self, ty: &PgType, column: &dyn Display) -> Result<(), Refusal> {
        match &self.unsupported {
            Some(setting) if depends_on_settings(ty) => Err(Refusal::unsupported(format!(
                "{setting}, so values of {column} ({}) are refused in this session rather than read or printed differently from Postgres; SET {} to a supported value (e.g. DateStyle = 'ISO, MDY')",
                ty.name(),
                setting.name
            ))),
            _ => Ok(()),
        }
    }
}

/// Whether `text` reads as `read` under every DateStyle field order and another TimeZone.
fn reads_the_same(
    ty: &PgType,
    text: &str,
    settings: &Settings,
    read: &Result<Vec<u8>, ValueError>,
) -> bool {
    use crate::pgtype::settings::{DateOrder, Zone};
    if !depends_on_settings(ty) {
        return true;
    }
    let mut other = settings.clone();
    let orders = [DateOrder::Mdy, DateOrder::Dmy, DateOrder::Ymd];
    let same_order = orders.iter().all(|&order| {
        other.date_order = order;
        pgtype::from_text(ty, text, &other) == *read
    });
    other.date_order = settings.date_order;
    other.zone = match settings.zone {
        Zone::Fixed { east: 20_700, .. } => Zone::Fixed {
            east: -36_000,
            abbrev: "-10".into(),
        },
        _ => Zone::Fixed {
            east: 20_700,
            abbrev: "+0545".into(),
        },
    };
    same_order && (ty.kind() != Kind::Timestamptz || pgtype::from_text(ty, text, &other) == *read)
}

/// Whether the type's text forms depend on DateStyle or TimeZone.
fn depends_on_settings(ty: &PgType) -> bool {
    matches!(
        ty.kind(),
        Kind::Date | Kind::Time | Kind::Timestamp | Kind::Timestamptz
    )
}

/// The bytes to encrypt for a value of `column` (of type `ty`) sent as text or binary.
pub fn canonical<'v>(
    ty: &PgType,
    value: &'v [u8],
    binary: bool,
    session: &Session,
    column: &dyn Display,
) -> Result<Cow<'v, [u8]>, Refusal> {
    if ty.kind() == Kind::Text {
        return Ok(Cow::Borrowed(value));
    }
    let read = if binary {
        pgtype::from_binary(ty, value)
    } else {
        session.check(ty, column)?;
        let text = std::str::from_utf8(value).map_err(|_| Refusal {
            code: "22021",
            message: format!("the value for {column} is not valid UTF-8"),
        })?;
        let read = pgtype::from_text(ty, text, &session.settings);
        if !session.settled && !reads_the_same(ty, text, &session.settings, &read) {
            return Err(Refusal::unsupported(format!(
                "the value for {column} ({}) would be read differently under another DateStyle or TimeZone, and a request still in flight may change those settings; write it in ISO form (2020-01-02, with an explicit offset for timestamptz), send it when no other request is in flight, or bind it in binary format",
                ty.name()
            )));
        }
        read
    };
    read.map(Cow::Owned)
        .map_err(|error| refusal(&error, ty, column))
}

/// The value as the application receives it: the canonical bytes printed as Postgres prints
/// the type (text), or in its send format (binary).
pub fn render<'v>(
    ty: &PgType,
    canonical: &'v [u8],
    binary: bool,
    session: &Session,
    column: &dyn Display,
) -> Result<Cow<'v, [u8]>, Refusal> {
    if ty.kind() == Kind::Text || (!binary && pgtype::prints_canonical(ty, &session.settings)) {
        // Still refused under a setting pgcloak does not follow.
        if ty.kind() != Kind::Text {
            session.check(ty, column)?;
        }
        return Ok(Cow::Borrowed(canonical));
    }
    let printed = if binary {
        pgtype::to_binary(ty, canonical)
    } else {
        session.check(ty, column)?;
        pgtype::to_text(ty, canonical, &session.settings).map(String::into_bytes)
    };
    printed
        .map(Cow::Owned)
        .map_err(|error| refusal(&error, ty, column))
}

/// Postgres's error for the value, naming the column, without the value itself (Postgres
/// quotes the input; pgcloak's messages never carry a PII value).
fn refusal(error: &ValueError, ty: &PgType, column: &dyn Display) -> Refusal {
    let message = error.without_value();
    let unsupported = if error.unsupported {
        " (Postgres may accept this form, pgcloak does not: write it in ISO form)"
    } else {
        ""
    };
    Refusal {
        code: error.sqlstate,
        message: format!("{message}, for {column} ({}){unsupported}", ty.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            settled: true,
            ..Session::default()
        }
    }

    #[test]
    fn values_are_read_and_printed_as_their_type() {
        let date = PgType::parse("date").unwrap();
        let c = canonical(&date, b"2020-1-2", false, &session(), &"t.d").unwrap();
        assert_eq!(&*c, b"2020-01-02");
        let binary = render(&date, &c, true, &session(), &"t.d").unwrap();
        assert_eq!(&*binary, (7306i32).to_be_bytes());
        let back = canonical(&date, &binary, true, &session(), &"t.d").unwrap();
        assert_eq!(back, c);
        let text = PgType::parse("text").unwrap();
        assert!(matches!(
            canonical(&text, b"x", false, &session(), &"t.e").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn invalid_values_are_refused_without_the_value() {
        let date = PgType::parse("date").unwrap();
        let e = canonical(&date, b"2020-13-45", false, &session(), &"t.dob").unwrap_err();
        assert!(e.code == "22008" || e.code == "22007", "{e:?}");
        assert!(
            e.message.contains("t.dob") && !e.message.contains("2020-13"),
            "{e:?}"
        );
        let int = PgType::parse("integer").unwrap();
        let e = canonical(&int, b"secret", false, &session(), &"t.n").unwrap_err();
        assert_eq!(e.code, "22P02");
        assert!(!e.message.contains("secret"), "{e:?}");
    }

    #[test]
    fn values_read_with_settings_wait_for_them_to_settle() {
        let s = &Session::default();
        let date = PgType::parse("date").unwrap();
        assert!(canonical(&date, b"2020-01-02", false, s, &"t.d").is_ok());
        let e = canonical(&date, b"01/02/2020", false, s, &"t.d").unwrap_err();
        assert!(e.message.contains("in flight"), "{e:?}");
        assert!(canonical(&date, b"01/02/2020", false, &session(), &"t.d").is_ok());
        let tz = PgType::parse("timestamptz").unwrap();
        assert!(canonical(&tz, b"2020-01-02 03:04:05+02", false, s, &"t.t").is_ok());
        assert!(canonical(&tz, b"2020-01-02 03:04:05", false, s, &"t.t").is_err());
        let int = PgType::parse("integer").unwrap();
        assert!(canonical(&int, b"7", false, s, &"t.n").is_ok());
    }

    #[test]
    fn an_unsupported_setting_refuses_dates_but_not_numbers() {
        let setting = Unsupported {
            name: "DateStyle".into(),
            value: "Postgres, MDY".into(),
        };
        let s = &Session {
            unsupported: Some(setting),
            ..session()
        };
        let date = PgType::parse("date").unwrap();
        let e = canonical(&date, b"2020-01-02", false, s, &"t.d").unwrap_err();
        assert!(e.message.contains("DateStyle"), "{e:?}");
        assert!(render(&date, b"2020-01-02", true, s, &"t.d").is_ok());
        let int = PgType::parse("integer").unwrap();
        assert!(canonical(&int, b"7", false, s, &"t.n").is_ok());
    }
}
