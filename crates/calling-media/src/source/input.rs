//! Sources fed by the app through a [`FrameInput`](crate::FrameInput): raw
//! camera frames (converted, scaled and H.264-encoded here) and frames the
//! app encodes itself (forwarded).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use super::convert::{self, Picture};
use super::encode::H264Stage;
use super::{CHANNEL, Control, POLL, Running, fail, spawn};
use crate::error::MediaError;
use crate::raw::{EncodedInput, RawVideoInput, VideoFrame};
use crate::types::{Codec, EncodedFrame, MediaKind, VideoQuality};

/// Raw frames queued for the video encoder. Small on purpose: when the
/// encoder falls behind, a push is refused ([`PushError::Full`]) and the
/// newest frame dropped, rather than the call running late.
///
/// [`PushError::Full`]: crate::PushError::Full
pub(crate) const RAW_VIDEO_QUEUE: usize = 3;

/// Encoded video frames the app may queue: a few frames of slack; a
/// refused push means the app should send a key frame next.
pub(crate) const ENCODED_VIDEO_QUEUE: usize = 16;

/// Encoded audio frames the app may queue: over 2 s of 20 ms frames.
pub(crate) const ENCODED_AUDIO_QUEUE: usize = 128;

pub(super) fn start_raw_video(
    input: &RawVideoInput,
    quality: VideoQuality,
    stop: Arc<AtomicBool>,
) -> Result<Running, MediaError> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (ctl_tx, ctl_rx) = std_mpsc::channel();
    let (frames, attachment) = input.attach(RAW_VIDEO_QUEUE);
    let mut running = Running::new(rx, stop.clone());
    running.control = Some(ctl_tx);
    running.hold(attachment);
    let failure = running.failure.clone();
    spawn("calling-camera", move || {
        // Built here, not waited for (as the test pattern's).
        let mut stage = match H264Stage::new(quality, crate::raw::MAX_FRAME_RATE) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the camera's encoder cannot start");
                fail(&failure, e);
                return;
            }
        };
        if let Err(e) = camera_loop(&mut stage, &frames, &tx, &ctl_rx, &stop) {
            tracing::warn!(error = %e, "H.264 encode failed; camera source stops");
            fail(&failure, e);
        }
    })?;
    Ok(running)
}

fn camera_loop(
    stage: &mut H264Stage,
    frames: &std_mpsc::Receiver<VideoFrame>,
    tx: &mpsc::Sender<EncodedFrame>,
    control: &std_mpsc::Receiver<Control>,
    stop: &AtomicBool,
) -> Result<(), MediaError> {
    let mut picture = Picture::default();
    while !stop.load(Ordering::Relaxed) {
        while let Ok(c) = control.try_recv() {
            stage.control(c);
        }
        let frame = match frames.recv_timeout(POLL) {
            Ok(f) => f,
            Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        // A control sent just before this frame applies to it.
        while let Ok(c) = control.try_recv() {
            stage.control(c);
        }
        if !stage.admit(frame.timestamp) {
            continue;
        }
        let planes = match convert::i420_planes(&frame) {
            Some(p) => p,
            None => {
                convert::to_i420(&frame, &mut picture);
                picture.planes()
            }
        };
        let Some(encoded) = stage.encode(planes, frame.timestamp)? else {
            continue;
        };
        if tx.blocking_send(encoded).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Forwards the app's own encoded frames of `codec`; frames of another
/// codec are dropped with a warning, as the pumps do.
pub(super) fn start_encoded(
    input: &EncodedInput,
    codec: Codec,
    stop: Arc<AtomicBool>,
) -> Result<Running, MediaError> {
    let queue = match codec.kind() {
        MediaKind::Audio => ENCODED_AUDIO_QUEUE,
        MediaKind::Video => ENCODED_VIDEO_QUEUE,
    };
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (frames, attachment) = input.attach(queue);
    let running = Running::new(rx, stop.clone());
    running.hold(attachment);
    let name = match codec.kind() {
        MediaKind::Audio => "calling-audio-in",
        MediaKind::Video => "calling-video-in",
    };
    spawn(name, move || {
        while !stop.load(Ordering::Relaxed) {
            let frame = match frames.recv_timeout(POLL) {
                Ok(f) => f,
                Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if frame.codec != codec {
                tracing::warn!(got = ?frame.codec, expected = ?codec, "encoded input in the wrong codec; dropped");
                continue;
            }
            if tx.blocking_send(frame).is_err() {
                return;
            }
        }
    })?;
    Ok(running)
}
