//! Typed PII columns (a policy `type:`): values bound for them are seen through casts to the
//! declared type, whose type names the plan lists for the rewrite to put `text` there.

use super::*;

fn typed_policy() -> Policy {
    let yaml = "
people:
  dob: { mode: deterministic, type: date }
  seen: { mode: deterministic, type: timestamptz }
  amount: { mode: deterministic, type: 'numeric(10,2)' }
  age: { mode: deterministic, type: integer }
  ratio: { mode: deterministic, type: double precision }
  active: { mode: deterministic, type: boolean }
  nick: { mode: deterministic, type: 'varchar(20)' }
  note: deterministic
  born: { mode: randomized, type: date }
kin:
  dob: { mode: deterministic, type: date, same_key_as: people.dob }
";
    Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap()
}

fn typed_plan(sql: &str) -> Arc<StatementPlan> {
    match analyze(sql, &typed_policy()) {
        Analysis::Plan(plan) => plan,
        other => panic!("{sql}: expected a plan, got {other:?}"),
    }
}

/// The statement as the cloak would rewrite it: each literal slot becomes `<column:value>`,
/// each cast's type name `text`; parameters stay.
fn rewritten(sql: &str) -> String {
    let plan = typed_plan(sql);
    let mut replacements: Vec<(std::ops::Range<usize>, String)> = plan
        .literals
        .iter()
        .map(|slot| {
            let value = literal_value(sql, slot).unwrap();
            (
                slot.range.clone(),
                format!("<{}:{value}>", slot.column.column),
            )
        })
        .chain(plan.casts.iter().map(|r| (r.clone(), "text".to_owned())))
        .collect();
    replacements.sort_by_key(|(range, _)| range.start);
    for pair in replacements.windows(2) {
        assert!(
            pair[0].0.end <= pair[1].0.start,
            "{sql}: overlapping {pair:?}"
        );
    }
    assert!(
        plan.casts.windows(2).all(|w| w[0].end <= w[1].start),
        "{sql}: casts unsorted"
    );
    splice(sql, &replacements)
}

fn rewrites(cases: &[(&str, &str)]) {
    for (sql, expected) in cases {
        assert_eq!(rewritten(sql), *expected, "{sql}");
    }
}

fn typed_refusals(cases: &[(&str, &str)]) {
    refusals_under(&typed_policy(), cases)
}

#[test]
fn casts_to_the_declared_type_around_written_literals_become_text() {
    rewrites(&[
        (
            "INSERT INTO people (dob) VALUES ('2020-01-02'::date)",
            "INSERT INTO people (dob) VALUES (<dob:2020-01-02>::text)",
        ),
        (
            "INSERT INTO people (dob, note) VALUES (CAST('2020-01-02' AS DATE), 'n'), (DATE '2021-03-04', 'm')",
            "INSERT INTO people (dob, note) VALUES (CAST(<dob:2020-01-02> AS text), <note:n>), (text <dob:2021-03-04>, <note:m>)",
        ),
        (
            "INSERT INTO people (seen) VALUES ('2020-01-02 03:04:05+00'::timestamp with time zone)",
            "INSERT INTO people (seen) VALUES (<seen:2020-01-02 03:04:05+00>::text)",
        ),
        (
            "INSERT INTO people (seen) VALUES (TIMESTAMPTZ '2020-01-02 03:04'), ('x'::timestamptz)",
            "INSERT INTO people (seen) VALUES (text <seen:2020-01-02 03:04>), (<seen:x>::text)",
        ),
        (
            "INSERT INTO people (amount) VALUES ('1.5'::numeric(10,2)), ('2'::numeric), ('3'::NUMERIC( 10 , 2 )), (('4')::decimal)",
            "INSERT INTO people (amount) VALUES (<amount:1.5>::text), (<amount:2>::text), (<amount:3>::text), ((<amount:4>)::text)",
        ),
        (
            "UPDATE people SET dob = ('2020-01-02')::date, age = '5'::int4, active = 't'::bool WHERE id = 1",
            "UPDATE people SET dob = (<dob:2020-01-02>)::text, age = <age:5>::text, active = <active:t>::text WHERE id = 1",
        ),
        (
            // A text cast stays as it is; both casts of a chain to the declared type change.
            "UPDATE people SET dob = '2020-01-02'::text::date::date",
            "UPDATE people SET dob = <dob:2020-01-02>::text::text::text",
        ),
        (
            "INSERT INTO people (ratio) VALUES ('1.5'::double precision), (CAST('2' AS float8))",
            "INSERT INTO people (ratio) VALUES (<ratio:1.5>::text), (CAST(<ratio:2> AS text))",
        ),
        (
            "INSERT INTO people (dob) VALUES (NULL::date) ON CONFLICT (id) DO UPDATE SET dob = '2020-01-02'::date",
            "INSERT INTO people (dob) VALUES (NULL::text) ON CONFLICT (id) DO UPDATE SET dob = <dob:2020-01-02>::text",
        ),
    ]);
}

