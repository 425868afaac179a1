//! The web demo's HTTP side: the embedded page files, and the demo-mode
//! UserSig endpoint (off unless demo mode is on; the UserSigs it hands out
//! log in).

#![allow(clippy::unwrap_used)]

mod common;

use calling_server::DemoMode;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn serves_the_demo_page_and_its_scripts() {
    let server = start().await;
    let addr = server.local_addr();
    let (status, body) = http_get(addr, "/").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("<script type=\"module\" src=\"/app.js\">"));
    let (status, index) = http_get(addr, "/index.html?x=1").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(index, body);
    for (path, needle) in [
        ("/app.js", "import TRTCCalling from './trtc-calling.js'"),
        ("/calling.js", "export class CallingClient"),
        ("/trtc-calling.js", "from './calling.js'"),
        ("/style.css", ".videos"),
    ] {
        let (status, body) = http_get(addr, path).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    // Nothing outside the embedded list is served: no path traversal.
    for path in ["/../Cargo.toml", "/web/app.js", "/app.js/", "/APP.JS"] {
        let (status, _) = http_get(addr, path).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn usersig_endpoint_is_off_without_demo_mode() {
    let server = start().await;
    let (status, body) = http_get(server.local_addr(), "/demo/usersig?user_id=alice").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "demo_off");
    assert!(body.get("user_sig").is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn demo_usersig_logs_in_and_bad_user_ids_are_refused() {
    let server = start_with(|c| c.demo = Some(DemoMode::new(KEY))).await;
    let addr = server.local_addr();
    let (status, body) = http_get(addr, "/demo/usersig?x=1&user_id=dave_01").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["sdk_app_id"], APP);
    assert_eq!(body["user_id"], "dave_01");
    let user_sig = body["user_sig"].as_str().unwrap();
    assert_ne!(
        user_sig,
        sig("dave_01"),
        "signed by the server with its demo lifetime"
    );

    let mut ws = connect(addr).await;
    login_frame(&mut ws, APP, "dave_01", user_sig).await;
    let ok = recv_type(&mut ws, "login_ok").await;
    assert_eq!(ok["user_id"], "dave_01");

    // The signature is for dave_01 only.
    let mut other = connect(addr).await;
    login_frame(&mut other, APP, "erin", user_sig).await;
    let err = recv_type(&mut other, "error").await;
    assert_eq!(err["code"], "bad_signature");

    for query in [
        "",
        "user_id=",
        "user=alice",
        "user_id=al%20ice",
        "user_id=%C3%A9",
        "user_id=a/b",
    ] {
        let (status, body) = http_get(addr, &format!("/demo/usersig?{query}")).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{query}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "invalid_user_id", "{query}");
    }
    // The limit is 32 bytes, as for logins, and the refusal says so.
    let (status, _) = http_get(addr, &format!("/demo/usersig?user_id={}", "a".repeat(32))).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, body) = http_get(addr, &format!("/demo/usersig?user_id={}", "a".repeat(33))).await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "invalid_user_id");
    assert_eq!(
        body["message"],
        "user_id must be 1 to 32 ASCII letters, digits, '-' or '_'"
    );
    // The server is still healthy after all that.
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    server.shutdown().await;
}
