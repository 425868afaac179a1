//! What a connection that has not logged in may cost the server: caps on
//! such connections (over the server and per source address), a cap on
//! the connections of one address, and a byte budget before the login.
//! Sources other than 127.0.0.1 are other loopback addresses
//! (127.0.0.0/8 is all loopback on Linux).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn tcp_from(src: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .unwrap()
        .unwrap()
}

/// A WebSocket from `src`, or the error its handshake ended with.
async fn ws_from(src: IpAddr, addr: SocketAddr) -> Result<Ws, String> {
    let tcp = tcp_from(src, addr).await;
    let url = format!("ws://{addr}/ws");
    match tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

/// Logs `ws` in as `user`.
async fn log_in(ws: &mut Ws, user: &str) {
    login_frame(ws, APP, user, &sig(user)).await;
    let ok = recv(ws).await;
    assert_eq!(ok["type"], "login_ok", "{ok}");
}

/// Retries a WebSocket from `src` until it is admitted (the server sees a
/// dropped connection go when it reads its end).
async fn ws_eventually(src: IpAddr, addr: SocketAddr) -> Ws {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match ws_from(src, addr).await {
            Ok(ws) => return ws,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("still refused: {e}"),
        }
    }
}

#[tokio::test]
async fn connections_waiting_for_a_login_are_capped_per_address() {
    let server = start_with(|c| c.max_pending_logins_per_ip = 2).await;
    let addr = server.local_addr();
    // Logged-in connections do not count as waiting.
    let mut users = Vec::new();
    for u in ["alice", "bob", "carol"] {
        users.push(login_as(addr, u).await);
    }
    // Two that never log in fill the address's share...
    let idle1 = tcp_from(ip(1), addr).await;
    let _idle2 = tcp_from(ip(1), addr).await;
    let refused = ws_from(ip(1), addr).await;
    assert!(refused.is_err(), "a third waiting connection was admitted");
    assert!(server.metrics().connections_refused.get() >= 1);
    // ...not another address's.
    let mut other = ws_from(ip(2), addr).await.unwrap();
    log_in(&mut other, "dave").await;
    // One goes: a place is free again.
    drop(idle1);
    let mut back = ws_eventually(ip(1), addr).await;
    log_in(&mut back, "erin").await;
    // The logged-in ones were never disturbed.
    send(&mut users[0], json!({"type":"ping","id":"a"})).await;
    assert_eq!(recv(&mut users[0]).await["id"], "a");
    server.shutdown().await;
}

