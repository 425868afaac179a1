//! Cluster mode: several server processes as one service, sharing
//! presence, rooms and routing through one Redis ([`RedisHub`]).
//!
//! The design, its bounds and its failure modes are in docs/CLUSTER.md. In
//! short:
//!
//! - Each node has an id and a lease key in Redis, renewed every third of
//!   the lease; a node whose lease lapsed is dead, and the first live node
//!   to notice removes its users and their room memberships, telling the
//!   rooms' other members.
//! - Presence is one key per user naming the node and session that hold
//!   it. A login replaces the key atomically (a Lua script) and tells the
//!   previous node to kick its session.
//! - Rooms are a hash of members and a set of allowed users per room,
//!   changed only by Lua scripts, which apply the same rules as the
//!   single-process hub.
//! - Frames for users on other nodes go through the recipient node's
//!   pub/sub channel. `PUBLISH` says how many subscribers got it: none
//!   means that node is gone, and the users are reported offline at once.
//! - Redis commands run on one multiplexed connection, in the order they
//!   are issued, so two frames from one sender to one recipient arrive in
//!   the order they were sent.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use calling_core::UserId;
use calling_signal::protocol::{ErrorCode, MAX_ALLOW_LIST, ServerFrame};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, info, warn};

use crate::hub::{Hub, Outbound, QueueError, RoomLimits, SessionHandle, SessionId, Undelivered};

/// How a [`RedisHub`] joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The Redis URL (`redis://host:port/`, `rediss://` for TLS).
    pub redis_url: String,
    /// How long a node's lease lasts: a node that stops renewing it (killed,
    /// cut off from Redis) has its users removed cluster-wide after at most
    /// the lease and one check period ([`Self::lease`] / 3). Default 3 s.
    pub lease: Duration,
    /// Prefix of every Redis key and channel, so that several clusters can
    /// share one Redis. Default `calling:`.
    pub prefix: String,
    /// Longest a Redis command may take before it counts as failed.
    /// Default 1 s.
    pub command_timeout: Duration,
}

impl ClusterConfig {
    /// Defaults for a cluster on the Redis at `redis_url`.
    pub fn new(redis_url: impl Into<String>) -> Self {
        ClusterConfig {
            redis_url: redis_url.into(),
            lease: Duration::from_secs(3),
            prefix: "calling:".into(),
            command_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a [`RedisHub`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL does not parse.
    #[error("bad Redis URL: {0}")]
    BadUrl(String),
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {source}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What failed.
        source: redis::RedisError,
    },
}

/// What goes through a node's channel, in a compact text form (user ids
/// hold no `,`, space or newline, so they need no escaping, and the frame
/// is carried as it is):
///
/// - `m<user>,<user>...\n<message frame>`: a `message` for those users;
/// - `n<user>,<user>...\n<room notice frame>`: a `room_enter`/`room_leave`;
/// - `k<user> <session>`: that session was replaced by a login elsewhere.
#[derive(Debug, PartialEq)]
enum Envelope {
    Message { to: Vec<UserId>, f: String },
    Notice { to: Vec<UserId>, f: String },
    Kick { u: UserId, s: SessionId },
}

impl Envelope {
    /// `<kind><user>,<user>...\n<frame>`.
    fn listed(kind: char, to: &[UserId], f: &str) -> String {
        let mut out = String::with_capacity(f.len() + 16 * to.len() + 2);
        out.push(kind);
        for (i, u) in to.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(u.as_str());
        }
        out.push('\n');
        out.push_str(f);
        out
    }

    fn encode(&self) -> String {
        match self {
            Envelope::Message { to, f } => Self::listed('m', to, f),
            Envelope::Notice { to, f } => Self::listed('n', to, f),
            Envelope::Kick { u, s } => format!("k{u} {s}"),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Envelope, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let users = |list: &str| -> Result<Vec<UserId>, String> {
            list.split(',')
                .map(|u| UserId::new(u).map_err(|e| format!("user {u:?}: {e}")))
                .collect()
        };
        let kind = text.chars().next().ok_or("empty")?;
        let rest = &text[kind.len_utf8()..];
        match kind {
            'm' | 'n' => {
                let (list, f) = rest.split_once('\n').ok_or("no frame")?;
                let to = users(list)?;
                let f = f.to_owned();
                Ok(if kind == 'm' {
                    Envelope::Message { to, f }
                } else {
                    Envelope::Notice { to, f }
                })
            }
            'k' => {
                let (u, sid) = rest.split_once(' ').ok_or("no session")?;
                let u = UserId::new(u).map_err(|e| e.to_string())?;
                let s = sid.parse().map_err(|_| "bad session".to_string())?;
                Ok(Envelope::Kick { u, s })
            }
            other => Err(format!("unknown kind {other:?}")),
        }
    }
}

struct LocalUser {
    handle: SessionHandle,
    /// The rooms this session is in, and whether each was closed (had an
    /// allow list) when joined: what a rebuild after a Redis restart
    /// puts back.
    rooms: HashMap<String, bool>,
}

/// Work that failed while Redis was away and is done when it is back, so
/// that it leaves no user or member behind.
#[derive(Debug, Clone)]
enum Pending {
    Unregister {
        user: UserId,
        me: String,
    },
    Leave {
        room: String,
        user: UserId,
        me: String,
    },
}

struct Inner {
    node: String,
    config: ClusterConfig,
    con: ConnectionManager,
    local: Mutex<HashMap<UserId, LocalUser>>,
    pending: Mutex<Vec<Pending>>,
    /// The last lease renewal worked.
    leased: AtomicBool,
    /// The node's channel is subscribed.
    subscribed: AtomicBool,
    scripts: Scripts,
}

/// A [`Hub`] shared by every server using the same Redis: users on any
/// node reach each other, one session per user cluster-wide, rooms span
/// nodes. See the module docs and docs/CLUSTER.md.
pub struct RedisHub {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for RedisHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHub")
            .field("node", &self.inner.node)
            .field("online", &self.online())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisHub {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps, consistent between statements: a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisHub {
    /// Connects to Redis, takes a lease for this node and subscribes to its
    /// channel. Fails if Redis cannot be reached now; once running, the hub
    /// rides out Redis outages (see [`Hub::health`]).
    pub async fn connect(config: ClusterConfig) -> Result<RedisHub, ClusterError> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| ClusterError::BadUrl(e.to_string()))?;
        let url = config.redis_url.clone();
        let unreachable = move |source| ClusterError::Unreachable {
            url: url.clone(),
            source,
        };
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.command_timeout))
            .set_connection_timeout(Some(config.command_timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_with_config(client.clone(), manager)
            .await
            .map_err(&unreachable)?;
        let node = format!("{:032x}", rand::random::<u128>());
        let inner = Arc::new(Inner {
            node,
            config,
            con,
            local: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            leased: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            scripts: Scripts::new(),
        });
        inner.renew_lease().await.map_err(&unreachable)?;
        inner.leased.store(true, Ordering::Relaxed);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let listen = tokio::spawn(inner.clone().listen(client, ready_tx));
        // The channel is ours before any session can be routed to us.
        let _ = tokio::time::timeout(inner.config.command_timeout * 5, ready_rx).await;
        let keep = tokio::spawn(inner.clone().keep_lease());
        info!(node = %inner.node, url = %inner.config.redis_url, "joined the cluster");
        Ok(RedisHub {
            inner,
            tasks: vec![listen, keep],
        })
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }
}

impl Inner {
    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.config.prefix)
    }

