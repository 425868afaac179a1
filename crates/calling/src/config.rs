//! How a client is configured: call rules, media engine, sources, clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use calling_media::{EncodedInput, MediaConfig, RawAudioInput, RawVideoInput};

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
    /// The app's own microphone samples: 48 kHz PCM (i16 or f32, mono or
    /// stereo, any chunk size) pushed through this handle, which the call
    /// encodes as Opus. Keep a clone and push for as long as you like:
    /// between calls the pushes are refused with
    /// [`calling_media::PushError::NotSending`]; muted, they are taken and
    /// not sent.
    Raw(RawAudioInput),
    /// Opus packets the app encodes itself, pushed through this handle.
    Encoded(EncodedInput),
    /// A capture device (feature `devices`): `device` names one as
    /// [`calling_media::devices::input_devices`] lists it, `None` the
    /// system default. It is opened when a call's media starts and closed
    /// when it ends; muting pauses it. A device that cannot be opened is an
    /// [`crate::ErrorCode::AudioSource`] error, and the others see the
    /// audio unavailable.
    #[cfg(feature = "devices")]
    Microphone {
        /// The device name; `None` for the default.
        device: Option<String>,
    },
}

/// Where remote audio is played.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioOutput {
    /// Nowhere: remote audio reaches only the app's sinks
    /// ([`crate::Calling::set_frame_sink`],
    /// [`crate::Calling::set_decoded_sink`]). The default.
    #[default]
    App,
    /// Output devices (feature `devices`), by name as
    /// [`calling_media::devices::output_devices`] lists them (`None`: the
    /// default device). The mixed audio of every remote user plays on
    /// `speaker` with hands-free on, and on `earpiece` (a headset, a
    /// handset) with hands-free off, which is the default; without an
    /// earpiece, everything plays on `speaker`.
    #[cfg(feature = "devices")]
    Device {
        /// The loudspeaker.
        speaker: Option<String>,
        /// The earpiece or headset; `None`: the speaker as well.
        earpiece: Option<String>,
    },
}

impl AudioOutput {
    /// The device to play on with hands-free `on` or off.
    #[cfg(feature = "devices")]
    pub(crate) fn device_for(&self, hands_free: bool) -> Option<String> {
        match self {
            AudioOutput::App => None,
            AudioOutput::Device { speaker, earpiece } => {
                if hands_free {
                    speaker.clone()
                } else {
                    earpiece.clone().or_else(|| speaker.clone())
                }
            }
        }
    }
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
    /// The app's own camera pictures (I420, NV12, RGBA or BGRA, any size,
    /// with capture timestamps) pushed through this handle: the call
    /// scales them to the video profile (and lower when the network asks),
    /// encodes H.264, paces and answers key-frame requests. Keep a clone
    /// and push for as long as you like: outside video calls and with the
    /// camera closed the pushes are refused with
    /// [`calling_media::PushError::NotSending`].
    Raw(RawVideoInput),
    /// H.264 access units (Annex B) the app encodes itself, pushed through
    /// this handle. Key-frame requests cannot reach an app encoder: send
    /// IDR frames regularly.
    Encoded(EncodedInput),
}

impl AudioInput {
    /// Whether the source can start: its file, if it has one, opens.
    pub(crate) fn can_start(&self) -> bool {
        match self {
            AudioInput::Tone { .. } | AudioInput::Raw(_) | AudioInput::Encoded(_) => true,
            #[cfg(feature = "devices")]
            AudioInput::Microphone { .. } => true,
            AudioInput::OggFile { path, .. } => std::fs::File::open(path).is_ok(),
        }
    }
}

impl VideoInput {
    /// Whether the source can start: its file, if it has one, opens.
    pub(crate) fn can_start(&self) -> bool {
        match self {
            VideoInput::TestPattern | VideoInput::Raw(_) | VideoInput::Encoded(_) => true,
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
    /// Where remote audio is played (default: nowhere, the app's sinks
    /// only; feature `devices` adds output devices).
    pub audio_output: AudioOutput,
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
            audio_output: AudioOutput::App,
        }
    }
}
