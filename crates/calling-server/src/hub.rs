//! Presence, routing and rooms behind one small interface.
//!
//! The connection handler talks only to [`Hub`]; [`LocalHub`] is the
//! embedded in-memory default. A cluster mode (several server processes
//! sharing presence and routing through Redis pub/sub) implements the same
//! trait and plugs in through [`crate::Config::hub`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use calling_core::UserId;
use calling_signal::protocol::{ErrorCode, MAX_ALLOW_LIST, RoomAccess, ServerFrame};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Identifies one logged-in connection, unique for the server's lifetime.
pub type SessionId = u64;

/// What the hub asks a connection to do.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Write this already-encoded frame to the client.
    Frame(Utf8Bytes),
    /// Write this already-encoded `message` frame, a copy of a `send`
    /// read at the instant given, to the client (timed in
    /// [`crate::Metrics::message_delivery`]).
    Message(Utf8Bytes, Instant),
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Frame(f) | Outbound::Message(f, _) => f.len(),
        }
    }
}

/// Why [`OutboundQueue::try_send`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue holds its budget of bytes: the client is not reading.
    Full,
    /// The connection is gone.
    Closed,
}

/// A connection's outbound queue: frames in order, bounded by their size
/// in bytes rather than their number, so that a client that stops reading
/// holds at most the budget of server memory. A frame always fits in an
/// empty queue. A frame refused for lack of room also tells the connection
/// ([`Received::Overflowed`]), which then closes with 4006: the client has
/// lost frames and must reconnect, rather than go on unaware.
///
/// An empty queue holds no buffer (a few dozen bytes in all), which
/// matters with one per idle session, and waking its connection costs an
/// atomic waker, not a waiter list.
#[derive(Debug, Clone)]
pub struct OutboundQueue {
    shared: Arc<QueueShared>,
    budget: usize,
}

#[derive(Debug, Default)]
struct QueueShared {
    state: Mutex<QueueState>,
    /// The receiver waiting in [`OutboundReceiver::recv`].
    ready: futures_util::task::AtomicWaker,
    /// The receiver waiting in [`OverflowWatch::wait`].
    overflow: futures_util::task::AtomicWaker,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: std::collections::VecDeque<Outbound>,
    bytes: usize,
    closed: bool,
    overflowed: bool,
}

/// What [`OutboundReceiver::recv`] gives.
#[derive(Debug)]
pub enum Received {
    /// The next frame.
    Frame(Outbound),
    /// A frame was refused for lack of room: the client is not reading.
    Overflowed,
}

/// The connection's end of an [`OutboundQueue`]; dropping it closes the
/// queue (what is in it is dropped, and later frames are refused).
#[derive(Debug)]
pub struct OutboundReceiver {
    shared: Arc<QueueShared>,
}

/// Resolves when the queue overflows, for a connection busy writing.
#[derive(Debug)]
pub struct OverflowWatch {
    shared: Arc<QueueShared>,
}

impl QueueShared {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        // A queue of frames: still consistent after a panic elsewhere.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl OutboundQueue {
    /// A queue holding at most `budget_bytes` of frames (one frame always).
    pub fn new(budget_bytes: usize) -> (OutboundQueue, OutboundReceiver) {
        let shared = Arc::new(QueueShared::default());
        (
            OutboundQueue {
                shared: shared.clone(),
                budget: budget_bytes,
            },
            OutboundReceiver { shared },
        )
    }

    /// Queues `frame` if there is room for its bytes.
    ///
    /// # Errors
    ///
    /// [`QueueError::Full`] (and the receiver is told it overflowed) or
    /// [`QueueError::Closed`].
    pub fn try_send(&self, frame: Outbound) -> Result<(), QueueError> {
        let len = frame.len();
        {
            let mut st = self.shared.state();
            if st.closed {
                return Err(QueueError::Closed);
            }
            if st.bytes > 0 && st.bytes.saturating_add(len) > self.budget {
                st.overflowed = true;
                drop(st);
                self.shared.ready.wake();
                self.shared.overflow.wake();
                return Err(QueueError::Full);
            }
            st.bytes = st.bytes.saturating_add(len);
            st.frames.push_back(frame);
        }
        self.shared.ready.wake();
        Ok(())
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.state().bytes
    }
}

