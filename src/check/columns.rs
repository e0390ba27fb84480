//! The configured PII columns against the catalog: each must exist (names match exactly, as
//! Postgres stores them), have a type that can hold a ciphertext envelope (`text`, or
//! `varchar` without a limit or with one large enough) and no DEFAULT Postgres would store in
//! clear. [`CATALOG_QUERY`] fetches the facts; [`check_column`] and [`classify`] are pure.

use pgcloak::crypto::{envelope_len, Mode};
use pgcloak::pgtype::{Kind, PgType};
use pgcloak::policy::ColumnId;

use crate::convert::types::{is_string_type, not_text_yet, undeclared_not_text};

/// A `varchar(n)` must hold the ciphertext of at least this many plaintext bytes.
const MIN_PLAINTEXT: usize = 64;
/// Also quoted in messages, as the size of a typical "short string" column.
const TYPICAL_PLAINTEXT: usize = 255;

/// Every column (NULL for a table without columns) of every relation whose schema and name
/// match a configured one case-insensitively; the exact match is made in [`check_column`].
pub(super) const CATALOG_QUERY: &str =
    "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), \
            d.adbin IS NOT NULL AND pg_get_expr(d.adbin, d.adrelid) !~* '^NULL(::.*)?$' \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
     AND lower(n.nspname) = ANY($1) AND lower(c.relname) = ANY($2)";

/// One row of [`CATALOG_QUERY`]: schema, table, column and its `format_type`, and whether
/// the column has a DEFAULT other than NULL.
pub(super) struct CatalogRow {
    pub schema: String,
    pub table: String,
    pub column: Option<(String, String)>,
    pub has_default: bool,
}

const RENAME: &str = "or correct the name under `tables`";

/// The OK line of one configured column (declared with type `declared`), or its problem
/// line.
pub(super) fn check_column(
    id: &ColumnId,
    mode: Mode,
    declared: &PgType,
    rows: &[CatalogRow],
) -> Result<String, String> {
    let same = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
    let fold = |name: &str| {
        format!("Postgres folds unquoted names to lower case, so write `{name}` under `tables`")
    };
    let (schema, table, column) = (&id.schema, &id.table, &id.column);
    let alter = format!("ALTER TABLE {}.{}", ident(schema), ident(table));
    let col = ident(column);
    let mut columns = (rows.iter())
        .filter(|r| &r.schema == schema && &r.table == table)
        .peekable();
    if columns.peek().is_none() {
        let missing = format!("{id}: table {schema}.{table} does not exist");
        let similar = (rows.iter()).find(|r| same(&r.schema, schema) && same(&r.table, table));
        return Err(match similar {
            Some(r) => format!(
                "{missing}, but {}.{} does; {}",
                r.schema,
                r.table,
                fold(&r.table)
            ),
            None => format!("{missing}: create it, {RENAME}"),
        });
    }
    let columns: Vec<_> = columns
        .filter_map(|r| r.column.as_ref().map(|c| (c, r.has_default)))
        .collect();
    let with_default = columns.iter().any(|((c, _), d)| c == column && *d);
    let columns: Vec<_> = columns.into_iter().map(|(c, _)| c).collect();
    let Some((_, type_name)) = columns.iter().find(|(c, _)| c == column) else {
        return Err(match columns.iter().find(|(c, _)| same(c, column)) {
            Some((c, _)) => format!("{id}: column does not exist, but {c} does; {}", fold(c)),
            None => format!("{id}: column does not exist: {alter} ADD COLUMN {col} text, {RENAME}"),
        });
    };
    // Not text at all: `pgcloak encrypt` says the same about these.
    if !is_string_type(type_name) {
        return Err(match declared.kind() {
            Kind::Text => undeclared_not_text(id, type_name),
            _ => not_text_yet(id, type_name, declared),
        });
    }
    if let Err(why) = classify(type_name, mode) {
        return Err(format!("{id}: {why}: {alter} ALTER COLUMN {col} TYPE text"));
    }
    if with_default {
        return Err(format!(
            "{id}: has a DEFAULT, which Postgres stores in clear in rows that omit the column: {alter} ALTER COLUMN {col} DROP DEFAULT"
        ));
    }
    let holds = match varchar_limit(type_name) {
        Some(n) => format!(
            " (holds plaintext of up to {} bytes)",
            longest_plaintext(n, mode)
        ),
        None => String::new(),
    };
    let shown = match declared.kind() {
        Kind::Text => String::new(),
        _ => format!(" (the application sees {})", declared.name()),
    };
    Ok(format!("{id}: {type_name}, {mode}{shown} — ok{holds}"))
}

/// `n` of `character varying(n)`.
fn varchar_limit(type_name: &str) -> Option<usize> {
    (type_name.strip_prefix("character varying("))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|n| n.parse::<usize>().ok())
}

