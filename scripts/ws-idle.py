#!/usr/bin/env python3
"""Memory per idle WebSocket tunnel, for scripts/compare.sh (issue 17).

  ws-idle.py PORT N PIDS [HOLD_S]

Opens N WebSocket connections to 127.0.0.1:PORT (a Wt-like `?wtd=…&request=ws` upgrade, to the
`wtgate-bench serve` backends behind the proxy, which echo), one after another; on each, one
32-byte masked message and its echo, as a Wt session's WebSocket after a push; then leaves them
all open and idle. Prints one JSON line: the RSS (sum of /proc/PID/status VmRSS over PIDS,
comma-separated) before the first connection and after HOLD_S seconds of idling, and the delta
per tunnel in KiB. Bounded: every socket has a 10 s timeout; all connections close at exit.
"""
import base64
import json
import os
import socket
import sys

from idle_rss import measure, read_head


def recv_exact(s, n, buf):
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf


def open_tunnel(port, i):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    wtd = f"wt{1 + i % 2}AbCdEfGhIjKlMn{i % 100:02d}"
    s.sendall(
        f"GET /app?wtd={wtd}&request=ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head, rest = read_head(s, "the 101")
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise OSError("no 101")
    payload = bytes((i + k) % 256 for k in range(32))
    mask = os.urandom(4)
    masked = bytes(b ^ mask[k % 4] for k, b in enumerate(payload))
    s.sendall(bytes([0x82, 0x80 | len(payload)]) + mask + masked)
    frame = recv_exact(s, 2 + len(payload), rest)
    if frame[2:2 + len(payload)] != payload:
        raise OSError("bad echo")
    return s


def main():
    port, n, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    report = measure(lambda i: open_tunnel(port, i), n, pids, hold)
    report["tunnels"], report["kib_per_tunnel"] = report.pop("conns"), report.pop("kib_per_conn")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
