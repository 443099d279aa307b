//! Shared test infrastructure, one module per purpose:
//!
//! - [`wire`]: a small blocking HTTP/1.1 client ([`Wire`], [`Response`], [`send_request`],
//!   [`get`]); the backends read requests with it too.
//! - [`backend`]: the Wt-like [`TestBackend`], which records everything it receives and answers
//!   according to a [`Behavior`].
//! - [`ws`]: WebSocket frames for both sides and [`ws_connect`].
//! - [`proxy`]: the proxy under test ([`start_proxy`], [`proxy_config`], [`start_pair`]).
//! - [`browser`]: headless Chromium over the DevTools protocol ([`Browser`]).
//! - [`ports`]: [`free_port`], ports outside the kernel's ephemeral range, once each per process.
//! - [`util`]: [`Rng`], [`Fnv`], [`closed_port`], [`vm_rss_bytes`] and other small helpers.
//!
//! Everything is std-only (threads + blocking sockets). Every socket has read and write timeouts
//! ([`IO_TIMEOUT`]) and every loop is bounded, so a broken proxy makes a test fail, not hang.
//!
//! The backends use their own WebSocket codec (not the proxy's), so a quirk shared by the proxy
//! and the test cannot hide a bug there.

#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod binary;
pub mod browser;
pub mod certs;
pub mod ports;
pub mod proxy;
pub mod util;
pub mod wire;
pub mod ws;

pub use backend::*;
pub use binary::*;
pub use browser::*;
pub use ports::*;
pub use proxy::*;
pub use util::*;
pub use wire::*;
pub use ws::*;
