//! `lab-node`: what the NAT lab runs inside its network namespaces, one
//! process per machine, each speaking JSON lines on stdout (see
//! `docs/NETLAB.md`) and taking commands on stdin.
//!
//! - `lab-node server`: calling-server (library) with TLS and STUN/TURN.
//! - `lab-node peer`: a Rust SDK client that logs in over `wss://` with the
//!   lab's CA, calls or answers, and reports received frames and setup time.
//! - `lab-node stun-probe`: the public address a NAT maps one UDP socket to,
//!   as seen by several STUN servers (same port everywhere or not).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use calling::{
    CallEvent, Calling, CallingConfig, Event, MediaType, PixelFormat, RawVideoInput, VideoFrame,
    VideoInput, VideoQuality,
};
use calling_netlab::{APP, KEY};
use calling_server::{Config, DemoMode, Server, TlsFiles, TurnConfig};
use clap::{Parser, Subcommand};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(about = "A machine of the calling NAT lab")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run calling-server with TLS until stdin closes.
    Server(ServerArgs),
    /// Log in as a user, call or answer, and report media.
    Peer(PeerArgs),
    /// Send STUN binding requests from one socket to each server.
    StunProbe(ProbeArgs),
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Address to listen on (https:// and wss://).
    #[arg(long)]
    listen: SocketAddr,
    /// PEM certificate chain.
    #[arg(long)]
    tls_cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    tls_key: PathBuf,
    /// STUN URLs announced in login_ok.
    #[arg(long)]
    stun_url: Vec<String>,
    /// TURN URLs announced in login_ok (with --turn-secret).
    #[arg(long)]
    turn_url: Vec<String>,
    /// The TURN REST API secret the credentials are signed with.
    #[arg(long)]
    turn_secret: Option<String>,
    /// Hand out UserSigs to the web demo (the browser test).
    #[arg(long)]
    demo: bool,
}

#[derive(clap::Args, Debug)]
struct PeerArgs {
    /// The server's `wss://…/ws` URL.
    #[arg(long)]
    url: String,
    /// PEM CA the server's certificate is signed by.
    #[arg(long)]
    ca: PathBuf,
    /// Who to log in as.
    #[arg(long)]
    user: String,
    /// Call this user (otherwise answer every invite).
    #[arg(long)]
    call: Option<String>,
    /// How many calls to place one after the other (with --call).
    #[arg(long, default_value_t = 1)]
    calls: u32,
    /// Relay (TURN) candidates only.
    #[arg(long)]
    relay_only: bool,
    /// Frames of each kind to receive before reporting `frames`; with
    /// `--calls` above 1 the caller hangs up then and calls again.
    #[arg(long, default_value_t = 20)]
    frames: u64,
    /// A stall of media at least this long is reported when it ends.
    #[arg(long, default_value_t = 400)]
    stall_ms: u64,
    /// The video profile's height: 480 (the SDK's default), 720 or 1080.
    #[arg(long, default_value_t = 480)]
    video_height: u32,
    /// Send a busy picture instead of the test pattern: raw frames of the
    /// profile's size at 15 fps with sensor-like grain that differs in
    /// every frame, so that video fills its target as a camera's does (the
    /// pattern is so easy that it sends a fraction of any target).
    #[arg(long)]
    noise: bool,
}

#[derive(clap::Args, Debug)]
struct ProbeArgs {
    /// STUN servers (ip:port), all asked from one local socket.
    #[arg(long, required = true)]
    server: Vec<SocketAddr>,
}

fn main() -> std::process::ExitCode {
    // Logs to stderr: stdout carries the JSON lines the lab reads.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(calling::log_colour(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let result = match args.command {
        Command::StunProbe(p) => probe(&p),
        command => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(async move {
                match command {
                    Command::Server(s) => server(s).await,
                    Command::Peer(p) => peer(p).await,
                    Command::StunProbe(_) => unreachable!("handled above"),
                }
            }),
            Err(e) => Err(format!("tokio runtime: {e}")),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            say(json!({"type": "fatal", "error": e}));
            std::process::ExitCode::FAILURE
        }
    }
}

