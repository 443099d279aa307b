//! Each relay binary (and `relay-monoio` in each `--splice` mode), started as a child against an
//! in-test echo backend on 127.0.0.1: byte-exact transfer of a few MiB both ways, half-close passed
//! on both ways, a reader that lags (flow control), many concurrent connections, and a backend
//! that refuses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// What the backend sends after it has read EOF, before its own FIN.
const TRAILER: &[u8] = b"backend saw EOF\n";
/// No test waits longer than this for a byte.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Echoes each connection until EOF, then sends `TRAILER` and shuts its write side.
fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(TRAILER);
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// A relay child process, killed when dropped.
struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Relay {
    fn start_with_env(bin: &str, backend: SocketAddr, env: &[(&str, &str)]) -> Relay {
        Relay::start_with(bin, backend, env, &[])
    }

    fn start_with(bin: &str, backend: SocketAddr, env: &[(&str, &str)], args: &[&str]) -> Relay {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--backend", &backend.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{bin} said {line:?}"))
            .parse()
            .unwrap();
        Relay { child, addr }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `len` bytes of a pattern that differs per seed and per offset.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` through the relay in odd-sized writes, half-closes, and checks that exactly
/// `data` + `TRAILER` comes back, then EOF. `lag` delays the first read (the relay must hold
/// back, not lose or reorder).
fn round_trip(relay: SocketAddr, data: Vec<u8>, lag: Duration) {
    let s = TcpStream::connect(relay).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let expected_len = data.len() + TRAILER.len();
    let writer = thread::spawn(move || {
        for chunk in data.chunks(7_777) {
            w.write_all(chunk).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
        data
    });
    thread::sleep(lag);
    let mut got = Vec::with_capacity(expected_len);
    let mut r = s;
    r.read_to_end(&mut got).unwrap();
    let data = writer.join().unwrap();
    assert_eq!(got.len(), expected_len, "bytes back");
    assert!(got[..data.len()] == data[..], "echoed bytes differ");
    assert_eq!(&got[data.len()..], TRAILER);
}

fn big_transfer(bin: &str, args: &[&str]) {
    let relay = Relay::start_with(bin, echo_backend(), &[], args);
    round_trip(relay.addr, pattern(1, 4 << 20), Duration::ZERO);
    // A client that reads nothing for a while: the relay's buffers fill and it must stop reading
    // (flow control), then resume without losing or reordering a byte.
    round_trip(relay.addr, pattern(2, 6 << 20), Duration::from_millis(500));
}

fn half_close_both_ways(bin: &str, args: &[&str]) {
    let relay = Relay::start_with(bin, echo_backend(), &[], args);
    let mut s = TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut four = [0u8; 4];
    s.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");
    // Our FIN reaches the backend, which still answers (the trailer) and then sends its own FIN.
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, TRAILER);
}

fn many_connections(bin: &str, args: &[&str]) {
    many_connections_through(&Relay::start_with(bin, echo_backend(), &[], args));
}

fn many_connections_through(relay: &Relay) {
    let addr = relay.addr;
    let clients: Vec<_> = (0..200u64)
        .map(|i| {
            thread::spawn(move || {
                round_trip(
                    addr,
                    pattern(100 + i, 1000 + 997 * i as usize),
                    Duration::ZERO,
                )
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // The relay is still fine afterwards (slots and buffers were given back).
    round_trip(addr, pattern(7, 1 << 20), Duration::ZERO);
}

fn backend_refuses(bin: &str, args: &[&str]) {
    // Connect is refused there, and the client is closed, not left hanging.
    let (_held, dead) = refusing_addr();
    let relay = Relay::start_with(bin, dead, &[], args);
    for _ in 0..3 {
        let mut s = TcpStream::connect(relay.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected EOF or reset, got {other:?}"),
        }
    }
}

/// An address that refuses connections for as long as the descriptor is held: a socket bound to
/// it but not listening. A port bound and released would be free for any test running beside
/// this one to take (as a listener or as a connect's source port), and then be answered.
fn refusing_addr() -> (std::os::fd::OwnedFd, SocketAddr) {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) has no preconditions; a negative result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a new descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let ptr = (&mut sin as *mut libc::sockaddr_in).cast::<libc::sockaddr>();
    // SAFETY: ptr points at a sockaddr_in of len bytes, live for both calls.
    let bound =
        unsafe { libc::bind(raw, ptr, len) == 0 && libc::getsockname(raw, ptr, &mut len) == 0 };
    assert!(bound, "bind: {}", std::io::Error::last_os_error());
    let port = u16::from_be(sin.sin_port);
    (fd, SocketAddr::from(([127, 0, 0, 1], port)))
}

macro_rules! relay_tests {
    ($module:ident, $bin:literal $(, $arg:literal)*) => {
        mod $module {
            const BIN: &str = env!(concat!("CARGO_BIN_EXE_", $bin));
            const ARGS: &[&str] = &[$($arg),*];
            #[test]
            fn big_transfer() {
                super::big_transfer(BIN, ARGS);
            }
            #[test]
            fn half_close_both_ways() {
                super::half_close_both_ways(BIN, ARGS);
            }
            #[test]
            fn many_connections() {
                super::many_connections(BIN, ARGS);
            }
            #[test]
            fn backend_refuses() {
                super::backend_refuses(BIN, ARGS);
            }
        }
    };
}

relay_tests!(glommio, "relay-glommio");
relay_tests!(monoio, "relay-monoio");
relay_tests!(uring, "relay-uring");
relay_tests!(splice_poll, "relay-monoio", "--splice", "poll");
relay_tests!(splice_uring, "relay-monoio", "--splice", "uring");
relay_tests!(splice_auto, "relay-monoio", "--splice", "auto");

/// `relay-monoio --splice auto` switches between copying and splicing within one connection:
/// bursts (spliced) alternate with runs of small messages (copied again after a few), both ways;
/// every byte must come back in order, and the relay's own count (`WTGATE_RELAY_STATS=1`) must
/// show both paths used and the switch made more than once.
#[test]
fn splice_auto_switches_back_and_forth() {
    let backend = echo_backend();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-monoio"))
        .args(["--listen", "127.0.0.1:0", "--backend", &backend.to_string()])
        .args(["--splice", "auto"])
        .env("WTGATE_RELAY_STATS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let relay = Relay { child, addr };

    let s = TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (mut r, w) = (s.try_clone().unwrap(), s);
    let mut echo = |seed: u64, len: usize| {
        let data = pattern(seed, len);
        let writer = {
            let data = data.clone();
            let mut w = w.try_clone().unwrap();
            thread::spawn(move || w.write_all(&data).unwrap())
        };
        let mut got = vec![0u8; len];
        r.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert!(
            got == data,
            "message {seed} ({len} bytes): echoed bytes differ"
        );
    };
    for burst in 0..6u64 {
        echo(1000 + burst, (64 << 10) << (burst % 5));
        for small in 0..5 {
            echo(2000 + burst * 10 + small, 100 + small as usize);
        }
    }
    w.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, TRAILER);

    // Both directions are done once the client has read EOF; their lines are on stderr.
    let mut relay = relay;
    let stderr = relay.child.stderr.take().unwrap();
    let mut done = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if let Some(stats) = line.strip_prefix("relay-monoio: direction done: ") {
            done.push(stats.to_string());
            if done.len() == 2 {
                break;
            }
        }
    }
    for stats in &done {
        let n: Vec<u64> = stats.split(' ').filter_map(|w| w.parse().ok()).collect();
        let [copied, spliced, switches] = n[..] else {
            panic!("{stats}")
        };
        assert!(copied > 0 && spliced > 0 && switches >= 2, "{stats}");
    }
    assert_eq!(done.len(), 2);
}

/// The relays that only copy refuse `--splice` rather than ignore it.
#[test]
fn splice_is_relay_monoios_alone() {
    for bin in [
        env!("CARGO_BIN_EXE_relay-glommio"),
        env!("CARGO_BIN_EXE_relay-uring"),
    ] {
        let out = Command::new(bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "127.0.0.1:9",
                "--splice",
                "poll",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bin}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("only copies"),
            "{bin}"
        );
    }
}

/// relay-uring with a shared buffer ring of 2 buffers: recvs end with ENOBUFS all the time and
/// fall back to the connection's own buffer; nothing may stall, be lost or reordered.
mod uring_starved {
    const BIN: &str = env!("CARGO_BIN_EXE_relay-uring");
    const ENV: &[(&str, &str)] = &[("WTGATE_RELAY_URING_BUFS", "2")];

    #[test]
    fn big_transfer() {
        let relay = super::Relay::start_with_env(BIN, super::echo_backend(), ENV);
        super::round_trip(
            relay.addr,
            super::pattern(3, 4 << 20),
            super::Duration::ZERO,
        );
        let lag = super::Duration::from_millis(500);
        super::round_trip(relay.addr, super::pattern(4, 6 << 20), lag);
    }

    #[test]
    fn many_connections() {
        let relay = super::Relay::start_with_env(BIN, super::echo_backend(), ENV);
        super::many_connections_through(&relay);
    }
}
