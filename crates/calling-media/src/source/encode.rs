//! The H.264 encode stage that both the test pattern and the app's raw
//! camera frames go through: fit the picture to the profile and the
//! congestion controller's target, keep the encoder's bitrate and frame
//! rate on that target, and stamp each frame with its capture time.
//!
//! A frame's `duration` is the capture-time gap to the frame sent before
//! it. The packetizer advances the RTP clock by a frame's duration after
//! sending it, so the RTP timestamps step by the capture gaps, one frame
//! behind: exact for a steady camera, and never drifting from capture
//! time (waiting for the next frame to learn the gap would add a frame of
//! latency instead).

use std::ffi::c_void;
use std::time::Duration;

use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile, RateControlMode,
};
use openh264::{OpenH264API, Timestamp};
use openh264_sys2::{
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_FRAME_RATE, ENCODER_OPTION_MAX_BITRATE,
    SBitrateInfo, SPATIAL_LAYER_0, SPATIAL_LAYER_ALL,
};

use super::Control;
use super::convert::{Picture, Planes};
use super::scale::{Scaler, fit};
use crate::error::MediaError;
use crate::types::{Codec, EncodedFrame, VideoQuality, VideoTarget};

/// The lowest bitrate we ask of the encoder: below it OpenH264 refuses the
/// setting (it needs at least one bit per frame) and pictures are mush.
const MIN_BITRATE: u32 = 30_000;

/// Frame durations outside this window are taken as a gap in capture
/// (or a clock jump) rather than the time the frame shows.
const MIN_DURATION: Duration = Duration::from_millis(1);
const MAX_DURATION: Duration = Duration::from_millis(200);

/// The bitrate and frame rate the encoder was last set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    bitrate_bps: u32,
    frame_rate: u32,
}

/// See the module docs.
pub(crate) struct H264Stage {
    encoder: Encoder,
    quality: VideoQuality,
    /// The congestion controller's last target; `None` until it sends one
    /// (and again after a profile change).
    target: Option<VideoTarget>,
    /// What the encoder runs at now; `None` until it has encoded a frame
    /// at the current size (a new size re-initialises it with the
    /// bitrate it was built with).
    rate: Option<Rate>,
    size: Option<(usize, usize)>,
    /// The rate the encoder was built with, which it returns to whenever a
    /// new size re-initialises it. Its frame rate is the most this source
    /// sends.
    built: Rate,
    keyframe: bool,
    scaler: Scaler,
    scaled: Picture,
    /// Capture time of the last frame sent, for the next one's duration.
    last_sent: Option<Duration>,
    /// Capture time from which the frame-rate limit takes the next frame.
    next_due: Option<Duration>,
}

