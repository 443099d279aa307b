//! wtgate: a reverse proxy for fleets of Wt servers, routing each request by its session id.
//!
//! Map of the modules, in the order bytes flow through them:
//! - [`config`]: one `Config` from flags and a TOML config file ([`config::file`]), validated with
//!   messages that name the fix; [`config::reload`] turns a re-read file into the next generation
//!   (backend slots keyed by prefix), which `engine` hands to every shard; [`watch`] polls the
//!   file and says when it changed (`--watch-config`); [`privileges`] drops root once the
//!   listeners are bound (`--user`).
//! - [`engine`]: one pinned monoio runtime (its own io_uring ring) per core, each with its own
//!   `SO_REUSEPORT` listeners; starts and stops the shards.
//! - [`shard`]: one shard's state — router, its copy of backend health and admin states, pool,
//!   read buffers, counters, gossip to the other shards.
//! - [`tls`]: what `tls` listeners serve: certificates read and checked, picked by SNI, and the
//!   rustls config every shard shares (tickets too); `net::tls` runs handshakes and records on
//!   the shard's own sockets.
//! - [`proxy`]: one client connection's life: client loop → exchange (request and response
//!   streamed together) with one try per upstream → next request, or a tunnel after `101`.
//! - [`h1`] (the `wtgate-h1` crate): sans-IO HTTP/1.1: request/response heads, body framing,
//!   chunked decoding, the PROXY protocol header, typed errors, and the rewriting of heads on
//!   their way through.
//! - [`route`]: pure routing: the `wtd` query parameter, its owner, weighted round-robin, and
//!   what a request falls back to when no backend is ready (draining ones, then down ones worth a
//!   try; nothing: the request waits for one to come back).
//! - [`net`]: the thin runtime (monoio) shell: a socket handle one task reads while another
//!   writes, timeouts, read buffers lent to the ring, channels between shards.
//! - [`pool`]: per-shard idle keep-alive connections to backends, reused only if they stayed
//!   silent since their last response.
//! - [`health`]: each shard's copy of backend states, rise/fall rules, admin states, the gossip
//!   messages; [`check`] runs the active checks.
//! - [`sessions`]: the live Wt sessions each shard saw their owners answer (an open WebSocket, or
//!   answers as their own), bounded per client address, merged on request.
//! - [`access_log`]: one line per request and per tunnel, formatted on the shards into buffers of
//!   their own, written by a thread of its own that never holds a shard up.
//! - [`metrics`]: counters per shard, summed for the engine; [`log`] rate-limits failure lines;
//!   [`trim`] returns freed memory to the system off the shards.
//! - [`admin`]: the `--admin` HTTP listener (metrics, status page, backend states), on threads of
//!   its own outside the shards, and the client of `wtgate admin`, which asks several instances
//!   at once ([`admin::client::Fleet`]).
//!
//! The demo backends (`wtgate demo`) and the WebSocket codec the tests and the bench use are the
//! `wtgate-demo` crate (`demo/`), which needs only `wtgate-h1`.

pub mod access_log;
pub mod admin;
pub mod check;
pub mod config;
pub mod engine;
pub mod health;
pub mod log;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod privileges;
pub mod proxy;
pub mod route;
pub mod sessions;
pub mod shard;
pub mod tls;
pub mod trim;
pub mod watch;

/// The HTTP/1.1 core is a crate of its own (`h1/`), usable without the proxy; re-exported so that
/// `wtgate::h1::…` and `crate::h1::…` keep naming it.
pub use wtgate_h1 as h1;
