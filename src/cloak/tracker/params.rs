//! The server's ParameterStatus settings that change how pgcloak reads statements and
//! reads and prints typed values.

use super::Tracker;
use crate::pgtype::{Settings, Unsupported};

/// Settings the server reports in ParameterStatus that change how pgcloak reads statements.
#[derive(Debug, Clone)]
pub struct ServerParams {
    /// `client_encoding`, when it is not UTF8.
    pub foreign_encoding: Option<String>,
    /// `standard_conforming_strings`: backslashes in '...' are literal when on.
    pub standard_conforming_strings: bool,
    /// DateStyle, TimeZone, IntervalStyle: how values of typed PII columns are read and
    /// printed.
    pub settings: Settings,
    /// A setting pgcloak cannot follow: typed PII values are refused until it changes.
    pub unsupported: Option<Unsupported>,
    /// Counts the reports of `settings` (the client side copies them only when it moved).
    pub version: u64,
    /// `session_authorization`: the session's user, as the server reported it (the login
    /// role, or the one `SET SESSION AUTHORIZATION` chose). None until it is reported.
    pub session_user: Option<String>,
}

impl Default for ServerParams {
    fn default() -> Self {
        ServerParams {
            foreign_encoding: None,
            standard_conforming_strings: true,
            settings: Settings::default(),
            unsupported: None,
            version: 0,
            session_user: None,
        }
    }
}

impl Tracker {
    pub(super) fn parameter_status(&mut self, body: &[u8]) {
        let mut fields = body.split(|&b| b == 0);
        let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
            return;
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"client_encoding" => {
                self.params.foreign_encoding =
                    (!value.eq_ignore_ascii_case("UTF8")).then(|| value.into_owned());
            }
            b"standard_conforming_strings" => {
                self.params.standard_conforming_strings = value.eq_ignore_ascii_case("on");
            }
            b"session_authorization" => self.params.session_user = Some(value.into_owned()),
            b"DateStyle" | b"TimeZone" | b"IntervalStyle" => {
                let name = String::from_utf8_lossy(name);
                let params = &mut self.params;
                params.version += 1;
                // A setting that cannot be followed holds until the server reports one that
                // can (for the same name).
                match params.settings.set(&name, &value) {
                    Ok(()) if params.unsupported.as_ref().is_some_and(|u| u.name == name) => {
                        params.unsupported = None;
                    }
                    Ok(()) => {}
                    Err(unsupported) => params.unsupported = Some(unsupported),
                }
            }
            _ => {}
        }
    }
}
