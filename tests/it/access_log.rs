//! The access log (`--access-log`): one parseable line per request and per tunnel with the
//! right fields, none for a connection that sent nothing, no query secret in it; and a log that
//! cannot keep up (a pipe nobody reads, a full disk) drops lines and counts them, never requests.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use wtgate::health::Admin;
use wtgate::metrics::Stats;
use wtgate_demo::ws::{OP_CLOSE, OP_TEXT};

use crate::common::*;

/// One line, split into its fields (README.md "Access log").
#[derive(Debug)]
struct Logged {
    time: String,
    client: String,
    shard: String,
    kind: String,
    backend: String,
    route: String,
    /// TC, TR, TT in µs; `None` for `-`.
    timings: [Option<u64>; 3],
    status: String,
    bytes_in: u64,
    bytes_out: u64,
    error: String,
    request: String,
}

fn parse(line: &str) -> Logged {
    let (fields, request) = line
        .split_once(" \"")
        .unwrap_or_else(|| panic!("no quoted request in {line:?}"));
    let request = request.strip_suffix('"').expect(line).to_string();
    let f: Vec<&str> = fields.split(' ').collect();
    assert_eq!(f.len(), 13, "13 fields before the request: {line:?}");
    let timing = |s: &str| (s != "-").then(|| s.parse().expect(line));
    Logged {
        time: f[0].into(),
        client: f[1].into(),
        shard: f[2].into(),
        kind: f[3].into(),
        backend: f[4].into(),
        route: f[5].into(),
        timings: [timing(f[6]), timing(f[7]), timing(f[8])],
        status: f[9].into(),
        bytes_in: f[10].parse().expect(line),
        bytes_out: f[11].parse().expect(line),
        error: f[12].into(),
        request,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of this century.
fn assert_time(t: &str) {
    let b = t.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
    assert!(
        b.len() == 24 && t.starts_with("20") && t.ends_with('Z'),
        "{t}"
    );
    assert!(digits.iter().all(|&i| b[i].is_ascii_digit()), "{t}");
    assert_eq!([b[4], b[7], b[10], b[13], b[16], b[19]], *b"--T::.", "{t}");
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("wtgate-{}-{name}", std::process::id()))
}

/// Waits until the log holds every line the engine made, and exactly those; returns them.
fn logged_lines(path: &PathBuf, engine: &wtgate::engine::Engine, want: usize) -> Vec<Logged> {
    let text = eventually("the access log to hold every line", || {
        let made = engine.stats().access_log_lines as usize;
        let text = std::fs::read_to_string(path).ok()?;
        (made == want && text.lines().count() == want).then_some(text)
    });
    text.lines().map(parse).collect()
}

fn dropped(s: &Stats, reason: &str) -> u64 {
    let found = s.access_log_dropped.iter().find(|(r, _)| *r == reason);
    found.map(|(_, n)| *n).expect(reason)
}

/// A request on a connection of its own: the client's address and the response.
fn request(proxy: SocketAddr, raw: &[u8]) -> (SocketAddr, Response) {
    let mut w = Wire::connect(proxy);
    w.write_all(raw).unwrap();
    let client = w.stream.local_addr().unwrap();
    (client, w.read_response(false).unwrap())
}

/// `raw` on a connection of its own, read to EOF (the proxy closes after answering it): the
/// client's address and every byte it got.
fn request_to_eof(proxy: SocketAddr, raw: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(raw).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    (s.local_addr().unwrap(), answer)
}

/// What the client of a WebSocket tunnel sent and got after the 101, in bytes.
fn websocket_session(proxy: SocketAddr, target: &str) -> (SocketAddr, usize, usize) {
    let (mut w, r) = ws_connect(proxy, target);
    assert_eq!(r.backend(), "wt2");
    let client = w.stream.local_addr().unwrap();
    let hello = client_frame(OP_TEXT, b"hello", [1, 2, 3, 4]);
    w.write_all(&hello).unwrap();
    let echo = ws_recv(&mut w).unwrap().expect("the echo");
    assert_eq!((echo.1, echo.2.as_slice()), (OP_TEXT, &b"hello"[..]));
    let close = client_frame(OP_CLOSE, &1000u16.to_be_bytes(), [5, 6, 7, 8]);
    w.write_all(&close).unwrap();
    w.stream.shutdown(Shutdown::Write).unwrap();
    // Every frame here is unmasked and shorter than 126 bytes: 2 header bytes.
    let mut got = 2 + echo.2.len();
    while let Some((_, _, payload)) = ws_recv(&mut w).unwrap() {
        got += 2 + payload.len();
    }
    (client, hello.len() + close.len(), got)
}

/// What one line of the mixed run must say.
#[derive(Clone)]
struct Expected {
    client: SocketAddr,
    kind: &'static str,
    backend: String,
    route: &'static str,
    status: &'static str,
    bytes_in: Option<usize>,
    bytes_out: Option<usize>,
    error: &'static str,
    request: String,
}

impl Expected {
    /// A request answered 200 by `backend`, `raw` as sent.
    fn ok(
        client: SocketAddr,
        backend: &str,
        route: &'static str,
        raw: &[u8],
        line: String,
    ) -> Expected {
        Expected {
            client,
            kind: "http",
            backend: backend.to_string(),
            route,
            status: "200",
            bytes_in: Some(raw.len()),
            bytes_out: None,
            error: "-",
            request: line,
        }
    }

    fn check(&self, got: &Logged) {
        assert_time(&got.time);
        let want = (
            self.client.to_string(),
            "0",
            self.kind,
            self.backend.as_str(),
            self.route,
            self.status,
            self.error,
            self.request.as_str(),
        );
        let have = (
            got.client.clone(),
            got.shard.as_str(),
            got.kind.as_str(),
            got.backend.as_str(),
            got.route.as_str(),
            got.status.as_str(),
            got.error.as_str(),
            got.request.as_str(),
        );
        assert_eq!(have, want, "{got:?}");
        if let Some(n) = self.bytes_in {
            assert_eq!(got.bytes_in, n as u64, "{got:?}");
        }
        if let Some(n) = self.bytes_out {
            assert_eq!(got.bytes_out, n as u64, "{got:?}");
        }
        self.check_timings(got);
    }

    /// A backend's answer has every timing, in order; an answer of our own only the total; a
    /// tunnel only its duration.
    fn check_timings(&self, got: &Logged) {
        let [tc, tr, tt] = got.timings;
        assert!(tt.is_some(), "{got:?}");
        match (self.kind, self.backend.as_str()) {
            ("http", "-") | ("tunnel", _) => assert_eq!((tc, tr), (None, None), "{got:?}"),
            _ => {
                let (tc, tr, tt) = (tc.unwrap(), tr.unwrap(), tt.unwrap());
                assert!(tc <= tr && tr <= tt, "{got:?}");
            }
        }
    }
}

/// GETs spread by round-robin and by session, a POST with a body, a request redispatched from a
/// backend in maintenance, a 503 with every backend there, a WebSocket tunnel, a refused request
/// and a connection that sent nothing: one line each (two for the WebSocket: its 101 and its
/// tunnel), none for the silent connection, every field right, no secret of the query string.
#[test]
fn a_mixed_run_logs_one_parseable_line_per_request_and_tunnel() {
    let ws = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: false,
    };
    let (b1, b2) = (TestBackend::start("wt1", ws), TestBackend::start("wt2", ws));
    let path = temp_path("mixed.log");
    let _ = std::fs::remove_file(&path);
    let log = path.to_str().unwrap().to_string();
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |c| {
        c.access_log = Some(log);
        // The 503 with both in maintenance comes after this wait for one to come back.
        c.timeouts.queue = Duration::from_millis(100);
    });
    let mut rng = Rng::new(11);
    let (sid1, sid2) = (session_id(&mut rng, "wt1"), session_id(&mut rng, "wt2"));
    let mut want = round_robin_and_affinity(proxy.addr, &sid1);
    want.extend(post_redispatch_and_no_backend(&proxy, &sid1, &sid2));
    want.extend(tunnel_refusal_and_silence(proxy.addr, &sid2));
    let got = logged_lines(&path, proxy.engine(), want.len());
    for (w, g) in want.iter().zip(&got) {
        w.check(g);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("SECRET"),
        "a query secret in the log:\n{text}"
    );
    std::fs::remove_file(&path).unwrap();
}

