//! Frame boundaries in a byte stream: 1 type byte + a big-endian i32 length that counts
//! itself. The relay forwards bytes as they arrive and only needs to know where each frame
//! starts, so a frame is never held whole in memory unless it must be rewritten.

/// The header of one message: its type byte and its length as on the wire (including the
/// four length bytes, excluding the type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    pub len: u32,
}

impl Header {
    /// Bytes of the header itself: the type byte and the length.
    pub const SIZE: usize = 5;

    /// Bytes the frame occupies in the stream, header included.
    pub fn frame_size(&self) -> usize {
        1 + self.len as usize
    }
}

/// Why a stream of frames cannot be followed any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below 4 (it counts itself) or above i32::MAX.
    #[error("invalid message length {len} for message type {tag:#04x}")]
    InvalidLength { tag: u8, len: u32 },
    #[error("message of type {tag:#04x} is {len} bytes, more than the limit of {max} bytes")]
    TooLarge { tag: u8, len: u32, max: u32 },
}

/// Tracks frame boundaries across reads of arbitrary size.
#[derive(Debug)]
pub struct FrameScanner {
    /// Body bytes of the current frame not yet seen.
    remaining: usize,
    max_len: u32,
}

impl FrameScanner {
    /// A scanner that refuses frames whose length field exceeds `max_len`.
    pub fn new(max_len: u32) -> FrameScanner {
        FrameScanner {
            remaining: 0,
            max_len,
        }
    }

    /// True when the next byte of the stream starts a new frame.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Scans `buf`, the unconsumed start of the stream, and returns how many of its bytes
    /// are complete headers or body bytes, i.e. may be forwarded now. An incomplete header
    /// at the end is left for the next call. `on_header` sees every header found, with the
    /// bytes of `buf` from that header on (the body may be incomplete).
    pub fn scan(
        &mut self,
        buf: &[u8],
        mut on_header: impl FnMut(Header, &[u8]),
    ) -> Result<usize, FrameError> {
        let (n, _) = self.scan_until(buf, |header, bytes| {
            on_header(header, bytes);
            false
        })?;
        Ok(n)
    }

    /// Like [`scan`](Self::scan), but stops in front of the first frame for which
    /// `on_header` returns true and returns its header too: the caller takes that frame
    /// whole (its `frame_size()` bytes from the returned offset) before scanning on.
    pub fn scan_until(
        &mut self,
        buf: &[u8],
        mut on_header: impl FnMut(Header, &[u8]) -> bool,
    ) -> Result<(usize, Option<Header>), FrameError> {
        let mut pos = 0;
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - pos);
                pos += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok((pos, None));
                }
            }
            let Some(header) = parse_header(&buf[pos..]) else {
                return Ok((pos, None));
            };
            if header.len < 4 || header.len > i32::MAX as u32 {
                return Err(FrameError::InvalidLength {
                    tag: header.tag,
                    len: header.len,
                });
            }
            if header.len > self.max_len {
                return Err(FrameError::TooLarge {
                    tag: header.tag,
                    len: header.len,
                    max: self.max_len,
                });
            }
            if on_header(header, &buf[pos..]) {
                return Ok((pos, Some(header)));
            }
            pos += Header::SIZE;
            self.remaining = header.len as usize - 4;
        }
    }
}

/// The header at the start of `buf`, if all five bytes are there.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    let bytes: [u8; 5] = buf.get(..Header::SIZE)?.try_into().ok()?;
    Some(Header {
        tag: bytes[0],
        len: u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn scan_all(scanner: &mut FrameScanner, buf: &[u8]) -> (usize, Vec<u8>) {
        let mut tags = Vec::new();
        let n = scanner.scan(buf, |h, _| tags.push(h.tag)).unwrap();
        (n, tags)
    }

    #[test]
    fn whole_frames_are_consumed() {
        let mut stream = frame(b'Q', b"SELECT 1\0");
        stream.extend(frame(b'S', b""));
        let mut scanner = FrameScanner::new(1 << 20);
        let (n, tags) = scan_all(&mut scanner, &stream);
        assert_eq!(n, stream.len());
        assert_eq!(tags, b"QS");
        assert!(scanner.at_boundary());
    }

    #[test]
    fn partial_header_is_left_for_later() {
        let stream = frame(b'Q', b"SELECT 1\0");
        let mut scanner = FrameScanner::new(1 << 20);
        let (n, tags) = scan_all(&mut scanner, &stream[..3]);
        assert_eq!((n, tags.len()), (0, 0));
        let (n, tags) = scan_all(&mut scanner, &stream);
        assert_eq!((n, tags), (stream.len(), b"Q".to_vec()));
    }

    #[test]
    fn body_is_streamed_across_reads() {
        let body = vec![7u8; 1000];
        let stream = frame(b'D', &body);
        let mut scanner = FrameScanner::new(1 << 20);
        let (n, tags) = scan_all(&mut scanner, &stream[..100]);
        assert_eq!((n, tags), (100, b"D".to_vec()));
        assert!(!scanner.at_boundary());
        let (n, tags) = scan_all(&mut scanner, &stream[100..]);
        assert_eq!((n, tags.len()), (stream.len() - 100, 0));
        assert!(scanner.at_boundary());
    }

    #[test]
    fn byte_at_a_time_finds_every_header() {
        let mut stream = Vec::new();
        for tag in *b"PBDES" {
            stream.extend(frame(tag, b"abc"));
        }
        let mut scanner = FrameScanner::new(1 << 20);
        let mut tags = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for byte in stream {
            pending.push(byte);
            let n = scanner.scan(&pending, |h, _| tags.push(h.tag)).unwrap();
            pending.drain(..n);
        }
        assert_eq!(tags, b"PBDES");
        assert!(pending.is_empty());
    }

    #[test]
    fn scan_until_stops_in_front_of_held_frames() {
        let mut stream = frame(b'T', b"t");
        let held_at = stream.len();
        stream.extend(frame(b'D', b"row"));
        stream.extend(frame(b'C', b"done"));
        let mut scanner = FrameScanner::new(1 << 20);
        let (n, held) = scanner.scan_until(&stream, |h, _| h.tag == b'D').unwrap();
        assert_eq!(n, held_at);
        assert_eq!(held, Some(Header { tag: b'D', len: 7 }));
        assert!(scanner.at_boundary());
        let rest = &stream[held_at + 8..];
        let (n, held) = scanner.scan_until(rest, |h, _| h.tag == b'D').unwrap();
        assert_eq!((n, held), (rest.len(), None));
    }

    #[test]
    fn length_below_four_is_invalid() {
        let mut scanner = FrameScanner::new(1 << 20);
        let err = scanner.scan(&[b'Q', 0, 0, 0, 3], |_, _| {}).unwrap_err();
        assert_eq!(err, FrameError::InvalidLength { tag: b'Q', len: 3 });
    }

    #[test]
    fn negative_length_is_invalid() {
        let mut scanner = FrameScanner::new(u32::MAX);
        let err = scanner.scan(&[b'Q', 0xff, 0xff, 0xff, 0xff], |_, _| {});
        assert!(matches!(err, Err(FrameError::InvalidLength { .. })));
    }

    #[test]
    fn oversized_frame_is_refused_before_its_body_arrives() {
        let mut scanner = FrameScanner::new(100);
        let err = scanner.scan(&[b'Q', 0, 0, 1, 0], |_, _| {}).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                tag: b'Q',
                len: 256,
                max: 100
            }
        );
    }
}
