//! The `wtgate` command: `run` (the default), `check`, `demo`.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::ExitCode;

use argh::FromArgs;
use wtgate::config::{
    BackendConfig, Config, ConfigError, Reuse, memlock_error, parse_check, parse_cidr,
    parse_duration, parse_listen,
};
use wtgate::engine::Engine;
use wtgate_demo::DemoBackend;

#[derive(FromArgs)]
/// wtgate: a reverse proxy for Wt servers that keeps every Wt session on the server that owns it, by
/// the exact `wtd` session id in the URL (no cookies), and round-robins new sessions over the rest.
#[argh(
    help_triggers("-h", "--help", "help"),
    example = "wtgate --listen 0.0.0.0:8080 --backend wt1=127.0.0.1:9090 --backend wt2=127.0.0.1:9091",
    note = "Commands:\n  wtgate [run] [OPTIONS]   serve (the default command)\n  wtgate check [OPTIONS]   validate the options, print the routing table\n  wtgate demo [OPTIONS]    two Wt-like demo servers behind wtgate, to try it\n\nDurations take ms, s, m or h (a bare number is seconds)."
)]
struct ProxyArgs {
    /// address to listen on: HOST:PORT, [IPV6]:PORT, or a bare PORT or :PORT meaning
    /// 0.0.0.0:PORT; ADDR,proxy-protocol expects a PROXY protocol v1/v2 header on every
    /// connection, from a load balancer in front (repeatable; default 0.0.0.0:8080)
    #[argh(option)]
    listen: Vec<String>,

    /// a Wt server: PREFIX=HOST:PORT[,weight=N][,check=tcp|/path], where PREFIX is the server's
    /// --session-id-prefix and an IPv6 HOST is written [::1] (repeatable, at least one)
    #[argh(option)]
    backend: Vec<String>,

    /// shards (threads, each with its own listener); default: one per core
    #[argh(option, default = "0")]
    threads: usize,

    /// do not pin shard i to core i (for machines shared with other busy processes)
    #[argh(switch)]
    no_pin: bool,

    /// characters after the prefix in a Wt session id (Wt's session-id-length; default 16)
    #[argh(option, default = "16")]
    session_id_length: usize,

    /// timeout for connecting to a backend (default 5s; units ms, s, m, h)
    #[argh(option, default = "String::from(\"5s\")")]
    connect_timeout: String,

    /// time a client gets to send a whole request head, else 408 (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    request_head_timeout: String,

    /// client inactivity allowed while a request is in flight (default 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    client_timeout: String,

    /// backend inactivity allowed while we wait for or read its response, else 504 (default 60s;
    /// keep it above Wt's 50 s long-poll/server-push timeout)
    #[argh(option, default = "String::from(\"60s\")")]
    server_timeout: String,

    /// idle time after which a WebSocket tunnel is closed (default 1h)
    #[argh(option, default = "String::from(\"1h\")")]
    tunnel_timeout: String,

    /// idle time of a client keep-alive connection between requests (default 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    keepalive_timeout: String,

    /// idle time after which a pooled backend connection is closed; keep it below the backend's
    /// own keep-alive timeout (wthttpd: 10 s) (default 8s)
    #[argh(option, default = "String::from(\"8s\")")]
    pool_idle_timeout: String,

    /// client connections served at once; more wait in the kernel backlog (default 4096)
    #[argh(option, default = "4096")]
    maxconn: usize,

    /// connect attempts per request (default 3); a failed connect marks that backend down on
    /// every shard, so every further attempt goes to another backend
    #[argh(option, default = "3")]
    retries: u32,

    /// largest request or response head accepted, in bytes, else 431/502 (default 16384)
    #[argh(option, default = "16384")]
    max_head_bytes: usize,

    /// most header fields in a head, else 431/502 (default 100)
    #[argh(option, default = "100")]
    max_headers: usize,

    /// idle keep-alive connections kept per backend per shard (default 64)
    #[argh(option, default = "64")]
    pool_size: usize,

    /// which requests may take a pooled backend connection: 'safe': all but the first of each
    /// client connection, unless wtgate can resend that one itself (GET/HEAD/OPTIONS without a
    /// body); 'always': any; 'never': none (no pool). An upgrade (WebSocket) request never does
    /// (default safe)
    #[argh(option, default = "String::from(\"safe\")")]
    reuse: String,

