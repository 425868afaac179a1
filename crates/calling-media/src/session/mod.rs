//! The media session: one peer connection per remote user (mesh).
//!
//! This file holds [`MediaSession`]'s whole public API; the work is done in
//! the submodules, one concern each: `codec` (codec parameters, payload
//! types, MIME mapping), `negotiation` (offer/answer, candidates), `send`
//! (local tracks and the pumps that feed them), `receive` (remote tracks,
//! reassembly, RTCP feedback), `peer` (building, driving and closing one
//! peer connection), `restore` (ICE restarts when a connection breaks),
//! `feedback` (watching the RTCP peers send about our streams) and `adapt`
//! (turning it into the video target: congestion control).

mod adapt;
mod codec;
mod decode;
mod feedback;
mod gate;
mod interfaces;
mod negotiation;
mod peer;
mod receive;
mod restore;
mod send;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use calling_core::UserId;
use tokio::sync::{Notify, mpsc};
use webrtc::peer_connection::{RTCCertificate, RTCIceCandidateInit};

pub use codec::AUDIO_LEVEL_URI;
use peer::{Peer, close_peer};

use crate::decoded::DecodedSink;
use crate::error::MediaError;
use crate::sink::FrameSink;
use crate::source::{self, Control};
use crate::types::{
    AudioSource, IceServer, MediaConfig, MediaEvent, MediaKind, MediaSignal, PeerStats,
    VideoQuality, VideoSource, VideoTarget,
};

/// Whether `local` makes the offer to `remote`: the byte-wise lower id does.
pub fn is_offerer(local: &UserId, remote: &UserId) -> bool {
    local.as_str().as_bytes() < remote.as_str().as_bytes()
}

/// A fresh self-signed DTLS certificate (ECDSA P-256, as browsers make).
fn session_certificate() -> Result<RTCCertificate, MediaError> {
    use rtc::peer_connection::certificate::CertificateParams;
    use webrtc::peer_connection::crypto::{SignatureScheme, default_provider};
    let provider = default_provider().map_err(MediaError::webrtc)?;
    let params = CertificateParams::new(vec!["calling".to_owned()]).map_err(MediaError::webrtc)?;
    RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
        .map_err(MediaError::webrtc)
}

/// A media session for one call: one WebRTC peer connection per remote
/// user, our audio and video sent to all of them, their frames delivered to
/// a [`FrameSink`]. Cheap to clone; clones share the session.
///
/// Control events (signals to forward, peer states, first frames, voice
/// volumes) come out of the channel returned by [`MediaSession::new`], which
/// is unbounded because they must never be lost and are few. Remote frames
/// go to the sink set with [`MediaSession::set_frame_sink`], called from the
/// task that polls the track, so a slow app cannot stall signalling.
#[derive(Clone)]
pub struct MediaSession {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("local_user", &self.inner.local_user)
            .finish_non_exhaustive()
    }
}

struct Inner {
    local_user: UserId,
    config: MediaConfig,
    events: mpsc::UnboundedSender<MediaEvent>,
    /// The users we were told to [`connect`](MediaSession::connect) to, each
    /// with the DTLS fingerprint its first description announced: nobody
    /// else gets a peer connection, and a member's certificate cannot change
    /// within one participation.
    members: Mutex<HashMap<UserId, Option<String>>>,
    /// One DTLS certificate for every connection of the session: what a
    /// member binds to us is the session, not one connection of it.
    certificate: RTCCertificate,
    peers: RwLock<HashMap<UserId, Arc<Peer>>>,
    creating: tokio::sync::Mutex<()>,
    sink: RwLock<Option<Arc<dyn FrameSink>>>,
    /// Where decoded remote media goes; the decoder threads hold it too.
    decoded: Arc<decode::DecodedSlot>,
    /// Where our own encoded frames go too (a local preview).
    local_sink: RwLock<Option<Arc<dyn FrameSink>>>,
    mic_muted: AtomicBool,
    camera_on: AtomicBool,
    remote_audio_muted: AtomicBool,
    quality: Mutex<VideoQuality>,
    /// The video target the peers' feedback allows (congestion control).
    video_target: Mutex<adapt::Governor>,
    video_control: Mutex<Option<std::sync::mpsc::Sender<Control>>>,
    video_nudge: Arc<Notify>,
    pumps: Mutex<[Option<send::Pump>; 2]>,
    closed: AtomicBool,
    runtime: tokio::runtime::Handle,
    /// Peer states still allocated; shared with each `PeerShared`.
    live: Arc<AtomicUsize>,
    /// The STUN/TURN servers new connections and ICE restarts gather from
    /// (first `config.ice_servers`, then [`MediaSession::set_ice_servers`]).
    ice_servers: RwLock<Vec<IceServer>>,
}

