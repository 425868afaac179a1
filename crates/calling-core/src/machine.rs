//! The call rules, all of them, in one place.
//!
//! See the crate documentation for the run loop. In short: one call at a
//! time; the caller is in the call from the start and the callees ring; a
//! party is in the call while anyone else is connected or still ringing;
//! every message names the call and the sender's participation (party), so
//! duplicates, late and reordered messages are recognised and harmless.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{AnswerError, CallError, JoinError, MessageError, StaleReason, SwitchError};
use crate::event::{EndReason, Event, MediaInstruction, Output};
use crate::ids::{CallId, GroupId, InviteId, MediaType, PartyId, RoomId, UserId};
use crate::message::{
    Body, CallInfo, Member, Message, NoAnswer, PROTOCOL_VERSION, Pending, Roster,
};

/// How many answered invites and finished calls are remembered, so that late
/// duplicates of their messages are recognised.
const MEMORY: usize = 256;

/// Tunables of the call rules. [`Config::default`] matches TRTCCalling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How much longer than the invite timeout the inviter waits before it
    /// declares an invitee unanswered (TRTCCalling: 5 s). The invitee's own
    /// timer fires first, so both sides normally see the invitee's answer.
    pub caller_grace: Duration,
    /// How long `join` waits for any member of the call to answer.
    pub join_timeout: Duration,
    /// How long an audio-to-video switch request waits for answers.
    pub switch_timeout: Duration,
    /// Most participants in one call, the local user included (TUICallKit: 9).
    pub max_participants: usize,
    /// Largest `user_data` accepted, in bytes.
    pub max_user_data: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            caller_grace: Duration::from_secs(5),
            join_timeout: Duration::from_secs(10),
            switch_timeout: Duration::from_secs(30),
            max_participants: 9,
            max_user_data: 4096,
        }
    }
}

/// Options of `call` and `group_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// Ringing time in seconds; 0 rings until answered or cancelled.
    /// Default 30, as in TRTCCalling.
    pub timeout: u32,
    /// Application data shown to the invitees.
    pub user_data: Option<String>,
    /// The application group the call belongs to.
    pub group_id: Option<GroupId>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: 30,
            user_data: None,
            group_id: None,
        }
    }
}

/// Why the local session is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The local user logs out.
    Logout,
    /// The same user logged in elsewhere.
    KickedOut,
}

/// Where the local user stands, as reported by [`CallMachine::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// No call.
    Idle,
    /// An invite is ringing.
    Ringing,
    /// Waiting for an answer to a join by id.
    Joining,
    /// In a call: placed it, accepted it, or joined it.
    InCall,
}

/// A snapshot of the current call, from [`CallMachine::call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    /// The call.
    pub call_id: CallId,
    /// Where the local user stands.
    pub state: CallState,
    /// The media room.
    pub room_id: RoomId,
    /// Current media type.
    pub media_type: MediaType,
    /// Who placed the call.
    pub sponsor: UserId,
    /// Whether it is a group call.
    pub is_group: bool,
    /// Other parties connected.
    pub connected: Vec<UserId>,
    /// Invitees still ringing.
    pub ringing: Vec<UserId>,
    /// The invite the local user is ringing for, if it is.
    pub invite_id: Option<InviteId>,
}

#[derive(Debug)]
enum Me {
    Ringing {
        invite_id: InviteId,
        inviter: UserId,
        deadline: Option<Instant>,
    },
    Joining {
        deadline: Instant,
        waiting: BTreeSet<UserId>,
    },
    InCall,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    party: PartyId,
    audio: bool,
    video: bool,
}

#[derive(Debug, Clone)]
struct Invitee {
    invite_id: InviteId,
    inviter: UserId,
    /// Armed only on the inviter's side.
    deadline: Option<Instant>,
}

impl Peer {
    /// A connected party as a roster lists it.
    fn of(m: &Member) -> Self {
        Self {
            party: m.party,
            audio: m.audio,
            video: m.video,
        }
    }
}

impl Invitee {
    /// An invitee another party told us of: its timer is the inviter's.
    fn of(p: &Pending) -> Self {
        Self {
            invite_id: p.invite_id.clone(),
            inviter: p.inviter.clone(),
            deadline: None,
        }
    }
}

#[derive(Debug)]
struct OutgoingSwitch {
    request_id: u32,
    to: MediaType,
    waiting: BTreeSet<UserId>,
    deadline: Instant,
}

#[derive(Debug)]
struct Call {
    id: CallId,
    /// While joining, a placeholder until the first roster arrives.
    info: CallInfo,
    user_data: Option<String>,
    party: PartyId,
    me: Me,
    /// The invite the local user accepted to get here.
    accepted: Option<InviteId>,
    connected: BTreeMap<UserId, Peer>,
    ringing: BTreeMap<UserId, Invitee>,
    /// Per user, the highest participation known to be over: messages of
    /// that one or earlier ones are late and ignored.
    ended: BTreeMap<UserId, PartyId>,
    /// Invitations that were answered, withdrawn or timed out.
    closed: HashSet<(UserId, InviteId)>,
    /// When the local user first talked to someone in this call.
    since: Option<Instant>,
    /// The end reason if the call empties before anyone connected.
    cause: EndReason,
    switch_out: Option<OutgoingSwitch>,
    switch_in: BTreeMap<u32, UserId>,
}

/// What a handler decided about the call.
enum Step {
    Continue,
    End {
        reason: EndReason,
        stale: StaleReason,
    },
}

/// Everything but the call: identity, settings, randomness and outputs.
struct Ctx {
    me: UserId,
    config: Config,
    rng: StdRng,
    out: VecDeque<Output>,
    audio: bool,
    video: bool,
    next_party: PartyId,
}

impl Ctx {
    fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    fn media(&mut self, instruction: MediaInstruction) {
        self.out.push_back(Output::Media(instruction));
    }

    fn send(&mut self, to: Vec<UserId>, call_id: &CallId, party: PartyId, body: Body) {
        let to: Vec<UserId> = to.into_iter().filter(|u| *u != self.me).collect();
        if to.is_empty() {
            return;
        }
        let message = Message {
            version: PROTOCOL_VERSION,
            call_id: call_id.clone(),
            party,
            body,
        };
        self.out.push_back(Output::Send { to, message });
    }

    fn token(&mut self) -> String {
        let bits: u128 = self.rng.random();
        // Formatted as a version-4 UUID.
        let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
        let hex = format!("{bits:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    fn call_id(&mut self) -> CallId {
        CallId::new(self.token()).unwrap_or_else(|_| unreachable_id())
    }

    fn invite_id(&mut self) -> InviteId {
        InviteId::new(self.token()).unwrap_or_else(|_| unreachable_id())
    }

    fn room_id(&mut self) -> RoomId {
        let n = self.rng.random_range(1..=RoomId::MAX);
        RoomId::new(n).unwrap_or_else(|_| unreachable_id())
    }

    fn party(&mut self) -> PartyId {
        let party = self.next_party;
        self.next_party = PartyId(party.0 + 1);
        party
    }

    fn request_id(&mut self) -> u32 {
        self.rng.random_range(1..=u32::MAX)
    }

    fn me_member(&self, party: PartyId) -> Member {
        Member {
            user: self.me.clone(),
            party,
            audio: self.audio,
            video: self.video,
        }
    }
}

/// Generated ids are hex and dashes within the length limit; they always
/// validate. This is the one place that assumption lives.
#[cold]
fn unreachable_id() -> ! {
    unreachable!("generated ids always validate")
}

impl Call {
    /// A call the local party takes part in as `party`, knowing nobody in it
    /// yet; `cause` is how it ends if it empties before anyone connected.
    fn new(
        id: CallId,
        info: CallInfo,
        user_data: Option<String>,
        party: PartyId,
        me: Me,
        cause: EndReason,
    ) -> Self {
        Self {
            id,
            info,
            user_data,
            party,
            me,
            accepted: None,
            connected: BTreeMap::new(),
            ringing: BTreeMap::new(),
            ended: BTreeMap::new(),
            closed: HashSet::new(),
            since: None,
            cause,
            switch_out: None,
            switch_in: BTreeMap::new(),
        }
    }

