//! Wt-like demo backends for `wtgate demo` and for tests: small blocking HTTP/1.1 servers that route
//! like a Wt server (wthttpd) with `--session-id-prefix`, so session affinity can be seen in a browser
//! or with `curl -i` (every response carries `X-Backend: <prefix>`).
//!
//! What a [`DemoBackend`] answers (see docs/design.md "How Wt talks" for the Wt behaviour it imitates):
//! - `GET`/`HEAD` with no `wtd`, or a `wtd` this server does not know (another server's prefix, an
//!   unknown or malformed id) → a new session `prefix + 16 [0-9A-Za-z]`; 200 `text/html`, chunked:
//!   "served by backend wt1 (ADDR), new session wt1…", a link `?wtd=<id>`, and a script that opens a
//!   WebSocket to `?wtd=<id>&request=ws`, sends a message and shows the echo.
//! - `GET /?wtd=<known id>` → 200 chunked page "served by backend wt1, session <id> (request #n of this
//!   session)"; with `request=style|script|<other>` → 200 small `text/css`/`text/javascript`/`text/plain`
//!   bodies with `Content-Length`, naming backend, session and request number.
//! - `POST /?wtd=<known id>` (form body `request=jsupdate&…`) → 200 `text/javascript` with
//!   `Content-Length`, naming backend, session, the `request` value (body first, then URL), and the body's
//!   length and FNV-1a hash (handy to check a proxy's body streaming). For an unknown session: 200
//!   `text/javascript` reload script, like Wt. Other methods → 405.
//! - `GET /?wtd=<known id>&request=ws` with `Upgrade: websocket` → 101 and an echo server: data frames
//!   echoed frame by frame (same opcode and FIN, unmasked), pings answered with pongs, a close answered
//!   with a close (same status code) and the connection ended. Unmasked client frames, bad fragment order
//!   or bad frames → close 1002 (1009 for frames over 1 MiB). Unknown session → 403 (like Wt).
//!   Like wthttpd, an upgrade that is not the first request of its connection gets the 101 and then
//!   an immediate close, without a frame.
//!   `request=ws` without `Upgrade: websocket` → 400; missing key → 400; version ≠ 13 → 426.
//! - `/favicon.ico` → 404 without a session (browsers ask for it on every page load).
//!
//! HTTP: keep-alive on HTTP/1.1 (requests answered in order, pipelining works), `Connection: close` and
//! HTTP/1.0 get `Connection: close` responses with `Content-Length` (HTTP/1.0 is never kept alive).
//! Idle timeout 10 s like wthttpd. Requests are read with the proxy's own HTTP/1.1 core (wtgate-h1),
//! as strictly as the proxy reads them: whatever it refuses (bare CR/LF, obs-fold, both
//! `Content-Length` and `Transfer-Encoding`, differing or malformed lengths, a transfer coding list
//! other than one final `chunked`, `Transfer-Encoding` on HTTP/1.0, bad chunk sizes or trailers, no or
//! two `Host` on HTTP/1.1, …) gets its status and a close: 400 (the cause as the body), 431 for heads
//! over 16 KiB or 64 headers, 505 for HTTP versions other than 1.x, 405 for CONNECT. Request bodies
//! (`Content-Length` or `chunked`, decoded) are read and discarded; `Expect: 100-continue` gets a
//! `100 Continue`. Memory per connection is bounded (head 16 KiB + one 16 KiB read; a WebSocket frame
//! ≤ 1 MiB); at most 1024 connections per backend (more get 503).
//!
//! Threads: one accept thread and one thread per connection. Dropping a [`DemoBackend`] does not stop
//! them: the backend serves until the process exits (it is meant for `wtgate demo` and tests).
//! Session ids are compared raw (not percent-decoded), so prefixes should be URL-safe (Wt's are).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wtgate_h1::{
    self as h1, BodyError, BodyFramer, Framing, Limits, RequestError, RequestHead, Version,
};

use crate::ws;

/// Characters after the prefix in a session id (Wt's default `session-id-length`).
pub const SESSION_ID_LEN: usize = 16;

const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const WS_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const LINGER: Duration = Duration::from_millis(500);
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const READ_CHUNK: usize = 16 * 1024;
const MAX_CONNS: usize = 1024;
const MAX_SESSIONS: usize = 100_000;
const WS_MAX_PAYLOAD: usize = 1 << 20;
const FORM_PREFIX: usize = 4096;
const THREAD_STACK: usize = 256 * 1024;
const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Handle to a running demo backend. Dropping it does not stop the server threads.
pub struct DemoBackend {
    shared: Arc<Shared>,
}

