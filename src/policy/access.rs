//! Who may see and write a PII column's plaintext through pgcloak: a column's `readers`,
//! `writers` and `mask`.
//!
//! Roles are Postgres role names, matched exactly against the session's user: membership in
//! a listed role does not make a reader (pgcloak does not read `pg_auth_members`).

use std::collections::BTreeSet;

use serde_yaml::{Mapping, Value};

use crate::pgtype::{Kind, PgType};

/// One column's access rules; the default (every list absent) lets every role read and write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The roles that see plaintext; None: every role.
    pub readers: Option<BTreeSet<String>>,
    /// The roles whose values pgcloak encrypts for the column; None: every role.
    pub writers: Option<BTreeSet<String>>,
    /// What other roles see in place of a value; None: their query is refused.
    pub mask: Option<String>,
}

impl Access {
    /// Whether `role` sees the column's plaintext (None: the session's user is not known yet).
    pub fn may_read(&self, role: Option<&str>) -> bool {
        allowed(self.readers.as_ref(), role)
    }

    /// Whether values `role` sends are encrypted for the column (rather than refused).
    pub fn may_write(&self, role: Option<&str>) -> bool {
        allowed(self.writers.as_ref(), role)
    }

    /// Whether the rules restrict anyone.
    pub fn is_open(&self) -> bool {
        self.readers.is_none() && self.writers.is_none()
    }

    /// The readers, for messages: `app, support`, or `no role` for an empty list.
    pub fn readers_text(&self) -> String {
        list_text(self.readers.as_ref())
    }

    /// The writers, for messages.
    pub fn writers_text(&self) -> String {
        list_text(self.writers.as_ref())
    }
}

fn allowed(list: Option<&BTreeSet<String>>, role: Option<&str>) -> bool {
    match (list, role) {
        (None, _) => true,
        (Some(list), Some(role)) => list.contains(role),
        (Some(_), None) => false,
    }
}

fn list_text(list: Option<&BTreeSet<String>>) -> String {
    match list {
        None => "every role".into(),
        Some(list) if list.is_empty() => "no role".into(),
        Some(list) => list.iter().cloned().collect::<Vec<_>>().join(", "),
    }
}

/// Reads `readers`, `writers` and `mask` of a column's long form; an error is the key under
/// the column (`readers`, `mask`) and what is wrong.
pub(super) fn parse_access(map: &Mapping, ty: &PgType) -> Result<Access, (&'static str, String)> {
    let access = Access {
        readers: roles(map, "readers")?,
        writers: roles(map, "writers")?,
        mask: match map.get("mask") {
            None => None,
            Some(Value::String(mask)) => Some(mask.clone()),
            Some(_) => return Err(("mask", "expected a string, e.g. \"•••\"".into())),
        },
    };
    if access.mask.is_some() && access.readers.is_none() {
        return Err((
            "mask",
            "is shown to roles that are not readers, and the column has no `readers`: add `readers: [...]`, or remove the mask".into(),
        ));
    }
    if access.mask.is_some() && !matches!(ty.kind(), Kind::Text | Kind::Varchar) {
        return Err((
            "mask",
            format!(
                "is text, and the column is of type {}, whose values a client decodes as that type: remove the mask (other roles' queries are then refused), or declare the column text",
                ty.name()
            ),
        ));
    }
    Ok(access)
}

fn roles(
    map: &Mapping,
    key: &'static str,
) -> Result<Option<BTreeSet<String>>, (&'static str, String)> {
    let Some(value) = map.get(key) else {
        return Ok(None);
    };
    let expected = || {
        (
            key,
            "expected a list of Postgres role names, e.g. [app, support]".to_owned(),
        )
    };
    let list = value.as_sequence().ok_or_else(expected)?;
    let mut roles = BTreeSet::new();
    for role in list {
        match role.as_str() {
            Some(name) if !name.is_empty() => roles.insert(name.to_owned()),
            _ => return Err(expected()),
        };
    }
    Ok(Some(roles))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(yaml: &str, ty: Kind) -> Result<Access, (&'static str, String)> {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        parse_access(value.as_mapping().unwrap(), &PgType::new(ty))
    }

    #[test]
    fn readers_are_matched_by_name() {
        let a = access("{ readers: [app, support] }", Kind::Text).unwrap();
        assert!(a.may_read(Some("app")));
        assert!(!a.may_read(Some("App")));
        assert!(!a.may_read(Some("bob")));
        assert!(!a.may_read(None));
        assert!(
            a.may_write(Some("bob")),
            "writers absent: every role writes"
        );
        assert_eq!(a.readers_text(), "app, support");
        let none = access("{ readers: [] }", Kind::Date).unwrap();
        assert!(!none.may_read(Some("app")));
        assert_eq!(none.readers_text(), "no role");
        assert!(Access::default().may_read(None) && Access::default().is_open());
    }

    #[test]
    fn errors_name_the_key() {
        for (yaml, ty, key, message) in [
            ("{ readers: app }", Kind::Text, "readers", "list"),
            ("{ writers: [''] }", Kind::Text, "writers", "list"),
            ("{ mask: 'x' }", Kind::Text, "mask", "readers"),
            ("{ readers: [a], mask: 3 }", Kind::Text, "mask", "string"),
            ("{ readers: [a], mask: 'x' }", Kind::Date, "mask", "date"),
        ] {
            let (at, m) = access(yaml, ty).unwrap_err();
            assert_eq!(at, key, "{yaml}");
            assert!(m.contains(message), "{yaml}: {m}");
        }
        assert!(access("{ readers: [a], mask: 'x' }", Kind::Varchar).is_ok());
    }
}
