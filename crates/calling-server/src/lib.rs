//! The calling signaling server: UserSig login, one session per user,
//! heartbeats, routing of opaque call-layer payloads, rooms, `/healthz` and
//! `/metrics`. The wire format is `docs/PROTOCOL.md`.
//!
//! Run it with `cargo run --release -p calling-server -- --listen
//! 127.0.0.1:8080 --sdk-app-id N --secret-key K`, or with `--demo` for the
//! web demo at `/` (module [`web`]; demo mode hands out UserSigs, local
//! development only), or embed it (below).
//!
//! # TLS
//!
//! With `--tls-cert chain.pem --tls-key key.pem` (or [`Config::tls`]) the
//! listen address serves `wss://…/ws` and `https://` for every page, with
//! rustls; the handshake counts against the login timeout. The pair is
//! reloaded on SIGHUP (binary), when the files change and on
//! [`RunningServer::reload_tls`]; a failed reload keeps the old pair. See
//! module [`tls`] and "TLS" in `docs/PROTOCOL.md`.
//!
//! # Embedding
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use calling_signal::{Transport, UserId, WsConfig, WsTransport};
//!
//! let (app, key) = (1_400_000_000, "my-secret-key");
//! let mut config = calling_server::Config::new(app, key);
//! config.listen = "127.0.0.1:0".parse()?;
//! let server = calling_server::Server::bind(config).await?;
//!
//! // A client logs in with a UserSig made from the same key.
//! let sig = calling_usersig::generate(app, key, "alice", 3600, calling_usersig::now_unix());
//! let url = format!("ws://{}/ws", server.local_addr());
//! let alice = WsConfig::new(url, app, UserId::new("alice")?, sig);
//! let alice = WsTransport::connect(alice).await?;
//! assert_eq!(server.online(), 1);
//!
//! alice.close().await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

mod admission;
pub mod auth;
pub mod cluster;
mod conn;
mod http;
pub mod hub;
pub mod ice;
mod log_limit;
pub mod metrics;
mod rates;
mod stream;
pub mod tls;
pub mod turn_check;
pub mod web;

pub use auth::{LoginRefused, LoginVerifier, VerifiedLogin};
pub use calling_signal::protocol::Limits;
pub use hub::{Hub, LocalHub, Undelivered};
pub use ice::{IceConfig, TurnConfig};
pub use metrics::Metrics;
pub use tls::{TlsError, TlsFiles};
pub use web::DemoMode;

