//! The session layer's wire format: every frame a client and the server
//! exchange, as described in `docs/PROTOCOL.md`.
//!
//! Every frame is one JSON object in one WebSocket text message, with a
//! `"type"` field naming the frame. Unknown fields are ignored so that newer
//! peers can add fields without breaking older ones; an unknown `"type"` is
//! an error. Call-layer payloads ride inside `send` / `message` frames as an
//! arbitrary JSON value that the server forwards byte for byte.
//!
//! User ids the server vouches for (senders, room members) are
//! [`UserId`]s, so a frame naming a malformed one does not decode. The ids a
//! client sends stay strings: judging them is the server's job, and it
//! answers a bad one with a typed error (`invalid_user_id` at login) or by
//! listing it `undeliverable`, never with `bad_frame`.

use std::collections::BTreeSet;

use calling_core::UserId;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The session-layer protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket close codes the server uses (`docs/PROTOCOL.md`, "Close codes").
pub mod close_code {
    /// Normal closure: logout, or the client closed.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame was not valid UTF-8 (after an `error` `bad_frame`).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame exceeded the hard size limit and could not even be read
    /// (after an `error` `too_large`).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Login was refused (see the preceding `error` frame for the reason).
    pub const LOGIN_FAILED: u16 = 4001;
    /// The same user logged in on another connection.
    pub const KICKED_OUT: u16 = 4002;
    /// The UserSig expired while the session was open.
    pub const LOGIN_EXPIRED: u16 = 4003;
    /// Nothing arrived from the client within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4004;
    /// No successful login within the login deadline.
    pub const LOGIN_TIMEOUT: u16 = 4005;
    /// The client read too slowly: its outbound queue on the server went
    /// over its byte budget, so frames for it were being lost. Reconnect.
    pub const TOO_SLOW: u16 = 4006;
}

/// Machine-readable reason carried by an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, not UTF-8, or misses / mistypes a field.
    BadFrame,
    /// The frame's `type` is not one this protocol version knows.
    UnknownType,
    /// The frame is larger than the negotiated `max_frame_bytes`.
    TooLarge,
    /// A frame other than `login` (or `ping`) arrived before login.
    NotLoggedIn,
    /// `login` arrived on a connection that is already logged in.
    AlreadyLoggedIn,
    /// The UserSig is malformed, forged, or was issued for another user.
    BadSignature,
    /// The UserSig has expired.
    SigExpired,
    /// The `sdk_app_id` is not the one this server serves.
    WrongApp,
    /// The client asked for a protocol version the server does not speak.
    UnsupportedVersion,
    /// The user id is empty, too long, or has characters outside `[A-Za-z0-9_-]`.
    InvalidUserId,
    /// The connection sent frames faster than its rate limit allows; the
    /// frame was dropped.
    RateLimited,
    /// A `send` frame named no recipient or more than `max_recipients`.
    BadRecipients,
    /// The room name is empty, too long, or contains control characters.
    InvalidRoom,
    /// The user is already in `max_rooms_per_user` rooms.
    TooManyRooms,
    /// The room already holds `max_room_members` members.
    RoomFull,
    /// `leave` or `allow` named a room the user is not in.
    NotInRoom,
    /// The room has an allow list that does not name the user (`join`), or
    /// the request needs an allow list the room does not have (`join` with
    /// `allow` of an existing open room, `allow` in an open room).
    NotAllowed,
    /// A cluster-mode server lost its link to the cluster (Redis): logins
    /// are refused and recipients on other servers cannot be reached until
    /// it is back. Local recipients still get their frames. Try again.
    Unavailable,
    /// The server failed internally; the frame was not processed. Also what
    /// a code this version does not know decodes to, as `docs/PROTOCOL.md`
    /// asks of clients (servers may add codes within a version).
    #[serde(other)]
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire (`"bad_frame"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::AlreadyLoggedIn => "already_logged_in",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::SigExpired => "sig_expired",
            ErrorCode::WrongApp => "wrong_app",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::InvalidUserId => "invalid_user_id",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadRecipients => "bad_recipients",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits the server enforces, announced in `login_ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame (bytes of the WebSocket message) the server processes.
    pub max_frame_bytes: usize,
    /// Most recipients one `send` frame may name.
    pub max_recipients: usize,
    /// Sustained frames per second per connection.
    pub rate_per_sec: u32,
    /// Burst of frames allowed above the sustained rate.
    pub rate_burst: u32,
    /// Most rooms one user may be in at once.
    pub max_rooms_per_user: usize,
    /// Most members one room may hold.
    pub max_room_members: usize,
}

