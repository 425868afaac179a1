//! The [`Calling`] handle: TRTCCalling's methods, each one operation run by
//! the client's driver.

use std::sync::Arc;
use std::time::Duration;

use calling_core::{
    CallId, CallMachine, CallOptions, CallSnapshot, InviteId, JoinTicket, MediaType, UserId,
};
use calling_media::{DecodedSink, FrameSink, PeerStats, VideoQuality};
use calling_signal::{Transport, WsConfig, WsTransport};
use tokio::sync::{mpsc, oneshot};

use crate::config::{CallingConfig, VideoInput};
use crate::driver::{BoxFuture, Driver, Job};
use crate::error::CallingError;
use crate::event::Event;

/// The events of a logged-in client, in order: call events, media states,
/// session events and voice volumes, all as [`Event`].
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

/// Where and as whom [`Calling::login`] logs in.
///
/// The UserSig proves the user id: your app's backend signs it with the
/// secret key the server was started with (`calling::usersig::generate`,
/// or the `usersig` command), and hands it to the client; the key itself
/// never goes to a client.
#[derive(Clone)]
pub struct Login {
    /// The server's WebSocket URL: `ws://host:port/ws`, or `wss://` when
    /// the server has a certificate.
    pub server: String,
    /// The app id the server was started with (`--sdk-app-id`).
    pub sdk_app_id: u64,
    /// Who logs in: 1 to 32 ASCII letters, digits, `-` or `_`.
    pub user_id: String,
    /// The UserSig of `user_id`, signed with the server's secret key.
    pub user_sig: String,
    /// Media and behaviour settings ([`CallingConfig::default`] for most
    /// apps).
    pub config: CallingConfig,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The UserSig is a credential: never in logs.
        f.debug_struct("Login")
            .field("server", &self.server)
            .field("sdk_app_id", &self.sdk_app_id)
            .field("user_id", &self.user_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
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
    jobs: mpsc::Sender<Job>,
}

impl Calling {
    /// Logs in to a `calling-server`, as TRTCCalling's `login`: connects to
    /// [`Login::server`], signs in with the UserSig, and starts the client.
    ///
    /// ```no_run
    /// # async fn demo(user_sig: String) -> Result<(), calling::CallingError> {
    /// use calling::{Calling, CallingConfig, Login};
    ///
    /// let (client, mut events) = Calling::login(Login {
    ///     server: "ws://127.0.0.1:8080/ws".into(),
    ///     sdk_app_id: 1_400_000_000,
    ///     user_id: "alice".into(),
    ///     user_sig,
    ///     config: CallingConfig::default(),
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn login(login: Login) -> Result<(Calling, Events), CallingError> {
        let Login {
            server,
            sdk_app_id,
            user_id,
            user_sig,
            config,
        } = login;
        let user = UserId::new(user_id)?;
        let mut ws = WsConfig::new(server, sdk_app_id, user.clone(), user_sig);
        ws.extra_ca_pem = config.extra_ca_pem.clone();
        let started = std::time::Instant::now();
        let transport = WsTransport::connect(ws).await?;
        crate::metrics::observe_login(started.elapsed());
        Self::start(user, Arc::new(transport), config)
    }

    /// Starts a client over any transport that is already logged in as
    /// `transport.local_user()` (for example a [`calling_signal::MemoryTransport`],
    /// or an application's own messaging).
    pub fn with_transport(
        transport: impl Transport + 'static,
        config: CallingConfig,
    ) -> Result<(Calling, Events), CallingError> {
        let user = transport.local_user().clone();
        Self::start(user, Arc::new(transport), config)
    }

    fn start(
        user: UserId,
        transport: Arc<dyn Transport>,
        config: CallingConfig,
    ) -> Result<(Calling, Events), CallingError> {
        let inbound = transport.take_events().ok_or(CallingError::NotLoggedIn)?;
        let (jobs, rx) = mpsc::channel(64);
        let (event_tx, event_rx) = mpsc::channel(config.event_capacity.max(16));
        let driver = Driver::new(user.clone(), transport, inbound, config, event_tx);
        tokio::spawn(driver.run(rx));
        Ok((Calling { user, jobs }, Events { rx: event_rx }))
    }

