//! Unit tests of the keyring and envelopes: round trips, determinism, column binding, tamper
//! and garbage resistance, lengths, error and `Debug` hygiene, plus a timing printout.

use std::hint::black_box;
use std::time::Instant;

use super::derive::{Deriver, GCM_KEY_LEN, SIV_KEY_LEN};
use super::*;

const EMAIL: &str = "public.users.email";
const PHONE: &str = "public.users.phone";

fn master() -> MasterKey {
    MasterKey::from_bytes([0x42; 32])
}

fn keyring(columns: &[(&str, Mode)]) -> Keyring {
    let columns: Vec<(String, Mode)> = columns.iter().map(|(c, m)| (c.to_string(), *m)).collect();
    Keyring::new(&master(), &columns)
}

fn both_modes() -> [Mode; 2] {
    [Mode::Randomized, Mode::Deterministic]
}

fn samples() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"a".to_vec(),
        b"alice@example.com".to_vec(),
        "Zoë Ångström — 日本語 🙂".as_bytes().to_vec(),
        vec![0, 255, 0, 1, b'\'', b'\\', b'\n'],
        (0..1_000_000u32).map(|i| (i % 251) as u8).collect(),
    ]
}

#[test]
fn round_trips_in_both_modes() {
    for mode in both_modes() {
        let ring = keyring(&[(EMAIL, mode)]);
        assert_eq!(ring.mode(EMAIL), Some(mode));
        for plaintext in samples() {
            let envelope = ring.encrypt(EMAIL, &plaintext).unwrap();
            assert!(is_envelope(envelope.as_bytes()));
            assert!(envelope.starts_with(&format!("pgc1${}$", char::from(mode.tag()))));
            assert_eq!(envelope.len(), envelope_len(plaintext.len(), mode));
            assert!(envelope
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"$-_".contains(&c)));
            for expected in [Some(EMAIL), None] {
                let decrypted = ring.decrypt(envelope.as_bytes(), expected).unwrap();
                assert_eq!(*decrypted, plaintext, "{mode} {} bytes", plaintext.len());
            }
        }
    }
}

#[test]
fn bulk_forms_append_and_leave_the_buffer_alone_on_error() {
    for mode in both_modes() {
        let ring = keyring(&[(EMAIL, mode), (PHONE, mode)]);
        for plain in samples() {
            let mut text = b"prefix".to_vec();
            ring.encrypt_into(EMAIL, &plain, &mut text).unwrap();
            let envelope = &text[6..];
            assert_eq!(&*ring.decrypt(envelope, Some(EMAIL)).unwrap(), &plain[..]);
            let mut out = b"row:".to_vec();
            ring.decrypt_into(envelope, Some(EMAIL), &mut out).unwrap();
            assert_eq!(out, [&b"row:"[..], &plain].concat());
            let mut out = b"row:".to_vec();
            assert!(ring.decrypt_into(envelope, Some(PHONE), &mut out).is_err());
            let mut tampered = envelope.to_vec();
            let last = tampered.len() - 1;
            tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
            assert!(ring.decrypt_into(&tampered, Some(EMAIL), &mut out).is_err());
            assert_eq!(out, b"row:");
        }
    }
}

#[test]
fn deterministic_is_equal_for_equal_and_randomized_is_not() {
    let det = keyring(&[(EMAIL, Mode::Deterministic)]);
    let rnd = keyring(&[(EMAIL, Mode::Randomized)]);
    for value in [&b""[..], b"bob@example.com"] {
        assert_eq!(
            det.encrypt(EMAIL, value).unwrap(),
            det.encrypt(EMAIL, value).unwrap()
        );
        let (a, b) = (
            rnd.encrypt(EMAIL, value).unwrap(),
            rnd.encrypt(EMAIL, value).unwrap(),
        );
        assert_ne!(a, b);
        assert_eq!(a[..16], b[..16], "same header");
    }
    assert_ne!(
        det.encrypt(EMAIL, b"bob").unwrap(),
        det.encrypt(EMAIL, b"Bob").unwrap()
    );
    // A rebuilt keyring (a restart) produces the same deterministic ciphertext.
    assert_eq!(
        det.encrypt(EMAIL, b"x").unwrap(),
        keyring(&[(EMAIL, Mode::Deterministic)])
            .encrypt(EMAIL, b"x")
            .unwrap()
    );
}

