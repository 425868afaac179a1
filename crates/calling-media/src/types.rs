//! Plain data types shared by the session, the sources and the sinks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use calling_core::UserId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::raw::{EncodedInput, RawAudioInput, RawVideoInput};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// An audio track (Opus).
    Audio,
    /// A video track (H.264 or VP8).
    Video,
}

/// The encoding of one [`EncodedFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// One Opus packet (RFC 6716), 48 kHz clock.
    Opus,
    /// One H.264 access unit as an Annex B byte stream (NAL units behind
    /// `00 00 00 01` start codes), 90 kHz clock.
    H264,
    /// One VP8 frame, 90 kHz clock.
    Vp8,
}

impl Codec {
    /// Whether this codec carries audio or video.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus => MediaKind::Audio,
            Codec::H264 | Codec::Vp8 => MediaKind::Video,
        }
    }
}

/// The video codec a session sends. Every session can receive both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoCodec {
    /// H.264 constrained baseline, packetization mode 1 (what browsers
    /// decode everywhere). Required by the generated test pattern.
    #[default]
    H264,
    /// VP8. Required by an IVF file source.
    Vp8,
}

impl VideoCodec {
    /// The frame codec this video codec produces.
    pub fn codec(self) -> Codec {
        match self {
            VideoCodec::H264 => Codec::H264,
            VideoCodec::Vp8 => Codec::Vp8,
        }
    }
}

/// One encoded media frame, going out or coming in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// How `data` is encoded.
    pub codec: Codec,
    /// The frame: an Opus packet, an H.264 access unit (Annex B) or a VP8 frame.
    pub data: Bytes,
    /// How much media time the frame covers (20 ms for our Opus frames,
    /// 1/fps for video). Received frames carry the gap to the previous
    /// frame's RTP timestamp, or zero for the first.
    pub duration: Duration,
    /// RFC 6464 audio level of an audio frame: 0 (0 dBov, loudest) to
    /// 127 (-127 dBov, silence). Outgoing: `None` means "do not send the
    /// extension". Incoming: the value the sender put on the packet.
    pub audio_level: Option<u8>,
    /// Whether the frame can be decoded on its own (an IDR access unit or a
    /// VP8 key frame). Always `true` for audio.
    pub keyframe: bool,
    /// The RTP timestamp of a received frame; 0 on frames we send.
    pub rtp_timestamp: u32,
}

impl EncodedFrame {
    /// A frame to send, with `keyframe` computed from the data.
    pub fn new(codec: Codec, data: Bytes, duration: Duration) -> Self {
        let keyframe = match codec {
            Codec::Opus => true,
            Codec::H264 => crate::frame::h264_is_keyframe(&data),
            Codec::Vp8 => data.first().is_some_and(|b| b & 0x01 == 0),
        };
        EncodedFrame {
            codec,
            data,
            duration,
            audio_level: None,
            keyframe,
            rtp_timestamp: 0,
        }
    }

    /// Whether the frame is audio or video.
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }
}

/// Video quality profile, applied to the encoder of the test pattern and
/// of raw camera frames (TRTCCalling's `setVideoQuality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VideoQuality {
    /// 640x480, 800 kbit/s.
    #[default]
    P480,
    /// 1280x720, 1.5 Mbit/s.
    P720,
    /// 1920x1080, 3 Mbit/s.
    P1080,
}

impl VideoQuality {
    /// Width and height in pixels.
    pub fn resolution(self) -> (u32, u32) {
        match self {
            VideoQuality::P480 => (640, 480),
            VideoQuality::P720 => (1280, 720),
            VideoQuality::P1080 => (1920, 1080),
        }
    }

    /// Target encoder bitrate in bits per second.
    pub fn bitrate_bps(self) -> u32 {
        match self {
            VideoQuality::P480 => 800_000,
            VideoQuality::P720 => 1_500_000,
            VideoQuality::P1080 => 3_000_000,
        }
    }

    /// Frames per second of the generated test pattern (15, as TRTC's
    /// profiles). The app's own pictures go at the rate it pushes them, up
    /// to [`MAX_FRAME_RATE`](crate::raw::MAX_FRAME_RATE).
    pub fn frame_rate(self) -> u32 {
        15
    }
}

