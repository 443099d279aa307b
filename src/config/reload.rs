//! Hot reload, the pure half: what a re-read config changes in the running one.
//!
//! Every backend has a **slot**, keyed by its prefix: its index in every per-backend table (the
//! shards' routers, health views, pools and counters, the admin states, the session tables). A
//! reload that keeps a prefix keeps its slot, so its counters, sessions and admin state carry on
//! and its address, weight or check change in place; a new prefix takes the next slot; a removed
//! one keeps its slot, marked removed: nothing is routed to it, while the tunnels and exchanges
//! already under way, which hold its index, run to their end. Slots are never reused, so no index
//! held anywhere can come to mean another backend.
//!
//! A reload applies the backends and the settings around them (health checks, pool, sessions,
//! grace) and the proxy-side ones (timeouts, retries, reuse, forwarded headers and trusted
//! proxies), which each request and connection takes as it starts (`Shard::settings`); the
//! settings a running engine cannot change — its sockets, threads, identity, admin listener,
//! maxconn and the head limits its read buffers were sized for — stay as they are, and the reload
//! says that they need a restart. The engine's half is `engine/reload.rs`, the shards' is
//! `Shard::apply_reload`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{BackendConfig, Check, Config, Setting};

/// Backend slots one process can have: every distinct prefix configured since start takes one.
/// Per-backend counters are allocated for this many up front (about 160 bytes each per shard),
/// so that the shards index them without a lock while a reload adds backends.
pub const MAX_SLOTS: usize = 256;

/// One backend's place in the per-backend tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// As last configured (a removed backend's as it was when removed).
    pub backend: BackendConfig,
    /// Removed by a reload: no request is routed to it; what was under way runs to its end.
    pub removed: bool,
}

/// A config in force, with its backend slots.
#[derive(Debug)]
pub struct Generation {
    /// 0 at start, one more for each reload.
    pub number: u64,
    /// The settings in force: the last reload's, except those that need a restart, which stay
    /// as the engine started with them. `backends` holds the configured ones, in the file's order.
    pub cfg: Arc<Config>,
    /// By slot: every backend configured since start.
    pub slots: Vec<Slot>,
    /// What the `tls` listeners serve (certificates read at start or by this reload); `None`
    /// without certificates.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// What an active check of one slot does; a change restarts its check loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub addr: std::net::SocketAddr,
    pub host: String,
    pub check: Check,
    pub interval: Duration,
    /// The interval while the backend is down or failing.
    pub down_interval: Duration,
    pub limit: Duration,
}

impl Generation {
    /// The generation an engine starts with: one slot per backend, in order.
    pub fn first(cfg: Config) -> Generation {
        let slots = cfg
            .backends
            .iter()
            .map(|b| Slot {
                backend: b.clone(),
                removed: false,
            })
            .collect();
        Generation {
            number: 0,
            cfg: Arc::new(cfg),
            slots,
            tls: None,
        }
    }

    /// The slot of the configured (not removed) backend with this prefix.
    pub fn slot(&self, prefix: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| !s.removed && s.backend.prefix == prefix)
    }

    /// The configured backends' prefixes, in slot order.
    pub fn prefixes(&self) -> Vec<&str> {
        let live = self.slots.iter().filter(|s| !s.removed);
        live.map(|s| s.backend.prefix.as_str()).collect()
    }

    /// How slot `i` is checked, or `None` if it is not (removed, or not there yet).
    pub fn probe(&self, i: usize) -> Option<Probe> {
        let s = self.slots.get(i).filter(|s| !s.removed)?;
        let b = &s.backend;
        Some(Probe {
            addr: b.addr,
            host: b.host.clone(),
            check: b.check.clone().unwrap_or_else(|| self.cfg.check.clone()),
            interval: self.cfg.check_interval,
            down_interval: self.cfg.down_interval,
            // HAProxy's default too: a check that takes longer than the interval has failed, so
            // that a frozen server (it accepts, never answers) is out within `fall` intervals.
            limit: self.cfg.timeouts.connect.min(self.cfg.check_interval),
        })
    }

    /// The generation that `new` (valid, as `Config::validate` checks) makes of this one, and what
    /// changed.
    pub fn next(&self, new: &Config) -> Result<(Generation, Changes), ReloadError> {
        let mut changes = Changes::default();
        let mut slots = self.slots.clone();
        for b in &new.backends {
            match slots.iter().position(|s| s.backend.prefix == b.prefix) {
                Some(i) => {
                    let s = &mut slots[i];
                    if s.removed {
                        changes.added.push(b.prefix.clone());
                    } else if let what @ [_, ..] = &backend_changes(&s.backend, b)[..] {
                        changes.changed.push((b.prefix.clone(), what.to_vec()));
                    }
                    *s = Slot {
                        backend: b.clone(),
                        removed: false,
                    };
                }
                None if slots.len() >= MAX_SLOTS => return Err(ReloadError::TooManySlots),
                None => {
                    changes.added.push(b.prefix.clone());
                    slots.push(Slot {
                        backend: b.clone(),
                        removed: false,
                    });
                }
            }
        }
        for s in slots.iter_mut().filter(|s| !s.removed) {
            if !new.backends.iter().any(|b| b.prefix == s.backend.prefix) {
                s.removed = true;
                changes.removed.push(s.backend.prefix.clone());
            }
        }
        let cfg = in_force(&self.cfg, new, &mut changes);
        let next = Generation {
            number: self.number + 1,
            cfg: Arc::new(cfg),
            slots,
            tls: self.tls.clone(),
        };
        Ok((next, changes))
    }
}

