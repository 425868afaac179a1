//! Sending: our two local tracks, the pumps that carry a source's frames to
//! every ready peer, and writing one frame as RTP.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::packet::Packet;
use rtc::rtp::packetizer::{Packetizer, new_packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::peer::Peer;
use super::{Inner, MediaSession, codec};
use crate::error::MediaError;
use crate::frame::VolumeMeter;
use crate::source;
use crate::types::{Codec, EncodedFrame, MediaEvent, MediaKind, VideoCodec};

/// Largest RTP packet we build, as webrtc-rs's sample track does.
const RTP_MTU: usize = 1200;

/// One of our tracks on a peer connection. We packetize frames ourselves
/// rather than through webrtc-rs's sample track: that track reads header
/// extension ids from the parameters it was bound with when the track was
/// added, before any negotiation, so an answer to a peer that maps the audio
/// level extension to another id (aiortc: 2) had every packet refused
/// ("extension not found"). Here the id comes from the negotiated sender.
pub(super) struct LocalTrack {
    pub(super) track: Arc<TrackLocalStaticRTP>,
    pub(super) ssrc: u32,
    sender: Arc<dyn RtpSender>,
    packetizer: Mutex<Box<dyn Packetizer>>,
    clock_rate: u32,
    /// The negotiated id of the audio level extension on this sender, 0
    /// when it is not negotiated (then no level is written).
    level_id: AtomicU8,
}

impl LocalTrack {
    /// Adds a track of `kind` with a random SSRC, in the stream named
    /// `stream`, to `pc`.
    pub(super) async fn add(
        pc: &dyn PeerConnection,
        stream: &str,
        kind: MediaKind,
        codec: RTCRtpCodec,
    ) -> Result<Self, MediaError> {
        let ssrc = rand::random::<u32>();
        let (id, rtp_kind) = match kind {
            MediaKind::Audio => ("audio", RtpCodecKind::Audio),
            MediaKind::Video => ("video", RtpCodecKind::Video),
        };
        let payloader = codec.payloader().map_err(MediaError::webrtc)?;
        let clock_rate = codec.clock_rate;
        let packetizer: Box<dyn Packetizer> = Box::new(new_packetizer(
            Instant::now(),
            RTP_MTU,
            0, // set per packet: the negotiated payload type
            ssrc,
            payloader,
            Box::new(new_random_sequencer()),
            clock_rate,
        ));
        let track = MediaStreamTrack::new(
            stream.to_owned(),
            id.to_owned(),
            id.to_owned(),
            rtp_kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        let track = Arc::new(TrackLocalStaticRTP::new(track));
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(MediaError::webrtc)?;
        Ok(LocalTrack {
            track,
            ssrc,
            sender,
            packetizer: Mutex::new(packetizer),
            clock_rate,
            level_id: AtomicU8::new(0),
        })
    }

    /// The sender of this track on its connection.
    pub(super) fn sender(&self) -> &Arc<dyn RtpSender> {
        &self.sender
    }

    /// Cuts `frame` into RTP packets with payload type `pt`, each carrying
    /// the frame's audio level under the negotiated id.
    fn packetize(&self, frame: &EncodedFrame, pt: u8) -> Result<Vec<Packet>, MediaError> {
        let samples = (frame.duration.as_secs_f64() * f64::from(self.clock_rate)) as u32;
        let mut packets = self
            .packetizer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .packetize(Instant::now(), &frame.data, samples)
            .map_err(MediaError::webrtc)?;
        let level_id = self.level_id.load(Ordering::Relaxed);
        for packet in &mut packets {
            packet.header.payload_type = pt;
            if let (Some(level), 1..=14) = (frame.audio_level, level_id) {
                packet
                    .header
                    .set_extension(level_id, audio_level_bytes(level))
                    .map_err(MediaError::webrtc)?;
            }
        }
        Ok(packets)
    }
}

/// The RFC 6464 one-byte payload: the voice flag, then the level in -dBov
/// (0 loudest, 127 silence).
fn audio_level_bytes(level: u8) -> Bytes {
    let level = level.min(127);
    let voice = if level < 127 { 0x80 } else { 0 };
    Bytes::copy_from_slice(&[voice | level])
}

impl Peer {
    /// Writes one frame to this peer's track of its kind.
    pub(super) async fn send(&self, frame: &EncodedFrame) {
        let kind = frame.kind();
        let Some(pt) = self.shared.pt(kind) else {
            return;
        };
        let local = self.local(kind);
        let packets = match local.packetize(frame, pt) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(user = %self.shared.remote, error = %e, "packetizing failed");
                return;
            }
        };
        for packet in packets {
            if let Err(e) = local.track.write_rtp(packet).await {
                tracing::debug!(user = %self.shared.remote, error = %e, "write_rtp failed");
                return;
            }
        }
        self.shared
            .counters
            .frames_sent(kind)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the negotiated payload types and audio level extension id off
    /// the senders. Returns the kinds for which no codec we send was
    /// negotiated.
    pub(super) async fn resolve_payload_types(&self, video_codec: VideoCodec) -> Vec<MediaKind> {
        let mut missing = Vec::new();
        for (kind, codec, slot) in [
            (MediaKind::Audio, Codec::Opus, &self.shared.audio_pt),
            (MediaKind::Video, video_codec.codec(), &self.shared.video_pt),
        ] {
            let local = self.local(kind);
            let params = match local.sender.get_parameters().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "get_parameters failed");
                    continue;
                }
            };
            let pt = codec::payload_type(&params.rtp_parameters.codecs, codec);
            if let Ok(mut g) = slot.lock() {
                *g = pt;
            }
            if kind == MediaKind::Audio {
                let id = codec::audio_level_id(&params.rtp_parameters.header_extensions);
                local.level_id.store(id.unwrap_or(0), Ordering::Relaxed);
            }
            if pt.is_none() {
                tracing::warn!(user = %self.shared.remote, ?codec, "codec not negotiated");
                missing.push(kind);
            }
        }
        missing
    }
}

