//! TLS-Sig-API v2 compatible UserSig: generate and verify.
//!
//! A UserSig is the login ticket of TRTC-style services. The app's own server
//! signs it with a secret key shared with the signaling server; the signaling
//! server checks it at login. Tickets made here verify with the official
//! `tls-sig-api-v2` libraries and theirs verify here.
//!
//! Format: an HMAC-SHA256 over
//! `TLS.identifier:{id}\nTLS.sdkappid:{app}\nTLS.time:{t}\nTLS.expire:{secs}\n`
//! (plus `TLS.userbuf:{base64}\n` when there is a userbuf), put in a JSON
//! object with the claims, zlib-compressed, base64-encoded with `*`, `-`, `_`
//! in place of `+`, `/`, `=`.
//!
//! Time is always a parameter; [`now_unix`] reads the system clock for
//! callers that want it.
//!
//! ```
//! use calling_usersig::{generate, verify, VerifyError};
//!
//! let key = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
//! let sig = generate(1_400_000_000, key, "alice", 86_400, 1_600_000_000);
//!
//! let claims = verify(1_400_000_000, key, "alice", &sig, 1_600_000_100)?;
//! assert_eq!(claims.identifier, "alice");
//! assert_eq!(claims.expires_at(), 1_600_086_400);
//!
//! let late = verify(1_400_000_000, key, "alice", &sig, 1_600_086_401);
//! assert!(matches!(late, Err(VerifyError::Expired { .. })));
//! assert_eq!(late.unwrap_err().kind(), "expired");
//! # Ok::<(), VerifyError>(())
//! ```
//!
//! [`PrivateMapKey`] builds and parses the userbuf that grants one user
//! rights in one room; [`generate_private_map_key`] and
//! [`verify_private_map_key`] wrap it in a UserSig.

mod error;
mod privmap;

use std::io::Write as _;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use flate2::{Compression, Decompress, FlushDecompress, Status};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

pub use error::{PrivateMapKeyVerifyError, VerifyError};
pub use privmap::{PrivateMapKey, PrivateMapKeyError, Privileges, Room};

/// Default lifetime of a UserSig: 180 days, as in the official libraries.
pub const DEFAULT_EXPIRE_SECS: u64 = 180 * 24 * 3600;

/// Longest UserSig [`verify`] will look at, in bytes. Official UserSigs are
/// a few hundred bytes; the limit only bounds the work done on garbage.
pub const MAX_SIG_LEN: usize = 16 * 1024;

/// Largest inflated JSON [`verify`] accepts, in bytes (guards against zlib
/// bombs).
pub const MAX_INFLATED_LEN: usize = 64 * 1024;

/// The only `TLS.ver` this crate produces and accepts.
pub const VERSION: &str = "2.0";

/// Standard base64 that also accepts a missing padding, for the outer layer:
/// some producers strip the trailing `_`.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims of a verified (or merely decoded) UserSig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id (`TLS.identifier`).
    pub identifier: String,
    /// The application id (`TLS.sdkappid`).
    pub sdk_app_id: u64,
    /// Issue time, unix seconds (`TLS.time`).
    pub issued_at: u64,
    /// Lifetime in seconds (`TLS.expire`).
    pub expire_secs: u64,
    /// Decoded `TLS.userbuf`, when the token carries one.
    pub userbuf: Option<Vec<u8>>,
}

impl Claims {
    /// Last second at which the token is valid: `issued_at + expire_secs`
    /// (saturating).
    #[must_use]
    pub fn expires_at(&self) -> u64 {
        self.issued_at.saturating_add(self.expire_secs)
    }
}

/// The current unix time in seconds from the system clock (0 if the clock
/// is before 1970).
#[must_use]
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Generates a UserSig for `user_id`, valid from `now_unix` for `expire_secs`.
#[must_use]
pub fn generate(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    expire_secs: u64,
    now_unix: u64,
) -> String {
    generate_inner(sdk_app_id, secret_key, user_id, expire_secs, None, now_unix)
}

/// Generates a UserSig that also carries `userbuf` (signed along with the
/// claims). An empty `userbuf` is still carried, as the official libraries do.
#[must_use]
pub fn generate_with_userbuf(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    expire_secs: u64,
    userbuf: &[u8],
    now_unix: u64,
) -> String {
    generate_inner(
        sdk_app_id,
        secret_key,
        user_id,
        expire_secs,
        Some(userbuf),
        now_unix,
    )
}

