#!/usr/bin/env bash
# Kills one of two backends under wrk load, through wtgate and then through HAProxy (the docs/design.md "What wtgate replaces"
# config), and reports for each: requests that failed (non-2xx and socket errors, as wrk counts them)
# and how long after the kill the proxy stopped sending to the dead backend (marked it down).
#
#   bash scripts/failover.sh            # ~1 minute, loopback only
#
# Backends are single-process nginx instances (so kill -9 kills them whole) answering 200 with their
# name. The load mixes session-less requests with requests of both backends' sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null && command -v haproxy >/dev/null && command -v nginx >/dev/null || {
  apt-get update -qq && apt-get install -y -qq wrk haproxy nginx-light >/dev/null
}
cargo build --release --bin wtgate -q

DIR=$(mktemp -d /tmp/wtgate-failover.XXXX)
P1=19301 P2=19302 PROXY=19300 STATS=19309
DURATION=${DURATION:-12}
KILL_AT=${KILL_AT:-4}
CONNS=${CONNS:-32}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

backend() { # name port; sets LAST to its pid
  cat >"$DIR/$1.conf" <<EOF
daemon off; master_process off; worker_processes 1; error_log $DIR/$1.err; pid $DIR/$1.pid;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$2 reuseport; keepalive_timeout 10s;
  location / { add_header X-Backend $1; return 200 "$1\n"; } } }
EOF
  nginx -c "$DIR/$1.conf" -p "$DIR" >/dev/null 2>&1 &
  LAST=$!
}

cat >"$DIR/mix.lua" <<'EOF'
-- One third session-less, one third wt1's session, one third wt2's session.
local paths = { "/app", "/?wtd=wt1AAAAAAAAAAAAAAAA&request=style", "/?wtd=wt2BBBBBBBBBBBBBBBB&request=style" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % 3) + 1])
end
EOF

cat >"$DIR/haproxy.cfg" <<EOF
global
  maxconn 4096
defaults
  mode http
  retries 3
  option redispatch
  maxconn 2000
  timeout connect 5s
  timeout client 50s
  timeout server 50s
frontend wt
  bind 127.0.0.1:$PROXY
  acl srv1 url_sub wtd=wt1
  acl srv2 url_sub wtd=wt2
  acl srv1_up nbsrv(bck1) gt 0
  acl srv2_up nbsrv(bck2) gt 0
  use_backend bck1 if srv1_up srv1
  use_backend bck2 if srv2_up srv2
  default_backend bck_lb
backend bck_lb
  balance roundrobin
  server srv1 127.0.0.1:$P1 track bck1/srv1
  server srv2 127.0.0.1:$P2 track bck2/srv2
backend bck1
  server srv1 127.0.0.1:$P1 check
backend bck2
  server srv2 127.0.0.1:$P2 check
listen stats
  bind 127.0.0.1:$STATS
  stats enable
  stats uri /stats
EOF

now() { date +%s.%N; }

run_case() { # name
  local name=$1
  backend wt1 $P1; B1=$LAST; backend wt2 $P2; B2=$LAST; PIDS+=("$B1" "$B2")
  sleep 0.5
  if [ "$name" = wtgate ]; then
    ./target/release/wtgate --listen 127.0.0.1:$PROXY --threads 1 \
      --backend wt1=127.0.0.1:$P1 --backend wt2=127.0.0.1:$P2 2> >(while IFS= read -r l; do echo "$(now) $l"; done >"$DIR/wtgate.log") &
  else
    haproxy -f "$DIR/haproxy.cfg" -db 2>"$DIR/haproxy.log" &
  fi
  PX=$!; PIDS+=("$PX")
  sleep 0.5
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$DIR/mix.lua" "http://127.0.0.1:$PROXY" >"$DIR/$name.wrk" 2>&1 &
  WRK=$!
  sleep "$KILL_AT"
  kill -9 "$B1"; KILLED=$(now); wait "$B1" 2>/dev/null || true
  local down=""
  for _ in $(seq 1 400); do  # up to 20 s
    if [ "$name" = wtgate ]; then
      down=$(grep -m1 'wt1 .*up -> down' "$DIR/wtgate.log" | cut -d' ' -f1 || true)
    else
      if curl -s "http://127.0.0.1:$STATS/stats;csv" | grep -q '^bck1,srv1,.*,DOWN,'; then down=$(now); fi
    fi
    [ -n "$down" ] && break
    sleep 0.05
  done
  wait "$WRK" || true
  kill -9 "$PX" "$B2" 2>/dev/null || true
  wait "$PX" "$B2" 2>/dev/null || true
  local total errs non2xx sock
  total=$(awk '/requests in/ {print $1}' "$DIR/$name.wrk")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$DIR/$name.wrk"); non2xx=${non2xx:-0}
  sock=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$DIR/$name.wrk"); sock=${sock:-0}
  errs=$((non2xx + sock))
  local t="n/a"
  [ -n "$down" ] && t=$(awk -v a="$KILLED" -v b="$down" 'BEGIN { printf "%.3f s", (b-a < 0 ? 0 : b-a) }')
  printf "| %-7s | %9s | %6s | %6s | %6s | %s |\n" "$name" "$total" "$errs" "$non2xx" "$sock" "$t"
}

echo "wrk -t1 -c$CONNS -d${DURATION}s, wt1 killed (kill -9) ${KILL_AT}s in; $(nproc) cores, $(uname -r)"
echo
echo "| proxy   |  requests | failed | non2xx | socket | kill → marked down |"
echo "|---------|-----------|--------|--------|--------|--------------------|"
run_case wtgate
run_case haproxy
echo
echo "(wtgate log: $DIR/wtgate.log; wrk outputs: $DIR/*.wrk)"
