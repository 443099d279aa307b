//! Counters each shard keeps about its backends, and the sum the engine reports.
//!
//! Every shard writes only its own `ShardStats` (relaxed atomics, no sharing between writers), so
//! counting costs the hot path nothing but an uncontended add; readers sum over shards. Gauges
//! (open tunnels, connections) are counters a shard raises and lowers itself, so a shard's own
//! value never goes below zero and the sum is the gauge.
//!
//! Latencies go into HDR histograms, one set per backend per shard behind a `Mutex` that only its
//! shard locks while serving (uncontended); a scrape locks each briefly to merge them.
//!
//! Backends are counted by slot (`config::reload`): every shard's tables have room for
//! [`MAX_SLOTS`] from the start, so that a reload adding a backend needs no lock and no new table
//! where the shards count; a slot's histograms are allocated when it first records one.

use crate::net::tls::HandshakeError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::access_log::DROP_REASONS;
use crate::config::Config;
use crate::config::reload::{MAX_SLOTS, Slot};
use crate::proxy::{ProxyError, Rejection};

#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Client requests this backend got, each counted once however many tries it took (the
    /// backend of the last try counts it).
    pub requests: AtomicU64,
    /// Tries to get a connection for a request: pooled or connected, retries and resends included.
    pub attempts: AtomicU64,
    /// Failed connects to this backend after which the request was tried again elsewhere.
    pub retries: AtomicU64,
    /// Requests sent again because this backend's connection closed before answering.
    pub resends: AtomicU64,
    /// Connects of real requests that failed (passive checks), not active checks.
    pub connect_failures: AtomicU64,
    /// Requests of this backend's sessions sent elsewhere because it was down or in maintenance.
    pub redispatched: AtomicU64,
    /// Active checks that failed.
    pub checks_failed: AtomicU64,
    /// Requests routed to this backend because it owns their session.
    pub affinity_hits: AtomicU64,
    /// Requests whose last try, on this backend, ended in a failure (a [`ProxyError`]).
    pub failed: AtomicU64,
    /// Final response heads relayed from this backend, by status class: 1xx (101) … 5xx.
    pub responses: [AtomicU64; 5],
    /// Bytes written to this backend: request heads as forwarded, bodies, tunnel traffic.
    pub request_bytes: AtomicU64,
    /// Bytes of this backend's responses written to clients, tunnel traffic included.
    pub response_bytes: AtomicU64,
    /// Of the tunnel bytes above (both ways), those moved with splice(2) (`--splice auto`).
    pub tunnel_spliced_bytes: AtomicU64,
    /// Gauge: WebSocket (upgraded) tunnels open to it.
    pub tunnels: AtomicU64,
    /// Gauge: connections to it carrying a request or a tunnel.
    pub active: AtomicU64,
    /// Gauge: idle connections to it in this shard's pool.
    pub pooled: AtomicU64,
    /// Connections to it closed because it sent bytes with no request outstanding: after a
    /// response's end or while pooled.
    pub stray_closes: AtomicU64,
    /// Requests of its own sessions tried on it while it was marked down after a refused
    /// connect (a restart may be over), instead of moving the session at once.
    pub owner_retries: AtomicU64,
    /// Requests sent to it when no backend took new sessions: it was up but draining, or marked
    /// down and tried all the same (no backend up).
    pub fallbacks: AtomicU64,
    /// Whether this shard currently routes to it as up.
    pub up: AtomicBool,
    /// Whether this shard sees it stalled: requests wait on it with no answer at all.
    pub stalled: AtomicBool,
    /// Reloads that moved it to another address (or brought it back), as its shard applied them:
    /// a connection taken before the last one ([`Held::moved`]) is not pooled again.
    pub moves: AtomicU64,
}

impl BackendCounters {
    /// Counts a relayed final response head.
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        ShardStats::count(&self.responses[class]);
    }
}

/// One listening address of one shard.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    pub accepted: AtomicU64,
    /// Gauge: client connections being served.
    pub open: AtomicU64,
}

