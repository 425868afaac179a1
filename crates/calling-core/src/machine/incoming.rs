//! Input from the network: call-control messages and the server's reports
//! of users it could not reach. Each message kind has its handler, next to
//! the rules it serves; here a message is checked against the limits and
//! routed by its call id. Late, duplicated and reordered messages are
//! recognised by call id and party and change nothing.

use std::time::Instant;

use super::CallMachine;
use super::call::{Me, Peer, Step};
use super::membership::Credentials;
use super::ringing::IncomingInvite;
use crate::error::{MessageError, StaleReason};
use crate::ids::{CallId, PartyId, UserId};
use crate::message::{Body, Message};

impl CallMachine {
    /// A call-control message from `from` (the sender stamped by the server).
    /// Late, duplicated and reordered messages are harmless; a message that
    /// breaks the limits is refused with an error and changes nothing.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: &UserId,
        message: Message,
    ) -> Result<(), MessageError> {
        if *from == self.ctx.me {
            return Err(MessageError::FromSelf);
        }
        self.check_limits(&message)?;
        let Message {
            call_id,
            party,
            body,
            ..
        } = message;
        if let Body::Invite {
            invite_id,
            info,
            timeout,
            user_data,
            roster,
        } = body
        {
            let invite = IncomingInvite {
                call_id,
                party,
                invite_id,
                info,
                timeout,
                user_data,
                roster,
            };
            self.on_invite(now, from, invite);
            return Ok(());
        }
        if self.call.as_ref().is_some_and(|c| c.id == call_id) {
            if !self.answer_dropped(now, from, party, &body) {
                self.on_call_message(now, from, party, body);
            }
            self.heard(now, from, &call_id, party);
        } else {
            self.on_foreign_message(now, from, &call_id, party, body);
        }
        Ok(())
    }

    /// The server could not deliver to `user`, or reports that its
    /// connection died while in the call's room: a ringing invitee counts as
    /// offline, a connected party as gone.
    pub fn handle_unreachable(&mut self, now: Instant, user: &UserId, call_id: &CallId) {
        let ctx = &mut self.ctx;
        let Some(call) = self.call.as_mut().filter(|c| c.id == *call_id) else {
            return;
        };
        let step = call.on_unreachable(ctx, user);
        self.apply(now, step);
    }

    /// No list in a message is longer than a call can be, and its user data
    /// fits the limit.
    fn check_limits(&self, message: &Message) -> Result<(), MessageError> {
        let max = self.ctx.config.max_participants;
        let check = |field: &'static str, len: usize| {
            if len > max {
                Err(MessageError::TooManyEntries { field, len, max })
            } else {
                Ok(())
            }
        };
        match &message.body {
            Body::Invite {
                roster, user_data, ..
            } => {
                check("roster.connected", roster.connected.len())?;
                check("roster.ringing", roster.ringing.len())?;
                if let Some(data) = user_data
                    && data.len() > self.ctx.config.max_user_data
                {
                    return Err(MessageError::UserDataTooLarge {
                        len: data.len(),
                        max: self.ctx.config.max_user_data,
                    });
                }
            }
            Body::Roster { roster, .. } => {
                check("roster.connected", roster.connected.len())?;
                check("roster.ringing", roster.ringing.len())?;
            }
            Body::Timeout { users, .. } => check("users", users.len())?,
            Body::Cancel { .. }
            | Body::Enter { .. }
            | Body::Reject { .. }
            | Body::Leave
            | Body::Gone { .. }
            | Body::Alive
            | Body::MediaState { .. }
            | Body::MediaType { .. }
            | Body::SwitchRequest { .. }
            | Body::SwitchAnswer { .. } => {}
        }
        Ok(())
    }

    /// A message about a call other than the current one.
    fn on_foreign_message(
        &mut self,
        now: Instant,
        from: &UserId,
        call_id: &CallId,
        party: PartyId,
        body: Body,
    ) {
        match body {
            Body::Cancel { invite_id } => {
                // It may overtake its invite: remember it so the invite never
                // rings, if it comes from the same sender (only the inviter
                // may withdraw an invite).
                self.early_answers
                    .put((from.clone(), invite_id), StaleReason::Cancelled);
            }
            Body::Timeout {
                invite_id, users, ..
            } if users.contains(&self.ctx.me) => {
                self.early_answers
                    .put((from.clone(), invite_id), StaleReason::TimedOut);
            }
            Body::Alive
            | Body::Enter { .. }
            | Body::Roster { .. }
            | Body::MediaState { .. }
            | Body::MediaType { .. }
            | Body::SwitchRequest { .. }
            | Body::SwitchAnswer { .. } => {
                // The sender thinks we are in this call: say we are not
                // (rate-limited: a stranger must not draw replies at will).
                if self.may_answer_gone(now, from, call_id, party) {
                    let upto = self.ctx.next_party;
                    let gone = Body::Gone {
                        upto,
                        dropped: None,
                    };
                    self.ctx.send(vec![from.clone()], call_id, upto, gone);
                }
            }
            Body::Invite { .. }
            | Body::Reject { .. }
            | Body::Timeout { .. }
            | Body::Leave
            | Body::Gone { .. } => {}
        }
    }

    /// A message about the current call, to the handler of its kind. Only
    /// some kinds can end the call.
    fn on_call_message(&mut self, now: Instant, from: &UserId, party: PartyId, body: Body) {
        let ctx = &mut self.ctx;
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if matches!(call.me, Me::Ringing { .. })
            && matches!(body, Body::Enter { .. } | Body::Roster { .. })
            && self.past_calls.get(&call.id).is_some()
        {
            // Ringing again for a call we were in: whoever still counts our
            // earlier participation as connected must drop it.
            let gone = Body::Gone {
                upto: call.party,
                dropped: None,
            };
            ctx.send(vec![from.clone()], &call.id, call.party, gone);
        }
        let step = match body {
            // Invites never reach here: handle_message rings or answers them.
            Body::Invite { .. } => Step::Continue,
            Body::Cancel { invite_id } => call.on_cancel(ctx, from, &invite_id),
            Body::Enter {
                invite_id,
                join_secret,
                audio,
                video,
            } => {
                let entered = Peer {
                    party,
                    audio,
                    video,
                };
                let shown = Credentials {
                    invite_id,
                    join_secret,
                };
                call.on_enter(ctx, now, from, entered, &shown);
                Step::Continue
            }
            Body::Reject { invite_id, busy } => call.on_reject(ctx, from, &invite_id, busy),
            Body::Timeout {
                invite_id,
                users,
                reason,
            } => call.on_timeout(ctx, from, invite_id, &users, reason),
            Body::Leave => call.on_leave(ctx, from, party),
            Body::Gone {
                upto,
                dropped: None,
            } => call.on_gone(ctx, from, upto),
            Body::Gone {
                dropped: Some(dropped),
                ..
            } => call.on_dropped(ctx, from, party, dropped),
            // Its sign of life is noted once the message is handled.
            Body::Alive => Step::Continue,
            Body::Roster {
                info,
                roster,
                join_secret,
            } => call.on_roster(ctx, now, from, party, info, &roster, join_secret),
            Body::MediaState { audio, video } => {
                call.on_media_state(ctx, from, party, audio, video);
                Step::Continue
            }
            Body::MediaType { media_type } => {
                call.on_media_type(ctx, from, party, media_type);
                Step::Continue
            }
            Body::SwitchRequest {
                request_id,
                media_type,
            } => {
                call.on_switch_request(ctx, from, party, request_id, media_type);
                Step::Continue
            }
            Body::SwitchAnswer {
                request_id,
                accepted,
            } => {
                call.on_switch_answer(ctx, from, request_id, accepted);
                Step::Continue
            }
        };
        self.apply(now, step);
    }
}
