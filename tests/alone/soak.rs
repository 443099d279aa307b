//! Leak soak (issue 5, item 5): a bounded mixed run — keep-alive, pipelined, WebSocket, clients
//! aborting at random points, a stale pooled connection, a backend that cuts its response, and a
//! backend restart in the middle — after which the process's open file descriptors return to
//! their idle count and its memory stays put from one round to the next.
//!
//! The engine runs in the test's process (the test binary run again for this one test, with one
//! malloc arena: [`soak_in_a_process_of_one_arena`]), so `/proc/self/fd` and `VmRSS` are the
//! proxy's plus the test's own (backends, clients). Every client socket is closed before
//! counting, and the idle count is taken with the engine and the backends already running; "idle
//! again" is awaited by polling the fd count in a bounded loop (a readiness signal, not a sleep).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::alone;
use crate::common::*;
use wtgate_demo::ws::{OP_BINARY, OP_CLOSE, OP_TEXT};

const MIB: usize = 1024 * 1024;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What the open descriptors are (`socket:[…]`, `anon_inode:[eventfd]`, …), counted by kind.
fn fd_kinds() -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let target = std::fs::read_link(e.path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".into());
        let kind = match target.split_once(":[") {
            Some((k, _)) if k != "anon_inode" => k.to_string(),
            _ => target,
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

/// Counts the bytes live on the heap of this process (engine, backends, clients alike), so that a
/// leak shows as growth whatever the allocator keeps cached.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: our caller upholds GlobalAlloc's contract; the call is passed through unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: our caller upholds GlobalAlloc's contract; the call is passed through unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: our caller upholds GlobalAlloc's contract; the call is passed through unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: our caller upholds GlobalAlloc's contract; the call is passed through unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs the soak test again in a process of its own with one malloc arena (`MALLOC_ARENA_MAX=1`),
/// and fails if it fails there. With glibc's default of up to 8 arenas per core, the free pages
/// that this process's dozens of client, backend and shard threads leave in their arenas stay
/// resident after `malloc_trim`, a few MiB that move from round to round whatever wtgate does
/// (seen: 18.6 to 23.7 MiB over five rounds of a flat 0.55 MiB live heap, and once a 4.3 MiB rise
/// that failed the test); in one arena the same rounds measured 12.2 to 12.5 MiB.
fn soak_in_a_process_of_one_arena() {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name = format!("{module}::soak_returns_to_idle_fds_and_stable_rss");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads", "1"])
        .env(SOAK_CHILD, "1")
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .expect("run the soak test in a child process");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprint!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the soak test in its own process: {}\n{stdout}",
        out.status
    );
}

/// Resident memory after handing the allocator's free pages back (`malloc_trim`), so that what
/// glibc keeps cached in the arenas of finished client and backend threads does not count.
fn rss() -> usize {
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe { libc::malloc_trim(0) };
    vm_rss_bytes()
}

/// Polls until the fd count is back to `idle` (and stays there for a few polls); at most ~20 s.
fn wait_for_fds(idle: usize) -> Result<usize, String> {
    let mut settled = 0;
    let mut now = fd_count();
    for _ in 0..400 {
        now = fd_count();
        if now <= idle {
            settled += 1;
            if settled >= 5 {
                return Ok(now);
            }
        } else {
            settled = 0;
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{now} fds open, idle was {idle}; open now: {:?}",
        fd_kinds()
    ))
}

/// Addresses and sessions the clients use.
#[derive(Clone)]
struct Targets {
    proxy: SocketAddr,
}

/// wt1: WebSocket echo (plain HTTP too); wt2: echo of generated bodies, restarted mid-run;
/// wt3: closes a reused connection on its second request (stale pool); wt4: cuts its response.
const WS_BACKEND: &str = "wt1";
const ECHO_BACKEND: &str = "wt2";
const STALE_BACKEND: &str = "wt3";
const CUT_BACKEND: &str = "wt4";

/// One client thread's share of a round: `actions` random actions. Returns how many requests
/// got a complete expected answer (the rest were aborted on purpose or hit wt3/wt4).
fn client(t: Targets, seed: u64, actions: usize, done: &AtomicUsize) -> usize {
    let mut rng = Rng::new(seed);
    let sid = |rng: &mut Rng, p: &str| session_id(rng, p);
    let mut ok = 0;
    for a in 0..actions {
        let kind = rng.range(0, 9);
        let t0 = Instant::now();
        match kind {
            // Keep-alive: a few requests, GET or POST, on one connection.
            0 | 1 => {
                let mut w = Wire::connect(t.proxy);
                for i in 0..rng.range(1, 5) {
                    let pick = rng.range(0, 2);
                    let target = match pick {
                        0 => format!("/?wtd={}&a={a}&i={i}", sid(&mut rng, WS_BACKEND)),
                        1 => format!("/?wtd={}&a={a}&i={i}", sid(&mut rng, ECHO_BACKEND)),
                        _ => format!("/?a={a}&i={i}"),
                    };
                    let len = rng.range(0, 3) as usize * 10_000;
                    let body = rng.bytes(len);
                    w.write_all(&get_or_post(&target, &body)).unwrap();
                    let r = w.read_response(false).expect("keep-alive answer");
                    if r.status == 502 && pick != 0 {
                        // wt2 being stopped can close a connection it had already accepted
                        // (in its listen backlog) without answering: a 502 by design, since
                        // only a pooled connection's request is replayed.
                        eprintln!("soak: 502 for {target} (wt2 restart window)");
                        assert!(r.head.has_token("Connection", "close"));
                        break;
                    }
                    assert_eq!(r.status, 200, "{target}: {:?}", r.head);
                    ok += 1;
                }
            }
            // Pipelined: several requests in one write, answers in order.
            2 => {
                let n = rng.range(2, 8);
                let mut raw = Vec::new();
                for i in 0..n {
                    raw.extend_from_slice(&get(&format!(
                        "/?wtd={}&pipe={i}",
                        sid(&mut rng, WS_BACKEND)
                    )));
                }
                let mut w = Wire::connect(t.proxy);
                w.write_all(&raw).unwrap();
                for i in 0..n {
                    let r = w.read_response(false).expect("pipelined answer");
                    assert_eq!(r.status, 200);
                    assert!(
                        r.body_str().ends_with(&format!("&pipe={i}")),
                        "{}",
                        r.body_str()
                    );
                    ok += 1;
                }
            }
            // WebSocket: echo a few frames, then a clean close or an abrupt drop.
            3 => {
                let target = format!("/?wtd={}&request=ws", sid(&mut rng, WS_BACKEND));
                let (mut ws, _) = ws_connect(t.proxy, &target);
                for f in 0..rng.range(1, 6) {
                    let len = rng.range(0, 2000) as usize;
                    let payload = rng.bytes(len);
                    let op = if f % 2 == 0 { OP_TEXT } else { OP_BINARY };
                    let payload = if op == OP_TEXT {
                        payload.iter().map(|b| b'a' + b % 26).collect()
                    } else {
                        payload
                    };
                    ws.write_all(&client_frame(op, &payload, [7, 1, 3, f as u8]))
                        .unwrap();
                    let (_, got_op, got) = ws_recv(&mut ws).unwrap().expect("an echo");
                    assert_eq!((got_op, got), (op, payload));
                }
                if rng.range(0, 1) == 0 {
                    ws.write_all(&client_frame(OP_CLOSE, &1000u16.to_be_bytes(), [0; 4]))
                        .unwrap();
                    ws.stream.shutdown(Shutdown::Write).unwrap();
                    for _ in 0..3 {
                        if ws_recv(&mut ws).unwrap().is_none() {
                            break;
                        }
                    }
                }
                ok += 1;
            }
            // Client aborts at a random point.
            4..=6 => {
                let target = format!(
                    "/?wtd={}&resp={}&seed={a}&mode=chunked",
                    sid(&mut rng, ECHO_BACKEND),
                    512 * 1024
                );
                let mut raw =
                    format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n")
                        .into_bytes();
                raw.extend_from_slice(&rng.bytes(20_000));
                let mut w = Wire::connect(t.proxy);
                match rng.range(0, 3) {
                    0 => {} // connect and leave
                    1 => {
                        // part of the head, or the head and part of the body
                        let cut = rng.range(1, raw.len() as u64 - 1) as usize;
                        let _ = w.write_all(&raw[..cut]);
                    }
                    2 => {
                        // the whole request, gone before the answer
                        let _ = w.write_all(&raw);
                    }
                    _ => {
                        // The whole request, then part of the answer: 512 KiB chunked from wt2,
                        // or a short one from wt1 while wt2 is down (then all of it).
                        let _ = w.write_all(&raw);
                        let want = rng.range(1, 300_000) as usize;
                        if let Ok(Some(head)) = w.read_response_head(false) {
                            let len = head.header("Content-Length").and_then(|v| v.parse().ok());
                            let _ = w.read_n(len.unwrap_or(want).min(want));
                        }
                    }
                }
                if rng.range(0, 1) == 0 {
                    // An RST instead of a FIN.
                    let _ = socket2::SockRef::from(&w.stream).set_linger(Some(Duration::ZERO));
                }
                drop(w);
            }
            // A stale pooled connection (GET retried, POST answered 502), or a cut response.
            7 => {
                let target = format!("/?wtd={}&stale={a}", sid(&mut rng, STALE_BACKEND));
                let mut w = Wire::connect(t.proxy);
                let post =
                    format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab");
                for raw in [get(&target), get(&target), post.into_bytes()] {
                    if w.write_all(&raw).is_err() {
                        break;
                    }
                    match w.read_response(false) {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => {
                            assert_eq!(r.status, 502, "{:?}", r.head);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            _ => {
                let target = format!("/?wtd={}&cut={a}", sid(&mut rng, CUT_BACKEND));
                let mut w = Wire::connect(t.proxy);
                w.write_all(&get(&target)).unwrap();
                let r = w.read_response(false);
                assert!(
                    r.as_ref().is_err_and(|e| matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                    )),
                    "a cut response must not look complete: {:?}",
                    r.map(|r| r.status)
                );
            }
        }
        if t0.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "soak: client {seed} action {a} (kind {kind}) took {:?}",
                t0.elapsed()
            );
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

/// The four backends, each restartable on its port.
struct Fleet {
    slots: Vec<(&'static str, Behavior, SocketAddr, Option<TestBackend>)>,
}

const WS: Behavior = Behavior::WsEcho {
    reject: false,
    close_after: None,
    greet: false,
};
const ECHO: usize = 1;

impl Fleet {
    fn start() -> Fleet {
        let slots = [
            (WS_BACKEND, WS),
            (ECHO_BACKEND, Behavior::Echo),
            (STALE_BACKEND, Behavior::DropSecondRequest),
            (CUT_BACKEND, Behavior::CloseMidResponse),
        ]
        .into_iter()
        .map(|(name, behavior)| {
            // Outside the ephemeral range: no connect of the engine's can take the port of a
            // backend while it is stopped.
            let b = TestBackend::start_at(name, behavior, crate::common::free_addr());
            (name, behavior, b.addr, Some(b))
        })
        .collect();
        Fleet { slots }
    }

    fn specs(&self) -> Vec<(&'static str, SocketAddr)> {
        self.slots.iter().map(|s| (s.0, s.2)).collect()
    }

    fn stop(&mut self, i: usize) {
        self.slots[i].3 = None;
    }

    fn start_again(&mut self, i: usize) {
        let (name, behavior, addr, _) = self.slots[i];
        self.slots[i].3 = Some(TestBackend::start_at(name, behavior, addr));
    }

    /// Restarts every backend on its port. The test backends keep a record of every request and
    /// connection they saw; fresh ones start with none, so that memory compared between rounds
    /// is wtgate's, not the recordings'.
    fn restart_all(&mut self) {
        for i in 0..self.slots.len() {
            self.stop(i);
            self.start_again(i);
        }
    }

    fn requests(&self, i: usize) -> usize {
        self.slots[i].3.as_ref().map_or(0, |b| b.request_count())
    }
}

/// One round: 4 clients × `actions`, with wt2 stopped once a third of the actions are done and
/// started again (same port) at two thirds.
fn round(fleet: &mut Fleet, proxy: SocketAddr, seed: u64, actions: usize) -> (usize, usize) {
    const CLIENTS: usize = 4;
    let done = Arc::new(AtomicUsize::new(0));
    let total = CLIENTS * actions;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let done = done.clone();
            let t = Targets { proxy };
            thread::spawn(move || client(t, seed * 100 + c as u64, actions, &done))
        })
        .collect();
    let wait_for = |n: usize| {
        for _ in 0..2000 {
            if done.load(Ordering::SeqCst) >= n {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(total / 3);
    fleet.stop(ECHO); // wt2 goes away: refused connects, passive mark-down, redispatch
    wait_for(2 * total / 3);
    fleet.start_again(ECHO);
    let ok = handles
        .into_iter()
        .map(|h| h.join().expect("a soak client failed"))
        .sum();
    let clients_done = Instant::now();
    // wt2 is back: once its passive mark-down expires, its sessions go to it again.
    let mut rng = Rng::new(seed);
    let target = format!("/?wtd={}&back=1", session_id(&mut rng, ECHO_BACKEND));
    let back = (0..200).any(|_| {
        let r = send_request(proxy, &get(&target)).expect("a request after the restart");
        assert_eq!(r.status, 200);
        r.backend() == ECHO_BACKEND || {
            thread::sleep(Duration::from_millis(50));
            false
        }
    });
    assert!(back, "wt2 never got its sessions back after its restart");
    if clients_done.elapsed() > Duration::from_secs(2) {
        eprintln!("soak: wt2 took {:?} to come back", clients_done.elapsed());
    }
    (total, ok)
}

/// Set in the child process that runs the soak (see [`soak_in_a_process_of_one_arena`]).
const SOAK_CHILD: &str = "WTGATE_SOAK_CHILD";

#[test]
fn soak_returns_to_idle_fds_and_stable_rss() {
    const ACTIONS: usize = 150;
    let _alone = alone();
    if std::env::var_os(SOAK_CHILD).is_none() {
        return soak_in_a_process_of_one_arena();
    }
    let mut fleet = Fleet::start();
    let proxy = start_proxy(&fleet.specs(), |c| {
        c.threads = 2;
        // wt3 and wt4 get only their own sessions.
        c.backends[2].weight = 0;
        c.backends[3].weight = 0;
        // Pooled connections are closed soon after the run, so "idle" comes quickly.
        c.timeouts.pool_idle = Duration::from_millis(500);
        c.timeouts.request_head = Duration::from_secs(5);
        // wt2 comes back within a few checks of its restart.
        c.check_interval = Duration::from_millis(100);
        c.rise = 1;
        // Every request here is a new Wt session, and session tables grow (by design, to their
        // cap) until sessions expire: capped low, they are full after round 1, so what the rounds
        // compare is leaks, not sessions.
        c.max_sessions = 64;
    });
    // Health checks open a connection now and then: idle is the least seen over a few polls.
    let idle_fds = (0..20)
        .map(|_| {
            thread::sleep(Duration::from_millis(10));
            fd_count()
        })
        .min()
        .unwrap();
    let idle_kinds = fd_kinds();
    let rss_start = rss();
    let live_start = LIVE.load(Ordering::Relaxed);

    let mut rounds = Vec::new();
    for r in 1..=5u64 {
        let started = Instant::now();
        // The same mix each round: what a round leaves cached (buffers kept for reuse, table
        // capacities) then differs little between rounds, and a leak stands out.
        let (actions, answered) = round(&mut fleet, proxy.addr, 1, ACTIONS);
        assert!(answered > actions / 4, "round {r}: only {answered} answers");
        assert!(
            (0..4).all(|i| fleet.requests(i) > 0),
            "round {r}: a backend got no request"
        );
        let fds = wait_for_fds(idle_fds).unwrap_or_else(|e| panic!("after round {r}: {e}"));
        fleet.restart_all();
        // A health check may hold a connection open at any instant: compare settled counts.
        assert_eq!(
            wait_for_fds(idle_fds),
            Ok(fds),
            "restarting the backends changed the fd count"
        );
        let rss = rss();
        // Threads that have just closed their last socket may not have freed their buffers yet:
        // take the least of a few samples.
        let live = (0..10)
            .map(|_| {
                thread::sleep(Duration::from_millis(20));
                LIVE.load(Ordering::Relaxed)
            })
            .min()
            .unwrap();
        eprintln!(
            "soak round {r}: {actions} actions, {answered} answered requests, {:?}; fds {fds} \
             (idle {idle_fds}); RSS {:.1} MiB, live heap {:.2} MiB",
            started.elapsed(),
            rss as f64 / MIB as f64,
            live as f64 / MIB as f64
        );
        rounds.push((rss, live));
    }
    eprintln!(
        "soak: idle fds {idle_fds} {idle_kinds:?}; at start RSS {:.1} MiB, live heap {:.2} MiB",
        rss_start as f64 / MIB as f64,
        live_start as f64 / MIB as f64
    );
    // Round 1 grows the allocator's pools and caches to their working size. After it, the bytes
    // live on the heap (all of wtgate's allocations among them) must not grow beyond what a few
    // buffers of exiting threads could hold, and RSS only within the slack of glibc's cache of
    // thread stacks (up to 40 MiB of stacks of the test's finished client and backend threads,
    // whose touched pages stay resident: up to ~2.5 MiB seen here while the live heap was flat).
    // One round's sample moves by a few hundred KiB either way (which caches the round's mix
    // filled); a leak only grows. So the least of rounds 4-5 is compared with the least of
    // rounds 2-3: a leak of 128 KiB a round adds 256 KiB to it, noise seldom survives a minimum.
    let least =
        |rs: &[(usize, usize)], f: fn(&(usize, usize)) -> usize| rs.iter().map(f).min().unwrap();
    let (early, late) = (&rounds[1..3], &rounds[3..5]);
    assert!(
        least(late, |r| r.1) <= least(early, |r| r.1) + 256 * 1024,
        "live heap grew from rounds 2-3 to rounds 4-5: {rounds:?} (rss, live) bytes"
    );
    assert!(
        least(late, |r| r.0) <= least(early, |r| r.0) + 4 * MIB,
        "RSS grew from rounds 2-3 to rounds 4-5: {rounds:?} (rss, live) bytes"
    );
}

/// Dropping the `Engine` closes what it holds: client connections that are open at that moment
/// (idle keep-alive or mid-head) and pooled backend connections, so no descriptor outlives it.
#[test]
fn dropping_the_engine_closes_its_connections() {
    let _alone = alone();
    let b = TestBackend::start("wt1", Behavior::Normal);
    // Every descriptor counts: sockets, and each shard's io_uring ring and its eventfd (monoio's
    // cross-thread wake-ups), which the runtime closes when it is dropped. (glommio 0.9 leaked one
    // eventfd per executor, so this test counted only sockets then.)
    let before = fd_count();
    let proxy = start_proxy(&[b.spec()], |_| {});
    let mut idle = Wire::connect(proxy.addr);
    idle.write_all(&get("/?idle=1")).unwrap();
    assert_eq!(idle.read_response(false).unwrap().status, 200);
    let mut half = Wire::connect(proxy.addr);
    half.write_all(b"GET /?half=1 HTTP/1.1\r\n").unwrap();
    // The pooled connection's backend side is in `b`; wait until the backend has seen it all.
    for _ in 0..200 {
        if b.request_count() == 1 {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    drop(proxy);
    idle.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    half.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let idle_closed = idle.expect_closed();
    let half_closed = half.expect_closed();
    drop((idle, half));
    let mut leaked = Err(0);
    for _ in 0..400 {
        match fd_count() {
            n if n <= before => {
                leaked = Ok(n);
                break;
            }
            n => leaked = Err(n),
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        idle_closed.is_ok() && half_closed.is_ok() && leaked.is_ok(),
        "after Engine::drop: keep-alive client {idle_closed:?}, mid-head client {half_closed:?}, \
         descriptors {leaked:?} (before: {before}; Err = still open after 4 s): {:?}",
        fd_kinds()
    );
}
