//! The allowlist of statement kinds: a kind the walk does not model is refused when it
//! names a PII table, wherever the name stands in it.

use super::*;

#[test]
fn kinds_the_walk_does_not_model_are_refused_when_they_name_a_pii_table() {
    let not_modelled = "pgcloak does not model";
    refusals(&[
        ("CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()", "CREATE TRIGGER statements, and this one names public.users"),
        ("create trigger t after update on public.\"users\" for each row execute procedure f()", "names public.users"),
        ("CREATE OR REPLACE TRIGGER t BEFORE UPDATE ON billing.cards FOR EACH ROW EXECUTE FUNCTION f()", "CREATE TRIGGER statements, and this one names billing.cards"),
        ("CREATE POLICY p ON users USING (email = current_user)", not_modelled),
        ("CREATE POLICY p ON orders USING (EXISTS (SELECT 1 FROM users u WHERE u.id = orders.user_id))", "names public.users"),
        ("ALTER POLICY p ON users USING (true)", not_modelled),
        ("ALTER VIEW v AS SELECT email FROM users", not_modelled),
        ("CALL p((SELECT email FROM users LIMIT 1))", "CALL statements"),
        ("CALL fill(ARRAY(SELECT id FROM Users))", "names public.users"),
        ("CREATE TYPE t AS (u users)", "CREATE TYPE"),
        ("ALTER TRIGGER t ON users RENAME TO t2", not_modelled),
    ]);
}

#[test]
fn kinds_that_only_name_tables_pass_and_mark_a_schema_change() {
    for sql in [
        "DROP TABLE users",
        "DROP TABLE IF EXISTS public.users CASCADE",
        "TRUNCATE users",
        "TRUNCATE TABLE billing.cards RESTART IDENTITY",
        "GRANT SELECT ON users TO app",
        "REVOKE ALL ON TABLE users FROM app",
        "LOCK TABLE users IN ACCESS EXCLUSIVE MODE",
        "COMMENT ON COLUMN users.email IS 'encrypted by pgcloak'",
        "ANALYZE users",
        "CREATE SEQUENCE s OWNED BY users.id",
        "DROP TRIGGER t ON users",
    ] {
        match analyze(sql, &policy()) {
            Analysis::Plan(plan) => assert!(plan.changes_schema, "{sql}"),
            other => panic!("{sql}: expected a plan, got {other:?}"),
        }
    }
    // Names that only contain a configured table's name, and kinds naming nothing.
    for sql in [
        "CREATE TRIGGER t BEFORE INSERT ON users_log FOR EACH ROW EXECUTE FUNCTION f()",
        "DROP TABLE users_archive",
        "DROP INDEX users_email_idx",
        "CREATE POLICY p ON orders USING (note <> 'users')",
        "BEGIN",
    ] {
        assert_eq!(analyze(sql, &policy()), Analysis::Plain, "{sql}");
    }
}

#[test]
fn not_modelled_kinds_beside_modelled_ones_are_refused_too() {
    refusals(&[
        (
            "SELECT 1; CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()",
            "CREATE TRIGGER",
        ),
        (
            "INSERT INTO users (email) VALUES ('a@x'); ALTER VIEW v AS SELECT email FROM users",
            "ALTER VIEW",
        ),
    ]);
}

#[test]
fn every_modelled_kind_is_dispatched_by_the_walk() {
    // One statement of each kind the allowlist calls modelled: none may reach the walk's
    // fail-closed arm.
    let cases = [
        "SELECT email FROM users",
        "INSERT INTO users (email) VALUES ('a')",
        "UPDATE users SET email = 'a'",
        "DELETE FROM users WHERE email = 'a'",
        "MERGE INTO users u USING staging s ON u.id = s.id WHEN MATCHED THEN DELETE",
        "COPY users (email) FROM STDIN",
        "EXPLAIN SELECT email FROM users",
        "DECLARE c CURSOR FOR SELECT email FROM users",
        "PREPARE p AS SELECT email FROM users",
        "CREATE TABLE users (id int, email text)",
        "CREATE VIEW v AS SELECT id FROM users",
        "CREATE INDEX i ON users (email)",
        "ALTER TABLE users ADD COLUMN nick text",
    ];
    for sql in cases {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        assert_eq!(kinds::kind(&statements[0]), kinds::Kind::Modelled, "{sql}");
    }
    plans(&cases);
}
