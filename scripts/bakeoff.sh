#!/usr/bin/env bash
# Runtime bake-off (docs/runtime.md): the same minimal L4 relay (bench/relay: accept, connect one
# backend, copy both ways with 16 KiB buffers, one thread pinned to the proxy core) on glommio,
# monoio and a raw io-uring loop, with HAProxy `mode tcp` (one thread, same core) as the anchor.
# With --splice, the splice bake-off (docs/splice.md): copy against splice(2), in the relay and in
# HAProxy.
#
#   scripts/bakeoff.sh                         5 interleaved rounds × 4 s per load (~4 minutes)
#   scripts/bakeoff.sh --rounds 1 --duration 2s   a quick look
#   scripts/bakeoff.sh --splice                the splice bake-off (~10 minutes)
#
# Options: --rounds N (5)  --duration 4s  --warmup 1s  --conns 64  --msg-size 1024
#          --proxy-cpu N (default: the last core)  --load-cpus LIST (default: the other cores)
#          --targets "haproxy glommio monoio uring"  --loads "ws:1024 ka"  --bulk-conns 16
#          --out DIR (bench/results/bakeoff)  --no-build
#          --splice    the splice bake-off: --targets "haproxy haproxy-splice haproxy-spauto monoio
#                      splice splice-uring splice-auto" --loads "ws:1024 ws:4096 ws:16384 ws:65536
#                      bulk:1048576" --out bench/results/bakeoff/splice (later options override)
#          --counters  after the rounds, one more WS load per target under `perf stat -p`: syscalls,
#                      io_uring_enter calls, SQEs, CQEs, poll arms, task-work runs and context
#                      switches of the proxy, per message (needs perf; a separate pass, so the
#                      timed rounds run without perf attached); plus the rescheduling and
#                      function-call IPIs the proxy core took (/proc/interrupts, whole core)
#
# Targets: haproxy (mode tcp, no splicing), haproxy-splice (option splice-request +
# splice-response: always), haproxy-spauto (option splice-auto: when HAProxy sees a stream fill its
# buffer); relay-glommio, relay-monoio and relay-uring as `glommio`, `monoio`, `uring` (all copy);
# `splice`, `splice-uring`, `splice-auto` = relay-monoio --splice poll|uring|auto.
#
# Loads, one after the other, each against every target in turn (the order of the targets rotates
# every round; a target is started fresh for each load and stopped after it):
#   ws:N    WebSocket echo, N-byte messages, --conns connections: `wtgate-bench load --mode ws
#           --pids` (proxy CPU = utime+stime of the proxy process over the measured window ÷
#           messages sent); --msg-size N sets the default ws:N
#   ka      keep-alive GETs, --conns connections: `wrk -t1` (proxy CPU = utime+stime from
#           /proc/PID/stat across the wrk run ÷ requests)
#   bulk:N  keep-alive GETs of N-byte responses, --bulk-conns connections: `wrk -t1` as ka; the
#           report gives MiB/s and proxy CPU µs per MiB
# The backend is one `wtgate-bench serve` thread; it and the generator share the load CPUs, the
# proxy has its core to itself. Ratios to HAProxy (and to the monoio copy relay, when it runs) are
# taken per round (same round, same machine state), then the median over rounds is reported.
#
# Output: a line per round and load; then a markdown table of medians per load (also in
# DIR/report.md; the raw rows in DIR/rounds.tsv, wrk's own output in DIR/wrk.txt, wtgate-bench's
# in DIR/ws.jsonl). Everything is on 127.0.0.1, every load has a duration and a `timeout`, and
# every process started here is stopped on exit.
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"

ARGV="$*"
ROUNDS=5
DUR=4s
WARM=1s
CONNS=64
MSG=1024
TARGETS=(haproxy glommio monoio uring)
LOADS=()
BULK_CONNS=16
OUT="$ROOT/bench/results/bakeoff"
BUILD=1
COUNTERS=0
BASE_PORT=${BASE_PORT:-28380}
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
  PROXY_CPU=$((NCPU - 1))
  LOAD_CPUS=0-$((NCPU - 2))
