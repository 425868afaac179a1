//! Our signaling server and the PeerJS server (npm `peer`, pinned in
//! `bench/peerjs/package.json`) side by side: one load client, one workload,
//! one run, one table (a benchmark, not a test).
//!
//! ```text
//! scripts/bench-peerjs.sh --idle 10000 --active 200 --rate 5000 --secs 10
//! ```
//!
//! The script installs the PeerJS server (`npm ci --prefix bench/peerjs`, if
//! needed), builds the release `calling-server` binary and this example, and
//! runs it with its arguments. Flags (defaults in brackets):
//! `--idle N` [10000], `--active A` [200], `--rate R` msgs/s in total [5000],
//! `--secs S` [10], `--servers ours,peerjs` [both, in that order],
//! `--server-bin PATH` [`calling-server` in the release dir above this
//! example], `--peerjs-dir PATH` [`bench/peerjs` in the workspace],
//! `--node PATH` [`node`], `--in-flight K` logins at once [128],
//! `--per-source M` client sockets per source address [100],
//! `--drain D` seconds to wait for late deliveries [5],
//! `--server-workers W` worker threads for ours [its default, one per core].
//!
//! Both servers run as child processes of this one on free ports of
//! 127.0.0.1 (killed when it exits): ours with a UserSig key, PeerJS through
//! its own CLI (`node node_modules/peer/dist/bin/peerjs.js`) with
//! `--concurrent_limit` raised to fit the sessions (its default, 5,000, turns
//! the rest away) and `--alive_timeout 10000`, the 10 s silence after which
//! ours drops a connection too. The servers are measured one after the
//! other with the same code paths, and every client of the first is closed
//! (and the server's descriptors back to where they were) before the second
//! starts. For each server:
//!
//! 1. Warm-up: two clients log in, relay one message each way, and leave;
//!    after 1 s the server's RSS (VmRSS of /proc/<pid>/status) is the
//!    "before" figure. So both are measured after their code paths ran once
//!    (node's JIT, lazy allocations), with no session open.
//! 2. Logins: `idle + active` clients connect, at most `--in-flight` at a
//!    time, their sockets bound to 127.0.0.2, 127.0.0.3, ... (`--per-source`
//!    each, far under our per-address caps of 4,096 connections and 256
//!    pending logins). A client is logged in when ours answers its `login`
//!    frame (UserSig made before the clock starts) with `login_ok`, or when
//!    PeerJS answers the WebSocket upgrade of `/peerjs?key=&id=&token=` with
//!    `{"type":"OPEN"}`. From then on every client sends its server's
//!    heartbeat every 3 s (`{"type":"ping"}`, which ours answers with
//!    `pong`; `{"type":"HEARTBEAT"}`, which PeerJS does not answer), from a
//!    random start so they spread.
//! 3. Memory: 2 s after the last login (heartbeats going, nothing else) the
//!    RSS is the "after" figure; KiB per session is (after - before) /
//!    sessions logged in (which is idle + active unless some failed, and
//!    the table says so). The server's CPU over those 2 s is "idle CPU".
//! 4. Relay: for `--secs`, the active clients send `--rate` messages a
//!    second in all, round robin over the senders (5,000/s over 200 is 25/s
//!    each, within our per-user limit of 50/s, burst 100), each to another
//!    active client. Ours: `{"type":"send","id":..,"to":[dst],"payload":P}`,
//!    delivered as `message`; PeerJS: `{"type":"OFFER","dst":..,"payload":P}`,
//!    which it forwards as is with `src` added. P is the same 200-byte JSON
//!    object for both, carrying the send time in nanoseconds; the client's
//!    connection task stamps it just before writing the frame, and the
//!    receiving task subtracts it from the time it read the frame, one
//!    monotonic clock in one process. Idle clients stay connected and keep
//!    heartbeating. Then up to `--drain` seconds for late frames; lost =
//!    sent - delivered. Server CPU is utime + stime from /proc/<pid>/stat
//!    over the sending window, as a share of one core; the RSS is read once
//!    more after the drain.
//!
//! The table also gives the load client's own CPU over the relay, every
//! error frame or refused login, and connections the server closed on its
//! own; and the load average at start and end. Every address is loopback,
//! every phase has a deadline, and nothing from the network is unwrapped.
//! The client runs on a two-thread tokio runtime on the same machine as the
//! server under test: on a two-core machine they share the cores.