struct Shared {
    prefix: String,
    addr: SocketAddr,
    requests: AtomicU64,
    conns: AtomicUsize,
    seq: AtomicU64,
    salt: u64,
    /// Known session ids → requests seen in that session (the creating request is #1).
    sessions: Mutex<HashMap<String, u64>>,
}

impl DemoBackend {
    /// Binds `addr` (port 0 allowed) and serves in background threads.
    pub fn spawn(prefix: &str, addr: SocketAddr) -> io::Result<DemoBackend> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            prefix: prefix.to_string(),
            addr,
            requests: AtomicU64::new(0),
            conns: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            salt: u64::from(addr.port()) << 32 ^ u64::from(std::process::id()),
            sessions: Mutex::new(HashMap::new()),
        });
        let for_thread = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("demo-{prefix}"))
            .spawn(move || accept_loop(listener, for_thread))?;
        Ok(DemoBackend { shared })
    }

    /// The bound address (with the real port when spawned on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The session-id prefix, e.g. `wt1`.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// Requests served so far: every request head that parsed and passed validation, whatever the
    /// answer (pages, 101, 403, 405, …). Requests the HTTP core refuses (400/405/431/505) are not
    /// counted.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Number of sessions currently known.
    pub fn sessions(&self) -> usize {
        self.shared.lock_sessions().len()
    }
}

impl std::fmt::Debug for DemoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoBackend")
            .field("prefix", &self.prefix())
            .field("addr", &self.addr())
            .field("requests", &self.requests())
            .finish()
    }
}

impl Shared {
    fn lock_sessions(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request in a known session; returns its number in the session, `None` if unknown.
    fn touch(&self, wtd: &str) -> Option<u64> {
        let mut sessions = self.lock_sessions();
        let n = sessions.get_mut(wtd)?;
        *n += 1;
        Some(*n)
    }

    fn new_session(&self) -> String {
        let mut sessions = self.lock_sessions();
        loop {
            let id = self.random_id();
            if !sessions.contains_key(&id) {
                if sessions.len() >= MAX_SESSIONS {
                    // Bounded memory: forget an arbitrary old session.
                    if let Some(old) = sessions.keys().next().cloned() {
                        sessions.remove(&old);
                    }
                }
                sessions.insert(id.clone(), 1);
                return id;
            }
        }
    }

    /// `prefix` + 16 chars of `[0-9A-Za-z]` from xorshift64, seeded from time, a counter and a salt.
    fn random_id(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut x = splitmix64(nanos ^ self.salt ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        let mut id = String::with_capacity(self.prefix.len() + SESSION_ID_LEN);
        id.push_str(&self.prefix);
        while id.len() < self.prefix.len() + SESSION_ID_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (x >> 58) as usize; // 0..64; reject 62, 63 to stay uniform
            if c < ALNUM.len() {
                id.push(ALNUM[c] as char);
            }
        }
        id
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Decrements the connection count when a connection thread ends (or fails to start).
struct ConnSlot(Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if shared.conns.fetch_add(1, Ordering::Relaxed) >= MAX_CONNS {
            shared.conns.fetch_sub(1, Ordering::Relaxed);
            let resp = error_response(503, "too many connections", &shared.prefix, &[]);
            let _ = (&stream).write_all(&resp);
            continue;
        }
        let slot = ConnSlot(Arc::clone(&shared));
        // If the spawn fails the closure (and the slot) is dropped, and the connection with it.
        let _ = thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let shared = Arc::clone(&slot.0);
                serve(stream, &shared);
                drop(slot);
            });
    }
}

/// Why a request cannot be answered normally.
enum Fail {
    /// Peer gone, timed out, or an I/O error: close without answering.
    Closed,
    /// Answer with this status and a short text, then close.
    Status(u16, &'static str),
    /// A head the HTTP core refuses: its status and its cause, then close.
    Request(RequestError),
    /// A request body that breaks its framing: 400 and its cause, then close.
    Body(BodyError),
}

impl From<io::Error> for Fail {
    fn from(_: io::Error) -> Fail {
        Fail::Closed
    }
}

/// What to do with the connection after a response.
enum Next {
    KeepAlive,
    Close,
    WebSocket,
}

/// A connection with its unconsumed input.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads once more into `buf`; `Ok(0)` at end of stream.
    fn fill(&mut self) -> Result<usize, Fail> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Fail::Closed),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// Reads a request body to its end, handing the payload (chunked decoded) to `sink`.
    fn read_body(&mut self, framing: Framing, sink: &mut BodySink) -> Result<(), Fail> {
        let mut framer = BodyFramer::new(framing);
        loop {
            let step = framer
                .advance_with(&self.buf, &mut |data| sink.feed(data))
                .map_err(Fail::Body)?;
            self.consume(step.consumed);
            if step.done {
                return Ok(());
            }
            if self.fill()? == 0 {
                return Err(Fail::Closed);
            }
        }
    }
}

