//! wtgate-bench: the benchmark instrument of wtgate.
//!
//! - `load`: a latency load generator (monoio + HdrHistogram), closed loop or open loop at a fixed
//!   rate with coordinated-omission correction; keep-alive GETs with Wt-like URLs, a connection per
//!   request, POST bodies, large responses, WebSocket echo; all of them over TLS too (`--tls`, full
//!   or resumed handshakes). Checks routing on every answer.
//! - `serve`: a fast backend answering fixed-size bodies and WebSocket echo, naming itself in
//!   `X-Backend`.
//! - `idle`: opens many idle keep-alive connections and reports the proxy's RSS per connection.
//! - `report`: turns the JSON lines of many runs into markdown tables and SVG percentile plots
//!   (used by `scripts/compare.sh`).
//!
//! Modules: [`stats`] (schedule, CO correction, percentiles), [`wire`] (requests, response heads),
//! [`load`] (the generator), [`serve`], [`rt`] (one monoio runtime per thread) and [`timer`]
//! (sleeps to the microsecond), [`tls`] (the generator's connections, plain or TLS), [`procfs`] (CPU/RSS of the proxy), [`report`] + [`svg`].

mod load;
mod procfs;
mod report;
mod rt;
mod serve;
mod stats;
mod svg;
mod timer;
mod tls;
mod wire;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use argh::FromArgs;
use serde_json::json;

use crate::load::{LoadConfig, Mode};
use crate::stats::{ErrorKind, Summary, fmt_us};
use crate::wire::RequestSpec;

#[derive(FromArgs)]
/// Load generator, backend and report tool for benchmarking wtgate against HAProxy and nginx.
struct Cli {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
// Parsed once per process; argh takes no boxed subcommands.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    Load(LoadArgs),
    Serve(ServeArgs),
    Idle(IdleArgs),
    Report(ReportArgs),
}

#[derive(FromArgs)]
/// Send load to a proxy (or a backend) and report throughput, errors and latency percentiles.
#[argh(subcommand, name = "load")]
struct LoadArgs {
    /// HOST:PORT to load (default 127.0.0.1:8080)
    #[argh(option, default = "String::from(\"127.0.0.1:8080\")")]
    target: String,
    /// keepalive (default), connect (a new connection per request), post, or ws
    #[argh(option, default = "String::from(\"keepalive\")")]
    mode: String,
    /// concurrent connections (default 64)
    #[argh(option, short = 'c', default = "64")]
    conns: usize,
    /// measured duration, e.g. 10s (default 10s)
    #[argh(option, short = 'd', default = "String::from(\"10s\")")]
    duration: String,
    /// warm-up before measuring, not counted (default 1s)
    #[argh(option, default = "String::from(\"1s\")")]
    warmup: String,
    /// stop after this many measured requests (the time limit still applies)
    #[argh(option, short = 'n')]
    requests: Option<u64>,
    /// open loop: requests (messages) per second over all connections, with coordinated-omission
    /// correction; without it, closed loop (as fast as answers come)
    #[argh(option, short = 'R')]
    rate: Option<f64>,
    /// session-id prefixes to route to, comma-separated (default wt1,wt2); "none" for no wtd
    #[argh(option, default = "String::from(\"wt1,wt2\")")]
    prefixes: String,
    /// do not mix in requests without wtd (by default a third of the GETs have none)
    #[argh(switch)]
    no_plain: bool,
    /// POST body size in bytes for --mode post (default 1024)
    #[argh(option, default = "1024")]
    body: usize,
    /// ask the serve backend for responses of this many bytes (adds size=N to every URL)
    #[argh(option)]
    resp_size: Option<usize>,
    /// message size in bytes for --mode ws (default 1024)
    #[argh(option, default = "1024")]
    msg_size: usize,
    /// time allowed after the window for the last answers before they count as timeouts (default 2s)
    #[argh(option, default = "String::from(\"2s\")")]
    grace: String,
    /// generator threads (default 1: the generator shares the machine with what it measures)
    #[argh(option, default = "1")]
    threads: usize,
    /// pids of the proxy under test: their CPU time over the window and peak RSS are reported
    #[argh(option, default = "String::new()")]
    pids: String,
    /// print one JSON object on stdout instead of text
    #[argh(switch)]
    json: bool,
    /// write the full HdrHistogram percentile distribution (ms) to this file
    #[argh(option)]
    hist: Option<PathBuf>,
    /// KEY=VALUE added to the JSON output under "tags" (repeatable; used by compare.sh)
    #[argh(option)]
    tag: Vec<String>,
    /// no live progress line even on a terminal
    #[argh(switch)]
    quiet: bool,
    /// connect with TLS 1.2/1.3 (rustls, ALPN http/1.1); needs --tls-ca
    #[argh(switch)]
    tls: bool,
    /// PEM file of the certificate(s) to trust with --tls
    #[argh(option)]
    tls_ca: Option<PathBuf>,
    /// server name sent (SNI) and verified with --tls (default localhost)
    #[argh(option, default = "String::from(\"localhost\")")]
    tls_name: String,
    /// with --tls: only this TLS version, 1.2 or 1.3 (default: either, as the server chooses)
    #[argh(option)]
    tls_version: Option<String>,
    /// with --tls: resume TLS sessions (tickets) across the generator's connections; without it
    /// every connection is a full handshake
    #[argh(switch)]
    tls_resume: bool,
}

