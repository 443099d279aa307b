//! One request and its response: the head we forward, the tries it takes (each on an
//! [`Upstream`]), and the exchange itself — the request body streamed client → backend while the
//! response is relayed backend → client, so a backend may answer before it has read the whole body
//! and `Expect: 100-continue` works. How far a try got is one [`Progress`] value, from which
//! [`verdict`] decides what a failure allows.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::AtomicU64;
use std::task::Poll;
use std::time::Instant;

use futures_lite::future;

use crate::access_log::{Kind, Line, RequestLine, Route};
use crate::config::{ProxySettings, Reuse, Timeouts};
use crate::h1::{self, BodyFramer, ForwardOptions, Framing, RequestHead, ResponseHead};
use crate::metrics::{BackendCounters, Held, ShardStats};
use crate::net::{InBuf, Sock, timeout};
use crate::pool::STRAY_PEEK;
use crate::proxy::ProxyError;
use crate::proxy::client::{Client, answer};
use crate::proxy::tunnel;
use crate::proxy::upstream::{self, Progress, Try, Upstream, Verdict, verdict};
use crate::route::Decision;
use crate::shard::Shard;

/// What the client connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// One request on its way.
struct Request {
    head: RequestHead,
    /// The head as forwarded, followed by the body bytes that came with it.
    fwd: Vec<u8>,
    /// Where the request-target is in `fwd` (routing needs it after the client's buffer moved on).
    target: std::ops::Range<usize>,
    /// Where the rest of the request body ends.
    framer: BodyFramer,
    /// When its head had arrived, and when the first response byte did: latencies start there.
    started: Instant,
    first_byte: Cell<Option<Instant>>,
    tally: Tally,
    /// The proxy-side settings in force when its head arrived: every try of it keeps them, while
    /// a reload changes them for the requests after it.
    settings: ProxySettings,
}

impl Request {
    /// The request line, for the access log.
    fn line(&self) -> RequestLine<'_> {
        RequestLine {
            method: self.method(),
            target: self.target(),
            version: self.head.version,
        }
    }

    /// The request-target, as the client sent it. Empty once the forwarded head was lost to a
    /// write given up (a backend that stopped reading: an io_uring write keeps its buffer until
    /// the kernel is done with it); the request is then answered by us and not sent again.
    fn target(&self) -> &[u8] {
        self.fwd.get(self.target.clone()).unwrap_or_default()
    }

    /// The method, as the client sent it (the forwarded head starts with it); empty as
    /// [`Request::target`] is.
    fn method(&self) -> &[u8] {
        self.fwd.get(..self.head.method.len()).unwrap_or_default()
    }
}

/// What a request's access-log line says beyond its timings.
#[derive(Default)]
struct Tally {
    /// Bytes read from the client: head and body.
    bytes_in: Cell<u64>,
    /// Bytes written to the client.
    bytes_out: Cell<u64>,
    /// The status sent to the client.
    status: Cell<Option<u16>>,
    /// When the last try's backend connection was ready (measured only with the log on).
    connected: Cell<Option<Instant>>,
    /// It waited for a backend to come back (`--queue-timeout`).
    queued: Cell<bool>,
}

fn tally(cell: &Cell<u64>, n: usize) {
    cell.set(cell.get() + n as u64);
}

/// How a completed exchange left the two connections.
struct Done {
    backend_reusable: bool,
    client_close: bool,
    /// Bytes followed the response's end (they are left in the upstream's buffer, unrelayed).
    stray: bool,
}

enum Outcome {
    Complete(Done),
    Upgraded,
}

/// A failed try, and how far it got.
struct Failed {
    err: ProxyError,
    progress: Progress,
}

/// One request, from its parsed head to the end of its response (or its tunnel).
pub async fn forward(shard: &Shard, client: &mut Client, head: RequestHead) -> Next {
    let (mut req, framed) = prepare(shard, client, head);
    let next = if framed {
        send(shard, client, &mut req).await
    } else {
        answer_request(shard, client, &req, 400, true).await;
        log_request(
            shard,
            client,
            &req,
            None,
            Some(ProxyError::BadRequestBody.name()),
        );
        Next::Close
    };
    shard.give_head_buf(req.fwd);
    shard.give_request_head(req.head);
    next
}

