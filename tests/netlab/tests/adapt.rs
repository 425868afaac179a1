//! Video that adapts to the network, over a real kernel path: a call
//! between two namespaces of the NAT lab whose sender's uplink is capped
//! with `tc … tbf`, then made lossy with nftables (this kernel has no
//! netem), then cleared. The sender's video target (its congestion
//! control, from the receiver's RTCP) must come down under the cap, stay
//! down while packets are lost, and recover once the link is clean, while
//! video frames keep arriving throughout. See `docs/NETLAB.md`.
//!
//! Needs root, iproute2, nftables, conntrack and coturn (scripts/setup.sh).
//! Without them the test prints a loud SKIPPED banner, and fails under CI.
//!
//! The figures (`docs/BENCHMARKS.md`, "Video under a bandwidth cap and
//! loss"): `cargo test -p calling-netlab --test adapt -- --nocapture`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;

use calling_netlab::{Lab, Nat, Node, prerequisites, set_lab_node};

/// The sender's video profile (`VideoQuality::P480`): 800 kbit/s. The
/// sender pushes noise pictures (`lab-node peer --noise`), which fill any
/// target as a camera's busy picture does; the generated test pattern is
/// so easy to compress that it sends a fraction of its target, under the
/// cap, where it would prove nothing.
const PROFILE_BPS: u64 = 800_000;
/// The uplink cap of the first stage.
const CAP_KBIT: u32 = 300;
/// The random loss of the second stage.
const LOSS_PERCENT: u32 = 5;
/// Longest a stage may take to show what it must.
const STAGE_WAIT: Duration = Duration::from_secs(30);
/// Longest the recovery may take: probing climbs ~8 % a second, and from
/// ~100 kbit/s to 90 % of 800 kbit/s is ~26 s of it.
const RECOVERY_WAIT: Duration = Duration::from_secs(60);
/// Longest a call may take to carry its first frames both ways.
const CALL_WAIT: Duration = Duration::from_secs(60);

fn setup(test: &str) -> bool {
    set_lab_node(env!("CARGO_BIN_EXE_lab-node"));
    prerequisites(test)
}

/// The last `stats` line `node` printed.
fn latest(node: &Node) -> Value {
    node.lines()
        .into_iter()
        .rev()
        .find(|v| v["type"] == "stats" && v["video_frames"].is_u64())
        .unwrap_or_default()
}

/// One second of the call, as both ends last reported it.
#[derive(Debug, Clone)]
struct Row {
    /// Seconds since the first impairment.
    t: f64,
    stage: &'static str,
    /// The sender's video target (its estimate for the receiver).
    target_bps: u64,
    /// The loss the sender's congestion control counts.
    loss: Option<f64>,
    /// The round trip the sender measured from the receiver's reports.
    rtt_ms: Option<f64>,
    /// Video frames the receiver completed in this second.
    frames: u64,
    /// Frames per second over this second.
    fps: f64,
    /// Payload kbit/s the receiver got (audio and video) over this second.
    kbps: f64,
    /// Payload kbit/s the sender sent (audio and video) over this second.
    tx_kbps: f64,
}

/// Samples the call once a second.
struct Timeline<'a> {
    sender: &'a Node,
    receiver: &'a Node,
    start: Instant,
    last: Option<(Instant, u64, u64, u64)>,
    rows: Vec<Row>,
}

impl<'a> Timeline<'a> {
    fn new(sender: &'a Node, receiver: &'a Node) -> Self {
        Timeline {
            sender,
            receiver,
            start: Instant::now(),
            last: None,
            rows: Vec::new(),
        }
    }

    fn sample(&mut self, stage: &'static str) -> Row {
        std::thread::sleep(Duration::from_secs(1));
        let now = Instant::now();
        let s = latest(self.sender);
        let r = latest(self.receiver);
        let frames = r["video_frames"].as_u64().unwrap_or(0);
        let bytes = r["bytes_received"].as_u64().unwrap_or(0);
        let sent = s["bytes_sent"].as_u64().unwrap_or(0);
        let (df, dt, db, ds) = match self.last {
            Some((t, f, b, s)) => (
                frames.saturating_sub(f),
                now.duration_since(t).as_secs_f64(),
                bytes.saturating_sub(b),
                sent.saturating_sub(s),
            ),
            None => (0, 1.0, 0, 0),
        };
        self.last = Some((now, frames, bytes, sent));
        let row = Row {
            t: now.duration_since(self.start).as_secs_f64(),
            stage,
            target_bps: s["video_target_bps"].as_u64().unwrap_or(0),
            loss: s["video_fraction_lost"].as_f64(),
            rtt_ms: s["video_rtt_ms"].as_f64(),
            frames: df,
            fps: df as f64 / dt,
            kbps: db as f64 * 8.0 / dt / 1000.0,
            tx_kbps: ds as f64 * 8.0 / dt / 1000.0,
        };
        self.rows.push(row.clone());
        row
    }

    /// Samples `stage` for at least `min` and then until `done` holds for
    /// the latest second, for `max` at most. Whether `done` held at the end.
    fn stage(
        &mut self,
        stage: &'static str,
        min: Duration,
        max: Duration,
        done: impl Fn(&Row) -> bool,
    ) -> bool {
        let began = Instant::now();
        loop {
            let row = self.sample(stage);
            let waited = began.elapsed();
            if waited >= min && done(&row) {
                return true;
            }
            if waited >= max {
                return false;
            }
        }
    }

