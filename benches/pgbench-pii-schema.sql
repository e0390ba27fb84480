-- The table of benches/pgbench.sh's PII workloads; name_pii and email_pii are PII in the
-- policy pgbench.sh gives pgcloak, name_plain and email_plain hold the same values in clear.
CREATE TABLE people (
    id int PRIMARY KEY,
    name_pii text,
    email_pii text,
    name_plain text,
    email_plain text
);
