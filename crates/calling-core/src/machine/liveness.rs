//! Liveness: a call ends when its members are gone, even when nobody could
//! say so. Every connected party sends `alive` to every other connected
//! member each [`keepalive_interval`]; a member from whose current
//! participation nothing arrived for [`keepalive_timeout`] is dropped as if
//! it had left. The dropped party is told, and anyone still talking about a
//! call the receiver is not in (or from a participation it dropped) is
//! answered `gone`, so a party that was frozen, or missed a `leave` while
//! its server was down, ends its side within a bound.
//!
//! Two rules keep every party's view the same after a drop:
//! - a party that drops *some* members tells each one with `gone`
//!   `dropped`; that member, on hearing it from someone it counts in the
//!   call, leaves the whole call (with `leave` to everyone), so the others
//!   drop it too. The notice is repeated with each `alive` round for a
//!   timeout, in case it was lost; of two members that dropped each other,
//!   the higher user id leaves;
//! - a party that hears from *nobody* (and has nobody ringing) is more
//!   likely the one cut off: the drops end its call, it sends `leave`
//!   instead, and evicts no one.
//!
//! A party whose timers fire late (its process was stopped, its host
//! slept) cannot trust the silence it measured: it sends `alive` to
//! everyone and drops no one for one more interval, as after a reconnect
//! ([`CallMachine::recheck`]).
//!
//! [`keepalive_interval`]: super::Config::keepalive_interval
//! [`keepalive_timeout`]: super::Config::keepalive_timeout

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::CallMachine;
use super::call::{Call, Step};
use super::ctx::Ctx;
use crate::error::StaleReason;
use crate::event::EndReason;
use crate::ids::{CallId, PartyId, UserId};
use crate::message::Body;

/// Most participations remembered as dropped for silence, per call.
const SILENCED_MEMORY: usize = 64;
/// Most `gone` answers remembered (and so sent) per keepalive interval.
const GONE_MEMORY: usize = 256;
/// Most `gone` answers one sender can draw per keepalive interval, over
/// all the call ids it names.
const GONE_PER_SENDER: usize = 16;

/// The keepalive state of one call.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    /// Per connected member: its participation, and when it counts as
    /// silent if nothing more arrives from it.
    silent_at: BTreeMap<UserId, (PartyId, Instant)>,
    /// When the local party next sends `alive`.
    next_alive: Option<Instant>,
    /// No one is dropped before this: the local party has just asked
    /// everyone (after a reconnect, or a late wake-up).
    grace_until: Option<Instant>,
    /// Participations dropped for silence, and until when they are told
    /// again with every `alive` (the first notice may be lost): their
    /// messages are answered `gone` `dropped`.
    silenced: VecDeque<(UserId, PartyId, Instant)>,
}

impl Liveness {
    fn silence(&mut self, user: &UserId, party: PartyId, until: Instant) {
        if self.silenced.len() == SILENCED_MEMORY {
            self.silenced.pop_front();
        }
        self.silenced.push_back((user.clone(), party, until));
    }

    fn is_silenced(&self, user: &UserId, party: PartyId) -> bool {
        self.silenced
            .iter()
            .any(|(u, p, _)| u == user && *p == party)
    }

    /// The earliest keepalive timer: the next `alive`, or a member falling
    /// silent (not before the grace ends).
    pub(super) fn deadline(&self) -> Option<Instant> {
        let silent = self
            .silent_at
            .values()
            .map(|(_, at)| self.grace_until.map_or(*at, |g| g.max(*at)))
            .min();
        self.next_alive.into_iter().chain(silent).min()
    }
}

/// The kinds a party sends only while it believes the receiver is in the
/// call with it; those are the ones answered `gone`. A `gone` (or `leave`,
/// `cancel`, `reject`, `timeout`) is never answered, so answers never loop.
pub(super) fn expects_member(body: &Body) -> bool {
    match body {
        Body::Alive
        | Body::Enter { .. }
        | Body::Roster { .. }
        | Body::MediaState { .. }
        | Body::MediaType { .. }
        | Body::SwitchRequest { .. }
        | Body::SwitchAnswer { .. } => true,
        Body::Invite { .. }
        | Body::Cancel { .. }
        | Body::Reject { .. }
        | Body::Timeout { .. }
        | Body::Leave
        | Body::Gone { .. } => false,
    }
}

