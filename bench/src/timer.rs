//! Sleeps to the microsecond for the generator's schedule.
//!
//! monoio's timer wheel rounds every deadline up to the next whole millisecond. The open loop
//! counts latency from each request's due time (coordinated-omission correction), so a request
//! sent up to 1 ms late would carry up to 1 ms of the generator's own lateness in its latency, on
//! answers that take ~100 µs. Here one timerfd per thread, read through the ring, wakes the
//! earliest sleeper at its due time: one read in flight at a time, re-armed to the next deadline
//! after each expiry (and by a sleep that falls due before the armed one).

use std::cell::{Cell, RefCell};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One thread's timer: deadlines in nanoseconds on the clock of `t0`.
pub struct Timer {
    t0: Instant,
    fd: monoio::fs::File,
    sleepers: RefCell<BinaryHeap<Reverse<Entry>>>,
    /// The deadline the timerfd is set to, if any.
    armed: Cell<Option<u64>>,
    seq: Cell<u64>,
}

struct Entry {
    at: u64,
    /// Tie-break, so that equal deadlines wake in the order they were set.
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Timer {
    /// A timer on the clock of `t0` (`Instant` is CLOCK_MONOTONIC, as is the timerfd). Must be
    /// called inside the runtime, and [`Timer::drive`] spawned on it.
    pub fn new(t0: Instant) -> io::Result<Rc<Timer>> {
        // Blocking mode on purpose: a read of an O_NONBLOCK file would come back EAGAIN from the
        // ring instead of waiting for the expiry.
        // SAFETY: timerfd_create takes no pointers; the result is checked before use.
        let raw = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Rc::new(Timer {
            t0,
            fd: monoio::fs::File::from_std(std::fs::File::from(owned))?,
            sleepers: RefCell::new(BinaryHeap::new()),
            armed: Cell::new(None),
            seq: Cell::new(0),
        }))
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// A future that is ready once the clock reaches `at_ns`.
    pub fn sleep_until(&self, at_ns: u64) -> Sleep<'_> {
        Sleep {
            timer: self,
            at: at_ns,
            registered: false,
        }
    }

    /// Wakes the sleepers as their deadlines pass; runs for the life of the runtime.
    pub async fn drive(self: Rc<Self>) {
        let mut buf = Vec::with_capacity(8);
        loop {
            buf.clear();
            // u64::MAX is offset -1: "the current position", the only one a timerfd has.
            let (r, b) = self.fd.read_at(buf, u64::MAX).await;
            buf = b;
            if r.is_err() {
                // Not expected; do not spin on it, and the sleepers still wake, a little late.
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
            self.armed.set(None);
            self.wake_due();
        }
    }

    fn wake_due(&self) {
        let now = self.now_ns();
        let mut heap = self.sleepers.borrow_mut();
        while let Some(Reverse(e)) = heap.peek() {
            if e.at > now {
                let at = e.at;
                drop(heap);
                self.arm(at);
                return;
            }
            if let Some(Reverse(e)) = heap.pop() {
                e.waker.wake();
            }
        }
    }

    fn insert(&self, at: u64, waker: Waker) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.sleepers
            .borrow_mut()
            .push(Reverse(Entry { at, seq, waker }));
        if self.armed.get().is_none_or(|armed| at < armed) {
            self.arm(at);
        }
    }

    /// Sets the timerfd to expire at `at` (relative, so no clock conversion; never 0, which would
    /// disarm it).
    fn arm(&self, at: u64) {
        let left = at.saturating_sub(self.now_ns()).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (left / 1_000_000_000) as libc::time_t,
                tv_nsec: (left % 1_000_000_000) as libc::c_long,
            },
        };
        use std::os::fd::AsRawFd;
        // SAFETY: a valid timerfd and a pointer to a local itimerspec; no old value asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        // It cannot fail on our own descriptor with a valid value; if it did, the next sleep
        // to arm it tries again.
        self.armed.set((rc == 0).then_some(at));
    }
}

/// See [`Timer::sleep_until`].
pub struct Sleep<'a> {
    timer: &'a Timer,
    at: u64,
    registered: bool,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.now_ns() >= self.at {
            return Poll::Ready(());
        }
        // Once is enough: a task's waker stays the same, and the entry stays until its deadline
        // (a sleep dropped before then costs one spurious wake-up).
        if !self.registered {
            self.registered = true;
            self.timer.insert(self.at, cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sleepers set in any order wake in the order of their deadlines, none before its own: the
    /// ones set after a later one re-arm the timerfd earlier.
    #[test]
    fn wakes_in_deadline_order_never_early() {
        let mut rt = crate::rt::runtime().unwrap();
        rt.block_on(async {
            let t0 = Instant::now();
            let timer = Timer::new(t0).unwrap();
            monoio::spawn(timer.clone().drive());
            let woke = Rc::new(RefCell::new(Vec::new()));
            // Tens of milliseconds apart: every sleeper is set before the first deadline passes,
            // even on a loaded machine (one set after its deadline would wake at once, out of order).
            let deadlines_us = [60_000u64, 20_000, 40_000, 20_000, 10_000, 50_000];
            let tasks: Vec<_> = deadlines_us
                .iter()
                .map(|&us| {
                    let (timer, woke) = (timer.clone(), woke.clone());
                    monoio::spawn(async move {
                        let at = us * 1000;
                        timer.sleep_until(at).await;
                        woke.borrow_mut().push((us, timer.now_ns() >= at));
                    })
                })
                .collect();
            let all = async {
                for t in tasks {
                    t.await;
                }
                true
            };
            // Bounded by monoio's own timer, should this one never fire.
            let bound = async {
                monoio::time::sleep(Duration::from_secs(10)).await;
                false
            };
            assert!(
                futures_lite::future::or(all, bound).await,
                "a sleeper never woke"
            );
            let woke = woke.take();
            let order: Vec<u64> = woke.iter().map(|w| w.0).collect();
            assert_eq!(order, [10_000, 20_000, 20_000, 40_000, 50_000, 60_000]);
            assert!(woke.iter().all(|w| w.1), "{woke:?}");
            // A deadline already passed is ready at once.
            timer.sleep_until(0).await;
        });
    }
}
