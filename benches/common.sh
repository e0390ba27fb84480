# shellcheck shell=bash disable=SC2034  # globals are read by the scripts that source this
# Shared by benches/*.sh: throwaway PostgreSQL, PgBouncer and pgcloak processes on free
# loopback ports, all torn down by bench_cleanup (installed as an EXIT trap by bench_init).
#
# Source it, then call bench_init. Not meant to be run on its own.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGCLOAK_BIN=${PGCLOAK_BIN:-$REPO_ROOT/target/release/pgcloak}
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/bench-results}

WORK_DIR=""          # mktemp dir holding every throwaway file
PG_DATA=""           # postgres data directory (inside WORK_DIR)
PG_PORT=""
PG_DSN=""            # postgresql:// URL of the throwaway Postgres (set by start_postgres)
PGBOUNCER_PORT=""
PGBOUNCER_BIN=""
PGBOUNCER_PIDFILE=""
PGCLOAK_PORT=""
PGCLOAK_PID=""
PGCLOAK_EXTRA_CONFIG=""  # YAML appended to pgcloak's config (e.g. `keys` + `tables`); set before start_pgcloak
PGCLOAK_BUILT=""     # the binary's mtime when pgcloak was started (it may be rebuilt meanwhile)
BACKGROUND_PIDS=()   # other helpers to kill on exit

# Progress goes to fd 3, a copy of the stderr the script started with, so that it is
# seen even from inside a command whose stderr is redirected (e.g. the EXIT trap firing
# during `run_interruptible pgbench ... 2>FILE`).
exec 3>&2
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
die() { log "error: $*"; exit 1; }

