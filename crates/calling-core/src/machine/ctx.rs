//! Everything a call needs but the call itself: who the local user is, the
//! settings, the id generator and the output queue.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Config;
use crate::event::{Event, MediaInstruction, Output};
use crate::ids::{CallId, InviteId, JoinSecret, PartyId, RoomId, UserId};
use crate::message::{Body, Member, Message, PROTOCOL_VERSION};

/// How many answered invites and finished calls are remembered, so that late
/// duplicates of their messages are recognised.
const MEMORY: usize = 256;

/// Identity, settings, randomness and outputs.
pub(super) struct Ctx {
    pub(super) me: UserId,
    pub(super) config: Config,
    rng: StdRng,
    out: VecDeque<Output>,
    /// The local microphone, kept across calls.
    pub(super) audio: bool,
    /// The local camera, kept across calls.
    pub(super) video: bool,
    pub(super) next_party: PartyId,
}

impl Ctx {
    pub(super) fn new(me: UserId, config: Config, seed: [u8; 32]) -> Self {
        Self {
            me,
            config,
            rng: StdRng::from_seed(seed),
            out: VecDeque::new(),
            audio: true,
            video: true,
            next_party: PartyId(1),
        }
    }

    pub(super) fn next_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub(super) fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    pub(super) fn media(&mut self, instruction: MediaInstruction) {
        self.out.push_back(Output::Media(instruction));
    }

    /// Sends `body` about `call_id` to `to`, never to the local user.
    pub(super) fn send(&mut self, to: Vec<UserId>, call_id: &CallId, party: PartyId, body: Body) {
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

    /// A version-4 UUID from the machine's generator (122 random bits).
    fn token(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    pub(super) fn call_id(&mut self) -> CallId {
        CallId::new(self.token()).unwrap_or_else(|_| unreachable_id())
    }

    pub(super) fn invite_id(&mut self) -> InviteId {
        InviteId::new(self.token()).unwrap_or_else(|_| unreachable_id())
    }

    /// 122 random bits: a secret nobody guesses.
    pub(super) fn join_secret(&mut self) -> JoinSecret {
        JoinSecret::new(self.token()).unwrap_or_else(|_| unreachable_id())
    }

    pub(super) fn room_id(&mut self) -> RoomId {
        let n = self.rng.random_range(1..=RoomId::MAX);
        RoomId::new(n).unwrap_or_else(|_| unreachable_id())
    }

    /// A fresh participation: party ids only grow.
    pub(super) fn party(&mut self) -> PartyId {
        let party = self.next_party;
        self.next_party = PartyId(party.0 + 1);
        party
    }

    pub(super) fn request_id(&mut self) -> u32 {
        self.rng.random_range(1..=u32::MAX)
    }

    /// The local user as a roster lists it.
    pub(super) fn me_member(&self, party: PartyId) -> Member {
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

/// A small bounded memory, oldest forgotten first.
#[derive(Debug)]
pub(super) struct Recent<K, V>(VecDeque<(K, V)>);

impl<K: PartialEq, V: Copy> Recent<K, V> {
    pub(super) fn new() -> Self {
        Self(VecDeque::new())
    }

    pub(super) fn get(&self, key: &K) -> Option<V> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    pub(super) fn put(&mut self, key: K, value: V) {
        if self.0.len() == MEMORY {
            self.0.pop_front();
        }
        self.0.push_back((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_version_4_uuids_and_a_seed_repeats_them() {
        let me = UserId::new("alice").unwrap_or_else(|_| unreachable_id());
        let mut a = Ctx::new(me.clone(), Config::default(), [7; 32]);
        let mut b = Ctx::new(me, Config::default(), [7; 32]);
        let ids: Vec<String> = (0..100).map(|_| a.token()).collect();
        for id in &ids {
            let parsed = uuid::Uuid::try_parse(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(id.len(), 36);
        }
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        // Sans-IO: the same seed gives the same ids.
        assert_eq!(b.token(), ids[0]);
    }
}
