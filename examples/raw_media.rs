//! Raw media through a real call, end to end, and how long it takes:
//!
//! ```sh
//! cargo run --release --example raw_media [-- --secs 10 --quality 720p --fps 30]
//! ```
//!
//! It starts the signaling server in-process on 127.0.0.1:0, logs in alice
//! and bob, and alice video-calls bob. Both push raw I420 pictures (a
//! moving scene with the frame number drawn into it as a row of black and
//! white blocks) and 10 ms chunks of raw PCM into the call through
//! [`calling::RawVideoInput`] / [`calling::RawAudioInput`]; the SDK scales,
//! encodes (H.264, Opus), sends, and on the other side decodes. Each side
//! reads the frame number back out of every decoded picture, so it knows
//! which pushed frame it is and how long it took from the push to the
//! decoded picture (glass to glass, without the camera and the screen).
//!
//! It prints frames sent / received / decoded, push -> decoded latency
//! p50 / p95, audio pushed / decoded, the CPU the whole process used per
//! call end (each end encodes its own video and decodes the other's), and
//! its memory, then exits 0, or non-zero when a side decoded nothing.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calling::{
    AudioFrame, AudioInput, CallEvent, Calling, CallingConfig, DecodedAudioFrame, DecodedSink,
    DecodedVideoFrame, Event, Events, MediaType, PixelFormat, PushError, RawAudioInput,
    RawVideoInput, UserId, VideoFrame, VideoInput, VideoQuality,
};
use clap::Parser;

#[path = "support/logging.rs"]
mod logging;

const APP: u64 = 1_400_000_000;
/// Bits of the frame number drawn into each picture.
const BITS: u32 = 16;

/// Raw media through a real call, end to end: frames pushed, decoded, and
/// how long from push to decoded picture.
#[derive(Debug, Clone, Parser)]
#[command(name = "raw_media")]
struct Args {
    /// Seconds of media once the call is up.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Video profile: 480p, 720p or 1080p.
    #[arg(long, default_value = "720p", value_parser = parse_quality)]
    quality: VideoQuality,
    /// Pictures pushed per second, 1 to 60.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60))]
    fps: u32,
}

fn parse_quality(s: &str) -> Result<VideoQuality, String> {
    match s {
        "480p" => Ok(VideoQuality::P480),
        "720p" => Ok(VideoQuality::P720),
        "1080p" => Ok(VideoQuality::P1080),
        q => Err(format!("{q}: 480p, 720p or 1080p")),
    }
}

/// Draws `n` into the Y plane of a `w` x `h` picture: a row of
/// [`BITS`] blocks, white for a 1, black for a 0, between two white guard
/// blocks, placed relative to the picture size so it survives scaling.
fn draw_number(y: &mut [u8], w: usize, h: usize, n: u32) {
    let cols = BITS as usize + 2;
    let (top, bottom) = (h / 10, h / 10 + h / 8);
    for c in 0..cols {
        let bit = match c {
            0 => true,
            c if c == cols - 1 => true,
            c => (n >> (BITS as usize - c)) & 1 == 1,
        };
        let value = if bit { 235 } else { 16 };
        let (x0, x1) = (
            w * (2 * c + 1) / (2 * cols + 2),
            w * (2 * c + 2) / (2 * cols + 2),
        );
        for row in y[top * w..bottom * w].chunks_exact_mut(w) {
            row[x0..x1].fill(value);
        }
    }
}

/// Reads the number [`draw_number`] drew, from the middle of each block;
/// `None` when the guard blocks are not white (not one of our pictures).
fn read_number(frame: &DecodedVideoFrame) -> Option<u32> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let y = frame.y();
    let cols = BITS as usize + 2;
    let row = h / 10 + h / 16;
    let sample = |c: usize| {
        let x = w * (4 * c + 3) / (4 * cols + 4);
        let mut sum = 0u32;
        for dy in 0..3 {
            for dx in 0..3 {
                sum += u32::from(*y.get((row + dy) * w + x + dx)?);
            }
        }
        Some(sum / 9 > 128)
    };
    if !sample(0)? || !sample(cols - 1)? {
        return None;
    }
    let mut n = 0;
    for c in 1..=BITS as usize {
        n = (n << 1) | u32::from(sample(c)?);
    }
    Some(n)
}