    /// do not add X-Forwarded-For / X-Forwarded-Proto to requests
    #[argh(switch)]
    no_forwarded_headers: bool,

    /// a client whose X-Forwarded-For/-Proto are kept and appended to rather than replaced, such
    /// as a TLS terminator in front: a CIDR like 10.0.0.0/8, or one IP (repeatable)
    #[argh(option)]
    trust_forwarded_from: Vec<String>,

    /// active health check of every backend: 'tcp' (connect) or an HTTP path such as /health,
    /// which must answer 2xx/3xx; a backend's own check= overrides it (default tcp)
    #[argh(option, default = "String::from(\"tcp\")")]
    check: String,

    /// time between two checks of a backend (default 2s)
    #[argh(option, default = "String::from(\"2s\")")]
    check_interval: String,

    /// good checks in a row that bring a down backend back (default 2)
    #[argh(option, default = "2")]
    rise: u32,

    /// failed checks in a row that take a backend down (default 3); a failed connect of a real
    /// request takes it down at once
    #[argh(option, default = "3")]
    fall: u32,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
}

#[derive(FromArgs)]
/// Starts two Wt-like demo servers (session-id prefixes wt1 and wt2) and wtgate in front of them,
/// then prints what to open or curl. Stop with Ctrl-C.
#[argh(help_triggers("-h", "--help", "help"))]
struct DemoArgs {
    /// address wtgate listens on (default 127.0.0.1:8080)
    #[argh(option, default = "String::from(\"127.0.0.1:8080\")")]
    listen: String,

    /// address of the wt1 demo server (default 127.0.0.1:9090)
    #[argh(option, default = "String::from(\"127.0.0.1:9090\")")]
    wt1: String,

    /// address of the wt2 demo server (default 127.0.0.1:9091)
    #[argh(option, default = "String::from(\"127.0.0.1:9091\")")]
    wt2: String,

    /// shards (default 1: plenty for a demo)
    #[argh(option, default = "1")]
    threads: usize,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
}

