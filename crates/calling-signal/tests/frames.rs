//! Property tests of the frame codec: no input makes decoding panic, and
//! every frame we encode decodes back to the same bytes.

#![allow(clippy::unwrap_used)]

use calling_signal::protocol::{ClientFrame, ServerFrame};
use proptest::prelude::*;
use serde_json::value::RawValue;

/// Small JSON values, rendered with arbitrary spacing the codec must keep.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z ]{0,8}".prop_map(|s| format!("{s:?}")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[ {} ]", v.join(" , "))),
            prop::collection::vec(("[a-z]{1,4}", inner), 0..4).prop_map(|kv| {
                let body: Vec<String> =
                    kv.into_iter().map(|(k, v)| format!("{k:?} :{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

proptest! {
    // Failures print their minimal input; no regression files in the tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = ClientFrame::parse(&s);
        let _ = ServerFrame::parse(&s);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = ClientFrame::decode(&b);
    }

    #[test]
    fn decoding_json_objects_with_a_known_type_never_panics(
        kind in prop_oneof![Just("login"), Just("send"), Just("join"), Just("leave"), Just("ping"), Just("logout")],
        body in json_text(),
    ) {
        let text = format!(r#"{{"type":"{kind}","payload":{body},"to":{body},"id":{body}}}"#);
        let _ = ClientFrame::parse(&text);
    }

    #[test]
    fn send_frames_round_trip_with_payload_bytes_intact(
        id in "[a-zA-Z0-9-]{1,16}",
        to in prop::collection::vec("[a-z0-9_-]{1,12}", 1..5),
        payload in json_text(),
    ) {
        let frame = ClientFrame::Send {
            id: id.clone(),
            to: to.clone(),
            payload: RawValue::from_string(payload.clone()).unwrap(),
        };
        match ClientFrame::parse(&frame.to_json()).unwrap() {
            ClientFrame::Send { id: id2, to: to2, payload: p2 } => {
                prop_assert_eq!(id2, id);
                prop_assert_eq!(to2, to);
                prop_assert_eq!(p2.get(), payload.as_str());
            }
            other => prop_assert!(false, "decoded as {:?}", other),
        }
    }
}
