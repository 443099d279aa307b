//! One `Config` for the whole proxy, built from command-line flags and a config file ([`file`]),
//! and its validation.
//!
//! Validation errors are meant to be read by an operator at a terminal: each one says what is wrong
//! and what to change, naming the setting as the operator gave it (a flag, or a key of the file).

pub mod file;
pub mod reload;

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use ipnet::{IpNet, Ipv4Net};
use std::time::Duration;

use crate::h1;

/// One Wt server behind the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The `--session-id-prefix` the Wt server was started with (`wt1`).
    pub prefix: String,
    /// Where it listens: `host` resolved at start (which must succeed).
    pub addr: SocketAddr,
    /// `HOST:PORT` as the operator wrote it, to resolve again with `resolve_backend` when a
    /// connect fails, since a host name's address may move.
    pub host: String,
    /// Share of session-less traffic in weighted round-robin; 0 takes no new sessions.
    pub weight: u32,
    /// This backend's active check, overriding `Config::check`; `None` follows the global one.
    pub check: Option<Check>,
}

/// How a backend is actively checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connect that succeeds within the connect timeout.
    Tcp,
    /// `GET <path>` answered 2xx or 3xx within the connect timeout.
    Http(String),
}

impl fmt::Display for Check {
    /// The spelling `--check` and `check=` take.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Tcp => f.write_str("tcp"),
            Check::Http(path) => f.write_str(path),
        }
    }
}

impl Check {
    /// Parses `tcp` or an absolute path, as `--check` and `check=` take them.
    pub fn parse(s: &str) -> Result<Check, String> {
        match s.trim() {
            "tcp" => Ok(Check::Tcp),
            p if p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Check::Http(p.to_string()))
            }
            other => Err(format!(
                "check '{other}' is neither 'tcp' nor an absolute path like /health"
            )),
        }
    }
}

impl BackendConfig {
    /// The weight of a backend given none.
    pub const DEFAULT_WEIGHT: u32 = 1;

    /// Parses `PREFIX=HOST:PORT[,weight=N][,check=tcp|/path]`, resolving HOST once, now.
    pub fn parse(spec: &str) -> Result<BackendConfig, ConfigError> {
        let bad = |why: &str| ConfigError::Backend {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let (prefix, rest) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected PREFIX=HOST:PORT, e.g. wt1=127.0.0.1:9090"))?;
        let prefix = prefix.trim();
        if prefix.is_empty() {
            return Err(bad("the session-id prefix before '=' is empty"));
        }
        check_prefix(prefix).map_err(|why| bad(&why))?;
        let mut parts = rest.split(',');
        let hostport = parts.next().unwrap_or("").trim();
        let addr = resolve_backend(hostport).map_err(|why| bad(&why))?;
        let mut weight = BackendConfig::DEFAULT_WEIGHT;
        let mut check = None;
        for opt in parts {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| bad(&format!("option '{opt}' is not KEY=VALUE")))?;
            match key.trim() {
                "weight" => {
                    weight = value
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|w| *w <= MAX_WEIGHT)
                        .ok_or_else(|| {
                            bad(&format!(
                                "weight '{value}' is not a whole number 0..={MAX_WEIGHT}"
                            ))
                        })?
                }
                "check" => check = Some(Check::parse(value).map_err(|why| bad(&why))?),
                other => {
                    return Err(bad(&format!(
                        "unknown option '{other}' (known: weight, check)"
                    )));
                }
            }
        }
        Ok(BackendConfig {
            prefix: prefix.to_string(),
            addr,
            host: hostport.to_string(),
            weight,
            check,
        })
    }
}

/// The largest backend weight.
pub const MAX_WEIGHT: u32 = 1000;

/// Why `prefix` cannot be a Wt session-id prefix, if it cannot.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("the session-id prefix is empty".into());
    }
    if !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(
            "a Wt session-id prefix may hold only [0-9A-Za-z] (it is part of the session id)"
                .into(),
        );
    }
    Ok(())
}

/// Resolves a backend's `HOST:PORT` (`BackendConfig::host`) to its first address. It blocks in the
/// system resolver for a host name.
pub fn resolve_backend(host: &str) -> Result<SocketAddr, String> {
    resolve(host)
}

/// Debug builds only, for the tests of re-resolution (a name whose address changes): with
/// `WTGATE_TEST_HOSTS=FILE`, a line `HOST IP` of that file answers for HOST before the system's
/// resolver does, read anew at each lookup.
fn test_hosts(hostport: &str) -> Option<SocketAddr> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let file = std::env::var_os("WTGATE_TEST_HOSTS")?;
    let (host, port) = hostport.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|line| {
            let (name, ip) = line.split_once(' ')?;
            (name == host).then(|| ip.trim().parse::<IpAddr>().ok())?
        })
        .map(|ip| SocketAddr::new(ip, port))
}

fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(hint) = bracket_hint(hostport) {
        return Err(hint);
    }
    if !hostport.contains(':') {
        return Err(format!("'{hostport}' has no port: write HOST:PORT"));
    }
    if let Some(addr) = test_hosts(hostport) {
        return Ok(addr);
    }
    match hostport.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("'{hostport}' resolves to no address")),
        Err(e) => Err(format!("cannot resolve '{hostport}': {e}")),
    }
}

/// `::1:8080` cannot be split into address and port (8080 could be the last group), so it would end
/// in the resolver's "cannot resolve"; an unbracketed IPv6 address gets the way to write it instead.
fn bracket_hint(hostport: &str) -> Option<String> {
    if hostport.starts_with('[') || hostport.matches(':').count() < 2 {
        return None;
    }
    let example = match hostport.rsplit_once(':') {
        Some((ip, port)) if ip.parse::<Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok() => {
            format!("[{ip}]:{port}")
        }
        _ => format!("[{}]:PORT", hostport.parse::<Ipv6Addr>().ok()?),
    };
    Some(format!("an IPv6 address needs brackets: write {example}"))
}

/// Parses `--check`: `tcp` or an HTTP path.
pub fn parse_check(spec: &str) -> Result<Check, ConfigError> {
    Check::parse(spec).map_err(ConfigError::Invalid)
}

/// One address to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Every connection starts with a PROXY protocol v1 or v2 header (HAProxy's `accept-proxy`),
    /// by which a load balancer in front passes on the client's address.
    pub proxy_protocol: bool,
    /// Connections speak TLS (after the PROXY header, if any), with the certificates of
    /// [`TlsSettings`].
    pub tls: bool,
    /// Every request is answered with a redirect to the same URL over `https://` (the port-80
    /// companion of a TLS listener); nothing reaches a backend.
    pub redirect_https: bool,
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Listen {
        Listen {
            addr,
            proxy_protocol: false,
            tls: false,
            redirect_https: false,
        }
    }
}

/// As `parse_listen`, so that `"127.0.0.1:0".parse()` builds a `Config::listen` entry.
impl std::str::FromStr for Listen {
    type Err = ConfigError;
    fn from_str(spec: &str) -> Result<Listen, ConfigError> {
        parse_listen(spec)
    }
}

