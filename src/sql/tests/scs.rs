//! Strings whose lexing depends on standard_conforming_strings.

use super::*;

#[test]
fn plans_say_when_lexing_depends_on_standard_conforming_strings() {
    assert!(plan(r"INSERT INTO users (email) VALUES ('v\tx')").lexing_depends_on_scs);
    assert!(!plan(r"INSERT INTO users (email) VALUES (E'v\tx')").lexing_depends_on_scs);
    assert!(!plan("INSERT INTO users (email) VALUES ('v')").lexing_depends_on_scs);
    // Standard lexing sees one SELECT of a literal; with the setting off Postgres would run
    // the INSERT: not plain, so the session can refuse it.
    let hidden = r"SELECT 'x\'; INSERT INTO users (email) VALUES (''p''); --'";
    match analyze(hidden, &policy()) {
        Analysis::Plan(plan) => assert!(plan.lexing_depends_on_scs),
        Analysis::Refused(_) => {}
        Analysis::Plain => panic!("{hidden}: passed as plain"),
    }
    assert!(plan(r"SELECT 'users\'").lexing_depends_on_scs);
    refusals(&[
        (
            r"SELECT 'a\'; INSERT INTO users (email) VALUES ('p')",
            "standard_conforming_strings",
        ),
        (
            r"INSERT INTO users (email) VALUES ('a'); SELECT 'b\c'",
            "standard_conforming_strings",
        ),
    ]);
    assert_eq!(analyze(r"SELECT 'a\b'", &policy()), Analysis::Plain);
}
