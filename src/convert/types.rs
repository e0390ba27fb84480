//! Typed PII columns (issue 13) in a conversion: a column declared `type: date` is `text` in
//! Postgres once adopted, holding envelopes of canonical forms, but an existing table still
//! has it as `date`. `pgcloak encrypt --alter-types` makes it text in one step (one
//! `ALTER TABLE` per table, with the session settings under which `::text` prints the
//! canonical form); without the flag such a column is refused with both ways to go, the
//! same words `pgcloak check --upstream-dsn` uses.

use pgcloak::crypto::is_envelope;
use pgcloak::crypto::Keyring;
use pgcloak::pgtype::{self, Kind, PgType, Settings};
use pgcloak::policy::{ColumnId, Policy};
use tokio_postgres::Client;

use super::sql::ident;
use super::Direction;

/// The settings under which Postgres's `::text` is the canonical form of every type.
pub const CANONICAL_SETTINGS: &str = "SET LOCAL DateStyle = 'ISO, YMD'; \
     SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 1; \
     SET LOCAL bytea_output = 'hex'; SET LOCAL IntervalStyle = 'postgres'";

/// A column's type as `format_type` prints it, per PII column (None: no such column).
pub async fn stored_types(
    client: &Client,
    schema: &str,
    table: &str,
    columns: &[ColumnId],
) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&schema, &table],
        )
        .await?;
    let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(columns
        .iter()
        .map(|c| {
            let hit = found.iter().find(|(name, _)| *name == c.column);
            hit.map(|(_, ty)| ty.clone())
        })
        .collect())
}

/// Whether a column of this type (`format_type`) holds text, so envelopes can be stored in
/// it without changing its type (whether it is long enough is `check`'s business).
pub fn is_string_type(type_name: &str) -> bool {
    let array = type_name.ends_with(']');
    !array && is_string_base(type_name)
}

fn is_string_base(type_name: &str) -> bool {
    type_name == "text"
        || type_name == "name"
        || type_name == "bpchar"
        || type_name.starts_with("character")
        || type_name == "citext"
        || type_name.ends_with(".citext")
}

/// What `encrypt`, `rotate` and `decrypt` say about a typed PII column that is not text in
/// Postgres yet; `check --upstream-dsn` says the same.
pub fn not_text_yet(id: &ColumnId, type_name: &str, declared: &PgType) -> String {
    let table = format!("{}.{}", plain_ident(&id.schema), plain_ident(&id.table));
    let c = plain_ident(&id.column);
    format!(
        "{id} is declared `type: {}` but is {type_name} in Postgres, where a PII column is text \
         holding envelopes: convert it in one step with `pgcloak encrypt --alter-types` \
         (ALTER TABLE {table} ALTER COLUMN {c} TYPE text USING {c}::text, which rewrites the \
         table under an ACCESS EXCLUSIVE lock), or online: add a text column, backfill it and \
         swap the names in one short transaction (README, \"Typed columns that are not text \
         yet\")",
        declared.name()
    )
}

/// What is said about a PII column without a declared type whose Postgres type is not text.
pub fn undeclared_not_text(id: &ColumnId, type_name: &str) -> String {
    let keep = match PgType::parse(type_name) {
        Ok(ty) => format!(
            "; to keep the application seeing {type_name}, declare `type: {}` for it in the \
             policy and run `pgcloak encrypt --alter-types`",
            ty.name()
        ),
        Err(_) => String::new(),
    };
    let table = format!("{}.{}", plain_ident(&id.schema), plain_ident(&id.table));
    let c = plain_ident(&id.column);
    format!(
        "{id}: {type_name} cannot hold ciphertext, which is text: ALTER TABLE {table} ALTER \
         COLUMN {c} TYPE text USING {c}::text{keep}"
    )
}

