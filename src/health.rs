//! Backend health, pure: each shard's own copy of every backend's state, the rise/fall rules of
//! active checks, and the messages shards gossip about state changes.
//!
//! Routing reads the copy of the shard it runs on, so no lock is ever taken on the hot path. A
//! state change travels as a [`Gossip`] message over the channels between shards (`net::mesh`);
//! the shard that checks a backend is the one that logs its changes, so each is logged once.

use std::fmt;
use std::net::SocketAddr;

/// What the operator set for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admin {
    /// Normal service.
    #[default]
    Ready,
    /// Keeps serving its own sessions, gets no new ones (rolling Wt upgrades).
    Drain,
    /// No traffic at all; its sessions are redispatched.
    Maint,
}

impl Admin {
    pub fn as_str(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

/// Admin states set from outside the shards, by slot (`config::reload`). Shards compare
/// `generation` (one relaxed load per routing decision, a cache line written only when an
/// operator changes something) and copy the table when it moved, so the hot path never takes the
/// lock. A reload that adds a backend appends its state before any shard can route to it.
#[derive(Debug)]
pub struct AdminTable {
    pub generation: std::sync::atomic::AtomicU64,
    pub states: std::sync::Mutex<Vec<Admin>>,
}

impl AdminTable {
    pub fn new(backends: usize) -> AdminTable {
        AdminTable {
            generation: 0.into(),
            states: std::sync::Mutex::new(vec![Admin::Ready; backends]),
        }
    }
}

/// One backend as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStatus {
    pub up: bool,
    pub admin: Admin,
    /// Removed by a reload: its sessions go elsewhere, as in maintenance, for good.
    pub removed: bool,
}

impl Default for BackendStatus {
    fn default() -> Self {
        BackendStatus {
            up: true,
            admin: Admin::Ready,
            removed: false,
        }
    }
}

impl BackendStatus {
    pub fn serves_own_sessions(&self) -> bool {
        self.up && self.admin != Admin::Maint && !self.removed
    }

    pub fn takes_new_sessions(&self) -> bool {
        self.up && self.admin == Admin::Ready && !self.removed
    }
}

/// Why a connect or an active check failed. `Copy`, because it travels in gossip messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    TimedOut,
    /// The OS error of a connect, read or write (`ECONNREFUSED`, `ECONNRESET`, …).
    Os(i32),
    /// An HTTP check answered with a status outside 2xx/3xx.
    Status(u16),
    /// An HTTP check got bytes that are not an HTTP response.
    BadResponse,
    /// The connection closed before a whole response head.
    Closed,
}

impl FailReason {
    pub fn from_io(e: &std::io::Error) -> FailReason {
        match (e.kind(), e.raw_os_error()) {
            (std::io::ErrorKind::TimedOut, _) => FailReason::TimedOut,
            (_, Some(errno)) => FailReason::Os(errno),
            _ => FailReason::Closed,
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::TimedOut => f.write_str("timed out"),
            FailReason::Os(errno) => write!(f, "{}", std::io::Error::from_raw_os_error(*errno)),
            FailReason::Status(s) => write!(f, "answered status {s}"),
            FailReason::BadResponse => f.write_str("answered something that is not HTTP"),
            FailReason::Closed => f.write_str("closed the connection before answering"),
        }
    }
}

/// Why a backend went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A request's connect was refused, reset or timed out on some shard (passive check).
    ConnectFailed { shard: usize, reason: FailReason },
    /// `fall` active checks in a row failed; `reason` is the last one's.
    ChecksFailed { reason: FailReason },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::ConnectFailed { shard, reason } => {
                write!(f, "a request's connect on shard {shard}: {reason}")
            }
            Cause::ChecksFailed { reason } => write!(f, "active checks failed: {reason}"),
        }
    }
}

/// A state change, sent from the shard that saw it to every other shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gossip {
    Down {
        backend: usize,
        cause: Cause,
    },
    /// `addr`: where the checks that brought it back reached it (a host name may have moved).
    Up {
        backend: usize,
        addr: SocketAddr,
    },
}

/// A state change as another shard sends it: with the config generation that shard had applied,
/// so that news about a backend's old address, still on its way when a reload moved it, is not
/// taken for news about the new one.
#[derive(Debug, Clone, Copy)]
pub struct Heard {
    pub generation: u64,
    pub msg: Gossip,
}

/// A shard's view of all backends.
#[derive(Debug, Clone)]
pub struct Health {
    status: Vec<BackendStatus>,
    /// Consecutive good (while down) or failed (while up) active checks.
    streak: Vec<u32>,
}

impl Health {
    pub fn new(backends: usize) -> Health {
        Health {
            status: vec![BackendStatus::default(); backends],
            streak: vec![0; backends],
        }
    }

    pub fn statuses(&self) -> &[BackendStatus] {
        &self.status
    }

