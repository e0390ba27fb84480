#!/usr/bin/env bash
# pgcloak's memory use (RSS from /proc/PID/status) when holding many idle sessions and when
# relaying a 1 GB result.
#
# Usage:
#   benches/memory.sh
#   IDLE_CONNECTIONS=2000 benches/memory.sh
#
# Environment:
#   IDLE_CONNECTIONS  sessions held open in part (a) (default 1000)
#   IDLE_QUERY        SQL each idle session runs once before idling (default none). E.g.
#                     "SELECT repeat('x', 100000)" shows sessions whose buffers were used.
#   ROWS              rows of 1,000 bytes in part (b) (default 1000000, i.e. ~1 GB)
#   STATEMENTS        statements in part (c) (default 600)
#   PARTS             which parts to run (default abc)
#   CACHE_BYTES       analysis_cache_bytes for part (c) (default: pgcloak's default, 64 MiB)
#   STRICT=1          exit 1 when a target is missed (default: report only)
#   PGCLOAK_BIN, PGCLOAK_BUILD=1, PG_BIN   as in benches/pgbench.sh
#
# (a) IDLE_CONNECTIONS idle sessions: benches/pgclient.py opens them through pgcloak (real
#     startup + trust authentication, each waits for ReadyForQuery, verified in
#     pg_stat_activity) and idles. Reports pgcloak's VmRSS before, while they are open and
#     after they closed, and the increase per session. Target: < 100 MB total.
# (b) a ~1 GB result relayed through pgcloak to a client that streams it away:
#       1. COPY (SELECT repeat('x', 1000) FROM generate_series(1, ROWS)) TO STDOUT via psql
#       2. the same SELECT as a simple Query, DataRows discarded as they arrive (pgclient.py)
#     Each uses a freshly started pgcloak, so VmHWM (peak RSS) belongs to that test alone.
#     Target: peak < 64 MB. The same transfers straight to PostgreSQL are timed for context.
#
# (c) the SQL analysis: STATEMENTS (default 600) distinct ~35 kB statements on a PII table
#     (benches/pgbench-pii-schema.sql, policy benches/pgbench-pii-policy.yaml), half with PII
#     literals, over 8 sessions (benches/pgclient.py statements). Reports VmRSS before, VmHWM
#     while they ran, VmRSS with the sessions still open and after they closed. Target: peak
#     < 128 MB; after closing, back near the baseline (the analysis cache keeps at most
#     analysis_cache_bytes of shapes; statements with PII literals are never cached).
#
# A throwaway PostgreSQL (trust auth, loopback, max_connections=1200) is started and
# everything is stopped on exit. The report is printed and written to
# bench-results/memory-<timestamp>.txt. Takes about a minute.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
ROWS=${ROWS:-1000000}
IDLE_TARGET_MB=100
STREAM_TARGET_MB=64
PGCLIENT=$BENCH_DIR/pgclient.py
SELECT_SQL="SELECT repeat('x', 1000) FROM generate_series(1, $ROWS)"
COPY_SQL="COPY ($SELECT_SQL) TO STDOUT"

REPORT=()   # lines of the summary
MISSED=0

say() { REPORT+=("$*"); }

# verdict VALUE_KB TARGET_MB
verdict() {
    if (( $1 < $2 * 1024 )); then
        echo "ok (target < $2 MB)"
    else
        MISSED=1
        echo "MISSED (target < $2 MB)"
    fi
}

psql_pg() {
    psql -X -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc "$1"
}

# A fresh pgcloak that has served one query (so lazily set-up state is in place).
fresh_pgcloak() {
    stop_pgcloak
    start_pgcloak
    psql -X -h 127.0.0.1 -p "$PGCLOAK_PORT" -U postgres -d postgres -Atc 'SELECT 1' >/dev/null \
        || die "cannot query through pgcloak"
    sleep 0.5
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v bytes="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", bytes / 1048576 / s; else print "n/a" }'; }

