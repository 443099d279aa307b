//! One shard's state: its router, its own copy of every backend's health and admin state, its pool
//! of backend connections, its read buffers, its counters, and its channels to the other shards.
//!
//! A shard is one thread; everything here is used from that thread only (`Cell`/`RefCell`), and
//! what other shards need to know travels as [`Gossip`] messages. The per-connection flow that
//! uses this state lives in [`crate::proxy`].
//!
//! Backends are indexed by slot (`config::reload`). A reload reaches a shard through its periodic
//! task ([`Shard::sweep_pool`], which looks every [`RELOAD_POLL`]) and is applied here, on the
//! shard's own thread: new slots get room in every table, moved and removed ones lose their
//! pooled connections, the router is rebuilt, and check loops start, restart or end. The
//! proxy-side settings (timeouts, retries, reuse, forwarded headers) are copied out of the new
//! generation ([`Shard::settings`]): each request and connection takes them as it starts using
//! them, so a reload changes them for what comes after it and not for what is under way.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::access_log::ShardLog;
use crate::config::reload::{Generation, Live, Probe};
use crate::config::{Config, ProxySettings, Reuse};
use crate::h1;
use crate::health::{AdminTable, Gossip, Health, Heard};
use crate::log::RateLimit;
use crate::metrics::{Held, ShardStats};
use crate::net::{BufPool, FreeList, Peers, PipePool, Sock};
use crate::pool::Pool;
use crate::route::{Decision, Router, find_wtd};
use crate::sessions::SessionTable;
use crate::trim::TrimHandle;

/// Read buffer per direction: large enough for any allowed head, and for body bursts.
const MIN_BUF: usize = 32 * 1024;
/// Spare read buffers a shard keeps (8 MiB at the default size): enough for the connections that
/// are busy at once, so that buffers are recycled rather than allocated per request.
const SPARE_BUFFERS: usize = 256;
/// Spare head buffers a shard keeps, and the largest one it keeps.
const SPARE_HEADS: usize = 256;
const MAX_SPARE_HEAD: usize = 64 * 1024;
/// Failure lines a shard writes per second at most.
const LOG_LINES_PER_SECOND: u32 = 10;
/// A backend with requests waiting this long for any answer gets no new sessions while another
/// backend answers (a frozen server: the kernel still accepts connections for it).
const STALL_AFTER: Duration = Duration::from_secs(1);
/// How often a shard looks for a reloaded config: a reload is in force everywhere within this.
pub const RELOAD_POLL: Duration = Duration::from_millis(200);

/// What the shard's sweeper watches of a tracked connection, instead of a timer in its task
/// (a monoio timer entry is 640 bytes, more than the rest of an idle connection's task).
#[derive(Default)]
pub struct Watch {
    /// Set while a client connection waits for its next request: a drain closes it then.
    pub idle: Cell<bool>,
    /// Closed by the sweeper once past this (its socket shut down both ways, which ends every
    /// read and write on it); `None`: no limit now. Checked every [`RELOAD_POLL`].
    pub deadline: Cell<Option<Instant>>,
}

/// A socket the shard may have to close: with its watch, if the sweeper has one.
type Tracked = (Sock, Option<Rc<Watch>>);

impl Watch {
    /// Idle, to be closed after `limit` of it.
    pub fn idle_for(&self, limit: Duration) {
        self.idle.set(true);
        self.deadline.set(Some(Instant::now() + limit));
    }

    pub fn busy(&self) {
        self.idle.set(false);
        self.deadline.set(None);
    }
}

/// What a shard shares with the engine: the counters it writes, the admin states it reads, and
/// the flag it raises when memory is worth trimming.
pub struct Shared {
    pub stats: Arc<ShardStats>,
    /// The sessions this shard routed to their owners; the engine merges the shards' tables when
    /// asked. Only this shard writes it, so its lock is never contended on the hot path.
    pub sessions: Arc<Mutex<SessionTable>>,
    pub admin: Arc<AdminTable>,
    pub trim: TrimHandle,
    /// The engine's access log, if it is on.
    pub access_log: Option<Arc<crate::access_log::Sink>>,
    /// The config in force, which reloads replace.
    pub live: Arc<Live>,
}

