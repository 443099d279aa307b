#!/usr/bin/env python3
"""What the load generator itself costs: CPU per request of two `wtgate-bench` builds (A and B)
on the same fixed targets, in interleaved rounds, each cross-checked against wrk.

    scripts/gen-cost.py --a OLD_BENCH --b NEW_BENCH --wtgate WTGATE [--rounds 5] [--duration 4s]
        [--targets serve-a,serve-b,proxy[,haproxy]] [--log FILE]

Targets, started once and kept for all rounds (so that only the generator changes):
  - serve-a, serve-b: one `serve` backend of build A / build B alone on CPU 1, loaded directly
    (its own CPU per request is reported too, so this also compares the two backends);
  - proxy: WTGATE (one thread) on CPU 1 in front of two build-A backends on CPU 0, the
    generator on CPU 0 as well: the layout of scripts/compare.sh;
  - haproxy: HAProxy with scripts/bench-haproxy.cfg (one thread) in place of WTGATE.
Loads: keep-alive GETs and WebSocket echo (1 KiB), 64 connections, closed loop, no warm-up; and
`wrk -t1 -c64` on a Wt-like URL of the same target. The order of targets and runs rotates every
round; ratios are taken within a round. A generator's CPU is its rusage (all threads, io_uring
workers included), read when it exits; the target's from the generator's --pids (or, for wrk,
from /proc around the run). Ports 29100-29111; run as root on a machine with at least 2 CPUs.
Prints one row per run and a markdown summary of medians.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

URL_PATH = "/app?wtd=wt1AbCdEfGhIjKlMnOp&request=style&page=0"
TCK = os.sysconf("SC_CLK_TCK")


def run_timed(cmd):
    """Runs cmd to its end; returns (stdout, CPU seconds of the process and its threads)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, _, ru = os.wait4(p.pid, 0)
    p.returncode = 0  # reaped by wait4 above
    return out, ru.ru_utime + ru.ru_stime


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def wait_port(port):
    for _ in range(200):
        if subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"],
                          stderr=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def start(cpu, cmd, port, log):
    if subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"],
                      stderr=subprocess.DEVNULL).returncode == 0:
        sys.exit(f"port {port} is taken")
    p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=log, stderr=log)
    wait_port(port)
    return p


def load(bench, port, pid, mode, dur, prefixes):
    cmd = ["taskset", "-c", "0", bench, "load", "--json", "--quiet", "--target",
           f"127.0.0.1:{port}", "--mode", mode, "-c", "64", "-d", dur, "--warmup", "0s",
           "--prefixes", prefixes, "--pids", str(pid)]
    if mode == "ws":
        cmd += ["--msg-size", "1024"]
    out, cpu = run_timed(cmd)
    r = json.loads(out)
    sent = max(r["sent"], 1)
    errors = ",".join(f"{k} {v}" for k, v in r["errors"].items() if v) or "0"
    return {"rps": r["rps"], "gen_us": cpu * 1e6 / sent, "target_us": r["proxy"]["cpu_us_per_req"],
            "errors": r["errors_total"], "kinds": errors}


def wrk(port, pid, dur):
    c0 = proc_cpu_s(pid)
    out, cpu = run_timed(["taskset", "-c", "0", "wrk", "-t1", "-c64", f"-d{dur}",
                          f"http://127.0.0.1:{port}{URL_PATH}"])
    c1 = proc_cpu_s(pid)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs += int(m.group(1)) if m else 0
    return {"rps": rps, "gen_us": cpu * 1e6 / max(n, 1), "target_us": (c1 - c0) * 1e6 / max(n, 1),
            "errors": errs, "kinds": str(errs)}


