//! Typed verification errors.

use crate::privmap::PrivateMapKeyError;

/// Why a UserSig was refused.
///
/// Each variant has a stable machine-readable name, [`VerifyError::kind`],
/// meant for logs, wire protocols and the `usersig` CLI. Claims quoted by a
/// variant (app id, identifier, expiry) come from the token itself and are
/// only as trustworthy as its signature: the claim checks run before the HMAC
/// check, as in the official verifiers, so that a misconfigured app id or user
/// id is reported as such rather than as a bad signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The UserSig is longer than [`crate::MAX_SIG_LEN`] characters.
    #[error("UserSig is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// Length of the rejected UserSig, in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The UserSig is not base64 in the TLS-Sig URL alphabet
    /// (`*` for `+`, `-` for `/`, `_` for `=`).
    #[error("UserSig is not base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
    /// The base64 payload is not a complete zlib stream.
    #[error("UserSig payload is not zlib data: {reason}")]
    NotZlib {
        /// What the decompressor reported.
        reason: String,
    },
    /// The payload inflates to more than [`crate::MAX_INFLATED_LEN`] bytes.
    #[error("UserSig payload inflates to more than {max} bytes")]
    InflatedTooLarge {
        /// The limit.
        max: usize,
    },
    /// The inflated payload is not a JSON object (this includes invalid UTF-8).
    #[error("UserSig payload is not a JSON object: {0}")]
    NotJson(#[source] serde_json::Error),
    /// A required `TLS.*` field is absent.
    #[error("UserSig lacks the field {field}")]
    MissingField {
        /// Name of the missing field, e.g. `TLS.sig`.
        field: &'static str,
    },
    /// A `TLS.*` field has the wrong JSON type or an unusable value.
    #[error("UserSig field {field} is not {expected}")]
    InvalidField {
        /// Name of the field, e.g. `TLS.time`.
        field: &'static str,
        /// What the field should have been.
        expected: &'static str,
    },
    /// `TLS.ver` is not `"2.0"`.
    #[error("UserSig version {version:?} is not supported (only \"2.0\")")]
    UnsupportedVersion {
        /// The version string found in the token.
        version: String,
    },
    /// The token was issued for another application.
    #[error("UserSig was issued for app {found}, not {expected}")]
    AppIdMismatch {
        /// The app id the verifier expected.
        expected: u64,
        /// The app id claimed by the token.
        found: u64,
    },
    /// The token was issued for another user.
    #[error("UserSig was issued for user {found:?}, not {expected:?}")]
    IdentifierMismatch {
        /// The user id the verifier expected.
        expected: String,
        /// The user id claimed by the token.
        found: String,
    },
    /// The token's lifetime is over.
    #[error("UserSig expired at {expired_at} (unix seconds); now is {now}")]
    Expired {
        /// Unix time at which the token stopped being valid (`TLS.time + TLS.expire`).
        expired_at: u64,
        /// The time the verifier was given.
        now: u64,
    },
    /// The token's userbuf is not the one the verifier required.
    #[error("UserSig userbuf mismatch: {detail}")]
    UserbufMismatch {
        /// What differs: absent, or different bytes.
        detail: &'static str,
    },
    /// The HMAC does not match: wrong key, or the token was altered.
    #[error("UserSig signature does not match")]
    SignatureMismatch,
}

impl VerifyError {
    /// A stable, machine-readable name for the failure kind, such as
    /// `"not_base64"` or `"expired"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::TooLong { .. } => "too_long",
            VerifyError::NotBase64(_) => "not_base64",
            VerifyError::NotZlib { .. } => "not_zlib",
            VerifyError::InflatedTooLarge { .. } => "inflated_too_large",
            VerifyError::NotJson(_) => "not_json",
            VerifyError::MissingField { .. } => "missing_field",
            VerifyError::InvalidField { .. } => "invalid_field",
            VerifyError::UnsupportedVersion { .. } => "unsupported_version",
            VerifyError::AppIdMismatch { .. } => "app_id_mismatch",
            VerifyError::IdentifierMismatch { .. } => "identifier_mismatch",
            VerifyError::Expired { .. } => "expired",
            VerifyError::UserbufMismatch { .. } => "userbuf_mismatch",
            VerifyError::SignatureMismatch => "signature_mismatch",
        }
    }
}

/// Why a PrivateMapKey was refused by [`crate::verify_private_map_key`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateMapKeyVerifyError {
    /// The enclosing UserSig failed verification.
    #[error(transparent)]
    Sig(#[from] VerifyError),
    /// The UserSig is valid but carries no userbuf, so grants no room.
    #[error("UserSig carries no userbuf, so it is not a PrivateMapKey")]
    NoUserbuf,
    /// The userbuf is not a PrivateMapKey buffer.
    #[error("userbuf is not a PrivateMapKey: {0}")]
    Malformed(#[source] PrivateMapKeyError),
    /// The buffer names another user than the UserSig.
    #[error("PrivateMapKey names user {found:?}, not {expected:?}")]
    UserMismatch {
        /// The user the UserSig was issued for.
        expected: String,
        /// The user named in the buffer.
        found: String,
    },
    /// The buffer names another application than the UserSig.
    #[error("PrivateMapKey names app {found}, not {expected}")]
    AppIdMismatch {
        /// The app id the verifier expected.
        expected: u64,
        /// The app id named in the buffer.
        found: u32,
    },
    /// The buffer's own expiry time has passed.
    #[error("PrivateMapKey expired at {expired_at} (unix seconds); now is {now}")]
    Expired {
        /// The buffer's absolute expiry time.
        expired_at: u32,
        /// The time the verifier was given.
        now: u64,
    },
}

impl PrivateMapKeyVerifyError {
    /// A stable, machine-readable name for the failure kind. Failures of the
    /// enclosing UserSig keep the [`VerifyError::kind`] name.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            PrivateMapKeyVerifyError::Sig(e) => e.kind(),
            PrivateMapKeyVerifyError::NoUserbuf => "no_userbuf",
            PrivateMapKeyVerifyError::Malformed(_) => "malformed_private_map_key",
            PrivateMapKeyVerifyError::UserMismatch { .. } => "private_map_key_user_mismatch",
            PrivateMapKeyVerifyError::AppIdMismatch { .. } => "private_map_key_app_id_mismatch",
            PrivateMapKeyVerifyError::Expired { .. } => "private_map_key_expired",
        }
    }
}