fn round_robin_and_affinity(proxy: SocketAddr, sid1: &str) -> Vec<Expected> {
    let mut want = Vec::new();
    let mut w = Wire::connect(proxy);
    let client = w.stream.local_addr().unwrap();
    for target in ["/", "/?x=1&token=SECRET1"] {
        w.write_all(&get(target)).unwrap();
        let r = w.read_response(false).unwrap();
        let line = "GET / HTTP/1.1".to_string();
        want.push(Expected::ok(
            client,
            r.backend(),
            "roundrobin",
            &get(target),
            line,
        ));
    }
    assert_ne!(want[0].backend, want[1].backend, "round-robin alternates");
    // Read to EOF, to know exactly the bytes the client got.
    let target = format!("/app?wtd={sid1}&request=style&auth=SECRET2");
    let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (client, answer) = request_to_eof(proxy, raw.as_bytes());
    assert!(answer.starts_with(b"HTTP/1.1 200 "));
    let line = format!("GET /app?wtd={sid1} HTTP/1.1");
    let mut e = Expected::ok(client, "wt1", "affinity", raw.as_bytes(), line);
    e.bytes_out = Some(answer.len());
    want.push(e);
    want
}

fn post_redispatch_and_no_backend(proxy: &Proxy, sid1: &str, sid2: &str) -> Vec<Expected> {
    let mut want = Vec::new();
    let post = get_or_post(&format!("/submit?wtd={sid2}&pw=SECRET3"), &[7u8; 1000]);
    let (client, r) = request(proxy.addr, &post);
    assert_eq!(r.backend(), "wt2");
    let line = format!("POST /submit?wtd={sid2} HTTP/1.1");
    want.push(Expected::ok(client, "wt2", "affinity", &post, line));
    let engine = proxy.engine();
    engine.set_admin("wt1", Admin::Maint).unwrap();
    let raw = get(&format!("/?wtd={sid1}"));
    let (client, r) = request(proxy.addr, &raw);
    assert_eq!(r.backend(), "wt2", "wt1 is in maintenance");
    let line = format!("GET /?wtd={sid1} HTTP/1.1");
    want.push(Expected {
        error: "owner_maint",
        ..Expected::ok(client, "wt2", "redispatch", &raw, line)
    });
    engine.set_admin("wt2", Admin::Maint).unwrap();
    let raw = get(&format!("/none?wtd={sid1}&k=SECRET5"));
    let (client, r) = request(proxy.addr, &raw);
    assert_eq!(r.status, 503);
    let line = format!("GET /none?wtd={sid1} HTTP/1.1");
    want.push(Expected {
        backend: "-".into(),
        status: "503",
        error: "no_backend",
        ..Expected::ok(client, "-", "-", &raw, line)
    });
    for b in ["wt1", "wt2"] {
        engine.set_admin(b, Admin::Ready).unwrap();
    }
    want
}

