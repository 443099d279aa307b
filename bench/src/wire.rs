//! Sans-IO pieces of the generator's HTTP: building Wt-like requests and reading response heads
//! (with the proxy's own h1 core). No sockets here; `load.rs` feeds bytes in.

use std::rc::Rc;

use wtgate::h1::{self, Framing, Limits, ResponseHead};

/// What the generator needs from a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespHead {
    pub status: u16,
    /// Bytes of the head, through the empty line.
    pub head_len: usize,
    pub body: BodyLen,
    /// The server will close after this response (`Connection: close`, HTTP/1.0 without
    /// keep-alive, or a body that ends at the close).
    pub close: bool,
    /// The `X-Backend` value, up to 32 bytes.
    backend: [u8; 32],
    backend_len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    Length(u64),
    /// Chunked transfer coding (not decoded here: counted as a bad response by the generator).
    Chunked,
    /// Read until the server closes.
    UntilClose,
}

impl RespHead {
    pub fn backend(&self) -> Option<&[u8]> {
        (self.backend_len > 0).then(|| &self.backend[..self.backend_len as usize])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHead;

/// Reads response heads with the h1 core into one kept head, so that after the first response a
/// connection's reads allocate nothing.
#[derive(Default)]
pub struct HeadReader {
    head: ResponseHead,
}

impl HeadReader {
    /// Parses a response head at the start of `buf`. `Ok(None)`: incomplete. 1xx, 204 and 304
    /// have no body.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<RespHead>, BadHead> {
        let limits = Limits {
            // The read buffer bounds the head: a head that does not fit is a bad response.
            max_head_bytes: usize::MAX,
            max_headers: 32,
        };
        match h1::parse_response_into(buf, &limits, false, &mut self.head) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(_) => return Err(BadHead),
        }
        let head = &self.head;
        let body = match head.framing {
            Framing::None => BodyLen::Length(0),
            Framing::Length(n) => BodyLen::Length(n),
            Framing::Chunked => BodyLen::Chunked,
            Framing::CloseDelimited => BodyLen::UntilClose,
        };
        let mut backend = [0u8; 32];
        let mut backend_len = 0u8;
        if let Some(value) = h1::header_values(buf, &head.headers, "x-backend").last() {
            let n = value.len().min(backend.len());
            backend[..n].copy_from_slice(&value[..n]);
            backend_len = n as u8;
        }
        Ok(Some(RespHead {
            status: head.status,
            head_len: head.head_len,
            body,
            close: !head.keep_alive,
            backend,
            backend_len,
        }))
    }
}

/// [`HeadReader::parse`] with a fresh reader, for a head read once per connection.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<RespHead>, BadHead> {
    HeadReader::default().parse(buf)
}

/// A prepared request: its bytes and the backend whose `X-Backend` must answer it, if any.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Shared, so that the ring can hold them while a write is in flight without a copy.
    pub bytes: Rc<Vec<u8>>,
    pub expect: Option<String>,
}

/// What kind of requests to build.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Host header value.
    pub host: String,
    /// Session-id prefixes to make `wtd` values for (`wt1`, `wt2`); with none, no request has `wtd`.
    pub prefixes: Vec<String>,
    /// Also send requests without `wtd` (round-robin traffic).
    pub include_plain: bool,
    /// POST this many body bytes (a Wt `jsupdate` form padded to size) instead of GETs.
    pub post_body: Option<usize>,
    /// Ask the `serve` backend for a response body of this size (`&size=N` in the URL).
    pub resp_size: Option<usize>,
    /// Add `Connection: close` (one request per connection).
    pub close: bool,
}

/// A Wt session id: prefix + 16 characters of `[0-9A-Za-z]`, deterministic in `seed`.
pub fn session_id(prefix: &str, seed: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut id = String::with_capacity(prefix.len() + 16);
    id.push_str(prefix);
    for _ in 0..16 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
    }
    id
}

/// The request lines a Wt session sends (docs/design.md "How Wt talks"), as URL templates after `/app`.
fn wt_target(kind: usize, wtd: Option<&str>, n: u64) -> String {
    match (wtd, kind % 4) {
        (None, _) => "/app".to_string(),
        (Some(id), 0) => format!("/app?wtd={id}&request=style&page=0"),
        (Some(id), 1) => format!(
            "/app?wtd={id}&sid={}&scrW=1920&scrH=1080&tz=60&request=script&rand={n}",
            n * 7919 % 100_000
        ),
        (Some(id), 2) => format!("/app/file?wtd={id}&request=resource&resource=oqv1ax&ver=1"),
        (Some(id), _) => format!("/app?wtd={id}&request=page&page=2"),
    }
}

