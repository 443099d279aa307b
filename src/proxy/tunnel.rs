//! After `101 Switching Protocols`: bytes relayed both ways, untouched, until both sides have
//! closed; a half-close is passed on, a reset or `--tunnel-timeout` of silence both ways ends both.

use std::cell::Cell;
use std::io;
use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures_lite::{FutureExt, future};

use crate::metrics::ShardStats;
use crate::net::{InBuf, Sock};
use crate::proxy::client::Client;
use crate::proxy::upstream::Upstream;
use crate::shard::Shard;

/// Relays until both directions are done. Bytes already read on either side (a frame that came
/// with the 101, say) go first. Returns the bytes relayed to the backend and to the client.
pub async fn run(shard: &Shard, client: &mut Client, up: &mut Upstream) -> (u64, u64) {
    let key = shard.track(&up.sock, None);
    // The one in force as the tunnel opens, for its whole life: a reload changes it for later ones.
    let idle = shard.settings().timeouts.tunnel;
    let last = Cell::new(Instant::now());
    let counters = &shard.stats.backends[up.backend];
    let (in_bytes, out_bytes) = (Cell::new(0), Cell::new(0));
    let to_backend = relay(
        (&client.sock, &up.sock),
        &mut client.buf,
        &last,
        (&counters.request_bytes, &in_bytes),
    );
    let to_client = relay(
        (&up.sock, &client.sock),
        &mut up.buf,
        &last,
        (&counters.response_bytes, &out_bytes),
    );
    // Pinned here, once: moved into a combinator, each would be stored twice in the state machine.
    let (to_backend, to_client) = (pin!(to_backend), pin!(to_client));
    let mut watchdog = pin!(watchdog((&client.sock, &up.sock), idle, &last));
    let _ = future::zip(to_backend, to_client)
        .or(async {
            watchdog.as_mut().await;
            (Ok(()), Ok(()))
        })
        .await;
    shard.untrack(key);
    up.sock.shutdown_both();
    (in_bytes.get(), out_bytes.get())
}

/// Where one direction's bytes are counted: the backend's counter, and this tunnel's.
type Bytes<'a> = (&'a AtomicU64, &'a Cell<u64>);

/// Ends a tunnel silent both ways for `idle`. It shuts both sockets down, so that both directions'
/// pending reads complete (with EOF) and the relays end on their own: a read is never dropped
/// while its tunnel lives, as a timeout around each read would (a dropped io_uring read may have
/// taken bytes). One timer per tunnel, re-armed only when it fires, instead of one per read.
async fn watchdog((a, b): (&Sock, &Sock), idle: Duration, last: &Cell<Instant>) {
    loop {
        let quiet = last.get().elapsed();
        if quiet >= idle {
            a.shutdown_both();
            b.shutdown_both();
            return future::pending().await;
        }
        crate::net::sleep(idle - quiet).await;
    }
}

/// One direction: `from` → `to`, then a half-close passed on. `last` is the time of the latest
/// traffic either way, so that a quiet direction does not end a busy tunnel; `bytes` counts what
/// went through.
async fn relay(
    (from, to): (&Sock, &Sock),
    buf: &mut InBuf,
    last: &Cell<Instant>,
    bytes: Bytes<'_>,
) -> io::Result<()> {
    let r = relay_until_eof(from, to, buf, last, bytes).await;
    if r.is_err() {
        // A reset ends both directions at once; the other one is woken by this.
        from.shutdown_both();
        to.shutdown_both();
    }
    r
}

async fn relay_until_eof(
    from: &Sock,
    to: &Sock,
    buf: &mut InBuf,
    last: &Cell<Instant>,
    (counter, tunnel): Bytes<'_>,
) -> io::Result<()> {
    loop {
        if !buf.is_empty() {
            let n = buf.data().len();
            buf.write_to(to, n).await?;
            ShardStats::add(counter, n);
            tunnel.set(tunnel.get() + n as u64);
            buf.consume(n);
            last.set(Instant::now());
        }
        if buf.read_from(from).await? == 0 {
            to.shutdown_write();
            return Ok(());
        }
    }
}
