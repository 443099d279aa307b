#!/usr/bin/env bash
# Chaos run: wtgate and HAProxy (docs/design.md "What wtgate replaces" config, with a stats socket
# for drain) one after the other, in front of the same Wt-like backends, under the same seeded
# random faults and the same mixed clients. Prints a markdown table side by side: client errors by
# kind, sessions moved, bytes corrupted, p99 latency, whether the proxy is up at the end and its
# open descriptors back to where they started once its pool idled out.
#
#   scripts/chaos.sh                        --scenario mixed (about 1.5 minutes)
#   scripts/chaos.sh --scenario rolling     the rolling-upgrade case (about 40 s)
#
# Scenarios:
#   mixed    3 backends (wt1-wt3), 30 s. Every 4 s one backend is killed (kill -9) and restarted
#            2 s later; every 3 s one is drained for 1.5 s, then set ready; about every 5 s one is
#            frozen (SIGSTOP) for ~1.5 s, then SIGCONT; about every 5 s wtgate gets a SIGHUP
#            reload (HAProxy has no counterpart: skipped). Which backend, and the random times,
#            come from --seed. Clients (--clients C, default 4): C session-less GET clients, C
#            clients GETting their sessions (8 each, on every backend), C/2 clients POSTing 64 KiB
#            bodies the backend checksums, C/2 WebSocket clients echoing random messages (16 B to
#            16 KiB every 20 ms, checked byte for byte, reconnecting when closed).
#   rolling  2 backends, 8 s, 4 keep-alive clients sending session-less GETs: wt1 is drained at
#            1 s (for its upgrade), then wt2 crashes (kill -9) at 2 s and is back at 3 s.
#   calm     mixed's clients, no fault: the control (what the machine and the clients add).
#   reloads  mixed's clients, only wtgate's SIGHUP reloads.
#
# Options: --scenario mixed|rolling|calm|reloads  --seed N (default 1)  --rounds N (default 1;
#          the proxies' order alternates per round, each round its own seed: N, N+1, …)
#          --duration S  --clients C
#          --rate R (each HTTP client sends R requests/s on a fixed schedule; mixed, calm and
#          reloads: 50, so both proxies get the same load and the clients' core keeps headroom;
#          a request's wait is also counted from when it was due, so a stall counts for every
#          request it held back; 0: a closed loop, see --think)
#          --think MS (closed loop only: pause after each answer; 0 by default, each client
#          sends as fast as it is answered; rolling is a closed loop, as in issue 15)
#          --proxies "wtgate haproxy"
#          --out DIR (default bench/results/chaos)  --no-build
#          --haproxy-drain lb|server (which HAProxy server a drain sets: lb (default) the one in
#          bck_lb, so wtN's sessions stay on it; server: bckN/srvN, whose drain its tracker in
#          bck_lb inherits, and which also takes it out of nbsrv(bckN), so its sessions move)
#
# Backends: scripts/chaos.py backend, one Python process each (stdlib only), Wt-like: a request
# without wtd starts a session and says its id, every answer says which backend served it, GET
# bodies are a pattern of the request's nonce, POST bodies are checksummed, ?request=ws echoes.
# Counted per proxy: errors by kind (connect refused, 502, 503, 504, other status, timeout (5 s),
# closed before any answer, reset/EOF mid-response, wrong/corrupted answer, WebSocket closed, bad
# echo, echo timeout), and of them those whose server was killed under them (a WebSocket cut, a
# POST in flight: no proxy could answer) and the others (a proxy could have), sessions lost (a
# session whose server was killed while it lived: found by its next request, which starts a new
# one that the client takes, as a browser would after Wt's reload, or still held at the end), of
# them those whose server was never killed while they lived (a proxy could have kept them), and
# sessions moved (answered by a backend other than the owner) by what the owner was meanwhile
# (killed and not listening again yet, frozen, or alive: it could have answered), bytes corrupted
# (bytes of a GET body or WebSocket echo that differ; a POST whose checksum differs counts its
# whole body), latency of each HTTP request that got its 200 (p99 overall, and of the requests
# started while a fault was on, by kind and by round; paced: also from when it was due),
# WebSocket echo latency.
#
# Pinning (2+ cores): the proxy on the last core (wtgate --threads / HAProxy nbthread = that
# many cores), clients and backends on the others, like scripts/compare.sh; PROXY_CPUS and
# LOAD_CPUS override. Programs: WTGATE (default target/release/wtgate, copied at the start so a
# rebuild during the run does not swap it) and HAPROXY (default haproxy, installed from apt if
# missing). Ports: BASE_PORT (default 19400) and the 9 above it.
#
# Output: DIR/<scenario>-<seed>-<proxy>-r<round>.json (every count, the fault log with the times
# each fault happened and its result, latency histograms, the descriptor series), the proxies'
# and backends' logs, and DIR/<scenario>.md (the table, also printed).
#
# Everything is bounded: all traffic on 127.0.0.1, each run under `timeout`, every process started
# here is stopped on exit (chaos.py's children also die with it, by PR_SET_PDEATHSIG).
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"

