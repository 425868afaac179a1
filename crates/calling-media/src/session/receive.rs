//! Receiving: reading a remote track, reassembling its packets into frames
//! for the sink, the remote's voice volume, and RTCP feedback both ways
//! (key-frame requests to and from the remote, and what the remote reports
//! about our video for congestion control).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, StatsSelector};

use super::adapt::Feedback;
use super::decode::TrackDecoding;
use super::peer::{Peer, PeerShared};
use super::{Inner, codec};
use crate::error::MediaError;
use crate::frame::{FrameAssembler, VolumeMeter};
use crate::types::{Codec, EncodedFrame, MediaEvent, MediaKind};

/// Least time between two key-frame requests we send while waiting for a
/// decodable H.264 frame.
const PLI_INTERVAL: Duration = Duration::from_millis(300);

/// Asks the sender of `media_ssrc` on `track` for a key frame (RTCP PLI).
async fn send_pli(
    track: &dyn TrackRemote,
    sender_ssrc: u32,
    media_ssrc: u32,
) -> Result<(), MediaError> {
    let pli = PictureLossIndication {
        sender_ssrc,
        media_ssrc,
    };
    track
        .write_rtcp(vec![Box::new(pli)])
        .await
        .map_err(MediaError::webrtc)
}

/// Asks for a key frame of `media_ssrc` on `track`, unless we asked less
/// than [`PLI_INTERVAL`] ago.
async fn ask_keyframe(
    track: &dyn TrackRemote,
    media_ssrc: u32,
    last_pli: &mut Option<Instant>,
    user: &calling_core::UserId,
) {
    if last_pli.is_some_and(|t| t.elapsed() < PLI_INTERVAL) {
        return;
    }
    *last_pli = Some(Instant::now());
    if let Err(e) = send_pli(track, 0, media_ssrc).await {
        tracing::debug!(%user, error = %e, "key frame request failed");
    }
}

/// Asks `peer` for a key frame of its video.
///
/// # Errors
///
/// [`MediaError::NoRemoteVideo`] before any video from it arrived, or the
/// RTCP write's [`MediaError::WebRtc`].
pub(super) async fn request_keyframe(peer: &Peer) -> Result<(), MediaError> {
    let target = peer.shared.remote_video.lock().ok().and_then(|g| g.clone());
    let Some((track, ssrc)) = target.and_then(|(t, ssrc)| t.upgrade().map(|t| (t, ssrc))) else {
        return Err(MediaError::NoRemoteVideo(peer.shared.remote.clone()));
    };
    send_pli(track.as_ref(), peer.video.ssrc, ssrc).await
}

/// Our video stream on one connection, for reading its feedback.
pub(super) struct VideoFeedback {
    /// The connection, for the sent figures of its statistics.
    pub(super) pc: Weak<dyn PeerConnection>,
    /// Our video's SSRC on it.
    pub(super) ssrc: u32,
}

/// The next item of `rx`, or never once it is gone.
async fn next_feedback(
    rx: &mut Option<mpsc::Receiver<(Instant, Feedback)>>,
) -> Option<(Instant, Feedback)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Our video stream's payload bytes and packets sent so far.
async fn video_sent(pc: &Weak<dyn PeerConnection>, ssrc: u32) -> Option<(u64, u64)> {
    let pc = pc.upgrade()?;
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    report
        .outbound_rtp_streams()
        .find(|o| o.sent_rtp_stream_stats.rtp_stream_stats.ssrc == ssrc)
        .map(|o| {
            let s = &o.sent_rtp_stream_stats;
            (s.bytes_sent, s.packets_sent)
        })
}

