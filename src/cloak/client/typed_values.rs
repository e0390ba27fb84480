//! Values of typed PII columns on the client's side: the settings they are read with, the
//! column's type, its canonical form, and declared parameter types.

use std::borrow::Cow;

use bytes::Bytes;
use std::sync::Arc;

use super::ClientCloak;
use crate::cloak::typed;
use crate::cloak::SessionState;
use crate::pgtype::{Kind, PgType};
use crate::policy::ColumnId;
use crate::protocol::messages::Parse;
use crate::sql::{ParamSlot, Refusal, StatementPlan};

/// Parameter type OIDs a PII parameter may be declared with: unspecified, text, varchar,
/// unknown.
const TEXT_OIDS: [u32; 4] = [0, 25, 1043, 705];
/// Unspecified, text[], varchar[]: what `column = ANY($n)` may declare.
const TEXT_ARRAY_OIDS: [u32; 3] = [0, 1009, 1015];

impl ClientCloak {
    /// Takes the session's confirmed settings for the values of the message now rewritten.
    /// `settled`: nothing in flight may change them before the server reads those values.
    pub(super) fn follow_session(&mut self, state: &SessionState, settled: bool) {
        if self.cloak.policy().has_typed() {
            let params = &state.tracker.params;
            // Copied only when the server reported a change since.
            if self.session_version != params.version {
                self.session_version = params.version;
                self.session.settings = params.settings.clone();
                self.session.unsupported = params.unsupported.clone();
            }
            self.session.settled = settled;
        }
    }

    /// The type the application sees for `column`.
    pub(super) fn column_type(&self, column: &ColumnId) -> PgType {
        let policy = self.cloak.policy();
        match policy.has_typed() {
            true => policy.column_type(&column.to_string()),
            false => PgType::new(Kind::Text),
        }
    }

    /// The element type OID a binary array for a typed `column` carries (None for text).
    pub(super) fn typed_element(&self, column: &ColumnId) -> Option<u32> {
        let ty = self.column_type(column);
        (ty.kind() != Kind::Text).then(|| ty.oid())
    }

