//! A real browser on the other end: headless Chromium (Debian's `chromium`,
//! fake camera and microphone) runs the web demo served by an in-process
//! `calling-server` on 127.0.0.1:0, driven by `tests/browser/driver.mjs`
//! (playwright-core). Browser ↔ browser, Rust `Calling` ↔ browser in both
//! offer directions, and reject / busy / cancel / no answer / offline, a
//! kick, a refused UserSig, a server restart, a switch to video, a join
//! with a ticket and a camera that cannot open, as the page shows them; the
//! example app (examples/web-app) on another origin calls Rust. The page
//! and the example use the TRTCCalling API (web/trtc-calling.js).
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), `node`, and
//! `tests/browser/node_modules` (`scripts/setup.sh` installs all three).
//! Without them each test prints a loud SKIPPED banner, and fails when `CI`
//! is set, so CI cannot pass without having run them.
//!
//! The setup-time benchmark is `browser_setup_bench` (ignored by default):
//! `cargo test -p calling --test browser -- --ignored --nocapture browser_setup_bench`.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use calling::{CallEvent, Calling, CallingConfig, EndReason, Event, Events, MediaKind, MediaType};
use calling_server::{Config, DemoMode, RunningServer, Server};
use calling_signal::protocol::ErrorCode;
use calling_signal::{Transport, TransportError, UserId, WsConfig, WsTransport};
use support::browser::{Driver, prerequisites};
use support::{expect, root, wait_frames};

const APP: u64 = 1_400_000_000;
const KEY: &str = "browser-test-secret-key";
const RING: Duration = Duration::from_secs(30);

/// One Chromium at a time: the machine has two cores.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start() -> (RunningServer, String) {
    let server = start_at("127.0.0.1:0".parse().unwrap()).await;
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

/// A demo-mode server on `addr`.
async fn start_at(addr: std::net::SocketAddr) -> RunningServer {
    let mut config = Config::new(APP, KEY);
    config.listen = addr;
    config.demo = Some(DemoMode::new(KEY));
    Server::bind(config).await.unwrap()
}

async fn login(server: &RunningServer, user: &str) -> (Calling, Events) {
    let sig = calling_usersig::generate(APP, KEY, user, 3600, calling_usersig::now_unix());
    let url = format!("ws://{}/ws", server.local_addr());
    Calling::login(calling::Login {
        server: url.to_string(),
        sdk_app_id: APP,
        user_id: user.to_string(),
        user_sig: sig,
        config: CallingConfig::loopback(),
    })
    .await
    .unwrap()
}