/// The tries of a request until one ends it.
async fn send(shard: &Shard, client: &mut Client, req: &mut Request) -> Next {
    let reuse = upstream::may_reuse(req.settings.reuse, &req.head, client.info.earlier_requests);
    let mut how = Try::first(reuse);
    let (mut resends, mut last_failure) = (0, None);
    loop {
        let queued = &req.tally.queued;
        let mut up = match upstream::connect(shard, req.target(), how, &req.settings, queued).await
        {
            Ok(up) => up,
            // A resend that found nowhere to go: what the client learns is why it was resent.
            Err(ProxyError::NoBackend) if last_failure.is_some() => {
                let (backend, err) = last_failure.unwrap_or((0, ProxyError::UpstreamClosed));
                return unanswered(shard, client, req, backend, err).await;
            }
            Err(err) => return no_backend(shard, client, req, err).await,
        };
        if shard.access_log.enabled() {
            req.tally.connected.set(Some(Instant::now()));
        }
        let result = exchange(shard, client, &mut up, req).await;
        if let (true, Ok(_), Some(status)) = (up.affinity, &result, req.tally.status.get()) {
            shard.session_seen(req.target(), up.backend, client.info.peer, status);
        }
        let last = (up.backend, Route::of(up.decision, resends));
        let failed = match result {
            Ok(outcome) => return finish(shard, client, (up, last.1), req, outcome).await,
            Err(failed) => failed,
        };
        if failed.progress < Progress::BackendAnswered
            && matches!(
                failed.err,
                ProxyError::UpstreamTimeout | ProxyError::UpstreamClosed
            )
        {
            shard.unanswered(up.backend);
        }
        up.sock.shutdown_both();
        let replayable = req.head.safe_to_replay;
        match verdict(failed.err, failed.progress, replayable, resends) {
            Verdict::Resend => {
                ShardStats::count(&shard.stats.backends[up.backend].resends);
                resends += 1;
                last_failure = Some((up.backend, failed.err));
                how = Try::resend(&up);
                continue;
            }
            Verdict::Answer(status) => {
                count_end(shard, &up, Some(failed.err));
                log_answer(shard, client, req, status, (Some(up.backend), failed.err));
                answer_request(shard, client, req, status, true).await;
            }
            Verdict::Close => count_end(shard, &up, Some(failed.err)),
        }
        log_request(shard, client, req, Some(last), Some(failed.err.name()));
        return Next::Close;
    }
}

/// The forwarded head, with the body bytes that arrived with it (they travel in the same write);
/// false: those body bytes are not valid chunked framing.
fn prepare(shard: &Shard, client: &mut Client, head: RequestHead) -> (Request, bool) {
    let (mut fwd, settings) = (shard.take_head_buf(), shard.settings());
    let info = &client.info;
    let forwarded_for = info.ip.as_deref().filter(|_| settings.forwarded_headers);
    let opts = ForwardOptions {
        forwarded_for,
        proto: info.proto,
        // Asked per request, so that a reload applies to keep-alive connections too.
        trusted: forwarded_for.is_some() && info.peer.is_some_and(|p| shard.trusts(p.ip())),
    };
    h1::write_forward_request(&mut fwd, client.buf.data(), &head, &opts);
    // The forwarded request line is the client's method and target as they came.
    let target_at = head.method.len() + 1;
    let target = target_at..target_at + head.target.len();
    debug_assert_eq!(
        &fwd[target.clone()],
        &client.buf.data()[head.target.clone()]
    );
    client.buf.consume(head.head_len);
    let mut req = Request {
        framer: BodyFramer::new(head.framing),
        tally: Tally::default(),
        head,
        target,
        fwd,
        started: Instant::now(),
        first_byte: Cell::new(None),
        settings,
    };
    tally(&req.tally.bytes_in, req.head.head_len);
    let Ok(adv) = req.framer.advance(client.buf.data()) else {
        return (req, false);
    };
    req.fwd
        .extend_from_slice(&client.buf.data()[..adv.consumed]);
    client.buf.consume(adv.consumed);
    tally(&req.tally.bytes_in, adv.consumed);
    (req, true)
}

/// Counts a request once, on the backend of its last try, and the failure that ended it.
fn count_end(shard: &Shard, up: &Upstream, err: Option<ProxyError>) {
    let backend = &shard.stats.backends[up.backend];
    ShardStats::count(&backend.requests);
    if let Some(err) = err {
        ShardStats::count(&backend.failed);
        ShardStats::count(&shard.stats.failures[err.index()]);
    }
}

