//! The calling-signal client transports against the real server.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use calling_signal::protocol::ErrorCode;
use calling_signal::{
    MemoryHub, MessageId, Transport, TransportError, TransportEvent, WsConfig, WsTransport,
};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc::Receiver;
use tokio_tungstenite::tungstenite::Message;

fn ws_config(addr: SocketAddr, user: &str) -> WsConfig {
    let mut c = WsConfig::new(format!("ws://{addr}/ws"), APP, uid(user), sig(user));
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

async fn ws_user(addr: SocketAddr, user: &str) -> (WsTransport, Receiver<TransportEvent>) {
    let t = WsTransport::connect(ws_config(addr, user)).await.unwrap();
    let rx = t.take_events().unwrap();
    (t, rx)
}

async fn next(rx: &mut Receiver<TransportEvent>) -> TransportEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for an event")
        .expect("event stream ended")
}

/// Sends `payload` from `sender` to bob and checks that bob gets exactly
/// it, from the sender, under the id `send` returned.
async fn delivered_to_bob(
    sender: &dyn Transport,
    bob_events: &mut Receiver<TransportEvent>,
    payload: serde_json::Value,
) -> MessageId {
    let id = sender.send(&[uid("bob")], payload.clone()).await.unwrap();
    assert_eq!(
        next(bob_events).await,
        TransportEvent::Message {
            from: sender.local_user().clone(),
            id: id.clone(),
            payload
        }
    );
    id
}

/// The same exchange over any transport: what the facade relies on.
async fn exchange(
    alice: &dyn Transport,
    alice_ev: &mut Receiver<TransportEvent>,
    bob: &dyn Transport,
    bob_ev: &mut Receiver<TransportEvent>,
) {
    assert_eq!(alice.local_user(), &uid("alice"));
    let id = delivered_to_bob(alice, bob_ev, json!({"cmd":"invite","call_id":"c1"})).await;
    let id2 = alice
        .send(&[uid("bob"), uid("nobody")], json!(2))
        .await
        .unwrap();
    assert_ne!(id, id2);
    assert!(matches!(next(bob_ev).await, TransportEvent::Message { .. }));
    assert_eq!(
        next(alice_ev).await,
        TransportEvent::Undeliverable {
            id: id2,
            offline: vec![uid("nobody")],
            congested: vec![]
        }
    );
    assert_eq!(
        alice.join_room("room-1", &[]).await.unwrap(),
        [uid("alice")]
    );
    assert_eq!(
        bob.join_room("room-1", &[]).await.unwrap(),
        [uid("alice"), uid("bob")]
    );
    assert_eq!(
        next(alice_ev).await,
        TransportEvent::RoomEnter {
            room: "room-1".into(),
            user: uid("bob")
        }
    );
    bob.leave_room("room-1").await.unwrap();
    assert_eq!(
        next(alice_ev).await,
        TransportEvent::RoomLeave {
            room: "room-1".into(),
            user: uid("bob")
        }
    );
    assert!(matches!(
        bob.leave_room("room-1").await,
        Err(TransportError::Refused {
            code: ErrorCode::NotInRoom,
            ..
        })
    ));
}

#[tokio::test]
async fn ws_and_memory_transports_behave_alike() {
    let server = start().await;
    let addr = server.local_addr();
    let (alice, mut ae) = ws_user(addr, "alice").await;
    let (bob, mut be) = ws_user(addr, "bob").await;
    exchange(&alice, &mut ae, &bob, &mut be).await;

    let hub = MemoryHub::new();
    let malice: Box<dyn Transport> = Box::new(hub.register(uid("alice")));
    let mbob: Box<dyn Transport> = Box::new(hub.register(uid("bob")));
    let (mut mae, mut mbe) = (malice.take_events().unwrap(), mbob.take_events().unwrap());
    exchange(&*malice, &mut mae, &*mbob, &mut mbe).await;

    alice.close().await;
    assert_eq!(
        alice.send(&[uid("bob")], json!(1)).await,
        Err(TransportError::Closed)
    );
    alice.close().await; // idempotent
    server.shutdown().await;
}