#[test]
fn values_are_bound_to_their_column() {
    for (email_mode, phone_mode) in [
        (Mode::Randomized, Mode::Randomized),
        (Mode::Deterministic, Mode::Deterministic),
        (Mode::Deterministic, Mode::Randomized),
        (Mode::Randomized, Mode::Deterministic),
    ] {
        let ring = keyring(&[(EMAIL, email_mode), (PHONE, phone_mode)]);
        let envelope = ring.encrypt(EMAIL, b"alice@example.com").unwrap();
        assert_eq!(
            ring.decrypt(envelope.as_bytes(), Some(PHONE)).unwrap_err(),
            CryptoError::WrongColumn {
                expected: PHONE.into(),
                found: EMAIL.into()
            }
        );
        // Forge the key id so that the envelope claims to belong to the phone column.
        let forged = format!(
            "{}{}{}",
            &envelope[..7],
            ring.key_id(PHONE).unwrap(),
            &envelope[15..]
        );
        for expected in [Some(PHONE), None] {
            assert_eq!(
                ring.decrypt(forged.as_bytes(), expected).unwrap_err(),
                CryptoError::Decrypt
            );
        }
        // And the mode letter too (both now name the phone column's mode and key id).
        let forged = format!("pgc1${}{}", char::from(phone_mode.tag()), &forged[6..]);
        assert_eq!(
            ring.decrypt(forged.as_bytes(), None).unwrap_err(),
            CryptoError::Decrypt
        );
    }
}

#[test]
fn unknown_columns_and_keys() {
    let ring = keyring(&[(EMAIL, Mode::Deterministic)]);
    assert_eq!(
        ring.encrypt(PHONE, b"x").unwrap_err(),
        CryptoError::UnknownColumn(PHONE.into())
    );
    assert_eq!(ring.mode(PHONE), None);
    let envelope = ring.encrypt(EMAIL, b"x").unwrap();
    assert_eq!(
        ring.decrypt(envelope.as_bytes(), Some(PHONE)).unwrap_err(),
        CryptoError::UnknownColumn(PHONE.into())
    );
    // Same column, other master key: the key id is unknown here.
    let other = Keyring::new(
        &MasterKey::from_bytes([7; 32]),
        &[(EMAIL.into(), Mode::Deterministic)],
    );
    for expected in [Some(EMAIL), None] {
        assert_eq!(
            other.decrypt(envelope.as_bytes(), expected).unwrap_err(),
            CryptoError::UnknownKey
        );
    }
    // Case matters: identities are used exactly as given.
    assert_eq!(ring.mode("public.users.EMAIL"), None);
}

/// Every decryption of `text` under every combination of keyring and expected column fails.
fn assert_rejected(rings: &[&Keyring], text: &[u8], what: &str) {
    for ring in rings {
        for expected in [Some(EMAIL), None] {
            assert!(ring.decrypt(text, expected).is_err(), "{what} was accepted");
        }
    }
}