impl OutboundReceiver {
    /// The next frame (or the news that the queue overflowed, first),
    /// waiting for one.
    pub async fn recv(&mut self) -> Received {
        std::future::poll_fn(|cx| {
            if let Some(r) = self.poll_now() {
                return std::task::Poll::Ready(r);
            }
            self.shared.ready.register(cx.waker());
            // Again: a frame may have come before the waker was in place.
            match self.poll_now() {
                Some(r) => std::task::Poll::Ready(r),
                None => std::task::Poll::Pending,
            }
        })
        .await
    }

    fn poll_now(&self) -> Option<Received> {
        let mut st = self.shared.state();
        if std::mem::take(&mut st.overflowed) {
            return Some(Received::Overflowed);
        }
        Self::pop(&mut st).map(Received::Frame)
    }

    /// The next frame if one is queued now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        Self::pop(&mut self.shared.state())
    }

    fn pop(st: &mut QueueState) -> Option<Outbound> {
        let frame = st.frames.pop_front()?;
        st.bytes = st.bytes.saturating_sub(frame.len());
        if st.frames.is_empty() && st.frames.capacity() > 4 {
            // Idle again: give the buffer back.
            st.frames = std::collections::VecDeque::new();
        }
        Some(frame)
    }

    /// A future-maker that resolves when the queue overflows, to watch
    /// while a write is under way.
    pub fn overflow_watch(&self) -> OverflowWatch {
        OverflowWatch {
            shared: self.shared.clone(),
        }
    }
}

impl OverflowWatch {
    /// Resolves once the queue has overflowed (and clears the news).
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let check = || std::mem::take(&mut self.shared.state().overflowed);
            if check() {
                return std::task::Poll::Ready(());
            }
            self.shared.overflow.register(cx.waker());
            if check() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.state();
        st.closed = true;
        st.frames.clear();
        st.bytes = 0;
    }
}

/// How the hub reaches one connection.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// The session's id.
    pub id: SessionId,
    /// The connection's outbound queue.
    pub tx: OutboundQueue,
    /// Signalled when a newer login of the same user replaces this session:
    /// the connection then sends `kicked_out` and closes (4002). Separate
    /// from the queue so that a full queue cannot swallow the kick.
    pub kick: Arc<Notify>,
}

/// Room limits the hub enforces on `join`.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Most rooms one user may be in.
    pub max_rooms_per_user: usize,
    /// Most members one room may hold.
    pub max_room_members: usize,
}

/// The recipients of one delivery that did not get the frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undelivered {
    /// Not logged in.
    pub offline: Vec<UserId>,
    /// Logged in, but their outbound queue was full.
    pub congested: Vec<UserId>,
    /// Not reached because the cluster is unavailable (a cluster node cut
    /// off from Redis); whether they are online is not known.
    pub unavailable: Vec<UserId>,
}

impl Undelivered {
    /// Whether every recipient got the frame.
    pub fn is_empty(&self) -> bool {
        self.offline.is_empty() && self.congested.is_empty() && self.unavailable.is_empty()
    }

    /// How many recipients did not get it.
    pub fn len(&self) -> usize {
        self.offline.len() + self.congested.len() + self.unavailable.len()
    }
}

