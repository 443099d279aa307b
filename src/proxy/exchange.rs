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

use crate::h1::{self, BodyFramer, ForwardOptions, Framing, RequestHead, ResponseHead};
use crate::metrics::{BackendCounters, Held, ShardStats};
use crate::net::{InBuf, Sock, timeout};
use crate::proxy::ProxyError;
use crate::proxy::client::{Client, answer};
use crate::proxy::tunnel;
use crate::proxy::upstream::{self, Progress, Try, Upstream, Verdict, verdict};
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
}

/// How a completed exchange left the two connections.
struct Done {
    backend_reusable: bool,
    client_close: bool,
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
    let Some(mut req) = prepare(shard, client, head) else {
        answer(shard, &client.sock, 400, true).await;
        return Next::Close;
    };
    let next = send(shard, client, &mut req).await;
    shard.give_head_buf(req.fwd);
    shard.give_request_head(req.head);
    next
}

/// The tries of a request until one ends it.
async fn send(shard: &Shard, client: &mut Client, req: &mut Request) -> Next {
    let reuse = upstream::may_reuse(shard.cfg.reuse, &req.head, client.info.earlier_requests);
    let mut how = Try::first(reuse);
    let mut resends = 0;
    loop {
        let target = &req.fwd[req.target.clone()];
        let mut up = match upstream::connect(shard, target, how).await {
            Ok(up) => up,
            Err(err) => return no_backend(shard, client, req, err).await,
        };
        if up.affinity {
            shard.session_seen(&req.fwd[req.target.clone()], up.backend);
        }
        let result = exchange(shard, client, &mut up, req).await;
        let failed = match result {
            Ok(outcome) => return finish(shard, client, up, req, outcome).await,
            Err(failed) => failed,
        };
        up.sock.shutdown_both();
        let replayable = req.head.safe_to_replay;
        match verdict(failed.err, failed.progress, replayable, resends) {
            Verdict::Resend => {
                ShardStats::count(&shard.stats.backends[up.backend].resends);
                resends += 1;
                how = Try::resend(&up);
                continue;
            }
            Verdict::Answer(status) => {
                count_end(shard, &up, Some(failed.err));
                log_answer(shard, client, req, status, (Some(up.backend), failed.err));
                answer(shard, &client.sock, status, true).await;
            }
            Verdict::Close => count_end(shard, &up, Some(failed.err)),
        }
        return Next::Close;
    }
}

