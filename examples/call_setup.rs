//! Call setup through the whole stack, repeated: the in-process signaling
//! server on loopback, two `Calling` clients, WebRTC with the generated
//! H.264 test pattern.
//!
//! ```sh
//! cargo run --release --example call_setup [-- --calls 50] [--ring-ms 300]
//! ```
//!
//! For each call it measures, at the caller: accept -> first remote video
//! frame, and call() -> first remote video frame; then prints p50 / p95 /
//! max over all calls. The callee lets each call ring `--ring-ms` (default
//! 300 ms, quicker than any person answers) before it accepts: a callee
//! starts its media while ringing, so an accept at once (`--ring-ms 0`)
//! also measures its encoder's start. The server's rate limit is raised
//! for the run: calls follow each other quickly, which real users never do.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calling::{
    CallEvent, Calling, CallingConfig, EncodedFrame, Event, Events, FrameSink, MediaKind, MediaType,
};
use clap::Parser;

#[path = "support/logging.rs"]
mod logging;

/// Call setup through the whole stack, repeated: accept -> first remote
/// video frame and call() -> first remote video frame, p50 / p95 / max.
#[derive(Debug, Parser)]
#[command(name = "call_setup")]
struct Args {
    /// Calls to place, one after the other.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    calls: u32,
    /// How long the callee lets each call ring before it accepts, in
    /// milliseconds.
    #[arg(long, default_value_t = 300)]
    ring_ms: u64,
}

const APP: u64 = 1_400_000_000;
const KEY: &str = "bench-secret-key";

/// Remembers when the first remote video frame of the current call came.
#[derive(Default)]
struct FirstFrame {
    at: Mutex<Option<Instant>>,
    wake: tokio::sync::Notify,
}

impl FrameSink for FirstFrame {
    fn on_frame(&self, _user: &calling::UserId, frame: &EncodedFrame) {
        if frame.kind() != MediaKind::Video {
            return;
        }
        if let Ok(mut at) = self.at.lock()
            && at.is_none()
        {
            *at = Some(Instant::now());
            self.wake.notify_one();
        }
    }
}

async fn until(
    events: &mut Events,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Result<Event, String> {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if pred(&e) {
                return Ok(e);
            }
        }
        Err("event stream ended".to_string())
    })
    .await
    .map_err(|_| format!("timed out waiting for {what}"))?
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let Args { calls, ring_ms } = Args::parse();
    // RUST_LOG=call_setup=debug,calling=debug,rtc_dtls=debug,... shows
    // where a call's milliseconds go (our debug lines mark each accept and
    // first frame); by default only the SDK's info lines, on stderr.
    logging::init();
    let mut config = calling_server::Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    // Calls follow each other with no pause: at the default 50 frames/s the
    // client's pacing (which keeps it under the server's rate limit) would
    // be measured instead of call setup.
    config.limits.rate_per_sec = 5000;
    config.limits.rate_burst = 10_000;
    let server = calling_server::Server::bind(config)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("ws://{}/ws", server.local_addr());
    let login = |user: &'static str| {
        let url = url.clone();
        async move {
            let sig = calling_usersig::generate(APP, KEY, user, 3600, calling_usersig::now_unix());
            Calling::login(calling::Login {
                server: url.to_string(),
                sdk_app_id: APP,
                user_id: user.to_string(),
                user_sig: sig,
                config: CallingConfig::loopback(),
            })
            .await
            .map_err(|e| e.to_string())
        }
    };
    let (alice, mut alice_events) = login("alice").await?;
    let (bob, mut bob_events) = login("bob").await?;
    let first = Arc::new(FirstFrame::default());
    alice
        .set_frame_sink(Some(first.clone()))
        .await
        .map_err(|e| e.to_string())?;

    let (mut from_accept, mut from_call, mut enter) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..calls {
        let step = |what: &str, e: String| format!("call {n}: {what}: {e}");
        if let Ok(mut at) = first.at.lock() {
            *at = None;
        }
        let placed = Instant::now();
        alice
            .call("bob", MediaType::Video, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
        let invite = match until(&mut bob_events, "the invite", |e| {
            matches!(e, Event::Call(CallEvent::Invited { .. }))
        })
        .await
        .map_err(|e| step("ring", e))?
        {
            Event::Call(CallEvent::Invited { invite_id, .. }) => invite_id,
            _ => return Err("no invite".into()),
        };
        tokio::time::sleep(Duration::from_millis(ring_ms)).await;
        let accepted = Instant::now();
        tracing::debug!(call = n, "accepting");
        bob.accept(&invite).await.map_err(|e| e.to_string())?;
        until(&mut alice_events, "bob's enter", |e| {
            matches!(e, Event::Call(CallEvent::UserEnter { .. }))
        })
        .await
        .map_err(|e| step("accept", e))?;
        enter.push(accepted.elapsed().as_secs_f64() * 1e3);
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = first.wake.notified();
                if let Ok(at) = first.at.lock()
                    && let Some(at) = *at
                {
                    return at;
                }
                notified.await;
            }
        })
        .await
        .map_err(|_| format!("call {n}: no video frame within 10 s"))?;
        from_accept.push(got.duration_since(accepted).as_secs_f64() * 1e3);
        tracing::debug!(call = n, elapsed = ?got.duration_since(accepted), "first frame");
        from_call.push(got.duration_since(placed).as_secs_f64() * 1e3);
        alice.hangup().await.map_err(|e| e.to_string())?;
        until(&mut alice_events, "alice's call end", |e| {
            matches!(e, Event::Call(CallEvent::CallEnd { .. }))
        })
        .await
        .map_err(|e| step("hangup", e))?;
        // Between calls the caller is a stranger to the callee again, and
        // a callee takes 5 messages a second from each stranger: calls
        // back to back would exhaust that (each ends with a few messages
        // that arrive after the callee's call is over). No real caller
        // calls one person several times a second.
        tokio::time::sleep(Duration::from_millis(400)).await;
        until(&mut bob_events, "bob's call end", |e| {
            matches!(e, Event::Call(CallEvent::CallEnd { .. }))
        })
        .await
        .map_err(|e| step("hangup", e))?;
    }
    for (name, v) in [
        ("accept -> first frame", &mut from_accept),
        ("call() -> first frame", &mut from_call),
        ("accept -> caller's enter", &mut enter),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "{name:24} calls {:3}  p50 {:6.1} ms  p95 {:6.1} ms  max {:6.1} ms",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.95),
            v[v.len() - 1]
        );
    }
    alice.logout().await.ok();
    bob.logout().await.ok();
    server.shutdown().await;
    Ok(())
}
