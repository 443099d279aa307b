//! The admin listener (`--admin ADDR`): the control plane, on plain threads of its own.
//!
//! It runs outside the shards on purpose: it must answer while the shards are busy, it must not
//! depend on their I/O runtime, and all it needs is the engine's shared state
//! ([`EngineHandle`]): counters, sessions, admin states. One thread accepts and reads every
//! connection without blocking until its request is whole ([`listen`]: connections that send
//! nothing cost no thread, and the longest-waiting one makes room for a newcomer); each whole
//! request then gets a short-lived thread, one request per connection (`Connection: close`).
//! Requests are parsed by the same sans-IO core as the proxy's ([`crate::h1`]), so bad input is a
//! 4xx, never a panic. Without a token, [`guard`] keeps web pages of other sites out.
//!
//! - [`report`]: one snapshot of everything, as JSON (`/stats`);
//! - [`prometheus`]: the same as Prometheus text (`/metrics`);
//! - [`client`]: the blocking client of `wtgate admin`;
//! - `POST /reload`: reads the config file again and puts it in force, as SIGHUP does, and says
//!   what changed (`engine::reload`);
//! - `page.html`: the status page (`/`): static, self-contained (inline CSS and JS, no external
//!   asset), it polls `/stats` every 2 s and updates its table in place.

pub mod client;
pub mod guard;
pub mod listen;
pub mod prometheus;
pub mod report;

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use serde_json::json;

pub use self::guard::ADMIN_HEADER;
pub use self::listen::{MAX_ANSWERING, MAX_WAITING, MAX_WAITING_PER_CLIENT};
use crate::engine::EngineHandle;
use crate::h1::{self, RequestHead};
use crate::health::Admin;

/// Largest request body taken (the state endpoint's is a word).
const MAX_BODY: usize = 4096;

const PAGE: &str = include_str!("page.html");

/// The running admin listener. Dropping it stops the accepting thread (and closes the
/// connections still sending their request); requests being answered end on their own.
pub struct AdminServer {
    addr: SocketAddr,
    /// A second handle on the listening socket, to wake the accepting thread when stopping.
    waker: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serves `listener` until dropped. `token`: every request must carry it as a bearer token;
    /// without one, [`guard`] decides what is served.
    pub fn start(
        listener: TcpListener,
        token: Option<String>,
        engine: Arc<EngineHandle>,
    ) -> io::Result<AdminServer> {
        let addr = listener.local_addr()?;
        let waker = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            engine,
            token,
            listen: addr,
        });
        let thread = std::thread::Builder::new()
            .name("wtgate-admin".into())
            .spawn({
                let stop = stop.clone();
                move || listen::run(&listener, &ctx, &stop)
            })?;
        Ok(AdminServer {
            addr,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // On Linux, shutting a listening socket down wakes a poll on it at once (POLLHUP).
        let _ = socket2::SockRef::from(&self.waker).shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What every connection's thread needs.
struct Ctx {
    engine: Arc<EngineHandle>,
    token: Option<String>,
    /// The listen address, which a request without a token must name ([`guard`]).
    listen: SocketAddr,
}

/// A request as read: its head, the buffer the head's ranges point into, and its body.
pub struct Request {
    buf: Vec<u8>,
    head: RequestHead,
    body: Vec<u8>,
    /// The address the client connected to.
    local: Option<IpAddr>,
}

impl Request {
    fn method(&self) -> &[u8] {
        &self.buf[self.head.method.clone()]
    }

    fn target(&self) -> &[u8] {
        &self.buf[self.head.target.clone()]
    }

    fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        h1::header_values(&self.buf, &self.head.headers, name).next()
    }
}

/// An answer of the admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// A HEAD request: the head says what the body would be, but no body follows.
    pub head_only: bool,
}