#[test]
fn typed_strings_of_every_spelling() {
    rewrites(&[
        (
            "INSERT INTO people (seen, born) VALUES (timestamp  with time zone '2020-01-02 03:04+01', date E'2020-01-02')",
            "INSERT INTO people (seen, born) VALUES (text <seen:2020-01-02 03:04+01>, text <born:2020-01-02>)",
        ),
        (
            "MERGE INTO people p USING kin k ON p.id = k.id WHEN MATCHED THEN UPDATE SET dob = Date '2020-01-02' WHEN NOT MATCHED THEN INSERT (dob) VALUES ($1::date)",
            "MERGE INTO people p USING kin k ON p.id = k.id WHEN MATCHED THEN UPDATE SET dob = text <dob:2020-01-02> WHEN NOT MATCHED THEN INSERT (dob) VALUES ($1::text)",
        ),
    ]);
}

#[test]
fn casts_to_the_declared_type_around_parameters_become_text() {
    rewrites(&[
        (
            "INSERT INTO people (dob, seen) VALUES ($1::date, $2::timestamp with time zone)",
            "INSERT INTO people (dob, seen) VALUES ($1::text, $2::text)",
        ),
        (
            "INSERT INTO people (dob) VALUES (CAST($1 AS date)), (($2)::date), (cast(($3)::text as Date))",
            "INSERT INTO people (dob) VALUES (CAST($1 AS text)), (($2)::text), (cast(($3)::text as text))",
        ),
        (
            "UPDATE people SET amount = $1::numeric(10,2), age = $2::integer WHERE dob = $3::date",
            "UPDATE people SET amount = $1::text, age = $2::text WHERE dob = $3::text",
        ),
        (
            "INSERT INTO people (dob) SELECT $1::date WHERE NOT EXISTS (SELECT 1 FROM people WHERE dob = $2::date)",
            "INSERT INTO people (dob) SELECT $1::text WHERE NOT EXISTS (SELECT 1 FROM people WHERE dob = $2::text)",
        ),
    ]);
    let plan = typed_plan("INSERT INTO people (dob, note) VALUES ($1::date, $2)");
    assert_eq!(plan.params.len(), 2);
}

