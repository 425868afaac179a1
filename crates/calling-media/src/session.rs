//! The media session: one peer connection per remote user (mesh).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder, StatsSelector,
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::error::MediaError;
use crate::frame::{FrameAssembler, level_to_volume};
use crate::sink::FrameSink;
use crate::source::{self, Control};
use crate::types::{
    AudioSource, Codec, EncodedFrame, MediaConfig, MediaEvent, MediaKind, MediaSignal, PeerState,
    PeerStats, VideoCodec, VideoQuality, VideoSource,
};

/// The RFC 6464 client-to-mixer audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PT: u8 = 102;
const VP8_PT: u8 = 96;
const OPUS_PT: u8 = 111;
const MAX_CANDIDATE_LEN: usize = 2048;
const MAX_PENDING_CANDIDATES: usize = 256;

/// Checks that a user id is usable as a peer key and a file name: 1 to 128
/// bytes of ASCII letters, digits, `-`, `_`, `.` or `@`, not starting with `.`.
pub fn validate_user_id(user: &str) -> Result<(), MediaError> {
    let ok = !user.is_empty()
        && user.len() <= 128
        && !user.starts_with('.')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(MediaError::InvalidUserId(user.to_owned()))
    }
}

/// Whether `local` makes the offer to `remote`: the byte-wise lower id does.
pub fn is_offerer(local: &str, remote: &str) -> bool {
    local.as_bytes() < remote.as_bytes()
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
            .field("local_user", &self.inner.config.local_user)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: MediaConfig,
    events: mpsc::UnboundedSender<MediaEvent>,
    peers: RwLock<HashMap<String, Arc<Peer>>>,
    creating: tokio::sync::Mutex<()>,
    sink: RwLock<Option<Arc<dyn FrameSink>>>,
    /// Where our own encoded frames go too (a local preview).
    local_sink: RwLock<Option<Arc<dyn FrameSink>>>,
    mic_muted: AtomicBool,
    camera_on: AtomicBool,
    hands_free: AtomicBool,
    quality: Mutex<VideoQuality>,
    video_control: Mutex<Option<std::sync::mpsc::Sender<Control>>>,
    video_nudge: Arc<Notify>,
    pumps: Mutex<[Option<JoinHandle<()>>; 2]>,
    closed: AtomicBool,
    runtime: tokio::runtime::Handle,
    /// Peer states still allocated; shared with each `PeerShared`.
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl Inner {
    fn emit(&self, ev: MediaEvent) {
        let _ = self.events.send(ev);
    }

    fn peers(&self) -> Vec<Arc<Peer>> {
        match self.peers.read() {
            Ok(p) => p.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        }
    }

    fn peer(&self, user: &str) -> Option<Arc<Peer>> {
        match self.peers.read() {
            Ok(p) => p.get(user).cloned(),
            Err(p) => p.into_inner().get(user).cloned(),
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

#[derive(Default)]
struct Counters {
    packets_received: AtomicU64,
    bytes_received: AtomicU64,
    audio_frames_sent: AtomicU64,
    video_frames_sent: AtomicU64,
    audio_frames_received: AtomicU64,
    video_frames_received: AtomicU64,
}

/// State shared between a peer and its event handler.
struct PeerShared {
    remote: String,
    state: Mutex<PeerState>,
    connected: AtomicBool,
    closed: AtomicBool,
    audio_pt: Mutex<Option<u8>>,
    video_pt: Mutex<Option<u8>>,
    /// Whether this peer got its first video frame (the cached key frame).
    video_primed: AtomicBool,
    /// Send no video until the next key frame (after priming or camera on).
    awaiting_keyframe: AtomicBool,
    /// Negotiated id of the audio level extension on the remote's packets.
    audio_level_id: AtomicU8,
    /// Local candidates are held back until our offer/answer has been emitted,
    /// so the remote always sees the description first.
    local_candidates: Mutex<(bool, Vec<MediaSignal>)>,
    counters: Counters,
    live: Arc<std::sync::atomic::AtomicUsize>,
    /// The remote's video track and SSRC, to send key-frame requests to.
    remote_video: Mutex<Option<(Weak<dyn TrackRemote>, u32)>>,
    /// Whether the task reading feedback on our video track was started.
    feedback_started: AtomicBool,
}

impl Drop for PeerShared {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PeerShared {
    fn pt(&self, kind: MediaKind) -> Option<u8> {
        let slot = match kind {
            MediaKind::Audio => &self.audio_pt,
            MediaKind::Video => &self.video_pt,
        };
        slot.lock().ok().and_then(|g| *g)
    }

    fn ready(&self, kind: MediaKind) -> bool {
        self.connected.load(Ordering::Acquire)
            && !self.closed.load(Ordering::Acquire)
            && self.pt(kind).is_some()
    }
}

#[derive(Default)]
struct Negotiation {
    offered: bool,
    remote_set: bool,
    pending: Vec<RTCIceCandidateInit>,
}

struct Peer {
    offerer: bool,
    pc: Arc<dyn PeerConnection>,
    audio: Arc<TrackLocalStaticSample>,
    audio_ssrc: u32,
    video: Arc<TrackLocalStaticSample>,
    video_ssrc: u32,
    audio_sender: Arc<dyn RtpSender>,
    video_sender: Arc<dyn RtpSender>,
    shared: Arc<PeerShared>,
    negotiation: tokio::sync::Mutex<Negotiation>,
}

impl Peer {
    async fn send(&self, frame: &EncodedFrame) {
        let kind = frame.kind();
        let Some(pt) = self.shared.pt(kind) else {
            return;
        };
        let sample = Sample {
            data: frame.data.clone(),
            duration: frame.duration,
            ..Sample::new(Instant::now())
        };
        let result = match kind {
            MediaKind::Audio => {
                let mut w = self.audio.sample_writer(self.audio_ssrc, pt);
                if let Some(level) = frame.audio_level {
                    w = w.with_audio_level(AudioLevelExtension {
                        level: level.min(127),
                        voice: level < 127,
                    });
                }
                w.write_sample(&sample).await
            }
            MediaKind::Video => {
                self.video
                    .sample_writer(self.video_ssrc, pt)
                    .write_sample(&sample)
                    .await
            }
        };
        match result {
            Ok(()) => {
                let c = match kind {
                    MediaKind::Audio => &self.shared.counters.audio_frames_sent,
                    MediaKind::Video => &self.shared.counters.video_frames_sent,
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(user = %self.shared.remote, error = %e, "write_sample failed")
            }
        }
    }

    /// Reads the negotiated payload types off the senders.
    async fn resolve_payload_types(&self, video_codec: VideoCodec) {
        let video_mime = match video_codec {
            VideoCodec::H264 => MIME_TYPE_H264,
            VideoCodec::Vp8 => MIME_TYPE_VP8,
        };
        for (sender, mime, slot) in [
            (&self.audio_sender, MIME_TYPE_OPUS, &self.shared.audio_pt),
            (&self.video_sender, video_mime, &self.shared.video_pt),
        ] {
            let params = match sender.get_parameters().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "get_parameters failed");
                    continue;
                }
            };
            let pt = params
                .rtp_parameters
                .codecs
                .iter()
                .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                .find(|c| {
                    mime != MIME_TYPE_H264
                        || c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1")
                })
                .map(|c| c.payload_type);
            if let Ok(mut g) = slot.lock() {
                *g = pt;
            }
            if pt.is_none() {
                tracing::warn!(user = %self.shared.remote, mime, "codec not negotiated");
            }
        }
    }
}

struct Handler {
    shared: Arc<PeerShared>,
    session: Weak<Inner>,
    nudge: Arc<Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let init = match event.candidate.to_json() {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(error = %e, "cannot serialize local candidate");
                return;
            }
        };
        let signal = MediaSignal::Candidate {
            candidate: init.candidate,
            sdp_mid: init.sdp_mid,
            sdp_mline_index: init.sdp_mline_index,
            username_fragment: init.username_fragment,
        };
        let Some(session) = self.session.upgrade() else {
            return;
        };
        let Ok(mut held) = self.shared.local_candidates.lock() else {
            return;
        };
        if held.0 {
            session.emit(MediaEvent::Signal {
                to: self.shared.remote.clone(),
                signal,
            });
        } else {
            held.1.push(signal);
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
        self.shared
            .connected
            .store(state == PeerState::Connected, Ordering::Release);
        if let Ok(mut s) = self.shared.state.lock() {
            if *s == state || *s == PeerState::Closed {
                return;
            }
            *s = state;
        }
        if state == PeerState::Connected {
            self.nudge.notify_one();
            if !self.shared.feedback_started.swap(true, Ordering::AcqRel) {
                if let Some(peer) = self
                    .session
                    .upgrade()
                    .and_then(|s| s.peer(&self.shared.remote))
                {
                    tokio::spawn(read_feedback(
                        peer.video.clone(),
                        self.shared.clone(),
                        self.session.clone(),
                    ));
                }
            }
        }
        if let Some(session) = self.session.upgrade() {
            session.emit(MediaEvent::PeerState {
                user: self.shared.remote.clone(),
                state,
            });
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Handlers run inside the driver loop: poll the track elsewhere.
        let shared = self.shared.clone();
        let session = self.session.clone();
        tokio::spawn(receive(track, shared, session));
    }
}

/// Reads the RTCP that webrtc-rs hands up for our video track: key-frame
/// requests from the remote.
async fn read_feedback(
    track: Arc<TrackLocalStaticSample>,
    shared: Arc<PeerShared>,
    session: Weak<Inner>,
) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        if !packets
            .iter()
            .any(|p| crate::keyframe::is_keyframe_request(p.as_ref()))
        {
            continue;
        }
        let Some(inner) = session.upgrade() else {
            break;
        };
        tracing::debug!(user = %shared.remote, "key frame requested");
        inner.request_keyframe();
        inner.emit(MediaEvent::KeyframeRequested {
            user: shared.remote.clone(),
        });
    }
}

fn codec_of(mime: &str) -> Option<Codec> {
    if mime.eq_ignore_ascii_case(MIME_TYPE_OPUS) {
        Some(Codec::Opus)
    } else if mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
        Some(Codec::H264)
    } else if mime.eq_ignore_ascii_case(MIME_TYPE_VP8) {
        Some(Codec::Vp8)
    } else {
        None
    }
}

