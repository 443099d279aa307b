//! The Wt-like test backend: records every byte and every complete request it receives, and
//! answers according to its [`Behavior`].

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::util::{Fnv, Rng, fnv, gen_body, query_param};
use wtgate::h1::Framing;

use super::wire::{ConnRecord, RequestStart, Wire};
use super::ws::{WS_AFTER_HALF_CLOSE, read_frame, server_frame};

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
        // Parsed by `wtgate::h1::parse_request`; a head it refuses ends the connection (its raw
        // bytes are in the record all the same).
        let Some(req) = w.read_request_head()? else {
            return Ok(());
        };
        let RequestStart {
            method,
            target,
            version,
            head,
            framing,
            keep_alive,
            expect_continue,
        } = req;
        // Honour Expect: 100-continue on a body with a Content-Length.
        if expect_continue && matches!(framing, Framing::Length(_)) {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        // Body.
        let mut f = Fnv::new();
        let mut len = 0usize;
        w.read_body_with(framing, |d| {
            f.update(d);
            len += d.len();
        })?;
        shared.requests.lock().unwrap().push(SeenRequest {
            conn: conn_id,
            method: method.clone(),
            target: target.clone(),
            version: version.to_string(),
            headers: head.headers.clone(),
            body_len: len,
            body_fnv: f.finish(),
        });
        let close = !keep_alive;
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
