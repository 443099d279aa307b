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
    /// The session's owner, which is up.
    Owner(usize),
    /// No session (or an id no backend owns): weighted round-robin.
    Balanced(usize),
    /// The session's owner is down or in maintenance; another backend gets the request and Wt there
    /// starts a fresh session.
    Redispatched { owner: usize, to: usize },
    /// Nothing usable: answer 503 at once.
    NoBackend,
}

impl Decision {
    pub fn backend(self) -> Option<usize> {
        match self {
            Decision::Owner(b) | Decision::Balanced(b) | Decision::Redispatched { to: b, .. } => {
                Some(b)
            }
            Decision::NoBackend => None,
        }
    }
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

    /// Routes one request. `exclude` is a backend that just failed for this request (retries go elsewhere).
    pub fn route(
        &mut self,
        target: &[u8],
        states: &[BackendStatus],
        exclude: Option<usize>,
    ) -> Decision {
        let owner = find_wtd(target).and_then(|v| self.owner(v));
        match owner {
            Some(o) if states[o].serves_own_sessions() && exclude != Some(o) => Decision::Owner(o),
            Some(o) => match self.pick(states, exclude) {
                Some(to) => Decision::Redispatched { owner: o, to },
                None => Decision::NoBackend,
            },
            None => match self.pick(states, exclude) {
                Some(b) => Decision::Balanced(b),
                None => Decision::NoBackend,
            },
        }
    }

    /// Smooth weighted round-robin over backends that take new sessions: each pick adds every
    /// candidate's weight to its current weight, takes the largest, and lowers it by the total.
    /// Equal weights alternate strictly; 5:1:1 gives a a b a c a a, never five in a row.
    fn pick(&mut self, states: &[BackendStatus], exclude: Option<usize>) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, st) in states.iter().enumerate().take(self.weights.len()) {
            if !st.takes_new_sessions() || exclude == Some(i) || self.weights[i] == 0 {
                continue;
            }
            let w = i64::from(self.weights[i]);
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
            assert_eq!(r.route(t.as_bytes(), &st, None), Decision::Owner(1));
            let t = format!("/?wtd={ID1}&request=ws");
            assert_eq!(r.route(t.as_bytes(), &st, None), Decision::Owner(0));
        }
    }

    #[test]
    fn round_robin_alternates_and_honours_weights() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let st = up(2);
        let picks: Vec<_> = (0..6)
            .map(|_| r.route(b"/", &st, None).backend().unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 0, 1, 0, 1]);

        let mut r = router(&["a=127.0.0.1:1,weight=5", "b=127.0.0.1:2", "c=127.0.0.1:3"]);
        let st = up(3);
        let picks: Vec<_> = (0..7)
            .map(|_| r.route(b"/", &st, None).backend().unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weight_zero_gets_only_its_own_sessions() {
        let mut r = router(&["wt1=127.0.0.1:1,weight=0", "wt2=127.0.0.1:2"]);
        let st = up(2);
        for _ in 0..4 {
            assert_eq!(r.route(b"/", &st, None), Decision::Balanced(1));
        }
        let t = format!("/?wtd={ID1}");
        assert_eq!(r.route(t.as_bytes(), &st, None), Decision::Owner(0));
    }

    #[test]
    fn down_owner_is_redispatched_and_all_down_is_no_backend() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let mut st = up(2);
        st[0].up = false;
        let t = format!("/?wtd={ID1}");
        assert_eq!(
            r.route(t.as_bytes(), &st, None),
            Decision::Redispatched { owner: 0, to: 1 }
        );
        assert_eq!(r.route(b"/", &st, None), Decision::Balanced(1));
        assert_eq!(r.route(b"/", &st, None), Decision::Balanced(1));
        st[1].up = false;
        assert_eq!(r.route(t.as_bytes(), &st, None), Decision::NoBackend);
        assert_eq!(r.route(b"/", &st, None), Decision::NoBackend);
    }

    #[test]
    fn drain_keeps_sessions_maint_loses_them() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let mut st = up(2);
        let t = format!("/?wtd={ID1}");
        st[0].admin = Admin::Drain;
        assert_eq!(r.route(t.as_bytes(), &st, None), Decision::Owner(0));
        for _ in 0..3 {
            assert_eq!(r.route(b"/", &st, None), Decision::Balanced(1));
        }
        st[0].admin = Admin::Maint;
        assert_eq!(
            r.route(t.as_bytes(), &st, None),
            Decision::Redispatched { owner: 0, to: 1 }
        );
    }

    #[test]
    fn exclude_sends_retries_elsewhere() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let st = up(2);
        let t = format!("/?wtd={ID1}");
        assert_eq!(
            r.route(t.as_bytes(), &st, Some(0)),
            Decision::Redispatched { owner: 0, to: 1 }
        );
        for _ in 0..3 {
            assert_eq!(r.route(b"/", &st, Some(1)), Decision::Balanced(0));
        }
        let r1 = router(&["wt1=127.0.0.1:1"]);
        let mut r1 = r1;
        assert_eq!(r1.route(b"/", &up(1), Some(0)), Decision::NoBackend);
    }

    #[test]
    fn a_removed_backends_sessions_are_redispatched_and_it_takes_no_new_ones() {
        let mut r = router(&["wt1=127.0.0.1:1", "wt2=127.0.0.1:2"]);
        let mut st = up(2);
        st[0].removed = true;
        let t = format!("/?wtd={ID1}");
        assert_eq!(
            r.route(t.as_bytes(), &st, None),
            Decision::Redispatched { owner: 0, to: 1 }
        );
        for _ in 0..3 {
            assert_eq!(r.route(b"/", &st, None), Decision::Balanced(1));
        }
    }
}