    /// Everyone the local party knows in the call, including the members a
    /// joiner is still waiting on.
    fn known(&self) -> Vec<UserId> {
        let mut known: BTreeSet<&UserId> =
            self.connected.keys().chain(self.ringing.keys()).collect();
        if let Me::Joining { waiting, .. } = &self.me {
            known.extend(waiting);
        }
        known.into_iter().cloned().collect()
    }

    fn is_over(&self, user: &UserId, party: PartyId) -> bool {
        self.ended.get(user).is_some_and(|e| party <= *e)
    }

    fn mark_over(&mut self, user: &UserId, party: PartyId) {
        let e = self.ended.entry(user.clone()).or_insert(party);
        *e = (*e).max(party);
    }

    /// A peer's video is available when its camera is on in a video call.
    fn video_of(&self, peer: &Peer) -> bool {
        peer.video && self.info.media_type == MediaType::Video
    }

    fn in_call(&self) -> bool {
        matches!(self.me, Me::InCall)
    }

    fn roster(&self, ctx: &Ctx) -> Roster {
        let mut connected = Vec::with_capacity(self.connected.len() + 1);
        if !matches!(self.me, Me::Ringing { .. }) {
            connected.push(ctx.me_member(self.party));
        }
        connected.extend(self.connected.iter().map(|(user, p)| Member {
            user: user.clone(),
            party: p.party,
            audio: p.audio,
            video: p.video,
        }));
        let ringing = self
            .ringing
            .iter()
            .map(|(user, i)| Pending {
                user: user.clone(),
                invite_id: i.invite_id.clone(),
                inviter: i.inviter.clone(),
            })
            .collect();
        Roster { connected, ringing }
    }

    fn send(&self, ctx: &mut Ctx, to: Vec<UserId>, body: Body) {
        ctx.send(to, &self.id, self.party, body);
    }

    /// Tells `to` what the call is and who is in it, as the local party
    /// knows it.
    fn send_roster(&self, ctx: &mut Ctx, to: Vec<UserId>) {
        let body = Body::Roster {
            info: self.info.clone(),
            roster: self.roster(ctx),
        };
        self.send(ctx, to, body);
    }

    /// Tells `to` that the local party is connected, and how its microphone
    /// and camera are; `invite_id` is the invite it accepted, if it did.
    fn send_enter(&self, ctx: &mut Ctx, to: Vec<UserId>, invite_id: Option<InviteId>) {
        let body = Body::Enter {
            invite_id,
            audio: ctx.audio,
            video: ctx.video,
        };
        self.send(ctx, to, body);
    }

    fn invitees(&self) -> Vec<UserId> {
        self.ringing.keys().cloned().collect()
    }

    /// TRTCCalling's `GROUP_CALL_INVITEE_LIST_UPDATE`: group calls only (a
    /// 1v1 call becomes one when someone invites more).
    fn emit_invitees(&self, ctx: &mut Ctx) {
        if !self.info.is_group {
            return;
        }
        ctx.emit(Event::InviteeListUpdated {
            call_id: self.id.clone(),
            invitees: self.invitees(),
        });
    }

    /// Announces a connected party to the app and the media engine.
    fn announce(&self, ctx: &mut Ctx, user: &UserId) {
        let Some(peer) = self.connected.get(user) else {
            return;
        };
        let call_id = self.id.clone();
        ctx.emit(Event::UserEnter {
            call_id: call_id.clone(),
            user: user.clone(),
        });
        ctx.emit(Event::UserAudioAvailable {
            call_id: call_id.clone(),
            user: user.clone(),
            available: peer.audio,
        });
        ctx.emit(Event::UserVideoAvailable {
            call_id: call_id.clone(),
            user: user.clone(),
            available: self.video_of(peer),
        });
        ctx.media(MediaInstruction::ConnectPeer {
            call_id,
            user: user.clone(),
        });
    }

    /// The local party is in the call from now on: it opens media and, when
    /// it got here by accepting `accepted`, tells everyone it knows; then
    /// everyone already connected is announced to the app.
    fn connect(&mut self, ctx: &mut Ctx, now: Instant, accepted: Option<InviteId>) {
        self.me = Me::InCall;
        self.since = Some(now);
        ctx.media(MediaInstruction::JoinRoom {
            call_id: self.id.clone(),
            room_id: self.info.room_id,
            media_type: self.info.media_type,
        });
        if let Some(invite_id) = accepted {
            self.accepted = Some(invite_id.clone());
            self.send_enter(ctx, self.known(), Some(invite_id));
        }
        for user in self.connected.keys() {
            self.announce(ctx, user);
        }
    }

    /// Whether the call is still alive for the local party; `by` is who
    /// caused the last change.
    fn check_alive(&self) -> Step {
        match &self.me {
            Me::InCall if self.connected.is_empty() && self.ringing.is_empty() => Step::End {
                reason: if self.since.is_some() {
                    EndReason::Hangup
                } else {
                    self.cause
                },
                stale: StaleReason::Accepted,
            },
            Me::Ringing { .. } if self.connected.is_empty() => Step::End {
                reason: EndReason::Cancelled,
                stale: StaleReason::Cancelled,
            },
            Me::InCall | Me::Ringing { .. } | Me::Joining { .. } => Step::Continue,
        }
    }

    /// Before ending a ringing call because everyone left: tell the app.
    fn cancel_notice(&self, ctx: &mut Ctx, by: &UserId) {
        if let Me::Ringing { invite_id, .. } = &self.me {
            ctx.emit(Event::CallingCancel {
                call_id: self.id.clone(),
                invite_id: invite_id.clone(),
                user: by.clone(),
            });
        }
    }

    /// A connected party is gone (hung up, gone, unreachable).
    fn remove_connected(&mut self, ctx: &mut Ctx, user: &UserId, party: PartyId) -> Step {
        self.mark_over(user, party);
        if self.connected.get(user).is_none_or(|p| p.party > party) {
            return Step::Continue;
        }
        self.connected.remove(user);
        if let Some(sw) = &mut self.switch_out {
            sw.waiting.remove(user);
        }
        self.switch_in.retain(|_, u| u != user);
        match &mut self.me {
            Me::InCall => {
                ctx.emit(Event::UserLeave {
                    call_id: self.id.clone(),
                    user: user.clone(),
                });
                ctx.media(MediaInstruction::DropPeer {
                    call_id: self.id.clone(),
                    user: user.clone(),
                });
                self.maybe_finish_switch(ctx);
            }
            Me::Joining { waiting, .. } => {
                waiting.remove(user);
            }
            Me::Ringing { .. } => {}
        }
        let step = self.check_alive();
        if matches!(step, Step::End { .. }) {
            self.cancel_notice(ctx, user);
        }
        step
    }

    /// Invitees stopped ringing for `why`; tells the app when in the call.
    fn remove_ringing(
        &mut self,
        ctx: &mut Ctx,
        users: &[UserId],
        invite_id: &InviteId,
        why: Removal,
    ) -> Step {
        let mut removed = Vec::new();
        for user in users {
            self.closed.insert((user.clone(), invite_id.clone()));
            let matches = self
                .ringing
                .get(user)
                .is_some_and(|i| i.invite_id == *invite_id);
            if matches {
                self.ringing.remove(user);
                removed.push(user.clone());
            }
        }
        if removed.is_empty() {
            return Step::Continue;
        }
        self.cause = why.cause();
        if self.in_call() {
            let call_id = self.id.clone();
            match why {
                Removal::Rejected => {
                    for user in &removed {
                        ctx.emit(Event::Rejected {
                            call_id: call_id.clone(),
                            user: user.clone(),
                        });
                    }
                }
                Removal::Busy => {
                    for user in &removed {
                        ctx.emit(Event::LineBusy {
                            call_id: call_id.clone(),
                            user: user.clone(),
                        });
                    }
                }
                Removal::NoAnswer(reason) => ctx.emit(Event::NoResponse {
                    call_id,
                    users: removed.clone(),
                    reason,
                }),
                Removal::Gone => {}
            }
            self.emit_invitees(ctx);
        }
        self.check_alive()
    }