/// The `--listen` spelling: `ADDR` with its options (`,proxy-protocol`, `,tls`,
/// `,redirect-https`).
impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        for (on, name) in [
            (self.proxy_protocol, ",proxy-protocol"),
            (self.tls, ",tls"),
            (self.redirect_https, ",redirect-https"),
        ] {
            if on {
                f.write_str(name)?;
            }
        }
        Ok(())
    }
}

/// Parses a listen address, `HOST:PORT`, `[::1]:PORT`, or a bare `:PORT` / `PORT` meaning all
/// IPv4, optionally followed by options: `,proxy-protocol`, `,tls`, `,redirect-https`.
pub fn parse_listen(spec: &str) -> Result<Listen, ConfigError> {
    let bad = |why: String| ConfigError::Listen {
        spec: spec.to_string(),
        why,
    };
    let mut parts = spec.split(',');
    let mut listen = Listen::from(parse_listen_addr(parts.next().unwrap_or("")).map_err(bad)?);
    for opt in parts {
        match opt.trim() {
            "proxy-protocol" => listen.proxy_protocol = true,
            "tls" => listen.tls = true,
            "redirect-https" => listen.redirect_https = true,
            other => {
                return Err(bad(format!(
                    "unknown option '{other}' (known: proxy-protocol, tls, redirect-https)"
                )));
            }
        }
    }
    if listen.tls && listen.redirect_https {
        let why = "tls and redirect-https together: a redirect to https:// belongs on a plain \
                   listener (port 80), the TLS one (port 443) serves";
        return Err(bad(why.into()));
    }
    Ok(listen)
}

/// Parses a listen address without options: `HOST:PORT`, `[::1]:PORT`, `:PORT` or `PORT`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    // Only a port may follow the ':': `::1:8080` is an unbracketed IPv6 address, not a port.
    let s = if let Some(port) = s.strip_prefix(':').filter(|p| all_digits(p)) {
        format!("0.0.0.0:{port}")
    } else if all_digits(s) {
        format!("0.0.0.0:{s}")
    } else {
        s.to_string()
    };
    resolve(&s)
}

/// Parses the admin listener's address: as a listen address, except that a bare `PORT` or
/// `:PORT` is loopback — the control plane stays local unless asked.
pub fn parse_admin_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port = s.strip_prefix(':').unwrap_or(s);
    match port.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => parse_listen_addr(s),
    }
}

/// Why an operator's listen address cannot be used, beyond what `Config::validate_all` checks.
/// The library takes port 0 (tests, embedding); a command line or config file that asked for it
/// would listen where no client could find it.
pub fn check_operator_listen(addr: SocketAddr) -> Result<(), String> {
    if addr.port() == 0 {
        let why = "port 0 would be a port the kernel picks, unknown to every client: give a port";
        return Err(why.into());
    }
    Ok(())
}

/// Parses `--trust-forwarded-from`: a CIDR, or a bare IP meaning just that address (/32, /128).
/// Host bits are dropped (`10.1.2.3/8` is `10.0.0.0/8`), and an IPv4-mapped IPv6 network becomes
/// the IPv4 one, as `Config::trusts` sees mapped client addresses as IPv4.
pub fn parse_cidr(spec: &str) -> Result<IpNet, ConfigError> {
    parse_net(spec)
        .map_err(|why| ConfigError::Invalid(format!("--trust-forwarded-from '{spec}': {why}")))
}

/// `parse_cidr` with the reason alone.
pub fn parse_net(spec: &str) -> Result<IpNet, String> {
    let s = spec.trim();
    let net = s
        .parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| "not an IP address or a CIDR such as 10.0.0.0/8".to_string())?;
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(
                Ipv4Net::new(v4, v6.prefix_len() - 96).expect("a prefix of 96..=128, less 96"),
            ),
            None => net,
        },
        _ => net,
    };
    Ok(net.trunc())
}

/// When a request may go on a pooled (idle, kept-alive) backend connection; HAProxy's `http-reuse`.
/// An upgrade (WebSocket) request never does: its connection becomes a tunnel for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// The first request of each client connection goes on a freshly connected backend socket
    /// unless wtgate can resend it itself (GET/HEAD/OPTIONS without a body); later ones may take
    /// a pooled one. A pooled connection may be closed by the backend just as a request goes out
    /// on it, and a browser resends a request lost that way only if it was not the first on its
    /// own connection.
    Safe,
    /// Any request but an upgrade may take a pooled connection.
    Always,
    /// No pool: every request gets a fresh connection.
    Never,
}

impl Reuse {
    pub fn as_str(self) -> &'static str {
        match self {
            Reuse::Safe => "safe",
            Reuse::Always => "always",
            Reuse::Never => "never",
        }
    }
}

impl fmt::Display for Reuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Reuse {
    /// Parses `safe`, `always` or `never`; the error names the value and the choices.
    pub fn parse(s: &str) -> Result<Reuse, String> {
        match s.trim() {
            "safe" => Ok(Reuse::Safe),
            "always" => Ok(Reuse::Always),
            "never" => Ok(Reuse::Never),
            other => Err(format!("'{other}': use safe, always or never")),
        }
    }
}

impl std::str::FromStr for Reuse {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Reuse, ConfigError> {
        Reuse::parse(s).map_err(|why| ConfigError::Invalid(format!("--reuse {why}")))
    }
}

/// How a WebSocket tunnel moves its bytes (docs/splice.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Splice {
    /// Copy through the read buffer; per direction, splice(2) through a pipe while reads bring
    /// 16 KiB or more.
    Auto,
    /// Always copy.
    Off,
}

impl Splice {
    pub fn as_str(self) -> &'static str {
        match self {
            Splice::Auto => "auto",
            Splice::Off => "off",
        }
    }

    /// Parses `auto` or `off`; the error names the value and the choices.
    pub fn parse(s: &str) -> Result<Splice, String> {
        match s.trim() {
            "auto" => Ok(Splice::Auto),
            "off" => Ok(Splice::Off),
            other => Err(format!("'{other}': use auto or off")),
        }
    }
}

impl fmt::Display for Splice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Splice {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Splice, ConfigError> {
        Splice::parse(s).map_err(|why| ConfigError::Invalid(format!("--splice {why}")))
    }
}

/// Timeouts of docs/design.md "Behaviour", with HAProxy-like meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// From a request's first byte to the end of its head (slowloris guard) → 408.
    pub request_head: Duration,
    /// Client inactivity while a request or response is in flight.
    pub client: Duration,
    /// Backend inactivity while we wait for or read its response → 504.
    pub server: Duration,
    /// Inactivity (both directions) of an upgraded (WebSocket) tunnel.
    pub tunnel: Duration,
    /// Idle client connection between two requests.
    pub keepalive: Duration,
    /// Idle pooled backend connection; must stay below the backend's own (wthttpd: 10 s).
    pub pool_idle: Duration,
    /// How long a request waits for a backend to come back when none can take it, before `503`
    /// (HAProxy's `timeout queue`).
    pub queue: Duration,
    /// From a TLS connection's first byte (after its PROXY header) to the end of its handshake:
    /// the TLS slowloris guard.
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request_head: Duration::from_secs(10),
            client: Duration::from_secs(60),
            server: Duration::from_secs(60),
            tunnel: Duration::from_secs(3600),
            keepalive: Duration::from_secs(60),
            pool_idle: Duration::from_secs(8),
            queue: Duration::from_secs(5),
            tls_handshake: Duration::from_secs(10),
        }
    }
}

