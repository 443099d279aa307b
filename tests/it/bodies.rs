//! Bodies go through byte-exact, both ways, whatever their size and framing (docs/design.md "Behaviour"
//! "HTTP/1.1": streamed, never buffered whole; Content-Length, chunked, close-delimited).

use std::io::Write;

use crate::common::*;

const MIB: usize = 1024 * 1024;

/// Writes a request with `body`, framed by Content-Length or by chunks of random sizes.
fn write_request(w: &mut Wire, target: &str, body: &[u8], chunked: bool, rng: &mut Rng) {
    let mut head = format!(
        "POST {target} HTTP/1.1\r\nHost: wt.example\r\nContent-Type: application/octet-stream\r\n"
    );
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    }
    // Head and the start of the body in one write, like a browser would.
    let mut out = head.into_bytes();
    if !chunked {
        out.extend_from_slice(body);
        w.stream.write_all(&out).unwrap();
        return;
    }
    let mut rest = body;
    while !rest.is_empty() {
        let n = (rng.range(1, 100_000) as usize).min(rest.len());
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        if out.len() > 256 * 1024 {
            w.stream.write_all(&out).unwrap();
            out.clear();
        }
    }
    out.extend_from_slice(b"0\r\n\r\n");
    w.stream.write_all(&out).unwrap();
}

fn sizes() -> Vec<usize> {
    let mut v = vec![0, 1, 16383, 16384, 16385, 65536, 8 * MIB];
    // The rest log-uniform in 2 B .. 8 MiB, so every order of magnitude shows up.
    let mut rng = Rng::new(20);
    while v.len() < 20 {
        let bits = rng.range(1, 23) as u32; // 2^1 .. 2^23 = 8 MiB
        let lo = 1usize << bits;
        v.push(rng.range(lo as u64, ((lo * 2) - 1).min(8 * MIB) as u64) as usize);
    }
    v
}

/// 20 request sizes × (CL | chunked), each answered with a response of another of the 20 sizes ×
/// (CL | chunked); checksummed by the backend (request) and compared byte for byte by the client
/// (response). All on one keep-alive client connection.
#[test]
fn bodies_are_byte_exact_both_ways() {
    let be = TestBackend::start("wt1", Behavior::Echo);
    let proxy = start_proxy(&[be.spec()], |_| {});
    let sizes = sizes();
    let mut rng = Rng::new(7);
    let mut w = Wire::connect(proxy.addr);
    let mut combos = [[0usize; 2]; 2];
    for (i, &req_len) in sizes.iter().enumerate() {
        let resp_len = sizes[(i * 7 + 3) % sizes.len()];
        let req_chunked = i % 2 == 1;
        let resp_chunked = (i / 2) % 2 == 1;
        combos[req_chunked as usize][resp_chunked as usize] += 1;
        let seed = 1000 + i as u64;
        let req_body = gen_body(seed ^ 0xABCDEF, req_len);
        let target = format!(
            "/?wtd=wt1AbCdEfGhIjKlMnOp&resp={resp_len}&seed={seed}&mode={}",
            if resp_chunked { "chunked" } else { "cl" }
        );
        write_request(&mut w, &target, &req_body, req_chunked, &mut rng);
        let r = w.read_response(false).unwrap_or_else(|e| {
            panic!("#{i}: request {req_len} B (chunked={req_chunked}), response {resp_len} B (chunked={resp_chunked}): {e}")
        });
        assert_eq!(r.status, 200, "#{i}: {:?}", r.head);
        assert_eq!(
            r.header("X-Req-Len"),
            Some(req_len.to_string().as_str()),
            "#{i}: the backend received a request body of another length (sent {req_len}, chunked={req_chunked})"
        );
        assert_eq!(
            r.header("X-Req-Fnv"),
            Some(format!("{:016x}", fnv(&req_body)).as_str()),
            "#{i}: request body ({req_len} B, chunked={req_chunked}) corrupted on the way"
        );
        assert_eq!(
            r.body.len(),
            resp_len,
            "#{i}: response body length (chunked={resp_chunked})"
        );
        let expected = gen_body(seed, resp_len);
        if r.body != expected {
            let at = r.body.iter().zip(&expected).position(|(a, b)| a != b);
            panic!(
                "#{i}: response body ({resp_len} B, chunked={resp_chunked}) differs at byte {at:?}"
            );
        }
        assert_eq!(
            r.header("X-Resp-Fnv"),
            Some(format!("{:016x}", fnv(&expected)).as_str())
        );
    }
    assert!(
        combos.iter().flatten().all(|&n| n > 0),
        "framing combos not all covered: {combos:?}"
    );
    assert_eq!(be.request_count(), sizes.len());
}