    /// A party entered (accepted, joined, or introduced itself).
    fn on_enter(&mut self, ctx: &mut Ctx, now: Instant, from: &UserId, entered: Peer) {
        if self.is_over(from, entered.party) {
            return;
        }
        if let Some(peer) = self.connected.get_mut(from) {
            if peer.party >= entered.party {
                return; // a duplicate, or late
            }
            // A new participation whose earlier leave we never saw (e.g. a
            // join by id): it waits for our roster.
            *peer = entered;
            if self.in_call() {
                self.send_roster(ctx, vec![from.clone()]);
            }
            return;
        }
        let was_ringing = self.ringing.remove(from).is_some();
        if !was_ringing {
            // Neither an invitee answering nor a party we know: someone who
            // joined by id (or was introduced by one who did). A call with a
            // party nobody invited to it is a group call.
            self.info.is_group = true;
        }
        self.connected.insert(from.clone(), entered);
        if self.in_call() {
            self.since.get_or_insert(now);
            self.announce(ctx, from);
            if was_ringing {
                self.emit_invitees(ctx);
            }
            self.send_roster(ctx, vec![from.clone()]);
        }
    }

    /// Merges what a roster says; introduces the local user to parties it
    /// did not know.
    fn merge_roster(&mut self, ctx: &mut Ctx, now: Instant, roster: &Roster) {
        let in_call = self.in_call();
        let mut invitees_changed = false;
        for m in &roster.connected {
            if m.user == ctx.me || self.is_over(&m.user, m.party) {
                continue;
            }
            if let Some(peer) = self.connected.get_mut(&m.user) {
                // A later participation replaces an earlier one silently.
                if peer.party < m.party {
                    *peer = Peer::of(m);
                }
                continue;
            }
            invitees_changed |= self.ringing.remove(&m.user).is_some();
            self.connected.insert(m.user.clone(), Peer::of(m));
            if in_call {
                self.since.get_or_insert(now);
                self.announce(ctx, &m.user);
                self.send_enter(ctx, vec![m.user.clone()], None);
            }
        }
        let mut introduce = Vec::new();
        for p in &roster.ringing {
            if p.user == ctx.me
                || self.connected.contains_key(&p.user)
                || self.ringing.contains_key(&p.user)
                || self.closed.contains(&(p.user.clone(), p.invite_id.clone()))
            {
                continue;
            }
            self.ringing.insert(p.user.clone(), Invitee::of(p));
            invitees_changed = true;
            introduce.push(p.user.clone());
        }
        if in_call {
            if !introduce.is_empty() {
                // So that the invitee tells us how it answers; one that is no
                // longer ringing answers `gone`.
                self.send_roster(ctx, introduce);
            }
            if invitees_changed {
                self.emit_invitees(ctx);
            }
        }
    }

    /// A member a joiner asked cannot answer (gone or unreachable): the
    /// join fails once nobody is left to ask and nobody introduced itself.
    fn join_refused(&mut self, user: &UserId) -> Step {
        let Me::Joining { waiting, .. } = &mut self.me else {
            return Step::Continue;
        };
        waiting.remove(user);
        if waiting.is_empty() && self.connected.is_empty() {
            Step::End {
                reason: EndReason::NotFound,
                stale: StaleReason::CallEnded,
            }
        } else {
            Step::Continue
        }
    }

    fn maybe_finish_switch(&mut self, ctx: &mut Ctx) {
        let done = self
            .switch_out
            .as_ref()
            .is_some_and(|s| s.waiting.is_empty());
        if done && let Some(sw) = self.switch_out.take() {
            self.apply_media_type(ctx, sw.to, None);
        }
    }

    /// Sets the call's media type; `by` is who switched it (None: the local
    /// user, who then tells everyone).
    fn apply_media_type(&mut self, ctx: &mut Ctx, to: MediaType, by: Option<&UserId>) {
        let from = self.info.media_type;
        if from == to {
            return;
        }
        self.info.media_type = to;
        if by.is_none() {
            self.send(ctx, self.known(), Body::MediaType { media_type: to });
        }
        if self.in_call() {
            ctx.emit(Event::MediaTypeChanged {
                call_id: self.id.clone(),
                user: by.cloned().unwrap_or_else(|| ctx.me.clone()),
                from,
                to,
            });
            // Cameras that are on start or stop showing with the call's type.
            for (user, peer) in &self.connected {
                if peer.video {
                    ctx.emit(Event::UserVideoAvailable {
                        call_id: self.id.clone(),
                        user: user.clone(),
                        available: to == MediaType::Video,
                    });
                }
            }
            ctx.media(MediaInstruction::SetMediaType {
                call_id: self.id.clone(),
                media_type: to,
            });
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mine = match &self.me {
            Me::Ringing { deadline, .. } => *deadline,
            Me::Joining { deadline, .. } => Some(*deadline),
            Me::InCall => None,
        };
        let invitees = self.ringing.values().filter_map(|i| i.deadline);
        let switch = self.switch_out.as_ref().map(|s| s.deadline);
        mine.into_iter().chain(invitees).chain(switch).min()
    }
}

#[derive(Debug, Clone, Copy)]
enum Removal {
    Rejected,
    Busy,
    NoAnswer(NoAnswer),
    Gone,
}

impl Removal {
    fn cause(self) -> EndReason {
        match self {
            Removal::Rejected => EndReason::Rejected,
            Removal::Busy => EndReason::LineBusy,
            Removal::NoAnswer(NoAnswer::Timeout) => EndReason::NoResponse,
            Removal::NoAnswer(NoAnswer::Offline) => EndReason::Offline,
            Removal::Gone => EndReason::NoResponse,
        }
    }
}

/// A small bounded memory, oldest forgotten first.
#[derive(Debug)]
struct Recent<K, V>(VecDeque<(K, V)>);

impl<K: PartialEq, V: Copy> Recent<K, V> {
    fn new() -> Self {
        Self(VecDeque::new())
    }