#[test]
fn every_single_byte_tamper_is_an_error() {
    let det = keyring(&[(EMAIL, Mode::Deterministic), (PHONE, Mode::Randomized)]);
    let rnd = keyring(&[(EMAIL, Mode::Randomized), (PHONE, Mode::Deterministic)]);
    for ring in [&det, &rnd] {
        for plaintext in [&b""[..], b"0123456789abcdef0123456789abcdef"] {
            let envelope = ring.encrypt(EMAIL, plaintext).unwrap().into_bytes();
            for position in 0..envelope.len() {
                for byte in 0..=255u8 {
                    if byte != envelope[position] {
                        let mut tampered = envelope.clone();
                        tampered[position] = byte;
                        assert_rejected(
                            &[&det, &rnd],
                            &tampered,
                            &format!("byte {byte} at {position}"),
                        );
                    }
                }
                let mut deleted = envelope.clone();
                deleted.remove(position);
                assert_rejected(&[&det, &rnd], &deleted, &format!("deletion at {position}"));
                let mut inserted = envelope.clone();
                inserted.insert(position, b'A');
                assert_rejected(
                    &[&det, &rnd],
                    &inserted,
                    &format!("insertion at {position}"),
                );
                assert_rejected(
                    &[&det, &rnd],
                    &envelope[..position],
                    &format!("truncation to {position}"),
                );
            }
            for suffix in [&b"A"[..], b"AA", b"=", b"==", b" ", b"\n", b"\0"] {
                assert_rejected(&[&det, &rnd], &[&envelope[..], suffix].concat(), "a suffix");
            }
        }
    }
}

#[test]
fn garbage_is_malformed() {
    let ring = keyring(&[(EMAIL, Mode::Deterministic), (PHONE, Mode::Randomized)]);
    let d = ring.encrypt(EMAIL, b"alice").unwrap();
    let r = ring.encrypt(PHONE, b"alice").unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"alice@example.com".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"pgc1".to_vec(),
        b"pgc1$".to_vec(),
        b"PGC1$d$AAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
        b"pgc2$d$AAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
        b"pgc1$x$AAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
        b"pgc1$d$AAAA\xffAAA$AAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
        format!(" {d}").into_bytes(),
        d.as_bytes()[..16].to_vec(),
        d.as_bytes()[..37].to_vec(),
        r.as_bytes()[..16 + 37].to_vec(),
        [&d.as_bytes()[..20], b"\xc3\xa9", &d.as_bytes()[22..]].concat(),
        [&r.as_bytes()[..20], b"!!", &r.as_bytes()[22..]].concat(),
        format!("{d}=").into_bytes(), // padding is not allowed
        format!("{r}\n").into_bytes(),
        d.replacen('$', "%", 1).into_bytes(),
    ];
    cases.extend((0..16).map(|n| d.as_bytes()[..n].to_vec()));
    for case in cases {
        for expected in [Some(EMAIL), None] {
            match ring.decrypt(&case, expected) {
                Err(CryptoError::Malformed(_)) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&case)),
            }
        }
    }
}

#[test]
fn envelope_len_is_exact() {
    for mode in both_modes() {
        let ring = keyring(&[(EMAIL, mode)]);
        for n in (0..300).chain([1000, 4096, 65_537]) {
            assert_eq!(
                ring.encrypt(EMAIL, &vec![b'x'; n]).unwrap().len(),
                envelope_len(n, mode),
                "{mode} {n}"
            );
        }
    }
    assert_eq!(envelope_len(32, Mode::Randomized), 96);
    assert_eq!(envelope_len(32, Mode::Deterministic), 80);
    assert!(
        envelope_len(usize::MAX, Mode::Randomized) > 0,
        "no overflow panic"
    );
}

#[test]
fn key_ids_differ_per_column_mode_and_master_key() {
    let mut kids = std::collections::HashSet::new();
    for key in [[1u8; 32], [2u8; 32]] {
        let deriver = Deriver::new(&MasterKey::from_bytes(key));
        for column in [EMAIL, PHONE, "public.users.emai", "other.users.email"] {
            for mode in both_modes() {
                assert!(kids.insert(deriver.kid(mode, column)), "{column} {mode}");
            }
        }
    }
    let (a, b) = (
        keyring(&[(EMAIL, Mode::Randomized)]),
        keyring(&[(EMAIL, Mode::Deterministic)]),
    );
    assert_ne!(a.key_id(EMAIL), b.key_id(EMAIL));
}