idle_sessions() {
    fresh_pgcloak
    local before during hwm after out=$WORK_DIR/idle.out client
    before=$(proc_kb "$PGCLOAK_PID" VmRSS)
    log "(a) opening $IDLE_CONNECTIONS idle sessions through pgcloak"
    local -a extra=()
    [[ -z ${IDLE_QUERY:-} ]] || extra=(32 "$IDLE_QUERY")
    python3 "$PGCLIENT" idle "$PGCLOAK_PORT" "$IDLE_CONNECTIONS" "${extra[@]}" >"$out" 2>&1 &
    client=$!
    BACKGROUND_PIDS+=("$client")
    local deadline=$((SECONDS + 180))
    until grep -q '^READY' "$out"; do
        kill -0 "$client" 2>/dev/null || { cat "$out" >&2; die "idle client failed"; }
        ((SECONDS < deadline)) || die "idle sessions not ready after 180 s"
        sleep 0.2
    done
    log "    $(cat "$out")"
    local active
    active=$(psql_pg "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgcloak-bench'")
    [[ $active == "$IDLE_CONNECTIONS" ]] \
        || die "expected $IDLE_CONNECTIONS sessions in pg_stat_activity, found $active"
    sleep 3   # let allocator and runtime settle
    during=$(proc_kb "$PGCLOAK_PID" VmRSS)
    hwm=$(proc_kb "$PGCLOAK_PID" VmHWM)
    kill -TERM "$client"
    wait "$client" || die "idle client exited with an error: $(cat "$out")"
    BACKGROUND_PIDS=()
    sleep 3
    after=$(proc_kb "$PGCLOAK_PID" VmRSS)
    local per_conn
    per_conn=$(awk -v a="$before" -v b="$during" -v n="$IDLE_CONNECTIONS" 'BEGIN { printf "%.1f", (b - a) / n }')

    say "(a) $IDLE_CONNECTIONS idle sessions through pgcloak ($active in pg_stat_activity)${IDLE_QUERY:+, each ran once: $IDLE_QUERY}"
    say "    VmRSS before:              $(kb_to_mib "$before") MiB"
    say "    VmRSS with sessions open:  $(kb_to_mib "$during") MiB   $(verdict "$during" "$IDLE_TARGET_MB")"
    say "    VmHWM (peak incl. connect burst): $(kb_to_mib "$hwm") MiB"
    say "    per session:               $per_conn KiB  ((open - before) / $IDLE_CONNECTIONS)"
    say "    VmRSS after they closed:   $(kb_to_mib "$after") MiB"
}

# copy_out PORT: streams the COPY through psql to /dev/null; prints "BYTES SECONDS".
copy_out() {
    local start end bytes
    start=$(now)
    bytes=$(psql -X -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$COPY_SQL" | wc -c)
    end=$(now)
    echo "$bytes $(elapsed "$start" "$end")"
}

# datarow_stream PORT: prints "ROWS BYTES SECONDS".
datarow_stream() {
    local line
    line=$(python3 "$PGCLIENT" stream "$1" "$SELECT_SQL")
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["rows"], v["bytes"], v["seconds"] }' <<<"$line"
}

big_results() {
    local before hwm rss bytes secs rows direct_bytes direct_secs direct_rows r

    log "(b1) COPY OUT of $ROWS rows x 1000 bytes"
    r=$(copy_out "$PG_PORT")
    read -r direct_bytes direct_secs <<<"$r"
    fresh_pgcloak
    before=$(proc_kb "$PGCLOAK_PID" VmHWM)
    r=$(copy_out "$PGCLOAK_PORT")
    read -r bytes secs <<<"$r"
    hwm=$(proc_kb "$PGCLOAK_PID" VmHWM)
    rss=$(proc_kb "$PGCLOAK_PID" VmRSS)
    [[ $bytes == "$direct_bytes" ]] || die "COPY through pgcloak gave $bytes bytes, direct $direct_bytes"
    say "(b1) COPY OUT via psql, $(kb_to_mib "$((bytes / 1024))") MiB of COPY data"
    say "    VmHWM before: $(kb_to_mib "$before") MiB, after: $(kb_to_mib "$hwm") MiB   $(verdict "$hwm" "$STREAM_TARGET_MB")"
    say "    VmRSS after:  $(kb_to_mib "$rss") MiB"
    say "    time: pgcloak ${secs}s ($(mbps "$bytes" "$secs") MiB/s), direct ${direct_secs}s ($(mbps "$direct_bytes" "$direct_secs") MiB/s)"

    log "(b2) DataRow stream of $ROWS rows x 1000 bytes"
    r=$(datarow_stream "$PG_PORT")
    read -r direct_rows direct_bytes direct_secs <<<"$r"
    fresh_pgcloak
    before=$(proc_kb "$PGCLOAK_PID" VmHWM)
    r=$(datarow_stream "$PGCLOAK_PORT")
    read -r rows bytes secs <<<"$r"
    hwm=$(proc_kb "$PGCLOAK_PID" VmHWM)
    rss=$(proc_kb "$PGCLOAK_PID" VmRSS)
    [[ $rows == "$ROWS" && $direct_rows == "$ROWS" ]] \
        || die "expected $ROWS DataRows, got $rows through pgcloak and $direct_rows direct"
    say "(b2) simple Query, $rows DataRows streamed and discarded, $(kb_to_mib "$((bytes / 1024))") MiB on the wire"
    say "    VmHWM before: $(kb_to_mib "$before") MiB, after: $(kb_to_mib "$hwm") MiB   $(verdict "$hwm" "$STREAM_TARGET_MB")"
    say "    VmRSS after:  $(kb_to_mib "$rss") MiB"
    say "    time: pgcloak ${secs}s ($(mbps "$bytes" "$secs") MiB/s), direct ${direct_secs}s ($(mbps "$direct_bytes" "$direct_secs") MiB/s)"
}

