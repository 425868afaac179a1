//! A session negotiates only with the members it was told to connect to,
//! and a member's DTLS certificate cannot change within its participation.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use calling_media::{MediaConfig, MediaError, MediaEvent, MediaSession, MediaSignal, UserId};
use tokio::sync::mpsc::UnboundedReceiver;

fn uid(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

async fn session(name: &str) -> (MediaSession, UnboundedReceiver<MediaEvent>) {
    MediaSession::new(uid(name), MediaConfig::loopback())
        .await
        .unwrap()
}

/// The next offer or answer `events` carries (candidates are skipped).
async fn description(events: &mut UnboundedReceiver<MediaEvent>) -> MediaSignal {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Some(MediaEvent::Signal { signal, .. })
                    if matches!(
                        signal,
                        MediaSignal::Offer { .. } | MediaSignal::Answer { .. }
                    ) =>
                {
                    return signal;
                }
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
    })
    .await
    .unwrap()
}

/// `alice`'s offer to `to`, from a fresh session of hers.
async fn offer_to(to: &str) -> (MediaSession, MediaSignal) {
    let (alice, mut events) = session("alice").await;
    alice.connect(&uid(to)).await.unwrap();
    let offer = description(&mut events).await;
    assert!(matches!(offer, MediaSignal::Offer { .. }));
    (alice, offer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_from_a_user_never_connected_is_refused_and_builds_nothing() {
    let (alice, offer) = offer_to("mallory-victim").await;
    let (victim, mut victim_events) = session("mallory-victim").await;

    // The victim never connected alice: her perfectly good offer is refused.
    let err = victim
        .handle_signal(&uid("alice"), offer)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MediaError::UnknownPeer(ref u) if *u == uid("alice")),
        "{err}"
    );
    let candidate = MediaSignal::Candidate {
        candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    let err = victim
        .handle_signal(&uid("alice"), candidate)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::UnknownPeer(_)), "{err}");
    assert!(victim.peers().is_empty());
    assert!(victim.members().is_empty());
    assert_eq!(victim.live_peer_connections(), 0);
    assert!(victim.stats().await.is_empty());
    // Nothing was answered.
    assert!(victim_events.try_recv().is_err());

    // A member that left is refused again.
    victim.connect(&uid("alice")).await.unwrap();
    assert_eq!(victim.members(), vec![uid("alice")]);
    victim.disconnect(&uid("alice")).await;
    let (_alice2, offer) = offer_to("mallory-victim").await;
    let err = victim
        .handle_signal(&uid("alice"), offer)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::UnknownPeer(_)), "{err}");
    assert!(victim.peers().is_empty());
    alice.close().await;
    victim.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_fingerprint_is_refused_until_the_member_reenters() {
    let (bob, mut bob_events) = session("bob").await;
    bob.connect(&uid("alice")).await.unwrap();

    let (alice, mut alice_events) = session("alice").await;
    alice.connect(&uid("bob")).await.unwrap();
    let first = description(&mut alice_events).await;
    bob.handle_signal(&uid("alice"), first).await.unwrap();
    assert!(matches!(
        description(&mut bob_events).await,
        MediaSignal::Answer { .. }
    ));

    // The same session of alice redials (disconnect + connect): its
    // certificate is the session's, so the new offer is accepted.
    alice.disconnect(&uid("bob")).await;
    alice.connect(&uid("bob")).await.unwrap();
    let again = description(&mut alice_events).await;
    bob.handle_signal(&uid("alice"), again).await.unwrap();
    assert!(matches!(
        description(&mut bob_events).await,
        MediaSignal::Answer { .. }
    ));

    // Another session speaking as alice (another certificate) within the
    // same participation: refused, and bob's connection is left alone.
    let (other, offer) = offer_to("bob").await;
    let err = bob.handle_signal(&uid("alice"), offer).await.unwrap_err();
    assert!(
        matches!(err, MediaError::FingerprintChanged { ref from, .. } if *from == uid("alice")),
        "{err}"
    );
    assert_eq!(bob.peers(), vec![uid("alice")]);

    // alice re-entered the call: bob's driver disconnects and connects her
    // again, and the new certificate binds.
    bob.disconnect(&uid("alice")).await;
    bob.connect(&uid("alice")).await.unwrap();
    let (_third, offer) = offer_to("bob").await;
    bob.handle_signal(&uid("alice"), offer).await.unwrap();
    alice.close().await;
    other.close().await;
    bob.close().await;
}