#[derive(Debug)]
pub struct ShardStats {
    /// By backend slot, [`MAX_SLOTS`] of them.
    pub backends: Vec<BackendCounters>,
    /// Client requests with a valid head, whatever became of them.
    pub requests: AtomicU64,
    /// Requests answered 503 because no backend was usable, after waiting `--queue-timeout`.
    pub no_backend: AtomicU64,
    /// Requests that found no backend to try and waited for one to come back.
    pub queued: AtomicU64,
    /// Gauge: splice pipes held by this shard's tunnels (shared with its pipe pool).
    pub pipes: Arc<AtomicU64>,
    /// Requests that did not end with a backend's complete answer, by [`ProxyError::index`].
    pub failures: [AtomicU64; ProxyError::ALL.len()],
    /// Connections refused before routing, by [`Rejection::index`].
    pub rejections: [AtomicU64; Rejection::ALL.len()],
    /// One per `Config::listen` address, in order.
    pub listeners: Vec<ListenerCounters>,
    /// By backend slot, allocated at its first sample.
    pub latency: Vec<Mutex<Option<Box<Latency>>>>,
    /// Access-log lines this shard formatted, and those of them lost, by
    /// [`crate::access_log::DROP_REASONS`].
    pub access_log_lines: AtomicU64,
    pub access_log_dropped: [AtomicU64; 2],
    /// TLS handshakes done, by [`crate::net::tls::Agreed::index`] (version, resumed or not).
    pub tls_handshakes: [AtomicU64; 4],
    /// TLS handshakes failed, by [`crate::net::tls::HandshakeError::index`]; and timed out.
    pub tls_failures: [AtomicU64; 7],
    pub tls_timeouts: AtomicU64,
    /// TLS connections the client ended without `close_notify`.
    pub tls_unclean_ends: AtomicU64,
    /// TLS connections ended by an error after their handshake: a bad record, a fatal alert
    /// from the client, a renegotiation attempt (refused).
    pub tls_record_errors: AtomicU64,
}

impl ShardStats {
    /// Counters for `cfg`'s listeners, and for as many backends as a reload can add.
    pub fn new(cfg: &Config) -> ShardStats {
        ShardStats {
            backends: (0..MAX_SLOTS)
                .map(|_| BackendCounters {
                    up: AtomicBool::new(true),
                    ..BackendCounters::default()
                })
                .collect(),
            requests: AtomicU64::new(0),
            no_backend: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            pipes: Arc::default(),
            failures: Default::default(),
            rejections: Default::default(),
            listeners: cfg.listen.iter().map(|_| Default::default()).collect(),
            latency: (0..MAX_SLOTS).map(|_| Mutex::new(None)).collect(),
            access_log_lines: AtomicU64::new(0),
            access_log_dropped: Default::default(),
            tls_handshakes: Default::default(),
            tls_failures: Default::default(),
            tls_timeouts: AtomicU64::new(0),
            tls_unclean_ends: AtomicU64::new(0),
            tls_record_errors: AtomicU64::new(0),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records a completed exchange with `backend`: its request head came at `started`, the first
    /// response byte at `first_byte`, and its end at `end` (`None` for a tunnel, which has none).
    /// The latest of them serves as now, to spare the hot path a clock read.
    pub fn record_latency(
        &self,
        backend: usize,
        started: Instant,
        first_byte: Instant,
        end: Option<Instant>,
    ) {
        let mut l = self.latency[backend]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let l = l.get_or_insert_with(|| Box::new(Latency::new(started)));
        l.rotate(end.unwrap_or(first_byte));
        l.first_byte
            .record(first_byte.saturating_duration_since(started));
        if let Some(end) = end {
            l.total.record(end.saturating_duration_since(started));
        }
    }
}

/// Raises a gauge of one backend for as long as it lives: a connection or a tunnel in use. A
/// guard rather than paired calls, because a shard that stops drops its connections' futures
/// wherever they are.
pub struct Held {
    stats: Arc<ShardStats>,
    backend: usize,
    gauge: fn(&BackendCounters) -> &AtomicU64,
    /// The backend's `moves` when this was taken.
    moves: u64,
}

impl Held {
    pub fn new(
        stats: &Arc<ShardStats>,
        backend: usize,
        gauge: fn(&BackendCounters) -> &AtomicU64,
    ) -> Held {
        let counters = &stats.backends[backend];
        ShardStats::count(gauge(counters));
        Held {
            stats: stats.clone(),
            backend,
            gauge,
            moves: counters.moves.load(Ordering::Relaxed),
        }
    }

    pub fn backend(&self) -> usize {
        self.backend
    }

    /// A reload moved the backend to another address since this was taken: what it counts (a
    /// connection) is to where the backend was.
    pub fn moved(&self) -> bool {
        let counters = &self.stats.backends[self.backend];
        counters.moves.load(Ordering::Relaxed) != self.moves
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.gauge)(&self.stats.backends[self.backend]).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Quantiles are over a window of the last one to two [`LATENCY_WINDOW`]s, so that they show how
/// a backend answers now rather than since start; counts and sums are since start.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);
/// Latencies are recorded in microseconds up to this; longer ones count as this long.
const LATENCY_MAX: Duration = Duration::from_secs(600);

/// One backend's latencies on one shard.
#[derive(Debug)]
pub struct Latency {
    /// From the request head to the backend's first response byte.
    pub first_byte: Window,
    /// From the request head to the end of the response relayed.
    pub total: Window,
    /// When the current window started.
    started: Instant,
}

/// Two histograms: the window being filled and the one before.
#[derive(Debug, Clone)]
pub struct Window {
    current: Histogram<u32>,
    previous: Histogram<u32>,
    count: u64,
    sum: Duration,
}

impl Window {
    fn new() -> Window {
        // 2 significant digits (1 % error) over 1 µs..600 s: about 12 KiB per histogram.
        let max = LATENCY_MAX.as_micros() as u64;
        let h = Histogram::new_with_bounds(1, max, 2).expect("valid histogram bounds");
        Window {
            previous: h.clone(),
            current: h,
            count: 0,
            sum: Duration::ZERO,
        }
    }

    fn record(&mut self, d: Duration) {
        let us = d.as_micros().clamp(1, LATENCY_MAX.as_micros()) as u64;
        self.current.saturating_record(us);
        self.count += 1;
        self.sum += d;
    }
}

impl Latency {
    pub fn new(now: Instant) -> Latency {
        Latency {
            first_byte: Window::new(),
            total: Window::new(),
            started: now,
        }
    }

    /// Moves to a new window once the current one is [`LATENCY_WINDOW`] old; a window older than
    /// two is forgotten entirely. Writers and readers both call it, so an idle backend's old
    /// samples age out without new ones.
    pub fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.started);
        if age < LATENCY_WINDOW {
            return;
        }
        for w in [&mut self.first_byte, &mut self.total] {
            if age >= 2 * LATENCY_WINDOW {
                w.previous.reset();
            } else {
                std::mem::swap(&mut w.previous, &mut w.current);
            }
            w.current.reset();
        }
        self.started = now;
    }
}

/// Latencies of one backend merged over shards.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    /// Samples since start.
    pub count: u64,
    /// Sum of all samples since start, in seconds.
    pub sum_s: f64,
    /// `(q, seconds)` for each of [`QUANTILES`], over the recent window; `None` when the window
    /// holds no sample.
    pub quantiles: Vec<(f64, Option<f64>)>,
}

