//! SDK calls with real media (WebRTC on loopback) between users on three
//! `calling-server` processes of one cluster, over a real redis-server:
//! the SDK does not know there are nodes.
#![allow(clippy::unwrap_used)]

#[path = "../../calling-server/tests/support/redis.rs"]
mod redis_support;
mod support;

use std::time::Duration;

use calling::{CallEvent, Calling, CallingConfig, Event, Events, MediaKind, MediaType};
use redis_support::{Node, Redis};
use support::{expect, invited, wait_frames};

const APP: u64 = 1_400_000_000;
const KEY: &str = "cluster-calls-secret-key";
const RING: Duration = Duration::from_secs(30);

/// The calling-server binary of this build (target/<profile>/): the
/// workspace test run builds it with calling-server's tests, before any
/// test runs; alone, this test builds it first (an older one left there
/// would be used as it is).
fn server_bin() -> String {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/cluster-<hash>
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let bin = dir.join("calling-server");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "-q",
            "-p",
            "calling-server",
            "--bin",
            "calling-server",
        ]);
        if dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "building calling-server failed");
    }
    assert!(
        bin.exists(),
        "no calling-server binary at {}",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

fn cluster(redis: &Redis) -> Vec<Node> {
    let bin = server_bin();
    (0..3)
        .map(|_| Node::start(&bin, &redis.url(), APP, KEY, &["--cluster-lease-ms", "900"]))
        .collect()
}

async fn login(node: &Node, user: &str) -> (Calling, Events) {
    Calling::login(calling::Login {
        server: format!("ws://{}/ws", node.addr),
        sdk_app_id: APP,
        user_id: user.into(),
        user_sig: calling::usersig::generate(APP, KEY, user, 3600, calling::usersig::now_unix()),
        config: CallingConfig::loopback(),
    })
    .await
    .unwrap()
}

fn is_end(e: &Event) -> bool {
    matches!(e, Event::Call(CallEvent::CallEnd { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_call_between_two_nodes() {
    let redis = Redis::start();
    let nodes = cluster(&redis);
    let (alice, mut a) = login(&nodes[0], "alice").await;
    let (bob, mut b) = login(&nodes[1], "bob").await;
    alice.call("bob", MediaType::Video, RING).await.unwrap();
    let invite = invited(&mut b).await;
    bob.accept(&invite).await.unwrap();
    for (client, from) in [(&alice, "bob"), (&bob, "alice")] {
        wait_frames(client, from, MediaKind::Video, 10).await;
        wait_frames(client, from, MediaKind::Audio, 10).await;
    }
    alice.hangup().await.unwrap();
    expect(&mut b, "bob's call end", is_end).await;
    expect(&mut a, "alice's call end", is_end).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_call_across_three_nodes_and_a_node_death() {
    let redis = Redis::start();
    let mut nodes = cluster(&redis);
    let (alice, mut a) = login(&nodes[0], "alice").await;
    let (bob, mut b) = login(&nodes[1], "bob").await;
    let (carol, mut c) = login(&nodes[2], "carol").await;
    alice
        .group_call(&["bob", "carol"], MediaType::Audio, RING)
        .await
        .unwrap();
    let (ib, ic) = (invited(&mut b).await, invited(&mut c).await);
    bob.accept(&ib).await.unwrap();
    carol.accept(&ic).await.unwrap();
    let all = [("alice", &alice), ("bob", &bob), ("carol", &carol)];
    for (to_name, to) in all {
        for (from_name, _) in all {
            if to_name != from_name {
                wait_frames(to, from_name, MediaKind::Audio, 10).await;
            }
        }
    }
    // carol's node dies: the others see her leave (the room tells them
    // once her node's lease lapses), and their call goes on.
    nodes[2].kill9();
    for events in [&mut a, &mut b] {
        expect(events, "carol leaving", |e| {
            matches!(e, Event::Call(CallEvent::UserLeave { user, .. }) if user.as_str() == "carol")
        })
        .await;
    }
    let before = alice.stats().await.unwrap();
    let from_bob = |s: &[calling::PeerStats]| {
        s.iter()
            .find(|p| p.user == "bob")
            .map_or(0, |p| p.audio_frames_received)
    };
    wait_frames(&alice, "bob", MediaKind::Audio, from_bob(&before) + 10).await;
    alice.hangup().await.unwrap();
    expect(&mut b, "bob's call end", is_end).await;
    drop(carol);
}
