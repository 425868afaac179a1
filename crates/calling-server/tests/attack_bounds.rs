//! The bounds of docs/PROTOCOL.md "Limits" holding against the real
//! `calling-server` binary, run as a child process with default settings:
//! what attackers without an account make it hold (its RSS, its open
//! descriptors) stays under a ceiling, and an honest client logs in and
//! `/healthz` answers all along. The figures of the same attacks at full
//! scale are a benchmark: `examples/attacks.rs`, docs/BENCHMARKS.md.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{APP, KEY, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The server binary, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Strips terminal colour codes from a log line.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..].split_whitespace().next()?.parse().ok()
}

fn start() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calling-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--sdk-app-id",
            &APP.to_string(),
            "--secret-key",
            KEY,
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut addr, mut admin) = (None, None);
        for line in out.lines() {
            let Ok(line) = line else { break };
            let line = plain(&line);
            addr = addr.or_else(|| field(&line, "local_addr"));
            admin = admin.or_else(|| field(&line, "admin_addr"));
            if let (Some(a), Some(b)) = (addr, admin) {
                let _ = tx.send((a, b));
                addr = None;
                admin = None;
            }
            // Read on to the end, so that the server never blocks on a
            // full pipe.
        }
    });
    let (addr, admin) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server did not say where it listens");
    Server { child, addr, admin }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn src(group: u8, n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        group,
        (n / 250) as u8,
        (n % 250 + 2) as u8,
    ))
}

async fn tcp_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .ok()?
        .ok()
}

/// An honest client's login, bounded by [`WAIT`].
async fn honest_login(addr: SocketAddr, user: &str) -> bool {
    let work = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .ok()?;
        let sig = calling_usersig::generate(APP, KEY, user, 3600, calling_usersig::now_unix());
        let login = serde_json::json!({"type":"login","id":"L","sdk_app_id":APP,
            "user_id":user,"user_sig":sig});
        ws.send(Message::text(login.to_string())).await.ok()?;
        while let Some(Ok(m)) = ws.next().await {
            if m.to_text().is_ok_and(|t| t.contains("\"login_ok\"")) {
                return Some(());
            }
        }
        None
    };
    tokio::time::timeout(WAIT, work)
        .await
        .ok()
        .flatten()
        .is_some()
}

async fn healthz(addr: SocketAddr) -> bool {
    let work = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(out.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(WAIT, work).await.ok().flatten() == Some(true)
}

/// Upgrades `s` to a WebSocket (waiting for the 101, as a client must).
async fn upgrade(s: &mut TcpStream) -> bool {
    if s.write_all(UPGRADE.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match tokio::time::timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return false,
        }
    }
    head.starts_with(b"HTTP/1.1 101")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_frames_before_login_leave_the_server_small_and_serving() {
    let server = start();
    let pid = server.child.id();
    assert!(honest_login(server.addr, "warmup").await);
    let base = rss_kib(pid);
    // 300 connections, each announcing a 1 MB frame and sending 900 KB of
    // it without ever logging in: ~270 MB if the server buffered them.
    let mut frame = vec![0x81, 0xFF];
    frame.extend_from_slice(&1_000_000u64.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(std::iter::repeat_n(b'a', 900_000));
    let frame: &'static [u8] = Vec::leak(frame);
    let mut attackers = Vec::new();
    for n in 0..300 {
        let Some(mut s) = tcp_from(src(60, n), server.addr).await else {
            continue;
        };
        attackers.push(tokio::spawn(async move {
            if upgrade(&mut s).await {
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
        peak = peak.max(rss_kib(pid));
    }
    assert!(done >= 250, "only {done} of 300 attackers got through");
    assert!(
        honest_login(server.addr, "alice").await,
        "honest login lost"
    );
    assert!(healthz(server.admin).await && healthz(server.addr).await);
    peak = peak.max(rss_kib(pid));
    let grown = peak.saturating_sub(base);
    eprintln!("RSS {base} KiB -> peak {peak} KiB under 300 oversized pre-login frames");
    // The documented bound: 16 KiB each (pre_login_bytes) and buffers.
    assert!(grown < 64 * 1024, "the server grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_fill_the_descriptors_or_lock_logins_out() {
    let server = start();
    let pid = server.child.id();
    // 3,000 idle connections from many addresses: more than the 2,048 the
    // server keeps for connections waiting to log in.
    let mut idle = Vec::new();
    for n in 0..3000 {
        if let Some(s) = tcp_from(src(70, n), server.addr).await {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 2900, "only {} connected", idle.len());
    // The oldest are closed to make room; honest clients still log in.
    for i in 0..3 {
        assert!(
            honest_login(server.addr, &format!("honest{i}")).await,
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