/// A moving I420 scene: diagonal gradient bars scrolling, so the encoder
/// has real work, with the frame number on top.
struct Scene {
    w: usize,
    h: usize,
    buf: Vec<u8>,
}

impl Scene {
    fn new(w: usize, h: usize) -> Self {
        Scene {
            w,
            h,
            buf: vec![128; w * h + 2 * w.div_ceil(2) * h.div_ceil(2)],
        }
    }

    fn frame(&mut self, n: u32, timestamp: Duration) -> Result<VideoFrame, String> {
        let (w, h) = (self.w, self.h);
        let shift = n as usize * 6;
        let (y, chroma) = self.buf.split_at_mut(w * h);
        for (r, row) in y.chunks_exact_mut(w).enumerate() {
            for (x, p) in row.iter_mut().enumerate() {
                *p = (((x + r + shift) / 3) % 220 + 16) as u8;
            }
        }
        let cw = w.div_ceil(2);
        for (r, row) in chroma.chunks_exact_mut(cw).enumerate() {
            for (x, p) in row.iter_mut().enumerate() {
                *p = (((x * 2 + r + shift / 2) / 2) % 200 + 28) as u8;
            }
        }
        draw_number(y, w, h, n);
        VideoFrame::new(
            PixelFormat::I420,
            w as u32,
            h as u32,
            self.buf.clone(),
            timestamp,
        )
        .map_err(|e| e.to_string())
    }
}

/// What one side saw of the other's media.
#[derive(Default)]
struct Tally {
    /// When each pushed frame number was pushed (the sender's table).
    pushed: Mutex<HashMap<u32, Instant>>,
    /// Decoded pictures, those whose number was read, and latencies.
    decoded: AtomicU64,
    numbered: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    audio_decoded: AtomicU64,
    sizes: Mutex<HashMap<(u32, u32), u64>>,
}

/// The decoded sink of one side, reading the other side's pushes.
struct Reader {
    /// The other side's push times.
    from: Arc<Tally>,
    /// This side's tally of what it decoded.
    tally: Arc<Tally>,
}

impl DecodedSink for Reader {
    fn on_video(&self, _user: &UserId, frame: &DecodedVideoFrame) {
        self.tally.decoded.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.tally.sizes.lock() {
            *s.entry((frame.width, frame.height)).or_default() += 1;
        }
        let Some(n) = read_number(frame) else { return };
        let pushed = self
            .from
            .pushed
            .lock()
            .ok()
            .and_then(|p| p.get(&n).copied());
        if let Some(at) = pushed {
            self.tally.numbered.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = self.tally.latencies.lock() {
                l.push(frame.decoded_at.saturating_duration_since(at));
            }
        }
    }