impl Inner {
    /// Hands one of our own outgoing frames to the local preview sink.
    fn show_local(&self, frame: &EncodedFrame) {
        let sink = self.local_sink.read().ok().and_then(|g| g.clone());
        if let Some(sink) = sink {
            sink.on_frame(&self.local_user, frame);
        }
    }
}

/// A running source's pump task, with the session's share of the
/// source's hold on the app's input: dropping the pump detaches the input
/// at once (the task itself ends a moment later).
pub(super) struct Pump {
    task: JoinHandle<()>,
    input: source::InputHold,
}

impl Pump {
    /// Stops the pump task.
    pub(super) fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
        source::release(&self.input);
    }
}

impl MediaSession {
    /// Runs `running` as the session's audio source.
    pub(super) fn spawn_audio_pump(&self, running: source::Running) -> Pump {
        let input = running.input.clone();
        let task = self
            .inner
            .runtime
            .spawn(audio_pump(Arc::downgrade(&self.inner), running));
        Pump { task, input }
    }

    /// Runs `running` as the session's video source.
    pub(super) fn spawn_video_pump(&self, running: source::Running) -> Pump {
        let input = running.input.clone();
        let task = self.inner.runtime.spawn(video_pump(
            Arc::downgrade(&self.inner),
            self.inner.video_nudge.clone(),
            running,
        ));
        Pump { task, input }
    }
}

/// Tells the app that a source stopped by itself because it failed.
fn report_failure(session: &Weak<Inner>, kind: MediaKind, running: &source::Running) {
    let failure = running.failure.lock().ok().and_then(|mut f| f.take());
    if let (Some(error), Some(inner)) = (failure, session.upgrade()) {
        inner.emit(MediaEvent::SourceFailed {
            kind,
            error: error.to_string(),
        });
    }
}

async fn audio_pump(session: Weak<Inner>, mut running: source::Running) {
    let mut meter: Option<VolumeMeter> = None;
    while let Some(frame) = running.frames.recv().await {
        let Some(inner) = session.upgrade() else {
            break;
        };
        if frame.codec != Codec::Opus {
            tracing::warn!(codec = ?frame.codec, "audio source gave a non-Opus frame; dropped");
            continue;
        }
        let muted = inner.mic_muted.load(Ordering::Acquire);
        let meter = meter.get_or_insert_with(|| VolumeMeter::new(inner.config.volume_interval));
        // Muted, we are silent to the others, so report silence.
        let level = frame.audio_level.map(|l| if muted { 127 } else { l });
        if let Some(volume) = meter.observe(level) {
            inner.emit(MediaEvent::VoiceVolume {
                user: inner.local_user.clone(),
                volume,
            });
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
    report_failure(&session, MediaKind::Audio, &running);
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
    report_failure(&session, MediaKind::Video, &running);
}
