//! Names through subqueries, CTEs and LATERAL; comparisons with subquery results; INSERT ... SELECT.

use super::*;

/// A name means what Postgres binds it to: columns of subqueries in FROM, CTEs and
/// LATERAL items carry their PII column with them (so a search on them is encrypted, or
/// refused on a randomized column); a bare name inside a subquery over another table is
/// refused when it may be that table's plain column or an outer PII column; a name
/// qualified by another table is plain.
#[test]
fn names_resolve_through_subqueries_ctes_and_lateral() {
    for (sql, literals, params) in [
        ("SELECT x.e FROM (SELECT email AS e FROM users) x WHERE x.e = 'a'", 1, 0),
        ("SELECT * FROM (SELECT * FROM users) x WHERE x.email = 'a'", 1, 0),
        ("SELECT * FROM (SELECT id, email FROM users) x(a, b) WHERE b = 'q'", 1, 0),
        ("WITH x AS (SELECT email FROM users) SELECT * FROM x WHERE email = 'a'", 1, 0),
        ("WITH x(e) AS (SELECT email FROM users) SELECT * FROM x WHERE e IN ('a', 'b')", 2, 0),
        ("SELECT * FROM users u, LATERAL (SELECT u.email AS e) l WHERE l.e = 'a'", 1, 0),
        // SQLAlchemy's subquery shape.
        ("SELECT anon_1.users_email FROM (SELECT users.email AS users_email FROM users WHERE users.email = $1) AS anon_1 WHERE anon_1.users_email = $2", 0, 2),
        ("SELECT * FROM users u WHERE u.email = ANY(SELECT email FROM users)", 0, 0),
        ("SELECT email AS e, count(*) FROM users GROUP BY e ORDER BY 2", 0, 0),
        ("SELECT id, email FROM users ORDER BY 1", 0, 0),
        ("SELECT * FROM users WHERE email = (SELECT email FROM users WHERE id = $1)", 0, 0),
        // Plain columns of other tables, whatever their name.
        ("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders o WHERE o.email = 'x')", 0, 0),
        ("SELECT lower(email) FROM orders WHERE id IN (SELECT id FROM users)", 0, 0),
        ("SELECT * FROM users u JOIN (SELECT user_id, email FROM orders) o ON o.user_id = u.id WHERE o.email = 'x'", 0, 0),
        ("UPDATE users SET nick = 'x' FROM orders o WHERE o.email = 'y' AND users.id = o.user_id", 0, 0),
        // A ciphertext copied within its own column (FROM items are in reach of SET).
        ("UPDATE users SET email = x.e FROM (SELECT email AS e FROM users WHERE id = 2) x WHERE users.id = 1", 0, 0),
        ("COPY (SELECT x.e FROM (SELECT email AS e FROM users) x WHERE x.e = 'a') TO STDOUT", 1, 0),
        ("WITH users AS (SELECT 1 AS email) SELECT * FROM users WHERE email = 'a'", 0, 0),
        ("INSERT INTO users AS u (email) VALUES ('a') ON CONFLICT (email) DO UPDATE SET first_name = 'b' WHERE u.email = 'c'", 3, 0),
        // A join under an alias shows its tables' columns; a function's columns are plain.
        ("SELECT j.email FROM (users u JOIN billing.cards c ON c.user_id = u.id) AS j WHERE j.email = 'a'", 1, 0),
        ("SELECT x.email FROM unnest(ARRAY['a']) AS x(email), users WHERE x.email = 'b'", 0, 0),
    ] {
        let plan = plan(sql);
        assert_eq!((plan.literals.len(), plan.params.len()), (literals, params), "{sql}");
    }
    assert_eq!(
        literals("SELECT x.e FROM (SELECT email AS e FROM users) x WHERE x.e = 'a'"),
        [lit("'a'", "a", "public.users.email")]
    );
    for (sql, message) in [
        ("SELECT x.e FROM (SELECT first_name AS e FROM users) x WHERE x.e = 'a'", "randomized"),
        ("WITH x AS (SELECT first_name AS e FROM users) SELECT * FROM x WHERE e = 'a'", "randomized"),
        ("SELECT e FROM (SELECT email AS e FROM users) x ORDER BY e", "ORDER BY public.users.email"),
        // Output columns by alias or position.
        ("SELECT email AS e FROM users ORDER BY e", "ORDER BY public.users.email"),
        ("SELECT id, email FROM users ORDER BY 2", "ORDER BY public.users.email"),
        ("SELECT * FROM users ORDER BY 1", "at a position pgcloak does not know; name the column"),
        ("SELECT email FROM users UNION ALL SELECT email FROM users ORDER BY 1", "ORDER BY public.users.email"),
        ("SELECT first_name AS f, count(*) FROM users GROUP BY f", "GROUP BY on public.users.first_name"),
        ("SELECT first_name, count(*) FROM users GROUP BY 1", "GROUP BY on public.users.first_name"),
        ("SELECT lower(x.e) FROM (SELECT email AS e FROM users) x", "public.users.email"),
        ("SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE email = 'x')", "qualify it"),
        ("SELECT * FROM public.users AS u(a, b, c)", "by position"),
        ("SELECT * FROM (SELECT * FROM users) x(a, b)", "by position"),
        ("SELECT * FROM (users u JOIN billing.cards c ON c.user_id = u.id) AS j(a, b)", "by position"),
        ("SELECT 1 FROM (users u JOIN billing.cards c ON c.user_id = u.id) AS j WHERE j.holder = 'a'", "randomized"),
        ("SELECT x.e FROM (SELECT first_name AS e FROM users UNION ALL SELECT holder FROM billing.cards) x", "mixes values"),
    ] {
        let msg = refused(sql);
        assert!(msg.contains(message), "{sql}: {msg}");
    }
}

