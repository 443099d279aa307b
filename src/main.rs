//! The `wtgate` command: `run` (the default), `check`, `demo`, `admin`.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;

use argh::FromArgs;
use signal_hook::iterator::Signals;
use wtgate::config::file::{ConfigFile, Origins};
use wtgate::config::{
    BackendConfig, Config, ConfigError, Reuse, Setting, check_operator_listen, format_duration,
    memlock_error, parse_check, parse_cidr, parse_duration, parse_listen,
};
use wtgate::engine::Engine;
use wtgate_demo::DemoBackend;

#[derive(FromArgs, Clone)]
/// wtgate: a reverse proxy for Wt servers that keeps every Wt session on the server that owns it, by
/// the exact `wtd` session id in the URL (no cookies), and round-robins new sessions over the rest.
#[argh(
    help_triggers("-h", "--help", "help"),
    example = "wtgate --listen 0.0.0.0:8080 --backend wt1=127.0.0.1:9090 --backend wt2=127.0.0.1:9091",
    example = "wtgate check --config /etc/wtgate/wtgate.toml",
    note = "Commands:\n  wtgate [run] [OPTIONS]   serve (the default command)\n  wtgate check [OPTIONS]   validate the options, print the routing table\n  wtgate demo [OPTIONS]    two Wt-like demo servers behind wtgate, to try it\n  wtgate admin COMMAND     drain, ready, maint, sessions, reload: running wtgates\n\nDurations take ms, s, m or h (a bare number is seconds).\n\nA --config file (TOML; wtgate.example.toml shows every key) can hold every option. An option\ngiven on the command line wins over the file's value, and --listen, --backend and\n--trust-forwarded-from given there replace the file's lists.\n\nSignals: SIGTERM or SIGINT stops gracefully (see --grace); SIGHUP re-reads --config and\nputs backend and proxy changes in force without dropping a connection, and reopens the\naccess log; SIGUSR1 only reopens the access log (after a rotation). With --watch-config (or\nwatch = true in the file), a change of the file is put in force as SIGHUP would, within 2 s."
)]
struct ProxyArgs {
    /// a TOML config file with any of the settings below (see wtgate.example.toml); the options
    /// given on the command line win over it
    #[argh(option)]
    config: Option<String>,

    /// put the --config file in force whenever it changes, as SIGHUP does (a file that does not
    /// validate is refused and logged; the running config stays): checked every second, following
    /// symbolic links, so a Kubernetes ConfigMap update counts; also watch = true in the file
    #[argh(switch)]
    watch_config: bool,

    /// address to listen on: HOST:PORT, [IPV6]:PORT, or a bare PORT or :PORT meaning
    /// 0.0.0.0:PORT; options after commas: proxy-protocol (a PROXY protocol v1/v2 header on
    /// every connection, from a load balancer in front), tls (HTTPS and WSS, with --tls-cert),
    /// redirect-https (answer every request with a redirect to https://, for port 80)
    /// (repeatable)
    #[argh(option)]
    listen: Vec<String>,

    /// a Wt server: PREFIX=HOST:PORT[,weight=N][,check=tcp|/path], where PREFIX is the server's
    /// --session-id-prefix and an IPv6 HOST is written [::1] (repeatable, at least one)
    #[argh(option)]
    backend: Vec<String>,

    /// shards (threads, each with its own listener); 0: one per core
    #[argh(option)]
    threads: Option<usize>,

    /// do not pin shard i to core i (for machines shared with other busy processes)
    #[argh(switch)]
    no_pin: bool,

    /// characters after the prefix in a Wt session id (Wt's session-id-length)
    #[argh(option)]
    session_id_length: Option<usize>,

    /// timeout for connecting to a backend
    #[argh(option)]
    connect_timeout: Option<String>,

    /// time a client gets to send a whole request head, else 408
    #[argh(option)]
    request_head_timeout: Option<String>,

    /// client inactivity allowed while a request is in flight
    #[argh(option)]
    client_timeout: Option<String>,

    /// backend inactivity allowed while we wait for or read its response, else 504 (keep it
    /// above Wt's 50 s long-poll/server-push timeout)
    #[argh(option)]
    server_timeout: Option<String>,

    /// idle time after which a WebSocket tunnel is closed
    #[argh(option)]
    tunnel_timeout: Option<String>,

    /// idle time of a client keep-alive connection between requests
    #[argh(option)]
    keepalive_timeout: Option<String>,

    /// idle time after which a pooled backend connection is closed; keep it below the backend's
    /// own keep-alive timeout (wthttpd: 10 s)
    #[argh(option)]
    pool_idle_timeout: Option<String>,

    /// how long a request waits for a backend to come back when none can take it (all down, in
    /// maintenance or draining) before wtgate answers 503 (HAProxy's timeout queue)
    #[argh(option)]
    queue_timeout: Option<String>,

    /// client connections served at once; more wait in the kernel backlog
    #[argh(option)]
    maxconn: Option<usize>,

    /// a certificate for the tls listeners: CHAIN.pem,KEY.pem (PEM, leaf certificate first), or
    /// one PEM file holding both; repeat it for several sites: a client's SNI name picks the
    /// first certificate that covers it, else the first one is served (see --tls-strict-sni).
    /// Read again on reload (SIGHUP); a bad file is refused with its name and the fix
    #[argh(option)]
    tls_cert: Vec<String>,

    /// refuse the handshake of a client whose SNI name no certificate covers, or that sends none
    #[argh(switch)]
    tls_strict_sni: bool,

    /// serve a certificate that has expired or is not yet valid (refused otherwise)
    #[argh(switch)]
    tls_allow_expired: bool,

    /// how long a TLS client may take from its first byte to the end of its handshake
    #[argh(option)]
    tls_handshake_timeout: Option<String>,

    /// connect attempts per request; a failed connect marks that backend down on every shard, so
    /// every further attempt goes to another backend
    #[argh(option)]
    retries: Option<u32>,

    /// largest request or response head accepted, in bytes, else 431/502
    #[argh(option)]
    max_head_bytes: Option<usize>,

    /// most header fields in a head, else 431/502
    #[argh(option)]
    max_headers: Option<usize>,

    /// idle keep-alive connections kept per backend per shard
    #[argh(option)]
    pool_size: Option<usize>,

    /// which requests may take a pooled backend connection: 'safe': all but the first of each
    /// client connection, unless wtgate can resend that one itself (GET/HEAD/OPTIONS without a
    /// body); 'always': any; 'never': none (no pool). An upgrade (WebSocket) request never does
    #[argh(option)]
    reuse: Option<String>,

    /// how WebSocket tunnels move bytes: 'auto': copy, but splice(2) through a pipe, per
    /// direction, while reads bring 16 KiB or more; 'off': always copy
    #[argh(option)]
    splice: Option<String>,

    /// do not add X-Forwarded-For / X-Forwarded-Proto to requests
    #[argh(switch)]
    no_forwarded_headers: bool,

    /// a client whose X-Forwarded-For/-Proto are kept and appended to rather than replaced, such
    /// as a TLS terminator in front: a CIDR like 10.0.0.0/8, or one IP (repeatable)
    #[argh(option)]
    trust_forwarded_from: Vec<String>,

    /// active health check of every backend: 'tcp' (connect) or an HTTP path such as /health,
    /// which must answer 2xx/3xx; a backend's own check= overrides it
    #[argh(option)]
    check: Option<String>,

    /// time between two checks of a backend
    #[argh(option)]
    check_interval: Option<String>,

