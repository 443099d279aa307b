//! This process's memory under large bodies, slow readers and connection floods (issue 5,
//! item 3): a client that does not read a large response holds back the backend instead of
//! growing wtgate's memory, a flood of connection attempts past `maxconn` leaves wtgate serving
//! afterwards with bounded memory, and a large upload streams through in bounded memory.
//!
//! The engine runs in this process, so its memory is this process's `VmRSS`: each test here holds
//! [`alone`] for its whole run, so that no other test allocates meanwhile. Nothing here asserts
//! on elapsed time; waits are bounded loops on a readiness signal (a counter that stops moving, a
//! socket that answers).

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::alone;
use crate::common::*;

const SID: &str = "wt1AbCdEfGhIjKlMnOp";
const MIB: usize = 1024 * 1024;

/// A backend that answers one GET with `len` bytes, written 64 KiB at a time from one static
/// buffer (so this process's memory does not grow with it); counts what it has written.
struct StreamingBackend {
    addr: SocketAddr,
    written: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl StreamingBackend {
    fn start(len: usize) -> StreamingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let written = Arc::new(AtomicUsize::new(0));
        let w = written.clone();
        let thread = thread::spawn(move || {
            // Health checks connect and close without a byte: skip them, serve the first request.
            let mut conn = loop {
                let (s, _) = listener.accept().unwrap();
                let mut c = Wire::new(s);
                c.stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                c.stream
                    .set_write_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                if let Ok(Some(_)) = c.read_request_head() {
                    break c;
                }
            };
            conn.write_all(
                format!("HTTP/1.1 200 OK\r\nX-Backend: stream\r\nContent-Length: {len}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            static BLOCK: [u8; 64 * 1024] = [b'z'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(BLOCK.len());
                if conn.write_all(&BLOCK[..n]).is_err() {
                    return;
                }
                left -= n;
                w.fetch_add(n, Ordering::SeqCst);
            }
            // Closing ends this test backend; the proxy sees EOF on a pooled connection.
            let _ = conn.stream.shutdown(Shutdown::Both);
        });
        StreamingBackend {
            addr,
            written,
            thread: Some(thread),
        }
    }
}

impl Drop for StreamingBackend {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `counter` has not moved for 10 polls in a row (the writer is blocked), at most
/// ~15 s; returns its value.
fn wait_until_stalled(counter: &AtomicUsize) -> usize {
    let mut last = counter.load(Ordering::SeqCst);
    let mut still = 0;
    for _ in 0..300 {
        thread::sleep(Duration::from_millis(50));
        let now = counter.load(Ordering::SeqCst);
        if now == last && now > 0 {
            still += 1;
            if still >= 10 {
                return now;
            }
        } else {
            still = 0;
            last = now;
        }
    }
    panic!("the backend never stalled: {last} bytes written and still going");
}

/// A client asks for 64 MiB and reads nothing. The backend must end up blocked (backpressure all
/// the way back), with only what the kernel's socket buffers hold in flight, and wtgate's memory
/// must not grow by more than a few MiB. Then the client reads it all: every byte arrives.
#[test]
fn slow_reader_of_a_large_response_is_backpressured() {
    const LEN: usize = 64 * MIB;
    let _alone = alone();
    let backend = StreamingBackend::start(LEN);
    let proxy = start_proxy(&[("wt1", backend.addr)], |_| {});
    // Warm up the engine's allocations (buffers, executor) with a request to another proxy, so
    // the baseline already holds whatever a served connection costs.
    {
        let b = TestBackend::start("wt1", Behavior::Normal);
        let p2 = start_proxy(&[b.spec()], |_| {});
        assert_eq!(send_request(p2.addr, &get("/warm")).unwrap().status, 200);
    }
    let before = vm_rss_bytes();

    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get(&format!("/?wtd={SID}&big=1"))).unwrap();
    let stalled_at = wait_until_stalled(&backend.written);
    let during = vm_rss_bytes();
    eprintln!(
        "slow reader: backend blocked after {:.1} MiB of {} MiB; RSS {:.1} -> {:.1} MiB",
        stalled_at as f64 / MIB as f64,
        LEN / MIB,
        before as f64 / MIB as f64,
        during as f64 / MIB as f64
    );
    assert!(
        stalled_at < LEN,
        "the whole response went out although the client read nothing"
    );
    assert!(
        during < before + 8 * MIB,
        "RSS grew by {} KiB while the client was not reading",
        (during.saturating_sub(before)) / 1024
    );

