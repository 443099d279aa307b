//! Ports for tests, handed out by one allocator per test process from outside the kernel's
//! ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`).
//!
//! A port found free by binding and releasing it is free only until the next `bind(…:0)` or
//! outgoing connect of a test running in parallel, which the kernel serves from the ephemeral
//! range. Ports outside it are never picked by the kernel, and this allocator gives each out once
//! per process, so a port handed out here stays free until the test itself binds it: for the
//! wtgate binary's listeners, a backend that is "down" now and started later on the same port,
//! or a backend restarted where it listened.

use std::net::SocketAddr;
use std::sync::Mutex;

/// The ports outside the ephemeral range that tests may use: the larger of the gaps below and
/// above it (1024..32768 with Linux's default 32768-60999).
fn usable_range() -> Option<(u16, u16)> {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|v| v.parse::<u32>().ok());
    let (lo, hi) = match (it.next(), it.next()) {
        (Some(lo), Some(hi)) => (lo, hi),
        _ => (32_768, 60_999),
    };
    let below = (10_000u32.min(lo), lo);
    let above = (hi + 1, 65_536);
    let (start, end) = if below.1.saturating_sub(below.0) >= above.1 - above.0 {
        below
    } else {
        above
    };
    if end.saturating_sub(start) < 1_000 {
        return None;
    }
    Some((start as u16, (end - 1) as u16))
}

/// Where the ephemeral range leaves no room: a port the kernel picks, released, as before this
/// allocator, with the chance of a clash that comes with it, said once.
fn kernel_port() -> u16 {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "tests: net.ipv4.ip_local_port_range leaves no ports outside it; test ports may \
             clash (sysctl net.ipv4.ip_local_port_range='32768 60999' avoids it)"
        )
    });
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A port on 127.0.0.1 where nothing listens now and that no other test of this process will be
/// given. Each candidate is checked with a bind (without `SO_REUSEADDR`, so that a port with
/// connections still in TIME_WAIT is passed over too).
pub fn free_port() -> u16 {
    static NEXT: Mutex<Option<Option<(u16, u16, u32)>>> = Mutex::new(None);
    let mut next = NEXT.lock().unwrap();
    let range = next.get_or_insert_with(|| {
        let (start, end) = usable_range()?;
        // Processes started one after the other (each test binary, or several runs at once)
        // begin far apart: pids are often consecutive.
        let spread = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9);
        let offset = (spread % u64::from(end - start)) as u32;
        Some((start, end, offset))
    });
    let Some((start, end, cursor)) = range else {
        return kernel_port();
    };
    let span = u32::from(*end - *start) + 1;
    for _ in 0..span {
        let port = *start + (*cursor % span) as u16;
        *cursor = cursor.wrapping_add(1);
        if bind_exclusive(port) {
            return port;
        }
    }
    panic!("no free port in {start}..={end}");
}

/// 127.0.0.1 and a port from [`free_port`]: where a test starts a backend it will stop and start
/// again at the same address, or names a backend that is down.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn bind_exclusive(port: u16) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    let Ok(s) = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) else {
        return false;
    };
    s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .is_ok()
}
