//! Routing, pure: which backend a request goes to, from its request-target and the backends' states.
//!
//! Nothing here touches a socket or a clock, so every rule of docs/design.md "Routing" is unit-tested
//! below on plain data.

use crate::config::reload::Slot;
use crate::health::BackendStatus;

/// The value of the first query parameter named exactly `wtd`, if any.
///
/// The query is what follows the first `?` up to a `#`; parameters are split on `&`. Unlike
/// HAProxy's `url_sub wtd=wt1`, `foo_wtd=…` or `wtd=` inside a path never count.
pub fn find_wtd(target: &[u8]) -> Option<&[u8]> {
    let q = target.iter().position(|&b| b == b'?' || b == b'#')?;
    if target[q] == b'#' {
        return None;
    }
    let query = &target[q + 1..];
    let query = match query.iter().position(|&b| b == b'#') {
        Some(h) => &query[..h],
        None => query,
    };
    query
        .split(|&b| b == b'&')
        .find_map(|param| param.strip_prefix(b"wtd="))
}

/// Why a backend was chosen; the proxy counts and logs these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The session's owner, which serves its sessions (up, or answering again).
    Owner(usize),
    /// The session's owner is marked down after a refused connect, and may be back (a restart):
    /// one connect is tried there before the session is given up.
    OwnerRetry(usize),
    /// No session (or an id no backend owns): weighted round-robin.
    Balanced(usize),
    /// The session's owner cannot serve it; another backend gets the request and Wt there
    /// starts a fresh session.
    Redispatched { owner: usize, to: usize, why: Moved },
    /// No backend takes new sessions: `to` is up but draining (or weighted 0), or, when `down`,
    /// marked down but maybe back (Envoy's "panic": an error is certain, a try may answer).
    /// `owner`: the session this request had, which leaves its server.
    Fallback {
        to: usize,
        down: bool,
        owner: Option<(usize, Moved)>,
    },
    /// Nothing to try now: wait for a backend to come back (`--queue-timeout`), then 503.
    NoBackend,
}

/// Why a session's request left its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Marked down (and not worth a try now).
    Down,
    /// In maintenance.
    Maint,
    /// Removed by a reload.
    Removed,
    /// It failed this very request (a refused connect, a closed connection).
    Failed,
}

impl Moved {
    /// The access log's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Moved::Down => "owner_down",
            Moved::Maint => "owner_maint",
            Moved::Removed => "owner_removed",
            Moved::Failed => "owner_failed",
        }
    }
}

impl Decision {
    pub fn backend(self) -> Option<usize> {
        match self {
            Decision::Owner(b)
            | Decision::OwnerRetry(b)
            | Decision::Balanced(b)
            | Decision::Redispatched { to: b, .. }
            | Decision::Fallback { to: b, .. } => Some(b),
            Decision::NoBackend => None,
        }
    }

    /// A try on a backend marked down: at most one per backend per `down_interval` on a shard,
    /// with a short connect timeout, and not counted against `--retries`.
    pub fn is_long_shot(self) -> bool {
        matches!(
            self,
            Decision::OwnerRetry(_) | Decision::Fallback { down: true, .. }
        )
    }

    /// The session this request had, if it left its owner, and why.
    pub fn moved(self) -> Option<(usize, Moved)> {
        match self {
            Decision::Redispatched { owner, why, .. } => Some((owner, why)),
            Decision::Fallback { owner, .. } => owner,
            _ => None,
        }
    }
}

/// What a new session may go to, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// Up and ready, weight above 0: round-robin.
    Ready,
    /// Up but draining (or weighted 0): alive beats an error.
    Alive,
    /// Marked down but answering again, or worth a try now.
    MaybeBack,
}

/// Session owners and the round-robin state of one shard, by backend slot. A removed backend
/// keeps its prefix here, so that its sessions are told apart and redispatched.
#[derive(Debug, Clone)]
pub struct Router {
    prefixes: Vec<Vec<u8>>,
    id_len: usize,
    weights: Vec<u32>,
    /// Smooth weighted round-robin (nginx's): current weights, one per backend.
    current: Vec<i64>,
}

