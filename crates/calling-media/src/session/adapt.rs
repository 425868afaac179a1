//! Congestion control for our video, on the sending side: what each peer's
//! RTCP says about our video stream turns into a bitrate for that peer
//! ([`Estimator`]), and the lowest over the peers into what the one encoder
//! aims at ([`Governor`], [`ladder`]).
//!
//! Pure logic: the caller hands in every report and the [`Instant`] it
//! came at, and nothing here reads a clock or does I/O.
//!
//! The rules follow Google Congestion Control's loss- and delay-based
//! parts in spirit (not its Kalman filter):
//!
//! - loss above 10 % cuts the rate to `rate × (1 − loss / 2)`; 2–10 %
//!   holds it; below 2 % it probes up by about 8 % a second, up to the
//!   profile's bitrate;
//! - a round-trip time well above its recent minimum means a queue is
//!   building at the bottleneck: the rate drops to 0.85 of what was
//!   actually sent, at most once a second (the queue needs time to drain);
//! - a receiver's REMB (Chrome sends one with `goog-remb`) caps the rate.
//!
//! Loss is the larger of two figures. The receiver report's fraction lost
//! counts what stayed lost; webrtc-rs counts a packet repaired by a
//! retransmission as received, so on a short path it hides most of the
//! loss. The NACKs show what the path dropped before repair: the share of
//! the packets sent over the last few seconds that the peer asked for
//! again.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::types::{VideoQuality, VideoTarget};

/// Loss above which the rate is cut.
const LOSS_CUT: f64 = 0.10;
/// Loss below which the rate probes up.
const LOSS_PROBE: f64 = 0.02;
/// Growth per second while probing.
const PROBE_PER_SECOND: f64 = 1.08;
/// Longest time one probing step counts, so that a gap in the reports
/// does not turn into a leap.
const PROBE_STEP_MAX: Duration = Duration::from_secs(2);
/// A round-trip time this far above its recent minimum is a queue: cut.
const QUEUE_CUT: Duration = Duration::from_millis(60);
/// A round-trip time this far above its minimum holds the rate.
const QUEUE_HOLD: Duration = Duration::from_millis(20);
/// Share of the sent rate a queueing cut goes down to.
const QUEUE_BACKOFF: f64 = 0.85;
/// Least time between two queueing cuts.
const QUEUE_CUT_SPACING: Duration = Duration::from_secs(1);
/// How far back the minimum round-trip time looks.
const RTT_WINDOW: Duration = Duration::from_secs(30);
/// How far back the NACK-based loss looks.
const LOSS_WINDOW: Duration = Duration::from_secs(4);
/// How long a NACKed sequence number is remembered, so that the
/// receiver's repeated NACKs of a packet that never came count it once:
/// webrtc-rs asks again every 20 ms or so for as long as the packet is in
/// its receive log, long after the loss window. Well under the time 65,536
/// packets take at any bitrate a call sends (the numbers wrap).
const NACK_MEMORY: Duration = Duration::from_secs(30);
/// Most NACKed sequence numbers remembered.
const NACK_MEMORY_LEN: usize = 8192;
/// Fewest packets sent in the loss window for its share to count.
const LOSS_MIN_PACKETS: u64 = 20;
/// How long a REMB caps the rate after it came.
const REMB_FRESH: Duration = Duration::from_secs(5);
/// Lowest bitrate the estimate goes to: video at this rate is poor, but
/// it keeps moving and the estimate can climb back from it.
pub(crate) const FLOOR_BPS: u32 = 60_000;

