//! Compatibility with the official tls-sig-api-v2 libraries.
//!
//! The tokens in tests/data were produced by the official Python package
//! (tls-sig-api-v2 1.1, PyPI) and Node package (tls-sig-api-v2 1.0.2, npm)
//! with the key, app id and pinned clock below; the generator scripts beside
//! them give the exact commands. Verification time is fixed, never the wall
//! clock.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use calling_usersig::{
    Claims, PrivateMapKey, Privileges, Room, generate, generate_private_map_key,
    generate_with_userbuf, sig_field, verify, verify_private_map_key, verify_with_userbuf,
};

const APP: u64 = 1_400_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const TIME: u64 = 1_600_000_000;
const DAYS_180: u64 = 180 * 86_400;

/// Hand-checked TLS.sig values from shared/reference/field-notes.md.
const NOTES_SIG_PLAIN: &str = "1Z5PngDjGaufeSiPoBuxdHY7EK3JTdAjMP93S4KvV3M=";
const NOTES_SIG_USERBUF_ABC: &str = "9tvdyuu11RSxrIwX0xC05oW7LdPxVnzkzBpcRT/UqfM=";

fn vector(name: &str) -> &'static str {
    let all = concat!(
        include_str!("data/python_vectors.txt"),
        include_str!("data/node_vectors.txt")
    );
    all.lines()
        .find_map(|line| {
            let (n, sig) = line.split_once('\t')?;
            (n == name).then_some(sig)
        })
        .unwrap_or_else(|| panic!("no vector named {name}"))
}

