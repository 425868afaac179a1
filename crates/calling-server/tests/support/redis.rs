//! A real `redis-server` on a free loopback port, for the cluster tests
//! (Debian's redis-server, installed by scripts/setup.sh), and
//! `calling-server` processes that join it.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a Redis or a server process may take to start.
const START: Duration = Duration::from_secs(15);

/// A `redis-server` child, killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Redis {
    /// Starts one; fails the test loudly when redis-server is missing.
    pub fn start() -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "calling-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
        };
        // The port picked can be taken before redis-server binds it; then
        // it exits at once, and starts again on another.
        for _ in 0..5 {
            if r.try_spawn() {
                return r;
            }
            r.port = free_port();
        }
        panic!("redis-server exited at start 5 times (ports taken?)");
    }

    /// Starts it on `self.port`: true once it answers PING, false if it
    /// exited first (its port taken); panics when it does neither in time.
    fn try_spawn(&mut self) -> bool {
        let bin = std::env::var("CALLING_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "!!! cannot run {bin}: {e}. The cluster tests need Debian's redis-server \
                     (scripts/setup.sh installs it; CALLING_REDIS_SERVER names another binary)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START;
        loop {
            if let Some(c) = self.child.as_mut()
                && matches!(c.try_wait(), Ok(Some(_)))
            {
                self.child = None;
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it at once (SIGKILL): everything it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.try_spawn(),
            "redis-server did not start again on port {}",
            self.port
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `calling-server` process in cluster mode, killed on drop.
pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Node {
    /// Starts `bin` (the calling-server binary) on 127.0.0.1:0 with
    /// `--redis url` and these extra arguments; returns once it listens.
    pub fn start(bin: &str, url: &str, app: u64, key: &str, extra: &[&str]) -> Node {
        let mut cmd = Command::new(bin);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("CALLING_") {
                cmd.env_remove(&var);
            }
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--redis", url])
            .args(["--sdk-app-id", &app.to_string(), "--secret-key", key])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log for the address, then keeps draining it.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent
                    && let Some(rest) = line.split("WebSocket at ws://").nth(1)
                    && let Some(addr) = rest.split("/ws").next()
                    && let Ok(addr) = addr.parse::<SocketAddr>()
                {
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(START)
            .unwrap_or_else(|_| panic!("calling-server --redis {url} did not start"));
        Node {
            child: Some(child),
            addr,
        }
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
