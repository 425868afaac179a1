//! Attacks on a client by a logged-in user who is not in its call and knows
//! only the call id, or only the victim's user id (issue 12). The attacker
//! is a raw protocol client written from docs/PROTOCOL.md: a WebSocket that
//! logs in with a UserSig and sends hand-made call-layer payloads.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use calling::{CallEvent, Calling, CallingConfig, Event, Events, MediaType, UserId};
use calling_media::{MediaConfig, MediaEvent, MediaSession, MediaSignal};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw session-layer client: it logs in, then sends `send` frames; every
/// `message` frame it receives goes to `inbox` (a reader task drains the
/// socket so the server never counts it as a client that stopped reading).
struct Raw {
    user: String,
    sink: SplitSink<Ws, Message>,
    inbox: mpsc::UnboundedReceiver<Value>,
    next_id: u64,
}

impl Raw {
    async fn login(net: &Net, user: &str) -> Raw {
        let (mut ws, _) = tokio_tungstenite::connect_async(net.url.as_str())
            .await
            .unwrap();
        let login = json!({
            "type": "login", "id": "1", "sdk_app_id": APP, "user_id": user,
            "user_sig": sig(user), "protocol": 1,
        });
        ws.send(Message::text(login.to_string())).await.unwrap();
        let ok = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(Ok(Message::Text(t))) = ws.next().await {
                    let frame: Value = serde_json::from_str(&t).unwrap();
                    assert_ne!(frame["type"], "error", "{user}'s login refused: {frame}");
                    if frame["type"] == "login_ok" {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(ok.is_ok(), "{user} never got login_ok");
        let (sink, stream) = ws.split();
        let (tx, inbox) = mpsc::unbounded_channel();
        tokio::spawn(read_messages(stream, tx));
        Raw {
            user: user.to_owned(),
            sink,
            inbox,
            next_id: 0,
        }
    }

    /// Sends `payload` to `to` in a `send` frame.
    async fn send(&mut self, to: &str, payload: Value) {
        self.next_id += 1;
        let frame = json!({
            "type": "send", "id": format!("{}-{}", self.user, self.next_id),
            "to": [to], "payload": payload,
        });
        self.sink
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// Keeps the session alive (the server closes silent ones).
    async fn ping(&mut self) {
        let frame = json!({"type": "ping"}).to_string();
        self.sink.send(Message::text(frame)).await.unwrap();
    }

    /// Every payload delivered to this client within `window`.
    async fn payloads_within(&mut self, window: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(window, async {
            while let Some(p) = self.inbox.recv().await {
                got.push(p);
            }
        })
        .await;
        while let Ok(p) = self.inbox.try_recv() {
            got.push(p);
        }
        got
    }
}

/// Forwards the payload of every `message` frame; ends with the socket.
async fn read_messages(mut stream: SplitStream<Ws>, tx: mpsc::UnboundedSender<Value>) {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(&t) else {
            continue;
        };
        if frame["type"] == "message" {
            let _ = tx.send(frame["payload"].clone());
        }
    }
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn audio_only() -> CallingConfig {
    CallingConfig {
        video: None,
        ..CallingConfig::loopback()
    }
}

/// `caller` calls `callee` (audio), the callee accepts, and both see the
/// other enter. Returns the call id.
async fn in_call(
    (caller, caller_events): (&Calling, &mut Events),
    (callee, callee_events): (&Calling, &mut Events),
) -> calling::CallId {
    let call_id = caller
        .call(
            callee.user().as_str(),
            MediaType::Audio,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let invite = invited(callee_events).await;
    callee.accept(&invite).await.unwrap();
    for (events, who) in [
        (caller_events, callee.user()),
        (callee_events, caller.user()),
    ] {
        expect(
            events,
            "the other party enters",
            |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user == who),
        )
        .await;
    }
    call_id
}

/// alice (audio only) calls `callee` (audio only), who accepts: both are
/// connected.
async fn alice_calls(
    net: &Net,
    callee: &str,
) -> ((Calling, Events), (Calling, Events), calling::CallId) {
    let mut alice = login_with(net, "alice", audio_only()).await;
    let mut other = login_with(net, callee, audio_only()).await;
    let call_id = in_call((&alice.0, &mut alice.1), (&other.0, &mut other.1)).await;
    (alice, other, call_id)
}

/// Waits for `who` to enter the call.
async fn enters(events: &mut Events, who: &str) {
    expect(
        events,
        "a party enters",
        |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user == who),
    )
    .await;
}

/// Waits for the call's end.
async fn call_ends(events: &mut Events, what: &str) {
    expect(events, what, |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
}

/// A real SDP offer (with its candidates) from a media session of `from`
/// to `to`: what an attacker's browser would send.
async fn real_offer(from: &str, to: &str) -> (MediaSession, Vec<MediaSignal>) {
    let (session, mut events) = MediaSession::new(uid(from), MediaConfig::loopback())
        .await
        .unwrap();
    session.connect(&uid(to)).await.unwrap();
    let mut signals = Vec::new();
    // The offer, and whatever candidates come within a moment of it.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(ev) = events.recv().await {
            if let MediaEvent::Signal { signal, .. } = ev {
                signals.push(signal);
            }
        }
    })
    .await;
    assert!(
        matches!(signals.first(), Some(MediaSignal::Offer { .. })),
        "{signals:?}"
    );
    (session, signals)
}

