//! COPY ... FROM STDIN rows (text and CSV, options as Postgres accepts them) split into
//! CopyData payloads of fuzzer-chosen sizes, parsed and their PII fields encrypted with a
//! fixed keyring. Invariants: never panics; the output does not depend on how the data was
//! split into frames; and its PII fields are envelopes that pass as they are: COPYing the
//! output again gives back the same bytes (a value is never encrypted twice, and the
//! ciphertext needs no quoting or escaping).
//!
//! Input: `[format, delimiter, quote, escape, null, fields, chunk_seed, data...]`.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgcloak::cloak::copy::{CopyError, CopyIn};
use pgcloak::crypto::Keyring;
use pgcloak::policy::ColumnId;
use pgcloak::sql::{CopyFormat, CopyInPlan, CopyOptions};

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(common::keyring)
}

/// Option characters: the defaults and the ASCII characters people use, letters included.
const CHARS: &[u8] = b"\t,|;:\"'\\$-_ab1XZp!#~/ ";
const NULLS: [&str; 5] = ["\\N", "", "NULL", "-", "nil"];

fn column(name: &str) -> ColumnId {
    ColumnId {
        schema: "public".into(),
        table: "users".into(),
        column: name.into(),
    }
}

/// The options, or None when Postgres itself refuses them (copy.c's checks).
fn options(bytes: [u8; 5]) -> Option<CopyOptions> {
    let [format, delimiter, quote, escape, null] = bytes;
    let csv = format & 1 == 1;
    let pick = |b: u8| (b & 0x80 != 0).then(|| CHARS[b as usize % CHARS.len()] as char);
    let options = CopyOptions {
        format: if csv {
            CopyFormat::Csv
        } else {
            CopyFormat::Text
        },
        delimiter: pick(delimiter),
        null: (null & 0x80 != 0).then(|| NULLS[null as usize % NULLS.len()].to_owned()),
        header: format & 2 != 0,
        quote: if csv { pick(quote) } else { None },
        escape: if csv { pick(escape) } else { None },
    };
    let delimiter = options.delimiter.unwrap_or(if csv { ',' } else { '\t' });
    let quote = options.quote.unwrap_or('"');
    let null = options
        .null
        .clone()
        .unwrap_or_else(|| if csv { "" } else { "\\N" }.into());
    if !csv && "\\.abcdefghijklmnopqrstuvwxyz0123456789".contains(delimiter) {
        return None;
    }
    if csv && (delimiter == quote || null.contains(delimiter) || null.contains(quote)) {
        return None;
    }
    if null.contains(delimiter) {
        return None;
    }
    Some(options)
}

/// Feeds `data` in payloads of the given sizes, then CopyDone.
fn copy(
    plan: &CopyInPlan,
    data: &[u8],
    sizes: &mut dyn Iterator<Item = usize>,
) -> Result<Vec<u8>, CopyError> {
    let mut copy = CopyIn::new(plan.clone());
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        out.extend(copy.feed(&rest[..n], keyring())?);
        rest = &rest[n..];
    }
    out.extend(copy.finish(keyring())?);
    Ok(out)
}

fn sizes(seed: u8) -> impl Iterator<Item = usize> {
    let mut state = u32::from(seed) | 0x100;
    std::iter::from_fn(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some(1 + state as usize % 17)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&[format, delimiter, quote, escape, null, fields, seed], data)) =
        data.split_first_chunk::<7>()
    else {
        return;
    };
    let Some(options) = options([format, delimiter, quote, escape, null]) else {
        return;
    };
    // 1 to 4 fields; bit i set: field i is a PII column.
    let count = 1 + (fields >> 4) as usize % 4;
    let plan = CopyInPlan {
        options,
        fields: (0..count)
            .map(|i| {
                (fields & (1 << i) != 0)
                    .then(|| column(if i % 2 == 0 { "email" } else { "first_name" }))
            })
            .collect(),
    };
    let whole = copy(&plan, data, &mut std::iter::empty());
    let split = copy(&plan, data, &mut sizes(seed));
    match (&whole, &split) {
        // Randomized ciphertexts differ between runs: compare only their shape.
        (Ok(a), Ok(b)) => assert_eq!(a.len(), b.len(), "output depends on the framing"),
        (Err(_), Err(_)) => {}
        _ => panic!("output depends on the framing: {whole:?} vs {split:?}"),
    }
    let Ok(out) = whole else { return };
    match copy(&plan, &out, &mut std::iter::empty()) {
        Ok(again) => assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&out),
            "the encrypted rows read differently"
        ),
        Err(error) => panic!("the encrypted rows do not COPY again: {error}"),
    }
});
