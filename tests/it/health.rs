//! Health: passive mark-down gossiped to every shard, active TCP/HTTP checks with rise/fall,
//! failover without client errors, recovery, and the drain/maint admin states.
//!
//! The backends here can be killed for real: the listener closes (connects are refused) and every
//! open connection is shut down, as when a Wt server process dies.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Proxy, Rng, Wire, get, session_id, start_proxy};
use wtgate::config::Check;
use wtgate::health::Admin;

#[derive(Default)]
struct State {
    stop: AtomicBool,
    requests: AtomicUsize,
    /// Status for `GET /health`.
    health_status: AtomicU16,
    conns: Mutex<Vec<TcpStream>>,
}

/// A minimal keep-alive HTTP backend that can die like a process: `kill` closes its listener and
/// every connection.
pub(crate) struct Killable {
    name: &'static str,
    addr: SocketAddr,
    state: Arc<State>,
    listener_fd: i32,
    accept: Option<thread::JoinHandle<()>>,
}

impl Killable {
    pub(crate) fn start(name: &'static str) -> Killable {
        Killable::start_at(name, crate::common::free_addr())
    }

    pub(crate) fn start_at(name: &'static str, addr: SocketAddr) -> Killable {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener_fd = listener.as_raw_fd();
        let state = Arc::new(State::default());
        state.health_status.store(200, Ordering::SeqCst);
        let st = state.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { return };
                st.conns.lock().unwrap().push(stream.try_clone().unwrap());
                let st = st.clone();
                thread::spawn(move || serve(name, stream, &st));
            }
        });
        Killable {
            name,
            addr,
            state,
            listener_fd,
            accept: Some(accept),
        }
    }

    pub(crate) fn spec(&self) -> (&str, SocketAddr) {
        (self.name, self.addr)
    }

    pub(crate) fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn kill(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) on the listener the accept thread owns; it wakes its accept, after
        // which the thread drops (closes) the listener.
        unsafe {
            libc::shutdown(self.listener_fd, libc::SHUT_RDWR);
        }
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.kill();
        }
    }
}

