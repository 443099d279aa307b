//! The engine: one monoio runtime (its own io_uring ring) per core, each pinned, each with its own `SO_REUSEPORT`
//! listener on every listen address, so the kernel spreads connections and shards share nothing.
//!
//! - [`listen`]: the listening sockets, bound here on the calling thread before any shard starts,
//!   so a bind error is reported at once;
//! - [`shard_thread`]: one shard's thread, from pinning to closing what it owns;
//! - [`limits`]: the process limits io_uring and many connections need;
//! - [`permits`]: a shard's share of `--maxconn`, which also tells a stopping shard when every
//!   connection has ended.
//!
//! With `Config::admin` set, the admin listener ([`crate::admin`]) is bound with the listeners and
//! started once every shard accepts; it reads the engine through an [`EngineHandle`].
//!
//! [`reload`]: a new config (SIGHUP, `POST /reload`) put in force on every shard while they run.

mod limits;
mod listen;
pub(crate) mod permits;
pub mod reload;
mod shard_thread;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::access_log::{AccessLog, Reopen};
use crate::config::reload::{Generation, Live};
use crate::config::{Config, ConfigError};
use crate::health::{Admin, AdminTable, Heard};
use crate::metrics::{LatencySummary, ShardStats, Stats};
use crate::sessions::{self, BackendSessions, SessionTable};
use crate::shard::Shared;
use crate::trim::Trimmer;

/// How long `Engine::start` waits for every shard to be accepting.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Room for state changes in flight between two shards; a full channel makes the sender wait.
const GOSSIP_CHANNEL: usize = 1024;

/// Why the engine could not start.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    /// A certificate that cannot be served: one line per problem, each naming its file.
    Tls(Vec<String>),
    Bind {
        addr: SocketAddr,
        err: io::Error,
    },
    Memlock {
        have: u64,
        need: u64,
    },
    /// Duplicating a listening socket for a shard, or starting its thread, failed.
    Thread(io::Error),
    /// A shard's io_uring runtime could not be created, or could not take its listeners.
    Executor(io::Error),
    /// A shard's thread ended before it was accepting.
    ShardExited,
    /// Some shard was not accepting after this long.
    NotReady(Duration),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Tls(lines) => f.write_str(&lines.join("\n")),
            StartError::Bind { addr, err } => {
                let hint = match err.kind() {
                    io::ErrorKind::AddrInUse => ": another process listens there (ss -ltnp)",
                    io::ErrorKind::PermissionDenied => {
                        ": ports below 1024 need root or CAP_NET_BIND_SERVICE"
                    }
                    io::ErrorKind::AddrNotAvailable => ": no local interface has that address",
                    _ => "",
                };
                write!(f, "cannot listen on {addr}: {err}{hint}")
            }
            StartError::Memlock { have, need } => write!(
                f,
                "io_uring needs {} KiB of locked memory but RLIMIT_MEMLOCK is {} KiB and could not \
                 be raised: run 'ulimit -l {}' before wtgate, or set LimitMEMLOCK={} (or infinity) \
                 in its systemd unit",
                need / 1024,
                have / 1024,
                need / 1024,
                need
            ),
            StartError::Thread(e) => write!(f, "a shard failed to start: {e}"),
            StartError::Executor(e) => write!(f, "a shard failed to start: io_uring runtime: {e}"),
            StartError::ShardExited => f.write_str("a shard failed to start: shard thread exited"),
            StartError::NotReady(after) => write!(
                f,
                "a shard failed to start: shards not ready after {} s",
                after.as_secs()
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    UnknownPrefix(String),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::UnknownPrefix(p) => write!(f, "no backend has prefix '{p}'"),
        }
    }
}

impl std::error::Error for AdminError {}

/// How the shards are told to stop, shared with whoever may stop the engine (a signal handler).
pub struct Control {
    /// Set once the engine stops or drains: the accept loops end.
    stopping: AtomicBool,
    /// How long a drain lets connections finish, in milliseconds (0: close everything at once).
    grace_ms: AtomicU64,
    /// The engine's own handles on every shard's listening sockets (the shards hold duplicates),
    /// so that stopping can wake their accepts whatever the shards have done with their copies.
    listeners: Mutex<Vec<Socket>>,
}

