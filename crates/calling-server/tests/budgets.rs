//! What one client can make the server hold or do for others: an
//! outbound queue bounded in bytes (a client that stops reading is cut
//! off at its budget) and a fan-out budget per sender.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;

/// A logged-in client with a small socket receive buffer, so that the
/// kernel holds little of what it does not read.
async fn login_small_buffer(addr: SocketAddr, user: &str) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .unwrap()
        .unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    login_frame(&mut ws, APP, user, &sig(user)).await;
    assert_eq!(recv(&mut ws).await["type"], "login_ok");
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_at_its_byte_budget() {
    let server = start_with(|c| {
        c.outbound_queue_bytes = 64 * 1024;
        c.limits.rate_per_sec = 100_000;
        c.limits.rate_burst = 100_000;
        c.fanout_bytes_per_sec = usize::MAX / 2;
        c.fanout_burst_bytes = usize::MAX / 2;
    })
    .await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    // Bob logs in and then reads nothing.
    let _bob = login_small_buffer(addr, "bob").await;
    let payload = "p".repeat(32 * 1024);
    let mut sent = 0;
    let mut refused = None;
    // What the sockets hold is bounded by the kernel's buffers (a few
    // MiB); past them the server's budget for bob is met, and bob is
    // either reported congested or already cut off (offline). The 40 MiB
    // cap ends the test if neither happens.
    while sent < 1280 && refused.is_none() {
        send(
            &mut alice,
            json!({"type":"send","id":format!("m{sent}"),"to":["bob"],"payload":payload}),
        )
        .await;
        sent += 1;
        // Alice's answers as they come, without waiting.
        while let Ok(Some(Ok(m))) = tokio::time::timeout(
            std::time::Duration::ZERO,
            futures_util::StreamExt::next(&mut alice),
        )
        .await
        {
            let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
            if v["type"] == "undeliverable" {
                refused = Some(v);
            }
        }
    }
    let v = match refused {
        Some(v) => v,
        None => recv_type(&mut alice, "undeliverable").await,
    };
    assert!(
        v["congested"] == json!(["bob"]) || v["users"] == json!(["bob"]),
        "{v}"
    );
    eprintln!("bob refused after {sent} frames of 32 KiB: {v}");
    // Bob was cut off, not left holding the server's memory; once his
    // session is gone he is offline.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.metrics().slow_readers_cut.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob was never cut off"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.online() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "bob still online");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    send(
        &mut alice,
        json!({"type":"send","id":"after","to":["bob"],"payload":1}),
    )
    .await;
    // Answers to the sends before may still be on their way (refused as
    // congested, or as offline once bob was gone): skip to this one's.
    let v = loop {
        let v = recv_type(&mut alice, "undeliverable").await;
        if v["id"] == "after" {
            break v;
        }
        assert!(
            v["congested"] == json!(["bob"]) || v["users"] == json!(["bob"]),
            "{v}"
        );
    };
    assert_eq!(
        (v["id"].as_str(), &v["users"]),
        (Some("after"), &json!(["bob"])),
        "{v}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_sender_has_a_fan_out_budget_in_bytes() {
    let server = start_with(|c| {
        c.fanout_bytes_per_sec = 1;
        c.fanout_burst_bytes = 100 * 1024;
        c.limits.rate_per_sec = 1000;
        c.limits.rate_burst = 1000;
    })
    .await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    let mut users = Vec::new();
    for u in ["b1", "b2", "b3", "b4"] {
        users.push(login_as(addr, u).await);
    }
    // 10 KiB to 4 users is 40 KiB of fan-out: two such sends fit in the
    // 100 KiB burst, the third does not.
    let payload = "q".repeat(10 * 1024);
    for i in 0..3 {
        send(
            &mut alice,
            json!({"type":"send","id":format!("s{i}"),"to":["b1","b2","b3","b4"],"payload":payload}),
        )
        .await;
    }
    let e = recv(&mut alice).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("rate_limited"), Some("s2")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("fan-out"));
    for ws in &mut users {
        assert_eq!(recv_type(ws, "message").await["id"], "s0");
        assert_eq!(recv_type(ws, "message").await["id"], "s1");
    }
    // One recipient is a smaller cost: 10 KiB still fits.
    send(
        &mut alice,
        json!({"type":"send","id":"one","to":["b1"],"payload":payload}),
    )
    .await;
    assert_eq!(recv_type(&mut users[0], "message").await["id"], "one");
    assert_eq!(server.metrics().fanout_limited.get(), 1);
    server.shutdown().await;
}
