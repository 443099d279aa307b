#!/usr/bin/env python3
"""Chaos run for scripts/chaos.sh: Wt-like backends, mixed clients and a seeded fault schedule,
against one proxy (wtgate or HAProxy) at a time. Standard library only (Python 3.8+).

  chaos.py backend --prefix wt1 --port 19401      one Wt-like backend (what chaos.sh starts)
  chaos.py run --proxy wtgate|haproxy --scenario mixed|rolling|calm|reloads --seed N --json FILE …
  chaos.py report FILE…                           the markdown table of the run files given

The backend behaves like wthttpd where it matters here: started with a session-id prefix, a
request without `wtd`, with another server's session, or with a session this process did not
start (Wt keeps sessions in memory: a restarted server knows none of its old ones) starts a new
session and says its id (`X-Session`); every answer says who served it (`X-Backend`). A client
whose answer carries a new session id has lost its session (a Wt page would reload): "sessions
lost", of which "answered by another server" are the ones a proxy moved. GET bodies are a pattern made from the request's nonce (`n=`), so a
client checks it got the answer to its own request, byte for byte; POST bodies are checksummed
(`X-Body-Sha256`, `X-Body-Length`); `?wtd=…&request=ws` with `Upgrade: websocket` echoes frames.
It closes keep-alive connections idle for 10 s, as wthttpd does. One process per backend, so
SIGSTOP freezes it and kill -9 kills it whole; it binds with SO_REUSEADDR, so a restart gets the
same port back at once.

`run` starts the backends (each pinned where chaos.sh says), the proxy, the clients and the fault
schedule (the same for both proxies, from --seed), and writes one JSON file of counts: client
errors by kind, sessions moved, bytes corrupted, latency histograms, the proxy's descriptors at
start and after its pool idled out. Every process it starts dies with it (PR_SET_PDEATHSIG) and is
killed on exit.
"""

import argparse
import asyncio
import base64
import ctypes
import hashlib
import json
import math
import os
import random
import signal
import socket
import string
import subprocess
import sys
import time

ALNUM = string.ascii_letters + string.digits
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ID_LEN = 16  # Wt's session-id-length

# --------------------------------------------------------------------------------------------
# Shared bits: query parsing, body pattern, WebSocket frames
# --------------------------------------------------------------------------------------------


def query_params(target):
    """The query parameters of a request-target, first value of each name."""
    q = target.split("?", 1)[1] if "?" in target else ""
    out = {}
    for part in q.split("&"):
        k, _, v = part.partition("=")
        out.setdefault(k, v)
    return out


