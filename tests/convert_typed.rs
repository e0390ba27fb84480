//! `pgcloak encrypt` and `decrypt` on typed PII columns (issue 13) against a real Postgres:
//! a table whose PII columns still have their own types (date, numeric, boolean, jsonb,
//! timestamptz) is refused without `--alter-types` (as `check --upstream-dsn` refuses it),
//! described by a dry run, and converted with it: the columns become text and hold envelopes
//! of the values' canonical forms, whatever the database's DateStyle and TimeZone. Decrypt
//! writes the canonical text back, which casts to the original type and values.

mod common;

use std::process::{Command, Output};

use common::{pgcloak_bin, PASSWORD};
use pgcloak::crypto::MasterKey;
use pgcloak::pgtemp::PgTemp;

const POLICY: &str = "  people:
    born: { mode: deterministic, type: date }
    salary: { mode: randomized, type: numeric }
    consent: { mode: randomized, type: boolean }
    profile: { mode: randomized, type: jsonb }
    seen: { mode: randomized, type: timestamptz }
    note: { mode: deterministic, type: date }
    email: deterministic
";

const TYPED: [&str; 5] = ["born", "salary", "consent", "profile", "seen"];

struct Setup {
    _pg: PgTemp,
    dir: std::path::PathBuf,
    dsn: String,
    config: std::path::PathBuf,
}