/// A STUN or TURN server the client may use for a call's media, announced in
/// `login_ok`: the browser's `RTCIceServer` shape plus the time the
/// credential stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, ...
    pub urls: Vec<String>,
    /// TURN username (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Unix time (seconds) after which the TURN server refuses the
    /// credential; ask for fresh ones before (`ice_refresh`). Absent for
    /// STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// A frame sent by a client to the server.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticate the connection. Must be the first frame.
    Login {
        /// Optional request id echoed in the answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The application id the UserSig was issued for.
        sdk_app_id: u64,
        /// The user logging in, as sent: the server checks it.
        user_id: String,
        /// The TLS-Sig-API v2 UserSig.
        user_sig: String,
        /// Session protocol version the client speaks.
        protocol: u32,
    },
    /// Heartbeat; answered with `pong`.
    Ping {
        /// Optional request id echoed in the `pong`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Deliver `payload` to every user in `to`.
    Send {
        /// Client-chosen id, echoed in `undeliverable` answers and in the
        /// delivered `message` frames.
        id: String,
        /// Recipients, as sent: ids that name no online user, malformed
        /// ones included, come back in `undeliverable`.
        to: Vec<String>,
        /// Opaque call-layer payload (any JSON value).
        payload: Box<RawValue>,
    },
    /// Join a room; the first joiner creates it.
    Join {
        /// Optional request id echoed in the answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Room name.
        room: String,
        /// Users allowed to join besides the joiner: creates the room with
        /// this allow list, or extends the list of a room the joiner may
        /// enter. Empty (or absent on the wire): no list asked for.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        allow: Vec<String>,
    },
    /// Extend the allow list of a room this user is in.
    Allow {
        /// Optional request id echoed in the answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Room name.
        room: String,
        /// Users to add, as sent: the server checks them.
        users: Vec<String>,
    },
    /// Leave a room.
    Leave {
        /// Optional request id echoed in the answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Room name.
        room: String,
    },
    /// Ask for fresh STUN/TURN servers (new TURN credentials) before the
    /// ones from `login_ok` expire; answered with `ice_servers`. Logged-in
    /// connections only.
    IceRefresh {
        /// Optional request id echoed in the answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// End the session; the server closes with code 1000.
    Logout {
        /// Optional request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// A frame sent by the server to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Login succeeded.
    LoginOk {
        /// The request id of the `login` frame, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The verified user id of this session.
        user_id: UserId,
        /// Session protocol version in use.
        protocol: u32,
        /// How often the client should send `ping`, in milliseconds.
        heartbeat_interval_ms: u64,
        /// Silence after which the server drops the connection, in milliseconds.
        heartbeat_timeout_ms: u64,
        /// Unix time (seconds) at which the UserSig expires.
        expires_at: u64,
        /// The limits in force.
        limits: Limits,
        /// STUN/TURN servers for this session's calls, TURN ones with
        /// credentials issued for this user (absent on the wire: none).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// Answer to `ice_refresh`: the servers to use from now on, in the
    /// shape of `login_ok.ice_servers`, TURN ones with credentials issued
    /// now. Always present on the wire (`[]`: none configured).
    IceServers {
        /// The request id of the `ice_refresh`, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The STUN/TURN servers, replacing every earlier list.
        ice_servers: Vec<IceServer>,
    },
    /// Answer to `ping`.
    Pong {
        /// The request id of the `ping`, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A payload from another user.
    Message {
        /// The verified sender, stamped by the server.
        from: UserId,
        /// The sender's `send` id.
        id: String,
        /// The payload exactly as the sender sent it.
        payload: Box<RawValue>,
    },
    /// Some recipients of a `send` did not get it; sent at once.
    Undeliverable {
        /// The `send` frame's id.
        id: String,
        /// The recipients that are offline or name nobody, spelt as the
        /// `send` named them (so possibly malformed).
        users: Vec<String>,
        /// The recipients that are online but whose outbound queue was full:
        /// the payload was lost, the user is still there. Absent on the wire
        /// when empty, so a server without it reads the same.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        congested: Vec<String>,
    },
    /// `join` succeeded.
    Joined {
        /// The request id of the `join`, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Room name.
        room: String,
        /// Every member now in the room, the joiner included.
        members: Vec<UserId>,
    },
    /// `allow` succeeded: the users are on the room's allow list.
    Allowed {
        /// The request id of the `allow`, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Room name.
        room: String,
    },
    /// `leave` succeeded.
    Left {
        /// The request id of the `leave`, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Room name.
        room: String,
    },
    /// Another user entered a room this session is in.
    RoomEnter {
        /// Room name.
        room: String,
        /// The user who entered.
        user: UserId,
    },
    /// Another user left a room this session is in (or its connection died).
    RoomLeave {
        /// Room name.
        room: String,
        /// The user who left.
        user: UserId,
    },
    /// The same user logged in elsewhere; the server closes with 4002 next.
    KickedOut {
        /// Human-readable reason.
        reason: String,
    },
    /// The UserSig expired; the server closes with 4003 next.
    LoginExpired {},
    /// A frame was refused.
    Error {
        /// The id of the refused frame, if it had one and it could be read.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes are not UTF-8.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// The text is not a JSON object of the expected shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The `type` field names no known frame.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// A field the frame type needs is absent.
    #[error("frame type {kind:?} needs field {field:?}")]
    MissingField {
        /// The frame type.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

impl FrameError {
    /// The error code the server answers with for this decoding failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::UnknownType(_) => ErrorCode::UnknownType,
            FrameError::NotUtf8 | FrameError::Malformed(_) | FrameError::MissingField { .. } => {
                ErrorCode::BadFrame
            }
        }
    }
}

/// Every field any client frame may carry; decoding goes through this flat
/// shape because serde's tagged enums cannot hold a borrowed [`RawValue`].
#[derive(Deserialize)]
struct WireClient {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    sdk_app_id: Option<u64>,
    user_id: Option<String>,
    user_sig: Option<String>,
    protocol: Option<u32>,
    to: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present_raw")]
    payload: Option<Box<RawValue>>,
    room: Option<String>,
    allow: Option<Vec<String>>,
    users: Option<Vec<String>>,
}

/// Same trick for server frames.
#[derive(Deserialize)]
struct WireServer {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    user_id: Option<UserId>,
    protocol: Option<u32>,
    heartbeat_interval_ms: Option<u64>,
    heartbeat_timeout_ms: Option<u64>,
    expires_at: Option<u64>,
    limits: Option<Limits>,
    ice_servers: Option<Vec<IceServer>>,
    from: Option<UserId>,
    #[serde(default, deserialize_with = "present_raw")]
    payload: Option<Box<RawValue>>,
    users: Option<Vec<String>>,
    congested: Option<Vec<String>>,
    room: Option<String>,
    members: Option<Vec<UserId>>,
    user: Option<UserId>,
    reason: Option<String>,
    code: Option<ErrorCode>,
    message: Option<String>,
}

/// A payload that is present, `null` included, is `Some`; plain
/// `Option<Box<RawValue>>` would turn `null` into `None`, i.e. "missing".
fn present_raw<'de, D>(d: D) -> Result<Option<Box<RawValue>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Box::<RawValue>::deserialize(d).map(Some)
}

fn read_wire<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FrameError> {
    serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))
}

fn write_wire<T: Serialize>(frame: &T) -> String {
    // Serializing frames cannot fail: every map key is a string and raw
    // payloads are already valid JSON.
    serde_json::to_string(frame).unwrap_or_else(|_| String::from("{}"))
}

fn need<T>(v: Option<T>, kind: &'static str, field: &'static str) -> Result<T, FrameError> {
    v.ok_or(FrameError::MissingField { kind, field })
}

/// Best-effort extraction of the `id` of a frame that failed to decode, so
/// that the error answer can still name it.
pub fn peek_id(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct OnlyId {
        id: Option<String>,
    }
    serde_json::from_str::<OnlyId>(text).ok().and_then(|f| f.id)
}

impl ClientFrame {
    /// Decodes a client frame from the bytes of one WebSocket message.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let text = std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8)?;
        Self::parse(text)
    }

    /// Decodes a client frame from JSON text.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let w: WireClient = read_wire(text)?;
        Ok(match w.kind.as_str() {
            "login" => ClientFrame::Login {
                id: w.id,
                sdk_app_id: need(w.sdk_app_id, "login", "sdk_app_id")?,
                user_id: need(w.user_id, "login", "user_id")?,
                user_sig: need(w.user_sig, "login", "user_sig")?,
                protocol: w.protocol.unwrap_or(PROTOCOL_VERSION),
            },
            "ping" => ClientFrame::Ping { id: w.id },
            "send" => ClientFrame::Send {
                id: need(w.id, "send", "id")?,
                to: need(w.to, "send", "to")?,
                payload: need(w.payload, "send", "payload")?,
            },
            "join" => ClientFrame::Join {
                id: w.id,
                room: need(w.room, "join", "room")?,
                allow: w.allow.unwrap_or_default(),
            },
            "allow" => ClientFrame::Allow {
                id: w.id,
                room: need(w.room, "allow", "room")?,
                users: need(w.users, "allow", "users")?,
            },
            "leave" => ClientFrame::Leave {
                id: w.id,
                room: need(w.room, "leave", "room")?,
            },
            "ice_refresh" => ClientFrame::IceRefresh { id: w.id },
            "logout" => ClientFrame::Logout { id: w.id },
            _ => return Err(FrameError::UnknownType(w.kind)),
        })
    }

    /// Encodes the frame as JSON text.
    pub fn to_json(&self) -> String {
        write_wire(self)
    }
}

