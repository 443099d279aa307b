//! The engine: one glommio executor per core, each pinned, each with its own `SO_REUSEPORT`
//! listener on every listen address, so the kernel spreads connections and shards share nothing.
//!
//! Listening sockets are bound here on the calling thread, before any shard starts: a bind error is
//! reported at once, and port 0 is resolved once so that every shard listens on the same port.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};

use glommio::channels::channel_mesh::{Full, MeshBuilder};

use crate::config::{Config, ConfigError};
use crate::health::{Admin, Gossip};
use crate::metrics::{ShardStats, Stats};
use crate::proxy::{AdminTable, Shard};
use crate::trim::{TrimHandle, Trimmer};

/// How long `Engine::start` waits for every shard to be accepting.
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Room for state changes in flight between two shards; a full channel makes the sender wait.
const GOSSIP_CHANNEL: usize = 1024;

/// Registered I/O memory per executor. wtgate does no file I/O, so glommio's 10 MiB default would
/// only pin memory; keep what it needs for its slab.
const IO_MEMORY: usize = 256 * 1024;
/// How long a stopping shard waits for its connections' tasks to see their sockets closed.
const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Bind { addr: SocketAddr, err: io::Error },
    Memlock { have: u64, need: u64 },
    Shard(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
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
                 be raised: run 'ulimit -l {}' before wtgate, or set LimitMEMLOCK={} in its \
                 systemd unit",
                need / 1024,
                have / 1024,
                need / 1024,
                need
            ),
            StartError::Shard(why) => write!(f, "a shard failed to start: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

struct ShardThread {
    thread: Option<JoinHandle<()>>,
    /// The engine's own handles on the shard's listening sockets (the shard holds duplicates), so
    /// that stopping can wake the shard's accept whatever the shard has done with its copies.
    listeners: Vec<Socket>,
}

/// A running proxy. Dropping it stops every shard and waits for them.
pub struct Engine {
    addrs: Vec<SocketAddr>,
    shards: Vec<ShardThread>,
    stop: Arc<AtomicBool>,
    cfg: Arc<Config>,
    stats: Vec<Arc<ShardStats>>,
    admin: Arc<AdminTable>,
    /// Declared last: dropped after the shards have stopped.
    _trimmer: Trimmer,
}

impl Engine {
    /// Validates `cfg`, binds every listener, starts the shards, and returns once all accept.
    pub fn start(cfg: Config) -> Result<Engine, StartError> {
        cfg.validate().map_err(StartError::Config)?;
        let n = cfg.shard_count();
        raise_memlock(crate::config::memlock_need(n))?;
        raise_nofile(cfg.maxconn * 2 + 256);

        // sockets[shard][listen address]
        let mut sockets: Vec<Vec<Socket>> = (0..n).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for want in cfg.listen.iter().map(|l| l.addr) {
            probe_free(want).map_err(|err| StartError::Bind { addr: want, err })?;
            let first = bind_listener(want).map_err(|err| StartError::Bind { addr: want, err })?;
            let actual = first
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .unwrap_or(want);
            sockets[0].push(first);
            for shard in sockets.iter_mut().skip(1) {
                let s =
                    bind_listener(actual).map_err(|err| StartError::Bind { addr: want, err })?;
                shard.push(s);
            }
            addrs.push(actual);
        }

        let cfg = Arc::new(cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let mesh = (n > 1).then(|| MeshBuilder::full(n, GOSSIP_CHANNEL));
        let admin = Arc::new(AdminTable::new(cfg.backends.len()));
        let stats: Vec<Arc<ShardStats>> = (0..n).map(|_| Arc::new(ShardStats::new(&cfg))).collect();
        let trimmer = Trimmer::start();
        let mut shards = Vec::new();
        for (id, socks) in sockets.into_iter().enumerate() {
            let mut fds = Vec::new();
            for s in &socks {
                let dup = s
                    .try_clone()
                    .map_err(|e| StartError::Shard(e.to_string()))?;
                fds.push(dup.into_raw_fd());
            }
            let core = cores.get(id % cores.len().max(1)).copied();
            let cfg = cfg.clone();
            let shared = ShardShared {
                mesh: mesh.clone(),
                stats: stats[id].clone(),
                admin: admin.clone(),
                stop: stop.clone(),
                ready: ready_tx.clone(),
                trim: trimmer.handle(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("wtgate-shard-{id}"))
                .spawn(move || run_shard(id, n, core, cfg, fds, shared))
                .map_err(|e| StartError::Shard(e.to_string()))?;
            shards.push(ShardThread {
                thread: Some(thread),
                listeners: socks,
            });
        }
        drop(ready_tx);
        let mut engine = Engine {
            addrs,
            shards,
            stop,
            cfg,
            stats,
            admin,
            _trimmer: trimmer,
        };
        for _ in 0..n {
            match ready_rx.recv_timeout(START_LIMIT) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    engine.stop_all();
                    return Err(StartError::Shard(why));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    engine.stop_all();
                    return Err(StartError::Shard("shard thread exited".into()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // A shard stuck before it could listen (e.g. a peer that never joined the
                    // gossip mesh): fail loudly rather than hang, and don't wait for the stuck ones.
                    for s in &mut engine.shards {
                        s.thread.take();
                    }
                    engine.stop_all();
                    return Err(StartError::Shard(format!(
                        "shards not ready after {} s",
                        START_LIMIT.as_secs()
                    )));
                }
            }
        }
        Ok(engine)
    }

    /// The bound listen addresses, one per `--listen`, in order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Counters per backend, summed over shards, and how many shards see each backend up.
    pub fn stats(&self) -> Stats {
        Stats::sum(&self.cfg, &self.stats)
    }

    /// Sets a backend's admin state (`ready`, `drain`, `maint`) on every shard; the shards pick it
    /// up at their next routing decision. Returns the previous state.
    pub fn set_admin(&self, prefix: &str, admin: Admin) -> Result<Admin, String> {
        let i = self
            .cfg
            .backends
            .iter()
            .position(|b| b.prefix == prefix)
            .ok_or_else(|| format!("no backend has prefix '{prefix}'"))?;
        let mut states = self.admin.states.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut states[i], admin);
        self.admin.generation.fetch_add(1, Ordering::Release);
        if old != admin {
            let b = &self.cfg.backends[i];
            eprintln!(
                "wtgate: backend {} ({}) admin {} -> {}",
                b.prefix,
                b.addr,
                old.as_str(),
                admin.as_str()
            );
        }
        Ok(old)
    }

    /// Blocks until every shard has stopped (they run until `Engine` is dropped or they fail).
    pub fn wait(mut self) {
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.shards {
            for l in &s.listeners {
                // Wakes the shard's pending accept with an error; the shard then sees `stop`.
                let _ = l.shutdown(std::net::Shutdown::Both);
            }
        }
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `SO_REUSEPORT` would let us share a port with a forgotten older process (same user), which then
/// silently takes half the connections. A plain bind first tells whether anyone listens there.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())
}

fn bind_listener(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]:80` and `0.0.0.0:80` can then both be listed, as with HAProxy's `v6only`.
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s)
}

/// What a shard thread gets besides its sockets: its way into the gossip mesh, its counters, and
/// the operators' admin table.
struct ShardShared {
    mesh: Option<MeshBuilder<Gossip, Full>>,
    stats: Arc<ShardStats>,
    admin: Arc<AdminTable>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
    trim: TrimHandle,
}

fn run_shard(
    id: usize,
    shards: usize,
    core: Option<core_affinity::CoreId>,
    cfg: Arc<Config>,
    fds: Vec<RawFd>,
    shared: ShardShared,
) {
    let ShardShared {
        mesh,
        stats,
        admin,
        stop,
        ready,
        trim,
    } = shared;
    if let Some(core) = core
        && cfg.pin
    {
        core_affinity::set_for_current(core);
    }
    let ex = match LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("wtgate-{id}"))
        .io_memory(IO_MEMORY)
        .make()
    {
        Ok(ex) => ex,
        Err(e) => {
            // SAFETY: these descriptors were handed to this thread and are used nowhere else.
            for fd in fds {
                drop(unsafe { Socket::from_raw_fd(fd) });
            }
            let _ = ready.send(Err(format!("io_uring executor: {e}")));
            return;
        }
    };
    ex.run(async move {
        let per_shard_conns = cfg.maxconn.div_ceil(shards).max(1);
        // Shards number themselves by `id` (thread name, core, stats, logs, checks); the mesh
        // numbers its peers by join order, which only the gossip sender needs to know.
        let peers = match mesh {
            Some(mesh) => match mesh.join().await {
                Ok(pair) => Some(pair),
                Err(e) => {
                    let _ = ready.send(Err(format!("joining the shards' gossip channels: {e}")));
                    return;
                }
            },
            None => None,
        };
        let shard = Rc::new(Shard::new(id, shards, cfg.clone(), stats, admin, trim));
        // Tasks that run as long as the shard does; cancelled when it stops, so that nothing of
        // the shard (its executor's descriptors included) outlives it.
        let mut background = Vec::new();
        if let Some((senders, mut receivers)) = peers {
            shard.set_peers(senders);
            for (_, rx) in receivers.streams() {
                let shard = shard.clone();
                let task = glommio::spawn_local(async move {
                    while let Some(msg) = rx.recv().await {
                        shard.on_gossip(msg, false);
                    }
                });
                background.push(task.detach());
            }
        }
        for backend in (0..cfg.backends.len()).filter(|b| b % shards == id) {
            background
                .push(glommio::spawn_local(Shard::check_loop(shard.clone(), backend)).detach());
        }
        let limit = Rc::new(glommio::sync::Semaphore::new(per_shard_conns as u64));
        let listeners: Vec<TcpListener> = fds
            .into_iter()
            // SAFETY: each descriptor is a bound, listening TCP socket owned by this shard alone.
            .map(|fd| unsafe { TcpListener::from_raw_fd(fd) })
            .collect();
        let _ = ready.send(Ok(()));
        let loops: Vec<_> = listeners
            .into_iter()
            .zip(cfg.listen.iter().map(|l| l.proxy_protocol))
            .map(|(l, proxy_protocol)| {
                let shard = shard.clone();
                let limit = limit.clone();
                let stop = stop.clone();
                glommio::spawn_local(accept_loop(l, proxy_protocol, shard, limit, stop))
            })
            .collect();
        background.push(glommio::spawn_local(Shard::sweep_pool(shard.clone())).detach());
        for l in loops {
            l.await;
        }
        // Stopping: close what this shard owns, then give the connections' tasks a moment to
        // see it (every permit back means every connection task has ended).
        shard.close_all();
        let all_back = limit.acquire(per_shard_conns as u64);
        let _ = futures_lite::future::or(async { all_back.await.is_ok() }, async {
            glommio::timer::sleep(STOP_LIMIT).await;
            false
        })
        .await;
        shard.close_all();
        for task in background {
            task.cancel();
        }
    });
}

async fn accept_loop(
    listener: TcpListener,
    proxy_protocol: bool,
    shard: Rc<Shard>,
    limit: Rc<glommio::sync::Semaphore>,
    stop: Arc<AtomicBool>,
) {
    loop {
        // Past maxconn we stop accepting; new connections wait in the kernel backlog.
        let Ok(permit) = limit.acquire_static_permit(1).await else {
            return;
        };
        let stream = listener.accept().await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match stream {
            Ok(stream) => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    shard.serve(stream, proxy_protocol).await;
                    drop(permit);
                })
                .detach();
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning on accept.
                shard.log_accept_error(&e);
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Makes sure io_uring can lock the memory it needs, raising the soft (and, as root, the hard)
/// RLIMIT_MEMLOCK if needed.
fn raise_memlock(need: u64) -> Result<(), StartError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 {
            return Ok(());
        }
        if lim.rlim_cur >= need {
            return Ok(());
        }
        let want = libc::rlimit {
            rlim_cur: need,
            rlim_max: lim.rlim_max.max(need),
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &want) == 0 {
            return Ok(());
        }
        if lim.rlim_max >= need {
            let soft = libc::rlimit {
                rlim_cur: need,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft) == 0 {
                return Ok(());
            }
        }
    }
    Err(StartError::Memlock {
        have: lim.rlim_cur,
        need,
    })
}

/// Raises the soft open-files limit toward what maxconn needs (a client and a backend socket per
/// connection), as HAProxy does; the hard limit is the operator's call.
fn raise_nofile(need: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let need = need as libc::rlim_t;
        if lim.rlim_cur >= need {
            return;
        }
        let cur = need.min(lim.rlim_max);
        let new = libc::rlimit {
            rlim_cur: cur,
            rlim_max: lim.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &new);
        if cur < need {
            eprintln!(
                "wtgate: warning: open-files limit {cur} is below the {need} that --maxconn needs; \
                 raise it (ulimit -n, systemd LimitNOFILE=)"
            );
        }
    }
}
