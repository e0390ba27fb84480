#!/usr/bin/env bash
# `pgcloak encrypt` on a table of plaintext against a plain UPDATE of the same rows in the
# same batches, and the application's point reads through pgcloak with and without an
# encrypt running, in one run.
#
# Usage:
#   benches/encrypt.sh
#   ROWS=200000 BATCH=500 benches/encrypt.sh
#
# Environment: ROWS (default 1000000), BATCH (rows per batch, default 1000), READ_SECONDS
# (pgbench run of point reads, default 10), CLIENTS (pgbench -c, default 4), JOBS (`pgcloak
# encrypt --jobs`, default: the tool's), PGCLOAK_BIN, PGCLOAK_BUILD=1, PG_BIN.
#
# What it does: a throwaway PostgreSQL with three identical tables of ROWS rows (id, a text,
# b text); the UPDATE baseline rewrites one of them (`UPDATE ... SET a = a, b = b` by id
# range, BATCH rows per transaction, in a DO block that commits each batch), a second
# baseline rewrites another to values as wide as the envelopes (what storing the wider rows
# costs Postgres alone); `pgcloak
# encrypt --batch-size BATCH` encrypts the other (a deterministic, b randomized, both
# `migrating: true`), timed, with its peak RSS from /usr/bin/time. pgbench point reads by
# id (`SELECT a, b FROM t WHERE id = :id`, -M prepared) run through pgcloak before the
# encrypt, then again while a second encrypt run rewrites the baseline table. Prints rows/s,
# the ratios and the peak RSS; the report is also written to bench-results/.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROWS=${ROWS:-1000000}
BATCH=${BATCH:-1000}
READ_SECONDS=${READ_SECONDS:-10}
CLIENTS=${CLIENTS:-4}

bench_init
ensure_pgcloak
start_postgres 100
DSN=$PG_DSN
sql() { pg_sql "$@"; }

log "filling two tables with $ROWS rows of plaintext"
for table in t u w; do
    # No autovacuum: a vacuum of the table the last phase rewrote would run during the next
    # timed phase and make it noisy. Each timed phase starts after a CHECKPOINT instead.
    sql -c "CREATE TABLE $table (id int PRIMARY KEY, a text, b text) WITH (autovacuum_enabled = off)"
    sql -c "INSERT INTO $table SELECT i, 'user' || i || '@example.com', 'Name ' || i FROM generate_series(1, $ROWS) i"
done
sql -c "VACUUM ANALYZE"

log "baseline: UPDATE u SET a = a, b = b in batches of $BATCH"
sql -c "CHECKPOINT"
start=$(date +%s.%N)
sql -c "DO \$\$ BEGIN FOR lo IN 0..$ROWS BY $BATCH LOOP
          UPDATE u SET a = a, b = b WHERE id > lo AND id <= lo + $BATCH; COMMIT;
        END LOOP; END \$\$"
update_s=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')

# The same UPDATE writing values as wide as the envelopes encrypt writes (a deterministic
# envelope is 16 + 4 * ceil((n + 16) / 3) bytes for n bytes of plaintext, a randomized one
# 16 + 4 * ceil((n + 28) / 3)): what Postgres itself needs to store the wider rows.
log "UPDATE w to values as wide as envelopes, in batches of $BATCH"
sql -c "CHECKPOINT"
start=$(date +%s.%N)
sql -c "DO \$\$ BEGIN FOR lo IN 0..$ROWS BY $BATCH LOOP
          UPDATE w SET a = rpad(a, 16 + 4 * ((length(a) + 18) / 3), '#'),
                       b = rpad(b, 16 + 4 * ((length(b) + 30) / 3), '#')
          WHERE id > lo AND id <= lo + $BATCH; COMMIT;
        END LOOP; END \$\$"
wide_s=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
sql -c "VACUUM u" -c "VACUUM w"

"$PGCLOAK_BIN" keygen >"$WORK_DIR/k1"
PGCLOAK_EXTRA_CONFIG="keys: { master_key_file: $WORK_DIR/k1 }
tables:
  t: { a: { mode: deterministic, migrating: true }, b: { mode: randomized, migrating: true } }
  u: { a: { mode: deterministic, migrating: true }, b: { mode: randomized, migrating: true } }"
start_pgcloak

cat >"$WORK_DIR/read.sql" <<EOF
\\set id random(1, $ROWS)
SELECT a, b FROM t WHERE id = :id;
EOF
reads() {
    pgbench -n -h 127.0.0.1 -p "$PGCLOAK_PORT" -U postgres -c "$CLIENTS" -j 2 -T "$READ_SECONDS" \
        -M prepared -f "$WORK_DIR/read.sql" postgres 2>/dev/null | awk '/^tps/ { print $3; exit }'
}
log "point reads through pgcloak, no encrypt running"
tps_idle=$(reads)

log "pgcloak encrypt --table t --batch-size $BATCH"
sql -c "CHECKPOINT"
start=$(date +%s.%N)
/usr/bin/time -f "%M %U %S %e" -o "$WORK_DIR/rss" "$PGCLOAK_BIN" encrypt --config "$WORK_DIR/pgcloak.yaml" \
    --upstream-dsn "$DSN" --table t --batch-size "$BATCH" ${JOBS:+--jobs "$JOBS"} >"$WORK_DIR/encrypt.out" 2>"$WORK_DIR/encrypt.err"
encrypt_s=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
read -r rss_kb enc_user enc_sys _ <"$WORK_DIR/rss"; log "encrypt CPU: user $enc_user s, sys $enc_sys s"
left=$(sql -Atc "SELECT count(*) FROM t WHERE a NOT LIKE 'pgc1\$%' OR b NOT LIKE 'pgc1\$%'")
[[ $left == 0 ]] || die "encrypt left $left rows in clear"

log "point reads through pgcloak while pgcloak encrypt rewrites u"
sql -c "VACUUM t" -c "CHECKPOINT"
"$PGCLOAK_BIN" encrypt --config "$WORK_DIR/pgcloak.yaml" --upstream-dsn "$DSN" --table u ${JOBS:+--jobs "$JOBS"} \
    --batch-size "$BATCH" >/dev/null 2>&1 &
busy_pid=$!
BACKGROUND_PIDS+=("$busy_pid")
tps_busy=$(reads)
if kill -0 "$busy_pid" 2>/dev/null; then still="yes"; else still="no (it finished first: the ratio is optimistic)"; fi

report=$(awk -v rows="$ROWS" -v u="$update_s" -v e="$encrypt_s" -v ti="$tps_idle" -v tb="$tps_busy" \
    -v w="$wide_s" -v rss="$rss_kb" -v batch="$BATCH" -v still="$still" 'BEGIN {
    printf "rows %d, batch %d\n", rows, batch
    printf "UPDATE SET a = a, b = b: %.1f s, %.0f rows/s\n", u, rows / u
    printf "pgcloak encrypt:         %.1f s, %.0f rows/s, peak RSS %.1f MiB\n", e, rows / e, rss / 1024
    printf "UPDATE to envelope-wide values: %.1f s, %.0f rows/s\n", w, rows / w
    printf "encrypt / UPDATE rows/s: %.2f (target >= 0.5); encrypt / wide UPDATE: %.2f\n", u / e, w / e
    printf "point reads through pgcloak: %.0f tps idle, %.0f tps during encrypt (encrypt still running at the end: %s)\n", ti, tb, still
    printf "reads during / idle: %.2f (target >= 0.5)\n", tb / ti
}')
echo "$report"
echo "$report" >"$RESULTS_DIR/encrypt-$(date +%Y%m%d-%H%M%S).txt"
