//! The server side's typed PII columns (a child of `server`): the type each result field
//! is printed as, typed values printed in the field's format, and Row/ParameterDescription
//! with the declared types.

use std::sync::Arc;

use bytes::Bytes;

use super::{Failure, ServerCloak};
use crate::cloak::access::Denial;
use crate::cloak::lock;
use crate::cloak::tracker::{is_binary, Columns, Formats, Source};
use crate::cloak::typed::{self, Session};
use crate::crypto::is_envelope;
use crate::pgtype::{Kind, PgType};
use crate::protocol::frame::Header;
use crate::protocol::messages::{set_field_type, set_parameter_type, RowDescription};

/// Per field of a result: the type its values are printed as, and whether in binary.
#[derive(Default)]
pub(super) struct ResultTypes {
    columns: Option<Arc<Columns>>,
    formats: Formats,
    fields: Vec<(PgType, bool)>,
}

impl ServerCloak {
    /// [`Self::field`] when the policy has typed columns: a typed column's value is printed
    /// as its type in the field's format; an envelope of a typed column where the result
    /// does not name the column (an expression) is printed as text, as `col::text` would be.
    pub(super) fn typed_field(
        &mut self,
        i: usize,
        value: &[u8],
        source: &Source,
        out: &mut Vec<u8>,
    ) -> Result<bool, Failure> {
        let policy = self.cloak.policy();
        let (ty, binary) = match source {
            Source::Pii(_) => self.result.fields.get(i).copied(),
            _ if is_envelope(value) => (self.cloak.keyring.column_of(value))
                .map(|column| (policy.column_type(column), false)),
            _ => None,
        }
        .unwrap_or((PgType::new(Kind::Text), false));
        if ty.kind() == Kind::Text {
            return self.field(value, source, out);
        }
        // A typed column has no mask (the policy refuses one): its values are refused.
        if let Some(denial) = self.denial(value, source) {
            return Err(Failure::Denied(match denial {
                Denial::Refused(message) => message,
                Denial::Mask(_) => "a masked value of a typed column".into(),
            }));
        }
        let column = match source {
            Source::Pii(column) => Some(column.as_str()),
            _ => None,
        };
        let name = column.unwrap_or("a typed PII column");
        let mut canonical = std::mem::take(&mut self.canonical);
        canonical.clear();
        let decrypted = if is_envelope(value) {
            match self
                .cloak
                .keyring
                .decrypt_into(value, column, &mut canonical)
            {
                Ok(()) => true,
                Err(_) if *source == Source::Plain => {
                    out.extend_from_slice(value);
                    return Ok(false);
                }
                Err(error) => return Err(Failure::Crypto(error)),
            }
        } else if column.is_some_and(|c| policy.is_migrating(c)) {
            // Plaintext not yet encrypted: Postgres's text of the value (ISO), read as the type.
            let read = typed::canonical(&ty, value, false, &Session::default(), &name);
            canonical.extend_from_slice(&read.map_err(Failure::Value)?);
            true
        } else {
            return Err(Failure::NotEncrypted);
        };
        let printed = typed::render(&ty, &canonical, binary, &self.session, &name);
        let result = printed.map(|p| out.extend_from_slice(&p));
        canonical.fill(0);
        self.canonical = canonical;
        result.map(|()| decrypted).map_err(Failure::Value)
    }

    /// Works out the type and format of each field of the result now arriving, once per
    /// result (not per row).
    pub(super) fn result_types(&mut self, columns: Option<&Arc<Columns>>, formats: &Formats) {
        let same = |a: Option<&Arc<Columns>>, b: Option<&Arc<Columns>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same(self.result.columns.as_ref(), columns) && Arc::ptr_eq(&self.result.formats, formats)
        {
            return;
        }
        let policy = self.cloak.policy();
        let fields = (columns
            .map(|c| c.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate())
        .map(|(i, source)| match source {
            Source::Pii(column) => (policy.column_type(column), is_binary(formats, i)),
            _ => (PgType::new(Kind::Text), false),
        })
        .collect();
        self.result = ResultTypes {
            columns: columns.cloned(),
            formats: formats.clone(),
            fields,
        };
    }

    /// A RowDescription (or, for `parameters`, a ParameterDescription) with the declared
    /// types of typed PII columns in place of text.
    pub(super) fn describe_types(&self, frame: Bytes, parameters: bool) -> Bytes {
        let policy = self.cloak.policy();
        let mut body = frame[Header::SIZE..].to_vec();
        let state = lock(&self.state);
        let mut changed = false;
        if parameters {
            let plan = state
                .tracker
                .describing_statement()
                .and_then(|s| s.plan.as_ref());
            for (&n, slot) in plan.map(|p| &p.params).into_iter().flatten() {
                let ty = policy.column_type(&slot.column.to_string());
                if ty.kind() != Kind::Text {
                    // As the client declared it, when it declared a type Postgres converts.
                    let oid = match (slot.array, slot.declared) {
                        (true, _) => ty.array_oid(),
                        (false, Some(declared)) => declared.oid(),
                        (false, None) => ty.oid(),
                    };
                    set_parameter_type(&mut body, n - 1, oid);
                    changed = true;
                }
            }
        } else if let (Some(columns), Ok(description)) = (
            state.tracker.described(),
            RowDescription::decode(&frame[Header::SIZE..]),
        ) {
            for (source, offset) in columns.iter().zip(&description.type_offsets) {
                let Source::Pii(column) = source else {
                    continue;
                };
                let ty = policy.column_type(column);
                if ty.kind() != Kind::Text {
                    set_field_type(&mut body, *offset, ty.oid(), ty.typlen(), ty.typmod());
                    changed = true;
                }
            }
        }
        if !changed {
            return frame;
        }
        let mut out = frame[..Header::SIZE].to_vec();
        out.extend_from_slice(&body);
        Bytes::from(out)
    }
}
