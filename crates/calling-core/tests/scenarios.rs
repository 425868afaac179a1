//! Scenario tests: every event and rule, checked on every side.

mod sim;

use std::time::Duration;

use calling_core::{
    AnswerError, CallError, CallOptions, CallState, EndReason, Event, InviteId, JoinError,
    MediaInstruction, MediaType, NoAnswer, ResetReason, StaleReason, SwitchError,
};
use sim::{Sim, set, uid};

fn ended(sim: &Sim, user: &str) -> usize {
    sim.count(user, |e| matches!(e, Event::CallEnd { .. }))
}

#[test]
fn one_to_one_call_accepted_then_hung_up() {
    let mut s = Sim::new(&["alice", "bob"]);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    assert_eq!(s.state("bob"), CallState::Ringing);
    match &s.events("bob")[0] {
        Event::Invited {
            call_id,
            sponsor,
            inviter,
            other_invitees,
            members,
            is_from_group,
            media_type,
            timeout,
            ..
        } => {
            assert_eq!(*call_id, call);
            assert_eq!(*sponsor, uid("alice"));
            assert_eq!(*inviter, uid("alice"));
            assert!(other_invitees.is_empty());
            assert_eq!(*members, vec![uid("alice")]);
            assert!(!is_from_group);
            assert_eq!(*media_type, MediaType::Video);
            assert_eq!(*timeout, 30);
        }
        other => panic!("expected Invited, got {other:?}"),
    }
    s.accept("bob");
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.connected("bob"), set(&["alice"]));
    let enter = |u: &'static str| move |e: &Event| matches!(e, Event::UserEnter { user, .. } if *user == uid(u));
    assert_eq!(s.count("alice", enter("bob")), 1);
    assert_eq!(s.count("bob", enter("alice")), 1);
    // Both sides were told to connect media to each other.
    for (me, peer) in [("alice", "bob"), ("bob", "alice")] {
        assert!(
            s.media(me)
                .iter()
                .any(|m| matches!(m, MediaInstruction::JoinRoom { .. }))
        );
        assert!(s.media(me).iter().any(
            |m| matches!(m, MediaInstruction::ConnectPeer { user, .. } if *user == uid(peer))
        ));
    }
    s.advance(Duration::from_secs(42));
    s.hangup("bob");
    for u in ["alice", "bob"] {
        assert_eq!(s.state(u), CallState::Idle);
        assert_eq!(ended(&s, u), 1);
        assert_eq!(s.end_reason(u), Some(EndReason::Hangup));
        assert!(
            s.media(u)
                .iter()
                .any(|m| matches!(m, MediaInstruction::LeaveRoom { .. }))
        );
        assert_eq!(s.m(u).poll_timeout(), None, "no timer left for {u}");
    }
    assert!(s.events("alice").iter().any(|e| matches!(
        e,
        Event::CallEnd { duration, .. } if *duration == Duration::from_secs(42)
    )));
    assert_eq!(
        s.count(
            "alice",
            |e| matches!(e, Event::UserLeave { user, .. } if *user == uid("bob"))
        ),
        1
    );
}

#[test]
fn reject_reaches_the_caller() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Audio, 30);
    s.reject("bob");
    assert_eq!(
        s.count(
            "alice",
            |e| matches!(e, Event::Rejected { user, .. } if *user == uid("bob"))
        ),
        1
    );
    assert_eq!(s.end_reason("alice"), Some(EndReason::Rejected));
    assert_eq!(s.end_reason("bob"), Some(EndReason::Rejected));
    assert_eq!(s.state("alice"), CallState::Idle);
    assert_eq!(s.state("bob"), CallState::Idle);
}

#[test]
fn busy_callee_answers_line_busy_and_keeps_its_call() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.call("bob", "carol", MediaType::Audio, 30);
    s.accept("carol");
    let before = s.events("bob").len();
    s.call("alice", "bob", MediaType::Video, 30);
    assert_eq!(
        s.count(
            "alice",
            |e| matches!(e, Event::LineBusy { user, .. } if *user == uid("bob"))
        ),
        1
    );
    assert_eq!(s.end_reason("alice"), Some(EndReason::LineBusy));
    assert_eq!(s.state("alice"), CallState::Idle);
    // Bob's own call is untouched and he saw nothing.
    assert_eq!(s.state("bob"), CallState::InCall);
    assert_eq!(s.connected("bob"), set(&["carol"]));
    assert_eq!(s.events("bob").len(), before);
    // Alice can call again right away: state was reset after the busy answer.
    s.call("alice", "bob", MediaType::Video, 30);
    assert_eq!(s.count("alice", |e| matches!(e, Event::LineBusy { .. })), 2);
}

