//! Relations that reach configured PII columns without being in the policy (views,
//! partitions, inheritance children, and the parents a PII table was attached to): pgcloak recognises PII columns by the table names in a
//! statement, so through such a relation values pass in clear. [`DERIVED_QUERY`] finds them;
//! [`check_derived`] words the problems.

/// Relations that reach configured PII columns without being in the policy: views whose
/// definition reads them (their `pg_rewrite` dependencies) and partitions or inheritance
/// children of their tables, and the parents their tables inherit from or are partitions
/// of, at any depth. `$1`: the configured `schema.table.column`s. Per row: the relation's
/// schema and name, the PII column it reaches, and its kind: `view`, `child` or `parent`.
pub(super) const DERIVED_QUERY: &str = "
WITH RECURSIVE pii AS (
    SELECT c.oid AS relid, a.attnum, n.nspname || '.' || c.relname || '.' || a.attname AS id
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname || '.' || c.relname || '.' || a.attname = ANY($1)
), children(relid, id) AS (
    SELECT i.inhrelid, p.id FROM pg_inherits i JOIN pii p ON p.relid = i.inhparent
    UNION
    SELECT i.inhrelid, ch.id FROM pg_inherits i JOIN children ch ON ch.relid = i.inhparent
), parents(relid, id) AS (
    SELECT i.inhparent, p.id FROM pg_inherits i JOIN pii p ON p.relid = i.inhrelid
    UNION
    SELECT i.inhparent, pa.id FROM pg_inherits i JOIN parents pa ON pa.relid = i.inhrelid
)
SELECT n.nspname, v.relname, p.id, 'view'::text
FROM pg_depend d
JOIN pii p ON d.refobjid = p.relid AND d.refobjsubid = p.attnum
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class AND v.oid <> p.relid
JOIN pg_namespace n ON n.oid = v.relnamespace
WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
UNION
SELECT n.nspname, c.relname, ch.id, 'child'
FROM children ch JOIN pg_class c ON c.oid = ch.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
UNION
SELECT n.nspname, c.relname, pa.id, 'parent'
FROM parents pa JOIN pg_class c ON c.oid = pa.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY 1, 2, 3";

/// One row of [`DERIVED_QUERY`].
pub(super) struct DerivedRow {
    pub schema: String,
    pub relation: String,
    pub pii_column: String,
    /// `view`, `child` or `parent`.
    pub kind: String,
}

/// One problem per relation of `rows` (not in the policy) that reaches PII columns:
/// pgcloak recognises PII columns by the table names in a statement, so values written
/// through it would pass in clear, and searches on a view would compare plaintext with
/// ciphertext.
pub(super) fn check_derived(rows: &[DerivedRow]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rows;
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.schema == first.schema && r.relation == first.relation)
            .count();
        let (group, tail) = rest.split_at(same);
        rest = tail;
        let reached: Vec<&str> = group.iter().map(|r| r.pii_column.as_str()).collect();
        let reached = reached.join(", ");
        let name = format!("{}.{}", first.schema, first.relation);
        let configure =
            "add it under `tables` with its PII columns and `same_key_as: <the column>`";
        out.push(match first.kind.as_str() {
            "view" => format!(
                "{name}: a view showing {reached}, not in the policy: searches on it would compare plaintext with ciphertext and values written through it would be stored in clear; {configure}"
            ),
            "parent" => format!(
                "{name}: a parent (inherited or partitioned) of the table holding {reached}, not in the policy: rows written through it are stored in clear in that table and searches through it miss; {configure}, or detach the table"
            ),
            _ => format!(
                "{name}: a partition or child table of the table holding {reached}, not in the policy: rows written to it directly are stored in clear; {configure}"
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_reaching_pii_columns_outside_the_policy() {
        let row = |relation: &str, pii_column: &str, kind: &str| DerivedRow {
            schema: "public".into(),
            relation: relation.into(),
            pii_column: pii_column.into(),
            kind: kind.into(),
        };
        let rows = [
            row("names", "public.users.email", "view"),
            row("names", "public.users.first_name", "view"),
            row("users_2024", "public.users.email", "child"),
            row("people", "public.users.email", "parent"),
        ];
        let out = check_derived(&rows);
        assert_eq!(out.len(), 3);
        assert!(
            out[2].starts_with("public.people: a parent (inherited or partitioned) of the table holding public.users.email"),
            "{}",
            out[2]
        );
        assert!(
            out[0].starts_with(
                "public.names: a view showing public.users.email, public.users.first_name, not in the policy"
            ),
            "{}",
            out[0]
        );
        assert!(
            out[1].starts_with("public.users_2024: a partition or child table"),
            "{}",
            out[1]
        );
    }
}