else
  PROXY_CPU=0
  LOAD_CPUS=0
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --warmup) WARM=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --msg-size) MSG=$2; shift ;;
    --proxy-cpu) PROXY_CPU=$2; shift ;;
    --load-cpus) LOAD_CPUS=$2; shift ;;
    --targets) read -r -a TARGETS <<<"$2"; shift ;;
    --loads) read -r -a LOADS <<<"$2"; shift ;;
    --bulk-conns) BULK_CONNS=$2; shift ;;
    --splice)
      TARGETS=(haproxy haproxy-splice haproxy-spauto monoio splice splice-uring splice-auto)
      LOADS=(ws:1024 ws:4096 ws:16384 ws:65536 bulk:1048576)
      OUT="$ROOT/bench/results/bakeoff/splice" ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --counters) COUNTERS=1 ;;
    -h|--help) sed -n '2,46p' "$0"; exit 0 ;;
    *) echo "bakeoff.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#LOADS[@]} -gt 0 ] || LOADS=("ws:$MSG" ka)
for t in "${TARGETS[@]}"; do
  case "$t" in
    haproxy|haproxy-splice|haproxy-spauto|glommio|monoio|uring|splice|splice-uring|splice-auto) ;;
    *) echo "bakeoff.sh: unknown target $t" >&2; exit 2 ;;
  esac
done
for l in "${LOADS[@]}"; do
  case "$l" in
    ka|ws:[1-9]*|bulk:[1-9]*) ;;
    *) echo "bakeoff.sh: unknown load $l (ws:BYTES, ka, bulk:BYTES)" >&2; exit 2 ;;
  esac
done
case "$DUR" in *s) DUR_S=${DUR%s} ;; *) echo "bakeoff.sh: --duration takes seconds, e.g. 4s" >&2; exit 2 ;; esac

log() { echo "bakeoff.sh: $*" >&2; }

# --- tools -------------------------------------------------------------------------------------
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
apt_install "${missing[@]}"
if [ "$BUILD" = 1 ]; then
  log "building release binaries (wtgate-bench, wtgate-relay)"
  cargo build --release -q -p wtgate-bench -p wtgate-relay
fi
BENCH="$ROOT/target/release/wtgate-bench"
TCK=$(getconf CLK_TCK)

# --- processes ---------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/wtgate-bakeoff.XXXXXX)
STARTED=()
cleanup() {
  for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each target has its own port, so none has to bind where another's connections linger.
BACKEND_PORT=$BASE_PORT
BACKEND=127.0.0.1:$BACKEND_PORT
declare -A PORT
for i in "${!TARGETS[@]}"; do PORT[${TARGETS[$i]}]=$((BASE_PORT + 1 + i)); done

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$BACKEND_PORT" "${PORT[@]}"; do
  if port_busy "$p"; then
    log "port $p is in use (another bench?); pick others with BASE_PORT=..."; exit 1
  fi
done
wait_port() { # port: up to 5 s
  for _ in $(seq 100); do
    port_busy "$1" && return 0
    sleep 0.05
  done
  log "nothing listens on port $1"; return 1
}

# haproxy_cfg TARGET OPTIONS: one thread, plain TCP relay to the one backend, no inspection;
# OPTIONS (lines for `defaults`) choose whether it splices.
haproxy_cfg() {
  cat >"$WORK/$1.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
$2
frontend relay
  bind 127.0.0.1:${PORT[$1]}
  default_backend b
backend b
  server s1 $BACKEND
EOF
}
for t in "${TARGETS[@]}"; do
  case "$t" in
    haproxy) haproxy_cfg "$t" "" ;;
    haproxy-splice) haproxy_cfg "$t" $'  option splice-request\n  option splice-response' ;;
    haproxy-spauto) haproxy_cfg "$t" "  option splice-auto" ;;
  esac
done

# relay_cmd TARGET: the relay binary and its extra arguments.
relay_cmd() {
  case "$1" in
    glommio|monoio|uring) echo "$ROOT/target/release/relay-$1" ;;
    splice) echo "$ROOT/target/release/relay-monoio --splice poll" ;;
    splice-uring) echo "$ROOT/target/release/relay-monoio --splice uring" ;;
    splice-auto) echo "$ROOT/target/release/relay-monoio --splice auto" ;;
  esac
}

