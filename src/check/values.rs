//! The stored values of each PII column: how many are not envelopes of that column (stored
//! in clear, damaged, copied from another column, or written under a key pgcloak does not
//! hold). Values are streamed with `COPY (SELECT ...) TO STDOUT`, one row at a time, never
//! a whole table in memory, and classified by the keyring ([`classify`]); only counts are
//! ever printed, never a value.

use bytes::Bytes;
use futures_util::StreamExt as _;
use pgcloak::crypto::{is_envelope, CryptoError, Keyring};
use pgcloak::policy::ColumnId;
use tokio_postgres::Client;

use super::chain;
use super::columns::ident;

/// What one stored value of a PII column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A well-formed envelope of this column that decrypts: as it should be.
    Envelope,
    /// No `pgc1$` prefix: stored in clear.
    Clear,
    /// A well-formed envelope whose key id is in no key pgcloak holds.
    UnknownKey,
    /// An envelope of another configured column (copied across).
    OtherColumn,
    /// `pgc1$` but malformed, or failing authentication: altered or truncated.
    Damaged,
}

/// Classifies one value of `column` (its keyring identity). Decrypting authenticates the
/// envelope; the plaintext is wiped on drop, here and now.
pub(super) fn classify(keyring: &Keyring, column: &str, value: &[u8]) -> Kind {
    if !is_envelope(value) {
        return Kind::Clear;
    }
    match keyring.decrypt(value, Some(column)) {
        Ok(_) => Kind::Envelope,
        Err(CryptoError::UnknownKey) => Kind::UnknownKey,
        Err(CryptoError::WrongColumn { .. }) => Kind::OtherColumn,
        Err(_) => Kind::Damaged,
    }
}

/// Per-column counts of each [`Kind`] among the non-NULL values read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub read: u64,
    pub envelopes: u64,
    pub clear: u64,
    pub unknown_key: u64,
    pub other_column: u64,
    pub damaged: u64,
    /// Envelopes of the column per master key name (in the keyring's order).
    pub by_key: Vec<(String, u64)>,
}

impl Counts {
    pub fn add(&mut self, kind: Kind) {
        self.read += 1;
        let slot = match kind {
            Kind::Envelope => &mut self.envelopes,
            Kind::Clear => &mut self.clear,
            Kind::UnknownKey => &mut self.unknown_key,
            Kind::OtherColumn => &mut self.other_column,
            Kind::Damaged => &mut self.damaged,
        };
        *slot += 1;
    }

    /// Values that are not envelopes of the column.
    pub fn bad(&self) -> u64 {
        self.read - self.envelopes
    }

    /// Counts an envelope of the column under its master key.
    fn add_key(&mut self, key: Option<&str>) {
        let Some(key) = key else { return };
        match self.by_key.iter_mut().find(|(name, _)| name == key) {
            Some((_, n)) => *n += 1,
            None => self.by_key.push((key.to_owned(), 1)),
        }
    }

    /// ` (under k2: 10, k1: 3)` when several keys are configured, else empty.
    fn keys_note(&self, configured: usize) -> String {
        if configured < 2 {
            return String::new();
        }
        let keys: Vec<String> = self
            .by_key
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let mut note = format!(" (under {})", keys.join(", "));
        if self.by_key.len() > 1 {
            note.push_str(" — values under more than one key: `pgcloak rotate` moves them to the current one, and a UNIQUE constraint cannot see duplicates across keys meanwhile");
        }
        note
    }
}

/// The OK line of a column whose values are all its envelopes, or its problem line: the
/// counts, why each kind is there and what to do about it.
/// `keys`: how many master keys are configured; `migrating`: the column may hold plaintext
/// (`migrating: true`), which is then counted but not a problem.
pub(super) fn report(
    id: &ColumnId,
    counts: &Counts,
    sample: Option<u64>,
    keys: usize,
    migrating: bool,
) -> Result<String, String> {
    let read = match sample {
        Some(_) => format!("a sample of {} value(s)", counts.read),
        None => format!("{} value(s)", counts.read),
    };
    let note = counts.keys_note(keys);
    if counts.bad() == 0 {
        return Ok(format!(
            "{id}: {read}, all envelopes of this column{note} — ok"
        ));
    }
    if migrating && counts.bad() == counts.clear {
        return Ok(format!(
            "{id}: {read}, {} still in clear (`migrating: true`: `pgcloak encrypt` encrypts them){note} — ok",
            counts.clear
        ));
    }
    let table = format!("{}.{}", ident(&id.schema), ident(&id.table));
    let column = ident(&id.column);
    let mut kinds = Vec::new();
    if counts.clear > 0 {
        kinds.push(format!(
            "{} stored in clear (written directly or before the column joined the policy: \
             find them directly in Postgres with `SELECT ... FROM {table} WHERE {column} NOT LIKE 'pgc1$%'` \
             and write each again through pgcloak, e.g. an UPDATE by primary key through the proxy)",
            counts.clear
        ));
    }
    if counts.unknown_key > 0 {
        kinds.push(format!(
            "{} written under a key pgcloak does not hold (another master key or key version: \
             queries reading them fail until they are decrypted with that key and written \
             again through pgcloak)",
            counts.unknown_key
        ));
    }
    if counts.other_column > 0 {
        kinds.push(format!(
            "{} copied from another PII column, whose key they need (write them again through \
             pgcloak, or configure `same_key_as` if the columns should share keys)",
            counts.other_column
        ));
    }
    if counts.damaged > 0 {
        kinds.push(format!(
            "{} damaged envelopes that fail to decrypt (altered or truncated: restore them \
             from a backup or write them again through pgcloak)",
            counts.damaged
        ));
    }
    Err(format!(
        "{id}: {} of {read} are not envelopes of this column: {}",
        counts.bad(),
        kinds.join("; ")
    ))
}

