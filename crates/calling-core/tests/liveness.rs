//! Calls end when they end: the call-level keepalive, `gone` for stale
//! participations, the reconnect recheck, and congestion that is not
//! leaving. All on the virtual clock of the simulated network.

mod sim;

use std::time::Duration;

use calling_core::{
    Body, CallId, CallState, Config, EndReason, Event, MediaType, Message, PROTOCOL_VERSION,
    PartyId,
};
use sim::{Sim, set, uid};

fn interval() -> Duration {
    Config::default().keepalive_interval
}

fn timeout() -> Duration {
    Config::default().keepalive_timeout
}

/// Delivers every message whose recipient is not frozen; a frozen party's
/// messages wait in the network, as in its socket buffer.
fn deliver_except(s: &mut Sim, frozen: &[&str]) {
    s.flush();
    for _ in 0..10_000 {
        let next = s.net.iter().position(|m| !frozen.contains(&m.to.as_str()));
        match next {
            Some(i) => s.deliver(i),
            None => return,
        }
    }
    panic!("network did not settle");
}

/// Runs the clock one second at a time for `secs` seconds, driving every
/// party but the frozen ones (a stopped process fires no timers).
fn run_for(s: &mut Sim, secs: u64, frozen: &[&str]) {
    for _ in 0..secs {
        s.now += Duration::from_secs(1);
        let now = s.now;
        for (user, p) in s.parties.iter_mut() {
            if !frozen.contains(&user.as_str()) {
                p.machine.handle_timeout(now);
            }
        }
        deliver_except(s, frozen);
    }
}

/// Runs the clock until `done` holds, at most `limit`; returns how long it
/// took.
fn run_until(
    s: &mut Sim,
    limit: Duration,
    frozen: &[&str],
    done: impl Fn(&Sim) -> bool,
) -> Duration {
    let start = s.now;
    while !done(s) {
        assert!(s.now - start <= limit, "not done within {limit:?}");
        run_for(s, 1, frozen);
    }
    s.now - start
}

/// The party comes back: the messages that waited for it are lost (its
/// connection was closed meanwhile), its timers fire late, and its driver
/// rechecks after reconnecting.
fn resume_after_reconnect(s: &mut Sim, user: &str) {
    s.net.retain(|m| m.to.as_str() != user);
    let now = s.now;
    s.m(user).handle_timeout(now);
    s.m(user).recheck(now);
    s.settle();
}

fn one_to_one(s: &mut Sim) -> CallId {
    let id = s.call("alice", "bob", MediaType::Audio, 30);
    s.accept("bob");
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.connected("bob"), set(&["alice"]));
    id
}

fn ended(s: &Sim, user: &str) -> usize {
    s.count(user, |e| matches!(e, Event::CallEnd { .. }))
}

fn left(s: &Sim, user: &str, who: &str) -> bool {
    s.events(user)
        .iter()
        .any(|e| matches!(e, Event::UserLeave { user, .. } if user.as_str() == who))
}

/// Gone messages on the network addressed to `to`.
fn gones_to(s: &Sim, to: &str) -> usize {
    s.net
        .iter()
        .filter(|m| m.to.as_str() == to && matches!(m.message.body, Body::Gone { .. }))
        .count()
}

fn alive(call_id: &CallId, party: u64) -> Message {
    Message {
        version: PROTOCOL_VERSION,
        call_id: call_id.clone(),
        party: PartyId(party),
        body: Body::Alive,
    }
}

/// Case 8, 1v1: the callee is stopped past the timeout. The caller drops
/// it within the bound and ends; the callee, back and reconnected, ends its
/// own call on the caller's `gone` and can place a new call.
#[test]
fn a_frozen_callee_is_dropped_and_ends_its_call_when_it_comes_back() {
    let mut s = Sim::new(&["alice", "bob"]);
    one_to_one(&mut s);
    let took = run_until(&mut s, timeout() + interval(), &["bob"], |s| {
        s.state("alice") == CallState::Idle
    });
    assert!(
        took >= timeout() - interval(),
        "dropped too early: {took:?}"
    );
    assert!(left(&s, "alice", "bob"));
    assert_eq!(s.end_reason("alice"), Some(EndReason::Hangup));
    run_for(&mut s, 60, &["bob"]);
    assert_eq!(s.state("bob"), CallState::InCall, "bob saw nothing yet");

    resume_after_reconnect(&mut s, "bob");
    assert_eq!(s.state("bob"), CallState::Idle);
    assert_eq!(ended(&s, "bob"), 1);
    assert_eq!(ended(&s, "alice"), 1);
    // Not stuck "in call": bob can call again.
    s.call("bob", "alice", MediaType::Audio, 30);
    assert_eq!(s.state("alice"), CallState::Ringing);
}