/// The `calling-server` binary's log filter when `RUST_LOG` is not set
/// (`tracing-subscriber` `EnvFilter` syntax): everything at `info`, the
/// level `calling::DEFAULT_LOG_FILTER` gives our crates in the SDK's
/// binaries. The server links none of the WebRTC engine crates that
/// filter silences (its one webrtc-rs crate, `rtc_stun`, encodes the TURN
/// check and logs nothing), so it needs no more directives.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Everything the server can be told. [`Config::new`] gives the documented
/// defaults.
#[derive(Clone)]
pub struct Config {
    /// Address to listen on (binary default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// The one application id this server serves.
    pub sdk_app_id: u64,
    /// How logins are verified.
    pub verifier: Arc<dyn LoginVerifier>,
    /// Presence, routing and rooms.
    pub hub: Arc<dyn Hub>,
    /// Heartbeat interval announced to clients (default 3 s).
    pub heartbeat_interval: Duration,
    /// Silence after which a connection is dropped (default 10 s).
    pub heartbeat_timeout: Duration,
    /// Time a new connection has to log in (default 10 s).
    pub login_timeout: Duration,
    /// Limits announced to and enforced on clients.
    pub limits: Limits,
    /// Frames larger than this cannot even be read: the connection is
    /// closed with 1009 (default 1 MiB). Frames between
    /// `limits.max_frame_bytes` and this get a `too_large` error frame.
    pub hard_frame_bytes: usize,
    /// Bytes of frames queued towards one connection (default 256 KiB; a
    /// frame always fits in an empty queue). Past it the frame is
    /// reported `congested` to its sender and the client, which is not
    /// reading, is closed with 4006 (too slow).
    pub outbound_queue_bytes: usize,
    /// Bytes a second one connection may send out through `send`, counted
    /// once per recipient (default 1 MiB/s); over it the `send` is refused
    /// with `rate_limited`.
    pub fanout_bytes_per_sec: usize,
    /// The burst above `fanout_bytes_per_sec` (default 4 MiB: one largest
    /// frame to the most recipients).
    pub fanout_burst_bytes: usize,
    /// Listen backlog (default 4096; the kernel may cap it).
    pub backlog: u32,
    /// WebSocket read buffer per connection, and the most read from the
    /// socket at once (default 256 B: most frames are smaller; a larger
    /// one is read in several reads into a buffer grown to its size).
    /// Every idle session holds one, so this is a quarter of an idle
    /// session's memory at 1 KiB.
    pub read_buffer_bytes: usize,
    /// Demo mode: hand out UserSigs at `GET /demo/usersig` (default off;
    /// **never** on outside local development). The demo page itself is
    /// always served at `/`.
    pub demo: Option<DemoMode>,
    /// Serve TLS (`https://`, `wss://`) with this certificate and key on
    /// the listen address (default none: plain HTTP, for local use). The
    /// TLS handshake counts against `login_timeout`.
    pub tls: Option<TlsFiles>,
    /// STUN/TURN servers announced in `login_ok` (default none).
    pub ice: IceConfig,
    /// Bytes a connection may send before it has logged in, its HTTP
    /// request included (default 16 KiB; a login frame is well under
    /// 1 KiB). Past it the connection gets a `too_large` error and is
    /// closed with 1009 before more is read, so a connection that never
    /// logs in holds at most this much of the server's memory.
    pub pre_login_bytes: usize,
    /// Most connections accepted and not logged in yet, over the server
    /// (default 2048; 0: no cap). Past it the one that has waited longest
    /// is closed to make room for the newcomer.
    pub max_pending_logins: usize,
    /// Most connections not logged in yet from one source address
    /// (default 256; 0: no cap).
    pub max_pending_logins_per_ip: usize,
    /// Most connections from one source address, logged in or not
    /// (default 4096, for many users behind one NAT; 0: no cap).
    pub max_connections_per_ip: usize,
    /// Most connections on the listen address, so that the process never
    /// runs out of file descriptors (default `None`: the open-file limit
    /// less a reserve of 5 %, at least 64, for the admin listener, logs,
    /// TURN checks and the hub; `Some(0)`: no cap). Past it new
    /// connections are closed as soon as they are accepted.
    pub max_connections: Option<usize>,
    /// A second listener serving only `GET /healthz` and `GET /metrics`
    /// (default none). With it, `/metrics` is no longer served on the
    /// listen address, so it can be kept to an internal network; its
    /// connections do not count against the caps above and stay
    /// reachable when the listen address is full. Plain HTTP: bind it to
    /// loopback or a private network.
    pub admin_listen: Option<SocketAddr>,
    /// Web origins (`https://app.example.com`) whose pages may open a
    /// WebSocket here, besides the server's own (default none: pages
    /// served by this server only). `"*"` allows every origin. Clients
    /// that send no `Origin` (native apps, the Rust SDK) are not
    /// affected; this stops other sites' pages from using a visitor's
    /// browser to connect.
    pub allowed_origins: Vec<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("sdk_app_id", &self.sdk_app_id)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("login_timeout", &self.login_timeout)
            .field("limits", &self.limits)
            .field("hard_frame_bytes", &self.hard_frame_bytes)
            .field("demo", &self.demo)
            .field("tls", &self.tls)
            .field("ice", &self.ice)
            .field("pre_login_bytes", &self.pre_login_bytes)
            .field("max_pending_logins", &self.max_pending_logins)
            .field("max_pending_logins_per_ip", &self.max_pending_logins_per_ip)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_connections", &self.max_connections)
            .field("admin_listen", &self.admin_listen)
            .field("allowed_origins", &self.allowed_origins)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for an app id and its secret key, verifying UserSigs with
    /// `calling-usersig`, listening on 127.0.0.1:8080.
    pub fn new(sdk_app_id: u64, secret_key: &str) -> Self {
        Self::with_verifier(sdk_app_id, Arc::new(auth::UserSigVerifier::new(secret_key)))
    }

