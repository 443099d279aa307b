//! Wt-like demo backends for `wtgate demo` and for tests: small blocking HTTP/1.1 servers that route
//! like a Wt server (wthttpd) with `--session-id-prefix`, so session affinity can be seen in a browser
//! or with `curl -i` (every response carries `X-Backend: <prefix>`).
//!
//! What a [`DemoBackend`] answers (see docs/design.md "How Wt talks" for the Wt behaviour it imitates):
//! - `GET`/`HEAD` with no `wtd`, or a `wtd` this server does not know (another server's prefix, an
//!   unknown or malformed id) → a new session `prefix + 16 [0-9A-Za-z]`; 200 `text/html`, chunked:
//!   "served by backend wt1 (ADDR), new session wt1…", a link `?wtd=<id>`, and a script that opens a
//!   WebSocket to `?wtd=<id>&request=ws`, sends a message and shows the echo.
//! - `GET /?wtd=<known id>` → 200 chunked page "served by backend wt1, session `<id>` (request #n of this
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
//!
//! [`ws`] is the sans-IO WebSocket codec of the demo's echo, which the tests and the bench use too.
//! The crate needs only the HTTP core (wtgate-h1), not the proxy: the `wtgate` binary depends on it
//! for its `demo` command, and the proxy itself never serves pages or parses frames.
//!
//! Modules: `server` (the handle, the accept loop, one connection's requests), `sessions` (the
//! session table), `pages` (the responses and their bytes), `echo` (the WebSocket echo).

mod echo;
mod pages;
mod server;
mod sessions;
#[cfg(test)]
mod tests;
pub mod ws;

pub use server::DemoBackend;
pub use sessions::SESSION_ID_LEN;
