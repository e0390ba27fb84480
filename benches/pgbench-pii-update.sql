-- pgbench script (benches/pgbench.sh, run with -M prepared through pgcloak): an UPDATE of a
-- randomized PII column from a bind parameter, which pgcloak encrypts. pgbench's \set makes
-- only numbers; bound for a text column, the number is encrypted as its text.
\set id random(1, 10000)
\set newname random(1, 1000000000)
UPDATE people SET name_pii = :newname WHERE id = :id;
