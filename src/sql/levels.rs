//! What a column name means where it stands. The walk keeps one [`Level`] per FROM list it
//! is inside (innermost last), holding what pgcloak knows of each relation's columns:
//! all output columns of a subquery or CTE, but only the PII columns of a table.
//!
//! Postgres binds a name to the innermost FROM list that has it. So an unqualified name
//! that may be a plain column of an inner table (whose plain columns pgcloak does not know)
//! while an outer table has a PII column of that name is [`Resolved::Ambiguous`]: encrypting
//! a value compared with it, or not, could both be wrong, and the statement is refused.

use super::names::{PiiColumn, TableKey};
use crate::policy::Policy;

/// What one output column of a query carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    Plain,
    Pii(PiiColumn),
    /// Values of a PII column mixed with plain values or values of another key (UNION ALL
    /// branches): shown decrypted, but neither searchable nor reusable by name.
    Mixed(PiiColumn),
}

impl Output {
    pub(crate) fn column(&self) -> Option<&PiiColumn> {
        match self {
            Output::Plain => None,
            Output::Pii(column) | Output::Mixed(column) => Some(column),
        }
    }
}

/// The output columns of a query, in order, with their names where they have one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outputs {
    pub columns: Vec<(Option<String>, Output)>,
    /// False when a wildcard expanded a relation whose plain columns pgcloak does not know:
    /// positions are then unknown, and columns not listed may exist (all plain).
    pub complete: bool,
}

impl Outputs {
    pub(crate) fn first_pii(&self) -> Option<&PiiColumn> {
        self.columns.iter().find_map(|(_, output)| output.column())
    }

    /// The output of a query used as a single value (`= (SELECT ...)`, `IN (SELECT ...)`).
    pub(crate) fn single(&self) -> Output {
        match self.columns.as_slice() {
            [(_, output)] if self.complete => output.clone(),
            _ => match self.first_pii() {
                Some(column) => Output::Mixed(column.clone()),
                None => Output::Plain,
            },
        }
    }

    /// Renames the columns by position (`AS alias(a, b)`, `WITH x(a, b)`). None when the
    /// positions are not known and a PII column could be renamed.
    pub(crate) fn renamed(mut self, names: &[String]) -> Option<Outputs> {
        if names.is_empty() {
            return Some(self);
        }
        if !self.complete && self.first_pii().is_some() {
            return None;
        }
        for (slot, name) in self.columns.iter_mut().zip(names) {
            slot.0 = Some(name.clone());
        }
        Some(self)
    }

    fn get(&self, name: &str) -> Option<&Output> {
        self.columns
            .iter()
            .find(|(n, _)| n.as_deref() == Some(name))
            .map(|(_, output)| output)
    }
}

/// One entry of a FROM list.
#[derive(Debug, Clone)]
pub(crate) enum Relation {
    /// A configured table: its PII columns are known, its plain columns are not.
    Table { names: Vec<String>, table: TableKey },
    /// A subquery, CTE or VALUES list with what its columns carry.
    Derived {
        name: Option<String>,
        outputs: Outputs,
    },
    /// A relation whose columns cannot be known yet (a recursive CTE inside itself):
    /// names through it are resolved conservatively, by the statement-wide scope.
    Opaque { names: Vec<String> },
    /// Any other table or function: its columns are unknown and none is PII.
    Other { names: Vec<String> },
}

/// The relations of one FROM list.
pub(crate) type Level = Vec<Relation>;

/// What a column reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    Pii(PiiColumn),
    Mixed(PiiColumn),
    Plain,
    /// Maybe a plain column of an inner relation, maybe this PII column further out.
    Ambiguous(PiiColumn),
    /// Not answerable from the FROM lists: the statement-wide scope decides.
    Unknown,
}

/// What one relation says about a column name.
enum Has {
    Pii(PiiColumn),
    Mixed(PiiColumn),
    Plain,
    Maybe,
    No,
    Unknown,
}

impl Relation {
    fn answers_to(&self, qualifier: &str) -> bool {
        match self {
            Relation::Table { names, .. }
            | Relation::Opaque { names }
            | Relation::Other { names } => names.iter().any(|n| n == qualifier),
            Relation::Derived { name, .. } => name.as_deref() == Some(qualifier),
        }
    }

