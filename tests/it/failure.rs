//! Backends that are down, die mid-response or are too slow (docs/design.md "Health", "Routing" 3–5,
//! "Timeouts").

use std::time::Duration;

use crate::common::*;

/// wt1 is down (nothing listens). Session-less requests all succeed on wt2 (connect retried and
/// redispatched), over keep-alive and over fresh connections, with two shards so the passive
/// mark-down has to reach the other shard too.
#[test]
fn one_backend_down_sessionless_requests_all_succeed() {
    let down = closed_port();
    let b2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[("wt1", down), b2.spec()], |c| c.threads = 2);
    let mut w = Wire::connect(proxy.addr);
    for i in 0..20 {
        w.write_all(&get(&format!("/?ka={i}"))).unwrap();
        let r = w
            .read_response(false)
            .unwrap_or_else(|e| panic!("keep-alive request #{i}: {e}"));
        assert_eq!(
            r.status,
            200,
            "keep-alive request #{i}: {:?} {}",
            r.head,
            r.body_str()
        );
        assert_eq!(r.backend(), "wt2");
    }
    for i in 0..20 {
        let r = send_request(proxy.addr, &get(&format!("/?fresh={i}")))
            .unwrap_or_else(|e| panic!("fresh-connection request #{i}: {e}"));
        assert_eq!(
            r.status,
            200,
            "fresh-connection request #{i}: {:?} {}",
            r.head,
            r.body_str()
        );
        assert_eq!(r.backend(), "wt2");
    }
    assert_eq!(
        b2.request_count(),
        40,
        "each request must reach wt2 exactly once"
    );
}

/// A request for a session of the down backend is redispatched: wt2 answers it.
#[test]
fn down_backends_session_is_redispatched() {
    let down = closed_port();
    let b2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[("wt1", down), b2.spec()], |_| {});
    for i in 0..5 {
        let target = format!("/?wtd=wt1AbCdEfGhIjKlMnOp&request=script&i={i}");
        let r = send_request(proxy.addr, &get(&target)).unwrap();
        assert_eq!(r.status, 200, "#{i}: {:?} {}", r.head, r.body_str());
        assert_eq!(r.body_str(), format!("wt2 GET {target}"));
    }
    // POST jsupdate too (Wt answers it with a reload script; what matters here is that it gets
    // an answer from a live server instead of an error).
    let body = b"request=jsupdate&ackId=1&pageId=1";
    let mut raw = format!(
        "POST /?wtd=wt1AbCdEfGhIjKlMnOp HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let r = send_request(proxy.addr, &raw).unwrap();
    assert_eq!(r.status, 200, "{:?} {}", r.head, r.body_str());
    assert_eq!(r.backend(), "wt2");
    assert_eq!(r.header("X-Req-Len"), Some(body.len().to_string().as_str()));
}