    /// The bytes to encrypt for a value of `column` sent as text or binary: its canonical
    /// form for a typed column (validated as Postgres would), the value itself for text.
    pub(super) fn canonical<'v>(
        &self,
        column: &ColumnId,
        value: &'v [u8],
        binary: bool,
    ) -> Result<Cow<'v, [u8]>, Refusal> {
        typed::canonical(
            &self.column_type(column),
            value,
            binary,
            &self.session,
            column,
        )
    }

    /// Declared parameter types of PII parameters: text, unspecified, a typed column's own
    /// type (`date`, `date[]` for `= ANY`), or one Postgres converts to it (`smallint` for
    /// `integer`, `timestamp` for `timestamptz`: the value is then read as declared at
    /// Bind). Each is declared to Postgres as text, since the ciphertext is text there.
    pub(super) fn param_types(
        &self,
        parse: &mut Parse,
        plan: &mut Arc<StatementPlan>,
    ) -> Result<(), Refusal> {
        let slots: Vec<(usize, ParamSlot)> =
            plan.params.iter().map(|(&n, s)| (n, s.clone())).collect();
        for (n, slot) in slots {
            let Some(declared) = parse.param_types.get_mut(n - 1) else {
                continue;
            };
            let ty = self.column_type(&slot.column);
            let (allowed, own, text): (&[u32], u32, u32) = match slot.array {
                true => (&TEXT_ARRAY_OIDS, ty.array_oid(), 1009),
                false => (&TEXT_OIDS, ty.oid(), 25),
            };
            let convertible = (PgType::from_oid(*declared))
                .filter(|d| !slot.array && ty.kind() != Kind::Text && d.converts_to(&ty));
            if *declared == own {
                *declared = text;
            } else if let Some(from) = convertible {
                if let Some(slot) = Arc::make_mut(plan).params.get_mut(&n) {
                    slot.declared = Some(from);
                }
                *declared = text;
            } else if !allowed.contains(declared) {
                let (name, array) = match ty.kind() {
                    Kind::Text => ("text".to_owned(), "text[]".to_owned()),
                    _ => (ty.name(), format!("{}[]", ty.name())),
                };
                return Err(Refusal {
                    code: "42804",
                    message: format!(
                        "parameter ${n} is bound for the encrypted column {} but declared as {}; declare it as {name} ({array} for an array), or leave its type unspecified",
                        slot.column,
                        crate::sql::type_name(*declared)
                    ),
                });
            }
        }
        Ok(())
    }

    /// [`Self::canonical`] of a parameter: read as the type it was declared with when that
    /// differs from the column's, then converted as Postgres converts it.
    pub(super) fn param_canonical<'v>(
        &self,
        slot: &ParamSlot,
        value: &'v [u8],
        binary: bool,
    ) -> Result<Cow<'v, [u8]>, Refusal> {
        let Some(from) = &slot.declared else {
            return self.canonical(&slot.column, value, binary);
        };
        let read = typed::canonical(from, value, binary, &self.session, &slot.column)?;
        // The canonical text of the declared type is valid input for the column's type.
        let converted = self.canonical(&slot.column, &read, false)?;
        Ok(Cow::Owned(converted.into_owned()))
    }

    /// How a search value compares where Postgres compares it otherwise than pgcloak
    /// compares canonical forms: a value a `numeric(p,s)` column cannot hold exactly equals
    /// none of its values (Postgres compares it unrounded; rounded, it would match), and an
    /// unquoted number compared with a `real` column is refused (Postgres compares it in
    /// double precision).
    pub(super) fn check_search(
        &self,
        column: &ColumnId,
        value: &[u8],
        binary: bool,
        unquoted_number: bool,
    ) -> Result<SearchValue, Refusal> {
        let ty = self.column_type(column);
        match ty.kind() {
            Kind::Float4 if unquoted_number => Err(Refusal::unsupported(format!(
                "an unquoted number compared with {column} (real) is compared in double precision by Postgres, which pgcloak cannot do on ciphertext; quote it ('1.1') or pass it as a parameter"
            ))),
            Kind::Numeric if ty.typmod() >= 0 => {
                let unrounded = PgType::new(Kind::Numeric);
                let exact = typed::canonical(&unrounded, value, binary, &self.session, column)?;
                Ok(match self.canonical(column, value, binary) {
                    Ok(rounded) if same_number(&exact, &rounded) => SearchValue::AsIs,
                    Ok(_) => SearchValue::MatchesNothing,
                    Err(refusal) if out_of_range(&refusal) => SearchValue::MatchesNothing,
                    Err(refusal) => return Err(refusal),
                })
            }
            _ => Ok(SearchValue::AsIs),
        }
    }

    /// A parameter of a typed column before encryption: as sent, or (declared as another
    /// type Postgres converts, `smallint` for `integer`) the column's canonical text, or a
    /// search value the column cannot hold, which equals nothing.
    pub(super) fn typed_param<'v>(
        &self,
        slot: &ParamSlot,
        value: &'v [u8],
        binary: bool,
        search_only: bool,
    ) -> Result<TypedParam<'v>, Refusal> {
        let (value, binary) = match slot.declared {
            None => (Cow::Borrowed(value), binary),
            Some(_) => match self.param_canonical(slot, value, binary) {
                Ok(text) => (text, false),
                // An int8 compared with an integer column: Postgres finds nothing.
                Err(refusal) if search_only && out_of_range(&refusal) => {
                    return Ok(TypedParam::MatchesNothing)
                }
                Err(refusal) => return Err(refusal),
            },
        };
        if search_only && !slot.array {
            let found = self.check_search(&slot.column, &value, binary, false)?;
            if found == SearchValue::MatchesNothing {
                return Ok(TypedParam::MatchesNothing);
            }
        }
        Ok(TypedParam::As(value, binary))
    }

    /// A ciphertext of `column` that equals no stored value: what a search for a value the
    /// column cannot hold compares with (`<>` then matches every value, as in Postgres).
    pub(super) fn matching_nothing(&self, column: &ColumnId) -> Result<Bytes, Refusal> {
        // No canonical form holds a NUL byte (Postgres text cannot).
        (self.cloak.keyring)
            .encrypt(&column.to_string(), b"\0pgcloak: equals no value")
            .map(Bytes::from)
            .map_err(|e| Refusal {
                code: "XX000",
                message: format!("pgcloak could not encrypt the value for {column}: {e}"),
            })
    }
}

/// What a typed parameter is encrypted as (see [`ClientCloak::typed_param`]).
pub(super) enum TypedParam<'v> {
    /// These bytes, in text (false) or binary format.
    As(Cow<'v, [u8]>, bool),
    MatchesNothing,
}

/// What a search value is compared as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SearchValue {
    AsIs,
    /// The column cannot hold it, so no value equals it.
    MatchesNothing,
}

/// A value out of the column type's range (22003): Postgres compares across types without
/// converting, so in a search it equals nothing.
pub(super) fn out_of_range(refusal: &Refusal) -> bool {
    refusal.code == crate::pgtype::sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
}

/// Whether a canonical numeric without typmod (no trailing fractional zeros) and one with a
/// fixed scale are the same number.
fn same_number(exact: &[u8], fixed: &[u8]) -> bool {
    let trimmed = match fixed.contains(&b'.') {
        true => {
            let t = fixed.trim_ascii_end();
            let mut end = t.len();
            while end > 0 && t[end - 1] == b'0' {
                end -= 1;
            }
            if end > 0 && t[end - 1] == b'.' {
                end -= 1;
            }
            &t[..end]
        }
        false => fixed,
    };
    exact == trimmed
}

#[cfg(test)]
mod tests {
    use super::same_number;

    #[test]
    fn numbers_compare_across_scales() {
        assert!(same_number(b"1.5", b"1.50"));
        assert!(same_number(b"2", b"2.00"));
        assert!(same_number(b"20", b"20"));
        assert!(!same_number(b"1.505", b"1.51"));
        assert!(same_number(b"NaN", b"NaN"));
    }
}