#[test]
fn ringing_callee_is_busy_too() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.call("alice", "bob", MediaType::Audio, 30);
    s.call("carol", "bob", MediaType::Audio, 30);
    assert_eq!(s.end_reason("carol"), Some(EndReason::LineBusy));
    assert_eq!(s.state("bob"), CallState::Ringing);
    s.accept("bob");
    assert_eq!(s.connected("bob"), set(&["alice"]));
}

#[test]
fn cancel_before_answer() {
    let mut s = Sim::new(&["alice", "bob"]);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    let invite = s.invite_of("bob");
    s.hangup("alice");
    assert!(s.events("bob").iter().any(|e| matches!(
        e,
        Event::CallingCancel { call_id, user, .. } if *call_id == call && *user == uid("alice")
    )));
    assert_eq!(s.end_reason("bob"), Some(EndReason::Cancelled));
    assert_eq!(s.end_reason("alice"), Some(EndReason::Cancelled));
    let now = s.now;
    assert_eq!(
        s.m("bob").accept(now, &invite),
        Err(AnswerError::StaleInvite {
            invite_id: invite.clone(),
            reason: StaleReason::Cancelled
        })
    );
}

#[test]
fn callee_timeout_is_seen_on_both_sides() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Audio, 10);
    s.advance(Duration::from_secs(9));
    assert_eq!(s.state("bob"), CallState::Ringing);
    s.advance(Duration::from_secs(1));
    assert_eq!(
        s.count("bob", |e| matches!(e, Event::CallingTimeout { .. })),
        1
    );
    assert_eq!(s.end_reason("bob"), Some(EndReason::TimedOut));
    assert!(s.events("alice").iter().any(|e| matches!(
        e,
        Event::NoResponse { users, reason: NoAnswer::Timeout, .. } if *users == vec![uid("bob")]
    )));
    assert_eq!(s.end_reason("alice"), Some(EndReason::NoResponse));
    assert_eq!(s.m("alice").poll_timeout(), None);
}

#[test]
fn caller_timer_covers_a_lost_timeout_after_the_grace_period() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Audio, 10);
    // Bob's timer fires but his timeout message is lost.
    s.now += Duration::from_secs(10);
    let now = s.now;
    s.m("bob").handle_timeout(now);
    s.flush();
    s.net.clear();
    assert_eq!(s.state("bob"), CallState::Idle);
    assert_eq!(s.state("alice"), CallState::InCall);
    s.advance(Duration::from_secs(4));
    assert_eq!(
        s.state("alice"),
        CallState::InCall,
        "the grace period is 5 s"
    );
    s.advance(Duration::from_secs(1));
    assert_eq!(s.end_reason("alice"), Some(EndReason::NoResponse));
    assert_eq!(
        ended(&s, "bob"),
        1,
        "bob's late timeout message changes nothing"
    );
}

#[test]
fn timeout_zero_arms_no_timer() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Audio, 0);
    assert_eq!(s.m("alice").poll_timeout(), None);
    assert_eq!(s.m("bob").poll_timeout(), None);
    s.advance(Duration::from_secs(3600));
    assert_eq!(s.state("bob"), CallState::Ringing);
    s.accept("bob");
    assert_eq!(s.state("alice"), CallState::InCall);
}

#[test]
fn offline_callee_is_reported_at_once() {
    let mut s = Sim::new(&["alice"]);
    s.call("alice", "bob", MediaType::Video, 30);
    assert!(s.events("alice").iter().any(|e| matches!(
        e,
        Event::NoResponse { users, reason: NoAnswer::Offline, .. } if *users == vec![uid("bob")]
    )));
    assert_eq!(s.end_reason("alice"), Some(EndReason::Offline));
    assert_eq!(s.state("alice"), CallState::Idle);
}

#[test]
fn group_call_survives_callers_and_callees_leaving() {
    let mut s = Sim::new(&["alice", "bob", "carol", "dave"]);
    let call = s.group_call("alice", &["bob", "carol", "dave"], MediaType::Video, 30);
    for u in ["bob", "carol", "dave"] {
        assert!(s.events(u).iter().any(|e| matches!(
            e,
            Event::Invited { is_from_group: true, other_invitees, call_id, .. }
                if other_invitees.len() == 2 && *call_id == call
        )));
    }
    s.accept("bob");
    // The sponsor leaves: bob stays, carol and dave still ring.
    s.hangup("alice");
    assert_eq!(s.state("bob"), CallState::InCall);
    assert_eq!(s.state("carol"), CallState::Ringing);
    assert!(
        s.events("bob")
            .iter()
            .any(|e| matches!(e, Event::UserLeave { user, .. } if *user == uid("alice")))
    );
    s.accept("carol");
    assert_eq!(s.connected("bob"), set(&["carol"]));
    assert_eq!(s.connected("carol"), set(&["bob"]));
    s.reject("dave");
    for u in ["bob", "carol"] {
        assert_eq!(
            s.count(
                u,
                |e| matches!(e, Event::Rejected { user, .. } if *user == uid("dave"))
            ),
            1
        );
        assert!(s.events(u).iter().any(|e| matches!(
            e,
            Event::InviteeListUpdated { invitees, .. } if invitees.is_empty()
        )));
    }
    s.hangup("carol");
    assert_eq!(s.end_reason("bob"), Some(EndReason::Hangup));
    for u in ["alice", "bob", "carol", "dave"] {
        assert_eq!(ended(&s, u), 1, "{u} ends exactly once");
        assert_eq!(s.state(u), CallState::Idle);
    }
}