/// One JSON line on stdout (line-buffered, so the lab sees it at once),
/// stamped with the milliseconds since the node started.
fn say(mut value: serde_json::Value) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    if let Some(o) = value.as_object_mut() {
        o.insert("t_ms".into(), json!(start.elapsed().as_millis() as u64));
    }
    println!("{value}");
}

/// Lines from stdin; `None` once it closes (the lab is done with us).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    rx
}

async fn server(args: ServerArgs) -> Result<(), String> {
    let mut config = Config::new(APP, KEY);
    config.listen = args.listen;
    config.tls = Some(TlsFiles::new(args.tls_cert, args.tls_key));
    config.ice.stun_urls = args.stun_url;
    if let Some(secret) = args.turn_secret {
        config.ice.turn = Some(TurnConfig::new(args.turn_url, secret));
    }
    if args.demo {
        config.demo = Some(DemoMode::new(KEY));
    }
    let server = Server::bind(config).await.map_err(|e| e.to_string())?;
    say(json!({"type": "listening", "addr": server.local_addr().to_string()}));
    // What the calling-server binary does at start: check that the TURN
    // servers accept our credentials, in the background.
    let checker = server.turn_checker();
    tokio::spawn(async move {
        for (url, result) in checker.run().await {
            say(json!({
                "type": "turn_check",
                "url": url,
                "relayed": result.as_ref().ok().map(|a| a.to_string()),
                "error": result.as_ref().err().map(|e| e.to_string()),
            }));
        }
    });
    let mut stdin = stdin_lines();
    while stdin.recv().await.is_some() {}
    server.shutdown().await;
    Ok(())
}

/// Where the peer is in its current call.
#[derive(Default)]
struct CallProgress {
    /// When the other side entered (the caller sees the accept).
    entered: Option<Instant>,
    /// When the first remote frame arrived.
    first_frame: Option<Instant>,
    frames_reported: bool,
    /// Total frames received at the last change, and when it changed.
    last_total: u64,
    last_change: Option<Instant>,
    stalled: bool,
}

