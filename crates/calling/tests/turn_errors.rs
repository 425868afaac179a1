//! What the app is told when TURN does not work: coturn's `turnserver` on
//! 127.0.0.1 checks another REST API secret than `calling-server` signs
//! credentials with, so every allocation is refused (401) and no relay
//! candidate is ever gathered. Relay-only media gets `TurnUnavailable`;
//! otherwise `TurnFallbackUnavailable` warns and the call goes on over
//! host candidates. And an ICE restart gathers with the ICE servers given
//! last (`MediaSession::set_ice_servers`): refused credentials replaced by
//! good ones bring relay-only media up at the next restart. The coturn
//! harness is a trimmed copy of `turn.rs`'s.
//!
//! Needs `turnserver` (Debian package coturn; scripts/setup.sh installs it).
//! Without it the tests print a loud SKIPPED banner, and fail under CI.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calling::{CallingConfig, ErrorCode, Event, MediaConfig, MediaKind, MediaType, UserId};
use calling_media::{AudioSource, IceServer, MediaEvent, MediaSession, PeerMedia};
use calling_server::{Config, RunningServer, Server, TurnConfig};
use support::*;

const SECRET: &str = "turn-test-secret";

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

fn turnserver_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("turnserver"))
        .find(|p| p.is_file())
}