impl Setup {
    fn start() -> Setup {
        let pg = PgTemp::builder()
            .superuser_password(PASSWORD)
            .start()
            .unwrap();
        let dir = common::fresh_dir("convert-typed");
        std::fs::write(dir.join("k1"), MasterKey::generate().to_base64()).unwrap();
        let dsn = format!(
            "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            pg.port()
        );
        let config = dir.join("pgcloak.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:0\"\nupstream:\n  host: 127.0.0.1\n  port: {}\nkeys:\n  master_key_file: k1\ntables:\n{POLICY}",
                pg.port()
            ),
        )
        .unwrap();
        let setup = Setup {
            _pg: pg,
            dir,
            dsn,
            config,
        };
        // Settings under which `::text` is not the canonical form: the tool must not
        // depend on them.
        setup.sql(
            "ALTER DATABASE postgres SET DateStyle = 'SQL, DMY';
             ALTER DATABASE postgres SET TimeZone = 'Asia/Tokyo';
             ALTER DATABASE postgres SET extra_float_digits = 0;",
        );
        setup.sql(
            "CREATE TABLE people (id int PRIMARY KEY, born date, salary numeric, consent boolean,
                                  profile jsonb, seen timestamptz, note text, email text);
             INSERT INTO people VALUES
               (1, '2020-01-02', 1.50, true, '{\"b\": [1, 2], \"a\": {\"x\": null}}',
                '2020-01-02 03:04:05.5+02', '2020-1-2', 'ann@example.com'),
               (2, '2020-01-02', 20, false, '\"just a string\"', '1999-12-31 23:59:59+00',
                '2020-01-02', 'bo@example.com'),
               (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
               (4, '0044-03-15 BC', -0.000100, true, '[]', 'infinity', ' 1/2/2020', 'cy@example.com');
             CREATE TABLE original AS SELECT * FROM people;",
        );
        setup
    }

    fn sql(&self, sql: &str) -> String {
        let out = common::stdout(&common::psql(
            &self.dsn,
            &["-v", "ON_ERROR_STOP=1", "-Atc", sql],
        ));
        out.trim().to_owned()
    }

    fn tool(&self, args: &[&str]) -> Output {
        Command::new(pgcloak_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .args(["--upstream-dsn", &self.dsn])
            .output()
            .unwrap()
    }

    fn types(&self) -> String {
        self.sql(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
             FROM pg_attribute WHERE attrelid = 'people'::regclass AND attnum > 0",
        )
    }

    /// The canonical forms inside the envelopes of `column`, by id (NULL as "NULL").
    fn opened(&self, column: &str) -> Vec<String> {
        let loaded = pgcloak::config::Config::load(&self.config).unwrap();
        let cloak = pgcloak::cloak::Cloak::from_config(&loaded, &self.config)
            .unwrap()
            .unwrap();
        let id = format!("public.people.{column}");
        let stored = self.sql(&format!(
            "SELECT coalesce({column}, 'NULL') FROM people ORDER BY id"
        ));
        stored
            .lines()
            .map(|value| match value {
                "NULL" => "NULL".to_owned(),
                envelope => {
                    let plain = cloak.keyring().decrypt(envelope.as_bytes(), Some(&id));
                    let plain = plain.unwrap_or_else(|e| panic!("{id}: {envelope}: {e}"));
                    String::from_utf8_lossy(&plain).into_owned()
                }
            })
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(output: &Output) -> (String, String) {
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    (out, err)
}

fn ok(output: &Output) -> String {
    let (out, err) = text(output);
    assert!(output.status.success(), "{out}\n{err}");
    out
}

#[test]
fn typed_columns_are_altered_encrypted_in_canonical_form_and_decrypted_back() {
    let s = Setup::start();
    let before = s.types();
    assert!(
        before.contains("born date, salary numeric, consent boolean"),
        "{before}"
    );

    // Without --alter-types: refused naming each column, its type and both ways, and
    // nothing changes. `check --upstream-dsn` says the same.
    let refused = s.tool(&["encrypt"]);
    let (out, err) = text(&refused);
    assert!(!refused.status.success(), "{out}");
    assert!(err.contains("5 column(s) cannot be converted"), "{err}");
    for (column, ty) in TYPED.iter().zip([
        "date",
        "numeric",
        "boolean",
        "jsonb",
        "timestamp with time zone",
    ]) {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("public.people.{column} is declared")))
            .unwrap_or_else(|| panic!("no line for {column}: {err}"));
        assert!(line.contains(&format!("but is {ty} in Postgres")), "{line}");
        assert!(line.contains("pgcloak encrypt --alter-types"), "{line}");
        assert!(
            line.contains(&format!(
                "ALTER COLUMN {column} TYPE text USING {column}::text"
            )),
            "{line}"
        );
        assert!(line.contains("ACCESS EXCLUSIVE lock"), "{line}");
        assert!(
            line.contains("swap the names in one short transaction"),
            "{line}"
        );
    }
    let check = s.tool(&["check"]);
    let (check_out, check_err) = text(&check);
    assert!(!check.status.success(), "{check_out}");
    for column in TYPED {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("public.people.{column} is")))
            .unwrap();
        assert!(
            check_err.contains(line.trim()),
            "check says otherwise about {column}:\n{check_err}"
        );
    }
    assert!(
        check_out
            .contains("public.people.note: text, deterministic (the application sees date) — ok"),
        "{check_out}"
    );
    assert_eq!(s.types(), before);

    // The dry run says what it would alter and count, and changes nothing.
    let dry = ok(&s.tool(&["encrypt", "--alter-types", "--dry-run"]));
    assert!(dry.contains("public.people: would run ALTER TABLE \"public\".\"people\" ALTER COLUMN \"born\" TYPE text USING \"born\"::text, ALTER COLUMN \"consent\""), "{dry}");
    assert!(dry.contains("ACCESS EXCLUSIVE lock"), "{dry}");
    assert!(dry.contains("would encrypt 21 value(s) (born: 3, consent: 3, email: 3, note: 3, profile: 3, salary: 3, seen: 3)"), "{dry}");
    assert_eq!(s.types(), before);

    // One step: ALTER, then the batches.
    let done = ok(&s.tool(&["encrypt", "--alter-types"]));
    assert!(done.contains("ACCESS EXCLUSIVE lock"), "{done}");
    assert!(
        done.contains("public.people: column type(s) altered to text"),
        "{done}"
    );
    assert!(
        done.contains(
            "values: born: 3, consent: 3, email: 3, note: 3, profile: 3, salary: 3, seen: 3"
        ),
        "{done}"
    );
    let after = s.types();
    assert!(
        after.contains("born text, salary text, consent text, profile text, seen text"),
        "{after}"
    );
    let plaintext = s.sql(
        "SELECT count(*) FROM people WHERE born NOT LIKE 'pgc1$%' OR salary NOT LIKE 'pgc1$%' \
         OR consent NOT LIKE 'pgc1$%' OR profile NOT LIKE 'pgc1$%' OR seen NOT LIKE 'pgc1$%' \
         OR note NOT LIKE 'pgc1$%' OR email NOT LIKE 'pgc1$%'",
    );
    assert_eq!(plaintext, "0");
    // The envelopes hold the canonical forms (ISO, UTC, shortest numeric).
    let expected: [(&str, [&str; 4]); 6] = [
        (
            "born",
            ["2020-01-02", "2020-01-02", "NULL", "0044-03-15 BC"],
        ),
        ("salary", ["1.5", "20", "NULL", "-0.0001"]),
        ("consent", ["t", "f", "NULL", "t"]),
        (
            "profile",
            [
                "{\"a\": {\"x\": null}, \"b\": [1, 2]}",
                "\"just a string\"",
                "NULL",
                "[]",
            ],
        ),
        (
            "seen",
            [
                "2020-01-02 01:04:05.5+00",
                "1999-12-31 23:59:59+00",
                "NULL",
                "infinity",
            ],
        ),
        ("note", ["2020-01-02", "2020-01-02", "NULL", "2020-01-02"]),
    ];
    for (column, values) in expected {
        assert_eq!(s.opened(column), values, "{column}");
    }
    // Equal values, equal deterministic ciphertexts (also from differently written text).
    assert_eq!(
        s.sql(
            "SELECT count(DISTINCT born) || ' ' || count(DISTINCT note) FROM people WHERE id < 3"
        ),
        "1 1"
    );
    assert_eq!(s.sql("SELECT count(DISTINCT note) FROM people"), "1");
    let checked = ok(&s.tool(&["check"]));
    assert!(
        checked
            .contains("public.people.born: text, deterministic (the application sees date) — ok"),
        "{checked}"
    );

    // Plaintext the declared type does not accept is left as it is, and the run fails.
    s.sql("INSERT INTO people (id, note) VALUES (5, 'someday')");
    let bad = s.tool(&["encrypt"]);
    let (out, err) = text(&bad);
    assert!(!bad.status.success(), "{out}");
    assert!(
        out.contains("NOT converted (not a valid value of the column, left as is): note: 1"),
        "{out}"
    );
    assert!(err.contains("1 value(s) could not be converted"), "{err}");
    assert!(
        !out.contains("someday") && !err.contains("someday"),
        "the value leaks"
    );
    s.sql("DELETE FROM people WHERE id = 5");

    // Leaving: decrypt writes the canonical text, which casts back to the types.
    let columns = "born,salary,consent,profile,seen,note";
    let left = ok(&s.tool(&["decrypt", "--table", "people", "--columns", columns]));
    assert!(left.contains("public.people.born: its values are the canonical text of date; once no envelope is left, give it its type back: ALTER TABLE \"public\".\"people\" ALTER COLUMN \"born\" TYPE date USING \"born\"::date"), "{left}");
    assert!(
        left.contains("TYPE timestamp with time zone USING \"seen\"::timestamp with time zone"),
        "{left}"
    );
    assert_eq!(s.sql("SELECT salary FROM people WHERE id = 1"), "1.5");
    s.sql(
        "ALTER TABLE people ALTER COLUMN born TYPE date USING born::date,
           ALTER COLUMN salary TYPE numeric USING salary::numeric,
           ALTER COLUMN consent TYPE boolean USING consent::boolean,
           ALTER COLUMN profile TYPE jsonb USING profile::jsonb,
           ALTER COLUMN seen TYPE timestamptz USING seen::timestamptz",
    );
    let same = s.sql(
        "SELECT count(*) FROM people p JOIN original o USING (id)
         WHERE (p.born, p.salary, p.consent, p.profile, p.seen)
               IS NOT DISTINCT FROM (o.born, o.salary, o.consent, o.profile, o.seen)",
    );
    assert_eq!(same, "4", "every value is back as it was");
}

