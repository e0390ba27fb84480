-- pgbench script (benches/pgbench.sh, run with -M prepared through pgcloak): the UPDATE of
-- pgbench-pii-update.sql on the plaintext twin column, as its baseline.
\set id random(1, 10000)
\set newname random(1, 1000000000)
UPDATE people SET name_plain = :newname WHERE id = :id;
