//! Malformed or hostile requests (docs/design.md "HTTP/1.1"): each gets the expected status, the
//! connection is closed after the answer, and no byte reaches any backend.
//!
//! "No byte reached a backend" is checked after the client has seen the answer and EOF, plus a
//! 100 ms grace period: there is no signal for "nothing happened", and anything the proxy forwarded
//! before answering would have been written before the answer, so it shows up well within that.
//! Connections without bytes (a TCP health check or a pre-connect) are allowed.

use std::time::Duration;

use crate::common::*;

const SID: &str = "wt1AbCdEfGhIjKlMnOp";

use crate::common::Pair as Setup;

fn setup(tweak: impl FnOnce(&mut wtgate::config::Config)) -> Setup {
    start_pair(tweak)
}

impl Setup {
    fn assert_nothing_forwarded(&self, what: &str) {
        std::thread::sleep(Duration::from_millis(100));
        let n = self.b1.bytes_received() + self.b2.bytes_received();
        assert_eq!(
            n,
            0,
            "{what}: {n} bytes reached a backend:\n{}{}",
            self.b1.received_preview(),
            self.b2.received_preview()
        );
    }

    /// The proxy still serves good requests afterwards.
    fn assert_still_serving(&self) {
        let r = send_request(self.proxy.addr, &get(&format!("/?wtd={SID}&after=bad")))
            .expect("the proxy stopped serving after a bad request");
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "wt1");
    }
}

/// Sends `raw` in one write and expects `status` + `Connection: close`, then EOF, and nothing
/// forwarded.
fn expect_rejected(raw: &[u8], status: u16) {
    expect_rejected_with(raw, status, |_| {});
}

fn expect_rejected_with(raw: &[u8], status: u16, tweak: impl FnOnce(&mut wtgate::config::Config)) {
    let s = setup(tweak);
    let what = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
    let mut w = Wire::connect(s.proxy.addr);
    w.write_all(raw).unwrap();
    let r = match w.read_response(false) {
        Ok(r) => r,
        Err(e) => panic!(
            "{what:?}: no {status} answer ({e}); backends got:\n{}{}",
            s.b1.received_preview(),
            s.b2.received_preview()
        ),
    };
    assert_eq!(r.status, status, "{what:?}: {:?} {}", r.head, r.body_str());
    if status != 505 {
        assert!(
            r.head.has_token("Connection", "close"),
            "{what:?}: {status} without Connection: close: {:?}",
            r.head
        );
    }
    if let Err(e) = w.expect_closed() {
        panic!("{what:?}: after the {status}: {e}");
    }
    s.assert_nothing_forwarded(&what);
    s.assert_still_serving();
}

macro_rules! rejected {
    ($name:ident, $status:expr, $raw:expr) => {
        #[test]
        fn $name() {
            expect_rejected(&$raw[..], $status);
        }
    };
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /?wtd={SID} HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
}