impl Inner {
    fn emit(&self, ev: MediaEvent) {
        let _ = self.events.send(ev);
    }

    fn peers(&self) -> Vec<Arc<Peer>> {
        self.peer_map().values().cloned().collect()
    }

    fn peer(&self, user: &UserId) -> Option<Arc<Peer>> {
        self.peer_map().get(user).cloned()
    }

    // The map stays consistent whatever panicked while holding it: each
    // change is one insert or remove.
    fn peer_map(&self) -> RwLockReadGuard<'_, HashMap<UserId, Arc<Peer>>> {
        self.peers.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn peer_map_mut(&self) -> RwLockWriteGuard<'_, HashMap<UserId, Arc<Peer>>> {
        self.peers.write().unwrap_or_else(PoisonError::into_inner)
    }

    // Each change is one insert or remove: usable whatever panicked.
    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Option<String>>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_member(&self, user: &UserId) -> bool {
        self.members().contains_key(user)
    }

    fn ice_servers(&self) -> Vec<IceServer> {
        self.ice_servers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Aims the running video source's encoder at `target` (bitrate, frame
    /// rate, picture height), within the session's [`VideoQuality`]: for
    /// the congestion controller. Applies from the source's next frame,
    /// without a new encoder (a new height brings a key frame). The test
    /// pattern and raw camera frames honour it; files and the app's own
    /// encoded frames cannot. A source set later, or a new profile, starts
    /// at the full profile until the next target.
    pub(crate) fn set_video_target(&self, target: VideoTarget) {
        if let Ok(c) = self.video_control.lock() {
            if let Some(c) = c.as_ref() {
                let _ = c.send(Control::Target(target));
            }
        }
    }

    /// Moves the video target to the lowest bitrate the connected peers'
    /// feedback allows, when that is worth a change, and reports it.
    fn adapt_video(&self, now: Instant) {
        let lowest = self
            .peers()
            .iter()
            .filter(|p| p.shared.ready(MediaKind::Video))
            .map(|p| {
                p.shared
                    .adapt
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .bitrate_bps()
            })
            .min();
        let Some(lowest) = lowest else { return };
        let changed = self
            .video_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .offer(now, lowest);
        if let Some(target) = changed {
            tracing::debug!(?target, "video target");
            self.set_video_target(target);
            self.emit(MediaEvent::VideoTarget { target });
        }
    }

    fn request_keyframe(&self) {
        if let Ok(c) = self.video_control.lock() {
            if let Some(c) = c.as_ref() {
                let _ = c.send(Control::Keyframe);
            }
        }
    }
}

impl MediaSession {
    /// Creates a session. Must be called inside a tokio runtime, which then
    /// runs the session's tasks.
    ///
    /// # Errors
    ///
    /// [`MediaError::InvalidConfig`] for a bad setting,
    /// [`MediaError::NoRuntime`] outside a tokio runtime,
    /// [`MediaError::WebRtc`] if no DTLS certificate can be made.
    pub async fn new(
        local_user: UserId,
        config: MediaConfig,
    ) -> Result<(MediaSession, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        if !config.nack_history.is_power_of_two() {
            return Err(MediaError::InvalidConfig(format!(
                "nack_history {} is not a power of two",
                config.nack_history
            )));
        }
        if config.ice_keepalive_interval.is_zero()
            || config.ice_keepalive_interval >= config.ice_disconnected_timeout
        {
            return Err(MediaError::InvalidConfig(format!(
                "ice_keepalive_interval {:?} must be above zero and below \
                 ice_disconnected_timeout {:?}: the timeout counts silence",
                config.ice_keepalive_interval, config.ice_disconnected_timeout
            )));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime)?;
        let certificate = session_certificate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let quality = config.video_quality;
        let ice_servers = RwLock::new(config.ice_servers.clone());
        let inner = Arc::new(Inner {
            local_user,
            config,
            events: tx,
            members: Mutex::new(HashMap::new()),
            certificate,
            peers: RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            sink: RwLock::new(None),
            decoded: Arc::new(RwLock::new(None)),
            local_sink: RwLock::new(None),
            mic_muted: AtomicBool::new(false),
            camera_on: AtomicBool::new(true),
            remote_audio_muted: AtomicBool::new(false),
            quality: Mutex::new(quality),
            video_target: Mutex::new(adapt::Governor::new(quality)),
            video_control: Mutex::new(None),
            video_nudge: Arc::new(Notify::new()),
            pumps: Mutex::new([None, None]),
            closed: AtomicBool::new(false),
            runtime,
            live: Arc::default(),
            ice_servers,
        });
        Ok((MediaSession { inner }, rx))
    }

