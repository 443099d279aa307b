//! The arithmetic of a measurement, kept apart from sockets so it can be tested by hand:
//! the open-loop schedule and its coordinated-omission correction, error kinds, latency
//! summaries, and the HdrHistogram percentile-distribution text written by `--hist`.
//!
//! Latencies are recorded in microseconds.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Largest latency a histogram holds (60 s, in µs); longer ones are clamped to it.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// A histogram of latencies in µs, 1 µs .. 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// The open-loop schedule of one connection, as wrk2 keeps it: request `k` is *due* at
/// `start + phase + k * interval`, whether or not the previous answer has come back.
///
/// A connection that falls behind sends at once (it never skips a request), and every latency is
/// measured from the due time, not from the moment the request could actually be sent. That is the
/// coordinated-omission correction: a 50 ms stall of the server then shows as the 50 ms it cost
/// the first request plus the queueing delay of every request that was due during the stall,
/// instead of a single slow sample among many fast ones.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Due time of request 0, in ns on the run's clock.
    first_ns: u64,
    interval_ns: u64,
    next: u64,
}

impl Schedule {
    /// `rate_per_conn` requests per second on this connection, starting at `start_ns + phase_ns`.
    pub fn new(start_ns: u64, rate_per_conn: f64, phase_ns: u64) -> Schedule {
        assert!(rate_per_conn > 0.0 && rate_per_conn.is_finite());
        let interval_ns = (1e9 / rate_per_conn).round().max(1.0) as u64;
        Schedule {
            first_ns: start_ns + phase_ns,
            interval_ns,
            next: 0,
        }
    }

    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// When the next request is due.
    pub fn due_ns(&self) -> u64 {
        self.first_ns + self.next * self.interval_ns
    }

    /// Moves on to the following request; returns the due time of the one just taken.
    pub fn take(&mut self) -> u64 {
        let due = self.due_ns();
        self.next += 1;
        due
    }
}

/// Phase of connection `conn` out of `conns` sharing one rate: spreads their first requests evenly
/// over one per-connection interval, so the connections do not fire in bursts.
pub fn phase_ns(conn: usize, conns: usize, interval_ns: u64) -> u64 {
    if conns == 0 {
        return 0;
    }
    (interval_ns as u128 * conn as u128 / conns as u128) as u64
}

/// The latency to record, in µs (rounded up, at least 1): from `from_ns` to `done_ns`. In open loop
/// `from_ns` is the due time (corrected); in closed loop it is the actual send time.
pub fn latency_us(from_ns: u64, done_ns: u64) -> u64 {
    done_ns.saturating_sub(from_ns).div_ceil(1000).max(1)
}

/// Latencies (in the schedule's unit) that one connection records in open loop, given each
/// request's service time: request k is sent at `max(due_k, done_{k-1})` and done `service[k]`
/// later. Used to check the correction by hand; the live loop applies the same two rules.
#[cfg(test)]
pub fn simulate_open_loop(interval: u64, service: &[u64]) -> (Vec<u64>, Vec<u64>) {
    let mut corrected = Vec::with_capacity(service.len());
    let mut uncorrected = Vec::with_capacity(service.len());
    let mut prev_done = 0;
    for (k, &s) in service.iter().enumerate() {
        let due = k as u64 * interval;
        let sent = due.max(prev_done);
        let done = sent + s;
        corrected.push(done - due);
        uncorrected.push(done - sent);
        prev_done = done;
    }
    (corrected, uncorrected)
}

