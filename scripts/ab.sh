#!/usr/bin/env bash
# A/B of wtgate builds (or flag sets) against each other in one run: the same two `wtgate-bench
# serve` backends and load on LOAD_CPUS, each variant alone on PROXY_CPU, interleaved rounds,
# proxy CPU µs per request from the generator's --pids accounting. For changes that only touch
# wtgate (compare.sh is the side-by-side with HAProxy and nginx).
#
#   scripts/ab.sh [--rounds 5] [--duration 4s] [--mode keepalive|connect|ws] [--msg-size N] \
#                 NAME='BINARY [FLAGS…]' NAME='BINARY [FLAGS…]' …
#
# --msg-size: the WebSocket message size of --mode ws (the generator's default otherwise).
#
# Prints one line per variant and round, then the medians.
set -euo pipefail
ROUNDS=5 DUR=4s MODE=keepalive SIZE_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --msg-size) SIZE_ARGS=(--msg-size "$2"); shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "ab.sh: give at least one NAME='BINARY [FLAGS]'" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/target/release/wtgate-bench}
NCPU=$(nproc)
PROXY_CPU=${PROXY_CPU:-$((NCPU - 1))}
LOAD_CPUS=${LOAD_CPUS:-0}
PORT=${PORT:-27480}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c "$LOAD_CPUS" "$BENCH" serve --listen 127.0.0.1:$((PORT + 1)) --prefix wt1 >/dev/null & pids+=($!)
taskset -c "$LOAD_CPUS" "$BENCH" serve --listen 127.0.0.1:$((PORT + 2)) --prefix wt2 >/dev/null & pids+=($!)
sleep 0.5
declare -A results
for round in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    name=${spec%%=*}; cmd=${spec#*=}
    # shellcheck disable=SC2086
    taskset -c "$PROXY_CPU" $cmd --threads 1 --no-pin --listen 127.0.0.1:$PORT \
      --backend wt1=127.0.0.1:$((PORT + 1)) --backend wt2=127.0.0.1:$((PORT + 2)) 2>/dev/null &
    proxy=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
    json=$(timeout 60 taskset -c "$LOAD_CPUS" "$BENCH" load --target 127.0.0.1:$PORT --mode "$MODE" \
      -c 64 -d "$DUR" "${SIZE_ARGS[@]}" --pids "$proxy" --json --quiet)
    kill "$proxy"; wait "$proxy" 2>/dev/null || true
    line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f %.2f %d" % (r["rps"], r["proxy"]["cpu_us_per_req"] or 0, r["errors_total"]))' "$json")
    echo "round $round $name: req/s, proxy CPU µs/req, errors = $line"
    results[$name]+="$line;"
  done
done
echo "medians over $ROUNDS rounds ($MODE ${SIZE_ARGS[*]}, 64 conns, $DUR):"
for spec in "$@"; do
  name=${spec%%=*}
  python3 - "$name" "${results[$name]}" <<'PY'
import statistics, sys
rows = [r.split() for r in sys.argv[2].split(";") if r]
print("  %-12s %8.0f req/s  %6.2f µs CPU/req  errors %d" % (sys.argv[1],
      statistics.median(float(r[0]) for r in rows), statistics.median(float(r[1]) for r in rows),
      sum(int(r[2]) for r in rows)))
PY
done
