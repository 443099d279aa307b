//! The per-connection flow: read a request head → route it → get a backend connection → stream the
//! request body and the response concurrently → next request, or a byte tunnel after `101`.
//!
//! All HTTP knowledge comes from the sans-IO [`crate::h1`] core; this file only moves bytes and
//! decides what to do when a socket fails or times out.

use std::cell::{Cell, RefCell};
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

use crate::config::Config;
use crate::h1::{self, BodyFramer, ForwardOptions, Framing, RequestHead, ResponseHead};
use crate::health::{Admin, Cause, Gossip, Health};
use crate::metrics::ShardStats;
use crate::net::{BufPool, InBuf, Sock, timeout};
use crate::pool::Pool;
use crate::route::{Decision, Router};
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
    pub id: usize,
    shards: usize,
    cfg: Arc<Config>,
    limits: h1::Limits,
    router: RefCell<Router>,
    health: RefCell<Health>,
    pool: RefCell<Pool>,
    stats: Arc<ShardStats>,
    admin: Arc<AdminTable>,
    admin_seen: Cell<u64>,
    /// Read buffers for every connection of this shard.
    bufs: Rc<BufPool>,
    /// Channels to the other shards (none with a single shard).
    peers: RefCell<Option<Rc<Senders<Gossip>>>>,
}

/// What the client connection does after a request.
enum Next {
    KeepAlive,
    Close,
}

/// Why an exchange with a backend ended early.
enum Failure {
    /// The connection died before any response byte: a safe request may be sent again.
    Stale,
    /// Nothing has reached the client yet: answer with this status and close.
    Answer(u16),
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

impl Shard {
    pub fn new(
        id: usize,
        shards: usize,
        cfg: Arc<Config>,
        stats: Arc<ShardStats>,
        admin: Arc<AdminTable>,
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
            cfg,
            stats,
            admin,
            admin_seen: Cell::new(0),
            peers: RefCell::new(None),
        }
    }

