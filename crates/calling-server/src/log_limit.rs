//! Log lines that an attacker can cause, held to a few a second.
//!
//! A refused login or a failed accept is worth a line, but a flood of them
//! must not become gigabytes of log: each [`LogLimit`] lets through at most
//! its number of lines a second and counts what it held back, for the next
//! line that gets through to say. The counts themselves are in the
//! metrics, complete.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most `per_second` lines a second.
#[derive(Debug)]
pub(crate) struct LogLimit {
    per_second: u32,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    held_back: u64,
}

impl LogLimit {
    pub(crate) fn new(per_second: u32) -> Self {
        LogLimit {
            per_second,
            state: Mutex::new(Window {
                start: None,
                logged: 0,
                held_back: 0,
            }),
        }
    }

    /// Whether a line may be written at `now`: `Some(n)` with the lines
    /// held back since the last one written, `None` to hold this one back.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if w.start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
        {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged >= self.per_second {
            w.held_back += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_a_second_and_counts_the_rest() {
        let limit = LogLimit::new(2);
        let t0 = Instant::now();
        assert_eq!(limit.allow(t0), Some(0));
        assert_eq!(limit.allow(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.allow(t0 + Duration::from_millis(500)), None);
        }
        // The next second's first line tells how many were held back.
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), Some(1000));
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), None);
    }
}
