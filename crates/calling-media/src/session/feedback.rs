//! Watches the RTCP a peer sends about our streams (reception reports,
//! REMB, NACK) for congestion control, from inside webrtc-rs's interceptor
//! chain, and keeps NACKs from turning into a retransmission storm.
//!
//! Why an interceptor and not the track's RTCP events: webrtc-rs ends
//! inbound RTCP at the end of its chain unless an interceptor marks it for
//! the application, and it routes a compound packet to one track by its
//! first packet's first SSRC, so a report block about our video can reach
//! the audio track. This one sits nearest the wire, sees every inbound
//! RTCP packet before any other interceptor acts on it, copies what
//! concerns congestion control into a channel and passes everything else
//! on unchanged.
//!
//! NACKs it thins out first ([`ResendLimit`]). webrtc-rs's NACK generator
//! asks again for a missing packet every 100 ms, without limit, and its
//! responder resends every time: behind a full bottleneck queue (hundreds
//! of milliseconds) each lost packet went out four or five times, the
//! resends were lost in turn, and a 300 kbit/s uplink carried 1 Mbit/s of
//! retransmissions and no video. Like libwebrtc's sender, we resend a
//! packet at most once per round trip, and a few times in all.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use tokio::sync::mpsc;

use super::adapt::{Feedback, rtt_from_report};

/// Where the watcher sits: before every built-in slot on the way in.
pub(super) const SLOT: usize = 500;

/// Reports kept for the reader. RTCP comes a few times a second; a full
/// queue drops the newest, and the next report says the same again.
pub(super) const QUEUE: usize = 256;

/// Most times one packet is resent.
const MAX_RESENDS: u8 = 3;
/// Least time between two resends of one packet, beyond the round trip.
const RESEND_MARGIN: Duration = Duration::from_millis(20);
/// The round trip assumed before a report measured one.
const RTT_UNKNOWN: Duration = Duration::from_millis(100);
/// How long a resent packet is remembered.
const RESEND_MEMORY: Duration = Duration::from_secs(3);

/// Which NACKed packets to resend: each at most once per round trip (a
/// second request within it is for the copy still on its way) and
/// [`MAX_RESENDS`] times in all.
#[derive(Debug, Default)]
pub(super) struct ResendLimit {
    /// When each (SSRC, sequence number) was last resent, and how often.
    resent: HashMap<(u32, u16), (Instant, u8)>,
    last_prune: Option<Instant>,
}

