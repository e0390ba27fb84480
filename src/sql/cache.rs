//! The analysis cache, shared by all sessions: drivers repeat the same statements, so an
//! analysis is remembered per SQL text, within a budget of bytes.
//!
//! It never holds plaintext of PII: plans hold where values are, not what they are, and a
//! statement whose text itself holds values bound for PII columns (literals, `EXECUTE
//! name(args)`) is analysed every time instead of being kept as a key. Such statements
//! rarely repeat; drivers repeat parametrised ones. Refusals are not kept either: their text
//! may hold a PII value used where ciphertext cannot work (`email LIKE 'ann%'`).
//!
//! Eviction is by two generations: entries go into the young one; when it has used half
//! the budget, the old one is dropped and the young one becomes old. A hit in the old
//! generation moves the entry back to the young one, so statements in use stay.

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{
    analyze, Analysis, CopyInPlan, CopyOutFields, LiteralSlot, ParamSlot, ParamUse, StatementPlan,
};
use crate::policy::{ColumnId, Policy};

/// The default of the config key `analysis_cache_bytes`.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What the allocator adds to each heap block (glibc: 8 to 16 bytes, rounded up to 16).
const ALLOCATION_OVERHEAD: usize = 16;

/// Analyses, remembered per SQL text within a budget of bytes.
pub struct AnalysisCache {
    policy: Arc<Policy>,
    /// At most this many bytes are held (keys, values and their overhead); 0: none.
    budget: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: Generation,
    old: Generation,
}

#[derive(Default)]
struct Generation {
    entries: HashMap<Box<str>, Entry>,
    bytes: usize,
}

struct Entry {
    analysis: Analysis,
    /// What this entry costs, key included.
    bytes: usize,
}

