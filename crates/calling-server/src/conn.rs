//! One client connection: handshake, login, then frames until it closes.
//!
//! Each connection is one task that owns its WebSocket and selects over the
//! socket, its outbound queue (fed by the hub), one deadline timer and the
//! shutdown signal. Keeping it to a single task and a small queue is what
//! keeps an idle logged-in connection within a few KiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use calling_core::{MAX_USER_ID_LEN, UserId};
use calling_signal::protocol::{
    ClientFrame, ErrorCode, PROTOCOL_VERSION, ServerFrame, close_code, peek_id, valid_room,
};
use calling_signal::rate::TokenBucket;
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::{debug, info};

use crate::Shared;
use crate::admission::Ticket;
use crate::auth::VerifiedLogin;
use crate::hub::{
    Outbound, OutboundQueue, OutboundReceiver, OverflowWatch, Received, RoomLimits, SessionHandle,
    SessionId,
};
use crate::metrics::Metrics;
use crate::rates::UserRate;
use crate::stream::{Stream, is_read_limit};

type Ws = WebSocketStream<Stream>;

/// Most bytes read and dropped after a 1009 close, so that a client that
/// overran a limit by a little still gets the close (and not a reset),
/// while one that goes on writing does not keep the server reading.
const DRAIN_MAX_BYTES: usize = 64 * 1024;

/// Decrements the open-connections gauge however the task ends.
struct OpenGuard<'a>(&'a Metrics);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// Serves one WebSocket connection, from the accepted upgrade until it
/// closes. Reads from `stream` are still limited to the pre-login budget.
pub(crate) async fn serve(stream: Stream, peer: SocketAddr, ticket: Ticket, shared: Arc<Shared>) {
    let cfg = &shared.config;
    let m = &shared.metrics;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_bytes)
        .write_buffer_size(0)
        // What the socket does not take waits here, up to the queue's
        // budget (and always one largest frame); past it the write fails
        // and the connection is dropped.
        .max_write_buffer_size(
            cfg.outbound_queue_bytes
                .max(cfg.limits.max_frame_bytes.saturating_mul(2) + 4096),
        )
        .max_message_size(Some(cfg.hard_frame_bytes))
        .max_frame_size(Some(cfg.hard_frame_bytes));
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config)).await;
    Metrics::inc(&m.connections_accepted);
    m.connections_open.inc();
    let _open = OpenGuard(m);

    let (tx, rx) = OutboundQueue::new(cfg.outbound_queue_bytes);
    let mut conn = Conn {
        shared: &shared,
        peer,
        ws,
        tx,
        // Before the login this signals an eviction, after it a kick.
        kick: ticket.eviction(),
        session: None,
        ticket,
        user_rate: None,
        bucket: TokenBucket::new(
            f64::from(cfg.limits.rate_per_sec),
            f64::from(cfg.limits.rate_burst),
            Instant::now(),
        ),
        fanout: TokenBucket::new(
            cfg.fanout_bytes_per_sec as f64,
            cfg.fanout_burst_bytes as f64,
            Instant::now(),
        ),
    };
    conn.run(rx).await;
    if let Some(rate) = conn.user_rate.take() {
        shared.rates.session_end(rate, Instant::now());
    }
    if let Some(s) = conn.session.take() {
        cfg.hub.unregister(&s.user, s.id).await;
        debug!(%peer, user = %s.user, "session ended");
    }
}

struct Session {
    user: UserId,
    id: SessionId,
    expires: Instant,
}

struct Conn<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    ws: Ws,
    tx: OutboundQueue,
    kick: Arc<Notify>,
    session: Option<Session>,
    /// This connection's place in the server's connection caps.
    ticket: Ticket,
    /// The logged-in user's bucket, shared with its other sessions; before
    /// login, frames draw from `bucket`, this connection's own.
    user_rate: Option<UserRate>,
    bucket: TokenBucket,
    /// Bytes this connection may still send out through `send`, counted
    /// once per recipient.
    fanout: TokenBucket,
}

