//! Ringing and timeouts on tokio's paused clock: the SDK reads time from its
//! [`calling::Clock`] (tokio's by default), so these run in virtual time
//! over the in-process hub instead of waiting for real seconds (the caller
//! waits the timeout plus its grace).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use calling::{
    CallEvent, Calling, CallingConfig, EndReason, Event, Events, MediaType, MemoryHub, NoAnswer,
    UserId,
};

/// The first event matching `pred`; fails after a virtual minute.
async fn expect(events: &mut Events, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    support::expect_within(events, what, Duration::from_secs(60), pred).await
}

fn audio_only() -> CallingConfig {
    CallingConfig {
        video: None,
        ..CallingConfig::loopback()
    }
}

async fn pair(hub: &MemoryHub) -> ((Calling, Events), (Calling, Events)) {
    let alice =
        Calling::with_transport(hub.register(UserId::new("alice").unwrap()), audio_only()).unwrap();
    let bob =
        Calling::with_transport(hub.register(UserId::new("bob").unwrap()), audio_only()).unwrap();
    (alice, bob)
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_times_out_on_both_sides_in_virtual_time() {
    let hub = MemoryHub::new();
    let ((alice, mut alice_events), (_bob, mut bob_events)) = pair(&hub).await;
    let started = tokio::time::Instant::now();
    alice
        .call("bob", MediaType::Audio, Duration::from_secs(30))
        .await
        .unwrap();
    expect(&mut bob_events, "bob's CallingTimeout", |e| {
        matches!(e, Event::Call(CallEvent::CallingTimeout { .. }))
    })
    .await;
    let end = expect(&mut bob_events, "bob's CallEnd", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    assert!(matches!(
        end,
        Event::Call(CallEvent::CallEnd {
            reason: EndReason::TimedOut,
            ..
        })
    ));
    let no_response = expect(&mut alice_events, "alice's NoResponse", |e| {
        matches!(e, Event::Call(CallEvent::NoResponse { .. }))
    })
    .await;
    assert!(matches!(
        no_response,
        Event::Call(CallEvent::NoResponse { reason: NoAnswer::Timeout, ref users, .. })
            if users.len() == 1 && users[0].as_str() == "bob"
    ));
    let end = expect(&mut alice_events, "alice's CallEnd", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    assert!(matches!(
        end,
        Event::Call(CallEvent::CallEnd {
            reason: EndReason::NoResponse,
            ..
        })
    ));
    // Virtual time went by: the ringing lasted the whole timeout.
    assert!(started.elapsed() >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_under_a_second_still_times_out() {
    let hub = MemoryHub::new();
    let ((alice, _alice_events), (_bob, mut bob_events)) = pair(&hub).await;
    alice
        .call("bob", MediaType::Audio, Duration::from_millis(500))
        .await
        .unwrap();
    let invited = expect(&mut bob_events, "bob's Invited", |e| {
        matches!(e, Event::Call(CallEvent::Invited { .. }))
    })
    .await;
    // Rounded up to one second on the wire, not down to 0 ("ring forever").
    assert!(matches!(
        invited,
        Event::Call(CallEvent::Invited { timeout: 1, .. })
    ));
    expect(&mut bob_events, "bob's CallingTimeout", |e| {
        matches!(e, Event::Call(CallEvent::CallingTimeout { .. }))
    })
    .await;
}