/// `count` requests for one connection (cycled through by the generator): sessions of every
/// prefix and, if asked, session-less requests, interleaved.
pub fn prepare(spec: &RequestSpec, conn: usize, count: usize) -> Vec<Prepared> {
    let mut owners: Vec<Option<&str>> = spec.prefixes.iter().map(|p| Some(p.as_str())).collect();
    if spec.include_plain || owners.is_empty() {
        owners.push(None);
    }
    (0..count)
        .map(|i| {
            let owner = owners[i % owners.len()];
            let wtd = owner.map(|p| session_id(p, (conn * 7 + i % 5) as u64));
            let mut target = wt_target(i / owners.len(), wtd.as_deref(), i as u64);
            if let Some(n) = spec.resp_size {
                target.push(if target.contains('?') { '&' } else { '?' });
                target.push_str(&format!("size={n}"));
            }
            let method = if spec.post_body.is_some() {
                "POST"
            } else {
                "GET"
            };
            let mut head = format!(
                "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wtgate-bench\r\nAccept: */*\r\n",
                spec.host
            );
            if spec.close {
                head.push_str("Connection: close\r\n");
            }
            let mut bytes;
            if let Some(n) = spec.post_body {
                head.push_str(&format!(
                    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {n}\r\n\r\n"
                ));
                bytes = head.into_bytes();
                bytes.extend_from_slice(&form_body(n, i));
            } else {
                head.push_str("\r\n");
                bytes = head.into_bytes();
            }
            Prepared {
                bytes: Rc::new(bytes),
                expect: owner.map(str::to_string),
            }
        })
        .collect()
}

/// A Wt `jsupdate` form body of exactly `n` bytes (truncated, or padded with a `pad=` field).
fn form_body(n: usize, i: usize) -> Vec<u8> {
    let mut b = format!("request=jsupdate&ackId={i}&pageId=0&signal=user").into_bytes();
    if b.len() + 5 <= n {
        b.extend_from_slice(b"&pad=");
    }
    while b.len() < n {
        b.push(b'a' + (b.len() % 26) as u8);
    }
    b.truncate(n);
    b
}

/// A WebSocket upgrade request for a session of `prefix`.
pub fn ws_upgrade(host: &str, prefix: Option<&str>, conn: usize) -> Prepared {
    let target = match prefix {
        Some(p) => format!("/app?wtd={}&request=ws", session_id(p, conn as u64)),
        None => "/app?request=ws".to_string(),
    };
    let bytes = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: http://{host}\r\n\r\n"
    )
    .into_bytes();
    Prepared {
        bytes: Rc::new(bytes),
        expect: prefix.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let r = parse_response_head(
            b"HTTP/1.1 200 OK\r\nX-Backend: wt2\r\nContent-Length: 12\r\n\r\nhello world!",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, BodyLen::Length(12));
        assert_eq!(r.backend(), Some(&b"wt2"[..]));
        assert!(!r.close);
        assert_eq!(r.head_len, 55);

        let r =
            parse_response_head(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(r.close);
        assert_eq!(r.body, BodyLen::UntilClose);
        assert_eq!(r.backend(), None);

        let r = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.close);
        let r =
            parse_response_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(r.body, BodyLen::Length(0));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Ok(None)
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(BadHead)
        );
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, BodyLen::Chunked);
    }

    #[test]
    fn one_reader_for_a_connection() {
        let mut reader = HeadReader::default();
        let a = b"HTTP/1.1 200 OK\r\nX-Backend: wt1\r\nX-Backend: wt2\r\nContent-Length: 0\r\n\r\n";
        let b = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(
            reader.parse(a).unwrap().unwrap().backend(),
            Some(&b"wt2"[..])
        );
        let room = reader.head.headers.capacity();
        let r = reader.parse(b).unwrap().unwrap();
        assert_eq!((r.body, r.backend()), (BodyLen::Length(3), None));
        assert_eq!(reader.head.headers.capacity(), room, "no new allocation");
    }

    #[test]
    fn session_ids_look_like_wt() {
        let id = session_id("wt1", 42);
        assert_eq!(id.len(), 19);
        assert!(id.starts_with("wt1"));
        assert!(id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(id, session_id("wt1", 42));
        assert_ne!(id, session_id("wt1", 43));
    }

    #[test]
    fn prepares_a_mix() {
        let spec = RequestSpec {
            host: "h".into(),
            prefixes: vec!["wt1".into(), "wt2".into()],
            include_plain: true,
            post_body: None,
            resp_size: Some(100),
            close: false,
        };
        let reqs = prepare(&spec, 3, 6);
        let expects: Vec<Option<&str>> = reqs.iter().map(|r| r.expect.as_deref()).collect();
        assert_eq!(
            expects,
            [
                Some("wt1"),
                Some("wt2"),
                None,
                Some("wt1"),
                Some("wt2"),
                None
            ]
        );
        let first = String::from_utf8(reqs[0].bytes.to_vec()).unwrap();
        assert!(first.starts_with("GET /app?wtd=wt1"), "{first}");
        assert!(first.contains("&size=100 HTTP/1.1\r\n"), "{first}");
        let plain = String::from_utf8(reqs[2].bytes.to_vec()).unwrap();
        assert!(plain.starts_with("GET /app?size=100 HTTP/1.1"), "{plain}");

        let post = RequestSpec {
            post_body: Some(300),
            resp_size: None,
            close: true,
            ..spec
        };
        let r = &prepare(&post, 0, 1)[0];
        let text = String::from_utf8(r.bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Length: 300"));
        assert!(head.contains("Connection: close"));
        assert_eq!(body.len(), 300);
        assert!(body.starts_with("request=jsupdate&ackId=0"));
        assert_eq!(form_body(5, 0), b"reque");
    }
}
