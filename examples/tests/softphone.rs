//! Drives the `softphone` example the way a person would, through piped
//! stdin and its printed events: a group call with a decline and a join by
//! ticket, then `quit` and end of input.
//!
//! Needs the example binary, which `cargo test -p calling-examples` builds
//! (a run filtered with `--test softphone` alone does not).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

const APP: u64 = 1_400_000_000;
const KEY: &str = "softphone-test-key";
const WAIT: Duration = Duration::from_secs(30);

fn softphone_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_softphone"))
}

struct Phone {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Phone {
    fn start(url: &str, name: &'static str) -> Phone {
        let mut child = Command::new(softphone_bin())
            .args(["--url", url, "--sdk-app-id", &APP.to_string()])
            .args(["--user", name, "--secret-key", KEY])
            .args(["--udp-addr", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Phone {
            name,
            child,
            stdin,
            out,
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// The first printed line containing `needle`, seen or still to come.
    async fn line(&mut self, needle: &str) -> String {
        if let Some(i) = self.seen.iter().position(|l| l.contains(needle)) {
            return self.seen.remove(i);
        }
        let found = timeout(WAIT, async {
            while let Some(line) = self.out.next_line().await.unwrap() {
                if line.contains(needle) {
                    return Some(line);
                }
                self.seen.push(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            other => panic!(
                "{}: no line with {needle:?} ({other:?}); printed: {:?}",
                self.name, self.seen
            ),
        }
    }

    /// Waits for the process to exit and says whether it succeeded.
    async fn exits_cleanly(&mut self) -> bool {
        let status = timeout(WAIT, self.child.wait()).await;
        matches!(status, Ok(Ok(s)) if s.success())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_call_decline_join_by_id_quit_and_eof() {
    let mut config = calling_server::Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = calling_server::Server::bind(config).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr());

    let mut alice = Phone::start(&url, "alice");
    let mut bob = Phone::start(&url, "bob");
    let mut carol = Phone::start(&url, "carol");
    let mut dave = Phone::start(&url, "dave");
    for p in [&mut alice, &mut bob, &mut carol, &mut dave] {
        p.line("ready").await;
    }

    alice.send("group bob,carol audio").await;
    let placed = alice.line("ok group call ").await;
    let call_id = placed.rsplit(' ').next().unwrap().to_string();
    let invited = bob.line("event invited").await;
    assert!(invited.contains("group=true"), "{invited}");
    assert!(invited.contains("others=[carol]"), "{invited}");
    carol.line("event invited").await;
    bob.send("accept").await;
    bob.line("ok accept done").await;
    alice.line("event user-enter user=bob").await;
    carol.send("reject").await;
    carol.line("event call-end reason=Rejected").await;
    alice.line("event rejected user=carol").await;

    // dave was not invited: the call id alone does not let him in...
    dave.send("join").await;
    dave.line("error join <call-id> <ticket>").await;
    // ...a member hands him the call's ticket, and he joins with it.
    bob.send("ticket").await;
    let ticket = bob.line(&format!("ok join {call_id} ")).await;
    let ticket = ticket.rsplit(' ').next().unwrap().to_string();
    dave.send(&format!("join {call_id} {ticket}")).await;
    dave.line("ok joining").await;
    dave.line("event user-enter user=alice").await;
    dave.line("event user-enter user=bob").await;
    alice.line("event user-enter user=dave").await;
    bob.line("event user-enter user=dave").await;
    dave.send("status").await;
    let status = dave.line("ok call ").await;
    assert!(status.contains("connected=[alice,bob]"), "{status}");

    // A bad command is an error line, not the end of the program.
    bob.send("call").await;
    bob.line("error call whom?").await;

    // alice quits; the call goes on for bob and dave.
    alice.send("quit").await;
    alice.line("event call-end reason=Hangup").await;
    alice.line("bye").await;
    assert!(alice.exits_cleanly().await, "alice exits 0 on quit");
    bob.line("event user-leave user=alice").await;
    dave.line("event user-leave user=alice").await;

    // bob's input ends: he hangs up and exits; dave is left alone.
    bob.stdin = None;
    bob.line("bye").await;
    assert!(bob.exits_cleanly().await, "bob exits 0 at end of input");
    dave.line("event call-end reason=Hangup").await;
    carol.stdin = None;
    dave.stdin = None;
    assert!(carol.exits_cleanly().await);
    assert!(dave.exits_cleanly().await);
    server.shutdown().await;
}

/// Case 8 of the call-security issue: a callee frozen (SIGSTOP) past the
/// server's heartbeat timeout loses its connection; the caller sees it
/// leave. When the callee comes back it reconnects, learns that the call is
/// over (its recheck is answered `gone`), ends it, and can call again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_callee_ends_its_call_when_it_comes_back() {
    let mut config = calling_server::Config::new(APP, KEY);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.heartbeat_interval = Duration::from_millis(500);
    config.heartbeat_timeout = Duration::from_secs(2);
    let server = calling_server::Server::bind(config).await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr());

    let mut alice = Phone::start(&url, "alice");
    let mut bob = Phone::start(&url, "bob");
    for p in [&mut alice, &mut bob] {
        p.line("ready").await;
    }
    alice.send("call bob audio").await;
    bob.line("event invited").await;
    bob.send("accept").await;
    alice.line("event user-enter user=bob").await;

    let pid = bob.child.id().expect("bob runs").to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    // The server drops the silent connection; alice is left alone.
    alice.line("event call-end").await;
    signal("-CONT");
    bob.line("event call-end").await;
    bob.send("status").await;
    bob.line("ok idle").await;
    alice.stdin = None;
    bob.stdin = None;
    assert!(alice.exits_cleanly().await);
    assert!(bob.exits_cleanly().await);
    server.shutdown().await;
}
