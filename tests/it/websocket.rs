//! WebSocket upgrades through the proxy (docs/design.md "Upgrades"): routed by `wtd`, relayed as a
//! raw tunnel, half-closes passed on, non-101 answers continue as HTTP, `Accept-Encoding` dropped.

use std::io::Write;
use std::net::Shutdown;
use std::thread;

use crate::common::*;
use wtgate_demo::ws::{OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

fn ws_backends(reject: bool, close_after: Option<usize>) -> (TestBackend, TestBackend) {
    let b = Behavior::WsEcho {
        reject,
        close_after,
        greet: false,
    };
    (TestBackend::start("wt1", b), TestBackend::start("wt2", b))
}

/// Sends a close frame, half-closes, and expects: the backend's "saw your half-close" text frame,
/// the echoed close frame, then EOF.
fn close_and_expect_clean_end(w: &mut Wire) {
    w.write_all(&client_frame(
        OP_CLOSE,
        &1000u16.to_be_bytes(),
        [1, 2, 3, 4],
    ))
    .unwrap();
    w.stream.shutdown(Shutdown::Write).unwrap();
    let f = ws_recv(w).expect("reading after half-close");
    assert_eq!(
        f.as_ref().map(|(_, op, p)| (*op, p.as_slice())),
        Some((OP_TEXT, WS_AFTER_HALF_CLOSE)),
        "the backend did not see the client's half-close (EOF) after its close frame, or the \
         backend→client direction stopped at the half-close"
    );
    let f = ws_recv(w).expect("reading the close echo");
    assert_eq!(
        f.map(|(_, op, p)| (op, p)),
        Some((OP_CLOSE, 1000u16.to_be_bytes().to_vec())),
        "no close echo"
    );
    let end = ws_recv(w);
    assert!(
        matches!(end, Ok(None))
            || matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "tunnel did not end with EOF after both sides closed: {end:?}"
    );
}

#[test]
fn upgrade_goes_to_the_session_owner_without_accept_encoding() {
    let (b1, b2) = ws_backends(false, None);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});
    let mut rng = Rng::new(3);
    let sid = session_id(&mut rng, "wt2");
    let target = format!("/?wtd={sid}&request=ws");
    let (mut w, r) = ws_connect(proxy.addr, &target);
    assert_eq!(r.backend(), "wt2");
    assert_eq!(
        b1.request_count(),
        0,
        "wt1 saw the upgrade of a wt2 session"
    );
    let seen = b2.requests();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.target, target);
    assert_eq!(
        up.header("Accept-Encoding"),
        None,
        "Accept-Encoding must be dropped from upgrade requests (Wt gzips the frame stream): {:?}",
        up.headers
    );
    assert_eq!(
        up.header("Upgrade")
            .map(|s| s.to_ascii_lowercase())
            .as_deref(),
        Some("websocket")
    );
    assert!(
        up.header("Connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade")),
        "Connection: Upgrade not forwarded: {:?}",
        up.headers
    );
    assert_eq!(up.header("Sec-WebSocket-Key"), Some(WS_KEY));
    assert_eq!(up.header("Sec-WebSocket-Version"), Some("13"));
    assert_eq!(
        up.header("Sec-WebSocket-Extensions"),
        Some("permessage-deflate; client_max_window_bits"),
        "Sec-WebSocket-Extensions must be untouched"
    );

    // A few frames both ways, incl. a ping.
    for (op, payload) in [
        (
            OP_TEXT,
            b"&pageId=1&Wt-params=&signal=s1c&wsRqId=0".to_vec(),
        ),
        (OP_BINARY, vec![0u8; 126]),
        (OP_PING, b"ping".to_vec()),
    ] {
        w.write_all(&client_frame(op, &payload, [9, 8, 7, 6]))
            .unwrap();
        let (_, rop, rp) = ws_recv(&mut w).unwrap().expect("echo");
        assert_eq!(rop, if op == OP_PING { OP_PONG } else { op });
        assert_eq!(rp, payload);
    }
    close_and_expect_clean_end(&mut w);
    assert_eq!(b2.ws_half_closes(), 1);
}

