//! One monoio runtime per thread, for the generator and the backend alike.
//!
//! The ring is set up as the runtime bake-off found cheapest ([docs/runtime.md]): with
//! `COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN` completions wait until the thread next enters the
//! kernel instead of interrupting it, so the instrument does not spend on its own core what it is
//! there to measure on the proxy's. Older kernels get fewer flags; the choice is logged once per
//! process on stderr (stdout is the results').
//!
//! [docs/runtime.md]: ../../docs/runtime.md

use std::io;
use std::sync::Once;

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, Runtime, RuntimeBuilder};

/// A monoio runtime on io_uring, with timers.
pub type Rt = Runtime<TimeDriver<IoUringDriver>>;

/// SQ entries (monoio's default); a full queue is submitted and refilled, so this bounds nothing.
const ENTRIES: u32 = 1024;

/// The flag sets tried in order, with the name logged for the one the kernel took.
const SETUPS: [(&str, bool, bool, bool); 4] = [
    // (name, coop_taskrun, single_issuer, defer_taskrun)
    ("COOP_TASKRUN|SINGLE_ISSUER|DEFER_TASKRUN", true, true, true),
    ("COOP_TASKRUN|SINGLE_ISSUER", true, true, false),
    ("COOP_TASKRUN", true, false, false),
    ("no setup flags", false, false, false),
];

static LOGGED: Once = Once::new();

/// Builds this thread's runtime with the best ring setup the kernel takes.
pub fn runtime() -> io::Result<Rt> {
    let mut last_err = None;
    for (name, coop, single, defer) in SETUPS {
        // monoio 0.2.4 builds on io-uring 0.6, hence the renamed dependency.
        let mut urb = io_uring_06::IoUring::builder();
        if coop {
            urb.setup_coop_taskrun();
        }
        if single {
            urb.setup_single_issuer();
        }
        if defer {
            urb.setup_defer_taskrun();
        }
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(ENTRIES)
            .uring_builder(urb)
            .enable_timer()
            .build();
        match built {
            Ok(rt) => {
                LOGGED.call_once(|| {
                    eprintln!("wtgate-bench: monoio 0.2 on io_uring, {name}, {ENTRIES} entries");
                });
                return Ok(rt);
            }
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.unwrap_or_else(|| io::Error::other("no ring setup worked"));
    Err(io::Error::new(e.kind(), format!("io_uring runtime: {e}")))
}
