#!/usr/bin/env bash
# Throughput of pgcloak against a direct connection and against PgBouncer (session mode).
#
# Usage:
#   benches/pgbench.sh
#   DURATION=30 ROUNDS=5 benches/pgbench.sh
#
# Environment:
#   DURATION        seconds per pgbench run (default 20)
#   ROUNDS          rounds; each round runs every workload against every target (default 3)
#   CLIENTS         pgbench -c (default 8)
#   THREADS         pgbench -j (default 2)
#   SCALE           pgbench -i -s (default 10)
#   PGCLOAK_BIN     the binary (default target/release/pgcloak, built when missing)
#   PGCLOAK_BUILD=1 run `cargo build --release` first even if the binary exists
#   PG_BIN          PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
#
# What it does: starts a throwaway PostgreSQL (trust auth, loopback, max_connections=1200),
# PgBouncer (pool_mode=session; installed with apt-get when missing) and pgcloak, both in
# front of that same PostgreSQL, each on a free port; runs `pgbench -i -s SCALE` once, then
# for each round, for each workload, runs pgbench against direct, pgbouncer and pgcloak in
# turn (interleaved, so drift hits every target alike). It prints the median TPS per
# workload and target, and pgcloak's ratio to direct and to PgBouncer. The report is also
# written to bench-results/pgbench-<timestamp>.txt. Everything started is stopped on exit.
#
# With the defaults (2 workloads x 3 targets x 3 rounds x 20 s) it takes about 7 minutes.
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
TARGETS=(direct pgbouncer pgcloak)

declare -A TARGET_PORT=()   # target name -> port
declare -A TARGET_NAME=()   # port -> target name
declare -A TPS=()           # "workload|target" -> space-separated TPS of each round
declare -A FAILED=()        # "workload|target" -> total failed transactions

# run_workload NAME TARGET_PORT PGBENCH_ARGS...: one pgbench run of CLIENTS clients for
# DURATION seconds against 127.0.0.1:TARGET_PORT; records its TPS under NAME and the target.
run_workload() {
    local name=$1 port=$2
    shift 2
    local target=${TARGET_NAME[$port]:-port-$port}
    local out=$WORK_DIR/pgbench-run.out
    log "  $name -> $target"
    if ! run_interruptible pgbench -h 127.0.0.1 -p "$port" -U postgres -n \
        -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$@" "$DB" >"$out" 2>&1; then
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
    log "    tps = $tps${failed:+, $failed failed}"
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
    printf '%-22s %-10s %12s  %s\n' workload target "median TPS" "TPS per round"
    for entry in "${WORKLOADS[@]}"; do
        name=${entry%%|*}
        for target in "${TARGETS[@]}"; do
            m=$(median "${TPS["$name|$target"]}")
            printf '%-22s %-10s %12s  %s' "$name" "$target" "$m" "${TPS["$name|$target"]}"
            if (( ${FAILED["$name|$target"]:-0} > 0 )); then
                printf '  (%s failed transactions)' "${FAILED["$name|$target"]}"
            fi
            echo
        done
    done
    echo
    printf '%-22s %16s %19s\n' workload "pgcloak/direct" "pgcloak/pgbouncer"
    local direct bouncer cloak
    for entry in "${WORKLOADS[@]}"; do
        name=${entry%%|*}
        direct=$(median "${TPS["$name|direct"]}")
        bouncer=$(median "${TPS["$name|pgbouncer"]}")
        cloak=$(median "${TPS["$name|pgcloak"]}")
        printf '%-22s %16s %19s\n' "$name" "$(ratio "$cloak" "$direct")" "$(ratio "$cloak" "$bouncer")"
    done
}

main() {
    command -v pgbench >/dev/null || die "pgbench is required"
    bench_init
    ensure_pgcloak
    start_postgres 1200
    start_pgbouncer
    start_pgcloak
    TARGET_PORT=([direct]=$PG_PORT [pgbouncer]=$PGBOUNCER_PORT [pgcloak]=$PGCLOAK_PORT)
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
    done

    local file
    file=$RESULTS_DIR/pgbench-$(date +%Y%m%d-%H%M%S).txt
    report | tee "$file"
    echo
    echo "written to $file"
}

main "$@"