    /// time between two checks of a backend that is down or failed its last check, so that one
    /// that is back serves again within rise x this (HAProxy's fastinter/downinter)
    #[argh(option)]
    down_interval: Option<String>,

    /// good checks in a row that bring a down backend back
    #[argh(option)]
    rise: Option<u32>,

    /// failed checks in a row that take a backend down; a failed connect of a real request takes
    /// it down at once
    #[argh(option)]
    fall: Option<u32>,

    /// a Wt session counts as live this long after its last request (Wt's session timeout), or
    /// while one of its WebSockets is open
    #[argh(option)]
    session_idle: Option<String>,

    /// sessions each shard tracks at most (about 20 bytes each); more are counted, not tracked
    #[argh(option)]
    max_sessions: Option<usize>,

    /// on SIGTERM/SIGINT: stop accepting, let requests in flight finish and WebSockets go on this
    /// long, then close the rest and exit 0; a second signal stops at once
    #[argh(option)]
    grace: Option<String>,

    /// serve as this user once the listeners are bound (start as root to bind port 80)
    #[argh(option)]
    user: Option<String>,

    /// address of the admin HTTP listener (status page /, /metrics, /stats, backend states for
    /// 'wtgate admin'), e.g. 127.0.0.1:8404 (a bare PORT is 127.0.0.1:PORT); off unless given.
    /// Other than loopback it needs --admin-token
    #[argh(option)]
    admin: Option<String>,

    /// bearer token every admin request must carry (Authorization: Bearer TOKEN)
    #[argh(option)]
    admin_token: Option<String>,

    /// write one line per request and per WebSocket tunnel to this file (appended to, created
    /// if missing), or to stdout for '-'; off unless given. A slow or full disk never holds
    /// requests up: lines are dropped then, and counted in /metrics
    #[argh(option)]
    access_log: Option<String>,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
}

#[derive(FromArgs)]
/// Starts two Wt-like demo servers (session-id prefixes wt1 and wt2) and wtgate in front of them,
/// then prints what to open or curl. Stop with Ctrl-C.
#[argh(help_triggers("-h", "--help", "help"))]
struct DemoArgs {
    /// address wtgate listens on
    #[argh(option)]
    listen: Option<String>,

    /// address of the wt1 demo server
    #[argh(option)]
    wt1: Option<String>,

    /// address of the wt2 demo server
    #[argh(option)]
    wt2: Option<String>,

    /// shards (the default is plenty for a demo)
    #[argh(option)]
    threads: Option<usize>,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
}

#[derive(FromArgs)]
/// Changes or reads the state of a backend of a running wtgate, through its --admin listener; or
/// of every instance of an active-active wtgate at once, through each one's.
#[argh(
    help_triggers("-h", "--help", "help"),
    example = "wtgate admin drain wt1 --wait --timeout 30m   # before restarting wt1\nwtgate admin ready wt1                         # once it is back\nwtgate admin --url http://10.0.0.1:8404 --url http://10.0.0.2:8404 drain wt1 --wait\nwtgate admin --config /etc/wtgate/wtgate.toml sessions wt1   # its [admin] peers",
    note = "Which instances: every --url given; else the --config file's [admin] peers, else its\n[admin] listen; else http://127.0.0.1:8404. The token: --token, else $WTGATE_ADMIN_TOKEN,\nelse the file's [admin] token, the same for every instance.\n\nSeveral instances: each command goes to all of them at once, and each line of output starts\nwith the instance's URL. A state change or reload is made on every instance that answers;\nnothing is undone where another failed: each instance that failed gets a line on stderr, then\none line says where it was made and where not, and the exit status is 1 (run the command\nagain: a state change may be repeated). sessions prints each instance's count and the total\n(a session used through two instances counts on each). drain --wait waits only if the drain\nwas made everywhere, and returns once every instance, in the same round of polls, has no live\nsession of the backend left; an instance that stops answering ends it with exit status 1.\n\nExit status 0 on success; 1 on an error on any instance, or when --wait times out with\nsessions left."
)]
struct AdminArgs {
    /// an admin listener: http://HOST:PORT, as wtgate's --admin; repeat it to act on every
    /// instance of an active-active wtgate at once (default: the --config file's, else
    /// http://127.0.0.1:8404)
    #[argh(option)]
    url: Vec<String>,

    /// a wtgate config file: act on its [admin] peers (every instance), or else on its [admin]
    /// listen, with its [admin] token; --url and --token win over it
    #[argh(option)]
    config: Option<String>,

    /// the --admin-token wtgate runs with, the same for every instance (default:
    /// $WTGATE_ADMIN_TOKEN, which keeps it out of the process list; else the --config file's)
    #[argh(option)]
    token: Option<String>,

    #[argh(subcommand)]
    command: AdminCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum AdminCommand {
    Drain(DrainArgs),
    Ready(ReadyArgs),
    Maint(MaintArgs),
    Sessions(SessionsArgs),
    Reload(ReloadArgs),
}

#[derive(FromArgs)]
/// Keep serving the backend's sessions, send it no new ones (before a restart).
#[argh(subcommand, name = "drain")]
struct DrainArgs {
    /// the backend's session-id prefix, e.g. wt1
    #[argh(positional)]
    prefix: String,

    /// then wait until it has no live session left (polled every second)
    #[argh(switch)]
    wait: bool,

    /// with --wait: give up after this long, exit 1 (default 30m)
    #[argh(option)]
    timeout: Option<String>,
}

#[derive(FromArgs)]
/// Back to normal service.
#[argh(subcommand, name = "ready")]
struct ReadyArgs {
    /// the backend's session-id prefix, e.g. wt1
    #[argh(positional)]
    prefix: String,
}

#[derive(FromArgs)]
/// No traffic at all: the backend's sessions go to others (and start over there).
#[argh(subcommand, name = "maint")]
struct MaintArgs {
    /// the backend's session-id prefix, e.g. wt1
    #[argh(positional)]
    prefix: String,
}

#[derive(FromArgs)]
/// The backend's live Wt sessions, and when the last request of one came.
#[argh(subcommand, name = "sessions")]
struct SessionsArgs {
    /// the backend's session-id prefix, e.g. wt1
    #[argh(positional)]
    prefix: String,
}

#[derive(FromArgs)]
/// Read the --config file again and put it in force, as SIGHUP does; prints what changed, or
/// every error of a file that does not validate (exit 1; the running config stays).
#[argh(subcommand, name = "reload")]
struct ReloadArgs {}

impl DemoArgs {
    const LISTEN: &str = "127.0.0.1:8080";
    const WT1: &str = "127.0.0.1:9090";
    const WT2: &str = "127.0.0.1:9091";
    const THREADS: usize = 1;