/// A request resent after `err` on `backend` that found nowhere else to go: answered with the
/// status of that failure (a `502` for a connection closed unanswered), logged with its cause.
async fn unanswered(
    shard: &Shard,
    client: &Client,
    req: &Request,
    backend: usize,
    err: ProxyError,
) -> Next {
    let counters = &shard.stats.backends[backend];
    ShardStats::count(&counters.requests);
    ShardStats::count(&counters.failed);
    ShardStats::count(&shard.stats.failures[err.index()]);
    log_answer(shard, client, req, err.status(), (Some(backend), err));
    answer_request(shard, client, req, err.status(), true).await;
    let last = Some((backend, Route::Resend));
    log_request(shard, client, req, last, Some(err.name()));
    Next::Close
}

/// Nothing usable: 503, and the client connection stays open unless a request body we have not
/// read would poison it.
async fn no_backend(shard: &Shard, client: &Client, req: &Request, err: ProxyError) -> Next {
    ShardStats::count(&shard.stats.failures[err.index()]);
    if err == ProxyError::NoBackend {
        ShardStats::count(&shard.stats.no_backend);
    }
    let close = !req.head.keep_alive || !req.framer.is_done();
    log_answer(shard, client, req, err.status(), (None, err));
    answer_request(shard, client, req, err.status(), close).await;
    log_request(shard, client, req, None, Some(err.name()));
    if close { Next::Close } else { Next::KeepAlive }
}

/// Answers `req` with a status of our own, noting it for the access log.
async fn answer_request(shard: &Shard, client: &Client, req: &Request, status: u16, close: bool) {
    req.tally.status.set(Some(status));
    let sent = answer(shard, &client.sock, status, close).await;
    tally(&req.tally.bytes_out, sent);
}

/// The request's access-log line; `last`: the backend of its last try, and how it was chosen;
/// `err`: what went wrong (a [`ProxyError::name`], or [`STRAY`]).
fn log_request(
    shard: &Shard,
    client: &Client,
    req: &Request,
    last: Option<(usize, Route)>,
    err: Option<&'static str>,
) {
    if !shard.access_log.enabled() {
        return;
    }
    let t = &req.tally;
    let backend = last.map_or(usize::MAX, |(b, _)| b);
    shard.with_prefix(backend, |prefix| {
        shard.access_log.write(&Line {
            kind: Kind::Http,
            client: client.info.peer,
            backend: last.map(|_| prefix),
            route: last.map_or(Route::None, |(_, route)| route),
            started: req.started,
            connected: last.and(t.connected.get()),
            first_byte: req.first_byte.get(),
            status: t.status.get(),
            bytes_in: t.bytes_in.get(),
            bytes_out: t.bytes_out.get(),
            error: err,
            request: Some(req.line()),
        })
    });
}

/// The access log's error for a response that bytes followed: it reached the client whole, and
/// its connection was closed.
const STRAY: &str = "stray_bytes";

/// The access log's error field for a request that went well but took a path worth knowing: its
/// session left its server (and why), or it waited for a backend to come back.
fn path_note(decision: Decision, req: &Request) -> Option<&'static str> {
    match decision.moved() {
        Some((_, why)) => Some(why.name()),
        None => req.tally.queued.get().then_some("queued"),
    }
}

/// A completed exchange: the backend connection back to the pool if it can serve another
/// request, or the connection handed over to a tunnel after `101`.
async fn finish(
    shard: &Shard,
    client: &mut Client,
    (mut up, route): (Upstream, Route),
    req: &Request,
    outcome: Outcome,
) -> Next {
    count_end(shard, &up, None);
    let (started, first_byte) = (req.started, req.first_byte.get().unwrap_or(req.started));
    match outcome {
        Outcome::Complete(done) => {
            let end = Some(Instant::now());
            let stats = &shard.stats;
            stats.record_latency(up.backend, started, first_byte, end);
            // The policy in force now: after a reload to `never` nothing would take it.
            if done.backend_reusable && !done.stray && shard.settings().reuse != Reuse::Never {
                shard.park(up.sock, &up._in_use);
            } else {
                up.sock.shutdown_both();
            }
            if done.stray {
                let data = up.buf.data();
                let first = &data[..data.len().min(STRAY_PEEK)];
                shard.stray(up.backend, first, "right after the end of a response");
                up.buf.consume(data.len());
            }
            let note = done.stray.then_some(STRAY);
            let note = note.or_else(|| path_note(up.decision, req));
            log_request(shard, client, req, Some((up.backend, route)), note);
            if done.client_close {
                Next::Close
            } else {
                Next::KeepAlive
            }
        }
        Outcome::Upgraded => {
            shard
                .stats
                .record_latency(up.backend, started, first_byte, None);
            log_request(shard, client, req, Some((up.backend, route)), None);
            upgraded(shard, client, (up, route), req).await
        }
    }
}

