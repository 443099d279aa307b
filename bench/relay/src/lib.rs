//! Minimal L4 relays for the runtime bake-off (`scripts/bakeoff.sh`, `docs/runtime.md`).
//!
//! Each binary (`relay-glommio`, `relay-monoio`, `relay-uring`) does the same thing on one thread
//! pinned to one core: accept, connect to the one backend per client connection, copy bytes both
//! ways with 16 KiB buffers until EOF, pass a half-close on, close both sockets when both directions
//! are done. TCP_NODELAY is set on both sockets of every pair (HAProxy does the same). No timeouts,
//! no limits, no routing: what differs between them is only how the runtime drives the sockets.
//!
//! Each prints `listening on ADDR` on stdout once it accepts, so `--listen 127.0.0.1:0` works.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};

pub mod glommio_relay;
pub mod monoio_relay;
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
}

const USAGE: &str = "usage: relay-<runtime> --listen ADDR --backend ADDR [--core N]";

impl Args {
    /// Parses `--listen ADDR --backend ADDR [--core N]`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut listen = None;
        let mut backend = None;
        let mut core = None;
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
                _ => return Err(format!("unknown option {flag}\n{USAGE}")),
            }
        }
        Ok(Args {
            listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
            backend: backend.ok_or_else(|| format!("--backend is required\n{USAGE}"))?,
            core,
        })
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
    }
}