    /// Each option's default, as `wtgate demo --help` lists it: (flag, value).
    fn defaults() -> Vec<(&'static str, String)> {
        vec![
            ("listen", DemoArgs::LISTEN.to_string()),
            ("wt1", DemoArgs::WT1.to_string()),
            ("wt2", DemoArgs::WT2.to_string()),
            ("threads", DemoArgs::THREADS.to_string()),
        ]
    }
}

impl ProxyArgs {
    /// Each option's default, as `wtgate --help` lists it: (flag, value), from `Config::default()`.
    /// Options without one (`--config`, `--backend`, `--trust-forwarded-from`) and switches are not
    /// listed.
    fn defaults() -> Vec<(&'static str, String)> {
        let c = Config::default();
        let t = &c.timeouts;
        vec![
            ("listen", Config::DEFAULT_LISTEN.to_string()),
            ("threads", c.threads.to_string()),
            ("session-id-length", c.session_id_length.to_string()),
            ("connect-timeout", format_duration(t.connect)),
            ("request-head-timeout", format_duration(t.request_head)),
            ("client-timeout", format_duration(t.client)),
            ("server-timeout", format_duration(t.server)),
            ("tunnel-timeout", format_duration(t.tunnel)),
            ("keepalive-timeout", format_duration(t.keepalive)),
            ("pool-idle-timeout", format_duration(t.pool_idle)),
            ("queue-timeout", format_duration(t.queue)),
            ("tls-handshake-timeout", format_duration(t.tls_handshake)),
            ("maxconn", c.maxconn.to_string()),
            ("retries", c.retries.to_string()),
            ("max-head-bytes", c.max_head_bytes.to_string()),
            ("max-headers", c.max_headers.to_string()),
            ("pool-size", c.pool_size.to_string()),
            ("reuse", c.reuse.to_string()),
            ("splice", c.splice.to_string()),
            ("check", c.check.to_string()),
            ("check-interval", format_duration(c.check_interval)),
            ("down-interval", format_duration(c.down_interval)),
            ("rise", c.rise.to_string()),
            ("fall", c.fall.to_string()),
            ("session-idle", format_duration(c.session_idle)),
            ("max-sessions", c.max_sessions.to_string()),
            ("grace", format_duration(c.grace)),
        ]
    }

    /// The config these flags and the `--config` file ask for, with every error and warning
    /// found, all at once: values that do not parse, what `Config::validate_all` refuses, and what
    /// only the command line refuses. A setting that neither gives keeps `Config::default()`'s
    /// value; a flag given wins over the file.
    fn to_config(&self) -> (Config, Vec<String>, Vec<String>) {
        let mut errors = Vec::new();
        let mut cfg = Config::default();
        let mut origins = Origins::default();
        let (mut file_listen, mut file_backends, mut file_ok) = (None, None, true);
        if let Some(path) = &self.config {
            match ConfigFile::load(path) {
                Ok(file) => {
                    let applied = file.apply(&mut cfg);
                    errors.extend(applied.errors);
                    origins = applied.origins;
                    (file_listen, file_backends) = (applied.listen, applied.backends);
                }
                Err(e) => {
                    errors.extend(e);
                    file_ok = false;
                }
            }
        }
        if self.watch_config && self.config.is_none() {
            errors.push("--watch-config follows the --config file: add --config FILE".into());
        }
        let (listen_ok, backends_ok) =
            self.parse_addresses(&mut cfg, (file_listen, file_backends), &mut errors);
        self.parse_timeouts(&mut cfg, &mut errors);
        self.parse_options(&mut cfg, &mut errors);
        origins.forget(|s| self.gives(s));
        if !file_ok {
            // Without the file's settings, "no backends" and the like would be wrong.
            return (cfg, errors, Vec::new());
        }
        let report = cfg.validate_named(&|s| origins.name(s));
        for e in report.errors {
            // "No backends" next to "--backend 'x': bad" would contradict the operator.
            let follows_a_parse_error = match e {
                ConfigError::NoListen => !listen_ok,
                ConfigError::NoBackends | ConfigError::NoWeight => !backends_ok,
                _ => false,
            };
            if !follows_a_parse_error {
                errors.push(origins.locate(&e));
            }
        }
        let warnings = report
            .warnings
            .iter()
            .map(|w| origins.locate_warning(w))
            .collect();
        (cfg, errors, warnings)
    }

    /// Whether the config file is to be followed: `--watch-config`, or `watch = true` in it.
    fn watches(&self) -> bool {
        let file = self
            .config
            .as_deref()
            .and_then(|p| ConfigFile::load(p).ok());
        self.watch_config || file.is_some_and(|f| f.watch())
    }

    /// Whether the command line sets `s`, overriding the config file.
    fn gives(&self, s: Setting) -> bool {
        match s {
            Setting::Listen(_)
            | Setting::ListenProxyProtocol(_)
            | Setting::ListenTls(_)
            | Setting::ListenRedirectHttps(_) => !self.listen.is_empty(),
            Setting::BackendPrefix(_)
            | Setting::BackendAddress(_)
            | Setting::BackendWeight(_)
            | Setting::BackendCheck(_) => !self.backend.is_empty(),
            Setting::Threads => self.threads.is_some(),
            Setting::Admin => self.admin.is_some(),
            Setting::AdminToken => self.admin_token.is_some(),
            Setting::Pin => self.no_pin,
            Setting::SessionIdLength => self.session_id_length.is_some(),
            Setting::ConnectTimeout => self.connect_timeout.is_some(),
            Setting::RequestHeadTimeout => self.request_head_timeout.is_some(),
            Setting::ClientTimeout => self.client_timeout.is_some(),
            Setting::ServerTimeout => self.server_timeout.is_some(),
            Setting::TunnelTimeout => self.tunnel_timeout.is_some(),
            Setting::KeepaliveTimeout => self.keepalive_timeout.is_some(),
            Setting::PoolIdleTimeout => self.pool_idle_timeout.is_some(),
            Setting::QueueTimeout => self.queue_timeout.is_some(),
            Setting::Maxconn => self.maxconn.is_some(),
            Setting::Retries => self.retries.is_some(),
            Setting::MaxHeadBytes => self.max_head_bytes.is_some(),
            Setting::MaxHeaders => self.max_headers.is_some(),
            Setting::PoolSize => self.pool_size.is_some(),
            Setting::Reuse => self.reuse.is_some(),
            Setting::Splice => self.splice.is_some(),
            Setting::ForwardedHeaders => self.no_forwarded_headers,
            Setting::TrustForwardedFrom(_) => !self.trust_forwarded_from.is_empty(),
            Setting::Check => self.check.is_some(),
            Setting::CheckInterval => self.check_interval.is_some(),
            Setting::DownInterval => self.down_interval.is_some(),
            Setting::Rise => self.rise.is_some(),
            Setting::Fall => self.fall.is_some(),
            Setting::SessionIdle => self.session_idle.is_some(),
            Setting::MaxSessions => self.max_sessions.is_some(),
            Setting::Grace => self.grace.is_some(),
            Setting::User => self.user.is_some(),
            Setting::AccessLog => self.access_log.is_some(),
            Setting::TlsHandshakeTimeout => self.tls_handshake_timeout.is_some(),
            Setting::TlsCert(_) => !self.tls_cert.is_empty(),
            Setting::TlsStrictSni => self.tls_strict_sni,
            Setting::TlsAllowExpired => self.tls_allow_expired,
        }
    }

    /// `--listen` and `--backend`, which replace the config file's lists if given; true for each
    /// kind that parsed entirely. `file` says, for each, whether the file had a list and whether
    /// all of it was good.
    fn parse_addresses(
        &self,
        cfg: &mut Config,
        file: (Option<bool>, Option<bool>),
        errors: &mut Vec<String>,
    ) -> (bool, bool) {
        let listen = if !self.listen.is_empty() {
            cfg.listen.clear();
            self.listen.clone()
        } else if file.0.is_some() {
            Vec::new()
        } else {
            vec![Config::DEFAULT_LISTEN.to_string()]
        };
        let mut listen_ok = file.0.unwrap_or(true) || !self.listen.is_empty();
        for l in &listen {
            match parse_listen(l) {
                Ok(a) => match check_operator_listen(a.addr) {
                    Ok(()) => cfg.listen.push(a),
                    Err(why) => {
                        errors.push(format!("--listen '{l}': {why}"));
                        listen_ok = false;
                    }
                },
                Err(e) => {
                    errors.push(e.to_string());
                    listen_ok = false;
                }
            }
        }
        let mut backends_ok = file.1.unwrap_or(true) || !self.backend.is_empty();
        if !self.backend.is_empty() {
            cfg.backends.clear();
        }
        for b in &self.backend {
            match BackendConfig::parse(b) {
                Ok(b) => cfg.backends.push(b),
                Err(e) => {
                    errors.push(e.to_string());
                    backends_ok = false;
                }
            }
        }
        (listen_ok, backends_ok)
    }