/// Case 1: an outsider who knows the call id sends the victim a media
/// offer for it. The victim must not answer (that would hand over its
/// audio and video), and must build no peer connection for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsiders_offer_during_a_live_call_gets_no_answer_and_no_media() {
    let net = start().await;
    // "mallory" < "victim": mallory is the side that offers to the victim.
    let (alice, mut alice_events) = login_with(&net, "alice", audio_only()).await;
    let (victim, mut victim_events) = login_with(&net, "victim", audio_only()).await;
    let call_id = in_call((&alice, &mut alice_events), (&victim, &mut victim_events)).await;
    let mut mallory = Raw::login(&net, "mallory").await;

    let (offerer, signals) = real_offer("mallory", "victim").await;
    for signal in &signals {
        let payload = json!({
            "version": 1, "call_id": call_id.as_str(), "kind": "media", "signal": signal,
        });
        mallory.send("victim", payload).await;
    }
    mallory.ping().await;

    let answers = mallory.payloads_within(Duration::from_secs(3)).await;
    assert!(
        answers.iter().all(|p| p["kind"] != "media"),
        "the victim negotiated media with an outsider: {answers:?}"
    );
    let stats = victim.stats().await.unwrap();
    assert!(
        stats.iter().all(|s| s.user != "mallory"),
        "the victim built a peer connection for an outsider: {stats:?}"
    );
    // The call itself goes on, with alice.
    assert!(stats.iter().any(|s| s.user == "alice"), "{stats:?}");
    let call = victim.current_call().await.unwrap().unwrap();
    assert_eq!(call.connected, vec![uid("alice")]);
    offerer.close().await;
    alice.hangup().await.unwrap();
    call_ends(&mut victim_events, "the call ends").await;
}

/// Sends made-up `enter`s to `victim` as fast as the server's rate limit
/// lets one connection (50 a second, bursts of 100) until `stop` fires.
async fn flood(
    mut raw: Raw,
    victim: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Raw {
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = stop.changed() => return raw,
            _ = tick.tick() => {
                n += 1;
                let payload = json!({
                    "version": 1, "call_id": format!("made-up-{}-{n}", raw.user),
                    "party": n, "kind": "enter", "audio": true, "video": false,
                });
                raw.send(victim, payload).await;
            }
        }
    }
}

