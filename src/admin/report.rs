//! One snapshot of what the engine knows — counters summed over shards, live sessions, admin
//! states, latencies — gathered once per scrape, so that `/metrics`, `/stats` and the status page
//! say the same.
//!
//! They show the configured backends, and a backend a reload removed for as long as tunnels or
//! requests still run to it (`removed: true`, with its counters): the operator sees when the
//! server behind it may be stopped. Once idle, it is no longer shown.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::engine::EngineHandle;
use crate::health::Admin;
use crate::metrics::{BackendStats, LatencySummary, ListenerStats, Stats};
use crate::sessions::BackendSessions;

/// The status classes of `BackendStats::responses`, in order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub struct Report {
    /// Its `backends` are those shown, in the order of `backends` below.
    pub stats: Stats,
    pub backends: Vec<BackendReport>,
    pub listeners: Vec<(SocketAddr, ListenerStats)>,
    pub sessions_untracked: u64,
    pub uptime: Duration,
    /// Reloads in force on every shard, and reloads refused.
    pub reloads: (u64, u64),
    /// The certificates of the `tls` listeners, as the config in force has them.
    pub certs: Vec<crate::tls::CertInfo>,
}

pub struct BackendReport {
    pub prefix: String,
    pub addr: SocketAddr,
    /// Removed by a reload, shown while tunnels or requests still run to it.
    pub removed: bool,
    /// Up on every shard (once gossip has settled, shards agree).
    pub up: bool,
    pub admin: Admin,
    pub sessions: BackendSessions,
    pub first_byte: LatencySummary,
    pub total: LatencySummary,
}

impl Report {
    pub fn gather(engine: &EngineHandle) -> Report {
        let mut stats = engine.stats();
        let sessions = engine.sessions();
        let admin = engine.admin_states();
        let latency = engine.latency();
        let g = engine.generation();
        // Each was read on its own: a reload in between may have added a slot to some.
        let n = stats.backends.len().min(g.slots.len()).min(latency.len());
        let shown: Vec<usize> = (0..n)
            .filter(|&i| {
                let b = &stats.backends[i];
                !b.removed || b.tunnels + b.active > 0
            })
            .collect();
        let backends = shown
            .iter()
            .map(|&i| BackendReport {
                prefix: stats.backends[i].prefix.clone(),
                addr: g.slots[i].backend.addr,
                removed: stats.backends[i].removed,
                up: stats.backends[i].up_on_shards == stats.shards,
                admin: admin.get(i).copied().unwrap_or_default(),
                sessions: sessions.get(i).copied().unwrap_or_default(),
                first_byte: latency[i].0.clone(),
                total: latency[i].1.clone(),
            })
            .collect();
        let all = std::mem::take(&mut stats.backends);
        stats.backends = shown.iter().map(|&i| all[i].clone()).collect();
        let listeners = engine
            .local_addrs()
            .iter()
            .copied()
            .zip(stats.listeners.iter().cloned())
            .collect();
        Report {
            backends,
            listeners,
            sessions_untracked: engine.sessions_untracked(),
            uptime: engine.uptime(),
            reloads: engine.reloads(),
            certs: g.tls.as_ref().map_or_else(Vec::new, |t| t.certs.clone()),
            stats,
        }
    }

    /// The counters of backend `i`.
    pub fn counters(&self, i: usize) -> &BackendStats {
        &self.stats.backends[i]
    }

