//! Backend health, pure: each shard's own copy of every backend's state, the rise/fall rules of
//! active checks, and the messages shards gossip about state changes.
//!
//! Routing reads the copy of the shard it runs on, so no lock is ever taken on the hot path. A
//! state change travels as a [`Gossip`] message over the channels between shards (`net::mesh`);
//! the shard that checks a backend is the one that logs its changes, so each is logged once.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    /// Marked down, but this shard has since had an answer from it (a request tried there while
    /// nothing else could take it, or its own session's): the mark is stale. It serves its own
    /// sessions again at once; new sessions wait for `rise` good checks.
    pub alive: bool,
    /// Marked down because a connect was refused or reset: a restart, most likely, which ends
    /// when it listens again. Its sessions' requests try it first (once per `down_interval` per
    /// shard) rather than leave it. A timeout says nothing so quick: a frozen or unreachable
    /// server, whose sessions go elsewhere at once.
    pub refused: bool,
    /// Requests have waited on it for a while with no answer from it at all: frozen or stuck.
    /// It keeps its own sessions but gets new ones only when no other backend is ready.
    pub stalled: bool,
}

impl Default for BackendStatus {
    fn default() -> Self {
        BackendStatus {
            up: true,
            admin: Admin::Ready,
            removed: false,
            alive: false,
            refused: false,
            stalled: false,
        }
    }
}

impl BackendStatus {
    pub fn serves_own_sessions(&self) -> bool {
        (self.up || self.alive) && self.admin != Admin::Maint && !self.removed
    }

    pub fn takes_new_sessions(&self) -> bool {
        self.up && self.admin == Admin::Ready && !self.removed && !self.stalled
    }