ARGV="$*"
SCENARIO=mixed
SEED=1
ROUNDS=1
DURATION=
CLIENTS=
THINK=
RATE=
PROXIES="wtgate haproxy"
OUT="$ROOT/bench/results/chaos"
BUILD=1
HAPROXY_DRAIN=lb
BASE_PORT=${BASE_PORT:-19400}
while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) SCENARIO=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --think) THINK=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --proxies) PROXIES=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --haproxy-drain) HAPROXY_DRAIN=$2; shift ;;
    -h|--help) sed -n '2,68p' "$0"; exit 0 ;;
    *) echo "chaos.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$SCENARIO" in
  mixed|calm|reloads) DURATION=${DURATION:-30}; CLIENTS=${CLIENTS:-4}; RATE=${RATE:-50} ;;
  rolling) DURATION=${DURATION:-8}; CLIENTS=${CLIENTS:-4}; RATE=${RATE:-0} ;;
  *) echo "chaos.sh: --scenario mixed, rolling, calm or reloads, not $SCENARIO" >&2; exit 2 ;;
esac

log() { echo "chaos.sh: $*" >&2; }

# --- tools -------------------------------------------------------------------------------------
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || { log "python3 is needed"; exit 2; }
HAPROXY=${HAPROXY:-haproxy}
missing=()
case " $PROXIES " in *" haproxy "*) command -v "$HAPROXY" >/dev/null || missing+=(haproxy) ;; esac
command -v taskset >/dev/null || missing+=(util-linux)
apt_install "${missing[@]}"
if [ "$BUILD" = 1 ] && [ -z "${WTGATE:-}" ]; then
  log "building wtgate (release)"
  cargo build --release -q -p wtgate --bin wtgate
fi

WORK=$(mktemp -d /tmp/wtgate-chaos.XXXXXX)
WTGATE_SRC=${WTGATE:-$ROOT/target/release/wtgate}
cp "$WTGATE_SRC" "$WORK/wtgate"
if [ -n "${WTGATE:-}" ]; then
  WTGATE_REV="$WTGATE_SRC"
else  # the tree it was built from: HEAD, and whether src/ or h1/ differ from it
  WTGATE_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- src h1 2>/dev/null || WTGATE_REV="$WTGATE_REV with uncommitted changes"
fi

# --- pinning -----------------------------------------------------------------------------------
NCPU=$(nproc)
default_pinning