#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[path = "common/proc_stats.rs"]
mod proc_stats;
use proc_stats::{cpu_secs, open_fds, rss_kib};

const APP: u64 = 1_400_000_000;
const KEY: &str = "peerjs-bench-secret-key-0123456789abcdef";
/// The PeerJS connection key (its CLI's default).
const PEER_KEY: &str = "peerjs";
/// Bytes of the relayed payload object, the same for both servers.
const PAYLOAD_BYTES: usize = 200;
/// Added to every timestamp so it always has 16 digits: every payload has
/// the same length.
const T_OFFSET: u64 = 1_000_000_000_000_000;
const HEARTBEAT: Duration = Duration::from_secs(3);

/// Our signaling server and the PeerJS server side by side: one load
/// client, one workload, one table (a benchmark, not a test).
#[derive(Parser)]
#[command(name = "peerjs_bench")]
struct Args {
    /// Idle sessions (logged in, heartbeating only).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Active sessions relaying messages to each other (at least 2).
    #[arg(long, default_value_t = 200)]
    active: usize,
    /// Messages a second, in total.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Seconds of relaying.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// The servers to measure, in this order: `ours`, `peerjs`.
    #[arg(long, default_value = "ours,peerjs")]
    servers: String,
    /// Our `calling-server` binary (default: the one in the release
    /// directory above this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the PeerJS server is installed (default: `bench/peerjs` in the
    /// workspace).
    #[arg(long)]
    peerjs_dir: Option<PathBuf>,
    /// The Node.js interpreter.
    #[arg(long, default_value = "node")]
    node: String,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Client sockets per source address.
    #[arg(long, default_value_t = 100)]
    per_source: usize,
    /// Seconds to wait for late deliveries.
    #[arg(long, default_value_t = 5)]
    drain: u64,
    /// Worker threads for our server (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    server_workers: usize,
}