    fn has(&self, column: &str, policy: &Policy) -> Has {
        match self {
            Relation::Table { table, .. } => match table_column(table, column, policy) {
                Some(pii) => Has::Pii(pii),
                None => Has::Maybe,
            },
            Relation::Derived { outputs, .. } => match outputs.get(column) {
                Some(Output::Pii(pii)) => Has::Pii(pii.clone()),
                Some(Output::Mixed(pii)) => Has::Mixed(pii.clone()),
                Some(Output::Plain) => Has::Plain,
                None if outputs.complete => Has::No,
                None => Has::Maybe,
            },
            Relation::Opaque { .. } => Has::Unknown,
            Relation::Other { .. } => Has::Maybe,
        }
    }

    /// The PII columns a wildcard over this relation shows, and whether it shows others.
    pub(crate) fn expand(&self, policy: &Policy) -> Outputs {
        match self {
            Relation::Table { table, .. } => {
                let columns = policy
                    .table(Some(&table.0), &table.1)
                    .map(|t| {
                        t.columns
                            .keys()
                            .filter_map(|name| {
                                let pii = table_column(table, name, policy)?;
                                Some((Some(name.clone()), Output::Pii(pii)))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Outputs {
                    columns,
                    complete: false,
                }
            }
            Relation::Derived { outputs, .. } => outputs.clone(),
            Relation::Opaque { .. } | Relation::Other { .. } => Outputs::default(),
        }
    }
}

/// What a `*` over `relations` shows: their columns, in order.
pub(crate) fn expand_all(relations: &[Relation], policy: &Policy) -> Outputs {
    let mut shown = Outputs {
        columns: Vec::new(),
        complete: true,
    };
    for relation in relations {
        let expanded = relation.expand(policy);
        shown.complete &= expanded.complete;
        shown.columns.extend(expanded.columns);
    }
    shown
}

pub(crate) fn table_column(table: &TableKey, column: &str, policy: &Policy) -> Option<PiiColumn> {
    let mode = *policy
        .table(Some(&table.0), &table.1)?
        .columns
        .get(column)?;
    Some(PiiColumn {
        id: crate::policy::ColumnId {
            schema: table.0.clone(),
            table: table.1.clone(),
            column: column.to_owned(),
        },
        mode,
    })
}

/// The relation `qualifier` names, innermost first.
pub(crate) fn relation<'l>(levels: &'l [Level], qualifier: &str) -> Option<&'l Relation> {
    levels
        .iter()
        .rev()
        .find_map(|level| level.iter().find(|r| r.answers_to(qualifier)))
}

/// What `qualifier.column` (or a bare `column`) means in `levels`.
pub(crate) fn resolve(
    levels: &[Level],
    policy: &Policy,
    qualifier: Option<&str>,
    column: &str,
) -> Resolved {
    if let Some(qualifier) = qualifier {
        return match relation(levels, qualifier).map(|r| r.has(column, policy)) {
            Some(Has::Pii(pii)) => Resolved::Pii(pii),
            Some(Has::Mixed(pii)) => Resolved::Mixed(pii),
            Some(Has::Plain | Has::Maybe | Has::No) => Resolved::Plain,
            Some(Has::Unknown) | None => Resolved::Unknown,
        };
    }
    for (depth, level) in levels.iter().enumerate().rev() {
        match level_has(level, column, policy) {
            Has::Pii(pii) => return Resolved::Pii(pii),
            Has::Mixed(pii) => return Resolved::Mixed(pii),
            Has::Plain => return Resolved::Plain,
            Has::Unknown => return Resolved::Unknown,
            Has::No => continue,
            Has::Maybe => {
                // Plain if this level has it; else whatever the next level out that
                // answers says. Ambiguous when that is a PII column.
                for outer in levels[..depth].iter().rev() {
                    match level_has(outer, column, policy) {
                        Has::Pii(pii) | Has::Mixed(pii) => return Resolved::Ambiguous(pii),
                        Has::Plain => return Resolved::Plain,
                        Has::Unknown => return Resolved::Unknown,
                        Has::Maybe | Has::No => {}
                    }
                }
                return Resolved::Plain;
            }
        }
    }
    Resolved::Unknown
}

/// The PII column (or mixed column) named `column` among `relations`, if one has it.
pub(crate) fn pii_of(relations: &[Relation], column: &str, policy: &Policy) -> Option<Output> {
    match level_has(relations, column, policy) {
        Has::Pii(pii) => Some(Output::Pii(pii)),
        Has::Mixed(pii) => Some(Output::Mixed(pii)),
        _ => None,
    }
}

/// What a FROM list says about a bare column name: a definite answer from any relation
/// wins over "maybe" (two definite answers are Postgres' "ambiguous column" error).
fn level_has(level: &[Relation], column: &str, policy: &Policy) -> Has {
    let mut outcome = Has::No;
    for relation in level {
        match relation.has(column, policy) {
            found @ (Has::Pii(_) | Has::Mixed(_)) => return found,
            Has::Unknown => return Has::Unknown,
            Has::Plain => outcome = Has::Plain,
            Has::Maybe if matches!(outcome, Has::No) => outcome = Has::Maybe,
            Has::Maybe | Has::No => {}
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Mode;

    fn policy() -> Policy {
        let yaml = "users:\n  email: deterministic\n  first_name: randomized\n";
        Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn users(alias: &str) -> Relation {
        Relation::Table {
            names: vec![alias.to_owned()],
            table: ("public".to_owned(), "users".to_owned()),
        }
    }

    fn other(name: &str) -> Relation {
        Relation::Other {
            names: vec![name.to_owned()],
        }
    }

    fn email() -> PiiColumn {
        table_column(&("public".into(), "users".into()), "email", &policy()).unwrap()
    }

    #[test]
    fn names_bind_to_the_innermost_from_list_that_has_them() {
        let p = policy();
        let outer = vec![users("u")];
        // Same level: the PII column.
        assert_eq!(
            resolve(std::slice::from_ref(&outer), &p, None, "email"),
            Resolved::Pii(email())
        );
        assert_eq!(email().mode, Mode::Deterministic);
        // Qualified by an unconfigured table: plain.
        let inner = vec![other("orders")];
        let levels = [outer.clone(), inner.clone()];
        assert_eq!(
            resolve(&levels, &p, Some("orders"), "email"),
            Resolved::Plain
        );
        assert_eq!(
            resolve(&levels, &p, Some("u"), "email"),
            Resolved::Pii(email())
        );
        // Bare, inside a subquery over an unconfigured table: orders.email, or users.email.
        assert_eq!(
            resolve(&levels, &p, None, "email"),
            Resolved::Ambiguous(email())
        );
        assert_eq!(resolve(&levels, &p, None, "total"), Resolved::Plain);
        // A derived table whose columns are all known answers for itself.
        let derived = vec![Relation::Derived {
            name: Some("x".into()),
            outputs: Outputs {
                columns: vec![
                    (Some("e".into()), Output::Pii(email())),
                    (Some("email".into()), Output::Plain),
                ],
                complete: true,
            },
        }];
        let levels = [outer, derived];
        assert_eq!(resolve(&levels, &p, None, "e"), Resolved::Pii(email()));
        assert_eq!(resolve(&levels, &p, Some("x"), "email"), Resolved::Plain);
        assert_eq!(resolve(&levels, &p, None, "email"), Resolved::Plain);
        // Nothing in the FROM lists answers: left to the statement-wide scope.
        assert_eq!(resolve(&[], &p, None, "email"), Resolved::Unknown);
        assert_eq!(resolve(&levels, &p, Some("zz"), "e"), Resolved::Unknown);
    }

    #[test]
    fn renaming_needs_known_positions_when_pii_is_involved() {
        let wildcard = users("u").expand(&policy());
        assert!(!wildcard.complete);
        assert!(wildcard.clone().renamed(&["a".into()]).is_none());
        assert_eq!(wildcard.clone().renamed(&[]), Some(wildcard));
        let known = Outputs {
            columns: vec![(Some("email".into()), Output::Pii(email()))],
            complete: true,
        };
        let renamed = known.renamed(&["e".into()]).unwrap();
        assert_eq!(renamed.columns[0].0.as_deref(), Some("e"));
        assert_eq!(renamed.single(), Output::Pii(email()));
    }
}