/// How a [`MediaSession`](crate::MediaSession) works: transport, codec and
/// limits. The same for every user of an app, so it holds no user id: that
/// is given to [`MediaSession::new`](crate::MediaSession::new).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Local UDP addresses each peer connection binds (one socket per
    /// address per peer). A wildcard (`0.0.0.0:0`, `[::]:0`) stands for
    /// every usable interface present when the connection is built (and
    /// again at each ICE restart): one host candidate each, loopback and
    /// link-local excluded; a wildcard of a family the host has no such
    /// interface of when the connection is built is left out (rather than
    /// announced as `0.0.0.0` or `::`). A loopback address adds loopback
    /// candidates,
    /// which only a peer on the same host can reach.
    ///
    /// Default: every interface, IPv4 and IPv6 (`0.0.0.0:0`, `[::]:0`):
    /// two machines on one LAN connect with no configuration, and two ends
    /// on one host connect over its own addresses. A host with no usable
    /// interface at all binds `127.0.0.1` instead, so that ends on it
    /// still connect. A loopback socket next to real interfaces is not the
    /// default: it would try (and fail) to send to every remote candidate.
    /// List specific addresses to restrict it (e.g.
    /// [`MediaConfig::loopback`] for tests on one host, or one LAN
    /// address).
    pub udp_addrs: Vec<SocketAddr>,
    /// ICE connectivity-check interval. webrtc-rs defaults to 200 ms, which
    /// dominates call setup; default here 5 ms (setup on loopback: p50 about
    /// 12 ms at 5 ms, 18 ms at 10 ms, 28 ms at 20 ms). Checks stop once a
    /// pair is nominated, so the cost is confined to connection setup.
    pub ice_check_interval: Duration,
    /// How long a candidate pair is checked before it counts as failed.
    /// webrtc-rs counts attempts (7) rather than time, so a short check
    /// interval alone would fail every path whose round trip exceeds 7
    /// intervals (35 ms at 5 ms); the attempt limit is derived from this
    /// window instead. Default 2 s.
    pub ice_check_window: Duration,
    /// How long ICE waits before accepting a peer-reflexive pair. Browsers
    /// answering our offer check before their candidates arrive, which
    /// webrtc-rs would otherwise hold for 1 s. Default zero.
    pub prflx_acceptance_min_wait: Duration,
    /// How long after checks start ICE waits before it accepts a pair
    /// through a NAT mapping (server-reflexive), so that a host pair that
    /// works (one LAN) still wins. webrtc-rs waits 500 ms, which was all
    /// of the setup time behind two NATs; default 50 ms.
    pub srflx_acceptance_min_wait: Duration,
    /// How long after checks start ICE waits before it accepts a relay
    /// pair, so that a direct path answering within it wins (a relay
    /// costs the operator bandwidth and the users latency). webrtc-rs
    /// waits 2 s, which was most of a relayed call's setup and of its
    /// restore after a relay restart; default 250 ms.
    pub relay_acceptance_min_wait: Duration,
    /// STUN/TURN servers ICE gathers server-reflexive and relay candidates
    /// from. Default none (host candidates only).
    pub ice_servers: Vec<IceServer>,
    /// Use relay (TURN) candidates only, never host or server-reflexive
    /// ones: hides our addresses from the peer, and proves a relay path.
    /// Needs a TURN server in `ice_servers`. Default false.
    pub relay_only: bool,
    /// Video codec we send. Default H.264.
    pub video_codec: VideoCodec,
    /// Profile of the test pattern and of raw camera frames. Default 480p.
    pub video_quality: VideoQuality,
    /// Interval between voice-volume events per user. Default 300 ms.
    pub volume_interval: Duration,
    /// Largest SDP accepted from a peer, in bytes. Default 64 KiB.
    pub max_sdp_len: usize,
    /// Sent video packets kept per peer for answering NACKs (a power of two,
    /// 1 to 32768). The buffer is allocated up front per peer; 256 packets
    /// cover about a second of 1080p video. Default 256 (webrtc-rs: 1024).
    pub nack_history: u16,
    /// How long the selected ICE pair may stay silent (no packet, not even
    /// a keepalive answer) before the connection counts as
    /// [`PeerState::Disconnected`] and media as
    /// [`PeerMedia::Interrupted`]; the offering side then restarts ICE at
    /// once. Default 2 s (webrtc-rs: 5 s): together with the restart this
    /// brings media back within about 3 s of a path change; shorter would
    /// call a lossy Wi-Fi second a disconnect and restart for nothing.
    pub ice_disconnected_timeout: Duration,
    /// How long after `ice_disconnected_timeout` webrtc-rs gives up on a
    /// connection by itself ([`PeerState::Failed`]), and how long past the
    /// two a restarted generation may stay checking. Restarts continue
    /// after it; what ends media is `media_restore_timeout`. Default 5 s
    /// (webrtc-rs: 25 s).
    pub ice_failed_timeout: Duration,
    /// How often an idle selected pair is checked (RFC 7675 consent, STUN
    /// binding requests of ~100 bytes). It must be well under
    /// `ice_disconnected_timeout`, which counts silence: at a quarter of
    /// it, a lost packet or two are no disconnect. Default 500 ms
    /// (webrtc-rs: 2 s).
    pub ice_keepalive_interval: Duration,
    /// How long media with a peer may stay interrupted, from the first
    /// [`PeerMedia::Interrupted`], while ICE restarts try to bring it back;
    /// then it is [`PeerMedia::Failed`] and the app (the SDK) ends the call.
    /// Long enough for a Wi-Fi/cellular handover and a few restarts, short
    /// enough that nobody sits in a silent call wondering. Default 15 s.
    pub media_restore_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            udp_addrs: MediaConfig::every_interface(),
            ice_check_interval: Duration::from_millis(5),
            ice_check_window: Duration::from_secs(2),
            prflx_acceptance_min_wait: Duration::ZERO,
            srflx_acceptance_min_wait: Duration::from_millis(50),
            relay_acceptance_min_wait: Duration::from_millis(250),
            ice_servers: Vec::new(),
            relay_only: false,
            video_codec: VideoCodec::H264,
            video_quality: VideoQuality::P480,
            volume_interval: Duration::from_millis(300),
            max_sdp_len: 64 * 1024,
            nack_history: 256,
            ice_disconnected_timeout: Duration::from_secs(2),
            ice_failed_timeout: Duration::from_secs(5),
            ice_keepalive_interval: Duration::from_millis(500),
            media_restore_timeout: Duration::from_secs(15),
        }
    }
}

