//! The integration tests, in one binary (cargo builds `tests/it/main.rs` as the test target
//! `it`): one link instead of one per file, and one process whose test threads are kept busy
//! across all modules. Run one module with `cargo test --test it routing::`.
//!
//! Each module starts its own backends and proxies on ports of their own, so the modules run
//! side by side. Tests that measure the whole process (open descriptors, RSS, the live heap)
//! are not here: they are in `tests/alone/`, a process of their own.

#[path = "../common/mod.rs"]
mod common;

mod access_log;
mod admin;
mod backend_responses;
mod bad_input;
mod bodies;
mod cli;
mod failure;
mod faults;
mod health;
mod instances;
mod load;
mod own_faults;
mod page_loads;
mod pipelining;
mod reload;
mod routing;
mod sessions;
mod slow_clients;
mod splice;
mod stray;
mod tls;
mod tls_browser;
mod websocket;
