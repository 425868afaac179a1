//! Media through a real TURN relay: coturn's `turnserver` on 127.0.0.1 with
//! the TURN REST API secret, `calling-server` handing out credentials in
//! `login_ok`, and two clients whose ICE may use relay candidates only, so
//! that media can flow through coturn or not at all.
//!
//! Needs `turnserver` (Debian package coturn; scripts/setup.sh installs it).
//! Without it the tests print a loud SKIPPED banner, and fail under CI.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use calling::{
    CallEvent, Calling, CallingConfig, CandidateKind, Event, Events, MediaKind, MediaState,
    MediaType,
};
use calling_server::{Config, Server, TurnConfig};
use calling_signal::{Transport, UserId, WsConfig, WsTransport};
use support::coturn::*;
use support::*;

const SECRET: &str = "turn-test-secret";

fn relay_only() -> CallingConfig {
    let mut config = CallingConfig::loopback();
    config.media.relay_only = true;
    config
}

/// alice calls bob by video and bob accepts.
async fn place_call(
    (alice, alice_events): (&Calling, &mut Events),
    (bob, bob_events): (&Calling, &mut Events),
) -> calling::CallId {
    let ring = Duration::from_secs(30);
    let call_id = alice
        .call(bob.user().as_str(), MediaType::Video, ring)
        .await
        .unwrap();
    let invite = invited(bob_events).await;
    bob.accept(&invite).await.unwrap();
    for (events, who) in [(alice_events, bob.user()), (bob_events, alice.user())] {
        expect(
            events,
            "the peer enters",
            |e| matches!(e, Event::Call(CallEvent::UserEnter { user, call_id: c }) if user == who && *c == call_id),
        )
        .await;
    }
    call_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_ok_hands_out_turn_rest_api_credentials() {
    // No relay needed: only what the server announces.
    let net = server_with_turn("turn:127.0.0.1:3478?transport=udp".into(), SECRET).await;
    let config = WsConfig::new(&net.url, APP, UserId::new("carol").unwrap(), sig("carol"));
    let carol = WsTransport::connect(config).await.unwrap();
    let now = calling_usersig::now_unix();
    let servers = carol.ice_servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    let turn = &servers[0];
    assert_eq!(turn.urls, ["turn:127.0.0.1:3478?transport=udp"]);
    let username = turn.username.clone().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "carol");
    let expiry: u64 = expiry.parse().unwrap();
    assert_eq!(turn.expires_at, Some(expiry));
    let ttl = calling_server::ice::DEFAULT_TURN_TTL.as_secs();
    assert!(
        expiry > now && expiry <= now + ttl + 5,
        "expiry {expiry}, now {now}"
    );
    assert_eq!(
        turn.credential.as_deref(),
        Some(calling_server::ice::turn_password(SECRET, &username).as_str())
    );
    carol.close().await;

    // A server without TURN announces nothing.
    let plain = start().await;
    let config = WsConfig::new(&plain.url, APP, UserId::new("dave").unwrap(), sig("dave"));
    let dave = WsTransport::connect(config).await.unwrap();
    assert!(dave.ice_servers().is_empty());
    dave.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_re_login_replaces_the_turn_credentials() {
    // The server drops connections silent for 300 ms and carol pings only
    // every 10 s, so her transport keeps losing the connection and logging
    // in again: each login_ok brings credentials with a later expiry.
    let mut config = Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.heartbeat_timeout = Duration::from_millis(300);
    config.ice.turn = Some(TurnConfig::new(
        vec!["turn:127.0.0.1:3478?transport=udp".into()],
        SECRET,
    ));
    let server = Server::bind(config).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr());
    let mut config = WsConfig::new(url, APP, UserId::new("carol").unwrap(), sig("carol"));
    config.heartbeat_interval = Some(Duration::from_secs(10));
    let carol = WsTransport::connect(config).await.unwrap();
    let mut events = carol.take_events().unwrap();
    let expiry = |t: &WsTransport| t.ice_servers().first().and_then(|s| s.expires_at);
    let first = expiry(&carol).unwrap();
    let renewed = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(calling_signal::TransportEvent::Reconnected) => {
                    if expiry(&carol).unwrap() > first {
                        return;
                    }
                }
                Some(_) => {}
                None => panic!("transport ended"),
            }
        }
    })
    .await;
    assert!(renewed.is_ok(), "no re-login brought fresh credentials");
    let turn = carol.ice_servers().remove(0);
    let username = turn.username.unwrap();
    assert_eq!(
        turn.credential.unwrap(),
        calling_server::ice::turn_password(SECRET, &username)
    );
    carol.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_video_call_flows_both_ways_through_coturn() {
    if prerequisites("relay_only_video_call_flows_both_ways_through_coturn").is_err() {
        return;
    }
    let coturn = Coturn::start(SECRET);
    let net = server_with_turn(coturn.url(), SECRET).await;
    let (alice, mut alice_events) = login_with(&net, "alice", relay_only()).await;
    let (bob, mut bob_events) = login_with(&net, "bob", relay_only()).await;
    place_call((&alice, &mut alice_events), (&bob, &mut bob_events)).await;

    for (client, from) in [(&alice, "bob"), (&bob, "alice")] {
        wait_frames(client, from, MediaKind::Video, 10).await;
        wait_frames(client, from, MediaKind::Audio, 10).await;
        // The stats name a relay pair, with our end on coturn.
        let stats = client.stats().await.unwrap();
        let pair = stats
            .iter()
            .find(|s| s.user.as_str() == from)
            .and_then(|s| s.selected_pair)
            .expect("a selected pair once media flows");
        assert_eq!(pair.local, CandidateKind::Relay, "{pair:?}");
        assert_eq!(pair.path(), CandidateKind::Relay, "{pair:?}");
    }
    // coturn saw both users allocate with the server's credentials...
    for user in [":alice", ":bob"] {
        assert!(
            coturn
                .wait_for_line(&["ALLOCATE processed, success", user])
                .await,
            "coturn logged no successful allocation for {user}:\n{}",
            coturn.log()
        );
    }
    // ...and, once the call ends and the allocations are released, reports
    // the media it relayed between them.
    alice.hangup().await.unwrap();
    for user in [":alice>", ":bob>"] {
        assert!(
            coturn.wait_for_line(&["peer usage", user]).await,
            "coturn reported no relayed traffic for {user}:\n{}",
            coturn.log()
        );
        let relayed = coturn
            .log()
            .lines()
            .filter(|l| l.contains("peer usage") && l.contains(user))
            .map(|l| field(l, "rb=") + field(l, "sb="))
            .sum::<u64>();
        // ICE checks over relay pairs alone are a few KB; media is tens.
        assert!(relayed > 10_000, "{user} relayed only {relayed} bytes");
    }
}

