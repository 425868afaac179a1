//! What the app is told when TURN does not work: coturn's `turnserver` on
//! 127.0.0.1 checks another REST API secret than `calling-server` signs
//! credentials with, so every allocation is refused (401) and no relay
//! candidate is ever gathered. Relay-only media gets `TurnUnavailable`;
//! otherwise `TurnFallbackUnavailable` warns and the call goes on over
//! host candidates. And an ICE restart gathers with the ICE servers given
//! last (`MediaSession::set_ice_servers`): refused credentials replaced by
//! good ones bring relay-only media up at the next restart.
//!
//! Needs `turnserver` (Debian package coturn; scripts/setup.sh installs it).
//! Without it the tests print a loud SKIPPED banner, and fail under CI.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::{Duration, Instant};

use calling::{CallingConfig, ErrorCode, Event, MediaConfig, MediaKind, MediaType, UserId};
use calling_media::{AudioSource, IceServer, MediaEvent, MediaSession, PeerMedia};
use support::coturn::*;
use support::*;

const SECRET: &str = "turn-test-secret";

/// alice calls bob (audio) with `config` on both sides, bob accepts, and
/// both wait for the first TURN error event.
async fn call_and_expect_error(net: &Net, config: CallingConfig) -> Vec<(calling::Calling, Event)> {
    let (alice, mut a) = login_with(net, "alice", config.clone()).await;
    let (bob, mut b) = login_with(net, "bob", config).await;
    alice
        .call("bob", MediaType::Audio, Duration::from_secs(30))
        .await
        .unwrap();
    let invite = invited(&mut b).await;
    bob.accept(&invite).await.unwrap();
    let mut out = Vec::new();
    for (client, events) in [(alice, &mut a), (bob, &mut b)] {
        let e = expect(events, "a TURN error", |e| {
            matches!(
                e,
                Event::Error {
                    code: ErrorCode::TurnUnavailable | ErrorCode::TurnFallbackUnavailable,
                    ..
                }
            )
        })
        .await;
        out.push((client, e));
    }
    out
}

fn assert_explains(e: &Event, expected: ErrorCode) {
    let Event::Error { code, message } = e else {
        panic!("not an error: {e:?}");
    };
    assert_eq!(*code, expected, "{message}");
    for needle in ["TURN server", "--turn-secret", "static-auth-secret"] {
        assert!(
            message.contains(needle),
            "{needle:?} missing in {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_allocation_with_relay_only_is_turn_unavailable() {
    if prerequisites("a_refused_allocation_with_relay_only_is_turn_unavailable").is_err() {
        return;
    }
    let coturn = Coturn::start(SECRET);
    let net = server_with_turn(coturn.url(), "not-the-turn-secret").await;
    let mut config = CallingConfig::loopback();
    config.media.relay_only = true;
    for (client, e) in call_and_expect_error(&net, config).await {
        assert_explains(&e, ErrorCode::TurnUnavailable);
        client.hangup().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_allocation_otherwise_is_a_warning_and_media_flows() {
    if prerequisites("a_refused_allocation_otherwise_is_a_warning_and_media_flows").is_err() {
        return;
    }
    let coturn = Coturn::start(SECRET);
    let net = server_with_turn(coturn.url(), "not-the-turn-secret").await;
    let clients = call_and_expect_error(&net, CallingConfig::loopback()).await;
    for (_, e) in &clients {
        assert_explains(e, ErrorCode::TurnFallbackUnavailable);
    }
    let (alice, bob) = (&clients[0].0, &clients[1].0);
    wait_frames(alice, "bob", MediaKind::Audio, 5).await;
    wait_frames(bob, "alice", MediaKind::Audio, 5).await;
    alice.hangup().await.unwrap();
}

/// A TURN server entry for `user` with REST credentials signed by `secret`.
fn turn_for(url: &str, user: &str, secret: &str) -> IceServer {
    let username = format!("{}:{user}", calling_usersig::now_unix() + 3600);
    IceServer {
        urls: vec![url.to_owned()],
        credential: calling_server::ice::turn_password(secret, &username),
        username,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_gathers_with_the_ice_servers_set_last() {
    if prerequisites("an_ice_restart_gathers_with_the_ice_servers_set_last").is_err() {
        return;
    }
    let coturn = Coturn::start(SECRET);
    let url = coturn.url();
    let mut sessions = Vec::new();
    for name in ["alice", "bob"] {
        let config = MediaConfig {
            relay_only: true,
            // Signed with the wrong secret: coturn refuses them.
            ice_servers: vec![turn_for(&url, name, "stale-secret")],
            ..MediaConfig::loopback()
        };
        let (session, events) = MediaSession::new(UserId::new(name).unwrap(), config)
            .await
            .unwrap();
        session
            .set_audio_source(Some(AudioSource::Tone {
                frequency_hz: 440.0,
                amplitude: 0.3,
            }))
            .unwrap();
        sessions.push((session, events));
    }
    // Route signals between the two; keep the rest for the test.
    let (alice, alice_events) = sessions.remove(0);
    let (bob, bob_events) = sessions.remove(0);
    let (a_tx, mut a_rx) = tokio::sync::mpsc::unbounded_channel();
    let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel();
    for (from, to, mut events, tx) in [
        (alice.clone(), bob.clone(), alice_events, a_tx),
        (bob.clone(), alice.clone(), bob_events, b_tx),
    ] {
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    MediaEvent::Signal { signal, .. } => {
                        let _ = to.handle_signal(from.local_user(), signal).await;
                    }
                    other => {
                        let _ = tx.send(other);
                    }
                }
            }
        });
    }
    bob.connect(alice.local_user()).await.unwrap();
    alice.connect(bob.local_user()).await.unwrap();

    // Fresh credentials arrive (as a re-login brings them): the restarts
    // that follow the failed first attempt use them.
    alice.set_ice_servers(vec![turn_for(&url, "alice", SECRET)]);
    bob.set_ice_servers(vec![turn_for(&url, "bob", SECRET)]);
    for (events, other) in [(&mut a_rx, "bob"), (&mut b_rx, "alice")] {
        let restored = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(e) = events.recv().await {
                if matches!(&e, MediaEvent::PeerMedia { user, state: PeerMedia::Restored } if user.as_str() == other)
                {
                    return true;
                }
                if matches!(&e, MediaEvent::PeerMedia { state: PeerMedia::Failed, .. }) {
                    return false;
                }
            }
            false
        })
        .await;
        assert_eq!(
            restored,
            Ok(true),
            "relay-only media with {other} never came up:\n{}",
            coturn.log()
        );
    }
    let stats = alice.stats().await;
    let deadline = Instant::now() + WAIT;
    while alice.stats().await[0].audio_frames_received < 5 {
        assert!(
            Instant::now() < deadline,
            "no audio through the relay: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        coturn.log().contains("ALLOCATE processed, success"),
        "{}",
        coturn.log()
    );
    alice.close().await;
    bob.close().await;
}