/// Computes the `TLS.sig` field: standard base64 of the HMAC-SHA256, keyed
/// with the UTF-8 bytes of `secret_key`, of the signed content.
/// `userbuf_b64` is the `TLS.userbuf` string exactly as it appears in the
/// token. Exposed for cross-checking against other implementations.
#[must_use]
pub fn sig_field(
    sdk_app_id: u64,
    secret_key: &str,
    identifier: &str,
    issued_at: u64,
    expire_secs: u64,
    userbuf_b64: Option<&str>,
) -> String {
    let mac = mac_over(
        sdk_app_id,
        secret_key,
        identifier,
        issued_at,
        expire_secs,
        userbuf_b64,
    );
    STANDARD.encode(mac.finalize().into_bytes())
}

fn mac_over(
    sdk_app_id: u64,
    secret_key: &str,
    identifier: &str,
    issued_at: u64,
    expire_secs: u64,
    userbuf_b64: Option<&str>,
) -> Hmac<Sha256> {
    let mut content = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdk_app_id}\nTLS.time:{issued_at}\nTLS.expire:{expire_secs}\n"
    );
    if let Some(b64) = userbuf_b64 {
        content.push_str("TLS.userbuf:");
        content.push_str(b64);
        content.push('\n');
    }
    // HMAC is defined for keys of every length, so this never fails.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret_key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(content.as_bytes());
    mac
}

#[derive(serde::Serialize)]
struct TokenOut<'a> {
    #[serde(rename = "TLS.ver")]
    ver: &'static str,
    #[serde(rename = "TLS.identifier")]
    identifier: &'a str,
    #[serde(rename = "TLS.sdkappid")]
    sdk_app_id: u64,
    #[serde(rename = "TLS.expire")]
    expire: u64,
    #[serde(rename = "TLS.time")]
    time: u64,
    #[serde(rename = "TLS.userbuf", skip_serializing_if = "Option::is_none")]
    userbuf: Option<&'a str>,
    #[serde(rename = "TLS.sig")]
    sig: &'a str,
}

fn generate_inner(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    expire_secs: u64,
    userbuf: Option<&[u8]>,
    now_unix: u64,
) -> String {
    let userbuf_b64 = userbuf.map(|b| STANDARD.encode(b));
    let sig = sig_field(
        sdk_app_id,
        secret_key,
        user_id,
        now_unix,
        expire_secs,
        userbuf_b64.as_deref(),
    );
    let token = TokenOut {
        ver: VERSION,
        identifier: user_id,
        sdk_app_id,
        expire: expire_secs,
        time: now_unix,
        userbuf: userbuf_b64.as_deref(),
        sig: &sig,
    };
    // Serialising plain strings and integers into memory, and compressing
    // into a Vec, cannot fail.
    #[allow(clippy::expect_used)]
    let json = serde_json::to_vec(&token).expect("serialising a plain struct cannot fail");
    let mut z =
        flate2::write::ZlibEncoder::new(Vec::with_capacity(json.len()), Compression::default());
    #[allow(clippy::expect_used)]
    let compressed = z
        .write_all(&json)
        .and_then(|()| z.finish())
        .expect("compressing into a Vec cannot fail");
    to_url_alphabet(STANDARD.encode(compressed))
}

fn to_url_alphabet(b64: String) -> String {
    b64.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            other => other,
        })
        .collect()
}

/// Verifies a UserSig for `user_id` of app `sdk_app_id` at time `now_unix`
/// and returns its claims.
///
/// Any userbuf the token carries is accepted (it is covered by the HMAC) and
/// returned in [`Claims::userbuf`]; use [`verify_with_userbuf`] to require a
/// given one. Checks run in the official order: structure, version, app id,
/// identifier, expiry, userbuf, then the HMAC, compared in constant time.
/// Never panics, whatever `sig` holds.
pub fn verify(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    sig: &str,
    now_unix: u64,
) -> Result<Claims, VerifyError> {
    verify_inner(sdk_app_id, secret_key, user_id, sig, None, now_unix)
}