async fn receive(track: Arc<dyn TrackRemote>, shared: Arc<PeerShared>, session: Weak<Inner>) {
    let kind = match track.kind().await {
        RtpCodecKind::Audio => MediaKind::Audio,
        RtpCodecKind::Video => MediaKind::Video,
        _ => return,
    };
    let user = shared.remote.clone();
    let volume_interval = match session.upgrade() {
        Some(s) => {
            s.emit(MediaEvent::RemoteTrack {
                user: user.clone(),
                kind,
            });
            s.config.volume_interval
        }
        None => return,
    };
    let mut assembler: Option<(FrameAssembler, Codec, u32)> = None;
    let mut first = true;
    // H.264 reaches the app only from a key frame that carries its SPS and
    // PPS: the packets before it (or its parameter sets, if they raced the
    // track's start) would give the app frames no decoder can use.
    let mut decodable = false;
    let mut last_pli: Option<Instant> = None;
    let mut loudest: Option<u8> = None;
    let mut window_start = Instant::now();
    while let Some(event) = track.poll().await {
        let pkt = match event {
            TrackRemoteEvent::OnRtpPacket(p) => p,
            TrackRemoteEvent::OnEnded => break,
            _ => continue,
        };
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        let c = &shared.counters;
        c.packets_received.fetch_add(1, Ordering::Relaxed);
        c.bytes_received
            .fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
        if assembler.is_none() {
            if kind == MediaKind::Video {
                if let Ok(mut rv) = shared.remote_video.lock() {
                    *rv = Some((Arc::downgrade(&track), pkt.header.ssrc));
                }
            }
            let codec = track.codec(pkt.header.ssrc).await;
            match codec.as_ref().and_then(|c| codec_of(&c.mime_type)) {
                Some(fc) => {
                    let rate = codec.map_or(90_000, |c| c.clock_rate.max(1));
                    assembler = Some((FrameAssembler::new(fc), fc, rate));
                }
                None => {
                    tracing::warn!(%user, "remote track with an unsupported codec");
                    continue;
                }
            }
        }
        let mut level = None;
        if kind == MediaKind::Audio {
            let id = shared.audio_level_id.load(Ordering::Relaxed);
            if id != 0 {
                level = pkt
                    .header
                    .get_extension(id)
                    .and_then(|b| b.first().copied())
                    .map(|b| b & 0x7f);
            }
            if let Some(l) = level {
                loudest = Some(loudest.map_or(l, |m: u8| m.min(l)));
            }
            if window_start.elapsed() >= volume_interval {
                window_start = Instant::now();
                if let (Some(l), Some(s)) = (loudest.take(), session.upgrade()) {
                    s.emit(MediaEvent::VoiceVolume {
                        user: user.clone(),
                        volume: level_to_volume(l),
                    });
                }
            }
        }
        let Some((asm, codec, rate)) = assembler.as_mut() else {
            continue;
        };
        let Some((data, ts, gap)) = asm.push(&pkt) else {
            continue;
        };
        let frames = match kind {
            MediaKind::Audio => &c.audio_frames_received,
            MediaKind::Video => &c.video_frames_received,
        };
        frames.fetch_add(1, Ordering::Relaxed);
        let mut frame = EncodedFrame::new(*codec, data, Duration::ZERO);
        frame.duration = gap.map_or(Duration::ZERO, |g| {
            Duration::from_secs_f64(f64::from(g) / f64::from(*rate))
        });
        frame.audio_level = level;
        frame.rtp_timestamp = ts;
        if *codec == Codec::H264 && !decodable {
            let types = crate::frame::h264_nal_types(&frame.data);
            if types.contains(&5) && types.contains(&7) && types.contains(&8) {
                decodable = true;
            } else {
                // Ask the sender for a fresh key frame, at most every 300 ms.
                if last_pli.is_none_or(|t| t.elapsed() >= Duration::from_millis(300)) {
                    last_pli = Some(Instant::now());
                    let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: pkt.header.ssrc,
                    };
                    if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                        tracing::debug!(%user, error = %e, "key frame request failed");
                    }
                }
                continue;
            }
        }
        let Some(s) = session.upgrade() else { break };
        if first {
            first = false;
            s.emit(MediaEvent::FirstFrame {
                user: user.clone(),
                kind,
            });
        }
        if kind == MediaKind::Audio && s.hands_free.load(Ordering::Relaxed) {
            continue;
        }
        let sink = s.sink.read().ok().and_then(|g| g.clone());
        if let Some(sink) = sink {
            sink.on_frame(&user, &frame);
        }
    }
    tracing::debug!(%user, ?kind, "remote track ended");
}