async fn peer(args: PeerArgs) -> Result<(), String> {
    let ca = std::fs::read(&args.ca).map_err(|e| format!("{}: {e}", args.ca.display()))?;
    let mut config = CallingConfig {
        extra_ca_pem: Some(ca),
        ..CallingConfig::default()
    };
    // The default bind addresses (every interface) are what the lab proves.
    config.media.relay_only = args.relay_only;
    config.media.video_quality = match args.video_height {
        480 => VideoQuality::P480,
        720 => VideoQuality::P720,
        1080 => VideoQuality::P1080,
        h => return Err(format!("--video-height {h}: 480, 720 or 1080")),
    };
    let _noise = if args.noise {
        let input = RawVideoInput::new();
        config.video = Some(VideoInput::Raw(input.clone()));
        Some(Noise::start(input, config.media.video_quality.resolution()))
    } else {
        None
    };
    let sig = calling_usersig::generate(APP, KEY, &args.user, 3600, calling_usersig::now_unix());
    let (client, mut events) = Calling::login(calling::Login {
        server: args.url.to_string(),
        sdk_app_id: APP,
        user_id: args.user.to_string(),
        user_sig: sig,
        config,
    })
    .await
    .map_err(|e| format!("login: {e}"))?;
    say(json!({"type": "ready", "user": args.user}));

    let mut stdin = stdin_lines();
    let mut progress = CallProgress::default();
    let mut calls_left = args.calls;
    let mut in_call = false;
    let ring = Duration::from_secs(30);
    let place_call = |client: &Calling| {
        let client = client.clone();
        let to = args.call.clone();
        async move {
            if let Some(to) = to {
                match client.call(&to, MediaType::Video, ring).await {
                    Ok(id) => say(json!({"type": "calling", "call_id": id.to_string()})),
                    Err(e) => say(json!({"type": "error", "error": format!("call: {e}")})),
                }
            }
        }
    };
    if args.call.is_some() && calls_left > 0 {
        calls_left -= 1;
        place_call(&client).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut last_stats = Instant::now();
    loop {
        tokio::select! {
            line = stdin.recv() => match line.as_deref().map(str::trim) {
                Some("hangup") => {
                    let r = client.hangup().await;
                    say(json!({"type": "hung_up", "ok": r.is_ok()}));
                }
                Some("stats") => say(stats_line(&client).await),
                Some(_) => {}
                None => break,
            },
            event = events.recv() => {
                let Some(event) = event else { break };
                say(json!({"type": "event", "event": format!("{event:?}")}));
                match event {
                    Event::Call(CallEvent::Invited { invite_id, .. }) => {
                        if let Err(e) = client.accept(&invite_id).await {
                            say(json!({"type": "error", "error": format!("accept: {e}")}));
                        }
                        progress = CallProgress { entered: Some(Instant::now()), ..Default::default() };
                        in_call = true;
                    }
                    Event::Call(CallEvent::UserEnter { .. }) => {
                        progress = CallProgress { entered: Some(Instant::now()), ..Default::default() };
                        in_call = true;
                    }
                    Event::Call(CallEvent::CallEnd { .. }) => {
                        in_call = false;
                        if calls_left > 0 {
                            calls_left -= 1;
                            place_call(&client).await;
                        } else if args.call.is_some() {
                            say(json!({"type": "done"}));
                        }
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                if !in_call {
                    continue;
                }
                let Ok(stats) = client.stats().await else { continue };
                let Some(s) = stats.first() else { continue };
                let now = Instant::now();
                let total = s.audio_frames_received + s.video_frames_received;
                if total > 0 && progress.first_frame.is_none() {
                    progress.first_frame = Some(now);
                    let setup = progress.entered.map(|t| now.duration_since(t).as_secs_f64() * 1000.0);
                    say(json!({"type": "first_frame", "setup_ms": setup}));
                }
                if total != progress.last_total {
                    if progress.stalled
                        && let Some(since) = progress.last_change
                    {
                        say(json!({"type": "resumed", "gap_ms": now.duration_since(since).as_millis() as u64}));
                    }
                    progress.stalled = false;
                    progress.last_total = total;
                    progress.last_change = Some(now);
                } else if let Some(since) = progress.last_change
                    && !progress.stalled
                    && now.duration_since(since) >= Duration::from_millis(args.stall_ms)
                {
                    progress.stalled = true;
                    say(json!({"type": "stalled"}));
                }
                if !progress.frames_reported
                    && s.audio_frames_received >= args.frames
                    && s.video_frames_received >= args.frames
                {
                    progress.frames_reported = true;
                    say(stats_line(&client).await.as_object().cloned().map(|mut o| {
                        o.insert("type".into(), "frames".into());
                        serde_json::Value::Object(o)
                    }).unwrap_or_default());
                    if args.call.is_some() && args.calls > 1 {
                        let _ = client.hangup().await;
                    }
                }
                if now.duration_since(last_stats) >= Duration::from_millis(500) {
                    last_stats = now;
                    say(stats_line(&client).await);
                }
            }
        }
    }
    let _ = client.logout().await;
    Ok(())
}

/// Pushes noise pictures into a raw video input at 15 fps until dropped.
struct Noise {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Noise {
    fn start(input: RawVideoInput, (w, h): (u32, u32)) -> Noise {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            // A few pictures made up front and shown in turn: each differs
            // from the one before everywhere, and pushing one costs a copy
            // of a reference only.
            // A gradient with grain of +-16 levels, as a camera's sensor
            // noise: at a low quantizer the grain costs every bit the
            // target allows, at a high one it is smoothed away, so the
            // encoder can meet any target (pure noise it cannot: its
            // rate control then sends one huge frame a second).
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            let luma = (w * h) as usize;
            let pictures: Vec<calling_media::Bytes> = (0..6)
                .map(|k| {
                    let mut data = vec![128u8; luma * 3 / 2];
                    for (i, px) in data[..luma].iter_mut().enumerate() {
                        let (x, y) = (i % w as usize, i / w as usize);
                        // xorshift64: noise, not secrets.
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let grain = (state >> 59) as i32 - 16;
                        let base = ((x + y) / 4 + k * 8) as i32 % 192 + 32;
                        *px = (base + grain).clamp(16, 235) as u8;
                    }
                    calling_media::Bytes::from(data)
                })
                .collect();
            let start = Instant::now();
            let period = Duration::from_secs(1) / 15;
            let mut n: u32 = 0;
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let at = start.elapsed();
                let picture = pictures[n as usize % pictures.len()].clone();
                if let Ok(frame) = VideoFrame::new(PixelFormat::I420, w, h, picture, at) {
                    // Refused between calls and while the encoder is behind.
                    let _ = input.push(frame);
                }
                n += 1;
                if let Some(wait) = (period * n).checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Noise {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The first peer's counters as one `stats` line.
async fn stats_line(client: &Calling) -> serde_json::Value {
    let stats = client.stats().await.unwrap_or_default();
    match stats.first() {
        Some(s) => json!({
            "type": "stats",
            "from": s.user.as_str(),
            "state": s.state.map(|st| format!("{st:?}")),
            "audio_frames": s.audio_frames_received,
            "video_frames": s.video_frames_received,
            "audio_sent": s.audio_frames_sent,
            "video_sent": s.video_frames_sent,
            "rtt_ms": s.rtt.map(|r| r.as_secs_f64() * 1000.0),
            "bytes_received": s.bytes_received,
            "bytes_sent": s.bytes_sent,
            "video_target_bps": s.video_target_bps,
            "video_fraction_lost": s.video_fraction_lost,
            "video_rtt_ms": s.video_rtt.map(|r| r.as_secs_f64() * 1000.0),
            "pair": s.selected_pair.map(|p| json!({
                "path": p.path().as_str(),
                "local": p.local.as_str(),
                "local_addr": p.local_addr.map(|a| a.to_string()),
                "remote": p.remote.as_str(),
                "remote_addr": p.remote_addr.map(|a| a.to_string()),
            })),
        }),
        None => json!({"type": "stats"}),
    }
}

fn probe(args: &ProbeArgs) -> Result<(), String> {
    use rtc_stun::message::{BINDING_REQUEST, Getter, Message, TransactionId};
    use rtc_stun::xoraddr::XorMappedAddress;

    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    say(
        json!({"type": "local", "addr": sock.local_addr().map_err(|e| e.to_string())?.to_string()}),
    );
    for server in &args.server {
        let mut mapped = None;
        let mut buf = [0u8; 1500];
        // A few tries: UDP, and the first packet may race the lab's setup.
        for _ in 0..10 {
            let mut req = Message::new();
            req.build(&[Box::<TransactionId>::default(), Box::new(BINDING_REQUEST)])
                .map_err(|e| e.to_string())?;
            sock.send_to(&req.raw, server).map_err(|e| e.to_string())?;
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let mut resp = Message::new();
            if from != *server || resp.unmarshal_binary(&buf[..n]).is_err() {
                continue;
            }
            let mut addr = XorMappedAddress::default();
            if addr.get_from(&resp).is_ok() {
                mapped = Some(SocketAddr::new(addr.ip, addr.port));
                break;
            }
        }
        say(json!({
            "type": "mapped",
            "server": server.to_string(),
            "mapped": mapped.map(|m| m.to_string()),
        }));
    }
    Ok(())
}