/// Consumes a request body: counts it, hashes it (FNV-1a 64) and keeps its start for form parsing.
struct BodySink {
    len: u64,
    hash: u64,
    start: Vec<u8>,
}

impl BodySink {
    fn new() -> BodySink {
        BodySink {
            len: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            start: Vec::new(),
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        for &b in data {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let keep = FORM_PREFIX.saturating_sub(self.start.len()).min(data.len());
        self.start.extend_from_slice(&data[..keep]);
    }
}

/// The parts of a request head the demo needs, owned: the head's bytes are consumed before the
/// body is read.
struct Head {
    method: String,
    target: String,
    http11: bool,
    framing: Framing,
    close: bool,
    upgrade_ws: bool,
    ws_key: Option<String>,
    ws_version: Option<String>,
    expect_continue: bool,
}

impl Head {
    /// `head` as parsed from `buf` by the HTTP core.
    fn of(buf: &[u8], head: &RequestHead) -> Head {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let values = |name| h1::header_values(buf, &head.headers, name);
        // A repeated field counts by its last value.
        let last = |name| values(name).last().map(|v| text(v.trim_ascii()));
        Head {
            method: text(&buf[head.method.clone()]),
            target: text(&buf[head.target.clone()]),
            http11: head.version == Version::Http11,
            framing: head.framing,
            // HTTP/1.0 is never kept alive, even when it asks to be.
            close: head.version == Version::Http10 || !head.keep_alive,
            upgrade_ws: values("upgrade")
                .any(|v| h1::comma_list(v).any(|t| t.eq_ignore_ascii_case(b"websocket"))),
            ws_key: last("sec-websocket-key"),
            ws_version: last("sec-websocket-version"),
            expect_continue: head.expect_continue,
        }
    }
}

/// The first value of query parameter `name` in `query` (`a=1&b=2` form; not percent-decoded).
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(4096),
    };
    let mut reused = false;
    loop {
        match serve_one(&mut conn, shared, reused) {
            Ok(Next::KeepAlive) => reused = true,
            Ok(Next::Close) => return lingering_close(&conn.stream),
            Ok(Next::WebSocket) => return ws_echo(conn),
            Err(fail) => {
                let (status, msg) = match fail {
                    Fail::Closed => return,
                    Fail::Status(status, msg) => (status, msg.to_string()),
                    Fail::Request(e) => (e.status(), e.to_string()),
                    Fail::Body(e) => (400, e.to_string()),
                };
                let extra: &[(&str, &str)] = match status {
                    426 => &[("Sec-WebSocket-Version", "13")],
                    405 => &[("Allow", "GET, HEAD, POST")],
                    _ => &[],
                };
                let _ = conn
                    .stream
                    .write_all(&error_response(status, &msg, &shared.prefix, extra));
                return lingering_close(&conn.stream);
            }
        }
    }
}

