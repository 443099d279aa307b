//! Hot reload, the engine's half: read the config again, work out the next generation
//! (`config::reload`), make room for new backends in the tables shared with the shards, publish
//! it, and wait until every shard has put it into effect (`Shard::apply_reload`). Open client
//! connections and tunnels are not touched: a shard changes its routing, health views, pool and
//! checks, never a connection in use.
//!
//! SIGHUP and `POST /reload` both come here, one reload at a time; each logs one line to stderr,
//! what changed or why nothing did.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::EngineHandle;
use crate::config::Config;
use crate::config::reload::{Changes, Generation, ReloadError};
use crate::health::Admin;

/// How long a reload waits for every shard to apply it (each looks every `shard::RELOAD_POLL`).
const APPLY_LIMIT: Duration = Duration::from_secs(5);

/// Where a reload reads the config again: the config and its warnings, or every error. `wtgate`
/// gives one that reads the `--config` file and applies the command line's flags over it, just as
/// at start.
pub type ConfigSource = Box<dyn Fn() -> Result<(Config, Vec<String>), Vec<String>> + Send + Sync>;

/// The engine's reload state.
#[derive(Default)]
pub(super) struct Reloads {
    source: Mutex<Option<ConfigSource>>,
    /// Held for the whole of a reload: one at a time.
    running: Mutex<()>,
    failed: AtomicU64,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The generation now in force (1 for the first reload).
    pub generation: u64,
    pub changes: Changes,
    /// What `Config::validate_all` warns about in the new config.
    pub warnings: Vec<String>,
    /// Shards that had not applied it when the wait ended (0 unless a shard is stuck); they will.
    pub pending_shards: usize,
}

impl EngineHandle {
    /// Where [`EngineHandle::reload`] reads the config; without one, a reload is refused.
    pub fn set_config_source(&self, source: ConfigSource) {
        *self
            .reloads
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Reads the config again from its source and puts it in force; logs what changed, or why
    /// nothing did (an invalid config changes nothing).
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        // Held from the read on, so that of two reloads at once the later read is the one in force.
        let _one_at_a_time = self.running();
        let read = {
            let source = self
                .reloads
                .source
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match source.as_ref() {
                Some(read) => read().map_err(ReloadError::Invalid),
                None => Err(ReloadError::NoSource),
            }
        };
        let done = read.and_then(|(cfg, warnings)| self.put_in_force(cfg, warnings));
        self.log(&done);
        done
    }

    /// Puts `cfg` in force, as [`EngineHandle::reload`] does with what it reads.
    pub fn reload_with(&self, cfg: Config) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.running();
        let warnings = cfg.validate_all().warnings;
        let warnings = warnings.iter().map(ToString::to_string).collect();
        let done = self.put_in_force(cfg, warnings);
        self.log(&done);
        done
    }

    fn running(&self) -> std::sync::MutexGuard<'_, ()> {
        let running = &self.reloads.running;
        running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reloads put in force on every shard since start, and reloads refused.
    pub fn reloads(&self) -> (u64, u64) {
        let failed = self.reloads.failed.load(Ordering::Relaxed);
        (self.live.applied_everywhere(), failed)
    }

    /// The reload proper; the caller holds `Reloads::running`.
    fn put_in_force(&self, cfg: Config, warnings: Vec<String>) -> Result<Reloaded, ReloadError> {
        if self.control.stopping() {
            return Err(ReloadError::Stopping);
        }
        if let Err(e) = cfg.validate() {
            return Err(ReloadError::Invalid(
                e.to_string().lines().map(String::from).collect(),
            ));
        }
        let tls = crate::tls::build(&cfg.tls).map_err(ReloadError::Invalid)?;
        let (mut next, mut changes) = self.live.current().next(&cfg)?;
        if tls.is_some() {
            changes.settings.push("tls certificates".into());
        }
        next.tls = tls;
        let number = next.number;
        self.admit(&next, &changes.added);
        self.live.publish(next);
        Ok(Reloaded {
            generation: number,
            changes,
            warnings,
            pending_shards: self.wait_applied(number),
        })
    }

    /// Admin states for the new slots, before any shard can route to them; a backend configured
    /// again after its removal starts over as ready.
    fn admit(&self, next: &Generation, added: &[String]) {
        let mut states = self.admin.states.lock().unwrap_or_else(|e| e.into_inner());
        for prefix in added {
            let back = next.slot(prefix);
            if let Some(state) = back.and_then(|i| states.get_mut(i)) {
                *state = Admin::Ready;
            }
        }
        let slots = next.slots.len().max(states.len());
        states.resize(slots, Admin::Ready);
        self.admin.generation.fetch_add(1, Ordering::Release);
    }

    /// Waits until every shard runs with generation `number`, for [`APPLY_LIMIT`] at most;
    /// returns how many do not yet.
    fn wait_applied(&self, number: u64) -> usize {
        let deadline = Instant::now() + APPLY_LIMIT;
        loop {
            let pending = self.live.pending(number);
            if pending == 0 || Instant::now() >= deadline || self.control.stopping() {
                return pending;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log(&self, done: &Result<Reloaded, ReloadError>) {
        match done {
            Ok(r) => {
                for w in &r.warnings {
                    eprintln!("wtgate: warning: {w}");
                }
                let late = match r.pending_shards {
                    0 => String::new(),
                    n => format!(" ({n} shard(s) had not applied it after {APPLY_LIMIT:?})"),
                };
                eprintln!("wtgate: reloaded: {}{late}", r.changes.summary());
            }
            Err(e) => {
                self.reloads.failed.fetch_add(1, Ordering::Relaxed);
                let mut lines = e.to_string().lines().map(String::from).collect::<Vec<_>>();
                let first = if lines.is_empty() {
                    String::new()
                } else {
                    lines.remove(0)
                };
                eprintln!("wtgate: reload refused, the running config stays: {first}");
                for line in lines {
                    eprintln!("wtgate: {line}");
                }
            }
        }
    }
}
