//! Choosing and connecting an upstream for one try of a request — routing, the pool, connect
//! retries — and the one place that decides, when a try fails, whether the request is sent again,
//! answered with a status of our own, or both connections closed ([`verdict`]).

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use crate::config::{ProxySettings, Reuse};
use crate::h1::RequestHead;
use crate::health::{Cause, FailReason, Gossip};
use crate::metrics::{Held, ShardStats};
use crate::net::{self, InBuf, Sock};
use crate::proxy::ProxyError;
use crate::route::Decision;
use crate::shard::Shard;

/// Sends of one request after its backend connection closed before answering, at most.
const MAX_RESENDS: u32 = 2;

/// A backend connection got for one try of a request, with its read buffer.
pub struct Upstream {
    pub backend: usize,
    pub sock: Sock,
    /// Taken from the pool (it served requests before) rather than connected for this try.
    pub pooled: bool,
    /// The backend owns the request's session (routed by affinity).
    pub affinity: bool,
    /// How the backend was chosen.
    pub decision: Decision,
    pub buf: InBuf,
    /// Counts the connection as in use until the try is over.
    pub _in_use: Held,
}

/// How far an exchange with a backend got: what a failure still allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Progress {
    /// Nothing of the request has reached the backend.
    NothingSent,
    /// The request head (and any body bytes that came with it) went out.
    RequestSent,
    /// At least one response byte came back: the backend has acted on the request.
    BackendAnswered,
    /// Bytes of a response went to the client: only closing both sides is left.
    ClientGotBytes,
}

/// What to do after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Route the request again (health and admin states as for a first try), on a fresh
    /// connection.
    Resend,
    /// Answer the client with this status, then close both connections.
    Answer(u16),
    /// Close both connections without a word: the client has part of a response, or is gone.
    Close,
}

/// The retry rules of docs/design.md ("HTTP/1.1", "Health"): a request whose backend connection
/// closed before a single response byte is sent again if it is safe to replay (the backend cannot
/// have answered, and a safe request may be repeated anyway), up to twice; anything else is
/// answered with the failure's status while the client has nothing of a response yet.
pub fn verdict(err: ProxyError, progress: Progress, replayable: bool, resends: u32) -> Verdict {
    if progress == Progress::ClientGotBytes || err == ProxyError::ClientGone {
        return Verdict::Close;
    }
    let unanswered = progress < Progress::BackendAnswered;
    if err.may_resend() && unanswered && replayable && resends < MAX_RESENDS {
        return Verdict::Resend;
    }
    Verdict::Answer(err.status())
}

/// Whether a request may go on a pooled backend connection (`--reuse`). An upgrade never does:
/// real Wt servers close a WebSocket upgraded on a connection that served a request before.
/// Under `safe`, the first request of a client connection does only if we can resend it
/// ourselves should the pooled connection turn out stale: a browser does not retry the first
/// request of a connection, so a POST opening one must not meet that race. (HAProxy's `safe`
/// gives every first request its own connection; resending replayable requests lets wtgate keep
/// reuse for them, which measured 28 % less proxy CPU per request with a new client connection
/// per request.)
pub fn may_reuse(reuse: Reuse, req: &RequestHead, earlier_requests: u64) -> bool {
    match reuse {
        _ if req.upgrade => false,
        Reuse::Never => false,
        Reuse::Safe => earlier_requests > 0 || req.safe_to_replay,
        Reuse::Always => true,
    }
}

/// Where one try of a request may go.
#[derive(Debug, Clone, Copy)]
pub struct Try {
    pub use_pool: bool,
    /// A backend that just failed this request.
    pub exclude: Option<usize>,
}

impl Try {
    pub fn first(use_pool: bool) -> Try {
        Try {
            use_pool,
            exclude: None,
        }
    }

    /// After `failed` closed before answering: a fresh connection, and not to a backend whose
    /// fresh connection died (crashing or stopping); a stale pooled one says nothing about it.
    pub fn resend(failed: &Upstream) -> Try {
        Try {
            use_pool: false,
            exclude: (!failed.pooled).then_some(failed.backend),
        }
    }
}

