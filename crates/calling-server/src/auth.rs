//! Login verification, behind a trait so that tests and embedders can swap
//! it; the default checks a TLS-Sig-API v2 UserSig.

use calling_core::UserId;
use calling_signal::protocol::ErrorCode;

/// A verified login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogin {
    /// Unix time (seconds) at which the signature expires.
    pub expires_at: u64,
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct LoginRefused {
    /// The error code sent to the client.
    pub code: ErrorCode,
    /// Human-readable detail sent to the client.
    pub message: String,
}

/// Checks a login's UserSig.
pub trait LoginVerifier: Send + Sync + 'static {
    /// Verifies that `sig` lets `user_id` log in to `sdk_app_id` at `now_unix`.
    /// The server has already checked the user id's syntax.
    fn verify(
        &self,
        sdk_app_id: u64,
        user_id: &UserId,
        sig: &str,
        now_unix: u64,
    ) -> Result<VerifiedLogin, LoginRefused>;
}

/// The default verifier: a TLS-Sig-API v2 UserSig made with the app's
/// secret key (see `calling-usersig`).
pub struct UserSigVerifier {
    secret_key: String,
}

impl std::fmt::Debug for UserSigVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("UserSigVerifier").finish_non_exhaustive()
    }
}

impl UserSigVerifier {
    /// A verifier for UserSigs signed with `secret_key`.
    pub fn new(secret_key: &str) -> Self {
        UserSigVerifier {
            secret_key: secret_key.to_owned(),
        }
    }
}

impl LoginVerifier for UserSigVerifier {
    fn verify(
        &self,
        sdk_app_id: u64,
        user_id: &UserId,
        sig: &str,
        now_unix: u64,
    ) -> Result<VerifiedLogin, LoginRefused> {
        let user_id = user_id.as_str();
        match calling_usersig::verify(sdk_app_id, &self.secret_key, user_id, sig, now_unix) {
            Ok(claims) => Ok(VerifiedLogin {
                expires_at: claims.expires_at(),
            }),
            Err(e) => {
                let code = match e.kind() {
                    "expired" => ErrorCode::SigExpired,
                    "app_id_mismatch" => ErrorCode::WrongApp,
                    _ => ErrorCode::BadSignature,
                };
                Err(LoginRefused {
                    code,
                    message: format!("{} ({})", e, e.kind()),
                })
            }
        }
    }
}
