//! `/metrics`: the [`Report`] in the Prometheus text exposition format 0.0.4, and the small
//! encoder that writes it (names are fixed here; label values come from the config and are
//! escaped).

use std::fmt::Write;

use super::report::{BackendReport, Report, STATUS_CLASSES};
use crate::health::Admin;
use crate::metrics::LatencySummary;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// Writes metric families: a `# HELP` and `# TYPE` line, then its samples.
#[derive(Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample; `value` as Prometheus reads numbers (`NaN`, `+Inf` included).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels);
        let _ = match value {
            v if v.is_nan() => writeln!(self.out, " NaN"),
            v if v == f64::INFINITY => writeln!(self.out, " +Inf"),
            v if v == f64::NEG_INFINITY => writeln!(self.out, " -Inf"),
            v => writeln!(self.out, " {v}"),
        };
    }

    /// A counter or gauge sample, written exactly (an `f64` loses integers above 2⁵³).
    pub fn int(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.out, " {value}");
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (name, value)) in labels.iter().enumerate() {
            debug_assert!(valid_name(name) && !name.contains(':'), "{name}");
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_label_value(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape `\`, `"` and newline, and nothing else.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// The per-backend counters: name, help, value.
type BackendCounter = (&'static str, &'static str, fn(&Report, usize) -> u64);

const BACKEND_COUNTERS: [BackendCounter; 14] = [
    (
        "wtgate_backend_requests_total",
        "Client requests this backend got, each counted once however many tries it took.",
        |r, i| r.counters(i).requests,
    ),
    (
        "wtgate_backend_failed_requests_total",
        "Requests whose last try, on this backend, ended without its complete answer.",
        |r, i| r.counters(i).failed,
    ),
    (
        "wtgate_backend_request_bytes_total",
        "Bytes sent to this backend: request heads as forwarded, bodies, WebSocket traffic.",
        |r, i| r.counters(i).request_bytes,
    ),
    (
        "wtgate_backend_response_bytes_total",
        "Bytes of this backend's responses relayed to clients, WebSocket traffic included.",
        |r, i| r.counters(i).response_bytes,
    ),
    (
        "wtgate_backend_tunnel_spliced_bytes_total",
        "WebSocket bytes to and from this backend moved with splice(2), counted in the two above too.",
        |r, i| r.counters(i).tunnel_spliced_bytes,
    ),
    (
        "wtgate_backend_stray_closes_total",
        "Connections to this backend closed because it sent bytes with no request outstanding \
         (after a response's end, or while pooled): never relayed, never reused.",
        |r, i| r.counters(i).stray_closes,
    ),
    (
        "wtgate_backend_owner_retries_total",
        "Requests of its own sessions tried on it while marked down after a refused connect, \
         instead of moving the session at once.",
        |r, i| r.counters(i).owner_retries,
    ),
    (
        "wtgate_backend_fallbacks_total",
        "Requests sent to it while no backend took new sessions: it was up but draining, or \
         marked down and tried all the same.",
        |r, i| r.counters(i).fallbacks,
    ),
    (
        "wtgate_backend_connect_failures_total",
        "Failed connects of real requests (each marks the backend down).",
        |r, i| r.counters(i).connect_failures,
    ),
    (
        "wtgate_backend_retries_total",
        "Requests tried on another backend after a failed connect to this one.",
        |r, i| r.counters(i).retries,
    ),
    (
        "wtgate_backend_resends_total",
        "Requests sent again because this backend's connection closed before answering.",
        |r, i| r.counters(i).resends,
    ),
    (
        "wtgate_backend_affinity_hits_total",
        "Requests routed to this backend because it owns their session.",
        |r, i| r.counters(i).affinity_hits,
    ),
    (
        "wtgate_backend_affinity_misses_total",
        "Requests of this backend's sessions redispatched elsewhere (it was down or in maint).",
        |r, i| r.counters(i).redispatched,
    ),
    (
        "wtgate_backend_checks_failed_total",
        "Active health checks of this backend that failed.",
        |r, i| r.counters(i).checks_failed,
    ),
];

const BACKEND_GAUGES: [BackendCounter; 4] = [
    (
        "wtgate_backend_sessions",
        "Live Wt sessions of this backend: an open WebSocket, or requests it answered as its own \
         within the session timeout (README \"Live sessions\").",
        |r, i| r.backends[i].sessions.live as u64,
    ),
    (
        "wtgate_backend_tunnels",
        "WebSocket tunnels open to this backend.",
        |r, i| r.counters(i).tunnels,
    ),
    (
        "wtgate_backend_open_connections",
        "Connections open to this backend: in use and pooled.",
        |r, i| r.counters(i).active + r.counters(i).pooled,
    ),
    (
        "wtgate_backend_pooled_connections",
        "Idle keep-alive connections to this backend in the pools.",
        |r, i| r.counters(i).pooled,
    ),
];

/// Which of a backend's latencies a summary reports.
type LatencyOf = fn(&BackendReport) -> &LatencySummary;

/// The whole `/metrics` page.
pub fn render(r: &Report) -> String {
    let mut e = Encoder::default();
    backends(&mut e, r);
    listeners(&mut e, r);
    overall(&mut e, r);
    access_log(&mut e, r);
    tls(&mut e, r);
    e.finish()
}

/// Whether each backend is up, removed, and in which admin state.
fn backend_states(e: &mut Encoder, r: &Report) {
    e.family(
        "wtgate_backend_up",
        Kind::Gauge,
        "1 if the backend is up (health checks and connects), else 0.",
    );
    for b in &r.backends {
        e.int(
            "wtgate_backend_up",
            &[("backend", &b.prefix)],
            u64::from(b.up),
        );
    }
    e.family(
        "wtgate_backend_stalled_shards",
        Kind::Gauge,
        "Shards on which requests have waited over a second for any answer from this backend \
         (frozen or stuck): it gets new sessions there only if no other backend is ready.",
    );
    for (i, b) in r.backends.iter().enumerate() {
        let n = r.stats.backends[i].stalled_on_shards as u64;
        e.int(
            "wtgate_backend_stalled_shards",
            &[("backend", &b.prefix)],
            n,
        );
    }
    e.family(
        "wtgate_backend_removed",
        Kind::Gauge,
        "1 for a backend a reload removed that tunnels or requests still run to, else 0.",
    );
    for b in &r.backends {
        let removed = u64::from(b.removed);
        e.int("wtgate_backend_removed", &[("backend", &b.prefix)], removed);
    }
    e.family(
        "wtgate_backend_admin_state",
        Kind::Gauge,
        "The operator's state for the backend: 1 for the one it is in (ready, drain or maint).",
    );
    for b in &r.backends {
        for state in [Admin::Ready, Admin::Drain, Admin::Maint] {
            let labels = [("backend", &*b.prefix), ("state", state.as_str())];
            e.int(
                "wtgate_backend_admin_state",
                &labels,
                u64::from(b.admin == state),
            );
        }
    }
}

fn backends(e: &mut Encoder, r: &Report) {
    backend_states(e, r);
    for (name, help, value) in BACKEND_COUNTERS {
        e.family(name, Kind::Counter, help);
        for (i, b) in r.backends.iter().enumerate() {
            e.int(name, &[("backend", &b.prefix)], value(r, i));
        }
    }
    let name = "wtgate_backend_responses_total";
    e.family(
        name,
        Kind::Counter,
        "Response heads relayed from the backend, by status class.",
    );
    for (i, b) in r.backends.iter().enumerate() {
        for (class, n) in STATUS_CLASSES.iter().zip(r.counters(i).responses) {
            e.int(name, &[("backend", &b.prefix), ("code", class)], n);
        }
    }
    for (name, help, value) in BACKEND_GAUGES {
        e.family(name, Kind::Gauge, help);
        for (i, b) in r.backends.iter().enumerate() {
            e.int(name, &[("backend", &b.prefix)], value(r, i));
        }
    }
    backend_latencies(e, r);
}

/// The first-byte and total latency summaries of every backend.
fn backend_latencies(e: &mut Encoder, r: &Report) {
    let summaries: [(&str, &str, LatencyOf); 2] = [
        (
            "wtgate_backend_first_byte_seconds",
            "Time from a request's head to the backend's first response byte; quantiles over \
             the last 1-2 minutes.",
            |b| &b.first_byte,
        ),
        (
            "wtgate_backend_response_seconds",
            "Time from a request's head to the end of its response; quantiles over the last \
             1-2 minutes.",
            |b| &b.total,
        ),
    ];
    for (name, help, get) in summaries {
        e.family(name, Kind::Summary, help);
        for b in &r.backends {
            summary(e, name, &b.prefix, get(b));
        }
    }
}

fn summary(e: &mut Encoder, name: &str, backend: &str, l: &LatencySummary) {
    for (q, v) in &l.quantiles {
        let q = q.to_string();
        e.sample(
            name,
            &[("backend", backend), ("quantile", &q)],
            v.unwrap_or(f64::NAN),
        );
    }
    e.sample(&format!("{name}_sum"), &[("backend", backend)], l.sum_s);
    e.int(&format!("{name}_count"), &[("backend", backend)], l.count);
}

fn listeners(e: &mut Encoder, r: &Report) {
    let name = "wtgate_listener_accepted_connections_total";
    e.family(name, Kind::Counter, "Client connections accepted.");
    for (addr, l) in &r.listeners {
        e.int(name, &[("listener", &addr.to_string())], l.accepted);
    }
    let name = "wtgate_listener_open_connections";
    e.family(name, Kind::Gauge, "Client connections being served.");
    for (addr, l) in &r.listeners {
        e.int(name, &[("listener", &addr.to_string())], l.open);
    }
}

/// Requests that waited for a backend, and the splice pipes tunnels hold.
fn waits_and_pipes(e: &mut Encoder, s: &crate::metrics::Stats) {
    e.family(
        "wtgate_queued_requests_total",
        Kind::Counter,
        "Requests that found no backend to try and waited (--queue-timeout) for one to come back.",
    );
    e.int("wtgate_queued_requests_total", &[], s.queued);
    e.family(
        "wtgate_splice_pipes",
        Kind::Gauge,
        "Splice pipes (two descriptors each) held by WebSocket tunnels (--splice auto).",
    );
    e.int("wtgate_splice_pipes", &[], s.pipes);
}

fn overall(e: &mut Encoder, r: &Report) {
    let s = &r.stats;
    e.family(
        "wtgate_requests_total",
        Kind::Counter,
        "Client requests with a valid head.",
    );
    e.int("wtgate_requests_total", &[], s.requests);
    waits_and_pipes(e, s);
    e.family(
        "wtgate_rejections_total",
        Kind::Counter,
        "Client connections or requests refused before routing, by reason.",
    );
    for (reason, n) in &s.rejections {
        e.int("wtgate_rejections_total", &[("reason", reason)], *n);
    }
    e.family(
        "wtgate_failures_total",
        Kind::Counter,
        "Requests that did not end with a backend's complete answer, by kind.",
    );
    for (kind, n) in &s.failures {
        e.int("wtgate_failures_total", &[("kind", kind)], *n);
    }
    e.family(
        "wtgate_sessions_untracked_total",
        Kind::Counter,
        "Sessions not tracked because a shard's session table was full.",
    );
    e.int("wtgate_sessions_untracked_total", &[], r.sessions_untracked);
    e.family(
        "wtgate_uptime_seconds",
        Kind::Gauge,
        "Time since wtgate started.",
    );
    e.sample("wtgate_uptime_seconds", &[], r.uptime.as_secs_f64());
    e.family(
        "wtgate_reloads_total",
        Kind::Counter,
        "Config reloads (SIGHUP, POST /reload) in force on every shard.",
    );
    e.int("wtgate_reloads_total", &[], r.reloads.0);
    e.family(
        "wtgate_reloads_refused_total",
        Kind::Counter,
        "Config reloads refused (an invalid file): the running config stayed.",
    );
    e.int("wtgate_reloads_refused_total", &[], r.reloads.1);
}

fn access_log(e: &mut Encoder, r: &Report) {
    let s = &r.stats;
    let name = "wtgate_access_log_lines_total";
    e.family(
        name,
        Kind::Counter,
        "Access-log lines made (one per request and per tunnel), written or dropped.",
    );
    e.int(name, &[], s.access_log_lines);
    let name = "wtgate_access_log_dropped_lines_total";
    e.family(
        name,
        Kind::Counter,
        "Access-log lines lost: queue_full (the writer was behind; requests never wait for \
         it), write_error (the write failed).",
    );
    for (reason, n) in &s.access_log_dropped {
        e.int(name, &[("reason", reason)], *n);
    }
}

/// TLS handshakes by result, version and resumption; each certificate's time to expiry.
fn tls(e: &mut Encoder, r: &Report) {
    let s = &r.stats;
    e.family(
        "wtgate_tls_handshakes_total",
        Kind::Counter,
        "TLS handshakes done, by version and whether the client resumed a session.",
    );
    for (v13, resumed, n) in &s.tls_handshakes {
        let version = if *v13 { "TLSv1.3" } else { "TLSv1.2" };
        let resumed = if *resumed { "true" } else { "false" };
        let labels = [("version", version), ("resumed", resumed)];
        e.int("wtgate_tls_handshakes_total", &labels, *n);
    }
    e.family(
        "wtgate_tls_handshake_failures_total",
        Kind::Counter,
        "TLS handshakes that failed, by reason (plain HTTP to the TLS port, not TLS, client \
         closed, no common ALPN protocol, no certificate for the name, the client's own alert (an \
         untrusted certificate), TLS protocol error, timeout).",
    );
    for (reason, n) in &s.tls_failures {
        e.int(
            "wtgate_tls_handshake_failures_total",
            &[("reason", reason)],
            *n,
        );
    }
    e.family(
        "wtgate_tls_unclean_ends_total",
        Kind::Counter,
        "TLS connections the client ended without close_notify.",
    );
    e.int("wtgate_tls_unclean_ends_total", &[], s.tls_unclean_ends);
    e.family(
        "wtgate_tls_record_errors_total",
        Kind::Counter,
        "TLS connections ended by an error after the handshake: a bad record, a fatal alert \
         from the client, a refused renegotiation.",
    );
    e.int("wtgate_tls_record_errors_total", &[], s.tls_record_errors);
    if r.certs.is_empty() {
        return;
    }
    e.family(
        "wtgate_tls_certificate_expiry_seconds",
        Kind::Gauge,
        "Seconds until each certificate expires (negative once it has).",
    );
    let now = std::time::SystemTime::now();
    for c in &r.certs {
        let names = c.names.join(",");
        let labels = [("file", c.file.as_str()), ("names", names.as_str())];
        e.sample(
            "wtgate_tls_certificate_expiry_seconds",
            &labels,
            c.seconds_left(now) as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_spelled_as_prometheus_reads_them() {
        let mut e = Encoder::default();
        e.family("x_total", Kind::Counter, "A help\\text\nover two lines.");
        e.int("x_total", &[("a", "q\"uo\\te\nd"), ("b", "plain")], 7);
        e.int("x_total", &[], u64::MAX);
        e.sample("y", &[("q", "0.5")], f64::NAN);
        e.sample("y", &[], f64::INFINITY);
        e.sample("y", &[], 0.000_125);
        assert_eq!(
            e.finish(),
            "# HELP x_total A help\\\\text\\nover two lines.\n\
             # TYPE x_total counter\n\
             x_total{a=\"q\\\"uo\\\\te\\nd\",b=\"plain\"} 7\n\
             x_total 18446744073709551615\n\
             y{q=\"0.5\"} NaN\n\
             y +Inf\n\
             y 0.000125\n"
        );
    }

    #[test]
    fn metric_names() {
        assert!(valid_name("wtgate_backend_up") && valid_name("a:b_c9"));
        assert!(!valid_name("9a") && !valid_name("a-b") && !valid_name(""));
        for (name, _, _) in BACKEND_COUNTERS {
            assert!(valid_name(name) && name.ends_with("_total"), "{name}");
        }
        for (name, _, _) in BACKEND_GAUGES {
            assert!(valid_name(name) && !name.ends_with("_total"), "{name}");
        }
    }
}