impl Reply {
    fn json(status: u16, value: &serde_json::Value) -> Reply {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
            head_only: false,
        }
    }

    /// An error as JSON: `{"error": "…"}`, which `wtgate admin` prints.
    fn error(status: u16, why: &str) -> Reply {
        Reply::json(status, &json!({ "error": why }))
    }

    /// A 503 that says when to try again.
    fn busy(why: &str) -> Reply {
        let mut r = Reply::error(503, why);
        r.headers.push(("Retry-After", "1".into()));
        r
    }

    fn text(content_type: &'static str, body: String) -> Reply {
        Reply {
            status: 200,
            content_type,
            headers: Vec::new(),
            body: body.into_bytes(),
            head_only: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            202 => "Accepted",
            401 => "Unauthorized",
            409 => "Conflict",
            421 => "Misdirected Request",
            s => h1::reason_phrase(s),
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The answer to one well-formed request.
fn respond(ctx: &Ctx, req: &Request) -> Reply {
    let target = req.target();
    let path = &target[..target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len())];
    let head = req.method() == b"HEAD";
    let method = if head { &b"GET"[..] } else { req.method() };
    // The status page is static and holds no data; a browser, which cannot add the header to a
    // page it opens, gets it, and the page asks for the token the data behind it needs.
    let page = method == b"GET" && path == b"/";
    match &ctx.token {
        // Without a token (loopback only), no web page of another site may use it.
        None => {
            if let Err(refusal) = guard::check(req, ctx.listen) {
                return refusal;
            }
        }
        Some(token) if !page && !authorized(req.header("authorization"), token) => {
            let mut r = Reply::error(
                401,
                "missing or wrong token: send Authorization: Bearer TOKEN",
            );
            r.headers
                .push(("WWW-Authenticate", "Bearer realm=\"wtgate\"".into()));
            return r;
        }
        // The token holder may reach it from anywhere, under any name.
        Some(_) => {}
    }
    let mut reply = route(ctx, method, path, &req.body);
    reply.head_only = head;
    reply
}

fn route(ctx: &Ctx, method: &[u8], path: &[u8], body: &[u8]) -> Reply {
    let engine = &ctx.engine;
    let segments: Vec<&[u8]> = path.split(|&b| b == b'/').skip(1).collect();
    let (allowed, reply): (&str, Option<Reply>) = match (method, &segments[..]) {
        (b"GET", [b""]) => (
            "GET",
            Some(Reply::text("text/html; charset=utf-8", PAGE.into())),
        ),
        (b"GET", [b"metrics"]) => {
            let text = prometheus::render(&report::Report::gather(engine));
            ("GET", Some(Reply::text(prometheus::CONTENT_TYPE, text)))
        }
        (b"GET", [b"stats"]) => {
            let json = report::Report::gather(engine).to_json();
            ("GET", Some(Reply::json(200, &json)))
        }
        (b"POST", [b"backends", prefix, b"state"]) => {
            ("POST", Some(set_state(engine, prefix, body)))
        }
        (b"GET", [b"backends", prefix, b"sessions"]) => ("GET", Some(sessions(engine, prefix))),
        (b"POST", [b"reload"]) => ("POST", Some(reload(engine))),
        (_, [b""] | [b"metrics"] | [b"stats"] | [b"backends", _, b"sessions"]) => ("GET", None),
        (_, [b"backends", _, b"state"] | [b"reload"]) => ("POST", None),
        _ => {
            let path = String::from_utf8_lossy(path);
            return Reply::error(404, &format!("no such endpoint: {path} (see /)"));
        }
    };
    reply.unwrap_or_else(|| {
        let mut r = Reply::error(405, &format!("use {allowed} here"));
        r.headers.push(("Allow", allowed.into()));
        r
    })
}

/// The slot and prefix of the configured backend with this prefix.
fn backend(engine: &EngineHandle, prefix: &[u8]) -> Result<(usize, String), Reply> {
    let g = engine.generation();
    let prefix = String::from_utf8_lossy(prefix);
    g.slot(&prefix)
        .map(|i| (i, prefix.to_string()))
        .ok_or_else(|| {
            Reply::error(
                404,
                &format!(
                    "no backend has prefix '{prefix}' (known: {})",
                    g.prefixes().join(", ")
                ),
            )
        })
}

/// `POST /backends/{prefix}/state`, body `drain`, `state=drain` or `{"state":"drain"}`: nothing
/// changes on an error.
fn set_state(engine: &EngineHandle, prefix: &[u8], body: &[u8]) -> Reply {
    let prefix = match backend(engine, prefix) {
        Ok((_, prefix)) => prefix,
        Err(reply) => return reply,
    };
    let Some(new) = parse_state(body) else {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]);
        return Reply::error(
            400,
            &format!(
                "the body '{shown}' is no state: send ready, drain or maint (or state=drain, \
                 or {{\"state\":\"drain\"}})"
            ),
        );
    };
    match engine.set_admin(&prefix, new) {
        Ok(old) => Reply::json(
            200,
            &json!({ "backend": prefix, "old": old.as_str(), "new": new.as_str() }),
        ),
        Err(e) => Reply::error(404, &e.to_string()),
    }
}

