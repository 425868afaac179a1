//! Every way a UserSig can be wrong yields its own typed error.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use calling_usersig::{
    MAX_INFLATED_LEN, MAX_SIG_LEN, PrivateMapKey, PrivateMapKeyVerifyError, Privileges, Room,
    VerifyError, decode_unverified, generate, generate_private_map_key, generate_with_userbuf,
    sig_field, verify, verify_private_map_key, verify_with_userbuf,
};
use serde_json::{Value, json};

const APP: u64 = 1_400_000_000;
const KEY: &str = "test-key";
const T: u64 = 1_700_000_000;

fn url_b64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fn token_from_bytes(json: &[u8]) -> String {
    url_b64(&zlib(json))
}

fn token(json: &Value) -> String {
    token_from_bytes(json.to_string().as_bytes())
}

/// A correctly signed body for user "u", which tests then spoil.
fn good_body() -> Value {
    json!({
        "TLS.ver": "2.0",
        "TLS.identifier": "u",
        "TLS.sdkappid": APP,
        "TLS.expire": 60,
        "TLS.time": T,
        "TLS.sig": sig_field(APP, KEY, "u", T, 60, None),
    })
}

fn kind_of(sig: &str) -> &'static str {
    verify(APP, KEY, "u", sig, T).unwrap_err().kind()
}

#[test]
fn good_body_is_valid() {
    // Guards the tests below: each one spoils exactly one thing.
    verify(APP, KEY, "u", &token(&good_body()), T).unwrap();
}

#[test]
fn too_long() {
    let sig = "e".repeat(MAX_SIG_LEN + 1);
    let err = verify(APP, KEY, "u", &sig, T).unwrap_err();
    assert!(matches!(err, VerifyError::TooLong { len, .. } if len == MAX_SIG_LEN + 1));
    assert_eq!(err.kind(), "too_long");
}

#[test]
fn not_base64() {
    for sig in ["not base64!", "eJ%%", "abcde", "é"] {
        assert_eq!(kind_of(sig), "not_base64", "{sig:?}");
    }
}

#[test]
fn not_zlib() {
    assert_eq!(kind_of(""), "not_zlib");
    assert_eq!(kind_of(&url_b64(b"{\"TLS.ver\":\"2.0\"}")), "not_zlib");
    let full = zlib(good_body().to_string().as_bytes());
    let err = verify(APP, KEY, "u", &url_b64(&full[..full.len() - 5]), T).unwrap_err();
    assert_eq!(err.kind(), "not_zlib");
    assert!(err.to_string().contains("zlib"), "{err}");
}

#[test]
fn inflated_too_large() {
    let mut body = good_body();
    body["pad"] = json!(" ".repeat(MAX_INFLATED_LEN));
    let sig = token(&body);
    assert!(sig.len() < MAX_SIG_LEN);
    assert_eq!(kind_of(&sig), "inflated_too_large");
}

#[test]
fn not_json() {
    assert_eq!(kind_of(&token_from_bytes(b"TLS.ver=2.0")), "not_json");
    assert_eq!(kind_of(&token_from_bytes(b"[1,2,3]")), "not_json");
    assert_eq!(kind_of(&token_from_bytes(b"\"2.0\"")), "not_json");
    // Invalid UTF-8 inside a JSON string.
    assert_eq!(
        kind_of(&token_from_bytes(b"{\"TLS.ver\":\"2.0\xff\"}")),
        "not_json"
    );
}

#[test]
fn missing_fields() {
    for field in [
        "TLS.ver",
        "TLS.identifier",
        "TLS.sdkappid",
        "TLS.expire",
        "TLS.time",
        "TLS.sig",
    ] {
        let mut body = good_body();
        body.as_object_mut().unwrap().remove(field);
        let err = verify(APP, KEY, "u", &token(&body), T).unwrap_err();
        assert!(
            matches!(&err, VerifyError::MissingField { field: f } if *f == field),
            "{field}: {err:?}"
        );
    }
}