/// The proxy-side settings, as each request and connection reads them from the shard's
/// generation in force when it starts using them (`Shard::settings`): `Copy`, so that a request
/// keeps its own copy across its awaits while a reload changes them for the ones after it. The
/// trusted proxies, a list, are asked through `Shard::trusts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxySettings {
    pub timeouts: Timeouts,
    pub retries: u32,
    pub reuse: Reuse,
    pub forwarded_headers: bool,
    pub splice: Splice,
}

/// Everything the engine needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Listen>,
    pub backends: Vec<BackendConfig>,
    /// Shards (one executor each); 0 means one per available core.
    pub threads: usize,
    /// Pin shard i to core i. Right for a machine that runs the proxy alone; on one shared with
    /// other busy processes (backends, load generators) the scheduler may do better unpinned.
    pub pin: bool,
    /// Characters after the prefix in a Wt session id (Wt's `session-id-length`).
    pub session_id_length: usize,
    /// A Wt session counts as live this long after its last request (Wt's session timeout), or
    /// while a WebSocket tunnel of it is open.
    pub session_idle: Duration,
    /// Sessions each shard tracks at most (about 20 bytes each); more are counted, not tracked.
    pub max_sessions: usize,
    /// On SIGTERM/SIGINT, how long requests in flight and WebSocket tunnels may go on before the
    /// rest is closed.
    pub grace: Duration,
    /// The user to serve as once the listeners are bound (wtgate started as root for port 80).
    pub user: Option<String>,
    pub timeouts: Timeouts,
    /// Client connections served at once by the whole process; more wait in the kernel backlog.
    pub maxconn: usize,
    /// Connect attempts per request. A failed connect marks its backend down at once, on every
    /// shard (no `fall` count), so every further attempt goes to another backend (redispatch).
    pub retries: u32,
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// Append `X-Forwarded-For` and set `X-Forwarded-Proto`.
    pub forwarded_headers: bool,
    /// Clients (a TLS terminator, a load balancer) whose `X-Forwarded-For`/`-Proto` are kept and
    /// appended to; every other client's are replaced. See `Config::trusts`.
    pub trusted_proxies: Vec<IpNet>,
    /// Idle connections kept per backend per shard.
    pub pool_size: usize,
    /// Which requests may go on a pooled backend connection.
    pub reuse: Reuse,
    /// Whether WebSocket tunnels may splice.
    pub splice: Splice,
    /// Active health checks of every backend (a backend's own `check=` overrides it).
    pub check: Check,
    /// Time between two active checks of a backend (HAProxy's `inter`).
    pub check_interval: Duration,
    /// Time between two checks of a backend that is down or failed its last check (HAProxy's
    /// `fastinter`/`downinter`); also how often one shard tries a request's connect to a backend
    /// marked down when it may be back.
    pub down_interval: Duration,
    /// Good checks in a row that bring a down backend up.
    pub rise: u32,
    /// Failed checks in a row that take an up backend down.
    pub fall: u32,
    /// Where the admin HTTP listener (metrics, status page, backend states) listens; off if
    /// `None`. Anything but a loopback address needs `admin_token`.
    pub admin: Option<SocketAddr>,
    /// The bearer token every admin request must carry (`Authorization: Bearer TOKEN`).
    pub admin_token: Option<String>,
    /// Where the access log goes (one line per request and per tunnel): a file, or `-` for
    /// stdout; off if `None`.
    pub access_log: Option<String>,
    /// Certificates and handshake rules of the `tls` listeners.
    pub tls: TlsSettings,
}

/// What the `tls` listeners serve: read and checked when the engine starts and at each reload
/// (`crate::tls`), never while a handshake runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chains with their keys. A client's SNI name picks the first whose names cover
    /// it (and whose key can sign with a scheme the client offers); a client without SNI, or
    /// with a name none covers, gets the first, unless `strict_sni`.
    pub certs: Vec<CertFiles>,
    /// Refuse the handshake of a client whose SNI name no certificate covers, or that sends none
    /// (HAProxy's `strict-sni`).
    pub strict_sni: bool,
    /// Serve a certificate that has expired or is not yet valid (normally a start or reload
    /// refuses it).
    pub allow_expired: bool,
}

/// One certificate: its PEM chain (leaf first) and the PEM file of its private key (the same
/// file when they are together, as HAProxy's `crt` takes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub chain: String,
    pub key: String,
}

impl CertFiles {
    /// Parses `--tls-cert`: `CHAIN.pem` (key in the same file) or `CHAIN.pem,KEY.pem`.
    pub fn parse(spec: &str) -> Result<CertFiles, String> {
        let (chain, key) = match spec.split_once(',') {
            Some((c, k)) => (c.trim(), k.trim()),
            None => (spec.trim(), spec.trim()),
        };
        if chain.is_empty() || key.is_empty() {
            return Err(format!(
                "'{spec}': give the certificate chain's PEM file, then the key's: \
                 CHAIN.pem,KEY.pem (or one PEM file holding both)"
            ));
        }
        Ok(CertFiles {
            chain: chain.into(),
            key: key.into(),
        })
    }
}

/// The defaults of every setting, the command line's included: a flag left out keeps the value
/// here, and `wtgate --help` lists them from here. The HTTP head limits are `h1::Limits`'s.
impl Default for Config {
    fn default() -> Self {
        let limits = h1::Limits::default();
        Config {
            listen: Vec::new(),
            backends: Vec::new(),
            threads: 0,
            pin: true,
            session_id_length: 16,
            session_idle: Duration::from_secs(600),
            max_sessions: 100_000,
            grace: Duration::from_secs(30),
            user: None,
            timeouts: Timeouts::default(),
            maxconn: 4096,
            retries: 3,
            max_head_bytes: limits.max_head_bytes,
            max_headers: limits.max_headers,
            forwarded_headers: true,
            trusted_proxies: Vec::new(),
            pool_size: 64,
            reuse: Reuse::Safe,
            splice: Splice::Off,
            check: Check::Tcp,
            check_interval: Duration::from_secs(2),
            down_interval: Duration::from_millis(250),
            rise: 2,
            fall: 3,
            admin: None,
            admin_token: None,
            access_log: None,
            tls: TlsSettings::default(),
        }
    }
}

impl Config {
    /// Where the command line listens when given no `--listen`. `Config::default()` itself
    /// listens nowhere: a library user or test gives its own addresses (often port 0).
    pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

    /// The number of shards this config asks for, resolving 0 to the available cores.
    pub fn shard_count(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }

    /// The settings each request copies out of the config in force (see [`ProxySettings`]).
    pub fn proxy_settings(&self) -> ProxySettings {
        ProxySettings {
            timeouts: self.timeouts,
            retries: self.retries,
            reuse: self.reuse,
            forwarded_headers: self.forwarded_headers,
            splice: self.splice,
        }
    }

    /// True if `ip` is in a `trusted_proxies` network. An IPv4 client of a dual-stack socket
    /// (`::ffff:10.0.0.1`) counts as its IPv4 address.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Every error and warning at once, so that an operator fixes them in one round. Messages
    /// name settings by their flags.
    pub fn validate_all(&self) -> Report {
        self.validate_named(&|s: Setting| s.flag().to_string())
    }

    /// `validate_all`, naming each setting `name(setting)`: a config file's reader names the
    /// settings it gave by their keys.
    pub fn validate_named(&self, name: &dyn Fn(Setting) -> String) -> Report {
        let mut r = Report::default();
        self.check_listeners(&mut r, name);
        self.check_backends(&mut r, name);
        self.check_limits(&mut r, name);
        self.check_timeouts(&mut r, name);
        self.check_forwarding(&mut r, name);
        self.check_admin(&mut r, name);
        if self
            .access_log
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            let at = Setting::AccessLog;
            r.error(at, format!("{} needs a file, or - for stdout", name(at)));
        }
        if let Some(user) = &self.user
            && let Err(why) = crate::privileges::lookup(user)
        {
            r.error(Setting::User, format!("{}: {why}", name(Setting::User)));
        }
        r
    }

    /// The admin listener can drain backends: from other machines, only with a token.
    fn check_admin(&self, r: &mut Report, name: &dyn Fn(Setting) -> String) {
        let token = self.admin_token.as_deref();
        if token.is_some_and(|t| t.is_empty() || t.bytes().any(|b| !b.is_ascii_graphic())) {
            r.error(
                Setting::AdminToken,
                format!(
                    "{} must be non-empty printable ASCII without spaces (it travels in an \
                     Authorization header)",
                    name(Setting::AdminToken)
                ),
            );
        }
        match self.admin {
            Some(addr) if !addr.ip().to_canonical().is_loopback() && token.is_none() => {
                r.error(
                    Setting::Admin,
                    format!(
                        "{} {addr} is reachable from other machines, and the admin listener \
                         can drain backends: add --admin-token TOKEN, or listen on loopback \
                         (--admin 127.0.0.1:{})",
                        name(Setting::Admin),
                        addr.port()
                    ),
                );
            }
            None if token.is_some() => r.warn(
                Setting::AdminToken,
                format!(
                    "{} does nothing without --admin ADDR, which starts the admin listener",
                    name(Setting::AdminToken)
                ),
            ),
            _ => {}
        }
    }

    fn check_listeners(&self, r: &mut Report, name: &dyn Fn(Setting) -> String) {
        if self.listen.is_empty() {
            r.errors.push(ConfigError::NoListen);
        }
        for (i, a) in self.listen.iter().enumerate() {
            for (j, b) in self.listen.iter().enumerate().skip(i + 1) {
                // `8080 8080 127.0.0.1:8080` clashes twice the same way; once is enough.
                if let Some(why) = listen_clash(
                    a.addr,
                    b.addr,
                    &name(Setting::Listen(i)),
                    &name(Setting::Listen(j)),
                ) && !r.errors.iter().any(|e| e.to_string() == why)
                {
                    r.error(Setting::Listen(j), why);
                }
            }
        }
        self.check_tls(r, name);
    }

    /// A TLS listener needs a certificate; certificates without one are a mistake too.
    fn check_tls(&self, r: &mut Report, name: &dyn Fn(Setting) -> String) {
        let tls = self.listen.iter().position(|l| l.tls);
        match (tls, self.tls.certs.is_empty()) {
            (Some(i), true) => r.error(
                Setting::ListenTls(i),
                format!(
                    "{} {} takes TLS but no certificate is given: add --tls-cert CHAIN.pem,KEY.pem \
                     (or certificates = [{{ cert = ..., key = ... }}] in [tls])",
                    name(Setting::ListenTls(i)),
                    self.listen[i]
                ),
            ),
            (None, false) => r.warn(
                Setting::TlsCert(0),
                format!(
                    "{} is given but no listener takes TLS: add ,tls to a --listen (or \
                     tls = true to a [[listen]])",
                    name(Setting::TlsCert(0))
                ),
            ),
            _ => {}
        }
    }

    fn check_backends(&self, r: &mut Report, name: &dyn Fn(Setting) -> String) {
        if self.backends.is_empty() {
            r.errors.push(ConfigError::NoBackends);
        }
        if self.session_id_length == 0 || self.session_id_length > 128 {
            r.error(
                Setting::SessionIdLength,
                format!(
                    "{} {} is out of range: use Wt's session-id-length (default {})",
                    name(Setting::SessionIdLength),
                    self.session_id_length,
                    Config::default().session_id_length
                ),
            );
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.addr.port() == 0 {
                r.error(
                    Setting::BackendAddress(i),
                    format!(
                        "{} {}={}: port 0 is no port a Wt server listens on: give its --http-port",
                        name(Setting::BackendAddress(i)),
                        b.prefix,
                        b.addr
                    ),
                );
            }
        }
        if self.backends.len() > reload::MAX_SLOTS {
            r.error(
                Setting::BackendPrefix(reload::MAX_SLOTS),
                format!("more than {} backends", reload::MAX_SLOTS),
            );
        }
        self.check_backend_pairs(r);
        if !self.backends.is_empty() && self.backends.iter().all(|b| b.weight == 0) {
            r.errors.push(ConfigError::NoWeight);
        }
    }

    /// Two backends that could claim one session, or that are one server.
    fn check_backend_pairs(&self, r: &mut Report) {
        for (i, a) in self.backends.iter().enumerate() {
            for (j, b) in self.backends.iter().enumerate().skip(i + 1) {
                // Two owners could claim one id only if their prefix + id lengths agree and one
                // prefix starts with the other; with one id length for all, that means equal
                // prefixes. `wt1` and `wt10` are fine: `wt1` ids are 19 long, `wt10` ids 20.
                if a.prefix == b.prefix {
                    r.error(
                        Setting::BackendPrefix(j),
                        format!(
                            "prefix '{}' is given to two backends ({} and {}), so both could \
                             claim the same session id: start every Wt server with its own \
                             --session-id-prefix",
                            a.prefix, a.addr, b.addr
                        ),
                    );
                }
                if a.addr == b.addr {
                    r.error(
                        Setting::BackendAddress(j),
                        format!(
                            "backends {} and {} are both at {}, but a Wt server has one \
                             --session-id-prefix, so the sessions of one of them would be sent \
                             where they do not live: give each backend its own server",
                            a.prefix, b.prefix, a.addr
                        ),
                    );
                }
            }
        }
    }

    fn check_limits(&self, r: &mut Report, name: &dyn Fn(Setting) -> String) {
        let rules = [
            (self.maxconn == 0, Setting::Maxconn, "must be at least 1"),
            (
                self.retries == 0,
                Setting::Retries,
                "must be at least 1 (it counts connect attempts)",
            ),
            (
                self.max_head_bytes < 1024,
                Setting::MaxHeadBytes,
                "below 1024 would reject ordinary browser requests",
            ),
            (
                self.rise == 0,
                Setting::Rise,
                "must be at least 1 (it counts checks in a row)",
            ),
            (
                self.fall == 0,
                Setting::Fall,
                "must be at least 1 (it counts checks in a row)",
            ),
            (
                self.check_interval < Duration::from_millis(10),
                Setting::CheckInterval,
                "below 10ms would flood the backends with checks",
            ),
            (
                self.down_interval < Duration::from_millis(10),
                Setting::DownInterval,
                "below 10ms would flood the backends with checks",
            ),
            (
                self.session_idle.is_zero(),
                Setting::SessionIdle,
                "must be above 0: give Wt's session timeout (600s unless wt_config.xml says otherwise)",
            ),
            (
                self.max_sessions == 0,
                Setting::MaxSessions,
                "must be at least 1 (sessions tracked per shard)",
            ),
        ];
        for (broken, at, why) in rules {
            if broken {
                r.error(at, format!("{} {why}", name(at)));
            }
        }
    }

    fn check_timeouts(&self, r: &mut Report, name: &dyn Fn(Setting) -> String) {
        let (t, default) = (&self.timeouts, Config::default().timeouts);
        for (at, d) in [
            (Setting::ConnectTimeout, t.connect),
            (Setting::RequestHeadTimeout, t.request_head),
            (Setting::ClientTimeout, t.client),
            (Setting::ServerTimeout, t.server),
            (Setting::TunnelTimeout, t.tunnel),
            (Setting::KeepaliveTimeout, t.keepalive),
            (Setting::PoolIdleTimeout, t.pool_idle),
            (Setting::QueueTimeout, t.queue),
            (Setting::TlsHandshakeTimeout, t.tls_handshake),
        ] {
            if d.is_zero() {
                r.error(at, format!("{} must be above 0", name(at)));
            }
        }
        if t.pool_idle >= WTHTTPD_KEEPALIVE {
            r.warn(
                Setting::PoolIdleTimeout,
                format!(
                    "{} {:?} is not below wthttpd's {} s keep-alive timeout: Wt may close a \
                     pooled connection just as a request is sent on it; use {} (the default) \
                     or less",
                    name(Setting::PoolIdleTimeout),
                    t.pool_idle,
                    WTHTTPD_KEEPALIVE.as_secs(),
                    format_duration(default.pool_idle)
                ),
            );
        }
        if !t.server.is_zero() && t.server <= WT_LONG_POLL {
            r.warn(
                Setting::ServerTimeout,
                format!(
                    "{} {:?} is not above Wt's {} s server-push (long-poll) timeout: idle \
                     server-push requests would end in 504; use {} (the default) or more",
                    name(Setting::ServerTimeout),
                    t.server,
                    WT_LONG_POLL.as_secs(),
                    format_duration(default.server)
                ),
            );
        }
    }

    fn check_forwarding(&self, r: &mut Report, name: &dyn Fn(Setting) -> String) {
        if !self.forwarded_headers && !self.trusted_proxies.is_empty() {
            r.warn(
                Setting::TrustForwardedFrom(0),
                format!(
                    "{} does nothing with {} off, which leaves every client's X-Forwarded-* as \
                     they come",
                    name(Setting::TrustForwardedFrom(0)),
                    name(Setting::ForwardedHeaders)
                ),
            );
        }
        if let Some((i, all)) = self
            .trusted_proxies
            .iter()
            .enumerate()
            .find(|(_, n)| n.prefix_len() == 0)
        {
            r.warn(
                Setting::TrustForwardedFrom(i),
                format!(
                    "{} {all} trusts every client, so any client can forge X-Forwarded-For: \
                     give the addresses of your proxies",
                    name(Setting::TrustForwardedFrom(i))
                ),
            );
        }
    }

    /// Checks everything that can be checked before binding a socket: `Ok`, the one error, or
    /// `ConfigError::Several`. Warnings are left to `validate_all`'s callers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = self.validate_all().errors;
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Several(errors)),
        }
    }
}