/// Finds the id the remote gave the audio level extension in its SDP.
fn audio_level_id(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=extmap:")?;
        let (id, uri) = rest.split_once(' ')?;
        if uri.split_whitespace().next()? != AUDIO_LEVEL_URI {
            return None;
        }
        id.split('/').next()?.parse::<u8>().ok()
    })
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    })
    .collect()
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: video_feedback(),
    }
}

fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: video_feedback(),
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
fn interceptors(engine: &mut MediaEngine, nack_history: u16) -> Result<Registry, MediaError> {
    use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder, Slot};
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
    Ok(configure_rtcp_reports(registry).with(
        Slot::from(crate::keyframe::SLOT),
        crate::keyframe::KeyframeRequests::default(),
    ))
}

fn local_track(
    stream: &str,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> Result<(Arc<TrackLocalStaticSample>, u32), MediaError> {
    let ssrc = rand::random::<u32>();
    let id = match kind {
        RtpCodecKind::Audio => "audio",
        _ => "video",
    };
    let track = MediaStreamTrack::new(
        stream.to_owned(),
        id.to_owned(),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    let t = TrackLocalStaticSample::new(Instant::now(), track).map_err(MediaError::webrtc)?;
    Ok((Arc::new(t), ssrc))
}

impl MediaSession {
    /// Creates a session. Must be called inside a tokio runtime, which then
    /// runs the session's tasks.
    ///
    /// # Errors
    ///
    /// [`MediaError::InvalidUserId`] if `config.local_user` is not a valid
    /// id, [`MediaError::InvalidConfig`] for a bad setting,
    /// [`MediaError::NoRuntime`] outside a tokio runtime.
    pub async fn new(
        config: MediaConfig,
    ) -> Result<(MediaSession, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        validate_user_id(&config.local_user)?;
        if !config.nack_history.is_power_of_two() {
            return Err(MediaError::InvalidConfig(format!(
                "nack_history {} is not a power of two",
                config.nack_history
            )));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let quality = config.video_quality;
        let inner = Arc::new(Inner {
            config,
            events: tx,
            peers: RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            sink: RwLock::new(None),
            local_sink: RwLock::new(None),
            mic_muted: AtomicBool::new(false),
            camera_on: AtomicBool::new(true),
            hands_free: AtomicBool::new(false),
            quality: Mutex::new(quality),
            video_control: Mutex::new(None),
            video_nudge: Arc::new(Notify::new()),
            pumps: Mutex::new([None, None]),
            closed: AtomicBool::new(false),
            runtime,
            live: Arc::default(),
        });
        Ok((MediaSession { inner }, rx))
    }

    /// Our own user id.
    pub fn local_user(&self) -> &str {
        &self.inner.config.local_user
    }

    /// Users we have a peer connection with.
    pub fn peers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
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

    fn check_remote(&self, remote: &str) -> Result<(), MediaError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(MediaError::Closed);
        }
        validate_user_id(remote)?;
        if remote == self.inner.config.local_user {
            return Err(MediaError::SelfConnect);
        }
        Ok(())
    }

    async fn ensure_peer(&self, remote: &str) -> Result<Arc<Peer>, MediaError> {
        if let Some(p) = self.inner.peer(remote) {
            return Ok(p);
        }
        let _guard = self.inner.creating.lock().await;
        if let Some(p) = self.inner.peer(remote) {
            return Ok(p);
        }
        let peer = Arc::new(self.build_peer(remote).await?);
        if self.inner.closed.load(Ordering::Acquire) {
            let _ = peer.pc.close().await;
            return Err(MediaError::Closed);
        }
        if let Ok(mut map) = self.inner.peers.write() {
            map.insert(remote.to_owned(), peer.clone());
        }
        Ok(peer)
    }

    async fn build_peer(&self, remote: &str) -> Result<Peer, MediaError> {
        let cfg = &self.inner.config;
        let mut engine = MediaEngine::default();
        let (video_first, video_second) = match cfg.video_codec {
            VideoCodec::H264 => ((h264_codec(), H264_PT), (vp8_codec(), VP8_PT)),
            VideoCodec::Vp8 => ((vp8_codec(), VP8_PT), (h264_codec(), H264_PT)),
        };
        engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(),
                    payload_type: OPUS_PT,
                },
                RtpCodecKind::Audio,
            )
            .map_err(MediaError::webrtc)?;
        for (codec, pt) in [video_first, video_second] {
            engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: codec,
                        payload_type: pt,
                    },
                    RtpCodecKind::Video,
                )
                .map_err(MediaError::webrtc)?;
        }
        engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: AUDIO_LEVEL_URI.to_owned(),
                },
                RtpCodecKind::Audio,
                None,
            )
            .map_err(MediaError::webrtc)?;
        let registry = interceptors(&mut engine, cfg.nack_history)?;
        let settings = SettingEngineBuilder::new()
            .with_ice_connection_attempts(
                Some(cfg.ice_check_interval),
                Some(binding_attempts(
                    cfg.ice_check_interval,
                    cfg.ice_check_window,
                )),
            )
            .with_prflx_acceptance_min_wait(Some(cfg.prflx_acceptance_min_wait))
            .with_host_acceptance_min_wait(Some(Duration::ZERO))
            .with_include_loopback_candidate(cfg.udp_addrs.iter().any(|a| a.ip().is_loopback()))
            .build();
        let mut rtc_config = RTCConfigurationBuilder::default();
        if !cfg.ice_servers.is_empty() {
            rtc_config = rtc_config.with_ice_servers(vec![RTCIceServer {
                urls: cfg.ice_servers.clone(),
                ..Default::default()
            }]);
        }
        let shared = Arc::new(PeerShared {
            remote: remote.to_owned(),
            state: Mutex::new(PeerState::New),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            audio_pt: Mutex::new(None),
            video_pt: Mutex::new(None),
            video_primed: AtomicBool::new(false),
            awaiting_keyframe: AtomicBool::new(true),
            audio_level_id: AtomicU8::new(0),
            local_candidates: Mutex::new((false, Vec::new())),
            counters: Counters::default(),
            live: self.inner.live.clone(),
            remote_video: Mutex::new(None),
            feedback_started: AtomicBool::new(false),
        });
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        let handler = Arc::new(Handler {
            shared: shared.clone(),
            session: Arc::downgrade(&self.inner),
            nudge: self.inner.video_nudge.clone(),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(rtc_config.build())
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(cfg.udp_addrs.clone())
            .build()
            .await
            .map_err(MediaError::webrtc)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let local = &cfg.local_user;
        let video_codec = match cfg.video_codec {
            VideoCodec::H264 => h264_codec(),
            VideoCodec::Vp8 => vp8_codec(),
        };
        let built = async {
            let (audio, audio_ssrc) = local_track(local, RtpCodecKind::Audio, opus_codec())?;
            let (video, video_ssrc) = local_track(local, RtpCodecKind::Video, video_codec)?;
            let audio_sender = pc
                .add_track(audio.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(MediaError::webrtc)?;
            let video_sender = pc
                .add_track(video.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(MediaError::webrtc)?;
            Ok::<_, MediaError>((
                audio,
                audio_ssrc,
                video,
                video_ssrc,
                audio_sender,
                video_sender,
            ))
        }
        .await;
        let (audio, audio_ssrc, video, video_ssrc, audio_sender, video_sender) = match built {
            Ok(b) => b,
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
            audio_ssrc,
            video,
            video_ssrc,
            audio_sender,
            video_sender,
            shared,
            negotiation: tokio::sync::Mutex::new(Negotiation::default()),
        })
    }

    /// Emits our description to the remote, then the candidates gathered
    /// while it was being made.
    fn emit_description(&self, peer: &Peer, signal: MediaSignal) {
        let remote = peer.shared.remote.clone();
        let Ok(mut held) = peer.shared.local_candidates.lock() else {
            return;
        };
        self.inner.emit(MediaEvent::Signal {
            to: remote.clone(),
            signal,
        });
        held.0 = true;
        for c in held.1.drain(..) {
            self.inner.emit(MediaEvent::Signal {
                to: remote.clone(),
                signal: c,
            });
        }
    }

    /// Starts media with `remote`. Both sides call this; the side whose user
    /// id is byte-wise lower creates the offer (emitted as a
    /// [`MediaEvent::Signal`]), the other waits for it. Calling it again, or
    /// after the remote's offer already arrived, is harmless.
    ///
    /// # Errors
    ///
    /// [`MediaError::InvalidUserId`], [`MediaError::SelfConnect`],
    /// [`MediaError::Closed`], or [`MediaError::WebRtc`] if the peer
    /// connection cannot be built (e.g. the UDP address cannot be bound).
    pub async fn connect(&self, remote: &str) -> Result<(), MediaError> {
        self.check_remote(remote)?;
        let peer = self.ensure_peer(remote).await?;
        if !peer.offerer {
            return Ok(());
        }
        let mut neg = peer.negotiation.lock().await;
        if neg.offered || neg.remote_set {
            return Ok(());
        }
        let offer = peer
            .pc
            .create_offer(None)
            .await
            .map_err(MediaError::webrtc)?;
        let sdp = offer.sdp.clone();
        peer.pc
            .set_local_description(offer)
            .await
            .map_err(MediaError::webrtc)?;
        neg.offered = true;
        drop(neg);
        self.emit_description(&peer, MediaSignal::Offer { sdp });
        Ok(())
    }

    /// Applies a signal from `from`. An offer may arrive before
    /// [`connect`](Self::connect) and creates the peer connection. An offer
    /// on a connection that already finished its negotiation replaces it
    /// (the offerer disconnected and connected again); to restart media the
    /// other way, both sides disconnect and connect.
    ///
    /// # Errors
    ///
    /// [`MediaError::InvalidSdp`] / [`MediaError::InvalidCandidate`] for
    /// malformed input, [`MediaError::Oversized`], [`MediaError::UnknownPeer`]
    /// for an answer or candidate with no peer connection,
    /// [`MediaError::UnexpectedSignal`] for an answer we did not ask for or an
    /// offer that collides with ours, plus the errors of `connect`. The
    /// session and other peers are unaffected.
    pub async fn handle_signal(&self, from: &str, signal: MediaSignal) -> Result<(), MediaError> {
        self.check_remote(from)?;
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
        }
    }

    fn check_sdp_len(&self, what: &'static str, sdp: &str) -> Result<(), MediaError> {
        let max = self.inner.config.max_sdp_len;
        if sdp.len() > max {
            return Err(MediaError::Oversized {
                what,
                len: sdp.len(),
                max,
            });
        }
        Ok(())
    }

    async fn handle_offer(&self, from: &str, sdp: String) -> Result<(), MediaError> {
        self.check_sdp_len("offer", &sdp)?;
        let invalid = |e: &dyn std::fmt::Display| MediaError::InvalidSdp {
            from: from.to_owned(),
            reason: e.to_string(),
        };
        let level_id = audio_level_id(&sdp);
        let desc = RTCSessionDescription::offer(sdp).map_err(|e| invalid(&e))?;
        let mut peer = self.ensure_peer(from).await?;
        if peer.negotiation.lock().await.remote_set && !peer.offerer {
            // A fresh offer after a finished negotiation means the remote
            // dropped its side and starts over: so do we.
            tracing::debug!(user = %from, "new offer on a negotiated connection; replacing it");
            self.disconnect(from).await;
            peer = self.ensure_peer(from).await?;
        }
        let mut neg = peer.negotiation.lock().await;
        if neg.offered && !neg.remote_set {
            return Err(MediaError::UnexpectedSignal {
                from: from.to_owned(),
                what: "offer",
            });
        }
        peer.pc
            .set_remote_description(desc)
            .await
            .map_err(|e| invalid(&e))?;
        neg.remote_set = true;
        if let Some(id) = level_id {
            peer.shared.audio_level_id.store(id, Ordering::Relaxed);
        }
        self.flush_candidates(&peer, &mut neg).await;
        let answer = peer
            .pc
            .create_answer(None)
            .await
            .map_err(MediaError::webrtc)?;
        let sdp = answer.sdp.clone();
        peer.pc
            .set_local_description(answer)
            .await
            .map_err(MediaError::webrtc)?;
        drop(neg);
        self.emit_description(&peer, MediaSignal::Answer { sdp });
        peer.resolve_payload_types(self.inner.config.video_codec)
            .await;
        self.inner.video_nudge.notify_one();
        Ok(())
    }

    async fn handle_answer(&self, from: &str, sdp: String) -> Result<(), MediaError> {
        self.check_sdp_len("answer", &sdp)?;
        let invalid = |e: &dyn std::fmt::Display| MediaError::InvalidSdp {
            from: from.to_owned(),
            reason: e.to_string(),
        };
        let level_id = audio_level_id(&sdp);
        let desc = RTCSessionDescription::answer(sdp).map_err(|e| invalid(&e))?;
        let peer = self
            .inner
            .peer(from)
            .ok_or_else(|| MediaError::UnknownPeer(from.to_owned()))?;
        let mut neg = peer.negotiation.lock().await;
        if !neg.offered || neg.remote_set {
            return Err(MediaError::UnexpectedSignal {
                from: from.to_owned(),
                what: "answer",
            });
        }
        peer.pc
            .set_remote_description(desc)
            .await
            .map_err(|e| invalid(&e))?;
        neg.remote_set = true;
        if let Some(id) = level_id {
            peer.shared.audio_level_id.store(id, Ordering::Relaxed);
        }
        self.flush_candidates(&peer, &mut neg).await;
        drop(neg);
        peer.resolve_payload_types(self.inner.config.video_codec)
            .await;
        self.inner.video_nudge.notify_one();
        Ok(())
    }

    async fn flush_candidates(&self, peer: &Peer, neg: &mut Negotiation) {
        for c in neg.pending.drain(..) {
            if let Err(e) = peer.pc.add_ice_candidate(c).await {
                tracing::debug!(user = %peer.shared.remote, error = %e, "queued candidate rejected");
            }
        }
    }

    async fn handle_candidate(
        &self,
        from: &str,
        init: RTCIceCandidateInit,
    ) -> Result<(), MediaError> {
        let invalid = |reason: String| MediaError::InvalidCandidate {
            from: from.to_owned(),
            reason,
        };
        if init.candidate.len() > MAX_CANDIDATE_LEN {
            return Err(MediaError::Oversized {
                what: "candidate",
                len: init.candidate.len(),
                max: MAX_CANDIDATE_LEN,
            });
        }
        let peer = self
            .inner
            .peer(from)
            .ok_or_else(|| MediaError::UnknownPeer(from.to_owned()))?;
        // An empty candidate is the end-of-candidates marker.
        if !init.candidate.is_empty() {
            let text = init
                .candidate
                .strip_prefix("candidate:")
                .ok_or_else(|| invalid("does not start with \"candidate:\"".into()))?;
            rtc::ice::candidate::unmarshal_candidate(text).map_err(|e| invalid(e.to_string()))?;
        }
        let mut neg = peer.negotiation.lock().await;
        if !neg.remote_set {
            if neg.pending.len() >= MAX_PENDING_CANDIDATES {
                return Err(MediaError::Oversized {
                    what: "pending candidate list",
                    len: neg.pending.len() + 1,
                    max: MAX_PENDING_CANDIDATES,
                });
            }
            neg.pending.push(init);
            return Ok(());
        }
        peer.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| invalid(e.to_string()))
    }

    /// Closes the peer connection with `remote`, if any, and emits
    /// [`PeerState::Closed`] for it.
    pub async fn disconnect(&self, remote: &str) {
        let peer = match self.inner.peers.write() {
            Ok(mut map) => map.remove(remote),
            Err(_) => None,
        };
        if let Some(peer) = peer {
            close_peer(&self.inner, &peer).await;
        }
    }

    /// Closes every peer connection and stops the sources. The session
    /// refuses further connections.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
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
        let peers: Vec<Arc<Peer>> = match self.inner.peers.write() {
            Ok(mut map) => map.drain().map(|(_, p)| p).collect(),
            Err(_) => Vec::new(),
        };
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

    /// Replaces what feeds our audio track; `None` stops sending audio.
    ///
    /// # Errors
    ///
    /// A file source's [`MediaError::File`] / [`MediaError::MalformedFile`],
    /// [`MediaError::Encoder`], or [`MediaError::Closed`].
    pub fn set_audio_source(&self, src: Option<AudioSource>) -> Result<(), MediaError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(MediaError::Closed);
        }
        let running = src.map(source::start_audio).transpose()?;
        let task = running.map(|running| {
            self.inner
                .runtime
                .spawn(audio_pump(Arc::downgrade(&self.inner), running))
        });
        self.replace_pump(0, task);
        Ok(())
    }

    /// Replaces what feeds our video track; `None` stops sending video.
    ///
    /// # Errors
    ///
    /// [`MediaError::CodecMismatch`] if the source needs the other video
    /// codec, a file source's file errors, [`MediaError::Encoder`], or
    /// [`MediaError::Closed`].
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
        for p in self.inner.peers() {
            p.shared.awaiting_keyframe.store(true, Ordering::Release);
        }
        let task = running.map(|running| {
            self.inner.runtime.spawn(video_pump(
                Arc::downgrade(&self.inner),
                self.inner.video_nudge.clone(),
                running,
            ))
        });
        self.replace_pump(1, task);
        Ok(())
    }

    fn replace_pump(&self, slot: usize, task: Option<JoinHandle<()>>) {
        if let Ok(mut pumps) = self.inner.pumps.lock() {
            if let Some(old) = std::mem::replace(&mut pumps[slot], task) {
                old.abort();
            }
        }
    }

    /// Asks `remote` for a key frame of its video (sends an RTCP PLI), e.g.
    /// after the app's decoder lost its reference.
    ///
    /// # Errors
    ///
    /// [`MediaError::UnknownPeer`], or [`MediaError::NoRemoteVideo`] before
    /// any video from that user arrived.
    pub async fn request_keyframe(&self, remote: &str) -> Result<(), MediaError> {
        let peer = self
            .inner
            .peer(remote)
            .ok_or_else(|| MediaError::UnknownPeer(remote.to_owned()))?;
        let target = peer.shared.remote_video.lock().ok().and_then(|g| g.clone());
        let Some((track, ssrc)) = target.and_then(|(t, ssrc)| t.upgrade().map(|t| (t, ssrc)))
        else {
            return Err(MediaError::NoRemoteVideo(remote.to_owned()));
        };
        let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
            sender_ssrc: peer.video_ssrc,
            media_ssrc: ssrc,
        };
        track
            .write_rtcp(vec![Box::new(pli)])
            .await
            .map_err(MediaError::webrtc)
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

    /// Hands-free (TRTCCalling's `setHandsFree(false)` inverted: mute all
    /// remote audio): remote audio frames stop reaching the frame sink.
    /// Voice volume events keep coming.
    pub fn set_hands_free(&self, on: bool) {
        self.inner.hands_free.store(on, Ordering::Release);
    }

    /// Changes the generated video source's profile, live.
    pub fn set_video_quality(&self, quality: VideoQuality) {
        if let Ok(mut q) = self.inner.quality.lock() {
            *q = quality;
        }
        if let Ok(c) = self.inner.video_control.lock() {
            if let Some(c) = c.as_ref() {
                let _ = c.send(Control::Quality(quality));
            }
        }
    }

    /// Per-peer counters and transport figures.
    pub async fn stats(&self) -> Vec<PeerStats> {
        let mut out = Vec::new();
        for peer in self.inner.peers() {
            let s = &peer.shared;
            let c = &s.counters;
            let mut st = PeerStats {
                user: s.remote.clone(),
                state: s.state.lock().ok().map(|g| *g),
                packets_received: c.packets_received.load(Ordering::Relaxed),
                bytes_received: c.bytes_received.load(Ordering::Relaxed),
                audio_frames_sent: c.audio_frames_sent.load(Ordering::Relaxed),
                video_frames_sent: c.video_frames_sent.load(Ordering::Relaxed),
                audio_frames_received: c.audio_frames_received.load(Ordering::Relaxed),
                video_frames_received: c.video_frames_received.load(Ordering::Relaxed),
                ..PeerStats::default()
            };
            let report = peer.pc.get_stats(Instant::now(), StatsSelector::None).await;
            for o in report.outbound_rtp_streams() {
                st.packets_sent += o.sent_rtp_stream_stats.packets_sent;
                st.bytes_sent += o.sent_rtp_stream_stats.bytes_sent;
            }
            for i in report.inbound_rtp_streams() {
                st.packets_lost += i.received_rtp_stream_stats.packets_lost;
                st.jitter = st.jitter.max(i.received_rtp_stream_stats.jitter);
            }
            for pair in report.candidate_pairs() {
                if pair.nominated && pair.current_round_trip_time > 0.0 {
                    st.rtt = Some(Duration::from_secs_f64(pair.current_round_trip_time));
                }
            }
            out.push(st);
        }
        out.sort_by(|a, b| a.user.cmp(&b.user));
        out
    }
}

