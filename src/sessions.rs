//! Live Wt sessions per backend, as wtgate sees them in the `wtd` of the requests it routes to
//! their owners — what HAProxy cannot know, and what a drain waits for. Pure: the caller gives the
//! time.
//!
//! Each shard keeps one table of the sessions it saw; a session whose requests came over several
//! client connections may be in several shards' tables, so tables are merged by id on request
//! ([`merge`]), never on the hot path. A session is live while it had a request within
//! `session_idle` (Wt's own session timeout, 600 s by default) or has an open WebSocket tunnel.
//!
//! Memory is bounded: an entry is a 64-bit hash of the id (Wt ids are 16 random characters from 62,
//! so two live sessions share a hash with odds of about n²/2⁶⁵), its owner, the second it was last
//! seen and its open tunnels: 16 bytes, about 20 with the hash table's own overhead. At `cap`
//! entries a table takes no new session until expiry makes room; those are counted as untracked.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// One shard's sessions.
#[derive(Debug)]
pub struct SessionTable {
    map: HashMap<u64, Entry, BuildHasherDefault<Prehashed>>,
    cap: usize,
    epoch: Instant,
    /// Sessions not recorded because the table was full.
    pub untracked: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: u16,
    tunnels: u16,
    /// Seconds since the table's epoch.
    last_seen: u32,
}

/// A session as merged across shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub owner: usize,
    pub last_seen: Instant,
    pub tunnels: u32,
}

impl SessionTable {
    pub fn new(cap: usize, epoch: Instant) -> SessionTable {
        SessionTable {
            map: HashMap::default(),
            cap,
            epoch,
            untracked: 0,
        }
    }

    /// A reload's new `max_sessions`; a table over it takes no new session until expiry makes room.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    fn secs(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch)
            .as_secs()
            .min(u64::from(u32::MAX)) as u32
    }

    /// A request of session `id` went to its owner.
    pub fn seen(&mut self, id: &[u8], owner: usize, now: Instant) {
        self.touch(id, owner, now, 0);
    }

    /// A WebSocket tunnel of session `id` opened to its owner: the session stays live until it
    /// closes ([`SessionTable::tunnel_closed`]).
    pub fn tunnel_opened(&mut self, id: &[u8], owner: usize, now: Instant) {
        self.touch(id, owner, now, 1);
    }

    pub fn tunnel_closed(&mut self, id: &[u8], now: Instant) {
        let last_seen = self.secs(now);
        if let Some(e) = self.map.get_mut(&hash_id(id)) {
            e.tunnels = e.tunnels.saturating_sub(1);
            e.last_seen = last_seen;
        }
    }

    fn touch(&mut self, id: &[u8], owner: usize, now: Instant, tunnels: u16) {
        let last_seen = self.secs(now);
        let full = self.map.len() >= self.cap;
        let key = hash_id(id);
        match self.map.get_mut(&key) {
            Some(e) => {
                e.owner = owner as u16;
                e.last_seen = last_seen;
                e.tunnels = e.tunnels.saturating_add(tunnels);
            }
            None if full => self.untracked += 1,
            None => {
                let owner = owner as u16;
                self.map.insert(
                    key,
                    Entry {
                        owner,
                        tunnels,
                        last_seen,
                    },
                );
            }
        }
    }

    /// Forgets sessions idle for `idle` or longer that have no open tunnel.
    pub fn expire(&mut self, now: Instant, idle: Duration) {
        let now = self.secs(now);
        let idle = idle.as_secs().min(u64::from(u32::MAX)) as u32;
        self.map
            .retain(|_, e| e.tunnels > 0 || now.saturating_sub(e.last_seen) < idle);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds this table's sessions into `into` (keyed by id hash): the latest sighting wins, open
    /// tunnels add up.
    pub fn merge_into(&self, into: &mut HashMap<u64, Session>) {
        for (&key, e) in &self.map {
            let last_seen = self.epoch + Duration::from_secs(u64::from(e.last_seen));
            let s = into.entry(key).or_insert(Session {
                owner: usize::from(e.owner),
                last_seen,
                tunnels: 0,
            });
            if last_seen >= s.last_seen {
                s.last_seen = last_seen;
                s.owner = usize::from(e.owner);
            }
            s.tunnels += u32::from(e.tunnels);
        }
    }
}