/// Connect timeout of a try on a backend marked down: a refusal comes in microseconds, and a
/// session's request must not wait long on an owner that does not answer.
const LONG_SHOT_CONNECT: Duration = Duration::from_secs(1);

/// Picks a backend and gets a connection to it: pooled if allowed, else a new connect. A
/// backend whose connect fails is marked down (on every shard), so the next try goes elsewhere;
/// `retries` connects to backends thought up are made at most. When routing finds nothing to try,
/// the request waits for a backend to come back, up to `--queue-timeout`. `s`: the request's
/// settings. `queued`: set once the request has waited.
pub async fn connect(
    shard: &Shard,
    target: &[u8],
    mut how: Try,
    s: &ProxySettings,
    queued: &Cell<bool>,
) -> Result<Upstream, ProxyError> {
    let (mut failed, mut attempts, mut deadline) = (None::<usize>, 0, None);
    loop {
        let decision = shard.route(target, how.exclude);
        let Some(backend) = decision.backend() else {
            if how.exclude.is_some_and(|b| shard.is_up(b)) {
                // Only the backend this request just failed on is left, and it is up: waiting
                // would not change that. The caller answers with that failure.
                return Err(ProxyError::NoBackend);
            }
            queue(shard, &mut deadline, s, queued).await?;
            // What failed for this request may be what came back.
            how.exclude = None;
            continue;
        };
        let long_shot = decision.is_long_shot();
        attempts += u32::from(!long_shot);
        if attempts > s.retries {
            return Err(ProxyError::NoBackend);
        }
        count_attempt(shard, backend, failed.take());
        // Taken before the connect: it remembers where the backend was when the connect began.
        let in_use = Held::new(&shard.stats, backend, |b| &b.active);
        let (sock, pooled) = open(shard, backend, how.use_pool, long_shot, s).await;
        if in_use.moved() {
            // A reload moved the backend while we connected: the socket (or the failure) is its
            // old address's. Neither serves the request nor says anything of the new address.
            continue;
        }
        match sock {
            Ok(sock) => {
                let buf = InBuf::new(shard.bufs.clone());
                return Ok(Upstream {
                    backend,
                    sock,
                    pooled,
                    affinity: matches!(decision, Decision::Owner(_) | Decision::OwnerRetry(_)),
                    decision,
                    buf,
                    _in_use: in_use,
                });
            }
            Err(e) if !FailReason::from_io(&e).is_backend_fault() => {
                return Err(own_fault(shard, backend, &e));
            }
            Err(e) => {
                mark_down(shard, backend, &e);
                how.exclude = Some(backend);
                failed = Some(backend);
            }
        }
    }
}

/// One more try of a request, on `backend`; `after`: the backend whose connect failed before it.
fn count_attempt(shard: &Shard, backend: usize, after: Option<usize>) {
    if let Some(f) = after {
        ShardStats::count(&shard.stats.backends[f].retries);
    }
    ShardStats::count(&shard.stats.backends[backend].attempts);
}

/// Nothing to try now: waits for a backend to come back (or a try on one marked down to be due),
/// within `--queue-timeout` of the first wait (`deadline`, set then).
async fn queue(
    shard: &Shard,
    deadline: &mut Option<Instant>,
    s: &ProxySettings,
    queued: &Cell<bool>,
) -> Result<(), ProxyError> {
    let until = *deadline.get_or_insert_with(|| {
        ShardStats::count(&shard.stats.queued);
        queued.set(true);
        Instant::now() + s.timeouts.queue
    });
    match shard.wait_for_backend(until).await {
        true => Ok(()),
        false => Err(ProxyError::NoBackend),
    }
}