/// Case 8 when the frozen party reads the messages that waited for it
/// before its timers fire: the caller's `leave` ends it.
#[test]
fn a_frozen_callee_that_reads_its_backlog_first_ends_too() {
    let mut s = Sim::new(&["alice", "bob"]);
    one_to_one(&mut s);
    run_for(&mut s, 60, &["bob"]);
    assert_eq!(s.state("alice"), CallState::Idle);
    s.settle();
    let now = s.now;
    s.m("bob").handle_timeout(now);
    s.settle();
    assert_eq!(s.state("bob"), CallState::Idle);
    assert_eq!(ended(&s, "bob"), 1);
}

/// Case 8 in a group: the two others drop the frozen one and go on
/// together; it comes back, is told it was dropped, and leaves.
#[test]
fn a_frozen_member_of_a_group_call_is_dropped_and_the_rest_go_on() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.group_call("alice", &["bob", "carol"], MediaType::Audio, 30);
    s.accept("bob");
    s.accept("carol");
    assert_eq!(s.connected("carol"), set(&["alice", "bob"]));
    run_until(&mut s, timeout() + interval(), &["carol"], |s| {
        s.connected("alice") == set(&["bob"]) && s.connected("bob") == set(&["alice"])
    });
    run_for(&mut s, 30, &["carol"]);
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.state("alice"), CallState::InCall);

    resume_after_reconnect(&mut s, "carol");
    assert_eq!(s.state("carol"), CallState::Idle);
    assert_eq!(ended(&s, "carol"), 1);
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.connected("bob"), set(&["alice"]));
    assert_eq!(ended(&s, "alice"), 0);
    assert_eq!(ended(&s, "bob"), 0);
}

/// A healthy call is never dropped: the keepalive keeps both sides alive
/// for as long as it runs.
#[test]
fn a_healthy_call_stays_up() {
    let mut s = Sim::new(&["alice", "bob"]);
    one_to_one(&mut s);
    run_for(&mut s, 600, &[]);
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.connected("bob"), set(&["alice"]));
    assert!(!left(&s, "alice", "bob"));
}

/// Timers that fire long after they were due mean the local process did
/// not run: it asks everyone instead of dropping them.
#[test]
fn a_late_wake_up_rechecks_instead_of_dropping() {
    let mut s = Sim::new(&["alice", "bob"]);
    one_to_one(&mut s);
    // Neither machine ran for a minute (the host slept).
    s.advance(Duration::from_secs(60));
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.connected("bob"), set(&["alice"]));
    run_for(&mut s, 60, &[]);
    assert_eq!(s.connected("alice"), set(&["bob"]));
}

/// Case 9: a `leave` lost while the server was down. The party that
/// missed it ends within one keepalive interval (plus a round trip) on the
/// other side's `gone`.
#[test]
fn a_hangup_lost_while_the_server_is_down_is_repaired() {
    let mut s = Sim::new(&["alice", "bob"]);
    one_to_one(&mut s);
    let now = s.now;
    s.m("alice").hangup(now);
    s.flush();
    s.net.clear(); // the server was down: the leave is lost
    assert_eq!(s.state("bob"), CallState::InCall);
    let took = run_until(&mut s, interval(), &[], |s| {
        s.state("bob") == CallState::Idle
    });
    assert!(took <= interval());
    assert!(left(&s, "bob", "alice"));
    assert_eq!(ended(&s, "bob"), 1);
}