impl ProxyArgs {
    /// The config these flags ask for, with every error and warning found, all at once: flags that
    /// do not parse, what `Config::validate_all` refuses, and what only the command line refuses.
    fn to_config(&self) -> (Config, Vec<String>, Vec<String>) {
        let mut errors = Vec::new();
        let mut cfg = Config::default();
        let listen = if self.listen.is_empty() {
            vec!["0.0.0.0:8080".to_string()]
        } else {
            self.listen.clone()
        };
        for l in &listen {
            match parse_listen(l) {
                // The library takes port 0 (tests, embedding); here no client could find it.
                Ok(a) if a.addr.port() == 0 => errors.push(format!(
                    "--listen '{l}': port 0 would be a port the kernel picks, unknown to every \
                     client: give a port"
                )),
                Ok(a) => cfg.listen.push(a),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let listen_ok = cfg.listen.len() == listen.len();
        for b in &self.backend {
            match BackendConfig::parse(b) {
                Ok(b) => cfg.backends.push(b),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let backends_ok = cfg.backends.len() == self.backend.len();
        cfg.threads = self.threads;
        cfg.pin = !self.no_pin;
        cfg.session_id_length = self.session_id_length;
        let mut d = |flag: &str, v: &str, into: &mut std::time::Duration| match parse_duration(v) {
            Ok(v) => *into = v,
            Err(e) => errors.push(format!("--{flag}: {e}")),
        };
        let t = &mut cfg.timeouts;
        d("connect-timeout", &self.connect_timeout, &mut t.connect);
        d(
            "request-head-timeout",
            &self.request_head_timeout,
            &mut t.request_head,
        );
        d("client-timeout", &self.client_timeout, &mut t.client);
        d("server-timeout", &self.server_timeout, &mut t.server);
        d("tunnel-timeout", &self.tunnel_timeout, &mut t.tunnel);
        d(
            "keepalive-timeout",
            &self.keepalive_timeout,
            &mut t.keepalive,
        );
        d(
            "pool-idle-timeout",
            &self.pool_idle_timeout,
            &mut t.pool_idle,
        );
        d(
            "check-interval",
            &self.check_interval,
            &mut cfg.check_interval,
        );
        cfg.maxconn = self.maxconn;
        cfg.retries = self.retries;
        cfg.max_head_bytes = self.max_head_bytes;
        cfg.max_headers = self.max_headers;
        cfg.pool_size = self.pool_size;
        match self.reuse.parse() {
            Ok(r) => cfg.reuse = r,
            Err(e) => errors.push(e.to_string()),
        }
        cfg.forwarded_headers = !self.no_forwarded_headers;
        for t in &self.trust_forwarded_from {
            match parse_cidr(t) {
                Ok(net) => cfg.trusted_proxies.push(net),
                Err(e) => errors.push(e.to_string()),
            }
        }
        match parse_check(&self.check) {
            Ok(c) => cfg.check = c,
            Err(e) => errors.push(format!("--check: {e}")),
        }
        cfg.rise = self.rise;
        cfg.fall = self.fall;
        let report = cfg.validate_all();
        for e in report.errors {
            // "No backends" next to "--backend 'x': bad" would contradict the operator.
            let follows_a_parse_error = match e {
                ConfigError::NoListen => !listen_ok,
                ConfigError::NoBackends | ConfigError::NoWeight => !backends_ok,
                _ => false,
            };
            if !follows_a_parse_error {
                errors.push(e.to_string());
            }
        }
        if let Some(e) = memlock_error(cfg.shard_count()) {
            errors.push(e.to_string());
        }
        (cfg, errors, report.warnings)
    }

    /// The config, after printing its warnings; or, after printing every error, exit code 1.
    fn config(&self) -> Result<Config, ExitCode> {
        let (cfg, errors, warnings) = self.to_config();
        for w in &warnings {
            eprint(&format!("wtgate: warning: {w}"));
        }
        if errors.is_empty() {
            return Ok(cfg);
        }
        for e in &errors {
            eprint(&format!("wtgate: {e}"));
        }
        Err(ExitCode::from(1))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let prog = "wtgate";
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let (cmd, flags) = match rest.first() {
        Some(&c @ ("run" | "check" | "demo")) => (c, &rest[1..]),
        _ => ("run", &rest[..]),
    };
    let name = if cmd == "run" && rest.first() != Some(&"run") {
        prog.to_string()
    } else {
        format!("{prog} {cmd}")
    };
    let version = || print(&format!("{prog} {VERSION}\n"), ExitCode::SUCCESS);
    let result = match cmd {
        "demo" => DemoArgs::from_args(&[&name], flags)
            .map(|a| if a.version { version() } else { demo(&a) }),
        "check" => ProxyArgs::from_args(&[&name], flags)
            .map(|a| if a.version { version() } else { check(&a) }),
        _ => ProxyArgs::from_args(&[&name], flags)
            .map(|a| if a.version { version() } else { run(&a) }),
    };
    match result {
        Ok(code) => code,
        Err(early) => {
            // --help, or a flag argh could not parse.
            if early.status.is_ok() {
                print(&format!("{}\n", early.output), ExitCode::SUCCESS)
            } else {
                // 1 like every other refusal: scripts and systemd need not tell a typo in a flag
                // from a bad value.
                eprint(&format!(
                    "{prog}: {}\nRun '{name} --help' for the options.",
                    early.output.trim_end()
                ));
                ExitCode::from(1)
            }
        }
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes `text` to stdout and returns `code`. println! would panic when the reader is gone
/// (`wtgate --help | head -1`): Rust ignores SIGPIPE, so the write fails with EPIPE instead of
/// killing us. A reader that stopped reading wanted no more, so that is a quiet exit with the code
/// we had; any other write error is a failure.
fn print(text: &str, code: ExitCode) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Err(e) => fail(format!("cannot write to stdout: {e}")),
    }
}

/// Writes `text` and a newline to stderr, ignoring failure: there is nowhere left to report it.
fn eprint(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err
        .write_all(text.trim_end().as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprint(&format!("wtgate: {msg}"));
    ExitCode::from(1)
}

fn run(args: &ProxyArgs) -> ExitCode {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let shards = cfg.shard_count();
    let engine = match Engine::start(cfg.clone()) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let listen: Vec<String> = engine.local_addrs().iter().map(|a| a.to_string()).collect();
    eprint(&format!(
        "wtgate: listening on {} with {shards} shard(s); backends: {}",
        listen.join(", "),
        cfg.backends
            .iter()
            .map(|b| format!("{}={}", b.prefix, b.addr))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    engine.wait();
    ExitCode::SUCCESS
}

fn check(args: &ProxyArgs) -> ExitCode {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut out = String::new();
    let _ = writeln!(out, "configuration OK");
    for l in &cfg.listen {
        let pp = if l.proxy_protocol {
            " (PROXY protocol: expects a v1/v2 header first)"
        } else {
            ""
        };
        let _ = writeln!(out, "listen: {}{pp}", l.addr);
    }
    let _ = writeln!(
        out,
        "shards: {}    session id: prefix + {} chars [0-9A-Za-z]",
        cfg.shard_count(),
        cfg.session_id_length
    );
    let reuse = match cfg.reuse {
        Reuse::Safe => {
            "pooled backend connections, except for the first request of a client \
                        connection that could not be resent"
        }
        Reuse::Always => "pooled backend connections for any request",
        Reuse::Never => "a new backend connection for every request",
    };
    let _ = writeln!(out, "reuse: {} ({reuse}; upgrades never)", cfg.reuse);
    let forwarded = if !cfg.forwarded_headers {
        "not added (--no-forwarded-headers)".to_string()
    } else if cfg.trusted_proxies.is_empty() {
        "set from the client's address; no client is trusted to send them".to_string()
    } else {
        let nets: Vec<String> = cfg.trusted_proxies.iter().map(|n| n.to_string()).collect();
        format!("kept and appended to from {}", nets.join(", "))
    };
    let _ = writeln!(out, "X-Forwarded-For/-Proto: {forwarded}");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:<28} {:<22}",
        "prefix", "weight", "address", "owns wtd values like"
    );
    for b in &cfg.backends {
        let example = format!("{}{}", b.prefix, "x".repeat(cfg.session_id_length));
        // A host name also shows its address now, which may move later.
        let address = if b.host == b.addr.to_string() {
            b.host.clone()
        } else {
            format!("{} ({})", b.host, b.addr)
        };
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<28} {:<22}",
            b.prefix, b.weight, address, example
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "requests without a known wtd: weighted round-robin over backends that are up"
    );
    print(&out, ExitCode::SUCCESS)
}

fn demo(args: &DemoArgs) -> ExitCode {
    let mut backends = Vec::new();
    // The demo's clients are curl and a browser, which send no PROXY protocol header.
    let addr = |spec: &str| match parse_listen(spec) {
        Ok(l) if l.proxy_protocol => Err(format!("'{spec}': the demo takes no proxy-protocol")),
        Ok(l) => Ok(l.addr),
        Err(e) => Err(e.to_string()),
    };
    for (prefix, spec) in [("wt1", &args.wt1), ("wt2", &args.wt2)] {
        let addr = match addr(spec) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        match DemoBackend::spawn(prefix, addr) {
            Ok(b) => backends.push(b),
            Err(e) => {
                return fail(format!(
                    "demo backend {prefix} cannot listen on {addr}: {e}"
                ));
            }
        }
    }
    let listen = match addr(&args.listen) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let cfg = Config {
        listen: vec![listen.into()],
        threads: args.threads,
        backends: backends
            .iter()
            .map(|b| BackendConfig {
                prefix: b.prefix().to_string(),
                addr: b.addr(),
                host: b.addr().to_string(),
                weight: 1,
                check: None,
            })
            .collect(),
        ..Config::default()
    };
    let engine = match Engine::start(cfg) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let url = format!("http://{}/", engine.local_addrs()[0]);
    let mut out = String::new();
    let _ = writeln!(out, "wtgate demo: two Wt-like servers behind wtgate");
    for b in &backends {
        let _ = writeln!(out, "  backend {} on {}", b.prefix(), b.addr());
    }
    let _ = writeln!(out, "  wtgate  on {}", engine.local_addrs()[0]);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Open {url} in a browser and follow the session link: every request of a session"
    );
    let _ = writeln!(
        out,
        "lands on the backend that created it; new sessions alternate between wt1 and wt2."
    );
    let _ = writeln!(out, "Or with curl:");
    let _ = writeln!(
        out,
        "  curl -si {url} | grep -E 'X-Backend|session'      # twice: wt1 then wt2"
    );
    let _ = writeln!(
        out,
        "  curl -si '{url}?wtd=<id from above>' | grep X-Backend   # always the owner"
    );
    let _ = writeln!(out, "Stop with Ctrl-C.");
    // The demo serves on whether or not anyone reads this.
    print(&out, ExitCode::SUCCESS);
    engine.wait();
    ExitCode::SUCCESS
}