/// What the remote's RTCP said about one of our streams, as the
/// interceptor that watches inbound RTCP hands it over.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Feedback {
    /// A reception report block (from a receiver or sender report).
    Report {
        /// The stream it is about (ours).
        ssrc: u32,
        /// Share of its packets lost since the previous report, in 256ths.
        fraction_lost: u8,
        /// Packets lost since the stream began.
        total_lost: u32,
        /// Round trip from our sender report to this report, when it
        /// echoes one (see [`rtt_from_report`]).
        rtt: Option<Duration>,
    },
    /// A REMB: the receiver's estimate of what it can take, for `ssrcs`.
    Remb {
        /// The estimate, in bits per second.
        bitrate_bps: u64,
        /// The streams it covers.
        ssrcs: Vec<u32>,
    },
    /// A NACK: these sequence numbers of `ssrc` did not arrive.
    Nack {
        /// The stream (ours).
        ssrc: u32,
        /// The missing sequence numbers.
        seqs: Vec<u16>,
    },
    /// Transport-wide congestion control feedback came (counted only: we
    /// do not number our packets, so none is about us).
    Twcc,
}

/// The round-trip time a reception report shows (RFC 3550 section 6.4.1):
/// it echoes, as `lsr`, the middle 32 bits of the NTP time of our last
/// sender report and says it waited `dlsr` (1/65536 s) before answering;
/// `arrival_ntp` is the NTP time it arrived at (64-bit, as sender reports
/// carry). `None` when it echoes no report or the figures do not add up.
pub(crate) fn rtt_from_report(arrival_ntp: u64, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let arrival = (arrival_ntp >> 16) as u32;
    let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
    // A "negative" round trip (clocks read in another order) wraps.
    if rtt >= 0x8000_0000 {
        return None;
    }
    let rtt = Duration::from_secs_f64(f64::from(rtt) / 65536.0);
    (rtt <= Duration::from_secs(60)).then_some(rtt)
}

/// The bitrate one peer's feedback allows for our video.
#[derive(Debug, Clone)]
pub(crate) struct Estimator {
    ceiling: u32,
    rate: f64,
    last_report: Option<Instant>,
    rtts: VecDeque<(Instant, Duration)>,
    last_queue_cut: Option<Instant>,
    remb: Option<(Instant, u64)>,
    /// The last cumulative figures of our stream: when, bytes, packets.
    sent: Option<(Instant, u64, u64)>,
    sent_bps: Option<f64>,
    /// Packets sent and NACKed per sample, over the loss window.
    losses: VecDeque<(Instant, u64, u64)>,
    /// Sequence numbers NACKed lately: a NACK is repeated until the packet
    /// comes (for a packet past its resends, as long as the receiver
    /// remembers it), and a packet counts once.
    nacked: VecDeque<(Instant, u16)>,
    nacked_set: HashSet<u16>,
    nacked_since_sample: u64,
    fraction_lost: Option<f64>,
    rtt: Option<Duration>,
}

impl Estimator {
    /// Starts at the profile's bitrate.
    pub(crate) fn new(quality: VideoQuality) -> Self {
        let ceiling = quality.bitrate_bps();
        Estimator {
            ceiling,
            rate: f64::from(ceiling),
            last_report: None,
            rtts: VecDeque::new(),
            last_queue_cut: None,
            remb: None,
            sent: None,
            sent_bps: None,
            losses: VecDeque::new(),
            nacked: VecDeque::new(),
            nacked_set: HashSet::new(),
            nacked_since_sample: 0,
            fraction_lost: None,
            rtt: None,
        }
    }

    /// The bitrate this peer allows now, in bits per second.
    pub(crate) fn bitrate_bps(&self) -> u32 {
        self.rate as u32
    }

    /// The loss figure the last decision used (see the module docs).
    pub(crate) fn fraction_lost(&self) -> Option<f64> {
        self.fraction_lost
    }

    /// The last round-trip time measured from a report.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The sent bitrate of our stream, as last measured.
    pub(crate) fn sent_bps(&self) -> Option<f64> {
        self.sent_bps
    }