impl MediaConfig {
    /// The default configuration bound to `127.0.0.1` only: host
    /// candidates that never leave the machine, for tests and demos whose
    /// ends all run on one host.
    pub fn loopback() -> Self {
        MediaConfig {
            udp_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..MediaConfig::default()
        }
    }

    /// The default `udp_addrs`: every IPv4 and IPv6 interface.
    pub fn every_interface() -> Vec<SocketAddr> {
        vec![
            SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::from(([0u16; 8], 0)),
        ]
    }
}

/// One STUN or TURN server, as the browser's `RTCIceServer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, ... all sharing
    /// the credentials below.
    pub urls: Vec<String>,
    /// TURN username (empty for STUN).
    pub username: String,
    /// TURN password (empty for STUN).
    pub credential: String,
}

impl IceServer {
    /// A STUN server, or a TURN server without credentials.
    pub fn stun(url: impl Into<String>) -> Self {
        IceServer {
            urls: vec![url.into()],
            ..Default::default()
        }
    }
}

/// What the video encoder aims at: set from the receivers' feedback
/// (bandwidth estimate, loss) so a call keeps flowing over a poor link.
/// Never above the session's [`VideoQuality`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTarget {
    /// Encoder bitrate in bits per second.
    pub bitrate_bps: u32,
    /// Frames per second at most.
    pub frame_rate: u32,
    /// Picture height at most, in pixels (width follows the aspect ratio).
    pub max_height: u32,
}

impl VideoTarget {
    /// The full profile: no adaptation. Its frame rate is the most any
    /// source sends ([`MAX_FRAME_RATE`](crate::raw::MAX_FRAME_RATE)); the
    /// test pattern keeps to its profile's lower rate under it.
    pub fn of(quality: VideoQuality) -> Self {
        VideoTarget {
            bitrate_bps: quality.bitrate_bps(),
            frame_rate: crate::raw::MAX_FRAME_RATE,
            max_height: quality.resolution().1,
        }
    }
}