impl H264Stage {
    /// An encoder at `quality`'s profile, sending at most `max_frame_rate`
    /// frames per second (whatever the profile or the target says). Built
    /// on the thread that uses it.
    ///
    /// # Errors
    ///
    /// [`MediaError::Encoder`] if OpenH264 cannot be set up.
    pub(crate) fn new(quality: VideoQuality, max_frame_rate: u32) -> Result<Self, MediaError> {
        let fps = max_frame_rate.clamp(1, crate::raw::MAX_FRAME_RATE);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(quality.bitrate_bps()))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            .skip_frames(true)
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 2));
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| MediaError::Encoder(e.to_string()))?;
        Ok(H264Stage {
            encoder,
            quality,
            target: None,
            rate: None,
            size: None,
            built: Rate {
                bitrate_bps: quality.bitrate_bps(),
                frame_rate: fps,
            },
            keyframe: false,
            scaler: Scaler::default(),
            scaled: Picture::default(),
            last_sent: None,
            next_due: None,
        })
    }

    /// The profile now.
    pub(crate) fn quality(&self) -> VideoQuality {
        self.quality
    }

    /// What the encoder aims at now: the profile, lowered by the target.
    pub(crate) fn target(&self) -> VideoTarget {
        let full = VideoTarget {
            frame_rate: self.built.frame_rate,
            ..VideoTarget::of(self.quality)
        };
        let Some(t) = self.target else {
            return full;
        };
        VideoTarget {
            bitrate_bps: t.bitrate_bps.clamp(MIN_BITRATE, full.bitrate_bps),
            frame_rate: t.frame_rate.clamp(1, full.frame_rate),
            max_height: t.max_height.clamp(2, full.max_height),
        }
    }

    /// Applies a request: a key frame comes with the next frame encoded; a
    /// new profile starts at its full rate (the congestion controller's
    /// next target applies within it); a target applies from the next
    /// frame, without re-creating the encoder.
    pub(crate) fn control(&mut self, control: Control) {
        match control {
            Control::Keyframe => self.keyframe = true,
            Control::Quality(q) => {
                self.quality = q;
                self.target = None;
            }
            Control::Target(t) => self.target = Some(t),
        }
    }

    /// Whether a frame captured at `at` is to be encoded, keeping under the
    /// target frame rate by skipping frames (a 30 fps camera at a 15 fps
    /// target sends every other frame).
    pub(crate) fn admit(&mut self, at: Duration) -> bool {
        let period = Duration::from_secs(1) / self.target().frame_rate;
        let Some(due) = self.next_due else {
            self.next_due = Some(at + period);
            return true;
        };
        // A quarter period of slack takes a frame that comes a little
        // early, as a camera's jitter makes them.
        if at + period / 4 < due {
            return false;
        }
        // After a gap (or a clock going back) the schedule restarts.
        self.next_due = Some(if at > due + period || at + period < due {
            at + period
        } else {
            due + period
        });
        true
    }

    /// Encodes `picture`, captured at `at`: scaled to fit the profile and
    /// the target, H.264 Annex B. `None` when the encoder's rate control
    /// skipped the frame.
    ///
    /// # Errors
    ///
    /// [`MediaError::Encoder`] if OpenH264 fails.
    pub(crate) fn encode(
        &mut self,
        picture: Planes<'_>,
        at: Duration,
    ) -> Result<Option<EncodedFrame>, MediaError> {
        let target = self.target();
        let (w, h) = fit(
            picture.width as u32,
            picture.height as u32,
            self.quality.resolution(),
            target.max_height,
        );
        let (w, h) = (w as usize, h as usize);
        let source = if (w, h) == (picture.width, picture.height) {
            picture
        } else {
            self.scaler.scale(picture, w, h, &mut self.scaled);
            self.scaled.planes()
        };
        let same_size = self.size == Some((w, h));
        let want = Rate {
            bitrate_bps: target.bitrate_bps,
            frame_rate: target.frame_rate,
        };
        if same_size {
            // A new size re-initialises the encoder, which forces a key
            // frame by itself; before the first frame it cannot take one.
            if std::mem::take(&mut self.keyframe) {
                self.encoder.force_intra_frame();
            }
            let now = self.rate.unwrap_or(self.built);
            if now != want {
                self.rate = Some(set_rate(&mut self.encoder, now, want));
            }
        } else {
            self.keyframe = false;
        }
        let data = self
            .encoder
            .encode_at(&source, Timestamp::from_millis(at.as_millis() as u64))
            .map_err(|e| MediaError::Encoder(e.to_string()))?
            .to_vec();
        if !same_size {
            // Re-initialised at the bitrate it was built with: set ours
            // for the frames that follow.
            self.size = Some((w, h));
            self.rate = Some(set_rate(&mut self.encoder, self.built, want));
        }
        if data.is_empty() {
            return Ok(None);
        }
        let nominal = Duration::from_secs(1) / target.frame_rate;
        let duration = self
            .last_sent
            .map_or(nominal, |last| at.saturating_sub(last))
            .clamp(MIN_DURATION, MAX_DURATION);
        self.last_sent = Some(at);
        Ok(Some(EncodedFrame::new(
            Codec::H264,
            Bytes::from(data),
            duration,
        )))
    }
}

/// Sets one `ENCODER_OPTION` whose value is `value`.
///
/// # Safety
///
/// `T` must be the type OpenH264 reads for `option` (see `codec_app_def.h`):
/// `SBitrateInfo` for the bitrate options, `f32` for the frame rate.
unsafe fn set_option<T>(encoder: &mut Encoder, option: ENCODER_OPTION, mut value: T) -> bool {
    // SAFETY: the encoder is initialised (it has encoded a frame, as the
    // callers ensure), `value` lives across the call and is of the type
    // the option takes (the caller's contract); OpenH264 only reads it.
    // These options change rate-control figures, none of the state the
    // Rust wrapper keeps.
    unsafe {
        encoder
            .raw_api()
            .set_option(option, (&raw mut value).cast::<c_void>())
            == 0
    }
}