/// The `gone` answers sent lately: at most one per (sender, call,
/// participation) and [`GONE_PER_SENDER`] per sender in any keepalive
/// interval, so that a stranger cannot make a member send replies as fast
/// as it sends messages. One answer per participation is all an honest
/// sender needs: it retires every participation of the answering party
/// below `upto`.
#[derive(Debug, Default)]
pub(super) struct GoneLimiter {
    sent: VecDeque<(UserId, CallId, PartyId, Instant)>,
}

impl GoneLimiter {
    /// Whether a `gone` to `to` (participation `party`) about `call_id` may
    /// be sent at `now`; if so, it is counted.
    pub(super) fn allow(
        &mut self,
        now: Instant,
        to: &UserId,
        call_id: &CallId,
        party: PartyId,
        interval: Duration,
    ) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|(_, _, _, at)| *at + interval <= now)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= GONE_MEMORY {
            return false;
        }
        let mut per_sender = 0;
        for (user, call, p, _) in &self.sent {
            if user == to {
                if call == call_id && *p == party {
                    return false;
                }
                per_sender += 1;
            }
        }
        if per_sender >= GONE_PER_SENDER {
            return false;
        }
        self.sent
            .push_back((to.clone(), call_id.clone(), party, now));
        true
    }
}

impl CallMachine {
    /// The driver's transport reconnected: messages may have been lost
    /// meanwhile. Sends `alive` to every connected member at once, so a
    /// member that left (or ended the call) in the meantime answers `gone`
    /// within one round trip, and drops no one for one keepalive interval,
    /// so the members have time to answer.
    pub fn recheck(&mut self, now: Instant) {
        if let Some((ctx, call)) = self.in_call_mut() {
            call.sync_liveness(ctx, now);
            call.liveness.grace_until = Some(now + ctx.config.keepalive_interval);
            call.send_alive(ctx, now);
        }
    }

    /// The server could not deliver to `user` because its queue was full:
    /// the message is lost, but `user` has not left, and nothing changes.
    /// A ringing invitee is covered by the no-answer timer; a connected
    /// member that really vanished, by the keepalive. (Contrast
    /// [`handle_unreachable`](Self::handle_unreachable): offline.)
    pub fn handle_congested(&mut self, _now: Instant, _user: &UserId, _call_id: &CallId) {}

    /// A message about the current call from a participation the local
    /// party dropped for silence: answered `gone` `dropped` (rate-limited),
    /// and otherwise late. Returns whether the message was consumed here.
    pub(super) fn answer_dropped(
        &mut self,
        now: Instant,
        from: &UserId,
        party: PartyId,
        body: &Body,
    ) -> bool {
        let Some(call) = self.call.as_ref().filter(|c| c.in_call()) else {
            return false;
        };
        if !expects_member(body) || !call.liveness.is_silenced(from, party) {
            return false;
        }
        let interval = self.ctx.config.keepalive_interval;
        if self.gone_sent.allow(now, from, &call.id, party, interval) {
            call.send_dropped(&mut self.ctx, from, party);
        }
        true
    }

    /// Whether a `gone` to `to` (participation `party`) about `call_id` may
    /// be sent now.
    pub(super) fn may_answer_gone(
        &mut self,
        now: Instant,
        to: &UserId,
        call_id: &CallId,
        party: PartyId,
    ) -> bool {
        let interval = self.ctx.config.keepalive_interval;
        self.gone_sent.allow(now, to, call_id, party, interval)
    }

    /// After a message about the current call: its sender's participation
    /// is alive, and members that joined meanwhile are watched.
    pub(super) fn heard(&mut self, now: Instant, from: &UserId, call_id: &CallId, party: PartyId) {
        let ctx = &self.ctx;
        if let Some(call) = self.call.as_mut().filter(|c| c.id == *call_id) {
            call.sync_liveness(ctx, now);
            if call.connected.get(from).is_some_and(|p| p.party == party)
                && let Some(entry) = call.liveness.silent_at.get_mut(from)
            {
                *entry = (party, now + ctx.config.keepalive_timeout);
            }
        }
    }
}

