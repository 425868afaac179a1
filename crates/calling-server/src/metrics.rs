//! What the server counts and times, exported at `/metrics` in the
//! OpenMetrics text format through the `prometheus-client` crate.
//!
//! Counters and gauges are single atomics (one relaxed add on the hot
//! path); the histograms take an uncontended lock per observation.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Server-wide counters, gauges and histograms. The counters' exported
/// names end in `_total` (`logins_ok` is `calling_logins_ok_total`).
#[derive(Debug)]
pub struct Metrics {
    /// WebSocket connections open right now.
    pub connections_open: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_accepted: Counter,
    /// Logged-in users (set from the hub when rendered).
    pub users_online: Gauge,
    /// Rooms with at least one member (set from the hub when rendered).
    pub rooms: Gauge,
    /// Successful logins.
    pub logins_ok: Counter,
    /// Refused logins.
    pub logins_failed: Counter,
    /// Payload copies queued to an online recipient.
    pub messages_routed: Counter,
    /// Recipients reported undeliverable (offline, congested or malformed).
    pub undeliverable: Counter,
    /// Of those, recipients online whose outbound queue was full.
    pub congested: Counter,
    /// Sessions kicked out by a newer login of the same user.
    pub kicks: Counter,
    /// Frames refused with an `error` frame.
    pub frame_errors: Counter,
    /// Frames dropped by the rate limiter (also counted in `frame_errors`).
    pub rate_limited: Counter,
    /// Connections closed for heartbeat silence.
    pub heartbeat_timeouts: Counter,
    /// HTTP requests served (`/healthz`, `/metrics`, 404s).
    pub http_requests: Counter,
    /// TLS handshakes that failed or timed out (TLS listeners only).
    pub tls_handshake_failures: Counter,
    /// TURN URLs that failed the last secret check (rejected our
    /// credentials or did not answer); 0 before the first check.
    pub turn_check_failures: Gauge,
    /// Connections closed as soon as they were accepted, for a connection
    /// cap (`max_pending_logins`, `max_pending_logins_per_ip`,
    /// `max_connections_per_ip`).
    pub connections_refused: Counter,
    /// Connections closed for sending more than `pre_login_bytes` before
    /// logging in.
    pub pre_login_overruns: Counter,
    /// Connections accepted and not logged in yet.
    pub pending_logins: Gauge,
    /// Connections closed before their login to make room for a newer one
    /// (`max_pending_logins` reached).
    pub pending_evicted: Counter,
    /// Connections closed with 4006: their outbound queue went over its
    /// byte budget.
    pub slow_readers_cut: Counter,
    /// `send` frames refused for the sender's fan-out budget (also in
    /// `rate_limited`).
    pub fanout_limited: Counter,
    /// WebSocket upgrades refused: a browser page of an origin not
    /// allowed (`403`), or a request to `/ws` that was not a valid
    /// upgrade (`426`, `400`).
    pub upgrades_refused: Counter,
    /// Successful logins, from the TCP accept to the `login_ok` answer:
    /// TLS handshake, HTTP upgrade, the client's wait before its login
    /// frame, and the UserSig check.
    pub login_duration: Histogram,
    /// Each delivered copy of a `send`, from the sender's frame being read
    /// to the copy being written to the recipient's connection: routing
    /// plus the time it waited in the recipient's queue.
    pub message_delivery: Histogram,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered for [`Self::render`].
    pub fn new() -> Self {
        let m = Metrics {
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            users_online: Gauge::default(),
            rooms: Gauge::default(),
            logins_ok: Counter::default(),
            logins_failed: Counter::default(),
            messages_routed: Counter::default(),
            undeliverable: Counter::default(),
            congested: Counter::default(),
            kicks: Counter::default(),
            frame_errors: Counter::default(),
            rate_limited: Counter::default(),
            heartbeat_timeouts: Counter::default(),
            http_requests: Counter::default(),
            tls_handshake_failures: Counter::default(),
            turn_check_failures: Gauge::default(),
            connections_refused: Counter::default(),
            pre_login_overruns: Counter::default(),
            pending_logins: Gauge::default(),
            pending_evicted: Counter::default(),
            slow_readers_cut: Counter::default(),
            fanout_limited: Counter::default(),
            upgrades_refused: Counter::default(),
            // 0.5 ms to 8 s.
            login_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            // 50 µs to 1.6 s.
            message_delivery: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            registry: Registry::default(),
        };
        m.registered()
    }