    fn channel(&self, node: &str) -> String {
        self.key("ch", node)
    }

    /// `node session`, the value of a user's presence key and room entries.
    fn me(&self, session: SessionId) -> String {
        format!("{} {session}", self.node)
    }

    fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    async fn renew_lease(&self) -> redis::RedisResult<Option<String>> {
        let lease_ms = u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX);
        let mut con = self.con();
        let (old,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(self.key("lease", &self.node))
            .arg("1")
            .arg("PX")
            .arg(lease_ms)
            .arg("GET")
            .cmd("SADD")
            .arg(self.key("nodes", "all"))
            .arg(&self.node)
            .ignore()
            .query_async(&mut con)
            .await?;
        Ok(old)
    }

    /// Renews the lease every third of it; after an outage (or a lapse,
    /// when this node was taken for dead) puts this node's sessions and
    /// rooms back; removes the nodes whose lease lapsed.
    async fn keep_lease(self: Arc<Self>) {
        let period = self.config.lease / 3;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.renew_lease().await {
                Ok(old) => {
                    let was_ok = self.leased.swap(true, Ordering::Relaxed);
                    if !was_ok {
                        info!(node = %self.node, "Redis is back");
                    }
                    if old.is_none() {
                        // The lease had lapsed (an outage longer than it, or
                        // a Redis restart that lost everything): others may
                        // have removed our users; put them back.
                        warn!(node = %self.node, "lease had lapsed: rebuilding this node's presence and rooms");
                        self.rebuild().await;
                    }
                    self.retry_pending().await;
                    self.reap_dead_nodes().await;
                }
                Err(e) => {
                    if self.leased.swap(false, Ordering::Relaxed) {
                        warn!(node = %self.node, error = %e, "lost Redis: refusing logins and routing to other nodes until it is back");
                    }
                }
            }
        }
    }

    /// Subscribes to this node's channel and hands what arrives to local
    /// sessions; resubscribes with backoff when the link drops.
    async fn listen(
        self: Arc<Self>,
        client: redis::Client,
        ready: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut ready = Some(ready);
        let mut delay = Duration::from_millis(50);
        let channel = self.channel(&self.node);
        loop {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                redis::RedisResult::Ok(pubsub)
            };
            match tokio::time::timeout(self.config.command_timeout * 2, subscribed).await {
                Ok(Ok(mut pubsub)) => {
                    self.subscribed.store(true, Ordering::Relaxed);
                    delay = Duration::from_millis(50);
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    debug!(node = %self.node, "subscribed to the node channel");
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        self.on_envelope(msg.get_payload_bytes());
                    }
                    self.subscribed.store(false, Ordering::Relaxed);
                    warn!(node = %self.node, "the node channel's Redis link dropped");
                }
                Ok(Err(e)) => debug!(error = %e, "subscribing to the node channel failed"),
                Err(_) => debug!("subscribing to the node channel timed out"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    fn on_envelope(&self, payload: &[u8]) {
        let envelope = match Envelope::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "dropped a malformed frame from the node channel");
                return;
            }
        };
        let local = lock(&self.local);
        match envelope {
            Envelope::Message { to, f } => {
                let frame = Utf8Bytes::from(f);
                let now = Instant::now();
                for user in to {
                    match local.get(&user) {
                        Some(u) => {
                            if u.handle.tx.try_send(Outbound::Message(frame.clone(), now))
                                == Err(QueueError::Full)
                            {
                                // The connection hears of it and closes (4006).
                                debug!(%user, "queue full for a frame from another node");
                            }
                        }
                        None => debug!(%user, "frame from another node for a user gone from here"),
                    }
                }
            }
            Envelope::Notice { to, f } => {
                let frame = Utf8Bytes::from(f);
                for user in to {
                    if let Some(u) = local.get(&user) {
                        let _ = u.handle.tx.try_send(Outbound::Frame(frame.clone()));
                    }
                }
            }
            Envelope::Kick { u, s } => {
                drop(local);
                let mut local = lock(&self.local);
                if local.get(&u).is_some_and(|l| l.handle.id == s)
                    && let Some(old) = local.remove(&u)
                {
                    debug!(user = %u, session = s, "kicked by a login on another node");
                    old.handle.kick.notify_one();
                }
            }
        }
    }

    /// Publishes `envelope` on `node`'s channel: whether that node got it.
    async fn publish(&self, node: &str, envelope: &Envelope) -> redis::RedisResult<bool> {
        let body = envelope.encode();
        let mut con = self.con();
        let receivers: i64 = con.publish(self.channel(node), body).await?;
        Ok(receivers > 0)
    }

    /// Tells the members in `notices` (room, then `(user, "node session")`
    /// pairs) that `user` entered or left: local ones directly, the others
    /// through their nodes' channels.
    async fn tell(&self, notices: Vec<Notice>, make: impl Fn(&str) -> ServerFrame) {
        for n in notices {
            let frame = make(&n.room).to_json();
            let mut by_node: BTreeMap<String, Vec<UserId>> = BTreeMap::new();
            for (member, at) in n.members {
                let node = at.split(' ').next().unwrap_or_default().to_owned();
                by_node.entry(node).or_default().push(member);
            }
            for (node, users) in by_node {
                if node == self.node {
                    let local = lock(&self.local);
                    let f = Utf8Bytes::from(frame.clone());
                    for u in &users {
                        if let Some(l) = local.get(u) {
                            let _ = l.handle.tx.try_send(Outbound::Frame(f.clone()));
                        }
                    }
                    continue;
                }
                let env = Envelope::Notice {
                    to: users,
                    f: frame.clone(),
                };
                if let Err(e) = self.publish(&node, &env).await {
                    debug!(error = %e, room = %n.room, "room notice to another node lost");
                }
            }
        }
    }

    async fn tell_left(&self, user: &UserId, notices: Vec<Notice>) {
        self.tell(notices, |room| ServerFrame::RoomLeave {
            room: room.to_owned(),
            user: user.clone(),
        })
        .await;
    }

    async fn unregister_remote(&self, user: &UserId, me: &str) -> redis::RedisResult<()> {
        let reply: Vec<String> = self
            .scripts
            .unregister
            .arg(&self.config.prefix)
            .arg(user.as_str())
            .arg(me)
            .arg(&self.node)
            .invoke_async(&mut self.con())
            .await?;
        let notices = parse_notices(&reply);
        self.tell_left(user, notices).await;
        Ok(())
    }

    async fn leave_remote(
        &self,
        room: &str,
        user: &UserId,
        me: &str,
    ) -> redis::RedisResult<Result<(), ErrorCode>> {
        let reply: Vec<String> = self
            .scripts
            .leave
            .arg(&self.config.prefix)
            .arg(room)
            .arg(user.as_str())
            .arg(me)
            .invoke_async(&mut self.con())
            .await?;
        if let Some(code) = script_error(&reply) {
            return Ok(Err(code));
        }
        let notices = parse_notices(reply.get(1..).unwrap_or_default());
        self.tell_left(user, notices).await;
        Ok(Ok(()))
    }

    fn remember(&self, p: Pending) {
        lock(&self.pending).push(p);
    }

    async fn retry_pending(&self) {
        let todo = std::mem::take(&mut *lock(&self.pending));
        for p in todo {
            let done = match &p {
                Pending::Unregister { user, me } => self.unregister_remote(user, me).await,
                Pending::Leave { room, user, me } => {
                    self.leave_remote(room, user, me).await.map(|_| ())
                }
            };
            if done.is_err() {
                self.remember(p);
            }
        }
    }

    /// Puts every local session and its room memberships back into Redis;
    /// a session whose user another node now holds is kicked here.
    async fn rebuild(&self) {
        type Rooms = Vec<(String, bool)>;
        let sessions: Vec<(UserId, SessionId, Rooms)> = lock(&self.local)
            .iter()
            .map(|(u, l)| {
                let rooms = l.rooms.iter().map(|(r, c)| (r.clone(), *c)).collect();
                (u.clone(), l.handle.id, rooms)
            })
            .collect();
        let mut kept = 0usize;
        for (user, sid, rooms) in sessions {
            let me = self.me(sid);
            let mut call = self.scripts.claim.prepare_invoke();
            call.arg(&self.config.prefix)
                .arg(user.as_str())
                .arg(&me)
                .arg(&self.node);
            for (room, closed) in &rooms {
                call.arg(room).arg(if *closed { "1" } else { "0" });
            }
            match call.invoke_async::<i64>(&mut self.con()).await {
                Ok(1) => kept += 1,
                Ok(_) => {
                    let mut local = lock(&self.local);
                    if local.get(&user).is_some_and(|l| l.handle.id == sid)
                        && let Some(old) = local.remove(&user)
                    {
                        info!(%user, "logged in elsewhere while Redis was away: kicked here");
                        old.handle.kick.notify_one();
                    }
                }
                Err(e) => {
                    warn!(error = %e, "rebuilding presence failed; trying again on the next renewal");
                    // The next renewal finds the lease present; force a
                    // rebuild then by dropping it.
                    let mut con = self.con();
                    let _: redis::RedisResult<()> = con.del(self.key("lease", &self.node)).await;
                    return;
                }
            }
        }
        info!(node = %self.node, sessions = kept, "presence rebuilt");
    }

    /// Removes the users and room memberships of nodes whose lease lapsed.
    async fn reap_dead_nodes(&self) {
        let mut con = self.con();
        let nodes: Vec<String> = match con.smembers(self.key("nodes", "all")).await {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "listing the cluster's nodes failed");
                return;
            }
        };
        for node in nodes.into_iter().filter(|n| *n != self.node) {
            let alive: bool = match con.exists(self.key("lease", &node)).await {
                Ok(a) => a,
                Err(_) => return,
            };
            if alive {
                continue;
            }
            // One node reaps, the others see the lock and go on.
            let lock_ms = u64::try_from((self.config.lease * 3).as_millis()).unwrap_or(u64::MAX);
            let got: Option<String> = redis::cmd("SET")
                .arg(self.key("reaping", &node))
                .arg(&self.node)
                .arg("NX")
                .arg("PX")
                .arg(lock_ms)
                .query_async(&mut con)
                .await
                .unwrap_or(None);
            if got.is_none() {
                continue;
            }
            let reply: redis::RedisResult<Vec<String>> = self
                .scripts
                .reap
                .arg(&self.config.prefix)
                .arg(&node)
                .invoke_async(&mut con)
                .await;
            match reply {
                Ok(reply) => {
                    let (users, notices) = parse_reaped(&reply);
                    warn!(dead = %node, users, "a node's lease lapsed: its users are offline");
                    for (user, notices) in notices {
                        self.tell_left(&user, notices).await;
                    }
                }
                Err(e) => warn!(dead = %node, error = %e, "removing a dead node's users failed"),
            }
        }
    }
}

