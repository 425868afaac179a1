//! An in-process [`Transport`]: several users register with one
//! [`MemoryHub`] and exchange payloads with the same semantics as over the
//! signaling server (offline recipients are reported undeliverable, rooms
//! announce enter/leave and keep to their allow lists, a second
//! registration of a user kicks the first). Each user's events queue holds
//! [`EVENT_CAPACITY`]; a sender to a user whose queue is full waits for
//! room, so nobody is ever reported congested here.
//!
//! Useful for tests, and for applications that carry the call layer over a
//! channel of their own.
//!
//! Nothing is dropped on the way: a payload to a user whose event queue is
//! full waits in [`Transport::send`] until there is room (backpressure, as
//! the signaling server's own queue gives). Two clients that each wait for
//! room in the other's full queue wait for each other; the queues are deep
//! ([`EVENT_CAPACITY`]) so that only a flood gets there.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use calling_core::UserId;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::protocol::{ErrorCode, MAX_ALLOW_LIST, RoomAccess, valid_room};
use crate::transport::{
    EventSlot, MessageId, MessageIds, Transport, TransportError, TransportEvent,
};

/// Events buffered per registered user before senders wait for room.
pub const EVENT_CAPACITY: usize = 4096;

/// Hands `ev` over without waiting, from where no await is possible (a
/// drop, a registration): if the queue is full, a task delivers it when
/// there is room.
fn hand_off(events: &mpsc::Sender<TransportEvent>, ev: TransportEvent) {
    match events.try_send(ev) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(ev)) => match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let events = events.clone();
                runtime.spawn(async move {
                    let _ = events.send(ev).await;
                });
            }
            Err(_) => tracing::warn!(?ev, "event queue full outside a runtime; event lost"),
        },
    }
}

struct Member {
    session: u64,
    events: mpsc::Sender<TransportEvent>,
    rooms: BTreeSet<String>,
}

struct Room {
    members: BTreeSet<UserId>,
    access: RoomAccess,
}

#[derive(Default)]
struct HubState {
    users: HashMap<UserId, Member>,
    rooms: HashMap<String, Room>,
}

/// A shared switchboard for [`MemoryTransport`]s. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryHub {
    state: Arc<Mutex<HubState>>,
    next_session: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHub").finish_non_exhaustive()
    }
}

impl MemoryHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock leaves plain maps behind, still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `user` and returns its transport. A transport already
    /// registered for the same user receives [`TransportEvent::KickedOut`]
    /// and is closed.
    pub fn register(&self, user: UserId) -> MemoryTransport {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let mut st = self.lock();
        if let Some(old) = st.users.remove(&user) {
            remove_from_rooms(&mut st, &user, &old.rooms);
            hand_off(&old.events, TransportEvent::KickedOut);
        }
        st.users.insert(
            user.clone(),
            Member {
                session,
                events: tx,
                rooms: BTreeSet::new(),
            },
        );
        MemoryTransport {
            hub: self.clone(),
            user,
            session,
            events: EventSlot::new(rx),
            closed: AtomicBool::new(false),
            next_id: MessageIds::default(),
        }
    }

    /// Whether `user` is registered right now.
    pub fn is_online(&self, user: &UserId) -> bool {
        self.lock().users.contains_key(user)
    }
}

fn remove_from_rooms(st: &mut HubState, user: &UserId, rooms: &BTreeSet<String>) {
    for room in rooms {
        let Some(r) = st.rooms.get_mut(room) else {
            continue;
        };
        r.members.remove(user);
        if r.members.is_empty() {
            // The allow list ends with the room, as on the server.
            st.rooms.remove(room);
            continue;
        }
        for m in r.members.iter() {
            if let Some(member) = st.users.get(m) {
                let ev = TransportEvent::RoomLeave {
                    room: room.clone(),
                    user: user.clone(),
                };
                hand_off(&member.events, ev);
            }
        }
    }
}

