//! Failure lines for stderr, rate-limited: a backend that dies under load must not turn every
//! failed request into a write to the terminal or the journal, and a line that is dropped is still
//! counted, so the next one says how many were left out.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Allows at most `per_window` lines per window; pure over the time it is given.
pub struct RateLimit {
    per_window: u32,
    window: Duration,
    started: Cell<Option<Instant>>,
    used: Cell<u32>,
    suppressed: Cell<u64>,
}

impl RateLimit {
    pub fn new(per_window: u32, window: Duration) -> RateLimit {
        RateLimit {
            per_window,
            window,
            started: Cell::new(None),
            used: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }

    /// `Some(n)`: write the line, and say that `n` lines before it were left out; `None`: drop it.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let fresh = self
            .started
            .get()
            .is_none_or(|s| now.duration_since(s) >= self.window);
        if fresh {
            self.started.set(Some(now));
            self.used.set(0);
        }
        if self.used.get() >= self.per_window {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.used.set(self.used.get() + 1);
        Some(self.suppressed.replace(0))
    }
}

/// " (N similar lines left out)" after a line that follows dropped ones, else "".
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines left out)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_per_window_and_counts_the_rest() {
        let t0 = Instant::now();
        let r = RateLimit::new(2, Duration::from_secs(1));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(2), " (2 similar lines left out)");
    }
}
