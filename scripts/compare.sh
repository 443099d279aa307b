#!/usr/bin/env bash
# Side-by-side comparison of wtgate, HAProxy (docs/design.md "What wtgate replaces" config) and nginx (map on $arg_wtd) in
# front of the same two `wtgate-bench serve` backends, plus the backend alone ("direct"), for every
# scenario of docs/design.md "Performance targets". Prints one markdown table per scenario and writes SVG percentile plots.
#
#   scripts/compare.sh            full run: 3 interleaved rounds × 4 s per load (~7 minutes)
#   scripts/compare.sh --quick    1 round × 2 s per load, no wrk cross-check (~2 minutes)
#   scripts/compare.sh --proxy-cores 4    proxies on cores 0-3, generator + backends on the rest
#
# Options: --rounds N  --duration 4s  --rate 10000  --idle-conns 10000  --idle-ws 9000 (idle
#          WebSocket tunnels; 0: none)  --out DIR  --no-build
#          --proxy-cores N
# Output: DIR (default bench/results) gets results.jsonl, report.md and one SVG per scenario.
#
# Pinning (default, on 2 cores): every proxy runs on PROXY_CPUS (default: the last core) with as many
# threads/workers as that set has cores (wtgate --threads, HAProxy nbthread, nginx
# worker_processes); the load generator and both backends share LOAD_CPUS (default: the other
# cores). The proxy never competes with the generator for its core, so "proxy CPU µs/request" is its
# own work; req/s is then bounded by whichever side saturates first, and the "direct" row shows what
# the generator+backend core alone can do. On a single-core machine everything shares core 0.
# --proxy-cores N (many cores; scripts/scaling.sh runs a list of N): proxies on cores 0..N-1, one
# thread/worker per core (HAProxy cpu-map, nginx worker_cpu_affinity, wtgate pins its shards); the
# generator (--threads R, wrk -tR) and both backends (serve --threads ceil(R/2) each) share the R
# other cores. With an open-files limit ≤ 20 000 it caps maxconn at 4000 (idle test 3900).
#
# Programs: WTGATE, BENCH, HAPROXY, NGINX, WRK and TASKSET each hold the command prefix that starts
# that program (default: the release builds, then the names on PATH), e.g. for packed binaries
# WRK="/d/lib/ld-linux-x86-64.so.2 --library-path /d/lib /d/bin/wrk" (no spaces inside paths).
#
# Everything is bounded: each load has a fixed duration and `timeout`, all traffic is on 127.0.0.1,
# and every process started here is stopped on exit.
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"

ARGV="$*"
QUICK=0
ROUNDS=3
DUR=4s
WARM=1s
RATE=10000
IDLE_CONNS=10000
WS_IDLE=
OUT="$ROOT/bench/results"
BUILD=1
PROXY_CORES=
BASE_PORT=${BASE_PORT:-27080}
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; ROUNDS=1; DUR=2s ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --idle-conns) IDLE_CONNS=$2; shift ;;
    --idle-ws) WS_IDLE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --proxy-cores) PROXY_CORES=$2; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "compare.sh: $*" >&2; }

# --- tools -------------------------------------------------------------------------------------
# Each program is started by a command prefix (an array after word splitting); a given prefix must
# work as it is, a default name missing from PATH is installed from apt.
missing=()
prog() { # VAR default apt-package
  local var=$1 def=$2 pkg=$3 val
  val=${!var:-$def}
  if ! command -v "${val%% *}" >/dev/null; then
    if [ "$val" != "$def" ]; then log "$var=$val: ${val%% *} not found"; exit 2; fi
    missing+=("$pkg")
  fi
  printf -v "$var" '%s' "$val"
}
prog HAPROXY haproxy haproxy
prog NGINX nginx nginx-light
prog WRK wrk wrk
prog TASKSET taskset util-linux
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
apt_install "${missing[@]}"

if [ "$BUILD" = 1 ]; then
  log "building release binaries"
  cargo build --release -q -p wtgate -p wtgate-bench
