//! Slow clients (issue 5, item 3): a trickled head is cut off at the request-head timeout and
//! forwards nothing. (The tests that measure this process's memory under slow readers and
//! connection floods are in `tests/alone/memory.rs`: they need a process of their own.)
//!
//! Nothing here asserts on elapsed time.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const SID: &str = "wt1AbCdEfGhIjKlMnOp";

/// Slowloris: one byte of head every 100 ms, with `timeouts.request_head` at 1 s. The head would
/// take 30 s to arrive; the proxy answers 408, closes while the trickle is still going (so the
/// deadline counts from the first byte, not from the last one), and forwards nothing.
#[test]
fn trickled_head_gets_408_at_the_head_timeout() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b.spec()], |c| {
        c.timeouts.request_head = Duration::from_secs(1);
    });
    let mut head = format!("GET /?wtd={SID} HTTP/1.1\r\nHost: x\r\n").into_bytes();
    while head.len() < 300 {
        head.extend_from_slice(b"X-Slow: 1\r\n");
    }
    head.extend_from_slice(b"\r\n");

    let mut w = Wire::connect(proxy.addr);
    let mut writer = w.stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (stop2, sent2, total) = (stop.clone(), sent.clone(), head.len());
    let trickle = thread::spawn(move || {
        for &byte in &head {
            if stop2.load(Ordering::SeqCst) || writer.write_all(&[byte]).is_err() {
                return;
            }
            sent2.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(100));
        }
    });
    let started = Instant::now();
    let r = w.read_response(false);
    let elapsed = started.elapsed();
    let bytes_sent = sent.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let r = r.expect("an answer to the trickled head");
    eprintln!(
        "slowloris: {} after {elapsed:?} and {bytes_sent} of {total} bytes",
        r.status
    );
    assert_eq!(r.status, 408, "{:?} {}", r.head, r.body_str());
    assert!(r.head.has_token("Connection", "close"), "{:?}", r.head);
    assert!(
        bytes_sent < total,
        "the answer came only after the whole head ({bytes_sent} bytes): the deadline moved with \
         every byte"
    );
    w.expect_closed().unwrap();
    trickle.join().unwrap();
    assert_eq!(b.bytes_received(), 0, "{}", b.received_preview());
}