/// Everything down: 503 with Retry-After, for session-less and session requests alike, once
/// `--queue-timeout` has passed without a backend coming back.
/// docs/design.md "HTTP/1.1" asks for `Connection: close` only "where the stream can't continue": after a 503 to a
/// complete bodiless request the proxy may keep the connection; if it does not say `close`, the
/// connection must then really go on (a second request gets its own answer). A request with
/// `Connection: close` gets a 503 with `Connection: close` and EOF.
#[test]
fn all_backends_down_gives_503_with_retry_after() {
    let proxy = start_proxy(&[("wt1", closed_port()), ("wt2", closed_port())], |c| {
        c.timeouts.queue = Duration::from_millis(50);
    });
    for target in [
        "/",
        "/?wtd=wt1AbCdEfGhIjKlMnOp&request=style",
        "/?wtd=wt2AbCdEfGhIjKlMnOp",
    ] {
        for _ in 0..3 {
            let mut w = Wire::connect(proxy.addr);
            w.write_all(&get(target)).unwrap();
            let r = w
                .read_response(false)
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!(r.status, 503, "{target}: {:?} {}", r.head, r.body_str());
            assert!(
                r.header("Retry-After").is_some(),
                "503 without Retry-After: {:?}",
                r.head
            );
            if r.head.has_token("Connection", "close") {
                w.expect_closed().unwrap();
            } else {
                w.write_all(&get(target)).unwrap();
                let r2 = w
                    .read_response(false)
                    .unwrap_or_else(|e| panic!("{target}: 503 kept the connection, but: {e}"));
                assert_eq!(r2.status, 503, "{:?}", r2.head);
            }
            let mut w = Wire::connect(proxy.addr);
            w.write_all(
                format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .unwrap();
            let r = w.read_response(false).unwrap();
            assert_eq!(r.status, 503);
            assert!(r.head.has_token("Connection", "close"), "{:?}", r.head);
            w.expect_closed().unwrap();
        }
    }
}

/// The backend sends a head with Content-Length 1000, 10 body bytes, and closes: the client must
/// not get a complete response; it sees the connection end before the 1000 bytes. (A 502 would be
/// acceptable only if no byte of the backend's response had been passed on; with a streaming proxy
/// the head has gone out already.) The request is not replayed: response bytes had arrived.
#[test]
fn backend_closing_mid_response_is_not_a_complete_response() {
    let b1 = TestBackend::start("wt1", Behavior::CloseMidResponse);
    let proxy = start_proxy(&[b1.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get("/?wtd=wt1AbCdEfGhIjKlMnOp")).unwrap();
    match w.read_response(false) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "expected the connection to end early, got {e}"
        ),
        Ok(r) => {
            assert_ne!(
                r.status,
                200,
                "a truncated response was completed: {:?} {} B",
                r.head,
                r.body.len()
            );
            assert_eq!(r.status, 502, "{:?}", r.head);
            w.expect_closed().unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(100)); // grace for a (wrong) replay to show up
    assert_eq!(
        b1.request_count(),
        1,
        "the request was replayed after response bytes had arrived"
    );
}

/// A backend silent for longer than `timeouts.server` (1 s here) → 504 with Connection: close.
#[test]
fn slow_backend_gives_504() {
    let b1 = TestBackend::start("wt1", Behavior::Slow(Duration::from_secs(3)));
    let proxy = start_proxy(&[b1.spec()], |c| c.timeouts.server = Duration::from_secs(1));
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get("/?wtd=wt1AbCdEfGhIjKlMnOp&request=script"))
        .unwrap();
    let r = w.read_response(false).expect("an answer from the proxy");
    assert_eq!(r.status, 504, "{:?} {}", r.head, r.body_str());
    assert!(r.head.has_token("Connection", "close"), "{:?}", r.head);
    w.expect_closed().unwrap();
}

/// Many requests for a down owner's session, each on a fresh connection, with two shards (so
/// both shards meet the dead backend): every one gets a 200 from the other backend.
#[test]
fn repeated_requests_to_a_down_owner_never_hang_or_fail() {
    let down = closed_port();
    let b2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[("wt1", down), b2.spec()], |c| c.threads = 2);
    for i in 0..30 {
        let r = send_request(
            proxy.addr,
            &get(&format!("/?wtd=wt1AbCdEfGhIjKlMnOp&i={i}")),
        )
        .unwrap();
        assert_eq!(r.status, 200, "#{i}: {:?} {}", r.head, r.body_str());
    }
}

/// docs/design.md "HTTP/1.1": "A pooled connection that dies before any response byte may be retried once on a
/// fresh connection, only if the request is safe to replay." The backend closes each connection
/// without answering when a second request arrives on it (the race with its idle timeout).
/// A GET on such a stale pooled connection is retried and answered; a POST is not replayed
/// (the backend may have acted on it): 502, and the backend saw it once.
#[test]
fn stale_pooled_connection_retried_for_get_not_for_post() {
    let b1 = TestBackend::start("wt1", Behavior::DropSecondRequest);
    let proxy = start_proxy(&[b1.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get("/?n=1")).unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.body_str(), "wt1 GET /?n=1");
    // Goes out on the pooled connection, which dies unanswered: retried on a fresh one.
    w.write_all(&get("/?n=2")).unwrap();
    let r = w
        .read_response(false)
        .expect("GET on a stale pooled connection");
    assert_eq!(
        r.status,
        200,
        "safe GET not retried after a stale pooled connection: {:?} {}",
        r.head,
        r.body_str()
    );
    assert_eq!(r.body_str(), "wt1 GET /?n=2");
    // The fresh connection is pooled in turn; the POST on it dies unanswered and must not be resent.
    let body = b"request=jsupdate&ackId=7&pageId=1";
    let mut raw = format!(
        "POST /?n=3 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    w.write_all(&raw).unwrap();
    let r = w.read_response(false).expect("an answer to the POST");
    assert_eq!(r.status, 502, "{:?} {}", r.head, r.body_str());
    std::thread::sleep(Duration::from_millis(100)); // grace for a (wrong) replay to show up
    let posts = b1.requests().iter().filter(|r| r.target == "/?n=3").count();
    assert_eq!(posts, 1, "the POST was replayed after its connection died");
}

/// An idle keep-alive client connection is closed after `timeouts.keepalive` (1 s here), silently:
/// no stray bytes (no 408 for a client that sent nothing).
#[test]
fn idle_keepalive_connection_is_closed_silently() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec()], |c| {
        c.timeouts.keepalive = Duration::from_secs(1)
    });
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get("/?n=1")).unwrap();
    assert_eq!(w.read_response(false).unwrap().status, 200);
    w.expect_closed().unwrap();
}

