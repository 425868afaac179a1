//! The [`Calling`] handle and its configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use calling_core::{CallId, CallOptions, Event, InviteId, MediaType, UserId};
use calling_media::{FrameSink, MediaConfig, PeerStats, VideoQuality};
use calling_signal::{Transport, WsConfig, WsTransport};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{Command, Driver};
use crate::error::CallingError;

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

/// How a [`Calling`] client behaves. [`CallingConfig::default`] matches
/// TRTCCalling's defaults.
#[derive(Debug, Clone)]
pub struct CallingConfig {
    /// Call rules: ringing grace, join timeout, participant limit.
    pub core: calling_core::Config,
    /// Media engine settings (bind addresses, ICE tuning, codec, quality).
    /// `local_user` is filled in at login.
    pub media: MediaConfig,
    /// The microphone source used in calls.
    pub audio: AudioInput,
    /// The camera source used in video calls (`None`: camera closed).
    pub video: Option<VideoInput>,
    /// How many events may wait for the app before voice-volume events are
    /// dropped (call events are never dropped).
    pub event_capacity: usize,
}

impl Default for CallingConfig {
    fn default() -> Self {
        Self {
            core: calling_core::Config::default(),
            media: MediaConfig::default(),
            audio: AudioInput::default(),
            video: Some(VideoInput::TestPattern),
            event_capacity: 1024,
        }
    }
}