/// What to do after handling an input.
enum Flow {
    Continue,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The socket is gone; nothing more to write.
    Gone,
}

impl Flow {
    /// Closes with `code` after a frame was written, unless the socket is
    /// already gone.
    fn and_close(self, code: u16, reason: &'static str) -> Flow {
        match self {
            Flow::Continue => Flow::Close(code, reason),
            Flow::Close(..) | Flow::Gone => self,
        }
    }
}

impl Conn<'_> {
    async fn run(&mut self, mut rx: OutboundReceiver) {
        let cfg = &self.shared.config;
        let login_deadline = Instant::now() + cfg.login_timeout;
        let mut last_seen = Instant::now();
        let timer = tokio::time::sleep_until(login_deadline);
        tokio::pin!(timer);
        let mut stop = self.shared.shutdown.clone();
        let kick = self.kick.clone();
        let overflow = rx.overflow_watch();
        if *stop.borrow() {
            Box::pin(self.close(close_code::GOING_AWAY, "server shutting down")).await;
            return;
        }
        let flow = loop {
            let flow = tokio::select! {
                biased;
                _ = stop.changed() => Flow::Close(close_code::GOING_AWAY, "server shutting down"),
                () = kick.notified() => match self.session {
                    None => {
                        debug!(peer = %self.peer, "closed before its login to make room for a newer connection");
                        Flow::Gone
                    }
                    Some(_) => Box::pin(self.on_kick()).await,
                },
                out = rx.recv() => match out {
                    Received::Frame(first) => Box::pin(self.on_outbound(first, &mut rx, &overflow)).await,
                    Received::Overflowed => self.on_overflow(),
                },
                msg = self.ws.next() => {
                    last_seen = Instant::now();
                    Box::pin(self.on_ws(msg)).await
                }
                () = &mut timer => self.on_timer(last_seen),
            };
            match flow {
                Flow::Continue => {}
                other => break other,
            }
            let next = match &self.session {
                None => login_deadline,
                Some(s) => (last_seen + cfg.heartbeat_timeout).min(s.expires),
            };
            // Deadlines only move later while frames arrive, so the timer is
            // left to fire early and re-armed then: one timer-wheel update per
            // heartbeat period instead of one per frame.
            if timer.is_elapsed() || next < timer.deadline() {
                timer.as_mut().reset(next);
            }
        };
        match flow {
            Flow::Close(code, reason) => Box::pin(self.close(code, reason)).await,
            Flow::Continue | Flow::Gone => {}
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        if code == close_code::LOGIN_EXPIRED {
            let _ = self.write(&ServerFrame::LoginExpired {}).await;
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        };
        // Finish the closing handshake: read (and drop) what the peer still
        // sends until it answers our close. Dropping the socket at once would
        // reset a peer that is writing, and it could lose our last frames
        // (a kicked-out notice) and reconnect instead. Bounded: a peer that
        // stops reading or answering must not hold the task.
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
        .await;
        // Past the pre-login limit, or after a frame over the hard limit,
        // the WebSocket reads no more: drain the rest raw, unparsed, so
        // that a peer still writing gets the answer and the close rather
        // than the reset that unread data makes.
        if code == close_code::MESSAGE_TOO_BIG || self.ws.get_ref().limit_reached() {
            self.ws
                .get_mut()
                .discard_input(Duration::from_secs(1), DRAIN_MAX_BYTES)
                .await;
        }
    }

    fn on_timer(&mut self, last_seen: Instant) -> Flow {
        let now = Instant::now();
        match &self.session {
            None => {
                debug!(peer = %self.peer, "no login in time");
                Flow::Close(close_code::LOGIN_TIMEOUT, "login timeout")
            }
            Some(s) if now >= s.expires => Flow::Close(close_code::LOGIN_EXPIRED, "login expired"),
            Some(s) if now >= last_seen + self.shared.config.heartbeat_timeout => {
                Metrics::inc(&self.shared.metrics.heartbeat_timeouts);
                info!(peer = %self.peer, user = %s.user, "heartbeat timeout");
                Flow::Close(close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout")
            }
            Some(_) => Flow::Continue,
        }
    }

    /// Writes one frame now. A peer that stops reading would block this
    /// task (and its timers) forever, so the write is bounded by the
    /// heartbeat timeout; past it the connection is given up.
    async fn write(&mut self, frame: &ServerFrame) -> bool {
        let limit = self.shared.config.heartbeat_timeout;
        let send = self
            .ws
            .send(Message::Text(Utf8Bytes::from(frame.to_json())));
        matches!(tokio::time::timeout(limit, send).await, Ok(Ok(())))
    }

    /// Writes `frame` and goes on, or gives up if it could not be written.
    async fn answer(&mut self, frame: &ServerFrame) -> Flow {
        if self.write(frame).await {
            Flow::Continue
        } else {
            Flow::Gone
        }
    }

    async fn refuse(&mut self, id: Option<String>, code: ErrorCode, message: String) -> Flow {
        Metrics::inc(&self.shared.metrics.frame_errors);
        debug!(peer = %self.peer, %code, %message, "frame refused");
        self.answer(&ServerFrame::error(id, code, message)).await
    }

    async fn on_kick(&mut self) -> Flow {
        Metrics::inc(&self.shared.metrics.kicks);
        if let Some(s) = &self.session {
            info!(peer = %self.peer, user = %s.user, "kicked out by a newer login");
        }
        // The hub has already replaced this session; do not unregister the
        // newer one on the way out.
        self.session = None;
        let kicked = ServerFrame::KickedOut {
            reason: "logged in elsewhere".into(),
        };
        self.answer(&kicked)
            .await
            .and_close(close_code::KICKED_OUT, "kicked out")
    }

    /// Frames for this client were refused for lack of room in its queue:
    /// it is not reading, and it has lost frames. Cut it off so that it
    /// reconnects and learns the state again, rather than holding server
    /// memory and going on unaware.
    fn on_overflow(&mut self) -> Flow {
        Metrics::inc(&self.shared.metrics.slow_readers_cut);
        info!(peer = %self.peer, "client too slow: outbound queue over its byte budget");
        Flow::Close(close_code::TOO_SLOW, "too slow")
    }

    async fn on_outbound(
        &mut self,
        first: Outbound,
        rx: &mut OutboundReceiver,
        overflow: &OverflowWatch,
    ) -> Flow {
        let limit = self.shared.config.heartbeat_timeout;
        let ws = &mut self.ws;
        let metrics = &self.shared.metrics;
        // Batch whatever is queued into one flush, bounded like write().
        let batch = async move {
            let mut next = Some(first);
            while let Some(out) = next.take() {
                match out {
                    Outbound::Frame(bytes) => ws.feed(Message::Text(bytes)).await?,
                    Outbound::Message(bytes, read_at) => {
                        ws.feed(Message::Text(bytes)).await?;
                        Metrics::observe(&metrics.message_delivery, read_at.elapsed());
                    }
                }
                next = rx.try_recv();
            }
            ws.flush().await
        };
        // A write that waits on a client that does not read must not keep
        // the connection from noticing that its queue overflowed.
        let written = tokio::select! {
            r = tokio::time::timeout(limit, batch) => r,
            () = overflow.wait() => return self.on_overflow(),
        };
        match written {
            Ok(Ok(())) => Flow::Continue,
            // The socket took nothing for a while and what waits for it
            // reached the write buffer's cap: the same budget as the
            // queue's, met on the other side of it.
            Ok(Err(WsError::WriteBufferFull(_))) => {
                Metrics::inc(&self.shared.metrics.slow_readers_cut);
                info!(peer = %self.peer, "client too slow: write buffer over its byte budget");
                Flow::Gone
            }
            Ok(Err(_)) => Flow::Gone,
            Err(_) => {
                Metrics::inc(&self.shared.metrics.slow_readers_cut);
                info!(peer = %self.peer, "client stopped reading; dropping it");
                Flow::Gone
            }
        }
    }

    async fn on_ws(&mut self, msg: Option<Result<Message, WsError>>) -> Flow {
        let bytes = match msg {
            None => return Flow::Gone,
            // After these two the read side is unusable (tungstenite fuses
            // the stream), so answer with a typed error, then close.
            Some(Err(WsError::Capacity(e))) => {
                let message = format!("frame over the hard limit: {e}");
                return self
                    .refuse(None, ErrorCode::TooLarge, message)
                    .await
                    .and_close(close_code::MESSAGE_TOO_BIG, "frame too large");
            }
            Some(Err(WsError::Utf8(e))) => {
                let message = format!("text frame is not valid UTF-8: {e}");
                return self
                    .refuse(None, ErrorCode::BadFrame, message)
                    .await
                    .and_close(close_code::INVALID_PAYLOAD, "invalid UTF-8");
            }
            Some(Err(WsError::Io(e))) if is_read_limit(&e) => {
                Metrics::inc(&self.shared.metrics.pre_login_overruns);
                let message = format!(
                    "more than {} bytes before logging in",
                    self.shared.config.pre_login_bytes
                );
                return self
                    .refuse(None, ErrorCode::TooLarge, message)
                    .await
                    .and_close(close_code::MESSAGE_TOO_BIG, "too much before login");
            }
            Some(Err(e)) => {
                debug!(peer = %self.peer, error = %e, "websocket error");
                return Flow::Gone;
            }
            Some(Ok(Message::Text(t))) => t.into(),
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Close(_))) => return Flow::Gone,
            // WebSocket pings are answered by tungstenite and count as
            // liveness (the caller already noted the time).
            Some(Ok(_)) => return Flow::Continue,
        };
        // The rate limit comes first: a flood of frames, large or not, is
        // refused for its rate before anything else looks at it.
        let now = Instant::now();
        let allowed = match &self.user_rate {
            Some(rate) => rate.try_take(now),
            None => self.bucket.try_take(now),
        };
        let limits = &self.shared.config.limits;
        if !allowed {
            Metrics::inc(&self.shared.metrics.rate_limited);
            let id = (bytes.len() <= limits.max_frame_bytes)
                .then(|| std::str::from_utf8(&bytes).ok().and_then(peek_id))
                .flatten();
            return self
                .refuse(id, ErrorCode::RateLimited, "rate limit exceeded".into())
                .await;
        }
        if bytes.len() > limits.max_frame_bytes {
            let message = format!(
                "frame of {} bytes exceeds max_frame_bytes {}",
                bytes.len(),
                limits.max_frame_bytes
            );
            return self.refuse(None, ErrorCode::TooLarge, message).await;
        }
        let frame = match ClientFrame::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                let id = std::str::from_utf8(&bytes).ok().and_then(peek_id);
                return self.refuse(id, e.code(), e.to_string()).await;
            }
        };
        self.on_frame(frame).await
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Flow {
        // Before login only `login` itself is served.
        let Some(session) = &self.session else {
            return match frame {
                ClientFrame::Login {
                    id,
                    sdk_app_id,
                    user_id,
                    user_sig,
                    protocol,
                } => {
                    self.login(id, sdk_app_id, user_id, user_sig, protocol)
                        .await
                }
                ClientFrame::Send { id, .. } => self.not_logged_in(Some(id)).await,
                ClientFrame::Ping { id }
                | ClientFrame::Join { id, .. }
                | ClientFrame::Allow { id, .. }
                | ClientFrame::Leave { id, .. }
                | ClientFrame::IceRefresh { id }
                | ClientFrame::Logout { id } => self.not_logged_in(id).await,
            };
        };
        let sid = session.id;
        match frame {
            ClientFrame::Ping { id } => self.answer(&ServerFrame::Pong { id }).await,
            ClientFrame::Login { id, .. } => {
                self.refuse(id, ErrorCode::AlreadyLoggedIn, "already logged in".into())
                    .await
            }
            ClientFrame::Logout { .. } => Flow::Close(close_code::NORMAL, "logout"),
            ClientFrame::IceRefresh { id } => {
                // Issued for the session's verified user, like login_ok's:
                // a client can renew its own credentials, no one else's.
                let now = calling_usersig::now_unix();
                let ice_servers = self.shared.config.ice.servers_for(&session.user, now);
                self.answer(&ServerFrame::IceServers { id, ice_servers })
                    .await
            }
            ClientFrame::Send { id, to, payload } => {
                let from = session.user.clone();
                self.route(from, id, to, payload).await
            }
            ClientFrame::Join { id, room, allow } => {
                let user = session.user.clone();
                self.join(user, sid, id, room, allow).await
            }
            ClientFrame::Allow { id, room, users } => {
                let user = session.user.clone();
                self.allow(user, sid, id, room, users).await
            }
            ClientFrame::Leave { id, room } => {
                let hub = &self.shared.config.hub;
                match hub.leave(&room, &session.user, sid).await {
                    Ok(()) => self.answer(&ServerFrame::Left { id, room }).await,
                    Err(code) => {
                        let message = format!("cannot leave room {room:?}");
                        self.refuse(id, code, message).await
                    }
                }
            }
        }
    }

    async fn not_logged_in(&mut self, id: Option<String>) -> Flow {
        self.refuse(id, ErrorCode::NotLoggedIn, "log in first".into())
            .await
    }

    async fn login(
        &mut self,
        id: Option<String>,
        sdk_app_id: u64,
        user_id: String,
        user_sig: String,
        protocol: u32,
    ) -> Flow {
        let cfg = &self.shared.config;
        let m = &self.shared.metrics;
        let (user, verified) = match check_login(cfg, sdk_app_id, &user_id, &user_sig, protocol) {
            Ok(ok) => ok,
            Err((code, message)) => {
                Metrics::inc(&m.logins_failed);
                Metrics::inc(&m.frame_errors);
                // A flood of bad logins must not flood the log: a few a
                // second at INFO, the rest at DEBUG, all in the metrics.
                match self.shared.refusal_log.allow(std::time::Instant::now()) {
                    Some(held_back) => info!(
                        peer = %self.peer, ?user_id, %code, more_since_last = held_back,
                        "login refused"
                    ),
                    None => debug!(peer = %self.peer, ?user_id, %code, "login refused"),
                }
                return self
                    .answer(&ServerFrame::error(id, code, message))
                    .await
                    .and_close(close_code::LOGIN_FAILED, "login failed");
            }
        };
        let sid = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let valid_for = Duration::from_secs(
            verified
                .expires_at
                .saturating_sub(calling_usersig::now_unix()),
        );
        // Cap far-future expiries so Instant arithmetic cannot overflow.
        let expires = Instant::now() + valid_for.min(Duration::from_secs(10 * 365 * 86_400));
        // No longer waiting, so no longer closed to make room; unless that
        // just happened.
        if !self.ticket.logged_in() {
            debug!(peer = %self.peer, "closed before its login to make room for a newer connection");
            return Flow::Gone;
        }
        let registered = cfg
            .hub
            .register(
                &user,
                SessionHandle {
                    id: sid,
                    tx: self.tx.clone(),
                    kick: self.kick.clone(),
                },
            )
            .await;
        if let Err(code) = registered {
            Metrics::inc(&m.logins_failed);
            Metrics::inc(&m.frame_errors);
            info!(peer = %self.peer, %user, %code, "login refused: the hub cannot take the session");
            let message = "the cluster is unavailable; try again".to_string();
            return self
                .answer(&ServerFrame::error(id, code, message))
                .await
                .and_close(close_code::LOGIN_FAILED, "login failed");
        }
        Metrics::inc(&m.logins_ok);
        Metrics::observe(&m.login_duration, self.ticket.admitted().elapsed());
        debug!(peer = %self.peer, %user, session = sid, "logged in");
        let ok = ServerFrame::LoginOk {
            id,
            user_id: user.clone(),
            protocol: PROTOCOL_VERSION,
            heartbeat_interval_ms: duration_ms(cfg.heartbeat_interval),
            heartbeat_timeout_ms: duration_ms(cfg.heartbeat_timeout),
            expires_at: verified.expires_at,
            limits: cfg.limits.clone(),
            ice_servers: cfg.ice.servers_for(&user, calling_usersig::now_unix()),
        };
        if self.user_rate.is_none() {
            self.user_rate = Some(self.shared.rates.session_start(&user, Instant::now()));
        }
        // Logged in: bounded by the frame limits from now on rather than
        // the pre-login budget.
        self.ws.get_mut().unlimit_reads();
        self.session = Some(Session {
            user,
            id: sid,
            expires,
        });
        self.answer(&ok).await
    }

    async fn route(
        &mut self,
        from: UserId,
        id: String,
        mut to: Vec<String>,
        payload: Box<RawValue>,
    ) -> Flow {
        // The frame was parsed just now.
        let read_at = std::time::Instant::now();
        let limits = &self.shared.config.limits;
        if to.is_empty() || to.len() > limits.max_recipients {
            let message = format!(
                "a send needs 1 to {} recipients, got {}",
                limits.max_recipients,
                to.len()
            );
            return self
                .refuse(Some(id), ErrorCode::BadRecipients, message)
                .await;
        }
        dedup_in_order(&mut to);
        // A malformed id names nobody: it is undeliverable like an offline
        // user, in its place in the list.
        let recipients: Vec<Result<UserId, String>> = to
            .into_iter()
            .map(|u| UserId::new(u.as_str()).map_err(|_| u))
            .collect();
        let valid: Vec<UserId> = recipients
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let frame = ServerFrame::Message {
            from,
            id: id.clone(),
            payload,
        };
        let bytes = Utf8Bytes::from(frame.to_json());
        // What one sender may push out a second, counted per recipient:
        // a frame of 64 KiB to 64 users is 4 MiB of other people's queues.
        let cost = bytes.len().saturating_mul(valid.len());
        if !self.fanout.try_take_n(cost as f64, Instant::now()) {
            Metrics::inc(&self.shared.metrics.fanout_limited);
            Metrics::inc(&self.shared.metrics.rate_limited);
            let message = format!(
                "{cost} bytes to {} recipients is over the fan-out budget of {} bytes a second",
                valid.len(),
                self.shared.config.fanout_bytes_per_sec
            );
            return self.refuse(Some(id), ErrorCode::RateLimited, message).await;
        }
        let lost = self.shared.config.hub.deliver(&valid, bytes, read_at).await;
        let m = &self.shared.metrics;
        m.messages_routed
            .inc_by(valid.len().saturating_sub(lost.len()) as u64);
        if !lost.unavailable.is_empty() {
            let message = format!(
                "{} recipients could not be reached: the cluster is unavailable",
                lost.unavailable.len()
            );
            let flow = self
                .refuse(Some(id.clone()), ErrorCode::Unavailable, message)
                .await;
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        let mut users = Vec::new();
        let mut congested = Vec::new();
        for r in recipients {
            match r {
                Ok(user) if lost.congested.contains(&user) => congested.push(user.into()),
                Ok(user) if lost.offline.contains(&user) => users.push(user.into()),
                Ok(_) => {}
                Err(malformed) => users.push(malformed),
            }
        }
        if users.is_empty() && congested.is_empty() {
            return Flow::Continue;
        }
        m.undeliverable
            .inc_by((users.len() + congested.len()) as u64);
        m.congested.inc_by(congested.len() as u64);
        self.answer(&ServerFrame::Undeliverable {
            id,
            users,
            congested,
        })
        .await
    }

    async fn join(
        &mut self,
        user: UserId,
        sid: SessionId,
        id: Option<String>,
        room: String,
        allow: Vec<String>,
    ) -> Flow {
        if !valid_room(&room) {
            let message = "room must be 1-128 bytes without control characters".to_string();
            return self.refuse(id, ErrorCode::InvalidRoom, message).await;
        }
        let allow = match user_ids(allow) {
            Ok(allow) => allow,
            Err(message) => return self.refuse(id, ErrorCode::InvalidUserId, message).await,
        };
        let limits = &self.shared.config.limits;
        let room_limits = RoomLimits {
            max_rooms_per_user: limits.max_rooms_per_user,
            max_room_members: limits.max_room_members,
        };
        match self
            .shared
            .config
            .hub
            .join(&room, &user, sid, &allow, room_limits)
            .await
        {
            Ok(members) => {
                self.answer(&ServerFrame::Joined { id, room, members })
                    .await
            }
            Err(code) => {
                let message = format!("cannot join room {room:?}");
                self.refuse(id, code, message).await
            }
        }
    }
}

