//! Relations carry their PII columns everywhere: TABLE commands, subqueries, CTEs under
//! aliases, whole-row references; a PII table cannot become the child of a relation the
//! policy does not name; column type changes keep the ciphertext as it is.

use super::*;

#[test]
fn a_pii_table_cannot_become_the_child_of_an_unconfigured_relation() {
    let child = "would become a partition or child of";
    refusals(&[
        (
            "ALTER TABLE p ATTACH PARTITION users DEFAULT",
            "public.users would become a partition or child of p",
        ),
        (
            "ALTER TABLE p ATTACH PARTITION public.users FOR VALUES FROM (1) TO (10)",
            child,
        ),
        (
            "alter table \"p\" attach partition \"users\" default",
            child,
        ),
        (
            "ALTER TABLE other.p ATTACH PARTITION billing.cards DEFAULT",
            "billing.cards would become a partition or child of other.p",
        ),
        (
            "ALTER TABLE users INHERIT parent",
            "public.users would become a partition or child of parent",
        ),
        (
            "ALTER TABLE ONLY billing.cards INHERIT public.parent",
            child,
        ),
        (
            "CREATE TABLE users (id int, email text) INHERITS (p)",
            child,
        ),
        ("CREATE TABLE users () INHERITS (base, other)", child),
        ("CREATE TABLE users PARTITION OF p DEFAULT", child),
        (
            "CREATE TABLE IF NOT EXISTS cards PARTITION OF p FOR VALUES IN (1)",
            "billing.cards would become",
        ),
        // The other direction stays refused.
        (
            "ALTER TABLE users ATTACH PARTITION p DEFAULT",
            "p would be a partition or child of public.users",
        ),
    ]);
    plans(&["ALTER TABLE users NO INHERIT parent"]);
    assert_eq!(
        analyze("ALTER TABLE p DETACH PARTITION users", &policy()),
        Analysis::Plain
    );
    // Parent and child both in the policy: created as usual.
    let policy = Policy::from_yaml(
        &serde_yaml::from_str("users:\n  email: deterministic\np:\n  email: { mode: deterministic, same_key_as: users.email }\n").unwrap(),
    )
    .unwrap();
    for sql in [
        "ALTER TABLE p ATTACH PARTITION users DEFAULT",
        "ALTER TABLE users INHERIT p",
        "CREATE TABLE users (id int, email text) INHERITS (p)",
    ] {
        assert!(matches!(analyze(sql, &policy), Analysis::Plan(_)), "{sql}");
    }
}

#[test]
fn table_commands_read_like_select_star() {
    let copied = "would receive public.users.";
    refusals(&[
        ("CREATE TABLE t AS TABLE users", copied),
        ("create table t as table public.users", copied),
        ("CREATE TABLE t AS (TABLE users)", copied),
        (
            "CREATE TABLE t AS TABLE cards",
            "would receive billing.cards.holder",
        ),
        (
            "CREATE TABLE t AS SELECT 1 AS x UNION ALL TABLE users",
            copied,
        ),
        (
            "CREATE TABLE t AS WITH c AS (SELECT email FROM users) TABLE c",
            copied,
        ),
        // (sqlparser cannot parse this one: refused as unparseable.)
        (
            "INSERT INTO archive TABLE users",
            "names a table with encrypted columns",
        ),
        ("SELECT * INTO t FROM (TABLE users) x", copied),
        (
            "CREATE MATERIALIZED VIEW v AS TABLE users",
            "the view v shows public.users.",
        ),
        (
            "INSERT INTO users (email) TABLE users",
            "INSERT ... SELECT into public.users.email",
        ),
        (
            "SELECT * FROM (TABLE users) x WHERE x.email LIKE 'a%'",
            "public.users.email is encrypted",
        ),
        (
            "SELECT * FROM (TABLE users) x ORDER BY x.email",
            "ORDER BY public.users.email",
        ),
        ("SELECT * FROM users UNION TABLE users", ""),
    ]);
    plans(&["SELECT * FROM (TABLE users) x WHERE x.email = 'a'"]);
    // sqlparser does not parse a lone TABLE command: refused, never passed on.
    refusals(&[("TABLE users", "cannot parse")]);
    assert!(plan("COPY (TABLE users) TO STDOUT").copy_out.is_some());
}