rejected!(
    content_length_and_transfer_encoding,
    400,
    post(
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "5\r\nhello\r\n0\r\n\r\n"
    )
);
rejected!(
    transfer_encoding_and_content_length,
    400,
    post(
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "5\r\nhello\r\n0\r\n\r\n"
    )
);
rejected!(
    two_differing_content_lengths,
    400,
    post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")
);
rejected!(
    differing_content_length_list,
    400,
    post("Content-Length: 5, 6\r\n", "hello!")
);
rejected!(
    content_length_plus_sign,
    400,
    post("Content-Length: +5\r\n", "hello")
);
rejected!(
    content_length_negative,
    400,
    post("Content-Length: -1\r\n", "hello")
);
rejected!(
    content_length_not_a_number,
    400,
    post("Content-Length: abc\r\n", "hello")
);
rejected!(
    content_length_hex,
    400,
    post("Content-Length: 0x5\r\n", "hello")
);
rejected!(
    content_length_overflow,
    400,
    post("Content-Length: 99999999999999999999999999\r\n", "hello")
);
rejected!(
    transfer_encoding_gzip_only,
    400,
    post("Transfer-Encoding: gzip\r\n", "hello")
);
rejected!(
    transfer_encoding_chunked_not_last,
    400,
    post(
        "Transfer-Encoding: chunked, gzip\r\n",
        "5\r\nhello\r\n0\r\n\r\n"
    )
);
rejected!(
    transfer_encoding_chunked_twice,
    400,
    post(
        "Transfer-Encoding: chunked, chunked\r\n",
        "5\r\nhello\r\n0\r\n\r\n"
    )
);
rejected!(
    obs_fold,
    400,
    format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n").into_bytes()
);
rejected!(
    bare_lf_line_endings,
    400,
    format!("GET /?wtd={SID} HTTP/1.1\nHost: x\nX-A: 1\n\n").into_bytes()
);
rejected!(
    bare_lf_in_one_header_line,
    400,
    format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n").into_bytes()
);
rejected!(
    bare_cr_in_header_value,
    400,
    format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n").into_bytes()
);
rejected!(
    nul_in_header_value,
    400,
    format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n").into_bytes()
);
rejected!(
    missing_host_on_http11,
    400,
    format!("GET /?wtd={SID} HTTP/1.1\r\nUser-Agent: x\r\n\r\n").into_bytes()
);
rejected!(garbage_request_line, 400, b"HELLO\r\n\r\n".to_vec());
rejected!(
    space_in_header_name,
    400,
    format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n").into_bytes()
);
rejected!(
    http2_request_line,
    505,
    format!("GET /?wtd={SID} HTTP/2.0\r\nHost: x\r\n\r\n").into_bytes()
);

#[test]
fn header_of_20_kib() {
    let big = "a".repeat(20 * 1024);
    expect_rejected(
        format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        431,
    );
}

#[test]
fn two_hundred_headers() {
    let mut raw = format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert!(raw.len() < 4096, "must hit the header count, not the size");
    expect_rejected(raw.as_bytes(), 431);
}

/// A head that is sent only in part and then stalls past `timeouts.request_head` (1 s here) → 408.
#[test]
fn slowloris_gets_408() {
    expect_rejected_with(
        format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes(),
        408,
        |c| c.timeouts.request_head = Duration::from_secs(1),
    );
}

/// A bad chunk size comes after the head, which a streaming proxy may already have forwarded. So
/// here: the client gets a 400 or the connection closed (never a 200), and the backend never got a
/// complete request (its record of complete requests is empty, i.e. it never saw a well-formed
/// body end, so it never answered).
#[test]
fn bad_chunk_size() {
    let s = setup(|_| {});
    let mut w = Wire::connect(s.proxy.addr);
    w.write_all(&post(
        "Transfer-Encoding: chunked\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
    ))
    .unwrap();
    match w.read_response(false) {
        Ok(r) => {
            assert_eq!(r.status, 400, "{:?} {}", r.head, r.body_str());
            w.expect_closed().unwrap();
        }
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        s.b1.requests().len() + s.b2.requests().len(),
        0,
        "a backend got a complete request:\n{}{}",
        s.b1.received_preview(),
        s.b2.received_preview()
    );
    s.assert_still_serving();
}

