//! The client's actor: one task owns the call machine, the transport and the
//! media session, and handles app commands, network input, media events and
//! timers strictly one at a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use calling_core::{
    CallId, CallMachine, CallOptions, CallSnapshot, Event, InviteId, MediaInstruction, MediaType,
    Output, ResetReason, UserId,
};
use calling_media::{
    AudioSource, FrameSink, MediaEvent, MediaSession, PeerStats, VideoQuality, VideoSource,
};
use calling_signal::{MessageId, Transport, TransportEvent};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::client::{AudioInput, CallingConfig, VideoInput};
use crate::error::CallingError;
use crate::wire::{self, Inbound};

type Reply<T> = oneshot::Sender<Result<T, CallingError>>;

/// An app command, with where to send its result.
pub(crate) enum Command {
    Call {
        users: Vec<UserId>,
        media_type: MediaType,
        options: CallOptions,
        group: bool,
        reply: Reply<CallId>,
    },
    Accept {
        invite_id: InviteId,
        reply: Reply<()>,
    },
    Reject {
        invite_id: InviteId,
        reply: Reply<()>,
    },
    Ignore {
        invite_id: InviteId,
        reply: Reply<()>,
    },
    Hangup {
        reply: Reply<()>,
    },
    Invite {
        users: Vec<UserId>,
        timeout: u32,
        reply: Reply<InviteId>,
    },
    Join {
        call_id: CallId,
        reply: Reply<()>,
    },
    Switch {
        to: MediaType,
        reply: Reply<()>,
    },
    AnswerSwitch {
        request_id: u32,
        accept: bool,
        reply: Reply<()>,
    },
    MicMute {
        muted: bool,
        reply: Reply<()>,
    },
    HandsFree {
        on: bool,
        reply: Reply<()>,
    },
    Camera {
        input: Option<VideoInput>,
        reply: Reply<()>,
    },
    Quality {
        quality: VideoQuality,
        reply: Reply<()>,
    },
    Sink {
        sink: Option<Arc<dyn FrameSink>>,
        reply: Reply<()>,
    },
    LocalSink {
        sink: Option<Arc<dyn FrameSink>>,
        reply: Reply<()>,
    },
    Stats {
        reply: Reply<Vec<PeerStats>>,
    },
    Snapshot {
        reply: Reply<Option<CallSnapshot>>,
    },
    Logout {
        reply: Reply<()>,
    },
}

/// The media of the current call.
struct Media {
    call_id: CallId,
    session: MediaSession,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    media_type: MediaType,
}

/// Which call each sent message belonged to, so an "undeliverable" answer
/// can be pinned on the right call. Bounded: old entries are forgotten.
struct SentLog {
    entries: VecDeque<(MessageId, CallId)>,
}

impl SentLog {
    const CAPACITY: usize = 1024;

    fn record(&mut self, id: MessageId, call: CallId) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((id, call));
    }

    fn call_of(&self, id: &MessageId) -> Option<CallId> {
        self.entries
            .iter()
            .rev()
            .find(|(m, _)| m == id)
            .map(|(_, c)| c.clone())
    }
}

pub(crate) struct Driver {
    user: UserId,
    machine: CallMachine,
    transport: Arc<dyn Transport>,
    inbound: mpsc::Receiver<TransportEvent>,
    config: CallingConfig,
    events: mpsc::Sender<Event>,
    media: Option<Media>,
    room: Option<CallId>,
    sent: SentLog,
    mic_muted: bool,
    hands_free: bool,
    quality: VideoQuality,
    sink: Option<Arc<dyn FrameSink>>,
    local_sink: Option<Arc<dyn FrameSink>>,
    /// Set when the transport is gone for good: the driver stops.
    closed: bool,
}

