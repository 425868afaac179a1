//! Being invited: one call at a time, so an invite that arrives while
//! ringing or in a call is answered busy automatically; glare (two users
//! calling each other at once) keeps the call with the lower id on both
//! sides; accept, reject and ignore are idempotent, and answering a stale or
//! unknown invite is a distinct [`AnswerError`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::CallMachine;
use super::call::{Call, Invitee, Me, Peer, Step};
use super::ctx::Ctx;
use super::invites::Removal;
use crate::error::{AnswerError, StaleReason};
use crate::event::{EndReason, Event, MediaInstruction};
use crate::ids::{CallId, InviteId, PartyId, UserId};
use crate::message::{Body, CallInfo, NoAnswer, Roster};

/// An invite as it arrived: the message's call and party with its body.
pub(super) struct IncomingInvite {
    pub(super) call_id: CallId,
    pub(super) party: PartyId,
    pub(super) invite_id: InviteId,
    pub(super) info: CallInfo,
    pub(super) timeout: u32,
    pub(super) user_data: Option<String>,
    pub(super) roster: Roster,
}

impl CallMachine {
    /// Accepts the invite that is ringing (TRTCCalling `accept`). Accepting
    /// the invite already accepted for the current call does nothing.
    pub fn accept(&mut self, now: Instant, invite_id: &InviteId) -> Result<(), AnswerError> {
        let ctx = &mut self.ctx;
        match self.call.as_mut() {
            Some(call) if matches!(&call.me, Me::Ringing { invite_id: i, .. } if i == invite_id) => {
                call.connect(ctx, now, Some(invite_id.clone()));
                Ok(())
            }
            Some(call) if call.accepted.as_ref() == Some(invite_id) => Ok(()),
            _ => Err(self.stale_or_unknown(invite_id)),
        }
    }

    /// Declines the invite that is ringing (TRTCCalling `reject`). Rejecting
    /// it again does nothing.
    pub fn reject(&mut self, now: Instant, invite_id: &InviteId) -> Result<(), AnswerError> {
        if !self.ringing_for(invite_id) {
            return self.answered_again(invite_id, StaleReason::Rejected);
        }
        if let Some(call) = &self.call {
            let body = Body::Reject {
                invite_id: invite_id.clone(),
                busy: false,
            };
            call.send(&mut self.ctx, call.known(), body);
        }
        self.finish(now, EndReason::Rejected, StaleReason::Rejected);
        Ok(())
    }

    /// Stops ringing without telling anyone (TUICallKit `ignore`); the
    /// caller eventually sees no response. Ignoring it again does nothing.
    pub fn ignore(&mut self, now: Instant, invite_id: &InviteId) -> Result<(), AnswerError> {
        if !self.ringing_for(invite_id) {
            return self.answered_again(invite_id, StaleReason::Ignored);
        }
        self.finish(now, EndReason::Ignored, StaleReason::Ignored);
        Ok(())
    }

    fn stale_or_unknown(&self, invite_id: &InviteId) -> AnswerError {
        match self.answered.get(invite_id) {
            Some(reason) => AnswerError::StaleInvite {
                invite_id: invite_id.clone(),
                reason,
            },
            None => AnswerError::UnknownInvite(invite_id.clone()),
        }
    }

    /// Answering an invite again the way it was answered does nothing; any
    /// other answer to an invite that is not ringing is refused.
    fn answered_again(&self, invite_id: &InviteId, how: StaleReason) -> Result<(), AnswerError> {
        if self.answered.get(invite_id) == Some(how) {
            Ok(())
        } else {
            Err(self.stale_or_unknown(invite_id))
        }
    }

    fn ringing_for(&self, invite_id: &InviteId) -> bool {
        matches!(
            self.call.as_ref().map(|c| &c.me),
            Some(Me::Ringing { invite_id: i, .. }) if i == invite_id
        )
    }

