//! `parse_response` on arbitrary bytes (as the answer to a HEAD request or not).
//!
//! Invariants: no panic; a parsed head lies inside the input and the limits, parses the same from
//! its own bytes, is incomplete one byte shorter; an error does not depend on later bytes; the
//! head we send to the client re-parses to the same status and framing.

#![no_main]

mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use wtgate::h1::{Framing, Limits, Version, parse_response, write_forward_response};

fuzz_target!(|data: &[u8]| {
    for limits in &LIMITS {
        for was_head in [false, true] {
            check(data, limits, was_head);
        }
    }
});

fn check(data: &[u8], limits: &Limits, was_head: bool) {
    match parse_response(data, limits, was_head) {
        Ok(Some(h)) => {
            assert!(h.head_len <= data.len() && h.head_len <= limits.max_head_bytes);
            assert!(h.headers.len() <= limits.max_headers);
            for x in &h.headers {
                assert!(x.name.end <= h.head_len && x.value.end <= h.head_len);
                assert!(x.name.start <= x.name.end && x.value.start <= x.value.end);
            }
            assert!((100..=599).contains(&h.status), "status {}", h.status);
            let bodyless =
                was_head || (100..200).contains(&h.status) || matches!(h.status, 204 | 304);
            if bodyless {
                assert_eq!(h.framing, Framing::None);
            }
            if h.framing == Framing::CloseDelimited {
                assert!(
                    !h.keep_alive,
                    "a close-delimited body cannot leave a reusable connection"
                );
            }
            assert_eq!(
                parse_response(&data[..h.head_len], limits, was_head),
                Ok(Some(h.clone()))
            );
            assert_eq!(
                parse_response(&data[..h.head_len - 1], limits, was_head),
                Ok(None)
            );
            for keep_alive in [false, true] {
                for version in [Version::Http10, Version::Http11] {
                    let mut out = Vec::new();
                    write_forward_response(&mut out, data, &h, keep_alive, version);
                    let h2 = match parse_response(&out, &ROOMY, was_head) {
                        Ok(Some(h2)) => h2,
                        other => panic!(
                            "forwarded response head does not re-parse: {other:?}\n{}",
                            String::from_utf8_lossy(&out)
                        ),
                    };
                    assert_eq!(h2.head_len, out.len());
                    assert_eq!(h2.status, h.status);
                    assert_eq!(h2.version, h.version);
                    assert_eq!(h2.framing, h.framing, "{}", String::from_utf8_lossy(&out));
                    if h.status >= 200 && (!keep_alive || h.framing == Framing::CloseDelimited) {
                        assert!(!h2.keep_alive, "the client must be told to close");
                    }
                }
            }
        }
        Ok(None) => assert!(data.len() < limits.max_head_bytes),
        Err(e) => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\nX");
            assert_eq!(parse_response(&more, limits, was_head), Err(e));
        }
    }
}
