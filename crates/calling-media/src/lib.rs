//! The media engine of `calling`: WebRTC audio and video between the users
//! of a call, on webrtc-rs.
//!
//! One [`MediaSession`] per call holds one peer connection per remote user
//! (a mesh, so group calls work the same as 1v1). Both sides call
//! [`MediaSession::connect`]; the side with the byte-wise lower user id makes
//! the offer, so two offers never cross. Offers, answers and trickled ICE
//! candidates come out as [`MediaEvent::Signal`] for the call layer to carry,
//! and go back in through [`MediaSession::handle_signal`].
//!
//! Outgoing media comes from a source: the app's own camera and microphone
//! ([`VideoSource::Raw`], [`AudioSource::Raw`]: raw I420/NV12/RGBA/BGRA
//! frames and 48 kHz PCM pushed through a [`RawVideoInput`] /
//! [`RawAudioInput`], which the session converts, scales to the
//! [`VideoQuality`] and the congestion target, and encodes as H.264 and
//! mono Opus), a generated tone and moving test pattern (real Opus and
//! H.264 that a browser plays), Ogg/Opus, IVF (VP8) or H.264 Annex B
//! files, or frames the app encodes itself ([`EncodedInput`], or a
//! channel). Input handles outlive calls: a capture loop pushes for the
//! life of the app, and a push says [`PushError::NotSending`] while no
//! call takes its frames. Remote media comes out as depacketized frames
//! per user through a [`FrameSink`] ([`ChannelSink`] for a channel,
//! [`RecorderSink`] for files). With [`MediaSession::set_decoded_sink`]
//! it also comes out decoded: I420 pictures from H.264 and 48 kHz PCM from
//! Opus through a [`DecodedSink`] ([`DecodedChannel`] for an
//! async stream, [`DecodedRecorder`] for Y4M and WAV files a person can
//! open). Decoding runs on one thread per remote track; after packet loss
//! no picture is handed out until a key frame decodes cleanly, and lost
//! audio is concealed. VP8 video is not decoded.
//!
//! Video adapts to the network. Each peer's RTCP about our video (receiver
//! reports with loss and round-trip time, NACKs, and REMB where the peer
//! sends it, as Chrome does) drives a bitrate estimate for that peer, in
//! the spirit of Google Congestion Control: heavy loss cuts it, a growing
//! queue (round trip above its recent minimum) cuts it below what was
//! sent, a clean link lets it climb about 8 % a second back to the
//! profile. One encoder feeds every peer, so the session's
//! [`VideoTarget`] is the lowest estimate, on a ladder of sizes and frame
//! rates that never goes above the session's [`VideoQuality`]; each change
//! is reported as [`MediaEvent::VideoTarget`], and [`PeerStats`] shows
//! every peer's estimate, loss and round trip. Our own receivers send the
//! reports a remote sender needs (one a second per received stream).
//!
//! ```no_run
//! use calling_media::{
//!     AudioSource, ChannelSink, MediaConfig, MediaEvent, MediaSession, UserId, VideoSource,
//! };
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (alice_id, bob_id) = (UserId::new("alice")?, UserId::new("bob")?);
//! let (alice, mut alice_events) = MediaSession::new(alice_id.clone(), MediaConfig::loopback()).await?;
//! let (bob, mut bob_events) = MediaSession::new(bob_id.clone(), MediaConfig::loopback()).await?;
//! alice.set_audio_source(Some(AudioSource::Tone { frequency_hz: 440.0, amplitude: 0.5 }))?;
//! alice.set_video_source(Some(VideoSource::TestPattern))?;
//! let (sink, mut frames) = ChannelSink::new(256);
//! bob.set_frame_sink(Some(sink));
//!
//! alice.connect(&bob_id).await?; // alice < bob: alice offers
//! bob.connect(&alice_id).await?;
//! // The call layer carries the signals; here, directly.
//! loop {
//!     tokio::select! {
//!         Some(MediaEvent::Signal { signal, .. }) = alice_events.recv() => {
//!             bob.handle_signal(&alice_id, signal).await?
//!         }
//!         Some(MediaEvent::Signal { signal, .. }) = bob_events.recv() => {
//!             alice.handle_signal(&bob_id, signal).await?
//!         }
//!         Some(frame) = frames.recv() => {
//!             println!("{} sent a {:?} frame", frame.user, frame.frame.codec);
//!             break;
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod decoded;
#[cfg(feature = "devices")]
pub mod devices;
mod error;
pub mod files;
pub mod frame;
mod keyframe;
pub mod raw;
mod session;
mod sink;
mod source;
mod types;
pub mod writers;

/// The byte buffer type of [`EncodedFrame::data`].
pub use bytes::Bytes;
/// The user id type of the whole workspace, re-exported so that media code
/// can name it without depending on `calling-core` itself.
pub use calling_core::UserId;
pub use decoded::{Decoded, DecodedAudioFrame, DecodedChannel, DecodedSink, DecodedVideoFrame};
pub use error::MediaError;
pub use raw::{
    AudioFrame, EncodedInput, FrameError, FrameInput, InputStats, PixelFormat, PushError,
    RawAudioInput, RawVideoInput, Samples, VideoFrame,
};
pub use session::{AUDIO_LEVEL_URI, MediaSession, is_offerer};
pub use sink::{ChannelSink, FrameSink, RecorderSink, RemoteFrame};
pub use types::{
    AudioSource, CandidateKind, Codec, EncodedFrame, IceServer, MediaConfig, MediaEvent, MediaKind,
    MediaSignal, PeerMedia, PeerState, PeerStats, SelectedPair, VideoCodec, VideoQuality,
    VideoSource, VideoTarget,
};
pub use writers::{DecodedRecorder, WavWriter, WriterError, Y4mWriter};