    fn get(&self, key: &K) -> Option<V> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    fn put(&mut self, key: K, value: V) {
        if self.0.len() == MEMORY {
            self.0.pop_front();
        }
        self.0.push_back((key, value));
    }
}

/// The call state machine of one user: sans-IO, driven by its owner.
///
/// Methods come in four kinds, as in quinn-proto's `Connection`:
/// - getters (`&self`): [`state`](Self::state), [`call`](Self::call),
///   [`user`](Self::user);
/// - input: [`handle_message`](Self::handle_message),
///   [`handle_unreachable`](Self::handle_unreachable),
///   [`handle_timeout`](Self::handle_timeout);
/// - application commands: [`call_user`](Self::call_user),
///   [`group_call`](Self::group_call), [`accept`](Self::accept),
///   [`reject`](Self::reject), [`ignore`](Self::ignore),
///   [`hangup`](Self::hangup), [`invite`](Self::invite),
///   [`join`](Self::join), [`switch_media_type`](Self::switch_media_type),
///   [`answer_media_switch`](Self::answer_media_switch),
///   [`set_audio_available`](Self::set_audio_available),
///   [`set_video_available`](Self::set_video_available),
///   [`reset`](Self::reset);
/// - output: [`poll_output`](Self::poll_output) until `None`, then
///   [`poll_timeout`](Self::poll_timeout). Poll after every input or command.
///
/// It never reads the clock: every method that needs time takes `now`.
pub struct CallMachine {
    ctx: Ctx,
    call: Option<Call>,
    answered: Recent<InviteId, StaleReason>,
    past_calls: Recent<CallId, ()>,
}

impl std::fmt::Debug for CallMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMachine")
            .field("user", &self.ctx.me)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl CallMachine {
    /// A machine for `user`. `seed` feeds the generator of call, invite,
    /// room and party ids: give it fresh OS randomness in production, a fixed
    /// value in tests.
    pub fn new(user: UserId, config: Config, seed: [u8; 32]) -> Self {
        Self {
            ctx: Ctx {
                me: user,
                config,
                rng: StdRng::from_seed(seed),
                out: VecDeque::new(),
                audio: true,
                video: true,
                next_party: PartyId(1),
            },
            call: None,
            answered: Recent::new(),
            past_calls: Recent::new(),
        }
    }

    /// Sets the first party id this machine hands out (default 1). Party ids
    /// must keep growing across restarts of the same user's machine, so that
    /// peers recognise the new participations as newer: a driver passes the
    /// wall clock, e.g. Unix time in milliseconds times 1024, which stays
    /// below 2^53 and ahead of any earlier machine of the same user.
    #[must_use]
    pub fn with_party_base(mut self, base: u64) -> Self {
        self.ctx.next_party = PartyId(base.max(1));
        self
    }

    // ---- getters ----

    /// The local user.
    pub fn user(&self) -> &UserId {
        &self.ctx.me
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// Where the local user stands.
    pub fn state(&self) -> CallState {
        match self.call.as_ref().map(|c| &c.me) {
            None => CallState::Idle,
            Some(Me::Ringing { .. }) => CallState::Ringing,
            Some(Me::Joining { .. }) => CallState::Joining,
            Some(Me::InCall) => CallState::InCall,
        }
    }

    /// The current call, if any.
    pub fn call(&self) -> Option<CallSnapshot> {
        let c = self.call.as_ref()?;
        Some(CallSnapshot {
            call_id: c.id.clone(),
            state: self.state(),
            room_id: c.info.room_id,
            media_type: c.info.media_type,
            sponsor: c.info.sponsor.clone(),
            is_group: c.info.is_group,
            connected: c.connected.keys().cloned().collect(),
            ringing: c.ringing.keys().cloned().collect(),
            invite_id: match &c.me {
                Me::Ringing { invite_id, .. } => Some(invite_id.clone()),
                Me::Joining { .. } | Me::InCall => None,
            },
        })
    }

    // ---- output ----

    /// The next output, or `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.ctx.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if
    /// a timer is armed. Calling it earlier does nothing.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.call.as_ref().and_then(Call::next_deadline)
    }

    // ---- commands ----

    /// Calls one user (TRTCCalling `call`). Returns the new call's id.
    pub fn call_user(
        &mut self,
        now: Instant,
        user: UserId,
        media_type: MediaType,
        options: CallOptions,
    ) -> Result<CallId, CallError> {
        self.start(now, vec![user], media_type, options, false)
    }

    /// Calls several users at once (TRTCCalling `groupCall`). The call goes
    /// on while anyone else is connected or still ringing.
    pub fn group_call(
        &mut self,
        now: Instant,
        users: Vec<UserId>,
        media_type: MediaType,
        options: CallOptions,
    ) -> Result<CallId, CallError> {
        self.start(now, users, media_type, options, true)
    }

    fn check_invitees(&self, users: &[UserId], already: usize) -> Result<(), CallError> {
        if users.is_empty() {
            return Err(CallError::NoInvitees);
        }
        let mut seen = BTreeSet::new();
        for user in users {
            if *user == self.ctx.me {
                return Err(CallError::SelfInvite);
            }
            let in_call = self
                .call
                .as_ref()
                .is_some_and(|c| c.connected.contains_key(user) || c.ringing.contains_key(user));
            if !seen.insert(user) || in_call {
                return Err(CallError::DuplicateInvitee(user.clone()));
            }
        }
        let requested = already + users.len();
        if requested > self.ctx.config.max_participants {
            return Err(CallError::TooManyParticipants {
                requested,
                max: self.ctx.config.max_participants,
            });
        }
        Ok(())
    }

    fn start(
        &mut self,
        now: Instant,
        users: Vec<UserId>,
        media_type: MediaType,
        options: CallOptions,
        is_group: bool,
    ) -> Result<CallId, CallError> {
        if self.call.is_some() {
            return Err(CallError::Busy);
        }
        self.check_invitees(&users, 1)?;
        if let Some(data) = &options.user_data
            && data.len() > self.ctx.config.max_user_data
        {
            return Err(CallError::UserDataTooLarge {
                len: data.len(),
                max: self.ctx.config.max_user_data,
            });
        }
        let ctx = &mut self.ctx;
        let mut call = Call::new(
            ctx.call_id(),
            CallInfo {
                room_id: ctx.room_id(),
                media_type,
                sponsor: ctx.me.clone(),
                group_id: options.group_id,
                is_group,
            },
            options.user_data,
            ctx.party(),
            Me::InCall,
            EndReason::NoResponse,
        );
        ctx.media(MediaInstruction::JoinRoom {
            call_id: call.id.clone(),
            room_id: call.info.room_id,
            media_type,
        });
        let invite_id = ctx.invite_id();
        send_invites(ctx, &mut call, now, &users, invite_id, options.timeout);
        let id = call.id.clone();
        self.call = Some(call);
        Ok(id)
    }

    /// Invites more users into the running call (TUICallKit `inviteUser`).
    /// Returns the invitation's id.
    pub fn invite(
        &mut self,
        now: Instant,
        users: Vec<UserId>,
        timeout: u32,
    ) -> Result<InviteId, CallError> {
        let already = match &self.call {
            Some(c) if c.in_call() => 1 + c.connected.len() + c.ringing.len(),
            _ => return Err(CallError::NotInCall),
        };
        self.check_invitees(&users, already)?;
        let ctx = &mut self.ctx;
        let Some(call) = self.call.as_mut() else {
            return Err(CallError::NotInCall);
        };
        let others = call.known();
        let invite_id = ctx.invite_id();
        call.info.is_group = true;
        send_invites(ctx, call, now, &users, invite_id.clone(), timeout);
        call.send_roster(ctx, others);
        call.emit_invitees(ctx);
        Ok(invite_id)
    }

    /// Accepts the invite that is ringing (TRTCCalling `accept`). Accepting
    /// the invite already accepted for the current call does nothing.
    pub fn accept(&mut self, now: Instant, invite_id: &InviteId) -> Result<(), AnswerError> {
        let ctx = &mut self.ctx;
        match self.call.as_mut() {
            Some(call) if matches!(&call.me, Me::Ringing { invite_id: i, .. } if i == invite_id) => {
                call.connect(ctx, now, Some(invite_id.clone()));
                Ok(())
            }
            Some(call) if call.accepted.as_ref() == Some(invite_id) => Ok(()),
            _ => Err(self.stale_or_unknown(invite_id)),
        }
    }

    fn stale_or_unknown(&self, invite_id: &InviteId) -> AnswerError {
        match self.answered.get(invite_id) {
            Some(reason) => AnswerError::StaleInvite {
                invite_id: invite_id.clone(),
                reason,
            },
            None => AnswerError::UnknownInvite(invite_id.clone()),
        }
    }

    /// Answering an invite again the way it was answered does nothing; any
    /// other answer to an invite that is not ringing is refused.
    fn answered_again(&self, invite_id: &InviteId, how: StaleReason) -> Result<(), AnswerError> {
        if self.answered.get(invite_id) == Some(how) {
            Ok(())
        } else {
            Err(self.stale_or_unknown(invite_id))
        }
    }

    fn ringing_for(&self, invite_id: &InviteId) -> bool {
        matches!(
            self.call.as_ref().map(|c| &c.me),
            Some(Me::Ringing { invite_id: i, .. }) if i == invite_id
        )
    }

    /// Declines the invite that is ringing (TRTCCalling `reject`). Rejecting
    /// it again does nothing.
    pub fn reject(&mut self, now: Instant, invite_id: &InviteId) -> Result<(), AnswerError> {
        if !self.ringing_for(invite_id) {
            return self.answered_again(invite_id, StaleReason::Rejected);
        }
        if let Some(call) = &self.call {
            let body = Body::Reject {
                invite_id: invite_id.clone(),
                busy: false,
            };
            call.send(&mut self.ctx, call.known(), body);
        }
        self.finish(now, EndReason::Rejected, StaleReason::Rejected);
        Ok(())
    }

    /// Stops ringing without telling anyone (TUICallKit `ignore`); the
    /// caller eventually sees no response. Ignoring it again does nothing.
    pub fn ignore(&mut self, now: Instant, invite_id: &InviteId) -> Result<(), AnswerError> {
        if !self.ringing_for(invite_id) {
            return self.answered_again(invite_id, StaleReason::Ignored);
        }
        self.finish(now, EndReason::Ignored, StaleReason::Ignored);
        Ok(())
    }

    /// Leaves the call (TRTCCalling `hangup`): a cancel when no one has
    /// answered yet, a reject when ringing. Idempotent: with no call it does
    /// nothing.
    pub fn hangup(&mut self, now: Instant) {
        let Some(call) = &self.call else {
            return;
        };
        let ctx = &mut self.ctx;
        match &call.me {
            Me::Ringing { invite_id, .. } => {
                let invite_id = invite_id.clone();
                // reject() cannot fail: the invite is the ringing one.
                let _ = self.reject(now, &invite_id);
            }
            Me::Joining { .. } => {
                call.send(ctx, call.known(), Body::Leave);
                self.finish(now, EndReason::Hangup, StaleReason::CallEnded);
            }
            Me::InCall if call.connected.is_empty() => {
                let mut by_invite: BTreeMap<&InviteId, Vec<UserId>> = BTreeMap::new();
                for (user, inv) in &call.ringing {
                    by_invite
                        .entry(&inv.invite_id)
                        .or_default()
                        .push(user.clone());
                }
                for (invite_id, users) in by_invite {
                    let body = Body::Cancel {
                        invite_id: invite_id.clone(),
                    };
                    call.send(ctx, users, body);
                }
                let reason = if call.since.is_some() {
                    EndReason::Hangup
                } else {
                    EndReason::Cancelled
                };
                self.finish(now, reason, StaleReason::Accepted);
            }
            Me::InCall => {
                call.send(ctx, call.known(), Body::Leave);
                self.finish(now, EndReason::Hangup, StaleReason::Accepted);
            }
        }
    }

    /// Joins a running call by its id (TUICallKit `joinInGroupCall`), asking
    /// `members` (who the app knows to be in it, e.g. from the server room
    /// named by the call id). The call is joined when the first member
    /// answers; with no answer in [`Config::join_timeout`] it ends with
    /// [`EndReason::NotFound`].
    pub fn join(
        &mut self,
        now: Instant,
        call_id: CallId,
        members: Vec<UserId>,
    ) -> Result<(), JoinError> {
        if self.call.is_some() {
            return Err(JoinError::Busy);
        }
        let waiting: BTreeSet<UserId> = members.into_iter().filter(|u| *u != self.ctx.me).collect();
        if waiting.is_empty() {
            return Err(JoinError::NoMembers);
        }
        let max = self.ctx.config.max_participants;
        if waiting.len() >= max {
            return Err(JoinError::TooManyMembers { max: max - 1 });
        }
        let ctx = &mut self.ctx;
        let call = Call::new(
            call_id,
            // Placeholder until a member's roster says what the call is.
            CallInfo {
                room_id: ctx.room_id(),
                media_type: MediaType::Audio,
                sponsor: ctx.me.clone(),
                group_id: None,
                is_group: true,
            },
            None,
            ctx.party(),
            Me::Joining {
                deadline: now + ctx.config.join_timeout,
                waiting: waiting.clone(),
            },
            EndReason::NotFound,
        );
        call.send_enter(ctx, waiting.into_iter().collect(), None);
        self.call = Some(call);
        Ok(())
    }

    /// Switches the call's media type (TUICallKit `switchCallMediaType`).
    /// Video to audio applies at once and the peers are told; audio to video
    /// asks every connected party and applies when all agree
    /// ([`Event::MediaTypeSwitchRefused`] otherwise).
    pub fn switch_media_type(&mut self, now: Instant, to: MediaType) -> Result<(), SwitchError> {
        let ctx = &mut self.ctx;
        let call = match self.call.as_mut() {
            Some(c) if c.in_call() => c,
            _ => return Err(SwitchError::NotInCall),
        };
        if call.info.media_type == to {
            return Err(SwitchError::AlreadyThatType(to));
        }
        if call.switch_out.is_some() {
            return Err(SwitchError::RequestPending);
        }
        if to == MediaType::Audio || call.connected.is_empty() {
            call.apply_media_type(ctx, to, None);
            return Ok(());
        }
        let request_id = ctx.request_id();
        let waiting: BTreeSet<UserId> = call.connected.keys().cloned().collect();
        call.send(
            ctx,
            waiting.iter().cloned().collect(),
            Body::SwitchRequest {
                request_id,
                media_type: to,
            },
        );
        call.switch_out = Some(OutgoingSwitch {
            request_id,
            to,
            waiting,
            deadline: now + ctx.config.switch_timeout,
        });
        Ok(())
    }

    /// Answers a [`Event::MediaTypeSwitchRequested`].
    pub fn answer_media_switch(
        &mut self,
        _now: Instant,
        request_id: u32,
        accept: bool,
    ) -> Result<(), SwitchError> {
        let ctx = &mut self.ctx;
        let call = match self.call.as_mut() {
            Some(c) if c.in_call() => c,
            _ => return Err(SwitchError::NotInCall),
        };
        let Some(asker) = call.switch_in.remove(&request_id) else {
            return Err(SwitchError::UnknownRequest(request_id));
        };
        let body = Body::SwitchAnswer {
            request_id,
            accepted: accept,
        };
        call.send(ctx, vec![asker], body);
        Ok(())
    }

    /// Microphone on or off (TRTCCalling `setMicMute`, inverted): the peers
    /// raise `UserAudioAvailable`. Kept across calls.
    pub fn set_audio_available(&mut self, _now: Instant, available: bool) {
        self.ctx.audio = available;
        self.send_media_state();
    }

    /// Camera on or off (TRTCCalling `openCamera` / `closeCamera`): the peers
    /// raise `UserVideoAvailable`. Kept across calls.
    pub fn set_video_available(&mut self, _now: Instant, available: bool) {
        self.ctx.video = available;
        self.send_media_state();
    }

    fn send_media_state(&mut self) {
        if let Some(call) = &self.call
            && call.in_call()
        {
            let body = Body::MediaState {
                audio: self.ctx.audio,
                video: self.ctx.video,
            };
            call.send(
                &mut self.ctx,
                call.connected.keys().cloned().collect(),
                body,
            );
        }
    }

    /// Ends everything for logout or kick: the current call ends with
    /// [`EndReason::LoggedOut`] or [`EndReason::KickedOut`], and the machine
    /// is idle, ready for the next login. Being kicked out is a session event:
    /// the SDK tells the app, the machine only ends the call.
    pub fn reset(&mut self, now: Instant, reason: ResetReason) {
        let Some(call) = &self.call else {
            return;
        };
        if !matches!(call.me, Me::Ringing { .. }) {
            call.send(&mut self.ctx, call.known(), Body::Leave);
        }
        let end = match reason {
            ResetReason::Logout => EndReason::LoggedOut,
            ResetReason::KickedOut => EndReason::KickedOut,
        };
        self.finish(now, end, StaleReason::CallEnded);
    }

    // ---- input ----

    /// A call-control message from `from` (the sender stamped by the server).
    /// Late, duplicated and reordered messages are harmless; a message that
    /// breaks the limits is refused with an error and changes nothing.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: &UserId,
        message: Message,
    ) -> Result<(), MessageError> {
        if *from == self.ctx.me {
            return Err(MessageError::FromSelf);
        }
        self.check_limits(&message)?;
        let Message {
            call_id,
            party,
            body,
            ..
        } = message;
        if let Body::Invite {
            invite_id,
            info,
            timeout,
            user_data,
            roster,
        } = body
        {
            let invite = IncomingInvite {
                call_id,
                party,
                invite_id,
                info,
                timeout,
                user_data,
                roster,
            };
            self.on_invite(now, from, invite);
            return Ok(());
        }
        if self.call.as_ref().is_some_and(|c| c.id == call_id) {
            self.on_call_message(now, from, party, body);
        } else {
            self.on_foreign_message(from, &call_id, body);
        }
        Ok(())
    }