PROXY_PID=
PROXY_PORT=
start_proxy() { # target
  PROXY_PORT=${PORT[$1]}
  case "$1" in
    haproxy*)
      taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/$1.cfg" >"$WORK/$1.log" 2>&1 & ;;
    *)
      # shellcheck disable=SC2046 # the command and its flags, split on purpose
      taskset -c "$PROXY_CPU" $(relay_cmd "$1") --listen "127.0.0.1:$PROXY_PORT" \
        --backend "$BACKEND" --core "$PROXY_CPU" >"$WORK/$1.log" 2>&1 & ;;
  esac
  PROXY_PID=$!
  STARTED+=("$PROXY_PID")
  wait_port "$PROXY_PORT"
}
stop_proxy() {
  kill "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
}
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
json_num() { grep -o "\"$1\":[-0-9.e+]*" | head -1 | cut -d: -f2; }

# --- loads ---------------------------------------------------------------------------------------
RESULTS="$OUT/rounds.tsv"
mkdir -p "$OUT"
printf 'round\ttarget\tload\trate\tcpu_us_per_msg\terrors\n' >"$RESULTS"
: >"$OUT/wrk.txt"
: >"$OUT/ws.jsonl"

run_ws() { # target round load size
  local out rate cpu errs
  out=$(timeout $((DUR_S + 30)) taskset -c "$LOAD_CPUS" "$BENCH" load --mode ws \
    --target "127.0.0.1:$PROXY_PORT" -c "$CONNS" --msg-size "$4" -d "$DUR" --warmup "$WARM" \
    --prefixes wt1 --pids "$PROXY_PID" --json --quiet) || { log "$3 load → $1 failed"; return 0; }
  printf '{"round":%s,"target":"%s","load":"%s","result":%s}\n' "$2" "$1" "$3" "$out" >>"$OUT/ws.jsonl"
  rate=$(json_num rps <<<"$out"); cpu=$(json_num cpu_us_per_req <<<"$out")
  errs=$(json_num errors_total <<<"$out")
  printf '%s\t%s\t%s\t%.0f\t%.2f\t%s\n' "$2" "$1" "$3" "$rate" "$cpu" "$errs" >>"$RESULTS"
  printf 'round %s  %-14s %-12s %9.0f msgs/s  %8.2f µs CPU/msg  errors %s\n' "$2" "$1" "$3" "$rate" "$cpu" "$errs"
}

run_wrk() { # target round load size conns (size: response bytes, 0 for the small page)
  local c0 c1 out rate reqs errs cpu url
  url="http://127.0.0.1:$PROXY_PORT/app?wtd=wt1AbCdEfGhIjKlMnOp&request=style&page=0"
  [ "$4" = 0 ] || url+="&size=$4"
  c0=$(cpu_ticks "$PROXY_PID")
  out=$(timeout $((DUR_S + 30)) taskset -c "$LOAD_CPUS" wrk -t1 -c"$5" -d"$DUR" "$url" 2>&1) \
    || { log "wrk → $1 failed"; return 0; }
  c1=$(cpu_ticks "$PROXY_PID")
  printf '== round %s, %s, %s\n%s\n' "$2" "$1" "$3" "$out" >>"$OUT/wrk.txt"
  rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  errs=$(awk '/Socket errors/ {for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i}
    /Non-2xx/ {s += $NF} END {print s + 0}' <<<"$out")
  cpu=$(awk -v d=$((c1 - c0)) -v n="${reqs:-0}" -v hz="$TCK" 'BEGIN { printf "%.2f", (n > 0 ? d * 1e6 / hz / n : 0) }')
  printf '%s\t%s\t%s\t%.0f\t%s\t%s\n' "$2" "$1" "$3" "$rate" "$cpu" "$errs" >>"$RESULTS"
  printf 'round %s  %-14s %-12s %9.0f req/s   %8.2f µs CPU/req  errors %s\n' "$2" "$1" "$3" "$rate" "$cpu" "$errs"
}

run_load() { # target round load
  case "$3" in
    ws:*) run_ws "$1" "$2" "$3" "${3#ws:}" ;;
    ka) run_wrk "$1" "$2" "$3" 0 "$CONNS" ;;
    bulk:*) run_wrk "$1" "$2" "$3" "${3#bulk:}" "$BULK_CONNS" ;;
  esac
}