    fn parse_timeouts(&self, cfg: &mut Config, errors: &mut Vec<String>) {
        let t = &mut cfg.timeouts;
        for (flag, v, into) in [
            ("connect-timeout", &self.connect_timeout, &mut t.connect),
            (
                "request-head-timeout",
                &self.request_head_timeout,
                &mut t.request_head,
            ),
            ("client-timeout", &self.client_timeout, &mut t.client),
            ("server-timeout", &self.server_timeout, &mut t.server),
            ("tunnel-timeout", &self.tunnel_timeout, &mut t.tunnel),
            (
                "keepalive-timeout",
                &self.keepalive_timeout,
                &mut t.keepalive,
            ),
            (
                "pool-idle-timeout",
                &self.pool_idle_timeout,
                &mut t.pool_idle,
            ),
            (
                "check-interval",
                &self.check_interval,
                &mut cfg.check_interval,
            ),
            ("down-interval", &self.down_interval, &mut cfg.down_interval),
            ("queue-timeout", &self.queue_timeout, &mut t.queue),
            (
                "tls-handshake-timeout",
                &self.tls_handshake_timeout,
                &mut t.tls_handshake,
            ),
            ("session-idle", &self.session_idle, &mut cfg.session_idle),
            ("grace", &self.grace, &mut cfg.grace),
        ] {
            let Some(v) = v else { continue };
            match parse_duration(v) {
                Ok(v) => *into = v,
                Err(e) => errors.push(format!("--{flag}: {e}")),
            }
        }
    }

    fn parse_options(&self, cfg: &mut Config, errors: &mut Vec<String>) {
        fn set<T>(into: &mut T, flag: Option<T>) {
            if let Some(v) = flag {
                *into = v;
            }
        }
        set(&mut cfg.threads, self.threads);
        // A switch can only turn its setting off: left out, it leaves the file's value.
        if self.no_pin {
            cfg.pin = false;
        }
        set(&mut cfg.session_id_length, self.session_id_length);
        set(&mut cfg.maxconn, self.maxconn);
        set(&mut cfg.retries, self.retries);
        set(&mut cfg.max_head_bytes, self.max_head_bytes);
        set(&mut cfg.max_headers, self.max_headers);
        set(&mut cfg.pool_size, self.pool_size);
        set(&mut cfg.rise, self.rise);
        set(&mut cfg.fall, self.fall);
        set(&mut cfg.max_sessions, self.max_sessions);
        if self.user.is_some() {
            cfg.user = self.user.clone();
        }
        if self.access_log.is_some() {
            cfg.access_log = self.access_log.clone();
        }
        if self.no_forwarded_headers {
            cfg.forwarded_headers = false;
        }
        match self.reuse.as_deref().map(str::parse) {
            None => {}
            Some(Ok(r)) => cfg.reuse = r,
            Some(Err(e)) => errors.push(e.to_string()),
        }
        match self.splice.as_deref().map(str::parse) {
            None => {}
            Some(Ok(s)) => cfg.splice = s,
            Some(Err(e)) => errors.push(e.to_string()),
        }
        if !self.trust_forwarded_from.is_empty() {
            cfg.trusted_proxies.clear();
        }
        for t in &self.trust_forwarded_from {
            match parse_cidr(t) {
                Ok(net) => cfg.trusted_proxies.push(net),
                Err(e) => errors.push(e.to_string()),
            }
        }
        match self.check.as_deref().map(parse_check) {
            None => {}
            Some(Ok(c)) => cfg.check = c,
            Some(Err(e)) => errors.push(format!("--check: {e}")),
        }
        self.parse_admin(cfg, errors);
        self.parse_tls(cfg, errors);
    }

    /// `--tls-cert` (replacing the file's certificates when given) and the TLS switches.
    fn parse_tls(&self, cfg: &mut Config, errors: &mut Vec<String>) {
        if !self.tls_cert.is_empty() {
            cfg.tls.certs.clear();
        }
        for spec in &self.tls_cert {
            match wtgate::config::CertFiles::parse(spec) {
                Ok(c) => cfg.tls.certs.push(c),
                Err(e) => errors.push(format!("--tls-cert {e}")),
            }
        }
        if self.tls_strict_sni {
            cfg.tls.strict_sni = true;
        }
        if self.tls_allow_expired {
            cfg.tls.allow_expired = true;
        }
    }

    fn parse_admin(&self, cfg: &mut Config, errors: &mut Vec<String>) {
        if let Some(token) = &self.admin_token {
            cfg.admin_token = Some(token.clone());
        }
        let Some(spec) = &self.admin else { return };
        match wtgate::config::parse_admin_addr(spec) {
            Ok(addr) => cfg.admin = Some(addr),
            Err(why) => errors.push(format!("--admin '{spec}': {why}")),
        }
    }

    /// The config, after printing its warnings; or, after printing every error, exit code 1.
    fn config(&self) -> Result<Config, ExitCode> {
        let (cfg, mut errors, warnings) = self.to_config();
        // At start only: a reload runs with the shards it has (and may no longer be root).
        if let Some(e) = memlock_error(cfg.shard_count()) {
            errors.push(e.to_string());
        }
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
        Some(&c @ ("run" | "check" | "demo" | "admin")) => (c, &rest[1..]),
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
        "admin" => AdminArgs::from_args(&[&name], flags).map(|a| admin(&a)),
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
                let defaults = match cmd {
                    "demo" => DemoArgs::defaults(),
                    // Its defaults are in its flags' texts: subcommands have flags of their own.
                    "admin" => return print(&format!("{}\n", early.output), ExitCode::SUCCESS),
                    _ => ProxyArgs::defaults(),
                };
                let help = with_defaults(&early.output, &defaults);
                print(&format!("{help}\n"), ExitCode::SUCCESS)
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

/// argh's help with a "Defaults:" section after the options, listing `defaults` (flag, value):
/// argh takes help texts only from doc comments, so the defaults are added here rather than
/// written into each flag's text, where they could drift from the values in use.
fn with_defaults(help: &str, defaults: &[(&str, String)]) -> String {
    let width = defaults.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
    let mut section = String::from("Defaults:");
    for (flag, value) in defaults {
        let _ = write!(section, "\n  --{flag:<width$}  {value}");
    }
    // Before the examples and notes that argh puts after the options, if any.
    let at = ["\n\nExamples:", "\n\nNotes:"]
        .iter()
        .filter_map(|h| help.find(h))
        .min()
        .unwrap_or(help.trim_end().len());
    format!("{}\n\n{section}{}", &help[..at], &help[at..])
}

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

/// A panic in any thread ends the process. A shard that died alone would leave its
/// SO_REUSEPORT listener in the group, and the connections the kernel gives it would wait for an
/// accept that never comes; the whole process going lets the service manager (systemd's
/// `Restart=on-failure`) start a fresh one.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprint(
            "wtgate: a thread panicked (a bug: please report it with the lines above); exiting \
             so that the service manager starts wtgate again",
        );
        std::process::abort();
    }));
}