/// A plain value compared with what a subquery selects from a PII column, set operations
/// that compare rows, joins on column names and subqueries inside expressions.
#[test]
fn comparisons_with_encrypted_subquery_results_and_rows_are_checked() {
    for sql in [
        "SELECT id FROM users WHERE nick IN (SELECT email FROM users)",
        "SELECT id FROM users WHERE nick = (SELECT email FROM users LIMIT 1)",
        "SELECT id FROM users WHERE nick = ANY(SELECT email FROM users)",
        "SELECT id FROM users WHERE email IN (SELECT nick FROM users)",
        "SELECT id FROM users WHERE email IN (SELECT holder FROM billing.cards)",
        "SELECT email FROM users UNION SELECT nick FROM users",
        "SELECT email FROM users INTERSECT SELECT 'a'",
        "SELECT first_name FROM users UNION SELECT first_name FROM users",
        "SELECT * FROM users UNION SELECT * FROM users",
        "SELECT * FROM users JOIN contacts USING (email)",
        "SELECT * FROM users a JOIN users b USING (first_name)",
        "SELECT * FROM users NATURAL JOIN contacts",
        "SELECT ARRAY(SELECT email FROM users)",
        "SELECT coalesce((SELECT email FROM users LIMIT 1), 'none')",
        "SELECT DISTINCT * FROM users",
    ] {
        refused(sql);
    }
    for sql in [
        "SELECT email FROM users UNION SELECT email FROM users",
        "SELECT email FROM users EXCEPT SELECT email FROM users WHERE id = 1",
        "SELECT first_name FROM users UNION ALL SELECT holder FROM billing.cards",
        "SELECT * FROM users a JOIN users b USING (email)",
        "SELECT (SELECT email FROM users LIMIT 1) AS e",
        "SELECT CASE WHEN EXISTS (SELECT * FROM users) THEN 1 END",
        "SELECT * FROM users WHERE nick IN (SELECT nick FROM users)",
        "WITH RECURSIVE r AS (SELECT email FROM users UNION ALL SELECT email FROM r) SELECT * FROM r",
    ] {
        plan(sql);
    }
}

/// A query whose result is stored elsewhere (CREATE TABLE AS, SELECT INTO, INSERT ...
/// SELECT, also from a CTE) may not carry a PII column: the copy would be ciphertext
/// outside the policy, where searches silently miss.
#[test]
fn pii_is_not_copied_out_of_the_policy_by_sql() {
    for sql in [
        "CREATE TABLE t AS SELECT * FROM users",
        "SELECT * INTO t2 FROM users",
        "SELECT email INTO TEMP t3 FROM users",
        "INSERT INTO archive (note) SELECT email FROM users",
        "INSERT INTO users (nick) SELECT email FROM users",
        "WITH x AS (DELETE FROM users WHERE id = 1 RETURNING email) INSERT INTO archive (email) SELECT email FROM x",
    ] {
        let msg = refused(sql);
        assert!(msg.contains("would receive public.users.email as ciphertext"), "{sql}: {msg}");
    }
    for sql in [
        "CREATE TABLE t AS SELECT id, nick FROM users WHERE email = 'a'",
        "INSERT INTO archive (id) SELECT id FROM users WHERE email = $1",
        "WITH x AS (DELETE FROM users WHERE id = 1 RETURNING id) INSERT INTO archive (id) SELECT id FROM x",
    ] {
        plan(sql);
    }
}

/// INSERT ... SELECT into PII columns: literals and parameters of the select list are
/// encrypted like VALUES (the insert-if-absent idiom), a column sharing the target's key
/// and mode is copied as ciphertext; anything else is refused.
#[test]
fn insert_select_binds_literals_and_copies_within_a_key() {
    for (sql, literals, params) in [
        ("INSERT INTO users (email) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = $1)", 0, 1),
        ("INSERT INTO users (email, nick) SELECT 'x', 'y'", 1, 0),
        ("INSERT INTO billing.cards (user_id, holder) SELECT id, $2 FROM users WHERE email = $1", 0, 2),
        ("INSERT INTO users (email, first_name) SELECT email, first_name FROM users WHERE id = $1", 0, 0),
    ] {
        let plan = plan(sql);
        assert_eq!((plan.literals.len(), plan.params.len()), (literals, params), "{sql}");
    }
    assert_eq!(
        params(
            "INSERT INTO billing.cards (user_id, holder) SELECT id, $2 FROM users WHERE email = $1"
        ),
        [
            (1, "public.users.email".into(), false),
            (2, "billing.cards.holder".into(), false)
        ]
    );
    for sql in [
        "INSERT INTO users (email) SELECT nick FROM users",
        "INSERT INTO users (first_name) SELECT last_name FROM users",
        "INSERT INTO users (email) SELECT lower($1)",
        "INSERT INTO users (email) SELECT * FROM users",
        "WITH x AS (SELECT $1::text AS e) INSERT INTO users (email) SELECT e FROM x",
        "INSERT INTO users (email) SELECT $1 UNION SELECT $2",
    ] {
        let msg = refused(sql);
        assert!(
            msg.contains("INSERT ... SELECT into public.users."),
            "{sql}: {msg}"
        );
    }
}