    /// Our own user id.
    pub fn local_user(&self) -> &UserId {
        &self.inner.local_user
    }

    /// The users this session accepts signals from: connected and not
    /// disconnected since.
    pub fn members(&self) -> Vec<UserId> {
        let mut v: Vec<UserId> = self.inner.members().keys().cloned().collect();
        v.sort();
        v
    }

    /// Users we have a peer connection with.
    pub fn peers(&self) -> Vec<UserId> {
        let mut v: Vec<UserId> = self
            .inner
            .peers()
            .iter()
            .map(|p| p.shared.remote.clone())
            .collect();
        v.sort();
        v
    }

    /// Peer connections of this session whose state is still allocated:
    /// those in [`peers`](Self::peers) plus closed ones webrtc-rs has not
    /// released yet. Drops to zero after [`close`](Self::close) once the
    /// connections' background tasks end; a count that stays up is a leak.
    pub fn live_peer_connections(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    fn check_remote(&self, remote: &UserId) -> Result<(), MediaError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(MediaError::Closed);
        }
        if *remote == self.inner.local_user {
            return Err(MediaError::SelfConnect);
        }
        Ok(())
    }

    /// Starts media with `remote`, a member of the call: from now on (until
    /// [`disconnect`](Self::disconnect)) its signals are accepted. Both sides
    /// call this; the side whose user id is byte-wise lower creates the offer
    /// (emitted as a [`MediaEvent::Signal`]), the other builds its side and
    /// waits for it. Calling it again is harmless.
    ///
    /// # Errors
    ///
    /// [`MediaError::SelfConnect`], [`MediaError::Closed`], or
    /// [`MediaError::WebRtc`] if the peer connection cannot be built (e.g.
    /// the UDP address cannot be bound).
    pub async fn connect(&self, remote: &UserId) -> Result<(), MediaError> {
        self.check_remote(remote)?;
        // Before any await: the remote may offer as soon as it knows us.
        self.inner.members().entry(remote.clone()).or_insert(None);
        let peer = self.ensure_peer(remote).await?;
        self.make_offer(&peer).await
    }

    /// Applies a signal from `from`, which must be a member: a user this
    /// session was told to [`connect`](Self::connect) to (and not
    /// disconnected since). A signal from anyone else builds nothing and is
    /// [`MediaError::UnknownPeer`]: the caller drops it unanswered.
    ///
    /// Only the byte-wise lower id offers ([`is_offerer`]), so offers never
    /// cross: an offer to the side that offers is
    /// [`MediaError::UnexpectedSignal`]. An offer on a connection that
    /// already finished its negotiation is taken by the SDP session id
    /// (`o=` line): the same id is the same remote connection renegotiating
    /// (an ICE restart), applied in place and answered; another id is a new
    /// connection of the offerer (it disconnected and connected again),
    /// which replaces ours.
    ///
    /// The DTLS fingerprint of a member's first description is bound to it
    /// until it is disconnected: a later offer or answer announcing another
    /// certificate is [`MediaError::FingerprintChanged`].
    ///
    /// # Errors
    ///
    /// [`MediaError::InvalidSdp`] / [`MediaError::InvalidCandidate`] for
    /// malformed input, [`MediaError::Oversized`], [`MediaError::UnknownPeer`]
    /// for a user that is not a member, or an answer or candidate with no
    /// peer connection, [`MediaError::FingerprintChanged`],
    /// [`MediaError::UnexpectedSignal`] for an answer we did not ask for or an
    /// offer that collides with ours, plus the errors of `connect`. The
    /// session and other peers are unaffected.
    pub async fn handle_signal(
        &self,
        from: &UserId,
        signal: MediaSignal,
    ) -> Result<(), MediaError> {
        self.check_remote(from)?;
        if !self.inner.is_member(from) {
            return Err(MediaError::UnknownPeer(from.clone()));
        }
        match signal {
            MediaSignal::Offer { sdp } => self.handle_offer(from, sdp).await,
            MediaSignal::Answer { sdp } => self.handle_answer(from, sdp).await,
            MediaSignal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            } => {
                let init = RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                    username_fragment,
                    url: None,
                };
                self.handle_candidate(from, init).await
            }
            MediaSignal::Restart => self.handle_restart_request(from).await,
        }
    }

    /// Replaces the STUN/TURN servers (e.g. with fresh TURN credentials).
    /// Used by connections created from now on and by every later ICE
    /// restart (both the offering side's and the answering side's); a
    /// connection that is up keeps its relay allocation until it restarts.
    pub fn set_ice_servers(&self, servers: Vec<IceServer>) {
        *self
            .inner
            .ice_servers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = servers;
    }

    /// Drops every datagram of the connection with `remote` from now on,
    /// both ways (`true`), or passes them again: a path that is gone, as
    /// ICE sees it. For tests of ICE restart; does nothing without a
    /// connection.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn set_path_blocked(&self, remote: &UserId, blocked: bool) {
        if let Some(peer) = self.inner.peer(remote) {
            peer.shared.gate.set_blocked(blocked);
        }
    }

    /// Drops (`true`) every datagram the connection with `remote` receives
    /// and none it sends, or passes them again: a path broken towards us
    /// only. For tests of ICE restart; does nothing without a connection.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn set_path_deaf(&self, remote: &UserId, deaf: bool) {
        if let Some(peer) = self.inner.peer(remote) {
            peer.shared.gate.set_deaf(deaf);
        }
    }

    /// Drops, for good, every datagram of the sockets the connection with
    /// `remote` has bound so far: their address is gone, as after a change
    /// of network; sockets an ICE restart binds later work. For tests of
    /// ICE restart; does nothing without a connection.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn retire_path(&self, remote: &UserId) {
        if let Some(peer) = self.inner.peer(remote) {
            peer.shared.gate.retire_sockets();
        }
    }

    /// Closes the peer connection with `remote`, if any, and emits
    /// [`PeerState::Closed`](crate::PeerState::Closed) for it. `remote` is no
    /// member any more: its signals are refused until it is connected again
    /// (a new participation, which may bring a new certificate).
    pub async fn disconnect(&self, remote: &UserId) {
        self.inner.members().remove(remote);
        self.drop_peer(remote).await;
    }

    /// Closes the connection with `remote`, which stays a member.
    async fn drop_peer(&self, remote: &UserId) {
        let peer = self.inner.peer_map_mut().remove(remote);
        if let Some(peer) = peer {
            close_peer(&self.inner, &peer).await;
        }
    }

    /// Closes every peer connection and stops the sources. The session
    /// refuses further connections.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.members().clear();
        if let Ok(mut pumps) = self.inner.pumps.lock() {
            for p in pumps.iter_mut() {
                if let Some(p) = p.take() {
                    p.abort();
                }
            }
        }
        if let Ok(mut c) = self.inner.video_control.lock() {
            *c = None;
        }
        let peers: Vec<Arc<Peer>> = self.inner.peer_map_mut().drain().map(|(_, p)| p).collect();
        for peer in peers {
            close_peer(&self.inner, &peer).await;
        }
    }

    /// Where our own outgoing frames also go, as the peers get them (a local
    /// preview: TRTCCalling's `startLocalView`); called with our own user id.
    /// Nothing arrives while the microphone is muted or the camera is off.
    pub fn set_local_sink(&self, sink: Option<Arc<dyn FrameSink>>) {
        if let Ok(mut g) = self.inner.local_sink.write() {
            *g = sink;
        }
    }

    /// Where remote frames go; `None` drops them. See [`FrameSink`].
    pub fn set_frame_sink(&self, sink: Option<Arc<dyn FrameSink>>) {
        if let Ok(mut g) = self.inner.sink.write() {
            *g = sink;
        }
    }

    /// Where remote media goes decoded: I420 pictures and 48 kHz PCM per
    /// user (see [`DecodedSink`]); `None` stops decoding. Works beside the
    /// frame sink: both may be set at once.
    ///
    /// Each remote H.264 or Opus track gets its own decoder thread, started
    /// with the track's next frame once a sink is set and ended when the
    /// track ends, the session closes or the sink is unset; without a sink
    /// nothing is decoded. The receive task never waits for a decoder: a
    /// decoder that falls behind loses its oldest frames (video then
    /// restarts from a key frame, which is asked for). After any lost video
    /// frame or decode error no picture is handed out until an IDR decodes
    /// cleanly; lost audio packets are concealed, a few per gap, and marked
    /// [`DecodedAudioFrame::concealed`](crate::DecodedAudioFrame::concealed).
    /// VP8 video is not decoded (no VP8 decoder builds with cargo alone):
    /// its frames still reach the frame sink. Muted remote
    /// audio ([`set_remote_audio_muted`](Self::set_remote_audio_muted))
    /// holds back decoded audio as it does encoded audio.
    pub fn set_decoded_sink(&self, sink: Option<Arc<dyn DecodedSink>>) {
        *self
            .inner
            .decoded
            .write()
            .unwrap_or_else(PoisonError::into_inner) = sink;
    }

    /// Replaces what feeds our audio track; `None` stops sending audio.
    ///
    /// The source is started before this returns: a file is read whole and
    /// an encoder is built here, so a source that cannot start is refused
    /// now, and the source that was running keeps running. A
    /// [`AudioSource::Raw`] or [`AudioSource::Encoded`] input is attached
    /// here and detached when the source is replaced or the session closes.
    ///
    /// # Errors
    ///
    /// A file source's [`MediaError::File`] (e.g. no such file) or
    /// [`MediaError::MalformedFile`] (not Ogg/Opus, or no packets),
    /// [`MediaError::Encoder`], or [`MediaError::Closed`].
    pub fn set_audio_source(&self, src: Option<AudioSource>) -> Result<(), MediaError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(MediaError::Closed);
        }
        let running = src.map(source::start_audio).transpose()?;
        let task = running.map(|running| self.spawn_audio_pump(running));
        self.replace_pump(0, task);
        Ok(())
    }

    /// Replaces what feeds our video track; `None` stops sending video.
    ///
    /// Started before this returns, as for
    /// [`set_audio_source`](Self::set_audio_source): a source that cannot
    /// start is refused now, and the running one keeps running. A
    /// [`VideoSource::Raw`] or [`VideoSource::Encoded`] input is attached
    /// here and detached when the source is replaced or the session closes.
    ///
    /// # Errors
    ///
    /// [`MediaError::CodecMismatch`] if the source needs the other video
    /// codec, a file source's [`MediaError::File`] or
    /// [`MediaError::MalformedFile`] (including a file with no frames),
    /// [`MediaError::Encoder`], or [`MediaError::Closed`].
    pub fn set_video_source(&self, src: Option<VideoSource>) -> Result<(), MediaError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(MediaError::Closed);
        }
        let quality = self.inner.quality.lock().map(|q| *q).unwrap_or_default();
        let running = src
            .map(|s| source::start_video(s, self.inner.config.video_codec, quality))
            .transpose()?;
        if let Ok(mut c) = self.inner.video_control.lock() {
            *c = running.as_ref().and_then(|r| r.control.clone());
        }
        // A new source starts at the profile: give it what the link allows.
        let target = self
            .inner
            .video_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .current();
        if target != VideoTarget::of(quality) {
            self.inner.set_video_target(target);
        }
        for p in self.inner.peers() {
            p.shared.awaiting_keyframe.store(true, Ordering::Release);
        }
        let task = running.map(|running| self.spawn_video_pump(running));
        self.replace_pump(1, task);
        Ok(())
    }

    fn replace_pump(&self, slot: usize, pump: Option<send::Pump>) {
        // Each change is one swap: usable whatever panicked.
        let old = std::mem::replace(
            &mut self
                .inner
                .pumps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)[slot],
            pump,
        );
        // Dropped outside the lock: stops the old pump and detaches its input.
        drop(old);
    }

    /// Asks `remote` for a key frame of its video (sends an RTCP PLI), e.g.
    /// after the app's decoder lost its reference.
    ///
    /// # Errors
    ///
    /// [`MediaError::UnknownPeer`], or [`MediaError::NoRemoteVideo`] before
    /// any video from that user arrived.
    pub async fn request_keyframe(&self, remote: &UserId) -> Result<(), MediaError> {
        let peer = self
            .inner
            .peer(remote)
            .ok_or_else(|| MediaError::UnknownPeer(remote.clone()))?;
        receive::request_keyframe(&peer).await
    }

    /// Mutes the microphone: no audio frames are sent while muted.
    pub fn set_mic_mute(&self, muted: bool) {
        self.inner.mic_muted.store(muted, Ordering::Release);
    }

    /// Turns the camera on or off: no video frames are sent while off. When
    /// it comes back on, peers restart from a key frame.
    pub fn set_camera(&self, on: bool) {
        let was = self.inner.camera_on.swap(on, Ordering::AcqRel);
        if on && !was {
            for p in self.inner.peers() {
                p.shared.awaiting_keyframe.store(true, Ordering::Release);
            }
            self.inner.request_keyframe();
        }
    }

    /// Mutes every remote user's audio here: remote audio frames stop
    /// reaching the frame sink and the decoded sink (so a
    /// `devices::Speaker` plays silence). Voice volume events keep coming. (TRTCCalling's
    /// hands-free, which the SDK maps to a choice of output device, is not
    /// this.)
    pub fn set_remote_audio_muted(&self, on: bool) {
        self.inner.remote_audio_muted.store(on, Ordering::Release);
    }

    /// Changes the video profile, live: the resolution box, bitrate and
    /// frame rate the test pattern and raw camera frames
    /// ([`VideoSource::Raw`]) are encoded at; files and the app's own
    /// encoded frames are sent as they are. Congestion control starts again
    /// from the new profile: every peer's estimate and the video target go
    /// to its bitrate (reported as [`MediaEvent::VideoTarget`] if the
    /// target changes), and adapt from there on the peers' next reports.
    pub fn set_video_quality(&self, quality: VideoQuality) {
        if let Ok(mut q) = self.inner.quality.lock() {
            *q = quality;
        }
        for p in self.inner.peers() {
            *p.shared
                .adapt
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = adapt::Estimator::new(quality);
        }
        let previous = std::mem::replace(
            &mut *self
                .inner
                .video_target
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            adapt::Governor::new(quality),
        )
        .current();
        if previous != VideoTarget::of(quality) {
            self.inner.emit(MediaEvent::VideoTarget {
                target: VideoTarget::of(quality),
            });
        }
        if let Ok(c) = self.inner.video_control.lock() {
            if let Some(c) = c.as_ref() {
                let _ = c.send(Control::Quality(quality));
            }
        }
    }

    /// Sends `target` to the running video source as the congestion
    /// controller would. For tests of the encoder's adaptation.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn force_video_target(&self, target: VideoTarget) {
        self.inner.set_video_target(target);
    }

    /// Per-peer counters and transport figures.
    pub async fn stats(&self) -> Vec<PeerStats> {
        let mut out = Vec::new();
        for peer in self.inner.peers() {
            out.push(peer.stats().await);
        }
        out.sort_by(|a, b| a.user.cmp(&b.user));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_user_id_offers() {
        let id = |s: &str| UserId::new(s).unwrap();
        assert!(is_offerer(&id("alice"), &id("bob")));
        assert!(!is_offerer(&id("bob"), &id("alice")));
        assert!(
            is_offerer(&id("Bob"), &id("alice")),
            "byte-wise: uppercase sorts first"
        );
        assert!(is_offerer(&id("a"), &id("ab")));
        assert!(!is_offerer(&id("a"), &id("a")));
    }

    #[tokio::test]
    async fn a_new_quality_restarts_the_video_target_from_its_profile() {
        let id = UserId::new("alice").unwrap();
        let (session, mut events) = MediaSession::new(id, MediaConfig::loopback())
            .await
            .unwrap();
        let inner = &session.inner;
        let target = || inner.video_target.lock().unwrap().current();
        assert_eq!(target(), VideoTarget::of(VideoQuality::P480));
        // Feedback brought it down...
        let now = Instant::now();
        let low = inner.video_target.lock().unwrap().offer(now, 200_000);
        assert!(low.is_some());
        // ...and a new profile starts again from the top, reported.
        session.set_video_quality(VideoQuality::P720);
        assert_eq!(target(), VideoTarget::of(VideoQuality::P720));
        assert_eq!(
            events.try_recv().unwrap(),
            MediaEvent::VideoTarget {
                target: VideoTarget::of(VideoQuality::P720)
            }
        );
        // The same profile again changes nothing.
        session.set_video_quality(VideoQuality::P720);
        assert!(events.try_recv().is_err());
        session.close().await;
    }
}