#[test]
fn alter_types_is_only_for_encrypt() {
    let s = Setup::start();
    let refused = s.tool(&[
        "decrypt",
        "--table",
        "people",
        "--columns",
        "born",
        "--alter-types",
    ]);
    let (_, err) = text(&refused);
    assert!(!refused.status.success());
    assert!(
        err.contains("--alter-types is for `pgcloak encrypt`, not `decrypt`"),
        "{err}"
    );
    // A typed column that is not text holds no envelopes: nothing to decrypt, said so.
    let refused = s.tool(&["decrypt", "--table", "people", "--columns", "born"]);
    let (_, err) = text(&refused);
    assert!(
        err.contains("public.people.born is date in Postgres: it holds no envelopes"),
        "{err}"
    );
}

/// The README's online path for a big table, run as written: a text column beside the
/// `date` one, kept in step by a trigger, backfilled, swapped in; then `pgcloak encrypt`.
#[test]
fn the_online_path_of_the_readme_makes_a_typed_column_text_without_a_rewrite() {
    let s = Setup::start();
    let readme = include_str!("../README.md");
    let start = readme
        .find("```sql\n-- 1. A text column beside it")
        .expect("the README's online path");
    let block = &readme[start + "```sql\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let (step1, rest) = block.split_at(block.find("-- 2.").unwrap());
    let (step2, step3) = rest.split_at(rest.find("-- 3.").unwrap());
    let run = |sql: &str| {
        let file = s.dir.join("step.sql");
        std::fs::write(&file, sql).unwrap();
        let path = file.to_str().unwrap();
        common::stdout(&common::psql(
            &s.dsn,
            &["-v", "ON_ERROR_STOP=1", "-f", path],
        ))
    };
    s.sql(
        "CREATE TABLE customers (id int PRIMARY KEY, date_of_birth date);
         INSERT INTO customers SELECT i, date '1970-01-01' + i FROM generate_series(1, 50) i;
         INSERT INTO customers VALUES (51, NULL), (52, '0044-03-15 BC');",
    );
    let filenode = s.sql("SELECT pg_relation_filenode('customers')");
    run(step1);
    // Written meanwhile (under the database's DateStyle SQL, DMY): the trigger copies it.
    s.sql("INSERT INTO customers VALUES (53, '31/12/1999'); UPDATE customers SET date_of_birth = '01/02/2003' WHERE id = 1");
    run(step2);
    run(step3);
    assert_eq!(
        s.sql("SELECT pg_relation_filenode('customers')"),
        filenode,
        "no rewrite"
    );
    let types = s.sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attname = 'date_of_birth'");
    assert_eq!(types, "text");
    let texts = s.sql("SELECT coalesce(date_of_birth, 'NULL') FROM customers WHERE id IN (1, 2, 51, 52, 53) ORDER BY id");
    assert_eq!(
        texts,
        "2003-02-01\n1970-01-03\nNULL\n0044-03-15 BC\n1999-12-31"
    );

    let config = s.dir.join("customers.yaml");
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    let yaml = yaml[..yaml.find("tables:").unwrap()].to_owned()
        + "tables:\n  customers:\n    date_of_birth: { mode: deterministic, type: date, migrating: true }\n";
    std::fs::write(&config, yaml).unwrap();
    let output = Command::new(pgcloak_bin())
        .args(["encrypt", "--config"])
        .arg(&config)
        .args(["--upstream-dsn", &s.dsn])
        .output()
        .unwrap();
    let done = ok(&output);
    assert!(done.contains("values: date_of_birth: 52"), "{done}");
    assert!(
        done.contains("no plaintext is left; remove `migrating: true`"),
        "{done}"
    );
    let loaded = pgcloak::config::Config::load(&config).unwrap();
    let cloak = pgcloak::cloak::Cloak::from_config(&loaded, &config)
        .unwrap()
        .unwrap();
    let envelope = s.sql("SELECT date_of_birth FROM customers WHERE id = 53");
    let plain = cloak
        .keyring()
        .decrypt(envelope.as_bytes(), Some("public.customers.date_of_birth"));
    assert_eq!(&plain.unwrap()[..], b"1999-12-31");
}