/// Case 9 with a group: the missed party is dropped by each member that
/// still counted it, and the call goes on for them.
#[test]
fn a_leave_lost_in_a_group_call_is_repaired_for_everyone() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.group_call("alice", &["bob", "carol"], MediaType::Audio, 30);
    s.accept("bob");
    s.accept("carol");
    let now = s.now;
    s.m("carol").hangup(now);
    s.flush();
    s.net.clear();
    run_until(&mut s, interval(), &[], |s| {
        s.connected("alice") == set(&["bob"]) && s.connected("bob") == set(&["alice"])
    });
    assert_eq!(ended(&s, "alice"), 0);
}

/// After its transport reconnects, a party finds a stale call within one
/// round trip: `recheck` asks at once.
#[test]
fn recheck_after_reconnect_finds_a_stale_call_in_one_round_trip() {
    let mut s = Sim::new(&["alice", "bob"]);
    one_to_one(&mut s);
    let now = s.now;
    s.m("alice").hangup(now);
    s.flush();
    s.net.clear();
    let now = s.now;
    s.m("bob").recheck(now);
    s.settle();
    assert_eq!(s.state("bob"), CallState::Idle);
    assert_eq!(ended(&s, "bob"), 1);
}

/// The recheck of a healthy call changes nothing, and drops nobody while
/// the answers are on their way.
#[test]
fn recheck_of_a_healthy_call_changes_nothing() {
    let mut s = Sim::new(&["alice", "bob"]);
    one_to_one(&mut s);
    s.take_events("alice");
    let now = s.now;
    s.m("alice").recheck(now);
    s.settle();
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert!(s.events("alice").is_empty());
}

/// Case 10: a recipient whose server queue was full has not left.
#[test]
fn congested_is_not_leaving() {
    let mut s = Sim::new(&["alice", "bob"]);
    let call = one_to_one(&mut s);
    s.take_events("alice");
    let now = s.now;
    s.m("alice").handle_congested(now, &uid("bob"), &call);
    s.settle();
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.state("alice"), CallState::InCall);
    assert!(s.events("alice").is_empty());
    // Offline is still leaving.
    let now = s.now;
    s.m("alice").handle_unreachable(now, &uid("bob"), &call);
    s.settle();
    assert_eq!(s.state("alice"), CallState::Idle);
}

/// Case 10 for an invitee: a full queue is not "offline"; it keeps ringing
/// until its no-answer timer.
#[test]
fn a_congested_invitee_keeps_ringing() {
    let mut s = Sim::new(&["alice", "bob"]);
    let call = s.call("alice", "bob", MediaType::Audio, 30);
    let now = s.now;
    s.m("alice").handle_congested(now, &uid("bob"), &call);
    s.settle();
    assert_eq!(
        s.m("alice").call().map(|c| c.ringing),
        Some(vec![uid("bob")])
    );
    assert_eq!(
        s.count("alice", |e| matches!(e, Event::NoResponse { .. })),
        0
    );
}

/// An outsider's `alive` about a member's call, or about any call id, draws
/// at most one `gone` per (sender, call) per interval, a bounded number per
/// sender over many call ids, and changes nothing.
#[test]
fn an_outsiders_alive_gets_at_most_one_gone_per_interval_and_changes_nothing() {
    let mut s = Sim::new(&["alice", "bob", "mallory"]);
    let call = one_to_one(&mut s);
    s.take_events("alice");
    let mallory = uid("mallory");
    let foreign = CallId::new("not-a-call").expect("valid id");
    let now = s.now;
    for _ in 0..100 {
        for id in [&call, &foreign] {
            s.m("alice")
                .handle_message(now, &mallory, alive(id, 1))
                .expect("accepted");
        }
    }
    s.flush();
    assert!(gones_to(&s, "mallory") <= 1, "{}", gones_to(&s, "mallory"));
    s.net.retain(|m| m.to != mallory);
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert!(s.events("alice").is_empty());

    // Another interval, another answer at most.
    run_for(&mut s, interval().as_secs(), &[]);
    let now = s.now;
    s.m("alice")
        .handle_message(now, &mallory, alive(&foreign, 1))
        .expect("accepted");
    s.flush();
    assert_eq!(gones_to(&s, "mallory"), 1);
    s.net.retain(|m| m.to != mallory);

    // Cycling call ids or parties does not buy more than a bounded number.
    let now = s.now;
    for i in 0..1000 {
        let id = CallId::new(format!("c{i}")).expect("valid id");
        s.m("alice")
            .handle_message(now, &mallory, alive(&id, 1))
            .expect("accepted");
        s.m("alice")
            .handle_message(now, &mallory, alive(&foreign, i + 2))
            .expect("accepted");
    }
    s.flush();
    assert!(gones_to(&s, "mallory") <= 16, "{}", gones_to(&s, "mallory"));
    assert_eq!(s.connected("alice"), set(&["bob"]));
}

