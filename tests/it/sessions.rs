//! Live Wt sessions per backend, as wtgate counts them from the `wtd` it routes: each session once
//! however many connections and shards its requests took, and only on its owner's word — an open
//! WebSocket (a `101`), or requests it answered with a `2xx` — never for merely being named (the
//! rules are in `src/sessions.rs`). Made-up ids go to the demo backend, which answers them as
//! Wt 4.14 does (docs/wt-traffic.txt §E): a `200` page of a new session, a `200` reload script for
//! a POST, a `403` for a WebSocket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::*;
use wtgate::admin::client::{AdminClient, Drained};
use wtgate::config::Config;
use wtgate::health::Admin;
use wtgate::sessions::PER_CLIENT;
use wtgate_demo::DemoBackend;
use wtgate_demo::ws::OP_CLOSE;

/// Polls `engine.sessions()` until `cond` holds; fails after 10 s.
fn wait_sessions(proxy: &Proxy, what: &str, cond: impl Fn(&[usize]) -> bool) -> Vec<usize> {
    eventually(what, || {
        let live = live(proxy);
        cond(&live).then_some(live)
    })
}

fn live(proxy: &Proxy) -> Vec<usize> {
    proxy.engine().sessions().iter().map(|b| b.live).collect()
}

#[test]
fn each_session_counts_once_for_its_owner_and_expires() {
    let s = start_pair(|c| {
        c.threads = 2;
        c.session_idle = Duration::from_secs(3);
    });
    let mut rng = Rng::new(21);
    let wt1: Vec<String> = (0..5).map(|_| session_id(&mut rng, "wt1")).collect();
    let wt2: Vec<String> = (0..3).map(|_| session_id(&mut rng, "wt2")).collect();
    // Each session's requests come on several fresh connections, which the kernel spreads over
    // both shards.
    for round in 0..4 {
        for id in wt1.iter().chain(&wt2) {
            let r = send_request(s.proxy.addr, &get(&format!("/app?wtd={id}&n={round}"))).unwrap();
            assert_eq!(r.status, 200);
        }
    }
    // Requests without a session, or with an id no backend owns, are no session.
    for t in ["/app", "/app?wtd=wt9AAAAAAAAAAAAAAAA", "/app?wtd=wt1short"] {
        assert_eq!(send_request(s.proxy.addr, &get(t)).unwrap().status, 200);
    }
    assert_eq!(live(&s.proxy), vec![5, 3]);
    let since = s.proxy.engine().sessions()[0]
        .since_last
        .expect("wt1 has sessions");
    assert!(since < Duration::from_secs(2), "{since:?}");
    wait_sessions(&s.proxy, "every session to expire", |l| l == [0, 0]);
}

#[test]
fn an_open_websocket_keeps_its_session_live() {
    let ws = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: false,
    };
    let b1 = TestBackend::start("wt1", ws);
    let proxy = start_proxy(&[b1.spec()], |c| c.session_idle = Duration::from_secs(3));
    let mut rng = Rng::new(22);
    let (plain, with_ws) = (session_id(&mut rng, "wt1"), session_id(&mut rng, "wt1"));
    let (mut w, _) = ws_connect(proxy.addr, &format!("/app?wtd={with_ws}&request=ws"));
    wait_sessions(&proxy, "the WebSocket's session", |l| l == [1]);
    // Seen after the WebSocket's session, so without the tunnel it would expire last.
    for n in 0..2 {
        let r = send_request(proxy.addr, &get(&format!("/app?wtd={plain}&n={n}"))).unwrap();
        assert_eq!(r.status, 200);
    }
    wait_sessions(&proxy, "both sessions", |l| l == [2]);
    wait_sessions(&proxy, "the plain session to expire", |l| l == [1]);
    w.write_all(&client_frame(OP_CLOSE, &[], [1, 2, 3, 4]))
        .unwrap();
    drop(w);
    wait_sessions(&proxy, "the WebSocket's session to expire", |l| l == [0]);
}

