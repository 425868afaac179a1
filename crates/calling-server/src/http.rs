//! The few plain HTTP paths served on the WebSocket port.
//!
//! The request line is peeked (not consumed) so that `/ws` requests go to
//! tungstenite's handshake untouched; anything else gets a small HTTP/1.1
//! answer written here. Hand-rolled on purpose: a few fixed GET paths (two
//! endpoints, the demo page's embedded files, the demo UserSig) do not
//! justify an HTTP framework in front of every WebSocket.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest request head we accept for plain HTTP paths.
const MAX_HEAD: usize = 8 * 1024;

/// Where a new connection goes.
pub(crate) enum Route {
    /// A WebSocket upgrade on `/ws`.
    WebSocket,
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET` of one of the demo page's files.
    Asset(&'static crate::web::Asset),
    /// `GET /demo/usersig?…`, with the raw query string.
    DemoUserSig(String),
    /// Anything else: 404.
    NotFound,
}

/// Peeks at the request line and decides the route. `None` when the peer
/// sent nothing usable within `deadline`.
pub(crate) async fn route(stream: &TcpStream, deadline: Duration) -> Option<Route> {
    let mut buf = [0u8; 512];
    let line = tokio::time::timeout(deadline, async {
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
                return Some(end);
            }
            if n == buf.len() {
                // A request line longer than our buffer: not one of ours.
                return Some(n);
            }
            // Partial line: peek returns at once while data is pending, so
            // wait a little before looking again.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .ok()??;
    let text = std::str::from_utf8(&buf[..line]).unwrap_or("");
    let mut parts = text.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Some(match (method, path) {
        ("GET", "/ws") => Route::WebSocket,
        ("GET", "/healthz") => Route::Health,
        ("GET", "/metrics") => Route::Metrics,
        ("GET", "/demo/usersig") => Route::DemoUserSig(query.to_owned()),
        ("GET", path) => match crate::web::asset(path) {
            Some(asset) => Route::Asset(asset),
            None => Route::NotFound,
        },
        _ => Route::NotFound,
    })
}

/// Reads the request head, writes a complete response and closes.
pub(crate) async fn respond(
    mut stream: TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    deadline: Duration,
) {
    let _ = tokio::time::timeout(deadline, async {
        // Consume the request so closing does not reset the connection
        // before the client has read the answer.
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
