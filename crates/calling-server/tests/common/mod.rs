//! Shared helpers: an embedded server on 127.0.0.1:0 and a raw WebSocket
//! client that speaks the protocol frame by frame.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use calling_server::{Config, RunningServer, Server};
use calling_signal::UserId;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const APP: u64 = 1_400_000_000;
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn config() -> Config {
    let mut c = Config::new(APP, KEY);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

pub async fn start() -> RunningServer {
    Server::bind(config()).await.unwrap()
}

pub async fn start_with(f: impl FnOnce(&mut Config)) -> RunningServer {
    let mut c = config();
    f(&mut c);
    Server::bind(c).await.unwrap()
}

pub fn uid(user: &str) -> UserId {
    UserId::new(user).unwrap()
}

pub fn sig(user: &str) -> String {
    calling_usersig::generate(APP, KEY, user, 3600, calling_usersig::now_unix())
}

pub async fn connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    ws
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

pub async fn send_raw(ws: &mut Ws, m: Message) {
    ws.send(m).await.unwrap();
}

/// Next data frame as JSON; panics on close or after [`WAIT`].
pub async fn recv(ws: &mut Ws) -> Value {
    serde_json::from_str(&recv_text(ws).await).unwrap()
}

/// Next frame of `kind`, skipping others.
pub async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = recv(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Reads until the close frame and returns its code; panics on a data frame
/// of type other than those listed in `allow`.
pub async fn expect_close(ws: &mut Ws) -> u16 {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for close");
        match m {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("websocket error before close: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Sends a `login` frame with id `L` and no `protocol` (it defaults to 1).
pub async fn login_frame(ws: &mut Ws, app: u64, user: &str, sig: &str) {
    send(
        ws,
        json!({"type":"login","id":"L","sdk_app_id":app,"user_id":user,"user_sig":sig}),
    )
    .await;
}

pub async fn login_as(addr: SocketAddr, user: &str) -> Ws {
    let mut ws = connect(addr).await;
    login_frame(&mut ws, APP, user, &sig(user)).await;
    let ok = recv(&mut ws).await;
    assert_eq!(ok["type"], "login_ok", "{ok}");
    assert_eq!(ok["user_id"], user);
    ws
}

/// A plain HTTP GET; returns the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Value of one metric in `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Next text frame, unparsed; panics on close or after [`WAIT`].
pub async fn recv_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("websocket error");
        match m {
            Message::Text(t) => return t.to_string(),
            Message::Close(c) => panic!("closed while waiting for a frame: {c:?}"),
            _ => continue,
        }
    }
}
