//! Live Wt sessions per backend, as wtgate counts them from the `wtd` it routes: each session once
//! however many connections and shards its requests took, only while it is live (a request within
//! `session_idle`, or an open WebSocket).

use std::time::Duration;

use crate::common::*;
use wtgate_demo::ws::OP_CLOSE;

/// Polls `engine.sessions()` until `cond` holds; fails after 10 s.
fn wait_sessions(proxy: &Proxy, what: &str, cond: impl Fn(&[usize]) -> bool) -> Vec<usize> {
    eventually(what, || {
        let live: Vec<usize> = proxy.engine().sessions().iter().map(|b| b.live).collect();
        cond(&live).then_some(live)
    })
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
    let live: Vec<usize> = s.proxy.engine().sessions().iter().map(|b| b.live).collect();
    assert_eq!(live, vec![5, 3]);
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
    assert_eq!(
        send_request(proxy.addr, &get(&format!("/app?wtd={plain}")))
            .unwrap()
            .status,
        200
    );
    wait_sessions(&proxy, "both sessions", |l| l == [2]);
    wait_sessions(&proxy, "the plain session to expire", |l| l == [1]);
    w.write_all(&client_frame(OP_CLOSE, &[], [1, 2, 3, 4]))
        .unwrap();
    drop(w);
    wait_sessions(&proxy, "the WebSocket's session to expire", |l| l == [0]);
}