/// What feeds our outgoing audio track.
#[derive(Debug)]
pub enum AudioSource {
    /// A generated sine tone, Opus-encoded in 20 ms frames, with the RFC 6464
    /// level computed from the PCM. `amplitude` 0.0 gives digital silence.
    Tone {
        /// Tone frequency in hertz.
        frequency_hz: f32,
        /// Peak amplitude, 0.0..=1.0 of full scale.
        amplitude: f32,
    },
    /// An Ogg/Opus file, one Opus packet per page (as [`OggOpusWriter`](crate::files::OggOpusWriter) writes).
    OggFile {
        /// The file.
        path: PathBuf,
        /// Start again at the end instead of stopping.
        looped: bool,
    },
    /// Frames the app encodes itself. Each must be [`Codec::Opus`].
    Frames(mpsc::Receiver<EncodedFrame>),
    /// The app's own microphone: 48 kHz PCM pushed through the input, in
    /// chunks of any length, mono or stereo. Mixed down to mono and sent
    /// as 20 ms mono Opus frames (32 kbit/s) with the RFC 6464 level of the
    /// samples; paced by the pushes, as a capture device delivers in real
    /// time. The input queues about 1.3 s of 10 ms chunks (128), so that
    /// nothing is lost while the encoder is briefly held up. The source
    /// attaches to the input when it is set and detaches when it is
    /// replaced or the session closes; the input outlives the call.
    Raw(RawAudioInput),
    /// Opus frames the app encodes itself, pushed through the input (which
    /// queues 128). Frames of another codec are dropped with a warning.
    Encoded(EncodedInput),
}

/// What feeds our outgoing video track.
#[derive(Debug)]
pub enum VideoSource {
    /// A moving test pattern encoded with OpenH264 at the session's
    /// [`VideoQuality`]. Needs [`VideoCodec::H264`].
    TestPattern,
    /// An H.264 Annex B file, sent one access unit per frame at `fps`.
    /// Needs [`VideoCodec::H264`].
    H264File {
        /// The file.
        path: PathBuf,
        /// Frames per second to pace the file at.
        fps: u32,
        /// Start again at the end instead of stopping.
        looped: bool,
    },
    /// A VP8 IVF file, paced by its header's time base. Needs [`VideoCodec::Vp8`].
    IvfFile {
        /// The file.
        path: PathBuf,
        /// Start again at the end instead of stopping.
        looped: bool,
    },
    /// Frames the app encodes itself, in the session's video codec.
    Frames(mpsc::Receiver<EncodedFrame>),
    /// The app's own camera: raw frames (I420, NV12, RGBA or BGRA) pushed
    /// through the input, converted to I420 (BT.601 limited range), scaled
    /// down to fit the session's [`VideoQuality`] (aspect ratio kept, never
    /// upscaled; a portrait frame fits the profile turned to portrait) and
    /// H.264-encoded, like the test pattern: needs [`VideoCodec::H264`].
    /// Key-frame requests, [`MediaSession::set_video_quality`] and the
    /// congestion controller's [`VideoTarget`] (bitrate, frame rate by
    /// skipping frames, size; for a portrait frame `max_height` limits the
    /// shorter side, its width) apply. Frames go at the rate they are pushed,
    /// up to [`MAX_FRAME_RATE`](crate::raw::MAX_FRAME_RATE) (30 fps): a
    /// 60 fps camera has every other frame skipped. RTP time follows the frames' capture timestamps (each
    /// frame's duration is the gap to the frame before it, 1 to 200 ms).
    ///
    /// The input queues 3 frames: while the encoder is behind, a push says
    /// [`PushError::Full`] and the frame is dropped, so the call never runs
    /// late. The source attaches when it is set and detaches when it is
    /// replaced or the session closes; the input outlives the call.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use calling_media::{MediaSession, PixelFormat, RawVideoInput, VideoFrame, VideoSource};
    ///
    /// # fn run(session: &MediaSession) -> Result<(), Box<dyn std::error::Error>> {
    /// let camera = RawVideoInput::new();
    /// session.set_video_source(Some(VideoSource::Raw(camera.clone())))?;
    /// // In the capture callback, for each frame:
    /// let rgba = vec![0u8; 1280 * 720 * 4];
    /// let frame = VideoFrame::new(PixelFormat::Rgba, 1280, 720, rgba, Duration::from_millis(33))?;
    /// // Full or NotSending: this frame is dropped, the call goes on.
    /// let _ = camera.push(frame);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`MediaSession::set_video_quality`]: crate::MediaSession::set_video_quality
    /// [`PushError::Full`]: crate::PushError::Full
    Raw(RawVideoInput),
    /// Frames the app encodes itself, in the session's video codec, pushed
    /// through the input (which queues 16: after a refused push, send a key
    /// frame). Frames of another codec are dropped with a warning.
    Encoded(EncodedInput),
}

