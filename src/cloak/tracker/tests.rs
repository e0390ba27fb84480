//! The tracker fed the message sequences that made pgcloak's view of a session drift from
//! the server's: rejected and skipped requests, pipelines with errors, FunctionCall, DDL.

use std::collections::BTreeMap;

use super::*;
use crate::policy::ColumnId;
use crate::sql::ParamSlot;

/// The catalog generation of these tests (no DDL elsewhere, no time passing).
const G: Generation = Generation { ddl: 0, epoch: 0 };

fn pii_plan() -> Option<Arc<StatementPlan>> {
    let column = ColumnId {
        schema: "public".into(),
        table: "users".into(),
        column: "email".into(),
    };
    let mut params = BTreeMap::new();
    params.insert(
        1,
        ParamSlot {
            column: Arc::new(column),
            array: false,
            declared: None,
        },
    );
    Some(Arc::new(StatementPlan {
        params,
        ..StatementPlan::default()
    }))
}

fn encrypts(t: &Tracker, name: &str) -> Result<bool, AmbiguousStatement> {
    t.bind_params(name)
        .map(|plan| plan.is_some_and(|p| !p.params.is_empty()))
}

/// Server messages in order, each with an empty body unless it needs one.
fn server(t: &mut Tracker, tags: &[u8]) -> Vec<Owner> {
    tags.iter()
        .map(|&tag| {
            let message = Backend::from_tag(tag);
            let body: &[u8] = match message {
                Backend::CommandComplete => b"SELECT 1\0",
                Backend::ReadyForQuery => b"I",
                Backend::RowDescription => b"\0\0", // no fields
                Backend::DataRow => b"\0\0",
                _ => b"",
            };
            t.received(message, Some(body))
        })
        .collect()
}

/// A session with statement `s1` (binding a PII parameter) confirmed.
fn with_pii_statement() -> Tracker {
    let mut t = Tracker::default();
    t.received(Backend::ReadyForQuery, Some(b"I")); // the startup's
    t.sent_parse("s1", pii_plan());
    t.sent_sync();
    server(&mut t, b"1Z");
    assert!(t.idle());
    t
}

#[test]
fn rejected_reparse_keeps_the_old_statement() {
    let mut t = with_pii_statement();
    t.sent_parse("s1", None); // Postgres answers 42P05
    t.sent_sync();
    // Bound before the answer: the re-Parse of a live name cannot succeed.
    assert_eq!(encrypts(&t, "s1"), Ok(true));
    server(&mut t, b"EZ");
    assert_eq!(encrypts(&t, "s1"), Ok(true));
    assert!(t.idle());
}

#[test]
fn close_skipped_after_an_error_keeps_the_statement() {
    let mut t = with_pii_statement();
    t.sent_parse("bad", None);
    t.sent_close(true, "s1");
    t.sent_sync();
    // Unanswered: the Close runs only if the Parse before it succeeds.
    assert_eq!(encrypts(&t, "s1"), Ok(true));
    server(&mut t, b"EZ");
    assert_eq!(encrypts(&t, "s1"), Ok(true));
}

#[test]
fn confirmed_close_removes_the_statement() {
    let mut t = with_pii_statement();
    t.sent_close(true, "s1");
    t.sent_sync();
    server(&mut t, b"3Z");
    assert_eq!(encrypts(&t, "s1"), Ok(false));
    assert!(t.statement("s1").is_none());
}

#[test]
fn reparse_after_unanswered_close_is_ambiguous() {
    let mut t = with_pii_statement();
    t.sent_parse("x", None);
    t.sent_close(true, "s1");
    t.sent_sync();
    t.sent_parse("s1", None);
    t.sent_sync();
    // If the first batch fails, s1 is the PII statement; if not, the plain one.
    assert_eq!(encrypts(&t, "s1"), Err(AmbiguousStatement));
    server(&mut t, b"13Z1Z");
    assert_eq!(encrypts(&t, "s1"), Ok(false));
}

#[test]
fn same_batch_parse_and_bind_use_the_new_statement() {
    let mut t = Tracker::default();
    t.sent_parse("", pii_plan());
    assert_eq!(encrypts(&t, ""), Ok(true));
    t.sent_bind("", "");
    t.sent_execute("");
    t.sent_sync();
    t.sent_parse("", None);
    assert_eq!(encrypts(&t, ""), Ok(false));
}

#[test]
fn skipped_unnamed_parse_leaves_the_old_unnamed_statement() {
    let mut t = Tracker::default();
    t.sent_parse("", pii_plan());
    t.sent_sync();
    server(&mut t, b"1Z");
    // A batch whose first message fails: the unnamed re-Parse after it is skipped.
    t.sent_execute("nonexistent");
    t.sent_parse("", None);
    t.sent_sync();
    assert_eq!(encrypts(&t, ""), Err(AmbiguousStatement));
    server(&mut t, b"EZ");
    assert_eq!(encrypts(&t, ""), Ok(true));
}

