//! Feeds arbitrary input to every parsing entry point of calling-usersig.
//!
//! The first byte picks the layer the rest is injected at, so the fuzzer
//! reaches the zlib and JSON decoders instead of stalling at base64:
//! 0 = the UserSig string itself, 1 = bytes under base64, 2 = bytes under
//! zlib and base64, 3 = a PrivateMapKey userbuf. tests/never_panics.rs
//! covers the same space with proptest in the normal test run.
#![no_main]

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use calling_usersig::{
    PrivateMapKey, decode_unverified, verify, verify_private_map_key, verify_with_userbuf,
};
use libfuzzer_sys::fuzz_target;

fn url_b64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

fn exercise(sig: &str) {
    let _ = verify(1_400_000_000, "fuzz-key", "u", sig, 1_600_000_000);
    let _ = verify_with_userbuf(1_400_000_000, "fuzz-key", "u", sig, b"abc", 1_600_000_000);
    let _ = verify_private_map_key(1_400_000_000, "fuzz-key", "u", sig, 1_600_000_000);
    let _ = decode_unverified(sig);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => exercise(&String::from_utf8_lossy(rest)),
        1 => exercise(&url_b64(rest)),
        2 => {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            if z.write_all(rest).is_ok() {
                if let Ok(compressed) = z.finish() {
                    exercise(&url_b64(&compressed));
                }
            }
        }
        _ => {
            if let Ok(key) = PrivateMapKey::from_userbuf(rest) {
                assert_eq!(
                    key.to_userbuf().ok().as_deref(),
                    Some(rest),
                    "parse/serialise round trip"
                );
            }
        }
    }
});
