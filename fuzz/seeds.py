#!/usr/bin/env python3
"""Writes the checked-in seed corpus fuzz/corpus/<target>/ (run from anywhere; idempotent).

Seeds: every request and response head of the real Wt 4.14.0 traffic in docs/wt-traffic.txt
(section A), Wt's request lines of sections B/C as GETs, chunked bodies like Wt's, the
request-smuggling cases of tests/smuggling.rs, and PROXY protocol v1/v2 headers, valid and not.
File names are content hashes, as libFuzzer's are.
"""
import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TRAFFIC = os.path.join(HERE, "..", "docs", "wt-traffic.txt")
if len(sys.argv) > 1:
    TRAFFIC = sys.argv[1]


def heads_from_traffic(path):
    """(requests, responses, targets) as CRLF heads from section A's '>>' / '<<' blocks."""
    reqs, resps, targets = [], [], []
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^\[.*\] (>>|<<) (.*)$", lines[i])
        if m:
            start = m.group(2)
            fields = []
            i += 1
            while i < len(lines) and lines[i].startswith("      ") and lines[i].strip():
                fields.append(lines[i].strip())
                i += 1
            head = "\r\n".join([start] + fields) + "\r\n\r\n"
            (reqs if m.group(1) == ">>" else resps).append(head.encode())
            if m.group(1) == ">>":
                targets.append(start.split(" ")[1].encode())
            continue
        m = re.match(r"^[0-9.]+\t\d+\t(GET|POST)\t(\S+)", lines[i])
        if m:
            targets.append(m.group(2).encode())
        i += 1
    return reqs, resps, targets


SID = "wt13kcFKBb8y0I2SsdS"


def post(headers, body):
    return f"POST /?wtd={SID} HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}".encode()


SMUGGLING = [
    post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
    post("Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
    post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
    post("Transfer-Encoding: gzip\r\n", "hello"),
    post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
    post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
    post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n"),
    post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"),
    post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
    post("tRaNsFeR-eNcOdInG: cHuNkEd\r\n", "5\r\nhello\r\n0\r\n\r\n"),
    post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
    post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
    post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
    post("Content-Length: +5\r\n", "hello"),
    post("Content-Length: 5 5\r\n", "hello"),
    post("Content-Length : 5\r\n", "hello"),
    post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"),
    post("Transfer-Encoding: chunked\r\n", "5 junk\r\nhello\r\n0\r\n\r\n"),
    post("Transfer-Encoding: chunked\r\n", "10000000000000000\r\nhello\r\n0\r\n\r\n"),
    post("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n"),
    post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"),
    post("Transfer-Encoding: chunked\r\n", "5;a=\"b c\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
    f"GET /?wtd={SID} HTTP/1.1\nHost: x\n\n".encode(),
    f"GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n".encode(),
    f"GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n".encode(),
    f"GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n".encode(),
    f"GET /a b?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    f"GET /\x01?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
    b"GET /\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n",
]

CHUNKED = [
    b"4\r\nWiki\r\n5;name=val;q=\"x y\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: yes\r\n\r\n",
    b"1f\r\n<!DOCTYPE html><html><body>Wt\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
    b"000a\r\n0123456789\r\nA \t;x\r\n0123456789\r\n0\r\n\r\n",
    b"-1\r\n",
    b"ffffffffffffffff\r\n",
    b"10000000000000000\r\n",
    b"5\r\nhelloXX",
    b"0\r\nX: a\r\n folded\r\n\r\n",
]

RESPONSES_EXTRA = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocol\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Accept: 8HY4GeqsiL1h4lqHrC4npTiRHGU=\r\n\r\n",
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: \r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\nConnection: close, X-A\r\nX-A: b\r\n\r\nx",
    b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.2\r\n",
]


def pp2(command, family, block):
    """A PROXY v2 header: signature, version 2 and `command`, `family`, length, `block`."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    return sig + bytes([0x20 | command, family]) + len(block).to_bytes(2, "big") + block


def tlv(kind, value):
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


INET = bytes([10, 0, 0, 1, 192, 168, 1, 2, 0xDC, 0x04, 0x01, 0xBB])
INET6 = (bytes.fromhex("20010db8000000000000000000000007" "00000000000000000000000000000001")
         + b"\xff\xff\x00\x50")
SSL = tlv(0x20, b"\x07\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client.example"))

PROXY_HEADERS = [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    b"PROXY TCP6 2001:db8::1 ::1 65535 8080\r\n",
    b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN ::1 ::2 1 2\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 080 +1\r\n",
    b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    b"PROXY " + b"x" * 110 + b"\r\n",
    pp2(1, 0x11, INET),
    pp2(1, 0x11, INET + tlv(0x01, b"h2") + SSL + tlv(0x04, b"") + tlv(0xEA, b"vpce-0123abcd")),
    pp2(1, 0x21, INET6 + SSL),
    pp2(1, 0x31, b"/" * 216),
    pp2(1, 0x00, SSL),
    pp2(0, 0x00, b""),
    pp2(0, 0x11, INET),
    pp2(1, 0x12, INET),
    pp2(1, 0x11, INET[:11]),
    pp2(1, 0x11, INET + b"\x20\x00\x04\x01\x00\x00\x00"),
    pp2(1, 0x11, INET + b"\x01\xff\xff"),
    pp2(1, 0x11, INET + SSL + SSL),
    pp2(2, 0x11, INET),
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",
]


def write(target, items):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for data in items:
        name = hashlib.sha1(data).hexdigest()
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def main():
    reqs, resps, targets = heads_from_traffic(TRAFFIC)
    wt_post = post("Content-Length: 41\r\nContent-type: application/x-www-form-urlencoded\r\n",
                   "request=jsupdate&ackId=464786152&pageId=1")
    write("request_head", reqs + SMUGGLING + [wt_post])
    # The whole path: bodies and pipelined sequences too.
    pipelined = [reqs[i] + reqs[i + 1] for i in range(0, len(reqs) - 1, 3)]
    chunked_post = post("Transfer-Encoding: chunked\r\n", CHUNKED[0].decode()) + reqs[0]
    write("request_path", reqs + SMUGGLING + pipelined + [wt_post + reqs[0], chunked_post])
    write("response_head", resps + RESPONSES_EXTRA)
    write("chunked", CHUNKED)
    # proxy_protocol: each header alone and followed by the request it precedes.
    followed = [h + reqs[0] for h in PROXY_HEADERS[:4] + PROXY_HEADERS[9:15]]
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    write("proxy_protocol", PROXY_HEADERS + followed + [reqs[0], tls_hello])
    # wtd_route: the first byte picks backend states; the rest is a request-target.
    extra = [b"/app?foo_wtd=x&wtd=wt1AbCdEfGhIjKlMnOp#&wtd=y", b"/#?wtd=wt1x", b"/?wtd=&wtd=a1"]
    write("wtd_route", [bytes([s]) + t for s in (0x00, 0xff, 0x35) for t in targets + extra])
    print(f"{len(reqs)} requests, {len(resps)} responses, {len(targets)} targets from the traffic")


if __name__ == "__main__":
    main()
