//! Per-shard pool of idle keep-alive connections to backends, reused last-in first-out.
//!
//! LIFO keeps the hottest connections busy and lets the rest age out; a connection idle longer
//! than `pool_idle` is closed by us before the backend's own idle timeout (wthttpd: 10 s) can race
//! a request we send on it.
//!
//! A pooled connection earns its reuse by silence: a backend that sends anything while no request
//! is outstanding on it (a body after a `204`, `304` or `HEAD` answer, bytes past a
//! `Content-Length`, a whole extra response) would have those bytes read as the answer to the
//! next request, another user's. So every connection is looked at ([`Sock::quiet`], one
//! non-blocking peek) at the moment it is taken, and every pooled connection each time the shard
//! sweeps ([`Pool::watch`]); one that spoke is closed, never relayed nor reused, and reported to the
//! caller, who counts and logs it. Bytes that come in the same read as the end of a response are
//! caught before parking (`exchange`).

use std::time::{Duration, Instant};

use crate::net::{Quiet, Sock};

/// How many of a stray message's first bytes are peeked, for the log line that names it.
pub const STRAY_PEEK: usize = 48;

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

    /// The most recently parked live connection to `backend` that has stayed silent, if any.
    /// Connections found closed by the backend are dropped; any that spoke out of turn is closed
    /// and its first bytes handed to `stray`.
    pub fn take(
        &mut self,
        backend: usize,
        now: Instant,
        stray: &mut impl FnMut(&[u8]),
    ) -> Option<Sock> {
        let list = &mut self.idle[backend];
        let mut peek = [0u8; STRAY_PEEK];
        while let Some((sock, since)) = list.pop() {
            if now.duration_since(since) >= self.max_idle {
                continue;
            }
            if still_quiet(&sock, &mut peek, stray) {
                return Some(sock);
            }
        }
        None
    }

    /// Looks at every pooled connection: drops those the backend closed (their descriptors come
    /// back now, not at expiry) and closes those that spoke out of turn, handing `stray` their
    /// backend and first bytes.
    pub fn watch(&mut self, stray: &mut impl FnMut(usize, &[u8])) {
        let mut peek = [0u8; STRAY_PEEK];
        for (backend, list) in self.idle.iter_mut().enumerate() {
            let mut stray = |bytes: &[u8]| stray(backend, bytes);
            list.retain(|(sock, _)| still_quiet(sock, &mut peek, &mut stray));
        }
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

/// Whether a pooled connection may stay: it is open and the backend sent nothing. One that spoke
/// out of turn is closed, its first bytes (peeked into `peek`) handed to `stray`.
fn still_quiet(sock: &Sock, peek: &mut [u8], stray: &mut impl FnMut(&[u8])) -> bool {
    match sock.quiet(peek) {
        Quiet::Quiet => true,
        Quiet::Closed => false,
        Quiet::Spoke(n) => {
            sock.shutdown_both();
            stray(&peek[..n]);
            false
        }
    }
}
