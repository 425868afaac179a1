//! Frame-level helpers: reassembling RTP packets into frames, H.264 NAL
//! inspection, and audio levels.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::codec::opus::OpusPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;

use crate::types::Codec;

/// Splits an Annex B byte stream into NAL units (without start codes).
pub fn annexb_nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &(_, body)) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&(sc, _)| sc);
        // A four-byte start code leaves its leading zero on the previous unit.
        while end > body && data[end - 1] == 0 && n + 1 < starts.len() {
            end -= 1;
        }
        if end > body {
            out.push(&data[body..end]);
        }
    }
    out
}

/// The `nal_unit_type` (low 5 bits of the first byte) of each NAL unit in an
/// Annex B access unit.
pub fn h264_nal_types(data: &[u8]) -> Vec<u8> {
    annexb_nal_units(data)
        .iter()
        .filter_map(|n| n.first().map(|b| b & 0x1f))
        .collect()
}

/// Whether an Annex B access unit holds an IDR slice (type 5).
pub fn h264_is_keyframe(data: &[u8]) -> bool {
    h264_nal_types(data).contains(&5)
}

/// RFC 6464 level (0 = 0 dBov, 127 = -127 dBov) of 16-bit PCM, from its RMS.
pub fn audio_level_i16(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / pcm.len() as f64).sqrt() / 32768.0;
    if rms <= 0.0 {
        return 127;
    }
    let dbov = 20.0 * rms.log10();
    (-dbov).round().clamp(0.0, 127.0) as u8
}

/// Maps an RFC 6464 level to a 0..=100 volume, linear in decibels between
/// -90 dBov (0) and 0 dBov (100).
pub fn level_to_volume(level: u8) -> u8 {
    let level = u32::from(level.min(127));
    if level >= 90 {
        0
    } else {
        (100 - level * 100 / 90) as u8
    }
}

/// Turns the RFC 6464 levels of a stream of frames into one volume per
/// window: the loudest level seen in it.
pub(crate) struct VolumeMeter {
    interval: Duration,
    window_start: Instant,
    loudest: Option<u8>,
}

impl VolumeMeter {
    /// A meter whose windows last `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        VolumeMeter {
            interval,
            window_start: Instant::now(),
            loudest: None,
        }
    }

    /// Notes one frame's level, if it has one. When the window is over,
    /// starts the next and returns the volume of the one that ended, if any
    /// level was seen in it.
    pub(crate) fn observe(&mut self, level: Option<u8>) -> Option<u8> {
        if let Some(l) = level {
            // Lower levels are louder.
            self.loudest = Some(self.loudest.map_or(l, |m| m.min(l)));
        }
        if self.window_start.elapsed() < self.interval {
            return None;
        }
        self.window_start = Instant::now();
        self.loudest.take().map(level_to_volume)
    }
}

/// What a [`FrameAssembler`] lost since it was last asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Loss {
    /// Packets missing from the sequence (gaps in sequence numbers).
    pub(crate) packets: u32,
    /// Frames thrown away because a packet of theirs was missing or could
    /// not be depacketized.
    pub(crate) frames: u32,
}

impl Loss {
    /// Whether anything was lost: the frames after it may depend on what
    /// is gone.
    pub(crate) fn any(self) -> bool {
        self.packets > 0 || self.frames > 0
    }
}

/// Reassembles the RTP packets of one stream into frames. Keeps only the
/// frame under construction, so it costs a few kilobytes per track (the
/// webrtc-rs sample builder preallocates 65,536 slots). A gap in sequence
/// numbers drops the frame it falls into; whole frames can be lost in a gap
/// too, so the loss is counted for the caller to take with
/// [`FrameAssembler::take_loss`]. A packet older than the last one (late,
/// or a retransmission after its frame was given up) is ignored.
pub(crate) struct FrameAssembler {
    codec: Codec,
    depacketizer: Box<dyn Depacketizer + Send>,
    buf: BytesMut,
    timestamp: Option<u32>,
    last_seq: Option<u16>,
    broken: bool,
    last_frame_ts: Option<u32>,
    loss: Loss,
}