#[test]
fn debug_and_errors_never_show_secrets() {
    let ring = keyring(&[(EMAIL, Mode::Deterministic), (PHONE, Mode::Randomized)]);
    let debug = format!("{ring:?} {ring:#?}");
    assert!(debug.contains(EMAIL) && debug.contains(ring.key_id(EMAIL).unwrap()));
    let deriver = Deriver::new(&master());
    let siv = deriver.column_key::<SIV_KEY_LEN>(Mode::Deterministic, EMAIL);
    let gcm = deriver.column_key::<GCM_KEY_LEN>(Mode::Randomized, PHONE);
    for key in [&siv[..], &gcm[..], &[0x42u8; 32][..]] {
        let hex: String = key[..4].iter().map(|b| format!("{b:02x}")).collect();
        let decimal = format!("{}, {}, {}", key[0], key[1], key[2]);
        assert!(
            !debug.contains(&hex) && !debug.contains(&decimal),
            "{debug}"
        );
    }
    assert!(!format!("{:?}", master()).contains("66"));

    let secret = b"alice-secret@example.com";
    let envelope = ring.encrypt(EMAIL, secret).unwrap();
    let payload = &envelope[16..];
    let mut tampered = envelope.clone().into_bytes();
    tampered[20] ^= 1;
    let errors = [
        ring.decrypt(envelope.as_bytes(), Some(PHONE)).unwrap_err(),
        ring.decrypt(&tampered, None).unwrap_err(),
        ring.decrypt(&envelope.as_bytes()[..30], None).unwrap_err(),
        ring.decrypt(secret, None).unwrap_err(),
        ring.encrypt("public.users.ssn", secret).unwrap_err(),
    ];
    for error in errors {
        let text = format!("{error} {error:?}");
        assert!(
            !text.contains("alice") && !text.contains(&payload[..10]),
            "{text}"
        );
    }
}

#[test]
fn mode_parses_and_prints() {
    for mode in both_modes() {
        assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
    }
    assert_eq!("Deterministic".parse::<Mode>(), Ok(Mode::Deterministic));
    assert_eq!(Mode::default(), Mode::Randomized);
    let err = "ope".parse::<Mode>().unwrap_err();
    assert!(err.to_string().contains("randomized"));
}