/// A client that disconnects in the middle of its request body: the backend connection that got
/// half a body must not be reused, or the next client's request would be read as the rest of that
/// body. One shard, so the next client meets the same pool.
#[test]
fn client_gone_mid_body_does_not_poison_the_pool() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec()], |_| {});
    for round in 0..3 {
        let mut a = Wire::connect(proxy.addr);
        a.write_all(b"POST /?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
            .unwrap();
        // Wait until the head and the first bytes reached the backend, then vanish.
        for _ in 0..500 {
            let seen: String = b1
                .conns()
                .iter()
                .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
                .collect();
            if seen.matches("0123456789").count() > round {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(a);
        let r = send_request(proxy.addr, &get(&format!("/?b={round}")))
            .unwrap_or_else(|e| panic!("round {round}: next client's request: {e}"));
        assert_eq!(r.status, 200, "round {round}: {:?}", r.head);
        assert_eq!(
            r.body_str(),
            format!("wt1 GET /?b={round}"),
            "round {round}"
        );
    }
}

/// A client that disconnects while its response is still coming: that backend connection must not
/// be pooled half-way, or the next client would get the previous client's response.
#[test]
fn client_gone_while_waiting_does_not_get_answers_mixed_up() {
    let b1 = TestBackend::start("wt1", Behavior::Slow(Duration::from_millis(300)));
    let proxy = start_proxy(&[b1.spec()], |_| {});
    let mut a = Wire::connect(proxy.addr);
    a.write_all(&get("/?who=a")).unwrap();
    for _ in 0..500 {
        if b1.request_count() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(a);
    for i in 0..3 {
        let r = send_request(proxy.addr, &get(&format!("/?who=b{i}"))).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body_str(),
            format!("wt1 GET /?who=b{i}"),
            "got another client's answer"
        );
    }
}

/// `maxconn` 2: a third client waits (in the kernel backlog) instead of failing, and is served as
/// soon as one of the first two leaves.
#[test]
fn maxconn_makes_extra_clients_wait_not_fail() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec()], |c| c.maxconn = 2);
    let mut held = Vec::new();
    for i in 0..2 {
        let mut w = Wire::connect(proxy.addr);
        w.write_all(&get(&format!("/?held={i}"))).unwrap();
        assert_eq!(w.read_response(false).unwrap().status, 200);
        held.push(w);
    }
    let third = std::thread::spawn(move || {
        let mut w = Wire::connect(proxy.addr);
        w.write_all(&get("/?third=1")).unwrap();
        let r = w.read_response(false);
        (r, proxy)
    });
    // Not a synchronisation: only gives the third client time to queue while both slots are
    // taken, so the test exercises the waiting (it passes, vacuously, if that takes longer).
    std::thread::sleep(Duration::from_millis(200));
    drop(held.remove(0));
    let (r, _proxy) = third.join().unwrap();
    let r = r.expect("the third client was not served after a slot freed up");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "wt1 GET /?third=1");
}

/// A backend marked down by a refused connect is used again once it is back: requests for its
/// sessions reach it again (here within 15 s; the proxy re-probes a passively-marked backend after
/// a short while, or via active checks).
#[test]
fn backend_that_comes_back_gets_its_sessions_again() {
    let port = closed_port();
    let b2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[("wt1", port), b2.spec()], |_| {});
    let target = "/?wtd=wt1AbCdEfGhIjKlMnOp&request=style";
    let r = send_request(proxy.addr, &get(target)).unwrap();
    assert_eq!(r.backend(), "wt2", "redispatched while wt1 is down");
    let b1 = TestBackend::start_at("wt1", Behavior::Normal, port);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = send_request(proxy.addr, &get(target)).unwrap();
        assert_eq!(r.status, 200);
        if r.backend() == "wt1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wt1 is back but its sessions still go to {}",
            r.backend()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(b1.request_count() >= 1);
}