impl Router {
    /// A router for these slots, whose session ids are a prefix and `id_len` characters.
    pub fn new(slots: &[Slot], id_len: usize) -> Router {
        Router {
            prefixes: slots
                .iter()
                .map(|s| s.backend.prefix.as_bytes().to_vec())
                .collect(),
            id_len,
            weights: slots.iter().map(|s| s.backend.weight).collect(),
            current: vec![0; slots.len()],
        }
    }

    /// The backend whose prefix and id length match `wtd` exactly.
    pub fn owner(&self, wtd: &[u8]) -> Option<usize> {
        self.prefixes
            .iter()
            .position(|p| wtd.len() == p.len() + self.id_len && wtd.starts_with(p))
    }

    /// Routes one request. `exclude` is a backend that just failed for this request (retries go
    /// elsewhere); `may_try(b)`: this shard may try backend `b`, marked down, now (its one try
    /// per `down_interval` is free).
    pub fn route(
        &mut self,
        target: &[u8],
        states: &[BackendStatus],
        exclude: Option<usize>,
        may_try: &dyn Fn(usize) -> bool,
    ) -> Decision {
        let owner = find_wtd(target).and_then(|v| self.owner(v));
        let Some(o) = owner else {
            return match self.pick_any(states, [exclude, None], may_try) {
                Some((b, Tier::Ready)) => Decision::Balanced(b),
                Some((to, tier)) => Decision::Fallback {
                    to,
                    down: tier == Tier::MaybeBack,
                    owner: None,
                },
                None => Decision::NoBackend,
            };
        };
        let st = &states[o];
        if exclude != Some(o) {
            if st.serves_own_sessions() {
                return Decision::Owner(o);
            }
            if st.may_be_back() && st.refused && may_try(o) {
                return Decision::OwnerRetry(o);
            }
        }
        let why = match st {
            _ if exclude == Some(o) => Moved::Failed,
            s if s.removed => Moved::Removed,
            s if s.admin == crate::health::Admin::Maint => Moved::Maint,
            _ => Moved::Down,
        };
        match self.pick_any(states, [exclude, Some(o)], may_try) {
            Some((to, Tier::Ready)) => Decision::Redispatched { owner: o, to, why },
            Some((to, tier)) => Decision::Fallback {
                to,
                down: tier == Tier::MaybeBack,
                owner: Some((o, why)),
            },
            None => Decision::NoBackend,
        }
    }

    /// The best tier that has a backend other than those in `skip`, and round-robin within it.
    fn pick_any(
        &mut self,
        states: &[BackendStatus],
        skip: [Option<usize>; 2],
        may_try: &dyn Fn(usize) -> bool,
    ) -> Option<(usize, Tier)> {
        [Tier::Ready, Tier::Alive, Tier::MaybeBack]
            .into_iter()
            .find_map(|tier| Some((self.pick(states, skip, tier, may_try)?, tier)))
    }

