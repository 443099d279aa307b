//! Active health checks, the I/O half: one TCP connect, or one `GET <path>` whose status must be
//! 2xx/3xx, all within one time limit, every `check_interval`, by the one shard that checks the
//! backend. The rise/fall rules live in `health.rs`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::Check;
use crate::h1;
use crate::health::{Cause, FailReason, Gossip};
use crate::metrics::ShardStats;
use crate::net::{BufPool, InBuf, timeout};
use crate::shard::Shard;

/// `Ok` if the backend passes `check` within `limit`, else why not.
pub async fn probe(addr: SocketAddr, check: &Check, limit: Duration) -> Result<(), FailReason> {
    let verdict = timeout(limit, async {
        let sock = crate::net::connect(addr, limit).await?;
        let Check::Http(path) = check else {
            return Ok(Ok(()));
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wtgate-check\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(req.into_bytes()).await.0?;
        let limits = h1::Limits::default();
        let mut buf = InBuf::new(Rc::new(BufPool::new(limits.max_head_bytes + 1024, 0)));
        loop {
            if buf.is_full() {
                return Ok(Err(FailReason::BadResponse));
            }
            if buf.read_from(&sock).await? == 0 {
                return Ok(Err(FailReason::Closed));
            }
            match h1::parse_response(buf.data(), &limits, false) {
                Ok(Some(head)) if (100..200).contains(&head.status) => {
                    buf.consume(head.head_len)
                }
                Ok(Some(head)) if (200..400).contains(&head.status) => return Ok(Ok(())),
                Ok(Some(head)) => return Ok(Err(FailReason::Status(head.status))),
                Ok(None) => {}
                Err(_) => return Ok(Err(FailReason::BadResponse)),
            }
        }
    })
    .await;
    verdict.unwrap_or_else(|e| Err(FailReason::from_io(&e)))
}

/// Checks `backend` every `check_interval` for as long as the shard runs; `fall` failures in a row
/// take it down, `rise` successes bring it back, on every shard. The loops the shard starts with.
pub async fn check_loop(shard: Rc<Shard>, backend: usize) {
    check_loop_from(shard, backend, 0).await;
}

/// `check_loop` as started by a reload, at `epoch` (see `Shard::probe_of`): it ends when a later
/// reload removes the backend or changes its check, and a probe under way then counts for
/// nothing, so that no result about an old address reaches the shards.
///
/// Its first good check is told to the other shards even if it changes nothing here: one of them
/// may have heard, just before it applied the reload, that the backend's old address was down.
pub async fn check_loop_from(shard: Rc<Shard>, backend: usize, epoch: u64) {
    let (mut last_failure, mut announced) = (None, false);
    let (mut last_start, mut resolved): (Option<Instant>, Option<Instant>) = (None, None);
    while let Some(before) = shard.probe_of(backend, epoch) {
        // A backend down or failing is checked every `down_interval`, so that one that is back
        // serves again within `rise` of them, and one that fails is out soon.
        let every = match shard.is_up(backend) && last_failure.is_none() {
            true => before.interval,
            false => before.down_interval,
        };
        // Checks start an interval apart, however long the last one took.
        let since = last_start.map_or(Duration::ZERO, |t| t.elapsed());
        crate::net::sleep(every.saturating_sub(since)).await;
        let Some(p) = shard.probe_of(backend, epoch) else {
            return;
        };
        let addr = shard.addr_of(backend);
        last_start = Some(Instant::now());
        let result = probe(addr, &p.check, p.limit).await;
        if shard.probe_of(backend, epoch).is_none() {
            return;
        }
        if let Err(reason) = result
            && !reason.is_backend_fault()
        {
            own_fault(&shard, backend, reason);
            continue;
        }
        if let Err(reason) = result {
            // A host name is looked up again at most once per `interval`, however fast the
            // checks of a down backend come.
            let resolve = resolved.is_none_or(|t| t.elapsed() >= p.interval);
            if resolve {
                resolved = Some(Instant::now());
            }
            on_failure(&shard, backend, reason, last_failure, resolve).await;
            if shard.probe_of(backend, epoch).is_none() {
                return;
            }
        }
        last_failure = result.err();
        match (shard.check_result(backend, result.is_ok()), result) {
            (Some(true), _) => shard.on_gossip(Gossip::Up { backend, addr }, true),
            (Some(false), Err(reason)) => {
                let cause = Cause::ChecksFailed { reason };
                shard.on_gossip(Gossip::Down { backend, cause }, true)
            }
            (None, Ok(())) if !announced && shard.is_up(backend) => {
                shard.announce(Gossip::Up { backend, addr })
            }
            _ => {}
        }
        announced = true;
    }
}

/// A check that failed for want of a local resource (descriptors, local ports) says nothing of
/// the backend: logged as wtgate's own fault, and counted neither way.
fn own_fault(shard: &Shard, backend: usize, reason: FailReason) {
    let (prefix, addr) = (shard.prefix(backend), shard.addr_of(backend));
    shard.log_failure(format_args!(
        "backend {prefix} ({addr}): active check could not run: {reason}: wtgate's own limit, \
         not the backend's fault (not counted)"
    ));
}

/// Counts and logs a failed check, then (if `resolve`) looks the backend's host name up again in
/// case it moved.
async fn on_failure(
    shard: &Shard,
    backend: usize,
    reason: FailReason,
    last: Option<FailReason>,
    resolve: bool,
) {
    ShardStats::count(&shard.stats.backends[backend].checks_failed);
    // A down backend fails every check; say so only when the reason changes.
    if shard.is_up(backend) || last != Some(reason) {
        let (prefix, addr) = (shard.prefix(backend), shard.addr_of(backend));
        shard.log_failure(format_args!(
            "backend {prefix} ({addr}): active check failed: {reason}"
        ));
    }
    if resolve {
        shard.re_resolve(backend).await;
    }
}