fn main() {
    let result = Config::from_args(Args::parse()).and_then(|cfg| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(run(cfg))
    });
    if let Err(e) = result {
        eprintln!("peerjs_bench: {e}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ours,
    PeerJs,
}

struct Config {
    idle: usize,
    active: usize,
    rate: u64,
    secs: u64,
    kinds: Vec<Kind>,
    server_bin: PathBuf,
    peerjs_dir: PathBuf,
    node: String,
    in_flight: usize,
    per_source: usize,
    drain: u64,
    server_workers: Option<usize>,
}

impl Config {
    fn from_args(args: Args) -> Result<Config, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let server_bin = match args.server_bin {
            Some(bin) => bin,
            None => exe
                .parent()
                .and_then(|p| p.parent())
                .map(|p| p.join("calling-server"))
                .ok_or("cannot locate calling-server next to this example")?,
        };
        let peerjs_dir = args
            .peerjs_dir
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peerjs"));
        let kinds = args
            .servers
            .split(',')
            .map(|s| match s.trim() {
                "ours" => Ok(Kind::Ours),
                "peerjs" => Ok(Kind::PeerJs),
                other => Err(format!(
                    "--servers: unknown server {other:?} (ours, peerjs)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = Config {
            idle: args.idle,
            active: args.active,
            rate: args.rate,
            secs: args.secs,
            kinds,
            server_bin,
            peerjs_dir,
            node: args.node,
            in_flight: args.in_flight,
            per_source: args.per_source,
            drain: args.drain,
            server_workers: (args.server_workers > 0).then_some(args.server_workers),
        };
        if cfg.active < 2 {
            return Err("--active must be at least 2 (clients relay to each other)".into());
        }
        if cfg.in_flight == 0 || cfg.per_source == 0 {
            return Err("--in-flight and --per-source must be positive".into());
        }
        if cfg.per_source > 1_000 {
            return Err("--per-source: keep it far under the per-address caps (<= 1000)".into());
        }
        let sources = (cfg.idle + cfg.active).div_ceil(cfg.per_source);
        if sources > 250 * 250 {
            return Err("too many sessions for 127.0.x.y source addresses".into());
        }
        if cfg.kinds.is_empty() {
            return Err("--servers names no server".into());
        }
        Ok(cfg)
    }
}

/// Kills the servers we started, whichever way we leave.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A server under test.
struct Target {
    kind: Kind,
    name: String,
    addr: SocketAddr,
    pid: u32,
    /// Index into `Children`.
    child: usize,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Waits (bounded) until `addr` accepts TCP connections, or the child died.
fn wait_up(children: &mut Children, t: &Target, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if std::net::TcpStream::connect_timeout(&t.addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(c) = children.0.get_mut(t.child)
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(format!("{} exited during start-up: {status}", t.name));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not come up on {} in {within:?}",
                t.name, t.addr
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_ours(cfg: &Config, children: &mut Children) -> Result<Target, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut cmd = Command::new(&cfg.server_bin);
    cmd.args([
        "--listen",
        &addr.to_string(),
        "--sdk-app-id",
        &APP.to_string(),
        "--secret-key",
        KEY,
    ]);
    if let Some(w) = cfg.server_workers {
        cmd.args(["--workers", &w.to_string()]);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.server_bin.display()))?;
    let pid = child.id();
    children.0.push(child);
    let t = Target {
        kind: Kind::Ours,
        name: "calling-server".into(),
        addr,
        pid,
        child: children.0.len() - 1,
    };
    wait_up(children, &t, Duration::from_secs(20))?;
    Ok(t)
}

/// Checks that node runs and the pinned package is installed; returns the
/// CLI script and the package's version.
fn peerjs_cli(cfg: &Config) -> Result<(PathBuf, String), String> {
    match Command::new(&cfg.node).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => {
            return Err(format!(
                "cannot run {:?}: Node.js is needed for the PeerJS server",
                cfg.node
            ));
        }
    }
    let pkg_dir = cfg.peerjs_dir.join("node_modules/peer");
    let pkg: serde_json::Value = std::fs::read_to_string(pkg_dir.join("package.json"))
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        .map_err(|e| {
            format!(
                "{}/package.json: {e} (run npm ci --prefix bench/peerjs, or scripts/bench-peerjs.sh)",
                pkg_dir.display()
            )
        })?;
    let version = pkg["version"].as_str().unwrap_or("?").to_string();
    let bin = pkg["bin"]["peerjs"]
        .as_str()
        .unwrap_or("dist/bin/peerjs.js");
    Ok((pkg_dir.join(bin), version))
}

fn start_peerjs(cfg: &Config, children: &mut Children) -> Result<Target, String> {
    let (script, version) = peerjs_cli(cfg)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    // Room for every session plus the warm-up pair and a few spare.
    let limit = cfg.idle + cfg.active + 16;
    let child = Command::new(&cfg.node)
        .arg(&script)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &addr.port().to_string(),
            "--key",
            PEER_KEY,
            "--concurrent_limit",
            &limit.to_string(),
            "--alive_timeout",
            "10000",
        ])
        .stdin(Stdio::null())
        // It logs a line per connection and disconnection.
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", script.display()))?;
    let pid = child.id();
    children.0.push(child);
    let t = Target {
        kind: Kind::PeerJs,
        name: format!("PeerJS (peer {version})"),
        addr,
        pid,
        child: children.0.len() - 1,
    };
    wait_up(children, &t, Duration::from_secs(30))?;
    Ok(t)
}

async fn run(cfg: Config) -> Result<(), String> {
    let load_start = loadavg();
    base();
    if cfg.kinds.contains(&Kind::PeerJs) {
        peerjs_cli(&cfg)?;
    }
    if cfg.kinds.contains(&Kind::Ours) && !cfg.server_bin.is_file() {
        return Err(format!(
            "no server binary at {} (cargo build --release -p calling-server --bin calling-server)",
            cfg.server_bin.display()
        ));
    }
    let mut children = Children(Vec::new());
    let mut targets = Vec::new();
    for k in &cfg.kinds {
        targets.push(match k {
            Kind::Ours => start_ours(&cfg, &mut children)?,
            Kind::PeerJs => start_peerjs(&cfg, &mut children)?,
        });
    }
    let mut rows = Vec::new();
    for t in &targets {
        eprintln!("== {} on {} (pid {})", t.name, t.addr, t.pid);
        let r = bench_one(&cfg, t).await;
        if let Err(e) = &r {
            eprintln!("{}: {e}", t.name);
        }
        let alive = children
            .0
            .get_mut(t.child)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        let r = match r {
            Ok(row) if !alive => Err(format!(
                "server exited during the run ({} sessions)",
                row.sessions
            )),
            other => other,
        };
        rows.push((t, r));
    }
    let load_end = loadavg();
    print_table(&cfg, &rows, &load_start, &load_end);
    drop(children);
    if rows.iter().any(|(_, r)| r.is_err()) {
        return Err("a server's run failed (see the table)".into());
    }
    Ok(())
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds on the monotonic clock, always 16 digits.
fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64 + T_OFFSET
}

fn payload_pad() -> String {
    let bare = payload(0, T_OFFSET, "").len();
    "x".repeat(PAYLOAD_BYTES.saturating_sub(bare))
}

fn payload(seq: u64, t: u64, pad: &str) -> String {
    format!(
        r#"{{"cmd":"invite","version":1,"call_id":"c{seq:010}","media":"video","t":{t},"pad":"{pad}"}}"#
    )
}

impl Kind {
    fn heartbeat(self) -> &'static str {
        match self {
            Kind::Ours => r#"{"type":"ping"}"#,
            Kind::PeerJs => r#"{"type":"HEARTBEAT"}"#,
        }
    }

    fn relay_frame(self, prefix: &str, to: u32, seq: u64, pad: &str) -> String {
        let p = payload(seq, now_ns(), pad);
        match self {
            Kind::Ours => {
                format!(r#"{{"type":"send","id":"{seq}","to":["{prefix}{to}"],"payload":{p}}}"#)
            }
            Kind::PeerJs => format!(r#"{{"type":"OFFER","dst":"{prefix}{to}","payload":{p}}}"#),
        }
    }

    fn relayed(self, kind: &str) -> bool {
        matches!(
            (self, kind),
            (Kind::Ours, "message") | (Kind::PeerJs, "OFFER")
        )
    }

    fn is_error(self, kind: &str) -> bool {
        match self {
            Kind::Ours => matches!(kind, "undeliverable" | "error" | "kicked_out"),
            Kind::PeerJs => matches!(kind, "ERROR" | "ID-TAKEN" | "EXPIRE" | "LEAVE"),
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    /// Connections that ended before we closed them.
    dropped: AtomicU64,
    lat_ns: Mutex<Vec<u64>>,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(what.chars().take(200).collect());
        }
    }
}

/// Only the fields the client looks at; serde skips the rest.
#[derive(serde::Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    payload: Option<Stamp>,
}

#[derive(serde::Deserialize)]
struct Stamp {
    t: Option<u64>,
}

fn on_text(kind: Kind, text: &str, stats: &Stats) {
    let now = now_ns();
    let Ok(v) = serde_json::from_str::<Incoming<'_>>(text) else {
        stats.error(text);
        return;
    };
    if kind.relayed(v.kind) {
        match v.payload.and_then(|p| p.t) {
            Some(t) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                stats
                    .lat_ns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(now.saturating_sub(t));
            }
            None => stats.error(text),
        }
    } else if kind.is_error(v.kind) {
        stats.error(text);
    }
}

