//! `wtgate-bench serve`: a fast backend for comparisons. Keep-alive HTTP/1.1 answering every
//! request with a fixed-size body (`?size=N` / `&size=N` in the URL overrides it per request),
//! pipelining-safe (answers in order, all answers to one read sent with one write), WebSocket echo
//! on `Upgrade: websocket`, and its identity in an `X-Backend` header on every answer. Requests are
//! read with the proxy's h1 core: what it refuses gets a 400 (a chunked body a 501).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};
use wtgate::h1::{self, Framing, Limits, RequestHead};
use wtgate_demo::ws;

/// Largest body a request may ask for with `size=` (64 MiB).
pub const MAX_SIZE: usize = 64 << 20;
/// Bodies are written from one pattern buffer of this size, repeated.
const PATTERN: usize = 256 * 1024;
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub prefix: String,
    pub size: usize,
    pub threads: usize,
}

struct Shared {
    prefix: String,
    size: usize,
    /// Shared, so that the ring can hold it while a large body is being written.
    pattern: Rc<Vec<u8>>,
}

/// Binds, prints `listening on ADDR` on stdout, and serves forever (until killed).
pub fn run(cfg: ServeConfig) -> io::Result<()> {
    crate::load::raise_limits();
    // One SO_REUSEPORT listener per thread, all bound (port 0 resolved) before any thread runs.
    let first = listener(cfg.listen)?;
    let addr = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    let mut socks = vec![first];
    for _ in 1..cfg.threads.max(1) {
        socks.push(listener(addr)?);
    }
    let mut handles = Vec::new();
    for (t, sock) in socks.into_iter().enumerate() {
        let cfg = cfg.clone();
        let std_listener = std::net::TcpListener::from(sock);
        handles.push(
            std::thread::Builder::new()
                .name(format!("serve-{t}"))
                .spawn(move || -> io::Result<()> {
                    let mut rt = crate::rt::runtime()?;
                    rt.block_on(accept_loop(std_listener, cfg))
                })?,
        );
    }
    // Every thread has bound once its executor runs; a short pause makes "listening" true.
    std::thread::sleep(std::time::Duration::from_millis(50));
    println!("listening on {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    for h in handles {
        h.join()
            .map_err(|_| io::Error::other("serve thread panicked"))??;
    }
    Ok(())
}

/// Accepts connections on one thread's listener and serves each on a task of its own, forever.
async fn accept_loop(listener: std::net::TcpListener, cfg: ServeConfig) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let shared = Rc::new(Shared {
        prefix: cfg.prefix,
        size: cfg.size,
        pattern: Rc::new((0..PATTERN).map(|i| b'a' + (i % 26) as u8).collect()),
    });
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let shared = shared.clone();
                monoio::spawn(async move {
                    let _ = serve_conn(s, shared).await;
                });
            }
            // Out of descriptors, most likely: let some connections end first.
            Err(_) => monoio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A listening socket with SO_REUSEADDR (restart over TIME_WAIT) and SO_REUSEPORT (one per thread).
fn listener(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// What one parsed request asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub head_len: usize,
    pub body_len: usize,
    pub size: Option<usize>,
    pub close: bool,
    pub head_only: bool,
    /// `Sec-WebSocket-Key` of an upgrade request.
    pub ws_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    Parse,
    Chunked,
}

/// Reads request heads with the h1 core into one kept head, so that after the first request a
/// connection's parses allocate nothing.
#[derive(Default)]
pub struct RequestReader {
    head: RequestHead,
}

impl RequestReader {
    /// Parses one request head at the start of `buf`; `Ok(None)` if incomplete.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<Ask>, BadRequest> {
        let limits = Limits {
            // The read buffer bounds the head (431 when it is full of one), as it always did.
            max_head_bytes: usize::MAX,
            max_headers: 64,
        };
        match h1::parse_request_into(buf, &limits, &mut self.head) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(_) => return Err(BadRequest::Parse),
        }
        let head = &self.head;
        let body_len = match head.framing {
            Framing::None => 0,
            Framing::Length(n) => usize::try_from(n).map_err(|_| BadRequest::Parse)?,
            Framing::Chunked | Framing::CloseDelimited => return Err(BadRequest::Chunked),
        };
        let values = |name| h1::header_values(buf, &head.headers, name);
        let upgrade_ws = values("upgrade")
            .last()
            .is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
        let ws_key = values("sec-websocket-key")
            .last()
            .filter(|_| upgrade_ws)
            .map(|v| String::from_utf8_lossy(v.trim_ascii()).into_owned());
        let target = std::str::from_utf8(&buf[head.target.clone()]).unwrap_or("/");
        Ok(Some(Ask {
            head_len: head.head_len,
            body_len,
            size: size_param(target),
            close: !head.keep_alive,
            head_only: head.is_head,
            ws_key,
        }))
    }
}

