//! Rust SDK ↔ headless Chromium through a real coturn on 127.0.0.1, the
//! browser set to relay-only: media flows both ways, the browser's
//! selected candidate pair is a relay one, and the page renews its TURN
//! credential by itself. The browser gets the TURN server and its
//! credentials from `login_ok` only (the web demo passes no ICE servers):
//! this is the server-issued credentials working with no app code.
//!
//! Needs what tests/browser.rs needs (Chromium, node, playwright-core) and
//! `turnserver` (coturn); each test prints a loud SKIPPED banner without
//! them, and fails under CI.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use calling::{CallEvent, Calling, CallingConfig, Event, MediaKind, MediaType};
use calling_server::{Config, DemoMode, RunningServer, Server, TurnConfig};
use support::browser::{Driver, prerequisites};
use support::coturn::{Coturn, turnserver_path};
use support::{expect, wait_frames};

const APP: u64 = 1_400_000_000;
const KEY: &str = "browser-ice-test-secret-key";
const TURN_SECRET: &str = "browser-ice-turn-secret";
const RING: Duration = Duration::from_secs(30);
/// Short enough that the page renews it during the test, long enough that
/// the credential of the login is still good when the call sets up.
const TURN_TTL: Duration = Duration::from_secs(12);

/// Rust calls the relay-only browser; "rust" < "web-relay", so Rust offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_calls_a_relay_only_browser_through_coturn_with_server_issued_credentials() {
    let test = "rust_calls_a_relay_only_browser_through_coturn_with_server_issued_credentials";
    if prerequisites(test).is_err() {
        return;
    }
    if turnserver_path().is_none() {
        let _ = support::missing(
            "browser test",
            test,
            "turnserver (Debian package coturn)",
            "to install it",
        );
        return;
    }
    let coturn = Coturn::start(TURN_SECRET);
    let mut config = Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.demo = Some(DemoMode::new(KEY));
    let mut turn = TurnConfig::new(vec![coturn.url()], TURN_SECRET);
    turn.ttl = TURN_TTL;
    config.ice.turn = Some(turn);
    let server: RunningServer = Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());

    let sig = calling_usersig::generate(APP, KEY, "rust", 3600, calling_usersig::now_unix());
    let url = format!("ws://{}/ws", server.local_addr());
    let (rust, mut events) = Calling::login(calling::Login {
        server: url.to_string(),
        sdk_app_id: APP,
        user_id: "rust".to_string(),
        user_sig: sig,
        config: CallingConfig::loopback(),
    })
    .await
    .unwrap();

    let mut driver = Driver::spawn("answer-relay", &base, &["user=web-relay", "peer=rust"]);
    // What the page will hand to RTCPeerConnection: the server's TURN
    // server with a REST credential for its user, nothing the app added.
    let ice = driver.expect("ICE ").await;
    let servers: serde_json::Value = serde_json::from_str(&ice["ICE ".len()..]).unwrap();
    assert_eq!(servers[0]["urls"][0], coturn.url(), "{servers}");
    let username = servers[0]["username"].as_str().unwrap();
    assert!(username.ends_with(":web-relay"), "{username}");
    assert!(servers[0]["credential"].is_string(), "{servers}");
    driver.expect("READY").await;

    rust.call("web-relay", MediaType::Video, RING)
        .await
        .unwrap();
    expect(
        &mut events,
        "the browser enters",
        |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user.as_str() == "web-relay"),
    )
    .await;
    let video = wait_frames(&rust, "web-relay", MediaKind::Video, 10).await;
    let audio = wait_frames(&rust, "web-relay", MediaKind::Audio, 10).await;
    eprintln!("rust got {video} video and {audio} audio frames from the relay-only browser");
    driver.expect("MEDIA_OK").await;
    let pair = driver.expect("PAIR ").await;
    eprintln!("browser's selected pair: {pair}");
    let mut parts = pair.split_whitespace().skip(1);
    assert_eq!(
        parts.next(),
        Some("relay"),
        "the browser's selected local candidate is not a relay one: {pair}"
    );
    // Rust's view, for the log: its end is a host candidate; the browser's
    // is its relay address, often as peer-reflexive (its checks arrive
    // before its trickled relay candidate does). The browser's own stats
    // above are what tell.
    let stats = rust.stats().await.unwrap();
    let rust_pair = stats
        .iter()
        .find(|s| s.user.as_str() == "web-relay")
        .and_then(|s| s.selected_pair);
    eprintln!("rust's selected pair: {rust_pair:?}");
    // The page renews its credential before it expires, by itself.
    let refreshed = driver.expect("REFRESHED ").await;
    let fresh: serde_json::Value = serde_json::from_str(&refreshed["REFRESHED ".len()..]).unwrap();
    let fresh_user = fresh[0]["username"].as_str().unwrap();
    let expiry = |u: &str| u.split(':').next().unwrap().parse::<u64>().unwrap();
    assert!(
        expiry(fresh_user) > expiry(username),
        "{fresh_user} vs {username}"
    );
    assert!(fresh_user.ends_with(":web-relay"));

    rust.hangup().await.unwrap();
    driver.expect("ENDED").await;
    driver.finish().await;
    server.shutdown().await;
    drop(coturn);
}