/// Live sessions of one backend, merged over every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendSessions {
    pub live: usize,
    /// Time since the latest request of any of its sessions (`None`: no live session).
    pub since_last: Option<Duration>,
}

/// Merges shard tables into per-backend counts of the sessions live at `now`.
pub fn merge<'a>(
    tables: impl IntoIterator<Item = &'a SessionTable>,
    backends: usize,
    now: Instant,
    idle: Duration,
) -> Vec<BackendSessions> {
    let mut all = HashMap::new();
    for t in tables {
        t.merge_into(&mut all);
    }
    let mut out = vec![BackendSessions::default(); backends];
    for s in all.values() {
        let ago = now.saturating_duration_since(s.last_seen);
        if (s.tunnels == 0 && ago >= idle) || s.owner >= backends {
            continue;
        }
        let b = &mut out[s.owner];
        b.live += 1;
        b.since_last = Some(b.since_last.map_or(ago, |d| d.min(ago)));
    }
    out
}

/// FNV-1a: the same id hashes alike on every shard, which the merge needs.
fn hash_id(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The table's keys are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(600);

    #[test]
    fn sessions_are_counted_once_per_backend_across_shards_and_expire() {
        let t0 = Instant::now();
        let (mut a, mut b) = (SessionTable::new(10, t0), SessionTable::new(10, t0));
        a.seen(b"wt1AAAAAAAAAAAAAAAA", 0, t0);
        b.seen(b"wt1AAAAAAAAAAAAAAAA", 0, t0 + Duration::from_secs(5));
        b.seen(b"wt1BBBBBBBBBBBBBBBB", 0, t0 + Duration::from_secs(2));
        a.seen(b"wt2CCCCCCCCCCCCCCCC", 1, t0 + Duration::from_secs(1));
        let now = t0 + Duration::from_secs(10);
        let m = merge([&a, &b], 2, now, IDLE);
        assert_eq!(m[0].live, 2);
        assert_eq!(m[0].since_last, Some(Duration::from_secs(5)));
        assert_eq!(m[1].live, 1);
        // Ten minutes after its last request, a session is gone.
        let later = t0 + Duration::from_secs(603);
        let m = merge([&a, &b], 2, later, IDLE);
        assert_eq!(m[0].live, 1, "the one seen at t0+5 s is still live");
        assert_eq!(m[1], BackendSessions::default());
        a.expire(later, IDLE);
        b.expire(later, IDLE);
        assert_eq!((a.len(), b.len()), (0, 1));
    }

    #[test]
    fn an_open_tunnel_keeps_its_session_live() {
        let t0 = Instant::now();
        let mut t = SessionTable::new(10, t0);
        t.tunnel_opened(b"wt1WSWSWSWSWSWSWSWS", 0, t0);
        let hour = t0 + Duration::from_secs(3600);
        assert_eq!(merge([&t], 1, hour, IDLE)[0].live, 1);
        t.expire(hour, IDLE);
        assert_eq!(t.len(), 1);
        t.tunnel_closed(b"wt1WSWSWSWSWSWSWSWS", hour);
        assert_eq!(
            merge([&t], 1, hour, IDLE)[0].live,
            1,
            "closing is a sighting"
        );
        let later = hour + IDLE;
        assert_eq!(merge([&t], 1, later, IDLE)[0].live, 0);
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_track() {
        let t0 = Instant::now();
        let mut t = SessionTable::new(2, t0);
        for id in [&b"wt1a"[..], b"wt1b", b"wt1c", b"wt1a"] {
            t.seen(id, 0, t0);
        }
        assert_eq!((t.len(), t.untracked), (2, 1));
    }
}
