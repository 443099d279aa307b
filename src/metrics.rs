//! Counters each shard keeps about its backends, and the sum the engine reports.
//!
//! Every shard writes only its own `ShardStats` (relaxed atomics, no sharing between writers), so
//! counting costs the hot path nothing but an uncontended add; readers sum over shards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::Config;
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
    /// Whether this shard currently routes to it as up.
    pub up: AtomicBool,
}

#[derive(Debug)]
pub struct ShardStats {
    pub backends: Vec<BackendCounters>,
    /// Client requests with a valid head, whatever became of them.
    pub requests: AtomicU64,
    /// Requests answered 503 because no backend was usable.
    pub no_backend: AtomicU64,
    /// Requests that did not end with a backend's complete answer, by [`ProxyError::index`].
    pub failures: [AtomicU64; ProxyError::ALL.len()],
    /// Connections refused before routing, by [`Rejection::index`].
    pub rejections: [AtomicU64; Rejection::ALL.len()],
}

impl ShardStats {
    pub fn new(cfg: &Config) -> ShardStats {
        ShardStats {
            backends: (0..cfg.backends.len())
                .map(|_| BackendCounters {
                    up: AtomicBool::new(true),
                    ..BackendCounters::default()
                })
                .collect(),
            requests: AtomicU64::new(0),
            no_backend: AtomicU64::new(0),
            failures: Default::default(),
            rejections: Default::default(),
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One backend, summed over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    pub prefix: String,
    pub requests: u64,
    pub attempts: u64,
    pub retries: u64,
    pub resends: u64,
    pub connect_failures: u64,
    pub redispatched: u64,
    pub checks_failed: u64,
    /// How many shards see it up (all of them, or none, once gossip has settled).
    pub up_on_shards: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub backends: Vec<BackendStats>,
    pub requests: u64,
    pub no_backend: u64,
    /// Failed requests per [`ProxyError`] kind, by name.
    pub failures: Vec<(&'static str, u64)>,
    /// Refused connections per [`Rejection`] kind, by name.
    pub rejections: Vec<(&'static str, u64)>,
}

impl Stats {
    pub fn sum(cfg: &Config, shards: &[std::sync::Arc<ShardStats>]) -> Stats {
        let sum = |f: &dyn Fn(&ShardStats) -> &AtomicU64| -> u64 {
            shards.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };
        let backends = cfg
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStats {
                prefix: b.prefix.clone(),
                requests: sum(&|s| &s.backends[i].requests),
                attempts: sum(&|s| &s.backends[i].attempts),
                retries: sum(&|s| &s.backends[i].retries),
                resends: sum(&|s| &s.backends[i].resends),
                connect_failures: sum(&|s| &s.backends[i].connect_failures),
                redispatched: sum(&|s| &s.backends[i].redispatched),
                checks_failed: sum(&|s| &s.backends[i].checks_failed),
                up_on_shards: shards
                    .iter()
                    .filter(|s| s.backends[i].up.load(Ordering::Relaxed))
                    .count(),
            })
            .collect();
        Stats {
            backends,
            requests: sum(&|s| &s.requests),
            no_backend: sum(&|s| &s.no_backend),
            failures: ProxyError::ALL
                .iter()
                .map(|e| (e.name(), sum(&|s| &s.failures[e.index()])))
                .collect(),
            rejections: Rejection::ALL
                .iter()
                .map(|r| (r.name(), sum(&|s| &s.rejections[r.index()])))
                .collect(),
        }
    }

    /// The stats of the backend with this prefix.
    pub fn backend(&self, prefix: &str) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.prefix == prefix)
    }
}