/// The number after `key` in a coturn usage line (`rb=17664,`).
fn field(line: &str, key: &str) -> u64 {
    line.split_once(key)
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_turn_secret_leaves_relay_only_media_unconnected() {
    if prerequisites("wrong_turn_secret_leaves_relay_only_media_unconnected").is_err() {
        return;
    }
    let coturn = Coturn::start(SECRET);
    // The signaling server signs with another secret than coturn checks.
    let net = server_with_turn(coturn.url(), "not-the-turn-secret").await;
    let (alice, mut alice_events) = login_with(&net, "alice", relay_only()).await;
    let (bob, mut bob_events) = login_with(&net, "bob", relay_only()).await;
    place_call((&alice, &mut alice_events), (&bob, &mut bob_events)).await;

    // coturn refuses the allocations: the message integrity does not match.
    for user in [":alice", ":bob"] {
        assert!(
            coturn.wait_for_line(&["401", user]).await,
            "coturn did not refuse {user}:\n{}",
            coturn.log()
        );
    }
    // And the app is told the media failed, not left waiting: ICE gives up
    // after its disconnected (2 s) and failed (5 s) timeouts, restarts
    // fail too, and after the restore bound (15 s) one side reports the
    // media failed and leaves; the other hears either its own verdict or
    // that leave first. Hence a longer bound than the other waits.
    let failed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match alice_events.recv().await {
                Some(
                    e @ (Event::Media {
                        state: MediaState::Failed | MediaState::Connected,
                        ..
                    }
                    | Event::Call(CallEvent::CallEnd { .. })),
                ) => return e,
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("no media failure reported within 60 s");
    assert!(
        matches!(
            failed,
            Event::Media {
                state: MediaState::Failed,
                ..
            } | Event::Call(CallEvent::CallEnd { .. })
        ),
        "{failed:?}"
    );
    assert_eq!(frames_from(&alice, "bob", MediaKind::Video).await, 0);
    alice.hangup().await.unwrap();
}
