//! Live Wt sessions per backend, as wtgate sees them in the `wtd` of the requests it routes to
//! their owners — what HAProxy cannot know, and what a drain waits for. Pure: the caller gives the
//! time.
//!
//! **Live means live.** A request merely naming an id proves nothing: anyone can make one up, an
//! old bookmark or a crawler keeps one after its session ended, and Wt answers an id it does not
//! know with `200` all the same — a page for a new session (a plain GET), a script that reloads
//! the page without the id (`request=script`, a `jsupdate` POST); only a WebSocket upgrade of an
//! unknown id gets `403` (docs/wt-traffic.txt, section E). So nothing is recorded when a request
//! is routed: a session is recorded only on its owner's answer, and is live on this evidence:
//! - **a WebSocket**: its owner answered an upgrade naming it with `101`, which Wt gives only to a
//!   session it knows. Live while the tunnel is open, and for `session_idle` after its last
//!   sighting (the tunnel's close is one).
//! - **answers**: its owner answered two or more requests naming it with a `2xx`, relayed whole,
//!   counted over every shard. Every real Wt session makes several as its page loads (style,
//!   script, the first update, then its long polls), while a browser that got the new-session
//!   page or the reload script for an unknown id never names that id again. Live for
//!   `session_idle` after the last one.
//! - an id answered **once** is live for [`ONE_ANSWER`] (1 minute, or `session_idle` if that is
//!   shorter) after that answer: a stale bookmark or a crawler's old URL holds a drain that long
//!   at most.
//!
//! Any other answer (the `403` to an unknown id's upgrade, a `404`, a `5xx`, a `304`), wtgate's
//! own answers, a try that failed, a request redispatched away from its owner: nothing recorded.
//!
//! **One client cannot fill the table.** A session that no WebSocket vouches for is charged to the
//! client address that got it recorded (an IPv4 address, or the /64 of an IPv6 one, see
//! [`client_key`]): each address holds at most [`PER_CLIENT`] (32) in a shard's table. An address
//! that names a new id past its bound records no new one until `session_idle` has passed without
//! it naming another (its sessions already recorded go on being seen): a client spraying made-up
//! ids gets 32 per shard recorded, which stop counting after [`ONE_ANSWER`], and then none. A
//! `101` is never refused by this bound, and frees the session's charge.
//!
//! Each shard keeps one table of the sessions it saw; a session whose requests came over several
//! client connections may be in several shards' tables, so tables are merged by id on request
//! ([`merge`]), never on the hot path.
//!
//! Memory is bounded: an entry is a 64-bit hash of the id (Wt ids are 16 random characters from 62,
//! so two live sessions share a hash with odds of about n²/2⁶⁵), its owner, the second it was last
//! seen, its open tunnels, its answers, whether a WebSocket vouched for it and the client charged
//! for it: 24 bytes, about 33 with the hash table's own overhead (3.3 MB at 100 000), plus about
//! 20 per client address charged. At `cap` entries a table takes no new session until expiry
//! makes room, and it charges at most `cap` addresses; sessions not recorded for the cap are
//! counted as untracked, those not recorded for an address's bound as refused.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sessions that no WebSocket vouches for, per client address, in one shard's table.
pub const PER_CLIENT: u16 = 32;

/// How long an id its owner answered only once counts as live, at most.
pub const ONE_ANSWER: Duration = Duration::from_secs(60);

/// One shard's sessions.
#[derive(Debug)]
pub struct SessionTable {
    map: HashMap<u64, Entry, BuildHasherDefault<Prehashed>>,
    /// The client addresses charged for sessions here, by [`client_key`].
    clients: HashMap<u32, Client>,
    cap: usize,
    epoch: Instant,
    /// Sessions not recorded because the table was full.
    pub untracked: u64,
    /// Sessions not recorded because their client address was over its bound ([`PER_CLIENT`]).
    pub refused: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: u16,
    tunnels: u16,
    /// Seconds since the table's epoch.
    last_seen: u32,
    /// The client address charged for it (a [`client_key`]) until a WebSocket vouches for it.
    client: u32,
    /// Its owner's `2xx` answers to requests naming it, on this shard.
    answers: u8,
    /// Its owner answered an upgrade naming it with `101`, on this shard.
    upgraded: bool,
}

/// One client address's account in a table.
#[derive(Debug, Clone, Copy, Default)]
struct Client {
    /// The entries charged to it.
    held: u16,
    /// When it last named a new id past its bound (seconds since the epoch): it records none until
    /// `session_idle` after.
    refused_at: Option<u32>,
}

