//! Offer/answer and trickle ICE with one remote: who offers, applying the
//! remote's descriptions and candidates (queued until its description is
//! set), and sending ours in order.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use calling_core::UserId;
use rtc::peer_connection::configuration::RTCOfferOptions;
use webrtc::peer_connection::{
    RTCIceCandidateInit, RTCIceCandidateType, RTCPeerConnectionIceEvent, RTCSessionDescription,
};

use super::codec::AUDIO_LEVEL_URI;
use super::peer::{Peer, PeerShared, has_turn};
use super::{Inner, MediaSession};
use crate::error::MediaError;
use crate::types::{MediaEvent, MediaSignal};

const MAX_CANDIDATE_LEN: usize = 2048;
const MAX_PENDING_CANDIDATES: usize = 256;

/// Where the offer/answer exchange with one remote stands.
#[derive(Default)]
pub(super) struct Negotiation {
    /// We sent an offer.
    offered: bool,
    /// Our last offer waits for its answer.
    awaiting_answer: bool,
    /// The remote's description is applied.
    remote_set: bool,
    /// The SDP session id (`o=` line) of the remote's offer: a later offer
    /// with the same one renegotiates this connection.
    remote_session: Option<String>,
    /// The remote's candidates that arrived before its description.
    pending: Vec<RTCIceCandidateInit>,
}

/// Our candidates on their way to one remote.
#[derive(Default)]
pub(crate) struct LocalCandidates {
    /// Our offer or answer went out: candidates may follow at once.
    described: bool,
    /// The mid of the m-line our candidates belong to (with BUNDLE, the
    /// first one), read off our description.
    mid: Option<String>,
    /// Candidates gathered before our description went out.
    held: Vec<MediaSignal>,
    /// Relay candidates of the current gathering.
    relays: usize,
    /// A gathering without relay candidates was reported: once per
    /// connection, not again at every restart.
    no_relay_reported: bool,
}

impl LocalCandidates {
    /// A new description (an ICE restart) is being made: its candidates
    /// wait for it, and gathering counts anew.
    fn restart(&mut self) {
        self.described = false;
        self.relays = 0;
    }

    /// `signal` with the m-line it belongs to, once we know it.
    fn with_mid(&self, signal: MediaSignal) -> MediaSignal {
        match signal {
            MediaSignal::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            } => MediaSignal::Candidate {
                candidate,
                sdp_mid: sdp_mid
                    .filter(|m| !m.is_empty())
                    .or_else(|| self.mid.clone()),
                sdp_mline_index: sdp_mline_index.or(Some(0)),
                username_fragment,
            },
            other => other,
        }
    }
}

/// Sends `signal` (a candidate, or the end of them) at once if our
/// description is out, else holds it until it is.
fn send_candidate(shared: &PeerShared, session: &Weak<Inner>, signal: MediaSignal) {
    let Some(session) = session.upgrade() else {
        return;
    };
    let Ok(mut local) = shared.local_candidates.lock() else {
        return;
    };
    if local.described {
        session.emit(MediaEvent::Signal {
            to: shared.remote.clone(),
            signal: local.with_mid(signal),
        });
    } else {
        local.held.push(signal);
    }
}

/// A local candidate webrtc-rs gathered.
pub(super) fn on_local_candidate(
    shared: &PeerShared,
    session: &Weak<Inner>,
    event: RTCPeerConnectionIceEvent,
) {
    if event.candidate.typ == RTCIceCandidateType::Relay {
        if let Ok(mut local) = shared.local_candidates.lock() {
            local.relays += 1;
        }
    }
    let init = match event.candidate.to_json() {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "cannot serialize local candidate");
            return;
        }
    };
    let signal = MediaSignal::Candidate {
        candidate: init.candidate,
        sdp_mid: init.sdp_mid,
        sdp_mline_index: init.sdp_mline_index,
        username_fragment: init.username_fragment,
    };
    send_candidate(shared, session, signal);
}

