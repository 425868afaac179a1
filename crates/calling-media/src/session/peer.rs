//! One peer connection: its state, how it is built, the webrtc-rs event
//! handler that drives it, and how it is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use calling_core::UserId;
use rtc::peer_connection::transport::RTCIceCandidateType;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RtpCodecKind};
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use rtc::statistics::stats::ice_candidate_pair::RTCStatsIceCandidatePairState;
use tokio::sync::Notify;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfiguration, RTCConfigurationBuilder, RTCIceConnectionState, RTCIceGatheringState,
    RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    Registry, SettingEngineBuilder, StatsSelector, configure_rtcp_reports,
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};

use super::adapt::{Estimator, Feedback};
use super::gate::{Gate, GatedRuntime};
use super::negotiation::{LocalCandidates, Negotiation};
use super::restore::{self, Restore};
use super::send::LocalTrack;
use super::{Inner, MediaSession, codec, feedback, interfaces, is_offerer, negotiation, receive};
use crate::error::MediaError;
use crate::types::{
    CandidateKind, IceServer, MediaEvent, MediaKind, PeerState, PeerStats, SelectedPair, VideoCodec,
};

/// Frame and byte counts of one peer connection.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) packets_received: AtomicU64,
    pub(super) bytes_received: AtomicU64,
    pub(super) audio_frames_sent: AtomicU64,
    pub(super) video_frames_sent: AtomicU64,
    pub(super) audio_frames_received: AtomicU64,
    pub(super) video_frames_received: AtomicU64,
}

impl Counters {
    pub(super) fn frames_sent(&self, kind: MediaKind) -> &AtomicU64 {
        match kind {
            MediaKind::Audio => &self.audio_frames_sent,
            MediaKind::Video => &self.video_frames_sent,
        }
    }

    pub(super) fn frames_received(&self, kind: MediaKind) -> &AtomicU64 {
        match kind {
            MediaKind::Audio => &self.audio_frames_received,
            MediaKind::Video => &self.video_frames_received,
        }
    }
}

/// State shared between a peer and its event handler.
pub(super) struct PeerShared {
    pub(super) remote: UserId,
    state: Mutex<PeerState>,
    connected: AtomicBool,
    pub(super) closed: AtomicBool,
    pub(super) audio_pt: Mutex<Option<u8>>,
    pub(super) video_pt: Mutex<Option<u8>>,
    /// Whether this peer got its first video frame (the cached key frame).
    pub(super) video_primed: AtomicBool,
    /// Send no video until the next key frame (after priming or camera on).
    pub(super) awaiting_keyframe: AtomicBool,
    /// Negotiated id of the audio level extension on the remote's packets.
    pub(super) audio_level_id: AtomicU8,
    /// Local candidates are held back until our offer/answer has been emitted,
    /// so the remote always sees the description first.
    pub(super) local_candidates: Mutex<LocalCandidates>,
    pub(super) counters: Counters,
    live: Arc<AtomicUsize>,
    /// The remote's video track and SSRC, to send key-frame requests to.
    pub(super) remote_video: Mutex<Option<(Weak<dyn TrackRemote>, u32)>>,
    /// Whether the task reading feedback on our video track was started.
    feedback_started: AtomicBool,
    /// Holds packets that come before the connection can take them.
    pub(super) gate: Arc<Gate>,
    /// Whether media is interrupted, and since when.
    pub(super) restore: Mutex<Restore>,
    /// Wakes the restore task when the connection is back.
    pub(super) restored: Notify,
    /// The bitrate this peer's feedback allows for our video.
    pub(super) adapt: Mutex<Estimator>,
    /// What the RTCP watcher saw; taken by the task that reads feedback.
    feedback: Mutex<Option<tokio::sync::mpsc::Receiver<(Instant, Feedback)>>>,
}

impl Drop for PeerShared {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a connection in state `current` may move to `next`: a repeated
/// state is no change, and nothing follows [`PeerState::Closed`].
fn is_change(current: PeerState, next: PeerState) -> bool {
    current != next && current != PeerState::Closed
}

impl PeerShared {
    /// Moves to `next`, and reports the change to `session` if there is
    /// one. Returns whether the state changed. Reported under the state lock,
    /// so that the handler and `close_peer`, racing, cannot report one
    /// user's changes out of order.
    fn set_state(&self, session: Option<&Inner>, next: PeerState) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = *state;
        if !is_change(previous, next) {
            return false;
        }
        *state = next;
        self.connected
            .store(next == PeerState::Connected, Ordering::Release);
        if let Some(session) = session {
            session.emit(MediaEvent::PeerState {
                user: self.remote.clone(),
                previous,
                state: next,
            });
        }
        true
    }

