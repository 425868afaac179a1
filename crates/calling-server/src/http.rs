//! Every connection starts here: HTTP/1.1, parsed by hyper, decides
//! between the WebSocket session on `/ws` ([`crate::conn`]) and the few
//! plain paths served on the same port (health, metrics, the demo page's
//! files, the demo UserSig).
//!
//! A WebSocket upgrade is checked here (method, `Upgrade` and
//! `Connection` tokens, version 13, key, and the page's `Origin` against
//! [`Config::allowed_origins`](crate::Config::allowed_origins)), answered
//! `101`, and the connection is taken back from hyper with whatever the
//! client sent after its request (a pipelined login is not lost). Anything
//! else gets a complete answer, `HEAD` included, and the connection closes.
//!
//! hyper reads only when the socket is readable, so a request that
//! arrives a byte at a time costs nothing while it waits; the whole
//! request phase shares the login deadline, and before the login the
//! connection may send only [`Config::pre_login_bytes`](crate::Config::pre_login_bytes)
//! in all (see [`Stream::limit_reads`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use crate::admission::Ticket;
use crate::metrics::Metrics;
use crate::stream::{Io, Stream, is_read_limit};
use crate::{Shared, conn, web};

/// Longest request head hyper buffers (its smallest allowed); a longer
/// one is answered `431`.
const MAX_HEAD: usize = 8 * 1024;

type Body = Full<Bytes>;

/// What one request is answered from.
struct Ctx<'a> {
    shared: &'a Shared,
    /// The admin listener: health and metrics only.
    admin: bool,
    /// Set by a `/ws` request answered `101`.
    upgrade: &'a Mutex<Option<OnUpgrade>>,
}

/// Serves one accepted connection: completes the TLS handshake when the
/// server speaks TLS, answers the HTTP request, and hands an accepted
/// WebSocket upgrade to [`conn::serve`]. The TLS handshake and the request
/// share one login deadline, so a peer that never sends a ClientHello is
/// dropped like one that never sends its request. Both are boxed: a
/// connection's task is allocated at the size of its largest state, and
/// an idle session should not carry their room all its life.
pub(crate) async fn handle(tcp: TcpStream, peer: SocketAddr, ticket: Ticket, shared: Arc<Shared>) {
    // Until its login the connection may be told to make room for a newer
    // one: then it just ends (from the WebSocket on, the session watches).
    let evicted = ticket.eviction();
    let upgraded = tokio::select! {
        () = evicted.notified() => None,
        s = Box::pin(upgrade(tcp, peer, &shared)) => s,
    };
    drop(evicted);
    match upgraded {
        Some(stream) => conn::serve(stream, peer, ticket, shared).await,
        None => debug!(%peer, "connection ended before its WebSocket"),
    }
}

/// TLS when the server speaks it, then the HTTP request: the connection
/// if it was upgraded to a WebSocket.
async fn upgrade(tcp: TcpStream, peer: SocketAddr, shared: &Shared) -> Option<Stream> {
    let until = Instant::now() + shared.config.login_timeout;
    let io = match &shared.tls {
        None => {
            // hyper sets aside its buffers (16 KiB) before it reads: wait
            // for the first byte so that silent connections hold none.
            // (`peek`, not `readable`: a new socket's readiness may be
            // reported before anything arrived.)
            let mut first = [0u8; 1];
            match tokio::time::timeout_at(until, tcp.peek(&mut first)).await {
                Ok(Ok(1..)) => Io::Plain(tcp),
                _ => return None,
            }
        }
        Some(tls) => {
            match tokio::time::timeout_at(until, Box::pin(tls.acceptor().accept(tcp))).await {
                Ok(Ok(s)) => Io::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    Metrics::inc(&shared.metrics.tls_handshake_failures);
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    Metrics::inc(&shared.metrics.tls_handshake_failures);
                    debug!(%peer, "TLS handshake timed out");
                    return None;
                }
            }
        }
    };
    let mut stream = Stream::new(io);
    // Until the login, what the connection may send is bounded: the
    // request, the login, not much more.
    stream.limit_reads(shared.config.pre_login_bytes);
    request(stream, peer, shared, false, until).await
}

/// Serves one connection of the admin listener: `/healthz` and
/// `/metrics`, 404 for anything else (plain HTTP, no caps).
pub(crate) async fn handle_admin(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let until = Instant::now() + shared.config.login_timeout;
    let stream = Stream::new(Io::Plain(tcp));
    let _ = request(stream, peer, &shared, true, until).await;
}

