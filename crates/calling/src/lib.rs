//! The `calling` SDK: one-to-one and group audio/video calls with
//! TRTCCalling's API and events, over our own signaling server and WebRTC,
//! with no cloud account.
//!
//! A [`Calling`] client logs in (to a `calling-server` with a UserSig, or over
//! any [`Transport`]), places or answers calls, and reports everything as
//! [`Event`]s: the call events of the call rules ([`CallEvent`]: invited,
//! rejected, no response, line busy, cancelled, timed out, user enter/leave,
//! audio/video available, call end, ...), the state of the media with each
//! party ([`MediaState`]), voice volumes, the session (kicked out, login
//! expired, disconnected, reconnected) and errors. It drives the sans-IO call rules of
//! [`calling_core`] with tokio timers, carries them over the transport, and
//! hands media negotiation to [`calling_media`]: the app never sees SDP.
//!
//! Place a call (two clients in one process, over the in-memory hub):
//!
//! ```
//! use std::time::Duration;
//! use calling::{CallEvent, Calling, CallingConfig, Event, MediaType, MemoryHub, UserId};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = MemoryHub::new();
//! let (alice, _) = Calling::with_transport(hub.register(UserId::new("alice")?), CallingConfig::loopback())?;
//! let (bob, mut bob_events) = Calling::with_transport(hub.register(UserId::new("bob")?), CallingConfig::loopback())?;
//!
//! alice.call("bob", MediaType::Video, Duration::from_secs(30)).await?;
//! while let Some(event) = bob_events.recv().await {
//!     match event {
//!         Event::Call(CallEvent::Invited { invite_id, .. }) => bob.accept(&invite_id).await?,
//!         Event::Call(CallEvent::UserEnter { user, .. }) => { assert_eq!(user.as_str(), "alice"); break }
//!         _ => {}
//!     }
//! }
//! alice.hangup().await?;
//! # Ok(()) }
//! ```

mod audio_io;
mod client;
mod clock;
mod config;
mod driver;
mod error;
mod event;
mod guard;
pub mod metrics;
mod wire;

pub use calling_signal::WsTransport;
pub use client::{Calling, Events, Login};
pub use clock::{Clock, TokioClock};
pub use config::{AudioInput, AudioOutput, CallingConfig, VideoInput};
pub use error::CallingError;
pub use event::{CallEvent, ErrorCode, Event, MediaState};
pub use wire::MEDIA_KIND;

// Every type in the SDK's public signatures, so that an app (and the C API)
// needs this crate alone.
pub use calling_core::{
    AnswerError, CallError, CallId, CallOptions, CallSnapshot, CallState, Config as CallRules,
    EndReason, GroupId, IdError, InviteId, JoinError, JoinSecret, JoinTicket, MAX_USER_ID_LEN,
    MediaType, NoAnswer, RoomId, StaleReason, SwitchError, UserId,
};
/// Audio devices: list them, capture a microphone, play a speaker.
#[cfg(feature = "devices")]
pub use calling_media::devices;
pub use calling_media::raw::{MAX_DIMENSION, MAX_FRAME_RATE, SAMPLE_RATE};
pub use calling_media::{
    AudioFrame, AudioSource, CandidateKind, ChannelSink, Codec, Decoded, DecodedAudioFrame,
    DecodedChannel, DecodedRecorder, DecodedSink, DecodedVideoFrame, EncodedFrame, EncodedInput,
    FrameError, FrameInput, FrameSink, InputStats, MediaConfig, MediaError, MediaKind, PeerState,
    PeerStats, PixelFormat, PushError, RawAudioInput, RawVideoInput, RecorderSink, RemoteFrame,
    Samples, SelectedPair, VideoFrame, VideoQuality, VideoSource, VideoTarget,
};
pub use calling_signal::protocol::ErrorCode as ServerErrorCode;
pub use calling_signal::{
    MemoryHub, MemoryTransport, MessageId, TlsFailure, Transport, TransportError, TransportEvent,
    WsConfig, read_ca_file,
};
/// UserSigs: generate (for development and backends) and verify.
pub use calling_usersig as usersig;

/// The log filter every binary and example of this workspace starts with
/// when `RUST_LOG` is not set (the C API's `calling_log_init(NULL)` too), in
/// `tracing-subscriber` `EnvFilter` syntax: `info` for our crates (and
/// anything not named), `error` for the WebRTC engine, webrtc-rs: `webrtc`,
/// `rtc` and every `rtc_*` crate (`rtc_ice`, `rtc_dtls`, `rtc_sctp`,
/// `rtc_srtp`, `rtc_turn`, `rtc_mdns`, ...: an `EnvFilter` target matches
/// every target it is a prefix of) and `quinn_udp`, its UDP sockets.
///
/// The engine warns about conditions it expects in every call (`password is
/// empty`, `remote_srtp_context is not set yet`, a send to an unreachable
/// IPv6 candidate); the SDK reports what matters to an app as
/// [`Event`]s. `RUST_LOG` replaces the whole filter, e.g.
/// `RUST_LOG=info,rtc_ice=debug` to watch ICE. An app that sets up its own
/// `tracing` subscriber may start from this string:
///
/// ```
/// assert!(calling::DEFAULT_LOG_FILTER.starts_with("info,"));
/// ```
pub const DEFAULT_LOG_FILTER: &str = "info,webrtc=error,rtc=error,quinn_udp=error";

/// Whether logs written to `stream` should carry colour codes: only on a
/// terminal, and never with `NO_COLOR` set to anything but the empty
/// string (<https://no-color.org>), so that a redirected log is plain
/// text. What every binary and example here passes to
/// `tracing_subscriber`'s `with_ansi`.
pub fn log_colour(stream: &impl std::io::IsTerminal) -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream.is_terminal()
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