fi
WTGATE=${WTGATE:-$ROOT/target/release/wtgate}
BENCH=${BENCH:-$ROOT/target/release/wtgate-bench}
read -ra WTGATE_CMD <<<"$WTGATE"
read -ra BENCH_CMD <<<"$BENCH"
read -ra HAPROXY_CMD <<<"$HAPROXY"
read -ra NGINX_CMD <<<"$NGINX"
read -ra WRK_CMD <<<"$WRK"
read -ra TASKSET_CMD <<<"$TASKSET"
# Not in the programs' environment: nginx reads $NGINX as a list of inherited sockets.
export -n WTGATE BENCH HAPROXY NGINX WRK TASKSET

# --- limits and pinning ------------------------------------------------------------------------
# 10 000 idle client connections need that many descriptors in the generator and in each proxy;
# HAProxy refuses to start unless it may open 2 × maxconn + a few (client + server side). Raise the
# soft limit as far as the hard one allows (a container may cap the hard one: 20 000 here), and
# shrink the idle test to what every proxy can take if needed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$IDLE_CONNS" -gt $(( NOFILE / 2 - 150 )) ]; then
  log "open-files hard limit $NOFILE: idle test capped at $(( NOFILE / 2 - 150 )) connections"
  IDLE_CONNS=$(( NOFILE / 2 - 150 ))
fi
MAXCONN=$(( IDLE_CONNS + 100 ))
# Idle WebSocket tunnels: two proxy descriptors each (client and backend side), so at most 9000
# under a 20 000 limit (issue 17), and no more than the idle connections' maxconn allows.
WS_IDLE=${WS_IDLE:-$(( IDLE_CONNS < 9000 ? IDLE_CONNS : 9000 ))}

NCPU=$(nproc)
GEN_THREADS=1   # load generator and wrk threads
SERVE_THREADS=1 # threads of each backend
HAPROXY_EXTRA=  # global lines added after nbthread
NGINX_EXTRA=    # main-context lines added after worker_processes
if [ -n "$PROXY_CORES" ]; then
  if ! [[ "$PROXY_CORES" =~ ^[1-9][0-9]*$ ]] || [ "$PROXY_CORES" -ge "$NCPU" ]; then
    log "--proxy-cores $PROXY_CORES: need 1 ≤ N < $NCPU (the cores left run the generator and backends)"
    exit 2
  fi
  PROXY_CPUS=0-$((PROXY_CORES - 1))
  LOAD_CPUS=$PROXY_CORES-$((NCPU - 1))
  R=$((NCPU - PROXY_CORES))
  GEN_THREADS=$R
  SERVE_THREADS=$(( (R + 1) / 2 ))
  # HAProxy: thread i on CPU i-1. nginx: worker i on CPU i (one bit mask per worker).
  if [ "$PROXY_CORES" = 1 ]; then HAPROXY_EXTRA="cpu-map 1/1 0"
  else HAPROXY_EXTRA="cpu-map auto:1/1-$PROXY_CORES $PROXY_CPUS"; fi
  masks=
  for i in $(seq 0 $((PROXY_CORES - 1))); do
    m=
    for j in $(seq $((PROXY_CORES - 1)) -1 0); do if [ "$j" = "$i" ]; then m+=1; else m+=0; fi; done
    masks+=" $m"
  done
  NGINX_EXTRA="worker_cpu_affinity$masks;"
  # Many HAProxy threads with maxconn near half the open-files limit do not fit in 20 000
  # descriptors: keep every proxy's maxconn (and the idle test) at 4000 there.
  if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -le 20000 ] && [ "$MAXCONN" -gt 4000 ]; then
    log "open-files limit $NOFILE with --proxy-cores: maxconn 4000, idle test 3900 connections"
    MAXCONN=4000
    IDLE_CONNS=3900
    [ "$WS_IDLE" -gt 3900 ] && WS_IDLE=3900
  fi
else
  default_pinning
fi
SHARDS=$("${TASKSET_CMD[@]}" -c "$PROXY_CPUS" nproc)
NGINX_USER=$(nginx_user)