#[test]
fn error_mid_pipeline_discards_until_sync() {
    let mut t = Tracker::default();
    t.sent_parse("a", None);
    t.sent_bind("", "a");
    t.sent_execute("");
    t.sent_parse("b", pii_plan());
    t.sent_sync();
    t.sent_parse("c", None);
    t.sent_sync();
    server(&mut t, b"12EZ1Z");
    assert!(t.statement("a").is_some());
    assert!(t.statement("b").is_none(), "skipped after the error");
    assert!(t.statement("c").is_some());
    assert!(t.idle());
}

#[test]
fn messages_after_an_error_before_sync_expect_no_reply() {
    let mut t = Tracker::default();
    t.sent_execute("nope");
    server(&mut t, b"E");
    assert!(t.skipping());
    t.sent_parse("late", pii_plan()); // the server discards it
    t.sent_bind("", "late");
    assert_eq!(t.replies_due(), 0);
    t.sent_sync();
    server(&mut t, b"Z");
    assert!(t.idle());
    assert!(t.statement("late").is_none());
}

#[test]
fn function_call_is_answered_before_the_catalog() {
    let mut t = Tracker::default();
    t.sent_function_call();
    assert!(t.wants_catalog(G));
    t.sent_catalog(G);
    t.sent_query();
    assert_eq!(server(&mut t, b"VZ"), [Owner::Client, Owner::Client]);
    assert_eq!(
        server(&mut t, b"TDCZ"),
        [
            Owner::Catalog,
            Owner::Catalog,
            Owner::Catalog,
            Owner::Catalog
        ]
    );
    assert!(t.columns().is_some());
    assert_eq!(server(&mut t, b"TDCZ"), [Owner::Client; 4]);
    assert!(t.idle());
}

#[test]
fn catalog_is_injected_only_between_batches() {
    let mut t = Tracker::default();
    assert!(t.wants_catalog(G));
    t.sent_parse("", pii_plan());
    assert!(!t.wants_catalog(G), "inside an extended batch");
    t.sent_bind("", "");
    t.sent_flush();
    assert!(!t.wants_catalog(G));
    t.sent_sync();
    assert!(t.wants_catalog(G), "after Sync, even unanswered");
    t.sent_catalog(G);
    assert!(!t.wants_catalog(G), "already requested");
    server(&mut t, b"12Z");
    assert_eq!(server(&mut t, b"TCZ"), [Owner::Catalog; 3]);
    assert!(t.columns().is_some());
}

#[test]
fn catalog_skipped_after_an_error_is_requested_again() {
    let mut t = Tracker::default();
    t.sent_execute("nope");
    t.sent_catalog(G); // (the cloak never does this mid-batch; the tracker still copes)
    t.sent_sync();
    server(&mut t, b"EZ");
    assert!(matches!(t.catalog(), Catalog::Unknown));
    assert!(t.idle());
}

#[test]
fn failed_catalog_stays_unknown_and_is_retried_a_few_times() {
    let mut t = Tracker::default();
    for _ in 0..CATALOG_ATTEMPTS {
        assert!(t.wants_catalog(G));
        t.sent_catalog(G);
        server(&mut t, b"EZ");
        assert!(t.columns().is_none());
    }
    assert!(!t.wants_catalog(G));
}

#[test]
fn ddl_completion_invalidates_the_column_map() {
    let mut t = Tracker::default();
    t.sent_catalog(G);
    server(&mut t, b"TCZ");
    assert!(t.columns().is_some());
    t.sent_query();
    t.received(Backend::CommandComplete, Some(b"DROP TABLE\0"));
    assert!(t.columns().is_none());
    t.received(Backend::CommandComplete, Some(b"CREATE TABLE\0"));
    server(&mut t, b"Z");
    assert!(t.wants_catalog(G));
}

#[test]
fn deallocate_makes_statements_uncertain() {
    let mut t = with_pii_statement();
    t.sent_query();
    t.received(Backend::CommandComplete, Some(b"DEALLOCATE\0"));
    server(&mut t, b"Z");
    // s1 may be gone: a new Parse of s1 may succeed, so a Bind after it is ambiguous.
    t.sent_parse("s1", None);
    t.sent_sync();
    assert_eq!(encrypts(&t, "s1"), Err(AmbiguousStatement));
    server(&mut t, b"1Z");
    assert_eq!(encrypts(&t, "s1"), Ok(false));
}

#[test]
fn discard_all_forgets_statements() {
    let mut t = with_pii_statement();
    t.sent_query();
    t.received(Backend::CommandComplete, Some(b"DISCARD ALL\0"));
    server(&mut t, b"Z");
    assert!(t.statement("s1").is_none());
}