impl Call {
    /// Watches exactly the connected members' current participations; a
    /// member newly watched counts as heard `now`.
    pub(super) fn sync_liveness(&mut self, ctx: &Ctx, now: Instant) {
        if !self.in_call() {
            self.liveness.silent_at.clear();
            self.liveness.next_alive = None;
            return;
        }
        let connected = &self.connected;
        self.liveness
            .silent_at
            .retain(|user, (party, _)| connected.get(user).is_some_and(|p| p.party == *party));
        for (user, peer) in &self.connected {
            self.liveness
                .silent_at
                .entry(user.clone())
                .or_insert((peer.party, now + ctx.config.keepalive_timeout));
        }
        if self.connected.is_empty() {
            self.liveness.next_alive = None;
        } else if self.liveness.next_alive.is_none() {
            self.liveness.next_alive = Some(now + ctx.config.keepalive_interval);
        }
    }

    fn send_alive(&mut self, ctx: &mut Ctx, now: Instant) {
        self.liveness.next_alive =
            (!self.connected.is_empty()).then(|| now + ctx.config.keepalive_interval);
        self.send(ctx, self.connected.keys().cloned().collect(), Body::Alive);
        // Members dropped lately are told again, unless they came back as a
        // new participation: a lost notice must not leave one half in.
        let told: Vec<(UserId, PartyId)> = self
            .liveness
            .silenced
            .iter()
            .filter(|(user, _, until)| *until > now && !self.connected.contains_key(user))
            .map(|(user, party, _)| (user.clone(), *party))
            .collect();
        for (user, party) in told {
            self.send_dropped(ctx, &user, party);
        }
    }

    /// Tells `user` that its participation `party` was dropped here.
    fn send_dropped(&self, ctx: &mut Ctx, user: &UserId, party: PartyId) {
        let body = Body::Gone {
            // Receivers that do not know `dropped` at least stop counting
            // the local party.
            upto: PartyId(self.party.0.saturating_add(1)),
            dropped: Some(party),
        };
        self.send(ctx, vec![user.clone()], body);
    }

    /// The keepalive timers due at `now`: send `alive`, drop the silent.
    /// `late`: the timers fire well after they were due, so the silence
    /// measured is the local party's own; ask everyone instead of dropping.
    pub(super) fn keepalive(&mut self, ctx: &mut Ctx, now: Instant, late: bool) -> Step {
        if !self.in_call() {
            return Step::Continue;
        }
        self.sync_liveness(ctx, now);
        if late {
            self.liveness.grace_until = Some(now + ctx.config.keepalive_interval);
            self.send_alive(ctx, now);
            return Step::Continue;
        }
        if self.liveness.next_alive.is_some_and(|at| at <= now) {
            self.send_alive(ctx, now);
        }
        if self.liveness.grace_until.is_some_and(|g| g > now) {
            return Step::Continue;
        }
        let silent: Vec<(UserId, PartyId)> = self
            .liveness
            .silent_at
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(user, (party, _))| (user.clone(), *party))
            .collect();
        if silent.is_empty() {
            return Step::Continue;
        }
        // Hearing nobody, the local party is more likely the one cut off:
        // ending alone, it says `leave`, and evicts no one.
        let ends = silent.len() == self.connected.len() && self.ringing.is_empty();
        let mut step = Step::Continue;
        for (user, party) in silent {
            let until = now + ctx.config.keepalive_timeout;
            self.liveness.silence(&user, party, until);
            if ends {
                self.send(ctx, vec![user.clone()], Body::Leave);
            } else {
                self.send_dropped(ctx, &user, party);
            }
            step = self.on_leave(ctx, &user, party);
            if matches!(step, Step::End { .. }) {
                break;
            }
        }
        self.sync_liveness(ctx, now);
        step
    }

    /// `from` (participation `party`) dropped the local participation
    /// `dropped` for silence. If it is a member and `dropped` is the current
    /// participation, the local party leaves the whole call, so that every
    /// member drops it; an older participation's notice changes nothing.
    /// Of two members that dropped each other (neither heard the other, both
    /// hear the rest), the one with the higher user id leaves, as the lower
    /// one makes the media offer: one of them must go for all to agree.
    pub(super) fn on_dropped(
        &mut self,
        ctx: &mut Ctx,
        from: &UserId,
        party: PartyId,
        dropped: PartyId,
    ) -> Step {
        if !self.in_call() || dropped != self.party {
            return Step::Continue;
        }
        let member = self.connected.get(from).is_some_and(|p| p.party == party)
            || (self.liveness.is_silenced(from, party) && *from < ctx.me);
        if !member {
            return Step::Continue;
        }
        self.send(ctx, self.known(), Body::Leave);
        Step::End {
            reason: EndReason::Hangup,
            stale: StaleReason::Accepted,
        }
    }
}
