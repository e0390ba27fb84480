-- pgbench script (benches/pgbench.sh, run with -M prepared through pgcloak): a point read of
-- the two PII columns of `people`, which pgcloak decrypts in each result row.
\set id random(1, 10000)
SELECT name_pii, email_pii FROM people WHERE id = :id;
