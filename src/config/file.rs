//! The config file (`wtgate --config wtgate.toml`): every setting the flags have, in TOML.
//!
//! The `toml` crate parses the file into the serde-derived tables below, which refuse unknown
//! keys. Each value is kept as written, with its span (`Spanned`), and then checked and converted
//! one by one by the functions the flags use: so every bad value is reported in one run, in the
//! flags' words, at its line and key (`wtgate.toml:12: backend[1].weight: …`). A key left out
//! leaves `Config::default()`'s value in place: no default is written here.
//!
//! `wtgate.example.toml` at the repository root shows every key; the tests below keep it and the
//! parser in step.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    BackendConfig, Check, Config, ConfigError, Listen, Reuse, Setting, Splice, Warning,
    check_operator_listen, check_prefix, parse_duration, parse_listen_addr, parse_net,
    resolve_backend,
};

/// A value as written and where, checked and converted by `Reader`.
type Value = Spanned<toml::Value>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    threads: Option<Value>,
    pin: Option<Value>,
    session_id_length: Option<Value>,
    grace: Option<Value>,
    user: Option<Value>,
    access_log: Option<Value>,
    splice: Option<Value>,
    watch: Option<Value>,
    listen: Option<Vec<Spanned<ListenTable>>>,
    backend: Option<Vec<Spanned<BackendTable>>>,
    #[serde(default)]
    timeouts: TimeoutsTable,
    #[serde(default)]
    limits: LimitsTable,
    #[serde(default)]
    pool: PoolTable,
    #[serde(default)]
    forwarded: ForwardedTable,
    #[serde(default)]
    health: HealthTable,
    #[serde(default)]
    sessions: SessionsTable,
    #[serde(default)]
    admin: AdminTable,
    #[serde(default)]
    tls: TlsTable,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsTable {
    certificates: Option<Vec<Spanned<CertTable>>>,
    strict_sni: Option<Value>,
    allow_expired: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertTable {
    cert: Option<Value>,
    key: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdminTable {
    listen: Option<Value>,
    token: Option<Value>,
    /// Read by `wtgate admin --config FILE` only (see [`AdminPeers`]); checked by everyone.
    peers: Option<Spanned<Vec<Value>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SessionsTable {
    idle: Option<Value>,
    max: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenTable {
    address: Option<Value>,
    proxy_protocol: Option<Value>,
    tls: Option<Value>,
    redirect_https: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendTable {
    prefix: Option<Value>,
    address: Option<Value>,
    weight: Option<Value>,
    check: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TimeoutsTable {
    connect: Option<Value>,
    request_head: Option<Value>,
    client: Option<Value>,
    server: Option<Value>,
    tunnel: Option<Value>,
    keepalive: Option<Value>,
    pool_idle: Option<Value>,
    queue: Option<Value>,
    tls_handshake: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsTable {
    maxconn: Option<Value>,
    retries: Option<Value>,
    max_head_bytes: Option<Value>,
    max_headers: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PoolTable {
    size: Option<Value>,
    reuse: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ForwardedTable {
    headers: Option<Value>,
    trusted: Option<Vec<Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HealthTable {
    check: Option<Value>,
    interval: Option<Value>,
    down_interval: Option<Value>,
    rise: Option<Value>,
    fall: Option<Value>,
}

impl Setting {
    /// Its key in the config file, `Setting`'s index counting the file's entries.
    pub fn key(self) -> String {
        let fixed = match self {
            Setting::Listen(i) => return format!("listen[{i}].address"),
            Setting::ListenProxyProtocol(i) => return format!("listen[{i}].proxy_protocol"),
            Setting::ListenTls(i) => return format!("listen[{i}].tls"),
            Setting::ListenRedirectHttps(i) => return format!("listen[{i}].redirect_https"),
            Setting::TlsCert(i) => return format!("tls.certificates[{i}]"),
            Setting::BackendPrefix(i) => return format!("backend[{i}].prefix"),
            Setting::BackendAddress(i) => return format!("backend[{i}].address"),
            Setting::BackendWeight(i) => return format!("backend[{i}].weight"),
            Setting::BackendCheck(i) => return format!("backend[{i}].check"),
            Setting::TrustForwardedFrom(i) => return format!("forwarded.trusted[{i}]"),
            Setting::Threads => "threads",
            Setting::Pin => "pin",
            Setting::Splice => "splice",
            Setting::SessionIdLength => "session_id_length",
            Setting::ConnectTimeout => "timeouts.connect",
            Setting::RequestHeadTimeout => "timeouts.request_head",
            Setting::ClientTimeout => "timeouts.client",
            Setting::ServerTimeout => "timeouts.server",
            Setting::TunnelTimeout => "timeouts.tunnel",
            Setting::KeepaliveTimeout => "timeouts.keepalive",
            Setting::PoolIdleTimeout => "timeouts.pool_idle",
            Setting::QueueTimeout => "timeouts.queue",
            Setting::Maxconn => "limits.maxconn",
            Setting::Retries => "limits.retries",
            Setting::MaxHeadBytes => "limits.max_head_bytes",
            Setting::MaxHeaders => "limits.max_headers",
            Setting::PoolSize => "pool.size",
            Setting::Reuse => "pool.reuse",
            Setting::ForwardedHeaders => "forwarded.headers",
            Setting::Check => "health.check",
            Setting::CheckInterval => "health.interval",
            Setting::DownInterval => "health.down_interval",
            Setting::Rise => "health.rise",
            Setting::Fall => "health.fall",
            Setting::SessionIdle => "sessions.idle",
            Setting::MaxSessions => "sessions.max",
            Setting::Grace => "grace",
            Setting::User => "user",
            Setting::Admin => "admin.listen",
            Setting::AdminToken => "admin.token",
            Setting::AccessLog => "access_log",
            Setting::TlsHandshakeTimeout => "timeouts.tls_handshake",
            Setting::TlsStrictSni => "tls.strict_sni",
            Setting::TlsAllowExpired => "tls.allow_expired",
        };
        fixed.to_string()
    }
}

/// A config file that parsed: every key known and of the right shape. Its values are checked by
/// `apply`.
pub struct ConfigFile {
    /// The path as the operator gave it, to start each message with.
    name: String,
    text: String,
    parsed: FileConfig,
}

/// What `ConfigFile::apply` did.
pub struct Applied {
    /// One line per bad value: `FILE:LINE: KEY: why`.
    pub errors: Vec<String>,
    /// Where each setting the file gave is, for messages about it.
    pub origins: Origins,
    /// `None` when the file has no `[[listen]]`; else whether every entry was good.
    pub listen: Option<bool>,
    /// As `listen`, for `[[backend]]`.
    pub backends: Option<bool>,
}

/// What `wtgate admin --config FILE` takes from the file's `[admin]` table: which instances to
/// act on, and the token.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AdminPeers {
    /// `peers`: every instance's admin listener (`http://HOST:PORT`), this one's included; empty
    /// when the file has none.
    pub peers: Vec<String>,
    /// `listen`: this instance's own admin listener.
    pub listen: Option<std::net::SocketAddr>,
    /// `token`.
    pub token: Option<String>,
}

impl ConfigFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &str) -> Result<ConfigFile, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("--config {path}: cannot read it: {e}")])?;
        ConfigFile::parse(path, text)
    }

    /// Parses `text`, read from `name`. The errors are every TOML syntax error, or else the first
    /// unknown key or value of the wrong shape (serde stops at the first), each as
    /// `NAME:LINE: KEY: why`.
    pub fn parse(name: &str, text: String) -> Result<ConfigFile, Vec<String>> {
        let at = |span: Option<Range<usize>>, root: Option<&DeTable>, why: &str| {
            let Some(span) = span else {
                return format!("{name}: {why}");
            };
            let line = line_of(&text, span.start);
            match root
                .map(|r| key_at(r, span.start))
                .filter(|k| !k.is_empty())
            {
                Some(key) => format!("{name}:{line}: {key}: {why}"),
                None => format!("{name}:{line}: {why}"),
            }
        };
        let (root, mut syntax) = DeTable::parse_recoverable(&text);
        if !syntax.is_empty() {
            syntax.sort_by_key(|e| e.span().map(|s| s.start));
            return Err(syntax
                .iter()
                .map(|e| at(e.span(), None, e.message()))
                .collect());
        }
        // Parsed a second time (a file of a few KiB) so that `root` stays for naming the key of
        // the error, if any.
        let parsed = toml::from_str::<FileConfig>(&text)
            .map_err(|e| vec![at(e.span(), Some(root.get_ref()), e.message())])?;
        drop(root);
        Ok(ConfigFile {
            name: name.to_string(),
            text,
            parsed,
        })
    }

    /// Sets in `cfg` every setting the file gives, each checked as its flag is; a bad one leaves
    /// `cfg`'s value and adds an error. The file's listeners and backends are added to `cfg`'s.
    pub fn apply(&self, cfg: &mut Config) -> Applied {
        let mut r = Reader {
            name: &self.name,
            text: &self.text,
            errors: Vec::new(),
            origins: Origins {
                file: self.name.clone(),
                keys: HashMap::new(),
            },
        };
        let f = &self.parsed;
        apply_top(&mut r, f, cfg);
        let listen = f.listen.as_ref().map(|l| r.listeners(l, cfg));
        let backends = f.backend.as_ref().map(|b| r.backends(b, cfg));
        apply_durations(&mut r, f, cfg);
        apply_limits(&mut r, f, cfg);
        apply_forwarded(&mut r, f, cfg);
        apply_health_and_admin(&mut r, f, cfg);
        Applied {
            errors: r.errors,
            origins: r.origins,
            listen,
            backends,
        }
    }

    /// `watch = true`: put the file in force whenever it changes (`--watch-config`). A value
    /// that is not a boolean is an error of `apply`, and false here.
    pub fn watch(&self) -> bool {
        let watch = self.parsed.watch.as_ref().map(|v| v.get_ref().as_bool());
        watch.flatten().unwrap_or(false)
    }

    /// The `[admin]` table's peers, listen address and token, each checked as `apply` checks
    /// them (and nothing else of the file: `wtgate admin` resolves no backend's name); every
    /// error at once, as `FILE:LINE: KEY: why`.
    pub fn admin_peers(&self) -> Result<AdminPeers, Vec<String>> {
        let mut r = Reader {
            name: &self.name,
            text: &self.text,
            errors: Vec::new(),
            origins: Origins::default(),
        };
        let mut cfg = Config::default();
        let admin = &self.parsed.admin;
        read_admin(&mut r, admin, &mut cfg);
        let peers = read_peers(&mut r, admin);
        if !r.errors.is_empty() {
            return Err(r.errors);
        }
        Ok(AdminPeers {
            peers,
            listen: cfg.admin,
            token: cfg.admin_token,
        })
    }
}

fn apply_top(r: &mut Reader, f: &FileConfig, cfg: &mut Config) {
    r.set(&mut cfg.threads, Setting::Threads, &f.threads, whole);
    r.set(&mut cfg.user, Setting::User, &f.user, |v, w| {
        string(v, w).map(|s| Some(s.to_string()))
    });
    r.set(&mut cfg.pin, Setting::Pin, &f.pin, boolean);
    r.set(&mut cfg.splice, Setting::Splice, &f.splice, |v, w| {
        string(v, w).and_then(Splice::parse)
    });
    r.set(
        &mut cfg.access_log,
        Setting::AccessLog,
        &f.access_log,
        |v, w| string(v, w).map(|s| Some(s.to_string())),
    );
    r.set(
        &mut cfg.session_id_length,
        Setting::SessionIdLength,
        &f.session_id_length,
        whole,
    );
    // Read by the binary (`ConfigFile::watch`), not a `Config` setting: checked here so that a
    // bad value is reported with the others.
    if let Some(v) = &f.watch {
        r.read("watch", v, boolean);
    }
}

fn apply_durations(r: &mut Reader, f: &FileConfig, cfg: &mut Config) {
    let (t, to) = (&f.timeouts, &mut cfg.timeouts);
    for (into, at, v) in [
        (&mut to.connect, Setting::ConnectTimeout, &t.connect),
        (
            &mut to.request_head,
            Setting::RequestHeadTimeout,
            &t.request_head,
        ),
        (&mut to.client, Setting::ClientTimeout, &t.client),
        (&mut to.server, Setting::ServerTimeout, &t.server),
        (&mut to.tunnel, Setting::TunnelTimeout, &t.tunnel),
        (&mut to.keepalive, Setting::KeepaliveTimeout, &t.keepalive),
        (&mut to.pool_idle, Setting::PoolIdleTimeout, &t.pool_idle),
        (&mut to.queue, Setting::QueueTimeout, &t.queue),
        (
            &mut to.tls_handshake,
            Setting::TlsHandshakeTimeout,
            &t.tls_handshake,
        ),
        (
            &mut cfg.check_interval,
            Setting::CheckInterval,
            &f.health.interval,
        ),
        (
            &mut cfg.down_interval,
            Setting::DownInterval,
            &f.health.down_interval,
        ),
        (
            &mut cfg.session_idle,
            Setting::SessionIdle,
            &f.sessions.idle,
        ),
        (&mut cfg.grace, Setting::Grace, &f.grace),
    ] {
        r.set(into, at, v, duration);
    }
}

fn apply_limits(r: &mut Reader, f: &FileConfig, cfg: &mut Config) {
    let l = &f.limits;
    r.set(&mut cfg.maxconn, Setting::Maxconn, &l.maxconn, whole);
    r.set(&mut cfg.retries, Setting::Retries, &l.retries, whole);
    r.set(
        &mut cfg.max_head_bytes,
        Setting::MaxHeadBytes,
        &l.max_head_bytes,
        whole,
    );
    r.set(
        &mut cfg.max_headers,
        Setting::MaxHeaders,
        &l.max_headers,
        whole,
    );
    r.set(&mut cfg.pool_size, Setting::PoolSize, &f.pool.size, whole);
    r.set(&mut cfg.reuse, Setting::Reuse, &f.pool.reuse, |v, w| {
        string(v, w).and_then(Reuse::parse)
    });
    r.set(
        &mut cfg.max_sessions,
        Setting::MaxSessions,
        &f.sessions.max,
        whole,
    );
}

fn apply_forwarded(r: &mut Reader, f: &FileConfig, cfg: &mut Config) {
    r.set(
        &mut cfg.forwarded_headers,
        Setting::ForwardedHeaders,
        &f.forwarded.headers,
        boolean,
    );
    let Some(trusted) = &f.forwarded.trusted else {
        return;
    };
    for (i, v) in trusted.iter().enumerate() {
        let key = Setting::TrustForwardedFrom(i).key();
        let net = r.read(&key, v, |v, w| {
            string(v, w).and_then(|s| parse_net(s).map_err(|why| format!("'{s}': {why}")))
        });
        if let Some(net) = net {
            let at = Setting::TrustForwardedFrom(cfg.trusted_proxies.len());
            r.origin(at, key, v.span());
            cfg.trusted_proxies.push(net);
        }
    }
}

fn apply_health_and_admin(r: &mut Reader, f: &FileConfig, cfg: &mut Config) {
    let h = &f.health;
    r.set(&mut cfg.check, Setting::Check, &h.check, check);
    r.set(&mut cfg.rise, Setting::Rise, &h.rise, whole);
    r.set(&mut cfg.fall, Setting::Fall, &h.fall, whole);
    read_admin(r, &f.admin, cfg);
    // For `wtgate admin --config`; checked here too, so that `wtgate check` reports a bad one.
    read_peers(r, &f.admin);
    read_tls(r, &f.tls, cfg);
}

/// `[tls]`: its switches and `certificates` (added to `cfg`'s). The files are
/// read when the engine starts or reloads (`crate::tls`), which names them in its errors.
fn read_tls(r: &mut Reader, tls: &TlsTable, cfg: &mut Config) {
    let t = &mut cfg.tls;
    r.set(
        &mut t.strict_sni,
        Setting::TlsStrictSni,
        &tls.strict_sni,
        boolean,
    );
    let allow = &tls.allow_expired;
    r.set(
        &mut t.allow_expired,
        Setting::TlsAllowExpired,
        allow,
        boolean,
    );
    for (i, entry) in tls.certificates.iter().flatten().enumerate() {
        let e = entry.get_ref();
        let key = Setting::TlsCert(i).key();
        let Some(chain) = &e.cert else {
            r.error(
                entry.span(),
                &key,
                "no cert: add cert = \"CHAIN.pem\" (and key = \"KEY.pem\" unless the key is in it)",
            );
            continue;
        };
        let chain = r.read(&format!("{key}.cert"), chain, |v, w| {
            string(v, w).map(String::from)
        });
        let keyfile = match &e.key {
            Some(k) => r.read(&format!("{key}.key"), k, |v, w| {
                string(v, w).map(String::from)
            }),
            None => chain.clone(),
        };
        if let (Some(chain), Some(keyfile)) = (chain, keyfile) {
            let at = Setting::TlsCert(cfg.tls.certs.len());
            r.origin(at, key, entry.span());
            cfg.tls.certs.push(crate::config::CertFiles {
                chain,
                key: keyfile,
            });
        }
    }
}

/// `[admin] listen` and `token`.
fn read_admin(r: &mut Reader, admin: &AdminTable, cfg: &mut Config) {
    r.set(&mut cfg.admin, Setting::Admin, &admin.listen, |v, w| {
        string(v, w).and_then(|s| {
            super::parse_admin_addr(s)
                .map(Some)
                .map_err(|why| format!("'{s}': {why}"))
        })
    });
    r.set(
        &mut cfg.admin_token,
        Setting::AdminToken,
        &admin.token,
        |v, w| string(v, w).map(|s| Some(s.to_string())),
    );
}

/// `[admin] peers`: the good URLs, in order; an error for each bad one, and for an empty list.
fn read_peers(r: &mut Reader, admin: &AdminTable) -> Vec<String> {
    let Some(list) = &admin.peers else {
        return Vec::new();
    };
    if list.get_ref().is_empty() {
        let why = "an empty list: name every instance's admin listener, e.g. \
                   [\"http://10.0.0.1:8404\", \"http://10.0.0.2:8404\"], or leave the key out";
        r.error(list.span(), "admin.peers", why);
    }
    let mut peers = Vec::new();
    for (i, v) in list.get_ref().iter().enumerate() {
        let url = r.read(&format!("admin.peers[{i}]"), v, |v, w| {
            let url = string(v, w)?.trim();
            crate::admin::client::check_url(url).map_err(|why| format!("'{url}': {why}"))?;
            Ok(url.to_string())
        });
        peers.extend(url);
    }
    peers
}

/// Where the settings a config file gave are, to name them by key and line in messages; a setting
/// it did not give (or a flag overrode) is named by its flag.
#[derive(Debug, Default)]
pub struct Origins {
    file: String,
    /// Each setting's key and line, its index counting `Config`'s entries.
    keys: HashMap<Setting, (String, usize)>,
}

impl Origins {
    /// Forgets the settings `which` picks, which a flag has set since.
    pub fn forget(&mut self, which: impl Fn(Setting) -> bool) {
        self.keys.retain(|s, _| !which(*s));
    }

    /// The name of `s` for a message: its key if the file gave it, else its flag.
    pub fn name(&self, s: Setting) -> String {
        match self.keys.get(&s) {
            Some((key, _)) => key.clone(),
            None => s.flag().to_string(),
        }
    }

    /// `e`, starting with `FILE:LINE: ` when it is about a setting the file gave.
    pub fn locate(&self, e: &ConfigError) -> String {
        match e {
            ConfigError::At(s, why) => self.locate_at(*s, why),
            other => other.to_string(),
        }
    }

    /// `w`, starting with `FILE:LINE: ` when it is about a setting the file gave.
    pub fn locate_warning(&self, w: &Warning) -> String {
        self.locate_at(w.at, &w.why)
    }

    fn locate_at(&self, s: Setting, why: &str) -> String {
        match self.keys.get(&s) {
            Some((_, line)) => format!("{}:{line}: {why}", self.file),
            None => why.to_string(),
        }
    }
}

/// Checks and converts the file's values, noting errors and origins.
struct Reader<'a> {
    name: &'a str,
    text: &'a str,
    errors: Vec<String>,
    origins: Origins,
}

/// Checks a value and converts it: given the value and its text as written (to quote it).
type Convert<T> = fn(&toml::Value, &str) -> Result<T, String>;

impl Reader<'_> {
    fn error(&mut self, span: Range<usize>, key: &str, why: &str) {
        let line = line_of(self.text, span.start);
        self.errors
            .push(format!("{}:{line}: {key}: {why}", self.name));
    }

    fn origin(&mut self, at: Setting, key: String, span: Range<usize>) {
        let line = line_of(self.text, span.start);
        self.origins.keys.insert(at, (key, line));
    }

    /// `v` converted, or `None` after noting why not at `key`.
    fn read<T>(
        &mut self,
        key: &str,
        v: &Value,
        convert: impl FnOnce(&toml::Value, &str) -> Result<T, String>,
    ) -> Option<T> {
        let written = self.text[v.span()].trim();
        match convert(v.get_ref(), written) {
            Ok(t) => Some(t),
            Err(why) => {
                self.error(v.span(), key, &why);
                None
            }
        }
    }

    /// Sets `into` to the value of `at` if the file gives one, and a good one.
    fn set<T>(&mut self, into: &mut T, at: Setting, v: &Option<Value>, convert: Convert<T>) {
        let Some(v) = v else { return };
        self.origin(at, at.key(), v.span());
        if let Some(t) = self.read(&at.key(), v, convert) {
            *into = t;
        }
    }

    /// `Some(None)` if the file leaves `at` out, `Some(Some(value))` if it gives a good one,
    /// `None` after noting why not.
    fn optional<T>(
        &mut self,
        at: Setting,
        v: &Option<Value>,
        convert: Convert<T>,
    ) -> Option<Option<T>> {
        match v {
            None => Some(None),
            Some(v) => self.read(&at.key(), v, convert).map(Some),
        }
    }

    /// Adds the good `[[listen]]` entries to `cfg.listen`; true if all were good.
    fn listeners(&mut self, list: &[Spanned<ListenTable>], cfg: &mut Config) -> bool {
        let mut ok = true;
        for (i, entry) in list.iter().enumerate() {
            let Some(address) = &entry.get_ref().address else {
                self.error(
                    entry.span(),
                    &format!("listen[{i}]"),
                    "no address: add address = \"HOST:PORT\"",
                );
                ok = false;
                continue;
            };
            let addr = self.read(&Setting::Listen(i).key(), address, |v, w| {
                let addr = string(v, w).and_then(parse_listen_addr)?;
                check_operator_listen(addr).map(|()| addr)
            });
            let pp = &entry.get_ref().proxy_protocol;
            let proxy_protocol = self.optional(Setting::ListenProxyProtocol(i), pp, boolean);
            let e = entry.get_ref();
            let tls = self.optional(Setting::ListenTls(i), &e.tls, boolean);
            let redirect = &e.redirect_https;
            let redirect = self.optional(Setting::ListenRedirectHttps(i), redirect, boolean);
            let (Some(addr), Some(proxy_protocol), Some(tls), Some(redirect)) =
                (addr, proxy_protocol, tls, redirect)
            else {
                ok = false;
                continue;
            };
            if tls == Some(true) && redirect == Some(true) {
                let why = "tls and redirect_https together: a redirect to https:// belongs on a \
                           plain listener (port 80), the TLS one (port 443) serves";
                self.error(entry.span(), &format!("listen[{i}]"), why);
                ok = false;
                continue;
            }
            let n = cfg.listen.len();
            self.origin(Setting::Listen(n), Setting::Listen(i).key(), address.span());
            let mut listen = Listen::from(addr);
            if let (Some(pp), Some(v)) = (proxy_protocol, pp) {
                listen.proxy_protocol = pp;
                self.origin(
                    Setting::ListenProxyProtocol(n),
                    Setting::ListenProxyProtocol(i).key(),
                    v.span(),
                );
            }
            if let (Some(on), Some(v)) = (tls, &e.tls) {
                listen.tls = on;
                self.origin(Setting::ListenTls(n), Setting::ListenTls(i).key(), v.span());
            }
            if let (Some(on), Some(v)) = (redirect, &e.redirect_https) {
                listen.redirect_https = on;
                let key = Setting::ListenRedirectHttps(i).key();
                self.origin(Setting::ListenRedirectHttps(n), key, v.span());
            }
            cfg.listen.push(listen);
        }
        ok
    }

    /// Adds the good `[[backend]]` entries to `cfg.backends`; true if all were good.
    fn backends(&mut self, list: &[Spanned<BackendTable>], cfg: &mut Config) -> bool {
        let mut ok = true;
        for (i, entry) in list.iter().enumerate() {
            ok &= self.backend(i, entry, cfg);
        }
        ok
    }

    /// The `i`-th `[[backend]]`, added to `cfg` if all its values are good.
    fn backend(&mut self, i: usize, entry: &Spanned<BackendTable>, cfg: &mut Config) -> bool {
        let b = entry.get_ref();
        let (Some(prefix_v), Some(address_v)) = (&b.prefix, &b.address) else {
            self.error(
                entry.span(),
                &format!("backend[{i}]"),
                "a backend needs a prefix (its Wt --session-id-prefix) and an address: \
                 add prefix = \"wt1\" and address = \"HOST:PORT\"",
            );
            return false;
        };
        let prefix = self.read(&Setting::BackendPrefix(i).key(), prefix_v, |v, w| {
            let p = string(v, w)?;
            check_prefix(p).map_err(|why| format!("'{p}': {why}"))?;
            Ok(p.to_string())
        });
        let address = self.read(&Setting::BackendAddress(i).key(), address_v, |v, w| {
            let host = string(v, w)?.trim();
            Ok((resolve_backend(host)?, host.to_string()))
        });
        let weight = self.optional(Setting::BackendWeight(i), &b.weight, weight);
        let check = self.optional(Setting::BackendCheck(i), &b.check, check);
        let (Some(prefix), Some((addr, host)), Some(weight), Some(check)) =
            (prefix, address, weight, check)
        else {
            return false;
        };
        self.backend_origins(i, cfg.backends.len(), b);
        cfg.backends.push(BackendConfig {
            prefix,
            addr,
            host,
            weight: weight.unwrap_or(BackendConfig::DEFAULT_WEIGHT),
            check,
        });
        true
    }

    /// Where the fields of the file's `i`-th backend, `cfg`'s `n`-th, are.
    fn backend_origins(&mut self, i: usize, n: usize, b: &BackendTable) {
        let fields = [
            (
                Setting::BackendPrefix(n),
                Setting::BackendPrefix(i),
                &b.prefix,
            ),
            (
                Setting::BackendAddress(n),
                Setting::BackendAddress(i),
                &b.address,
            ),
            (
                Setting::BackendWeight(n),
                Setting::BackendWeight(i),
                &b.weight,
            ),
            (Setting::BackendCheck(n), Setting::BackendCheck(i), &b.check),
        ];
        for (at, key, v) in fields {
            if let Some(v) = v {
                self.origin(at, key.key(), v.span());
            }
        }
    }
}

fn whole<T: TryFrom<i64>>(v: &toml::Value, written: &str) -> Result<T, String> {
    match v.as_integer() {
        None => Err(format!("'{written}' is not a whole number")),
        Some(n) if n < 0 => Err(format!("'{written}' is below 0")),
        Some(n) => T::try_from(n).map_err(|_| format!("'{written}' is too large")),
    }
}

fn weight(v: &toml::Value, written: &str) -> Result<u32, String> {
    v.as_integer()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= super::MAX_WEIGHT)
        .ok_or_else(|| {
            format!(
                "'{written}' is not a whole number 0..={}",
                super::MAX_WEIGHT
            )
        })
}

fn boolean(v: &toml::Value, written: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("'{written}' is not true or false"))
}

