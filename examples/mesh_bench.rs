//! A 6-party mesh call on this machine: how long until every pair has
//! media, and the CPU and memory each client uses while the call runs.
//!
//! ```sh
//! cargo run --release -p calling-examples --example mesh_bench [-- --parties 6 --secs 10 --audio]
//! ```
//!
//! The parent process runs `calling-server` in-process on 127.0.0.1:0 and
//! starts one child process per party (this same binary with `--child`), so
//! that each client's CPU time and memory are its own (Linux `/proc`). The
//! first party group-calls the others, who accept at once; every child
//! reports when it has received audio (and, in a video call, video) from
//! every other party, then measures its CPU time over `--secs` seconds of
//! steady call and its resident memory, and hangs up. Everything is bounded:
//! a child that does not get media from everyone within 60 s fails.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use calling::{CallEvent, Calling, CallingConfig, Event, MediaType};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

#[path = "support/logging.rs"]
mod logging;

const APP: u64 = 1_400_000_000;
const KEY: &str = "mesh-bench-key";
const LIMIT: Duration = Duration::from_secs(60);

/// A mesh call on this machine: time until every pair has media, CPU and
/// memory per client.
#[derive(Debug, Parser)]
#[command(name = "mesh_bench")]
struct Args {
    /// Parties in the call, 2 to 9.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(2..=9))]
    parties: u64,
    /// Seconds of steady call each client measures.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// An audio call (default: video).
    #[arg(long)]
    audio: bool,
    /// Run as one party (the parent starts these).
    #[arg(long, hide = true, requires_all = ["url", "user"])]
    child: bool,
    /// The child's server URL.
    #[arg(long, hide = true)]
    url: Option<String>,
    /// The child's user id.
    #[arg(long, hide = true)]
    user: Option<String>,
    /// The child places the group call.
    #[arg(long, hide = true)]
    caller: bool,
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    logging::init();
    let result = if args.child {
        child(args).await
    } else {
        parent(args).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("mesh_bench: {why}");
            ExitCode::FAILURE
        }
    }
}

fn names(parties: usize) -> Vec<String> {
    (0..parties).map(|i| format!("p{i}")).collect()
}

/// One report line of a child, parsed.
#[derive(Debug, Default)]
struct Report {
    user: String,
    all_media_unix_ms: u128,
    cpu_percent: f64,
    rss_kib: u64,
    peak_rss_kib: u64,
}

async fn parent(args: Args) -> Result<(), String> {
    let parties = party_count(&args);
    let (secs, audio) = (args.secs, args.audio);
    let mut config = calling_server::Config::new(APP, KEY);
    config.listen = "127.0.0.1:0"
        .parse()
        .map_err(|e| format!("bad listen address: {e}"))?;
    let server = calling_server::Server::bind(config)
        .await
        .map_err(|e| format!("server: {e}"))?;
    let url = format!("ws://{}/ws", server.local_addr());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let all = names(parties);
    let mut children = Vec::new();
    // Callees first, so they are logged in when the call is placed.
    for (i, user) in all.iter().enumerate().rev() {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("--child")
            .args(["--url", &url, "--user", user])
            .args(["--parties", &parties.to_string()])
            .args(["--secs", &secs.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if audio {
            cmd.arg("--audio");
        }
        if i == 0 {
            cmd.arg("--caller");
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // Wait for "logged-in" before starting the next one.
        let first = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .map_err(|_| format!("{user} did not log in"))?
            .map_err(|e| e.to_string())?;
        if first.as_deref() != Some("logged-in") {
            return Err(format!("{user}: unexpected {first:?}"));
        }
        children.push((user.clone(), child, lines));
    }
    let mut placed_ms = None;
    let mut reports = Vec::new();
    for (user, mut child, mut lines) in children {
        let mut report = Report {
            user: user.clone(),
            ..Report::default()
        };
        let deadline = LIMIT + Duration::from_secs(secs) + Duration::from_secs(30);
        let read = tokio::time::timeout(deadline, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut w = line.split_whitespace();
                match (w.next(), w.next()) {
                    (Some("placed"), Some(ms)) => placed_ms = ms.parse::<u128>().ok(),
                    (Some("all-media"), Some(ms)) => {
                        report.all_media_unix_ms = ms.parse().unwrap_or(0)
                    }
                    (Some("usage"), Some(cpu)) => {
                        report.cpu_percent = cpu.parse().unwrap_or(0.0);
                        report.rss_kib = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                        report.peak_rss_kib = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    }
                    _ => {}
                }
            }
        })
        .await;
        if read.is_err() {
            return Err(format!("{user} did not finish"));
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("{user} failed: {status}"));
        }
        reports.push(report);
    }
    server.shutdown().await;
    let placed = placed_ms.ok_or("the caller never placed the call")?;
    let kind = if audio { "audio" } else { "video" };
    println!("{parties}-party {kind} mesh, {secs} s of steady call per client");
    let mut slowest = 0;
    for r in &reports {
        let t = r.all_media_unix_ms.saturating_sub(placed);
        slowest = slowest.max(t);
        println!(
            "{:>4}: media from all {} peers after {:>5} ms; CPU {:>5.1} % of one core; RSS {:>6.1} MiB (peak {:.1} MiB)",
            r.user,
            parties - 1,
            t,
            r.cpu_percent,
            r.rss_kib as f64 / 1024.0,
            r.peak_rss_kib as f64 / 1024.0
        );
    }
    let n = reports.len() as f64;
    println!(
        "every pair had media {slowest} ms after the call was placed; mean CPU {:.1} %, mean RSS {:.1} MiB per client",
        reports.iter().map(|r| r.cpu_percent).sum::<f64>() / n,
        reports.iter().map(|r| r.rss_kib as f64).sum::<f64>() / n / 1024.0
    );
    Ok(())
}

