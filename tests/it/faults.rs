//! Faults that come together (issue 15): a client gets an error only when no backend could have
//! answered it, and a Wt session leaves its server only when that server cannot answer it.
//!
//! The backends are `health::Killable` ones (a kill closes the listener and every connection, as
//! when a Wt server process dies), and a frozen one: a listener that is never accepted from, so
//! the kernel completes connects and nothing ever answers, as with a server stopped by SIGSTOP.

use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::{Wire, free_addr, get, send_request, start_proxy};
use crate::health::{Killable, wait_for};
use wtgate::config::Check;
use wtgate::health::Admin;

/// The rolling upgrade: wt1 is drained for its upgrade, then wt2 crashes and is back a second
/// later, under four keep-alive clients sending session-less GETs, on two shards. Not one request
/// fails: while wt2 is down the drained wt1 takes them (alive beats an error), and wt2 takes new
/// sessions again once it is back.
#[test]
fn a_crash_during_a_drain_costs_no_request() {
    let wt1 = Killable::start("wt1");
    let mut wt2 = Killable::start("wt2");
    let addr2 = wt2.spec().1;
    let proxy = start_proxy(&[wt1.spec(), wt2.spec()], |c| c.threads = 2);
    proxy.engine().set_admin("wt1", Admin::Drain).unwrap();
    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    let restarted = thread::scope(|scope| {
        for c in 0..4 {
            let (stop, failures, addr) = (&stop, &failures, proxy.addr);
            scope.spawn(move || {
                let mut w = Wire::connect(addr);
                for i in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    w.write_all(&get(&format!("/?c={c}&i={i}"))).unwrap();
                    match w.read_response(false) {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failures.lock().unwrap().push(format!("{:?}", r.head)),
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            w = Wire::connect(addr);
                        }
                    }
                }
            });
        }
        let served = |b: &Killable, n: usize| {
            for _ in 0..2000 {
                if b.requests() >= n {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            panic!("{} served only {} requests", b.spec().0, b.requests());
        };
        served(&wt2, 200);
        wt2.kill();
        // The second of downtime the scenario is about, not a wait for readiness.
        thread::sleep(Duration::from_secs(1));
        let back = Killable::start_at("wt2", addr2);
        served(&back, 200);
        stop.store(true, Ordering::SeqCst);
        back
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    let stats = proxy.engine().stats();
    assert!(stats.backend("wt1").unwrap().fallbacks > 0, "{stats:?}");
    assert!(restarted.requests() >= 200);
}

/// A session's server restarts: while it is down its session's requests go elsewhere (nothing
/// better), but once it listens again they reach it at once, before the checks bring it back up
/// (`rise` is far off here); new sessions wait for the checks.
#[test]
fn a_restarted_server_gets_its_sessions_back_before_its_checks_do() {
    let mut wt1 = Killable::start("wt1");
    let addr1 = wt1.spec().1;
    let wt2 = Killable::start("wt2");
    let proxy = start_proxy(&[wt1.spec(), wt2.spec()], |c| {
        c.down_interval = Duration::from_millis(20);
        c.rise = 100_000;
    });
    let session = "/?wtd=wt1AbCdEfGhIjKlMnOp&request=style";
    let from = |target: &str| {
        let r = send_request(proxy.addr, &get(target)).unwrap();
        assert_eq!(r.status, 200, "{:?}", r.head);
        r.header("X-Backend").unwrap().to_string()
    };
    assert_eq!(from(session), "wt1");
    wt1.kill();
    assert_eq!(from(session), "wt2", "moved while its server is down");
    let wt1 = Killable::start_at("wt1", addr1);
    let mut tries = 0;
    while from(session) != "wt1" {
        tries += 1;
        assert!(tries < 500, "wt1 is back but its session never reached it");
        thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..10 {
        assert_eq!(from(session), "wt1", "the session left its server again");
        assert_eq!(
            from("/new"),
            "wt2",
            "a new session went to a server not yet up"
        );
    }
    let stats = proxy.engine().stats();
    let s1 = stats.backend("wt1").unwrap();
    assert_eq!(s1.up_on_shards, 0, "{stats:?}");
    assert!(s1.owner_retries > 0, "{stats:?}");
    assert!(wt1.requests() >= 11);
}

/// A frozen server (the kernel accepts its connections, nothing answers): once a request has
/// waited a second on it, new sessions go to the other server, though its TCP check still
/// passes; and an HTTP check takes it out within its `fall` window (the check's time limit is
/// the interval, not the connect timeout).
#[test]
fn a_frozen_server_gets_no_new_sessions_and_its_http_check_fails() {
    let frozen = TcpListener::bind(free_addr()).unwrap();
    let wt2 = Killable::start("wt2");
    let proxy = start_proxy(&[("wt1", frozen.local_addr().unwrap()), wt2.spec()], |c| {
        c.check_interval = Duration::from_secs(3600);
    });
    // Round-robin sends one of these two to the frozen server; that one waits.
    let stuck: Vec<_> = (0..2)
        .map(|i| {
            let addr = proxy.addr;
            thread::spawn(move || send_request(addr, &get(&format!("/?first={i}"))))
        })
        .collect();
    wait_for(&proxy, "wt1 stalled", |s| {
        s.backend("wt1").unwrap().stalled_on_shards == 1
    });
    for i in 0..10 {
        let r = send_request(proxy.addr, &get(&format!("/?then={i}"))).unwrap();
        assert_eq!(r.header("X-Backend"), Some("wt2"), "{:?}", r.head);
    }
    drop(frozen);
    for t in stuck {
        let _ = t.join().unwrap();
    }

    let frozen = TcpListener::bind(free_addr()).unwrap();
    let proxy = start_proxy(&[("wt1", frozen.local_addr().unwrap())], |c| {
        c.check = Check::Http("/health".into());
        c.check_interval = Duration::from_millis(100);
        c.timeouts.connect = Duration::from_secs(3600);
        c.fall = 2;
    });
    wait_for(&proxy, "the frozen wt1 down", |s| {
        s.backend("wt1").unwrap().up_on_shards == 0
    });
}
