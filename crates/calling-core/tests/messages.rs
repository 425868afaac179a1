//! The call-control messages on the wire: JSON round trips for every kind,
//! and a typed error for every way a message can be wrong.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions
use calling_core::{
    Body, CallId, CallInfo, DecodeError, GroupId, InviteId, JoinSecret, KINDS, MediaType, Member,
    Message, NoAnswer, PROTOCOL_VERSION, PartyId, Pending, RoomId, Roster, UserId,
};
use proptest::prelude::*;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn info() -> CallInfo {
    CallInfo {
        room_id: RoomId::new(12345).unwrap(),
        media_type: MediaType::Video,
        sponsor: uid("alice"),
        group_id: Some(GroupId::new("team-1").unwrap()),
        is_group: true,
    }
}

fn roster() -> Roster {
    Roster {
        connected: vec![Member {
            user: uid("alice"),
            party: PartyId(7),
            audio: true,
            video: false,
        }],
        ringing: vec![Pending {
            user: uid("bob"),
            invite_id: InviteId::new("inv-1").unwrap(),
            inviter: uid("alice"),
        }],
    }
}

fn every_body() -> Vec<Body> {
    let invite_id = InviteId::new("inv-1").unwrap();
    vec![
        Body::Invite {
            invite_id: invite_id.clone(),
            info: info(),
            timeout: 30,
            user_data: Some("hello".into()),
            roster: roster(),
        },
        Body::Cancel {
            invite_id: invite_id.clone(),
        },
        Body::Enter {
            invite_id: Some(invite_id.clone()),
            join_secret: None,
            audio: true,
            video: false,
        },
        Body::Enter {
            invite_id: None,
            join_secret: Some(JoinSecret::new("s3cret").unwrap()),
            audio: false,
            video: true,
        },
        Body::Reject {
            invite_id: invite_id.clone(),
            busy: true,
        },
        Body::Timeout {
            invite_id,
            users: vec![uid("bob")],
            reason: NoAnswer::Offline,
        },
        Body::Leave,
        Body::Roster {
            info: info(),
            roster: roster(),
            join_secret: None,
        },
        Body::Roster {
            info: info(),
            roster: roster(),
            join_secret: Some(JoinSecret::new("s3cret").unwrap()),
        },
        Body::Gone {
            upto: PartyId(9),
            dropped: None,
        },
        Body::Gone {
            upto: PartyId(9),
            dropped: Some(PartyId(7)),
        },
        Body::Alive,
        Body::MediaState {
            audio: false,
            video: true,
        },
        Body::MediaType {
            media_type: MediaType::Audio,
        },
        Body::SwitchRequest {
            request_id: 5,
            media_type: MediaType::Video,
        },
        Body::SwitchAnswer {
            request_id: 5,
            accepted: false,
        },
    ]
}

fn message(body: Body) -> Message {
    Message {
        version: PROTOCOL_VERSION,
        call_id: CallId::new("c0ffee-1").unwrap(),
        party: PartyId(1 << 50),
        body,
    }
}

#[test]
fn every_kind_round_trips_through_json() {
    let mut kinds = Vec::new();
    for body in every_body() {
        kinds.push(body.kind());
        let m = message(body);
        let text = m.to_json();
        assert_eq!(Message::from_json(&text).unwrap(), m, "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["kind"], m.body.kind());
        assert_eq!(value["version"], 1);
    }
    kinds.sort();
    kinds.dedup();
    let mut all = KINDS.to_vec();
    all.sort();
    assert_eq!(kinds, all, "every kind is covered");
}

#[test]
fn the_wire_shape_is_flat_and_documented() {
    let m = message(Body::Reject {
        invite_id: InviteId::new("inv-1").unwrap(),
        busy: false,
    });
    let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "version": 1, "call_id": "c0ffee-1", "party": 1u64 << 50,
            "kind": "reject", "invite_id": "inv-1", "busy": false
        })
    );
    let invite = message(every_body().remove(0));
    let v: serde_json::Value = serde_json::from_str(&invite.to_json()).unwrap();
    assert_eq!(v["room_id"], 12345);
    assert_eq!(v["media_type"], "video");
    assert_eq!(v["roster"]["ringing"][0]["user"], "bob");
}