/// A chunk size too large for 64 bits is a bad chunk size too.
#[test]
fn overflowing_chunk_size() {
    let s = setup(|_| {});
    let mut w = Wire::connect(s.proxy.addr);
    w.write_all(&post(
        "Transfer-Encoding: chunked\r\n",
        "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ))
    .unwrap();
    match w.read_response(false) {
        Ok(r) => assert_eq!(r.status, 400, "{:?} {}", r.head, r.body_str()),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.b1.requests().len() + s.b2.requests().len(), 0);
    s.assert_still_serving();
}

/// A bad request after a good one on the same keep-alive connection: the good one is answered,
/// the bad one gets its 400 and the connection closes; only the good one reached the backend.
#[test]
fn bad_request_after_a_good_one() {
    let s = setup(|_| {});
    let mut w = Wire::connect(s.proxy.addr);
    w.write_all(&get(&format!("/?wtd={SID}&n=1"))).unwrap();
    assert_eq!(w.read_response(false).unwrap().status, 200);
    w.write_all(&post(
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "hello!",
    ))
    .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 400, "{:?}", r.head);
    w.expect_closed().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let reqs = s.b1.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(s.b2.bytes_received(), 0);
    let seen: String =
        s.b1.conns()
            .iter()
            .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
            .collect();
    assert!(
        !seen.contains("POST"),
        "bytes of the bad request reached wt1:\n{seen}"
    );
}

/// Pipelined: a good request and a bad one in one write. The good one is answered, then the 400,
/// then EOF; the bad one never reaches a backend.
#[test]
fn pipelined_bad_request_after_a_good_one() {
    let s = setup(|_| {});
    let mut w = Wire::connect(s.proxy.addr);
    let mut raw = get(&format!("/?wtd={SID}&n=1"));
    raw.extend_from_slice(&post(
        "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
        "0\r\n\r\n",
    ));
    w.write_all(&raw).unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "wt1");
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 400, "{:?}", r.head);
    w.expect_closed().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.b1.requests().len(), 1);
    let seen: String =
        s.b1.conns()
            .iter()
            .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
            .collect();
    assert!(
        !seen.contains("POST"),
        "bytes of the bad request reached wt1:\n{seen}"
    );
}

/// Legal but unusual requests that must NOT be rejected: answered 200 by the owner, with the body
/// the backend expects (`len` bytes, FNV of `body`).
fn expect_accepted(raw: &[u8], body: &[u8]) {
    let s = setup(|_| {});
    let what = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
    let mut w = Wire::connect(s.proxy.addr);
    w.write_all(raw).unwrap();
    let r = w
        .read_response(false)
        .unwrap_or_else(|e| panic!("{what:?}: {e}"));
    assert_eq!(
        r.status,
        200,
        "{what:?} refused: {:?} {}",
        r.head,
        r.body_str()
    );
    assert_eq!(r.backend(), "wt1", "{what:?}");
    assert_eq!(
        r.header("X-Req-Len"),
        Some(body.len().to_string().as_str()),
        "{what:?}"
    );
    assert_eq!(
        r.header("X-Req-Fnv"),
        Some(format!("{:016x}", fnv(body)).as_str()),
        "{what:?}"
    );
    // And the connection goes on.
    w.write_all(&get(&format!("/?wtd={SID}&next=1"))).unwrap();
    assert_eq!(w.read_response(false).unwrap().status, 200, "{what:?}");
}

macro_rules! accepted {
    ($name:ident, $raw:expr, $body:expr) => {
        #[test]
        fn $name() {
            expect_accepted(&$raw[..], $body);
        }
    };
}

accepted!(
    content_length_with_leading_zeros,
    post("Content-Length: 005\r\n", "hello"),
    b"hello"
);
accepted!(
    same_content_length_twice,
    post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
    b"hello"
);
accepted!(
    transfer_encoding_case_insensitive,
    post("Transfer-Encoding: Chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
    b"hello"
);
accepted!(
    lowercase_header_names,
    format!("POST /?wtd={SID} HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello").into_bytes(),
    b"hello"
);
accepted!(
    obs_text_and_tab_in_header_value,
    format!(
        "GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Name: caf\u{e9}\tna\u{ef}ve\r\nX-Raw: \r\n\r\n"
    )
    .into_bytes()
    .into_iter()
    .collect::<Vec<u8>>(),
    b""
);
accepted!(
    latin1_obs_text_in_header_value,
    {
        let mut v = format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Name: caf").into_bytes();
        v.extend_from_slice(b"\xe9\r\n\r\n");
        v
    },
    b""
);
accepted!(
    empty_header_value,
    format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n").into_bytes(),
    b""
);
accepted!(
    transfer_encoding_gzip_then_chunked,
    post(
        "Transfer-Encoding: gzip, chunked\r\n",
        "5\r\nhello\r\n0\r\n\r\n"
    ),
    b"hello"
);
