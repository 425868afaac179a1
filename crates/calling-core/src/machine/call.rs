//! The state of the one call a machine is in, and what every rule needs of
//! it: who is connected and ringing, what the local party has told whom, and
//! when the call is over for the local party.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use super::ctx::Ctx;
use super::liveness::Liveness;
use crate::error::StaleReason;
use crate::event::{EndReason, Event, MediaInstruction};
use crate::ids::{CallId, InviteId, JoinSecret, MediaType, PartyId, UserId};
use crate::message::{Body, CallInfo, Member, Pending, Roster};

/// Where the local party stands in the call.
#[derive(Debug)]
pub(super) enum Me {
    /// Invited by `inviter`; rings until `deadline` (none: until answered).
    Ringing {
        invite_id: InviteId,
        inviter: UserId,
        deadline: Option<Instant>,
    },
    /// Joining with a ticket: asked its host (`waiting`), gives up at
    /// `deadline`. `heard` are the others that introduced themselves before
    /// the host answered: not let in, but told if the join is given up,
    /// since they list the joiner on the host's word.
    Joining {
        deadline: Instant,
        waiting: BTreeSet<UserId>,
        heard: BTreeSet<UserId>,
    },
    /// Placed, accepted or joined the call.
    InCall,
}

/// Another party connected in the call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    pub(super) party: PartyId,
    pub(super) audio: bool,
    pub(super) video: bool,
}

impl Peer {
    /// A connected party as a roster lists it.
    pub(super) fn of(m: &Member) -> Self {
        Self {
            party: m.party,
            audio: m.audio,
            video: m.video,
        }
    }
}

/// A user invited to the call who has not answered yet.
#[derive(Debug, Clone)]
pub(super) struct Invitee {
    pub(super) invite_id: InviteId,
    pub(super) inviter: UserId,
    /// Armed only on the inviter's side.
    pub(super) deadline: Option<Instant>,
}

impl Invitee {
    /// An invitee another party told us of: its timer is the inviter's.
    pub(super) fn of(p: &Pending) -> Self {
        Self {
            invite_id: p.invite_id.clone(),
            inviter: p.inviter.clone(),
            deadline: None,
        }
    }
}

/// A media type switch the local user asked for, waiting for answers.
#[derive(Debug)]
pub(super) struct OutgoingSwitch {
    pub(super) request_id: u32,
    pub(super) to: MediaType,
    pub(super) waiting: BTreeSet<UserId>,
    pub(super) deadline: Instant,
}

#[derive(Debug)]
pub(super) struct Call {
    pub(super) id: CallId,
    /// While joining, a placeholder until the first roster arrives.
    pub(super) info: CallInfo,
    pub(super) user_data: Option<String>,
    pub(super) party: PartyId,
    pub(super) me: Me,
    /// The invite the local user accepted to get here.
    pub(super) accepted: Option<InviteId>,
    pub(super) connected: BTreeMap<UserId, Peer>,
    /// Parties an invite's roster listed as connected that have not
    /// answered themselves yet: the inviter's word, not ours. They become
    /// connected when they enter or send their roster, or a member's roster
    /// lists them; they never keep the call alive once the local party is
    /// in it, so names an inviter made up cannot either.
    pub(super) vouched: BTreeMap<UserId, Peer>,
    pub(super) ringing: BTreeMap<UserId, Invitee>,
    /// Per user, the highest participation known to be over: messages of
    /// that one or earlier ones are late and ignored.
    pub(super) ended: BTreeMap<UserId, PartyId>,
    /// Invitations that were answered, withdrawn or timed out.
    pub(super) closed: HashSet<(UserId, InviteId)>,
    /// Every invitation known to be addressed to a user: an `enter` that
    /// accepts one of these is let in even after its invitee stopped
    /// ringing here (it timed out, or a `gone` of an earlier participation
    /// overtook it).
    pub(super) invited: HashSet<(UserId, InviteId)>,
    /// Invitations their invitee declined (rejected, or busy): declining
    /// gives the right up for good.
    pub(super) declined: HashSet<(UserId, InviteId)>,
    /// When the local user first talked to someone in this call.
    pub(super) since: Option<Instant>,
    /// The end reason if the call empties before anyone connected.
    pub(super) cause: EndReason,
    pub(super) switch_out: Option<OutgoingSwitch>,
    /// Switch requests of others, by request id, waiting for the app.
    pub(super) switch_in: BTreeMap<u32, UserId>,
    /// The keepalive among the connected members.
    pub(super) liveness: Liveness,
    /// The secret of the call's join tickets, once known: minted by the
    /// sponsor, learned from a connected member's roster or from the ticket
    /// the local party joined with.
    pub(super) join_secret: Option<JoinSecret>,
}

/// What a handler decided about the call.
pub(super) enum Step {
    Continue,
    End {
        reason: EndReason,
        stale: StaleReason,
    },
}