#[test]
fn decode_errors_are_typed() {
    assert!(matches!(
        Message::from_json("not json"),
        Err(DecodeError::NotJson(_))
    ));
    assert!(matches!(
        Message::from_json("[1,2]"),
        Err(DecodeError::NotJson(_))
    ));
    assert_eq!(
        Message::from_json(r#"{"kind":"leave"}"#),
        Err(DecodeError::MissingVersion)
    );
    assert_eq!(
        Message::from_json(r#"{"version":2,"kind":"leave","call_id":"c","party":1}"#),
        Err(DecodeError::UnsupportedVersion {
            got: 2,
            supported: 1
        })
    );
    assert_eq!(
        Message::from_json(r#"{"version":1,"call_id":"c","party":1}"#),
        Err(DecodeError::MissingKind)
    );
    assert_eq!(
        Message::from_json(r#"{"version":1,"kind":"teleport","call_id":"c","party":1}"#),
        Err(DecodeError::UnknownKind("teleport".into()))
    );
    for bad in [
        r#"{"version":1,"kind":"cancel","call_id":"c","party":1}"#,
        r#"{"version":1,"kind":"leave","call_id":"has space","party":1}"#,
        r#"{"version":1,"kind":"leave","call_id":"c","party":-1}"#,
        r#"{"version":1,"kind":"media_type","call_id":"c","party":1,"media_type":"hologram"}"#,
        r#"{"version":1,"kind":"roster","call_id":"c","party":1,"room_id":0,"media_type":"audio","sponsor":"a","is_group":false,"roster":{"connected":[],"ringing":[]}}"#,
    ] {
        assert!(
            matches!(Message::from_json(bad), Err(DecodeError::Invalid { .. })),
            "{bad}"
        );
    }
}

#[test]
fn oversized_lists_are_refused_without_changing_state() {
    use calling_core::{CallMachine, CallState, Config, MessageError};
    let mut m = CallMachine::new(uid("bob"), Config::default(), [3; 32]);
    let ringing: Vec<Pending> = (0..20)
        .map(|i| Pending {
            user: uid(&format!("u{i}")),
            invite_id: InviteId::new("i").unwrap(),
            inviter: uid("alice"),
        })
        .collect();
    let invite = message(Body::Invite {
        invite_id: InviteId::new("i").unwrap(),
        info: info(),
        timeout: 30,
        user_data: None,
        roster: Roster {
            connected: vec![],
            ringing,
        },
    });
    let now = std::time::Instant::now();
    assert!(matches!(
        m.handle_message(now, &uid("alice"), invite),
        Err(MessageError::TooManyEntries {
            field: "roster.ringing",
            ..
        })
    ));
    assert_eq!(m.state(), CallState::Idle);
    assert!(m.poll_output().is_none());
    assert_eq!(
        m.handle_message(now, &uid("bob"), message(Body::Leave)),
        Err(MessageError::FromSelf)
    );
}

proptest! {
    /// Any text fed to the decoder gives a message or a typed error, never a panic.
    #[test]
    fn decoding_never_panics(text in ".{0,200}") {
        let _ = Message::from_json(&text);
    }

    /// Any JSON object with a valid envelope and arbitrary fields decodes or errs.
    #[test]
    fn decoding_arbitrary_fields_never_panics(
        kind in prop::sample::select(KINDS.to_vec()),
        extra in prop::collection::btree_map("[a-z_]{1,10}", any::<i64>(), 0..5),
    ) {
        let mut v = serde_json::json!({"version": 1, "kind": kind, "call_id": "c", "party": 1});
        for (k, n) in extra {
            v[k] = n.into();
        }
        let _ = Message::from_value(v);
    }
}