/// The quantiles reported.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// First-byte and total latency summaries of `backend`, merged over `shards`.
pub fn latency(
    shards: &[Arc<ShardStats>],
    backend: usize,
    now: Instant,
) -> (LatencySummary, LatencySummary) {
    let mut first = Window::new();
    let mut total = Window::new();
    for s in shards {
        let mut l = s.latency[backend].lock().unwrap_or_else(|e| e.into_inner());
        let Some(l) = l.as_mut() else { continue };
        l.rotate(now);
        for (into, from) in [(&mut first, &l.first_byte), (&mut total, &l.total)] {
            // Same bounds everywhere, so adding cannot fail.
            let _ = into.current.add(&from.current);
            let _ = into.current.add(&from.previous);
            into.count += from.count;
            into.sum += from.sum;
        }
    }
    (summary(&first), summary(&total))
}

fn summary(w: &Window) -> LatencySummary {
    let h = &w.current;
    LatencySummary {
        count: w.count,
        sum_s: w.sum.as_secs_f64(),
        quantiles: QUANTILES
            .iter()
            .map(|&q| {
                let v = (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e6);
                (q, v)
            })
            .collect(),
    }
}

/// One backend, summed over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    pub prefix: String,
    /// Removed by a reload; its counters stay, and its gauges count what still runs to it.
    pub removed: bool,
    pub requests: u64,
    pub attempts: u64,
    pub retries: u64,
    pub resends: u64,
    pub connect_failures: u64,
    pub redispatched: u64,
    pub checks_failed: u64,
    pub affinity_hits: u64,
    pub failed: u64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub tunnel_spliced_bytes: u64,
    pub tunnels: u64,
    /// Connections carrying a request or a tunnel.
    pub active: u64,
    /// Idle connections in the shards' pools.
    pub pooled: u64,
    pub stray_closes: u64,
    pub owner_retries: u64,
    pub fallbacks: u64,
    /// How many shards see it up (all of them, or none, once gossip has settled).
    pub up_on_shards: usize,
    /// How many shards see requests wait on it with no answer at all (frozen, stuck).
    pub stalled_on_shards: usize,
}