/// wthttpd closes an idle keep-alive connection after 10 s (not configurable in wt_config.xml).
const WTHTTPD_KEEPALIVE: Duration = Duration::from_secs(10);
/// Wt answers a server-push long-poll request after at most 50 s without an update.
const WT_LONG_POLL: Duration = Duration::from_secs(50);

/// Why listening on both `a` (named `a_name`) and `b` would fail to bind, if it would. Port 0 is a
/// fresh port each time, so it never clashes. Sockets on `[::]` are v6-only here, so IPv4 and IPv6
/// never clash.
fn listen_clash(a: SocketAddr, b: SocketAddr, a_name: &str, b_name: &str) -> Option<String> {
    if a.port() == 0 || a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
        return None;
    }
    if a == b {
        return Some(format!("{b_name} {a} is given twice: give it once"));
    }
    let wildcard = [a, b].into_iter().find(|x| x.ip().is_unspecified())?;
    Some(format!(
        "{a_name} {a} and {b_name} {b} overlap: {} already listens on port {} of every {} \
         address; give one of them",
        wildcard.ip(),
        a.port(),
        if a.is_ipv4() { "IPv4" } else { "IPv6" }
    ))
}

/// One setting, as messages name it: by its flag (`--maxconn`) or, when a config file gave it, by
/// its key there (`limits.maxconn`, `Setting::key`). The index of a list entry counts from 0, in
/// the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// The address of the i-th listener.
    Listen(usize),
    ListenProxyProtocol(usize),
    ListenTls(usize),
    ListenRedirectHttps(usize),
    BackendPrefix(usize),
    BackendAddress(usize),
    BackendWeight(usize),
    BackendCheck(usize),
    Threads,
    Pin,
    SessionIdLength,
    ConnectTimeout,
    RequestHeadTimeout,
    ClientTimeout,
    ServerTimeout,
    TunnelTimeout,
    KeepaliveTimeout,
    PoolIdleTimeout,
    QueueTimeout,
    Maxconn,
    Retries,
    MaxHeadBytes,
    MaxHeaders,
    PoolSize,
    Reuse,
    ForwardedHeaders,
    TrustForwardedFrom(usize),
    Check,
    CheckInterval,
    DownInterval,
    Rise,
    Fall,
    SessionIdle,
    MaxSessions,
    Grace,
    User,
    Admin,
    AdminToken,
    AccessLog,
    Splice,
    TlsHandshakeTimeout,
    TlsCert(usize),
    TlsStrictSni,
    TlsAllowExpired,
}