/// The query reading the non-NULL values of `id`, at most `sample` of them chosen at random
/// (Bernoulli sampling sized by the planner's row estimate) when given. `relkind` and
/// `reltuples` come from `pg_class`.
pub(super) fn select(id: &ColumnId, relkind: &str, reltuples: f64, sample: Option<u64>) -> String {
    let column = ident(&id.column);
    let table = format!("{}.{}", ident(&id.schema), ident(&id.table));
    // A plain table's inheritance children are checked (or reported) as relations of their own.
    let only = if relkind == "r" { "ONLY " } else { "" };
    let (tablesample, limit) = match sample {
        None => (String::new(), String::new()),
        Some(n) => {
            // Expect twice the sample from the estimate, then cut: NULLs and a stale
            // estimate still leave about n values. Views and foreign tables cannot sample.
            let percent = 100.0 * 2.0 * n as f64 / reltuples;
            let samples = matches!(relkind, "r" | "m" | "p");
            let tablesample = match samples && reltuples > 0.0 && percent < 100.0 {
                true => format!(" TABLESAMPLE BERNOULLI ({percent:.6})"),
                false => String::new(),
            };
            (tablesample, format!(" LIMIT {n}"))
        }
    };
    format!(
        "COPY (SELECT {column} FROM {only}{table}{tablesample} WHERE {column} IS NOT NULL{limit}) TO STDOUT"
    )
}

/// Reads and classifies the (non-NULL) values of `id`, streaming.
pub(super) async fn count(
    client: &Client,
    keyring: &Keyring,
    id: &ColumnId,
    sample: Option<u64>,
) -> Result<Counts, String> {
    let failed = |e: tokio_postgres::Error| format!("{id}: cannot read its values: {}", chain(&e));
    let row = client
        .query_one(
            "SELECT c.relkind::text, c.reltuples::float8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&id.schema, &id.table],
        )
        .await
        .map_err(failed)?;
    let query = select(id, row.get(0), row.get(1), sample);
    let stream = client.copy_out(query.as_str()).await.map_err(failed)?;
    let mut stream = std::pin::pin!(stream);
    let column = id.to_string();
    let mut lines = Lines::default();
    let mut counts = Counts::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed)?;
        lines.feed(chunk, |value| {
            let kind = classify(keyring, &column, value);
            if kind == Kind::Envelope {
                counts.add_key(keyring.key_name(value));
            }
            counts.add(kind)
        });
    }
    if let Some(value) = lines.finish() {
        let kind = classify(keyring, &column, &value);
        if kind == Kind::Envelope {
            counts.add_key(keyring.key_name(&value));
        }
        counts.add(kind);
    }
    Ok(counts)
}