async fn close_peer(inner: &Inner, peer: &Peer) {
    peer.shared.closed.store(true, Ordering::Release);
    peer.shared.connected.store(false, Ordering::Release);
    if let Err(e) = peer.pc.close().await {
        tracing::debug!(user = %peer.shared.remote, error = %e, "close failed");
    }
    let changed = match peer.shared.state.lock() {
        Ok(mut s) => {
            let changed = *s != PeerState::Closed;
            *s = PeerState::Closed;
            changed
        }
        Err(_) => false,
    };
    if changed {
        inner.emit(MediaEvent::PeerState {
            user: peer.shared.remote.clone(),
            state: PeerState::Closed,
        });
    }
}

impl Inner {
    fn show_local(&self, frame: &EncodedFrame) {
        let sink = self.local_sink.read().ok().and_then(|g| g.clone());
        if let Some(sink) = sink {
            sink.on_frame(&self.config.local_user, frame);
        }
    }
}

async fn audio_pump(session: Weak<Inner>, mut running: source::Running) {
    let mut loudest: Option<u8> = None;
    let mut window_start = Instant::now();
    while let Some(frame) = running.frames.recv().await {
        let Some(inner) = session.upgrade() else {
            break;
        };
        if frame.codec != Codec::Opus {
            tracing::warn!(codec = ?frame.codec, "audio source gave a non-Opus frame; dropped");
            continue;
        }
        let muted = inner.mic_muted.load(Ordering::Acquire);
        if let Some(l) = frame.audio_level {
            let l = if muted { 127 } else { l };
            loudest = Some(loudest.map_or(l, |m: u8| m.min(l)));
        }
        if window_start.elapsed() >= inner.config.volume_interval {
            window_start = Instant::now();
            if let Some(l) = loudest.take() {
                inner.emit(MediaEvent::VoiceVolume {
                    user: inner.config.local_user.clone(),
                    volume: level_to_volume(l),
                });
            }
        }
        if muted {
            continue;
        }
        inner.show_local(&frame);
        for peer in inner.peers() {
            if peer.shared.ready(MediaKind::Audio) {
                peer.send(&frame).await;
            }
        }
    }
}

