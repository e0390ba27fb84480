//! How each search value is compared (so that a search can match every stored form of a
//! value while a column is in transition), and which columns a statement compares by
//! ciphertext.

use super::*;

/// (literal text, its search form) for each literal slot.
fn literal_searches(sql: &str) -> Found {
    plan(sql)
        .literals
        .iter()
        .map(|s| (sql[s.range.clone()].to_owned(), s.search))
        .collect()
}

/// ($n as written, its search form) for each parameter occurrence.
fn param_uses(sql: &str) -> Vec<(String, usize, Option<Search>)> {
    plan(sql)
        .param_uses
        .iter()
        .map(|u| (sql[u.range.clone()].to_owned(), u.n, u.search))
        .collect()
}

fn compared(sql: &str) -> Vec<String> {
    plan(sql)
        .compared_by_ciphertext
        .iter()
        .map(|c| c.to_string())
        .collect()
}

type Found = Vec<(String, Option<Search>)>;

fn s(text: &str, search: Option<Search>) -> (String, Option<Search>) {
    (text.to_owned(), search)
}

#[test]
fn each_search_literal_knows_how_it_is_compared() {
    use Search::*;
    let cases: &[(&str, Found)] = &[
        (
            "SELECT id FROM users WHERE email = 'a@x'",
            vec![s("'a@x'", Some(Equal))],
        ),
        (
            "SELECT id FROM users WHERE email <> 'a@x'",
            vec![s("'a@x'", Some(NotEqual))],
        ),
        (
            "SELECT id FROM users WHERE email != 'a@x'",
            vec![s("'a@x'", Some(NotEqual))],
        ),
        (
            "SELECT id FROM users WHERE 'a@x' = email",
            vec![s("'a@x'", Some(Fixed))],
        ),
        (
            "SELECT id FROM users WHERE email IS NOT DISTINCT FROM 'a@x'",
            vec![s("'a@x'", Some(Fixed))],
        ),
        (
            "SELECT id FROM users WHERE email IN ('a@x', 'b@x')",
            vec![s("'a@x'", Some(ListItem)), s("'b@x'", Some(ListItem))],
        ),
        (
            "SELECT id FROM users WHERE email NOT IN ('a@x')",
            vec![s("'a@x'", Some(ListItem))],
        ),
        (
            "SELECT id FROM users WHERE email = ANY(ARRAY['a@x', 'b@x'])",
            vec![s("'a@x'", Some(ListItem)), s("'b@x'", Some(ListItem))],
        ),
        (
            "SELECT id FROM users WHERE email = ANY('{a@x,b@x}')",
            vec![s("'{a@x,b@x}'", Some(Equal))],
        ),
        (
            "SELECT id FROM orders WHERE 'a@x' = (SELECT email FROM users WHERE id = 1)",
            vec![s("'a@x'", Some(Fixed))],
        ),
        // Written values are not searches.
        (
            "UPDATE users SET email = 'new@x' WHERE email = 'old@x'",
            vec![s("'new@x'", None), s("'old@x'", Some(Equal))],
        ),
        (
            "INSERT INTO users (email) VALUES ('a@x')",
            vec![s("'a@x'", None)],
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(&literal_searches(sql), expected, "{sql}");
    }
}

#[test]
fn each_parameter_occurrence_is_recorded_with_its_use() {
    use Search::*;
    assert_eq!(
        param_uses("SELECT id FROM users WHERE email = $1 OR email <> $2"),
        [
            ("$1".into(), 1, Some(Equal)),
            ("$2".into(), 2, Some(NotEqual))
        ]
    );
    assert_eq!(
        param_uses("SELECT id FROM users WHERE email IN ($1, $2)"),
        [
            ("$1".into(), 1, Some(ListItem)),
            ("$2".into(), 2, Some(ListItem))
        ]
    );
    assert_eq!(
        param_uses("SELECT id FROM users WHERE email = ANY($1)"),
        [("$1".into(), 1, Some(Equal))]
    );
    // One parameter written and searched for: both uses are there.
    assert_eq!(
        param_uses(
            "INSERT INTO users (email) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = $1)"
        ),
        [("$1".into(), 1, None), ("$1".into(), 1, Some(Equal))]
    );
}

#[test]
fn comparisons_of_column_values_with_each_other_are_recorded() {
    let email = ["public.users.email".to_owned()];
    for sql in [
        "SELECT a.id FROM users a JOIN users b ON a.email = b.email",
        "SELECT email, count(*) FROM users GROUP BY email",
        "SELECT DISTINCT email FROM users",
        "SELECT count(DISTINCT email) FROM users",
        "SELECT email FROM users UNION SELECT email FROM users",
        "SELECT id FROM users WHERE email IN (SELECT email FROM users WHERE id < 5)",
        "SELECT a.id FROM users a JOIN users b USING (email)",
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email)",
        "INSERT INTO users (email) VALUES ($1) ON CONFLICT (email) DO NOTHING",
        "INSERT INTO users (email, id) VALUES ('a@x', 1) ON CONFLICT DO NOTHING",
        "INSERT INTO users (id) VALUES (1) ON CONFLICT ON CONSTRAINT users_pkey DO NOTHING",
        "INSERT INTO users AS u (id, first_name) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET first_name = EXCLUDED.first_name",
    ] {
        assert_eq!(compared(sql), email, "{sql}");
    }
    for sql in [
        "SELECT id FROM users WHERE email = 'a@x'",
        "SELECT id FROM users WHERE email IN ($1, $2)",
        "SELECT email FROM users",
        "INSERT INTO users (email) VALUES ($1)",
    ] {
        assert!(compared(sql).is_empty(), "{sql}");
    }
}