impl ResendLimit {
    /// Whether to resend `seq` of `ssrc` at `now`, with `rtt` the last
    /// measured round trip; counts it if so.
    pub(super) fn allow(
        &mut self,
        now: Instant,
        ssrc: u32,
        seq: u16,
        rtt: Option<Duration>,
    ) -> bool {
        if self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= RESEND_MEMORY)
        {
            self.last_prune = Some(now);
            self.resent
                .retain(|_, (t, _)| now.saturating_duration_since(*t) < RESEND_MEMORY);
        }
        let spacing = rtt.unwrap_or(RTT_UNKNOWN) + RESEND_MARGIN;
        match self.resent.get_mut(&(ssrc, seq)) {
            Some((last, count)) => {
                if *count >= MAX_RESENDS || now.saturating_duration_since(*last) < spacing {
                    return false;
                }
                *last = now;
                *count += 1;
                true
            }
            None => {
                self.resent.insert((ssrc, seq), (now, 1));
                true
            }
        }
    }
}

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
    limit: ResendLimit,
    /// The last round trip a report showed.
    rtt: Option<Duration>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl FeedbackWatch {
    /// A watcher sending what it sees to `tx`.
    pub(super) fn new(tx: mpsc::Sender<(Instant, Feedback)>) -> Self {
        FeedbackWatch {
            tx,
            limit: ResendLimit::default(),
            rtt: None,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl FeedbackWatch {
    /// Keeps in each NACK only the packets [`ResendLimit`] allows; drops
    /// a NACK left empty.
    fn thin_nacks(&mut self, now: Instant, packets: &mut Vec<Box<dyn rtcp::Packet>>) {
        packets.retain_mut(|p| {
            let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() else {
                return true;
            };
            let ssrc = nack.media_ssrc;
            let asked: Vec<u16> = nack.nacks.iter().flat_map(|n| n.packet_list()).collect();
            let allowed: Vec<u16> = asked
                .iter()
                .copied()
                .filter(|&seq| self.limit.allow(now, ssrc, seq, self.rtt))
                .collect();
            if allowed.len() == asked.len() {
                return true;
            }
            if allowed.is_empty() {
                return false;
            }
            *p = Box::new(TransportLayerNack {
                sender_ssrc: nack.sender_ssrc,
                media_ssrc: ssrc,
                nacks: nack_pairs_from_sequence_numbers(&allowed),
            });
            true
        });
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackWatch {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            let ntp = ntp_now();
            let mut found = Vec::new();
            for p in packets.iter() {
                feedback_of(p.as_ref(), ntp, &mut found);
            }
            for f in found {
                if let Feedback::Report { rtt: Some(rtt), .. } = f {
                    self.rtt = Some(rtt);
                }
                if self.tx.try_send((msg.now, f)).is_err() {
                    tracing::trace!("congestion feedback queue full or closed");
                    break;
                }
            }
            let had = packets.len();
            self.thin_nacks(msg.now, packets);
            if had > 0 && packets.is_empty() {
                // Nothing left to resend, and nothing else in it.
                return Ok(());
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
    fn a_packet_is_resent_once_per_round_trip_and_a_few_times_in_all() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let rtt = Some(ms(300));
        let mut l = ResendLimit::default();
        assert!(l.allow(t0, 1, 7, rtt));
        assert!(!l.allow(t0 + ms(100), 1, 7, rtt), "its copy is on its way");
        assert!(l.allow(t0 + ms(100), 1, 8, rtt), "another packet");
        assert!(l.allow(t0 + ms(100), 2, 7, rtt), "another stream");
        assert!(l.allow(t0 + ms(330), 1, 7, rtt), "a round trip later");
        assert!(l.allow(t0 + ms(700), 1, 7, rtt));
        assert!(!l.allow(t0 + ms(1100), 1, 7, rtt), "three times in all");
        // A short path: every request of the 100 ms NACK cycle is served.
        let mut l = ResendLimit::default();
        assert!(l.allow(t0, 1, 7, Some(ms(1))));
        assert!(l.allow(t0 + ms(100), 1, 7, Some(ms(1))));
        // Forgotten after a while: the sequence numbers wrap.
        let mut l = ResendLimit::default();
        for k in 0..3 {
            assert!(l.allow(t0 + ms(500 * k), 1, 7, rtt));
        }
        assert!(l.allow(t0 + ms(5000), 1, 9, rtt));
        assert!(l.allow(t0 + ms(5000), 1, 7, rtt));
    }

    #[test]
    fn thinned_nacks_keep_only_what_may_be_resent() {
        let (tx, _rx) = mpsc::channel(8);
        let mut w = FeedbackWatch::new(tx);
        let t0 = Instant::now();
        let nack = |seqs: &[u16]| -> Box<dyn rtcp::Packet> {
            Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: 42,
                nacks: nack_pairs_from_sequence_numbers(seqs),
            })
        };
        let mut packets = vec![nack(&[10, 11])];
        w.thin_nacks(t0, &mut packets);
        assert_eq!(packets.len(), 1);
        let mut packets = vec![nack(&[10, 11, 12])];
        w.thin_nacks(t0 + Duration::from_millis(10), &mut packets);
        let left = packets[0]
            .as_any()
            .downcast_ref::<TransportLayerNack>()
            .unwrap();
        assert_eq!(left.nacks[0].packet_list(), vec![12]);
        let mut packets = vec![nack(&[10])];
        w.thin_nacks(t0 + Duration::from_millis(20), &mut packets);
        assert!(packets.is_empty());
    }

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