impl FrameAssembler {
    pub(crate) fn new(codec: Codec) -> Self {
        FrameAssembler {
            codec,
            depacketizer: Self::depacketizer(codec),
            buf: BytesMut::new(),
            timestamp: None,
            last_seq: None,
            broken: false,
            last_frame_ts: None,
            loss: Loss::default(),
        }
    }

    /// The loss counted since the last call, and starts counting anew.
    pub(crate) fn take_loss(&mut self) -> Loss {
        std::mem::take(&mut self.loss)
    }

    fn depacketizer(codec: Codec) -> Box<dyn Depacketizer + Send> {
        match codec {
            Codec::Opus => Box::new(OpusPacket),
            Codec::H264 => Box::new(H264Packet::default()),
            Codec::Vp8 => Box::new(Vp8Packet::default()),
        }
    }

    /// Feeds one packet; returns a complete frame and its RTP timestamp, and
    /// the timestamp gap to the previous frame.
    pub(crate) fn push(&mut self, pkt: &rtp::Packet) -> Option<(Bytes, u32, Option<u32>)> {
        let seq = pkt.header.sequence_number;
        if let Some(last) = self.last_seq {
            let ahead = seq.wrapping_sub(last);
            if ahead == 0 || ahead >= 0x8000 {
                // A duplicate, or older than what we have moved past.
                return None;
            }
            if ahead != 1 {
                self.broken = true;
                self.loss.packets = self.loss.packets.saturating_add(u32::from(ahead - 1));
            }
        }
        self.last_seq = Some(seq);
        if pkt.payload.is_empty() {
            return None;
        }
        if self.timestamp != Some(pkt.header.timestamp) {
            if self.timestamp.is_some() {
                // The frame under construction never got its last packet.
                self.loss.frames = self.loss.frames.saturating_add(1);
            }
            self.buf.clear();
            // A fresh depacketizer forgets fragments of a frame that never ended.
            self.depacketizer = Self::depacketizer(self.codec);
            self.timestamp = Some(pkt.header.timestamp);
            self.broken = !self.depacketizer.is_partition_head(&pkt.payload);
        }
        match self.depacketizer.depacketize(&pkt.payload) {
            Ok(b) => self.buf.extend_from_slice(&b),
            Err(_) => self.broken = true,
        }
        if !self
            .depacketizer
            .is_partition_tail(pkt.header.marker, &pkt.payload)
        {
            return None;
        }
        let ts = pkt.header.timestamp;
        self.timestamp = None;
        if self.broken || self.buf.is_empty() {
            if self.broken {
                self.loss.frames = self.loss.frames.saturating_add(1);
            }
            self.buf.clear();
            self.broken = false;
            return None;
        }
        let gap = self.last_frame_ts.map(|prev| ts.wrapping_sub(prev));
        self.last_frame_ts = Some(ts);
        Some((self.buf.split().freeze(), ts, gap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_annexb_with_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals = annexb_nal_units(&data);
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
        assert_eq!(h264_nal_types(&data), vec![7, 8, 5]);
        assert!(h264_is_keyframe(&data));
        assert!(!h264_is_keyframe(&[0, 0, 0, 1, 0x41, 9]));
    }

    #[test]
    fn audio_levels_follow_rms() {
        assert_eq!(audio_level_i16(&[0; 960]), 127);
        let full: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { 32767 } else { -32767 })
            .collect();
        assert_eq!(audio_level_i16(&full), 0);
        let tenth: Vec<i16> = full.iter().map(|s| s / 10).collect();
        assert_eq!(audio_level_i16(&tenth), 20);
        assert_eq!(level_to_volume(0), 100);
        assert_eq!(level_to_volume(127), 0);
        assert!(level_to_volume(20) > level_to_volume(40));
    }

    #[test]
    fn volume_meter_reports_the_loudest_level_once_per_window() {
        let mut every = VolumeMeter::new(Duration::ZERO);
        assert_eq!(every.observe(Some(20)), Some(level_to_volume(20)));
        assert_eq!(every.observe(None), None, "nothing heard, nothing said");
        let mut never = VolumeMeter::new(Duration::from_secs(3600));
        for l in [60, 10, 40] {
            assert_eq!(never.observe(Some(l)), None);
        }
        never.interval = Duration::ZERO;
        assert_eq!(never.observe(None), Some(level_to_volume(10)));
    }

    fn packet(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        p.header.marker = marker;
        p.payload = Bytes::copy_from_slice(payload);
        p
    }

    #[test]
    fn assembles_fu_a_and_drops_frames_with_gaps() {
        let mut a = FrameAssembler::new(Codec::H264);
        // FU-A of an IDR slice: indicator type 28 (nri 3), header S/E bits.
        assert!(
            a.push(&packet(1, 100, false, &[0x7c, 0x85, 1, 2]))
                .is_none()
        );
        let (frame, ts, gap) = a.push(&packet(2, 100, true, &[0x7c, 0x45, 3])).unwrap();
        assert_eq!(ts, 100);
        assert_eq!(gap, None);
        assert_eq!(h264_nal_types(&frame), vec![5]);
        // Second frame loses its middle packet: dropped.
        assert!(a.push(&packet(3, 200, false, &[0x7c, 0x85, 1])).is_none());
        assert!(a.push(&packet(5, 200, true, &[0x7c, 0x45, 3])).is_none());
        assert_eq!(
            a.take_loss(),
            Loss {
                packets: 1,
                frames: 1
            }
        );
        assert_eq!(a.take_loss(), Loss::default(), "taken once");
        // Third frame arrives whole and reports the gap since the last one.
        let (_, _, gap) = a.push(&packet(6, 300, true, &[0x65, 7, 8])).unwrap();
        assert_eq!(gap, Some(200));
        assert!(!a.take_loss().any());
    }

    #[test]
    fn reports_whole_frames_lost_between_frames() {
        let mut a = FrameAssembler::new(Codec::H264);
        assert!(a.push(&packet(10, 100, true, &[0x65, 1, 1])).is_some());
        // Packets 11 and 12 (a whole frame) never come; the next frame is
        // complete in itself, but what it refers to is gone.
        let (_, ts, _) = a.push(&packet(13, 300, true, &[0x41, 2, 2])).unwrap();
        assert_eq!(ts, 300);
        let loss = a.take_loss();
        assert_eq!(loss.packets, 2);
        assert!(loss.any());
    }

    #[test]
    fn counts_a_frame_whose_last_packet_never_came() {
        let mut a = FrameAssembler::new(Codec::H264);
        assert!(a.push(&packet(1, 100, false, &[0x7c, 0x85, 1])).is_none());
        // The end of frame 100 is lost, and with it the marker; frame 200
        // starts right after in sequence (the loss was at the tail).
        assert!(a.push(&packet(2, 200, true, &[0x65, 3, 3])).is_some());
        assert_eq!(
            a.take_loss(),
            Loss {
                packets: 0,
                frames: 1
            }
        );
    }

    #[test]
    fn ignores_late_and_duplicate_packets_and_survives_wrap() {
        let mut a = FrameAssembler::new(Codec::Opus);
        assert!(a.push(&packet(65_534, 0, true, &[0xf8, 1])).is_some());
        assert!(a.push(&packet(65_535, 960, true, &[0xf8, 2])).is_some());
        assert!(a.push(&packet(0, 1920, true, &[0xf8, 3])).is_some());
        assert_eq!(a.take_loss(), Loss::default(), "wrap is no gap");
        assert!(a.push(&packet(0, 1920, true, &[0xf8, 3])).is_none(), "dup");
        assert!(a.push(&packet(65_535, 960, true, &[0xf8, 2])).is_none());
        assert_eq!(a.take_loss(), Loss::default());
        // An Opus frame after a gap is still whole: delivered, and the
        // missing packets counted for concealment.
        assert!(a.push(&packet(3, 4800, true, &[0xf8, 4])).is_some());
        assert_eq!(a.take_loss().packets, 2);
    }
}
