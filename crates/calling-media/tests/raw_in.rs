//! The app's own raw camera and microphone frames (and its own encoded
//! frames) into a call, between two sessions on loopback: what the receiver
//! decodes follows the profile, the congestion target and the pictures
//! pushed.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use calling_media::frame::h264_nal_types;
use calling_media::{
    AudioFrame, AudioSource, Codec, EncodedFrame, EncodedInput, MediaConfig, MediaError, MediaKind,
    MediaSession, PixelFormat, PushError, RawAudioInput, RawVideoInput, RemoteFrame, Samples,
    VideoCodec, VideoFrame, VideoQuality, VideoSource, VideoTarget,
};
use common::*;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

/// Pushes frames from a shared list, round and round, at a steady rate
/// with capture timestamps, until dropped.
struct Pusher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Result<(), PushError>>>>,
}

impl Pusher {
    fn video(input: RawVideoInput, frames: Arc<Mutex<Vec<VideoFrame>>>, fps: u32) -> Self {
        Self::start(Duration::from_secs(1) / fps, move |i, at| {
            let mut frame = {
                let frames = frames.lock().unwrap();
                frames[i % frames.len()].clone()
            };
            frame.timestamp = at;
            input.push(frame)
        })
    }

    /// Stereo 16-bit PCM, a 440 Hz sine at half scale, in 10 ms chunks.
    fn audio(input: RawAudioInput) -> Self {
        Self::start(Duration::from_millis(10), move |i, _| {
            let samples: Vec<i16> = (0..480)
                .flat_map(|n| {
                    let t = (i * 480 + n) as f32 / 48_000.0;
                    let s = ((t * 440.0 * std::f32::consts::TAU).sin() * 16_000.0) as i16;
                    [s, s]
                })
                .collect();
            input.push(AudioFrame::new(Samples::I16(samples), 2).unwrap())
        })
    }

