//! Who is connected: enters, rosters, leaves and joins with a ticket. Being
//! connected is a right (the invite addressed to the user, or the call's join
//! secret), never a claim: an `enter` without one and a roster from anyone but
//! a member are dropped, and a member that lets someone in tells the others,
//! who take newcomers from members only. A party stays
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
use crate::ids::{CallId, InviteId, JoinSecret, JoinTicket, MediaType, PartyId, UserId};
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

    /// Leaves the call because its media failed: as [`hangup`](Self::hangup)
    /// of a call in progress (the others get a `leave`), ending with
    /// [`EndReason::MediaFailed`]. Does nothing unless the local party is
    /// in a call with someone connected.
    pub fn leave_media_failed(&mut self, now: Instant) {
        let Some(call) = &self.call else {
            return;
        };
        if !matches!(call.me, Me::InCall) || call.connected.is_empty() {
            return;
        }
        call.send(&mut self.ctx, call.known(), Body::Leave);
        self.finish(now, EndReason::MediaFailed, StaleReason::Accepted);
    }

    /// Joins a running call with a ticket a member handed out (TUICallKit
    /// `joinInGroupCall`; see [`CallSnapshot::join_ticket`]): asks the
    /// ticket's host with `enter` carrying the secret. The call is joined
    /// when the host answers with its roster, which also names the others;
    /// with no answer in [`Config::join_timeout`] it ends with
    /// [`EndReason::NotFound`]. A call id alone gets nobody in: members
    /// drop an `enter` that shows neither an invite nor the secret.
    ///
    /// [`Config::join_timeout`]: super::Config::join_timeout
    /// [`CallSnapshot::join_ticket`]: super::CallSnapshot::join_ticket
    pub fn join(
        &mut self,
        now: Instant,
        call_id: CallId,
        ticket: JoinTicket,
    ) -> Result<(), JoinError> {
        if self.call.is_some() {
            return Err(JoinError::Busy);
        }
        if ticket.host == self.ctx.me {
            return Err(JoinError::OwnTicket);
        }
        let ctx = &mut self.ctx;
        let mut call = Call::new(
            call_id,
            // Placeholder until the host's roster says what the call is.
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
                waiting: BTreeSet::from([ticket.host.clone()]),
                heard: BTreeSet::new(),
            },
            EndReason::NotFound,
        );
        call.join_secret = Some(ticket.secret);
        call.send_join_enter(ctx, ticket.host);
        self.call = Some(call);
        Ok(())
    }
}

/// What an `enter` shows as its right to be in the call.
#[derive(Default)]
pub(super) struct Credentials {
    /// The invite it accepts, if any.
    pub(super) invite_id: Option<InviteId>,
    /// The join ticket's secret, if any.
    pub(super) join_secret: Option<JoinSecret>,
}

