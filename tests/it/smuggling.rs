//! The request-smuggling and malformed-request corpus of issue 5, beyond what `bad_input.rs`
//! already covers (CL+TE both orders, TE `chunked, chunked`, TE `gzip`, `+5`/`-1`/hex/overflowing
//! lengths, differing lengths, one obs-fold, one bare LF, NUL/CR in a value, a space in a header
//! name, a 20 KiB header, 200 headers). Each rejected case here is sent in one write on a fresh
//! connection; the test asserts the status, `Connection: close`, EOF after the answer, that **no
//! byte reached any backend**, and that the proxy still serves afterwards.
//!
//! Why refuse rather than repair: whatever we accept is forwarded, and any input two HTTP parsers
//! can read differently lets a client hide a second request from one of them (RFC 9112 §6.3,
//! §11.2). Every decision below follows docs/design.md "HTTP/1.1".
//!
//! | case | wtgate answers | why |
//! |---|---|---|
//! | `Transfer-Encoding : chunked` (space before `:`) | 400 | RFC 9112 §5.1: no whitespace between name and colon; some servers trim it, some don't |
//! | `Content-Length : 5` | 400 | same rule |
//! | `Host\t: x`, name with `(` or `\x01`, empty name `: x` | 400 | a field name is a token |
//! | TE `xchunked`, `"chunked"`, `chunked;q=1`, `identity`, `chunked, identity`, `,chunked` | 400 | the last coding must be exactly `chunked`, no empty elements |
//! | TE `chunked` on two field lines | 400 | chunked applied twice |
//! | TE `gzip` plus `Content-Length` | 400 | CL and TE together |
//! | TE value after `\x0b` or `\x0c` (VT/FF) | 400 | controls are not field content (httparse) |
//! | TE in an HTTP/1.0 request | 400 | 1.0 has no TE: the framing is ambiguous |
//! | TE folded onto the next line (obs-fold), tab fold, whitespace before the first field | 400 | obs-fold is refused (RFC 9112 §5.2 allows a 400) |
//! | CL `5 5`, `5.0`, `1e1`, empty, `5,` | 400 | CL is 1*DIGIT (lists of equal values only) |
//! | CL `5` and `content-length: 6` (case differs) | 400 | differing lengths |
//! | bare LF only at the end of the head, only in the request line, `\n\r\n`; CR-only line ends | 400 | every line ends in CRLF |
//! | NUL in target or name, CR in target, `\x01` or DEL in a value | 400 | controls anywhere in a head |
//! | target with a space, a tab, `\x01`, DEL, ESC | 400 | a target is one token of visible bytes |
//! | two `Host` fields | 400 | RFC 9112 §3.2 |
//! | `CONNECT` (also to a local address) | 405 | a reverse proxy opens no tunnels to arbitrary places |
//! | `GET /` then CRLF CRLF (HTTP/0.9) | 400 | no version: not a request we can frame |
//! | `GET /` and nothing more (HTTP/0.9 as sent) | 408 | the head never ends: request-head timeout |
//! | `PRI * HTTP/2.0` preface | 505 | a version we do not speak (h2c prior knowledge is not offered) |
//! | 20 KiB request-target | 431 | head over 16 KiB |
//! | head of exactly 16 KiB / 16 KiB + 1 | 200 / 431 | the limit includes the final CRLF CRLF |
//! | 100 fields / 101 fields | 200 / 431 | the default limit is 100 |
//! | chunk size `-5`, `+5`, ` 5`, `5 junk`, `0x5`, 2^64, bare LF after the size, data not followed by CRLF, bare CR in an extension, folded or colon-less trailer | 400 | RFC 9112 §7.1 grammar; the body bytes that came with the head are checked before any backend is contacted |
//! | absolute-form `http://<trap>/…` and `Host: <trap>` | 200 from the routed backend | wtgate routes by `wtd` only; it never connects to the named host (a trap listener stays untouched) |
//! | odd-case `tRaNsFeR-eNcOdInG: cHuNkEd`, TE with tab/trailing OWS, CL with OWS, CL `5, 5` | 200 | legal: the backend gets one request with the right body |
//! | a body that holds a whole second request (CL or chunked) | 200 | the backend sees one request; its body is payload |
//!
//! Backend side (a hostile or broken backend; `backend_responses.rs` has the rest):
//!
//! | backend sends | client gets | why |
//! |---|---|---|
//! | `HTTP/1.1 000 OK` (found by fuzzing) | 502 | status codes are 100..=599 |
//! | `101` to a request that asked for no upgrade | 502 | a tunnel nobody asked for would desync the client |
//! | a chunked body with a bad chunk size | the connection ends, no complete response | never a truncated body presented as complete |

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use crate::common::*;