#[tokio::test]
async fn past_the_servers_cap_the_longest_waiting_connection_makes_room() {
    use tokio::io::AsyncReadExt;
    let server = start_with(|c| {
        c.max_pending_logins = 2;
        c.max_pending_logins_per_ip = 0;
    })
    .await;
    let addr = server.local_addr();
    let mut idle1 = tcp_from(ip(11), addr).await;
    let _idle2 = tcp_from(ip(12), addr).await;
    // Full: the newcomer is admitted, and the connection that has waited
    // longest without logging in is closed. Idle connections cannot lock
    // out a client that logs in promptly.
    let mut ws = ws_from(ip(13), addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, idle1.read(&mut buf))
        .await
        .expect("the oldest waiting connection was not closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    log_in(&mut ws, "alice").await;
    let mut next = ws_from(ip(14), addr).await.unwrap();
    log_in(&mut next, "bob").await;
    // A logged-in connection is never the one to go.
    send(&mut ws, json!({"type":"ping","id":"still"})).await;
    assert_eq!(recv(&mut ws).await["id"], "still");
    assert!(server.metrics().connections_refused.get() == 0);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_of_one_address_are_capped() {
    let server = start_with(|c| c.max_connections_per_ip = 2).await;
    let addr = server.local_addr();
    let mut a = ws_from(ip(21), addr).await.unwrap();
    log_in(&mut a, "alice").await;
    let mut b = ws_from(ip(21), addr).await.unwrap();
    log_in(&mut b, "bob").await;
    assert!(ws_from(ip(21), addr).await.is_err(), "a third was admitted");
    let mut c = ws_from(ip(22), addr).await.unwrap();
    log_in(&mut c, "carol").await;
    drop(a);
    let mut d = ws_eventually(ip(21), addr).await;
    log_in(&mut d, "dave").await;
    server.shutdown().await;
}

#[tokio::test]
async fn too_much_before_the_login_closes_with_1009_and_after_it_the_frame_limits_apply() {
    let server = start_with(|c| c.pre_login_bytes = 16 * 1024).await;
    let addr = server.local_addr();

    // 100 KiB before logging in: the server stops reading at 16 KiB,
    // answers too_large and closes with 1009.
    let mut ws = connect(addr).await;
    send_raw(&mut ws, Message::text("x".repeat(100 * 1024))).await;
    let e = recv(&mut ws).await;
    assert_eq!(e["code"], "too_large", "{e}");
    assert!(e["message"].as_str().unwrap().contains("before logging in"));
    assert_eq!(expect_close(&mut ws).await, 1009);
    assert_eq!(server.metrics().pre_login_overruns.get(), 1);

    // Small frames before the login are within the budget; after the
    // login, frames far past it are fine (up to max_frame_bytes).
    let mut alice = connect(addr).await;
    for i in 0..4 {
        send(&mut alice, json!({"type":"ping","id":format!("p{i}")})).await;
        assert_eq!(recv(&mut alice).await["code"], "not_logged_in");
    }
    log_in(&mut alice, "alice").await;
    let mut bob = login_as(addr, "bob").await;
    for i in 0..3 {
        let payload = "y".repeat(40 * 1024);
        send(
            &mut alice,
            json!({"type":"send","id":format!("s{i}"),"to":["bob"],"payload":payload}),
        )
        .await;
        let m = recv_type(&mut bob, "message").await;
        assert_eq!(m["payload"].as_str().unwrap().len(), 40 * 1024);
    }
    assert_eq!(server.metrics().pre_login_overruns.get(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_comes_before_the_size_check() {
    let server = start_with(|c| {
        c.limits.rate_per_sec = 1;
        c.limits.rate_burst = 3;
    })
    .await;
    let addr = server.local_addr();
    let mut alice = login_as(addr, "alice").await;
    // Frames over max_frame_bytes (64 KiB): the first ones are too large,
    // once the burst is spent they are refused for their rate, without
    // being looked at.
    let big = "z".repeat(70 * 1024);
    for _ in 0..6 {
        send_raw(&mut alice, Message::text(big.clone())).await;
    }
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(recv(&mut alice).await["code"].as_str().unwrap().to_owned());
    }
    assert!(codes.iter().any(|c| c == "too_large"), "{codes:?}");
    assert!(
        codes[3..].iter().all(|c| c == "rate_limited"),
        "past the burst: {codes:?}"
    );
    server.shutdown().await;
}

/// `GET path` on `addr`: the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    http_get(addr, path).await
}

#[tokio::test]
async fn at_the_connection_limit_new_ones_are_refused_and_the_admin_listener_answers() {
    let server = start_with(|c| {
        c.max_connections = Some(3);
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = server.local_addr();
    let admin = server.admin_addr().unwrap();
    let mut held = Vec::new();
    for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
        let mut ws = ws_from(ip(31 + i as u8), addr).await.unwrap();
        log_in(&mut ws, user).await;
        held.push(ws);
    }
    // Full: a new connection is closed at once, from any address.
    assert!(ws_from(ip(40), addr).await.is_err());
    // The admin listener still answers, with the figures.
    let (status, body) = get(admin, "/healthz").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    let (status, body) = get(admin, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let refused: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("calling_connections_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 1, "{body}");
    // It serves nothing else, and /metrics is no longer on the main port.
    assert_eq!(get(admin, "/").await.0, "HTTP/1.1 404 Not Found");
    // One goes: its place comes back, and /metrics is not on the main
    // port (the answer to a plain request there is a 404).
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    let (status, _) = get_when_free(addr, deadline).await;
    assert_eq!(
        status, "HTTP/1.1 404 Not Found",
        "/metrics on the main port"
    );
    server.shutdown().await;
}

/// `GET /metrics` on the main port, retried while the connection limit
/// still counts a connection just closed.
async fn get_when_free(addr: SocketAddr, deadline: tokio::time::Instant) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            return (
                head.lines().next().unwrap_or("").to_owned(),
                body.to_owned(),
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "main port never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