impl Call {
    /// A party entered (accepted, joined, or introduced itself). Only a
    /// right lets a user in: the invite addressed to it (it rings here for
    /// that invite), the call's join secret, or being connected already (a
    /// duplicate, or a later participation of a member). Anyone else is
    /// dropped without an answer, so the members stay unseen.
    pub(super) fn on_enter(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        from: &UserId,
        entered: Peer,
        shown: &Credentials,
    ) {
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
            // rejoin with a ticket): it waits for our roster, and the others
            // may have seen that leave, so they learn the new one from us.
            *peer = entered;
            if self.in_call() {
                self.send_roster_to_connected(ctx);
            }
            return;
        }
        let invited = self.may_accept(from, shown.invite_id.as_ref());
        let vouched = self.vouched.remove(from).is_some();
        let invited = invited || vouched;
        let ticketed = !invited
            && self.in_call()
            && matches!((&shown.join_secret, &self.join_secret),
                (Some(shown), Some(ours)) if shown.matches(ours));
        if !invited && !ticketed {
            return;
        }
        let was_ringing = self.ringing.remove(from).is_some();
        if !invited {
            // A party nobody invited to the call makes it a group call.
            self.info.is_group = true;
        }
        self.connected.insert(from.clone(), entered);
        if self.in_call() {
            self.since.get_or_insert(now);
            self.announce(ctx, from);
            if was_ringing {
                self.emit_invitees(ctx);
            }
            // The newcomer learns who is in the call, and the others (the
            // ringing too) learn the newcomer from us: they let in only whom
            // a member vouches for.
            self.send_roster(ctx, self.known());
        }
    }

    /// The host a joiner asked introducing itself: it may count an earlier
    /// participation of ours, so answer with this one and wait for its
    /// roster. Only a participation we have not seen is answered, and only
    /// the host is listened to: anyone else may be a stranger posing as a
    /// member, and the host's roster names the real ones.
    fn introduced_while_joining(&mut self, ctx: &mut Ctx, from: &UserId, entered: Peer) {
        let Me::Joining { waiting, heard, .. } = &mut self.me else {
            return;
        };
        if !waiting.contains(from) {
            heard.insert(from.clone());
            return;
        }
        let seen = self
            .connected
            .get(from)
            .is_some_and(|p| p.party >= entered.party);
        if self.is_over(from, entered.party) || seen {
            return;
        }
        self.connected.insert(from.clone(), entered);
        self.send_join_enter(ctx, from.clone());
    }

    /// A joiner's `enter`, showing the ticket's secret.
    fn send_join_enter(&self, ctx: &mut Ctx, to: UserId) {
        let body = Body::Enter {
            invite_id: None,
            join_secret: self.join_secret.clone(),
            audio: ctx.audio,
            video: ctx.video,
        };
        self.send(ctx, vec![to], body);
    }

    /// What a roster from `from` says. Only a connected member's roster
    /// counts (or, for a joiner, the host's): a member vouches for whom it
    /// lists, a stranger's roster is ignored entirely. A joiner's host that
    /// has left since still says what the call is and who else is in it,
    /// so the joiner joins them, not it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_roster(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        from: &UserId,
        party: PartyId,
        info: CallInfo,
        roster: &Roster,
        join_secret: Option<JoinSecret>,
    ) -> Step {
        let sender_peer = || {
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
        };
        if let Me::Joining { waiting, .. } = &self.me {
            if !waiting.contains(from) {
                return Step::Continue;
            }
            let present = !self.is_over(from, party);
            let sender = (present && !self.connected.contains_key(from)).then(sender_peer);
            if self.join_secret.is_none() {
                self.join_secret = join_secret;
            }
            self.join_by_roster(ctx, now, from, sender, info, roster);
            // Joined through a sender that has left, the joiner may be alone.
            return self.check_alive();
        }
        if !self.connected.contains_key(from)
            && (self.ringing.contains_key(from) || self.vouched.contains_key(from))
            && roster.connected.iter().any(|m| m.user == *from)
        {
            // An invitee that accepted and says so: its roster is its enter.
            self.on_enter(ctx, now, from, sender_peer(), &Credentials::default());
        }
        let Some(known) = self.connected.get(from).map(|p| p.party) else {
            return Step::Continue;
        };
        if party < known || self.is_over(from, party) {
            return Step::Continue;
        }
        if party > known {
            // A member's later participation, whose leave we never saw.
            self.on_enter(ctx, now, from, sender_peer(), &Credentials::default());
        }
        if info.is_group {
            // Someone invited more: it is a group call now.
            self.info.is_group = true;
        }
        if self.in_call() && self.join_secret.is_none() {
            self.join_secret = join_secret;
        }
        let learned = self.merge_roster(ctx, now, roster);
        if learned && self.in_call() {
            // The others may not know whom we just learned of (two parties
            // let in at once by different members): pass it on.
            let others = self
                .connected
                .keys()
                .filter(|u| *u != from)
                .cloned()
                .collect();
            self.send_roster(ctx, others);
        }
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
        // Joining with a ticket makes it a group call, even if it was 1v1.
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
        // The others get our roster below, which names whom we learn here.
        let _ = self.merge_roster(ctx, now, roster);
        if !others.is_empty() {
            self.send_roster(ctx, others);
        }
    }

    /// Merges what a roster says; introduces the local user to parties it
    /// did not know. Returns whether it learned a connected party (or a
    /// later participation of one).
    fn merge_roster(&mut self, ctx: &mut Ctx, now: Instant, roster: &Roster) -> bool {
        let in_call = self.in_call();
        let mut invitees_changed = false;
        let mut learned = false;
        for m in &roster.connected {
            if m.user == ctx.me || self.is_over(&m.user, m.party) {
                continue;
            }
            if let Some(peer) = self.connected.get_mut(&m.user) {
                // A later participation replaces an earlier one silently.
                if peer.party < m.party {
                    *peer = Peer::of(m);
                    learned = true;
                }
                continue;
            }
            learned = true;
            invitees_changed |= self.ringing.remove(&m.user).is_some();
            self.vouched.remove(&m.user);
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
            self.add_invitee(p.user.clone(), Invitee::of(p));
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
        learned
    }

    /// A party hung up.
    pub(super) fn on_leave(&mut self, ctx: &mut Ctx, from: &UserId, party: PartyId) -> Step {
        if self.connected.get(from).is_some_and(|p| p.party <= party) {
            return self.remove_connected(ctx, from, party);
        }
        // A leave that overtook the sender's enter: remember the
        // participation so the enter is ignored.
        self.mark_over(from, party);
        if self.vouched.remove(from).is_some() {
            return self.check_alive();
        }
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
        // Retired even though not connected here: a roster that still lists
        // it, or a late enter of one of those participations, must not let
        // it back in.
        self.mark_over(from, over);
        if self.vouched.remove(from).is_some() {
            return self.check_alive();
        }
        self.remove_invitee(ctx, from)
            .unwrap_or_else(|| self.join_refused(from))
    }

    /// The server could not reach `user`: a ringing invitee counts as
    /// offline, a connected party as gone.
    pub(super) fn on_unreachable(&mut self, ctx: &mut Ctx, user: &UserId) -> Step {
        if let Some(party) = self.connected.get(user).map(|p| p.party) {
            return self.remove_connected(ctx, user, party);
        }
        if self.vouched.remove(user).is_some() {
            return self.check_alive();
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