    /// Backends (slots) known.
    pub fn len(&self) -> usize {
        self.status.len()
    }

    pub fn is_empty(&self) -> bool {
        self.status.is_empty()
    }

    /// Makes room for `backends` slots; a new one starts up, as every backend does at start.
    pub fn grow(&mut self, backends: usize) {
        if backends > self.status.len() {
            self.status.resize(backends, BackendStatus::default());
            self.streak.resize(backends, 0);
        }
    }

    /// Forgets the checks counted toward a change: the checks start over (a reload changed them).
    pub fn reset_streak(&mut self, backend: usize) {
        self.streak[backend] = 0;
    }

    pub fn set_removed(&mut self, backend: usize, removed: bool) {
        self.status[backend].removed = removed;
    }

    /// Marks `backend` down; true if it was up. It comes back only through `rise` good checks.
    pub fn mark_down(&mut self, backend: usize) -> bool {
        let was_up = self.status[backend].up;
        self.status[backend].up = false;
        self.streak[backend] = 0;
        was_up
    }

    /// Marks `backend` up; true if it was down.
    pub fn mark_up(&mut self, backend: usize) -> bool {
        let was_down = !self.status[backend].up;
        self.status[backend].up = true;
        self.streak[backend] = 0;
        was_down
    }

    /// Applies a message from another shard; true if it changed this shard's view.
    pub fn apply(&mut self, msg: Gossip) -> bool {
        match msg {
            Gossip::Down { backend, .. } => self.mark_down(backend),
            Gossip::Up { backend, .. } => self.mark_up(backend),
        }
    }

    /// Counts one active check; returns the state `rise`/`fall` now calls for when it differs from
    /// the current one. The caller applies it (and tells the other shards).
    pub fn check_result(&mut self, backend: usize, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        let up = self.status[backend].up;
        let streak = &mut self.streak[backend];
        if ok == up {
            // An up backend answering, or a down one failing: the streak toward a flip restarts.
            *streak = 0;
            return None;
        }
        *streak += 1;
        (*streak >= if up { fall } else { rise }).then_some(!up)
    }

    pub fn set_admin(&mut self, backend: usize, admin: Admin) {
        self.status[backend].admin = admin;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_mark_down_needs_rise_checks_to_come_back() {
        let mut h = Health::new(2);
        assert!(h.mark_down(1));
        assert!(!h.mark_down(1));
        assert!(!h.statuses()[1].up && h.statuses()[0].up);
        assert_eq!(h.check_result(1, true, 2, 3), None);
        assert_eq!(
            h.check_result(1, false, 2, 3),
            None,
            "a failure restarts the rise"
        );
        assert_eq!(h.check_result(1, true, 2, 3), None);
        assert_eq!(h.check_result(1, true, 2, 3), Some(true));
        assert!(h.mark_up(1));
        assert!(h.statuses()[1].up);
    }

    #[test]
    fn fall_failed_checks_in_a_row_take_it_down() {
        let mut h = Health::new(1);
        assert_eq!(h.check_result(0, false, 2, 3), None);
        assert_eq!(h.check_result(0, false, 2, 3), None);
        assert_eq!(
            h.check_result(0, true, 2, 3),
            None,
            "a success restarts the fall"
        );
        for _ in 0..2 {
            assert_eq!(h.check_result(0, false, 2, 3), None);
        }
        assert_eq!(h.check_result(0, false, 2, 3), Some(false));
        assert!(h.mark_down(0));
        assert!(!h.statuses()[0].up);
    }

    #[test]
    fn gossip_applies_and_a_down_mark_resets_the_rise() {
        let mut h = Health::new(1);
        h.mark_down(0);
        h.check_result(0, true, 2, 3);
        let down = Gossip::Down {
            backend: 0,
            cause: Cause::ConnectFailed {
                shard: 1,
                reason: FailReason::TimedOut,
            },
        };
        assert!(!h.apply(down));
        assert_eq!(h.check_result(0, true, 2, 3), None, "streak was reset");
        let up = Gossip::Up {
            backend: 0,
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        assert!(h.apply(up));
        assert!(!h.apply(up));
    }

    #[test]
    fn admin_states() {
        let mut s = BackendStatus::default();
        assert!(s.serves_own_sessions() && s.takes_new_sessions());
        s.admin = Admin::Drain;
        assert!(s.serves_own_sessions() && !s.takes_new_sessions());
        s.admin = Admin::Maint;
        assert!(!s.serves_own_sessions() && !s.takes_new_sessions());
        s = BackendStatus {
            up: false,
            ..BackendStatus::default()
        };
        assert!(!s.serves_own_sessions() && !s.takes_new_sessions());
        s = BackendStatus {
            removed: true,
            ..BackendStatus::default()
        };
        assert!(!s.serves_own_sessions() && !s.takes_new_sessions());
    }
}
