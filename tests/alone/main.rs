//! Tests that measure the whole process: its open descriptors, its RSS, its live heap (`soak`
//! counts every allocation with a `#[global_allocator]`). The engine runs in the test process,
//! so any other test running beside them would move their numbers: they have this binary to
//! themselves (cargo builds `tests/alone/main.rs` as the test target `alone`), and each test
//! holds [`alone`] for its whole run, so they also run one at a time.

use std::sync::{Mutex, MutexGuard};

#[path = "../common/mod.rs"]
mod common;

mod memory;
mod soak;

static ALONE: Mutex<()> = Mutex::new(());

/// Held by every test of this binary for its whole run: one test at a time.
pub fn alone() -> MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}