/// Like [`verify`], and the token must carry exactly `expected_userbuf`.
pub fn verify_with_userbuf(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    sig: &str,
    expected_userbuf: &[u8],
    now_unix: u64,
) -> Result<Claims, VerifyError> {
    verify_inner(
        sdk_app_id,
        secret_key,
        user_id,
        sig,
        Some(expected_userbuf),
        now_unix,
    )
}

/// Decodes a UserSig without checking anything but its structure and
/// version. The claims are **not authenticated**: use it for diagnostics
/// only, never to grant access.
pub fn decode_unverified(sig: &str) -> Result<Claims, VerifyError> {
    decode(sig).map(|t| t.claims)
}

struct Decoded {
    claims: Claims,
    userbuf_b64: Option<String>,
    sig: Vec<u8>,
}

fn verify_inner(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    sig: &str,
    expected_userbuf: Option<&[u8]>,
    now_unix: u64,
) -> Result<Claims, VerifyError> {
    let result = check(
        sdk_app_id,
        secret_key,
        user_id,
        sig,
        expected_userbuf,
        now_unix,
    );
    if let Err(e) = &result {
        tracing::debug!(kind = e.kind(), user_id, sdk_app_id, "UserSig refused: {e}");
    }
    result
}

fn check(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    sig: &str,
    expected_userbuf: Option<&[u8]>,
    now_unix: u64,
) -> Result<Claims, VerifyError> {
    let token = decode(sig)?;
    let claims = &token.claims;
    if claims.sdk_app_id != sdk_app_id {
        return Err(VerifyError::AppIdMismatch {
            expected: sdk_app_id,
            found: claims.sdk_app_id,
        });
    }
    if claims.identifier != user_id {
        return Err(VerifyError::IdentifierMismatch {
            expected: user_id.to_owned(),
            found: claims.identifier.clone(),
        });
    }
    if now_unix > claims.expires_at() {
        return Err(VerifyError::Expired {
            expired_at: claims.expires_at(),
            now: now_unix,
        });
    }
    if let Some(expected) = expected_userbuf {
        match &claims.userbuf {
            None => {
                return Err(VerifyError::UserbufMismatch {
                    detail: "the UserSig carries no userbuf",
                });
            }
            Some(found) if found.as_slice() != expected => {
                return Err(VerifyError::UserbufMismatch {
                    detail: "the UserSig carries a different userbuf",
                });
            }
            Some(_) => {}
        }
    }
    let mac = mac_over(
        claims.sdk_app_id,
        secret_key,
        &claims.identifier,
        claims.issued_at,
        claims.expire_secs,
        token.userbuf_b64.as_deref(),
    );
    // `verify_slice` compares in constant time (it uses `subtle`).
    mac.verify_slice(&token.sig)
        .map_err(|_| VerifyError::SignatureMismatch)?;
    Ok(token.claims)
}

