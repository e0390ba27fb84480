-- pgbench script (benches/pgbench.sh, run with -M prepared through pgcloak): the same point
-- read as pgbench-pii-read.sql on the plaintext twin columns of `people`. The statement
-- names a PII table, so pgcloak still analyses it, but has nothing to decrypt.
\set id random(1, 10000)
SELECT name_plain, email_plain FROM people WHERE id = :id;
