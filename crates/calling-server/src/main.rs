//! `calling-server`: the signaling server binary.

use std::net::SocketAddr;
use std::time::Duration;

use calling_core::UserId;
use clap::Parser;
use tracing::{error, info};

/// The calling signaling server: UserSig login, presence, routing, rooms.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CALLING_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The application id whose UserSigs are accepted.
    #[arg(long, env = "CALLING_SDK_APP_ID", required_unless_present = "demo")]
    sdk_app_id: Option<u64>,
    /// The secret key UserSigs are signed with.
    #[arg(
        long,
        env = "CALLING_SECRET_KEY",
        hide_env_values = true,
        required_unless_present = "demo"
    )]
    secret_key: Option<String>,
    /// Demo mode, for local development only: make up an app id / key where
    /// not given, print ready-to-use UserSigs for --demo-user (default alice
    /// and bob), and hand UserSigs to the web demo at /demo/usersig.
    #[arg(long, env = "CALLING_DEMO")]
    demo: bool,
    /// Users to print demo UserSigs for (repeat it, or comma-separate in
    /// the variable).
    #[arg(
        long = "demo-user",
        env = "CALLING_DEMO_USERS",
        value_name = "USER",
        value_delimiter = ',',
        value_parser = |s: &str| UserId::new(s),
        default_values = ["alice", "bob"]
    )]
    demo_users: Vec<UserId>,
    /// Heartbeat interval announced to clients, in milliseconds.
    #[arg(long, env = "CALLING_HEARTBEAT_INTERVAL_MS", default_value_t = 3000)]
    heartbeat_interval_ms: u64,
    /// Silence after which a connection is dropped, in milliseconds.
    #[arg(long, env = "CALLING_HEARTBEAT_TIMEOUT_MS", default_value_t = 10_000)]
    heartbeat_timeout_ms: u64,
    /// Time a new connection has to log in, in milliseconds.
    #[arg(long, env = "CALLING_LOGIN_TIMEOUT_MS", default_value_t = 10_000)]
    login_timeout_ms: u64,
    /// Largest frame processed, in bytes; larger ones get a too_large error.
    #[arg(long, env = "CALLING_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    max_frame_bytes: usize,
    /// Frames over this many bytes close the connection (1009).
    #[arg(long, env = "CALLING_HARD_FRAME_BYTES", default_value_t = 1024 * 1024)]
    hard_frame_bytes: usize,
    /// Most recipients of one send frame.
    #[arg(long, env = "CALLING_MAX_RECIPIENTS", default_value_t = 64)]
    max_recipients: usize,
    /// Sustained frames per second per connection.
    #[arg(long, env = "CALLING_RATE_PER_SEC", default_value_t = 50)]
    rate_per_sec: u32,
    /// Frames allowed in a burst above the sustained rate.
    #[arg(long, env = "CALLING_RATE_BURST", default_value_t = 100)]
    rate_burst: u32,
    /// Most rooms one user may be in.
    #[arg(long, env = "CALLING_MAX_ROOMS_PER_USER", default_value_t = 16)]
    max_rooms_per_user: usize,
    /// Most members one room may hold.
    #[arg(long, env = "CALLING_MAX_ROOM_MEMBERS", default_value_t = 64)]
    max_room_members: usize,
    /// Listen backlog.
    #[arg(long, env = "CALLING_BACKLOG", default_value_t = 4096)]
    backlog: u32,
    /// Bytes a connection may send before it logs in (its HTTP request
    /// included); past them it is closed with 1009.
    #[arg(long, env = "CALLING_PRE_LOGIN_BYTES", default_value_t = 16 * 1024)]
    pre_login_bytes: usize,
    /// Most connections not logged in yet, over the server (0: no cap).
    #[arg(long, env = "CALLING_MAX_PENDING_LOGINS", default_value_t = 2048)]
    max_pending_logins: usize,
    /// Most connections not logged in yet from one address (0: no cap).
    #[arg(long, env = "CALLING_MAX_PENDING_LOGINS_PER_IP", default_value_t = 256)]
    max_pending_logins_per_ip: usize,
    /// Most connections from one address, logged in or not (0: no cap).
    #[arg(long, env = "CALLING_MAX_CONNECTIONS_PER_IP", default_value_t = 4096)]
    max_connections_per_ip: usize,
    /// Bytes of frames held for one client before it counts as not
    /// reading (reported congested, then closed with 4006).
    #[arg(long, env = "CALLING_OUTBOUND_QUEUE_BYTES", default_value_t = 256 * 1024)]
    outbound_queue_bytes: usize,
    /// Bytes a second one client may send out, counted per recipient.
    #[arg(long, env = "CALLING_FANOUT_BYTES_PER_SEC", default_value_t = 1024 * 1024)]
    fanout_bytes_per_sec: usize,
    /// The burst above --fanout-bytes-per-sec.
    #[arg(long, env = "CALLING_FANOUT_BURST_BYTES", default_value_t = 4 * 1024 * 1024)]
    fanout_burst_bytes: usize,
    /// Most connections in all (default: the open-file limit less 5 %,
    /// at least 64, kept for the admin listener and the rest; 0: no cap).
    #[arg(long, env = "CALLING_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Join the cluster of every server using this Redis
    /// (`redis://host:port/`): users on any of them reach each other
    /// (docs/CLUSTER.md). Without it the server stands alone.
    #[arg(long, env = "CALLING_REDIS_URL")]
    redis: Option<String>,
    /// In cluster mode, how long this node's lease in Redis lasts, in
    /// milliseconds: a node that stops renewing it loses its users
    /// cluster-wide within about 4/3 of it.
    #[arg(long, env = "CALLING_CLUSTER_LEASE_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(300..))]
    cluster_lease_ms: u64,
    /// Serve /healthz and /metrics on this address too, and /metrics only
    /// there (plain HTTP: keep it on loopback or a private network).
    #[arg(long, env = "CALLING_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Web origin whose pages may open a WebSocket here, besides the
    /// server's own (repeat it, or comma-separate in the variable; `*`:
    /// any origin). Apps that send no Origin are not affected.
    #[arg(
        long = "allow-origin",
        env = "CALLING_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// PEM certificate chain: serve https:// and wss:// on --listen
    /// (reloaded on SIGHUP and when the file changes). Needs --tls-key.
    #[arg(long, env = "CALLING_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CALLING_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long, env = "CALLING_WORKERS")]
    workers: Option<usize>,
    /// STUN server announced to clients in login_ok (`stun:host:port`);
    /// repeatable or comma-separated.
    #[arg(
        long = "stun-url",
        env = "CALLING_STUN_URL",
        value_name = "URL",
        value_delimiter = ','
    )]
    stun_urls: Vec<String>,
    /// TURN server announced with per-login credentials
    /// (`turn:host:port?transport=udp`); repeatable or comma-separated.
    #[arg(
        long = "turn-url",
        env = "CALLING_TURN_URL",
        value_name = "URL",
        value_delimiter = ',',
        requires = "turn_secret"
    )]
    turn_urls: Vec<String>,
    /// The TURN server's REST API secret (coturn's static-auth-secret).
    #[arg(
        long,
        env = "CALLING_TURN_SECRET",
        hide_env_values = true,
        requires = "turn_urls"
    )]
    turn_secret: Option<String>,
    /// Lifetime of issued TURN credentials, in seconds (default 6 h).
    #[arg(long, env = "CALLING_TURN_TTL", default_value_t = calling_server::ice::DEFAULT_TURN_TTL.as_secs())]
    turn_ttl: u64,
}

