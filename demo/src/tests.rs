//! The demo backends end to end, over loopback sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use wtgate_h1::{self as h1, BodyFramer, Limits};

use crate::server::MAX_HEAD;
use crate::{DemoBackend, SESSION_ID_LEN, ws};

const TIMEOUT: Duration = Duration::from_secs(5);

fn backend(prefix: &str) -> DemoBackend {
    DemoBackend::spawn(prefix, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn connect(b: &DemoBackend) -> TcpStream {
    let s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        let h = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        h.map(|(_, v)| v.as_str())
    }
}

/// Client side: reads one response from `s`, keeping extra bytes in `buf`.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Resp {
    fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).expect("read timed out");
        buf.extend_from_slice(&chunk[..n]);
        n
    }
    let head = loop {
        if let Some(head) = h1::parse_response(buf, &Limits::default(), head_request).unwrap() {
            break head;
        }
        assert!(
            more(s, buf) > 0,
            "unexpected EOF; have {:?}",
            String::from_utf8_lossy(buf)
        );
    };
    let headers = head
        .headers
        .iter()
        .map(|h| {
            let text =
                |r: &std::ops::Range<usize>| String::from_utf8_lossy(&buf[r.clone()]).to_string();
            (text(&h.name), text(&h.value))
        })
        .collect();
    buf.drain(..head.head_len);
    let mut body = Vec::new();
    let mut framer = BodyFramer::new(head.framing);
    loop {
        let step = framer
            .advance_with(buf, &mut |data| body.extend_from_slice(data))
            .unwrap();
        buf.drain(..step.consumed);
        if step.done {
            break;
        }
        if more(s, buf) == 0 {
            framer.on_eof().expect("the body ends before EOF");
            break;
        }
    }
    Resp {
        status: head.status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn get(b: &DemoBackend, target: &str) -> Resp {
    let mut s = connect(b);
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    read_response(&mut s, &mut Vec::new(), false)
}

/// The session id announced on a new-session page.
fn new_id(r: &Resp, prefix: &str) -> String {
    let at = r.body.find("new session ").expect("a new session") + "new session ".len();
    let id = &r.body[at..at + prefix.len() + SESSION_ID_LEN];
    assert!(id.starts_with(prefix), "{id}");
    assert!(
        id[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );
    id.to_string()
}

fn assert_eof(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    assert_eq!(s.read(&mut b).expect("EOF, not a timeout"), 0);
}

#[test]
fn new_session_page() {
    let b = backend("wt1");
    assert_eq!(b.prefix(), "wt1");
    let r = get(&b, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend"), Some("wt1"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let want = format!("served by backend wt1 ({}), new session wt1", b.addr());
    assert!(r.body.contains(&want), "{}", r.body);
    let id = new_id(&r, "wt1");
    assert!(r.body.contains(&format!("href=\"?wtd={id}\"")));
    assert!(r.body.contains("&request=ws") && r.body.contains("new WebSocket"));
    assert_eq!((b.requests(), b.sessions()), (1, 1));
    let other = new_id(&get(&b, "/app/some/path"), "wt1");
    assert_ne!(id, other);
}

#[test]
fn follow_up_counts_requests() {
    let b = backend("wt1");
    let id = new_id(&get(&b, "/"), "wt1");
    let r = get(&b, &format!("/?wtd={id}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let want = format!("served by backend wt1, session {id} (request #2 of this session)");
    assert!(r.body.contains(&want), "{}", r.body);
    let r = get(&b, &format!("/?wtd={id}&request=style&page=1"));
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/css"))
    );
    assert!(r.header("content-length").is_some());
    assert!(
        r.body.contains(&format!("session {id} (request #3")),
        "{}",
        r.body
    );
    let r = get(&b, &format!("/?wtd={id}&sid=1&request=script&rand=2"));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(r.body.contains("backend wt1") && r.body.contains("(request #4"));
    assert_eq!((b.requests(), b.sessions()), (4, 1));
}

#[test]
fn foreign_or_unknown_wtd_gets_new_session() {
    let b = backend("wt1");
    for wtd in [
        "wt2AAAAAAAAAAAAAAAA",
        "wt1AAAAAAAAAAAAAAAA",
        "wt1short",
        "",
        "wt1AAAAAAAAAAAAAAAAA",
    ] {
        let r = get(&b, &format!("/?wtd={wtd}&request=style"));
        assert_eq!(r.status, 200);
        let id = new_id(&r, "wt1");
        assert_ne!(id, wtd);
    }
    assert_eq!(b.sessions(), 5);
}

#[test]
fn keep_alive_and_pipelining() {
    let b = backend("wt1");
    let mut s = connect(&b);
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r1 = read_response(&mut s, &mut buf, false);
    let id = new_id(&r1, "wt1");
    assert_eq!(r1.header("connection"), None);
    // Two pipelined requests in one write, one with a body; answered in order.
    let body = "request=jsupdate&ackId=0&pageId=1";
    let two = format!(
        "POST /?wtd={id} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}\
         GET /?wtd={id}&request=style HTTP/1.1\r\nHost: x\r\n\r\n",
        body.len()
    );
    s.write_all(two.as_bytes()).unwrap();
    let r2 = read_response(&mut s, &mut buf, false);
    assert!(
        r2.body.contains("request=jsupdate, body 33 bytes"),
        "{}",
        r2.body
    );
    assert!(r2.body.contains("(request #2 "));
    let r3 = read_response(&mut s, &mut buf, false);
    assert!(r3.body.contains("(request #3 "), "{}", r3.body);
    // HEAD gets headers only; the connection stays usable.
    s.write_all(format!("HEAD /?wtd={id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let r4 = read_response(&mut s, &mut buf, true);
    assert_eq!(r4.status, 200);
    s.write_all(b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r5 = read_response(&mut s, &mut buf, false);
    assert_eq!((r5.status, r5.header("connection")), (404, Some("close")));
    assert!(buf.is_empty());
    assert_eof(&mut s);
    assert_eq!((b.requests(), b.sessions()), (5, 1));
}

#[test]
fn http10_and_chunked_and_expect() {
    let b = backend("wt7");
    let mut s = connect(&b);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    let id = new_id(&r, "wt7");
    assert_eof(&mut s);

    let mut s = connect(&b);
    let mut buf = Vec::new();
    let req = format!(
        "POST /?wtd={id}&request=jsupdate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut buf, false).status, 100);
    s.write_all(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf, false);
    let hash = b"hello world"
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
            (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
        });
    let want = format!("request=jsupdate, body 11 bytes, fnv1a {hash:016x}");
    assert!(r.body.contains(&want), "{}", r.body);
    // Unknown session POST: Wt's answer is a reload script.
    let req = "POST /?wtd=wt7AAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    s.write_all(req.as_bytes()).unwrap();
    let r = read_response(&mut s, &mut buf, false);
    assert!(r.body.contains("unknown session") && r.body.contains("location.replace"));
}

#[test]
fn malformed_requests_get_400_and_close() {
    let b = backend("wt1");
    for (req, status) in [
        ("GARBAGE\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        ("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
        ("DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        ("GET /?request=ws HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ] {
        let mut s = connect(&b);
        s.write_all(req.as_bytes()).unwrap();
        let r = read_response(&mut s, &mut Vec::new(), false);
        assert_eq!(r.status, status, "{req:?}");
        assert_eq!(r.header("connection"), Some("close"), "{req:?}");
        assert_eq!(r.header("x-backend"), Some("wt1"));
        assert_eof(&mut s);
    }
    let mut s = connect(&b);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_HEAD)
    );
    s.write_all(huge.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut Vec::new(), false).status, 431);
    // Still serving.
    assert_eq!(get(&b, "/").status, 200);
}

/// What the HTTP core refuses gets its status, the cause as the body, and a close; these
/// are the cases the demo accepted before it parsed with the core.
#[test]
fn what_the_core_refuses_is_answered_with_its_cause() {
    let b = backend("wt1");
    for (req, status, cause) in [
        (
            "GET / HTTP/1.1\nHost: x\n\n",
            400,
            "bare LF in request head",
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            400,
            "invalid Transfer-Encoding",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            400,
            "invalid chunk size",
        ),
        (
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            405,
            "method not allowed",
        ),
        (
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            505,
            "unsupported HTTP version",
        ),
    ] {
        let mut s = connect(&b);
        s.write_all(req.as_bytes()).unwrap();
        let r = read_response(&mut s, &mut Vec::new(), false);
        assert_eq!((r.status, r.body.trim_end()), (status, cause), "{req:?}");
        assert_eq!(r.header("connection"), Some("close"), "{req:?}");
        assert_eof(&mut s);
    }
    // Only the head whose body then broke its framing passed the core.
    assert_eq!(b.requests(), 1);
}

fn ws_handshake(b: &DemoBackend, wtd: &str) -> (TcpStream, Resp, Vec<u8>) {
    let mut s = connect(b);
    let req = format!(
        "GET /?wtd={wtd}&request=ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false);
    (s, r, buf)
}

fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> ws::Frame {
    loop {
        if let Some((f, n)) = ws::decode_frame(buf, 1 << 20).unwrap() {
            buf.drain(..n);
            return f;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).expect("frame timed out");
        assert!(n > 0, "EOF while waiting for a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn websocket_echo() {
    let b = backend("wt1");
    let id = new_id(&get(&b, "/"), "wt1");
    let (mut s, r, mut buf) = ws_handshake(&b, &id);
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(r.header("x-backend"), Some("wt1"));

    let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    let mut out = Vec::new();
    let key = Some([1, 2, 3, 4]);
    ws::encode_frame(&mut out, true, ws::OP_TEXT, b"hello", key);
    ws::encode_frame(&mut out, true, ws::OP_BINARY, &big[..300], key);
    ws::encode_frame(&mut out, true, ws::OP_PING, b"p", key);
    ws::encode_frame(&mut out, false, ws::OP_TEXT, b"frag", key);
    ws::encode_frame(&mut out, true, ws::OP_CONT, b"ment", key);
    ws::encode_frame(&mut out, true, ws::OP_BINARY, &big, key);
    // Split the write mid-frame to exercise partial reads on the server.
    s.write_all(&out[..7]).unwrap();
    s.flush().unwrap();
    thread::sleep(Duration::from_millis(20));
    s.write_all(&out[7..]).unwrap();
    let want = [
        (true, ws::OP_TEXT, &b"hello"[..]),
        (true, ws::OP_BINARY, &big[..300]),
        (true, ws::OP_PONG, b"p"),
        (false, ws::OP_TEXT, b"frag"),
        (true, ws::OP_CONT, b"ment"),
        (true, ws::OP_BINARY, &big),
    ];
    for (fin, opcode, payload) in want {
        let f = read_frame(&mut s, &mut buf);
        assert_eq!(
            (f.fin, f.opcode, f.payload.as_slice()),
            (fin, opcode, payload)
        );
    }
    out.clear();
    ws::encode_frame(&mut out, true, ws::OP_CLOSE, &1000u16.to_be_bytes(), key);
    s.write_all(&out).unwrap();
    let f = read_frame(&mut s, &mut buf);
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (ws::OP_CLOSE, &[0x03, 0xE8][..])
    );
    assert_eof(&mut s);
    assert_eq!(b.requests(), 2);
}

#[test]
fn upgrade_on_a_reused_connection_gets_101_then_close() {
    let b = backend("wt1");
    let mut s = connect(&b);
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let id = new_id(&read_response(&mut s, &mut buf, false), "wt1");
    let req = format!(
        "GET /?wtd={id}&request=ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let r = read_response(&mut s, &mut buf, false);
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(buf.is_empty(), "bytes after the 101: {buf:?}");
    assert_eof(&mut s);
    // The session is fine: an upgrade as the first request of a connection still works.
    let (mut s, r, mut buf) = ws_handshake(&b, &id);
    assert_eq!(r.status, 101);
    let mut out = Vec::new();
    ws::encode_frame(&mut out, true, ws::OP_TEXT, b"hi", Some([1, 2, 3, 4]));
    s.write_all(&out).unwrap();
    let f = read_frame(&mut s, &mut buf);
    assert_eq!((f.opcode, f.payload.as_slice()), (ws::OP_TEXT, &b"hi"[..]));
}

#[test]
fn websocket_protocol_errors_close_1002() {
    let b = backend("wt1");
    let id = new_id(&get(&b, "/"), "wt1");
    for bad in [
        vec![0x81, 0x01, b'x'],             // unmasked client frame
        vec![0x80, 0x81, 0, 0, 0, 0, b'x'], // continuation without a start
        vec![0xC1, 0x81, 0, 0, 0, 0, b'x'], // reserved bit
    ] {
        let (mut s, r, mut buf) = ws_handshake(&b, &id);
        assert_eq!(r.status, 101);
        s.write_all(&bad).unwrap();
        let f = read_frame(&mut s, &mut buf);
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (ws::OP_CLOSE, &[0x03, 0xEA][..])
        );
        assert_eof(&mut s);
    }
}

#[test]
fn websocket_unknown_session_is_403() {
    let b = backend("wt1");
    for wtd in ["wt1AAAAAAAAAAAAAAAA", "wt2AAAAAAAAAAAAAAAA", ""] {
        let (mut s, r, _) = ws_handshake(&b, wtd);
        assert_eq!(r.status, 403);
        assert_eq!(r.header("x-backend"), Some("wt1"));
        assert_eof(&mut s);
    }
    assert_eq!(b.sessions(), 0);
}
