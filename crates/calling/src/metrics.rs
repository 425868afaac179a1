//! What the SDK times, for apps that export Prometheus metrics: every
//! [`crate::Calling`] of the process adds to the same histograms.
//!
//! Register them in the app's own `prometheus-client` registry with
//! [`register`], or take them alone in the OpenMetrics text format with
//! [`render`]:
//!
//! ```
//! let mut registry = prometheus_client::registry::Registry::default();
//! calling::metrics::register(&mut registry);
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("# TYPE calling_sdk_call_setup_seconds histogram"));
//! ```
//!
//! The signaling server's own metrics (logins, message delivery) are at
//! its `/metrics`; how long calls take to set up only the clients know.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

struct SdkMetrics {
    login: Histogram,
    call_setup: Histogram,
}

fn metrics() -> &'static SdkMetrics {
    static METRICS: OnceLock<SdkMetrics> = OnceLock::new();
    METRICS.get_or_init(|| SdkMetrics {
        // 1 ms to 16 s.
        login: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        // 10 ms to 20 s.
        call_setup: Histogram::new(exponential_buckets(0.01, 1.5, 19)),
    })
}

/// Registers the SDK's histograms in `registry` (they share their values
/// with the SDK, so later observations show in later scrapes):
///
/// - `calling_sdk_login_duration_seconds`: [`crate::Calling::login`],
///   from its start to the server's `login_ok` (TCP, TLS, WebSocket
///   upgrade, login);
/// - `calling_sdk_call_setup_seconds`: for each party of a call, from the
///   call being accepted (this party's [`crate::Calling::accept`], or the
///   other side's accept reaching the caller) to the media with that party
///   being connected (ICE and DTLS up: [`crate::MediaState::Connected`]).
pub fn register(registry: &mut Registry) {
    let m = metrics();
    let r = registry.sub_registry_with_prefix("calling_sdk");
    r.register_with_unit(
        "login_duration",
        "Logins, from their start to the server's answer",
        Unit::Seconds,
        m.login.clone(),
    );
    r.register_with_unit(
        "call_setup",
        "Media setup with each party of a call, from the accept to connected media",
        Unit::Seconds,
        m.call_setup.clone(),
    );
}

/// The SDK's histograms alone, in the OpenMetrics text format.
pub fn render() -> String {
    let mut registry = Registry::default();
    register(&mut registry);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

pub(crate) fn observe_login(elapsed: Duration) {
    metrics().login.observe(elapsed.as_secs_f64());
}

pub(crate) fn observe_call_setup(elapsed: Duration) {
    metrics().call_setup.observe(elapsed.as_secs_f64());
}
