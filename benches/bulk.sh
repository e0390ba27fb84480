#!/usr/bin/env bash
# Bulk PII work in one run: COPY of ROWS rows into two PII columns vs the same rows into two
# plain columns, through pgcloak and directly; then reading each whole table back (SELECT
# through DataRows, and COPY TO) through pgcloak and directly.
#
# Usage:
#   benches/bulk.sh
#   ROWS=200000 ROUNDS=1 benches/bulk.sh
#
# Environment: ROWS (default 1000000), ROUNDS (each timing is the best of this many,
# default 3), PGCLOAK_BIN, PGCLOAK_BUILD=1, PG_BIN.
#
# What it does: a throwaway PostgreSQL with tables `pii` and `plain` (id int, a text, b
# text), the policy making pii.a deterministic and pii.b randomized; a ROWS-line text file
# (`id, user<i>@example.com, Name <i>`) loaded with psql's \copy (COPY FROM STDIN) into each
# table, truncated before each round; reads with `psql -At -c 'SELECT * FROM t'` and
# `\copy t TO /dev/null`. The same COPY, SELECT and COPY TO of the envelope rows directly
# show what Postgres and the client alone need for the wider rows. Prints seconds, rows/s and the ratios the typed-columns issue
# sets targets for; the report is also written to bench-results/.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-3}

bench_init
ensure_pgcloak
start_postgres 100
DIRECT=$PG_DSN
sql() { pg_sql "$@"; }

sql -c "CREATE TABLE pii (id int, a text, b text) WITH (autovacuum_enabled = off)" \
    -c "CREATE TABLE plain (id int, a text, b text) WITH (autovacuum_enabled = off)" \
    -c "CREATE TABLE typed (id int, a text, b text) WITH (autovacuum_enabled = off)"
"$PGCLOAK_BIN" keygen >"$WORK_DIR/k1"
PGCLOAK_EXTRA_CONFIG="keys: { master_key_file: $WORK_DIR/k1 }
tables:
  pii: { a: deterministic, b: randomized }
  typed:
    a: { mode: deterministic, type: date }
    b: { mode: randomized, type: numeric }"
start_pgcloak
PROXY="postgresql://postgres@127.0.0.1:$PGCLOAK_PORT/postgres"

DATA=$WORK_DIR/rows.txt
awk -v n="$ROWS" 'BEGIN { for (i = 1; i <= n; i++) printf "%d\tuser%d@example.com\tName %d\n", i, i, i }' >"$DATA"
chmod 644 "$DATA"
# The typed variant: a date and a numeric per row.
TYPED=$WORK_DIR/typed.txt
sql -c "\\copy (SELECT i, date '2000-01-01' + i % 20000, i * 1.25 FROM generate_series(1, $ROWS) i) TO '$TYPED'"
chmod 644 "$TYPED"

# best DSN COMMAND...: the fastest of ROUNDS runs of a psql command, in seconds.
best() {
    local dsn=$1 before=$2 best="" t s e
    shift 2
    for ((r = 0; r < ROUNDS; r++)); do
        [[ -z $before ]] || sql -c "$before" -c "CHECKPOINT"
        s=$(date +%s.%N)
        psql -X -q -v ON_ERROR_STOP=1 -d "$dsn" "$@" >/dev/null
        e=$(date +%s.%N)
        t=$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')
        best=$(awk -v a="$best" -v b="$t" 'BEGIN { print (a == "" || b < a) ? b : a }')
    done
    echo "$best"
}

log "COPY FROM STDIN, $ROWS rows, best of $ROUNDS"
copy_pii=$(best "$PROXY" "TRUNCATE pii" -c "\\copy pii (id, a, b) FROM '$DATA'")
copy_plain_proxy=$(best "$PROXY" "TRUNCATE plain" -c "\\copy plain (id, a, b) FROM '$DATA'")
copy_plain_direct=$(best "$DIRECT" "TRUNCATE plain" -c "\\copy plain (id, a, b) FROM '$DATA'")
# What Postgres alone needs for the envelope rows pgcloak writes: the same COPY of rows
# already encrypted (taken from pii), directly.
sql -c "CREATE TABLE envelopes (id int, a text, b text) WITH (autovacuum_enabled = off)"
sql -c "\\copy pii TO '$WORK_DIR/envelopes.txt'"
chmod 644 "$WORK_DIR/envelopes.txt"
copy_env_direct=$(best "$DIRECT" "TRUNCATE envelopes" -c "\\copy envelopes (id, a, b) FROM '$WORK_DIR/envelopes.txt'")
copy_typed=$(best "$PROXY" "TRUNCATE typed" -c "\\copy typed (id, a, b) FROM '$TYPED'")
sql -c "VACUUM ANALYZE pii" -c "VACUUM ANALYZE plain" -c "VACUUM ANALYZE typed"
[[ $(sql -Atc "SELECT count(*) FROM pii WHERE a LIKE 'pgc1\$d\$%' AND b LIKE 'pgc1\$r\$%'") == "$ROWS" ]] \
    || die "pii does not hold $ROWS rows of envelopes"

