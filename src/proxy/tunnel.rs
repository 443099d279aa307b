//! After `101 Switching Protocols`: bytes relayed both ways, untouched, until both sides have
//! closed; a half-close is passed on, a reset or `--tunnel-timeout` of silence both ways ends both.
//!
//! **Splice-auto** (`--splice auto`, docs/splice.md): each direction copies through its read
//! buffer until one read brings [`SPLICE_MIN`] bytes; it writes those out, gives the buffer back
//! and moves bytes with splice(2) through a pipe from the shard's pool, until [`SMALL_SPLICES`]
//! splices in a row bring less, and then copies again, the pipe drained and returned. While a
//! spliced direction waits for its next bytes it holds no pipe either: the drained pipe goes back
//! to the pool and is taken again when bytes come. With no pipe to be had it stays on copy.

use std::cell::Cell;
use std::io;
use std::pin::pin;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::config::Splice;
use crate::metrics::ShardStats;
use crate::net::{self, InBuf, PIPE_LEN, PipePool, Sock};
use crate::proxy::client::Client;
use crate::proxy::upstream::Upstream;
use crate::shard::{Shard, Watch};

/// Relays until both directions are done. Bytes already read on either side (a frame that came
/// with the 101, say) go first. Returns the bytes relayed to the backend and to the client.
pub async fn run(shard: &Shard, client: &mut Client, up: &mut Upstream) -> (u64, u64) {
    // The client connection's watch, on the backend socket too: past its deadline the shard's
    // sweeper shuts both down, so that both directions' pending reads complete (with EOF) and the
    // relays end on their own: a read is never dropped while its tunnel lives, as a timeout
    // around each read would (a dropped io_uring read may have taken bytes), and the tunnel's
    // task holds no timer.
    let watch = client.idle.clone();
    let key = shard.track(&up.sock, Some(watch.clone()));
    // The one in force as the tunnel opens, for its whole life: a reload changes it for later ones.
    let quiet = Quiet {
        watch: &watch,
        limit: shard.settings().timeouts.tunnel,
    };
    quiet.traffic();
    let counters = &shard.stats.backends[up.backend];
    // A TLS client's bytes are records to decrypt or encrypt: no splice(2) for them.
    let splice = shard.settings().splice == Splice::Auto && !client.sock.is_tls();
    let pipes = splice.then_some(&shard.pipes);
    let spliced = &counters.tunnel_spliced_bytes;
    let (in_bytes, out_bytes) = (Cell::new(0), Cell::new(0));
    let to_backend = relay(
        (&client.sock, &up.sock),
        &mut client.buf,
        (&quiet, pipes),
        (&counters.request_bytes, &in_bytes, spliced),
    );
    let to_client = relay(
        (&up.sock, &client.sock),
        &mut up.buf,
        (&quiet, pipes),
        (&counters.response_bytes, &out_bytes, spliced),
    );
    // Pinned here, once: moved into a combinator, each would be stored twice in the state machine.
    let (to_backend, to_client) = (pin!(to_backend), pin!(to_client));
    let _ = future::zip(to_backend, to_client).await;
    watch.busy();
    shard.untrack(key);
    up.sock.shutdown_both();
    (in_bytes.get(), out_bytes.get())
}

/// Where one direction's bytes are counted: the backend's counter, this tunnel's, and the
/// backend's count of spliced ones.
type Bytes<'a> = (&'a AtomicU64, &'a Cell<u64>, &'a AtomicU64);

/// When the tunnel is closed for silence both ways, and the shard's pipes if it may splice.
type Ctx<'a> = (&'a Quiet<'a>, Option<&'a PipePool>);

/// A tunnel's `--tunnel-timeout`: each transfer either way moves the deadline that the shard's
/// sweeper closes the tunnel at.
struct Quiet<'a> {
    watch: &'a Watch,
    limit: Duration,
}

impl Quiet<'_> {
    fn traffic(&self) {
        self.watch.deadline.set(Some(Instant::now() + self.limit));
    }
}

/// A read of at least this much turns splicing on: the measured crossover (docs/splice.md: no
/// gain at 8 KiB and below, 0.58-0.64x the copy's CPU at 16 KiB).
pub const SPLICE_MIN: usize = 16 * 1024;

/// This many splices in a row under [`SPLICE_MIN`] turn it off again: more than one, so that a
/// stream of messages a little over 16 KiB (a full splice, then a short tail) stays spliced.
const SMALL_SPLICES: u32 = 3;

