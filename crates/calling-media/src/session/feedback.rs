//! Watches the RTCP a peer sends about our streams (reception reports,
//! REMB, NACK) for congestion control, from inside webrtc-rs's interceptor
//! chain.
//!
//! Why an interceptor and not the track's RTCP events: webrtc-rs ends
//! inbound RTCP at the end of its chain unless an interceptor marks it for
//! the application, and it routes a compound packet to one track by its
//! first packet's first SSRC, so a report block about our video can reach
//! the audio track. This one sits nearest the wire, sees every inbound
//! RTCP packet before any other interceptor acts on it, copies what
//! concerns congestion control into a channel and passes everything on
//! unchanged.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use tokio::sync::mpsc;

use super::adapt::{Feedback, rtt_from_report};

/// Where the watcher sits: before every built-in slot on the way in.
pub(super) const SLOT: usize = 500;

/// Reports kept for the reader. RTCP comes a few times a second; a full
/// queue drops the newest, and the next report says the same again.
pub(super) const QUEUE: usize = 256;

/// The current time in the 64-bit NTP format of sender reports.
fn ntp_now() -> u64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = unix.as_secs() + 2_208_988_800;
    let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn report(block: &ReceptionReport, arrival_ntp: u64) -> Feedback {
    Feedback::Report {
        ssrc: block.ssrc,
        fraction_lost: block.fraction_lost,
        total_lost: block.total_lost,
        rtt: rtt_from_report(arrival_ntp, block.last_sender_report, block.delay),
    }
}

/// What in `packet` is congestion feedback.
fn feedback_of(packet: &dyn rtcp::Packet, arrival_ntp: u64, out: &mut Vec<Feedback>) {
    let any = packet.as_any();
    if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
        out.extend(rr.reports.iter().map(|b| report(b, arrival_ntp)));
    } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
        out.extend(sr.reports.iter().map(|b| report(b, arrival_ntp)));
    } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
        out.push(Feedback::Remb {
            bitrate_bps: remb.bitrate.max(0.0) as u64,
            ssrcs: remb.ssrcs.clone(),
        });
    } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
        out.push(Feedback::Nack {
            ssrc: nack.media_ssrc,
            seqs: nack.nacks.iter().flat_map(|p| p.packet_list()).collect(),
        });
    } else if any.is::<TransportLayerCc>() {
        out.push(Feedback::Twcc);
    }
}

/// The interceptor: one per peer connection.
pub(super) struct FeedbackWatch {
    tx: mpsc::Sender<(Instant, Feedback)>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl FeedbackWatch {
    /// A watcher sending what it sees to `tx`.
    pub(super) fn new(tx: mpsc::Sender<(Instant, Feedback)>) -> Self {
        FeedbackWatch {
            tx,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackWatch {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let ntp = ntp_now();
            let mut found = Vec::new();
            for p in packets {
                feedback_of(p.as_ref(), ntp, &mut found);
            }
            for f in found {
                if self.tx.try_send((msg.now, f)).is_err() {
                    tracing::trace!("congestion feedback queue full or closed");
                    break;
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for FeedbackWatch {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    #[test]
    fn reports_remb_and_nacks_are_picked_out() {
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![ReceptionReport {
                ssrc: 42,
                fraction_lost: 26,
                total_lost: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: 300_000.0,
            ssrcs: vec![42],
        };
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 42,
            nacks: vec![NackPair {
                packet_id: 10,
                lost_packets: 0b101,
            }],
        };
        let mut out = Vec::new();
        for p in [
            &rr as &dyn rtcp::Packet,
            &remb as &dyn rtcp::Packet,
            &nack as &dyn rtcp::Packet,
        ] {
            feedback_of(p, ntp_now(), &mut out);
        }
        assert_eq!(
            out,
            vec![
                Feedback::Report {
                    ssrc: 42,
                    fraction_lost: 26,
                    total_lost: 7,
                    rtt: None
                },
                Feedback::Remb {
                    bitrate_bps: 300_000,
                    ssrcs: vec![42]
                },
                Feedback::Nack {
                    ssrc: 42,
                    seqs: vec![10, 11, 13]
                },
            ]
        );
    }
}