/// Gathering finished: tell the remote there will be no more candidates
/// (an empty candidate, as a browser's end-of-candidates), so that it can
/// conclude ICE failed when none of the pairs works.
pub(super) fn on_gathering_complete(shared: &PeerShared, session: &Weak<Inner>) {
    if let Some(inner) = session.upgrade() {
        let turn = has_turn(&inner.ice_servers());
        let first_without_relay = shared.local_candidates.lock().is_ok_and(|mut l| {
            let first = turn && l.relays == 0 && !l.no_relay_reported;
            l.no_relay_reported |= first;
            first
        });
        if first_without_relay {
            let relay_only = inner.config.relay_only;
            tracing::warn!(user = %shared.remote, relay_only, "ICE gathering ended without a relay candidate: the TURN server refused or did not answer");
            inner.emit(MediaEvent::NoRelayCandidates {
                user: shared.remote.clone(),
                relay_only,
            });
        }
    }
    let end = MediaSignal::Candidate {
        candidate: String::new(),
        sdp_mid: None,
        sdp_mline_index: None,
        username_fragment: None,
    };
    send_candidate(shared, session, end);
}

/// The session id of `sdp`'s origin line (`o=<user> <sess-id> ...`):
/// the same for every description one peer connection makes.
fn session_id(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("o="))
        .and_then(|o| o.split_whitespace().nth(1))
        .map(str::to_owned)
}

/// The mid candidates belong to in `sdp`: the first of its BUNDLE group,
/// else its first m-line's.
fn transport_mid(sdp: &str) -> Option<String> {
    let lines = || sdp.lines().map(str::trim);
    lines()
        .find_map(|l| l.strip_prefix("a=group:BUNDLE "))
        .and_then(|mids| mids.split_whitespace().next())
        .or_else(|| lines().find_map(|l| l.strip_prefix("a=mid:")))
        .map(str::to_owned)
}

fn invalid_sdp(from: &UserId, e: impl std::fmt::Display) -> MediaError {
    MediaError::InvalidSdp {
        from: from.clone(),
        reason: e.to_string(),
    }
}

/// The DTLS certificate fingerprints an SDP announces (session or media
/// level), normalised and sorted: `sha-256 AB:CD:…`, comma-separated. Empty
/// when there is none.
pub(crate) fn fingerprints(sdp: &str) -> String {
    let mut all: Vec<String> = sdp
        .lines()
        .filter_map(|line| line.trim().strip_prefix("a=fingerprint:"))
        .filter_map(|rest| {
            let (algorithm, value) = rest.trim().split_once(' ')?;
            Some(format!(
                "{} {}",
                algorithm.to_ascii_lowercase(),
                value.trim().to_ascii_uppercase()
            ))
        })
        .collect();
    all.sort();
    all.dedup();
    all.join(",")
}

/// Finds the id the remote gave the audio level extension in its SDP.
fn audio_level_id(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("a=extmap:")?;
        let (id, uri) = rest.split_once(' ')?;
        if uri.split_whitespace().next()? != AUDIO_LEVEL_URI {
            return None;
        }
        id.split('/').next()?.parse::<u8>().ok()
    })
}

impl MediaSession {
    /// Emits our description to the remote, then the candidates gathered
    /// while it was being made.
    fn emit_description(&self, peer: &Peer, signal: MediaSignal) {
        let remote = peer.shared.remote.clone();
        let Ok(mut local) = peer.shared.local_candidates.lock() else {
            return;
        };
        if let MediaSignal::Offer { sdp } | MediaSignal::Answer { sdp } = &signal {
            local.mid = transport_mid(sdp);
        }
        self.inner.emit(MediaEvent::Signal {
            to: remote.clone(),
            signal,
        });
        local.described = true;
        for c in std::mem::take(&mut local.held) {
            self.inner.emit(MediaEvent::Signal {
                to: remote.clone(),
                signal: local.with_mid(c),
            });
        }
    }