/// A Wt-like demo backend on a port of its own.
fn demo(prefix: &str) -> DemoBackend {
    DemoBackend::spawn(prefix, "127.0.0.1:0".parse().unwrap()).expect("demo backend")
}

fn with_admin(c: &mut Config) {
    c.admin = Some("127.0.0.1:0".parse().unwrap());
}

fn admin_client(proxy: &Proxy) -> AdminClient {
    let addr = proxy.engine().admin_addr().expect("admin listener");
    AdminClient::new(&format!("http://{addr}"), None).unwrap()
}

/// One request on a kept-alive connection, its answer checked to come from `prefix`.
fn ask(w: &mut Wire, raw: &[u8], prefix: &str) -> Response {
    w.write_all(raw).unwrap();
    let r = w.read_response(false).expect("an answer");
    assert_eq!(r.backend(), prefix, "{:?} {}", r.head, r.body_str());
    r
}

/// A request naming no session on `w`, answered: the proxy has recorded (or refused) what the
/// requests before it on `w` said, as it does that before it reads the next request.
fn settled(w: &mut Wire) {
    assert_eq!(ask(w, &get("/favicon.ico"), "wt1").status, 404);
}

/// Starts a session the way a browser does (`GET /` without `wtd`) on `prefix`'s server and
/// returns the id its page holds; the request goes on `w`, or on fresh connections until
/// round-robin picks `prefix`.
fn new_session(proxy: SocketAddr, w: Option<&mut Wire>, prefix: &str) -> String {
    let r = match w {
        Some(w) => ask(w, &get("/"), prefix),
        None => (0..50)
            .map(|_| send_request(proxy, &get("/")).unwrap())
            .find(|r| r.backend() == prefix)
            .expect("round-robin to reach the backend"),
    };
    assert_eq!(r.status, 200);
    let page = r.body_str();
    let at = page.find("data-wtd=\"").expect("the page's session id") + 10;
    page[at..at + prefix.len() + 16].to_string()
}

/// What a Wt page without a WebSocket sends for its session right after loading (the style, the
/// first update; docs/wt-traffic.txt §A): requests its server answers as its own.
fn load_page(w: &mut Wire, id: &str, prefix: &str) {
    let style = ask(w, &get(&format!("/?wtd={id}&request=style&page=1")), prefix);
    assert_eq!(
        style.header("Content-Type"),
        Some("text/css"),
        "known to it"
    );
    let update = get_or_post(&format!("/?wtd={id}"), b"request=jsupdate&signal=load");
    let update = ask(w, &update, prefix);
    assert!(
        !update.body_str().contains("unknown session"),
        "known to it"
    );
}

/// A request naming the made-up id `id`, one of four kinds, and the status Wt gives it.
fn made_up(proxy: SocketAddr, w: &mut Wire, id: &str, kind: usize) -> (Response, u16) {
    match kind % 4 {
        0 => (ask(w, &get(&format!("/?wtd={id}")), "wt1"), 200),
        1 => (
            ask(w, &get(&format!("/?wtd={id}&sid=1&request=script")), "wt1"),
            200,
        ),
        2 => (
            ask(
                w,
                &get_or_post(&format!("/?wtd={id}"), b"request=jsupdate"),
                "wt1",
            ),
            200,
        ),
        _ => {
            let upgrade = ws_upgrade_request(&format!("/?wtd={id}&request=ws"));
            (send_request(proxy, &upgrade).unwrap(), 403)
        }
    }
}

