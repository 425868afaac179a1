//! Microphone and Speaker against a real PulseAudio with virtual devices
//! (docs/DEVICES.md): scripts/pulse.sh starts the daemon with null sinks;
//! each sink's `.monitor` is a virtual microphone. cpal's ALSA host reaches
//! one sink or source through ALSA PCMs of `type pulse` that this file
//! writes to a private ALSA config ($XDG_CONFIG_HOME/alsa/asoundrc). Tones
//! go in with `pacat` and come out with `parec`, and are told apart by
//! frequency (Goertzel), not by timing.
//!
//! Without PulseAudio the tests say so loudly and pass as skipped, unless
//! CALLING_REQUIRE_DEVICES=1 or CI=true, where they fail.

#![cfg(feature = "devices")]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use calling_media::devices::{self, Microphone, Speaker};
use calling_media::{
    AudioFrame, AudioSource, DecodedAudioFrame, DecodedSink, MediaKind, RawAudioInput, UserId,
};

const RATE: u32 = 48_000;

// ------------------------------------------------------------ the lab

/// Virtual microphones: null sinks whose monitors are read as PCM `<sink>`.
const MICS: &[&str] = &[
    "calling_mic1",
    "calling_mic2",
    "calling_mic3",
    "calling_e2e_mic",
];
/// Virtual speakers: null sinks, played to as PCM `<sink>`.
const SPEAKERS: &[&str] = &[
    "calling_spk1",
    "calling_spk2",
    "calling_spk3",
    "calling_spk4",
    "calling_e2e_spk",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required() -> bool {
    std::env::var("CALLING_REQUIRE_DEVICES").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Starts PulseAudio (scripts/pulse.sh) and points ALSA at the virtual
/// devices, once per test binary. `None`: no PulseAudio here (skip).
fn lab() -> Option<&'static ()> {
    static LAB: OnceLock<Result<(), String>> = OnceLock::new();
    // Warnings of the device code show with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("calling_media=warn")),
        )
        .with_test_writer()
        // Captured by the test harness, often into a CI log file.
        .with_ansi(false)
        .try_init();
    match LAB.get_or_init(start_lab) {
        Ok(()) => Some(&()),
        Err(why) if required() => panic!(
            "\n!!! PulseAudio is needed for the device tests and is not usable: {why}\n\
             !!! run scripts/setup.sh (as root) to install it; see docs/DEVICES.md\n"
        ),
        Err(why) => {
            // Straight to stderr: the test harness captures eprintln!.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED: the audio device test cannot run: {why}\n\
                 !!! run scripts/setup.sh (as root) and see docs/DEVICES.md; \
                 CALLING_REQUIRE_DEVICES=1 makes this a failure\n"
            );
            None
        }
    }
}

fn start_lab() -> Result<(), String> {
    let script = repo_root().join("scripts/pulse.sh");
    let mut sinks: Vec<&str> = MICS.to_vec();
    sinks.extend_from_slice(SPEAKERS);
    let out = Command::new("bash")
        .arg(&script)
        .env("CALLING_PULSE_SINKS", sinks.join(" "))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let server = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PULSE_SERVER="))
        .next_back()
        .ok_or_else(|| format!("{} printed no PULSE_SERVER line", script.display()))?
        .to_owned();
    for tool in ["pacat", "parec"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(format!(
                "{tool} is missing (Debian package pulseaudio-utils)"
            ));
        }
    }

    // One PCM per virtual device, listed (hint). ALSA keeps the hint as
    // "NAME..|DESC.."; a "|IOID<dir>" inside the description is read back
    // as the direction, so each lists as an input or an output only.
    let dir = std::env::temp_dir().join(format!("calling-devices-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("alsa")).map_err(|e| e.to_string())?;
    let mut conf = String::new();
    for (names, source, ioid) in [(MICS, ".monitor", "Input"), (SPEAKERS, "", "Output")] {
        for n in names {
            conf.push_str(&format!(
                "pcm.{n} {{\n  type pulse\n  device \"{n}{source}\"\n  \
                 hint {{ show on description \"calling test {n}|IOID{ioid}\" }}\n}}\n"
            ));
        }
    }
    std::fs::write(dir.join("alsa/asoundrc"), conf).map_err(|e| e.to_string())?;
    // SAFETY: every test waits in `lab()` for this to finish before any
    // thread of this process touches ALSA, PulseAudio or the environment.
    unsafe {
        std::env::set_var("PULSE_SERVER", &server);
        std::env::set_var("XDG_CONFIG_HOME", &dir);
    }
    Ok(())
}

// ------------------------------------------------------------ signals

fn tone(freq: f32, amplitude: f32, seconds: f32, start: usize) -> Vec<f32> {
    let n = (seconds * RATE as f32) as usize;
    (start..start + n)
        .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / RATE as f32).sin() * amplitude)
        .collect()
}

