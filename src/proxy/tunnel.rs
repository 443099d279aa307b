//! After `101 Switching Protocols`: bytes relayed both ways, untouched, until both sides have
//! closed; a half-close is passed on, a reset or `--tunnel-timeout` of silence both ways ends both.

use std::cell::Cell;
use std::io;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::metrics::ShardStats;
use crate::net::{InBuf, Sock, timeout};
use crate::proxy::client::Client;
use crate::proxy::upstream::Upstream;
use crate::shard::Shard;

/// Relays until both directions are done. Bytes already read on either side (a frame that came
/// with the 101, say) go first. Returns the bytes relayed to the backend and to the client.
pub async fn run(shard: &Shard, client: &mut Client, up: &mut Upstream) -> (u64, u64) {
    let key = shard.track(&up.sock, None);
    let idle = shard.cfg.timeouts.tunnel;
    let last = Cell::new(Instant::now());
    let counters = &shard.stats.backends[up.backend];
    let (in_bytes, out_bytes) = (Cell::new(0), Cell::new(0));
    let to_backend = relay(
        (&client.sock, &up.sock),
        &mut client.buf,
        idle,
        &last,
        (&counters.request_bytes, &in_bytes),
    );
    let to_client = relay(
        (&up.sock, &client.sock),
        &mut up.buf,
        idle,
        &last,
        (&counters.response_bytes, &out_bytes),
    );
    let _ = future::zip(to_backend, to_client).await;
    shard.untrack(key);
    up.sock.shutdown_both();
    (in_bytes.get(), out_bytes.get())
}

/// Where one direction's bytes are counted: the backend's counter, and this tunnel's.
type Bytes<'a> = (&'a AtomicU64, &'a Cell<u64>);

/// One direction: `from` → `to`, then a half-close passed on. `last` is the time of the latest
/// traffic either way, so that a quiet direction does not end a busy tunnel; `bytes` counts what
/// went through.
async fn relay(
    (from, to): (&Sock, &Sock),
    buf: &mut InBuf,
    idle: Duration,
    last: &Cell<Instant>,
    bytes: Bytes<'_>,
) -> io::Result<()> {
    let r = relay_until_eof(from, to, buf, idle, last, bytes).await;
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
    (counter, tunnel): Bytes<'_>,
) -> io::Result<()> {
    loop {
        if !buf.is_empty() {
            to.write_all(buf.data()).await?;
            ShardStats::add(counter, buf.data().len());
            tunnel.set(tunnel.get() + buf.data().len() as u64);
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
