//! The HTTP side of the listen port, request by request as clients and
//! attackers send them: the WebSocket upgrade and its checks (method,
//! headers, version, key, `Origin`), `HEAD`, bare-LF requests, CORS on the
//! client script, oversized heads, methods that are not served, and a
//! login pipelined behind the upgrade request.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const KEY_HEADER: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Sends `request` as is and reads the whole answer (the server closes).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server neither answered nor closed")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// The value of header `name` in `answer` (names compared in any case).
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_path_is_told_to_upgrade() {
    let server = start().await;
    let addr = server.local_addr();
    let answer = raw(addr, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&answer), "HTTP/1.1 426 Upgrade Required", "{answer}");
    assert_eq!(header(&answer, "upgrade"), Some("websocket"));
    assert!(body(&answer).contains("WebSocket"));

    // A WebSocket version other than 13 is told which one is spoken.
    let answer = raw(
        addr,
        format!("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n{KEY_HEADER}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), "HTTP/1.1 426 Upgrade Required", "{answer}");
    assert_eq!(header(&answer, "sec-websocket-version"), Some("13"));

    // No key, or one that is not 16 bytes of base64: 400.
    for key in ["", "Sec-WebSocket-Key: c2hvcnQ=\r\n"] {
        let answer = raw(
            addr,
            format!("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{key}\r\n").as_bytes(),
        )
        .await;
        assert_eq!(
            status(&answer),
            "HTTP/1.1 400 Bad Request",
            "{key}: {answer}"
        );
    }

    // Another method on /ws: 405 with what is allowed.
    let answer = raw(
        addr,
        b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(
        status(&answer),
        "HTTP/1.1 405 Method Not Allowed",
        "{answer}"
    );
    assert_eq!(header(&answer, "allow"), Some("GET"));

    assert_eq!(metric(addr, "calling_upgrades_refused_total").await, 5);
    // The server is still there for a real client.
    let _ws = login_as(addr, "alice").await;
    server.shutdown().await;
}

#[tokio::test]
async fn head_lf_only_requests_and_methods_are_answered() {
    let server = start().await;
    let addr = server.local_addr();
    let get = raw(addr, b"GET /calling.js HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&get), "HTTP/1.1 200 OK");
    let length: usize = header(&get, "content-length").unwrap().parse().unwrap();
    assert_eq!(length, body(&get).len());
    assert!(length > 1000);

    // HEAD: the same head, no body.
    let head = raw(addr, b"HEAD /calling.js HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&head), "HTTP/1.1 200 OK", "{head}");
    assert_eq!(
        header(&head, "content-length"),
        Some(length.to_string().as_str())
    );
    assert_eq!(header(&head, "content-type"), header(&get, "content-type"));
    assert_eq!(body(&head), "");

    // Lines ended by a bare LF, as some hand-written clients send them.
    let lf = raw(addr, b"GET /healthz HTTP/1.1\nHost: x\n\n").await;
    assert_eq!(status(&lf), "HTTP/1.1 200 OK", "{lf}");
    assert_eq!(body(&lf), "ok\n");
    let lf = raw(addr, b"GET /ws HTTP/1.1\nHost: x\n\n").await;
    assert_eq!(status(&lf), "HTTP/1.1 426 Upgrade Required", "{lf}");

    // HTTP/1.0 gets an answer too.
    let old = raw(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(
        old.starts_with("HTTP/1.0 200 OK") || old.starts_with("HTTP/1.1 200 OK"),
        "{old}"
    );

    // Methods nothing here serves.
    let post = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(status(&post), "HTTP/1.1 405 Method Not Allowed", "{post}");
    assert_eq!(header(&post, "allow"), Some("GET, HEAD"));

    // A head larger than the server buffers: 431, and the server lives on.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let answer = raw(addr, big.as_bytes()).await;
    assert_eq!(
        status(&answer),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{answer}"
    );

    // Garbage instead of a request line: 400, not silence.
    let answer = raw(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    )
    .await;
    assert!(
        answer.is_empty() || status(&answer) == "HTTP/1.1 400 Bad Request",
        "{answer}"
    );

    let _ws = login_as(addr, "alice").await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_script_may_be_loaded_by_other_origins_and_the_page_may_not() {
    let server = start().await;
    let addr = server.local_addr();
    // Both modules of the package: the API and the client it imports.
    for request in [
        &b"GET /calling.js HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n"[..],
        &b"GET /trtc-calling.js HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n"[..],
    ] {
        let script = raw(addr, request).await;
        assert_eq!(status(&script), "HTTP/1.1 200 OK");
        assert_eq!(header(&script, "access-control-allow-origin"), Some("*"));
    }
    let page = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n",
    )
    .await;
    assert_eq!(status(&page), "HTTP/1.1 200 OK");
    assert_eq!(header(&page, "access-control-allow-origin"), None);
    let sig = raw(
        addr,
        b"GET /demo/usersig?user_id=a HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(header(&sig, "access-control-allow-origin"), None);
    server.shutdown().await;
}

/// Opens a WebSocket with `origin` (none: no header); the HTTP status of
/// a refusal, or 101.
async fn upgrade_from(addr: SocketAddr, host: &str, origin: Option<&str>) -> u16 {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Host", HeaderValue::from_str(host).unwrap());
    if let Some(origin) = origin {
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
    {
        Ok((_, res)) => res.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn websocket_upgrades_from_other_origins_are_refused_unless_allowed() {
    let server = start_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let addr = server.local_addr();
    let host = addr.to_string();
    // Native clients send no Origin.
    assert_eq!(upgrade_from(addr, &host, None).await, 101);
    // The server's own pages.
    assert_eq!(
        upgrade_from(addr, &host, Some(&format!("http://{addr}"))).await,
        101
    );
    assert_eq!(
        upgrade_from(addr, "calls.example", Some("https://calls.example")).await,
        101
    );
    // A configured origin.
    assert_eq!(
        upgrade_from(addr, &host, Some("https://app.example")).await,
        101
    );
    // Anyone else's page, a look-alike, a sandboxed frame.
    assert_eq!(
        upgrade_from(addr, &host, Some("https://evil.example")).await,
        403
    );
    assert_eq!(
        upgrade_from(addr, &host, Some("https://app.example.evil")).await,
        403
    );
    assert_eq!(upgrade_from(addr, &host, Some("null")).await, 403);
    assert_eq!(
        upgrade_from(addr, "calls.example", Some("http://calls.example:8081")).await,
        403
    );
    assert_eq!(metric(addr, "calling_upgrades_refused_total").await, 4);
    server.shutdown().await;

    let server = start_with(|c| c.allowed_origins = vec!["*".into()]).await;
    let addr = server.local_addr();
    assert_eq!(
        upgrade_from(addr, &addr.to_string(), Some("https://evil.example")).await,
        101
    );
    server.shutdown().await;
}

/// A client text frame (masked, as clients must send them).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test]
async fn a_login_sent_right_behind_the_upgrade_request_is_read() {
    let server = start().await;
    let addr = server.local_addr();
    let login = serde_json::json!({
        "type": "login", "id": "L", "sdk_app_id": APP,
        "user_id": "alice", "user_sig": sig("alice"),
    })
    .to_string();
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY_HEADER}\r\n"
    )
    .into_bytes();
    bytes.extend(masked_text(login.as_bytes()));
    let mut s = TcpStream::connect(addr).await.unwrap();
    // One write: the login arrives in the same segment as the request.
    s.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                return false;
            }
            got.extend_from_slice(&chunk[..n]);
            if got.windows(8).any(|w| w == b"login_ok") {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols"),
        "{text}"
    );
    assert_eq!(
        header(&text, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(found, "no login_ok after a pipelined login: {text}");
    server.shutdown().await;
}