# --- processes ---------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/wtgate-compare.XXXXXX)
declare -A PID PORT
STARTED=()
cleanup() {
  for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT[wt1]=$BASE_PORT
PORT[wt2]=$((BASE_PORT + 1))
PORT[direct]=${PORT[wt1]}
PORT[wtgate]=$((BASE_PORT + 2))
PORT[haproxy]=$((BASE_PORT + 3))
PORT[nginx]=$((BASE_PORT + 4))
B1=127.0.0.1:${PORT[wt1]}
B2=127.0.0.1:${PORT[wt2]}

wait_port() { # port: up to 5 s
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  log "nothing listens on port $1"; return 1
}

start() { # name
  local name=$1
  case "$name" in
    wt1|wt2)
      "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${BENCH_CMD[@]}" serve --listen "127.0.0.1:${PORT[$name]}" \
        --prefix "$name" --threads "$SERVE_THREADS" >"$WORK/$name.log" 2>&1 &
      ;;
    wtgate)
      "${TASKSET_CMD[@]}" -c "$PROXY_CPUS" "${WTGATE_CMD[@]}" --listen "127.0.0.1:${PORT[wtgate]}" \
        --backend "wt1=$B1" --backend "wt2=$B2" --threads "$SHARDS" --maxconn "$MAXCONN" \
        >"$WORK/wtgate.log" 2>&1 &
      ;;
    haproxy)
      sed -e "s/@PORT@/${PORT[haproxy]}/; s/@B1@/$B1/g; s/@B2@/$B2/g" \
        -e "s/@THREADS@/$SHARDS/; s/@MAXCONN@/$MAXCONN/g" \
        -e "${HAPROXY_EXTRA:+/^ *nbthread /a\\  $HAPROXY_EXTRA}" \
        scripts/bench-haproxy.cfg >"$WORK/haproxy.cfg"
      "${TASKSET_CMD[@]}" -c "$PROXY_CPUS" "${HAPROXY_CMD[@]}" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
      ;;
    nginx)
      mkdir -p "$WORK/nginx-body" "$WORK/nginx-proxy"
      sed -e "s|@DIR@|$WORK|g; s/@PORT@/${PORT[nginx]}/; s/@B1@/$B1/g; s/@B2@/$B2/g" \
        -e "s/@THREADS@/$SHARDS/; s/@MAXCONN@/$MAXCONN/g" \
        -e "s/@WORKER_CONNS@/$(( 2 * MAXCONN < 19000 ? 2 * MAXCONN : 19000 ))/" \
        -e "${NGINX_EXTRA:+/^worker_processes /a\\$NGINX_EXTRA}" \
        scripts/bench-nginx.conf >"$WORK/nginx.conf"
      "${TASKSET_CMD[@]}" -c "$PROXY_CPUS" "${NGINX_CMD[@]}" -p "$WORK" -e "$WORK/nginx-error.log" \
        -c "$WORK/nginx.conf" -g "daemon off;$NGINX_USER" >"$WORK/nginx.log" 2>&1 &
      ;;
  esac
  PID[$name]=$!
  STARTED+=("$!")
  wait_port "${PORT[$name]}"
}

stop() { # name
  local p=${PID[$1]:-}
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  PID[$1]=
}

children_of() { # pid → its child pids, one a line (from /proc: procps may be missing)
  local f
  for f in /proc/[0-9]*/stat; do
    awk -v p="$1" '{ pid = $1; sub(/.*\) /, ""); if ($2 == p) print pid }' "$f" 2>/dev/null || true
  done
}

pids_of() { # target → comma-separated pids whose CPU and RSS count as "the proxy"
  case "$1" in
    direct) echo "${PID[wt1]}" ;;
    nginx) { echo "${PID[nginx]}"; children_of "${PID[nginx]}"; } | paste -sd, ;;
    *) echo "${PID[$1]}" ;;
  esac
}

# --- scenarios (docs/design.md "Performance targets") ------------------------------------------------------------------
TARGETS=(direct wtgate haproxy nginx)
SCENARIOS=(keepalive rate connect large ws)
declare -A TITLE GOAL ARGS
TITLE[keepalive]="Keep-alive small GETs, 64 connections, Wt-like URLs"
GOAL[keepalive]="proxy CPU µs/request ≤ 0.7× HAProxy; req/s ≥ 1.25× HAProxy"
ARGS[keepalive]="--mode keepalive -c 64"
TITLE[rate]="Fixed rate $RATE req/s (open loop, CO-corrected), 64 connections"
GOAL[rate]="p99 and p99.9 ≤ HAProxy's"
ARGS[rate]="--mode keepalive -c 64 --rate $RATE"
TITLE[connect]="New connection per request, 64 connections"
GOAL[connect]="req/s ≥ HAProxy"
ARGS[connect]="--mode connect -c 64"
TITLE[large]="1 MiB responses, 8 connections"
GOAL[large]="MB/s ≥ HAProxy"
ARGS[large]="--mode keepalive -c 8 --resp-size 1048576"
TITLE[ws]="WebSocket echo, 1 KiB messages, 64 connections"
GOAL[ws]="msgs/s ≥ 1.3× HAProxy"
ARGS[ws]="--mode ws -c 64 --msg-size 1024"

mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
T0=$SECONDS

run_load() { # scenario target round
  local s=$1 t=$2 r=$3 prefixes=wt1,wt2
  [ "$t" = direct ] && prefixes=wt1  # one backend alone owns only its own sessions
  # shellcheck disable=SC2086
  if ! timeout 60 "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${BENCH_CMD[@]}" load --json --quiet \
      --threads "$GEN_THREADS" \
      --target "127.0.0.1:${PORT[$t]}" -d "$DUR" --warmup "$WARM" --prefixes "$prefixes" \
      --pids "$(pids_of "$t")" ${ARGS[$s]} \
      --tag "scenario=$s" --tag "target=$t" --tag "round=$r" \
      --tag "title=${TITLE[$s]}" --tag "goal=${GOAL[$s]}" >>"$RESULTS"; then
    log "load $s → $t (round $r) failed"
  fi
}

# The machine may be shared: say how busy it was just before we started.
BUSY_BEFORE=$(busy_pct)
log "machine busy ${BUSY_BEFORE}% (all cores) before the run"
log "work dir $WORK; proxies on CPU $PROXY_CPUS ($SHARDS thread(s) each), generator + backends on CPU $LOAD_CPUS"
start wt1
start wt2
for t in wtgate haproxy nginx; do start "$t"; done

