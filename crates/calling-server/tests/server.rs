//! The server over real sockets on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A refused login answers one typed error echoing the id, then closes 4001.
async fn expect_login_refused(ws: &mut Ws, code: &str) {
    let e = recv(ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["id"], "L");
    assert_eq!(expect_close(ws).await, 4001);
}

/// Logs in on a fresh connection and expects the refusal `code`.
async fn login_refused(addr: std::net::SocketAddr, app: u64, user: &str, sig: &str, code: &str) {
    let mut ws = connect(addr).await;
    login_frame(&mut ws, app, user, sig).await;
    expect_login_refused(&mut ws, code).await;
}

#[tokio::test]
async fn login_ok_announces_session_parameters() {
    let server = start().await;
    let mut ws = connect(server.local_addr()).await;
    login_frame(&mut ws, APP, "alice", &sig("alice")).await;
    let ok = recv(&mut ws).await;
    assert_eq!(ok["type"], "login_ok");
    assert_eq!(ok["id"], "L");
    assert_eq!(ok["user_id"], "alice");
    assert_eq!(ok["protocol"], 1);
    assert_eq!(ok["heartbeat_timeout_ms"], 10_000);
    assert_eq!(ok["limits"]["max_frame_bytes"], 65_536);
    assert!(ok["expires_at"].as_u64().unwrap() > calling_usersig::now_unix());
    assert_eq!(server.online(), 1);
    assert_eq!(
        metric(server.local_addr(), "calling_logins_ok_total").await,
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn forged_signature_is_refused() {
    let server = start().await;
    let addr = server.local_addr();
    let forged = calling_usersig::generate(
        APP,
        "not-the-key",
        "alice",
        3600,
        calling_usersig::now_unix(),
    );
    login_refused(addr, APP, "alice", &forged, "bad_signature").await;
    login_refused(addr, APP, "alice", "garbage!!", "bad_signature").await;
    // A valid signature for someone else does not log in as alice.
    login_refused(addr, APP, "alice", &sig("mallory"), "bad_signature").await;

    assert_eq!(server.online(), 0);
    assert_eq!(metric(addr, "calling_logins_failed_total").await, 3);
    login_as(addr, "alice").await;
    server.shutdown().await;
}

#[tokio::test]
async fn expired_signature_is_refused() {
    let server = start().await;
    let old = calling_usersig::generate(APP, KEY, "alice", 60, calling_usersig::now_unix() - 3600);
    login_refused(server.local_addr(), APP, "alice", &old, "sig_expired").await;
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_app_is_refused() {
    let server = start().await;
    let addr = server.local_addr();
    let other = calling_usersig::generate(APP + 1, KEY, "alice", 3600, calling_usersig::now_unix());
    // Claims another app outright.
    login_refused(addr, APP + 1, "alice", &other, "wrong_app").await;
    // Claims our app with a signature made for another.
    login_refused(addr, APP, "alice", &other, "wrong_app").await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_user_id_and_version_are_refused() {
    let server = start().await;
    let addr = server.local_addr();
    login_refused(addr, APP, "no spaces", "x", "invalid_user_id").await;
    login_refused(addr, APP, "", "x", "invalid_user_id").await;
    // 32 bytes is the limit, checked before the signature.
    let (longest, too_long) = ("a".repeat(32), "a".repeat(33));
    login_refused(addr, APP, &too_long, &sig(&too_long), "invalid_user_id").await;
    login_as(addr, &longest).await;
    let mut ws = connect(addr).await;
    send(
        &mut ws,
        json!({"type":"login","id":"L","sdk_app_id":APP,"user_id":"alice","user_sig":sig("alice"),"protocol":99}),
    )
    .await;
    expect_login_refused(&mut ws, "unsupported_version").await;
    server.shutdown().await;
}

#[tokio::test]
async fn nothing_but_login_before_login() {
    let server = start().await;
    let addr = server.local_addr();
    let _bob = login_as(addr, "bob").await;
    let mut ws = connect(addr).await;
    send(
        &mut ws,
        json!({"type":"send","id":"s1","to":["bob"],"payload":{"x":1}}),
    )
    .await;
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_str()),
        (Some("error"), Some("not_logged_in"), Some("s1"))
    );
    send(&mut ws, json!({"type":"join","id":"j1","room":"r"})).await;
    let e = recv(&mut ws).await;
    assert_eq!(e["code"], "not_logged_in");
    send(&mut ws, json!({"type":"ping","id":"p"})).await;
    assert_eq!(recv(&mut ws).await["code"], "not_logged_in");
    send(&mut ws, json!({"type":"logout","id":"o"})).await;
    assert_eq!(recv(&mut ws).await["id"], "o");
    // The connection stays usable for a login.
    login_frame(&mut ws, APP, "alice", &sig("alice")).await;
    assert_eq!(recv(&mut ws).await["type"], "login_ok");
    // A second login on the same connection is refused without closing.
    login_frame(&mut ws, APP, "alice", &sig("alice")).await;
    assert_eq!(recv(&mut ws).await["code"], "already_logged_in");
    send(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    server.shutdown().await;
}

#[tokio::test]
async fn login_deadline_closes_idle_connection() {
    let server = start_with(|c| c.login_timeout = Duration::from_millis(200)).await;
    let mut ws = connect(server.local_addr()).await;
    assert_eq!(expect_close(&mut ws).await, 4005);
    server.shutdown().await;
}

#[tokio::test]
async fn second_login_kicks_the_first() {
    let server = start().await;
    let addr = server.local_addr();
    let mut first = login_as(addr, "alice").await;
    let mut second = login_as(addr, "alice").await;
    let k = recv(&mut first).await;
    assert_eq!(k["type"], "kicked_out", "{k}");
    assert_eq!(expect_close(&mut first).await, 4002);
    // The new session is the live one: it receives, and the old one's exit
    // did not unregister it.
    let mut bob = login_as(addr, "bob").await;
    send(
        &mut bob,
        json!({"type":"send","id":"m","to":["alice"],"payload":"hi"}),
    )
    .await;
    let m = recv(&mut second).await;
    assert_eq!(
        (m["from"].as_str(), m["payload"].as_str()),
        (Some("bob"), Some("hi"))
    );
    assert_eq!(server.online(), 2);
    assert_eq!(metric(addr, "calling_kicks_total").await, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn routes_one_to_one_and_fan_out_with_verified_sender() {
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;
    let mut carol = login_as(addr, "carol").await;

    // A forged "from" is ignored: the server stamps the verified sender.
    send(
        &mut alice,
        json!({"type":"send","id":"1","from":"mallory","to":["bob"],"payload":{"cmd":"invite","n":[1,2.5]}}),
    )
    .await;
    let m = recv(&mut bob).await;
    assert_eq!(
        m,
        json!({"type":"message","from":"alice","id":"1","payload":{"cmd":"invite","n":[1,2.5]}})
    );

    send(
        &mut bob,
        json!({"type":"send","id":"2","to":["alice","carol","alice"],"payload":[true]}),
    )
    .await;
    for ws in [&mut alice, &mut carol] {
        let m = recv(ws).await;
        assert_eq!(
            m,
            json!({"type":"message","from":"bob","id":"2","payload":[true]})
        );
    }
    // The duplicate recipient got one copy: the next frame alice sees is a pong.
    send(&mut alice, json!({"type":"ping","id":"after"})).await;
    assert_eq!(recv(&mut alice).await["id"], "after");
    assert_eq!(metric(addr, "calling_messages_routed_total").await, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn offline_recipients_are_undeliverable_at_once() {
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;
    // A malformed id names nobody: undeliverable in its place, not an error.
    send(
        &mut alice,
        json!({"type":"send","id":"inv-7","to":["dave","bob","no one!","erin"],"payload":{}}),
    )
    .await;
    let u = recv(&mut alice).await;
    assert_eq!(
        u,
        json!({"type":"undeliverable","id":"inv-7","users":["dave","no one!","erin"]})
    );
    assert_eq!(recv(&mut bob).await["id"], "inv-7");
    // Bad recipient lists are refused, not silently dropped.
    send(
        &mut alice,
        json!({"type":"send","id":"e","to":[],"payload":1}),
    )
    .await;
    let e = recv(&mut alice).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("bad_recipients"), Some("e"))
    );
    assert_eq!(metric(addr, "calling_undeliverable_total").await, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn rooms_enter_leave_and_leave_on_socket_death() {
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;
    let mut carol = login_as(addr, "carol").await;

    send(&mut alice, json!({"type":"join","id":"j","room":"42"})).await;
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"joined","id":"j","room":"42","members":["alice"]})
    );
    send(&mut bob, json!({"type":"join","room":"42"})).await;
    assert_eq!(recv(&mut bob).await["members"], json!(["alice", "bob"]));
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"room_enter","room":"42","user":"bob"})
    );
    send(&mut carol, json!({"type":"join","room":"42"})).await;
    assert_eq!(
        recv(&mut carol).await["members"],
        json!(["alice", "bob", "carol"])
    );
    assert_eq!(recv(&mut alice).await["user"], "carol");
    assert_eq!(recv(&mut bob).await["user"], "carol");

    send(&mut bob, json!({"type":"leave","id":"l","room":"42"})).await;
    assert_eq!(
        recv(&mut bob).await,
        json!({"type":"left","id":"l","room":"42"})
    );
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"room_leave","room":"42","user":"bob"})
    );
    assert_eq!(recv(&mut carol).await["user"], "bob");
    send(&mut bob, json!({"type":"leave","id":"l2","room":"42"})).await;
    assert_eq!(recv(&mut bob).await["code"], "not_in_room");

    // Carol's socket dies without a close handshake.
    drop(carol);
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"room_leave","room":"42","user":"carol"})
    );

    send(
        &mut alice,
        json!({"type":"join","id":"bad","room":"a\u{1}b"}),
    )
    .await;
    assert_eq!(recv(&mut alice).await["code"], "invalid_room");
    server.shutdown().await;
}