/// The token's JSON body, decoded independently of the crate.
fn body(sig: &str) -> serde_json::Value {
    let b64: String = sig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let z = STANDARD.decode(b64).unwrap();
    let mut json = String::new();
    flate2::read::ZlibDecoder::new(&z[..])
        .read_to_string(&mut json)
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

#[test]
fn hand_checked_hmac_vector() {
    assert_eq!(
        sig_field(APP, KEY, "xiaojun", TIME, DAYS_180, None),
        NOTES_SIG_PLAIN
    );
    assert_eq!(
        sig_field(APP, KEY, "xiaojun", TIME, DAYS_180, Some("YWJj")),
        NOTES_SIG_USERBUF_ABC
    );
    // And the official generators put exactly these values in their tokens.
    assert_eq!(body(vector("py_plain_xiaojun"))["TLS.sig"], NOTES_SIG_PLAIN);
    assert_eq!(
        body(vector("py_userbuf_abc"))["TLS.sig"],
        NOTES_SIG_USERBUF_ABC
    );
    assert_eq!(
        body(vector("node_plain_xiaojun"))["TLS.sig"],
        NOTES_SIG_PLAIN
    );
    assert_eq!(
        body(vector("node_userbuf_abc"))["TLS.sig"],
        NOTES_SIG_USERBUF_ABC
    );
}

#[test]
fn python_plain_usersig_verifies() {
    for name in ["py_plain_xiaojun", "node_plain_xiaojun"] {
        let claims = verify(APP, KEY, "xiaojun", vector(name), TIME + 1).unwrap();
        assert_eq!(
            claims,
            Claims {
                identifier: "xiaojun".into(),
                sdk_app_id: APP,
                issued_at: TIME,
                expire_secs: DAYS_180,
                userbuf: None,
            },
            "{name}"
        );
    }
}

#[test]
fn python_userbuf_usersig_verifies() {
    for name in ["py_userbuf_abc", "node_userbuf_abc"] {
        let sig = vector(name);
        let claims = verify_with_userbuf(APP, KEY, "xiaojun", sig, b"abc", TIME).unwrap();
        assert_eq!(claims.userbuf.as_deref(), Some(&b"abc"[..]), "{name}");
        let err = verify_with_userbuf(APP, KEY, "xiaojun", sig, b"abd", TIME).unwrap_err();
        assert_eq!(err.kind(), "userbuf_mismatch", "{name}");
    }
    let binary: Vec<u8> = (0..=255).collect();
    let claims = verify_with_userbuf(
        APP,
        KEY,
        "bin-user",
        vector("py_userbuf_binary"),
        &binary,
        TIME + 3600,
    )
    .unwrap();
    assert_eq!(claims.expire_secs, 3600);
}

#[test]
fn python_unicode_identifier_verifies() {
    // Python escapes non-ASCII in its JSON (\u7528) but signs the UTF-8 text.
    let sig = vector("py_plain_unicode");
    let claims = verify(APP, KEY, "\u{7528}\u{6237}_1", sig, TIME).unwrap();
    assert_eq!(claims.expire_secs, 86_400);
    assert_eq!(
        verify(APP, KEY, "xiaojun", sig, TIME).unwrap_err().kind(),
        "identifier_mismatch"
    );
}

#[test]
fn official_vectors_fail_exactly_as_they_should() {
    let sig = vector("py_plain_xiaojun");
    // Valid through the last second, expired one second later.
    verify(APP, KEY, "xiaojun", sig, TIME + DAYS_180).unwrap();
    let err = verify(APP, KEY, "xiaojun", sig, TIME + DAYS_180 + 1).unwrap_err();
    assert_eq!(err.kind(), "expired");
    assert!(err.to_string().contains(&(TIME + DAYS_180).to_string()));
    assert_eq!(
        verify(APP, "another key", "xiaojun", sig, TIME)
            .unwrap_err()
            .kind(),
        "signature_mismatch"
    );
    assert_eq!(
        verify(APP + 1, KEY, "xiaojun", sig, TIME)
            .unwrap_err()
            .kind(),
        "app_id_mismatch"
    );
    assert_eq!(
        verify_with_userbuf(APP, KEY, "xiaojun", sig, b"abc", TIME)
            .unwrap_err()
            .kind(),
        "userbuf_mismatch"
    );
}

#[test]
fn ours_carry_the_same_claims_and_mac_as_theirs() {
    // Official verifiers recompute the HMAC from the decoded claims, so a
    // token whose decoded body equals an official one verifies wherever that
    // one does. JSON spacing and key order differ; the values must not.
    let ours = generate(APP, KEY, "xiaojun", DAYS_180, TIME);
    assert_eq!(body(&ours), body(vector("py_plain_xiaojun")));
    let ours = generate_with_userbuf(APP, KEY, "xiaojun", DAYS_180, b"abc", TIME);
    assert_eq!(body(&ours), body(vector("py_userbuf_abc")));
    let ours = generate(APP, KEY, "\u{7528}\u{6237}_1", 86_400, TIME);
    assert_eq!(body(&ours), body(vector("py_plain_unicode")));
    let binary: Vec<u8> = (0..=255).collect();
    let ours = generate_with_userbuf(APP, KEY, "bin-user", 3600, &binary, TIME);
    assert_eq!(body(&ours), body(vector("py_userbuf_binary")));
}

#[test]
fn node_private_map_key_numeric_room() {
    let sig = vector("node_privmap_room_10000_all");
    let (claims, key) = verify_private_map_key(APP, KEY, "xiaojun", sig, TIME).unwrap();
    assert_eq!(claims.expire_secs, DAYS_180);
    assert_eq!(
        key,
        PrivateMapKey {
            user_id: "xiaojun".into(),
            sdk_app_id: 1_400_000_000,
            room_id: 10_000,
            room_str: None,
            expires_at: 1_615_552_000,
            privileges: Privileges::ALL,
            account_type: 0,
        }
    );
    assert!(key.grants_room(&Room::Id(10_000)));
    assert!(!key.grants_room(&Room::Id(10_001)));
    // Byte-for-byte the same userbuf and token body as ours.
    let ours = generate_private_map_key(
        APP,
        KEY,
        "xiaojun",
        DAYS_180,
        &Room::Id(10_000),
        Privileges::ALL,
        TIME,
    )
    .unwrap();
    assert_eq!(body(&ours), body(sig));
}

#[test]
fn node_private_map_key_string_room() {
    let sig = vector("node_privmap_room_str_42");
    let (_, key) = verify_private_map_key(APP, KEY, "xiaojun", sig, TIME + 300).unwrap();
    assert_eq!(key.room(), Room::Name("1000000040".into()));
    assert_eq!(key.room_id, 0);
    assert_eq!(key.expires_at, 1_600_000_300);
    assert_eq!(key.privileges.bits(), 42);
    assert!(key.privileges.contains(Privileges::ENTER_ROOM));
    assert!(!key.privileges.contains(Privileges::SEND_AUDIO));
    let ours = generate_private_map_key(
        APP,
        KEY,
        "xiaojun",
        300,
        &Room::Name("1000000040".into()),
        Privileges::from_bits(42),
        TIME,
    )
    .unwrap();
    assert_eq!(body(&ours), body(sig));
    let err = verify_private_map_key(APP, KEY, "xiaojun", sig, TIME + 301).unwrap_err();
    assert_eq!(err.kind(), "expired");
}