#[test]
fn ill_typed_fields() {
    let cases = [
        ("TLS.ver", json!(2.0)),
        ("TLS.identifier", json!(12)),
        ("TLS.sdkappid", json!("1400000000")),
        ("TLS.sdkappid", json!(-1)),
        ("TLS.expire", json!(60.5)),
        ("TLS.time", json!(null)),
        ("TLS.userbuf", json!(["a"])),
        ("TLS.userbuf", json!("not base64!")),
        ("TLS.sig", json!(true)),
        ("TLS.sig", json!("***")),
    ];
    for (field, value) in cases {
        let mut body = good_body();
        body[field] = value.clone();
        let err = verify(APP, KEY, "u", &token(&body), T).unwrap_err();
        assert!(
            matches!(&err, VerifyError::InvalidField { field: f, .. } if *f == field),
            "{field} = {value}: {err:?}"
        );
        assert_eq!(err.kind(), "invalid_field");
    }
}

#[test]
fn unsupported_version() {
    let mut body = good_body();
    body["TLS.ver"] = json!("1.0");
    let err = verify(APP, KEY, "u", &token(&body), T).unwrap_err();
    assert!(matches!(&err, VerifyError::UnsupportedVersion { version } if version == "1.0"));
    assert_eq!(err.kind(), "unsupported_version");
}

#[test]
fn app_id_and_identifier_mismatch() {
    let sig = generate(APP, KEY, "u", 60, T);
    let err = verify(APP + 1, KEY, "u", &sig, T).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::AppIdMismatch { expected, found } if expected == APP + 1 && found == APP
    ));
    let err = verify(APP, KEY, "v", &sig, T).unwrap_err();
    assert!(matches!(
        &err,
        VerifyError::IdentifierMismatch { expected, found } if expected == "v" && found == "u"
    ));
    assert_eq!(err.kind(), "identifier_mismatch");
}

#[test]
fn expired_says_when() {
    let sig = generate(APP, KEY, "u", 60, T);
    verify(APP, KEY, "u", &sig, T + 60).unwrap();
    let err = verify(APP, KEY, "u", &sig, T + 61).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Expired { expired_at, now } if expired_at == T + 60 && now == T + 61
    ));
    // Issued in the future is not an error here (clock skew is tolerated,
    // as in the official verifiers).
    verify(APP, KEY, "u", &sig, T - 1000).unwrap();
    // A lifetime that would overflow never expires rather than wrapping.
    let forever = generate(APP, KEY, "u", u64::MAX, T);
    verify(APP, KEY, "u", &forever, u64::MAX).unwrap();
}

#[test]
fn userbuf_mismatch() {
    let plain = generate(APP, KEY, "u", 60, T);
    let err = verify_with_userbuf(APP, KEY, "u", &plain, b"x", T).unwrap_err();
    assert_eq!(err.kind(), "userbuf_mismatch");
    let with = generate_with_userbuf(APP, KEY, "u", 60, b"x", T);
    let err = verify_with_userbuf(APP, KEY, "u", &with, b"y", T).unwrap_err();
    assert_eq!(err.kind(), "userbuf_mismatch");
    verify_with_userbuf(APP, KEY, "u", &with, b"x", T).unwrap();
}

#[test]
fn signature_mismatch() {
    let sig = generate(APP, KEY, "u", 60, T);
    assert_eq!(
        verify(APP, "other-key", "u", &sig, T).unwrap_err().kind(),
        "signature_mismatch"
    );
    // Stretching the lifetime without the key breaks the MAC.
    let mut body = good_body();
    body["TLS.expire"] = json!(600);
    assert_eq!(kind_of(&token(&body)), "signature_mismatch");
    // So does adding, dropping or changing a userbuf.
    let mut body = good_body();
    body["TLS.userbuf"] = json!("YWJj");
    assert_eq!(kind_of(&token(&body)), "signature_mismatch");
    let mut body = good_body();
    body["TLS.userbuf"] = json!("YWJk");
    body["TLS.sig"] = json!(sig_field(APP, KEY, "u", T, 60, Some("YWJj")));
    assert_eq!(kind_of(&token(&body)), "signature_mismatch");
    body["TLS.userbuf"] = json!("YWJj");
    verify(APP, KEY, "u", &token(&body), T).unwrap();
    // A truncated MAC is refused, not compared on a prefix.
    let mut body = good_body();
    let full = STANDARD.decode(body["TLS.sig"].as_str().unwrap()).unwrap();
    body["TLS.sig"] = json!(STANDARD.encode(&full[..16]));
    assert_eq!(kind_of(&token(&body)), "signature_mismatch");
}