fn run(args: &ProxyArgs) -> ExitCode {
    exit_on_panic();
    // Taken over first: from here on, an early SIGHUP (a reload right after start) or SIGUSR1 (a
    // log rotation) waits for the engine instead of killing wtgate, their default.
    let hup = Signals::new([signal_hook::consts::SIGHUP, signal_hook::consts::SIGUSR1]);
    // Taken before the file is read, so that a change made while it is read is seen as one.
    let watched = args.config.as_deref().map(|path| {
        let start = wtgate::watch::Signature::of(std::path::Path::new(path));
        (path, start.ok())
    });
    let cfg = match args.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let shards = cfg.shard_count();
    let engine = match Engine::start(cfg.clone()) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    // Before the "listening" line, which tells scripts (and tests) that signals are handled.
    stop_on_signals(&engine);
    reload_on_sighup(&engine, args, hup);
    if let Some((path, start)) = watched
        && args.watches()
    {
        reload_on_change(&engine, path, start);
    }
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
    if let Some(addr) = engine.admin_addr() {
        eprint(&format!("wtgate: admin listener on http://{addr}/"));
    }
    if let Some(user) = &cfg.user {
        match wtgate::privileges::become_user(user) {
            Ok(ids) => eprint(&format!("wtgate: serving as {user} (uid {})", ids.uid)),
            Err(e) => return fail(e),
        }
    }
    engine.wait();
    eprint("wtgate: stopped");
    ExitCode::SUCCESS
}

/// SIGTERM or SIGINT: a graceful stop (no new connections; requests in flight finish; WebSockets
/// get up to `grace`, as last configured); a second one: out at once.
fn stop_on_signals(engine: &Engine) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprint(&format!(
                "wtgate: warning: no graceful stop on signals: {e}"
            ));
            return;
        }
    };
    let (control, handle) = (engine.control(), engine.handle());
    std::thread::spawn(move || {
        let mut forever = signals.forever();
        if forever.next().is_some() {
            let grace = handle.config().grace;
            eprint(&format!(
                "wtgate: stopping: no new connections; requests in flight finish, WebSockets get \
                 up to {}; signal again to stop at once",
                format_duration(grace)
            ));
            control.drain(grace);
        }
        if forever.next().is_some() {
            eprint("wtgate: stopping at once");
            std::process::exit(1);
        }
    });
}

/// SIGHUP: reopen the access log, read the `--config` file again, apply the command line over it
/// as at start, and put the result in force (the engine logs what changed, or why nothing did).
/// Without `--config`, the reload part is refused with a line saying so, rather than killing
/// wtgate as SIGHUP would. SIGUSR1: reopen the access log only (nginx's signal for log rotation).
fn reload_on_sighup(engine: &Engine, args: &ProxyArgs, hup: io::Result<Signals>) {
    let handle = engine.handle();
    if args.config.is_some() {
        let args = args.clone();
        handle.set_config_source(Box::new(move || {
            let (cfg, errors, warnings) = args.to_config();
            if errors.is_empty() {
                Ok((cfg, warnings))
            } else {
                Err(errors)
            }
        }));
    }
    let mut signals = match hup {
        Ok(s) => s,
        Err(e) => {
            eprint(&format!("wtgate: warning: no reload on SIGHUP: {e}"));
            return;
        }
    };
    let access_log = engine.access_log();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if let Some(log) = &access_log {
                log.reopen();
            }
            if signal == signal_hook::consts::SIGHUP {
                // Logged by the engine, whichever way it went.
                let _ = handle.reload();
            }
        }
    });
}

/// How often `--watch-config` looks at the file.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `--watch-config` or `watch = true`: the file is polled every second, and a change that has
/// settled is put in force as SIGHUP's reload would (the engine logs what changed, or why nothing
/// did; a file that does not validate changes nothing). A poll, not inotify: see `wtgate::watch`.
fn reload_on_change(engine: &Engine, path: &str, start: Option<wtgate::watch::Signature>) {
    use std::ops::ControlFlow;
    use wtgate::watch::Event;
    let handle = engine.handle();
    let shown = path.to_string();
    let on_event = move |event| {
        match event {
            Event::Changed => {
                eprint(&format!("wtgate: {shown} changed: reloading it"));
                // Logged by the engine, whichever way it went.
                let _ = handle.reload();
            }
            Event::Unreadable(e) => eprint(&format!(
                "wtgate: warning: --watch-config: cannot read {shown}: {e}; the running config \
                 stays, and the file is watched for its return"
            )),
        }
        ControlFlow::Continue(())
    };
    match wtgate::watch::spawn(path.into(), WATCH_EVERY, start, on_event) {
        Ok(_) => eprint(&format!(
            "wtgate: watching {path}: a change is put in force within {}",
            format_duration(WATCH_EVERY * 2)
        )),
        Err(e) => eprint(&format!("wtgate: warning: --watch-config: {e}")),
    }
}

/// A listener as `wtgate check` shows it: its `--listen` spelling and what its options mean.
fn listen_line(l: &wtgate::config::Listen) -> String {
    let mut line = l.to_string();
    if l.proxy_protocol {
        line.push_str(" (PROXY protocol: expects a v1/v2 header first)");
    }
    if l.tls {
        line.push_str(" (HTTPS and WSS)");
    }
    if l.redirect_https {
        line.push_str(" (redirects every request to https://)");
    }
    line
}

/// The certificates read as a start would read them: one line each, or `None` (the errors
/// printed) if one cannot be served.
fn check_certificates(cfg: &Config) -> Option<String> {
    match wtgate::tls::build(&cfg.tls) {
        Ok(tls) => Some(
            (tls.iter().flat_map(|t| &t.certs))
                .map(|c| {
                    let until = wtgate::tls::certs::utc(c.not_after);
                    format!(
                        "tls: {} for {} (until {until})\n",
                        c.file,
                        c.names.join(", ")
                    )
                })
                .collect(),
        ),
        Err(lines) => {
            for line in lines {
                eprint(&format!("wtgate: {line}"));
            }
            None
        }
    }
}

fn check(args: &ProxyArgs) -> ExitCode {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(certs) = check_certificates(&cfg) else {
        return ExitCode::FAILURE;
    };
    let mut out = String::new();
    let _ = writeln!(out, "configuration OK");
    for l in &cfg.listen {
        let _ = writeln!(out, "listen: {}", listen_line(l));
    }
    out.push_str(&certs);
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
    if let Some(addr) = cfg.admin {
        let auth = match cfg.admin_token {
            Some(_) => "bearer token required",
            None => "no token: loopback only",
        };
        let _ = writeln!(out, "admin: http://{addr}/ ({auth})");
    }
    if let Some(log) = &cfg.access_log {
        let _ = writeln!(out, "access log: {log}");
    }
    if let Some(path) = args.config.as_deref().filter(|_| args.watches()) {
        let within = format_duration(WATCH_EVERY * 2);
        let _ = writeln!(
            out,
            "config file: {path} watched, a change in force within {within}"
        );
    }
    routing_table(&mut out, &cfg);
    print(&out, ExitCode::SUCCESS)
}

/// The backends, what session ids each owns, and where the rest goes.
fn routing_table(out: &mut String, cfg: &Config) {
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
}