    fn on_audio(&self, _user: &UserId, _frame: &DecodedAudioFrame) {
        self.tally.audio_decoded.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of one side's pushes.
#[derive(Default)]
struct Pushes {
    video: AtomicU64,
    video_refused: AtomicU64,
    audio: AtomicU64,
}

/// Pushes video at `fps` and 10 ms audio chunks until `stop`, on threads
/// of its own, as a capture device would.
fn start_capture(
    args: &Args,
    video: RawVideoInput,
    audio: RawAudioInput,
    tally: Arc<Tally>,
    pushes: Arc<Pushes>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (w, h) = args.quality.resolution();
    let period = Duration::from_secs(1) / args.fps;
    let (v_stop, a_stop, a_pushes) = (stop.clone(), stop, pushes.clone());
    let video_thread = std::thread::spawn(move || {
        let mut scene = Scene::new(w as usize, h as usize);
        let start = Instant::now();
        let mut n = 0u32;
        while !v_stop.load(Ordering::Relaxed) {
            let due = start + period * n;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let frame = match scene.frame(n % (1 << BITS), start.elapsed()) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("cannot build a frame: {e}");
                    return;
                }
            };
            let at = Instant::now();
            match video.push(frame) {
                Ok(()) => {
                    if let Ok(mut p) = tally.pushed.lock() {
                        p.insert(n % (1 << BITS), at);
                    }
                    pushes.video.fetch_add(1, Ordering::Relaxed);
                }
                Err(PushError::NotSending) => {}
                Err(_) => {
                    pushes.video_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            n += 1;
        }
    });
    let audio_thread = std::thread::spawn(move || {
        let start = Instant::now();
        let mut k = 0u32;
        let mut phase = 0f32;
        while !a_stop.load(Ordering::Relaxed) {
            let due = start + Duration::from_millis(10) * k;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let chunk: Vec<i16> = (0..480)
                .map(|_| {
                    phase =
                        (phase + std::f32::consts::TAU * 440.0 / 48_000.0) % std::f32::consts::TAU;
                    (phase.sin() * 8000.0) as i16
                })
                .collect();
            if audio.push(AudioFrame::mono_i16(chunk)).is_ok() {
                a_pushes.audio.fetch_add(1, Ordering::Relaxed);
            }
            k += 1;
        }
    });
    vec![video_thread, audio_thread]
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux we run on.
    Some(Duration::from_millis(ticks * 10))
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn until(events: &mut Events, secs: u64, pred: impl Fn(&Event) -> bool) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .ok()??;
        if pred(&e) {
            return Some(e);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    logging::init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("raw_media failed: {why}");
            ExitCode::FAILURE
        }
    }
}

/// One logged-in side and its inputs.
struct Side {
    client: Calling,
    events: Events,
    video: RawVideoInput,
    audio: RawAudioInput,
    tally: Arc<Tally>,
    pushes: Arc<Pushes>,
}

async fn run(args: Args) -> Result<(), String> {
    let key = "raw-media-secret-key";
    let mut config = calling_server::Config::new(APP, key);
    config.listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let server = calling_server::Server::bind(config)
        .await
        .map_err(|e| format!("server: {e}"))?;
    let url = format!("ws://{}/ws", server.local_addr());
    let rss_before = rss_kib();

    let login = |user: &'static str| {
        let url = url.clone();
        let quality = args.quality;
        async move {
            let video = RawVideoInput::new();
            let audio = RawAudioInput::new();
            let mut config = CallingConfig::loopback();
            config.media.video_quality = quality;
            config.video = Some(VideoInput::Raw(video.clone()));
            config.audio = AudioInput::Raw(audio.clone());
            let sig = calling_usersig::generate(APP, key, user, 3600, calling_usersig::now_unix());
            let (client, events) = Calling::login(calling::Login {
                server: url.to_string(),
                sdk_app_id: APP,
                user_id: user.to_string(),
                user_sig: sig,
                config,
            })
            .await
            .map_err(|e| format!("{user} login: {e}"))?;
            client
                .set_video_quality(quality)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(Side {
                client,
                events,
                video,
                audio,
                tally: Arc::default(),
                pushes: Arc::default(),
            })
        }
    };
    let mut alice = login("alice").await?;
    let mut bob = login("bob").await?;
    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let reader = Reader {
            from: other.tally.clone(),
            tally: me.tally.clone(),
        };
        me.client
            .set_decoded_sink(Some(Arc::new(reader)))
            .await
            .map_err(|e| e.to_string())?;
    }

    alice
        .client
        .call("bob", MediaType::Video, Duration::from_secs(30))
        .await
        .map_err(|e| format!("call: {e}"))?;
    let invite = match until(&mut bob.events, 10, |e| {
        matches!(e, Event::Call(CallEvent::Invited { .. }))
    })
    .await
    {
        Some(Event::Call(CallEvent::Invited { invite_id, .. })) => invite_id,
        _ => return Err("bob was never invited".into()),
    };
    bob.client
        .accept(&invite)
        .await
        .map_err(|e| format!("accept: {e}"))?;
    until(&mut alice.events, 10, |e| {
        matches!(e, Event::Call(CallEvent::UserEnter { .. }))
    })
    .await
    .ok_or("bob never entered alice's call")?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for side in [&alice, &bob] {
        threads.extend(start_capture(
            &args,
            side.video.clone(),
            side.audio.clone(),
            side.tally.clone(),
            side.pushes.clone(),
            stop.clone(),
        ));
    }
    // The first second is call setup and the first key frame: measure
    // CPU and memory over the rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let flow = tokio::time::Instant::now() + Duration::from_secs(args.secs);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(flow) => break,
            Some(_) = alice.events.recv() => {}
            Some(_) = bob.events.recv() => {}
        }
    }
    let (cpu1, wall) = (cpu_time(), t0.elapsed());
    let rss_call = rss_kib();
    // Frames encoded and sent by one side, and received whole by the other.
    let frames = |stats: Result<Vec<calling::PeerStats>, _>| {
        stats
            .ok()
            .and_then(|s| s.first().cloned())
            .map_or((0, 0), |s| (s.video_frames_sent, s.video_frames_received))
    };
    let alice_frames = frames(alice.client.stats().await);
    let bob_frames = frames(bob.client.stats().await);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    alice.client.hangup().await.map_err(|e| e.to_string())?;
    until(&mut alice.events, 10, |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    alice.client.logout().await.ok();
    bob.client.logout().await.ok();
    server.shutdown().await;

    let (w, h) = args.quality.resolution();
    println!(
        "raw media, {w}x{h} at {} fps pushed, {} s measured, both directions",
        args.fps, args.secs
    );
    let mut failures = Vec::new();
    for (from, to, sender, receiver, (sent, _), (_, received)) in [
        ("alice", "bob", &alice, &bob, alice_frames, bob_frames),
        ("bob", "alice", &bob, &alice, bob_frames, alice_frames),
    ] {
        let t = &receiver.tally;
        let mut lat = t.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        lat.sort();
        let decoded = t.decoded.load(Ordering::Relaxed);
        let sizes = t.sizes.lock().map(|s| s.clone()).unwrap_or_default();
        println!(
            "  {from} -> {to}: video pushed {} (refused {}), sent {sent}, received {received}, decoded {decoded}, numbers read {}, sizes {sizes:?}",
            sender.pushes.video.load(Ordering::Relaxed),
            sender.pushes.video_refused.load(Ordering::Relaxed),
            t.numbered.load(Ordering::Relaxed),
        );
        println!(
            "  {from} -> {to}: push -> decoded latency p50 {:.1} ms, p95 {:.1} ms ({} samples)",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.95).as_secs_f64() * 1e3,
            lat.len()
        );
        println!(
            "  {from} -> {to}: audio chunks pushed {} (10 ms), decoded frames {} (20 ms)",
            sender.pushes.audio.load(Ordering::Relaxed),
            t.audio_decoded.load(Ordering::Relaxed)
        );
        if decoded == 0 {
            failures.push(format!("{to} decoded no video from {from}"));
        }
        if t.audio_decoded.load(Ordering::Relaxed) == 0 {
            failures.push(format!("{to} decoded no audio from {from}"));
        }
    }
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        let used = b.saturating_sub(a).as_secs_f64() / wall.as_secs_f64();
        println!(
            "  CPU: {:.0} % of one core for the process, {:.0} % per call end (encode + decode + transport)",
            used * 100.0,
            used * 50.0
        );
    }
    if let (Some(a), Some(b)) = (rss_before, rss_call) {
        println!(
            "  memory: RSS {} MiB before login, {} MiB in the call: {:.1} MiB per call end",
            a / 1024,
            b / 1024,
            b.saturating_sub(a) as f64 / 2048.0
        );
    }
    if failures.is_empty() {
        println!("ok: raw media decoded both ways");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_survive_drawing_and_reading() {
        for (w, h) in [(1280usize, 720usize), (640, 360), (320, 180)] {
            for n in [0u32, 1, 0x5a5a, 0xffff] {
                let mut scene = Scene::new(w, h);
                let f = scene.frame(n, Duration::ZERO).unwrap();
                let d = DecodedVideoFrame {
                    width: w as u32,
                    height: h as u32,
                    data: f.data().clone(),
                    rtp_timestamp: 0,
                    timestamp: Duration::ZERO,
                    decoded_at: Instant::now(),
                };
                assert_eq!(read_number(&d), Some(n), "{w}x{h} {n}");
            }
        }
    }
}
