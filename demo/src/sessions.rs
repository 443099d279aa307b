//! The session table of one demo backend: ids like Wt's (its prefix and 16 `[0-9A-Za-z]`) and the
//! requests seen in each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Characters after the prefix in a session id (Wt's default `session-id-length`).
pub const SESSION_ID_LEN: usize = 16;

const MAX_SESSIONS: usize = 100_000;
const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub(crate) struct Sessions {
    prefix: String,
    seq: AtomicU64,
    salt: u64,
    /// Known session ids → requests seen in that session (the creating request is #1).
    ids: Mutex<HashMap<String, u64>>,
}

impl Sessions {
    pub(crate) fn new(prefix: &str, salt: u64) -> Sessions {
        Sessions {
            prefix: prefix.to_string(),
            seq: AtomicU64::new(0),
            salt,
            ids: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of sessions currently known.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Counts a request in a known session; returns its number in the session, `None` if unknown.
    pub(crate) fn touch(&self, wtd: &str) -> Option<u64> {
        let mut sessions = self.lock();
        let n = sessions.get_mut(wtd)?;
        *n += 1;
        Some(*n)
    }

    /// A new session, counted as its first request.
    pub(crate) fn create(&self) -> String {
        let mut sessions = self.lock();
        loop {
            let id = self.random_id();
            if !sessions.contains_key(&id) {
                if sessions.len() >= MAX_SESSIONS {
                    // Bounded memory: forget an arbitrary old session.
                    if let Some(old) = sessions.keys().next().cloned() {
                        sessions.remove(&old);
                    }
                }
                sessions.insert(id.clone(), 1);
                return id;
            }
        }
    }

    /// `prefix` + 16 chars of `[0-9A-Za-z]` from xorshift64, seeded from time, a counter and a salt.
    fn random_id(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut x = splitmix64(nanos ^ self.salt ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        let mut id = String::with_capacity(self.prefix.len() + SESSION_ID_LEN);
        id.push_str(&self.prefix);
        while id.len() < self.prefix.len() + SESSION_ID_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (x >> 58) as usize; // 0..64; reject 62, 63 to stay uniform
            if c < ALNUM.len() {
                id.push(ALNUM[c] as char);
            }
        }
        id
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