    /// The logged-in user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// Runs `op` on the driver in its turn and returns its result.
    async fn run<T, F>(&self, op: F) -> Result<T, CallingError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Driver) -> BoxFuture<'a, Result<T, CallingError>>
            + Send
            + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |driver| {
            Box::pin(async move {
                // The caller may have stopped waiting: nothing to tell then.
                let _ = reply.send(op(driver).await);
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| CallingError::NotLoggedIn)?;
        rx.await.map_err(|_| CallingError::NotLoggedIn)?
    }

    /// Runs `op` on the call rules, then lets the driver carry out what
    /// they asked for.
    async fn rules<T, E>(
        &self,
        op: impl FnOnce(&mut CallMachine, std::time::Instant) -> Result<T, E> + Send + 'static,
    ) -> Result<T, CallingError>
    where
        T: Send + 'static,
        E: Send + 'static,
        CallingError: From<E>,
    {
        self.run(move |d| Box::pin(d.rules(op))).await
    }

    /// Calls one user (TRTCCalling `call`): audio or video, ringing for
    /// `timeout` (zero: until answered; otherwise rounded up to whole
    /// seconds, the unit of the wire). Returns the call id.
    pub async fn call(
        &self,
        user: &str,
        media_type: MediaType,
        timeout: Duration,
    ) -> Result<CallId, CallingError> {
        let user = UserId::new(user)?;
        let options = CallOptions {
            timeout: ring_secs(timeout),
            ..CallOptions::default()
        };
        self.rules(move |m, now| m.call_user(now, user, media_type, options))
            .await
    }

    /// Calls with full options (user data, group id) (TUICallKit `calls`):
    /// a group call unless exactly one user is given and no group id.
    pub async fn call_with(
        &self,
        users: &[&str],
        media_type: MediaType,
        options: CallOptions,
    ) -> Result<CallId, CallingError> {
        let mut users = parse_users(users)?;
        if users.len() == 1 && options.group_id.is_none() {
            let user = users.remove(0);
            self.rules(move |m, now| m.call_user(now, user, media_type, options))
                .await
        } else {
            self.rules(move |m, now| m.group_call(now, users, media_type, options))
                .await
        }
    }

    /// Calls several users at once (TRTCCalling `groupCall`); `timeout` as
    /// for [`call`](Self::call).
    pub async fn group_call(
        &self,
        users: &[&str],
        media_type: MediaType,
        timeout: Duration,
    ) -> Result<CallId, CallingError> {
        let users = parse_users(users)?;
        let options = CallOptions {
            timeout: ring_secs(timeout),
            ..CallOptions::default()
        };
        self.rules(move |m, now| m.group_call(now, users, media_type, options))
            .await
    }

    /// Accepts the ringing invite (TRTCCalling `accept`).
    pub async fn accept(&self, invite_id: &InviteId) -> Result<(), CallingError> {
        let invite_id = invite_id.clone();
        self.rules(move |m, now| m.accept(now, &invite_id)).await
    }

    /// Declines the ringing invite (TRTCCalling `reject`).
    pub async fn reject(&self, invite_id: &InviteId) -> Result<(), CallingError> {
        let invite_id = invite_id.clone();
        self.rules(move |m, now| m.reject(now, &invite_id)).await
    }

    /// Stops ringing without answering (TUICallKit `ignore`).
    pub async fn ignore(&self, invite_id: &InviteId) -> Result<(), CallingError> {
        let invite_id = invite_id.clone();
        self.rules(move |m, now| m.ignore(now, &invite_id)).await
    }

    /// Leaves the call, or cancels it if nobody answered yet (TRTCCalling
    /// `hangup`). Does nothing when there is no call.
    pub async fn hangup(&self) -> Result<(), CallingError> {
        self.rules(|m, now| {
            m.hangup(now);
            Ok::<_, CallingError>(())
        })
        .await
    }

    /// Invites more users into the running call (TUICallKit `inviteUser`);
    /// `timeout` as for [`call`](Self::call).
    pub async fn invite(
        &self,
        users: &[&str],
        timeout: Duration,
    ) -> Result<InviteId, CallingError> {
        let users = parse_users(users)?;
        let timeout = ring_secs(timeout);
        self.rules(move |m, now| m.invite(now, users, timeout))
            .await
    }

    /// Joins a running call (TUICallKit `joinInGroupCall`) with the join
    /// ticket a member handed out (its [`CallSnapshot::join_ticket`], in its
    /// text form `host:secret`). Knowing a call id alone is not enough: that
    /// is what keeps strangers out of a call.
    pub async fn join(&self, call_id: &str, ticket: &str) -> Result<(), CallingError> {
        let call_id = CallId::new(call_id)?;
        let ticket: JoinTicket = ticket.parse()?;
        self.run(move |d| Box::pin(d.join(call_id, ticket))).await
    }

    /// Switches the call between audio and video (TUICallKit
    /// `switchCallMediaType`); to video asks the others first.
    pub async fn switch_media_type(&self, to: MediaType) -> Result<(), CallingError> {
        self.rules(move |m, now| m.switch_media_type(now, to)).await
    }

    /// Answers a [`calling_core::Event::MediaTypeSwitchRequested`].
    pub async fn answer_media_switch(
        &self,
        request_id: u32,
        accept: bool,
    ) -> Result<(), CallingError> {
        self.rules(move |m, now| m.answer_media_switch(now, request_id, accept))
            .await
    }

    /// Mutes or unmutes the microphone (TRTCCalling `setMicMute`); the
    /// others see `UserAudioAvailable`.
    pub async fn set_mic_mute(&self, muted: bool) -> Result<(), CallingError> {
        self.run(move |d| {
            Box::pin(async move {
                d.set_mic_mute(muted).await;
                Ok(())
            })
        })
        .await
    }

    /// Hands-free (TRTCCalling `setHandsFree`): `true` plays remote audio
    /// on the loudspeaker, `false` (the default) on the earpiece, as
    /// `AudioOutput::Device` (feature `devices`) names them; a failure to move is an
    /// [`crate::ErrorCode::AudioOutput`] error event. With
    /// [`crate::AudioOutput::App`] the app plays the audio and this is only
    /// remembered. It never mutes anything. Kept across calls.
    pub async fn set_hands_free(&self, on: bool) -> Result<(), CallingError> {
        self.run(move |d| {
            Box::pin(async move {
                d.set_hands_free(on).await;
                Ok(())
            })
        })
        .await
    }

    /// Opens the camera with `input` (TRTCCalling `openCamera`); the others
    /// see `UserVideoAvailable`. In a call, a source that cannot start (a
    /// missing file) is an error and the others see the video unavailable.
    pub async fn open_camera(&self, input: VideoInput) -> Result<(), CallingError> {
        self.run(move |d| Box::pin(d.set_camera(Some(input)))).await
    }

    /// Closes the camera (TRTCCalling `closeCamera`).
    pub async fn close_camera(&self) -> Result<(), CallingError> {
        self.run(move |d| Box::pin(d.set_camera(None))).await
    }

    /// Sets the video profile (TRTCCalling `setVideoQuality`).
    pub async fn set_video_quality(&self, quality: VideoQuality) -> Result<(), CallingError> {
        self.run(move |d| {
            d.set_video_quality(quality);
            Box::pin(async { Ok(()) })
        })
        .await
    }

    /// Where remote frames go, per user (TRTCCalling `startRemoteView`):
    /// e.g. a [`calling_media::ChannelSink`] or a [`calling_media::RecorderSink`].
    pub async fn set_frame_sink(
        &self,
        sink: Option<Arc<dyn FrameSink>>,
    ) -> Result<(), CallingError> {
        self.run(move |d| {
            d.set_frame_sink(sink);
            Box::pin(async { Ok(()) })
        })
        .await
    }

    /// Where remote media goes decoded, per user: I420 pictures and 48 kHz
    /// PCM (TRTCCalling `startRemoteView` with rendering left to the app),
    /// e.g. a [`calling_media::DecodedChannel`] for an async stream or a
    /// [`calling_media::DecodedRecorder`] for Y4M and WAV files. May be set
    /// together with [`Calling::set_frame_sink`]; decoding costs nothing
    /// while no decoded sink is set. Kept across calls.
    pub async fn set_decoded_sink(
        &self,
        sink: Option<Arc<dyn DecodedSink>>,
    ) -> Result<(), CallingError> {
        self.run(move |d| {
            d.set_decoded_sink(sink);
            Box::pin(async { Ok(()) })
        })
        .await
    }

    /// Where the local user's own outgoing frames also go (TRTCCalling
    /// `startLocalView`): a local preview of exactly what the peers get,
    /// delivered with the local user id.
    pub async fn set_local_sink(
        &self,
        sink: Option<Arc<dyn FrameSink>>,
    ) -> Result<(), CallingError> {
        self.run(move |d| {
            d.set_local_sink(sink);
            Box::pin(async { Ok(()) })
        })
        .await
    }

    /// Drops every datagram of the current call's media connection with
    /// `user` (`true`), or passes them again: a broken path, for tests of
    /// ICE restart and media failure. Test-only (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub async fn set_media_path_blocked(
        &self,
        user: &str,
        blocked: bool,
    ) -> Result<(), CallingError> {
        let user = UserId::new(user)?;
        self.run(move |d| {
            if let Some(session) = d.media_session() {
                session.set_path_blocked(&user, blocked);
            }
            Box::pin(async { Ok(()) })
        })
        .await
    }