# Runs a command as the postgres OS user when we are root (postgres and pgbouncer refuse
# to run as root); as ourselves otherwise.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT [SECONDS [PID]]: until something accepts TCP connections on
# 127.0.0.1:PORT; fails after SECONDS, or as soon as process PID is gone.
wait_port() {
    local port=$1 deadline=$((SECONDS + ${2:-30})) pid=${3:-}
    until (exec 4<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
}

# run_interruptible CMD...: runs CMD in the background and waits for it, so that SIGINT or
# SIGTERM stops the script at once (bash runs traps only between foreground commands); the
# EXIT trap then kills CMD.
run_interruptible() {
    "$@" &
    local pid=$! rc=0
    BACKGROUND_PIDS+=("$pid")
    wait "$pid" || rc=$?
    unset 'BACKGROUND_PIDS[-1]'
    return "$rc"
}

bench_init() {
    command -v python3 >/dev/null || die "python3 is required"
    command -v psql >/dev/null || die "psql is required"
    [[ -x $PG_BIN/initdb ]] || die "PostgreSQL server binaries not found in $PG_BIN (set PG_BIN)"
    # 1,000+ client sockets plus as many upstream sockets.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pgcloak-bench.XXXXXX")
    chmod 755 "$WORK_DIR"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$RESULTS_DIR"
}

bench_cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    local pid
    for pid in "${BACKGROUND_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    if [[ -n $PGCLOAK_PID ]]; then
        stop_pgcloak
    fi
    if [[ -n $PGBOUNCER_PIDFILE && -s $PGBOUNCER_PIDFILE ]]; then
        kill "$(cat "$PGBOUNCER_PIDFILE")" 2>/dev/null
        sleep 0.2
    fi
    if [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1
    fi
    if [[ -n $WORK_DIR && -d $WORK_DIR ]]; then
        if [[ $status -eq 130 || $status -eq 143 ]]; then
            log "interrupted; stopped everything"
        elif [[ $status -ne 0 ]]; then
            log "failed (exit $status); last lines of the logs:"
            local f
            for f in "$WORK_DIR"/*.log; do
                [[ -f $f ]] || continue
                echo "--- $f" >&3
                tail -n 15 "$f" >&3
            done
        fi
        rm -rf "$WORK_DIR"
    fi
    exit "$status"
}

# The release binary; built when missing. A binary older than src/ is used with a warning
# (set PGCLOAK_BUILD=1 to rebuild first).
ensure_pgcloak() {
    if [[ ! -x $PGCLOAK_BIN || ${PGCLOAK_BUILD:-0} == 1 ]]; then
        log "building pgcloak (cargo build --release)"
        (cd "$REPO_ROOT" && cargo build --release --bin pgcloak) >&2 || die "cargo build --release failed"
    fi
    [[ -x $PGCLOAK_BIN ]] || die "$PGCLOAK_BIN not found"
    if [[ -n $(find "$REPO_ROOT/src" -newer "$PGCLOAK_BIN" -name '*.rs' -print -quit) ]]; then
        log "warning: $PGCLOAK_BIN is older than src/; set PGCLOAK_BUILD=1 to rebuild"
    fi
}

# start_postgres MAX_CONNECTIONS: initdb a throwaway cluster (trust auth) and start it on a
# free port. Sets PG_PORT and PG_DATA.
start_postgres() {
    local max_connections=$1
    PG_DATA=$WORK_DIR/pgdata
    PG_PORT=$(free_port)
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$WORK_DIR"
    fi
    log "initdb + start PostgreSQL on 127.0.0.1:$PG_PORT (max_connections=$max_connections)"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$WORK_DIR/initdb.log" 2>&1 || die "initdb failed: $(tail -n 5 "$WORK_DIR/initdb.log")"
    # Loopback only; the data is throwaway, so durability is off.
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK_DIR/postgres.log" -w -t 60 start -o "\
        -c listen_addresses=127.0.0.1 -c port=$PG_PORT \
        -c unix_socket_directories='$WORK_DIR' \
        -c max_connections=$max_connections \
        -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off \
        -c full_page_writes=off ${PG_EXTRA_OPTS:-}" >/dev/null \
        || die "postgres did not start: $(tail -n 5 "$WORK_DIR/postgres.log")"
    PG_DSN="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
}

# pg_sql ARGS...: psql against the throwaway Postgres directly, stopping at the first error.
pg_sql() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_DSN" "$@"; }

# start_pgbouncer: PgBouncer in session mode in front of PG_PORT, installed with apt-get if
# missing. Sets PGBOUNCER_PORT.
start_pgbouncer() {
    local bin
    bin=$(command -v pgbouncer || true)
    [[ -n $bin ]] || bin=/usr/sbin/pgbouncer
    if [[ ! -x $bin ]]; then
        log "installing pgbouncer (apt-get)"
        [[ $EUID -eq 0 ]] || die "pgbouncer is not installed; run: sudo apt-get install -y pgbouncer"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y pgbouncer >&2 || { apt-get update >&2 && apt-get install -y pgbouncer >&2; } \
            || die "apt-get install pgbouncer failed"
        # The package may start a system instance on 6432; we use our own ports anyway.
        bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    fi
    PGBOUNCER_BIN=$bin
    PGBOUNCER_PORT=$(free_port)
    PGBOUNCER_PIDFILE=$WORK_DIR/pgbouncer.pid
    printf '"postgres" ""\n' >"$WORK_DIR/userlist.txt"
    cat >"$WORK_DIR/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
pool_mode = session
auth_type = trust
auth_file = $WORK_DIR/userlist.txt
max_client_conn = 2000
default_pool_size = 40
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
logfile = $WORK_DIR/pgbouncer.log
pidfile = $PGBOUNCER_PIDFILE
${PGBOUNCER_EXTRA:-}
EOF
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$WORK_DIR/pgbouncer.ini" "$WORK_DIR/userlist.txt"
    fi
    log "starting $("$bin" --version | head -n 1) (session mode) on 127.0.0.1:$PGBOUNCER_PORT"
    as_pg "$bin" -d "$WORK_DIR/pgbouncer.ini" >>"$WORK_DIR/pgbouncer-stderr.log" 2>&1 \
        || die "pgbouncer did not start"
    wait_port "$PGBOUNCER_PORT" 15 || die "pgbouncer is not listening"
}

# start_pgcloak: pgcloak in front of PG_PORT on a free port, with PGCLOAK_EXTRA_CONFIG
# appended to its config. Sets PGCLOAK_PORT, PGCLOAK_PID.
start_pgcloak() {
    PGCLOAK_PORT=$(free_port)
    cat >"$WORK_DIR/pgcloak.yaml" <<EOF
listen: "127.0.0.1:$PGCLOAK_PORT"
upstream:
  host: 127.0.0.1
  port: $PG_PORT
${PGCLOAK_UPSTREAM_EXTRA:-}
max_connections: 2000
shutdown_grace_seconds: 5
EOF
    if [[ -n ${SESSION_THREADS:-} ]]; then
        printf 'session_threads: %s\n' "$SESSION_THREADS" >>"$WORK_DIR/pgcloak.yaml"
    fi
    if [[ -n $PGCLOAK_EXTRA_CONFIG ]]; then
        printf '%s\n' "$PGCLOAK_EXTRA_CONFIG" >>"$WORK_DIR/pgcloak.yaml"
    fi
    PGCLOAK_BUILT=$(date -u -r "$PGCLOAK_BIN" +%Y-%m-%dT%H:%M:%SZ)
    # In a session of its own, as PgBouncer (-d) and PostgreSQL (pg_ctl) are: with the
    # kernel's autogroup scheduling (sched_autogroup_enabled) each session is one group with
    # one fair share of the CPU, and pgcloak would otherwise share pgbench's. Without job
    # control a background child leads no process group, so setsid runs pgcloak in place
    # (same pid); checked below.
    RUST_LOG=${RUST_LOG:-info} setsid "$PGCLOAK_BIN" serve --config "$WORK_DIR/pgcloak.yaml" \
        >>"$WORK_DIR/pgcloak.log" 2>&1 &
    PGCLOAK_PID=$!
    wait_port "$PGCLOAK_PORT" 15 "$PGCLOAK_PID" || die "pgcloak is not listening (see $WORK_DIR/pgcloak.log below)"
    [[ $(ps -o sid= -p "$PGCLOAK_PID" | tr -d ' ') == "$PGCLOAK_PID" ]] \
        || die "pgcloak (pid $PGCLOAK_PID) does not lead its own session; run this script without job control"
    log "pgcloak (pid $PGCLOAK_PID) on 127.0.0.1:$PGCLOAK_PORT"
}

# stop_pgcloak: SIGTERM, then SIGKILL after 10 s.
stop_pgcloak() {
    [[ -n $PGCLOAK_PID ]] || return 0
    kill -TERM "$PGCLOAK_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$PGCLOAK_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$PGCLOAK_PID" 2>/dev/null; then
        log "warning: pgcloak did not exit within 10 s of SIGTERM; killing it"
        kill -KILL "$PGCLOAK_PID" 2>/dev/null || true
    fi
    wait "$PGCLOAK_PID" 2>/dev/null || true
    PGCLOAK_PID=""
}

# proc_kb PID FIELD: a /proc/PID/status field (VmRSS, VmHWM, ...) in kB.
proc_kb() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# kb_to_mib KB
kb_to_mib() {
    awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
}

# A line describing what was measured, for the results file.
describe_env() {
    local rev
    rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    if ! git -C "$REPO_ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
        rev="$rev + uncommitted changes in src/"
    fi
    echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host:     $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "pgcloak:  $PGCLOAK_BIN (git $rev, built ${PGCLOAK_BUILT:-$(date -u -r "$PGCLOAK_BIN" +%Y-%m-%dT%H:%M:%SZ)})"
    echo "postgres: $("$PG_BIN/postgres" --version)"
}
