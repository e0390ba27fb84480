#!/usr/bin/env bash
# Throughput with TLS on both legs: direct PostgreSQL (sslmode=require), PgBouncer
# (client_tls_* and server_tls_*, session mode) and pgcloak (tls + upstream.tls), all in
# front of one PostgreSQL with ssl=on, interleaved in one run.
#
# Usage:
#   benches/pgbench-tls.sh
#   DURATION=20 ROUNDS=5 benches/pgbench-tls.sh
#
# Environment: DURATION (s per run, default 15), ROUNDS (default 3), CLIENTS (8), THREADS
# (2), SCALE (10), CONNECT_DURATION (s per `pgbench -C` run, default 10), PGCLOAK_BIN,
# PGCLOAK_BUILD=1, PG_BIN, SESSION_THREADS (as in pgbench.sh).
#
# Workloads: -S simple and -S prepared with CLIENTS clients, and -S simple with -C (a new
# connection, so a full TLS handshake on both legs, per transaction). Every client connects
# with sslmode=require (libpq, no verification, as pgbench has no CA option of its own);
# pgcloak and PgBouncer connect upstream with TLS (pgcloak: mode require; PgBouncer:
# server_tls_sslmode=require). Authentication is trust, so no SCRAM runs. Certificates are
# made with openssl for the run. It prints the median TPS per workload and target, and
# pgcloak's ratio to PgBouncer (target >= 1.0); the report is also written to
# bench-results/pgbench-tls-<timestamp>.txt.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION=${DURATION:-15}
CONNECT_DURATION=${CONNECT_DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
WORKLOADS=(
    "select-only/simple|-S -M simple"
    "select-only/prepared|-S -M prepared"
    "connect/simple|-S -M simple -C"
)
TARGETS=(direct pgbouncer pgcloak)
declare -A PORT=()
declare -A TPS=()

make_certs() {
    local dir=$WORK_DIR/certs
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/server.crt" >/dev/null 2>&1
    chmod 600 "$dir/server.key"
    if [[ $EUID -eq 0 ]]; then
        chown -R postgres: "$dir"
    fi
    CERTS=$dir
}

run() {
    local name=$1 target=$2
    shift 2
    local out=$WORK_DIR/run.out duration=$DURATION
    [[ $name != connect/* ]] || duration=$CONNECT_DURATION
    log "  $name -> $target"
    PGSSLMODE=require run_interruptible pgbench -h 127.0.0.1 -p "${PORT[$target]}" -U postgres -n \
        -c "$CLIENTS" -j "$THREADS" -T "$duration" "$@" postgres >"$out" 2>&1 \
        || { cat "$out" >&2; die "pgbench failed: $name against $target"; }
    local tps
    tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$out")
    [[ -n $tps ]] || { cat "$out" >&2; die "no tps in pgbench output"; }
    TPS["$name|$target"]="${TPS["$name|$target"]:-}${TPS["$name|$target"]:+ }$tps"
    log "    tps = $tps"
}

median() {
    tr ' ' '\n' <<<"$1" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

main() {
    command -v pgbench >/dev/null || die "pgbench is required"
    command -v openssl >/dev/null || die "openssl is required"
    bench_init
    ensure_pgcloak
    make_certs
    PG_EXTRA_OPTS="-c ssl=on -c ssl_cert_file=$CERTS/server.crt -c ssl_key_file=$CERTS/server.key"
    start_postgres 1200
    PGBOUNCER_EXTRA="client_tls_sslmode = require
client_tls_cert_file = $CERTS/server.crt
client_tls_key_file = $CERTS/server.key
server_tls_sslmode = require"
    start_pgbouncer
    PGCLOAK_UPSTREAM_EXTRA="  tls: { mode: require }"
    PGCLOAK_EXTRA_CONFIG="tls: { cert_file: $CERTS/server.crt, key_file: $CERTS/server.key, mode: require }"
    start_pgcloak
    BACKGROUND_PIDS+=("$PGCLOAK_PID")
    PORT=([direct]=$PG_PORT [pgbouncer]=$PGBOUNCER_PORT [pgcloak]=$PGCLOAK_PORT)
    local target
    for target in "${TARGETS[@]}"; do
        PGSSLMODE=require psql -X -h 127.0.0.1 -p "${PORT[$target]}" -U postgres -d postgres -Atc \
            'SELECT 1' >/dev/null || die "cannot query through $target with TLS"
    done
    [[ $(PGSSLMODE=disable psql -X -h 127.0.0.1 -p "$PGCLOAK_PORT" -U postgres -d postgres -Atc 'SELECT 1' 2>&1) == *"requires TLS"* ]] \
        || die "pgcloak accepted a plaintext client"
    log "pgbench -i -s $SCALE"
    PGSSLMODE=require pgbench -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres \
        >"$WORK_DIR/pgbench-init.log" 2>&1 || die "pgbench -i failed"

    local round entry name args
    for round in $(seq "$ROUNDS"); do
        log "round $round/$ROUNDS"
        for entry in "${WORKLOADS[@]}"; do
            name=${entry%%|*}
            args=${entry#*|}
            for target in "${TARGETS[@]}"; do
                # shellcheck disable=SC2086
                run "$name" "$target" $args
            done
        done
    done

    local report=$RESULTS_DIR/pgbench-tls-$(date -u +%Y%m%d-%H%M%S).txt
    {
        echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host:     $(uname -sr) $(uname -m), $(nproc) cores"
        echo "pgcloak:  $PGCLOAK_BIN (git $(git -C "$REPO_ROOT" rev-parse --short HEAD))"
        echo "pgbench:  TLS on both legs (sslmode=require), scale $SCALE, -c $CLIENTS -j $THREADS, -T $DURATION (-C runs: $CONNECT_DURATION), $ROUNDS rounds, interleaved"
        echo
        printf '%-22s %-10s %11s  %s\n' workload target "median TPS" "TPS per round"
        for entry in "${WORKLOADS[@]}"; do
            name=${entry%%|*}
            for target in "${TARGETS[@]}"; do
                printf '%-22s %-10s %11s  %s\n' "$name" "$target" \
                    "$(median "${TPS["$name|$target"]}")" "${TPS["$name|$target"]}"
            done
        done
        echo
        printf '%-22s %s\n' workload "pgcloak/pgbouncer (target >= 1.0)"
        for entry in "${WORKLOADS[@]}"; do
            name=${entry%%|*}
            printf '%-22s %s\n' "$name" "$(awk -v a="$(median "${TPS["$name|pgcloak"]}")" \
                -v b="$(median "${TPS["$name|pgbouncer"]}")" 'BEGIN { printf "%.3f", a / b }')"
        done
    } | tee "$report" >&3
    log "written to $report"
}

main "$@"
