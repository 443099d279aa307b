//! Malformed, hostile and smuggling-shaped requests (docs/design.md "HTTP/1.1"), in one table:
//! each [`Row`] is the bytes a client sends in one write on a fresh connection, what wtgate must
//! answer, and why. Every row is held to the same invariants ([`check_row`]):
//!
//! - the expected status, with `Connection: close`, then EOF;
//! - **no byte of it reaches any backend** (only the good requests of the test itself do);
//! - the proxy still serves a good request afterwards.
//!
//! Why refuse rather than repair: whatever we accept is forwarded, and any input two HTTP parsers
//! can read differently lets a client hide a second request from one of them (RFC 9112 §6.3,
//! §11.2).
//!
//! Legal requests that merely look odd are the second table ([`Lookalike`]): each must reach the
//! backend as exactly one request with exactly the body the client framed.
//!
//! "Nothing reached a backend" has no readiness signal ("nothing happened"): anything the proxy
//! forwarded before answering was written before the answer, so it is visible within a short
//! grace after the client has seen the answer and EOF. Connections without bytes (a TCP health
//! check or a pre-connect) are allowed.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use wtgate::config::Config;
use wtgate::h1::{Framing, Limits, parse_request};

use crate::common::*;

const SID: &str = "wt1AbCdEfGhIjKlMnOp";

/// The good request after each row: the proxy still serves (answered by wt1).
fn probe_target() -> String {
    format!("/?wtd={SID}&after=bad")
}

/// The good request that goes first on the connection of a row with a [`Lead`].
fn lead_target() -> String {
    format!("/?wtd={SID}&n=1")
}

/// After each row on a shared proxy, before its own counts are read: only tells which row
/// forwarded something; the check that catches it is the one at the end of the topic, after
/// [`FINAL_GRACE`], over every byte the backends received.
const ROW_GRACE: Duration = Duration::from_millis(20);
/// Before the end-of-topic check, and after a row that has a proxy of its own.
const FINAL_GRACE: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// Rows are grouped by topic; each topic is one `#[test]` with one proxy for its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    TransferEncoding,
    ContentLength,
    Syntax,
    Protocol,
    Limits,
    ChunkedBody,
    /// Rows that wait for `timeouts.request_head`, set to 1 s for them.
    HeadTimeout,
    /// Rows that come after a good request on the same connection.
    AfterGood,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// This status, `Connection: close`, EOF; no byte reaches any backend.
    Status(u16),
    /// A bad chunk size after a valid head: a 400 (then EOF) or the connection cut without an
    /// answer, never a 200; and no *complete* request reaches a backend (a streaming proxy may
    /// already have forwarded the head). Such a row gets a proxy of its own.
    Status400OrCut,
}

/// A good GET before the bad request, on the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lead {
    None,
    /// Sent and answered (200 from wt1) before the bad request is written.
    Answered,
    /// In the same write as the bad request: answered first, then the bad one's status.
    Pipelined,
}

