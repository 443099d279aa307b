//! splice(2) between two sockets through a pipe, for the tunnel's splice-auto (docs/splice.md
//! "Decision"): the bytes never enter the process. Non-blocking splice(2) syscalls with readiness
//! from the ring (a poll on the socket), never io_uring's splice op (it runs every splice in an
//! io-wq worker thread).
//!
//! Pipes come from a per-shard [`PipePool`] with a cap, and go back to it empty; a pipe that may
//! still hold bytes (its direction failed mid-drain) is closed instead.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use super::Sock;

/// Bytes asked of one splice into the pipe: a default pipe's capacity (16 pages).
pub const PIPE_LEN: usize = 64 * 1024;

/// Empty pipes kept for reuse per shard: each holds two descriptors and no data pages.
const SPARE_PIPES: usize = 16;

/// A shard's pipes: at most `cap` out at once (the rest of the splicing candidates copy), up to
/// [`SPARE_PIPES`] empty ones kept.
pub struct PipePool {
    cap: usize,
    out: Cell<usize>,
    free: RefCell<Vec<(OwnedFd, OwnedFd)>>,
    /// Where the count of pipes out is published (a metric the admin thread reads).
    gauge: Arc<AtomicU64>,
}

impl PipePool {
    pub fn new(cap: usize, gauge: Arc<AtomicU64>) -> PipePool {
        PipePool {
            cap,
            out: Cell::new(0),
            free: RefCell::new(Vec::new()),
            gauge,
        }
    }

    fn set_out(&self, n: usize) {
        self.out.set(n);
        self.gauge.store(n as u64, Ordering::Relaxed);
    }

    /// A pipe, or `None` when the cap is reached or pipe2 fails (`EMFILE`): then copy.
    pub fn take(&self) -> Option<Pipe<'_>> {
        if self.out.get() >= self.cap {
            return None;
        }
        let fds = match self.free.borrow_mut().pop() {
            Some(fds) => fds,
            None => new_pipe().ok()?,
        };
        self.set_out(self.out.get() + 1);
        Some(Pipe {
            pool: self,
            fds: Some(fds),
            held: 0,
        })
    }

    /// Pipes out now (taken and not yet dropped).
    pub fn out(&self) -> usize {
        self.out.get()
    }
}

/// A pipe lent by a [`PipePool`]; `held` is what it holds, so that only an empty one goes back.
pub struct Pipe<'a> {
    pool: &'a PipePool,
    fds: Option<(OwnedFd, OwnedFd)>,
    held: usize,
}

impl Drop for Pipe<'_> {
    fn drop(&mut self) {
        self.pool.set_out(self.pool.out.get() - 1);
        let mut free = self.pool.free.borrow_mut();
        if let Some(fds) = self.fds.take()
            && self.held == 0
            && free.len() < SPARE_PIPES
        {
            free.push(fds);
        }
    }
}

impl Pipe<'_> {
    fn ends(&self) -> (RawFd, RawFd) {
        let (r, w) = self.fds.as_ref().expect("a lent pipe has its descriptors");
        (r.as_raw_fd(), w.as_raw_fd())
    }

    /// Moves what `from` has now (up to `len`) into the pipe, which must be empty, without
    /// waiting: `None` if nothing is there (the caller waits for readability, without holding the
    /// pipe if it likes). `Some(0)` is EOF.
    pub fn try_fill(&mut self, from: &Sock, len: usize) -> io::Result<Option<usize>> {
        debug_assert_eq!(self.held, 0);
        match splice_nb(from.splice_fd(), self.ends().1, len) {
            Ok(n) => {
                self.held = n;
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Moves everything the pipe holds on to `to`, waiting for room as needed.
    pub async fn drain(&mut self, to: &Sock) -> io::Result<()> {
        while self.held > 0 {
            match splice_nb(self.ends().0, to.splice_fd(), self.held) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => self.held -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn new_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given, which has room for two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just created both descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// splice(2) of up to `len` bytes, never waiting: `WouldBlock` when `from` has nothing or `to`
/// has no room.
fn splice_nb(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    let none = std::ptr::null_mut();
    // SAFETY: splice(2) between descriptors the caller keeps open (a `Sock` and a lent pipe),
    // without offsets (sockets and pipes have none); it touches no memory of this process.
    let n = unsafe { libc::splice(from, none, to, none, len, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Returns `Pending` once (waking itself), so that a direction that always finds bytes queued
/// lets the shard's other tasks run (monoio 0.2.4 has no `yield_now`).
pub fn yield_once() -> impl Future<Output = ()> {
    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    YieldOnce(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_caps_pipes_and_keeps_only_empty_ones() {
        let pool = PipePool::new(2, Arc::default());
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        assert!(pool.take().is_none(), "over the cap");
        assert_eq!(pool.out(), 2);
        drop(a);
        assert_eq!((pool.out(), pool.free.borrow().len()), (1, 1));
        let mut b = b;
        b.held = 5;
        drop(b);
        assert_eq!(
            (pool.out(), pool.free.borrow().len()),
            (0, 1),
            "a full pipe is closed"
        );
        let again = pool.take().unwrap();
        assert_eq!(pool.free.borrow().len(), 0, "the spare is reused");
        drop(again);
    }
}
