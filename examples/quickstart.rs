//! A real video call, end to end, in one command:
//!
//! ```sh
//! cargo run --release --example quickstart [-- --secs 3]
//! ```
//!
//! It starts the signaling server in-process on 127.0.0.1:0, logs in alice
//! and bob with UserSigs, alice video-calls bob, bob accepts, and media (a
//! generated test pattern and tone: real H.264 and Opus) flows both ways
//! for a few seconds over WebRTC. It prints the events each side saw and the
//! media figures per direction, both hang up, and it exits 0, or non-zero
//! saying why when a direction received no media.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calling::{
    CallEvent, Calling, CallingConfig, EncodedFrame, Event, Events, FrameSink, MediaKind, MediaType,
};

const APP: u64 = 1_400_000_000;

/// Frames and bytes received, and when the first frame came.
type Tally = (u64, u64, Instant);

/// Counts remote frames per (user, kind) and remembers when the first came.
#[derive(Default)]
struct Meter {
    seen: Mutex<HashMap<(String, MediaKind), Tally>>,
}

impl FrameSink for Meter {
    fn on_frame(&self, user: &calling::UserId, frame: &EncodedFrame) {
        if let Ok(mut seen) = self.seen.lock() {
            let e = seen
                .entry((user.to_string(), frame.kind()))
                .or_insert((0, 0, Instant::now()));
            e.0 += 1;
            e.1 += frame.data.len() as u64;
        }
    }
}

impl Meter {
    fn get(&self, user: &str, kind: MediaKind) -> Option<Tally> {
        self.seen
            .lock()
            .ok()?
            .get(&(user.to_string(), kind))
            .copied()
    }
}

fn describe(e: &Event) -> String {
    match e {
        Event::Call(CallEvent::Invited {
            sponsor,
            media_type,
            ..
        }) => format!("Invited by {sponsor} ({media_type:?})"),
        Event::Call(CallEvent::UserEnter { user, .. }) => format!("UserEnter {user}"),
        Event::Call(CallEvent::UserLeave { user, .. }) => format!("UserLeave {user}"),
        Event::Call(CallEvent::UserAudioAvailable {
            user, available, ..
        }) => format!("UserAudioAvailable {user} {available}"),
        Event::Call(CallEvent::UserVideoAvailable {
            user, available, ..
        }) => format!("UserVideoAvailable {user} {available}"),
        Event::Call(CallEvent::CallEnd {
            reason, duration, ..
        }) => format!("CallEnd {reason:?} after {:.1} s", duration.as_secs_f64()),
        other => format!("{other:?}"),
    }
}

/// Reads events until `pred` matches (or the deadline passes), logging them.
async fn until(
    events: &mut Events,
    log: &mut Vec<String>,
    secs: u64,
    pred: impl Fn(&Event) -> bool,
) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .ok()??;
        if !matches!(e, Event::UserVoiceVolume { .. }) {
            log.push(describe(&e));
        }
        if pred(&e) {
            return Some(e);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rtc_dtls=error,rtc_ice=error".into()),
        )
        .init();
    let secs: u64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    match run(secs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("quickstart failed: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run(secs: u64) -> Result<(), String> {
    // The signaling server, in-process, on a free loopback port.
    let key = "quickstart-secret-key";
    let mut config = calling_server::Config::new(APP, key);
    config.listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let server = calling_server::Server::bind(config)
        .await
        .map_err(|e| format!("server: {e}"))?;
    let url = format!("ws://{}/ws", server.local_addr());
    println!("signaling server on {url}");

    let login = |user: &'static str| {
        let url = url.clone();
        async move {
            let sig = calling_usersig::generate(APP, key, user, 3600, calling_usersig::now_unix());
            Calling::login(&url, APP, user, &sig, CallingConfig::loopback())
                .await
                .map_err(|e| format!("{user} login: {e}"))
        }
    };
    let (alice, mut alice_events) = login("alice").await?;
    let (bob, mut bob_events) = login("bob").await?;
    let alice_meter = Arc::new(Meter::default());
    let bob_meter = Arc::new(Meter::default());
    alice
        .set_frame_sink(Some(alice_meter.clone()))
        .await
        .map_err(|e| e.to_string())?;
    bob.set_frame_sink(Some(bob_meter.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let (mut alice_log, mut bob_log) = (Vec::new(), Vec::new());

    let placed = Instant::now();
    alice
        .call("bob", MediaType::Video, Duration::from_secs(30))
        .await
        .map_err(|e| format!("call: {e}"))?;
    let invite = match until(&mut bob_events, &mut bob_log, 10, |e| {
        matches!(e, Event::Call(CallEvent::Invited { .. }))
    })
    .await
    {
        Some(Event::Call(CallEvent::Invited { invite_id, .. })) => invite_id,
        _ => return Err("bob was never invited".into()),
    };
    let accepted = Instant::now();
    bob.accept(&invite)
        .await
        .map_err(|e| format!("accept: {e}"))?;
    until(&mut alice_events, &mut alice_log, 10, |e| {
        matches!(e, Event::Call(CallEvent::UserEnter { .. }))
    })
    .await
    .ok_or("bob never entered alice's call")?;

    // Let media flow, collecting events on both sides meanwhile.
    let flow = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(flow) => break,
            Some(e) = alice_events.recv() => if !matches!(e, Event::UserVoiceVolume { .. }) { alice_log.push(describe(&e)) },
            Some(e) = bob_events.recv() => if !matches!(e, Event::UserVoiceVolume { .. }) { bob_log.push(describe(&e)) },
        }
    }
    let alice_stats = alice.stats().await.map_err(|e| e.to_string())?;
    let bob_stats = bob.stats().await.map_err(|e| e.to_string())?;

    alice.hangup().await.map_err(|e| e.to_string())?;
    until(&mut alice_events, &mut alice_log, 10, |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    until(&mut bob_events, &mut bob_log, 10, |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;

    println!("\nalice saw: {}", alice_log.join(", "));
    println!("bob saw:   {}", bob_log.join(", "));
    println!("\nmedia over {secs} s:");
    let mut failures = Vec::new();
    for (to, from, meter, stats) in [
        ("alice", "bob", &alice_meter, &alice_stats),
        ("bob", "alice", &bob_meter, &bob_stats),
    ] {
        let packets = stats
            .iter()
            .find(|s| s.user == from)
            .map(|s| s.packets_received)
            .unwrap_or(0);
        for kind in [MediaKind::Video, MediaKind::Audio] {
            match meter.get(from, kind) {
                Some((frames, bytes, first)) => {
                    let setup = if to == "alice" && kind == MediaKind::Video {
                        format!(
                            ", first frame {:.1} ms after accept ({:.1} ms after call)",
                            first.duration_since(accepted).as_secs_f64() * 1e3,
                            first.duration_since(placed).as_secs_f64() * 1e3
                        )
                    } else {
                        String::new()
                    };
                    println!("  {from} -> {to} {kind:?}: {frames} frames, {bytes} bytes{setup}");
                }
                None => {
                    println!("  {from} -> {to} {kind:?}: NOTHING RECEIVED");
                    failures.push(format!("{to} received no {kind:?} from {from}"));
                }
            }
        }
        println!("  {from} -> {to}: {packets} RTP packets");
    }
    alice.logout().await.ok();
    bob.logout().await.ok();
    server.shutdown().await;
    if failures.is_empty() {
        println!("\nok: media flowed both ways");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