/// Everything one shard owns.
pub struct Shard {
    /// The shard's index: the one in its thread name, its core, its stats and its log lines.
    pub id: usize,
    shards: usize,
    /// The config the shard started with, for what a reload does not change (listeners, head
    /// limits, maxconn). Backends and the settings a reload changes are in [`Shard::generation`]
    /// (the proxy-side ones in [`Shard::settings`]); index backends by slot there, never in
    /// `cfg.backends`.
    pub cfg: Arc<Config>,
    pub limits: h1::Limits,
    /// The config in force here, and where newer ones come from.
    generation: RefCell<Arc<Generation>>,
    /// The proxy-side settings of `generation`, copied out so that a request reads them with a
    /// `Cell::get`: no borrow to hold across an await.
    settings: Cell<ProxySettings>,
    live: Arc<Live>,
    /// By slot, on the shard that checks it: bumped to end its check loop (see `check.rs`).
    check_epochs: RefCell<Vec<u64>>,
    /// The shard is stopping: check loops end.
    stopped: Cell<bool>,
    router: RefCell<Router>,
    health: RefCell<Health>,
    pool: RefCell<Pool>,
    /// Where each backend is reached: resolved at start or reload, re-resolved by its checker while
    /// checks fail (Wt servers in containers change addresses), spread with the `Up` gossip.
    addrs: RefCell<Vec<SocketAddr>>,
    pub stats: Arc<ShardStats>,
    sessions: Arc<Mutex<SessionTable>>,
    admin: Arc<AdminTable>,
    admin_seen: Cell<u64>,
    /// Read buffers for every connection of this shard.
    pub bufs: Rc<BufPool>,
    /// Pipes for tunnels that splice: a quarter of this shard's share of `maxconn` at most, as
    /// HAProxy's `maxpipes` (each two descriptors).
    pub pipes: PipePool,
    /// Buffers for the heads we write and parsed heads (their header lists), reused so that a
    /// request allocates nothing once the shard has warmed up.
    head_bufs: Spares<Vec<u8>>,
    request_heads: Spares<h1::RequestHead>,
    response_heads: Spares<h1::ResponseHead>,
    /// Channels to the other shards (none with a single shard).
    peers: RefCell<Option<Peers<Heard>>>,
    /// Every open client connection and tunnel backend, so that stopping can close them all, with
    /// a flag for the client connections that wait for their next request.
    open: RefCell<HashMap<u64, Tracked>>,
    next_open: Cell<u64>,
    /// The engine is stopping gracefully: no connection is kept alive after its request.
    draining: Cell<bool>,
    /// Requests waiting for a backend to come back are woken by this.
    came_up: crate::net::Signal,
    /// Failure lines (answers of our own, failed checks) are rate-limited per shard.
    log: RateLimit,
    /// A failing accept (EMFILE, most likely) is retried every 50 ms: said once a second.
    accept_log: RateLimit,
    trim: TrimHandle,
    /// This shard's access-log lines on their way to the writer.
    pub access_log: ShardLog,
}

impl Shard {
    pub fn new(id: usize, shards: usize, cfg: Arc<Config>, shared: Shared) -> Shard {
        let generation = shared.live.current();
        let (slots, g) = (&generation.slots, &generation.cfg);
        let n = slots.len();
        Shard {
            bufs: Rc::new(BufPool::new(
                (cfg.max_head_bytes + 1024).max(MIN_BUF),
                SPARE_BUFFERS,
            )),
            pipes: PipePool::new(
                (cfg.maxconn / 4).div_ceil(shards.max(1)).max(1),
                shared.stats.pipes.clone(),
            ),
            access_log: ShardLog::new(id, shared.access_log, shared.stats.clone()),
            id,
            shards,
            limits: h1::Limits {
                max_head_bytes: cfg.max_head_bytes,
                max_headers: cfg.max_headers,
            },
            router: RefCell::new(Router::new(slots, g.session_id_length)),
            health: RefCell::new(Health::new(n)),
            pool: RefCell::new(Pool::new(n, g.pool_size, g.timeouts.pool_idle)),
            addrs: RefCell::new(slots.iter().map(|s| s.backend.addr).collect()),
            check_epochs: RefCell::new(vec![0; n]),
            stopped: Cell::new(false),
            settings: Cell::new(g.proxy_settings()),
            generation: RefCell::new(generation.clone()),
            live: shared.live,
            cfg,
            stats: shared.stats,
            sessions: shared.sessions,
            admin: shared.admin,
            admin_seen: Cell::new(0),
            head_bufs: Spares::default(),
            request_heads: Spares::default(),
            response_heads: Spares::default(),
            peers: RefCell::new(None),
            open: RefCell::new(HashMap::new()),
            next_open: Cell::new(0),
            draining: Cell::new(false),
            came_up: crate::net::Signal::default(),
            log: RateLimit::new(LOG_LINES_PER_SECOND, Duration::from_secs(1)),
            accept_log: RateLimit::new(1, Duration::from_secs(1)),
            trim: shared.trim,
        }
    }