    fn rows(&self, stage: &str) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.stage == stage).collect()
    }

    fn table(&self) -> String {
        let mut out = String::from(
            "   t s  stage            target kbit/s  tx kbit/s  loss %  rtt ms  rx frames/s  rx kbit/s\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{:6.1}  {:<15}  {:>13}  {:>9.0}  {:>6}  {:>6}  {:>11.1}  {:>9.0}\n",
                r.t,
                r.stage,
                r.target_bps / 1000,
                r.tx_kbps,
                r.loss.map_or("-".into(), |l| format!("{:.1}", l * 100.0)),
                r.rtt_ms.map_or("-".into(), |v| format!("{v:.0}")),
                r.fps,
                r.kbps,
            ));
        }
        out
    }

    /// Every two consecutive seconds of `stage` (after its first
    /// `settle`) brought new video frames.
    fn frames_kept_arriving(&self, stage: &str, settle: usize) -> bool {
        let rows = self.rows(stage);
        rows.len() > settle
            && rows[settle..]
                .windows(2)
                .all(|w| w[0].frames + w[1].frames > 0)
            && rows[settle..].iter().any(|r| r.frames > 0)
    }
}

#[test]
fn video_follows_a_capped_then_lossy_then_clear_uplink() {
    if !setup("video_follows_a_capped_then_lossy_then_clear_uplink") {
        return;
    }
    // Two clients on home A's LAN: the call takes the host pair through
    // the router's bridge, and only alice's uplink (her eth0) is impaired.
    let lab = Lab::new("adp", Nat::PortRestrictedCone, Nat::PortRestrictedCone, 2);
    let pki = lab.pki();
    let _server = lab.start_server(&pki, &[]);
    let ca = pki.ca.display().to_string();
    let [a1, a2] = lab.clients_a() else {
        unreachable!()
    };
    let bob = lab.peer(a2, "bob", &ca, &[]);
    let alice = lab.peer(
        a1,
        "alice",
        &ca,
        &["--call", "bob", "--video-height", "480", "--noise"],
    );
    for node in [&alice, &bob] {
        if node
            .try_wait_for(CALL_WAIT, |v| v["type"] == "frames")
            .is_none()
        {
            panic!(
                "no media within {CALL_WAIT:?}\n{}\n{}",
                alice.text(),
                bob.text()
            );
        }
    }
    let mut timeline = Timeline::new(&alice, &bob);
    let fail = |timeline: &Timeline<'_>, what: &str| -> String {
        format!(
            "{what}\n{}\n{}\n{}",
            timeline.table(),
            alice.text(),
            bob.text()
        )
    };

    // The clean link carries the whole profile.
    let full = |r: &Row| r.target_bps * 10 >= PROFILE_BPS * 9 && r.fps > 5.0;
    let ok = timeline.stage("clean", Duration::from_secs(3), STAGE_WAIT, full);
    assert!(
        ok,
        "{}",
        fail(&timeline, "the clean link is not at the profile")
    );

    // (a) A 300 kbit/s uplink: the target falls under it; frames go on.
    lab.limit_rate(a1, "eth0", CAP_KBIT);
    let cap_bps = u64::from(CAP_KBIT) * 1000;
    let cap = "cap 300 kbit/s";
    let under = |r: &Row| r.target_bps < cap_bps;
    let ok = timeline.stage(cap, Duration::from_secs(3), STAGE_WAIT, under);
    assert!(
        ok,
        "{}",
        fail(&timeline, "the target did not fall under the cap")
    );
    // While the cap stays, the target stays near it (probing up meets the
    // queue and the loss again) and video keeps flowing.
    let steady = "cap, steady";
    timeline.stage(
        steady,
        Duration::from_secs(20),
        Duration::from_secs(20),
        |_| true,
    );
    assert!(
        timeline
            .rows(steady)
            .iter()
            .all(|r| r.target_bps < 2 * cap_bps),
        "{}",
        fail(&timeline, "the target ran off while the cap stood")
    );
    for stage in [cap, steady] {
        assert!(
            timeline.frames_kept_arriving(stage, 0),
            "{}",
            fail(&timeline, "video stopped under the cap")
        );
    }

    // (b) The cap gives way to 5 % random loss: the target stays down
    // from the profile (2-10 % loss holds it), the loss is seen, frames go
    // on.
    lab.clear_rate_limit(a1, "eth0");
    lab.drop_udp(a1, LOSS_PERCENT);
    let lossy = "5 % loss";
    timeline.stage(
        lossy,
        Duration::from_secs(15),
        Duration::from_secs(15),
        |_| true,
    );
    let rows = timeline.rows(lossy);
    assert!(
        rows.iter().all(|r| r.target_bps * 10 < PROFILE_BPS * 9),
        "{}",
        fail(
            &timeline,
            "the target climbed back to the profile under loss"
        )
    );
    assert!(
        rows.iter().any(|r| r.loss.is_some_and(|l| l >= 0.02)),
        "{}",
        fail(&timeline, "the loss was never seen")
    );
    assert!(
        timeline.frames_kept_arriving(lossy, 0),
        "{}",
        fail(&timeline, "video stopped under loss")
    );

    // (c) A clean link again: the target recovers to near the profile.
    lab.clear_udp_loss(a1);
    let clear = "clear";
    let back = |r: &Row| r.target_bps * 10 >= PROFILE_BPS * 9;
    let ok = timeline.stage(clear, Duration::from_secs(3), RECOVERY_WAIT, back);
    assert!(ok, "{}", fail(&timeline, "the target did not recover"));
    assert!(
        timeline.frames_kept_arriving(clear, 0),
        "{}",
        fail(&timeline, "video stopped after the link cleared")
    );

    println!(
        "video under a {CAP_KBIT} kbit/s cap, then {LOSS_PERCENT} % loss, then clear \
         (sender alice, receiver bob):\n{}",
        timeline.table()
    );
    alice.close();
    bob.close();
}