impl ServerFrame {
    /// Decodes a server frame from JSON text.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let w: WireServer = read_wire(text)?;
        Ok(match w.kind.as_str() {
            "login_ok" => ServerFrame::LoginOk {
                id: w.id,
                user_id: need(w.user_id, "login_ok", "user_id")?,
                protocol: w.protocol.unwrap_or(PROTOCOL_VERSION),
                heartbeat_interval_ms: need(
                    w.heartbeat_interval_ms,
                    "login_ok",
                    "heartbeat_interval_ms",
                )?,
                heartbeat_timeout_ms: need(
                    w.heartbeat_timeout_ms,
                    "login_ok",
                    "heartbeat_timeout_ms",
                )?,
                expires_at: w.expires_at.unwrap_or(0),
                limits: need(w.limits, "login_ok", "limits")?,
                ice_servers: w.ice_servers.unwrap_or_default(),
            },
            "ice_servers" => ServerFrame::IceServers {
                id: w.id,
                ice_servers: need(w.ice_servers, "ice_servers", "ice_servers")?,
            },
            "pong" => ServerFrame::Pong { id: w.id },
            "message" => ServerFrame::Message {
                from: need(w.from, "message", "from")?,
                id: need(w.id, "message", "id")?,
                payload: need(w.payload, "message", "payload")?,
            },
            "undeliverable" => ServerFrame::Undeliverable {
                id: need(w.id, "undeliverable", "id")?,
                users: need(w.users, "undeliverable", "users")?,
                congested: w.congested.unwrap_or_default(),
            },
            "joined" => ServerFrame::Joined {
                id: w.id,
                room: need(w.room, "joined", "room")?,
                members: need(w.members, "joined", "members")?,
            },
            "allowed" => ServerFrame::Allowed {
                id: w.id,
                room: need(w.room, "allowed", "room")?,
            },
            "left" => ServerFrame::Left {
                id: w.id,
                room: need(w.room, "left", "room")?,
            },
            "room_enter" => ServerFrame::RoomEnter {
                room: need(w.room, "room_enter", "room")?,
                user: need(w.user, "room_enter", "user")?,
            },
            "room_leave" => ServerFrame::RoomLeave {
                room: need(w.room, "room_leave", "room")?,
                user: need(w.user, "room_leave", "user")?,
            },
            "kicked_out" => ServerFrame::KickedOut {
                reason: w.reason.unwrap_or_default(),
            },
            "login_expired" => ServerFrame::LoginExpired {},
            "error" => ServerFrame::Error {
                id: w.id,
                code: need(w.code, "error", "code")?,
                message: w.message.unwrap_or_default(),
            },
            _ => return Err(FrameError::UnknownType(w.kind)),
        })
    }

    /// Encodes the frame as JSON text.
    pub fn to_json(&self) -> String {
        write_wire(self)
    }

    /// Shorthand for an `error` frame.
    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Whether `room` is acceptable: 1 to [`MAX_ROOM_BYTES`] bytes, no control
