//! Who may see, join and fill a room, and what `undeliverable` says about
//! a recipient: the session layer's part of keeping a call to its members.
//! The attacker is a logged-in user who knows only a room's name.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use calling_server::hub::{Hub, LocalHub, OutboundQueue, OutboundReceiver, SessionHandle};
use calling_signal::protocol::ErrorCode;
use calling_signal::{Transport, TransportError, TransportEvent, WsConfig, WsTransport};
use common::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Joins `room` with `allow` and returns the answer, whatever it is.
async fn join(ws: &mut Ws, room: &str, allow: &[&str]) -> Value {
    send(
        ws,
        json!({"type":"join","id":"j","room":room,"allow":allow}),
    )
    .await;
    recv(ws).await
}

fn not_allowed(room: &str) -> Value {
    json!({"type":"error","id":"j","code":"not_allowed","message":format!("cannot join room {room:?}")})
}

/// Attack: eve, not invited, joins the call's room to list its members and
/// follow their comings and goings. She is refused, and the refusal reads
/// the same whether the room holds one member or two, so she learns no
/// member; the members never hear of her.
#[tokio::test]
async fn a_stranger_is_refused_an_allow_listed_room_and_learns_no_member() {
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;
    let mut eve = login_as(addr, "eve").await;

    let joined = join(&mut alice, "call-1", &["bob"]).await;
    assert_eq!(joined["members"], json!(["alice"]), "{joined}");
    let alone = join(&mut eve, "call-1", &[]).await;
    assert_eq!(alone, not_allowed("call-1"));

    assert_eq!(join(&mut bob, "call-1", &[]).await["type"], "joined");
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"room_enter","room":"call-1","user":"bob"})
    );
    let with_bob = join(&mut eve, "call-1", &[]).await;
    assert_eq!(with_bob, alone, "the answer must not depend on the members");
    // Asking for a place on the list is no way in either.
    assert_eq!(join(&mut eve, "call-1", &["eve"]).await, alone);
    send(
        &mut eve,
        json!({"type":"allow","id":"a","room":"call-1","users":["eve"]}),
    )
    .await;
    let e = recv(&mut eve).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("not_in_room"), Some("a"))
    );
    send(
        &mut eve,
        json!({"type":"allow","id":"a","room":"no-such-room","users":["eve"]}),
    )
    .await;
    assert_eq!(
        recv(&mut eve).await["code"],
        e["code"],
        "allow must not tell a room that exists from one that does not"
    );

    // Nothing of eve reached the members: their next frame is bob leaving.
    send(&mut bob, json!({"type":"leave","id":"l","room":"call-1"})).await;
    assert_eq!(recv(&mut bob).await["type"], "left");
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"room_leave","room":"call-1","user":"bob"})
    );
    server.shutdown().await;
}

/// A member who invites more users lets them in with `allow`; until then
/// they are strangers. Any member may do it, not only the room's creator.
#[tokio::test]
async fn a_members_allow_lets_a_newcomer_join() {
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;
    let mut carol = login_as(addr, "carol").await;

    join(&mut alice, "call-2", &["bob"]).await;
    assert_eq!(join(&mut bob, "call-2", &[]).await["type"], "joined");
    assert_eq!(join(&mut carol, "call-2", &[]).await, not_allowed("call-2"));

    send(
        &mut bob,
        json!({"type":"allow","id":"a1","room":"call-2","users":["carol"]}),
    )
    .await;
    assert_eq!(
        recv(&mut bob).await,
        json!({"type":"allowed","id":"a1","room":"call-2"})
    );
    let joined = join(&mut carol, "call-2", &[]).await;
    assert_eq!(
        joined["members"],
        json!(["alice", "bob", "carol"]),
        "{joined}"
    );
    assert_eq!(recv_type(&mut alice, "room_enter").await["user"], "bob");
    assert_eq!(recv_type(&mut alice, "room_enter").await["user"], "carol");
    // An allow list naming nobody is refused whole.
    send(
        &mut carol,
        json!({"type":"allow","id":"a2","room":"call-2","users":["dave","not a user"]}),
    )
    .await;
    assert_eq!(recv(&mut carol).await["code"], "invalid_user_id");
    server.shutdown().await;
}

/// Attack: 64 strangers fill the room so that a real member's join fails
/// `room_full` and its later death is never noticed by the peer. Against
/// an allow-listed room none of them gets in, and the member still does.
#[tokio::test]
async fn strangers_cannot_fill_an_allow_listed_room() {
    let server = start().await;
    let addr = server.local_addr();
    let max = 64;
    let mut alice = login_as(addr, "alice").await;
    join(&mut alice, "call-3", &["bob"]).await;
    let mut strangers = Vec::new();
    for i in 0..max {
        let name = format!("s{i}");
        let mut s = login_as(addr, &name).await;
        assert_eq!(join(&mut s, "call-3", &[]).await, not_allowed("call-3"));
        strangers.push(s);
    }
    let mut bob = login_as(addr, "bob").await;
    let joined = join(&mut bob, "call-3", &[]).await;
    assert_eq!(joined["members"], json!(["alice", "bob"]), "{joined}");
    // The same crowd does fill an open room: the limit is real.
    for s in &mut strangers {
        assert_eq!(join(s, "open", &[]).await["type"], "joined");
    }
    assert_eq!(join(&mut bob, "open", &[]).await["code"], "room_full");
    // Nor can a stranger close an open room others are watching.
    let mut carol = login_as(addr, "carol").await;
    assert_eq!(
        join(&mut carol, "open", &["alice"]).await,
        not_allowed("open")
    );
    server.shutdown().await;
}