    /// Our stream's cumulative payload bytes and packets sent, as of `now`:
    /// gives the sent rate and closes one sample of the loss window.
    pub(crate) fn on_sent(&mut self, now: Instant, bytes: u64, packets: u64) {
        if let Some((at, b, p)) = self.sent {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            if dt < 0.2 {
                return;
            }
            if bytes >= b && packets >= p {
                self.sent_bps = Some((bytes - b) as f64 * 8.0 / dt);
                self.losses
                    .push_back((now, packets - p, self.nacked_since_sample));
            }
        }
        self.nacked_since_sample = 0;
        self.sent = Some((now, bytes, packets));
        while self
            .losses
            .front()
            .is_some_and(|&(t, _, _)| now.saturating_duration_since(t) > LOSS_WINDOW)
        {
            self.losses.pop_front();
        }
    }

    /// The peer asked for `seqs` of our stream again.
    pub(crate) fn on_nack(&mut self, now: Instant, seqs: &[u16]) {
        while self.nacked.front().is_some_and(|&(t, _)| {
            now.saturating_duration_since(t) > NACK_MEMORY || self.nacked.len() > NACK_MEMORY_LEN
        }) {
            if let Some((_, seq)) = self.nacked.pop_front() {
                self.nacked_set.remove(&seq);
            }
        }
        for &seq in seqs {
            if self.nacked_set.insert(seq) {
                self.nacked.push_back((now, seq));
                self.nacked_since_sample += 1;
            }
        }
    }

    /// A REMB for our stream: caps the rate while it is fresh.
    pub(crate) fn on_remb(&mut self, now: Instant, bitrate_bps: u64) {
        self.remb = Some((now, bitrate_bps));
        self.rate = self.rate.min(bitrate_bps as f64);
        self.clamp();
    }

    /// The share of the packets sent over the loss window that were NACKed.
    fn nack_loss(&self) -> Option<f64> {
        let (sent, lost) = self
            .losses
            .iter()
            .fold((0, 0), |(s, l), &(_, sent, lost)| (s + sent, l + lost));
        (sent >= LOSS_MIN_PACKETS).then(|| (lost as f64 / sent as f64).min(1.0))
    }

    /// A reception report about our stream: the decision point.
    pub(crate) fn on_report(&mut self, now: Instant, fraction_lost: u8, rtt: Option<Duration>) {
        let step = self
            .last_report
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(PROBE_STEP_MAX);
        self.last_report = Some(now);
        let reported = f64::from(fraction_lost) / 256.0;
        let loss = self.nack_loss().map_or(reported, |n| n.max(reported));
        self.fraction_lost = Some(loss);
        let mut queue = Duration::ZERO;
        if let Some(rtt) = rtt {
            self.rtt = Some(rtt);
            while self
                .rtts
                .front()
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) > RTT_WINDOW)
            {
                self.rtts.pop_front();
            }
            self.rtts.push_back((now, rtt));
            let min = self.rtts.iter().map(|&(_, r)| r).min().unwrap_or(rtt);
            queue = rtt.saturating_sub(min);
        }
        if loss > LOSS_CUT {
            let base = self.sent_bps.map_or(self.rate, |s| s.min(self.rate));
            self.rate = base * (1.0 - 0.5 * loss);
        } else if queue > QUEUE_CUT {
            let due = self
                .last_queue_cut
                .is_none_or(|t| now.saturating_duration_since(t) >= QUEUE_CUT_SPACING);
            if due {
                self.last_queue_cut = Some(now);
                let sent = self.sent_bps.unwrap_or(self.rate);
                self.rate = self.rate.min(QUEUE_BACKOFF * sent);
            }
        } else if loss < LOSS_PROBE && queue <= QUEUE_HOLD {
            self.rate *= PROBE_PER_SECOND.powf(step.as_secs_f64());
        }
        if let Some((at, remb)) = self.remb {
            if now.saturating_duration_since(at) <= REMB_FRESH {
                self.rate = self.rate.min(remb as f64);
            }
        }
        self.clamp();
    }

    fn clamp(&mut self) {
        let floor = f64::from(FLOOR_BPS.min(self.ceiling));
        self.rate = self.rate.clamp(floor, f64::from(self.ceiling));
    }
}

