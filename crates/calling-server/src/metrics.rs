//! Counters exported at `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Server-wide counters and gauges. All fields are plain atomics so the hot
/// path pays one relaxed add.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket connections open right now.
    pub connections_open: AtomicU64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Successful logins.
    pub logins_ok: AtomicU64,
    /// Refused logins.
    pub logins_failed: AtomicU64,
    /// Payload copies queued to an online recipient.
    pub messages_routed: AtomicU64,
    /// Recipients reported undeliverable (offline, congested or malformed).
    pub undeliverable: AtomicU64,
    /// Of those, recipients online whose outbound queue was full.
    pub congested: AtomicU64,
    /// Sessions kicked out by a newer login of the same user.
    pub kicks: AtomicU64,
    /// Frames refused with an `error` frame.
    pub frame_errors: AtomicU64,
    /// Frames dropped by the rate limiter (also counted in `frame_errors`).
    pub rate_limited: AtomicU64,
    /// Connections closed for heartbeat silence.
    pub heartbeat_timeouts: AtomicU64,
    /// HTTP requests served (`/healthz`, `/metrics`, 404s).
    pub http_requests: AtomicU64,
    /// TLS handshakes that failed or timed out (TLS listeners only).
    pub tls_handshake_failures: AtomicU64,
    /// TURN URLs that failed the last secret check (rejected our
    /// credentials or did not answer); 0 before the first check.
    pub turn_check_failures: AtomicU64,
    /// Connections closed as soon as they were accepted, for a connection
    /// cap (`max_pending_logins`, `max_pending_logins_per_ip`,
    /// `max_connections_per_ip`).
    pub connections_refused: AtomicU64,
    /// Connections closed for sending more than `pre_login_bytes` before
    /// logging in.
    pub pre_login_overruns: AtomicU64,
    /// Connections accepted and not logged in yet.
    pub pending_logins: AtomicU64,
    /// Connections closed before their login to make room for a newer one
    /// (`max_pending_logins` reached).
    pub pending_evicted: AtomicU64,
    /// Connections closed with 4006: their outbound queue went over its
    /// byte budget.
    pub slow_readers_cut: AtomicU64,
    /// `send` frames refused for the sender's fan-out budget (also in
    /// `rate_limited`).
    pub fanout_limited: AtomicU64,
    /// WebSocket upgrades refused: a browser page of an origin not
    /// allowed (`403`), or a request to `/ws` that was not a valid
    /// upgrade (`426`, `400`).
    pub upgrades_refused: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric, plus the hub's gauges, in the Prometheus text
    /// exposition format.
    pub fn render(&self, online: usize, rooms: usize) -> String {
        let rows: [(&str, &str, &str, u64); 23] = [
            (
                "calling_connections",
                "gauge",
                "WebSocket connections open",
                g(&self.connections_open),
            ),
            (
                "calling_connections_total",
                "counter",
                "WebSocket connections accepted",
                g(&self.connections_total),
            ),
            (
                "calling_users_online",
                "gauge",
                "Logged-in users",
                online as u64,
            ),
            (
                "calling_rooms",
                "gauge",
                "Rooms with at least one member",
                rooms as u64,
            ),
            (
                "calling_logins_ok_total",
                "counter",
                "Successful logins",
                g(&self.logins_ok),
            ),
            (
                "calling_logins_failed_total",
                "counter",
                "Refused logins",
                g(&self.logins_failed),
            ),
            (
                "calling_messages_routed_total",
                "counter",
                "Payload copies delivered to online recipients",
                g(&self.messages_routed),
            ),
            (
                "calling_undeliverable_total",
                "counter",
                "Recipients reported undeliverable",
                g(&self.undeliverable),
            ),
            (
                "calling_congested_total",
                "counter",
                "Recipients online whose outbound queue was full",
                g(&self.congested),
            ),
            (
                "calling_kicks_total",
                "counter",
                "Sessions kicked out by a newer login",
                g(&self.kicks),
            ),
            (
                "calling_frame_errors_total",
                "counter",
                "Frames answered with an error frame",
                g(&self.frame_errors),
            ),
            (
                "calling_rate_limited_total",
                "counter",
                "Frames dropped by the rate limiter",
                g(&self.rate_limited),
            ),
            (
                "calling_heartbeat_timeouts_total",
                "counter",
                "Connections closed for heartbeat silence",
                g(&self.heartbeat_timeouts),
            ),
            (
                "calling_http_requests_total",
                "counter",
                "Plain HTTP requests served",
                g(&self.http_requests),
            ),
            (
                "calling_tls_handshake_failures_total",
                "counter",
                "TLS handshakes failed or timed out",
                g(&self.tls_handshake_failures),
            ),
            (
                "calling_turn_check_failures",
                "gauge",
                "TURN URLs that failed the last credential check",
                g(&self.turn_check_failures),
            ),
            (
                "calling_connections_refused_total",
                "counter",
                "Connections closed at accept for a connection cap",
                g(&self.connections_refused),
            ),
            (
                "calling_pre_login_overruns_total",
                "counter",
                "Connections closed for sending too much before logging in",
                g(&self.pre_login_overruns),
            ),
            (
                "calling_slow_readers_cut_total",
                "counter",
                "Connections closed for not reading (outbound queue over its budget)",
                g(&self.slow_readers_cut),
            ),
            (
                "calling_fanout_limited_total",
                "counter",
                "Sends refused for the sender's fan-out budget",
                g(&self.fanout_limited),
            ),
            (
                "calling_upgrades_refused_total",
                "counter",
                "WebSocket upgrades refused (origin not allowed, or not a valid upgrade)",
                g(&self.upgrades_refused),
            ),
            (
                "calling_pending_evicted_total",
                "counter",
                "Connections closed before their login to make room for newer ones",
                g(&self.pending_evicted),
            ),
            (
                "calling_pending_logins",
                "gauge",
                "Connections accepted and not logged in yet",
                g(&self.pending_logins),
            ),
        ];
        let mut out = String::with_capacity(2048);
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

fn g(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}