/// [`RequestReader::parse`] with a fresh reader.
#[cfg(test)]
pub fn parse_request(buf: &[u8]) -> Result<Option<Ask>, BadRequest> {
    RequestReader::default().parse(buf)
}

/// The `size` query parameter of a request-target, capped at [`MAX_SIZE`].
pub fn size_param(target: &str) -> Option<usize> {
    let query = target.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("size="))
        .and_then(|v| v.parse::<usize>().ok())
        .map(|n| n.min(MAX_SIZE))
}

fn response_head(out: &mut Vec<u8>, prefix: &str, len: usize, close: bool) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nX-Backend: {prefix}\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
}

/// What a connection does once the requests read so far are answered.
enum Next {
    Read,
    Close,
    /// Switch to WebSocket echo; the request's `Sec-WebSocket-Key`.
    Upgrade(String),
}

/// One HTTP connection. The buffers are owned and lent to the ring for each read and write.
struct Conn {
    s: TcpStream,
    sh: Rc<Shared>,
    /// Bytes read; `buf[start..]` not yet handled. Reads go to the spare capacity.
    buf: Vec<u8>,
    start: usize,
    /// Answers not yet written.
    out: Vec<u8>,
    /// Body bytes of the current request still to be skipped.
    skip: usize,
    requests: RequestReader,
}

async fn serve_conn(s: TcpStream, sh: Rc<Shared>) -> io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut c = Conn {
        s,
        sh,
        buf: Vec::with_capacity(16 * 1024),
        start: 0,
        out: Vec::with_capacity(16 * 1024),
        skip: 0,
        requests: RequestReader::default(),
    };
    loop {
        let next = c.answer_all().await?;
        c.flush().await?;
        match next {
            Next::Read => {}
            Next::Close => {
                let _ = c.s.shutdown().await;
                return Ok(());
            }
            Next::Upgrade(key) => return c.upgrade(&key).await,
        }
        if !c.read_more().await? {
            return Ok(());
        }
    }
}

impl Conn {
    /// Answers every complete request already read, in order (all into `out`, but for large bodies).
    async fn answer_all(&mut self) -> io::Result<Next> {
        loop {
            if self.skip > 0 {
                let k = self.skip.min(self.buf.len() - self.start);
                self.skip -= k;
                self.start += k;
                if self.skip > 0 {
                    return Ok(Next::Read);
                }
            }
            if self.start == self.buf.len() {
                return Ok(Next::Read);
            }
            let ask = match self.requests.parse(&self.buf[self.start..]) {
                Ok(Some(a)) => a,
                Ok(None) => return Ok(Next::Read),
                Err(BadRequest::Chunked) => {
                    self.out.extend_from_slice(
                        b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return Ok(Next::Close);
                }
                Err(BadRequest::Parse) => {
                    self.out.extend_from_slice(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return Ok(Next::Close);
                }
            };
            self.start += ask.head_len;
            self.skip = ask.body_len;
            if let Some(key) = ask.ws_key {
                return Ok(Next::Upgrade(key));
            }
            self.answer(&ask).await?;
            if ask.close {
                return Ok(Next::Close);
            }
        }
    }

    /// One answer: a small body is queued in `out`; a large one goes straight from the pattern,
    /// after what is queued.
    async fn answer(&mut self, ask: &Ask) -> io::Result<()> {
        let len = ask.size.unwrap_or(self.sh.size);
        response_head(&mut self.out, &self.sh.prefix, len, ask.close);
        if ask.head_only {
            return Ok(());
        }
        if len <= 16 * 1024 {
            self.out.extend_from_slice(&self.sh.pattern[..len]);
            return Ok(());
        }
        self.flush().await?;
        let mut left = len;
        while left > 0 {
            let k = left.min(PATTERN);
            let (r, _) = self.s.write_all(self.sh.pattern.clone().slice(..k)).await;
            r?;
            left -= k;
        }
        Ok(())
    }

    /// Writes what `out` holds.
    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let (r, out) = self.s.write_all(std::mem::take(&mut self.out)).await;
        self.out = out;
        self.out.clear();
        r.map(|_| ())
    }

    /// Makes room and reads once; `false` when the connection is over (EOF, or a head too large
    /// answered with a 431).
    async fn read_more(&mut self) -> io::Result<bool> {
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
        } else if self.buf.len() == self.buf.capacity() {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            } else if self.buf.capacity() < MAX_HEAD {
                self.buf.reserve_exact(self.buf.capacity());
            } else {
                self.out.extend_from_slice(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                self.flush().await?;
                return Ok(false);
            }
        }
        let (r, buf) = read_spare(&mut self.s, std::mem::take(&mut self.buf)).await;
        self.buf = buf;
        Ok(r? > 0)
    }

