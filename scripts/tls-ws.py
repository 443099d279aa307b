#!/usr/bin/env python3
"""WebSocket echo over TLS, for scripts/compare-tls.sh (the `ws` scenario).

  tls-ws.py PORT CONNS SECONDS [MSG_SIZE]

CONNS connections to https 127.0.0.1:PORT (TLS, ALPN http/1.1), each upgraded to WebSocket at
/app?wtd=wt1… (the `wtgate-bench serve` backends echo), then a closed loop per connection: send one
masked binary message of MSG_SIZE bytes (default 1024), wait for its unmasked echo, check it, again,
for SECONDS. Prints "N messages in T s, E errors" (N counts echoes received and checked).
Bounded: the whole run stops after SECONDS (+10 s for the setup).
"""
import asyncio
import base64
import os
import ssl
import struct
import sys
import time


def frame(payload, mask=b"\x01\x02\x03\x04"):
    n = len(payload)
    head = bytes([0x82])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def conn(i, port, ctx, deadline, size, counts):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (f"GET /app?wtd=wt{1 + i % 2}AbCdEfGhIjKlMn{i % 100:02d}&ws=1 HTTP/1.1\r\nHost: localhost\r\n"
         f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise OSError(f"no upgrade: {head[:60]!r}")
    payload = os.urandom(size)
    out = frame(payload)
    hlen = 2 if size < 126 else 4 if size < 65536 else 10
    while time.monotonic() < deadline:
        writer.write(out)
        got = await reader.readexactly(hlen + size)
        if got[hlen:] != payload:
            counts[1] += 1
        else:
            counts[0] += 1
    writer.close()


async def main():
    port, n, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    counts = [0, 0]
    t0 = time.monotonic()
    deadline = t0 + secs
    tasks = [conn(i, port, ctx, deadline, size, counts) for i in range(n)]
    res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), secs + 10)
    errors = counts[1] + sum(1 for r in res if isinstance(r, BaseException))
    print(f"{counts[0]} messages in {time.monotonic() - t0:.2f} s, {errors} errors")


if __name__ == "__main__":
    asyncio.run(main())
