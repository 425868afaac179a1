//! What the machine tells the application and the media engine.

use std::time::Duration;

use crate::ids::{CallId, GroupId, InviteId, MediaType, RoomId, UserId};
use crate::message::{Message, NoAnswer};

/// One output of [`crate::CallMachine::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Send `message` to each of `to` over the call layer. When the server
    /// answers that a recipient is offline, feed that back with
    /// [`crate::CallMachine::handle_unreachable`].
    Send {
        /// Recipients (never empty, never the local user).
        to: Vec<UserId>,
        /// The message.
        message: Message,
    },
    /// Tell the application.
    Event(Event),
    /// Tell the media engine.
    Media(MediaInstruction),
}

/// What the media engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaInstruction {
    /// The local user is now in the call: open local media (and the server
    /// room named by the call id).
    JoinRoom {
        /// The call.
        call_id: CallId,
        /// Its media room.
        room_id: RoomId,
        /// Its media type.
        media_type: MediaType,
    },
    /// Set up media with a party that is now connected.
    ConnectPeer {
        /// The call.
        call_id: CallId,
        /// The party.
        user: UserId,
    },
    /// Tear down media with a party that left.
    DropPeer {
        /// The call.
        call_id: CallId,
        /// The party.
        user: UserId,
    },
    /// The call's media type changed: start or stop video.
    SetMediaType {
        /// The call.
        call_id: CallId,
        /// The new type.
        media_type: MediaType,
    },
    /// The local user left the call: close every peer and local media.
    LeaveRoom {
        /// The call.
        call_id: CallId,
    },
}

/// Why a call ended for the local party (TUICallKit's typed end reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Someone hung up: the local user, or the last other party.
    Hangup,
    /// The local user rejected, or every invitee rejected.
    Rejected,
    /// The invitees did not answer in time.
    NoResponse,
    /// The invitees were offline.
    Offline,
    /// The invitees were in other calls.
    LineBusy,
    /// The caller cancelled before the local user answered, or the local user
    /// cancelled before anyone answered.
    Cancelled,
    /// The local user's ringing timed out.
    TimedOut,
    /// The local user ignored the invite.
    Ignored,
    /// The same user logged in elsewhere.
    KickedOut,
    /// The local user logged out.
    LoggedOut,
    /// A join with a ticket got no answer, or the host was not in the call.
    NotFound,
    /// The media with every other connected party broke and could not be
    /// restored in time (the SDK's media restore bound): the local party
    /// left the call as with a hangup, so the others see it leave.
    MediaFailed,
}

/// An event for the application about a call: the call-level TRTCCalling
/// events plus what TUICallKit added, and only those the machine raises.
/// Session events (kicked out, login expired, connection lost, voice volume,
/// errors) are the SDK's own, not this enum's. Every call the local party sees
/// (placed, rang for, or joined) ends with exactly one [`Event::CallEnd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The local user is invited to a call (TRTCCalling `INVITED`). Answer
    /// with `accept`, `reject` or `ignore`.
    Invited {
        /// The call.
        call_id: CallId,
        /// The invitation: pass it to `accept` / `reject` / `ignore`.
        invite_id: InviteId,
        /// Who placed the call.
        sponsor: UserId,
        /// Who sent this invite (the sponsor, or a member inviting more).
        inviter: UserId,
        /// The other invitees still ringing.
        other_invitees: Vec<UserId>,
        /// Who is already connected in the call.
        members: Vec<UserId>,
        /// Whether this is a group call.
        is_from_group: bool,
        /// The application group, if any.
        group_id: Option<GroupId>,
        /// Audio or video.
        media_type: MediaType,
        /// The media room.
        room_id: RoomId,
        /// Application data given by the caller.
        user_data: Option<String>,
        /// Ringing time in seconds (0: no timeout).
        timeout: u32,
    },
    /// An invitee declined (TRTCCalling `REJECT`).
    Rejected {
        /// The call.
        call_id: CallId,
        /// Who declined.
        user: UserId,
    },
    /// Invitees did not answer (TRTCCalling `NO_RESP`).
    NoResponse {
        /// The call.
        call_id: CallId,
        /// Who did not answer.
        users: Vec<UserId>,
        /// Timed out, or offline.
        reason: NoAnswer,
    },
    /// An invitee is in another call (TRTCCalling `LINE_BUSY`).
    LineBusy {
        /// The call.
        call_id: CallId,
        /// Who is busy.
        user: UserId,
    },
    /// The invite the local user was ringing for was withdrawn
    /// (TRTCCalling `CALLING_CANCEL`).
    CallingCancel {
        /// The call.
        call_id: CallId,
        /// The invitation.
        invite_id: InviteId,
        /// Who cancelled.
        user: UserId,
    },
    /// The local user's ringing timed out (TRTCCalling `CALLING_TIMEOUT`).
    CallingTimeout {
        /// The call.
        call_id: CallId,
        /// The invitation.
        invite_id: InviteId,
    },
    /// A party is now connected in the call (TRTCCalling `USER_ENTER`).
    UserEnter {
        /// The call.
        call_id: CallId,
        /// Who.
        user: UserId,
    },
    /// A connected party left (TRTCCalling `USER_LEAVE`).
    UserLeave {
        /// The call.
        call_id: CallId,
        /// Who.
        user: UserId,
    },
    /// The call is over for the local party (TRTCCalling `CALL_END`).
    CallEnd {
        /// The call.
        call_id: CallId,
        /// Why.
        reason: EndReason,
        /// Time connected (zero if the local party never talked to anyone).
        duration: Duration,
    },
    /// A party turned its camera on or off (TRTCCalling `USER_VIDEO_AVAILABLE`).
    UserVideoAvailable {
        /// The call.
        call_id: CallId,
        /// Who.
        user: UserId,
        /// Whether video is on.
        available: bool,
    },
    /// A party muted or unmuted (TRTCCalling `USER_AUDIO_AVAILABLE`).
    UserAudioAvailable {
        /// The call.
        call_id: CallId,
        /// Who.
        user: UserId,
        /// Whether audio is on.
        available: bool,
    },
    /// The call's media type changed (TUICallKit).
    MediaTypeChanged {
        /// The call.
        call_id: CallId,
        /// Who switched it (possibly the local user).
        user: UserId,
        /// The old type.
        from: MediaType,
        /// The new type.
        to: MediaType,
    },
    /// A party asks to switch the call to `to`; answer with
    /// `answer_media_switch`.
    MediaTypeSwitchRequested {
        /// The call.
        call_id: CallId,
        /// Who asks.
        user: UserId,
        /// The request, to answer.
        request_id: u32,
        /// The type asked for.
        to: MediaType,
    },
    /// A switch the local user asked for was refused or not answered.
    MediaTypeSwitchRefused {
        /// The call.
        call_id: CallId,
        /// Who refused or did not answer.
        users: Vec<UserId>,
    },
    /// The set of invitees still ringing changed (TRTCCalling
    /// `GROUP_CALL_INVITEE_LIST_UPDATE`).
    InviteeListUpdated {
        /// The call.
        call_id: CallId,
        /// Who is ringing now.
        invitees: Vec<UserId>,
    },
    /// The local user and the peer called each other at once: the call with
    /// the lower id won, and `abandoned` (the local user's own call) is over
    /// without a `CallEnd`; the call goes on as `call_id`, already accepted.
    GlareResolved {
        /// The local user's call, dropped.
        abandoned: CallId,
        /// The call that goes on.
        call_id: CallId,
    },
}
