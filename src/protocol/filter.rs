//! The seam between relaying and rewriting: what one direction of a session does with the
//! frames passing through it. The proxy owns the I/O; a filter only sees frames.

use bytes::Bytes;

use super::frame::Header;
use super::messages::MessageError;

/// What one direction does with the frames passing through it.
pub trait Filter {
    /// Called for every frame header. `bytes` starts at the header; the body may be cut
    /// short when the frame spans several reads.
    fn on_frame(&mut self, _header: Header, _bytes: &[u8]) {}

    /// True when frames of this type must be passed whole to [`rewrite`](Self::rewrite).
    fn holds(&self, _tag: u8) -> bool {
        false
    }

    /// A whole held frame, before [`rewrite`](Self::rewrite): work too long for the
    /// session's thread (analysing a very long statement) that the pump runs on the
    /// blocking pool, awaiting it before it calls `rewrite` with the same frame. Other
    /// sessions, and the other direction of this one, go on meanwhile.
    fn prepare(&mut self, _frame: &Bytes) -> Option<BlockingJob> {
        None
    }

    /// A whole held frame (header included); returns the bytes to send in its place
    /// (the frame itself, other frames, or nothing).
    fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        Ok(frame)
    }
}

/// Work a filter hands to the blocking pool; it leaves its result where `rewrite` finds it.
pub type BlockingJob = Box<dyn FnOnce() + Send + 'static>;

/// A frame that breaks the protocol: the session ends with this error. A statement pgcloak
/// refuses is not one of these (it fails with an ErrorResponse and the session goes on).
/// The message never contains a value from the frame.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("malformed message from client: {0}")]
    MalformedClient(MessageError),
    #[error("malformed message from server: {0}")]
    MalformedServer(MessageError),
}
