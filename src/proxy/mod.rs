//! One client connection's life, in the order bytes flow:
//! - [`client`]: the connection — its PROXY header where the listener takes one, then request
//!   heads one after another (keep-alive, pipelining), and the answers of our own to bad ones;
//! - [`exchange`]: one request — the head we forward, its tries, the request body and the response
//!   streamed at the same time, one [`upstream::Progress`] value saying how far a try got;
//! - [`upstream`]: choosing and connecting a backend for a try (routing, pool, connect retries),
//!   and [`upstream::verdict`], the one place that decides whether a failed try is resent,
//!   answered with a status, or ends both connections;
//! - [`tunnel`]: the byte relay after `101 Switching Protocols`;
//! - [`error`]: [`ProxyError`] and [`Rejection`], typed until the edge, counted by kind.
//!
//! All HTTP knowledge comes from the sans-IO [`crate::h1`] core and the shard's state from
//! [`crate::shard`]; this module only moves bytes and decides what to do when a socket fails.

mod client;
mod error;
mod exchange;
mod tunnel;
mod upstream;

pub use client::{Slot, serve};
pub use error::{ProxyError, Rejection};
pub use upstream::{Progress, Verdict, verdict};