/// Reads and answers one request by `until`. Returns the connection when
/// it was upgraded to a WebSocket, with what the client sent after the
/// request put back in front.
async fn request(
    stream: Stream,
    peer: SocketAddr,
    shared: &Shared,
    admin: bool,
    until: Instant,
) -> Option<Stream> {
    let upgrade = Mutex::new(None);
    let ctx = Ctx {
        shared,
        admin,
        upgrade: &upgrade,
    };
    let service = hyper::service::service_fn(|req| {
        let response = answer(req, &ctx);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    // One request per connection: every plain answer says
    // `Connection: close` (hyper's own keep-alive switch would add `close`
    // to the upgrade's `Connection: Upgrade` too).
    let connection = http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    match tokio::time::timeout_at(until, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            if read_limit_in(&e) {
                Metrics::inc(&shared.metrics.pre_login_overruns);
            }
            debug!(%peer, error = %e, "HTTP request failed");
            return None;
        }
        Err(_) => {
            debug!(%peer, "HTTP request timed out");
            return None;
        }
    }
    let pending = upgrade.lock().ok()?.take()?;
    let upgraded = match tokio::time::timeout_at(until, pending).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "WebSocket upgrade failed");
            return None;
        }
        Err(_) => return None,
    };
    let Ok(parts) = upgraded.downcast::<TokioIo<Stream>>() else {
        // Cannot happen: hyper hands back the transport it was given.
        debug!(%peer, "upgraded connection of an unexpected type");
        return None;
    };
    let mut stream = parts.io.into_inner();
    stream.put_back(&parts.read_buf);
    Some(stream)
}

