//! Placing calls and inviting: the caller is in the call from the start,
//! its invitees ring, and each answer (reject, busy, no answer, gone) is
//! told to the app of every connected party. An invitee's own timer fires
//! first; the inviter waits timeout + [`caller_grace`], and a timeout of 0
//! rings until answered.
//!
//! [`caller_grace`]: super::Config::caller_grace

use std::collections::{BTreeMap, BTreeSet};
use std::slice;
use std::time::{Duration, Instant};

use super::call::{Call, Invitee, Me, Step};
use super::ctx::Ctx;
use super::{CallMachine, CallOptions};
use crate::error::CallError;
use crate::event::{EndReason, Event, MediaInstruction};
use crate::ids::{CallId, InviteId, MediaType, UserId};
use crate::message::{Body, CallInfo, NoAnswer};

impl CallMachine {
    /// Calls one user (TRTCCalling `call`). Returns the new call's id.
    pub fn call_user(
        &mut self,
        now: Instant,
        user: UserId,
        media_type: MediaType,
        options: CallOptions,
    ) -> Result<CallId, CallError> {
        self.start(now, vec![user], media_type, options, false)
    }

    /// Calls several users at once (TRTCCalling `groupCall`). The call goes
    /// on while anyone else is connected or still ringing.
    pub fn group_call(
        &mut self,
        now: Instant,
        users: Vec<UserId>,
        media_type: MediaType,
        options: CallOptions,
    ) -> Result<CallId, CallError> {
        self.start(now, users, media_type, options, true)
    }

    /// Invites more users into the running call (TUICallKit `inviteUser`).
    /// Returns the invitation's id.
    pub fn invite(
        &mut self,
        now: Instant,
        users: Vec<UserId>,
        timeout: u32,
    ) -> Result<InviteId, CallError> {
        let already = match &self.call {
            Some(c) if c.in_call() => 1 + c.connected.len() + c.ringing.len(),
            _ => return Err(CallError::NotInCall),
        };
        self.check_invitees(&users, already)?;
        let Some((ctx, call)) = self.in_call_mut() else {
            return Err(CallError::NotInCall);
        };
        let others = call.known();
        let invite_id = ctx.invite_id();
        call.info.is_group = true;
        call.send_invites(ctx, now, &users, invite_id.clone(), timeout);
        call.send_roster(ctx, others);
        call.emit_invitees(ctx);
        Ok(invite_id)
    }

    /// Nobody is listed twice, nor the local user, nor anyone already in the
    /// call; `already` participants plus `users` fit the limit.
    fn check_invitees(&self, users: &[UserId], already: usize) -> Result<(), CallError> {
        if users.is_empty() {
            return Err(CallError::NoInvitees);
        }
        let mut seen = BTreeSet::new();
        for user in users {
            if *user == self.ctx.me {
                return Err(CallError::SelfInvite);
            }
            let in_call = self
                .call
                .as_ref()
                .is_some_and(|c| c.connected.contains_key(user) || c.ringing.contains_key(user));
            if !seen.insert(user) || in_call {
                return Err(CallError::DuplicateInvitee(user.clone()));
            }
        }
        let requested = already + users.len();
        if requested > self.ctx.config.max_participants {
            return Err(CallError::TooManyParticipants {
                requested,
                max: self.ctx.config.max_participants,
            });
        }
        Ok(())
    }

    fn start(
        &mut self,
        now: Instant,
        users: Vec<UserId>,
        media_type: MediaType,
        options: CallOptions,
        is_group: bool,
    ) -> Result<CallId, CallError> {
        if self.call.is_some() {
            return Err(CallError::Busy);
        }
        self.check_invitees(&users, 1)?;
        if let Some(data) = &options.user_data
            && data.len() > self.ctx.config.max_user_data
        {
            return Err(CallError::UserDataTooLarge {
                len: data.len(),
                max: self.ctx.config.max_user_data,
            });
        }
        let ctx = &mut self.ctx;
        let mut call = Call::new(
            ctx.call_id(),
            CallInfo {
                room_id: ctx.room_id(),
                media_type,
                sponsor: ctx.me.clone(),
                group_id: options.group_id,
                is_group,
            },
            options.user_data,
            ctx.party(),
            Me::InCall,
            EndReason::NoResponse,
        );
        // The sponsor mints the join secret; it reaches members in rosters.
        call.join_secret = Some(ctx.join_secret());
        ctx.media(MediaInstruction::JoinRoom {
            call_id: call.id.clone(),
            room_id: call.info.room_id,
            media_type,
        });
        let invite_id = ctx.invite_id();
        call.send_invites(ctx, now, &users, invite_id, options.timeout);
        let id = call.id.clone();
        self.call = Some(call);
        Ok(id)
    }
}

/// Why invitees stopped ringing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Removal {
    Rejected,
    Busy,
    NoAnswer(NoAnswer),
    /// The invitee is no longer ringing for the call (left, or answered
    /// `gone`): nothing to tell the app but the new invitee list.
    Gone,
}

impl Removal {
    /// How the call ends if this was the last invitee and nobody connected.
    fn cause(self) -> EndReason {
        match self {
            Removal::Rejected => EndReason::Rejected,
            Removal::Busy => EndReason::LineBusy,
            Removal::NoAnswer(NoAnswer::Timeout) => EndReason::NoResponse,
            Removal::NoAnswer(NoAnswer::Offline) => EndReason::Offline,
            Removal::Gone => EndReason::NoResponse,
        }
    }
}