    /// Accepts the upgrade and echoes from then on.
    async fn upgrade(mut self, key: &str) -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nX-Backend: {}\r\n\r\n",
            ws::accept_key(key),
            self.sh.prefix
        );
        self.out.extend_from_slice(head.as_bytes());
        self.flush().await?;
        let rest = self.buf[self.start..].to_vec();
        ws_echo(self.s, rest).await
    }
}

/// Reads once into the spare capacity of `buf`, after its bytes.
async fn read_spare(s: &mut TcpStream, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    let (len, cap) = (buf.len(), buf.capacity());
    let (r, slice) = s.read(buf.slice_mut(len..cap)).await;
    (r, slice.into_inner())
}

/// Echoes every data frame back unmasked; answers pings, and a close with a close.
async fn ws_echo(mut s: TcpStream, initial: Vec<u8>) -> io::Result<()> {
    let mut buf = initial;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let (used, closing) = ws_answers(&mut buf, &mut out);
        buf.drain(..used);
        if !out.is_empty() {
            let (r, o) = s.write_all(out).await;
            out = o;
            out.clear();
            r?;
        }
        if closing {
            let _ = s.shutdown().await;
            return Ok(());
        }
        buf.reserve(64 * 1024);
        let (r, b) = read_spare(&mut s, buf).await;
        buf = b;
        if r? == 0 {
            return Ok(());
        }
    }
}

/// Encodes into `out` the answers to the whole frames at the start of `buf` (unmasking them in
/// place); returns how many bytes they took and whether the connection is closing.
fn ws_answers(buf: &mut [u8], out: &mut Vec<u8>) -> (usize, bool) {
    const MAX_PAYLOAD: usize = 16 << 20;
    let mut used = 0;
    loop {
        match ws::decode_header(&buf[used..], MAX_PAYLOAD) {
            Ok(Some(h)) if buf.len() - used >= h.frame_len() => {
                let p = used + h.header_len..used + h.frame_len();
                if let Some(key) = h.mask {
                    ws::apply_mask(&mut buf[p.clone()], key);
                }
                used += h.frame_len();
                let op = match h.opcode {
                    ws::OP_PING => ws::OP_PONG,
                    ws::OP_PONG => continue,
                    op => op,
                };
                ws::encode_frame(out, h.fin, op, &buf[p], None);
                if op == ws::OP_CLOSE {
                    return (used, true);
                }
            }
            Ok(_) => return (used, false),
            Err(e) => {
                let code = e.close_code().to_be_bytes();
                ws::encode_frame(out, true, ws::OP_CLOSE, &code, None);
                return (used, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        let a = parse_request(b"GET /app?wtd=wt1x&size=100 HTTP/1.1\r\nHost: x\r\n\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(a.size, Some(100));
        assert_eq!(a.body_len, 0);
        assert!(!a.close);
        assert_eq!(a.head_len, 48);
        let a = parse_request(
            b"POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .unwrap()
        .unwrap();
        assert_eq!((a.body_len, a.close, a.size), (5, true, None));
        let a = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(a.close);
        let a = parse_request(
            b"GET /?request=ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: abc \r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.ws_key.as_deref(), Some("abc"));
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(BadRequest::Chunked)
        );
    }

    /// Requests are read as strictly as the proxy reads them; before, this backend had its own
    /// lenient reading and took these.
    #[test]
    fn what_the_core_refuses_is_a_bad_request() {
        for req in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let req_text = String::from_utf8_lossy(req);
            assert_eq!(parse_request(req), Err(BadRequest::Parse), "{req_text}");
        }
    }

    #[test]
    fn one_reader_for_a_connection() {
        let mut reader = RequestReader::default();
        let big = b"GET /?size=7 HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n";
        let small = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(reader.parse(big).unwrap().unwrap().size, Some(7));
        let room = reader.head.headers.capacity();
        let a = reader.parse(small).unwrap().unwrap();
        assert!(a.head_only && a.size.is_none() && a.head_len == small.len());
        assert_eq!(reader.head.headers.capacity(), room, "no new allocation");
    }

    #[test]
    fn size_parameter() {
        assert_eq!(size_param("/app?size=1048576"), Some(1 << 20));
        assert_eq!(size_param("/app?wtd=wt1&size=7#size=9"), Some(7));
        assert_eq!(size_param("/app?xsize=7"), None);
        assert_eq!(size_param("/app"), None);
        assert_eq!(size_param("/?size=999999999999"), Some(MAX_SIZE));
    }
}