log "SELECT * and COPY TO of the whole table, best of $ROUNDS"
select_pii=$(best "$PROXY" "" -At -c "SELECT * FROM pii")
select_plain_proxy=$(best "$PROXY" "" -At -c "SELECT * FROM plain")
select_plain_direct=$(best "$DIRECT" "" -At -c "SELECT * FROM plain")
select_env_direct=$(best "$DIRECT" "" -At -c "SELECT * FROM pii")
select_typed=$(best "$PROXY" "" -At -c "SELECT * FROM typed")
copyout_pii=$(best "$PROXY" "" -c "\\copy pii TO '/dev/null'")
copyout_typed=$(best "$PROXY" "" -c "\\copy typed TO '/dev/null'")
copyout_plain_proxy=$(best "$PROXY" "" -c "\\copy plain TO '/dev/null'")
copyout_plain_direct=$(best "$DIRECT" "" -c "\\copy plain TO '/dev/null'")
copyout_env_direct=$(best "$DIRECT" "" -c "\\copy pii TO '/dev/null'")

report=$(awk -v rows="$ROWS" -v cp="$copy_pii" -v cq="$copy_plain_proxy" -v cd="$copy_plain_direct" \
    -v sp="$select_pii" -v sq="$select_plain_proxy" -v sd="$select_plain_direct" \
    -v op="$copyout_pii" -v oq="$copyout_plain_proxy" -v od="$copyout_plain_direct" \
    -v ce="$copy_env_direct" -v se="$select_env_direct" -v oe="$copyout_env_direct" \
    -v ct="$copy_typed" -v st="$select_typed" -v ot="$copyout_typed" 'BEGIN {
    printf "rows %d (two PII columns: deterministic + randomized)\n", rows
    printf "%-34s %8s %10s\n", "", "s", "rows/s"
    printf "%-34s %8.2f %10.0f\n", "COPY FROM, PII, through pgcloak", cp, rows / cp
    printf "%-34s %8.2f %10.0f\n", "COPY FROM, plain, through pgcloak", cq, rows / cq
    printf "%-34s %8.2f %10.0f\n", "COPY FROM, plain, direct", cd, rows / cd
    printf "%-34s %8.2f %10.0f\n", "COPY FROM, envelopes, direct", ce, rows / ce
    printf "%-34s %8.2f %10.0f\n", "SELECT *, PII, through pgcloak", sp, rows / sp
    printf "%-34s %8.2f %10.0f\n", "SELECT *, plain, through pgcloak", sq, rows / sq
    printf "%-34s %8.2f %10.0f\n", "SELECT *, plain, direct", sd, rows / sd
    printf "%-34s %8.2f %10.0f\n", "SELECT *, envelopes, direct", se, rows / se
    printf "%-34s %8.2f %10.0f\n", "COPY TO, PII, through pgcloak", op, rows / op
    printf "%-34s %8.2f %10.0f\n", "COPY TO, plain, through pgcloak", oq, rows / oq
    printf "%-34s %8.2f %10.0f\n", "COPY TO, plain, direct", od, rows / od
    printf "%-34s %8.2f %10.0f\n", "COPY TO, envelopes, direct", oe, rows / oe
    printf "%-34s %8.2f %10.0f\n", "COPY FROM, typed PII (date, numeric)", ct, rows / ct
    printf "%-34s %8.2f %10.0f\n", "SELECT *, typed PII", st, rows / st
    printf "%-34s %8.2f %10.0f\n", "COPY TO, typed PII", ot, rows / ot
    printf "PII COPY / direct plain COPY:        %.2f (target >= 0.9)\n", cd / cp
    printf "PII COPY / plain COPY via pgcloak:   %.2f\n", cq / cp
    printf "PII COPY / direct COPY of the envelopes (what Postgres alone needs): %.2f\n", ce / cp
    printf "PII SELECT / plain SELECT via pgcloak: %.2f (target >= 0.8)\n", sq / sp
    printf "PII SELECT / direct SELECT of the envelopes: %.2f\n", se / sp
    printf "PII COPY TO / plain COPY TO via pgcloak: %.2f\n", oq / op
    printf "typed / text PII: COPY FROM %.2f, SELECT %.2f, COPY TO %.2f (target >= 0.9)\n", cp / ct, sp / st, op / ot
}')
echo "$report"
echo "$report" >"$RESULTS_DIR/bulk-$(date +%Y%m%d-%H%M%S).txt"
