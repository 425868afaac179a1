//! Microphone, camera and the call's media type. Video to audio applies at
//! once; audio to video asks every connected party and applies when all
//! agree, or is refused by the first who declines or by the timeout.

use std::collections::BTreeSet;
use std::time::Instant;

use super::CallMachine;
use super::call::{Call, OutgoingSwitch};
use super::ctx::Ctx;
use crate::error::SwitchError;
use crate::event::{Event, MediaInstruction};
use crate::ids::{MediaType, PartyId, UserId};
use crate::message::Body;

impl CallMachine {
    /// Switches the call's media type (TUICallKit `switchCallMediaType`).
    /// Video to audio applies at once and the peers are told; audio to video
    /// asks every connected party and applies when all agree
    /// ([`Event::MediaTypeSwitchRefused`] otherwise).
    pub fn switch_media_type(&mut self, now: Instant, to: MediaType) -> Result<(), SwitchError> {
        let Some((ctx, call)) = self.in_call_mut() else {
            return Err(SwitchError::NotInCall);
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
        let Some((ctx, call)) = self.in_call_mut() else {
            return Err(SwitchError::NotInCall);
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
    /// raise `UserAudioAvailable`. Kept across calls; setting what is
    /// already set tells nobody anything.
    pub fn set_audio_available(&mut self, _now: Instant, available: bool) {
        if self.ctx.audio != available {
            self.ctx.audio = available;
            self.send_media_state();
        }
    }

    /// Camera on or off (TRTCCalling `openCamera` / `closeCamera`): the peers
    /// raise `UserVideoAvailable`. Kept across calls; setting what is
    /// already set tells nobody anything.
    pub fn set_video_available(&mut self, _now: Instant, available: bool) {
        if self.ctx.video != available {
            self.ctx.video = available;
            self.send_media_state();
        }
    }

    fn send_media_state(&mut self) {
        if let Some((ctx, call)) = self.in_call_mut() {
            let body = Body::MediaState {
                audio: ctx.audio,
                video: ctx.video,
            };
            call.send(ctx, call.connected.keys().cloned().collect(), body);
        }
    }
}

impl Call {
    /// A peer's microphone or camera changed; a message of another
    /// participation of it is late.
    pub(super) fn on_media_state(
        &mut self,
        ctx: &mut Ctx,
        from: &UserId,
        party: PartyId,
        audio: bool,
        video: bool,
    ) {
        let in_call = self.in_call();
        let is_video_call = self.info.media_type == MediaType::Video;
        let Some(peer) = self.connected.get_mut(from).filter(|p| p.party == party) else {
            return;
        };
        let (was_audio, was_video) = (peer.audio, peer.video);
        peer.audio = audio;
        peer.video = video;
        if in_call && was_audio != audio {
            ctx.emit(Event::UserAudioAvailable {
                call_id: self.id.clone(),
                user: from.clone(),
                available: audio,
            });
        }
        if in_call && was_video != video && is_video_call {
            ctx.emit(Event::UserVideoAvailable {
                call_id: self.id.clone(),
                user: from.clone(),
                available: video,
            });
        }
    }

    /// A connected party switched the call's media type; a message of
    /// another participation of it is late.
    pub(super) fn on_media_type(
        &mut self,
        ctx: &mut Ctx,
        from: &UserId,
        party: PartyId,
        media_type: MediaType,
    ) {
        if self.is_member(from, party) {
            self.apply_media_type(ctx, media_type, Some(from));
        }
    }

    /// A connected party asks to switch: the app answers, unless the call
    /// already has that type.
    pub(super) fn on_switch_request(
        &mut self,
        ctx: &mut Ctx,
        from: &UserId,
        party: PartyId,
        request_id: u32,
        media_type: MediaType,
    ) {
        if !self.in_call() || !self.is_member(from, party) {
            return;
        }
        if media_type == self.info.media_type {
            let body = Body::SwitchAnswer {
                request_id,
                accepted: true,
            };
            self.send(ctx, vec![from.clone()], body);
        } else {
            self.switch_in.insert(request_id, from.clone());
            ctx.emit(Event::MediaTypeSwitchRequested {
                call_id: self.id.clone(),
                user: from.clone(),
                request_id,
                to: media_type,
            });
        }
    }

    /// A party answered our switch request: the switch applies when the last
    /// one agrees, and is refused by the first who declines.
    pub(super) fn on_switch_answer(
        &mut self,
        ctx: &mut Ctx,
        from: &UserId,
        request_id: u32,
        accepted: bool,
    ) {
        let ours = self
            .switch_out
            .as_ref()
            .is_some_and(|s| s.request_id == request_id && s.waiting.contains(from));
        if !ours {
            return;
        }
        if accepted {
            if let Some(sw) = &mut self.switch_out {
                sw.waiting.remove(from);
            }
            self.maybe_finish_switch(ctx);
        } else {
            self.switch_out = None;
            ctx.emit(Event::MediaTypeSwitchRefused {
                call_id: self.id.clone(),
                users: vec![from.clone()],
            });
        }
    }

    /// Our switch request got no answer from some in time: refused.
    pub(super) fn switch_timeout(&mut self, ctx: &mut Ctx, now: Instant) {
        if self.switch_out.as_ref().is_some_and(|s| s.deadline <= now)
            && let Some(sw) = self.switch_out.take()
        {
            ctx.emit(Event::MediaTypeSwitchRefused {
                call_id: self.id.clone(),
                users: sw.waiting.into_iter().collect(),
            });
        }
    }

    /// Applies our switch request once everyone asked has agreed (or left).
    pub(super) fn maybe_finish_switch(&mut self, ctx: &mut Ctx) {
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
}