#[test]
fn search_values_cast_to_the_declared_type() {
    rewrites(&[
        (
            "SELECT id FROM people WHERE dob = '2020-01-02'::date AND seen = $1::timestamptz",
            "SELECT id FROM people WHERE dob = <dob:2020-01-02>::text AND seen = $1::text",
        ),
        (
            "SELECT id FROM people WHERE DATE '2020-01-02' = dob OR dob <> CAST($1 AS date)",
            "SELECT id FROM people WHERE text <dob:2020-01-02> = dob OR dob <> CAST($1 AS text)",
        ),
        (
            "SELECT id FROM people WHERE dob IN ('2020-01-02'::date, DATE '2020-01-03', $1::date, '2020-01-04')",
            "SELECT id FROM people WHERE dob IN (<dob:2020-01-02>::text, text <dob:2020-01-03>, $1::text, <dob:2020-01-04>)",
        ),
        (
            "SELECT id FROM people WHERE dob = ANY($1::date[]) AND seen = ANY(CAST($2 AS timestamp with time zone []))",
            "SELECT id FROM people WHERE dob = ANY($1::text[]) AND seen = ANY(CAST($2 AS text []))",
        ),
        (
            "SELECT id FROM people WHERE dob = ANY('{2020-01-02,2020-01-03}'::date[])",
            "SELECT id FROM people WHERE dob = ANY(<dob:{2020-01-02,2020-01-03}>::text[])",
        ),
        (
            "SELECT id FROM people WHERE dob = ANY(ARRAY['2020-01-02'::date, DATE '2020-01-03', $1::date])",
            "SELECT id FROM people WHERE dob = ANY(ARRAY[<dob:2020-01-02>::text, text <dob:2020-01-03>, $1::text])",
        ),
        (
            "SELECT p.id FROM people p JOIN kin k ON k.dob = p.dob AND k.dob = $1::date",
            "SELECT p.id FROM people p JOIN kin k ON k.dob = p.dob AND k.dob = $1::text",
        ),
        (
            "SELECT p.id FROM people p JOIN kin k USING (dob) WHERE dob = '2020-01-02'::date",
            "SELECT p.id FROM people p JOIN kin k USING (dob) WHERE dob = <dob:2020-01-02>::text",
        ),
        (
            "DELETE FROM people WHERE dob = $1::date RETURNING dob",
            "DELETE FROM people WHERE dob = $1::text RETURNING dob",
        ),
    ]);
}

#[test]
fn a_replaceable_operand_includes_its_casts() {
    let sql = "SELECT id FROM people WHERE dob = ($1)::date AND seen = CAST('x' AS timestamptz)";
    let plan = typed_plan(sql);
    let operands: Vec<&str> = plan
        .param_uses
        .iter()
        .filter_map(|u| u.operand.clone())
        .chain(plan.literals.iter().filter_map(|s| s.operand.clone()))
        .map(|r| &sql[r])
        .collect();
    assert_eq!(operands, ["($1)::date", "CAST('x' AS timestamptz)"]);
    let casts: Vec<&str> = plan.casts.iter().map(|r| &sql[r.clone()]).collect();
    assert_eq!(casts, ["date", "timestamptz"]);
}

#[test]
fn bulk_inserts_of_typed_columns() {
    rewrites(&[
        (
            "INSERT INTO people (dob, note) SELECT * FROM UNNEST($1::date[], $2::text[])",
            "INSERT INTO people (dob, note) SELECT * FROM UNNEST($1::text[], $2::text[])",
        ),
        (
            "INSERT INTO people (dob) SELECT unnest('{2020-01-02}'::date[])",
            "INSERT INTO people (dob) SELECT unnest(<dob:{2020-01-02}>::text[])",
        ),
        (
            // SQLAlchemy's insertmanyvalues casts the selected columns to the column types.
            "INSERT INTO people (note, dob) SELECT p0::VARCHAR, p1::DATE FROM (VALUES ($1, $2, 0), ($3, $4, 1)) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter",
            "INSERT INTO people (note, dob) SELECT p0::VARCHAR, p1::text FROM (VALUES ($1, $2, 0), ($3, $4, 1)) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter",
        ),
    ]);
}

#[test]
fn number_literals_of_number_columns_are_values_in_any_form() {
    rewrites(&[
        (
            "INSERT INTO people (age, amount, ratio) VALUES (007, -1.5, 1e5), (- 5, .5, -2.5e-3)",
            "INSERT INTO people (age, amount, ratio) VALUES (<age:007>, <amount:-1.5>, <ratio:1e5>), (<age:-5>, <amount:.5>, <ratio:-2.5e-3>)",
        ),
        (
            "SELECT id FROM people WHERE age = -5 OR age IN (1, - 2) OR amount = (-1.5)::numeric",
            "SELECT id FROM people WHERE age = <age:-5> OR age IN (<age:1>, <age:-2>) OR amount = (<amount:-1.5>)::text",
        ),
        (
            "UPDATE people SET age = (-5), amount = 1e2::numeric(10,2)",
            "UPDATE people SET age = (<age:-5>), amount = <amount:1e2>::text",
        ),
    ]);
    let plan = typed_plan("UPDATE people SET age = -5");
    assert_eq!(plan.literals[0].kind, LiteralKind::NegativeNumber);
}