/// The columns of one table that `--alter-types` makes text, or why the run cannot go on
/// (one line per column). `stored`: each column's Postgres type, from [`stored_types`].
pub fn to_alter(
    policy: &Policy,
    columns: &[ColumnId],
    stored: &[Option<String>],
    direction: Direction,
    alter_types: bool,
) -> Result<Vec<ColumnId>, Vec<String>> {
    let (mut alter, mut problems) = (Vec::new(), Vec::new());
    for (id, stored) in columns.iter().zip(stored) {
        let Some(type_name) = stored else {
            problems.push(format!(
                "{id}: column does not exist (`pgcloak check --upstream-dsn` says more)"
            ));
            continue;
        };
        if is_string_type(type_name) {
            continue;
        }
        let declared = policy.column_type(&id.to_string());
        match (declared.kind(), direction) {
            (Kind::Text, _) => problems.push(undeclared_not_text(id, type_name)),
            (_, Direction::Encrypt) if alter_types => alter.push(id.clone()),
            (_, Direction::Encrypt) => problems.push(not_text_yet(id, type_name, &declared)),
            (_, _) => problems.push(format!(
                "{id} is {type_name} in Postgres: it holds no envelopes, so there is nothing to {}",
                direction.verb()
            )),
        }
    }
    match problems.is_empty() {
        true => Ok(alter),
        false => Err(problems),
    }
}

/// `ALTER TABLE t ALTER COLUMN a TYPE text USING a::text, ...`: one rewrite for them all.
pub fn alter_sql(table: &str, columns: &[ColumnId]) -> String {
    let each: Vec<String> = columns
        .iter()
        .map(|c| {
            let c = ident(&c.column);
            format!("ALTER COLUMN {c} TYPE text USING {c}::text")
        })
        .collect();
    format!("ALTER TABLE {table} {}", each.join(", "))
}

