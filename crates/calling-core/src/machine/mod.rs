//! The call rules. See the crate documentation for the run loop and the
//! rules in short; each file below holds one concern, its rules in its
//! module documentation:
//!
//! - `invites`: placing calls and inviting more; the invitees' answers and
//!   the inviter's no-answer timers;
//! - `ringing`: being invited: ringing, busy, glare, accept, reject, ignore;
//! - `membership`: who is connected and by what right: enter, rosters,
//!   leave, gone, join with a ticket, hangup;
//! - `media`: microphone, camera and media type switches;
//! - `liveness`: the keepalive among connected members, dropping the
//!   silent, and `gone` for stale participations;
//! - `timers`: what fires when, for all of the above;
//! - `incoming`: checking and routing messages to the handler of their kind;
//! - `call` and `ctx`: the state of the current call and of the machine.
//!
//! Here: the public types, the machine's getters and outputs, and how a call
//! ends (one `CallEnd` for every call the local party sees). Every message
//! names the call and the sender's participation (party), so duplicates,
//! late and reordered messages are recognised and harmless.

mod call;
mod ctx;
mod incoming;
mod invites;
mod liveness;
mod media;
mod membership;
mod ringing;
mod timers;

use std::time::{Duration, Instant};

use call::{Call, Me, Step};
use ctx::{Ctx, Recent};

use crate::error::StaleReason;
use crate::event::{EndReason, Event, MediaInstruction, Output};
use crate::ids::{CallId, GroupId, InviteId, JoinTicket, MediaType, PartyId, RoomId, UserId};
use crate::message::Body;

/// Tunables of the call rules. [`Config::default`] matches TRTCCalling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How much longer than the invite timeout the inviter waits before it
    /// declares an invitee unanswered (TRTCCalling: 5 s). The invitee's own
    /// timer fires first, so both sides normally see the invitee's answer.
    pub caller_grace: Duration,
    /// How long `join` waits for any member of the call to answer.
    pub join_timeout: Duration,
    /// How long an audio-to-video switch request waits for answers.
    pub switch_timeout: Duration,
    /// Most participants in one call, the local user included (TUICallKit: 9).
    pub max_participants: usize,
    /// Largest `user_data` accepted, in bytes.
    pub max_user_data: usize,
    /// How often a connected party sends `alive` to every other connected
    /// member of its call.
    pub keepalive_interval: Duration,
    /// How long a connected member may stay silent (nothing at all from its
    /// current participation) before it is dropped as if it had left.
    pub keepalive_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            caller_grace: Duration::from_secs(5),
            join_timeout: Duration::from_secs(10),
            switch_timeout: Duration::from_secs(30),
            max_participants: 9,
            max_user_data: 4096,
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(15),
        }
    }
}

/// Options of `call` and `group_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// Ringing time in seconds; 0 rings until answered or cancelled.
    /// Default 30, as in TRTCCalling.
    pub timeout: u32,
    /// Application data shown to the invitees.
    pub user_data: Option<String>,
    /// The application group the call belongs to.
    pub group_id: Option<GroupId>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: 30,
            user_data: None,
            group_id: None,
        }
    }
}

/// Why the local session is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The local user logs out.
    Logout,
    /// The same user logged in elsewhere.
    KickedOut,
}

/// Where the local user stands, as reported by [`CallMachine::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// No call.
    Idle,
    /// An invite is ringing.
    Ringing,
    /// Waiting for the host's answer to a join with a ticket.
    Joining,
    /// In a call: placed it, accepted it, or joined it.
    InCall,
}

/// A snapshot of the current call, from [`CallMachine::call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    /// The call.
    pub call_id: CallId,
    /// Where the local user stands.
    pub state: CallState,
    /// The media room.
    pub room_id: RoomId,
    /// Current media type.
    pub media_type: MediaType,
    /// Who placed the call.
    pub sponsor: UserId,
    /// Whether it is a group call.
    pub is_group: bool,
    /// Other parties connected.
    pub connected: Vec<UserId>,
    /// Invitees still ringing.
    pub ringing: Vec<UserId>,
    /// The invite the local user is ringing for, if it is.
    pub invite_id: Option<InviteId>,
    /// A ticket to join this call through the local user, once it is
    /// connected and knows the call's join secret. Hand it only to whom the
    /// local user wants in: whoever holds it can join.
    pub join_ticket: Option<JoinTicket>,
}

/// The call state machine of one user: sans-IO, driven by its owner.
///
/// Methods come in four kinds, as in quinn-proto's `Connection`:
/// - getters (`&self`): [`state`](Self::state), [`call`](Self::call),
///   [`user`](Self::user);
/// - input: [`handle_message`](Self::handle_message),
///   [`handle_unreachable`](Self::handle_unreachable),
///   [`handle_congested`](Self::handle_congested),
///   [`handle_timeout`](Self::handle_timeout),
///   [`recheck`](Self::recheck) (after the driver's transport reconnects);
/// - application commands: [`call_user`](Self::call_user),
///   [`group_call`](Self::group_call), [`accept`](Self::accept),
///   [`reject`](Self::reject), [`ignore`](Self::ignore),
///   [`hangup`](Self::hangup), [`invite`](Self::invite),
///   [`join`](Self::join), [`switch_media_type`](Self::switch_media_type),
///   [`answer_media_switch`](Self::answer_media_switch),
///   [`set_audio_available`](Self::set_audio_available),
///   [`set_video_available`](Self::set_video_available),
///   [`reset`](Self::reset);
/// - output: [`poll_output`](Self::poll_output) until `None`, then
///   [`poll_timeout`](Self::poll_timeout). Poll after every input or command.
///
/// It never reads the clock: every method that needs time takes `now`.
pub struct CallMachine {
    ctx: Ctx,
    call: Option<Call>,
    /// How invites that can no longer be answered ended.
    answered: Recent<InviteId, StaleReason>,
    /// Calls the local party was in.
    past_calls: Recent<CallId, ()>,
    /// The `gone` answers sent lately, to bound how many a sender can draw.
    gone_sent: liveness::GoneLimiter,
    /// Cancels and timeouts that overtook their invite, by sender: the
    /// invite does not ring if it comes from that same sender.
    early_answers: Recent<(UserId, InviteId), StaleReason>,
}