fn string<'v>(v: &'v toml::Value, written: &str) -> Result<&'v str, String> {
    v.as_str()
        .ok_or_else(|| format!("'{written}' is not a string: write it in quotes"))
}

/// A string in the flags' syntax (`"5s"`), or a bare number of seconds as the flags take it.
fn duration(v: &toml::Value, written: &str) -> Result<std::time::Duration, String> {
    match v {
        toml::Value::String(s) => parse_duration(s),
        toml::Value::Integer(_) | toml::Value::Float(_) => parse_duration(written),
        _ => Err(format!(
            "'{written}' is not a duration: write e.g. \"500ms\", \"5s\", \"2m\", \"1h\""
        )),
    }
}

fn check(v: &toml::Value, written: &str) -> Result<Check, String> {
    string(v, written).and_then(Check::parse)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The key (`backend[1].weight`) at byte `at` of the document `root`: in each table, the entry
/// that starts last at or before `at`, down to a plain value. Entries are placed by where their
/// keys start, since a table's or array's own span may cover only its header.
fn key_at(root: &DeTable, at: usize) -> String {
    let mut path = String::new();
    let mut next = Some(root);
    let mut value: Option<&DeValue> = None;
    loop {
        let child = match (next.take(), value.take()) {
            (Some(table), _) | (None, Some(DeValue::Table(table))) => table
                .iter()
                .filter(|(k, _)| k.span().start <= at)
                .max_by_key(|(k, _)| k.span().start)
                .map(|(k, v)| {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k.get_ref());
                    v
                }),
            (None, Some(DeValue::Array(items))) => items
                .iter()
                .enumerate()
                .filter(|(_, v)| v.span().start <= at)
                .max_by_key(|(_, v)| v.span().start)
                .map(|(i, v)| {
                    let _ = write!(path, "[{i}]");
                    v
                }),
            _ => None,
        };
        match child {
            Some(v) => value = Some(v.get_ref()),
            None => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `Config::default()` with the file `text` (named wtgate.toml) applied, or every error.
    fn apply(text: &str) -> Result<(Config, Origins), Vec<String>> {
        let file = ConfigFile::parse("wtgate.toml", text.to_string())?;
        let mut cfg = Config::default();
        let applied = file.apply(&mut cfg);
        if applied.errors.is_empty() {
            Ok((cfg, applied.origins))
        } else {
            Err(applied.errors)
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match apply(text) {
            Ok((cfg, _)) => panic!("accepted: {cfg:?}"),
            Err(e) => e,
        }
    }

    /// The example with each commented-out key (`#key = …`) put back.
    fn example_with_every_key() -> String {
        let example = include_str!("../../wtgate.example.toml");
        let mut out = String::new();
        for line in example.lines() {
            let key = line.strip_prefix('#').filter(|rest| {
                rest.starts_with(|c: char| c.is_ascii_lowercase()) && rest.contains(" = ")
            });
            out.push_str(key.unwrap_or(line));
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_example_parses_and_validates_as_it_is() {
        let (cfg, _) = apply(include_str!("../../wtgate.example.toml")).unwrap();
        assert_eq!(cfg.listen, vec!["0.0.0.0:80".parse().unwrap()]);
        let prefixes: Vec<_> = cfg.backends.iter().map(|b| b.prefix.as_str()).collect();
        assert_eq!(prefixes, ["wt1", "wt2"]);
        assert_eq!(cfg.validate_all(), Default::default());
    }

    /// Every key the example shows is one the parser knows (it refuses unknown keys), every
    /// setting has a key in the example, and each default the example shows is the default.
    #[test]
    fn the_example_shows_every_key_with_its_default() {
        let text = example_with_every_key();
        let (mut cfg, origins) = apply(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        // An example certificate, which no listener of the example serves (that would warn).
        assert_eq!(cfg.tls.certs.len(), 1);
        cfg.tls.certs.clear();
        for s in Setting::ALL {
            assert!(
                origins.keys.contains_key(&s),
                "{s:?} ({}) is not in the example",
                s.key()
            );
        }
        assert_eq!(cfg.validate_all(), Default::default());
        // The keys without a default show an example value instead.
        assert_eq!(cfg.backends[0].check, Some(Check::Http("/health".into())));
        cfg.backends[0].check = None;
        assert_eq!(cfg.trusted_proxies.len(), 2);
        cfg.trusted_proxies.clear();
        assert_eq!(cfg.user.as_deref(), Some("nobody"));
        cfg.user = None;
        assert_eq!(cfg.admin, Some("127.0.0.1:8404".parse().unwrap()));
        assert_eq!(cfg.admin_token.as_deref(), Some("change-me"));
        (cfg.admin, cfg.admin_token) = (None, None);
        assert_eq!(
            cfg.access_log.as_deref(),
            Some("/var/log/wtgate/access.log")
        );
        cfg.access_log = None;
        let defaults = Config {
            listen: cfg.listen.clone(),
            backends: cfg.backends.clone(),
            ..Config::default()
        };
        assert_eq!(format!("{cfg:?}"), format!("{defaults:?}"));
        assert_eq!(cfg.backends[0].weight, BackendConfig::DEFAULT_WEIGHT);
        assert!(!cfg.listen[0].proxy_protocol);
    }

    #[test]
    fn sets_every_setting() {
        let text = r#"
threads = 2
pin = false
session_id_length = 20
access_log = "-"

[[listen]]
address = ":80"
[[listen]]
address = "[::1]:8443"
proxy_protocol = true

[[backend]]
prefix = "a1"
address = "localhost:9090"
weight = 3
check = "/up"

[timeouts]
connect = "250ms"
request_head = 3
client = 1.5
server = "2m"
tunnel = "2h"
keepalive = "30s"
pool_idle = "4s"

[limits]
maxconn = 10
retries = 5
max_head_bytes = 2048
max_headers = 20

[pool]
size = 7
reuse = "never"

[forwarded]
headers = false
trusted = ["10.1.2.3/8", "::1"]

[health]
check = "/health"
interval = "500ms"
rise = 4
fall = 5
"#;
        let (cfg, origins) = apply(text).unwrap();
        assert_eq!(
            (cfg.threads, cfg.pin, cfg.session_id_length),
            (2, false, 20)
        );
        assert_eq!(
            cfg.listen,
            vec![
                "0.0.0.0:80".parse().unwrap(),
                "[::1]:8443,proxy-protocol".parse().unwrap()
            ]
        );
        let b = &cfg.backends[0];
        assert_eq!(
            (b.prefix.as_str(), b.host.as_str(), b.weight),
            ("a1", "localhost:9090", 3)
        );
        assert!(b.addr.ip().is_loopback() && b.addr.port() == 9090, "{b:?}");
        assert_eq!(b.check, Some(Check::Http("/up".into())));
        let t = cfg.timeouts;
        let ms = Duration::from_millis;
        assert_eq!(
            [
                t.connect,
                t.request_head,
                t.client,
                t.server,
                t.tunnel,
                t.keepalive,
                t.pool_idle
            ],
            [
                ms(250),
                ms(3000),
                ms(1500),
                ms(120_000),
                ms(7_200_000),
                ms(30_000),
                ms(4000)
            ]
        );
        assert_eq!(
            (
                cfg.maxconn,
                cfg.retries,
                cfg.max_head_bytes,
                cfg.max_headers
            ),
            (10, 5, 2048, 20)
        );
        assert_eq!((cfg.pool_size, cfg.reuse), (7, Reuse::Never));
        assert!(!cfg.forwarded_headers);
        let nets: Vec<String> = cfg.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
        assert_eq!(cfg.check, Check::Http("/health".into()));
        assert_eq!((cfg.check_interval, cfg.rise, cfg.fall), (ms(500), 4, 5));
        assert_eq!(cfg.access_log.as_deref(), Some("-"));
        assert_eq!(origins.name(Setting::Maxconn), "limits.maxconn");
        assert_eq!(origins.name(Setting::Listen(1)), "listen[1].address");
        let fall = text.lines().position(|l| l == "fall = 5").unwrap() + 1;
        assert_eq!(origins.keys[&Setting::Fall].1, fall);
    }

    #[test]
    fn an_empty_file_leaves_the_defaults() {
        let (cfg, origins) = apply("# nothing set\n").unwrap();
        assert_eq!(format!("{cfg:?}"), format!("{:?}", Config::default()));
        assert!(origins.keys.is_empty());
        assert_eq!(origins.name(Setting::Maxconn), "--maxconn");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = errors("threads = 1\n\n[limits]\nmaxconn = 1\nmaxcon = 2\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("wtgate.toml:5: limits.maxcon: unknown field `maxcon`"),
            "{e:?}"
        );
        assert!(
            e[0].contains("`maxconn`"),
            "the known keys are listed: {e:?}"
        );

        let e = errors(
            "[[backend]]\nprefix = \"a\"\naddress = \"127.0.0.1:1\"\n\
             [[backend]]\nprefix = \"b\"\n\nwieght = 2\n",
        );
        assert!(
            e[0].starts_with("wtgate.toml:7: backend[1].wieght: unknown field"),
            "{e:?}"
        );

        let e = errors("treads = 1\n");
        assert!(
            e[0].starts_with("wtgate.toml:1: treads: unknown field `treads`"),
            "{e:?}"
        );
        let e = errors("threads = 1\n[timeuots]\nconnect = \"1s\"\n");
        assert!(
            e[0].starts_with("wtgate.toml:2: timeuots: unknown field"),
            "{e:?}"
        );
    }

    #[test]
    fn a_list_or_table_where_a_value_belongs_and_back_is_named() {
        let e = errors("[forwarded]\ntrusted = \"10.0.0.0/8\"\n");
        assert!(
            e[0].starts_with("wtgate.toml:2: forwarded.trusted: invalid type"),
            "{e:?}"
        );
        let e = errors("timeouts = \"5s\"\n");
        assert!(
            e[0].starts_with("wtgate.toml:1: timeouts: invalid type"),
            "{e:?}"
        );
    }

    #[test]
    fn every_syntax_error_is_reported_with_its_line() {
        let e = errors("threads = \n[limits\nmaxconn = 1\n");
        assert_eq!(
            e,
            [
                "wtgate.toml:1: string values must be quoted, expected literal string",
                "wtgate.toml:2: unclosed table, expected `]`"
            ]
        );
    }

    /// Every bad value at once, each at its line and key, in the words the flags use.
    #[test]
    fn every_bad_value_is_reported_at_once() {
        let e = errors(
            r#"threads = -1
pin = "yes"
[[listen]]
address = "::1:8080"
[[listen]]
address = "127.0.0.1:0"
proxy_protocol = 1
[[backend]]
prefix = "wt-1"
address = "127.0.0.1"
[[backend]]
prefix = "wt2"
address = "127.0.0.1:9091"
weight = "x"
check = "health"
[[backend]]
prefix = "wt3"
address = "127.0.0.1:9092"
weight = 1001
[timeouts]
connect = "5x"
server = true
[pool]
reuse = "sometimes"
[forwarded]
trusted = ["10.0.0.0/8", "proxy.local"]
"#,
        );
        let want = [
            "wtgate.toml:1: threads: '-1' is below 0",
            "wtgate.toml:2: pin: '\"yes\"' is not true or false",
            "wtgate.toml:4: listen[0].address: an IPv6 address needs brackets: write [::1]:8080",
            "wtgate.toml:6: listen[1].address: port 0 would be a port the kernel picks",
            "wtgate.toml:7: listen[1].proxy_protocol: '1' is not true or false",
            "wtgate.toml:9: backend[0].prefix: 'wt-1': a Wt session-id prefix may hold only",
            "wtgate.toml:10: backend[0].address: '127.0.0.1' has no port: write HOST:PORT",
            "wtgate.toml:14: backend[1].weight: '\"x\"' is not a whole number 0..=1000",
            "wtgate.toml:15: backend[1].check: check 'health' is neither 'tcp' nor",
            "wtgate.toml:19: backend[2].weight: '1001' is not a whole number 0..=1000",
            "wtgate.toml:21: timeouts.connect: '5x': unknown unit 'x'",
            "wtgate.toml:22: timeouts.server: 'true' is not a duration",
            "wtgate.toml:24: pool.reuse: 'sometimes': use safe, always or never",
            "wtgate.toml:26: forwarded.trusted[1]: 'proxy.local': not an IP address or a CIDR",
        ];
        for w in want {
            assert!(
                e.iter().any(|e| e.starts_with(w)),
                "no error {w:?} in {e:#?}"
            );
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn a_backend_or_listener_without_its_address_is_refused() {
        let e = errors("[[listen]]\nproxy_protocol = true\n[[backend]]\nprefix = \"wt1\"\n");
        assert!(
            e[0].starts_with("wtgate.toml:1: listen[0]: no address"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("wtgate.toml:3: backend[0]: a backend needs a prefix"),
            "{e:?}"
        );
    }

    /// `Config::validate_named` names the file's settings by key, and `Origins::locate` puts
    /// their line first; an entry that failed to parse shifts no later entry's key.
    #[test]
    fn validation_errors_name_the_key_and_line() {
        let file = ConfigFile::parse(
            "wtgate.toml",
            r#"[[listen]]
address = "bad"
[[listen]]
address = "0.0.0.0:80"
[[listen]]
address = "127.0.0.1:80"
[[backend]]
prefix = "wt1"
address = "127.0.0.1:9090"
[[backend]]
prefix = "wt1"
address = "127.0.0.1:9091"
[limits]
maxconn = 0
[timeouts]
pool_idle = "10s"
"#
            .to_string(),
        )
        .unwrap();
        let mut cfg = Config::default();
        let applied = file.apply(&mut cfg);
        assert_eq!(applied.errors.len(), 1, "{:?}", applied.errors);
        assert_eq!(
            (applied.listen, applied.backends),
            (Some(false), Some(true))
        );
        let o = &applied.origins;
        let r = cfg.validate_named(&|s| o.name(s));
        let errors: Vec<String> = r.errors.iter().map(|e| o.locate(e)).collect();
        for want in [
            "wtgate.toml:6: listen[1].address 0.0.0.0:80 and listen[2].address 127.0.0.1:80 \
             overlap",
            "wtgate.toml:11: prefix 'wt1' is given to two backends",
            "wtgate.toml:14: limits.maxconn must be at least 1",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(want)),
                "no {want:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), 3, "{errors:#?}");
        let warnings: Vec<String> = r.warnings.iter().map(|w| o.locate_warning(w)).collect();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("wtgate.toml:16: timeouts.pool_idle 10s is not below"),
            "{warnings:?}"
        );
    }

    /// A setting a flag has set since is named by the flag, without the file's line.
    #[test]
    fn a_forgotten_setting_is_named_by_its_flag() {
        let (mut cfg, mut origins) = apply("[limits]\nmaxconn = 0\nretries = 0\n").unwrap();
        origins.forget(|s| s == Setting::Retries);
        cfg.listen.push("127.0.0.1:80".parse().unwrap());
        cfg.backends
            .push(BackendConfig::parse("wt1=127.0.0.1:1").unwrap());
        let r = cfg.validate_named(&|s| origins.name(s));
        let errors: Vec<String> = r.errors.iter().map(|e| origins.locate(e)).collect();
        assert_eq!(
            errors,
            [
                "wtgate.toml:2: limits.maxconn must be at least 1",
                "--retries must be at least 1 (it counts connect attempts)"
            ]
        );
    }

    /// `watch` and `[admin] peers` are no `Config` settings, but are checked with the others; a
    /// bad one is an error at its line, for `wtgate check` as for `wtgate admin --config`.
    #[test]
    fn watch_and_the_admin_peers_are_read_and_checked() {
        let text = "watch = true\n[admin]\nlisten = \"0.0.0.0:8404\"\ntoken = \"t\"\n\
                    peers = [\"http://10.0.0.1:8404\", \"10.0.0.2:8404\"]\n";
        let file = ConfigFile::parse("wtgate.toml", text.to_string()).unwrap();
        assert!(file.watch());
        assert!(file.apply(&mut Config::default()).errors.is_empty());
        let peers = file.admin_peers().unwrap();
        assert_eq!(peers.peers, ["http://10.0.0.1:8404", "10.0.0.2:8404"]);
        assert_eq!(peers.listen, Some("0.0.0.0:8404".parse().unwrap()));
        assert_eq!(peers.token.as_deref(), Some("t"));
        let none = ConfigFile::parse("wtgate.toml", String::new()).unwrap();
        assert!(!none.watch());
        assert_eq!(none.admin_peers().unwrap(), AdminPeers::default());

        let bad = "watch = \"yes\"\n[admin]\npeers = [\"https://10.0.0.1:8404\", 3]\n";
        let file = ConfigFile::parse("wtgate.toml", bad.to_string()).unwrap();
        assert!(!file.watch());
        let e = file.apply(&mut Config::default()).errors;
        let want = [
            "wtgate.toml:1: watch: '\"yes\"' is not true or false",
            "wtgate.toml:3: admin.peers[0]: 'https://10.0.0.1:8404': the admin listener speaks \
             plain HTTP",
            "wtgate.toml:3: admin.peers[1]: '3' is not a string",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for (e, w) in e.iter().zip(want) {
            assert!(e.starts_with(w), "{e} is not {w}");
        }
        let e = file.admin_peers().unwrap_err();
        assert_eq!(e.len(), 2, "{e:#?}");
        let e = errors("[admin]\npeers = []\n");
        assert!(
            e[0].starts_with("wtgate.toml:2: admin.peers: an empty list"),
            "{e:?}"
        );
    }

    #[test]
    fn an_unreadable_file_is_one_error_naming_it() {
        let e = ConfigFile::load("/nonexistent/wtgate.toml").err().unwrap();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("--config /nonexistent/wtgate.toml: cannot read it: "),
            "{e:?}"
        );
    }
}
