//! Call-control messages: what one party's machine sends another's.
//!
//! These travel in the call layer of the wire protocol (see
//! `docs/PROTOCOL.md`), opaque to the signaling server. The sender's user id is
//! not in the message: the server stamps it, and it reaches
//! [`crate::CallMachine::handle_message`] as `from`.
//!
//! JSON shape: one flat object, `{"version":1,"call_id":"…","party":123,
//! "kind":"invite", …fields of that kind}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DecodeError;
use crate::ids::{CallId, GroupId, InviteId, JoinSecret, MediaType, PartyId, RoomId, UserId};

/// The call-layer protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One call-control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The call this message is about.
    pub call_id: CallId,
    /// The sender's participation in that call.
    pub party: PartyId,
    /// What the message says.
    #[serde(flatten)]
    pub body: Body,
}

/// A participant known to be connected in a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Who.
    pub user: UserId,
    /// Their participation.
    pub party: PartyId,
    /// Whether they send audio (microphone not muted).
    pub audio: bool,
    /// Whether they send video (camera on).
    pub video: bool,
}

/// A user invited to a call who has not answered yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Who.
    pub user: UserId,
    /// The invitation they are ringing for.
    pub invite_id: InviteId,
    /// Who invited them.
    pub inviter: UserId,
}

/// Who is in a call, as the sender knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// Connected participants, the sender included.
    pub connected: Vec<Member>,
    /// Invitees still ringing.
    pub ringing: Vec<Pending>,
}

/// What the call is: sent with invites and rosters so a joiner learns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// The media room number.
    pub room_id: RoomId,
    /// Current media type.
    pub media_type: MediaType,
    /// Who placed the call.
    pub sponsor: UserId,
    /// The application group, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// Whether this is a group call (placed with `group_call`).
    pub is_group: bool,
}

/// Why an invitee did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoAnswer {
    /// The ringing timed out.
    Timeout,
    /// The user was offline: the server could not deliver the invite.
    Offline,
}

/// The body of a [`Message`], tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// Ring the recipient: they are invited to the call.
    Invite {
        /// The invitation.
        invite_id: InviteId,
        /// What the call is.
        #[serde(flatten)]
        info: CallInfo,
        /// Ringing time in seconds; 0 rings until answered or cancelled.
        timeout: u32,
        /// Application data given to `call`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_data: Option<String>,
        /// Who is in the call and who else is ringing.
        roster: Roster,
    },
    /// The inviter withdraws the recipient's invitation.
    Cancel {
        /// The invitation.
        invite_id: InviteId,
    },
    /// The sender is now connected in the call: it accepted an invite
    /// (`invite_id` set), joins with a ticket (`join_secret` set), or
    /// introduces itself to a member it just learned of.
    Enter {
        /// The invitation accepted, if this is an accept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite_id: Option<InviteId>,
        /// The join ticket's secret, if this is a join.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        join_secret: Option<JoinSecret>,
        /// Whether the sender sends audio.
        audio: bool,
        /// Whether the sender sends video.
        video: bool,
    },
    /// The sender rejects its invitation (`busy`: automatically, because it
    /// is in another call).
    Reject {
        /// The invitation.
        invite_id: InviteId,
        /// Line busy rather than declined.
        busy: bool,
    },
    /// These invitees did not answer.
    Timeout {
        /// The invitation.
        invite_id: InviteId,
        /// Who did not answer.
        users: Vec<UserId>,
        /// Why.
        reason: NoAnswer,
    },
    /// The sender hangs up and leaves the call.
    Leave,
    /// Who is in the call, as the sender knows it. Sent to a party that just
    /// entered, to every connected party when one entered, and to everyone
    /// when the sender invites more users.
    Roster {
        /// What the call is.
        #[serde(flatten)]
        info: CallInfo,
        /// Who is in it.
        roster: Roster,
        /// The call's join secret: only in a roster sent to connected
        /// parties, never to one that is only ringing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        join_secret: Option<JoinSecret>,
    },
    /// The sender is not in this call (an answer to a message about it):
    /// every participation of the sender below `upto` is over. With
    /// `dropped`, the sender is still in the call but has dropped the
    /// receiver's participation `dropped` for silence: that participation
    /// is over, and its party leaves the call.
    Gone {
        /// The sender's next party id when it answered.
        upto: PartyId,
        /// The receiver's participation the sender dropped, if that is what
        /// this answer says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropped: Option<PartyId>,
    },
    /// The sender is still connected in the call (the call-level
    /// keepalive, sent every [`crate::Config::keepalive_interval`]).
    Alive,
    /// The sender's microphone or camera changed.
    MediaState {
        /// Whether the sender sends audio.
        audio: bool,
        /// Whether the sender sends video.
        video: bool,
    },
    /// The call's media type is now `media_type`.
    MediaType {
        /// The new type.
        media_type: MediaType,
    },
    /// The sender asks to switch the call to `media_type` (audio to video).
    SwitchRequest {
        /// Request number, echoed in the answer.
        request_id: u32,
        /// The type asked for.
        media_type: MediaType,
    },
    /// The answer to a switch request.
    SwitchAnswer {
        /// The request answered.
        request_id: u32,
        /// Whether the sender agrees.
        accepted: bool,
    },
}

impl Body {
    /// The `kind` string of this body on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Invite { .. } => "invite",
            Body::Cancel { .. } => "cancel",
            Body::Enter { .. } => "enter",
            Body::Reject { .. } => "reject",
            Body::Timeout { .. } => "timeout",
            Body::Leave => "leave",
            Body::Roster { .. } => "roster",
            Body::Gone { .. } => "gone",
            Body::Alive => "alive",
            Body::MediaState { .. } => "media_state",
            Body::MediaType { .. } => "media_type",
            Body::SwitchRequest { .. } => "switch_request",
            Body::SwitchAnswer { .. } => "switch_answer",
        }
    }
}

/// Every message kind this build knows.
pub const KINDS: &[&str] = &[
    "invite",
    "cancel",
    "enter",
    "reject",
    "timeout",
    "leave",
    "roster",
    "gone",
    "alive",
    "media_state",
    "media_type",
    "switch_request",
    "switch_answer",
];

impl Message {
    /// Encodes the message as a JSON value.
    pub fn to_value(&self) -> Value {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Encodes the message as JSON text.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// Decodes a message from JSON text, with a typed error for each way it
    /// can be wrong.
    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    /// Decodes a message from a JSON value: checks the version first, then
    /// the kind, then the fields.
    pub fn from_value(value: Value) -> Result<Self, DecodeError> {
        let obj = value
            .as_object()
            .ok_or_else(|| DecodeError::NotJson("expected an object".into()))?;
        let version = obj
            .get("version")
            .and_then(Value::as_u64)
            .ok_or(DecodeError::MissingVersion)?;
        if version != u64::from(PROTOCOL_VERSION) {
            return Err(DecodeError::UnsupportedVersion {
                got: version,
                supported: PROTOCOL_VERSION,
            });
        }
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or(DecodeError::MissingKind)?;
        if !KINDS.contains(&kind) {
            return Err(DecodeError::UnknownKind(kind.to_owned()));
        }
        let kind = kind.to_owned();
        serde_json::from_value(value).map_err(|e| DecodeError::Invalid {
            kind,
            detail: e.to_string(),
        })
    }
}