/// Why a request (or a WebSocket message) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect failed or was refused.
    Connect,
    /// Read/write error (reset, broken pipe).
    Io,
    /// The peer closed before a whole response arrived.
    Eof,
    /// No answer before the run's grace time ran out.
    Timeout,
    /// The response could not be parsed (bad head, unsupported framing, bad frame).
    BadResponse,
    /// A 4xx status.
    Status4xx,
    /// A 5xx status (502/503/504 from a proxy).
    Status5xx,
    /// Any other unexpected status (1xx, 3xx, a non-101 answer to an upgrade).
    StatusOther,
    /// A request carrying `wtd=<prefix>…` answered by another backend's `X-Backend`.
    Misrouted,
    /// A WebSocket echo whose payload differs from what was sent.
    BadEcho,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Connect,
        ErrorKind::Io,
        ErrorKind::Eof,
        ErrorKind::Timeout,
        ErrorKind::BadResponse,
        ErrorKind::Status4xx,
        ErrorKind::Status5xx,
        ErrorKind::StatusOther,
        ErrorKind::Misrouted,
        ErrorKind::BadEcho,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
            ErrorKind::Eof => "eof",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::Status4xx => "status_4xx",
            ErrorKind::Status5xx => "status_5xx",
            ErrorKind::StatusOther => "status_other",
            ErrorKind::Misrouted => "misrouted",
            ErrorKind::BadEcho => "bad_echo",
        }
    }

    fn index(self) -> usize {
        ErrorKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// The error kind of an unexpected status code, if it is one.
    pub fn of_status(status: u16) -> Option<ErrorKind> {
        match status {
            200..=299 => None,
            400..=499 => Some(ErrorKind::Status4xx),
            500..=599 => Some(ErrorKind::Status5xx),
            _ => Some(ErrorKind::StatusOther),
        }
    }
}

/// Counts of one run (or one thread of it): requests sent in the measured window, and how each
/// ended. Invariant checked by the tests: `sent == ok + errors()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Response (or echo) bytes received in the measured window, heads included.
    pub bytes: u64,
    /// Connections opened (all phases); with TLS, once their handshake is done.
    pub connects: u64,
    /// TLS connections among them that resumed a session (all phases).
    pub resumed: u64,
}

impl Counts {
    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind.index()] += 1;
    }

    pub fn errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    pub fn merge(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
        self.bytes += other.bytes;
        self.connects += other.connects;
        self.resumed += other.resumed;
    }
}

/// The percentiles every report shows, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary {
                count: 0,
                min: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        Summary {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Percentiles at which the JSON output samples the distribution (for plots).
pub const CURVE_PERCENTILES: [f64; 17] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999,
    99.9995, 99.9999, 100.0,
];

/// `(percentile, µs)` pairs at [`CURVE_PERCENTILES`].
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    CURVE_PERCENTILES
        .iter()
        .map(|&p| {
            let v = if p >= 100.0 {
                h.max()
            } else {
                h.value_at_quantile(p / 100.0)
            };
            (p, v)
        })
        .collect()
}

