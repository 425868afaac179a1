//! Sending: our two local tracks, the pumps that carry a source's frames to
//! every ready peer, and writing one frame as RTP.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use super::peer::Peer;
use super::{Inner, MediaSession, codec};
use crate::error::MediaError;
use crate::frame::VolumeMeter;
use crate::source;
use crate::types::{Codec, EncodedFrame, MediaEvent, MediaKind, VideoCodec};

/// One of our tracks on a peer connection.
pub(super) struct LocalTrack {
    pub(super) track: Arc<TrackLocalStaticSample>,
    pub(super) ssrc: u32,
    sender: Arc<dyn RtpSender>,
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
        let track = Arc::new(
            TrackLocalStaticSample::new(Instant::now(), track).map_err(MediaError::webrtc)?,
        );
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(MediaError::webrtc)?;
        Ok(LocalTrack {
            track,
            ssrc,
            sender,
        })
    }
}

impl Peer {
    /// Writes one frame to this peer's track of its kind.
    pub(super) async fn send(&self, frame: &EncodedFrame) {
        let kind = frame.kind();
        let Some(pt) = self.shared.pt(kind) else {
            return;
        };
        let sample = Sample {
            data: frame.data.clone(),
            duration: frame.duration,
            ..Sample::new(Instant::now())
        };
        let local = self.local(kind);
        let mut writer = local.track.sample_writer(local.ssrc, pt);
        // Only audio frames carry a level.
        if let Some(level) = frame.audio_level {
            writer = writer.with_audio_level(AudioLevelExtension {
                level: level.min(127),
                voice: level < 127,
            });
        }
        match writer.write_sample(&sample).await {
            Ok(()) => {
                self.shared
                    .counters
                    .frames_sent(kind)
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(user = %self.shared.remote, error = %e, "write_sample failed")
            }
        }
    }

    /// Reads the negotiated payload types off the senders.
    pub(super) async fn resolve_payload_types(&self, video_codec: VideoCodec) {
        for (kind, codec, slot) in [
            (MediaKind::Audio, Codec::Opus, &self.shared.audio_pt),
            (MediaKind::Video, video_codec.codec(), &self.shared.video_pt),
        ] {
            let params = match self.local(kind).sender.get_parameters().await {
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
            if pt.is_none() {
                tracing::warn!(user = %self.shared.remote, ?codec, "codec not negotiated");
            }
        }
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

impl MediaSession {
    /// Runs `running` as the session's audio source.
    pub(super) fn spawn_audio_pump(&self, running: source::Running) -> JoinHandle<()> {
        self.inner
            .runtime
            .spawn(audio_pump(Arc::downgrade(&self.inner), running))
    }

    /// Runs `running` as the session's video source.
    pub(super) fn spawn_video_pump(&self, running: source::Running) -> JoinHandle<()> {
        self.inner.runtime.spawn(video_pump(
            Arc::downgrade(&self.inner),
            self.inner.video_nudge.clone(),
            running,
        ))
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
