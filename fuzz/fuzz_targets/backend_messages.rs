//! The server-message decoders pgcloak reads (DataRow, RowDescription, ErrorResponse and
//! NoticeResponse fields). Invariants: never panic; DataRow and error fields re-encode to
//! exactly the frame they were decoded from; a DataRow's fields are slices of its body.
//!
//! Input: `[selector, body...]`.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pgcloak::protocol::messages::{DataRow, ErrorFields, RowDescription};

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut out = BytesMut::new();
    match selector % 3 {
        0 => {
            let body = Bytes::copy_from_slice(body);
            if let Ok(row) = DataRow::decode(&body) {
                let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
                for field in row.fields.iter().flatten() {
                    if !field.is_empty() {
                        assert!(range.contains(&(field.as_ptr() as usize)), "copied field");
                    }
                }
                row.encode(&mut out);
                assert_eq!(&out[..], frame(b'D', &body));
            }
        }
        1 => {
            if let Ok(description) = RowDescription::decode(body) {
                // 2 bytes of count, then at least 19 bytes per field.
                assert!(2 + 19 * description.sources.len() <= body.len());
            }
        }
        _ => {
            if let Ok(fields) = ErrorFields::decode(body) {
                let _ = fields.get(b'C');
                fields.encode(b'E', &mut out);
                assert_eq!(&out[..], frame(b'E', body));
            }
        }
    }
});