/// Case 6: three users who know only the victim's user id flood it with
/// `enter`s for made-up calls, each at the server's rate limit. The victim
/// must still see the real hangup of its call: its CallEnd arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_enters_does_not_hide_the_real_hangup() {
    let net = start().await;
    let ((alice, _alice_events), (victim, mut victim_events), call_id) =
        alice_calls(&net, "victim").await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut floods = Vec::new();
    for name in ["flood1", "flood2", "flood3"] {
        let raw = Raw::login(&net, name).await;
        floods.push(tokio::spawn(flood(raw, "victim", stop_rx.clone())));
    }
    // Long enough that, answering every enter with `gone` at its own paced
    // rate, the victim's 1024-event queue would have overflowed.
    tokio::time::sleep(Duration::from_secs(12)).await;

    alice.hangup().await.unwrap();
    let end = expect(&mut victim_events, "the real hangup ends the call", |e| {
        matches!(e, Event::Call(CallEvent::CallEnd { .. }))
    })
    .await;
    assert!(
        matches!(&end, Event::Call(CallEvent::CallEnd { call_id: c, .. }) if *c == call_id),
        "{end:?}"
    );
    stop_tx.send(true).unwrap();
    let mut goners = 0;
    for f in floods {
        let mut raw = f.await.unwrap();
        let got = raw.payloads_within(Duration::from_millis(200)).await;
        assert!(
            got.iter().all(|p| p["kind"] == "gone"),
            "a stranger got more than `gone`: {got:?}"
        );
        goners += got.len();
    }
    // The victim did read the flood (it answered some of it), but answered
    // only a little of it: its own sending was never backed up.
    assert!(goners > 0, "the flood never reached the victim");
    assert!(goners < 3 * 100, "{goners} answers to strangers");
    // And it is free for the next call.
    assert!(victim.current_call().await.unwrap().is_none());
}

/// An app that stops reading its events must not stall call control: with
/// its channel full, the client still answers a new caller busy at once,
/// and every call event waits for the app, in order, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_app_reader_does_not_stall_call_control() {
    let net = start().await;
    let small = CallingConfig {
        event_capacity: 16,
        ..audio_only()
    };
    let (alice, mut alice_events) = login_with(&net, "alice", audio_only()).await;
    let (victim, mut victim_events) = login_with(&net, "victim", small).await;
    let (bob, mut bob_events) = login_with(&net, "bob", audio_only()).await;
    in_call((&alice, &mut alice_events), (&victim, &mut victim_events)).await;

    // The victim's app stops reading; alice's microphone flips more often
    // than its channel holds.
    const FLIPS: usize = 40;
    for i in 0..FLIPS {
        alice.set_mic_mute(i % 2 == 0).await.unwrap();
    }
    let call_id = bob
        .call("victim", MediaType::Audio, Duration::from_secs(30))
        .await
        .unwrap();
    expect(&mut bob_events, "the victim's client answers busy", |e| {
        matches!(e, Event::Call(CallEvent::LineBusy { call_id: c, user }) if *c == call_id && user == "victim")
    })
    .await;

    // Now the app reads: every flip is there, in order (after the
    // availability alice entered with).
    let expected: Vec<bool> = (0..FLIPS).map(|i| i % 2 != 0).collect();
    let mut seen = Vec::new();
    let got_all = tokio::time::timeout(WAIT, async {
        while !seen.ends_with(&expected) {
            match victim_events.recv().await {
                Some(Event::Call(CallEvent::UserAudioAvailable {
                    user, available, ..
                })) if user == "alice" => seen.push(available),
                Some(_) => {}
                None => return,
            }
        }
    })
    .await;
    assert!(
        got_all.is_ok(),
        "the flips did not all arrive in order: {seen:?}"
    );
    assert!(seen.len() <= FLIPS + 1, "{seen:?}");
}

/// The events `events` holds within `window`, read without waiting past it.
async fn events_within(events: &mut Events, window: Duration) -> Vec<Event> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(window, async {
        while let Some(e) = events.recv().await {
            got.push(e);
        }
    })
    .await;
    got
}

fn mentions(events: &[Event], who: &str) -> bool {
    events.iter().any(|e| match e {
        Event::Call(CallEvent::UserEnter { user, .. })
        | Event::Call(CallEvent::UserLeave { user, .. })
        | Event::Call(CallEvent::LineBusy { user, .. })
        | Event::Call(CallEvent::Rejected { user, .. }) => user == who,
        Event::Call(CallEvent::NoResponse { users, .. }) => users.iter().any(|u| u == who),
        _ => false,
    })
}

