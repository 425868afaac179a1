//! The `calling` SDK: one-to-one and group audio/video calls with
//! TRTCCalling's API and events, over our own signaling server and WebRTC,
//! with no cloud account.
//!
//! A [`Calling`] client logs in (to a `calling-server` with a UserSig, or over
//! any [`calling_signal::Transport`]), places or answers calls, and reports
//! everything as [`Event`]s: invited, rejected, no response, line busy,
//! cancelled, timed out, user enter/leave, audio/video available, voice
//! volume, kicked out, call end. It drives the sans-IO call rules of
//! [`calling_core`] with tokio timers, carries them over the transport, and
//! hands media negotiation to [`calling_media`]: the app never sees SDP.
//!
//! Place a call (two clients in one process, over the in-memory hub):
//!
//! ```
//! use std::time::Duration;
//! use calling::{Calling, CallingConfig, Event, MediaType};
//! use calling_signal::MemoryHub;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = MemoryHub::new();
//! let (alice, _) = Calling::with_transport(hub.register("alice")?, CallingConfig::default())?;
//! let (bob, mut bob_events) = Calling::with_transport(hub.register("bob")?, CallingConfig::default())?;
//!
//! alice.call("bob", MediaType::Video, Duration::from_secs(30)).await?;
//! while let Some(event) = bob_events.recv().await {
//!     match event {
//!         Event::Invited { invite_id, .. } => bob.accept(&invite_id).await?,
//!         Event::UserEnter { user, .. } => { assert_eq!(user.as_str(), "alice"); break }
//!         _ => {}
//!     }
//! }
//! alice.hangup().await?;
//! # Ok(()) }
//! ```

mod client;
mod driver;
mod error;
mod wire;

pub use client::{AudioInput, Calling, CallingConfig, Events, VideoInput};
pub use error::{CallingError, ERROR_MEDIA_START};
pub use wire::MEDIA_KIND;

pub use calling_core::{
    CallId, CallOptions, CallSnapshot, CallState, EndReason, Event, GroupId, InviteId, MediaType,
    NoAnswer, UserId,
};
pub use calling_media::{
    ChannelSink, EncodedFrame, FrameSink, MediaKind, PeerStats, RecorderSink, RemoteFrame,
    VideoQuality,
};
