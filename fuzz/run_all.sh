#!/bin/sh
# Runs each target for $SECS seconds (default 600), one at a time, in one process (no
# -jobs/-fork: a single libFuzzer process on one core), and keeps
# libFuzzer's log in fuzz/logs/<target>.log. Usage: fuzz/run_all.sh [target...]
set -u
cd "$(dirname "$0")"
SECS=${SECS:-600}
TARGETS=${*:-frame_scanner frontend_messages backend_messages startup_packet envelope copy_in sql_analysis session_tracker pgtype_values}
mkdir -p logs
for t in $TARGETS; do
  extra=""
  [ "$t" = sql_analysis ] && extra="-dict=dicts/sql.dict -max_len=65536"
  [ "$t" = session_tracker ] && extra="-max_len=8192"
  cargo +nightly fuzz run -O -a -s none "$t" corpus/"$t" -- \
    -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=2048 $extra \
    > logs/"$t".log 2>&1
  echo "$t exit $?" >> logs/summary.txt
done
