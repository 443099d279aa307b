//! A shard's share of `--maxconn`: a counting semaphore for one thread (`Cell` and wakers, no
//! atomics). An accept loop takes one permit per connection, which its task gives back when the
//! connection ends; a stopping shard takes all of them back, which is how it knows every
//! connection has ended.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

pub struct Permits {
    free: Cell<usize>,
    /// Tasks waiting for permits: an accept loop per listen address, a stopping shard. Few, so a
    /// release wakes them all and each looks again.
    waiters: RefCell<Vec<Waker>>,
}

/// Permits held; given back when dropped.
pub struct Permit {
    from: Rc<Permits>,
    n: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let from = &self.from;
        from.free.set(from.free.get() + self.n);
        for w in from.waiters.take() {
            w.wake();
        }
    }
}

impl Permits {
    pub fn new(n: usize) -> Rc<Permits> {
        Rc::new(Permits {
            free: Cell::new(n),
            waiters: RefCell::new(Vec::new()),
        })
    }

    /// Waits until `n` permits are free and takes them.
    pub async fn acquire(self: &Rc<Self>, n: usize) -> Permit {
        futures_lite::future::poll_fn(|cx| {
            let free = self.free.get();
            if free >= n {
                self.free.set(free - n);
                return Poll::Ready(Permit {
                    from: self.clone(),
                    n,
                });
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn permits_are_taken_waited_for_and_given_back() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let permits = Permits::new(2);
        let one = pin!(permits.acquire(1)).as_mut().poll(&mut cx);
        let Poll::Ready(one) = one else {
            panic!("a free permit was not given")
        };
        let mut all = pin!(permits.acquire(2));
        assert!(all.as_mut().poll(&mut cx).is_pending());
        assert!(all.as_mut().poll(&mut cx).is_pending());
        assert_eq!(permits.waiters.borrow().len(), 1, "one waiter, once");
        drop(one);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "a release wakes the waiter"
        );
        let Poll::Ready(all) = all.as_mut().poll(&mut cx) else {
            panic!("all permits back, yet not given")
        };
        assert_eq!(permits.free.get(), 0);
        drop(all);
        assert_eq!(permits.free.get(), 2);
    }
}