fn demo(args: &DemoArgs) -> ExitCode {
    let (backends, listen) = match demo_backends(args) {
        Ok(started) => started,
        Err(e) => return fail(e),
    };
    let cfg = Config {
        listen: vec![listen.into()],
        threads: args.threads.unwrap_or(DemoArgs::THREADS),
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
    // The demo serves on whether or not anyone reads this.
    print(
        &demo_banner(&backends, engine.local_addrs()[0]),
        ExitCode::SUCCESS,
    );
    engine.wait();
    ExitCode::SUCCESS
}

/// `wtgate admin`: one request (or a drain's polls) to the admin listener of each instance.
fn admin(args: &AdminArgs) -> ExitCode {
    use wtgate::health::Admin;

    let fleet = match admin_fleet(args) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let (prefix, state, wait) = match &args.command {
        AdminCommand::Sessions(a) => return admin_sessions(&fleet, &a.prefix),
        AdminCommand::Reload(_) => return admin_reload(&fleet),
        AdminCommand::Drain(a) => match drain_timeout(a) {
            Ok(wait) => (&a.prefix, Admin::Drain, wait),
            Err(code) => return code,
        },
        AdminCommand::Ready(a) => (&a.prefix, Admin::Ready, None),
        AdminCommand::Maint(a) => (&a.prefix, Admin::Maint, None),
    };
    let mut failed = Vec::new();
    for (i, answer) in fleet
        .each(|c| c.set_state(prefix, state))
        .into_iter()
        .enumerate()
    {
        match answer {
            Ok(c) => say(&format!(
                "{}{}: {} -> {}",
                label(&fleet, i),
                c.backend,
                c.old,
                c.new
            )),
            Err(e) => {
                eprint(&format!("wtgate: {}{e}", label(&fleet, i)));
                failed.push(i);
            }
        }
    }
    let then = if wait.is_some() { "not waiting; " } else { "" };
    let what = format!("{prefix}: {} made", state.as_str());
    let advice = format!(
        "{then}run the command again once they answer (a state change may be repeated), or \
         leave them out"
    );
    if !all_answered(&fleet, &what, &failed, &advice) {
        return ExitCode::from(1);
    }
    match wait {
        Some(timeout) => wait_drained(&fleet, prefix, timeout),
        None => ExitCode::SUCCESS,
    }
}

/// The instances `wtgate admin` acts on, with the token: the `--url`s; else the `--config`
/// file's `[admin] peers`, else its `[admin] listen`; else [`DEFAULT_URL`]. The token:
/// `--token`, else `$WTGATE_ADMIN_TOKEN`, else the file's `[admin] token`.
///
/// [`DEFAULT_URL`]: wtgate::admin::client::DEFAULT_URL
fn admin_fleet(args: &AdminArgs) -> Result<wtgate::admin::client::Fleet, ExitCode> {
    use wtgate::admin::client::{DEFAULT_URL, Fleet};
    let file = match &args.config {
        None => Default::default(),
        Some(path) => match ConfigFile::load(path).and_then(|f| f.admin_peers()) {
            Ok(peers) => peers,
            Err(errors) => {
                for e in errors {
                    eprint(&format!("wtgate: {e}"));
                }
                return Err(ExitCode::from(1));
            }
        },
    };
    let urls = if !args.url.is_empty() {
        args.url.clone()
    } else if !file.peers.is_empty() {
        file.peers
    } else if let Some(mut addr) = file.listen {
        // A listener on every address is reached on this machine's loopback.
        if addr.ip().is_unspecified() {
            let loopback = match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            };
            addr.set_ip(loopback);
        }
        vec![format!("http://{addr}")]
    } else if let Some(path) = &args.config {
        return Err(fail(format!(
            "{path} has neither [admin] peers nor [admin] listen: add them, or name the admin \
             listener with --url"
        )));
    } else {
        vec![DEFAULT_URL.to_string()]
    };
    let named = |u: &String| u.trim_end_matches('/').to_string();
    if let Some(twice) = urls
        .iter()
        .enumerate()
        .find(|(i, u)| urls[..*i].iter().any(|v| named(v) == named(u)))
    {
        return Err(fail(format!(
            "{} is named twice: name each instance once",
            twice.1
        )));
    }
    let nonempty = |t: String| Some(t).filter(|t| !t.is_empty());
    let token = (args.token.clone().and_then(nonempty))
        .or_else(|| std::env::var("WTGATE_ADMIN_TOKEN").ok().and_then(nonempty))
        .or(file.token);
    Fleet::new(&urls, token).map_err(fail)
}

/// `drain`'s `--timeout`, if it waits; an exit code after saying what is wrong.
fn drain_timeout(a: &DrainArgs) -> Result<Option<std::time::Duration>, ExitCode> {
    match (a.wait, &a.timeout) {
        (true, t) => match parse_duration(t.as_deref().unwrap_or("30m")) {
            Ok(t) => Ok(Some(t)),
            Err(e) => Err(fail(format!("--timeout: {e}"))),
        },
        (false, Some(_)) => Err(fail("--timeout applies to --wait: add --wait")),
        (false, None) => Ok(None),
    }
}

/// What starts an instance's lines: its URL, where there are several; nothing where there is
/// one (the output of a single instance is as it always was).
fn label(fleet: &wtgate::admin::client::Fleet, i: usize) -> String {
    match fleet.len() {
        1 => String::new(),
        _ => format!("{}: ", fleet.clients()[i].url()),
    }
}

/// After a command that asked every instance, each failure already said on its own line: true if
/// none failed; else, with several instances, one more line saying where `what` was done and
/// where not, and `advice`.
fn all_answered(
    fleet: &wtgate::admin::client::Fleet,
    what: &str,
    failed: &[usize],
    advice: &str,
) -> bool {
    if failed.is_empty() {
        return true;
    }
    if fleet.len() > 1 {
        let urls: Vec<&str> = failed.iter().map(|&i| fleet.clients()[i].url()).collect();
        eprint(&format!(
            "wtgate: {what} on {} of {} instances, not on {}: {advice}",
            fleet.len() - failed.len(),
            fleet.len(),
            urls.join(", ")
        ));
    }
    false
}

/// `admin sessions`: each instance's count; with several, their total.
fn admin_sessions(fleet: &wtgate::admin::client::Fleet, prefix: &str) -> ExitCode {
    let (mut out, mut answered, mut failed) = (String::new(), Vec::new(), Vec::new());
    for (i, answer) in fleet.each(|c| c.sessions(prefix)).into_iter().enumerate() {
        match answer {
            Ok(s) => {
                let _ = writeln!(out, "{}{}", label(fleet, i), describe_sessions(&s));
                answered.push(s);
            }
            Err(e) => {
                eprint(&format!("wtgate: {}{e}", label(fleet, i)));
                failed.push(i);
            }
        }
    }
    if fleet.len() > 1 && !answered.is_empty() {
        let of = match failed.len() {
            0 => format!("total of {} instances", fleet.len()),
            _ => format!(
                "total of the {} of {} instances that answered",
                answered.len(),
                fleet.len()
            ),
        };
        let total = describe_sessions(&total_sessions(prefix, &answered));
        let _ = writeln!(out, "{of}: {total}");
    }
    let what = format!("{prefix}: sessions counted");
    let code = match all_answered(fleet, &what, &failed, "the total leaves theirs out") {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    };
    print(&out, code)
}