/// The forwarded head, with the body bytes that arrived with it (they travel in the same write).
/// `None`: those body bytes are not valid chunked framing.
fn prepare(shard: &Shard, client: &mut Client, head: RequestHead) -> Option<Request> {
    let mut fwd = shard.take_head_buf();
    let info = &client.info;
    let opts = ForwardOptions {
        forwarded_for: info.ip.as_deref().filter(|_| shard.cfg.forwarded_headers),
        proto: info.proto,
        trusted: info.trusted,
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
    let mut framer = BodyFramer::new(head.framing);
    let Ok(adv) = framer.advance(client.buf.data()) else {
        shard.give_head_buf(fwd);
        shard.give_request_head(head);
        return None;
    };
    fwd.extend_from_slice(&client.buf.data()[..adv.consumed]);
    client.buf.consume(adv.consumed);
    Some(Request {
        head,
        target,
        fwd,
        framer,
        started: Instant::now(),
        first_byte: Cell::new(None),
    })
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

/// Nothing usable: 503, and the client connection stays open unless a request body we have not
/// read would poison it.
async fn no_backend(shard: &Shard, client: &Client, req: &Request, err: ProxyError) -> Next {
    ShardStats::count(&shard.stats.failures[err.index()]);
    let close = !req.head.keep_alive || !req.framer.is_done();
    log_answer(shard, client, req, err.status(), (None, err));
    answer(shard, &client.sock, err.status(), close).await;
    if close { Next::Close } else { Next::KeepAlive }
}

/// A completed exchange: the backend connection back to the pool if it can serve another
/// request, or the connection handed over to a tunnel after `101`.
async fn finish(
    shard: &Shard,
    client: &mut Client,
    mut up: Upstream,
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
            if done.backend_reusable && shard.cfg.reuse != crate::config::Reuse::Never {
                shard.park(up.backend, up.sock);
            } else {
                up.sock.shutdown_both();
            }
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
            let _open = Held::new(&shard.stats, up.backend, |b| &b.tunnels);
            // A WebSocket keeps its session live for as long as it is open.
            let target = &req.fwd[req.target.clone()];
            let session = up.affinity.then_some(target);
            if let Some(t) = session {
                shard.session_tunnel(t, up.backend, true);
            }
            tunnel::run(shard, client, &mut up).await;
            if let Some(t) = session {
                shard.session_tunnel(t, up.backend, false);
            }
            Next::Close
        }
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
    let target = &req.fwd[req.target.clone()];
    let path_end = target.iter().position(|&b| b == b'?');
    let path = String::from_utf8_lossy(&target[..path_end.unwrap_or(target.len())]);
    // The forwarded head starts with the method, as the client sent it.
    let method = String::from_utf8_lossy(&req.fwd[..req.head.method.len()]);
    let ip = client.info.ip.as_deref().unwrap_or("?");
    let backend = match backend {
        Some(b) => format!(" (backend {})", shard.cfg.backends[b].prefix),
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
    let t = shard.cfg.timeouts;
    let progress = Cell::new(Progress::NothingSent);
    let fail = |err| Failed {
        err,
        progress: progress.get(),
    };
    let counters = &shard.stats.backends[up.backend];
    match timeout(t.server, up.sock.write_vec(&mut req.fwd)).await {
        Ok(()) => {
            ShardStats::add(&counters.request_bytes, req.fwd.len());
            progress.set(Progress::RequestSent);
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(fail(ProxyError::UpstreamStoppedReading));
        }
        Err(_) => return Err(fail(ProxyError::UpstreamClosed)),
    }
    let body_sent = Cell::new(req.framer.is_done());
    let pump = BodyPump {
        client: &client.sock,
        buf: &mut client.buf,
        backend: &up.sock,
        framer: &mut req.framer,
        sent: &body_sent,
        sent_bytes: &counters.request_bytes,
    };
    let relay = Relay {
        shard,
        counters,
        client: &client.sock,
        backend: &up.sock,
        buf: &mut up.buf,
        req: &req.head,
        progress: &progress,
        first_byte: &req.first_byte,
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

/// Streams the rest of a request body from the client to the backend.
struct BodyPump<'a> {
    client: &'a Sock,
    buf: &'a mut InBuf,
    backend: &'a Sock,
    framer: &'a mut BodyFramer,
    sent: &'a Cell<bool>,
    sent_bytes: &'a AtomicU64,
}

impl BodyPump<'_> {
    /// Ends only by failing: once the body is through, only the response matters.
    async fn run(self, t: crate::config::Timeouts) -> ProxyError {
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
            self.buf.consume(adv.consumed);
        }
        self.sent.set(true);
        future::pending().await
    }
}

/// Reads the backend's response and relays it to the client.
struct Relay<'a> {
    shard: &'a Shard,
    counters: &'a BackendCounters,
    client: &'a Sock,
    backend: &'a Sock,
    buf: &'a mut InBuf,
    req: &'a RequestHead,
    progress: &'a Cell<Progress>,
    first_byte: &'a Cell<Option<Instant>>,
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
            if !self.req.upgrade {
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
                },
                BodyEnd::Eof => Done {
                    backend_reusable: false,
                    client_close: true,
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
            let limit = self.shard.cfg.timeouts.server;
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
        if self.first_byte.get().is_none() {
            self.first_byte.set(Some(Instant::now()));
        }
    }

    /// Writes the head as forwarded, followed by the `first` body bytes read with it.
    async fn send_head(
        &mut self,
        head: &ResponseHead,
        keep_alive: bool,
        first: usize,
    ) -> Result<(), ProxyError> {
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
        let limit = self.shard.cfg.timeouts.server;
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
        // Bytes after the end of the response are a backend bug; never reuse such a connection.
        let clean = self.buf.is_empty();
        self.buf.consume(self.buf.data().len());
        Ok(BodyEnd::Framed { clean })
    }

    async fn write_client(&mut self, out: Out<'_>) -> Result<(), ProxyError> {
        self.progress.set(Progress::ClientGotBytes);
        let limit = self.shard.cfg.timeouts.client;
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
