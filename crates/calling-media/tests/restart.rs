//! ICE restart over real UDP on loopback: a connection whose path is gone
//! (every datagram dropped by the `fault-injection` switch, as a vanished
//! route or a changed address looks to ICE) is reported interrupted on
//! both sides; the offering side restarts ICE on the same connection, and
//! media flows again once the path is back; kept broken, both sides give up
//! within the restore bound.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use calling_media::{AudioSource, MediaConfig, MediaError, MediaEvent, MediaKind, MediaSignal};
use calling_media::{PeerMedia, PeerState};
use common::*;

fn tone() -> AudioSource {
    AudioSource::Tone {
        frequency_hz: 440.0,
        amplitude: 0.3,
    }
}

fn restore_within(bound: Duration) -> impl Fn(MediaConfig) -> MediaConfig {
    move |c| MediaConfig {
        media_restore_timeout: bound,
        ..c
    }
}

fn is_media(e: &MediaEvent, other: &str, state: PeerMedia) -> bool {
    matches!(e, MediaEvent::PeerMedia { user, state: s } if user.as_str() == other && *s == state)
}

/// The SDP of every offer alice sent, in order.
fn offers_by_alice(m: &Mesh) -> Vec<String> {
    m.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(from, _, s)| match s {
            MediaSignal::Offer { sdp } if from == "alice" => Some(sdp.clone()),
            _ => None,
        })
        .collect()
}

fn origin(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("o="))
        .and_then(|o| o.split_whitespace().nth(1))
        .map(str::to_owned)
}

/// alice and bob with audio both ways.
async fn call(bound: Duration) -> Mesh {
    let mut m = mesh_with(&["alice", "bob"], restore_within(bound)).await;
    for n in ["alice", "bob"] {
        m.session(n).set_audio_source(Some(tone())).unwrap();
    }
    m.connect_all().await;
    m.node("bob").collect("alice", MediaKind::Audio, 3).await;
    m.node("alice").collect("bob", MediaKind::Audio, 3).await;
    m
}

/// Breaks the path (at bob's end, who does not offer: the restart must
/// come from the other side) and waits until both report it.
async fn break_path(m: &mut Mesh) {
    m.session("bob").set_path_blocked(&uid("alice"), true);
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me)
            .event(|e| is_media(e, other, PeerMedia::Interrupted))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_brings_media_back_on_the_same_connection() {
    let mut m = call(Duration::from_secs(60)).await;
    break_path(&mut m).await;
    m.session("bob").set_path_blocked(&uid("alice"), false);

    let mut closed = false;
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me)
            .event(|e| {
                closed |= matches!(
                    e,
                    MediaEvent::PeerState {
                        state: PeerState::Closed,
                        ..
                    }
                );
                is_media(e, other, PeerMedia::Restored)
            })
            .await;
    }
    assert!(
        !closed,
        "the connection was restarted in place, not replaced"
    );

    // Frames counted again, both ways.
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let node = m.node(me);
        while node.frames.try_recv().is_ok() {}
        node.collect(other, MediaKind::Audio, 5).await;
    }
    // Only alice (the lower id) offered: first the connection, then at
    // least one restart of it, under the same SDP session id.
    let offers = offers_by_alice(&m);
    assert!(offers.len() >= 2, "no restart offer: {}", offers.len());
    assert_eq!(m.offers().iter().filter(|(f, _)| f != "alice").count(), 0);
    assert!(origin(&offers[0]).is_some());
    assert!(offers.iter().all(|o| origin(o) == origin(&offers[0])));
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_address_is_followed_by_the_restarts_new_sockets() {
    let mut m = call(Duration::from_secs(60)).await;
    // bob's sockets go dead for good, as when his address changes; nothing
    // is unblocked: only the sockets the restart binds can carry media.
    let changed = std::time::Instant::now();
    m.session("bob").retire_path(&uid("alice"));
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me)
            .event(|e| is_media(e, other, PeerMedia::Interrupted))
            .await;
    }
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me)
            .event(|e| is_media(e, other, PeerMedia::Restored))
            .await;
    }
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let node = m.node(me);
        while node.frames.try_recv().is_ok() {}
        node.collect(other, MediaKind::Audio, 5).await;
    }
    // A figure for the log, not a test of timing.
    eprintln!(
        "media back {:?} after the address change",
        changed.elapsed()
    );
    assert!(offers_by_alice(&m).len() >= 2);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_kept_broken_fails_on_both_sides_within_the_bound() {
    let mut m = call(Duration::from_secs(4)).await;
    break_path(&mut m).await;
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me)
            .event(|e| is_media(e, other, PeerMedia::Failed))
            .await;
    }
    // alice kept trying while the bound lasted.
    assert!(offers_by_alice(&m).len() >= 2);
    // Given up is final: no restore afterwards, even with the path back.
    m.session("bob").set_path_blocked(&uid("alice"), false);
    let stats = m.session("alice").stats().await;
    assert_eq!(stats.len(), 1, "the connection stays until disconnected");
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_offers_from_non_members_and_to_the_offerer_are_refused() {
    let mut m = call(Duration::from_secs(60)).await;
    break_path(&mut m).await;
    m.session("bob").set_path_blocked(&uid("alice"), false);
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me)
            .event(|e| is_media(e, other, PeerMedia::Restored))
            .await;
    }
    let restart = offers_by_alice(&m).pop().unwrap();
    let bob = m.session("bob");

    // The same restart offer, claimed by a user bob never connected to.
    let err = bob
        .handle_signal(
            &uid("mallory"),
            MediaSignal::Offer {
                sdp: restart.clone(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::UnknownPeer(_)), "{err}");
    // An offer to the offering side: offers go one way per pair.
    let err = m
        .session("alice")
        .handle_signal(
            &uid("bob"),
            MediaSignal::Offer {
                sdp: restart.clone(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, MediaError::UnexpectedSignal { what: "offer", .. }),
        "{err}"
    );
    // bob's media with alice is untouched by the refused offers.
    let node = m.node("bob");
    while node.frames.try_recv().is_ok() {}
    node.collect("alice", MediaKind::Audio, 3).await;

    // Once alice is no member of bob's, her restart offer is refused too.
    bob.disconnect(&uid("alice")).await;
    let err = bob
        .handle_signal(&uid("alice"), MediaSignal::Offer { sdp: restart })
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::UnknownPeer(_)), "{err}");
    assert!(bob.peers().is_empty());
    m.close().await;
}