/// characters.
pub fn valid_room(room: &str) -> bool {
    !room.is_empty() && room.len() <= MAX_ROOM_BYTES && !room.chars().any(char::is_control)
}

/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 128;

/// Most users one room's allow list may name; past it `allow` is refused
/// with `room_full`. Bounds what a member can make the server hold.
pub const MAX_ALLOW_LIST: usize = 256;

/// Who may join a room (`docs/PROTOCOL.md`, "Room access"): the one rule
/// both the server's hub and the in-memory hub apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAccess {
    /// Anyone may join: a room created without an allow list.
    Open,
    /// Only the users listed may join; the creator is always listed.
    Closed(BTreeSet<UserId>),
}

impl RoomAccess {
    /// The access of a room `owner` creates by joining with `allow`: closed
    /// with `owner` and `allow` listed, or open when `allow` is empty.
    /// `allow` must already be within [`MAX_ALLOW_LIST`].
    pub fn new_room(owner: &UserId, allow: &[UserId]) -> Self {
        if allow.is_empty() {
            return RoomAccess::Open;
        }
        let mut list: BTreeSet<UserId> = allow.iter().cloned().collect();
        list.insert(owner.clone());
        RoomAccess::Closed(list)
    }

    /// Whether `user` may join this existing room with `allow`. A closed
    /// room admits only its list, so a stranger gets `not_allowed` whoever
    /// is inside; an open room cannot be closed by a later joiner, who gets
    /// `not_allowed` rather than a room others may still watch.
    pub fn check_join(&self, user: &UserId, allow: &[UserId]) -> Result<(), ErrorCode> {
        match self {
            RoomAccess::Open if allow.is_empty() => Ok(()),
            RoomAccess::Open => Err(ErrorCode::NotAllowed),
            RoomAccess::Closed(list) if list.contains(user) => Ok(()),
            RoomAccess::Closed(_) => Err(ErrorCode::NotAllowed),
        }
    }