/// Presence, routing and rooms.
#[async_trait]
pub trait Hub: Send + Sync + 'static {
    /// Makes `session` the one session of `user`. A previous session of the
    /// same user is kicked ([`SessionHandle::kick`]) and loses its rooms (with leave
    /// notices to their members) before this returns. Refused (the login
    /// fails with the code) when the hub cannot take sessions now: a
    /// cluster node cut off from its cluster says
    /// [`ErrorCode::Unavailable`].
    async fn register(&self, user: &UserId, session: SessionHandle) -> Result<(), ErrorCode>;

    /// Removes `user`'s session `session` (a no-op if a newer session has
    /// replaced it) and leaves its rooms, notifying their members.
    async fn unregister(&self, user: &UserId, session: SessionId);

    /// Queues `frame` (a `message`, the copy of a `send` read at
    /// `read_at`) for every user in `to`; returns those that did not get
    /// it, offline or congested, each in the order given.
    async fn deliver(&self, to: &[UserId], frame: Utf8Bytes, read_at: Instant) -> Undelivered;

    /// Adds `user` (session `session`) to `room` and returns the members,
    /// the joiner included, sorted. Other members get `room_enter`.
    ///
    /// Room access follows [`RoomAccess`]: a new room is created closed with
    /// `allow` (open when it is empty); an existing one is refused with
    /// `not_allowed` when its access says so, before any other check that
    /// depends on its members, so a stranger learns nothing about them.
    async fn join(
        &self,
        room: &str,
        user: &UserId,
        session: SessionId,
        allow: &[UserId],
        limits: RoomLimits,
    ) -> Result<Vec<UserId>, ErrorCode>;

    /// Adds `users` to the allow list of `room`, which `user` (session
    /// `session`) must be in (`not_in_room`, whether the room exists or not).
    async fn allow(
        &self,
        room: &str,
        user: &UserId,
        session: SessionId,
        users: &[UserId],
    ) -> Result<(), ErrorCode>;

    /// Removes `user` from `room`; other members get `room_leave`.
    async fn leave(&self, room: &str, user: &UserId, session: SessionId) -> Result<(), ErrorCode>;

    /// Users online on this hub right now.
    fn online(&self) -> usize;

    /// Rooms that exist right now.
    fn rooms(&self) -> usize;

    /// Whether the hub works, for `/healthz`: why not, if it does not (a
    /// cluster node cut off from Redis).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

struct UserEntry {
    session: SessionHandle,
    rooms: Vec<String>,
}

struct Room {
    members: BTreeMap<UserId, SessionId>,
    access: RoomAccess,
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, UserEntry>,
    rooms: HashMap<String, Room>,
}

/// The embedded in-memory [`Hub`]: one process, one map.
#[derive(Default)]
pub struct LocalHub {
    state: Mutex<State>,
}

impl std::fmt::Debug for LocalHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHub")
            .field("online", &self.online())
            .finish()
    }
}

impl LocalHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The maps stay consistent between statements, so a poisoned lock
        // is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_json())
}

/// Removes `user` from `room` and tells the remaining members.
fn drop_member(st: &mut State, room: &str, user: &UserId) {
    let Some(r) = st.rooms.get_mut(room) else {
        return;
    };
    if r.members.remove(user).is_none() {
        return;
    }
    if r.members.is_empty() {
        // The allow list ends with the room: its name is free again.
        st.rooms.remove(room);
        return;
    }
    let note = encode(&ServerFrame::RoomLeave {
        room: room.to_owned(),
        user: user.clone(),
    });
    for m in r.members.keys() {
        if let Some(e) = st.users.get(m) {
            let _ = e.session.tx.try_send(Outbound::Frame(note.clone()));
        }
    }
}

#[async_trait]
impl Hub for LocalHub {
    async fn register(&self, user: &UserId, session: SessionHandle) -> Result<(), ErrorCode> {
        let mut st = self.lock();
        let old = st.users.insert(
            user.clone(),
            UserEntry {
                session,
                rooms: Vec::new(),
            },
        );
        if let Some(old) = old {
            for room in &old.rooms {
                drop_member(&mut st, room, user);
            }
            // notify_one keeps a permit if the connection is busy right now.
            old.session.kick.notify_one();
        }
        Ok(())
    }

    async fn unregister(&self, user: &UserId, session: SessionId) {
        let mut st = self.lock();
        let mine = st.users.get(user).is_some_and(|e| e.session.id == session);
        if !mine {
            return;
        }
        if let Some(entry) = st.users.remove(user) {
            for room in &entry.rooms {
                drop_member(&mut st, room, user);
            }
        }
    }