    /// Makes and sends our offer, if we are the side that offers and have
    /// not offered (or been offered to) yet.
    pub(super) async fn make_offer(&self, peer: &Peer) -> Result<(), MediaError> {
        if !peer.offerer {
            return Ok(());
        }
        let mut neg = peer.negotiation.lock().await;
        if neg.offered || neg.remote_set {
            return Ok(());
        }
        let offer = peer
            .pc
            .create_offer(None)
            .await
            .map_err(MediaError::webrtc)?;
        let sdp = offer.sdp.clone();
        peer.pc
            .set_local_description(offer)
            .await
            .map_err(MediaError::webrtc)?;
        neg.offered = true;
        neg.awaiting_answer = true;
        drop(neg);
        self.emit_description(peer, MediaSignal::Offer { sdp });
        Ok(())
    }

    /// Restarts ICE on the connection `shared` belongs to, if it is still
    /// ours and we offer: fresh ICE servers, a restart offer (new
    /// credentials; the driver rebinds its sockets and gathers again), on
    /// the same connection and tracks. Not before the first negotiation is
    /// done. A restart offer still unanswered is offered anew (JSEP's
    /// re-offer): the restore task calls this no sooner than a check window
    /// later, and the signaling path may have lost it while it was down (an
    /// address change breaks the WebSocket too). Should the old answer come
    /// after all, its credentials do not match and the next restart mends it.
    pub(super) async fn restart_ice(&self, shared: &PeerShared) -> Result<(), MediaError> {
        let Some(peer) = self.inner.peer(&shared.remote) else {
            return Ok(());
        };
        if !std::ptr::eq(Arc::as_ptr(&peer.shared), shared) || !peer.offerer {
            return Ok(());
        }
        let mut neg = peer.negotiation.lock().await;
        if !neg.remote_set {
            tracing::debug!(user = %shared.remote, "no ICE restart before the first answer");
            return Ok(());
        }
        if neg.awaiting_answer {
            tracing::debug!(user = %shared.remote, "last restart offer unanswered; offering again");
        }
        if let Err(e) = peer
            .pc
            .set_configuration(self.restart_configuration())
            .await
        {
            tracing::warn!(user = %shared.remote, error = %e, "ICE servers not updated for the restart");
        }
        if let Ok(mut local) = peer.shared.local_candidates.lock() {
            local.restart();
        }
        let offer = peer
            .pc
            .create_offer(Some(RTCOfferOptions { ice_restart: true }))
            .await
            .map_err(MediaError::webrtc)?;
        let sdp = offer.sdp.clone();
        peer.pc
            .set_local_description(offer)
            .await
            .map_err(MediaError::webrtc)?;
        neg.awaiting_answer = true;
        drop(neg);
        tracing::info!(user = %shared.remote, "ICE restart offered");
        self.emit_description(&peer, MediaSignal::Offer { sdp });
        Ok(())
    }

    /// Checks and parses a description from `from`, and reads the id it
    /// gives the audio level extension.
    fn parse_description(
        &self,
        from: &UserId,
        what: &'static str,
        sdp: String,
        parse: fn(String) -> rtc::shared::error::Result<RTCSessionDescription>,
    ) -> Result<(RTCSessionDescription, Option<u8>), MediaError> {
        let max = self.inner.config.max_sdp_len;
        if sdp.len() > max {
            return Err(MediaError::Oversized {
                what,
                len: sdp.len(),
                max,
            });
        }
        let level_id = audio_level_id(&sdp);
        let announced = fingerprints(&sdp);
        let desc = parse(sdp).map_err(|e| invalid_sdp(from, e))?;
        self.bind_fingerprint(from, announced)?;
        Ok((desc, level_id))
    }