impl AnalysisCache {
    /// A cache of at most `budget` bytes; 0 disables it.
    pub fn new(policy: Arc<Policy>, budget: usize) -> AnalysisCache {
        AnalysisCache {
            policy,
            budget,
            generations: Mutex::default(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn policy_handle(&self) -> Arc<Policy> {
        self.policy.clone()
    }

    /// The analysis of `sql`, from the cache when it is there.
    pub fn analyze(&self, sql: &str) -> Analysis {
        if !self.policy.may_touch(sql) {
            return Analysis::Plain;
        }
        if self.budget == 0 {
            return analyze(sql, &self.policy);
        }
        if let Some(hit) = self.lookup(sql) {
            return hit;
        }
        let analysis = analyze(sql, &self.policy);
        if cacheable(&analysis) {
            let bytes = entry_bytes(sql, &analysis);
            self.insert(sql.into(), analysis.clone(), bytes);
        }
        analysis
    }

    /// Bytes held now, by the same count the budget is checked against.
    pub fn bytes(&self) -> usize {
        let generations = self.lock();
        generations.young.bytes + generations.old.bytes
    }

    /// Statements held now.
    pub fn len(&self) -> usize {
        let generations = self.lock();
        generations.young.entries.len() + generations.old.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, sql: &str) -> Option<Analysis> {
        let mut generations = self.lock();
        if let Some(entry) = generations.young.entries.get(sql) {
            return Some(entry.analysis.clone());
        }
        let (key, entry) = generations.old.entries.remove_entry(sql)?;
        generations.old.bytes -= entry.bytes;
        let analysis = entry.analysis.clone();
        let dropped = self.insert_locked(&mut generations, key, entry);
        drop(generations);
        drop(dropped); // freeing a generation's entries needs no lock
        Some(analysis)
    }

    fn insert(&self, key: Box<str>, analysis: Analysis, bytes: usize) {
        let mut generations = self.lock();
        let dropped = self.insert_locked(&mut generations, key, Entry { analysis, bytes });
        drop(generations);
        drop(dropped);
    }

    /// Puts an entry in the young generation, first retiring it when it is full; returns
    /// the generation to free.
    fn insert_locked(
        &self,
        generations: &mut Generations,
        key: Box<str>,
        entry: Entry,
    ) -> Option<Generation> {
        let half = self.budget / 2;
        if entry.bytes > half {
            return None; // larger than a generation: never worth keeping
        }
        let mut dropped = None;
        if generations.young.bytes + entry.bytes > half {
            let young = std::mem::take(&mut generations.young);
            dropped = Some(std::mem::replace(&mut generations.old, young));
        }
        let young = &mut generations.young;
        young.bytes += entry.bytes;
        if let Some(previous) = young.entries.insert(key, entry) {
            young.bytes -= previous.bytes; // two sessions analysed it at once
        }
        dropped
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether an analysis may be kept, its text as the key: see the module doc.
fn cacheable(analysis: &Analysis) -> bool {
    match analysis {
        Analysis::Plain => true,
        Analysis::Plan(plan) => plan.holds_no_pii_values(),
        Analysis::Refused(_) => false,
    }
}

/// The bytes an entry takes: the key, the map's slot for it (with the spare room a hash
/// map keeps), and what the analysis owns on the heap.
fn entry_bytes(sql: &str, analysis: &Analysis) -> usize {
    let slot = 2 * (size_of::<(Box<str>, Entry)>() + 1);
    let key = sql.len() + ALLOCATION_OVERHEAD;
    slot + key + analysis_bytes(analysis)
}

fn analysis_bytes(analysis: &Analysis) -> usize {
    match analysis {
        Analysis::Plain => 0,
        Analysis::Refused(refusal) => string_bytes(&refusal.message),
        Analysis::Plan(plan) => {
            // The Arc's block: two counts and the plan.
            let arc = 2 * size_of::<usize>() + size_of::<StatementPlan>() + ALLOCATION_OVERHEAD;
            arc + plan_bytes(plan)
        }
    }
}

/// What a plan owns on the heap.
fn plan_bytes(plan: &StatementPlan) -> usize {
    let literals = vec_bytes::<LiteralSlot>(plan.literals.capacity());
    // A B-tree node holds up to 11 entries and is at least half full.
    let params = plan.params.len() * 2 * (size_of::<usize>() + size_of::<ParamSlot>())
        + if plan.params.is_empty() { 0 } else { 256 };
    let copy_in = plan.copy_in.as_ref().map_or(0, copy_in_bytes);
    let copy_out = plan
        .copy_out
        .as_ref()
        .and_then(|o| o.null.as_deref())
        .map_or(0, string_bytes);
    let copy_out_fields = match &plan.copy_out_fields {
        None => 0,
        Some(CopyOutFields::AllOf(schema, table)) => string_bytes(schema) + string_bytes(table),
        Some(CopyOutFields::Listed(fields)) => {
            vec_bytes::<Option<ColumnId>>(fields.capacity())
                + fields.iter().flatten().map(column_bytes).sum::<usize>()
        }
    };
    let executes = vec_bytes::<String>(plan.executes.capacity())
        + plan.executes.iter().map(|s| string_bytes(s)).sum::<usize>();
    let columns = vec_bytes::<Arc<ColumnId>>(plan.columns.capacity())
        + plan
            .columns
            .iter()
            .map(|c| 2 * size_of::<usize>() + ALLOCATION_OVERHEAD + column_bytes(c))
            .sum::<usize>();
    // The Arcs point into `columns`, counted there.
    let uses = vec_bytes::<ParamUse>(plan.param_uses.capacity())
        + vec_bytes::<Arc<ColumnId>>(plan.compared_by_ciphertext.capacity());
    literals + params + copy_in + copy_out + copy_out_fields + executes + columns + uses
}

fn copy_in_bytes(plan: &CopyInPlan) -> usize {
    let null = plan.options.null.as_deref().map_or(0, string_bytes);
    let fields = vec_bytes::<Option<ColumnId>>(plan.fields.capacity())
        + plan
            .fields
            .iter()
            .flatten()
            .map(column_bytes)
            .sum::<usize>();
    null + fields
}

/// A column identity's own size and its three strings.
fn column_bytes(column: &ColumnId) -> usize {
    size_of::<ColumnId>()
        + string_bytes(&column.schema)
        + string_bytes(&column.table)
        + string_bytes(&column.column)
}

fn string_bytes(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        s.len() + ALLOCATION_OVERHEAD
    }
}

fn vec_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        capacity * size_of::<T>() + ALLOCATION_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Arc<Policy> {
        let yaml = "users:\n  email: deterministic\n  first_name: randomized\n";
        Arc::new(Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap())
    }

    /// A distinct parametrised statement of about `size` bytes.
    fn statement(i: usize, size: usize) -> String {
        // A flat select list: deep AND chains would test the walk's recursion instead.
        let mut columns = format!("id AS i{i}");
        while columns.len() < size {
            columns.push_str(", other_column");
        }
        format!("SELECT {columns}, email FROM users WHERE email = $1")
    }

    #[test]
    fn hits_return_the_same_analysis() {
        let cache = AnalysisCache::new(policy(), DEFAULT_CACHE_BYTES);
        let sql = "SELECT * FROM users WHERE email = $1";
        assert_eq!(cache.analyze(sql), analyze(sql, cache.policy()));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.analyze(sql), analyze(sql, cache.policy()));
        assert_eq!(cache.len(), 1);
        // Names no PII table: not even looked up.
        assert_eq!(cache.analyze("SELECT 1"), Analysis::Plain);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn statements_holding_pii_values_are_not_kept() {
        let cache = AnalysisCache::new(policy(), DEFAULT_CACHE_BYTES);
        for sql in [
            "SELECT * FROM users WHERE email = 'ann@example.com'",
            "INSERT INTO users (email) VALUES ('ann@example.com')",
            "SELECT * FROM users WHERE email = ANY('{ann@example.com}')",
            // Refused: the literal is compared where ciphertext cannot work.
            "SELECT * FROM users WHERE email LIKE 'ann%'",
            "SELECT * FROM users WHERE first_name = 'Ann'",
        ] {
            assert_ne!(cache.analyze(sql), Analysis::Plain, "{sql}");
        }
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn bytes_stay_within_the_budget() {
        let budget = 1024 * 1024;
        let cache = AnalysisCache::new(policy(), budget);
        let mut keys = 0;
        for i in 0..600 {
            let sql = statement(i, 35_000);
            keys += sql.len();
            assert!(matches!(cache.analyze(&sql), Analysis::Plan(_)));
            assert!(cache.bytes() <= budget, "{} after {i}", cache.bytes());
        }
        assert!(keys > 10 * budget);
        // The count is honest: more than the keys held.
        let held: usize = {
            let generations = cache.lock();
            [&generations.young, &generations.old]
                .iter()
                .flat_map(|g| g.entries.keys())
                .map(|k| k.len())
                .sum()
        };
        assert!(held > 0 && cache.bytes() > held);
    }

    #[test]
    fn statements_in_use_survive_eviction() {
        let cache = AnalysisCache::new(policy(), 64 * 1024);
        let hot = "SELECT * FROM users WHERE email = $1";
        cache.analyze(hot);
        for i in 0..200 {
            cache.analyze(&statement(i, 1_000));
            cache.analyze(hot);
            let generations = cache.lock();
            assert!(generations.young.entries.contains_key(hot));
        }
    }

    #[test]
    fn zero_disables_and_oversized_entries_are_not_kept() {
        let off = AnalysisCache::new(policy(), 0);
        let sql = statement(1, 100);
        assert!(matches!(off.analyze(&sql), Analysis::Plan(_)));
        assert!(off.is_empty());
        let small = AnalysisCache::new(policy(), 10_000);
        small.analyze(&statement(2, 6_000));
        assert!(small.is_empty());
        small.analyze(&sql);
        assert_eq!(small.len(), 1);
    }
}
