//! Cluster mode against a real redis-server: servers sharing one Redis
//! behave as one server (routing, one session per user, rooms), a killed
//! node's users go offline cluster-wide, and a Redis restart is ridden out.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "support/redis.rs"]
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use calling_server::RunningServer;
use calling_server::cluster::{ClusterConfig, RedisHub};
use common::*;
use redis_support::{Node, Redis};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_calling-server");
/// The lease of the test nodes: short, so that a dead node is noticed soon.
const LEASE: Duration = Duration::from_millis(900);
/// Longest a node death or a Redis return may take to be noticed: a
/// lease, a renewal period and slack for a loaded machine.
const NOTICE: Duration = Duration::from_secs(10);

async fn node(redis: &Redis) -> RunningServer {
    let mut cluster = ClusterConfig::new(redis.url());
    cluster.lease = LEASE;
    let hub = RedisHub::connect(cluster).await.unwrap();
    start_with(move |c| {
        c.hub = Arc::new(hub);
        // The ordering test sends a burst.
        c.limits.rate_per_sec = 1000;
        c.limits.rate_burst = 1000;
    })
    .await
}

async fn send_to(ws: &mut Ws, id: &str, to: &[&str], n: u64) {
    send(ws, json!({"type":"send","id":id,"to":to,"payload":{"n":n}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_reach_each_other_in_order() {
    let redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut alice = login_as(a.local_addr(), "alice").await;
    let mut bob = login_as(b.local_addr(), "bob").await;
    for n in 0..200 {
        send_to(&mut alice, &format!("m{n}"), &["bob"], n).await;
    }
    for n in 0..200 {
        let m = recv_type(&mut bob, "message").await;
        assert_eq!(m["from"], "alice");
        assert_eq!(m["payload"]["n"], n, "out of order: {m}");
    }
    send_to(&mut bob, "back", &["alice"], 7).await;
    assert_eq!(recv_type(&mut alice, "message").await["payload"]["n"], 7);
    // Offline anywhere: undeliverable at once, the online one delivered.
    send_to(&mut alice, "x", &["carol", "bob"], 1).await;
    let u = recv_type(&mut alice, "undeliverable").await;
    assert_eq!(u["id"], "x");
    assert_eq!(u["users"], json!(["carol"]));
    assert_eq!(recv_type(&mut bob, "message").await["id"], "x");
    // Both are healthy, and each counts its own users.
    assert_eq!(
        http_get(a.local_addr(), "/healthz").await.0,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(metric(a.local_addr(), "calling_users_online").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_kicks_the_session_and_its_room_hears() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis).await, node(&redis).await, node(&redis).await);
    let mut alice_a = login_as(a.local_addr(), "alice").await;
    let mut bob = login_as(c.local_addr(), "bob").await;
    send(&mut bob, json!({"type":"join","id":"j","room":"r"})).await;
    assert_eq!(
        recv_type(&mut bob, "joined").await["members"],
        json!(["bob"])
    );
    send(&mut alice_a, json!({"type":"join","id":"j","room":"r"})).await;
    assert_eq!(
        recv_type(&mut alice_a, "joined").await["members"],
        json!(["alice", "bob"])
    );
    let enter = recv_type(&mut bob, "room_enter").await;
    assert_eq!(enter["user"], "alice");

    let started = Instant::now();
    let mut alice_b = login_as(b.local_addr(), "alice").await;
    assert_eq!(
        recv_type(&mut alice_a, "kicked_out").await["type"],
        "kicked_out"
    );
    assert_eq!(expect_close(&mut alice_a).await, 4002);
    let leave = recv_type(&mut bob, "room_leave").await;
    assert_eq!(
        (leave["room"].as_str(), leave["user"].as_str()),
        (Some("r"), Some("alice"))
    );
    // Within the issue's bound, with room to spare (not a timing test:
    // the bound is 100 ms and a loaded machine gets ten times that).
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The new session is the one frames reach.
    send_to(&mut bob, "hi", &["alice"], 3).await;
    assert_eq!(recv_type(&mut alice_b, "message").await["payload"]["n"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_span_nodes_with_their_allow_lists() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis).await, node(&redis).await, node(&redis).await);
    let mut alice = login_as(a.local_addr(), "alice").await;
    let mut bob = login_as(b.local_addr(), "bob").await;
    let mut eve = login_as(c.local_addr(), "eve").await;
    send(
        &mut alice,
        json!({"type":"join","id":"j","room":"call-1","allow":["bob"]}),
    )
    .await;
    assert_eq!(
        recv_type(&mut alice, "joined").await["members"],
        json!(["alice"])
    );
    // A stranger on a third node is refused, and learns nothing.
    send(&mut eve, json!({"type":"join","id":"e","room":"call-1"})).await;
    let refused = recv_type(&mut eve, "error").await;
    assert_eq!(refused["code"], "not_allowed");
    send(&mut bob, json!({"type":"join","id":"j","room":"call-1"})).await;
    assert_eq!(
        recv_type(&mut bob, "joined").await["members"],
        json!(["alice", "bob"])
    );
    assert_eq!(recv_type(&mut alice, "room_enter").await["user"], "bob");
    // bob lets eve in; she joins; both others hear it.
    send(
        &mut bob,
        json!({"type":"allow","id":"a","room":"call-1","users":["eve"]}),
    )
    .await;
    assert_eq!(recv_type(&mut bob, "allowed").await["id"], "a");
    send(&mut eve, json!({"type":"join","id":"e2","room":"call-1"})).await;
    assert_eq!(
        recv_type(&mut eve, "joined").await["members"],
        json!(["alice", "bob", "eve"])
    );
    assert_eq!(recv_type(&mut alice, "room_enter").await["user"], "eve");
    assert_eq!(recv_type(&mut bob, "room_enter").await["user"], "eve");
    send(&mut bob, json!({"type":"leave","id":"l","room":"call-1"})).await;
    assert_eq!(recv_type(&mut bob, "left").await["id"], "l");
    assert_eq!(recv_type(&mut alice, "room_leave").await["user"], "bob");
    assert_eq!(recv_type(&mut eve, "room_leave").await["user"], "bob");
    // A socket that dies leaves its rooms too.
    drop(eve);
    assert_eq!(recv_type(&mut alice, "room_leave").await["user"], "eve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_its_users_cluster_wide() {
    let redis = Redis::start();
    let a = node(&redis).await;
    let lease = LEASE.as_millis().to_string();
    let mut c = Node::start(BIN, &redis.url(), APP, KEY, &["--cluster-lease-ms", &lease]);
    let mut alice = login_as(a.local_addr(), "alice").await;
    let mut bob = login_as(c.addr, "bob").await;
    send(&mut bob, json!({"type":"join","id":"j","room":"r"})).await;
    recv_type(&mut bob, "joined").await;
    send(&mut alice, json!({"type":"join","id":"j","room":"r"})).await;
    recv_type(&mut alice, "joined").await;
    send_to(&mut alice, "before", &["bob"], 1).await;
    assert_eq!(recv_type(&mut bob, "message").await["id"], "before");

    c.kill9();
    // Its channel is gone with its Redis connection: bob is undeliverable
    // at once, before its lease lapses.
    send_to(&mut alice, "after", &["bob"], 2).await;
    let u = recv_type(&mut alice, "undeliverable").await;
    assert_eq!(u["users"], json!(["bob"]), "{u}");
    // Once the lease lapses, the room hears that bob left.
    let leave = tokio::time::timeout(NOTICE, recv_type(&mut alice, "room_leave"))
        .await
        .expect("no room_leave for the dead node's user");
    assert_eq!(leave["user"], "bob");
    // And bob can log in again elsewhere.
    let mut bob = login_as(a.local_addr(), "bob").await;
    send_to(&mut alice, "again", &["bob"], 3).await;
    assert_eq!(recv_type(&mut bob, "message").await["id"], "again");
}

/// Polls `/healthz` until it answers `status` or [`NOTICE`] passes.
async fn wait_health(server: &RunningServer, status: &str) {
    let deadline = Instant::now() + NOTICE;
    loop {
        let (got, body) = http_get(server.local_addr(), "/healthz").await;
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "healthz stayed {got} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_ridden_out() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut alice = login_as(a.local_addr(), "alice").await;
    let mut bob = login_as(b.local_addr(), "bob").await;
    let mut carol = login_as(a.local_addr(), "carol").await;

    redis.kill();
    wait_health(&a, "HTTP/1.1 503 Service Unavailable").await;
    let (_, why) = http_get(a.local_addr(), "/healthz").await;
    assert!(why.contains("Redis"), "{why}");
    // Users on this node still reach each other; the others are refused
    // with a typed error, not reported offline.
    send_to(&mut alice, "local", &["carol"], 1).await;
    assert_eq!(recv_type(&mut carol, "message").await["id"], "local");
    send_to(&mut alice, "remote", &["bob"], 2).await;
    let e = recv_type(&mut alice, "error").await;
    assert_eq!(
        (e["id"].as_str(), e["code"].as_str()),
        (Some("remote"), Some("unavailable"))
    );
    // New logins are refused, and say why.
    let mut dave = connect(a.local_addr()).await;
    login_frame(&mut dave, APP, "dave", &sig("dave")).await;
    let e = recv(&mut dave).await;
    assert_eq!(e["code"], "unavailable", "{e}");

    // Redis comes back empty: presence is rebuilt, calls go through again.
    redis.restart();
    wait_health(&a, "HTTP/1.1 200 OK").await;
    wait_health(&b, "HTTP/1.1 200 OK").await;
    let deadline = Instant::now() + NOTICE;
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("r{n}");
        send_to(&mut alice, &id, &["bob"], n).await;
        // Each attempt is answered (undeliverable until bob's node has put
        // him back) or delivered.
        let got =
            tokio::time::timeout(Duration::from_millis(500), recv_type(&mut bob, "message")).await;
        if let Ok(m) = got {
            assert_eq!(m["from"], "alice");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob never reachable after Redis returned"
        );
    }
    let mut dave = login_as(b.local_addr(), "dave").await;
    send_to(&mut alice, "d", &["dave"], 9).await;
    assert_eq!(recv_type(&mut dave, "message").await["id"], "d");
}