    /// The registry holds clones of the metrics (they share their values),
    /// so that rendering needs no copying by hand.
    fn registered(mut self) -> Self {
        let mut r = Registry::with_prefix("calling");
        let gauges = [
            (
                "connections",
                "WebSocket connections open",
                &self.connections_open,
            ),
            ("users_online", "Logged-in users", &self.users_online),
            ("rooms", "Rooms with at least one member", &self.rooms),
            (
                "turn_check_failures",
                "TURN URLs that failed the last credential check",
                &self.turn_check_failures,
            ),
            (
                "pending_logins",
                "Connections accepted and not logged in yet",
                &self.pending_logins,
            ),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.clone());
        }
        let counters = [
            (
                "connections_accepted",
                "WebSocket connections accepted",
                &self.connections_accepted,
            ),
            ("logins_ok", "Successful logins", &self.logins_ok),
            ("logins_failed", "Refused logins", &self.logins_failed),
            (
                "messages_routed",
                "Payload copies delivered to online recipients",
                &self.messages_routed,
            ),
            (
                "undeliverable",
                "Recipients reported undeliverable",
                &self.undeliverable,
            ),
            (
                "congested",
                "Recipients online whose outbound queue was full",
                &self.congested,
            ),
            ("kicks", "Sessions kicked out by a newer login", &self.kicks),
            (
                "frame_errors",
                "Frames answered with an error frame",
                &self.frame_errors,
            ),
            (
                "rate_limited",
                "Frames dropped by the rate limiter",
                &self.rate_limited,
            ),
            (
                "heartbeat_timeouts",
                "Connections closed for heartbeat silence",
                &self.heartbeat_timeouts,
            ),
            (
                "http_requests",
                "Plain HTTP requests served",
                &self.http_requests,
            ),
            (
                "tls_handshake_failures",
                "TLS handshakes failed or timed out",
                &self.tls_handshake_failures,
            ),
            (
                "connections_refused",
                "Connections closed at accept for a connection cap",
                &self.connections_refused,
            ),
            (
                "pre_login_overruns",
                "Connections closed for sending too much before logging in",
                &self.pre_login_overruns,
            ),
            (
                "slow_readers_cut",
                "Connections closed for not reading (outbound queue over its budget)",
                &self.slow_readers_cut,
            ),
            (
                "fanout_limited",
                "Sends refused for the sender's fan-out budget",
                &self.fanout_limited,
            ),
            (
                "upgrades_refused",
                "WebSocket upgrades refused (origin not allowed, or not a valid upgrade)",
                &self.upgrades_refused,
            ),
            (
                "pending_evicted",
                "Connections closed before their login to make room for newer ones",
                &self.pending_evicted,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register_with_unit(
            "login_duration",
            "Successful logins, from the TCP accept to the login answer",
            Unit::Seconds,
            self.login_duration.clone(),
        );
        r.register_with_unit(
            "message_delivery",
            "Delivered message copies, from the sender's frame to the recipient's connection",
            Unit::Seconds,
            self.message_delivery.clone(),
        );
        self.registry = r;
        self
    }

    /// Adds one to `counter`.
    pub(crate) fn inc(counter: &Counter) {
        counter.inc();
    }

    /// Records `elapsed` in `histogram`, in seconds.
    pub(crate) fn observe(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Renders every metric in the OpenMetrics text format
    /// ([`CONTENT_TYPE`]), with the hub's gauges set to `online` and
    /// `rooms` first.
    pub fn render(&self, online: usize, rooms: usize) -> String {
        self.users_online.set(gauge_value(online));
        self.rooms.set(gauge_value(rooms));
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// A count as a gauge's value, saturating.
pub(crate) fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.logins_ok.inc();
        m.logins_ok.inc();
        m.connections_open.inc();
        Metrics::observe(&m.login_duration, Duration::from_millis(3));
        let text = m.render(7, 2);
        assert!(text.contains("# TYPE calling_logins_ok counter"), "{text}");
        assert!(text.contains("\ncalling_logins_ok_total 2\n"), "{text}");
        assert!(text.contains("\ncalling_connections 1\n"), "{text}");
        assert!(text.contains("\ncalling_users_online 7\n"), "{text}");
        assert!(text.contains("\ncalling_rooms 2\n"), "{text}");
        assert!(
            text.contains("# TYPE calling_login_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("\ncalling_login_duration_seconds_count 1\n"),
            "{text}"
        );
        // 3 ms is above the 2 ms bucket and within the 4 ms one.
        assert!(
            text.contains("calling_login_duration_seconds_bucket{le=\"0.002\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("calling_login_duration_seconds_bucket{le=\"0.004\"} 1\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