    // Now read it all.
    let t0 = Instant::now();
    let head = w
        .read_response_head(false)
        .unwrap()
        .expect("a response head");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(LEN.to_string().as_str())
    );
    let mut got = 0usize;
    let mut all_z = true;
    w.read_n_with(LEN, |d| {
        got += d.len();
        all_z &= d.iter().all(|&b| b == b'z');
    })
    .expect("the whole body");
    assert_eq!(got, LEN);
    eprintln!("slow reader: body read in {:?}", t0.elapsed());
    assert!(all_z, "body bytes changed on the way");
    let after = vm_rss_bytes();
    eprintln!(
        "slow reader: RSS after the whole body {:.1} MiB",
        after as f64 / MIB as f64
    );
    assert!(
        after < before + 8 * MIB,
        "RSS grew by {} KiB",
        (after - before) / 1024
    );
}

/// A nonblocking connect that is abandoned at once with an RST (SO_LINGER 0), so it leaves no
/// TIME_WAIT behind: 20 000 of them must not use up the machine's ephemeral ports.
fn connect_and_abandon(addr: &SockAddr) -> std::io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_linger(Some(Duration::ZERO))?;
    match s.connect(addr) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// `maxconn` 64, all 64 taken by keep-alive clients; then 20 000 connection attempts (opened and
/// abandoned at once) pile onto the listen backlog. The 64 keep being served during the flood;
/// once they leave, wtgate works through the dead connections in its backlog and serves a fresh
/// client; its memory stays within a few MiB of where it started.
#[test]
fn twenty_thousand_connection_attempts_beyond_maxconn() {
    const MAXCONN: usize = 64;
    const ATTEMPTS: usize = 20_000;
    let _alone = alone();
    let b = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b.spec()], |c| {
        c.maxconn = MAXCONN;
        c.timeouts.request_head = Duration::from_secs(30);
    });

    let mut held: Vec<Wire> = (0..MAXCONN)
        .map(|i| {
            let mut w = Wire::connect(proxy.addr);
            w.write_all(&get(&format!("/?wtd={SID}&held={i}"))).unwrap();
            assert_eq!(
                w.read_response(false).unwrap().status,
                200,
                "held client {i}"
            );
            w
        })
        .collect();
    let before = vm_rss_bytes();

    let addr = SockAddr::from(proxy.addr);
    let started = Instant::now();
    let mut refused = 0usize;
    for i in 0..ATTEMPTS {
        if connect_and_abandon(&addr).is_err() {
            refused += 1;
        }
        // The held clients are still served in the middle of the flood.
        if i % 5000 == 2500 {
            let w = &mut held[i % MAXCONN];
            w.write_all(&get(&format!("/?wtd={SID}&during={i}")))
                .unwrap();
            let r = w
                .read_response(false)
                .expect("a held client during the flood");
            assert_eq!(r.status, 200);
        }
    }
    let during = vm_rss_bytes();
    eprintln!(
        "flood: {ATTEMPTS} attempts in {:?} ({refused} failed at once); RSS {:.1} -> {:.1} MiB",
        started.elapsed(),
        before as f64 / MIB as f64,
        during as f64 / MIB as f64
    );

    // The held clients leave; a fresh client is served once the backlog has been worked off
    // (its SYN may have to be retried by the kernel while the accept queue is full).
    drop(held);
    let mut fresh = None;
    for attempt in 0..5 {
        match TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(10)) {
            Ok(s) => {
                let mut w = Wire::new(s);
                w.write_all(&get(&format!("/?wtd={SID}&fresh={attempt}")))
                    .unwrap();
                match w.read_response(false) {
                    Ok(r) => {
                        fresh = Some(r);
                        break;
                    }
                    Err(e) => eprintln!("fresh client attempt {attempt}: {e}"),
                }
            }
            Err(e) => eprintln!("fresh client attempt {attempt}: {e}"),
        }
    }
    let r = fresh.expect("no fresh client was served after the flood");
    assert_eq!(r.status, 200, "{:?}", r.head);
    assert_eq!(r.backend(), "wt1");

    // And a second round of ordinary clients, to show nothing was left stuck.
    for i in 0..20 {
        let r = send_request(proxy.addr, &get(&format!("/?wtd={SID}&after={i}"))).unwrap();
        assert_eq!(r.status, 200);
    }
    let after = vm_rss_bytes();
    eprintln!("flood: RSS after {:.1} MiB", after as f64 / MIB as f64);
    assert!(
        during < before + 8 * MIB && after < before + 8 * MIB,
        "RSS {before} -> {during} -> {after} bytes"
    );
}

