//! The stored form of a ciphertext: `pgc1$<m>$<kid>$<payload>`, all ASCII.
//!
//! - `pgc1$`: magic and format version, so stored values are recognisable ([`is_envelope`]);
//! - `<m>`: `r` (randomized, AES-256-GCM) or `d` (deterministic, AES-SIV);
//! - `<kid>`: 8 base64url characters naming the column, mode and key version;
//! - `<payload>`: unpadded base64url of `nonce(12) || ciphertext || tag(16)` for `r`, and of
//!   `siv(16) || ciphertext` for `d`.
//!
//! The alphabet (`A-Z a-z 0-9 - _ $`) needs no quoting or escaping in SQL string literals,
//! COPY text or CSV, or JSON, and is never altered by `E''` or `standard_conforming_strings`.
//! This file only parses and measures envelopes; it knows no keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{CryptoError, Mode};

/// Every envelope starts with this: magic `pgc`, format version `1`, separator `$`.
pub const ENVELOPE_PREFIX: &str = "pgc1$";

/// Length of the header `pgc1$<m>$<kid>$`.
pub(crate) const HEADER_LEN: usize = 16;
/// Length of a key id in characters.
pub(crate) const KID_LEN: usize = 8;
/// AES-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// Authentication tag length (GCM tag, or SIV synthetic IV).
pub(crate) const TAG_LEN: usize = 16;

/// Cheap check whether a value looks like an envelope (starts with `pgc1$`); a handful of
/// nanoseconds for any input. It does not validate the rest: [`super::Keyring::decrypt`] does.
#[inline]
pub fn is_envelope(value: &[u8]) -> bool {
    value.starts_with(ENVELOPE_PREFIX.as_bytes())
}

/// Exact length in bytes (= characters, it is ASCII) of the envelope of a `plaintext_len`-byte
/// plaintext. Note that `varchar(n)` counts characters, so compare with this directly.
pub fn envelope_len(plaintext_len: usize, mode: Mode) -> usize {
    HEADER_LEN.saturating_add(base64_len(raw_len(plaintext_len, mode)))
}

/// Length of the binary payload (before base64) for a plaintext length.
pub(crate) fn raw_len(plaintext_len: usize, mode: Mode) -> usize {
    let overhead = match mode {
        Mode::Randomized => NONCE_LEN + TAG_LEN,
        Mode::Deterministic => TAG_LEN,
    };
    plaintext_len.saturating_add(overhead)
}

/// Unpadded base64 length of `n` bytes.
fn base64_len(n: usize) -> usize {
    (n / 3).saturating_mul(4).saturating_add([0, 2, 3][n % 3])
}

/// An envelope split into its parts; nothing decoded or authenticated yet.
pub(crate) struct Parsed<'a> {
    pub mode: Mode,
    pub kid: [u8; KID_LEN],
    pub payload: &'a [u8],
}

/// Splits an envelope. Errors are [`CryptoError::Malformed`] with a reason that never quotes
/// the value.
pub(crate) fn parse(envelope: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    if !is_envelope(envelope) {
        return Err(CryptoError::Malformed("missing the pgc1$ prefix"));
    }
    let Some((header, payload)) = envelope.split_first_chunk::<HEADER_LEN>() else {
        return Err(CryptoError::Malformed("truncated header"));
    };
    let mode = match header[5] {
        b'r' => Mode::Randomized,
        b'd' => Mode::Deterministic,
        _ => return Err(CryptoError::Malformed("unknown mode (expected r or d)")),
    };
    if header[6] != b'$' || header[HEADER_LEN - 1] != b'$' {
        return Err(CryptoError::Malformed("bad header separators"));
    }
    let mut kid = [0u8; KID_LEN];
    kid.copy_from_slice(&header[7..7 + KID_LEN]);
    if !kid.iter().all(|&c| is_base64url(c)) {
        return Err(CryptoError::Malformed("key id is not base64url"));
    }
    if payload.len() < base64_len(raw_len(0, mode)) {
        return Err(CryptoError::Malformed("payload too short"));
    }
    Ok(Parsed { mode, kid, payload })
}

/// Decodes the payload (strict: unpadded, canonical trailing bits), appending it to `out`.
/// Any change to the text gives different bytes or an error.
pub(crate) fn decode_payload(payload: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
    URL_SAFE_NO_PAD
        .decode_vec(payload, out)
        .map_err(|_| CryptoError::Malformed("payload is not unpadded base64url"))
}

fn is_base64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_envelope_checks_the_prefix_only() {
        for yes in [&b"pgc1$"[..], b"pgc1$r$AAAAAAAA$xyz", b"pgc1$$$"] {
            assert!(is_envelope(yes));
        }
        for no in [
            &b""[..],
            b"pgc1",
            b"PGC1$r$",
            b" pgc1$r$",
            b"pgc2$r$",
            b"hello",
            b"pgc1\xff",
        ] {
            assert!(!is_envelope(no));
        }
    }

    #[test]
    fn base64_len_matches_the_encoder() {
        for n in 0..100 {
            assert_eq!(base64_len(n), URL_SAFE_NO_PAD.encode(vec![0u8; n]).len());
        }
    }

    #[test]
    fn parse_rejects_bad_headers() {
        let payload = "A".repeat(40);
        let cases = [
            ("x".to_string(), "missing the pgc1$ prefix"),
            ("pgc1$r$AAAA".to_string(), "truncated header"),
            (
                format!("pgc1$x$AAAAAAAA${payload}"),
                "unknown mode (expected r or d)",
            ),
            (
                format!("pgc1$r-AAAAAAAA${payload}"),
                "bad header separators",
            ),
            (
                format!("pgc1$r$AAAAAAAA-{payload}"),
                "bad header separators",
            ),
            (
                format!("pgc1$r$AAAA+AAA${payload}"),
                "key id is not base64url",
            ),
            ("pgc1$r$AAAAAAAA$AAAA".to_string(), "payload too short"),
            (
                format!("pgc1$d$AAAAAAAA${}", "A".repeat(21)),
                "payload too short",
            ),
        ];
        for (text, reason) in cases {
            match parse(text.as_bytes()) {
                Err(CryptoError::Malformed(got)) => assert_eq!(got, reason, "{text}"),
                Err(other) => panic!("{text}: {other:?}"),
                Ok(_) => panic!("{text}: parsed"),
            }
        }
        let text = format!("pgc1$d$Ab-_9zZ0${}", "A".repeat(22));
        let ok = parse(text.as_bytes()).ok().unwrap();
        assert_eq!((ok.mode, &ok.kid), (Mode::Deterministic, b"Ab-_9zZ0"));
    }
}