#[test]
fn whole_row_references_to_relations_carrying_pii_are_refused() {
    let whole_row = "whole-row";
    refusals(&[
        ("SELECT t FROM (SELECT email FROM users) t", whole_row),
        ("SELECT row_to_json(t) FROM (SELECT email FROM users) t", whole_row),
        ("SELECT t::text FROM (SELECT email FROM users) t", whole_row),
        ("WITH t AS (SELECT email FROM users) SELECT to_jsonb(t.*) FROM t", whole_row),
        ("SELECT ROW(t.*) FROM (SELECT id, email FROM users) t", whole_row),
        ("WITH c AS (SELECT email FROM users) SELECT x FROM c AS x", whole_row),
        ("WITH c AS (SELECT email FROM users) SELECT json_agg(x) FROM c x", whole_row),
        ("SELECT (SELECT t FROM (SELECT * FROM users) t LIMIT 1)", whole_row),
        ("SELECT y FROM (SELECT x.email FROM (SELECT email FROM users) x) y", whole_row),
        ("SELECT l FROM users u, LATERAL (SELECT u.email) l", whole_row),
        ("SELECT j FROM (users u JOIN billing.cards c ON c.user_id = u.id) AS j", whole_row),
        ("SELECT \"T\" FROM (SELECT email FROM users) \"T\"", whole_row),
        ("SELECT to_json(t) FROM (SELECT first_name AS n FROM users) t", whole_row),
        ("SELECT id FROM orders WHERE (SELECT t::text FROM (SELECT email FROM users) t LIMIT 1) IS NULL", whole_row),
        ("WITH a AS (SELECT email FROM users), b AS (SELECT * FROM a) SELECT b FROM b", whole_row),
        ("INSERT INTO archive (doc) SELECT row_to_json(t) FROM (SELECT email FROM users) t", whole_row),
    ]);
    plans(&[
        "SELECT t.email FROM (SELECT email FROM users) t",
        "SELECT t.* FROM (SELECT email FROM users) t",
        "SELECT t FROM (SELECT id FROM users WHERE email = 'a') t",
    ]);
}

#[test]
fn a_cte_under_an_alias_keeps_its_pii_columns() {
    let email = "public.users.email is encrypted";
    refusals(&[
        ("WITH c AS (SELECT email FROM users) SELECT x.email FROM c AS x WHERE x.email LIKE 'a%'", email),
        ("WITH c AS (SELECT email FROM users) SELECT lower(x.email) FROM c AS x", email),
        ("WITH c AS (SELECT email FROM users) SELECT * FROM c x WHERE x.email > 'a'", email),
        ("WITH c(e) AS (SELECT email FROM users) SELECT x.e FROM c x WHERE x.e LIKE 'a'", email),
        ("WITH c AS (SELECT email FROM users) SELECT x.m FROM c AS x(m) WHERE x.m LIKE 'a'", email),
        ("WITH a AS (SELECT email FROM users), b AS (SELECT y.email FROM a y) SELECT z.email FROM b z ORDER BY z.email", "ORDER BY public.users.email"),
        ("WITH RECURSIVE r AS (SELECT email FROM users UNION ALL SELECT x.email FROM r x WHERE x.email LIKE 'a%') SELECT * FROM r", email),
        ("WITH c AS (SELECT first_name FROM users) SELECT 1 FROM c x WHERE x.first_name = 'a'", "randomized"),
        ("WITH c AS (SELECT email FROM users) SELECT 1 FROM c x JOIN c y ON x.email < y.email", email),
        ("WITH c AS (SELECT email FROM users) UPDATE orders SET note = x.email FROM c x WHERE orders.id = 1", email),
    ]);
    assert_eq!(
        literals(
            "WITH c AS (SELECT email FROM users) SELECT x.email FROM c AS x WHERE x.email = 'a'"
        ),
        [lit("'a'", "a", "public.users.email")]
    );
}

