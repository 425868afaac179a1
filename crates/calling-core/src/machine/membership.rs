//! Who is connected: enters, rosters, leaves and joins by id. A party stays
//! in the call while anyone else is connected or still ringing, so one
//! callee hanging up does not end a group call; parties that learn of each
//! other late (invites and joins racing) exchange rosters until everyone
//! agrees on who is in the call. Messages name the sender's participation,
//! so a late one of an earlier participation changes nothing.

use std::collections::BTreeSet;
use std::time::Instant;

use super::CallMachine;
use super::call::{Call, Invitee, Me, Peer, Step};
use super::ctx::Ctx;
use crate::error::{JoinError, StaleReason};
use crate::event::{EndReason, Event, MediaInstruction};
use crate::ids::{CallId, MediaType, PartyId, UserId};
use crate::message::{Body, CallInfo, Roster};

impl CallMachine {
    /// Leaves the call (TRTCCalling `hangup`): a cancel when no one has
    /// answered yet, a reject when ringing. Idempotent: with no call it does
    /// nothing.
    pub fn hangup(&mut self, now: Instant) {
        let Some(call) = &self.call else {
            return;
        };
        let ctx = &mut self.ctx;
        match &call.me {
            Me::Ringing { invite_id, .. } => {
                let invite_id = invite_id.clone();
                // reject() cannot fail: the invite is the ringing one.
                let _ = self.reject(now, &invite_id);
            }
            Me::Joining { .. } => {
                call.send(ctx, call.known(), Body::Leave);
                self.finish(now, EndReason::Hangup, StaleReason::CallEnded);
            }
            Me::InCall if call.connected.is_empty() => {
                call.cancel_invites(ctx);
                let reason = if call.since.is_some() {
                    EndReason::Hangup
                } else {
                    EndReason::Cancelled
                };
                self.finish(now, reason, StaleReason::Accepted);
            }
            Me::InCall => {
                call.send(ctx, call.known(), Body::Leave);
                self.finish(now, EndReason::Hangup, StaleReason::Accepted);
            }
        }
    }

    /// Joins a running call by its id (TUICallKit `joinInGroupCall`), asking
    /// `members` (who the app knows to be in it, e.g. from the server room
    /// named by the call id). The call is joined when the first member
    /// answers; with no answer in [`Config::join_timeout`] it ends with
    /// [`EndReason::NotFound`].
    ///
    /// [`Config::join_timeout`]: super::Config::join_timeout
    pub fn join(
        &mut self,
        now: Instant,
        call_id: CallId,
        members: Vec<UserId>,
    ) -> Result<(), JoinError> {
        if self.call.is_some() {
            return Err(JoinError::Busy);
        }
        let waiting: BTreeSet<UserId> = members.into_iter().filter(|u| *u != self.ctx.me).collect();
        if waiting.is_empty() {
            return Err(JoinError::NoMembers);
        }
        let max = self.ctx.config.max_participants;
        if waiting.len() >= max {
            return Err(JoinError::TooManyMembers { max: max - 1 });
        }
        let ctx = &mut self.ctx;
        let call = Call::new(
            call_id,
            // Placeholder until a member's roster says what the call is.
            CallInfo {
                room_id: ctx.room_id(),
                media_type: MediaType::Audio,
                sponsor: ctx.me.clone(),
                group_id: None,
                is_group: true,
            },
            None,
            ctx.party(),
            Me::Joining {
                deadline: now + ctx.config.join_timeout,
                waiting: waiting.clone(),
            },
            EndReason::NotFound,
        );
        call.send_enter(ctx, waiting.into_iter().collect(), None);
        self.call = Some(call);
        Ok(())
    }
}

impl Call {
    /// A party entered (accepted, joined, or introduced itself).
    pub(super) fn on_enter(&mut self, ctx: &mut Ctx, now: Instant, from: &UserId, entered: Peer) {
        if matches!(self.me, Me::Joining { .. }) {
            self.introduced_while_joining(ctx, from, entered);
            return;
        }
        if self.is_over(from, entered.party) {
            return;
        }
        if let Some(peer) = self.connected.get_mut(from) {
            if peer.party >= entered.party {
                return; // a duplicate, or late
            }
            // A new participation whose earlier leave we never saw (e.g. a
            // join by id): it waits for our roster.
            *peer = entered;
            if self.in_call() {
                self.send_roster(ctx, vec![from.clone()]);
            }
            return;
        }
        let was_ringing = self.ringing.remove(from).is_some();
        if !was_ringing {
            // Neither an invitee answering nor a party we know: someone who
            // joined by id (or was introduced by one who did). A call with a
            // party nobody invited to it is a group call.
            self.info.is_group = true;
        }
        self.connected.insert(from.clone(), entered);
        if self.in_call() {
            self.since.get_or_insert(now);
            self.announce(ctx, from);
            if was_ringing {
                self.emit_invitees(ctx);
            }
            self.send_roster(ctx, vec![from.clone()]);
        }
    }