#[test]
fn group_call_reports_each_answer_to_everyone() {
    let mut s = Sim::new(&["alice", "bob", "carol", "dave"]);
    s.group_call("alice", &["bob", "carol", "dave"], MediaType::Audio, 20);
    s.accept("bob");
    s.reject("carol");
    // Dave never answers: his own timer fires and everyone learns it.
    s.advance(Duration::from_secs(20));
    for u in ["alice", "bob"] {
        assert_eq!(
            s.count(
                u,
                |e| matches!(e, Event::Rejected { user, .. } if *user == uid("carol"))
            ),
            1,
            "{u}"
        );
        assert!(
            s.events(u).iter().any(|e| matches!(
                e,
                Event::NoResponse { users, .. } if *users == vec![uid("dave")]
            )),
            "{u}"
        );
    }
    assert_eq!(s.end_reason("dave"), Some(EndReason::TimedOut));
    assert_eq!(s.connected("alice"), set(&["bob"]));
    s.hangup("bob");
    assert_eq!(s.end_reason("alice"), Some(EndReason::Hangup));
}

#[test]
fn group_call_with_every_callee_declining_ends_with_the_last_reason() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.group_call("alice", &["bob", "carol"], MediaType::Audio, 20);
    s.reject("bob");
    assert_eq!(s.state("alice"), CallState::InCall, "carol still rings");
    s.reject("carol");
    assert_eq!(s.end_reason("alice"), Some(EndReason::Rejected));
}

#[test]
fn no_response_lists_every_silent_invitee_once() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.group_call("alice", &["bob", "carol"], MediaType::Audio, 10);
    // Both invitees' own timeout messages are lost; alice's timer covers both.
    s.now += Duration::from_secs(10);
    let now = s.now;
    for u in ["bob", "carol"] {
        s.m(u).handle_timeout(now);
    }
    s.flush();
    s.net.clear();
    s.advance(Duration::from_secs(5));
    let lists: Vec<_> = s
        .events("alice")
        .iter()
        .filter_map(|e| match e {
            Event::NoResponse { users, .. } => Some(users.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(lists, vec![vec![uid("bob"), uid("carol")]]);
    assert_eq!(s.end_reason("alice"), Some(EndReason::NoResponse));
}

#[test]
fn group_call_with_an_offline_invitee_keeps_ringing_the_rest() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.group_call("alice", &["bob", "ghost"], MediaType::Video, 30);
    assert!(s.events("alice").iter().any(|e| matches!(
        e,
        Event::NoResponse { users, reason: NoAnswer::Offline, .. } if *users == vec![uid("ghost")]
    )));
    assert_eq!(s.state("bob"), CallState::Ringing);
    s.accept("bob");
    assert_eq!(s.connected("alice"), set(&["bob"]));
}

#[test]
fn glare_resolves_to_one_connected_call() {
    let mut s = Sim::new(&["alice", "bob"]);
    let now = s.now;
    let a = s
        .m("alice")
        .call_user(now, uid("bob"), MediaType::Video, CallOptions::default())
        .unwrap();
    let b = s
        .m("bob")
        .call_user(now, uid("alice"), MediaType::Video, CallOptions::default())
        .unwrap();
    s.settle();
    let winner = a.clone().min(b.clone());
    for u in ["alice", "bob"] {
        let c = s.m(u).call().expect("in a call");
        assert_eq!(c.call_id, winner, "{u} is in the lower call");
        assert_eq!(c.state, CallState::InCall);
        assert_eq!(
            s.count(u, |e| matches!(
                e,
                Event::LineBusy { .. } | Event::CallEnd { .. }
            )),
            0
        );
    }
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.connected("bob"), set(&["alice"]));
    let loser = if winner == a { "bob" } else { "alice" };
    assert!(
        s.events(loser)
            .iter()
            .any(|e| matches!(e, Event::GlareResolved { .. }))
    );
    s.hangup("alice");
    assert_eq!(ended(&s, "alice"), 1);
    assert_eq!(ended(&s, "bob"), 1);
}