impl Conn<'_> {
    async fn allow(
        &mut self,
        user: UserId,
        sid: SessionId,
        id: Option<String>,
        room: String,
        users: Vec<String>,
    ) -> Flow {
        let users = match user_ids(users) {
            Ok(users) => users,
            Err(message) => return self.refuse(id, ErrorCode::InvalidUserId, message).await,
        };
        match self
            .shared
            .config
            .hub
            .allow(&room, &user, sid, &users)
            .await
        {
            Ok(()) => self.answer(&ServerFrame::Allowed { id, room }).await,
            Err(code) => {
                let message = format!("cannot extend the allow list of room {room:?}");
                self.refuse(id, code, message).await
            }
        }
    }
}

/// The user ids of an allow list, or why one of them names nobody: a list
/// the sender got wrong is refused whole rather than kept in part.
fn user_ids(names: Vec<String>) -> Result<Vec<UserId>, String> {
    names
        .into_iter()
        .map(|n| UserId::new(n.as_str()).map_err(|e| format!("allow list names {n:?}: {e}")))
        .collect()
}

/// The checks of a `login` frame in the documented order: protocol, app,
/// user id syntax, then the UserSig.
fn check_login(
    cfg: &crate::Config,
    sdk_app_id: u64,
    user_id: &str,
    user_sig: &str,
    protocol: u32,
) -> Result<(UserId, VerifiedLogin), (ErrorCode, String)> {
    if protocol != PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedVersion,
            format!("protocol {protocol} not supported; this server speaks {PROTOCOL_VERSION}"),
        ));
    }
    if sdk_app_id != cfg.sdk_app_id {
        return Err((
            ErrorCode::WrongApp,
            format!("this server serves sdk_app_id {}", cfg.sdk_app_id),
        ));
    }
    let user = UserId::new(user_id).map_err(|e| {
        (
            ErrorCode::InvalidUserId,
            format!("user id must be 1-{MAX_USER_ID_LEN} bytes of A-Z a-z 0-9 - _ ({e})"),
        )
    })?;
    let verified = cfg
        .verifier
        .verify(sdk_app_id, &user, user_sig, calling_usersig::now_unix())
        .map_err(|r| (r.code, r.message))?;
    Ok((user, verified))
}

fn dedup_in_order(v: &mut Vec<String>) {
    let mut i = 1;
    while i < v.len() {
        if v[..i].contains(&v[i]) {
            v.remove(i);
        } else {
            i += 1;
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_first_occurrences_in_order() {
        let mut v: Vec<String> = ["b", "a", "b", "c", "a"].map(String::from).to_vec();
        dedup_in_order(&mut v);
        assert_eq!(v, ["b", "a", "c"]);
    }
}