/// What differs between two configurations of one backend, in words.
fn backend_changes(old: &BackendConfig, new: &BackendConfig) -> Vec<String> {
    let mut what = Vec::new();
    if old.host != new.host || old.addr != new.addr {
        what.push(format!("address {} -> {}", old.host, new.host));
    }
    if old.weight != new.weight {
        what.push(format!("weight {} -> {}", old.weight, new.weight));
    }
    if old.check != new.check {
        let show = |c: &Option<Check>| c.as_ref().map_or("the global one".into(), Check::to_string);
        what.push(format!(
            "check {} -> {}",
            show(&old.check),
            show(&new.check)
        ));
    }
    what
}

/// The settings to run with: `new`'s backends and the settings a running engine can change, the
/// others as `running` has them. Notes both kinds of change in `changes`.
fn in_force(running: &Config, new: &Config, changes: &mut Changes) -> Config {
    let mut cfg = running.clone();
    cfg.backends = new.backends.clone();
    changes.settings = names(&live(running, new));
    cfg.session_id_length = new.session_id_length;
    cfg.session_idle = new.session_idle;
    cfg.max_sessions = new.max_sessions;
    cfg.grace = new.grace;
    cfg.pool_size = new.pool_size;
    cfg.reuse = new.reuse;
    // Each tunnel takes it from the shard's generation as it opens.
    cfg.splice = new.splice;
    // Every timeout: each request, connection and tunnel takes them from the shard's generation
    // as it starts using them (`Shard::settings`).
    cfg.timeouts = new.timeouts;
    cfg.retries = new.retries;
    cfg.forwarded_headers = new.forwarded_headers;
    cfg.trusted_proxies = new.trusted_proxies.clone();
    cfg.check = new.check.clone();
    // Read again by every reload (`EngineHandle::reload`), changed paths or not.
    cfg.tls = new.tls.clone();
    cfg.check_interval = new.check_interval;
    cfg.down_interval = new.down_interval;
    cfg.rise = new.rise;
    cfg.fall = new.fall;
    changes.need_restart = restart_only(&cfg, new);
    cfg
}

/// The settings a reload applies, each flagged when it differs between `running` and `new`.
fn live(running: &Config, new: &Config) -> [(Setting, bool); 23] {
    let (a, b) = (running, new);
    let (t, u) = (&a.timeouts, &b.timeouts);
    [
        (
            Setting::SessionIdLength,
            a.session_id_length != b.session_id_length,
        ),
        (Setting::SessionIdle, a.session_idle != b.session_idle),
        (Setting::MaxSessions, a.max_sessions != b.max_sessions),
        (Setting::Grace, a.grace != b.grace),
        (Setting::PoolSize, a.pool_size != b.pool_size),
        (Setting::PoolIdleTimeout, t.pool_idle != u.pool_idle),
        (Setting::Reuse, a.reuse != b.reuse),
        (Setting::Splice, a.splice != b.splice),
        (Setting::ConnectTimeout, t.connect != u.connect),
        (
            Setting::RequestHeadTimeout,
            t.request_head != u.request_head,
        ),
        (Setting::ClientTimeout, t.client != u.client),
        (Setting::ServerTimeout, t.server != u.server),
        (Setting::TunnelTimeout, t.tunnel != u.tunnel),
        (Setting::KeepaliveTimeout, t.keepalive != u.keepalive),
        (Setting::QueueTimeout, t.queue != u.queue),
        (Setting::Retries, a.retries != b.retries),
        (
            Setting::ForwardedHeaders,
            a.forwarded_headers != b.forwarded_headers,
        ),
        (
            Setting::TrustForwardedFrom(0),
            a.trusted_proxies != b.trusted_proxies,
        ),
        (Setting::Check, a.check != b.check),
        (Setting::CheckInterval, a.check_interval != b.check_interval),
        (Setting::DownInterval, a.down_interval != b.down_interval),
        (Setting::Rise, a.rise != b.rise),
        (Setting::Fall, a.fall != b.fall),
    ]
}