/// A session as merged across shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub owner: usize,
    pub last_seen: Instant,
    pub tunnels: u32,
    /// Its owner's `2xx` answers, over every shard.
    pub answers: u32,
    /// Its owner accepted a WebSocket of it.
    pub upgraded: bool,
}

impl Session {
    /// How long after its last sighting it stays live once no tunnel of it is open.
    pub fn lasts(&self, idle: Duration) -> Duration {
        if self.upgraded || self.answers >= 2 {
            idle
        } else {
            idle.min(ONE_ANSWER)
        }
    }
}

impl SessionTable {
    pub fn new(cap: usize, epoch: Instant) -> SessionTable {
        SessionTable {
            map: HashMap::default(),
            clients: HashMap::new(),
            cap,
            epoch,
            untracked: 0,
            refused: 0,
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

    /// Its owner answered a request naming session `id` with `status`, relayed whole; `client`:
    /// the [`client_key`] of who asked. Only a `2xx` is a sighting (see the module's rules).
    pub fn answered(&mut self, id: &[u8], owner: usize, client: u32, status: u16, now: Instant) {
        if !(200..300).contains(&status) {
            return;
        }
        let (key, last_seen) = (hash_id(id), self.secs(now));
        if let Some(e) = self.map.get_mut(&key) {
            e.owner = owner as u16;
            e.last_seen = last_seen;
            e.answers = e.answers.saturating_add(1);
            return;
        }
        if self.map.len() >= self.cap {
            self.untracked += 1;
        } else if !self.charge(client, last_seen) {
            self.refused += 1;
        } else {
            let entry = Entry {
                owner: owner as u16,
                tunnels: 0,
                last_seen,
                client,
                answers: 1,
                upgraded: false,
            };
            self.map.insert(key, entry);
        }
    }

    /// Charges `client` for one more session; false if it is over its bound, and then refused new
    /// ones until `session_idle` after `now`.
    fn charge(&mut self, client: u32, now: u32) -> bool {
        if !self.clients.contains_key(&client) && self.clients.len() >= self.cap {
            return false;
        }
        let c = self.clients.entry(client).or_default();
        if c.refused_at.is_some() || c.held >= PER_CLIENT {
            c.refused_at = Some(now);
            return false;
        }
        c.held += 1;
        true
    }

    /// A WebSocket tunnel of session `id` opened to its owner (a `101`): the session is live until
    /// it closes ([`SessionTable::tunnel_closed`]) and `session_idle` after, and no longer charged
    /// to a client.
    pub fn tunnel_opened(&mut self, id: &[u8], owner: usize, now: Instant) {
        let (key, last_seen) = (hash_id(id), self.secs(now));
        if let Some(e) = self.map.get_mut(&key) {
            e.owner = owner as u16;
            e.last_seen = last_seen;
            e.tunnels = e.tunnels.saturating_add(1);
            if !std::mem::replace(&mut e.upgraded, true) {
                release(&mut self.clients, e.client);
            }
        } else if self.map.len() >= self.cap {
            self.untracked += 1;
        } else {
            let entry = Entry {
                owner: owner as u16,
                tunnels: 1,
                last_seen,
                client: 0,
                answers: 0,
                upgraded: true,
            };
            self.map.insert(key, entry);
        }
    }

    pub fn tunnel_closed(&mut self, id: &[u8], now: Instant) {
        let last_seen = self.secs(now);
        if let Some(e) = self.map.get_mut(&hash_id(id)) {
            e.tunnels = e.tunnels.saturating_sub(1);
            e.last_seen = last_seen;
        }
    }

    /// Forgets sessions idle for `idle` or longer that have no open tunnel, and lifts the bound's
    /// refusal of client addresses that named no new id past it for as long.
    pub fn expire(&mut self, now: Instant, idle: Duration) {
        let now = self.secs(now);
        let idle = idle.as_secs().min(u64::from(u32::MAX)) as u32;
        let clients = &mut self.clients;
        self.map.retain(|_, e| {
            let keep = e.tunnels > 0 || now.saturating_sub(e.last_seen) < idle;
            if !keep && !e.upgraded {
                release(clients, e.client);
            }
            keep
        });
        clients.retain(|_, c| {
            if c.refused_at.is_some_and(|t| now.saturating_sub(t) >= idle) {
                c.refused_at = None;
            }
            c.held > 0 || c.refused_at.is_some()
        });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds this table's sessions into `into` (keyed by id hash): the latest sighting wins; open
    /// tunnels and answers add up.
    pub fn merge_into(&self, into: &mut HashMap<u64, Session>) {
        for (&key, e) in &self.map {
            let last_seen = self.epoch + Duration::from_secs(u64::from(e.last_seen));
            let s = into.entry(key).or_insert(Session {
                owner: usize::from(e.owner),
                last_seen,
                tunnels: 0,
                answers: 0,
                upgraded: false,
            });
            if last_seen >= s.last_seen {
                s.last_seen = last_seen;
                s.owner = usize::from(e.owner);
            }
            s.tunnels += u32::from(e.tunnels);
            s.answers += u32::from(e.answers);
            s.upgraded |= e.upgraded;
        }
    }
}

/// Takes one session off `client`'s account (a WebSocket vouched for it, or it expired).
fn release(clients: &mut HashMap<u32, Client>, client: u32) {
    if let Some(c) = clients.get_mut(&client) {
        c.held = c.held.saturating_sub(1);
        if c.held == 0 && c.refused_at.is_none() {
            clients.remove(&client);
        }
    }
}

/// The account a client address's sessions are charged to: an IPv4 address (an IPv4-mapped IPv6
/// one too), or an IPv6 address's /64, which one subscriber usually holds whole. Clients of
/// unknown address share one.
pub fn client_key(ip: Option<IpAddr>) -> u32 {
    let h = match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(a)) => hash_id(&a.octets()),
        Some(IpAddr::V6(a)) => hash_id(&a.octets()[..8]),
        None => 0,
    };
    (h >> 32) as u32 ^ h as u32
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
        if (s.tunnels == 0 && ago >= s.lasts(idle)) || s.owner >= backends {
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
    const ME: u32 = 7;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn sessions_are_counted_once_per_backend_across_shards_and_expire() {
        let t0 = Instant::now();
        let (mut a, mut b) = (SessionTable::new(10, t0), SessionTable::new(10, t0));
        a.answered(b"wt1AAAAAAAAAAAAAAAA", 0, ME, 200, t0);
        b.answered(b"wt1AAAAAAAAAAAAAAAA", 0, ME, 200, t0 + secs(5));
        b.answered(b"wt1BBBBBBBBBBBBBBBB", 0, ME, 200, t0 + secs(2));
        b.answered(b"wt1BBBBBBBBBBBBBBBB", 0, ME, 204, t0 + secs(2));
        a.answered(b"wt2CCCCCCCCCCCCCCCC", 1, ME, 200, t0 + secs(1));
        a.answered(b"wt2CCCCCCCCCCCCCCCC", 1, ME, 200, t0 + secs(1));
        let now = t0 + secs(10);
        let m = merge([&a, &b], 2, now, IDLE);
        assert_eq!(m[0].live, 2);
        assert_eq!(m[0].since_last, Some(secs(5)));
        assert_eq!(m[1].live, 1);
        // Ten minutes after its last answer, a session is gone.
        let later = t0 + secs(603);
        let m = merge([&a, &b], 2, later, IDLE);
        assert_eq!(m[0].live, 1, "the one seen at t0+5 s is still live");
        assert_eq!(m[1], BackendSessions::default());
        a.expire(later, IDLE);
        b.expire(later, IDLE);
        assert_eq!((a.len(), b.len()), (0, 1));
    }

    /// Wt answers an id it does not know with `200` (a new session's page, a reload script) and a
    /// WebSocket of one with `403`: only `2xx` and `101` are sightings, and one answer counts for
    /// [`ONE_ANSWER`] at most.
    #[test]
    fn only_its_owners_answers_make_a_session_live_and_one_answer_barely() {
        let t0 = Instant::now();
        let mut t = SessionTable::new(10, t0);
        for status in [101, 304, 403, 404, 500, 502, 503] {
            t.answered(b"wt1REFUSEDREFUSEDRE", 0, ME, status, t0);
        }
        assert!(t.is_empty());
        t.answered(b"wt1ONCEONCEONCEONCE", 0, ME, 200, t0);
        t.answered(b"wt1TWICETWICETWICET", 0, ME, 200, t0);
        t.answered(b"wt1TWICETWICETWICET", 0, ME, 200, t0);
        let live = |t: &SessionTable, at: u64, idle: Duration| merge([t], 1, t0 + secs(at), idle);
        assert_eq!(live(&t, 59, IDLE)[0].live, 2);
        assert_eq!(
            live(&t, 60, IDLE)[0].live,
            1,
            "the one answered once is gone"
        );
        assert_eq!(live(&t, 599, IDLE)[0].live, 1);
        assert_eq!(live(&t, 600, IDLE)[0].live, 0);
        assert_eq!(live(&t, 29, secs(30))[0].live, 2, "never past session_idle");
        assert_eq!(live(&t, 30, secs(30))[0].live, 0);
        // A second answer on another shard makes it a session of its own.
        let mut other = SessionTable::new(10, t0);
        other.answered(b"wt1ONCEONCEONCEONCE", 0, ME, 200, t0 + secs(30));
        assert_eq!(merge([&t, &other], 1, t0 + secs(629), IDLE)[0].live, 1);
    }

    #[test]
    fn an_open_tunnel_keeps_its_session_live() {
        let t0 = Instant::now();
        let mut t = SessionTable::new(10, t0);
        t.tunnel_opened(b"wt1WSWSWSWSWSWSWSWS", 0, t0);
        let hour = t0 + secs(3600);
        assert_eq!(merge([&t], 1, hour, IDLE)[0].live, 1);
        t.expire(hour, IDLE);
        assert_eq!(t.len(), 1);
        t.tunnel_closed(b"wt1WSWSWSWSWSWSWSWS", hour);
        let after = hour + ONE_ANSWER;
        assert_eq!(
            merge([&t], 1, after, IDLE)[0].live,
            1,
            "closing is a sighting, and a WebSocket vouched for it"
        );
        let later = hour + IDLE;
        assert_eq!(merge([&t], 1, later, IDLE)[0].live, 0);
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_track() {
        let t0 = Instant::now();
        let mut t = SessionTable::new(2, t0);
        for id in [&b"wt1a"[..], b"wt1b", b"wt1c", b"wt1a"] {
            t.answered(id, 0, ME, 200, t0);
        }
        assert_eq!((t.len(), t.untracked, t.refused), (2, 1, 0));
        t.tunnel_opened(b"wt1d", 0, t0);
        assert_eq!((t.len(), t.untracked), (2, 2));
    }

    /// A client address naming ids without a WebSocket gets [`PER_CLIENT`] recorded, and none
    /// after until it has named no new one for `session_idle`; other addresses, a WebSocket, and
    /// the sessions it had are not refused.
    #[test]
    fn one_client_address_records_a_bounded_number_of_sessions() {
        let t0 = Instant::now();
        let mut t = SessionTable::new(100_000, t0);
        let id = |n: usize| format!("wt1{n:016}");
        for n in 0..2000 {
            t.answered(id(n).as_bytes(), 0, ME, 200, t0);
        }
        assert_eq!((t.len(), t.refused), (usize::from(PER_CLIENT), 1968));
        assert_eq!(merge([&t], 1, t0 + ONE_ANSWER, IDLE)[0].live, 0);
        // Its own sessions go on being seen; a WebSocket frees a charge, but the address stays
        // refused while it names new ids.
        t.answered(id(0).as_bytes(), 0, ME, 200, t0 + secs(10));
        t.tunnel_opened(id(1).as_bytes(), 0, t0 + secs(10));
        t.tunnel_opened(id(5000).as_bytes(), 0, t0 + secs(10));
        t.tunnel_closed(id(1).as_bytes(), t0 + secs(20));
        t.tunnel_closed(id(5000).as_bytes(), t0 + secs(20));
        t.answered(id(5001).as_bytes(), 0, ME, 200, t0 + secs(20));
        t.answered(b"wt1OTHERCLIENTXXXX", 0, ME + 1, 200, t0 + secs(20));
        assert_eq!(t.len(), usize::from(PER_CLIENT) + 2);
        assert_eq!(merge([&t], 1, t0 + secs(100), IDLE)[0].live, 3);
        // Expiry: its last refusal was at t0+20 s.
        t.expire(t0 + secs(610), IDLE);
        t.answered(id(5002).as_bytes(), 0, ME, 200, t0 + secs(610));
        assert_eq!(
            t.refused,
            1968 + 2,
            "refused until session_idle after the last refusal"
        );
        t.expire(t0 + secs(1300), IDLE);
        assert!(t.is_empty() && t.clients.is_empty(), "{t:?}");
        t.answered(id(5003).as_bytes(), 0, ME, 200, t0 + secs(1300));
        assert_eq!((t.len(), t.refused), (1, 1970));
    }

    #[test]
    fn an_ipv6_64_is_one_client_and_a_mapped_ipv4_address_its_ipv4_one() {
        let key = |s: &str| client_key(Some(s.parse().unwrap()));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(client_key(None), client_key(None));
    }
}
