//! Group calls and the rest of TRTCCalling / TUICallKit parity, end to end
//! through the real stack: `calling-server` on 127.0.0.1:0, the WebSocket
//! transport, the call rules and a WebRTC mesh on loopback.
//!
//! A debug-build mesh on a small machine is heavy: these tests use audio
//! where video adds nothing, and ask for a few frames per pair.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use calling::{
    CallEvent, Calling, EndReason, Event, Events, MediaKind, MediaType, NoAnswer, UserId,
};
use support::*;
use tokio::time::timeout;

const RING: Duration = Duration::from_secs(30);

/// A client's event stream with a memory: events that did not match one
/// wait are kept for the next, so the order in which a test asks does not
/// have to be the order in which they arrived.
struct Watch {
    name: String,
    events: Events,
    seen: Vec<Event>,
    /// Users heard with a voice volume above zero.
    heard: BTreeSet<String>,
}

impl Watch {
    fn new(name: &str, events: Events) -> Self {
        Self {
            name: name.into(),
            events,
            seen: Vec::new(),
            heard: BTreeSet::new(),
        }
    }

    /// Takes the first event matching `pred`, seen already or still to come.
    async fn wait<F: Fn(&Event) -> bool>(&mut self, what: &str, pred: F) -> Event {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i);
        }
        let found = timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(Event::UserVoiceVolume { user, volume }) => {
                        if volume > 0 {
                            self.heard.insert(user.to_string());
                        }
                    }
                    Some(e) if pred(&e) => return Some(e),
                    Some(e) => self.seen.push(e),
                    None => return None,
                }
            }
        })
        .await;
        match found {
            Ok(Some(e)) => e,
            Ok(None) => panic!("{}: event stream ended waiting for {what}", self.name),
            Err(_) => panic!(
                "{}: timed out waiting for {what}; seen: {:?}",
                self.name, self.seen
            ),
        }
    }

    /// Waits until `user` was heard with a voice volume above zero.
    async fn heard(&mut self, user: &str) {
        let ok = timeout(WAIT, async {
            while !self.heard.contains(user) {
                match self.events.recv().await {
                    Some(Event::UserVoiceVolume { user, volume }) => {
                        if volume > 0 {
                            self.heard.insert(user.to_string());
                        }
                    }
                    Some(e) => self.seen.push(e),
                    None => return false,
                }
            }
            true
        })
        .await;
        assert_eq!(ok, Ok(true), "{}: never heard {user}", self.name);
    }

    /// Reads what is waiting, without blocking, and says whether any event
    /// matches `pred`.
    fn has<F: Fn(&Event) -> bool>(&mut self, pred: F) -> bool {
        while let Some(e) = self.events.try_recv() {
            if !matches!(e, Event::UserVoiceVolume { .. }) {
                self.seen.push(e);
            }
        }
        self.seen.iter().any(pred)
    }

    async fn user_enter(&mut self, who: &str) {
        self.wait(
            &format!("UserEnter {who}"),
            |e| matches!(e, Event::Call(CallEvent::UserEnter { user, .. }) if user.as_str() == who),
        )
        .await;
    }

    async fn user_leave(&mut self, who: &str) {
        self.wait(
            &format!("UserLeave {who}"),
            |e| matches!(e, Event::Call(CallEvent::UserLeave { user, .. }) if user.as_str() == who),
        )
        .await;
    }

    /// The reason and duration of the next `CallEnd`.
    async fn call_end(&mut self) -> (EndReason, Duration) {
        match self
            .wait("CallEnd", |e| {
                matches!(e, Event::Call(CallEvent::CallEnd { .. }))
            })
            .await
        {
            Event::Call(CallEvent::CallEnd {
                reason, duration, ..
            }) => (reason, duration),
            _ => unreachable!(),
        }
    }

    /// The next `Invited`, whole.
    async fn invited(&mut self) -> Event {
        self.wait("Invited", |e| {
            matches!(e, Event::Call(CallEvent::Invited { .. }))
        })
        .await
    }
}

