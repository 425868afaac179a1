//! What a stranger may cost this client: traffic from users who are not
//! parties of the current call is limited per sender, and the answers the
//! call rules give strangers (`gone`, busy) are limited per recipient, so
//! that nobody who only knows this user's id can fill its queues or back up
//! its sending (the server paces every client to its rate limit).
//!
//! Parties of the current call (connected, ringing, the inviter) are never
//! limited here: their traffic is the call.

use std::collections::HashMap;
use std::time::Instant;

use calling_core::{CallSnapshot, UserId};
use calling_signal::rate::TokenBucket;

/// Who may talk to this client without limit: the parties of its current
/// call, as the call rules list them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Parties(Vec<UserId>);

impl Parties {
    /// The connected and ringing users of `call` and its sponsor (the
    /// inviter of a ringing invite is connected, or is the sponsor).
    pub(crate) fn of(call: Option<&CallSnapshot>) -> Self {
        let Some(call) = call else {
            return Parties::default();
        };
        let mut users: Vec<UserId> = call
            .connected
            .iter()
            .chain(&call.ringing)
            .chain(std::iter::once(&call.sponsor))
            .cloned()
            .collect();
        users.sort();
        users.dedup();
        Parties(users)
    }

    /// Whether `user` is one of them.
    pub(crate) fn contains(&self, user: &UserId) -> bool {
        self.0.binary_search(user).is_ok()
    }

    /// These parties and `other`'s.
    pub(crate) fn union(mut self, other: &Parties) -> Self {
        self.0.extend(other.0.iter().cloned());
        self.0.sort();
        self.0.dedup();
        self
    }
}

/// One token bucket per user, for at most `capacity` users at a time.
struct PerUser {
    buckets: HashMap<UserId, (TokenBucket, Instant)>,
    rate: f64,
    burst: f64,
    capacity: usize,
}

impl PerUser {
    fn new(rate: f64, burst: f64, capacity: usize) -> Self {
        PerUser {
            buckets: HashMap::new(),
            rate,
            burst,
            capacity,
        }
    }

    /// Takes a token of `user`'s bucket. When the table is full, the
    /// buckets that have refilled since their last use are forgotten (a
    /// full bucket is what a new one is); if none has, a new user is
    /// refused: the table, and so the memory, stays bounded.
    fn try_take(&mut self, user: &UserId, now: Instant) -> bool {
        if !self.buckets.contains_key(user) && self.buckets.len() >= self.capacity {
            let refill =
                std::time::Duration::from_secs_f64(self.burst / self.rate.max(f64::MIN_POSITIVE));
            self.buckets
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < refill);
            if self.buckets.len() >= self.capacity {
                return false;
            }
        }
        let at = tokio::time::Instant::from_std(now);
        let (bucket, used) = self
            .buckets
            .entry(user.clone())
            .or_insert_with(|| (TokenBucket::new(self.rate, self.burst, at), now));
        *used = now;
        bucket.try_take(at)
    }
}

/// The limits on strangers.
pub(crate) struct Strangers {
    /// Messages from each stranger.
    inbound: PerUser,
    /// Messages from all strangers together.
    inbound_all: TokenBucket,
    /// Answers to each stranger.
    replies: PerUser,
    /// Answers to all strangers together: well below the server's rate, so
    /// that the call's own messages never queue behind them.
    replies_all: TokenBucket,
}

impl Strangers {
    /// Messages per second a stranger may send us, and its burst: enough
    /// for an invite and its cancel, or a join by id, many times over.
    const INBOUND: (f64, f64) = (5.0, 20.0);
    /// Messages per second from all strangers together.
    const INBOUND_ALL: (f64, f64) = (100.0, 200.0);
    /// Answers per second to one stranger.
    const REPLIES: (f64, f64) = (1.0, 5.0);
    /// Answers per second to all strangers together.
    const REPLIES_ALL: (f64, f64) = (5.0, 20.0);
    /// Strangers tracked at a time.
    const CAPACITY: usize = 1024;