for r in $(seq "$ROUNDS"); do
  for s in "${SCENARIOS[@]}"; do
    # Rotate the order of targets every round, so no proxy always runs right after another.
    n=${#TARGETS[@]}
    for i in $(seq 0 $((n - 1))); do
      t=${TARGETS[$(( (i + r + ${#s}) % n ))]}
      log "[$((SECONDS - T0))s] round $r/$ROUNDS: $s → $t"
      run_load "$s" "$t" "$r"
    done
  done
done

# --- wrk cross-check: keep-alive, one Wt URL, an independent C generator ----------------------
WRK_TABLE=""
if [ "$QUICK" = 0 ]; then
  cpu_ticks() { # pids (comma-separated) → utime+stime ticks
    local sum=0 p
    for p in ${1//,/ }; do
      sum=$(( sum + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat") ))
    done
    echo "$sum"
  }
  TCK=$(getconf CLK_TCK)
  WRK_TABLE="| target | req/s (wrk) | avg latency | CPU µs/req |"$'\n'"|---|---:|---:|---:|"
  for t in "${TARGETS[@]}"; do
    log "[$((SECONDS - T0))s] wrk cross-check → $t"
    pids=$(pids_of "$t")
    c0=$(cpu_ticks "$pids")
    out=$(timeout 30 "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${WRK_CMD[@]}" -t"$GEN_THREADS" -c64 -d3s \
      "http://127.0.0.1:${PORT[$t]}/app?wtd=wt1AbCdEfGhIjKlMnOp&request=style&page=0" 2>&1 || true)
    c1=$(cpu_ticks "$pids")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    lat=$(awk '/Latency/ {print $2; exit}' <<<"$out")
    cpu=$(awk -v d=$((c1 - c0)) -v n="${reqs:-0}" -v hz="$TCK" \
      'BEGIN { if (n > 0) printf "%.2f", d * 1e6 / hz / n; else print "–" }')
    WRK_TABLE+=$'\n'"| $t | ${rps:-–} | ${lat:-–} | $cpu |"
  done
fi

# --- idle connections: a fresh proxy each, so freed memory from earlier loads does not hide growth
for t in wtgate haproxy nginx; do stop "$t"; done
for t in "${TARGETS[@]}"; do
  [ "$t" = direct ] || start "$t"
  sleep 0.3
  log "[$((SECONDS - T0))s] idle: $IDLE_CONNS connections → $t"
  prefixes=wt1,wt2; [ "$t" = direct ] && prefixes=wt1
  timeout 90 "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${BENCH_CMD[@]}" idle --json --target "127.0.0.1:${PORT[$t]}" \
    --conns "$IDLE_CONNS" --hold 2s --limit 60s --prefixes "$prefixes" --pids "$(pids_of "$t")" \
    --tag scenario=idle --tag "target=$t" --tag round=1 \
    --tag "title=$IDLE_CONNS idle keep-alive client connections" \
    --tag "goal=≤ 8 KiB RSS per connection" >>"$RESULTS" || log "idle → $t failed"
  [ "$t" = direct ] || stop "$t"
done

# --- idle WebSocket tunnels (issue 17): a fresh proxy each; each tunnel after one echo, as a Wt
# session's WebSocket between pushes (scripts/ws-idle.py), as many as the descriptors allow
WS_IDLE_TABLE=""
if [ "$WS_IDLE" -gt 0 ]; then
  WS_IDLE_TABLE="| target | tunnels | errors | RSS before (KiB) | RSS after (KiB) | KiB per idle tunnel |"$'\n'"|---|---:|---:|---:|---:|---:|"
  for t in "${TARGETS[@]}"; do
    [ "$t" = direct ] && continue
    start "$t"
    sleep 0.3
    log "[$((SECONDS - T0))s] idle WebSockets: $WS_IDLE tunnels → $t"
    line=$(timeout 120 "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" python3 "$ROOT/scripts/ws-idle.py" \
      "${PORT[$t]}" "$WS_IDLE" "$(pids_of "$t")" 2 || echo '{}')
    printf '%s\n' "$line" | python3 -c 'import json, sys
d = json.loads(sys.stdin.read() or "{}"); d["target"] = sys.argv[1]; print(json.dumps(d))' "$t" \
      >>"$OUT/ws-idle.jsonl"
    WS_IDLE_TABLE+=$'\n'$(echo "$line" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read() or "{}")
print("| %s | %s | %s | %s | %s | %s |" % (sys.argv[1], d.get("tunnels", "–"), d.get("errors", "–"),
      d.get("rss_before_kib", "–"), d.get("rss_after_kib", "–"), d.get("kib_per_tunnel", "–")))' "$t")
    stop "$t"
  done
fi

# --- report ------------------------------------------------------------------------------------
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "${WTGATE_REV:-unknown}")
{
  echo "## wtgate vs HAProxy vs nginx — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/^MemTotal:/ {printf "%d", $2 / 1048576}' /proc/meminfo) GiB, kernel $(uname -r)"
  echo "- versions: $("${HAPROXY_CMD[@]}" -v | head -1 | cut -d' ' -f1-3), $("${NGINX_CMD[@]}" -v 2>&1 | cut -d' ' -f3), wtgate $REV"
  echo "- command: \`scripts/compare.sh $ARGV\` — $ROUNDS round(s), $DUR per load after $WARM warm-up"
  echo "- pinning: proxies on CPU $PROXY_CPUS with $SHARDS thread(s)/worker(s) each; generator ($GEN_THREADS thread(s)) and both backends ($SERVE_THREADS thread(s) each) on CPU $LOAD_CPUS; maxconn $MAXCONN"
  echo "- background: all cores ${BUSY_BEFORE}% busy in the second before the run (other work on a shared machine adds noise)"
  echo "- \"direct\" = the wt1 backend alone (its CPU/request is the bare-server floor); CPU µs/request = utime+stime of the proxy's processes over the measured window ÷ requests sent"
  echo
  "${BENCH_CMD[@]}" report "$RESULTS" --svg-dir "$OUT"
  if [ -n "$WS_IDLE_TABLE" ]; then
    echo "### $WS_IDLE idle WebSocket tunnels (each after one 32-byte echo; scripts/ws-idle.py)"
    echo
    echo "$WS_IDLE_TABLE"
    echo
  fi
  if [ -n "$WRK_TABLE" ]; then
    echo "### Cross-check with wrk (keep-alive, 64 connections, one Wt URL, 3 s, 1 round)"
    echo
    echo "$WRK_TABLE"
    echo
  fi
  echo "Plots: $(cd "$OUT" && ls ./*.svg | sed 's|^\./||' | paste -sd' ')"
  echo
  echo "Total time: $((SECONDS - T0)) s."
} | tee "$OUT/report.md"