analysis_memory() {
    local count=${STATEMENTS:-600} before hwm during after out=$WORK_DIR/statements.out fifo=$WORK_DIR/statements.in client
    psql_pg "DROP TABLE IF EXISTS people" >/dev/null
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -f "$BENCH_DIR/pgbench-pii-schema.sql" >/dev/null \
        || die "creating people failed"
    PGCLOAK_BENCH_MASTER_KEY=$("$PGCLOAK_BIN" keygen) || die "pgcloak keygen failed"
    export PGCLOAK_BENCH_MASTER_KEY
    PGCLOAK_EXTRA_CONFIG=$(<"$BENCH_DIR/pgbench-pii-policy.yaml")
    [[ -z ${CACHE_BYTES:-} ]] || PGCLOAK_EXTRA_CONFIG+=$'\n'"analysis_cache_bytes: $CACHE_BYTES"
    fresh_pgcloak
    PGCLOAK_EXTRA_CONFIG=""
    psql -X -h 127.0.0.1 -p "$PGCLOAK_PORT" -U postgres -d postgres -Atc \
        "SELECT count(*) FROM people WHERE email_pii = 'warm@example.com'" >/dev/null || die "PII query through pgcloak failed"
    sleep 1
    before=$(proc_kb "$PGCLOAK_PID" VmRSS)
    log "(c) $count distinct ~35 kB statements on a PII table over 8 sessions"
    rm -f "$fifo"
    mkfifo "$fifo"
    python3 "$PGCLIENT" statements "$PGCLOAK_PORT" "$count" 8 35000 <"$fifo" >"$out" 2>&1 &
    client=$!
    BACKGROUND_PIDS+=("$client")
    exec 7>"$fifo"
    local deadline=$((SECONDS + 600))
    until grep -q '^statements=' "$out"; do
        kill -0 "$client" 2>/dev/null || { cat "$out" >&2; die "statements client failed"; }
        ((SECONDS < deadline)) || die "statements not done after 600 s"
        sleep 0.2
    done
    sleep 2
    during=$(proc_kb "$PGCLOAK_PID" VmRSS)
    hwm=$(proc_kb "$PGCLOAK_PID" VmHWM)
    echo >&7
    exec 7>&-
    wait "$client" || die "statements client exited with an error: $(cat "$out")"
    BACKGROUND_PIDS=()
    sleep 3
    after=$(proc_kb "$PGCLOAK_PID" VmRSS)
    say "(c) $count distinct ~35 kB statements on a PII table, 8 sessions, analysis_cache_bytes ${CACHE_BYTES:-default}: $(cat "$out")"
    say "    VmRSS before:              $(kb_to_mib "$before") MiB"
    say "    VmHWM (peak):              $(kb_to_mib "$hwm") MiB   $(verdict "$hwm" 128)"
    say "    VmRSS, sessions still open: $(kb_to_mib "$during") MiB"
    say "    VmRSS after they closed:   $(kb_to_mib "$after") MiB   (+$(kb_to_mib "$((after - before))") MiB over before)"
}

main() {
    [[ -f $PGCLIENT ]] || die "$PGCLIENT is missing"
    bench_init
    ensure_pgcloak
    start_postgres 1200
    if [[ ${PARTS:-abc} == *a* ]]; then idle_sessions; fi
    if [[ ${PARTS:-abc} == *b* ]]; then big_results; fi
    if [[ ${PARTS:-abc} == *c* ]]; then analysis_memory; fi
    stop_pgcloak

    local file
    file=$RESULTS_DIR/memory-$(date +%Y%m%d-%H%M%S).txt
    {
        describe_env
        echo
        printf '%s\n' "${REPORT[@]}"
    } | tee "$file"
    echo
    echo "written to $file"
    if (( MISSED )) && [[ ${STRICT:-0} == 1 ]]; then
        exit 1
    fi
}

main "$@"