#[test]
fn simple_query_drops_the_unnamed_statement() {
    let mut t = Tracker::default();
    t.sent_parse("", pii_plan());
    t.sent_sync();
    server(&mut t, b"1Z");
    t.sent_query();
    server(&mut t, b"CZ");
    assert!(t.statement("").is_none());
}

#[test]
fn copy_inside_an_extended_batch() {
    let mut t = Tracker::default();
    t.sent_parse("", pii_plan());
    t.sent_bind("", "");
    t.sent_execute("");
    // CopyInResponse, then the client's CopyData/CopyDone (no replies of their own).
    assert_eq!(server(&mut t, b"12G"), [Owner::Client; 3]);
    t.sent_sync();
    server(&mut t, b"CZ");
    assert!(t.idle());
}

#[test]
fn executes_are_described_by_their_statement() {
    let mut t = Tracker::default();
    t.sent_catalog(G);
    server(&mut t, b"TCZ");
    t.sent_parse("s", None);
    t.sent_describe(true, "s");
    t.sent_sync();
    server(&mut t, b"1tTZ");
    assert!(t.statement("s").is_some_and(|s| s.columns.is_some()));
    t.sent_bind("p", "s");
    t.sent_execute("p");
    t.sent_sync();
    server(&mut t, b"2");
    assert!(t.result_columns().is_some(), "rows of p follow");
    server(&mut t, b"DsZ");
    assert!(t.result_columns().is_none());
}

#[test]
fn ten_thousand_statements_leave_nothing_behind() {
    let mut t = Tracker::default();
    for i in 0..10_000 {
        t.sent_parse("", if i % 2 == 0 { pii_plan() } else { None });
        t.sent_bind("", "");
        t.sent_describe(false, "");
        t.sent_execute("");
        t.sent_sync();
        if i % 100 == 99 {
            t.sent_query();
        }
        server(&mut t, b"12nCZ");
        if i % 100 == 99 {
            server(&mut t, b"CZ");
        }
        assert!(t.idle(), "statement {i}");
    }
    assert!(t.statements.len() <= 1);
    assert!(t.portals.len() <= 1);
}

#[test]
fn parameter_status_follows_the_server() {
    let mut t = Tracker::default();
    assert!(t.params.standard_conforming_strings);
    t.received(
        Backend::ParameterStatus,
        Some(b"standard_conforming_strings\0off\0"),
    );
    assert!(!t.params.standard_conforming_strings);
    t.received(Backend::ParameterStatus, Some(b"client_encoding\0LATIN1\0"));
    assert_eq!(t.params.foreign_encoding.as_deref(), Some("LATIN1"));
    t.received(Backend::ParameterStatus, Some(b"client_encoding\0UTF8\0"));
    assert_eq!(t.params.foreign_encoding, None);
}

#[test]
fn sync_sent_during_copy_in_gets_no_reply() {
    let mut t = Tracker::default();
    t.sent_bind("", "");
    t.sent_execute("");
    t.sent_sync(); // tokio-postgres: before the COPY data; ignored in copy-in mode
    server(&mut t, b"2G");
    t.sent_copy_end();
    t.sent_sync();
    server(&mut t, b"CZ");
    assert!(t.idle(), "{:?}", t.due);
    t.sent_query();
    server(&mut t, b"GCZ");
    assert!(t.idle());
}

#[test]
fn failed_unnamed_parse_drops_the_unnamed_statement() {
    // Found writing fuzz/session_tracker's server model: Postgres drops the unnamed
    // statement before it parses the new one, so a failed unnamed Parse leaves none.
    let mut t = Tracker::default();
    t.sent_parse("", pii_plan());
    t.sent_sync();
    server(&mut t, b"1Z");
    t.sent_parse("", None);
    t.sent_sync();
    server(&mut t, b"EZ");
    assert!(t.statement("").is_none());
    assert!(t.idle());
}

#[test]
fn catalog_query_keeps_the_unnamed_statement() {
    // Found writing fuzz/session_tracker's server model: a simple Query drops the unnamed
    // statement, so the catalog query runs in a named one of its own.
    let mut t = Tracker::default();
    t.sent_parse("", pii_plan());
    t.sent_sync();
    server(&mut t, b"1Z");
    t.sent_catalog(G);
    t.sent_parse("s1", pii_plan());
    assert_eq!(encrypts(&t, ""), Ok(true));
    t.sent_sync();
    assert_eq!(server(&mut t, b"33"), [Owner::Catalog; 2]);
    assert_eq!(server(&mut t, b"12DC33Z"), [Owner::Catalog; 7]);
    assert!(t.columns().is_some());
    server(&mut t, b"1Z");
    assert!(t.statement("").is_some());
    assert!(t.statement("s1").is_some());
}