/// The longest plaintext (bytes) whose `mode` ciphertext fits in `n` characters.
fn longest_plaintext(n: usize, mode: Mode) -> usize {
    let mut len = 0;
    while envelope_len(len + 1, mode) <= n {
        len += 1;
    }
    len
}

/// Whether a column of type `type_name` (as printed by `format_type`) can hold `mode`
/// ciphertexts; `Err` says why not.
fn classify(type_name: &str, mode: Mode) -> Result<(), String> {
    if type_name == "text" || type_name == "character varying" {
        return Ok(());
    }
    if let Some(n) = varchar_limit(type_name) {
        let need = envelope_len(MIN_PLAINTEXT, mode);
        let typical = envelope_len(TYPICAL_PLAINTEXT, mode);
        if n >= need {
            return Ok(());
        }
        return Err(format!(
            "{type_name} is too short: a {mode} ciphertext takes {need} characters for a \
             {MIN_PLAINTEXT}-byte value, {typical} for {TYPICAL_PLAINTEXT} bytes \
             (use text, or at least varchar({typical}))"
        ));
    }
    if type_name == "citext" || type_name.ends_with(".citext") {
        let why = "compares case-insensitively, but ciphertext is case-sensitive";
        return Err(format!("{type_name} {why}, so lookups would silently miss"));
    }
    if type_name == "bpchar" || type_name.starts_with("character(") {
        return Err(format!(
            "{type_name} pads values with spaces, corrupting ciphertext"
        ));
    }
    Err(format!("{type_name} cannot hold ciphertext, which is text"))
}

/// An identifier as SQL needs it written: as is when lower-case and plain, else quoted.
pub(super) fn ident(name: &str) -> String {
    let start = |c: char| c.is_ascii_lowercase() || c == '_';
    let plain = |c: char| start(c) || c.is_ascii_digit() || c == '$';
    match name.starts_with(start) && name.chars().all(plain) {
        true => name.to_owned(),
        false => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_varchar_says_the_longest_plaintext_it_holds() {
        for mode in [Mode::Deterministic, Mode::Randomized] {
            for n in [59, 100, 255] {
                let longest = longest_plaintext(n, mode);
                assert!(envelope_len(longest, mode) <= n, "{n}");
                assert!(envelope_len(longest + 1, mode) > n, "{n}");
            }
        }
        assert_eq!(varchar_limit("character varying(255)"), Some(255));
        assert_eq!(varchar_limit("text"), None);
    }

    #[test]
    fn text_family_types_are_classified() {
        let (d, r) = (Mode::Deterministic, Mode::Randomized);
        let need = envelope_len(MIN_PLAINTEXT, r);
        let varchar = format!("character varying({need})");
        for ok in ["text", "character varying", &varchar] {
            assert_eq!(classify(ok, r), Ok(()), "{ok}");
        }
        let short = classify(&format!("character varying({})", need - 1), r).unwrap_err();
        assert!(short.contains(&format!("takes {need} characters")));
        let rejected = [
            ("citext", "case-insensitively"),
            ("ext.citext", "case-insensitively"),
            ("character(200)", "pads"),
            ("bpchar", "pads"),
            ("integer", "cannot hold"),
            ("character varying(200)[]", "cannot hold"),
        ];
        for (type_name, why) in rejected {
            let err = classify(type_name, d).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn columns_are_matched_exactly_with_case_hints() {
        let row = |column: &str, type_name: &str| CatalogRow {
            schema: "public".into(),
            table: "users".into(),
            column: Some((column.into(), type_name.into())),
            has_default: column == "nick",
        };
        let rows = [
            row("email", "text"),
            row("age", "integer"),
            row("nick", "text"),
        ];
        let check = |table: &str, column: &str| {
            let (schema, table, column) = ("public".into(), table.into(), column.into());
            let id = ColumnId {
                schema,
                table,
                column,
            };
            check_column(&id, Mode::Deterministic, &PgType::new(Kind::Text), &rows)
        };
        let ok = check("users", "email").unwrap();
        assert_eq!(ok, "public.users.email: text, deterministic — ok");
        let problem = |table, column| check(table, column).unwrap_err();
        let age = problem("users", "age");
        assert!(age.starts_with("public.users.age: integer cannot hold"));
        assert!(age.contains("ALTER TABLE public.users ALTER COLUMN age TYPE text USING age::text"));
        assert!(age.contains("declare `type: integer`"), "{age}");
        assert!(problem("users", "Email").contains("but email does; Postgres folds unquoted"));
        assert!(problem("users", "phone").contains("ADD COLUMN phone text"));
        assert!(problem("users", "nick").ends_with("ALTER COLUMN nick DROP DEFAULT"));
        let upper = problem("Users", "email");
        assert!(upper.contains("public.Users does not exist, but public.users does"));
        assert!(problem("orders", "card").contains("public.orders does not exist: create it"));
    }

    #[test]
    fn identifiers_are_quoted_when_needed() {
        assert_eq!(ident("users_2$"), "users_2$");
        assert_eq!(ident("Users"), "\"Users\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
