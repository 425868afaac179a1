//! Calls across the NAT lab: real kernel NATs (nftables masquerade) in
//! network namespaces this test creates, calling-server over TLS (wss://
//! with the lab's CA) and a real coturn in the public namespace. Every call
//! carries audio and video both ways, counted at both ends. See
//! `docs/NETLAB.md`.
//!
//! Needs root, iproute2, nftables, conntrack and coturn (scripts/setup.sh).
//! Without them each test prints a loud SKIPPED banner, and fails under CI.
//!
//! The setup-time figures: `cargo test -p calling-netlab --test lab --
//! --ignored --nocapture setup_time_per_path_type` (scripts/bench-netlab.sh).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;

use calling_netlab::{
    Lab, Nat, Node, PUBLIC_IP, PUBLIC_IP2, Pki, TURN_PORT, TURN_SECRET, WAN_A, WAN_A_MOVED, WAN_B,
    prerequisites, set_lab_node,
};

/// Longest a call may take to carry its first frames both ways.
const CALL_WAIT: Duration = Duration::from_secs(60);

/// One call at a time: every call encodes H.264 both ways, and the machine
/// has two cores shared with other work.
static CALLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    CALLS.lock().unwrap_or_else(|e| e.into_inner())
}

fn setup(test: &str) -> bool {
    set_lab_node(env!("CARGO_BIN_EXE_lab-node"));
    prerequisites(test)
}

fn stun_url() -> String {
    format!("stun:{PUBLIC_IP}:{TURN_PORT}")
}

fn turn_url() -> String {
    format!("turn:{PUBLIC_IP}:{TURN_PORT}?transport=udp")
}

/// calling-server in the public segment, announcing the lab's coturn for
/// STUN and TURN with credentials signed by `TURN_SECRET`.
fn start_server_with_stun_and_turn(lab: &Lab, pki: &Pki) -> Node {
    lab.start_server(
        pki,
        &[
            "--stun-url",
            &stun_url(),
            "--turn-url",
            &turn_url(),
            "--turn-secret",
            TURN_SECRET,
        ],
    )
}

fn stun_servers() -> [String; 2] {
    [
        format!("{PUBLIC_IP}:{TURN_PORT}"),
        format!("{PUBLIC_IP2}:{TURN_PORT}"),
    ]
}

/// bob (in `callee_ns`) answers, alice (in `caller_ns`) calls him; returns
/// both once each has received frames of audio and video from the other.
fn call(
    lab: &Lab,
    ca: &str,
    (caller_ns, caller_flags): (&str, &[&str]),
    (callee_ns, callee_flags): (&str, &[&str]),
) -> (Node, Node) {
    let bob = lab.peer(callee_ns, "bob", ca, callee_flags);
    let mut flags = vec!["--call", "bob"];
    flags.extend_from_slice(caller_flags);
    let alice = lab.peer(caller_ns, "alice", ca, &flags);
    for (node, from) in [(&alice, "bob"), (&bob, "alice")] {
        let frames = node.try_wait_for(CALL_WAIT, |v| v["type"] == "frames");
        let Some(frames) = frames else {
            panic!(
                "no media from {from} within {CALL_WAIT:?}\n{}\n{}",
                alice.text(),
                bob.text()
            );
        };
        assert_eq!(frames["from"], from);
        assert!(frames["audio_frames"].as_u64().unwrap() >= 20, "{frames}");
        assert!(frames["video_frames"].as_u64().unwrap() >= 20, "{frames}");
    }
    (alice, bob)
}

/// The selected pair's path type (`host`, `srflx`, `prflx`, `relay`) as
/// `node` last reported it, with the whole pair for messages.
fn path(node: &Node) -> (String, Value) {
    let pair = node
        .lines()
        .iter()
        .rev()
        .find(|v| v["type"] == "frames" || v["type"] == "stats" && !v["pair"].is_null())
        .map(|v| v["pair"].clone())
        .unwrap_or_default();
    (pair["path"].as_str().unwrap_or("none").to_string(), pair)
}

/// Both ends selected a pair of path type `want`.
fn assert_path(alice: &Node, bob: &Node, want: &str) {
    for node in [alice, bob] {
        let (got, pair) = path(node);
        assert_eq!(got, want, "selected pair {pair}");
    }
}

/// Lines of `conntrack -L -p udp` in `router` for flows between `a` and
/// `b` that got answers (ICE checks that went unanswered do not count).
fn flows(lab: &Lab, router: &str, a: &str, b: &str) -> Vec<String> {
    lab.conntrack_udp(router)
        .lines()
        .filter(|l| l.contains(&format!("={a} ")) && l.contains(&format!("={b} ")))
        .filter(|l| !l.contains("[UNREPLIED]"))
        .map(str::to_string)
        .collect()
}

/// Bytes coturn relayed for `user` ("peer usage" lines, logged when the
/// allocation goes away).
fn relayed_bytes(coturn: &Node, user: &str) -> u64 {
    coturn
        .lines()
        .iter()
        .filter_map(|v| v["text"].as_str())
        .filter(|l| l.contains("peer usage") && l.contains(&format!(":{user}>")))
        .map(|l| field(l, "rb=") + field(l, "sb="))
        .sum()
}