    /// Smooth weighted round-robin over the backends of `tier`: each pick adds every candidate's
    /// weight to its current weight, takes the largest, and lowers it by the total. Equal weights
    /// alternate strictly; 5:1:1 gives a a b a c a a, never five in a row. Past the first tier a
    /// weight of 0 counts as 1: it is a last resort too.
    fn pick(
        &mut self,
        states: &[BackendStatus],
        skip: [Option<usize>; 2],
        tier: Tier,
        may_try: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, st) in states.iter().enumerate().take(self.weights.len()) {
            let fits = match tier {
                Tier::Ready => st.takes_new_sessions() && self.weights[i] > 0,
                Tier::Alive => st.up && st.serves_own_sessions(),
                Tier::MaybeBack => st.may_be_back() && (st.alive || may_try(i)),
            };
            if !fits || skip.contains(&Some(i)) {
                continue;
            }
            let floor = u32::from(tier != Tier::Ready);
            let w = i64::from(self.weights[i].max(floor));
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            self.current[b] -= total;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reload::Generation;
    use crate::config::{BackendConfig, Config};
    use crate::health::Admin;

    fn router(specs: &[&str]) -> Router {
        let cfg = Config {
            backends: specs
                .iter()
                .map(|s| BackendConfig::parse(s).unwrap())
                .collect(),
            ..Config::default()
        };
        let id_len = cfg.session_id_length;
        Router::new(&Generation::first(cfg).slots, id_len)
    }

    fn up(n: usize) -> Vec<BackendStatus> {
        vec![BackendStatus::default(); n]
    }

    /// No try on a down backend is due.
    const NO: fn(usize) -> bool = |_| false;
    /// Every try on a down backend is due.
    const DUE: fn(usize) -> bool = |_| true;

    const ID1: &str = "wt13kcFKBb8y0I2SsdS"; // from docs/wt-traffic.txt
    const ID2: &str = "wt2AbCdEfGhIjKlMnOp";

    #[test]
    fn finds_the_exact_wtd_parameter() {
        assert_eq!(find_wtd(b"/?wtd=abc&request=ws"), Some(&b"abc"[..]));
        assert_eq!(find_wtd(b"/app?a=1&wtd=abc"), Some(&b"abc"[..]));
        assert_eq!(find_wtd(b"/app?wtd=abc#frag&wtd=x"), Some(&b"abc"[..]));
        assert_eq!(find_wtd(b"/app?wtd=first&wtd=second"), Some(&b"first"[..]));
        assert_eq!(find_wtd(b"/app?wtd="), Some(&b""[..]));
        assert_eq!(find_wtd(b"/app?foo_wtd=abc"), None);
        assert_eq!(find_wtd(b"/app?xwtd=abc&wtdx=abc"), None);
        assert_eq!(find_wtd(b"/wtd=abc"), None);
        assert_eq!(find_wtd(b"/app#?wtd=abc"), None);
        assert_eq!(find_wtd(b"/app"), None);
        assert_eq!(find_wtd(b"/app?"), None);
        assert_eq!(find_wtd(b"/app?wtd"), None);
    }

    #[test]
    fn owner_needs_prefix_and_length() {
        let r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2", "wt10=127.0.0.1:3"]);
        assert_eq!(r.owner(ID1.as_bytes()), Some(0));
        assert_eq!(r.owner(ID2.as_bytes()), Some(1));
        // wt1 + "0" + 15 chars is a wt1 id (19 long), wt10 + 16 chars a wt10 id (20 long).
        assert_eq!(r.owner(b"wt10123456789012345"), Some(0));
        assert_eq!(r.owner(b"wt101234567890123456"), Some(2));
        assert_eq!(r.owner(b"wt1short"), None);
        assert_eq!(r.owner(b"wt3AbCdEfGhIjKlMnOp"), None);
        assert_eq!(r.owner(b""), None);
    }

    #[test]
    fn routes_sessions_to_their_owner() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let st = up(2);
        for _ in 0..5 {
            let t = format!("/?wtd={ID2}&request=style&page=1");
            assert_eq!(r.route(t.as_bytes(), &st, None, &NO), Decision::Owner(1));
            let t = format!("/?wtd={ID1}&request=ws");
            assert_eq!(r.route(t.as_bytes(), &st, None, &NO), Decision::Owner(0));
        }
    }