/// Splits COPY text output into rows. Postgres sends one row per CopyData, but nothing here
/// relies on it. A row is the COPY-escaped value: an envelope is unchanged by escaping (its
/// alphabet has no backslash, tab or newline) and an escaped non-envelope holds a backslash,
/// which no envelope does, so rows are classified without unescaping.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, chunk: Bytes, mut row: impl FnMut(&[u8])) {
        let mut rest = &chunk[..];
        while let Some(end) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                row(&rest[..end]);
            } else {
                self.partial.extend_from_slice(&rest[..end]);
                row(&self.partial);
                self.partial.clear();
            }
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// A last row without its newline, if any.
    fn finish(self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then_some(self.partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcloak::crypto::{MasterKey, Mode};

    fn id(table: &str, column: &str) -> ColumnId {
        ColumnId {
            schema: "public".into(),
            table: table.into(),
            column: column.into(),
        }
    }

    #[test]
    fn values_are_classified_by_the_keyring() {
        let columns = [
            ("public.users.email".to_string(), Mode::Deterministic),
            ("public.users.name".to_string(), Mode::Randomized),
        ];
        let keyring = Keyring::new(&MasterKey::generate(), &columns);
        let other = Keyring::new(&MasterKey::generate(), &columns);
        let email = "public.users.email";
        let sealed = keyring.encrypt(email, b"ann@example.com").unwrap();
        let name = keyring.encrypt("public.users.name", b"Ann").unwrap();
        let foreign = other.encrypt(email, b"ann@example.com").unwrap();
        let mut damaged = sealed.clone().into_bytes();
        let last = damaged.len() - 1;
        damaged[last] = if damaged[last] == b'A' { b'B' } else { b'A' };
        let truncated = &sealed[..20];
        let cases: [(&[u8], Kind); 7] = [
            (sealed.as_bytes(), Kind::Envelope),
            (b"ann@example.com", Kind::Clear),
            (b"", Kind::Clear),
            (foreign.as_bytes(), Kind::UnknownKey),
            (name.as_bytes(), Kind::OtherColumn),
            (&damaged, Kind::Damaged),
            (truncated.as_bytes(), Kind::Damaged),
        ];
        for (value, kind) in cases {
            let shown = String::from_utf8_lossy(value);
            assert_eq!(classify(&keyring, email, value), kind, "{shown}");
        }
    }

    #[test]
    fn reports_count_and_never_quote_values() {
        let users = id("users", "email");
        let mut counts = Counts::default();
        for kind in [Kind::Envelope, Kind::Envelope, Kind::Clear] {
            counts.add(kind);
        }
        let ok = Counts {
            read: 2,
            envelopes: 2,
            ..Counts::default()
        };
        let line = report(&users, &ok, None, 1, false).unwrap();
        assert_eq!(
            line,
            "public.users.email: 2 value(s), all envelopes of this column — ok"
        );
        let line = report(&users, &counts, Some(10), 1, false).unwrap_err();
        assert!(
            line.starts_with("public.users.email: 1 of a sample of 3 value(s) are not envelopes"),
            "{line}"
        );
        assert!(line.contains("1 stored in clear"), "{line}");
        assert!(line.contains("WHERE email NOT LIKE 'pgc1$%'"), "{line}");
        assert!(!line.contains("under a key"), "{line}");
        counts.add(Kind::UnknownKey);
        counts.add(Kind::OtherColumn);
        counts.add(Kind::Damaged);
        let line = report(&id("Users", "e-mail"), &counts, None, 1, false).unwrap_err();
        assert!(line.contains("4 of 6 value(s)"), "{line}");
        assert!(line.contains("1 written under a key pgcloak does not hold"));
        assert!(line.contains("1 copied from another PII column"));
        assert!(line.contains("1 damaged envelopes"));
        assert!(line.contains("FROM public.\"Users\" WHERE \"e-mail\" NOT LIKE"));
    }

    #[test]
    fn reports_values_per_key_and_plaintext_of_migrating_columns() {
        let users = id("users", "email");
        let mut counts = Counts::default();
        for key in ["k2", "k2", "k1"] {
            counts.add(Kind::Envelope);
            counts.add_key(Some(key));
        }
        let line = report(&users, &counts, None, 2, false).unwrap();
        assert!(
            line.contains("(under k2: 2, k1: 1)") && line.contains("pgcloak rotate"),
            "{line}"
        );
        counts.add(Kind::Clear);
        assert!(report(&users, &counts, None, 2, false).is_err());
        let line = report(&users, &counts, None, 2, true).unwrap();
        assert!(
            line.contains("1 still in clear (`migrating: true`"),
            "{line}"
        );
    }

    #[test]
    fn the_select_samples_only_what_can_be_sampled() {
        let users = id("users", "email");
        assert_eq!(
            select(&users, "r", 1e6, None),
            "COPY (SELECT email FROM ONLY public.users WHERE email IS NOT NULL) TO STDOUT"
        );
        assert_eq!(
            select(&users, "r", 1e6, Some(100)),
            "COPY (SELECT email FROM ONLY public.users TABLESAMPLE BERNOULLI (0.020000) \
             WHERE email IS NOT NULL LIMIT 100) TO STDOUT"
        );
        // Small, never analysed (-1) or non-table relations: the first n values.
        for (relkind, reltuples) in [("r", 150.0), ("r", -1.0), ("v", 1e6), ("f", 1e6)] {
            let sql = select(&users, relkind, reltuples, Some(100));
            assert!(
                !sql.contains("TABLESAMPLE") && sql.contains("LIMIT 100"),
                "{sql}"
            );
        }
        let partitioned = select(&users, "p", 1e6, Some(100));
        assert!(
            partitioned.contains("FROM public.users TABLESAMPLE"),
            "{partitioned}"
        );
    }

    #[test]
    fn rows_split_across_chunks_are_joined() {
        let mut lines = Lines::default();
        let mut rows = Vec::new();
        for chunk in ["ab\ncd", "ef\n", "\n", "gh\ni", "j"] {
            lines.feed(Bytes::from(chunk), |row| rows.push(row.to_vec()));
        }
        rows.extend(lines.finish());
        let rows: Vec<_> = rows.iter().map(|r| String::from_utf8_lossy(r)).collect();
        assert_eq!(rows, ["ab", "cdef", "", "gh", "ij"]);
    }
}