/// The number after `key` in a coturn usage line (`rb=17664,`).
fn field(line: &str, key: &str) -> u64 {
    line.split_once(key)
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Hangs up and waits until coturn has accounted both users' relayed media.
fn assert_relayed(alice: &Node, coturn: &Node) {
    alice.send("hangup");
    for user in ["alice", "bob"] {
        let usage = coturn.try_wait_for(Duration::from_secs(30), |v| {
            v["text"]
                .as_str()
                .is_some_and(|l| l.contains("peer usage") && l.contains(&format!(":{user}>")))
        });
        assert!(
            usage.is_some(),
            "coturn reported no relayed traffic for {user}\n{}",
            coturn.text()
        );
        let bytes = relayed_bytes(coturn, user);
        // ICE checks over relay pairs are a few KB; 20 video frames are more.
        assert!(bytes > 10_000, "{user}: coturn relayed only {bytes} bytes");
    }
}

/// The port of an `ip:port` string.
fn port(addr: &Option<String>) -> u16 {
    addr.as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap()
}

fn ip(addr: &Option<String>) -> String {
    addr.as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(ip, _)| ip.to_string())
        .unwrap()
}

#[test]
fn same_lan_call_without_stun_takes_the_host_pair() {
    if !setup("same_lan_call_without_stun_takes_the_host_pair") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("lan", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 2);
    let pki = lab.pki();
    // No STUN or TURN announced: host candidates are all there is.
    let _server = lab.start_server(&pki, &[]);
    let ca = pki.ca.display().to_string();
    let [a1, a2] = lab.clients_a() else {
        unreachable!()
    };
    let (alice, bob) = call(&lab, &ca, (a1, &[]), (a2, &[]));
    // Each end uses its host candidate; the other end's may show up as
    // peer-reflexive when its checks arrive before its trickled candidate.
    for node in [&alice, &bob] {
        let (_, pair) = path(node);
        assert_eq!(pair["local"], "host", "selected pair {pair}");
        assert!(
            pair["remote"] == "host" || pair["remote"] == "prflx",
            "selected pair {pair}"
        );
        if let Some(addr) = pair["local_addr"].as_str() {
            assert!(addr.starts_with("192.0.2."), "selected pair {pair}");
        }
    }
    // Nothing of the call left the LAN: the router translated no UDP.
    let wan = lab.conntrack_udp(&lab.router_a());
    assert!(
        !wan.contains(&WAN_A.to_string()),
        "UDP was translated to the router's public address:\n{wan}"
    );
    alice.close();
}

#[test]
fn port_restricted_nats_connect_through_stun_reflexive_pair() {
    if !setup("port_restricted_nats_connect_through_stun_reflexive_pair") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("cone", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 1);
    let pki = lab.pki();
    let _coturn = lab.start_coturn(TURN_SECRET);
    // STUN only: with no relay, media flows directly between the NATs or not at all.
    let _server = lab.start_server(&pki, &["--stun-url", &stun_url()]);
    let ca = pki.ca.display().to_string();
    let a1 = lab.clients_a()[0].clone();

    // The NAT keeps one public port per socket whatever the destination.
    let mapped = lab.stun_probe(&a1, &stun_servers());
    assert_eq!(ip(&mapped[0]), WAN_A.to_string(), "{mapped:?}");
    assert_eq!(port(&mapped[0]), port(&mapped[1]), "{mapped:?}");

    let (alice, bob) = call(&lab, &ca, (&a1, &[]), (lab.client_b(), &[]));
    assert_path(&alice, &bob, "srflx");
    // Router A translated a flow straight to router B's public address.
    let direct = flows(&lab, &lab.router_a(), "192.0.2.11", &WAN_B.to_string());
    assert!(
        !direct.is_empty(),
        "no direct flow between the homes:\n{}",
        lab.conntrack_udp(&lab.router_a())
    );
    alice.close();
}

#[test]
fn symmetric_nats_connect_through_the_turn_relay() {
    if !setup("symmetric_nats_connect_through_the_turn_relay") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("sym", Nat::Symmetric, Nat::Symmetric, 1);
    let pki = lab.pki();
    let coturn = lab.start_coturn(TURN_SECRET);
    let server = start_server_with_stun_and_turn(&lab, &pki);
    let ca = pki.ca.display().to_string();
    let a1 = lab.clients_a()[0].clone();
    // The server's check at start: coturn accepts its credentials.
    let check = server.wait_for(Duration::from_secs(20), |v| v["type"] == "turn_check");
    assert!(check["relayed"].is_string(), "{check}");

    // A new public port per destination: what STUN saw is useless to a peer.
    let mapped = lab.stun_probe(&a1, &stun_servers());
    assert_eq!(ip(&mapped[0]), WAN_A.to_string(), "{mapped:?}");
    assert_ne!(port(&mapped[0]), port(&mapped[1]), "{mapped:?}");

    let (alice, bob) = call(&lab, &ca, (&a1, &[]), (lab.client_b(), &[]));
    assert_path(&alice, &bob, "relay");
    let direct = flows(&lab, &lab.router_a(), "192.0.2.11", &WAN_B.to_string());
    assert!(direct.is_empty(), "media went directly: {direct:?}");
    assert_relayed(&alice, &coturn);
    alice.close();
}

