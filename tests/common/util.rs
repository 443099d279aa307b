//! Small utilities: seeded randomness, checksums, free and closed ports, this process's memory.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};

/// SplitMix64: small, seeded, good enough to pick sizes and fill buffers.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.next_u64() % (hi - lo + 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
    /// `n` characters of `[0-9A-Za-z]`, like a Wt session id.
    pub fn alnum(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..n)
            .map(|_| ALPHABET[(self.next_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

/// The body of `n` bytes that the echo backend sends for `seed` (and the client expects).
pub fn gen_body(seed: u64, n: usize) -> Vec<u8> {
    Rng::new(seed).bytes(n)
}

/// FNV-1a 64.
#[derive(Clone, Copy)]
pub struct Fnv(u64);
impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}
pub fn fnv(data: &[u8]) -> u64 {
    let mut f = Fnv::new();
    f.update(data);
    f.finish()
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An address where nothing listens, for "backend down": a port from [`super::ports`], which no
/// test running in parallel can be handed and bring the "down" backend to life.
pub fn closed_port() -> SocketAddr {
    super::ports::free_addr()
}

/// The value of query parameter `name` in `target` (no decoding).
pub fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let q = target.split_once('?')?.1;
    let q = q.split('#').next().unwrap();
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// A Wt-like session id: prefix + 16 of `[0-9A-Za-z]`.
pub fn session_id(rng: &mut Rng, prefix: &str) -> String {
    format!("{prefix}{}", rng.alnum(16))
}

/// Resident memory of this test process (the engine runs in it), in bytes.
pub fn vm_rss_bytes() -> usize {
    rss_of("self")
}

/// Resident memory of process `pid` (a number, or `self`), in bytes.
pub fn rss_of(pid: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}