/// `POST /reload`: 200 with what changed once every shard applied it (202 if some shard had not
/// yet when the wait ended); 400 with every error of an invalid file, which changes nothing; 409
/// when there is nothing to reload (no `--config`) or wtgate is stopping.
fn reload(engine: &EngineHandle) -> Reply {
    use crate::config::reload::ReloadError;
    match engine.reload() {
        Ok(r) => {
            let c = &r.changes;
            let changed: Vec<&str> = c.changed.iter().map(|(p, _)| p.as_str()).collect();
            let status = if r.pending_shards == 0 { 200 } else { 202 };
            let body = json!({
                "generation": r.generation,
                "added": c.added,
                "removed": c.removed,
                "changed": changed,
                "settings": c.settings,
                "need_restart": c.need_restart,
                "warnings": r.warnings,
                "pending_shards": r.pending_shards,
                "summary": c.summary(),
            });
            Reply::json(status, &body)
        }
        Err(e) => {
            let status = match e {
                ReloadError::Invalid(_) | ReloadError::TooManySlots => 400,
                ReloadError::NoSource | ReloadError::Stopping => 409,
            };
            let why = e.to_string();
            let errors: Vec<&str> = why.lines().collect();
            Reply::json(status, &json!({ "error": why, "errors": errors }))
        }
    }
}

/// `ready`, `drain`, `maint`, alone, as the form field `state=…` or as JSON (`{"state":"drain"}`
/// or `"drain"`), surrounding whitespace ignored (`echo drain | curl --data-binary @-` sends a
/// newline).
pub fn parse_state(body: &[u8]) -> Option<Admin> {
    let body = body.trim_ascii();
    let json: Option<String> = match body.first() {
        Some(b'{') => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("state")?.as_str().map(str::to_string)),
        Some(b'"') => serde_json::from_slice(body).ok(),
        _ => None,
    };
    let word = match &json {
        Some(word) => word.as_bytes(),
        None => body.strip_prefix(b"state=").unwrap_or(body),
    };
    match word {
        b"ready" => Some(Admin::Ready),
        b"drain" => Some(Admin::Drain),
        b"maint" => Some(Admin::Maint),
        _ => None,
    }
}

/// `GET /backends/{prefix}/sessions`: what a drain waits for.
fn sessions(engine: &EngineHandle, prefix: &[u8]) -> Reply {
    let (i, prefix) = match backend(engine, prefix) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let s = engine.sessions()[i];
    Reply::json(
        200,
        &json!({
            "backend": prefix,
            "live": s.live,
            "since_last_request_s": s.since_last.map(|d| d.as_secs_f64()),
        }),
    )
}

/// Whether `header` is `Bearer TOKEN`, compared in constant time so that the answer's timing does
/// not tell how much of a guess was right.
fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = header else { return false };
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let given = given.trim_ascii();
    let want = token.as_bytes();
    let mut diff = u8::from(given.len() != want.len());
    for (i, &w) in want.iter().enumerate() {
        diff |= w ^ given.get(i).copied().unwrap_or(!w);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_from_a_word_or_a_form_field() {
        assert_eq!(parse_state(b"drain"), Some(Admin::Drain));
        assert_eq!(parse_state(b"maint\n"), Some(Admin::Maint));
        assert_eq!(parse_state(b"state=ready"), Some(Admin::Ready));
        assert_eq!(
            parse_state(b" {\"state\": \"drain\"}\n"),
            Some(Admin::Drain)
        );
        assert_eq!(parse_state(b"\"maint\""), Some(Admin::Maint));
        for bad in [
            &b""[..],
            b"DRAIN",
            b"state=",
            b"drained",
            b"state=drain&x=1",
            b"x=drain",
            b"{\"state\":\"DRAIN\"}",
            b"{\"state\":1}",
            b"{\"x\":\"drain\"}",
            b"{\"state\":\"drain\"",
            b"[\"drain\"]",
        ] {
            assert_eq!(parse_state(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        assert!(authorized(Some(b"Bearer s3cret"), "s3cret"));
        assert!(authorized(Some(b"bearer s3cret"), "s3cret"));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Bearer S3cret",
            b"Basic s3cret",
            b"Bearer",
            b"",
            b"s3cret",
        ] {
            assert!(!authorized(Some(bad), "s3cret"), "{bad:?}");
        }
        assert!(!authorized(None, "s3cret"));
    }

    #[test]
    fn replies_are_complete_http_responses() {
        let r = Reply::error(404, "no such endpoint");
        let out = r.encode();
        let head = h1::parse_response(&out, &h1::Limits::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 404);
        assert!(!head.keep_alive);
        let body: serde_json::Value = serde_json::from_slice(&out[head.head_len..]).unwrap();
        assert_eq!(body["error"], "no such endpoint");
        let mut r = Reply::text("text/plain", "hello".into());
        r.head_only = true;
        let out = r.encode();
        assert!(String::from_utf8(out).unwrap().ends_with(
            "Content-Length: 5\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ));
    }
}
