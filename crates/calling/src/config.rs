//! How a client is configured: call rules, media engine, sources, clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use calling_media::MediaConfig;

use crate::clock::{Clock, TokioClock};

/// What feeds the microphone track, re-created for every call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AudioInput {
    /// A generated sine tone (Opus), so the other end hears something.
    Tone {
        /// Frequency in hertz.
        frequency_hz: f32,
        /// Peak amplitude, 0.0 to 1.0 of full scale.
        amplitude: f32,
    },
    /// An Ogg/Opus file.
    OggFile {
        /// The file.
        path: PathBuf,
        /// Start again at the end.
        looped: bool,
    },
}

impl Default for AudioInput {
    fn default() -> Self {
        AudioInput::Tone {
            frequency_hz: 440.0,
            amplitude: 0.3,
        }
    }
}

/// What feeds the camera track, re-created for every video call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum VideoInput {
    /// A moving test pattern encoded as H.264.
    TestPattern,
    /// An H.264 Annex B file.
    H264File {
        /// The file.
        path: PathBuf,
        /// Frames per second.
        fps: u32,
        /// Start again at the end.
        looped: bool,
    },
}

impl AudioInput {
    /// Whether the source can start: its file, if it has one, opens.
    pub(crate) fn can_start(&self) -> bool {
        match self {
            AudioInput::Tone { .. } => true,
            AudioInput::OggFile { path, .. } => std::fs::File::open(path).is_ok(),
        }
    }
}

impl VideoInput {
    /// Whether the source can start: its file, if it has one, opens.
    pub(crate) fn can_start(&self) -> bool {
        match self {
            VideoInput::TestPattern => true,
            VideoInput::H264File { path, .. } => std::fs::File::open(path).is_ok(),
        }
    }
}

/// How a [`crate::Calling`] client behaves. [`CallingConfig::default`] matches
/// TRTCCalling's defaults.
#[derive(Debug, Clone)]
pub struct CallingConfig {
    /// Call rules: ringing grace, join timeout, participant limit.
    pub core: calling_core::Config,
    /// Media engine settings (bind addresses, ICE tuning, codec, quality).
    /// `local_user` is filled in at login. Every call's `ice_servers` are
    /// these plus the STUN/TURN servers the signaling server announced at
    /// the latest login (fresh TURN credentials on each re-login).
    pub media: MediaConfig,
    /// The microphone source used in calls.
    pub audio: AudioInput,
    /// The camera source used in video calls (`None`: camera closed).
    pub video: Option<VideoInput>,
    /// How many events the app's channel holds. When it is full, voice
    /// volumes are dropped and other events wait in the client (which keeps
    /// handling the network) until the app reads.
    pub event_capacity: usize,
    /// Where the client reads the time (default: tokio's clock).
    pub clock: Arc<dyn Clock>,
    /// PEM CA certificates trusted for a `wss://` server in addition to
    /// the system roots (default none); see
    /// [`calling_signal::read_ca_file`].
    pub extra_ca_pem: Option<Vec<u8>>,
    /// How long a connected party whose signaling connection died (the
    /// server's `room_leave`, or a message it could not deliver) has to
    /// come back before it counts as gone. A changed address (Wi-Fi to
    /// cellular, a new NAT mapping) breaks the signaling connection too:
    /// `WsTransport` reconnects within a few seconds and re-joins the room,
    /// and the call goes on while ICE restarts. Hearing from the party, or
    /// its re-entering the room, ends the wait. Zero counts it gone at once
    /// (the behaviour before). Default 10 s: a peer that really vanished
    /// is dropped that much later.
    pub reconnect_grace: Duration,
}

impl CallingConfig {
    /// The default configuration with media bound to `127.0.0.1` only
    /// ([`MediaConfig::loopback`]): for tests and demos whose ends all run
    /// on one host. The default binds every interface.
    pub fn loopback() -> Self {
        CallingConfig {
            media: MediaConfig::loopback(),
            ..CallingConfig::default()
        }
    }
}

impl Default for CallingConfig {
    fn default() -> Self {
        Self {
            core: calling_core::Config::default(),
            media: MediaConfig::default(),
            audio: AudioInput::default(),
            video: Some(VideoInput::TestPattern),
            event_capacity: 1024,
            clock: Arc::new(TokioClock),
            extra_ca_pem: None,
            reconnect_grace: Duration::from_secs(10),
        }
    }
}
