#!/usr/bin/env bash
# Throughput of pgcloak against a direct connection and against PgBouncer (session mode).
#
# Usage:
#   benches/pgbench.sh
#   DURATION=30 ROUNDS=5 benches/pgbench.sh
#
# Environment:
#   DURATION        seconds per pgbench run (default 20)
#   PII_DURATION    seconds per run of the PII workloads (default 10)
#   ROUNDS          rounds; each round runs every workload against every target (default 3)
#   CLIENTS         pgbench -c (default 8)
#   THREADS         pgbench -j (default 2)
#   SCALE           pgbench -i -s (default 10)
#   PII_ROWS        rows of the PII workloads' table (default 10000)
#   SESSION_THREADS pgcloak's session_threads (default: its own, one per core)
#   PGCLOAK_BIN     the binary (default target/release/pgcloak, built when missing)
#   PGCLOAK_BUILD=1 run `cargo build --release` first even if the binary exists
#   PG_BIN          PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
#
# What it does: starts a throwaway PostgreSQL (trust auth, loopback, max_connections=1200),
# PgBouncer (pool_mode=session; installed with apt-get when missing) and pgcloak, both in
# front of that same PostgreSQL, each on a free port; runs `pgbench -i -s SCALE` once, then
# for each round, for each workload, runs pgbench against direct, pgbouncer and pgcloak in
# turn (interleaved, so drift hits every target alike). It prints the median TPS per
# workload and target, pgcloak's ratio to direct and to PgBouncer, and each proxy's CPU time
# and context switches per transaction. The report is also
# written to bench-results/pgbench-<timestamp>.txt. Everything started is stopped on exit.
#
# PII workloads: a second pgcloak (target pgcloak-pii) runs with a column policy (benches/pgbench-pii-policy.yaml, a
# fresh `pgcloak keygen` key) for a table `people` (benches/pgbench-pii-schema.sql) whose
# name_pii (randomized) and email_pii (deterministic) columns are PII and whose name_plain
# and email_plain columns hold the same values in clear. PII_ROWS rows are loaded through
# pgcloak with COPY, so Postgres holds ciphertext (checked directly before timing). Each
# round then also runs, through pgcloak only, -M prepared, the pgbench scripts
# benches/pgbench-{pii-read,plain-read,pii-update,plain-update}.sql for PII_DURATION
# seconds each, and the report adds their TPS, PII read / plain read (target >= 0.9) and
# PII update / plain update. The select-only workloads also run through it: the policy
# names only `people`, so they show what a policy costs statements that touch no PII table.
#
# With the defaults (2 workloads x 4 targets x 3 rounds x 20 s, plus 4 PII workloads x 3
# rounds x 10 s) it takes about 10.5 minutes.
# On a small machine pgbench, PostgreSQL and the proxy share the cores, so a proxy's cost
# shows up as lost TPS more than it would with the load generator on another host.
#
# Adding a workload: append a line to WORKLOADS below ("NAME|pgbench args"). run_workload
# NAME TARGET_PORT PGBENCH_ARGS... runs one pgbench and records its TPS.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
DB=postgres

# NAME|pgbench arguments (besides connection, -c/-j/-T). Runs in this order in each round.
WORKLOADS=(
    "select-only/simple|-S -M simple"
    "select-only/prepared|-S -M prepared"
)
# pgcloak: the relay without a policy; pgcloak-pii: with the PII policy of the PII workloads
# (its tables are not pgbench_*, so these statements take the no-PII path: a name check).
TARGETS=(direct pgbouncer pgcloak pgcloak-pii)

PII_DURATION=${PII_DURATION:-10}
PII_ROWS=${PII_ROWS:-10000}
# NAME|pgbench script under benches/. Run through pgcloak only, -M prepared, in this order in
# each round, after WORKLOADS.
PII_WORKLOADS=(
    "pii-read|pgbench-pii-read.sql"
    "plain-read|pgbench-plain-read.sql"
    "pii-update|pgbench-pii-update.sql"
    "plain-update|pgbench-plain-update.sql"
)