/// Splices in a row that found more bytes queued before the direction lets other tasks run.
const SPLICES_PER_TURN: u32 = 4;

/// One direction: `from` → `to`, then a half-close passed on. Its traffic moves the tunnel's
/// deadline, so that a quiet direction does not end a busy tunnel; `bytes` counts what went
/// through.
async fn relay(
    (from, to): (&Sock, &Sock),
    buf: &mut InBuf,
    ctx: Ctx<'_>,
    bytes: Bytes<'_>,
) -> io::Result<()> {
    let r = relay_until_eof(from, to, buf, ctx, bytes).await;
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
    (quiet, pipes): Ctx<'_>,
    bytes: Bytes<'_>,
) -> io::Result<()> {
    // Bytes that came with the upgrade (a frame right behind the 101, say) go first.
    flush(buf, to, bytes, quiet).await?;
    loop {
        // Between messages (a Wt session's WebSocket is mostly idle) the direction holds no
        // buffer: it waits for readability, then takes one from the shard's pool for the read,
        // and gives it back once written out.
        let n = buf.read_idle(from).await?;
        if n == 0 {
            to.shutdown_write();
            return Ok(());
        }
        // What a read brought goes out first, by copy: bytes leave in order.
        flush(buf, to, bytes, quiet).await?;
        if n >= SPLICE_MIN
            && let Some(pipe) = pipes.and_then(PipePool::take)
        {
            // Splicing holds no buffer: the pipe is all this direction needs.
            buf.release();
            if splice_while_large((from, to), pipe, pipes, quiet, bytes).await? {
                to.shutdown_write();
                return Ok(());
            }
        }
    }
}

/// Writes out what the buffer holds, and counts it.
async fn flush(buf: &mut InBuf, to: &Sock, bytes: Bytes<'_>, quiet: &Quiet<'_>) -> io::Result<()> {
    if !buf.is_empty() {
        let n = buf.data().len();
        buf.write_to(to, n).await?;
        count(bytes, n, quiet);
        buf.consume(n);
    }
    Ok(())
}

fn count((counter, tunnel, _): Bytes<'_>, n: usize, quiet: &Quiet<'_>) {
    ShardStats::add(counter, n);
    tunnel.set(tunnel.get() + n as u64);
    quiet.traffic();
}

/// Splices `from` → `to` until EOF (`true`) or [`SMALL_SPLICES`] small splices in a row
/// (`false`). The pipe is drained after every fill, so it goes back to its pool empty; on an
/// error it may not be, and is closed instead.
async fn splice_while_large<'p>(
    (from, to): (&Sock, &Sock),
    mut pipe: net::Pipe<'p>,
    pipes: Option<&'p PipePool>,
    quiet: &Quiet<'_>,
    bytes: Bytes<'_>,
) -> io::Result<bool> {
    // A large read came just before: more is probably queued, so try before polling.
    let (mut small, mut turn) = (0, 0);
    loop {
        let Some(n) = pipe.try_fill(from, PIPE_LEN)? else {
            match wait_without(pipe, from, pipes).await? {
                Some(p) => pipe = p,
                None => return Ok(false),
            }
            continue;
        };
        if n == 0 {
            return Ok(true);
        }
        pipe.drain(to).await?;
        count(bytes, n, quiet);
        ShardStats::add(bytes.2, n);
        let large = n >= SPLICE_MIN;
        small = if large { 0 } else { small + 1 };
        if small >= SMALL_SPLICES {
            return Ok(false);
        }
        turn = if large { turn + 1 } else { 0 };
        if turn >= SPLICES_PER_TURN {
            turn = 0;
            net::yield_once().await;
        }
        if !large {
            // Less than the threshold most likely took all there was: wait before the next try.
            match wait_without(pipe, from, pipes).await? {
                Some(p) => pipe = p,
                None => return Ok(false),
            }
        }
    }
}

/// Waits until `from` has bytes, without holding `pipe` (drained): a direction between bursts,
/// maybe for long (a Wt WebSocket between pushes), holds no pipe. Then a pipe again from the pool,
/// or `None` if none is free (the direction copies).
async fn wait_without<'p>(
    pipe: net::Pipe<'p>,
    from: &Sock,
    pipes: Option<&'p PipePool>,
) -> io::Result<Option<net::Pipe<'p>>> {
    drop(pipe);
    from.readable().await?;
    Ok(pipes.and_then(PipePool::take))
}
