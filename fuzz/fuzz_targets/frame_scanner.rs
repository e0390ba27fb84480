//! The frame splitter both pumps use, fed a byte stream in reads of fuzzer-chosen sizes.
//! Invariants: never panics; finds exactly the headers an independent splitter finds, in
//! order, whatever the read sizes; forwards every byte of complete headers and bodies and
//! nothing of a trailing partial header; errors on the same frame; frames it holds are
//! delivered whole.
//!
//! Input: `[flags, hold_mask, chunk_seed, chunk_seed, stream...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgcloak::protocol::frame::{FrameError, FrameScanner, Header};

/// What a straightforward splitter of the whole stream finds.
fn reference(stream: &[u8], max_len: u32) -> (Vec<Header>, Option<FrameError>, usize) {
    let mut headers = Vec::new();
    let mut pos = 0;
    while stream.len() - pos >= 5 {
        let b = &stream[pos..pos + 5];
        let header = Header {
            tag: b[0],
            len: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
        };
        if header.len < 4 || header.len > i32::MAX as u32 {
            let (tag, len) = (header.tag, header.len);
            return (headers, Some(FrameError::InvalidLength { tag, len }), pos);
        }
        if header.len > max_len {
            let (tag, len, max) = (header.tag, header.len, max_len);
            return (headers, Some(FrameError::TooLarge { tag, len, max }), pos);
        }
        headers.push(header);
        match pos.checked_add(header.frame_size()) {
            Some(end) if end <= stream.len() => pos = end,
            _ => return (headers, None, stream.len()),
        }
    }
    (headers, None, pos)
}

/// Read sizes from a small xorshift generator: 1..=64 bytes, or the whole stream.
fn chunks(seed: u16, len: usize) -> Vec<usize> {
    if seed == 0 {
        return vec![len];
    }
    let mut state = seed as u32 | 1;
    let mut out = Vec::new();
    let mut total = 0;
    while total < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state as usize % 64).min(len - total);
        out.push(n);
        total += n;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, hold_mask, s0, s1], stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let max_len = match flags & 3 {
        0 => 1 << 20,
        1 => 64,
        2 => i32::MAX as u32,
        _ => u32::MAX,
    };
    let hold = flags & 4 != 0;
    let (expected, expected_err, expected_forwarded) = reference(stream, max_len);

    let mut scanner = FrameScanner::new(max_len);
    let mut pending: Vec<u8> = Vec::new();
    let mut headers: Vec<Header> = Vec::new();
    let mut forwarded = 0usize;
    let mut error = None;
    // A held frame whose body has not fully arrived: the caller buffers it, not rescanning.
    let mut waiting: Option<Header> = None;
    'reads: for n in chunks(u16::from_be_bytes([s0, s1]), stream.len()) {
        let start = forwarded + pending.len();
        pending.extend_from_slice(&stream[start..start + n]);
        loop {
            if let Some(held) = waiting {
                if pending.len() < held.frame_size() {
                    continue 'reads;
                }
                assert_eq!(pending[0], held.tag);
                pending.drain(..held.frame_size());
                forwarded += held.frame_size();
                waiting = None;
            }
            let result = scanner.scan_until(&pending, |header, bytes| {
                assert_eq!(
                    bytes[0], header.tag,
                    "on_header sees bytes from the header on"
                );
                headers.push(header);
                hold && hold_mask & (1 << (header.tag % 8)) != 0
            });
            let (consumed, held) = match result {
                Ok(ok) => ok,
                Err(e) => {
                    error = Some(e);
                    break 'reads;
                }
            };
            assert!(consumed <= pending.len());
            pending.drain(..consumed);
            forwarded += consumed;
            match held {
                Some(held) => {
                    assert!(scanner.at_boundary(), "a held frame starts at a boundary");
                    waiting = Some(held);
                }
                None => break,
            }
        }
    }
    assert_eq!(error, expected_err, "error");
    // Headers found before the error, or all of them.
    assert_eq!(headers, expected, "headers");
    if error.is_none() {
        match waiting {
            // An incomplete held frame is the stream's last, buffered whole.
            Some(held) => {
                assert_eq!(expected.last(), Some(&held));
                assert_eq!(forwarded + pending.len(), stream.len());
                assert_eq!(expected_forwarded, stream.len());
            }
            None => assert_eq!(forwarded, expected_forwarded, "forwarded bytes"),
        }
    }
});