/// Runs a browser-only driver scenario to its `MEDIA_OK` against a fresh
/// server; `None` when the prerequisites are missing (already reported).
async fn browser_scenario(test: &str, scenario: &str) -> Option<()> {
    prerequisites(test).ok()?;
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let mut driver = Driver::spawn(scenario, &base, &[]);
    driver.expect("MEDIA_OK").await;
    driver.finish().await;
    server.shutdown().await;
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_calls_browser_with_video_and_audio() {
    if browser_scenario(
        "browser_calls_browser_with_video_and_audio",
        "browser-to-browser",
    )
    .await
    .is_none()
    {
        return;
    }
    assert!(
        root().join("target/browser/in-call.png").exists(),
        "the in-call screenshot was not saved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_hold_a_three_party_group_call() {
    browser_scenario("browsers_hold_a_three_party_group_call", "group").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_reject_busy_and_cancel() {
    browser_scenario("browser_shows_reject_busy_and_cancel", "reject-busy-cancel").await;
}

/// A group call of two browsers and a Rust client: the roster / enter
/// exchange between the JS client and calling-core makes a full mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_and_rust_in_one_group_call() {
    if prerequisites("two_browsers_and_rust_in_one_group_call").is_err() {
        return;
    }
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let (rust, mut events) = login(&server, "rust").await;
    let mut driver = Driver::spawn("mixed-group", &base, &["peer=rust"]);
    let invite = match expect(&mut events, "the group invite", |e| {
        matches!(e, Event::Call(CallEvent::Invited { .. }))
    })
    .await
    {
        Event::Call(CallEvent::Invited { invite_id, .. }) => invite_id,
        _ => unreachable!(),
    };
    rust.accept(&invite).await.unwrap();
    for user in ["web-a", "web-b"] {
        wait_frames(&rust, user, MediaKind::Video, 10).await;
        wait_frames(&rust, user, MediaKind::Audio, 10).await;
    }
    driver.expect("MEDIA_OK").await;
    // Rust invites one more (offline) user: the browsers hear of the new
    // invitee list (GROUP_CALL_INVITEE_LIST_UPDATE).
    rust.invite(&["web-late"], RING).await.unwrap();
    driver.poke();
    driver.expect("INVITEES web-late").await;
    driver.expect("A_LEFT").await;
    expect(
        &mut events,
        "web-a leaves",
        |e| matches!(e, Event::Call(CallEvent::UserLeave { user, .. }) if user.as_str() == "web-a"),
    )
    .await;
    let snapshot = rust.current_call().await.unwrap().unwrap();
    assert_eq!(
        snapshot.connected,
        vec![calling::UserId::new("web-b").unwrap()]
    );
    rust.hangup().await.unwrap();
    driver.expect("ENDED").await;
    driver.finish().await;
    server.shutdown().await;
}

/// The server goes away and a new one starts on the same address: the
/// pages show that they are reconnecting, log in again by themselves, and
/// can call each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_reconnect_after_a_server_restart() {
    if prerequisites("browsers_reconnect_after_a_server_restart").is_err() {
        return;
    }
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let addr = server.local_addr();
    let mut driver = Driver::spawn("server-restart", &base, &[]);
    driver.expect("READY").await;
    server.shutdown().await;
    driver.expect("LOST").await;
    // The address the first server was given (bound on port 0), not a fixed one.
    let again = start_at(addr).await;
    driver.expect("MEDIA_OK").await;
    driver.finish().await;
    again.shutdown().await;
}

/// A browser and a Rust client in a call when the server restarts: both
/// reconnect and log in again by themselves, the call goes on, and Rust's
/// hang-up reaches the browser through the new server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_rust_goes_on_through_a_server_restart() {
    if prerequisites("a_call_with_rust_goes_on_through_a_server_restart").is_err() {
        return;
    }
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let addr = server.local_addr();
    let (rust, mut events) = login(&server, "rust").await;
    let mut driver = Driver::spawn("answer-restart", &base, &["user=web-r", "peer=rust"]);
    driver.expect("READY").await;
    rust.call("web-r", MediaType::Video, RING).await.unwrap();
    expect(
        &mut events,
        "the browser enters",
        |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user.as_str() == "web-r"),
    )
    .await;
    driver.expect("MEDIA_OK").await;
    server.shutdown().await;
    driver.expect("LOST").await;
    let again = start_at(addr).await;
    expect(&mut events, "Rust reconnects", |e| {
        matches!(e, Event::Reconnected)
    })
    .await;
    driver.expect("RECONNECTED").await;
    assert!(
        rust.current_call().await.unwrap().is_some(),
        "Rust's call ended during the restart"
    );
    let before = wait_frames(&rust, "web-r", MediaKind::Video, 1).await;
    wait_frames(&rust, "web-r", MediaKind::Video, before + 10).await;
    rust.hangup().await.unwrap();
    driver.expect("ENDED").await;
    driver.finish().await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_no_answer_on_both_sides() {
    browser_scenario("browser_shows_no_answer_on_both_sides", "no-answer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_page_shows_it_is_logged_out() {
    browser_scenario("a_kicked_page_shows_it_is_logged_out", "kick").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_call_switches_to_video_when_the_other_side_agrees() {
    browser_scenario(
        "an_audio_call_switches_to_video_when_the_other_side_agrees",
        "switch-to-video",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_browser_joins_with_a_ticket_and_a_wrong_secret_does_not() {
    browser_scenario(
        "a_third_browser_joins_with_a_ticket_and_a_wrong_secret_does_not",
        "join-by-ticket",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_is_told_when_the_callers_camera_cannot_open() {
    browser_scenario(
        "the_callee_is_told_when_the_callers_camera_cannot_open",
        "no-camera",
    )
    .await;
}

/// A forged and an expired UserSig: the page says which, in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_explains_a_refused_usersig() {
    if prerequisites("browser_explains_a_refused_usersig").is_err() {
        return;
    }
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let forged = calling_usersig::generate(
        APP,
        "another-key",
        "web-w",
        3600,
        calling_usersig::now_unix(),
    );
    let expired =
        calling_usersig::generate(APP, KEY, "web-w", 60, calling_usersig::now_unix() - 3600);
    let app = format!("app={APP}");
    let badsig = format!("badsig={forged}");
    let oldsig = format!("oldsig={expired}");
    let mut driver = Driver::spawn("bad-login", &base, &[&app, &badsig, &oldsig]);
    driver.expect("MEDIA_OK").await;
    driver.finish().await;
    server.shutdown().await;
}

/// examples/web-app, served from another origin, imports the package from
/// the server (CORS) and video-calls a Rust client, which accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_on_another_origin_calls_rust() {
    if prerequisites("the_example_app_on_another_origin_calls_rust").is_err() {
        return;
    }
    let _one = BROWSER.lock().await;
    // The example's origin (a port the driver's static server gets from
    // the OS) is not known here in advance: every origin may connect.
    let mut config = Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.allowed_origins = vec!["*".to_string()];
    let server = Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (rust, mut events) = login(&server, "rust").await;
    let sig = calling_usersig::generate(APP, KEY, "ex-web", 3600, calling_usersig::now_unix());
    let app = format!("app={APP}");
    let sig = format!("sig={sig}");
    let mut driver = Driver::spawn(
        "example-app",
        &base,
        &["user=ex-web", "peer=rust", &app, &sig],
    );
    driver.expect("READY").await;
    let invite = match expect(&mut events, "the example's invite", |e| {
        matches!(e, Event::Call(CallEvent::Invited { .. }))
    })
    .await
    {
        Event::Call(CallEvent::Invited {
            invite_id, sponsor, ..
        }) => {
            assert_eq!(sponsor.as_str(), "ex-web");
            invite_id
        }
        _ => unreachable!(),
    };
    rust.accept(&invite).await.unwrap();
    wait_frames(&rust, "ex-web", MediaKind::Video, 10).await;
    wait_frames(&rust, "ex-web", MediaKind::Audio, 10).await;
    driver.expect("MEDIA_OK").await;
    driver.poke();
    expect(&mut events, "call end", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    driver.expect("ENDED").await;
    driver.finish().await;
    server.shutdown().await;
}

/// Rust audio-calls the browser and asks to switch to video; the page
/// accepts, and video flows both ways on the video m-line the audio call
/// had from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_asks_the_browser_to_switch_to_video() {
    if prerequisites("rust_asks_the_browser_to_switch_to_video").is_err() {
        return;
    }
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let (rust, mut events) = login(&server, "rust").await;
    let mut driver = Driver::spawn("answer-switch", &base, &["user=web-s", "peer=rust"]);
    driver.expect("READY").await;
    rust.call("web-s", MediaType::Audio, RING).await.unwrap();
    expect(
        &mut events,
        "the browser enters",
        |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user.as_str() == "web-s"),
    )
    .await;
    driver.expect("IN_CALL").await;
    rust.switch_media_type(MediaType::Video).await.unwrap();
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
    let video = wait_frames(&rust, "web-s", MediaKind::Video, 10).await;
    eprintln!("rust got {video} video frames from the browser after the switch");
    driver.expect("MEDIA_OK").await;
    rust.hangup().await.unwrap();
    driver.expect("ENDED").await;
    driver.finish().await;
    server.shutdown().await;
}

/// Rust calls the browser; "rust" < "web-r", so Rust makes the offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_calls_browser_and_media_flows_both_ways() {
    if prerequisites("rust_calls_browser_and_media_flows_both_ways").is_err() {
        return;
    }
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let (rust, mut events) = login(&server, "rust").await;
    let mut driver = Driver::spawn("answer", &base, &["user=web-r", "peer=rust"]);
    driver.expect("READY").await;
    rust.call("web-r", MediaType::Video, RING).await.unwrap();
    expect(
        &mut events,
        "the browser enters",
        |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user.as_str() == "web-r"),
    )
    .await;
    let video = wait_frames(&rust, "web-r", MediaKind::Video, 10).await;
    let audio = wait_frames(&rust, "web-r", MediaKind::Audio, 10).await;
    eprintln!("rust got {video} video and {audio} audio frames from the browser");
    driver.expect("MEDIA_OK").await;
    rust.hangup().await.unwrap();
    driver.expect("ENDED").await;
    let end = expect(&mut events, "call end", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    assert!(matches!(
        end,
        Event::Call(CallEvent::CallEnd {
            reason: EndReason::Hangup,
            ..
        })
    ));
    driver.finish().await;
    server.shutdown().await;
}

/// The browser calls Rust; "b-web" < "rust", so the browser makes the offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_calls_rust_and_media_flows_both_ways() {
    if prerequisites("browser_calls_rust_and_media_flows_both_ways").is_err() {
        return;
    }
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let (rust, mut events) = login(&server, "rust").await;
    let mut driver = Driver::spawn("place", &base, &["user=b-web", "peer=rust"]);
    let (invite, call_id) = match expect(&mut events, "the browser's invite", |e| {
        matches!(e, Event::Call(CallEvent::Invited { .. }))
    })
    .await
    {
        Event::Call(CallEvent::Invited {
            invite_id,
            sponsor,
            call_id,
            ..
        }) => {
            assert_eq!(sponsor.as_str(), "b-web");
            (invite_id, call_id)
        }
        _ => unreachable!(),
    };
    rust.accept(&invite).await.unwrap();
    let video = wait_frames(&rust, "b-web", MediaKind::Video, 10).await;
    let audio = wait_frames(&rust, "b-web", MediaKind::Audio, 10).await;
    eprintln!("rust got {video} video and {audio} audio frames from the browser");
    // The browser made the call's room closed to its members: a stranger
    // who knows the call id cannot sit in it.
    let url = format!("ws://{}/ws", server.local_addr());
    let sig = calling_usersig::generate(APP, KEY, "mallory", 3600, calling_usersig::now_unix());
    let config = WsConfig::new(&url, APP, UserId::new("mallory").unwrap(), sig);
    let mallory = WsTransport::connect(config).await.unwrap();
    match mallory.join_room(call_id.as_str(), &[]).await {
        Err(TransportError::Refused { code, .. }) => assert_eq!(code, ErrorCode::NotAllowed),
        other => panic!("a stranger joined the browser's call room: {other:?}"),
    }
    mallory.close().await;
    driver.expect("MEDIA_OK").await;
    driver.poke();
    let end = expect(&mut events, "call end", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    assert!(matches!(
        end,
        Event::Call(CallEvent::CallEnd {
            reason: EndReason::Hangup,
            ..
        })
    ));
    driver.expect("ENDED").await;
    driver.finish().await;
    server.shutdown().await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn summary(mut v: Vec<f64>) -> String {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return "n=0".into();
    }
    v.sort_by(f64::total_cmp);
    format!(
        "n={} p50={:.0} ms p90={:.0} ms p95={:.0} ms min={:.0} ms max={:.0} ms",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.95),
        v[0],
        v[v.len() - 1]
    )
}

/// Setup time, answer → Chrome's first decoded frame, in both offer
/// directions: "a-rust" < "web-bench" (Rust offers) and "z-rust" >
/// "web-bench" (the browser offers). `BENCH_CALLS` calls per direction
/// (default 10), interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn browser_setup_bench() {
    if prerequisites("browser_setup_bench").is_err() {
        return;
    }
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let _one = BROWSER.lock().await;
    let (server, base) = start().await;
    let (a, mut a_events) = login(&server, "a-rust").await;
    let (z, mut z_events) = login(&server, "z-rust").await;
    // One more call than counted: the first warms up the page (its first
    // getUserMedia and encoders take some 400 ms more than the rest).
    let count = format!("count={}", calls * 2 + 1);
    let mut driver = Driver::spawn("bench", &base, &["user=web-bench", &count]);
    driver.expect("READY").await;
    // Per direction: (answer -> connected, answer -> first decoded frame).
    let mut rust_offers = (Vec::new(), Vec::new());
    let mut browser_offers = (Vec::new(), Vec::new());
    for i in 0..=calls * 2 {
        let (caller, events, out) = if i % 2 == 0 {
            (&a, &mut a_events, &mut rust_offers)
        } else {
            (&z, &mut z_events, &mut browser_offers)
        };
        caller
            .call("web-bench", MediaType::Video, RING)
            .await
            .unwrap();
        let line = driver.expect("SETUP").await;
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "bad line {line}");
        assert_eq!(fields[1], caller.user().as_str());
        let connect: f64 = fields[2].parse().unwrap();
        let frame: f64 = fields[3].parse().unwrap();
        assert!(frame > 0.0, "{line}");
        if i > 0 {
            out.0.push(connect);
            out.1.push(frame);
        }
        caller.hangup().await.unwrap();
        expect(events, "call end", |e| {
            matches!(e, Event::Call(CallEvent::CallEnd { .. }))
        })
        .await;
    }
    // Per call: the browser's timeline of the setup.
    eprintln!("{}", driver.log());
    driver.finish().await;
    for (name, (connect, frame)) in [
        ("Rust offers   ", rust_offers),
        ("browser offers", browser_offers),
    ] {
        println!(
            "{name}: answer -> connected {}; answer -> first decoded frame {}",
            summary(connect),
            summary(frame)
        );
    }
    server.shutdown().await;
}