    /// Adds `users` to a closed room's list (a member asked). Refused with
    /// `not_allowed` for an open room and `room_full` when the list would
    /// pass [`MAX_ALLOW_LIST`]; nothing is added then.
    pub fn extend(&mut self, users: &[UserId]) -> Result<(), ErrorCode> {
        let RoomAccess::Closed(list) = self else {
            return Err(ErrorCode::NotAllowed);
        };
        let new = users.iter().filter(|u| !list.contains(*u)).count();
        if list.len() + new > MAX_ALLOW_LIST {
            return Err(ErrorCode::RoomFull);
        }
        list.extend(users.iter().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn send_round_trips_payload_bytes_exactly() {
        let text =
            r#"{"type":"send","id":"m1","to":["bob","carol"],"payload":{"a": [1, 2.50, "x"]}}"#;
        let f = ClientFrame::parse(text).unwrap();
        match &f {
            ClientFrame::Send { id, to, payload } => {
                assert_eq!(id, "m1");
                assert_eq!(to, &["bob", "carol"]);
                assert_eq!(payload.get(), r#"{"a": [1, 2.50, "x"]}"#);
            }
            other => panic!("decoded as {other:?}"),
        }
        let again = ClientFrame::parse(&f.to_json()).unwrap();
        assert!(matches!(again, ClientFrame::Send { .. }));
    }

    #[test]
    fn login_ok_carries_ice_servers_in_the_browser_shape() {
        let limits = r#"{"max_frame_bytes":1,"max_recipients":1,"rate_per_sec":1,"rate_burst":1,"max_rooms_per_user":1,"max_room_members":1}"#;
        let text = format!(
            r#"{{"type":"login_ok","user_id":"alice","heartbeat_interval_ms":1,"heartbeat_timeout_ms":2,"limits":{limits},
            "ice_servers":[{{"urls":["stun:h:1"]}},{{"urls":["turn:h:1?transport=udp"],"username":"9:alice","credential":"c","expires_at":9}}]}}"#
        );
        let ServerFrame::LoginOk { ice_servers, .. } = ServerFrame::parse(&text).unwrap() else {
            panic!("not login_ok");
        };
        let turn = IceServer {
            urls: vec!["turn:h:1?transport=udp".into()],
            username: Some("9:alice".into()),
            credential: Some("c".into()),
            expires_at: Some(9),
        };
        assert_eq!(ice_servers[1], turn);
        assert_eq!(ice_servers[0].username, None);
        let json = serde_json::to_value(&ice_servers[0]).unwrap();
        assert_eq!(json, serde_json::json!({"urls": ["stun:h:1"]}));
        // Absent means none, so older servers' login_ok still parses.
        let old = text.split(",\n").next().unwrap().to_owned() + "}";
        let ServerFrame::LoginOk { ice_servers, .. } = ServerFrame::parse(&old).unwrap() else {
            panic!("not login_ok");
        };
        assert!(ice_servers.is_empty());
    }

    #[test]
    fn ice_refresh_and_its_answer_are_as_documented() {
        let ask = ClientFrame::parse(r#"{"type":"ice_refresh","id":"i1"}"#).unwrap();
        assert!(matches!(&ask, ClientFrame::IceRefresh { id: Some(id) } if id == "i1"));
        assert_eq!(ask.to_json(), r#"{"type":"ice_refresh","id":"i1"}"#);
        let bare = ClientFrame::parse(r#"{"type":"ice_refresh"}"#).unwrap();
        assert!(matches!(bare, ClientFrame::IceRefresh { id: None }));

        let text = r#"{"type":"ice_servers","id":"i1","ice_servers":[{"urls":["turn:h:1"],"username":"9:bob","credential":"c","expires_at":9}]}"#;
        let answer = ServerFrame::parse(text).unwrap();
        let ServerFrame::IceServers { id, ice_servers } = &answer else {
            panic!("decoded as {answer:?}");
        };
        assert_eq!(id.as_deref(), Some("i1"));
        assert_eq!(ice_servers[0].username.as_deref(), Some("9:bob"));
        assert_eq!(ice_servers[0].expires_at, Some(9));
        assert_eq!(answer.to_json(), text);
        // None configured is an empty list, never a missing field.
        let none = ServerFrame::IceServers {
            id: None,
            ice_servers: vec![],
        };
        assert_eq!(none.to_json(), r#"{"type":"ice_servers","ice_servers":[]}"#);
        assert!(matches!(
            ServerFrame::parse(r#"{"type":"ice_servers","id":"i2"}"#),
            Err(FrameError::MissingField {
                kind: "ice_servers",
                field: "ice_servers"
            })
        ));
    }

    #[test]
    fn null_payload_is_a_payload() {
        let f =
            ClientFrame::parse(r#"{"type":"send","id":"1","to":["b"],"payload":null}"#).unwrap();
        assert!(matches!(f, ClientFrame::Send { payload, .. } if payload.get() == "null"));
        let f =
            ServerFrame::parse(r#"{"type":"message","from":"a","id":"1","payload":null}"#).unwrap();
        assert!(matches!(f, ServerFrame::Message { payload, .. } if payload.get() == "null"));
    }

    #[test]
    fn server_frames_round_trip() {
        let frames = vec![
            ServerFrame::Message {
                from: uid("alice"),
                id: "7".into(),
                payload: RawValue::from_string("[1,2]".into()).unwrap(),
            },
            ServerFrame::Undeliverable {
                id: "7".into(),
                users: vec!["bob".into()],
                congested: vec![],
            },
            ServerFrame::Undeliverable {
                id: "8".into(),
                users: vec![],
                congested: vec!["carol".into()],
            },
            ServerFrame::Allowed {
                id: Some("a".into()),
                room: "r".into(),
            },
            ServerFrame::error(Some("x".into()), ErrorCode::RateLimited, "slow down"),
            ServerFrame::LoginExpired {},
            ServerFrame::KickedOut {
                reason: "other login".into(),
            },
        ];
        for f in frames {
            let json = f.to_json();
            let back = ServerFrame::parse(&json).unwrap();
            assert_eq!(back.to_json(), json);
        }
    }

    #[test]
    fn error_json_is_as_documented() {
        let f = ServerFrame::error(None, ErrorCode::NotLoggedIn, "login first");
        assert_eq!(
            f.to_json(),
            r#"{"type":"error","code":"not_logged_in","message":"login first"}"#
        );
    }

    #[test]
    fn decoding_failures_are_typed() {
        assert!(matches!(
            ClientFrame::decode(&[0xff, 0xfe]),
            Err(FrameError::NotUtf8)
        ));
        assert!(matches!(
            ClientFrame::parse("{not json"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"dance"}"#),
            Err(FrameError::UnknownType(t)) if t == "dance"
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"send","id":"1","to":["a"]}"#),
            Err(FrameError::MissingField {
                field: "payload",
                ..
            })
        ));
        assert_eq!(peek_id(r#"{"type":"send","id":"q"}"#).as_deref(), Some("q"));
    }

    #[test]
    fn an_unknown_error_code_reads_as_internal() {
        let f = ServerFrame::parse(r#"{"type":"error","id":"L","code":"brand_new","message":"m"}"#);
        assert!(matches!(
            f,
            Ok(ServerFrame::Error { code: ErrorCode::Internal, id: Some(id), .. }) if id == "L"
        ));
    }

    #[test]
    fn error_code_strings_match_serde() {
        for code in [
            ErrorCode::BadFrame,
            ErrorCode::TooManyRooms,
            ErrorCode::SigExpired,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn vouched_for_ids_must_be_valid_user_ids() {
        let member = |user: &str| format!(r#"{{"type":"room_enter","room":"r","user":"{user}"}}"#);
        assert!(matches!(
            ServerFrame::parse(&member("bob")),
            Ok(ServerFrame::RoomEnter { user, .. }) if user == uid("bob")
        ));
        for bad in ["", "b b", &"b".repeat(33)] {
            assert!(matches!(
                ServerFrame::parse(&member(bad)),
                Err(FrameError::Malformed(_))
            ));
        }
        // What a client names is the server's to judge: it still decodes.
        let send = r#"{"type":"send","id":"1","to":["no such user!"],"payload":1}"#;
        assert!(
            matches!(ClientFrame::parse(send), Ok(ClientFrame::Send { to, .. }) if to == ["no such user!"])
        );
        let login = r#"{"type":"login","sdk_app_id":1,"user_id":"","user_sig":"s"}"#;
        assert!(matches!(
            ClientFrame::parse(login),
            Ok(ClientFrame::Login { .. })
        ));
    }

    #[test]
    fn join_allow_and_undeliverable_stay_readable_by_old_peers() {
        // An old client's join carries no allow list: an open-room join.
        let old = ClientFrame::parse(r#"{"type":"join","id":"j","room":"r"}"#).unwrap();
        assert!(matches!(old, ClientFrame::Join { allow, .. } if allow.is_empty()));
        let join = ClientFrame::Join {
            id: None,
            room: "r".into(),
            allow: vec!["bob".into()],
        };
        assert_eq!(
            join.to_json(),
            r#"{"type":"join","room":"r","allow":["bob"]}"#
        );
        let allow = ClientFrame::parse(r#"{"type":"allow","room":"r","users":["x"]}"#).unwrap();
        assert!(matches!(allow, ClientFrame::Allow { users, .. } if users == ["x"]));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"allow","room":"r"}"#),
            Err(FrameError::MissingField { field: "users", .. })
        ));
        // Without congestion the frame is what old clients know.
        let plain = ServerFrame::Undeliverable {
            id: "m".into(),
            users: vec!["a".into()],
            congested: vec![],
        };
        assert_eq!(
            plain.to_json(),
            r#"{"type":"undeliverable","id":"m","users":["a"]}"#
        );
        let old = ServerFrame::parse(r#"{"type":"undeliverable","id":"m","users":["a"]}"#);
        assert!(
            matches!(old, Ok(ServerFrame::Undeliverable { congested, .. }) if congested.is_empty())
        );
    }

    #[test]
    fn room_access_admits_only_its_list() {
        let (alice, bob, eve) = (uid("alice"), uid("bob"), uid("eve"));
        let (just_bob, just_eve) = ([bob.clone()], [eve.clone()]);
        let open = RoomAccess::new_room(&alice, &[]);
        assert_eq!(open, RoomAccess::Open);
        assert_eq!(open.check_join(&eve, &[]), Ok(()));
        assert_eq!(open.check_join(&bob, &just_bob), Err(ErrorCode::NotAllowed));
        let mut closed = RoomAccess::new_room(&alice, &just_bob);
        assert_eq!(closed.check_join(&alice, &[]), Ok(()));
        assert_eq!(closed.check_join(&bob, &[]), Ok(()));
        assert_eq!(closed.check_join(&eve, &[]), Err(ErrorCode::NotAllowed));
        assert_eq!(
            closed.check_join(&eve, &just_eve),
            Err(ErrorCode::NotAllowed)
        );
        closed.extend(&just_eve).unwrap();
        assert_eq!(closed.check_join(&eve, &[]), Ok(()));
        let many: Vec<UserId> = (0..MAX_ALLOW_LIST).map(|i| uid(&format!("u{i}"))).collect();
        assert_eq!(closed.extend(&many), Err(ErrorCode::RoomFull));
        assert_eq!(
            RoomAccess::Open.extend(&just_eve),
            Err(ErrorCode::NotAllowed)
        );
    }

    #[test]
    fn room_validation() {
        assert!(valid_room("12345"));
        assert!(!valid_room("a\nb"));
        assert!(!valid_room(""));
    }
}
