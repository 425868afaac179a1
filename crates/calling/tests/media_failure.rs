//! Media that breaks mid-call, end to end through `calling-server` and
//! real UDP on loopback: the path is broken with the test-only
//! `fault-injection` switch (every datagram of one peer connection
//! dropped, as a vanished route looks to ICE). Restored in time, the call
//! goes on; kept broken, a 1v1 call ends with `EndReason::MediaFailed`,
//! sent as a normal leave, while a group call goes on as long as another
//! party's media is fine.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use calling::{
    CallEvent, Calling, CallingConfig, EndReason, Event, Events, MediaConfig, MediaKind,
    MediaState, MediaType,
};
use support::*;

const RING: Duration = Duration::from_secs(30);

fn restoring_within(bound: Duration) -> CallingConfig {
    CallingConfig {
        media: MediaConfig {
            media_restore_timeout: bound,
            ..MediaConfig::loopback()
        },
        ..CallingConfig::loopback()
    }
}

fn is_media(e: &Event, from: &str, state: MediaState) -> bool {
    matches!(e, Event::Media { user, state: s, .. } if user.as_str() == from && *s == state)
}

fn end_reason(e: &Event) -> Option<EndReason> {
    match e {
        Event::Call(CallEvent::CallEnd { reason, .. }) => Some(*reason),
        _ => None,
    }
}

/// `caller` calls `callees`, who all accept; waits until everyone has
/// audio from everyone.
async fn call(parties: &mut [(&Calling, &mut Events)]) {
    let callees: Vec<String> = parties[1..]
        .iter()
        .map(|(c, _)| c.user().to_string())
        .collect();
    let callees: Vec<&str> = callees.iter().map(String::as_str).collect();
    let caller = parties[0].0;
    if callees.len() == 1 {
        caller
            .call(callees[0], MediaType::Audio, RING)
            .await
            .unwrap();
    } else {
        caller
            .group_call(&callees, MediaType::Audio, RING)
            .await
            .unwrap();
    }
    for (client, events) in parties[1..].iter_mut() {
        let invite = invited(events).await;
        client.accept(&invite).await.unwrap();
    }
    for (me, _) in parties.iter() {
        for (other, _) in parties.iter() {
            if me.user() != other.user() {
                wait_frames(me, other.user().as_str(), MediaKind::Audio, 5).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_path_brings_media_back_and_the_call_goes_on() {
    let net = start().await;
    let (alice, mut a) = login_with(&net, "alice", restoring_within(RING)).await;
    let (bob, mut b) = login_with(&net, "bob", restoring_within(RING)).await;
    call(&mut [(&alice, &mut a), (&bob, &mut b)]).await;

    // bob, who does not offer, loses the path: alice's restarts bring it back.
    bob.set_media_path_blocked("alice", true).await.unwrap();
    for (events, from) in [(&mut a, "bob"), (&mut b, "alice")] {
        expect(events, "media disconnected", |e| {
            is_media(e, from, MediaState::Disconnected)
        })
        .await;
    }
    bob.set_media_path_blocked("alice", false).await.unwrap();
    for (events, from) in [(&mut a, "bob"), (&mut b, "alice")] {
        let e = expect(events, "media restored or the call ended", |e| {
            is_media(e, from, MediaState::Restored) || end_reason(e).is_some()
        })
        .await;
        assert!(is_media(&e, from, MediaState::Restored), "{e:?}");
    }
    for (client, from) in [(&alice, "bob"), (&bob, "alice")] {
        let before = frames_from(client, from, MediaKind::Audio).await;
        wait_frames(client, from, MediaKind::Audio, before + 5).await;
        assert!(client.current_call().await.unwrap().is_some());
    }
    alice.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_kept_broken_ends_a_one_to_one_call_with_media_failed() {
    let net = start().await;
    // alice gives up first; bob would wait longer, so he hears her leave.
    let (alice, mut a) = login_with(&net, "alice", restoring_within(Duration::from_secs(4))).await;
    let (bob, mut b) = login_with(&net, "bob", restoring_within(Duration::from_secs(120))).await;
    call(&mut [(&alice, &mut a), (&bob, &mut b)]).await;

    alice.set_media_path_blocked("bob", true).await.unwrap();
    expect(&mut a, "media disconnected", |e| {
        is_media(e, "bob", MediaState::Disconnected)
    })
    .await;
    expect(&mut a, "media failed", |e| {
        is_media(e, "bob", MediaState::Failed)
    })
    .await;
    let end = expect(&mut a, "the call's end", |e| end_reason(e).is_some()).await;
    assert_eq!(end_reason(&end), Some(EndReason::MediaFailed));

    // bob is told as by a hangup: alice left, and so his call is over.
    // (Whether bob reports his media disconnected first is a race: alice's
    // first restart offer can reach him before his own ICE notices, and a
    // restarted connection checks anew rather than going disconnected.)
    expect(
        &mut b,
        "alice leaves",
        |e| matches!(e, Event::Call(CallEvent::UserLeave { user, .. }) if user.as_str() == "alice"),
    )
    .await;
    let end = expect(&mut b, "the call's end", |e| end_reason(e).is_some()).await;
    assert_eq!(end_reason(&end), Some(EndReason::Hangup));
    assert!(alice.current_call().await.unwrap().is_none());
    assert!(bob.current_call().await.unwrap().is_none());
    // Both are free for the next call.
    call(&mut [(&alice, &mut a), (&bob, &mut b)]).await;
    alice.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_call_goes_on_while_another_partys_media_is_fine() {
    let net = start().await;
    let bound = restoring_within(Duration::from_secs(4));
    let (alice, mut a) = login_with(&net, "alice", bound.clone()).await;
    let (bob, mut b) = login_with(&net, "bob", bound.clone()).await;
    let (carol, mut c) = login_with(&net, "carol", bound).await;
    call(&mut [(&alice, &mut a), (&bob, &mut b), (&carol, &mut c)]).await;

    // Only the path between alice and bob breaks.
    alice.set_media_path_blocked("bob", true).await.unwrap();
    for (events, from) in [(&mut a, "bob"), (&mut b, "alice")] {
        let e = expect(events, "media failed", |e| {
            is_media(e, from, MediaState::Failed) || end_reason(e).is_some()
        })
        .await;
        assert!(is_media(&e, from, MediaState::Failed), "{e:?}");
    }
    // Everyone is still in the call, and carol's media flows both ways.
    for client in [&alice, &bob, &carol] {
        assert!(client.current_call().await.unwrap().is_some());
    }
    for (client, from) in [(&alice, "carol"), (&carol, "alice"), (&bob, "carol")] {
        let before = frames_from(client, from, MediaKind::Audio).await;
        wait_frames(client, from, MediaKind::Audio, before + 5).await;
    }
    for client in [&alice, &bob, &carol] {
        client.hangup().await.unwrap();
    }
}