/// 10 000 frames of seeded random sizes (mostly ≤ 1 KiB, one in 16 up to ~68 KiB so 16- and 64-bit
/// lengths both appear; uniform 0–64 KiB would move ~330 MB each way and slow the suite for no
/// extra coverage), written by one thread while this one reads and checks every echo.
#[test]
fn ten_thousand_frames_echoed_intact() {
    const FRAMES: usize = 10_000;
    let (b1, b2) = ws_backends(false, None);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});
    let mut rng = Rng::new(4);
    let sid = session_id(&mut rng, "wt1");
    let (mut w, r) = ws_connect(proxy.addr, &format!("/?wtd={sid}&request=ws"));
    assert_eq!(r.backend(), "wt1");

    // Both threads derive the same frame sequence from the same seed.
    fn frame(rng: &mut Rng, i: usize) -> (u8, Vec<u8>) {
        let len = match i {
            0 => 0,
            1 => 125,
            2 => 126,
            3 => 65535,
            4 => 65536,
            _ if rng.range(0, 15) == 0 => rng.range(0, 70_000) as usize,
            _ => rng.range(0, 1024) as usize,
        };
        let op = match rng.range(0, 20) {
            0 => OP_PING,
            1..=9 => OP_TEXT,
            _ => OP_BINARY,
        };
        let len = if op == OP_PING { len.min(125) } else { len };
        let payload = if op == OP_BINARY {
            rng.bytes(len)
        } else {
            rng.alnum(len).into_bytes()
        };
        (op, payload)
    }

    let mut writer = w.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut rng = Rng::new(10_000);
        let mut out = Vec::with_capacity(256 * 1024);
        for i in 0..FRAMES {
            let (op, payload) = frame(&mut rng, i);
            let mask = (rng.next_u64() as u32).to_le_bytes();
            wtgate_demo::ws::encode_frame(&mut out, true, op, &payload, Some(mask));
            if out.len() > 128 * 1024 {
                writer.write_all(&out)?;
                out.clear();
            }
        }
        writer.write_all(&out)?;
        Ok::<_, std::io::Error>(writer)
    });

    let mut rng = Rng::new(10_000);
    for i in 0..FRAMES {
        let (op, payload) = frame(&mut rng, i);
        let _mask = rng.next_u64();
        let got = ws_recv(&mut w).unwrap_or_else(|e| panic!("frame #{i}: {e}"));
        let Some((fin, rop, rp)) = got else {
            panic!("tunnel closed after {i} of {FRAMES} frames");
        };
        assert!(fin);
        assert_eq!(
            rop,
            if op == OP_PING { OP_PONG } else { op },
            "frame #{i} opcode"
        );
        if rp != payload {
            panic!(
                "frame #{i}: {} B echoed as {} B, or bytes differ",
                payload.len(),
                rp.len()
            );
        }
    }
    sender.join().unwrap().expect("writer thread");
    close_and_expect_clean_end(&mut w);
    assert_eq!(b1.request_count(), 1);
    assert_eq!(b2.request_count(), 0);
}

/// The client half-closes after its close frame: the backend sees EOF (the half-close is passed
/// on), can still send, and when it closes the client reads EOF.
#[test]
fn client_half_close_is_passed_on_and_ends_the_tunnel() {
    let (b1, b2) = ws_backends(false, None);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});
    let (mut w, _) = ws_connect(proxy.addr, "/?wtd=wt1AbCdEfGhIjKlMnOp&request=ws");
    w.write_all(&client_frame(OP_TEXT, b"hello", [1, 1, 1, 1]))
        .unwrap();
    assert_eq!(ws_recv(&mut w).unwrap().unwrap().2, b"hello");
    close_and_expect_clean_end(&mut w);
    assert_eq!(b1.ws_half_closes(), 1);
}

