//! A simulated network of call machines with a virtual clock. Messages can
//! be delivered in any order, dropped or duplicated; users that are not
//! online make the server answer "unreachable", as the real one does.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use calling_core::{
    CallId, CallMachine, CallOptions, CallState, Config, EndReason, Event, InviteId, JoinTicket,
    MediaInstruction, MediaType, Message, Output, UserId,
};

/// A message on the wire.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub from: UserId,
    pub to: UserId,
    pub message: Message,
}

/// One simulated user.
pub struct Party {
    pub machine: CallMachine,
    pub events: Vec<Event>,
    pub media: Vec<MediaInstruction>,
}

pub struct Sim {
    pub now: Instant,
    pub parties: BTreeMap<UserId, Party>,
    pub net: Vec<InFlight>,
    /// Messages sent, in total (for the benchmark and sanity checks).
    pub sent: usize,
    /// Users that are online but run no machine (an attacker): what reaches
    /// them is kept here instead.
    pub sinks: BTreeMap<UserId, Vec<InFlight>>,
}

pub fn uid(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

impl Sim {
    pub fn new(users: &[&str]) -> Self {
        Self::with_config(users, Config::default())
    }

    pub fn with_config(users: &[&str], config: Config) -> Self {
        let mut parties = BTreeMap::new();
        for (i, u) in users.iter().enumerate() {
            let mut seed = [0u8; 32];
            seed[0] = i as u8 + 1;
            parties.insert(
                uid(u),
                Party {
                    machine: CallMachine::new(uid(u), config.clone(), seed),
                    events: Vec::new(),
                    media: Vec::new(),
                },
            );
        }
        Self {
            now: Instant::now(),
            parties,
            net: Vec::new(),
            sent: 0,
            sinks: BTreeMap::new(),
        }
    }

    pub fn m(&mut self, user: &str) -> &mut CallMachine {
        &mut self
            .parties
            .get_mut(&uid(user))
            .expect("known party")
            .machine
    }

    pub fn state(&self, user: &str) -> CallState {
        self.parties[&uid(user)].machine.state()
    }

    /// Moves every party's outputs onto the network and into its logs.
    pub fn flush(&mut self) {
        let users: Vec<UserId> = self.parties.keys().cloned().collect();
        for user in users {
            loop {
                let party = self.parties.get_mut(&user).expect("known party");
                let Some(out) = party.machine.poll_output() else {
                    break;
                };
                match out {
                    Output::Event(e) => party.events.push(e),
                    Output::Media(m) => party.media.push(m),
                    Output::Send { to, message } => {
                        assert!(!to.is_empty(), "empty recipient list");
                        assert!(!to.contains(&user), "message to self");
                        for t in to {
                            self.sent += 1;
                            self.net.push(InFlight {
                                from: user.clone(),
                                to: t,
                                message: message.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Delivers the message at `index` of the network.
    pub fn deliver(&mut self, index: usize) {
        let m = self.net.remove(index);
        let now = self.now;
        if let Some(inbox) = self.sinks.get_mut(&m.to) {
            inbox.push(m);
            return;
        }
        // Every message crosses the wire as JSON, as in production.
        let message = Message::from_json(&m.message.to_json()).expect("round trip");
        match self.parties.get_mut(&m.to) {
            Some(p) => {
                p.machine
                    .handle_message(now, &m.from, message)
                    .expect("valid message accepted");
            }
            None => {
                // Offline: the server answers unreachable to the sender.
                if let Some(sender) = self.parties.get_mut(&m.from) {
                    sender
                        .machine
                        .handle_unreachable(now, &m.to, &m.message.call_id);
                }
            }
        }
        self.flush();
    }

    /// Delivers everything, oldest first, until the network is quiet.
    pub fn settle(&mut self) {
        self.flush();
        for _ in 0..100_000 {
            if self.net.is_empty() {
                return;
            }
            self.deliver(0);
        }
        panic!("network did not settle: messages keep flowing");
    }

    /// Advances the clock, firing due timers and settling the network.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for p in self.parties.values_mut() {
            p.machine.handle_timeout(now);
        }
        self.settle();
    }

    /// Advances the virtual clock past every armed timer.
    pub fn run_timers(&mut self) {
        for _ in 0..1000 {
            let next = self
                .parties
                .values()
                .filter_map(|p| p.machine.poll_timeout())
                .min();
            let Some(next) = next else { return };
            if next > self.now {
                self.now = next;
            }
            let now = self.now;
            for p in self.parties.values_mut() {
                p.machine.handle_timeout(now);
            }
            self.settle();
        }
        panic!("timers keep firing");
    }

    /// Makes `user` an online user without a machine (see [`Sim::sinks`]).
    pub fn add_sink(&mut self, user: &str) {
        self.sinks.insert(uid(user), Vec::new());
    }

    /// What reached the sink `user`.
    pub fn sink(&self, user: &str) -> &[InFlight] {
        &self.sinks[&uid(user)]
    }

    pub fn events(&self, user: &str) -> &[Event] {
        &self.parties[&uid(user)].events
    }

    pub fn take_events(&mut self, user: &str) -> Vec<Event> {
        std::mem::take(
            &mut self
                .parties
                .get_mut(&uid(user))
                .expect("known party")
                .events,
        )
    }

    pub fn media(&self, user: &str) -> &[MediaInstruction] {
        &self.parties[&uid(user)].media
    }

    /// The invite id of the last `Invited` event of `user`.
    pub fn invite_of(&self, user: &str) -> InviteId {
        self.events(user)
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Invited { invite_id, .. } => Some(invite_id.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{user} was never invited"))
    }

    pub fn call(&mut self, from: &str, to: &str, media: MediaType, timeout: u32) -> CallId {
        let now = self.now;
        let id = self
            .m(from)
            .call_user(
                now,
                uid(to),
                media,
                CallOptions {
                    timeout,
                    ..CallOptions::default()
                },
            )
            .expect("call placed");
        self.settle();
        id
    }

    pub fn group_call(
        &mut self,
        from: &str,
        to: &[&str],
        media: MediaType,
        timeout: u32,
    ) -> CallId {
        let now = self.now;
        let users = to.iter().map(|u| uid(u)).collect();
        let id = self
            .m(from)
            .group_call(
                now,
                users,
                media,
                CallOptions {
                    timeout,
                    ..CallOptions::default()
                },
            )
            .expect("group call placed");
        self.settle();
        id
    }

    pub fn accept(&mut self, user: &str) {
        let invite = self.invite_of(user);
        let now = self.now;
        self.m(user).accept(now, &invite).expect("accept");
        self.settle();
    }

    pub fn reject(&mut self, user: &str) {
        let invite = self.invite_of(user);
        let now = self.now;
        self.m(user).reject(now, &invite).expect("reject");
        self.settle();
    }

    pub fn hangup(&mut self, user: &str) {
        let now = self.now;
        self.m(user).hangup(now);
        self.settle();
    }

    /// The join ticket `user` hands out for its call.
    pub fn ticket(&self, user: &str) -> JoinTicket {
        self.parties[&uid(user)]
            .machine
            .call()
            .and_then(|c| c.join_ticket)
            .unwrap_or_else(|| panic!("{user} has no join ticket"))
    }

    /// Who `user` sees connected in its call (empty when idle).
    pub fn connected(&self, user: &str) -> BTreeSet<UserId> {
        self.parties[&uid(user)]
            .machine
            .call()
            .map(|c| c.connected.into_iter().collect())
            .unwrap_or_default()
    }

    pub fn end_reason(&self, user: &str) -> Option<EndReason> {
        self.events(user).iter().rev().find_map(|e| match e {
            Event::CallEnd { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    pub fn count<F: Fn(&Event) -> bool>(&self, user: &str, f: F) -> usize {
        self.events(user).iter().filter(|e| f(e)).count()
    }
}

pub fn set(users: &[&str]) -> BTreeSet<UserId> {
    users.iter().map(|u| uid(u)).collect()
}