    fn check_limits(&self, message: &Message) -> Result<(), MessageError> {
        let max = self.ctx.config.max_participants;
        let check = |field: &'static str, len: usize| {
            if len > max {
                Err(MessageError::TooManyEntries { field, len, max })
            } else {
                Ok(())
            }
        };
        match &message.body {
            Body::Invite {
                roster, user_data, ..
            } => {
                check("roster.connected", roster.connected.len())?;
                check("roster.ringing", roster.ringing.len())?;
                if let Some(data) = user_data
                    && data.len() > self.ctx.config.max_user_data
                {
                    return Err(MessageError::UserDataTooLarge {
                        len: data.len(),
                        max: self.ctx.config.max_user_data,
                    });
                }
            }
            Body::Roster { roster, .. } => {
                check("roster.connected", roster.connected.len())?;
                check("roster.ringing", roster.ringing.len())?;
            }
            Body::Timeout { users, .. } => check("users", users.len())?,
            Body::Cancel { .. }
            | Body::Enter { .. }
            | Body::Reject { .. }
            | Body::Leave
            | Body::Gone { .. }
            | Body::MediaState { .. }
            | Body::MediaType { .. }
            | Body::SwitchRequest { .. }
            | Body::SwitchAnswer { .. } => {}
        }
        Ok(())
    }