    pub(crate) fn new(now: Instant) -> Self {
        let at = tokio::time::Instant::from_std(now);
        Strangers {
            inbound: PerUser::new(Self::INBOUND.0, Self::INBOUND.1, Self::CAPACITY),
            inbound_all: TokenBucket::new(Self::INBOUND_ALL.0, Self::INBOUND_ALL.1, at),
            replies: PerUser::new(Self::REPLIES.0, Self::REPLIES.1, Self::CAPACITY),
            replies_all: TokenBucket::new(Self::REPLIES_ALL.0, Self::REPLIES_ALL.1, at),
        }
    }

    /// Whether a message from the stranger `from` is handled (else it is
    /// dropped unread).
    pub(crate) fn admit(&mut self, from: &UserId, now: Instant) -> bool {
        self.inbound.try_take(from, now)
            && self
                .inbound_all
                .try_take(tokio::time::Instant::from_std(now))
    }

    /// Whether an answer to the strangers `to` is sent (else it is dropped:
    /// an answer to a stranger is a courtesy, never part of a call).
    pub(crate) fn may_answer(&mut self, to: &[UserId], now: Instant) -> bool {
        to.iter().all(|u| self.replies.try_take(u, now))
            && self
                .replies_all
                .try_take(tokio::time::Instant::from_std(now))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn each_stranger_has_its_own_bucket() {
        let t0 = Instant::now();
        let mut s = Strangers::new(t0);
        let burst = Strangers::INBOUND.1 as usize;
        assert!((0..burst).all(|_| s.admit(&uid("mallory"), t0)));
        assert!(!s.admit(&uid("mallory"), t0));
        // Another stranger is not refused because mallory floods.
        assert!(s.admit(&uid("carol"), t0));
        // mallory gets some back with time.
        assert!(s.admit(&uid("mallory"), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn answers_to_strangers_are_few() {
        let t0 = Instant::now();
        let mut s = Strangers::new(t0);
        let burst = Strangers::REPLIES.1 as usize;
        assert!((0..burst).all(|_| s.may_answer(&[uid("mallory")], t0)));
        assert!(!s.may_answer(&[uid("mallory")], t0));
        // All strangers together are capped too.
        let total = (0..100)
            .filter(|i| s.may_answer(&[uid(&format!("u{i}"))], t0))
            .count();
        assert_eq!(total, Strangers::REPLIES_ALL.1 as usize - burst);
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_idle_strangers() {
        let t0 = Instant::now();
        let mut per = PerUser::new(1.0, 2.0, 3);
        for name in ["a", "b", "c"] {
            assert!(per.try_take(&uid(name), t0));
        }
        // Full of active strangers: a new one is refused.
        assert!(!per.try_take(&uid("d"), t0));
        assert_eq!(per.buckets.len(), 3);
        // Once they are idle long enough to have refilled, they make room.
        assert!(per.try_take(&uid("d"), t0 + Duration::from_secs(3)));
        assert!(per.buckets.len() <= 3);
    }

    #[test]
    fn parties_are_the_connected_the_ringing_and_the_sponsor() {
        let call = CallSnapshot {
            call_id: calling_core::CallId::new("c1").unwrap(),
            state: calling_core::CallState::InCall,
            room_id: calling_core::RoomId::new(1).unwrap(),
            media_type: calling_core::MediaType::Audio,
            sponsor: uid("alice"),
            is_group: true,
            connected: vec![uid("bob")],
            ringing: vec![uid("carol")],
            invite_id: None,
            join_ticket: None,
        };
        let p = Parties::of(Some(&call));
        for u in ["alice", "bob", "carol"] {
            assert!(p.contains(&uid(u)), "{u}");
        }
        assert!(!p.contains(&uid("mallory")));
        assert!(!Parties::of(None).contains(&uid("bob")));
    }
}