/// The settings that differ between `kept` (what runs) and `new`: each needs a restart. They are
/// bound to sockets or threads (listeners, threads, pin, user, admin listener and its token, the
/// access log's file and writer), or sized once at start (maxconn's permits, the head limits'
/// read buffers).
fn restart_only(kept: &Config, new: &Config) -> Vec<String> {
    let named = [
        (Setting::Listen(0), kept.listen != new.listen),
        (Setting::Threads, kept.threads != new.threads),
        (Setting::Pin, kept.pin != new.pin),
        (Setting::User, kept.user != new.user),
        (Setting::Admin, kept.admin != new.admin),
        (Setting::AdminToken, kept.admin_token != new.admin_token),
        (Setting::Maxconn, kept.maxconn != new.maxconn),
        (
            Setting::MaxHeadBytes,
            kept.max_head_bytes != new.max_head_bytes,
        ),
        (Setting::MaxHeaders, kept.max_headers != new.max_headers),
        (Setting::AccessLog, kept.access_log != new.access_log),
    ];
    let mut need = names(&named);
    // A setting added to `Config` but to neither list above still shows, unnamed: it is kept
    // as it runs, which is right for anything nobody taught a reload to change.
    if need.is_empty() && format!("{kept:?}") != format!("{new:?}") {
        need.push("other settings".into());
    }
    need
}

/// The keys of the settings flagged true; a list by its name alone (`listen`, not `listen[0]`).
fn names(flagged: &[(Setting, bool)]) -> Vec<String> {
    let key = |s: Setting| match s {
        Setting::Listen(_) => "listen".to_string(),
        Setting::TrustForwardedFrom(_) => "forwarded.trusted".to_string(),
        s => s.key(),
    };
    flagged.iter().filter(|f| f.1).map(|f| key(f.0)).collect()
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// New prefixes, or removed ones configured again.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Kept backends whose address, weight or check changed, with what changed.
    pub changed: Vec<(String, Vec<String>)>,
    /// Other settings now in force, by their config file keys.
    pub settings: Vec<String>,
    /// Settings the file changed that only a restart applies: they stay as they run.
    pub need_restart: Vec<String>,
}

