//! Per-shard pool of idle keep-alive connections to backends, reused last-in first-out.
//!
//! LIFO keeps the hottest connections busy and lets the rest age out; a connection idle longer
//! than `pool_idle` is closed by us before the backend's own idle timeout (wthttpd: 10 s) can race
//! a request we send on it.

use std::time::{Duration, Instant};

use crate::net::Sock;

/// Idle time after which a pooled connection is probed before reuse.
const PROBE_AFTER: Duration = Duration::from_secs(1);

pub struct Pool {
    idle: Vec<Vec<(Sock, Instant)>>,
    max_per_backend: usize,
    max_idle: Duration,
}

impl Pool {
    pub fn new(backends: usize, max_per_backend: usize, max_idle: Duration) -> Pool {
        Pool {
            idle: (0..backends).map(|_| Vec::new()).collect(),
            max_per_backend,
            max_idle,
        }
    }

    /// The most recently parked live connection to `backend`, if any.
    ///
    /// A connection parked for a while is first probed (one non-blocking peek) in case the backend
    /// closed it; one parked moments ago is not, as no backend idle timer can have fired on it, and
    /// that saves a syscall per request under load. A backend crash is left to the resend of safe
    /// requests.
    pub fn take(&mut self, backend: usize, now: Instant) -> Option<Sock> {
        let list = &mut self.idle[backend];
        while let Some((sock, since)) = list.pop() {
            let idle = now.duration_since(since);
            if idle < self.max_idle && (idle < PROBE_AFTER || sock.is_idle_and_open()) {
                return Some(sock);
            }
        }
        None
    }

    /// Parks a connection whose last response ended cleanly.
    pub fn put(&mut self, backend: usize, sock: Sock, now: Instant) {
        let list = &mut self.idle[backend];
        if list.len() < self.max_per_backend {
            list.push((sock, now));
        }
    }

    /// Makes room for `backends` backends (a reload added some).
    pub fn grow(&mut self, backends: usize) {
        if backends > self.idle.len() {
            self.idle.resize_with(backends, Vec::new);
        }
    }

    /// Backends (slots) it has room for.
    pub fn backends(&self) -> usize {
        self.idle.len()
    }

    /// New limits from a reload; connections over them leave as they expire or are taken.
    pub fn set_limits(&mut self, max_per_backend: usize, max_idle: Duration) {
        self.max_per_backend = max_per_backend;
        self.max_idle = max_idle;
    }

    /// Idle connections to `backend` held now.
    pub fn idle_count(&self, backend: usize) -> usize {
        self.idle[backend].len()
    }

    /// Drops every connection idle for too long (oldest are at the front).
    pub fn expire(&mut self, now: Instant) {
        for list in &mut self.idle {
            let stale = list
                .iter()
                .take_while(|(_, since)| now.duration_since(*since) >= self.max_idle)
                .count();
            list.drain(..stale);
        }
    }

    /// Closes every pooled connection (the shard is stopping).
    pub fn clear_all(&mut self) {
        for list in &mut self.idle {
            for (sock, _) in list.drain(..) {
                sock.shutdown_both();
            }
        }
    }

    /// Forgets every connection to a backend that went down.
    pub fn clear(&mut self, backend: usize) {
        self.idle[backend].clear();
    }

    /// Closes every idle connection to `backend`: a reload removed it or moved it elsewhere.
    pub fn close(&mut self, backend: usize) {
        for (sock, _) in self.idle[backend].drain(..) {
            sock.shutdown_both();
        }
    }
}