/// The source address of client `i`: 127.0.0.2, 127.0.0.3, ...
fn source(i: usize, per_source: usize) -> IpAddr {
    let a = i / per_source;
    IpAddr::V4(Ipv4Addr::new(127, 0, (a / 250) as u8, (a % 250 + 2) as u8))
}

/// Connects from `src` and logs in as `user`; `cred` is the UserSig (ours)
/// or the token (PeerJS).
async fn login(
    kind: Kind,
    addr: SocketAddr,
    src: IpAddr,
    user: &str,
    cred: &str,
) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(src, 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let url = match kind {
        Kind::Ours => format!("ws://{addr}/ws"),
        Kind::PeerJs => format!("ws://{addr}/peerjs?key={PEER_KEY}&id={user}&token={cred}"),
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    if kind == Kind::Ours {
        let login =
            serde_json::json!({"type":"login","sdk_app_id":APP,"user_id":user,"user_sig":cred});
        ws.send(Message::text(login.to_string()))
            .await
            .map_err(|e| format!("send login: {e}"))?;
    }
    let welcome = match kind {
        Kind::Ours => "login_ok",
        Kind::PeerJs => "OPEN",
    };
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<Incoming<'_>>(t.as_str()) {
                Ok(v) if v.kind == welcome => return Ok(ws),
                _ => return Err(format!("login refused: {}", t.as_str())),
            },
            Some(Ok(Message::Close(c))) => return Err(format!("closed: {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

/// A relay order: send one message to active client `to`.
struct Cmd {
    to: u32,
    seq: u64,
}

async fn next_cmd(rx: &mut Option<mpsc::Receiver<Cmd>>) -> Option<Cmd> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// One client after login: heartbeats, relay orders, reading, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut ws: Ws,
    kind: Kind,
    prefix: &'static str,
    mut cmds: Option<mpsc::Receiver<Cmd>>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
    pad: Arc<str>,
) {
    let first = Duration::from_millis(rand::rng().random_range(500..3000));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + first, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return;
            }
            cmd = next_cmd(&mut cmds) => match cmd {
                Some(c) => {
                    let frame = kind.relay_frame(prefix, c.to, c.seq, &pad);
                    if ws.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                None => cmds = None,
            },
            _ = beat.tick() => {
                if ws.send(Message::text(kind.heartbeat())).await.is_err() {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => on_text(kind, t.as_str(), &stats),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    stats.dropped.fetch_add(1, Ordering::Relaxed);
}

/// Clients of one server: the order channels of the active ones, the tasks,
/// and the stop signal.
struct Fleet {
    cmds: Vec<mpsc::Sender<Cmd>>,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            cmds: Vec::new(),
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
        }
    }

    /// Closes every client and waits (bounded) for their tasks.
    async fn close(mut self, within: Duration) -> Result<(), String> {
        let _ = self.stop.send(true);
        self.cmds.clear();
        let deadline = tokio::time::Instant::now() + within;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(_) => {}
                Err(_) => {
                    let left = self.tasks.len();
                    self.tasks.abort_all();
                    return Err(format!("{left} clients still closing after {within:?}"));
                }
            }
        }
        Ok(())
    }
}

