//! Load generator for the signaling server (a benchmark, not a test).
//!
//! `loadgen run` starts the release `calling-server` binary as a child
//! process, then spreads the users over several worker processes (the
//! open-file limit is per process), each binding its client sockets to its
//! own 127.0.0.x source addresses. It reports:
//! - logins per second while all workers log their users in at once,
//! - server RSS per idle logged-in connection (from /proc/<pid>/status),
//! - invites routed per second at a fixed offered rate, with p50/p99/max
//!   delivery latency and how many were lost.
//!
//! ```text
//! cargo build --release -p calling-server --bin calling-server --example loadgen
//! target/release/examples/loadgen run --users 19000 --workers 2 --rate 10000 --secs 10
//! ```
//!
//! With `--nodes K` it runs a cluster instead (docs/CLUSTER.md): a
//! `redis-server` on a free loopback port and K `calling-server --redis`
//! processes; worker `w` logs its users in on node `w % K` and sends each
//! invite to a user of a worker on another node, so every invite crosses
//! nodes through Redis. Memory is then the sum over the servers plus
//! Redis, and Redis's CPU is reported too:
//!
//! ```text
//! target/release/examples/loadgen run --nodes 6 --workers 6 --users 100000 --rate 10000 --secs 10
//! ```
//!
//! `--heartbeat-ms` sets the heartbeat interval the servers announce
//! (clients always ping at the announced one).
//!
//! Every address used is on 127.0.0.0/8; every phase has a deadline.

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[path = "common/proc_stats.rs"]
mod proc_stats;
use proc_stats::{cpu_secs, rss_kib};

const APP: u64 = 1_400_000_000;
const KEY: &str = "loadgen-secret-key-0123456789abcdef";

/// Load generator for the signaling server: logins per second, server RSS
/// per idle connection, invites routed per second (a benchmark, not a test).
#[derive(Parser)]
#[command(name = "loadgen")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the release `calling-server` and load it from worker processes.
    Run(RunArgs),
    /// One worker process (`run` starts them).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Users logged in, over all workers.
    #[arg(long, default_value_t = 19_000)]
    users: usize,
    /// Worker processes (the open-file limit is per process).
    #[arg(long, default_value_t = 2, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    workers: usize,
    /// Invites offered per second, over all workers.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of invite traffic.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// The `calling-server` binary (default: the one in the release
    /// directory above this example).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Run a cluster of this many server processes over one Redis instead
    /// of one server (0); `--workers` must be a multiple of it.
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// Heartbeat interval the servers announce, in milliseconds (timeout
    /// three times it); clients ping at the interval announced. Default:
    /// the server's (3 s).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// The `redis-server` binary for `--nodes`.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Runtime threads per server process (`calling-server --workers`;
    /// default: one per core).
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    server_threads: Option<usize>,
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// The server's address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// This worker's number: picks its source addresses and user ids.
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Users this worker logs in.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Invites per second this worker offers.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of invite traffic.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// In a cluster: how many workers there are and how many nodes, so
    /// that invites go to users of workers on other nodes (`W/K`).
    #[arg(long)]
    cross: Option<String>,
}

