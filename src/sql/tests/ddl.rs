//! DDL on PII tables: what keeps working on ciphertext, what is refused.

use super::*;

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