/// A backend that stalls mid-body for longer than `timeouts.server` (1 s here): the client sees
/// the connection end before the full Content-Length, instead of waiting for the backend.
#[test]
fn backend_stalling_mid_body_is_cut_at_the_server_timeout() {
    let b1 = TestBackend::start("wt1", Behavior::StallMidResponse(Duration::from_secs(5)));
    let proxy = start_proxy(&[b1.spec()], |c| c.timeouts.server = Duration::from_secs(1));
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get("/?stall=1")).unwrap();
    let start = std::time::Instant::now();
    match w.read_response(false) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "expected the connection to end early, got {e} after {:?}",
            start.elapsed()
        ),
        Ok(r) => panic!(
            "got a complete response ({} {} B): the proxy waited out the stall",
            r.status,
            r.body.len()
        ),
    }
}

/// A client that stalls in the middle of its request body for longer than `timeouts.client`
/// (1 s here) is dropped (with or without a 408), and the half-fed backend connection is not
/// reused for the next client.
#[test]
fn client_stalling_mid_body_times_out_without_poisoning_the_pool() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec()], |c| c.timeouts.client = Duration::from_secs(1));
    let mut w = Wire::connect(proxy.addr);
    w.write_all(b"POST /?stall=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    match w.read_response(false) {
        Ok(r) => {
            assert_eq!(r.status, 408, "{:?} {}", r.head, r.body_str());
            w.expect_closed().unwrap();
        }
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "the stalled client was not dropped: {e}"
        ),
    }
    let r = send_request(proxy.addr, &get("/?next=1")).unwrap();
    assert_eq!(r.body_str(), "wt1 GET /?next=1");
}

/// The engine's stats once `n` requests are counted on backends: a request is counted when its
/// exchange ends, just after the client has its last byte. Bounded: 10 s.
fn counted(proxy: &Proxy, n: u64) -> wtgate::metrics::Stats {
    eventually(&format!("{n} requests counted on backends"), || {
        let stats = proxy.engine().stats();
        let on_backends: u64 = stats.backends.iter().map(|b| b.requests).sum();
        (on_backends >= n).then_some(stats)
    })
}

/// A Wt server stand-in whose connections die unanswered at their second request, and which
/// tells the test (and waits for its go) just before: so the test can change the proxy's state
/// between a request's first try and its resend.
struct PausingBackend {
    addr: std::net::SocketAddr,
    /// Receives one message per stale request; answer on the paired sender to let it close.
    stale: std::sync::mpsc::Receiver<std::sync::mpsc::Sender<()>>,
}

impl PausingBackend {
    fn start(name: &'static str) -> PausingBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, stale) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut w = Wire::new(conn);
                    for n in 1.. {
                        // Each head (no bodies come here), parsed by `wtgate::h1`.
                        let Ok(Some(_)) = w.read_request_head() else {
                            return;
                        };
                        if n == 2 {
                            let (go, wait) = std::sync::mpsc::channel();
                            if tx.send(go).is_ok() {
                                let _ = wait.recv();
                            }
                            return; // closes unanswered
                        }
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: 2\r\n\r\nok"
                        );
                        if w.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        PausingBackend { addr, stale }
    }
}

/// docs/design.md "Health": "A resend follows the routing rules (health, admin state) like a first
/// try." wt1's pooled connection dies unanswered under a GET of a wt1 session, and wt1 is put in
/// maintenance in that instant: the resend goes to wt2 (redispatched), not to wt1 again. Each
/// request is counted once, on the backend that got it last; tries and resends apart.
#[test]
fn a_resend_follows_the_routing_rules_and_requests_count_once() {
    let wt1 = PausingBackend::start("wt1");
    let wt2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[("wt1", wt1.addr), wt2.spec()], |c| {
        c.threads = 1;
        c.check_interval = Duration::from_secs(3600);
    });
    let sid = session_id(&mut Rng::new(11), "wt1");
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get(&format!("/?wtd={sid}&n=1"))).unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!((r.status, r.backend()), (200, "wt1"));
    // The second request of this client goes on the pooled connection, which wt1 drops.
    w.write_all(&get(&format!("/?wtd={sid}&n=2"))).unwrap();
    let go = wt1
        .stale
        .recv_timeout(Duration::from_secs(10))
        .expect("wt1 never saw the request on its pooled connection");
    proxy
        .engine()
        .set_admin("wt1", wtgate::health::Admin::Maint)
        .unwrap();
    go.send(()).unwrap();
    let r = w.read_response(false).expect("an answer after the resend");
    assert_eq!(
        (r.status, r.backend()),
        (200, "wt2"),
        "the resend ignored wt1's maintenance: {:?}",
        r.head
    );
    let stats = counted(&proxy, 2);
    let (s1, s2) = (stats.backend("wt1").unwrap(), stats.backend("wt2").unwrap());
    assert_eq!(stats.requests, 2, "{stats:?}");
    assert_eq!((s1.requests, s2.requests), (1, 1), "{stats:?}");
    assert_eq!((s1.attempts, s1.resends), (2, 1), "{stats:?}");
    assert_eq!((s2.attempts, s2.resends), (1, 0), "{stats:?}");
    assert_eq!(s1.redispatched, 1, "{stats:?}");
}