#[test]
fn boolean_keywords_of_boolean_columns_are_values() {
    rewrites(&[
        (
            "INSERT INTO people (active) VALUES (true), (FALSE), (TRUE::boolean)",
            "INSERT INTO people (active) VALUES (<active:true>), (<active:false>), (<active:true>::text)",
        ),
        (
            "SELECT id FROM people WHERE active = True",
            "SELECT id FROM people WHERE active = <active:true>",
        ),
    ]);
    let plan = typed_plan("UPDATE people SET active = false");
    assert_eq!(plan.literals[0].kind, LiteralKind::Boolean);
}

#[test]
fn text_columns_keep_their_rules() {
    rewrites(&[(
        "INSERT INTO people (note, nick) VALUES (42, 'x'::varchar), ('y'::text, 'z')",
        "INSERT INTO people (note, nick) VALUES (<note:42>, <nick:x>::varchar), (<note:y>::text, <nick:z>)",
    )]);
    assert!(typed_plan("SELECT 1 FROM people WHERE note = 'x'")
        .casts
        .is_empty());
    typed_refusals(&[
        ("INSERT INTO people (note) VALUES (1e5)", "expression"),
        ("INSERT INTO people (note) VALUES (-5)", "expression"),
        ("INSERT INTO people (note) VALUES (true)", "expression"),
        (
            "INSERT INTO people (note) VALUES ('2020-01-02'::date)",
            "is cast to date",
        ),
        (
            "INSERT INTO people (note) VALUES (DATE '2020-01-02')",
            "is cast to date",
        ),
        (
            "SELECT 1 FROM people WHERE note = $1::date",
            "cast it to text",
        ),
        (
            "INSERT INTO people (nick) VALUES ('abcd'::varchar(20))",
            "is cast to varchar(20)",
        ),
    ]);
}

#[test]
fn casts_to_another_type_or_typmod_are_refused() {
    let other = "is not the column's type";
    typed_refusals(&[
        ("INSERT INTO people (dob) VALUES ($1::timestamp)", other),
        (
            "INSERT INTO people (dob) VALUES (TIMESTAMP '2020-01-02')",
            other,
        ),
        ("INSERT INTO people (age) VALUES ($1::bigint)", other),
        (
            "INSERT INTO people (amount) VALUES ('1.55'::numeric(10,1))",
            other,
        ),
        (
            "INSERT INTO people (amount) VALUES ('1.55'::numeric(12,2))",
            other,
        ),
        (
            "INSERT INTO people (seen) VALUES ($1::timestamp(3) with time zone)",
            other,
        ),
        ("INSERT INTO people (dob) VALUES ($1::\"date\")", other),
        ("UPDATE people SET dob = CAST($1 AS text)::timestamp", other),
        (
            "SELECT 1 FROM people WHERE dob = $1::integer",
            "is cast to integer",
        ),
        (
            "SELECT 1 FROM people WHERE dob = ANY($1::timestamp[])",
            "is cast to timestamp[]",
        ),
        (
            "INSERT INTO people (dob) SELECT * FROM UNNEST($1::int[])",
            "of type text[] or date[]",
        ),
        // Not a literal or parameter under a cast: an expression.
        (
            "INSERT INTO people (note) VALUES (-5::integer)",
            "expression",
        ),
        ("INSERT INTO people (age) VALUES (- -5)", "expression"),
        // `::` binds before the minus: -(1.5::numeric).
        (
            "INSERT INTO people (amount) VALUES (-1.5::numeric)",
            "expression",
        ),
        ("INSERT INTO people (active) VALUES (1)", "expression"),
        ("INSERT INTO people (dob) VALUES (20200102)", "expression"),
    ]);
}

