//! `parse_request` on arbitrary bytes, with the default limits and with small ones.
//!
//! Invariants: no panic; a parsed head lies inside the input and inside the limits, parses the same
//! from exactly its own bytes, is incomplete one byte shorter; an error does not depend on bytes
//! after it; the head we forward re-parses to the same method, target, version and framing.

#![no_main]

mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use wtgate::h1::{ForwardOptions, Limits, parse_request, write_forward_request};

fuzz_target!(|data: &[u8]| {
    for limits in &LIMITS {
        check(data, limits);
    }
});

fn check(data: &[u8], limits: &Limits) {
    match parse_request(data, limits) {
        Ok(Some(h)) => {
            assert!(h.head_len <= data.len() && h.head_len <= limits.max_head_bytes);
            assert!(h.headers.len() <= limits.max_headers);
            for r in [&h.method, &h.target]
                .into_iter()
                .chain(h.headers.iter().flat_map(|x| [&x.name, &x.value]))
            {
                assert!(
                    r.start <= r.end && r.end <= h.head_len,
                    "{r:?} outside the head"
                );
            }
            assert!(!h.method.is_empty() && !h.target.is_empty());
            // The bytes after the head (body, next request) play no part.
            assert_eq!(
                parse_request(&data[..h.head_len], limits),
                Ok(Some(h.clone()))
            );
            assert_eq!(parse_request(&data[..h.head_len - 1], limits), Ok(None));
            for opts in [
                ForwardOptions {
                    forwarded_for: None,
                    proto: "http",
                    trusted: false,
                },
                ForwardOptions {
                    forwarded_for: Some("127.0.0.1"),
                    proto: "http",
                    trusted: false,
                },
                ForwardOptions {
                    forwarded_for: Some("127.0.0.1"),
                    proto: "https",
                    trusted: true,
                },
            ] {
                let mut out = Vec::new();
                write_forward_request(&mut out, data, &h, &opts);
                let h2 = match parse_request(&out, &ROOMY) {
                    Ok(Some(h2)) => h2,
                    other => panic!(
                        "forwarded head does not re-parse: {other:?}\n{}",
                        String::from_utf8_lossy(&out)
                    ),
                };
                assert_eq!(h2.head_len, out.len());
                assert_eq!(&out[h2.method.clone()], &data[h.method.clone()]);
                assert_eq!(&out[h2.target.clone()], &data[h.target.clone()]);
                assert_eq!(h2.version, h.version);
                assert_eq!(h2.framing, h.framing, "{}", String::from_utf8_lossy(&out));
                assert_eq!(h2.upgrade, h.upgrade);
                assert_eq!(h2.is_head, h.is_head);
            }
        }
        Ok(None) => assert!(data.len() < limits.max_head_bytes),
        Err(e) => {
            assert!(
                is_request_error_status(e.status()),
                "{e:?} -> {}",
                e.status()
            );
            // Decided on the bytes seen so far: more input cannot change it.
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\nX");
            assert_eq!(parse_request(&more, limits), Err(e));
        }
    }
}
