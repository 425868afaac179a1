//! Built-in media sources. Each runs on its own OS thread (the OpenH264
//! encoder is `!Send`, and encoding must not stall the async runtime) and
//! hands frames to the session through a bounded channel.

use std::f32::consts::TAU;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, RateControlMode,
};
use openh264::formats::YUVSource;
use opus_rs::{Application, OpusEncoder};
use tokio::sync::mpsc;

use crate::error::MediaError;
use crate::files;
use crate::frame::audio_level_i16;
use crate::types::{
    AudioSource, Codec, EncodedFrame, VideoCodec, VideoQuality, VideoSource, VideoTarget,
};

/// Requests to a running source.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control {
    /// Encode the next frame as a key frame, now.
    Keyframe,
    /// Switch the generated source's profile.
    Quality(VideoQuality),
    /// Aim at this bitrate, frame rate and height (congestion control).
    Target(VideoTarget),
}

/// A started source: frames come out of `frames`; dropping it stops the thread.
pub(crate) struct Running {
    pub(crate) frames: mpsc::Receiver<EncodedFrame>,
    pub(crate) control: Option<std_mpsc::Sender<Control>>,
    stop: Arc<AtomicBool>,
    /// Why the source stopped by itself, if it failed: read once `frames`
    /// has closed.
    pub(crate) failure: Arc<std::sync::Mutex<Option<MediaError>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const CHANNEL: usize = 64;
const OPUS_FRAME: usize = 960; // 20 ms at 48 kHz

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
        AudioSource::Frames(rx) => Ok(Running {
            frames: rx,
            control: None,
            stop,
            failure: Arc::default(),
        }),
        AudioSource::Tone {
            frequency_hz,
            amplitude,
        } => {
            let (tx, rx) = mpsc::channel(CHANNEL);
            let mut encoder = OpusEncoder::new(48_000, 1, Application::Voip)
                .map_err(|e| MediaError::Encoder(e.to_string()))?;
            encoder.bitrate_bps = 32_000;
            let flag = stop.clone();
            spawn("calling-tone", move || {
                tone_loop(
                    &mut encoder,
                    frequency_hz,
                    amplitude.clamp(0.0, 1.0),
                    &tx,
                    &flag,
                )
            })?;
            Ok(Running {
                frames: rx,
                control: None,
                stop,
                failure: Arc::default(),
            })
        }
        AudioSource::OggFile { path, looped } => {
            let frames = files::read_ogg_opus(&path)?;
            file_source("calling-ogg", frames, looped, stop, &path)
        }
    }
}

fn tone_loop(
    encoder: &mut OpusEncoder,
    frequency_hz: f32,
    amplitude: f32,
    tx: &mpsc::Sender<EncodedFrame>,
    stop: &AtomicBool,
) {
    let step = TAU * frequency_hz / 48_000.0;
    let mut phase = 0.0f32;
    let mut pcm = vec![0i16; OPUS_FRAME];
    let mut out = vec![0u8; 1500];
    let period = Duration::from_millis(20);
    let mut deadline = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for s in pcm.iter_mut() {
            *s = (phase.sin() * amplitude * 32767.0) as i16;
            phase = (phase + step) % TAU;
        }
        let level = audio_level_i16(&pcm);
        let len = match encoder.encode_i16(&pcm, OPUS_FRAME, &mut out) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = e, "opus encode failed; tone source stops");
                return;
            }
        };
        let mut frame = EncodedFrame::new(Codec::Opus, Bytes::copy_from_slice(&out[..len]), period);
        frame.audio_level = Some(level);
        if tx.blocking_send(frame).is_err() {
            return;
        }
        deadline += period;
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        } else if now - deadline > Duration::from_millis(200) {
            deadline = now;
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
    Ok(Running {
        frames: rx,
        control: Some(ctl_tx),
        stop,
        failure: Arc::default(),
    })
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
        VideoSource::Frames(rx) => Ok(Running {
            frames: rx,
            control: None,
            stop,
            failure: Arc::default(),
        }),
        VideoSource::TestPattern => {
            need(VideoCodec::H264)?;
            let (tx, rx) = mpsc::channel(CHANNEL);
            let (ctl_tx, ctl_rx) = std_mpsc::channel();
            let flag = stop.clone();
            // The encoder is created on its thread, and we do not wait for
            // it (a few milliseconds a call start would wait): a failure to
            // build it ends the source, and the session reports it.
            let failure: Arc<std::sync::Mutex<Option<MediaError>>> = Arc::default();
            let failed = failure.clone();
            spawn("calling-pattern", move || {
                pattern_loop(quality, &tx, &ctl_rx, &flag, &failed)
            })?;
            Ok(Running {
                frames: rx,
                control: Some(ctl_tx),
                stop,
                failure,
            })
        }
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

fn h264_encoder(quality: VideoQuality, bitrate_bps: u32) -> Result<Encoder, MediaError> {
    let fps = quality.frame_rate();
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        .profile(Profile::Baseline)
        .skip_frames(true)
        .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 2));
    Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| MediaError::Encoder(e.to_string()))
}

