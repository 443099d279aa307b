#!/usr/bin/env bash
# TLS at the edge (issue 16, item 6): wtgate vs HAProxy (OpenSSL) vs nginx (OpenSSL), each
# terminating TLS with the same certificate (made here by the openssl CLI in a temp dir) in front of
# the same two `wtgate-bench serve` backends as scripts/compare.sh. Pinning as compare.sh: every
# proxy on PROXY_CPUS (default: the last core) with one thread/worker, the clients and backends on
# LOAD_CPUS (the other cores). For each key type (ECDSA P-256, then RSA 2048), interleaved rounds
# (target order rotated every round) of:
#
#   full     full handshakes: 4 × `openssl s_time -new -www /app?…` side by side (each a loop of
#            connect, full handshake, one HTTP/1.0 GET, close)
#   resumed  resumed handshakes: 4 × `openssl s_time -reuse -www /app?…` (same, resuming)
#            With --client bench, these two are `wtgate-bench load --mode connect --tls` with
#            --bench-conns connections (default 8; rustls, aws-lc-rs): a new TLS connection per
#            request (Wt URLs, routing checked), closed with RST; `resumed` adds --tls-resume (one
#            shared ticket store; the generator's own full/resumed counts go to the log). rustls
#            keeps at most 8 TLS 1.3 tickets per server: with more connections than that, some
#            find none and make a full handshake (in one run at 16: about 10 % of them against
#            wtgate and nginx, under 1 % against HAProxy).
#   wrkres   wrk -t1 -c16 -H 'Connection: close' https://…: a new connection per request, but
#            wrk keeps each connection's session across reconnects (SSL_clear), so these are
#            resumed TLS 1.3 handshakes too (wtgate's /metrics confirms: wtgate-metrics-KEY.txt)
#   ka       keep-alive GETs over TLS: wrk -t1 -c64 https://… (one Wt URL)
#   karate   keep-alive GETs over TLS at a fixed rate (--ka-rate, default 15000/s) for every proxy:
#            wtgate-bench load --tls -c64 -R RATE (open loop), so that CPU per request compares at
#            the same load, not at whatever rate each proxy let the closed-loop client reach
#   ws       WebSocket echo over TLS, 1 KiB messages, 16 connections (scripts/tls-ws.py, Python
#            asyncio + ssl: client-bound; the proxy's CPU µs/message is the number to compare)
#
# Each load reports client-side rate and the proxy's CPU (utime+stime from /proc/PID/stat, nginx
# master + workers) over the load ÷ connections (or requests): "CPU µs/handshake". The client
# shares its core with the backends, so the rates are client-bound for cheap handshakes; the
# per-core capacity of a proxy is 1e6 / (CPU µs per handshake), printed as "hs/s per core".
# Then, with a fresh proxy each: N idle TLS connections (scripts/tls-idle.py: full handshake, one
# keep-alive GET each, then idle) and the RSS delta of the proxy ÷ N.
#
#   scripts/compare-tls.sh                 3 rounds × 4 s per load, ECDSA and RSA, ws (~8 minutes)
#   scripts/compare-tls.sh --quick         1 round × 2 s, ECDSA only (~1 minute)
#   scripts/compare-tls.sh --client bench  the handshake loads with wtgate-bench instead of s_time
# Options: --rounds N  --duration SECONDS  --keys "ec rsa"  --idle-conns 2000 (0: no idle test)
#          --s-clients 4  --scenarios "full resumed wrkres ka ws" (karate: add it)  --out DIR  --no-build
#          --client openssl|bench (default openssl)  --bench-conns 8  --ka-rate 15000 (karate)
# Programs: WTGATE, BENCH, HAPROXY, NGINX, WRK, OPENSSL, TASKSET (command prefixes, as compare.sh).
# Output: DIR (default bench/results/tls) gets raw.tsv (one line per load), idle.jsonl and
# report.md (medians over rounds, ratios vs HAProxy).
# Everything is bounded (fixed durations under `timeout`), all traffic is on 127.0.0.1, and every
# process started here is stopped on exit.
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"
ARGV="$*"
ROUNDS=3
DUR=4
KEYS="ec rsa"
IDLE_CONNS=2000
SCLIENTS=4
SCENARIOS="full resumed wrkres ka ws"
KA_RATE=15000
OUT="$ROOT/bench/results/tls"
BUILD=1
CLIENT=openssl
BENCH_CONNS=8
BASE_PORT=${BASE_PORT:-27180}
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) ROUNDS=1; DUR=2; KEYS=ec ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --keys) KEYS=$2; shift ;;
    --idle-conns) IDLE_CONNS=$2; shift ;;
    --s-clients) SCLIENTS=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --client) CLIENT=$2; shift ;;
    --ka-rate) KA_RATE=$2; shift ;;
    --bench-conns) BENCH_CONNS=$2; shift ;;
    -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
    *) echo "compare-tls.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "compare-tls.sh: $*" >&2; }
