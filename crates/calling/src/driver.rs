//! The client's actor: one task owns the call machine, the transport and the
//! media session, and handles app operations, network input, media events
//! and timers strictly one at a time.
//!
//! An app operation is a [`Job`]: a closure the [`crate::Calling`] handle
//! sends, which the driver runs on itself in its turn. Each operation is
//! written once, as a driver method; there is no command enum restating it.
//!
//! A message is data from a stranger until the call rules say who sent it:
//! media negotiation is taken only from parties the rules list as connected
//! in the current call (anything else is dropped unanswered), and traffic
//! from users who are not parties of the call, and the answers to them, are
//! limited per user ([`crate::guard`]).
//!
//! Network input is never held up by the app: events wait in the driver's
//! own backlog when the app's channel is full (see [`Driver::emit`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use calling_core::{
    CallId, CallMachine, CallState, JoinTicket, MediaInstruction, MediaType, Output, PartyId,
    ResetReason, UserId,
};
use calling_media::{
    DecodedSink, FrameSink, MediaError, MediaEvent, MediaKind, MediaSession, MediaSignal,
    PeerMedia, PeerState, VideoQuality, VideoSource,
};
use calling_signal::{MessageId, Transport, TransportEvent};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, error, info, warn};

use crate::audio_io::AudioIo;
use crate::config::{CallingConfig, VideoInput};
use crate::error::CallingError;
use crate::event::{ErrorCode, Event, MediaState};
use crate::guard::{Parties, Strangers};
use crate::wire::{self, Inbound};

/// A boxed future borrowing the driver.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One operation of the app on the client, run by the driver in its turn.
pub(crate) type Job = Box<dyn for<'a> FnOnce(&'a mut Driver) -> BoxFuture<'a, ()> + Send>;

/// The media of the current call.
struct Media {
    call_id: CallId,
    session: MediaSession,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    media_type: MediaType,
    /// The participation each media peer was last heard from in: a higher
    /// one is a new participation (a rejoin whose leave we never saw), which
    /// gets a fresh connection and may bring a new certificate.
    parties: HashMap<UserId, PartyId>,
    /// Peers whose media is interrupted: their connection's own state
    /// changes (a restart connecting again) are not the app's news; the
    /// media engine's verdict (restored or failed) is.
    interrupted: HashSet<UserId>,
    /// Peers whose media failed for good.
    failed: HashSet<UserId>,
    /// The call's microphone and speaker devices, if any.
    audio_io: AudioIo,
    /// The transport's ICE servers the session last got.
    ice_seen: Vec<calling_signal::protocol::IceServer>,
    /// Parties whose media is being set up, since when (for
    /// [`crate::metrics`]).
    setting_up: HashMap<UserId, std::time::Instant>,
}

/// How often the ICE servers of a call's media are brought up to date with
/// the transport's (whose TURN credentials are renewed before they
/// expire), besides just before ICE restarts.
const ICE_SERVER_REFRESH: Duration = Duration::from_secs(30);

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

/// The local media settings, kept across calls.
struct Local {
    mic_muted: bool,
    hands_free: bool,
    quality: VideoQuality,
    sink: Option<Arc<dyn FrameSink>>,
    local_sink: Option<Arc<dyn FrameSink>>,
    decoded_sink: Option<Arc<dyn DecodedSink>>,
    /// Whether the microphone source of the current call is running.
    audio_ok: bool,
    /// Whether the camera source of the current call is running (or not
    /// needed).
    video_ok: bool,
}