fn credential(kind: Kind, user: &str, now: u64) -> String {
    match kind {
        Kind::Ours => calling_usersig::generate(APP, KEY, user, 86_400, now),
        Kind::PeerJs => format!("tok-{user}"),
    }
}

/// Logs in `creds.len()` clients named `prefix{i}`; the first `active` get
/// relay order channels. Returns how many logged in and the first errors.
#[allow(clippy::too_many_arguments)]
async fn login_all(
    cfg: &Config,
    t: &Target,
    prefix: &'static str,
    creds: Vec<String>,
    active: usize,
    fleet: &mut Fleet,
    stats: &Arc<Stats>,
    pad: &Arc<str>,
    within: Duration,
) -> Result<(usize, Vec<String>), String> {
    let n = creds.len();
    let mut creds: Vec<Option<String>> = creds.into_iter().map(Some).collect();
    let (done_tx, mut done_rx) = mpsc::channel::<(usize, Result<Ws, String>)>(cfg.in_flight);
    let mut slots: Vec<Option<mpsc::Sender<Cmd>>> = (0..active).map(|_| None).collect();
    let (mut started, mut finished, mut ok) = (0usize, 0usize, 0usize);
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while finished < n {
        while started < n && started - finished < cfg.in_flight {
            let i = started;
            started += 1;
            let cred = creds[i].take().unwrap_or_default();
            let (kind, addr, src) = (t.kind, t.addr, source(i, cfg.per_source));
            let done = done_tx.clone();
            tokio::spawn(async move {
                let user = format!("{prefix}{i}");
                let r = tokio::time::timeout(
                    Duration::from_secs(20),
                    login(kind, addr, src, &user, &cred),
                )
                .await
                .unwrap_or_else(|_| Err("login timed out after 20 s".into()));
                let _ = done.send((i, r)).await;
            });
        }
        let next = tokio::time::timeout_at(deadline, done_rx.recv())
            .await
            .map_err(|_| {
                format!("login phase deadline ({within:?}) passed: {finished} of {n} done")
            })?;
        let Some((i, r)) = next else { break };
        finished += 1;
        match r {
            Ok(ws) => {
                ok += 1;
                let rx = if i < active {
                    let (tx, rx) = mpsc::channel(256);
                    slots[i] = Some(tx);
                    Some(rx)
                } else {
                    None
                };
                fleet.tasks.spawn(drive(
                    ws,
                    t.kind,
                    prefix,
                    rx,
                    fleet.stop.subscribe(),
                    stats.clone(),
                    pad.clone(),
                ));
            }
            Err(e) => {
                if errors.len() < 3 {
                    errors.push(format!("client {i}: {e}"));
                }
            }
        }
    }
    fleet.cmds = slots.into_iter().flatten().collect();
    if fleet.cmds.len() < active {
        return Err(format!(
            "only {} of {active} active clients logged in: {}",
            fleet.cmds.len(),
            errors.join("; ")
        ));
    }
    Ok((ok, errors))
}