fn tunnel_refusal_and_silence(proxy: SocketAddr, sid2: &str) -> Vec<Expected> {
    let target = format!("/?wtd={sid2}&request=ws&tok=SECRET4");
    let (client, sent, got) = websocket_session(proxy, &target);
    let line = format!("GET /?wtd={sid2} HTTP/1.1");
    let upgrade = Expected {
        status: "101",
        ..Expected::ok(
            client,
            "wt2",
            "affinity",
            &ws_upgrade_request(&target),
            line,
        )
    };
    let tunnel = Expected {
        kind: "tunnel",
        bytes_in: Some(sent),
        bytes_out: Some(got),
        ..upgrade.clone()
    };
    // A head without Host is refused before routing: a line without a request line.
    let bad = b"GET /?s=SECRET6 HTTP/1.1\r\n\r\n";
    let (client, answer) = request_to_eof(proxy, bad);
    assert!(answer.starts_with(b"HTTP/1.1 400 "));
    let refused = Expected {
        status: "400",
        bytes_out: Some(answer.len()),
        error: "malformed",
        ..Expected::ok(client, "-", "-", bad, "-".into())
    };
    // Sends nothing: no line (dontlognull).
    drop(TcpStream::connect(proxy).unwrap());
    vec![upgrade, tunnel, refused]
}

/// A GET whose pooled backend connection closes unanswered is sent again: its line says
/// `resend`, with the answer of the try that worked.
#[test]
fn a_resent_request_is_logged_as_resend() {
    let b1 = TestBackend::start("wt1", Behavior::DropSecondRequest);
    let path = temp_path("resend.log");
    let _ = std::fs::remove_file(&path);
    let log = path.to_str().unwrap().to_string();
    let proxy = start_proxy(&[b1.spec()], |c| c.access_log = Some(log));
    // The first leaves its backend connection in the pool; the second goes out on it.
    for n in 1..=2 {
        let (_, r) = request(proxy.addr, &get(&format!("/?n={n}")));
        assert_eq!(r.status, 200);
    }
    let got = logged_lines(&path, proxy.engine(), 2);
    let routes: Vec<_> = got
        .iter()
        .map(|l| (l.route.as_str(), l.status.as_str()))
        .collect();
    assert_eq!(
        routes,
        [("roundrobin", "200"), ("resend", "200")],
        "{got:?}"
    );
    assert_eq!(proxy.engine().stats().backends[0].resends, 1);
    std::fs::remove_file(&path).unwrap();
}