fn main() -> std::process::ExitCode {
    // Logs go to stdout, with the demo mode's UserSigs.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(calling_server::DEFAULT_LOG_FILTER)
            }),
        )
        .with_ansi(colour(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.workers {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), calling_server::ServerError> {
    let sdk_app_id = args.sdk_app_id.unwrap_or(1_400_000_000);
    let secret_key = match args.secret_key {
        Some(k) => k,
        None => random_key(),
    };
    let mut config = calling_server::Config::new(sdk_app_id, &secret_key);
    config.listen = args.listen;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let mut files = calling_server::TlsFiles::new(cert, key);
        files.reload_on_sighup = true;
        config.tls = Some(files);
    }
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    if args.demo {
        config.demo = Some(calling_server::DemoMode::new(secret_key.clone()));
    }
    config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms);
    config.heartbeat_timeout = Duration::from_millis(args.heartbeat_timeout_ms);
    config.login_timeout = Duration::from_millis(args.login_timeout_ms);
    config.hard_frame_bytes = args.hard_frame_bytes;
    config.backlog = args.backlog;
    config.pre_login_bytes = args.pre_login_bytes;
    config.max_pending_logins = args.max_pending_logins;
    config.max_pending_logins_per_ip = args.max_pending_logins_per_ip;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.max_connections = args.max_connections;
    config.outbound_queue_bytes = args.outbound_queue_bytes;
    config.fanout_bytes_per_sec = args.fanout_bytes_per_sec;
    config.fanout_burst_bytes = args.fanout_burst_bytes;
    config.admin_listen = args.admin_listen;
    config.allowed_origins = args.allowed_origins;
    config.limits = calling_server::Limits {
        max_frame_bytes: args.max_frame_bytes,
        max_recipients: args.max_recipients,
        rate_per_sec: args.rate_per_sec,
        rate_burst: args.rate_burst,
        max_rooms_per_user: args.max_rooms_per_user,
        max_room_members: args.max_room_members,
    };
    config.ice.stun_urls = args.stun_urls;
    if let Some(secret) = args.turn_secret {
        let mut turn = calling_server::TurnConfig::new(args.turn_urls, secret);
        turn.ttl = Duration::from_secs(args.turn_ttl.max(1));
        if args.turn_ttl < 600 {
            // Fine for tests; in production every client would refresh
            // every few minutes, and a credential could expire mid-setup.
            tracing::warn!(
                ttl_secs = args.turn_ttl,
                "--turn-ttl under 10 minutes: meant for tests (docs/DEPLOYMENT.md)"
            );
        }
        config.ice.turn = Some(turn);
    }
    if !config.ice.stun_urls.is_empty() || config.ice.turn.is_some() {
        info!(ice = ?config.ice, "announcing ICE servers in login_ok");
    }
    match raise_nofile_limit() {
        Some((soft, hard)) => info!(
            soft,
            hard,
            "open-file limit: at most about {} connections",
            soft.saturating_sub(64)
        ),
        None => tracing::warn!("cannot read the open-file limit"),
    }
    if let Some(url) = args.redis {
        let mut cluster = calling_server::cluster::ClusterConfig::new(url);
        cluster.lease = Duration::from_millis(args.cluster_lease_ms);
        let hub = calling_server::cluster::RedisHub::connect(cluster)
            .await
            .map_err(|e| calling_server::ServerError::Config(e.to_string()))?;
        info!(node = hub.node_id(), "cluster mode");
        config.hub = std::sync::Arc::new(hub);
    }
    let server = calling_server::Server::bind(config).await?;
    let addr = server.local_addr();
    // In the background: a TURN server that does not answer must not delay
    // the signaling port.
    tokio::spawn(check_turn_now_and_on_sighup(server.turn_checker()));
    info!(%addr, sdk_app_id, "WebSocket at {scheme}://{addr}/ws, health at /healthz, metrics at /metrics");
    if args.demo {
        let now = calling_usersig::now_unix();
        let http = if scheme == "wss" { "https" } else { "http" };
        println!("demo mode: sdk_app_id={sdk_app_id} secret_key={secret_key}");
        println!(
            "demo mode: open {http}://{addr}/ in two tabs; the page gets UserSigs from /demo/usersig (unsafe outside development)"
        );
        for user in args.demo_users {
            let sig =
                calling_usersig::generate(sdk_app_id, &secret_key, user.as_str(), 86_400, now);
            println!("user_id={user} user_sig={sig}");
        }
        println!(
            "demo mode: other users: restart with --demo-user NAME (or CALLING_DEMO_USERS=NAME,NAME2), \
             or GET {http}://{addr}/demo/usersig?user_id=NAME; the softphone makes its own from the \
             secret_key above: --sdk-app-id {sdk_app_id} --secret-key {secret_key} (or CALLING_SECRET_KEY)"
        );
    }
    wait_for_signal().await;
    info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Checks that the TURN servers accept our credentials at start and again
/// on every SIGHUP (when the operator may have fixed coturn's secret).
async fn check_turn_now_and_on_sighup(checker: calling_server::turn_check::TurnChecker) {
    checker.run().await;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            checker.run().await;
        }
    }
}

/// Raises the soft open-file limit to the hard one (each connection is a
/// file descriptor); returns (soft, hard) as now in force.
#[cfg(unix)]
fn raise_nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim = want;
        }
    }
    // rlim_t is u64 on Linux but not on every unix.
    #[allow(clippy::unnecessary_cast)]
    Some((lim.rlim_cur as u64, lim.rlim_max as u64))
}

#[cfg(not(unix))]
fn raise_nofile_limit() -> Option<(u64, u64)> {
    None
}

/// Colour codes in the logs only on a terminal, and never with `NO_COLOR`
/// set (<https://no-color.org>): a redirected log is plain text. The rule
/// of `calling::log_colour`, which this crate does not depend on.
fn colour(stream: &impl std::io::IsTerminal) -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream.is_terminal()
}

fn random_key() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
