//! `find_wtd` and `Router::route` on arbitrary request-targets and backend states.
//!
//! Input: two bytes choosing backend states (and which down ones may be tried now), the rest is
//! the request-target.
//! Invariants: no panic; a found value is the first `wtd` parameter of the query (after the first
//! `?`, before any `#`); the owner's prefix and id length match exactly; a request only goes to a
//! backend that may take it (owner: serving its sessions, or marked down after a refusal with its
//! try due; others: up and ready; with none ready, up ones that are not in maintenance, then down
//! ones that are alive or due); nothing to try is `NoBackend`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wtgate::config::reload::Generation;
use wtgate::config::{BackendConfig, Config};
use wtgate::health::{Admin, BackendStatus};
use wtgate::route::{Decision, Router, find_wtd};

const PREFIXES: [&str; 4] = ["wt1", "wt2", "wt10", "a"];

/// The query as docs/design.md "Behaviour" defines it, computed the slow and obvious way.
fn reference(target: &[u8]) -> Option<&[u8]> {
    let before_fragment = target.split(|&b| b == b'#').next().unwrap_or(target);
    let q = before_fragment.iter().position(|&b| b == b'?')?;
    before_fragment[q + 1..]
        .split(|&b| b == b'&')
        .find_map(|p| p.strip_prefix(b"wtd="))
}

fuzz_target!(|data: &[u8]| {
    let [sel, sel2, target @ ..] = data else {
        return;
    };
    let (sel, sel2) = (*sel, *sel2);
    let found = find_wtd(target);
    assert_eq!(found, reference(target));
    if let Some(v) = found {
        assert!(!v.contains(&b'&') && !v.contains(&b'#'));
        let start = v.as_ptr() as usize - target.as_ptr() as usize;
        assert!(start >= 5 && &target[start - 4..start] == b"wtd=");
        assert!(matches!(target[start - 5], b'?' | b'&'));
    }

    let cfg = Config {
        backends: PREFIXES
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut b = BackendConfig::parse(&format!("{p}=127.0.0.1:{}", 1000 + i)).unwrap();
                b.weight = u32::from((sel >> i) & 1) * 3;
                b
            })
            .collect(),
        session_id_length: 1 + usize::from(sel & 7),
        ..Config::default()
    };
    let generation = Generation::first(cfg.clone());
    let mut router = Router::new(&generation.slots, cfg.session_id_length);
    let states: Vec<BackendStatus> = (0..PREFIXES.len())
        .map(|i| {
            let bits = (sel.rotate_left(i as u32 * 2) >> 4) & 3;
            BackendStatus {
                up: bits != 0,
                admin: match bits {
                    2 => Admin::Drain,
                    3 if i % 2 == 0 => Admin::Maint,
                    _ => Admin::Ready,
                },
                // Removed by a reload (the odd backends' fourth state).
                removed: bits == 3 && i % 2 == 1,
                alive: (sel2 >> i) & 1 == 1,
                refused: (sel2 >> (i + 4)) & 1 == 1,
                stalled: (sel2 >> i) & 3 == 2,
            }
        })
        .collect();
    let owner = found.and_then(|v| router.owner(v));
    if let (Some(o), Some(v)) = (owner, found) {
        let p = PREFIXES[o].as_bytes();
        assert!(v.starts_with(p) && v.len() == p.len() + cfg.session_id_length);
    }
    let due = |i: usize| (sel2 >> (7 - i)) & 1 == 1;
    for exclude in [None, Some(usize::from(sel) % PREFIXES.len())] {
        let takes_new = |i: usize| {
            states[i].takes_new_sessions() && exclude != Some(i) && cfg.backends[i].weight > 0
        };
        let any_new = (0..PREFIXES.len()).any(|i| takes_new(i) && Some(i) != owner);
        let alive_up = |i: usize| states[i].up && states[i].serves_own_sessions();
        let maybe_back = |i: usize| states[i].may_be_back() && (states[i].alive || due(i));
        match router.route(target, &states, exclude, &due) {
            Decision::Owner(o) => {
                assert_eq!(Some(o), owner);
                assert!(states[o].serves_own_sessions() && exclude != Some(o));
            }
            Decision::OwnerRetry(o) => {
                assert_eq!(Some(o), owner);
                let s = states[o];
                assert!(!s.serves_own_sessions() && s.may_be_back() && s.refused && due(o));
                assert_ne!(exclude, Some(o));
            }
            Decision::Balanced(b) => {
                assert!(owner.is_none());
                assert!(takes_new(b));
            }
            Decision::Redispatched { owner: o, to, .. } => {
                assert_eq!(Some(o), owner);
                assert!(!states[o].serves_own_sessions() || exclude == Some(o));
                assert!(takes_new(to) && to != o);
            }
            Decision::Fallback { to, down, owner: moved } => {
                assert_eq!(moved.map(|m| m.0), owner);
                assert!(!any_new && exclude != Some(to) && Some(to) != owner);
                assert!(if down { maybe_back(to) } else { alive_up(to) });
            }
            Decision::NoBackend => {
                let owner_ok =
                    owner.is_some_and(|o| states[o].serves_own_sessions() && exclude != Some(o));
                let other = |i: usize| exclude != Some(i) && Some(i) != owner;
                let fallback = (0..PREFIXES.len()).any(|i| other(i) && (alive_up(i) || maybe_back(i)));
                assert!(!owner_ok && !any_new && !fallback);
            }
        }
    }
});