    /// Defaults with a custom login verifier.
    pub fn with_verifier(sdk_app_id: u64, verifier: Arc<dyn LoginVerifier>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            sdk_app_id,
            verifier,
            hub: Arc::new(LocalHub::new()),
            heartbeat_interval: Duration::from_secs(3),
            heartbeat_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(10),
            limits: Limits {
                max_frame_bytes: 64 * 1024,
                max_recipients: 64,
                rate_per_sec: 50,
                rate_burst: 100,
                max_rooms_per_user: 16,
                max_room_members: 64,
            },
            hard_frame_bytes: 1024 * 1024,
            outbound_queue_bytes: 256 * 1024,
            fanout_bytes_per_sec: 1024 * 1024,
            fanout_burst_bytes: 4 * 1024 * 1024,
            backlog: 4096,
            read_buffer_bytes: 256,
            demo: None,
            tls: None,
            ice: IceConfig::default(),
            pre_login_bytes: 16 * 1024,
            max_pending_logins: 2048,
            max_pending_logins_per_ip: 256,
            max_connections_per_ip: 4096,
            max_connections: None,
            admin_listen: None,
            allowed_origins: Vec::new(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Shared by every connection task.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) next_session: std::sync::atomic::AtomicU64,
    /// The rate limit of logged-in users.
    pub(crate) rates: rates::UserRates,
    /// The TLS acceptor, when the listener speaks TLS.
    pub(crate) tls: Option<Arc<tls::TlsState>>,
    /// Dropped by each connection task when it ends; shutdown waits for all.
    pub(crate) _alive: mpsc::Sender<()>,
    /// Connection caps, checked at accept.
    pub(crate) admission: Arc<admission::Admission>,
    /// Refused logins logged at INFO, at most a few a second.
    pub(crate) refusal_log: log_limit::LogLimit,
}

/// Entry point: [`Server::bind`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds `config.listen` and starts serving in the background.
    pub async fn bind(config: Config) -> Result<RunningServer, ServerError> {
        if config.limits.max_frame_bytes > config.hard_frame_bytes {
            return Err(ServerError::Config(
                "limits.max_frame_bytes exceeds hard_frame_bytes".into(),
            ));
        }
        if config.heartbeat_timeout.is_zero() || config.login_timeout.is_zero() {
            return Err(ServerError::Config("timeouts must be positive".into()));
        }
        if config.limits.rate_per_sec == 0 {
            // Allowed but hardly ever meant: said once here, not per refusal.
            warn!("rate_per_sec is 0: every frame past the burst is refused");
        }
        // Loaded before binding: a bad certificate must not leave a port
        // open that nobody can use.
        let tls = match &config.tls {
            Some(files) => Some(tls::TlsState::load(files.clone())?),
            None => None,
        };
        let addr = config.listen;
        let bind_err = |source| ServerError::Bind { addr, source };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(bind_err)?;
        // A restarted server must get its port back while old sockets sit
        // in TIME_WAIT.
        socket.set_reuseaddr(true).map_err(bind_err)?;
        socket.bind(addr).map_err(bind_err)?;
        let listener = socket.listen(config.backlog).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::default());
        let rates = rates::UserRates::new(config.limits.rate_per_sec, config.limits.rate_burst);
        let total = config
            .max_connections
            .unwrap_or_else(|| admission::connections_for_fd_limit(admission::open_file_limit()));
        let admission = admission::Admission::new(
            admission::AdmissionLimits {
                pending: config.max_pending_logins,
                pending_per_ip: config.max_pending_logins_per_ip,
                per_ip: config.max_connections_per_ip,
                total,
            },
            metrics.clone(),
        );
        let admin = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let admin_addr = match &admin {
            Some(l) => Some(l.local_addr().map_err(|source| ServerError::Bind {
                addr: config.admin_listen.unwrap_or(addr),
                source,
            })?),
            None => None,
        };
        let shared = Arc::new(Shared {
            admission,
            refusal_log: log_limit::LogLimit::new(REFUSED_LOGINS_LOGGED_PER_SEC),
            config,
            metrics: metrics.clone(),
            shutdown: stop_rx,
            next_session: std::sync::atomic::AtomicU64::new(1),
            rates,
            tls: tls.clone(),
            _alive: alive_tx,
        });
        info!(%local_addr, tls = tls.is_some(), max_connections = total, "signaling server listening");
        if let Some(admin_addr) = admin_addr {
            info!(%admin_addr, "admin listener (/healthz, /metrics)");
        }
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch(shared.shutdown.clone()));
        }
        let hub = shared.config.hub.clone();
        let turn = shared.config.ice.turn.clone();
        if let Some(admin) = admin {
            tokio::spawn(admin_loop(admin, shared.clone()));
        }
        let accept = tokio::spawn(accept_loop(listener, shared));
        Ok(RunningServer {
            local_addr,
            admin_addr,
            stop: stop_tx,
            accept,
            alive: alive_rx,
            metrics,
            hub,
            tls,
            turn,
        })
    }
}