/// After `101`: the tunnel, until both sides have closed; its own access-log line then. It goes
/// on in a task of its own, which takes the connection over (its `--maxconn` slot, its sockets and
/// read buffers): a task is as large as its largest state, and this one's is the whole request's
/// exchange, while a WebSocket of a Wt session lives for hours, idle most of the time.
async fn upgraded(
    shard: &Shard,
    client: &mut Client,
    (up, route): (Upstream, Route),
    req: &Request,
) -> Next {
    let Some(slot) = client.slot.take() else {
        return Next::Close;
    };
    let line = req.line();
    let tunnel = Tunnel {
        open: Held::new(&shard.stats, up.backend, |b| &b.tunnels),
        client: Client {
            sock: client.sock.clone(),
            buf: std::mem::replace(&mut client.buf, InBuf::new(shard.bufs.clone())),
            info: client.info.clone(),
            idle: client.idle.clone(),
            slot: Some(slot),
            key: client.key,
        },
        session: up.affinity.then(|| req.target().to_vec()),
        up,
        route,
        line: (line.method.to_vec(), line.target.to_vec(), line.version),
    };
    crate::net::spawn(tunnel.run());
    Next::Close
}

/// A WebSocket tunnel in a task of its own, with everything it needs, owned.
struct Tunnel {
    client: Client,
    up: Upstream,
    route: Route,
    /// The request-target, when it named a session of this backend: live while the tunnel is.
    session: Option<Vec<u8>>,
    /// The request line, for the access log: method, target, version.
    line: (Vec<u8>, Vec<u8>, h1::Version),
    /// Counts it among the backend's open tunnels.
    open: Held,
}

impl Tunnel {
    async fn run(mut self) {
        let Some(shard) = self.client.slot.as_ref().map(|s| s.shard.clone()) else {
            return;
        };
        let backend = self.up.backend;
        if let Some(t) = &self.session {
            shard.session_tunnel(t, backend, true);
        }
        let opened = Instant::now();
        let (bytes_in, bytes_out) = tunnel::run(&shard, &mut self.client, &mut self.up).await;
        if let Some(t) = &self.session {
            shard.session_tunnel(t, backend, false);
        }
        let (method, target, version) = &self.line;
        shard.with_prefix(backend, |prefix| {
            shard.access_log.write(&Line {
                kind: Kind::Tunnel,
                client: self.client.info.peer,
                backend: Some(prefix),
                route: self.route,
                started: opened,
                connected: None,
                first_byte: None,
                status: Some(101),
                bytes_in,
                bytes_out,
                error: None,
                request: Some(RequestLine {
                    method,
                    target,
                    version: *version,
                }),
            })
        });
        shard.untrack(self.client.key);
        self.client.sock.shutdown_both();
        drop(self.open);
    }
}

/// Logs why we answer a request ourselves: client, request line without its query (it may hold
/// secrets), backend, cause. Rate-limited by the shard.
fn log_answer(
    shard: &Shard,
    client: &Client,
    req: &Request,
    status: u16,
    (backend, err): (Option<usize>, ProxyError),
) {
    let target = req.target();
    let path_end = target.iter().position(|&b| b == b'?');
    let path = String::from_utf8_lossy(&target[..path_end.unwrap_or(target.len())]);
    let method = String::from_utf8_lossy(req.method());
    let ip = client.info.ip.as_deref().unwrap_or("?");
    let backend = match backend {
        Some(b) => format!(" (backend {})", shard.prefix(b)),
        None => String::new(),
    };
    shard.log_failure(format_args!(
        "{status} to {ip} for {method} {path}{backend}: {err}"
    ));
}