/// Formats µs for people: `812us`, `1.24ms`, `3.10s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// The full percentile distribution in HdrHistogram's classic text format (values in ms), as
/// `HistogramLogProcessor` and wrk2 `--u_latency` print it, so existing plotters read it.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let value_ms = v.value_iterated_to() as f64 / 1000.0;
            let total = total_count_to(h, v.value_iterated_to());
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value_ms:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value_ms:>12.3} {q:>14.12} {total:>10}");
            }
        }
    }
    let (mean, sd) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / 1000.0, h.stdev() / 1000.0)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.3}, StdDeviation   = {sd:>12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

/// HdrHistogram's sub-bucket count for a precision: the power of two ≥ 2·10^sigfig.
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

fn total_count_to(h: &Histogram<u64>, value: u64) -> u64 {
    h.iter_recorded()
        .take_while(|v| v.value_iterated_to() <= value)
        .map(|v| v.count_at_value())
        .sum()
}

/// The median of some numbers (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_due_times() {
        // 1000 req/s on this connection → one every 1 ms, starting 5 ms after t0 + 250 µs phase.
        let mut s = Schedule::new(5_000_000, 1000.0, 250_000);
        assert_eq!(s.interval_ns(), 1_000_000);
        assert_eq!(s.take(), 5_250_000);
        assert_eq!(s.take(), 6_250_000);
        assert_eq!(s.due_ns(), 7_250_000);
        // Four connections sharing a rate: phases 0, ¼, ½, ¾ of the interval.
        let phases: Vec<u64> = (0..4).map(|c| phase_ns(c, 4, 1_000_000)).collect();
        assert_eq!(phases, [0, 250_000, 500_000, 750_000]);
    }

    #[test]
    fn coordinated_omission_correction_by_hand() {
        // One request every 10 ms; each takes 1 ms, except request 2 which stalls for 50 ms.
        //   k  due  sent  done  corrected (done-due)  uncorrected (done-sent)
        //   0    0     0     1       1                  1
        //   1   10    10    11       1                  1
        //   2   20    20    70      50                 50
        //   3   30    70    71      41                  1
        //   4   40    71    72      32                  1
        //   5   50    72    73      23                  1
        //   6   60    73    74      14                  1
        //   7   70    74    75       5                  1
        //   8   80    80    81       1                  1
        let service = [1, 1, 50, 1, 1, 1, 1, 1, 1];
        let (corrected, uncorrected) = simulate_open_loop(10, &service);
        assert_eq!(corrected, [1, 1, 50, 41, 32, 23, 14, 5, 1]);
        assert_eq!(uncorrected, [1, 1, 50, 1, 1, 1, 1, 1, 1]);
        // The correction moves the median from 1 to 14: the stall hurt five requests, not one.
        let med = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort();
            v[v.len() / 2]
        };
        assert_eq!(med(&uncorrected), 1);
        assert_eq!(med(&corrected), 14);
    }

    #[test]
    fn latency_rounds_up_to_whole_microseconds() {
        assert_eq!(latency_us(1_000, 1_000), 1); // never 0: the histogram starts at 1 µs
        assert_eq!(latency_us(1_000, 2_000), 1);
        assert_eq!(latency_us(1_000, 2_001), 2);
        assert_eq!(latency_us(0, 1_500_000), 1500);
        assert_eq!(latency_us(5_000, 1_000), 1); // clock went "backwards": clamp
    }

    #[test]
    fn percentiles_by_hand() {
        // 1..=1000 µs once each: the value at rank ceil(q·n).
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 1);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p90, 900);
        assert_eq!(s.p99, 990);
        assert_eq!(s.p999, 999);
        assert_eq!(s.max, 1000);
        assert!((s.mean - 500.5).abs() < 0.01);

        // 990 fast (100 µs) and 10 slow (5000 µs) requests: p99 is still fast (rank 990),
        // p99.9 is slow (rank 999).
        let mut h = new_histogram();
        h.record_n(100, 990).unwrap();
        h.record_n(5000, 10).unwrap();
        let s = Summary::of(&h);
        assert_eq!((s.p50, s.p90, s.p99), (100, 100, 100));
        // 5000 µs sits in a bucket 4 µs wide at 3 significant digits: reported as its top.
        assert_eq!(s.p999, h.highest_equivalent(5000));
        assert!((5000..=5004).contains(&s.p999));
        assert_eq!(s.max, s.p999);
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = Summary::of(&new_histogram());
        assert_eq!((s.count, s.p50, s.max), (0, 0, 0));
        assert!(curve(&new_histogram()).is_empty());
    }

    #[test]
    fn curve_ends_at_max() {
        let mut h = new_histogram();
        for v in [10, 20, 30, 40] {
            h.record(v).unwrap();
        }
        let c = curve(&h);
        assert_eq!(c.first(), Some(&(0.0, 10)));
        assert_eq!(c.iter().find(|(p, _)| *p == 50.0), Some(&(50.0, 20)));
        assert_eq!(c.last(), Some(&(100.0, 40)));
    }

    #[test]
    fn percentile_distribution_text() {
        let mut h = new_histogram();
        for v in 1..=100 {
            h.record(v * 10).unwrap();
        }
        let text = percentile_distribution(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        // Rows are in ms; the last row is the max at percentile 1.
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains("Value"))
            .collect();
        let first: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(first[0], "0.010");
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[0], "1.000");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "100");
        // Total counts never decrease down the table.
        let totals: Vec<u64> = rows
            .iter()
            .map(|r| r.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(totals.windows(2).all(|w| w[0] <= w[1]));
        assert!(text.contains("Total count    =          100]"));
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    #[test]
    fn counts_add_up() {
        let mut c = Counts {
            sent: 5,
            ok: 3,
            ..Counts::default()
        };
        c.error(ErrorKind::Misrouted);
        c.error(ErrorKind::Status5xx);
        assert_eq!(c.errors(), 2);
        assert_eq!(c.sent, c.ok + c.errors());
        let mut d = Counts::default();
        d.merge(&c);
        d.merge(&c);
        assert_eq!((d.sent, d.ok, d.of(ErrorKind::Misrouted)), (10, 6, 2));
        assert_eq!(ErrorKind::of_status(204), None);
        assert_eq!(ErrorKind::of_status(503), Some(ErrorKind::Status5xx));
        assert_eq!(ErrorKind::of_status(101), Some(ErrorKind::StatusOther));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
