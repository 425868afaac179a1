//! Codec parameters: what we register on each peer connection's media
//! engine, which payload types they get, and how MIME types map to our
//! [`Codec`].

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability,
    RTCRtpHeaderExtensionParameters, RtpCodecKind,
};
use webrtc::peer_connection::MediaEngine;

use crate::error::MediaError;
use crate::types::{Codec, VideoCodec};

/// The RFC 6464 client-to-mixer audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PT: u8 = 102;
const VP8_PT: u8 = 96;
const OPUS_PT: u8 = 111;

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    })
    .collect()
}

pub(super) fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: video_feedback(),
    }
}

fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: video_feedback(),
    }
}

/// The codec parameters of the video codec we send.
pub(super) fn video_codec(codec: VideoCodec) -> RTCRtpCodec {
    match codec {
        VideoCodec::H264 => h264_codec(),
        VideoCodec::Vp8 => vp8_codec(),
    }
}

/// The video codecs we offer and answer with, in order of preference: the
/// one we send first, then the other, which we only receive (a VP8-only
/// peer's video still reaches us).
pub(super) fn video_preferences(sent: VideoCodec) -> Vec<RTCRtpCodecParameters> {
    video_codecs(sent)
        .into_iter()
        .map(|(rtp_codec, payload_type)| RTCRtpCodecParameters {
            rtp_codec,
            payload_type,
        })
        .collect()
}

fn video_codecs(sent: VideoCodec) -> [(RTCRtpCodec, u8); 2] {
    match sent {
        VideoCodec::H264 => [(h264_codec(), H264_PT), (vp8_codec(), VP8_PT)],
        VideoCodec::Vp8 => [(vp8_codec(), VP8_PT), (h264_codec(), H264_PT)],
    }
}

/// A media engine with Opus, both video codecs (the one we send first, so
/// it is preferred in our offers) and the audio level extension.
pub(super) fn media_engine(sent: VideoCodec) -> Result<MediaEngine, MediaError> {
    let mut engine = MediaEngine::default();
    let video = video_codecs(sent);
    let audio = [(opus_codec(), OPUS_PT)];
    for (codecs, kind) in [
        (&audio[..], RtpCodecKind::Audio),
        (&video[..], RtpCodecKind::Video),
    ] {
        for (codec, pt) in codecs {
            engine
                .register_codec(
                    RTCRtpCodecParameters {
                        rtp_codec: codec.clone(),
                        payload_type: *pt,
                    },
                    kind,
                )
                .map_err(MediaError::webrtc)?;
        }
    }
    engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )
        .map_err(MediaError::webrtc)?;
    Ok(engine)
}

/// Our codec for a negotiated MIME type, if we handle it.
pub(super) fn codec_of(mime: &str) -> Option<Codec> {
    [
        (MIME_TYPE_OPUS, Codec::Opus),
        (MIME_TYPE_H264, Codec::H264),
        (MIME_TYPE_VP8, Codec::Vp8),
    ]
    .into_iter()
    .find(|(m, _)| mime.eq_ignore_ascii_case(m))
    .map(|(_, c)| c)
}

/// The MIME type a frame codec travels as.
pub(super) fn mime_of(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => MIME_TYPE_OPUS,
        Codec::H264 => MIME_TYPE_H264,
        Codec::Vp8 => MIME_TYPE_VP8,
    }
}

/// The id a sender's negotiated header extensions give the audio level
/// extension, if negotiated with a one-byte id (1 to 14, RFC 8285), which is
/// the only form we write.
pub(super) fn audio_level_id(extensions: &[RTCRtpHeaderExtensionParameters]) -> Option<u8> {
    extensions
        .iter()
        .find(|e| e.uri == AUDIO_LEVEL_URI)
        .and_then(|e| u8::try_from(e.id).ok())
        .filter(|id| (1..=14).contains(id))
}

/// The payload type negotiated for `codec` among a sender's codecs. Only an
/// H.264 entry with packetization mode 1 will do: that is what we packetize.
pub(super) fn payload_type(codecs: &[RTCRtpCodecParameters], codec: Codec) -> Option<u8> {
    let mime = mime_of(codec);
    codecs
        .iter()
        .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .find(|c| {
            codec != Codec::H264 || c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1")
        })
        .map(|c| c.payload_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_map_both_ways() {
        for codec in [Codec::Opus, Codec::H264, Codec::Vp8] {
            assert_eq!(codec_of(mime_of(codec)), Some(codec));
            assert_eq!(codec_of(&mime_of(codec).to_uppercase()), Some(codec));
        }
        assert_eq!(codec_of("video/AV1"), None);
    }

    #[test]
    fn audio_level_id_is_the_negotiated_one_byte_id() {
        let ext = |uri: &str, id: u16| RTCRtpHeaderExtensionParameters {
            uri: uri.to_owned(),
            id,
            encrypted: false,
        };
        let mid = "urn:ietf:params:rtp-hdrext:sdes:mid";
        // aiortc's offer: mid 1, audio level 2.
        assert_eq!(
            audio_level_id(&[ext(mid, 1), ext(AUDIO_LEVEL_URI, 2)]),
            Some(2)
        );
        assert_eq!(audio_level_id(&[ext(AUDIO_LEVEL_URI, 14)]), Some(14));
        assert_eq!(audio_level_id(&[ext(AUDIO_LEVEL_URI, 15)]), None);
        assert_eq!(audio_level_id(&[ext(mid, 1)]), None);
    }

    #[test]
    fn h264_payload_type_needs_packetization_mode_1() {
        let entry = |codec: RTCRtpCodec, fmtp: &str, pt: u8| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                sdp_fmtp_line: fmtp.to_owned(),
                ..codec
            },
            payload_type: pt,
        };
        let codecs = [
            entry(vp8_codec(), "", 96),
            entry(
                h264_codec(),
                "packetization-mode=0;profile-level-id=42e01f",
                100,
            ),
            entry(h264_codec(), H264_FMTP, 102),
            entry(opus_codec(), "", 111),
        ];
        assert_eq!(payload_type(&codecs, Codec::H264), Some(102));
        assert_eq!(payload_type(&codecs, Codec::Vp8), Some(96));
        assert_eq!(payload_type(&codecs, Codec::Opus), Some(111));
        assert_eq!(payload_type(&codecs[..2], Codec::H264), None);
    }
}