impl Setting {
    /// Every setting, list entries as their first.
    pub const ALL: [Setting; 44] = [
        Setting::Listen(0),
        Setting::ListenProxyProtocol(0),
        Setting::ListenTls(0),
        Setting::ListenRedirectHttps(0),
        Setting::BackendPrefix(0),
        Setting::BackendAddress(0),
        Setting::BackendWeight(0),
        Setting::BackendCheck(0),
        Setting::Threads,
        Setting::Pin,
        Setting::SessionIdLength,
        Setting::ConnectTimeout,
        Setting::RequestHeadTimeout,
        Setting::ClientTimeout,
        Setting::ServerTimeout,
        Setting::TunnelTimeout,
        Setting::KeepaliveTimeout,
        Setting::PoolIdleTimeout,
        Setting::QueueTimeout,
        Setting::Maxconn,
        Setting::Retries,
        Setting::MaxHeadBytes,
        Setting::MaxHeaders,
        Setting::PoolSize,
        Setting::Reuse,
        Setting::ForwardedHeaders,
        Setting::TrustForwardedFrom(0),
        Setting::Check,
        Setting::CheckInterval,
        Setting::DownInterval,
        Setting::Rise,
        Setting::Fall,
        Setting::SessionIdle,
        Setting::MaxSessions,
        Setting::Grace,
        Setting::User,
        Setting::Admin,
        Setting::AdminToken,
        Setting::AccessLog,
        Setting::Splice,
        Setting::TlsHandshakeTimeout,
        Setting::TlsCert(0),
        Setting::TlsStrictSni,
        Setting::TlsAllowExpired,
    ];

    /// The flag that sets it; a switch is named as given (`--no-pin`).
    pub fn flag(self) -> &'static str {
        match self {
            Setting::Listen(_)
            | Setting::ListenProxyProtocol(_)
            | Setting::ListenTls(_)
            | Setting::ListenRedirectHttps(_) => "--listen",
            Setting::BackendPrefix(_)
            | Setting::BackendAddress(_)
            | Setting::BackendWeight(_)
            | Setting::BackendCheck(_) => "--backend",
            Setting::Threads => "--threads",
            Setting::Pin => "--no-pin",
            Setting::SessionIdLength => "--session-id-length",
            Setting::ConnectTimeout => "--connect-timeout",
            Setting::RequestHeadTimeout => "--request-head-timeout",
            Setting::ClientTimeout => "--client-timeout",
            Setting::ServerTimeout => "--server-timeout",
            Setting::TunnelTimeout => "--tunnel-timeout",
            Setting::KeepaliveTimeout => "--keepalive-timeout",
            Setting::PoolIdleTimeout => "--pool-idle-timeout",
            Setting::QueueTimeout => "--queue-timeout",
            Setting::Maxconn => "--maxconn",
            Setting::Retries => "--retries",
            Setting::MaxHeadBytes => "--max-head-bytes",
            Setting::MaxHeaders => "--max-headers",
            Setting::PoolSize => "--pool-size",
            Setting::Reuse => "--reuse",
            Setting::Splice => "--splice",
            Setting::ForwardedHeaders => "--no-forwarded-headers",
            Setting::TrustForwardedFrom(_) => "--trust-forwarded-from",
            Setting::Check => "--check",
            Setting::CheckInterval => "--check-interval",
            Setting::DownInterval => "--down-interval",
            Setting::Rise => "--rise",
            Setting::Fall => "--fall",
            Setting::SessionIdle => "--session-idle",
            Setting::MaxSessions => "--max-sessions",
            Setting::Grace => "--grace",
            Setting::User => "--user",
            Setting::Admin => "--admin",
            Setting::AdminToken => "--admin-token",
            Setting::AccessLog => "--access-log",
            Setting::TlsHandshakeTimeout => "--tls-handshake-timeout",
            Setting::TlsCert(_) => "--tls-cert",
            Setting::TlsStrictSni => "--tls-strict-sni",
            Setting::TlsAllowExpired => "--tls-allow-expired",
        }
    }
}

/// What `Config::validate_all` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What makes the config unusable; each names the setting and the fix.
    pub errors: Vec<ConfigError>,
    /// Settings that work but fight Wt's own timeouts or do nothing; each names the setting and
    /// the fix.
    pub warnings: Vec<Warning>,
}

impl Report {
    fn error(&mut self, at: Setting, why: String) {
        self.errors.push(ConfigError::At(at, why));
    }

    fn warn(&mut self, at: Setting, why: String) {
        self.warnings.push(Warning { at, why });
    }
}

/// A setting that works but probably not as meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub at: Setting,
    pub why: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

/// Locked memory io_uring needs per shard: three rings plus the registered buffers.
pub const MEMLOCK_PER_SHARD: u64 = 1 << 20;

/// Locked memory (bytes) that `shards` shards need: one `MEMLOCK_PER_SHARD` each, plus 1 MiB.
pub fn memlock_need(shards: usize) -> u64 {
    MEMLOCK_PER_SHARD * shards as u64 + (1 << 20)
}

/// Why this process cannot lock the memory `shards` shards need, if it cannot. The engine raises
/// the soft RLIMIT_MEMLOCK itself; only the hard limit, which only root may raise, can stop it.
pub fn memlock_error(shards: usize) -> Option<ConfigError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct; geteuid has no preconditions.
    let (ok, root) = unsafe {
        (
            libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0,
            libc::geteuid() == 0,
        )
    };
    if !ok {
        return None;
    }
    memlock_verdict(shards, lim.rlim_max, root)
}

fn memlock_verdict(shards: usize, hard: u64, root: bool) -> Option<ConfigError> {
    let need = memlock_need(shards);
    if root || hard >= need {
        return None;
    }
    Some(ConfigError::Invalid(format!(
        "{shards} shard(s) need {} KiB of locked memory for io_uring (1 MiB each + 1 MiB), but \
         the hard RLIMIT_MEMLOCK is {} KiB and only root can raise it: run 'ulimit -l {}' as root \
         before wtgate, set LimitMEMLOCK=infinity in its systemd unit, or give fewer --threads",
        need / 1024,
        hard / 1024,
        need / 1024
    )))
}

