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
        self.observer.holds(tag) || self.filter.as_ref().is_some_and(|filter| filter.holds(tag))
    }

    fn prepare(&mut self, frame: &Bytes) -> Option<BlockingJob> {
        self.filter
            .as_mut()
            .and_then(|filter| filter.prepare(frame))
    }

    fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        let tag = frame[0];
        let frame = match self.observer.holds(tag) {
            true => self.observer.rewrite(frame)?,
            false => frame,
        };
        match &mut self.filter {
            Some(filter) if filter.holds(tag) => filter.rewrite(frame),
            _ => Ok(frame),
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
    /// The client leg is plaintext and the upstream leg TLS: Postgres offers
    /// SCRAM-SHA-256-PLUS, which libpq refuses over a non-TLS connection ("server offered
    /// SCRAM-SHA-256-PLUS authentication over a non-SSL connection"), so it is taken out of
    /// the offer; the client then logs in with SCRAM-SHA-256, which Postgres accepts.
    pub hide_channel_binding: bool,
}

/// The SASL mechanism a plaintext client cannot use.
const SCRAM_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";
/// AuthenticationSASL's code in an 'R' message.
const AUTH_SASL: [u8; 4] = 10u32.to_be_bytes();

/// AuthenticationSASL without `SCRAM-SHA-256-PLUS`; any other frame unchanged.
fn without_scram_plus(frame: Bytes) -> Bytes {
    let body = &frame[Header::SIZE..];
    let Some(list) = body.strip_prefix(&AUTH_SASL[..]) else {
        return frame;
    };
    let mechanisms: Vec<&[u8]> = list
        .split(|&b| b == 0)
        .take_while(|m| !m.is_empty())
        .collect();
    if !mechanisms.contains(&SCRAM_PLUS) || mechanisms.len() < 2 {
        return frame;
    }
    let mut out = bytes::BytesMut::with_capacity(frame.len());
    out.extend_from_slice(b"R\0\0\0\0");
    out.extend_from_slice(&AUTH_SASL);
    for mechanism in mechanisms.into_iter().filter(|m| *m != SCRAM_PLUS) {
        out.extend_from_slice(mechanism);
        out.extend_from_slice(b"\0");
    }
    out.extend_from_slice(b"\0");
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

impl Filter for ServerFrames {
    fn holds(&self, tag: u8) -> bool {
        self.hide_channel_binding && tag == b'R'
    }

    fn rewrite(&mut self, frame: Bytes) -> Result<Bytes, FilterError> {
        Ok(without_scram_plus(frame))
    }

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
    fn scram_plus_is_taken_out_of_the_offer() {
        let offer = |mechanisms: &[&str]| {
            let mut body = AUTH_SASL.to_vec();
            for m in mechanisms {
                body.extend_from_slice(m.as_bytes());
                body.push(0);
            }
            body.push(0);
            let mut frame = vec![b'R'];
            frame.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            frame.extend_from_slice(&body);
            Bytes::from(frame)
        };
        let both = offer(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
        assert_eq!(without_scram_plus(both), offer(&["SCRAM-SHA-256"]));
        let plain = offer(&["SCRAM-SHA-256"]);
        assert_eq!(without_scram_plus(plain.clone()), plain);
        // AuthenticationOk and the like pass unchanged.
        let ok = Bytes::from_static(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
        assert_eq!(without_scram_plus(ok.clone()), ok);
    }

    #[test]
    fn incomplete_backend_key_is_ignored() {
        let mut server = ServerFrames::default();
        server.on_frame(Header { tag: b'K', len: 12 }, &[b'K', 0, 0, 0, 12, 0, 0]);
        assert_eq!(server.backend_key, None);
    }
}
