//! The columns a session's user may not read or write through pgcloak (the policy's
//! `readers`, `writers` and `mask`), worked out once per user rather than per value.
//!
//! The user is `session_authorization` as the server reports it: the login role, or the
//! one `SET SESSION AUTHORIZATION` chose. `SET ROLE` changes what Postgres allows, not what
//! pgcloak decrypts: a reader stays one, and a role that is not a reader does not become one
//! by switching to a role that is (membership never makes a reader).

use std::collections::HashMap;

use crate::policy::Policy;
use crate::sql::{Refusal, StatementPlan};

/// SQLSTATE insufficient_privilege.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// What a session's user sees of the columns it may not read.
#[derive(Debug)]
pub struct Unreadable {
    /// The user, for messages (`an unknown role` before the server reported it).
    role: String,
    /// Column identity → its mask, or its readers (for the refusal) when it has none.
    columns: HashMap<String, Shown>,
}

#[derive(Debug)]
enum Shown {
    Mask(String),
    Refused { readers: String },
}

/// What a value of a column the user may not read becomes.
pub enum Denial<'a> {
    /// Its place in the result holds this text instead.
    Mask(&'a str),
    /// The query fails with this message (SQLSTATE 42501).
    Refused(String),
}

impl Unreadable {
    /// The columns `role` may not read; None when it reads every column (the usual case,
    /// which then costs nothing per value).
    pub fn for_role(policy: &Policy, role: Option<&str>) -> Option<Unreadable> {
        let columns: HashMap<String, Shown> = (policy.restricted())
            .filter(|(_, access)| !access.may_read(role))
            .map(|(column, access)| {
                let shown = match &access.mask {
                    Some(mask) => Shown::Mask(mask.clone()),
                    None => Shown::Refused {
                        readers: access.readers_text(),
                    },
                };
                (column.to_owned(), shown)
            })
            .collect();
        (!columns.is_empty()).then(|| Unreadable {
            role: role_text(role),
            columns,
        })
    }

    /// What a value of `column` (its identity) becomes for this user; None: it is readable.
    pub fn denial(&self, column: &str) -> Option<Denial<'_>> {
        Some(match self.columns.get(column)? {
            Shown::Mask(mask) => Denial::Mask(mask),
            Shown::Refused { readers } => Denial::Refused(format!(
                "role {} may not read {column}: the pgcloak policy lets only {readers} see its values; the row is not returned. Leave the column out of the query, or connect as a role in its `readers`",
                self.role
            )),
        })
    }
}

fn role_text(role: Option<&str>) -> String {
    match role {
        Some(role) => format!("\"{role}\""),
        None => "an unknown role".into(),
    }
}

/// Refuses a statement that has pgcloak encrypt a value for a column `role` may not write.
/// Search values are not writes: equality searches stay allowed.
pub fn check_writers(
    policy: &Policy,
    plan: &StatementPlan,
    role: Option<&str>,
) -> Result<(), Refusal> {
    if !policy.has_writers() {
        return Ok(());
    }
    let literals = (plan.literals.iter())
        .filter(|slot| slot.search.is_none())
        .map(|slot| &*slot.column);
    let params = (plan.param_uses.iter())
        .filter(|usage| usage.search.is_none())
        .filter_map(|usage| plan.params.get(&usage.n))
        .map(|slot| &*slot.column);
    let copied = (plan.copy_in.iter()).flat_map(|copy| copy.fields.iter().flatten());
    for column in literals.chain(params).chain(copied) {
        let id = column.to_string();
        if let Some(access) = policy.access(&id).filter(|a| !a.may_write(role)) {
            return Err(Refusal {
                code: INSUFFICIENT_PRIVILEGE,
                message: format!(
                    "role {} may not write {id}: the pgcloak policy lets only {} write its values. Connect as a role in its `writers`",
                    role_text(role),
                    access.writers_text()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn only_restricted_roles_pay() {
        let p = policy(
            "users:\n  email: { mode: deterministic, readers: [app] }\n  name: { mode: randomized, readers: [app], mask: '***' }\n  note: randomized\n",
        );
        assert!(Unreadable::for_role(&p, Some("app")).is_none());
        let bob = Unreadable::for_role(&p, Some("bob")).unwrap();
        assert!(bob.denial("public.users.note").is_none());
        assert!(matches!(
            bob.denial("public.users.name"),
            Some(Denial::Mask("***"))
        ));
        let Some(Denial::Refused(message)) = bob.denial("public.users.email") else {
            panic!("email is refused");
        };
        assert!(message.contains("\"bob\"") && message.contains("public.users.email"));
        assert!(message.contains("only app"), "{message}");
        assert!(Unreadable::for_role(&p, None).is_some());
        assert!(Unreadable::for_role(&policy("users:\n  email: randomized\n"), None).is_none());
    }
}
