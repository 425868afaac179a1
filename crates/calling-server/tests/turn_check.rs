//! The TURN secret check against a real coturn on 127.0.0.1: the right
//! secret allocates, a wrong one is `Rejected`, nobody there is
//! `NoAnswer`; credentials from `ice_refresh` work at the relay; and the
//! coturn configuration printed in docs/DEPLOYMENT.md, run as it is (with
//! loopback addresses put in), accepts our credentials.
//!
//! Needs `turnserver` (Debian package coturn; scripts/setup.sh installs it).
//! Without it the tests print a loud SKIPPED banner, and fail under CI.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calling_server::TurnConfig;
use calling_server::ice::{turn_password, turn_username};
use calling_server::turn_check::{self, TurnCheckError};
use calling_signal::{Transport, UserId, WsConfig, WsTransport};
use common::*;

const SECRET: &str = "check-test-secret";

fn prerequisites(test: &str) -> Result<(), ()> {
    if turnserver_path().is_some() {
        return Ok(());
    }
    let what = "turnserver (Debian package coturn)";
    if std::env::var_os("CI").is_some() {
        panic!(
            "TURN test {test} cannot run under CI: missing {what}; scripts/setup.sh installs it"
        );
    }
    let banner = format!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED TURN test {test}: missing {what}.\n\
         !!! Run scripts/setup.sh (as root) to install it. This test did NOT run.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
    Err(())
}

fn turnserver_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("turnserver"))
        .find(|p| p.is_file())
}