#[test]
fn answers_are_idempotent_and_stale_ones_are_typed_errors() {
    let mut s = Sim::new(&["alice", "bob"]);
    let now = s.now;
    s.m("alice").hangup(now); // no call: nothing happens
    assert!(s.events("alice").is_empty());
    let unknown = InviteId::new("nope").unwrap();
    assert_eq!(
        s.m("bob").accept(now, &unknown),
        Err(AnswerError::UnknownInvite(unknown.clone()))
    );
    assert_eq!(
        s.m("bob").reject(now, &unknown),
        Err(AnswerError::UnknownInvite(unknown.clone()))
    );

    s.call("alice", "bob", MediaType::Audio, 30);
    let invite = s.invite_of("bob");
    s.reject("bob");
    assert_eq!(
        s.m("bob").reject(now, &invite),
        Ok(()),
        "second reject is a no-op"
    );
    assert_eq!(
        s.m("bob").accept(now, &invite),
        Err(AnswerError::StaleInvite {
            invite_id: invite.clone(),
            reason: StaleReason::Rejected
        })
    );
    s.settle();
    assert_eq!(ended(&s, "bob"), 1);
    assert_eq!(ended(&s, "alice"), 1);

    s.call("alice", "bob", MediaType::Audio, 30);
    s.accept("bob");
    let invite = s.invite_of("bob");
    assert_eq!(
        s.m("bob").accept(now, &invite),
        Ok(()),
        "second accept is a no-op"
    );
    s.hangup("bob");
    s.hangup("bob");
    s.hangup("alice");
    assert_eq!(ended(&s, "bob"), 2);
    assert_eq!(ended(&s, "alice"), 2);
    assert_eq!(
        s.m("bob").accept(now, &invite),
        Err(AnswerError::StaleInvite {
            invite_id: invite,
            reason: StaleReason::Accepted
        })
    );
}

#[test]
fn ignore_stops_ringing_silently() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Audio, 10);
    let invite = s.invite_of("bob");
    let now = s.now;
    s.m("bob").ignore(now, &invite).unwrap();
    s.flush();
    assert!(s.net.is_empty(), "ignore sends nothing");
    assert_eq!(s.end_reason("bob"), Some(EndReason::Ignored));
    assert_eq!(s.m("bob").ignore(now, &invite), Ok(()));
    s.run_timers();
    assert_eq!(s.end_reason("alice"), Some(EndReason::NoResponse));
    assert_eq!(ended(&s, "bob"), 1);
}