case "$CLIENT" in
  openssl|bench) ;;
  *) log "--client $CLIENT: use openssl or bench"; exit 2 ;;
esac
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

if [ "$BUILD" = 1 ]; then
  log "building release binaries"
  cargo build --release -q -p wtgate -p wtgate-bench
fi
read -ra WTGATE_CMD <<<"${WTGATE:-$ROOT/target/release/wtgate}"
read -ra BENCH_CMD <<<"${BENCH:-$ROOT/target/release/wtgate-bench}"
read -ra HAPROXY_CMD <<<"${HAPROXY:-haproxy}"
read -ra NGINX_CMD <<<"${NGINX:-nginx}"
read -ra WRK_CMD <<<"${WRK:-wrk}"
read -ra OPENSSL_CMD <<<"${OPENSSL:-openssl}"
read -ra TASKSET_CMD <<<"${TASKSET:-taskset}"
export -n WTGATE BENCH HAPROXY NGINX WRK OPENSSL TASKSET

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MAXCONN=$(( IDLE_CONNS + 500 ))
default_pinning
NGINX_USER=$(nginx_user)

WORK=$(mktemp -d /tmp/wtgate-tls.XXXXXX)
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
PORT[wtgate]=$((BASE_PORT + 2))
PORT[haproxy]=$((BASE_PORT + 3))
PORT[nginx]=$((BASE_PORT + 4))
B1=127.0.0.1:${PORT[wt1]}
B2=127.0.0.1:${PORT[wt2]}
URL_PATH="/app?wtd=wt1AbCdEfGhIjKlMnOp&request=style&page=0"

# --- certificates: the same files for all three ------------------------------------------------
make_cert() { # ec|rsa → $WORK/$1/{cert,key,combined}.pem
  local d=$WORK/$1
  mkdir -p "$d"
  local alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
  [ "$1" = rsa ] && alg=(-newkey rsa:2048)
  "${OPENSSL_CMD[@]}" req -x509 "${alg[@]}" -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null
  cat "$d/cert.pem" "$d/key.pem" >"$d/combined.pem"
}
for k in $KEYS; do make_cert "$k"; done

wait_port() { # port: up to 5 s
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  log "nothing listens on port $1"; return 1
}

