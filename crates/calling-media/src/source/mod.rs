//! Built-in media sources. Each runs on its own OS thread (encoding must
//! not stall the async runtime, and the encoders keep state across
//! frames) and hands frames to the session through a bounded channel.
//!
//! - `audio`: the generated tone and the app's raw PCM, Opus-encoded.
//! - `pattern`: the generated test pattern.
//! - `input`: the app's raw camera frames and its own encoded frames.
//! - `encode`: the H.264 stage the pattern and the camera share (profile,
//!   congestion target, key frames), on `convert` (raw formats to I420)
//!   and `scale` (sizes and an area-average scaler).
//! - files are paced here, read by [`crate::files`].

mod audio;
mod convert;
mod encode;
mod input;
mod pattern;
mod scale;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::MediaError;
use crate::files;
use crate::types::{
    AudioSource, Codec, EncodedFrame, VideoCodec, VideoQuality, VideoSource, VideoTarget,
};

/// Requests to a running video source.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control {
    /// Encode the next frame as a key frame, now.
    Keyframe,
    /// Switch the encoder's profile (resolution box, bitrate, frame rate).
    Quality(VideoQuality),
    /// Aim the encoder at this, within the profile: from the congestion
    /// controller.
    Target(VideoTarget),
}

/// A started source: frames come out of `frames`; dropping it stops the
/// thread (and detaches the app's input, if it reads one).
pub(crate) struct Running {
    pub(crate) frames: mpsc::Receiver<EncodedFrame>,
    pub(crate) control: Option<std_mpsc::Sender<Control>>,
    stop: Arc<AtomicBool>,
    /// Why the source stopped by itself, if it failed: read once `frames`
    /// has closed.
    pub(crate) failure: Arc<std::sync::Mutex<Option<MediaError>>>,
    /// The source's hold on the app's [`FrameInput`](crate::FrameInput),
    /// if it reads one.
    pub(crate) input: InputHold,
}

/// A source's hold on the app's input, shared by the source and the
/// session: whichever lets go first ([`release`]) detaches the input, the
/// session when it replaces or closes the source (at once, while the
/// source's task ends a moment later), the source when it stops by itself.
pub(crate) type InputHold = Arc<std::sync::Mutex<Option<Box<dyn Send>>>>;

/// Lets go of the input held by `hold`, detaching it.
pub(crate) fn release(hold: &InputHold) {
    let attachment = hold.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(attachment);
}

impl Running {
    fn new(frames: mpsc::Receiver<EncodedFrame>, stop: Arc<AtomicBool>) -> Self {
        Running {
            frames,
            control: None,
            stop,
            failure: Arc::default(),
            input: Arc::default(),
        }
    }

    /// Keeps `attachment` until the source stops.
    fn hold(&self, attachment: impl Send + 'static) {
        *self.input.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(attachment));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        release(&self.input);
    }
}

/// Encoded frames queued between a source's thread and the session.
const CHANNEL: usize = 64;

/// How long a source's thread waits for input before it looks at its stop
/// flag and control messages again.
const POLL: Duration = Duration::from_millis(50);

fn spawn<F>(name: &str, body: F) -> Result<(), MediaError>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(|_| ())
        .map_err(|e| MediaError::Encoder(format!("cannot start {name} thread: {e}")))
}

/// Records why a source stopped, for the session to report.
fn fail(failure: &std::sync::Mutex<Option<MediaError>>, error: MediaError) {
    if let Ok(mut f) = failure.lock() {
        *f = Some(error);
    }
}

/// Sleeps until `deadline`, waking early for a control message.
fn wait(control: &std_mpsc::Receiver<Control>, deadline: Instant) -> Option<Control> {
    let now = Instant::now();
    if deadline <= now {
        return control.try_recv().ok();
    }
    control.recv_timeout(deadline - now).ok()
}

pub(crate) fn start_audio(src: AudioSource) -> Result<Running, MediaError> {
    let stop = Arc::new(AtomicBool::new(false));
    match src {
        AudioSource::Frames(rx) => Ok(Running::new(rx, stop)),
        AudioSource::Tone {
            frequency_hz,
            amplitude,
        } => audio::start_tone(frequency_hz, amplitude, stop),
        AudioSource::Raw(input) => audio::start_raw(&input, stop),
        AudioSource::Encoded(input) => input::start_encoded(&input, Codec::Opus, stop),
        AudioSource::OggFile { path, looped } => {
            let frames = files::read_ogg_opus(&path)?;
            file_source("calling-ogg", frames, looped, stop, &path)
        }
    }
}

fn file_source(
    name: &str,
    frames: Vec<EncodedFrame>,
    looped: bool,
    stop: Arc<AtomicBool>,
    path: &Path,
) -> Result<Running, MediaError> {
    if frames.is_empty() {
        return Err(MediaError::MalformedFile {
            path: path.to_owned(),
            reason: "no frames".into(),
        });
    }
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (ctl_tx, ctl_rx) = std_mpsc::channel();
    let flag = stop.clone();
    spawn(name, move || {
        let mut deadline = Instant::now();
        loop {
            for frame in &frames {
                if flag.load(Ordering::Relaxed) || tx.blocking_send(frame.clone()).is_err() {
                    return;
                }
                deadline += frame.duration.max(Duration::from_millis(1));
                // Key-frame requests cannot be honoured by a file; drain them.
                while wait(&ctl_rx, deadline).is_some() {}
            }
            if !looped {
                return;
            }
        }
    })?;
    let mut running = Running::new(rx, stop);
    running.control = Some(ctl_tx);
    Ok(running)
}

pub(crate) fn start_video(
    src: VideoSource,
    codec: VideoCodec,
    quality: VideoQuality,
) -> Result<Running, MediaError> {
    let stop = Arc::new(AtomicBool::new(false));
    let need = |needed: VideoCodec| {
        if needed == codec {
            Ok(())
        } else {
            Err(MediaError::CodecMismatch {
                needed,
                configured: codec,
            })
        }
    };
    match src {
        VideoSource::Frames(rx) => Ok(Running::new(rx, stop)),
        VideoSource::TestPattern => {
            need(VideoCodec::H264)?;
            pattern::start(quality, stop)
        }
        VideoSource::Raw(input) => {
            need(VideoCodec::H264)?;
            input::start_raw_video(&input, quality, stop)
        }
        VideoSource::Encoded(input) => input::start_encoded(&input, codec.codec(), stop),
        VideoSource::H264File { path, fps, looped } => {
            need(VideoCodec::H264)?;
            let frames = files::read_annexb(&path, fps)?;
            file_source("calling-h264", frames, looped, stop, &path)
        }
        VideoSource::IvfFile { path, looped } => {
            need(VideoCodec::Vp8)?;
            let frames = files::read_ivf(&path)?;
            if frames.iter().any(|f| f.codec != Codec::Vp8) {
                return Err(MediaError::MalformedFile {
                    path,
                    reason: "IVF file is not VP8".into(),
                });
            }
            file_source("calling-ivf", frames, looped, stop, &path)
        }
    }
}
