//! The client-message decoders pgcloak rewrites (Query, Parse, Bind) and the array
//! parameter rewriters (text and binary) that Bind values of `= ANY($n)` go through.
//! Invariants: never panic; a body that decodes re-encodes to exactly the same frame;
//! arrays mapped through the identity re-read as the same elements.
//!
//! Input: `[selector, body...]`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgcloak::cloak::array::{map_binary, map_text};
use pgcloak::protocol::messages::{Bind, Parse, Query};

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn identity(v: &[u8]) -> Result<Vec<u8>, ()> {
    Ok(v.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut out = BytesMut::new();
    match selector % 5 {
        0 => {
            if let Ok(query) = Query::decode(body) {
                query.encode(&mut out);
                assert_eq!(&out[..], frame(b'Q', body));
            }
        }
        1 => {
            if let Ok(parse) = Parse::decode(body) {
                parse.encode(&mut out);
                assert_eq!(&out[..], frame(b'P', body));
            }
        }
        2 => {
            if let Ok(bind) = Bind::decode(body) {
                bind.encode(&mut out);
                assert_eq!(&out[..], frame(b'B', body));
                for i in 0..bind.params.len() + 1 {
                    let _ = bind.param_format(i);
                }
            }
        }
        3 => {
            if let Ok(Ok(mapped)) = map_text(body, identity) {
                // Canonical form: mapping it again changes nothing.
                let again = map_text(&mapped, identity);
                assert_eq!(again, Ok(Ok(mapped)), "text array not stable");
            }
        }
        _ => {
            if let Ok(Ok(mapped)) = map_binary(body, identity) {
                assert_eq!(mapped, body, "binary array changed by the identity");
            }
        }
    }
});