/// A connection to `backend`: pooled if `use_pool` and one is there (`true`), else a new one.
async fn open(
    shard: &Shard,
    backend: usize,
    use_pool: bool,
    long_shot: bool,
    s: &ProxySettings,
) -> (io::Result<Sock>, bool) {
    if let Some(sock) = use_pool.then(|| shard.pooled(backend)).flatten() {
        return (Ok(sock), true);
    }
    let limit = match long_shot {
        true => s.timeouts.connect.min(LONG_SHOT_CONNECT),
        false => s.timeouts.connect,
    };
    (net::connect(shard.addr_of(backend), limit).await, false)
}

/// A connect that failed for want of a local resource: counted and logged as wtgate's own
/// fault; the backend stays up, and only this request gets a 503.
fn own_fault(shard: &Shard, backend: usize, e: &io::Error) -> ProxyError {
    let (prefix, addr) = (shard.prefix(backend), shard.addr_of(backend));
    shard.log_failure(format_args!(
        "cannot connect to backend {prefix} ({addr}): {e}: wtgate's own limit, not the \
         backend's fault (it stays up); raise the open-files limit or lower --maxconn"
    ));
    ProxyError::ProxyResources
}

/// A failed connect is a passive health check: the backend is down, on every shard, at once.
fn mark_down(shard: &Shard, backend: usize, e: &io::Error) {
    ShardStats::count(&shard.stats.backends[backend].connect_failures);
    let cause = Cause::ConnectFailed {
        shard: shard.id,
        reason: FailReason::from_io(e),
    };
    shard.on_gossip(Gossip::Down { backend, cause }, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use Progress::*;
    use ProxyError::*;

    #[test]
    fn a_request_is_resent_only_if_unanswered_replayable_and_not_twice_already() {
        assert_eq!(
            verdict(UpstreamClosed, NothingSent, true, 0),
            Verdict::Resend
        );
        assert_eq!(
            verdict(UpstreamClosed, RequestSent, true, 1),
            Verdict::Resend
        );
        assert_eq!(
            verdict(UpstreamClosed, RequestSent, true, 2),
            Verdict::Answer(502)
        );
        assert_eq!(
            verdict(UpstreamClosed, RequestSent, false, 0),
            Verdict::Answer(502)
        );
        assert_eq!(
            verdict(UpstreamClosed, BackendAnswered, true, 0),
            Verdict::Answer(502)
        );
        assert_eq!(
            verdict(UpstreamTimeout, RequestSent, true, 0),
            Verdict::Answer(504)
        );
        assert_eq!(
            verdict(ResponseHeadCut, BackendAnswered, true, 0),
            Verdict::Answer(502)
        );
    }

    #[test]
    fn once_the_client_has_bytes_or_is_gone_only_closing_is_left() {
        for err in ProxyError::ALL {
            assert_eq!(
                verdict(err, ClientGotBytes, true, 0),
                Verdict::Close,
                "{err:?}"
            );
        }
        assert_eq!(verdict(ClientGone, RequestSent, true, 0), Verdict::Close);
        assert_eq!(
            verdict(ClientTimeout, RequestSent, false, 0),
            Verdict::Answer(408)
        );
        assert_eq!(
            verdict(BadRequestBody, RequestSent, false, 0),
            Verdict::Answer(400)
        );
    }

    fn head(raw: &[u8]) -> RequestHead {
        crate::h1::parse_request(raw, &crate::h1::Limits::default())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn reuse_policy() {
        let get = head(b"GET /?wtd=x HTTP/1.1\r\nHost: a\r\n\r\n");
        let post = head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n");
        let ws = head(
            b"GET /?request=ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\
Upgrade: websocket\r\n\r\n",
        );
        assert!(ws.upgrade);
        for reuse in [Reuse::Safe, Reuse::Always, Reuse::Never] {
            assert!(!may_reuse(reuse, &ws, 0) && !may_reuse(reuse, &ws, 5));
        }
        assert!(may_reuse(Reuse::Safe, &get, 0) && may_reuse(Reuse::Safe, &get, 1));
        assert!(!may_reuse(Reuse::Safe, &post, 0) && may_reuse(Reuse::Safe, &post, 1));
        assert!(may_reuse(Reuse::Always, &post, 0));
        assert!(!may_reuse(Reuse::Never, &get, 3));
    }
}