/// A `gone` is never answered, so two parties never loop on it.
#[test]
fn gone_is_never_answered() {
    let mut s = Sim::new(&["alice", "mallory"]);
    let mallory = uid("mallory");
    let now = s.now;
    for dropped in [None, Some(PartyId(1))] {
        let gone = Message {
            version: PROTOCOL_VERSION,
            call_id: CallId::new("some-call").expect("valid id"),
            party: PartyId(1),
            body: Body::Gone {
                upto: PartyId(2),
                dropped,
            },
        };
        s.m("alice")
            .handle_message(now, &mallory, gone)
            .expect("accepted");
    }
    s.flush();
    assert!(s.net.is_empty());
}

/// Only a member can say "you were dropped": an outsider's `gone`
/// `dropped` naming a member's participation changes nothing.
#[test]
fn an_outsider_cannot_drop_a_member() {
    let mut s = Sim::new(&["alice", "bob", "mallory"]);
    let call = one_to_one(&mut s);
    let now = s.now;
    for party in 0..200 {
        let gone = Message {
            version: PROTOCOL_VERSION,
            call_id: call.clone(),
            party: PartyId(1),
            body: Body::Gone {
                upto: PartyId(2),
                dropped: Some(PartyId(party)),
            },
        };
        s.m("bob")
            .handle_message(now, &uid("mallory"), gone)
            .expect("accepted");
    }
    s.settle();
    assert_eq!(s.connected("bob"), set(&["alice"]));
    assert_eq!(s.connected("alice"), set(&["bob"]));
}

/// A member that vanished (no more messages, none delivered to it) is
/// dropped no sooner than it could be silent by accident and no later than
/// the bound.
#[test]
fn a_vanished_member_is_dropped_within_the_bound() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.group_call("alice", &["bob", "carol"], MediaType::Audio, 30);
    s.accept("bob");
    s.accept("carol");
    // Carol's machine stays stopped and never comes back.
    let took = run_until(&mut s, timeout() + interval(), &["carol"], |s| {
        left(s, "alice", "carol") && left(s, "bob", "carol")
    });
    assert!(took >= timeout() - interval(), "{took:?}");
    assert_eq!(s.connected("alice"), set(&["bob"]));
}

/// Two members that cannot hear each other while both hear the third drop
/// each other; exactly one of them (the higher user id) leaves, and the
/// rest agree on who is in the call.
#[test]
fn two_members_that_drop_each_other_settle_on_one_leaving() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.group_call("alice", &["bob", "carol"], MediaType::Audio, 30);
    s.accept("bob");
    s.accept("carol");
    let (alice, bob) = (uid("alice"), uid("bob"));
    let cut =
        |m: &sim::InFlight| (m.from == alice && m.to == bob) || (m.from == bob && m.to == alice);
    for _ in 0..(timeout() + interval()).as_secs() {
        s.now += Duration::from_secs(1);
        let now = s.now;
        for p in s.parties.values_mut() {
            p.machine.handle_timeout(now);
        }
        s.flush();
        s.net.retain(|m| !cut(m));
        s.settle();
        if left(&s, "alice", "bob") && left(&s, "bob", "alice") {
            break;
        }
    }
    // The link heals: what they sent each other on dropping now arrives.
    s.settle();
    run_for(&mut s, 30, &[]);
    assert_eq!(s.state("bob"), CallState::Idle);
    assert_eq!(s.connected("alice"), set(&["carol"]));
    assert_eq!(s.connected("carol"), set(&["alice"]));
    assert_eq!(ended(&s, "alice"), 0);
}