/// Moves the encoder from rate `now` to `want` in place (no new encoder,
/// so no key frame and no new parameter sets). Returns the rate now set.
fn set_rate(encoder: &mut Encoder, now: Rate, want: Rate) -> Rate {
    if now.bitrate_bps != want.bitrate_bps {
        let info = |layer, bps: u32| SBitrateInfo {
            iLayer: layer,
            iBitrate: i32::try_from(bps).unwrap_or(i32::MAX),
        };
        // OpenH264 refuses a target above the layer's maximum and a
        // maximum below its target: raise the maximum first, then set the
        // target, then bring the maximum down to it (rate control then
        // keeps each window under the target, as at start).
        let top = now.bitrate_bps.max(want.bitrate_bps);
        // SAFETY: the bitrate options take an `SBitrateInfo`.
        let ok = unsafe {
            set_option(
                encoder,
                ENCODER_OPTION_MAX_BITRATE,
                info(SPATIAL_LAYER_0, top),
            ) && set_option(
                encoder,
                ENCODER_OPTION_BITRATE,
                info(SPATIAL_LAYER_ALL, want.bitrate_bps),
            ) && set_option(
                encoder,
                ENCODER_OPTION_MAX_BITRATE,
                info(SPATIAL_LAYER_0, want.bitrate_bps),
            )
        };
        if !ok {
            tracing::warn!(
                bps = want.bitrate_bps,
                "the H.264 encoder refused a bitrate"
            );
        }
    }
    if now.frame_rate != want.frame_rate {
        // SAFETY: the frame rate option takes an `f32`.
        if !unsafe { set_option(encoder, ENCODER_OPTION_FRAME_RATE, want.frame_rate as f32) } {
            tracing::warn!(
                fps = want.frame_rate,
                "the H.264 encoder refused a frame rate"
            );
        }
    }
    // Taken as set even when refused (and said so): asking again each
    // frame would not help.
    want
}

#[cfg(test)]
mod tests {
    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;

    use super::*;

    const FPS15: Duration = Duration::from_nanos(1_000_000_000 / 15);

    /// A moving gradient under light noise, different each call: costly
    /// enough to encode that the rate control decides the frame sizes, and
    /// still codable at a low bitrate.
    struct Noise {
        picture: Picture,
        seed: u32,
        frame: usize,
    }

    impl Noise {
        fn new(w: usize, h: usize) -> Self {
            Noise {
                picture: Picture::new(w, h),
                seed: 1,
                frame: 0,
            }
        }

