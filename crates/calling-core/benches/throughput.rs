//! Commands and messages handled per second by the call state machine.
//!
//! One iteration is a whole call between machines wired back to back: a
//! 1v1 call (call, invite, accept, enter, roster, hangup, leave) or a 4-party
//! group call. Criterion's throughput is in handled inputs (commands +
//! messages) per second. Run with `cargo bench -p calling-core`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

use calling_core::{CallMachine, CallOptions, Config, Event, MediaType, Output, UserId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

struct Net {
    machines: Vec<CallMachine>,
    queue: VecDeque<(usize, UserId, calling_core::Message)>,
    handled: u64,
    now: Instant,
}

impl Net {
    fn new(n: usize) -> Self {
        let machines = (0..n)
            .map(|i| {
                let user = UserId::new(format!("user{i}")).expect("valid id");
                CallMachine::new(user, Config::default(), [i as u8 + 1; 32])
            })
            .collect();
        Self {
            machines,
            queue: VecDeque::new(),
            handled: 0,
            now: Instant::now(),
        }
    }

    fn index(&self, user: &UserId) -> usize {
        self.machines
            .iter()
            .position(|m| m.user() == user)
            .expect("known user")
    }

    /// Drains outputs and delivers until quiet; returns the invite ids seen.
    fn run(&mut self) -> Vec<(usize, calling_core::InviteId)> {
        let mut invites = Vec::new();
        loop {
            for i in 0..self.machines.len() {
                while let Some(out) = self.machines[i].poll_output() {
                    match out {
                        Output::Send { to, message } => {
                            let from = self.machines[i].user().clone();
                            for t in to {
                                let j = self.index(&t);
                                self.queue.push_back((j, from.clone(), message.clone()));
                            }
                        }
                        Output::Event(Event::Invited { invite_id, .. }) => {
                            invites.push((i, invite_id))
                        }
                        other => {
                            let _ = black_box(other);
                        }
                    }
                }
            }
            let Some((j, from, message)) = self.queue.pop_front() else {
                return invites;
            };
            let now = self.now;
            self.machines[j]
                .handle_message(now, &from, message)
                .expect("valid message");
            self.handled += 1;
        }
    }

    /// One call from machine 0 to all others: everyone accepts, then all hang up.
    fn call_cycle(&mut self) {
        let now = self.now;
        let users: Vec<UserId> = self.machines[1..]
            .iter()
            .map(|m| m.user().clone())
            .collect();
        if users.len() == 1 {
            self.machines[0]
                .call_user(
                    now,
                    users[0].clone(),
                    MediaType::Video,
                    CallOptions::default(),
                )
                .expect("call");
        } else {
            self.machines[0]
                .group_call(now, users, MediaType::Video, CallOptions::default())
                .expect("call");
        }
        self.handled += 1;
        let invites = self.run();
        for (i, invite) in invites {
            self.machines[i].accept(now, &invite).expect("accept");
            self.handled += 1;
        }
        self.run();
        for i in 0..self.machines.len() {
            self.machines[i].hangup(now);
            self.handled += 1;
            self.run();
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_cycle");
    for parties in [2usize, 4] {
        let mut probe = Net::new(parties);
        probe.call_cycle();
        group.throughput(Throughput::Elements(probe.handled));
        let mut net = Net::new(parties);
        group.bench_function(format!("{parties}_parties"), |b| {
            b.iter(|| net.call_cycle());
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