#[derive(FromArgs)]
/// A fast backend: fixed-size answers (size=N in the URL overrides), WebSocket echo, X-Backend.
#[argh(subcommand, name = "serve")]
struct ServeArgs {
    /// HOST:PORT to listen on (port 0: any; the address is printed)
    #[argh(option, default = "String::from(\"127.0.0.1:9090\")")]
    listen: String,
    /// identity sent in X-Backend; the Wt session-id prefix this backend owns (default wt1)
    #[argh(option, default = "String::from(\"wt1\")")]
    prefix: String,
    /// default response body size in bytes (default 64)
    #[argh(option, default = "64")]
    size: usize,
    /// threads (default 1)
    #[argh(option, default = "1")]
    threads: usize,
}

#[derive(FromArgs)]
/// Open many idle keep-alive connections through a proxy and report its RSS per connection.
#[argh(subcommand, name = "idle")]
struct IdleArgs {
    /// HOST:PORT of the proxy
    #[argh(option, default = "String::from(\"127.0.0.1:8080\")")]
    target: String,
    /// connections to open (default 10000)
    #[argh(option, default = "10000")]
    conns: usize,
    /// connections being opened at once (default 128)
    #[argh(option, default = "128")]
    parallel: usize,
    /// how long to hold them open before measuring (default 2s)
    #[argh(option, default = "String::from(\"2s\")")]
    hold: String,
    /// upper bound on the whole run (default 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    limit: String,
    /// session-id prefixes (default wt1,wt2)
    #[argh(option, default = "String::from(\"wt1,wt2\")")]
    prefixes: String,
    /// pids of the proxy whose RSS is measured
    #[argh(option, default = "String::new()")]
    pids: String,
    /// print JSON
    #[argh(switch)]
    json: bool,
    /// KEY=VALUE added to the JSON output under "tags" (repeatable)
    #[argh(option)]
    tag: Vec<String>,
}

#[derive(FromArgs)]
/// Markdown tables and SVG plots from the JSON lines of `load --json` / `idle --json` runs.
#[argh(subcommand, name = "report")]
struct ReportArgs {
    /// file of JSON lines (each tagged scenario=, target=, round=)
    #[argh(positional)]
    results: PathBuf,
    /// directory for the SVG percentile plots (one per scenario)
    #[argh(option)]
    svg_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let r = match cli.cmd {
        Cmd::Load(a) => cmd_load(a),
        Cmd::Serve(a) => cmd_serve(a),
        Cmd::Idle(a) => cmd_idle(a),
        Cmd::Report(a) => report::run(&a.results, a.svg_dir.as_deref()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wtgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to nothing"))
}

fn dur(s: &str) -> Result<Duration, String> {
    wtgate::config::parse_duration(s)
}

fn prefixes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "none")
        .map(str::to_string)
        .collect()
}

fn tags(list: &[String]) -> Result<BTreeMap<String, String>, String> {
    list.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--tag '{t}' is not KEY=VALUE"))
        })
        .collect()
}

fn cmd_serve(a: ServeArgs) -> Result<(), String> {
    serve::run(serve::ServeConfig {
        listen: addr(&a.listen)?,
        prefix: a.prefix,
        size: a.size.min(serve::MAX_SIZE),
        threads: a.threads,
    })
    .map_err(|e| format!("serve on {}: {e}", a.listen))
}

/// The run's TLS client, if `--tls`.
fn tls_client(a: &LoadArgs) -> Result<Option<tls::TlsClient>, String> {
    if !a.tls {
        if a.tls_ca.is_some() || a.tls_resume || a.tls_version.is_some() {
            return Err("--tls-ca, --tls-version and --tls-resume go with --tls".into());
        }
        return Ok(None);
    }
    let ca = a.tls_ca.as_deref().ok_or("--tls needs --tls-ca FILE")?;
    tls::TlsClient::new(ca, &a.tls_name, a.tls_version.as_deref(), a.tls_resume)
        .map(Some)
        .map_err(|e| format!("--tls: {e}"))
}

