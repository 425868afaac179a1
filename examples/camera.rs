//! A video call from a real camera (V4L2 on Linux, AVFoundation on macOS,
//! Media Foundation on Windows, through `nokhwa`):
//!
//! ```sh
//! cargo run --release -p calling-examples --features camera --example camera -- \
//!     --url ws://127.0.0.1:8080/ws --user alice --callee bob --secret-key <secret> [--camera 0]
//! ```
//!
//! It logs in, opens the camera, places a video call to `--callee`, and
//! pushes every captured picture into the call as RGBA through
//! [`calling::RawVideoInput`]: the SDK scales it to the video profile,
//! encodes H.264 and sends it. It runs until the call ends (or `--secs`).
//! The callee can be the softphone, another instance of this example, or
//! the browser demo page. `--list` prints the cameras and exits.
//!
//! Without a camera it says so and exits with status 3.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use calling::{
    CallEvent, Calling, CallingConfig, Event, MediaType, PixelFormat, PushError, RawVideoInput,
    VideoFrame, VideoInput,
};
use clap::Parser;
use nokhwa::Camera;
use nokhwa::pixel_format::RgbAFormat;
use nokhwa::utils::{ApiBackend, CameraIndex, RequestedFormat, RequestedFormatType};

#[path = "support/logging.rs"]
mod logging;

/// Calls someone with the picture of a real camera.
#[derive(Debug, Parser)]
struct Args {
    /// The signaling server's WebSocket URL.
    #[arg(
        long,
        alias = "server",
        env = "CALLING_URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    url: String,
    /// The app id the server was started with.
    #[arg(
        long,
        alias = "app",
        env = "CALLING_SDK_APP_ID",
        default_value_t = 1_400_000_000
    )]
    sdk_app_id: u64,
    /// The app's secret key, to sign this user's UserSig (development
    /// only).
    #[arg(
        long,
        alias = "key",
        env = "CALLING_SECRET_KEY",
        hide_env_values = true
    )]
    secret_key: Option<String>,
    /// Who we are.
    #[arg(long, default_value = "camera")]
    user: String,
    /// Whom to call.
    #[arg(long)]
    callee: Option<String>,
    /// Which camera (see `--list`).
    #[arg(long, default_value_t = 0)]
    camera: u32,
    /// Hang up after this many seconds (0: when the other side does).
    #[arg(long, default_value_t = 0)]
    secs: u64,
    /// List the cameras and exit.
    #[arg(long)]
    list: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    logging::init();
    let args = Args::parse();
    let cameras = match nokhwa::query(ApiBackend::Auto) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("camera: cannot list cameras: {e}");
            return ExitCode::from(3);
        }
    };
    if args.list {
        for c in &cameras {
            println!("{}: {} ({})", c.index(), c.human_name(), c.description());
        }
        return ExitCode::SUCCESS;
    }
    if cameras.is_empty() {
        eprintln!("camera: this machine has no camera");
        return ExitCode::from(3);
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camera: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Captures until `stop`, pushing RGBA pictures into `input`. Runs on its
/// own thread: a camera handle is not `Send` on every platform.
fn capture(index: u32, input: RawVideoInput, stop: Arc<AtomicBool>) -> Result<(), String> {
    let format = RequestedFormat::new::<RgbAFormat>(RequestedFormatType::AbsoluteHighestFrameRate);
    let mut camera =
        Camera::new(CameraIndex::Index(index), format).map_err(|e| format!("open: {e}"))?;
    camera
        .open_stream()
        .map_err(|e| format!("start stream: {e}"))?;
    let fmt = camera.camera_format();
    println!(
        "camera {index}: {}x{} at {} fps ({:?})",
        fmt.width(),
        fmt.height(),
        fmt.frame_rate(),
        fmt.format()
    );
    let start = Instant::now();
    let (mut sent, mut refused) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let buffer = camera.frame().map_err(|e| format!("capture: {e}"))?;
        let image = buffer
            .decode_image::<RgbAFormat>()
            .map_err(|e| format!("decode: {e}"))?;
        let (w, h) = image.dimensions();
        let frame = VideoFrame::new(PixelFormat::Rgba, w, h, image.into_raw(), start.elapsed())
            .map_err(|e| e.to_string())?;
        match input.push(frame) {
            Ok(()) => sent += 1,
            Err(PushError::NotSending) => {}
            Err(_) => refused += 1,
        }
    }
    println!("camera: {sent} pictures sent, {refused} dropped (encoder busy)");
    Ok(())
}

async fn run(args: Args) -> Result<(), String> {
    let key = args
        .secret_key
        .clone()
        .ok_or("--secret-key is needed to sign the UserSig")?;
    let callee = args.callee.clone().ok_or("--callee is needed")?;
    let input = RawVideoInput::new();
    let config = CallingConfig {
        video: Some(VideoInput::Raw(input.clone())),
        ..CallingConfig::default()
    };
    let sig = calling::usersig::generate(
        args.sdk_app_id,
        &key,
        &args.user,
        3600,
        calling::usersig::now_unix(),
    );
    let (client, mut events) = Calling::login(calling::Login {
        server: args.url.to_string(),
        sdk_app_id: args.sdk_app_id,
        user_id: args.user.to_string(),
        user_sig: sig,
        config,
    })
    .await
    .map_err(|e| format!("login: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (index, flag) = (args.camera, stop.clone());
    let capturer = std::thread::spawn(move || capture(index, input, flag));
    client
        .call(&callee, MediaType::Video, Duration::from_secs(30))
        .await
        .map_err(|e| format!("call: {e}"))?;
    let deadline =
        (args.secs > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(args.secs));
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, events.recv()).await {
                Ok(e) => e,
                Err(_) => break,
            },
            None => events.recv().await,
        };
        match next {
            Some(Event::Call(CallEvent::CallEnd { reason, .. })) => {
                println!("call ended: {reason:?}");
                break;
            }
            Some(Event::Call(e)) => println!("{e:?}"),
            Some(_) => {}
            None => break,
        }
        if capturer.is_finished() {
            break;
        }
    }
    client.hangup().await.ok();
    stop.store(true, Ordering::Relaxed);
    let captured = capturer.join().map_err(|_| "the capture thread panicked")?;
    client.logout().await.ok();
    captured
}