start() { # name [key]
  local name=$1 d=$WORK/${2:-ec}
  case "$name" in
    wt1|wt2)
      "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${BENCH_CMD[@]}" serve --listen "127.0.0.1:${PORT[$name]}" \
        --prefix "$name" --threads 1 >"$WORK/$name.log" 2>&1 &
      ;;
    wtgate)
      "${TASKSET_CMD[@]}" -c "$PROXY_CPUS" "${WTGATE_CMD[@]}" --listen "127.0.0.1:${PORT[wtgate]},tls" \
        --tls-cert "$d/cert.pem,$d/key.pem" --backend "wt1=$B1" --backend "wt2=$B2" --threads 1 \
        --maxconn "$MAXCONN" --admin "127.0.0.1:$((BASE_PORT + 9))" >>"$WORK/wtgate.log" 2>&1 &
      ;;
    haproxy)
      sed -e "s|bind 127.0.0.1:@PORT@|bind 127.0.0.1:@PORT@ ssl crt $d/combined.pem alpn http/1.1|" \
        -e "s/@PORT@/${PORT[haproxy]}/; s/@B1@/$B1/g; s/@B2@/$B2/g" \
        -e "s/@THREADS@/1/; s/@MAXCONN@/$MAXCONN/g" \
        scripts/bench-haproxy.cfg >"$WORK/haproxy.cfg"
      "${TASKSET_CMD[@]}" -c "$PROXY_CPUS" "${HAPROXY_CMD[@]}" -db -f "$WORK/haproxy.cfg" >>"$WORK/haproxy.log" 2>&1 &
      ;;
    nginx)
      mkdir -p "$WORK/nginx-body" "$WORK/nginx-proxy"
      sed -e "s|listen 127.0.0.1:@PORT@ backlog=4096;|listen 127.0.0.1:@PORT@ ssl backlog=4096; ssl_certificate $d/cert.pem; ssl_certificate_key $d/key.pem; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; ssl_session_cache shared:SSL:10m;|" \
        -e "s|@DIR@|$WORK|g; s/@PORT@/${PORT[nginx]}/; s/@B1@/$B1/g; s/@B2@/$B2/g" \
        -e "s/@THREADS@/1/; s/@MAXCONN@/$MAXCONN/g; s/@WORKER_CONNS@/$MAXCONN/" \
        scripts/bench-nginx.conf >"$WORK/nginx.conf"
      "${TASKSET_CMD[@]}" -c "$PROXY_CPUS" "${NGINX_CMD[@]}" -p "$WORK" -e "$WORK/nginx-error.log" \
        -c "$WORK/nginx.conf" -g "daemon off;$NGINX_USER" >>"$WORK/nginx.log" 2>&1 &
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