    pub(super) fn pt(&self, kind: MediaKind) -> Option<u8> {
        let slot = match kind {
            MediaKind::Audio => &self.audio_pt,
            MediaKind::Video => &self.video_pt,
        };
        slot.lock().ok().and_then(|g| *g)
    }

    /// The congestion feedback the connection's RTCP watcher collects;
    /// `None` once taken.
    pub(super) fn take_feedback(&self) -> Option<tokio::sync::mpsc::Receiver<(Instant, Feedback)>> {
        self.feedback.lock().ok().and_then(|mut g| g.take())
    }

    /// Whether frames of `kind` can go to this peer now.
    pub(super) fn ready(&self, kind: MediaKind) -> bool {
        self.connected.load(Ordering::Acquire)
            && !self.closed.load(Ordering::Acquire)
            && self.pt(kind).is_some()
    }
}

/// A peer connection with one remote user, and our two tracks on it.
pub(super) struct Peer {
    pub(super) offerer: bool,
    pub(super) pc: Arc<dyn PeerConnection>,
    audio: LocalTrack,
    pub(super) video: LocalTrack,
    pub(super) shared: Arc<PeerShared>,
    pub(super) negotiation: tokio::sync::Mutex<Negotiation>,
}

impl Peer {
    /// Our track of `kind` on this connection.
    pub(super) fn local(&self, kind: MediaKind) -> &LocalTrack {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }

    /// This peer's counters and webrtc-rs's transport figures.
    pub(super) async fn stats(&self) -> PeerStats {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let (mut packets_sent, mut bytes_sent) = (0, 0);
        for o in report.outbound_rtp_streams() {
            packets_sent += o.sent_rtp_stream_stats.packets_sent;
            bytes_sent += o.sent_rtp_stream_stats.bytes_sent;
        }
        let (mut packets_lost, mut jitter) = (0, 0.0f64);
        for i in report.inbound_rtp_streams() {
            packets_lost += i.received_rtp_stream_stats.packets_lost;
            jitter = jitter.max(i.received_rtp_stream_stats.jitter);
        }
        let rtt = report
            .candidate_pairs()
            .filter(|pair| pair.nominated && pair.current_round_trip_time > 0.0)
            .last()
            .map(|pair| Duration::from_secs_f64(pair.current_round_trip_time));
        let selected_pair = selected_pair(&report);
        let s = &self.shared;
        let c = &s.counters;
        let (video_target_bps, video_fraction_lost, video_rtt) = {
            let e = s.adapt.lock().unwrap_or_else(PoisonError::into_inner);
            (e.bitrate_bps(), e.fraction_lost(), e.rtt())
        };
        PeerStats {
            user: s.remote.clone(),
            state: s.state.lock().ok().map(|g| *g),
            packets_sent,
            bytes_sent,
            packets_received: c.packets_received.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            audio_frames_sent: c.audio_frames_sent.load(Ordering::Relaxed),
            video_frames_sent: c.video_frames_sent.load(Ordering::Relaxed),
            audio_frames_received: c.audio_frames_received.load(Ordering::Relaxed),
            video_frames_received: c.video_frames_received.load(Ordering::Relaxed),
            rtt,
            packets_lost,
            jitter,
            selected_pair,
            video_target_bps,
            video_fraction_lost,
            video_rtt,
        }
    }
}

/// The pair the transport selected (or, before the transport names one, the
/// last nominated pair that succeeded), with both candidates' kinds.
fn selected_pair(report: &RTCStatsReport) -> Option<SelectedPair> {
    let named = report
        .transport()
        .map(|t| t.selected_candidate_pair_id.as_str())
        .filter(|id| !id.is_empty());
    let pair = match named {
        Some(id) => report.candidate_pairs().find(|p| p.stats.id == id),
        None => report
            .candidate_pairs()
            .filter(|p| p.nominated && p.state == RTCStatsIceCandidatePairState::Succeeded)
            .last(),
    }?;
    // A pair names its candidates by their ICE ids; their stats entries
    // carry a prefix (webrtc-rs 0.21.1).
    let candidate = |prefix: &str, id: &str| {
        let entry = report
            .get(id)
            .or_else(|| report.get(&format!("{prefix}{id}")))?;
        let (RTCStatsReportEntry::LocalCandidate(c) | RTCStatsReportEntry::RemoteCandidate(c)) =
            entry
        else {
            return None;
        };
        let kind = match c.candidate_type {
            RTCIceCandidateType::Host => CandidateKind::Host,
            RTCIceCandidateType::Srflx => CandidateKind::ServerReflexive,
            RTCIceCandidateType::Prflx => CandidateKind::PeerReflexive,
            RTCIceCandidateType::Relay => CandidateKind::Relay,
            _ => return None,
        };
        let addr = c
            .address
            .as_deref()
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, c.port));
        Some((kind, addr))
    };
    let (local, local_addr) = candidate("RTCLocalIceCandidate_", &pair.local_candidate_id)?;
    // Only candidates the peer signalled have stats: one learnt from the
    // peer's checks is peer-reflexive by definition.
    let (remote, remote_addr) = candidate("RTCRemoteIceCandidate_", &pair.remote_candidate_id)
        .unwrap_or((CandidateKind::PeerReflexive, None));
    Some(SelectedPair {
        local,
        local_addr,
        remote,
        remote_addr,
    })
}

