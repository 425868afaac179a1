//! The call layer on the wire (see `docs/PROTOCOL.md`): calling-core's
//! call-control messages, and media negotiation wrapped as kind `media`.
//!
//! ```json
//! {"version":1,"call_id":"…","kind":"media","signal":{"type":"offer","sdp":"v=0…"}}
//! ```

use calling_core::{CallId, DecodeError, Message, PROTOCOL_VERSION};
use calling_media::MediaSignal;
use serde_json::{Value, json};

/// The `kind` of a media negotiation payload.
pub const MEDIA_KIND: &str = "media";

/// A decoded call-layer payload.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A call-control message for the state machine.
    Control(Message),
    /// Media negotiation for the media session of `call_id`.
    Media {
        call_id: CallId,
        signal: MediaSignal,
    },
}

/// Encodes a call-control message.
pub(crate) fn control(message: &Message) -> Value {
    message.to_value()
}

/// Encodes a media signal of a call.
pub(crate) fn media(call_id: &CallId, signal: &MediaSignal) -> Value {
    json!({
        "version": PROTOCOL_VERSION,
        "call_id": call_id,
        "kind": MEDIA_KIND,
        "signal": signal,
    })
}

/// Decodes any call-layer payload, with the core's typed errors.
pub(crate) fn decode(payload: Value) -> Result<Inbound, DecodeError> {
    if payload.get("kind").and_then(Value::as_str) != Some(MEDIA_KIND) {
        return Message::from_value(payload).map(Inbound::Control);
    }
    let invalid = |detail: String| DecodeError::Invalid {
        kind: MEDIA_KIND.into(),
        detail,
    };
    match payload.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(got) => {
            return Err(DecodeError::UnsupportedVersion {
                got,
                supported: PROTOCOL_VERSION,
            });
        }
        None => return Err(DecodeError::MissingVersion),
    }
    let call_id = payload
        .get("call_id")
        .cloned()
        .ok_or_else(|| invalid("missing call_id".into()))?;
    let call_id: CallId = serde_json::from_value(call_id).map_err(|e| invalid(e.to_string()))?;
    let signal = payload
        .get("signal")
        .cloned()
        .ok_or_else(|| invalid("missing signal".into()))?;
    let signal: MediaSignal = serde_json::from_value(signal).map_err(|e| invalid(e.to_string()))?;
    Ok(Inbound::Media { call_id, signal })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_payloads_round_trip_and_bad_ones_are_typed_errors() {
        let call = CallId::new("c-1").unwrap();
        let signal = MediaSignal::Offer { sdp: "v=0".into() };
        match decode(media(&call, &signal)).unwrap() {
            Inbound::Media { call_id, signal: s } => {
                assert_eq!(call_id, call);
                assert_eq!(s, signal);
            }
            other => panic!("{other:?}"),
        }
        let bad =
            json!({"version": 1, "call_id": "c-1", "kind": "media", "signal": {"type": "warp"}});
        assert!(matches!(decode(bad), Err(DecodeError::Invalid { .. })));
        let v2 = json!({"version": 2, "call_id": "c-1", "kind": "media", "signal": {"type": "offer", "sdp": ""}});
        assert!(matches!(
            decode(v2),
            Err(DecodeError::UnsupportedVersion { got: 2, .. })
        ));
        assert!(matches!(
            decode(json!({"kind": "media"})),
            Err(DecodeError::MissingVersion)
        ));
        assert!(matches!(
            decode(json!("text")),
            Err(DecodeError::NotJson(_))
        ));
    }
}