/// Runs [`alter_sql`] in one transaction under [`CANONICAL_SETTINGS`], so that each value
/// becomes its canonical text (encryption then canonicalises what remains, e.g. `1.50`).
pub async fn alter(client: &Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let done = client
        .batch_execute(&format!("{CANONICAL_SETTINGS}; {sql}"))
        .await;
    match done {
        Ok(()) => client.batch_execute("COMMIT").await,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// One value converted, Ok(None) when it needs nothing, Err when it cannot be (left as is):
/// plaintext is read with its declared type (`2020-1-2` → `2020-01-02`) and encrypted in
/// canonical form; a decrypted typed value is written as its canonical text.
pub fn convert(
    keyring: &Keyring,
    name: &str,
    ty: &PgType,
    settings: &Settings,
    value: &str,
    direction: Direction,
) -> Result<Option<String>, ()> {
    let envelope = is_envelope(value.as_bytes());
    match direction {
        Direction::Encrypt if envelope => Ok(None),
        Direction::Encrypt if ty.kind() == Kind::Text => keyring
            .encrypt(name, value.as_bytes())
            .map(Some)
            .map_err(drop),
        Direction::Encrypt => {
            let canonical = pgtype::from_text(ty, value, settings).map_err(drop)?;
            keyring.encrypt(name, &canonical).map(Some).map_err(drop)
        }
        Direction::Rotate if !envelope || keyring.is_current(value.as_bytes(), name) => Ok(None),
        Direction::Rotate => {
            let plain = keyring
                .decrypt(value.as_bytes(), Some(name))
                .map_err(drop)?;
            keyring.encrypt(name, &plain).map(Some).map_err(drop)
        }
        Direction::Decrypt if !envelope => Ok(None),
        Direction::Decrypt => {
            let plain = keyring
                .decrypt(value.as_bytes(), Some(name))
                .map_err(drop)?;
            match ty.kind() {
                Kind::Text => String::from_utf8(plain.to_vec()).map(Some).map_err(drop),
                _ => pgtype::to_text(ty, &plain, settings)
                    .map(Some)
                    .map_err(drop),
            }
        }
    }
}

/// An identifier as SQL needs it written in a message: as is when lower-case and plain.
fn plain_ident(name: &str) -> String {
    let start = |c: char| c.is_ascii_lowercase() || c == '_';
    let plain = |c: char| start(c) || c.is_ascii_digit() || c == '$';
    match name.starts_with(start) && name.chars().all(plain) {
        true => name.to_owned(),
        false => ident(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcloak::crypto::{MasterKey, Mode};

    fn id(column: &str) -> ColumnId {
        ColumnId {
            schema: "public".into(),
            table: "people".into(),
            column: column.into(),
        }
    }

    #[test]
    fn typed_plaintext_is_encrypted_in_canonical_form_and_decrypted_to_it() {
        let name = "public.people.salary";
        let keyring = Keyring::new(
            &MasterKey::generate(),
            &[(name.into(), Mode::Deterministic)],
        );
        let numeric = PgType::parse("numeric").unwrap();
        let settings = Settings::default();
        let run =
            |value: &str, direction| convert(&keyring, name, &numeric, &settings, value, direction);
        let a = run("1.50", Direction::Encrypt).unwrap().unwrap();
        let b = run(" 1.5", Direction::Encrypt).unwrap().unwrap();
        assert_eq!(a, b, "values equal to Postgres encrypt equal");
        assert_eq!(run(&a, Direction::Decrypt).unwrap().as_deref(), Some("1.5"));
        assert_eq!(
            run("one", Direction::Encrypt),
            Err(()),
            "left as is, counted"
        );
        assert_eq!(run(&a, Direction::Encrypt), Ok(None));
        let bytea = PgType::parse("bytea").unwrap();
        let sealed = convert(
            &keyring,
            name,
            &bytea,
            &settings,
            "\\x00ff",
            Direction::Encrypt,
        );
        let sealed = sealed.unwrap().unwrap();
        let opened = convert(
            &keyring,
            name,
            &bytea,
            &settings,
            &sealed,
            Direction::Decrypt,
        );
        assert_eq!(opened.unwrap().as_deref(), Some("\\x00ff"));
    }

    #[test]
    fn columns_not_text_are_altered_with_the_flag_and_refused_without_it() {
        let yaml = "people:\n  born: { mode: deterministic, type: date }\n  email: deterministic\n";
        let policy = Policy::from_yaml(&serde_yaml::from_str(yaml).unwrap()).unwrap();
        let columns = [id("born"), id("email")];
        let stored = [Some("date".to_owned()), Some("text".to_owned())];
        let alter = |direction, flag| to_alter(&policy, &columns, &stored, direction, flag);
        assert_eq!(alter(Direction::Encrypt, true), Ok(vec![id("born")]));
        let refused = alter(Direction::Encrypt, false).unwrap_err();
        assert_eq!(refused.len(), 1);
        let message = &refused[0];
        assert!(
            message
                .starts_with("public.people.born is declared `type: date` but is date in Postgres"),
            "{message}"
        );
        assert!(
            message.contains("pgcloak encrypt --alter-types"),
            "{message}"
        );
        assert!(
            message
                .contains("ALTER TABLE public.people ALTER COLUMN born TYPE text USING born::text"),
            "{message}"
        );
        assert!(message.contains("ACCESS EXCLUSIVE"), "{message}");
        assert!(
            message.contains("swap the names in one short transaction"),
            "{message}"
        );
        assert!(alter(Direction::Decrypt, true).unwrap_err()[0].contains("nothing to decrypt"));
        let stored = [Some("text".to_owned()), Some("integer".to_owned())];
        let refused = to_alter(&policy, &columns, &stored, Direction::Encrypt, true).unwrap_err();
        assert!(
            refused[0].contains("declare `type: integer`"),
            "{}",
            refused[0]
        );
        assert_eq!(
            alter_sql("\"public\".\"people\"", &[id("born"), id("Seen")]),
            "ALTER TABLE \"public\".\"people\" ALTER COLUMN \"born\" TYPE text USING \"born\"::text, ALTER COLUMN \"Seen\" TYPE text USING \"Seen\"::text"
        );
    }
}
