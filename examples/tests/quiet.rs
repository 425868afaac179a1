//! A first run's output: `--help` answers without doing anything else, and
//! the default log filter hides the WebRTC engine's expected warnings but
//! not ours.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[test]
fn softphone_help_prints_usage_and_exits_0_at_once() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_softphone"))
        .arg("--help")
        // No server, no user: --help needs neither.
        .env_remove("CALLING_SDK_APP_ID")
        .env_remove("CALLING_USER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("softphone --help still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Usage: softphone",
        "--url",
        "--secret-key",
        "CALLING_SECRET_KEY",
    ] {
        assert!(help.contains(needle), "missing {needle} in:\n{help}");
    }
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Log output collected in memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

#[test]
fn the_default_filter_hides_the_engines_warnings_and_keeps_ours() {
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(calling::DEFAULT_LOG_FILTER))
        .with_writer(buffer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // What webrtc-rs says in every call (the targets are its modules).
        tracing::warn!(target: "rtc::peer_connection::handler", "password is empty");
        tracing::warn!(
            target: "rtc::peer_connection::handler",
            "remote_srtp_context is not set yet"
        );
        tracing::warn!(target: "rtc_ice::agent", "engine-ice");
        tracing::warn!(target: "rtc_dtls::conn", "engine-dtls");
        tracing::warn!(target: "rtc_sctp::association", "engine-sctp");
        tracing::warn!(target: "webrtc::peer_connection::driver", "engine-webrtc");
        tracing::warn!(target: "quinn_udp", "engine-udp");
        // An engine error still shows.
        tracing::error!(target: "rtc_dtls::conn", "engine-error");
        // Ours, at info.
        tracing::info!(target: "calling_media::session::restore", "ours-info");
        tracing::info!(target: "calling::driver", "ours-facade");
        tracing::debug!(target: "calling::driver", "ours-debug");
    });
    let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    for hidden in [
        "password is empty",
        "remote_srtp_context",
        "engine-ice",
        "engine-dtls",
        "engine-sctp",
        "engine-webrtc",
        "engine-udp",
        "ours-debug",
    ] {
        assert!(!logged.contains(hidden), "{hidden} shown:\n{logged}");
    }
    for shown in ["engine-error", "ours-info", "ours-facade"] {
        assert!(logged.contains(shown), "{shown} hidden:\n{logged}");
    }
}

#[test]
fn the_server_logs_our_crates_at_the_sdks_level() {
    // calling-server links no engine crate that logs: its filter is the
    // SDK's without the engine directives.
    let sdk_base = calling::DEFAULT_LOG_FILTER.split(',').next();
    assert_eq!(sdk_base, Some(calling_server::DEFAULT_LOG_FILTER));
}