fn serve(name: &str, s: TcpStream, st: &State) {
    let mut w = Wire::new(s);
    loop {
        // Parsed by `wtgate::h1`; EOF or a head it refuses ends the connection.
        let Ok(Some(req)) = w.read_request_head() else {
            return;
        };
        let target = req.target;
        if st.stop.load(Ordering::SeqCst) {
            return;
        }
        let (status, body) = if target == "/health" {
            (st.health_status.load(Ordering::SeqCst), String::new())
        } else {
            st.requests.fetch_add(1, Ordering::SeqCst);
            (200, format!("{name} {target}"))
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\nX-Backend: {name}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Polls the engine's stats until `cond` holds: the shards' published views are the readiness
/// signal here. Bounded: fails the test after 20 s.
pub(crate) fn wait_for(proxy: &Proxy, what: &str, cond: impl Fn(&wtgate::metrics::Stats) -> bool) {
    let start = Instant::now();
    loop {
        let stats = proxy.engine().stats();
        if cond(&stats) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}: {stats:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// One GET on a fresh connection: (status, backend).
fn fetch(proxy: &Proxy, target: &str) -> (u16, String) {
    let r = crate::common::send_request(proxy.addr, &get(target)).expect("response");
    (r.status, r.backend().to_string())
}

fn up_on(proxy: &Proxy, prefix: &str) -> usize {
    proxy.engine().stats().backend(prefix).unwrap().up_on_shards
}

#[test]
fn a_backend_killed_under_load_costs_no_request() {
    let wt1 = Killable::start("wt1");
    let wt2 = Killable::start("wt2");
    let proxy = start_proxy(&[wt1.spec(), wt2.spec()], |c| {
        c.threads = 2;
        c.check_interval = Duration::from_millis(200);
    });
    let mut rng = Rng::new(7);
    let s1 = session_id(&mut rng, "wt1");
    let s2 = session_id(&mut rng, "wt2");
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 300;
    let done = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let wt1_after_kill = Arc::new(AtomicUsize::new(0));
    let wt1_sessions_moved = Arc::new(AtomicUsize::new(0));
    let killer = {
        // The killer runs on its own thread once a third of the load is through.
        let (done, killed) = (done.clone(), killed.clone());
        thread::spawn(move || {
            while done.load(Ordering::SeqCst) < CLIENTS * PER_CLIENT / 3 {
                thread::sleep(Duration::from_millis(1));
            }
            let mut wt1 = wt1;
            wt1.kill();
            killed.store(true, Ordering::SeqCst);
            wt1
        })
    };
    thread::scope(|scope| {
        for c in 0..CLIENTS {
            let (proxy, s1, s2) = (&proxy, &s1, &s2);
            let (done, killed, failures) = (&done, &killed, &failures);
            let (after, moved) = (&wt1_after_kill, &wt1_sessions_moved);
            scope.spawn(move || {
                let mut w = Wire::connect(proxy.addr);
                for i in 0..PER_CLIENT {
                    if i == PER_CLIENT * 2 / 3 {
                        // However late the killer thread runs, a third of the load follows the
                        // kill.
                        let waiting = std::time::Instant::now();
                        while !killed.load(Ordering::SeqCst) {
                            assert!(waiting.elapsed() < Duration::from_secs(10), "no kill");
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                    let target = match (i + c) % 3 {
                        0 => format!("/?wtd={s1}&request=style&i={i}"),
                        1 => format!("/?wtd={s2}&request=style&i={i}"),
                        _ => format!("/app?i={i}"),
                    };
                    let was_killed = killed.load(Ordering::SeqCst);
                    let resp = w
                        .write_all(&get(&target))
                        .and_then(|_| w.read_response(false));
                    match resp {
                        Ok(r) if r.status == 200 => {
                            if was_killed && r.backend() == "wt1" {
                                after.fetch_add(1, Ordering::SeqCst);
                            }
                            if was_killed && target.contains(s1.as_str()) {
                                assert_eq!(r.backend(), "wt2", "{target}");
                                moved.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{target}: status {}", r.status)),
                        Err(e) => {
                            failures.lock().unwrap().push(format!("{target}: {e}"));
                            w = Wire::connect(proxy.addr);
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let _wt1 = killer.join().unwrap();
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(wt1_after_kill.load(Ordering::SeqCst), 0);
    assert!(wt1_sessions_moved.load(Ordering::SeqCst) > 0);
    let stats = proxy.engine().stats();
    let s = stats.backend("wt1").unwrap();
    // Each client has one request in flight at a time, so at most one failed connect per client
    // can race the first mark-down; after it, a shard tries the dead backend again only for a
    // request of its own sessions, once per down interval (an owner retry).
    assert!(
        (1..=CLIENTS as u64 + s.owner_retries).contains(&s.connect_failures),
        "{stats:?}"
    );
    // The other shard hears of the mark-down by gossip, a moment later.
    wait_for(&proxy, "wt1 down everywhere", |s| {
        s.backend("wt1").unwrap().up_on_shards == 0
    });
    assert!(wt2.requests() > 0);
}

#[test]
fn a_mark_down_on_one_shard_changes_routing_on_the_other() {
    let mut wt1 = Killable::start("wt1");
    let wt2 = Killable::start("wt2");
    let proxy = start_proxy(&[wt1.spec(), wt2.spec()], |c| {
        c.threads = 2;
        // No active check runs during the test: only the passive mark-down and its gossip.
        c.check_interval = Duration::from_secs(3600);
    });
    assert_eq!(up_on(&proxy, "wt1"), 2);
    wt1.kill();
    // One request: whichever shard takes it fails to connect once, and retries on wt2.
    let mut rng = Rng::new(3);
    let s1 = session_id(&mut rng, "wt1");
    assert_eq!(fetch(&proxy, &format!("/?wtd={s1}")), (200, "wt2".into()));
    // The other shard learns it by gossip alone.
    wait_for(&proxy, "both shards to see wt1 down", |s| {
        s.backend("wt1").unwrap().up_on_shards == 0
    });
    for i in 0..40 {
        assert_eq!(fetch(&proxy, &format!("/new?i={i}")), (200, "wt2".into()));
    }
    let stats = proxy.engine().stats();
    assert_eq!(
        stats.backend("wt1").unwrap().connect_failures,
        1,
        "{stats:?}"
    );
}

#[test]
fn a_restarted_backend_gets_new_sessions_after_rise_checks() {
    let mut wt1 = Killable::start("wt1");
    let wt2 = Killable::start("wt2");
    let addr1 = wt1.addr;
    let proxy = start_proxy(&[wt1.spec(), wt2.spec()], |c| {
        c.threads = 2;
        c.check_interval = Duration::from_millis(50);
        c.rise = 2;
        c.fall = 2;
    });
    wt1.kill();
    wait_for(&proxy, "wt1 down everywhere", |s| {
        s.backend("wt1").unwrap().up_on_shards == 0
    });
    for i in 0..6 {
        assert_eq!(fetch(&proxy, &format!("/?i={i}")).1, "wt2");
    }
    let wt1 = Killable::start_at("wt1", addr1);
    wait_for(&proxy, "wt1 up again everywhere", |s| {
        s.backend("wt1").unwrap().up_on_shards == 2
    });
    let served: Vec<String> = (0..20)
        .map(|i| fetch(&proxy, &format!("/?i={i}")).1)
        .collect();
    assert!(served.iter().any(|b| b == "wt1"), "{served:?}");
    assert!(wt1.requests() > 0);
}

#[test]
fn an_http_check_answered_500_takes_the_backend_down() {
    let wt1 = Killable::start("wt1");
    let wt2 = Killable::start("wt2");
    wt2.state.health_status.store(500, Ordering::SeqCst);
    let proxy = start_proxy(&[wt1.spec(), wt2.spec()], |c| {
        c.check = Check::Http("/health".into());
        c.check_interval = Duration::from_millis(30);
        c.fall = 3;
    });
    wait_for(&proxy, "wt2 down by HTTP checks", |s| {
        s.backend("wt2").unwrap().up_on_shards == 0
    });
    assert!(proxy.engine().stats().backend("wt2").unwrap().checks_failed >= 3);
    assert_eq!(up_on(&proxy, "wt1"), 1, "wt1 answers its checks 200");
    let mut rng = Rng::new(5);
    let s2 = session_id(&mut rng, "wt2");
    for i in 0..10 {
        assert_eq!(fetch(&proxy, &format!("/?i={i}")), (200, "wt1".into()));
        assert_eq!(
            fetch(&proxy, &format!("/?wtd={s2}&i={i}")),
            (200, "wt1".into())
        );
    }
    // It recovers once its checks pass again.
    wt2.state.health_status.store(200, Ordering::SeqCst);
    wait_for(&proxy, "wt2 back up", |s| {
        s.backend("wt2").unwrap().up_on_shards == 1
    });
    assert_eq!(fetch(&proxy, &format!("/?wtd={s2}")), (200, "wt2".into()));
}

#[test]
fn drain_keeps_its_sessions_and_takes_no_new_ones_maint_takes_nothing() {
    let wt1 = Killable::start("wt1");
    let wt2 = Killable::start("wt2");
    let proxy = start_proxy(&[wt1.spec(), wt2.spec()], |c| c.threads = 2);
    let mut rng = Rng::new(11);
    let s1 = session_id(&mut rng, "wt1");

    assert_eq!(
        proxy.engine().set_admin("wt1", Admin::Drain),
        Ok(Admin::Ready)
    );
    for i in 0..20 {
        assert_eq!(fetch(&proxy, &format!("/new?i={i}")), (200, "wt2".into()));
        assert_eq!(
            fetch(&proxy, &format!("/?wtd={s1}&i={i}")),
            (200, "wt1".into())
        );
    }

    assert_eq!(
        proxy.engine().set_admin("wt1", Admin::Maint),
        Ok(Admin::Drain)
    );
    for i in 0..10 {
        assert_eq!(
            fetch(&proxy, &format!("/?wtd={s1}&i={i}")),
            (200, "wt2".into())
        );
    }
    let stats = proxy.engine().stats();
    assert!(
        stats.backend("wt1").unwrap().redispatched >= 10,
        "{stats:?}"
    );

    assert_eq!(
        proxy.engine().set_admin("wt1", Admin::Ready),
        Ok(Admin::Maint)
    );
    let served: Vec<String> = (0..10)
        .map(|i| fetch(&proxy, &format!("/?i={i}")).1)
        .collect();
    assert!(served.iter().any(|b| b == "wt1"), "{served:?}");
    assert!(proxy.engine().set_admin("wt9", Admin::Drain).is_err());
}

/// Every backend down: a request waits `--queue-timeout` for one to come back, then gets a 503
/// with Retry-After. Meanwhile a backend marked down costs one connect per `--down-interval` on a
/// shard, not one per request: a second request, within the interval, tries none.
#[test]
fn all_backends_down_waits_the_queue_timeout_then_503() {
    let mut wt1 = Killable::start("wt1");
    let mut wt2 = Killable::start("wt2");
    let proxy = start_proxy(&[wt1.spec(), wt2.spec()], |c| {
        c.check_interval = Duration::from_secs(3600);
        c.down_interval = Duration::from_secs(3600);
        c.timeouts.queue = Duration::from_millis(200);
    });
    wt1.kill();
    wt2.kill();
    let r = crate::common::send_request(proxy.addr, &get("/")).unwrap();
    assert_eq!(r.status, 503);
    assert!(r.header("Retry-After").is_some());
    let before = proxy.engine().stats();
    let r = crate::common::send_request(proxy.addr, &get("/")).unwrap();
    assert_eq!(r.status, 503);
    let after = proxy.engine().stats();
    for p in ["wt1", "wt2"] {
        assert_eq!(
            before.backend(p).unwrap().connect_failures,
            after.backend(p).unwrap().connect_failures,
            "{p} tried again within its down interval"
        );
    }
    assert_eq!((after.no_backend, after.queued), (2, 2), "{after:?}");
}

/// Every backend down, and one comes back while requests wait for it: they are answered by it,
/// not with a 503 (its down-interval try finds it, or its checks bring it up).
#[test]
fn a_request_waiting_for_a_backend_is_served_when_one_comes_back() {
    let mut wt1 = Killable::start("wt1");
    let addr1 = wt1.addr;
    let proxy = start_proxy(&[wt1.spec()], |c| {
        c.check_interval = Duration::from_secs(3600);
        c.down_interval = Duration::from_millis(50);
        c.timeouts.queue = Duration::from_secs(20);
    });
    wt1.kill();
    let waiting = thread::spawn({
        let addr = proxy.addr;
        move || crate::common::send_request(addr, &get("/?waits=1")).unwrap()
    });
    wait_for(&proxy, "the request to wait", |s| s.queued == 1);
    let wt1 = Killable::start_at("wt1", addr1);
    let r = waiting.join().unwrap();
    assert_eq!(
        (r.status, r.header("X-Backend")),
        (200, Some("wt1")),
        "{:?}",
        r.head
    );
    assert!(wt1.requests() > 0);
    assert_eq!(proxy.engine().stats().no_backend, 0);
}