#[tokio::test]
async fn refused_login_is_a_typed_error() {
    let server = start().await;
    let addr = server.local_addr();
    let mut c = ws_config(addr, "alice");
    c.user_sig = sig("bob");
    match WsTransport::connect(c).await {
        Err(TransportError::LoginRefused { code, .. }) => assert_eq!(code, ErrorCode::BadSignature),
        other => panic!("unexpected {other:?}"),
    }
    let mut c = ws_config(addr, "alice");
    c.sdk_app_id = APP + 1;
    match WsTransport::connect(c).await {
        Err(TransportError::LoginRefused { code, .. }) => assert_eq!(code, ErrorCode::WrongApp),
        other => panic!("unexpected {other:?}"),
    }
    server.shutdown().await;
    // Nothing listens there any more.
    assert!(matches!(
        WsTransport::connect(ws_config(addr, "alice")).await,
        Err(TransportError::Connect(_))
    ));
}

#[tokio::test]
async fn second_login_kicks_the_first_client() {
    let server = start().await;
    let addr = server.local_addr();
    let (first, mut fe) = ws_user(addr, "alice").await;
    let (_second, _se) = ws_user(addr, "alice").await;
    assert_eq!(next(&mut fe).await, TransportEvent::KickedOut);
    // Kicked means closed for good: no reconnect, sends fail.
    assert_eq!(
        first.send(&[uid("bob")], json!(1)).await,
        Err(TransportError::Closed)
    );
    assert!(
        tokio::time::timeout(WAIT, fe.recv())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(server.online(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn client_reconnects_after_server_restart_and_can_send_again() {
    let server = start().await;
    let addr = server.local_addr();
    let (alice, mut ae) = ws_user(addr, "alice").await;
    let (_bob, mut be) = ws_user(addr, "bob").await;
    alice.join_room("r", &[]).await.unwrap();
    server.shutdown().await;
    assert_eq!(next(&mut ae).await, TransportEvent::Disconnected);
    assert_eq!(next(&mut be).await, TransportEvent::Disconnected);
    // While down, sends fail fast instead of vanishing.
    assert!(matches!(
        alice.send(&[uid("bob")], json!(0)).await,
        Err(TransportError::NotConnected)
    ));

    let server = start_with(|c| c.listen = addr).await;
    assert_eq!(next(&mut ae).await, TransportEvent::Reconnected);
    assert_eq!(next(&mut be).await, TransportEvent::Reconnected);
    // The room was re-joined on the new server: leaving it succeeds (the
    // leave follows the re-join on the same connection).
    alice.leave_room("r").await.unwrap();
    delivered_to_bob(&alice, &mut be, json!({"after":"restart"})).await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_detects_a_silent_server() {
    // A fake server that logs the client in, announces a short heartbeat
    // timeout, then never says anything again.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let _login = ws.next().await;
        let ok = json!({"type":"login_ok","user_id":"alice","protocol":1,
            "heartbeat_interval_ms":50,"heartbeat_timeout_ms":200,"expires_at":0,
            "limits":{"max_frame_bytes":65536,"max_recipients":64,"rate_per_sec":50,
                      "rate_burst":100,"max_rooms_per_user":16,"max_room_members":64}});
        ws.send(Message::text(ok.to_string())).await.unwrap();
        // Read (and ignore) pings until the client gives up on us.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let mut c = ws_config(addr, "alice");
    c.reconnect = false;
    let t = WsTransport::connect(c).await.unwrap();
    let mut ev = t.take_events().unwrap();
    assert_eq!(next(&mut ev).await, TransportEvent::Disconnected);
    tokio::time::timeout(WAIT, fake).await.unwrap().unwrap();
}

#[tokio::test]
async fn server_error_frames_surface_as_events() {
    let server = start().await;
    let addr = server.local_addr();
    let (alice, mut ae) = ws_user(addr, "alice").await;
    let too_many: Vec<_> = (0..65).map(|i| uid(&format!("u{i}"))).collect();
    let id = alice.send(&too_many, json!(1)).await.unwrap();
    match next(&mut ae).await {
        TransportEvent::Error {
            id: Some(eid),
            code,
            ..
        } => {
            assert_eq!(eid, id.0);
            assert_eq!(code, ErrorCode::BadRecipients);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        alice.join_room("bad\nroom", &[]).await,
        Err(TransportError::Refused {
            code: ErrorCode::InvalidRoom,
            ..
        })
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn client_heartbeats_keep_an_idle_session_alive() {
    // Pings every 20 ms against a 2 s timeout: a 100x margin. Without the
    // client's pings the server would drop the session after 2 s.
    let server = start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(20);
        c.heartbeat_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = server.local_addr();
    let (alice, mut ae) = ws_user(addr, "alice").await;
    let (_bob, mut be) = ws_user(addr, "bob").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(ae.try_recv().is_err(), "alice saw an event while idle");
    delivered_to_bob(&alice, &mut be, json!("still here")).await;
    assert_eq!(metric(addr, "calling_heartbeat_timeouts_total").await, 0);
    server.shutdown().await;
}

/// A burst far above the server's rate limit is paced by the client, not
/// dropped by the server: every payload arrives, in order, and no
/// `rate_limited` error comes back.
#[tokio::test]
async fn client_paces_bursts_within_the_announced_rate_limit() {
    let server = start_with(|c| {
        c.limits.rate_per_sec = 40;
        c.limits.rate_burst = 5;
    })
    .await;
    let addr = server.local_addr();
    let (alice, mut alice_events) = ws_user(addr, "alice").await;
    let (_bob, mut bob_events) = ws_user(addr, "bob").await;
    let to = [uid("bob")];
    for n in 0..30 {
        alice.send(&to, json!({ "n": n })).await.unwrap();
    }
    for n in 0..30 {
        match next(&mut bob_events).await {
            TransportEvent::Message { payload, .. } => assert_eq!(payload["n"], n),
            other => panic!("expected message {n}, got {other:?}"),
        }
    }
    // Nothing was refused on the sender's side.
    assert!(alice_events.try_recv().is_err(), "no error event for alice");
}

/// After a reconnect the re-joins count against the server's rate limit
/// like any other frame: the client paces them too, so what it sends right
/// after them is not refused.
#[tokio::test]
async fn rejoins_after_a_reconnect_are_paced() {
    let tight = |c: &mut calling_server::Config| {
        c.limits.rate_per_sec = 2;
        c.limits.rate_burst = 4;
    };
    let server = start_with(tight).await;
    let addr = server.local_addr();
    let (alice, mut ae) = ws_user(addr, "alice").await;
    let (_bob, mut be) = ws_user(addr, "bob").await;
    for room in ["r1", "r2", "r3"] {
        alice.join_room(room, &[]).await.unwrap();
    }
    server.shutdown().await;
    assert_eq!(next(&mut ae).await, TransportEvent::Disconnected);
    assert_eq!(next(&mut be).await, TransportEvent::Disconnected);

    let server = start_with(|c| {
        c.listen = addr;
        tight(c);
    })
    .await;
    assert_eq!(next(&mut ae).await, TransportEvent::Reconnected);
    assert_eq!(next(&mut be).await, TransportEvent::Reconnected);
    delivered_to_bob(&alice, &mut be, json!("after the re-joins")).await;
    assert!(ae.try_recv().is_err(), "no error event for alice");
    server.shutdown().await;
}

/// A closed room whose members all lost their connection ends with them;
/// the re-join after the reconnect creates it again with the allow list it
/// had, so a stranger cannot walk in while the members come back.
#[tokio::test]
async fn a_rejoin_brings_a_closed_room_back_closed() {
    let server = start().await;
    let addr = server.local_addr();
    let (alice, mut ae) = ws_user(addr, "alice").await;
    alice.join_room("call", &[uid("bob")]).await.unwrap();
    alice.allow_room("call", &[uid("carol")]).await.unwrap();
    server.shutdown().await;
    assert_eq!(next(&mut ae).await, TransportEvent::Disconnected);

    let server = start_with(|c| c.listen = addr).await;
    assert_eq!(next(&mut ae).await, TransportEvent::Reconnected);
    // Requests follow the re-joins on the wire: this one is answered only
    // once alice is back in a room that still has an allow list.
    alice.allow_room("call", &[uid("dave")]).await.unwrap();
    let mut eve = login_as(addr, "eve").await;
    send(&mut eve, json!({"type":"join","id":"j","room":"call"})).await;
    assert_eq!(recv(&mut eve).await["code"], "not_allowed");
    let mut invited = Vec::new();
    for user in ["bob", "carol", "dave"] {
        let mut ws = login_as(addr, user).await;
        send(&mut ws, json!({"type":"join","id":"j","room":"call"})).await;
        assert_eq!(recv(&mut ws).await["type"], "joined", "{user}");
        invited.push(ws);
    }
    for user in ["bob", "carol", "dave"] {
        assert_eq!(
            next(&mut ae).await,
            TransportEvent::RoomEnter {
                room: "call".into(),
                user: uid(user)
            }
        );
    }
    server.shutdown().await;
}