/// The case: 2 000 requests with made-up ids from one client, each answered `200` (a new
/// session's page, a reload script) or `403` (a WebSocket) by their "owner", leave at most
/// `PER_CLIENT` sessions per shard recorded, not 2 000; a real session of the same client, with
/// its WebSocket, still counts.
#[test]
fn two_thousand_made_up_ids_from_one_client_are_a_bounded_few_sessions() {
    let b1 = demo("wt1");
    let proxy = start_proxy(&[("wt1", b1.addr())], |c| c.threads = 2);
    let mut rng = Rng::new(23);
    let mut conns: Vec<Wire> = (0..4).map(|_| Wire::connect(proxy.addr)).collect();
    for i in 0..2000 {
        let id = session_id(&mut rng, "wt1");
        let (r, status) = made_up(proxy.addr, &mut conns[i % 4], &id, i);
        assert_eq!(
            r.status,
            status,
            "request {i}: {:?} {}",
            r.head,
            r.body_str()
        );
    }
    conns.iter_mut().for_each(settled);
    assert!(
        b1.sessions() >= 500,
        "the server started sessions of its own"
    );
    let sprayed = live(&proxy)[0];
    let bound = 2 * usize::from(PER_CLIENT);
    assert!(sprayed <= bound, "{sprayed} sessions from made-up ids");
    let id = new_session(proxy.addr, Some(&mut conns[0]), "wt1");
    let (_ws, _) = ws_connect(proxy.addr, &format!("/?wtd={id}&request=ws"));
    wait_sessions(&proxy, "the real session", |l| l[0] == sprayed + 1);
}

/// A client sending requests with new made-up ids for as long as it is let.
struct Sprayer {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: thread::JoinHandle<io::Result<()>>,
}

impl Sprayer {
    fn start(proxy: SocketAddr, seed: u64) -> Sprayer {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut w = Wire::connect(proxy);
            for _ in 0..10_000_000 {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let id = session_id(&mut rng, "wt1");
                w.write_all(&get(&format!("/?wtd={id}")))?;
                let r = w.read_response(false)?;
                if (r.status, r.backend()) != (200, "wt1") {
                    return Err(io::Error::other(format!("{:?}", r.head)));
                }
                sent2.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        });
        Sprayer { stop, sent, thread }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until it has sent `n` more requests than now.
    fn goes_on(&self, n: usize) {
        let from = self.sent();
        eventually("the sprayer to go on", || {
            (self.sent() >= from + n).then_some(())
        });
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .unwrap()
            .expect("every made-up id answered by wt1");
    }
}

/// `drain --wait` while a client keeps sending new made-up ids to the draining server: the ids do
/// not hold it (before, it never finished); an open WebSocket does, until it closes.
#[test]
fn made_up_ids_hold_no_drain_but_an_open_websocket_does() {
    let (b1, b2) = (demo("wt1"), demo("wt2"));
    let proxy = start_proxy(&[("wt1", b1.addr()), ("wt2", b2.addr())], |c| {
        with_admin(c);
        c.threads = 2;
        c.session_idle = Duration::from_secs(3);
    });
    let admin = admin_client(&proxy);
    let id = new_session(proxy.addr, None, "wt1");
    let (mut ws, _) = ws_connect(proxy.addr, &format!("/?wtd={id}&request=ws"));
    let sprayer = Sprayer::start(proxy.addr, 24);
    sprayer.goes_on(100);
    proxy.engine().set_admin("wt1", Admin::Drain).unwrap();
    // The first made-up ids counted (for 3 s, session_idle being shorter than a minute).
    wait_sessions(&proxy, "the WebSocket's session alone", |l| l == [1, 0]);
    sprayer.goes_on(200);
    assert_eq!(
        live(&proxy),
        [1, 0],
        "new made-up ids all along, none counted"
    );
    let wait = |timeout| {
        let every = Duration::from_millis(200);
        admin
            .wait_drained("wt1", timeout, every, &mut |_| {})
            .unwrap()
    };
    match wait(Duration::from_millis(1500)) {
        Drained::TimedOut(s) => assert_eq!(s.live, 1),
        other => panic!("the WebSocket's session holds the drain: {other:?}"),
    }
    ws.write_all(&client_frame(OP_CLOSE, &[], [1, 2, 3, 4]))
        .unwrap();
    drop(ws);
    let sent = sprayer.sent();
    assert_eq!(wait(Duration::from_secs(20)), Drained::Empty);
    assert!(
        sprayer.sent() > sent,
        "the spray went on while the drain ended"
    );
    sprayer.stop();
}

