//! Shared test support: an in-process signaling server on 127.0.0.1:0,
//! logged-in clients, bounded waits for events and media, and the loud
//! banner of a test whose prerequisites are missing.

#![allow(dead_code, clippy::unwrap_used)]

pub mod browser;
pub mod coturn;

// calling-server's tests/support/common.rs, loaded once, with coturn's.
use coturn::common;
pub use coturn::common::missing;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calling::{CallEvent, Calling, CallingConfig, Event, Events, MediaKind};
use calling_server::{Config, RunningServer, Server};
use tokio::time::timeout;

pub const APP: u64 = 1_400_000_000;
pub const KEY: &str = "test-secret-key";

/// Longest any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(40);

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Waits (at most [`WAIT`]) for `child` to exit; `None` when it did not.
pub async fn wait_exit(child: &mut Child) -> Option<ExitStatus> {
    timeout(WAIT, async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .ok()
}

/// Reads a spawned child's piped stdout and stderr on two threads: each
/// stdout line, passed through `parse`, arrives on the channel; stderr
/// piles up in the string (for failure messages).
pub fn read_output<T: Send + 'static>(
    child: &mut Child,
    parse: fn(String) -> T,
) -> (tokio::sync::mpsc::UnboundedReceiver<T>, Arc<Mutex<String>>) {
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(parse(line)).is_err() {
                break;
            }
        }
    });
    (lines, common::collect_log(child.stderr.take().unwrap()))
}

/// Kills `child` unless it has exited, and reaps it (for `Drop`).
pub fn reap(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub struct Net {
    pub server: RunningServer,
    pub url: String,
}

pub async fn start() -> Net {
    let mut config = Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(config).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr());
    Net { server, url }
}

pub fn sig(user: &str) -> String {
    calling_usersig::generate(APP, KEY, user, 3600, calling_usersig::now_unix())
}

pub async fn login(net: &Net, user: &str) -> (Calling, Events) {
    login_with(net, user, CallingConfig::loopback()).await
}

pub async fn login_with(net: &Net, user: &str, config: CallingConfig) -> (Calling, Events) {
    Calling::login(calling::Login {
        server: net.url.to_string(),
        sdk_app_id: APP,
        user_id: user.to_string(),
        user_sig: sig(user),
        config,
    })
    .await
    .unwrap()
}

/// Waits for the first event matching `pred`, skipping others.
pub async fn expect<F: Fn(&Event) -> bool>(events: &mut Events, what: &str, pred: F) -> Event {
    expect_within(events, what, WAIT, pred).await
}

/// [`expect`] with a wait of its own.
pub async fn expect_within<F: Fn(&Event) -> bool>(
    events: &mut Events,
    what: &str,
    wait: Duration,
    pred: F,
) -> Event {
    let found = timeout(wait, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return Some(e),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    match found {
        Ok(Some(e)) => e,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("no {what} within {wait:?}"),
    }
}

/// The invite id of the next `Invited`.
pub async fn invited(events: &mut Events) -> calling::InviteId {
    match expect(events, "Invited", |e| {
        matches!(e, Event::Call(CallEvent::Invited { .. }))
    })
    .await
    {
        Event::Call(CallEvent::Invited { invite_id, .. }) => invite_id,
        _ => unreachable!(),
    }
}

/// Frames of `kind` that `client` has received from `from` so far.
pub async fn frames_from(client: &Calling, from: &str, kind: MediaKind) -> u64 {
    let stats = client.stats().await.unwrap();
    stats
        .iter()
        .find(|s| s.user == from)
        .map(|s| match kind {
            MediaKind::Audio => s.audio_frames_received,
            _ => s.video_frames_received,
        })
        .unwrap_or(0)
}

/// Waits until `client` has received at least `min` frames of `kind` from
/// `from`, and returns how many it has.
pub async fn wait_frames(client: &Calling, from: &str, kind: MediaKind, min: u64) -> u64 {
    let got = timeout(WAIT, async {
        loop {
            let n = frames_from(client, from, kind).await;
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
            "{} received fewer than {min} {kind:?} frames from {from}",
            client.user()
        ),
    }
}
