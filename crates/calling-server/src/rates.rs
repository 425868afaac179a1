//! The rate limit of logged-in users: one token bucket per user, shared by
//! every session of that user and kept a while after the last one ends.
//!
//! A bucket per connection alone would start full on every login, so a user
//! who reconnects (or logs in elsewhere, kicking itself) would get a fresh
//! burst each time: the rate limit would bound nothing, the probing of
//! presence through `undeliverable` included. A user's bucket is therefore
//! forgotten only once it would be full again anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use calling_core::UserId;
use calling_signal::rate::TokenBucket;
use tokio::time::Instant;

/// Longest a bucket is kept after its user's last session: with a rate of
/// zero it would never be full again.
const MAX_KEEP: Duration = Duration::from_secs(3600);

struct Bucket {
    bucket: TokenBucket,
    /// When a token was last asked for.
    last: Instant,
}

/// One user's bucket, as a session holds it.
pub(crate) struct UserRate {
    user: UserId,
    bucket: Arc<Mutex<Bucket>>,
}

impl UserRate {
    /// Takes one token of the user's bucket if there is one.
    pub(crate) fn try_take(&self, now: Instant) -> bool {
        let mut b = lock(&self.bucket);
        b.last = now;
        b.bucket.try_take(now)
    }
}

#[derive(Default)]
struct State {
    buckets: HashMap<UserId, Arc<Mutex<Bucket>>>,
    /// Users whose session ended, oldest first, to forget their bucket
    /// once it is full again.
    ended: VecDeque<(Instant, UserId)>,
}

/// Every logged-in user's bucket.
pub(crate) struct UserRates {
    rate_per_sec: f64,
    burst: f64,
    keep: Duration,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data, consistent between statements: a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl UserRates {
    /// Buckets of `burst` tokens refilling at `rate_per_sec`.
    pub(crate) fn new(rate_per_sec: u32, burst: u32) -> Self {
        let (rate, burst) = (f64::from(rate_per_sec), f64::from(burst.max(1)));
        let keep = if rate > 0.0 {
            Duration::from_secs_f64(burst / rate).min(MAX_KEEP)
        } else {
            MAX_KEEP
        };
        UserRates {
            rate_per_sec: rate,
            burst,
            keep,
            state: Mutex::new(State::default()),
        }
    }

    /// The bucket of `user`, who just logged in: the one its other or
    /// recent sessions used, or a full one.
    pub(crate) fn session_start(&self, user: &UserId, now: Instant) -> UserRate {
        let mut st = lock(&self.state);
        self.forget_full(&mut st, now);
        let bucket = st
            .buckets
            .entry(user.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Bucket {
                    bucket: TokenBucket::new(self.rate_per_sec, self.burst, now),
                    last: now,
                }))
            })
            .clone();
        UserRate {
            user: user.clone(),
            bucket,
        }
    }

    /// A session of the user ended.
    pub(crate) fn session_end(&self, rate: UserRate, now: Instant) {
        let mut st = lock(&self.state);
        let UserRate { user, bucket } = rate;
        drop(bucket);
        st.ended.push_back((now, user));
        self.forget_full(&mut st, now);
    }

    /// Forgets the buckets that no session holds and that would be full by
    /// now; each end is looked at once, so this costs O(1) amortized.
    fn forget_full(&self, st: &mut State, now: Instant) {
        while let Some((at, _)) = st.ended.front() {
            if now.saturating_duration_since(*at) < self.keep {
                break;
            }
            let Some((_, user)) = st.ended.pop_front() else {
                break;
            };
            let idle = st.buckets.get(&user).is_some_and(|b| {
                Arc::strong_count(b) == 1
                    && now.saturating_duration_since(lock(b).last) >= self.keep
            });
            if idle {
                st.buckets.remove(&user);
            }
        }
    }

    /// Users whose bucket is remembered right now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.state).buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_draws_from_the_same_bucket_until_it_is_full_again() {
        let rates = UserRates::new(1, 2);
        let alice = UserId::new("alice").unwrap();
        let t0 = Instant::now();
        let first = rates.session_start(&alice, t0);
        assert!(first.try_take(t0) && first.try_take(t0));
        assert!(!first.try_take(t0));
        rates.session_end(first, t0);
        let again = rates.session_start(&alice, t0);
        assert!(
            !again.try_take(t0),
            "a new login must not refill the bucket"
        );
        rates.session_end(again, t0);
        // Two seconds on the bucket is full again and may be forgotten.
        let later = t0 + Duration::from_secs(2);
        let bob = rates.session_start(&UserId::new("bob").unwrap(), later);
        assert_eq!(rates.len(), 1, "only bob's bucket is left");
        rates.session_end(bob, later);
    }
}