    /// Per-peer media figures of the current call (empty outside a call).
    pub async fn stats(&self) -> Result<Vec<PeerStats>, CallingError> {
        self.run(|d| {
            Box::pin(async move {
                Ok(match d.media_session() {
                    Some(session) => session.stats().await,
                    None => Vec::new(),
                })
            })
        })
        .await
    }

    /// The current call, if any.
    pub async fn current_call(&self) -> Result<Option<CallSnapshot>, CallingError> {
        self.run(|d| {
            let call = d.machine.call();
            Box::pin(async move { Ok(call) })
        })
        .await
    }

    /// Logs out (TRTCCalling `logout`): a call in progress ends with
    /// `CallEnd { reason: LoggedOut }` and the peers see this user leave.
    pub async fn logout(&self) -> Result<(), CallingError> {
        self.run(|d| {
            Box::pin(async move {
                d.stop(calling_core::ResetReason::Logout).await;
                Ok(())
            })
        })
        .await
    }
}

fn parse_users(users: &[&str]) -> Result<Vec<UserId>, CallingError> {
    users
        .iter()
        .map(|u| UserId::new(*u).map_err(CallingError::from))
        .collect()
}

/// A ringing time as the wire carries it, in whole seconds: rounded up, so
/// that a short timeout never becomes 0 ("ring until answered").
fn ring_secs(d: Duration) -> u32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ringing_times_round_up_to_whole_seconds() {
        assert_eq!(ring_secs(Duration::ZERO), 0);
        assert_eq!(ring_secs(Duration::from_millis(1)), 1);
        assert_eq!(ring_secs(Duration::from_millis(500)), 1);
        assert_eq!(ring_secs(Duration::from_secs(1)), 1);
        assert_eq!(ring_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ring_secs(Duration::from_secs(30)), 30);
        assert_eq!(ring_secs(Duration::MAX), u32::MAX);
    }
}
