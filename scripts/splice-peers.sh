#!/usr/bin/env bash
# docs/splice.md "In the engine": msgs/s and CPU µs/msg of the proxy, and in a second load of the
# backends (wtgate-bench serve, via --pids), for --splice off and auto, 2 rounds; SIZE=65536 for 64 KiB.
# Ports 31490-31492; the proxy on CPU 1, everything else on CPU 0.
set -u
cd "$(dirname "$0")/.."
B=target/release/wtgate-bench; P=31490
taskset -c 0 $B serve --listen 127.0.0.1:$((P+1)) --prefix wt1 >/dev/null & b1=$!
taskset -c 0 $B serve --listen 127.0.0.1:$((P+2)) --prefix wt2 >/dev/null & b2=$!
sleep 0.5
for round in 1 2; do for v in off auto; do
  taskset -c 1 target/release/wtgate --splice $v --threads 1 --no-pin --listen 127.0.0.1:$P --backend wt1=127.0.0.1:$((P+1)) --backend wt2=127.0.0.1:$((P+2)) 2>/dev/null & px=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null && break; sleep 0.05; done
  p=$(timeout 30 taskset -c 0 $B load --target 127.0.0.1:$P --mode ws -c 64 -d 3s --msg-size ${SIZE:-16384} --pids $px --json --quiet 2>/dev/null)
  kill $px; wait $px 2>/dev/null
  taskset -c 1 target/release/wtgate --splice $v --threads 1 --no-pin --listen 127.0.0.1:$P --backend wt1=127.0.0.1:$((P+1)) --backend wt2=127.0.0.1:$((P+2)) 2>/dev/null & px=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null && break; sleep 0.05; done
  b=$(timeout 30 taskset -c 0 $B load --target 127.0.0.1:$P --mode ws -c 64 -d 3s --msg-size ${SIZE:-16384} --pids "$b1,$b2" --json --quiet 2>/dev/null)
  kill $px; wait $px 2>/dev/null
  python3 -c 'import json,sys; p=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(sys.argv[3], "proxy run: %.0f msg/s %.2f us" % (p["rps"], p["proxy"]["cpu_us_per_req"] or 0), "| backends run: %.0f msg/s %.2f us" % (b["rps"], b["proxy"]["cpu_us_per_req"] or 0))' "$p" "$b" "$v"
done; done
kill $b1 $b2
