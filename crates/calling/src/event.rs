//! What a [`crate::Calling`] client tells the application.

use calling_core::{CallId, UserId};

pub use calling_core::Event as CallEvent;

/// One event of a logged-in client, in the order things happened.
///
/// Call events come from the call rules (the same on every party, see
/// [`CallEvent`]); the others are the SDK's own: the state of the media with
/// each party, voice volumes, the session with the signaling server, and
/// errors. Matching is exhaustive on purpose: a new variant is a new version
/// of the SDK, listed in the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A call event: invited, rejected, no response, line busy, cancelled,
    /// timed out, user enter / leave, audio / video available, media type
    /// changes, call end, ...
    Call(CallEvent),
    /// The media connection with a party of the current call changed
    /// (TRTCCalling has no such event: there `USER_ENTER` is all an app
    /// learns, while here [`CallEvent::UserEnter`] means "signaling
    /// connected" and this event says when audio and video can flow).
    Media {
        /// The call.
        call_id: CallId,
        /// The party.
        user: UserId,
        /// The new state.
        state: MediaState,
    },
    /// A user's voice volume, 0 to 100 (TRTCCalling `USER_VOICE_VOLUME`),
    /// about every [`calling_media::MediaConfig::volume_interval`]: remote
    /// users from the level their packets carry, the local user from its
    /// microphone samples. Dropped rather than queued when the app reads
    /// events slowly; other events wait for the app (up to 64 Ki of them,
    /// for an app that stopped reading), and the client goes on handling
    /// the network meanwhile.
    UserVoiceVolume {
        /// Who (the local user for the microphone).
        user: UserId,
        /// Volume, 0 to 100.
        volume: u8,
    },
    /// The same user logged in elsewhere (TRTCCalling `KICKED_OUT`): the
    /// current call ended with [`calling_core::EndReason::KickedOut`] and the
    /// client is stopped.
    KickedOut,
    /// The UserSig expired, or was refused when logging in again after a
    /// reconnect (TUICallKit `onUserSigExpired`): the client is stopped; log
    /// in again with a fresh UserSig.
    LoginExpired,
    /// The connection to the signaling server dropped; the SDK is
    /// reconnecting. A call in progress goes on peer to peer.
    Disconnected,
    /// The SDK reconnected and logged in again.
    Reconnected,
    /// Something failed that no method call returned (TRTCCalling `ERROR`).
    Error {
        /// What failed; stable across versions.
        code: ErrorCode,
        /// Details for a person.
        message: String,
    },
}

impl From<CallEvent> for Event {
    fn from(event: CallEvent) -> Self {
        Event::Call(event)
    }
}

/// The media connection with one party, as [`Event::Media`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaState {
    /// Offer, answer and connectivity checks are under way.
    Connecting,
    /// Audio and video can flow (ICE and DTLS are up).
    Connected,
    /// Connectivity was lost (the path is gone: a changed address, a
    /// restarted relay), or the first connection attempt failed: no media
    /// flows. ICE restarts try to bring it back
    /// ([`MediaState::Restored`]) for up to
    /// [`calling_media::MediaConfig::media_restore_timeout`].
    Disconnected,
    /// Media flows again after [`MediaState::Disconnected`], on the same
    /// connection.
    Restored,
    /// Media with this party was not restored in time (or never came up):
    /// no media flows with it. When this leaves no connected party whose
    /// media is not failed (always so in a 1v1 call), the client leaves the
    /// call, which ends with [`calling_core::EndReason::MediaFailed`]; in a
    /// group call with another party's media fine, the call goes on.
    Failed,
}

/// The code of an [`Event::Error`]. The numbers are stable: they are what
/// the C API and other languages see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The call's media session could not be created (no usable network
    /// interface, sockets refused): the call goes on without media.
    MediaStart,
    /// The microphone source could not start (e.g. the audio file is
    /// missing): the others see this user's audio as unavailable.
    AudioSource,
    /// The camera source could not start (e.g. the video file is missing):
    /// the others see this user's video as unavailable.
    VideoSource,
    /// A member's WebRTC stack shares no video codec we send (we send
    /// H.264; e.g. a VP8-only peer): that member gets no video from us,
    /// while its own video still reaches us. Also raised in audio calls,
    /// where it matters once the call switches to video.
    NoCommonVideoCodec,
    /// A member's WebRTC stack shares no audio codec we send (we send
    /// Opus): that member gets no audio from us.
    NoCommonAudioCodec,
    /// Relay-only media ([`calling_media::MediaConfig::relay_only`]) got no
    /// relay candidate: the TURN server refused the allocation (most often
    /// a 401 because calling-server's `--turn-secret` differs from coturn's
    /// `static-auth-secret`) or did not answer. Media with that member
    /// cannot connect.
    TurnUnavailable,
    /// TURN servers are configured but gathering produced no relay
    /// candidate (refused or unanswered, as for
    /// [`ErrorCode::TurnUnavailable`]): a warning. The call goes on over
    /// direct and server-reflexive paths, with no relay to fall back on
    /// behind a strict NAT.
    TurnFallbackUnavailable,
    /// The audio output device (`AudioOutput::Device`, feature `devices`)
    /// could not be opened: remote audio still reaches the app's sinks,
    /// but is not played.
    AudioOutput,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::MediaStart,
        ErrorCode::AudioSource,
        ErrorCode::VideoSource,
        ErrorCode::NoCommonVideoCodec,
        ErrorCode::NoCommonAudioCodec,
        ErrorCode::TurnUnavailable,
        ErrorCode::TurnFallbackUnavailable,
        ErrorCode::AudioOutput,
    ];

    /// The stable number of this code.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::MediaStart => 2001,
            ErrorCode::AudioSource => 2002,
            ErrorCode::VideoSource => 2003,
            ErrorCode::NoCommonVideoCodec => 2004,
            ErrorCode::NoCommonAudioCodec => 2005,
            ErrorCode::TurnUnavailable => 2006,
            ErrorCode::TurnFallbackUnavailable => 2007,
            ErrorCode::AudioOutput => 2008,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            ErrorCode::MediaStart => "media could not start",
            ErrorCode::AudioSource => "the microphone source could not start",
            ErrorCode::VideoSource => "the camera source could not start",
            ErrorCode::NoCommonVideoCodec => "no common video codec",
            ErrorCode::NoCommonAudioCodec => "no common audio codec",
            ErrorCode::TurnUnavailable => "no TURN relay for relay-only media",
            ErrorCode::TurnFallbackUnavailable => "no TURN relay to fall back on",
            ErrorCode::AudioOutput => "the speaker could not start",
        };
        f.write_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_distinct_and_in_order() {
        let codes: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes, [2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008]);
    }
}
