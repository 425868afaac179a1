//! A real video call, end to end, in one command:
//!
//! ```sh
//! cargo run --release --example quickstart [-- --secs 3] [-- --server ws://host:port/ws --key KEY]
//! ```
//!
//! Without `--server` it starts the signaling server in-process on a free
//! loopback port. It makes UserSigs for alice and bob with the server's
//! secret key, logs both in, alice video-calls bob, bob accepts, media (a
//! generated test pattern and tone: real H.264 and Opus) flows both ways
//! for a few seconds over WebRTC, alice hangs up. It prints what each side
//! received, and exits non-zero saying why when a direction got nothing.
//!
//! The part between the `README` marks is the program the README shows
//! (a test keeps the two the same).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use calling::{
    CallEvent, Calling, CallingConfig, EncodedFrame, Event, FrameSink, Login, MediaKind, MediaType,
    UserId, usersig,
};
use clap::Parser;

/// A real call between alice and bob: in-process server, UserSigs, login,
/// call, accept, media both ways, hangup.
#[derive(Parser)]
struct Args {
    /// Seconds of media before alice hangs up.
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// A running calling-server's WebSocket URL instead of an in-process
    /// one (then `--secret-key` and `--sdk-app-id` must be the server's).
    #[arg(long, alias = "server", env = "CALLING_URL", requires = "secret_key")]
    url: Option<String>,
    /// The server's secret key (what `calling-server --demo` prints).
    #[arg(
        long,
        alias = "key",
        env = "CALLING_SECRET_KEY",
        hide_env_values = true
    )]
    secret_key: Option<String>,
    /// The server's app id.
    #[arg(long, env = "CALLING_SDK_APP_ID", default_value_t = 1_400_000_000)]
    sdk_app_id: u64,
}

/// Counts the audio and the video frames a client receives.
#[derive(Default)]
struct Counter {
    audio: AtomicU64,
    video: AtomicU64,
}

impl FrameSink for Counter {
    fn on_frame(&self, _from: &UserId, frame: &EncodedFrame) {
        let n = match frame.kind() {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Our info lines and the engine's errors (RUST_LOG overrides), on
    // stderr, coloured only on a terminal and never with NO_COLOR.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| calling::DEFAULT_LOG_FILTER.into()),
        )
        .with_ansi(calling::log_colour(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("quickstart failed: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let app = args.sdk_app_id;
    let in_process;
    let (server, key) = match (args.url, args.secret_key) {
        (Some(url), Some(key)) => (url, key),
        (_, key) => {
            let key = key.unwrap_or_else(|| "quickstart-secret-key".into());
            let mut config = calling_server::Config::new(app, &key);
            config.listen = "127.0.0.1:0".parse()?;
            in_process = calling_server::Server::bind(config).await?;
            (format!("ws://{}/ws", in_process.local_addr()), key)
        }
    };
    println!("signaling server: {server}");
    let secs = args.secs;
    let (alice_frames, bob_frames) = (Arc::new(Counter::default()), Arc::new(Counter::default()));

    // README-BEGIN
    // Your backend signs a UserSig per user with the server's secret key.
    let login = |user: &str| Login {
        server: server.clone(),
        sdk_app_id: app,
        user_id: user.into(),
        user_sig: usersig::generate(app, &key, user, 86_400, usersig::now_unix()),
        config: CallingConfig::loopback(), // CallingConfig::default() between machines
    };
    let (alice, mut alice_events) = Calling::login(login("alice")).await?;
    let (bob, mut bob_events) = Calling::login(login("bob")).await?;
    // Every remote frame goes to a sink of yours (here a counter).
    alice.set_frame_sink(Some(alice_frames.clone())).await?;
    bob.set_frame_sink(Some(bob_frames.clone())).await?;

    alice
        .call("bob", MediaType::Video, Duration::from_secs(30))
        .await?;
    while let Some(event) = bob_events.recv().await {
        if let Event::Call(CallEvent::Invited {
            invite_id, sponsor, ..
        }) = event
        {
            println!("bob: {sponsor} is calling");
            bob.accept(&invite_id).await?;
            break;
        }
    }
    while let Some(event) = alice_events.recv().await {
        if let Event::Call(CallEvent::UserEnter { user, .. }) = event {
            println!("alice: {user} joined; media flows for {secs} s");
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    alice.hangup().await?;
    while let Some(event) = bob_events.recv().await {
        if let Event::Call(CallEvent::CallEnd {
            reason, duration, ..
        }) = event
        {
            println!(
                "bob: call ended ({reason:?}) after {:.1} s",
                duration.as_secs_f64()
            );
            break;
        }
    }
    // README-END

    alice.logout().await?;
    bob.logout().await?;
    let mut missing = Vec::new();
    for (who, frames) in [("alice", &alice_frames), ("bob", &bob_frames)] {
        let (audio, video) = (
            frames.audio.load(Ordering::Relaxed),
            frames.video.load(Ordering::Relaxed),
        );
        println!("{who} received {video} video and {audio} audio frames");
        for (kind, n) in [("video", video), ("audio", audio)] {
            if n == 0 {
                missing.push(format!("{who} received no {kind}"));
            }
        }
    }
    if missing.is_empty() {
        println!("ok: media flowed both ways");
        Ok(())
    } else {
        Err(missing.join("; ").into())
    }
}
