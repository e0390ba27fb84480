//! The invariant: for each statement, pgcloak on A gives the same result as B in clear, or
//! refuses it; never a different result, never a broken connection, never plaintext at
//! rest. Holds the connections, runs a statement on both sides, judges, checks the tables
//! after writes, resets both databases when they drift apart, and counts per class.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::generator::{Kind, Mode, Stmt};
use super::runner::{self, Outcome, ResultSet};
use super::schema::{seed_rows, PLAINTEXT_AT_REST, SCHEMA, TABLES};
use crate::common;

/// Fails B's transaction as pgcloak's refusal failed A's, so both stay in step.
const REFUSAL_STAND_IN: &str = "SELECT pgcloak_refusal_stand_in";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Same,
    Refused,
    Differ(String),
}

/// A statement whose outcome differed, with what is needed to replay it.
#[derive(Debug, Clone)]
pub struct Difference {
    pub seed: u64,
    pub index: usize,
    pub class: &'static str,
    pub mode: Mode,
    pub sql: String,
    pub params: String,
    pub what: String,
    /// Matches a `known` entry of the regression file: an open pgcloak bug.
    pub known: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "DIFFERENCE seed={} index={} class={} mode={:?}{}",
            self.seed,
            self.index,
            self.class,
            self.mode,
            self.known
                .as_ref()
                .map_or(String::new(), |k| format!(" (known open: {k})"))
        )?;
        writeln!(f, "  sql:    {}", self.sql.replace('\n', "\\n"))?;
        if !self.params.is_empty() {
            writeln!(f, "  params: {}", self.params)?;
        }
        write!(f, "  {}", self.what.replace('\n', "\n  "))
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub total: usize,
    pub same: usize,
    pub refused: usize,
    pub differ: usize,
}

/// An error that is pgcloak's refusal: its SQLSTATE classes and its wording.
pub fn is_refusal(outcome: &Outcome) -> bool {
    let Outcome::Error { code, message } = outcome else {
        return false;
    };
    let class_ok =
        code == "0A000" || code.starts_with("42") || code.starts_with("22") || code == "XX000";
    // "pgcloak_refused_1" is one of the generator's words; a server message quoting it
    // is not a refusal.
    let text = message.replace("pgcloak_", "");
    class_ok
        && (text.contains("pgcloak")
            || text.contains("encrypted")
            || text.starts_with("the value for "))
}

fn same_sets(a: &[ResultSet], b: &[ResultSet], ordered: bool) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} result sets against {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(b) {
        if x.columns != y.columns {
            return Err(format!("columns {:?} against {:?}", x.columns, y.columns));
        }
        if x.affected != y.affected {
            return Err(format!(
                "rows affected {:?} against {:?}",
                x.affected, y.affected
            ));
        }
        let (mut xr, mut yr) = (x.rows.clone(), y.rows.clone());
        if !ordered {
            xr.sort();
            yr.sort();
        }
        if xr != yr {
            return Err("different rows".into());
        }
    }
    Ok(())
}

/// Compares A's outcome (through pgcloak) with B's (direct).
pub fn judge(stmt: &Stmt, a: &Outcome, b: &Outcome) -> Verdict {
    let verdict = match (a, b) {
        (Outcome::Ok(x), Outcome::Ok(y)) => same_sets(x, y, stmt.ordered).err(),
        (Outcome::Error { code: x, .. }, Outcome::Error { code: y, .. }) => {
            (x[..2] != y[..2]).then(|| "different error classes".to_owned())
        }
        (Outcome::Client(x), Outcome::Client(y)) => {
            (x != y).then(|| "different client errors".into())
        }
        (Outcome::Broken(_), _) => Some("pgcloak's connection broke".into()),
        _ => Some("different outcomes".into()),
    };
    match verdict {
        None => Verdict::Same,
        Some(why) => Verdict::Differ(format!(
            "{why}\npgcloak: {}\ndirect:  {}",
            a.short(),
            b.short()
        )),
    }
}