#[test]
fn relay_only_policy_relays_even_where_stun_would_do() {
    if !setup("relay_only_policy_relays_even_where_stun_would_do") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("relay", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 1);
    let pki = lab.pki();
    let coturn = lab.start_coturn(TURN_SECRET);
    let _server = start_server_with_stun_and_turn(&lab, &pki);
    let ca = pki.ca.display().to_string();
    let a1 = lab.clients_a()[0].clone();
    let relay = ["--relay-only"];
    let (alice, bob) = call(&lab, &ca, (&a1, &relay), (lab.client_b(), &relay));
    assert_path(&alice, &bob, "relay");
    let direct = flows(&lab, &lab.router_a(), "192.0.2.11", &WAN_B.to_string());
    assert!(
        direct.is_empty(),
        "relay-only media went directly: {direct:?}"
    );
    // Router B never even learned of home A's public address.
    let seen = lab.conntrack_udp(&lab.router_b());
    assert!(
        !seen.contains(&format!("={WAN_A} ")),
        "home B talked to home A directly:\n{seen}"
    );
    assert_relayed(&alice, &coturn);
    alice.close();
}

#[test]
fn wrong_turn_secret_with_relay_only_fails_the_media_cleanly() {
    if !setup("wrong_turn_secret_with_relay_only_fails_the_media_cleanly") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new(
        "badkey",
        Nat::PortRestrictedCone,
        Nat::PortRestrictedCone,
        1,
    );
    let pki = lab.pki();
    let coturn = lab.start_coturn(TURN_SECRET);
    // The server signs credentials with another secret than coturn checks.
    let server = lab.start_server(
        &pki,
        &[
            "--turn-url",
            &turn_url(),
            "--turn-secret",
            "not-the-turn-secret",
        ],
    );
    let ca = pki.ca.display().to_string();
    let relay = ["--relay-only"];
    let bob = lab.peer(lab.client_b(), "bob", &ca, &relay);
    let alice = lab.peer(
        &lab.clients_a()[0],
        "alice",
        &ca,
        &["--call", "bob", "--relay-only"],
    );
    // coturn refuses the allocations: the message integrity does not match.
    for user in [":alice", ":bob"] {
        let refused = coturn.try_wait_for(Duration::from_secs(30), |v| {
            v["text"]
                .as_str()
                .is_some_and(|l| l.contains("401") && l.contains(user))
        });
        assert!(
            refused.is_some(),
            "coturn did not refuse {user}\n{}",
            coturn.text()
        );
    }
    // The server's own check at start says so, naming the URL.
    let check = server.wait_for(Duration::from_secs(20), |v| v["type"] == "turn_check");
    assert_eq!(check["url"], turn_url().as_str(), "{check}");
    assert!(check["relayed"].is_null(), "{check}");
    assert!(
        check["error"].as_str().is_some_and(|e| e.contains("401")),
        "{check}"
    );
    // Both ends are told why at once (a typed error naming the TURN
    // secret), get no media, and the call ends rather than hanging.
    for node in [&alice, &bob] {
        let told = node.try_wait_for(Duration::from_secs(20), |v| {
            v["type"] == "event"
                && v["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("Error { code: TurnUnavailable"))
        });
        assert!(told.is_some(), "no TurnUnavailable error\n{}", node.text());
        let ended = node.try_wait_for(Duration::from_secs(60), |v| {
            v["type"] == "event"
                && v["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("Call(CallEnd"))
        });
        assert!(ended.is_some(), "the call did not end\n{}", node.text());
        assert!(
            !node.lines().iter().any(|v| v["type"] == "first_frame"),
            "media flowed without a relay\n{}",
            node.text()
        );
    }
    alice.close();
    bob.close();
}

#[test]
fn media_comes_back_after_the_routers_media_mapping_moves() {
    if !setup("media_comes_back_after_the_routers_media_mapping_moves") {
        return;
    }
    media_comes_back_after(move_media_mapping_of_router_a);
}

#[test]
fn relay_only_media_comes_back_after_coturn_restarts() {
    if !setup("relay_only_media_comes_back_after_coturn_restarts") {
        return;
    }
    let _serial = serial();
    let lab = Lab::new(
        "turnrs",
        Nat::PortRestrictedCone,
        Nat::PortRestrictedCone,
        1,
    );
    let pki = lab.pki();
    let coturn = lab.start_coturn(TURN_SECRET);
    let _server = lab.start_server(
        &pki,
        &["--turn-url", &turn_url(), "--turn-secret", TURN_SECRET],
    );
    let ca = pki.ca.display().to_string();
    let a1 = lab.clients_a()[0].clone();
    let relay = ["--relay-only"];
    let (alice, bob) = call(&lab, &ca, (&a1, &relay), (lab.client_b(), &relay));
    let before = [resumed(&alice).len(), resumed(&bob).len()];
    // The relay crashes and comes back empty: every allocation is gone.
    drop(coturn);
    let _coturn = lab.restart_coturn(TURN_SECRET);
    let gap = wait_resumed(&alice, &bob, before);
    eprintln!("media back through the restarted relay after a gap of {gap} ms");
    assert_path(&alice, &bob, "relay");
    alice.close();
    bob.close();
}

#[test]
#[ignore = "benchmark: scripts/bench-netlab.sh"]
fn restore_time_after_the_media_mapping_moves() {
    if !setup("restore_time_after_the_media_mapping_moves") {
        return;
    }
    let n: usize = std::env::var("NETLAB_BENCH_RESTORES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let gaps: Vec<f64> = (0..n)
        .map(|_| media_comes_back_after(move_media_mapping_of_router_a))
        .collect();
    let (p50, p95) = percentiles(gaps.clone());
    println!("restore after the media mapping moved, {n} calls: gaps {gaps:?} ms");
    println!(
        "restore  p50 {p50:.0} ms  p95 {p95:.0} ms  max {:.0} ms",
        gaps.iter().copied().fold(0.0, f64::max)
    );
}

#[test]
fn media_comes_back_after_the_router_changes_its_public_address() {
    if !setup("media_comes_back_after_the_router_changes_its_public_address") {
        return;
    }
    media_comes_back_after(move_router_a);
}

/// A call between the two cone homes survives `change` (made mid-call to
/// router A): media stalls, then comes back both ways within a bound. The
/// gap each end saw is printed as the restore figure; returns the longer.
fn media_comes_back_after(change: fn(&Lab)) -> f64 {
    let _serial = serial();
    let lab = Lab::new("move", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 1);
    let pki = lab.pki();
    let _coturn = lab.start_coturn(TURN_SECRET);
    let _server = start_server_with_stun_and_turn(&lab, &pki);
    let ca = pki.ca.display().to_string();
    let a1 = lab.clients_a()[0].clone();
    let (alice, bob) = call(&lab, &ca, (&a1, &[]), (lab.client_b(), &[]));
    // A stall before the change (a loaded machine) must not count.
    let before = [resumed(&alice).len(), resumed(&bob).len()];
    change(&lab);
    let longest = wait_resumed(&alice, &bob, before);
    if std::env::var_os("NETLAB_TRACE").is_some() {
        eprintln!("{}\n{}", alice.text(), bob.text());
    }
    let (path, pair) = path(&alice);
    assert_eq!(path, "srflx", "after the change: {pair}");
    alice.close();
    bob.close();
    longest
}

/// The `resumed` lines `node` printed so far.
fn resumed(node: &Node) -> Vec<Value> {
    node.lines()
        .into_iter()
        .filter(|v| v["type"] == "resumed")
        .collect()
}

/// Waits (30 s at most) until both ends report media back after a stall
/// that began after `before` earlier ones; returns the longer gap in ms.
fn wait_resumed(alice: &Node, bob: &Node, before: [usize; 2]) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut longest = 0.0f64;
    for (node, before) in [(alice, before[0]), (bob, before[1])] {
        let back = loop {
            if let Some(v) = resumed(node).get(before) {
                break Some(v.clone());
            }
            if std::time::Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(back) = back else {
            panic!(
                "media did not come back within 30 s\n{}\n{}",
                alice.text(),
                bob.text()
            );
        };
        // The figure for docs/BENCHMARKS.md, not an assertion.
        eprintln!(
            "{}: media back after a gap of {} ms",
            node_name(node),
            back["gap_ms"]
        );
        longest = longest.max(back["gap_ms"].as_f64().unwrap_or(0.0));
    }
    longest
}

fn node_name(node: &Node) -> String {
    node.lines()
        .iter()
        .find(|v| v["type"] == "ready")
        .map(|v| v["user"].to_string())
        .unwrap_or_default()
}

/// Home A's router gets a new public address (as after a PPPoE or DHCP
/// renewal) and forgets every mapping: media and signaling both break.
fn move_router_a(lab: &Lab) {
    let r = lab.router_a();
    lab.exec(&r, &["ip", "addr", "flush", "dev", "wan"]);
    let moved = format!("{WAN_A_MOVED}/24");
    lab.exec(&r, &["ip", "addr", "add", &moved, "dev", "wan"]);
    let gateway = PUBLIC_IP.to_string();
    lab.exec(&r, &["ip", "route", "replace", "default", "via", &gateway]);
    flush_conntrack(lab, &r, &[]);
}

/// Home A's router maps UDP to a new public address from now on and
/// forgets its UDP mappings (as a carrier-grade NAT re-mapping, or a
/// multi-homed router switching uplinks for UDP): the media path breaks,
/// the signaling connection (TCP) does not.
fn move_media_mapping_of_router_a(lab: &Lab) {
    let r = lab.router_a();
    let moved = format!("{WAN_A_MOVED}/24");
    lab.exec(&r, &["ip", "addr", "add", &moved, "dev", "wan"]);
    let rule = format!(
        "insert rule ip nat postrouting oifname \"wan\" meta l4proto udp snat to {WAN_A_MOVED}"
    );
    lab.exec(&r, &["nft", &rule]);
    flush_conntrack(lab, &r, &["-p", "udp"]);
}

/// Deletes conntrack entries in `router` (all, or those `filter` selects).
fn flush_conntrack(lab: &Lab, router: &str, filter: &[&str]) {
    // conntrack exits non-zero when nothing matched: not an error here.
    let mut args = vec!["netns", "exec", router, "conntrack"];
    if filter.is_empty() {
        args.push("-F");
    } else {
        args.push("-D");
        args.extend_from_slice(filter);
    }
    let _ = std::process::Command::new("ip")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let left = lab.conntrack_udp(router);
    assert!(
        !left.contains(&format!("={WAN_A} ")),
        "router A still maps UDP to its old address:\n{left}"
    );
}

/// `(p50, p95)` of `values` in milliseconds.
fn percentiles(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95))
}

/// Setup times (accept → first remote frame at the caller) of `n` calls.
fn setup_times(lab: &Lab, ca: &str, caller: &str, callee: &str, n: u32) -> Vec<f64> {
    let bob = lab.peer(callee, "bob", ca, &[]);
    let calls = n.to_string();
    let alice = lab.peer(
        caller,
        "alice",
        ca,
        &["--call", "bob", "--calls", &calls, "--frames", "5"],
    );
    alice.wait_for(Duration::from_secs(30) * n, |v| v["type"] == "done");
    let times: Vec<f64> = alice
        .lines()
        .iter()
        .filter(|v| v["type"] == "first_frame")
        .filter_map(|v| v["setup_ms"].as_f64())
        .collect();
    assert_eq!(times.len(), n as usize, "{}", alice.text());
    // The path each call took, as the caller's selected pair says.
    let mut paths = std::collections::BTreeMap::<String, u32>::new();
    for v in alice.lines().iter().filter(|v| v["type"] == "frames") {
        let path = v["pair"]["path"].as_str().unwrap_or("none").to_string();
        *paths.entry(path).or_default() += 1;
    }
    eprintln!("selected paths: {paths:?}");
    alice.close();
    bob.close();
    times
}

#[test]
#[ignore = "benchmark: scripts/bench-netlab.sh"]
fn setup_time_per_path_type() {
    if !setup("setup_time_per_path_type") {
        return;
    }
    let _serial = serial();
    let n: u32 = std::env::var("NETLAB_BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut report = Vec::new();
    {
        let lab = Lab::new("bhost", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 2);
        let pki = lab.pki();
        let _server = lab.start_server(&pki, &[]);
        let ca = pki.ca.display().to_string();
        let [a1, a2] = lab.clients_a() else {
            unreachable!()
        };
        report.push(("host", setup_times(&lab, &ca, a1, a2, n)));
    }
    {
        let lab = Lab::new(
            "bsrflx",
            Nat::PortRestrictedCone,
            Nat::PortRestrictedCone,
            1,
        );
        let pki = lab.pki();
        let _coturn = lab.start_coturn(TURN_SECRET);
        let _server = lab.start_server(&pki, &["--stun-url", &stun_url()]);
        let ca = pki.ca.display().to_string();
        let a1 = lab.clients_a()[0].clone();
        report.push(("srflx", setup_times(&lab, &ca, &a1, lab.client_b(), n)));
    }
    {
        let lab = Lab::new("brelay", Nat::Symmetric, Nat::Symmetric, 1);
        let pki = lab.pki();
        let _coturn = lab.start_coturn(TURN_SECRET);
        let _server = start_server_with_stun_and_turn(&lab, &pki);
        let ca = pki.ca.display().to_string();
        let a1 = lab.clients_a()[0].clone();
        report.push(("relay", setup_times(&lab, &ca, &a1, lab.client_b(), n)));
    }
    println!("path   calls  p50 ms  p95 ms  (accept -> first remote frame at the caller)");
    for (path, times) in report {
        let calls = times.len();
        let (p50, p95) = percentiles(times);
        println!("{path:<6} {calls:>5}  {p50:>6.0}  {p95:>6.0}");
    }
}

/// `Ok` when Chromium, node and playwright-core are installed; otherwise
/// fails under CI and prints a loud SKIPPED banner elsewhere.
fn browser_ready(test: &str) -> bool {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut missing = Vec::new();
    if !std::path::Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (Debian package chromium)"));
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node {
        missing.push("node".into());
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        missing.push("tests/browser/node_modules (npm ci)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    assert!(
        std::env::var_os("CI").is_none(),
        "NAT lab browser test {test} cannot run under CI: missing {what}; scripts/setup.sh installs them"
    );
    let banner = format!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED NAT lab browser test {test}: missing {what}.\n\
         !!! Run scripts/setup.sh (as root). This test did NOT run.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
    false
}

/// Headless Chromium in `ns` running `scenario` (`answer` or `place`) of
/// tests/netlab/browser.mjs as web user `user` with Rust peer `peer`.
fn chromium(lab: &Lab, ns: &str, scenario: &str, user: &str, peer: &str, spki: &str) -> Node {
    chromium_with(lab, ns, scenario, (user, peer), spki, &[])
}

/// [`chromium`] with `extra` browser.mjs options (`watch=1`).
fn chromium_with(
    lab: &Lab,
    ns: &str,
    scenario: &str,
    (user, peer): (&str, &str),
    spki: &str,
    extra: &[&str],
) -> Node {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser.mjs");
    let base = format!("https://{PUBLIC_IP}:{}", calling_netlab::SERVER_PORT);
    let (user, peer, spki) = (
        format!("user={user}"),
        format!("peer={peer}"),
        format!("spki={spki}"),
    );
    let mut args = vec!["node", script, scenario, &base, &user, &peer, &spki];
    args.extend_from_slice(extra);
    let node = lab.spawn(ns, "chromium", &args);
    let ready = node.try_wait_for(Duration::from_secs(90), |v| {
        v["type"] == "ready" || v["type"] == "fatal"
    });
    assert!(
        ready.as_ref().is_some_and(|v| v["type"] == "ready"),
        "Chromium did not log in over https://\n{}",
        node.text()
    );
    node
}

/// The Rust peer and Chromium each receive the other's audio and video;
/// returns the Rust side's and the browser's selected pairs.
fn rust_and_browser_media(rust: &Node, browser: &Node, web_user: &str) -> (Value, Value) {
    let at_rust = rust.try_wait_for(CALL_WAIT, |v| v["type"] == "frames");
    let at_rust = at_rust.unwrap_or_else(|| {
        panic!(
            "no media from Chromium\n{}\n{}",
            rust.text(),
            browser.text()
        )
    });
    assert_eq!(at_rust["from"], web_user);
    let at_web = browser.try_wait_for(CALL_WAIT, |v| v["type"] == "frames" || v["type"] == "fatal");
    let at_web = at_web.unwrap_or_else(|| panic!("Chromium saw no media\n{}", browser.text()));
    assert_eq!(
        at_web["type"],
        "frames",
        "{}\n{}",
        browser.text(),
        rust.text()
    );
    assert!(at_web["framesDecoded"].as_u64().unwrap() > 0, "{at_web}");
    browser.send("done");
    let ended = browser.try_wait_for(Duration::from_secs(40), |v| v["type"] == "ended");
    assert!(
        ended.is_some(),
        "the call did not end in Chromium\n{}",
        browser.text()
    );
    (at_rust["pair"].clone(), at_web["pair"].clone())
}

/// The lab's server in demo mode (the web page fetches UserSigs) with STUN
/// and TURN.
fn demo_server(lab: &Lab, pki: &Pki) -> Node {
    lab.start_server(
        pki,
        &[
            "--demo",
            "--stun-url",
            &stun_url(),
            "--turn-url",
            &turn_url(),
            "--turn-secret",
            TURN_SECRET,
        ],
    )
}

#[test]
fn chromium_answers_a_rust_peer_on_its_lan_over_https() {
    let test = "chromium_answers_a_rust_peer_on_its_lan_over_https";
    if !setup(test) || !browser_ready(test) {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("web", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 2);
    let pki = lab.pki();
    let _coturn = lab.start_coturn(TURN_SECRET);
    let _server = demo_server(&lab, &pki);
    let ca = pki.ca.display().to_string();
    let [a1, a2] = lab.clients_a() else {
        unreachable!()
    };
    let browser = chromium(&lab, a1, "answer", "web-a", "alice", &pki.spki_sha256);
    let alice = lab.peer(a2, "alice", &ca, &["--call", "web-a"]);
    let (rust_pair, web_pair) = rust_and_browser_media(&alice, &browser, "web-a");
    assert_eq!(rust_pair["local"], "host", "Rust pair {rust_pair}");
    assert_eq!(web_pair["local"], "host", "Chromium pair {web_pair}");
    alice.close();
}

#[test]
fn chromium_calls_a_rust_peer_in_the_other_home_through_both_nats() {
    let test = "chromium_calls_a_rust_peer_in_the_other_home_through_both_nats";
    if !setup(test) || !browser_ready(test) {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("webx", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 1);
    let pki = lab.pki();
    let _coturn = lab.start_coturn(TURN_SECRET);
    let _server = demo_server(&lab, &pki);
    let ca = pki.ca.display().to_string();
    let bob = lab.peer(lab.client_b(), "bob", &ca, &[]);
    let browser = chromium(
        &lab,
        &lab.clients_a()[0],
        "place",
        "web-a",
        "bob",
        &pki.spki_sha256,
    );
    let (rust_pair, web_pair) = rust_and_browser_media(&bob, &browser, "web-a");
    // Across two NATs: never a host pair.
    assert_ne!(rust_pair["path"], "host", "Rust pair {rust_pair}");
    assert_ne!(web_pair["local"], "host", "Chromium pair {web_pair}");
    bob.close();
}

#[test]
fn chromium_offerer_restarts_ice_after_the_routers_media_mapping_moves() {
    let test = "chromium_offerer_restarts_ice_after_the_routers_media_mapping_moves";
    if !setup(test) || !browser_ready(test) {
        return;
    }
    // "web-a" < "yan": Chromium offers, so only its restart can mend it.
    chromium_media_comes_back(true, move_media_mapping_of_router_a);
}

#[test]
fn chromium_offerer_retries_ice_restarts_through_an_outage() {
    let test = "chromium_offerer_retries_ice_restarts_through_an_outage";
    if !setup(test) || !browser_ready(test) {
        return;
    }
    // Long enough for Chromium to call its media interrupted itself, and
    // for its first restarts to fail: a later retry brings media back.
    let interrupted = chromium_media_comes_back(true, block_udp_at_router_a_for_a_while);
    assert!(
        interrupted,
        "calling.js never reported the media interrupted"
    );
}

#[test]
fn chromium_answerer_comes_back_after_the_routers_media_mapping_moves() {
    let test = "chromium_answerer_comes_back_after_the_routers_media_mapping_moves";
    if !setup(test) || !browser_ready(test) {
        return;
    }
    // "bob" < "web-a": the Rust side restarts, Chromium answers in place
    // (and asks for restarts while its media is interrupted).
    chromium_media_comes_back(false, move_media_mapping_of_router_a);
}

#[test]
fn chromium_waits_for_a_reconnecting_rust_peer_whose_router_moved() {
    let test = "chromium_waits_for_a_reconnecting_rust_peer_whose_router_moved";
    if !setup(test) || !browser_ready(test) {
        return;
    }
    // The Rust peer's signaling connection breaks too: the server tells
    // Chromium it left (room_leave), and calling.js's reconnect grace keeps
    // the call until the peer is back.
    let browser = chromium_media_comes_back_in(true, move_router_a, true);
    let logged = |text: &str| {
        browser
            .iter()
            .any(|v| v["type"] == "log" && v["text"].as_str().is_some_and(|t| t.contains(text)))
    };
    assert!(
        logged("yan is unreachable"),
        "no room_leave seen: {browser:?}"
    );
    assert!(logged("yan is back"), "the grace did not end: {browser:?}");
}

/// Router A forwards no UDP for 6 s (signaling, over TCP, goes on), then
/// moves its UDP mapping.
fn block_udp_at_router_a_for_a_while(lab: &Lab) {
    let r = lab.router_a();
    lab.exec(&r, &["nft", "add table inet labblock"]);
    let chain = "add chain inet labblock blockudp { type filter hook forward priority -10 ; }";
    lab.exec(&r, &["nft", chain]);
    lab.exec(
        &r,
        &[
            "nft",
            "add rule inet labblock blockudp meta l4proto udp drop",
        ],
    );
    std::thread::sleep(Duration::from_secs(6));
    lab.exec(&r, &["nft", "delete table inet labblock"]);
    move_media_mapping_of_router_a(lab);
}

/// Chromium in home A and a Rust peer in home B are in a call (Chromium
/// placing it and offering when `browser_offers`, else answering); router
/// A's UDP path breaks mid-call by `change`. Media must come back both ways
/// within a bound, by ICE restart, and the call go on. Returns whether
/// calling.js reported the media interrupted (and then restored).
fn chromium_media_comes_back(browser_offers: bool, change: fn(&Lab)) -> bool {
    let lines = chromium_media_comes_back_in(browser_offers, change, false);
    lines
        .iter()
        .any(|v| v["type"] == "event" && v["event"] == "mediaInterrupted")
}

/// [`chromium_media_comes_back`] with Chromium in home B and the Rust peer
/// in home A (whose router `change` breaks) when `swapped`; returns
/// Chromium's output lines.
fn chromium_media_comes_back_in(
    browser_offers: bool,
    change: fn(&Lab),
    swapped: bool,
) -> Vec<Value> {
    let _serial = serial();
    let lab = Lab::new("webr", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 1);
    let pki = lab.pki();
    let _coturn = lab.start_coturn(TURN_SECRET);
    let _server = demo_server(&lab, &pki);
    let ca = pki.ca.display().to_string();
    let (web_home, rust_home) = if swapped {
        (lab.client_b().to_string(), lab.clients_a()[0].clone())
    } else {
        (lab.clients_a()[0].clone(), lab.client_b().to_string())
    };
    let (a1, rust_home) = (web_home, rust_home.as_str());
    let watch = ["watch=1"];
    let (rust, browser, rust_user) = if browser_offers {
        let rust = lab.peer(rust_home, "yan", &ca, &[]);
        let spki = &pki.spki_sha256;
        let browser = chromium_with(&lab, &a1, "place", ("web-a", "yan"), spki, &watch);
        (rust, browser, "yan")
    } else {
        let spki = &pki.spki_sha256;
        let browser = chromium_with(&lab, &a1, "answer", ("web-a", "bob"), spki, &watch);
        let rust = lab.peer(rust_home, "bob", &ca, &["--call", "web-a"]);
        (rust, browser, "bob")
    };
    let at_rust = rust.try_wait_for(CALL_WAIT, |v| v["type"] == "frames");
    assert!(
        at_rust.is_some(),
        "no media from Chromium\n{}\n{}",
        rust.text(),
        browser.text()
    );
    let at_web = browser.try_wait_for(CALL_WAIT, |v| v["type"] == "frames" || v["type"] == "fatal");
    assert!(
        at_web.as_ref().is_some_and(|v| v["type"] == "frames"),
        "Chromium saw no media\n{}\n{}",
        browser.text(),
        rust.text()
    );
    let before = [resumed(&browser).len(), resumed(&rust).len()];
    let marks = |what: &str| {
        browser
            .lines()
            .into_iter()
            .filter(|v| v["type"] == "mark" && v["what"] == what)
            .count()
    };
    let offers_before = [marks("ice-restart"), marks("offer-received")];
    change(&lab);
    let longest = wait_resumed(&browser, &rust, before);
    eprintln!("Chromium (offering: {browser_offers}) and Rust: media back after {longest} ms");
    if std::env::var_os("NETLAB_TRACE").is_some() {
        eprintln!("{}\n{}", browser.text(), rust.text());
    }
    // It came back by an ICE restart of the same connection: Chromium made
    // the offer, or answered the Rust side's.
    let (restarts, what) = if browser_offers {
        (marks("ice-restart") - offers_before[0], "restarted ICE")
    } else {
        (
            marks("offer-received") - offers_before[1],
            "received a restart offer",
        )
    };
    assert!(restarts >= 1, "Chromium never {what}\n{}", browser.text());
    eprintln!("Chromium {what} {restarts} time(s)");
    let events = |name: &str| {
        browser
            .lines()
            .into_iter()
            .filter(|v| v["type"] == "event" && v["event"] == name)
            .collect::<Vec<_>>()
    };
    // Chromium may not call the path broken before the restart mends it
    // (its own checks are slower than the Rust side's ask); when it did,
    // calling.js reports it back.
    if !events("mediaInterrupted").is_empty() {
        let restored = browser.try_wait_for(Duration::from_secs(10), |v| {
            v["type"] == "event" && v["event"] == "mediaRestored"
        });
        let restored = restored.unwrap_or_else(|| {
            panic!(
                "calling.js reported no mediaRestored\n{}\n{}",
                browser.text(),
                rust.text()
            )
        });
        assert_eq!(restored["userID"], rust_user, "{restored}");
        eprintln!("calling.js: mediaRestored after {} ms", restored["gapMs"]);
    }
    assert!(events("mediaFailed").is_empty(), "{}", browser.text());
    assert!(events("callEnd").is_empty(), "{}", browser.text());
    browser.send("done");
    let ended = browser.try_wait_for(Duration::from_secs(40), |v| v["type"] == "ended");
    assert!(
        ended.is_some(),
        "the call did not end in Chromium\n{}",
        browser.text()
    );
    rust.close();
    browser.lines()
}

#[test]
fn chromium_fails_the_media_and_ends_the_call_when_udp_stays_blocked() {
    let test = "chromium_fails_the_media_and_ends_the_call_when_udp_stays_blocked";
    if !setup(test) || !browser_ready(test) {
        return;
    }
    let _serial = serial();
    let lab = Lab::new("webf", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 1);
    let pki = lab.pki();
    let _coturn = lab.start_coturn(TURN_SECRET);
    let _server = demo_server(&lab, &pki);
    let ca = pki.ca.display().to_string();
    let rust = lab.peer(lab.client_b(), "yan", &ca, &[]);
    // A restore bound shorter than the Rust side's (15 s from its own,
    // earlier, detection): Chromium gives up first, so its own bound ends
    // the call.
    let opts = ["watch=1", "restore_ms=5000"];
    let spki = &pki.spki_sha256;
    let a1 = lab.clients_a()[0].clone();
    let browser = chromium_with(&lab, &a1, "place", ("web-a", "yan"), spki, &opts);
    let at_web = browser.try_wait_for(CALL_WAIT, |v| v["type"] == "frames" || v["type"] == "fatal");
    assert!(
        at_web.as_ref().is_some_and(|v| v["type"] == "frames"),
        "Chromium saw no media\n{}\n{}",
        browser.text(),
        rust.text()
    );
    // Router A forwards no UDP from now on; signaling (TCP) goes on.
    let r = lab.router_a();
    lab.exec(&r, &["nft", "add table inet labblock"]);
    let chain = "add chain inet labblock blockudp { type filter hook forward priority -10 ; }";
    lab.exec(&r, &["nft", chain]);
    lab.exec(
        &r,
        &[
            "nft",
            "add rule inet labblock blockudp meta l4proto udp drop",
        ],
    );
    let is_event = |v: &Value, name: &str| v["type"] == "event" && v["event"] == name;
    let ended = browser.try_wait_for(Duration::from_secs(40), |v| is_event(v, "callEnd"));
    let ended = ended.unwrap_or_else(|| {
        panic!(
            "the call did not end in Chromium\n{}\n{}",
            browser.text(),
            rust.text()
        )
    });
    assert_eq!(ended["reason"], "media_failed", "{}", browser.text());
    let lines = browser.lines();
    let seen = |name: &str| lines.iter().filter(|v| is_event(v, name)).count();
    assert_eq!(seen("mediaInterrupted"), 1, "{}", browser.text());
    assert_eq!(seen("mediaFailed"), 1, "{}", browser.text());
    assert_eq!(seen("mediaRestored"), 0, "{}", browser.text());
    // Chromium left the call: the Rust side's call ends too.
    let rust_end = rust.try_wait_for(Duration::from_secs(20), |v| {
        v["type"] == "event" && v["event"].as_str().is_some_and(|e| e.contains("CallEnd"))
    });
    assert!(
        rust_end.is_some(),
        "the Rust side stayed in the call\n{}",
        rust.text()
    );
    browser.send("done");
    let done = browser.try_wait_for(Duration::from_secs(40), |v| v["type"] == "ended");
    assert!(done.is_some(), "{}", browser.text());
    rust.close();
}
