//! Pipelined requests: written in one go, answered in order, each routed on its own
//! (docs/design.md "HTTP/1.1": pipelined bytes kept for the next request).

use crate::common::*;

#[test]
fn fifty_pipelined_requests_answered_in_order_by_the_right_backend() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let b2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});

    let mut rng = Rng::new(50);
    let s1 = session_id(&mut rng, "wt1");
    let s2 = session_id(&mut rng, "wt2");
    let mut raw = Vec::new();
    let mut expected = Vec::new(); // (method, target, owner, body)
    for i in 0..50 {
        let (method, target, owner, body): (&str, String, Option<&str>, Vec<u8>) = match i % 5 {
            0 => (
                "GET",
                format!("/?wtd={s1}&request=style&page=1&i={i}"),
                Some("wt1"),
                vec![],
            ),
            1 => (
                "GET",
                format!("/?wtd={s2}&request=resource&i={i}"),
                Some("wt2"),
                vec![],
            ),
            2 => (
                "POST",
                format!("/?wtd={s1}&i={i}"),
                Some("wt1"),
                format!("request=jsupdate&ackId={i}&pageId=1&signal=poll").into_bytes(),
            ),
            3 => ("POST", format!("/?wtd={s2}&i={i}"), Some("wt2"), {
                let n = rng.range(0, 3000) as usize;
                rng.bytes(n)
            }),
            _ => (
                "GET",
                format!("/resources/webkit-transitions.css?i={i}"),
                None,
                vec![],
            ),
        };
        raw.extend_from_slice(format!("{method} {target} HTTP/1.1\r\nHost: x\r\n").as_bytes());
        if method == "POST" {
            raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&body);
        expected.push((method, target, owner, body));
    }

    let mut w = Wire::connect(proxy.addr);
    w.write_all(&raw).unwrap(); // all 50 in one go
    for (i, (method, target, owner, body)) in expected.iter().enumerate() {
        let r = w
            .read_response(false)
            .unwrap_or_else(|e| panic!("answer #{i} ({method} {target}) missing: {e}"));
        assert_eq!(r.status, 200, "#{i}: {:?}", r.head);
        let got = r.backend().to_string();
        assert_eq!(
            r.body_str(),
            format!("{got} {method} {target}"),
            "answer #{i} is not the answer to request #{i} (out of order?)"
        );
        if let Some(o) = owner {
            assert_eq!(&got, o, "#{i} {target} went to the wrong backend");
        }
        assert_eq!(
            r.header("X-Req-Len"),
            Some(body.len().to_string().as_str()),
            "#{i}"
        );
        assert_eq!(
            r.header("X-Req-Fnv"),
            Some(format!("{:016x}", fnv(body)).as_str()),
            "#{i}"
        );
    }
    // The connection is still in sync and usable.
    w.write_all(&get("/?after=pipeline")).unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body_str().ends_with("GET /?after=pipeline"),
        "{}",
        r.body_str()
    );
    assert_eq!(b1.request_count() + b2.request_count(), 51);
}

/// A pipelined request after `Connection: close` is not served: the proxy answers the first and
/// closes.
#[test]
fn nothing_is_served_after_connection_close() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(b"GET /?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.body_str(), "wt1 GET /?n=1");
    w.expect_closed().unwrap();
    assert!(
        b1.requests().iter().all(|r| r.target != "/?n=2"),
        "request after Connection: close was forwarded"
    );
}

/// A close-delimited response inside a pipeline: its body arrives whole; the proxy then either
/// closes (the next request stays unanswered) or re-frames it and answers the next one correctly.
#[test]
fn close_delimited_response_in_a_pipeline() {
    let b1 = TestBackend::start("wt1", Behavior::Echo);
    let proxy = start_proxy(&[b1.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    let mut raw = get("/?resp=5000&seed=8&mode=eof");
    raw.extend_from_slice(&get("/?resp=10&seed=9"));
    w.write_all(&raw).unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == gen_body(8, 5000),
        "close-delimited body in a pipeline"
    );
    let framed =
        r.header("Content-Length").is_some() || r.head.has_token("Transfer-Encoding", "chunked");
    if framed {
        let r2 = w.read_response(false).unwrap();
        assert_eq!(r2.body, gen_body(9, 10));
    }
}

/// A client that half-closes right after its request (shutdown(Write), as `nc -N` or some scripts
/// do) still gets the answer.
#[test]
fn client_half_close_after_request_still_gets_the_answer() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get("/?half=1")).unwrap();
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = w
        .read_response(false)
        .expect("no answer after the client's half-close");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "wt1 GET /?half=1");
}