/// A rung of the ladder: the least bitrate a picture height needs.
const RUNGS: [(u32, u32); 6] = [
    (1080, 1_800_000),
    (720, 700_000),
    (480, 450_000),
    (360, 300_000),
    (240, 150_000),
    (180, 0),
];
/// Below this bitrate the frame rate drops to [`LOW_FRAME_RATE`].
const LOW_RATE_BPS: u32 = 300_000;
/// The frame rate at most below [`LOW_RATE_BPS`].
const LOW_FRAME_RATE: u32 = 15;
/// Climbing a rung needs this much more than the rung's least bitrate,
/// so that a bitrate hovering at a boundary does not flap between two.
const UP_MARGIN: f64 = 1.2;

/// The target for `bitrate_bps` under `quality`, coming from
/// `current_height`: the highest rung the bitrate pays for (climbing needs
/// [`UP_MARGIN`] over the rung's least bitrate, staying needs only the
/// least), never above the profile's height, frame rate or bitrate.
pub(crate) fn ladder(quality: VideoQuality, current_height: u32, bitrate_bps: u32) -> VideoTarget {
    let full = VideoTarget::of(quality);
    let bitrate_bps = bitrate_bps.clamp(FLOOR_BPS.min(full.bitrate_bps), full.bitrate_bps);
    let max_height = RUNGS
        .iter()
        .filter(|&&(h, _)| h <= full.max_height)
        .find(|&&(h, need)| {
            let need = if h > current_height {
                f64::from(need) * UP_MARGIN
            } else {
                f64::from(need)
            };
            f64::from(bitrate_bps) >= need
        })
        .map_or(full.max_height.min(RUNGS[RUNGS.len() - 1].0), |&(h, _)| h);
    let frame_rate = if bitrate_bps < LOW_RATE_BPS {
        full.frame_rate.min(LOW_FRAME_RATE)
    } else {
        full.frame_rate
    };
    VideoTarget {
        bitrate_bps,
        frame_rate,
        max_height,
    }
}

/// Least relative change of the bitrate worth telling the encoder.
const CHANGE_MIN: f64 = 0.10;
/// Least time between two changes.
const CHANGE_SPACING: Duration = Duration::from_millis(500);

/// The session's one target: the lowest of the peers' bitrates on the
/// ladder, changed only when meaningfully different and not too often.
#[derive(Debug, Clone)]
pub(crate) struct Governor {
    quality: VideoQuality,
    current: VideoTarget,
    last_change: Option<Instant>,
}

impl Governor {
    /// At the full profile.
    pub(crate) fn new(quality: VideoQuality) -> Self {
        Governor {
            quality,
            current: VideoTarget::of(quality),
            last_change: None,
        }
    }

    /// What the encoder aims at now.
    pub(crate) fn current(&self) -> VideoTarget {
        self.current
    }