#[test]
fn duplicated_messages_change_nothing() {
    let run = |dup: bool| {
        let mut s = Sim::new(&["alice", "bob", "carol"]);
        let now = s.now;
        s.m("alice")
            .group_call(
                now,
                vec![uid("bob"), uid("carol")],
                MediaType::Video,
                CallOptions::default(),
            )
            .unwrap();
        let mut steps = 0;
        let mut seen = std::collections::HashSet::new();
        loop {
            s.flush();
            if s.net.is_empty() {
                if s.state("bob") == CallState::Ringing {
                    let i = s.invite_of("bob");
                    s.m("bob").accept(now, &i).unwrap();
                    continue;
                }
                if s.state("carol") == CallState::Ringing {
                    let i = s.invite_of("carol");
                    s.m("carol").accept(now, &i).unwrap();
                    continue;
                }
                break;
            }
            let m = &s.net[0];
            if dup && seen.insert((m.from.clone(), m.to.clone(), m.message.to_json())) {
                let copy = m.clone();
                s.net.push(copy);
            }
            s.deliver(0);
            steps += 1;
            assert!(steps < 10_000);
        }
        s.hangup("bob");
        s.hangup("carol");
        ["alice", "bob", "carol"].map(|u| s.events(u).to_vec())
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn a_cancel_that_overtakes_its_invite_prevents_ringing() {
    let mut s = Sim::new(&["alice", "bob"]);
    let now = s.now;
    s.m("alice")
        .call_user(now, uid("bob"), MediaType::Audio, CallOptions::default())
        .unwrap();
    s.flush();
    s.m("alice").hangup(now);
    s.flush();
    // Deliver the cancel first, then the invite.
    assert_eq!(s.net.len(), 2);
    s.deliver(1);
    s.deliver(0);
    assert_eq!(s.state("bob"), CallState::Idle);
    assert!(
        s.events("bob").is_empty(),
        "bob never rang: {:?}",
        s.events("bob")
    );
}

#[test]
fn late_duplicate_invite_does_not_ring_again() {
    for answer in ["reject", "cancel", "accept"] {
        let mut s = Sim::new(&["alice", "bob"]);
        let now = s.now;
        s.m("alice")
            .call_user(now, uid("bob"), MediaType::Audio, CallOptions::default())
            .unwrap();
        s.flush();
        let invite = s.net.clone();
        s.settle();
        match answer {
            "reject" => s.reject("bob"),
            "cancel" => s.hangup("alice"),
            _ => {
                s.accept("bob");
                s.hangup("alice");
            }
        }
        assert_eq!(s.state("bob"), CallState::Idle);
        s.net.extend(invite);
        s.settle();
        assert_eq!(
            s.count("bob", |e| matches!(e, Event::Invited { .. })),
            1,
            "{answer}"
        );
        assert_eq!(s.state("bob"), CallState::Idle, "{answer}");
        assert_eq!(ended(&s, "bob"), 1);
    }
}

#[test]
fn invite_more_users_into_a_running_call() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    let now = s.now;
    s.m("alice").invite(now, vec![uid("carol")], 30).unwrap();
    s.settle();
    assert!(s.events("bob").iter().any(|e| matches!(
        e,
        Event::InviteeListUpdated { invitees, .. } if *invitees == vec![uid("carol")]
    )));
    assert!(s.events("carol").iter().any(|e| matches!(
        e,
        Event::Invited { members, call_id, .. } if *members == vec![uid("alice"), uid("bob")] && *call_id == call
    )));
    s.accept("carol");
    assert_eq!(s.connected("alice"), set(&["bob", "carol"]));
    assert_eq!(s.connected("bob"), set(&["alice", "carol"]));
    assert_eq!(s.connected("carol"), set(&["alice", "bob"]));
    assert!(
        s.media("carol").iter().any(
            |m| matches!(m, MediaInstruction::ConnectPeer { user, .. } if *user == uid("bob"))
        )
    );
    assert!(
        s.media("bob").iter().any(
            |m| matches!(m, MediaInstruction::ConnectPeer { user, .. } if *user == uid("carol"))
        )
    );
    // Errors: inviting someone already in the call, or with no call.
    assert_eq!(
        s.m("alice").invite(now, vec![uid("bob")], 30),
        Err(CallError::DuplicateInvitee(uid("bob")))
    );
    s.hangup("alice");
    s.hangup("bob");
    assert_eq!(s.end_reason("carol"), Some(EndReason::Hangup));
    assert_eq!(
        s.m("alice").invite(now, vec![uid("bob")], 30),
        Err(CallError::NotInCall)
    );
}

#[test]
fn join_a_running_call_by_id() {
    let mut s = Sim::new(&["alice", "bob", "carol", "dave"]);
    let call = s.group_call("alice", &["bob", "carol"], MediaType::Video, 30);
    s.accept("bob");
    let now = s.now;
    // Dave only knows alice is in it; he learns of bob (and ringing carol) from her.
    let ticket = s.ticket("alice");
    s.m("dave").join(now, call.clone(), ticket).unwrap();
    s.settle();
    assert_eq!(s.state("dave"), CallState::InCall);
    assert_eq!(s.connected("dave"), set(&["alice", "bob"]));
    assert_eq!(s.connected("bob"), set(&["alice", "dave"]));
    assert_eq!(s.m("dave").call().unwrap().ringing, vec![uid("carol")]);
    assert_eq!(s.m("dave").call().unwrap().media_type, MediaType::Video);
    s.accept("carol");
    assert_eq!(s.connected("carol"), set(&["alice", "bob", "dave"]));
    assert_eq!(s.connected("dave"), set(&["alice", "bob", "carol"]));
}

#[test]
fn joining_a_1v1_call_by_id_makes_it_a_group_call_everywhere() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    assert!(!s.m("alice").call().unwrap().is_group);
    let now = s.now;
    let ticket = s.ticket("alice");
    s.m("carol").join(now, call, ticket).unwrap();
    s.settle();
    assert_eq!(s.connected("carol"), set(&["alice", "bob"]));
    for user in ["alice", "bob", "carol"] {
        assert!(
            s.m(user).call().unwrap().is_group,
            "{user}: three parties joined by id are a group call"
        );
    }
}

