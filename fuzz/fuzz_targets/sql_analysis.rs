//! The SQL analysis entry point with a fixed policy, directly and through the analysis
//! cache. Invariants: never panics; every statement is planned, passed on as plain or
//! refused with SQLSTATE 0A000 or class 42; a plan's literal slots lie in the text, on
//! character boundaries, in order and without overlap, and read back (or refuse) without
//! panicking; parameter slots are numbered from 1; the cache answers what the analysis
//! answers, on a miss and on a hit.
//!
//! Input: SQL text (lossy UTF-8), capped at 64 kB.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pgcloak::policy::Policy;
use pgcloak::sql::{analyze, literal_value, splice, Analysis, AnalysisCache};

const MAX_SQL: usize = 64 * 1024;

fn fixtures() -> &'static (Arc<Policy>, AnalysisCache) {
    static FIXTURES: OnceLock<(Arc<Policy>, AnalysisCache)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let policy = Arc::new(common::policy());
        let cache = AnalysisCache::new(policy.clone(), 4 << 20);
        (policy, cache)
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_SQL {
        return;
    }
    let sql = String::from_utf8_lossy(data);
    let (policy, cache) = fixtures();
    let analysis = analyze(&sql, policy);
    match &analysis {
        Analysis::Plain => {}
        Analysis::Refused(refusal) => {
            assert!(
                refusal.code == "0A000" || refusal.code.starts_with("42"),
                "refusal with SQLSTATE {}",
                refusal.code
            );
            assert!(!refusal.message.is_empty());
        }
        Analysis::Plan(plan) => {
            let mut end = 0;
            let mut replacements = Vec::new();
            for slot in &plan.literals {
                let range = slot.range.clone();
                assert!(
                    range.start >= end,
                    "slots overlap or are out of order: {range:?}"
                );
                assert!(
                    range.start < range.end && range.end <= sql.len(),
                    "{range:?}"
                );
                assert!(sql.is_char_boundary(range.start) && sql.is_char_boundary(range.end));
                end = range.end;
                if literal_value(&sql, slot).is_ok() {
                    replacements.push((range, "'pgc1$d$AAAAAAAA$x'".to_owned()));
                }
            }
            let _ = splice(&sql, &replacements);
            for &n in plan.params.keys() {
                assert!((1..=65535).contains(&n), "parameter ${n}");
            }
        }
    }
    assert_eq!(cache.analyze(&sql), analysis, "cache miss differs");
    assert_eq!(cache.analyze(&sql), analysis, "cache hit differs");
});
