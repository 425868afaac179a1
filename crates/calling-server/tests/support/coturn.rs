//! A real coturn `turnserver` on 127.0.0.1 for the TURN tests of every
//! crate (Debian package coturn, installed by scripts/setup.sh).

#![allow(dead_code, clippy::unwrap_used)]

/// Shared with every crate's test support, which reaches it through here
/// (a file is loaded as one module only).
#[path = "common.rs"]
pub mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest coturn may take to answer, and any wait for a line of its log.
const WAIT: Duration = Duration::from_secs(30);

/// Times coturn is started on a new port when the one picked was taken
/// between the pick and its bind.
const ATTEMPTS: usize = 5;

/// `Ok` when `turnserver` is installed; otherwise a loud SKIPPED banner
/// (and a panic under CI, where it must be there).
pub fn prerequisites(test: &str) -> Result<(), ()> {
    if turnserver_path().is_some() {
        return Ok(());
    }
    common::missing(
        "TURN test",
        test,
        "turnserver (Debian package coturn)",
        "(as root) to install it",
    )
}

/// `turnserver` on `PATH`, if any.
pub fn turnserver_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("turnserver"))
        .find(|p| p.is_file())
}

/// A free UDP port on 127.0.0.1: bound, read, released.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port on 127.0.0.1 free for UDP and TCP both (coturn listens on both,
/// and waits for ever on a TCP port another test's connection holds).
fn free_turn_port() -> u16 {
    for _ in 0..100 {
        let port = free_udp_port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 was free for both UDP and TCP in 100 tries");
}

/// Why coturn did not answer.
enum NoAnswer {
    /// Its log says it cannot bind the port: someone took it meanwhile.
    PortTaken,
    /// It said nothing of the kind and did not answer within `WAIT`.
    Silent,
}

/// A running `turnserver`, killed (and its scratch directory removed) on drop.
pub struct Coturn {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Coturn {
    /// coturn on 127.0.0.1 with REST API secret `secret`, from flags only
    /// (no TLS, no DTLS, no CLI), plus `extra` flags.
    pub fn with_secret(secret: &str, extra: &[&str]) -> Coturn {
        Self::start_with(|port, _| {
            let mut args = vec![
                "-n".to_owned(), // no config file: only these flags
                "--listening-ip=127.0.0.1".into(),
                "--relay-ip=127.0.0.1".into(),
                format!("--listening-port={port}"),
                "--use-auth-secret".into(),
                format!("--static-auth-secret={secret}"),
                "--realm=calling".into(),
                "--fingerprint".into(),
                "--no-tls".into(),
                "--no-dtls".into(),
                "--no-cli".into(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        })
    }

    /// coturn from the configuration file `conf(port)`, listening on `port`.
    pub fn with_config(conf: impl Fn(u16) -> String) -> Coturn {
        Self::start_with(|port, dir| {
            let path = dir.join("turnserver.conf");
            std::fs::write(&path, conf(port)).unwrap();
            vec!["-c".into(), path.display().to_string()]
        })
    }

    /// coturn with the flags `args(port, scratch dir)` on a port free for
    /// it, once it answers a STUN binding request; started again on
    /// another port if that one is taken before coturn binds it.
    fn start_with(args: impl Fn(u16, &Path) -> Vec<String>) -> Coturn {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let port = free_turn_port();
            let dir =
                std::env::temp_dir().join(format!("calling-turn-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let coturn = Self::spawn(args(port, &dir), port, dir);
            match coturn.wait_until_it_answers() {
                Ok(()) => return coturn,
                Err(NoAnswer::PortTaken) => last = coturn.log(),
                Err(NoAnswer::Silent) => panic!(
                    "turnserver never answered on port {}:\n{}",
                    coturn.port,
                    coturn.log()
                ),
            }
        }
        panic!("turnserver found its port taken {ATTEMPTS} times; the last log:\n{last}");
    }

    fn spawn(mut args: Vec<String>, port: u16, dir: PathBuf) -> Coturn {
        // Where this test can write, whatever the configuration says.
        args.extend([
            "--log-file=stdout".into(),
            "--simple-log".into(),
            format!("--pidfile={}", dir.join("pid").display()),
            format!("--db={}", dir.join("turndb").display()),
        ]);
        let mut child = Command::new(turnserver_path().unwrap())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let log = common::collect_log(child.stdout.take().unwrap());
        Coturn {
            child,
            port,
            dir,
            log,
        }
    }

    fn wait_until_it_answers(&self) -> Result<(), NoAnswer> {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        // A STUN binding request: type 0x0001, length 0, magic cookie, id.
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(b"callingcheck");
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let _ = sock.send_to(&req, ("127.0.0.1", self.port));
            if let Ok(n) = sock.recv(&mut buf)
                && n >= 20
                && buf[0..2] == [0x01, 0x01]
            {
                return Ok(());
            }
            if self.log().contains("Cannot bind") {
                return Err(NoAnswer::PortTaken);
            }
        }
        Err(NoAnswer::Silent)
    }

    /// `turn:127.0.0.1:PORT?transport=udp`.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// Everything coturn has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until coturn's log holds a line with every one of `parts`.
    pub async fn wait_for_line(&self, parts: &[&str]) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self
                .log()
                .lines()
                .any(|l| parts.iter().all(|p| l.contains(p)))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
