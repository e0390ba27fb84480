//! The differential tester: the same schema and rows in database A behind pgcloak (PII
//! columns encrypted) and in database B in clear, and a seeded, grammar-based stream of
//! statements run on both. Each statement must give the same result through pgcloak as on
//! B, or be refused by pgcloak; never a different result, a broken connection, or
//! plaintext in A's PII columns. Knobs: DIFFTEST_SEED, DIFFTEST_STATEMENTS, DIFFTEST_RESET_EVERY
//! (default 500), DIFFTEST_VERBOSE (print every statement), DIFFTEST_EXTRA (a file of more entries).
//!
//! `cargo test --test differential` is the CI slice: the regression file
//! (tests/differential/regressions.txt), then DIFFTEST_STATEMENTS (default 3000)
//! statements of DIFFTEST_SEED (default 1). A long run:
//! `DIFFTEST_STATEMENTS=1000000 DIFFTEST_SEED=7 cargo test --release --test differential -- --nocapture`.

mod common;

#[path = "differential/checker.rs"]
mod checker;
#[path = "differential/exprs.rs"]
mod exprs;
#[path = "differential/generator.rs"]
mod generator;
#[path = "differential/grammar.rs"]
mod grammar;
#[path = "differential/runner.rs"]
mod runner;
#[path = "differential/schema.rs"]
mod schema;
#[path = "differential/writes.rs"]
mod writes;

use std::time::Instant;

use checker::{Harness, Verdict};
use generator::{Gen, Kind, Mode, Stmt};

const REGRESSIONS: &str = include_str!("differential/regressions.txt");

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// One entry of the regression file.
#[derive(Debug)]
enum Entry {
    /// Steps that must give the same result or a refusal.
    Pass(Vec<String>),
    /// A known-open difference (label, steps): run and reported, never failing.
    Xfail(String, Vec<String>),
    /// A generated difference whose SQL contains the pattern is a known-open bug.
    Known(String, String),
    /// A seed replayed for this many statements.
    Seed(u64, usize),
}

fn parse_regressions(text: &str) -> Vec<Entry> {
    let steps = |s: &str| {
        s.split(" ;; ")
            .map(|x| x.trim().to_owned())
            .collect::<Vec<_>>()
    };
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (tag, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("regressions.txt line {}: no `tag: `", n + 1));
        let mut words = tag.split_whitespace();
        let entry = match (words.next(), words.next()) {
            (Some("pass"), None) => Entry::Pass(steps(rest)),
            (Some("xfail"), Some(label)) => Entry::Xfail(label.to_owned(), steps(rest)),
            (Some("known"), Some(label)) => Entry::Known(label.to_owned(), rest.to_owned()),
            (Some("seed"), None) => {
                let mut it = rest.split_whitespace().map(|x| x.parse::<u64>().ok());
                match (it.next().flatten(), it.next().flatten()) {
                    (Some(seed), Some(count)) => Entry::Seed(seed, count as usize),
                    _ => panic!("regressions.txt line {}: seed: <seed> <count>", n + 1),
                }
            }
            _ => panic!("regressions.txt line {}: unknown tag {tag:?}", n + 1),
        };
        entries.push(entry);
    }
    entries
}

/// A regression step: sent as a simple query, the tables compared afterwards.
fn step_stmt(sql: &str) -> Stmt {
    Stmt {
        class: "regression",
        sql: sql.to_owned(),
        params: Vec::new(),
        types: Vec::new(),
        mode: Mode::Simple,
        kind: Kind::Query,
        ordered: false,
        writes: true,
        scs_off: false,
    }
}

/// Runs a sequence of steps from fresh databases; Err(first difference) if any differs.
async fn run_steps(h: &mut Harness, steps: &[String]) -> Result<(), String> {
    h.reset().await;
    for (i, sql) in steps.iter().enumerate() {
        let before = h.differences.len();
        if let Verdict::Differ(what) = h.step(0, i, &step_stmt(sql), &[]).await {
            h.differences.truncate(before);
            return Err(format!("step {i}: {sql}\n  {}", what.replace('\n', "\n  ")));
        }
    }
    Ok(())
}

