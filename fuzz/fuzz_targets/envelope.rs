//! The stored envelope (`pgc1$<m>$<kid>$<payload>`), decoded and decrypted with a fixed
//! keyring. Invariants: never panics; arbitrary text never decrypts (no forgery); a value
//! encrypted and then altered anywhere (one byte changed, cut short, extended) is an
//! error, for the right column and for any column; the unaltered value round-trips.
//!
//! Input: `[column, position(2), replacement, plaintext...]`; the whole input is also tried
//! as an envelope.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgcloak::crypto::{is_envelope, Keyring};

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(common::keyring)
}

const COLUMNS: [&str; 3] = [common::EMAIL, common::FIRST_NAME, common::HOLDER];

fuzz_target!(|data: &[u8]| {
    let keyring = keyring();
    // Arbitrary bytes: never a panic, never a successful decryption.
    for expected in [None, Some(common::EMAIL), Some(common::FIRST_NAME)] {
        assert!(keyring.decrypt(data, expected).is_err(), "forged envelope");
    }
    let Some((&[column, p0, p1, replacement], plaintext)) = data.split_first_chunk::<4>() else {
        return;
    };
    let column = COLUMNS[column as usize % COLUMNS.len()];
    let envelope = keyring
        .encrypt(column, plaintext)
        .expect("configured column");
    assert!(is_envelope(envelope.as_bytes()));
    let opened = keyring
        .decrypt(envelope.as_bytes(), Some(column))
        .expect("round trip");
    assert_eq!(&opened[..], plaintext);
    let opened = keyring
        .decrypt(envelope.as_bytes(), None)
        .expect("round trip by kid");
    assert_eq!(&opened[..], plaintext);

    let bytes = envelope.as_bytes();
    let position = u16::from_be_bytes([p0, p1]) as usize % bytes.len();
    let mut tampered = bytes.to_vec();
    if tampered[position] == replacement {
        return;
    }
    tampered[position] = replacement;
    let cut = &bytes[..position];
    let mut extended = bytes.to_vec();
    extended.push(replacement);
    for altered in [&tampered[..], cut, &extended[..]] {
        for expected in [Some(column), None] {
            assert!(
                keyring.decrypt(altered, expected).is_err(),
                "altered envelope decrypted (position {position})"
            );
        }
    }
});