fn main() {
    let result = match Cli::parse().command {
        Cmd::Run(args) => run(args),
        Cmd::Worker(args) => worker(args),
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

/// Kills the child processes we started if we bail out early.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    let RunArgs {
        users,
        workers,
        rate,
        secs,
        server_bin,
        nodes,
        redis_server,
        heartbeat_ms,
        server_threads,
    } = args;
    if nodes > 0 && workers % nodes != 0 {
        return Err("--workers must be a multiple of --nodes".into());
    }
    if nodes == 1 {
        return Err("a cluster needs at least 2 nodes for invites to cross them".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let server_bin = match server_bin {
        Some(bin) => bin,
        None => exe
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("calling-server"))
            .ok_or("cannot locate calling-server")?,
    };

    let mut children = Children(Vec::new());
    let mut redis = None;
    let mut extra: Vec<String> = Vec::new();
    if nodes > 0 {
        let port = free_port()?;
        let child = Command::new(&redis_server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", redis_server.display()))?;
        redis = Some(child.id());
        children.0.push(child);
        wait_port(&format!("127.0.0.1:{port}"))?;
        extra = vec!["--redis".into(), format!("redis://127.0.0.1:{port}/")];
    }
    if let Some(ms) = heartbeat_ms {
        extra.extend([
            "--heartbeat-interval-ms".into(),
            ms.to_string(),
            "--heartbeat-timeout-ms".into(),
            (3 * ms).to_string(),
        ]);
    }
    if let Some(n) = server_threads {
        extra.extend(["--workers".into(), n.to_string()]);
    }
    let mut servers = Vec::new();
    for _ in 0..nodes.max(1) {
        let (child, listen) = start_server(&server_bin, &extra)?;
        servers.push((child.id(), listen));
        children.0.push(child);
    }
    std::thread::sleep(Duration::from_millis(200));
    let pids: Vec<u32> = servers.iter().map(|(p, _)| *p).chain(redis).collect();
    let server_pids: Vec<u32> = servers.iter().map(|(p, _)| *p).collect();
    let rss_all = |pids: &[u32]| -> Result<u64, String> {
        pids.iter()
            .map(|p| rss_kib(*p))
            .sum::<Result<u64, String>>()
    };
    let cpu_all = |pids: &[u32]| -> Result<f64, String> {
        pids.iter()
            .map(|p| cpu_secs(*p))
            .sum::<Result<f64, String>>()
    };
    let rss_before = rss_all(&pids)?;

    let per = users / workers;
    let mut procs = Vec::new();
    for w in 0..workers {
        let listen = &servers[w % servers.len()].1;
        let cross = format!("{workers}/{}", nodes.max(1));
        let mut child = Command::new(&exe)
            .args(if nodes > 0 {
                vec!["worker", "--cross", &cross]
            } else {
                vec!["worker"]
            })
            .args([
                "--addr",
                listen,
                "--index",
                &w.to_string(),
                "--users",
                &per.to_string(),
                "--rate",
                &(rate / workers as u64).to_string(),
                "--secs",
                &secs.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        procs.push((stdin, stdout));
        children.0.push(child);
    }
    for (input, out) in &mut procs {
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "SIGS" {
            return Err(format!("worker said {line:?}"));
        }
        let _ = input;
    }
    let login_cpu_before = cpu_all(&server_pids)?;
    let redis_cpu_login_before = redis.map(cpu_secs).transpose()?;
    let t0 = Instant::now();
    for (input, _) in &mut procs {
        input.write_all(b"LOGIN\n").map_err(|e| e.to_string())?;
        input.flush().map_err(|e| e.to_string())?;
    }
    let mut login_rates = Vec::new();
    for (_, out) in &mut procs {
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let ready = line
            .strip_prefix("READY ")
            .ok_or(format!("worker said {line:?}"))?;
        login_rates.push(ready.trim().to_string());
    }
    let login_wall = t0.elapsed();
    let login_cpu = cpu_all(&server_pids)? - login_cpu_before;
    let redis_cpu_login = match (redis, redis_cpu_login_before) {
        (Some(pid), Some(before)) => Some(cpu_secs(pid)? - before),
        _ => None,
    };
    // Let the server settle, then sample RSS with every user idle.
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = rss_all(&pids)?;
    let redis_rss_idle = redis.map(rss_kib).transpose()?;

    let cpu_before = cpu_all(&server_pids)?;
    let redis_cpu_before = redis.map(cpu_secs).transpose()?;
    let t_go = Instant::now();
    for (input, _) in &mut procs {
        input.write_all(b"GO\n").map_err(|e| e.to_string())?;
        input.flush().map_err(|e| e.to_string())?;
    }
    // Every worker has sent its invites and seen them arrive: read the
    // servers' CPU now, before the kick phase and before the workers exit
    // (100,000 connections closing at once would count as traffic).
    for (_, out) in &mut procs {
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "DRAINED" {
            return Err(format!("worker said {line:?}"));
        }
    }
    let traffic_wall = t_go.elapsed().as_secs_f64();
    let server_cpu = cpu_all(&server_pids)? - cpu_before;
    let redis_cpu = match (redis, redis_cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_secs(pid)? - before),
        _ => None,
    };
    for (input, _) in &mut procs {
        input.write_all(b"KICK\n").map_err(|e| e.to_string())?;
        input.flush().map_err(|e| e.to_string())?;
    }
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut undeliverable = 0u64;
    let mut errors = 0u64;
    let mut lat: Vec<u32> = Vec::new();
    let mut worker_cpu = 0.0;
    let mut kick_us: Vec<u64> = Vec::new();
    let mut kicks_tried = 0;
    for (_, out) in &mut procs {
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).map_err(|e| format!("worker result: {e}: {line}"))?;
        sent += v["sent"].as_u64().unwrap_or(0);
        received += v["received"].as_u64().unwrap_or(0);
        undeliverable += v["undeliverable"].as_u64().unwrap_or(0);
        errors += v["errors"].as_u64().unwrap_or(0);
        worker_cpu += v["cpu_s"].as_f64().unwrap_or(0.0);
        kicks_tried += v["kicks_tried"].as_u64().unwrap_or(0);
        if let Some(a) = v["kick_us"].as_array() {
            kick_us.extend(a.iter().filter_map(|x| x.as_u64()));
        }
        if std::env::var_os("LOADGEN_SLOW").is_some() {
            eprintln!("traffic start {} slow {}", v["traffic_start_ms"], v["slow"]);
        }
        if let Some(a) = v["lat_us"].as_array() {
            lat.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32));
        }
    }
    let rss_after = rss_all(&pids)?;
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat[i]) / 1000.0
    };
    let online = users - users % workers;
    println!("## loadgen results");
    if nodes > 0 {
        println!(
            "cluster                : {nodes} calling-server processes over one redis-server; every invite crosses nodes"
        );
    }
    println!("users logged in        : {online} over {workers} worker processes");
    println!(
        "login phase            : {:.2} s wall -> {:.0} logins/s (per worker: {})",
        login_wall.as_secs_f64(),
        online as f64 / login_wall.as_secs_f64(),
        login_rates.join("; ")
    );
    println!(
        "server CPU in logins   : {login_cpu:.2} s ({:.1} us per login: TCP accept, WebSocket upgrade, UserSig check, login_ok)",
        1e6 * login_cpu / online as f64
    );
    if let (Some(rss), Some(cpu)) = (redis_rss_idle, redis_cpu_login) {
        println!("redis                  : {rss} KiB RSS with all idle, {cpu:.2} s CPU in logins");
    }
    println!(
        "server RSS             : {rss_before} KiB before, {rss_idle} KiB with all idle, {rss_after} KiB after traffic"
    );
    println!(
        "RSS per idle session   : {:.1} KiB (servers{})",
        (rss_idle.saturating_sub(rss_before)) as f64 / online as f64,
        if redis.is_some() { " and Redis" } else { "" }
    );
    println!(
        "traffic                : offered {rate}/s for {secs} s: sent {sent}, delivered {received}, lost {}, undeliverable {undeliverable}, errors {errors}",
        sent.saturating_sub(received)
    );
    println!(
        "throughput             : {:.0} invites/s delivered",
        received as f64 / secs as f64
    );
    println!(
        "server CPU in traffic  : {server_cpu:.2} s over {traffic_wall:.1} s of sending and draining ({:.0}% of one core; {:.1} us per routed invite, heartbeats included)",
        100.0 * server_cpu / traffic_wall,
        1e6 * server_cpu / received.max(1) as f64
    );
    if let Some(cpu) = redis_cpu {
        println!(
            "redis CPU in traffic   : {cpu:.2} s ({:.0}% of one core)",
            100.0 * cpu / traffic_wall
        );
    }
    kick_us.sort_unstable();
    if !kick_us.is_empty() {
        let at =
            |p: f64| kick_us[((kick_us.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
        println!(
            "kick latency           : {} of {kicks_tried} kicks seen; new login sent -> old session's kicked_out: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            kick_us.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    println!("load generator CPU     : {worker_cpu:.2} s in total (all phases, all workers)");
    println!(
        "delivery latency       : p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        pct(1.0),
        lat.len()
    );
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits for `addr` to accept connections (bounded).
fn wait_port(addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing came up on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts one `calling-server` on a free loopback port.
fn start_server(bin: &PathBuf, extra: &[String]) -> Result<(Child, String), String> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new(bin)
        .args([
            "--listen",
            &listen,
            "--sdk-app-id",
            &APP.to_string(),
            "--secret-key",
            KEY,
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(server_log(&listen)?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    wait_port(&listen)?;
    Ok((child, listen))
}

/// Where a server's log goes: `$LOADGEN_SERVER_LOGS/<addr>.log` when
/// that directory is given, nowhere otherwise.
fn server_log(listen: &str) -> Result<Stdio, String> {
    match std::env::var_os("LOADGEN_SERVER_LOGS") {
        Some(dir) => {
            let path = PathBuf::from(dir).join(format!("{}.log", listen.replace(':', "_")));
            let file =
                std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Stdio::from(file))
        }
        None => Ok(Stdio::null()),
    }
}

/// Nanoseconds on a clock every worker process shares. With `--nodes`
/// an invite is stamped in one worker and received in another, so a
/// per-process `Instant` base would add the difference between the
/// processes' start times to every latency. The system clock is the
/// same in all of them; NTP slews it by at most 0.05 %, nothing in a
/// 10 s run.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn worker(args: WorkerArgs) -> Result<(), String> {
    let WorkerArgs {
        addr,
        index,
        users,
        rate,
        secs,
        cross,
    } = args;
    let cross = match cross {
        None => None,
        Some(c) => {
            let (w, k) = c.split_once('/').ok_or("--cross is W/K")?;
            let w: usize = w.parse().map_err(|_| "--cross is W/K")?;
            let k: usize = k.parse().map_err(|_| "--cross is W/K")?;
            if k < 2 || w % k != 0 {
                return Err("--cross needs W a multiple of K >= 2".into());
            }
            Some((w, k))
        }
    };
    if !addr.ip().is_loopback() {
        return Err("loadgen only targets loopback addresses".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(worker_main(addr, index, users, rate, secs, cross))
}

#[derive(Default)]
struct Stats {
    received: AtomicU64,
    undeliverable: AtomicU64,
    errors: AtomicU64,
    lat_us: Mutex<Vec<u32>>,
    /// (send time ms since base, latency us) of deliveries slower than 20 ms.
    slow: Mutex<Vec<(u64, u32)>>,
    /// When (ns since base) old sessions received `kicked_out`.
    kicked_ns: Mutex<Vec<u64>>,
}

async fn login_one(
    addr: SocketAddr,
    src: IpAddr,
    user: String,
    sig: String,
    stats: Arc<Stats>,
) -> Result<(mpsc::Sender<String>, u64), String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(src, 0))
        .map_err(|e| e.to_string())?;
    let tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(format!("ws://{addr}/ws"), tcp, Some(config))
            .await
            .map_err(|e| e.to_string())?;
    let login = serde_json::json!({"type":"login","sdk_app_id":APP,"user_id":user,"user_sig":sig});
    let login_sent_ns = now_ns();
    ws.send(Message::text(login.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let interval_ms = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"login_ok\"") => {
                let ok: serde_json::Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                break ok["heartbeat_interval_ms"]
                    .as_u64()
                    .unwrap_or(3000)
                    .max(100);
            }
            Some(Ok(Message::Text(t))) => return Err(format!("login refused: {t}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    };
    let (tx, mut rx) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now()
                + Duration::from_millis(rand::rng().random_range(interval_ms / 6..interval_ms)),
            Duration::from_millis(interval_ms),
        );
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(text) => if ws.send(Message::text(text)).await.is_err() { break },
                    None => break,
                },
                _ = ping.tick() => {
                    if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() { break }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => on_text(&t, &stats),
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
    });
    Ok((tx, login_sent_ns))
}

/// Only the fields the load generator looks at; serde skips the rest.
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

fn on_text(text: &str, stats: &Stats) {
    let Ok(v) = serde_json::from_str::<Incoming<'_>>(text) else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    match v.kind {
        "message" => {
            let sent_ns = v.payload.and_then(|p| p.t).unwrap_or(0);
            let now_ns = now_ns();
            let us = (now_ns.saturating_sub(sent_ns) / 1000) as u32;
            stats.received.fetch_add(1, Ordering::Relaxed);
            stats
                .lat_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(us);
            if us > 20_000 {
                let at = sent_ns / 1_000_000;
                stats
                    .slow
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((at, us));
            }
        }
        "kicked_out" => {
            let now_ns = now_ns();
            stats
                .kicked_ns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(now_ns);
        }
        "undeliverable" => {
            stats.undeliverable.fetch_add(1, Ordering::Relaxed);
        }
        "error" => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Tells the parent `said` and waits for its next line (GO, KICK), read
/// on a plain thread so the runtime keeps serving the connections.
async fn barrier(said: String) {
    println!("{said}");
    let _ = std::io::stdout().flush();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = tokio::time::timeout(Duration::from_secs(600), rx).await;
}

async fn worker_main(
    addr: SocketAddr,
    index: usize,
    users: usize,
    rate: u64,
    secs: u64,
    cross: Option<(usize, usize)>,
) -> Result<(), String> {
    let stats = Arc::new(Stats::default());
    // UserSigs are made before the clock starts: issuing them is the app
    // backend's job, not part of a login.
    let now = calling_usersig::now_unix();
    let mut sigs: Vec<Option<String>> = (0..users)
        .map(|i| {
            Some(calling_usersig::generate(
                APP,
                KEY,
                &format!("w{index}u{i}"),
                86_400,
                now,
            ))
        })
        .collect();
    println!("SIGS");
    let _ = std::io::stdout().flush();
    let mut go_line = String::new();
    let _ = std::io::stdin().read_line(&mut go_line);
    let t0 = Instant::now();
    // Bounded concurrency keeps the connect burst within the listen backlog.
    let in_flight = 256;
    let (done_tx, mut done_rx) = mpsc::channel(in_flight);
    let mut conns: Vec<Option<mpsc::Sender<String>>> = vec![None; users];
    let mut started = 0usize;
    let mut finished = 0usize;
    let mut failed = 0usize;
    let login_deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while finished < users {
        while started < users && started - finished < in_flight {
            let i = started;
            started += 1;
            // Spread sources over 127.<index+1>.x.y so no (source, server)
            // pair runs out of ephemeral ports.
            let src = IpAddr::V4(Ipv4Addr::new(
                127,
                (index + 1) as u8,
                (i / 250) as u8,
                (i % 250 + 2) as u8,
            ));
            let user = format!("w{index}u{i}");
            let sig = sigs[i].take().unwrap_or_default();
            let stats = stats.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let r = login_one(addr, src, user, sig, stats).await;
                let _ = done.send((i, r)).await;
            });
        }
        let next = tokio::time::timeout_at(login_deadline, done_rx.recv())
            .await
            .map_err(|_| "login phase deadline passed")?;
        let Some((i, r)) = next else { break };
        finished += 1;
        match r {
            Ok((tx, _)) => conns[i] = Some(tx),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("worker {index}: login {i} failed: {e}");
                }
            }
        }
    }
    let login_secs = t0.elapsed().as_secs_f64();
    let conns: Vec<mpsc::Sender<String>> = conns.into_iter().flatten().collect();
    barrier(format!(
        "READY {} ok, {failed} failed, {:.0} logins/s",
        conns.len(),
        conns.len() as f64 / login_secs
    ))
    .await;

    let n = conns.len();
    let mut sent = 0u64;
    let traffic_start_ms = now_ns() / 1_000_000;
    if n >= 2 && rate > 0 {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut rng = rand::rng();
        while Instant::now() < end {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let from = rng.random_range(0..n);
                let (peer, to) = match cross {
                    // A worker whose node is another: same per-worker
                    // users, so `to` is one of theirs.
                    Some((w, k)) => {
                        let peer = loop {
                            let j = rng.random_range(0..w);
                            if j % k != index % k {
                                break j;
                            }
                        };
                        (peer, rng.random_range(0..users))
                    }
                    None => {
                        let mut to = rng.random_range(0..n - 1);
                        if to >= from {
                            to += 1;
                        }
                        (index, to)
                    }
                };
                let t = now_ns();
                let frame = format!(
                    r#"{{"type":"send","id":"{sent}","to":["w{peer}u{to}"],"payload":{{"cmd":"invite","version":1,"call_id":"c{index}-{sent}","media":"video","timeout":30,"t":{t}}}}}"#
                );
                if conns[from].try_send(frame).is_ok() {
                    sent += 1;
                } else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    sent += 1;
                }
            }
        }
    }
    // Drain: wait until everything arrived or 5 s passed. Across nodes a
    // worker receives other workers' invites, not its own, so there it
    // waits until nothing has arrived for 300 ms.
    let drain_end = Instant::now() + Duration::from_secs(5);
    let arrived =
        || stats.received.load(Ordering::Relaxed) + stats.undeliverable.load(Ordering::Relaxed);
    let mut last = (arrived(), Instant::now());
    while Instant::now() < drain_end {
        let now = arrived();
        if cross.is_none() && now >= sent {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if cross.is_some() && last.1.elapsed() >= Duration::from_millis(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    barrier("DRAINED".into()).await;
    // Kick latency: log in again as existing users, one at a time, and time
    // from the new login frame to the old session's kicked_out.
    let mut kick_us: Vec<u64> = Vec::new();
    let kicks = n.min(100);
    let mut kept = Vec::new();
    for k in 0..kicks {
        let before = stats
            .kicked_ns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let now = calling_usersig::now_unix();
        let user = format!("w{index}u{k}");
        let sig = calling_usersig::generate(APP, KEY, &user, 86_400, now);
        let src = IpAddr::V4(Ipv4Addr::new(
            127,
            (index + 1) as u8,
            200,
            (k % 250 + 2) as u8,
        ));
        let Ok((tx, sent_ns)) = login_one(addr, src, user, sig, stats.clone()).await else {
            continue;
        };
        kept.push(tx);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let got = stats
                .kicked_ns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(before)
                .copied();
            if let Some(at) = got {
                kick_us.push(at.saturating_sub(sent_ns) / 1000);
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let lat = std::mem::take(&mut *stats.lat_us.lock().unwrap_or_else(|p| p.into_inner()));
    let out = serde_json::json!({
        "sent": sent,
        "received": stats.received.load(Ordering::Relaxed),
        "undeliverable": stats.undeliverable.load(Ordering::Relaxed),
        "errors": stats.errors.load(Ordering::Relaxed),
        "lat_us": lat,
        "kick_us": kick_us,
        "kicks_tried": kicks,
        "cpu_s": cpu_secs(std::process::id()).unwrap_or(0.0),
        "traffic_start_ms": traffic_start_ms,
        "slow": std::mem::take(&mut *stats.slow.lock().unwrap_or_else(|p| p.into_inner())),
    });
    println!("{out}");
    let _ = std::io::stdout().flush();
    Ok(())
}