impl Changes {
    /// One line: `added wt3; removed wt2; wt1: weight 1 -> 3; applied health.interval`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added {}", self.added.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        for (prefix, what) in &self.changed {
            parts.push(format!("{prefix}: {}", what.join(", ")));
        }
        if !self.settings.is_empty() {
            parts.push(format!("applied {}", self.settings.join(", ")));
        }
        if !self.need_restart.is_empty() {
            let them = if self.need_restart.len() == 1 {
                "it"
            } else {
                "them"
            };
            parts.push(format!(
                "kept {} as running (changing {them} needs a restart)",
                self.need_restart.join(", ")
            ));
        }
        if parts.is_empty() {
            return "no change".into();
        }
        parts.join("; ")
    }
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The engine was started from flags alone: there is no file to read again.
    NoSource,
    /// The config read is not valid: every error, each naming its key and line.
    Invalid(Vec<String>),
    /// More distinct prefixes since start than [`MAX_SLOTS`].
    TooManySlots,
    /// The engine is stopping.
    Stopping,
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NoSource => {
                f.write_str("nothing to reload: wtgate was started without --config")
            }
            ReloadError::Invalid(errors) => f.write_str(&errors.join("\n")),
            ReloadError::TooManySlots => write!(
                f,
                "more than {MAX_SLOTS} distinct backend prefixes since start: restart wtgate to \
                 add more"
            ),
            ReloadError::Stopping => f.write_str("wtgate is stopping"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// The generation in force, shared by the engine and its shards. A reload publishes a new one
/// (off the shards); each shard looks at `number` from a periodic task of its own, takes the
/// generation under the lock when it moved, applies it on its own thread and says so in
/// `applied`. The routing path never looks here.
#[derive(Debug)]
pub struct Live {
    current: Mutex<Arc<Generation>>,
    number: AtomicU64,
    /// By shard: the generation it applied last.
    applied: Vec<AtomicU64>,
}

impl Live {
    pub fn new(first: Generation, shards: usize) -> Live {
        Live {
            number: AtomicU64::new(first.number),
            current: Mutex::new(Arc::new(first)),
            applied: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The number of the generation in force: a shard compares it with its own.
    pub fn number(&self) -> u64 {
        self.number.load(Ordering::Acquire)
    }

    pub fn publish(&self, next: Generation) {
        let number = next.number;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.number.store(number, Ordering::Release);
    }

    /// Shard `shard` runs with generation `number` now.
    pub fn applied(&self, shard: usize, number: u64) {
        self.applied[shard].store(number, Ordering::Release);
    }

    /// Shards that do not run with generation `number` (or a newer one) yet.
    pub fn pending(&self, number: u64) -> usize {
        let behind = self
            .applied
            .iter()
            .filter(|a| a.load(Ordering::Acquire) < number);
        behind.count()
    }

    /// The newest generation every shard runs with.
    pub fn applied_everywhere(&self) -> u64 {
        let each = self.applied.iter().map(|a| a.load(Ordering::Acquire));
        each.min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(specs: &[&str]) -> Config {
        Config {
            listen: vec!["127.0.0.1:80".parse().unwrap()],
            backends: specs
                .iter()
                .map(|s| BackendConfig::parse(s).unwrap())
                .collect(),
            ..Config::default()
        }
    }

    fn prefixes(g: &Generation) -> Vec<(&str, bool)> {
        let slots = g.slots.iter();
        slots
            .map(|s| (s.backend.prefix.as_str(), s.removed))
            .collect()
    }

    #[test]
    fn a_kept_prefix_keeps_its_slot_and_a_new_one_appends() {
        let g = Generation::first(cfg(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]));
        let new = cfg(&[
            "wt3=127.0.0.1:3",
            "wt2=127.0.0.1:2,weight=3",
            "wt1=127.0.0.1:4",
        ]);
        let (g2, c) = g.next(&new).unwrap();
        assert_eq!(g2.number, 1);
        assert_eq!(
            prefixes(&g2),
            [("wt1", false), ("wt2", false), ("wt3", false)]
        );
        assert_eq!(c.added, ["wt3"]);
        assert!(c.removed.is_empty());
        assert_eq!(
            c.changed,
            [
                ("wt2".to_string(), vec!["weight 1 -> 3".to_string()]),
                (
                    "wt1".to_string(),
                    vec!["address 127.0.0.1:1 -> 127.0.0.1:4".to_string()]
                )
            ]
        );
        assert_eq!(g2.slots[0].backend.addr, "127.0.0.1:4".parse().unwrap());
        assert_eq!(g2.slot("wt3"), Some(2));
        assert_eq!(
            g2.cfg.backends, new.backends,
            "the file's order, for messages"
        );
    }

    #[test]
    fn a_removed_prefix_keeps_its_slot_and_comes_back_to_it() {
        let g = Generation::first(cfg(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]));
        let (g, c) = g.next(&cfg(&["wt1=127.0.0.1:1"])).unwrap();
        assert_eq!(c.removed, ["wt2"]);
        assert_eq!(prefixes(&g), [("wt1", false), ("wt2", true)]);
        assert_eq!(g.slot("wt2"), None);
        assert_eq!(g.prefixes(), ["wt1"]);
        assert_eq!(g.probe(1), None, "a removed backend is not checked");
        let (g, c) = g
            .next(&cfg(&["wt2=127.0.0.1:5", "wt1=127.0.0.1:1"]))
            .unwrap();
        assert_eq!(c.added, ["wt2"]);
        assert!(c.changed.is_empty(), "{c:?}");
        assert_eq!(prefixes(&g), [("wt1", false), ("wt2", false)]);
        assert_eq!(g.probe(1).unwrap().addr, "127.0.0.1:5".parse().unwrap());
        assert_eq!(c.summary(), "added wt2");
    }

    #[test]
    fn settings_that_need_a_restart_stay_and_are_named() {
        let old = cfg(&["wt1=127.0.0.1:1"]);
        let g = Generation::first(old.clone());
        let mut new = old.clone();
        new.listen = vec!["127.0.0.1:81".parse().unwrap()];
        new.threads = 7;
        new.max_headers = 10;
        new.access_log = Some("/var/log/wtgate/access.log".into());
        new.check_interval = Duration::from_millis(100);
        new.rise = 5;
        new.check = Check::Http("/up".into());
        new.timeouts.pool_idle = Duration::from_secs(2);
        let (g, c) = g.next(&new).unwrap();
        assert_eq!(
            c.need_restart,
            ["listen", "threads", "limits.max_headers", "access_log"]
        );
        assert_eq!(
            c.settings,
            [
                "timeouts.pool_idle",
                "health.check",
                "health.interval",
                "health.rise"
            ]
        );
        assert_eq!(
            (g.cfg.listen.clone(), g.cfg.threads, g.cfg.max_headers),
            (old.listen, old.threads, old.max_headers)
        );
        assert_eq!(g.cfg.rise, 5);
        let p = g.probe(0).unwrap();
        assert_eq!(
            (p.check, p.interval),
            (Check::Http("/up".into()), new.check_interval)
        );
        let s = c.summary();
        assert!(
            s.starts_with("applied timeouts.pool_idle, health.check"),
            "{s}"
        );
        assert!(
            s.ends_with(
                "kept listen, threads, limits.max_headers, access_log as running (changing them \
                 needs a restart)"
            ),
            "{s}"
        );
    }

    #[test]
    fn the_proxy_side_settings_are_applied() {
        let old = cfg(&["wt1=127.0.0.1:1"]);
        let g = Generation::first(old.clone());
        let mut new = old.clone();
        new.timeouts.connect = Duration::from_millis(300);
        new.timeouts.request_head = Duration::from_secs(3);
        new.timeouts.client = Duration::from_secs(4);
        new.timeouts.server = Duration::from_secs(5);
        new.timeouts.tunnel = Duration::from_secs(6);
        new.timeouts.keepalive = Duration::from_secs(7);
        new.retries = 1;
        new.reuse = crate::config::Reuse::Never;
        new.forwarded_headers = false;
        new.trusted_proxies = vec![crate::config::parse_cidr("10.0.0.0/8").unwrap()];
        let (g, c) = g.next(&new).unwrap();
        assert!(c.need_restart.is_empty(), "{c:?}");
        assert_eq!(
            c.settings,
            [
                "pool.reuse",
                "timeouts.connect",
                "timeouts.request_head",
                "timeouts.client",
                "timeouts.server",
                "timeouts.tunnel",
                "timeouts.keepalive",
                "limits.retries",
                "forwarded.headers",
                "forwarded.trusted"
            ]
        );
        assert_eq!(g.cfg.proxy_settings(), new.proxy_settings());
        assert!(g.cfg.trusts("10.1.2.3".parse().unwrap()));
        assert_eq!(g.probe(0).unwrap().limit, new.timeouts.connect);
        assert_eq!(format!("{:?}", g.cfg), format!("{new:?}"));
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let c = cfg(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2,check=/health"]);
        let g = Generation::first(c.clone());
        let (g2, changes) = g.next(&c).unwrap();
        assert_eq!(changes, Changes::default());
        assert_eq!(changes.summary(), "no change");
        assert_eq!(g2.slots, g.slots);
        assert_eq!(format!("{:?}", g2.cfg), format!("{:?}", g.cfg));
    }

    #[test]
    fn slots_are_bounded() {
        let mut g = Generation::first(cfg(&["a0=127.0.0.1:1"]));
        for i in 1..MAX_SLOTS {
            let spec = format!("a{i}=127.0.0.1:{}", i + 1);
            g = g.next(&cfg(&[&spec])).unwrap().0;
        }
        assert_eq!(g.slots.len(), MAX_SLOTS);
        let e = g.next(&cfg(&["b=127.0.0.1:1"])).unwrap_err();
        assert_eq!(e, ReloadError::TooManySlots);
        assert!(e.to_string().contains("restart"), "{e}");
        // A prefix seen before needs no new slot.
        assert!(g.next(&cfg(&["a7=127.0.0.1:1"])).is_ok());
    }

    #[test]
    fn every_shard_must_apply_a_generation() {
        let live = Live::new(Generation::first(cfg(&["wt1=127.0.0.1:1"])), 2);
        let (g, _) = live.current().next(&cfg(&["wt2=127.0.0.1:2"])).unwrap();
        live.publish(g);
        assert_eq!((live.number(), live.current().number), (1, 1));
        live.applied(0, 1);
        assert_eq!(live.applied_everywhere(), 0);
        live.applied(1, 1);
        assert_eq!(live.applied_everywhere(), 1);
    }
}
