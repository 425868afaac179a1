//! What the attack benchmark (`examples/attacks.rs`) and the attack-bound
//! tests (`tests/attack_bounds.rs`) both need: the server binary as a
//! child process, attacking connections from many loopback addresses,
//! and an honest client's probes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket upgrade request for `/ws`.
pub const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The server binary running with default settings on 127.0.0.1:0 and an
/// admin listener on 127.0.0.1:0; killed on drop. Its log (stdout) is
/// read to the end and counted.
pub struct ServerChild {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// The listen address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// Bytes it has logged.
    pub log_bytes: Arc<AtomicU64>,
    /// Lines it has logged.
    pub log_lines: Arc<AtomicU64>,
}

impl Drop for ServerChild {
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

/// Starts `bin` for `app` / `key` and waits (bounded) for it to say where
/// it listens.
pub fn start_server(bin: &Path, app: u64, key: &str) -> Result<ServerChild, String> {
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--sdk-app-id",
            &app.to_string(),
            "--secret-key",
            key,
        ])
        // The default log level, as deployed: what an attack makes it write.
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let (log_bytes, log_lines) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (bytes, lines) = (log_bytes.clone(), log_lines.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut addr, mut admin) = (None, None);
        // Read to the end, so that the server never blocks on a full pipe.
        for line in out.lines() {
            let Ok(line) = line else { break };
            bytes.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
            lines.fetch_add(1, Ordering::Relaxed);
            if addr.is_some() && admin.is_some() {
                continue;
            }
            let line = plain(&line);
            addr = addr.or_else(|| field(&line, "local_addr"));
            admin = admin.or_else(|| field(&line, "admin_addr"));
            if let (Some(a), Some(b)) = (addr, admin) {
                let _ = tx.send((a, b));
            }
        }
    });
    let pid = child.id();
    let server = |addr, admin| ServerChild {
        child,
        pid,
        addr,
        admin,
        log_bytes,
        log_lines,
    };
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok((addr, admin)) => Ok(server(addr, admin)),
        Err(_) => Err("the server did not say where it listens".into()),
    }
}

/// The `n`th source address of attacker group `group`: 127.<group>.x.y.
pub fn src(group: u8, n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        group,
        (n / 250) as u8,
        (n % 250 + 2) as u8,
    ))
}

/// A TCP connection from `from` to `to`, within `wait`.
pub async fn tcp_from(from: IpAddr, to: SocketAddr, wait: Duration) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    tokio::time::timeout(wait, socket.connect(to))
        .await
        .ok()?
        .ok()
}

/// Sends [`UPGRADE`] and reads the answer's head (a client must not send
/// frames before the 101); whether it was a 101.
pub async fn upgrade(s: &mut TcpStream, wait: Duration) -> bool {
    if s.write_all(UPGRADE.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match tokio::time::timeout(wait, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return false,
        }
    }
    head.starts_with(b"HTTP/1.1 101")
}

/// A WebSocket frame header for a masked text frame of `len` bytes.
pub fn frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81, 0xFF];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    h
}

/// An honest client's login as `user`: connect, log in, wait for
/// `login_ok`; how long it took, or `None` if it did not within `wait`.
pub async fn honest_login(
    addr: SocketAddr,
    app: u64,
    key: &str,
    user: &str,
    wait: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    let work = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .ok()?;
        let sig = calling_usersig::generate(app, key, user, 3600, calling_usersig::now_unix());
        let login = serde_json::json!({"type":"login","id":"L","sdk_app_id":app,
            "user_id":user,"user_sig":sig});
        ws.send(Message::text(login.to_string())).await.ok()?;
        while let Some(Ok(m)) = ws.next().await {
            if m.to_text().is_ok_and(|t| t.contains("\"login_ok\"")) {
                let _ = ws.close(None).await;
                return Some(());
            }
        }
        None
    };
    tokio::time::timeout(wait, work).await.ok()??;
    Some(t0.elapsed())
}

/// `GET path` on `addr` within `wait`: the whole answer.
pub async fn http_get(addr: SocketAddr, path: &str, wait: Duration) -> Option<String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(wait, work).await.ok().flatten()
}

/// Whether `GET path` on `addr` answers 200 within `wait`.
pub async fn http_ok(addr: SocketAddr, path: &str, wait: Duration) -> bool {
    http_get(addr, path, wait)
        .await
        .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
}