    /// `/stats`.
    pub fn to_json(&self) -> Value {
        let backends: Vec<Value> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| self.backend_json(i, b))
            .collect();
        let listeners: Vec<Value> = self
            .listeners
            .iter()
            .map(|(addr, l)| json!({ "addr": addr.to_string(), "accepted": l.accepted, "open": l.open }))
            .collect();
        let by_name = |list: &[(&str, u64)]| -> Map<String, Value> {
            list.iter()
                .map(|(k, v)| ((*k).to_string(), json!(v)))
                .collect()
        };
        json!({
            "uptime_s": self.uptime.as_secs_f64(),
            "shards": self.stats.shards,
            "requests": self.stats.requests,
            "queued": self.stats.queued,
            "sessions_untracked": self.sessions_untracked,
            "reloads": self.reloads.0,
            "reloads_refused": self.reloads.1,
            "rejections": by_name(&self.stats.rejections),
            "failures": by_name(&self.stats.failures),
            "listeners": listeners,
            "backends": backends,
            "access_log": {
                "lines": self.stats.access_log_lines,
                "dropped": by_name(&self.stats.access_log_dropped),
            },
            "tls": self.tls_json(),
        })
    }

    /// Handshakes, failures and each certificate's expiry, for `/stats` and the status page.
    fn tls_json(&self) -> Value {
        let now = std::time::SystemTime::now();
        let certs: Vec<Value> = (self.certs.iter())
            .map(|c| {
                json!({
                    "file": c.file,
                    "names": c.names,
                    "not_after": crate::tls::certs::utc(c.not_after),
                    "expires_in_s": c.seconds_left(now),
                })
            })
            .collect();
        let handshakes: Map<String, Value> = (self.stats.tls_handshakes.iter())
            .map(|(v13, resumed, n)| {
                let kind = if *resumed { "resumed" } else { "full" };
                let version = if *v13 { "1.3" } else { "1.2" };
                (format!("tls{version}_{kind}"), json!(n))
            })
            .collect();
        let failures: Map<String, Value> = (self.stats.tls_failures.iter())
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect();
        json!({
            "certificates": certs,
            "handshakes": handshakes,
            "failures": failures,
            "unclean_ends": self.stats.tls_unclean_ends,
            "record_errors": self.stats.tls_record_errors,
        })
    }

    fn backend_json(&self, i: usize, b: &BackendReport) -> Value {
        let c = self.counters(i);
        let responses: Map<String, Value> = STATUS_CLASSES
            .iter()
            .zip(c.responses)
            .map(|(class, n)| ((*class).to_string(), json!(n)))
            .collect();
        json!({
            "backend": b.prefix,
            "addr": b.addr.to_string(),
            "up": b.up,
            "up_on_shards": c.up_on_shards,
            "stalled_on_shards": c.stalled_on_shards,
            "admin": b.admin.as_str(),
            "removed": b.removed,
            "requests": c.requests,
            "failed": c.failed,
            "responses": responses,
            "request_bytes": c.request_bytes,
            "response_bytes": c.response_bytes,
            "tunnel_spliced_bytes": c.tunnel_spliced_bytes,
            "connect_failures": c.connect_failures,
            "retries": c.retries,
            "resends": c.resends,
            "affinity_hits": c.affinity_hits,
            "affinity_misses": c.redispatched,
            "checks_failed": c.checks_failed,
            "sessions": {
                "live": b.sessions.live,
                "since_last_request_s": b.sessions.since_last.map(|d| d.as_secs_f64()),
            },
            "tunnels": c.tunnels,
            "open_connections": c.active + c.pooled,
            "pooled_connections": c.pooled,
            "stray_closes": c.stray_closes,
            "owner_retries": c.owner_retries,
            "fallbacks": c.fallbacks,
            "latency": {
                "first_byte": latency_json(&b.first_byte),
                "total": latency_json(&b.total),
            },
        })
    }
}

/// `{"count":…, "sum_s":…, "p50":…, "p90":…, "p99":…, "p999":…}`, a quantile `null` when the
/// window holds no sample.
fn latency_json(l: &LatencySummary) -> Value {
    let mut m = Map::new();
    m.insert("count".into(), json!(l.count));
    m.insert("sum_s".into(), json!(l.sum_s));
    for (q, v) in &l.quantiles {
        let digits = format!("{q}").trim_start_matches("0.").to_string();
        m.insert(format!("p{digits:0<2}"), json!(v));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_keys() {
        let l = LatencySummary {
            count: 3,
            sum_s: 0.5,
            quantiles: vec![
                (0.5, Some(0.1)),
                (0.9, Some(0.2)),
                (0.99, None),
                (0.999, Some(0.3)),
            ],
        };
        let v = latency_json(&l);
        assert_eq!(
            v,
            json!({"count": 3, "sum_s": 0.5, "p50": 0.1, "p90": 0.2, "p99": null, "p999": 0.3})
        );
    }
}