/// A response that bytes follow in the same write reaches its client whole; its line says
/// `stray_bytes`, and the connection is closed and counted, not pooled.
#[test]
fn a_response_followed_by_stray_bytes_is_logged_as_such() {
    const TWO: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let b1 = TestBackend::start("wt1", Behavior::Raw(TWO));
    let path = temp_path("stray.log");
    let _ = std::fs::remove_file(&path);
    let log = path.to_str().unwrap().to_string();
    let proxy = start_proxy(&[b1.spec()], |c| c.access_log = Some(log));
    let (_, r) = request(proxy.addr, &get("/?n=1"));
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    let got = logged_lines(&path, proxy.engine(), 1);
    assert_eq!(
        (got[0].status.as_str(), got[0].error.as_str()),
        ("200", "stray_bytes"),
        "{got:?}"
    );
    let stats = proxy.engine().stats();
    let wt1 = stats.backend("wt1").unwrap();
    assert_eq!((wt1.stray_closes, wt1.pooled), (1, 0), "{stats:?}");
    std::fs::remove_file(&path).unwrap();
}

/// The log is a pipe that nobody reads, so the writer blocks for good on a full pipe: requests go
/// on all the same, and the lines that do not fit are dropped and counted.
#[test]
fn a_log_nobody_reads_drops_lines_not_requests() {
    let fifo = temp_path("stuck.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    // Held open and never read: the writer can open the pipe, and then fills it.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let log = fifo.to_str().unwrap().to_string();
    let pair = start_pair(|c| c.access_log = Some(log));
    // 8 KB lines: the pipe (64 KiB) and the writer's queue (about 2 MiB) hold some 270 of them.
    let long = "x".repeat(8000);
    let requests = 1000;
    let mut w = Wire::connect(pair.proxy.addr);
    for n in 0..requests {
        w.write_all(&get(&format!("/{long}?n={n}"))).unwrap();
        let r = w.read_response(false).unwrap();
        assert_eq!(r.status, 200, "request {n}");
    }
    let engine = pair.proxy.engine();
    // A request's line is made just after its answer is out: the last one may still be coming.
    let stats = eventually("every line made, some dropped for a full queue", || {
        let s = engine.stats();
        (dropped(&s, "queue_full") > 0 && s.access_log_lines == requests).then_some(s)
    });
    assert!(dropped(&stats, "queue_full") < requests, "{stats:?}");
    // The writer's pending write now fails (EPIPE), and the writer ends with the engine.
    drop(reader);
    drop(w);
    drop(pair);
    std::fs::remove_file(&fifo).unwrap();
}

/// `wtgate … --access-log LOG` with one backend and, if `admin`, an admin listener; its address.
fn serve(backend: &TestBackend, log: &str, admin: Option<u16>) -> (Serving, SocketAddr) {
    let listen = format!("127.0.0.1:{}", free_port());
    let backend = format!("wt1={}", backend.addr);
    let admin = admin.map(|p| format!("127.0.0.1:{p}"));
    let mut args = vec!["--threads", "1", "--no-pin", "--listen", &listen];
    args.extend(["--backend", &backend, "--access-log", log]);
    if let Some(a) = &admin {
        args.extend(["--admin", a]);
    }
    (Serving::start(&args), listen.parse().unwrap())
}

/// `--access-log -`: the lines go to stdout, and the last ones are written before the exit.
#[test]
fn a_dash_logs_to_stdout() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let (wtgate, addr) = serve(&b, "-", None);
    for n in 0..3 {
        assert_eq!(
            request(addr, &get(&format!("/?n={n}&q=SECRET"))).1.status,
            200
        );
    }
    let (code, out, err) = wtgate.stop();
    assert_eq!(code, Some(0), "{err:?}");
    let lines: Vec<Logged> = out.lines().map(parse).collect();
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        assert_eq!(
            (l.backend.as_str(), l.status.as_str()),
            ("wt1", "200"),
            "{l:?}"
        );
        assert_eq!(l.request, "GET / HTTP/1.1");
    }
}

/// `/metrics` value of the sample `key`, if there is one.
fn sample(admin: SocketAddr, key: &str) -> Option<f64> {
    let raw = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\n\r\n");
    let r = request(admin, raw.as_bytes()).1;
    let body = r.body_str();
    body.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
}