    async fn deliver(&self, to: &[UserId], frame: Utf8Bytes, read_at: Instant) -> Undelivered {
        let st = self.lock();
        let mut out = Undelivered::default();
        for user in to {
            let Some(e) = st.users.get(user) else {
                out.offline.push(user.clone());
                continue;
            };
            match e
                .session
                .tx
                .try_send(Outbound::Message(frame.clone(), read_at))
            {
                Ok(()) => {}
                Err(QueueError::Full) => out.congested.push(user.clone()),
                // The connection task is gone and will unregister next.
                Err(QueueError::Closed) => out.offline.push(user.clone()),
            }
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
        let mut st = self.lock();
        let st = &mut *st;
        let Some(entry) = st.users.get_mut(user) else {
            return Err(ErrorCode::NotLoggedIn);
        };
        if entry.session.id != session {
            return Err(ErrorCode::NotLoggedIn);
        }
        let already = entry.rooms.iter().any(|r| r == room);
        // Access first: what a stranger is told must not depend on the
        // members (how many, or whether any).
        if let Some(r) = st.rooms.get(room) {
            r.access.check_join(user, allow)?;
        }
        if !already && entry.rooms.len() >= limits.max_rooms_per_user {
            return Err(ErrorCode::TooManyRooms);
        }
        let r = match st.rooms.get_mut(room) {
            Some(r) => {
                if !already && r.members.len() >= limits.max_room_members {
                    return Err(ErrorCode::RoomFull);
                }
                if !allow.is_empty() {
                    r.access.extend(allow)?;
                }
                r
            }
            None if limits.max_room_members == 0 => return Err(ErrorCode::RoomFull),
            None => st.rooms.entry(room.to_owned()).or_insert(Room {
                members: BTreeMap::new(),
                access: RoomAccess::new_room(user, allow),
            }),
        };
        r.members.insert(user.clone(), session);
        let list: Vec<UserId> = r.members.keys().cloned().collect();
        if !already {
            entry.rooms.push(room.to_owned());
            let note = encode(&ServerFrame::RoomEnter {
                room: room.to_owned(),
                user: user.clone(),
            });
            for m in &list {
                if m == user {
                    continue;
                }
                if let Some(e) = st.users.get(m) {
                    let _ = e.session.tx.try_send(Outbound::Frame(note.clone()));
                }
            }
        }
        Ok(list)
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
        let mut st = self.lock();
        let r = st
            .rooms
            .get_mut(room)
            .filter(|r| r.members.get(user) == Some(&session))
            .ok_or(ErrorCode::NotInRoom)?;
        r.access.extend(users)
    }

    async fn leave(&self, room: &str, user: &UserId, session: SessionId) -> Result<(), ErrorCode> {
        let mut st = self.lock();
        let Some(entry) = st.users.get_mut(user) else {
            return Err(ErrorCode::NotLoggedIn);
        };
        if entry.session.id != session {
            return Err(ErrorCode::NotLoggedIn);
        }
        let Some(pos) = entry.rooms.iter().position(|r| r == room) else {
            return Err(ErrorCode::NotInRoom);
        };
        entry.rooms.swap_remove(pos);
        drop_member(&mut st, room, user);
        Ok(())
    }

    fn online(&self) -> usize {
        self.lock().users.len()
    }

    fn rooms(&self) -> usize {
        self.lock().rooms.len()
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    /// Frames pushed from another task all reach a receiver that waits
    /// between them (a lost wake-up would leave it waiting: the timeout
    /// fails the test), in order, and the overflow news comes first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receiver_gets_every_frame_in_order() {
        let (tx, mut rx) = OutboundQueue::new(1 << 20);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 500 {
                if let Received::Frame(Outbound::Frame(f)) = rx.recv().await {
                    got.push(f.as_str().parse::<u32>().unwrap_or(u32::MAX));
                }
            }
            (got, rx)
        });
        for i in 0..500u32 {
            tx.try_send(Outbound::Frame(Utf8Bytes::from(i.to_string())))
                .unwrap();
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let (got, rx) = tokio::time::timeout(std::time::Duration::from_secs(20), reader)
            .await
            .expect("the receiver missed a wake-up")
            .unwrap();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        assert_eq!(tx.queued_bytes(), 0);

        drop((tx, rx));

        // A budget of 4 bytes: "aaaa" fits, "b" does not: overflowed.
        let (small, mut srx) = OutboundQueue::new(4);
        small
            .try_send(Outbound::Frame(Utf8Bytes::from_static("aaaa")))
            .unwrap();
        assert_eq!(
            small.try_send(Outbound::Frame(Utf8Bytes::from_static("b"))),
            Err(QueueError::Full)
        );
        assert!(matches!(srx.recv().await, Received::Overflowed));
        assert!(matches!(srx.recv().await, Received::Frame(_)));
        drop(srx);
        assert_eq!(
            small.try_send(Outbound::Frame(Utf8Bytes::from_static("c"))),
            Err(QueueError::Closed)
        );
    }
}