/// A session without a WebSocket that its server answers as its own (as after a long-poll page
/// load) is live and holds a drain; requests whose ids their owner does not answer with a `2xx`
/// (a WebSocket refused with `403`, a `404`) add nothing — before, each was a session.
#[test]
fn requests_its_owner_answers_make_a_session_that_holds_a_drain() {
    let (b1, b2) = (demo("wt1"), demo("wt2"));
    let proxy = start_proxy(&[("wt1", b1.addr()), ("wt2", b2.addr())], |c| {
        with_admin(c);
        c.threads = 2;
    });
    let mut rng = Rng::new(25);
    let id = new_session(proxy.addr, None, "wt1");
    load_page(&mut Wire::connect(proxy.addr), &id, "wt1");
    wait_sessions(&proxy, "the session", |l| l == [1, 0]);
    let stale = session_id(&mut rng, "wt1");
    let upgrade = ws_upgrade_request(&format!("/?wtd={stale}&request=ws"));
    assert_eq!(send_request(proxy.addr, &upgrade).unwrap().status, 403);
    let favicon = get(&format!("/favicon.ico?wtd={stale}"));
    assert_eq!(send_request(proxy.addr, &favicon).unwrap().status, 404);
    assert_eq!(live(&proxy), [1, 0]);
    proxy.engine().set_admin("wt1", Admin::Drain).unwrap();
    let every = Duration::from_millis(200);
    let end =
        admin_client(&proxy).wait_drained("wt1", Duration::from_millis(1500), every, &mut |_| {});
    match end.unwrap() {
        Drained::TimedOut(s) => assert_eq!(s.live, 1),
        other => panic!("the session holds the drain: {other:?}"),
    }
}

/// A connection to a `proxy-protocol` listener on behalf of client `ip`.
fn from_client(proxy: SocketAddr, ip: &str) -> Wire {
    let mut w = Wire::connect(proxy);
    let header = format!("PROXY TCP4 {ip} 192.0.2.1 51000 80\r\n");
    w.write_all(header.as_bytes()).unwrap();
    w
}

/// The bound is per client address: one address spraying made-up ids gets `PER_CLIENT` recorded
/// and no more, while another's session is recorded as ever; the sprayer's own sessions count from
/// then on through their WebSocket only.
#[test]
fn the_bound_is_per_client_address() {
    let b1 = demo("wt1");
    let proxy = start_proxy(&[("wt1", b1.addr())], |c| c.listen[0].proxy_protocol = true);
    let mut rng = Rng::new(26);
    let mut sprayer = from_client(proxy.addr, "203.0.113.7");
    for _ in 0..100 {
        let id = session_id(&mut rng, "wt1");
        assert_eq!(
            ask(&mut sprayer, &get(&format!("/?wtd={id}")), "wt1").status,
            200
        );
    }
    let bound = usize::from(PER_CLIENT);
    assert_eq!(live(&proxy), [bound]);
    let mut other = from_client(proxy.addr, "198.51.100.9");
    let id = new_session(proxy.addr, Some(&mut other), "wt1");
    load_page(&mut other, &id, "wt1");
    assert_eq!(live(&proxy), [bound + 1]);
    let id = new_session(proxy.addr, Some(&mut sprayer), "wt1");
    load_page(&mut sprayer, &id, "wt1");
    settled(&mut sprayer);
    assert_eq!(
        live(&proxy),
        [bound + 1],
        "over its bound, the address records none"
    );
    let mut ws = from_client(proxy.addr, "203.0.113.7");
    let r = ask(
        &mut ws,
        &ws_upgrade_request(&format!("/?wtd={id}&request=ws")),
        "wt1",
    );
    assert_eq!(r.status, 101, "{:?}", r.head);
    wait_sessions(&proxy, "its WebSocket's session", |l| l == [bound + 2]);
}