    #[test]
    fn round_robin_alternates_and_honours_weights() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let st = up(2);
        let picks: Vec<_> = (0..6)
            .map(|_| r.route(b"/", &st, None, &NO).backend().unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 0, 1, 0, 1]);

        let mut r = router(&["a=127.0.0.1:1,weight=5", "b=127.0.0.1:2", "c=127.0.0.1:3"]);
        let st = up(3);
        let picks: Vec<_> = (0..7)
            .map(|_| r.route(b"/", &st, None, &NO).backend().unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weight_zero_gets_only_its_own_sessions() {
        let mut r = router(&["wt1=127.0.0.1:1,weight=0", "wt2=127.0.0.1:2"]);
        let st = up(2);
        for _ in 0..4 {
            assert_eq!(r.route(b"/", &st, None, &NO), Decision::Balanced(1));
        }
        let t = format!("/?wtd={ID1}");
        assert_eq!(r.route(t.as_bytes(), &st, None, &NO), Decision::Owner(0));
    }

    #[test]
    fn down_owner_is_redispatched_and_all_down_is_no_backend() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let mut st = up(2);
        st[0].up = false;
        let t = format!("/?wtd={ID1}");
        assert_eq!(
            r.route(t.as_bytes(), &st, None, &NO),
            Decision::Redispatched {
                owner: 0,
                to: 1,
                why: Moved::Down
            }
        );
        assert_eq!(r.route(b"/", &st, None, &NO), Decision::Balanced(1));
        assert_eq!(r.route(b"/", &st, None, &NO), Decision::Balanced(1));
        st[1].up = false;
        assert_eq!(r.route(t.as_bytes(), &st, None, &NO), Decision::NoBackend);
        assert_eq!(r.route(b"/", &st, None, &NO), Decision::NoBackend);
    }

    #[test]
    fn drain_keeps_sessions_maint_loses_them() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let mut st = up(2);
        let t = format!("/?wtd={ID1}");
        st[0].admin = Admin::Drain;
        assert_eq!(r.route(t.as_bytes(), &st, None, &NO), Decision::Owner(0));
        for _ in 0..3 {
            assert_eq!(r.route(b"/", &st, None, &NO), Decision::Balanced(1));
        }
        st[0].admin = Admin::Maint;
        assert_eq!(
            r.route(t.as_bytes(), &st, None, &NO),
            Decision::Redispatched {
                owner: 0,
                to: 1,
                why: Moved::Maint
            }
        );
    }

    #[test]
    fn exclude_sends_retries_elsewhere() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let st = up(2);
        let t = format!("/?wtd={ID1}");
        assert_eq!(
            r.route(t.as_bytes(), &st, Some(0), &NO),
            Decision::Redispatched {
                owner: 0,
                to: 1,
                why: Moved::Failed
            }
        );
        for _ in 0..3 {
            assert_eq!(r.route(b"/", &st, Some(1), &NO), Decision::Balanced(0));
        }
        let r1 = router(&["wt1=127.0.0.1:1"]);
        let mut r1 = r1;
        assert_eq!(r1.route(b"/", &up(1), Some(0), &NO), Decision::NoBackend);
    }

    #[test]
    fn a_removed_backends_sessions_are_redispatched_and_it_takes_no_new_ones() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let mut st = up(2);
        st[0].removed = true;
        let t = format!("/?wtd={ID1}");
        assert_eq!(
            r.route(t.as_bytes(), &st, None, &NO),
            Decision::Redispatched {
                owner: 0,
                to: 1,
                why: Moved::Removed
            }
        );
        for _ in 0..3 {
            assert_eq!(r.route(b"/", &st, None, &NO), Decision::Balanced(1));
        }
    }

    /// Rolling upgrade: wt1 drained, wt2 down. New sessions go to the drained one rather than
    /// get a 503; with both down, to one that may be back, once its try is due; an answer since
    /// its mark-down lets it take them without waiting for the try.
    #[test]
    fn no_ready_backend_falls_back_to_draining_then_to_down_ones() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let mut st = up(2);
        st[0].admin = Admin::Drain;
        st[1].up = false;
        let draining = Decision::Fallback {
            to: 0,
            down: false,
            owner: None,
        };
        assert_eq!(r.route(b"/", &st, None, &NO), draining);
        let t = format!("/?wtd={ID2}");
        let moved = Decision::Fallback {
            to: 0,
            down: false,
            owner: Some((1, Moved::Down)),
        };
        assert_eq!(r.route(t.as_bytes(), &st, None, &NO), moved);
        st[0].up = false;
        assert_eq!(r.route(b"/", &st, None, &NO), Decision::NoBackend);
        let Decision::Fallback { down: true, .. } = r.route(b"/", &st, None, &DUE) else {
            panic!("no try of a down backend");
        };
        st[1].alive = true;
        let to_alive = Decision::Fallback {
            to: 1,
            down: true,
            owner: None,
        };
        assert_eq!(r.route(b"/", &st, None, &NO), to_alive);
        st[0].admin = Admin::Maint;
        st[1].removed = true;
        assert_eq!(r.route(b"/", &st, None, &DUE), Decision::NoBackend);
    }

    /// A session's owner marked down after a refusal is tried once per interval before its
    /// session moves; after a timeout it moves at once; once it answered, it keeps its sessions.
    #[test]
    fn a_refused_owner_is_tried_before_its_session_moves() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let mut st = up(2);
        (st[0].up, st[0].refused) = (false, true);
        let t = format!("/?wtd={ID1}");
        assert_eq!(
            r.route(t.as_bytes(), &st, None, &DUE),
            Decision::OwnerRetry(0)
        );
        let moved = Decision::Redispatched {
            owner: 0,
            to: 1,
            why: Moved::Down,
        };
        assert_eq!(r.route(t.as_bytes(), &st, None, &NO), moved);
        let failed = Decision::Redispatched {
            owner: 0,
            to: 1,
            why: Moved::Failed,
        };
        assert_eq!(r.route(t.as_bytes(), &st, Some(0), &DUE), failed);
        st[0].refused = false;
        assert_eq!(r.route(t.as_bytes(), &st, None, &DUE), moved);
        st[0].alive = true;
        assert_eq!(r.route(t.as_bytes(), &st, None, &NO), Decision::Owner(0));
        // New sessions still wait for its checks.
        assert_eq!(r.route(b"/", &st, None, &NO), Decision::Balanced(1));
    }

    /// Every combination of four backends' states, tries due and an excluded one: a request goes
    /// to its session's owner while that serves it, never "falls back" to its own owner, takes a
    /// fallback only when no other backend is ready, and waits only when nothing can be tried.
    #[test]
    fn every_state_routes_by_the_rules() {
        let specs = [
            "wt1=127.0.0.1:1",
            "wt2=127.0.0.1:2",
            "wt3=127.0.0.1:3",
            "wt4=127.0.0.1:4",
        ];
        let admin = [Admin::Ready, Admin::Drain, Admin::Maint];
        for bits in 0..4096u32 {
            let st: Vec<BackendStatus> = (0..4)
                .map(|i| {
                    let b = (bits >> (i * 3)) & 7;
                    BackendStatus {
                        up: b & 1 == 1,
                        admin: admin[(b >> 1) as usize % 3],
                        alive: b == 6,
                        refused: b & 2 == 2,
                        stalled: b == 5,
                        ..BackendStatus::default()
                    }
                })
                .collect();
            let due = |i: usize| (bits >> i) & 1 == 1;
            for (target, owner) in [("/".to_string(), None), (format!("/?wtd={ID1}"), Some(0))] {
                for exclude in [None, Some((bits % 4) as usize)] {
                    let mut r = router(&specs);
                    let d = r.route(target.as_bytes(), &st, exclude, &due);
                    let ready = (0..4).any(|i| {
                        st[i].takes_new_sessions() && exclude != Some(i) && Some(i) != owner
                    });
                    match d {
                        Decision::Owner(o) => assert!(st[o].serves_own_sessions()),
                        Decision::Fallback { to, .. } => {
                            assert!(!ready && Some(to) != owner && Some(to) != exclude, "{d:?}")
                        }
                        Decision::NoBackend => assert!(!ready, "{st:?} {exclude:?}"),
                        _ => {}
                    }
                }
            }
        }
    }
}
