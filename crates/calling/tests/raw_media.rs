//! Raw media through the SDK: the app's own pictures and samples in through
//! `VideoInput::Raw` / `AudioInput::Raw`, decoded pictures and PCM out
//! through `Calling::set_decoded_sink`, over the real server and WebRTC on
//! loopback; and what the input handles say across calls, camera changes
//! and hangups.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use calling::{
    AudioFrame, AudioInput, CallEvent, CallingConfig, Decoded, DecodedChannel, Event, MediaType,
    PixelFormat, PushError, RawAudioInput, RawVideoInput, Samples, VideoFrame, VideoInput,
};
use support::*;

const RING: Duration = Duration::from_secs(30);
const LIMIT: Duration = Duration::from_secs(30);

/// A 640x360 RGBA picture: red on the left half, blue on the right.
fn rgba_picture(t: Duration) -> VideoFrame {
    let (w, h) = (640usize, 360usize);
    let mut data = vec![0u8; w * h * 4];
    for (i, px) in data.chunks_exact_mut(4).enumerate() {
        let left = i % w < w / 2;
        px.copy_from_slice(if left {
            &[220, 20, 20, 255]
        } else {
            &[20, 20, 220, 255]
        });
    }
    VideoFrame::new(PixelFormat::Rgba, w as u32, h as u32, data, t).unwrap()
}

/// Pushes pictures at 15 fps and 10 ms stereo f32 chunks of a 660 Hz tone
/// until `stop`; returns the threads.
fn capture(
    video: RawVideoInput,
    audio: RawAudioInput,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let s2 = stop.clone();
    let v = std::thread::spawn(move || {
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let _ = video.push(rgba_picture(start.elapsed()));
            std::thread::sleep(Duration::from_millis(66));
        }
    });
    let a = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s2.load(Ordering::Relaxed) {
            let chunk: Vec<f32> = (0..480)
                .flat_map(|i| {
                    let t = (n * 480 + i) as f32 / 48_000.0;
                    let s = (t * 660.0 * std::f32::consts::TAU).sin() * 0.4;
                    [s, s]
                })
                .collect();
            let _ = audio.push(AudioFrame::new(Samples::F32(chunk), 2).unwrap());
            n += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    vec![v, a]
}

/// Power of `samples` at `hz` (Goertzel).
fn power(samples: &[f32], hz: f32) -> f32 {
    let w = std::f32::consts::TAU * hz / 48_000.0;
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in samples {
        let s = x + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pictures_and_samples_arrive_decoded() {
    let net = start().await;
    let (video, audio) = (RawVideoInput::new(), RawAudioInput::new());
    let config = CallingConfig {
        video: Some(VideoInput::Raw(video.clone())),
        audio: AudioInput::Raw(audio.clone()),
        ..CallingConfig::loopback()
    };
    let (alice, mut alice_events) = login_with(&net, "alice", config).await;
    let (bob, mut bob_events) = login(&net, "bob").await;
    let (sink, mut decoded) = DecodedChannel::new(512);
    bob.set_decoded_sink(Some(sink)).await.unwrap();

    // Outside a call nothing takes the pushes.
    assert_eq!(
        video.push(rgba_picture(Duration::ZERO)),
        Err(PushError::NotSending)
    );
    assert_eq!(
        audio.push(AudioFrame::mono_i16(vec![0; 480])),
        Err(PushError::NotSending)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let threads = capture(video.clone(), audio.clone(), stop.clone());
    alice.call("bob", MediaType::Video, RING).await.unwrap();
    let invite = invited(&mut bob_events).await;
    bob.accept(&invite).await.unwrap();

    // Pictures: the size pushed (it fits the 480p profile), red left, blue
    // right (V high on the left, U high on the right). Audio: the tone.
    let (mut pictures, mut pcm) = (0, Vec::new());
    let deadline = tokio::time::Instant::now() + LIMIT;
    while pictures < 10 || pcm.len() < 48_000 {
        let item = tokio::time::timeout_at(deadline, decoded.recv())
            .await
            .expect("decoded media within the limit")
            .unwrap();
        match item {
            Decoded::Video { user, frame } => {
                assert_eq!(user.as_str(), "alice");
                assert_eq!((frame.width, frame.height), (640, 360));
                let cw = frame.chroma_width();
                let row = frame.chroma_height() / 2 * cw;
                let (u, v) = (frame.u(), frame.v());
                assert!(
                    v[row + cw / 4] > 170 && u[row + cw / 4] < 140,
                    "left is red"
                );
                assert!(
                    u[row + 3 * cw / 4] > 170 && v[row + 3 * cw / 4] < 140,
                    "right is blue"
                );
                pictures += 1;
            }
            Decoded::Audio { user, frame } => {
                assert_eq!(user.as_str(), "alice");
                let ch = usize::from(frame.channels);
                pcm.extend(frame.samples.chunks_exact(ch).map(|c| c[0]));
            }
        }
    }
    let tail = &pcm[pcm.len() - 24_000..];
    assert!(
        power(tail, 660.0) > 10.0 * power(tail, 1_500.0),
        "the decoded audio is the 660 Hz tone"
    );
    assert!(video.stats().accepted >= 10);

    // Hands-free picks an output device; it no longer silences the audio.
    bob.set_hands_free(true).await.unwrap();
    let mut heard = 0;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while heard < 25 {
        if let Decoded::Audio { .. } = tokio::time::timeout_at(deadline, decoded.recv())
            .await
            .expect("audio goes on with hands-free")
            .unwrap()
        {
            heard += 1;
        }
    }

    // The camera closed, pictures are refused; open again, taken again.
    alice.close_camera().await.unwrap();
    assert_eq!(
        video.push(rgba_picture(Duration::ZERO)),
        Err(PushError::NotSending)
    );
    alice
        .open_camera(VideoInput::Raw(video.clone()))
        .await
        .unwrap();
    assert!(video.is_attached());

    alice.hangup().await.unwrap();
    expect(&mut bob_events, "the call ends", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    expect(&mut alice_events, "the call ends", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    // After the call, the handles are idle again.
    let deadline = Instant::now() + LIMIT;
    while video.is_attached() || audio.is_attached() {
        assert!(
            Instant::now() < deadline,
            "the sources let go of the inputs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}
