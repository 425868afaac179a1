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
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;

use super::peer::Peer;
use super::{Inner, MediaSession, codec};
use crate::error::MediaError;
use crate::frame::level_to_volume;
use crate::source;
use crate::types::{Codec, EncodedFrame, MediaEvent, MediaKind, VideoCodec};

/// A local track with a random SSRC in the stream named `stream`.
pub(super) fn local_track(
    stream: &str,
    kind: MediaKind,
    codec: RTCRtpCodec,
) -> Result<(Arc<TrackLocalStaticSample>, u32), MediaError> {
    let ssrc = rand::random::<u32>();
    let (id, kind) = match kind {
        MediaKind::Audio => ("audio", RtpCodecKind::Audio),
        MediaKind::Video => ("video", RtpCodecKind::Video),
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
        for (sender, codec, slot) in [
            (&self.audio_sender, Codec::Opus, &self.shared.audio_pt),
            (
                &self.video_sender,
                video_codec.codec(),
                &self.shared.video_pt,
            ),
        ] {
            let params = match sender.get_parameters().await {
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
                    user: inner.local_user.clone(),
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