    pub fn set_peers(&self, peers: Senders<Gossip>) {
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
            Gossip::Up { backend } => (backend, true),
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
                    "wtgate: backend {} ({}) up -> down: {cause}",
                    b.prefix, b.addr
                ),
                Gossip::Up { .. } => eprintln!(
                    "wtgate: backend {} ({}) down -> up: {} good checks",
                    b.prefix, b.addr, self.cfg.rise
                ),
            }
        }
        if local && let Some(peers) = self.peers.borrow().as_ref() {
            for peer in (0..self.shards).filter(|&p| p != self.id) {
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
        let addr = cfg.backends[backend].addr;
        loop {
            glommio::timer::sleep(cfg.check_interval).await;
            let ok = crate::check::probe(addr, cfg.check_of(backend), cfg.timeouts.connect).await;
            if !ok {
                ShardStats::count(&shard.stats.backends[backend].checks_failed);
            }
            let flip = shard
                .health
                .borrow_mut()
                .check_result(backend, ok, cfg.rise, cfg.fall);
            match flip {
                Some(true) => shard.on_gossip(Gossip::Up { backend }, true),
                Some(false) => shard.on_gossip(
                    Gossip::Down {
                        backend,
                        cause: Cause::ChecksFailed,
                    },
                    true,
                ),
                None => {}
            }
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

    /// Closes pooled connections before the backends' own idle timeouts do, and hands memory that
    /// a burst of connections left behind back to the system.
    pub async fn sweep_pool(shard: Rc<Shard>) {
        let every = (shard.cfg.timeouts.pool_idle / 4).max(Duration::from_millis(250));
        loop {
            glommio::timer::sleep(every).await;
            shard.pool.borrow_mut().expire(Instant::now());
            if shard.bufs.take_overflowed() {
                // Freed buffers sit in the middle of malloc's heap, where free() never unmaps them.
                // SAFETY: malloc_trim only releases free memory; it has no preconditions.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        }
    }

    pub fn log_accept_error(&self, e: &glommio::GlommioError<()>) {
        eprintln!("wtgate[{}]: accept failed: {e}", self.id);
    }

    /// Serves one client connection until it closes.
    pub async fn serve(&self, stream: TcpStream) {
        let peer = stream.peer_addr().ok();
        let _ = stream.set_nodelay(true);
        let client = Sock::new(stream);
        let peer_ip = peer.map(|p| p.ip().to_canonical().to_string());
        let mut cbuf = InBuf::new(self.bufs.clone());
        let mut bbuf = InBuf::new(self.bufs.clone());
        let mut first = true;
        loop {
            let head = match self.read_request_head(&client, &mut cbuf, first).await {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(status) => {
                    self.answer(&client, status, true).await;
                    break;
                }
            };
            first = false;
            match self
                .handle(&client, &mut cbuf, &mut bbuf, head, peer_ip.as_deref())
                .await
            {
                Next::KeepAlive => bbuf.release(),
                Next::Close => break,
            }
        }
        client.shutdown_both();
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

    /// One request, from its parsed head to the end of its response.
    async fn handle(
        &self,
        client: &Sock,
        cbuf: &mut InBuf,
        bbuf: &mut InBuf,
        head: RequestHead,
        peer_ip: Option<&str>,
    ) -> Next {
        let target = cbuf.data()[head.target.clone()].to_vec();
        let mut fwd = Vec::with_capacity(head.head_len + 128);
        let opts = ForwardOptions {
            forwarded_for: if self.cfg.forwarded_headers {
                peer_ip
            } else {
                None
            },
            proto: "http",
            // Nothing configures trusted peers yet, so every peer's X-Forwarded-* is replaced.
            trusted: false,
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

        let mut use_pool = true;
        let mut pinned: Option<usize> = None;
        let mut exclude: Option<usize> = None;
        let mut resends = 0;
        loop {
            let Some((backend, sock, pooled)) =
                self.connect(&target, use_pool, pinned, exclude).await
            else {
                // Nothing usable. A request body we have not read would poison the connection.
                let close = !head.keep_alive || !framer.is_done();
                self.answer(client, 503, close).await;
                return if close { Next::Close } else { Next::KeepAlive };
            };
            let result = self
                .exchange(client, &sock, cbuf, bbuf, &head, &fwd, &mut framer)
                .await;
            match result {
                Ok(ResponseEnd::Complete(done)) => {
                    if done.backend_reusable {
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
                    // have answered, and the request is safe to send again. A stale pooled
                    // connection is retried fresh on the same backend; a fresh one that died
                    // (the backend crashing or stopping) goes elsewhere.
                    sock.shutdown_both();
                    resends += 1;
                    use_pool = false;
                    if pooled {
                        pinned = Some(backend);
                    } else {
                        exclude = Some(backend);
                    }
                    bbuf.consume(bbuf.data().len());
                }
                Err(Failure::Stale) => {
                    sock.shutdown_both();
                    self.answer(client, 502, true).await;
                    return Next::Close;
                }
                Err(Failure::Answer(status)) => {
                    sock.shutdown_both();
                    self.answer(client, status, true).await;
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
    /// up to `retries` times; a failed backend is marked down (on every shard), so the next try
    /// goes elsewhere. `pinned`: a backend to try first on a fresh connection (its pooled one went
    /// stale); `exclude`: a backend that just failed this request.
    async fn connect(
        &self,
        target: &[u8],
        use_pool: bool,
        mut pinned: Option<usize>,
        mut exclude: Option<usize>,
    ) -> Option<(usize, Sock, bool)> {
        self.refresh_admin();
        for _ in 0..self.cfg.retries {
            let backend = match pinned.take() {
                Some(b) => b,
                None => {
                    let decision = self.router.borrow_mut().route(
                        target,
                        self.health.borrow().statuses(),
                        exclude,
                    );
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
                    decision.backend()?
                }
            };
            ShardStats::count(&self.stats.backends[backend].requests);
            if use_pool && let Some(sock) = self.pool.borrow_mut().take(backend, Instant::now()) {
                return Some((backend, sock, true));
            }
            let addr = self.cfg.backends[backend].addr;
            match connect_to(addr, self.cfg.timeouts.connect).await {
                Ok(sock) => return Some((backend, sock, false)),
                Err(e) => {
                    ShardStats::count(&self.stats.backends[backend].connect_failures);
                    let cause = Cause::ConnectFailed {
                        shard: self.id,
                        timed_out: e.kind() == io::ErrorKind::TimedOut,
                    };
                    self.on_gossip(Gossip::Down { backend, cause }, true);
                    exclude = Some(backend);
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
                Failure::Answer(502)
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
                    Failure::Answer(502)
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
            .map_err(|_| Failure::Answer(502))?;
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
                    Ok(None) if bbuf.is_full() => return Err(Failure::Answer(502)),
                    Ok(None) => {}
                    Err(_) => return Err(Failure::Answer(502)),
                }
            }
            match timeout(self.cfg.timeouts.server, bbuf.read_from(backend)).await {
                Ok(n) if n > 0 => received = true,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(Failure::Answer(504));
                }
                // Closed or reset before answering: on a pooled connection that is the backend's
                // idle close racing our request; on a fresh one a dying backend. Either way a
                // safe request may survive by a resend.
                _ if !received => return Err(Failure::Stale),
                _ => return Err(Failure::Answer(502)),
            }
        }
    }

    /// Relays bytes both ways after `101 Switching Protocols` until both sides have closed.
    async fn tunnel(&self, client: &Sock, backend: &Sock, cbuf: &mut InBuf, bbuf: &mut InBuf) {
        let idle = self.cfg.timeouts.tunnel;
        let last = Cell::new(Instant::now());
        let up = relay_bytes(client, backend, cbuf, idle, &last);
        let down = relay_bytes(backend, client, bbuf, idle, &last);
        let _ = future::zip(up, down).await;
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
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Failure::Answer(408),
                Err(_) => return Failure::Abort,
            }
        }
        let adv = match framer.advance(cbuf.data()) {
            Ok(adv) => adv,
            Err(_) => return Failure::Answer(400),
        };
        if timeout(t.server, backend.write_all(&cbuf.data()[..adv.consumed]))
            .await
            .is_err()
        {
            return Failure::Answer(502);
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