/// One listen address, summed over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStats {
    pub accepted: u64,
    pub open: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub backends: Vec<BackendStats>,
    pub requests: u64,
    pub no_backend: u64,
    pub queued: u64,
    /// Splice pipes held by tunnels (two descriptors each), as of the shards' last sweeps.
    pub pipes: u64,
    /// Failed requests per [`ProxyError`] kind, by name.
    pub failures: Vec<(&'static str, u64)>,
    /// Refused connections per [`Rejection`] kind, by name.
    pub rejections: Vec<(&'static str, u64)>,
    /// One per `Config::listen` address, in order.
    pub listeners: Vec<ListenerStats>,
    pub shards: usize,
    /// Access-log lines formatted, and those lost, by reason.
    pub access_log_lines: u64,
    pub access_log_dropped: Vec<(&'static str, u64)>,
    /// TLS handshakes done: (TLS 1.3, resumed, count), four rows.
    pub tls_handshakes: Vec<(bool, bool, u64)>,
    /// TLS handshakes failed, by reason (`timeout` included).
    pub tls_failures: Vec<(&'static str, u64)>,
    pub tls_unclean_ends: u64,
    pub tls_record_errors: u64,
}

impl Stats {
    /// The shards' counters summed: one entry per backend slot, one per listener.
    pub fn sum(slots: &[Slot], listeners: usize, shards: &[std::sync::Arc<ShardStats>]) -> Stats {
        let sum = |f: &dyn Fn(&ShardStats) -> &AtomicU64| -> u64 {
            shards.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };
        let backends = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| BackendStats::sum(i, slot, shards))
            .collect();
        Stats {
            backends,
            requests: sum(&|s| &s.requests),
            no_backend: sum(&|s| &s.no_backend),
            queued: sum(&|s| &s.queued),
            pipes: sum(&|s| &*s.pipes),
            failures: ProxyError::ALL
                .iter()
                .map(|e| (e.name(), sum(&|s| &s.failures[e.index()])))
                .collect(),
            rejections: Rejection::ALL
                .iter()
                .map(|r| (r.name(), sum(&|s| &s.rejections[r.index()])))
                .collect(),
            listeners: (0..listeners)
                .map(|i| ListenerStats {
                    accepted: sum(&|s| &s.listeners[i].accepted),
                    open: sum(&|s| &s.listeners[i].open),
                })
                .collect(),
            shards: shards.len(),
            access_log_lines: sum(&|s| &s.access_log_lines),
            access_log_dropped: (DROP_REASONS.iter().enumerate())
                .map(|(i, r)| (*r, sum(&|s| &s.access_log_dropped[i])))
                .collect(),
            tls_handshakes: (0..4)
                .map(|i| (i >= 2, i % 2 == 1, sum(&|s| &s.tls_handshakes[i])))
                .collect(),
            tls_failures: (HandshakeError::NAMES.iter().enumerate())
                .map(|(i, r)| (*r, sum(&|s| &s.tls_failures[i])))
                .chain([("timeout", sum(&|s| &s.tls_timeouts))])
                .collect(),
            tls_unclean_ends: sum(&|s| &s.tls_unclean_ends),
            tls_record_errors: sum(&|s| &s.tls_record_errors),
        }
    }

    /// The stats of the backend with this prefix.
    pub fn backend(&self, prefix: &str) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.prefix == prefix)
    }
}