async fn client(net: &Net, name: &str) -> (Calling, Watch) {
    let (c, events) = login(net, name).await;
    (c, Watch::new(name, events))
}

fn users(names: &[&str]) -> BTreeSet<UserId> {
    names.iter().map(|n| UserId::new(*n).unwrap()).collect()
}

fn invite_of(e: &Event) -> calling::InviteId {
    match e {
        Event::Call(CallEvent::Invited { invite_id, .. }) => invite_id.clone(),
        other => panic!("not an Invited: {other:?}"),
    }
}

/// Every ordered pair of `clients` has received at least `min` frames of
/// `kind` from each other.
async fn mesh_has_media(clients: &[(&str, &Calling)], kind: MediaKind, min: u64) {
    for (to_name, to) in clients {
        for (from_name, _) in clients {
            if to_name != from_name {
                wait_frames(to, from_name, kind, min).await;
            }
        }
    }
}

/// The join ticket a connected member hands out, in its text form.
async fn ticket_of(member: &Calling) -> String {
    let call = member.current_call().await.unwrap().expect("in a call");
    call.join_ticket
        .expect("a connected member has a ticket")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_party_group_call_decline_timeout_late_join_leave() {
    let net = start().await;
    let (alice, mut a) = client(&net, "alice").await;
    let (bob, mut b) = client(&net, "bob").await;
    let (carol, mut c) = client(&net, "carol").await;
    let (_dave, mut d) = client(&net, "dave").await;
    let (erin, mut e) = client(&net, "erin").await;
    let (frank, mut f) = client(&net, "frank").await;

    let call_id = alice
        .group_call(&["bob", "carol", "erin"], MediaType::Audio, RING)
        .await
        .unwrap();

    // Every callee rings with the others listed, as a group call.
    let mut invites = Vec::new();
    for (me, w) in [("bob", &mut b), ("carol", &mut c), ("erin", &mut e)] {
        let inv = w.invited().await;
        match &inv {
            Event::Call(CallEvent::Invited {
                call_id: id,
                sponsor,
                inviter,
                other_invitees,
                is_from_group,
                media_type,
                ..
            }) => {
                assert_eq!(*id, call_id);
                assert_eq!(sponsor.as_str(), "alice");
                assert_eq!(inviter.as_str(), "alice");
                assert!(*is_from_group, "{me}: is_from_group");
                assert_eq!(*media_type, MediaType::Audio);
                let expected: BTreeSet<UserId> = users(&["bob", "carol", "erin"])
                    .into_iter()
                    .filter(|u| u.as_str() != me)
                    .collect();
                assert_eq!(
                    other_invitees.iter().cloned().collect::<BTreeSet<_>>(),
                    expected,
                    "{me}: other invitees"
                );
            }
            _ => unreachable!(),
        }
        invites.push(invite_of(&inv));
    }

    // bob and erin accept; carol, still ringing, then declines, and
    // everyone in the call sees it.
    bob.accept(&invites[0]).await.unwrap();
    erin.accept(&invites[2]).await.unwrap();
    a.user_enter("bob").await;
    a.user_enter("erin").await;
    b.user_enter("alice").await;
    b.user_enter("erin").await;
    e.user_enter("alice").await;
    e.user_enter("bob").await;
    for c in [&alice, &bob, &erin] {
        let snap = c.current_call().await.unwrap().unwrap();
        assert_eq!(
            snap.ringing.iter().map(UserId::as_str).collect::<Vec<_>>(),
            ["carol"],
            "{}: carol still rings",
            c.user()
        );
    }
    carol.reject(&invites[1]).await.unwrap();
    let (reason, _) = c.call_end().await;
    assert_eq!(reason, EndReason::Rejected);
    for w in [&mut a, &mut b, &mut e] {
        w.wait(
            "Rejected carol",
            |ev| matches!(ev, Event::Call(CallEvent::Rejected { user, .. }) if user.as_str() == "carol"),
        )
        .await;
        w.wait(
            "nobody ringing",
            |ev| matches!(ev, Event::Call(CallEvent::InviteeListUpdated { invitees, .. }) if invitees.is_empty()),
        )
        .await;
    }

    // bob invites dave into the running call; dave lets it ring out.
    bob.invite(&["dave"], Duration::from_secs(1)).await.unwrap();
    let inv = d.invited().await;
    match &inv {
        Event::Call(CallEvent::Invited {
            inviter,
            sponsor,
            members,
            is_from_group,
            ..
        }) => {
            assert_eq!(inviter.as_str(), "bob");
            assert_eq!(sponsor.as_str(), "alice");
            assert!(*is_from_group);
            assert_eq!(
                members.iter().cloned().collect::<BTreeSet<_>>(),
                users(&["alice", "bob", "erin"]),
                "dave sees who is in the call"
            );
        }
        _ => unreachable!(),
    }
    for w in [&mut a, &mut e] {
        w.wait("dave listed as ringing", |ev| {
            matches!(ev, Event::Call(CallEvent::InviteeListUpdated { invitees, .. })
                if invitees.iter().any(|u| u.as_str() == "dave"))
        })
        .await;
    }
    d.wait("CallingTimeout", |ev| {
        matches!(ev, Event::Call(CallEvent::CallingTimeout { .. }))
    })
    .await;
    assert_eq!(d.call_end().await.0, EndReason::TimedOut);
    for w in [&mut a, &mut b, &mut e] {
        w.wait("NoResponse dave", |ev| {
            matches!(ev, Event::Call(CallEvent::NoResponse { users, reason: NoAnswer::Timeout, .. })
                if users.iter().map(UserId::as_str).collect::<Vec<_>>() == ["dave"])
        })
        .await;
    }

    // frank was not invited: a member hands him the call's join ticket,
    // he joins with it and connects media to everyone already there.
    frank
        .join(call_id.as_str(), &ticket_of(&bob).await)
        .await
        .unwrap();
    for who in ["alice", "bob", "erin"] {
        f.user_enter(who).await;
    }
    for w in [&mut a, &mut b, &mut e] {
        w.user_enter("frank").await;
    }
    let snapshot = alice.current_call().await.unwrap().unwrap();
    assert_eq!(
        snapshot.connected.into_iter().collect::<BTreeSet<_>>(),
        users(&["bob", "erin", "frank"])
    );
    assert!(snapshot.is_group);

    let four = [
        ("alice", &alice),
        ("bob", &bob),
        ("erin", &erin),
        ("frank", &frank),
    ];
    mesh_has_media(&four, MediaKind::Audio, 5).await;
    // An audio call sends no video on any pair.
    for (name, c) in &four {
        for (other, _) in &four {
            if name != other {
                assert_eq!(frames_from(c, other, MediaKind::Video).await, 0);
            }
        }
    }
    // Voice volume for every participant.
    for who in ["bob", "erin", "frank"] {
        a.heard(who).await;
    }

    // bob leaves; the call goes on for the other three.
    bob.hangup().await.unwrap();
    let (reason, duration) = b.call_end().await;
    assert_eq!(reason, EndReason::Hangup);
    assert!(duration > Duration::ZERO, "bob was connected for a while");
    for w in [&mut a, &mut e, &mut f] {
        w.user_leave("bob").await;
    }
    assert!(!a.has(|ev| matches!(ev, Event::Call(CallEvent::CallEnd { .. }))));
    let before = frames_from(&alice, "frank", MediaKind::Audio).await;
    wait_frames(&alice, "frank", MediaKind::Audio, before + 5).await;
    let before = frames_from(&frank, "erin", MediaKind::Audio).await;
    wait_frames(&frank, "erin", MediaKind::Audio, before + 5).await;
    let peers: BTreeSet<String> = alice
        .stats()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.user.to_string())
        .collect();
    assert_eq!(
        peers,
        ["erin", "frank"].map(String::from).into(),
        "bob's peer is gone"
    );

    erin.hangup().await.unwrap();
    assert_eq!(e.call_end().await.0, EndReason::Hangup);
    a.user_leave("erin").await;
    f.user_leave("erin").await;

    // The last two hang up at once.
    let (r1, r2) = tokio::join!(alice.hangup(), frank.hangup());
    r1.unwrap();
    r2.unwrap();
    for w in [&mut a, &mut f] {
        let (reason, duration) = w.call_end().await;
        assert_eq!(reason, EndReason::Hangup, "{}", w.name);
        assert!(duration > Duration::ZERO);
    }
    for c in [&alice, &bob, &erin, &frank] {
        assert!(c.current_call().await.unwrap().is_none());
        assert!(c.stats().await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_to_audio_and_back_to_video() {
    let net = start().await;
    let (alice, mut a) = client(&net, "alice").await;
    let (bob, mut b) = client(&net, "bob").await;
    let call_id = alice.call("bob", MediaType::Video, RING).await.unwrap();
    let inv = b.invited().await;
    bob.accept(&invite_of(&inv)).await.unwrap();
    a.user_enter("bob").await;
    b.user_enter("alice").await;
    wait_frames(&alice, "bob", MediaKind::Video, 3).await;
    wait_frames(&bob, "alice", MediaKind::Video, 3).await;

    // Video to audio: applies at once, both sides are told, cameras stop.
    alice.switch_media_type(MediaType::Audio).await.unwrap();
    for w in [&mut a, &mut b] {
        w.wait("MediaTypeChanged to audio", |ev| {
            matches!(ev, Event::Call(CallEvent::MediaTypeChanged { user, from: MediaType::Video, to: MediaType::Audio, call_id: c })
                if user.as_str() == "alice" && *c == call_id)
        })
        .await;
    }
    // Measured against audio progress rather than the clock: once audio
    // has moved on twice, no video frame may arrive in the second stretch.
    for (c, from) in [(&alice, "bob"), (&bob, "alice")] {
        let audio = frames_from(c, from, MediaKind::Audio).await;
        wait_frames(c, from, MediaKind::Audio, audio + 25).await;
        let video = frames_from(c, from, MediaKind::Video).await;
        wait_frames(c, from, MediaKind::Audio, audio + 50).await;
        assert_eq!(
            frames_from(c, from, MediaKind::Video).await,
            video,
            "{} still receives video from {from} after the switch to audio",
            c.user()
        );
    }
    assert_eq!(
        alice.current_call().await.unwrap().unwrap().media_type,
        MediaType::Audio
    );

    // Audio to video asks the peer: a refusal changes nothing.
    bob.switch_media_type(MediaType::Video).await.unwrap();
    let request = match a
        .wait("switch request", |ev| {
            matches!(
                ev,
                Event::Call(CallEvent::MediaTypeSwitchRequested {
                    to: MediaType::Video,
                    ..
                })
            )
        })
        .await
    {
        Event::Call(CallEvent::MediaTypeSwitchRequested {
            request_id, user, ..
        }) => {
            assert_eq!(user.as_str(), "bob");
            request_id
        }
        _ => unreachable!(),
    };
    alice.answer_media_switch(request, false).await.unwrap();
    b.wait("switch refused by alice", |ev| {
        matches!(ev, Event::Call(CallEvent::MediaTypeSwitchRefused { users, .. })
            if users.iter().any(|u| u.as_str() == "alice"))
    })
    .await;
    assert_eq!(
        bob.current_call().await.unwrap().unwrap().media_type,
        MediaType::Audio
    );

    // Asked again and accepted: video flows both ways again.
    bob.switch_media_type(MediaType::Video).await.unwrap();
    let request = match a
        .wait("second switch request", |ev| {
            matches!(ev, Event::Call(CallEvent::MediaTypeSwitchRequested { .. }))
        })
        .await
    {
        Event::Call(CallEvent::MediaTypeSwitchRequested { request_id, .. }) => request_id,
        _ => unreachable!(),
    };
    alice.answer_media_switch(request, true).await.unwrap();
    for w in [&mut a, &mut b] {
        w.wait("MediaTypeChanged to video", |ev| {
            matches!(
                ev,
                Event::Call(CallEvent::MediaTypeChanged {
                    from: MediaType::Audio,
                    to: MediaType::Video,
                    ..
                })
            )
        })
        .await;
    }
    for (c, from) in [(&alice, "bob"), (&bob, "alice")] {
        let video = frames_from(c, from, MediaKind::Video).await;
        wait_frames(c, from, MediaKind::Video, video + 3).await;
    }
    alice.hangup().await.unwrap();
    assert_eq!(b.call_end().await.0, EndReason::Hangup);
    assert_eq!(a.call_end().await.0, EndReason::Hangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glare_gives_one_connected_call_on_both_sides() {
    let net = start().await;
    let (alice, mut a) = client(&net, "alice").await;
    let (bob, mut b) = client(&net, "bob").await;

    // Both call at once. An invite can still arrive before the other side
    // placed its own call (then that side is simply ringing and its call is
    // refused as busy): such a round is no glare, so try a few times.
    let mut glared = false;
    for _round in 0..5 {
        let (ra, rb) = tokio::join!(
            alice.call("bob", MediaType::Audio, RING),
            bob.call("alice", MediaType::Audio, RING)
        );
        let (Ok(ida), Ok(idb)) = (ra, rb) else {
            // Not glare: clean up and try again.
            let _ = tokio::join!(alice.hangup(), bob.hangup());
            a.call_end().await;
            b.call_end().await;
            a.seen.clear();
            b.seen.clear();
            continue;
        };
        glared = true;
        assert_ne!(ida, idb);
        let winner = ida.clone().min(idb.clone());
        a.user_enter("bob").await;
        b.user_enter("alice").await;
        // The side whose call lost was told which one goes on.
        let loser = if winner == ida { &mut b } else { &mut a };
        loser
            .wait(
                "GlareResolved",
                |ev| matches!(ev, Event::Call(CallEvent::GlareResolved { call_id, .. }) if *call_id == winner),
            )
            .await;
        for c in [&alice, &bob] {
            let snap = c.current_call().await.unwrap().unwrap();
            assert_eq!(snap.call_id, winner, "{}: one call", c.user());
            assert_eq!(snap.connected.len(), 1);
        }
        assert!(!a.has(|ev| matches!(ev, Event::Call(CallEvent::Invited { .. }))));
        assert!(!b.has(|ev| matches!(ev, Event::Call(CallEvent::Invited { .. }))));
        wait_frames(&alice, "bob", MediaKind::Audio, 5).await;
        wait_frames(&bob, "alice", MediaKind::Audio, 5).await;
        alice.hangup().await.unwrap();
        assert_eq!(a.call_end().await.0, EndReason::Hangup);
        assert_eq!(b.call_end().await.0, EndReason::Hangup);
        break;
    }
    assert!(glared, "the two calls never crossed in five rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_call_reports_offline_invitee_at_once_and_the_rest_ring() {
    let net = start().await;
    let (alice, mut a) = client(&net, "alice").await;
    let (bob, mut b) = client(&net, "bob").await;
    let (carol, mut c) = client(&net, "carol").await;
    let (dave, mut d) = client(&net, "dave").await;

    // dave is busy in a call with carol.
    carol.call("dave", MediaType::Audio, RING).await.unwrap();
    let inv = d.invited().await;
    dave.accept(&invite_of(&inv)).await.unwrap();
    c.user_enter("dave").await;

    let call_id = alice
        .group_call(&["bob", "ghost", "dave"], MediaType::Audio, RING)
        .await
        .unwrap();
    a.wait("NoResponse ghost offline", |ev| {
        matches!(ev, Event::Call(CallEvent::NoResponse { users, reason: NoAnswer::Offline, call_id: id })
            if *id == call_id && users.iter().map(UserId::as_str).collect::<Vec<_>>() == ["ghost"])
    })
    .await;
    a.wait(
        "LineBusy dave",
        |ev| matches!(ev, Event::Call(CallEvent::LineBusy { user, .. }) if user.as_str() == "dave"),
    )
    .await;
    // bob still rings and nobody answered yet: the call is not over.
    assert!(!a.has(|ev| matches!(ev, Event::Call(CallEvent::CallEnd { .. }))));
    let inv = b.invited().await;
    bob.accept(&invite_of(&inv)).await.unwrap();
    a.user_enter("bob").await;
    wait_frames(&alice, "bob", MediaKind::Audio, 5).await;
    wait_frames(&bob, "alice", MediaKind::Audio, 5).await;
    let snap = alice.current_call().await.unwrap().unwrap();
    assert!(snap.ringing.is_empty(), "{snap:?}");
    // dave's own call was never disturbed.
    assert!(!d.has(|ev| matches!(
        ev,
        Event::Call(CallEvent::Invited { .. }) | Event::Call(CallEvent::CallEnd { .. })
    )));

    bob.hangup().await.unwrap();
    assert_eq!(a.call_end().await.0, EndReason::Hangup);
    assert_eq!(b.call_end().await.0, EndReason::Hangup);
    carol.hangup().await.unwrap();
    assert_eq!(d.call_end().await.0, EndReason::Hangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_into_a_1v1_call_and_the_call_waits_for_the_ringing() {
    let net = start().await;
    let (alice, mut a) = client(&net, "alice").await;
    let (bob, mut b) = client(&net, "bob").await;
    let (carol, mut c) = client(&net, "carol").await;

    // TUICallKit's limit: nine in a call, the caller included.
    let ten: Vec<String> = (1..=9).map(|i| format!("u{i}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    assert!(matches!(
        alice.group_call(&ten, MediaType::Audio, RING).await,
        Err(calling::CallingError::Call(
            calling::CallError::TooManyParticipants {
                requested: 10,
                max: 9
            }
        ))
    ));
    assert!(alice.current_call().await.unwrap().is_none());

    alice.call("bob", MediaType::Audio, RING).await.unwrap();
    let inv = b.invited().await;
    match &inv {
        Event::Call(CallEvent::Invited { is_from_group, .. }) => assert!(!is_from_group),
        _ => unreachable!(),
    }
    bob.accept(&invite_of(&inv)).await.unwrap();
    a.user_enter("bob").await;

    // bob invites carol: the 1v1 call becomes a group call.
    bob.invite(&["carol"], RING).await.unwrap();
    let inv = c.invited().await;
    match &inv {
        Event::Call(CallEvent::Invited {
            is_from_group,
            members,
            inviter,
            ..
        }) => {
            assert!(*is_from_group);
            assert_eq!(inviter.as_str(), "bob");
            assert_eq!(
                members.iter().cloned().collect::<BTreeSet<_>>(),
                users(&["alice", "bob"])
            );
        }
        _ => unreachable!(),
    }

    // alice leaves while carol still rings: bob's call goes on.
    alice.hangup().await.unwrap();
    assert_eq!(a.call_end().await.0, EndReason::Hangup);
    b.user_leave("alice").await;
    assert!(!b.has(|ev| matches!(ev, Event::Call(CallEvent::CallEnd { .. }))));
    let snap = bob.current_call().await.unwrap().unwrap();
    assert!(snap.connected.is_empty());
    assert_eq!(snap.ringing, vec![UserId::new("carol").unwrap()]);

    // carol answers the invite bob sent and talks to bob.
    carol.accept(&invite_of(&inv)).await.unwrap();
    b.user_enter("carol").await;
    c.user_enter("bob").await;
    wait_frames(&bob, "carol", MediaKind::Audio, 5).await;
    wait_frames(&carol, "bob", MediaKind::Audio, 5).await;
    carol.hangup().await.unwrap();
    assert_eq!(c.call_end().await.0, EndReason::Hangup);
    assert_eq!(b.call_end().await.0, EndReason::Hangup);
}

/// Width in pixels from the first H.264 SPS in an Annex B access unit.
fn sps_width(au: &[u8]) -> Option<u32> {
    // Find a start code followed by NAL type 7.
    let mut i = 0;
    let nal = loop {
        if i + 4 > au.len() {
            return None;
        }
        if au[i..].starts_with(&[0, 0, 1]) && au[i + 3] & 0x1f == 7 {
            break &au[i + 4..];
        }
        i += 1;
    };
    // Drop emulation-prevention bytes (00 00 03 → 00 00).
    let mut rbsp = Vec::new();
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    struct Bits<'a>(&'a [u8], usize);
    impl Bits<'_> {
        fn bit(&mut self) -> Option<u32> {
            let b = self.0.get(self.1 / 8)? >> (7 - self.1 % 8) & 1;
            self.1 += 1;
            Some(u32::from(b))
        }
        fn ue(&mut self) -> Option<u32> {
            let mut lz = 0;
            while self.bit()? == 0 {
                lz += 1;
                if lz > 31 {
                    return None;
                }
            }
            let mut v = 0;
            for _ in 0..lz {
                v = v << 1 | self.bit()?;
            }
            Some((1 << lz) - 1 + v)
        }
    }
    let profile = *rbsp.first()?;
    let mut r = Bits(&rbsp, 24);
    r.ue()?; // seq_parameter_set_id
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128) {
        return None; // not constrained baseline: not what we send
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => return None,
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    Some((r.ue()? + 1) * 16)
}

/// The width of the next video key frame `from` sends, read from its SPS.
async fn next_width(frames: &mut tokio::sync::mpsc::Receiver<calling::RemoteFrame>) -> u32 {
    timeout(WAIT, async {
        loop {
            let f = frames.recv().await.expect("frame sink closed");
            if f.frame.kind() == MediaKind::Video
                && f.frame.keyframe
                && let Some(w) = sps_width(&f.frame.data)
            {
                return w;
            }
        }
    })
    .await
    .expect("no video key frame with an SPS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_quality_profile_applies_per_call_and_live() {
    let net = start().await;
    let (alice, _a) = client(&net, "alice").await;
    let (bob, mut b) = client(&net, "bob").await;
    let (sink, mut frames) = calling::ChannelSink::new(1024);
    bob.set_frame_sink(Some(sink)).await.unwrap();

    // Set before the call: the call starts with that profile.
    alice
        .set_video_quality(calling::VideoQuality::P720)
        .await
        .unwrap();
    alice.call("bob", MediaType::Video, RING).await.unwrap();
    let inv = b.invited().await;
    bob.accept(&invite_of(&inv)).await.unwrap();
    b.user_enter("alice").await;
    assert_eq!(next_width(&mut frames).await, 1280);

    // Changed during the call: the camera restarts with the new profile.
    alice
        .set_video_quality(calling::VideoQuality::P480)
        .await
        .unwrap();
    let w = timeout(WAIT, async {
        loop {
            let w = next_width(&mut frames).await;
            if w != 1280 {
                return w;
            }
        }
    })
    .await
    .expect("the profile never changed");
    assert_eq!(w, 640);
    alice.hangup().await.unwrap();
    assert_eq!(b.call_end().await.0, EndReason::Hangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_video_call_by_id_brings_video_both_ways() {
    let net = start().await;
    let (alice, mut a) = client(&net, "alice").await;
    let (bob, mut b) = client(&net, "bob").await;
    let (carol, mut c) = client(&net, "carol").await;
    let call_id = alice.call("bob", MediaType::Video, RING).await.unwrap();
    let inv = b.invited().await;
    bob.accept(&invite_of(&inv)).await.unwrap();
    a.user_enter("bob").await;

    // A join needs a ticket: a malformed one is a typed error.
    carol
        .join(call_id.as_str(), "not-a-ticket")
        .await
        .unwrap_err();
    assert!(carol.current_call().await.unwrap().is_none());

    carol
        .join(call_id.as_str(), &ticket_of(&alice).await)
        .await
        .unwrap();
    c.user_enter("alice").await;
    c.user_enter("bob").await;
    b.user_enter("carol").await;
    let snap = carol.current_call().await.unwrap().unwrap();
    assert_eq!(snap.media_type, MediaType::Video);
    for c in [&alice, &bob, &carol] {
        let snap = c.current_call().await.unwrap().unwrap();
        assert!(
            snap.is_group,
            "{}: a call joined by id is a group call",
            c.user()
        );
    }
    let three = [("alice", &alice), ("bob", &bob), ("carol", &carol)];
    mesh_has_media(&three, MediaKind::Video, 3).await;
    carol.hangup().await.unwrap();
    assert_eq!(c.call_end().await.0, EndReason::Hangup);
    a.user_leave("carol").await;
    bob.hangup().await.unwrap();
    assert_eq!(a.call_end().await.0, EndReason::Hangup);
}

/// A transport that logs the sends and room joins asked of it.
struct Recording {
    inner: calling::MemoryTransport,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl calling::Transport for Recording {
    fn local_user(&self) -> &UserId {
        self.inner.local_user()
    }

    async fn send(
        &self,
        to: &[UserId],
        payload: serde_json::Value,
    ) -> Result<calling::MessageId, calling::TransportError> {
        self.log.lock().unwrap().push(format!("send {to:?}"));
        self.inner.send(to, payload).await
    }

    async fn join_room(
        &self,
        room: &str,
        allow: &[UserId],
    ) -> Result<Vec<UserId>, calling::TransportError> {
        self.log.lock().unwrap().push(format!("join {room}"));
        self.inner.join_room(room, allow).await
    }

    async fn allow_room(
        &self,
        room: &str,
        users: &[UserId],
    ) -> Result<(), calling::TransportError> {
        self.inner.allow_room(room, users).await
    }

    async fn leave_room(&self, room: &str) -> Result<(), calling::TransportError> {
        self.inner.leave_room(room).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    fn take_events(&self) -> Option<tokio::sync::mpsc::Receiver<calling::TransportEvent>> {
        self.inner.take_events()
    }
}

/// The sponsor makes the call's room, closed to all but the invitees,
/// before any invite goes out, whatever its media takes to open: an
/// invitee who accepts at once must find the room there (had its join come
/// first, it would have made the room open, and the sponsor's list would
/// then be refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_room_is_made_before_the_invites() {
    let hub = calling::MemoryHub::new();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let alice = Recording {
        inner: hub.register(UserId::new("alice").unwrap()),
        log: log.clone(),
    };
    let (alice, _a) = Calling::with_transport(alice, calling::CallingConfig::loopback()).unwrap();
    let (_bob, mut b) = Calling::with_transport(
        hub.register(UserId::new("bob").unwrap()),
        calling::CallingConfig::loopback(),
    )
    .unwrap();
    let call_id = alice
        .group_call(&["bob", "carol"], MediaType::Audio, RING)
        .await
        .unwrap();
    invited(&mut b).await;
    let log = log.lock().unwrap().clone();
    let join = log.iter().position(|l| *l == format!("join {call_id}"));
    let send = log.iter().position(|l| l.starts_with("send"));
    assert!(
        matches!((join, send), (Some(j), Some(s)) if j < s),
        "the room must be joined before the first invite: {log:?}"
    );
}