const SID: &str = "wt1AbCdEfGhIjKlMnOp";

use crate::common::Pair as Setup;

fn setup(tweak: impl FnOnce(&mut wtgate::config::Config)) -> Setup {
    start_pair(tweak)
}

impl Setup {
    fn forwarded_bytes(&self) -> usize {
        self.b1.bytes_received() + self.b2.bytes_received()
    }

    fn preview(&self) -> String {
        format!(
            "{}{}",
            self.b1.received_preview(),
            self.b2.received_preview()
        )
    }

    fn assert_serving_after_bad_requests(&self) {
        let r = send_request(self.proxy.addr, &get(&format!("/?wtd={SID}&after=bad")))
            .expect("the proxy stopped serving after bad requests");
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "wt1");
    }
}

/// A case: a name, the bytes sent in one write, and the status wtgate must answer.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
}

fn case(name: &'static str, raw: impl Into<Vec<u8>>, status: u16) -> Case {
    Case {
        name,
        raw: raw.into(),
        status,
    }
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /?wtd={SID} HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
}

fn get_with(headers: &str) -> Vec<u8> {
    format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

/// Runs each case on a fresh connection to one proxy. Every failure is collected, so one run
/// reports the whole table; the backends must not have received a single byte after any case.
fn run_rejected(cases: &[Case], tweak: impl FnOnce(&mut wtgate::config::Config)) {
    let s = setup(tweak);
    let mut failures = Vec::new();
    for c in cases {
        let mut w = Wire::connect(s.proxy.addr);
        w.write_all(&c.raw).unwrap();
        let answer = match w.read_response(false) {
            Ok(r) => {
                let close = r.head.has_token("Connection", "close");
                let closed = w.expect_closed();
                eprintln!("{:<48} -> {} (close: {close})", c.name, r.status);
                if r.status != c.status {
                    Err(format!("answered {} {:?}", r.status, r.body_str()))
                } else if !close {
                    Err(format!("{} without Connection: close", r.status))
                } else {
                    closed.map_err(|e| format!("after the {}: {e}", r.status))
                }
            }
            Err(e) => Err(format!("no answer: {e}")),
        };
        // Anything forwarded before the answer was written before it, so it is visible by now;
        // a short grace covers a backend thread that has not counted it yet.
        std::thread::sleep(Duration::from_millis(20));
        let forwarded = s.forwarded_bytes();
        let verdict = match (answer, forwarded) {
            (Ok(()), 0) => continue,
            (Ok(()), n) => format!("{n} bytes reached a backend:\n{}", s.preview()),
            (Err(e), 0) => e,
            (Err(e), n) => format!("{e}; and {n} bytes reached a backend:\n{}", s.preview()),
        };
        failures.push(format!("{} (want {}): {verdict}", c.name, c.status));
        if forwarded > 0 {
            break; // Later cases could not be told apart.
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.forwarded_bytes(), 0, "{}", s.preview());
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    s.assert_serving_after_bad_requests();
}

#[test]
fn transfer_encoding_variants_are_refused() {
    run_rejected(
        &[
            case(
                "TE with a space before the colon",
                post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE xchunked",
                post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE \"chunked\" (quoted)",
                post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE chunked;q=1",
                post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE identity",
                post("Transfer-Encoding: identity\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE chunked, identity",
                post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE ,chunked (empty element)",
                post("Transfer-Encoding: ,chunked\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE chunked on two field lines",
                post(
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                    "0\r\n\r\n",
                ),
                400,
            ),
            case(
                "TE gzip plus Content-Length",
                post("Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", "hello"),
                400,
            ),
            case(
                "TE after a vertical tab",
                post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE after a form feed",
                post("Transfer-Encoding:\x0cchunked\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE in an HTTP/1.0 request",
                format!("POST /?wtd={SID} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                400,
            ),
            case(
                "TE folded onto the next line",
                post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "TE value folded with a tab",
                post("Transfer-Encoding: gzip,\r\n\tchunked\r\n", "0\r\n\r\n"),
                400,
            ),
            case(
                "whitespace before the first field",
                format!(
                    "GET /?wtd={SID} HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n"
                ),
                400,
            ),
        ],
        |_| {},
    );
}

#[test]
fn content_length_variants_are_refused() {
    run_rejected(
        &[
            case(
                "CL with a space before the colon",
                post("Content-Length : 5\r\n", "hello"),
                400,
            ),
            case("CL 5 5", post("Content-Length: 5 5\r\n", "hello"), 400),
            case("CL 5.0", post("Content-Length: 5.0\r\n", "hello"), 400),
            case("CL 1e1", post("Content-Length: 1e1\r\n", "helloworld"), 400),
            case("CL empty", post("Content-Length:\r\n", "hello"), 400),
            case(
                "CL 5, (trailing comma)",
                post("Content-Length: 5,\r\n", "hello"),
                400,
            ),
            case(
                "CL 5 and content-length 6",
                post("Content-Length: 5\r\ncontent-length: 6\r\n", "hello!"),
                400,
            ),
            case("two Host fields", get_with("Host: y\r\n"), 400),
        ],
        |_| {},
    );
}

#[test]
fn line_ends_controls_and_names_are_refused() {
    run_rejected(
        &[
            case(
                "bare LF ending the head only",
                format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\n\n"),
                400,
            ),
            case(
                "bare LF after the request line only",
                format!("GET /?wtd={SID} HTTP/1.1\nHost: x\r\n\r\n"),
                400,
            ),
            case(
                "LF CR LF ending the head",
                format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\n\r\n"),
                400,
            ),
            case(
                "CR-only line ends",
                format!("GET /?wtd={SID} HTTP/1.1\rHost: x\r\r\r\n\r\n"),
                400,
            ),
            case(
                "NUL in the request-target",
                format!("GET /?wtd={SID}\0 HTTP/1.1\r\nHost: x\r\n\r\n"),
                400,
            ),
            case(
                "CR in the request-target",
                format!("GET /?wtd={SID}\r HTTP/1.1\r\nHost: x\r\n\r\n"),
                400,
            ),
            case("NUL in a header name", get_with("X-A\0b: c\r\n"), 400),
            case("\\x01 in a header value", get_with("X-A: a\x01b\r\n"), 400),
            case("DEL in a header value", get_with("X-A: a\x7fb\r\n"), 400),
            case("\\x01 in a header name", get_with("X-A\x01: b\r\n"), 400),
            case("tab before the colon", get_with("X-A\t: b\r\n"), 400),
            case("( in a header name", get_with("X(A): b\r\n"), 400),
            case("empty header name", get_with(": b\r\n"), 400),
            case(
                "space in the request-target",
                format!("GET /a b?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n"),
                400,
            ),
            case(
                "tab in the request-target",
                format!("GET /a\tb?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n"),
                400,
            ),
            case(
                "\\x01 in the request-target",
                format!("GET /\x01?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n"),
                400,
            ),
            case(
                "DEL in the request-target",
                format!("GET /\x7f?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n"),
                400,
            ),
            case(
                "ESC sequence in the request-target",
                format!("GET /\x1b[31m?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n"),
                400,
            ),
        ],
        |_| {},
    );
}

#[test]
fn other_protocols_and_methods_are_refused() {
    run_rejected(
        &[
            case(
                "CONNECT host:port",
                "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
                405,
            ),
            case(
                "CONNECT to a local port",
                "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
                405,
            ),
            case(
                "HTTP/0.9 request line",
                format!("GET /?wtd={SID}\r\n\r\n"),
                400,
            ),
            case(
                "HTTP/2 prior-knowledge preface",
                &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
                505,
            ),
            case(
                "HTTP/2 preface and a SETTINGS frame",
                &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"[..],
                505,
            ),
        ],
        |_| {},
    );
}

#[test]
fn http09_line_without_an_end_times_out_with_408() {
    run_rejected(
        &[case(
            "HTTP/0.9 request line alone",
            format!("GET /?wtd={SID}\r\n"),
            408,
        )],
        |c| c.timeouts.request_head = Duration::from_secs(1),
    );
}

#[test]
fn head_size_and_count_limits() {
    let long_target = format!(
        "GET /?wtd={SID}&x={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    run_rejected(
        &[
            case("20 KiB request-target", long_target, 431),
            case("head of 16 KiB + 1", head_of_size(16 * 1024 + 1), 431),
            case("101 header fields", head_with_fields(101), 431),
        ],
        |_| {},
    );
    // And just under the limits they are fine.
    let s = setup(|_| {});
    for (what, raw) in [
        ("head of exactly 16 KiB", head_of_size(16 * 1024)),
        ("100 header fields", head_with_fields(100)),
    ] {
        let r = send_request(s.proxy.addr, &raw).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, 200, "{what}: {:?}", r.head);
        assert_eq!(r.backend(), "wt1", "{what}");
    }
}

/// A GET of exactly `n` bytes of head, including the final CRLF CRLF.
fn head_of_size(n: usize) -> Vec<u8> {
    let start = format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    let pad = n - start.len() - 4;
    let mut raw = start.into_bytes();
    raw.extend(std::iter::repeat_n(b'p', pad));
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw.len(), n);
    raw
}

/// A GET with `n` header fields (Host included).
fn head_with_fields(n: usize) -> Vec<u8> {
    let mut raw = format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\n");
    for i in 1..n {
        raw.push_str(&format!("X-F{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

/// The head is valid; the chunked body that came with it in the same write is not. The proxy
/// checks those bytes before it contacts any backend, so nothing is forwarded at all.
#[test]
fn bad_chunked_bodies_are_refused_before_any_backend() {
    run_rejected(
        &[
            case("chunk size -5", chunked("-5\r\nhello\r\n0\r\n\r\n"), 400),
            case("chunk size +5", chunked("+5\r\nhello\r\n0\r\n\r\n"), 400),
            case(
                "chunk size with a leading space",
                chunked(" 5\r\nhello\r\n0\r\n\r\n"),
                400,
            ),
            case(
                "chunk size 5 junk",
                chunked("5 junk\r\nhello\r\n0\r\n\r\n"),
                400,
            ),
            case("chunk size 0x5", chunked("0x5\r\nhello\r\n0\r\n\r\n"), 400),
            case(
                "chunk size 2^64",
                chunked("10000000000000000\r\nhello\r\n0\r\n\r\n"),
                400,
            ),
            case(
                "bare LF after the chunk size",
                chunked("5\nhello\r\n0\r\n\r\n"),
                400,
            ),
            case(
                "chunk data not followed by CRLF",
                chunked("5\r\nhelloXX0\r\n\r\n"),
                400,
            ),
            case(
                "chunk data followed by bare LF",
                chunked("5\r\nhello\n0\r\n\r\n"),
                400,
            ),
            case(
                "bare CR in a chunk extension",
                chunked("5;a\rb\r\nhello\r\n0\r\n\r\n"),
                400,
            ),
            case("folded trailer", chunked("0\r\nX-T: a\r\n b\r\n\r\n"), 400),
            case(
                "trailer without a colon",
                chunked("0\r\nX-T a\r\n\r\n"),
                400,
            ),
        ],
        |_| {},
    );
}

/// Absolute-form and Host name a place that is not a backend: a trap listener on this machine.
/// wtgate routes by `wtd` alone and connects only to its backends; the trap never sees a
/// connection attempt, and the backend gets the target exactly as sent.
#[test]
fn absolute_form_never_makes_wtgate_connect_elsewhere() {
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let t = trap.local_addr().unwrap();
    let s = setup(|_| {});
    let targets = [
        format!("http://{t}/?wtd={SID}&abs=1"),
        format!("http://{t}/admin"),
        format!("https://{t}:443/?wtd={SID}"),
        format!("http://user@{t}/?wtd={SID}"),
    ];
    for target in &targets {
        for host in [t.to_string(), "x".to_string()] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let r = send_request(s.proxy.addr, raw.as_bytes()).unwrap();
            assert_eq!(r.status, 200, "{raw:?}: {:?}", r.head);
            // Routed like any request: by its wtd, else round-robin.
            if target.contains("wtd=") {
                assert_eq!(r.backend(), "wt1", "{raw:?}");
            }
            assert_eq!(r.body_str(), format!("{} GET {target}", r.backend()));
        }
    }
    let seen: Vec<String> =
        s.b1.requests()
            .into_iter()
            .chain(s.b2.requests())
            .map(|r| r.target)
            .collect();
    assert_eq!(seen.len(), targets.len() * 2, "{seen:?}");
    std::thread::sleep(Duration::from_millis(100));
    match trap.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("wtgate connected to the host named in the request (from {from})"),
        Err(e) => panic!("trap accept: {e}"),
    }
}

/// Legal requests that look odd, or carry a whole request as their body: forwarded as one request
/// with exactly the body the client framed; the backend never sees a second request.
#[test]
fn legal_lookalikes_are_one_request_each() {
    let inner = format!("GET /?wtd={SID}&smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let inner_chunk = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "odd-case TE name and value",
            post("tRaNsFeR-eNcOdInG: cHuNkEd\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            b"hello".to_vec(),
        ),
        (
            "TE with a tab and trailing OWS",
            post(
                "Transfer-Encoding:\tchunked \t\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            b"hello".to_vec(),
        ),
        (
            "CL with OWS around it",
            post("Content-Length: \t5 \t\r\n", "hello"),
            b"hello".to_vec(),
        ),
        (
            "CL 5, 5",
            post("Content-Length: 5, 5\r\n", "hello"),
            b"hello".to_vec(),
        ),
        (
            "a request inside a CL body",
            post(&format!("Content-Length: {}\r\n", inner.len()), &inner),
            inner.clone().into_bytes(),
        ),
        (
            "a request inside a chunk, behind a fake last chunk",
            post("Transfer-Encoding: chunked\r\n", &inner_chunk),
            inner.clone().into_bytes(),
        ),
    ];
    for (what, raw, body) in cases {
        let s = setup(|_| {});
        let mut w = Wire::connect(s.proxy.addr);
        w.write_all(&raw).unwrap();
        let r = w
            .read_response(false)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, 200, "{what}: {:?} {}", r.head, r.body_str());
        assert_eq!(
            r.header("X-Req-Len"),
            Some(body.len().to_string().as_str()),
            "{what}"
        );
        assert_eq!(
            r.header("X-Req-Fnv"),
            Some(format!("{:016x}", fnv(&body)).as_str()),
            "{what}"
        );
        // The connection goes on, and the next request is the next one the backend sees.
        w.write_all(&get(&format!("/?wtd={SID}&next=1"))).unwrap();
        let r2 = w.read_response(false).unwrap();
        assert_eq!(r2.status, 200, "{what}");
        let targets: Vec<String> = s.b1.requests().into_iter().map(|r| r.target).collect();
        assert_eq!(
            targets,
            [format!("/?wtd={SID}"), format!("/?wtd={SID}&next=1")],
            "{what}"
        );
        assert_eq!(s.b2.bytes_received(), 0, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// The backend side: responses that would desync or mislead the client
// ---------------------------------------------------------------------------------------------

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