#[test]
fn kinds_are_distinct_and_messages_nonempty() {
    let errors: Vec<VerifyError> = [
        "e".repeat(MAX_SIG_LEN + 1),
        "!".to_owned(),
        String::new(),
        token_from_bytes(b"[]"),
        generate(APP, "other-key", "u", 60, T),
    ]
    .iter()
    .map(|sig| verify(APP, KEY, "u", sig, T).unwrap_err())
    .collect();
    let mut kinds: Vec<&str> = errors.iter().map(VerifyError::kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), errors.len(), "{errors:?}");
    assert!(errors.iter().all(|e| !e.to_string().is_empty()));
}

#[test]
fn decode_unverified_reads_claims_without_the_key() {
    let sig = generate_with_userbuf(APP, KEY, "u", 60, b"abc", T);
    let claims = decode_unverified(&sig).unwrap();
    assert_eq!(claims.identifier, "u");
    assert_eq!(claims.expires_at(), T + 60);
    assert_eq!(claims.userbuf.as_deref(), Some(&b"abc"[..]));
    assert_eq!(decode_unverified("!").unwrap_err().kind(), "not_base64");
}

#[test]
fn private_map_key_errors() {
    let room = Room::Id(7);
    let plain = generate(APP, KEY, "u", 60, T);
    assert!(matches!(
        verify_private_map_key(APP, KEY, "u", &plain, T).unwrap_err(),
        PrivateMapKeyVerifyError::NoUserbuf
    ));
    let junk = generate_with_userbuf(APP, KEY, "u", 60, b"\x05junk", T);
    let err = verify_private_map_key(APP, KEY, "u", &junk, T).unwrap_err();
    assert_eq!(err.kind(), "malformed_private_map_key");
    // A userbuf signed for "u" but naming "v".
    let other = PrivateMapKey::new(APP, "v", &room, Privileges::ALL, 60, T)
        .unwrap()
        .to_userbuf()
        .unwrap();
    let sig = generate_with_userbuf(APP, KEY, "u", 60, &other, T);
    assert_eq!(
        verify_private_map_key(APP, KEY, "u", &sig, T)
            .unwrap_err()
            .kind(),
        "private_map_key_user_mismatch"
    );
    let other_app = PrivateMapKey::new(APP - 1, "u", &room, Privileges::ALL, 60, T)
        .unwrap()
        .to_userbuf()
        .unwrap();
    let sig = generate_with_userbuf(APP, KEY, "u", 60, &other_app, T);
    assert_eq!(
        verify_private_map_key(APP, KEY, "u", &sig, T)
            .unwrap_err()
            .kind(),
        "private_map_key_app_id_mismatch"
    );
    // Userbuf expiry shorter than the token's lifetime.
    let short = PrivateMapKey::new(APP, "u", &room, Privileges::ALL, 10, T)
        .unwrap()
        .to_userbuf()
        .unwrap();
    let sig = generate_with_userbuf(APP, KEY, "u", 600, &short, T);
    verify_private_map_key(APP, KEY, "u", &sig, T + 10).unwrap();
    assert_eq!(
        verify_private_map_key(APP, KEY, "u", &sig, T + 11)
            .unwrap_err()
            .kind(),
        "private_map_key_expired"
    );
    // Failures of the outer UserSig keep their own kind.
    let good = generate_private_map_key(APP, KEY, "u", 60, &room, Privileges::ALL, T).unwrap();
    assert_eq!(
        verify_private_map_key(APP, "bad", "u", &good, T)
            .unwrap_err()
            .kind(),
        "signature_mismatch"
    );
}