/// A refused connect is retried elsewhere: the request is counted once (on wt2, which answered),
/// the failed try as an attempt, a connect failure and a retry of wt1.
#[test]
fn a_retried_connect_counts_one_request_and_one_retry() {
    let down = closed_port();
    let wt2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[("wt1", down), wt2.spec()], |c| {
        c.threads = 1;
        c.check_interval = Duration::from_secs(3600);
    });
    let sid = session_id(&mut Rng::new(12), "wt1");
    let r = send_request(proxy.addr, &get(&format!("/?wtd={sid}"))).unwrap();
    assert_eq!((r.status, r.backend()), (200, "wt2"));
    let stats = counted(&proxy, 1);
    let (s1, s2) = (stats.backend("wt1").unwrap(), stats.backend("wt2").unwrap());
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(
        (s1.requests, s1.attempts, s1.connect_failures, s1.retries),
        (0, 1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(
        (s2.requests, s2.attempts, s2.retries),
        (1, 1, 0),
        "{stats:?}"
    );
}

/// `--reuse safe` (the default): the first request of a client connection goes on a fresh backend
/// connection, so a POST that opens a connection (a browser cannot resend it) never meets a pooled
/// connection its backend is closing. `--reuse always` takes the pooled one, and the POST fails.
#[test]
fn the_first_request_of_a_client_connection_never_meets_a_stale_pooled_connection() {
    let post = |n: usize| {
        let body = b"request=jsupdate&ackId=1";
        let mut raw = format!(
            "POST /?n={n} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw
    };
    for (reuse, want) in [
        (wtgate::config::Reuse::Safe, 200),
        (wtgate::config::Reuse::Always, 502),
    ] {
        let b1 = TestBackend::start("wt1", Behavior::DropSecondRequest);
        let proxy = start_proxy(&[b1.spec()], |c| c.reuse = reuse);
        // Leaves one connection in the pool, which dies at its next request.
        assert_eq!(send_request(proxy.addr, &get("/?n=1")).unwrap().status, 200);
        let r = send_request(proxy.addr, &post(2)).unwrap();
        assert_eq!(r.status, want, "{reuse:?}: {:?} {}", r.head, r.body_str());
    }
}

/// Every request that does not end with a backend's answer, and every connection refused before
/// routing, is counted by its kind: what the metrics and the access log will show.
#[test]
fn failures_and_rejections_are_counted_by_kind() {
    let slow = TestBackend::start("wt1", Behavior::Slow(Duration::from_secs(3)));
    let proxy = start_proxy(&[slow.spec()], |c| {
        c.timeouts.server = Duration::from_millis(300)
    });
    let kind = |list: &[(&str, u64)], name: &str| {
        list.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no kind {name} in {list:?}"))
    };
    assert_eq!(send_request(proxy.addr, &get("/slow")).unwrap().status, 504);
    let r = send_request(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);
    let r = send_request(proxy.addr, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(r.status, 505);
    let stats = counted(&proxy, 1);
    assert_eq!(kind(&stats.failures, "upstream_timeout"), 1, "{stats:?}");
    let others: u64 = stats.failures.iter().map(|(_, v)| v).sum();
    assert_eq!(others, 1, "{stats:?}");
    assert_eq!(kind(&stats.rejections, "malformed"), 1, "{stats:?}");
    assert_eq!(kind(&stats.rejections, "version"), 1, "{stats:?}");
    assert_eq!(
        stats.requests, 1,
        "rejected heads are not requests: {stats:?}"
    );
}