/// What one server did.
struct Row {
    sessions: usize,
    attempted: usize,
    login_errors: Vec<String>,
    login_secs: f64,
    rss_before: u64,
    rss_after: u64,
    rss_relay: u64,
    idle_cpu_pct: f64,
    offered: u64,
    sent: u64,
    delivered: u64,
    errors: u64,
    first_error: Option<String>,
    dropped: u64,
    lat_ns: Vec<u64>,
    cpu_secs: f64,
    send_wall: f64,
    client_cpu: f64,
}

async fn bench_one(cfg: &Config, t: &Target) -> Result<Row, String> {
    let pad: Arc<str> = payload_pad().into();
    let now = calling_usersig::now_unix();

    // 1. Warm-up pair: log in, one message each way, leave.
    let warm = Arc::new(Stats::default());
    let mut fleet = Fleet::new();
    let creds = (0..2)
        .map(|i| credential(t.kind, &format!("warm{i}"), now))
        .collect();
    login_all(
        cfg,
        t,
        "warm",
        creds,
        2,
        &mut fleet,
        &warm,
        &pad,
        Duration::from_secs(20),
    )
    .await?;
    for (i, tx) in fleet.cmds.iter().enumerate() {
        let to = (1 - i) as u32;
        tx.send(Cmd { to, seq: i as u64 })
            .await
            .map_err(|_| "warm-up client gone")?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while warm.delivered.load(Ordering::Relaxed) < 2 {
        if Instant::now() > deadline {
            return Err(format!(
                "warm-up: {} of 2 messages relayed in 10 s ({:?})",
                warm.delivered.load(Ordering::Relaxed),
                warm.first_error.lock().unwrap_or_else(|p| p.into_inner())
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fleet.close(Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(t.pid)?;
    let fds_before = open_fds(t.pid);

    // 2. Logins. Credentials are made before the clock starts.
    let n = cfg.idle + cfg.active;
    let kind = t.kind;
    let creds = tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| credential(kind, &format!("u{i}"), now))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| e.to_string())?;
    let stats = Arc::new(Stats::default());
    let mut fleet = Fleet::new();
    let t0 = Instant::now();
    let login = login_all(
        cfg,
        t,
        "u",
        creds,
        cfg.active,
        &mut fleet,
        &stats,
        &pad,
        Duration::from_secs(300),
    )
    .await;
    let (sessions, login_errors) = match login {
        Ok(r) => r,
        Err(e) => {
            let _ = fleet.close(Duration::from_secs(30)).await;
            return Err(e);
        }
    };
    let login_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "   {sessions} of {n} logged in in {login_secs:.1} s{}",
        if login_errors.is_empty() {
            String::new()
        } else {
            format!(": {}", login_errors.join("; "))
        }
    );

    // 3. Two seconds idle, then memory.
    let idle_cpu0 = cpu_secs(t.pid)?;
    let idle_t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu_pct = 100.0 * (cpu_secs(t.pid)? - idle_cpu0) / idle_t0.elapsed().as_secs_f64();
    let rss_after = rss_kib(t.pid)?;

    // 4. Relay at the offered rate, round robin over the active senders.
    let a = fleet.cmds.len() as u64;
    let cpu0 = cpu_secs(t.pid)?;
    let client_cpu0 = cpu_secs(std::process::id())?;
    let start = Instant::now();
    let end = start + Duration::from_secs(cfg.secs);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut offered, mut queued) = (0u64, 0u64);
    while Instant::now() < end {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * cfg.rate as f64) as u64;
        while offered < due {
            let from = offered % a;
            let to = (from + 1 + (offered / a) % (a - 1)) % a;
            let cmd = Cmd {
                to: to as u32,
                seq: offered,
            };
            match fleet.cmds.get(from as usize).map(|tx| tx.try_send(cmd)) {
                Some(Ok(())) => queued += 1,
                _ => stats.error("client order queue full"),
            }
            offered += 1;
        }
    }
    let send_wall = start.elapsed().as_secs_f64();
    let cpu_secs_relay = cpu_secs(t.pid)? - cpu0;
    let drain_end = Instant::now() + Duration::from_secs(cfg.drain);
    while stats.delivered.load(Ordering::Relaxed) < queued && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client_cpu = cpu_secs(std::process::id())? - client_cpu0;
    let rss_relay = rss_kib(t.pid)?;

    // 5. Close every client, then wait for the server to let go of them.
    let closed = fleet.close(Duration::from_secs(30)).await;
    let fd_deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(t.pid) > fds_before + 16 && Instant::now() < fd_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Err(e) = closed {
        eprintln!("   {e}");
    }
    eprintln!(
        "   closed; server holds {} descriptors ({fds_before} before the logins)",
        open_fds(t.pid)
    );

    let mut lat_ns = std::mem::take(&mut *stats.lat_ns.lock().unwrap_or_else(|p| p.into_inner()));
    lat_ns.sort_unstable();
    let first_error = stats
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    Ok(Row {
        sessions,
        attempted: n,
        login_errors,
        login_secs,
        rss_before,
        rss_after,
        rss_relay,
        idle_cpu_pct,
        offered,
        sent: stats.sent.load(Ordering::Relaxed),
        delivered: stats.delivered.load(Ordering::Relaxed),
        errors: stats.errors.load(Ordering::Relaxed),
        first_error,
        dropped: stats.dropped.load(Ordering::Relaxed),
        lat_ns,
        cpu_secs: cpu_secs_relay,
        send_wall,
        client_cpu,
    })
}

fn pct_ms(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.3}", sorted[i.min(sorted.len() - 1)] as f64 / 1e6)
}

