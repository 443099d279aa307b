#!/usr/bin/env bash
# Many-core scaling: scripts/compare.sh --proxy-cores N for each N of a list, each into DIR/proxy-N/,
# then one summary table (keep-alive req/s, proxy CPU µs/request and p99; WebSocket echo msgs/s, CPU
# µs/message and p99; per N and proxy) on stdout and in DIR/summary.md.
#
#   scripts/scaling.sh                      N = 1 2 4 8 (those < the number of cores), full runs
#   scripts/scaling.sh --quick 1 4          quick runs, N = 1 and 4
#
# Options: --out DIR (default bench/results/scaling), --no-build; every other option (--quick,
# --rounds N, --duration D, --rate R, --idle-conns C) goes to compare.sh as it is. Program prefixes
# (WTGATE, BENCH, HAPROXY, NGINX, WRK, TASKSET) and BASE_PORT pass through the environment.
# Each compare.sh run is bounded (30 minutes); a failed one leaves its log, "(no report)" in the
# table and exit status 1.
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"

OUT="$ROOT/bench/results/scaling"
BUILD=1
PASS=()
LIST=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --quick) PASS+=("$1") ;;
    --rounds|--duration|--rate|--idle-conns) PASS+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    [0-9]*) LIST+=("$1") ;;
    *) echo "scaling.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#LIST[@]} -gt 0 ] || LIST=(1 2 4 8)

log() { echo "scaling.sh: $*" >&2; }

NCPU=$(nproc)
RUN=()
for n in "${LIST[@]}"; do
  if ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then log "not a core count: $n"; exit 2; fi
  if [ "$n" -ge "$NCPU" ]; then log "skipping N=$n: only $NCPU cores (the load needs at least one)"
  else RUN+=("$n"); fi
done
[ ${#RUN[@]} -gt 0 ] || { log "nothing to run on $NCPU cores"; exit 2; }

if [ "$BUILD" = 1 ]; then
  log "building release binaries"
  cargo build --release -q -p wtgate -p wtgate-bench
fi

mkdir -p "$OUT"
T0=$SECONDS
FAILED=0
for n in "${RUN[@]}"; do
  dir="$OUT/proxy-$n"
  mkdir -p "$dir"
  rm -f "$dir/report.md"
  log "[$((SECONDS - T0))s] N=$n: compare.sh ${PASS[*]} --proxy-cores $n (log: $dir/compare.log)"
  if timeout 1800 "$ROOT/scripts/compare.sh" "${PASS[@]}" --no-build --proxy-cores "$n" --out "$dir" \
      >"$dir/stdout.log" 2>"$dir/compare.log"; then
    log "[$((SECONDS - T0))s] N=$n done"
  else
    log "[$((SECONDS - T0))s] N=$n FAILED (rc $?); last lines of its log:"
    FAILED=$((FAILED + 1))
    tail -n 15 "$dir/compare.log" >&2 || true
  fi
done

# One row per N and proxy, from the markdown tables of each report.md (medians over rounds).
# Columns of a scenario table: target, req/s (msgs/s), MB/s, p50, p90, p99, p99.9, max, CPU µs, RSS, errors.
summary() {
  echo "## Many-core scaling — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- machine: $NCPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)"
  echo "- command: \`scripts/scaling.sh ${PASS[*]} ${RUN[*]}\`; each N: \`compare.sh ${PASS[*]} --proxy-cores N\` in proxy-N/ (pinning in its report.md)"
  echo "- proxies on cores 0..N-1 (N threads/workers), generator and both backends on the other $NCPU−N cores; CPU µs = the proxy's utime+stime per request or message"
  echo
  echo "| proxy cores | target | keep-alive req/s | CPU µs/req | p99 | WS echo msgs/s | CPU µs/msg | WS p99 | errors |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  for n in "${RUN[@]}"; do
    awk -v n="$n" '
      function us(v) { # "2.72ms" / "405us" / "1.20s" → µs
        if (v ~ /ms$/) return v * 1000; if (v ~ /us$/) return v + 0; if (v ~ /s$/) return v * 1e6; return ""
      }
      function ratio(a, b) { return (a != "" && b != "" && b + 0 > 0) ? sprintf("%.2f×", a / b) : "–" }
      function get(a, k) { return (k in a) ? a[k] : "–" }
      /^### / { sec = ($0 ~ /^### Keep-alive/) ? "ka" : ($0 ~ /^### WebSocket/) ? "ws" : "" }
      sec != "" && /^\| (wtgate|haproxy|nginx|direct) \|/ {
        split($0, f, "|"); for (i in f) gsub(/^ +| +$/, "", f[i])
        t = f[2]; seen[t] = 1
        rate[sec, t] = f[3]; p99[sec, t] = f[7]; cpu[sec, t] = f[10]; err[t] += f[12]
      }
      END {
        split("wtgate haproxy nginx direct", ts, " ")
        for (i = 1; i <= 4; i++) {
          t = ts[i]; if (!(t in seen)) { if (i == 1) printf "| %s | (no report) | – | – | – | – | – | – | – |\n", n; continue }
          printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n, (t == "direct" ? "direct (backend alone)" : t),
            get(rate, "ka" SUBSEP t), get(cpu, "ka" SUBSEP t), get(p99, "ka" SUBSEP t),
            get(rate, "ws" SUBSEP t), get(cpu, "ws" SUBSEP t), get(p99, "ws" SUBSEP t), err[t]
        }
        if (("wtgate" in seen) && ("haproxy" in seen))
          printf "| %s | **wtgate/HAProxy** | %s | %s | %s | %s | %s | %s | |\n", n,
            ratio(rate["ka", "wtgate"], rate["ka", "haproxy"]), ratio(cpu["ka", "wtgate"], cpu["ka", "haproxy"]),
            ratio(us(p99["ka", "wtgate"]), us(p99["ka", "haproxy"])),
            ratio(rate["ws", "wtgate"], rate["ws", "haproxy"]), ratio(cpu["ws", "wtgate"], cpu["ws", "haproxy"]),
            ratio(us(p99["ws", "wtgate"]), us(p99["ws", "haproxy"]))
      }' "$OUT/proxy-$n/report.md" 2>/dev/null || printf '| %s | (no report) | – | – | – | – | – | – | – |\n' "$n"
  done
  echo
  echo "Errors: keep-alive + WebSocket errors of that proxy. Total time: $((SECONDS - T0)) s."
}
summary | tee "$OUT/summary.md"
[ "$FAILED" = 0 ] || { log "$FAILED run(s) failed"; exit 1; }
