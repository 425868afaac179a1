//! Media benchmarks on loopback (Linux; reads /proc for memory and CPU):
//!
//! 1. setup: 50 times, a fresh callee session connects to a caller that is
//!    already sending the generated pattern; time from `connect` until the
//!    callee has assembled the first video frame. p50/p95/max.
//! 2. memory: RSS growth over N idle, connected peer connections, per
//!    connection.
//! 3. CPU: one 720p call (generated pattern + tone both ways) for a few
//!    seconds; process CPU time over wall time.
//!
//! `cargo bench -p calling-media --bench media [-- setup|memory|cpu]`
//! Environment: SETUP_RUNS (50), IDLE_PEERS (50), CPU_SECS (10), ICE_CHECK_MS
//! (the session default, 5).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calling_media::{
    AudioSource, MediaConfig, MediaEvent, MediaKind, MediaSession, PeerState, UserId, VideoQuality,
    VideoSource,
};
use tokio::sync::{Mutex, mpsc};

const WAIT: Duration = Duration::from_secs(10);

type Directory = Arc<Mutex<HashMap<UserId, MediaSession>>>;

/// A user id from a name the benchmark builds itself.
fn uid(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// Carries a session's signals to the others; forwards other events.
fn route(
    name: UserId,
    mut rx: mpsc::UnboundedReceiver<MediaEvent>,
    dir: Directory,
) -> mpsc::UnboundedReceiver<MediaEvent> {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                MediaEvent::Signal { to, signal } => {
                    let peer = dir.lock().await.get(&to).cloned();
                    if let Some(peer) = peer {
                        if let Err(e) = peer.handle_signal(&name, signal).await {
                            eprintln!("{to} rejected a signal from {name}: {e}");
                        }
                    }
                }
                other => {
                    let _ = tx.send(other);
                }
            }
        }
    });
    out
}

async fn session(
    name: &str,
    dir: &Directory,
    quality: VideoQuality,
) -> (MediaSession, mpsc::UnboundedReceiver<MediaEvent>) {
    let mut cfg = MediaConfig {
        video_quality: quality,
        ..MediaConfig::loopback()
    };
    if let Some(ms) = std::env::var("ICE_CHECK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.ice_check_interval = Duration::from_millis(ms);
    }
    let (s, rx) = MediaSession::new(uid(name), cfg).await.unwrap();
    dir.lock().await.insert(uid(name), s.clone());
    let events = route(uid(name), rx, dir.clone());
    (s, events)
}

/// Both sessions connect to each other, the answering side first, as two
/// clients do: each has seen the other enter before the offer arrives (a
/// session negotiates only with users it was told to connect).
async fn connect_pair(a: &MediaSession, b: &MediaSession) {
    let (answerer, offerer) = if calling_media::is_offerer(a.local_user(), b.local_user()) {
        (b, a)
    } else {
        (a, b)
    };
    answerer.connect(offerer.local_user()).await.unwrap();
    offerer.connect(answerer.local_user()).await.unwrap();
}