/// One user's endpoint on a [`MemoryHub`].
pub struct MemoryTransport {
    hub: MemoryHub,
    user: UserId,
    session: u64,
    events: EventSlot,
    closed: AtomicBool,
    next_id: MessageIds,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl MemoryTransport {
    /// Unregisters this session (if a newer one has not replaced it) and
    /// leaves its rooms. Idempotent.
    fn go_offline(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut st = self.hub.lock();
        let mine = st
            .users
            .get(&self.user)
            .is_some_and(|m| m.session == self.session);
        if mine {
            if let Some(me) = st.users.remove(&self.user) {
                remove_from_rooms(&mut st, &self.user, &me.rooms);
            }
        }
    }

    /// Runs `f` on the hub state if this transport is still the registered
    /// session of its user.
    fn with_live<T>(
        &self,
        f: impl FnOnce(&mut HubState) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let mut st = self.hub.lock();
        match st.users.get(&self.user) {
            Some(m) if m.session == self.session => f(&mut st),
            _ => Err(TransportError::Closed),
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn local_user(&self) -> &UserId {
        &self.user
    }

    async fn send(&self, to: &[UserId], payload: Value) -> Result<MessageId, TransportError> {
        let id = self.next_id.next_for(to)?;
        // Who is online, read under the lock; the deliveries wait outside it.
        let (me, recipients) = self.with_live(|st| {
            let me = st.users.get(&self.user).map(|m| m.events.clone());
            let recipients: Vec<(UserId, Option<mpsc::Sender<TransportEvent>>)> = to
                .iter()
                .map(|u| (u.clone(), st.users.get(u).map(|m| m.events.clone())))
                .collect();
            Ok((me, recipients))
        })?;
        let mut offline = Vec::new();
        for (user, events) in recipients {
            let ev = TransportEvent::Message {
                from: self.user.clone(),
                id: id.clone(),
                payload: payload.clone(),
            };
            let delivered = match events {
                Some(events) => events.send(ev).await.is_ok(),
                None => false,
            };
            if !delivered {
                offline.push(user);
            }
        }
        if let (false, Some(me)) = (offline.is_empty(), me) {
            // Never wait on our own queue: its reader may be our caller.
            // Nobody is congested here: a full queue makes the sender wait.
            let ev = TransportEvent::Undeliverable {
                id: id.clone(),
                offline,
                congested: Vec::new(),
            };
            hand_off(&me, ev);
        }
        Ok(id)
    }

    async fn join_room(&self, room: &str, allow: &[UserId]) -> Result<Vec<UserId>, TransportError> {
        if !valid_room(room) {
            return Err(refused(ErrorCode::InvalidRoom, room));
        }
        if allow.len() > MAX_ALLOW_LIST {
            return Err(refused(ErrorCode::RoomFull, room));
        }
        let (list, notices) = self.with_live(|st| {
            let r = match st.rooms.entry(room.to_owned()) {
                Entry::Vacant(v) => v.insert(Room {
                    members: BTreeSet::new(),
                    access: RoomAccess::new_room(&self.user, allow),
                }),
                Entry::Occupied(o) => {
                    let r = o.into_mut();
                    r.access
                        .check_join(&self.user, allow)
                        .map_err(|code| refused(code, room))?;
                    if !allow.is_empty() {
                        r.access.extend(allow).map_err(|code| refused(code, room))?;
                    }
                    r
                }
            };
            let newly = r.members.insert(self.user.clone());
            let list: Vec<UserId> = r.members.iter().cloned().collect();
            let mut notices = Vec::new();
            if newly {
                for m in &list {
                    if m == &self.user {
                        continue;
                    }
                    if let Some(member) = st.users.get(m) {
                        notices.push(member.events.clone());
                    }
                }
            }
            if let Some(me) = st.users.get_mut(&self.user) {
                me.rooms.insert(room.to_owned());
            }
            Ok((list, notices))
        })?;
        for events in notices {
            let ev = TransportEvent::RoomEnter {
                room: room.to_owned(),
                user: self.user.clone(),
            };
            let _ = events.send(ev).await;
        }
        Ok(list)
    }

    async fn allow_room(&self, room: &str, users: &[UserId]) -> Result<(), TransportError> {
        self.with_live(|st| {
            let r = st
                .rooms
                .get_mut(room)
                .filter(|r| r.members.contains(&self.user))
                .ok_or_else(|| refused(ErrorCode::NotInRoom, room))?;
            r.access.extend(users).map_err(|code| refused(code, room))
        })
    }

    async fn leave_room(&self, room: &str) -> Result<(), TransportError> {
        self.with_live(|st| {
            let was_in = st
                .users
                .get_mut(&self.user)
                .is_some_and(|me| me.rooms.remove(room));
            if !was_in {
                return Err(refused(ErrorCode::NotInRoom, room));
            }
            let one = BTreeSet::from([room.to_owned()]);
            remove_from_rooms(st, &self.user, &one);
            Ok(())
        })
    }

    async fn close(&self) {
        self.go_offline();
    }

    fn take_events(&self) -> Option<mpsc::Receiver<TransportEvent>> {
        self.events.take()
    }
}

/// The refusal of a request about `room`.
fn refused(code: ErrorCode, room: &str) -> TransportError {
    TransportError::Refused {
        code,
        message: format!("{code}: room {room:?}"),
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        // A dropped endpoint goes offline, as after close().
        self.go_offline();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    async fn next(rx: &mut mpsc::Receiver<TransportEvent>) -> TransportEvent {
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn delivers_and_reports_offline() {
        let hub = MemoryHub::new();
        let a = hub.register(uid("alice"));
        let b = hub.register(uid("bob"));
        let mut ea = a.take_events().unwrap();
        let mut eb = b.take_events().unwrap();
        assert!(a.take_events().is_none());
        let id = a
            .send(&[uid("bob"), uid("carol")], json!({"k": 1}))
            .await
            .unwrap();
        assert_eq!(
            next(&mut eb).await,
            TransportEvent::Message {
                from: uid("alice"),
                id: id.clone(),
                payload: json!({"k": 1})
            }
        );
        assert_eq!(
            next(&mut ea).await,
            TransportEvent::Undeliverable {
                id,
                offline: vec![uid("carol")],
                congested: vec![]
            }
        );
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait_and_loses_nothing() {
        let hub = MemoryHub::new();
        let a = hub.register(uid("alice"));
        let b = hub.register(uid("bob"));
        let mut ea = a.take_events().unwrap();
        let mut eb = b.take_events().unwrap();
        let total = EVENT_CAPACITY + 10;
        // bob reads nothing until alice has sent more than his queue holds.
        let sender = tokio::spawn(async move {
            for i in 0..total {
                a.send(&[uid("bob")], json!(i)).await.unwrap();
            }
            a
        });
        let filled = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while eb.len() < EVENT_CAPACITY {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(filled.is_ok(), "bob's queue never filled");
        // Full: alice waits for room instead of calling bob offline.
        assert!(!sender.is_finished());
        for i in 0..total {
            match next(&mut eb).await {
                TransportEvent::Message { payload, .. } => assert_eq!(payload, json!(i)),
                other => panic!("{other:?}"),
            }
        }
        let _a = sender.await.unwrap();
        // Nobody was reported offline.
        assert!(ea.try_recv().is_err());
    }

    #[tokio::test]
    async fn closed_rooms_admit_their_list_only() {
        let hub = MemoryHub::new();
        let a = hub.register(uid("alice"));
        let b = hub.register(uid("bob"));
        let c = hub.register(uid("carol"));
        let e = hub.register(uid("eve"));
        let mut ea = a.take_events().unwrap();
        assert_eq!(
            a.join_room("call", &[uid("bob")]).await.unwrap(),
            [uid("alice")]
        );
        let not_allowed = |r: Result<Vec<UserId>, TransportError>| {
            matches!(
                r,
                Err(TransportError::Refused {
                    code: ErrorCode::NotAllowed,
                    ..
                })
            )
        };
        assert!(not_allowed(e.join_room("call", &[]).await));
        assert!(not_allowed(e.join_room("call", &[uid("eve")]).await));
        assert!(not_allowed(c.join_room("call", &[]).await));
        assert!(matches!(
            e.allow_room("call", &[uid("eve")]).await,
            Err(TransportError::Refused {
                code: ErrorCode::NotInRoom,
                ..
            })
        ));
        assert_eq!(
            b.join_room("call", &[]).await.unwrap(),
            [uid("alice"), uid("bob")]
        );
        b.allow_room("call", &[uid("carol")]).await.unwrap();
        assert_eq!(c.join_room("call", &[]).await.unwrap().len(), 3);
        // Nobody but the joiners was announced: eve never got in.
        for who in ["bob", "carol"] {
            assert_eq!(
                next(&mut ea).await,
                TransportEvent::RoomEnter {
                    room: "call".into(),
                    user: uid(who)
                }
            );
        }
        // An open room stays open.
        e.join_room("open", &[]).await.unwrap();
        assert!(not_allowed(a.join_room("open", &[uid("bob")]).await));
        assert!(matches!(
            e.allow_room("open", &[uid("bob")]).await,
            Err(TransportError::Refused {
                code: ErrorCode::NotAllowed,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn second_registration_kicks_first() {
        let hub = MemoryHub::new();
        let a1 = hub.register(uid("alice"));
        let mut e1 = a1.take_events().unwrap();
        let a2 = hub.register(uid("alice"));
        assert_eq!(next(&mut e1).await, TransportEvent::KickedOut);
        assert_eq!(
            a1.send(&[uid("x")], json!(1)).await,
            Err(TransportError::Closed)
        );
        // Dropping the kicked one must not unregister the new session.
        drop(a1);
        assert!(hub.is_online(&uid("alice")));
        a2.close().await;
        assert!(!hub.is_online(&uid("alice")));
    }

    #[tokio::test]
    async fn rooms_announce_enter_and_leave() {
        let hub = MemoryHub::new();
        let a = hub.register(uid("alice"));
        let b = hub.register(uid("bob"));
        let mut ea = a.take_events().unwrap();
        assert_eq!(a.join_room("r1", &[]).await.unwrap(), vec![uid("alice")]);
        assert_eq!(
            b.join_room("r1", &[]).await.unwrap(),
            vec![uid("alice"), uid("bob")]
        );
        assert_eq!(
            next(&mut ea).await,
            TransportEvent::RoomEnter {
                room: "r1".into(),
                user: uid("bob")
            }
        );
        drop(b);
        assert_eq!(
            next(&mut ea).await,
            TransportEvent::RoomLeave {
                room: "r1".into(),
                user: uid("bob")
            }
        );
        assert!(matches!(
            a.leave_room("nope").await,
            Err(TransportError::Refused {
                code: ErrorCode::NotInRoom,
                ..
            })
        ));
        a.leave_room("r1").await.unwrap();
    }
}