    /// Down, but not on purpose: worth a try when nothing else can take a request.
    pub fn may_be_back(&self) -> bool {
        !self.up && self.admin != Admin::Maint && !self.removed
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
    /// The backend's fault: it refused, reset, or could not be reached in time. Anything else a
    /// connect can fail with (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, `EADDRNOTAVAIL`: no
    /// descriptor, buffer or local port left) is this machine's, and says nothing of the backend:
    /// it must not mark a healthy backend down.
    pub fn is_backend_fault(&self) -> bool {
        match self {
            FailReason::Os(e) => [
                libc::ECONNREFUSED,
                libc::ECONNRESET,
                libc::ECONNABORTED,
                libc::ETIMEDOUT,
                libc::EHOSTUNREACH,
                libc::ENETUNREACH,
                libc::EHOSTDOWN,
            ]
            .contains(e),
            _ => true,
        }
    }

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

impl Cause {
    /// The backend answered the connect with a refusal or a reset: it is not listening (yet).
    pub fn is_refusal(&self) -> bool {
        let reason = match self {
            Cause::ConnectFailed { reason, .. } | Cause::ChecksFailed { reason } => reason,
        };
        matches!(reason, FailReason::Os(e) if [libc::ECONNREFUSED, libc::ECONNRESET].contains(e))
    }
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
    /// Its host name now resolves to `addr` (its checker looked it up again): every shard
    /// connects there from now on, whatever its state.
    Moved {
        backend: usize,
        addr: SocketAddr,
    },
}

impl Gossip {
    pub fn backend(&self) -> usize {
        match *self {
            Gossip::Down { backend, .. }
            | Gossip::Up { backend, .. }
            | Gossip::Moved { backend, .. } => backend,
        }
    }
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
    /// When this shard may next try a request on a backend marked down (one try per
    /// `down_interval`: a backend that still refuses costs one failed connect per interval, not
    /// one per request).
    next_try: Vec<Option<Instant>>,
    /// Requests sent to each backend that wait for their first response byte, and since when
    /// it has given none (the first of them went out, or its last answer came).
    waiting: Vec<(u32, Option<Instant>)>,
}

impl Health {
    pub fn new(backends: usize) -> Health {
        Health {
            status: vec![BackendStatus::default(); backends],
            streak: vec![0; backends],
            next_try: vec![None; backends],
            waiting: vec![(0, None); backends],
        }
    }

    /// A request went out to `backend` at `now` and waits for its answer.
    pub fn sent(&mut self, backend: usize, now: Instant) {
        let (n, since) = &mut self.waiting[backend];
        if *n == 0 {
            *since = Some(now);
        }
        *n += 1;
    }

    /// A request sent to `backend` got its first response byte at `at`, or gave up without one.
    pub fn replied(&mut self, backend: usize, at: Option<Instant>) {
        let (n, since) = &mut self.waiting[backend];
        *n = n.saturating_sub(1);
        if let Some(at) = at {
            *since = Some(at);
            let s = &mut self.status[backend];
            s.stalled = false;
            // An answer from a backend marked down: the mark is stale (`BackendStatus::alive`).
            s.alive |= !s.up;
        }
    }

    /// Marks stalled the backends whose waiting requests have had no answer from them for
    /// `after`, and unmarks those with none waiting.
    pub fn find_stalls(&mut self, now: Instant, after: Duration) {
        for (s, (n, since)) in self.status.iter_mut().zip(&self.waiting) {
            s.stalled = *n > 0 && since.is_some_and(|t| now.saturating_duration_since(t) >= after);
        }
    }

    /// Whether this shard may try a request on `backend`, marked down, at `now`.
    pub fn may_try(&self, backend: usize, now: Instant) -> bool {
        self.next_try[backend].is_none_or(|at| now >= at)
    }

    /// A request is tried on `backend`, marked down, at `now`: the next may follow `every` later.
    pub fn tried(&mut self, backend: usize, now: Instant, every: Duration) {
        self.next_try[backend] = Some(now + every);
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
            self.next_try.resize(backends, None);
            self.waiting.resize(backends, (0, None));
        }
    }

    /// Forgets the checks counted toward a change: the checks start over (a reload changed them).
    pub fn reset_streak(&mut self, backend: usize) {
        self.streak[backend] = 0;
    }

    pub fn set_removed(&mut self, backend: usize, removed: bool) {
        self.status[backend].removed = removed;
    }

    /// Marks `backend` down for `cause`; true if it was up. It comes back only through `rise`
    /// good checks (for its own sessions, also through an answer: [`Health::replied`]).
    pub fn mark_down(&mut self, backend: usize, cause: Cause) -> bool {
        let s = &mut self.status[backend];
        let was_up = s.up;
        (s.up, s.alive, s.refused) = (false, false, cause.is_refusal());
        self.streak[backend] = 0;
        was_up
    }

    /// Marks `backend` up; true if it was down.
    pub fn mark_up(&mut self, backend: usize) -> bool {
        let s = &mut self.status[backend];
        let was_down = !s.up;
        (s.up, s.alive, s.refused) = (true, false, false);
        self.streak[backend] = 0;
        was_down
    }

    /// A request on a connection to `backend`, marked down, timed out or saw the connection close
    /// unanswered: the mark holds after all ([`BackendStatus::alive`]).
    pub fn unanswered(&mut self, backend: usize) {
        self.status[backend].alive = false;
    }

    /// Applies a message from another shard; true if it changed this shard's view.
    pub fn apply(&mut self, msg: Gossip) -> bool {
        match msg {
            Gossip::Down { backend, cause } => self.mark_down(backend, cause),
            Gossip::Up { backend, .. } => self.mark_up(backend),
            Gossip::Moved { .. } => false,
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

    const REFUSED: Cause = Cause::ConnectFailed {
        shard: 0,
        reason: FailReason::Os(libc::ECONNREFUSED),
    };

    #[test]
    fn passive_mark_down_needs_rise_checks_to_come_back() {
        let mut h = Health::new(2);
        assert!(h.mark_down(1, REFUSED));
        assert!(!h.mark_down(1, REFUSED));
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
        assert!(h.mark_down(0, REFUSED));
        assert!(!h.statuses()[0].up);
    }

    #[test]
    fn gossip_applies_and_a_down_mark_resets_the_rise() {
        let mut h = Health::new(1);
        h.mark_down(0, REFUSED);
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
