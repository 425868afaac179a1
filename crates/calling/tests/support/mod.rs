//! Shared test support: an in-process signaling server on 127.0.0.1:0,
//! logged-in clients, and bounded waits for events and media.

#![allow(dead_code, clippy::unwrap_used)]

pub mod coturn;

use std::time::Duration;

use calling::{CallEvent, Calling, CallingConfig, Event, Events, MediaKind};
use calling_server::{Config, RunningServer, Server};
use tokio::time::timeout;

pub const APP: u64 = 1_400_000_000;
pub const KEY: &str = "test-secret-key";

/// Longest any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

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
    let found = timeout(WAIT, async {
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
        Err(_) => panic!("timed out waiting for {what}"),
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

/// Waits until `client` has received at least `min` frames of `kind` from `from`.
pub async fn wait_frames(client: &Calling, from: &str, kind: MediaKind, min: u64) {
    let ok = timeout(WAIT, async {
        loop {
            if frames_from(client, from, kind).await >= min {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "{} received fewer than {min} {kind:?} frames from {from}",
        client.user()
    );
}