    /// The server could not deliver to `user`, or reports that its
    /// connection died while in the call's room: a ringing invitee counts as
    /// offline, a connected party as gone.
    pub fn handle_unreachable(&mut self, now: Instant, user: &UserId, call_id: &CallId) {
        let ctx = &mut self.ctx;
        let Some(call) = self.call.as_mut().filter(|c| c.id == *call_id) else {
            return;
        };
        let step = if let Some(peer) = call.connected.get(user) {
            let party = peer.party;
            call.remove_connected(ctx, user, party)
        } else if let Some(inv) = call.ringing.get(user) {
            let invite_id = inv.invite_id.clone();
            let step = call.remove_ringing(
                ctx,
                std::slice::from_ref(user),
                &invite_id,
                Removal::NoAnswer(NoAnswer::Offline),
            );
            if call.in_call() {
                let body = Body::Timeout {
                    invite_id,
                    users: vec![user.clone()],
                    reason: NoAnswer::Offline,
                };
                call.send(ctx, call.known(), body);
            }
            step
        } else {
            call.join_refused(user)
        };
        self.apply(now, step);
    }

    /// Fires the timers due at `now`. Calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ctx = &mut self.ctx;
        let Some(call) = self.call.as_mut() else {
            return;
        };
        match &call.me {
            Me::Ringing {
                invite_id,
                deadline: Some(deadline),
                ..
            } if *deadline <= now => {
                let invite_id = invite_id.clone();
                let body = Body::Timeout {
                    invite_id: invite_id.clone(),
                    users: vec![ctx.me.clone()],
                    reason: NoAnswer::Timeout,
                };
                call.send(ctx, call.known(), body);
                ctx.emit(Event::CallingTimeout {
                    call_id: call.id.clone(),
                    invite_id,
                });
                self.finish(now, EndReason::TimedOut, StaleReason::TimedOut);
                return;
            }
            Me::Joining { deadline, .. } if *deadline <= now => {
                // Our enter may still arrive: the leave retires it.
                call.send(ctx, call.known(), Body::Leave);
                self.finish(now, EndReason::NotFound, StaleReason::CallEnded);
                return;
            }
            Me::Ringing { .. } | Me::Joining { .. } | Me::InCall => {}
        }
        if call.switch_out.as_ref().is_some_and(|s| s.deadline <= now)
            && let Some(sw) = call.switch_out.take()
        {
            ctx.emit(Event::MediaTypeSwitchRefused {
                call_id: call.id.clone(),
                users: sw.waiting.into_iter().collect(),
            });
        }
        let mut due: BTreeMap<InviteId, Vec<UserId>> = BTreeMap::new();
        for (user, inv) in &call.ringing {
            if inv.deadline.is_some_and(|d| d <= now) {
                due.entry(inv.invite_id.clone())
                    .or_default()
                    .push(user.clone());
            }
        }
        let mut step = Step::Continue;
        for (invite_id, users) in due {
            // The invitees learn it too, in case their own timer is late.
            let mut to = call.known();
            step = call.remove_ringing(
                ctx,
                &users,
                &invite_id,
                Removal::NoAnswer(NoAnswer::Timeout),
            );
            to.retain(|u| {
                call.connected.contains_key(u) || call.ringing.contains_key(u) || users.contains(u)
            });
            let body = Body::Timeout {
                invite_id,
                users,
                reason: NoAnswer::Timeout,
            };
            call.send(ctx, to, body);
            if matches!(step, Step::End { .. }) {
                break;
            }
        }
        self.apply(now, step);
    }

    // ---- internals ----

    fn apply(&mut self, now: Instant, step: Step) {
        if let Step::End { reason, stale } = step {
            self.finish(now, reason, stale);
        }
    }

    /// Ends the current call for the local party: one `CallEnd`, always.
    fn finish(&mut self, now: Instant, reason: EndReason, stale: StaleReason) {
        let Some(call) = self.call.take() else {
            return;
        };
        if let Me::Ringing { invite_id, .. } = &call.me {
            self.answered.put(invite_id.clone(), stale);
        }
        if let Some(invite_id) = &call.accepted {
            self.answered.put(invite_id.clone(), StaleReason::Accepted);
        }
        if call.in_call() {
            self.ctx.media(MediaInstruction::LeaveRoom {
                call_id: call.id.clone(),
            });
        }
        self.past_calls.put(call.id.clone(), ());
        let duration = call
            .since
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        self.ctx.emit(Event::CallEnd {
            call_id: call.id,
            reason,
            duration,
        });
    }

    fn on_invite(&mut self, now: Instant, from: &UserId, inv: IncomingInvite) {
        if self.answered.get(&inv.invite_id).is_some() {
            return;
        }
        let ctx = &mut self.ctx;
        if let Some(call) = self.call.as_mut() {
            if call.id == inv.call_id {
                // Already part of this call: the invite must never ring later.
                self.answered
                    .put(inv.invite_id.clone(), StaleReason::CallEnded);
                if call.in_call() {
                    // A stale re-invite: tell the inviter we are already here.
                    call.send_enter(ctx, vec![from.clone()], None);
                }
                return;
            }
            if is_glare(ctx, call, from, &inv) {
                if inv.call_id < call.id {
                    self.resolve_glare(now, from, inv);
                } else {
                    // The peer sees the same two ids and accepts ours.
                    self.answered.put(inv.invite_id, StaleReason::CallEnded);
                }
                return;
            }
            // One call at a time: answer busy, to everyone the inviter named.
            let mut to: Vec<UserId> = inv
                .roster
                .connected
                .iter()
                .map(|m| m.user.clone())
                .chain(inv.roster.ringing.iter().map(|p| p.user.clone()))
                .collect();
            to.push(from.clone());
            to.sort();
            to.dedup();
            let party = ctx.party();
            let body = Body::Reject {
                invite_id: inv.invite_id.clone(),
                busy: true,
            };
            ctx.send(to, &inv.call_id, party, body);
            self.answered.put(inv.invite_id, StaleReason::Rejected);
            return;
        }
        let call = ringing_call(ctx, now, from, inv);
        self.call = Some(call);
    }

    fn resolve_glare(&mut self, now: Instant, from: &UserId, inv: IncomingInvite) {
        let Some(old) = self.call.take() else {
            return;
        };
        let ctx = &mut self.ctx;
        ctx.media(MediaInstruction::LeaveRoom {
            call_id: old.id.clone(),
        });
        self.past_calls.put(old.id.clone(), ());
        let invite_id = inv.invite_id.clone();
        let mut call = ringing_call_quiet(ctx, now, from, inv);
        ctx.emit(Event::GlareResolved {
            abandoned: old.id,
            call_id: call.id.clone(),
        });
        call.connect(ctx, now, Some(invite_id));
        self.call = Some(call);
    }

    fn on_foreign_message(&mut self, from: &UserId, call_id: &CallId, body: Body) {
        match body {
            Body::Cancel { invite_id } => {
                // It may overtake its invite: remember it so the invite never rings.
                if self.answered.get(&invite_id).is_none() {
                    self.answered.put(invite_id, StaleReason::Cancelled);
                }
            }
            Body::Timeout {
                invite_id, users, ..
            } if users.contains(&self.ctx.me) => {
                if self.answered.get(&invite_id).is_none() {
                    self.answered.put(invite_id, StaleReason::TimedOut);
                }
            }
            Body::Enter { .. }
            | Body::Roster { .. }
            | Body::MediaState { .. }
            | Body::MediaType { .. }
            | Body::SwitchRequest { .. }
            | Body::SwitchAnswer { .. } => {
                // The sender thinks we are in this call: say we are not.
                let upto = self.ctx.next_party;
                self.ctx
                    .send(vec![from.clone()], call_id, upto, Body::Gone { upto });
            }
            Body::Invite { .. }
            | Body::Reject { .. }
            | Body::Timeout { .. }
            | Body::Leave
            | Body::Gone { .. } => {}
        }
    }

    fn on_call_message(&mut self, now: Instant, from: &UserId, party: PartyId, body: Body) {
        let ctx = &mut self.ctx;
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if matches!(call.me, Me::Ringing { .. })
            && matches!(body, Body::Enter { .. } | Body::Roster { .. })
            && self.past_calls.get(&call.id).is_some()
        {
            // Ringing again for a call we were in: whoever still counts our
            // earlier participation as connected must drop it.
            let gone = Body::Gone { upto: call.party };
            ctx.send(vec![from.clone()], &call.id, call.party, gone);
        }
        let step = match body {
            Body::Invite { .. } => Step::Continue,
            Body::Cancel { invite_id } => match &call.me {
                Me::Ringing {
                    invite_id: mine, ..
                } if *mine == invite_id => {
                    ctx.emit(Event::CallingCancel {
                        call_id: call.id.clone(),
                        invite_id,
                        user: from.clone(),
                    });
                    Step::End {
                        reason: EndReason::Cancelled,
                        stale: StaleReason::Cancelled,
                    }
                }
                Me::Ringing { .. } | Me::Joining { .. } | Me::InCall => Step::Continue,
            },
            Body::Enter { audio, video, .. } => {
                if matches!(call.me, Me::Joining { .. }) {
                    // A member introducing itself: it may count an earlier
                    // participation of ours, so answer with this one and
                    // wait for its roster too. Only a participation we have
                    // not seen is answered: two joiners introducing
                    // themselves to each other must not ping-pong.
                    let seen = call.connected.get(from).is_some_and(|p| p.party >= party);
                    if !call.is_over(from, party) && !seen {
                        if let Me::Joining { waiting, .. } = &mut call.me {
                            waiting.insert(from.clone());
                        }
                        call.connected.insert(
                            from.clone(),
                            Peer {
                                party,
                                audio,
                                video,
                            },
                        );
                        call.send_enter(ctx, vec![from.clone()], None);
                    }
                    Step::Continue
                } else {
                    let entered = Peer {
                        party,
                        audio,
                        video,
                    };
                    call.on_enter(ctx, now, from, entered);
                    Step::Continue
                }
            }
            Body::Reject { invite_id, busy } => {
                let why = if busy {
                    Removal::Busy
                } else {
                    Removal::Rejected
                };
                call.remove_ringing(ctx, std::slice::from_ref(from), &invite_id, why)
            }
            Body::Timeout {
                invite_id,
                users,
                reason,
            } => {
                let mine = matches!(&call.me, Me::Ringing { invite_id: i, .. } if *i == invite_id);
                if mine && users.contains(&ctx.me) {
                    ctx.emit(Event::CallingTimeout {
                        call_id: call.id.clone(),
                        invite_id,
                    });
                    Step::End {
                        reason: EndReason::TimedOut,
                        stale: StaleReason::TimedOut,
                    }
                } else {
                    call.remove_ringing(ctx, &users, &invite_id, Removal::NoAnswer(reason))
                }
            }
            Body::Leave => {
                if call.connected.get(from).is_some_and(|p| p.party <= party) {
                    call.remove_connected(ctx, from, party)
                } else {
                    // A leave that overtook the sender's enter: remember the
                    // participation so the enter is ignored.
                    call.mark_over(from, party);
                    match call.ringing.get(from).map(|i| i.invite_id.clone()) {
                        Some(invite_id) => call.remove_ringing(
                            ctx,
                            std::slice::from_ref(from),
                            &invite_id,
                            Removal::Gone,
                        ),
                        None => Step::Continue,
                    }
                }
            }
            Body::Gone { upto } => {
                let known_party = call.connected.get(from).map(|p| p.party);
                let over = PartyId(upto.0.saturating_sub(1));
                if upto.0 == 0 {
                    Step::Continue
                } else if let Some(p) = known_party {
                    // A gone sent before this participation began names a
                    // lower bound and changes nothing.
                    if p <= over {
                        call.remove_connected(ctx, from, over)
                    } else {
                        Step::Continue
                    }
                } else if let Some(inv) = call.ringing.get(from) {
                    let invite_id = inv.invite_id.clone();
                    call.remove_ringing(ctx, std::slice::from_ref(from), &invite_id, Removal::Gone)
                } else {
                    call.join_refused(from)
                }
            }
            Body::Roster { info, roster } => {
                if !call.is_over(from, party) {
                    call.on_roster(ctx, now, from, Some(party), info, &roster);
                    Step::Continue
                } else if matches!(call.me, Me::Joining { .. }) {
                    // Its sender has left since, but it still says what the
                    // call is and who else is in it: join them, not it.
                    call.on_roster(ctx, now, from, None, info, &roster);
                    call.check_alive()
                } else {
                    Step::Continue
                }
            }
            Body::MediaState { audio, video } => {
                let in_call = call.in_call();
                let is_video_call = call.info.media_type == MediaType::Video;
                let call_id = call.id.clone();
                if let Some(peer) = call.connected.get_mut(from).filter(|p| p.party == party) {
                    let (was_audio, was_video) = (peer.audio, peer.video);
                    peer.audio = audio;
                    peer.video = video;
                    if in_call && was_audio != audio {
                        ctx.emit(Event::UserAudioAvailable {
                            call_id: call_id.clone(),
                            user: from.clone(),
                            available: audio,
                        });
                    }
                    if in_call && was_video != video && is_video_call {
                        ctx.emit(Event::UserVideoAvailable {
                            call_id,
                            user: from.clone(),
                            available: video,
                        });
                    }
                }
                Step::Continue
            }
            Body::MediaType { media_type } => {
                if call.connected.contains_key(from) {
                    call.apply_media_type(ctx, media_type, Some(from));
                }
                Step::Continue
            }
            Body::SwitchRequest {
                request_id,
                media_type,
            } => {
                if call.in_call() && call.connected.contains_key(from) {
                    if media_type == call.info.media_type {
                        let body = Body::SwitchAnswer {
                            request_id,
                            accepted: true,
                        };
                        call.send(ctx, vec![from.clone()], body);
                    } else {
                        call.switch_in.insert(request_id, from.clone());
                        ctx.emit(Event::MediaTypeSwitchRequested {
                            call_id: call.id.clone(),
                            user: from.clone(),
                            request_id,
                            to: media_type,
                        });
                    }
                }
                Step::Continue
            }
            Body::SwitchAnswer {
                request_id,
                accepted,
            } => {
                let ours = call
                    .switch_out
                    .as_ref()
                    .is_some_and(|s| s.request_id == request_id && s.waiting.contains(from));
                if ours {
                    if accepted {
                        if let Some(sw) = &mut call.switch_out {
                            sw.waiting.remove(from);
                        }
                        call.maybe_finish_switch(ctx);
                    } else {
                        call.switch_out = None;
                        ctx.emit(Event::MediaTypeSwitchRefused {
                            call_id: call.id.clone(),
                            users: vec![from.clone()],
                        });
                    }
                }
                Step::Continue
            }
        };
        self.apply(now, step);
    }
}

