//! The per-connection flow: read a request head → route it → get a backend connection → stream the
//! request body and the response concurrently → next request, or a byte tunnel after `101`.
//!
//! All HTTP knowledge comes from the sans-IO [`crate::h1`] core; this file only moves bytes and
//! decides what to do when a socket fails or times out.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;

use glommio::channels::channel_mesh::Senders;

use crate::config::{Config, Reuse};
use crate::h1::{
    self, BodyFramer, ForwardOptions, Framing, ProxyHeader, RequestHead, ResponseHead,
};
use crate::health::{Admin, Cause, FailReason, Gossip, Health};
use crate::log::RateLimit;
use crate::metrics::ShardStats;
use crate::net::{BufPool, InBuf, Sock, timeout};
use crate::pool::Pool;
use crate::route::{Decision, Router};
use crate::trim::TrimHandle;
/// Read buffer per direction: large enough for any allowed head, and for body bursts.
const MIN_BUF: usize = 32 * 1024;
/// Spare read buffers a shard keeps (8 MiB at the default size): enough for the connections that
/// are busy at once, so that buffers are recycled rather than allocated per request.
const SPARE_BUFFERS: usize = 256;

/// Admin states set from outside the shards. Shards compare `generation` (one relaxed load per
/// routing decision, a cache line written only when an operator changes something) and copy the
/// table when it moved, so the hot path never takes the lock.
#[derive(Debug)]
pub struct AdminTable {
    pub generation: std::sync::atomic::AtomicU64,
    pub states: std::sync::Mutex<Vec<Admin>>,
}

impl AdminTable {
    pub fn new(backends: usize) -> AdminTable {
        AdminTable {
            generation: 0.into(),
            states: std::sync::Mutex::new(vec![Admin::Ready; backends]),
        }
    }
}

/// Everything one shard owns: its routing state, its view of the backends, its pool.
pub struct Shard {
    /// The shard's index: the one in its thread name, its core, its stats and its log lines.
    pub id: usize,
    shards: usize,
    cfg: Arc<Config>,
    limits: h1::Limits,
    router: RefCell<Router>,
    health: RefCell<Health>,
    pool: RefCell<Pool>,
    /// Where each backend is reached: resolved at start, re-resolved by its checker while checks
    /// fail (Wt servers in containers change addresses), spread with the `Up` gossip.
    addrs: RefCell<Vec<SocketAddr>>,
    stats: Arc<ShardStats>,
    admin: Arc<AdminTable>,
    admin_seen: Cell<u64>,
    /// Read buffers for every connection of this shard.
    bufs: Rc<BufPool>,
    /// Channels to the other shards (none with a single shard), and this shard's number in them.
    peers: RefCell<Option<Rc<Senders<Gossip>>>>,
    mesh_peer: Cell<usize>,
    /// Every open client connection and tunnel backend, so that stopping can close them all.
    open: RefCell<HashMap<u64, Sock>>,
    next_open: Cell<u64>,
    /// Failure lines (502/503/504 of our own, failed checks) are rate-limited per shard.
    log: RateLimit,
    trim: TrimHandle,
}

/// Failure lines a shard writes per second at most.
const LOG_LINES_PER_SECOND: u32 = 10;

/// What the client connection does after a request.
enum Next {
    KeepAlive,
    Close,
}

/// Why an exchange with a backend ended early.
enum Failure {
    /// The connection died before any response byte: a safe request may be sent again.
    Stale,
    /// Nothing has reached the client yet: answer with this status (and log why) and close.
    Answer(u16, &'static str),
    /// The client already has part of a response (or is gone): just close both sides.
    Abort,
}

/// How a completed exchange left the two connections.
struct Done {
    backend_reusable: bool,
    client_close: bool,
}

enum ResponseEnd {
    Complete(Done),
    Upgraded,
}

/// What one request knows about the client connection it came on.
struct ClientInfo {
    /// The client's address as text (from the PROXY protocol header where the listener takes
    /// one), for X-Forwarded-For and log lines.
    ip: Option<String>,
    /// Whether the client's own X-Forwarded-* are believed (`--trust-forwarded-from`).
    trusted: bool,
    /// The scheme the client used: `https` when a PROXY v2 header says it spoke TLS.
    proto: &'static str,
    /// Requests this connection carried before this one.
    earlier_requests: u64,
}

/// A request wtgate answers itself, with what the log line says about it.
struct FailedRequest<'a> {
    status: u16,
    backend: Option<usize>,
    why: &'static str,
    client: &'a ClientInfo,
    /// Method and path.
    line: &'a [u8],
}

