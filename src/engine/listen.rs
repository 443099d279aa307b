//! Listening sockets, bound on the engine's thread before any shard starts: one per shard per
//! listen address, all with `SO_REUSEPORT`, so the kernel spreads connections over the shards.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::engine::StartError;

/// Binds every listen address once per shard: `sockets[shard][listen address]`, and the bound
/// addresses (port 0 resolved once, so that every shard listens on the same port).
pub fn bind_all(
    cfg: &Config,
    shards: usize,
) -> Result<(Vec<Vec<Socket>>, Vec<SocketAddr>), StartError> {
    let mut sockets: Vec<Vec<Socket>> = (0..shards).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for want in cfg.listen.iter().map(|l| l.addr) {
        let bind_err = |err| StartError::Bind { addr: want, err };
        probe_free(want).map_err(bind_err)?;
        let first = bind_listener(want).map_err(bind_err)?;
        let actual = first
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(want);
        sockets[0].push(first);
        for shard in sockets.iter_mut().skip(1) {
            shard.push(bind_listener(actual).map_err(bind_err)?);
        }
        addrs.push(actual);
    }
    Ok((sockets, addrs))
}

/// `SO_REUSEPORT` would let us share a port with a forgotten older process (same user), which then
/// silently takes half the connections. A plain bind first tells whether anyone listens there.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())
}

fn bind_listener(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]:80` and `0.0.0.0:80` can then both be listed, as with HAProxy's `v6only`.
        s.set_only_v6(true)?;
    }
    // Left blocking: io_uring then waits for connections with a poll of its own, where an
    // O_NONBLOCK socket would have its accepts fail with EAGAIN.
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s)
}