pub(crate) struct Driver {
    user: UserId,
    /// The call rules; operations run on it directly.
    pub(crate) machine: CallMachine,
    transport: Arc<dyn Transport>,
    inbound: mpsc::Receiver<TransportEvent>,
    config: CallingConfig,
    events: mpsc::Sender<Event>,
    /// Events the app's channel had no room for, oldest first.
    backlog: VecDeque<Event>,
    /// The limits on users who are not parties of the current call.
    strangers: Strangers,
    media: Option<Media>,
    room: Option<CallId>,
    /// Who the call's room admits, as far as this client asked.
    room_allowed: BTreeSet<UserId>,
    sent: SentLog,
    local: Local,
    /// Set when the transport is gone for good: the driver stops.
    closed: bool,
    /// Connected parties whose connection to the server died (or who were
    /// unreachable), with the call and the moment they count as gone
    /// unless heard from again: see [`CallingConfig::reconnect_grace`].
    lost: HashMap<UserId, (CallId, Instant)>,
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
        let local = Local {
            mic_muted: false,
            hands_free: false,
            quality: config.media.video_quality,
            sink: None,
            local_sink: None,
            decoded_sink: None,
            audio_ok: true,
            video_ok: true,
        };
        let strangers = Strangers::new(config.clock.now());
        Self {
            user,
            machine,
            transport,
            inbound,
            config,
            events,
            backlog: VecDeque::new(),
            strangers,
            media: None,
            room: None,
            room_allowed: BTreeSet::new(),
            sent: SentLog {
                entries: VecDeque::new(),
            },
            local,
            closed: false,
            lost: HashMap::new(),
        }
    }

    /// The server says `user` is not reachable in `call`. A ringing
    /// invitee counts as offline at once; a connected party gets
    /// [`CallingConfig::reconnect_grace`] to reconnect (a changed address
    /// breaks its signaling connection too) before it counts as gone.
    fn unreachable(&mut self, now: Instant, user: &UserId, call: &CallId) {
        let grace = self.config.reconnect_grace;
        if grace.is_zero() || !self.is_member(user, call) {
            self.lost.remove(user);
            self.machine.handle_unreachable(now, user, call);
            return;
        }
        // A wait left over from an earlier call must not stand in for
        // this one's (its expiry would name the old call and do nothing).
        if self.lost.get(user).is_none_or(|(c, _)| c != call) {
            debug!(%user, ?grace, "connected party unreachable; waiting for it to reconnect");
            self.lost.insert(user.clone(), (call.clone(), now + grace));
        }
    }

    /// `user` was heard from (or re-entered the call's room): not lost.
    fn found(&mut self, user: &UserId) {
        if self.lost.remove(user).is_some() {
            debug!(%user, "unreachable party is back");
        }
    }

    /// Parties whose grace is over count as gone now.
    fn expire_lost(&mut self, now: Instant) {
        let due: Vec<(UserId, CallId)> = self
            .lost
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(u, (c, _))| (u.clone(), c.clone()))
            .collect();
        for (user, call) in due {
            self.lost.remove(&user);
            debug!(%user, "unreachable party did not come back");
            self.machine.handle_unreachable(now, &user, &call);
        }
    }

    /// The time on the client's clock.
    pub(crate) fn now(&self) -> Instant {
        self.config.clock.now()
    }

    pub(crate) async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        info!(user = %self.user, "calling client started");
        // The call rules start with audio and video on: tell them the truth
        // (e.g. the camera is closed) before the first call.
        self.announce_media();
        let app = self.events.clone();
        let mut refresh = tokio::time::interval(ICE_SERVER_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.closed {
            let lost = self.lost.values().map(|(_, at)| *at).min();
            let deadline = match (self.machine.poll_timeout(), lost) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                permit = app.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => self.backlog.clear(),
                },
                job = jobs.recv() => match job {
                    Some(job) => job(&mut self).await,
                    // Every handle dropped: leave like a logout.
                    None => self.stop(ResetReason::Logout).await,
                },
                ev = self.inbound.recv() => match ev {
                    Some(ev) => self.on_transport(ev).await,
                    None => self.stop(ResetReason::Logout).await,
                },
                Some(ev) = next_media_event(&mut self.media) => self.on_media(ev).await,
                _ = refresh.tick(), if self.media.is_some() => self.refresh_ice_servers(),
                () = sleep_until(deadline) => {
                    let now = self.now();
                    self.expire_lost(now);
                    self.machine.handle_timeout(now);
                    self.drain().await;
                }
            }
        }
        self.close_media().await;
        self.transport.close().await;
        info!(user = %self.user, "calling client stopped");
        // The last events (the call's end, a kick) still reach an app that
        // reads them; nothing else is left to hold up.
        while let Some(event) = self.backlog.pop_front() {
            if self.events.send(event).await.is_err() {
                break;
            }
        }
    }

    /// Runs one operation on the call rules, then carries out what they
    /// asked for.
    pub(crate) async fn rules<T, E>(
        &mut self,
        op: impl FnOnce(&mut CallMachine, Instant) -> Result<T, E>,
    ) -> Result<T, CallingError>
    where
        CallingError: From<E>,
    {
        self.preflight();
        let now = self.now();
        let r = op(&mut self.machine, now);
        self.drain().await;
        r.map_err(CallingError::from)
    }

    /// Outside a call, checks that the sources can start before a call or
    /// an answer announces this user's audio and video: the invite or the
    /// accept then carries the truth. The sources themselves start with
    /// the call's media, which has the last word.
    fn preflight(&mut self) {
        if self.media.is_some() {
            return;
        }
        self.local.audio_ok = self.config.audio.can_start();
        self.local.video_ok = self.config.video.as_ref().is_none_or(VideoInput::can_start);
        self.announce_media();
    }

    /// Joins a running call with a ticket a member handed out: the
    /// ticket's host lets this user in and tells the others.
    pub(crate) async fn join(
        &mut self,
        call_id: CallId,
        ticket: JoinTicket,
    ) -> Result<(), CallingError> {
        self.rules(move |m, now| m.join(now, call_id, ticket)).await
    }

    /// Ends the call in progress and stops the client.
    pub(crate) async fn stop(&mut self, reason: ResetReason) {
        let now = self.now();
        self.machine.reset(now, reason);
        self.drain().await;
        self.closed = true;
    }

    pub(crate) async fn set_mic_mute(&mut self, muted: bool) {
        self.local.mic_muted = muted;
        if let Some(m) = &self.media {
            m.session.set_mic_mute(muted);
            m.audio_io.set_mic_muted(muted);
        }
        self.announce_media();
        self.drain().await;
    }

    pub(crate) async fn set_hands_free(&mut self, on: bool) {
        self.local.hands_free = on;
        let moved = match &self.media {
            Some(m) => m.audio_io.set_hands_free(&self.config.audio_output, on),
            None => Ok(()),
        };
        if let Err(e) = moved {
            self.error(ErrorCode::AudioOutput, e).await;
        }
    }

    /// Opens (`Some`) or closes the camera. A source that cannot start is
    /// an error, and the others see the video as unavailable.
    pub(crate) async fn set_camera(
        &mut self,
        input: Option<VideoInput>,
    ) -> Result<(), CallingError> {
        self.config.video = input;
        let r = self.apply_video_source();
        self.local.video_ok = r.is_ok();
        self.announce_media();
        self.drain().await;
        r
    }

    pub(crate) fn set_video_quality(&mut self, quality: VideoQuality) {
        self.local.quality = quality;
        if let Some(m) = &self.media {
            m.session.set_video_quality(quality);
        }
    }

    pub(crate) fn set_frame_sink(&mut self, sink: Option<Arc<dyn FrameSink>>) {
        if let Some(m) = &self.media {
            m.session.set_frame_sink(sink.clone());
        }
        self.local.sink = sink;
    }

    pub(crate) fn set_decoded_sink(&mut self, sink: Option<Arc<dyn DecodedSink>>) {
        if let Some(m) = &self.media {
            m.session
                .set_decoded_sink(m.audio_io.decoded_sink(sink.clone()));
        }
        self.local.decoded_sink = sink;
    }

    pub(crate) fn set_local_sink(&mut self, sink: Option<Arc<dyn FrameSink>>) {
        if let Some(m) = &self.media {
            m.session.set_local_sink(sink.clone());
        }
        self.local.local_sink = sink;
    }

    /// The media session of the current call, if any.
    pub(crate) fn media_session(&self) -> Option<&MediaSession> {
        self.media.as_ref().map(|m| &m.session)
    }

    /// Tells the call rules (and so the others) what this user really
    /// sends: audio unless muted or its source failed, video while the
    /// camera is open and its source runs.
    fn announce_media(&mut self) {
        let now = self.now();
        let audio = !self.local.mic_muted && self.local.audio_ok;
        let video = self.config.video.is_some() && self.local.video_ok;
        // The rules tell the others only what changed.
        self.machine.set_audio_available(now, audio);
        self.machine.set_video_available(now, video);
    }

    /// Whether the call rules list `user` as connected in the current call
    /// `call_id`, with the local party in it too.
    fn is_member(&self, user: &UserId, call_id: &CallId) -> bool {
        self.machine.call().is_some_and(|c| {
            c.call_id == *call_id && c.state == CallState::InCall && c.connected.contains(user)
        })
    }

    /// The parties of the current call, as the call rules list them.
    fn parties(&self) -> Parties {
        Parties::of(self.machine.call().as_ref())
    }

    async fn on_transport(&mut self, ev: TransportEvent) {
        let now = self.now();
        match ev {
            TransportEvent::Message { from, payload, .. } => {
                self.found(&from);
                let before = self.parties();
                let stranger = !before.contains(&from);
                if stranger && !self.strangers.admit(&from, now) {
                    debug!(%from, "message from a stranger over its limit shed");
                    return;
                }
                match wire::decode(payload) {
                    Ok(Inbound::Control(message)) => {
                        let (call_id, party) = (message.call_id.clone(), message.party);
                        if let Err(e) = self.machine.handle_message(now, &from, message) {
                            debug!(%from, error = %e, "call-control message refused");
                        }
                        // Whoever was or now is a party may be answered freely.
                        let known = before.union(&self.parties());
                        self.drain_answering(Some(&known)).await;
                        self.on_participation(&from, &call_id, party).await;
                    }
                    Ok(Inbound::Media { call_id, signal }) => {
                        self.on_media_signal(&from, call_id, signal).await;
                    }
                    Err(e) => debug!(%from, error = %e, "undecodable call-layer payload dropped"),
                }
            }
            TransportEvent::Undeliverable {
                id,
                offline,
                congested,
            } => {
                if let Some(call) = self.sent.call_of(&id) {
                    // A full queue at the server is not a departure: the
                    // message is lost, the member is still there (the
                    // keepalive notices one that really vanished).
                    for user in congested {
                        debug!(%user, "message lost to a congested recipient");
                        self.machine.handle_congested(now, &user, &call);
                    }
                    for user in offline {
                        self.unreachable(now, &user, &call);
                    }
                    self.drain().await;
                }
            }
            TransportEvent::RoomLeave { room, user } => {
                if let Some(call) = self.room.clone().filter(|c| c.as_str() == room) {
                    self.unreachable(now, &user, &call);
                    self.drain().await;
                }
            }
            TransportEvent::RoomEnter { room, user } => {
                debug!(%room, %user, "room enter");
                // A reconnected party re-joins the rooms it was in.
                if self.room.as_ref().is_some_and(|c| c.as_str() == room) {
                    self.found(&user);
                }
            }
            TransportEvent::KickedOut => {
                self.emit(Event::KickedOut);
                self.stop(ResetReason::KickedOut).await;
            }
            TransportEvent::LoginExpired => {
                self.stop(ResetReason::Logout).await;
                self.emit(Event::LoginExpired);
            }
            TransportEvent::Disconnected => self.emit(Event::Disconnected),
            TransportEvent::Reconnected => {
                self.emit(Event::Reconnected);
                // A re-login brings fresh TURN credentials.
                self.refresh_ice_servers();
                // Whatever was lost while disconnected (a hangup, a leave),
                // the members' answers tell within one round trip.
                self.machine.recheck(now);
                self.drain().await;
            }
            TransportEvent::Error { code, message, .. } => {
                warn!(?code, %message, "server refused a frame");
            }
        }
    }

    /// A connected party heard from in a later participation than its media
    /// peer was set up for re-entered: its media starts over (and its
    /// certificate binds anew), as after a leave and an enter.
    async fn on_participation(&mut self, from: &UserId, call_id: &CallId, party: PartyId) {
        let member = self.is_member(from, call_id);
        let Some(m) = self
            .media
            .as_mut()
            .filter(|m| member && m.call_id == *call_id)
        else {
            return;
        };
        if !m.session.members().contains(from) {
            return;
        }
        match m.parties.get(from) {
            Some(known) if party <= *known => return,
            // The first participation heard from: media was set up for it.
            None => {
                m.parties.insert(from.clone(), party);
                return;
            }
            Some(_) => {
                m.parties.insert(from.clone(), party);
            }
        }
        debug!(%from, "a party re-entered; its media starts over");
        m.interrupted.remove(from);
        m.failed.remove(from);
        m.session.disconnect(from).await;
        if let Err(e) = m.session.connect(from).await {
            warn!(user = %from, error = %e, "media connect failed");
        }
    }

    /// Media negotiation is taken only from a party the call rules list as
    /// connected in the current call, and only by a media session that was
    /// told to connect to it: anything else is dropped, never answered (an
    /// answer would hand a stranger our media).
    async fn on_media_signal(&mut self, from: &UserId, call_id: CallId, signal: MediaSignal) {
        let member = self.is_member(from, &call_id);
        let Some(m) = self
            .media
            .as_ref()
            .filter(|m| member && m.call_id == call_id)
        else {
            debug!(%from, %call_id, "media signal from a non-member dropped");
            return;
        };
        match m.session.handle_signal(from, signal).await {
            Ok(()) => {}
            Err(e @ MediaError::FingerprintChanged { .. }) => {
                warn!(%from, error = %e, "media signal with another certificate refused");
            }
            Err(e) => warn!(%from, error = %e, "media signal refused"),
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
                // Volumes are frequent and stale at once: they never wait,
                // so they are what a slow app loses first.
                if self.backlog.is_empty() {
                    let _ = self
                        .events
                        .try_send(Event::UserVoiceVolume { user, volume });
                }
            }
            MediaEvent::PeerState {
                user,
                previous,
                state,
            } => {
                debug!(%user, ?previous, ?state, "peer state");
                self.on_peer_state(user, previous, state).await;
            }
            MediaEvent::PeerMedia { user, state } => self.on_peer_media(user, state).await,
            MediaEvent::NoRelayCandidates { user, relay_only } => {
                let (code, consequence) = if relay_only {
                    (
                        ErrorCode::TurnUnavailable,
                        "relay-only media with it cannot connect",
                    )
                } else {
                    (
                        ErrorCode::TurnFallbackUnavailable,
                        "media goes on over direct paths only",
                    )
                };
                let detail = format!(
                    "ICE gathering for {user} produced no relay candidate: the TURN server \
                     refused the allocation or did not answer; check that calling-server's \
                     --turn-secret matches coturn's static-auth-secret and that the TURN \
                     server is reachable ({consequence})"
                );
                self.error(code, detail).await;
            }
            MediaEvent::RemoteTrack { user, kind } => debug!(%user, ?kind, "remote track"),
            MediaEvent::FirstFrame { user, kind } => debug!(%user, ?kind, "first frame"),
            MediaEvent::KeyframeRequested { user } => debug!(%user, "key frame requested"),
            MediaEvent::VideoTarget { target } => debug!(?target, "video target"),
            MediaEvent::SourceFailed { kind, error } => {
                let code = match kind {
                    MediaKind::Audio => {
                        self.local.audio_ok = false;
                        ErrorCode::AudioSource
                    }
                    MediaKind::Video => {
                        self.local.video_ok = false;
                        ErrorCode::VideoSource
                    }
                };
                self.error(code, error).await;
                self.announce_media();
            }
            MediaEvent::NoCommonCodec { user, kind } => {
                let (code, what) = match kind {
                    MediaKind::Video => (ErrorCode::NoCommonVideoCodec, "video (we send H.264)"),
                    MediaKind::Audio => (ErrorCode::NoCommonAudioCodec, "audio (we send Opus)"),
                };
                let detail = format!("{user} gets no {what} from us; its own still arrives");
                self.error(code, detail).await;
            }
        }
    }

    /// Turns the media engine's connection changes into [`Event::Media`]:
    /// setting up (connecting, connected). A connection that breaks is
    /// told by [`PeerMedia`] instead ([`Self::on_peer_media`]), which
    /// follows it across ICE restarts.
    async fn on_peer_state(&mut self, user: UserId, previous: PeerState, state: PeerState) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        if m.interrupted.contains(&user) || m.failed.contains(&user) {
            debug!(%user, ?previous, ?state, "connection state of interrupted media");
            return;
        }
        if state == PeerState::Connected
            && let Some(since) = m.setting_up.remove(&user)
        {
            crate::metrics::observe_call_setup(since.elapsed());
        }
        let call_id = m.call_id.clone();
        let state = match state {
            PeerState::Connected => MediaState::Connected,
            PeerState::Connecting => MediaState::Connecting,
            // Reported as PeerMedia right after. New is a fresh start and
            // Closed follows a drop the call rules asked for (UserLeave
            // says it).
            PeerState::Disconnected | PeerState::Failed | PeerState::New | PeerState::Closed => {
                return;
            }
        };
        self.emit(Event::Media {
            call_id,
            user,
            state,
        });
    }

    /// Media with `user` was interrupted, restored, or given up. The app
    /// hears it as [`Event::Media`]; when media has failed with every
    /// connected party (always so in a 1v1 call), the client leaves the
    /// call with [`calling_core::EndReason::MediaFailed`], a normal `leave`
    /// on the wire, so that the others and the server clean up. A group
    /// call where some party's media is fine goes on.
    async fn on_peer_media(&mut self, user: UserId, state: PeerMedia) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        let call_id = m.call_id.clone();
        let state = match state {
            PeerMedia::Interrupted => {
                m.interrupted.insert(user.clone());
                MediaState::Disconnected
            }
            PeerMedia::Restored => {
                m.interrupted.remove(&user);
                m.failed.remove(&user);
                MediaState::Restored
            }
            PeerMedia::Failed => {
                m.interrupted.remove(&user);
                m.failed.insert(user.clone());
                MediaState::Failed
            }
        };
        if state == MediaState::Disconnected {
            // The offering side's next restart gathers with these.
            self.refresh_ice_servers();
        }
        self.emit(Event::Media {
            call_id: call_id.clone(),
            user,
            state,
        });
        if state == MediaState::Failed && self.media_failed_with_everyone(&call_id) {
            warn!(%call_id, "media failed with every party; leaving the call");
            let now = self.now();
            self.machine.leave_media_failed(now);
            self.drain().await;
        }
    }

    /// Whether the call `call_id` has connected parties and media failed
    /// with each of them.
    fn media_failed_with_everyone(&self, call_id: &CallId) -> bool {
        let (Some(m), Some(call)) = (&self.media, self.machine.call()) else {
            return false;
        };
        if call.call_id != *call_id {
            return false;
        }
        let mut others = call
            .connected
            .iter()
            .filter(|u| **u != self.user)
            .peekable();
        others.peek().is_some() && others.all(|u| m.failed.contains(u))
    }

    /// Hands the call's media the ICE servers as they are now, if the
    /// transport's changed since it last got them: the app's own plus
    /// those of the transport's latest login (see [`announced_ice_servers`]).
    fn refresh_ice_servers(&mut self) {
        let seen = self.transport.ice_servers();
        if self.media.as_ref().is_none_or(|m| m.ice_seen == seen) {
            return;
        }
        let servers = self.ice_servers();
        if let Some(m) = self.media.as_mut() {
            debug!(
                count = servers.len(),
                "ICE servers of the call's media updated"
            );
            m.session.set_ice_servers(servers);
            m.ice_seen = seen;
        }
    }

    fn ice_servers(&self) -> Vec<calling_media::IceServer> {
        let mut servers = self.config.media.ice_servers.clone();
        servers.extend(announced_ice_servers(&*self.transport, unix_now()));
        servers
    }

    /// Carries out everything the machine asked for. Messages go out (and
    /// events up) before media instructions of the same batch are carried
    /// out: setting up media (a session, encoders, the server room) takes
    /// milliseconds, and the peer's side of the call setup waits on our
    /// messages, not on our media.
    ///
    /// Carrying out a media instruction can give the machine more to do
    /// (a source that cannot start changes what this user announces), so
    /// this goes on until the machine has nothing left.
    pub(crate) async fn drain(&mut self) {
        self.drain_answering(None).await;
    }

    /// [`drain`](Self::drain) after a message from the network: a message
    /// to nobody in `known` (the parties before and after it) answers a
    /// stranger, and goes only within the strangers' limits.
    async fn drain_answering(&mut self, known: Option<&Parties>) {
        let mut ringing = None;
        loop {
            let mut media = Vec::new();
            while let Some(out) = self.machine.poll_output() {
                match out {
                    Output::Send { to, message } => {
                        if let Some(known) = known
                            && !to.iter().any(|u| known.contains(u))
                            && !self.strangers.may_answer(&to, self.now())
                        {
                            debug!(?to, "answer to a stranger over its limit dropped");
                            continue;
                        }
                        let call = message.call_id.clone();
                        self.send(to, wire::control(&message), call).await;
                    }
                    Output::Event(e) => {
                        if let calling_core::Event::Invited {
                            call_id,
                            media_type,
                            ..
                        } = &e
                        {
                            ringing = Some((call_id.clone(), *media_type));
                        }
                        self.emit(e.into())
                    }
                    Output::Media(m) => {
                        // The room before the messages after it: a sponsor's
                        // invites must find it made and closed to strangers
                        // (an invitee joining first would make it open, and
                        // the sponsor's list would then be refused).
                        if let MediaInstruction::JoinRoom { call_id, .. } = &m
                            && self.room.as_ref() != Some(call_id)
                        {
                            self.leave_room().await;
                            self.join_call_room(call_id.clone()).await;
                        }
                        media.push(m);
                    }
                }
            }
            if media.is_empty() {
                break;
            }
            for m in media {
                self.on_instruction(m).await;
            }
        }
        self.prepare_media(ringing).await;
        self.allow_into_room().await;
    }

    /// Opens the media session of a call that starts ringing here, so that
    /// accepting it does not wait for the encoders to start and make their
    /// first key frame (for the generated test pattern, some 15 ms here):
    /// nothing is sent before the accept, since no peer is connected. A
    /// session whose call is gone (rejected, cancelled, timed out) closes.
    async fn prepare_media(&mut self, ringing: Option<(CallId, MediaType)>) {
        if let Some((call_id, media_type)) = ringing
            && self.media.is_none()
        {
            self.open_media(call_id, media_type).await;
        }
        // Runs after every message: read the call id, not a whole snapshot.
        if self
            .media
            .as_ref()
            .is_some_and(|m| self.machine.call_id() != Some(&m.call_id))
        {
            self.close_media().await;
        }
    }

    async fn send(&mut self, to: Vec<UserId>, payload: Value, call: CallId) {
        match self.transport.send(&to, payload).await {
            Ok(id) => self.sent.record(id, call),
            Err(e) => warn!(?to, error = %e, "send failed"),
        }
    }

    /// Most events an app that stopped reading can leave waiting; past
    /// this, call events are dropped (with an error in the log). An event is
    /// a few hundred bytes at most, so this bounds the backlog to some tens
    /// of MiB, and an app this far behind has lost its calls anyway.
    const MAX_BACKLOG: usize = 64 * 1024;

    /// Hands an event to the app without ever waiting for it: when its
    /// channel is full, the event waits in the backlog, which the run loop
    /// empties as the app reads. Order is kept.
    fn emit(&mut self, event: Event) {
        let event = if self.backlog.is_empty() {
            match self.events.try_send(event) {
                Ok(()) => return,
                Err(TrySendError::Closed(_)) => {
                    debug!("event dropped: the app no longer listens");
                    return;
                }
                Err(TrySendError::Full(event)) => event,
            }
        } else {
            event
        };
        if self.backlog.len() >= Self::MAX_BACKLOG {
            error!(
                ?event,
                "the app has not read its events for too long; event dropped"
            );
            return;
        }
        self.backlog.push_back(event);
    }

    async fn error(&mut self, code: ErrorCode, detail: impl std::fmt::Display) {
        warn!(%code, %detail, "call error");
        self.emit(Event::Error {
            code,
            message: format!("{code}: {detail}"),
        });
    }

    async fn on_instruction(&mut self, instruction: MediaInstruction) {
        match instruction {
            MediaInstruction::JoinRoom {
                call_id,
                media_type,
                ..
            } => {
                // Opened while ringing: keep it and its running sources
                // (restarting them would lose the first key frame made).
                if let Some(m) = self.media.as_mut().filter(|m| m.call_id == call_id) {
                    if m.media_type != media_type {
                        m.media_type = media_type;
                        self.start_video().await;
                    }
                } else {
                    self.open_media(call_id.clone(), media_type).await;
                }
                if self.room.as_ref() != Some(&call_id) {
                    self.leave_room().await;
                    self.join_call_room(call_id).await;
                }
            }
            MediaInstruction::ConnectPeer { call_id, user } => {
                if let Some(m) = self.media.as_mut().filter(|m| m.call_id == call_id) {
                    m.setting_up
                        .entry(user.clone())
                        .or_insert_with(std::time::Instant::now);
                    if let Err(e) = m.session.connect(&user).await {
                        warn!(%user, error = %e, "media connect failed");
                    }
                }
            }
            MediaInstruction::DropPeer { call_id, user } => {
                if let Some(m) = self.media.as_mut().filter(|m| m.call_id == call_id) {
                    m.parties.remove(&user);
                    m.setting_up.remove(&user);
                    m.interrupted.remove(&user);
                    m.failed.remove(&user);
                    m.session.disconnect(&user).await;
                }
            }
            MediaInstruction::SetMediaType {
                call_id,
                media_type,
            } => {
                if let Some(m) = self.media.as_mut().filter(|m| m.call_id == call_id) {
                    m.media_type = media_type;
                }
                self.start_video().await;
            }
            MediaInstruction::LeaveRoom { .. } => {
                self.close_media().await;
                self.leave_room().await;
            }
        }
    }

    /// Opens the call's media session and starts its sources, with the ICE
    /// servers the app configured plus those the latest login announced. What cannot
    /// start is an [`Event::Error`], and the others are told the truth about
    /// what this user sends.
    async fn open_media(&mut self, call_id: CallId, media_type: MediaType) {
        self.close_media().await;
        let mut config = self.config.media.clone();
        config.video_quality = self.local.quality;
        let ice_seen = self.transport.ice_servers();
        config.ice_servers = self.ice_servers();
        let (session, events) = match MediaSession::new(self.user.clone(), config).await {
            Ok(s) => s,
            Err(e) => {
                self.local.audio_ok = false;
                self.local.video_ok = false;
                self.error(ErrorCode::MediaStart, e).await;
                self.announce_media();
                return;
            }
        };
        session.set_mic_mute(self.local.mic_muted);
        session.set_frame_sink(self.local.sink.clone());
        session.set_local_sink(self.local.local_sink.clone());
        let mut audio_io = AudioIo::default();
        let output = audio_io.open_output(&self.config.audio_output, self.local.hands_free);
        session.set_decoded_sink(audio_io.decoded_sink(self.local.decoded_sink.clone()));
        let audio = match audio_io.audio_source(&self.config.audio) {
            Ok(source) => session
                .set_audio_source(Some(source))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        audio_io.set_mic_muted(self.local.mic_muted);
        self.media = Some(Media {
            call_id,
            session,
            events,
            media_type,
            parties: HashMap::new(),
            interrupted: HashSet::new(),
            failed: HashSet::new(),
            audio_io,
            ice_seen,
            setting_up: HashMap::new(),
        });
        self.local.audio_ok = audio.is_ok();
        if let Err(e) = audio {
            self.error(ErrorCode::AudioSource, e).await;
        }
        if let Err(e) = output {
            self.error(ErrorCode::AudioOutput, e).await;
        }
        self.start_video().await;
    }

    /// Starts or stops the camera source for the call's media type; a
    /// source that cannot start is an [`Event::Error`].
    async fn start_video(&mut self) {
        let r = self.apply_video_source();
        self.local.video_ok = r.is_ok();
        if let Err(e) = r {
            self.error(ErrorCode::VideoSource, e).await;
        }
        self.announce_media();
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

    /// Joins the server room named by the call, through which the server
    /// tells when a member's connection dies. The sponsor creates it closed,
    /// open only to the users it invites; members let in whom they add
    /// later ([`Self::allow_into_room`]). Without the room, the call's
    /// keepalive still notices a vanished member, only later.
    async fn join_call_room(&mut self, call_id: CallId) {
        // Everyone invited: those still ringing, and those who accepted
        // while our media was opening (their join comes next).
        let allow: Vec<UserId> = match self.machine.call() {
            Some(c) if c.sponsor == self.user => c
                .connected
                .iter()
                .chain(&c.ringing)
                .filter(|u| **u != self.user)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        match self.transport.join_room(call_id.as_str(), &allow).await {
            Ok(_) => {
                self.room = Some(call_id);
                self.room_allowed = allow.into_iter().collect();
            }
            Err(e) => warn!(error = %e, "could not join the call's room"),
        }
    }

    /// Lets into the call's room the parties it does not admit yet (an
    /// invitee added later, a joiner with a ticket).
    async fn allow_into_room(&mut self) {
        let (Some(room), Some(call)) = (self.room.clone(), self.machine.call()) else {
            return;
        };
        if call.call_id != room {
            return;
        }
        let new: Vec<UserId> = call
            .connected
            .iter()
            .chain(&call.ringing)
            .filter(|u| **u != self.user && !self.room_allowed.contains(*u))
            .cloned()
            .collect();
        if new.is_empty() {
            return;
        }
        self.room_allowed.extend(new.iter().cloned());
        if let Err(e) = self.transport.allow_room(room.as_str(), &new).await {
            // An open room (e.g. made by a browser client) admits anyone.
            debug!(error = %e, "could not extend the call room's allow list");
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

fn video_source(input: &VideoInput) -> VideoSource {
    match input {
        VideoInput::TestPattern => VideoSource::TestPattern,
        VideoInput::H264File { path, fps, looped } => VideoSource::H264File {
            path: path.clone(),
            fps: *fps,
            looped: *looped,
        },
        VideoInput::Raw(input) => VideoSource::Raw(input.clone()),
        VideoInput::Encoded(input) => VideoSource::Encoded(input.clone()),
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

/// The STUN/TURN servers the transport's latest login announced, in the
/// media engine's shape. Expired TURN credentials are still passed on (the
/// relay may yet accept them within its clock skew), with a warning: they
/// are renewed only by a re-login.
fn announced_ice_servers(
    transport: &dyn Transport,
    now_unix: u64,
) -> Vec<calling_media::IceServer> {
    transport
        .ice_servers()
        .into_iter()
        .map(|s| {
            if let Some(at) = s.expires_at.filter(|at| *at <= now_unix) {
                warn!(
                    urls = ?s.urls,
                    expired_at = at,
                    "TURN credentials from login have expired: the relay will likely refuse \
                     this call's allocation; log in again for fresh ones"
                );
            }
            calling_media::IceServer {
                urls: s.urls,
                username: s.username.unwrap_or_default(),
                credential: s.credential.unwrap_or_default(),
            }
        })
        .collect()
}

/// Wall-clock Unix seconds, what TURN credential expiries are written in.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
