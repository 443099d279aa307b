//! `--splice auto` in WebSocket tunnels (docs/splice.md "In the engine"): large chunks move with
//! splice(2), small ones are copied, and every byte arrives, in order, whichever way it went. The
//! backend here is raw: after its 101 it echoes, swallows or sends bytes as each test needs (the
//! proxy relays a tunnel's bytes untouched, so they need not be WebSocket frames). Every test
//! checks the backend's `tunnel_spliced_bytes`, so that none passes on the copy path alone.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use wtgate::config::Splice;

use crate::common::*;

/// What the raw backend does with a tunnel after its 101.
#[derive(Clone, Copy)]
enum Act {
    /// Writes back everything it reads; half-closes at EOF.
    Echo,
    /// Reads to EOF, then sends the FNV hash and length of what it read, and closes.
    Swallow,
    /// Sends `mixed(seed)`, half-closes, then reads to EOF and sends nothing more.
    Send(u64),
}

/// A backend that answers every request with a 101 and then acts; `got` counts the bytes it read
/// in tunnels.
struct RawBackend {
    addr: SocketAddr,
    got: Arc<AtomicU64>,
}

impl RawBackend {
    fn start(act: Act) -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let got = Arc::new(AtomicU64::new(0));
        let counter = got.clone();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let counter = counter.clone();
                thread::spawn(move || {
                    let _ = serve(s, act, &counter);
                });
            }
        });
        RawBackend { addr, got }
    }
}

fn serve(mut s: TcpStream, act: Act, got: &AtomicU64) -> io::Result<()> {
    read_head(&mut s)?;
    s.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )?;
    let mut buf = vec![0; 256 * 1024];
    let mut hash = Fnv::new();
    if let Act::Send(seed) = act {
        for chunk in mixed(seed) {
            s.write_all(&chunk)?;
        }
        s.shutdown(Shutdown::Write)?;
    }
    loop {
        let n = s.read(&mut buf)?;
        got.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            break;
        }
        match act {
            Act::Echo => s.write_all(&buf[..n])?,
            Act::Swallow => hash.update(&buf[..n]),
            Act::Send(_) => {}
        }
    }
    match act {
        Act::Echo => s.shutdown(Shutdown::Write),
        Act::Swallow => {
            let len = got.load(Ordering::Relaxed);
            s.write_all(&[hash.finish().to_be_bytes(), len.to_be_bytes()].concat())
        }
        Act::Send(_) => Ok(()),
    }
}

/// Reads a request head byte by byte, so that nothing after it is taken.
fn read_head(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// Large chunks (64 KiB, 1 MiB) with runs of small ones between them, so that each direction
/// switches to splicing and back more than once.
fn mixed(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for large in [64 << 10, 1 << 20, 64 << 10, 300 << 10] {
        out.push(rng.bytes(large));
        for _ in 0..20 {
            let n = rng.range(7, 127) as usize;
            out.push(rng.bytes(n));
        }
    }
    out
}

fn hash_of(chunks: &[Vec<u8>]) -> (u64, u64) {
    let mut h = Fnv::new();
    let mut len = 0;
    for c in chunks {
        h.update(c);
        len += c.len() as u64;
    }
    (h.finish(), len)
}

/// A proxy with `--splice auto` in front of `b`, and a client whose tunnel is open.
fn tunnel(b: &RawBackend, tweak: impl FnOnce(&mut wtgate::config::Config)) -> (Proxy, TcpStream) {
    let proxy = start_proxy(&[("wt1", b.addr)], |c| {
        c.splice = Splice::Auto;
        tweak(c);
    });
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&ws_upgrade_request("/?wtd=wt1AbCdEfGhIjKlMnOp&request=ws"))
        .unwrap();
    let head = read_head(&mut s).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    (proxy, s)
}

/// Reads to EOF (a reset counts as one: the tunnel ended) into `h`; the bytes read.
fn read_into(s: &mut TcpStream, h: &mut Fnv) -> u64 {
    let (mut len, mut buf) = (0u64, vec![0; 128 * 1024]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => return len,
            Ok(n) => {
                h.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return len,
            Err(e) => panic!("reading the tunnel after {len} bytes: {e}"),
        }
    }
}

fn read_to_end(s: &mut TcpStream) -> (u64, u64) {
    let mut h = Fnv::new();
    let len = read_into(s, &mut h);
    (h.finish(), len)
}

fn spliced(proxy: &Proxy) -> u64 {
    proxy.engine().stats().backends[0].tunnel_spliced_bytes
}

