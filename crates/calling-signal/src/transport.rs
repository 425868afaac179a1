//! The [`Transport`] trait the SDK drives, and the events it yields.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use calling_core::UserId;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::protocol::{ErrorCode, IceServer};

/// Identifies one sent payload; echoed in [`TransportEvent::Undeliverable`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub String);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a transport reports to the application, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportEvent {
    /// A call-layer payload from another user.
    Message {
        /// The sender, as verified by the server (or the hub).
        from: UserId,
        /// The sender's message id.
        id: MessageId,
        /// The payload as sent.
        payload: Value,
    },
    /// Some recipients of a message did not get it.
    Undeliverable {
        /// The id returned by [`Transport::send`].
        id: MessageId,
        /// Recipients that are offline: they are gone.
        offline: Vec<UserId>,
        /// Recipients that are online but could not take the message (their
        /// queue on the server was full): the message is lost, the user is
        /// still there.
        congested: Vec<UserId>,
    },
    /// A user entered a room this transport is in.
    RoomEnter {
        /// Room name.
        room: String,
        /// The user who entered.
        user: UserId,
    },
    /// A user left a room this transport is in, or their connection died.
    RoomLeave {
        /// Room name.
        room: String,
        /// The user who left.
        user: UserId,
    },
    /// The same user logged in elsewhere; this transport is closed for good.
    KickedOut,
    /// The UserSig expired or was refused on re-login; the transport is
    /// closed for good and needs a fresh UserSig.
    LoginExpired,
    /// The connection dropped; the transport is reconnecting.
    Disconnected,
    /// The transport reconnected, logged in again and re-joined its rooms.
    Reconnected,
    /// The server refused a frame this transport sent.
    Error {
        /// The refused frame's id, when it had one.
        id: Option<String>,
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

/// Why a transport operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// The transport is not connected right now (it may be reconnecting).
    #[error("not connected")]
    NotConnected,
    /// The transport was closed, kicked out or its login expired.
    #[error("transport closed")]
    Closed,
    /// Connecting to the server failed.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The server refused the login.
    #[error("login refused: {code}: {message}")]
    LoginRefused {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// The server refused the request.
    #[error("refused: {code}: {message}")]
    Refused {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// The server did not answer in time.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The payload could not be encoded or was rejected locally.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A `wss://` connection failed at the TLS layer. Returned by the first
    /// connect rather than retried: an untrusted certificate stays
    /// untrusted.
    #[error("TLS {kind}: {message}")]
    Tls {
        /// What kind of failure.
        kind: TlsFailure,
        /// Detail from rustls or the PEM parser.
        message: String,
    },
}

/// The kinds of [`TransportError::Tls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate did not verify: unknown issuer (not in the
    /// system roots nor the extra CA), wrong name, expired, ...
    Untrusted,
    /// The handshake failed otherwise, e.g. the server does not speak TLS.
    Handshake,
    /// The client's own TLS settings are unusable (bad extra CA PEM, a
    /// host name that cannot be a TLS server name).
    Config,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFailure::Untrusted => "certificate not trusted",
            TlsFailure::Handshake => "handshake failed",
            TlsFailure::Config => "bad client configuration",
        })
    }
}

/// Carries call-layer payloads between users.
///
/// Implemented by [`crate::WsTransport`] (our signaling server) and
/// [`crate::MemoryTransport`] (in-process hub); the SDK facade is written
/// against this trait only, so an application can also bring its own.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The logged-in user this transport speaks for.
    fn local_user(&self) -> &UserId;

    /// Sends `payload` to every user in `to`. Returns once the payload is
    /// handed to the wire; recipients that turn out offline or congested are
    /// reported by
    /// [`TransportEvent::Undeliverable`] carrying the returned id, and a
    /// refusal by the server (rate limit, too many recipients, too large)
    /// by [`TransportEvent::Error`] carrying it.
    async fn send(&self, to: &[UserId], payload: Value) -> Result<MessageId, TransportError>;

    /// Joins `room` and returns its members (this user included).
    ///
    /// A room that does not exist is created with this user as its first
    /// member; a non-empty `allow` makes it a closed room that only this
    /// user and the users in `allow` may join. Joining a closed room needs
    /// a place on its list (else [`ErrorCode::NotAllowed`]), and a
    /// non-empty `allow` then extends the list. An empty `allow` asks for no
    /// list: an open room anyone may join, as rooms were before allow lists.
    async fn join_room(&self, room: &str, allow: &[UserId]) -> Result<Vec<UserId>, TransportError>;

    /// Adds `users` to the allow list of `room`, a closed room this user is
    /// in, so that they may join it. Refused with
    /// [`ErrorCode::NotInRoom`] when this user is not in the room and
    /// [`ErrorCode::NotAllowed`] when the room is open.
    async fn allow_room(&self, room: &str, users: &[UserId]) -> Result<(), TransportError>;

    /// Leaves `room`.
    async fn leave_room(&self, room: &str) -> Result<(), TransportError>;

    /// Closes the transport; later operations fail with
    /// [`TransportError::Closed`]. Idempotent.
    async fn close(&self);

    /// The STUN/TURN servers to use for media set up from now on (a new
    /// call, an ICE restart): the latest the server announced. A
    /// [`crate::WsTransport`] replaces them on each re-login and, before
    /// the TURN credentials expire, with fresh ones it asks for itself
    /// (`ice_refresh`), so reading this again at each use is enough.
    /// Default: none.
    fn ice_servers(&self) -> Vec<IceServer> {
        Vec::new()
    }

    /// Takes the event stream. Returns `Some` exactly once.
    fn take_events(&self) -> Option<mpsc::Receiver<TransportEvent>>;
}

/// The event stream of a transport until the application takes it: what
/// [`Transport::take_events`] hands out exactly once.
pub(crate) struct EventSlot(Mutex<Option<mpsc::Receiver<TransportEvent>>>);

impl EventSlot {
    pub(crate) fn new(events: mpsc::Receiver<TransportEvent>) -> Self {
        EventSlot(Mutex::new(Some(events)))
    }

    /// The stream the first time, `None` after.
    pub(crate) fn take(&self) -> Option<mpsc::Receiver<TransportEvent>> {
        // A panic while holding the lock leaves an Option behind, still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Numbers the payloads one transport sends: `m1`, `m2`, ...
#[derive(Default)]
pub(crate) struct MessageIds(AtomicU64);

impl MessageIds {
    /// The id of a send to `to`, refused locally when it names nobody.
    pub(crate) fn next_for(&self, to: &[UserId]) -> Result<MessageId, TransportError> {
        if to.is_empty() {
            return Err(TransportError::Invalid("no recipient".into()));
        }
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(MessageId(format!("m{n}")))
    }
}