/// Changes a running encoder's target bitrate in place: no new encoder,
/// so no key frame that a narrow link would choke on. Whether it took.
fn set_bitrate(encoder: &mut Encoder, bitrate_bps: u32) -> bool {
    use std::os::raw::{c_int, c_void};
    /// OpenH264's `SBitrateInfo` (codec_app_def.h).
    #[repr(C)]
    struct BitrateInfo {
        layer: c_int,
        bitrate: c_int,
    }
    /// `ENCODER_OPTION_BITRATE` and `SPATIAL_LAYER_ALL` (codec_app_def.h).
    const OPTION_BITRATE: c_int = 5;
    const ALL_LAYERS: c_int = 4;
    let mut info = BitrateInfo {
        layer: ALL_LAYERS,
        bitrate: c_int::try_from(bitrate_bps).unwrap_or(c_int::MAX),
    };
    // SAFETY: the encoder is initialised; this option reads one
    // `SBitrateInfo` through the pointer, which outlives the call; and the
    // target bitrate is a setting OpenH264 supports changing while encoding.
    let rc = unsafe {
        encoder.raw_api().set_option(
            OPTION_BITRATE,
            (&mut info as *mut BitrateInfo).cast::<c_void>(),
        )
    };
    rc == 0
}

fn pattern_loop(
    mut quality: VideoQuality,
    tx: &mpsc::Sender<EncodedFrame>,
    control: &std_mpsc::Receiver<Control>,
    stop: &AtomicBool,
    failure: &std::sync::Mutex<Option<MediaError>>,
) {
    let mut encoder = match h264_encoder(quality, quality.bitrate_bps()) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "the test pattern's encoder cannot start");
            if let Ok(mut f) = failure.lock() {
                *f = Some(e);
            }
            return;
        }
    };
    let mut pattern = TestPattern::new(quality.resolution());
    let mut deadline = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let period = Duration::from_secs(1) / quality.frame_rate();
        match wait(control, deadline) {
            Some(Control::Quality(q)) => {
                if q != quality {
                    match h264_encoder(q, q.bitrate_bps()) {
                        Ok(e) => {
                            encoder = e;
                            quality = q;
                            pattern = TestPattern::new(q.resolution());
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot switch video quality"),
                    }
                }
                continue;
            }
            // Only the bitrate here; frame rate and size stay the profile's.
            Some(Control::Target(t)) => {
                if !set_bitrate(&mut encoder, t.bitrate_bps) {
                    match h264_encoder(quality, t.bitrate_bps) {
                        Ok(e) => encoder = e,
                        Err(e) => tracing::warn!(error = %e, "cannot change the video bitrate"),
                    }
                }
                continue;
            }
            Some(Control::Keyframe) => encoder.force_intra_frame(),
            None => {
                if Instant::now() < deadline {
                    continue;
                }
                deadline += period;
                let now = Instant::now();
                if now > deadline + Duration::from_millis(500) {
                    deadline = now;
                }
            }
        }
        pattern.advance();
        let data = match encoder.encode(&pattern) {
            Ok(bits) => bits.to_vec(),
            Err(e) => {
                tracing::warn!(error = %e, "H.264 encode failed; pattern source stops");
                return;
            }
        };
        if data.is_empty() {
            continue;
        }
        if tx
            .blocking_send(EncodedFrame::new(Codec::H264, Bytes::from(data), period))
            .is_err()
        {
            return;
        }
    }
}

/// Colour bars scrolling sideways with a bouncing white square, in I420.
struct TestPattern {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    frame: usize,
}

const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128), // white
    (210, 16, 146),  // yellow
    (170, 166, 16),  // cyan
    (145, 54, 34),   // green
    (106, 202, 222), // magenta
    (81, 90, 240),   // red
    (41, 240, 110),  // blue
    (16, 128, 128),  // black
];

impl TestPattern {
    fn new((w, h): (u32, u32)) -> Self {
        let (width, height) = (w as usize, h as usize);
        TestPattern {
            width,
            height,
            y: vec![0; width * height],
            u: vec![0; width * height / 4],
            v: vec![0; width * height / 4],
            frame: 0,
        }
    }

    fn advance(&mut self) {
        let (w, h) = (self.width, self.height);
        let shift = self.frame * 4;
        let bar = |x: usize| BARS[((x + shift) * 8 / w) % 8];
        let row_y: Vec<u8> = (0..w).map(|x| bar(x).0).collect();
        for r in self.y.chunks_exact_mut(w) {
            r.copy_from_slice(&row_y);
        }
        let row_u: Vec<u8> = (0..w / 2).map(|x| bar(x * 2).1).collect();
        let row_v: Vec<u8> = (0..w / 2).map(|x| bar(x * 2).2).collect();
        for r in self.u.chunks_exact_mut(w / 2) {
            r.copy_from_slice(&row_u);
        }
        for r in self.v.chunks_exact_mut(w / 2) {
            r.copy_from_slice(&row_v);
        }
        // A white square bouncing across the picture.
        let side = h / 6;
        let span_x = w - side;
        let span_y = h - side;
        let t = self.frame * 7;
        let bx = if (t / span_x) % 2 == 0 {
            t % span_x
        } else {
            span_x - t % span_x
        };
        let by = if (t / span_y) % 2 == 0 {
            t % span_y
        } else {
            span_y - t % span_y
        };
        for row in by..by + side {
            self.y[row * w + bx..row * w + bx + side].fill(235);
        }
        for row in by / 2..(by + side) / 2 {
            self.u[row * w / 2 + bx / 2..row * w / 2 + (bx + side) / 2].fill(128);
            self.v[row * w / 2 + bx / 2..row * w / 2 + (bx + side) / 2].fill(128);
        }
        self.frame += 1;
    }
}

impl YUVSource for TestPattern {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}
