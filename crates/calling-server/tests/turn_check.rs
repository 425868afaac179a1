//! The TURN secret check against a real coturn on 127.0.0.1: the right
//! secret allocates, a wrong one is `Rejected`, nobody there is
//! `NoAnswer`; credentials from `ice_refresh` work at the relay; and the
//! coturn configuration printed in docs/DEPLOYMENT.md, run as it is (with
//! loopback addresses put in), accepts our credentials.
//!
//! Needs `turnserver` (Debian package coturn; scripts/setup.sh installs it).
//! Without it the tests print a loud SKIPPED banner, and fail under CI.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;
#[path = "support/coturn.rs"]
mod coturn_support;

use std::time::{Duration, Instant};

use calling_server::TurnConfig;
use calling_server::ice::{turn_password, turn_username};
use calling_server::turn_check::{self, TurnCheckError};
use calling_signal::{Transport, UserId, WsConfig, WsTransport};
use common::*;
use coturn_support::*;

const SECRET: &str = "check-test-secret";

fn turn(url: String, secret: &str) -> TurnConfig {
    TurnConfig::new(vec![url], secret)
}

#[tokio::test]
async fn the_right_secret_allocates_a_relay() {
    if prerequisites("the_right_secret_allocates_a_relay").is_err() {
        return;
    }
    let coturn = Coturn::with_secret(SECRET, &[]);
    let results = turn_check::check(&turn(coturn.url(), SECRET), calling_usersig::now_unix()).await;
    assert_eq!(results.len(), 1);
    let (url, result) = &results[0];
    assert_eq!(url, &coturn.url());
    let relayed = result.as_ref().unwrap();
    assert!(relayed.ip().is_loopback(), "{relayed}");
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_with_a_typed_error() {
    if prerequisites("a_wrong_secret_is_rejected_with_a_typed_error").is_err() {
        return;
    }
    let coturn = Coturn::with_secret("the-turn-servers-own-secret", &[]);
    let results = turn_check::check(&turn(coturn.url(), SECRET), calling_usersig::now_unix()).await;
    match &results[0].1 {
        Err(TurnCheckError::Rejected { code, .. }) => assert!([401, 441].contains(code)),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let text = results[0].1.as_ref().unwrap_err().to_string();
    assert!(text.contains("static-auth-secret"), "{text}");
}

#[tokio::test]
async fn an_expired_credential_is_rejected_too() {
    if prerequisites("an_expired_credential_is_rejected_too").is_err() {
        return;
    }
    let coturn = Coturn::with_secret(SECRET, &[]);
    let user = UserId::new("alice").unwrap();
    let username = turn_username(calling_usersig::now_unix() - 60, &user);
    let password = turn_password(SECRET, &username);
    let result = turn_check::probe(&coturn.url(), &username, &password).await;
    assert!(
        matches!(result, Err(TurnCheckError::Rejected { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn nobody_listening_is_no_answer() {
    let url = format!("turn:127.0.0.1:{}?transport=udp", free_udp_port());
    let results = turn_check::check(&turn(url, SECRET), calling_usersig::now_unix()).await;
    assert!(
        matches!(results[0].1, Err(TurnCheckError::NoAnswer(_))),
        "{:?}",
        results[0].1
    );
}

#[tokio::test]
async fn refreshed_credentials_work_at_the_relay() {
    if prerequisites("refreshed_credentials_work_at_the_relay").is_err() {
        return;
    }
    let coturn = Coturn::with_secret(SECRET, &[]);
    let server = start_with(|c| {
        let mut t = turn(coturn.url(), SECRET);
        t.ttl = Duration::from_secs(4);
        c.ice.turn = Some(t);
    })
    .await;
    let url = format!("ws://{}/ws", server.local_addr());
    let bob = WsTransport::connect(WsConfig::new(url, APP, uid("bob"), sig("bob")))
        .await
        .unwrap();
    let first = bob.ice_servers();
    let first_expiry = first[0].expires_at.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let list = bob.ice_servers();
        if list != first {
            break list;
        }
        assert!(Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t = &fresh[0];
    assert!(t.expires_at.unwrap() > first_expiry);
    let relayed = turn_check::probe(
        &t.urls[0],
        t.username.as_deref().unwrap(),
        t.credential.as_deref().unwrap(),
    )
    .await;
    assert!(relayed.is_ok(), "{relayed:?}");
    bob.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_servers_checker_counts_failing_urls_in_metrics() {
    if prerequisites("the_servers_checker_counts_failing_urls_in_metrics").is_err() {
        return;
    }
    let good = Coturn::with_secret(SECRET, &[]);
    let bad = Coturn::with_secret("another-secret", &[]);
    let server = start_with(|c| {
        c.ice.turn = Some(TurnConfig::new(vec![good.url(), bad.url()], SECRET));
    })
    .await;
    let addr = server.local_addr();
    assert_eq!(metric(addr, "calling_turn_check_failures").await, 0);
    let results = server.turn_checker().run().await;
    assert!(results[0].1.is_ok(), "{:?}", results[0].1);
    assert!(
        matches!(results[1].1, Err(TurnCheckError::Rejected { .. })),
        "{:?}",
        results[1].1
    );
    assert_eq!(metric(addr, "calling_turn_check_failures").await, 1);
    server.shutdown().await;
}

/// The coturn configuration block of docs/DEPLOYMENT.md, as printed.
fn deployment_coturn_block() -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/DEPLOYMENT.md"),
    )
    .unwrap();
    let begin = doc.find("<!-- coturn-config:begin -->").unwrap();
    let end = doc.find("<!-- coturn-config:end -->").unwrap();
    let fenced = &doc[begin..end];
    let body = fenced.split_once("```ini\n").unwrap().1;
    body.rsplit_once("```").unwrap().0.to_owned()
}

#[test]
fn the_deployment_guides_coturn_block_has_the_lines_our_credentials_need() {
    let block = deployment_coturn_block();
    let lines: Vec<&str> = block.lines().map(str::trim).collect();
    for needed in [
        "use-auth-secret",
        "realm=calls.example.com",
        "fingerprint",
        "no-cli",
        "listening-ip=203.0.113.10",
        "relay-ip=203.0.113.10",
        "external-ip=203.0.113.10",
        "min-port=49160",
        "max-port=49999",
        // The relay must not lead into the operator's private networks.
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
    ] {
        assert!(
            lines.contains(&needed),
            "DEPLOYMENT.md's coturn block lacks {needed:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("static-auth-secret=")),
        "no static-auth-secret line"
    );
    // Nothing in it may open what the guide says is closed.
    assert!(!lines.iter().any(|l| l.starts_with("allow-loopback-peers")));
    assert!(!lines.iter().any(|l| l.starts_with("no-auth")));
}

#[tokio::test]
async fn the_deployment_guides_coturn_block_runs_and_accepts_our_credentials() {
    if prerequisites("the_deployment_guides_coturn_block_runs_and_accepts_our_credentials").is_err()
    {
        return;
    }
    let block = deployment_coturn_block();
    // Only what cannot be the same on this machine: the addresses, the
    // port and the secret. Every other line is the guide's.
    let conf = |port: u16| {
        let mut substituted = 0;
        let conf: String = block
            .lines()
            .map(|line| {
                let new = match line.split_once('=') {
                    Some(("listening-port", _)) => format!("listening-port={port}"),
                    Some(("static-auth-secret", _)) => format!("static-auth-secret={SECRET}"),
                    Some((key @ ("listening-ip" | "relay-ip" | "external-ip"), _)) => {
                        format!("{key}=127.0.0.1")
                    }
                    _ => return format!("{line}\n"),
                };
                substituted += 1;
                format!("{new}\n")
            })
            .collect();
        assert_eq!(substituted, 5, "the guide's block changed shape:\n{block}");
        conf
    };
    let coturn = Coturn::with_config(conf);
    let results = turn_check::check(&turn(coturn.url(), SECRET), calling_usersig::now_unix()).await;
    let relayed = results[0].1.as_ref().unwrap();
    assert!(relayed.ip().is_loopback(), "{relayed}");
    assert!((49160..=49999).contains(&relayed.port()), "{relayed}");
    // And the guide's secret line means what it says: another secret fails.
    let wrong = turn_check::check(
        &turn(coturn.url(), "not-the-secret"),
        calling_usersig::now_unix(),
    )
    .await;
    assert!(
        matches!(wrong[0].1, Err(TurnCheckError::Rejected { .. })),
        "{:?}",
        wrong[0].1
    );
}

#[tokio::test]
async fn the_deployment_guides_coturn_block_refuses_private_peers() {
    if prerequisites("the_deployment_guides_coturn_block_refuses_private_peers").is_err() {
        return;
    }
    let block = deployment_coturn_block();
    let coturn = Coturn::with_config(|port| {
        block
            .lines()
            .map(|line| match line.split_once('=') {
                Some(("listening-port", _)) => format!("listening-port={port}\n"),
                Some(("static-auth-secret", _)) => format!("static-auth-secret={SECRET}\n"),
                Some((key @ ("listening-ip" | "relay-ip" | "external-ip"), _)) => {
                    format!("{key}=127.0.0.1\n")
                }
                _ => format!("{line}\n"),
            })
            .collect()
    });
    let user = UserId::new("alice").unwrap();
    let username = turn_username(calling_usersig::now_unix() + 600, &user);
    let password = turn_password(SECRET, &username);
    // The operator's LAN and the TURN host itself are out of reach (IPv4:
    // the relay is; an IPv6 peer would be a family mismatch, not a test of
    // the list)...
    for peer in [
        "10.1.2.3:5000",
        "172.16.0.9:5000",
        "192.168.1.10:5000",
        "127.0.0.1:5000",
        "169.254.1.1:5000",
        "100.64.0.1:5000",
    ] {
        let result = turn_check::probe_permission(
            &coturn.url(),
            &username,
            &password,
            peer.parse().unwrap(),
        )
        .await;
        assert!(
            matches!(result, Err(TurnCheckError::Refused { code: 403, .. })),
            "the guide's coturn relays to {peer}: {result:?}"
        );
    }
    // ...while a public address is not (TEST-NET-3: never contacted, a
    // permission sends nothing).
    let public = "203.0.113.7:5000".parse().unwrap();
    let result = turn_check::probe_permission(&coturn.url(), &username, &password, public).await;
    assert!(result.is_ok(), "{result:?}");
}