/// The state of the peer connection with one remote user, following the
/// WebRTC connection state. [`MediaEvent::PeerState`] reports each change
/// with the state it left, so a single event tells, for example, a first
/// connection (`Connecting` to `Connected`) from one restored after a
/// disconnect (`Disconnected` to `Connected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Created, nothing exchanged yet: the state every connection starts
    /// in, so it appears as the `previous` of the first change and in
    /// [`PeerStats::state`], not normally as a new state.
    New,
    /// ICE connectivity checks or the DTLS handshake are under way; no media
    /// flows yet. The first change a connection reports.
    Connecting,
    /// Media can flow both ways. After `Connecting`, the connection is up
    /// for the first time or again after an ICE restart; after
    /// `Disconnected`, it was restored on its own, with no new negotiation.
    Connected,
    /// Connectivity was lost (ICE checks go unanswered) and no media flows.
    /// It may come back by itself (to `Connected`) or give up (to `Failed`).
    Disconnected,
    /// ICE or DTLS failed; the connection does not recover by itself.
    /// The offering side restarts ICE on the same connection (see
    /// [`PeerMedia`]), which moves it back to `Connecting`.
    Failed,
    /// Closed, and final for this connection: by
    /// [`MediaSession::disconnect`](crate::MediaSession::disconnect) or
    /// [`close`](crate::MediaSession::close), or because the remote sent a
    /// fresh offer, in which case a new connection to the same user follows
    /// with its own `New` to `Connecting`.
    Closed,
}

/// Whether media with one peer flows, as [`MediaEvent::PeerMedia`]
/// reports it: the view above [`PeerState`], across ICE restarts. Each side
/// decides by itself (the other may be unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerMedia {
    /// The connection went [`PeerState::Disconnected`] or
    /// [`PeerState::Failed`]: no media flows. The offering side restarts
    /// ICE (again, with backoff) until it is restored or
    /// [`MediaConfig::media_restore_timeout`] runs out.
    Interrupted,
    /// The connection is [`PeerState::Connected`] again after
    /// `Interrupted`: media flows on the same connection and tracks.
    Restored,
    /// Not restored within [`MediaConfig::media_restore_timeout`]: no more
    /// restarts; media with this peer is over until it is disconnected and
    /// connected again.
    Failed,
}

/// Media negotiation messages between two sessions. The facade carries them
/// inside the call layer; serialized as JSON with a `type` tag
/// (`{"type":"offer","sdp":"v=0..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaSignal {
    /// An SDP offer (RFC 8829), sent by the party whose user id is byte-wise lower.
    Offer {
        /// The full SDP text.
        sdp: String,
    },
    /// The SDP answer to an offer.
    Answer {
        /// The full SDP text.
        sdp: String,
    },
    /// One trickled ICE candidate (RFC 8838), as a browser's `RTCIceCandidateInit`.
    Candidate {
        /// The candidate attribute, e.g. `candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host`.
        candidate: String,
        /// The `a=mid` of the media section it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// The index of that media section.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mline_index: Option<u16>,
        /// The ICE username fragment of the generation it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username_fragment: Option<String>,
    },
    /// "Restart ICE, please": sent by the answering side (the higher id)
    /// while its media is interrupted, since only the offerer restarts. A
    /// path can break one way only (our packets no longer reach the
    /// offerer while its still reach us); the offerer then sees nothing
    /// wrong and would never restart on its own.
    Restart,
}

