//! Property tests: verification never panics and round-trips hold.
//!
//! These cover the same input space as the cargo-fuzz target in `fuzz/`
//! (arbitrary strings; arbitrary bytes at the base64, zlib and JSON layers;
//! arbitrary PrivateMapKey buffers), so the normal test run exercises it.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use calling_usersig::{
    PrivateMapKey, Privileges, Room, decode_unverified, generate, generate_with_userbuf, verify,
    verify_private_map_key, verify_with_userbuf,
};
use proptest::prelude::*;

const APP: u64 = 1_400_000_000;
const KEY: &str = "prop-key";

fn url_b64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

/// Every entry point that takes a token, on one input.
fn exercise(sig: &str, now: u64) {
    let _ = verify(APP, KEY, "u", sig, now);
    let _ = verify_with_userbuf(APP, KEY, "u", sig, b"abc", now);
    let _ = verify_private_map_key(APP, KEY, "u", sig, now);
    let _ = decode_unverified(sig);
}

/// JSON-ish bodies built from the real field names, so the generator reaches
/// the field checks rather than failing at the parser every time.
fn json_body() -> impl Strategy<Value = String> {
    let field = prop::sample::select(vec![
        "TLS.ver",
        "TLS.identifier",
        "TLS.sdkappid",
        "TLS.expire",
        "TLS.time",
        "TLS.userbuf",
        "TLS.sig",
        "other",
    ]);
    let value = prop_oneof![
        Just("\"2.0\"".to_owned()),
        Just("\"u\"".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-zA-Z0-9+/=]{0,64}".prop_map(|s| format!("\"{s}\"")),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ];
    prop::collection::vec((field, value), 0..9).prop_map(|pairs| {
        let body: Vec<String> = pairs
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(sig in any::<String>(), now in any::<u64>()) {
        exercise(&sig, now);
    }

    #[test]
    fn arbitrary_url_alphabet_strings_never_panic(sig in "[A-Za-z0-9*_-]{0,400}", now in any::<u64>()) {
        exercise(&sig, now);
    }

    #[test]
    fn arbitrary_bytes_under_base64_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&url_b64(&bytes), 0);
    }

    #[test]
    fn arbitrary_bytes_under_zlib_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&url_b64(&zlib(&bytes)), 0);
    }

    #[test]
    fn arbitrary_json_never_panics(body in json_body(), now in any::<u64>()) {
        exercise(&url_b64(&zlib(body.as_bytes())), now);
    }

    #[test]
    fn corrupted_valid_tokens_never_panic_nor_verify(
        user in "[a-zA-Z0-9_-]{1,32}",
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let sig = generate(APP, KEY, &user, 3600, 1_000);
        let mut bytes = sig.clone().into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let corrupted = String::from_utf8_lossy(&bytes).into_owned();
        exercise(&corrupted, 1_000);
        // A changed character either leaves the token intact after decoding
        // (e.g. a padding character) or makes it fail; it never yields claims
        // for someone else.
        if let Ok(claims) = verify(APP, KEY, &user, &corrupted, 1_000) {
            prop_assert_eq!(claims.identifier, user);
        }
    }

    #[test]
    fn arbitrary_private_map_key_buffers_never_panic(buf in prop::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(key) = PrivateMapKey::from_userbuf(&buf) {
            // Whatever parses serialises back to the same bytes.
            prop_assert_eq!(key.to_userbuf().unwrap(), buf.clone());
        }
        exercise(&generate_with_userbuf(APP, KEY, "u", 60, &buf, 0), 0);
    }

    #[test]
    fn generate_then_verify_round_trips(
        app in any::<u64>(),
        key in any::<String>(),
        user in any::<String>(),
        expire in any::<u64>(),
        now in any::<u64>(),
        userbuf in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
    ) {
        let sig = match &userbuf {
            Some(buf) => generate_with_userbuf(app, &key, &user, expire, buf, now),
            None => generate(app, &key, &user, expire, now),
        };
        let claims = verify(app, &key, &user, &sig, now).unwrap();
        prop_assert_eq!(claims.sdk_app_id, app);
        prop_assert_eq!(&claims.identifier, &user);
        prop_assert_eq!(claims.issued_at, now);
        prop_assert_eq!(claims.expire_secs, expire);
        prop_assert_eq!(claims.userbuf, userbuf);
        let other_key = format!("{key}x");
        prop_assert_eq!(
            verify(app, &other_key, &user, &sig, now).unwrap_err().kind(),
            "signature_mismatch"
        );
    }

    #[test]
    fn private_map_key_round_trips(
        user in "[a-zA-Z0-9_-]{0,32}",
        app in any::<u32>(),
        room_id in any::<u32>(),
        room_name in prop::option::of("\\PC{1,20}"),
        bits in any::<u32>(),
        expire in 0u64..1_000_000,
        now in 0u64..4_000_000_000,
    ) {
        let room = match room_name {
            Some(name) => Room::Name(name),
            None => Room::Id(room_id),
        };
        let key = PrivateMapKey::new(u64::from(app), &user, &room, Privileges::from_bits(bits), expire, now).unwrap();
        prop_assert!(key.grants_room(&room));
        let buf = key.to_userbuf().unwrap();
        prop_assert_eq!(PrivateMapKey::from_userbuf(&buf).unwrap(), key);
    }
}
