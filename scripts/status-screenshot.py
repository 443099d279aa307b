#!/usr/bin/env python3
"""Screenshot of wtgate's status page under live traffic, for docs/status-page.png.

Starts three `wtgate-bench serve` backends, wtgate with an admin listener in front of them, a
steady keep-alive load and a few WebSockets, drains wt3 halfway, keeps the page open in headless
Chromium for a minute (so that the sparklines fill), and saves the page as a PNG.

    python3 scripts/status-screenshot.py [OUT.png]   # needs: cargo build --release, chromium,
                                                     # pip install websocket-client
Loopback only; everything it starts is stopped at the end.
"""
import base64, json, os, subprocess, sys, tempfile, time, urllib.request

import websocket  # websocket-client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs", "status-page.png")
PORT, ADMIN, DEVTOOLS = 18480, 18404, 18922
procs = []


def start(*cmd, **kw):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def wait_http(url, limit=20):
    for _ in range(limit * 10):
        try:
            return urllib.request.urlopen(url, timeout=1).read()
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing answers at {url}")


def main():
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    backends = ""
    for i in (1, 2, 3):
        start(f"{BIN}/wtgate-bench", "serve", "--listen", f"127.0.0.1:{PORT + i}", "--prefix", f"wt{i}")
        backends += f'[[backend]]\nprefix = "wt{i}"\naddress = "127.0.0.1:{PORT + i}"\n'
    cfg.write(f'threads = 1\n[[listen]]\naddress = "127.0.0.1:{PORT}"\n{backends}'
              f'[admin]\nlisten = "127.0.0.1:{ADMIN}"\n')
    cfg.close()
    start(f"{BIN}/wtgate", "--config", cfg.name)
    wait_http(f"http://127.0.0.1:{ADMIN}/stats")
    load = [f"{BIN}/wtgate-bench", "load", "--target", f"127.0.0.1:{PORT}", "--prefixes", "wt1,wt2,wt3",
            "--warmup", "0s", "-d", "75s", "--quiet"]
    start(*load, "-c", "16", "-R", "400")
    start(*load, "--mode", "ws", "-c", "6", "-R", "30")
    profile = tempfile.mkdtemp(prefix="wtgate-shot-")
    start("chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
          f"--remote-debugging-port={DEVTOOLS}", f"--user-data-dir={profile}",
          "--window-size=1280,720", f"http://127.0.0.1:{ADMIN}/")
    pages = json.loads(wait_http(f"http://127.0.0.1:{DEVTOOLS}/json/list"))
    page = next(p for p in pages if p["type"] == "page")
    ws = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True)
    time.sleep(30)
    subprocess.run([f"{BIN}/wtgate", "admin", "--url", f"http://127.0.0.1:{ADMIN}", "drain", "wt3"],
                   check=True, stdout=subprocess.DEVNULL)
    time.sleep(30)
    ws.send(json.dumps({"id": 1, "method": "Page.captureScreenshot", "params": {"format": "png"}}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == 1:
            break
    with open(OUT, "wb") as f:
        f.write(base64.b64decode(msg["result"]["data"]))
    print(f"wrote {OUT}")
    os.unlink(cfg.name)


try:
    main()
finally:
    for p in procs:
        p.kill()
        p.wait()
