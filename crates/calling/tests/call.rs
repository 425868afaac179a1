//! End to end, through the real stack: `calling-server` on 127.0.0.1:0, the
//! WebSocket transport, the call rules and WebRTC media on loopback.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use calling::{
    AudioInput, CallEvent, Calling, CallingConfig, EndReason, ErrorCode, Event, Events, MediaKind,
    MediaState, MediaType, NoAnswer,
};
use support::*;

const RING: Duration = Duration::from_secs(30);

fn is_end(e: &Event) -> bool {
    matches!(e, Event::Call(CallEvent::CallEnd { .. }))
}

/// alice calls bob, bob accepts, and both see each other enter.
async fn connect(
    (alice, alice_events): (&Calling, &mut Events),
    (bob, bob_events): (&Calling, &mut Events),
    media: MediaType,
) -> calling::CallId {
    let call_id = alice.call(bob.user().as_str(), media, RING).await.unwrap();
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

/// A server, alice and bob logged in, and alice's call to bob connected.
async fn two_in_a_call(
    media: MediaType,
) -> (Net, (Calling, Events), (Calling, Events), calling::CallId) {
    let net = start().await;
    let (alice, mut alice_events) = login(&net, "alice").await;
    let (bob, mut bob_events) = login(&net, "bob").await;
    let call_id = connect((&alice, &mut alice_events), (&bob, &mut bob_events), media).await;
    (net, (alice, alice_events), (bob, bob_events), call_id)
}

fn end_reason(e: &Event) -> EndReason {
    match e {
        Event::Call(CallEvent::CallEnd { reason, .. }) => *reason,
        other => panic!("not a CallEnd: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_call_flows_both_ways_then_hangs_up() {
    let net = start().await;
    let (alice, mut alice_events) = login(&net, "alice").await;
    let (bob, mut bob_events) = login(&net, "bob").await;
    let (preview, mut local_frames) = calling::ChannelSink::new(64);
    alice.set_local_sink(Some(preview)).await.unwrap();

    let call_id = connect(
        (&alice, &mut alice_events),
        (&bob, &mut bob_events),
        MediaType::Video,
    )
    .await;

    for (client, from) in [(&alice, "bob"), (&bob, "alice")] {
        wait_frames(client, from, MediaKind::Video, 10).await;
        wait_frames(client, from, MediaKind::Audio, 10).await;
    }
    // Alice's local preview shows her own outgoing video.
    let own = tokio::time::timeout(WAIT, async {
        loop {
            match local_frames.recv().await {
                Some(f) if f.frame.kind() == MediaKind::Video => return f,
                Some(_) => {}
                None => panic!("local preview closed"),
            }
        }
    })
    .await
    .expect("a local video frame");
    assert_eq!(own.user, "alice");
    // Voice volumes come from the tone both send.
    expect(&mut alice_events, "a voice volume for bob", |e| {
        matches!(e, Event::UserVoiceVolume { user, volume } if user.as_str() == "bob" && *volume > 0)
    })
    .await;
    let snapshot = alice.current_call().await.unwrap().unwrap();
    assert_eq!(snapshot.call_id, call_id);
    assert_eq!(
        snapshot.connected,
        vec![calling::UserId::new("bob").unwrap()]
    );

    bob.hangup().await.unwrap();
    let end = expect(&mut alice_events, "alice's call end", is_end).await;
    assert_eq!(end_reason(&end), EndReason::Hangup);
    let end = expect(&mut bob_events, "bob's call end", is_end).await;
    assert_eq!(end_reason(&end), EndReason::Hangup);
    assert!(
        alice.stats().await.unwrap().is_empty(),
        "media is closed after the call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_call_sends_no_video() {
    let (_net, (alice, _alice_events), (bob, mut bob_events), _) =
        two_in_a_call(MediaType::Audio).await;
    wait_frames(&alice, "bob", MediaKind::Audio, 20).await;
    wait_frames(&bob, "alice", MediaKind::Audio, 20).await;
    assert_eq!(frames_from(&alice, "bob", MediaKind::Video).await, 0);
    assert_eq!(frames_from(&bob, "alice", MediaKind::Video).await, 0);
    alice.hangup().await.unwrap();
    expect(&mut bob_events, "bob's call end", is_end).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_busy_and_cancel() {
    let net = start().await;
    let (alice, mut alice_events) = login(&net, "alice").await;
    let (bob, mut bob_events) = login(&net, "bob").await;
    let (carol, mut carol_events) = login(&net, "carol").await;

    // Reject.
    alice.call("bob", MediaType::Video, RING).await.unwrap();
    let invite = invited(&mut bob_events).await;
    bob.reject(&invite).await.unwrap();
    expect(
        &mut alice_events,
        "Rejected",
        |e| matches!(e, Event::Call(CallEvent::Rejected { user, .. }) if user.as_str() == "bob"),
    )
    .await;
    let end = expect(&mut alice_events, "call end after reject", is_end).await;
    assert_eq!(end_reason(&end), EndReason::Rejected);
    // A second reject of the same invite is a no-op, not an error.
    bob.reject(&invite).await.unwrap();

    // Busy: bob is in a call with carol; alice's call gets line busy.
    carol.call("bob", MediaType::Audio, RING).await.unwrap();
    let invite = invited(&mut bob_events).await;
    bob.accept(&invite).await.unwrap();
    expect(&mut carol_events, "bob enters", |e| {
        matches!(e, Event::Call(CallEvent::UserEnter { .. }))
    })
    .await;
    alice.call("bob", MediaType::Video, RING).await.unwrap();
    expect(
        &mut alice_events,
        "LineBusy",
        |e| matches!(e, Event::Call(CallEvent::LineBusy { user, .. }) if user.as_str() == "bob"),
    )
    .await;
    let end = expect(&mut alice_events, "call end after busy", is_end).await;
    assert_eq!(end_reason(&end), EndReason::LineBusy);
    carol.hangup().await.unwrap();
    expect(&mut bob_events, "bob's call with carol ends", is_end).await;

    // Cancel: alice hangs up while bob rings.
    alice.call("bob", MediaType::Video, RING).await.unwrap();
    invited(&mut bob_events).await;
    alice.hangup().await.unwrap();
    expect(&mut bob_events, "CallingCancel", |e| {
        matches!(e, Event::Call(CallEvent::CallingCancel { .. }))
    })
    .await;
    let end = expect(&mut bob_events, "bob's end after cancel", is_end).await;
    assert_eq!(end_reason(&end), EndReason::Cancelled);
    let end = expect(&mut alice_events, "alice's end after cancel", is_end).await;
    assert_eq!(end_reason(&end), EndReason::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_callee_is_reported_at_once() {
    let net = start().await;
    let (alice, mut alice_events) = login(&net, "alice").await;
    alice.call("nobody", MediaType::Video, RING).await.unwrap();
    expect(&mut alice_events, "NoResponse offline", |e| {
        matches!(
            e,
            Event::Call(CallEvent::NoResponse {
                reason: NoAnswer::Offline,
                ..
            })
        )
    })
    .await;
    let end = expect(&mut alice_events, "alice's end", is_end).await;
    assert_eq!(end_reason(&end), EndReason::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_and_camera_off_reach_the_peer() {
    let (_net, (alice, mut alice_events), (bob, _bob_events), _) =
        two_in_a_call(MediaType::Video).await;
    bob.set_mic_mute(true).await.unwrap();
    expect(&mut alice_events, "bob's audio off", |e| {
        matches!(e, Event::Call(CallEvent::UserAudioAvailable { user, available: false, .. }) if user.as_str() == "bob")
    })
    .await;
    bob.close_camera().await.unwrap();
    expect(&mut alice_events, "bob's video off", |e| {
        matches!(e, Event::Call(CallEvent::UserVideoAvailable { user, available: false, .. }) if user.as_str() == "bob")
    })
    .await;
    bob.set_mic_mute(false).await.unwrap();
    expect(&mut alice_events, "bob's audio on", |e| {
        matches!(e, Event::Call(CallEvent::UserAudioAvailable { user, available: true, .. }) if user.as_str() == "bob")
    })
    .await;
    alice.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicked_out_during_a_call() {
    let (net, (_alice, mut alice_events), (bob, mut bob_events), _) =
        two_in_a_call(MediaType::Audio).await;

    // Bob logs in again elsewhere: the first bob is kicked out.
    let (_bob2, _bob2_events) = login(&net, "bob").await;
    expect(&mut bob_events, "KickedOut", |e| {
        matches!(e, Event::KickedOut)
    })
    .await;
    let end = expect(&mut bob_events, "bob's end", is_end).await;
    assert_eq!(end_reason(&end), EndReason::KickedOut);
    expect(
        &mut alice_events,
        "bob leaves",
        |e| matches!(e, Event::Call(CallEvent::UserLeave { user, .. }) if user.as_str() == "bob"),
    )
    .await;
    let end = expect(&mut alice_events, "alice's end", is_end).await;
    assert_eq!(end_reason(&end), EndReason::Hangup);
    // The kicked client refuses further commands with a typed error.
    assert!(matches!(
        bob.call("alice", MediaType::Audio, RING).await,
        Err(calling::CallingError::NotLoggedIn)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_twice_and_a_new_call_right_after() {
    let net = start().await;
    let (alice, mut alice_events) = login(&net, "alice").await;
    let (bob, mut bob_events) = login(&net, "bob").await;
    for round in 0..2 {
        connect(
            (&alice, &mut alice_events),
            (&bob, &mut bob_events),
            MediaType::Audio,
        )
        .await;
        wait_frames(&alice, "bob", MediaKind::Audio, 5).await;
        alice.hangup().await.unwrap();
        alice.hangup().await.unwrap();
        expect(&mut bob_events, "bob's end", is_end).await;
        expect(&mut alice_events, "alice's end", is_end).await;
        assert!(
            alice.current_call().await.unwrap().is_none(),
            "round {round}"
        );
    }
    // Accepting the old invite again is a typed, stale-invite error.
    let unknown = calling::InviteId::new("not-an-invite").unwrap();
    assert!(matches!(
        bob.accept(&unknown).await,
        Err(calling::CallingError::Answer(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_a_forged_or_mismatched_usersig_is_a_typed_error() {
    let net = start().await;
    let refused = |user: &'static str, sig: String| {
        let url = net.url.clone();
        async move {
            calling::Calling::login(calling::Login {
                server: url.to_string(),
                sdk_app_id: APP,
                user_id: user.to_string(),
                user_sig: sig,
                config: calling::CallingConfig::loopback(),
            })
            .await
            .unwrap_err()
        }
    };
    let forged = calling_usersig::generate(
        APP,
        "not-the-key",
        "alice",
        3600,
        calling_usersig::now_unix(),
    );
    let err = refused("alice", forged).await;
    assert!(
        matches!(
            err,
            calling::CallingError::Transport(calling::TransportError::LoginRefused { .. })
        ),
        "{err:?}"
    );
    // A sig made for bob does not log alice in.
    let err = refused("alice", sig("bob")).await;
    assert!(
        matches!(err, calling::CallingError::Transport(_)),
        "{err:?}"
    );
    // An invalid user id never reaches the server.
    let err = refused("bad id", sig("alice")).await;
    assert!(
        matches!(err, calling::CallingError::InvalidId(_)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_see_the_media_connect() {
    let setups_before = sdk_metric("calling_sdk_call_setup_seconds_count");
    let logins_before = sdk_metric("calling_sdk_login_duration_seconds_count");
    let (_net, (alice, mut alice_events), (_bob, mut bob_events), call_id) =
        two_in_a_call(MediaType::Audio).await;
    for (events, peer) in [(&mut alice_events, "bob"), (&mut bob_events, "alice")] {
        expect(events, "the media with the peer connected", |e| {
            matches!(e, Event::Media { user, state: MediaState::Connected, call_id: c }
                if user.as_str() == peer && *c == call_id)
        })
        .await;
    }
    // Both logins and both sides' media setup were timed (other tests of
    // this binary may add theirs).
    assert!(sdk_metric("calling_sdk_login_duration_seconds_count") >= logins_before + 2);
    assert!(sdk_metric("calling_sdk_call_setup_seconds_count") >= setups_before + 2);
    alice.hangup().await.unwrap();
    expect(&mut bob_events, "bob's call end", is_end).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microphone_that_cannot_start_is_an_error_here_and_no_audio_there() {
    let net = start().await;
    let missing = std::env::temp_dir().join("calling-test-no-such-file.ogg");
    let config = CallingConfig {
        audio: AudioInput::OggFile {
            path: missing,
            looped: false,
        },
        ..CallingConfig::loopback()
    };
    let (alice, mut alice_events) = login_with(&net, "alice", config).await;
    let (bob, mut bob_events) = login(&net, "bob").await;
    alice.call("bob", MediaType::Video, RING).await.unwrap();
    let error = expect(&mut alice_events, "alice's audio source error", |e| {
        matches!(e, Event::Error { .. })
    })
    .await;
    assert!(
        matches!(
            error,
            Event::Error {
                code: ErrorCode::AudioSource,
                ..
            }
        ),
        "{error:?}"
    );
    let invite = invited(&mut bob_events).await;
    bob.accept(&invite).await.unwrap();
    // Bob learns the truth: alice sends no audio (her video is fine).
    expect(&mut bob_events, "alice's audio unavailable", |e| {
        matches!(e, Event::Call(CallEvent::UserAudioAvailable { user, available: false, .. })
            if user.as_str() == "alice")
    })
    .await;
    wait_frames(&bob, "alice", MediaKind::Video, 5).await;
    assert_eq!(frames_from(&bob, "alice", MediaKind::Audio).await, 0);
    alice.hangup().await.unwrap();
    expect(&mut bob_events, "bob's call end", is_end).await;
}

/// A sample of [`calling::metrics::render`], by its name.
fn sdk_metric(name: &str) -> u64 {
    let text = calling::metrics::render();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}