#[test]
fn a_rejoin_is_not_answered_by_the_roster_of_the_abandoned_join() {
    // Found by the property sweep: u1 joins via u2, gives up before any
    // answer, and joins again via u0. u2's roster answering the first,
    // abandoned join arrives during the second and must not count as u2
    // knowing u1's new participation.
    let mut s = Sim::new(&["u0", "u1", "u2"]);
    let call = s.call("u0", "u2", MediaType::Audio, 0);
    s.accept("u2");
    let now = s.now;
    let (via_u2, via_u0) = (s.ticket("u2"), s.ticket("u0"));
    s.m("u1").join(now, call.clone(), via_u2).unwrap();
    s.m("u1").hangup(now);
    s.m("u1").join(now, call, via_u0).unwrap();
    s.settle();
    assert_eq!(s.state("u1"), CallState::InCall);
    assert_eq!(s.connected("u1"), set(&["u0", "u2"]));
    assert_eq!(s.connected("u0"), set(&["u1", "u2"]));
    assert_eq!(s.connected("u2"), set(&["u0", "u1"]));
}

#[test]
fn a_joiner_whose_only_answer_comes_from_a_member_that_left_still_joins_the_rest() {
    // Found by the property sweep: the member that answered a join leaves,
    // and its leave overtakes its roster. The roster still says what the
    // call is and who else is in it; the joiner must not wait forever while
    // the others count it as connected.
    let mut s = Sim::new(&["u0", "u1", "u3"]);
    let call = s.group_call("u0", &["u3"], MediaType::Audio, 0);
    let now = s.now;
    let find = |s: &Sim, from: &str, to: &str, kind: &str| {
        s.net
            .iter()
            .position(|m| {
                m.from.as_str() == from
                    && m.to.as_str() == to
                    && format!("{:?}", m.message.body).starts_with(kind)
            })
            .unwrap_or_else(|| panic!("no {kind} from {from} to {to} in flight"))
    };
    // u1 joins via u0, who answers it.
    let ticket = s.ticket("u0");
    s.m("u1").join(now, call, ticket).unwrap();
    s.flush();
    let i = find(&s, "u1", "u0", "Enter");
    s.deliver(i);
    // u3 accepts and learns from u0's roster that u1 is in the call.
    let invite = s.invite_of("u3");
    s.m("u3").accept(now, &invite).unwrap();
    s.flush();
    let i = find(&s, "u3", "u0", "Enter");
    s.deliver(i);
    let i = find(&s, "u0", "u3", "Roster");
    s.deliver(i);
    assert!(s.connected("u3").contains(&uid("u1")));
    // u0 hangs up; its leave reaches u1 before its roster does.
    s.m("u0").hangup(now);
    s.flush();
    let i = find(&s, "u0", "u1", "Leave");
    s.deliver(i);
    s.settle();
    assert_eq!(s.state("u1"), CallState::InCall);
    assert_eq!(s.connected("u1"), set(&["u3"]));
    assert_eq!(s.connected("u3"), set(&["u1"]));
}

#[test]
fn join_of_a_finished_or_silent_call_ends_not_found() {
    let mut s = Sim::new(&["alice", "bob", "dave"]);
    let call = s.call("alice", "bob", MediaType::Audio, 30);
    let ticket = s.ticket("alice");
    s.hangup("alice");
    let now = s.now;
    s.m("dave").join(now, call.clone(), ticket.clone()).unwrap();
    s.settle();
    assert_eq!(s.end_reason("dave"), Some(EndReason::NotFound));
    let own = calling_core::JoinTicket {
        host: uid("dave"),
        ..ticket.clone()
    };
    assert_eq!(
        s.m("dave").join(now, call.clone(), own),
        Err(JoinError::OwnTicket)
    );
    // Nobody answers at all (messages lost): the join times out.
    s.m("dave").join(now, call, ticket).unwrap();
    s.flush();
    s.net.clear();
    s.run_timers();
    assert_eq!(
        s.count("dave", |e| matches!(
            e,
            Event::CallEnd {
                reason: EndReason::NotFound,
                ..
            }
        )),
        2
    );
}

#[test]
fn switch_video_to_audio_is_immediate() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    let now = s.now;
    s.m("alice")
        .switch_media_type(now, MediaType::Audio)
        .unwrap();
    s.settle();
    for u in ["alice", "bob"] {
        assert!(s.events(u).iter().any(|e| matches!(
            e,
            Event::MediaTypeChanged { user, from: MediaType::Video, to: MediaType::Audio, .. } if *user == uid("alice")
        )), "{u}");
        assert!(s.media(u).iter().any(|m| matches!(
            m,
            MediaInstruction::SetMediaType {
                media_type: MediaType::Audio,
                ..
            }
        )));
        assert_eq!(s.m(u).call().unwrap().media_type, MediaType::Audio);
    }
    assert_eq!(
        s.m("bob").switch_media_type(now, MediaType::Audio),
        Err(SwitchError::AlreadyThatType(MediaType::Audio))
    );
}