/// A large upload streams through in bounded memory: the proxy never holds a body whole.
/// (The engine runs in this process, so the process's RSS bounds the proxy's.)
#[test]
fn a_256_mib_upload_passes_in_bounded_memory() {
    const SIZE: usize = 256 * MIB;
    let _alone = alone();
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[backend.spec()], |_| {});
    let before = vm_rss_bytes();
    let mut w = Wire::connect(proxy.addr);
    w.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: wt.example\r\nContent-Length: {SIZE}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let chunk = gen_body(42, MIB);
    let mut f = Fnv::new();
    for _ in 0..SIZE / MIB {
        w.write_all(&chunk).unwrap();
        f.update(&chunk);
    }
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Req-Len"), Some(SIZE.to_string().as_str()));
    assert_eq!(
        r.header("X-Req-Fnv"),
        Some(format!("{:016x}", f.finish()).as_str())
    );
    let grown_mib = vm_rss_bytes().saturating_sub(before) / MIB;
    assert!(
        grown_mib < 32,
        "RSS grew by {grown_mib} MiB for a {} MiB body",
        SIZE / MIB
    );
}

/// Idle WebSocket tunnels (each after one echo, as a Wt session's between pushes) hold no read
/// buffer: the wtgate process grows by its sockets' and tasks' few KiB per tunnel, not by two
/// 16 KiB buffers (issue 17). Measured on the binary, in a process of its own, so that this
/// test's clients and backend threads do not count.
#[test]
fn idle_websocket_tunnels_hold_no_read_buffers() {
    use wtgate_demo::ws::OP_TEXT;
    const TUNNELS: usize = 1000;
    /// Per idle tunnel, at most HAProxy's (4.6 KiB on this box): its task (no timer: the
    /// shard's sweeper keeps its deadline) and its two sockets' state; two read buffers alone
    /// would be 32 KiB.
    const BUDGET: usize = 4700;
    let _alone = alone();
    let ws = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: false,
    };
    let b = TestBackend::start("wt1", ws);
    let listen = free_port();
    let w = Serving::start(&one_backend_args(listen, b.addr, &[]));
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let echo = |i: usize| {
        let (mut c, r) = ws_connect(addr, &format!("/app?wtd={SID}&request=ws&i={i}"));
        assert_eq!(r.status, 101);
        let msg = format!("hello {i}");
        c.write_all(&client_frame(OP_TEXT, msg.as_bytes(), [1, 2, 3, 4]))
            .unwrap();
        let (_, _, payload) = ws_recv(&mut c).unwrap().expect("an echo");
        assert_eq!(payload, msg.as_bytes());
        c
    };
    assert_idle_cost(&w, "idle tunnels", (TUNNELS, BUDGET), echo);
}