/// Parses a duration: `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: write e.g. 500ms, 5s, 2m, 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Writes a duration the way `parse_duration` reads it, in the largest unit that keeps it whole
/// (minutes aside: `60s` reads better next to Wt's 50 s than `1m`): `1h`, `60s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_secs_f64() * 1000.0)
    } else if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Backend {
        spec: String,
        why: String,
    },
    Listen {
        spec: String,
        why: String,
    },
    /// No listen address. Its own variant (like the next two) so that a caller that could not
    /// parse some `--listen` can leave it out rather than contradict the parse error.
    NoListen,
    NoBackends,
    /// Every backend has weight 0.
    NoWeight,
    Invalid(String),
    /// What is wrong with one setting, for a config file's reader to show at its line.
    At(Setting, String),
    /// Several errors, one per line.
    Several(Vec<ConfigError>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Backend { spec, why } => write!(f, "--backend '{spec}': {why}"),
            ConfigError::Listen { spec, why } => write!(f, "--listen '{spec}': {why}"),
            ConfigError::NoListen => write!(
                f,
                "no listen address: add --listen {} (several allowed), or a [[listen]] table \
                 to the --config file",
                Config::DEFAULT_LISTEN
            ),
            ConfigError::NoBackends => f.write_str(
                "no backends: add one --backend PREFIX=HOST:PORT per Wt server, \
                 e.g. --backend wt1=127.0.0.1:9090 --backend wt2=127.0.0.1:9091, or one \
                 [[backend]] table each to the --config file",
            ),
            ConfigError::NoWeight => f.write_str(
                "every backend has weight=0: new sessions could go nowhere; give one weight=1 or more",
            ),
            ConfigError::Invalid(why) | ConfigError::At(_, why) => f.write_str(why),
            ConfigError::Several(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(specs: &[&str]) -> Config {
        Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            backends: specs
                .iter()
                .map(|s| BackendConfig::parse(s).unwrap())
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn parses_backend_specs() {
        let b = BackendConfig::parse("wt1=127.0.0.1:9090").unwrap();
        assert_eq!(b.prefix, "wt1");
        assert_eq!(b.addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(b.weight, 1);
        let b = BackendConfig::parse("wt2=[::1]:9091,weight=3").unwrap();
        assert_eq!(b.addr, "[::1]:9091".parse().unwrap());
        assert_eq!(b.weight, 3);
        let b = BackendConfig::parse("a= localhost:80 ,weight=2").unwrap();
        assert!(b.addr.ip().is_loopback());
        assert_eq!(b.host, "localhost:80", "as written, to resolve again");
        assert_eq!(resolve_backend(&b.host).unwrap().port(), 80);
        assert_eq!(
            BackendConfig::parse("wt1=[::1]:9090").unwrap().host,
            "[::1]:9090"
        );
        let b = BackendConfig::parse("wt1=127.0.0.1:9090,check=/health,weight=2").unwrap();
        assert_eq!(b.check, Some(Check::Http("/health".into())));
        assert_eq!(b.weight, 2);
        let b = BackendConfig::parse("wt1=127.0.0.1:9090,check=tcp").unwrap();
        assert_eq!(b.check, Some(Check::Tcp));
    }

    #[test]
    fn rejects_bad_backend_specs() {
        for bad in [
            "127.0.0.1:9090",
            "=127.0.0.1:9090",
            "wt-1=127.0.0.1:9090",
            "wt1=127.0.0.1",
            "wt1=127.0.0.1:9090,weight=x",
            "wt1=127.0.0.1:9090,color=red",
            "wt1=127.0.0.1:99999",
            "wt1=127.0.0.1:9090,check=health",
            "wt1=127.0.0.1:9090,check=/a b",
        ] {
            assert!(BackendConfig::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn validates_prefixes() {
        assert!(
            cfg(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"])
                .validate()
                .is_ok()
        );
        let e = cfg(&["wt1=127.0.0.1:1", "wt1=127.0.0.1:2"])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("two backends"), "{e}");
        // An id's length tells wt1 (19 chars) from wt10 (20 chars) apart.
        assert!(
            cfg(&["wt1=127.0.0.1:1", "wt10=127.0.0.1:2"])
                .validate()
                .is_ok()
        );
        let e = cfg(&[]).validate().unwrap_err();
        assert!(e.to_string().contains("no backends"), "{e}");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn formats_durations_as_parse_duration_reads_them() {
        for (d, want) in [
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(90 * 60), "5400s"),
            (Duration::from_secs(8), "8s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(500), "0.5ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), want);
            assert_eq!(parse_duration(want).unwrap(), d, "{want}");
        }
    }

    /// `Config::default()` is where the defaults live; the HTTP head limits are `h1::Limits`'s.
    #[test]
    fn defaults_hold_together() {
        let (c, l) = (Config::default(), crate::h1::Limits::default());
        assert_eq!(
            (c.max_head_bytes, c.max_headers),
            (l.max_head_bytes, l.max_headers)
        );
        assert!(Config::DEFAULT_LISTEN.parse::<Listen>().is_ok());
    }

    #[test]
    fn parses_listen() {
        assert_eq!(
            parse_listen(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(parse_listen("nonsense").is_err());
        assert_eq!(
            parse_listen("8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
    }

    #[test]
    fn parses_listen_options() {
        let l = parse_listen("127.0.0.1:8443,proxy-protocol").unwrap();
        assert_eq!(l.addr, "127.0.0.1:8443".parse().unwrap());
        assert!(l.proxy_protocol);
        assert_eq!(l.to_string(), "127.0.0.1:8443,proxy-protocol");
        assert_eq!(parse_listen(&l.to_string()).unwrap(), l);
        let l = parse_listen(":8443, proxy-protocol").unwrap();
        assert_eq!(l.addr, "0.0.0.0:8443".parse().unwrap());
        assert!(l.proxy_protocol);
        assert!(!parse_listen("[::1]:80").unwrap().proxy_protocol);
        let e = parse_listen("8080,accept-proxy").unwrap_err().to_string();
        assert!(e.contains("unknown option 'accept-proxy'"), "{e}");
        // The same address with and without the option cannot both be bound.
        let mut c = cfg(&["wt1=127.0.0.1:1"]);
        c.listen = vec![
            "127.0.0.1:80".parse().unwrap(),
            "127.0.0.1:80,proxy-protocol".parse().unwrap(),
        ];
        assert!(c.validate().is_err());
    }

    #[test]
    fn trusts_the_given_networks_and_addresses() {
        let mut c = cfg(&["wt1=127.0.0.1:1"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!c.trusts(ip("127.0.0.1")), "nobody is trusted by default");
        c.trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"]
            .iter()
            .map(|s| parse_cidr(s).unwrap())
            .collect();
        for yes in [
            "10.1.2.3",
            "192.0.2.7",
            "2001:db8::5",
            "::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(c.trusts(ip(yes)), "{yes}");
        }
        for no in [
            "11.0.0.1",
            "192.0.2.8",
            "2001:db9::1",
            "::2",
            "::ffff:192.0.2.8",
        ] {
            assert!(!c.trusts(ip(no)), "{no}");
        }
        assert_eq!(parse_cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in ["10.0.0.0/33", "localhost", "", "10.0.0.0/8/8"] {
            let e = parse_cidr(bad).unwrap_err().to_string();
            assert!(e.contains("--trust-forwarded-from"), "{bad}: {e}");
        }
    }

    #[test]
    fn warns_about_trust_that_does_nothing_or_trusts_everyone() {
        let mut c = cfg(&["wt1=127.0.0.1:1"]);
        c.trusted_proxies = vec![parse_cidr("0.0.0.0/0").unwrap()];
        let r = c.validate_all();
        assert!(r.errors.is_empty(), "{r:?}");
        assert!(
            r.warnings
                .iter()
                .any(|w| w.why.contains("trusts every client")),
            "{r:?}"
        );
        c.trusted_proxies = vec![parse_cidr("10.0.0.0/8").unwrap()];
        assert_eq!(c.validate_all(), Report::default());
        c.forwarded_headers = false;
        let r = c.validate_all();
        assert!(
            r.warnings
                .iter()
                .any(|w| w.why.contains("--no-forwarded-headers")),
            "{r:?}"
        );
    }

    #[test]
    fn parses_splice() {
        for s in [Splice::Auto, Splice::Off] {
            assert_eq!(s.to_string().parse::<Splice>().unwrap(), s);
        }
        let e = "on".parse::<Splice>().unwrap_err().to_string();
        assert!(
            e.contains("--splice 'on'") && e.contains("auto or off"),
            "{e}"
        );
    }

    #[test]
    fn parses_reuse() {
        assert_eq!(Config::default().reuse, Reuse::Safe);
        for r in [Reuse::Safe, Reuse::Always, Reuse::Never] {
            assert_eq!(r.to_string().parse::<Reuse>().unwrap(), r);
        }
        let e = "sometimes".parse::<Reuse>().unwrap_err().to_string();
        assert!(
            e.contains("--reuse 'sometimes'") && e.contains("safe"),
            "{e}"
        );
    }

    #[test]
    fn an_unbracketed_ipv6_address_gets_the_bracketed_spelling() {
        for (spec, want) in [
            ("::1:8080", "write [::1]:8080"),
            ("fe80::1:443", "write [fe80::1]:443"),
            ("2001:db8::1", "write [2001:db8::1]:PORT"),
        ] {
            let e = parse_listen(spec).unwrap_err().to_string();
            assert!(e.contains("IPv6 address needs brackets"), "{spec}: {e}");
            assert!(e.contains(want), "{spec}: {e}");
        }
        let e = BackendConfig::parse("wt1=::1:9090")
            .unwrap_err()
            .to_string();
        assert!(e.contains("write [::1]:9090"), "{e}");
        // A host name with a port is no IPv6 address.
        assert!(bracket_hint("localhost:80").is_none());
        assert!(bracket_hint("[::1]:80").is_none());
    }

    #[test]
    fn reports_every_error_at_once() {
        let mut c = cfg(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:1", "wt3=127.0.0.1:0"]);
        c.listen = vec![
            "0.0.0.0:8080".parse().unwrap(),
            "0.0.0.0:8080".parse().unwrap(),
        ];
        c.maxconn = 0;
        c.retries = 0;
        let r = c.validate_all();
        let all: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        for needle in [
            "--listen 0.0.0.0:8080 is given twice",
            "wt1 and wt2 are both at 127.0.0.1:1",
            "--backend wt3=127.0.0.1:0: port 0",
            "--maxconn",
            "--retries",
        ] {
            assert!(all.iter().any(|e| e.contains(needle)), "{needle}: {all:?}");
        }
        assert_eq!(all.len(), 5, "{all:?}");
        match c.validate() {
            Err(ConfigError::Several(errors)) => assert_eq!(errors, r.errors),
            other => panic!("{other:?}"),
        }
        c.maxconn = 1;
        c.retries = 1;
        c.listen.pop();
        c.backends.truncate(1);
        assert!(c.validate().is_ok());
        c.retries = 0;
        assert!(
            matches!(c.validate(), Err(ConfigError::At(Setting::Retries, e)) if e.contains("--retries")),
            "one error is itself, not a list of one"
        );
    }

    #[test]
    fn listen_addresses_that_cannot_both_be_bound_clash() {
        let clash = |a: &str, b: &str| {
            listen_clash(
                a.parse().unwrap(),
                b.parse().unwrap(),
                "--listen",
                "--listen",
            )
        };
        for (a, b) in [
            ("127.0.0.1:80", "127.0.0.1:80"),
            ("0.0.0.0:80", "127.0.0.1:80"),
            ("127.0.0.1:80", "0.0.0.0:80"),
            ("[::]:80", "[::1]:80"),
        ] {
            assert!(clash(a, b).is_some(), "{a} {b}");
        }
        // Port 0 is a new port each time, which the engine's tests rely on; [::] is v6-only.
        for (a, b) in [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("0.0.0.0:80", "[::]:80"),
            ("127.0.0.1:80", "127.0.0.2:80"),
            ("0.0.0.0:80", "0.0.0.0:81"),
        ] {
            assert!(clash(a, b).is_none(), "{a} {b}");
        }
        let mut c = cfg(&["wt1=127.0.0.1:1"]);
        c.listen.push("127.0.0.1:0".parse().unwrap());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn warns_about_timeouts_that_fight_wt() {
        let mut c = cfg(&["wt1=127.0.0.1:1"]);
        assert_eq!(c.validate_all(), Report::default());
        c.timeouts.pool_idle = Duration::from_secs(10);
        c.timeouts.server = Duration::from_secs(50);
        let r = c.validate_all();
        assert!(r.errors.is_empty(), "{r:?}");
        assert_eq!(r.warnings.len(), 2, "{r:?}");
        assert!(
            r.warnings[0].why.contains("--pool-idle-timeout 10s"),
            "{r:?}"
        );
        assert!(r.warnings[1].why.contains("--server-timeout 50s"), "{r:?}");
        c.timeouts.pool_idle = Duration::from_millis(9999);
        c.timeouts.server = Duration::from_millis(50_001);
        assert_eq!(c.validate_all(), Report::default());
    }

    #[test]
    fn memlock_needs_room_under_the_hard_limit_or_root() {
        assert_eq!(memlock_need(4), 5 << 20);
        let e = memlock_verdict(4, 4 << 20, false).unwrap().to_string();
        for needle in ["ulimit -l 5120", "LimitMEMLOCK=", "--threads", "4096 KiB"] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(memlock_verdict(4, 4 << 20, true).is_none());
        assert!(memlock_verdict(4, 5 << 20, false).is_none());
        assert!(memlock_verdict(4, libc::RLIM_INFINITY, false).is_none());
    }

    #[test]
    fn an_access_log_needs_a_file_or_a_dash() {
        let mut c = cfg(&["wt1=127.0.0.1:1"]);
        for ok in ["-", "/var/log/wtgate/access.log", "access.log"] {
            c.access_log = Some(ok.into());
            assert_eq!(c.validate_all(), Report::default(), "{ok}");
        }
        c.access_log = Some(" ".into());
        let e = c.validate().unwrap_err().to_string();
        assert_eq!(e, "--access-log needs a file, or - for stdout");
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let mut c = cfg(&["wt1=127.0.0.1:1"]);
        for ok in ["127.0.0.1:8404", "[::1]:8404", "127.0.0.2:0"] {
            c.admin = Some(ok.parse().unwrap());
            assert_eq!(c.validate_all(), Report::default(), "{ok}");
        }
        c.admin = Some("0.0.0.0:8404".parse().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--admin 0.0.0.0:8404") && e.contains("--admin-token"),
            "{e}"
        );
        assert!(e.contains("--admin 127.0.0.1:8404"), "names the fix: {e}");
        c.admin_token = Some("s3cret".into());
        assert_eq!(c.validate_all(), Report::default());
        for bad in ["", "two words", "tab\t"] {
            c.admin_token = Some(bad.into());
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("--admin-token"), "{bad:?}: {e}");
        }
        c.admin = None;
        c.admin_token = Some("s3cret".into());
        let r = c.validate_all();
        assert!(r.errors.is_empty(), "{r:?}");
        assert!(
            r.warnings.iter().any(|w| w.why.contains("--admin ADDR")),
            "{r:?}"
        );
    }
}