#[test]
fn switch_audio_to_video_is_asked_and_answered() {
    for accept in [true, false] {
        let mut s = Sim::new(&["alice", "bob"]);
        s.call("alice", "bob", MediaType::Audio, 30);
        s.accept("bob");
        let now = s.now;
        s.m("alice")
            .switch_media_type(now, MediaType::Video)
            .unwrap();
        s.settle();
        assert_eq!(
            s.m("alice").switch_media_type(now, MediaType::Video),
            Err(SwitchError::RequestPending)
        );
        let request = s
            .events("bob")
            .iter()
            .find_map(|e| match e {
                Event::MediaTypeSwitchRequested {
                    request_id,
                    to: MediaType::Video,
                    ..
                } => Some(*request_id),
                _ => None,
            })
            .expect("bob was asked");
        s.m("bob")
            .answer_media_switch(now, request, accept)
            .unwrap();
        s.settle();
        assert_eq!(
            s.m("bob").answer_media_switch(now, request, accept),
            Err(SwitchError::UnknownRequest(request))
        );
        let expected = if accept {
            MediaType::Video
        } else {
            MediaType::Audio
        };
        for u in ["alice", "bob"] {
            assert_eq!(
                s.m(u).call().unwrap().media_type,
                expected,
                "{u}, accept={accept}"
            );
        }
        if accept {
            assert!(s.events("bob").iter().any(|e| matches!(
                e,
                Event::MediaTypeChanged {
                    to: MediaType::Video,
                    ..
                }
            )));
        } else {
            assert!(s.events("alice").iter().any(|e| matches!(
                e,
                Event::MediaTypeSwitchRefused { users, .. } if *users == vec![uid("bob")]
            )));
        }
    }
}

#[test]
fn unanswered_switch_request_is_refused_after_its_timeout() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Audio, 30);
    s.accept("bob");
    let now = s.now;
    s.m("alice")
        .switch_media_type(now, MediaType::Video)
        .unwrap();
    s.settle();
    s.advance(Duration::from_secs(30));
    assert!(
        s.events("alice")
            .iter()
            .any(|e| matches!(e, Event::MediaTypeSwitchRefused { .. }))
    );
    assert_eq!(s.m("alice").call().unwrap().media_type, MediaType::Audio);
    // Only the keepalive is left armed: no later switch timer.
    let keepalive = s.now + calling_core::Config::default().keepalive_interval;
    assert!(s.m("alice").poll_timeout().is_some_and(|t| t <= keepalive));
}

#[test]
fn mute_and_camera_reach_the_peer() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    let now = s.now;
    s.m("alice").set_audio_available(now, false);
    s.m("alice").set_video_available(now, false);
    s.settle();
    assert!(s.events("bob").iter().any(|e| matches!(e, Event::UserAudioAvailable { user, available: false, .. } if *user == uid("alice"))));
    assert!(s.events("bob").iter().any(|e| matches!(e, Event::UserVideoAvailable { user, available: false, .. } if *user == uid("alice"))));
    s.m("alice").set_audio_available(now, true);
    s.settle();
    assert_eq!(
        s.events("bob").last(),
        Some(&Event::UserAudioAvailable {
            call_id: s.parties[&uid("bob")].machine.call().unwrap().call_id,
            user: uid("alice"),
            available: true,
        })
    );
}

#[test]
fn initial_media_state_is_announced_on_enter() {
    let mut s = Sim::new(&["alice", "bob"]);
    let now = s.now;
    s.m("bob").set_audio_available(now, false);
    s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    assert!(s.events("alice").iter().any(|e| matches!(e, Event::UserAudioAvailable { user, available: false, .. } if *user == uid("bob"))));
}

#[test]
fn kicked_out_during_a_call() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    let now = s.now;
    s.m("bob").reset(now, ResetReason::KickedOut);
    s.settle();
    let bob = s.events("bob");
    let n = bob.len();
    assert!(matches!(
        bob[n - 1],
        Event::CallEnd {
            reason: EndReason::KickedOut,
            ..
        }
    ));
    assert!(
        s.events("alice")
            .iter()
            .any(|e| matches!(e, Event::UserLeave { user, .. } if *user == uid("bob")))
    );
    assert_eq!(s.end_reason("alice"), Some(EndReason::Hangup));
    // After logging in again both can call.
    s.call("bob", "alice", MediaType::Audio, 30);
    s.accept("alice");
    assert_eq!(s.connected("bob"), set(&["alice"]));
}

