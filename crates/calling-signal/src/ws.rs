//! The WebSocket [`Transport`] for `calling-server`.
//!
//! [`WsTransport::connect`] connects and logs in before it returns, so a bad
//! address or a refused UserSig surfaces as an error right there. After that
//! one background task owns the socket: it writes frames, sends heartbeats,
//! turns server frames into [`TransportEvent`]s and, when the connection
//! drops, reconnects with jittered exponential backoff, logs in again and
//! re-joins the rooms it was in, with the allow lists it gave them, so that
//! a closed room that ended meanwhile comes back closed.
//!
//! `wss://` URLs are served by rustls, trusting the webpki root set (Mozilla's,
//! compiled in, so that trust is the same on every platform and in minimal
//! containers) plus [`WsConfig::extra_ca_pem`] for private deployments.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use calling_core::UserId;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, info, warn};

use crate::protocol::{
    ClientFrame, ErrorCode, IceServer, PROTOCOL_VERSION, ServerFrame, close_code,
};
use crate::rate::TokenBucket;
use crate::transport::{
    EventSlot, MessageId, MessageIds, TlsFailure, Transport, TransportError, TransportEvent,
};

type Ws = WebSocketStream<ClientStream>;

/// How a [`WsTransport`] connects and behaves.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Server URL, e.g. `ws://127.0.0.1:8080/ws` or
    /// `wss://calls.example.com/ws`.
    pub url: String,
    /// Application id.
    pub sdk_app_id: u64,
    /// The user to log in as.
    pub user_id: UserId,
    /// That user's UserSig.
    pub user_sig: String,
    /// Limit for one connect + login attempt (default 5 s).
    pub connect_timeout: Duration,
    /// How long `join_room` / `allow_room` / `leave_room` wait for the
    /// answer (default 5 s).
    pub request_timeout: Duration,
    /// Reconnect after a lost connection (default true).
    pub reconnect: bool,
    /// First reconnect delay (default 100 ms); doubles per failed attempt.
    pub backoff_min: Duration,
    /// Largest reconnect delay (default 5 s). Each delay is drawn uniformly
    /// from [delay/2, delay] so that many clients do not return in step.
    pub backoff_max: Duration,
    /// Override of the heartbeat interval the server announces.
    pub heartbeat_interval: Option<Duration>,
    /// Events buffered for the application (default 1024). When it falls
    /// this far behind, the transport stops reading the socket until there
    /// is room again (the server queues and, past its own limit, reports
    /// `undeliverable` to the senders): no event is dropped here.
    pub event_capacity: usize,
    /// For `wss://`: PEM certificates (one or more `CERTIFICATE` blocks)
    /// trusted in addition to the system roots, for private deployments
    /// and tests (default none). See [`WsConfig::with_extra_ca_file`].
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl WsConfig {
    /// Defaults for one user on one server.
    pub fn new(
        url: impl Into<String>,
        sdk_app_id: u64,
        user_id: UserId,
        user_sig: impl Into<String>,
    ) -> Self {
        WsConfig {
            url: url.into(),
            sdk_app_id,
            user_id,
            user_sig: user_sig.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            reconnect: true,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            heartbeat_interval: None,
            event_capacity: 1024,
            extra_ca_pem: None,
        }
    }

    /// Reads [`WsConfig::extra_ca_pem`] from a PEM file (see
    /// [`read_ca_file`]).
    pub fn with_extra_ca_file(mut self, path: impl AsRef<Path>) -> Result<Self, TransportError> {
        self.extra_ca_pem = Some(read_ca_file(path.as_ref())?);
        Ok(self)
    }
}

/// Reads a PEM file of CA certificates for [`WsConfig::extra_ca_pem`],
/// checking that it holds at least one well-formed certificate, so a wrong
/// path is reported here rather than at the first connect.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, TransportError> {
    let pem = std::fs::read(path)
        .map_err(|e| tls_config_error(format!("cannot read {}: {e}", path.display())))?;
    extra_roots(&pem)?;
    Ok(pem)
}

/// The socket under a client WebSocket, plain or TLS.
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn tls_config_error(message: String) -> TransportError {
    TransportError::Tls {
        kind: TlsFailure::Config,
        message,
    }
}

