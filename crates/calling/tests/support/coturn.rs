//! A real coturn `turnserver` on 127.0.0.1 for the TURN tests, and a
//! signaling server that announces it with TURN REST credentials.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calling_server::{Config, RunningServer, Server, TurnConfig};

use super::{APP, KEY, Net, WAIT};

pub fn prerequisites(test: &str) -> Result<(), ()> {
    if turnserver_path().is_some() {
        return Ok(());
    }
    let what = "turnserver (Debian package coturn)";
    if std::env::var_os("CI").is_some() {
        panic!(
            "TURN test {test} cannot run under CI: missing {what}; scripts/setup.sh installs it"
        );
    }
    // Straight to stderr: libtest captures eprintln! of passing tests, and
    // this must be seen.
    let banner = format!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED TURN test {test}: missing {what}.\n\
         !!! Run scripts/setup.sh (as root) to install it. This test did NOT run.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
    Err(())
}

pub fn turnserver_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("turnserver"))
        .find(|p| p.is_file())
}

/// A running `turnserver`, killed (and its scratch directory removed) on drop.
pub struct Coturn {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

/// Times coturn is started on a new port when the one picked was taken
/// between the pick and its bind.
const ATTEMPTS: usize = 5;

/// Why coturn did not answer.
enum NoAnswer {
    /// Its log says it cannot bind the port: someone took it meanwhile.
    PortTaken,
    /// It said nothing of the kind and did not answer within `WAIT`.
    Silent,
}

/// A port on 127.0.0.1 free for UDP and TCP both (coturn listens on both,
/// and waits for ever on a TCP port another test's connection holds):
/// bound, read, released for coturn.
fn free_turn_port() -> u16 {
    for _ in 0..100 {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 was free for both UDP and TCP in 100 tries");
}

impl Coturn {
    /// Starts coturn on 127.0.0.1 with REST API secret `secret` and waits
    /// until it answers a STUN binding request; on another port if the one
    /// picked is taken before coturn binds it.
    pub fn start(secret: &str) -> Coturn {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let coturn = Self::spawn(secret, free_turn_port());
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

    fn spawn(secret: &str, port: u16) -> Coturn {
        let dir = std::env::temp_dir().join(format!("calling-turn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(turnserver_path().unwrap())
            .args([
                "-n", // no config file: only these flags
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=calling",
                "--fingerprint",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                // Both peers and their relays are on loopback, which coturn
                // refuses as peers by default.
                "--allow-loopback-peers",
                "--log-file=stdout",
                "--simple-log",
                "--verbose",
                &format!("--pidfile={}", dir.join("pid").display()),
                &format!("--db={}", dir.join("turndb").display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
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
        req.extend_from_slice(b"callingturn1");
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

    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

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

/// A signaling server announcing `turn_url` with credentials signed by `secret`.
pub async fn server_with_turn(turn_url: String, secret: &str) -> Net {
    let mut config = Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.ice.turn = Some(TurnConfig::new(vec![turn_url], secret));
    let server: RunningServer = Server::bind(config).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr());
    Net { server, url }
}