/// Magnitude of `freq` in `x` (a sine of amplitude A gives about A/2):
/// Goertzel over Hann-windowed blocks of 2048 samples, averaged, so that a
/// skip in the sound (a lost or dropped chunk breaks the phase) costs only
/// its own block.
fn goertzel(x: &[f32], freq: f32) -> f32 {
    const BLOCK: usize = 2048;
    let w = 2.0 * std::f32::consts::PI * freq / RATE as f32;
    let k = 2.0 * w.cos();
    let hann =
        |i: usize| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (BLOCK - 1) as f32).cos();
    let weights: f32 = (0..BLOCK).map(hann).sum();
    let blocks: Vec<f32> = x
        .chunks_exact(BLOCK)
        .map(|b| {
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for (i, &v) in b.iter().enumerate() {
                let s = v * hann(i) + k * s1 - s2;
                s2 = s1;
                s1 = s;
            }
            (s1 * s1 + s2 * s2 - k * s1 * s2).max(0.0).sqrt() / weights
        })
        .collect();
    blocks.iter().sum::<f32>() / blocks.len().max(1) as f32
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Asserts that `x` carries `freq` well above another frequency.
fn assert_tone(x: &[f32], freq: f32, what: &str) {
    let at = goertzel(x, freq);
    let other = goertzel(x, freq * 1.37);
    eprintln!(
        "{what}: {freq} Hz at {at:.4}, {:.0} Hz at {other:.4}",
        freq * 1.37
    );
    assert!(
        at > 0.05 && at > 8.0 * other,
        "{what}: {freq} Hz at {at:.4}, {:.0} Hz at {other:.4} over {} samples (rms {:.4})",
        freq * 1.37,
        x.len(),
        rms(x)
    );
}

