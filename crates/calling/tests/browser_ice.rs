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

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calling::{CallEvent, Calling, CallingConfig, Event, Events, MediaKind, MediaType};
use calling_server::{Config, DemoMode, RunningServer, Server, TurnConfig};
use support::coturn::{Coturn, turnserver_path};
use tokio::sync::mpsc;
use tokio::time::timeout;

const APP: u64 = 1_400_000_000;
const KEY: &str = "browser-ice-test-secret-key";
const TURN_SECRET: &str = "browser-ice-turn-secret";
/// Longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(40);
const RING: Duration = Duration::from_secs(30);
/// Short enough that the page renews it during the test, long enough that
/// the credential of the login is still good when the call sets up.
const TURN_TTL: Duration = Duration::from_secs(12);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `Ok` when everything the browser tests need is installed; otherwise
/// fails under CI and returns `Err` (after a loud banner) locally.
fn prerequisites(test: &str) -> Result<(), ()> {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!(
            "{} (Debian package chromium)",
            chromium().display()
        ));
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !node_ok {
        missing.push("node".to_string());
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        missing.push("tests/browser/node_modules (npm ci)".to_string());
    }
    if missing.is_empty() {
        return Ok(());
    }
    let what = missing.join(", ");
    if std::env::var_os("CI").is_some() {
        panic!(
            "browser test {test} cannot run under CI: missing {what}; scripts/setup.sh installs them"
        );
    }
    // Straight to stderr: libtest captures eprintln! of passing tests, and
    // this must be seen.
    let banner = format!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED browser test {test}: missing {what}.\n\
         !!! Run scripts/setup.sh (as root) to install them. This test did NOT run.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
    Err(())
}

/// The Node driver running one scenario; killed if dropped early.
struct Driver {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Driver {
    fn spawn(scenario: &str, base: &str, options: &[&str]) -> Driver {
        let dir = root().join("tests/browser");
        let artifacts = root().join("target/browser");
        let mut child = Command::new("node")
            .current_dir(&dir)
            .arg("driver.mjs")
            .arg(scenario)
            .arg(base)
            .arg(format!("artifacts={}", artifacts.display()))
            .args(options)
            .env("CHROMIUM", chromium())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        Driver {
            child,
            lines,
            stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the driver to print `want`, returning the line.
    async fn expect(&mut self, want: &str) -> String {
        let got = timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line.starts_with(want) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match got {
            Ok(Some(line)) => line,
            Ok(None) => {
                // Give the stderr thread a moment to drain (bounded).
                let _ = timeout(Duration::from_secs(2), async {
                    while self.child.try_wait().ok().flatten().is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await;
                std::thread::sleep(Duration::from_millis(100));
                panic!("driver ended before {want}:\n{}", self.log())
            }
            Err(_) => panic!(
                "timed out waiting for {want} from the driver:\n{}",
                self.log()
            ),
        }
    }

    /// Waits for the driver to exit and asserts it succeeded.
    async fn finish(mut self) {
        let status = timeout(WAIT, async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                std::thread::sleep(Duration::from_millis(100));
                panic!("driver failed ({s}):\n{}", self.log())
            }
            Err(_) => panic!("driver did not exit:\n{}", self.log()),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn expect_event<F: Fn(&Event) -> bool>(events: &mut Events, what: &str, pred: F) -> Event {
    let found = timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            if pred(&e) {
                return Some(e);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(e)) => e,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits until `client` has received at least `min` frames of `kind` from `from`.
async fn wait_frames(client: &Calling, from: &str, kind: MediaKind, min: u64) -> u64 {
    let got = timeout(WAIT, async {
        loop {
            let stats = client.stats().await.unwrap();
            let n = stats
                .iter()
                .find(|s| s.user == from)
                .map(|s| match kind {
                    MediaKind::Audio => s.audio_frames_received,
                    _ => s.video_frames_received,
                })
                .unwrap_or(0);
            if n >= min {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match got {
        Ok(n) => n,
        Err(_) => panic!(
            "{} got fewer than {min} {kind:?} frames from {from}",
            client.user()
        ),
    }
}

/// Rust calls the relay-only browser; "rust" < "web-relay", so Rust offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_calls_a_relay_only_browser_through_coturn_with_server_issued_credentials() {
    let test = "rust_calls_a_relay_only_browser_through_coturn_with_server_issued_credentials";
    if prerequisites(test).is_err() {
        return;
    }
    if turnserver_path().is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("browser test {test} cannot run under CI: missing turnserver (coturn)");
        }
        let _ = std::io::stderr().write_all(
            format!("\n!!! SKIPPED browser test {test}: missing turnserver (Debian package coturn). This test did NOT run.\n").as_bytes(),
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
    expect_event(
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