    /// Binds the certificate of a member's first description to it, and
    /// refuses a later one announcing another.
    fn bind_fingerprint(&self, from: &UserId, announced: String) -> Result<(), MediaError> {
        let mut members = self.inner.members();
        let Some(bound) = members.get_mut(from) else {
            return Err(MediaError::UnknownPeer(from.clone()));
        };
        match bound {
            Some(b) if *b != announced => {
                tracing::warn!(user = %from, bound = %b, %announced, "DTLS fingerprint changed; description refused");
                Err(MediaError::FingerprintChanged {
                    from: from.clone(),
                    bound: b.clone(),
                    announced,
                })
            }
            Some(_) => Ok(()),
            // No fingerprint binds nothing: webrtc-rs refuses such an SDP.
            None if announced.is_empty() => Ok(()),
            None => {
                *bound = Some(announced);
                Ok(())
            }
        }
    }

    /// Applies the remote's description, then the candidates that waited
    /// for it.
    async fn set_remote(
        &self,
        from: &UserId,
        peer: &Peer,
        neg: &mut Negotiation,
        (desc, level_id): (RTCSessionDescription, Option<u8>),
    ) -> Result<(), MediaError> {
        peer.pc
            .set_remote_description(desc)
            .await
            .map_err(|e| invalid_sdp(from, e))?;
        neg.remote_set = true;
        peer.shared.gate.described();
        if let Some(id) = level_id {
            peer.shared.audio_level_id.store(id, Ordering::Relaxed);
        }
        self.flush_candidates(peer, neg).await;
        Ok(())
    }

    /// Both descriptions are set: learn the payload types to send with, and
    /// wake the video pump to prime the peer once it connects.
    async fn negotiated(&self, peer: &Peer) {
        let missing = peer
            .resolve_payload_types(self.inner.config.video_codec)
            .await;
        for kind in missing {
            self.inner.emit(MediaEvent::NoCommonCodec {
                user: peer.shared.remote.clone(),
                kind,
            });
        }
        self.inner.video_nudge.notify_one();
    }

    pub(super) async fn handle_offer(&self, from: &UserId, sdp: String) -> Result<(), MediaError> {
        if super::is_offerer(&self.inner.local_user, from) {
            // The offer direction is fixed per pair (the lower id offers),
            // so an offer to the offering side is never glare, only wrong.
            return Err(MediaError::UnexpectedSignal {
                from: from.clone(),
                what: "offer",
            });
        }
        let remote_session = session_id(&sdp);
        let desc = self.parse_description(from, "offer", sdp, RTCSessionDescription::offer)?;
        let mut peer = self.ensure_peer(from).await?;
        let in_place = {
            let neg = peer.negotiation.lock().await;
            neg.remote_set
                .then(|| neg.remote_session.is_some() && neg.remote_session == remote_session)
        };
        if in_place == Some(false) {
            // Another remote connection: the remote dropped its side and
            // starts over, so do we.
            tracing::debug!(user = %from, "offer of a new connection; replacing ours");
            self.drop_peer(from).await;
            peer = self.ensure_peer(from).await?;
        }
        let mut neg = peer.negotiation.lock().await;
        if in_place == Some(true) {
            // A renegotiation (an ICE restart) of this connection: gather
            // with fresh ICE servers, and hold the new candidates until
            // the answer is out.
            tracing::info!(user = %from, "renegotiation offer (ICE restart) applied in place");
            if let Err(e) = peer
                .pc
                .set_configuration(self.restart_configuration())
                .await
            {
                tracing::warn!(user = %from, error = %e, "ICE servers not updated for the restart");
            }
            if let Ok(mut local) = peer.shared.local_candidates.lock() {
                local.restart();
            }
        }
        self.set_remote(from, &peer, &mut neg, desc).await?;
        neg.remote_session = remote_session;
        let answer = peer
            .pc
            .create_answer(None)
            .await
            .map_err(MediaError::webrtc)?;
        let sdp = answer.sdp.clone();
        peer.pc
            .set_local_description(answer)
            .await
            .map_err(MediaError::webrtc)?;
        drop(neg);
        self.emit_description(&peer, MediaSignal::Answer { sdp });
        self.negotiated(&peer).await;
        Ok(())
    }

