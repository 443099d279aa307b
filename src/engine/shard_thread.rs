//! One shard's thread: pinned to its core, one monoio runtime on its own io_uring ring, its gossip
//! channels, its active checks, its accept loops; and, when the engine stops, the closing of all
//! it owns.

use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use monoio::net::TcpListener;
use socket2::Socket;

use crate::config::Config;
use crate::engine::permits::Permits;
use crate::engine::{Control, StartError};
use crate::health::Heard;
use crate::metrics::ShardStats;
use crate::net::{Background, MeshEnd, RING_ENTRIES};
use crate::shard::{Shard, Shared};

/// Debug builds only, for the test that shows what a panicking shard does: the environment
/// variable `WTGATE_TEST_PANIC=accept` makes a shard panic when it accepts a connection.
fn test_panic() -> bool {
    std::env::var_os("WTGATE_TEST_PANIC").is_some_and(|v| v == "accept")
}

/// How often an accept loop waiting for a free slot (at `--maxconn`) looks whether the engine
/// stops.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How long a stopping shard waits for its connections' tasks to see their sockets closed.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (EMFILE and friends), instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a shard thread gets: its place, its listening sockets, its end of the gossip channels,
/// what it shares with the engine, and the channel on which it says it is accepting (or why not).
pub struct Setup {
    pub id: usize,
    pub shards: usize,
    pub core: Option<core_affinity::CoreId>,
    pub cfg: Arc<Config>,
    pub fds: Vec<RawFd>,
    pub mesh: Option<MeshEnd<Heard>>,
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
    match crate::net::runtime() {
        Ok((mut rt, flags)) => {
            if setup.id == 0 {
                eprintln!("wtgate: io_uring rings set up {flags} ({RING_ENTRIES} entries)");
            }
            rt.block_on(shard_main(setup));
        }
        Err(e) => {
            for fd in setup.fds.drain(..) {
                // SAFETY: these descriptors were handed to this thread and are used nowhere else.
                drop(unsafe { Socket::from_raw_fd(fd) });
            }
            let _ = setup.ready.send(Err(StartError::Executor(e)));
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
    let listeners = match listeners(fds) {
        Ok(listeners) => listeners,
        Err(e) => {
            let _ = ready.send(Err(StartError::Executor(e)));
            return;
        }
    };
    let shard = Rc::new(Shard::new(id, shards, cfg.clone(), shared));
    let background = start_background(&shard, mesh);
    let per_shard_conns = cfg.maxconn.div_ceil(shards).max(1);
    let limit = Permits::new(per_shard_conns);
    let loops: Vec<_> = listeners
        .into_iter()
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
            monoio::spawn(accept.run())
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

/// The shard's listening sockets, handed to its ring.
fn listeners(fds: Vec<RawFd>) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for fd in fds {
        // SAFETY: each descriptor is a bound, listening TCP socket owned by this shard alone.
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        listeners.push(TcpListener::from_std(std_listener)?);
    }
    Ok(listeners)
}

/// Tasks that run as long as the shard does — the gossip inbox and the backlogs to full peers, the
/// active checks of the backends this shard checks, the pool sweeper — ended when it stops, so that
/// nothing of the shard outlives its runtime.
fn start_background(shard: &Rc<Shard>, mesh: Option<MeshEnd<Heard>>) -> Background {
    let mut background = Background::default();
    if let Some(mesh) = mesh {
        let (peers, inbox) = mesh.split();
        shard.set_peers(peers.clone());
        background.spawn(async move { peers.flush_backlogs().await });
        let shard = shard.clone();
        background.spawn(async move {
            while let Some(heard) = inbox.recv().await {
                shard.on_heard(heard);
            }
        });
    }
    let slots = shard.generation().slots.len();
    for backend in (0..slots).filter(|&b| shard.checker_of(b) == shard.id) {
        background.spawn(crate::check::check_loop(shard.clone(), backend));
    }
    background.spawn(Shard::sweep_pool(shard.clone()));
    background
}

/// A graceful stop: idle connections are closed, the others finish their request (and close),
/// for at most `grace`; every permit back means every connection has ended.
async fn drain(shard: &Shard, limit: &Rc<Permits>, permits: usize, grace: Duration) {
    shard.begin_drain();
    // Taken only to see them all back (and given back at once): the stop that follows waits too.
    let _ = monoio::time::timeout(grace, limit.acquire(permits)).await;
}

/// Stopping: close what this shard owns, give the connections' tasks a moment to see it (every
/// permit back means every connection task has ended), then end the background tasks.
async fn stop_shard(shard: &Shard, limit: &Rc<Permits>, permits: usize, background: Background) {
    shard.close_all();
    let _ = monoio::time::timeout(STOP_LIMIT, limit.acquire(permits)).await;
    shard.close_all();
    background.stop().await;
}

/// One accept loop: one listening socket of one shard.
struct Accept {
    listener: TcpListener,
    /// Which `Config::listen` address, for its counters.
    index: usize,
    proxy_protocol: bool,
    shard: Rc<Shard>,
    /// The shard's share of `--maxconn`.
    limit: Rc<Permits>,
    control: Arc<Control>,
}

impl Accept {
    /// A permit for one more connection; `None` once the engine stops. At `--maxconn` nothing
    /// else wakes this loop (the stop wakes a pending accept, not a wait for a permit), so the
    /// stop is looked for every [`STOP_POLL`]: `--grace` holds with every slot taken too.
    async fn permit(&self) -> Option<crate::engine::permits::Permit> {
        loop {
            if let Ok(permit) = monoio::time::timeout(STOP_POLL, self.limit.acquire(1)).await {
                return Some(permit);
            }
            if self.control.stopping() {
                return None;
            }
        }
    }

    async fn run(self) {
        loop {
            // Past maxconn we stop accepting; new connections wait in the kernel backlog.
            let Some(permit) = self.permit().await else {
                return;
            };
            let stream = self.listener.accept().await;
            if self.control.stopping() {
                return;
            }
            match stream {
                Ok(_) if cfg!(debug_assertions) && test_panic() => {
                    panic!(
                        "WTGATE_TEST_PANIC=accept: a panic on shard {}",
                        self.shard.id
                    )
                }
                Ok((stream, _)) => {
                    let (shard, pp) = (self.shard.clone(), self.proxy_protocol);
                    let counters = &shard.stats.listeners[self.index];
                    ShardStats::count(&counters.accepted);
                    ShardStats::count(&counters.open);
                    let slot = crate::proxy::Slot {
                        shard,
                        listener: self.index,
                        permit,
                    };
                    crate::net::spawn(crate::proxy::serve(slot, stream, pp));
                }
                Err(e) => {
                    self.shard.log_accept_error(&e);
                    crate::net::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{mesh, spawn_blocking};

    #[test]
    fn blocking_work_runs_on_a_thread_of_its_own() {
        let (mut rt, _) = crate::net::runtime().expect("an io_uring runtime");
        rt.block_on(async {
            let here = std::thread::current().id();
            let there = spawn_blocking(|| std::thread::current().id()).await;
            assert_ne!(there.expect("a thread for the call"), here);
        });
    }

    /// One shard broadcasts far more than the other's inbox holds, faster than it reads: every
    /// message arrives, in order, woken across threads.
    #[test]
    fn gossip_to_a_full_inbox_is_neither_lost_nor_reordered() {
        const MESSAGES: u32 = 200;
        let mut ends = mesh::<u32>(2, 4).into_iter();
        let (Some(sender), Some(receiver)) = (ends.next(), ends.next()) else {
            panic!("a mesh of two has two ends")
        };
        let (done_tx, done_rx) = flume::bounded::<()>(1);
        let reader = std::thread::spawn(move || {
            let (mut rt, _) = crate::net::runtime().expect("an io_uring runtime");
            let (_, inbox) = receiver.split();
            rt.block_on(async move {
                for want in 0..MESSAGES {
                    let got = monoio::time::timeout(Duration::from_secs(10), inbox.recv()).await;
                    assert_eq!(got, Ok(Some(want)));
                }
                let _ = done_tx.send(());
            });
        });
        let (mut rt, _) = crate::net::runtime().expect("an io_uring runtime");
        let (peers, _inbox) = sender.split();
        rt.block_on(async move {
            for msg in 0..MESSAGES {
                peers.broadcast(msg);
            }
            let all_read = async { done_rx.recv_async().await.is_ok() };
            let flushing = async {
                peers.flush_backlogs().await;
                false
            };
            let within = Duration::from_secs(10);
            let all_read =
                monoio::time::timeout(within, futures_lite::future::or(all_read, flushing));
            assert_eq!(
                all_read.await,
                Ok(true),
                "the reader did not get every message"
            );
        });
        reader.join().expect("the reader thread failed");
    }
}