impl Driver {
    pub(crate) fn new(
        user: UserId,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<TransportEvent>,
        config: CallingConfig,
        events: mpsc::Sender<Event>,
    ) -> Self {
        // Party ids must grow across restarts of this user's client: start
        // from the wall clock (see CallMachine::with_party_base).
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d.as_millis() as u64).saturating_mul(1024))
            .unwrap_or(1);
        let machine = CallMachine::new(user.clone(), config.core.clone(), rand::random())
            .with_party_base(base);
        let quality = config.media.video_quality;
        Self {
            user,
            machine,
            transport,
            inbound,
            config,
            events,
            media: None,
            room: None,
            sent: SentLog {
                entries: VecDeque::new(),
            },
            mic_muted: false,
            hands_free: false,
            quality,
            sink: None,
            local_sink: None,
            closed: false,
        }
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        info!(user = %self.user, "calling client started");
        while !self.closed {
            let deadline = self.machine.poll_timeout();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => {
                        // Every handle dropped: leave like a logout.
                        self.logout().await;
                    }
                },
                ev = self.inbound.recv() => match ev {
                    Some(ev) => self.on_transport(ev).await,
                    None => {
                        self.machine.reset(Instant::now(), ResetReason::Logout);
                        self.drain().await;
                        self.closed = true;
                    }
                },
                Some(ev) = next_media_event(&mut self.media) => self.on_media(ev).await,
                () = sleep_until(deadline) => {
                    self.machine.handle_timeout(Instant::now());
                    self.drain().await;
                }
            }
        }
        self.close_media().await;
        self.transport.close().await;
        info!(user = %self.user, "calling client stopped");
    }

    async fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Call {
                users,
                media_type,
                options,
                group,
                reply,
            } => {
                let r = if group {
                    self.machine.group_call(now, users, media_type, options)
                } else {
                    let user = users.into_iter().next();
                    match user {
                        Some(u) => self.machine.call_user(now, u, media_type, options),
                        None => Err(calling_core::CallError::NoInvitees),
                    }
                };
                self.drain().await;
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::Accept { invite_id, reply } => {
                let r = self.machine.accept(now, &invite_id);
                self.drain().await;
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::Reject { invite_id, reply } => {
                let r = self.machine.reject(now, &invite_id);
                self.drain().await;
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::Ignore { invite_id, reply } => {
                let r = self.machine.ignore(now, &invite_id);
                self.drain().await;
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::Hangup { reply } => {
                self.machine.hangup(now);
                self.drain().await;
                let _ = reply.send(Ok(()));
            }
            Command::Invite {
                users,
                timeout,
                reply,
            } => {
                let r = self.machine.invite(now, users, timeout);
                self.drain().await;
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::Join { call_id, reply } => {
                let r = self.join(call_id).await;
                let _ = reply.send(r);
            }
            Command::Switch { to, reply } => {
                let r = self.machine.switch_media_type(now, to);
                self.drain().await;
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::AnswerSwitch {
                request_id,
                accept,
                reply,
            } => {
                let r = self.machine.answer_media_switch(now, request_id, accept);
                self.drain().await;
                let _ = reply.send(r.map_err(Into::into));
            }
            Command::MicMute { muted, reply } => {
                self.mic_muted = muted;
                if let Some(m) = &self.media {
                    m.session.set_mic_mute(muted);
                }
                self.machine.set_audio_available(now, !muted);
                self.drain().await;
                let _ = reply.send(Ok(()));
            }
            Command::HandsFree { on, reply } => {
                self.hands_free = on;
                if let Some(m) = &self.media {
                    m.session.set_hands_free(on);
                }
                let _ = reply.send(Ok(()));
            }
            Command::Camera { input, reply } => {
                let on = input.is_some();
                self.config.video = input;
                let r = self.apply_video_source();
                self.machine.set_video_available(now, on);
                self.drain().await;
                let _ = reply.send(r);
            }
            Command::Quality { quality, reply } => {
                self.quality = quality;
                if let Some(m) = &self.media {
                    m.session.set_video_quality(quality);
                }
                let _ = reply.send(Ok(()));
            }
            Command::Sink { sink, reply } => {
                if let Some(m) = &self.media {
                    m.session.set_frame_sink(sink.clone());
                }
                self.sink = sink;
                let _ = reply.send(Ok(()));
            }
            Command::LocalSink { sink, reply } => {
                if let Some(m) = &self.media {
                    m.session.set_local_sink(sink.clone());
                }
                self.local_sink = sink;
                let _ = reply.send(Ok(()));
            }
            Command::Stats { reply } => {
                let stats = match &self.media {
                    Some(m) => m.session.stats().await,
                    None => Vec::new(),
                };
                let _ = reply.send(Ok(stats));
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(Ok(self.machine.call()));
            }
            Command::Logout { reply } => {
                self.logout().await;
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn join(&mut self, call_id: CallId) -> Result<(), CallingError> {
        if self.machine.call().is_some() {
            return Err(calling_core::JoinError::Busy.into());
        }
        // Whoever is in the call is in the server room named by its id.
        let members = self.transport.join_room(call_id.as_str()).await?;
        self.room = Some(call_id.clone());
        let members: Vec<UserId> = members
            .into_iter()
            .filter_map(|m| UserId::new(m).ok())
            .filter(|m| *m != self.user)
            .collect();
        let r = self.machine.join(Instant::now(), call_id, members);
        if r.is_err() {
            self.leave_room().await;
        }
        self.drain().await;
        r.map_err(Into::into)
    }

    async fn logout(&mut self) {
        self.machine.reset(Instant::now(), ResetReason::Logout);
        self.drain().await;
        self.closed = true;
    }

    async fn on_transport(&mut self, ev: TransportEvent) {
        let now = Instant::now();
        match ev {
            TransportEvent::Message { from, payload, .. } => {
                let Ok(from) = UserId::new(from) else {
                    warn!("message from an invalid user id dropped");
                    return;
                };
                match wire::decode(payload) {
                    Ok(Inbound::Control(message)) => {
                        if let Err(e) = self.machine.handle_message(now, &from, message) {
                            warn!(%from, error = %e, "call-control message refused");
                        }
                        self.drain().await;
                    }
                    Ok(Inbound::Media { call_id, signal }) => match &self.media {
                        Some(m) if m.call_id == call_id => {
                            if let Err(e) = m.session.handle_signal(from.as_str(), signal).await {
                                warn!(%from, error = %e, "media signal refused");
                            }
                        }
                        _ => debug!(%from, %call_id, "media signal for another call dropped"),
                    },
                    Err(e) => warn!(%from, error = %e, "undecodable call-layer payload dropped"),
                }
            }
            TransportEvent::Undeliverable { id, users } => {
                if let Some(call) = self.sent.call_of(&id) {
                    for user in users.into_iter().filter_map(|u| UserId::new(u).ok()) {
                        self.machine.handle_unreachable(now, &user, &call);
                    }
                    self.drain().await;
                }
            }
            TransportEvent::RoomLeave { room, user } => {
                let call = self.room.clone().filter(|c| c.as_str() == room);
                if let (Some(call), Ok(user)) = (call, UserId::new(user)) {
                    self.machine.handle_unreachable(now, &user, &call);
                    self.drain().await;
                }
            }
            TransportEvent::KickedOut => {
                self.machine.reset(now, ResetReason::KickedOut);
                self.drain().await;
                self.closed = true;
            }
            TransportEvent::LoginExpired => {
                self.machine.reset(now, ResetReason::Logout);
                self.drain().await;
                self.emit(Event::LoginExpired).await;
                self.closed = true;
            }
            TransportEvent::Disconnected => self.emit(Event::Disconnected).await,
            TransportEvent::Reconnected => self.emit(Event::Reconnected).await,
            TransportEvent::Error { code, message, .. } => {
                warn!(?code, %message, "server refused a frame");
            }
            _ => {}
        }
    }

    async fn on_media(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::Signal { to, signal } => {
                let Some(call_id) = self.media.as_ref().map(|m| m.call_id.clone()) else {
                    return;
                };
                let payload = wire::media(&call_id, &signal);
                self.send(vec![to], payload, call_id).await;
            }
            MediaEvent::VoiceVolume { user, volume } => {
                if let Ok(user) = UserId::new(user) {
                    // Volumes are frequent: drop them rather than block on a slow app.
                    let _ = self
                        .events
                        .try_send(Event::UserVoiceVolume { user, volume });
                }
            }
            MediaEvent::PeerState { user, state } => {
                debug!(%user, ?state, "peer state");
            }
            other => debug!(?other, "media event"),
        }
    }

    /// Carries out everything the machine asked for. Messages go out (and
    /// events up) before media instructions of the same batch are carried
    /// out: setting up media (a session, encoders, the server room) takes
    /// milliseconds, and the peer's side of the call setup waits on our
    /// messages, not on our media.
    async fn drain(&mut self) {
        let mut media = Vec::new();
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Send { to, message } => {
                    let call = message.call_id.clone();
                    let to = to.into_iter().map(String::from).collect();
                    self.send(to, wire::control(&message), call).await;
                }
                Output::Event(e) => self.emit(e).await,
                Output::Media(m) => media.push(m),
            }
        }
        for m in media {
            self.on_instruction(m).await;
        }
    }

    async fn send(&mut self, to: Vec<String>, payload: Value, call: CallId) {
        match self.transport.send(&to, payload).await {
            Ok(id) => self.sent.record(id, call),
            Err(e) => warn!(?to, error = %e, "send failed"),
        }
    }

    async fn emit(&mut self, event: Event) {
        if self.events.send(event).await.is_err() {
            debug!("event dropped: the app no longer listens");
        }
    }

    async fn on_instruction(&mut self, instruction: MediaInstruction) {
        match instruction {
            MediaInstruction::JoinRoom {
                call_id,
                media_type,
                ..
            } => {
                if let Err(e) = self.open_media(call_id.clone(), media_type).await {
                    warn!(error = %e, "media could not start");
                    self.emit(Event::Error {
                        code: crate::error::ERROR_MEDIA_START,
                        message: format!("media could not start: {e}"),
                    })
                    .await;
                }
                if self.room.as_ref() != Some(&call_id) {
                    self.leave_room().await;
                    match self.transport.join_room(call_id.as_str()).await {
                        Ok(_) => self.room = Some(call_id),
                        Err(e) => warn!(error = %e, "could not join the call's room"),
                    }
                }
            }
            MediaInstruction::ConnectPeer { call_id, user } => {
                if let Some(m) = self.media.as_ref().filter(|m| m.call_id == call_id)
                    && let Err(e) = m.session.connect(user.as_str()).await
                {
                    warn!(%user, error = %e, "media connect failed");
                }
            }
            MediaInstruction::DropPeer { call_id, user } => {
                if let Some(m) = self.media.as_ref().filter(|m| m.call_id == call_id) {
                    m.session.disconnect(user.as_str()).await;
                }
            }
            MediaInstruction::SetMediaType {
                call_id,
                media_type,
            } => {
                if let Some(m) = self.media.as_mut().filter(|m| m.call_id == call_id) {
                    m.media_type = media_type;
                }
                if let Err(e) = self.apply_video_source() {
                    warn!(error = %e, "video source change failed");
                }
            }
            MediaInstruction::LeaveRoom { .. } => {
                self.close_media().await;
                self.leave_room().await;
            }
            other => debug!(?other, "media instruction ignored"),
        }
    }

    async fn open_media(
        &mut self,
        call_id: CallId,
        media_type: MediaType,
    ) -> Result<(), CallingError> {
        self.close_media().await;
        let mut config = self.config.media.clone();
        config.local_user = self.user.to_string();
        config.video_quality = self.quality;
        let (session, events) = MediaSession::new(config).await?;
        session.set_mic_mute(self.mic_muted);
        session.set_hands_free(self.hands_free);
        session.set_frame_sink(self.sink.clone());
        session.set_local_sink(self.local_sink.clone());
        session.set_audio_source(Some(audio_source(&self.config.audio)))?;
        self.media = Some(Media {
            call_id,
            session,
            events,
            media_type,
        });
        self.apply_video_source()
    }

    /// Video flows when the call is a video call and the camera is open.
    fn apply_video_source(&self) -> Result<(), CallingError> {
        let Some(m) = &self.media else {
            return Ok(());
        };
        let source = match (&self.config.video, m.media_type) {
            (Some(input), MediaType::Video) => Some(video_source(input)),
            _ => None,
        };
        m.session.set_camera(source.is_some());
        m.session.set_video_source(source)?;
        Ok(())
    }

    async fn close_media(&mut self) {
        if let Some(m) = self.media.take() {
            m.session.close().await;
        }
    }

    async fn leave_room(&mut self) {
        if let Some(room) = self.room.take()
            && let Err(e) = self.transport.leave_room(room.as_str()).await
        {
            debug!(error = %e, "leaving the call's room failed");
        }
    }
}

fn audio_source(input: &AudioInput) -> AudioSource {
    match input {
        AudioInput::Tone {
            frequency_hz,
            amplitude,
        } => AudioSource::Tone {
            frequency_hz: *frequency_hz,
            amplitude: *amplitude,
        },
        AudioInput::OggFile { path, looped } => AudioSource::OggFile {
            path: path.clone(),
            looped: *looped,
        },
    }
}

fn video_source(input: &VideoInput) -> VideoSource {
    match input {
        VideoInput::TestPattern => VideoSource::TestPattern,
        VideoInput::H264File { path, fps, looped } => VideoSource::H264File {
            path: path.clone(),
            fps: *fps,
            looped: *looped,
        },
    }
}

async fn next_media_event(media: &mut Option<Media>) -> Option<MediaEvent> {
    match media {
        Some(m) => m.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