/// One room's members to tell of an entry or a departure.
#[derive(Debug, PartialEq)]
struct Notice {
    room: String,
    members: Vec<(UserId, String)>,
}

/// `ERR code` replies of the scripts.
fn script_error(reply: &[String]) -> Option<ErrorCode> {
    if reply.first().map(String::as_str) != Some("err") {
        return None;
    }
    let code = reply.get(1).map(String::as_str).unwrap_or("internal");
    Some(
        serde_json::from_value(serde_json::Value::String(code.to_owned()))
            .unwrap_or(ErrorCode::Internal),
    )
}

/// Reads `room, n, user1, at1, ... usern, atn` groups.
fn parse_notices(flat: &[String]) -> Vec<Notice> {
    let mut out = Vec::new();
    let mut it = flat.iter();
    while let Some(room) = it.next() {
        let Some(n) = it.next().and_then(|n| n.parse::<usize>().ok()) else {
            break;
        };
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let (Some(u), Some(at)) = (it.next(), it.next()) else {
                break;
            };
            if let Ok(u) = UserId::new(u.as_str()) {
                members.push((u, at.clone()));
            }
        }
        out.push(Notice {
            room: room.clone(),
            members,
        });
    }
    out
}

/// Reads the reap script's reply: `user, k, <k notice groups>` per user.
fn parse_reaped(flat: &[String]) -> (usize, Vec<(UserId, Vec<Notice>)>) {
    let mut out = Vec::new();
    let mut users = 0;
    let mut i = 0;
    while i + 1 < flat.len() {
        let user = &flat[i];
        let Ok(k) = flat[i + 1].parse::<usize>() else {
            break;
        };
        i += 2;
        // Each group: room, n, then 2n fields.
        let start = i;
        for _ in 0..k {
            let n = flat
                .get(i + 1)
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            i += 2 + 2 * n;
        }
        users += 1;
        if let Ok(u) = UserId::new(user.as_str()) {
            let notices = parse_notices(flat.get(start..i.min(flat.len())).unwrap_or_default());
            if !notices.is_empty() {
                out.push((u, notices));
            }
        }
    }
    (users, out)
}