/// A running `turnserver`, killed (and its scratch directory removed) on drop.
struct Coturn {
    child: Child,
    port: u16,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Coturn {
    /// Starts coturn on 127.0.0.1 with REST API secret `secret` and waits
    /// until it answers a STUN binding request.
    fn start(secret: &str) -> Coturn {
        // A free UDP port: bind, read it, release it for coturn.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
        let coturn = Coturn {
            child,
            port,
            dir,
            log,
        };
        coturn.wait_until_it_answers();
        coturn
    }

    fn wait_until_it_answers(&self) {
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
                return;
            }
        }
        panic!(
            "turnserver never answered on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
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
async fn server_with_turn(turn_url: String, secret: &str) -> Net {
    let mut config = Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.ice.turn = Some(TurnConfig::new(vec![turn_url], secret));
    let server: RunningServer = Server::bind(config).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr());
    Net { server, url }
}

/// alice calls bob (audio) with `config` on both sides, bob accepts, and
/// both wait for the first TURN error event.
async fn call_and_expect_error(net: &Net, config: CallingConfig) -> Vec<(calling::Calling, Event)> {
    let (alice, mut a) = login_with(net, "alice", config.clone()).await;
    let (bob, mut b) = login_with(net, "bob", config).await;
    alice
        .call("bob", MediaType::Audio, Duration::from_secs(30))
        .await
        .unwrap();
    let invite = invited(&mut b).await;
    bob.accept(&invite).await.unwrap();
    let mut out = Vec::new();
    for (client, events) in [(alice, &mut a), (bob, &mut b)] {
        let e = expect(events, "a TURN error", |e| {
            matches!(
                e,
                Event::Error {
                    code: ErrorCode::TurnUnavailable | ErrorCode::TurnFallbackUnavailable,
                    ..
                }
            )
        })
        .await;
        out.push((client, e));
    }
    out
}

fn assert_explains(e: &Event, expected: ErrorCode) {
    let Event::Error { code, message } = e else {
        panic!("not an error: {e:?}");
    };
    assert_eq!(*code, expected, "{message}");
    for needle in ["TURN server", "--turn-secret", "static-auth-secret"] {
        assert!(
            message.contains(needle),
            "{needle:?} missing in {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_allocation_with_relay_only_is_turn_unavailable() {
    if prerequisites("a_refused_allocation_with_relay_only_is_turn_unavailable").is_err() {
        return;
    }
    let coturn = Coturn::start(SECRET);
    let net = server_with_turn(coturn.url(), "not-the-turn-secret").await;
    let mut config = CallingConfig::loopback();
    config.media.relay_only = true;
    for (client, e) in call_and_expect_error(&net, config).await {
        assert_explains(&e, ErrorCode::TurnUnavailable);
        client.hangup().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_allocation_otherwise_is_a_warning_and_media_flows() {
    if prerequisites("a_refused_allocation_otherwise_is_a_warning_and_media_flows").is_err() {
        return;
    }
    let coturn = Coturn::start(SECRET);
    let net = server_with_turn(coturn.url(), "not-the-turn-secret").await;
    let clients = call_and_expect_error(&net, CallingConfig::loopback()).await;
    for (_, e) in &clients {
        assert_explains(e, ErrorCode::TurnFallbackUnavailable);
    }
    let (alice, bob) = (&clients[0].0, &clients[1].0);
    wait_frames(alice, "bob", MediaKind::Audio, 5).await;
    wait_frames(bob, "alice", MediaKind::Audio, 5).await;
    alice.hangup().await.unwrap();
}

/// A TURN server entry for `user` with REST credentials signed by `secret`.
fn turn_for(url: &str, user: &str, secret: &str) -> IceServer {
    let username = format!("{}:{user}", calling_usersig::now_unix() + 3600);
    IceServer {
        urls: vec![url.to_owned()],
        credential: calling_server::ice::turn_password(secret, &username),
        username,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_gathers_with_the_ice_servers_set_last() {
    if prerequisites("an_ice_restart_gathers_with_the_ice_servers_set_last").is_err() {
        return;
    }
    let coturn = Coturn::start(SECRET);
    let url = coturn.url();
    let mut sessions = Vec::new();
    for name in ["alice", "bob"] {
        let config = MediaConfig {
            relay_only: true,
            // Signed with the wrong secret: coturn refuses them.
            ice_servers: vec![turn_for(&url, name, "stale-secret")],
            ..MediaConfig::loopback()
        };
        let (session, events) = MediaSession::new(UserId::new(name).unwrap(), config)
            .await
            .unwrap();
        session
            .set_audio_source(Some(AudioSource::Tone {
                frequency_hz: 440.0,
                amplitude: 0.3,
            }))
            .unwrap();
        sessions.push((session, events));
    }
    // Route signals between the two; keep the rest for the test.
    let (alice, alice_events) = sessions.remove(0);
    let (bob, bob_events) = sessions.remove(0);
    let (a_tx, mut a_rx) = tokio::sync::mpsc::unbounded_channel();
    let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel();
    for (from, to, mut events, tx) in [
        (alice.clone(), bob.clone(), alice_events, a_tx),
        (bob.clone(), alice.clone(), bob_events, b_tx),
    ] {
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    MediaEvent::Signal { signal, .. } => {
                        let _ = to.handle_signal(from.local_user(), signal).await;
                    }
                    other => {
                        let _ = tx.send(other);
                    }
                }
            }
        });
    }
    bob.connect(alice.local_user()).await.unwrap();
    alice.connect(bob.local_user()).await.unwrap();

    // Fresh credentials arrive (as a re-login brings them): the restarts
    // that follow the failed first attempt use them.
    alice.set_ice_servers(vec![turn_for(&url, "alice", SECRET)]);
    bob.set_ice_servers(vec![turn_for(&url, "bob", SECRET)]);
    for (events, other) in [(&mut a_rx, "bob"), (&mut b_rx, "alice")] {
        let restored = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(e) = events.recv().await {
                if matches!(&e, MediaEvent::PeerMedia { user, state: PeerMedia::Restored } if user.as_str() == other)
                {
                    return true;
                }
                if matches!(&e, MediaEvent::PeerMedia { state: PeerMedia::Failed, .. }) {
                    return false;
                }
            }
            false
        })
        .await;
        assert_eq!(
            restored,
            Ok(true),
            "relay-only media with {other} never came up:\n{}",
            coturn.log()
        );
    }
    let stats = alice.stats().await;
    let deadline = Instant::now() + WAIT;
    while alice.stats().await[0].audio_frames_received < 5 {
        assert!(
            Instant::now() < deadline,
            "no audio through the relay: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        coturn.log().contains("ALLOCATE processed, success"),
        "{}",
        coturn.log()
    );
    alice.close().await;
    bob.close().await;
}
