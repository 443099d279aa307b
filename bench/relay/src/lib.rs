//! Minimal L4 relays for the runtime bake-off (`scripts/bakeoff.sh`, `docs/runtime.md`).
//!
//! Each binary (`relay-glommio`, `relay-monoio`, `relay-uring`) does the same thing on one thread
//! pinned to one core: accept, connect to the one backend per client connection, copy bytes both
//! ways with 16 KiB buffers until EOF, pass a half-close on, close both sockets when both directions
//! are done. TCP_NODELAY is set on both sockets of every pair (HAProxy does the same). No timeouts,
//! no limits, no routing: what differs between them is only how the runtime drives the sockets.
//!
//! `relay-monoio --splice MODE` moves the bytes with splice(2) through a pipe pair instead of
//! copying them through a user-space buffer (`splice_relay`, docs/splice.md).
//!
//! Each prints `listening on ADDR` on stdout once it accepts, so `--listen 127.0.0.1:0` works.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};

pub mod glommio_relay;
pub mod monoio_relay;
pub mod splice_relay;
pub mod uring_relay;

/// Bytes per read buffer, in every relay.
pub const BUF_SIZE: usize = 16 * 1024;

/// Command line shared by all relays.
#[derive(Clone, Debug)]
pub struct Args {
    pub listen: SocketAddr,
    pub backend: SocketAddr,
    /// Core to pin the one relay thread to; unpinned when absent.
    pub core: Option<usize>,
    /// How bytes cross the relay (only `relay-monoio` takes anything but `Copy`).
    pub splice: Splice,
}

/// How a relay moves bytes from one socket to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Splice {
    /// Read into a user-space buffer, write it out (the default, every relay).
    Copy,
    /// splice(2) socket → pipe → socket, non-blocking syscalls, readiness from io_uring polls.
    Poll,
    /// IORING_OP_SPLICE socket → pipe → socket (monoio's `splice` feature).
    Uring,
    /// Copy until a read fills the buffer, then `Poll` splicing until the stream slows down.
    Auto,
}

impl std::str::FromStr for Splice {
    type Err = String;
    fn from_str(s: &str) -> Result<Splice, String> {
        match s {
            "off" | "copy" => Ok(Splice::Copy),
            "poll" => Ok(Splice::Poll),
            "uring" => Ok(Splice::Uring),
            "auto" => Ok(Splice::Auto),
            _ => Err("expected off, poll, uring or auto".into()),
        }
    }
}

const USAGE: &str = "usage: relay-<runtime> --listen ADDR --backend ADDR [--core N] \
                     [--splice off|poll|uring|auto (relay-monoio only)]";

impl Args {
    /// Parses `--listen ADDR --backend ADDR [--core N] [--splice MODE]`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut listen = None;
        let mut backend = None;
        let mut core = None;
        let mut splice = Splice::Copy;
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.into());
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--listen" => listen = Some(value.parse().map_err(|e| bad(&e))?),
                "--backend" => backend = Some(value.parse().map_err(|e| bad(&e))?),
                "--core" => core = Some(value.parse().map_err(|e| bad(&e))?),
                "--splice" => splice = value.parse().map_err(|e| bad(&e))?,
                _ => return Err(format!("unknown option {flag}\n{USAGE}")),
            }
        }
        Ok(Args {
            listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
            backend: backend.ok_or_else(|| format!("--backend is required\n{USAGE}"))?,
            core,
            splice,
        })
    }

    /// Refuses `--splice` in a relay that only copies.
    pub fn copy_only(&self, name: &str) -> std::io::Result<()> {
        if self.splice == Splice::Copy {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "{name} only copies; --splice is relay-monoio's"
            )))
        }
    }

    /// Parses the process's arguments, or prints the error and exits with status 2.
    pub fn from_env() -> Args {
        Args::parse(std::env::args().skip(1)).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        })
    }
}

/// Pins the calling thread to `core`, if given.
pub fn pin(core: Option<usize>) -> Result<(), String> {
    let Some(core) = core else { return Ok(()) };
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    let id = ids
        .into_iter()
        .find(|c| c.id == core)
        .ok_or_else(|| format!("--core {core}: no such core available to this process"))?;
    if core_affinity::set_for_current(id) {
        Ok(())
    } else {
        Err(format!("--core {core}: sched_setaffinity failed"))
    }
}

/// A listening socket (backlog 1024) in blocking mode, with SO_REUSEADDR and SO_REUSEPORT as
/// glommio's, monoio's and HAProxy's listeners have: a relay restarted on the port of one that just
/// stopped binds despite the old connections still in TIME_WAIT there.
pub fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Says where the relay listens, for the script and the tests that started it.
pub fn announce(name: &str, addr: SocketAddr, detail: &str) {
    eprintln!("{name}: {detail}");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Runs a relay's `main` body, printing an error and exiting with status 1 if it fails.
pub fn exit_on_error(name: &str, r: std::io::Result<()>) {
    if let Err(e) = r {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        Args::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_flags() {
        let a = parse("--listen 127.0.0.1:1 --backend 127.0.0.1:2 --core 1").unwrap();
        assert_eq!(a.listen.port(), 1);
        assert_eq!(a.backend.port(), 2);
        assert_eq!(a.core, Some(1));
        assert_eq!(
            parse("--backend 127.0.0.1:2 --listen [::1]:3")
                .unwrap()
                .core,
            None
        );
        assert!(parse("--listen 127.0.0.1:1").is_err());
        assert!(parse("--listen 127.0.0.1:1 --backend x").is_err());
        assert!(parse("--listen 127.0.0.1:1 --backend 127.0.0.1:2 --core").is_err());
        assert!(parse("--bogus 1").is_err());
        let base = "--listen 127.0.0.1:1 --backend 127.0.0.1:2";
        assert_eq!(parse(base).unwrap().splice, Splice::Copy);
        for (mode, want) in [
            ("poll", Splice::Poll),
            ("uring", Splice::Uring),
            ("auto", Splice::Auto),
            ("off", Splice::Copy),
        ] {
            assert_eq!(
                parse(&format!("{base} --splice {mode}")).unwrap().splice,
                want
            );
        }
        assert!(parse(&format!("{base} --splice yes")).is_err());
    }
}