#[tokio::test]
async fn room_limits_are_enforced() {
    let server = start_with(|c| {
        c.limits.max_room_members = 2;
        c.limits.max_rooms_per_user = 1;
    })
    .await;
    let addr = server.local_addr();
    let mut a = login_as(addr, "a").await;
    let mut b = login_as(addr, "b").await;
    let mut c = login_as(addr, "c").await;
    send(&mut a, json!({"type":"join","room":"r"})).await;
    recv_type(&mut a, "joined").await;
    send(&mut b, json!({"type":"join","room":"r"})).await;
    recv_type(&mut b, "joined").await;
    send(&mut c, json!({"type":"join","id":"x","room":"r"})).await;
    assert_eq!(recv(&mut c).await["code"], "room_full");
    send(&mut a, json!({"type":"join","id":"y","room":"other"})).await;
    assert_eq!(recv_type(&mut a, "error").await["code"], "too_many_rooms");
    server.shutdown().await;
}

#[tokio::test]
async fn heartbeat_silence_closes_the_connection() {
    let server = start_with(|c| c.heartbeat_timeout = Duration::from_millis(300)).await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    // Alice sends nothing more and is dropped.
    let code = expect_close(&mut alice).await;
    assert_eq!(code, 4004);
    assert!(metric(addr, "calling_heartbeat_timeouts_total").await >= 1);
    server.shutdown().await;
}