/// `admin reload`: each instance reads its config file again.
fn admin_reload(fleet: &wtgate::admin::client::Fleet) -> ExitCode {
    use wtgate::admin::client::ClientError;
    let (mut out, mut failed) = (String::new(), Vec::new());
    for (i, answer) in fleet.each(|c| c.reload()).into_iter().enumerate() {
        let at = label(fleet, i);
        match answer {
            Ok(lines) => {
                for line in lines {
                    let _ = writeln!(out, "{at}{line}");
                }
            }
            Err(e @ ClientError::Status { status: 400, .. }) => {
                eprint(&format!(
                    "wtgate: {at}reload refused, the running config stays: {e}"
                ));
                failed.push(i);
            }
            Err(e) => {
                eprint(&format!("wtgate: {at}{e}"));
                failed.push(i);
            }
        }
    }
    let advice = "there, the running config stays";
    let code = match all_answered(fleet, "reload: put in force", &failed, advice) {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    };
    print(&out, code)
}

/// `admin drain --wait`: polls every instance until none holds a live session of `prefix` (exit
/// 0), or `timeout` (1), or an instance does not answer (1).
fn wait_drained(
    fleet: &wtgate::admin::client::Fleet,
    prefix: &str,
    timeout: std::time::Duration,
) -> ExitCode {
    use wtgate::admin::client::{FleetDrained, SessionsInfo};
    let mut last = None;
    let mut progress = |round: &[SessionsInfo]| {
        // One line per change, not one per poll.
        let live: Vec<u64> = round.iter().map(|s| s.live).collect();
        if last.as_ref() != Some(&live) {
            last = Some(live);
            say(&describe_round(fleet, prefix, round));
        }
    };
    let every = std::time::Duration::from_secs(1);
    match fleet.wait_drained(prefix, timeout, every, &mut progress) {
        Ok(FleetDrained::Empty) => {
            let on = match fleet.len() {
                1 => String::new(),
                n => format!(" on {n} instances"),
            };
            let done = format!("{prefix}: drained: no live session left{on}\n");
            print(&done, ExitCode::SUCCESS)
        }
        Ok(FleetDrained::TimedOut(round)) => fail(format!(
            "{prefix}: {} live session(s) remain after {}{}: a restart now would end them",
            round.iter().map(|s| s.live).sum::<u64>(),
            format_duration(timeout),
            per_instance(fleet, &round)
        )),
        Err((_, e)) if fleet.len() == 1 => fail(e),
        Err((i, e)) => {
            eprint(&format!("wtgate: {}{e}", label(fleet, i)));
            fail(format!(
                "{prefix}: the drain is not confirmed: {} did not answer, so its sessions of \
                 {prefix} are unknown",
                fleet.clients()[i].url()
            ))
        }
    }
}

/// A round of a drain's polls: `wt1: 3 live sessions, last request 2 s ago`, and with several
/// instances each one's count after it.
fn describe_round(
    fleet: &wtgate::admin::client::Fleet,
    prefix: &str,
    round: &[wtgate::admin::client::SessionsInfo],
) -> String {
    match round {
        [one] => describe_sessions(one),
        _ => format!(
            "{}{}",
            describe_sessions(&total_sessions(prefix, round)),
            per_instance(fleet, round)
        ),
    }
}

/// ` (http://10.0.0.1:8404: 1, http://10.0.0.2:8404: 2)` with several instances; nothing with
/// one.
fn per_instance(
    fleet: &wtgate::admin::client::Fleet,
    round: &[wtgate::admin::client::SessionsInfo],
) -> String {
    if round.len() < 2 {
        return String::new();
    }
    let each: Vec<String> = (fleet.clients().iter().zip(round))
        .map(|(c, s)| format!("{}: {}", c.url(), s.live))
        .collect();
    format!(" ({})", each.join(", "))
}

/// The instances' sessions of `prefix` summed, with the latest request of any. A session used
/// through two instances is counted by each.
fn total_sessions(
    prefix: &str,
    each: &[wtgate::admin::client::SessionsInfo],
) -> wtgate::admin::client::SessionsInfo {
    wtgate::admin::client::SessionsInfo {
        backend: each.first().map_or(prefix, |s| &s.backend).to_string(),
        live: each.iter().map(|s| s.live).sum(),
        since_last_request: each.iter().filter_map(|s| s.since_last_request).min(),
    }
}

/// A line of a command's output on stdout; a reader gone away is no reason to stop a drain.
fn say(line: &str) {
    let _ = print(&format!("{line}\n"), ExitCode::SUCCESS);
}

/// `wt1: 3 live sessions, last request 2 s ago`.
fn describe_sessions(s: &wtgate::admin::client::SessionsInfo) -> String {
    let last = match s.since_last_request {
        Some(d) => format!(", last request {} s ago", d.as_secs()),
        None => String::new(),
    };
    let plural = if s.live == 1 { "" } else { "s" };
    format!("{}: {} live session{plural}{last}", s.backend, s.live)
}

/// Starts the two demo backends; returns them and the address wtgate is to listen on.
fn demo_backends(args: &DemoArgs) -> Result<(Vec<DemoBackend>, SocketAddr), String> {
    // The demo's clients are curl and a browser, which send no PROXY protocol header.
    let addr = |spec: &str| match parse_listen(spec) {
        Ok(l) if l.proxy_protocol => Err(format!("'{spec}': the demo takes no proxy-protocol")),
        Ok(l) => Ok(l.addr),
        Err(e) => Err(e.to_string()),
    };
    let wt1 = args.wt1.as_deref().unwrap_or(DemoArgs::WT1);
    let wt2 = args.wt2.as_deref().unwrap_or(DemoArgs::WT2);
    let mut backends = Vec::new();
    for (prefix, spec) in [("wt1", wt1), ("wt2", wt2)] {
        let addr = addr(spec)?;
        let backend = DemoBackend::spawn(prefix, addr)
            .map_err(|e| format!("demo backend {prefix} cannot listen on {addr}: {e}"))?;
        backends.push(backend);
    }
    let listen = addr(args.listen.as_deref().unwrap_or(DemoArgs::LISTEN))?;
    Ok((backends, listen))
}

