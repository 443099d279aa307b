//! wtgate-demo: the Wt-like backends behind `wtgate demo` (also used by tests), and [`ws`], the
//! sans-IO WebSocket codec they, the tests and the bench share.
//!
//! A crate of its own so that the `wtgate` binary can serve the demo without the proxy library
//! carrying a backend and a frame codec it never uses (the proxy only tunnels WebSocket bytes).

mod server;
pub mod ws;

pub use server::{DemoBackend, SESSION_ID_LEN};