#[test]
fn catalog_waits_while_the_client_uses_its_name() {
    let mut t = Tracker::default();
    t.sent_parse(crate::cloak::catalog::STATEMENT, pii_plan());
    t.sent_sync();
    assert!(!t.wants_catalog(G), "its Parse is still due");
    server(&mut t, b"1Z");
    assert!(!t.wants_catalog(G), "the client holds the name");
    t.sent_close(true, crate::cloak::catalog::STATEMENT);
    t.sent_sync();
    server(&mut t, b"3Z");
    assert!(t.wants_catalog(G));
}

#[test]
fn copy_end_sent_outside_a_copy_is_not_counted_for_the_next() {
    // Found by fuzz/session_tracker: a CopyFail the server drops (no COPY in progress)
    // made the tracker wait for a ReadyForQuery to a Sync the next COPY ignores.
    let mut t = Tracker::default();
    t.sent_copy_end();
    t.sent_query(); // COPY users FROM STDIN
    t.sent_sync(); // ignored by the server in copy-in mode
    server(&mut t, b"G");
    t.sent_copy_end();
    server(&mut t, b"CZ");
    assert!(t.idle(), "{:?}", t.due);
}

#[test]
fn each_copy_of_a_query_ends_at_its_own_copy_end() {
    let mut t = Tracker::default();
    t.sent_query(); // COPY a FROM STDIN; COPY b FROM STDIN
    server(&mut t, b"G");
    t.sent_sync();
    t.sent_copy_end();
    server(&mut t, b"CG");
    t.sent_sync();
    t.sent_copy_end();
    server(&mut t, b"CZ");
    assert!(t.idle(), "{:?}", t.due);
}

#[test]
fn a_copy_out_is_answered_for_its_own_request() {
    let mut t = Tracker::default();
    t.sent_query(); // a plain COPY
    t.sent_query_planned(pii_plan());
    server(&mut t, b"H");
    assert!(t.answering_plan().is_none(), "the plain COPY's answer");
    server(&mut t, b"dcCZ");
    server(&mut t, b"H");
    assert!(t.answering_plan().is_some(), "the planned COPY's answer");
    server(&mut t, b"cCZ");
    assert!(t.answering_plan().is_none());
    // Extended: the executing portal's statement's plan.
    t.sent_parse("c", pii_plan());
    t.sent_bind("", "c");
    t.sent_execute("");
    t.sent_sync();
    server(&mut t, b"12H");
    assert!(t.answering_plan().is_some());
}

#[test]
fn a_map_of_an_older_generation_is_read_again() {
    let mut t = Tracker::default();
    for epoch in 0..(CATALOG_ATTEMPTS as u64 + 3) {
        let now = Generation { ddl: 0, epoch };
        assert!(t.wants_catalog(now), "epoch {epoch}");
        t.sent_catalog(now);
        assert!(!t.wants_catalog(now), "requested");
        server(&mut t, b"3312DC33Z");
        assert!(t.columns().is_some());
        assert!(!t.wants_catalog(now), "known for this generation");
    }
    // Another session's committed DDL: the map is still used until it is read again.
    let later = Generation { ddl: 1, epoch: 0 };
    assert!(t.wants_catalog(later));
    assert!(t.columns().is_some());
}

#[test]
fn ddl_is_reported_committed_at_the_next_idle_ready_for_query() {
    let mut t = Tracker::default();
    t.sent_query(); // BEGIN; CREATE TABLE ...
    t.received(Backend::CommandComplete, Some(b"BEGIN\0"));
    assert!(!t.awaits_commit());
    t.received(Backend::CommandComplete, Some(b"CREATE TABLE\0"));
    assert!(t.awaits_commit());
    assert!(t.wants_catalog(G), "this session's DDL: read again");
    t.received(Backend::ReadyForQuery, Some(b"T"));
    assert!(!t.take_ddl_committed(), "not committed yet");
    t.sent_query(); // COMMIT
    t.received(Backend::CommandComplete, Some(b"COMMIT\0"));
    t.received(Backend::ReadyForQuery, Some(b"I"));
    assert!(t.take_ddl_committed());
    assert!(!t.take_ddl_committed(), "reported once");
    assert!(!t.awaits_commit());
}

#[test]
fn only_executed_requests_may_change_settings() {
    let mut t = with_pii_statement();
    t.sent_parse("", pii_plan());
    t.sent_bind("", "");
    t.sent_describe(false, "");
    assert!(
        !t.settings_may_change(),
        "Parse, Bind, Describe change no setting"
    );
    t.sent_execute("");
    assert!(t.settings_may_change(), "the Execute may run a SET");
    t.sent_sync();
    server(&mut t, b"12TCZ");
    assert!(!t.settings_may_change());
    t.sent_query();
    assert!(t.settings_may_change());
    server(&mut t, b"CZ");
    t.sent_function_call();
    assert!(t.settings_may_change());
}