    /// Offers the lowest of the peers' bitrates at `now`; the new target
    /// when it is worth a change.
    pub(crate) fn offer(&mut self, now: Instant, bitrate_bps: u32) -> Option<VideoTarget> {
        if self
            .last_change
            .is_some_and(|t| now.saturating_duration_since(t) < CHANGE_SPACING)
        {
            return None;
        }
        let next = ladder(self.quality, self.current.max_height, bitrate_bps);
        let cur = &self.current;
        let relative = (f64::from(next.bitrate_bps) - f64::from(cur.bitrate_bps)).abs()
            / f64::from(cur.bitrate_bps.max(1));
        let ceiling = self.quality.bitrate_bps();
        let changed = next.max_height != cur.max_height
            || next.frame_rate != cur.frame_rate
            || relative >= CHANGE_MIN
            // Back at the top, exactly: the last few percent count there.
            || (next.bitrate_bps == ceiling && cur.bitrate_bps != ceiling);
        if !changed {
            return None;
        }
        self.current = next;
        self.last_change = Some(now);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P480: VideoQuality = VideoQuality::P480;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Feeds `e` one second of steady sending at `bps` and one report.
    fn second(
        e: &mut Estimator,
        t0: Instant,
        i: u32,
        bps: u64,
        fraction: u8,
        rtt: Duration,
        state: &mut (u64, u64),
    ) {
        let now = t0 + secs(f64::from(i));
        state.0 += bps / 8;
        state.1 += bps / 8 / 1000;
        e.on_sent(now, state.0, state.1);
        e.on_report(now, fraction, Some(rtt));
    }

    #[test]
    fn rtt_comes_from_lsr_and_dlsr() {
        // Our SR left at NTP 1000.5 s; the peer held it 0.25 s; its report
        // arrives at 1000.8 s: 50 ms of round trip.
        let ntp = |s: f64| ((s * 65536.0) as u64) << 16;
        let lsr = (ntp(1000.5) >> 16) as u32;
        let dlsr = (0.25 * 65536.0) as u32;
        let rtt = rtt_from_report(ntp(1000.8), lsr, dlsr).unwrap();
        assert!((rtt.as_secs_f64() - 0.05).abs() < 0.001, "{rtt:?}");
        assert_eq!(rtt_from_report(ntp(1000.8), 0, dlsr), None, "no SR echoed");
        assert_eq!(
            rtt_from_report(ntp(1000.6), lsr, dlsr),
            None,
            "held longer than the round trip: does not add up"
        );
    }

    #[test]
    fn heavy_loss_cuts_in_proportion() {
        let t0 = Instant::now();
        let mut e = Estimator::new(P480);
        let mut s = (0, 0);
        second(&mut e, t0, 0, 800_000, 0, secs(0.01), &mut s);
        second(&mut e, t0, 1, 800_000, 0, secs(0.01), &mut s);
        assert_eq!(e.bitrate_bps(), 800_000);
        // 25 % lost: x (1 - 0.125).
        second(&mut e, t0, 2, 800_000, 64, secs(0.01), &mut s);
        let got = f64::from(e.bitrate_bps());
        assert!((got - 700_000.0).abs() < 1_000.0, "{got}");
        assert_eq!(e.fraction_lost(), Some(0.25));
    }

    #[test]
    fn moderate_loss_holds_and_light_loss_probes_to_the_ceiling() {
        let t0 = Instant::now();
        let mut e = Estimator::new(P480);
        let mut s = (0, 0);
        second(&mut e, t0, 0, 400_000, 0, secs(0.01), &mut s);
        second(&mut e, t0, 1, 400_000, 128, secs(0.01), &mut s); // 50 %
        let low = e.bitrate_bps();
        assert!(low < 400_000, "{low}");
        for i in 2..10 {
            second(&mut e, t0, i, 300_000, 13, secs(0.01), &mut s); // ~5 %
        }
        assert_eq!(e.bitrate_bps(), low, "2-10 % holds");
        second(&mut e, t0, 10, 300_000, 0, secs(0.01), &mut s);
        let up = f64::from(e.bitrate_bps()) / f64::from(low);
        assert!((up - 1.08).abs() < 0.005, "~8 % in a second: {up}");
        for i in 11..40 {
            second(&mut e, t0, i, 300_000, 0, secs(0.01), &mut s);
        }
        assert_eq!(e.bitrate_bps(), 800_000, "never above the profile");
    }

    #[test]
    fn a_long_gap_between_reports_is_no_leap() {
        let t0 = Instant::now();
        let mut e = Estimator::new(P480);
        e.on_report(t0, 128, None);
        let low = f64::from(e.bitrate_bps());
        e.on_report(t0 + secs(60.0), 0, None);
        let up = f64::from(e.bitrate_bps()) / low;
        assert!(up < 1.08f64.powi(2) + 0.001, "{up}");
    }

    #[test]
    fn a_growing_queue_cuts_to_below_the_sent_rate_once_a_second() {
        let t0 = Instant::now();
        let mut e = Estimator::new(P480);
        let mut s = (0, 0);
        second(&mut e, t0, 0, 600_000, 0, secs(0.010), &mut s);
        second(&mut e, t0, 1, 600_000, 0, secs(0.010), &mut s);
        assert_eq!(e.bitrate_bps(), 800_000);
        second(&mut e, t0, 2, 600_000, 0, secs(0.200), &mut s);
        let got = f64::from(e.bitrate_bps());
        assert!((got - 510_000.0).abs() < 2_000.0, "0.85 x sent: {got}");
        // A report 100 ms later with the queue still there: no second cut.
        e.on_report(t0 + secs(2.1), 0, Some(secs(0.2)));
        assert!((f64::from(e.bitrate_bps()) - got).abs() < 1.0);
        // A queue of 30 ms holds (no probing, no cut).
        let mut e2 = e.clone();
        e2.on_report(t0 + secs(3.0), 0, Some(secs(0.040)));
        assert_eq!(e2.bitrate_bps(), e.bitrate_bps());
    }

    #[test]
    fn the_rtt_minimum_forgets_old_samples() {
        let t0 = Instant::now();
        let mut e = Estimator::new(P480);
        e.on_report(t0, 0, Some(secs(0.005)));
        // The path got longer for good: a queue, as far as the window
        // remembers the 5 ms; after it, 100 ms is the new normal and the
        // rate probes again.
        let mut rates = Vec::new();
        for i in 1..40 {
            e.on_report(t0 + secs(f64::from(i)), 0, Some(secs(0.100)));
            rates.push(e.bitrate_bps());
        }
        assert!(rates[1] < rates[0], "{rates:?}");
        assert!(rates[38] > rates[32], "{rates:?}");
    }

    #[test]
    fn nacks_count_as_loss_even_when_repaired() {
        let t0 = Instant::now();
        let mut e = Estimator::new(P480);
        e.on_sent(t0, 0, 0);
        // 100 packets a second, 15 of them NACKed (some twice), while the
        // receiver report shows nothing lost (retransmissions repaired all).
        for i in 1..=3u16 {
            let now = t0 + secs(f64::from(i));
            let seqs: Vec<u16> = (0..15).map(|k| i * 100 + k).collect();
            e.on_nack(now, &seqs);
            e.on_nack(now, &seqs[..5]);
            e.on_sent(now, u64::from(i) * 100_000, u64::from(i) * 100);
        }
        e.on_report(t0 + secs(3.0), 0, None);
        let loss = e.fraction_lost().unwrap();
        assert!((loss - 0.15).abs() < 1e-9, "{loss}");
        assert!(e.bitrate_bps() < 800_000);

        // Packets past their resends are NACKed again and again while the
        // receiver remembers them: after the loss window they are still
        // the same losses, not new ones.
        let old: Vec<u16> = (1..=3u16)
            .flat_map(|i| (0..15).map(move |k| i * 100 + k))
            .collect();
        for i in 4..=12u16 {
            let now = t0 + secs(f64::from(i));
            e.on_nack(now, &old);
            e.on_sent(now, u64::from(i) * 100_000, u64::from(i) * 100);
        }
        e.on_report(t0 + secs(12.0), 0, None);
        assert_eq!(e.fraction_lost(), Some(0.0), "old NACKs counted again");
    }

    #[test]
    fn remb_caps_while_fresh() {
        let t0 = Instant::now();
        let mut e = Estimator::new(P480);
        e.on_remb(t0, 250_000);
        assert_eq!(e.bitrate_bps(), 250_000);
        e.on_report(t0 + secs(1.0), 0, None);
        assert_eq!(e.bitrate_bps(), 250_000, "a fresh REMB caps probing");
        e.on_report(t0 + secs(7.0), 0, None);
        assert!(e.bitrate_bps() > 250_000, "a stale one does not");
        e.on_remb(t0 + secs(8.0), 10);
        assert_eq!(e.bitrate_bps(), FLOOR_BPS, "never below the floor");
    }

    #[test]
    fn the_ladder_maps_bitrate_to_size_and_rate_within_the_profile() {
        let q = VideoQuality::P720;
        assert_eq!(ladder(q, 720, 1_500_000), VideoTarget::of(q));
        assert_eq!(ladder(q, 720, 3_000_000), VideoTarget::of(q), "capped");
        assert_eq!(ladder(q, 720, 700_000).max_height, 720);
        assert_eq!(ladder(q, 720, 500_000).max_height, 480);
        // Above 300 kbit/s the app's camera keeps its 30 fps.
        assert_eq!(ladder(q, 720, 320_000).max_height, 360);
        assert_eq!(ladder(q, 720, 320_000).frame_rate, 30);
        let low = ladder(q, 720, 200_000);
        assert_eq!((low.max_height, low.frame_rate), (240, 15));
        assert_eq!(ladder(q, 720, 100_000).max_height, 180);
        assert_eq!(ladder(q, 720, 1).bitrate_bps, FLOOR_BPS);
        // The profile's height is the top, even with bitrate to spare.
        assert_eq!(ladder(P480, 480, 800_000).max_height, 480);
        assert_eq!(
            ladder(VideoQuality::P1080, 1080, 3_000_000).max_height,
            1080
        );
    }

    #[test]
    fn the_ladder_climbs_only_with_a_margin() {
        let q = VideoQuality::P720;
        // At 480p, 750 kbps is enough to stay at 720p but not to climb to it.
        assert_eq!(ladder(q, 480, 750_000).max_height, 480);
        assert_eq!(ladder(q, 720, 750_000).max_height, 720);
        assert_eq!(ladder(q, 480, 850_000).max_height, 720);
    }

    #[test]
    fn the_governor_changes_only_meaningfully_and_not_too_often() {
        let t0 = Instant::now();
        let mut g = Governor::new(P480);
        assert_eq!(g.current(), VideoTarget::of(P480));
        assert_eq!(g.offer(t0, 780_000), None, "under 10 %: no change");
        let t = g.offer(t0, 600_000).unwrap();
        assert_eq!(t.bitrate_bps, 600_000);
        assert_eq!(g.offer(t0 + secs(0.1), 300_000), None, "too soon");
        let t = g.offer(t0 + secs(0.6), 250_000).unwrap();
        assert_eq!((t.bitrate_bps, t.max_height), (250_000, 240));
        assert_eq!(g.offer(t0 + secs(1.2), 260_000), None);
        let t = g.offer(t0 + secs(1.8), 790_000).unwrap();
        assert_eq!(t.max_height, 480);
        let t = g.offer(t0 + secs(2.4), 800_000).unwrap();
        assert_eq!(t, VideoTarget::of(P480), "back at the full profile");
    }

    #[test]
    fn a_capped_link_settles_under_the_cap_and_recovers_after() {
        // A crude link: it carries `cap` bps; above it the excess is lost
        // and a queue adds delay. The estimate must come under the cap,
        // then climb back when the cap is gone.
        let t0 = Instant::now();
        let mut e = Estimator::new(P480);
        let mut s = (0, 0);
        let cap = 300_000u64;
        let mut rates = Vec::new();
        for i in 0..3 {
            second(&mut e, t0, i, 800_000, 0, secs(0.01), &mut s);
        }
        for i in 3..33 {
            let sent = u64::from(e.bitrate_bps());
            let (fraction, rtt) = if sent > cap {
                let loss = (sent - cap) as f64 / sent as f64;
                ((loss * 256.0) as u8, secs(0.2))
            } else {
                (0, secs(0.01))
            };
            second(&mut e, t0, i, sent, fraction, rtt, &mut s);
            rates.push(e.bitrate_bps());
        }
        let settled = &rates[10..];
        assert!(
            settled.iter().all(|&r| u64::from(r) <= cap * 11 / 10),
            "{rates:?}"
        );
        assert!(settled.iter().any(|&r| u64::from(r) < cap), "{rates:?}");
        for i in 33..63 {
            let sent = u64::from(e.bitrate_bps());
            second(&mut e, t0, i, sent, 0, secs(0.01), &mut s);
        }
        assert_eq!(e.bitrate_bps(), 800_000);
    }
}