fn cmd_load(a: LoadArgs) -> Result<(), String> {
    load::raise_limits();
    let target = addr(&a.target)?;
    let (mode, post) = match a.mode.as_str() {
        "keepalive" | "get" => (Mode::KeepAlive, false),
        "connect" => (Mode::Connect, false),
        "post" => (Mode::KeepAlive, true),
        "ws" => (Mode::Ws, false),
        m => {
            return Err(format!("--mode {m}: use keepalive, connect, post or ws"));
        }
    };
    if a.conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    if let Some(r) = a.rate
        && !(r > 0.0 && r.is_finite())
    {
        return Err("--rate must be above 0".into());
    }
    let pids = procfs::parse_pids(&a.pids)?;
    let tags = tags(&a.tag)?;
    let tls = tls_client(&a)?;
    let cfg = LoadConfig {
        target,
        conns: a.conns,
        duration: dur(&a.duration)?,
        warmup: dur(&a.warmup)?,
        max_requests: a.requests,
        rate: a.rate,
        mode,
        spec: RequestSpec {
            host: a.target.clone(),
            prefixes: prefixes(&a.prefixes),
            include_plain: !a.no_plain,
            post_body: post.then_some(a.body),
            resp_size: a.resp_size,
            close: mode == Mode::Connect,
        },
        msg_size: a.msg_size,
        grace: dur(&a.grace)?,
        threads: a.threads,
        tls,
    };
    let live = Arc::new(load::Live::default());
    let t0 = Instant::now();
    let monitor = {
        let live = live.clone();
        let pids = pids.clone();
        let progress = !a.quiet && std::io::stderr().is_terminal();
        let warmup = cfg.warmup;
        let window = cfg.duration;
        std::thread::spawn(move || monitor(t0, warmup, window, live, pids, progress))
    };
    let result = load::run(cfg.clone(), t0, live.clone()).map_err(|e| e.to_string());
    live.done.store(true, Ordering::SeqCst);
    let mon = monitor.join().map_err(|_| "monitor thread panicked")?;
    let r = result?;
    if let Some(path) = &a.hist {
        std::fs::write(path, stats::percentile_distribution(&r.hist))
            .map_err(|e| format!("--hist {}: {e}", path.display()))?;
    }
    let s = Summary::of(&r.hist);
    let c = &r.counts;
    let rps = c.ok as f64 / r.window_s;
    let mbps = c.bytes as f64 / r.window_s / 1e6;
    let cpu_per_req = (!pids.is_empty() && c.sent > 0).then(|| mon.cpu_us as f64 / c.sent as f64);
    if a.json {
        let errors: serde_json::Map<String, serde_json::Value> = ErrorKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), json!(c.of(*k))))
            .collect();
        let out = json!({
            "target": a.target,
            "mode": a.mode,
            "conns": a.conns,
            "rate": a.rate,
            "window_s": r.window_s,
            "sent": c.sent,
            "ok": c.ok,
            "errors_total": c.errors(),
            "errors": errors,
            "connects": c.connects,
            "tls": a.tls,
            "tls_resumed": c.resumed,
            "rps": rps,
            "bytes": c.bytes,
            "mbps": mbps,
            "latency_us": {
                "min": s.min, "mean": s.mean, "p50": s.p50, "p90": s.p90,
                "p99": s.p99, "p999": s.p999, "max": s.max,
            },
            "curve": stats::curve(&r.hist),
            "proxy": {
                "pids": pids,
                "cpu_us": mon.cpu_us,
                "cpu_us_per_req": cpu_per_req,
                "peak_rss_kib": mon.peak_rss_kib,
            },
            "tags": tags,
        });
        println!("{out}");
    } else {
        let kind = match cfg.rate {
            Some(r) => format!("open loop at {r} /s (CO-corrected)"),
            None => "closed loop".into(),
        };
        println!(
            "{} {}: {} conns, {kind}, {:.2} s measured",
            a.target, a.mode, a.conns, r.window_s
        );
        let unit = if mode == Mode::Ws { "msgs" } else { "req" };
        println!(
            "  {:>10.1} {unit}/s   {:.2} MB/s   sent {}  ok {}  errors {}",
            rps,
            mbps,
            c.sent,
            c.ok,
            c.errors()
        );
        println!(
            "  latency  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            fmt_us(s.p50),
            fmt_us(s.p90),
            fmt_us(s.p99),
            fmt_us(s.p999),
            fmt_us(s.max),
            fmt_us(s.mean as u64)
        );
        let errs: Vec<String> = ErrorKind::ALL
            .iter()
            .filter(|k| c.of(**k) > 0)
            .map(|k| format!("{} {}", k.name(), c.of(*k)))
            .collect();
        if !errs.is_empty() {
            println!("  errors   {}", errs.join(", "));
        }
        if a.tls {
            println!(
                "  tls      {} handshakes: {} full, {} resumed",
                c.connects,
                c.connects - c.resumed,
                c.resumed
            );
        }
        if let Some(cpu) = cpu_per_req {
            println!(
                "  proxy    {:.2} us CPU/request, peak RSS {:.1} MiB (pids {:?})",
                cpu,
                mon.peak_rss_kib as f64 / 1024.0,
                pids
            );
        }
    }
    Ok(())
}