/// The backend sends a close frame and closes after 3 echoes: the client gets the 3 echoes, the
/// close frame, then EOF.
#[test]
fn backend_close_ends_the_tunnel() {
    let (b1, b2) = ws_backends(false, Some(3));
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});
    let (mut w, r) = ws_connect(proxy.addr, "/?wtd=wt2AbCdEfGhIjKlMnOp&request=ws");
    assert_eq!(r.backend(), "wt2");
    for i in 0..3u8 {
        w.write_all(&client_frame(OP_BINARY, &[i; 10], [i, 2, 3, 4]))
            .unwrap();
        let (_, op, p) = ws_recv(&mut w).unwrap().expect("echo");
        assert_eq!((op, p), (OP_BINARY, vec![i; 10]));
    }
    let (_, op, p) = ws_recv(&mut w)
        .unwrap()
        .expect("close frame from the backend");
    assert_eq!((op, p), (OP_CLOSE, 1000u16.to_be_bytes().to_vec()));
    let end = ws_recv(&mut w);
    assert!(
        matches!(end, Ok(None))
            || matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "client did not see the end of the tunnel after the backend closed: {end:?}"
    );
    drop(b1);
}

/// Wt answers the upgrade of an unknown session with 403 (with odd `Connection: Upgrade` and
/// `Sec-WebSocket-Accept` headers, docs/wt-traffic.txt §E): that is an HTTP answer, and the same client
/// connection goes on with HTTP.
#[test]
fn non_101_answer_continues_as_http() {
    let (b1, b2) = ws_backends(true, None);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&ws_upgrade_request("/?wtd=wt1AbCdEfGhIjKlMnOp&request=ws"))
        .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 403, "{:?}", r.head);
    assert_eq!(r.backend(), "wt1");
    w.write_all(&get("/?wtd=wt1AbCdEfGhIjKlMnOp&request=style&page=1"))
        .unwrap();
    let r = w
        .read_response(false)
        .expect("the connection must go on as HTTP after a non-101 answer");
    assert_eq!(r.status, 200, "{:?}", r.head);
    assert_eq!(
        r.body_str(),
        "wt1 GET /?wtd=wt1AbCdEfGhIjKlMnOp&request=style&page=1"
    );
    let seen = b1.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(b2.request_count(), 0);
}

/// Session-less upgrades are round-robined like any request.
#[test]
fn sessionless_upgrade_is_round_robined() {
    let (b1, b2) = ws_backends(false, None);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});
    let mut by = Vec::new();
    for _ in 0..4 {
        let (mut w, r) = ws_connect(proxy.addr, "/?request=ws");
        by.push(r.backend().to_string());
        close_and_expect_clean_end(&mut w);
    }
    by.sort();
    assert_eq!(by, vec!["wt1", "wt1", "wt2", "wt2"]);
}

/// The backend's first frame comes in the same write as its 101 (as Wt's "connect" frame does):
/// the proxy must pass on the bytes that followed the 101 head.
#[test]
fn frame_sent_with_the_101_is_relayed() {
    let greet = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: true,
    };
    let b1 = TestBackend::start("wt1", greet);
    let proxy = start_proxy(&[b1.spec()], |_| {});
    let (mut w, _) = ws_connect(proxy.addr, "/?wtd=wt1AbCdEfGhIjKlMnOp&request=ws");
    let (_, op, p) = ws_recv(&mut w).unwrap().expect("the greeting frame");
    assert_eq!((op, p.as_slice()), (OP_TEXT, &b"connect"[..]));
    w.write_all(&client_frame(OP_TEXT, b"x", [5, 5, 5, 5]))
        .unwrap();
    assert_eq!(ws_recv(&mut w).unwrap().unwrap().2, b"x");
    close_and_expect_clean_end(&mut w);
}

