//! Many clients at once over two shards: every answer right, nothing lost or duplicated.

use std::thread;

use crate::common::*;
use wtgate_demo::ws::{OP_BINARY, OP_CLOSE};

#[test]
fn thirty_two_concurrent_clients() {
    const CLIENTS: usize = 32;
    const REQUESTS: usize = 100;
    let behavior = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: false,
    };
    let b1 = TestBackend::start("wt1", behavior);
    let b2 = TestBackend::start("wt2", behavior);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |c| c.threads = 2);
    let addr = proxy.addr;
    let mut handles = Vec::new();
    for c in 0..CLIENTS {
        handles.push(thread::spawn(move || {
            let mut rng = Rng::new(1000 + c as u64);
            let sessions = [session_id(&mut rng, "wt1"), session_id(&mut rng, "wt2")];
            let mut w = Wire::connect(addr);
            for i in 0..REQUESTS {
                let k = rng.range(0, 2) as usize;
                let (target, owner) = match k {
                    0 | 1 => (
                        format!("/?wtd={}&c={c}&i={i}", sessions[k]),
                        Some(["wt1", "wt2"][k]),
                    ),
                    _ => (format!("/?c={c}&i={i}"), None),
                };
                let body = if rng.range(0, 3) == 0 {
                    let n = rng.range(0, 64 * 1024) as usize;
                    rng.bytes(n)
                } else {
                    Vec::new()
                };
                w.write_all(&get_or_post(&target, &body)).unwrap();
                let r = w
                    .read_response(false)
                    .unwrap_or_else(|e| panic!("client {c} request {i} {target}: {e}"));
                assert_eq!(r.status, 200, "client {c} #{i}: {:?}", r.head);
                if let Some(o) = owner {
                    assert_eq!(r.backend(), o, "client {c} #{i} {target}");
                }
                let method = if body.is_empty() { "GET" } else { "POST" };
                assert_eq!(r.body_str(), format!("{} {method} {target}", r.backend()));
                assert_eq!(
                    r.header("X-Req-Fnv"),
                    Some(format!("{:016x}", fnv(&body)).as_str())
                );
            }
            // Every fourth client also runs a WebSocket session.
            if c % 4 == 0 {
                let (mut ws, r) =
                    ws_connect(addr, &format!("/?wtd={}&request=ws", sessions[c % 2]));
                assert_eq!(r.backend(), ["wt1", "wt2"][c % 2]);
                for f in 0..200 {
                    let n = rng.range(0, 4096) as usize;
                    let payload = rng.bytes(n);
                    ws.write_all(&client_frame(OP_BINARY, &payload, [1, 2, 3, f as u8]))
                        .unwrap();
                    let (_, op, p) = ws_recv(&mut ws).unwrap().expect("echo");
                    assert_eq!(op, OP_BINARY);
                    assert!(p == payload, "client {c} frame {f}");
                }
                ws.write_all(&client_frame(OP_CLOSE, &1000u16.to_be_bytes(), [0; 4]))
                    .unwrap();
                ws.stream.shutdown(std::net::Shutdown::Write).unwrap();
                let mut frames = 0;
                while ws_recv(&mut ws).unwrap().is_some() {
                    frames += 1;
                    assert!(frames <= 2);
                }
            }
        }));
    }
    for h in handles {
        h.join().expect("a client thread failed");
    }
    let upgrades = CLIENTS.div_ceil(4);
    assert_eq!(
        b1.request_count() + b2.request_count(),
        CLIENTS * REQUESTS + upgrades,
        "requests lost or duplicated"
    );
}