declare -A TARGET_PORT=()   # target name -> port
declare -A TARGET_NAME=()   # port -> target name
declare -A TPS=()           # "workload|target" -> space-separated TPS of each round
declare -A FAILED=()        # "workload|target" -> total failed transactions
declare -A TARGET_PID=()    # proxy target name -> its process id (for CPU time)
declare -A CPU_US=()        # "workload|target" -> space-separated CPU µs per transaction
declare -A CSW=()           # "workload|target" -> space-separated context switches per transaction
CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() {
    # Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# context_switches PID: voluntary + involuntary context switches of all its threads so far.
context_switches() {
    cat "/proc/$1"/task/*/status 2>/dev/null \
        | awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

# run_workload NAME TARGET_PORT PGBENCH_ARGS...: one pgbench run of CLIENTS clients for
# DURATION seconds (RUN_DURATION if set) against 127.0.0.1:TARGET_PORT; records its TPS
# under NAME and the target.
run_workload() {
    local name=$1 port=$2
    shift 2
    local target=${TARGET_NAME[$port]:-port-$port}
    local out=$WORK_DIR/pgbench-run.out
    log "  $name -> $target"
    local pid=${TARGET_PID[$target]:-} ticks_before="" switches_before=""
    if [[ -n $pid ]]; then
        ticks_before=$(cpu_ticks "$pid")
        switches_before=$(context_switches "$pid")
    fi
    if ! run_interruptible pgbench -h 127.0.0.1 -p "$port" -U postgres -n \
        -c "$CLIENTS" -j "$THREADS" -T "${RUN_DURATION:-$DURATION}" "$@" "$DB" >"$out" 2>&1; then
        cat "$out" >&2
        die "pgbench failed: $name against $target"
    fi
    cat "$out" >>"$WORK_DIR/pgbench-all.log"
    local tps failed
    tps=$(awk '/^tps = / { print $3; exit }' "$out")
    [[ -n $tps ]] || { cat "$out" >&2; die "no tps in pgbench output"; }
    failed=$(awk '/^number of failed transactions:/ { print $5; exit }' "$out")
    tps=$(printf '%.0f' "$tps")
    TPS["$name|$target"]="${TPS["$name|$target"]:-}${TPS["$name|$target"]:+ }$tps"
    FAILED["$name|$target"]=$(( ${FAILED["$name|$target"]:-0} + ${failed:-0} ))
    local cpu="" csw=""
    if [[ -n $pid ]]; then
        local txns ticks_after switches_after
        ticks_after=$(cpu_ticks "$pid")
        switches_after=$(context_switches "$pid")
        txns=$(awk '/^number of transactions actually processed:/ { print $6; exit }' "$out")
        cpu=$(awk -v t="$((ticks_after - ticks_before))" -v hz="$CLK_TCK" -v n="${txns%%/*}" \
            'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n }')
        CPU_US["$name|$target"]="${CPU_US["$name|$target"]:-}${CPU_US["$name|$target"]:+ }$cpu"
        csw=$(awk -v c="$((switches_after - switches_before))" -v n="${txns%%/*}" \
            'BEGIN { if (n > 0) printf "%.2f", c / n }')
        CSW["$name|$target"]="${CSW["$name|$target"]:-}${CSW["$name|$target"]:+ }$csw"
    fi
    log "    tps = $tps${failed:+, $failed failed}${cpu:+, $cpu CPU µs/txn}${csw:+, $csw context switches/txn}"
}

median_float() {
    tr ' ' '\n' <<<"$1" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "n/a"; else if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median_float2() {
    tr ' ' '\n' <<<"$1" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "n/a"; else if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median() {
    tr ' ' '\n' <<<"$1" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.0f", v[(NR + 1) / 2]; else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'
}

report() {
    local entry name target m
    describe_env
    echo "pgbouncer: $("$PGBOUNCER_BIN" --version | head -n 1) (pool_mode=session, default_pool_size=40)"
    echo "pgbench:  scale $SCALE, -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS rounds, interleaved"
    echo
    printf '%-22s %-12s %12s  %s\n' workload target "median TPS" "TPS per round"
    for entry in "${WORKLOADS[@]}"; do
        name=${entry%%|*}
        for target in "${TARGETS[@]}"; do
            m=$(median "${TPS["$name|$target"]}")
            printf '%-22s %-12s %12s  %s' "$name" "$target" "$m" "${TPS["$name|$target"]}"
            if (( ${FAILED["$name|$target"]:-0} > 0 )); then
                printf '  (%s failed transactions)' "${FAILED["$name|$target"]}"
            fi
            echo
        done
    done
    echo
    printf '%-22s %-12s %10s %13s\n' workload target "/direct" "/pgbouncer"
    local direct bouncer cloak
    for entry in "${WORKLOADS[@]}"; do
        name=${entry%%|*}
        direct=$(median "${TPS["$name|direct"]}")
        bouncer=$(median "${TPS["$name|pgbouncer"]}")
        for target in pgcloak pgcloak-pii; do
            cloak=$(median "${TPS["$name|$target"]}")
            printf '%-22s %-12s %10s %13s\n' "$name" "$target" "$(ratio "$cloak" "$direct")" "$(ratio "$cloak" "$bouncer")"
        done
    done
    echo
    echo "proxy CPU time per transaction (user + system, median of rounds; clock tick $((1000000 / CLK_TCK)) µs)"
    printf '%-22s %-12s %12s  %s\n' workload target "CPU µs/txn" "per round"
    for entry in "${WORKLOADS[@]}"; do
        name=${entry%%|*}
        for target in pgbouncer pgcloak pgcloak-pii; do
            printf '%-22s %-12s %12s  %s\n' "$name" "$target" "$(median_float "${CPU_US["$name|$target"]:-}")" "${CPU_US["$name|$target"]:-}"
        done
    done
    echo
    echo "proxy context switches per transaction (voluntary + involuntary, all threads, median of rounds)"
    printf '%-22s %-12s %12s  %s\n' workload target "switches/txn" "per round"
    for entry in "${WORKLOADS[@]}"; do
        name=${entry%%|*}
        for target in pgbouncer pgcloak pgcloak-pii; do
            printf '%-22s %-12s %12s  %s\n' "$name" "$target" "$(median_float2 "${CSW["$name|$target"]:-}")" "${CSW["$name|$target"]:-}"
        done
    done
    report_pii
}

report_pii() {
    local entry name m
    echo
    echo "PII workloads: through pgcloak only, -M prepared, -c $CLIENTS -j $THREADS -T $PII_DURATION, $PII_ROWS rows;"
    echo "name_pii randomized, email_pii deterministic, *_plain the same values in clear"
    echo
    printf '%-22s %-12s %12s  %s\n' workload target "median TPS" "TPS per round"
    for entry in "${PII_WORKLOADS[@]}"; do
        name=${entry%%|*}
        m=$(median "${TPS["$name|pgcloak-pii"]}")
        printf '%-22s %-12s %12s  %s' "$name" pgcloak-pii "$m" "${TPS["$name|pgcloak-pii"]}"
        if (( ${FAILED["$name|pgcloak-pii"]:-0} > 0 )); then
            printf '  (%s failed transactions)' "${FAILED["$name|pgcloak-pii"]}"
        fi
        echo
    done
    echo
    local pii_read plain_read pii_update plain_update
    pii_read=$(median "${TPS["pii-read|pgcloak-pii"]}")
    plain_read=$(median "${TPS["plain-read|pgcloak-pii"]}")
    pii_update=$(median "${TPS["pii-update|pgcloak-pii"]}")
    plain_update=$(median "${TPS["plain-update|pgcloak-pii"]}")
    printf '%-28s %8s  (target >= 0.9)\n' "pii-read / plain-read" "$(ratio "$pii_read" "$plain_read")"
    printf '%-28s %8s\n' "pii-update / plain-update" "$(ratio "$pii_update" "$plain_update")"
}

# pii_psql ARGS...: psql as postgres on DB through pgcloak, stopping at the first error.
pii_psql() {
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGCLOAK_PORT" -U postgres -d "$DB" "$@"
}

# load_pii_table: creates `people` and loads PII_ROWS rows through pgcloak with COPY (the
# same name and email in the PII and the plain columns); then checks directly in Postgres
# that the PII columns hold only ciphertext, and through pgcloak that they decrypt.
load_pii_table() {
    log "loading $PII_ROWS rows into people through pgcloak (COPY)"
    pii_psql -f "$BENCH_DIR/pgbench-pii-schema.sql" >/dev/null || die "creating people failed"
    awk -v n="$PII_ROWS" 'BEGIN {
        for (i = 1; i <= n; i++) {
            name = "Person " i; email = "person" i "@example.com"
            printf "%d\t%s\t%s\t%s\t%s\n", i, name, email, name, email
        } }' >"$WORK_DIR/people.tsv"
    pii_psql -c '\copy people (id, name_pii, email_pii, name_plain, email_plain) FROM pstdin' \
        <"$WORK_DIR/people.tsv" >/dev/null || die "COPY into people through pgcloak failed"
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" -c 'VACUUM ANALYZE people' >/dev/null

    local direct
    direct=$(psql -X -Atq -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" -c "
        SELECT count(*), count(*) FILTER (WHERE name_pii LIKE 'pgc1\$r\$%' AND email_pii LIKE 'pgc1\$d\$%'
                                          AND name_pii <> name_plain AND email_pii <> email_plain)
        FROM people") || die "cannot read people directly"
    [[ $direct == "$PII_ROWS|$PII_ROWS" ]] \
        || die "people in Postgres: expected $PII_ROWS rows all with ciphertext PII columns, got (rows|ciphertext) $direct"
    local mismatched
    mismatched=$(pii_psql -At -F $'\t' -c 'SELECT name_pii, email_pii, name_plain, email_plain FROM people' \
        | awk -F '\t' '$1 != $3 || $2 != $4 { n++ } END { print n + 0 }') || die "cannot read people through pgcloak"
    [[ $mismatched == 0 ]] || die "$mismatched rows of people do not decrypt to their plain twins through pgcloak"
    [[ $(pii_psql -At -c "SELECT id FROM people WHERE email_pii = 'person42@example.com'") == 42 ]] \
        || die "deterministic search on email_pii through pgcloak failed"
    log "people: $PII_ROWS rows, ciphertext in Postgres, plaintext through pgcloak"
}

# check_pii_updates: after the rounds, name_pii must still be ciphertext in every row in
# Postgres, and the values pii-update wrote (numbers) must decrypt through pgcloak.
check_pii_updates() {
    local clear updated
    clear=$(psql -X -Atq -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" \
        -c "SELECT count(*) FROM people WHERE name_pii NOT LIKE 'pgc1\$r\$%'") || die "cannot read people directly"
    [[ $clear == 0 ]] || die "after pii-update, $clear rows of people hold a name_pii that is not ciphertext"
    updated=$(pii_psql -At -c 'SELECT name_pii FROM people' | grep -c '^[0-9][0-9]*$') \
        || die "no name_pii written by pii-update decrypts through pgcloak"
    log "people after the rounds: name_pii is ciphertext in Postgres; $updated rows decrypt to pii-update's values"
}

main() {
    command -v pgbench >/dev/null || die "pgbench is required"
    bench_init
    ensure_pgcloak
    start_postgres 1200
    start_pgbouncer
    PGCLOAK_BENCH_MASTER_KEY=$("$PGCLOAK_BIN" keygen) || die "pgcloak keygen failed"
    export PGCLOAK_BENCH_MASTER_KEY
    start_pgcloak
    local relay_port=$PGCLOAK_PORT
    TARGET_PID[pgcloak]=$PGCLOAK_PID
    BACKGROUND_PIDS+=("$PGCLOAK_PID")
    PGCLOAK_EXTRA_CONFIG=$(<"$BENCH_DIR/pgbench-pii-policy.yaml")
    start_pgcloak
    TARGET_PID[pgcloak-pii]=$PGCLOAK_PID
    TARGET_PID[pgbouncer]=$(cat "$PGBOUNCER_PIDFILE")
    TARGET_PORT=([direct]=$PG_PORT [pgbouncer]=$PGBOUNCER_PORT [pgcloak]=$relay_port [pgcloak-pii]=$PGCLOAK_PORT)
    local target
    for target in "${TARGETS[@]}"; do
        TARGET_NAME[${TARGET_PORT[$target]}]=$target
        # Every target must answer before any timing starts.
        psql -X -h 127.0.0.1 -p "${TARGET_PORT[$target]}" -U postgres -d "$DB" -Atc 'SELECT 1' >/dev/null \
            || die "cannot query through $target"
    done

    log "pgbench -i -s $SCALE"
    pgbench -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DB" >"$WORK_DIR/pgbench-init.log" 2>&1 \
        || { cat "$WORK_DIR/pgbench-init.log" >&2; die "pgbench -i failed"; }
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" -c 'VACUUM ANALYZE' >/dev/null
    load_pii_table

    local round entry name args
    for ((round = 1; round <= ROUNDS; round++)); do
        log "round $round/$ROUNDS"
        for entry in "${WORKLOADS[@]}"; do
            name=${entry%%|*}
            read -ra args <<<"${entry#*|}"
            for target in "${TARGETS[@]}"; do
                run_workload "$name" "${TARGET_PORT[$target]}" "${args[@]}"
            done
        done
        for entry in "${PII_WORKLOADS[@]}"; do
            RUN_DURATION=$PII_DURATION run_workload "${entry%%|*}" "$PGCLOAK_PORT" \
                -M prepared -f "$BENCH_DIR/${entry#*|}"
        done
    done
    check_pii_updates

    local file
    file=$RESULTS_DIR/pgbench-$(date +%Y%m%d-%H%M%S).txt
    report | tee "$file"
    echo
    echo "written to $file"
}

main "$@"
