//! Typed errors, one enum per kind of operation.

use thiserror::Error;

use crate::ids::{InviteId, MediaType, UserId};

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// The id is empty.
    #[error("id is empty")]
    Empty,
    /// The id is longer than allowed.
    #[error("id is {len} bytes long, at most {max} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id holds a character other than ASCII letters, digits, `-` and `_`.
    #[error("id holds {ch:?} at byte {at}: only ASCII letters, digits, '-' and '_' are allowed")]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// A room id outside `1..=2^31-1`.
    #[error("room id {0} is outside 1..=2147483647")]
    RoomOutOfRange(u32),
}

/// Why `call`, `group_call` or `invite` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    /// Already ringing, joining or in a call: one call at a time.
    #[error("already ringing or in a call")]
    Busy,
    /// `invite` needs a call in progress.
    #[error("not in a call")]
    NotInCall,
    /// No user to call.
    #[error("no user to call")]
    NoInvitees,
    /// The local user is in the list.
    #[error("cannot call yourself")]
    SelfInvite,
    /// A user appears twice, or is already in the call or ringing for it.
    #[error("user {0} is listed twice or is already in the call")]
    DuplicateInvitee(UserId),
    /// The call would exceed the participant limit.
    #[error("a call holds at most {max} participants, this would make {requested}")]
    TooManyParticipants {
        /// Participants the call would have, the local user included.
        requested: usize,
        /// The configured limit.
        max: usize,
    },
    /// The user data is larger than allowed.
    #[error("user data is {len} bytes, at most {max} are allowed")]
    UserDataTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why `accept`, `reject` or `ignore` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnswerError {
    /// No invite with this id was ever seen.
    #[error("no such invite: {0}")]
    UnknownInvite(InviteId),
    /// The invite exists but can no longer be answered.
    #[error("invite {invite_id} can no longer be answered: {reason}")]
    StaleInvite {
        /// The invite.
        invite_id: InviteId,
        /// What happened to it.
        reason: StaleReason,
    },
}

/// What happened to an invite that can no longer be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StaleReason {
    /// It was accepted, and that call is over.
    #[error("it was accepted and the call is over")]
    Accepted,
    /// It was rejected.
    #[error("it was rejected")]
    Rejected,
    /// It was ignored.
    #[error("it was ignored")]
    Ignored,
    /// The caller cancelled it.
    #[error("the caller cancelled it")]
    Cancelled,
    /// It timed out.
    #[error("it timed out")]
    TimedOut,
    /// The call ended while it was ringing.
    #[error("the call ended")]
    CallEnded,
}

/// Why `join` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JoinError {
    /// Already ringing, joining or in a call.
    #[error("already ringing or in a call")]
    Busy,
    /// The ticket names the local user as its host: it was handed out by
    /// this very user.
    #[error("the join ticket is the local user's own")]
    OwnTicket,
}

/// Why a media type switch or its answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SwitchError {
    /// Not connected in a call.
    #[error("not in a call")]
    NotInCall,
    /// The call already has this media type.
    #[error("the call is already {0:?}")]
    AlreadyThatType(MediaType),
    /// A switch asked by the local user is still waiting for answers.
    #[error("a switch request is already pending")]
    RequestPending,
    /// No pending switch request with this id.
    #[error("no pending switch request {0}")]
    UnknownRequest(u32),
}

/// Why a call-control message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not JSON, or not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// The `version` field is missing or not a number.
    #[error("missing or ill-typed version")]
    MissingVersion,
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {got}, this build speaks {supported}")]
    UnsupportedVersion {
        /// The version in the message.
        got: u64,
        /// The version this build speaks.
        supported: u32,
    },
    /// The `kind` field is missing or not a string.
    #[error("missing or ill-typed kind")]
    MissingKind,
    /// A message kind this build does not know.
    #[error("unknown message kind {0:?}")]
    UnknownKind(String),
    /// A known kind whose fields are missing, ill-typed or invalid.
    #[error("invalid {kind} message: {detail}")]
    Invalid {
        /// The message kind.
        kind: String,
        /// What is wrong.
        detail: String,
    },
}

/// Why an incoming message was refused by [`crate::CallMachine::handle_message`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// The message claims to come from the local user.
    #[error("message from the local user")]
    FromSelf,
    /// A list in the message is longer than the participant limit allows.
    #[error("{field} lists {len} entries, at most {max} are allowed")]
    TooManyEntries {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The user data is larger than allowed.
    #[error("user data is {len} bytes, at most {max} are allowed")]
    UserDataTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}