/// Refused logins written at INFO per second at most (the rest at DEBUG,
/// and every one in `calling_logins_failed_total`).
const REFUSED_LOGINS_LOGGED_PER_SEC: u32 = 5;

/// First wait after a failed accept; doubled while accepts keep failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait after a failed accept.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.shutdown.clone();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let accept_log = log_limit::LogLimit::new(1);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    // Caps first: a refused connection costs no TLS, no
                    // parsing and no task.
                    let ticket = match shared.admission.enter(peer.ip()) {
                        Ok(t) => t,
                        Err(why) => {
                            Metrics::inc(&shared.metrics.connections_refused);
                            debug!(%peer, reason = why.as_str(), "connection refused");
                            drop(stream);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(http::handle(stream, peer, ticket, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait longer
                    // each time instead of spinning, say so once a second,
                    // keep serving.
                    if let Some(held_back) = accept_log.allow(std::time::Instant::now()) {
                        warn!(error = %e, more_since_last = held_back, retry_in = ?backoff, "accept failed");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }
    debug!("accept loop stopped");
}

/// Most admin connections served at once: health checks and scrapers,
/// a handful; the cap keeps them out of the descriptor reserve.
const ADMIN_CONNECTIONS: usize = 64;

async fn admin_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.shutdown.clone();
    let busy = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    let log = log_limit::LogLimit::new(1);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let Ok(permit) = busy.clone().try_acquire_owned() else {
                        debug!(%peer, "admin listener busy; connection refused");
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        http::handle_admin(stream, peer, shared).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    if let Some(held_back) = log.allow(std::time::Instant::now()) {
                        warn!(error = %e, more_since_last = held_back, "admin accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    alive: mpsc::Receiver<()>,
    metrics: Arc<Metrics>,
    hub: Arc<dyn Hub>,
    tls: Option<Arc<tls::TlsState>>,
    turn: Option<TurnConfig>,
}

impl std::fmt::Debug for tls::TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dyn Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("online", &self.online())
            .finish()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Dropped without shutdown(): still stop accepting and close the
        // connections rather than leave a server running unowned.
        let _ = self.stop.send(true);
    }
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's bound address, if it has one
    /// ([`Config::admin_listen`]).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Reloads the TLS certificate and key from their files now (as SIGHUP
    /// or a file change does). New connections get the new certificate;
    /// open ones keep theirs. On failure the previous certificate stays in
    /// use and the error is returned (and logged).
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Err(TlsError::NotEnabled),
        }
    }

    /// The TURN secret check of this server's TURN URLs: run it at start
    /// and after a configuration change ([`turn_check::TurnChecker::run`];
    /// the binary does both). Not run by [`Server::bind`] itself, so that
    /// embedding and tests contact no TURN server unasked.
    pub fn turn_checker(&self) -> turn_check::TurnChecker {
        turn_check::TurnChecker {
            turn: self.turn.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Users logged in right now.
    pub fn online(&self) -> usize {
        self.hub.online()
    }

    /// Stops accepting, closes every connection with 1001 and waits (at
    /// most 5 s) for them to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.accept).await;
        // Every connection task holds a clone of the sender; recv() yields
        // None once the last one is gone.
        if tokio::time::timeout(Duration::from_secs(5), self.alive.recv())
            .await
            .is_err()
        {
            warn!("connections still open after 5 s; abandoning them");
        }
        info!("signaling server stopped");
    }
}