#[tokio::test]
async fn login_expiry_ends_the_session() {
    let server = start().await;
    let mut ws = connect(server.local_addr()).await;
    // Valid for one to two more seconds.
    let now = calling_usersig::now_unix();
    let s = calling_usersig::generate(APP, KEY, "alice", 12, now - 10);
    login_frame(&mut ws, APP, "alice", &s).await;
    assert_eq!(recv(&mut ws).await["type"], "login_ok");
    assert_eq!(recv(&mut ws).await["type"], "login_expired");
    assert_eq!(expect_close(&mut ws).await, 4003);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_unknown_and_oversized_frames_get_errors_and_lose_nothing() {
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;

    send_raw(&mut alice, Message::text("{not json")).await;
    assert_eq!(recv(&mut alice).await["code"], "bad_frame");
    send_raw(&mut alice, Message::text("[1,2,3]")).await;
    assert_eq!(recv(&mut alice).await["code"], "bad_frame");
    send(&mut alice, json!({"type":"dance","id":"d1"})).await;
    let e = recv(&mut alice).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unknown_type"), Some("d1"))
    );
    send(
        &mut alice,
        json!({"type":"send","id":"nopayload","to":["bob"]}),
    )
    .await;
    let e = recv(&mut alice).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("bad_frame"), Some("nopayload"))
    );
    send_raw(
        &mut alice,
        Message::Binary(Bytes::from_static(&[0xff, 0xfe, 0x00])),
    )
    .await;
    assert_eq!(recv(&mut alice).await["code"], "bad_frame");
    let big = "x".repeat(70 * 1024);
    send(
        &mut alice,
        json!({"type":"send","id":"big","to":["bob"],"payload":big}),
    )
    .await;
    assert_eq!(recv(&mut alice).await["code"], "too_large");

    // The connection is healthy and nothing else was lost.
    send(
        &mut alice,
        json!({"type":"send","id":"ok","to":["bob"],"payload":1}),
    )
    .await;
    let m = recv(&mut bob).await;
    assert_eq!(
        (m["id"].as_str(), m["payload"].as_i64()),
        (Some("ok"), Some(1))
    );
    // Binary frames carrying valid JSON are accepted too.
    send_raw(
        &mut alice,
        Message::Binary(Bytes::from_static(br#"{"type":"ping","id":"b"}"#)),
    )
    .await;
    assert_eq!(recv(&mut alice).await["id"], "b");
    assert_eq!(metric(addr, "calling_frame_errors_total").await, 6);

    // Past the hard limit the frame cannot be read: close 1009, and the
    // server keeps serving others.
    let huge = "y".repeat(2 * 1024 * 1024);
    send_raw(&mut alice, Message::text(huge)).await;
    assert_eq!(recv(&mut alice).await["code"], "too_large");
    assert_eq!(expect_close(&mut alice).await, 1009);
    send(&mut bob, json!({"type":"ping","id":"still"})).await;
    assert_eq!(recv(&mut bob).await["id"], "still");
    login_as(addr, "carol").await;
    server.shutdown().await;
}

#[tokio::test]
async fn flooding_hits_the_rate_limit() {
    let server = start_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.rate_burst = 10;
    })
    .await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await; // the login took one token
    for i in 0..60 {
        send(&mut alice, json!({"type":"ping","id":format!("p{i}")})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..60 {
        let f = recv(&mut alice).await;
        match (f["type"].as_str(), f["code"].as_str()) {
            (Some("pong"), _) => pongs += 1,
            (Some("error"), Some("rate_limited")) => {
                assert!(f["id"].as_str().unwrap().starts_with('p'));
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited >= 40, "pongs {pongs} limited {limited}");
    assert!(pongs >= 9, "pongs {pongs} limited {limited}");
    assert_eq!(metric(addr, "calling_rate_limited_total").await, limited);
    // Others are unaffected.
    let mut bob = login_as(addr, "bob").await;
    send(&mut bob, json!({"type":"ping","id":"b"})).await;
    assert_eq!(recv(&mut bob).await["id"], "b");
    server.shutdown().await;
}

#[tokio::test]
async fn health_metrics_and_unknown_paths() {
    let server = start().await;
    let addr = server.local_addr();
    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    for (family, kind) in [
        ("calling_connections", "gauge"),
        ("calling_logins_ok", "counter"),
        ("calling_logins_failed", "counter"),
        ("calling_messages_routed", "counter"),
        ("calling_undeliverable", "counter"),
        ("calling_kicks", "counter"),
        ("calling_frame_errors", "counter"),
        ("calling_login_duration_seconds", "histogram"),
        ("calling_message_delivery_seconds", "histogram"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} missing: {body}"
        );
    }
    assert!(body.ends_with("# EOF\n"), "{body}");
    let (status, _) = http_get(addr, "/nope").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;
    assert_eq!(metric(addr, "calling_connections").await, 2);
    assert_eq!(metric(addr, "calling_users_online").await, 2);
    assert_eq!(metric(addr, "calling_logins_ok_total").await, 2);
    // Each login is timed, from its accept; a refused one is not.
    assert_eq!(
        metric(addr, "calling_login_duration_seconds_count").await,
        2
    );
    assert_eq!(
        metric(addr, "calling_message_delivery_seconds_count").await,
        0
    );
    send(
        &mut alice,
        json!({"type":"send","id":"m1","to":["bob","carol"],"payload":{"hi":1}}),
    )
    .await;
    assert_eq!(recv_type(&mut bob, "message").await["id"], "m1");
    assert_eq!(recv_type(&mut alice, "undeliverable").await["id"], "m1");
    // One copy was delivered (carol is offline): one delivery timed.
    assert_eq!(
        metric(addr, "calling_message_delivery_seconds_count").await,
        1
    );
    // Every plain request counts, the one reading the metric included.
    assert_eq!(metric(addr, "calling_http_requests_total").await, 10);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_going_away() {
    let server = start().await;
    let mut alice = login_as(server.local_addr(), "alice").await;
    let stop = tokio::spawn(server.shutdown());
    assert_eq!(expect_close(&mut alice).await, 1001);
    tokio::time::timeout(WAIT, stop).await.unwrap().unwrap();
}

#[tokio::test]
async fn invalid_utf8_text_gets_an_error_then_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let bad = Frame::message(
        Bytes::from_static(&[b'{', 0xc3, 0x28, b'}']),
        OpCode::Data(Data::Text),
        true,
    );
    send_raw(&mut alice, Message::Frame(bad)).await;
    let e = recv(&mut alice).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_frame"))
    );
    assert_eq!(expect_close(&mut alice).await, 1007);
    // The server is fine and alice can come back.
    login_as(addr, "alice").await;
    assert_eq!(metric(addr, "calling_frame_errors_total").await, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let server = start_with(|c| {
        c.heartbeat_timeout = Duration::from_millis(300);
        c.limits.rate_per_sec = 100_000;
        c.limits.rate_burst = 100_000;
    })
    .await;
    let addr = server.local_addr();
    let _alice = login_as(addr, "alice").await; // never reads again
    let mut bob = login_as(addr, "bob").await;
    let chunk = "z".repeat(60 * 1024);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut i = 0u32;
    // Keep bob busy (and alive) until the server gives up on alice, whose
    // socket buffers fill up.
    while server.online() == 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice was never dropped"
        );
        send(
            &mut bob,
            json!({"type":"send","id":i.to_string(),"to":["alice"],"payload":chunk}),
        )
        .await;
        i += 1;
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(server.online(), 1);
    send(&mut bob, json!({"type":"ping","id":"alive"})).await;
    assert_eq!(recv_type(&mut bob, "pong").await["id"], "alive");
    server.shutdown().await;
}

#[tokio::test]
async fn payloads_are_forwarded_byte_for_byte() {
    let server = start().await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let mut bob = login_as(addr, "bob").await;
    // Key order, spacing, number spelling and a null payload survive as sent.
    for payload in [r#"{"z":1,  "a":[1.0e3, -0.0]}"#, "null", r#""\u00e9""#] {
        let frame = format!(r#"{{"type":"send","id":"p","to":["bob"],"payload":{payload}}}"#);
        send_raw(&mut alice, Message::text(frame)).await;
        let got = recv_text(&mut bob).await;
        assert_eq!(
            got,
            format!(r#"{{"type":"message","from":"alice","id":"p","payload":{payload}}}"#)
        );
    }
    server.shutdown().await;
}
