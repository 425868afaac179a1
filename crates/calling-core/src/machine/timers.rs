//! Timers: the local party's ringing, a join waiting for answers, a switch
//! request waiting for answers, the invitees' no-answer timers on the
//! inviter's side, and the keepalive among connected members (see
//! `liveness`). The machine never reads the clock: its owner asks
//! [`CallMachine::poll_timeout`] and calls [`CallMachine::handle_timeout`].

use std::time::Instant;

use super::CallMachine;
use super::call::{Call, Me};
use crate::error::StaleReason;
use crate::event::EndReason;
use crate::message::{Body, NoAnswer};

impl CallMachine {
    /// Fires the timers due at `now`. Calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Timers served a whole keepalive interval late mean the driver did
        // not run (a stopped process, a sleeping host).
        let late = self
            .poll_timeout()
            .is_some_and(|due| now >= due + self.ctx.config.keepalive_interval);
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
                let step = call.ringing_timed_out(ctx, invite_id);
                self.apply(now, step);
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
        call.switch_timeout(ctx, now);
        let step = call.invitee_timeouts(ctx, now);
        self.apply(now, step);
        if let Some(call) = self.call.as_mut() {
            let step = call.keepalive(&mut self.ctx, now, late);
            self.apply(now, step);
        }
    }
}

impl Call {
    /// The earliest armed timer.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let mine = match &self.me {
            Me::Ringing { deadline, .. } => *deadline,
            Me::Joining { deadline, .. } => Some(*deadline),
            Me::InCall => None,
        };
        let invitees = self.ringing.values().filter_map(|i| i.deadline);
        let switch = self.switch_out.as_ref().map(|s| s.deadline);
        let liveness = self.liveness.deadline();
        mine.into_iter()
            .chain(invitees)
            .chain(switch)
            .chain(liveness)
            .min()
    }
}
