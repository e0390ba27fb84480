//! COPY on PII tables: field plans, options, one COPY per direction.

use super::*;

#[test]
fn copy_from_stdin_plans_the_fields() {
    let copy = plan("COPY users (id, email, nick) FROM STDIN WITH (FORMAT csv, HEADER true)")
        .copy_in
        .clone()
        .unwrap();
    assert_eq!(copy.options.format, CopyFormat::Csv);
    assert!(copy.options.header);
    let fields: Vec<Option<String>> = copy
        .fields
        .iter()
        .map(|f| f.as_ref().map(|c| c.to_string()))
        .collect();
    assert_eq!(fields, [None, Some("public.users.email".into()), None]);
    assert!(refused("COPY users (email) FROM STDIN WITH (FORMAT binary)").contains("binary"));
    assert!(refused("COPY users FROM STDIN").contains("must name its columns"));
    let out = plan("COPY users TO STDOUT");
    assert!(out.copy_in.is_none());
    assert_eq!(out.copy_out, Some(CopyOptions::default()));
    let out = plan("COPY (SELECT email FROM users) TO STDOUT (FORMAT csv)");
    assert_eq!(
        out.copy_out.as_ref().map(|o| o.format),
        Some(CopyFormat::Csv)
    );
    assert!(refused("COPY users TO STDOUT (FORMAT binary)").contains("binary"));
}

/// The session follows one COPY per direction per query string: a COPY of a PII table
/// beside another COPY in the same direction is refused (the other's data would be taken
/// for it, and its own passed in clear).
#[test]
fn a_pii_copy_must_be_the_only_copy_of_its_direction_in_the_string() {
    for sql in [
        "COPY plain FROM STDIN; COPY users (email) FROM STDIN",
        "COPY users (email) FROM STDIN; COPY users (first_name) FROM STDIN",
        "COPY users TO STDOUT; COPY plain TO STDOUT",
    ] {
        let msg = refused(sql);
        assert!(msg.contains("the only COPY"), "{sql}: {msg}");
    }
    assert!(
        plan("BEGIN; COPY users (email) FROM STDIN; COPY users TO STDOUT; COMMIT")
            .copy_in
            .is_some()
    );
    assert_eq!(
        analyze("COPY a FROM STDIN; COPY b FROM STDIN", &policy()),
        Analysis::Plain
    );
}

/// COPY FROM options that would change how a PII field is read are refused.
#[test]
fn copy_options_pgcloak_does_not_implement_are_refused_on_pii_fields() {
    for sql in [
        "COPY users (email, first_name) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (first_name))",
        "COPY users (email, first_name) FROM STDIN (FORMAT csv, FORCE_NULL (email))",
        "COPY users (email) FROM STDIN WITH CSV FORCE NOT NULL email",
        "COPY users (email) FROM STDIN (ENCODING 'LATIN1')",
    ] {
        let msg = refused(sql);
        assert!(
            msg.contains("public.users.email") || msg.contains("public.users.first_name"),
            "{sql}: {msg}"
        );
    }
    assert!(
        plan("COPY users (email, nick) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (nick))")
            .copy_in
            .is_some()
    );
    assert!(plan("COPY users (email) FROM STDIN (ENCODING 'UTF8')")
        .copy_in
        .is_some());
}