/// CPU ticks used so far by this process (utime + stime from /proc).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `--parties` (clap keeps it within 2..=9).
fn party_count(args: &Args) -> usize {
    usize::try_from(args.parties).unwrap_or(6)
}

async fn child(args: Args) -> Result<(), String> {
    let parties = party_count(&args);
    let secs = args.secs;
    let url = args.url.ok_or("--url")?;
    let user = args.user.ok_or("--user")?;
    let media_type = if args.audio {
        MediaType::Audio
    } else {
        MediaType::Video
    };
    let sig = calling_usersig::generate(APP, KEY, &user, 3600, calling_usersig::now_unix());
    let (phone, mut events) = Calling::login(calling::Login {
        server: url.to_string(),
        sdk_app_id: APP,
        user_id: user.to_string(),
        user_sig: sig,
        config: CallingConfig::loopback(),
    })
    .await
    .map_err(|e| format!("login: {e}"))?;
    println!("logged-in");
    let others: Vec<String> = names(parties).into_iter().filter(|u| *u != user).collect();
    if args.caller {
        let refs: Vec<&str> = others.iter().map(String::as_str).collect();
        println!("placed {}", unix_ms());
        phone
            .group_call(&refs, media_type, Duration::from_secs(30))
            .await
            .map_err(|e| format!("group call: {e}"))?;
    } else {
        let invite = tokio::time::timeout(LIMIT, async {
            while let Some(e) = events.recv().await {
                if let Event::Call(CallEvent::Invited { invite_id, .. }) = e {
                    return Some(invite_id);
                }
            }
            None
        })
        .await
        .map_err(|_| "never invited")?
        .ok_or("logged out before the invite")?;
        phone
            .accept(&invite)
            .await
            .map_err(|e| format!("accept: {e}"))?;
    }
    // Media from everyone: audio, and video in a video call.
    let start = Instant::now();
    loop {
        let stats = phone.stats().await.map_err(|e| e.to_string())?;
        let done = others.iter().all(|o| {
            stats.iter().any(|s| {
                s.user == o.as_str()
                    && s.audio_frames_received > 0
                    && (media_type == MediaType::Audio || s.video_frames_received > 0)
            })
        });
        if done {
            break;
        }
        if start.elapsed() > LIMIT {
            return Err(format!("{user}: no media from every peer in {LIMIT:?}"));
        }
        // Keep the event queue moving while waiting.
        while events.try_recv().is_some() {}
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("all-media {}", unix_ms());
    // Steady state: CPU over `secs` seconds, then memory.
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let t0 = cpu_ticks();
    let w0 = Instant::now();
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("{user}: logged out during the call")),
            Err(_) => break,
        }
    }
    let cpu = match (t0, cpu_ticks()) {
        (Some(a), Some(b)) => (b - a) as f64 / ticks_per_sec / w0.elapsed().as_secs_f64() * 100.0,
        _ => f64::NAN,
    };
    let rss = status_kib("VmRSS:").unwrap_or(0);
    let peak = status_kib("VmHWM:").unwrap_or(0);
    println!("usage {cpu:.1} {rss} {peak}");
    let _ = phone.hangup().await;
    let _ = phone.logout().await;
    Ok(())
}