impl Control {
    /// Stops accepting; requests in flight finish, idle keep-alive connections are closed, and
    /// whatever is still open after `grace` (WebSocket tunnels, slow responses) is closed then.
    /// The shards end after that, and [`Engine::wait`] returns.
    pub fn drain(&self, grace: Duration) {
        let ms = grace.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        self.grace_ms.store(ms, Ordering::SeqCst);
        self.stop_accepting();
    }

    /// Stops at once: every connection is closed.
    pub fn stop(&self) {
        self.grace_ms.store(0, Ordering::SeqCst);
        self.stop_accepting();
    }

    fn stop_accepting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for l in listeners.iter() {
            // Wakes the shard's pending accept with an error; the shard then sees `stopping`.
            let _ = l.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// How long connections may finish once accepting has stopped (zero: close them at once).
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::SeqCst))
    }
}

struct ShardThread {
    thread: Option<JoinHandle<()>>,
}

/// A running proxy. Dropping it stops every shard and waits for them.
pub struct Engine {
    shards: Vec<ShardThread>,
    control: Arc<Control>,
    handle: Arc<EngineHandle>,
    /// The `--admin` listener's thread, if any; stopped before the shards.
    admin_server: Option<crate::admin::AdminServer>,
    /// The `--access-log` writer, if any; dropped after the shards, so it writes their last lines.
    access_log: Option<AccessLog>,
    /// Declared last: dropped after the shards have stopped.
    trimmer: Trimmer,
}

/// What may be read and set from outside the shards while the engine runs — counters, sessions,
/// admin states, the config in force — shareable with threads of their own (the admin listener,
/// a signal handler) that must not depend on the shards' runtime. It holds only shared state,
/// never a shard: it may outlive the engine.
///
/// Per-backend lists it returns are by backend slot (`config::reload`): at start, the order of
/// `Config::backends`; a reload appends new backends and keeps removed ones' places.
pub struct EngineHandle {
    live: Arc<Live>,
    control: Arc<Control>,
    reloads: reload::Reloads,
    addrs: Vec<SocketAddr>,
    stats: Vec<Arc<ShardStats>>,
    sessions: Vec<Arc<Mutex<SessionTable>>>,
    admin: Arc<AdminTable>,
    started: Instant,
}