/// A backend connection got for one try of a request.
struct Upstream {
    backend: usize,
    sock: Sock,
    pooled: bool,
}

impl Shard {
    pub fn new(
        id: usize,
        shards: usize,
        cfg: Arc<Config>,
        stats: Arc<ShardStats>,
        admin: Arc<AdminTable>,
        trim: TrimHandle,
    ) -> Shard {
        let n = cfg.backends.len();
        Shard {
            bufs: Rc::new(BufPool::new(
                (cfg.max_head_bytes + 1024).max(MIN_BUF),
                SPARE_BUFFERS,
            )),
            id,
            shards,
            limits: h1::Limits {
                max_head_bytes: cfg.max_head_bytes,
                max_headers: cfg.max_headers,
            },
            router: RefCell::new(Router::new(&cfg)),
            health: RefCell::new(Health::new(n)),
            pool: RefCell::new(Pool::new(n, cfg.pool_size, cfg.timeouts.pool_idle)),
            addrs: RefCell::new(cfg.backends.iter().map(|b| b.addr).collect()),
            cfg,
            stats,
            admin,
            admin_seen: Cell::new(0),
            peers: RefCell::new(None),
            mesh_peer: Cell::new(0),
            open: RefCell::new(HashMap::new()),
            next_open: Cell::new(0),
            log: RateLimit::new(LOG_LINES_PER_SECOND, Duration::from_secs(1)),
            trim,
        }
    }

    pub fn set_peers(&self, peers: Senders<Gossip>) {
        self.mesh_peer.set(peers.peer_id());
        *self.peers.borrow_mut() = Some(Rc::new(peers));
    }

    /// The shard that actively checks `backend`, and logs its state changes.
    fn checker_of(&self, backend: usize) -> usize {
        backend % self.shards
    }

    /// Applies a state change to this shard's view; `local`: seen here, so tell the others.
    pub fn on_gossip(&self, msg: Gossip, local: bool) {
        if !self.health.borrow_mut().apply(msg) {
            return;
        }
        let (backend, up) = match msg {
            Gossip::Down { backend, .. } => (backend, false),
            Gossip::Up { backend, addr } => {
                self.addrs.borrow_mut()[backend] = addr;
                (backend, true)
            }
        };
        if !up {
            // Connections to a dead backend would only fail one by one; drop them now.
            self.pool.borrow_mut().clear(backend);
        }
        self.stats.backends[backend]
            .up
            .store(up, std::sync::atomic::Ordering::Relaxed);
        if self.checker_of(backend) == self.id {
            let b = &self.cfg.backends[backend];
            match msg {
                Gossip::Down { cause, .. } => eprintln!(
                    "wtgate[{}]: backend {} ({}) up -> down: {cause}",
                    self.id, b.prefix, b.addr
                ),
                Gossip::Up { addr, .. } => eprintln!(
                    "wtgate[{}]: backend {} ({addr}) down -> up: {} good checks",
                    self.id, b.prefix, self.cfg.rise
                ),
            }
        }
        if local && let Some(peers) = self.peers.borrow().as_ref() {
            // Mesh numbers are the mesh's own (join order), not shard ids: send to all but us.
            for peer in (0..peers.nr_consumers()).filter(|&p| p != self.mesh_peer.get()) {
                if peers.try_send_to(peer, msg).is_err() {
                    // A full channel (a burst of changes) must not lose this one: wait for room.
                    let peers = peers.clone();
                    glommio::spawn_local(async move {
                        let _ = peers.send_to(peer, msg).await;
                    })
                    .detach();
                }
            }
        }
    }