fn demo_banner(backends: &[DemoBackend], wtgate: SocketAddr) -> String {
    let url = format!("http://{wtgate}/");
    let mut out = String::from("wtgate demo: two Wt-like servers behind wtgate\n");
    for b in backends {
        let _ = writeln!(out, "  backend {} on {}", b.prefix(), b.addr());
    }
    let _ = writeln!(out, "  wtgate  on {wtgate}\n");
    out.push_str(&format!(
        "Open {url} in a browser and follow the session link: every request of a session\n\
         lands on the backend that created it; new sessions alternate between wt1 and wt2.\n\
         Or with curl:\n\
         \x20 curl -si {url} | grep -E 'X-Backend|session'      # twice: wt1 then wt2\n\
         \x20 curl -si '{url}?wtd=<id from above>' | grep X-Backend   # always the owner\n\
         Stop with Ctrl-C.\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help<T: FromArgs>() -> String {
        match T::from_args(&["wtgate"], &["--help"]) {
            Err(early) if early.status.is_ok() => early.output,
            _ => panic!("--help did not print the help"),
        }
    }

    /// The options of a help's usage line that take a value: `[--threads <threads>]`.
    fn value_options(help: &str) -> Vec<String> {
        let usage = help.lines().next().unwrap();
        usage
            .split("[--")
            .skip(1)
            .filter_map(|o| o.split_once(" <").map(|(name, _)| name.to_string()))
            .collect()
    }

    /// The config and errors of `--backend wt1=127.0.0.1:9090` plus `flags`.
    fn proxy(flags: &[&str]) -> (String, Vec<String>) {
        let args = [&["--backend", "wt1=127.0.0.1:9090"], flags].concat();
        let a = ProxyArgs::from_args(&["wtgate"], &args)
            .unwrap_or_else(|e| panic!("{args:?}: {}", e.output));
        let (cfg, errors, _) = a.to_config();
        (format!("{cfg:?}"), errors)
    }

    /// A config file that gives every setting a value other than its default (the switches'
    /// settings aside: a switch can only turn its setting off).
    const EVERY_SETTING: &str = r#"
threads = 3
pin = true
session_id_length = 20
grace = "9s"
splice = "auto"
[[listen]]
address = "127.0.0.1:8081"
proxy_protocol = true
[[backend]]
prefix = "wt9"
address = "127.0.0.1:9999"
weight = 2
check = "/up"
[timeouts]
connect = "1s"
request_head = "1s"
client = "1s"
server = "99s"
tunnel = "1s"
keepalive = "1s"
pool_idle = "1s"
queue = "9s"
tls_handshake = "9s"
[limits]
maxconn = 9
retries = 9
max_head_bytes = 9999
max_headers = 9
[pool]
size = 9
reuse = "never"
[forwarded]
headers = true
trusted = ["10.0.0.0/8"]
[health]
check = "/health"
interval = "9s"
down_interval = "9s"
rise = 9
fall = 9
[sessions]
idle = "9s"
max = 9
"#;

    /// The config and errors of `--config FILE` (holding `text`) plus `flags`.
    fn with_file(name: &str, text: &str, flags: &[&str]) -> (Config, Vec<String>) {
        let path = std::env::temp_dir().join(format!("wtgate-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let args = [&["--config", path.to_str().unwrap()], flags].concat();
        let a = ProxyArgs::from_args(&["wtgate"], &args)
            .unwrap_or_else(|e| panic!("{args:?}: {}", e.output));
        let (cfg, errors, _) = a.to_config();
        std::fs::remove_file(&path).unwrap();
        (cfg, errors)
    }

    /// Each flag wins over the file's value, and --listen, --backend and --trust-forwarded-from
    /// replace the file's lists: with every flag given, the file changes nothing.
    #[test]
    fn flags_win_over_the_config_file() {
        let (file_only, errors) = with_file("file-only", EVERY_SETTING, &[]);
        assert!(errors.is_empty(), "{errors:?}");
        let file_only = format!("{file_only:?}");
        for (flag, value) in ProxyArgs::defaults() {
            let flag = format!("--{flag}");
            let (one_flag, errors) = with_file("one-flag", EVERY_SETTING, &[&flag, &value]);
            assert!(errors.is_empty(), "{flag}: {errors:?}");
            assert_ne!(
                format!("{one_flag:?}"),
                file_only,
                "{flag} {value} did not win over the file"
            );
        }
        let mut every_flag = vec![
            "--backend",
            "wt1=127.0.0.1:9090",
            "--no-pin",
            "--no-forwarded-headers",
            "--trust-forwarded-from",
            "192.0.2.1",
        ];
        let defaults = ProxyArgs::defaults();
        let defaults: Vec<String> = defaults
            .iter()
            .flat_map(|(f, v)| [format!("--{f}"), v.clone()])
            .collect();
        every_flag.extend(defaults.iter().map(String::as_str));
        let (flags_and_file, errors) = with_file("every-flag", EVERY_SETTING, &every_flag);
        assert!(errors.is_empty(), "{errors:?}");
        let a = ProxyArgs::from_args(&["wtgate"], &every_flag).unwrap();
        assert_eq!(
            format!("{flags_and_file:?}"),
            format!("{:?}", a.to_config().0)
        );
    }

    /// A switch left out leaves the file's value: it can only turn its setting off.
    #[test]
    fn a_switch_left_out_keeps_the_files_value() {
        let file = "pin = false\n[forwarded]\nheaders = false\n";
        let (cfg, _) = with_file("switches", file, &["--backend", "wt1=127.0.0.1:1"]);
        assert!(!cfg.pin && !cfg.forwarded_headers, "{cfg:?}");
    }

    /// An error about a setting the file gave names its key and line; once a flag sets it, the
    /// flag.
    #[test]
    fn validation_errors_name_the_file_key_unless_a_flag_gave_it() {
        let file =
            "[[backend]]\nprefix = \"wt1\"\naddress = \"127.0.0.1:1\"\n[limits]\nmaxconn = 0\n";
        let (_, errors) = with_file("maxconn", file, &[]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].ends_with(".toml:5: limits.maxconn must be at least 1"),
            "{errors:?}"
        );
        let (_, errors) = with_file("maxconn-flag", file, &["--maxconn", "0"]);
        assert_eq!(errors, ["--maxconn must be at least 1"]);
        let (_, errors) = with_file("maxconn-fixed", file, &["--maxconn", "1"]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    /// Each listed default, given as a flag, makes the config that leaving the flag out makes.
    #[test]
    fn the_listed_defaults_are_what_a_left_out_flag_gets() {
        let left_out = proxy(&[]);
        for (flag, value) in ProxyArgs::defaults() {
            let flag = format!("--{flag}");
            assert_eq!(proxy(&[&flag, &value]), left_out, "{flag} {value}");
        }
    }

    #[test]
    fn every_option_with_a_default_lists_it() {
        let without = [
            "config",
            "backend",
            "trust-forwarded-from",
            "user",
            "admin",
            "admin-token",
            "access-log",
            "tls-cert",
        ];
        let listed: Vec<_> = ProxyArgs::defaults().iter().map(|d| d.0).collect();
        let options = value_options(&help::<ProxyArgs>());
        assert!(options.len() > 10, "{options:?}");
        for o in &options {
            assert!(
                listed.contains(&o.as_str()) != without.contains(&o.as_str()),
                "--{o}: a default, or in `without`"
            );
        }
        assert!(listed.iter().all(|l| options.iter().any(|o| o == l)));

        let listed: Vec<_> = DemoArgs::defaults().iter().map(|d| d.0).collect();
        assert_eq!(value_options(&help::<DemoArgs>()), listed);
        for (_, spec) in DemoArgs::defaults().iter().take(3) {
            assert!(parse_listen(spec).is_ok(), "{spec}");
        }
    }

    #[test]
    fn the_help_shows_the_defaults_after_the_options() {
        let h = with_defaults(&help::<ProxyArgs>(), &ProxyArgs::defaults());
        let (options, defaults) = h.split_once("\n\nDefaults:\n").unwrap();
        assert!(options.contains("Options:\n"), "{h}");
        assert!(defaults.contains("\n\nExamples:\n"), "{h}");
        for (flag, value) in ProxyArgs::defaults() {
            let line = format!("--{flag} ");
            assert!(
                defaults
                    .lines()
                    .any(|l| l.trim_start().starts_with(&line) && l.ends_with(&format!(" {value}"))),
                "--{flag} {value}: {h}"
            );
        }
        let plain = help::<DemoArgs>();
        let h = with_defaults(&plain, &DemoArgs::defaults());
        assert!(h.starts_with(plain.trim_end()), "{h}");
        let first = format!("\n\nDefaults:\n  --listen   {}\n", DemoArgs::LISTEN);
        assert!(h.contains(&first), "{h}");
        assert_eq!(
            h.len() - h.trim_end().len(),
            plain.len() - plain.trim_end().len()
        );
    }
}