/// What a session reports to the app (and the facade).
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Send `signal` to user `to` over the call layer.
    Signal {
        /// The remote user.
        to: UserId,
        /// The message.
        signal: MediaSignal,
    },
    /// The peer connection with `user` changed state. Reported once per
    /// change, in the order of the changes; never after
    /// [`PeerState::Closed`] for the same connection.
    PeerState {
        /// The remote user.
        user: UserId,
        /// The state it left.
        previous: PeerState,
        /// Its new state.
        state: PeerState,
    },
    /// The remote's first RTP packet of a track arrived.
    RemoteTrack {
        /// The remote user.
        user: UserId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// The first complete frame of a remote track was assembled.
    FirstFrame {
        /// The remote user.
        user: UserId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// Negotiation with `user` left no codec of `kind` that we send (a
    /// VP8-only peer: we send H.264 video): `user` gets no `kind` from us,
    /// while what it sends still arrives. Reported once per negotiation.
    NoCommonCodec {
        /// The remote user.
        user: UserId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// Our own source of `kind` stopped because it failed after it was set
    /// (e.g. the test pattern's encoder could not be built, which is
    /// created on the source's thread so that starting never waits on it).
    SourceFailed {
        /// Audio or video.
        kind: MediaKind,
        /// What went wrong.
        error: String,
    },
    /// A remote asked for a key frame (RTCP PLI or FIR), e.g. after loss.
    /// The test pattern and raw camera frames answer by themselves; an app
    /// feeding its own encoded video frames should send a key frame next.
    KeyframeRequested {
        /// The remote user.
        user: UserId,
    },
    /// Media with `user` was interrupted, restored, or failed for good
    /// (see [`PeerMedia`]). Reported on each change, after the
    /// [`MediaEvent::PeerState`] that caused it.
    PeerMedia {
        /// The remote user.
        user: UserId,
        /// What happened to the media.
        state: PeerMedia,
    },
    /// ICE gathering for the connection with `user` completed with a TURN
    /// server configured but no relay candidate: the TURN server refused
    /// our allocation (e.g. its shared secret does not match the one the
    /// credentials were made with: a 401) or did not answer. With
    /// `relay_only` the connection cannot come up at all; otherwise it goes
    /// on over host and server-reflexive candidates, without a relay to
    /// fall back on. Reported once per connection (ICE restarts gather
    /// again, and are not reported again).
    NoRelayCandidates {
        /// The remote user.
        user: UserId,
        /// Whether [`MediaConfig::relay_only`] is set.
        relay_only: bool,
    },
    /// The target our video encoder aims at changed (congestion control):
    /// the receivers' RTCP feedback (loss, round-trip time, REMB) showed the
    /// link cannot carry the profile, or can carry more again. One encoder
    /// feeds every peer, so this is the lowest of the peers' estimates,
    /// never above the session's [`VideoQuality`]; reported when it moves by
    /// 10 % or more (or changes rung), at most about twice a second.
    /// [`MediaSession::set_video_quality`](crate::MediaSession::set_video_quality)
    /// starts it again from the new profile.
    VideoTarget {
        /// What the encoder now aims at.
        target: VideoTarget,
    },
    /// Voice volume of a user, 0..=100, about every
    /// [`MediaConfig::volume_interval`]. Remote users: from the RFC 6464
    /// level on their packets. Our own user id: from the PCM we encode.
    VoiceVolume {
        /// The user (remote, or our own id).
        user: UserId,
        /// 0 (silence) to 100 (full scale).
        volume: u8,
    },
}

/// Counters and transport figures of one peer connection.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStats {
    /// The remote user.
    pub user: UserId,
    /// Current state.
    pub state: Option<PeerState>,
    /// RTP packets sent, all tracks.
    pub packets_sent: u64,
    /// RTP payload bytes sent, all tracks.
    pub bytes_sent: u64,
    /// RTP packets received, all tracks.
    pub packets_received: u64,
    /// RTP payload bytes received, all tracks.
    pub bytes_received: u64,
    /// Audio frames sent.
    pub audio_frames_sent: u64,
    /// Video frames sent.
    pub video_frames_sent: u64,
    /// Complete audio frames received.
    pub audio_frames_received: u64,
    /// Complete video frames received.
    pub video_frames_received: u64,
    /// Round-trip time on the selected ICE pair, if measured yet.
    pub rtt: Option<Duration>,
    /// Packets lost on the inbound streams (from sequence numbers).
    pub packets_lost: i64,
    /// Largest inbound interarrival jitter, in seconds.
    pub jitter: f64,
    /// The candidate pair ICE selected, once it has one.
    pub selected_pair: Option<SelectedPair>,
    /// The video bitrate this peer's feedback allows, in bits per second
    /// (the session's encoder follows the lowest over all peers; see
    /// [`MediaEvent::VideoTarget`]). The profile's bitrate until feedback
    /// says otherwise.
    pub video_target_bps: u32,
    /// The share of our video packets this peer lost, 0.0..=1.0, as our
    /// congestion control reckons it: the larger of the last RTCP receiver
    /// report's fraction lost and the share of sent packets the peer asked
    /// to have resent (NACK) over the last few seconds. `None` before the
    /// first report.
    pub video_fraction_lost: Option<f64>,
    /// Round-trip time measured from the peer's receiver reports about our
    /// video (RFC 3550 LSR/DLSR), if measured yet.
    pub video_rtt: Option<Duration>,
}

/// How an ICE candidate's address was obtained (RFC 8445, section 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateKind {
    /// An address of one of the host's interfaces.
    Host,
    /// The address a NAT maps us to, learnt from a STUN server.
    ServerReflexive,
    /// The address a NAT maps a peer to, learnt from its checks.
    PeerReflexive,
    /// An address on a TURN relay.
    Relay,
}

