//! Shared test infrastructure: in-test backends that record everything they receive, a proxy
//! starter, and a small blocking HTTP/1.1 + WebSocket client.
//!
//! Everything is std-only (threads + blocking sockets). Every socket has read and write timeouts
//! ([`IO_TIMEOUT`]) and every loop is bounded, so a broken proxy makes a test fail, not hang.
//!
//! The backends deliberately use their own HTTP parser and WebSocket codec (not the proxy's), so
//! a quirk shared by the proxy and the test cannot hide a bug.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use wtgate::config::{BackendConfig, Config};

/// Read/write timeout of every test socket: long enough for a loaded CI box, short enough that a
/// stuck proxy fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How many bytes of each backend connection are kept verbatim (the total is always counted).
const RECORD_CAP: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness and checksums
// ---------------------------------------------------------------------------------------------

/// SplitMix64: small, seeded, good enough to pick sizes and fill buffers.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.next_u64() % (hi - lo + 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
    /// `n` characters of `[0-9A-Za-z]`, like a Wt session id.
    pub fn alnum(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..n)
            .map(|_| ALPHABET[(self.next_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

/// The body of `n` bytes that the echo backend sends for `seed` (and the client expects).
pub fn gen_body(seed: u64, n: usize) -> Vec<u8> {
    Rng::new(seed).bytes(n)
}

/// FNV-1a 64.
#[derive(Clone, Copy)]
pub struct Fnv(u64);
impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}
pub fn fnv(data: &[u8]) -> u64 {
    let mut f = Fnv::new();
    f.update(data);
    f.finish()
}

// ---------------------------------------------------------------------------------------------
// A buffered reader over a TcpStream that understands just enough HTTP/1.1
// ---------------------------------------------------------------------------------------------

/// Counts (and keeps the first [`RECORD_CAP`] bytes of) everything read on one connection.
#[derive(Debug, Default, Clone)]
pub struct ConnRecord {
    pub id: usize,
    pub total: usize,
    pub bytes: Vec<u8>,
}

/// A parsed head (request or response).
#[derive(Debug, Clone)]
pub struct Head {
    /// Request: method / target / version. Response: version / status / reason.
    pub parts: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Whether a comma-separated header (e.g. `Connection`) holds `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Parses a head (start line + fields, CRLF line ends only, without the final empty line).
pub fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    // Field values may carry obs-text (bytes 0x80..=0xFF); keep them visible, lossily.
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split("\r\n");
    let start = lines.next().ok_or_else(|| bad("empty head"))?;
    let mut it = start.splitn(3, ' ');
    let p0 = it.next().unwrap_or("").to_string();
    let p1 = it.next().unwrap_or("").to_string();
    let p2 = it.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.contains('\n') || line.contains('\r') {
            return Err(bad("bare CR/LF in head"));
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad("header without ':'"))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Ok(Head {
        parts: [p0, p1, p2],
        headers,
    })
}

pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    record: Option<Arc<Mutex<ConnRecord>>>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Wire {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            record: None,
        }
    }

    pub fn connect(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Wire::new(s)
    }

    fn recorded(stream: TcpStream, record: Arc<Mutex<ConnRecord>>) -> Wire {
        let mut w = Wire::new(stream);
        w.record = Some(record);
        w
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads once more from the socket; Ok(0) on EOF.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        let n = loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if let Some(rec) = &self.record {
            let mut r = rec.lock().unwrap();
            r.total += n;
            let room = RECORD_CAP.saturating_sub(r.bytes.len()).min(n);
            r.bytes.extend_from_slice(&tmp[..room]);
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    pub fn eof_err(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, format!("EOF {what}"))
    }

    /// Reads a head up to and including the empty line. Ok(None) on EOF before any byte.
    /// Lines must end in CRLF; a head bigger than `limit` is an error.
    pub fn read_head_raw(&mut self, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let mut scanned: usize = 0;
        loop {
            let avail = &self.buf[self.start..];
            if let Some(i) = find(&avail[scanned.saturating_sub(3)..], b"\r\n\r\n") {
                let end = scanned.saturating_sub(3) + i + 4;
                let head = avail[..end].to_vec();
                self.consume(end);
                return Ok(Some(head));
            }
            scanned = avail.len();
            if scanned > limit {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too big"));
            }
            if self.fill()? == 0 {
                if self.buffered().is_empty() {
                    return Ok(None);
                }
                return Err(Self::eof_err("inside a head"));
            }
        }
    }

    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        match self.read_head_raw(1 << 20)? {
            None => Ok(None),
            Some(raw) => parse_head(&raw[..raw.len() - 4]).map(Some),
        }
    }

    /// Reads exactly `n` bytes, feeding them to `sink` piece by piece.
    pub fn read_n_with(&mut self, mut n: usize, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.buffered().is_empty() && self.fill()? == 0 {
                return Err(Self::eof_err(&format!("with {n} body bytes missing")));
            }
            let take = self.buffered().len().min(n);
            sink(&self.buf[self.start..self.start + take]);
            self.consume(take);
            n -= take;
        }
        Ok(())
    }

    pub fn read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(n.min(16 << 20));
        self.read_n_with(n, |d| v.extend_from_slice(d))?;
        Ok(v)
    }

    /// One CRLF-terminated line, without the CRLF.
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n") {
                let line = self.buffered()[..i].to_vec();
                self.consume(i + 2);
                return Ok(line);
            }
            if self.buffered().len() > 64 * 1024 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill()? == 0 {
                return Err(Self::eof_err("inside a line"));
            }
        }
    }

    /// A chunked body (extensions ignored, trailers read and dropped), fed to `sink`.
    pub fn read_chunked_with(&mut self, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        for _ in 0..10_000_000 {
            let line = self.read_line()?;
            let line = String::from_utf8(line).map_err(|_| bad("chunk size not UTF-8".into()))?;
            let size_txt = line.split(';').next().unwrap().trim();
            if size_txt.is_empty() || !size_txt.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("bad chunk size line {line:?}")));
            }
            let size = usize::from_str_radix(size_txt, 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers until the empty line.
                for _ in 0..1000 {
                    if self.read_line()?.is_empty() {
                        return Ok(());
                    }
                }
                return Err(bad("too many trailers".into()));
            }
            self.read_n_with(size, &mut sink)?;
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(bad("chunk data not followed by CRLF".into()));
            }
        }
        Err(bad("too many chunks".into()))
    }

    /// Everything until EOF.
    pub fn read_to_eof_with(&mut self, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        loop {
            if !self.buffered().is_empty() {
                sink(self.buffered());
                let n = self.buffered().len();
                self.consume(n);
            }
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }

    /// Reads one response. `head_request`: the request was HEAD (no body). 1xx responses (incl.
    /// 101) are returned as they are, without a body.
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let head = self
            .read_head()?
            .ok_or_else(|| Self::eof_err("before any response byte"))?;
        let status: u16 = head.parts[1].parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {:?}", head.parts),
            )
        })?;
        let mut body = Vec::new();
        let no_body =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        if !no_body {
            if head.has_token("Transfer-Encoding", "chunked") {
                self.read_chunked_with(|d| body.extend_from_slice(d))?;
            } else if let Some(cl) = head.header("Content-Length") {
                let n: usize = cl.parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad Content-Length {cl}"),
                    )
                })?;
                self.read_n_with(n, |d| body.extend_from_slice(d))?;
            } else {
                self.read_to_eof_with(|d| body.extend_from_slice(d))?;
            }
        }
        Ok(Response { status, head, body })
    }

    /// Reads a response, skipping interim (1xx other than 101) answers.
    pub fn read_final_response(&mut self) -> io::Result<Response> {
        for _ in 0..10 {
            let r = self.read_response(false)?;
            if !(100..200).contains(&r.status) || r.status == 101 {
                return Ok(r);
            }
        }
        Err(io::Error::other("too many interim responses"))
    }

    /// Whether the peer has closed: EOF (or a reset) with no further byte. Returns the stray bytes
    /// otherwise. Waits at most [`IO_TIMEOUT`].
    pub fn expect_closed(&mut self) -> Result<(), String> {
        if !self.buffered().is_empty() {
            return Err(format!(
                "unexpected bytes after the response: {:?}",
                String::from_utf8_lossy(self.buffered())
            ));
        }
        match self.fill() {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!(
                "unexpected bytes after the response: {:?}",
                String::from_utf8_lossy(self.buffered())
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!("connection still open after {IO_TIMEOUT:?}"))
            }
            Err(e) => Err(format!("error instead of EOF: {e}")),
        }
    }

    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `X-Backend` header the test backends put on every answer.
    pub fn backend(&self) -> &str {
        self.header("X-Backend").unwrap_or("<none>")
    }
}

/// Opens a connection, writes `raw`, reads one response.
pub fn send_request(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut w = Wire::connect(addr);
    w.write_all(raw)?;
    w.read_response(raw.starts_with(b"HEAD "))
}

/// A simple GET with a Host header, keep-alive.
pub fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: wt.example\r\nUser-Agent: wtgate-tests\r\n\r\n")
        .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Test backends
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// 200, `X-Backend: name`, body `"{name} {method} {target}"` with Content-Length. Reads and
    /// checksums request bodies (headers `X-Req-Len`, `X-Req-Fnv`).
    Normal,
    /// Like `Normal`, but the response body is `gen_body(seed, resp)` taken from the query
    /// (`resp=N&seed=S&mode=cl|chunked`), chunked with random chunk sizes if `mode=chunked`.
    Echo,
    /// 101 + frame echo for upgrade requests; plain HTTP (as `Normal`) otherwise. Like wthttpd,
    /// an upgrade that is not the first request of its connection gets a 101 and then an
    /// immediate close, without a frame (counted by [`TestBackend::ws_upgrades_on_reused_conns`]).
    /// `reject`: answer upgrades with Wt's `403 Forbidden` (plus `Content-Length: 0`) and go on
    /// as HTTP. `close_after`: after echoing that many data frames, send a close frame and close.
    /// `greet`: send a text frame `connect` in the same write as the 101 (Wt sends its first frame
    /// right after the handshake), so the proxy must relay bytes that came with the 101 head.
    WsEcho {
        reject: bool,
        close_after: Option<usize>,
        greet: bool,
    },
    /// Answers the first request of each connection normally (keep-alive), and closes the
    /// connection without answering when a second request arrives on it: the race of a pooled
    /// connection that the backend closed just as the proxy reused it.
    DropSecondRequest,
    /// Reads each request completely, then closes without answering.
    CloseUnanswered,
    /// Answers every request with exactly these bytes (closing afterwards if they contain
    /// `Connection: close`): for malformed or unusual responses.
    Raw(&'static [u8]),
    /// Sends a head with `Content-Length: 1000` and 10 body bytes, then closes.
    CloseMidResponse,
    /// Sends a head with `Content-Length: 1000` and 10 body bytes, stalls this long, then sends
    /// the rest.
    StallMidResponse(Duration),
    /// Sleeps this long before answering each request (normally).
    Slow(Duration),
}

/// One request as a backend saw it (recorded once its body has been read completely).
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub conn: usize,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub body_fnv: u64,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<Arc<Mutex<ConnRecord>>>>,
    requests: Mutex<Vec<SeenRequest>>,
    /// WebSocket: set when a close frame was followed by the client's EOF (a half-close).
    ws_half_closes: AtomicUsize,
    /// WebSocket: upgrades answered 101-then-close because their connection had served a request.
    ws_reused_upgrades: AtomicUsize,
    stop: AtomicBool,
}

pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<thread::JoinHandle<()>>,
}

impl TestBackend {
    /// Binds 127.0.0.1:0 and is accepting when it returns.
    pub fn start(name: &str, behavior: Behavior) -> TestBackend {
        TestBackend::start_at(name, behavior, "127.0.0.1:0".parse().unwrap())
    }

    /// Like [`TestBackend::start`], on a given address (e.g. a "down" port coming back up).
    pub fn start_at(name: &str, behavior: Behavior, addr: SocketAddr) -> TestBackend {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let nm = name.to_string();
        let accept_thread = thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if sh.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let rec = {
                        let mut conns = sh.conns.lock().unwrap();
                        let r = Arc::new(Mutex::new(ConnRecord {
                            id: conns.len(),
                            ..Default::default()
                        }));
                        conns.push(r.clone());
                        r
                    };
                    let sh2 = sh.clone();
                    let nm2 = nm.clone();
                    let _ = thread::Builder::new()
                        .name(format!("backend-{nm}-conn"))
                        .spawn(move || {
                            let _ = serve_conn(&nm2, behavior, stream, rec, &sh2);
                        });
                }
            })
            .unwrap();
        TestBackend {
            name: name.to_string(),
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// `(prefix, addr)` for [`start_proxy`].
    pub fn spec(&self) -> (&str, SocketAddr) {
        (&self.name, self.addr)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    pub fn conns(&self) -> Vec<ConnRecord> {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Every byte received on every connection (connections without bytes, such as TCP health
    /// checks or pre-connects, count 0).
    pub fn bytes_received(&self) -> usize {
        self.conns().iter().map(|c| c.total).sum()
    }

    /// The first bytes received, for messages.
    pub fn received_preview(&self) -> String {
        let mut s = String::new();
        for c in self.conns() {
            if c.total > 0 {
                s.push_str(&format!(
                    "[conn {}: {} bytes] {:?}\n",
                    c.id,
                    c.total,
                    String::from_utf8_lossy(&c.bytes[..c.bytes.len().min(300)])
                ));
            }
        }
        s
    }

    pub fn ws_half_closes(&self) -> usize {
        self.shared.ws_half_closes.load(Ordering::SeqCst)
    }

    /// Upgrades that arrived on a connection which had already served a request, and so got a
    /// 101 followed by a close instead of a WebSocket.
    pub fn ws_upgrades_on_reused_conns(&self) -> usize {
        self.shared.ws_reused_upgrades.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

/// An address where nothing listens, for "backend down".
///
/// Taken below the kernel's ephemeral range (32768+ by default), so no `bind(…:0)` of a test
/// running in parallel can be handed the same port and bring the "down" backend to life.
pub fn closed_port() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize % 500) * 20;
    for _ in 0..2000 {
        let port = base + NEXT.fetch_add(1, Ordering::SeqCst) % 12_000;
        let port = 20_000 + (port - 20_000) % 12_000;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            let a = l.local_addr().unwrap();
            drop(l);
            return a;
        }
    }
    panic!("no free port found below the ephemeral range");
}

/// The value of query parameter `name` in `target` (no decoding).
pub fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let q = target.split_once('?')?.1;
    let q = q.split('#').next().unwrap();
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn serve_conn(
    name: &str,
    behavior: Behavior,
    stream: TcpStream,
    rec: Arc<Mutex<ConnRecord>>,
    shared: &Shared,
) -> io::Result<()> {
    let conn_id = rec.lock().unwrap().id;
    let mut w = Wire::recorded(stream, rec);
    for served in 0..1_000_000usize {
        let Some(head) = w.read_head()? else {
            return Ok(());
        };
        let [method, target, version] = head.parts.clone();
        // Body.
        let mut f = Fnv::new();
        let mut len = 0usize;
        let te = head.header("Transfer-Encoding");
        if te.is_some() {
            if !head.has_token("Transfer-Encoding", "chunked") {
                return Err(io::Error::other(
                    "backend got a non-chunked Transfer-Encoding",
                ));
            }
            if head.header("Content-Length").is_some() {
                return Err(io::Error::other("backend got both CL and TE"));
            }
            w.read_chunked_with(|d| {
                f.update(d);
                len += d.len();
            })?;
        } else if let Some(cl) = head.header("Content-Length") {
            let n: usize = cl
                .parse()
                .map_err(|_| io::Error::other(format!("backend got Content-Length {cl:?}")))?;
            // Honour Expect: 100-continue.
            if head
                .header("Expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
            {
                w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            w.read_n_with(n, |d| {
                f.update(d);
                len += d.len();
            })?;
        }
        shared.requests.lock().unwrap().push(SeenRequest {
            conn: conn_id,
            method: method.clone(),
            target: target.clone(),
            version: version.clone(),
            headers: head.headers.clone(),
            body_len: len,
            body_fnv: f.finish(),
        });
        let close = head.has_token("Connection", "close")
            || (version == "HTTP/1.0" && !head.has_token("Connection", "keep-alive"));
        let common = format!(
            "X-Backend: {name}\r\nX-Req-Len: {len}\r\nX-Req-Fnv: {:016x}\r\n{}",
            f.finish(),
            if close { "Connection: close\r\n" } else { "" }
        );
        match behavior {
            Behavior::CloseMidResponse => {
                w.write_all(
                    format!("HTTP/1.1 200 OK\r\n{common}Content-Length: 1000\r\n\r\n0123456789")
                        .as_bytes(),
                )?;
                w.stream.flush()?;
                let _ = w.stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            Behavior::StallMidResponse(d) => {
                w.write_all(
                    format!("HTTP/1.1 200 OK\r\n{common}Content-Length: 1000\r\n\r\n0123456789")
                        .as_bytes(),
                )?;
                thread::sleep(d);
                w.write_all(&[b'x'; 990])?;
            }
            Behavior::Slow(d) => {
                thread::sleep(d);
                normal_answer(&mut w, &common, &method, &target, name)?;
            }
            Behavior::Echo => {
                let resp: usize = query_param(&target, "resp")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let seed: u64 = query_param(&target, "seed")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                // A 1.1 server must not send chunked to a 1.0 request: close-delimit instead.
                let http10 = version == "HTTP/1.0";
                let chunked = query_param(&target, "mode") == Some("chunked") && !http10;
                let status = query_param(&target, "status").unwrap_or("200");
                let body = gen_body(seed, resp);
                let head_only = method == "HEAD";
                if status == "204" || status == "304" {
                    // No body, whatever the framing headers would say.
                    let reason = if status == "204" {
                        "No Content"
                    } else {
                        "Not Modified"
                    };
                    w.write_all(format!("HTTP/1.1 {status} {reason}\r\n{common}\r\n").as_bytes())?;
                } else if query_param(&target, "mode") == Some("eof")
                    || (http10 && query_param(&target, "mode") == Some("chunked"))
                {
                    // Close-delimited: no Content-Length, no chunking; EOF ends the body.
                    w.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\n{common}X-Resp-Fnv: {:016x}\r\nConnection: close\r\n\r\n",
                            fnv(&body)
                        )
                        .as_bytes(),
                    )?;
                    if !head_only {
                        w.write_all(&body)?;
                    }
                    let _ = w.stream.shutdown(Shutdown::Both);
                    return Ok(());
                } else if chunked {
                    w.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\n{common}X-Resp-Fnv: {:016x}\r\nTransfer-Encoding: chunked\r\n\r\n",
                            fnv(&body)
                        )
                        .as_bytes(),
                    )?;
                    if !head_only {
                        let mut rng = Rng::new(seed ^ 0xC0FFEE);
                        let mut rest = &body[..];
                        while !rest.is_empty() {
                            let n = (rng.range(1, 200_000) as usize).min(rest.len());
                            w.write_all(format!("{n:x}\r\n").as_bytes())?;
                            w.write_all(&rest[..n])?;
                            w.write_all(b"\r\n")?;
                            rest = &rest[n..];
                        }
                        w.write_all(b"0\r\n\r\n")?;
                    }
                } else {
                    w.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\n{common}X-Resp-Fnv: {:016x}\r\nContent-Length: {}\r\n\r\n",
                            fnv(&body),
                            body.len()
                        )
                        .as_bytes(),
                    )?;
                    if !head_only {
                        w.write_all(&body)?;
                    }
                }
            }
            Behavior::Raw(bytes) => {
                w.write_all(bytes)?;
                if String::from_utf8_lossy(bytes)
                    .to_ascii_lowercase()
                    .contains("connection: close")
                {
                    let _ = w.stream.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
            Behavior::CloseUnanswered => {
                let _ = w.stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            Behavior::DropSecondRequest => {
                if served == 0 {
                    normal_answer(&mut w, &common, &method, &target, name)?;
                } else {
                    let _ = w.stream.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
            Behavior::WsEcho {
                reject,
                close_after,
                greet,
            } => {
                let upgrade = head.has_token("Connection", "upgrade")
                    && head
                        .header("Upgrade")
                        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
                if !upgrade {
                    normal_answer(&mut w, &common, &method, &target, name)?;
                } else {
                    let key = head.header("Sec-WebSocket-Key").unwrap_or("").to_string();
                    let accept = wtgate_demo::ws::accept_key(&key);
                    if reject {
                        // What Wt 4.14.0 sends for a WebSocket of an unknown session (see
                        // docs/wt-traffic.txt §E), plus a Content-Length so the connection can go on.
                        w.write_all(
                            format!(
                                "HTTP/1.1 403 Forbidden\r\n{common}Content-Type: \r\nConnection: Upgrade\r\n\
                                 Upgrade: WebSocket\r\nSec-WebSocket-Accept: {accept}\r\nContent-Length: 0\r\n\r\n"
                            )
                            .as_bytes(),
                        )?;
                    } else {
                        let mut out = format!(
                            "HTTP/1.1 101 Switching Protocol\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\
                             Sec-WebSocket-Accept: {accept}\r\nX-Backend: {name}\r\n\r\n"
                        )
                        .into_bytes();
                        if served > 0 {
                            // What wthttpd (Wt 4.14.0) does, per a packet capture (docs/design.md "Behaviour"
                            // "Upgrades"): a proxy that upgrades over a reused pooled connection
                            // must see its WebSocket die here, as it would in production.
                            w.write_all(&out)?;
                            shared.ws_reused_upgrades.fetch_add(1, Ordering::SeqCst);
                            let _ = w.stream.shutdown(Shutdown::Both);
                            return Ok(());
                        }
                        if greet {
                            out.extend_from_slice(&server_frame(true, 0x1, b"connect"));
                        }
                        w.write_all(&out)?;
                        return ws_echo(&mut w, close_after, shared);
                    }
                }
            }
            Behavior::Normal => normal_answer(&mut w, &common, &method, &target, name)?,
        }
        if close {
            let _ = w.stream.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
    Ok(())
}

fn normal_answer(
    w: &mut Wire,
    common: &str,
    method: &str,
    target: &str,
    name: &str,
) -> io::Result<()> {
    let body = format!("{name} {method} {target}");
    let mut out = format!(
        "HTTP/1.1 200 OK\r\n{common}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    w.write_all(&out)
}

// ---------------------------------------------------------------------------------------------
// A tiny WebSocket codec of the tests' own (the backend side), independent of `wtgate_demo::ws`
// ---------------------------------------------------------------------------------------------

pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Reads one frame; Ok(None) on EOF at a frame boundary.
pub fn read_frame(w: &mut Wire) -> io::Result<Option<RawFrame>> {
    while w.buffered().len() < 2 {
        if w.fill()? == 0 {
            if w.buffered().is_empty() {
                return Ok(None);
            }
            return Err(Wire::eof_err("inside a frame header"));
        }
    }
    let h = w.read_n(2)?;
    let fin = h[0] & 0x80 != 0;
    if h[0] & 0x70 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "RSV bits set"));
    }
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => u16::from_be_bytes(w.read_n(2)?.try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(w.read_n(8)?.try_into().unwrap()) as usize,
        n => n as usize,
    };
    if len > 16 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too big"));
    }
    let key = if masked { Some(w.read_n(4)?) } else { None };
    let mut payload = w.read_n(len)?;
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i & 3];
        }
    }
    Ok(Some(RawFrame {
        fin,
        opcode,
        masked,
        payload,
    }))
}

/// An unmasked (server) frame.
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    if payload.len() < 126 {
        out.push(payload.len() as u8);
    } else if payload.len() <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// The text frame a backend sends after it saw a client's close frame followed by EOF.
pub const WS_AFTER_HALF_CLOSE: &[u8] = b"backend saw your half-close";

fn ws_echo(w: &mut Wire, close_after: Option<usize>, shared: &Shared) -> io::Result<()> {
    let mut echoed = 0usize;
    for _ in 0..10_000_000 {
        let Some(f) = read_frame(w)? else {
            return Ok(()); // EOF without a close frame: just close.
        };
        if !f.masked {
            return Err(io::Error::other("client frame not masked"));
        }
        match f.opcode {
            0x8 => {
                // Close: wait for the client's half-close (EOF) to come through the proxy, then
                // send one more text frame (proves the backend→client direction still flows),
                // echo the close and close. If EOF never comes (read timeout), close without them.
                let mut rest = Vec::new();
                let eof = w.read_to_eof_with(|d| rest.extend_from_slice(d)).is_ok();
                if eof && rest.is_empty() {
                    shared.ws_half_closes.fetch_add(1, Ordering::SeqCst);
                    w.write_all(&server_frame(true, 0x1, WS_AFTER_HALF_CLOSE))?;
                    w.write_all(&server_frame(true, 0x8, &f.payload))?;
                }
                let _ = w.stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            0x9 => w.write_all(&server_frame(true, 0xA, &f.payload))?,
            0xA => {}
            _ => {
                w.write_all(&server_frame(f.fin, f.opcode, &f.payload))?;
                echoed += 1;
                if close_after == Some(echoed) {
                    w.write_all(&server_frame(true, 0x8, &1000u16.to_be_bytes()))?;
                    let _ = w.stream.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------------------------

pub struct Proxy {
    pub addr: SocketAddr,
    engine: Option<wtgate::engine::Engine>,
}

impl Proxy {
    /// The running engine, for its stats and admin controls.
    pub fn engine(&self) -> &wtgate::engine::Engine {
        self.engine.as_ref().expect("engine running")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(e) = self.engine.take() {
            let (tx, rx) = mpsc::channel();
            // Dropped on another thread so that a shard that never stops (e.g. spinning) fails
            // the test instead of hanging the whole suite; such a thread is then left behind.
            let _t = thread::spawn(move || {
                drop(e);
                let _ = tx.send(());
            });
            if rx.recv_timeout(Duration::from_secs(15)).is_err() && !thread::panicking() {
                panic!("dropping the Engine did not return within 15 s (shards not stopping?)");
            }
        }
    }
}

/// Config for these backends: listen on 127.0.0.1:0, one shard; `tweak` may change anything.
pub fn proxy_config(backends: &[(&str, SocketAddr)], tweak: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        backends: backends
            .iter()
            .map(|(p, a)| BackendConfig::parse(&format!("{p}={a}")).unwrap())
            .collect(),
        threads: 1,
        ..Config::default()
    };
    tweak(&mut cfg);
    cfg
}

/// Starts the proxy; it is accepting when this returns.
pub fn start_proxy(backends: &[(&str, SocketAddr)], tweak: impl FnOnce(&mut Config)) -> Proxy {
    let cfg = proxy_config(backends, tweak);
    let engine = wtgate::engine::Engine::start(cfg).expect("Engine::start");
    let addr = engine.local_addrs()[0];
    Proxy {
        addr,
        engine: Some(engine),
    }
}

/// A Wt-like session id: prefix + 16 of `[0-9A-Za-z]`.
pub fn session_id(rng: &mut Rng, prefix: &str) -> String {
    format!("{prefix}{}", rng.alnum(16))
}

// ---------------------------------------------------------------------------------------------
// WebSocket client side, with the crate's own sans-IO codec (`wtgate_demo::ws`)
// ---------------------------------------------------------------------------------------------

/// RFC 6455 §1.3's example key and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A Chromium-like upgrade request (from docs/wt-traffic.txt), including `Accept-Encoding`.
pub fn ws_upgrade_request(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\n\
         Host: 127.0.0.1:9090\r\n\
         Connection: Upgrade\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0\r\n\
         Upgrade: websocket\r\n\
         Origin: http://127.0.0.1:9090\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         Cookie: WtTestCookie=ok\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    .into_bytes()
}

/// A masked (client) frame.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    wtgate_demo::ws::encode_frame(&mut out, true, opcode, payload, Some(mask));
    out
}

/// Reads one frame with `wtgate_demo::ws::decode_frame`: `(fin, opcode, payload)`; Ok(None) on EOF at
/// a frame boundary.
pub fn ws_recv(w: &mut Wire) -> io::Result<Option<(bool, u8, Vec<u8>)>> {
    for _ in 0..1_000_000 {
        if !w.buffered().is_empty() {
            let decoded = match wtgate_demo::ws::decode_frame(w.buffered(), 16 << 20) {
                Ok(Some((f, used))) => Some(((f.fin, f.opcode, f.payload[..].to_vec()), used)),
                Ok(None) => None,
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("decode_frame: {e:?}"),
                    ));
                }
            };
            if let Some((frame, used)) = decoded {
                w.consume(used);
                return Ok(Some(frame));
            }
        }
        if w.fill()? == 0 {
            if w.buffered().is_empty() {
                return Ok(None);
            }
            return Err(Wire::eof_err("inside a WebSocket frame"));
        }
    }
    Err(io::Error::other("ws_recv: no progress"))
}

/// Connects, upgrades `target` through the proxy and checks the 101. Returns the open wire and
/// the 101 response.
pub fn ws_connect(proxy: SocketAddr, target: &str) -> (Wire, Response) {
    let mut w = Wire::connect(proxy);
    w.write_all(&ws_upgrade_request(target)).unwrap();
    let r = w.read_response(false).expect("reading the upgrade answer");
    assert_eq!(
        r.status,
        101,
        "upgrade answer: {:?} {}",
        r.head,
        r.body_str()
    );
    assert_eq!(
        r.header("Sec-WebSocket-Accept"),
        Some(WS_ACCEPT),
        "{:?}",
        r.head
    );
    (w, r)
}

/// Resident memory of this test process (the engine runs in it), in bytes.
pub fn vm_rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Two normal backends, `wt1` and `wt2`, behind a proxy.
pub struct Pair {
    pub b1: TestBackend,
    pub b2: TestBackend,
    pub proxy: Proxy,
}

pub fn start_pair(tweak: impl FnOnce(&mut Config)) -> Pair {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let b2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], tweak);
    Pair { b1, b2, proxy }
}

/// A backend answering `bytes` to `request` makes the proxy answer 502 with `Connection: close`,
/// then close.
pub fn expect_502_from(bytes: &'static [u8], request: &[u8]) {
    let b = TestBackend::start("wt1", Behavior::Raw(bytes));
    let proxy = start_proxy(&[b.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.write_all(request).unwrap();
    let r = w
        .read_response(false)
        .unwrap_or_else(|e| panic!("no 502 for {:?}: {e}", String::from_utf8_lossy(bytes)));
    assert_eq!(r.status, 502, "{:?} {}", r.head, r.body_str());
    assert!(r.head.has_token("Connection", "close"), "{:?}", r.head);
    w.expect_closed().unwrap();
}
