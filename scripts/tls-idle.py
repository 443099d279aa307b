#!/usr/bin/env python3
"""Memory per idle TLS connection, for scripts/compare-tls.sh.

  tls-idle.py PORT N PIDS [HOLD_S]

Opens N TLS connections to 127.0.0.1:PORT one after another (full handshake each, no resumption),
sends one keep-alive GET on each and reads its whole response, then leaves them all open and idle.
Prints one JSON line: the RSS (sum of /proc/PID/status VmRSS over PIDS, comma-separated) before
the first connection and after HOLD_S seconds of idling, and the delta per connection in KiB.
Bounded: every socket has a 10 s timeout; all connections close at exit.
"""
import json
import socket
import ssl
import sys

from idle_rss import measure, read_head


def read_response(s):
    head, body = read_head(s, "the response head")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed inside the body")
        body += chunk
    return head.split(b"\r\n")[0]


def main():
    port, n, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    versions = []

    def open_one(i):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        versions.append(s.version())
        s.sendall(
            f"GET /app?wtd=wt{1 + i % 2}AbCdEfGhIjKlMn{i % 100:02d}&request=style HTTP/1.1\r\n"
            "Host: localhost\r\n\r\n".encode()
        )
        if b" 200 " not in read_response(s):
            s.close()
            raise OSError("not 200")
        return s

    report = measure(open_one, n, pids, hold)
    report["tls"] = versions[-1] if versions else None
    print(json.dumps(report))


if __name__ == "__main__":
    main()
