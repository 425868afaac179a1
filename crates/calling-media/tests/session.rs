//! Real WebRTC between sessions in one process, on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use calling_media::frame::h264_nal_types;
use calling_media::{
    AudioSource, CandidateKind, Codec, MediaError, MediaEvent, MediaKind, MediaSignal, PeerState,
    VideoQuality, VideoSource,
};
use common::*;

fn tone() -> AudioSource {
    AudioSource::Tone {
        frequency_hz: 440.0,
        amplitude: 0.5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_video_flow_both_ways_and_decode() {
    let mut m = mesh(&["alice", "bob"]).await;
    for name in ["alice", "bob"] {
        let s = m.session(name);
        s.set_audio_source(Some(tone())).unwrap();
        s.set_video_source(Some(VideoSource::TestPattern)).unwrap();
    }
    m.connect_all().await;

    for (me, other) in [("bob", "alice"), ("alice", "bob")] {
        let node = m.node(me);
        let mut got_audio = 0;
        let mut got_video = 0;
        let frames = node
            .frames_until(|f| {
                match f.frame.kind() {
                    MediaKind::Audio => got_audio += 1,
                    MediaKind::Video => got_video += 1,
                }
                got_audio >= 10 && got_video >= 3
            })
            .await;
        assert!(frames.iter().all(|f| f.user.as_str() == other));
        for a in of(&frames, other, MediaKind::Audio) {
            assert_eq!(a.codec, Codec::Opus);
            assert_opus_decodes(&a.data);
        }
        let video: Vec<_> = of(&frames, other, MediaKind::Video).collect();
        // The first video frame a peer gets is a key frame with its
        // parameter sets, so it decodes on its own.
        let first = video[0];
        assert_eq!(first.codec, Codec::H264);
        assert!(first.keyframe);
        let types = h264_nal_types(&first.data);
        assert!(
            types.contains(&7) && types.contains(&8) && types.contains(&5),
            "{types:?}"
        );
        assert_eq!(decode_h264(&first.data), (640, 480));
        for v in &video {
            assert!(
                h264_nal_types(&v.data)
                    .iter()
                    .all(|t| matches!(t, 1 | 5 | 6 | 7 | 8))
            );
        }
    }

    for (me, other) in [("bob", "alice"), ("alice", "bob")] {
        let node = m.node(me);
        // The connection reports each step once, each with the state it left.
        let mut changes = Vec::new();
        node.event(|e| {
            if let MediaEvent::PeerState {
                user,
                previous,
                state,
            } = e
            {
                assert_eq!(user.as_str(), other);
                changes.push((*previous, *state));
            }
            changes.last().is_some_and(|c| c.1 == PeerState::Connected)
        })
        .await;
        assert_eq!(
            changes,
            [
                (PeerState::New, PeerState::Connecting),
                (PeerState::Connecting, PeerState::Connected)
            ]
        );
        let mut kinds = Vec::new();
        node.event(|e| {
            if let MediaEvent::RemoteTrack { user, kind } = e {
                assert_eq!(user.as_str(), other);
                kinds.push(*kind);
            }
            kinds.contains(&MediaKind::Audio) && kinds.contains(&MediaKind::Video)
        })
        .await;
    }

    // Exactly one offer, from the lower id.
    assert_eq!(m.offers(), vec![("alice".to_string(), "bob".to_string())]);

    let stats = m.session("alice").stats().await;
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!(s.user.as_str(), "bob");
    assert_eq!(s.state, Some(PeerState::Connected));
    assert!(s.packets_sent > 0 && s.bytes_sent > 0, "{s:?}");
    assert!(s.packets_received > 0 && s.bytes_received > 0, "{s:?}");
    assert!(s.audio_frames_sent > 0 && s.video_frames_sent > 0, "{s:?}");
    assert!(
        s.audio_frames_received >= 10 && s.video_frames_received >= 3,
        "{s:?}"
    );
    // Media flows over a pair ICE selected: from our host candidate to
    // bob's, or to the address his checks came from when they came before
    // his candidate (peer-reflexive, the same address).
    let pair = s.selected_pair.expect("a selected pair once media flows");
    assert_eq!(pair.local, CandidateKind::Host, "{pair:?}");
    assert!(
        matches!(
            pair.remote,
            CandidateKind::Host | CandidateKind::PeerReflexive
        ),
        "{pair:?}"
    );
    assert!(
        pair.local_addr.is_some_and(|a| a.ip().is_loopback()),
        "{pair:?}"
    );
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answerer_connects_first_and_waits_for_the_offer() {
    let mut m = mesh(&["alice", "bob"]).await;
    m.session("alice").set_audio_source(Some(tone())).unwrap();
    // bob (the answerer) builds his side and offers nothing.
    m.session("bob").connect(&uid("alice")).await.unwrap();
    assert_eq!(m.session("bob").peers(), vec![uid("alice")]);
    assert!(m.offers().is_empty());
    m.session("alice").connect(&uid("bob")).await.unwrap();
    m.node("bob").collect("alice", MediaKind::Audio, 3).await;
    // Connecting again changes nothing and offers nothing.
    m.session("bob").connect(&uid("alice")).await.unwrap();
    m.node("bob").collect("alice", MediaKind::Audio, 3).await;
    assert_eq!(m.offers().len(), 1);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_party_mesh_offers_once_per_pair() {
    let mut m = mesh(&["carol", "alice", "bob"]).await;
    for n in ["alice", "bob", "carol"] {
        m.session(n).set_audio_source(Some(tone())).unwrap();
    }
    m.connect_all().await;
    for me in ["alice", "bob", "carol"] {
        let others: Vec<&str> = ["alice", "bob", "carol"]
            .into_iter()
            .filter(|o| *o != me)
            .collect();
        let mut seen = std::collections::HashMap::new();
        m.node(me)
            .frames_until(|f| {
                *seen.entry(f.user.to_string()).or_insert(0) += 1;
                others
                    .iter()
                    .all(|o| seen.get(*o).copied().unwrap_or(0) >= 3)
            })
            .await;
        assert_eq!(m.session(me).peers().len(), 2);
    }
    let mut offers = m.offers();
    offers.sort();
    assert_eq!(
        offers,
        vec![
            ("alice".into(), "bob".into()),
            ("alice".into(), "carol".into()),
            ("bob".into(), "carol".into()),
        ]
    );
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mic_mute_stops_audio_and_unmute_restores_it() {
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    alice.set_mic_mute(true);
    alice.set_audio_source(Some(tone())).unwrap();
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    m.connect_all().await;
    // 8 video frames span about half a second, in which the tone would have
    // produced about 25 audio frames.
    let frames = m.node("bob").collect("alice", MediaKind::Video, 8).await;
    assert_eq!(of(&frames, "alice", MediaKind::Audio).count(), 0);
    assert_eq!(alice.stats().await[0].audio_frames_sent, 0);

    alice.set_mic_mute(false);
    m.node("bob").collect("alice", MediaKind::Audio, 3).await;
    assert!(alice.stats().await[0].audio_frames_sent > 0);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_off_stops_video_and_on_resumes_with_a_key_frame() {
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    alice.set_camera(false);
    alice.set_audio_source(Some(tone())).unwrap();
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    m.connect_all().await;
    // 40 audio frames = 800 ms, in which 12 video frames would have gone out.
    let frames = m.node("bob").collect("alice", MediaKind::Audio, 40).await;
    assert_eq!(of(&frames, "alice", MediaKind::Video).count(), 0);
    assert_eq!(alice.stats().await[0].video_frames_sent, 0);

    alice.set_camera(true);
    let frames = m.node("bob").collect("alice", MediaKind::Video, 1).await;
    let first = of(&frames, "alice", MediaKind::Video).next().unwrap();
    assert!(first.keyframe, "video resumes with a key frame");
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_remote_audio_stops_reaching_the_sinks() {
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    alice.set_audio_source(Some(tone())).unwrap();
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    m.session("bob").set_remote_audio_muted(true);
    m.connect_all().await;
    let frames = m.node("bob").collect("alice", MediaKind::Video, 8).await;
    assert_eq!(of(&frames, "alice", MediaKind::Audio).count(), 0);
    // Audio still arrives at bob's session, it just is not delivered.
    let bob_stats = m.session("bob").stats().await;
    assert!(bob_stats[0].audio_frames_received > 0, "{bob_stats:?}");
    // Volume events keep coming while muted.
    m.node("bob")
        .event(|e| matches!(e, MediaEvent::VoiceVolume { user, .. } if user.as_str() == "alice"))
        .await;

    m.session("bob").set_remote_audio_muted(false);
    m.node("bob").collect("alice", MediaKind::Audio, 3).await;
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_volume_follows_the_audio() {
    let mut m = mesh(&["alice", "bob"]).await;
    m.session("alice").set_audio_source(Some(tone())).unwrap();
    m.session("bob")
        .set_audio_source(Some(AudioSource::Tone {
            frequency_hz: 440.0,
            amplitude: 0.0,
        }))
        .unwrap();
    m.connect_all().await;

    // bob hears alice's tone loud, alice hears bob's silence as zero.
    let loud = m
        .node("bob")
        .event(|e| matches!(e, MediaEvent::VoiceVolume { user, .. } if user.as_str() == "alice"))
        .await;
    let MediaEvent::VoiceVolume { volume, .. } = loud else {
        unreachable!()
    };
    assert!(volume >= 80, "a -9 dBov tone gave volume {volume}");
    let quiet = m
        .node("alice")
        .event(|e| matches!(e, MediaEvent::VoiceVolume { user, .. } if user.as_str() == "bob"))
        .await;
    let MediaEvent::VoiceVolume { volume, .. } = quiet else {
        unreachable!()
    };
    assert_eq!(volume, 0);
    // Each side also reports its own level.
    let own = m
        .node("alice")
        .event(|e| matches!(e, MediaEvent::VoiceVolume { user, .. } if user.as_str() == "alice"))
        .await;
    let MediaEvent::VoiceVolume { volume, .. } = own else {
        unreachable!()
    };
    assert!(volume >= 80);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_quality_sets_the_encoded_resolution() {
    let mut m = mesh_with(&["alice", "bob"], |mut c| {
        c.video_quality = VideoQuality::P720;
        c
    })
    .await;
    let alice = m.session("alice");
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    m.connect_all().await;
    let frames = m.node("bob").collect("alice", MediaKind::Video, 1).await;
    let first = of(&frames, "alice", MediaKind::Video).next().unwrap();
    assert_eq!(decode_h264(&first.data), (1280, 720));

    alice.set_video_quality(VideoQuality::P480);
    let frames = m
        .node("bob")
        .frames_until(|f| {
            f.frame.keyframe && h264_nal_types(&f.frame.data).contains(&7) && {
                decode_h264(&f.frame.data) == (640, 480)
            }
        })
        .await;
    assert!(!frames.is_empty());
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signals_get_typed_errors_and_the_session_survives() {
    let mut m = mesh(&["alice", "bob"]).await;
    let bob = m.session("bob");
    // alice is a member (bob, the answerer, just waits).
    bob.connect(&uid("alice")).await.unwrap();

    let err = bob
        .handle_signal(
            &uid("alice"),
            MediaSignal::Offer {
                sdp: "not sdp".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::InvalidSdp { .. }), "{err}");
    let err = bob
        .handle_signal(
            &uid("alice"),
            MediaSignal::Answer {
                sdp: "v=0\r\n".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::InvalidSdp { .. } | MediaError::UnknownPeer(_)
        ),
        "{err}"
    );
    let err = bob
        .handle_signal(
            &uid("alice"),
            MediaSignal::Offer {
                sdp: "v".repeat(70_000),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Oversized { .. }), "{err}");
    let cand = |c: &str| MediaSignal::Candidate {
        candidate: c.into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    let err = bob
        .handle_signal(
            &uid("zed"),
            cand("candidate:1 1 udp 1 127.0.0.1 9 typ host"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::UnknownPeer(_)), "{err}");
    let err = bob.handle_signal(&uid("bob"), cand("")).await.unwrap_err();
    assert!(matches!(err, MediaError::SelfConnect), "{err}");
    let err = bob.connect(&uid("bob")).await.unwrap_err();
    assert!(matches!(err, MediaError::SelfConnect), "{err}");

    for bad in [
        "garbage",
        "candidate:",
        "candidate:1 1 udp x 127.0.0.1 9 typ host",
    ] {
        let err = bob
            .handle_signal(&uid("alice"), cand(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(err, MediaError::InvalidCandidate { .. }),
            "{bad}: {err}"
        );
    }
    let err = bob
        .handle_signal(
            &uid("alice"),
            cand(&format!("candidate:{}", "1".repeat(4000))),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Oversized { .. }), "{err}");
    // An answer to an offer bob never made.
    let err = bob
        .handle_signal(
            &uid("alice"),
            MediaSignal::Answer {
                sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, MediaError::UnexpectedSignal { what: "answer", .. }),
        "{err}"
    );

    // Through all that, the call still comes up.
    m.session("alice").set_audio_source(Some(tone())).unwrap();
    m.session("alice").connect(&uid("bob")).await.unwrap();
    m.node("bob").collect("alice", MediaKind::Audio, 3).await;
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_close_release_peers() {
    let mut m = mesh(&["alice", "bob", "carol"]).await;
    for n in ["alice", "bob", "carol"] {
        m.session(n).set_audio_source(Some(tone())).unwrap();
    }
    m.connect_all().await;
    m.node("alice").collect("bob", MediaKind::Audio, 2).await;
    m.node("alice").collect("carol", MediaKind::Audio, 2).await;

    let alice = m.session("alice");
    assert_eq!(alice.live_peer_connections(), 2);
    alice.disconnect(&uid("bob")).await;
    m.node("alice")
        .event(|e| {
            matches!(e, MediaEvent::PeerState { user, state: PeerState::Closed, .. } if user.as_str() == "bob")
        })
        .await;
    assert_eq!(alice.peers(), vec![uid("carol")]);
    assert_eq!(alice.stats().await.len(), 1);
    // carol is unaffected.
    m.node("alice").collect("carol", MediaKind::Audio, 3).await;
    // disconnecting an unknown user is a no-op
    alice.disconnect(&uid("nobody")).await;

    alice.close().await;
    m.node("alice")
        .event(|e| {
            matches!(e, MediaEvent::PeerState { user, state: PeerState::Closed, .. } if user.as_str() == "carol")
        })
        .await;
    assert!(alice.peers().is_empty());
    assert!(matches!(
        alice.connect(&uid("bob")).await,
        Err(MediaError::Closed)
    ));
    assert!(matches!(
        alice.set_audio_source(Some(tone())),
        Err(MediaError::Closed)
    ));
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offerer_can_reconnect_without_the_answerer_noticing() {
    let mut m = mesh(&["alice", "bob"]).await;
    m.session("alice").set_audio_source(Some(tone())).unwrap();
    m.connect_all().await;
    m.node("bob").collect("alice", MediaKind::Audio, 3).await;

    // alice drops and redials; bob still holds the old connection.
    m.session("alice").disconnect(&uid("bob")).await;
    m.session("alice").connect(&uid("bob")).await.unwrap();
    m.node("bob")
        .event(|e| {
            matches!(e, MediaEvent::PeerState { user, state: PeerState::Closed, .. } if user.as_str() == "alice")
        })
        .await;
    m.node("bob")
        .event(|e| {
            // A new connection, not the old one restored.
            matches!(e, MediaEvent::PeerState { user, previous: PeerState::Connecting, state: PeerState::Connected } if user.as_str() == "alice")
        })
        .await;
    // Counted on bob's new connection, so frames still queued from the old
    // one cannot satisfy it.
    let bob = m.session("bob");
    tokio::time::timeout(WAIT, async {
        loop {
            let s = bob.stats().await;
            if s.len() == 1 && s[0].audio_frames_received >= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("audio on the new connection");
    assert_eq!(m.offers().len(), 2);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_frame_requests_reach_the_sender() {
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    let bob = m.session("bob");
    assert!(matches!(
        bob.request_keyframe(&uid("alice")).await,
        Err(MediaError::UnknownPeer(_))
    ));
    m.connect_all().await;
    m.node("bob").collect("alice", MediaKind::Video, 2).await;
    // bob sends no video, so alice has nothing to ask a key frame of.
    assert!(matches!(
        alice.request_keyframe(&uid("bob")).await,
        Err(MediaError::NoRemoteVideo(_))
    ));
    bob.request_keyframe(&uid("alice")).await.unwrap();
    m.node("alice")
        .event(|e| matches!(e, MediaEvent::KeyframeRequested { user } if user.as_str() == "bob"))
        .await;
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_path_is_reported_and_so_is_its_return() {
    let (mut m, path) = mesh_relayed(&["alice", "bob"]).await;
    for n in ["alice", "bob"] {
        m.session(n).set_audio_source(Some(tone())).unwrap();
    }
    m.connect_all().await;
    m.node("bob").collect("alice", MediaKind::Audio, 3).await;

    // ICE gives a silent path 2 s before it calls it disconnected; media
    // is interrupted on both sides.
    path.cut(true);
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me)
            .event(|e| {
                matches!(e, MediaEvent::PeerMedia {
                    user,
                    state: calling_media::PeerMedia::Interrupted,
                } if user.as_str() == other)
            })
            .await;
    }
    path.cut(false);
    // Restored: by itself or through alice's ICE restart, whose new
    // candidates go through the relays too.
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        m.node(me)
            .event(|e| {
                matches!(e, MediaEvent::PeerMedia {
                    user,
                    state: calling_media::PeerMedia::Restored,
                } if user.as_str() == other)
            })
            .await;
    }
    // The same connection carries media again; only alice ever offered.
    let bob = m.node("bob");
    while bob.frames.try_recv().is_ok() {}
    bob.collect("alice", MediaKind::Audio, 3).await;
    assert!(m.offers().iter().all(|(from, _)| from == "alice"));
    m.close().await;
}
