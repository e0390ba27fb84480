//! Bulk inserts from arrays (Django 5.2's bulk_create, sqlx): each array feeding a PII
//! column is encrypted element by element.

use super::*;

type ParamSlots = Vec<(usize, String, bool)>;
type LiteralSlots = Vec<(String, String, bool)>;

/// (parameter, column, array) and (literal text, column, array) of each slot.
fn slots(sql: &str) -> (ParamSlots, LiteralSlots) {
    let plan = plan(sql);
    let literals = plan
        .literals
        .iter()
        .map(|s| {
            (
                sql[s.range.clone()].to_owned(),
                s.column.to_string(),
                s.array,
            )
        })
        .collect();
    (params(sql), literals)
}

fn param(n: usize, column: &str, array: bool) -> (usize, String, bool) {
    (n, format!("public.users.{column}"), array)
}

#[test]
fn unnest_of_array_parameters_binds_each_array_to_its_column() {
    for sql in [
        // Django 5.2 bulk_create.
        "INSERT INTO \"users\" (\"email\", \"nick\", \"first_name\") SELECT * FROM UNNEST($1::varchar[], $2::varchar[], $3::text[]) RETURNING \"users\".\"id\"",
        // sqlx.
        "INSERT INTO users (email, nick, first_name) SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[])",
        "INSERT INTO users (email, nick, first_name) SELECT * FROM unnest($1::character varying[], $2, $3::text[]) AS x",
        "INSERT INTO users (email, nick, first_name) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) AS x(e, n, f)",
        "INSERT INTO users (email, nick, first_name) SELECT x.e, n, x.f::text FROM UNNEST($1::text[], $2::text[], $3::text[]) AS x(e, n, f)",
        "INSERT INTO users (email, nick, first_name) SELECT x.* FROM UNNEST($1::text[], $2::text[], $3::text[]) AS x(e, n, f) ON CONFLICT (email) DO NOTHING",
        "INSERT INTO users (email, nick, first_name) SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[])",
        "INSERT INTO public.users (email, nick, first_name) SELECT UNNEST($1::TEXT[]), $2, unnest($3::varchar[])",
    ] {
        assert_eq!(
            params(sql),
            [param(1, "email", true), param(3, "first_name", true)],
            "{sql}"
        );
    }
    assert_eq!(
        params("INSERT INTO users (first_name) SELECT * FROM UNNEST($1::text[]) AS f"),
        [param(1, "first_name", true)]
    );
    assert_eq!(
        params("INSERT INTO users (first_name) SELECT f FROM UNNEST($1::text[]) AS f"),
        [param(1, "first_name", true)]
    );
}

#[test]
fn unnest_of_inline_arrays_binds_literals() {
    let (params, literals) = slots(
        "INSERT INTO users (email, first_name) SELECT * FROM UNNEST('{a@x,b@x}'::varchar[], ARRAY['Ann', $1, NULL]::text[])",
    );
    assert_eq!(params, [param(1, "first_name", false)]);
    assert_eq!(
        literals,
        [
            (
                "'{a@x,b@x}'".to_owned(),
                "public.users.email".to_owned(),
                true
            ),
            (
                "'Ann'".to_owned(),
                "public.users.first_name".to_owned(),
                false
            ),
        ]
    );
    let (_, literals) = slots(
        "INSERT INTO users (email, nick) SELECT * FROM unnest(E'{\"a b\",c}'::text[], ARRAY[1, 2])",
    );
    assert_eq!(literals.len(), 1);
    assert!(literals[0].2);
}

#[test]
fn other_array_shapes_stay_refused() {
    let into = "INSERT ... SELECT into public.users.";
    let cannot = "cannot be encrypted by pgcloak: pass it as a parameter or literal of type text[]";
    refusals(&[
        ("INSERT INTO users (email) SELECT * FROM UNNEST($1::varchar(20)[])", cannot),
        ("INSERT INTO users (email) SELECT * FROM UNNEST($1::int[])", cannot),
        ("INSERT INTO users (email) SELECT * FROM UNNEST(string_to_array($1, ','))", cannot),
        ("INSERT INTO users (email) SELECT * FROM UNNEST(ARRAY[lower('A')])", "cannot encrypt the value for public.users.email"),
        ("INSERT INTO users (email) SELECT lower(x.e) FROM UNNEST($1::text[]) AS x(e)", into),
        ("INSERT INTO users (email, nick) SELECT x.e, lower(x.e) FROM UNNEST($1::text[]) AS x(e)", into),
        ("INSERT INTO users (email, first_name) SELECT x.e, x.e FROM UNNEST($1::text[]) AS x(e)", into),
        ("INSERT INTO users (email) SELECT * FROM UNNEST($1::text[]) AS x(e) WHERE x.e <> ''", into),
        ("INSERT INTO users (email) SELECT * FROM UNNEST($1::text[]) ORDER BY 1", into),
        ("INSERT INTO users (email, nick) SELECT * FROM UNNEST($1::text[]) WITH ORDINALITY", into),
        ("INSERT INTO users (email) SELECT * FROM UNNEST($1::text[]) x JOIN t ON true", into),
        ("INSERT INTO users (email, nick) SELECT * FROM UNNEST($1::text[], $1::text[])", "parameter $1 is used for public.users.email and elsewhere"),
        ("INSERT INTO users (email, nick) SELECT unnest($1::text[]), unnest($1::text[])", "parameter $1 is used for public.users.email and elsewhere"),
        ("INSERT INTO users (email) SELECT * FROM UNNEST($1::text[], $2::text[])", into),
        ("INSERT INTO users (email) SELECT unnest($1::text[]) FROM t", into),
        ("SELECT * FROM users WHERE email IN (SELECT * FROM UNNEST($1::text[]))", "public.users.email"),
    ]);
}
