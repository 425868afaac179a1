//! An independent WebRTC stack on the other end: `tests/aiortc/client.py`, a
//! Python client of our protocol written from docs/PROTOCOL.md on aiortc
//! (PyPI) and `websockets`, talks to the Rust `Calling` SDK through an
//! in-process `calling-server` on 127.0.0.1:0. The client is driven by JSON
//! lines on stdin and reports JSON lines on stdout.
//!
//! Covered: video calls in both offer directions and both call directions
//! (audio and video counted at both ends), an audio-only call, reject, busy,
//! cancel and ringing timeout as each side sees them, the call keepalive
//! and the call room (a vanished client leaves at once),
//! a switch from audio to video without renegotiation, and a VP8-only peer.
//!
//! Needs `tests/aiortc/.venv` (or `$CALLING_AIORTC_PYTHON`, an interpreter
//! with `tests/aiortc/requirements.txt` installed): `scripts/setup.sh` makes
//! it. Without it each test prints a loud SKIPPED banner, and fails when `CI`
//! is set, so CI cannot pass without having run them.
//!
//! A failing test shows the client's log (stderr); `AIORTC_CLIENT_LOG=1`
//! shows it for passing ones too (with `--nocapture`).
//!
//! The setup-time benchmark is `aiortc_setup_bench` (ignored by default):
//! `BENCH_CALLS=20 cargo test --release -p calling --test aiortc -- --ignored --nocapture aiortc_setup_bench`.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calling::{
    CallEvent, Calling, CallingConfig, Codec, EncodedFrame, EndReason, ErrorCode, Event, Events,
    FrameSink, MediaKind, MediaType, NoAnswer, UserId,
};
use serde_json::{Value, json};
use support::{
    APP, Net, WAIT, expect, login, login_with, read_output, reap, root, sig, start, wait_exit,
    wait_frames,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

const RING: Duration = Duration::from_secs(30);
/// The Python client's user id. "a-rust" < "py" < "z-rust", byte-wise, so
/// Rust offers as "a-rust" and the Python client offers to "z-rust".
const PY: &str = "py";
const RUST_OFFERS: &str = "a-rust";
const PY_OFFERS: &str = "z-rust";
/// Frames each way that show media flows (a quarter second of audio, two
/// thirds of a second of video at the client's 15 fps).
const MIN_FRAMES: u64 = 10;

/// One Python client at a time: the machine has two cores and aiortc
/// encodes video in Python's process.
static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn python() -> PathBuf {
    std::env::var_os("CALLING_AIORTC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/aiortc/.venv/bin/python"))
}

