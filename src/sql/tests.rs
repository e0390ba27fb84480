//! Analysis of whole statements against a small policy.

use super::*;
use crate::crypto::Mode;

mod allowlist;
mod arrays;
mod depth;
mod escapes;
mod merge;
mod params;
mod relations;
mod scs;

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
fn ddl_keeps_what_works_on_ciphertext() {
    for sql in [
        "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL, first_name text DEFAULT NULL)",
        "CREATE TABLE users (id serial, email varchar, PRIMARY KEY (id), UNIQUE (email))",
        "CREATE INDEX ix_users_email ON users (email)",
        "CREATE UNIQUE INDEX ix_users_email ON users USING btree (email)",
        "CREATE INDEX ix_users_first ON users (first_name)",
        "ALTER TABLE users ADD CONSTRAINT u UNIQUE (email)",
        "ALTER TABLE users ADD COLUMN last_name text",
        "ALTER TABLE users ALTER COLUMN email DROP DEFAULT",
    ] {
        assert!(plan(sql).changes_schema, "{sql}");
    }
    assert_eq!(
        literals("CREATE INDEX ix ON users (id) WHERE email = 'x'"),
        vec![lit("'x'", "x", "public.users.email")]
    );
}

#[test]
fn ddl_that_cannot_hold_on_ciphertext_is_refused() {
    for (sql, expected) in [
        (
            "CREATE TABLE users (id int, first_name text UNIQUE)",
            "UNIQUE on public.users.first_name",
        ),
        (
            "CREATE TABLE users (first_name text PRIMARY KEY)",
            "PRIMARY KEY on public.users.first_name",
        ),
        (
            "CREATE TABLE users (id int, first_name text, UNIQUE (id, first_name))",
            "UNIQUE on public.users.first_name",
        ),
        (
            "CREATE UNIQUE INDEX u ON users (last_name)",
            "a UNIQUE index on public.users.last_name",
        ),
        (
            "ALTER TABLE users ADD CONSTRAINT u UNIQUE (first_name)",
            "UNIQUE on public.users.first_name",
        ),
        (
            "CREATE TABLE users (id int, email text DEFAULT 'nobody')",
            "DEFAULT for public.users.email",
        ),
        (
            "ALTER TABLE users ALTER COLUMN email SET DEFAULT lower('x')",
            "DEFAULT for public.users.email",
        ),
        (
            "ALTER TABLE users ADD COLUMN last_name text DEFAULT 'x'",
            "DEFAULT for public.users.last_name",
        ),
        (
            "CREATE TABLE users (id int, email text REFERENCES other (mail))",
            "foreign key on public.users.email",
        ),
        (
            "CREATE TABLE orders (id int, mail text, FOREIGN KEY (mail) REFERENCES users (email))",
            "foreign key on public.users.email",
        ),
        (
            "CREATE TABLE orders (id int, mail text REFERENCES users (email))",
            "foreign key on public.users.email",
        ),
        (
            "CREATE TABLE users (id int, email text GENERATED ALWAYS AS (lower('x')) STORED)",
            "generated column",
        ),
        (
            "CREATE TABLE users AS SELECT * FROM people",
            "CREATE TABLE ... AS SELECT",
        ),
        (
            "CREATE INDEX ix ON users (lower(email))",
            "public.users.email is encrypted",
        ),
        (
            "CREATE TABLE users (id int, first_name text CHECK (length(first_name) > 1))",
            "public.users.first_name is encrypted",
        ),
    ] {
        let message = refused(sql);
        assert!(message.contains(expected), "{sql}: {message}");
    }
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

/// Views and child tables created through pgcloak: a view that shows PII columns, or a
/// partition / inheritance child of a PII table, must be in the policy.
#[test]
fn views_and_child_tables_of_pii_tables_must_be_configured() {
    for (sql, what) in [
        ("CREATE VIEW v AS SELECT id, email FROM users", "the view v shows public.users.email"),
        ("CREATE OR REPLACE VIEW v AS SELECT * FROM users WHERE id > 0", "the view v shows public.users."),
        ("CREATE VIEW v AS SELECT email, count(*) FROM users GROUP BY email", "shows public.users.email"),
        ("CREATE VIEW v AS SELECT c.id, u.* FROM billing.cards c JOIN users u ON u.id = c.user_id", "shows public.users."),
        ("CREATE VIEW v AS SELECT id FROM billing.cards UNION ALL SELECT id FROM users UNION ALL SELECT holder FROM billing.cards", "shows billing.cards.holder"),
        ("CREATE VIEW v AS SELECT x.e FROM (SELECT email AS e FROM users) x", "shows public.users.email"),
        ("CREATE MATERIALIZED VIEW v AS SELECT id, email FROM users", "shows public.users.email"),
        ("CREATE TABLE users_2024 PARTITION OF users FOR VALUES FROM (1) TO (2)", "users_2024 would be a partition or child of public.users"),
        ("CREATE TABLE old_users () INHERITS (users)", "old_users would be a partition or child of public.users"),
    ] {
        let msg = refused(sql);
        assert!(msg.contains(what), "{sql}: {msg}");
    }
    // Views showing plain columns only: fine.
    plan("CREATE VIEW v AS SELECT id, count(*) FROM users WHERE email = 'a' GROUP BY id");
    refused("CREATE VIEW v AS SELECT id FROM users ORDER BY email");
    // Configured views and children are created as usual.
    let policy = Policy::from_yaml(
        &serde_yaml::from_str(
            "users:\n  email: deterministic\nv:\n  email: { mode: deterministic, same_key_as: users.email }\nold_users:\n  email: { mode: deterministic, same_key_as: users.email }\n",
        )
        .unwrap(),
    )
    .unwrap();
    for sql in [
        "CREATE VIEW v AS SELECT id, email FROM users",
        "CREATE TABLE old_users () INHERITS (users)",
    ] {
        assert!(matches!(analyze(sql, &policy), Analysis::Plan(_)), "{sql}");
    }
}

/// Schema changes that would take PII columns out of pgcloak's sight: renames (the policy
/// and the keys follow the names), attaching or inheriting into a relation the policy does
/// not name, rules that write PII tables.
#[test]
fn schema_changes_that_hide_pii_columns_are_refused() {
    for (sql, what) in [
        ("ALTER TABLE users RENAME TO customers", "renaming users"),
        ("ALTER TABLE users RENAME COLUMN email TO mail", "renaming users"),
        ("ALTER TABLE users ATTACH PARTITION users_2024 FOR VALUES FROM (1) TO (2)", "users_2024 would be a partition or child of public.users"),
        ("ALTER TABLE old_users INHERIT users", "old_users would be a partition or child of public.users"),
        ("CREATE RULE r AS ON INSERT TO v DO INSTEAD INSERT INTO users (email) VALUES (NEW.email)", "function, procedure or rule"),
    ] {
        let msg = refused(sql);
        assert!(msg.contains(what), "{sql}: {msg}");
    }
    plan("ALTER TABLE users RENAME COLUMN nick TO nickname");
    plan("ALTER TABLE users ADD COLUMN nick text");
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

/// A PII column must be created or altered as text (or varchar): citext compares
/// ciphertexts case-insensitively, char(n) pads them, other types cannot hold them.
#[test]
fn pii_columns_must_be_text() {
    for sql in [
        "CREATE TABLE users (id int, email citext)",
        "CREATE TABLE users (id int, email char(200))",
        "CREATE TABLE users (id int, first_name integer)",
        "CREATE TABLE users (id int, email text[])",
        "ALTER TABLE users ALTER COLUMN email TYPE citext",
        "ALTER TABLE users ADD COLUMN last_name bytea",
    ] {
        let msg = refused(sql);
        assert!(msg.contains("declare it as text"), "{sql}: {msg}");
    }
    for sql in [
        "CREATE TABLE users (id int, email TEXT, first_name varchar, last_name character varying(300), nick citext)",
        "ALTER TABLE users ALTER COLUMN email TYPE varchar(500)",
        "ALTER TABLE users ALTER COLUMN nick TYPE citext",
    ] {
        plan(sql);
    }
}
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
