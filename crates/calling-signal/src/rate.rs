//! The token bucket behind the protocol's rate limit (`docs/PROTOCOL.md`,
//! "Limits"). The server enforces one per connection with
//! [`TokenBucket::try_take`]; [`crate::WsTransport`] paces its own frames
//! with [`TokenBucket::reserve`] so that it stays within what the server
//! allows instead of having frames dropped.
//!
//! The bucket reads no clock: every call is given `now`.

use std::time::Duration;

use tokio::time::Instant;

/// Holds up to `burst` tokens and refills at `rate` tokens per second; each
/// frame takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens (at least one) refilling at
    /// `rate_per_sec` (zero: never refills), as of `now`.
    pub fn new(rate_per_sec: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            tokens: burst,
            rate: rate_per_sec.max(0.0),
            burst,
            at: now,
        }
    }

    /// The same bucket holding `tokens` instead of being full.
    pub fn with_tokens(mut self, tokens: f64) -> Self {
        self.tokens = tokens.min(self.burst);
        self
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes one token if there is one. Without one nothing is taken and the
    /// frame should be refused.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(1.0, now)
    }

    /// Takes `n` tokens if there are that many (a bucket of bytes, say).
    /// Without them nothing is taken. More than the burst is never there.
    pub fn try_take_n(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes one token even from an empty bucket, borrowing against the
    /// refill, and returns how long the frame it pays for must wait: zero if
    /// the token was there, [`Duration::MAX`] if the bucket never refills.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn try_take_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + 100 * MS));
        assert!(!b.try_take(t0 + 100 * MS));
        // Refilling stops at the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
    }

    #[test]
    fn reserve_spaces_frames_at_the_rate_once_the_bucket_is_empty() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t0).with_tokens(1.0);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        let first = b.reserve(t0);
        let second = b.reserve(t0);
        assert!((first.as_secs_f64() - 0.1).abs() < 1e-9, "{first:?}");
        assert!((second.as_secs_f64() - 0.2).abs() < 1e-9, "{second:?}");
        // Once the borrowed tokens are paid back, frames go at once again.
        assert_eq!(b.reserve(t0 + 300 * MS), Duration::ZERO);
    }

    #[test]
    fn a_bucket_that_never_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 1.0, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(3600)));
        assert_eq!(b.reserve(t0), Duration::MAX);
    }
}
