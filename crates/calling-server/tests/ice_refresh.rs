//! `ice_refresh`: a logged-in client asks for fresh STUN/TURN servers and
//! gets TURN REST credentials issued now; `WsTransport` does it by itself
//! before the credentials of `login_ok` expire.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::time::Duration;

use base64::Engine as _;
use calling_server::TurnConfig;
use calling_signal::{Transport, WsConfig, WsTransport};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;

const TURN_SECRET: &str = "refresh-test-secret";
// Loopback, never contacted: these tests only read the credentials.
const TURN_URL: &str = "turn:127.0.0.1:3478?transport=udp";

/// The TURN REST API password, computed here independently of the server.
fn rest_password(username: &str) -> String {
    rest_password_with(TURN_SECRET, username)
}

fn rest_password_with(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn now_unix() -> u64 {
    calling_usersig::now_unix()
}

async fn server_with_ttl(ttl: Duration) -> calling_server::RunningServer {
    start_with(|c| {
        let mut turn = TurnConfig::new(vec![TURN_URL.into()], TURN_SECRET);
        turn.ttl = ttl;
        c.ice.stun_urls = vec!["stun:127.0.0.1:3478".into()];
        c.ice.turn = Some(turn);
    })
    .await
}

#[tokio::test]
async fn ice_refresh_before_login_is_refused_and_the_connection_stays() {
    let server = server_with_ttl(Duration::from_secs(600)).await;
    let mut ws = connect(server.local_addr()).await;
    send(&mut ws, json!({"type":"ice_refresh","id":"i1"})).await;
    let e = recv(&mut ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "not_logged_in");
    assert_eq!(e["id"], "i1");
    // Nothing was issued, and the client can still log in.
    login_frame(&mut ws, APP, "alice", &sig("alice")).await;
    assert_eq!(recv(&mut ws).await["type"], "login_ok");
    server.shutdown().await;
}

#[tokio::test]
async fn ice_refresh_answers_with_credentials_issued_now_for_the_session_user() {
    let server = server_with_ttl(Duration::from_secs(600)).await;
    let mut ws = login_as(server.local_addr(), "alice").await;
    let before = now_unix();
    send(&mut ws, json!({"type":"ice_refresh","id":"i7"})).await;
    let answer = recv_type(&mut ws, "ice_servers").await;
    assert_eq!(answer["id"], "i7");
    let servers = answer["ice_servers"].as_array().unwrap();
    assert_eq!(servers[0], json!({"urls":["stun:127.0.0.1:3478"]}));
    let turn = &servers[1];
    assert_eq!(turn["urls"], json!([TURN_URL]));
    let expires_at = turn["expires_at"].as_u64().unwrap();
    assert!(
        (before + 600..=now_unix() + 600).contains(&expires_at),
        "{expires_at}"
    );
    let username = turn["username"].as_str().unwrap();
    assert_eq!(username, format!("{expires_at}:alice"));
    assert_eq!(turn["credential"], rest_password(username));
    // An id-less request is answered too, without one.
    send(&mut ws, json!({"type":"ice_refresh"})).await;
    let bare = recv_type(&mut ws, "ice_servers").await;
    assert!(bare.get("id").is_none(), "{bare}");
    server.shutdown().await;
}

#[tokio::test]
async fn without_ice_servers_configured_the_answer_is_an_empty_list() {
    let server = start().await;
    let mut ws = login_as(server.local_addr(), "bob").await;
    send(&mut ws, json!({"type":"ice_refresh","id":"x"})).await;
    let answer = recv_type(&mut ws, "ice_servers").await;
    assert_eq!(answer["ice_servers"], json!([]));
    server.shutdown().await;
}

/// The credential of a list: (username, password, expires_at).
fn turn_credential(servers: &[calling_signal::protocol::IceServer]) -> (String, String, u64) {
    let turn = servers
        .iter()
        .find(|s| s.username.is_some())
        .expect("a TURN server with credentials");
    (
        turn.username.clone().unwrap(),
        turn.credential.clone().unwrap(),
        turn.expires_at.unwrap(),
    )
}

#[tokio::test]
async fn ws_transport_replaces_its_credentials_before_they_expire() {
    let server = server_with_ttl(Duration::from_secs(5)).await;
    let url = format!("ws://{}/ws", server.local_addr());
    let alice = WsTransport::connect(WsConfig::new(url, APP, uid("alice"), sig("alice")))
        .await
        .unwrap();
    let first = alice.ice_servers();
    let (_, _, first_expiry) = turn_credential(&first);

    // Polled, bounded by the credential's own lifetime: a list still in
    // use once it expired is the failure this test is about.
    let fresh = loop {
        let now = now_unix();
        let list = alice.ice_servers();
        if list != first {
            assert!(
                now < first_expiry,
                "replaced only at {now}, after the old credential expired at {first_expiry}"
            );
            break list;
        }
        assert!(
            now < first_expiry,
            "still the login_ok credentials at {now}; they expired at {first_expiry}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (username, password, expires_at) = turn_credential(&fresh);
    assert!(expires_at > first_expiry, "{expires_at} <= {first_expiry}");
    assert_eq!(username, format!("{expires_at}:alice"));
    assert_eq!(password, rest_password(&username));
    // The STUN entry is kept as announced.
    assert_eq!(fresh[0].urls, ["stun:127.0.0.1:3478"]);

    // And again: the schedule follows the fresh list.
    let again = loop {
        let list = alice.ice_servers();
        if list != fresh {
            break list;
        }
        assert!(
            now_unix() < expires_at,
            "the refreshed list was never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(turn_credential(&again).2 > expires_at);
    alice.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_reconnect_brings_the_new_servers_credentials_and_restarts_the_schedule() {
    let ttl_server = |secret: &'static str, ttl: u64| {
        move |c: &mut calling_server::Config| {
            let mut turn = TurnConfig::new(vec![TURN_URL.into()], secret);
            turn.ttl = Duration::from_secs(ttl);
            c.ice.turn = Some(turn);
        }
    };
    let server = start_with(ttl_server("secret-a", 600)).await;
    let addr = server.local_addr();
    let url = format!("ws://{addr}/ws");
    let alice = WsTransport::connect(WsConfig::new(url, APP, uid("alice"), sig("alice")))
        .await
        .unwrap();
    let mut events = alice.take_events().unwrap();
    let (username, password, _) = turn_credential(&alice.ice_servers());
    assert_eq!(password, rest_password_with("secret-a", &username));
    server.shutdown().await;
    assert_eq!(
        next_event(&mut events).await,
        calling_signal::TransportEvent::Disconnected
    );

    // The server comes back with another secret and a short lifetime.
    let server = start_with(|c| {
        ttl_server("secret-b", 5)(c);
        c.listen = addr;
    })
    .await;
    assert_eq!(
        next_event(&mut events).await,
        calling_signal::TransportEvent::Reconnected
    );
    let relogin = alice.ice_servers();
    let (username, password, expires_at) = turn_credential(&relogin);
    assert_eq!(password, rest_password_with("secret-b", &username));
    // Its schedule is the new list's: a refresh before those 5 s are up.
    let fresh = loop {
        let list = alice.ice_servers();
        if list != relogin {
            break list;
        }
        assert!(
            now_unix() < expires_at,
            "the re-login's credentials were not renewed before they expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (username, password, later) = turn_credential(&fresh);
    assert!(later > expires_at);
    assert_eq!(password, rest_password_with("secret-b", &username));
    alice.close().await;
    server.shutdown().await;
}

async fn next_event(
    events: &mut tokio::sync::mpsc::Receiver<calling_signal::TransportEvent>,
) -> calling_signal::TransportEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap()
}