/// Sends the request on `up` and relays the response, the request body streamed meanwhile.
async fn exchange(
    shard: &Shard,
    client: &mut Client,
    up: &mut Upstream,
    req: &mut Request,
) -> Result<Outcome, Failed> {
    let t = req.settings.timeouts;
    let progress = Cell::new(Progress::NothingSent);
    let fail = |err| Failed {
        err,
        progress: progress.get(),
    };
    let counters = &shard.stats.backends[up.backend];
    forward_head(up, req, counters, t.server)
        .await
        .map_err(fail)?;
    progress.set(Progress::RequestSent);
    let body_sent = Cell::new(req.framer.is_done());
    let pump = BodyPump {
        client: &client.sock,
        buf: &mut client.buf,
        backend: &up.sock,
        framer: &mut req.framer,
        sent: &body_sent,
        sent_bytes: &counters.request_bytes,
        read_bytes: &req.tally.bytes_in,
    };
    let awaiting = Awaiting::new(shard, up.backend, &req.first_byte, req.started);
    let relay = Relay {
        shard,
        timeouts: t,
        counters,
        client: &client.sock,
        backend: &up.sock,
        buf: &mut up.buf,
        req: &req.head,
        progress: &progress,
        first_byte: &awaiting,
        tally: &req.tally,
        body_sent: &body_sent,
    };
    // Pinned here, once: passed by value, each would be stored twice in the state machine.
    let (pump, relay) = (pin!(pump.run(t)), pin!(relay.run()));
    match first_failure(pump, relay).await {
        // The client's side of the request failed; the backend is left mid-request.
        Either::Left(err) => Err(fail(err)),
        Either::Right(Ok(Outcome::Complete(mut done))) => {
            if !body_sent.get() {
                // The backend answered without reading the whole body: neither side can go on.
                done.backend_reusable = false;
                done.client_close = true;
            }
            Ok(Outcome::Complete(done))
        }
        Either::Right(Ok(upgraded)) => Ok(upgraded),
        Either::Right(Err(err)) => Err(fail(err)),
    }
}

/// Writes the forwarded request head to the backend.
async fn forward_head(
    up: &Upstream,
    req: &mut Request,
    counters: &BackendCounters,
    limit: std::time::Duration,
) -> Result<(), ProxyError> {
    match timeout(limit, up.sock.write_vec(&mut req.fwd)).await {
        Ok(()) => {
            ShardStats::add(&counters.request_bytes, req.fwd.len());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(ProxyError::UpstreamStoppedReading),
        Err(_) => Err(ProxyError::UpstreamClosed),
    }
}

/// A request sent to a backend and waiting for its first response byte: counted on the shard
/// until the byte comes or the try ends (dropped) without one, so that a backend that stops
/// answering (frozen, stuck) is seen before its checks fail ([`Shard::request_sent`]).
struct Awaiting<'a> {
    shard: &'a Shard,
    backend: usize,
    /// The request's first response byte: when it came.
    first_byte: &'a Cell<Option<Instant>>,
    waiting: Cell<bool>,
}

impl<'a> Awaiting<'a> {
    /// `since`: when the request came (close enough to when it went out, and no clock read on
    /// the request path).
    fn new(
        shard: &'a Shard,
        backend: usize,
        first_byte: &'a Cell<Option<Instant>>,
        since: Instant,
    ) -> Self {
        shard.request_sent(backend, since);
        Awaiting {
            shard,
            backend,
            first_byte,
            waiting: Cell::new(true),
        }
    }

    /// A response byte came; the first one is noted.
    fn answered(&self) {
        if self.waiting.replace(false) {
            let now = Instant::now();
            self.first_byte.set(Some(now));
            self.shard.request_answered(self.backend, Some(now));
        }
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        if self.waiting.get() {
            self.shard.request_answered(self.backend, None);
        }
    }
}

/// Streams the rest of a request body from the client to the backend.
struct BodyPump<'a> {
    client: &'a Sock,
    buf: &'a mut InBuf,
    backend: &'a Sock,
    framer: &'a mut BodyFramer,
    sent: &'a Cell<bool>,
    sent_bytes: &'a AtomicU64,
    /// The request's bytes from the client, for the access log.
    read_bytes: &'a Cell<u64>,
}