def haproxy_cfg(log):
    """scripts/bench-haproxy.cfg (compare.sh's) for one thread on 29101, next to the log."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "bench-haproxy.cfg")) as f:
        cfg = f.read()
    for k, v in {"@PORT@": "29101", "@B1@": "127.0.0.1:29102", "@B2@": "127.0.0.1:29103",
                 "@THREADS@": "1", "@MAXCONN@": "4000"}.items():
        cfg = cfg.replace(k, v)
    path = log + ".haproxy.cfg"
    with open(path, "w") as f:
        f.write(cfg)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--wtgate", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", default="4s")
    ap.add_argument("--targets", default="serve-a,serve-b,proxy",
                    help="comma-separated: serve-a, serve-b, proxy, haproxy")
    ap.add_argument("--log", default="/tmp/gen-cost.log", help="the targets' stdout and stderr")
    args = ap.parse_args()
    kids = []
    log = open(args.log, "w")
    try:
        ports = {"serve-a": 29110, "serve-b": 29111, "proxy": 29100}
        pids = {}
        kids.append(start("1", [args.a, "serve", "--listen", "127.0.0.1:29110"], 29110, log))
        pids["serve-a"] = kids[-1].pid
        kids.append(start("1", [args.b, "serve", "--listen", "127.0.0.1:29111"], 29111, log))
        pids["serve-b"] = kids[-1].pid
        for port, prefix in [(29102, "wt1"), (29103, "wt2")]:
            kids.append(start("0", [args.a, "serve", "--listen", f"127.0.0.1:{port}",
                                    "--prefix", prefix], port, log))
        kids.append(start("1", [args.wtgate, "--listen", "127.0.0.1:29100", "--threads", "1",
                                "--no-pin", "--backend", "wt1=127.0.0.1:29102",
                                "--backend", "wt2=127.0.0.1:29103"], 29100, log))
        pids["proxy"] = kids[-1].pid
        if "haproxy" in args.targets:
            ports["haproxy"] = 29101
            kids.append(start("1", ["haproxy", "-db", "-f", haproxy_cfg(args.log)], 29101, log))
            pids["haproxy"] = kids[-1].pid
        rows = []
        bench = {"a": args.a, "b": args.b}
        runs = [("a", "keepalive"), ("b", "keepalive"), ("wrk", "keepalive"), ("a", "ws"),
                ("b", "ws")]
        targets = args.targets.split(",")
        for rnd in range(1, args.rounds + 1):
            # Every round rotates the order of the targets and of the runs on each.
            for t in targets[rnd % len(targets):] + targets[:rnd % len(targets)]:
                prefixes = "wt1" if t.startswith("serve") else "wt1,wt2"
                k = rnd % len(runs)
                for name, mode in runs[k:] + runs[:k]:
                    if name == "wrk":
                        r = wrk(ports[t], pids[t], args.duration)
                    else:
                        r = load(bench[name], ports[t], pids[t], mode, args.duration, prefixes)
                    rows.append((rnd, t, mode, name, r))
                    show(rnd, t, mode, name, r)
        summary(rows, args)
    finally:
        for k in kids:
            k.kill()
            k.wait()


def show(rnd, t, mode, name, r):
    tu = f"{r['target_us']:7.2f}" if r["target_us"] is not None else "      -"
    print(f"round {rnd}  {t:8} {mode:9} gen {name:3}  {r['rps']:9.0f} /s  gen {r['gen_us']:6.2f} "
          f"us/req  target {tu} us/req  errors {r['kinds']}", flush=True)


def per_round(rows, args, t, m, num, den, key):
    """Median (min-max) over rounds of num's key / den's key in the same round."""
    per = []
    for rnd in range(1, args.rounds + 1):
        got = {n: r for rr, tt, mm, n, r in rows if (rr, tt) == (rnd, t) and mm in (m, "keepalive")
               and (mm == m or n == "wrk")}
        if num in got and den in got and got[den][key]:
            per.append(got[num][key] / got[den][key])
    if not per:
        return "-"
    return f"{statistics.median(per):.2f}× ({min(per):.2f}–{max(per):.2f})"


def summary(rows, args):
    print(f"\nmedians over {args.rounds} rounds (a = {args.a}, b = {args.b}); ratios are per round:")
    print("| target | load | generator | req/s | req/s vs wrk | generator CPU µs/req | b/a "
          "| target CPU µs/req | vs wrk | errors |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    keys = sorted({(t, m, n) for _, t, m, n, _ in rows})
    for t, m, n in keys:
        rs = [r for _, tt, mm, nn, r in rows if (tt, mm, nn) == (t, m, n)]
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        ab = per_round(rows, args, t, m, "b", "a", "gen_us") if n == "b" else "-"
        vs = lambda k: per_round(rows, args, t, m, n, "wrk", k) if m == "keepalive" and n != "wrk" else "-"  # noqa: E731,E501
        print(f"| {t} | {m} | {n} | {med('rps'):.0f} | {vs('rps')} | {med('gen_us'):.2f} | {ab} "
              f"| {med('target_us'):.2f} | {vs('target_us')} | {sum(r['errors'] for r in rs)} |")


if __name__ == "__main__":
    main()