    pub(super) async fn handle_answer(&self, from: &UserId, sdp: String) -> Result<(), MediaError> {
        let desc = self.parse_description(from, "answer", sdp, RTCSessionDescription::answer)?;
        let peer = self
            .inner
            .peer(from)
            .ok_or_else(|| MediaError::UnknownPeer(from.clone()))?;
        let mut neg = peer.negotiation.lock().await;
        if !neg.awaiting_answer {
            return Err(MediaError::UnexpectedSignal {
                from: from.clone(),
                what: "answer",
            });
        }
        self.set_remote(from, &peer, &mut neg, desc).await?;
        neg.awaiting_answer = false;
        drop(neg);
        self.negotiated(&peer).await;
        Ok(())
    }

    async fn flush_candidates(&self, peer: &Peer, neg: &mut Negotiation) {
        for c in neg.pending.drain(..) {
            if let Err(e) = peer.pc.add_ice_candidate(c).await {
                tracing::debug!(user = %peer.shared.remote, error = %e, "queued candidate rejected");
            }
        }
    }

    pub(super) async fn handle_candidate(
        &self,
        from: &UserId,
        init: RTCIceCandidateInit,
    ) -> Result<(), MediaError> {
        let invalid = |reason: String| MediaError::InvalidCandidate {
            from: from.clone(),
            reason,
        };
        if init.candidate.len() > MAX_CANDIDATE_LEN {
            return Err(MediaError::Oversized {
                what: "candidate",
                len: init.candidate.len(),
                max: MAX_CANDIDATE_LEN,
            });
        }
        let peer = self
            .inner
            .peer(from)
            .ok_or_else(|| MediaError::UnknownPeer(from.clone()))?;
        // An empty candidate is the end-of-candidates marker.
        if !init.candidate.is_empty() {
            let text = init
                .candidate
                .strip_prefix("candidate:")
                .ok_or_else(|| invalid("does not start with \"candidate:\"".into()))?;
            rtc::ice::candidate::unmarshal_candidate(text).map_err(|e| invalid(e.to_string()))?;
        }
        let mut neg = peer.negotiation.lock().await;
        if !neg.remote_set {
            if neg.pending.len() >= MAX_PENDING_CANDIDATES {
                return Err(MediaError::Oversized {
                    what: "pending candidate list",
                    len: neg.pending.len() + 1,
                    max: MAX_PENDING_CANDIDATES,
                });
            }
            neg.pending.push(init);
            return Ok(());
        }
        peer.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_is_read_off_the_origin_line() {
        let sdp = "v=0\r\no=- 4215775240449105457 2 IN IP4 127.0.0.1\r\ns=-\r\n";
        assert_eq!(session_id(sdp).as_deref(), Some("4215775240449105457"));
        assert_eq!(session_id("v=0\r\n"), None);
    }

    #[test]
    fn finds_audio_level_extmap() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=extmap:7/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(audio_level_id(sdp), Some(7));
        assert_eq!(audio_level_id("v=0\r\n"), None);
    }

    #[test]
    fn candidates_belong_to_the_bundles_first_mid() {
        let bundled =
            "v=0\r\na=group:BUNDLE 0 1\r\nm=audio 9 x\r\na=mid:0\r\nm=video 9 x\r\na=mid:1\r\n";
        assert_eq!(transport_mid(bundled).as_deref(), Some("0"));
        let unbundled = "v=0\r\nm=audio 9 x\r\na=mid:audio\r\n";
        assert_eq!(transport_mid(unbundled).as_deref(), Some("audio"));
        assert_eq!(transport_mid("v=0\r\n"), None);
    }

    #[test]
    fn fingerprints_are_normalised_and_sorted() {
        let sdp = "v=0\r\na=fingerprint:SHA-256 ab:cd\r\nm=audio 9 x\r\na=fingerprint:sha-256 AB:CD\r\na=fingerprint:sha-1 01:02\r\n";
        assert_eq!(fingerprints(sdp), "sha-1 01:02,sha-256 AB:CD");
        assert_eq!(fingerprints("v=0\r\n"), "");
    }
}
