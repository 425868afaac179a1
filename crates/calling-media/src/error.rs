//! The crate's error type.

use std::path::PathBuf;

use calling_core::UserId;

/// Everything a media operation can fail with. Each error leaves the session
/// usable: a bad signal from one peer never affects another.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// `connect` or a signal named our own user id.
    #[error("cannot connect to ourselves")]
    SelfConnect,
    /// This user is not a member of the session (it was never connected,
    /// or was disconnected), or no peer connection exists for it.
    #[error("no peer connection for user {0}")]
    UnknownPeer(UserId),
    /// A member's offer or answer announced another DTLS certificate than
    /// its first one: refused, since within one participation the
    /// certificate cannot change (a new participation is disconnected and
    /// connected again).
    #[error("{from} announced DTLS fingerprint {announced:?}, bound to {bound:?}")]
    FingerprintChanged {
        /// The member.
        from: UserId,
        /// The fingerprint bound to it.
        bound: String,
        /// The one the refused description announced (empty: none).
        announced: String,
    },
    /// An SDP from a peer could not be parsed or applied.
    #[error("invalid SDP from {from}: {reason}")]
    InvalidSdp {
        /// The remote user.
        from: UserId,
        /// What was wrong.
        reason: String,
    },
    /// An ICE candidate from a peer could not be parsed or applied.
    #[error("invalid ICE candidate from {from}: {reason}")]
    InvalidCandidate {
        /// The remote user.
        from: UserId,
        /// What was wrong.
        reason: String,
    },
    /// No video has arrived from this user yet, so there is no stream to
    /// ask a key frame of.
    #[error("no remote video from user {0}")]
    NoRemoteVideo(UserId),
    /// A signal arrived out of order: an answer we did not ask for, or an
    /// offer while our own offer to that user is pending.
    #[error("unexpected {what} from {from}")]
    UnexpectedSignal {
        /// The remote user.
        from: UserId,
        /// Which signal.
        what: &'static str,
    },
    /// A signal is larger than we accept.
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Which signal.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A [`MediaConfig`](crate::MediaConfig) setting is out of range.
    #[error("invalid media config: {0}")]
    InvalidConfig(String),
    /// The session was created outside a tokio runtime.
    #[error("no tokio runtime: create the session from within one")]
    NoRuntime,
    /// The session was closed.
    #[error("media session is closed")]
    Closed,
    /// A source needs a different video codec than the session sends.
    #[error("source needs video codec {needed:?}, session sends {configured:?}")]
    CodecMismatch {
        /// What the source produces.
        needed: crate::VideoCodec,
        /// What the session was configured with.
        configured: crate::VideoCodec,
    },
    /// A media file could not be opened, read or written.
    #[error("media file {path:?}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A media file's content is not what its format requires.
    #[error("malformed media file {path:?}: {reason}")]
    MalformedFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// An encoder could not be created or failed.
    #[error("encoder: {0}")]
    Encoder(String),
    /// webrtc-rs reported an error creating or driving a peer connection.
    #[error("webrtc: {0}")]
    WebRtc(String),
}

impl MediaError {
    pub(crate) fn webrtc(e: impl std::fmt::Display) -> Self {
        MediaError::WebRtc(e.to_string())
    }
}
