//! Counters each shard keeps about its backends, and the sum the engine reports.
//!
//! Every shard writes only its own `ShardStats` (relaxed atomics, no sharing between writers), so
//! counting costs the hot path nothing but an uncontended add; readers sum over shards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::Config;

#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Requests sent to this backend.
    pub requests: AtomicU64,
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
    /// Requests answered 503 because no backend was usable.
    pub no_backend: AtomicU64,
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
            no_backend: AtomicU64::new(0),
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
    pub connect_failures: u64,
    pub redispatched: u64,
    pub checks_failed: u64,
    /// How many shards see it up (all of them, or none, once gossip has settled).
    pub up_on_shards: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub backends: Vec<BackendStats>,
    pub no_backend: u64,
}

impl Stats {
    pub fn sum(cfg: &Config, shards: &[std::sync::Arc<ShardStats>]) -> Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let backends = cfg
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStats {
                prefix: b.prefix.clone(),
                requests: shards.iter().map(|s| get(&s.backends[i].requests)).sum(),
                connect_failures: shards
                    .iter()
                    .map(|s| get(&s.backends[i].connect_failures))
                    .sum(),
                redispatched: shards
                    .iter()
                    .map(|s| get(&s.backends[i].redispatched))
                    .sum(),
                checks_failed: shards
                    .iter()
                    .map(|s| get(&s.backends[i].checks_failed))
                    .sum(),
                up_on_shards: shards
                    .iter()
                    .filter(|s| s.backends[i].up.load(Ordering::Relaxed))
                    .count(),
            })
            .collect();
        Stats {
            backends,
            no_backend: shards.iter().map(|s| get(&s.no_backend)).sum(),
        }
    }

    /// The stats of the backend with this prefix.
    pub fn backend(&self, prefix: &str) -> Option<&BackendStats> {
        self.backends.iter().find(|b| b.prefix == prefix)
    }
}
