//! The `calling-server` binary's command line: `--help`, the `--demo`
//! printout, and plain-text output when redirected to a file.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_calling-server");
/// Longest any run of the binary may take.
const LIMIT: Duration = Duration::from_secs(20);

/// The binary with none of the variables it reads: what the test sees must
/// not depend on the environment it runs in.
fn server() -> Command {
    let mut cmd = Command::new(BIN);
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("CALLING_") || name == "RUST_LOG" || name == "NO_COLOR" {
            cmd.env_remove(&var);
        }
    }
    cmd
}

/// Kills the server however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a short-lived child to exit, killing it past [`LIMIT`]; its
/// output is small enough for the pipes.
fn wait_bounded(child: Child) -> Output {
    let mut child = Running(child);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    if let Some(mut s) = child.0.stdout.take() {
        s.read_to_end(&mut stdout).unwrap();
    }
    if let Some(mut s) = child.0.stderr.take() {
        s.read_to_end(&mut stderr).unwrap();
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("calling-server-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_prints_usage_and_exits_0() {
    let child = server()
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Usage: calling-server",
        "--demo-user",
        "CALLING_DEMO_USERS",
        "--secret-key",
        "CALLING_SECRET_KEY",
    ] {
        assert!(help.contains(needle), "missing {needle} in:\n{help}");
    }
}

#[test]
fn demo_output_in_a_file_is_plain_text_and_says_how_to_get_more_usersigs() {
    let dir = scratch("demo");
    let (out_path, err_path) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
    let child = server()
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .env("CALLING_DEMO_USERS", "carol,dave")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let _server = Running(child);
    // The hint is the last line of the demo printout, after the log lines
    // of the start.
    let deadline = Instant::now() + LIMIT;
    let printed = loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains("demo mode: other users") {
            break text;
        }
        assert!(Instant::now() < deadline, "no demo printout in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let errors = std::fs::read(&err_path).unwrap();

    assert!(
        !printed.as_bytes().contains(&0x1b),
        "colour codes in a file:\n{printed:?}"
    );
    assert!(
        !errors.contains(&0x1b),
        "colour codes in a file: {errors:?}"
    );
    // The logs went there too (at the default level) and came out plain.
    assert!(
        printed.contains(" INFO ") && printed.contains("WebSocket at ws://127.0.0.1:"),
        "{printed}"
    );

    // CALLING_DEMO_USERS replaces the default alice and bob.
    assert!(printed.contains("user_id=carol user_sig="), "{printed}");
    assert!(printed.contains("user_id=dave user_sig="), "{printed}");
    assert!(!printed.contains("user_id=alice"), "{printed}");

    let key = printed
        .lines()
        .find_map(|l| l.split_once(" secret_key=").map(|(_, k)| k.trim()))
        .unwrap();
    let hint = printed
        .lines()
        .find(|l| l.starts_with("demo mode: other users"))
        .unwrap();
    for needle in [
        "--demo-user NAME",
        "CALLING_DEMO_USERS",
        "/demo/usersig?user_id=NAME",
        "--secret-key",
        "CALLING_SECRET_KEY",
    ] {
        assert!(hint.contains(needle), "missing {needle} in {hint:?}");
    }
    assert!(hint.contains(&format!("--secret-key {key}")), "{hint}");
    let _ = std::fs::remove_dir_all(&dir);
}