async fn video_pump(session: Weak<Inner>, nudge: Arc<Notify>, mut running: source::Running) {
    let mut last_keyframe: Option<EncodedFrame> = None;
    loop {
        let frame = tokio::select! {
            f = running.frames.recv() => match f {
                Some(f) => Some(f),
                None => break,
            },
            () = nudge.notified() => None,
        };
        let Some(inner) = session.upgrade() else {
            break;
        };
        let expected = inner.config.video_codec.codec();
        let camera_on = inner.camera_on.load(Ordering::Acquire);
        let Some(frame) = frame else {
            // A peer became ready: prime it with the last key frame so its
            // first picture does not wait for the source's next one, then
            // ask the source for a fresh key frame to continue from.
            if !camera_on {
                continue;
            }
            let mut primed_any = false;
            for peer in inner.peers() {
                if peer.shared.ready(MediaKind::Video)
                    && !peer.shared.video_primed.swap(true, Ordering::AcqRel)
                {
                    primed_any = true;
                    peer.shared.awaiting_keyframe.store(true, Ordering::Release);
                    if let Some(k) = &last_keyframe {
                        peer.send(k).await;
                    }
                }
            }
            if primed_any {
                inner.request_keyframe();
            }
            continue;
        };
        if frame.codec != expected {
            tracing::warn!(codec = ?frame.codec, ?expected, "video frame in the wrong codec; dropped");
            continue;
        }
        if frame.keyframe {
            last_keyframe = Some(frame.clone());
        }
        if !camera_on {
            continue;
        }
        inner.show_local(&frame);
        for peer in inner.peers() {
            if !peer.shared.ready(MediaKind::Video) {
                continue;
            }
            if peer.shared.awaiting_keyframe.load(Ordering::Acquire) {
                if !frame.keyframe {
                    continue;
                }
                peer.shared
                    .awaiting_keyframe
                    .store(false, Ordering::Release);
            }
            peer.shared.video_primed.store(true, Ordering::Release);
            peer.send(&frame).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_user_id_offers() {
        assert!(is_offerer("alice", "bob"));
        assert!(!is_offerer("bob", "alice"));
        assert!(
            is_offerer("Bob", "alice"),
            "byte-wise: uppercase sorts first"
        );
        assert!(is_offerer("a", "ab"));
    }

    #[test]
    fn user_ids_are_validated() {
        assert!(validate_user_id("alice_01-x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(
                matches!(validate_user_id(bad), Err(MediaError::InvalidUserId(_))),
                "{bad:?}"
            );
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

    #[test]
    fn finds_audio_level_extmap() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=extmap:7/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(audio_level_id(sdp), Some(7));
        assert_eq!(audio_level_id("v=0\r\n"), None);
    }
}