impl BackendStats {
    /// Slot `i`'s counters summed over the shards.
    fn sum(i: usize, slot: &Slot, shards: &[std::sync::Arc<ShardStats>]) -> BackendStats {
        let sum = |f: &dyn Fn(&ShardStats) -> &AtomicU64| -> u64 {
            shards.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };
        BackendStats {
            prefix: slot.backend.prefix.clone(),
            removed: slot.removed,
            requests: sum(&|s| &s.backends[i].requests),
            attempts: sum(&|s| &s.backends[i].attempts),
            retries: sum(&|s| &s.backends[i].retries),
            resends: sum(&|s| &s.backends[i].resends),
            connect_failures: sum(&|s| &s.backends[i].connect_failures),
            redispatched: sum(&|s| &s.backends[i].redispatched),
            checks_failed: sum(&|s| &s.backends[i].checks_failed),
            affinity_hits: sum(&|s| &s.backends[i].affinity_hits),
            failed: sum(&|s| &s.backends[i].failed),
            responses: std::array::from_fn(|c| sum(&|s| &s.backends[i].responses[c])),
            request_bytes: sum(&|s| &s.backends[i].request_bytes),
            response_bytes: sum(&|s| &s.backends[i].response_bytes),
            tunnel_spliced_bytes: sum(&|s| &s.backends[i].tunnel_spliced_bytes),
            tunnels: sum(&|s| &s.backends[i].tunnels),
            active: sum(&|s| &s.backends[i].active),
            pooled: sum(&|s| &s.backends[i].pooled),
            stray_closes: sum(&|s| &s.backends[i].stray_closes),
            owner_retries: sum(&|s| &s.backends[i].owner_retries),
            fallbacks: sum(&|s| &s.backends[i].fallbacks),
            up_on_shards: shards
                .iter()
                .filter(|s| s.backends[i].up.load(Ordering::Relaxed))
                .count(),
            stalled_on_shards: shards
                .iter()
                .filter(|s| s.backends[i].stalled.load(Ordering::Relaxed))
                .count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantiles_merge_shards_and_cover_one_to_two_windows() {
        let t0 = Instant::now();
        let (mut a, mut b) = (Latency::new(t0), Latency::new(t0));
        for i in 1..=90 {
            a.first_byte.record(ms(i));
        }
        for i in 91..=100 {
            b.first_byte.record(ms(i));
        }
        let merged = |a: &Latency, b: &Latency| {
            let mut w = Window::new();
            for l in [a, b] {
                w.current.add(&l.first_byte.current).unwrap();
                w.current.add(&l.first_byte.previous).unwrap();
                w.count += l.first_byte.count;
                w.sum += l.first_byte.sum;
            }
            summary(&w)
        };
        let s = merged(&a, &b);
        assert_eq!(s.count, 100);
        assert!((s.sum_s - 5.050).abs() < 1e-9, "{}", s.sum_s);
        let q = |s: &LatencySummary, i: usize| s.quantiles[i].1.unwrap();
        assert!((q(&s, 0) - 0.050).abs() < 0.001, "{s:?}");
        assert!((q(&s, 2) - 0.099).abs() < 0.001, "{s:?}");
        // One window later the samples are still there (previous window); two later, gone, but
        // the count and sum since start stay.
        a.rotate(t0 + LATENCY_WINDOW);
        b.rotate(t0 + LATENCY_WINDOW);
        assert_eq!(merged(&a, &b).quantiles, s.quantiles);
        a.first_byte.record(ms(7));
        a.rotate(t0 + 2 * LATENCY_WINDOW);
        b.rotate(t0 + 2 * LATENCY_WINDOW);
        let later = merged(&a, &b);
        assert!((q(&later, 3) - 0.007).abs() < 0.0001, "{later:?}");
        assert_eq!(later.count, 101);
        a.rotate(t0 + 5 * LATENCY_WINDOW);
        let idle = merged(&a, &b);
        assert!(idle.quantiles.iter().all(|(_, v)| v.is_none()), "{idle:?}");
    }

    #[test]
    fn held_gauges_go_back_down_when_dropped() {
        let cfg = Config {
            backends: vec![crate::config::BackendConfig::parse("wt1=127.0.0.1:1").unwrap()],
            ..Config::default()
        };
        let stats = Arc::new(ShardStats::new(&cfg));
        let tunnels = |s: &ShardStats| s.backends[0].tunnels.load(Ordering::Relaxed);
        let a = Held::new(&stats, 0, |b| &b.tunnels);
        let b = Held::new(&stats, 0, |b| &b.tunnels);
        assert_eq!(tunnels(&stats), 2);
        drop(a);
        assert_eq!(tunnels(&stats), 1);
        drop(b);
        assert_eq!(tunnels(&stats), 0);
    }

    #[test]
    fn status_classes() {
        let c = BackendCounters::default();
        for s in [101, 200, 204, 302, 404, 503, 599] {
            c.count_response(s);
        }
        let got: Vec<u64> = c
            .responses
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect();
        assert_eq!(got, [1, 2, 1, 1, 2]);
    }
}
