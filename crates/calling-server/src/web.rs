//! The web demo: the page's static files, embedded in the binary so the
//! server serves them from any working directory, and the demo-mode
//! UserSig endpoint.
//!
//! `crates/calling-server/web/` is also the npm package `calling-web`
//! (its package.json): `/trtc-calling.js` (the TRTCCalling API) and
//! `/calling.js` (the protocol client it imports) are served from these
//! very files, with CORS, so that a page of another origin can import them.
//!
//! `GET /demo/usersig?user_id=alice` signs a UserSig with the server's own
//! secret key for whoever asks. That is exactly what a real deployment must
//! never do (anyone could log in as anyone), so it answers only when
//! [`Config::demo`](crate::Config::demo) is set, and `404` otherwise.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;
use tracing::{debug, warn};

use calling_core::{MAX_USER_ID_LEN, UserId};

use crate::Config;

/// One embedded file of the demo page.
#[derive(Debug)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its content.
    pub body: &'static str,
    /// Whether pages of other origins may load it
    /// (`Access-Control-Allow-Origin: *`): the client modules, which an
    /// app on another origin imports.
    pub cross_origin: bool,
}

/// The page itself, served at `/` and at `/index.html`.
const INDEX: Asset = Asset {
    path: "/",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../web/index.html"),
    cross_origin: false,
};

/// Every file of the demo page (`crates/calling-server/web/`).
pub static ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        path: "/index.html",
        ..INDEX
    },
    Asset {
        path: "/calling.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/calling.js"),
        cross_origin: true,
    },
    Asset {
        path: "/trtc-calling.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/trtc-calling.js"),
        cross_origin: true,
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/app.js"),
        cross_origin: false,
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/style.css"),
        cross_origin: false,
    },
];

/// The embedded file served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Demo mode: the server hands out UserSigs for any user id at
/// `GET /demo/usersig`. **Unsafe outside local development.**
#[derive(Clone)]
pub struct DemoMode {
    secret_key: String,
    /// Lifetime of the UserSigs handed out (default one day).
    pub sig_lifetime: Duration,
}

impl std::fmt::Debug for DemoMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoMode")
            .field("sig_lifetime", &self.sig_lifetime)
            .finish_non_exhaustive()
    }
}

impl DemoMode {
    /// Demo mode signing with `secret_key`, which must be the key the
    /// server's login verifier checks against.
    pub fn new(secret_key: impl Into<String>) -> Self {
        DemoMode {
            secret_key: secret_key.into(),
            sig_lifetime: Duration::from_secs(86_400),
        }
    }
}

/// Answers `GET /demo/usersig?<query>`: a status line and a JSON body.
pub(crate) fn demo_usersig(config: &Config, query: &str) -> (StatusCode, String) {
    let Some(demo) = &config.demo else {
        return (
            StatusCode::NOT_FOUND,
            json!({"error": "demo_off", "message": "the server is not in demo mode"}).to_string(),
        );
    };
    let user = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "user_id")
        .map(|(_, v)| v);
    let Some(user) = user.and_then(|u| UserId::new(u).ok()) else {
        debug!(query, "demo usersig: bad user id");
        return (
            StatusCode::BAD_REQUEST,
            json!({
                "error": "invalid_user_id",
                "message": format!(
                    "user_id must be 1 to {MAX_USER_ID_LEN} ASCII letters, digits, '-' or '_'"
                ),
            })
            .to_string(),
        );
    };
    let lifetime = demo.sig_lifetime.as_secs().max(1);
    let sig = calling_usersig::generate(
        config.sdk_app_id,
        &demo.secret_key,
        user.as_str(),
        lifetime,
        calling_usersig::now_unix(),
    );
    warn!(%user, "demo mode: handed out a UserSig");
    (
        StatusCode::OK,
        json!({
            "sdk_app_id": config.sdk_app_id,
            "user_id": user,
            "user_sig": sig,
            "expire_secs": lifetime,
        })
        .to_string(),
    )
}