/// Whether a read past the pre-login budget is among `e`'s causes.
fn read_limit_in(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(is_read_limit)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The answer to one request.
fn answer(mut req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Body> {
    let shared = ctx.shared;
    let cfg = &shared.config;
    let path = req.uri().path();
    if path == "/ws" && !ctx.admin {
        return websocket(&mut req, ctx);
    }
    // Counted first, so that /metrics includes the request reading it.
    Metrics::inc(&shared.metrics.http_requests);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    match path {
        "/healthz" => match cfg.hub.health() {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from(format!("unavailable: {why}\n")),
            ),
        },
        // With an admin listener, metrics are served there only.
        "/metrics" if ctx.admin || cfg.admin_listen.is_none() => {
            let body = shared.metrics.render(cfg.hub.online(), cfg.hub.rooms());
            respond(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                Bytes::from(body),
            )
        }
        _ if ctx.admin => not_found(),
        "/demo/usersig" => {
            let (status, body) = web::demo_usersig(cfg, req.uri().query().unwrap_or(""));
            respond(status, "application/json", Bytes::from(body))
        }
        path => match web::asset(path) {
            Some(asset) => {
                let mut res = respond(
                    StatusCode::OK,
                    asset.content_type,
                    Bytes::from_static(asset.body.as_bytes()),
                );
                if asset.cross_origin {
                    // Pages of any origin may load the client script.
                    res.headers_mut().insert(
                        header::ACCESS_CONTROL_ALLOW_ORIGIN,
                        HeaderValue::from_static("*"),
                    );
                }
                res
            }
            None => not_found(),
        },
    }
}

/// Checks a request to `/ws` and answers `101 Switching Protocols`, with
/// the upgrade left in the context for [`request`] to take over; or
/// refuses it with a status that says why.
fn websocket(req: &mut Request<Incoming>, ctx: &Ctx<'_>) -> Response<Body> {
    let refused = |res: Response<Body>| {
        Metrics::inc(&ctx.shared.metrics.upgrades_refused);
        res
    };
    if req.method() != Method::GET {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "/ws takes GET only\n");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return refused(res);
    }
    let headers = req.headers();
    if !has_token(headers, &header::CONNECTION, "upgrade")
        || !has_token(headers, &header::UPGRADE, "websocket")
    {
        let mut res = text(
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket endpoint: send an Upgrade: websocket request\n",
        );
        let h = res.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.append(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return refused(res);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut res = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: 13 only\n",
        );
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return refused(res);
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| valid_key(k.as_bytes()))
    else {
        return refused(text(
            StatusCode::BAD_REQUEST,
            "missing or malformed Sec-WebSocket-Key\n",
        ));
    };
    let tls = ctx.shared.tls.is_some();
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin_allowed(
            origin,
            headers.get(header::HOST),
            tls,
            &ctx.shared.config.allowed_origins,
        )
    {
        debug!(origin = ?origin, "WebSocket upgrade from an origin not allowed");
        return refused(text(
            StatusCode::FORBIDDEN,
            "this origin may not open a WebSocket here (see --allow-origin)\n",
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return refused(text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key\n"));
    };
    let on_upgrade = hyper::upgrade::on(&mut *req);
    if let Ok(mut slot) = ctx.upgrade.lock() {
        *slot = Some(on_upgrade);
    }
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// Whether the comma-separated header `name` holds `token` (any case).
fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A `Sec-WebSocket-Key`: the base64 of 16 bytes.
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// Whether a page of `origin` may open a WebSocket: it is one of
/// `allowed` (or `allowed` holds `*`), or it names this server, the host
/// the request was sent to (`Host`). The scheme is not compared, so that a
/// page served over https by a proxy in front of a plain listener is the
/// server's own; default ports are.
fn origin_allowed(
    origin: &HeaderValue,
    host: Option<&HeaderValue>,
    tls: bool,
    allowed: &[String],
) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        // `null` (sandboxed frames, file:// pages) and the like.
        return false;
    };
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origin_default = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return false,
    };
    let host_default = if tls { ":443" } else { ":80" };
    let origin_authority = authority.strip_suffix(origin_default).unwrap_or(authority);
    let host_authority = host
        .strip_suffix(host_default)
        .or_else(|| host.strip_suffix(origin_default))
        .unwrap_or(host);
    origin_authority.eq_ignore_ascii_case(host_authority)
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, "text/plain", Bytes::from_static(body.as_bytes()))
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an `async fn` of four arguments returns.
    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connection's task is allocated at the size of this future's
    /// largest state, for as long as the connection lives: an idle session
    /// must not carry room for a handshake or a handler (those are boxed
    /// while they run).
    #[test]
    fn a_connection_task_stays_small() {
        let size = future_size(super::handle);
        assert!(size <= 2 * 1024, "a connection's future is {size} bytes");
    }

    fn allowed(origin: &str, host: &str, tls: bool, list: &[&str]) -> bool {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        origin_allowed(
            &HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("")),
            Some(&HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static(""))),
            tls,
            &list,
        )
    }

    #[test]
    fn the_servers_own_origin_is_allowed_and_others_are_not() {
        assert!(allowed(
            "http://calls.example:8080",
            "calls.example:8080",
            false,
            &[]
        ));
        assert!(allowed("https://calls.example", "calls.example", true, &[]));
        assert!(allowed(
            "https://calls.example",
            "calls.example:443",
            true,
            &[]
        ));
        assert!(allowed(
            "http://calls.example",
            "calls.example:80",
            false,
            &[]
        ));
        // A TLS-terminating proxy in front of a plain listener.
        assert!(allowed(
            "https://calls.example",
            "calls.example",
            false,
            &[]
        ));
        assert!(allowed(
            "HTTP://Calls.Example:8080",
            "calls.example:8080",
            false,
            &[]
        ));

        assert!(!allowed(
            "http://evil.example:8080",
            "calls.example:8080",
            false,
            &[]
        ));
        assert!(!allowed(
            "http://calls.example:8081",
            "calls.example:8080",
            false,
            &[]
        ));
        assert!(!allowed(
            "http://calls.example.evil",
            "calls.example",
            false,
            &[]
        ));
        assert!(!allowed("null", "calls.example", false, &[]));
        assert!(!allowed("file://", "calls.example", false, &[]));
    }

    #[test]
    fn configured_origins_are_allowed() {
        let list = ["https://app.example", "http://localhost:3000/"];
        assert!(allowed("https://app.example", "calls.example", true, &list));
        assert!(allowed(
            "http://localhost:3000",
            "calls.example",
            true,
            &list
        ));
        assert!(!allowed(
            "https://app.example:444",
            "calls.example",
            true,
            &list
        ));
        assert!(allowed(
            "https://anything.example",
            "calls.example",
            true,
            &["*"]
        ));
        assert!(allowed("null", "calls.example", true, &["*"]));
    }

    #[test]
    fn websocket_keys_are_checked() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!valid_key(b"not base64 at all!!!!!!!"));
        assert!(!valid_key(b""));
    }
}