def pattern(nonce, size):
    """The body a GET with nonce `n` and `size` gets: the nonce repeated, cut to size."""
    unit = nonce.encode() + b"."
    return (unit * (size // len(unit) + 1))[:size]


def xor_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def ws_frame(opcode, payload, mask):
    n = len(payload)
    head = bytearray([0x80 | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head.append(m | n)
    elif n < 65536:
        head.append(m | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(m | 127)
        head += n.to_bytes(8, "big")
    if mask:
        key = os.urandom(4)
        return bytes(head) + key + xor_mask(payload, key)
    return bytes(head) + payload


async def ws_read_frame(reader):
    """(opcode, payload) of the next frame; unmasks a masked one."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    if key:
        payload = xor_mask(payload, key)
    return b0 & 0x0F, payload


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


class Backend:
    IDLE = 10.0  # wthttpd closes idle keep-alive connections after 10 s

    def __init__(self, prefix):
        self.prefix = prefix
        # The sessions this process started: like Wt's, gone with the process.
        self.known = set()

    def new_id(self):
        sid = self.prefix + "".join(random.choices(ALNUM, k=ID_LEN))
        self.known.add(sid)
        return sid

    async def serve(self, reader, writer):
        try:
            while await self.one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                asyncio.TimeoutError, ValueError, OSError):
            pass
        finally:
            writer.close()

    async def one(self, reader, writer):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.IDLE)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        body = await read_body(reader, hdrs)
        q = query_params(target)
        wtd = q.get("wtd", "")
        # Wt: a known session continues; no wtd, or an id this process did not start, starts one.
        session = wtd if wtd in self.known else self.new_id()
        extra = "X-Backend: %s\r\nX-Session: %s\r\nX-Nonce: %s\r\n" % (
            self.prefix, session, q.get("n", ""))
        if hdrs.get("upgrade", "").lower() == "websocket":
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n"
                          % (ws_accept(hdrs.get("sec-websocket-key", "")), extra)).encode())
            await writer.drain()
            await self.echo(reader, writer)
            return False
        if method == "POST":
            extra += "X-Body-Sha256: %s\r\nX-Body-Length: %d\r\n" % (
                hashlib.sha256(body).hexdigest(), len(body))
            out = b"ok\n"
        elif target.startswith("/health"):
            out = b"ok\n"
        else:
            try:
                size = min(int(q.get("size", "64")), 1 << 20)
            except ValueError:
                size = 64
            out = pattern(q.get("n", ""), size)
        close = hdrs.get("connection", "").lower() == "close"
        writer.write(("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n"
                      % (len(out), extra, "Connection: close\r\n" if close else "")).encode()
                     + (b"" if method == "HEAD" else out))
        await writer.drain()
        return not close

    async def echo(self, reader, writer):
        while True:
            op, payload = await ws_read_frame(reader)
            if op == 8:
                writer.write(ws_frame(8, payload[:2], False))
                await writer.drain()
                return
            writer.write(ws_frame(10 if op == 9 else op, payload, False))
            await writer.drain()


async def read_body(reader, hdrs):
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    n = int(hdrs.get("content-length", "0") or 0)
    return await reader.readexactly(n) if n else b""


def backend_main(args):
    be = Backend(args.prefix)
    random.seed()

    async def main():
        server = await asyncio.start_server(be.serve, "127.0.0.1", args.port, reuse_address=True,
                                            backlog=1024, limit=1 << 17)
        print("%s listening on 127.0.0.1:%d (pid %d)" % (args.prefix, args.port, os.getpid()),
              file=sys.stderr, flush=True)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# Processes: everything started here dies with this process, and is killed on exit
# --------------------------------------------------------------------------------------------

LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
CHILDREN = []


def spawn(argv, cpus, log):
    def pre():
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         preexec_fn=pre, close_fds=True)
    CHILDREN.append(p)
    return p


def kill_all():
    for p in CHILDREN:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
            except OSError:
                pass
    for p in CHILDREN:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def cpu_list(spec):
    out = set()
    for part in (spec or "").split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def wait_port(port, limit=5.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if port_open(port):
            return True
        await asyncio.sleep(0.05)
    return False


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


class Backends:
    """The Wt-like backend processes, by prefix."""

    def __init__(self, names, base_port, cpus, logdir):
        self.names = names
        self.port = {n: base_port + 1 + i for i, n in enumerate(names)}
        self.cpus = cpus
        self.logdir = logdir
        self.proc = {}

    def start(self, name):
        log = open(os.path.join(self.logdir, "%s.log" % name), "ab")
        self.proc[name] = spawn([sys.executable, os.path.abspath(__file__), "backend", "--prefix",
                                 name, "--port", str(self.port[name])], self.cpus, log)
        log.close()

    def alive(self, name):
        p = self.proc.get(name)
        return p is not None and p.poll() is None

    def signal(self, name, sig):
        p = self.proc.get(name)
        if p is None or p.poll() is not None:
            return False
        os.kill(p.pid, sig)
        if sig == signal.SIGKILL:
            p.wait()
        return True


# --------------------------------------------------------------------------------------------
# The proxies
# --------------------------------------------------------------------------------------------


class Wtgate:
    name = "wtgate"
    pool_idle = 8.0  # its default --pool-idle-timeout

    def __init__(self, args, backends, workdir):
        self.bin = args.wtgate
        self.port = args.base_port
        self.admin = args.base_port + 9
        self.backends = backends
        self.cfg = os.path.join(workdir, "wtgate.toml")
        self.threads = max(1, len(cpu_list(args.proxy_cpus)) if args.proxy_cpus else 1)
        self.cpus = cpu_list(args.proxy_cpus)
        self.reloads = 0
        self.log = os.path.join(workdir, "wtgate.log")

    def write_config(self):
        # Each reload flips one harmless setting, so every SIGHUP is a real reload that changes
        # something (the keep-alive timeout of client connections, 60 s or 59 s).
        ka = "59s" if self.reloads % 2 else "60s"
        lines = ["threads = %d" % self.threads, "", "[[listen]]",
                 'address = "127.0.0.1:%d"' % self.port, ""]
        for n in self.backends.names:
            lines += ["[[backend]]", 'prefix = "%s"' % n,
                      'address = "127.0.0.1:%d"' % self.backends.port[n], ""]
        lines += ["[timeouts]", 'keepalive = "%s"' % ka, "", "[admin]",
                  'listen = "127.0.0.1:%d"' % self.admin, ""]
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines))

    def start(self):
        self.write_config()
        log = open(self.log, "ab")
        self.proc = spawn([self.bin, "--config", self.cfg], self.cpus, log)
        log.close()

    async def admin_state(self, name, state):
        # The admin API straight from this process (what `wtgate admin STATE NAME` sends), as
        # HAProxy gets its stats socket: starting a `wtgate admin` process on the clients' core
        # for every drain would weigh on the clients' latency in wtgate's runs only.
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.admin), 2)
            w.write(("POST /backends/%s/state HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Connection: close\r\nX-Wtgate-Admin: 1\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %d\r\n\r\n%s" % (name, self.admin, len(state), state)).encode())
            await w.drain()
            out = await asyncio.wait_for(r.read(), 5)
            w.close()
        except (OSError, asyncio.TimeoutError) as e:
            return "error: %s" % e
        status = out.split(b"\r\n", 1)[0].decode("latin-1")
        return "ok" if " 200 " in status + " " else "%s: %s" % (status, out[-200:].decode("latin-1"))

    async def reload(self):
        self.reloads += 1
        self.write_config()
        os.kill(self.proc.pid, signal.SIGHUP)
        return "ok"


class Haproxy:
    name = "haproxy"
    pool_idle = 5.0  # pool-purge-delay's default

    def __init__(self, args, backends, workdir):
        self.bin = args.haproxy
        self.port = args.base_port
        self.backends = backends
        self.cfg = os.path.join(workdir, "haproxy.cfg")
        self.sock = os.path.join(workdir, "haproxy.sock")
        self.cpus = cpu_list(args.proxy_cpus)
        self.threads = max(1, len(self.cpus))
        self.drain_in = args.haproxy_drain
        self.log = os.path.join(workdir, "haproxy.log")

    def write_config(self):
        # docs/design.md "What wtgate replaces", with one bckN per server and a stats socket.
        b = self.backends
        idx = {n: i + 1 for i, n in enumerate(b.names)}
        c = ["global", "  maxconn 4096", "  nbthread %d" % self.threads,
             "  stats socket %s mode 600 level admin" % self.sock, "",
             "defaults", "  mode http", "  maxconn 2000", "  retries 3", "  option redispatch",
             "  option httplog", "  option dontlognull", "  timeout connect 5s",
             "  timeout client 50s", "  timeout server 50s", "",
             "frontend wt", "  bind 127.0.0.1:%d" % self.port]
        c += ["  acl srv%d url_sub wtd=%s" % (idx[n], n) for n in b.names]
        c += ["  acl srv%d_up nbsrv(bck%d) gt 0" % (idx[n], idx[n]) for n in b.names]
        c += ["  use_backend bck%d if srv%d_up srv%d" % (idx[n], idx[n], idx[n]) for n in b.names]
        c += ["  default_backend bck_lb", "", "backend bck_lb", "  balance roundrobin"]
        c += ["  server srv%d 127.0.0.1:%d track bck%d/srv%d" % (idx[n], b.port[n], idx[n], idx[n])
              for n in b.names]
        for n in b.names:
            c += ["", "backend bck%d" % idx[n], "  server srv%d 127.0.0.1:%d check" % (idx[n], b.port[n])]
        with open(self.cfg, "w") as f:
            f.write("\n".join(c) + "\n")

    def start(self):
        self.write_config()
        log = open(self.log, "ab")
        self.proc = spawn([self.bin, "-db", "-f", self.cfg], self.cpus, log)
        log.close()

    async def command(self, line):
        try:
            r, w = await asyncio.wait_for(asyncio.open_unix_connection(self.sock), 2)
            w.write(line.encode() + b"\n")
            await w.drain()
            out = await asyncio.wait_for(r.read(), 2)
            w.close()
            return out.decode().strip() or "ok"
        except (OSError, asyncio.TimeoutError) as e:
            return "error: %s" % e

    async def admin_state(self, name, state):
        i = self.backends.names.index(name) + 1
        # "lb": the server in bck_lb (tracking bckN/srvN) gets no new sessions while bckN keeps
        # serving the sessions it owns. "server": bckN/srvN itself (its trackers inherit the drain).
        srv = "bck_lb/srv%d" % i if self.drain_in == "lb" else "bck%d/srv%d" % (i, i)
        return await self.command("set server %s state %s" % (srv, state))

    async def reload(self):
        return "skipped (wtgate only)"


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

ERROR_KINDS = [
    ("connect_refused", "connect refused"),
    ("connect_other", "connect failed (other)"),
    ("s502", "502"),
    ("s503", "503"),
    ("s504", "504"),
    ("other_status", "other status"),
    ("timeout", "timeout (5 s)"),
    ("closed_early", "closed/reset before response"),
    ("mid_response", "reset/EOF mid-response"),
    ("bad_response", "wrong or corrupted answer"),
    ("ws_closed", "WebSocket closed"),
    ("ws_bad_echo", "WebSocket bad echo"),
    ("ws_timeout", "WebSocket echo timeout (5 s)"),
]


class Failed(Exception):
    def __init__(self, kind, detail=""):
        super().__init__(kind)
        self.kind = kind
        self.detail = detail


class Hist:
    """Log-bucketed latency histogram, 1 % wide buckets, in microseconds."""
    BASE = math.log(1.01)

    def __init__(self, buckets=None):
        self.b = {int(k): v for k, v in (buckets or {}).items()}

    def add(self, seconds):
        us = max(seconds * 1e6, 1.0)
        k = int(math.log(us) / self.BASE)
        self.b[k] = self.b.get(k, 0) + 1

    def merge(self, other):
        for k, v in other.b.items():
            self.b[k] = self.b.get(k, 0) + v

    def count(self):
        return sum(self.b.values())

    def over(self, ms):
        """How many took longer than ms (by the buckets' lower bounds)."""
        return sum(v for k, v in self.b.items() if math.exp(k * self.BASE) / 1e3 >= ms)

    def pct(self, q):
        n = self.count()
        if n == 0:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for k in sorted(self.b):
            seen += self.b[k]
            if seen >= rank:
                return math.exp((k + 1) * self.BASE) / 1e3  # ms, the bucket's upper bound
        return None


class Stats:
    def __init__(self, windows):
        self.requests = {}
        self.ok = {}
        self.errors = {k: 0 for k, _ in ERROR_KINDS}
        self.samples = []  # (t, kind, detail) of the first errors, for the log
        self.spans = {}  # kind -> [first, last] time it happened
        self.moved = 0
        self.moved_by = {"dead": 0, "frozen": 0, "alive": 0}  # the owner's state while asked
        self.lost = 0
        self.lost_avoidable = 0  # lost although its owner was never killed while it lived
        self.born = {}  # session id -> when a client first had it
        self.closed_early_reused = 0
        self.server_died = 0  # client errors whose server was killed under them
        self.off_owner = 0
        self.corrupt_bytes = 0
        self.corrupt_events = 0
        self.ws_messages = 0
        self.ws_opened = 0
        self.sessions_started = 0
        self.lat_ok = Hist()
        self.lat_ok_fault = Hist()
        self.lat_all = Hist()
        self.ws_lat = Hist()
        self.lat_due_fault = Hist()  # paced: from when due, of those due while a fault was on
        self.lat_kind = {}  # kind -> Hist of its 200s started while a fault was on
        self.windows = windows
        self.down = {}  # backend -> [[from, to or None, "dead"|"frozen"]]
        self.t0 = time.monotonic()

    def rel(self):
        return time.monotonic() - self.t0

    def owner_state(self, owner, t0, t1):
        """What the owner was at some time in [t0, t1]: "dead" (killed, its port not open again
        yet), "frozen" (SIGSTOP), or "alive" all along."""
        states = [s for a, b, s in self.down.get(owner, ()) if a <= t1 and (b is None or b >= t0)]
        return "dead" if "dead" in states else (states[0] if states else "alive")

    def killed_since(self, owner, born, t1):
        """Whether the owner was killed between a session's start and t1."""
        return any(s == "dead" and born <= a <= t1 for a, _, s in self.down.get(owner, ()))

    def down_from(self, backend, state):
        self.down.setdefault(backend, []).append([self.rel(), None, state])

    def down_to(self, backend, state):
        for span in self.down.get(backend, ()):
            if span[2] == state and span[1] is None:
                span[1] = self.rel()

    def in_fault(self, t):
        return any(a <= t < b for a, b in self.windows)

    def error(self, kind, detail="", dead=False):
        """One client error; `dead`: its server was killed under it (a WebSocket cut, a POST in
        flight), which no proxy could have answered."""
        self.errors[kind] += 1
        self.server_died += dead
        t = round(self.rel(), 3)
        span = self.spans.setdefault(kind, [t, t])
        span[1] = t
        if len(self.samples) < 200:
            self.samples.append((round(self.rel(), 3), kind, detail[:200]))


class Conn:
    def __init__(self, port):
        self.port = port
        self.r = self.w = None
        self.served = 0  # answers read on this connection

    async def ensure(self):
        if self.w is not None:
            return False
        try:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 17)
        except ConnectionRefusedError:
            raise Failed("connect_refused")
        except OSError as e:
            raise Failed("connect_other", str(e))
        return True

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None
        self.served = 0


async def read_response(r, method):
    """(status, headers, body). Failed('closed_early') before the whole head, 'mid_response'
    after it."""
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise Failed("closed_early" if not e.partial else "mid_response", "EOF in head")
    except ConnectionError as e:
        raise Failed("closed_early", str(e))
    except asyncio.LimitOverrunError:
        raise Failed("bad_response", "head too large")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise Failed("bad_response", "status line %r" % lines[0][:80])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, hdrs, b""
    try:
        if "chunked" in hdrs.get("transfer-encoding", "").lower() or "content-length" in hdrs:
            body = await read_body(r, hdrs)
        else:
            body = await r.read()  # close-delimited
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise Failed("mid_response", str(e))
    return status, hdrs, body


def owner_of(wtd, names):
    for n in names:
        if wtd.startswith(n) and len(wtd) == len(n) + ID_LEN:
            return n
    return None


class Pace:
    """When a worker's next request is due. Closed loop (--think): `think` after the last answer,
    and a request's time counts from its send (`next` gives None). Paced (--rate): one request
    every 1/rate s on a fixed schedule, the same offered load whichever proxy answers; a worker
    that fell behind sends at once, and its wait counts from when the request was due, so a stall
    counts for every request it held back (wrk2's correction for coordinated omission)."""

    def __init__(self, think, rate, rng):
        self.think, self.gap = think, (1.0 / rate if rate else 0.0)
        self.at = time.monotonic() + rng.uniform(0, self.gap) if rate else None
        self.first = True

    async def next(self):
        if self.at is None:
            if self.think and not self.first:
                await asyncio.sleep(self.think)
            self.first = False
            return None
        delay = self.at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        due, self.at = self.at, self.at + self.gap
        return due


class Client:
    TIMEOUT = 5.0

    def __init__(self, args, stats, names, rng):
        self.port = args.base_port
        self.stats = stats
        self.names = names
        self.rng = rng
        self.stop = False
        self.think = args.think / 1000.0
        self.rate = args.rate
        self.nonce = 0

    def next_nonce(self, tag):
        self.nonce += 1
        return "%s%d" % (tag, self.nonce)

    async def request(self, conn, kind, method, target, body=b"", due=None):
        """One HTTP request on conn, verified. Returns the response headers, or None after an
        error (counted; conn then closed unless the answer was a clean error status). `due`: when
        a paced request was due (its wait is counted from then as well)."""
        st = self.stats
        st.requests[kind] = st.requests.get(kind, 0) + 1
        t0 = time.monotonic()
        trel = st.rel()
        try:
            status, hdrs, rbody = await asyncio.wait_for(
                self._exchange(conn, method, target, body), self.TIMEOUT)
        except asyncio.TimeoutError:
            conn.close()
            st.error("timeout", "%s %s" % (method, target[:60]))
            return None
        except Failed as e:
            if e.kind == "closed_early" and conn.served:
                st.closed_early_reused += 1
            conn.close()
            st.error(e.kind, "%s %s: %s" % (method, target[:60], e.detail),
                     self.died_under(method, target, trel))
            if e.kind.startswith("connect"):
                await asyncio.sleep(0.05)
            return None
        dt = time.monotonic() - t0
        st.lat_all.add(dt)
        conn.served += 1
        if hdrs.get("connection", "").lower() == "close":
            conn.close()
        if status != 200:
            k = {502: "s502", 503: "s503", 504: "s504"}.get(status, "other_status")
            st.error(k, "%s %s -> %d" % (method, target[:60], status),
                     status == 502 and self.died_under(method, target, trel))
            return None
        if not self.verify(method, target, body, hdrs, rbody):
            conn.close()
            return None
        st.ok[kind] = st.ok.get(kind, 0) + 1
        st.lat_ok.add(dt)
        hdrs["_t0"], hdrs["_t1"] = trel, st.rel()
        if st.in_fault(trel):
            st.lat_ok_fault.add(dt)
            st.lat_kind.setdefault(kind, Hist()).add(dt)
        if due is not None and st.in_fault(due - st.t0):
            st.lat_due_fault.add(time.monotonic() - due)
        return hdrs

    async def _exchange(self, conn, method, target, body):
        await conn.ensure()
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: wtgate-chaos\r\n" % (
            method, target, self.port)
        if method == "POST":
            head += "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n" % len(body)
        try:
            conn.w.write(head.encode() + b"\r\n" + body)
            await conn.w.drain()
        except ConnectionError as e:
            raise Failed("closed_early", "while sending: %s" % e)
        return await read_response(conn.r, method)

    def verify(self, method, target, body, hdrs, rbody):
        st = self.stats
        nonce = query_params(target).get("n", "")
        if hdrs.get("x-nonce") != nonce:
            st.error("bad_response", "answer for nonce %r, asked %r" % (hdrs.get("x-nonce"), nonce))
            st.corrupt_events += 1
            st.corrupt_bytes += max(len(rbody), len(body))
            return False
        if method == "POST":
            if (hdrs.get("x-body-sha256") != hashlib.sha256(body).hexdigest()
                    or hdrs.get("x-body-length") != str(len(body))):
                st.error("bad_response", "POST checksum mismatch")
                st.corrupt_events += 1
                st.corrupt_bytes += len(body)  # a mismatch counts the whole body
                return False
            return True
        want = pattern(nonce, int(query_params(target).get("size", "64")))
        if rbody != want:
            bad = sum(a != b for a, b in zip(rbody, want)) + abs(len(rbody) - len(want))
            st.error("bad_response", "GET body differs in %d bytes" % bad)
            st.corrupt_events += 1
            st.corrupt_bytes += bad
            return False
        return True

    def died_under(self, method, target, trel):
        """Whether a failed POST's server was killed while it was in flight: its body may have
        been acted on, so no proxy may send it again elsewhere."""
        owner = owner_of(query_params(target).get("wtd", ""), self.names)
        return method == "POST" and self.stats.owner_state(owner, trel, self.stats.rel()) == "dead"

    def check_owner(self, wtd, hdrs):
        """Counts a request answered by a server other than its session's owner, by what the owner
        was meanwhile (dead, frozen or alive); returns the session to use from now on (the new
        one the other server started, as a browser would)."""
        served, session = hdrs.get("x-backend"), hdrs.get("x-session") or wtd
        owner = owner_of(wtd, self.names)
        if served != owner:
            self.stats.off_owner += 1
            self.stats.moved += 1
            self.stats.moved_by[self.stats.owner_state(owner, hdrs["_t0"], hdrs["_t1"])] += 1
        if session != wtd:
            self.stats.lost += 1
            born = self.stats.born.pop(wtd, 0.0)
            if not self.stats.killed_since(owner, born, hdrs["_t1"]):
                self.stats.lost_avoidable += 1
            self.stats.born[session] = hdrs["_t1"]
        return session

    async def new_session(self, conn):
        while not self.stop:
            n = self.next_nonce("s")
            hdrs = await self.request(conn, "get_new", "GET",
                                      "/app?n=%s&size=%d" % (n, self.rng.randint(64, 4096)))
            if hdrs and hdrs.get("x-session"):
                self.stats.sessions_started += 1
                self.stats.born[hdrs["x-session"]] = hdrs["_t1"]
                return hdrs["x-session"]
            await asyncio.sleep(0.01)
        return None

    def pace(self):
        return Pace(self.think, self.rate, self.rng)

    # --- workers ---------------------------------------------------------------------------

    async def sessionless(self):
        conn, pace = Conn(self.port), self.pace()
        try:
            while not self.stop:
                due = await pace.next()
                n = self.next_nonce("g")
                hdrs = await self.request(conn, "get_new", "GET",
                                          "/app?n=%s&size=%d" % (n, self.rng.randint(64, 4096)),
                                          due=due)
                if hdrs:
                    self.stats.sessions_started += 1
        finally:
            conn.close()

    async def sessions(self, count=8):
        conn = Conn(self.port)
        try:
            ids = []
            while len(ids) < count and not self.stop:
                s = await self.new_session(conn)
                if s:
                    ids.append(s)
            pace = self.pace()
            while not self.stop:
                due = await pace.next()
                i = self.rng.randrange(len(ids))
                n = self.next_nonce("k")
                target = "/app?wtd=%s&request=style&n=%s&size=%d" % (
                    ids[i], n, self.rng.randint(64, 4096))
                hdrs = await self.request(conn, "get_session", "GET", target, due=due)
                if hdrs:
                    ids[i] = self.check_owner(ids[i], hdrs)
        finally:
            conn.close()

    async def posts(self, size=65536):
        conn = Conn(self.port)
        try:
            wtd = await self.new_session(conn)
            pace = self.pace()
            while not self.stop:
                due = await pace.next()
                n = self.next_nonce("p")
                hdrs = await self.request(conn, "post", "POST", "/app?wtd=%s&n=%s" % (wtd, n),
                                          os.urandom(size), due=due)
                if hdrs:
                    wtd = self.check_owner(wtd, hdrs)
        finally:
            conn.close()

    async def websocket(self, interval=0.02):
        conn = Conn(self.port)
        try:
            wtd = await self.new_session(conn)
            conn.close()
            while not self.stop and wtd:
                wtd = await self.ws_session(conn, wtd, interval)
                conn.close()
        finally:
            conn.close()

    async def ws_session(self, conn, wtd, interval):
        """One WebSocket: upgrade, then echo random messages until it closes or the run ends."""
        st = self.stats
        key = base64.b64encode(os.urandom(16)).decode()
        n = self.next_nonce("w")
        target = "/app?wtd=%s&request=ws&n=%s" % (wtd, n)
        st.requests["ws_upgrade"] = st.requests.get("ws_upgrade", 0) + 1
        trel = st.rel()
        try:
            status, hdrs = await asyncio.wait_for(self._upgrade(conn, target, key), self.TIMEOUT)
        except asyncio.TimeoutError:
            st.error("timeout", "upgrade")
            return wtd
        except Failed as e:
            st.error(e.kind, "upgrade: %s" % e.detail)
            await asyncio.sleep(0.05)
            return wtd
        if status != 101:
            st.error({502: "s502", 503: "s503", 504: "s504"}.get(status, "other_status"),
                     "upgrade -> %d" % status)
            await asyncio.sleep(0.01)
            return wtd
        if hdrs.get("sec-websocket-accept") != ws_accept(key) or hdrs.get("x-nonce") != n:
            st.error("bad_response", "upgrade answer not ours")
            return wtd
        st.ok["ws_upgrade"] = st.ok.get("ws_upgrade", 0) + 1
        st.ws_opened += 1
        hdrs["_t0"], hdrs["_t1"] = trel, st.rel()
        wtd = self.check_owner(wtd, hdrs)
        while not self.stop:
            msg = os.urandom(self.rng.choice((16, 125, 1000, 4096, 16384)))
            t0 = time.monotonic()
            try:
                conn.w.write(ws_frame(2, msg, True))
                await conn.w.drain()
                op, echo = await asyncio.wait_for(ws_read_frame(conn.r), self.TIMEOUT)
            except asyncio.TimeoutError:
                st.error("ws_timeout")
                return wtd
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                owner = owner_of(wtd, self.names)
                st.error("ws_closed", str(e),
                         st.owner_state(owner, t0 - st.t0, st.rel()) == "dead")
                return wtd
            if op != 2 or echo != msg:
                bad = sum(a != b for a, b in zip(echo, msg)) + abs(len(echo) - len(msg))
                st.error("ws_bad_echo", "opcode %d, %d bytes differ" % (op, bad))
                st.corrupt_events += 1
                st.corrupt_bytes += bad
                return wtd
            st.ws_messages += 1
            st.ws_lat.add(time.monotonic() - t0)
            await asyncio.sleep(interval)
        try:
            conn.w.write(ws_frame(8, b"\x03\xe8", True))
            await conn.w.drain()
        except ConnectionError:
            pass
        return wtd

    async def _upgrade(self, conn, target, key):
        await conn.ensure()
        try:
            conn.w.write(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n" % (target, self.port, key)).encode())
            await conn.w.drain()
        except ConnectionError as e:
            raise Failed("closed_early", str(e))
        status, hdrs, _ = await read_response(conn.r, "GET")
        return status, hdrs


# --------------------------------------------------------------------------------------------
# Scenarios: the fault schedule
# --------------------------------------------------------------------------------------------


def schedule(scenario, seed, duration, names):
    """[(t, action, backend)] sorted, and the fault windows [(start, end)]. Depends only on the
    seed, the duration and the names: the same for every proxy."""
    rng = random.Random(seed)
    ev = []
    win = []
    if scenario == "rolling":
        # wt1 drained for its upgrade; then wt2 crashes and is back 1 s later.
        ev = [(1.0, "drain", names[0]), (2.0, "kill", names[1]), (3.0, "restart", names[1])]
        win = [(1.0, duration)]
        return sorted(ev), win
    if scenario in ("calm", "reloads"):
        # The control: mixed's clients with no backend fault (reloads: only wtgate's SIGHUPs).
        t = rng.uniform(4.0, 6.0)
        while scenario == "reloads" and t < duration:
            ev.append((round(t, 2), "reload", "-"))
            t += rng.uniform(4.0, 6.0)
        return ev, [(0.0, duration)]
    t = 4.0
    while t < duration:  # every 4 s one backend killed, restarted 2 s later
        b = rng.choice(names)
        ev += [(t, "kill", b), (t + 2.0, "restart", b)]
        win.append((t, t + 2.0))
        t += 4.0
    t = 3.0
    while t < duration:  # every 3 s one drained for 1.5 s
        b = rng.choice(names)
        ev += [(t, "drain", b), (t + 1.5, "ready", b)]
        win.append((t, t + 1.5))
        t += 3.0
    stops = []
    for _ in range(max(1, int(duration / 5))):  # SIGSTOP ~1.5 s at random, never overlapping
        for _try in range(20):
            a = round(rng.uniform(1.0, duration - 2.0), 2)
            d = round(rng.uniform(1.2, 1.8), 2)
            b = rng.choice(names)
            if all(not (a < e + 0.2 and s < a + d + 0.2) for s, e, bb in stops if bb == b):
                stops.append((a, a + d, b))
                break
    for a, e, b in stops:
        ev += [(a, "stop", b), (e, "cont", b)]
        win.append((a, e))
    t = rng.uniform(4.0, 6.0)
    while t < duration:  # SIGHUP to wtgate every ~5 s
        ev.append((round(t, 2), "reload", "-"))
        t += rng.uniform(4.0, 6.0)
    return sorted(ev, key=lambda e: (e[0], e[1])), win


# Results that follow from the schedule itself (the same for every proxy), not failures.
BENIGN = ("already dead", "alive, not restarted", "dead, not stopped", "not stopped or dead")


async def mark_up(backends, b, stats):
    """A restarted backend is dead until its port is open again."""
    await wait_port(backends.port[b], limit=10.0)
    stats.down_to(b, "dead")


async def run_faults(events, proxy, backends, stats, log):
    stopped = {}  # backend -> Popen it stopped
    up = []  # the restarted backends' port waits
    for t, action, b in events:
        delay = t - stats.rel()
        if delay > 0:
            await asyncio.sleep(delay)
        at = round(stats.rel(), 3)
        res = "ok"
        if action == "kill":
            res = "ok" if backends.signal(b, signal.SIGKILL) else "already dead"
            if res == "ok":
                stats.down_to(b, "frozen")
                stats.down_from(b, "dead")
        elif action == "restart":
            if backends.alive(b):
                res = "alive, not restarted"
            else:
                backends.start(b)
                up.append(asyncio.ensure_future(mark_up(backends, b, stats)))
        elif action == "stop":
            if backends.alive(b):
                backends.signal(b, signal.SIGSTOP)
                stopped[b] = backends.proc[b]
                stats.down_from(b, "frozen")
            else:
                res = "dead, not stopped"
        elif action == "cont":
            p = stopped.pop(b, None)
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                stats.down_to(b, "frozen")
            else:
                res = "not stopped or dead"
        elif action in ("drain", "ready"):
            res = await proxy.admin_state(b, action)
        elif action == "reload":
            res = await proxy.reload()
        failed = not (res == "ok" or res.startswith("skipped") or res in BENIGN)
        if failed:
            print("chaos: fault %s %s at %.2f s failed: %s" % (action, b, at, res), file=sys.stderr)
        log.append({"t": t, "at": at, "action": action, "backend": b, "result": res,
                    "failed": failed})
    for u in up:
        await u


async def settle_fds(proxy, baseline, limit):
    """Waits up to `limit` s for the proxy's open descriptors to be back to the baseline."""
    t0 = time.monotonic()
    series = []
    while True:
        n = open_fds(proxy.proc.pid)
        series.append((round(time.monotonic() - t0, 1), n))
        if n is None or n <= baseline or time.monotonic() - t0 >= limit:
            return n, round(time.monotonic() - t0, 1), series
        await asyncio.sleep(0.5)


async def probe(port):
    """One GET through the proxy after the run: its status, or what went wrong."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        w.write(b"GET /app?n=probe&size=8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await w.drain()
        status, _, _ = await asyncio.wait_for(read_response(r, "GET"), 5)
        w.close()
        return status
    except (OSError, asyncio.TimeoutError, Failed) as e:
        return "error: %s" % (getattr(e, "kind", None) or e)


async def run_main(args):
    names = ["wt%d" % (i + 1) for i in range(args.backends)]
    workdir = args.workdir
    os.makedirs(workdir, exist_ok=True)
    backends = Backends(names, args.base_port, cpu_list(args.load_cpus), workdir)
    proxy = (Wtgate if args.proxy == "wtgate" else Haproxy)(args, backends, workdir)
    events, windows = schedule(args.scenario, args.seed, args.duration, names)

    for n in names:
        backends.start(n)
    for n in names:
        if not await wait_port(backends.port[n]):
            raise SystemExit("backend %s did not start (see %s)" % (n, workdir))
    proxy.start()
    if not await wait_port(proxy.port):
        raise SystemExit("%s did not start (see %s)" % (proxy.name, proxy.log))
    # The baseline: the fewest descriptors over 1 s after the start (a check may hold one).
    fds_start = None
    for _ in range(5):
        await asyncio.sleep(0.2)
        n = open_fds(proxy.proc.pid)
        fds_start = n if fds_start is None or (n is not None and n < fds_start) else fds_start

    stats = Stats(windows)
    client = Client(args, stats, names, random.Random(args.seed * 7919 + 1))
    if args.scenario == "rolling":
        workers = [client.sessionless() for _ in range(args.clients)]
    else:
        c = args.clients
        workers = ([client.sessionless() for _ in range(c)] + [client.sessions() for _ in range(c)]
                   + [client.posts() for _ in range(max(1, c // 2))]
                   + [client.websocket() for _ in range(max(1, c // 2))])
    tasks = [asyncio.ensure_future(w) for w in workers]
    fault_log = []
    faults = asyncio.ensure_future(run_faults(events, proxy, backends, stats, fault_log))
    await asyncio.sleep(args.duration)
    client.stop = True
    done, pending = await asyncio.wait(tasks, timeout=Client.TIMEOUT + 1)
    for t in pending:
        t.cancel()
    for t in done:
        if t.exception():
            print("chaos: a client worker failed: %r" % t.exception(), file=sys.stderr)
    try:
        await asyncio.wait_for(faults, 10)
    except asyncio.TimeoutError:
        pass
    elapsed = stats.rel()
    # Sessions the clients still hold whose server was killed since they began: lost as well,
    # found out at their next request (a closed loop held up by a retry may not get to it).
    lost_at_end = sum(1 for sid, born in stats.born.items()
                      if stats.killed_since(owner_of(sid, names), born, elapsed))

    # Everything back: running, not stopped, ready. Then is the proxy up, and its descriptors?
    for n in names:
        if backends.alive(n):
            backends.signal(n, signal.SIGCONT)
        else:
            backends.start(n)
        await proxy.admin_state(n, "ready")
    await asyncio.sleep(0.2)
    alive = proxy.proc.poll() is None
    status = await probe(proxy.port)
    fds_end, settle_s, series = await settle_fds(proxy, fds_start, proxy.pool_idle + 6)

    out = {
        "proxy": proxy.name, "scenario": args.scenario, "seed": args.seed, "round": args.round,
        "duration_s": args.duration, "elapsed_s": round(elapsed, 2), "backends": names,
        "clients": args.clients,
        "requests": stats.requests, "ok": stats.ok, "errors": stats.errors,
        "error_samples": stats.samples, "error_spans": stats.spans, "sessions_moved": stats.moved,
        "sessions_moved_by_owner": stats.moved_by, "sessions_lost": stats.lost,
        "sessions_lost_avoidable": stats.lost_avoidable, "sessions_lost_at_end": lost_at_end,
        "requests_off_owner": stats.off_owner, "closed_early_reused": stats.closed_early_reused,
        "errors_server_died": stats.server_died, "sessions_started": stats.sessions_started,
        "corrupted_bytes": stats.corrupt_bytes, "corrupted_events": stats.corrupt_events,
        "ws_messages": stats.ws_messages, "ws_opened": stats.ws_opened,
        "lat_ok": stats.lat_ok.b, "lat_ok_fault": stats.lat_ok_fault.b, "lat_all": stats.lat_all.b,
        "ws_lat": stats.ws_lat.b, "lat_due_fault": stats.lat_due_fault.b, "rate": args.rate, "lat_kind_fault": {k: h.b for k, h in stats.lat_kind.items()},
        "faults": fault_log, "fault_windows": windows,
        "proxy_alive_at_end": alive, "probe_status_at_end": status,
        "fds_start": fds_start, "fds_end": fds_end, "fds_settle_s": settle_s, "fds_series": series,
        "pool_idle_s": proxy.pool_idle,
    }
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    errs = sum(stats.errors.values())
    print("chaos: %s %s: %d requests, %d errors, %d moved, %d corrupted bytes, fds %s -> %s"
          % (proxy.name, args.scenario, sum(stats.requests.values()), errs, stats.moved,
             stats.corrupt_bytes, fds_start, fds_end), file=sys.stderr)


def run_entry(args):
    def bye(*_):
        raise SystemExit(130)
    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)
    try:
        asyncio.run(run_main(args))
    finally:
        kill_all()


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt_ms(v):
    return "–" if v is None else ("%.1f" % v if v < 100 else "%.0f" % v)


def report(files):
    runs = [json.load(open(f)) for f in files]
    proxies = []
    for r in runs:
        if r["proxy"] not in proxies:
            proxies.append(r["proxy"])
    agg = {}
    for p in proxies:
        rs = [r for r in runs if r["proxy"] == p]
        a = {"rounds": len(rs), "runs": sorted(rs, key=lambda r: r["round"])}
        for key in ("sessions_moved", "sessions_lost", "sessions_lost_avoidable", "sessions_lost_at_end", "requests_off_owner", "corrupted_bytes", "corrupted_events",
                    "ws_messages", "ws_opened", "elapsed_s", "closed_early_reused", "errors_server_died"):
            a[key] = sum(r.get(key, 0) for r in rs)
        a["faults"] = sum(1 for r in rs for f in r["faults"] if f["result"] == "ok")
        a["faults_failed"] = sum(1 for r in rs for f in r["faults"] if f.get("failed"))
        a["requests"] = sum(sum(r["requests"].values()) for r in rs)
        a["http"] = sum(v for r in rs for k, v in r["requests"].items() if k != "ws_upgrade")
        a["errors"] = {k: sum(r["errors"].get(k, 0) for r in rs) for k, _ in ERROR_KINDS}
        for h in ("lat_ok", "lat_ok_fault", "lat_all", "ws_lat", "lat_due_fault"):
            m = Hist()
            for r in rs:
                m.merge(Hist(r.get(h, {})))
            a[h] = m
        a["moved_by"] = {k: sum(r.get("sessions_moved_by_owner", {}).get(k, 0) for r in rs)
                         for k in ("dead", "frozen", "alive")}
        a["kinds"] = {}
        for r in rs:
            for k, b in r.get("lat_kind_fault", {}).items():
                a["kinds"].setdefault(k, Hist()).merge(Hist(b))
        a["alive"] = all(r["proxy_alive_at_end"] and r["probe_status_at_end"] == 200 for r in rs)
        a["probe"] = ", ".join(str(r["probe_status_at_end"]) for r in rs)
        a["fds"] = ", ".join("%s → %s (%.1f s)" % (r["fds_start"], "gone" if r["fds_end"] is None
                                                    else r["fds_end"], r["fds_settle_s"])
                             for r in rs)
        a["span"] = ", ".join(
            "%.2f–%.2f s" % (min(v[0] for v in r["error_spans"].values()),
                             max(v[1] for v in r["error_spans"].values()))
            if r["error_spans"] else "–" for r in rs)
        a["fds_ok"] = all(r["fds_end"] is not None and r["fds_end"] <= r["fds_start"] for r in rs)
        agg[p] = a
    label = {"wtgate": "wtgate", "haproxy": "HAProxy"}
    rows = []

    def row(name, f):
        rows.append("| %s | %s |" % (name, " | ".join(str(f(agg[p])) for p in proxies)))

    row("faults applied (failed)", lambda a: "%d (%d)" % (a["faults"], a["faults_failed"]))
    row("requests (HTTP + upgrades)", lambda a: a["requests"])
    row("HTTP requests/s", lambda a: "%.0f" % (a["http"] / max(a["elapsed_s"], 0.001)))
    row("**client errors**", lambda a: "**%d**" % sum(a["errors"].values()))
    row("· their server killed under them (a WebSocket cut, a POST in flight): no proxy could answer",
        lambda a: a["errors_server_died"])
    row("· **others: a proxy could have answered**",
        lambda a: "**%d**" % (sum(a["errors"].values()) - a["errors_server_died"]))
    for k, lab in ERROR_KINDS:
        if not k.startswith("ws_") or runs[0]["scenario"] == "mixed" or any(agg[p]["errors"][k] for p in proxies):
            row("· " + lab, lambda a, k=k: a["errors"][k])
        if k == "closed_early":
            row("&nbsp;&nbsp;of which on a reused connection (a browser resends those)",
                lambda a: a["closed_early_reused"])
    row("first – last client error", lambda a: a["span"])
    if runs[0]["scenario"] == "mixed":
        row("**sessions lost** (their Wt server died, or another started a new one)",
            lambda a: "**%d**" % (a["sessions_lost"] + a["sessions_lost_at_end"]))
        row("· found by a request (a new session started for it)", lambda a: a["sessions_lost"])
        row("· not asked for again before the end, their server killed meanwhile",
            lambda a: a["sessions_lost_at_end"])
        row("· **lost though their server was never killed while they lived** (a proxy could have kept them)",
            lambda a: "**%d**" % a["sessions_lost_avoidable"])
        row("· moved (answered by a server not its owner)",
            lambda a: "%d" % a["sessions_moved"])
        for k, lab in (("dead", "killed, not listening again yet"), ("frozen", "frozen (SIGSTOP)"),
                       ("alive", "**alive: it could have answered**")):
            row("&nbsp;&nbsp;while its owner was %s" % lab, lambda a, k=k: a["moved_by"][k])
        row("WebSocket messages echoed / opened", lambda a: "%d / %d" % (a["ws_messages"], a["ws_opened"]))
    row("**bytes corrupted** (answers)", lambda a: "**%d** (%d)" % (a["corrupted_bytes"], a["corrupted_events"]))
    row("HTTP latency p50 / p99 / p99.9, ms (200s)",
        lambda a: "%s / %s / %s" % tuple(fmt_ms(a["lat_ok"].pct(q)) for q in (0.5, 0.99, 0.999)))
    row("**p99 during faults**, ms (200s)", lambda a: "**%s**" % fmt_ms(a["lat_ok_fault"].pct(0.99)))
    if any(r.get("rate") for r in runs):
        row("**p99 during faults, from when due** (paced: a stall counts for each request it held back), ms",
            lambda a: "**%s**" % fmt_ms(a["lat_due_fault"].pct(0.99)))
    if len(runs) > len(proxies):
        row("· each round (the machine's noise)",
            lambda a: ", ".join(fmt_ms(Hist(r["lat_ok_fault"]).pct(0.99)) for r in a["runs"]))
    for k, lab in (("get_new", "session-less GET"), ("get_session", "session GET"),
                   ("post", "64 KiB POST"), ("ws_upgrade", "WebSocket upgrade")):
        if any(k in agg[p]["kinds"] for p in proxies):
            row("· p99 during faults, %s" % lab,
                lambda a, k=k: fmt_ms(a["kinds"][k].pct(0.99)) if k in a["kinds"] else "–")
    row("HTTP latency max, ms (200s)", lambda a: fmt_ms(a["lat_ok"].pct(1.0)))
    row("200s slower than 100 ms / 1 s", lambda a: "%d / %d" % (a["lat_ok"].over(100), a["lat_ok"].over(1000)))
    row("p99, ms (every answer, errors too)", lambda a: fmt_ms(a["lat_all"].pct(0.99)))
    if runs[0]["scenario"] == "mixed":
        row("WebSocket echo p99, ms", lambda a: fmt_ms(a["ws_lat"].pct(0.99)))
    row("up at the end (GET → status)", lambda a: ("yes" if a["alive"] else "**no**") + " (%s)" % a["probe"])
    row("descriptors: start → after pool idle", lambda a: a["fds"] + ("" if a["fds_ok"] else " **not back**"))
    head = "| | %s |\n|---|%s" % (" | ".join(label.get(p, p) for p in proxies), "---:|" * len(proxies))
    print(head)
    print("\n".join(rows))


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backend")
    b.add_argument("--prefix", required=True)
    b.add_argument("--port", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--proxy", choices=("wtgate", "haproxy"), required=True)
    r.add_argument("--scenario", choices=("mixed", "rolling", "calm", "reloads"), default="mixed")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--round", type=int, default=1)
    r.add_argument("--duration", type=float, default=None)
    r.add_argument("--backends", type=int, default=None)
    r.add_argument("--clients", type=int, default=4,
                   help="mixed: this many session-less and session GET clients, half as many "
                        "POST and WebSocket clients; rolling: keep-alive GET clients")
    r.add_argument("--think", type=float, default=0.0, help="ms between an HTTP client's requests")
    r.add_argument("--rate", type=float, default=0.0,
                   help="requests/s of each HTTP client on a fixed schedule (0: closed loop, --think)")
    r.add_argument("--base-port", type=int, default=19400)
    r.add_argument("--proxy-cpus", default="")
    r.add_argument("--load-cpus", default="")
    r.add_argument("--wtgate", default="target/release/wtgate")
    r.add_argument("--haproxy", default="haproxy")
    r.add_argument("--haproxy-drain", choices=("lb", "server"), default="lb")
    r.add_argument("--workdir", required=True)
    r.add_argument("--json", required=True)
    p = sub.add_parser("report")
    p.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.cmd == "backend":
        backend_main(args)
    elif args.cmd == "run":
        if args.duration is None:
            args.duration = 8.0 if args.scenario == "rolling" else 30.0
        if args.backends is None:
            args.backends = 2 if args.scenario == "rolling" else 3
        run_entry(args)
    else:
        report(args.files)


if __name__ == "__main__":
    main()