    /// An invite: rings when idle; otherwise it is a duplicate, glare, or a
    /// second call, answered busy.
    pub(super) fn on_invite(&mut self, now: Instant, from: &UserId, inv: IncomingInvite) {
        if self.answered.get(&inv.invite_id).is_some() {
            return;
        }
        if let Some(how) = self
            .early_answers
            .get(&(from.clone(), inv.invite_id.clone()))
        {
            // Its inviter withdrew it (or gave up) before it arrived.
            self.answered.put(inv.invite_id, how);
            return;
        }
        let ctx = &mut self.ctx;
        let Some(call) = self.call.as_mut() else {
            self.call = Some(ring(ctx, now, from, inv));
            return;
        };
        if call.id == inv.call_id {
            // Already part of this call: the invite must never ring later.
            self.answered
                .put(inv.invite_id.clone(), StaleReason::CallEnded);
            if call.in_call() && call.connected.contains_key(from) {
                // A member's stale re-invite: tell it we are already here.
                // Anyone else learns nothing of who is in the call.
                call.send_enter(ctx, vec![from.clone()], None);
            }
            return;
        }
        if is_glare(ctx, call, from, &inv) {
            if inv.call_id < call.id {
                self.resolve_glare(now, from, inv);
            } else {
                // The peer sees the same two ids and accepts ours.
                self.answered.put(inv.invite_id, StaleReason::CallEnded);
            }
            return;
        }
        answer_busy(ctx, from, &inv);
        self.answered.put(inv.invite_id, StaleReason::Rejected);
    }

    /// The peer's call won: ours is dropped without a `CallEnd`, and theirs
    /// is accepted at once.
    fn resolve_glare(&mut self, now: Instant, from: &UserId, inv: IncomingInvite) {
        let Some(old) = self.call.take() else {
            return;
        };
        let ctx = &mut self.ctx;
        ctx.media(MediaInstruction::LeaveRoom {
            call_id: old.id.clone(),
        });
        self.past_calls.put(old.id.clone(), ());
        let invite_id = inv.invite_id.clone();
        let mut call = Call::ringing(ctx, now, from, inv);
        ctx.emit(Event::GlareResolved {
            abandoned: old.id,
            call_id: call.id.clone(),
        });
        call.connect(ctx, now, Some(invite_id));
        self.call = Some(call);
    }
}

/// One call at a time: answer busy, to everyone the inviter named.
fn answer_busy(ctx: &mut Ctx, from: &UserId, inv: &IncomingInvite) {
    let mut to: Vec<UserId> = inv
        .roster
        .connected
        .iter()
        .map(|m| m.user.clone())
        .chain(inv.roster.ringing.iter().map(|p| p.user.clone()))
        .collect();
    to.push(from.clone());
    to.sort();
    to.dedup();
    let party = ctx.party();
    let body = Body::Reject {
        invite_id: inv.invite_id.clone(),
        busy: true,
    };
    ctx.send(to, &inv.call_id, party, body);
}

/// Both users called each other at once: the local call is a 1v1 call to
/// `from`, nobody answered yet, and `from` invites us 1v1 to its own call.
fn is_glare(ctx: &Ctx, call: &Call, from: &UserId, inv: &IncomingInvite) -> bool {
    call.in_call()
        && call.info.sponsor == ctx.me
        && !call.info.is_group
        && !inv.info.is_group
        && inv.info.sponsor == *from
        && call.connected.is_empty()
        && call.since.is_none()
        && call.ringing.len() == 1
        && call.ringing.contains_key(from)
}

/// The call state for an incoming invite, and the `Invited` event.
fn ring(ctx: &mut Ctx, now: Instant, from: &UserId, inv: IncomingInvite) -> Call {
    let timeout = inv.timeout;
    let call = Call::ringing(ctx, now, from, inv);
    if let Me::Ringing {
        invite_id, inviter, ..
    } = &call.me
    {
        ctx.emit(Event::Invited {
            call_id: call.id.clone(),
            invite_id: invite_id.clone(),
            sponsor: call.info.sponsor.clone(),
            inviter: inviter.clone(),
            other_invitees: call.ringing.keys().cloned().collect(),
            members: call
                .connected
                .keys()
                .chain(call.vouched.keys())
                .cloned()
                .collect(),
            is_from_group: call.info.is_group,
            group_id: call.info.group_id.clone(),
            media_type: call.info.media_type,
            room_id: call.info.room_id,
            user_data: call.user_data.clone(),
            timeout,
        });
    }
    call
}