    /// Checks `backend` every `check_interval` for as long as the shard runs.
    pub async fn check_loop(shard: Rc<Shard>, backend: usize) {
        let cfg = shard.cfg.clone();
        let mut last_failure = None;
        loop {
            glommio::timer::sleep(cfg.check_interval).await;
            let addr = shard.addrs.borrow()[backend];
            let result =
                crate::check::probe(addr, cfg.check_of(backend), cfg.timeouts.connect).await;
            if let Err(reason) = result {
                ShardStats::count(&shard.stats.backends[backend].checks_failed);
                // A down backend fails every check; say so only when the reason changes.
                let up = shard.health.borrow().statuses()[backend].up;
                if up || last_failure != Some(reason) {
                    shard.log_failure(format_args!(
                        "backend {} ({addr}): active check failed: {reason}",
                        cfg.backends[backend].prefix
                    ));
                }
                shard.re_resolve(backend).await;
            }
            last_failure = result.err();
            let flip =
                shard
                    .health
                    .borrow_mut()
                    .check_result(backend, result.is_ok(), cfg.rise, cfg.fall);
            match (flip, result) {
                (Some(true), _) => shard.on_gossip(Gossip::Up { backend, addr }, true),
                (Some(false), Err(reason)) => shard.on_gossip(
                    Gossip::Down {
                        backend,
                        cause: Cause::ChecksFailed { reason },
                    },
                    true,
                ),
                _ => {}
            }
        }
    }

    /// Looks a backend's host name up again (off the shard, in glommio's blocking pool), so the
    /// next check tries where it is now. Addresses written as IPs are left alone.
    async fn re_resolve(&self, backend: usize) {
        let host = self.cfg.backends[backend].host.clone();
        if host.parse::<SocketAddr>().is_ok() {
            return;
        }
        let found = glommio::executor()
            .spawn_blocking(move || crate::config::resolve_backend(&host))
            .await;
        let old = self.addrs.borrow()[backend];
        match found {
            Ok(new) if new != old => {
                eprintln!(
                    "wtgate[{}]: backend {} ({}) now resolves to {new}, was {old}",
                    self.id, self.cfg.backends[backend].prefix, self.cfg.backends[backend].host
                );
                self.addrs.borrow_mut()[backend] = new;
            }
            Ok(_) => {}
            Err(why) => self.log_failure(format_args!(
                "backend {}: {why}",
                self.cfg.backends[backend].prefix
            )),
        }
    }

    /// Writes a failure line to stderr unless too many were written this second.
    fn log_failure(&self, line: std::fmt::Arguments) {
        if let Some(left_out) = self.log.allow(Instant::now()) {
            eprintln!(
                "wtgate[{}]: {line}{}",
                self.id,
                crate::log::suppressed_note(left_out)
            );
        }
    }

    /// Copies the operators' admin states if they changed since the last request.
    fn refresh_admin(&self) {
        let generation = self
            .admin
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        if generation != self.admin_seen.get() {
            let states = self.admin.states.lock().unwrap_or_else(|e| e.into_inner());
            let mut health = self.health.borrow_mut();
            for (i, a) in states.iter().enumerate() {
                health.set_admin(i, *a);
            }
            self.admin_seen.set(generation);
        }
    }

    /// Closes pooled connections before the backends' own idle timeouts do, and asks for memory
    /// that a burst of connections left behind to be handed back to the system.
    pub async fn sweep_pool(shard: Rc<Shard>) {
        let every = (shard.cfg.timeouts.pool_idle / 4).max(Duration::from_millis(250));
        loop {
            glommio::timer::sleep(every).await;
            shard.pool.borrow_mut().expire(Instant::now());
            if shard.bufs.take_overflowed() {
                shard.trim.request();
            }
        }
    }

    pub fn log_accept_error(&self, e: &glommio::GlommioError<()>) {
        eprintln!("wtgate[{}]: accept failed: {e}", self.id);
    }

    /// Closes every client connection and every pooled backend connection of this shard: the
    /// engine is stopping. Each connection's task then sees its socket end and finishes.
    pub fn close_all(&self) {
        for sock in self.open.borrow().values() {
            sock.shutdown_both();
        }
        self.pool.borrow_mut().clear_all();
    }