fn print_table(
    cfg: &Config,
    rows: &[(&Target, Result<Row, String>)],
    load_start: &str,
    load_end: &str,
) {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |name: &str, f: &dyn Fn(&Row) -> String| {
        let cells = rows
            .iter()
            .map(|(_, r)| match r {
                Ok(row) => f(row),
                Err(_) => "-".into(),
            })
            .collect();
        lines.push((name.to_string(), cells));
    };
    add("sessions logged in", &|r| {
        format!("{} of {}", r.sessions, r.attempted)
    });
    add("login phase", &|r| {
        format!(
            "{:.1} s ({:.0} logins/s)",
            r.login_secs,
            r.sessions as f64 / r.login_secs.max(1e-9)
        )
    });
    add("server RSS before (KiB)", &|r| r.rss_before.to_string());
    add("server RSS after, all logged in + 2 s (KiB)", &|r| {
        r.rss_after.to_string()
    });
    add("**KiB per session**", &|r| {
        format!(
            "**{:.2}**",
            r.rss_after.saturating_sub(r.rss_before) as f64 / r.sessions.max(1) as f64
        )
    });
    add("server RSS after the relay (KiB)", &|r| {
        r.rss_relay.to_string()
    });
    add("server CPU idle (heartbeats only)", &|r| {
        format!("{:.1} % of a core", r.idle_cpu_pct)
    });
    add("relay: delivered / sent (offered)", &|r| {
        format!("{} / {} ({})", r.delivered, r.sent, r.offered)
    });
    add("lost (sent - delivered)", &|r| {
        r.sent.saturating_sub(r.delivered).to_string()
    });
    add("latency p50 (ms)", &|r| pct_ms(&r.lat_ns, 0.50));
    add("latency p99 (ms)", &|r| pct_ms(&r.lat_ns, 0.99));
    add("latency p99.9 (ms)", &|r| pct_ms(&r.lat_ns, 0.999));
    add("latency max (ms)", &|r| pct_ms(&r.lat_ns, 1.0));
    add("**server CPU in relay**", &|r| {
        format!(
            "**{:.2} s = {:.1} % of a core**",
            r.cpu_secs,
            100.0 * r.cpu_secs / r.send_wall.max(1e-9)
        )
    });
    add("load client CPU in relay + drain", &|r| {
        format!("{:.2} s", r.client_cpu)
    });
    add("error frames / closed by server", &|r| {
        format!("{} / {}", r.errors, r.dropped)
    });

    println!();
    println!(
        "## Signaling servers side by side: {} idle + {} active sessions, {} msgs/s for {} s, {PAYLOAD_BYTES}-byte payloads",
        cfg.idle, cfg.active, cfg.rate, cfg.secs
    );
    println!();
    let head: Vec<String> = rows.iter().map(|(t, _)| t.name.clone()).collect();
    println!("| | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(rows.len()));
    for (name, cells) in &lines {
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!();
    println!("load average (1/5/15 min): {load_start} at start, {load_end} at end");
    for (t, r) in rows {
        match r {
            Err(e) => println!("{}: FAILED: {e}", t.name),
            Ok(row) => {
                if let Some(e) = &row.first_error {
                    println!("{}: first error frame: {e}", t.name);
                }
                for e in &row.login_errors {
                    println!("{}: login failure: {e}", t.name);
                }
            }
        }
    }
}