children_of() { # pid → its child pids, one a line
  local f
  for f in /proc/[0-9]*/stat; do
    awk -v p="$1" '{ pid = $1; sub(/.*\) /, ""); if ($2 == p) print pid }' "$f" 2>/dev/null || true
  done
}
pids_of() { # target → comma-separated pids counted as "the proxy"
  case "$1" in
    nginx) { echo "${PID[nginx]}"; children_of "${PID[nginx]}"; } | paste -sd, ;;
    *) echo "${PID[$1]}" ;;
  esac
}
cpu_ticks() { # pids (comma-separated) → utime+stime ticks
  local sum=0 p
  for p in ${1//,/ }; do
    sum=$(( sum + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat") ))
  done
  echo "$sum"
}
TCK=$(getconf CLK_TCK)
wait_all_s_time() { # the s_time clients are the only background jobs of this shell at that point
  local p
  for p in $(jobs -pr); do
    case " ${STARTED[*]} " in *" $p "*) ;; *) wait "$p" 2>/dev/null || true ;; esac
  done
}

# bench_handshakes scenario target key → BENCH_RES=(handshakes rate errors): wtgate-bench's
# connection-per-request load over TLS, resuming sessions for `resumed`; no warm-up, so every
# handshake it makes falls in the proxy's CPU measurement.
BENCH_RES=()
bench_handshakes() {
  local resume=() out
  [ "$1" = resumed ] && resume=(--tls-resume)
  out=$(timeout $((DUR + 20)) "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${BENCH_CMD[@]}" load \
    --target "127.0.0.1:${PORT[$2]}" --mode connect --tls --tls-ca "$WORK/$3/cert.pem" "${resume[@]}" \
    -c "$BENCH_CONNS" -d "${DUR}s" --warmup 0s --quiet --json 2>"$WORK/bench-load.err" || true)
  # shellcheck disable=SC2207 # three numbers
  BENCH_RES=($(python3 -c '
import json, sys
try:
    d = json.loads(sys.stdin.read())
except ValueError:
    print(0, 0, 0); sys.exit()
print(d["connects"], "%.1f" % d["rps"], d["errors_total"])
sys.stderr.write("compare-tls.sh: wtgate-bench: %d TLS handshakes, %d resumed, %d requests ok, %d errors, "
                 "latency p50 %d us, max %d us\n" % (d["connects"], d["tls_resumed"], d["ok"],
                 d["errors_total"], d["latency_us"]["p50"], d["latency_us"]["max"]))
' <<<"$out"))
  [ "${BENCH_RES[0]}" != 0 ] || tail -3 "$WORK/bench-load.err" >&2
}

# run_load scenario target key round → one line in raw.tsv:
# key scenario target round rate count errors proxy_cpu_s cpu_us_per_unit
run_load() {
  local s=$1 t=$2 k=$3 r=$4 pids c0 c1 out n rate errs=0
  pids=$(pids_of "$t")
  local url="https://127.0.0.1:${PORT[$t]}$URL_PATH"
  c0=$(cpu_ticks "$pids")
  case "$s" in
    wrkres|ka)
      local extra=(-c64)
      [ "$s" = wrkres ] && extra=(-c16 -H "Connection: close")
      out=$(timeout $((DUR + 20)) "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${WRK_CMD[@]}" -t1 "${extra[@]}" \
        -d"${DUR}s" "$url" 2>&1 || true)
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      errs=$(awk '/Socket errors|Non-2xx/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i} END {print s + 0}' <<<"$out")
      ;;
    full|resumed)
      if [ "$CLIENT" = bench ]; then
        bench_handshakes "$s" "$t" "$k"
        n=${BENCH_RES[0]} rate=${BENCH_RES[1]} errs=${BENCH_RES[2]}
      else
        local mode=-new j
        [ "$s" = resumed ] && mode=-reuse
        # SCLIENTS blocking s_time clients side by side: the handshakes overlap as wrk's would.
        rm -f "$WORK"/s_time.*
        for j in $(seq "$SCLIENTS"); do
          timeout $((DUR + 20)) "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${OPENSSL_CMD[@]}" s_time \
            -connect "127.0.0.1:${PORT[$t]}" "$mode" -time "$DUR" -www "$URL_PATH" >"$WORK/s_time.$j" 2>&1 &
        done
        wait_all_s_time
        # each: "N connections in T real seconds, B bytes read per connection"
        out=$(cat "$WORK"/s_time.*)
        n=$(awk '/connections in [0-9.]+ real seconds/ {n += $1} END {print n + 0}' <<<"$out")
        rate=$(awk '/connections in [0-9.]+ real seconds/ {n += $1; if ($4 > t) t = $4} END {if (t > 0) printf "%.1f", n / t}' <<<"$out")
      fi
      ;;
    karate)
      out=$(timeout $((DUR + 20)) "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" "${BENCH_CMD[@]}" load \
        --target "127.0.0.1:${PORT[$t]}" --mode keepalive --tls --tls-ca "$WORK/$k/cert.pem" \
        -c 64 -R "$KA_RATE" -d "${DUR}s" --warmup 0s --quiet --json 2>>"$WORK/bench-load.err" || true)
      read -r n rate errs < <(python3 -c '
import json, sys
try:
    d = json.loads(sys.stdin.read())
except ValueError:
    d = {}
print(d.get("ok", 0), "%.1f" % d.get("rps", 0), d.get("errors_total", 0))' <<<"$out")
      ;;
    ws)
      out=$(timeout $((DUR + 30)) "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" python3 scripts/tls-ws.py \
        "${PORT[$t]}" 16 "$DUR" 1024 2>&1 || true)
      # "N messages in T s, E errors"
      n=$(awk '/ messages in / {print $1}' <<<"$out")
      rate=$(awk '/ messages in / {printf "%.1f", $1 / $4}' <<<"$out")
      errs=$(awk '/ messages in / {print $6}' <<<"$out")
      ;;
  esac
  c1=$(cpu_ticks "$pids")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$s" "$t" "$r" "${rate:-0}" "${n:-0}" "$errs" \
    "$(awk -v d=$((c1 - c0)) -v hz="$TCK" -v n="${n:-0}" 'BEGIN { printf "%.2f\t%.1f", d / hz, (n > 0 ? d * 1e6 / hz / n : 0) }')" \
    | tee -a "$RAW" >&2
  if [ -z "$n" ] || [ "$n" = 0 ]; then log "load $s → $t ($k) got nothing:"; echo "$out" | tail -5 >&2; fi
}

