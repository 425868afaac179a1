//! Decoded media out of a real call on loopback: pictures of the sender's
//! test pattern and its 440 Hz tone, the files a recorder makes of them,
//! and what happens around packet loss.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calling_media::{
    AudioSource, Decoded, DecodedAudioFrame, DecodedChannel, DecodedRecorder, DecodedSink,
    DecodedVideoFrame, MediaEvent, MediaKind, UserId, VideoQuality, VideoSource,
};
use common::*;
use tokio::sync::mpsc;

/// The tests here each run a call with codecs on both ends: one at a time
/// (the machine has two cores), and the decoder-thread count of one is not
/// disturbed by another.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tone() -> AudioSource {
    AudioSource::Tone {
        frequency_hz: 440.0,
        amplitude: 0.5,
    }
}

/// The test pattern's bars, as (Y, U, V), left to right.
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

fn median(mut v: Vec<u8>) -> u8 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Checks that a picture is the test pattern, cleanly decoded: eight
/// vertical bars of the right colours in the right order (at some scroll
/// position), every pixel of them within a small error of its bar or of the
/// white square, chroma included.
fn check_pattern(f: &DecodedVideoFrame) -> Result<(), String> {
    let (w, h) = (f.width as usize, f.height as usize);
    if f.data.len() != w * h + 2 * w.div_ceil(2) * h.div_ceil(2) {
        return Err(format!("{} bytes for {w}x{h}", f.data.len()));
    }
    let (y, u, v) = (f.y(), f.u(), f.v());
    let cw = f.chroma_width();
    let bar = |x: usize, s: usize| ((x + s) * 8 / w) % 8;
    // Per column, the median over the rows: the bouncing square covers a
    // sixth of them at most.
    let col: Vec<u8> = (0..w)
        .map(|x| median((0..h).step_by(4).map(|r| y[r * w + x]).collect()))
        .collect();
    let (shift, hits) = (0..w)
        .map(|s| {
            let hits = (0..w)
                .filter(|&x| col[x].abs_diff(BARS[bar(x, s)].0) <= 24)
                .count();
            (s, hits)
        })
        .max_by_key(|&(_, n)| n)
        .unwrap();
    if hits * 100 < w * 90 {
        return Err(format!("no bar layout fits: best {hits} of {w} columns"));
    }
    let mut bad = 0;
    for r in 0..h {
        for x in 0..w {
            let p = y[r * w + x];
            if p.abs_diff(BARS[bar(x, shift)].0) > 32 && p.abs_diff(235) > 32 {
                bad += 1;
            }
        }
    }
    if bad * 100 > w * h * 3 {
        return Err(format!("{bad} of {} luma pixels off the pattern", w * h));
    }
    let (mut chroma_ok, mut chroma_n) = (0, 0);
    for cx in 0..cw {
        let x = cx * 2;
        let b = bar(x, shift);
        // Away from bar edges, where chroma is smeared by subsampling.
        if bar(x.saturating_sub(8), shift) != b || bar((x + 8).min(w - 1), shift) != b {
            continue;
        }
        let rows = (0..h.div_ceil(2)).step_by(4);
        let mu = median(rows.clone().map(|r| u[r * cw + cx]).collect());
        let mv = median(rows.map(|r| v[r * cw + cx]).collect());
        chroma_n += 1;
        if mu.abs_diff(BARS[b].1) <= 30 && mv.abs_diff(BARS[b].2) <= 30 {
            chroma_ok += 1;
        }
    }
    if chroma_ok * 100 < chroma_n * 90 {
        return Err(format!("chroma fits {chroma_ok} of {chroma_n} columns"));
    }
    Ok(())
}

/// Power of `x` (48 kHz) at `hz`.
fn goertzel(x: &[f32], hz: f64) -> f64 {
    let c = 2.0 * (2.0 * std::f64::consts::PI * hz / 48_000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

fn assert_tone(samples: &[f32]) {
    let at_440 = goertzel(samples, 440.0);
    let at_1000 = goertzel(samples, 1000.0);
    assert!(
        at_440 > 10.0 * at_1000 && at_440 > 0.0,
        "440 Hz power {at_440:.3e}, 1000 Hz {at_1000:.3e}"
    );
}

/// Decoder threads of this process (Linux: /proc), by their names.
fn decoder_threads() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| {
                name.starts_with("calling-h264-de") || name.starts_with("calling-opus-de")
            })
            .count(),
    )
}