impl BodyPump<'_> {
    /// Ends only by failing: once the body is through, only the response matters.
    async fn run(self, t: Timeouts) -> ProxyError {
        while !self.framer.is_done() {
            if self.buf.is_empty() {
                match timeout(t.client, self.buf.read_from(self.client)).await {
                    Ok(0) => return ProxyError::ClientGone,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        return ProxyError::ClientTimeout;
                    }
                    Err(_) => return ProxyError::ClientGone,
                }
            }
            let Ok(adv) = self.framer.advance(self.buf.data()) else {
                return ProxyError::BadRequestBody;
            };
            let body = self.buf.write_to(self.backend, adv.consumed);
            if timeout(t.server, body).await.is_err() {
                return ProxyError::UpstreamStoppedReading;
            }
            ShardStats::add(self.sent_bytes, adv.consumed);
            tally(self.read_bytes, adv.consumed);
            self.buf.consume(adv.consumed);
        }
        self.sent.set(true);
        future::pending().await
    }
}

/// Reads the backend's response and relays it to the client.
struct Relay<'a> {
    shard: &'a Shard,
    /// The request's.
    timeouts: Timeouts,
    counters: &'a BackendCounters,
    client: &'a Sock,
    backend: &'a Sock,
    buf: &'a mut InBuf,
    req: &'a RequestHead,
    progress: &'a Cell<Progress>,
    first_byte: &'a Awaiting<'a>,
    tally: &'a Tally,
    body_sent: &'a Cell<bool>,
}

impl Relay<'_> {
    async fn run(mut self) -> Result<Outcome, ProxyError> {
        let mut head = self.shard.take_response_head();
        let outcome = self.relay(&mut head).await;
        self.shard.give_response_head(head);
        outcome
    }

    async fn relay(&mut self, head: &mut ResponseHead) -> Result<Outcome, ProxyError> {
        self.final_head(head).await?;
        let head = &*head;
        if head.status == 101 {
            // Not before the whole request body went out either: the tunnel would start while
            // the body pump still has a read (or write) in flight, whose bytes it could lose.
            if !self.req.upgrade || !self.body_sent.get() {
                return Err(ProxyError::UnexpectedUpgrade);
            }
            self.send_head(head, true, 0).await?;
            self.counters.count_response(head.status);
            return Ok(Outcome::Upgraded);
        }
        // A graceful stop keeps no connection alive: the client learns it from this response.
        let client_keep_alive = self.req.keep_alive
            && head.framing != Framing::CloseDelimited
            && self.body_sent.get()
            && !self.shard.draining();
        let mut framer = BodyFramer::new(head.framing);
        let first = framer.advance(&self.buf.data()[head.head_len..]);
        let first = first.map_err(|_| ProxyError::BadResponseBody)?.consumed;
        self.send_head(head, client_keep_alive, first).await?;
        self.counters.count_response(head.status);
        Ok(Outcome::Complete(
            match self.relay_body(&mut framer).await? {
                BodyEnd::Framed { clean } => Done {
                    backend_reusable: clean && head.keep_alive,
                    client_close: !client_keep_alive,
                    stray: !clean,
                },
                BodyEnd::Eof => Done {
                    backend_reusable: false,
                    client_close: true,
                    stray: false,
                },
            },
        ))
    }

    /// Reads the response head after any interim ones (100 Continue, 103 Early Hints), which go
    /// to 1.1 clients as they are.
    async fn final_head(&mut self, head: &mut ResponseHead) -> Result<(), ProxyError> {
        loop {
            self.read_head(head).await?;
            if !(100..200).contains(&head.status) || head.status == 101 {
                return Ok(());
            }
            if self.req.version == h1::Version::Http11 {
                self.write_client(Out::Buffered(head.head_len)).await?;
            }
            self.buf.consume(head.head_len);
        }
    }

    async fn read_head(&mut self, head: &mut ResponseHead) -> Result<(), ProxyError> {
        let limits = &self.shard.limits;
        loop {
            if !self.buf.is_empty() {
                let is_head = self.req.is_head;
                match h1::parse_response_into(self.buf.data(), limits, is_head, head) {
                    Ok(true) => return Ok(()),
                    Ok(false) if self.buf.is_full() => return Err(ProxyError::BadResponseHead),
                    Ok(false) => {}
                    Err(_) => return Err(ProxyError::BadResponseHead),
                }
            }
            let limit = self.timeouts.server;
            match timeout(limit, self.buf.read_from(self.backend)).await {
                Ok(n) if n > 0 => self.answered(),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(ProxyError::UpstreamTimeout);
                }
                _ if self.progress.get() < Progress::BackendAnswered => {
                    return Err(ProxyError::UpstreamClosed);
                }
                _ => return Err(ProxyError::ResponseHeadCut),
            }
        }
    }

    fn answered(&self) {
        if self.progress.get() < Progress::BackendAnswered {
            self.progress.set(Progress::BackendAnswered);
        }
        self.first_byte.answered();
    }

    /// Writes the head as forwarded, followed by the `first` body bytes read with it.
    async fn send_head(
        &mut self,
        head: &ResponseHead,
        keep_alive: bool,
        first: usize,
    ) -> Result<(), ProxyError> {
        self.tally.status.set(Some(head.status));
        let mut out = self.shard.take_head_buf();
        let version = self.req.version;
        h1::write_forward_response(&mut out, self.buf.data(), head, keep_alive, version);
        self.buf.consume(head.head_len);
        out.extend_from_slice(&self.buf.data()[..first]);
        self.buf.consume(first);
        let written = self.write_client(Out::Head(&mut out)).await;
        self.shard.give_head_buf(out);
        written
    }

    /// Relays the rest of the body.
    async fn relay_body(&mut self, framer: &mut BodyFramer) -> Result<BodyEnd, ProxyError> {
        let limit = self.timeouts.server;
        while !framer.is_done() {
            match timeout(limit, self.buf.read_from(self.backend)).await {
                // EOF ends a close-delimited body; any other body is truncated, and the client
                // must see the connection end rather than a short message.
                Ok(0) => {
                    framer.on_eof().map_err(|_| ProxyError::BadResponseBody)?;
                    return Ok(BodyEnd::Eof);
                }
                Ok(_) => {}
                Err(_) => return Err(ProxyError::BadResponseBody),
            }
            let adv = framer.advance(self.buf.data());
            let adv = adv.map_err(|_| ProxyError::BadResponseBody)?;
            self.write_client(Out::Buffered(adv.consumed)).await?;
            self.buf.consume(adv.consumed);
        }
        // Bytes after the end of the response are a backend bug, and would be read as the next
        // request's answer: the connection is never reused, the bytes never relayed (they stay
        // in the buffer for the log line that names them).
        Ok(BodyEnd::Framed {
            clean: self.buf.is_empty(),
        })
    }

    async fn write_client(&mut self, out: Out<'_>) -> Result<(), ProxyError> {
        self.progress.set(Progress::ClientGotBytes);
        let limit = self.timeouts.client;
        let len = match out {
            Out::Buffered(n) => n,
            Out::Head(ref head) => head.len(),
        };
        let written = match out {
            Out::Buffered(n) => timeout(limit, self.buf.write_to(self.client, n)).await,
            Out::Head(head) => timeout(limit, self.client.write_vec(head)).await,
        };
        written.map_err(|_| ProxyError::ClientGone)?;
        ShardStats::add(&self.counters.response_bytes, len);
        tally(&self.tally.bytes_out, len);
        Ok(())
    }
}