/// A `known` pattern: a substring of the SQL, or `{scs_off}` for a statement with a
/// backslash generated while standard_conforming_strings was off.
fn known_match(stmt: &Stmt, pattern: &str) -> bool {
    if pattern == "{scs_off}" {
        return stmt.scs_off && stmt.sql.contains('\\');
    }
    stmt.sql.contains(pattern)
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Same => "same",
        Verdict::Refused => "refused",
        Verdict::Differ(_) => "DIFFER",
    }
}

/// The two databases and their connections.
pub struct Harness {
    pub stack: common::Stack,
    pub a: Client,
    pub a_direct: Client,
    pub b: Client,
    pub counts: BTreeMap<&'static str, Counts>,
    pub differences: Vec<Difference>,
    /// Statements since the tables were last found equal and clean (for the report).
    since_check: Vec<String>,
}

const DB_A: &str = "enc";
const DB_B: &str = "plain";

impl Harness {
    pub async fn start() -> Harness {
        let stack = common::Stack::start_cloaked(super::schema::POLICY).await;
        let admin = stack.connect_direct().await;
        for db in [DB_A, DB_B] {
            admin
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await
                .unwrap();
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {db} SET statement_timeout = '10s'"
                ))
                .await
                .unwrap();
        }
        let url = |db: &str| stack.pg.url(db);
        let a = common::connect(&stack.url("postgres", common::PASSWORD, DB_A)).await;
        let a_direct = common::connect(&url(DB_A)).await;
        let b = common::connect(&url(DB_B)).await;
        let mut harness = Harness {
            stack,
            a,
            a_direct,
            b,
            counts: BTreeMap::new(),
            differences: Vec::new(),
            since_check: Vec::new(),
        };
        harness.reset().await;
        harness
    }

    /// Both databases back to the schema and the seed rows; fresh sessions.
    pub async fn reset(&mut self) {
        // Sessions left in a transaction hold locks that DROP SCHEMA would wait for.
        let admin = self.stack.connect_direct().await;
        admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname IN ('{DB_A}', '{DB_B}') AND pid <> pg_backend_pid()"
            ))
            .await
            .unwrap();
        // Termination is asynchronous: wait until those backends are gone, or the DROP
        // below can deadlock with one still releasing its locks.
        for _ in 0..100 {
            let left: i64 = admin
                .query_one(
                    &format!(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname IN ('{DB_A}', '{DB_B}') AND pid <> pg_backend_pid()"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // A statement may have changed the role's defaults (ALTER ROLE ... SET).
        admin
            .batch_execute("ALTER ROLE postgres RESET ALL")
            .await
            .unwrap();
        self.a_direct = common::connect(&self.stack.pg.url(DB_A)).await;
        self.b = common::connect(&self.stack.pg.url(DB_B)).await;
        let recreate = format!("DROP SCHEMA public CASCADE; CREATE SCHEMA public; {SCHEMA}");
        self.a_direct.batch_execute(&recreate).await.unwrap();
        self.b.batch_execute(&recreate).await.unwrap();
        // The checks from A's direct session must not wait for A's open transaction.
        self.a_direct
            .batch_execute("SET lock_timeout = '200ms'")
            .await
            .unwrap();
        self.a = common::connect(&self.stack.url("postgres", common::PASSWORD, DB_A)).await;
        for row in seed_rows() {
            self.a.batch_execute(&row).await.unwrap();
            self.b.batch_execute(&row).await.unwrap();
        }
        self.since_check.clear();
    }

    /// Runs one statement on both sides and judges it. `index` and `seed` name it in a
    /// difference; `known` says which differences are open bugs.
    pub async fn step(
        &mut self,
        seed: u64,
        index: usize,
        stmt: &Stmt,
        known: &[(String, String)],
    ) -> Verdict {
        if self.a.is_closed() {
            self.a = common::connect(&self.stack.url("postgres", common::PASSWORD, DB_A)).await;
        }
        self.since_check.push(stmt.sql.clone());
        let a = runner::run(&self.a, stmt).await;
        let mut verdict = if is_refusal(&a) {
            let _ = self.b.simple_query(REFUSAL_STAND_IN).await;
            Verdict::Refused
        } else {
            let b = runner::run(&self.b, stmt).await;
            if let Outcome::Broken(why) = &b {
                panic!("the direct connection to B broke ({why}) on: {}", stmt.sql);
            }
            judge(stmt, &a, &b)
        };
        let mut diverged = matches!(verdict, Verdict::Differ(_)) && stmt.writes;
        if stmt.writes && verdict != Verdict::Refused {
            if let Some(why) = self.check_tables().await {
                diverged = true;
                if !matches!(verdict, Verdict::Differ(_)) {
                    verdict = Verdict::Differ(why);
                }
            }
        }
        if std::env::var_os("DIFFTEST_VERBOSE").is_some() {
            println!(
                "#{index} [{}/{:?}] {:?} {}\n    -> {}",
                stmt.class,
                stmt.mode,
                verdict_word(&verdict),
                stmt.sql.replace('\n', "\\n"),
                a.short()
            );
        }
        if let Verdict::Differ(what) = &verdict {
            self.record(seed, index, stmt, what, known);
        }
        let counts = self.counts.entry(stmt.class).or_default();
        counts.total += 1;
        match verdict {
            Verdict::Same => counts.same += 1,
            Verdict::Refused => counts.refused += 1,
            Verdict::Differ(_) => counts.differ += 1,
        }
        if diverged || matches!(a, Outcome::Broken(_)) {
            self.reset().await;
        }
        verdict
    }

    fn record(
        &mut self,
        seed: u64,
        index: usize,
        stmt: &Stmt,
        what: &str,
        known: &[(String, String)],
    ) {
        let known = known
            .iter()
            .find(|(_, pattern)| known_match(stmt, pattern))
            .map(|(label, _)| label.clone());
        let mut what = what.to_owned();
        if self.since_check.len() > 1 && what.starts_with("tables") {
            what.push_str(&format!(
                "\nstatements since the last check: {}",
                self.since_check.join(" ;; ")
            ));
        }
        let params = match (&stmt.kind, stmt.params.is_empty()) {
            (Kind::CopyIn(data), _) => format!("COPY data {data:?}"),
            (_, true) => String::new(),
            (_, false) => format!("{:?}", stmt.params),
        };
        let difference = Difference {
            seed,
            index,
            class: stmt.class,
            mode: stmt.mode,
            sql: stmt.sql.clone(),
            params,
            what,
            known,
        };
        if self.differences.len() < 400 {
            println!("{difference}");
        }
        self.differences.push(difference);
    }

    /// After a write: no plaintext in A's PII columns, and A read through pgcloak holds
    /// what B holds. Some(why) when not.
    async fn check_tables(&mut self) -> Option<String> {
        match self.a_direct.query_one(PLAINTEXT_AT_REST, &[]).await {
            Ok(row) => {
                let n: i64 = row.get(0);
                if n > 0 {
                    return Some(format!(
                        "tables: PLAINTEXT AT REST: {n} PII values in A are not envelopes"
                    ));
                }
            }
            // A's session holds a lock (an open transaction): checked once it ends.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                return None
            }
            Err(e) => {
                let why = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_owned());
                return Some(format!("tables: the at-rest check failed in A: {why}"));
            }
        }
        let sql: String = TABLES
            .iter()
            .map(|t| format!("SELECT * FROM {t} ORDER BY id;"))
            .collect();
        let a = runner::simple(&self.a, &sql).await;
        let b = runner::simple(&self.b, &sql).await;
        match (a, b) {
            (Ok(x), Ok(y)) => match same_sets(&x, &y, true) {
                Ok(()) => {
                    self.since_check.clear();
                    None
                }
                Err(why) => Some(format!(
                    "tables: A through pgcloak and B differ after this statement: {why}\npgcloak: {}\ndirect:  {}",
                    Outcome::Ok(x).short(),
                    Outcome::Ok(y).short()
                )),
            },
            // Both in a failed transaction: compared after it ends.
            (Err(x), Err(y)) if x.code() == y.code() => None,
            (x, y) => Some(format!(
                "tables: reading them failed on one side only: pgcloak {:?}, direct {:?}",
                x.err().map(|e| e.to_string()),
                y.err().map(|e| e.to_string())
            )),
        }
    }
}