/// Reads what the remote says about our video: key-frame requests (the
/// RTCP that webrtc-rs hands up for our video track) and the congestion
/// feedback the connection's RTCP watcher collects (reception reports,
/// REMB, NACK), which drives the peer's bitrate estimate and through it
/// the session's video target.
pub(super) async fn read_feedback(
    track: Arc<TrackLocalStaticRTP>,
    video: VideoFeedback,
    shared: Arc<PeerShared>,
    session: Weak<Inner>,
) {
    let mut reports = shared.take_feedback();
    loop {
        let feedback = tokio::select! {
            event = track.poll() => {
                let Some(event) = event else { break };
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
                continue;
            }
            feedback = next_feedback(&mut reports) => feedback,
        };
        let Some((at, feedback)) = feedback else {
            // The connection and its watcher are gone; key-frame requests
            // may still come until the track ends.
            reports = None;
            continue;
        };
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        let decided = match feedback {
            Feedback::Report {
                ssrc,
                fraction_lost,
                rtt,
                ..
            } if ssrc == video.ssrc => {
                let sent = video_sent(&video.pc, video.ssrc).await;
                let mut e = shared.adapt.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((bytes, packets)) = sent {
                    e.on_sent(Instant::now(), bytes, packets);
                }
                e.on_report(at, fraction_lost, rtt);
                tracing::trace!(
                    user = %shared.remote,
                    fraction_lost,
                    ?rtt,
                    sent_bps = ?e.sent_bps(),
                    estimate_bps = e.bitrate_bps(),
                    "video report"
                );
                true
            }
            Feedback::Remb { bitrate_bps, ssrcs }
                if ssrcs.is_empty() || ssrcs.contains(&video.ssrc) =>
            {
                shared
                    .adapt
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .on_remb(at, bitrate_bps);
                true
            }
            Feedback::Nack { ssrc, seqs } if ssrc == video.ssrc => {
                shared
                    .adapt
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .on_nack(at, &seqs);
                false
            }
            _ => false,
        };
        if decided {
            let Some(inner) = session.upgrade() else {
                break;
            };
            inner.adapt_video(Instant::now());
        }
    }
}

/// Reads one remote track until it ends, handing its frames to the frame
/// sink and, through the track's decoder thread, to the decoded sink.
pub(super) async fn receive(
    track: Arc<dyn TrackRemote>,
    shared: Arc<PeerShared>,
    session: Weak<Inner>,
) {
    let kind = match track.kind().await {
        RtpCodecKind::Audio => MediaKind::Audio,
        RtpCodecKind::Video => MediaKind::Video,
        _ => return,
    };
    let user = shared.remote.clone();
    let mut meter = match session.upgrade() {
        Some(s) => {
            s.emit(MediaEvent::RemoteTrack {
                user: user.clone(),
                kind,
            });
            VolumeMeter::new(s.config.volume_interval)
        }
        None => return,
    };
    let mut assembler: Option<(FrameAssembler, Codec, u32, TrackDecoding)> = None;
    let mut first = true;
    // H.264 reaches the app only from a key frame that carries its SPS and
    // PPS: the packets before it (or its parameter sets, if they raced the
    // track's start) would give the app frames no decoder can use.
    let mut decodable = false;
    let mut last_pli: Option<Instant> = None;
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
            match codec.as_ref().and_then(|c| codec::codec_of(&c.mime_type)) {
                Some(fc) => {
                    let rate = codec.map_or(90_000, |c| c.clock_rate.max(1));
                    let decoding = TrackDecoding::new(user.clone(), fc);
                    assembler = Some((FrameAssembler::new(fc), fc, rate, decoding));
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
            if let (Some(volume), Some(s)) = (meter.observe(level), session.upgrade()) {
                s.emit(MediaEvent::VoiceVolume {
                    user: user.clone(),
                    volume,
                });
            }
        }
        let Some((asm, codec, rate, decoding)) = assembler.as_mut() else {
            continue;
        };
        let Some((data, ts, gap)) = asm.push(&pkt) else {
            continue;
        };
        let loss = asm.take_loss();
        c.frames_received(kind).fetch_add(1, Ordering::Relaxed);
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
                ask_keyframe(track.as_ref(), pkt.header.ssrc, &mut last_pli, &user).await;
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
        if kind == MediaKind::Audio && s.remote_audio_muted.load(Ordering::Relaxed) {
            decoding.skip();
            continue;
        }
        let sink = s.sink.read().ok().and_then(|g| g.clone());
        if let Some(sink) = sink {
            sink.on_frame(&user, &frame);
        }
        decoding.feed(&s.decoded, frame.data, ts, loss);
        drop(s);
        if decoding.wants_keyframe() {
            ask_keyframe(track.as_ref(), pkt.header.ssrc, &mut last_pli, &user).await;
        }
    }
    tracing::debug!(%user, ?kind, "remote track ended");
}