/// Waits (bounded) until `n` decoder threads run; panics if they never do.
async fn wait_decoder_threads(n: usize) {
    if decoder_threads().is_none() {
        return;
    }
    let deadline = Instant::now() + WAIT;
    while decoder_threads() != Some(n) {
        assert!(
            Instant::now() < deadline,
            "{:?} decoder threads, {n} expected",
            decoder_threads()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A decoded sink that feeds a channel and a recorder, counting the
/// pictures of each size it passed on.
struct Tee {
    channel: Arc<DecodedChannel>,
    recorder: Arc<DecodedRecorder>,
    pictures: Mutex<HashMap<(u32, u32), u64>>,
    audio: AtomicU64,
}

impl DecodedSink for Tee {
    fn on_video(&self, user: &UserId, frame: &DecodedVideoFrame) {
        *self
            .pictures
            .lock()
            .unwrap()
            .entry((frame.width, frame.height))
            .or_default() += 1;
        self.channel.on_video(user, frame);
        self.recorder.on_video(user, frame);
    }

    fn on_audio(&self, user: &UserId, frame: &DecodedAudioFrame) {
        self.audio.fetch_add(1, Ordering::Relaxed);
        self.channel.on_audio(user, frame);
        self.recorder.on_audio(user, frame);
    }
}

/// Reads decoded media until `done` says so (bounded by [`WAIT`]).
async fn decoded_until(
    rx: &mut mpsc::Receiver<Decoded>,
    mut done: impl FnMut(&Decoded) -> bool,
) -> Vec<Decoded> {
    let mut seen = Vec::new();
    let res = tokio::time::timeout(WAIT, async {
        while let Some(d) = rx.recv().await {
            let stop = done(&d);
            seen.push(d);
            if stop {
                return;
            }
        }
        panic!("decoded channel closed");
    })
    .await;
    if res.is_err() {
        let video = seen
            .iter()
            .filter(|d| matches!(d, Decoded::Video { .. }))
            .count();
        panic!(
            "timed out waiting for decoded media: {video} pictures, {} audio frames",
            seen.len() - video
        );
    }
    seen
}

fn header_of(path: &std::path::Path) -> (usize, usize, y4m::Ratio, usize) {
    let mut d = y4m::decode(std::fs::File::open(path).unwrap()).unwrap();
    let (w, h, rate) = (d.get_width(), d.get_height(), d.get_framerate());
    let mut frames = 0;
    while let Ok(f) = d.read_frame() {
        if frames == 0 {
            let pic = DecodedVideoFrame {
                width: w as u32,
                height: h as u32,
                data: [f.get_y_plane(), f.get_u_plane(), f.get_v_plane()]
                    .concat()
                    .into(),
                rtp_timestamp: 0,
                timestamp: Duration::ZERO,
                decoded_at: Instant::now(),
            };
            check_pattern(&pic).unwrap_or_else(|e| panic!("{path:?}: first picture: {e}"));
        }
        frames += 1;
    }
    (w, h, rate, frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_pictures_and_tone_arrive_and_are_recorded() {
    let _serial = SERIAL.lock().await;
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    let bob = m.session("bob");
    alice.set_audio_source(Some(tone())).unwrap();
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    m.connect_all().await;

    // Media flows, no decoded sink: no decoder runs.
    m.node("bob").collect("alice", MediaKind::Video, 3).await;
    m.node("bob").collect("alice", MediaKind::Audio, 10).await;
    if let Some(n) = decoder_threads() {
        assert_eq!(n, 0, "decoders start only for a decoded sink");
    }

    let dir = std::env::temp_dir().join(format!("calling-decoded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (channel, mut rx) = DecodedChannel::new(64);
    let recorder = Arc::new(DecodedRecorder::new(&dir));
    let tee = Arc::new(Tee {
        channel,
        recorder: recorder.clone(),
        pictures: Mutex::default(),
        audio: AtomicU64::new(0),
    });
    bob.set_decoded_sink(Some(tee.clone()));

    let (mut pictures, mut chunks) = (0, 0);
    let got = decoded_until(&mut rx, |d| {
        match d {
            Decoded::Video { .. } => pictures += 1,
            Decoded::Audio { .. } => chunks += 1,
        }
        pictures >= 20 && chunks >= 75
    })
    .await;
    wait_decoder_threads(2).await;
    let mut samples = Vec::new();
    let mut last_video: Option<&DecodedVideoFrame> = None;
    for d in &got {
        assert_eq!(d.user().as_str(), "alice");
        match d {
            Decoded::Video { frame, .. } => {
                assert_eq!((frame.width, frame.height), VideoQuality::P480.resolution());
                check_pattern(frame).unwrap_or_else(|e| panic!("picture: {e}"));
                if let Some(prev) = last_video {
                    // Media time follows the RTP clock of 90 kHz.
                    let ticks = frame.rtp_timestamp.wrapping_sub(prev.rtp_timestamp);
                    assert!(ticks > 0 && ticks < 90_000 * 2, "{ticks} ticks apart");
                    let dt = (frame.timestamp - prev.timestamp).as_nanos();
                    let want = u128::from(ticks) * 1_000_000_000 / 90_000;
                    assert!(dt.abs_diff(want) <= 1, "{dt} ns for {ticks} ticks");
                    assert!(frame.decoded_at >= prev.decoded_at);
                }
                last_video = Some(frame);
            }
            Decoded::Audio { frame, .. } => {
                assert_eq!(frame.channels, 1);
                assert_eq!(frame.samples.len(), 960, "20 ms at 48 kHz");
                samples.extend_from_slice(&frame.samples);
            }
        }
    }
    // The last half second: the tone, not the decoder's start.
    assert_tone(&samples[samples.len() - 24_000..]);

    // The sender adapts its resolution: pictures come at the new size.
    alice.set_video_quality(VideoQuality::P720);
    let got = decoded_until(
        &mut rx,
        |d| matches!(d, Decoded::Video { frame, .. } if frame.width == 1280),
    )
    .await;
    let Some(Decoded::Video { frame, .. }) = got.last() else {
        unreachable!()
    };
    assert_eq!((frame.width, frame.height), (1280, 720));
    check_pattern(frame).unwrap_or_else(|e| panic!("720p picture: {e}"));
    // A few more at the new size.
    let mut more = 0;
    decoded_until(&mut rx, |d| {
        if let Decoded::Video { frame, .. } = d {
            assert_eq!(frame.width, 1280);
            check_pattern(frame).unwrap_or_else(|e| panic!("720p picture: {e}"));
            more += 1;
        }
        more >= 3
    })
    .await;

    // Muted remote audio holds decoded audio back as it does encoded audio, and
    // pictures keep coming.
    bob.set_remote_audio_muted(true);
    // What was decoded before is still on its way out (the channel and the
    // decoder queues): skip to pictures handed out well after.
    let quiet = Instant::now() + Duration::from_millis(500);
    decoded_until(
        &mut rx,
        |d| matches!(d, Decoded::Video { frame, .. } if frame.decoded_at > quiet),
    )
    .await;
    let (mut n, mut heard) = (0, 0);
    decoded_until(&mut rx, |d| {
        match d {
            Decoded::Video { .. } => n += 1,
            Decoded::Audio { .. } => heard += 1,
        }
        n >= 8
    })
    .await;
    assert_eq!(heard, 0, "decoded audio while muted");
    bob.set_remote_audio_muted(false);
    let mut heard = 0;
    decoded_until(&mut rx, |d| {
        heard += usize::from(matches!(d, Decoded::Audio { .. }));
        heard >= 30
    })
    .await;

    // Unset: the decoder threads end, and nothing more is handed out.
    bob.set_decoded_sink(None);
    wait_decoder_threads(0).await;
    recorder.finish().unwrap();
    assert_eq!(recorder.errors(), 0);

    let pictures = tee.pictures.lock().unwrap().clone();
    let (w, h, rate, frames) = header_of(&dir.join("alice.y4m"));
    assert_eq!((w, h), (640, 480));
    assert_eq!(frames as u64, pictures[&(640, 480)]);
    // 15 fps from the stream (a skipped frame or two may lower it a bit).
    assert!(
        rate.den == 1 && (10..=16).contains(&rate.num),
        "rate {rate}"
    );
    let (w, h, _, frames) = header_of(&dir.join("alice-2.y4m"));
    assert_eq!((w, h), (1280, 720));
    assert_eq!(frames as u64, pictures[&(1280, 720)]);

    let mut wav = hound::WavReader::open(dir.join("alice.wav")).unwrap();
    let spec = wav.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (48_000, 1, 16)
    );
    let pcm: Vec<f32> = wav
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    assert!(pcm.len() as u64 >= tee.audio.load(Ordering::Relaxed) * 960);
    assert_tone(&pcm[pcm.len() - 24_000..]);
    let _ = std::fs::remove_dir_all(&dir);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_loss_decoding_resumes_from_a_requested_key_frame() {
    let _serial = SERIAL.lock().await;
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    let bob = m.session("bob");
    alice.set_audio_source(Some(tone())).unwrap();
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    let (sink, mut rx) = DecodedChannel::new(64);
    bob.set_decoded_sink(Some(sink));
    m.connect_all().await;

    let mut pictures = 0;
    decoded_until(&mut rx, |d| {
        if let Decoded::Video { frame, .. } = d {
            check_pattern(frame).unwrap_or_else(|e| panic!("before the loss: {e}"));
            pictures += 1;
        }
        pictures >= 10
    })
    .await;
    // What bob got encoded so far, and alice's key-frame requests so far.
    let mut encoded: Vec<(u32, bool)> = Vec::new();
    while let Ok(f) = m.node("bob").frames.try_recv() {
        if f.frame.kind() == MediaKind::Video {
            encoded.push((f.frame.rtp_timestamp, f.frame.keyframe));
        }
    }
    let before = encoded.len();
    assert!(before > 0);
    while m.node("alice").events.try_recv().is_ok() {}

    bob.set_path_blocked(&uid("alice"), true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.set_path_blocked(&uid("alice"), false);

    // Collect both views until decoding has clearly resumed: the encoded
    // frames (to find the gap and the key frame after it) and the decoded.
    let mut decoded: Vec<DecodedVideoFrame> = Vec::new();
    let mut concealed = 0;
    let resumed = |encoded: &[(u32, bool)], decoded: &[DecodedVideoFrame]| -> bool {
        let Some((_, key)) = gap_and_key(encoded) else {
            return false;
        };
        decoded
            .iter()
            .filter(|f| f.rtp_timestamp.wrapping_sub(key) as i32 >= 0)
            .count()
            >= 10
    };
    let bob_node = m.node("bob");
    tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                Some(f) = bob_node.frames.recv() => {
                    if f.frame.kind() == MediaKind::Video {
                        encoded.push((f.frame.rtp_timestamp, f.frame.keyframe));
                    }
                }
                Some(d) = rx.recv() => match d {
                    Decoded::Video { frame, .. } => decoded.push(frame),
                    Decoded::Audio { frame, .. } => concealed += usize::from(frame.concealed),
                },
            }
            if resumed(&encoded, &decoded) && concealed > 0 {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "decoding did not resume: gap and key {:?}, {} pictures, {concealed} concealed",
            gap_and_key(&encoded),
            decoded.len()
        )
    });

    let (gap, key) = gap_and_key(&encoded).unwrap();
    assert!(
        encoded[before..].iter().any(|&(ts, _)| ts == gap),
        "the gap is in what came after the block"
    );
    // No picture from the frames between the loss and the key frame.
    let between: Vec<u32> = decoded
        .iter()
        .map(|f| f.rtp_timestamp)
        .filter(|&ts| {
            let d = ts.wrapping_sub(gap) as i32;
            d >= 0 && d < key.wrapping_sub(gap) as i32
        })
        .collect();
    assert!(
        between.is_empty(),
        "pictures decoded from frames after the loss, before the key frame: {between:?}"
    );
    for f in &decoded {
        check_pattern(f).unwrap_or_else(|e| panic!("after the loss, ts {}: {e}", f.rtp_timestamp));
    }
    // Bob asked alice for that key frame.
    m.node("alice")
        .event(|e| matches!(e, MediaEvent::KeyframeRequested { user } if user.as_str() == "bob"))
        .await;
    assert!(
        concealed <= 3,
        "at most 3 concealed frames for one gap: {concealed}"
    );
    // Closing the session ends its decoder threads.
    m.close().await;
    wait_decoder_threads(0).await;
}

/// In bob's encoded video, the first frame after a gap of more than about
/// 220 ms (the blocked path) and the first key frame from there on.
fn gap_and_key(encoded: &[(u32, bool)]) -> Option<(u32, u32)> {
    let at = encoded.windows(2).position(|w| {
        let d = w[1].0.wrapping_sub(w[0].0);
        d > 20_000 && d < 1 << 31
    })? + 1;
    let gap = encoded[at].0;
    let key = encoded[at..].iter().find(|&&(_, k)| k)?.0;
    Some((gap, key))
}