    /// A member introducing itself to a joiner: it may count an earlier
    /// participation of ours, so answer with this one and wait for its
    /// roster too. Only a participation we have not seen is answered: two
    /// joiners introducing themselves to each other must not ping-pong.
    fn introduced_while_joining(&mut self, ctx: &mut Ctx, from: &UserId, entered: Peer) {
        let seen = self
            .connected
            .get(from)
            .is_some_and(|p| p.party >= entered.party);
        if self.is_over(from, entered.party) || seen {
            return;
        }
        if let Me::Joining { waiting, .. } = &mut self.me {
            waiting.insert(from.clone());
        }
        self.connected.insert(from.clone(), entered);
        self.send_enter(ctx, vec![from.clone()], None);
    }

    /// What a roster from `from` says. A sender still in the call is
    /// connected, whatever its roster says; one that has left since matters
    /// only to a joiner: its roster still says what the call is and who else
    /// is in it, so the joiner joins them, not it.
    pub(super) fn on_roster(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        from: &UserId,
        party: PartyId,
        info: CallInfo,
        roster: &Roster,
    ) -> Step {
        let present = !self.is_over(from, party);
        let joining = matches!(self.me, Me::Joining { .. });
        if !present && !joining {
            return Step::Continue;
        }
        let sender = (present && !self.connected.contains_key(from)).then(|| {
            let (audio, video) = roster
                .connected
                .iter()
                .find(|m| m.user == *from)
                .map(|m| (m.audio, m.video))
                .unwrap_or((true, true));
            Peer {
                party,
                audio,
                video,
            }
        });
        if joining {
            self.join_by_roster(ctx, now, from, sender, info, roster);
            // Joined through a sender that has left, the joiner may be alone.
            return self.check_alive();
        }
        if info.is_group {
            // Someone invited more: it is a group call now.
            self.info.is_group = true;
        }
        if let Some(peer) = sender {
            self.on_enter(ctx, now, from, peer);
        }
        self.merge_roster(ctx, now, roster);
        if self.in_call() && !roster.connected.iter().any(|m| m.user == ctx.me) {
            // The sender does not count us as connected yet: tell it.
            self.send_enter(ctx, vec![from.clone()], None);
        }
        Step::Continue
    }

    /// The first roster a joiner gets: it says what the call is, and the
    /// joiner is in it.
    fn join_by_roster(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        from: &UserId,
        sender: Option<Peer>,
        info: CallInfo,
        roster: &Roster,
    ) {
        self.info = info;
        // Joining by id makes it a group call, even if it was 1v1.
        self.info.is_group = true;
        if let Some(peer) = sender {
            self.connected.insert(from.clone(), peer);
        }
        // Everyone recorded while joining is announced now.
        self.connect(ctx, now, None);
        // A roster that does not list this participation answered an
        // earlier join of ours that we gave up: its sender must be told of
        // this one too.
        let knows_me = roster
            .connected
            .iter()
            .any(|m| m.user == ctx.me && m.party == self.party);
        if !knows_me {
            self.send_enter(ctx, vec![from.clone()], None);
        }
        // The others introduced themselves while we were joining; some may be
        // joiners themselves, waiting for a roster: send ours (it says we are
        // connected, as an 'enter' would).
        let others: Vec<UserId> = self
            .connected
            .keys()
            .filter(|u| *u != from)
            .cloned()
            .collect();
        self.merge_roster(ctx, now, roster);
        if !others.is_empty() {
            self.send_roster(ctx, others);
        }
    }