fn decode(sig: &str) -> Result<Decoded, VerifyError> {
    if sig.len() > MAX_SIG_LEN {
        return Err(VerifyError::TooLong {
            len: sig.len(),
            max: MAX_SIG_LEN,
        });
    }
    let b64: String = sig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            other => other,
        })
        .collect();
    let compressed = LENIENT_STANDARD
        .decode(b64.as_bytes())
        .map_err(VerifyError::NotBase64)?;
    let json = inflate(&compressed)?;
    let obj: Map<String, Value> = serde_json::from_slice(&json).map_err(VerifyError::NotJson)?;

    let version = string_field(&obj, "TLS.ver")?;
    if version != VERSION {
        return Err(VerifyError::UnsupportedVersion {
            version: version.to_owned(),
        });
    }
    let identifier = string_field(&obj, "TLS.identifier")?.to_owned();
    let sdk_app_id = u64_field(&obj, "TLS.sdkappid")?;
    let issued_at = u64_field(&obj, "TLS.time")?;
    let expire_secs = u64_field(&obj, "TLS.expire")?;
    let (userbuf, userbuf_b64) = match obj.get("TLS.userbuf") {
        None => (None, None),
        Some(Value::String(s)) => {
            let bytes = STANDARD.decode(s).map_err(|_| VerifyError::InvalidField {
                field: "TLS.userbuf",
                expected: "a base64 string",
            })?;
            (Some(bytes), Some(s.clone()))
        }
        Some(_) => {
            return Err(VerifyError::InvalidField {
                field: "TLS.userbuf",
                expected: "a base64 string",
            });
        }
    };
    let sig = STANDARD
        .decode(string_field(&obj, "TLS.sig")?)
        .map_err(|_| VerifyError::InvalidField {
            field: "TLS.sig",
            expected: "a base64 string",
        })?;
    Ok(Decoded {
        claims: Claims {
            identifier,
            sdk_app_id,
            issued_at,
            expire_secs,
            userbuf,
        },
        userbuf_b64,
        sig,
    })
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, VerifyError> {
    match obj.get(field) {
        None => Err(VerifyError::MissingField { field }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(VerifyError::InvalidField {
            field,
            expected: "a string",
        }),
    }
}

fn u64_field(obj: &Map<String, Value>, field: &'static str) -> Result<u64, VerifyError> {
    match obj.get(field) {
        None => Err(VerifyError::MissingField { field }),
        Some(v) => v.as_u64().ok_or(VerifyError::InvalidField {
            field,
            expected: "a non-negative integer",
        }),
    }
}

/// Inflates a complete zlib stream, refusing truncated streams and outputs
/// above [`MAX_INFLATED_LEN`]. Bytes after the end of the stream are ignored,
/// as the official decoders do.
fn inflate(input: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let mut z = Decompress::new(true);
    let mut out: Vec<u8> = Vec::with_capacity(
        input
            .len()
            .saturating_mul(4)
            .clamp(256, MAX_INFLATED_LEN + 1),
    );
    loop {
        if out.len() > MAX_INFLATED_LEN {
            return Err(VerifyError::InflatedTooLarge {
                max: MAX_INFLATED_LEN,
            });
        }
        if out.len() == out.capacity() {
            // out.len() <= MAX_INFLATED_LEN here, so the headroom is >= 1.
            let headroom = MAX_INFLATED_LEN + 1 - out.len();
            out.reserve_exact(out.len().max(256).min(headroom));
        }
        let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let rest = input.get(consumed..).unwrap_or_default();
        let before = (z.total_in(), z.total_out());
        let status = z
            .decompress_vec(rest, &mut out, FlushDecompress::None)
            .map_err(|e| VerifyError::NotZlib {
                reason: e.to_string(),
            })?;
        match status {
            Status::StreamEnd => {
                if out.len() > MAX_INFLATED_LEN {
                    return Err(VerifyError::InflatedTooLarge {
                        max: MAX_INFLATED_LEN,
                    });
                }
                return Ok(out);
            }
            Status::Ok | Status::BufError => {
                let stalled = (z.total_in(), z.total_out()) == before;
                if stalled && out.len() < out.capacity() {
                    return Err(VerifyError::NotZlib {
                        reason: "the stream is truncated".to_owned(),
                    });
                }
            }
        }
    }
}

/// Generates a PrivateMapKey: a UserSig whose userbuf grants `user_id` the
/// `privileges` in `room` until `now_unix + expire_secs`. Mirrors
/// `GenPrivateMapKey` / `GenPrivateMapKeyWithStringRoomID` of the official
/// libraries.
pub fn generate_private_map_key(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    expire_secs: u64,
    room: &Room,
    privileges: Privileges,
    now_unix: u64,
) -> Result<String, PrivateMapKeyError> {
    let key = PrivateMapKey::new(sdk_app_id, user_id, room, privileges, expire_secs, now_unix)?;
    let userbuf = key.to_userbuf()?;
    Ok(generate_with_userbuf(
        sdk_app_id,
        secret_key,
        user_id,
        expire_secs,
        &userbuf,
        now_unix,
    ))
}

/// Verifies a PrivateMapKey: the UserSig as by [`verify`], then its userbuf
/// must parse, name the same user and app, and not have expired. Whether the
/// room and rights suit the request is left to the caller
/// ([`PrivateMapKey::grants_room`], [`Privileges::contains`]).
pub fn verify_private_map_key(
    sdk_app_id: u64,
    secret_key: &str,
    user_id: &str,
    sig: &str,
    now_unix: u64,
) -> Result<(Claims, PrivateMapKey), PrivateMapKeyVerifyError> {
    let claims = verify(sdk_app_id, secret_key, user_id, sig, now_unix)?;
    let buf = claims
        .userbuf
        .as_deref()
        .ok_or(PrivateMapKeyVerifyError::NoUserbuf)?;
    let key = PrivateMapKey::from_userbuf(buf).map_err(PrivateMapKeyVerifyError::Malformed)?;
    if key.user_id != claims.identifier {
        return Err(PrivateMapKeyVerifyError::UserMismatch {
            expected: claims.identifier,
            found: key.user_id,
        });
    }
    if u64::from(key.sdk_app_id) != sdk_app_id {
        return Err(PrivateMapKeyVerifyError::AppIdMismatch {
            expected: sdk_app_id,
            found: key.sdk_app_id,
        });
    }
    if key.is_expired(now_unix) {
        return Err(PrivateMapKeyVerifyError::Expired {
            expired_at: key.expires_at,
            now: now_unix,
        });
    }
    Ok((claims, key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

    fn encode_raw(json: &[u8]) -> String {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(json).unwrap();
        to_url_alphabet(STANDARD.encode(z.finish().unwrap()))
    }

    #[test]
    fn round_trip_with_and_without_userbuf() {
        let sig = generate(1, KEY, "u", 10, 100);
        let c = verify(1, KEY, "u", &sig, 110).unwrap();
        assert_eq!(
            c,
            Claims {
                identifier: "u".into(),
                sdk_app_id: 1,
                issued_at: 100,
                expire_secs: 10,
                userbuf: None
            }
        );
        let sig = generate_with_userbuf(1, KEY, "u", 10, b"\x00\xffbuf", 100);
        let c = verify_with_userbuf(1, KEY, "u", &sig, b"\x00\xffbuf", 100).unwrap();
        assert_eq!(c.userbuf.as_deref(), Some(&b"\x00\xffbuf"[..]));
        let c = verify(1, KEY, "u", &sig, 100).unwrap();
        assert_eq!(c.userbuf.as_deref(), Some(&b"\x00\xffbuf"[..]));
    }

    #[test]
    fn empty_userbuf_is_carried() {
        let sig = generate_with_userbuf(1, KEY, "u", 10, b"", 100);
        let c = verify_with_userbuf(1, KEY, "u", &sig, b"", 100).unwrap();
        assert_eq!(c.userbuf, Some(Vec::new()));
        let plain = generate(1, KEY, "u", 10, 100);
        assert_eq!(
            verify_with_userbuf(1, KEY, "u", &plain, b"", 100)
                .unwrap_err()
                .kind(),
            "userbuf_mismatch"
        );
    }

    #[test]
    fn inflate_rejects_truncated_and_bombs() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&[b' '; MAX_INFLATED_LEN + 10]).unwrap();
        let bomb = z.finish().unwrap();
        let r = inflate(&bomb);
        assert!(
            matches!(r, Err(VerifyError::InflatedTooLarge { .. })),
            "{:?}",
            r.map(|v| v.len())
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(b"{\"a\":1}").unwrap();
        let ok = z.finish().unwrap();
        assert_eq!(inflate(&ok).unwrap(), b"{\"a\":1}");
        for cut in 0..ok.len() {
            assert_eq!(
                inflate(&ok[..cut]).unwrap_err().kind(),
                "not_zlib",
                "cut at {cut}"
            );
        }
        let mut exact = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        exact.write_all(&[b'x'; MAX_INFLATED_LEN]).unwrap();
        assert_eq!(
            inflate(&exact.finish().unwrap()).unwrap().len(),
            MAX_INFLATED_LEN
        );
    }

    #[test]
    fn reorders_spacing_and_key_order_do_not_matter() {
        let sig_b64 = sig_field(5, KEY, "bob", 1000, 60, None);
        let json = format!(
            "{{ \"TLS.sig\" : \"{sig_b64}\", \"TLS.time\": 1000, \"TLS.expire\": 60,\n \"TLS.sdkappid\": 5, \"TLS.identifier\": \"bob\", \"TLS.ver\": \"2.0\" }}"
        );
        let token = encode_raw(json.as_bytes());
        assert_eq!(
            verify(5, KEY, "bob", &token, 1060).unwrap().identifier,
            "bob"
        );
    }

    #[test]
    fn unpadded_outer_base64_is_accepted() {
        let sig = generate(1, KEY, "padme", 10, 100);
        let trimmed = sig.trim_end_matches('_');
        verify(1, KEY, "padme", trimmed, 100).unwrap();
    }
}
