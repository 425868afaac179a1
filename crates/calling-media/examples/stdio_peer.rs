//! A media session whose signals travel over stdin/stdout as JSON lines, for
//! checking interoperability with another WebRTC stack (a browser, driven by
//! `examples/browser-interop.mjs`).
//!
//! ```text
//! cargo run -p calling-media --example stdio_peer -- <local-id> <remote-id> [seconds]
//! ```
//!
//! It sends the generated tone and 480p test pattern to `<remote-id>`.
//! stdin:  one `MediaSignal` per line, from the remote.
//! stdout: `{"signal": MediaSignal}` lines to forward to the remote, then,
//!         after `seconds` (default 8) of media, one `{"report": {...}}` line
//!         with what arrived from the remote, and exit.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use calling_media::frame::h264_nal_types;
use calling_media::{
    AudioSource, ChannelSink, Codec, MediaConfig, MediaEvent, MediaSession, MediaSignal, UserId,
    VideoSource,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let local = UserId::new(args.get(1).map_or("rust", String::as_str))?;
    let remote = UserId::new(args.get(2).map_or("browser", String::as_str))?;
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);

    let (session, mut events) = MediaSession::new(local, MediaConfig::loopback()).await?;
    session.set_audio_source(Some(AudioSource::Tone {
        frequency_hz: 440.0,
        amplitude: 0.5,
    }))?;
    session.set_video_source(Some(VideoSource::TestPattern))?;
    let (sink, mut frames) = ChannelSink::new(1024);
    session.set_frame_sink(Some(sink as Arc<dyn calling_media::FrameSink>));

    let reader = session.clone();
    let from = remote.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<MediaSignal>(&line) {
                Ok(signal) => {
                    if let Err(e) = reader.handle_signal(&from, signal).await {
                        eprintln!("signal rejected: {e}");
                    }
                }
                Err(e) => eprintln!("bad line: {e}"),
            }
        }
    });
    session.connect(&remote).await?;

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut volumes = Vec::new();
    let mut states = Vec::new();
    let mut first_h264_types = None;
    let mut keyframe_requests = 0u32;
    let mut no_common_codec = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(secs));
    tokio::pin!(deadline);
    let mut connected = false;
    let overall = tokio::time::sleep(Duration::from_secs(secs + 30));
    tokio::pin!(overall);
    loop {
        tokio::select! {
            Some(ev) = events.recv() => match ev {
                MediaEvent::Signal { signal, .. } => {
                    println!("{}", json!({ "signal": signal }));
                }
                MediaEvent::PeerState { state, .. } => {
                    states.push(format!("{state:?}"));
                    if !connected && state == calling_media::PeerState::Connected {
                        connected = true;
                        deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(secs));
                    }
                }
                MediaEvent::VoiceVolume { user, volume } if user == remote => volumes.push(volume),
                MediaEvent::KeyframeRequested { .. } => keyframe_requests += 1,
                MediaEvent::NoCommonCodec { kind, .. } => no_common_codec.push(format!("{kind:?}")),
                // Our own volume, and track and frame notices: the report
                // counts frames as they arrive instead.
                MediaEvent::VoiceVolume { .. }
                | MediaEvent::SourceFailed { .. }
                | MediaEvent::RemoteTrack { .. }
                | MediaEvent::FirstFrame { .. }
                | MediaEvent::PeerMedia { .. }
                | MediaEvent::NoRelayCandidates { .. }
                | MediaEvent::VideoTarget { .. } => {}
            },
            Some(f) = frames.recv() => {
                *counts.entry(format!("{:?}", f.frame.codec)).or_default() += 1;
                if f.frame.codec == Codec::H264 && first_h264_types.is_none() {
                    first_h264_types = Some(h264_nal_types(&f.frame.data));
                }
            }
            () = &mut deadline, if connected => break,
            () = &mut overall => break,
        }
    }
    let stats = session.stats().await;
    let s = stats.first();
    println!(
        "{}",
        json!({ "report": {
            "states": states,
            "frames_from_remote": counts,
            "remote_volumes": volumes,
            "first_h264_nal_types": first_h264_types,
            "keyframe_requests": keyframe_requests,
            "no_common_codec": no_common_codec,
            "packets_sent": s.map(|s| s.packets_sent),
            "video_frames_sent": s.map(|s| s.video_frames_sent),
            "audio_frames_sent": s.map(|s| s.audio_frames_sent),
            "rtt_ms": s.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1000.0),
        }})
    );
    session.close().await;
    // The stdin reader sits in a blocking read that would keep the runtime
    // from shutting down until the other side closes the pipe.
    std::process::exit(0);
}
