//! What a CommandComplete and a CopyInResponse change in the tracked session: DDL and
//! DEALLOCATE / DISCARD, and the copy-in mode that makes the server ignore Sync.

use super::{Due, Tracker};

impl Tracker {
    pub(super) fn command_complete(&mut self, tag: &[u8]) {
        let tag = tag.strip_suffix(b"\0").unwrap_or(tag);
        // DDL may drop and re-create tables or columns: their OIDs must be read anew.
        if [&b"CREATE "[..], b"DROP ", b"ALTER ", b"IMPORT FOREIGN"]
            .iter()
            .any(|prefix| tag.starts_with(prefix))
        {
            self.catalog.ddl();
        }
        // SQL DEALLOCATE / DISCARD share the namespace of protocol-level statements.
        match tag {
            b"DEALLOCATE ALL" | b"DISCARD ALL" => {
                self.statements.clear();
                self.portals.clear();
            }
            b"DEALLOCATE" => self
                .statements
                .values_mut()
                .for_each(|s| s.maybe_gone = true),
            _ => {}
        }
    }

    /// CopyInResponse: the server ignores Sync (and Flush) until the client's CopyDone or
    /// CopyFail, so a Sync sent in between gets no ReadyForQuery (tokio-postgres sends
    /// Bind, Execute, Sync before the COPY data).
    /// The COPY ends at the first copy end the client sent after the request that started it
    /// (the server drops those it reads outside a COPY, e.g. after a COPY that failed).
    pub(super) fn copy_in_started(&mut self) {
        let end = match self.due.front_mut() {
            Some(Due::Query { copy_ends, .. } | Due::Execute { copy_ends, .. }) => {
                let end = *copy_ends;
                *copy_ends += 1; // a later COPY of the same Query ends at the next one
                end
            }
            _ => return,
        };
        self.copy_in = Some(end);
        let mut front = true;
        self.due.retain(|due| {
            let ignored = !front && matches!(due, Due::Sync { copy_ends } if *copy_ends == end);
            front = false;
            !ignored
        });
    }
}
