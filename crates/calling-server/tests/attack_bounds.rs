//! The bounds of docs/PROTOCOL.md "Limits" holding against the real
//! `calling-server` binary, run as a child process with default settings:
//! what attackers without an account make it hold (its RSS, its open
//! descriptors) stays under a ceiling, and an honest client logs in and
//! `/healthz` answers all along. The figures of the same attacks at full
//! scale are a benchmark: `examples/attacks.rs`, docs/BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

#[path = "../examples/common/attack_kit.rs"]
mod attack_kit;
mod common;
#[path = "../examples/common/proc_stats.rs"]
mod proc_stats;

use std::path::Path;
use std::time::Instant;

use attack_kit::{ServerChild, frame_header, honest_login, http_ok, src, tcp_from, upgrade};
use common::{APP, KEY, WAIT};
use proc_stats::{open_fds, rss_kib};
use tokio::io::AsyncWriteExt;

fn start() -> ServerChild {
    attack_kit::start_server(Path::new(env!("CARGO_BIN_EXE_calling-server")), APP, KEY).unwrap()
}

async fn login(server: &ServerChild, user: &str) -> bool {
    honest_login(server.addr, APP, KEY, user, WAIT)
        .await
        .is_some()
}

async fn healthz(addr: std::net::SocketAddr) -> bool {
    http_ok(addr, "/healthz", WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_frames_before_login_leave_the_server_small_and_serving() {
    let server = start();
    let pid = server.pid;
    assert!(login(&server, "warmup").await);
    let base = rss_kib(pid).unwrap();
    // 300 connections, each announcing a 1 MB frame and sending 900 KB of
    // it without ever logging in: ~270 MB if the server buffered them.
    let mut frame = frame_header(1_000_000);
    frame.extend(std::iter::repeat_n(b'a', 900_000));
    let frame: &'static [u8] = Vec::leak(frame);
    let mut attackers = Vec::new();
    for n in 0..300 {
        let Some(mut s) = tcp_from(src(60, n), server.addr, WAIT).await else {
            continue;
        };
        attackers.push(tokio::spawn(async move {
            if upgrade(&mut s, WAIT).await {
                let _ = s.write_all(frame).await;
            }
            s
        }));
    }
    let mut peak = base;
    let deadline = Instant::now() + WAIT;
    let mut done = 0;
    for a in attackers {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, a).await.is_ok() {
            done += 1;
        }
        peak = peak.max(rss_kib(pid).unwrap_or(0));
    }
    assert!(done >= 250, "only {done} of 300 attackers got through");
    assert!(login(&server, "alice").await, "honest login lost");
    assert!(healthz(server.admin).await && healthz(server.addr).await);
    peak = peak.max(rss_kib(pid).unwrap_or(0));
    let grown = peak.saturating_sub(base);
    eprintln!("RSS {base} KiB -> peak {peak} KiB under 300 oversized pre-login frames");
    // The documented bound: 16 KiB each (pre_login_bytes) and buffers.
    assert!(grown < 64 * 1024, "the server grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_fill_the_descriptors_or_lock_logins_out() {
    let server = start();
    let pid = server.pid;
    // 3,000 idle connections from many addresses: more than the 2,048 the
    // server keeps for connections waiting to log in.
    let mut idle = Vec::new();
    for n in 0..3000 {
        if let Some(s) = tcp_from(src(70, n), server.addr, WAIT).await {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 2900, "only {} connected", idle.len());
    // The oldest are closed to make room; honest clients still log in.
    for i in 0..3 {
        assert!(
            login(&server, &format!("honest{i}")).await,
            "an honest login was locked out"
        );
    }
    assert!(healthz(server.admin).await, "admin /healthz unreachable");
    let fds = open_fds(pid);
    assert!(
        fds < 2048 + 128,
        "{fds} descriptors held for idle connections"
    );
    drop(idle);
}