    fn start(
        period: Duration,
        mut push: impl FnMut(usize, Duration) -> Result<(), PushError> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut results = Vec::new();
            let mut i = 0;
            // Bounded: no test runs this long.
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                results.push(push(i, start.elapsed()));
                i += 1;
                let next = start + period * i as u32;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            results
        });
        Pusher {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns what each push said.
    fn finish(mut self) -> Vec<Result<(), PushError>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A `w` x `h` frame in `format` whose left half is white and right half
/// black (`mirror`: the other way round).
fn halves(format: PixelFormat, w: u32, h: u32, mirror: bool) -> VideoFrame {
    let (wu, hu) = (w as usize, h as usize);
    let white_at = |x: usize| (x < wu / 2) != mirror;
    let data: Vec<u8> = match format {
        PixelFormat::Rgba | PixelFormat::Bgra => (0..hu)
            .flat_map(|_| {
                (0..wu).flat_map(|x| {
                    if white_at(x) {
                        [255; 4]
                    } else {
                        [0, 0, 0, 255]
                    }
                })
            })
            .collect(),
        _ => {
            let luma = (0..hu).flat_map(|_| (0..wu).map(|x| if white_at(x) { 235 } else { 16 }));
            let chroma = vec![128u8; format.frame_len(w, h) - wu * hu];
            luma.chain(chroma).collect()
        }
    };
    VideoFrame::new(format, w, h, data, Duration::ZERO).unwrap()
}

/// One decoded picture: width, height and the packed luma.
struct Picture {
    width: usize,
    height: usize,
    luma: Vec<u8>,
}

impl Picture {
    /// Mean luma of the columns `from..to` (fractions of the width).
    fn mean(&self, from: f64, to: f64) -> f64 {
        let (a, b) = (
            (self.width as f64 * from) as usize,
            (self.width as f64 * to) as usize,
        );
        let sum: u64 = self
            .luma
            .chunks_exact(self.width)
            .flat_map(|r| r[a..b].iter().map(|&v| u64::from(v)))
            .sum();
        sum as f64 / ((b - a) * self.height) as f64
    }
}

/// Decodes the H.264 frames in order, as a receiver's decoder would.
struct Video {
    decoder: Decoder,
}

impl Video {
    fn new() -> Self {
        Video {
            decoder: Decoder::new().unwrap(),
        }
    }

    /// The picture of `frame`, if it completes one (a frame whose
    /// reference was not decoded may not).
    fn decode(&mut self, frame: &EncodedFrame) -> Option<Picture> {
        assert_eq!(frame.codec, Codec::H264);
        let yuv = self.decoder.decode(&frame.data).ok()??;
        let (width, height) = yuv.dimensions();
        let stride = yuv.strides().0;
        let luma = yuv
            .y()
            .chunks(stride)
            .take(height)
            .flat_map(|r| &r[..width])
            .copied()
            .collect();
        Some(Picture {
            width,
            height,
            luma,
        })
    }
}

fn is_video_from(f: &RemoteFrame, user: &str) -> bool {
    f.user.as_str() == user && f.frame.kind() == MediaKind::Video
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_camera_and_microphone_frames_arrive_encoded_at_the_profile_size() {
    let mut m = mesh_with(&["alice", "bob"], |mut c| {
        c.video_quality = VideoQuality::P480;
        c
    })
    .await;
    let alice = m.session("alice");
    let camera = RawVideoInput::new();
    let mic = RawAudioInput::new();
    // Nothing takes frames before a source does.
    assert_eq!(
        camera.push(halves(PixelFormat::I420, 64, 64, false)),
        Err(PushError::NotSending)
    );
    alice
        .set_video_source(Some(VideoSource::Raw(camera.clone())))
        .unwrap();
    alice
        .set_audio_source(Some(AudioSource::Raw(mic.clone())))
        .unwrap();
    assert!(camera.is_attached() && mic.is_attached());
    m.connect_all().await;

    let frames = Arc::new(Mutex::new(vec![halves(
        PixelFormat::I420,
        1280,
        720,
        false,
    )]));
    let video = Pusher::video(camera.clone(), frames.clone(), 30);
    let audio = Pusher::audio(mic.clone());

    // 1280x720 inside the 480p profile's 640x480 box: 640x360, and the
    // picture is the one pushed. Each format in turn, each with its own
    // picture so that we know which one we see.
    let mut decoder = Video::new();
    let cases = [
        (PixelFormat::I420, false),
        (PixelFormat::Rgba, true),
        (PixelFormat::Nv12, false),
        (PixelFormat::Bgra, true),
    ];
    for (format, mirror) in cases {
        *frames.lock().unwrap() = vec![halves(format, 1280, 720, mirror)];
        let mut seen = 0;
        m.node("bob")
            .frames_until(|f| {
                if !is_video_from(f, "alice") {
                    return false;
                }
                let Some(pic) = decoder.decode(&f.frame) else {
                    return false;
                };
                seen += 1;
                assert_eq!((pic.width, pic.height), (640, 360), "{format:?}");
                let (left, right) = (pic.mean(0.0, 0.45), pic.mean(0.55, 1.0));
                let (bright, dark) = if mirror { (right, left) } else { (left, right) };
                // Earlier pictures may still be on their way; wait for ours.
                bright > 200.0 && dark < 40.0
            })
            .await;
        assert!(seen > 0);
    }

    // A new profile applies live: 720p takes the frames as they are.
    alice.set_video_quality(VideoQuality::P720);
    m.node("bob")
        .frames_until(|f| {
            is_video_from(f, "alice")
                && decoder
                    .decode(&f.frame)
                    .is_some_and(|p| (p.width, p.height) == (1280, 720) && p.mean(0.0, 0.45) < 40.0)
        })
        .await;

    // The microphone: 20 ms Opus frames that decode, loud (the RFC 6464
    // level of the samples: a half-scale sine is about -9 dBov).
    let got = m.node("bob").collect("alice", MediaKind::Audio, 25).await;
    let opus: Vec<_> = of(&got, "alice", MediaKind::Audio).collect();
    assert!(opus.len() >= 25);
    for f in &opus {
        assert_eq!(f.codec, Codec::Opus);
        assert_opus_decodes(&f.data);
    }
    let levels: Vec<u8> = opus.iter().filter_map(|f| f.audio_level).collect();
    assert!(!levels.is_empty());
    assert!(levels.iter().all(|&l| (3..=20).contains(&l)), "{levels:?}");

    let video_pushes = video.finish();
    let audio_pushes = audio.finish();
    assert!(video_pushes.iter().filter(|r| r.is_ok()).count() > 10);
    // Audio is queued generously: nothing pushed while attached is lost.
    assert!(audio_pushes.iter().all(|r| r.is_ok()), "{audio_pushes:?}");

    // Closed: the inputs are detached at once, and say so.
    m.close().await;
    assert!(!camera.is_attached() && !mic.is_attached());
    assert_eq!(
        camera.push(halves(PixelFormat::I420, 64, 64, false)),
        Err(PushError::NotSending)
    );
    assert_eq!(
        mic.push(AudioFrame::mono_i16(vec![0; 480])),
        Err(PushError::NotSending)
    );
}

/// 640x480 I420 pictures of a moving gradient under noise: costly enough
/// that the encoder's rate control sets the bytes sent. 32 of them loop
/// seamlessly (32 steps of 6 make the gradient's period): no scene cut that
/// the encoder would answer with a key frame of its own.
fn busy_frames() -> Vec<VideoFrame> {
    let n = 32;
    let (w, h) = (640usize, 480usize);
    let mut seed = 7u32;
    (0..n)
        .map(|i| {
            let mut data = vec![128u8; w * h * 3 / 2];
            for (p, v) in data[..w * h].iter_mut().enumerate() {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let (x, y) = (p % w, p / w);
                *v = 16 + ((x + y + i * 6) % 192) as u8 + (seed >> 28) as u8;
            }
            VideoFrame::new(PixelFormat::I420, w as u32, h as u32, data, Duration::ZERO).unwrap()
        })
        .collect()
}

/// Bytes and frames per second of media time (RTP time, which follows the
/// capture timestamps) of the video frames in `frames`, after the first.
fn rates(frames: &[RemoteFrame]) -> (f64, f64) {
    let video: Vec<_> = frames
        .iter()
        .filter(|f| is_video_from(f, "alice"))
        .skip(1)
        .collect();
    let secs: f64 = video.iter().map(|f| f.frame.duration.as_secs_f64()).sum();
    let bytes: usize = video.iter().map(|f| f.frame.data.len()).sum();
    (bytes as f64 / secs, video.len() as f64 / secs)
}

/// Collects video frames from alice until they cover `secs` of media time.
async fn window(node: &mut Node, secs: f64) -> Vec<RemoteFrame> {
    let mut covered = 0.0;
    node.frames_until(|f| {
        if is_video_from(f, "alice") {
            covered += f.frame.duration.as_secs_f64();
        }
        covered >= secs
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_frame_requests_and_congestion_targets_reach_the_camera_encoder() {
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    let bob = m.session("bob");
    let camera = RawVideoInput::new();
    alice
        .set_video_source(Some(VideoSource::Raw(camera.clone())))
        .unwrap();
    m.connect_all().await;
    let frames = Arc::new(Mutex::new(busy_frames()));
    let _pusher = Pusher::video(camera.clone(), frames, 30);

    // A key-frame request is answered at once, not at the encoder's next
    // periodic key frame: wait until the last key frame is a few frames
    // old, ask, and count the frames until the next one; three times, so
    // that a periodic one cannot pass for the answer.
    let mut got = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let mut since_key = 0usize;
        m.node("bob")
            .frames_until(|f| {
                if is_video_from(f, "alice") {
                    since_key = if f.frame.keyframe { 0 } else { since_key + 1 };
                }
                since_key == 4
            })
            .await;
        bob.request_keyframe(&uid("alice")).await.unwrap();
        let mut after = 0usize;
        got = m
            .node("bob")
            .frames_until(|f| {
                if is_video_from(f, "alice") {
                    after += 1;
                }
                is_video_from(f, "alice") && f.frame.keyframe
            })
            .await;
        let idr = &got.last().unwrap().frame;
        assert!(h264_nal_types(&idr.data).contains(&5));
        waits.push(after);
    }
    assert!(
        waits.iter().all(|&n| n <= 5),
        "key frames came {waits:?} frames after the requests"
    );

    // The full 480p profile: 800 kbit/s, at the 30 fps camera's rate.
    let mut decoder = Video::new();
    for f in &got {
        if is_video_from(f, "alice") {
            decoder.decode(&f.frame);
        }
    }
    let full = window(m.node("bob"), 3.0).await;
    let (full_bps, full_fps) = rates(&full);
    let sizes: Vec<_> = full
        .iter()
        .filter(|f| is_video_from(f, "alice"))
        .filter_map(|f| decoder.decode(&f.frame))
        .map(|p| (p.width, p.height))
        .collect();
    assert!(
        !sizes.is_empty() && sizes.iter().all(|&s| s == (640, 480)),
        "{sizes:?}"
    );

    // The congestion controller asks for less: a quarter of the size, 10
    // fps, 150 kbit/s. The picture shrinks at the next (key) frame, with
    // the aspect ratio kept.
    alice.force_video_target(VideoTarget {
        bitrate_bps: 150_000,
        frame_rate: 10,
        max_height: 240,
    });
    m.node("bob")
        .frames_until(|f| {
            is_video_from(f, "alice")
                && decoder
                    .decode(&f.frame)
                    .is_some_and(|p| (p.width, p.height) == (320, 240))
        })
        .await;
    // Let the rate control settle, then measure.
    let settle = window(m.node("bob"), 1.0).await;
    let low = window(m.node("bob"), 3.0).await;
    let (low_bps, low_fps) = rates(&low);
    let mut decoded = 0;
    for f in settle
        .iter()
        .chain(&low)
        .filter(|f| is_video_from(f, "alice"))
    {
        if let Some(p) = decoder.decode(&f.frame) {
            assert_eq!((p.width, p.height), (320, 240));
            decoded += 1;
        }
    }
    assert!(decoded > 10);
    assert!(
        low_bps * 2.5 < full_bps,
        "bytes/s at full profile {full_bps:.0}, at 150 kbit/s {low_bps:.0}"
    );
    assert!(
        full_fps > 12.0 && low_fps < 12.0,
        "fps at full profile {full_fps:.1}, at 10 fps {low_fps:.1}"
    );
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_outlive_calls_and_refuse_frames_they_cannot_take() {
    let camera = RawVideoInput::new();
    let frame = halves(PixelFormat::Rgba, 1280, 720, false);

    // A VP8 session cannot encode raw frames (only H.264 here).
    let (vp8, _events) = MediaSession::new(
        uid("carol"),
        MediaConfig {
            video_codec: VideoCodec::Vp8,
            ..MediaConfig::loopback()
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        vp8.set_video_source(Some(VideoSource::Raw(camera.clone()))),
        Err(MediaError::CodecMismatch { .. })
    ));
    assert!(!camera.is_attached());
    vp8.close().await;

    // Two calls one after the other take frames from the same handle.
    for call in 0..2 {
        let mut m = mesh(&["alice", "bob"]).await;
        let alice = m.session("alice");
        alice
            .set_video_source(Some(VideoSource::Raw(camera.clone())))
            .unwrap();
        m.connect_all().await;
        let frames = Arc::new(Mutex::new(vec![frame.clone()]));
        let pusher = Pusher::video(camera.clone(), frames, 30);
        let got = m.node("bob").collect("alice", MediaKind::Video, 3).await;
        assert!(of(&got, "alice", MediaKind::Video).all(|f| f.codec == Codec::H264));
        drop(pusher);

        if call == 0 {
            // Pushed faster than the encoder takes them, frames are refused
            // with Full (the queue holds 3), never queued up.
            let results: Vec<_> = (0..50).map(|_| camera.push(frame.clone())).collect();
            assert!(results.contains(&Err(PushError::Full)), "{results:?}");
            assert!(results.iter().filter(|r| r.is_ok()).count() < 50);
            // Another source replaces it: the input is detached at once.
            alice
                .set_video_source(Some(VideoSource::TestPattern))
                .unwrap();
            assert_eq!(camera.push(frame.clone()), Err(PushError::NotSending));
        }
        m.close().await;
        assert_eq!(camera.push(frame.clone()), Err(PushError::NotSending));
    }
    let stats = camera.stats();
    assert!(stats.accepted > 0 && stats.dropped_full > 0 && stats.dropped_idle >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_inputs_forward_the_apps_frames() {
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    let audio_in = EncodedInput::new();
    let video_in = EncodedInput::new();
    alice
        .set_audio_source(Some(AudioSource::Encoded(audio_in.clone())))
        .unwrap();
    alice
        .set_video_source(Some(VideoSource::Encoded(video_in.clone())))
        .unwrap();
    m.connect_all().await;

    // Our own Opus and H.264, pushed in real time; a frame of the wrong
    // kind on each is dropped.
    let mut opus = opus_rs::OpusEncoder::new(48_000, 1, opus_rs::Application::Voip).unwrap();
    let mut h264 = openh264::encoder::Encoder::new().unwrap();
    let picture = openh264::formats::YUVBuffer::new(320, 240);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (a, v) = (audio_in.clone(), video_in.clone());
    let pusher = std::thread::spawn(move || {
        let mut sent = Vec::new();
        let pcm: Vec<i16> = (0..960).map(|i| ((i % 48) * 500) as i16).collect();
        let mut out = vec![0u8; 1500];
        let start = Instant::now();
        let mut i = 0u32;
        while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
            let n = opus.encode_i16(&pcm, 960, &mut out).unwrap();
            let packet = Bytes::copy_from_slice(&out[..n]);
            let frame = EncodedFrame::new(Codec::Opus, packet.clone(), Duration::from_millis(20));
            if a.push(frame).is_ok() {
                sent.push(packet);
            }
            if i % 3 == 0 {
                if i % 30 == 0 {
                    h264.force_intra_frame();
                }
                let au = h264.encode(&picture).unwrap().to_vec();
                let _ = v.push(EncodedFrame::new(
                    Codec::H264,
                    Bytes::from(au),
                    Duration::from_millis(60),
                ));
                let wrong =
                    EncodedFrame::new(Codec::Vp8, Bytes::from_static(&[0, 1, 2]), Duration::ZERO);
                let _ = v.push(wrong.clone());
                let _ = a.push(wrong);
            }
            i += 1;
            std::thread::sleep(
                (start + Duration::from_millis(20) * i).saturating_duration_since(Instant::now()),
            );
        }
        sent
    });
    let got = m
        .node("bob")
        .frames_until({
            let (mut audio, mut video) = (0, 0);
            move |f| {
                match f.frame.kind() {
                    MediaKind::Audio => audio += 1,
                    MediaKind::Video => video += 1,
                }
                audio >= 20 && video >= 3
            }
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let sent = pusher.join().unwrap();
    let audio: Vec<_> = of(&got, "alice", MediaKind::Audio).collect();
    let video: Vec<_> = of(&got, "alice", MediaKind::Video).collect();
    assert!(
        audio
            .iter()
            .all(|f| f.codec == Codec::Opus && sent.contains(&f.data))
    );
    assert!(video.iter().all(|f| f.codec == Codec::H264));
    assert_eq!(decode_h264(&video[0].data), (320, 240));
    m.close().await;
    assert!(!audio_in.is_attached() && !video_in.is_attached());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_pattern_follows_congestion_targets_too() {
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    m.connect_all().await;
    let mut decoder = Video::new();
    m.node("bob")
        .frames_until(|f| {
            is_video_from(f, "alice")
                && decoder
                    .decode(&f.frame)
                    .is_some_and(|p| (p.width, p.height) == (640, 480))
        })
        .await;
    alice.force_video_target(VideoTarget {
        bitrate_bps: 100_000,
        frame_rate: 5,
        max_height: 240,
    });
    m.node("bob")
        .frames_until(|f| {
            is_video_from(f, "alice")
                && decoder
                    .decode(&f.frame)
                    .is_some_and(|p| (p.width, p.height) == (320, 240))
        })
        .await;
    // The pattern is drawn at 5 fps now: frames 200 ms of media time apart.
    let frames = window(m.node("bob"), 2.0).await;
    let (_, fps) = rates(&frames);
    assert!(fps < 7.0, "{fps:.1} fps at a 5 fps target");
    m.close().await;
}