/// A session whose outbound queue holds one frame (a budget of one byte:
/// a frame always fits in an empty queue) and is never drained: a
/// recipient that is online but stopped reading, made deterministic.
fn stuck_session(hub: &LocalHub) -> impl std::future::Future<Output = OutboundReceiver> {
    let (tx, rx) = OutboundQueue::new(1);
    let handle = SessionHandle {
        id: u64::MAX,
        tx,
        kick: Arc::new(Notify::new()),
    };
    async move {
        hub.register(&uid("carol"), handle).await.unwrap();
        rx
    }
}

/// Bug: a recipient whose queue was full was reported like an offline one,
/// and the peer took it as "left". Now it is listed `congested`, apart from
/// the offline ones, which stay in `users` for old clients.
#[tokio::test]
async fn a_full_queue_is_congested_not_offline() {
    let hub = Arc::new(LocalHub::new());
    let server = start_with(|c| c.hub = hub.clone()).await;
    let addr = server.local_addr();
    let _carol_queue = stuck_session(&hub).await;
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;

    let to = json!(["bob", "carol", "dave"]);
    send(
        &mut alice,
        json!({"type":"send","id":"m1","to":to,"payload":1}),
    )
    .await;
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"undeliverable","id":"m1","users":["dave"]}),
        "carol's queue still had room"
    );
    send(
        &mut alice,
        json!({"type":"send","id":"m2","to":to,"payload":2}),
    )
    .await;
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"undeliverable","id":"m2","users":["dave"],"congested":["carol"]})
    );
    assert_eq!(recv(&mut bob).await["id"], "m1");
    assert_eq!(recv(&mut bob).await["id"], "m2");
    assert_eq!(metric(addr, "calling_congested_total").await, 1);

    // The client transport reports the same, apart.
    let mut cfg = WsConfig::new(format!("ws://{addr}/ws"), APP, uid("erin"), sig("erin"));
    cfg.reconnect = false;
    let erin = WsTransport::connect(cfg).await.unwrap();
    let mut events = erin.take_events().unwrap();
    let id = erin
        .send(&[uid("carol"), uid("dave")], json!(3))
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, events.recv()).await.unwrap();
    assert_eq!(
        ev,
        Some(TransportEvent::Undeliverable {
            id,
            offline: vec![uid("dave")],
            congested: vec![uid("carol")],
        })
    );
    erin.close().await;
    server.shutdown().await;
}

/// The client side of room access: `join_room` with an allow list and
/// `allow_room` map onto the frames, and refusals are typed.
#[tokio::test]
async fn the_ws_transport_joins_and_extends_closed_rooms() {
    let server = start().await;
    let addr = server.local_addr();
    let connect = |user: &str| {
        let mut cfg = WsConfig::new(format!("ws://{addr}/ws"), APP, uid(user), sig(user));
        cfg.reconnect = false;
        WsTransport::connect(cfg)
    };
    let alice = connect("alice").await.unwrap();
    let bob = connect("bob").await.unwrap();
    let eve = connect("eve").await.unwrap();
    assert_eq!(
        alice.join_room("call-4", &[uid("bob")]).await.unwrap(),
        [uid("alice")]
    );
    let refused = |r: Result<Vec<_>, TransportError>, want: ErrorCode| matches!(r, Err(TransportError::Refused { code, .. }) if code == want);
    assert!(refused(
        eve.join_room("call-4", &[]).await,
        ErrorCode::NotAllowed
    ));
    assert!(matches!(
        eve.allow_room("call-4", &[uid("eve")]).await,
        Err(TransportError::Refused {
            code: ErrorCode::NotInRoom,
            ..
        })
    ));
    assert_eq!(bob.join_room("call-4", &[]).await.unwrap().len(), 2);
    bob.allow_room("call-4", &[uid("eve")]).await.unwrap();
    assert_eq!(eve.join_room("call-4", &[]).await.unwrap().len(), 3);
    for t in [alice, bob, eve] {
        t.close().await;
    }
    server.shutdown().await;
}

/// Attack: probing presence (or flooding) past the rate limit by logging
/// in again for a fresh burst. A user's sessions share one bucket, which a
/// new login does not refill: the limit is per user, not per connection.
#[tokio::test]
async fn a_new_login_does_not_refill_the_rate_limit() {
    // Rate zero: the bucket never refills, so the test reads no clock.
    let server = start_with(|c| {
        c.limits.rate_per_sec = 0;
        c.limits.rate_burst = 3;
    })
    .await;
    let addr = server.local_addr();
    let ping = |id: &str| json!({"type":"ping","id":id});
    let mut first = login_as(addr, "eve").await;
    for id in ["1", "2", "3"] {
        send(&mut first, ping(id)).await;
        assert_eq!(recv(&mut first).await["type"], "pong");
    }
    send(&mut first, ping("4")).await;
    assert_eq!(recv(&mut first).await["code"], "rate_limited");
    // Logging in elsewhere (which kicks the first session), and logging in
    // after the first session ended, both find the bucket as it was left.
    let mut second = login_as(addr, "eve").await;
    assert_eq!(expect_close(&mut first).await, 4002);
    send(&mut second, ping("5")).await;
    assert_eq!(recv(&mut second).await["code"], "rate_limited");
    drop(second);
    let mut third = login_as(addr, "eve").await;
    send(&mut third, ping("6")).await;
    assert_eq!(recv(&mut third).await["code"], "rate_limited");
    // Another user has a bucket of its own.
    let mut bob = login_as(addr, "bob").await;
    send(&mut bob, ping("b")).await;
    assert_eq!(recv(&mut bob).await["type"], "pong");
    server.shutdown().await;
}