/// What goes to the client: the first `n` unread bytes of the backend's buffer, or a head we wrote.
enum Out<'a> {
    Buffered(usize),
    Head(&'a mut Vec<u8>),
}

/// How a response body ended.
enum BodyEnd {
    /// Where its framing says; `clean`: no byte followed it.
    Framed { clean: bool },
    /// With the connection (close-delimited).
    Eof,
}

enum Either<L, R> {
    Left(L),
    Right(R),
}

/// Polls both futures; the first of `left` finishing (it only ever finishes by failing) or `right`
/// finishing wins, `right` when both finish at once; the other is dropped by the caller.
///
/// `left` is polled first all the same: when the body pump's last write and the response head
/// complete in the same turn of the ring (the backend answers as soon as it has the body; on
/// io_uring a write completes a turn after it was issued), the pump must mark the body sent
/// before the relay decides, from that mark, whether the client connection stays open.
async fn first_failure<L, R>(
    mut left: Pin<&mut impl Future<Output = L>>,
    mut right: Pin<&mut impl Future<Output = R>>,
) -> Either<L, R> {
    future::poll_fn(|cx| {
        // Neither is polled again after this call if either finished in it.
        let left_done = left.as_mut().poll(cx);
        if let Poll::Ready(r) = right.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(r));
        }
        left_done.map(Either::Left)
    })
    .await
}