    pub fn set_peers(&self, peers: Peers<Heard>) {
        *self.peers.borrow_mut() = Some(peers);
    }

    /// The shard that actively checks `backend`, and logs its state changes.
    pub fn checker_of(&self, backend: usize) -> usize {
        backend % self.shards
    }

    /// The config in force on this shard.
    /// What this shard's `tls` listeners serve now (the generation in force's certificates).
    pub fn tls(&self) -> Option<Arc<crate::tls::Tls>> {
        self.generation.borrow().tls.clone()
    }

    pub fn generation(&self) -> Arc<Generation> {
        self.generation.borrow().clone()
    }

    /// The proxy-side settings in force: a request or connection copies them as it starts using
    /// them and keeps its copy, so that a reload changes them for the ones that start after it.
    pub fn settings(&self) -> ProxySettings {
        self.settings.get()
    }

    /// Whether a client at `ip` is a trusted proxy (`--trust-forwarded-from`), as the generation
    /// in force says.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.generation.borrow().cfg.trusts(ip)
    }

    /// The prefix of the backend in slot `backend`, for messages.
    pub fn prefix(&self, backend: usize) -> String {
        let g = self.generation.borrow();
        g.slots
            .get(backend)
            .map_or_else(|| format!("#{backend}"), |s| s.backend.prefix.clone())
    }

    /// Runs `f` with the prefix of the backend in slot `backend` (borrowed: the access log writes
    /// one per request and must not allocate for it).
    pub fn with_prefix<R>(&self, backend: usize, f: impl FnOnce(&str) -> R) -> R {
        let g = self.generation.borrow();
        f(g.slots
            .get(backend)
            .map_or("-", |s| s.backend.prefix.as_str()))
    }

    /// Applies a state change to this shard's view; `local`: seen here, so tell the others.
    pub fn on_gossip(&self, msg: Gossip, local: bool) {
        let backend = msg.backend();
        // From a shard that applied a reload this one has not yet: the next change, or this
        // shard's own connects and checks, will tell.
        if backend >= self.health.borrow().len() {
            return;
        }
        if let Gossip::Moved { addr, .. } = msg {
            self.moved_to(backend, addr);
        } else if !self.health.borrow_mut().apply(msg) {
            return;
        }
        let (backend, up) = match msg {
            Gossip::Down { backend, .. } => (backend, false),
            Gossip::Up { backend, addr } => {
                self.addrs.borrow_mut()[backend] = addr;
                self.came_up.fire();
                (backend, true)
            }
            Gossip::Moved { .. } => {
                if local {
                    self.announce(msg);
                }
                return;
            }
        };
        if !up {
            // Connections to a dead backend would only fail one by one; drop them now.
            let mut pool = self.pool.borrow_mut();
            pool.clear(backend);
            self.pool_gauge(&pool, backend);
        }
        self.stats.backends[backend].up.store(up, Ordering::Relaxed);
        if self.checker_of(backend) == self.id {
            self.log_change(msg);
        }
        // A shard that has not applied the latest reload yet may be telling about a backend's old
        // address (a connect there just failed): shards that have applied it must not hear it.
        // What is lost here, the checker or the shards' own connects find out again.
        if local {
            self.announce(msg);
        }
    }

    /// `backend`'s host name now resolves to `addr`: connects go there, pooled connections to the
    /// old address close, and one taken before is not pooled again ([`Held::moved`]).
    fn moved_to(&self, backend: usize, addr: SocketAddr) {
        let old = std::mem::replace(&mut self.addrs.borrow_mut()[backend], addr);
        if old != addr {
            let mut pool = self.pool.borrow_mut();
            pool.close(backend);
            self.pool_gauge(&pool, backend);
            self.stats.backends[backend]
                .moves
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells the other shards `msg`, unless this shard has a reload to apply (see `on_gossip`).
    /// A check loop also tells its first good check this way, changed or not (see `check.rs`).
    pub fn announce(&self, msg: Gossip) {
        if self.live.number() == self.generation.borrow().number {
            self.tell_others(msg);
        }
    }

    fn log_change(&self, msg: Gossip) {
        let id = self.id;
        match msg {
            Gossip::Down { backend, cause } => {
                let (prefix, addr) = (self.prefix(backend), self.addr_of(backend));
                eprintln!("wtgate[{id}]: backend {prefix} ({addr}) up -> down: {cause}");
            }
            Gossip::Up { backend, addr } => eprintln!(
                "wtgate[{id}]: backend {} ({addr}) down -> up: {} good checks",
                self.prefix(backend),
                self.generation.borrow().cfg.rise
            ),
            // Said by `re_resolve`, with the name.
            Gossip::Moved { .. } => {}
        }
    }

    fn tell_others(&self, msg: Gossip) {
        if let Some(peers) = self.peers.borrow().as_ref() {
            let generation = self.generation.borrow().number;
            peers.broadcast(Heard { generation, msg });
        }
    }

    /// A state change from another shard. One sent before this shard's config generation (a
    /// reload applied here since) may be about a backend's old address: the checker and this
    /// shard's own connects will tell about the new one.
    pub fn on_heard(&self, heard: Heard) {
        if heard.generation >= self.generation.borrow().number {
            self.on_gossip(heard.msg, false);
        }
    }

    /// Where `backend` is reached now.
    pub fn addr_of(&self, backend: usize) -> SocketAddr {
        self.addrs.borrow()[backend]
    }

    pub fn is_up(&self, backend: usize) -> bool {
        self.health.borrow().statuses()[backend].up
    }

    /// Counts one active check of `backend`; `Some(up)` when `rise`/`fall` now call for a change.
    pub fn check_result(&self, backend: usize, ok: bool) -> Option<bool> {
        let (rise, fall) = {
            let g = self.generation.borrow();
            (g.cfg.rise, g.cfg.fall)
        };
        self.health
            .borrow_mut()
            .check_result(backend, ok, rise, fall)
    }

    /// Looks a backend's host name up again (off the shard, on a thread of its own), so the
    /// next check tries where it is now. Addresses written as IPs are left alone.
    pub async fn re_resolve(&self, backend: usize) {
        let b = self.generation.borrow().slots[backend].backend.clone();
        let host = b.host.clone();
        if host.parse::<SocketAddr>().is_ok() {
            return;
        }
        let found = crate::net::spawn_blocking(move || crate::config::resolve_backend(&host))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        // A reload applied meanwhile may have given the backend another host: that one stands.
        let moved = {
            let slot = &self.generation.borrow().slots[backend];
            slot.removed || slot.backend.host != b.host
        };
        if moved {
            return;
        }
        let old = self.addr_of(backend);
        match found {
            Ok(new) if new != old => {
                let (id, prefix, host) = (self.id, &b.prefix, &b.host);
                // Every shard at once: one still connecting to the old address would find it
                // refused and mark the backend down everywhere.
                self.on_gossip(Gossip::Moved { backend, addr: new }, true);
                eprintln!(
                    "wtgate[{id}]: backend {prefix} ({host}) now resolves to {new}, was {old}"
                );
            }
            Ok(_) => {}
            Err(why) => self.log_failure(format_args!("backend {}: {why}", b.prefix)),
        }
    }

    /// Routes a request-target with this shard's view of the backends (admin states refreshed
    /// first), never to `exclude`; counts redispatches and requests nobody can take.
    pub fn route(&self, target: &[u8], exclude: Option<usize>) -> Decision {
        self.refresh_admin();
        let mut health = self.health.borrow_mut();
        // The clock is read only when a backend is down and a try there is weighed.
        let now = std::cell::OnceCell::new();
        let now = || *now.get_or_init(Instant::now);
        let decision = {
            let h = &*health;
            let may_try = |b: usize| h.may_try(b, now());
            let mut router = self.router.borrow_mut();
            router.route(target, h.statuses(), exclude, &may_try)
        };
        let counters = &self.stats.backends;
        match decision {
            Decision::Owner(b) => ShardStats::count(&counters[b].affinity_hits),
            Decision::OwnerRetry(b) => ShardStats::count(&counters[b].owner_retries),
            Decision::Fallback { to, .. } => ShardStats::count(&counters[to].fallbacks),
            Decision::NoBackend | Decision::Balanced(_) | Decision::Redispatched { .. } => {}
        }
        if let Some((owner, _)) = decision.moved() {
            ShardStats::count(&counters[owner].redispatched);
        }
        if let (true, Some(b)) = (decision.is_long_shot(), decision.backend()) {
            let every = self.generation.borrow().cfg.down_interval;
            health.tried(b, now(), every);
        }
        decision
    }

    /// A request on a connection to `backend` timed out or saw it close unanswered: a mark down
    /// that an answer made stale holds again ([`crate::health::BackendStatus::alive`]).
    pub fn unanswered(&self, backend: usize) {
        let mut health = self.health.borrow_mut();
        if backend < health.len() {
            health.unanswered(backend);
        }
    }

    /// Marks the backends whose requests have waited [`STALL_AFTER`] for any answer, and says so
    /// in the stats.
    fn find_stalls(&self) {
        let mut health = self.health.borrow_mut();
        health.find_stalls(Instant::now(), STALL_AFTER);
        for (s, c) in health.statuses().iter().zip(&self.stats.backends) {
            c.stalled.store(s.stalled, Ordering::Relaxed);
        }
    }

    /// A request went out to `backend` and waits for its answer ([`Health::sent`]).
    pub fn request_sent(&self, backend: usize, at: Instant) {
        let mut health = self.health.borrow_mut();
        if backend < health.len() {
            health.sent(backend, at);
        }
    }

    /// A request sent to `backend` got its first response byte at `at` (which also tells that a
    /// backend marked down answers again), or ended without one.
    pub fn request_answered(&self, backend: usize, at: Option<Instant>) {
        let mut health = self.health.borrow_mut();
        if backend < health.len() {
            health.replied(backend, at);
        }
    }

    /// Waits until a backend may have come back (one came up, or `down_interval` passed, when
    /// this shard may try a down one again), or until `deadline`; false once it has passed.
    pub async fn wait_for_backend(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let every = self.generation.borrow().cfg.down_interval;
        let nap = (deadline - now).min(every);
        let came_up = self.came_up.next();
        futures_lite::future::or(came_up, crate::net::sleep(nap)).await;
        true
    }

    /// Copies the operators' admin states if they changed since the last request.
    fn refresh_admin(&self) {
        let generation = self.admin.generation.load(Ordering::Acquire);
        if generation != self.admin_seen.get() {
            let states = self.admin.states.lock().unwrap_or_else(|e| e.into_inner());
            let mut health = self.health.borrow_mut();
            // The engine adds a slot's state before any shard has room for it.
            for (i, a) in states.iter().enumerate().take(health.len()) {
                health.set_admin(i, *a);
            }
            self.admin_seen.set(generation);
        }
    }

    /// A live pooled connection to `backend`, if there is one.
    pub fn pooled(&self, backend: usize) -> Option<Sock> {
        let mut pool = self.pool.borrow_mut();
        let mut stray = |bytes: &[u8]| self.stray(backend, bytes, "while it sat in the pool");
        let sock = pool.take(backend, Instant::now(), &mut stray);
        self.pool_gauge(&pool, backend);
        sock
    }

    /// A connection to `backend` closed because the backend sent bytes (`first` are the first of
    /// them) with no request outstanding, `when` says when: counted, and logged for the operator
    /// to find the page or handler at fault. The bytes go nowhere else.
    pub fn stray(&self, backend: usize, first: &[u8], when: &str) {
        ShardStats::count(&self.stats.backends[backend].stray_closes);
        let addr = self.addrs.borrow().get(backend).copied();
        let Some(addr) = addr else { return };
        self.with_prefix(backend, |prefix| {
            self.log_failure(format_args!(
                "backend {prefix} ({addr}): closed a connection that sent bytes {when}, with no \
                 request outstanding (never relayed): \"{}\"",
                first.escape_ascii()
            ))
        });
    }

    /// Parks a backend connection whose last response ended cleanly; `in_use` is what counted
    /// it as in use. A connection to a backend that a reload removed, or moved since it was taken,
    /// is closed instead: the pool would hand it out for where the backend no longer is.
    pub fn park(&self, sock: Sock, in_use: &Held) {
        let backend = in_use.backend();
        if in_use.moved() || self.health.borrow().statuses()[backend].removed {
            sock.shutdown_both();
            return;
        }
        let mut pool = self.pool.borrow_mut();
        pool.put(backend, sock, Instant::now());
        self.pool_gauge(&pool, backend);
    }

    /// Publishes the pool's size for `backend` (a store, not an add: the pool drops connections
    /// in several places, and its own count is the truth).
    fn pool_gauge(&self, pool: &Pool, backend: usize) {
        let idle = pool.idle_count(backend) as u64;
        self.stats.backends[backend]
            .pooled
            .store(idle, Ordering::Relaxed);
    }

    fn pool_gauges(&self, pool: &Pool) {
        for b in 0..pool.backends() {
            self.pool_gauge(pool, b);
        }
    }

    /// Frees the spare heads and head buffers that no request needed since the last call.
    fn decay_spares(&self) -> bool {
        let heads = self.request_heads.decay() | self.response_heads.decay();
        heads | self.head_bufs.decay()
    }

    /// An empty buffer to write a head into; give it back with [`Shard::give_head_buf`].
    pub fn take_head_buf(&self) -> Vec<u8> {
        self.head_bufs.take()
    }

    pub fn give_head_buf(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= MAX_SPARE_HEAD {
            buf.clear();
            self.head_bufs.give(buf);
        }
    }

    /// A request head to parse into (`h1::parse_request_into`), with room from earlier requests.
    pub fn take_request_head(&self) -> h1::RequestHead {
        self.request_heads.take()
    }

    pub fn give_request_head(&self, head: h1::RequestHead) {
        self.request_heads.give(head);
    }

    pub fn take_response_head(&self) -> h1::ResponseHead {
        self.response_heads.take()
    }

    pub fn give_response_head(&self, head: h1::ResponseHead) {
        self.response_heads.give(head);
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, SessionTable> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The owner of the session in `target` answered `client`'s request with `status` (relayed
    /// whole): a sighting if a `2xx`, see [`crate::sessions`] for what makes a session live.
    pub fn session_seen(
        &self,
        target: &[u8],
        owner: usize,
        client: Option<SocketAddr>,
        status: u16,
    ) {
        if let Some(id) = find_wtd(target) {
            let client = crate::sessions::client_key(client.map(|c| c.ip()));
            let now = Instant::now();
            self.sessions().answered(id, owner, client, status, now);
        }
    }

    /// A WebSocket tunnel of the session in `target` opened (`open`) or closed.
    pub fn session_tunnel(&self, target: &[u8], owner: usize, open: bool) {
        if let Some(id) = find_wtd(target) {
            let (mut sessions, now) = (self.sessions(), Instant::now());
            if open {
                sessions.tunnel_opened(id, owner, now);
            } else {
                sessions.tunnel_closed(id, now);
            }
        }
    }

    /// Writes a failure line to stderr unless too many were written this second.
    pub fn log_failure(&self, line: std::fmt::Arguments) {
        self.log_within(&self.log, line);
    }

    pub fn log_accept_error(&self, e: &dyn std::fmt::Display) {
        self.log_within(&self.accept_log, format_args!("accept failed: {e}"));
    }

    /// Writes `line` to stderr if `limit` allows it, saying how many were left out before it.
    fn log_within(&self, limit: &RateLimit, line: std::fmt::Arguments) {
        if let Some(left_out) = limit.allow(Instant::now()) {
            let note = crate::log::suppressed_note(left_out);
            eprintln!("wtgate[{}]: {line}{note}", self.id);
        }
    }

    /// The shard's periodic task: applies a reloaded config within [`RELOAD_POLL`]; watches pooled
    /// connections as often ([`Pool::watch`]) and closes them before the backends' own idle
    /// timeouts do; and asks for memory that a burst
    /// of connections left behind to be handed back to the system.
    pub async fn sweep_pool(shard: Rc<Shard>) {
        let mut swept = Instant::now();
        loop {
            crate::net::sleep(RELOAD_POLL).await;
            if shard.live.number() != shard.generation.borrow().number {
                shard.apply_reload();
            }
            let mut stray =
                |b: usize, bytes: &[u8]| shard.stray(b, bytes, "while it sat in the pool");
            shard.pool.borrow_mut().watch(&mut stray);
            shard.find_stalls();
            shard.expire_watched(Instant::now());
            // Spares a burst left that no request needed since the last turn go back, and the
            // memory to the system: an idle proxy shrinks back after a burst.
            let decayed = shard.bufs.decay() | shard.decay_spares();
            if shard.bufs.take_overflowed() || decayed {
                shard.trim.request();
            }
            let g = shard.generation();
            let every = (g.cfg.timeouts.pool_idle / 4).max(Duration::from_millis(250));
            let now = Instant::now();
            if now.duration_since(swept) < every {
                continue;
            }
            swept = now;
            let mut pool = shard.pool.borrow_mut();
            pool.expire(now);
            shard.pool_gauges(&pool);
            drop(pool);
            shard.sessions().expire(now, g.cfg.session_idle);
        }
    }

    /// Registers a socket for `close_all` until [`Shard::untrack`]; `watch`: when the sweeper
    /// closes it (its deadline), and for a client connection whether it waits for its next
    /// request, so that a drain closes it.
    pub fn track(&self, sock: &Sock, watch: Option<Rc<Watch>>) -> u64 {
        let key = self.next_open.get();
        self.next_open.set(key + 1);
        self.open.borrow_mut().insert(key, (sock.clone(), watch));
        key
    }

    /// Closes the tracked sockets whose deadline has passed: all of them that share a watch (a
    /// tunnel's two sockets), then clears those deadlines.
    fn expire_watched(&self, now: Instant) {
        let open = self.open.borrow();
        let expired = |w: &Option<Rc<Watch>>| {
            w.as_ref()
                .is_some_and(|w| w.deadline.get().is_some_and(|d| d <= now))
        };
        let mut any = false;
        for (sock, watch) in open.values().filter(|(_, w)| expired(w)) {
            sock.shutdown_both();
            any |= watch.is_some();
        }
        if any {
            for (_, watch) in open.values().filter(|(_, w)| expired(w)) {
                if let Some(w) = watch {
                    w.deadline.set(None);
                }
            }
        }
    }

    pub fn untrack(&self, key: u64) {
        self.open.borrow_mut().remove(&key);
    }

    /// Closes every client connection, tunnel backend and pooled backend connection of this
    /// shard: the engine is stopping. Each connection's task then sees its socket end and finishes.
    pub fn close_all(&self) {
        self.stopped.set(true);
        for (sock, _) in self.open.borrow().values() {
            sock.shutdown_both();
        }
        self.access_log.flush();
        let mut pool = self.pool.borrow_mut();
        pool.clear_all();
        self.pool_gauges(&pool);
    }

    /// A graceful stop begins: client connections waiting for a request are closed, the others
    /// close after the request they carry; pooled backend connections are closed.
    pub fn begin_drain(&self) {
        self.draining.set(true);
        for (sock, watch) in self.open.borrow().values() {
            if watch.as_ref().is_some_and(|w| w.idle.get()) {
                sock.shutdown_both();
            }
        }
        self.pool.borrow_mut().clear_all();
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }
}

/// Reloads, on the shard's own thread.
impl Shard {
    /// Puts the generation in force (`Live`) into effect on this shard.
    fn apply_reload(self: &Rc<Self>) {
        let new = self.live.current();
        let old = self.generation.replace(new.clone());
        self.settings.set(new.cfg.proxy_settings());
        self.apply_slots(&old, &new);
        *self.router.borrow_mut() = Router::new(&new.slots, new.cfg.session_id_length);
        self.sessions().set_cap(new.cfg.max_sessions);
        // New slots take their admin states at the next routing decision.
        self.admin_seen.set(u64::MAX);
        self.restart_checks(&old, &new);
        self.live.applied(self.id, new.number);
    }

    /// Room for new slots in every table. A backend that is new, back, or at another address is
    /// a server not seen before: up until shown otherwise (as every backend is at start), and
    /// no pooled connection to where it was is kept; nor is one to a removed backend.
    fn apply_slots(&self, old: &Generation, new: &Generation) {
        let n = new.slots.len();
        let (mut health, mut pool) = (self.health.borrow_mut(), self.pool.borrow_mut());
        let mut addrs = self.addrs.borrow_mut();
        health.grow(n);
        pool.grow(n);
        pool.set_limits(new.cfg.pool_size, new.cfg.timeouts.pool_idle);
        if new.cfg.reuse == Reuse::Never {
            // No request takes a pooled connection any more: close them now, not as they idle out.
            pool.clear_all();
        }
        for (i, slot) in new.slots.iter().enumerate() {
            let b = &slot.backend;
            let fresh = old.slots.get(i).is_none_or(|o| {
                (o.removed && !slot.removed) || o.backend.addr != b.addr || o.backend.host != b.host
            });
            health.set_removed(i, slot.removed);
            if i >= addrs.len() {
                addrs.push(b.addr);
            }
            if fresh {
                addrs[i] = b.addr;
                health.mark_up(i);
                let counters = &self.stats.backends[i];
                counters.up.store(true, Ordering::Relaxed);
                counters.moves.fetch_add(1, Ordering::Relaxed);
            }
            if fresh || slot.removed {
                pool.close(i);
            }
        }
        self.pool_gauges(&pool);
    }

    /// On the shard that checks each backend: a backend whose check changed (address, kind,
    /// interval, time limit) gets a fresh check loop, with a fresh count toward `rise`/`fall`; a
    /// removed one's loop ends at its next turn.
    fn restart_checks(self: &Rc<Self>, old: &Generation, new: &Generation) {
        let mut start = Vec::new();
        {
            let mut epochs = self.check_epochs.borrow_mut();
            epochs.resize(new.slots.len(), 0);
            for i in (0..new.slots.len()).filter(|&i| self.checker_of(i) == self.id) {
                let probe = new.probe(i);
                if probe == old.probe(i) {
                    continue;
                }
                epochs[i] += 1;
                if probe.is_some() {
                    self.health.borrow_mut().reset_streak(i);
                    start.push((i, epochs[i]));
                }
            }
        }
        // Spawned with no borrow held: a runtime may well poll a new task at once.
        for (i, epoch) in start {
            crate::net::spawn(crate::check::check_loop_from(self.clone(), i, epoch));
        }
    }

    /// What the check loop of `backend` started at `epoch` is to do next; `None` when it is to
    /// end: a reload removed the backend or restarted its checks, or the shard is stopping.
    pub fn probe_of(&self, backend: usize, epoch: u64) -> Option<Probe> {
        let current = self.check_epochs.borrow().get(backend) == Some(&epoch);
        if self.stopped.get() || !current {
            return None;
        }
        self.generation.borrow().probe(backend)
    }
}

/// Values a shard reuses instead of allocating them per request: what they hold on the heap (a
/// head's header list, a buffer's room) stays with them.
#[derive(Default)]
struct Spares<T>(FreeList<T>);

impl<T: Default> Spares<T> {
    fn take(&self) -> T {
        self.0.take().unwrap_or_default()
    }

    /// Frees the spares no request needed since the last call; true if any were.
    fn decay(&self) -> bool {
        self.0.decay()
    }

    fn give(&self, value: T) {
        self.0.give(value, SPARE_HEADS);
    }
}