impl Call {
    /// The call state for an incoming invite, without telling the app: the
    /// inviter is connected, whatever its roster says; the others it lists
    /// are only vouched for until they answer themselves.
    fn ringing(ctx: &mut Ctx, now: Instant, from: &UserId, inv: IncomingInvite) -> Self {
        let mut vouched: BTreeMap<UserId, Peer> = inv
            .roster
            .connected
            .iter()
            .filter(|m| m.user != ctx.me)
            .map(|m| (m.user.clone(), Peer::of(m)))
            .collect();
        let inviter = vouched.remove(from).unwrap_or(Peer {
            party: inv.party,
            audio: true,
            video: true,
        });
        let connected = BTreeMap::from([(from.clone(), inviter)]);
        let ringing: Vec<(UserId, Invitee)> = inv
            .roster
            .ringing
            .iter()
            .filter(|p| {
                p.user != ctx.me
                    && !connected.contains_key(&p.user)
                    && !vouched.contains_key(&p.user)
            })
            .map(|p| (p.user.clone(), Invitee::of(p)))
            .collect();
        let deadline = (inv.timeout > 0).then(|| now + Duration::from_secs(u64::from(inv.timeout)));
        let mut call = Call::new(
            inv.call_id,
            inv.info,
            inv.user_data,
            ctx.party(),
            Me::Ringing {
                invite_id: inv.invite_id,
                inviter: from.clone(),
                deadline,
            },
            EndReason::Cancelled,
        );
        call.connected = connected;
        call.vouched = vouched;
        for (user, invitee) in ringing {
            call.add_invitee(user, invitee);
        }
        call
    }

    /// The inviter withdrew an invitation; it matters only if it is the one
    /// ringing here, and only from the inviter itself: a co-invitee knows
    /// the invite id too.
    pub(super) fn on_cancel(&self, ctx: &mut Ctx, from: &UserId, invite_id: &InviteId) -> Step {
        match &self.me {
            Me::Ringing {
                invite_id: mine,
                inviter,
                ..
            } if mine == invite_id && inviter == from => {
                self.cancel_notice(ctx, from);
                Step::End {
                    reason: EndReason::Cancelled,
                    stale: StaleReason::Cancelled,
                }
            }
            Me::Ringing { .. } | Me::Joining { .. } | Me::InCall => Step::Continue,
        }
    }

    /// Invitees did not answer: the local party's own ringing, or others'.
    /// Only the invitee itself or its inviter may say so; names sent by
    /// anyone else are ignored.
    pub(super) fn on_timeout(
        &mut self,
        ctx: &mut Ctx,
        from: &UserId,
        invite_id: InviteId,
        users: &[UserId],
        reason: NoAnswer,
    ) -> Step {
        let mine = matches!(&self.me,
            Me::Ringing { invite_id: i, inviter, .. } if *i == invite_id && inviter == from);
        if mine && users.contains(&ctx.me) {
            return self.ringing_timed_out(ctx, invite_id);
        }
        let users: Vec<UserId> = users
            .iter()
            .filter(|u| *u == from || self.ringing.get(u).is_some_and(|i| i.inviter == *from))
            .cloned()
            .collect();
        self.remove_ringing(ctx, &users, &invite_id, Removal::NoAnswer(reason))
    }

    /// The local party rang for `invite_id` until it timed out.
    pub(super) fn ringing_timed_out(&self, ctx: &mut Ctx, invite_id: InviteId) -> Step {
        ctx.emit(Event::CallingTimeout {
            call_id: self.id.clone(),
            invite_id,
        });
        Step::End {
            reason: EndReason::TimedOut,
            stale: StaleReason::TimedOut,
        }
    }
}