/// Runs `count` generated statements of `seed`, from fresh databases.
async fn run_seed(h: &mut Harness, seed: u64, count: usize, known: &[(String, String)]) {
    let reset_every = env_u64("DIFFTEST_RESET_EVERY", 500).max(1) as usize;
    let mut gen = Gen::new(seed);
    h.reset().await;
    for index in 0..count {
        if index > 0 && index % reset_every == 0 {
            h.reset().await;
            gen.scs_on = true;
            gen.in_tx = false;
        }
        let stmt = grammar::next(&mut gen);
        let before = h.differences.len();
        h.step(seed, index, &stmt, known).await;
        if h.differences.len() > before && stmt.writes {
            // reset() ran: the sessions are fresh.
            gen.scs_on = true;
            gen.in_tx = false;
        }
    }
}

fn report(h: &Harness, started: Instant, statements: usize) {
    println!("\nper statement class: statements, same result, refused (rate), differences");
    let mut total = checker::Counts::default();
    for (class, c) in &h.counts {
        println!(
            "  {class:<11} {:>8} {:>8} {:>8} ({:>5.1}%) {:>5}",
            c.total,
            c.same,
            c.refused,
            100.0 * c.refused as f64 / c.total.max(1) as f64,
            c.differ
        );
        total.total += c.total;
        total.same += c.same;
        total.refused += c.refused;
        total.differ += c.differ;
    }
    println!(
        "  {:<11} {:>8} {:>8} {:>8} ({:>5.1}%) {:>5}",
        "all",
        total.total,
        total.same,
        total.refused,
        100.0 * total.refused as f64 / total.total.max(1) as f64,
        total.differ
    );
    let known = h.differences.iter().filter(|d| d.known.is_some()).count();
    println!(
        "{statements} generated statements in {:.1}s; {} differences ({known} known open)",
        started.elapsed().as_secs_f64(),
        h.differences.len()
    );
}

/// The CI slice: the regression file, then a seeded run. Fails on any difference that the
/// regression file does not list as known open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential() {
    let started = Instant::now();
    let mut text = REGRESSIONS.to_owned();
    if let Ok(path) = std::env::var("DIFFTEST_EXTRA") {
        // More entries to try, e.g. hand-written probes: DIFFTEST_EXTRA=/tmp/probes.txt
        text.push_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")));
    }
    let entries = parse_regressions(&text);
    let known: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Known(label, pattern) => Some((label.clone(), pattern.clone())),
            _ => None,
        })
        .collect();
    let mut h = Harness::start().await;
    let mut failures = Vec::new();
    for entry in &entries {
        match entry {
            Entry::Pass(steps) => {
                if let Err(e) = run_steps(&mut h, steps).await {
                    failures.push(format!("pass entry differs: {e}"));
                }
            }
            Entry::Xfail(label, steps) => match run_steps(&mut h, steps).await {
                Err(_) => println!("xfail {label}: still differs (known open)"),
                Ok(()) => println!(
                    "xfail {label}: NOW PASSES: make it a `pass:` entry: {}",
                    steps.join(" ;; ")
                ),
            },
            Entry::Known(..) => {}
            Entry::Seed(seed, count) => run_seed(&mut h, *seed, *count, &known).await,
        }
    }
    let seed = env_u64("DIFFTEST_SEED", 1);
    let statements = env_u64("DIFFTEST_STATEMENTS", 3000) as usize;
    println!("seed {seed}, {statements} statements");
    let generated_started = Instant::now();
    run_seed(&mut h, seed, statements, &known).await;
    report(&h, generated_started, statements);
    for d in h.differences.iter().filter(|d| d.known.is_none()) {
        failures.push(format!("{d}"));
    }
    println!("total time {:.1}s", started.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} differences not known open (replay: DIFFTEST_SEED=<seed> DIFFTEST_STATEMENTS=<index+1>):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