impl std::fmt::Debug for CallMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMachine")
            .field("user", &self.ctx.me)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl CallMachine {
    /// A machine for `user`. `seed` feeds the generator of call, invite,
    /// room and party ids: give it fresh OS randomness in production, a fixed
    /// value in tests.
    pub fn new(user: UserId, config: Config, seed: [u8; 32]) -> Self {
        Self {
            ctx: Ctx::new(user, config, seed),
            call: None,
            answered: Recent::new(),
            past_calls: Recent::new(),
            gone_sent: liveness::GoneLimiter::default(),
            early_answers: Recent::new(),
        }
    }

    /// Sets the first party id this machine hands out (default 1). Party ids
    /// must keep growing across restarts of the same user's machine, so that
    /// peers recognise the new participations as newer: a driver passes the
    /// wall clock, e.g. Unix time in milliseconds times 1024, which stays
    /// below 2^53 and ahead of any earlier machine of the same user.
    #[must_use]
    pub fn with_party_base(mut self, base: u64) -> Self {
        self.ctx.next_party = PartyId(base.max(1));
        self
    }

    // ---- getters ----

    /// The local user.
    pub fn user(&self) -> &UserId {
        &self.ctx.me
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// Where the local user stands.
    pub fn state(&self) -> CallState {
        match self.call.as_ref().map(|c| &c.me) {
            None => CallState::Idle,
            Some(Me::Ringing { .. }) => CallState::Ringing,
            Some(Me::Joining { .. }) => CallState::Joining,
            Some(Me::InCall) => CallState::InCall,
        }
    }

    /// The id of the current call, if any: [`call`](Self::call) without
    /// building a snapshot.
    pub fn call_id(&self) -> Option<&CallId> {
        self.call.as_ref().map(|c| &c.id)
    }

    /// The current call, if any.
    pub fn call(&self) -> Option<CallSnapshot> {
        let c = self.call.as_ref()?;
        Some(CallSnapshot {
            call_id: c.id.clone(),
            state: self.state(),
            room_id: c.info.room_id,
            media_type: c.info.media_type,
            sponsor: c.info.sponsor.clone(),
            is_group: c.info.is_group,
            connected: c.connected.keys().cloned().collect(),
            ringing: c.ringing.keys().cloned().collect(),
            invite_id: match &c.me {
                Me::Ringing { invite_id, .. } => Some(invite_id.clone()),
                Me::Joining { .. } | Me::InCall => None,
            },
            join_ticket: c
                .join_secret
                .clone()
                .filter(|_| c.in_call())
                .map(|secret| JoinTicket {
                    host: self.ctx.me.clone(),
                    secret,
                }),
        })
    }

    // ---- output ----

    /// The next output, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.ctx.next_output()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if
    /// a timer is armed. Calling it earlier does nothing.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.call.as_ref().and_then(Call::next_deadline)
    }

    // ---- ending ----

    /// Ends everything for logout or kick: the current call ends with
    /// [`EndReason::LoggedOut`] or [`EndReason::KickedOut`], and the machine
    /// is idle, ready for the next login. Being kicked out is a session event:
    /// the SDK tells the app, the machine only ends the call.
    pub fn reset(&mut self, now: Instant, reason: ResetReason) {
        let Some(call) = &self.call else {
            return;
        };
        if !matches!(call.me, Me::Ringing { .. }) {
            call.send(&mut self.ctx, call.known(), Body::Leave);
        }
        let end = match reason {
            ResetReason::Logout => EndReason::LoggedOut,
            ResetReason::KickedOut => EndReason::KickedOut,
        };
        self.finish(now, end, StaleReason::CallEnded);
    }

    /// The call the local party is in (placed, accepted or joined), with
    /// the context to act on it.
    fn in_call_mut(&mut self) -> Option<(&mut Ctx, &mut Call)> {
        let call = self.call.as_mut().filter(|c| c.in_call())?;
        Some((&mut self.ctx, call))
    }

    /// Carries out what a handler decided.
    fn apply(&mut self, now: Instant, step: Step) {
        if let Step::End { reason, stale } = step {
            self.finish(now, reason, stale);
        }
    }

    /// Ends the current call for the local party: one `CallEnd`, always.
    fn finish(&mut self, now: Instant, reason: EndReason, stale: StaleReason) {
        let Some(call) = self.call.take() else {
            return;
        };
        if let Me::Ringing { invite_id, .. } = &call.me {
            self.answered.put(invite_id.clone(), stale);
        }
        if let Some(invite_id) = &call.accepted {
            self.answered.put(invite_id.clone(), StaleReason::Accepted);
        }
        if call.in_call() {
            self.ctx.media(MediaInstruction::LeaveRoom {
                call_id: call.id.clone(),
            });
        }
        self.past_calls.put(call.id.clone(), ());
        let duration = call
            .since
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        self.ctx.emit(Event::CallEnd {
            call_id: call.id,
            reason,
            duration,
        });
    }
}