BUSY_BEFORE=$(busy_pct)
log "machine busy ${BUSY_BEFORE}% (all cores) before the run; proxy on CPU $PROXY_CPU, backend + generator on CPU $LOAD_CPUS; work dir $WORK"
taskset -c "$LOAD_CPUS" "$BENCH" serve --listen "$BACKEND" --prefix wt1 >"$WORK/backend.log" 2>&1 &
STARTED+=("$!")
wait_port "$BACKEND_PORT"

T0=$SECONDS
n=${#TARGETS[@]}
# Load-major: within a round, each load runs against all targets back to back, so the runs whose
# CPU is compared are seconds apart, not a whole round (the machine may be shared).
for r in $(seq "$ROUNDS"); do
  for l in "${LOADS[@]}"; do
    for i in $(seq 0 $((n - 1))); do
      t=${TARGETS[$(( (i + r - 1) % n ))]}
      log "[$((SECONDS - T0))s] round $r/$ROUNDS, $l → $t"
      start_proxy "$t"
      run_load "$t" "$r" "$l"
      stop_proxy
    done
  done
done
BUSY_AFTER=$(busy_pct)

# --- counters (optional) -------------------------------------------------------------------------
COUNTER_TABLE=""
if [ "$COUNTERS" = 1 ]; then
  if ! command -v perf >/dev/null; then
    log "--counters: no perf here (Debian: apt-get install linux-perf); skipped"
  else
    EV=raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,io_uring:io_uring_submit_req
    EV+=,io_uring:io_uring_complete,io_uring:io_uring_poll_arm,io_uring:io_uring_task_work_run
    EV+=,io_uring:io_uring_local_work_run,context-switches
    COUNTER_TABLE="| runtime | syscalls | io_uring_enter | SQEs | CQEs | poll arms | task-work runs | context switches | IPIs to the proxy core |"$'\n'"|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    ipis() { awk -v c=$((PROXY_CPU + 2)) '$1 == "RES:" || $1 == "CAL:" {s += $c} END {print s + 0}' /proc/interrupts; }
    for t in "${TARGETS[@]}"; do
      log "[$((SECONDS - T0))s] counters → $t"
      start_proxy "$t"
      timeout $((DUR_S + 30)) perf stat -x, -e "$EV" -p "$PROXY_PID" -o "$WORK/$t.perf" \
        -- sleep $((DUR_S + 1)) &
      PERF=$!
      STARTED+=("$PERF")
      i0=$(ipis)
      out=$(timeout $((DUR_S + 30)) taskset -c "$LOAD_CPUS" "$BENCH" load --mode ws \
        --target "127.0.0.1:$PROXY_PORT" -c "$CONNS" --msg-size "$MSG" -d "$DUR" --warmup 0s \
        --prefixes wt1 --json --quiet) || log "counters: ws load → $t failed"
      i1=$(ipis)
      wait "$PERF" || true
      stop_proxy
      COUNTER_TABLE+=$'\n'$(awk -F, -v n="$(json_num sent <<<"$out")" -v t="$t" -v ipi=$((i1 - i0)) '
        $1 ~ /^[0-9]+$/ { v[$3] = $1 }
        END {
          if (n + 0 == 0) { print "| " t " | – | – | – | – | – | – | – | – |"; exit }
          printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.3f | %.3f |\n", t,
            v["raw_syscalls:sys_enter"] / n, v["syscalls:sys_enter_io_uring_enter"] / n,
            v["io_uring:io_uring_submit_req"] / n, v["io_uring:io_uring_complete"] / n,
            v["io_uring:io_uring_poll_arm"] / n,
            (v["io_uring:io_uring_task_work_run"] + v["io_uring:io_uring_local_work_run"]) / n,
            v["context-switches"] / n, ipi / n
        }' "$WORK/$t.perf")
    done
  fi
fi
for t in "${TARGETS[@]}"; do
  [ -f "$WORK/$t.log" ] && case "$t" in haproxy*) ;; *) log "$t: $(grep -m1 "^relay-" "$WORK/$t.log")" ;; esac
done