struct Handler {
    shared: Arc<PeerShared>,
    session: Weak<Inner>,
    nudge: Arc<Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        negotiation::on_local_candidate(&self.shared, &self.session, event);
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if matches!(
            state,
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
        ) {
            // DTLS starts now: let the peer's early DTLS in, and make the
            // driver send our first flight at once.
            self.shared.gate.ice_connected();
            self.shared.gate.kick();
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            negotiation::on_gathering_complete(&self.shared, &self.session);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let state = match state {
            RTCPeerConnectionState::New => PeerState::New,
            RTCPeerConnectionState::Connecting => PeerState::Connecting,
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
            RTCPeerConnectionState::Failed => PeerState::Failed,
            RTCPeerConnectionState::Closed => PeerState::Closed,
            _ => return,
        };
        if state == PeerState::Connected {
            // DTLS is done and the SRTP keys are set: media may come in.
            self.shared.gate.connected();
        }
        let session = self.session.upgrade();
        if !self.shared.set_state(session.as_deref(), state) {
            return;
        }
        match state {
            PeerState::Disconnected | PeerState::Failed => {
                restore::interrupted(&self.shared, &self.session);
                return;
            }
            PeerState::Connected => restore::connected(&self.shared, session.as_deref()),
            _ => return,
        }
        self.nudge.notify_one();
        if !self.shared.feedback_started.swap(true, Ordering::AcqRel) {
            if let Some(peer) = session.and_then(|s| s.peer(&self.shared.remote)) {
                tokio::spawn(receive::read_feedback(
                    peer.video.track.clone(),
                    receive::VideoFeedback {
                        pc: Arc::downgrade(&peer.pc),
                        ssrc: peer.video.ssrc,
                    },
                    self.shared.clone(),
                    self.session.clone(),
                ));
            }
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Handlers run inside the driver loop: poll the track elsewhere.
        let shared = self.shared.clone();
        let session = self.session.clone();
        tokio::spawn(receive::receive(track, shared, session));
    }
}

/// Connectivity checks per candidate pair that span `window` at `interval`.
fn binding_attempts(interval: Duration, window: Duration) -> u16 {
    let interval = interval.max(Duration::from_millis(1));
    let n = window.as_micros().div_ceil(interval.as_micros()).max(7);
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// webrtc-rs's default interceptors (NACK both ways, RTCP reports, TWCC
/// feedback), except that the NACK send history keeps `nack_history` packets
/// per video stream instead of 1024: the history is allocated up front, and at
/// 1024 slots it made up a third of an idle peer connection's memory.
///
/// The RTCP reports include receiver reports about every stream we
/// receive (webrtc-rs's `ReceiverReportInterceptor`, one a second), which
/// a sender like us adapts its video to. We ask for REMB (`goog-remb`) too,
/// which Chrome then sends; `feedback` gets what the peer reports about our
/// streams (see the `feedback` module).
fn interceptors(
    engine: &mut MediaEngine,
    nack_history: u16,
    feedback: tokio::sync::mpsc::Sender<(Instant, Feedback)>,
) -> Result<Registry, MediaError> {
    use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder, Slot};
    engine.register_feedback(
        RTCPFeedback {
            typ: "goog-remb".to_owned(),
            parameter: String::new(),
        },
        RtpCodecKind::Video,
    );
    for parameter in ["", "pli"] {
        engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new().with_size(nack_history).build(),
        )
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    configure_simulcast_extension_headers(engine).map_err(MediaError::webrtc)?;
    let registry = configure_twcc_receiver_only(registry, engine).map_err(MediaError::webrtc)?;
    Ok(configure_rtcp_reports(registry)
        .with(
            Slot::from(crate::keyframe::SLOT),
            crate::keyframe::KeyframeRequests::default(),
        )
        .with(
            Slot::from(feedback::SLOT),
            feedback::FeedbackWatch::new(feedback),
        ))
}

/// Whether `servers` name a TURN server (so relay candidates are expected).
pub(super) fn has_turn(servers: &[IceServer]) -> bool {
    servers.iter().flat_map(|s| &s.urls).any(|u| {
        let u = u.to_ascii_lowercase();
        u.starts_with("turn:") || u.starts_with("turns:")
    })
}

impl MediaSession {
    /// The WebRTC configuration of a new connection: our certificate, the
    /// session's current ICE servers and transport policy.
    pub(super) fn rtc_configuration(&self) -> RTCConfiguration {
        self.ice_configuration(
            RTCConfigurationBuilder::default()
                .with_certificates(vec![self.inner.certificate.clone()]),
        )
    }

