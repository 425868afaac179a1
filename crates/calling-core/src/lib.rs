//! The call state machine of the `calling` stack: invites, answers,
//! timeouts, busy lines, group calls, and the events every party sees.
//!
//! It is sans-IO, in the manner of quinn-proto's `Connection` and str0m's
//! `Rtc`: it never reads the clock, never touches a socket and never spawns.
//! Its owner feeds it local commands, call-control [`Message`]s from other
//! users and timer expiries, each with the current [`Instant`]; then drains
//! [`Output`]s (messages to send, [`Event`]s for the app, media instructions)
//! and asks when the next timer is due.
//!
//! ```
//! use std::time::Instant;
//! use calling_core::{CallMachine, CallOptions, Config, Event, MediaType, Output, UserId};
//!
//! let now = Instant::now();
//! let alice = UserId::new("alice").unwrap();
//! let bob = UserId::new("bob").unwrap();
//! let mut a = CallMachine::new(alice.clone(), Config::default(), [1; 32]);
//! let mut b = CallMachine::new(bob.clone(), Config::default(), [2; 32]);
//!
//! a.call_user(now, bob.clone(), MediaType::Video, CallOptions::default()).unwrap();
//!
//! // The driver's loop: drain outputs, deliver messages, handle events.
//! let mut invite = None;
//! while let Some(out) = a.poll_output() {
//!     if let Output::Send { to, message } = out {
//!         assert_eq!(to, vec![bob.clone()]);
//!         b.handle_message(now, &alice, message).unwrap();
//!     }
//! }
//! while let Some(out) = b.poll_output() {
//!     if let Output::Event(Event::Invited { invite_id, .. }) = out {
//!         invite = Some(invite_id);
//!     }
//! }
//! b.accept(now, &invite.unwrap()).unwrap();
//! // ... deliver bob's `enter` to alice, who then sees `UserEnter { user: bob }`.
//! assert!(a.poll_timeout().is_some()); // alice's no-answer timer is armed
//! ```
//!
//! The rules (TRTCCalling's, with the bugs its users complain about fixed):
//! - one call at a time: an invite that arrives while ringing or in a call is
//!   answered busy automatically, and the caller sees [`Event::LineBusy`];
//! - the callee rings for the invite's timeout, the caller waits
//!   timeout + [`Config::caller_grace`]; whichever fires tells everyone;
//!   timeout 0 rings until answered;
//! - the caller is in the call from the start; a party stays while anyone
//!   else is connected or still ringing, so one callee hanging up does not end
//!   a group call; a party left alone gets [`Event::CallEnd`], exactly once;
//! - glare (two users calling each other at once) keeps the call with the
//!   lower id on both sides, connected ([`Event::GlareResolved`]);
//! - hangup, reject and ignore are idempotent; answering a stale or unknown
//!   invite is a distinct [`AnswerError`]; late, duplicated and reordered
//!   messages are recognised by call id and party and change nothing;
//! - parties that learn of each other late (invites and joins racing)
//!   exchange rosters until everyone agrees on who is in the call;
//! - connected members send each other `alive` every
//!   [`Config::keepalive_interval`]; one silent for
//!   [`Config::keepalive_timeout`] is dropped as if it had left, and a party
//!   still talking about a call it was dropped from, or that the others
//!   left, is answered `gone` and ends its side
//!   ([`CallMachine::recheck`] asks at once after a reconnect).
//! - membership is a right, not a claim: a user gets in with the invite
//!   addressed to it or a [`JoinTicket`] a member handed out, a roster counts
//!   only from a member, and only an inviter or its invitee may cancel or time
//!   out an invite (`docs/PROTOCOL.md`, "Security model").

mod error;
mod event;
mod ids;
mod machine;
mod message;

pub use error::{
    AnswerError, CallError, DecodeError, IdError, JoinError, MessageError, StaleReason, SwitchError,
};
pub use event::{EndReason, Event, MediaInstruction, Output};
pub use ids::{
    CallId, GroupId, InviteId, JoinSecret, JoinTicket, MAX_TOKEN_LEN, MAX_USER_ID_LEN, MediaType,
    PartyId, RoomId, UserId,
};
pub use machine::{CallMachine, CallOptions, CallSnapshot, CallState, Config, ResetReason};
pub use message::{
    Body, CallInfo, KINDS, Member, Message, NoAnswer, PROTOCOL_VERSION, Pending, Roster,
};

#[doc(no_inline)]
pub use std::time::Instant;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