    /// Merges what a roster says; introduces the local user to parties it
    /// did not know.
    fn merge_roster(&mut self, ctx: &mut Ctx, now: Instant, roster: &Roster) {
        let in_call = self.in_call();
        let mut invitees_changed = false;
        for m in &roster.connected {
            if m.user == ctx.me || self.is_over(&m.user, m.party) {
                continue;
            }
            if let Some(peer) = self.connected.get_mut(&m.user) {
                // A later participation replaces an earlier one silently.
                if peer.party < m.party {
                    *peer = Peer::of(m);
                }
                continue;
            }
            invitees_changed |= self.ringing.remove(&m.user).is_some();
            self.connected.insert(m.user.clone(), Peer::of(m));
            if in_call {
                self.since.get_or_insert(now);
                self.announce(ctx, &m.user);
                self.send_enter(ctx, vec![m.user.clone()], None);
            }
        }
        let mut introduce = Vec::new();
        for p in &roster.ringing {
            if p.user == ctx.me
                || self.connected.contains_key(&p.user)
                || self.ringing.contains_key(&p.user)
                || self.closed.contains(&(p.user.clone(), p.invite_id.clone()))
            {
                continue;
            }
            self.ringing.insert(p.user.clone(), Invitee::of(p));
            invitees_changed = true;
            introduce.push(p.user.clone());
        }
        if in_call {
            if !introduce.is_empty() {
                // So that the invitee tells us how it answers; one that is no
                // longer ringing answers `gone`.
                self.send_roster(ctx, introduce);
            }
            if invitees_changed {
                self.emit_invitees(ctx);
            }
        }
    }

    /// A party hung up.
    pub(super) fn on_leave(&mut self, ctx: &mut Ctx, from: &UserId, party: PartyId) -> Step {
        if self.connected.get(from).is_some_and(|p| p.party <= party) {
            return self.remove_connected(ctx, from, party);
        }
        // A leave that overtook the sender's enter: remember the
        // participation so the enter is ignored.
        self.mark_over(from, party);
        self.remove_invitee(ctx, from).unwrap_or(Step::Continue)
    }

    /// `from` is not in this call: every participation of it below `upto`
    /// is over.
    pub(super) fn on_gone(&mut self, ctx: &mut Ctx, from: &UserId, upto: PartyId) -> Step {
        let Some(over) = upto.0.checked_sub(1).map(PartyId) else {
            return Step::Continue;
        };
        if let Some(known) = self.connected.get(from).map(|p| p.party) {
            // A gone sent before this participation began names a lower
            // bound and changes nothing.
            return if known <= over {
                self.remove_connected(ctx, from, over)
            } else {
                Step::Continue
            };
        }
        // Retired even though not connected here: a roster that still
        // lists it must not bring it back.
        self.mark_over(from, over);
        self.remove_invitee(ctx, from)
            .unwrap_or_else(|| self.join_refused(from))
    }

    /// The server could not reach `user`: a ringing invitee counts as
    /// offline, a connected party as gone.
    pub(super) fn on_unreachable(&mut self, ctx: &mut Ctx, user: &UserId) -> Step {
        if let Some(party) = self.connected.get(user).map(|p| p.party) {
            return self.remove_connected(ctx, user, party);
        }
        self.invitee_offline(ctx, user)
            .unwrap_or_else(|| self.join_refused(user))
    }

    /// A connected party is gone (hung up, gone, unreachable).
    fn remove_connected(&mut self, ctx: &mut Ctx, user: &UserId, party: PartyId) -> Step {
        self.mark_over(user, party);
        if self.connected.get(user).is_none_or(|p| p.party > party) {
            return Step::Continue;
        }
        self.connected.remove(user);
        if let Some(sw) = &mut self.switch_out {
            sw.waiting.remove(user);
        }
        self.switch_in.retain(|_, u| u != user);
        match &mut self.me {
            Me::InCall => {
                ctx.emit(Event::UserLeave {
                    call_id: self.id.clone(),
                    user: user.clone(),
                });
                ctx.media(MediaInstruction::DropPeer {
                    call_id: self.id.clone(),
                    user: user.clone(),
                });
                self.maybe_finish_switch(ctx);
            }
            Me::Joining { waiting, .. } => {
                waiting.remove(user);
            }
            Me::Ringing { .. } => {}
        }
        let step = self.check_alive();
        if matches!(step, Step::End { .. }) {
            self.cancel_notice(ctx, user);
        }
        step
    }

    /// A member a joiner asked cannot answer (gone or unreachable): the
    /// join fails once nobody is left to ask and nobody introduced itself.
    fn join_refused(&mut self, user: &UserId) -> Step {
        let Me::Joining { waiting, .. } = &mut self.me else {
            return Step::Continue;
        };
        waiting.remove(user);
        if waiting.is_empty() && self.connected.is_empty() {
            Step::End {
                reason: EndReason::NotFound,
                stale: StaleReason::CallEnded,
            }
        } else {
            Step::Continue
        }
    }
}