/// The certificates of an extra-CA PEM.
fn extra_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_config_error(format!("bad extra CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_config_error(
            "extra CA PEM holds no CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

/// rustls client settings: webpki roots plus the extra CA.
fn client_tls(config: &WsConfig) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = &config.extra_ca_pem {
        for cert in extra_roots(pem)? {
            roots
                .add(cert)
                .map_err(|e| tls_config_error(format!("unusable extra CA: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_config_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Sorts a failed TLS handshake into untrusted certificate or other.
fn tls_failure(e: io::Error) -> TransportError {
    let kind = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => TlsFailure::Untrusted,
        _ => TlsFailure::Handshake,
    };
    TransportError::Tls {
        kind,
        message: e.to_string(),
    }
}

/// TCP connect, TLS for `wss://`, then the WebSocket handshake.
async fn open(config: &WsConfig) -> Result<Ws, TransportError> {
    let connect = |e: String| TransportError::Connect(e);
    let request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| connect(e.to_string()))?;
    let uri = request.uri();
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        other => return Err(connect(format!("unsupported URL scheme {other:?}"))),
    };
    let host = uri
        .host()
        .ok_or_else(|| connect("URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let stream = if tls {
        let name = ServerName::try_from(host)
            .map_err(|e| tls_config_error(format!("bad server name: {e}")))?;
        let s = tokio_rustls::TlsConnector::from(client_tls(config)?)
            .connect(name, tcp)
            .await
            .map_err(tls_failure)?;
        ClientStream::Tls(Box::new(s))
    } else {
        ClientStream::Plain(tcp)
    };
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
        .await
        .map_err(|e| connect(e.to_string()))?;
    Ok(ws)
}

enum Command {
    Send {
        text: String,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    Join {
        room: String,
        allow: Vec<UserId>,
        reply: oneshot::Sender<Result<Vec<UserId>, TransportError>>,
    },
    Allow {
        room: String,
        users: Vec<UserId>,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    Leave {
        room: String,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A [`Transport`] over a WebSocket to `calling-server`.
pub struct WsTransport {
    user: UserId,
    cmd: mpsc::Sender<Command>,
    events: EventSlot,
    next_id: MessageIds,
    request_timeout: Duration,
    /// The ICE servers of the latest `login_ok`, replaced on every re-login.
    ice_servers: Arc<Mutex<Vec<IceServer>>>,
}

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What login_ok told us.
struct SessionParams {
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    rate_per_sec: u32,
    rate_burst: u32,
    ice_servers: Vec<IceServer>,
}

/// Keeps the frames we send within the rate the server announced (the
/// server's own kind of bucket), so that bursts, e.g. ICE candidates of
/// several calls, are delayed a little instead of dropped with
/// `rate_limited`.
///
/// The server's bucket is the user's, not the connection's: a new login
/// does not refill it. So one pacer lasts across reconnects while the
/// announced limits stay the same, and keeps counting what was sent.
struct Pacer {
    bucket: TokenBucket,
    limits: (u32, u32),
}

impl Pacer {
    fn new(params: &SessionParams) -> Self {
        // Never ahead of the server's bucket: it started full, so start two
        // lower and refill a little slower.
        let burst = f64::from(params.rate_burst.max(2));
        let rate = f64::from(params.rate_per_sec.max(1)) * 0.9;
        Pacer {
            bucket: TokenBucket::new(rate, burst - 1.0, Instant::now()).with_tokens(burst - 2.0),
            limits: (params.rate_per_sec, params.rate_burst),
        }
    }

    /// This pacer if it paces for the limits of `params`, else a new one.
    fn keep_for(this: Option<Self>, params: &SessionParams) -> Self {
        match this {
            Some(p) if p.limits == (params.rate_per_sec, params.rate_burst) => p,
            _ => Pacer::new(params),
        }
    }

    /// Sends one frame as soon as the rate allows; false if the write failed.
    async fn send(&mut self, ws: &mut Ws, text: String) -> bool {
        let wait = self.bucket.reserve(Instant::now());
        if !wait.is_zero() {
            debug!(
                ?wait,
                "pacing a frame to stay within the server's rate limit"
            );
            tokio::time::sleep(wait).await;
        }
        ws.send(Message::text(text)).await.is_ok()
    }
}

impl WsTransport {
    /// Connects to `config.url`, logs in, and starts the background task.
    pub async fn connect(config: WsConfig) -> Result<Self, TransportError> {
        let (ws, params) = connect_and_login(&config).await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::channel(config.event_capacity.max(1));
        let user = config.user_id.clone();
        let request_timeout = config.request_timeout;
        let ice_servers = Arc::new(Mutex::new(params.ice_servers.clone()));
        let driver = Driver {
            ice_servers: ice_servers.clone(),
            config,
            events: ev_tx,
            rooms: BTreeMap::new(),
            pending_join: HashMap::new(),
            pending_allow: HashMap::new(),
            pending_leave: HashMap::new(),
            next_req: 0,
            refresh: IceRefresh::default(),
            pacer: None,
        };
        tokio::spawn(driver.run(ws, params, cmd_rx));
        Ok(WsTransport {
            user,
            cmd: cmd_tx,
            events: EventSlot::new(ev_rx),
            next_id: MessageIds::default(),
            request_timeout,
            ice_servers,
        })
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, TransportError>>) -> Command,
    ) -> Result<T, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| TransportError::Closed)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(TransportError::Closed),
            Err(_) => Err(TransportError::Timeout),
        }
    }
}

#[async_trait]
impl Transport for WsTransport {
    fn local_user(&self) -> &UserId {
        &self.user
    }

    async fn send(&self, to: &[UserId], payload: Value) -> Result<MessageId, TransportError> {
        let id = self.next_id.next_for(to)?;
        let payload: Box<RawValue> = serde_json::value::to_raw_value(&payload)
            .map_err(|e| TransportError::Invalid(e.to_string()))?;
        let text = ClientFrame::Send {
            id: id.0.clone(),
            to: to.iter().map(|u| u.as_str().to_owned()).collect(),
            payload,
        }
        .to_json();
        self.request(|reply| Command::Send { text, reply }).await?;
        Ok(id)
    }

    async fn join_room(&self, room: &str, allow: &[UserId]) -> Result<Vec<UserId>, TransportError> {
        let room = room.to_owned();
        let allow = allow.to_vec();
        self.request(|reply| Command::Join { room, allow, reply })
            .await
    }

    async fn allow_room(&self, room: &str, users: &[UserId]) -> Result<(), TransportError> {
        let room = room.to_owned();
        let users = users.to_vec();
        self.request(|reply| Command::Allow { room, users, reply })
            .await
    }

    async fn leave_room(&self, room: &str) -> Result<(), TransportError> {
        let room = room.to_owned();
        self.request(|reply| Command::Leave { room, reply }).await
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Close { reply: tx }).await.is_ok() {
            let _ = tokio::time::timeout(self.request_timeout, rx).await;
        }
    }

    fn ice_servers(&self) -> Vec<IceServer> {
        self.ice_servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn take_events(&self) -> Option<mpsc::Receiver<TransportEvent>> {
        self.events.take()
    }
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: a client holds one socket, but load generators hold
    // thousands.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// One connect + login attempt, bounded by `connect_timeout`.
async fn connect_and_login(config: &WsConfig) -> Result<(Ws, SessionParams), TransportError> {
    tokio::time::timeout(config.connect_timeout, async {
        let mut ws = open(config).await?;
        let login = ClientFrame::Login {
            id: Some("login".into()),
            sdk_app_id: config.sdk_app_id,
            user_id: config.user_id.to_string(),
            user_sig: config.user_sig.clone(),
            protocol: PROTOCOL_VERSION,
        };
        ws.send(Message::text(login.to_json()))
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        loop {
            let msg = ws
                .next()
                .await
                .ok_or_else(|| TransportError::Connect("closed during login".into()))?
                .map_err(|e| TransportError::Connect(e.to_string()))?;
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(c) => {
                    return Err(TransportError::Connect(format!(
                        "closed during login: {c:?}"
                    )));
                }
                _ => continue,
            };
            match ServerFrame::parse(&text) {
                Ok(ServerFrame::LoginOk {
                    heartbeat_interval_ms,
                    heartbeat_timeout_ms,
                    limits,
                    ice_servers,
                    ..
                }) => {
                    let params = SessionParams {
                        heartbeat_interval: config
                            .heartbeat_interval
                            .unwrap_or(Duration::from_millis(heartbeat_interval_ms.max(10))),
                        heartbeat_timeout: Duration::from_millis(heartbeat_timeout_ms.max(20)),
                        rate_per_sec: limits.rate_per_sec,
                        rate_burst: limits.rate_burst,
                        ice_servers,
                    };
                    return Ok((ws, params));
                }
                Ok(ServerFrame::Error { code, message, .. }) => {
                    return Err(TransportError::LoginRefused { code, message });
                }
                Ok(
                    other @ (ServerFrame::Pong { .. }
                    | ServerFrame::Message { .. }
                    | ServerFrame::Undeliverable { .. }
                    | ServerFrame::Joined { .. }
                    | ServerFrame::Allowed { .. }
                    | ServerFrame::Left { .. }
                    | ServerFrame::RoomEnter { .. }
                    | ServerFrame::RoomLeave { .. }
                    | ServerFrame::KickedOut { .. }
                    | ServerFrame::LoginExpired {}
                    | ServerFrame::IceServers { .. }),
                ) => debug!(?other, "frame before login_ok ignored"),
                Err(e) => warn!(error = %e, "undecodable frame during login"),
            }
        }
    })
    .await
    .map_err(|_| TransportError::Timeout)?
}

type Reply<T> = oneshot::Sender<Result<T, TransportError>>;

/// How a connected session ended.
enum End {
    /// The application closed the transport.
    Closed,
    /// Kicked out by another login.
    Kicked,
    /// The UserSig expired.
    Expired,
    /// The connection was lost; reconnect.
    Lost,
}

struct Driver {
    config: WsConfig,
    /// Shared with the [`WsTransport`]: what the latest login announced.
    ice_servers: Arc<Mutex<Vec<IceServer>>>,
    events: mpsc::Sender<TransportEvent>,
    /// The rooms we are in, each with the allow list we gave it (empty for
    /// an open room), to re-join them as they were.
    rooms: BTreeMap<String, BTreeSet<UserId>>,
    /// Replies awaiting `joined` / `allowed` / `left`, by request id, with
    /// the allow list asked for.
    pending_join: HashMap<String, (Vec<UserId>, Reply<Vec<UserId>>)>,
    pending_allow: HashMap<String, (Vec<UserId>, Reply<()>)>,
    pending_leave: HashMap<String, Reply<()>>,
    next_req: u64,
    /// The pacer of the last session, for the next.
    pacer: Option<Pacer>,
    /// When to ask for fresh ICE servers.
    refresh: IceRefresh,
}

/// Shortest wait before an `ice_refresh`, so that a credential that is
/// already (or, by a skewed clock, seemingly) expired cannot make us ask in
/// a loop.
const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between failed `ice_refresh` attempts.
const MAX_REFRESH_BACKOFF: Duration = Duration::from_secs(60);
/// Longest wait before a refresh, however far the expiry: keeps `Instant`
/// arithmetic in range.
const MAX_REFRESH_DELAY: Duration = Duration::from_secs(86_400);

/// The schedule of `ice_refresh` requests in one session: due at 70-80 % of
/// the earliest TURN credential's remaining lifetime (jittered, so that the
/// clients of one server restart do not all ask in the same second),
/// retried with backoff when unanswered or refused.
#[derive(Default)]
struct IceRefresh {
    /// When to act next: ask, or give up waiting for the answer.
    due: Option<Instant>,
    /// The id of the `ice_refresh` awaiting its answer.
    awaiting: Option<String>,
    /// Failed attempts since the last success.
    failures: u32,
    /// The earliest expiry of the list in use.
    earliest: Option<u64>,
}

impl IceRefresh {
    /// Schedules the refresh of `servers`, a list just received.
    fn schedule(&mut self, servers: &[IceServer]) {
        self.awaiting = None;
        self.failures = 0;
        self.earliest = earliest_expiry(servers);
        self.due = self
            .earliest
            .map(|at| Instant::now() + refresh_delay(at, unix_now(), rand::rng().random()));
    }

    /// An `ice_refresh` went out as `id`: without an answer by `timeout`,
    /// it failed.
    fn sent(&mut self, id: String, timeout: Duration) {
        self.awaiting = Some(id);
        self.due = Some(Instant::now() + timeout);
    }

    /// The attempt failed: try again later, waiting longer each time.
    fn failed(&mut self) {
        self.awaiting = None;
        self.failures = self.failures.saturating_add(1);
        let backoff = MIN_REFRESH_DELAY
            .saturating_mul(1 << self.failures.min(8).saturating_sub(1))
            .min(MAX_REFRESH_BACKOFF);
        self.due = Some(Instant::now() + backoff);
    }
}

/// The earliest `expires_at` of a list: when the first credential stops
/// working. `None` when nothing in it expires (STUN only, or nothing).
fn earliest_expiry(servers: &[IceServer]) -> Option<u64> {
    servers.iter().filter_map(|s| s.expires_at).min()
}

/// How long to wait before refreshing credentials that expire at
/// `expires_at` (unix seconds), `now` being the local unix time: 70 % to
/// 80 % of what is left (`jitter` in [0, 1) picks where), at least
/// [`MIN_REFRESH_DELAY`].
fn refresh_delay(expires_at: u64, now: u64, jitter: f64) -> Duration {
    let left = expires_at.saturating_sub(now) as f64;
    let share = 0.8 - 0.1 * jitter.clamp(0.0, 1.0);
    Duration::from_secs_f64((left * share).min(MAX_REFRESH_DELAY.as_secs_f64()))
        .max(MIN_REFRESH_DELAY)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Driver {
    /// A fresh id for a frame whose answer we wait for.
    fn request_id(&mut self, prefix: &str) -> String {
        self.next_req += 1;
        format!("{prefix}{}", self.next_req)
    }

    /// Hands `ev` to the application at once if there is room; otherwise
    /// gives it back, to be delivered when there is.
    fn offer(&self, ev: TransportEvent) -> Option<TransportEvent> {
        match self.events.try_send(ev) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(ev)) => {
                debug!("event queue full; reading paused until the application catches up");
                Some(ev)
            }
            // Nobody listens any more: nothing to deliver.
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }

    /// Hands `ev` to the application while no session is up, waiting for
    /// room; commands that come meanwhile are refused with `refusal`. False
    /// when the application closed the transport meanwhile.
    async fn deliver_offline(
        &self,
        ev: TransportEvent,
        cmds: &mut mpsc::Receiver<Command>,
        refusal: TransportError,
    ) -> bool {
        loop {
            tokio::select! {
                permit = self.events.reserve() => {
                    if let Ok(permit) = permit {
                        permit.send(ev);
                    }
                    return true;
                }
                cmd = cmds.recv() => match cmd {
                    None => return false,
                    Some(Command::Close { reply }) => {
                        let _ = reply.send(());
                        return false;
                    }
                    Some(
                        Command::Send { reply, .. }
                        | Command::Leave { reply, .. }
                        | Command::Allow { reply, .. },
                    ) => {
                        let _ = reply.send(Err(refusal.clone()));
                    }
                    Some(Command::Join { reply, .. }) => {
                        let _ = reply.send(Err(refusal.clone()));
                    }
                }
            }
        }
    }

    async fn run(
        mut self,
        mut ws: Ws,
        mut params: SessionParams,
        mut cmds: mpsc::Receiver<Command>,
    ) {
        let mut held = None;
        loop {
            let end = self.session(&mut ws, &params, &mut cmds, held.take()).await;
            self.fail_pending();
            match end {
                End::Closed => return,
                End::Kicked => {
                    info!(user = %self.config.user_id, "kicked out");
                    let ev = TransportEvent::KickedOut;
                    self.deliver_offline(ev, &mut cmds, TransportError::Closed)
                        .await;
                    return;
                }
                End::Expired => {
                    let ev = TransportEvent::LoginExpired;
                    self.deliver_offline(ev, &mut cmds, TransportError::Closed)
                        .await;
                    return;
                }
                End::Lost => {
                    let ev = TransportEvent::Disconnected;
                    let refusal = TransportError::NotConnected;
                    if !self.deliver_offline(ev, &mut cmds, refusal).await || !self.config.reconnect
                    {
                        return;
                    }
                }
            }
            match self.reconnect(&mut cmds).await {
                Some((new_ws, new_params)) => {
                    ws = new_ws;
                    // Fresh TURN credentials for the calls from now on.
                    *self
                        .ice_servers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = new_params.ice_servers.clone();
                    params = new_params;
                    info!(user = %self.config.user_id, "reconnected");
                    // Delivered by the new session, which serves commands
                    // while the application makes room.
                    held = Some(TransportEvent::Reconnected);
                }
                None => return,
            }
        }
    }

    fn fail_pending(&mut self) {
        for (_, (_, reply)) in self.pending_join.drain() {
            let _ = reply.send(Err(TransportError::NotConnected));
        }
        for (_, (_, reply)) in self.pending_allow.drain() {
            let _ = reply.send(Err(TransportError::NotConnected));
        }
        for (_, reply) in self.pending_leave.drain() {
            let _ = reply.send(Err(TransportError::NotConnected));
        }
    }

    /// Retries connect + login with jittered backoff, answering commands
    /// meanwhile. `None` when the transport should stop.
    async fn reconnect(
        &mut self,
        cmds: &mut mpsc::Receiver<Command>,
    ) -> Option<(Ws, SessionParams)> {
        let mut delay = self.config.backoff_min;
        loop {
            let wait = {
                let lo = delay / 2;
                let span = delay.saturating_sub(lo).as_millis() as u64;
                lo + Duration::from_millis(rand::rng().random_range(0..=span))
            };
            let until = Instant::now() + wait;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    cmd = cmds.recv() => match cmd {
                        None => return None,
                        Some(Command::Close { reply }) => {
                            let _ = reply.send(());
                            return None;
                        }
                        Some(Command::Send { reply, .. }) => {
                            let _ = reply.send(Err(TransportError::NotConnected));
                        }
                        Some(Command::Join { reply, .. }) => {
                            let _ = reply.send(Err(TransportError::NotConnected));
                        }
                        Some(Command::Allow { reply, .. }) => {
                            let _ = reply.send(Err(TransportError::NotConnected));
                        }
                        Some(Command::Leave { reply, .. }) => {
                            let _ = reply.send(Err(TransportError::NotConnected));
                        }
                    }
                }
            }
            match connect_and_login(&self.config).await {
                Ok(ok) => return Some(ok),
                Err(TransportError::LoginRefused { code, message }) => {
                    warn!(%code, %message, "re-login refused");
                    if refused_for_good(code) {
                        let ev = TransportEvent::LoginExpired;
                        self.deliver_offline(ev, cmds, TransportError::Closed).await;
                        return None;
                    }
                }
                // Kept retrying (a rotated certificate may be fixed on the
                // server) but said loudly: it will not pass by itself.
                Err(e @ TransportError::Tls { .. }) => warn!(error = %e, "reconnect failed at TLS"),
                Err(e) => debug!(error = %e, "reconnect attempt failed"),
            }
            delay = (delay * 2).min(self.config.backoff_max);
        }
    }

    async fn session(
        &mut self,
        ws: &mut Ws,
        params: &SessionParams,
        cmds: &mut mpsc::Receiver<Command>,
        held: Option<TransportEvent>,
    ) -> End {
        let mut pacer = Pacer::keep_for(self.pacer.take(), params);
        // This login's list is the newest: its credentials set the schedule.
        self.refresh.schedule(&params.ice_servers);
        let end = self.paced_session(ws, params, cmds, &mut pacer, held).await;
        self.pacer = Some(pacer);
        end
    }

    async fn paced_session(
        &mut self,
        ws: &mut Ws,
        params: &SessionParams,
        cmds: &mut mpsc::Receiver<Command>,
        pacer: &mut Pacer,
        held: Option<TransportEvent>,
    ) -> End {
        let mut held: VecDeque<TransportEvent> = held.into_iter().collect();
        let mut heartbeat = tokio::time::interval(params.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut last_seen = Instant::now();
        // Back into the rooms of the previous connection (none the first
        // time), paced: the server counts them like any frame. The answers
        // arrive as ordinary frames.
        for (room, allow) in self.rooms.clone() {
            let id = self.request_id("rejoin");
            let allow = allow.iter().map(|u| u.as_str().to_owned()).collect();
            let frame = ClientFrame::Join {
                id: Some(id),
                room,
                allow,
            };
            if !pacer.send(ws, frame.to_json()).await {
                return self.after_write_error(ws).await;
            }
        }
        // While events wait in `held` for room in the application's queue,
        // the socket is not read (backpressure: the server holds what
        // follows), but commands and heartbeats go on, and the server's
        // silence is not held against it. Only while a join, allow, leave or
        // ice_refresh waits for its answer is the socket read on, into `held`
        // (bounded): the application may be waiting for that answer instead
        // of reading.
        let events = self.events.clone();
        loop {
            let dead_at = last_seen + params.heartbeat_timeout;
            let refresh_due = self.refresh.due;
            tokio::select! {
                permit = events.reserve(), if !held.is_empty() => {
                    match (permit, held.pop_front()) {
                        (Ok(permit), Some(ev)) => permit.send(ev),
                        // Nobody listens any more: nothing to deliver.
                        _ => held.clear(),
                    }
                    last_seen = Instant::now();
                }
                () = tokio::time::sleep_until(refresh_due.unwrap_or(dead_at)), if refresh_due.is_some() => {
                    if self.refresh.awaiting.take().is_some() {
                        warn!(user = %self.config.user_id, "no answer to ice_refresh; trying again later");
                        self.refresh.failed();
                        continue;
                    }
                    let id = self.request_id("ice");
                    self.refresh.sent(id.clone(), self.config.request_timeout);
                    let frame = ClientFrame::IceRefresh { id: Some(id) };
                    if !pacer.send(ws, frame.to_json()).await {
                        return self.after_write_error(ws).await;
                    }
                }
                _ = heartbeat.tick() => {
                    let ping = ClientFrame::Ping { id: None }.to_json();
                    if !pacer.send(ws, ping).await {
                        return self.after_write_error(ws).await;
                    }
                }
                () = tokio::time::sleep_until(dead_at), if held.is_empty() => {
                    info!(user = %self.config.user_id, "server silent past the heartbeat timeout");
                    return End::Lost;
                }
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else {
                        // Every handle is gone: log out quietly.
                        let _ = self.logout(ws).await;
                        return End::Closed;
                    };
                    match cmd {
                        Command::Close { reply } => {
                            let _ = self.logout(ws).await;
                            let _ = reply.send(());
                            return End::Closed;
                        }
                        Command::Send { text, reply } => {
                            let ok = pacer.send(ws, text).await;
                            let _ = reply.send(if ok { Ok(()) } else { Err(TransportError::NotConnected) });
                            if !ok {
                                return self.after_write_error(ws).await;
                            }
                        }
                        Command::Join { room, allow, reply } => {
                            let id = self.request_id("j");
                            let names = allow.iter().map(|u| u.as_str().to_owned()).collect();
                            self.pending_join.insert(id.clone(), (allow, reply));
                            let frame = ClientFrame::Join { id: Some(id), room, allow: names };
                            if !pacer.send(ws, frame.to_json()).await {
                                return self.after_write_error(ws).await;
                            }
                        }
                        Command::Allow { room, users, reply } => {
                            let id = self.request_id("a");
                            let names = users.iter().map(|u| u.as_str().to_owned()).collect();
                            self.pending_allow.insert(id.clone(), (users, reply));
                            let frame = ClientFrame::Allow { id: Some(id), room, users: names };
                            if !pacer.send(ws, frame.to_json()).await {
                                return self.after_write_error(ws).await;
                            }
                        }
                        Command::Leave { room, reply } => {
                            let id = self.request_id("l");
                            self.pending_leave.insert(id.clone(), reply);
                            let frame = ClientFrame::Leave { id: Some(id), room };
                            if !pacer.send(ws, frame.to_json()).await {
                                return self.after_write_error(ws).await;
                            }
                        }
                    }
                }
                msg = ws.next(), if self.may_read(&held) => {
                    last_seen = Instant::now();
                    let text = match msg {
                        None | Some(Err(_)) => return End::Lost,
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => {
                            return close_end(frame.map(|f| u16::from(f.code)));
                        }
                        Some(Ok(_)) => continue,
                    };
                    match self.on_frame(&text) {
                        Ok(Some(ev)) if held.is_empty() => held.extend(self.offer(ev)),
                        Ok(Some(ev)) => held.push_back(ev),
                        Ok(None) => {}
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    /// Events read on while a join, allow, leave or ice_refresh waits for
    /// its answer, at most:
    /// as many as the server queues for one client.
    const MAX_HELD: usize = 256;

    /// Whether the session reads the socket with `held` waiting.
    fn may_read(&self, held: &VecDeque<TransportEvent>) -> bool {
        // An ice_refresh answer counts too: left unread behind held events
        // it would time out and be asked for again.
        let awaited = !self.pending_join.is_empty()
            || !self.pending_allow.is_empty()
            || !self.pending_leave.is_empty()
            || self.refresh.awaiting.is_some();
        held.is_empty() || (awaited && held.len() < Self::MAX_HELD)
    }

    async fn logout(&mut self, ws: &mut Ws) -> Result<(), ()> {
        let frame = ClientFrame::Logout { id: None }.to_json();
        let bounded = tokio::time::timeout(Duration::from_secs(1), async {
            ws.send(Message::text(frame)).await.map_err(|_| ())?;
            ws.close(None).await.map_err(|_| ())
        });
        bounded.await.map_err(|_| ())?
    }

    /// A write failed. The server may have closed on purpose (kicked out,
    /// login expired) with frames we have not read yet: read what is there,
    /// briefly, before calling the connection lost, or a kicked client would
    /// reconnect and kick the new session in turn.
    async fn after_write_error(&mut self, ws: &mut Ws) -> End {
        let read = async {
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Text(t) => match self.on_frame(&t) {
                        Ok(Some(ev)) => {
                            // Bounded by the timeout below, like the read.
                            let _ = self.events.send(ev).await;
                        }
                        Ok(None) => {}
                        Err(end) => return end,
                    },
                    Message::Close(frame) => return close_end(frame.map(|f| u16::from(f.code))),
                    _ => {}
                }
            }
            End::Lost
        };
        tokio::time::timeout(Duration::from_millis(500), read)
            .await
            .unwrap_or(End::Lost)
    }

    /// Fresh ICE servers: the list [`Transport::ice_servers`] returns from
    /// now on, unless it expires no later than the one in use (a late
    /// answer, or a server clock gone back), which stays.
    fn on_ice_servers(&mut self, id: Option<String>, servers: Vec<IceServer>) {
        let answered = id.is_some() && id == self.refresh.awaiting;
        let newer = match (earliest_expiry(&servers), self.refresh.earliest) {
            (Some(new), Some(old)) => new > old,
            // Nothing expires any more, or nothing did: take it.
            _ => true,
        };
        if !newer {
            if answered {
                warn!("ice_refresh brought no later expiry; trying again later");
                self.refresh.failed();
            }
            return;
        }
        debug!(user = %self.config.user_id, expires_at = ?earliest_expiry(&servers), "fresh ICE servers");
        *self
            .ice_servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = servers.clone();
        self.refresh.schedule(&servers);
    }

    /// What a server frame means: an event for the application (at most
    /// one per frame), nothing (an answer consumed here), or the end of
    /// the session.
    fn on_frame(&mut self, text: &Utf8Bytes) -> Result<Option<TransportEvent>, End> {
        let frame = match ServerFrame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "undecodable server frame ignored");
                return Ok(None);
            }
        };
        let ev = match frame {
            ServerFrame::Message { from, id, payload } => {
                match serde_json::from_str::<Value>(payload.get()) {
                    Ok(payload) => TransportEvent::Message {
                        from,
                        id: MessageId(id),
                        payload,
                    },
                    Err(e) => {
                        warn!(error = %e, "payload not JSON; dropped");
                        return Ok(None);
                    }
                }
            }
            ServerFrame::Undeliverable {
                id,
                users,
                congested,
            } => TransportEvent::Undeliverable {
                id: MessageId(id),
                offline: sent_ids(users),
                congested: sent_ids(congested),
            },
            ServerFrame::Joined { id, room, members } => {
                // A re-join's answer has no pending entry and keeps the list.
                let allowed = self.rooms.entry(room).or_default();
                if let Some((allow, reply)) = id.and_then(|id| self.pending_join.remove(&id)) {
                    allowed.extend(allow);
                    let _ = reply.send(Ok(members));
                }
                return Ok(None);
            }
            ServerFrame::Allowed { id, room } => {
                if let Some((users, reply)) = id.and_then(|id| self.pending_allow.remove(&id)) {
                    if let Some(allowed) = self.rooms.get_mut(&room) {
                        allowed.extend(users);
                    }
                    let _ = reply.send(Ok(()));
                }
                return Ok(None);
            }
            ServerFrame::Left { id, room } => {
                self.rooms.remove(&room);
                if let Some(reply) = id.and_then(|id| self.pending_leave.remove(&id)) {
                    let _ = reply.send(Ok(()));
                }
                return Ok(None);
            }
            ServerFrame::RoomEnter { room, user } => TransportEvent::RoomEnter { room, user },
            ServerFrame::RoomLeave { room, user } => TransportEvent::RoomLeave { room, user },
            ServerFrame::KickedOut { .. } => return Err(End::Kicked),
            ServerFrame::LoginExpired {} => return Err(End::Expired),
            ServerFrame::IceServers { id, ice_servers } => {
                self.on_ice_servers(id, ice_servers);
                return Ok(None);
            }
            ServerFrame::Error { id, code, message }
                if id.is_some() && id == self.refresh.awaiting =>
            {
                if code == ErrorCode::UnknownType {
                    // An older server: credentials renew on re-login only.
                    info!(user = %self.config.user_id, "server does not know ice_refresh");
                    self.refresh = IceRefresh::default();
                } else {
                    warn!(%code, %message, "ice_refresh refused; trying again later");
                    self.refresh.failed();
                }
                return Ok(None);
            }
            ServerFrame::Error { id, code, message } => {
                let join = id.as_ref().and_then(|i| self.pending_join.remove(i));
                let allow = id.as_ref().and_then(|i| self.pending_allow.remove(i));
                let leave = id.as_ref().and_then(|i| self.pending_leave.remove(i));
                if let Some((_, reply)) = join {
                    let _ = reply.send(Err(TransportError::Refused { code, message }));
                } else if let Some((_, reply)) = allow {
                    let _ = reply.send(Err(TransportError::Refused { code, message }));
                } else if let Some(reply) = leave {
                    let _ = reply.send(Err(TransportError::Refused { code, message }));
                } else {
                    return Ok(Some(TransportEvent::Error { id, code, message }));
                }
                return Ok(None);
            }
            ServerFrame::Pong { .. } | ServerFrame::LoginOk { .. } => return Ok(None),
        };
        Ok(Some(ev))
    }
}

/// The recipients of an `undeliverable`, which echoes the ids of our own
/// `send`. Those were [`UserId`]s, so a malformed one means a broken server:
/// logged and left out.
fn sent_ids(users: Vec<String>) -> Vec<UserId> {
    users
        .into_iter()
        .filter_map(|user| match UserId::new(user.as_str()) {
            Ok(id) => Some(id),
            Err(e) => {
                warn!(user, error = %e, "undeliverable names a user id we never sent to");
                None
            }
        })
        .collect()
}

/// Whether a refused re-login can never succeed with this configuration:
/// retrying the same UserSig would only be refused again.
fn refused_for_good(code: ErrorCode) -> bool {
    match code {
        ErrorCode::SigExpired
        | ErrorCode::BadSignature
        | ErrorCode::WrongApp
        | ErrorCode::InvalidUserId
        | ErrorCode::UnsupportedVersion => true,
        ErrorCode::BadFrame
        | ErrorCode::UnknownType
        | ErrorCode::TooLarge
        | ErrorCode::NotLoggedIn
        | ErrorCode::AlreadyLoggedIn
        | ErrorCode::RateLimited
        | ErrorCode::BadRecipients
        | ErrorCode::InvalidRoom
        | ErrorCode::TooManyRooms
        | ErrorCode::RoomFull
        | ErrorCode::NotInRoom
        | ErrorCode::NotAllowed
        | ErrorCode::Unavailable
        | ErrorCode::Internal => false,
    }
}

/// How a session ends, from the server's close code.
fn close_end(code: Option<u16>) -> End {
    match code {
        Some(close_code::KICKED_OUT) => End::Kicked,
        Some(close_code::LOGIN_EXPIRED) => End::Expired,
        _ => End::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(expires_at: Option<u64>) -> IceServer {
        IceServer {
            urls: vec!["turn:h:1".into()],
            username: None,
            credential: None,
            expires_at,
        }
    }

    #[test]
    fn refresh_comes_at_70_to_80_percent_of_the_lifetime_left() {
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(refresh_delay(1000 + 3600, 1000, 0.0)), 2_880_000);
        assert_eq!(ms(refresh_delay(1000 + 3600, 1000, 0.5)), 2_700_000);
        assert!((2_520_000..2_521_000).contains(&ms(refresh_delay(4600, 1000, 0.999_999))));
        // Already expired, or a clock ahead of the server's: soon, not now.
        assert_eq!(refresh_delay(1000, 5000, 0.5), MIN_REFRESH_DELAY);
        assert_eq!(refresh_delay(u64::MAX, 0, 0.0), MAX_REFRESH_DELAY);
    }

    #[test]
    fn the_earliest_expiry_rules_and_stun_never_expires() {
        assert_eq!(earliest_expiry(&[turn(None)]), None);
        assert_eq!(
            earliest_expiry(&[turn(Some(9)), turn(None), turn(Some(5))]),
            Some(5)
        );
        let mut r = IceRefresh::default();
        r.schedule(&[turn(None)]);
        assert!(r.due.is_none());
        r.schedule(&[turn(Some(unix_now() + 100))]);
        assert!(r.due.is_some());
    }

    #[test]
    fn failures_back_off_up_to_a_minute() {
        let mut r = IceRefresh::default();
        let mut waits = Vec::new();
        for _ in 0..10 {
            let before = Instant::now();
            r.failed();
            waits.push((r.due.unwrap() - before).as_secs());
        }
        assert_eq!(waits[..4], [1, 2, 4, 8]);
        assert_eq!(*waits.last().unwrap(), 60);
    }
}