async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<MediaEvent>,
    mut pred: impl FnMut(&MediaEvent) -> bool,
) -> Option<Instant> {
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            if pred(&e) {
                return Some(Instant::now());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn setup(runs: usize) {
    let dir: Directory = Arc::default();
    let (caller, _caller_events) = session("aaa-caller", &dir, VideoQuality::P480).await;
    caller
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    caller
        .set_audio_source(Some(AudioSource::Tone {
            frequency_hz: 440.0,
            amplitude: 0.3,
        }))
        .unwrap();
    // Let the encoder produce its first key frame.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // connect -> the callee's connection is up (ICE and DTLS), and from
    // there -> its first assembled video frame (SRTP, the first key frame).
    let (mut times, mut to_connected, mut to_frame) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = 0;
    for i in 0..runs {
        let name = format!("callee-{i:03}");
        let (callee, mut events) = session(&name, &dir, VideoQuality::P480).await;
        let start = Instant::now();
        connect_pair(&caller, &callee).await;
        let connected = wait_for(&mut events, |e| {
            matches!(
                e,
                MediaEvent::PeerState {
                    state: PeerState::Connected,
                    ..
                }
            )
        })
        .await;
        let first = wait_for(&mut events, |e| {
            matches!(
                e,
                MediaEvent::FirstFrame {
                    kind: MediaKind::Video,
                    ..
                }
            )
        })
        .await;
        match (connected, first) {
            (Some(c), Some(f)) => {
                times.push(f - start);
                to_connected.push(c - start);
                to_frame.push(f - c);
            }
            _ => failures += 1,
        }
        caller.disconnect(callee.local_user()).await;
        callee.close().await;
        dir.lock().await.remove(callee.local_user());
    }
    caller.close().await;
    println!(
        "setup: connect -> first remote video frame, {} runs ({failures} timed out)",
        runs
    );
    for (what, mut v) in [
        ("connect -> first frame", times),
        ("  connect -> connected", to_connected),
        ("  connected -> frame", to_frame),
    ] {
        if v.is_empty() {
            continue;
        }
        v.sort();
        println!(
            "  {what:<24} p50 {}  p95 {}  min {}  max {}",
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.95)),
            ms(v[0]),
            ms(v[v.len() - 1])
        );
    }
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn memory(n: usize) {
    let dir: Directory = Arc::default();
    let (hub, mut hub_events) = session("aaa-hub", &dir, VideoQuality::P480).await;
    let mut others = Vec::new();
    // Warm up allocator pools and lazy statics with one connection first.
    let warm = session("aab-warm", &dir, VideoQuality::P480).await;
    connect_pair(&hub, &warm.0).await;
    wait_for(&mut hub_events, |e| {
        matches!(
            e,
            MediaEvent::PeerState {
                state: PeerState::Connected,
                ..
            }
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    for i in 0..n {
        let name = format!("idle-{i:03}");
        let (s, mut ev) = session(&name, &dir, VideoQuality::P480).await;
        connect_pair(&hub, &s).await;
        if wait_for(&mut ev, |e| {
            matches!(
                e,
                MediaEvent::PeerState {
                    state: PeerState::Connected,
                    ..
                }
            )
        })
        .await
        .is_none()
        {
            eprintln!("{name} did not connect");
        }
        others.push((s, ev));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let conns = 2 * n; // both ends live in this process
    println!(
        "memory: {n} idle calls = {conns} peer connections, RSS {before} KiB -> {after} KiB, {:.0} KiB per peer connection",
        (after.saturating_sub(before)) as f64 / conns as f64
    );
    hub.close().await;
    for (s, _) in others {
        s.close().await;
    }
    warm.0.close().await;
}

async fn cpu(secs: u64) {
    let dir: Directory = Arc::default();
    let (a, mut a_events) = session("alice", &dir, VideoQuality::P720).await;
    let (b, _b_events) = session("bob", &dir, VideoQuality::P720).await;
    for s in [&a, &b] {
        s.set_video_source(Some(VideoSource::TestPattern)).unwrap();
        s.set_audio_source(Some(AudioSource::Tone {
            frequency_hz: 440.0,
            amplitude: 0.3,
        }))
        .unwrap();
    }
    connect_pair(&a, &b).await;
    wait_for(&mut a_events, |e| {
        matches!(
            e,
            MediaEvent::FirstFrame {
                kind: MediaKind::Video,
                ..
            }
        )
    })
    .await;
    let (cpu0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, t1) = (cpu_time(), Instant::now());
    let stats = a.stats().await;
    let wall = (t1 - t0).as_secs_f64();
    let used = (cpu1 - cpu0).as_secs_f64();
    println!(
        "cpu: one 720p call, both ends in this process (2 encoders, 2 senders, 2 receivers): {:.0}% of one core over {wall:.1} s ({:.0}% per end)",
        100.0 * used / wall,
        50.0 * used / wall
    );
    if let Some(s) = stats.first() {
        println!(
            "  alice sent {} video frames, received {} ({} bytes in), rtt {:?}",
            s.video_frames_sent, s.video_frames_received, s.bytes_received, s.rtt
        );
    }
    a.close().await;
    b.close().await;
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // RUST_LOG=rtc_ice=trace,... shows where a setup's milliseconds go.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    }
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |w: &str| which.is_empty() || which.iter().any(|a| a == w);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if run("setup") {
            setup(env("SETUP_RUNS", 50) as usize).await;
        }
        if run("memory") {
            memory(env("IDLE_PEERS", 50) as usize).await;
        }
        if run("cpu") {
            cpu(env("CPU_SECS", 10)).await;
        }
    });
}