/// Reads, answers and returns what to do next for one request. `reused`: the connection has
/// already served a request.
fn serve_one(conn: &mut Conn, shared: &Shared, reused: bool) -> Result<Next, Fail> {
    let limits = Limits {
        max_head_bytes: MAX_HEAD,
        max_headers: MAX_HEADERS,
    };
    let head = loop {
        // A head over the limit is an error here (431), so the buffer stays bounded.
        if let Some(parsed) = h1::parse_request(&conn.buf, &limits).map_err(Fail::Request)? {
            let head = Head::of(&conn.buf, &parsed);
            conn.consume(parsed.head_len);
            break head;
        }
        if conn.fill()? == 0 {
            return Err(Fail::Closed);
        }
    };
    shared.requests.fetch_add(1, Ordering::Relaxed);

    let (path, query) = match head.target.split_once('?') {
        Some((p, q)) => (p, q.split('#').next().unwrap_or("")),
        None => (head.target.as_str(), ""),
    };
    let wtd = param(query, "wtd").unwrap_or("");
    let has_body = match head.framing {
        Framing::Length(n) => n > 0,
        Framing::Chunked => true,
        Framing::None | Framing::CloseDelimited => false,
    };

    if param(query, "request") == Some("ws") {
        if !head.upgrade_ws || head.method != "GET" || has_body {
            return Err(Fail::Status(
                400,
                "request=ws needs a GET with Upgrade: websocket",
            ));
        }
        if shared.touch(wtd).is_none() {
            return Err(Fail::Status(403, ""));
        }
        let Some(key) = head.ws_key.as_deref().filter(|k| !k.is_empty()) else {
            return Err(Fail::Status(400, "missing Sec-WebSocket-Key"));
        };
        if head.ws_version.as_deref() != Some("13") {
            return Err(Fail::Status(426, "Sec-WebSocket-Version must be 13"));
        }
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nX-Backend: {}\r\n\r\n",
            ws::accept_key(key),
            shared.prefix
        );
        conn.stream.write_all(resp.as_bytes())?;
        // wthttpd (Wt 4.14.0) does this, per a packet capture (docs/design.md "Upgrades"): a proxy
        // that upgrades over a reused pooled connection must fail here as it would in production.
        return Ok(if reused { Next::Close } else { Next::WebSocket });
    }

    let head_only = match head.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        "POST" => false,
        _ => return Err(Fail::Status(405, "method not allowed")),
    };

    let mut body = BodySink::new();
    if has_body {
        // The core only sets it on HTTP/1.1, where a client may wait for it.
        if head.expect_continue {
            conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        conn.read_body(head.framing, &mut body)?;
    }

    let prefix = shared.prefix.as_str();
    let session = shared.touch(wtd).map(|n| (wtd, n));
    let mut out = Vec::with_capacity(2048);
    let resp = if path.ends_with("/favicon.ico") {
        Response::text(404, "text/plain", format!("not found (backend {prefix})\n"))
    } else if head.method == "POST" {
        let form = std::str::from_utf8(&body.start).unwrap_or("");
        let request = param(form, "request")
            .or_else(|| param(query, "request"))
            .unwrap_or("");
        match session {
            Some((id, n)) => Response::text(
                200,
                "text/javascript; charset=UTF-8",
                format!(
                    "// backend {prefix}, session {id} (request #{n} of this session): \
                     request={request}, body {} bytes, fnv1a {:016x}\n",
                    body.len, body.hash
                ),
            ),
            None => Response::text(
                200,
                "text/javascript; charset=UTF-8",
                format!(
                    "// backend {prefix}: unknown session, reloading without wtd\n\
                     window.location.replace(window.location.pathname);\n"
                ),
            ),
        }
    } else {
        match (session, param(query, "request")) {
            (Some((id, n)), Some(request)) => {
                let line = format!("backend {prefix}, session {id} (request #{n} of this session)");
                match request {
                    "style" => Response::text(200, "text/css", format!("/* {line} */\n")),
                    "script" => Response::text(
                        200,
                        "text/javascript; charset=UTF-8",
                        format!("// {line}\n"),
                    ),
                    _ => Response::text(200, "text/plain", format!("{line}, request={request}\n")),
                }
            }
            (Some((id, n)), None) => Response::page(page(
                prefix,
                id,
                &format!("served by backend {prefix}, session {id} (request #{n} of this session)"),
            )),
            (None, _) => {
                let id = shared.new_session();
                let title = format!(
                    "served by backend {prefix} ({}), new session {id}",
                    shared.addr
                );
                Response::page(page(prefix, &id, &title))
            }
        }
    };
    // HTTP/1.0 clients can't read chunked bodies; they get Content-Length and a close.
    resp.write(&mut out, prefix, head.close, head_only, head.http11);
    conn.stream.write_all(&out)?;
    Ok(if head.close {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    chunked: bool,
}

impl Response {
    fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body,
            chunked: false,
        }
    }

    fn page(body: String) -> Response {
        Response {
            status: 200,
            content_type: "text/html; charset=UTF-8",
            body,
            chunked: true,
        }
    }

    fn write(&self, out: &mut Vec<u8>, prefix: &str, close: bool, head_only: bool, http11: bool) {
        let chunked = self.chunked && http11;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nCache-Control: no-cache, no-store, must-revalidate\r\n\
             X-Backend: {prefix}\r\n",
            self.status,
            reason(self.status),
            self.content_type
        );
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        } else {
            let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        }
        if head_only {
            return;
        }
        let body = self.body.as_bytes();
        if chunked {
            // Two chunks (split at a char boundary) and the last-chunk, as a dynamic Wt page would.
            let mut mid = body.len() / 2;
            while !self.body.is_char_boundary(mid) {
                mid -= 1;
            }
            for part in [&body[..mid], &body[mid..]] {
                if !part.is_empty() {
                    let _ = write!(out, "{:x}\r\n", part.len());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(body);
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn error_response(status: u16, msg: &str, prefix: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = if msg.is_empty() {
        String::new()
    } else {
        format!("{msg}\n")
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         X-Backend: {prefix}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The session page: a heading, links, and a WebSocket echo check (the id travels in `data-wtd`).
fn page(prefix: &str, id: &str, heading: &str) -> String {
    let (prefix, id, heading) = (html_escape(prefix), html_escape(id), html_escape(heading));
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>wtgate demo: {prefix}</title></head>
<body data-wtd="{id}">
<h1>{heading}</h1>
<p><a href="?wtd={id}">continue this session</a> &middot; <a href="?">new session</a></p>
<p>WebSocket: <span id="ws">connecting&hellip;</span></p>
<script>
(function () {{
  var out = document.getElementById('ws');
  try {{
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + location.pathname +
      '?wtd=' + encodeURIComponent(document.body.dataset.wtd) + '&request=ws';
    var ws = new WebSocket(url);
    ws.onopen = function () {{ ws.send('hello at ' + new Date().toISOString()); }};
    ws.onmessage = function (e) {{ out.textContent = 'echo: ' + e.data; ws.close(1000); }};
    ws.onerror = function () {{ out.textContent = 'failed'; }};
  }} catch (e) {{ out.textContent = 'error: ' + e; }}
}})();
</script>
</body></html>
"#
    )
}

/// Closes after a final response without losing it to a reset: stop writing, then drain what the
/// client still sends (bounded in time and bytes) before the socket is dropped.
fn lingering_close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < 256 * 1024 {
        match (&*stream).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// Echoes WebSocket frames until the client closes, errs, or stays idle for 2 minutes.
fn ws_echo(mut conn: Conn) {
    let _ = conn.stream.set_read_timeout(Some(WS_IDLE_TIMEOUT));
    let mut out = Vec::new();
    let mut in_message = false; // inside a fragmented data message
    loop {
        let mut used = 0;
        let mut close_code = None;
        let mut peer_closed = false;
        while close_code.is_none() && !peer_closed {
            let rest = &conn.buf[used..];
            let h = match ws::decode_header(rest, WS_MAX_PAYLOAD) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    close_code = Some(e.close_code());
                    break;
                }
            };
            let Some(mask) = h.mask else {
                close_code = Some(1002); // clients must mask
                break;
            };
            if rest.len() < h.frame_len() {
                break;
            }
            let mut payload = rest[h.header_len..h.frame_len()].to_vec();
            ws::apply_mask(&mut payload, mask);
            used += h.frame_len();
            match h.opcode {
                ws::OP_PING => ws::encode_frame(&mut out, true, ws::OP_PONG, &payload, None),
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    let reply: &[u8] = match payload.len() {
                        0 => &[],
                        1 => &[0x03, 0xEA], // 1002: a close body needs a 2-byte code
                        _ => &payload[..2],
                    };
                    ws::encode_frame(&mut out, true, ws::OP_CLOSE, reply, None);
                    peer_closed = true;
                }
                op => {
                    if (op == ws::OP_CONT) != in_message {
                        close_code = Some(1002);
                        break;
                    }
                    in_message = !h.fin;
                    ws::encode_frame(&mut out, h.fin, op, &payload, None);
                }
            }
        }
        conn.consume(used);
        if let Some(code) = close_code {
            ws::encode_frame(&mut out, true, ws::OP_CLOSE, &code.to_be_bytes(), None);
        }
        if !out.is_empty() {
            if conn.stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close_code.is_some() || peer_closed {
            return lingering_close(&conn.stream);
        }
        match conn.fill() {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                let text = |r: &std::ops::Range<usize>| {
                    String::from_utf8_lossy(&buf[r.clone()]).to_string()
                };
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
        let r = get(&b, &format!("/?wtd={id}&sid=1&request=script&rand=2#frag"));
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
        let req =
            "POST /?wtd=wt7AAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
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
}