#[async_trait]
impl Hub for RedisHub {
    async fn register(&self, user: &UserId, session: SessionHandle) -> Result<(), ErrorCode> {
        let h = &self.inner;
        if !h.leased.load(Ordering::Relaxed) || !h.subscribed.load(Ordering::Relaxed) {
            return Err(ErrorCode::Unavailable);
        }
        let me = h.me(session.id);
        let reply: Vec<String> = h
            .scripts
            .register
            .arg(&h.config.prefix)
            .arg(user.as_str())
            .arg(&me)
            .arg(&h.node)
            .invoke_async(&mut h.con())
            .await
            .map_err(|e| {
                warn!(%user, error = %e, "login refused: Redis failed");
                ErrorCode::Unavailable
            })?;
        let old = reply.first().cloned().unwrap_or_default();
        let notices = parse_notices(reply.get(1..).unwrap_or_default());
        // Locally first, so that frames routed here from now on find it.
        let replaced = lock(&h.local).insert(
            user.clone(),
            LocalUser {
                handle: session,
                rooms: HashMap::new(),
            },
        );
        if let Some(old) = replaced {
            old.handle.kick.notify_one();
        }
        if let Some((node, sid)) = old.split_once(' ')
            && node != h.node
        {
            let sid = sid.parse().unwrap_or(0);
            let kick = Envelope::Kick {
                u: user.clone(),
                s: sid,
            };
            if let Err(e) = h.publish(node, &kick).await {
                warn!(%user, error = %e, "could not tell the previous node to kick its session");
            }
        }
        h.tell_left(user, notices).await;
        Ok(())
    }