    /// The configuration an existing connection is updated with before a
    /// restart: ICE servers and policy only (webrtc-rs refuses to be given
    /// certificates again).
    pub(super) fn restart_configuration(&self) -> RTCConfiguration {
        self.ice_configuration(RTCConfigurationBuilder::default())
    }

    fn ice_configuration(&self, mut rtc_config: RTCConfigurationBuilder) -> RTCConfiguration {
        let servers = self.inner.ice_servers();
        if !servers.is_empty() {
            rtc_config = rtc_config.with_ice_servers(
                servers
                    .iter()
                    .map(|s| RTCIceServer {
                        urls: s.urls.clone(),
                        username: s.username.clone(),
                        credential: s.credential.clone(),
                    })
                    .collect(),
            );
        }
        if self.inner.config.relay_only {
            rtc_config = rtc_config.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
        }
        rtc_config.build()
    }

    /// The peer connection with `remote`, created if there is none yet.
    pub(super) async fn ensure_peer(&self, remote: &UserId) -> Result<Arc<Peer>, MediaError> {
        if let Some(p) = self.inner.peer(remote) {
            return Ok(p);
        }
        let _guard = self.inner.creating.lock().await;
        if let Some(p) = self.inner.peer(remote) {
            return Ok(p);
        }
        // Only members get a connection (and our tracks).
        if !self.inner.is_member(remote) {
            return Err(MediaError::UnknownPeer(remote.clone()));
        }
        let peer = Arc::new(self.build_peer(remote).await?);
        if self.inner.closed.load(Ordering::Acquire) {
            let _ = peer.pc.close().await;
            return Err(MediaError::Closed);
        }
        if !self.inner.is_member(remote) {
            // Disconnected while the connection was being built.
            let _ = peer.pc.close().await;
            return Err(MediaError::UnknownPeer(remote.clone()));
        }
        self.inner
            .peer_map_mut()
            .insert(remote.clone(), peer.clone());
        Ok(peer)
    }

