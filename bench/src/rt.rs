//! One monoio runtime per thread, for the generator and the backend alike: wtgate's own
//! ([`wtgate::net::runtime`]), so the instrument's ring is set up as the proxy's is.
//!
//! With `COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN` completions wait until the thread next
//! enters the kernel instead of interrupting it ([docs/runtime.md]), so the instrument does not
//! spend on its own core what it is there to measure on the proxy's. Older kernels get fewer
//! flags; the choice is logged once per process on stderr (stdout is the results').
//!
//! [docs/runtime.md]: ../../docs/runtime.md

use std::io;
use std::sync::Once;

/// A monoio runtime on io_uring, with timers.
pub type Rt = wtgate::net::ShardRuntime;

static LOGGED: Once = Once::new();

/// Builds this thread's runtime with the best ring setup the kernel takes.
pub fn runtime() -> io::Result<Rt> {
    match wtgate::net::runtime() {
        Ok((rt, name)) => {
            LOGGED.call_once(|| {
                let entries = wtgate::net::RING_ENTRIES;
                eprintln!("wtgate-bench: monoio 0.2 on io_uring, {name}, {entries} entries");
            });
            Ok(rt)
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("io_uring runtime: {e}"))),
    }
}
