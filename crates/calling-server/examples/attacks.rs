//! Attacks without an account (and a few with one) against the release
//! `calling-server` binary, and what each costs it: a benchmark of the
//! bounds in docs/PROTOCOL.md "Limits", not a test.
//!
//! ```text
//! cargo build --release -p calling-server --bin calling-server --example attacks
//! target/release/examples/attacks [--conns 1000] [--secs 5]
//! ```
//!
//! It starts the server as a child process (with an admin listener) and
//! runs one attack after the other, each for `--secs`, from 127.0.0.0/8
//! source addresses. During each it samples the server's RSS and CPU,
//! times an honest login every 200 ms and asks `/healthz` on both ports;
//! it prints one line per attack. Every wait is bounded.

#![allow(clippy::print_stdout)]

#[path = "common/attack_kit.rs"]
mod attack_kit;
#[path = "common/proc_stats.rs"]
mod proc_stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use attack_kit::{
    ServerChild, frame_header, honest_login, http_get, http_ok, src, start_server, tcp_from,
    upgrade,
};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use proc_stats::{cpu_secs, open_fds, rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const APP: u64 = 1_400_000_000;
const KEY: &str = "attacks-secret-key-0123456789abcdef";
/// Longest any single step may take.
const STEP: Duration = Duration::from_secs(5);

/// Attacks without an account (and a few with one) against the release
/// `calling-server` binary, and what each costs it (a benchmark, not a
/// test).
#[derive(Parser)]
#[command(name = "attacks")]
struct Args {
    /// Attacking connections per attack.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Seconds each attack lasts.
    #[arg(long, default_value_t = 5)]
    secs: u64,
}

fn sig(user: &str) -> String {
    calling_usersig::generate(APP, KEY, user, 3600, calling_usersig::now_unix())
}

async fn metric(admin: SocketAddr, name: &str) -> u64 {
    http_get(admin, "/metrics", STEP)
        .await
        .and_then(|out| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What the server went through during one attack.
#[derive(Default)]
struct Watch {
    rss_peak_kib: u64,
    fds_peak: usize,
    logins: Vec<Duration>,
    logins_failed: usize,
    health_main_failed: usize,
    health_admin_failed: usize,
    probes: usize,
}

/// Probes the server every 200 ms until `stop`.
async fn watch(server: &ServerChild, stop: Arc<AtomicBool>, tag: &str) -> Watch {
    let mut w = Watch::default();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        w.rss_peak_kib = w.rss_peak_kib.max(rss_kib(server.pid).unwrap_or(0));
        w.fds_peak = w.fds_peak.max(open_fds(server.pid));
        match honest_login(server.addr, APP, KEY, &format!("{tag}{i}"), STEP).await {
            Some(d) => w.logins.push(d),
            None => w.logins_failed += 1,
        }
        w.health_main_failed += usize::from(!http_ok(server.addr, "/healthz", STEP).await);
        w.health_admin_failed += usize::from(!http_ok(server.admin, "/healthz", STEP).await);
        w.probes += 1;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w
}

fn report(name: &str, base_rss: u64, cpu: f64, w: &Watch, extra: &str) {
    let mut logins = w.logins.clone();
    logins.sort();
    let p = |q: f64| {
        logins
            .get(((logins.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{name}: server RSS +{} MiB (peak {} MiB), CPU {:.0} % of a core, fds peak {}; \
         honest logins {}/{} ok, p50 {:.1} ms, max {:.1} ms; /healthz failed {} (main) {} (admin) of {}{extra}",
        w.rss_peak_kib.saturating_sub(base_rss) / 1024,
        w.rss_peak_kib / 1024,
        cpu * 100.0,
        w.fds_peak,
        logins.len(),
        logins.len() + w.logins_failed,
        p(0.5),
        p(1.0),
        w.health_main_failed,
        w.health_admin_failed,
        w.probes,
    );
}

/// Runs `attack` for `secs` while watching; returns the watch and the
/// server CPU used per second.
async fn during<F>(server: &ServerChild, secs: u64, tag: &str, attack: F) -> (Watch, f64)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let handle = tokio::spawn(attack);
    // Let the attack build up first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = cpu_secs(server.pid).unwrap_or(0.0);
    let t0 = Instant::now();
    let s = stop.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        s.store(true, Ordering::Relaxed);
    });
    let w = watch(server, stop, tag).await;
    let cpu = (cpu_secs(server.pid).unwrap_or(0.0) - cpu0) / t0.elapsed().as_secs_f64();
    let _ = timer.await;
    handle.abort();
    let _ = handle.await;
    // Let the server see the attack's connections go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (w, cpu)
}

/// What each attacking connection of [`hold`] sends.
#[derive(Clone, Copy)]
enum Opening {
    /// Nothing.
    Nothing,
    /// These bytes.
    Raw(&'static [u8]),
    /// The upgrade, then (after the 101) these bytes.
    Upgraded(&'static [u8]),
}

/// Holds `conns` connections, each sending its opening then waiting,
/// until the task is aborted.
async fn hold(server: SocketAddr, group: u8, conns: usize, opening: Opening) {
    let mut held = Held(Vec::with_capacity(conns));
    let mut failed = 0;
    for n in 0..conns {
        if let Some(mut s) = tcp_from(src(group, n), server, STEP).await {
            held.0.push(tokio::spawn(async move {
                match opening {
                    Opening::Nothing => {}
                    Opening::Raw(bytes) => {
                        let _ = s.write_all(bytes).await;
                    }
                    Opening::Upgraded(bytes) => {
                        if upgrade(&mut s, STEP).await {
                            let _ = s.write_all(bytes).await;
                        }
                    }
                }
                let mut sink = [0u8; 1024];
                // Read (and drop) whatever comes, until the server closes.
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                std::future::pending::<()>().await;
            }));
        } else {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("  ({failed} of {conns} attacking connections could not connect)");
    }
    std::future::pending::<()>().await;
}

/// Connection tasks, ended with the attack that holds them.
struct Held(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Held {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attacks: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(Args { conns, secs }: Args) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("calling-server"))
        .ok_or("cannot locate calling-server")?;
    let server = start_server(&bin, APP, KEY)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib(server.pid)?;
    println!(
        "calling-server pid {}, RSS {} MiB at start, {} attacking connections per attack, {secs} s each",
        server.pid,
        base / 1024,
        conns
    );

    // 1. Memory: each connection opens a 1 MB frame and sends 99.9 % of it.
    let mut big = frame_header(1_000_000);
    big.extend(std::iter::repeat_n(b'a', 999_000));
    let big: &'static [u8] = Vec::leak(big);
    let addr = server.addr;
    let (w, cpu) = during(
        &server,
        secs,
        "m",
        hold(addr, 10, conns, Opening::Upgraded(big)),
    )
    .await;
    let overruns = metric(server.admin, "calling_pre_login_overruns_total").await;
    report(
        "1 MB frames before login",
        base,
        cpu,
        &w,
        &format!("; closed for the pre-login budget: {overruns}"),
    );

    // 2. Descriptors: idle connections from many addresses, five times
    // the connections the server keeps for logins.
    let idle = (conns * 5).max(5000);
    let (w, cpu) = during(&server, secs, "f", hold(addr, 20, idle, Opening::Nothing)).await;
    let evicted = metric(server.admin, "calling_pending_evicted_total").await;
    let refused = metric(server.admin, "calling_connections_refused_total").await;
    report(
        &format!("{idle} idle connections"),
        base,
        cpu,
        &w,
        &format!("; evicted {evicted}, refused {refused}"),
    );

    // 3. CPU: a partial request line on each connection, held.
    let (w, cpu) = during(
        &server,
        secs,
        "c",
        hold(addr, 30, conns, Opening::Raw(b"GET /ws HT")),
    )
    .await;
    report("partial request lines", base, cpu, &w, "");

    // 4. CPU: four clients sending 1 MiB frames back to back before login,
    // reconnecting whenever closed.
    let flood = async move {
        let mut tasks = Held(Vec::new());
        for t in 0..4u8 {
            tasks.0.push(tokio::spawn(async move {
                let mut frame = frame_header(1 << 20);
                frame.extend(std::iter::repeat_n(b'b', 1 << 20));
                let mut n = 0;
                loop {
                    n += 1;
                    let Some(mut s) = tcp_from(src(40 + t, n % 200), addr, STEP).await else {
                        continue;
                    };
                    if !upgrade(&mut s, STEP).await {
                        continue;
                    }
                    while s.write_all(&frame).await.is_ok() {}
                }
            }));
        }
        std::future::pending::<()>().await;
        drop(tasks);
    };
    let (w, cpu) = during(&server, secs, "b", flood).await;
    report(
        "4 clients flooding 1 MiB frames before login",
        base,
        cpu,
        &w,
        "",
    );

    // 5. Clients that log in and stop reading, and one sender flooding them.
    let readers: Vec<String> = (0..20).map(|i| format!("deaf{i}")).collect();
    let mut deaf = Vec::new();
    for u in &readers {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .map_err(|e| e.to_string())?;
        let login = serde_json::json!({"type":"login","id":"L","sdk_app_id":APP,
            "user_id":u,"user_sig":sig(u)});
        ws.send(Message::text(login.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let _ = ws.next().await;
        deaf.push(ws);
    }
    let to = serde_json::json!(readers);
    let sender = async move {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await
        else {
            return;
        };
        let login = serde_json::json!({"type":"login","id":"L","sdk_app_id":APP,
            "user_id":"loud","user_sig":sig("loud")});
        let _ = ws.send(Message::text(login.to_string())).await;
        let payload = "x".repeat(32 * 1024);
        let (mut tx, mut rx) = ws.split();
        let _reader = Held(vec![tokio::spawn(async move {
            while rx.next().await.is_some() {}
        })]);
        for i in 0u64.. {
            let m = serde_json::json!({"type":"send","id":i.to_string(),"to":to,"payload":payload});
            if tx.send(Message::text(m.to_string())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (w, cpu) = during(&server, secs, "d", sender).await;
    let cut = metric(server.admin, "calling_slow_readers_cut_total").await;
    let fanout = metric(server.admin, "calling_fanout_limited_total").await;
    report(
        "20 logged-in clients not reading, one sender flooding them",
        base,
        cpu,
        &w,
        &format!("; cut off {cut}, sends over the fan-out budget {fanout}"),
    );
    drop(deaf);

    // 6. Logs: refused logins, as fast as one client can make them.
    let (bytes0, lines0) = (
        server.log_bytes.load(Ordering::Relaxed),
        server.log_lines.load(Ordering::Relaxed),
    );
    let refusals = async move {
        loop {
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await
            else {
                continue;
            };
            let login = serde_json::json!({"type":"login","id":"L","sdk_app_id":APP,
                "user_id":"mallory","user_sig":"forged"});
            let _ = ws.send(Message::text(login.to_string())).await;
            while let Some(Ok(_)) = ws.next().await {}
        }
    };
    let failed0 = metric(server.admin, "calling_logins_failed_total").await;
    let (w, cpu) = during(&server, secs, "l", refusals).await;
    let failed = metric(server.admin, "calling_logins_failed_total").await - failed0;
    let (bytes, lines) = (
        server.log_bytes.load(Ordering::Relaxed) - bytes0,
        server.log_lines.load(Ordering::Relaxed) - lines0,
    );
    report(
        "refused logins",
        base,
        cpu,
        &w,
        &format!("; {failed} refused, {lines} log lines ({bytes} bytes) written"),
    );
    Ok(())
}
