//! Helpers shared by the fuzz targets (each target includes this file with `mod common;`).

#![allow(dead_code)]

use wtgate::h1::Limits;

/// SplitMix64, seeded from the input itself, so a crash reproduces from its artifact alone.
pub struct Rng(u64);

impl Rng {
    pub fn from_bytes(data: &[u8]) -> Rng {
        // FNV-1a of the input: every byte moves the split points.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Sorted cut points in `0..=len`: a few random ones, as a socket would deliver the bytes.
pub fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let n = rng.below(12);
    let mut cuts: Vec<usize> = (0..n).map(|_| rng.below(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Every position: one byte per read (only for short inputs, it is quadratic for heads).
pub fn every_byte(len: usize) -> Vec<usize> {
    (1..len).collect()
}

/// The limits the proxy uses by default, and small ones that short inputs can exceed.
pub const LIMITS: [Limits; 2] = [
    Limits {
        max_head_bytes: 16 * 1024,
        max_headers: 100,
    },
    Limits {
        max_head_bytes: 200,
        max_headers: 4,
    },
];

/// Limits for re-parsing a head we wrote ourselves (it may have grown by X-Forwarded-*).
pub const ROOMY: Limits = Limits {
    max_head_bytes: 1 << 20,
    max_headers: 1000,
};

/// Every status a request error may map to (docs/design.md "Behaviour").
pub fn is_request_error_status(s: u16) -> bool {
    matches!(s, 400 | 405 | 431 | 505)
}