impl Engine {
    /// Validates `cfg`, binds every listener (the admin one too), starts the shards, and returns
    /// once all accept, with the admin listener serving.
    pub fn start(cfg: Config) -> Result<Engine, StartError> {
        cfg.validate().map_err(StartError::Config)?;
        let tls = crate::tls::build(&cfg.tls).map_err(StartError::Tls)?;
        let n = cfg.shard_count();
        limits::raise_memlock(crate::config::memlock_need(n))?;
        limits::raise_nofile(&limits::FdBudget::of(&cfg, n));
        let (sockets, addrs) = listen::bind_all(&cfg, n)?;
        let admin_listener = match cfg.admin {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr).map_err(|err| StartError::Bind { addr, err })?,
            ),
            None => None,
        };
        let access_log = crate::access_log::open(&cfg).map_err(StartError::Config)?;
        let control = Arc::new(Control {
            stopping: AtomicBool::new(false),
            grace_ms: AtomicU64::new(0),
            listeners: Mutex::new(Vec::new()),
        });
        let mut engine = Engine {
            shards: Vec::new(),
            control: control.clone(),
            handle: Arc::new(EngineHandle::new(cfg, tls, addrs, control)),
            admin_server: None,
            access_log,
            trimmer: Trimmer::start(),
        };
        // Dropping `engine` on an error below stops the shards started so far.
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut mesh = if n > 1 {
            crate::net::mesh(n, GOSSIP_CHANNEL)
        } else {
            Vec::new()
        }
        .into_iter();
        for (id, socks) in sockets.into_iter().enumerate() {
            let shard = engine.spawn_shard(id, socks, mesh.next(), ready_tx.clone())?;
            engine.shards.push(shard);
        }
        drop(ready_tx);
        engine.await_ready(&ready_rx)?;
        if let Some(listener) = admin_listener {
            let token = engine.handle.config().admin_token.clone();
            let server = crate::admin::AdminServer::start(listener, token, engine.handle.clone());
            engine.admin_server = Some(server.map_err(StartError::Thread)?);
        }
        Ok(engine)
    }

    fn spawn_shard(
        &self,
        id: usize,
        listeners: Vec<Socket>,
        mesh: Option<crate::net::MeshEnd<Heard>>,
        ready: mpsc::Sender<Result<(), StartError>>,
    ) -> Result<ShardThread, StartError> {
        let mut fds = Vec::new();
        for s in &listeners {
            fds.push(s.try_clone().map_err(StartError::Thread)?.into_raw_fd());
        }
        self.control
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(listeners);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let h = &self.handle;
        let setup = shard_thread::Setup {
            id,
            shards: h.stats.len(),
            core: cores.get(id % cores.len().max(1)).copied(),
            cfg: h.config(),
            fds,
            mesh,
            shared: Shared {
                stats: h.stats[id].clone(),
                sessions: h.sessions[id].clone(),
                admin: h.admin.clone(),
                trim: self.trimmer.handle(),
                access_log: self.access_log.as_ref().map(AccessLog::sink),
                live: h.live.clone(),
            },
            control: self.control.clone(),
            ready,
        };
        let thread = std::thread::Builder::new()
            .name(format!("wtgate-shard-{id}"))
            .spawn(move || shard_thread::run(setup))
            .map_err(StartError::Thread)?;
        Ok(ShardThread {
            thread: Some(thread),
        })
    }

    /// Waits until every shard is accepting, or one says why it cannot.
    fn await_ready(
        &mut self,
        ready: &mpsc::Receiver<Result<(), StartError>>,
    ) -> Result<(), StartError> {
        for _ in 0..self.shards.len() {
            match ready.recv_timeout(START_LIMIT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(StartError::ShardExited),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // A shard stuck before it could listen: fail loudly rather than hang, and
                    // don't wait for the stuck ones.
                    for s in &mut self.shards {
                        s.thread.take();
                    }
                    return Err(StartError::NotReady(START_LIMIT));
                }
            }
        }
        Ok(())
    }

    /// The bound listen addresses, one per `--listen`, in order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.handle.addrs
    }

    /// Where the `--admin` listener is bound (port 0 resolved), if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_server.as_ref().map(|a| a.local_addr())
    }

    /// The engine's shared state, for a thread of its own.
    pub fn handle(&self) -> Arc<EngineHandle> {
        self.handle.clone()
    }

    /// Counters per backend, summed over shards, and how many shards see each backend up.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Live Wt sessions per backend: see [`EngineHandle::sessions`].
    pub fn sessions(&self) -> Vec<BackendSessions> {
        self.handle.sessions()
    }

    /// Sessions not tracked because a shard's table was full (`max_sessions`).
    pub fn sessions_untracked(&self) -> u64 {
        self.handle.sessions_untracked()
    }

    /// Sets a backend's admin state: see [`EngineHandle::set_admin`].
    pub fn set_admin(&self, prefix: &str, admin: Admin) -> Result<Admin, AdminError> {
        self.handle.set_admin(prefix, admin)
    }

    /// Blocks until every shard has stopped (they run until `Engine` is dropped or they fail).
    pub fn wait(mut self) {
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// What makes the access log reopen its file (after log rotation), if it is on.
    pub fn access_log(&self) -> Option<Reopen> {
        self.access_log.as_ref().map(AccessLog::reopener)
    }

    /// What stops the engine from another thread: [`Control::drain`] (a graceful stop) or
    /// [`Control::stop`].
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    fn stop_all(&mut self) {
        if !self.control.stopping() {
            self.control.stop();
        }
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl EngineHandle {
    /// What the engine shares with its shards and the admin listener, for `cfg`'s shards.
    fn new(
        cfg: Config,
        tls: Option<Arc<crate::tls::Tls>>,
        addrs: Vec<SocketAddr>,
        control: Arc<Control>,
    ) -> EngineHandle {
        let mut first = Generation::first(cfg.clone());
        first.tls = tls;
        let n = cfg.shard_count();
        EngineHandle {
            addrs,
            stats: (0..n).map(|_| Arc::new(ShardStats::new(&cfg))).collect(),
            sessions: (0..n)
                .map(|_| {
                    let table = SessionTable::new(cfg.max_sessions, Instant::now());
                    Arc::new(Mutex::new(table))
                })
                .collect(),
            admin: Arc::new(AdminTable::new(cfg.backends.len())),
            live: Arc::new(Live::new(first, n)),
            control,
            reloads: reload::Reloads::default(),
            started: Instant::now(),
        }
    }

    /// The settings in force: as started, or as the last reload left them.
    pub fn config(&self) -> Arc<Config> {
        self.live.current().cfg.clone()
    }

    /// The config in force with its backend slots.
    pub fn generation(&self) -> Arc<Generation> {
        self.live.current()
    }

    /// The bound listen addresses, one per `--listen`, in order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Time since the engine started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counters per backend slot, summed over shards, and how many shards see each backend up.
    pub fn stats(&self) -> Stats {
        Stats::sum(&self.live.current().slots, self.addrs.len(), &self.stats)
    }

    /// First-byte and total latencies per backend slot, merged over the shards.
    pub fn latency(&self) -> Vec<(LatencySummary, LatencySummary)> {
        let now = Instant::now();
        (0..self.live.current().slots.len())
            .map(|b| crate::metrics::latency(&self.stats, b, now))
            .collect()
    }

    /// Every backend slot's admin state.
    pub fn admin_states(&self) -> Vec<Admin> {
        let states = self.admin.states.lock().unwrap_or_else(|e| e.into_inner());
        states.clone()
    }

    /// Live Wt sessions per backend slot, merged over the shards: sessions with a WebSocket open,
    /// or that their owner answered as its own within `session_idle` (`crate::sessions`).
    pub fn sessions(&self) -> Vec<BackendSessions> {
        let guards: Vec<_> = self
            .sessions
            .iter()
            .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let now = std::time::Instant::now();
        let g = self.live.current();
        let (backends, idle) = (g.slots.len(), g.cfg.session_idle);
        sessions::merge(guards.iter().map(|g| &**g), backends, now, idle)
    }

    /// Sessions not tracked because a shard's table was full (`max_sessions`).
    pub fn sessions_untracked(&self) -> u64 {
        let lock =
            |t: &Arc<Mutex<SessionTable>>| t.lock().unwrap_or_else(|e| e.into_inner()).untracked;
        self.sessions.iter().map(lock).sum()
    }

    /// Sets a backend's admin state (`ready`, `drain`, `maint`) on every shard; the shards pick it
    /// up at their next routing decision. Returns the previous state.
    pub fn set_admin(&self, prefix: &str, admin: Admin) -> Result<Admin, AdminError> {
        let g = self.live.current();
        let i = g
            .slot(prefix)
            .ok_or_else(|| AdminError::UnknownPrefix(prefix.to_string()))?;
        let mut states = self.admin.states.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut states[i], admin);
        self.admin.generation.fetch_add(1, Ordering::Release);
        if old != admin {
            let b = &g.slots[i].backend;
            let (old, new) = (old.as_str(), admin.as_str());
            eprintln!(
                "wtgate: backend {} ({}) admin {old} -> {new}",
                b.prefix, b.addr
            );
        }
        Ok(old)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The admin listener first: it must not report on shards that are going away.
        self.admin_server.take();
        self.stop_all();
    }
}
