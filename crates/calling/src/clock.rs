//! The client's source of time.

use std::fmt::Debug;
use std::time::Instant;

/// Where a client reads the time: the call rules run on it (ringing
/// timeouts, no-answer timers), and the client sleeps until the times it
/// gives.
///
/// The client's timers are tokio timers, so a clock must follow tokio's
/// time. [`TokioClock`], the default, does; under `tokio::time::pause` (or
/// `#[tokio::test(start_paused = true)]`) a test of ringing and timeouts then
/// runs in virtual time instead of waiting for real seconds.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> Instant;
}

/// tokio's clock: real time, or virtual time when tokio's time is paused.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}
