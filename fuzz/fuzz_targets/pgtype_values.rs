//! Typed PII values as clients send them (`src/pgtype/`). Invariants, for every type and
//! the first byte's choice of settings: reading arbitrary text or binary input never
//! panics; a value that reads gives a canonical form that is stable (read again from its
//! own text, it is the same bytes), prints as text and as binary without error under any
//! supported settings, and reads back from its binary and ISO text to the same canonical
//! form (and from its text under other settings, when that text is read at all).
//!
//! Input: `[type, settings, input...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgcloak::pgtype::{
    from_binary, from_text, prints_canonical, to_binary, to_text, PgType, Settings,
};

const TYPES: [&str; 18] = [
    "text", "varchar(8)", "smallint", "integer", "bigint", "numeric", "numeric(6,2)", "real",
    "double precision", "boolean", "date", "time", "timestamp", "timestamptz", "uuid", "json",
    "jsonb", "bytea",
];

const SETTINGS: [(&str, &str); 6] = [
    ("DateStyle", "ISO, MDY"),
    ("DateStyle", "SQL, DMY"),
    ("DateStyle", "German, DMY"),
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "America/New_York"),
    ("TimeZone", "<+05:45>-05:45"),
];

fuzz_target!(|data: &[u8]| {
    let [ty, setting, input @ ..] = data else {
        return;
    };
    let ty = PgType::parse(TYPES[*ty as usize % TYPES.len()]).unwrap();
    let mut settings = Settings::default();
    let (name, value) = SETTINGS[*setting as usize % SETTINGS.len()];
    settings.set(name, value).unwrap();
    let from_binary_input = from_binary(&ty, input);
    let canonicals = [
        std::str::from_utf8(input).ok().and_then(|text| from_text(&ty, text, &settings).ok()),
        from_binary_input.ok(),
    ];
    let iso = Settings::default();
    for canonical in canonicals.into_iter().flatten() {
        let text = to_text(&ty, &canonical, &iso).expect("canonical prints as text");
        let again = from_text(&ty, &text, &iso).expect("printed text reads back");
        assert_eq!(again, canonical, "{ty:?}: {text:?}");
        let shown = to_text(&ty, &canonical, &settings).expect("prints under the settings");
        if prints_canonical(&ty, &settings) {
            assert_eq!(shown.as_bytes(), canonical, "{ty:?} prints canonical under {name}");
        }
        // Not every printed form is read back (a zone abbreviation may be refused), but
        // one that is read must give the same value.
        if let Ok(read) = from_text(&ty, &shown, &settings) {
            assert_eq!(read, canonical, "{ty:?} under {name} = {value}: {shown:?}");
        }
        let binary = to_binary(&ty, &canonical).expect("canonical prints as binary");
        let back = from_binary(&ty, &binary).expect("binary reads back");
        assert_eq!(back, canonical, "{ty:?} binary");
    }
});
