//! A demo backend's server: the handle, the accept loop, and one connection's requests, read with
//! the HTTP core and answered in order.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use wtgate_h1::{
    self as h1, BodyError, BodyFramer, Framing, Limits, RequestError, RequestHead, Version,
};

use crate::echo::ws_echo;
use crate::pages::{Response, Shape, error_response, page};
use crate::sessions::Sessions;
use crate::ws;

const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const LINGER: Duration = Duration::from_millis(500);
pub(crate) const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const READ_CHUNK: usize = 16 * 1024;
const MAX_CONNS: usize = 1024;
const FORM_PREFIX: usize = 4096;
const THREAD_STACK: usize = 256 * 1024;

/// Handle to a running demo backend. Dropping it does not stop the server threads.
pub struct DemoBackend {
    shared: Arc<Shared>,
}

struct Shared {
    prefix: String,
    addr: SocketAddr,
    requests: AtomicU64,
    conns: AtomicUsize,
    sessions: Sessions,
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
            sessions: Sessions::new(
                prefix,
                u64::from(addr.port()) << 32 ^ u64::from(std::process::id()),
            ),
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
        self.shared.sessions.len()
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
pub(crate) enum Fail {
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
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: Vec<u8>,
}

impl Conn {
    /// Reads once more into `buf`; `Ok(0)` at end of stream.
    pub(crate) fn fill(&mut self) -> Result<usize, Fail> {
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

    pub(crate) fn consume(&mut self, n: usize) {
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

    fn has_body(&self) -> bool {
        match self.framing {
            Framing::Length(n) => n > 0,
            Framing::Chunked => true,
            Framing::None | Framing::CloseDelimited => false,
        }
    }
}

/// Where a request goes: its target's path and query (fragment dropped), and the session it names.
struct Route<'t> {
    path: &'t str,
    query: &'t str,
    wtd: &'t str,
}

impl<'t> Route<'t> {
    fn of(target: &'t str) -> Route<'t> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, q.split('#').next().unwrap_or("")),
            None => (target, ""),
        };
        Route {
            path,
            query,
            wtd: param(query, "wtd").unwrap_or(""),
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
    let head = read_head(conn)?;
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let route = Route::of(&head.target);
    if param(route.query, "request") == Some("ws") {
        return accept_websocket(conn, shared, &head, route.wtd, reused);
    }
    let head_only = match head.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        "POST" => false,
        _ => return Err(Fail::Status(405, "method not allowed")),
    };
    let mut body = BodySink::new();
    if head.has_body() {
        // The core only sets it on HTTP/1.1, where a client may wait for it.
        if head.expect_continue {
            conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        conn.read_body(head.framing, &mut body)?;
    }
    let resp = respond(shared, &head, &route, &body);
    let mut out = Vec::with_capacity(2048);
    // HTTP/1.0 clients can't read chunked bodies; they get Content-Length and a close.
    let shape = Shape {
        close: head.close,
        head_only,
        http11: head.http11,
    };
    resp.write(&mut out, &shared.prefix, shape);
    conn.stream.write_all(&out)?;
    Ok(if head.close {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// Reads until a whole request head is in, and consumes it.
fn read_head(conn: &mut Conn) -> Result<Head, Fail> {
    let limits = Limits {
        max_head_bytes: MAX_HEAD,
        max_headers: MAX_HEADERS,
    };
    loop {
        // A head over the limit is an error here (431), so the buffer stays bounded.
        if let Some(parsed) = h1::parse_request(&conn.buf, &limits).map_err(Fail::Request)? {
            let head = Head::of(&conn.buf, &parsed);
            conn.consume(parsed.head_len);
            return Ok(head);
        }
        if conn.fill()? == 0 {
            return Err(Fail::Closed);
        }
    }
}

/// Answers `request=ws` with a 101, after which the echo takes the connection, or says why not.
fn accept_websocket(
    conn: &mut Conn,
    shared: &Shared,
    head: &Head,
    wtd: &str,
    reused: bool,
) -> Result<Next, Fail> {
    if !head.upgrade_ws || head.method != "GET" || head.has_body() {
        return Err(Fail::Status(
            400,
            "request=ws needs a GET with Upgrade: websocket",
        ));
    }
    if shared.sessions.touch(wtd).is_none() {
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
    Ok(if reused { Next::Close } else { Next::WebSocket })
}

/// The response to a GET, HEAD or POST whose body has been read.
fn respond(shared: &Shared, head: &Head, route: &Route, body: &BodySink) -> Response {
    let prefix = shared.prefix.as_str();
    // Before the favicon check: a favicon request that names a session counts as one of its own.
    let session = shared.sessions.touch(route.wtd).map(|n| (route.wtd, n));
    if route.path.ends_with("/favicon.ico") {
        Response::text(404, "text/plain", format!("not found (backend {prefix})\n"))
    } else if head.method == "POST" {
        post_response(prefix, session, route.query, body)
    } else {
        get_response(shared, session, route.query)
    }
}

/// A POST is one of Wt's JavaScript updates: name what came, or reload an unknown session.
fn post_response(
    prefix: &str,
    session: Option<(&str, u64)>,
    query: &str,
    body: &BodySink,
) -> Response {
    let form = std::str::from_utf8(&body.start).unwrap_or("");
    let request = param(form, "request")
        .or_else(|| param(query, "request"))
        .unwrap_or("");
    let script = match session {
        Some((id, n)) => format!(
            "// backend {prefix}, session {id} (request #{n} of this session): \
             request={request}, body {} bytes, fnv1a {:016x}\n",
            body.len, body.hash
        ),
        None => format!(
            "// backend {prefix}: unknown session, reloading without wtd\n\
             window.location.replace(window.location.pathname);\n"
        ),
    };
    Response::text(200, "text/javascript; charset=UTF-8", script)
}

/// A GET or HEAD: a resource of a known session, its page, or a new session's page.
fn get_response(shared: &Shared, session: Option<(&str, u64)>, query: &str) -> Response {
    let prefix = shared.prefix.as_str();
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
            let id = shared.sessions.create();
            let title = format!(
                "served by backend {prefix} ({}), new session {id}",
                shared.addr
            );
            Response::page(page(prefix, &id, &title))
        }
    }
}

/// Closes after a final response without losing it to a reset: stop writing, then drain what the
/// client still sends (bounded in time and bytes) before the socket is dropped.
pub(crate) fn lingering_close(stream: &TcpStream) {
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