#[test]
fn casts_that_cannot_be_located_are_refused() {
    typed_refusals(&[
        (
            "INSERT INTO people (dob) VALUES ($1 /* c */ ::date)",
            "could not find the type name",
        ),
        (
            "INSERT INTO people (dob) VALUES ($1:: /* c */ date)",
            "could not find the type name",
        ),
        (
            "INSERT INTO people (dob) VALUES (DATE /* c */ '2020-01-02')",
            "could not find",
        ),
        (
            "INSERT INTO people (dob) VALUES (DATE -- date\n '2020-01-02')",
            "could not find",
        ),
        ("UPDATE people SET age = - /* c */ 5", "could not locate"),
        (
            "SELECT 1 FROM people WHERE dob = ANY(ARRAY['2020-01-02']::date[])",
            "around ARRAY[...]",
        ),
        (
            "INSERT INTO people (dob) SELECT * FROM UNNEST(ARRAY[$1]::date[])",
            "around ARRAY[...]",
        ),
    ]);
}

#[test]
fn typed_columns_are_not_compared_as_text() {
    typed_refusals(&[
        (
            "SELECT 1 FROM people WHERE amount::text = '1.50'",
            "without a cast",
        ),
        (
            "SELECT 1 FROM people WHERE '2020-01-02' = (dob)::text",
            "without a cast",
        ),
        (
            "SELECT 1 FROM people WHERE dob::text IN ('2020-01-02')",
            "without a cast",
        ),
        (
            "SELECT 1 FROM people p JOIN kin k ON k.dob::text = p.dob",
            "without a cast",
        ),
        (
            "SELECT amount::text, count(*) FROM people GROUP BY amount::text",
            "without a cast",
        ),
    ]);
    // Shown as text is fine: the value is decrypted.
    typed_plan("SELECT dob::text FROM people");
}

#[test]
fn typed_columns_keep_the_refusals_of_pii_columns() {
    typed_refusals(&[
        (
            "SELECT 1 FROM people WHERE born = '2020-01-02'::date",
            "randomized",
        ),
        (
            "SELECT 1 FROM people WHERE dob < '2020-01-02'::date",
            "ranges",
        ),
        (
            "SELECT 1 FROM people WHERE dob BETWEEN $1::date AND $2::date",
            "ranges",
        ),
        ("SELECT id FROM people ORDER BY dob", "ORDER BY"),
        ("SELECT 1 FROM people WHERE age + 1 = 5", "arithmetic"),
        (
            "SELECT 1 FROM people WHERE date_trunc('month', seen) = $1",
            "functions",
        ),
        ("SELECT 1 FROM people WHERE active", "people.active"),
        ("UPDATE people SET dob = dob::date", "expression"),
    ]);
}

#[test]
fn a_typed_column_is_created_as_text() {
    assert!(matches!(
        analyze("CREATE TABLE people (id int, dob text)", &typed_policy()),
        Analysis::Plan(_)
    ));
    // The declared type itself, as an ORM's migration writes it, is created as text.
    assert_eq!(
        rewritten(
            "CREATE TABLE people (id int, dob date NOT NULL, amount NUMERIC(10, 2), seen timestamp with time zone, age integer)"
        ),
        "CREATE TABLE people (id int, dob text NOT NULL, amount text, seen text, age text)"
    );
    assert_eq!(
        rewritten("ALTER TABLE people ADD COLUMN active boolean"),
        "ALTER TABLE people ADD COLUMN active text"
    );
    typed_refusals(&[
        (
            "CREATE TABLE people (id int, dob timestamp)",
            "declare it as text (or varchar), not timestamp; the application still sees it as date",
        ),
        (
            "CREATE TABLE people (id int, amount numeric(12,2))",
            "sees it as numeric(10,2)",
        ),
        ("CREATE TABLE people (id int, dob /* c */ date)", "not date"),
        (
            "ALTER TABLE people ALTER COLUMN amount TYPE numeric(10,2)",
            "sees it as numeric(10,2)",
        ),
    ]);
}
