//! The startup-phase packet parser (StartupMessage, SSLRequest, GSSENCRequest,
//! CancelRequest), handed whole packets as the handshake reads them and also raw bytes of
//! any length. Invariants: never panics; a packet it accepts has the length its prefix
//! says, and a CancelRequest keeps its bytes untouched.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgcloak::protocol::startup::{self, StartupPacket};

fuzz_target!(|data: &[u8]| {
    // Any bytes at all (the length prefix need not match).
    check(Bytes::copy_from_slice(data));
    // As the handshake hands them over: length checked first, then exactly that many bytes.
    if let Some(prefix) = data.get(..4) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if let Ok(total) = startup::check_len(len) {
            if let Some(packet) = data.get(..total) {
                check(Bytes::copy_from_slice(packet));
            }
        }
    }
});

fn check(raw: Bytes) {
    let Ok(packet) = startup::parse(raw.clone()) else {
        return;
    };
    let declared = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
    assert_eq!(declared, raw.len(), "accepted a packet of the wrong length");
    match &packet {
        StartupPacket::CancelRequest { raw: kept } => assert_eq!(kept, &raw),
        StartupPacket::Startup { raw: kept, .. } => {
            assert_eq!(kept, &raw);
            let _ = packet.param("user");
        }
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {}
    }
}