# --- processes ---------------------------------------------------------------------------------
RUN_PID=
cleanup() {
  if [ -n "$RUN_PID" ]; then
    kill "$RUN_PID" 2>/dev/null || true
    wait "$RUN_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in $(seq "$BASE_PORT" $((BASE_PORT + 9))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    log "port $port is in use (another chaos run?); set BASE_PORT"; exit 2
  fi
done

mkdir -p "$OUT"
T0=$SECONDS
BUSY_BEFORE=$(busy_pct)
log "machine busy ${BUSY_BEFORE}% before the run; work dir $WORK; proxy on CPU $PROXY_CPUS, clients + backends on CPU $LOAD_CPUS"
FILES=()
read -ra ORDER <<<"$PROXIES"
for r in $(seq "$ROUNDS"); do
  seed=$((SEED + r - 1))
  list=("${ORDER[@]}")
  if [ $((r % 2)) = 0 ]; then  # alternate the order every round
    list=(); for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do list+=("${ORDER[$i]}"); done
  fi
  for p in "${list[@]}"; do
    name="$SCENARIO-$seed-$p-r$r"
    log "[$((SECONDS - T0))s] round $r/$ROUNDS: $SCENARIO, seed $seed → $p"
    mkdir -p "$WORK/$name"
    timeout -k 5 $((${DURATION%.*} + 90)) taskset -c "$LOAD_CPUS" python3 scripts/chaos.py run \
      --proxy "$p" --scenario "$SCENARIO" --seed "$seed" --round "$r" --duration "$DURATION" \
      --clients "$CLIENTS" --think "${THINK:-0}" --rate "$RATE" --base-port "$BASE_PORT" \
      --proxy-cpus "$PROXY_CPUS" --load-cpus "$LOAD_CPUS" --wtgate "$WORK/wtgate" \
      --haproxy "$HAPROXY" --haproxy-drain "$HAPROXY_DRAIN" \
      --workdir "$WORK/$name" --json "$OUT/$name.json" &
    RUN_PID=$!
    rc=0; wait "$RUN_PID" || rc=$?
    RUN_PID=
    for f in "$WORK/$name"/*.log; do cp "$f" "$OUT/$name-$(basename "$f")"; done
    if [ "$rc" != 0 ]; then log "run $name failed (exit $rc); logs in $WORK/$name"; exit 1; fi
    FILES+=("$OUT/$name.json")
  done
done

case "$SCENARIO" in
  mixed) WHAT="3 backends, ${DURATION} s: every 4 s one killed (kill -9) and restarted 2 s later, every 3 s one drained for 1.5 s, about every 5 s one frozen (SIGSTOP) ~1.5 s, about every 5 s a SIGHUP reload of wtgate; $CLIENTS session-less GET, $CLIENTS session GET, $((CLIENTS > 1 ? CLIENTS / 2 : 1)) POST (64 KiB, checksummed) and $((CLIENTS > 1 ? CLIENTS / 2 : 1)) WebSocket echo clients, keep-alive" ;;
  rolling) WHAT="2 backends, ${DURATION} s: wt1 drained at 1 s, wt2 killed (kill -9) at 2 s and restarted at 3 s; $CLIENTS keep-alive clients sending session-less GETs" ;;
  calm) WHAT="3 backends, ${DURATION} s, no fault (the control); the mixed scenario's clients" ;;
  reloads) WHAT="3 backends, ${DURATION} s, no backend fault, a SIGHUP reload of wtgate about every 5 s; the mixed scenario's clients" ;;
esac
{
  echo "## Chaos, scenario $SCENARIO — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- $WHAT"
  if [ "$RATE" != 0 ]; then pacing="paced: $RATE requests/s per HTTP client"; else pacing="closed loop, think time ${THINK:-0} ms"; fi
  echo "- seed $SEED, $ROUNDS round(s); $pacing; HAProxy drain on: $HAPROXY_DRAIN"
  echo "- machine: $NCPU cores, kernel $(uname -r); proxy on CPU $PROXY_CPUS, clients and backends on CPU $LOAD_CPUS; all cores ${BUSY_BEFORE}% busy before the run"
  echo "- versions: wtgate $WTGATE_REV, $("$HAPROXY" -v 2>/dev/null | head -1 | cut -d' ' -f1-3)"
  echo "- command: \`scripts/chaos.sh $ARGV\`"
  echo
  python3 scripts/chaos.py report "${FILES[@]}"
  echo
  echo "Raw results: $(cd "$OUT" && printf '%s ' "${FILES[@]##*/}")— total time $((SECONDS - T0)) s."
} | tee "$OUT/$SCENARIO.md"
rm -rf "$WORK"  # its logs are in $OUT; kept only when a run failed