struct IncomingInvite {
    call_id: CallId,
    party: PartyId,
    invite_id: InviteId,
    info: CallInfo,
    timeout: u32,
    user_data: Option<String>,
    roster: Roster,
}

/// Both users called each other at once: the local call is a 1v1 call to
/// `from`, nobody answered yet, and `from` invites us 1v1 to its own call.
fn is_glare(ctx: &Ctx, call: &Call, from: &UserId, inv: &IncomingInvite) -> bool {
    call.in_call()
        && call.info.sponsor == ctx.me
        && !call.info.is_group
        && !inv.info.is_group
        && inv.info.sponsor == *from
        && call.connected.is_empty()
        && call.since.is_none()
        && call.ringing.len() == 1
        && call.ringing.contains_key(from)
}

fn send_invites(
    ctx: &mut Ctx,
    call: &mut Call,
    now: Instant,
    users: &[UserId],
    invite_id: InviteId,
    timeout: u32,
) {
    let deadline = (timeout > 0)
        .then(|| now + Duration::from_secs(u64::from(timeout)) + ctx.config.caller_grace);
    for user in users {
        call.ringing.insert(
            user.clone(),
            Invitee {
                invite_id: invite_id.clone(),
                inviter: ctx.me.clone(),
                deadline,
            },
        );
    }
    let body = Body::Invite {
        invite_id,
        info: call.info.clone(),
        timeout,
        user_data: call.user_data.clone(),
        roster: call.roster(ctx),
    };
    call.send(ctx, users.to_vec(), body);
}