/// Chunk extensions and trailers are legal (RFC 9112 §7.1); the body must still come through intact
/// and the connection must stay usable.
#[test]
fn chunk_extensions_and_trailers() {
    let be = TestBackend::start("wt1", Behavior::Echo);
    let proxy = start_proxy(&[be.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(
        b"POST /?resp=5&seed=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n6 ; ext\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{:?} {}", r.head, r.body_str());
    assert_eq!(r.header("X-Req-Len"), Some("11"));
    assert_eq!(
        r.header("X-Req-Fnv"),
        Some(format!("{:016x}", fnv(b"hello world")).as_str())
    );
    assert_eq!(r.body, gen_body(1, 5));
    w.write_all(&get("/?resp=3&seed=2")).unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.body, gen_body(2, 3));
}

/// `Expect: 100-continue`: the client gets `100 Continue` before it sends the body, then the answer.
#[test]
fn expect_100_continue() {
    let be = TestBackend::start("wt1", Behavior::Echo);
    let proxy = start_proxy(&[be.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    let body = gen_body(9, 1000);
    w.write_all(
        b"POST /?resp=10&seed=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = w
        .read_response(false)
        .expect("no interim answer to Expect: 100-continue");
    assert_eq!(interim.status, 100, "{:?}", interim.head);
    w.write_all(&body).unwrap();
    let r = w.read_final_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Req-Len"), Some("1000"));
    assert_eq!(
        r.header("X-Req-Fnv"),
        Some(format!("{:016x}", fnv(&body)).as_str())
    );
    assert_eq!(r.body, gen_body(3, 10));
}

/// 204 and 304 answers carry no body even if the request looked like one was coming; HEAD answers
/// have headers that describe a body that is not sent. The keep-alive connection goes on.
#[test]
fn bodiless_responses_keep_the_connection_in_sync() {
    let be = TestBackend::start("wt1", Behavior::Echo);
    let proxy = start_proxy(&[be.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    for (i, (method, target)) in [
        ("GET", "/?status=204&resp=0"),
        ("GET", "/?status=304&resp=0"),
        ("HEAD", "/?resp=5000&seed=4"),
        ("HEAD", "/?resp=5000&seed=4&mode=chunked"),
        ("GET", "/?resp=7&seed=5"),
    ]
    .iter()
    .enumerate()
    {
        w.write_all(format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let r = w
            .read_response(*method == "HEAD")
            .unwrap_or_else(|e| panic!("#{i} {method} {target}: {e}"));
        assert!(
            r.status == 200 || r.status == 204 || r.status == 304,
            "{:?}",
            r.head
        );
        if *method == "HEAD" {
            assert!(r.body.is_empty());
        }
        if i == 4 {
            assert_eq!(r.body, gen_body(5, 7));
        }
    }
    // Nothing stray is left on the connection.
    assert!(
        w.buffered().is_empty(),
        "stray bytes: {:?}",
        String::from_utf8_lossy(w.buffered())
    );
}

/// Close-delimited responses (no Content-Length, no chunking: the body ends at the backend's EOF)
/// arrive byte-exact; the proxy either closes the client connection after them or re-frames them.
#[test]
fn close_delimited_responses() {
    let be = TestBackend::start("wt1", Behavior::Echo);
    let proxy = start_proxy(&[be.spec()], |_| {});
    for (i, n) in [0usize, 1, 100_000, 3 * MIB].into_iter().enumerate() {
        let seed = 77 + i as u64;
        let r = send_request(
            proxy.addr,
            &get(&format!("/?resp={n}&seed={seed}&mode=eof")),
        )
        .unwrap_or_else(|e| panic!("{n} B close-delimited: {e}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), n, "close-delimited body of {n} B");
        assert!(
            r.body == gen_body(seed, n),
            "close-delimited body of {n} B corrupted"
        );
    }
}

/// A GET with a body (Content-Length) and a POST with `Content-Length: 0` both go through, and the
/// connection stays in sync.
#[test]
fn get_with_body_and_empty_post() {
    let be = TestBackend::start("wt1", Behavior::Echo);
    let proxy = start_proxy(&[be.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(b"GET /?resp=1&seed=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.header("X-Req-Len"), Some("5"));
    w.write_all(b"POST /?resp=2&seed=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.header("X-Req-Len"), Some("0"));
    assert_eq!(r.body, gen_body(2, 2));
}

/// Wt's script URLs are long; a 12 KiB request-target (under the 16 KiB head limit) is fine.
#[test]
fn long_request_target() {
    let be = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[be.spec()], |_| {});
    let target = format!(
        "/?wtd=wt1AbCdEfGhIjKlMnOp&request=script&pad={}",
        "x".repeat(12 * 1024)
    );
    let r = send_request(proxy.addr, &get(&target)).unwrap();
    assert_eq!(r.status, 200, "{:?}", r.head);
    assert_eq!(r.body_str(), format!("wt1 GET {target}"));
}
