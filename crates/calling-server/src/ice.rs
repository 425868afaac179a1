//! STUN and TURN servers announced in `login_ok`, with TURN credentials
//! issued per login in the TURN REST API scheme (coturn's
//! `use-auth-secret`): username `<expiry unix time>:<user_id>`, password
//! `base64(HMAC-SHA1(secret, username))`. The TURN server shares the secret
//! and checks both the signature and that the expiry has not passed, so no
//! per-user state is kept anywhere.

use std::time::Duration;

use base64::Engine as _;
use calling_core::UserId;
use calling_signal::protocol::IceServer;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Default lifetime of issued TURN credentials: 6 h. Long enough to outlive
/// almost every call placed during a session (clients get fresh ones on
/// every re-login), short enough that a credential copied out of a log or a
/// browser's devtools is not a standing ticket to the relay.
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(6 * 3600);

/// TURN servers sharing one REST API secret.
#[derive(Clone)]
pub struct TurnConfig {
    /// `turn:host:port?transport=udp`, `turns:...`; all behind `secret`.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: String,
    /// How long an issued credential is valid (default [`DEFAULT_TURN_TTL`]).
    pub ttl: Duration,
}

impl TurnConfig {
    /// TURN servers at `urls` behind `secret`, with the default lifetime.
    pub fn new(urls: Vec<String>, secret: impl Into<String>) -> Self {
        TurnConfig {
            urls,
            secret: secret.into(),
            ttl: DEFAULT_TURN_TTL,
        }
    }
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<hidden>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The ICE servers the server tells clients about (default: none, and
/// `login_ok` carries no `ice_servers`).
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// `stun:host:port` URLs, announced without credentials.
    pub stun_urls: Vec<String>,
    /// TURN servers, announced with credentials for the logged-in user.
    pub turn: Option<TurnConfig>,
}

impl IceConfig {
    /// What `login_ok` announces to `user` logging in at `now_unix`.
    pub fn servers_for(&self, user: &UserId, now_unix: u64) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun_urls.is_empty() {
            out.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
                expires_at: None,
            });
        }
        if let Some(turn) = self.turn.as_ref().filter(|t| !t.urls.is_empty()) {
            let expires_at = now_unix.saturating_add(turn.ttl.as_secs());
            let username = turn_username(expires_at, user);
            out.push(IceServer {
                urls: turn.urls.clone(),
                credential: Some(turn_password(&turn.secret, &username)),
                username: Some(username),
                expires_at: Some(expires_at),
            });
        }
        out
    }
}

/// The REST API username: the expiry first, which is what the TURN server
/// checks against its clock.
pub fn turn_username(expires_at: u64, user: &UserId) -> String {
    format!("{expires_at}:{user}")
}

/// The REST API password for `username`: base64(HMAC-SHA1(secret, username)).
pub fn turn_password(secret: &str, username: &str) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail here.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(
    //   hmac.new(b'north-secret', b'1700021600:alice', hashlib.sha1).digest()).decode())"
    // → oiCBT5mB2/et2pJNwyOIOe5b/PU=
    #[test]
    fn credential_matches_a_vector_computed_by_hand() {
        let alice = UserId::new("alice").unwrap();
        assert_eq!(turn_username(1_700_021_600, &alice), "1700021600:alice");
        assert_eq!(
            turn_password("north-secret", "1700021600:alice"),
            "oiCBT5mB2/et2pJNwyOIOe5b/PU="
        );
    }

    #[test]
    fn login_gets_stun_without_and_turn_with_credentials() {
        let ice = IceConfig {
            stun_urls: vec!["stun:192.0.2.1:3478".into()],
            turn: Some(TurnConfig {
                urls: vec!["turn:192.0.2.1:3478?transport=udp".into()],
                secret: "north-secret".into(),
                ttl: Duration::from_secs(21_600),
            }),
        };
        let alice = UserId::new("alice").unwrap();
        let servers = ice.servers_for(&alice, 1_700_000_000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:192.0.2.1:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[0].credential, None);
        assert_eq!(servers[1].username.as_deref(), Some("1700021600:alice"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some("oiCBT5mB2/et2pJNwyOIOe5b/PU=")
        );
        assert_eq!(servers[1].expires_at, Some(1_700_021_600));
    }

    #[test]
    fn nothing_configured_announces_nothing() {
        let alice = UserId::new("alice").unwrap();
        assert!(IceConfig::default().servers_for(&alice, 1).is_empty());
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = TurnConfig::new(vec!["turn:h:1".into()], "north-secret");
        assert!(!format!("{t:?}").contains("north-secret"));
    }
}