    async fn build_peer(&self, remote: &UserId) -> Result<Peer, MediaError> {
        let cfg = &self.inner.config;
        let udp_addrs = interfaces::bind_addrs(&cfg.udp_addrs);
        let mut engine = codec::media_engine(cfg.video_codec)?;
        let (feedback_tx, feedback_rx) = tokio::sync::mpsc::channel(feedback::QUEUE);
        let registry = interceptors(&mut engine, cfg.nack_history, feedback_tx)?;
        let quality = self.inner.quality.lock().map(|q| *q).unwrap_or_default();
        let settings = SettingEngineBuilder::new()
            .with_ice_connection_attempts(
                Some(cfg.ice_check_interval),
                Some(binding_attempts(
                    cfg.ice_check_interval,
                    cfg.ice_check_window,
                )),
            )
            .with_prflx_acceptance_min_wait(Some(cfg.prflx_acceptance_min_wait))
            .with_srflx_acceptance_min_wait(Some(cfg.srflx_acceptance_min_wait))
            .with_relay_acceptance_min_wait(Some(cfg.relay_acceptance_min_wait))
            .with_host_acceptance_min_wait(Some(Duration::ZERO))
            .with_include_loopback_candidate(udp_addrs.iter().any(|a| a.ip().is_loopback()))
            .with_ice_timeouts(
                Some(cfg.ice_disconnected_timeout),
                Some(cfg.ice_failed_timeout),
                Some(cfg.ice_keepalive_interval),
            )
            // A restart rebinds the sockets and gathers anew, so that it
            // follows a changed address or interface instead of checking
            // over the path that just broke.
            .with_discard_local_candidates_during_ice_restart(true)
            .build();
        let rtc_config = self.rtc_configuration();
        let shared = Arc::new(PeerShared {
            remote: remote.clone(),
            state: Mutex::new(PeerState::New),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            audio_pt: Mutex::new(None),
            video_pt: Mutex::new(None),
            video_primed: AtomicBool::new(false),
            awaiting_keyframe: AtomicBool::new(true),
            audio_level_id: AtomicU8::new(0),
            local_candidates: Mutex::new(LocalCandidates::default()),
            counters: Counters::default(),
            live: self.inner.live.clone(),
            remote_video: Mutex::new(None),
            feedback_started: AtomicBool::new(false),
            gate: Arc::new(Gate::default()),
            restore: Mutex::new(Restore::default()),
            restored: Notify::new(),
            adapt: Mutex::new(Estimator::new(quality)),
            feedback: Mutex::new(Some(feedback_rx)),
        });
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        let handler = Arc::new(Handler {
            shared: shared.clone(),
            session: Arc::downgrade(&self.inner),
            nudge: self.inner.video_nudge.clone(),
        });
        let pc = PeerConnectionBuilder::new()
            .with_runtime(Arc::new(GatedRuntime::new(shared.gate.clone())))
            .with_configuration(rtc_config)
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(udp_addrs)
            .build()
            .await
            .map_err(MediaError::webrtc)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let local = &self.inner.local_user;
        // Audio first: the order of the m= sections in our offer.
        let tracks = async {
            let stream = local.as_str();
            let audio =
                LocalTrack::add(pc.as_ref(), stream, MediaKind::Audio, codec::opus_codec()).await?;
            let video = LocalTrack::add(
                pc.as_ref(),
                stream,
                MediaKind::Video,
                codec::video_codec(cfg.video_codec),
            )
            .await?;
            Ok::<_, MediaError>((audio, video))
        }
        .await;
        // A track's transceiver offers only the track's own codec: offer
        // the other video codec too, so that a peer that has only that one
        // can still send us its video.
        let tracks = match tracks {
            Ok((audio, video)) => offer_both_video_codecs(pc.as_ref(), &video, cfg.video_codec)
                .await
                .map(|()| (audio, video)),
            Err(e) => Err(e),
        };
        let (audio, video) = match tracks {
            Ok(t) => t,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        tracing::debug!(%local, %remote, "peer connection created");
        Ok(Peer {
            offerer: is_offerer(local, remote),
            pc,
            audio,
            video,
            shared,
            negotiation: tokio::sync::Mutex::new(Negotiation::default()),
        })
    }
}

/// Sets the codec preferences of `video`'s transceiver to both our video
/// codecs, the sent one first.
async fn offer_both_video_codecs(
    pc: &dyn PeerConnection,
    video: &LocalTrack,
    sent: VideoCodec,
) -> Result<(), MediaError> {
    let id = video.sender().id();
    for transceiver in pc.get_transceivers().await {
        let Ok(Some(sender)) = transceiver.sender().await else {
            continue;
        };
        if sender.id() == id {
            return transceiver
                .set_codec_preferences(codec::video_preferences(sent))
                .await
                .map_err(MediaError::webrtc);
        }
    }
    Err(MediaError::webrtc("the video track has no transceiver"))
}

/// Closes `peer`'s connection and reports it closed, once.
pub(super) async fn close_peer(inner: &Inner, peer: &Peer) {
    peer.shared.closed.store(true, Ordering::Release);
    // Ends a restore under way: a closed connection is no failure.
    peer.shared.restored.notify_one();
    peer.shared.connected.store(false, Ordering::Release);
    if let Err(e) = peer.pc.close().await {
        tracing::debug!(user = %peer.shared.remote, error = %e, "close failed");
    }
    // webrtc-rs may have reported Closed through the handler already.
    peer.shared.set_state(Some(inner), PeerState::Closed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_change_counts_once_and_closed_is_final() {
        use PeerState::*;
        for (from, to) in [
            (New, Connecting),
            (Connecting, Connected),
            (Connected, Disconnected),
            // Restored after a disconnect: a change the app must see.
            (Disconnected, Connected),
            (Disconnected, Failed),
            (Failed, Closed),
            (Connected, Closed),
        ] {
            assert!(is_change(from, to), "{from:?} -> {to:?}");
        }
        for (from, to) in [
            (Connected, Connected),
            (Closed, Closed),
            (Closed, Connecting),
            (Closed, Connected),
        ] {
            assert!(!is_change(from, to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn check_attempts_cover_the_window() {
        let ms = Duration::from_millis;
        assert_eq!(binding_attempts(ms(5), ms(2000)), 400);
        assert_eq!(
            binding_attempts(ms(200), ms(1000)),
            7,
            "never below webrtc-rs's 7"
        );
        assert_eq!(
            binding_attempts(Duration::ZERO, Duration::from_secs(3600)),
            u16::MAX
        );
    }
}
