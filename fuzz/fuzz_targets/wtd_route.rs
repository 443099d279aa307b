//! `find_wtd` and `Router::route` on arbitrary request-targets and backend states.
//!
//! Input: a first byte choosing backend states, the rest is the request-target.
//! Invariants: no panic; a found value is the first `wtd` parameter of the query (after the first
//! `?`, before any `#`); the owner's prefix and id length match exactly; a request only goes to a
//! backend that may take it (owner: up and not in maintenance; others: up and ready); no usable
//! backend is `NoBackend`.

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
    let Some((&sel, target)) = data.split_first() else {
        return;
    };
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
            }
        })
        .collect();
    let owner = found.and_then(|v| router.owner(v));
    if let (Some(o), Some(v)) = (owner, found) {
        let p = PREFIXES[o].as_bytes();
        assert!(v.starts_with(p) && v.len() == p.len() + cfg.session_id_length);
    }
    for exclude in [None, Some(usize::from(sel) % PREFIXES.len())] {
        let takes_new = |i: usize| {
            states[i].takes_new_sessions() && exclude != Some(i) && cfg.backends[i].weight > 0
        };
        let any_new = (0..PREFIXES.len()).any(takes_new);
        match router.route(target, &states, exclude) {
            Decision::Owner(o) => {
                assert_eq!(Some(o), owner);
                assert!(states[o].serves_own_sessions() && exclude != Some(o));
            }
            Decision::Balanced(b) => {
                assert!(owner.is_none());
                assert!(takes_new(b));
            }
            Decision::Redispatched { owner: o, to } => {
                assert_eq!(Some(o), owner);
                assert!(!states[o].serves_own_sessions() || exclude == Some(o));
                assert!(takes_new(to));
            }
            Decision::NoBackend => {
                let owner_ok =
                    owner.is_some_and(|o| states[o].serves_own_sessions() && exclude != Some(o));
                assert!(!owner_ok && !any_new);
            }
        }
    }
});