#[test]
fn keyring_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Keyring>();
    let ring = std::sync::Arc::new(keyring(&[
        (EMAIL, Mode::Deterministic),
        (PHONE, Mode::Randomized),
    ]));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for j in 0..200 {
                    let value = format!("{i}-{j}");
                    for column in [EMAIL, PHONE] {
                        let envelope = ring.encrypt(column, value.as_bytes()).unwrap();
                        assert_eq!(
                            *ring.decrypt(envelope.as_bytes(), None).unwrap(),
                            value.as_bytes()
                        );
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

/// Prints ns/op; asserts nothing about timing. Meaningful with `cargo test --release`.
#[test]
fn timing_printout() {
    const N: u32 = 20_000;
    let value = [b'x'; 32];
    for mode in both_modes() {
        let ring = keyring(&[(EMAIL, mode), (PHONE, mode)]);
        let envelope = ring.encrypt(EMAIL, &value).unwrap();
        let start = Instant::now();
        for _ in 0..N {
            black_box(ring.encrypt(black_box(EMAIL), black_box(&value)).unwrap());
        }
        let encrypt = start.elapsed().as_nanos() / u128::from(N);
        let start = Instant::now();
        for _ in 0..N {
            black_box(
                ring.decrypt(black_box(envelope.as_bytes()), black_box(Some(EMAIL)))
                    .unwrap(),
            );
        }
        let decrypt = start.elapsed().as_nanos() / u128::from(N);
        println!("crypto timing: {mode}: encrypt 32 B {encrypt} ns/op, decrypt {decrypt} ns/op");
    }
    let start = Instant::now();
    for _ in 0..N * 10 {
        black_box(is_envelope(black_box(b"alice@example.com")));
    }
    let check = start.elapsed().as_nanos() / u128::from(N * 10);
    println!("crypto timing: is_envelope (no match) {check} ns/op");
}

/// k2 current, k1 an older key: (name, key) pairs as `keys.master_keys` gives them.
fn rotating(columns: &[(&str, Mode)]) -> (Keyring, Keyring) {
    let columns: Vec<(String, Mode)> = columns.iter().map(|(c, m)| (c.to_string(), *m)).collect();
    let (k1, k2) = (
        MasterKey::from_bytes([1; 32]),
        MasterKey::from_bytes([2; 32]),
    );
    let old = Keyring::with_keys(&[("k1", &k1)], &columns).unwrap();
    let both = Keyring::with_keys(&[("k2", &k2), ("k1", &k1)], &columns).unwrap();
    (old, both)
}

#[test]
fn several_master_keys_read_every_key_and_write_the_current_one() {
    for mode in both_modes() {
        let (old, both) = rotating(&[(EMAIL, mode), (PHONE, mode)]);
        let written_before = old.encrypt(EMAIL, b"a@example.com").unwrap();
        assert_eq!(
            &*both
                .decrypt(written_before.as_bytes(), Some(EMAIL))
                .unwrap(),
            b"a@example.com"
        );
        assert_eq!(both.key_name(written_before.as_bytes()), Some("k1"));
        assert!(!both.is_current(written_before.as_bytes(), EMAIL));
        let written_now = both.encrypt(EMAIL, b"a@example.com").unwrap();
        assert_eq!(both.key_name(written_now.as_bytes()), Some("k2"));
        assert!(both.is_current(written_now.as_bytes(), EMAIL));
        assert!(
            old.decrypt(written_now.as_bytes(), Some(EMAIL)).is_err(),
            "k1 alone cannot read k2's"
        );
        // The column binding holds across keys: k1's email is not a phone under k2's ring.
        assert!(matches!(
            both.decrypt(written_before.as_bytes(), Some(PHONE)),
            Err(CryptoError::WrongColumn { .. })
        ));
        assert_eq!(both.key_names(), ["k2", "k1"]);
    }
}

#[test]
fn search_ciphertexts_cover_every_key_current_first() {
    let (old, both) = rotating(&[(EMAIL, Mode::Deterministic)]);
    let found = both.search_ciphertexts(EMAIL, b"a@example.com").unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0], both.encrypt(EMAIL, b"a@example.com").unwrap());
    assert_eq!(found[1], old.encrypt(EMAIL, b"a@example.com").unwrap());
}

#[test]
fn a_column_whose_mode_changed_still_reads_its_old_envelopes() {
    let columns = |mode| vec![(EMAIL.to_string(), mode)];
    let before = Keyring::new(&master(), &columns(Mode::Randomized));
    let after = Keyring::new(&master(), &columns(Mode::Deterministic));
    let envelope = before.encrypt(EMAIL, b"v").unwrap();
    assert_eq!(
        &*after.decrypt(envelope.as_bytes(), Some(EMAIL)).unwrap(),
        b"v"
    );
    assert!(
        !after.is_current(envelope.as_bytes(), EMAIL),
        "rotate rewrites it"
    );
    assert!(after.is_current(after.encrypt(EMAIL, b"v").unwrap().as_bytes(), EMAIL));
}

#[test]
fn the_same_key_under_two_names_is_refused() {
    let columns = vec![(EMAIL.to_string(), Mode::Deterministic)];
    let (a, b) = (
        MasterKey::from_bytes([7; 32]),
        MasterKey::from_bytes([7; 32]),
    );
    let err = Keyring::with_keys(&[("k1", &a), ("k2", &b)], &columns)
        .err()
        .unwrap();
    assert!(err.contains("k1") && err.contains("k2"), "{err}");
}

#[test]
fn one_key_envelopes_are_unchanged_by_several_key_support() {
    // The one-key form's key ids and ciphertexts are those of a keyring of that key alone.
    let columns = vec![(EMAIL.to_string(), Mode::Deterministic)];
    let single = Keyring::new(&master(), &columns);
    let named = Keyring::with_keys(&[("default", &master())], &columns).unwrap();
    assert_eq!(
        single.encrypt(EMAIL, b"x").unwrap(),
        named.encrypt(EMAIL, b"x").unwrap()
    );
}