/// The call state for an incoming invite, without telling the app.
fn ringing_call_quiet(ctx: &mut Ctx, now: Instant, from: &UserId, inv: IncomingInvite) -> Call {
    let mut connected: BTreeMap<UserId, Peer> = inv
        .roster
        .connected
        .iter()
        .filter(|m| m.user != ctx.me)
        .map(|m| (m.user.clone(), Peer::of(m)))
        .collect();
    connected.entry(from.clone()).or_insert(Peer {
        party: inv.party,
        audio: true,
        video: true,
    });
    let ringing = inv
        .roster
        .ringing
        .iter()
        .filter(|p| p.user != ctx.me && !connected.contains_key(&p.user))
        .map(|p| (p.user.clone(), Invitee::of(p)))
        .collect();
    let deadline = (inv.timeout > 0).then(|| now + Duration::from_secs(u64::from(inv.timeout)));
    let mut call = Call::new(
        inv.call_id,
        inv.info,
        inv.user_data,
        ctx.party(),
        Me::Ringing {
            invite_id: inv.invite_id,
            inviter: from.clone(),
            deadline,
        },
        EndReason::Cancelled,
    );
    call.connected = connected;
    call.ringing = ringing;
    call
}

/// The call state for an incoming invite, and the `Invited` event.
fn ringing_call(ctx: &mut Ctx, now: Instant, from: &UserId, inv: IncomingInvite) -> Call {
    let timeout = inv.timeout;
    let call = ringing_call_quiet(ctx, now, from, inv);
    if let Me::Ringing {
        invite_id, inviter, ..
    } = &call.me
    {
        ctx.emit(Event::Invited {
            call_id: call.id.clone(),
            invite_id: invite_id.clone(),
            sponsor: call.info.sponsor.clone(),
            inviter: inviter.clone(),
            other_invitees: call.ringing.keys().cloned().collect(),
            members: call.connected.keys().cloned().collect(),
            is_from_group: call.info.is_group,
            group_id: call.info.group_id.clone(),
            media_type: call.info.media_type,
            room_id: call.info.room_id,
            user_data: call.user_data.clone(),
            timeout,
        });
    }
    call
}

impl Call {
    /// What a roster from `from` says. `sender` is the participation it came
    /// from, unless that has left since: a present sender is connected,
    /// whatever its roster says.
    fn on_roster(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        from: &UserId,
        sender: Option<PartyId>,
        info: CallInfo,
        roster: &Roster,
    ) {
        let sender = sender
            .filter(|_| !self.connected.contains_key(from))
            .map(|party| {
                let (audio, video) = roster
                    .connected
                    .iter()
                    .find(|m| m.user == *from)
                    .map(|m| (m.audio, m.video))
                    .unwrap_or((true, true));
                Peer {
                    party,
                    audio,
                    video,
                }
            });
        if matches!(self.me, Me::Joining { .. }) {
            self.join_by_roster(ctx, now, from, sender, info, roster);
            return;
        }
        if info.is_group {
            // Someone invited more: it is a group call now.
            self.info.is_group = true;
        }
        if let Some(peer) = sender {
            self.on_enter(ctx, now, from, peer);
        }
        self.merge_roster(ctx, now, roster);
        if self.in_call() && !roster.connected.iter().any(|m| m.user == ctx.me) {
            // The sender does not count us as connected yet: tell it.
            self.send_enter(ctx, vec![from.clone()], None);
        }
    }

    /// The first roster a joiner gets: it says what the call is, and the
    /// joiner is in it.
    fn join_by_roster(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        from: &UserId,
        sender: Option<Peer>,
        info: CallInfo,
        roster: &Roster,
    ) {
        self.info = info;
        // Joining by id makes it a group call, even if it was 1v1.
        self.info.is_group = true;
        if let Some(peer) = sender {
            self.connected.insert(from.clone(), peer);
        }
        // Everyone recorded while joining is announced now.
        self.connect(ctx, now, None);
        // A roster that does not list this participation answered an
        // earlier join of ours that we gave up: its sender must be told of
        // this one too.
        let knows_me = roster
            .connected
            .iter()
            .any(|m| m.user == ctx.me && m.party == self.party);
        if !knows_me {
            self.send_enter(ctx, vec![from.clone()], None);
        }
        // The others introduced themselves while we were joining; some may be
        // joiners themselves, waiting for a roster: send ours (it says we are
        // connected, as an 'enter' would).
        let others: Vec<UserId> = self
            .connected
            .keys()
            .filter(|u| *u != from)
            .cloned()
            .collect();
        self.merge_roster(ctx, now, roster);
        if !others.is_empty() {
            self.send_roster(ctx, others);
        }
    }
}