/// A free UDP port on 127.0.0.1: bound, read, released.
fn free_udp_port() -> u16 {
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

/// A running `turnserver`, killed (and its scratch directory removed) on drop.
struct Coturn {
    child: Child,
    port: u16,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Coturn {
    fn scratch(port: u16) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("calling-turn-check-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// coturn on 127.0.0.1 with REST API secret `secret`, from flags only.
    fn with_secret(secret: &str) -> Coturn {
        Self::start(|port, _| {
            vec![
                "-n".to_owned(),
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
            ]
        })
    }

    /// coturn from the configuration file `conf(port)`, listening on `port`.
    fn with_config(conf: impl Fn(u16) -> String) -> Coturn {
        Self::start(|port, dir| {
            let path = dir.join("turnserver.conf");
            std::fs::write(&path, conf(port)).unwrap();
            vec!["-c".into(), path.display().to_string()]
        })
    }

    /// coturn with the flags `args(port, scratch dir)`, on a port free for
    /// it, started again on another port if that one is taken before
    /// coturn binds it.
    fn start(args: impl Fn(u16, &Path) -> Vec<String>) -> Coturn {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let port = free_turn_port();
            let dir = Self::scratch(port);
            let coturn = Self::spawn(args(port, &dir), port, dir);
            match coturn.wait_until_it_answers() {
                Ok(()) => return coturn,
                Err(NoAnswer::PortTaken) => last = coturn.log.lock().unwrap().clone(),
                Err(NoAnswer::Silent) => panic!(
                    "turnserver never answered on port {}:\n{}",
                    coturn.port,
                    coturn.log.lock().unwrap()
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
            if self.log.lock().unwrap().contains("Cannot bind") {
                return Err(NoAnswer::PortTaken);
            }
        }
        Err(NoAnswer::Silent)
    }

    fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn turn(url: String, secret: &str) -> TurnConfig {
    TurnConfig::new(vec![url], secret)
}

#[tokio::test]
async fn the_right_secret_allocates_a_relay() {
    if prerequisites("the_right_secret_allocates_a_relay").is_err() {
        return;
    }
    let coturn = Coturn::with_secret(SECRET);
    let results = turn_check::check(&turn(coturn.url(), SECRET), calling_usersig::now_unix()).await;
    assert_eq!(results.len(), 1);
    let (url, result) = &results[0];
    assert_eq!(url, &coturn.url());
    let relayed = result.as_ref().unwrap();
    assert!(relayed.ip().is_loopback(), "{relayed}");
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_with_a_typed_error() {
    if prerequisites("a_wrong_secret_is_rejected_with_a_typed_error").is_err() {
        return;
    }
    let coturn = Coturn::with_secret("the-turn-servers-own-secret");
    let results = turn_check::check(&turn(coturn.url(), SECRET), calling_usersig::now_unix()).await;
    match &results[0].1 {
        Err(TurnCheckError::Rejected { code, .. }) => assert!([401, 441].contains(code)),
        other => panic!("expected Rejected, got {other:?}"),
    }
    let text = results[0].1.as_ref().unwrap_err().to_string();
    assert!(text.contains("static-auth-secret"), "{text}");
}

#[tokio::test]
async fn an_expired_credential_is_rejected_too() {
    if prerequisites("an_expired_credential_is_rejected_too").is_err() {
        return;
    }
    let coturn = Coturn::with_secret(SECRET);
    let user = UserId::new("alice").unwrap();
    let username = turn_username(calling_usersig::now_unix() - 60, &user);
    let password = turn_password(SECRET, &username);
    let result = turn_check::probe(&coturn.url(), &username, &password).await;
    assert!(
        matches!(result, Err(TurnCheckError::Rejected { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn nobody_listening_is_no_answer() {
    let url = format!("turn:127.0.0.1:{}?transport=udp", free_udp_port());
    let results = turn_check::check(&turn(url, SECRET), calling_usersig::now_unix()).await;
    assert!(
        matches!(results[0].1, Err(TurnCheckError::NoAnswer(_))),
        "{:?}",
        results[0].1
    );
}

#[tokio::test]
async fn refreshed_credentials_work_at_the_relay() {
    if prerequisites("refreshed_credentials_work_at_the_relay").is_err() {
        return;
    }
    let coturn = Coturn::with_secret(SECRET);
    let server = start_with(|c| {
        let mut t = turn(coturn.url(), SECRET);
        t.ttl = Duration::from_secs(4);
        c.ice.turn = Some(t);
    })
    .await;
    let url = format!("ws://{}/ws", server.local_addr());
    let bob = WsTransport::connect(WsConfig::new(url, APP, uid("bob"), sig("bob")))
        .await
        .unwrap();
    let first = bob.ice_servers();
    let first_expiry = first[0].expires_at.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let list = bob.ice_servers();
        if list != first {
            break list;
        }
        assert!(Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t = &fresh[0];
    assert!(t.expires_at.unwrap() > first_expiry);
    let relayed = turn_check::probe(
        &t.urls[0],
        t.username.as_deref().unwrap(),
        t.credential.as_deref().unwrap(),
    )
    .await;
    assert!(relayed.is_ok(), "{relayed:?}");
    bob.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_servers_checker_counts_failing_urls_in_metrics() {
    if prerequisites("the_servers_checker_counts_failing_urls_in_metrics").is_err() {
        return;
    }
    let good = Coturn::with_secret(SECRET);
    let bad = Coturn::with_secret("another-secret");
    let server = start_with(|c| {
        c.ice.turn = Some(TurnConfig::new(vec![good.url(), bad.url()], SECRET));
    })
    .await;
    let addr = server.local_addr();
    assert_eq!(metric(addr, "calling_turn_check_failures").await, 0);
    let results = server.turn_checker().run().await;
    assert!(results[0].1.is_ok(), "{:?}", results[0].1);
    assert!(
        matches!(results[1].1, Err(TurnCheckError::Rejected { .. })),
        "{:?}",
        results[1].1
    );
    assert_eq!(metric(addr, "calling_turn_check_failures").await, 1);
    server.shutdown().await;
}

/// The coturn configuration block of docs/DEPLOYMENT.md, as printed.
fn deployment_coturn_block() -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/DEPLOYMENT.md"),
    )
    .unwrap();
    let begin = doc.find("<!-- coturn-config:begin -->").unwrap();
    let end = doc.find("<!-- coturn-config:end -->").unwrap();
    let fenced = &doc[begin..end];
    let body = fenced.split_once("```ini\n").unwrap().1;
    body.rsplit_once("```").unwrap().0.to_owned()
}

#[test]
fn the_deployment_guides_coturn_block_has_the_lines_our_credentials_need() {
    let block = deployment_coturn_block();
    let lines: Vec<&str> = block.lines().map(str::trim).collect();
    for needed in [
        "use-auth-secret",
        "realm=calls.example.com",
        "fingerprint",
        "no-cli",
        "listening-ip=203.0.113.10",
        "relay-ip=203.0.113.10",
        "external-ip=203.0.113.10",
        "min-port=49160",
        "max-port=49999",
        // The relay must not lead into the operator's private networks.
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
    ] {
        assert!(
            lines.contains(&needed),
            "DEPLOYMENT.md's coturn block lacks {needed:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("static-auth-secret=")),
        "no static-auth-secret line"
    );
    // Nothing in it may open what the guide says is closed.
    assert!(!lines.iter().any(|l| l.starts_with("allow-loopback-peers")));
    assert!(!lines.iter().any(|l| l.starts_with("no-auth")));
}

#[tokio::test]
async fn the_deployment_guides_coturn_block_runs_and_accepts_our_credentials() {
    if prerequisites("the_deployment_guides_coturn_block_runs_and_accepts_our_credentials").is_err()
    {
        return;
    }
    let block = deployment_coturn_block();
    // Only what cannot be the same on this machine: the addresses, the
    // port and the secret. Every other line is the guide's.
    let conf = |port: u16| {
        let mut substituted = 0;
        let conf: String = block
            .lines()
            .map(|line| {
                let new = match line.split_once('=') {
                    Some(("listening-port", _)) => format!("listening-port={port}"),
                    Some(("static-auth-secret", _)) => format!("static-auth-secret={SECRET}"),
                    Some((key @ ("listening-ip" | "relay-ip" | "external-ip"), _)) => {
                        format!("{key}=127.0.0.1")
                    }
                    _ => return format!("{line}\n"),
                };
                substituted += 1;
                format!("{new}\n")
            })
            .collect();
        assert_eq!(substituted, 5, "the guide's block changed shape:\n{block}");
        conf
    };
    let coturn = Coturn::with_config(conf);
    let results = turn_check::check(&turn(coturn.url(), SECRET), calling_usersig::now_unix()).await;
    let relayed = results[0].1.as_ref().unwrap();
    assert!(relayed.ip().is_loopback(), "{relayed}");
    assert!((49160..=49999).contains(&relayed.port()), "{relayed}");
    // And the guide's secret line means what it says: another secret fails.
    let wrong = turn_check::check(
        &turn(coturn.url(), "not-the-secret"),
        calling_usersig::now_unix(),
    )
    .await;
    assert!(
        matches!(wrong[0].1, Err(TurnCheckError::Rejected { .. })),
        "{:?}",
        wrong[0].1
    );
}

#[tokio::test]
async fn the_deployment_guides_coturn_block_refuses_private_peers() {
    if prerequisites("the_deployment_guides_coturn_block_refuses_private_peers").is_err() {
        return;
    }
    let block = deployment_coturn_block();
    let coturn = Coturn::with_config(|port| {
        block
            .lines()
            .map(|line| match line.split_once('=') {
                Some(("listening-port", _)) => format!("listening-port={port}\n"),
                Some(("static-auth-secret", _)) => format!("static-auth-secret={SECRET}\n"),
                Some((key @ ("listening-ip" | "relay-ip" | "external-ip"), _)) => {
                    format!("{key}=127.0.0.1\n")
                }
                _ => format!("{line}\n"),
            })
            .collect()
    });
    let user = UserId::new("alice").unwrap();
    let username = turn_username(calling_usersig::now_unix() + 600, &user);
    let password = turn_password(SECRET, &username);
    // The operator's LAN and the TURN host itself are out of reach (IPv4:
    // the relay is; an IPv6 peer would be a family mismatch, not a test of
    // the list)...
    for peer in [
        "10.1.2.3:5000",
        "172.16.0.9:5000",
        "192.168.1.10:5000",
        "127.0.0.1:5000",
        "169.254.1.1:5000",
        "100.64.0.1:5000",
    ] {
        let result = turn_check::probe_permission(
            &coturn.url(),
            &username,
            &password,
            peer.parse().unwrap(),
        )
        .await;
        assert!(
            matches!(result, Err(TurnCheckError::Refused { code: 403, .. })),
            "the guide's coturn relays to {peer}: {result:?}"
        );
    }
    // ...while a public address is not (TEST-NET-3: never contacted, a
    // permission sends nothing).
    let public = "203.0.113.7:5000".parse().unwrap();
    let result = turn_check::probe_permission(&coturn.url(), &username, &password, public).await;
    assert!(result.is_ok(), "{result:?}");
}