/// A call-layer payload of `kind` for `call_id`, from a made-up party.
fn forged(call_id: &str, kind: &str, fields: Value) -> Value {
    let mut p = json!({"version": 1, "call_id": call_id, "party": 1u64 << 52, "kind": kind});
    if let (Some(p), Some(f)) = (p.as_object_mut(), fields.as_object()) {
        p.extend(f.clone());
    }
    p
}

/// Case 2: an outsider who knows the call id sends `enter` with no invite
/// (and a `media_type` switch): no member lets it in or obeys it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_cannot_enter_uninvited() {
    let net = start().await;
    let ((alice, mut alice_events), (victim, mut victim_events), call_id) =
        alice_calls(&net, "victim").await;
    let mut mallory = Raw::login(&net, "mallory").await;
    for to in ["alice", "victim"] {
        let enter = forged(
            call_id.as_str(),
            "enter",
            json!({"audio": true, "video": true}),
        );
        mallory.send(to, enter).await;
        let switch = forged(
            call_id.as_str(),
            "media_type",
            json!({"media_type": "video"}),
        );
        mallory.send(to, switch).await;
    }
    let answers = mallory.payloads_within(Duration::from_secs(2)).await;
    assert!(
        answers
            .iter()
            .all(|p| p["kind"] != "roster" && p["kind"] != "enter" && p["kind"] != "media"),
        "an outsider was answered as a member: {answers:?}"
    );
    for (client, events) in [(&alice, &mut alice_events), (&victim, &mut victim_events)] {
        let seen = events_within(events, Duration::from_millis(200)).await;
        assert!(!mentions(&seen, "mallory"), "{seen:?}");
        let call = client.current_call().await.unwrap().unwrap();
        assert!(!call.connected.iter().any(|u| u == "mallory"), "{call:?}");
        assert_eq!(
            call.media_type,
            MediaType::Audio,
            "the outsider switched the call"
        );
    }
    alice.hangup().await.unwrap();
}

/// Case 3: an outsider holding a real invitee's invite id cannot take its
/// seat while it rings; the invitee then accepts into a call without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_cannot_take_a_ringing_invitees_seat() {
    let net = start().await;
    let (alice, mut alice_events) = login_with(&net, "alice", audio_only()).await;
    let (bob, mut bob_events) = login_with(&net, "bob", audio_only()).await;
    let call_id = alice
        .call("bob", MediaType::Audio, Duration::from_secs(30))
        .await
        .unwrap();
    let invite = invited(&mut bob_events).await;
    let mut mallory = Raw::login(&net, "mallory").await;
    let enter = forged(
        call_id.as_str(),
        "enter",
        json!({"invite_id": invite.as_str(), "audio": true, "video": true}),
    );
    mallory.send("alice", enter).await;
    let answers = mallory.payloads_within(Duration::from_secs(2)).await;
    assert!(
        answers
            .iter()
            .all(|p| p["kind"] != "roster" && p["kind"] != "media"),
        "{answers:?}"
    );
    let seen = events_within(&mut alice_events, Duration::from_millis(200)).await;
    assert!(!mentions(&seen, "mallory"), "{seen:?}");
    bob.accept(&invite).await.unwrap();
    enters(&mut alice_events, "bob").await;
    for client in [&alice, &bob] {
        let call = client.current_call().await.unwrap().unwrap();
        assert!(!call.connected.iter().any(|u| u == "mallory"), "{call:?}");
    }
    alice.hangup().await.unwrap();
}