/// Plays float mono PCM into a PulseAudio sink in real time; stops (and
/// is killed) on drop.
struct Player {
    child: Child,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl Player {
    fn start(sink: &str, samples: Vec<f32>) -> Player {
        let mut child = Command::new("pacat")
            .args([
                "--playback",
                &format!("--device={sink}"),
                "--format=float32le",
                "--rate=48000",
                "--channels=1",
                "--raw",
                "--latency-msec=20",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
            let _ = stdin.write_all(&bytes);
        });
        Player {
            child,
            feeder: Some(feeder),
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
    }
}

/// Records `seconds` of mono float PCM from a PulseAudio source.
fn record(source: &str, seconds: f32) -> Vec<f32> {
    let mut child = Command::new("parec")
        .args([
            &format!("--device={source}"),
            "--format=float32le",
            "--rate=48000",
            "--channels=1",
            "--raw",
            "--latency-msec=20",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let want = (seconds * RATE as f32) as usize * 4;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match out.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        buf.truncate(got);
        let _ = tx.send(buf);
    });
    let bytes = rx
        .recv_timeout(Duration::from_secs_f32(seconds + 10.0))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    assert_eq!(bytes.len(), want, "parec from {source} ended early");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// How many streams use PulseAudio device `name` now: record streams of
/// a source (`"source"`) or playback streams of a sink (`"sink"`).
fn streams_on(kind: &str, name: &str) -> usize {
    let pactl = |what: &str| {
        let out = Command::new("pactl")
            .args(["list", "short", what])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let devices = pactl(&format!("{kind}s"));
    let index = devices
        .lines()
        .find(|l| l.split('\t').nth(1) == Some(name))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no {kind} {name} in {devices}"))
        .to_owned();
    let streams = if kind == "sink" {
        "sink-inputs"
    } else {
        "source-outputs"
    };
    pactl(streams)
        .lines()
        .filter(|l| l.split('\t').nth(1) == Some(index.as_str()))
        .count()
}

/// Waits (bounded) until `name` has `n` streams; returns how many it has.
fn await_streams(kind: &str, name: &str, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = streams_on(kind, name);
        if now == n || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Microphone whose chunks arrive on a channel, mixed to mono.
fn listen(device: &str) -> (Microphone, mpsc::Receiver<Vec<f32>>) {
    let (tx, rx) = mpsc::channel();
    let mic = Microphone::open_with(Some(device), move |f: AudioFrame| {
        let mono: Vec<f32> = f
            .to_mono_i16()
            .iter()
            .map(|&s| f32::from(s) / 32768.0)
            .collect();
        let _ = tx.send(mono);
    })
    .unwrap();
    (mic, rx)
}

/// Gathers `seconds` of audio from `rx`; stops early at `limit`.
fn gather(rx: &mpsc::Receiver<Vec<f32>>, seconds: f32, limit: Duration) -> Vec<f32> {
    let want = (seconds * RATE as f32) as usize;
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend(chunk),
            Err(_) => break,
        }
    }
    out
}

fn drain(rx: &mpsc::Receiver<Vec<f32>>) {
    while rx.try_recv().is_ok() {}
}

/// Feeds a tone into a Speaker as one remote user's decoded audio, 20 ms
/// at a time in real time, until dropped.
struct Talker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Talker {
    fn start(speaker: Arc<Speaker>, user: &str, freq: f32, limit: Duration) -> Talker {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let user = UserId::new(user).unwrap();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let begin = Instant::now();
            let chunk = (RATE / 50) as usize;
            let mut n = 0usize;
            while !s.load(std::sync::atomic::Ordering::Relaxed) && begin.elapsed() < limit {
                let frame = DecodedAudioFrame {
                    samples: tone(freq, 0.4, 0.02, n * chunk),
                    channels: 1,
                    rtp_timestamp: (n * chunk) as u32,
                    timestamp: Duration::from_millis(20 * n as u64),
                    concealed: false,
                };
                speaker.on_audio(&user, &frame);
                n += 1;
                // Keep about 60 ms ahead of the clock.
                let due = Duration::from_millis(20 * n as u64);
                if let Some(wait) = due.checked_sub(begin.elapsed() + Duration::from_millis(60)) {
                    std::thread::sleep(wait);
                }
            }
        });
        Talker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Talker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------ tests

#[test]
fn listing_finds_the_virtual_devices() {
    if lab().is_none() {
        return;
    }
    let inputs = devices::input_devices().unwrap();
    let outputs = devices::output_devices().unwrap();
    let names = |v: &[devices::DeviceInfo]| v.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    let (ins, outs) = (names(&inputs), names(&outputs));
    eprintln!("inputs: {inputs:?}\noutputs: {outputs:?}");
    for m in MICS {
        assert!(ins.iter().any(|n| n == m), "{m} not among inputs {ins:?}");
        assert!(!outs.iter().any(|n| n == m), "{m} listed as an output");
    }
    for s in SPEAKERS {
        assert!(
            outs.iter().any(|n| n == s),
            "{s} not among outputs {outs:?}"
        );
        assert!(!ins.iter().any(|n| n == s), "{s} listed as an input");
    }
    let mic = inputs.iter().find(|d| d.name == "calling_mic1").unwrap();
    assert!(mic.description.contains("calling test"), "{mic:?}");
    assert!(inputs.iter().filter(|d| d.is_default).count() <= 1);
    assert!(outputs.iter().filter(|d| d.is_default).count() <= 1);
    assert!(
        outputs.iter().any(|d| d.is_default),
        "no default output among {outs:?}"
    );

    match Microphone::open(Some("no_such_mic"), RawAudioInput::new()) {
        Err(devices::DeviceError::NoSuchDevice { name, direction }) => {
            assert_eq!(name, "no_such_mic");
            assert_eq!(direction, devices::Direction::Input);
        }
        other => panic!("opened a device that does not exist: {other:?}"),
    }
    assert!(matches!(
        Speaker::open(Some("calling_mic1")),
        Err(devices::DeviceError::NoSuchDevice { .. })
    ));
}

#[test]
fn microphone_captures_a_tone() {
    if lab().is_none() {
        return;
    }
    let (mic, rx) = listen("calling_mic1");
    assert_eq!(mic.format().sample_rate, RATE);
    let _player = Player::start("calling_mic1", tone(440.0, 0.5, 20.0, 0));
    // The first chunks may predate the tone.
    let _ = gather(&rx, 0.3, Duration::from_secs(10));
    let got = gather(&rx, 1.0, Duration::from_secs(10));
    assert_eq!(got.len(), RATE as usize, "capture stopped early");
    assert_tone(&got, 440.0, "captured from calling_mic1");
    assert!(mic.stats().pushed >= 100);

    // Into a RawAudioInput no call takes from: dropped quietly, counted.
    let input = RawAudioInput::new();
    let raw = Microphone::open(Some("calling_mic1"), input.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw.stats().dropped_not_sending < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(raw.stats().dropped_not_sending >= 10, "{:?}", raw.stats());
    assert_eq!(raw.stats().pushed, 0);
    assert!(input.stats().dropped_idle >= 10);
}

#[test]
fn speaker_plays_decoded_audio() {
    if lab().is_none() {
        return;
    }
    let speaker = Speaker::open(Some("calling_spk1")).unwrap();
    assert_eq!(speaker.device_name(), "calling_spk1");
    // Nothing decoded yet: silence.
    let quiet = record("calling_spk1.monitor", 0.3);
    assert!(
        rms(&quiet) < 0.01,
        "speaker not silent: rms {}",
        rms(&quiet)
    );

    let _a = Talker::start(speaker.clone(), "alice", 660.0, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let got = record("calling_spk1.monitor", 1.0);
    assert_tone(&got, 660.0, "recorded from calling_spk1");

    // A second user is mixed in.
    let _b = Talker::start(speaker.clone(), "bob", 1100.0, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let both = record("calling_spk1.monitor", 1.0);
    assert_tone(&both, 660.0, "alice in the mix");
    assert_tone(&both, 1100.0, "bob in the mix");
    let s = speaker.stats();
    eprintln!("{s:?}");
    assert!(s.chunks_in > 50, "{s:?}");
    assert_eq!(s.chunks_bad, 0);
}

#[test]
fn microphone_mute_stops_capture() {
    if lab().is_none() {
        return;
    }
    let (mic, rx) = listen("calling_mic2");
    let _player = Player::start("calling_mic2", tone(520.0, 0.5, 30.0, 0));
    let _ = gather(&rx, 0.3, Duration::from_secs(10));
    let live = gather(&rx, 0.5, Duration::from_secs(10));
    assert_tone(&live, 520.0, "before mute");
    assert_eq!(streams_on("source", "calling_mic2.monitor"), 1);

    mic.set_muted(true);
    assert!(mic.is_muted());
    // The device is no longer read at all.
    assert_eq!(await_streams("source", "calling_mic2.monitor", 0), 0);
    std::thread::sleep(Duration::from_millis(100));
    drain(&rx);
    let pushed = mic.stats().pushed;
    let muted = gather(&rx, 0.5, Duration::from_millis(700));
    assert!(
        rms(&muted) < 0.01,
        "{} samples at rms {} came through while muted",
        muted.len(),
        rms(&muted)
    );
    assert!(mic.stats().pushed <= pushed + 2, "{:?}", mic.stats());

    mic.set_muted(false);
    let _ = gather(&rx, 0.2, Duration::from_secs(10));
    let back = gather(&rx, 0.5, Duration::from_secs(10));
    assert_tone(&back, 520.0, "after unmute");
    assert_eq!(streams_on("source", "calling_mic2.monitor"), 1);
    drop(mic);
    assert_eq!(
        await_streams("source", "calling_mic2.monitor", 0),
        0,
        "drop closes"
    );
}

#[test]
fn speaker_mute_plays_silence() {
    if lab().is_none() {
        return;
    }
    let speaker = Speaker::open(Some("calling_spk2")).unwrap();
    let _a = Talker::start(speaker.clone(), "alice", 700.0, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let live = record("calling_spk2.monitor", 0.5);
    assert_tone(&live, 700.0, "before mute");

    speaker.set_muted(true);
    std::thread::sleep(Duration::from_millis(200));
    let muted = record("calling_spk2.monitor", 0.5);
    assert!(rms(&muted) < 0.01, "rms {} while muted", rms(&muted));

    speaker.set_muted(false);
    std::thread::sleep(Duration::from_millis(200));
    let back = record("calling_spk2.monitor", 0.5);
    assert_tone(&back, 700.0, "after unmute");

    assert_eq!(streams_on("sink", "calling_spk2"), 1);
    drop(_a);
    drop(speaker);
    assert_eq!(await_streams("sink", "calling_spk2", 0), 0, "drop closes");
}

#[test]
fn speaker_switches_device_mid_call() {
    if lab().is_none() {
        return;
    }
    let speaker = Speaker::open(Some("calling_spk3")).unwrap();
    let _a = Talker::start(speaker.clone(), "alice", 800.0, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    assert_tone(&record("calling_spk3.monitor", 0.5), 800.0, "on spk3");

    speaker.switch_device(Some("calling_spk4")).unwrap();
    assert_eq!(speaker.device_name(), "calling_spk4");
    assert_eq!(await_streams("sink", "calling_spk3", 0), 0, "spk3 let go");
    assert_eq!(streams_on("sink", "calling_spk4"), 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_tone(&record("calling_spk4.monitor", 0.5), 800.0, "on spk4");
    let old = record("calling_spk3.monitor", 0.5);
    assert!(rms(&old) < 0.01, "spk3 still plays: rms {}", rms(&old));

    // A bad switch leaves playback where it was.
    assert!(speaker.switch_device(Some("no_such_speaker")).is_err());
    assert_eq!(speaker.device_name(), "calling_spk4");
    assert_tone(&record("calling_spk4.monitor", 0.5), 800.0, "still on spk4");
}

/// The whole path through a call: a tone played into one side's virtual
/// microphone is captured, Opus-encoded and sent by alice's session, and
/// decoded and played by bob's on his virtual speaker, where it is
/// recorded and told by its frequency.
#[test]
fn a_tone_goes_from_one_sides_microphone_to_the_others_speaker() {
    if lab().is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut m = common::mesh(&["alice", "bob"]).await;
        let alice = m.session("alice");
        let bob = m.session("bob");

        // Alice: the virtual microphone into the call.
        let input = RawAudioInput::new();
        alice
            .set_audio_source(Some(AudioSource::Raw(input.clone())))
            .unwrap();
        let mic = Microphone::open(Some("calling_e2e_mic"), input.clone()).unwrap();
        let _player = Player::start("calling_e2e_mic", tone(587.0, 0.5, 60.0, 0));
        // Bob: what he decodes onto his virtual speaker.
        let speaker = Speaker::open(Some("calling_e2e_spk")).unwrap();
        bob.set_decoded_sink(Some(speaker.clone()));
        m.connect_all().await;
        m.node("bob").collect("alice", MediaKind::Audio, 50).await;

        let heard = tokio::task::spawn_blocking(|| record("calling_e2e_spk.monitor", 1.5))
            .await
            .unwrap();
        assert_tone(&heard, 587.0, "alice's microphone on bob's speaker");
        assert!(mic.stats().pushed >= 50, "{:?}", mic.stats());
        let s = speaker.stats();
        assert!(s.chunks_in >= 50, "{s:?}");
        assert_eq!(s.chunks_bad, 0, "{s:?}");

        // Alice's microphone muted: bob's speaker goes quiet.
        mic.set_muted(true);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let quiet = tokio::task::spawn_blocking(|| record("calling_e2e_spk.monitor", 0.5))
            .await
            .unwrap();
        assert!(
            goertzel(&quiet, 587.0) < 0.01,
            "the tone still plays with the microphone muted: rms {}",
            rms(&quiet)
        );
        bob.set_decoded_sink(None);
        m.close().await;
    });
}
