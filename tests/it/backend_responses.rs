//! Unusual or broken responses from a backend (docs/design.md "HTTP/1.1": 502 for a bad or absent
//! response; RFC 9112 framing rules on the way back to the client).
//!
//! | backend sends | client gets | why |
//! |---|---|---|
//! | `HTTP/1.1 000 OK` (found by fuzzing), `600` | 502 | status codes are 100..=599 |
//! | `101` to a request that asked for no upgrade | 502 | a tunnel nobody asked for would desync the client |
//! | a chunked body with a bad chunk size | the connection ends, no complete response | never a truncated body presented as complete |

use std::io::ErrorKind;

use crate::common::*;

const SID: &str = "wt1AbCdEfGhIjKlMnOp";

/// Starts one `Raw` backend and the proxy.
fn raw_backend(bytes: &'static [u8]) -> (TestBackend, Proxy) {
    let b = TestBackend::start("wt1", Behavior::Raw(bytes));
    let p = start_proxy(&[b.spec()], |_| {});
    (b, p)
}

/// The proxy answers 502 with Connection: close and closes.
fn expect_502(bytes: &'static [u8]) {
    expect_502_from(bytes, &get("/?wtd=wt1AbCdEfGhIjKlMnOp"));
}

#[test]
fn garbage_response_is_502() {
    expect_502(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
}

#[test]
fn bad_content_length_in_response_is_502() {
    expect_502(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc");
}

#[test]
fn differing_content_lengths_in_response_is_502() {
    expect_502(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc");
}

#[test]
fn oversized_response_head_is_502() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    expect_502(big.into_bytes().leak());
}

/// No answer at all (the backend reads the request and closes) is an absent response: 502. A POST
/// is not safe to replay, so no retry may hide it, and it must reach the backend only once.
#[test]
fn no_response_at_all_is_502() {
    let b = TestBackend::start("wt1", Behavior::CloseUnanswered);
    let proxy = start_proxy(&[b.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(
        b"POST /?wtd=wt1AbCdEfGhIjKlMnOp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
    )
    .unwrap();
    let r = w.read_response(false).expect("an answer from the proxy");
    assert_eq!(r.status, 502, "{:?} {}", r.head, r.body_str());
    assert!(r.head.has_token("Connection", "close"), "{:?}", r.head);
    w.expect_closed().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100)); // grace for a (wrong) replay
    assert_eq!(b.request_count(), 1, "the POST was sent more than once");
}

/// A response with both Content-Length and Transfer-Encoding: chunked is framed by the chunking
/// (RFC 9112 §6.3) — or refused with 502. Never both framings towards the client, never a body cut
/// at the Content-Length, and the connection stays in sync.
#[test]
fn response_with_both_content_length_and_chunked() {
    let (_b, proxy) = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nX-Backend: wt1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let mut w = Wire::connect(proxy.addr);
    for i in 0..2 {
        w.write_all(&get(&format!("/?i={i}"))).unwrap();
        let r = w.read_response(false).unwrap();
        if r.status == 502 {
            w.expect_closed().unwrap();
            return;
        }
        assert_eq!(r.status, 200);
        assert!(
            !(r.header("Content-Length").is_some() && r.header("Transfer-Encoding").is_some()),
            "both framings forwarded: {:?}",
            r.head
        );
        assert_eq!(r.body, b"hello", "#{i}");
    }
    assert!(
        w.buffered().is_empty(),
        "stray bytes: {:?}",
        String::from_utf8_lossy(w.buffered())
    );
}

/// Interim 1xx answers (103 Early Hints) before the final one: the client gets the final answer
/// intact, and the connection goes on.
#[test]
fn early_hints_before_the_answer() {
    let (_b, proxy) = raw_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </resources/themes/default/wt.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: wt1\r\n\r\nok",
    );
    let mut w = Wire::connect(proxy.addr);
    for i in 0..3 {
        w.write_all(&get(&format!("/?i={i}"))).unwrap();
        let r = w
            .read_final_response()
            .unwrap_or_else(|e| panic!("#{i}: {e}"));
        assert_eq!(r.status, 200, "#{i}: {:?}", r.head);
        assert_eq!(r.body, b"ok", "#{i}");
    }
}

/// An HTTP/1.0 client must not get a chunked response (RFC 9112 §7.1: chunked only to 1.1
/// recipients); the body arrives whole. (The test backend never chunks for a 1.0 request either,
/// so this holds whether the proxy forwards 1.0 as 1.0 or as 1.1 and de-chunks.)
#[test]
fn http10_client_never_gets_chunked() {
    let b = TestBackend::start("wt1", Behavior::Echo);
    let proxy = start_proxy(&[b.spec()], |_| {});
    for n in [0usize, 10, 100_000] {
        let r = send_request(
            proxy.addr,
            format!("GET /?resp={n}&seed=5&mode=chunked HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert!(
            !r.head.has_token("Transfer-Encoding", "chunked"),
            "chunked response to an HTTP/1.0 client: {:?}",
            r.head
        );
        assert!(r.body == gen_body(5, n), "{n} B body");
    }
}

/// Found by the `response_head` fuzz target: httparse reads `000` as status 0.
#[test]
fn status_000_from_a_backend_is_502() {
    expect_502_from(
        b"HTTP/1.1 000 OK\r\nContent-Length: 0\r\n\r\n",
        &get(&format!("/?wtd={SID}")),
    );
    expect_502_from(
        b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
        &get(&format!("/?wtd={SID}")),
    );
}

/// A `101` to a request that asked for no upgrade: the proxy must not open a tunnel (the client
/// would read the backend's raw bytes as the next response).
#[test]
fn unrequested_101_from_a_backend_is_502() {
    expect_502_from(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &get(&format!("/?wtd={SID}")),
    );
}

/// A chunked response whose second chunk size is garbage: the head and the first chunk may have
/// gone out, so the client must see its connection end before a complete response.
#[test]
fn bad_chunk_size_in_a_response_ends_the_connection() {
    let b = TestBackend::start(
        "wt1",
        Behavior::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"),
    );
    let proxy = start_proxy(&[b.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(&get(&format!("/?wtd={SID}"))).unwrap();
    match w.read_response(false) {
        Ok(r) => assert_eq!(
            r.status,
            502,
            "a complete response: {:?} {}",
            r.head,
            r.body_str()
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
    }
}
