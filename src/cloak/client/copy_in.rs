//! COPY FROM STDIN into a PII table, on the client's side: CopyData rows encrypted as
//! they complete, and a row pgcloak cannot read or encrypt failing the COPY (CopyFail
//! upstream, 22P04 to the client), never the session.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{encode, ClientCloak};
use crate::cloak::{lock, SessionState};
use crate::protocol::messages;
use crate::sql::{Refusal, StatementPlan};

impl ClientCloak {
    /// CopyData of a COPY into a PII table: complete rows are encrypted. A row pgcloak
    /// cannot read fails the COPY (CopyFail upstream, reported as 22P04), not the session.
    pub(super) fn copy_data(&mut self, body: &[u8]) -> Bytes {
        if self.copy_failed {
            return Bytes::new();
        }
        let shared = Arc::clone(&self.state);
        let mut state = lock(&shared);
        let Some(copy) = state.copy_in.as_mut() else {
            return encode(|out| crate::cloak::copy::copy_data_frame(out, body));
        };
        match copy.feed(body, &self.cloak.keyring) {
            Ok(rows) => encode(|out| crate::cloak::copy::copy_data_frame(out, &rows)),
            Err(error) => self.fail_copy(&mut state, &error),
        }
    }

    pub(super) fn copy_end(&mut self, frame: Bytes) -> Bytes {
        let shared = Arc::clone(&self.state);
        let mut state = lock(&shared);
        let copy = state.copy_in.take();
        self.copying = false;
        if std::mem::take(&mut self.copy_failed) {
            return Bytes::new(); // pgcloak's CopyFail already ended this COPY
        }
        let rest = match copy {
            Some(copy) if frame[0] == b'c' => match copy.finish(&self.cloak.keyring) {
                Ok(rest) => rest,
                Err(error) => return self.fail_copy(&mut state, &error),
            },
            _ => Vec::new(),
        };
        if rest.is_empty() {
            return frame;
        }
        let mut out = BytesMut::new();
        crate::cloak::copy::copy_data_frame(&mut out, &rest);
        out.extend_from_slice(&frame);
        out.freeze()
    }

    /// Ends the COPY in progress with a CopyFail naming a marker: the server fails it and
    /// the marker in its error brings pgcloak's message back.
    fn fail_copy(
        &mut self,
        state: &mut SessionState,
        error: &crate::cloak::copy::CopyError,
    ) -> Bytes {
        let marker = state.refuse(Refusal {
            code: error.code(),
            message: format!("pgcloak: {error}"),
        });
        state.copy_in = None;
        // Mid-COPY, the client's remaining data is dropped until its CopyDone or CopyFail.
        self.copy_failed = self.copying;
        encode(|out| messages::frame(out, b'f', |out| messages::put_cstr(out, &marker)))
    }

    pub(super) fn note_plan(&mut self, state: &mut SessionState, plan: &StatementPlan) {
        if let Some(copy) = &plan.copy_in {
            let policy = self.cloak.policy();
            state.copy_in = Some(crate::cloak::copy::CopyIn::typed(
                copy.clone(),
                policy,
                self.session.clone(),
            ));
            self.copying = true;
        }
    }

    pub(super) fn end_copy(&mut self) {
        if self.copying {
            lock(&self.state).copy_in = None;
            self.copying = false;
            self.copy_failed = false;
        }
    }
}