/// Idle keep-alive client connections (each after one request, as a browser's between page
/// loads) cost the wtgate process its task and socket bookkeeping, no read buffer (issue 17).
/// Measured on the binary, in a process of its own.
#[test]
fn idle_keepalive_connections_are_small() {
    const CONNS: usize = 4000;
    /// Per idle connection, at most HAProxy's (1.27 KiB on this box; nginx 0.69 KiB): the task
    /// waits on its socket's poll alone, the shard's sweeper keeping its deadline (issue 17).
    const BUDGET: usize = 1300;
    let _alone = alone();
    let b = TestBackend::start("wt1", Behavior::Normal);
    let listen = free_port();
    let w = Serving::start(&one_backend_args(listen, b.addr, &[]));
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let request = |i: usize| {
        let mut c = Wire::connect(addr);
        c.write_all(&get(&format!("/?i={i}"))).unwrap();
        assert_eq!(c.read_response(false).unwrap().status, 200);
        c
    };
    assert_idle_cost(&w, "idle keep-alive connections", (CONNS, BUDGET), request);
}

/// Idle TLS keep-alive connections (each after its handshake and one request, as a browser's
/// between page loads) cost the wtgate process its TLS state beside the task and socket: no read
/// or write buffer (issue 16). Measured on the binary, in a process of its own.
#[test]
fn idle_tls_connections_are_small() {
    use std::io::{Read, Write};
    const CONNS: usize = 500;
    /// Per idle TLS connection, at most (HAProxy 2.6 with OpenSSL 3.0 on this box: see
    /// bench/RESULTS.md "TLS at the edge").
    const BUDGET: usize = 16 * 1024;
    let _alone = alone();
    let ca = crate::common::certs::TestCa::new("idle");
    let leaf = ca.leaf(
        "site",
        &["localhost"],
        crate::common::certs::KeyKind::EcdsaP256,
        -1,
        30,
    );
    let b = TestBackend::start("wt1", Behavior::Normal);
    let listen = free_port();
    let tls_listen = format!("127.0.0.1:{listen},tls");
    let args = [
        "--listen",
        &tls_listen,
        "--tls-cert",
        &leaf.flag(),
        "--threads",
        "1",
        "--no-pin",
    ];
    let backend = format!("wt1={}", b.addr);
    let w = Serving::start(&[&args[..], &["--backend", &backend]].concat());
    let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let config = ca.client_config();
    let request = |i: usize| {
        let mut tls = crate::common::certs::tls_connect(&config, addr, "localhost", b"");
        let req = format!("GET /?i={i} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tls.write_all(req.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") || !head_and_body_done(&got) {
            let n = tls.read(&mut chunk).unwrap();
            assert!(n > 0, "closed after {got:?}");
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        tls
    };
    assert_idle_cost(
        &w,
        "idle TLS keep-alive connections",
        (CONNS, BUDGET),
        request,
    );
}

/// Whether `got` holds a whole response head and the `Content-Length` body after it.
fn head_and_body_done(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
    got.len() >= end + 4 + len
}

/// Opens `n` connections with `open` (after a few to warm the runtime, the shard's pools and the
/// allocator's arenas up to their working size), leaves them idle, and fails if wtgate's RSS grew
/// by more than `budget` per connection.
fn assert_idle_cost<C>(
    w: &Serving,
    what: &str,
    (n, budget): (usize, usize),
    open: impl Fn(usize) -> C,
) {
    drop((0..50).map(&open).collect::<Vec<_>>());
    let pid = w.pid().to_string();
    let before = rss_of(&pid);
    let held: Vec<C> = (0..n).map(&open).collect();
    let grown = rss_of(&pid).saturating_sub(before);
    let per = grown as f64 / n as f64 / 1024.0;
    eprintln!(
        "{n} {what}: wtgate grew by {} KiB, {per:.2} KiB each",
        grown / 1024
    );
    assert!(
        grown <= n * budget,
        "{what}: {per:.2} KiB each, budget {:.2} KiB",
        budget as f64 / 1024.0
    );
    drop(held);
}
