//! Each shard's own copy of the backends' states, read by routing without any lock.
//!
//! A failed connect marks a backend down at once (passive check). Until active checks exist the
//! mark expires after `revive_after`, so the next request probes the backend again; the time is
//! passed in, which keeps this module pure and testable.

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

/// One backend as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStatus {
    pub up: bool,
    pub admin: Admin,
}

impl Default for BackendStatus {
    fn default() -> Self {
        BackendStatus {
            up: true,
            admin: Admin::Ready,
        }
    }
}

impl BackendStatus {
    pub fn serves_own_sessions(&self) -> bool {
        self.up && self.admin != Admin::Maint
    }

    pub fn takes_new_sessions(&self) -> bool {
        self.up && self.admin == Admin::Ready
    }
}

/// A shard's view of all backends.
#[derive(Debug)]
pub struct Health {
    status: Vec<BackendStatus>,
    down_since: Vec<Option<Instant>>,
    revive_after: Duration,
}

impl Health {
    pub fn new(backends: usize, revive_after: Duration) -> Health {
        Health {
            status: vec![BackendStatus::default(); backends],
            down_since: vec![None; backends],
            revive_after,
        }
    }

    /// The states to route with at `now`.
    pub fn statuses(&mut self, now: Instant) -> &[BackendStatus] {
        for (st, since) in self.status.iter_mut().zip(self.down_since.iter_mut()) {
            if let Some(t) = *since
                && now.duration_since(t) >= self.revive_after
            {
                st.up = true;
                *since = None;
            }
        }
        &self.status
    }

    /// A connect to `backend` failed. Returns true if this changed its state.
    pub fn mark_down(&mut self, backend: usize, now: Instant) -> bool {
        let was_up = self.status[backend].up;
        self.status[backend].up = false;
        self.down_since[backend] = Some(now);
        was_up
    }

    pub fn is_up(&self, backend: usize) -> bool {
        self.status[backend].up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_down_then_revive() {
        let t0 = Instant::now();
        let mut h = Health::new(2, Duration::from_secs(2));
        assert!(h.mark_down(1, t0));
        assert!(!h.mark_down(1, t0));
        assert!(!h.statuses(t0 + Duration::from_secs(1))[1].up);
        assert!(h.statuses(t0 + Duration::from_secs(1))[0].up);
        assert!(h.statuses(t0 + Duration::from_secs(2))[1].up);
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
            admin: Admin::Ready,
        };
        assert!(!s.serves_own_sessions() && !s.takes_new_sessions());
    }
}
