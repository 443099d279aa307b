//! Hands memory that a burst of connections left behind back to the system, from a thread of its
//! own: `malloc_trim` walks (and locks) malloc's arenas, which is no work for a shard that should
//! be serving requests. Shards only raise a flag; the trimmer looks at it once a second.
//!
//! Only glibc has `malloc_trim`; elsewhere requests are ignored and no thread is started.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the trimmer looks for requests.
const EVERY: Duration = Duration::from_secs(1);

/// What a shard holds to ask for a trim.
#[derive(Clone, Default)]
pub struct TrimHandle(Arc<AtomicBool>);

impl TrimHandle {
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The trimming thread; dropping it stops the thread.
pub struct Trimmer {
    handle: TrimHandle,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Trimmer {
    pub fn start() -> Trimmer {
        let handle = TrimHandle::default();
        let (stop, stopped) = mpsc::channel::<()>();
        let wanted = handle.0.clone();
        let thread = cfg!(all(target_os = "linux", target_env = "gnu"))
            .then(|| {
                std::thread::Builder::new()
                    .name("wtgate-trim".into())
                    .spawn(move || {
                        // Ends when the Trimmer drops its sender.
                        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY)
                        {
                            if wanted.swap(false, Ordering::Relaxed) {
                                trim();
                            }
                        }
                    })
                    .ok()
            })
            .flatten();
        Trimmer {
            handle,
            stop: Some(stop),
            thread,
        }
    }

    pub fn handle(&self) -> TrimHandle {
        self.handle.clone()
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
