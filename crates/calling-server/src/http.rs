//! Every connection starts here: the request line decides between the
//! WebSocket session ([`crate::conn`]) and the few plain HTTP paths served
//! on the same port, answered here.
//!
//! The request line is read ahead and replayed (see [`crate::stream`]) so
//! that `/ws` requests go to tungstenite's handshake untouched; anything else gets a small HTTP/1.1
//! answer. Hand-rolled on purpose: a few fixed GET paths (two
//! endpoints, the demo page's embedded files, the demo UserSig) do not
//! justify an HTTP framework in front of every WebSocket.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tracing::debug;

use crate::admission::Ticket;
use crate::metrics::Metrics;
use crate::stream::{Io, Stream};
use crate::{Shared, conn, web};

/// Longest request head we accept for plain HTTP paths.
const MAX_HEAD: usize = 8 * 1024;

/// Where a new connection goes.
enum Route {
    /// A WebSocket upgrade on `/ws`.
    WebSocket,
    /// A plain HTTP request, answered here.
    Page(Page),
}

/// The plain HTTP answers.
enum Page {
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET` of one of the demo page's files.
    Asset(&'static web::Asset),
    /// `GET /demo/usersig?…`, with the raw query string.
    DemoUserSig(String),
    /// Anything else: 404.
    NotFound,
}

/// Serves one accepted connection: completes the TLS handshake when the
/// server speaks TLS, hands a WebSocket upgrade to [`conn::serve`], answers
/// anything else and closes. The TLS handshake plus the request line share
/// one login timeout (so a peer that never sends a ClientHello is dropped
/// like one that never logs in); answering a plain request gets another.
pub(crate) async fn handle(tcp: TcpStream, peer: SocketAddr, ticket: Ticket, shared: Arc<Shared>) {
    let cfg = &shared.config;
    let deadline = cfg.login_timeout;
    let until = tokio::time::Instant::now() + deadline;
    let io = match &shared.tls {
        None => Io::Plain(tcp),
        Some(tls) => {
            match tokio::time::timeout_at(until, Box::pin(tls.acceptor().accept(tcp))).await {
                Ok(Ok(s)) => Io::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    Metrics::inc(&shared.metrics.tls_handshake_failures);
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    Metrics::inc(&shared.metrics.tls_handshake_failures);
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let mut stream = Stream::new(io);
    let Some(route) = Box::pin(route(&mut stream, until)).await else {
        return;
    };
    let page = match route {
        Route::WebSocket => return conn::serve(stream, peer, ticket, shared).await,
        // With an admin listener, metrics are served there only.
        Route::Page(Page::Metrics) if cfg.admin_listen.is_some() => Page::NotFound,
        Route::Page(page) => page,
    };
    Box::pin(answer(stream, page, &shared)).await;
}

/// Serves one connection of the admin listener: `/healthz` and
/// `/metrics`, 404 for anything else (plain HTTP, no caps).
pub(crate) async fn handle_admin(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let until = tokio::time::Instant::now() + shared.config.login_timeout;
    let mut stream = Stream::new(Io::Plain(tcp));
    let Some(route) = route(&mut stream, until).await else {
        debug!(%peer, "admin request unreadable");
        return;
    };
    let page = match route {
        Route::Page(p @ (Page::Health | Page::Metrics)) => p,
        _ => Page::NotFound,
    };
    answer(stream, page, &shared).await;
}

/// Writes the answer to a plain HTTP request and closes.
async fn answer(stream: Stream, page: Page, shared: &Shared) {
    let cfg = &shared.config;
    let deadline = cfg.login_timeout;
    // Counted first, so that /metrics includes the request reading it.
    Metrics::inc(&shared.metrics.http_requests);
    let (status, content_type, body) = match page {
        Page::Health => ("200 OK", "text/plain", Cow::Borrowed("ok\n")),
        Page::Metrics => {
            let body = shared.metrics.render(cfg.hub.online(), cfg.hub.rooms());
            ("200 OK", "text/plain; version=0.0.4", Cow::Owned(body))
        }
        Page::Asset(asset) => ("200 OK", asset.content_type, Cow::Borrowed(asset.body)),
        Page::DemoUserSig(query) => {
            let (status, body) = web::demo_usersig(cfg, &query);
            (status, "application/json", Cow::Owned(body))
        }
        Page::NotFound => ("404 Not Found", "text/plain", Cow::Borrowed("not found\n")),
    };
    respond(stream, status, content_type, &body, deadline).await;
}

/// Reads the request line (kept in `stream` for whoever reads next) and
/// decides the route. `None` when the peer sent nothing usable by `until`.
async fn route(stream: &mut Stream, until: tokio::time::Instant) -> Option<Route> {
    const LINE: usize = 512;
    let line = tokio::time::timeout_at(until, async {
        loop {
            let ahead = stream.ahead();
            if ahead.first() == Some(&0x16) {
                // A TLS ClientHello on a plain listener: close at once so
                // the client sees a failed handshake, not a stall.
                return None;
            }
            if let Some(end) = ahead.iter().position(|&b| b == b'\n') {
                return Some(end);
            }
            if ahead.len() >= LINE {
                // A request line longer than this: not one of ours.
                return Some(LINE);
            }
            let want = LINE - ahead.len();
            if stream.fill(want).await.ok()? == 0 {
                return None;
            }
        }
    })
    .await
    .ok()??;
    let buf = stream.ahead();
    let text = std::str::from_utf8(&buf[..line]).unwrap_or("");
    let mut parts = text.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Some(match (method, path) {
        ("GET", "/ws") => Route::WebSocket,
        ("GET", "/healthz") => Route::Page(Page::Health),
        ("GET", "/metrics") => Route::Page(Page::Metrics),
        ("GET", "/demo/usersig") => Route::Page(Page::DemoUserSig(query.to_owned())),
        ("GET", path) => Route::Page(web::asset(path).map_or(Page::NotFound, Page::Asset)),
        _ => Route::Page(Page::NotFound),
    })
}

/// Reads the request head, writes a complete response and closes.
async fn respond(
    mut stream: Stream,
    status: &str,
    content_type: &str,
    body: &str,
    deadline: Duration,
) {
    let _ = tokio::time::timeout(deadline, async {
        // Consume the request so closing does not reset the connection
        // before the client has read the answer.
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
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
        assert!(size <= 3 * 1024, "a connection's future is {size} bytes");
    }
}