/// The tunnel has its own idle timeout, separate from the client and server timeouts (which Wt's
/// 50 s pings must not have to beat): with client = server = 1 s and tunnel = 60 s, a tunnel idle
/// for 2 s still works.
#[test]
fn tunnel_outlives_client_and_server_timeouts() {
    let (b1, b2) = ws_backends(false, None);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |c| {
        c.timeouts.client = std::time::Duration::from_secs(1);
        c.timeouts.server = std::time::Duration::from_secs(1);
        c.timeouts.tunnel = std::time::Duration::from_secs(60);
    });
    let (mut w, _) = ws_connect(proxy.addr, "/?wtd=wt1AbCdEfGhIjKlMnOp&request=ws");
    thread::sleep(std::time::Duration::from_secs(2));
    w.write_all(&client_frame(OP_PING, b"still there?", [3, 3, 3, 3]))
        .unwrap();
    let f = ws_recv(&mut w).expect("tunnel cut by the client/server timeout");
    assert_eq!(
        f.map(|(_, op, p)| (op, p)),
        Some((OP_PONG, b"still there?".to_vec()))
    );
    close_and_expect_clean_end(&mut w);
}

/// An idle tunnel is closed after `timeouts.tunnel` (1 s here): the client reads EOF.
#[test]
fn idle_tunnel_is_closed_after_the_tunnel_timeout() {
    let (b1, b2) = ws_backends(false, None);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |c| {
        c.timeouts.tunnel = std::time::Duration::from_secs(1);
    });
    let (mut w, _) = ws_connect(proxy.addr, "/?wtd=wt1AbCdEfGhIjKlMnOp&request=ws");
    let end = ws_recv(&mut w);
    assert!(
        matches!(end, Ok(None))
            || matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "idle tunnel not closed: {end:?}"
    );
}

/// On one client connection: a plain GET for a wt1 session, then the upgrade of a wt2 session.
/// Each request is routed on its own, so the upgrade goes to wt2, not to wt1's pooled connection.
#[test]
fn upgrade_after_a_request_on_the_same_connection_is_routed_on_its_own() {
    let (b1, b2) = ws_backends(false, None);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get("/?wtd=wt1AbCdEfGhIjKlMnOp&request=style"))
        .unwrap();
    assert_eq!(w.read_response(false).unwrap().backend(), "wt1");
    w.write_all(&ws_upgrade_request("/?wtd=wt2AbCdEfGhIjKlMnOp&request=ws"))
        .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 101, "{:?}", r.head);
    assert_eq!(r.backend(), "wt2");
    w.write_all(&client_frame(OP_TEXT, b"after", [7, 7, 7, 7]))
        .unwrap();
    assert_eq!(ws_recv(&mut w).unwrap().unwrap().2, b"after");
    close_and_expect_clean_end(&mut w);
}

/// An upgrade request with a body, answered `101` before its body has gone out: wtgate does not
/// start a tunnel with the body still on its way (its bytes would be mixed up with the tunnel's, or
/// lost); the client gets a 502 and the connection ends.
#[test]
fn a_101_before_the_request_body_is_refused() {
    // A backend that answers 101 as soon as it has the head, without reading any body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut w = Wire::new(stream);
        w.read_request_head().unwrap().expect("a request head");
        let accept = wtgate_demo::ws::accept_key(WS_KEY);
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        w.write_all(answer.as_bytes()).unwrap();
        // Held open until wtgate closes it.
        let _ = w.fill();
    });
    let proxy = start_proxy(&[("wt1", addr)], |_| {});
    let mut w = Wire::connect(proxy.addr);
    let mut req = ws_upgrade_request("/?wtd=wt1AbCdEfGhIjKlMnOp&request=ws");
    let end = req.len() - 2;
    req.splice(end..end, b"Content-Length: 5\r\n".iter().copied());
    // The head only: the body is not sent.
    w.write_all(&req).unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 502, "{:?}", r.head);
    w.expect_closed().unwrap();
    backend.join().unwrap();
    let failures = proxy.engine().stats().failures;
    assert!(
        failures
            .iter()
            .any(|(kind, n)| *kind == "unexpected_upgrade" && *n == 1),
        "{failures:?}"
    );
}