    /// Serves one client connection until it closes; `proxy_protocol`: it starts with a PROXY
    /// protocol header, which says who the client is.
    pub async fn serve(&self, stream: TcpStream, proxy_protocol: bool) {
        let mut peer = stream.peer_addr().ok();
        let _ = stream.set_nodelay(true);
        let client = Sock::new(stream);
        let key = self.track(&client);
        let mut cbuf = InBuf::new(self.bufs.clone());
        let mut proto = "http";
        let mut accepted = true;
        if proxy_protocol {
            match self.read_proxy_header(&client, &mut cbuf).await {
                Some(header) => {
                    peer = header.source.or(peer);
                    if header.ssl {
                        proto = "https";
                    }
                }
                None => accepted = false,
            }
        }
        if accepted {
            let info = ClientInfo {
                ip: peer.map(|p| p.ip().to_canonical().to_string()),
                trusted: peer.is_some_and(|p| self.cfg.trusts(p.ip())),
                proto,
                earlier_requests: 0,
            };
            self.serve_requests(&client, cbuf, info).await;
        }
        self.open.borrow_mut().remove(&key);
        client.shutdown_both();
    }

    /// Reads the PROXY protocol header that opens a connection. `None`: the connection is to be
    /// closed (not a valid header, the client went away or took too long), as HAProxy does.
    async fn read_proxy_header(&self, client: &Sock, cbuf: &mut InBuf) -> Option<ProxyHeader> {
        let limit = self.cfg.timeouts.request_head;
        let started = Instant::now();
        loop {
            if !cbuf.is_empty() {
                match h1::parse_proxy_header(cbuf.data()) {
                    Ok(Some((header, len))) => {
                        cbuf.consume(len);
                        return Some(header);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.log_failure(format_args!("closed a connection: PROXY protocol: {e}"));
                        return None;
                    }
                }
            }
            let wait = limit.saturating_sub(started.elapsed());
            match timeout(wait, cbuf.read_idle(client)).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// The requests of one client connection, one after another.
    async fn serve_requests(&self, client: &Sock, mut cbuf: InBuf, mut info: ClientInfo) {
        let mut bbuf = InBuf::new(self.bufs.clone());
        loop {
            let first = info.earlier_requests == 0;
            let head = match self.read_request_head(client, &mut cbuf, first).await {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(status) => {
                    self.answer(client, status, true).await;
                    break;
                }
            };
            ShardStats::count(&self.stats.requests);
            match self.handle(client, &mut cbuf, &mut bbuf, head, &info).await {
                Next::KeepAlive => bbuf.release(),
                Next::Close => break,
            }
            info.earlier_requests += 1;
        }
    }

    /// Registers a socket for `close_all`; the caller removes it from `open` when done.
    fn track(&self, sock: &Sock) -> u64 {
        let key = self.next_open.get();
        self.next_open.set(key + 1);
        self.open.borrow_mut().insert(key, sock.clone());
        key
    }

    /// Reads until a whole request head is buffered. `Ok(None)`: the client closed or idled out
    /// between requests; `Err(status)`: answer that status and close.
    async fn read_request_head(
        &self,
        client: &Sock,
        cbuf: &mut InBuf,
        first: bool,
    ) -> Result<Option<RequestHead>, u16> {
        let t = &self.cfg.timeouts;
        let mut started: Option<Instant> = None;
        loop {
            if !cbuf.is_empty() {
                match h1::parse_request(cbuf.data(), &self.limits) {
                    Ok(Some(head)) => return Ok(Some(head)),
                    Ok(None) if cbuf.is_full() => return Err(431),
                    Ok(None) => {}
                    Err(e) => return Err(e.status()),
                }
                started.get_or_insert_with(Instant::now);
            }
            let wait = match started {
                Some(s) => t.request_head.saturating_sub(s.elapsed()),
                None if first => t.request_head,
                None => t.keepalive,
            };
            match timeout(wait, cbuf.read_idle(client)).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut && started.is_some() => {
                    return Err(408);
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Answers a status of the proxy's own. Errors writing it don't matter: we close anyway.
    async fn answer(&self, client: &Sock, status: u16, close: bool) {
        let resp = h1::error_response(status, close);
        let _ = timeout(self.cfg.timeouts.client, client.write_all(&resp)).await;
    }

    /// Logs why we answer a request ourselves, then answers.
    async fn answer_failed(&self, client: &Sock, req: FailedRequest<'_>, close: bool) {
        let backend = match req.backend {
            Some(b) => format!(" (backend {})", self.cfg.backends[b].prefix),
            None => String::new(),
        };
        self.log_failure(format_args!(
            "{} to {} for {}{backend}: {}",
            req.status,
            req.client.ip.as_deref().unwrap_or("?"),
            String::from_utf8_lossy(req.line),
            req.why
        ));
        self.answer(client, req.status, close).await;
    }

    /// Whether this request may go on a pooled backend connection (see `--reuse`). An upgrade
    /// never does: real Wt servers close a WebSocket upgraded on a connection that served a
    /// request before. Under `safe`, the first request of a client connection does only if we
    /// can resend it ourselves should the pooled connection turn out stale: a browser does not
    /// retry the first request of a connection, so a POST opening one must not meet that race.
    /// (HAProxy's `safe` gives every first request its own connection; resending replayable
    /// requests lets wtgate keep reuse for them, which measured 28 % less proxy CPU per request
    /// with a new client connection per request.)
    fn may_reuse(&self, req: &RequestHead, client: &ClientInfo) -> bool {
        match self.cfg.reuse {
            _ if req.upgrade => false,
            Reuse::Never => false,
            Reuse::Safe => client.earlier_requests > 0 || req.safe_to_replay,
            Reuse::Always => true,
        }
    }

    /// One request, from its parsed head to the end of its response.
    async fn handle(
        &self,
        client: &Sock,
        cbuf: &mut InBuf,
        bbuf: &mut InBuf,
        head: RequestHead,
        info: &ClientInfo,
    ) -> Next {
        let target = cbuf.data()[head.target.clone()].to_vec();
        // The request line as logged: method and path, not the query (it may hold secrets).
        let path_end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        let mut line = cbuf.data()[head.method.clone()].to_vec();
        line.push(b' ');
        line.extend_from_slice(&target[..path_end]);
        let mut fwd = Vec::with_capacity(head.head_len + 128);
        let opts = ForwardOptions {
            forwarded_for: if self.cfg.forwarded_headers {
                info.ip.as_deref()
            } else {
                None
            },
            proto: info.proto,
            trusted: info.trusted,
        };
        h1::write_forward_request(&mut fwd, cbuf.data(), &head, &opts);
        cbuf.consume(head.head_len);

        // Body bytes that arrived with the head travel in the same write as the head.
        let mut framer = BodyFramer::new(head.framing);
        match framer.advance(cbuf.data()) {
            Ok(adv) => {
                fwd.extend_from_slice(&cbuf.data()[..adv.consumed]);
                cbuf.consume(adv.consumed);
            }
            Err(_) => {
                self.answer(client, 400, true).await;
                return Next::Close;
            }
        }

        let failed = |status, backend, why| FailedRequest {
            status,
            backend,
            why,
            client: info,
            line: &line,
        };
        let mut use_pool = self.may_reuse(&head, info);
        let mut exclude: Option<usize> = None;
        let mut resends = 0;
        loop {
            let Some(up) = self.connect(&target, use_pool, exclude).await else {
                // Nothing usable. A request body we have not read would poison the connection.
                let close = !head.keep_alive || !framer.is_done();
                let why = "no backend is up and ready";
                self.answer_failed(client, failed(503, None, why), close)
                    .await;
                return if close { Next::Close } else { Next::KeepAlive };
            };
            let Upstream {
                backend,
                sock,
                pooled,
            } = up;
            let result = self
                .exchange(client, &sock, cbuf, bbuf, &head, &fwd, &mut framer)
                .await;
            if !matches!(result, Err(Failure::Stale)) || !head.safe_to_replay || resends >= 2 {
                ShardStats::count(&self.stats.backends[backend].requests);
            }
            match result {
                Ok(ResponseEnd::Complete(done)) => {
                    if done.backend_reusable && self.cfg.reuse != Reuse::Never {
                        self.pool.borrow_mut().put(backend, sock, Instant::now());
                    } else {
                        sock.shutdown_both();
                    }
                    return if done.client_close {
                        Next::Close
                    } else {
                        Next::KeepAlive
                    };
                }
                Ok(ResponseEnd::Upgraded) => {
                    self.tunnel(client, &sock, cbuf, bbuf).await;
                    return Next::Close;
                }
                Err(Failure::Stale) if head.safe_to_replay && resends < 2 => {
                    // The connection closed before a single response byte: the backend cannot
                    // have answered, and the request is safe to send again. It is routed again
                    // like a first try (health and admin states included), on a fresh
                    // connection; a fresh one that died (the backend crashing or stopping)
                    // excludes that backend.
                    sock.shutdown_both();
                    ShardStats::count(&self.stats.backends[backend].resends);
                    resends += 1;
                    use_pool = false;
                    exclude = (!pooled).then_some(backend);
                    bbuf.consume(bbuf.data().len());
                }
                Err(Failure::Stale) => {
                    sock.shutdown_both();
                    let why = "the backend closed the connection before answering";
                    self.answer_failed(client, failed(502, Some(backend), why), true)
                        .await;
                    return Next::Close;
                }
                Err(Failure::Answer(status, why)) => {
                    sock.shutdown_both();
                    self.answer_failed(client, failed(status, Some(backend), why), true)
                        .await;
                    return Next::Close;
                }
                Err(Failure::Abort) => {
                    sock.shutdown_both();
                    return Next::Close;
                }
            }
        }
    }

    /// Picks a backend and gets a connection to it: pooled if allowed, else a new connect, tried
    /// up to `retries` times; a failed backend is marked down (on every shard), so every later
    /// try goes elsewhere. `exclude`: a backend that just failed this request.
    async fn connect(
        &self,
        target: &[u8],
        use_pool: bool,
        mut exclude: Option<usize>,
    ) -> Option<Upstream> {
        self.refresh_admin();
        let mut failed: Option<usize> = None;
        for _ in 0..self.cfg.retries {
            let decision =
                self.router
                    .borrow_mut()
                    .route(target, self.health.borrow().statuses(), exclude);
            match decision {
                Decision::NoBackend => {
                    ShardStats::count(&self.stats.no_backend);
                    return None;
                }
                Decision::Redispatched { owner, .. } => {
                    ShardStats::count(&self.stats.backends[owner].redispatched);
                }
                _ => {}
            }
            let backend = decision.backend()?;
            if let Some(f) = failed.take() {
                ShardStats::count(&self.stats.backends[f].retries);
            }
            let counters = &self.stats.backends[backend];
            ShardStats::count(&counters.attempts);
            if use_pool && let Some(sock) = self.pool.borrow_mut().take(backend, Instant::now()) {
                return Some(Upstream {
                    backend,
                    sock,
                    pooled: true,
                });
            }
            let addr = self.addrs.borrow()[backend];
            match connect_to(addr, self.cfg.timeouts.connect).await {
                Ok(sock) => {
                    return Some(Upstream {
                        backend,
                        sock,
                        pooled: false,
                    });
                }
                Err(e) => {
                    ShardStats::count(&counters.connect_failures);
                    let cause = Cause::ConnectFailed {
                        shard: self.id,
                        reason: FailReason::from_io(&e),
                    };
                    self.on_gossip(Gossip::Down { backend, cause }, true);
                    exclude = Some(backend);
                    failed = Some(backend);
                }
            }
        }
        None
    }

    /// Sends the request to `backend` and relays the response, streaming the request body (client →
    /// backend) at the same time, so a backend may answer before it has read the whole body, and
    /// `Expect: 100-continue` works.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        client: &Sock,
        backend: &Sock,
        cbuf: &mut InBuf,
        bbuf: &mut InBuf,
        req: &RequestHead,
        fwd: &[u8],
        framer: &mut BodyFramer,
    ) -> Result<ResponseEnd, Failure> {
        let t = self.cfg.timeouts;
        if let Err(e) = timeout(t.server, backend.write_all(fwd)).await {
            return Err(if e.kind() != io::ErrorKind::TimedOut {
                Failure::Stale
            } else {
                Failure::Answer(502, "sending the request head timed out")
            });
        }
        let body_sent = Cell::new(framer.is_done());
        let response_started = Cell::new(false);
        let pump = pump_body(client, backend, cbuf, framer, t, &body_sent);
        let relay = self.relay_response(client, backend, bbuf, req, &body_sent, &response_started);
        match first_failure(pump, relay).await {
            Either::Left(err) => {
                // The client's side of the request failed; the backend is left mid-request.
                if response_started.get() {
                    Err(Failure::Abort)
                } else {
                    Err(err)
                }
            }
            Either::Right(Ok(ResponseEnd::Complete(mut done))) => {
                if !body_sent.get() {
                    // The backend answered without reading the whole body: neither side can go on.
                    done.backend_reusable = false;
                    done.client_close = true;
                }
                Ok(ResponseEnd::Complete(done))
            }
            Either::Right(other) => other,
        }
    }

    /// Reads the backend's response and relays it to the client.
    #[allow(clippy::too_many_arguments)]
    async fn relay_response(
        &self,
        client: &Sock,
        backend: &Sock,
        bbuf: &mut InBuf,
        req: &RequestHead,
        body_sent: &Cell<bool>,
        response_started: &Cell<bool>,
    ) -> Result<ResponseEnd, Failure> {
        let t = self.cfg.timeouts;
        let mut got_any = false;
        let head = loop {
            let head = self.read_response_head(backend, bbuf, req, got_any).await?;
            got_any = true;
            if (100..200).contains(&head.status) && head.status != 101 {
                // Interim responses (100 Continue, 103 Early Hints) go to 1.1 clients as they are.
                if req.version == h1::Version::Http11 {
                    let raw = bbuf.data()[..head.head_len].to_vec();
                    response_started.set(true);
                    write_client(client, &raw, t.client).await?;
                }
                bbuf.consume(head.head_len);
                continue;
            }
            break head;
        };

        if head.status == 101 {
            if !req.upgrade {
                return Err(if response_started.get() {
                    Failure::Abort
                } else {
                    Failure::Answer(
                        502,
                        "the backend switched protocols (101) for a request that asked for no upgrade",
                    )
                });
            }
            let mut out = Vec::with_capacity(head.head_len + 64);
            h1::write_forward_response(&mut out, bbuf.data(), &head, true, req.version);
            bbuf.consume(head.head_len);
            response_started.set(true);
            write_client(client, &out, t.client).await?;
            return Ok(ResponseEnd::Upgraded);
        }

        let client_keep_alive =
            req.keep_alive && head.framing != Framing::CloseDelimited && body_sent.get();
        let mut out = Vec::with_capacity(head.head_len + 64);
        h1::write_forward_response(&mut out, bbuf.data(), &head, client_keep_alive, req.version);
        bbuf.consume(head.head_len);
        let mut framer = BodyFramer::new(head.framing);
        let adv = framer
            .advance(bbuf.data())
            .map_err(|_| Failure::Answer(502, "the response body framing is invalid"))?;
        out.extend_from_slice(&bbuf.data()[..adv.consumed]);
        bbuf.consume(adv.consumed);
        response_started.set(true);
        write_client(client, &out, t.client).await?;

        while !framer.is_done() {
            match timeout(t.server, bbuf.read_from(backend)).await {
                Ok(0) => {
                    // EOF ends a close-delimited body; any other body is truncated, and the
                    // client must see the connection end rather than a short message.
                    framer.on_eof().map_err(|_| Failure::Abort)?;
                    return Ok(ResponseEnd::Complete(Done {
                        backend_reusable: false,
                        client_close: true,
                    }));
                }
                Ok(_) => {}
                Err(_) => return Err(Failure::Abort),
            }
            let adv = framer.advance(bbuf.data()).map_err(|_| Failure::Abort)?;
            write_client(client, &bbuf.data()[..adv.consumed], t.client).await?;
            bbuf.consume(adv.consumed);
        }
        // Bytes after the end of the response are a backend bug; never reuse such a connection.
        let clean = bbuf.is_empty();
        bbuf.consume(bbuf.data().len());
        Ok(ResponseEnd::Complete(Done {
            backend_reusable: clean && head.keep_alive,
            client_close: !client_keep_alive,
        }))
    }

    async fn read_response_head(
        &self,
        backend: &Sock,
        bbuf: &mut InBuf,
        req: &RequestHead,
        got_any: bool,
    ) -> Result<ResponseHead, Failure> {
        let mut received = got_any || !bbuf.is_empty();
        loop {
            if !bbuf.is_empty() {
                match h1::parse_response(bbuf.data(), &self.limits, req.is_head) {
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) if bbuf.is_full() => {
                        return Err(Failure::Answer(502, "the response head is too large"));
                    }
                    Ok(None) => {}
                    Err(_) => return Err(Failure::Answer(502, "the response head is invalid")),
                }
            }
            match timeout(self.cfg.timeouts.server, bbuf.read_from(backend)).await {
                Ok(n) if n > 0 => received = true,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(Failure::Answer(504, "no response within --server-timeout"));
                }
                // Closed or reset before answering: on a pooled connection that is the backend's
                // idle close racing our request; on a fresh one a dying backend. Either way a
                // safe request may survive by a resend.
                _ if !received => return Err(Failure::Stale),
                _ => {
                    return Err(Failure::Answer(
                        502,
                        "the connection ended inside the response head",
                    ));
                }
            }
        }
    }

    /// Relays bytes both ways after `101 Switching Protocols` until both sides have closed.
    async fn tunnel(&self, client: &Sock, backend: &Sock, cbuf: &mut InBuf, bbuf: &mut InBuf) {
        let key = self.track(backend);
        let idle = self.cfg.timeouts.tunnel;
        let last = Cell::new(Instant::now());
        let up = relay_bytes(client, backend, cbuf, idle, &last);
        let down = relay_bytes(backend, client, bbuf, idle, &last);
        let _ = future::zip(up, down).await;
        self.open.borrow_mut().remove(&key);
        backend.shutdown_both();
    }
}

async fn connect_to(addr: SocketAddr, limit: Duration) -> io::Result<Sock> {
    let stream = TcpStream::connect_timeout(addr, limit)
        .await
        .map_err(io::Error::from)?;
    let _ = stream.set_nodelay(true);
    Ok(Sock::new(stream))
}

async fn write_client(client: &Sock, bytes: &[u8], limit: Duration) -> Result<(), Failure> {
    timeout(limit, client.write_all(bytes))
        .await
        .map_err(|_| Failure::Abort)
}

/// Streams the rest of a request body from the client to the backend.
async fn pump_body(
    client: &Sock,
    backend: &Sock,
    cbuf: &mut InBuf,
    framer: &mut BodyFramer,
    t: crate::config::Timeouts,
    body_sent: &Cell<bool>,
) -> Failure {
    while !framer.is_done() {
        if cbuf.is_empty() {
            match timeout(t.client, cbuf.read_from(client)).await {
                Ok(0) => return Failure::Abort,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Failure::Answer(408, "the client stopped sending the request body");
                }
                Err(_) => return Failure::Abort,
            }
        }
        let adv = match framer.advance(cbuf.data()) {
            Ok(adv) => adv,
            Err(_) => return Failure::Answer(400, "the request body framing is invalid"),
        };
        if timeout(t.server, backend.write_all(&cbuf.data()[..adv.consumed]))
            .await
            .is_err()
        {
            return Failure::Answer(502, "the backend stopped reading the request body");
        }
        cbuf.consume(adv.consumed);
    }
    body_sent.set(true);
    // The body is through; from here on only the response matters.
    future::pending().await
}

/// One direction of a tunnel: `from` → `to`, then a half-close passed on. `last` is the time of the
/// latest traffic either way, so that a quiet direction does not end a busy tunnel.
async fn relay_bytes(
    from: &Sock,
    to: &Sock,
    buf: &mut InBuf,
    idle: Duration,
    last: &Cell<Instant>,
) -> io::Result<()> {
    let r = relay_until_eof(from, to, buf, idle, last).await;
    if r.is_err() {
        // A reset or an idle tunnel ends both directions at once; the other one is woken by this.
        from.shutdown_both();
        to.shutdown_both();
    }
    r
}

async fn relay_until_eof(
    from: &Sock,
    to: &Sock,
    buf: &mut InBuf,
    idle: Duration,
    last: &Cell<Instant>,
) -> io::Result<()> {
    loop {
        if !buf.is_empty() {
            to.write_all(buf.data()).await?;
            buf.consume(buf.data().len());
            last.set(Instant::now());
        }
        let wait = idle.saturating_sub(last.get().elapsed());
        match timeout(wait, buf.read_from(from)).await {
            Ok(0) => {
                to.shutdown_write();
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if last.get().elapsed() >= idle {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

enum Either<L, R> {
    Left(L),
    Right(R),
}

/// Polls both futures; the first of `left` finishing (it only ever finishes by failing) or `right`
/// finishing wins, and the other is dropped.
async fn first_failure<L, R>(
    left: impl Future<Output = L>,
    right: impl Future<Output = R>,
) -> Either<L, R> {
    let mut left = pin!(left);
    let mut right = pin!(right);
    future::poll_fn(|cx| {
        if let Poll::Ready(r) = right.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(r));
        }
        if let Poll::Ready(l) = left.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(l));
        }
        Poll::Pending
    })
    .await
}