/// The events of a logged-in client, in order: call events, session events
/// and voice volumes, all as [`Event`].
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client is gone (logged out, kicked
    /// out or dropped) and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

/// A logged-in calling client: TRTCCalling's API over our own signaling
/// server (or any [`Transport`]) and WebRTC media.
///
/// Cheap to clone; every clone drives the same client. The client stops when
/// [`logout`](Self::logout) is called, when it is kicked out or its login
/// expires, or when every clone is dropped.
#[derive(Debug, Clone)]
pub struct Calling {
    user: UserId,
    tx: mpsc::Sender<Command>,
}

impl Calling {
    /// Logs in to a `calling-server` at `url` (e.g. `ws://127.0.0.1:8080/ws`)
    /// with a UserSig, as TRTCCalling's `login`.
    pub async fn login(
        url: &str,
        sdk_app_id: u64,
        user_id: &str,
        user_sig: &str,
        config: CallingConfig,
    ) -> Result<(Calling, Events), CallingError> {
        let user = UserId::new(user_id)?;
        let ws = WsConfig::new(url, sdk_app_id, user_id, user_sig);
        let transport = WsTransport::connect(ws).await?;
        Self::start(user, Arc::new(transport), config)
    }

    /// Starts a client over any transport that is already logged in as
    /// `transport.local_user()` (for example a [`calling_signal::MemoryTransport`],
    /// or an application's own messaging).
    pub fn with_transport(
        transport: impl Transport + 'static,
        config: CallingConfig,
    ) -> Result<(Calling, Events), CallingError> {
        let user = UserId::new(transport.local_user())?;
        Self::start(user, Arc::new(transport), config)
    }

    fn start(
        user: UserId,
        transport: Arc<dyn Transport>,
        config: CallingConfig,
    ) -> Result<(Calling, Events), CallingError> {
        let inbound = transport.take_events().ok_or(CallingError::NotLoggedIn)?;
        let (tx, rx) = mpsc::channel(64);
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity.max(16));
        let driver = Driver::new(user.clone(), transport, inbound, config, event_tx);
        tokio::spawn(driver.run(rx));
        Ok((Calling { user, tx }, Events { rx: event_rx }))
    }

    /// The logged-in user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CallingError>>) -> Command,
    ) -> Result<T, CallingError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| CallingError::NotLoggedIn)?;
        rx.await.map_err(|_| CallingError::NotLoggedIn)?
    }

    /// Calls one user (TRTCCalling `call`): audio or video, ringing for
    /// `timeout` (0: until answered). Returns the call id.
    pub async fn call(
        &self,
        user: &str,
        media_type: MediaType,
        timeout: Duration,
    ) -> Result<CallId, CallingError> {
        let user = UserId::new(user)?;
        let options = CallOptions {
            timeout: secs(timeout),
            ..CallOptions::default()
        };
        self.ask(|reply| Command::Call {
            users: vec![user],
            media_type,
            options,
            group: false,
            reply,
        })
        .await
    }

    /// Calls with full options (user data, group id) (TUICallKit `calls`).
    pub async fn call_with(
        &self,
        users: &[&str],
        media_type: MediaType,
        options: CallOptions,
    ) -> Result<CallId, CallingError> {
        let users = parse_users(users)?;
        let group = users.len() != 1 || options.group_id.is_some();
        self.ask(|reply| Command::Call {
            users,
            media_type,
            options,
            group,
            reply,
        })
        .await
    }

    /// Calls several users at once (TRTCCalling `groupCall`).
    pub async fn group_call(
        &self,
        users: &[&str],
        media_type: MediaType,
        timeout: Duration,
    ) -> Result<CallId, CallingError> {
        let users = parse_users(users)?;
        let options = CallOptions {
            timeout: secs(timeout),
            ..CallOptions::default()
        };
        self.ask(|reply| Command::Call {
            users,
            media_type,
            options,
            group: true,
            reply,
        })
        .await
    }

    /// Accepts the ringing invite (TRTCCalling `accept`).
    pub async fn accept(&self, invite_id: &InviteId) -> Result<(), CallingError> {
        let invite_id = invite_id.clone();
        self.ask(|reply| Command::Accept { invite_id, reply }).await
    }

    /// Declines the ringing invite (TRTCCalling `reject`).
    pub async fn reject(&self, invite_id: &InviteId) -> Result<(), CallingError> {
        let invite_id = invite_id.clone();
        self.ask(|reply| Command::Reject { invite_id, reply }).await
    }

    /// Stops ringing without answering (TUICallKit `ignore`).
    pub async fn ignore(&self, invite_id: &InviteId) -> Result<(), CallingError> {
        let invite_id = invite_id.clone();
        self.ask(|reply| Command::Ignore { invite_id, reply }).await
    }

    /// Leaves the call, or cancels it if nobody answered yet (TRTCCalling
    /// `hangup`). Does nothing when there is no call.
    pub async fn hangup(&self) -> Result<(), CallingError> {
        self.ask(|reply| Command::Hangup { reply }).await
    }

    /// Invites more users into the running call (TUICallKit `inviteUser`).
    pub async fn invite(
        &self,
        users: &[&str],
        timeout: Duration,
    ) -> Result<InviteId, CallingError> {
        let users = parse_users(users)?;
        let timeout = secs(timeout);
        self.ask(|reply| Command::Invite {
            users,
            timeout,
            reply,
        })
        .await
    }

    /// Joins a running group call by its id (TUICallKit `joinInGroupCall`):
    /// the members are found through the server room named by the call id.
    pub async fn join(&self, call_id: &str) -> Result<(), CallingError> {
        let call_id = CallId::new(call_id)?;
        self.ask(|reply| Command::Join { call_id, reply }).await
    }

    /// Switches the call between audio and video (TUICallKit
    /// `switchCallMediaType`); to video asks the others first.
    pub async fn switch_media_type(&self, to: MediaType) -> Result<(), CallingError> {
        self.ask(|reply| Command::Switch { to, reply }).await
    }

    /// Answers a [`Event::MediaTypeSwitchRequested`].
    pub async fn answer_media_switch(
        &self,
        request_id: u32,
        accept: bool,
    ) -> Result<(), CallingError> {
        self.ask(|reply| Command::AnswerSwitch {
            request_id,
            accept,
            reply,
        })
        .await
    }

    /// Mutes or unmutes the microphone (TRTCCalling `setMicMute`); the
    /// others see `UserAudioAvailable`.
    pub async fn set_mic_mute(&self, muted: bool) -> Result<(), CallingError> {
        self.ask(|reply| Command::MicMute { muted, reply }).await
    }

    /// Hands-free: `true` mutes all remote audio (remote audio frames stop
    /// reaching the frame sink; voice volumes keep coming), `false` plays it
    /// again. Kept across calls.
    pub async fn set_hands_free(&self, on: bool) -> Result<(), CallingError> {
        self.ask(|reply| Command::HandsFree { on, reply }).await
    }

    /// Opens the camera with `input` (TRTCCalling `openCamera`); the others
    /// see `UserVideoAvailable`.
    pub async fn open_camera(&self, input: VideoInput) -> Result<(), CallingError> {
        self.ask(|reply| Command::Camera {
            input: Some(input),
            reply,
        })
        .await
    }

    /// Closes the camera (TRTCCalling `closeCamera`).
    pub async fn close_camera(&self) -> Result<(), CallingError> {
        self.ask(|reply| Command::Camera { input: None, reply })
            .await
    }

    /// Sets the video profile (TRTCCalling `setVideoQuality`).
    pub async fn set_video_quality(&self, quality: VideoQuality) -> Result<(), CallingError> {
        self.ask(|reply| Command::Quality { quality, reply }).await
    }

    /// Where remote frames go, per user (TRTCCalling `startRemoteView`):
    /// e.g. a [`calling_media::ChannelSink`] or a [`calling_media::RecorderSink`].
    pub async fn set_frame_sink(
        &self,
        sink: Option<Arc<dyn FrameSink>>,
    ) -> Result<(), CallingError> {
        self.ask(|reply| Command::Sink { sink, reply }).await
    }

    /// Where the local user's own outgoing frames also go (TRTCCalling
    /// `startLocalView`): a local preview of exactly what the peers get,
    /// delivered with the local user id.
    pub async fn set_local_sink(
        &self,
        sink: Option<Arc<dyn FrameSink>>,
    ) -> Result<(), CallingError> {
        self.ask(|reply| Command::LocalSink { sink, reply }).await
    }

    /// Per-peer media figures of the current call (empty outside a call).
    pub async fn stats(&self) -> Result<Vec<PeerStats>, CallingError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// The current call, if any.
    pub async fn current_call(&self) -> Result<Option<calling_core::CallSnapshot>, CallingError> {
        self.ask(|reply| Command::Snapshot { reply }).await
    }

    /// Logs out (TRTCCalling `logout`): a call in progress ends with
    /// `CallEnd { reason: LoggedOut }` and the peers see this user leave.
    pub async fn logout(&self) -> Result<(), CallingError> {
        self.ask(|reply| Command::Logout { reply }).await
    }
}

fn parse_users(users: &[&str]) -> Result<Vec<UserId>, CallingError> {
    users
        .iter()
        .map(|u| UserId::new(*u).map_err(CallingError::from))
        .collect()
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
