//! Headless Chromium driven by `tests/browser/driver.mjs` (playwright-core):
//! what the browser tests need installed, and the Node driver of one
//! scenario, read line by line.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{WAIT, root};

/// Debian's Chromium, or `$CHROMIUM`.
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// `Ok` when Chromium, node and the driver's node modules are installed;
/// otherwise [`super::missing`].
pub fn prerequisites(test: &str) -> Result<(), ()> {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!(
            "{} (Debian package chromium)",
            chromium().display()
        ));
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !node_ok {
        missing.push("node".to_string());
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        missing.push("tests/browser/node_modules (npm ci)".to_string());
    }
    if missing.is_empty() {
        return Ok(());
    }
    super::missing(
        "browser test",
        test,
        &missing.join(", "),
        "(as root) to install them",
    )
}

/// The Node driver running one scenario; killed if dropped early.
pub struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Driver {
    /// Starts `scenario` against the page at `base`; screenshots go to
    /// `target/browser/`.
    pub fn spawn(scenario: &str, base: &str, options: &[&str]) -> Driver {
        let dir = root().join("tests/browser");
        let artifacts = root().join("target/browser");
        let mut child = Command::new("node")
            .current_dir(&dir)
            .arg("driver.mjs")
            .arg(scenario)
            .arg(base)
            .arg(format!("artifacts={}", artifacts.display()))
            .args(options)
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, stderr) = super::read_output(&mut child, |line| line);
        let stdin = child.stdin.take();
        Driver {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// What the driver wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the driver to print a line starting with `want`, and
    /// returns it.
    pub async fn expect(&mut self, want: &str) -> String {
        let got = timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line.starts_with(want) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match got {
            Ok(Some(line)) => line,
            Ok(None) => {
                // Give the stderr thread a moment to drain (bounded).
                let _ = timeout(Duration::from_secs(2), async {
                    while self.child.try_wait().ok().flatten().is_none() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await;
                std::thread::sleep(Duration::from_millis(100));
                panic!("driver ended before {want}:\n{}", self.log())
            }
            Err(_) => panic!(
                "timed out waiting for {want} from the driver:\n{}",
                self.log()
            ),
        }
    }

    /// Tells a driver waiting on its stdin to go on.
    pub fn poke(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }

    /// Waits for the driver to exit and asserts it succeeded.
    pub async fn finish(mut self) {
        match super::wait_exit(&mut self.child).await {
            Some(s) if s.success() => {}
            Some(s) => {
                std::thread::sleep(Duration::from_millis(100));
                panic!("driver failed ({s}):\n{}", self.log())
            }
            None => panic!("driver did not exit:\n{}", self.log()),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        super::reap(&mut self.child);
    }
}