    async fn unregister(&self, user: &UserId, session: SessionId) {
        let h = &self.inner;
        {
            let mut local = lock(&h.local);
            if local.get(user).is_none_or(|l| l.handle.id != session) {
                return;
            }
            local.remove(user);
        }
        let me = h.me(session);
        if let Err(e) = h.unregister_remote(user, &me).await {
            debug!(%user, error = %e, "unregister postponed until Redis is back");
            h.remember(Pending::Unregister {
                user: user.clone(),
                me,
            });
        }
    }

    async fn deliver(&self, to: &[UserId], frame: Utf8Bytes, read_at: Instant) -> Undelivered {
        let h = &self.inner;
        let mut out = Undelivered::default();
        let mut remote = Vec::new();
        {
            let local = lock(&h.local);
            for user in to {
                match local.get(user) {
                    Some(l) => match l
                        .handle
                        .tx
                        .try_send(Outbound::Message(frame.clone(), read_at))
                    {
                        Ok(()) => {}
                        Err(QueueError::Full) => out.congested.push(user.clone()),
                        Err(QueueError::Closed) => out.offline.push(user.clone()),
                    },
                    None => remote.push(user.clone()),
                }
            }
        }
        if remote.is_empty() {
            return out;
        }
        if !h.leased.load(Ordering::Relaxed) {
            out.unavailable.extend(remote);
            return out;
        }
        // The users' nodes, then one pipelined PUBLISH per node. (A Lua
        // script doing both in one round trip measured 4 ms slower per
        // delivery: Redis holds what a script publishes back a while.)
        let keys: Vec<String> = remote.iter().map(|u| h.key("user", u.as_str())).collect();
        let at: Vec<Option<String>> = match redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut h.con())
            .await
        {
            Ok(at) => at,
            Err(e) => {
                debug!(error = %e, "presence lookup failed");
                out.unavailable.extend(remote);
                return out;
            }
        };
        let mut by_node: BTreeMap<String, Vec<UserId>> = BTreeMap::new();
        for (user, at) in remote.into_iter().zip(at) {
            match at.as_deref().and_then(|a| a.split_once(' ')) {
                Some((node, _)) if node != h.node => {
                    by_node.entry(node.to_owned()).or_default().push(user);
                }
                // Not logged in, or gone from this node a moment ago.
                _ => out.offline.push(user),
            }
        }
        if by_node.is_empty() {
            return out;
        }
        let f = frame.as_str().to_owned();
        let mut pipe = redis::pipe();
        let mut groups = Vec::with_capacity(by_node.len());
        for (node, users) in by_node {
            pipe.cmd("PUBLISH")
                .arg(h.channel(&node))
                .arg(Envelope::listed('m', &users, &f));
            groups.push(users);
        }
        match pipe.query_async::<Vec<i64>>(&mut h.con()).await {
            Ok(receivers) => {
                for (users, n) in groups.into_iter().zip(receivers) {
                    if n == 0 {
                        // That node is gone (its subscription with it).
                        out.offline.extend(users);
                    }
                }
            }
            Err(e) => {
                debug!(error = %e, "publishing to other nodes failed");
                for users in groups {
                    out.unavailable.extend(users);
                }
            }
        }
        // Back in the order given.
        let order: HashMap<&UserId, usize> = to.iter().enumerate().map(|(i, u)| (u, i)).collect();
        for list in [&mut out.offline, &mut out.congested, &mut out.unavailable] {
            list.sort_by_key(|u| order.get(u).copied().unwrap_or(usize::MAX));
        }
        out
    }

    async fn join(
        &self,
        room: &str,
        user: &UserId,
        session: SessionId,
        allow: &[UserId],
        limits: RoomLimits,
    ) -> Result<Vec<UserId>, ErrorCode> {
        if allow.len() > MAX_ALLOW_LIST {
            return Err(ErrorCode::RoomFull);
        }
        let h = &self.inner;
        if lock(&h.local)
            .get(user)
            .is_none_or(|l| l.handle.id != session)
        {
            return Err(ErrorCode::NotLoggedIn);
        }
        let me = h.me(session);
        let mut call = h.scripts.join.prepare_invoke();
        call.arg(&h.config.prefix)
            .arg(room)
            .arg(user.as_str())
            .arg(&me)
            .arg(limits.max_rooms_per_user)
            .arg(limits.max_room_members)
            .arg(MAX_ALLOW_LIST);
        for u in allow {
            call.arg(u.as_str());
        }
        let reply: Vec<String> = call.invoke_async(&mut h.con()).await.map_err(|e| {
            debug!(error = %e, "join failed: Redis");
            ErrorCode::Unavailable
        })?;
        if let Some(code) = script_error(&reply) {
            return Err(code);
        }
        // ok, already (0/1), closed (0/1), then the members as one group.
        let already = reply.get(1).map(String::as_str) == Some("1");
        let closed = reply.get(2).map(String::as_str) == Some("1");
        let group = parse_notices(reply.get(3..).unwrap_or_default());
        let all: Vec<(UserId, String)> = group.into_iter().flat_map(|n| n.members).collect();
        let mut members: Vec<UserId> = all.iter().map(|(u, _)| u.clone()).collect();
        members.sort();
        if let Some(l) = lock(&h.local).get_mut(user) {
            l.rooms.insert(room.to_owned(), closed);
        }
        if !already {
            let others: Vec<(UserId, String)> =
                all.into_iter().filter(|(u, _)| u != user).collect();
            let notice = Notice {
                room: room.to_owned(),
                members: others,
            };
            h.tell(vec![notice], |room| ServerFrame::RoomEnter {
                room: room.to_owned(),
                user: user.clone(),
            })
            .await;
        }
        Ok(members)
    }

    async fn allow(
        &self,
        room: &str,
        user: &UserId,
        session: SessionId,
        users: &[UserId],
    ) -> Result<(), ErrorCode> {
        if users.len() > MAX_ALLOW_LIST {
            return Err(ErrorCode::RoomFull);
        }
        let h = &self.inner;
        if lock(&h.local)
            .get(user)
            .is_none_or(|l| l.handle.id != session)
        {
            return Err(ErrorCode::NotInRoom);
        }
        let mut call = h.scripts.allow.prepare_invoke();
        call.arg(&h.config.prefix)
            .arg(room)
            .arg(user.as_str())
            .arg(h.me(session))
            .arg(MAX_ALLOW_LIST);
        for u in users {
            call.arg(u.as_str());
        }
        let reply: Vec<String> = call.invoke_async(&mut h.con()).await.map_err(|e| {
            debug!(error = %e, "allow failed: Redis");
            ErrorCode::Unavailable
        })?;
        match script_error(&reply) {
            Some(code) => Err(code),
            None => Ok(()),
        }
    }

    async fn leave(&self, room: &str, user: &UserId, session: SessionId) -> Result<(), ErrorCode> {
        let h = &self.inner;
        {
            let mut local = lock(&h.local);
            let Some(l) = local.get_mut(user).filter(|l| l.handle.id == session) else {
                return Err(ErrorCode::NotLoggedIn);
            };
            if l.rooms.remove(room).is_none() {
                return Err(ErrorCode::NotInRoom);
            }
        }
        let me = h.me(session);
        match h.leave_remote(room, user, &me).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "leave postponed until Redis is back");
                h.remember(Pending::Leave {
                    room: room.to_owned(),
                    user: user.clone(),
                    me,
                });
                Ok(())
            }
        }
    }

    fn online(&self) -> usize {
        lock(&self.inner.local).len()
    }

    fn rooms(&self) -> usize {
        let local = lock(&self.inner.local);
        let mut rooms: Vec<&String> = local.values().flat_map(|l| l.rooms.keys()).collect();
        rooms.sort();
        rooms.dedup();
        rooms.len()
    }

    fn health(&self) -> Result<(), String> {
        let h = &self.inner;
        if !h.leased.load(Ordering::Relaxed) {
            return Err("cannot reach Redis".into());
        }
        if !h.subscribed.load(Ordering::Relaxed) {
            return Err("not subscribed to this node's Redis channel".into());
        }
        Ok(())
    }
}