impl CandidateKind {
    /// The SDP name: `host`, `srflx`, `prflx` or `relay`.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relay => "relay",
        }
    }
}

/// The candidate pair media flows over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectedPair {
    /// How our candidate was obtained.
    pub local: CandidateKind,
    /// Our candidate's address (on the relay for a relay candidate).
    pub local_addr: Option<SocketAddr>,
    /// How the peer's candidate was obtained.
    pub remote: CandidateKind,
    /// The peer's candidate's address.
    pub remote_addr: Option<SocketAddr>,
}

impl SelectedPair {
    /// The kind of path: `Relay` when either end is relayed, else
    /// `ServerReflexive` or `PeerReflexive` when either end is behind a
    /// NAT mapping (server-reflexive first), else `Host`.
    pub fn path(&self) -> CandidateKind {
        let both = [self.local, self.remote];
        [
            CandidateKind::Relay,
            CandidateKind::ServerReflexive,
            CandidateKind::PeerReflexive,
        ]
        .into_iter()
        .find(|k| both.contains(k))
        .unwrap_or(CandidateKind::Host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_have_the_documented_json_shape() {
        assert_eq!(
            serde_json::to_string(&MediaSignal::Restart).unwrap(),
            r#"{"type":"restart"}"#
        );
        assert_eq!(
            serde_json::from_str::<MediaSignal>(r#"{"type":"restart"}"#).unwrap(),
            MediaSignal::Restart
        );
        let offer = MediaSignal::Offer { sdp: "v=0".into() };
        assert_eq!(
            serde_json::to_string(&offer).unwrap(),
            r#"{"type":"offer","sdp":"v=0"}"#
        );
        let cand = MediaSignal::Candidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: None,
            username_fragment: None,
        };
        assert_eq!(
            serde_json::to_string(&cand).unwrap(),
            r#"{"type":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdp_mid":"0"}"#
        );
        let back: MediaSignal = serde_json::from_str(
            r#"{"type":"candidate","candidate":"","sdp_mline_index":0,"username_fragment":"u"}"#,
        )
        .unwrap();
        assert_eq!(
            back,
            MediaSignal::Candidate {
                candidate: String::new(),
                sdp_mid: None,
                sdp_mline_index: Some(0),
                username_fragment: Some("u".into()),
            }
        );
        assert!(serde_json::from_str::<MediaSignal>(r#"{"type":"bye"}"#).is_err());
    }

    #[test]
    fn quality_profiles_map_to_resolution_and_bitrate() {
        assert_eq!(VideoQuality::P480.resolution(), (640, 480));
        assert_eq!(VideoQuality::P720.resolution(), (1280, 720));
        assert_eq!(VideoQuality::P1080.resolution(), (1920, 1080));
        assert!(VideoQuality::P480.bitrate_bps() < VideoQuality::P720.bitrate_bps());
        assert!(VideoQuality::P720.bitrate_bps() < VideoQuality::P1080.bitrate_bps());
    }
}