impl Call {
    /// Rings `users` for `invite_id`; the inviter's timer waits the grace on
    /// top of the invitee's own.
    fn send_invites(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        users: &[UserId],
        invite_id: InviteId,
        timeout: u32,
    ) {
        let deadline = (timeout > 0)
            .then(|| now + Duration::from_secs(u64::from(timeout)) + ctx.config.caller_grace);
        for user in users {
            self.add_invitee(
                user.clone(),
                Invitee {
                    invite_id: invite_id.clone(),
                    inviter: ctx.me.clone(),
                    deadline,
                },
            );
        }
        let body = Body::Invite {
            invite_id,
            info: self.info.clone(),
            timeout,
            user_data: self.user_data.clone(),
            roster: self.roster(ctx),
        };
        self.send(ctx, users.to_vec(), body);
    }

    /// Withdraws the local party's invitations still ringing, each to its
    /// invitees. Invitees of other inviters (who left) cannot be cancelled
    /// by us: they are told we leave, and stop ringing when nobody is left.
    pub(super) fn cancel_invites(&self, ctx: &mut Ctx) {
        let mut by_invite: BTreeMap<&InviteId, Vec<UserId>> = BTreeMap::new();
        let mut others = Vec::new();
        for (user, inv) in &self.ringing {
            if inv.inviter == ctx.me {
                by_invite
                    .entry(&inv.invite_id)
                    .or_default()
                    .push(user.clone());
            } else {
                others.push(user.clone());
            }
        }
        for (invite_id, users) in by_invite {
            let body = Body::Cancel {
                invite_id: invite_id.clone(),
            };
            self.send(ctx, users, body);
        }
        self.send(ctx, others, Body::Leave);
    }

    /// An invitee declined, or is busy in another call.
    pub(super) fn on_reject(
        &mut self,
        ctx: &mut Ctx,
        from: &UserId,
        invite_id: &InviteId,
        busy: bool,
    ) -> Step {
        let why = if busy {
            Removal::Busy
        } else {
            Removal::Rejected
        };
        self.remove_ringing(ctx, slice::from_ref(from), invite_id, why)
    }

    /// A ringing `user` is gone, whichever invite it rang for; `None` when it
    /// was not ringing.
    pub(super) fn remove_invitee(&mut self, ctx: &mut Ctx, user: &UserId) -> Option<Step> {
        let invite_id = self.ringing.get(user)?.invite_id.clone();
        Some(self.remove_ringing(ctx, slice::from_ref(user), &invite_id, Removal::Gone))
    }

    /// The server could not deliver to a ringing `user`: it counts as
    /// offline, and everyone in the call is told; `None` when it was not
    /// ringing.
    pub(super) fn invitee_offline(&mut self, ctx: &mut Ctx, user: &UserId) -> Option<Step> {
        let invite_id = self.ringing.get(user)?.invite_id.clone();
        let step = self.remove_ringing(
            ctx,
            slice::from_ref(user),
            &invite_id,
            Removal::NoAnswer(NoAnswer::Offline),
        );
        if self.in_call() {
            let body = Body::Timeout {
                invite_id,
                users: vec![user.clone()],
                reason: NoAnswer::Offline,
            };
            self.send(ctx, self.known(), body);
        }
        Some(step)
    }

    /// Invitees stopped ringing for `why`; tells the app when in the call.
    pub(super) fn remove_ringing(
        &mut self,
        ctx: &mut Ctx,
        users: &[UserId],
        invite_id: &InviteId,
        why: Removal,
    ) -> Step {
        let mut removed = Vec::new();
        for user in users {
            self.closed.insert((user.clone(), invite_id.clone()));
            if matches!(why, Removal::Rejected | Removal::Busy) {
                self.declined.insert((user.clone(), invite_id.clone()));
            }
            let matches = self
                .ringing
                .get(user)
                .is_some_and(|i| i.invite_id == *invite_id);
            if matches {
                self.ringing.remove(user);
                removed.push(user.clone());
            }
        }
        if removed.is_empty() {
            return Step::Continue;
        }
        self.cause = why.cause();
        if self.in_call() {
            let call_id = self.id.clone();
            match why {
                Removal::Rejected => {
                    for user in &removed {
                        ctx.emit(Event::Rejected {
                            call_id: call_id.clone(),
                            user: user.clone(),
                        });
                    }
                }
                Removal::Busy => {
                    for user in &removed {
                        ctx.emit(Event::LineBusy {
                            call_id: call_id.clone(),
                            user: user.clone(),
                        });
                    }
                }
                Removal::NoAnswer(reason) => ctx.emit(Event::NoResponse {
                    call_id,
                    users: removed.clone(),
                    reason,
                }),
                Removal::Gone => {}
            }
            self.emit_invitees(ctx);
        }
        self.check_alive()
    }

    /// The invitees whose timers ran out by `now`: each invitation's are
    /// told, along with everyone else in the call, in case their own timer
    /// is late.
    pub(super) fn invitee_timeouts(&mut self, ctx: &mut Ctx, now: Instant) -> Step {
        let mut due: BTreeMap<InviteId, Vec<UserId>> = BTreeMap::new();
        for (user, inv) in &self.ringing {
            if inv.deadline.is_some_and(|d| d <= now) {
                due.entry(inv.invite_id.clone())
                    .or_default()
                    .push(user.clone());
            }
        }
        let mut step = Step::Continue;
        for (invite_id, users) in due {
            let mut to = self.known();
            step = self.remove_ringing(
                ctx,
                &users,
                &invite_id,
                Removal::NoAnswer(NoAnswer::Timeout),
            );
            to.retain(|u| {
                self.connected.contains_key(u) || self.ringing.contains_key(u) || users.contains(u)
            });
            let body = Body::Timeout {
                invite_id,
                users,
                reason: NoAnswer::Timeout,
            };
            self.send(ctx, to, body);
            if matches!(step, Step::End { .. }) {
                break;
            }
        }
        step
    }
}
