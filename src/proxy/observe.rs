//! What the session notices about the frames it relays, per direction: enough to end a
//! session cleanly (Terminate, the server's last message) and to cancel the query of a
//! client that vanished (BackendKeyData).

use bytes::Bytes;

use crate::protocol::filter::{BlockingJob, Filter, FilterError};
use crate::protocol::frame::Header;

/// A direction's observer plus, in sessions with a column policy, the filter that
/// rewrites its frames.
pub struct Observed<O, F> {
    pub observer: O,
    pub filter: Option<F>,
}

impl<O: Filter, F: Filter> Filter for Observed<O, F> {
    fn on_frame(&mut self, header: Header, bytes: &[u8]) {
        self.observer.on_frame(header, bytes);
        if let Some(filter) = &mut self.filter {
            filter.on_frame(header, bytes);
        }
    }

    fn holds(&self, tag: u8) -> bool {
        self.filter.as_ref().is_some_and(|filter| filter.holds(tag))
    }

    fn prepare(&mut self, frame: &Bytes) -> Option<BlockingJob> {
        self.filter
            .as_mut()
            .and_then(|filter| filter.prepare(frame))
    }

    fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        match &mut self.filter {
            Some(filter) => filter.rewrite(frame),
            None => Ok(frame),
        }
    }
}

/// Frames from the client.
#[derive(Debug, Default)]
pub struct ClientFrames {
    /// A Terminate ('X') passed: the client is leaving on purpose.
    pub saw_terminate: bool,
}

impl Filter for ClientFrames {
    fn on_frame(&mut self, header: Header, _bytes: &[u8]) {
        self.saw_terminate |= header.tag == b'X';
    }
}

/// Frames from the upstream server.
#[derive(Debug, Default)]
pub struct ServerFrames {
    pub last_tag: Option<u8>,
    /// The body of BackendKeyData: process id and secret key, for cancelling.
    pub backend_key: Option<Bytes>,
}

impl Filter for ServerFrames {
    fn on_frame(&mut self, header: Header, bytes: &[u8]) {
        self.last_tag = Some(header.tag);
        // Postgres sends BackendKeyData in one flush with the rest of the startup
        // response, so its small body is whole in the buffer.
        if header.tag == b'K' {
            if let Some(frame) = bytes.get(..header.frame_size()) {
                self.backend_key = Some(Bytes::copy_from_slice(&frame[Header::SIZE..]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_key_is_captured() {
        let frame = [b'K', 0, 0, 0, 12, 0, 0, 0, 42, 9, 9, 9, 9, b'Z'];
        let mut server = ServerFrames::default();
        server.on_frame(Header { tag: b'K', len: 12 }, &frame);
        assert_eq!(
            server.backend_key.as_deref(),
            Some(&[0, 0, 0, 42, 9, 9, 9, 9][..])
        );
        assert_eq!(server.last_tag, Some(b'K'));
    }

    #[test]
    fn incomplete_backend_key_is_ignored() {
        let mut server = ServerFrames::default();
        server.on_frame(Header { tag: b'K', len: 12 }, &[b'K', 0, 0, 0, 12, 0, 0]);
        assert_eq!(server.backend_key, None);
    }
}