struct Row {
    topic: Topic,
    name: &'static str,
    why: &'static str,
    raw: Vec<u8>,
    want: Want,
    lead: Lead,
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

/// Every malformed or hostile request, with the status wtgate answers and why.
fn table() -> Vec<Row> {
    use Topic::*;
    let row = |topic, name, why, raw: Vec<u8>, status| Row {
        topic,
        name,
        why,
        raw,
        want: Want::Status(status),
        lead: Lead::None,
    };
    const TE_LAST: &str = "the last coding must be exactly `chunked`, once, no empty elements";
    const CL_DIGITS: &str = "Content-Length is 1*DIGIT (a list only of equal values)";
    const CRLF: &str = "every line ends in CRLF";
    const CONTROLS: &str = "controls are not field content, nor part of a token or a target";
    const TOKEN: &str = "a field name is a token, directly followed by the colon (RFC 9112 §5.1)";
    const CHUNK: &str = "RFC 9112 §7.1 grammar; body bytes that came with the head are checked \
                         before any backend is contacted";
    let two_hundred_headers = {
        let mut raw = format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\n");
        for i in 0..200 {
            raw.push_str(&format!("X-H{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert!(raw.len() < 4096, "must hit the header count, not the size");
        raw.into_bytes()
    };
    let rows = vec![
        // Transfer-Encoding.
        row(
            TransferEncoding,
            "CL and TE (CL first)",
            "CL and TE together: two framings",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        row(
            TransferEncoding,
            "TE and CL (TE first)",
            "CL and TE together: two framings",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        row(
            TransferEncoding,
            "TE gzip only",
            TE_LAST,
            post("Transfer-Encoding: gzip\r\n", "hello"),
            400,
        ),
        row(
            TransferEncoding,
            "TE chunked, gzip (chunked not last)",
            TE_LAST,
            post(
                "Transfer-Encoding: chunked, gzip\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        row(
            TransferEncoding,
            "TE chunked, chunked",
            TE_LAST,
            post(
                "Transfer-Encoding: chunked, chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        row(
            TransferEncoding,
            "TE with a space before the colon",
            "no whitespace between name and colon (RFC 9112 §5.1): some servers trim it",
            post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE xchunked",
            TE_LAST,
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE \"chunked\" (quoted)",
            TE_LAST,
            post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE chunked;q=1",
            TE_LAST,
            post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE identity",
            TE_LAST,
            post("Transfer-Encoding: identity\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE chunked, identity",
            TE_LAST,
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE ,chunked (empty element)",
            TE_LAST,
            post("Transfer-Encoding: ,chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE chunked on two field lines",
            "chunked applied twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        row(
            TransferEncoding,
            "TE gzip plus Content-Length",
            "CL and TE together",
            post("Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", "hello"),
            400,
        ),
        row(
            TransferEncoding,
            "TE after a vertical tab",
            CONTROLS,
            post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE after a form feed",
            CONTROLS,
            post("Transfer-Encoding:\x0cchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE in an HTTP/1.0 request",
            "1.0 has no TE: the framing is ambiguous",
            format!("POST /?wtd={SID} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                .into_bytes(),
            400,
        ),
        row(
            TransferEncoding,
            "TE folded onto the next line",
            "obs-fold is refused (RFC 9112 §5.2 allows a 400)",
            post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "TE value folded with a tab",
            "obs-fold is refused (RFC 9112 §5.2 allows a 400)",
            post("Transfer-Encoding: gzip,\r\n\tchunked\r\n", "0\r\n\r\n"),
            400,
        ),
        row(
            TransferEncoding,
            "whitespace before the first field",
            "a folded start line: obs-fold is refused",
            format!("GET /?wtd={SID} HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: x\r\n\r\n")
                .into_bytes(),
            400,
        ),
        // Content-Length.
        row(
            ContentLength,
            "two differing Content-Length fields",
            "differing lengths",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            400,
        ),
        row(
            ContentLength,
            "CL 5, 6 (a list of differing values)",
            "differing lengths",
            post("Content-Length: 5, 6\r\n", "hello!"),
            400,
        ),
        row(
            ContentLength,
            "CL +5",
            CL_DIGITS,
            post("Content-Length: +5\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL -1",
            CL_DIGITS,
            post("Content-Length: -1\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL abc",
            CL_DIGITS,
            post("Content-Length: abc\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL 0x5",
            CL_DIGITS,
            post("Content-Length: 0x5\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL of 26 digits (overflows 64 bits)",
            "a length we cannot represent cannot be framed",
            post("Content-Length: 99999999999999999999999999\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL with a space before the colon",
            "no whitespace between name and colon (RFC 9112 §5.1)",
            post("Content-Length : 5\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL 5 5",
            CL_DIGITS,
            post("Content-Length: 5 5\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL 5.0",
            CL_DIGITS,
            post("Content-Length: 5.0\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL 1e1",
            CL_DIGITS,
            post("Content-Length: 1e1\r\n", "helloworld"),
            400,
        ),
        row(
            ContentLength,
            "CL empty",
            CL_DIGITS,
            post("Content-Length:\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL 5, (trailing comma)",
            CL_DIGITS,
            post("Content-Length: 5,\r\n", "hello"),
            400,
        ),
        row(
            ContentLength,
            "CL 5 and content-length 6",
            "differing lengths, whatever the case of the name",
            post("Content-Length: 5\r\ncontent-length: 6\r\n", "hello!"),
            400,
        ),
        row(
            ContentLength,
            "two Host fields",
            "RFC 9112 §3.2",
            get_with("Host: y\r\n"),
            400,
        ),
        // Line ends, controls, names, request line.
        row(
            Syntax,
            "obs-fold of a header value",
            "obs-fold is refused (RFC 9112 §5.2 allows a 400)",
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n")
                .into_bytes(),
            400,
        ),
        row(
            Syntax,
            "bare LF line endings",
            CRLF,
            format!("GET /?wtd={SID} HTTP/1.1\nHost: x\nX-A: 1\n\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "bare LF in one header line",
            CRLF,
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "bare CR in a header value",
            CRLF,
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "NUL in a header value",
            CONTROLS,
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "no Host on HTTP/1.1",
            "RFC 9112 §3.2",
            format!("GET /?wtd={SID} HTTP/1.1\r\nUser-Agent: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "garbage request line",
            "not `method SP target SP version`",
            b"HELLO\r\n\r\n".to_vec(),
            400,
        ),
        row(
            Syntax,
            "space in a header name",
            TOKEN,
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "bare LF ending the head only",
            CRLF,
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\n\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "bare LF after the request line only",
            CRLF,
            format!("GET /?wtd={SID} HTTP/1.1\nHost: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "LF CR LF ending the head",
            CRLF,
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "CR-only line ends",
            CRLF,
            format!("GET /?wtd={SID} HTTP/1.1\rHost: x\r\r\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "NUL in the request-target",
            CONTROLS,
            format!("GET /?wtd={SID}\0 HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "CR in the request-target",
            CONTROLS,
            format!("GET /?wtd={SID}\r HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "NUL in a header name",
            CONTROLS,
            get_with("X-A\0b: c\r\n"),
            400,
        ),
        row(
            Syntax,
            "\\x01 in a header value",
            CONTROLS,
            get_with("X-A: a\x01b\r\n"),
            400,
        ),
        row(
            Syntax,
            "DEL in a header value",
            CONTROLS,
            get_with("X-A: a\x7fb\r\n"),
            400,
        ),
        row(
            Syntax,
            "\\x01 in a header name",
            TOKEN,
            get_with("X-A\x01: b\r\n"),
            400,
        ),
        row(
            Syntax,
            "tab before the colon",
            TOKEN,
            get_with("X-A\t: b\r\n"),
            400,
        ),
        row(
            Syntax,
            "( in a header name",
            TOKEN,
            get_with("X(A): b\r\n"),
            400,
        ),
        row(Syntax, "empty header name", TOKEN, get_with(": b\r\n"), 400),
        row(
            Syntax,
            "space in the request-target",
            "a target is one token of visible bytes",
            format!("GET /a b?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "tab in the request-target",
            "a target is one token of visible bytes",
            format!("GET /a\tb?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "\\x01 in the request-target",
            CONTROLS,
            format!("GET /\x01?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "DEL in the request-target",
            CONTROLS,
            format!("GET /\x7f?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Syntax,
            "ESC sequence in the request-target",
            CONTROLS,
            format!("GET /\x1b[31m?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            400,
        ),
        // Other protocols and methods.
        row(
            Protocol,
            "HTTP/2.0 request line",
            "a version we do not speak",
            format!("GET /?wtd={SID} HTTP/2.0\r\nHost: x\r\n\r\n").into_bytes(),
            505,
        ),
        row(
            Protocol,
            "CONNECT host:port",
            "a reverse proxy opens no tunnels to arbitrary places",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
            405,
        ),
        row(
            Protocol,
            "CONNECT to a local port",
            "a reverse proxy opens no tunnels to arbitrary places",
            b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n".to_vec(),
            405,
        ),
        row(
            Protocol,
            "HTTP/0.9 request line",
            "no version: not a request we can frame",
            format!("GET /?wtd={SID}\r\n\r\n").into_bytes(),
            400,
        ),
        row(
            Protocol,
            "HTTP/2 prior-knowledge preface",
            "a version we do not speak (h2c prior knowledge is not offered)",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            505,
        ),
        row(
            Protocol,
            "HTTP/2 preface and a SETTINGS frame",
            "a version we do not speak (h2c prior knowledge is not offered)",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec(),
            505,
        ),
        // Size and count limits (just under them is fine: see `lookalikes`).
        row(
            Limits,
            "header of 20 KiB",
            "head over 16 KiB",
            format!(
                "GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20 * 1024)
            )
            .into_bytes(),
            431,
        ),
        row(
            Limits,
            "200 header fields",
            "over the default limit of 100 fields",
            two_hundred_headers,
            431,
        ),
        row(
            Limits,
            "20 KiB request-target",
            "head over 16 KiB",
            format!(
                "GET /?wtd={SID}&x={} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(20 * 1024)
            )
            .into_bytes(),
            431,
        ),
        row(
            Limits,
            "head of 16 KiB + 1",
            "the limit includes the final CRLF CRLF",
            head_of_size(16 * 1024 + 1),
            431,
        ),
        row(
            Limits,
            "101 header fields",
            "the default limit is 100",
            head_with_fields(101),
            431,
        ),
        // A valid head, and a chunked body that came with it in the same write.
        row(
            ChunkedBody,
            "chunk size -5",
            CHUNK,
            chunked("-5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "chunk size +5",
            CHUNK,
            chunked("+5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "chunk size with a leading space",
            CHUNK,
            chunked(" 5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "chunk size 5 junk",
            CHUNK,
            chunked("5 junk\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "chunk size 0x5",
            CHUNK,
            chunked("0x5\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "chunk size 2^64",
            CHUNK,
            chunked("10000000000000000\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "bare LF after the chunk size",
            CHUNK,
            chunked("5\nhello\r\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "chunk data not followed by CRLF",
            CHUNK,
            chunked("5\r\nhelloXX0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "chunk data followed by bare LF",
            CHUNK,
            chunked("5\r\nhello\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "bare CR in a chunk extension",
            CHUNK,
            chunked("5;a\rb\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "folded trailer",
            CHUNK,
            chunked("0\r\nX-T: a\r\n b\r\n\r\n"),
            400,
        ),
        row(
            ChunkedBody,
            "trailer without a colon",
            CHUNK,
            chunked("0\r\nX-T a\r\n\r\n"),
            400,
        ),
        Row {
            want: Want::Status400OrCut,
            ..row(
                ChunkedBody,
                "chunk size zz",
                "not hex: never a 200, never a complete request on a backend",
                chunked("zz\r\nhello\r\n0\r\n\r\n"),
                400,
            )
        },
        Row {
            want: Want::Status400OrCut,
            ..row(
                ChunkedBody,
                "chunk size of 21 hex digits (overflows 64 bits)",
                "a chunk size too large for 64 bits is a bad chunk size too",
                chunked("fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
                400,
            )
        },
        // A head that never ends: 408 at `timeouts.request_head` (1 s here).
        row(
            HeadTimeout,
            "slowloris: a head sent in part, then nothing",
            "the head must arrive within timeouts.request_head",
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Slow: ").into_bytes(),
            408,
        ),
        row(
            HeadTimeout,
            "HTTP/0.9 request line alone",
            "the head never ends: request-head timeout",
            format!("GET /?wtd={SID}\r\n").into_bytes(),
            408,
        ),
        // After a good request on the same keep-alive connection: the good one is answered and
        // reaches wt1, the bad one gets its status and the connection closes.
        Row {
            lead: Lead::Answered,
            ..row(
                AfterGood,
                "differing lengths after a good request",
                "differing lengths",
                post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
                400,
            )
        },
        Row {
            lead: Lead::Pipelined,
            ..row(
                AfterGood,
                "CL and TE pipelined behind a good request",
                "CL and TE together: two framings",
                post(
                    "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
                    "0\r\n\r\n",
                ),
                400,
            )
        },
    ];
    rows
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// Request counts and byte counts of both backends, to tell what one row added.
#[derive(Clone, Copy)]
struct Counts {
    requests: [usize; 2],
    bytes: [usize; 2],
}

impl Counts {
    fn of(s: &Pair) -> Counts {
        Counts {
            requests: [s.b1.request_count(), s.b2.request_count()],
            bytes: [s.b1.bytes_received(), s.b2.bytes_received()],
        }
    }
}

fn preview(s: &Pair) -> String {
    format!("{}{}", s.b1.received_preview(), s.b2.received_preview())
}

fn config_for(topic: Topic) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        if topic == Topic::HeadTimeout {
            c.timeouts.request_head = Duration::from_secs(1);
        }
    }
}

/// Sends one row on a fresh connection to `s` and checks the invariants; `grace` is waited
/// between the answer and reading the backends' counts.
fn check_row(s: &Pair, row: &Row, grace: Duration) -> Result<(), String> {
    let before = Counts::of(s);
    let mut w = Wire::connect(s.proxy.addr);
    let lead = get(&lead_target());
    match row.lead {
        Lead::None => w.write_all(&row.raw),
        Lead::Answered => w.write_all(&lead),
        Lead::Pipelined => w.write_all(&[&lead[..], &row.raw[..]].concat()),
    }
    .map_err(|e| e.to_string())?;
    if row.lead != Lead::None {
        let r = w
            .read_response(false)
            .map_err(|e| format!("no answer to the good request before it: {e}"))?;
        if r.status != 200 || r.backend() != "wt1" {
            return Err(format!(
                "the good request before it got {} from {}",
                r.status,
                r.backend()
            ));
        }
        if row.lead == Lead::Answered {
            w.write_all(&row.raw).map_err(|e| e.to_string())?;
        }
    }
    let answer = w.read_response(false);
    eprintln!(
        "{:<56} -> {}",
        row.name,
        match &answer {
            Ok(r) => r.status.to_string(),
            Err(e) => format!("{e}"),
        }
    );
    let want = match row.want {
        Want::Status(status) => status,
        Want::Status400OrCut => 400,
    };
    match (row.want, answer) {
        (_, Ok(r)) => {
            if r.status != want {
                return Err(format!("answered {} {:?}", r.status, r.body_str()));
            }
            if !r.head.has_token("Connection", "close") {
                return Err(format!(
                    "{} without Connection: close: {:?}",
                    r.status, r.head
                ));
            }
            w.expect_closed()
                .map_err(|e| format!("after the {}: {e}", r.status))?;
        }
        (Want::Status400OrCut, Err(e))
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) => {}
        (_, Err(e)) => return Err(format!("no answer: {e}")),
    }
    thread::sleep(grace);
    let after = Counts::of(s);
    let new_requests = [0, 1].map(|i| after.requests[i] - before.requests[i]);
    let new_bytes = [0, 1].map(|i| after.bytes[i] - before.bytes[i]);
    let forwarded = match (row.want, row.lead) {
        (Want::Status400OrCut, _) => new_requests != [0, 0],
        (Want::Status(_), Lead::None) => new_bytes != [0, 0],
        // The good request, and nothing else that a backend could take for a request.
        (Want::Status(_), _) => new_requests != [1, 0] || new_bytes[1] != 0,
    };
    if forwarded {
        return Err(format!(
            "reached a backend: {new_requests:?} requests, {new_bytes:?} bytes:\n{}",
            preview(s)
        ));
    }
    // The proxy still serves.
    match send_request(s.proxy.addr, &get(&probe_target())) {
        Ok(r) if r.status == 200 && r.backend() == "wt1" => Ok(()),
        Ok(r) => Err(format!(
            "afterwards a good request got {} from {}",
            r.status,
            r.backend()
        )),
        Err(e) => Err(format!("the proxy stopped serving: {e}")),
    }
}

/// Every byte the backends of `s` received is one of the test's own good requests (probes and
/// leads): parsed as a sequence of complete GETs without a body, with nothing left over.
fn only_good_requests_reached(s: &Pair) -> Result<(), String> {
    let good = [probe_target(), lead_target()];
    if s.b2.bytes_received() != 0 {
        return Err(format!("wt2 received bytes:\n{}", preview(s)));
    }
    for c in s.b1.conns() {
        if c.total != c.bytes.len() {
            return Err(format!(
                "wt1 conn {}: {} bytes, too many to check",
                c.id, c.total
            ));
        }
        let mut rest = &c.bytes[..];
        while !rest.is_empty() {
            let stray = || {
                format!(
                    "wt1 conn {} received more than the good requests: {:?}",
                    c.id,
                    String::from_utf8_lossy(&rest[..rest.len().min(300)])
                )
            };
            let h = match parse_request(rest, &Limits::default()) {
                Ok(Some(h)) => h,
                _ => return Err(stray()),
            };
            let target = String::from_utf8_lossy(&rest[h.target.clone()]);
            if &rest[h.method.clone()] != b"GET"
                || h.framing != Framing::None
                || !good.iter().any(|g| *g == target)
            {
                return Err(stray());
            }
            rest = &rest[h.head_len..];
        }
    }
    Ok(())
}

/// Runs the rows of `topic`: on one proxy, except a [`Want::Status400OrCut`] row, which gets a
/// proxy of its own (its head may legitimately reach a backend). Every failure is collected, so
/// one run reports the whole topic.
fn run(topic: Topic) {
    let rows: Vec<Row> = table().into_iter().filter(|r| r.topic == topic).collect();
    assert!(!rows.is_empty(), "no rows for {topic:?}");
    let shared = start_pair(config_for(topic));
    let mut failures = Vec::new();
    for row in &rows {
        let result = match row.want {
            Want::Status(_) => check_row(&shared, row, ROW_GRACE),
            Want::Status400OrCut => check_row(&start_pair(config_for(topic)), row, FINAL_GRACE),
        };
        if let Err(e) = result {
            failures.push(format!("{} ({}): {e}", row.name, row.why));
        }
    }
    thread::sleep(FINAL_GRACE);
    if let Err(e) = only_good_requests_reached(&shared) {
        failures.push(e);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn transfer_encoding() {
    run(Topic::TransferEncoding);
}

#[test]
fn content_length() {
    run(Topic::ContentLength);
}

#[test]
fn line_ends_controls_names_and_request_lines() {
    run(Topic::Syntax);
}

#[test]
fn other_protocols_and_methods() {
    run(Topic::Protocol);
}

#[test]
fn head_size_and_count_limits() {
    run(Topic::Limits);
}

/// The head is valid; the chunked body that came with it in the same write is not.
#[test]
fn bad_chunked_bodies() {
    run(Topic::ChunkedBody);
}

#[test]
fn heads_that_never_end_get_408() {
    run(Topic::HeadTimeout);
}

#[test]
fn bad_requests_after_a_good_one() {
    run(Topic::AfterGood);
}

/// Row names are what a failure reports: each names one row.
#[test]
fn row_names_are_unique() {
    let rows = table();
    let mut names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "duplicate row names");
}

// ---------------------------------------------------------------------------------------------
// Legal lookalikes
// ---------------------------------------------------------------------------------------------

/// A legal request that looks odd, and the body the backend must get.
struct Lookalike {
    name: &'static str,
    raw: Vec<u8>,
    body: Vec<u8>,
}

fn lookalikes() -> Vec<Lookalike> {
    let inner = format!("GET /?wtd={SID}&smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let inner_chunk = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    let ok = |name, raw: Vec<u8>, body: &[u8]| Lookalike {
        name,
        raw,
        body: body.to_vec(),
    };
    vec![
        ok(
            "CL with leading zeros",
            post("Content-Length: 005\r\n", "hello"),
            b"hello",
        ),
        ok(
            "the same CL twice",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            b"hello",
        ),
        ok(
            "TE Chunked (case)",
            post("Transfer-Encoding: Chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            b"hello",
        ),
        ok(
            "lowercase header names",
            format!("POST /?wtd={SID} HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
                .into_bytes(),
            b"hello",
        ),
        ok(
            "obs-text and a tab in a header value",
            format!(
                "GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Name: caf\u{e9}\tna\u{ef}ve\r\nX-Raw: \r\n\r\n"
            )
            .into_bytes(),
            b"",
        ),
        ok(
            "Latin-1 obs-text in a header value",
            {
                let mut v =
                    format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Name: caf").into_bytes();
                v.extend_from_slice(b"\xe9\r\n\r\n");
                v
            },
            b"",
        ),
        ok(
            "empty header value",
            format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n").into_bytes(),
            b"",
        ),
        ok(
            "TE gzip, chunked",
            post(
                "Transfer-Encoding: gzip, chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            b"hello",
        ),
        ok(
            "head of exactly 16 KiB",
            head_of_size(16 * 1024),
            b"",
        ),
        ok("100 header fields", head_with_fields(100), b""),
        ok(
            "odd-case TE name and value",
            post("tRaNsFeR-eNcOdInG: cHuNkEd\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            b"hello",
        ),
        ok(
            "TE with a tab and trailing OWS",
            post(
                "Transfer-Encoding:\tchunked \t\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            b"hello",
        ),
        ok(
            "CL with OWS around it",
            post("Content-Length: \t5 \t\r\n", "hello"),
            b"hello",
        ),
        ok(
            "CL 5, 5",
            post("Content-Length: 5, 5\r\n", "hello"),
            b"hello",
        ),
        ok(
            "a request inside a CL body",
            post(&format!("Content-Length: {}\r\n", inner.len()), &inner),
            inner.as_bytes(),
        ),
        ok(
            "a request inside a chunk, behind a fake last chunk",
            post("Transfer-Encoding: chunked\r\n", &inner_chunk),
            inner.as_bytes(),
        ),
    ]
}

/// Each lookalike, on a proxy of its own: answered 200 by the owner (wt1) with exactly the body
/// the client framed (`X-Req-Len`, `X-Req-Fnv`); the connection goes on, and the next request is
/// the next one the backend sees (so no second request hid in the first); wt2 gets nothing.
#[test]
fn legal_lookalikes_are_one_request_each() {
    let mut failures = Vec::new();
    for case in lookalikes() {
        let s = start_pair(|_| {});
        let what = case.name;
        let mut w = Wire::connect(s.proxy.addr);
        w.write_all(&case.raw).unwrap();
        let r = w
            .read_response(false)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let want_len = case.body.len().to_string();
        let want_fnv = format!("{:016x}", fnv(&case.body));
        if r.status != 200 || r.backend() != "wt1" {
            failures.push(format!(
                "{what}: refused: {} from {}: {:?} {}",
                r.status,
                r.backend(),
                r.head,
                r.body_str()
            ));
            continue;
        }
        if r.header("X-Req-Len") != Some(want_len.as_str())
            || r.header("X-Req-Fnv") != Some(want_fnv.as_str())
        {
            failures.push(format!(
                "{what}: the backend got another body: {:?}",
                r.head
            ));
        }
        w.write_all(&get(&format!("/?wtd={SID}&next=1"))).unwrap();
        match w.read_response(false) {
            Ok(r2) if r2.status == 200 => {}
            other => failures.push(format!("{what}: the next request: {other:?}")),
        }
        let targets: Vec<String> = s.b1.requests().into_iter().map(|r| r.target).collect();
        if targets != [format!("/?wtd={SID}"), format!("/?wtd={SID}&next=1")] {
            failures.push(format!("{what}: wt1 saw {targets:?}"));
        }
        if s.b2.bytes_received() != 0 {
            failures.push(format!("{what}: wt2 received bytes"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Absolute-form
// ---------------------------------------------------------------------------------------------

/// Absolute-form and Host name a place that is not a backend: a trap listener on this machine.
/// wtgate routes by `wtd` alone and connects only to its backends; the trap never sees a
/// connection attempt. The backend gets the target as sent and, as RFC 9112 §3.2.2 has it, the
/// target's authority as its one Host, whatever Host the client sent; a target with userinfo is
/// a 400.
#[test]
fn absolute_form_never_makes_wtgate_connect_elsewhere() {
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let t = trap.local_addr().unwrap();
    let s = start_pair(|_| {});
    let targets = [
        (format!("http://{t}/?wtd={SID}&abs=1"), t.to_string()),
        (format!("http://{t}/admin"), t.to_string()),
        (
            format!("https://a.example:443/?wtd={SID}"),
            "a.example:443".into(),
        ),
        (format!("HTTP://{t}?wtd={SID}"), t.to_string()),
    ];
    for (target, authority) in &targets {
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
        let seen: Vec<_> = s.b1.requests().into_iter().chain(s.b2.requests()).collect();
        for req in seen.iter().filter(|r| &r.target == target) {
            let hosts: Vec<_> = req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
                .collect();
            assert_eq!(hosts.len(), 1, "{req:?}");
            assert_eq!(&hosts[0].1, authority, "{req:?}");
        }
    }
    let raw = format!("GET http://user@{t}/?wtd={SID} HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = send_request(s.proxy.addr, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 400, "{:?}", r.head);
    let seen: Vec<String> =
        s.b1.requests()
            .into_iter()
            .chain(s.b2.requests())
            .map(|r| r.target)
            .collect();
    assert_eq!(seen.len(), targets.len() * 2, "{seen:?}");
    thread::sleep(FINAL_GRACE);
    match trap.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("wtgate connected to the host named in the request (from {from})"),
        Err(e) => panic!("trap accept: {e}"),
    }
}