#[test]
fn column_type_changes_keep_the_ciphertext_as_it_is() {
    plans(&[
        "ALTER TABLE users ALTER COLUMN email TYPE text USING email::text",
        "ALTER TABLE users ALTER COLUMN email TYPE varchar USING email",
        "ALTER TABLE users ALTER COLUMN email SET DATA TYPE character varying USING (email)::text",
        "ALTER TABLE \"users\" ALTER COLUMN \"email\" TYPE TEXT USING \"email\"::TEXT",
        "ALTER TABLE public.users ALTER COLUMN first_name TYPE text USING CAST(first_name AS text)",
        "ALTER TABLE users ALTER COLUMN email TYPE text USING NULL",
        "ALTER TABLE users ALTER COLUMN email TYPE text, ALTER COLUMN first_name TYPE text USING first_name::varchar",
        // Django's AlterField and Knex's `t.text('email').alter()`, as they send them.
        "ALTER TABLE \"users\" ALTER COLUMN \"email\" TYPE text USING \"email\"::text",
        "alter table \"users\" alter column \"email\" type text using (\"email\"::text)",
        "alter table \"users\" alter column \"first_name\" drop default",
        "alter table \"users\" alter column \"first_name\" drop not null",
    ]);
    // Knex's `t.string('email', 255).alter()`: the cast would cut long ciphertexts.
    let cut = "USING email::varchar(255) is refused by pgcloak: it would silently cut the ciphertexts of encrypted column public.users.email longer than 255 characters; leave out USING";
    refusals(&[
        ("alter table \"users\" alter column \"email\" type varchar(255) using (\"email\"::varchar(255))", cut),
        ("ALTER TABLE users ALTER COLUMN email TYPE text USING ((email)::character varying(255))", cut),
    ]);
    plans(&["ALTER TABLE users ALTER COLUMN email TYPE varchar(255)"]);
    let computes = "would compute new values of public.users.email";
    refusals(&[
        (
            "ALTER TABLE users ALTER COLUMN email TYPE text USING lower(email)",
            computes,
        ),
        (
            "ALTER TABLE users ALTER COLUMN email TYPE text USING email || ''",
            computes,
        ),
        (
            "ALTER TABLE users ALTER COLUMN email TYPE text USING first_name",
            computes,
        ),
        (
            "ALTER TABLE users ALTER COLUMN email TYPE text USING first_name::varchar(100)",
            computes,
        ),
        (
            "ALTER TABLE users ALTER COLUMN email TYPE text USING 'x@y.z'",
            computes,
        ),
        (
            "ALTER TABLE users ALTER COLUMN email TYPE date USING email::date",
            "declare it as text (or varchar), not date",
        ),
        (
            "ALTER TABLE users ALTER COLUMN nick TYPE text USING email::text",
            "public.users.email is encrypted",
        ),
    ]);
}

#[test]
fn varchar_pii_columns_must_hold_an_envelope() {
    // A one-character value (4 bytes) needs 16 + ⌈4·(4 + 16)/3⌉ = 43 characters in
    // deterministic mode, 16 + ⌈4·(4 + 28)/3⌉ = 59 in randomized mode.
    refusals(&[
        (
            "CREATE TABLE users (id int, email varchar(30))",
            "public.users.email cannot be varchar(30): pgcloak stores each value as an envelope",
        ),
        (
            "CREATE TABLE users (id int, email varchar(42))",
            "needs varchar(43)",
        ),
        (
            "CREATE TABLE users (id int, email varchar(30))",
            "values of up to 30 bytes need varchar(78)",
        ),
        (
            "ALTER TABLE users ALTER COLUMN first_name TYPE varchar(58)",
            "needs varchar(59)",
        ),
        (
            "ALTER TABLE users ADD COLUMN last_name character varying(20)",
            "public.users.last_name cannot be varchar(20)",
        ),
    ]);
    plans(&[
        "CREATE TABLE users (id int, email varchar(43), first_name varchar(59), last_name varchar(255))",
        "ALTER TABLE users ALTER COLUMN first_name TYPE character varying(59)",
        "CREATE TABLE users (id int, nick varchar(5))",
    ]);
}