/// The Lua scripts, each run atomically by Redis. Keys are built inside
/// from the prefix (`ARGV[1]`): one Redis, not Redis Cluster.
struct Scripts {
    register: Script,
    unregister: Script,
    join: Script,
    allow: Script,
    leave: Script,
    claim: Script,
    reap: Script,
}

/// Shared by the scripts: removes `user` from `room` if its entry is
/// `at`, deleting an emptied room; appends the remaining members to `out`
/// as a notice group.
const LUA_DROP: &str = r#"
local function drop(p, room, user, at, out)
  local mk = p .. 'members:' .. room
  if redis.call('HGET', mk, user) ~= at then return end
  redis.call('HDEL', mk, user)
  local rest = redis.call('HGETALL', mk)
  if #rest == 0 then
    redis.call('DEL', mk, p .. 'allow:' .. room)
    return
  end
  table.insert(out, room)
  table.insert(out, tostring(#rest / 2))
  for _, v in ipairs(rest) do table.insert(out, v) end
end
local function drop_all(p, user, at, out)
  local rk = p .. 'rooms-of:' .. user
  for _, room in ipairs(redis.call('SMEMBERS', rk)) do drop(p, room, user, at, out) end
  redis.call('DEL', rk)
end
"#;

/// ARGV: prefix, user, me, node. Returns the previous holder ('' if none)
/// and the notices for the rooms its session left.
const LUA_REGISTER: &str = r#"
local p, user, me, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local uk = p .. 'user:' .. user
local old = redis.call('GET', uk)
redis.call('SET', uk, me)
redis.call('SADD', p .. 'users-of:' .. node, user)
local out = {old or ''}
if old and old ~= me then
  local oldnode = string.match(old, '^(%S+)')
  if oldnode ~= node then redis.call('SREM', p .. 'users-of:' .. oldnode, user) end
  drop_all(p, user, old, out)
end
return out
"#;

/// ARGV: prefix, user, me, node. Notices of the rooms left.
const LUA_UNREGISTER: &str = r#"
local p, user, me, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local uk = p .. 'user:' .. user
if redis.call('GET', uk) ~= me then return {} end
redis.call('DEL', uk)
redis.call('SREM', p .. 'users-of:' .. node, user)
local out = {}
drop_all(p, user, me, out)
return out
"#;

/// ARGV: prefix, room, user, me, max_rooms, max_members, max_allow,
/// allow... Returns {'err', code} or {'ok', already, closed, room, n,
/// members...}. The checks and their order are LocalHub's.
const LUA_JOIN: &str = r#"
local p, room, user, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_rooms, max_members, max_allow = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local allow = {}
for i = 8, #ARGV do table.insert(allow, ARGV[i]) end
if redis.call('GET', p .. 'user:' .. user) ~= me then return {'err', 'not_logged_in'} end
local mk, ak, rk = p .. 'members:' .. room, p .. 'allow:' .. room, p .. 'rooms-of:' .. user
local exists = redis.call('EXISTS', mk) == 1
if exists then
  local closed = redis.call('SCARD', ak) > 0
  if not closed then
    if #allow > 0 then return {'err', 'not_allowed'} end
  elseif redis.call('SISMEMBER', ak, user) == 0 then
    return {'err', 'not_allowed'}
  end
end
local already = redis.call('HGET', mk, user) == me
if not already and redis.call('SCARD', rk) >= max_rooms then return {'err', 'too_many_rooms'} end
if exists then
  if not already and redis.call('HLEN', mk) >= max_members then return {'err', 'room_full'} end
  if #allow > 0 then
    local new = 0
    for _, u in ipairs(allow) do
      if redis.call('SISMEMBER', ak, u) == 0 then new = new + 1 end
    end
    if redis.call('SCARD', ak) + new > max_allow then return {'err', 'room_full'} end
    redis.call('SADD', ak, unpack(allow))
  end
else
  if max_members == 0 then return {'err', 'room_full'} end
  if #allow > 0 then redis.call('SADD', ak, user, unpack(allow)) end
end
redis.call('HSET', mk, user, me)
redis.call('SADD', rk, room)
local closed = redis.call('SCARD', ak) > 0
local all = redis.call('HGETALL', mk)
local out = {'ok', already and '1' or '0', closed and '1' or '0', room, tostring(#all / 2)}
for _, v in ipairs(all) do table.insert(out, v) end
return out
"#;

/// ARGV: prefix, room, user, me, max_allow, users...
const LUA_ALLOW: &str = r#"
local p, room, user, me, max_allow = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('HGET', p .. 'members:' .. room, user) ~= me then return {'err', 'not_in_room'} end
local ak = p .. 'allow:' .. room
if redis.call('SCARD', ak) == 0 then return {'err', 'not_allowed'} end
local users = {}
local new = 0
for i = 6, #ARGV do
  table.insert(users, ARGV[i])
  if redis.call('SISMEMBER', ak, ARGV[i]) == 0 then new = new + 1 end
end
if redis.call('SCARD', ak) + new > max_allow then return {'err', 'room_full'} end
if #users > 0 then redis.call('SADD', ak, unpack(users)) end
return {'ok'}
"#;

/// ARGV: prefix, room, user, me. {'err', code} or {'ok', notices...}.
const LUA_LEAVE: &str = r#"
local p, room, user, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', p .. 'members:' .. room, user) ~= me then return {'err', 'not_in_room'} end
redis.call('SREM', p .. 'rooms-of:' .. user, room)
local out = {'ok'}
drop(p, room, user, me, out)
return out
"#;

/// ARGV: prefix, user, me, node, then (room, closed) pairs. Puts a local
/// session back after a lapse or a Redis restart: 1, or 0 when another
/// session holds the user now.
const LUA_CLAIM: &str = r#"
local p, user, me, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local uk = p .. 'user:' .. user
local cur = redis.call('GET', uk)
if cur and cur ~= me then return 0 end
redis.call('SET', uk, me)
redis.call('SADD', p .. 'users-of:' .. node, user)
redis.call('SADD', p .. 'nodes:all', node)
for i = 5, #ARGV - 1, 2 do
  local room, closed = ARGV[i], ARGV[i + 1]
  local mk, ak = p .. 'members:' .. room, p .. 'allow:' .. room
  local fresh = redis.call('EXISTS', mk) == 0
  redis.call('HSET', mk, user, me)
  redis.call('SADD', p .. 'rooms-of:' .. user, room)
  -- A closed room rebuilt from nothing admits its members back.
  if closed == '1' and (fresh or redis.call('SCARD', ak) > 0) then redis.call('SADD', ak, user) end
end
return 1
"#;

/// ARGV: prefix, dead node. Removes its users; returns per user: user, k,
/// then k notice groups.
const LUA_REAP: &str = r#"
local p, dead = ARGV[1], ARGV[2]
local nk = p .. 'users-of:' .. dead
local out = {}
for _, user in ipairs(redis.call('SMEMBERS', nk)) do
  local uk = p .. 'user:' .. user
  local at = redis.call('GET', uk)
  if at and string.sub(at, 1, #dead + 1) == dead .. ' ' then
    redis.call('DEL', uk)
    local groups = {}
    drop_all(p, user, at, groups)
    local k, i = 0, 1
    while i <= #groups do
      k = k + 1
      i = i + 2 + 2 * tonumber(groups[i + 1])
    end
    table.insert(out, user)
    table.insert(out, tostring(k))
    for _, v in ipairs(groups) do table.insert(out, v) end
  end
end
redis.call('DEL', nk)
redis.call('SREM', p .. 'nodes:all', dead)
return out
"#;

impl Scripts {
    fn new() -> Self {
        let with_drop = |body: &str| Script::new(&format!("{LUA_DROP}{body}"));
        Scripts {
            register: with_drop(LUA_REGISTER),
            unregister: with_drop(LUA_UNREGISTER),
            join: Script::new(LUA_JOIN),
            allow: Script::new(LUA_ALLOW),
            leave: with_drop(LUA_LEAVE),
            claim: Script::new(LUA_CLAIM),
            reap: with_drop(LUA_REAP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn notices_parse_and_stop_at_garbage() {
        let n = parse_notices(&s(&["r1", "2", "a", "n1 1", "b", "n2 2", "r2", "0"]));
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].room, "r1");
        assert_eq!(n[0].members.len(), 2);
        assert_eq!(n[1].members.len(), 0);
        // A count that is not a number ends the list; nothing panics.
        assert!(parse_notices(&s(&["r1", "x", "a"])).is_empty());
        assert_eq!(parse_notices(&s(&["r1", "3", "a", "n"])).len(), 1);
    }

    #[test]
    fn reaped_users_carry_their_rooms() {
        let flat = s(&["alice", "1", "r", "1", "bob", "n 1", "carol", "0"]);
        let (users, notices) = parse_reaped(&flat);
        assert_eq!(users, 2);
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].0.as_str(), "alice");
        assert_eq!(notices[0].1[0].members[0].0.as_str(), "bob");
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let u = |s: &str| UserId::new(s).unwrap();
        for e in [
            Envelope::Message {
                to: vec![u("a"), u("b-2")],
                f: "{\"type\":\"message\",\"x\":\"l1\\nl2\"}".into(),
            },
            Envelope::Notice {
                to: vec![u("c")],
                f: "{}".into(),
            },
            Envelope::Kick { u: u("d"), s: 42 },
        ] {
            assert_eq!(Envelope::decode(e.encode().as_bytes()).unwrap(), e);
        }
        for bad in ["", "x", "ma,b", "m,\n{}", "kd", "kd x", "m\u{e9}\n{}"] {
            assert!(Envelope::decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(Envelope::decode(&[b'm', 0xff, b'\n']).is_err());
    }

    #[test]
    fn script_errors_map_to_codes() {
        assert_eq!(
            script_error(&s(&["err", "not_allowed"])),
            Some(ErrorCode::NotAllowed)
        );
        assert_eq!(
            script_error(&s(&["err", "nonsense"])),
            Some(ErrorCode::Internal)
        );
        assert_eq!(script_error(&s(&["ok"])), None);
    }
}