/// A full disk (/dev/full: every write fails with ENOSPC): requests are served, every line is
/// counted as dropped, and stderr says so once, not once per line or per write.
#[test]
fn a_full_disk_drops_lines_counts_them_and_says_so_once() {
    assert!(std::path::Path::new("/dev/full").exists());
    let b = TestBackend::start("wt1", Behavior::Normal);
    let admin_port = free_port();
    let (wtgate, addr) = serve(&b, "/dev/full", Some(admin_port));
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let key = "wtgate_access_log_dropped_lines_total{reason=\"write_error\"}";
    // Two rounds, so that at least two writes fail.
    for round in 1..=2 {
        for n in 0..10 {
            let (_, r) = request(addr, &get(&format!("/?round={round}&n={n}")));
            assert_eq!(r.status, 200);
        }
        let want = f64::from(10 * round);
        eventually("the lost lines counted", || {
            (sample(admin, key) == Some(want)).then_some(())
        });
    }
    let lines = sample(admin, "wtgate_access_log_lines_total");
    assert_eq!(lines, Some(20.0));
    let (code, _, err) = wtgate.stop();
    assert_eq!(code, Some(0), "{err:?}");
    let about_log: Vec<_> = err.iter().filter(|l| l.contains("access log")).collect();
    assert_eq!(about_log.len(), 1, "{err:#?}");
    assert!(
        about_log[0].contains("No space left on device"),
        "{about_log:?}"
    );
}

/// A log that cannot be opened stops the start, naming the file and why.
#[test]
fn an_access_log_that_cannot_be_opened_is_an_error_at_start() {
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--listen",
        &listen,
        "--backend",
        "wt1=127.0.0.1:1",
        "--access-log",
        "/nonexistent-wtgate-dir/access.log",
    ];
    let out = run_wtgate(&args, &[], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let want = "wtgate: --access-log /nonexistent-wtgate-dir/access.log: cannot open it: No such \
                file or directory";
    assert!(text(&out).contains(want), "{}", text(&out));
}

/// After log rotation (the file renamed), `reopen` makes the writer go on in a new file at the
/// configured path; nothing is lost on the way.
#[test]
fn reopen_after_rotation_writes_to_a_new_file() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let (path, rotated) = (temp_path("rotate.log"), temp_path("rotate.log.1"));
    for p in [&path, &rotated] {
        let _ = std::fs::remove_file(p);
    }
    let log = path.to_str().unwrap().to_string();
    let proxy = start_proxy(&[b.spec()], |c| c.access_log = Some(log));
    assert_eq!(request(proxy.addr, &get("/?n=1")).1.status, 200);
    logged_lines(&path, proxy.engine(), 1);
    std::fs::rename(&path, &rotated).unwrap();
    proxy.engine().access_log().expect("the log is on").reopen();
    assert_eq!(request(proxy.addr, &get("/?n=2")).1.status, 200);
    let new = eventually("a line in the new file", || {
        let text = std::fs::read_to_string(&path).ok()?;
        (text.lines().count() == 1).then_some(text)
    });
    assert!(parse(new.trim_end()).request.contains("GET / "), "{new}");
    assert_eq!(proxy.engine().stats().access_log_lines, 2);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
    for p in [&path, &rotated] {
        std::fs::remove_file(p).unwrap();
    }
}

/// logrotate's way with the binary: rename the file, then SIGUSR1 (or SIGHUP, which also
/// reloads): the next lines go to a new file at the configured path, the old one keeps its lines.
#[test]
fn a_signal_reopens_the_log_after_rotation() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    for (n, signal) in ["-USR1", "-HUP"].into_iter().enumerate() {
        let (path, rotated) = (
            temp_path(&format!("signal-{n}.log")),
            temp_path(&format!("signal-{n}.log.1")),
        );
        for p in [&path, &rotated] {
            let _ = std::fs::remove_file(p);
        }
        let (wtgate, addr) = serve(&b, path.to_str().unwrap(), None);
        let lines_in =
            |p: &std::path::Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
        assert_eq!(request(addr, &get("/?before=1")).1.status, 200);
        eventually("the first line written", || {
            (lines_in(&path) == 1).then_some(())
        });
        std::fs::rename(&path, &rotated).unwrap();
        wtgate.signal(signal);
        // The signal is handled on a thread of wtgate's own: a request right after it may still
        // land in the old file. Send until one lands in the new file; none may be lost.
        let mut sent = 1;
        eventually("a line in the new file", || {
            assert_eq!(request(addr, &get("/?after=1")).1.status, 200);
            sent += 1;
            (lines_in(&path) > 0).then_some(())
        });
        eventually("every line in one of the two files", || {
            (lines_in(&path) + lines_in(&rotated) == sent).then_some(())
        });
        let (code, _, err) = wtgate.stop();
        assert_eq!(code, Some(0), "after {signal}: {err:?}");
        for p in [&path, &rotated] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