/// Both ways at once: large and small chunks echoed, byte for byte, then the client's half-close
/// comes back as the backend's.
#[test]
fn large_and_small_chunks_echo_intact_both_ways() {
    let b = RawBackend::start(Act::Echo);
    let (proxy, mut s) = tunnel(&b, |_| {});
    let sent = mixed(1);
    let mut w = s.try_clone().unwrap();
    let chunks = sent.clone();
    let writer = thread::spawn(move || {
        for c in &chunks {
            w.write_all(c).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    assert_eq!(read_to_end(&mut s), hash_of(&sent), "echo differs");
    writer.join().unwrap();
    let total = hash_of(&sent).1;
    let stats = &proxy.engine().stats().backends[0];
    assert!(stats.request_bytes >= total, "{stats:?}");
    assert!(
        spliced(&proxy) > total,
        "spliced {} of 2 × {total}",
        spliced(&proxy)
    );
}

/// Client → backend only (the backend answers 16 bytes): that direction spliced, and the client's
/// half-close reached the backend, which then answered through the other direction.
#[test]
fn upload_is_spliced_and_its_half_close_passed_on() {
    let b = RawBackend::start(Act::Swallow);
    let (proxy, mut s) = tunnel(&b, |_| {});
    let sent = mixed(2);
    for c in &sent {
        s.write_all(c).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer).unwrap();
    let (h, len) = hash_of(&sent);
    assert_eq!(answer, [h.to_be_bytes(), len.to_be_bytes()].concat()[..]);
    assert!(spliced(&proxy) >= 1 << 20, "spliced {}", spliced(&proxy));
}

/// Backend → client only, with the client not reading for a while in the middle (the pipe and
/// the socket buffers fill, the proxy waits for room); then the backend's half-close, after which
/// the client's own bytes still reach the backend.
#[test]
fn download_survives_a_stalled_client_and_passes_the_half_close_on() {
    let b = RawBackend::start(Act::Send(3));
    let (proxy, mut s) = tunnel(&b, |_| {});
    let mut first = vec![0u8; 32 << 10];
    s.read_exact(&mut first).unwrap();
    // No readiness signal says "the proxy is blocked on a full client": give it time to be.
    thread::sleep(Duration::from_millis(500));
    let mut h = Fnv::new();
    h.update(&first);
    let len = read_into(&mut s, &mut h) + first.len() as u64;
    assert_eq!((h.finish(), len), hash_of(&mixed(3)), "download differs");
    s.write_all(b"after your half-close").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    eventually("the backend reading the client's bytes", || {
        (b.got.load(Ordering::Relaxed) == 21).then_some(())
    });
    assert!(spliced(&proxy) >= 1 << 20, "spliced {}", spliced(&proxy));
}

/// Sends 256 KiB and reads the echo.
fn echo_burst(s: &mut TcpStream) {
    let burst = Rng::new(4).bytes(256 << 10);
    let mut w = s.try_clone().unwrap();
    let copy = burst.clone();
    let writer = thread::spawn(move || w.write_all(&copy).unwrap());
    let mut back = vec![0; burst.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == burst, "echo differs");
}

/// Sends 256 KiB and reads the echo: both directions are splicing, and wait for more.
fn splice_a_burst(s: &mut TcpStream, proxy: &Proxy) {
    echo_burst(s);
    assert!(spliced(proxy) > 0, "nothing spliced");
}

fn expect_end(s: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("the tunnel did not end: {other:?}"),
    }
}

/// A tunnel idle after a burst (its directions waiting in splice mode) is still closed by the
/// tunnel timeout.
#[test]
fn idle_splicing_tunnel_is_closed_by_the_tunnel_timeout() {
    let b = RawBackend::start(Act::Echo);
    let (proxy, mut s) = tunnel(&b, |c| c.timeouts.tunnel = Duration::from_secs(1));
    splice_a_burst(&mut s, &proxy);
    expect_end(&mut s);
}

/// Stopping the engine closes a tunnel whose directions are splicing.
#[test]
fn engine_drop_closes_a_splicing_tunnel() {
    let b = RawBackend::start(Act::Echo);
    let (proxy, mut s) = tunnel(&b, |_| {});
    splice_a_burst(&mut s, &proxy);
    drop(proxy);
    expect_end(&mut s);
}

/// A tunnel idle after a burst holds no pipe: both directions gave theirs back to the pool once
/// drained (they would each hold one, two descriptors, for as long as the WebSocket is open);
/// and the next burst splices again.
#[test]
fn an_idle_splicing_tunnel_holds_no_pipe() {
    let b = RawBackend::start(Act::Echo);
    let (proxy, mut s) = tunnel(&b, |_| {});
    splice_a_burst(&mut s, &proxy);
    eventually("the pipes back in the pool", || {
        (proxy.engine().stats().pipes == 0).then_some(())
    });
    let before = spliced(&proxy);
    echo_burst(&mut s);
    assert!(spliced(&proxy) > before, "the second burst was not spliced");
}

/// With `--splice off` the same burst is all copied.
#[test]
fn splice_off_copies() {
    let b = RawBackend::start(Act::Echo);
    let (proxy, mut s) = tunnel(&b, |c| c.splice = Splice::Off);
    echo_burst(&mut s);
    assert_eq!(spliced(&proxy), 0);
}