impl Call {
    /// A call the local party takes part in as `party`, knowing nobody in it
    /// yet; `cause` is how it ends if it empties before anyone connected.
    pub(super) fn new(
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
            vouched: BTreeMap::new(),
            ringing: BTreeMap::new(),
            ended: BTreeMap::new(),
            closed: HashSet::new(),
            invited: HashSet::new(),
            declined: HashSet::new(),
            since: None,
            cause,
            switch_out: None,
            switch_in: BTreeMap::new(),
            liveness: Liveness::default(),
            join_secret: None,
        }
    }

    /// Everyone the local party knows in the call, including the members a
    /// joiner is still waiting on.
    pub(super) fn known(&self) -> Vec<UserId> {
        let mut known: BTreeSet<&UserId> = self
            .connected
            .keys()
            .chain(self.vouched.keys())
            .chain(self.ringing.keys())
            .collect();
        if let Me::Joining { waiting, heard, .. } = &self.me {
            known.extend(waiting);
            known.extend(heard);
        }
        known.into_iter().cloned().collect()
    }

    /// Whether `user` is connected in the call as participation `party`:
    /// what it takes to change the call's media.
    pub(super) fn is_member(&self, user: &UserId, party: PartyId) -> bool {
        self.connected.get(user).is_some_and(|p| p.party == party)
    }

    /// Whether `user` may enter by accepting `invite_id`: it rings here for
    /// it, or it was invited with it and did not decline it. An invite that
    /// timed out still counts: the invitee's accept may have crossed the
    /// inviter's timeout, and only the invitee itself can show its invite.
    pub(super) fn may_accept(&self, user: &UserId, invite_id: Option<&InviteId>) -> bool {
        if let Some(i) = self.ringing.get(user) {
            return invite_id.is_none_or(|id| *id == i.invite_id);
        }
        invite_id.is_some_and(|id| {
            let key = (user.clone(), id.clone());
            self.invited.contains(&key) && !self.declined.contains(&key)
        })
    }

    /// Records that `user` rings for an invitation.
    pub(super) fn add_invitee(&mut self, user: UserId, invitee: Invitee) {
        self.invited
            .insert((user.clone(), invitee.invite_id.clone()));
        self.ringing.insert(user, invitee);
    }

    pub(super) fn is_over(&self, user: &UserId, party: PartyId) -> bool {
        self.ended.get(user).is_some_and(|e| party <= *e)
    }

    pub(super) fn mark_over(&mut self, user: &UserId, party: PartyId) {
        let e = self.ended.entry(user.clone()).or_insert(party);
        *e = (*e).max(party);
    }

    /// A peer's video is available when its camera is on in a video call.
    fn video_of(&self, peer: &Peer) -> bool {
        peer.video && self.info.media_type == MediaType::Video
    }

    pub(super) fn in_call(&self) -> bool {
        matches!(self.me, Me::InCall)
    }

    /// Who is in the call as the local party knows it; a ringing local
    /// party is not connected yet.
    pub(super) fn roster(&self, ctx: &Ctx) -> Roster {
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

    pub(super) fn send(&self, ctx: &mut Ctx, to: Vec<UserId>, body: Body) {
        ctx.send(to, &self.id, self.party, body);
    }

    /// Tells `to` what the call is and who is in it, as the local party
    /// knows it. Only the connected among `to` get the join secret: a
    /// ringing invitee has no right to hand out tickets yet.
    pub(super) fn send_roster(&self, ctx: &mut Ctx, to: Vec<UserId>) {
        let (members, others): (Vec<UserId>, Vec<UserId>) = to
            .into_iter()
            .partition(|u| self.in_call() && self.connected.contains_key(u));
        for (to, join_secret) in [(members, self.join_secret.clone()), (others, None)] {
            let body = Body::Roster {
                info: self.info.clone(),
                roster: self.roster(ctx),
                join_secret,
            };
            self.send(ctx, to, body);
        }
    }

    /// Tells every other connected party who is in the call: sent when the
    /// local party let someone in, so that the others learn the newcomer
    /// from a member rather than from the newcomer's own claim.
    pub(super) fn send_roster_to_connected(&self, ctx: &mut Ctx) {
        self.send_roster(ctx, self.connected.keys().cloned().collect());
    }

    /// Tells `to` that the local party is connected, and how its microphone
    /// and camera are; `invite_id` is the invite it accepted, if it did.
    pub(super) fn send_enter(&self, ctx: &mut Ctx, to: Vec<UserId>, invite_id: Option<InviteId>) {
        let body = Body::Enter {
            invite_id,
            join_secret: None,
            audio: ctx.audio,
            video: ctx.video,
        };
        self.send(ctx, to, body);
    }

    /// TRTCCalling's `GROUP_CALL_INVITEE_LIST_UPDATE`: group calls only (a
    /// 1v1 call becomes one when someone invites more).
    pub(super) fn emit_invitees(&self, ctx: &mut Ctx) {
        if !self.info.is_group {
            return;
        }
        ctx.emit(Event::InviteeListUpdated {
            call_id: self.id.clone(),
            invitees: self.ringing.keys().cloned().collect(),
        });
    }

    /// Announces a connected party to the app and the media engine.
    pub(super) fn announce(&self, ctx: &mut Ctx, user: &UserId) {
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
    pub(super) fn connect(&mut self, ctx: &mut Ctx, now: Instant, accepted: Option<InviteId>) {
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
        self.sync_liveness(ctx, now);
    }

    /// Whether the call is still alive for the local party after a change:
    /// a party stays while anyone else is connected or still ringing, and a
    /// ringing party while anyone is connected to ring it.
    pub(super) fn check_alive(&self) -> Step {
        match &self.me {
            Me::InCall if self.connected.is_empty() && self.ringing.is_empty() => Step::End {
                reason: if self.since.is_some() {
                    EndReason::Hangup
                } else {
                    self.cause
                },
                stale: StaleReason::Accepted,
            },
            Me::Ringing { .. } if self.connected.is_empty() && self.vouched.is_empty() => {
                Step::End {
                    reason: EndReason::Cancelled,
                    stale: StaleReason::Cancelled,
                }
            }
            Me::InCall | Me::Ringing { .. } | Me::Joining { .. } => Step::Continue,
        }
    }

    /// Before ending a ringing call because everyone left: tell the app.
    pub(super) fn cancel_notice(&self, ctx: &mut Ctx, by: &UserId) {
        if let Me::Ringing { invite_id, .. } = &self.me {
            ctx.emit(Event::CallingCancel {
                call_id: self.id.clone(),
                invite_id: invite_id.clone(),
                user: by.clone(),
            });
        }
    }
}