# --- report --------------------------------------------------------------------------------------
# One table per load: medians over rounds, and per-round CPU ratios to HAProxy and to the monoio
# copy relay (median, min–max). bulk:N rows are per MiB (rate in MiB/s, CPU in µs per MiB).
table() {
  awk -F'\t' -v targets="${TARGETS[*]}" -v loads="${LOADS[*]}" -v conns="$CONNS" -v bconns="$BULK_CONNS" '
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
      if (n == 0) return ""
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function ratio(t, b, l,   r, list, lo, hi, x) {
      if (!has[b]) return " | –"
      list = ""; lo = ""; hi = ""
      for (r in rounds) if ((r, t, l) in c && (r, b, l) in c && c[r, b, l] > 0) {
        x = c[r, t, l] / c[r, b, l]; list = list " " x
        if (lo == "" || x < lo) lo = x
        if (hi == "" || x > hi) hi = x
      }
      if (list == "") return " | –"
      return sprintf(" | %.2f× (%.2f–%.2f)", median(list), lo, hi)
    }
    NR > 1 { rate[$2, $3] = rate[$2, $3] " " $4; cpu[$2, $3] = cpu[$2, $3] " " $5; c[$1, $2, $3] = $5
             errs[$2, $3] += $6; rounds[$1] = 1 }
    END {
      nt = split(targets, T, " "); nl = split(loads, L, " ")
      for (k = 1; k <= nt; k++) has[T[k]] = 1
      for (li = 1; li <= nl; li++) {
        l = L[li]; n = l; sub(/^[a-z]+:/, "", n); mib = 1
        if (l ~ /^ws:/) { title = "WebSocket echo, " n "-byte messages, " conns " connections"; ru = "msgs/s"; cu = "CPU µs/msg" }
        else if (l == "ka") { title = "keep-alive GETs, small responses, " conns " connections"; ru = "req/s"; cu = "CPU µs/req" }
        else { title = "keep-alive GETs of " n "-byte responses, " bconns " connections"; ru = "MiB/s"; cu = "CPU µs/MiB"; mib = n / 1048576 }
        if (li > 1) print ""
        print "**" l "** — " title ":"
        print ""
        head = "| target | " ru " | " cu " | CPU vs HAProxy (min–max)"; sep = "|---|---:|---:|---:"
        if (has["monoio"]) { head = head " | CPU vs monoio copy (min–max)"; sep = sep "|---:" }
        print head " | errors |"; print sep "|---:|"
        for (k = 1; k <= nt; k++) {
          t = T[k]
          if (!((t, l) in cpu)) { print "| " t " | – | – | – |" (has["monoio"] ? " – |" : "") " – |"; continue }
          line = sprintf("| %s | %.0f | %.2f", t, median(rate[t, l]) * mib, median(cpu[t, l]) / mib)
          line = line ratio(t, "haproxy", l)
          if (has["monoio"]) line = line ratio(t, "monoio", l)
          print line " | " errs[t, l] + 0 " |"
        }
      }
    }' "$RESULTS"
}
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "## Relay bake-off — $(date -u +%Y-%m-%dT%H:%MZ), commit $REV"
  echo
  echo "- machine: $NCPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), $(haproxy -v | head -1 | cut -d' ' -f1-3)"
  echo "- command: \`scripts/bakeoff.sh $ARGV\` — $ROUNDS interleaved round(s), $DUR per load (ws after $WARM warm-up); loads ${LOADS[*]}"
  echo "- pinning: proxy (one thread) on CPU $PROXY_CPU; backend (\`wtgate-bench serve\`, 1 thread) and generator on CPU $LOAD_CPUS"
  echo "- background: all cores ${BUSY_BEFORE}% busy in the second before the run, ${BUSY_AFTER}% after it"
  echo "- medians over rounds; \"vs HAProxy\" (\"vs monoio copy\") = median over rounds of (the target's CPU/msg ÷ HAProxy's (relay-monoio's) in the same round), with the lowest and highest round"
  echo
  table
  if [ -n "$COUNTER_TABLE" ]; then
    echo
    echo "Per WebSocket message (one message = client → proxy → backend → proxy → client), counted in the proxy's process by \`perf stat -p\` over one extra $DUR WS load per target, outside the timed rounds; IPIs (rescheduling + function-call interrupts) are those of the whole proxy core from /proc/interrupts, so other work on that core adds to them:"
    echo
    echo "$COUNTER_TABLE"
  fi
} | tee "$OUT/report.md"
log "done in $((SECONDS - T0)) s; rows in $RESULTS, wrk output in $OUT/wrk.txt"
