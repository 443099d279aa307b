//! `parse_proxy_header` on arbitrary bytes, whole and as every prefix a socket could deliver.
//!
//! Invariants: no panic; a header lies inside the input and within `MAX_PROXY_HEADER_LEN`; every
//! prefix answers "incomplete" or the whole input's answer, and a header stays incomplete until
//! its last byte (so however the bytes are split across reads, the outcome is the same); an
//! input of `MAX_PROXY_HEADER_LEN` bytes is always decided; a header written back in v1 or v2
//! form parses to the same header.

#![no_main]

mod common;

use std::net::IpAddr;

use common::*;
use libfuzzer_sys::fuzz_target;
use wtgate::h1::{MAX_PROXY_HEADER_LEN, ProxyHeader, parse_proxy_header};

/// The header as a v1 line, where v1 can say it (v1 has no TLVs, so no `ssl`).
fn as_v1(h: &ProxyHeader) -> Option<Vec<u8>> {
    if h.ssl {
        return None;
    }
    let line = match (h.source, h.destination) {
        (Some(s), Some(d)) => {
            let proto = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            let (sip, dip) = (s.ip(), d.ip());
            format!("PROXY {proto} {sip} {dip} {} {}\r\n", s.port(), d.port())
        }
        _ => "PROXY UNKNOWN\r\n".to_string(),
    };
    Some(line.into_bytes())
}

/// The header as a v2 PROXY command: AF_INET/AF_INET6 or AF_UNSPEC, and an SSL TLV when `ssl`.
fn as_v2(h: &ProxyHeader) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (h.source, h.destination) {
        (Some(s), Some(d)) => {
            for a in [s, d] {
                match a.ip() {
                    IpAddr::V4(ip) => block.extend_from_slice(&ip.octets()),
                    IpAddr::V6(ip) => block.extend_from_slice(&ip.octets()),
                }
            }
            block.extend_from_slice(&s.port().to_be_bytes());
            block.extend_from_slice(&d.port().to_be_bytes());
            if s.is_ipv4() { 0x11 } else { 0x21 }
        }
        _ => 0x00,
    };
    if h.ssl {
        block.extend_from_slice(&[0x20, 0x00, 0x05, 0x01, 0, 0, 0, 0]);
    }
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, family]);
    out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&block);
    out
}

fn reparses_to(bytes: &[u8], h: &ProxyHeader) {
    assert_eq!(
        parse_proxy_header(bytes),
        Ok(Some((*h, bytes.len()))),
        "{bytes:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let whole = parse_proxy_header(data);
    if data.len() >= MAX_PROXY_HEADER_LEN {
        assert_ne!(whole, Ok(None), "undecided after the bound");
    }
    let header_len = match whole {
        Ok(Some((h, n))) => {
            assert!(n <= data.len() && n <= MAX_PROXY_HEADER_LEN, "{n}");
            assert_eq!(parse_proxy_header(&data[..n]), whole, "the header alone");
            assert_eq!(h.source.is_some(), h.destination.is_some());
            if let (Some(s), Some(d)) = (h.source, h.destination) {
                assert_eq!(s.is_ipv4(), d.is_ipv4(), "one family per header");
            }
            if let Some(v1) = as_v1(&h) {
                reparses_to(&v1, &h);
            }
            reparses_to(&as_v2(&h), &h);
            Some(n)
        }
        _ => None,
    };
    let prefix_agrees = |k: usize| {
        let part = parse_proxy_header(&data[..k]);
        if header_len.is_some_and(|n| k < n) {
            assert_eq!(part, Ok(None), "prefix {k} of a {header_len:?}-byte header");
        } else {
            assert!(
                part == Ok(None) || part == whole,
                "prefix {k}: {part:?} vs {whole:?}"
            );
        }
    };
    let mut rng = Rng::from_bytes(data);
    for k in random_cuts(&mut rng, data.len()) {
        prefix_agrees(k);
    }
    if data.len() <= 512 {
        every_byte(data.len()).into_iter().for_each(prefix_agrees);
    }
});
