//! Analysis of whole statements against a small policy.

use super::*;
use crate::crypto::Mode;

mod allowlist;
mod arrays;
mod copy;
mod ddl;
mod depth;
mod escapes;
mod merge;
mod params;
mod queries;
mod relations;
mod scs;
mod searches;
mod typed;

fn policy() -> Policy {
    let yaml = "
users:
  email: deterministic
  first_name: randomized
  last_name: randomized
billing.cards:
  holder: randomized
";
    Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap()
}

fn plan(sql: &str) -> Arc<StatementPlan> {
    match analyze(sql, &policy()) {
        Analysis::Plan(plan) => plan,
        other => panic!("{sql}: expected a plan, got {other:?}"),
    }
}

/// Asserts each statement is refused (0A000) with a message containing its fragment, and
/// that the message quotes none of the statement's literals.
fn refusals(cases: &[(&str, &str)]) {
    refusals_under(&policy(), cases)
}

fn refusals_under(policy: &Policy, cases: &[(&str, &str)]) {
    for (sql, fragment) in cases {
        match analyze(sql, policy) {
            Analysis::Refused(refusal) => {
                assert_eq!(refusal.code, "0A000", "{sql}");
                assert!(
                    refusal.message.contains(fragment),
                    "{sql}: expected {fragment:?} in {:?}",
                    refusal.message
                );
                for literal in quoted_literals(sql) {
                    assert!(
                        !refusal.message.contains(&literal),
                        "{sql}: the message quotes {literal}: {}",
                        refusal.message
                    );
                }
            }
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }
}

/// The '...' literals of a statement of at least 4 characters (`'secret@x'`), quotes included.
fn quoted_literals(sql: &str) -> Vec<String> {
    sql.split('\'')
        .enumerate()
        .filter(|(i, text)| i % 2 == 1 && text.len() >= 4)
        .map(|(_, text)| format!("'{text}'"))
        .collect()
}

/// Asserts each statement is planned (not refused, not plain).
fn plans(cases: &[&str]) {
    for sql in cases {
        plan(sql);
    }
}

fn refused(sql: &str) -> String {
    match analyze(sql, &policy()) {
        Analysis::Refused(refusal) => {
            assert_eq!(refusal.code, "0A000");
            refusal.message
        }
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

/// (literal text in the SQL, its value, its column) for each literal slot.
fn literals(sql: &str) -> Vec<(String, String, String)> {
    plan(sql)
        .literals
        .iter()
        .map(|s| {
            (
                sql[s.range.clone()].to_owned(),
                literal_value(sql, s).unwrap(),
                s.column.to_string(),
            )
        })
        .collect()
}

fn params(sql: &str) -> Vec<(usize, String, bool)> {
    plan(sql)
        .params
        .iter()
        .map(|(n, slot)| (*n, slot.column.to_string(), slot.array))
        .collect()
}

fn lit(text: &str, value: &str, column: &str) -> (String, String, String) {
    (text.into(), value.into(), column.into())
}

#[test]
fn statements_without_pii_tables_are_plain() {
    for sql in [
        "SELECT 1",
        "INSERT INTO orders (email) VALUES ('a@b')",
        "SELECT * FROM users_archive WHERE email LIKE 'a%'",
        "SELECT 'users' AS label",
        "VACUUM ANALYZE orders",
    ] {
        assert_eq!(analyze(sql, &policy()), Analysis::Plain, "{sql}");
    }
}

#[test]
fn insert_literals_and_params_are_found() {
    let sql = "INSERT INTO users (id, email, first_name, nick) VALUES (1, 'a@b.c', E'J\\'o', 'x'), (2, $1, NULL, $2)";
    assert_eq!(
        literals(sql),
        [
            lit("'a@b.c'", "a@b.c", "public.users.email"),
            lit("E'J\\'o'", "J'o", "public.users.first_name"),
        ]
    );
    assert_eq!(params(sql), [(1, "public.users.email".into(), false)]);
}

#[test]
fn insert_with_schema_alias_quotes_casts_and_returning() {
    let sql = "insert into public.\"users\" as u (\"email\", last_name) values ($1::text, 'Ünïcødé'::varchar) returning u.email, last_name as ln";
    assert_eq!(
        literals(sql),
        [lit("'Ünïcødé'", "Ünïcødé", "public.users.last_name")]
    );
    assert_eq!(params(sql), [(1, "public.users.email".into(), false)]);
    let sql = "INSERT INTO billing.cards (holder) VALUES ($$Dollar$$) RETURNING *";
    assert_eq!(
        literals(sql),
        [lit("$$Dollar$$", "Dollar", "billing.cards.holder")]
    );
}

#[test]
fn on_conflict_do_update() {
    let sql = "INSERT INTO users (email, first_name) VALUES ($1, $2) ON CONFLICT (email) DO UPDATE SET first_name = EXCLUDED.first_name, last_name = 'L'";
    assert_eq!(literals(sql), [lit("'L'", "L", "public.users.last_name")]);
    assert_eq!(params(sql).len(), 2);
    plan("INSERT INTO users (email) VALUES ('x') ON CONFLICT DO NOTHING");
    let msg = refused("INSERT INTO users (email, first_name) VALUES ($1, $2) ON CONFLICT (email) DO UPDATE SET first_name = EXCLUDED.last_name");
    assert!(msg.contains("public.users.first_name"), "{msg}");
}

#[test]
fn update_assignments_and_where() {
    let sql = "UPDATE users SET first_name = 'Ann', last_name = $1 WHERE email = 'a@b' AND id = 3";
    assert_eq!(
        literals(sql),
        [
            lit("'Ann'", "Ann", "public.users.first_name"),
            lit("'a@b'", "a@b", "public.users.email"),
        ]
    );
    assert_eq!(params(sql), [(1, "public.users.last_name".into(), false)]);
    plan("UPDATE users SET first_name = NULL, last_name = DEFAULT WHERE id = 1");
}

#[test]
fn equality_search_on_deterministic_columns() {
    let sql = "SELECT id FROM users WHERE email = 'a' OR email IN ('b', $1) OR (email::text = $2)";
    assert_eq!(
        literals(sql),
        [
            lit("'a'", "a", "public.users.email"),
            lit("'b'", "b", "public.users.email")
        ]
    );
    assert_eq!(params(sql).len(), 2);
    assert_eq!(
        params("SELECT * FROM users WHERE email = ANY($1)"),
        [(1, "public.users.email".into(), true)]
    );
    assert_eq!(
        literals("SELECT * FROM users WHERE email = ANY(ARRAY['a', 'b'])"),
        [
            lit("'a'", "a", "public.users.email"),
            lit("'b'", "b", "public.users.email")
        ]
    );
    assert_eq!(
        params("SELECT * FROM users WHERE email = ANY($1::text[])"),
        [(1, "public.users.email".into(), true)]
    );
    refused("SELECT * FROM users WHERE email = ANY($1::int[])");
    let sql = "SELECT * FROM users WHERE email = ANY('{a,\"b c\"}') OR email = ANY(E'{d}'::text[])";
    let slots = plan(sql).literals.clone();
    assert_eq!(
        slots
            .iter()
            .map(|s| (
                &sql[s.range.clone()],
                literal_value(sql, s).unwrap(),
                s.array
            ))
            .collect::<Vec<_>>(),
        [
            ("'{a,\"b c\"}'", "{a,\"b c\"}".to_owned(), true),
            ("E'{d}'", "{d}".to_owned(), true)
        ]
    );
    plan("SELECT * FROM users WHERE email = ANY(NULL::text[])");
    refused("SELECT * FROM users WHERE email = ANY(string_to_array($1, ','))");
    refused("SELECT * FROM users WHERE first_name = ANY($1)");
    plan("SELECT * FROM users WHERE email IS NULL AND first_name IS NOT NULL");
    plan("SELECT id, first_name IS NULL AS no_name, (email IS NOT NULL) FROM users");
    plan("SELECT a.id FROM users a JOIN users b ON a.email = b.email");
    plan("SELECT email, count(*) FROM users GROUP BY email");
    plan("SELECT count(DISTINCT email), count(first_name) FROM users");
    plan("DELETE FROM users WHERE email = 'gone' RETURNING first_name");
    plan("SELECT * FROM orders WHERE user_id IN (SELECT id FROM users WHERE email = 'a')");
}

#[test]
fn projections_of_any_shape_are_decrypted_in_results() {
    for sql in [
        "SELECT * FROM users",
        "SELECT u.email AS e, u.first_name FROM users u",
        "WITH x AS (SELECT email FROM users) SELECT * FROM x",
        "SELECT email FROM users UNION SELECT email FROM users",
        "SELECT (SELECT first_name FROM users LIMIT 1)",
    ] {
        let plan = plan(sql);
        assert!(plan.literals.is_empty() && plan.params.is_empty(), "{sql}");
    }
}

#[test]
fn randomized_columns_are_not_searchable() {
    let msg = refused("SELECT * FROM users WHERE first_name = 'Ann'");
    assert!(
        msg.contains("public.users.first_name") && msg.contains("deterministic"),
        "{msg}"
    );
    refused("SELECT * FROM users WHERE last_name IN ('a')");
    refused("SELECT first_name FROM users GROUP BY first_name");
    refused("SELECT DISTINCT first_name FROM users");
}

#[test]
fn operations_that_need_plaintext_are_refused() {
    for (sql, column) in [
        (
            "SELECT * FROM users WHERE email LIKE 'a%'",
            "public.users.email",
        ),
        (
            "SELECT * FROM users WHERE email > 'm'",
            "public.users.email",
        ),
        ("SELECT lower(email) FROM users", "public.users.email"),
        (
            "SELECT length(first_name) FROM users",
            "public.users.first_name",
        ),
        ("SELECT * FROM users ORDER BY email", "public.users.email"),
        ("SELECT email || 'x' FROM users", "public.users.email"),
        ("SELECT max(email) FROM users", "public.users.email"),
        (
            "SELECT * FROM users WHERE lower(email) = 'a'",
            "public.users.email",
        ),
        (
            "SELECT * FROM users u, billing.cards c WHERE u.email = c.holder",
            "billing.cards.holder",
        ),
    ] {
        let msg = refused(sql);
        assert!(msg.contains(column), "{sql}: {msg}");
    }
    for sql in [
        "SELECT users FROM users",
        "SELECT row_to_json(u) FROM users u",
        "SELECT to_json(u.*) FROM users u",
        "SELECT json_agg(c.*) FROM billing.cards c",
        "SELECT ROW(u.*) FROM users u",
    ] {
        let msg = refused(sql);
        assert!(msg.contains("whole-row"), "{sql}: {msg}");
    }
    plan("SELECT u.*, count(*) OVER () FROM users u");
    assert_eq!(
        literals("DECLARE c CURSOR WITH HOLD FOR SELECT first_name FROM users WHERE email = 'a'"),
        [lit("'a'", "a", "public.users.email")]
    );
    refused("DECLARE c CURSOR FOR SELECT id FROM users ORDER BY email");
}

#[test]
fn values_that_cannot_be_encrypted_are_refused() {
    for sql in [
        "INSERT INTO users (email) VALUES (lower('X'))",
        "INSERT INTO users (email) VALUES ('a' || 'b')",
        "INSERT INTO users (email) SELECT email FROM staging",
        "WITH v AS (SELECT 'x' AS e) INSERT INTO users (email) SELECT e FROM v",
        "UPDATE users SET email = upper(email)",
        "UPDATE users SET email = first_name",
        "SELECT * FROM users WHERE email = lower($1)",
    ] {
        let msg = refused(sql);
        assert!(msg.contains("public.users."), "{sql}: {msg}");
    }
    let msg = refused("INSERT INTO users VALUES (1, 'a@b')");
    assert!(msg.contains("must name its columns"), "{msg}");
}

#[test]
fn unparseable_sql_naming_a_pii_table_is_refused_without_echoing_it() {
    let msg = refused("DO $$ BEGIN INSERT INTO users (email) VALUES ('secret@x'); END $$");
    assert!(!msg.contains("secret"), "{msg}");
    assert_eq!(
        analyze("DO $$ BEGIN PERFORM 1; END $$", &policy()),
        Analysis::Plain
    );
}

/// Statements that carry values to PII columns by another road than a literal or Bind:
/// SQL PREPARE/EXECUTE and function bodies.
#[test]
fn prepare_execute_and_function_bodies_cannot_smuggle_values() {
    // PREPARE: the statement is analysed; its literals are encrypted, its PII parameters
    // (whose values EXECUTE would pass in clear) refused.
    let sql = "PREPARE p AS INSERT INTO users (email, first_name) VALUES ('a@b', 'Ann')";
    assert_eq!(
        literals(sql),
        [
            lit("'a@b'", "a@b", "public.users.email"),
            lit("'Ann'", "Ann", "public.users.first_name")
        ]
    );
    let msg = refused("PREPARE p(text) AS INSERT INTO users (email) VALUES ($1)");
    assert!(msg.contains("public.users.email"), "{msg}");
    refused("PREPARE p(text) AS SELECT id FROM users WHERE email = $1");
    refused("PREPARE p AS SELECT id FROM users ORDER BY email");
    plan("PREPARE p(int) AS SELECT email FROM users WHERE id = $1");
    // EXECUTE with arguments: named for the session to check against its statements.
    assert_eq!(plan("EXECUTE p('a@b', 2)").executes, ["p"]);
    assert_eq!(
        plan("SELECT 1; EXECUTE \"Q\"($1)").executes,
        ["Q".to_owned()]
    );
    assert_eq!(analyze("EXECUTE p", &policy()), Analysis::Plain);
    assert_eq!(
        analyze("GRANT EXECUTE ON FUNCTION f() TO app", &policy()),
        Analysis::Plain
    );
    // Function bodies that name a PII table cannot be checked.
    refused("CREATE FUNCTION f(v text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE format('INSERT INTO %I (email) VALUES ($1)', 'us' || 'ers') USING v; END $$");
    let msg = refused("CREATE FUNCTION add_user(e text) RETURNS void LANGUAGE sql AS $$ INSERT INTO users (email) VALUES (e) $$");
    assert!(msg.contains("function, procedure or rule"), "{msg}");
    // (sqlparser cannot parse this one: refused as unparseable.)
    refused("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS $$ UPDATE billing.cards SET holder = 'x' $$");
    assert_eq!(
        analyze(
            "CREATE FUNCTION one() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
            &policy()
        ),
        Analysis::Plain
    );
    let msg = refused("EXECUTE p('secret@x') garbage garbage");
    assert!(msg.contains("EXECUTE") && !msg.contains("secret"), "{msg}");
}

#[test]
fn a_parameter_bound_for_two_columns_is_refused() {
    refused("UPDATE users SET first_name = $1 WHERE email = $1");
    // Bound for a PII column and used as a plain value: Postgres would get the ciphertext
    // for both uses.
    for sql in [
        "SELECT id FROM users WHERE email = $1 AND nick = $1",
        "INSERT INTO users (email, nick) VALUES ($1, $1)",
        "SELECT $1, id FROM users WHERE email = $1",
        "UPDATE users SET email = $1 WHERE lower(nick) = lower($1)",
    ] {
        let msg = refused(sql);
        assert!(
            msg.contains("parameter $1 is used for public.users.email and elsewhere"),
            "{sql}: {msg}"
        );
    }
    // The same column more than once is fine.
    for sql in [
        "INSERT INTO users (email) VALUES ($1), ($1)",
        "SELECT id FROM users WHERE email = $1 OR email IN ($1, $2)",
        "INSERT INTO users (email) VALUES ($1) ON CONFLICT (email) DO UPDATE SET email = $1",
    ] {
        plan(sql);
    }
}

#[test]
fn multi_statement_literals_are_all_found() {
    let sql = "INSERT INTO users (email) VALUES ('a');\nSELECT 1;\nUPDATE users SET last_name = 'b' WHERE email = 'c'";
    let found: Vec<String> = literals(sql).into_iter().map(|(text, ..)| text).collect();
    assert_eq!(found, ["'a'", "'b'", "'c'"]);
}

#[test]
fn splicing_literals_keeps_the_rest_of_the_text() {
    let sql = "INSERT INTO users (email, nick) /* c */ VALUES ('é@x', 'n')";
    let plan = plan(sql);
    let replacements: Vec<_> = plan
        .literals
        .iter()
        .map(|slot| (slot.range.clone(), "'CIPHER'".to_owned()))
        .collect();
    assert_eq!(
        splice(sql, &replacements),
        "INSERT INTO users (email, nick) /* c */ VALUES ('CIPHER', 'n')"
    );
}

#[test]
fn cache_returns_the_same_analysis() {
    let cache = AnalysisCache::new(Arc::new(policy()), DEFAULT_CACHE_BYTES);
    let sql = "SELECT * FROM users WHERE email = $1";
    assert_eq!(cache.analyze(sql), analyze(sql, cache.policy()));
    assert_eq!(cache.analyze(sql), cache.analyze(sql));
    assert_eq!(cache.analyze("SELECT 1"), Analysis::Plain);
    let _ = Mode::Deterministic;
}

#[test]
fn insert_select_from_values_is_encrypted_like_values() {
    // SQLAlchemy's "insertmanyvalues" form of a multi-row ORM flush.
    let sql = "INSERT INTO users (first_name, last_name, email) SELECT p0::VARCHAR, p1::VARCHAR, p2::VARCHAR FROM (VALUES ($1::VARCHAR, $2::VARCHAR, $3::VARCHAR, 0), ($4::VARCHAR, $5::VARCHAR, $6::VARCHAR, 1)) AS imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter RETURNING users.id, users.id AS id__1";
    let columns = ["first_name", "last_name", "email"];
    let expected: Vec<_> = (1..=6)
        .map(|n| (n, format!("public.users.{}", columns[(n - 1) % 3]), false))
        .collect();
    assert_eq!(params(sql), expected);
    // Literals, default column names, a plain column computed freely.
    assert_eq!(
        literals("INSERT INTO users (id, email) SELECT column1 + 1, v.column2 FROM (VALUES (1, 'a@x'), (2, 'b@x')) v"),
        vec![lit("'a@x'", "a@x", "public.users.email"), lit("'b@x'", "b@x", "public.users.email")]
    );
    for sql in [
        "INSERT INTO users (email) SELECT lower(v.e) FROM (VALUES ('A')) AS v(e)",
        "INSERT INTO users (email) SELECT v.e FROM (VALUES (lower('A'))) AS v(e)",
        "INSERT INTO users (email, first_name) SELECT v.e, v.e FROM (VALUES ('a')) AS v(e)",
        "INSERT INTO users (email) SELECT v.e FROM (VALUES ('a')) AS v(e) JOIN t ON true",
        "INSERT INTO users (email) SELECT email FROM people",
        "INSERT INTO users (email, nick) SELECT v.e, v.e FROM (VALUES ('a')) AS v(e)",
        "INSERT INTO users (email, nick) SELECT v.e, lower(e) FROM (VALUES ('a')) AS v(e)",
        "INSERT INTO users (email) SELECT v.e FROM (VALUES ('a', 1)) AS v(e, n) WHERE v.e <> ''",
        "INSERT INTO users (email) SELECT v.e FROM (VALUES ('a', 1)) AS v(e, n) ORDER BY e",
    ] {
        refused(sql);
    }
}

#[test]
fn columns_sharing_a_key_compare_and_reference_each_other() {
    let yaml = "
users:
  email: deterministic
  first_name: randomized
orders:
  customer_email: { mode: deterministic, same_key_as: users.email }
  note: deterministic
";
    let policy = Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap();
    let analyze = |sql: &str| analyze(sql, &policy);
    for sql in [
        "SELECT u.first_name FROM users u JOIN orders o ON o.customer_email = u.email",
        "SELECT note FROM orders WHERE customer_email IN (SELECT email FROM users WHERE email = $1)",
        "CREATE TABLE orders (id int, customer_email text REFERENCES users (email))",
        "ALTER TABLE orders ADD FOREIGN KEY (customer_email) REFERENCES users (email)",
    ] {
        assert!(matches!(analyze(sql), Analysis::Plan(_)), "{sql}");
    }
    for sql in [
        "SELECT 1 FROM users u JOIN orders o ON o.note = u.email",
        "CREATE TABLE orders (id int, note text REFERENCES users (email))",
        "CREATE TABLE orders (id int, plain text REFERENCES users (email))",
        "CREATE TABLE orders (id int, customer_email text REFERENCES users)",
    ] {
        assert!(matches!(analyze(sql), Analysis::Refused(_)), "{sql}");
    }
}

/// Values whose ciphertext would not decrypt to what Postgres would have stored: a cast
/// with a length (explicit casts truncate silently), numbers Postgres rewrites; casts to
/// citext, which would compare ciphertexts case-insensitively instead of plaintexts.
#[test]
fn values_postgres_would_change_are_refused() {
    for sql in [
        "SELECT id FROM users WHERE email::citext = 'ANN@EXAMPLE.COM'",
        "SELECT id FROM users WHERE email = $1::citext",
        "INSERT INTO users (email) VALUES ($1::citext)",
        "SELECT id FROM users WHERE CAST(email AS citext) IN ('a', 'b')",
        "INSERT INTO users (email) VALUES ('abc'::varchar(3))",
        "INSERT INTO users (email) VALUES ($1::varchar(20))",
        "INSERT INTO users (email) VALUES (CAST($1 AS character varying(20)))",
        "SELECT id FROM users WHERE email::varchar(10) = 'a'",
        "INSERT INTO users (email) VALUES (1e5)",
        "INSERT INTO users (email) VALUES (007)",
        "INSERT INTO users (email) VALUES (.5)",
        "INSERT INTO users (email) VALUES (-5)",
    ] {
        let msg = refused(sql);
        assert!(msg.contains("public.users.email"), "{sql}: {msg}");
    }
    assert_eq!(
        literals(
            "INSERT INTO users (email, first_name, last_name) VALUES (42, 0.50, '7'::varchar)"
        ),
        [
            lit("42", "42", "public.users.email"),
            lit("0.50", "0.50", "public.users.first_name"),
            lit("'7'", "7", "public.users.last_name")
        ]
    );
    assert_eq!(
        params("INSERT INTO users (email) VALUES (CAST($1 AS character varying))"),
        [(1, "public.users.email".into(), false)]
    );
}

/// pgcloak does not follow search_path: an unqualified name means the configured table of
/// that name, in public or (when only there) another schema.
#[test]
fn unqualified_names_of_tables_outside_public_are_encrypted() {
    assert_eq!(
        literals("INSERT INTO cards (holder) VALUES ('Ann')"),
        [lit("'Ann'", "Ann", "billing.cards.holder")]
    );
    assert!(plan("COPY cards (holder) FROM STDIN").copy_in.is_some());
    refused("SELECT id FROM cards ORDER BY holder");
}

/// A Unicode-escaped identifier (`U&"us\0065rs"`) can name a PII table without its name
/// appearing in the text: such statements are refused whenever a policy is loaded.
#[test]
fn unicode_escaped_identifiers_are_refused() {
    for sql in [
        r#"INSERT INTO U&"us\0065rs" (email) VALUES ('x')"#,
        r#"insert into u&"us!0065rs" uescape '!' (email) values ('x')"#,
        r#"INSERT INTO users (U&"em\0061il") VALUES ('x')"#,
    ] {
        let msg = refused(sql);
        assert!(
            msg.contains("Unicode-escaped identifier") || msg.contains("names a table"),
            "{sql}: {msg}"
        );
        assert!(!msg.contains("'x'"), "{msg}");
    }
    assert_eq!(
        analyze(r#"SELECT U&'caf\00e9'"#, &policy()),
        Analysis::Plain
    );
    assert_eq!(
        analyze(r#"SELECT 1 FROM U&"t\0061ble""#, &Policy::default()),
        Analysis::Plain
    );
}
