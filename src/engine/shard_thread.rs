//! One shard's thread: pinned to its core, one glommio executor, its gossip channels, its active
//! checks, its accept loops; and, when the engine stops, the closing of all it owns.

use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::Socket;

use crate::config::Config;
use crate::engine::{Control, StartError};
use crate::health::Gossip;
use crate::metrics::ShardStats;
use crate::shard::{Shard, Shared};

/// Registered I/O memory per executor. wtgate does no file I/O, so glommio's 10 MiB default would
/// only pin memory; keep what it needs for its slab.
const IO_MEMORY: usize = 256 * 1024;
/// How long a stopping shard waits for its connections' tasks to see their sockets closed.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (EMFILE and friends), instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a shard thread gets: its place, its listening sockets, its way into the gossip mesh, what
/// it shares with the engine, and the channel on which it says it is accepting (or why not).
pub struct Setup {
    pub id: usize,
    pub shards: usize,
    pub core: Option<core_affinity::CoreId>,
    pub cfg: Arc<Config>,
    pub fds: Vec<RawFd>,
    pub mesh: Option<MeshBuilder<Gossip, Full>>,
    pub shared: Shared,
    pub control: Arc<Control>,
    pub ready: mpsc::Sender<Result<(), StartError>>,
}

/// The thread's body: runs the shard until the engine stops it.
pub fn run(mut setup: Setup) {
    if let Some(core) = setup.core
        && setup.cfg.pin
    {
        core_affinity::set_for_current(core);
    }
    let made = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("wtgate-{}", setup.id))
        .io_memory(IO_MEMORY)
        .make();
    match made {
        Ok(ex) => ex.run(shard_main(setup)),
        Err(e) => {
            for fd in setup.fds.drain(..) {
                // SAFETY: these descriptors were handed to this thread and are used nowhere else.
                drop(unsafe { Socket::from_raw_fd(fd) });
            }
            let _ = setup.ready.send(Err(StartError::Executor(e.into())));
        }
    }
}

async fn shard_main(setup: Setup) {
    let Setup {
        id,
        shards,
        cfg,
        fds,
        mesh,
        shared,
        control,
        ready,
        ..
    } = setup;
    // Shards number themselves by `id` (thread name, core, stats, logs, checks); the mesh numbers
    // its peers by join order, which only the gossip sender needs to know.
    let peers = match mesh {
        Some(mesh) => match mesh.join().await {
            Ok(pair) => Some(pair),
            Err(e) => {
                let _ = ready.send(Err(StartError::Gossip(e.into())));
                return;
            }
        },
        None => None,
    };
    let shard = Rc::new(Shard::new(id, shards, cfg.clone(), shared));
    let background = start_background(&shard, peers);
    let per_shard_conns = cfg.maxconn.div_ceil(shards).max(1) as u64;
    let limit = Rc::new(Semaphore::new(per_shard_conns));
    let loops: Vec<_> = fds
        .into_iter()
        // SAFETY: each descriptor is a bound, listening TCP socket owned by this shard alone.
        .map(|fd| unsafe { TcpListener::from_raw_fd(fd) })
        .zip(cfg.listen.iter().map(|l| l.proxy_protocol))
        .enumerate()
        .map(|(index, (listener, proxy_protocol))| {
            let accept = Accept {
                listener,
                index,
                proxy_protocol,
                shard: shard.clone(),
                limit: limit.clone(),
                control: control.clone(),
            };
            glommio::spawn_local(accept.run())
        })
        .collect();
    let _ = ready.send(Ok(()));
    for l in loops {
        l.await;
    }
    let grace = control.grace();
    if !grace.is_zero() {
        drain(&shard, &limit, per_shard_conns, grace).await;
    }
    stop_shard(&shard, &limit, per_shard_conns, background).await;
}

type Peers = (Senders<Gossip>, Receivers<Gossip>);

/// Tasks that run as long as the shard does — gossip receivers, the active checks of the backends
/// this shard checks, the pool sweeper — cancelled when it stops, so that nothing of the shard
/// (its executor's descriptors included) outlives it.
fn start_background(shard: &Rc<Shard>, peers: Option<Peers>) -> Vec<JoinHandle<()>> {
    let mut background = Vec::new();
    if let Some((senders, mut receivers)) = peers {
        shard.set_peers(crate::net::Peers::new(senders));
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
    for backend in (0..shard.cfg.backends.len()).filter(|&b| shard.checker_of(b) == shard.id) {
        let check = crate::check::check_loop(shard.clone(), backend);
        background.push(glommio::spawn_local(check).detach());
    }
    background.push(glommio::spawn_local(Shard::sweep_pool(shard.clone())).detach());
    background
}

/// A graceful stop: idle connections are closed, the others finish their request (and close),
/// for at most `grace`; every permit back means every connection has ended.
async fn drain(shard: &Shard, limit: &Semaphore, permits: u64, grace: Duration) {
    shard.begin_drain();
    let all_back = limit.acquire(permits);
    let ended = futures_lite::future::or(async { all_back.await.is_ok() }, async {
        glommio::timer::sleep(grace).await;
        false
    })
    .await;
    if ended {
        // Taken only to see them all back: the stop that follows waits for them too.
        limit.signal(permits);
    }
}

/// Stopping: close what this shard owns, give the connections' tasks a moment to see it (every
/// permit back means every connection task has ended), then end the background tasks.
async fn stop_shard(
    shard: &Shard,
    limit: &Semaphore,
    permits: u64,
    background: Vec<JoinHandle<()>>,
) {
    shard.close_all();
    let all_back = limit.acquire(permits);
    let _ = futures_lite::future::or(async { all_back.await.is_ok() }, async {
        glommio::timer::sleep(STOP_LIMIT).await;
        false
    })
    .await;
    shard.close_all();
    for task in background {
        task.cancel();
    }
}

/// One accept loop: one listening socket of one shard.
struct Accept {
    listener: TcpListener,
    /// Which `Config::listen` address, for its counters.
    index: usize,
    proxy_protocol: bool,
    shard: Rc<Shard>,
    /// The shard's share of `--maxconn`.
    limit: Rc<Semaphore>,
    control: Arc<Control>,
}

impl Accept {
    async fn run(self) {
        loop {
            // Past maxconn we stop accepting; new connections wait in the kernel backlog.
            let Ok(permit) = self.limit.acquire_static_permit(1).await else {
                return;
            };
            let stream = self.listener.accept().await;
            if self.control.stopping() {
                return;
            }
            match stream {
                Ok(stream) => {
                    let (shard, pp) = (self.shard.clone(), self.proxy_protocol);
                    let counters = &shard.stats.listeners[self.index];
                    ShardStats::count(&counters.accepted);
                    ShardStats::count(&counters.open);
                    let index = self.index;
                    glommio::spawn_local(async move {
                        crate::proxy::serve(&shard, stream, pp).await;
                        let open = &shard.stats.listeners[index].open;
                        open.fetch_sub(1, Ordering::Relaxed);
                        drop(permit);
                    })
                    .detach();
                }
                Err(e) => {
                    self.shard.log_accept_error(&e);
                    glommio::timer::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}