struct MonitorResult {
    cpu_us: u64,
    peak_rss_kib: u64,
}

/// Samples the proxy's CPU time at the window's edges and its RSS every 100 ms; draws the live
/// progress line on a terminal.
fn monitor(
    t0: Instant,
    warmup: Duration,
    window: Duration,
    live: Arc<load::Live>,
    pids: Vec<u32>,
    progress: bool,
) -> MonitorResult {
    let end = warmup + window;
    let mut peak = procfs::rss_kib(&pids);
    let mut cpu0 = None;
    let mut cpu1 = None;
    let mut last_ok = 0;
    let mut last_t = t0.elapsed();
    let mut last_print = Duration::ZERO;
    // Bounded: the window's end, plus the load's own grace, ends the loop via `done`; the
    // iteration cap is a second guard.
    for _ in 0..1_000_000 {
        let now = t0.elapsed();
        if cpu0.is_none() && now >= warmup {
            cpu0 = Some(procfs::cpu_us(&pids));
        }
        let done = live.done.load(Ordering::SeqCst);
        if cpu1.is_none() && (now >= end || done) {
            cpu1 = Some(procfs::cpu_us(&pids));
        }
        if !pids.is_empty() {
            peak = peak.max(procfs::rss_kib(&pids));
        }
        if progress && now - last_print >= Duration::from_secs(1) {
            let ok = live.ok.load(Ordering::Relaxed);
            let errs = live.errors.load(Ordering::Relaxed);
            let dt = (now - last_t).as_secs_f64().max(1e-3);
            let phase = if now < warmup { "warm-up" } else { "measuring" };
            eprint!(
                "\r\x1b[2K[{:5.1}s {phase}] {:>9.0} /s  ok {ok}  errors {errs}",
                now.as_secs_f64(),
                (ok - last_ok) as f64 / dt
            );
            let _ = std::io::stderr().flush();
            last_ok = ok;
            last_t = now;
            last_print = now;
        }
        if done {
            break;
        }
        // Wake exactly at the window's edges, else every 100 ms.
        let mut nap = Duration::from_millis(100);
        if cpu0.is_none() {
            nap = nap.min(warmup.saturating_sub(now));
        } else if cpu1.is_none() {
            nap = nap.min(end.saturating_sub(now));
        }
        std::thread::sleep(nap.max(Duration::from_micros(100)));
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    let cpu0 = cpu0.unwrap_or(0);
    let cpu1 = cpu1.unwrap_or_else(|| procfs::cpu_us(&pids));
    MonitorResult {
        cpu_us: cpu1.saturating_sub(cpu0),
        peak_rss_kib: peak,
    }
}

fn cmd_idle(a: IdleArgs) -> Result<(), String> {
    load::raise_limits();
    let target = addr(&a.target)?;
    let pids = procfs::parse_pids(&a.pids)?;
    let tags = tags(&a.tag)?;
    let spec = RequestSpec {
        host: a.target.clone(),
        prefixes: prefixes(&a.prefixes),
        include_plain: true,
        post_body: None,
        resp_size: None,
        close: false,
    };
    let r = load::run_idle(
        target,
        spec,
        a.conns,
        a.parallel,
        dur(&a.hold)?,
        dur(&a.limit)?,
        pids.clone(),
    )
    .map_err(|e| e.to_string())?;
    let grown = r.rss_after_kib.saturating_sub(r.rss_before_kib);
    let per_conn = if r.opened > 0 {
        grown as f64 * 1024.0 / r.opened as f64
    } else {
        0.0
    };
    if a.json {
        println!(
            "{}",
            json!({
                "target": a.target,
                "mode": "idle",
                "conns": a.conns,
                "opened": r.opened,
                "failed": r.failed,
                "misrouted": r.misrouted,
                "open_s": r.open_s,
                "rss_before_kib": r.rss_before_kib,
                "rss_after_kib": r.rss_after_kib,
                "bytes_per_conn": per_conn,
                "proxy": { "pids": pids },
                "tags": tags,
            })
        );
    } else {
        println!(
            "{}: {} of {} idle connections open ({} failed, {} misrouted) in {:.1} s",
            a.target, r.opened, a.conns, r.failed, r.misrouted, r.open_s
        );
        println!(
            "  RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes ({:.2} KiB) per connection",
            r.rss_before_kib as f64 / 1024.0,
            r.rss_after_kib as f64 / 1024.0,
            per_conn,
            per_conn / 1024.0
        );
    }
    Ok(())
}