/// Case 4: a roster from an outsider naming an uninvolved online user
/// (party 2^62) makes nobody a member, sends that user nothing, and the
/// victim's call still ends when its real peer hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsiders_roster_invents_no_members() {
    let net = start().await;
    let ((alice, _alice_events), (victim, mut victim_events), call_id) =
        alice_calls(&net, "victim").await;
    let mut carol = Raw::login(&net, "carol").await;
    let mut mallory = Raw::login(&net, "mallory").await;
    let roster = forged(
        call_id.as_str(),
        "roster",
        json!({
            "room_id": 7, "media_type": "audio", "sponsor": "alice", "is_group": true,
            "roster": {
                "connected": [{"user": "carol", "party": 1u64 << 62, "audio": true, "video": false}],
                "ringing": [],
            },
        }),
    );
    mallory.send("victim", roster).await;
    let to_carol = carol.payloads_within(Duration::from_secs(2)).await;
    assert!(
        to_carol.is_empty(),
        "an invented member was contacted: {to_carol:?}"
    );
    let call = victim.current_call().await.unwrap().unwrap();
    assert_eq!(call.connected, vec![uid("alice")]);
    alice.hangup().await.unwrap();
    call_ends(&mut victim_events, "the victim's call ends").await;
    assert!(victim.current_call().await.unwrap().is_none());
}

/// Case 5: a co-invitee of a group call forges `timeout` and `cancel` about
/// another invitee's invitation: the caller still waits for that invitee,
/// and the invitee can still accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_co_invitee_cannot_speak_for_another() {
    let net = start().await;
    let (alice, mut alice_events) = login_with(&net, "alice", audio_only()).await;
    let (bob, mut bob_events) = login_with(&net, "bob", audio_only()).await;
    let mut mallory = Raw::login(&net, "mallory").await;
    let call_id = alice
        .group_call(
            &["bob", "mallory"],
            MediaType::Audio,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let invite = invited(&mut bob_events).await;
    // mallory got the same invitation: it knows the invite id.
    let got = mallory.payloads_within(Duration::from_secs(1)).await;
    assert!(got.iter().any(|p| p["kind"] == "invite"), "{got:?}");
    let timeout = forged(
        call_id.as_str(),
        "timeout",
        json!({"invite_id": invite.as_str(), "users": ["bob"], "reason": "timeout"}),
    );
    mallory.send("alice", timeout).await;
    let cancel = forged(
        call_id.as_str(),
        "cancel",
        json!({"invite_id": invite.as_str()}),
    );
    mallory.send("bob", cancel).await;
    mallory.ping().await;
    let _ = mallory.payloads_within(Duration::from_secs(2)).await;
    let seen = events_within(&mut alice_events, Duration::from_millis(200)).await;
    assert!(
        !mentions(&seen, "bob"),
        "alice was told about bob by mallory: {seen:?}"
    );
    let seen = events_within(&mut bob_events, Duration::from_millis(200)).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Call(CallEvent::CallingCancel { .. }))),
        "{seen:?}"
    );
    bob.accept(&invite).await.unwrap();
    enters(&mut alice_events, "bob").await;
    alice.hangup().await.unwrap();
}

/// Case 9: a hangup sent while the server is down is lost on the way; once
/// the server is back and both have reconnected, the party that missed it
/// ends its call too (the reconnect's recheck and the keepalive are
/// answered `gone` by the party that hung up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_lost_while_the_server_is_down_still_ends_the_call() {
    let net = start().await;
    let ((alice, mut alice_events), (bob, mut bob_events), _) = alice_calls(&net, "bob").await;

    let Net { server, url: _ } = net;
    let addr = server.local_addr();
    server.shutdown().await;
    expect(&mut alice_events, "alice sees the server go", |e| {
        matches!(e, Event::Disconnected)
    })
    .await;
    alice.hangup().await.unwrap();
    call_ends(&mut alice_events, "alice's call ends").await;

    // The same address again: the clients reconnect to where they were.
    let mut config = calling_server::Config::new(APP, KEY);
    config.listen = addr;
    let server = calling_server::Server::bind(config).await.unwrap();
    call_ends(&mut bob_events, "bob's call ends").await;
    assert!(bob.current_call().await.unwrap().is_none());
    assert!(alice.current_call().await.unwrap().is_none());
    // And bob can call again, once alice is back.
    expect(&mut alice_events, "alice reconnects", |e| {
        matches!(e, Event::Reconnected)
    })
    .await;
    bob.call("alice", MediaType::Audio, Duration::from_secs(30))
        .await
        .unwrap();
    invited(&mut alice_events).await;
    bob.hangup().await.unwrap();
    server.shutdown().await;
}
