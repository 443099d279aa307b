"""What scripts/tls-idle.py and scripts/ws-idle.py share: open connections one after another,
leave them idle, and report the proxy's RSS growth per connection."""
import time


def rss_kib(pids):
    """The sum of VmRSS (KiB) over the processes `pids`."""
    total = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def measure(open_one, n, pids, hold):
    """Opens `n` connections with `open_one(i)` (an OSError counts as an error), holds them idle
    `hold` seconds, and returns the report (the open connections are closed after)."""
    time.sleep(0.5)
    before = rss_kib(pids)
    conns, errors = [], 0
    t0 = time.monotonic()
    for i in range(n):
        try:
            conns.append(open_one(i))
        except OSError:
            errors += 1
    opened = time.monotonic() - t0
    time.sleep(hold)
    after = rss_kib(pids)
    alive = len(conns)
    report = {
        "conns": alive, "errors": errors, "open_s": round(opened, 2),
        "rss_before_kib": before, "rss_after_kib": after,
        "kib_per_conn": round((after - before) / alive, 2) if alive else None,
    }
    for s in conns:
        s.close()
    return report


def read_head(s, what):
    """Reads socket s up to the end of an HTTP head: (the head, the bytes read after it). An end
    before it is an OSError saying "closed before" `what`."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed before " + what)
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest
