#!/usr/bin/env bash
# Profiles wtgate under one load of scripts/compare.sh, with the same pinning (wtgate on the last
# core, generator + two `serve` backends on the others):
#   - `perf stat` of the wtgate process over the measured window (CPU, context switches, IPC),
#   - `perf record -g` and the top of `perf report --no-children` (by symbol, kernel included),
#   - syscalls and io_uring operations per request (perf tracepoint counts).
#
#   scripts/bench-profile.sh [keepalive|ws|connect] [seconds] [wtgate|haproxy]
#   (default: keepalive 5 wtgate; haproxy uses scripts/bench-haproxy.cfg, for the same profile of it)
# Output goes to stdout and target/bench-profile/ (perf.data, reports). Both binaries are built with
# `--profile profiling` (release code plus line tables, see Cargo.toml) into target/profiling/.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"
SCEN=${1:-keepalive}
SECS=${2:-5}
PROXY=${3:-wtgate}
case "$SCEN" in
  keepalive) ARGS=(--mode keepalive -c 64) ;;
  ws) ARGS=(--mode ws -c 64 --msg-size 1024) ;;
  connect) ARGS=(--mode connect -c 64) ;;
  *) echo "bench-profile.sh: scenario keepalive, ws or connect" >&2; exit 2 ;;
esac
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace >/dev/null; }
cargo build --profile profiling -q -p wtgate -p wtgate-bench
OUT="$ROOT/target/bench-profile"
mkdir -p "$OUT"
NCPU=$(nproc)
PROXY_CPUS=${PROXY_CPUS:-$((NCPU - 1))}
LOAD_CPUS=${LOAD_CPUS:-0-$(( NCPU > 1 ? NCPU - 2 : 0 ))}
BASE_PORT=${BASE_PORT:-27180}
B=target/profiling/wtgate-bench
STARTED=()
cleanup() { for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

taskset -c "$LOAD_CPUS" $B serve --listen 127.0.0.1:$BASE_PORT --prefix wt1 >/dev/null & STARTED+=($!)
taskset -c "$LOAD_CPUS" $B serve --listen 127.0.0.1:$((BASE_PORT + 1)) --prefix wt2 >/dev/null & STARTED+=($!)
SHARDS=$(taskset -c "$PROXY_CPUS" nproc)
if [ "$PROXY" = haproxy ]; then
  sed -e "s/@PORT@/$((BASE_PORT + 2))/; s/@B1@/127.0.0.1:$BASE_PORT/g; s/@B2@/127.0.0.1:$((BASE_PORT + 1))/g" \
    -e "s/@THREADS@/$SHARDS/; s/@MAXCONN@/4096/g" scripts/bench-haproxy.cfg >"$OUT/haproxy.cfg"
  taskset -c "$PROXY_CPUS" haproxy -db -f "$OUT/haproxy.cfg" >/dev/null 2>&1 & WG=$!; STARTED+=($WG)
else
  taskset -c "$PROXY_CPUS" target/profiling/wtgate --listen 127.0.0.1:$((BASE_PORT + 2)) \
    --backend wt1=127.0.0.1:$BASE_PORT --backend wt2=127.0.0.1:$((BASE_PORT + 1)) \
    --threads "$SHARDS" >/dev/null 2>&1 & WG=$!; STARTED+=($WG)
fi
sleep 0.5
load() { timeout 60 taskset -c "$LOAD_CPUS" $B load --quiet --target 127.0.0.1:$((BASE_PORT + 2)) \
  --pids "$WG" "${ARGS[@]}" "$@"; }
echo "# $PROXY (pid $WG) on CPU $PROXY_CPUS; generator + backends on CPU $LOAD_CPUS"

echo "## perf stat + perf record -g: $PROXY, $SCEN, ${SECS}s"
load -d "$((SECS + 1))s" --warmup 1s >"$OUT/load.txt" &
LP=$!
sleep 1
timeout $((SECS + 5)) perf stat -p "$WG" -e task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions \
  -o "$OUT/perf-stat.txt" -- sleep "$SECS" || true
wait $LP
cat "$OUT/load.txt"
cat "$OUT/perf-stat.txt"

load -d "$((SECS + 1))s" --warmup 1s >/dev/null &
LP=$!
sleep 1
timeout $((SECS + 10)) perf record -q -g -p "$WG" -o "$OUT/perf.data" -- sleep "$SECS" 2>/dev/null || true
wait $LP
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none --percent-limit 1 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -40 | tee "$OUT/perf-top.txt"
echo
echo "## kernel vs user share"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -8

echo
echo "## syscalls and io_uring operations per request (perf tracepoints, ${SECS}s)"
load -d "$((SECS + 1))s" --warmup 1s --json >"$OUT/trace-load.json" &
LP=$!
sleep 1
timeout $((SECS + 5)) perf stat -p "$WG" -o "$OUT/perf-trace.txt" \
  -e raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait \
  -e io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_queue_async_work,io_uring:io_uring_task_work_run \
  -- sleep "$SECS" 2>/dev/null || true
wait $LP
RPS=$(sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' "$OUT/trace-load.json")
echo "req/s during the count: $RPS"
awk -v rps="$RPS" -v secs="$SECS" '/^ *[0-9,]+ +[a-z_]+:/ { gsub(",", "", $1);
  printf "%14s %-42s %8.2f per request\n", $1, $2, (rps > 0 ? $1 / (rps * secs) : 0) }' "$OUT/perf-trace.txt"