/// `Ok` when the Python client can run; otherwise fails under CI and returns
/// `Err` (after a loud banner) locally.
fn prerequisites(test: &str) -> Result<(), ()> {
    let python = python();
    let missing = if !python.exists() {
        Some(format!(
            "{} (tests/aiortc/.venv, or $CALLING_AIORTC_PYTHON)",
            python.display()
        ))
    } else {
        let imports = Command::new(&python)
            .args(["-c", "import aiortc, av, websockets"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        (!imports).then(|| format!("aiortc, av or websockets in {}", python.display()))
    };
    let Some(what) = missing else {
        return Ok(());
    };
    support::missing("aiortc test", test, &what, "to install it")
}

/// The Python client; killed if dropped early.
struct Py {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Py {
    /// Starts the client as `user` and waits until it is logged in.
    async fn start(net: &Net, user: &str, options: &[&str]) -> Py {
        let mut child = Command::new(python())
            .arg(root().join("tests/aiortc/client.py"))
            .args(["--url", &net.url])
            .args(["--app", &APP.to_string()])
            .args(["--user", user])
            .args(["--sig", &sig(user)])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, stderr) = read_output(&mut child, |line| {
            serde_json::from_str(&line)
                .unwrap_or_else(|_| json!({"event": "bad line", "line": line}))
        });
        let stdin = child.stdin.take();
        let mut py = Py {
            child,
            stdin,
            lines,
            stderr,
        };
        py.expect("ready").await;
        py
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn send(&mut self, cmd: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    /// Gives the stderr reader a moment (bounded) to collect the end of the
    /// log before a failure shows it.
    async fn settle(&mut self) {
        let _ = timeout(Duration::from_secs(2), async {
            while self.child.try_wait().ok().flatten().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Waits for the next event named `event` that `pred` accepts, skipping
    /// others. An `error` event from the client fails the test.
    async fn expect_where<F: Fn(&Value) -> bool>(&mut self, event: &str, pred: F) -> Value {
        let got = timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                let name = line["event"].as_str().unwrap_or_default();
                if name == event && pred(&line) {
                    return Ok(line);
                }
                if name == "error" || name == "bad line" {
                    return Err(line);
                }
            }
            Err(Value::Null)
        })
        .await;
        match got {
            Ok(Ok(line)) => line,
            Ok(Err(Value::Null)) => {
                self.settle().await;
                panic!("the Python client ended before {event}:\n{}", self.log())
            }
            Ok(Err(line)) => {
                self.settle().await;
                panic!(
                    "the Python client reported {line} while waiting for {event}:\n{}",
                    self.log()
                )
            }
            Err(_) => panic!(
                "timed out waiting for {event} from the Python client:\n{}",
                self.log()
            ),
        }
    }

    async fn expect(&mut self, event: &str) -> Value {
        self.expect_where(event, |_| true).await
    }

    /// The client's frame counts of its current (or last) peer connection.
    async fn report(&mut self) -> Value {
        self.send(json!({"cmd": "report"}));
        self.expect("report").await
    }

    /// Waits until the client has decoded at least `min` frames of `kind`;
    /// returns the report that shows it.
    async fn wait_frames(&mut self, kind: &str, min: u64) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let report = self.report().await;
            if report["received"][kind].as_u64().unwrap_or(0) >= min {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "the Python client decoded fewer than {min} {kind} frames: {report}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the client's process: its connection dies without a word.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the client to log out and checks that it exits cleanly.
    async fn quit(mut self) {
        self.send(json!({"cmd": "quit"}));
        drop(self.stdin.take());
        let status = wait_exit(&mut self.child).await;
        std::thread::sleep(Duration::from_millis(100));
        if std::env::var_os("AIORTC_CLIENT_LOG").is_some() {
            eprintln!("{}", self.log());
        }
        match status {
            Some(s) if s.success() => {}
            Some(s) => panic!("the Python client failed ({s}):\n{}", self.log()),
            None => panic!("the Python client did not exit:\n{}", self.log()),
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

async fn invited(events: &mut Events, from: &str) -> calling::InviteId {
    match expect(events, "the invite", |e| {
        matches!(e, Event::Call(CallEvent::Invited { .. }))
    })
    .await
    {
        Event::Call(CallEvent::Invited {
            invite_id, sponsor, ..
        }) => {
            assert_eq!(sponsor.as_str(), from);
            invite_id
        }
        _ => unreachable!(),
    }
}

async fn call_end(events: &mut Events) -> EndReason {
    match expect(events, "call end", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await
    {
        Event::Call(CallEvent::CallEnd { reason, .. }) => reason,
        _ => unreachable!(),
    }
}

fn frames(stats: &[calling::PeerStats], from: &str, kind: MediaKind, sent: bool) -> u64 {
    stats
        .iter()
        .find(|s| s.user == from)
        .map(|s| match (kind, sent) {
            (MediaKind::Audio, false) => s.audio_frames_received,
            (MediaKind::Audio, true) => s.audio_frames_sent,
            (_, false) => s.video_frames_received,
            (_, true) => s.video_frames_sent,
        })
        .unwrap_or(0)
}

fn count(report: &Value, way: &str, kind: &str) -> u64 {
    report[way][kind].as_u64().unwrap()
}

/// Waits for a voice volume of the Python client above zero: Rust reads it
/// from the RFC 6464 level aiortc writes on its audio, under the id the
/// offer gave the extension (aiortc offers it as 2).
async fn hears_volume(events: &mut Events) {
    expect(
        events,
        "a voice volume of the Python client",
        |e| matches!(e, Event::UserVoiceVolume { user, volume } if user.as_str() == PY && *volume > 0),
    )
    .await;
}

/// Rust trickles its candidates under the first m-line's mid and index,
/// then ends them with candidate "" (aiortc's own are in its SDP).
fn assert_candidates(report: &Value) {
    let candidates = &report["candidates"];
    assert!(candidates["trickled"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(candidates["end"], true, "{report}");
    assert_eq!(candidates["mids"], json!(["0"]), "{report}");
    assert_eq!(candidates["mline_indexes"], json!([0]), "{report}");
}

/// Rust writes the RFC 6464 audio level on every audio packet, under the id
/// the offer negotiated, and its tone is not silence.
fn assert_audio_levels(report: &Value) {
    let levels = &report["audio_level"];
    let packets = levels["packets"].as_u64().unwrap();
    assert!(packets >= MIN_FRAMES, "{report}");
    assert_eq!(levels["with_level"].as_u64().unwrap(), packets, "{report}");
    assert!(levels["loudest"].as_u64().unwrap() < 127, "{report}");
}

/// Who places the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Caller {
    Rust,
    Python,
}

/// Sets up a 1v1 call of `media` between `rust` (logged in as `user`) and
/// the Python client, placed by `caller`; returns once both sides count the
/// other as connected.
async fn connect(
    rust: &Calling,
    events: &mut Events,
    user: &str,
    py: &mut Py,
    caller: Caller,
    media: MediaType,
) {
    let media_name = match media {
        MediaType::Audio => "audio",
        MediaType::Video => "video",
    };
    match caller {
        Caller::Rust => {
            rust.call(PY, media, RING).await.unwrap();
            let invite = py.expect("invited").await;
            assert_eq!(invite["user"], user, "{invite}");
            assert_eq!(invite["media"], media_name, "{invite}");
            py.send(json!({"cmd": "accept"}));
        }
        Caller::Python => {
            py.send(json!({"cmd": "call", "user": user, "media": media_name, "timeout": 30}));
            let invite = invited(events, PY).await;
            rust.accept(&invite).await.unwrap();
        }
    }
    py.expect_where("user_enter", |e| e["user"] == user).await;
    expect(
        events,
        "the Python client enters",
        |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user.as_str() == PY),
    )
    .await;
}

/// Ends the call from `caller`'s side and checks both sides see it end.
async fn hang_up(rust: &Calling, events: &mut Events, py: &mut Py, by: Caller) {
    match by {
        Caller::Rust => rust.hangup().await.unwrap(),
        Caller::Python => py.send(json!({"cmd": "hangup"})),
    }
    let end = py.expect("call_end").await;
    assert_eq!(end["reason"], "hangup", "{end}");
    assert_eq!(call_end(events).await, EndReason::Hangup);
}

/// A video call placed by `caller` with Rust as `user`: video and audio
/// flow both ways, counted at both ends.
async fn video_call(test: &str, user: &str, caller: Caller) {
    if prerequisites(test).is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let (rust, mut events) = login(&net, user).await;
    let mut py = Py::start(&net, PY, &[]).await;
    connect(&rust, &mut events, user, &mut py, caller, MediaType::Video).await;

    let video = wait_frames(&rust, PY, MediaKind::Video, MIN_FRAMES).await;
    let audio = wait_frames(&rust, PY, MediaKind::Audio, MIN_FRAMES).await;
    hears_volume(&mut events).await;
    py.wait_frames("video", MIN_FRAMES).await;
    let report = py.wait_frames("audio", MIN_FRAMES).await;
    eprintln!("rust got {video} video and {audio} audio frames; python: {report}");
    assert_eq!(report["peer"], user, "{report}");
    assert_candidates(&report);
    assert_audio_levels(&report);
    assert!(count(&report, "sent", "video") >= MIN_FRAMES, "{report}");
    assert!(count(&report, "sent", "audio") >= MIN_FRAMES, "{report}");
    let stats = rust.stats().await.unwrap();
    assert!(frames(&stats, PY, MediaKind::Video, true) >= MIN_FRAMES);
    assert!(frames(&stats, PY, MediaKind::Audio, true) >= MIN_FRAMES);

    // The callee hangs up in one direction, the caller in the other.
    let by = if caller == Caller::Rust {
        Caller::Python
    } else {
        Caller::Rust
    };
    hang_up(&rust, &mut events, &mut py, by).await;
    py.quit().await;
    net.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_calls_python_and_rust_offers() {
    video_call(
        "rust_calls_python_and_rust_offers",
        RUST_OFFERS,
        Caller::Rust,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_calls_python_and_python_offers() {
    video_call(
        "rust_calls_python_and_python_offers",
        PY_OFFERS,
        Caller::Rust,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_rust_and_rust_offers() {
    video_call(
        "python_calls_rust_and_rust_offers",
        RUST_OFFERS,
        Caller::Python,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_rust_and_python_offers() {
    video_call(
        "python_calls_rust_and_python_offers",
        PY_OFFERS,
        Caller::Python,
    )
    .await;
}

/// An audio call placed by `caller` with Rust as `user`: audio both ways,
/// and no video either way although both keep a video m-line.
async fn audio_call(test: &str, user: &str, caller: Caller) {
    if prerequisites(test).is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let (rust, mut events) = login(&net, user).await;
    let mut py = Py::start(&net, PY, &[]).await;
    connect(&rust, &mut events, user, &mut py, caller, MediaType::Audio).await;

    // Two thirds of a second of audio: video, had any been sent, would have
    // shown by then in both directions.
    let audio = wait_frames(&rust, PY, MediaKind::Audio, 3 * MIN_FRAMES).await;
    hears_volume(&mut events).await;
    let report = py.wait_frames("audio", 3 * MIN_FRAMES).await;
    eprintln!("rust got {audio} audio frames; python: {report}");
    assert_eq!(count(&report, "received", "video"), 0, "{report}");
    assert_eq!(count(&report, "sent", "video"), 0, "{report}");
    assert_candidates(&report);
    assert_audio_levels(&report);
    assert!(
        count(&report, "sent", "audio") >= 3 * MIN_FRAMES,
        "{report}"
    );
    let stats = rust.stats().await.unwrap();
    assert_eq!(frames(&stats, PY, MediaKind::Video, false), 0);
    assert_eq!(frames(&stats, PY, MediaKind::Video, true), 0);
    assert!(frames(&stats, PY, MediaKind::Audio, true) >= 3 * MIN_FRAMES);

    hang_up(&rust, &mut events, &mut py, caller).await;
    py.quit().await;
    net.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_call_rust_offers() {
    audio_call("audio_only_call_rust_offers", RUST_OFFERS, Caller::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_call_python_offers() {
    audio_call("audio_only_call_python_offers", PY_OFFERS, Caller::Python).await;
}

/// Each side declines the other's call, and each sees the other's reject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_each_way() {
    if prerequisites("reject_each_way").is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let (rust, mut events) = login(&net, "rust").await;
    let mut py = Py::start(&net, PY, &[]).await;

    rust.call(PY, MediaType::Video, RING).await.unwrap();
    py.expect("invited").await;
    py.send(json!({"cmd": "reject"}));
    let end = py.expect("call_end").await;
    assert_eq!(end["reason"], "rejected", "{end}");
    expect(
        &mut events,
        "the Python client's reject",
        |e| matches!(e, Event::Call(CallEvent::Rejected { user, .. }) if user.as_str() == PY),
    )
    .await;
    assert_eq!(call_end(&mut events).await, EndReason::Rejected);

    py.send(json!({"cmd": "call", "user": "rust", "media": "audio", "timeout": 30}));
    let invite = invited(&mut events, PY).await;
    rust.reject(&invite).await.unwrap();
    assert_eq!(call_end(&mut events).await, EndReason::Rejected);
    let rejected = py.expect("rejected").await;
    assert_eq!(rejected["user"], "rust", "{rejected}");
    assert_eq!(rejected["busy"], false, "{rejected}");
    let end = py.expect("call_end").await;
    assert_eq!(end["reason"], "rejected", "{end}");

    py.quit().await;
    net.server.shutdown().await;
}

/// A second invite to a party in a call is answered busy, automatically,
/// by either side; the call it is in goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_each_way() {
    if prerequisites("busy_each_way").is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let (rust, mut events) = login(&net, "rust").await;
    let (two, mut two_events) = login(&net, "r-two").await;
    let mut py = Py::start(&net, PY, &[]).await;

    // The Python client is in a call with r-two when rust calls it.
    connect(
        &two,
        &mut two_events,
        "r-two",
        &mut py,
        Caller::Rust,
        MediaType::Audio,
    )
    .await;
    rust.call(PY, MediaType::Video, RING).await.unwrap();
    expect(
        &mut events,
        "line busy",
        |e| matches!(e, Event::Call(CallEvent::LineBusy { user, .. }) if user.as_str() == PY),
    )
    .await;
    assert_eq!(call_end(&mut events).await, EndReason::LineBusy);
    let busy = py.expect("busy_sent").await;
    assert_eq!(busy["user"], "rust", "{busy}");
    let report = py.report().await;
    assert_eq!(report["connected"], json!(["r-two"]), "{report}");
    hang_up(&two, &mut two_events, &mut py, Caller::Rust).await;

    // rust is in a call with r-two when the Python client calls it.
    rust.call("r-two", MediaType::Audio, RING).await.unwrap();
    let invite = invited(&mut two_events, "rust").await;
    two.accept(&invite).await.unwrap();
    expect(
        &mut events,
        "r-two enters",
        |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user.as_str() == "r-two"),
    )
    .await;
    py.send(json!({"cmd": "call", "user": "rust", "media": "video", "timeout": 30}));
    let busy = py.expect("line_busy").await;
    assert_eq!(busy["user"], "rust", "{busy}");
    let end = py.expect("call_end").await;
    assert_eq!(end["reason"], "busy", "{end}");
    let call = rust.current_call().await.unwrap().unwrap();
    assert_eq!(call.connected, vec![UserId::new("r-two").unwrap()]);
    rust.hangup().await.unwrap();
    assert_eq!(call_end(&mut events).await, EndReason::Hangup);
    assert_eq!(call_end(&mut two_events).await, EndReason::Hangup);

    py.quit().await;
    net.server.shutdown().await;
}

/// A caller that hangs up before the answer cancels the ringing invite, on
/// either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_each_way() {
    if prerequisites("cancel_each_way").is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let (rust, mut events) = login(&net, "rust").await;
    let mut py = Py::start(&net, PY, &[]).await;

    rust.call(PY, MediaType::Video, RING).await.unwrap();
    py.expect("invited").await;
    rust.hangup().await.unwrap();
    assert_eq!(call_end(&mut events).await, EndReason::Cancelled);
    let cancelled = py.expect("cancelled").await;
    assert_eq!(cancelled["user"], "rust", "{cancelled}");
    let end = py.expect("call_end").await;
    assert_eq!(end["reason"], "cancelled", "{end}");

    py.send(json!({"cmd": "call", "user": "rust", "media": "video", "timeout": 30}));
    invited(&mut events, PY).await;
    py.send(json!({"cmd": "cancel"}));
    expect(
        &mut events,
        "the Python client's cancel",
        |e| matches!(e, Event::Call(CallEvent::CallingCancel { user, .. }) if user.as_str() == PY),
    )
    .await;
    assert_eq!(call_end(&mut events).await, EndReason::Cancelled);
    py.expect("call_end").await;

    py.quit().await;
    net.server.shutdown().await;
}

/// An invitee that does not answer stops ringing when the invite's timeout
/// runs out and tells the caller, on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_times_out_each_way() {
    if prerequisites("ringing_times_out_each_way").is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let (rust, mut events) = login(&net, "rust").await;
    let mut py = Py::start(&net, PY, &[]).await;

    rust.call(PY, MediaType::Audio, Duration::from_secs(1))
        .await
        .unwrap();
    py.expect("invited").await;
    py.expect("calling_timeout").await;
    let end = py.expect("call_end").await;
    assert_eq!(end["reason"], "timeout", "{end}");
    match expect(&mut events, "no response", |e| {
        matches!(e, Event::Call(CallEvent::NoResponse { .. }))
    })
    .await
    {
        Event::Call(CallEvent::NoResponse { users, reason, .. }) => {
            assert_eq!(users, vec![UserId::new(PY).unwrap()]);
            assert_eq!(reason, NoAnswer::Timeout);
        }
        _ => unreachable!(),
    }
    assert_eq!(call_end(&mut events).await, EndReason::NoResponse);

    py.send(json!({"cmd": "call", "user": "rust", "media": "audio", "timeout": 1}));
    invited(&mut events, PY).await;
    expect(&mut events, "ringing timeout", |e| {
        matches!(e, Event::Call(CallEvent::CallingTimeout { .. }))
    })
    .await;
    assert_eq!(call_end(&mut events).await, EndReason::TimedOut);
    let no_resp = py.expect("no_resp").await;
    assert_eq!(no_resp["user"], "rust", "{no_resp}");
    assert_eq!(no_resp["reason"], "timeout", "{no_resp}");
    let end = py.expect("call_end").await;
    assert_eq!(end["reason"], "no_answer", "{end}");

    py.quit().await;
    net.server.shutdown().await;
}

/// The Python client's `alive` keeps it in a call past the keepalive
/// timeout: Rust here drops a member silent for 8 s, and the call is held
/// for longer than that with no other call-control message from Python.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_keepalive_holds_the_call() {
    if prerequisites("python_keepalive_holds_the_call").is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let mut config = CallingConfig::loopback();
    config.core.keepalive_interval = Duration::from_secs(1);
    // The client sends `alive` every 5 s: 8 s leaves it 3 s of slack.
    config.core.keepalive_timeout = Duration::from_secs(8);
    let hold = Duration::from_secs(12);
    let (rust, mut events) = login_with(&net, "rust", config).await;
    let mut py = Py::start(&net, PY, &[]).await;
    connect(
        &rust,
        &mut events,
        "rust",
        &mut py,
        Caller::Rust,
        MediaType::Audio,
    )
    .await;

    let dropped = timeout(hold, async {
        while let Some(e) = events.recv().await {
            if matches!(
                e,
                Event::Call(CallEvent::UserLeave { .. } | CallEvent::CallEnd { .. })
            ) {
                return Some(e);
            }
        }
        None
    })
    .await;
    assert!(
        dropped.is_err(),
        "the call did not hold: {dropped:?}\n{}",
        py.log()
    );
    let call = rust.current_call().await.unwrap().unwrap();
    assert_eq!(call.connected, vec![UserId::new(PY).unwrap()]);
    let report = py.report().await;
    assert_eq!(report["connected"], json!(["rust"]), "{report}");

    hang_up(&rust, &mut events, &mut py, Caller::Rust).await;
    py.quit().await;
    net.server.shutdown().await;
}

/// The Python client joins the call's server room, so when its process dies
/// mid-call the server's `room_leave` tells Rust at once. Rust's keepalive
/// is stretched here past the test's wait, so nothing else could end the
/// call in time: not a silence timeout, not an `undeliverable` alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_vanishing_leaves_the_room() {
    if prerequisites("python_vanishing_leaves_the_room").is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let mut config = CallingConfig::loopback();
    config.core.keepalive_interval = WAIT * 2;
    config.core.keepalive_timeout = WAIT * 6;
    for (user, caller) in [("rust", Caller::Rust), ("rust", Caller::Python)] {
        let (rust, mut events) = login_with(&net, user, config.clone()).await;
        let mut py = Py::start(&net, PY, &[]).await;
        connect(&rust, &mut events, user, &mut py, caller, MediaType::Audio).await;
        wait_frames(&rust, PY, MediaKind::Audio, MIN_FRAMES).await;
        py.kill();
        expect(
            &mut events,
            "the Python client to leave",
            |e| matches!(e, Event::Call(CallEvent::UserLeave { user, .. }) if user.as_str() == PY),
        )
        .await;
        assert_eq!(call_end(&mut events).await, EndReason::Hangup);
        rust.logout().await.unwrap();
    }
    net.server.shutdown().await;
}

/// An audio call that Rust asks to switch to video: the Python client
/// agrees, and video then flows both ways on the video m-line the call kept
/// from its start, with no second offer (PROTOCOL: a `media_type` switch
/// never renegotiates).
async fn switch_to_video(test: &str, user: &str) {
    if prerequisites(test).is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let (rust, mut events) = login(&net, user).await;
    let mut py = Py::start(&net, PY, &[]).await;
    connect(
        &rust,
        &mut events,
        user,
        &mut py,
        Caller::Rust,
        MediaType::Audio,
    )
    .await;
    wait_frames(&rust, PY, MediaKind::Audio, MIN_FRAMES).await;
    py.wait_frames("audio", MIN_FRAMES).await;

    rust.switch_media_type(MediaType::Video).await.unwrap();
    let request = py.expect("switch_request").await;
    assert_eq!(request["user"], user, "{request}");
    assert_eq!(request["media"], "video", "{request}");
    py.send(json!({"cmd": "switch_answer", "accepted": true}));
    expect(&mut events, "the switch to video", |e| {
        matches!(
            e,
            Event::Call(CallEvent::MediaTypeChanged {
                to: MediaType::Video,
                ..
            })
        )
    })
    .await;
    let changed = py.expect("media_type").await;
    assert_eq!(changed["media"], "video", "{changed}");

    wait_frames(&rust, PY, MediaKind::Video, MIN_FRAMES).await;
    let report = py.wait_frames("video", MIN_FRAMES).await;
    assert_eq!(report["media_type"], "video", "{report}");
    assert_eq!(report["descriptions"], 2, "renegotiated: {report}");
    assert!(count(&report, "sent", "video") >= MIN_FRAMES, "{report}");

    hang_up(&rust, &mut events, &mut py, Caller::Rust).await;
    py.quit().await;
    net.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_to_video_rust_offers() {
    switch_to_video("switch_to_video_rust_offers", RUST_OFFERS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_to_video_python_offers() {
    switch_to_video("switch_to_video_python_offers", PY_OFFERS).await;
}

/// Records, per remote user, the codecs of the video frames Rust received
/// and when the first one arrived (since the last `reset`).
#[derive(Default)]
struct VideoSeen {
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    codecs: Vec<(UserId, Codec)>,
    first: Option<Instant>,
}

impl VideoSeen {
    fn codecs(&self, from: &str) -> Vec<Codec> {
        let inner = self.inner.lock().unwrap();
        let mut codecs: Vec<Codec> = inner
            .codecs
            .iter()
            .filter(|(u, _)| u.as_str() == from)
            .map(|(_, c)| *c)
            .collect();
        codecs.dedup();
        codecs
    }

    fn first(&self) -> Option<Instant> {
        self.inner.lock().unwrap().first
    }

    fn reset(&self) {
        *self.inner.lock().unwrap() = Seen::default();
    }
}

impl FrameSink for VideoSeen {
    fn on_frame(&self, user: &UserId, frame: &EncodedFrame) {
        if frame.codec == Codec::Opus {
            return;
        }
        let mut inner = self.inner.lock().unwrap();
        inner.first.get_or_insert_with(Instant::now);
        let seen = (user.clone(), frame.codec);
        if !inner.codecs.contains(&seen) {
            inner.codecs.push(seen);
        }
    }
}

/// A video call with a peer that does VP8 alone (`--vp8-only`, codec
/// preferences on its video transceiver): Rust receives its VP8 video, the
/// peer gets Rust's audio but no video (Rust sends H.264 only), and Rust's
/// app is told with `Error` 2004 naming the peer.
async fn vp8_only_peer(test: &str, user: &str) {
    if prerequisites(test).is_err() {
        return;
    }
    let _one = ONE.lock().await;
    let net = start().await;
    let (rust, mut events) = login(&net, user).await;
    let seen = Arc::new(VideoSeen::default());
    rust.set_frame_sink(Some(seen.clone())).await.unwrap();
    let mut py = Py::start(&net, PY, &["--vp8-only"]).await;
    connect(
        &rust,
        &mut events,
        user,
        &mut py,
        Caller::Rust,
        MediaType::Video,
    )
    .await;

    match expect(&mut events, "the no-common-codec error", |e| {
        matches!(e, Event::Error { .. })
    })
    .await
    {
        Event::Error { code, message } => {
            assert_eq!(code, ErrorCode::NoCommonVideoCodec, "{message}");
            assert_eq!(code.code(), 2004);
            assert!(message.contains(PY), "{message}");
        }
        _ => unreachable!(),
    }
    wait_frames(&rust, PY, MediaKind::Video, MIN_FRAMES).await;
    assert_eq!(seen.codecs(PY), vec![Codec::Vp8]);
    let report = py.wait_frames("audio", MIN_FRAMES).await;
    assert_eq!(report["codecs"]["video"], json!(["video/VP8"]), "{report}");
    assert!(count(&report, "sent", "video") >= MIN_FRAMES, "{report}");
    assert_eq!(count(&report, "received", "video"), 0, "{report}");
    let stats = rust.stats().await.unwrap();
    assert_eq!(frames(&stats, PY, MediaKind::Video, true), 0);

    hang_up(&rust, &mut events, &mut py, Caller::Rust).await;
    py.quit().await;
    net.server.shutdown().await;
}

/// Rust offers H.264 and VP8; the peer's answer keeps VP8 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_only_peer_answers_rust() {
    vp8_only_peer("vp8_only_peer_answers_rust", RUST_OFFERS).await;
}

/// The peer's offer lists VP8 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_only_peer_offers_to_rust() {
    vp8_only_peer("vp8_only_peer_offers_to_rust", PY_OFFERS).await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn row(direction: &str, side: &str, mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "| {direction:<22} | {side:<38} | {:>3} | {:>7.1} | {:>7.1} | {:>7.1} |",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.95),
        v[v.len() - 1]
    )
}

/// Setup time, answer (the Python callee's accept) → first video frame, at
/// both ends, in both offer directions: "a-rust" < "py-bench" (Rust offers)
/// and "z-rust" > "py-bench" (Python offers). Rust's figure runs from just
/// before it writes `accept` to the client to the first complete video frame
/// its sink gets (Rust does not decode); Python's from its own accept to the
/// first frame aiortc decoded, on its own monotonic clock. `BENCH_CALLS`
/// calls per direction (default 10), interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn aiortc_setup_bench() {
    if prerequisites("aiortc_setup_bench").is_err() {
        return;
    }
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let _one = ONE.lock().await;
    let net = start().await;
    let callee = "py-bench";
    let (a, mut a_events) = login(&net, RUST_OFFERS).await;
    let (z, mut z_events) = login(&net, PY_OFFERS).await;
    let seen = Arc::new(VideoSeen::default());
    a.set_frame_sink(Some(seen.clone())).await.unwrap();
    z.set_frame_sink(Some(seen.clone())).await.unwrap();
    let mut py = Py::start(&net, callee, &[]).await;
    // Per direction: (Rust's first frame, Python's first decoded frame), ms.
    let mut rust_offers = (Vec::new(), Vec::new());
    let mut py_offers = (Vec::new(), Vec::new());
    for i in 0..calls * 2 {
        let (caller, events, out) = if i % 2 == 0 {
            (&a, &mut a_events, &mut rust_offers)
        } else {
            (&z, &mut z_events, &mut py_offers)
        };
        seen.reset();
        caller.call(callee, MediaType::Video, RING).await.unwrap();
        py.expect("invited").await;
        let answer = Instant::now();
        py.send(json!({"cmd": "accept"}));
        let first = py
            .expect_where("first_frame", |e| e["kind"] == "video")
            .await;
        let rust_first = timeout(WAIT, async {
            loop {
                if let Some(t) = seen.first() {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("Rust got no video frame");
        out.0
            .push(rust_first.duration_since(answer).as_secs_f64() * 1000.0);
        out.1.push(first["ms_since_answer"].as_f64().unwrap());
        caller.hangup().await.unwrap();
        py.expect("call_end").await;
        call_end(events).await;
    }
    py.quit().await;
    println!("\naiortc setup, answer -> first video frame, ms ({calls} calls per direction)");
    println!(
        "| {:<22} | {:<38} | {:>3} | {:>7} | {:>7} | {:>7} |",
        "offer direction", "measured at", "n", "p50", "p95", "max"
    );
    println!(
        "|{:-<24}|{:-<40}|{:-<5}|{:-<9}|{:-<9}|{:-<9}|",
        "", "", "", "", "", ""
    );
    for (direction, (rust, python)) in [
        ("Rust offers (a-rust)", rust_offers),
        ("Python offers (z-rust)", py_offers),
    ] {
        println!(
            "{}",
            row(direction, "Rust: first complete frame received", rust)
        );
        println!(
            "{}",
            row(direction, "Python: first frame decoded by aiortc", python)
        );
    }
    net.server.shutdown().await;
}