#[test]
fn a_dead_connection_in_the_room_counts_as_leaving() {
    let mut s = Sim::new(&["alice", "bob"]);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    let now = s.now;
    s.m("alice").handle_unreachable(now, &uid("bob"), &call);
    s.flush();
    assert!(
        s.events("alice")
            .iter()
            .any(|e| matches!(e, Event::UserLeave { user, .. } if *user == uid("bob")))
    );
    assert_eq!(s.end_reason("alice"), Some(EndReason::Hangup));
}

#[test]
fn a_new_call_right_after_a_call_ends() {
    let mut s = Sim::new(&["alice", "bob"]);
    for _ in 0..3 {
        s.call("alice", "bob", MediaType::Video, 30);
        s.accept("bob");
        s.hangup("alice");
        assert_eq!(s.state("alice"), CallState::Idle);
        assert_eq!(s.state("bob"), CallState::Idle);
    }
    assert_eq!(ended(&s, "alice"), 3);
    assert_eq!(ended(&s, "bob"), 3);
}

#[test]
fn call_commands_validate_their_input() {
    let mut s = Sim::new(&["alice", "bob"]);
    let now = s.now;
    let opts = CallOptions::default;
    assert_eq!(
        s.m("alice")
            .call_user(now, uid("alice"), MediaType::Audio, opts()),
        Err(CallError::SelfInvite)
    );
    assert_eq!(
        s.m("alice")
            .group_call(now, vec![], MediaType::Audio, opts()),
        Err(CallError::NoInvitees)
    );
    assert_eq!(
        s.m("alice")
            .group_call(now, vec![uid("bob"), uid("bob")], MediaType::Audio, opts()),
        Err(CallError::DuplicateInvitee(uid("bob")))
    );
    let many: Vec<_> = (0..9).map(|i| uid(&format!("u{i}"))).collect();
    assert_eq!(
        s.m("alice").group_call(now, many, MediaType::Audio, opts()),
        Err(CallError::TooManyParticipants {
            requested: 10,
            max: 9
        })
    );
    let big = CallOptions {
        user_data: Some("x".repeat(5000)),
        ..opts()
    };
    assert!(matches!(
        s.m("alice")
            .call_user(now, uid("bob"), MediaType::Audio, big),
        Err(CallError::UserDataTooLarge { .. })
    ));
    s.m("alice")
        .call_user(now, uid("bob"), MediaType::Audio, opts())
        .unwrap();
    assert_eq!(
        s.m("alice")
            .call_user(now, uid("bob"), MediaType::Audio, opts()),
        Err(CallError::Busy)
    );
    let call = s.m("alice").call().unwrap().call_id;
    let ticket = s.ticket("alice");
    assert_eq!(s.m("alice").join(now, call, ticket), Err(JoinError::Busy));
}

#[test]
fn room_ids_are_in_range_and_ids_differ_per_call() {
    let mut s = Sim::new(&["alice", "bob"]);
    let mut calls = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let id = s.call("alice", "bob", MediaType::Audio, 30);
        let room = s.m("alice").call().unwrap().room_id.get();
        assert!((1..=i32::MAX as u32).contains(&room));
        assert!(calls.insert(id), "call ids are unique");
        s.hangup("alice");
    }
}

#[test]
fn invitee_list_updates_are_for_group_calls_only() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    for u in ["alice", "bob"] {
        assert_eq!(
            s.count(u, |e| matches!(e, Event::InviteeListUpdated { .. })),
            0,
            "{u}"
        );
    }
}

#[test]
fn video_availability_follows_the_camera_and_the_call_type() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.call("alice", "bob", MediaType::Audio, 30);
    s.accept("bob");
    let video = |s: &Sim, u: &str| {
        s.events(u)
            .iter()
            .filter_map(|e| match e {
                Event::UserVideoAvailable { available, .. } => Some(*available),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        video(&s, "alice"),
        vec![false],
        "an audio call shows no video"
    );
    let now = s.now;
    s.m("bob").set_video_available(now, false);
    s.settle();
    assert_eq!(
        video(&s, "alice"),
        vec![false],
        "camera changes in an audio call say nothing"
    );
    s.m("bob").set_video_available(now, true);
    s.m("alice")
        .switch_media_type(now, MediaType::Video)
        .unwrap();
    s.settle();
    let request = s
        .events("bob")
        .iter()
        .find_map(|e| match e {
            Event::MediaTypeSwitchRequested { request_id, .. } => Some(*request_id),
            _ => None,
        })
        .unwrap();
    s.m("bob").answer_media_switch(now, request, true).unwrap();
    s.settle();
    assert_eq!(
        video(&s, "alice"),
        vec![false, true],
        "bob's camera shows once the call is video"
    );
    s.m("bob").switch_media_type(now, MediaType::Audio).unwrap();
    s.settle();
    assert_eq!(video(&s, "alice"), vec![false, true, false]);
}
