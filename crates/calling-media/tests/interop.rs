//! Sessions described the way other WebRTC stacks describe them: the
//! router rewrites the SDP on its way (other header extension ids, other
//! codecs), and the Rust session on the other end must follow what was
//! negotiated.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use calling_media::{AudioSource, MediaEvent, MediaKind, MediaSignal, VideoSource};
use common::*;

const LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

fn tone() -> AudioSource {
    AudioSource::Tone {
        frequency_hz: 440.0,
        amplitude: 0.5,
    }
}

/// The offer with the audio level extension moved to id `to` (and whatever
/// had `to` moved to the level's old id), as aiortc numbers them (mid 1,
/// audio level 2).
fn move_level_id(sdp: &str, to: u8) -> String {
    let old = sdp
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("a=extmap:")?;
            let (id, uri) = rest.split_once(' ')?;
            uri.trim().eq(LEVEL_URI).then(|| id.to_owned())
        })
        .expect("the offer maps the audio level extension");
    let to = to.to_string();
    sdp.split_inclusive('\n')
        .map(|line| {
            let Some(rest) = line.strip_prefix("a=extmap:") else {
                return line.to_owned();
            };
            let Some((id, tail)) = rest.split_once(' ') else {
                return line.to_owned();
            };
            let id = if id == old {
                &to
            } else if id == to {
                &old
            } else {
                id
            };
            format!("a=extmap:{id} {tail}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answerer_sends_audio_under_the_offers_extension_ids() {
    // alice offers (her id is lower); bob must answer with her ids and
    // write the audio level under the one she chose.
    let rewrite: Rewrite = Arc::new(|_from, signal| match signal {
        MediaSignal::Offer { sdp } => MediaSignal::Offer {
            sdp: move_level_id(&sdp, 2),
        },
        other => other,
    });
    let mut m = mesh_rewriting(&["alice", "bob"], rewrite).await;
    for name in ["alice", "bob"] {
        m.session(name).set_audio_source(Some(tone())).unwrap();
    }
    m.connect_all().await;
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let frames = m.node(me).collect(other, MediaKind::Audio, 10).await;
        let levels: Vec<_> = of(&frames, other, MediaKind::Audio)
            .map(|f| f.audio_level)
            .collect();
        assert!(
            levels.iter().all(|l| l.is_some_and(|l| l < 127)),
            "{me} read {other}'s tone without its level: {levels:?}"
        );
        let volume = m
            .node(me)
            .event(|e| matches!(e, MediaEvent::VoiceVolume { user, .. } if user.as_str() == other))
            .await;
        let MediaEvent::VoiceVolume { volume, .. } = volume else {
            unreachable!()
        };
        assert!(volume >= 50, "{me} heard {other} at volume {volume}");
    }
    let answer = m
        .log
        .lock()
        .unwrap()
        .iter()
        .find_map(|(_, _, s)| match s {
            MediaSignal::Answer { sdp } => Some(sdp.clone()),
            _ => None,
        })
        .expect("bob answered");
    assert!(
        answer.contains(&format!("a=extmap:2 {LEVEL_URI}")),
        "the answer keeps the offer's id:\n{answer}"
    );
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_still_flows_when_the_offer_renumbers_extensions() {
    let rewrite: Rewrite = Arc::new(|_from, signal| match signal {
        MediaSignal::Offer { sdp } => MediaSignal::Offer {
            sdp: move_level_id(&sdp, 5),
        },
        other => other,
    });
    let mut m = mesh_rewriting(&["alice", "bob"], rewrite).await;
    for name in ["alice", "bob"] {
        let s = m.session(name);
        s.set_audio_source(Some(tone())).unwrap();
        s.set_video_source(Some(VideoSource::TestPattern)).unwrap();
    }
    m.connect_all().await;
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me).collect(other, MediaKind::Video, 3).await;
        m.node(me).collect(other, MediaKind::Audio, 3).await;
    }
    m.close().await;
}

/// `sdp` without its H.264 payload types: a VP8-only stack's description.
fn vp8_only(sdp: &str) -> String {
    let h264: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter(|rest| rest.to_ascii_uppercase().contains(" H264/"))
        .filter_map(|rest| rest.split(' ').next().map(str::to_owned))
        .collect();
    assert!(!h264.is_empty(), "the offer has H.264");
    // Ours offers VP8 too, after H.264, so that a VP8-only peer can send.
    let video = sdp.lines().find(|l| l.starts_with("m=video ")).unwrap();
    assert_eq!(video.trim_end(), "m=video 9 UDP/TLS/RTP/SAVPF 102 96");
    sdp.split_inclusive('\n')
        .filter(|line| {
            !h264.iter().any(|pt| {
                ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                    .iter()
                    .any(|p| line.starts_with(&format!("{p}{pt} ")))
            })
        })
        .map(|line| {
            if !line.starts_with("m=video ") {
                return line.to_owned();
            }
            let end = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
            let kept: Vec<&str> = line
                .trim_end()
                .split(' ')
                .enumerate()
                .filter(|(i, f)| *i < 3 || !h264.iter().any(|pt| pt == f))
                .map(|(_, f)| f)
                .collect();
            format!("{}{end}", kept.join(" "))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_only_description_is_reported_on_both_sides_and_audio_still_flows() {
    let rewrite: Rewrite = Arc::new(|_from, signal| match signal {
        MediaSignal::Offer { sdp } => MediaSignal::Offer {
            sdp: vp8_only(&sdp),
        },
        other => other,
    });
    let mut m = mesh_rewriting(&["alice", "bob"], rewrite).await;
    for name in ["alice", "bob"] {
        let s = m.session(name);
        s.set_audio_source(Some(tone())).unwrap();
        s.set_video_source(Some(VideoSource::TestPattern)).unwrap();
    }
    m.connect_all().await;
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let event = m
            .node(me)
            .event(|e| matches!(e, MediaEvent::NoCommonCodec { .. }))
            .await;
        let MediaEvent::NoCommonCodec { user, kind } = event else {
            unreachable!()
        };
        assert_eq!((user.as_str(), kind), (other, MediaKind::Video));
        let frames = m.node(me).collect(other, MediaKind::Audio, 10).await;
        assert_eq!(
            of(&frames, other, MediaKind::Video).count(),
            0,
            "{me} got H.264 that was not negotiated"
        );
    }
    m.close().await;
}