        fn next(&mut self) -> Planes<'_> {
            let w = self.picture.width;
            self.frame += 1;
            for (i, p) in self.picture.y.iter_mut().enumerate() {
                self.seed = self
                    .seed
                    .wrapping_mul(1_664_525)
                    .wrapping_add(1_013_904_223);
                let (x, y) = (i % w, i / w);
                let base = ((x + y + self.frame * 5) % 192) as u8;
                *p = 16 + base + (self.seed >> 28) as u8;
            }
            self.picture.planes()
        }
    }

    fn decoded_size(decoder: &mut Decoder, frame: &EncodedFrame) -> Option<(usize, usize)> {
        decoder
            .decode(&frame.data)
            .ok()
            .flatten()
            .map(|p| p.dimensions())
    }

    #[test]
    fn a_target_lowers_the_bitrate_and_the_size_in_place() {
        let mut stage = H264Stage::new(VideoQuality::P480, 15).unwrap();
        let mut noise = Noise::new(640, 480);
        let mut decoder = Decoder::new().unwrap();
        let mut at = Duration::ZERO;
        let mut window = |stage: &mut H264Stage, noise: &mut Noise, n: usize| {
            let mut bytes = 0;
            let mut frames = Vec::new();
            for _ in 0..n {
                if let Some(f) = stage.encode(noise.next(), at).unwrap() {
                    bytes += f.data.len();
                    frames.push(f);
                }
                at += FPS15;
            }
            (bytes, frames)
        };
        let (_, frames) = window(&mut stage, &mut noise, 15);
        assert!(frames[0].keyframe);
        assert_eq!(decoded_size(&mut decoder, &frames[0]), Some((640, 480)));
        let (full, _) = window(&mut stage, &mut noise, 45);

        // A quarter of the bitrate: far fewer bytes, frames still flowing.
        stage.control(Control::Target(VideoTarget {
            bitrate_bps: 200_000,
            frame_rate: 15,
            max_height: 480,
        }));
        window(&mut stage, &mut noise, 15);
        let (low, frames) = window(&mut stage, &mut noise, 45);
        assert!(
            low * 2 < full && frames.len() >= 10,
            "800 kbit/s: {full} bytes; 200 kbit/s: {low} bytes in {} frames",
            frames.len()
        );

        // A lower height: a key frame at the new size, aspect kept.
        stage.control(Control::Target(VideoTarget {
            bitrate_bps: 200_000,
            frame_rate: 15,
            max_height: 240,
        }));
        let (_, frames) = window(&mut stage, &mut noise, 3);
        assert!(frames[0].keyframe);
        assert_eq!(decoded_size(&mut decoder, &frames[0]), Some((320, 240)));

        // Back up to the full profile: the bitrate comes back too.
        stage.control(Control::Target(VideoTarget::of(VideoQuality::P480)));
        let (_, frames) = window(&mut stage, &mut noise, 15);
        assert_eq!(decoded_size(&mut decoder, &frames[0]), Some((640, 480)));
        let (again, _) = window(&mut stage, &mut noise, 45);
        assert!(
            again > low * 2,
            "200 kbit/s: {low} bytes; 800 kbit/s again: {again}"
        );
    }

    #[test]
    fn key_frames_come_when_asked() {
        let mut stage = H264Stage::new(VideoQuality::P480, 15).unwrap();
        let mut noise = Noise::new(320, 240);
        let mut at = Duration::ZERO;
        let mut next = |stage: &mut H264Stage| loop {
            at += FPS15;
            if let Some(f) = stage.encode(noise.next(), at).unwrap() {
                return f;
            }
        };
        assert!(next(&mut stage).keyframe);
        assert!(!next(&mut stage).keyframe);
        stage.control(Control::Keyframe);
        assert!(next(&mut stage).keyframe);
        assert!(!next(&mut stage).keyframe);
    }

    #[test]
    fn durations_follow_capture_time() {
        let mut stage = H264Stage::new(VideoQuality::P480, 15).unwrap();
        let mut noise = Noise::new(64, 48);
        let mut durations = Vec::new();
        for ms in [1000, 1040, 1080, 1113, 3000, 3033] {
            if let Some(f) = stage
                .encode(noise.next(), Duration::from_millis(ms))
                .unwrap()
            {
                durations.push(f.duration.as_millis());
            }
        }
        // The first frame takes the nominal period; a 2 s gap is clamped.
        assert_eq!(durations, [66, 40, 40, 33, 200, 33]);
    }

    #[test]
    fn the_frame_rate_limit_skips_frames() {
        let admitted = |stage: &mut H264Stage, fps: u64, n: u64| {
            (0..n)
                .filter(|i| stage.admit(Duration::from_millis(10_000 + i * 1000 / fps)))
                .count()
        };
        let mut stage = H264Stage::new(VideoQuality::P480, 15).unwrap();
        // A 15 fps source: a 30 fps camera sends every other frame.
        assert_eq!(admitted(&mut stage, 30, 60), 30);
        // A 15 fps camera sends every frame.
        let mut stage = H264Stage::new(VideoQuality::P480, 15).unwrap();
        assert_eq!(admitted(&mut stage, 15, 30), 30);
        // A 10 fps target: a third of a 30 fps camera's frames.
        let mut stage = H264Stage::new(VideoQuality::P480, 15).unwrap();
        stage.control(Control::Target(VideoTarget {
            frame_rate: 10,
            ..VideoTarget::of(VideoQuality::P480)
        }));
        assert_eq!(admitted(&mut stage, 30, 60), 20);
        // A target above the profile is held to it.
        stage.control(Control::Target(VideoTarget {
            frame_rate: 60,
            ..VideoTarget::of(VideoQuality::P480)
        }));
        assert_eq!(stage.target().frame_rate, 15);
        // The app's pictures go at up to 30 fps: a 30 fps camera sends
        // every frame, a 60 fps one every other.
        let raw = crate::raw::MAX_FRAME_RATE;
        let mut stage = H264Stage::new(VideoQuality::P720, raw).unwrap();
        assert_eq!(admitted(&mut stage, 30, 60), 60);
        let mut stage = H264Stage::new(VideoQuality::P720, raw).unwrap();
        assert_eq!(admitted(&mut stage, 60, 120), 60);
        // A lower target applies to it as to any source.
        stage.control(Control::Target(VideoTarget {
            frame_rate: 15,
            ..VideoTarget::of(VideoQuality::P720)
        }));
        assert_eq!(stage.target().frame_rate, 15);
    }
}