mkdir -p "$OUT"
RAW="$OUT/raw.tsv"
IDLE="$OUT/idle.jsonl"
printf 'key\tscenario\ttarget\tround\trate\tcount\terrors\tproxy_cpu_s\tcpu_us_per\n' >"$RAW"
: >"$IDLE"
T0=$SECONDS
BUSY_BEFORE=$(busy_pct)
log "machine busy ${BUSY_BEFORE}% before the run; work dir $WORK; proxies on CPU $PROXY_CPUS, clients + backends on CPU $LOAD_CPUS"
start wt1
start wt2

TARGETS=(wtgate haproxy nginx)
read -ra SCENARIOS <<<"$SCENARIOS"
NEGOTIATED=""
for k in $KEYS; do
  for t in "${TARGETS[@]}"; do start "$t" "$k"; done
  for t in "${TARGETS[@]}"; do
    neg=$(timeout 10 "${OPENSSL_CMD[@]}" s_client -connect "127.0.0.1:${PORT[$t]}" -servername localhost \
      -alpn http/1.1 </dev/null 2>/dev/null | awk '/^New, / {v = $2 " " $5} /Server Temp Key/ {sub(/.*: /, ""); x = $0} /^ALPN/ {a = $NF} END {print v ", " x ", ALPN " a}' || true)
    # Does a ticket from one connection resume the next? (what the resumed loads rely on)
    printf 'GET %s HTTP/1.0\r\n\r\n' "$URL_PATH" | timeout 10 "${OPENSSL_CMD[@]}" s_client \
      -connect "127.0.0.1:${PORT[$t]}" -servername localhost -sess_out "$WORK/sess" -ign_eof >/dev/null 2>&1 || true
    res=$(timeout 10 "${OPENSSL_CMD[@]}" s_client -connect "127.0.0.1:${PORT[$t]}" -servername localhost \
      -sess_in "$WORK/sess" </dev/null 2>/dev/null | awk '/^Reused, / {print "resumes a ticket"; exit} /^New, / {print "DOES NOT resume"; exit}' || true)
    NEGOTIATED+="- $k → $t: ${neg}; ${res}"$'\n'
  done
  for r in $(seq "$ROUNDS"); do
    for s in "${SCENARIOS[@]}"; do
      n=${#TARGETS[@]}
      for i in $(seq 0 $((n - 1))); do
        t=${TARGETS[$(( (i + r + ${#s}) % n ))]}
        log "[$((SECONDS - T0))s] $k round $r/$ROUNDS: $s → $t"
        run_load "$s" "$t" "$k" "$r"
      done
    done
  done
  if [ -n "${PID[wtgate]}" ]; then
    curl -s "http://127.0.0.1:$((BASE_PORT + 9))/metrics" 2>/dev/null | grep -i 'tls' >"$OUT/wtgate-metrics-$k.txt" || true
  fi
  for t in "${TARGETS[@]}"; do stop "$t"; done
done

# --- idle TLS connections: a fresh proxy each (first key type) ---------------------------------
k0=${KEYS%% *}
[ "$IDLE_CONNS" -gt 0 ] || TARGETS=()
for t in "${TARGETS[@]}"; do
  start "$t" "$k0"
  log "[$((SECONDS - T0))s] idle: $IDLE_CONNS TLS connections → $t ($k0)"
  res=$(timeout 120 "${TASKSET_CMD[@]}" -c "$LOAD_CPUS" python3 scripts/tls-idle.py "${PORT[$t]}" \
    "$IDLE_CONNS" "$(pids_of "$t")" 2 || echo '{}')
  echo "{\"target\": \"$t\", \"key\": \"$k0\", \"result\": $res}" | tee -a "$IDLE" >&2
  stop "$t"
done

# --- report ------------------------------------------------------------------------------------
REV=${WTGATE_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
{
  echo "### TLS run $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r); all cores ${BUSY_BEFORE}% busy in the second before the run"
  echo "- versions: $("${HAPROXY_CMD[@]}" -v | head -1 | cut -d' ' -f1-3) ($("${HAPROXY_CMD[@]}" -vv | sed -n 's/^Running on OpenSSL version : /on /p')), $("${NGINX_CMD[@]}" -v 2>&1 | cut -d' ' -f3), wtgate $REV (rustls 0.23, aws-lc-rs), client $("${OPENSSL_CMD[@]}" version | cut -d' ' -f1-2) / wrk"
  echo "- command: \`scripts/compare-tls.sh $ARGV\` — $ROUNDS interleaved round(s), ${DUR} s per load; medians over rounds"
  echo "- pinning: proxy on CPU $PROXY_CPUS (1 thread/worker), clients + both backends on CPU $LOAD_CPUS"
  echo "- negotiated:"
  echo "$NEGOTIATED"
  awk -F'\t' -v OFS='\t' -v sc="$SCLIENTS" -v client="$CLIENT" -v bc="$BENCH_CONNS" -v karate="$KA_RATE" '
    NR == 1 { next }
    { key = $1 SUBSEP $2 SUBSEP $3; n[key]++; rate[key, n[key]] = $5; cpu[key, n[key]] = $9; err[key] += $7
      if (!(($1 SUBSEP $2) in seen)) { seen[$1 SUBSEP $2] = 1; order[++no] = $1 SUBSEP $2 } }
    function med(arr, key, m,   i, j, v, t) {
      for (i = 1; i <= m; i++) v[i] = arr[key, i] + 0
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
    }
    END {
      title["full"] = "full handshakes, " sc " × openssl s_time -new (connect, handshake, one GET, close)"
      title["resumed"] = "resumed handshakes, " sc " × openssl s_time -reuse (connect, resume, one GET, close)"
      if (client == "bench") {
        title["full"] = "full handshakes, wtgate-bench load --mode connect --tls -c " bc " (connect, full handshake, one GET, RST)"
        title["resumed"] = "resumed handshakes, wtgate-bench load --mode connect --tls --tls-resume -c " bc " (connect, resume, one GET, RST)"
      }
      title["wrkres"] = "resumed handshakes, wrk -c16 Connection: close (wrk keeps its session: SSL_clear)"
      title["ka"] = "keep-alive GETs over TLS, wrk -c64"
      title["karate"] = "keep-alive GETs over TLS at " karate "/s for every proxy, wtgate-bench load --tls -c64 -R " karate
      title["ws"] = "WebSocket echo over TLS, 1 KiB messages, 16 connections (Python asyncio client)"
      for (o = 1; o <= no; o++) {
        split(order[o], ks, SUBSEP)
        unit = ks[2] ~ /^ka/ ? "req" : ks[2] == "ws" ? "msg" : "handshake"
        printf "#### %s: %s\n\n", ks[1] == "ec" ? "ECDSA P-256" : "RSA 2048", title[ks[2]]
        printf "| target | %s/s (client) | proxy CPU µs/%s | %s/s per proxy core (1e6/CPU) | CPU vs HAProxy | errors |\n|---|---:|---:|---:|---:|---:|\n", unit, unit, unit
        h = ks[1] SUBSEP ks[2] SUBSEP "haproxy"; hc = med(cpu, h, n[h])
        split("wtgate haproxy nginx", ts, " ")
        for (i = 1; i <= 3; i++) {
          key = ks[1] SUBSEP ks[2] SUBSEP ts[i]
          if (!(key in n)) continue
          r = med(rate, key, n[key]); c = med(cpu, key, n[key])
          printf "| %s | %.0f | %.1f | %.0f | %.2f× | %d |\n", ts[i], r, c, (c > 0 ? 1e6 / c : 0), (hc > 0 ? c / hc : 0), err[key]
        }
        print ""
      }
    }' "$RAW"
  if [ "$IDLE_CONNS" -gt 0 ]; then
    echo "#### Idle TLS connections ($IDLE_CONNS, $k0 certificate, full handshake + one keep-alive GET each, then idle 2 s; fresh proxy)"
    echo
    echo "| target | open | errors | RSS before (KiB) | RSS after (KiB) | KiB per connection |"
    echo "|---|---:|---:|---:|---:|---:|"
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line); r = d["result"]
    print("| %s | %s | %s | %s | %s | %s |" % (d["target"], r.get("conns", "–"), r.get("errors", "–"),
          r.get("rss_before_kib", "–"), r.get("rss_after_kib", "–"), r.get("kib_per_conn", "–")))
' "$IDLE"
    echo
  fi
  echo "Total time: $((SECONDS - T0)) s."
} | tee "$OUT/report.md"
