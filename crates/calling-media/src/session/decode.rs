//! Decoding remote tracks for a [`DecodedSink`]: one OS thread per track
//! (OpenH264 for H.264, opus-rs for Opus), fed by the track's receive task
//! through a bounded queue that never makes the receive task wait.
//!
//! Video is handed out only from a clean reference chain: after a lost
//! frame, a queue overflow or a decode error the decoder gives out nothing
//! until an IDR frame decodes without error, and asks for one meanwhile
//! ([`TrackDecoder::wants_keyframe`], which the receive task turns into rate
//! limited PLIs). Lost audio packets are concealed by the Opus decoder, a
//! few frames per gap at most. VP8 is not decoded (no decoder that builds
//! with cargo alone): its track gets no decoder thread.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calling_core::UserId;
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use opus_rs::OpusDecoder;

use crate::decoded::{DecodedAudioFrame, DecodedSink, DecodedVideoFrame};
use crate::frame::{Loss, h264_is_keyframe};
use crate::types::Codec;

/// Where a session's decoded media goes; shared with its decoder threads,
/// which end once it is emptied.
pub(super) type DecodedSlot = RwLock<Option<Arc<dyn DecodedSink>>>;

/// Encoded video frames queued per track before the oldest are dropped:
/// about a third of a second at 30 fps.
const VIDEO_QUEUE: usize = 10;
/// Encoded audio frames queued per track (20 ms each).
const AUDIO_QUEUE: usize = 50;
/// Most packets concealed for one gap: beyond that, silence is better than
/// a made-up voice.
pub(super) const MAX_CONCEALED: u32 = 3;
/// How often an idle decoder thread looks whether its sink is gone.
const IDLE_CHECK: Duration = Duration::from_millis(200);
/// The longest Opus packet (120 ms) at 48 kHz.
const OPUS_MAX_SAMPLES: usize = 5760;

/// Turns 32-bit RTP timestamps, which wrap, into media time since the
/// first one.
#[derive(Debug, Clone)]
pub(super) struct MediaClock {
    rate: u32,
    last: Option<u32>,
    /// Ticks since the first timestamp, unwrapped.
    ticks: i64,
}

impl MediaClock {
    pub(super) fn new(rate: u32) -> Self {
        MediaClock {
            rate: rate.max(1),
            last: None,
            ticks: 0,
        }
    }

    /// Media time of `ts`. A timestamp a little behind the last one (a late
    /// frame) maps before it, never before the first.
    pub(super) fn time(&mut self, ts: u32) -> Duration {
        if let Some(last) = self.last {
            // The signed distance: forward across a wrap, or a little back.
            self.ticks += i64::from(ts.wrapping_sub(last) as i32);
        }
        self.last = Some(ts);
        let ticks = u64::try_from(self.ticks).unwrap_or(0);
        Duration::from_nanos(
            u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(self.rate))
                .unwrap_or(u64::MAX),
        )
    }
}

/// One encoded frame for the decoder.
struct Job {
    data: Bytes,
    rtp_timestamp: u32,
    /// Packets missing before this frame.
    lost_packets: u32,
    /// Whatever came before this frame is not all there: video must start
    /// again from a key frame.
    discontinuity: bool,
    /// Frames before this one were held back on purpose: a jump in time,
    /// not a loss to conceal.
    after_skip: bool,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// What the receive task and the decoder thread share.
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// The decoder waits for a key frame: the receive task asks the sender.
    want_keyframe: AtomicBool,
    /// The thread has ended (sink gone, or it could not start its decoder).
    finished: AtomicBool,
    /// The codec's decoder could not be created: trying again is no use.
    unusable: AtomicBool,
    /// Encoded frames dropped because the queue was full.
    dropped: AtomicU64,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A queue is consistent after any panic: each change is one push,
        // pop or clear.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receive task's handle on one track's decoder thread. Dropping it
/// ends the thread once it has finished the frame in hand.
pub(super) struct TrackDecoder {
    shared: Arc<Shared>,
    codec: Codec,
    capacity: usize,
    /// The next frame pushed follows frames held back on purpose.
    skipped: bool,
}

impl TrackDecoder {
    /// Starts a decoder thread for a track of `codec` from `user`, writing
    /// to whatever `slot` holds. `None` for a codec we do not decode, or if
    /// the thread cannot start.
    pub(super) fn start(user: &UserId, codec: Codec, slot: Arc<DecodedSlot>) -> Option<Self> {
        let handle = Self::queue(codec)?;
        let worker = Worker {
            shared: handle.shared.clone(),
            slot,
            user: user.clone(),
        };
        let name = match codec {
            Codec::H264 => "calling-h264-dec",
            _ => "calling-opus-dec",
        };
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                match codec {
                    Codec::H264 => worker.run(VideoDecoder::new()),
                    _ => worker.run(AudioDecoder::new()),
                }
                worker.shared.finished.store(true, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::warn!(%user, error = %e, "cannot start a decoder thread");
            return None;
        }
        tracing::debug!(%user, ?codec, "decoder started");
        Some(handle)
    }

    /// The queue of a decoder for `codec`, with no thread yet.
    fn queue(codec: Codec) -> Option<Self> {
        let capacity = match codec {
            Codec::H264 => VIDEO_QUEUE,
            Codec::Opus => AUDIO_QUEUE,
            Codec::Vp8 => return None,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            // Started mid-stream, video needs a key frame first.
            want_keyframe: AtomicBool::new(codec == Codec::H264),
            finished: AtomicBool::new(false),
            unusable: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        Some(TrackDecoder {
            shared,
            codec,
            capacity,
            skipped: false,
        })
    }

    /// Whether the thread has ended; a new one is needed to decode again.
    pub(super) fn is_finished(&self) -> bool {
        self.shared.finished.load(Ordering::Acquire)
    }

    /// Whether the decoder waits for a key frame (ask the sender for one).
    pub(super) fn wants_keyframe(&self) -> bool {
        self.shared.want_keyframe.load(Ordering::Acquire)
    }

    /// Encoded frames dropped so far because the decoder fell behind.
    pub(super) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Queues a frame; never waits for the decoder. When the queue is full
    /// the oldest frames go: all queued video (each depends on the one
    /// before, and the decoder must restart from a key frame anyway), or
    /// the oldest audio frame.
    pub(super) fn push(&mut self, data: Bytes, rtp_timestamp: u32, loss: Loss) {
        let video = self.codec == Codec::H264;
        let mut job = Job {
            data,
            rtp_timestamp,
            lost_packets: loss.packets,
            discontinuity: loss.any() || self.skipped,
            after_skip: self.skipped,
        };
        self.skipped = false;
        {
            let mut q = self.shared.queue();
            if q.jobs.len() >= self.capacity {
                let n = if video { q.jobs.len() } else { 1 };
                q.jobs.drain(..n);
                self.shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
                job.discontinuity = true;
            }
            if video && job.discontinuity {
                self.shared.want_keyframe.store(true, Ordering::Release);
            }
            q.jobs.push_back(job);
        }
        self.shared.ready.notify_one();
    }

    /// The next frame follows frames that were not pushed on purpose (not
    /// lost): nothing to conceal, but video must restart from a key frame.
    pub(super) fn skip(&mut self) {
        self.skipped = true;
    }
}

impl Drop for TrackDecoder {
    fn drop(&mut self) {
        let dropped = self.dropped();
        if dropped > 0 {
            tracing::debug!(dropped, "decoder ends; it fell behind on some frames");
        }
        self.shared.queue().closed = true;
        self.shared.ready.notify_all();
    }
}

/// A track's decoding as the receive task sees it: a decoder thread while
/// the session has a decoded sink, none otherwise.
pub(super) struct TrackDecoding {
    user: UserId,
    codec: Codec,
    decoder: Option<TrackDecoder>,
    /// Whether we said, once, that this track is not decoded.
    told_undecoded: bool,
    /// This track cannot be decoded here (VP8, or no decoder could be
    /// made): no thread is started for it again.
    undecodable: bool,
}

impl TrackDecoding {
    pub(super) fn new(user: UserId, codec: Codec) -> Self {
        TrackDecoding {
            user,
            codec,
            decoder: None,
            told_undecoded: false,
            undecodable: codec == Codec::Vp8,
        }
    }

    /// Hands a frame to the decoder, starting one if `slot` holds a sink
    /// and stopping it if not. `loss` is what the reassembly lost before
    /// this frame.
    pub(super) fn feed(&mut self, slot: &Arc<DecodedSlot>, data: Bytes, ts: u32, loss: Loss) {
        let wanted = slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if !wanted {
            self.decoder = None;
            return;
        }
        if let Some(d) = self.decoder.take_if(|d| d.is_finished()) {
            self.undecodable |= d.shared.unusable.load(Ordering::Acquire);
        }
        if self.undecodable {
            if self.codec == Codec::Vp8 && !self.told_undecoded {
                self.told_undecoded = true;
                tracing::info!(
                    user = %self.user,
                    "VP8 video is not decoded (no VP8 decoder builds with cargo alone); \
                     its encoded frames still reach the frame sink"
                );
            }
            return;
        }
        if self.decoder.is_none() {
            self.decoder = TrackDecoder::start(&self.user, self.codec, slot.clone());
            self.undecodable = self.decoder.is_none();
        }
        if let Some(d) = self.decoder.as_mut() {
            d.push(data, ts, loss);
        }
    }

    /// A frame was held back on purpose (not lost): see
    /// [`TrackDecoder::skip`].
    pub(super) fn skip(&mut self) {
        if let Some(d) = self.decoder.as_mut() {
            d.skip();
        }
    }

    /// Whether the decoder waits for a key frame.
    pub(super) fn wants_keyframe(&self) -> bool {
        self.decoder
            .as_ref()
            .is_some_and(TrackDecoder::wants_keyframe)
    }
}

/// What runs on a decoder thread.
struct Worker {
    shared: Arc<Shared>,
    slot: Arc<DecodedSlot>,
    user: UserId,
}

/// A codec's decoding of one job into zero or more frames for the sink.
trait Decode {
    fn decode(&mut self, job: Job, shared: &Shared, user: &UserId, sink: &dyn DecodedSink);
}

impl Worker {
    fn sink(&self) -> Option<Arc<dyn DecodedSink>> {
        self.slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes jobs until the queue closes or the sink is unset.
    fn run(&self, decoder: Option<impl Decode>) {
        let Some(mut decoder) = decoder else {
            self.shared.unusable.store(true, Ordering::Release);
            return;
        };
        loop {
            let job = {
                let mut q = self.shared.queue();
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    if q.closed {
                        return;
                    }
                    q = self
                        .shared
                        .ready
                        .wait_timeout(q, IDLE_CHECK)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if self.sink().is_none() {
                        return;
                    }
                }
            };
            let Some(sink) = self.sink() else { return };
            decoder.decode(job, &self.shared, &self.user, sink.as_ref());
        }
    }
}

/// H.264 through OpenH264, handing out only pictures of a clean chain.
struct VideoDecoder {
    decoder: Decoder,
    clock: MediaClock,
    /// Nothing is handed out until an IDR decodes cleanly.
    awaiting_idr: bool,
}

impl VideoDecoder {
    fn new() -> Option<Self> {
        // No flush after each call: decode_frame_no_delay already returns
        // each picture of a stream without B-frames at once.
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        match Decoder::with_api_config(OpenH264API::from_source(), config) {
            Ok(decoder) => Some(VideoDecoder {
                decoder,
                clock: MediaClock::new(90_000),
                awaiting_idr: true,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create an H.264 decoder");
                None
            }
        }
    }

    fn lose_sync(&mut self, shared: &Shared) {
        self.awaiting_idr = true;
        shared.want_keyframe.store(true, Ordering::Release);
    }
}

impl Decode for VideoDecoder {
    fn decode(&mut self, job: Job, shared: &Shared, user: &UserId, sink: &dyn DecodedSink) {
        let timestamp = self.clock.time(job.rtp_timestamp);
        if job.discontinuity {
            if !self.awaiting_idr {
                tracing::debug!(%user, "video frames lost: waiting for a key frame");
            }
            self.lose_sync(shared);
        }
        let idr = h264_is_keyframe(&job.data);
        if self.awaiting_idr && !idr {
            return;
        }
        let picture = match self.decoder.decode(&job.data) {
            Ok(p) => p.and_then(|p| i420(&p)),
            Err(e) => {
                tracing::debug!(%user, error = %e, "H.264 decode error: waiting for a key frame");
                self.lose_sync(shared);
                return;
            }
        };
        let Some((width, height, data)) = picture else {
            // An IDR that gives no picture has not proved the chain clean.
            return;
        };
        if self.awaiting_idr {
            self.awaiting_idr = false;
            shared.want_keyframe.store(false, Ordering::Release);
        }
        sink.on_video(
            user,
            &DecodedVideoFrame {
                width,
                height,
                data: Bytes::from(data),
                rtp_timestamp: job.rtp_timestamp,
                timestamp,
                decoded_at: Instant::now(),
            },
        );
    }
}

/// A decoded picture as tightly packed I420, or `None` if its planes are
/// shorter than its size says.
fn i420(p: &impl YUVSource) -> Option<(u32, u32, Vec<u8>)> {
    let (w, h) = p.dimensions();
    let (sy, su, sv) = p.strides();
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if w == 0 || h == 0 || sy < w || su < cw || sv < cw {
        return None;
    }
    let mut out = Vec::with_capacity(w * h + 2 * cw * ch);
    for (plane, stride, pw, ph) in [(p.y(), sy, w, h), (p.u(), su, cw, ch), (p.v(), sv, cw, ch)] {
        for row in 0..ph {
            out.extend_from_slice(plane.get(row * stride..row * stride + pw)?);
        }
    }
    Some((u32::try_from(w).ok()?, u32::try_from(h).ok()?, out))
}

/// Opus through opus-rs, mono at 48 kHz, concealing short losses.
struct AudioDecoder {
    decoder: OpusDecoder,
    clock: MediaClock,
    pcm: Vec<f32>,
    /// Samples of the last packet, the size of a concealed one.
    last_samples: usize,
    /// The RTP timestamp the next packet would have.
    next_ts: Option<u32>,
}

impl AudioDecoder {
    fn new() -> Option<Self> {
        match OpusDecoder::new(48_000, 1) {
            Ok(decoder) => Some(AudioDecoder {
                decoder,
                clock: MediaClock::new(48_000),
                pcm: vec![0.0; OPUS_MAX_SAMPLES],
                last_samples: 960,
                next_ts: None,
            }),
            Err(e) => {
                tracing::warn!(error = e, "cannot create an Opus decoder");
                None
            }
        }
    }

    /// Decodes `packet` (empty: conceals `last_samples`) into `self.pcm`;
    /// returns the samples written. A decoder that panics on a malformed
    /// packet is replaced, and the packet counts as undecodable.
    fn run(&mut self, packet: &[u8]) -> Option<usize> {
        let frame_size = if packet.is_empty() {
            self.last_samples
        } else {
            OPUS_MAX_SAMPLES
        };
        let (decoder, pcm) = (&mut self.decoder, &mut self.pcm);
        match catch_unwind(AssertUnwindSafe(|| decoder.decode(packet, frame_size, pcm))) {
            Ok(Ok(n)) if n > 0 && n <= OPUS_MAX_SAMPLES => Some(n),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = e, "Opus decode error");
                None
            }
            Err(_) => {
                tracing::warn!("the Opus decoder panicked on a packet; it starts over");
                if let Ok(d) = OpusDecoder::new(48_000, 1) {
                    self.decoder = d;
                }
                None
            }
        }
    }

    fn emit(&mut self, n: usize, ts: u32, concealed: bool, user: &UserId, sink: &dyn DecodedSink) {
        let timestamp = self.clock.time(ts);
        sink.on_audio(
            user,
            &DecodedAudioFrame {
                samples: self.pcm[..n].to_vec(),
                channels: 1,
                rtp_timestamp: ts,
                timestamp,
                concealed,
            },
        );
    }
}

impl Decode for AudioDecoder {
    fn decode(&mut self, job: Job, _shared: &Shared, user: &UserId, sink: &dyn DecodedSink) {
        if job.after_skip {
            self.next_ts = None;
        }
        // Conceal what is missing, as far as the timestamps agree that it
        // is missing: the packets lost that fit before this one.
        if let Some(mut ts) = self.next_ts {
            let room = i64::from(job.rtp_timestamp.wrapping_sub(ts) as i32).max(0);
            let fit = u32::try_from(room / self.last_samples.max(1) as i64).unwrap_or(0);
            for _ in 0..job.lost_packets.min(MAX_CONCEALED).min(fit) {
                let Some(n) = self.run(&[]) else { break };
                self.emit(n, ts, true, user, sink);
                ts = ts.wrapping_add(n as u32);
            }
        }
        let Some(n) = self.run(&job.data) else {
            return;
        };
        self.last_samples = n;
        self.next_ts = Some(job.rtp_timestamp.wrapping_add(n as u32));
        self.emit(n, job.rtp_timestamp, false, user, sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_clock_counts_from_the_first_timestamp_across_a_wrap() {
        let mut c = MediaClock::new(90_000);
        assert_eq!(c.time(u32::MAX - 2999), Duration::ZERO);
        assert_eq!(c.time(0), Duration::from_nanos(33_333_333));
        // Past the wrap: 9000 ticks after the first.
        assert_eq!(c.time(6000), Duration::from_millis(100));
        // A late frame maps back, never before the first.
        assert_eq!(c.time(3000), Duration::from_nanos(66_666_666));
        let mut a = MediaClock::new(48_000);
        a.time(1_000);
        assert_eq!(a.time(500), Duration::ZERO);
    }

    #[derive(Default)]
    struct Collect {
        video: Mutex<Vec<DecodedVideoFrame>>,
        audio: Mutex<Vec<DecodedAudioFrame>>,
    }

    impl DecodedSink for Collect {
        fn on_video(&self, _: &UserId, f: &DecodedVideoFrame) {
            self.video.lock().unwrap().push(f.clone());
        }
        fn on_audio(&self, _: &UserId, f: &DecodedAudioFrame) {
            self.audio.lock().unwrap().push(f.clone());
        }
    }

    fn shared() -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            want_keyframe: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            unusable: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    fn job(data: Vec<u8>, ts: u32, lost: u32) -> Job {
        Job {
            data: Bytes::from(data),
            rtp_timestamp: ts,
            lost_packets: lost,
            discontinuity: lost > 0,
            after_skip: false,
        }
    }

    fn opus_packets(n: usize) -> Vec<Vec<u8>> {
        let mut enc = opus_rs::OpusEncoder::new(48_000, 1, opus_rs::Application::Voip).unwrap();
        let mut out = vec![0u8; 1500];
        (0..n)
            .map(|k| {
                let pcm: Vec<i16> = (0..960)
                    .map(|i| {
                        let t = (k * 960 + i) as f32 / 48_000.0;
                        ((t * 440.0 * std::f32::consts::TAU).sin() * 12_000.0) as i16
                    })
                    .collect();
                let len = enc.encode_i16(&pcm, 960, &mut out).unwrap();
                out[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn audio_gaps_are_concealed_a_few_frames_at_most() {
        let user = UserId::new("u").unwrap();
        let sink = Collect::default();
        let sh = shared();
        let mut d = AudioDecoder::new().unwrap();
        let packets = opus_packets(12);
        d.decode(job(packets[0].clone(), 0, 0), &sh, &user, &sink);
        d.decode(job(packets[1].clone(), 960, 0), &sh, &user, &sink);
        // Two packets lost: both concealed, then packet 4 decoded.
        d.decode(job(packets[4].clone(), 4 * 960, 2), &sh, &user, &sink);
        // Seven lost: three concealed only.
        d.decode(job(packets[11].clone(), 11 * 960, 7), &sh, &user, &sink);
        let audio = sink.audio.lock().unwrap();
        let flags: Vec<bool> = audio.iter().map(|f| f.concealed).collect();
        assert_eq!(
            flags,
            [false, false, true, true, false, true, true, true, false]
        );
        let ts: Vec<u32> = audio.iter().map(|f| f.rtp_timestamp).collect();
        assert_eq!(ts[2..5], [2 * 960, 3 * 960, 4 * 960]);
        assert_eq!(audio[8].timestamp, Duration::from_millis(220));
        assert!(
            audio
                .iter()
                .all(|f| f.samples.len() == 960 && f.channels == 1)
        );
        drop(audio);
        // Held back on purpose (remote audio muted), then a packet whose loss
        // count is not about that: nothing made up for the skipped time.
        let mut after = job(packets[3].clone(), 40 * 960, 1);
        after.after_skip = true;
        d.decode(after, &sh, &user, &sink);
        // A loss count larger than the timestamps leave room for.
        d.decode(job(packets[5].clone(), 42 * 960, 3), &sh, &user, &sink);
        let audio = sink.audio.lock().unwrap();
        let flags: Vec<bool> = audio[9..].iter().map(|f| f.concealed).collect();
        assert_eq!(flags, [false, true, false]);
        assert_eq!(audio[10].rtp_timestamp, 41 * 960);
    }

    #[test]
    fn malformed_opus_gives_nothing_and_decoding_goes_on() {
        let user = UserId::new("u").unwrap();
        let sink = Collect::default();
        let sh = shared();
        let mut d = AudioDecoder::new().unwrap();
        // A TOC announcing code-3 framing with a frame count of zero.
        d.decode(job(vec![0x7b, 0x00], 0, 0), &sh, &user, &sink);
        d.decode(job(opus_packets(1).remove(0), 960, 0), &sh, &user, &sink);
        let audio = sink.audio.lock().unwrap();
        assert_eq!(audio.len(), 1);
        assert_eq!(audio[0].rtp_timestamp, 960);
    }

    /// A few H.264 access units of a flat grey picture: an IDR (with SPS
    /// and PPS) and P frames.
    fn h264_stream(n: usize, w: usize, h: usize) -> Vec<Vec<u8>> {
        use openh264::encoder::Encoder;
        use openh264::formats::YUVBuffer;
        let mut enc = Encoder::new().unwrap();
        (0..n)
            .map(|k| {
                let mut yuv = vec![128u8; w * h * 3 / 2];
                yuv[..w * h].fill(60 + (k as u8) * 10);
                let buf = YUVBuffer::from_vec(yuv, w, h);
                enc.encode(&buf).unwrap().to_vec()
            })
            .collect()
    }

    #[test]
    fn video_after_a_loss_waits_for_a_clean_idr_and_asks_for_it() {
        let user = UserId::new("u").unwrap();
        let sink = Collect::default();
        let sh = shared();
        let mut d = VideoDecoder::new().unwrap();
        let s = h264_stream(4, 64, 48);
        assert!(h264_is_keyframe(&s[0]) && !h264_is_keyframe(&s[1]));
        // A P frame before any key frame: nothing.
        d.decode(job(s[1].clone(), 0, 0), &sh, &user, &sink);
        assert!(sink.video.lock().unwrap().is_empty());
        d.decode(job(s[0].clone(), 3000, 0), &sh, &user, &sink);
        d.decode(job(s[1].clone(), 6000, 0), &sh, &user, &sink);
        assert_eq!(sink.video.lock().unwrap().len(), 2);
        assert!(!sh.want_keyframe.load(Ordering::Acquire));
        // A loss is reported before frame 2 (say a packet that held no
        // frame of its own): frames 2 and 3 would decode, but nothing is
        // handed out before a key frame, which is wanted until one comes.
        d.decode(job(s[2].clone(), 9_000, 1), &sh, &user, &sink);
        assert!(sh.want_keyframe.load(Ordering::Acquire));
        d.decode(job(s[3].clone(), 12_000, 0), &sh, &user, &sink);
        assert_eq!(sink.video.lock().unwrap().len(), 2);
        assert!(sh.want_keyframe.load(Ordering::Acquire));
        // A bit stream that is no H.264 at all is no key frame either.
        d.decode(
            job(vec![0, 0, 0, 1, 0x65, 0xff, 0xff], 15_000, 0),
            &sh,
            &user,
            &sink,
        );
        let again = h264_stream(1, 96, 64).remove(0);
        d.decode(job(again, 18_000, 0), &sh, &user, &sink);
        let video = sink.video.lock().unwrap();
        assert!(!sh.want_keyframe.load(Ordering::Acquire));
        assert_eq!(video.len(), 3, "the broken IDR gave nothing");
        let last = video.last().unwrap();
        assert_eq!((last.width, last.height), (96, 64), "new size taken");
        assert_eq!(last.data.len(), 96 * 64 * 3 / 2);
        assert_eq!(last.timestamp, Duration::from_millis(200));
        let first = &video[0];
        assert_eq!((first.width, first.height), (64, 48));
        assert!(first.y().iter().all(|&y| y.abs_diff(60) < 8));
    }

    #[test]
    fn a_full_video_queue_drops_the_oldest_and_wants_a_key_frame() {
        // No thread: the queue just fills.
        let mut d = TrackDecoder::queue(Codec::H264).unwrap();
        d.shared.want_keyframe.store(false, Ordering::Release);
        for ts in 0..VIDEO_QUEUE as u32 {
            d.push(Bytes::from_static(&[0, 0, 1, 0x41]), ts, Loss::default());
        }
        assert_eq!(d.dropped(), 0);
        d.push(Bytes::from_static(&[0, 0, 1, 0x41]), 99, Loss::default());
        assert_eq!(d.dropped(), VIDEO_QUEUE as u64);
        assert!(d.wants_keyframe());
        let q = d.shared.queue();
        assert_eq!(q.jobs.len(), 1);
        assert!(q.jobs[0].discontinuity);
        assert_eq!(q.jobs[0].rtp_timestamp, 99);
    }

    #[test]
    fn vp8_gets_no_decoder() {
        let sink: Arc<dyn DecodedSink> = Arc::new(Collect::default());
        let slot: Arc<DecodedSlot> = Arc::new(RwLock::new(Some(sink)));
        let user = UserId::new("u").unwrap();
        assert!(TrackDecoder::start(&user, Codec::Vp8, slot.clone()).is_none());
        let mut t = TrackDecoding::new(user, Codec::Vp8);
        for ts in 0..3 {
            t.feed(
                &slot,
                Bytes::from_static(&[0x10, 0, 0]),
                ts,
                Loss::default(),
            );
        }
        assert!(t.decoder.is_none() && t.told_undecoded);
        assert!(!t.wants_keyframe(), "no key frames asked for VP8");
    }

    #[test]
    fn decoders_start_with_a_sink_and_stop_without() {
        let slot: Arc<DecodedSlot> = Arc::new(RwLock::new(None));
        let user = UserId::new("u").unwrap();
        let mut t = TrackDecoding::new(user, Codec::Opus);
        let packet = Bytes::from(opus_packets(1).remove(0));
        t.feed(&slot, packet.clone(), 0, Loss::default());
        assert!(t.decoder.is_none(), "no sink, no decoder");
        let sink = Arc::new(Collect::default());
        *slot.write().unwrap() = Some(sink.clone());
        t.feed(&slot, packet.clone(), 960, Loss::default());
        let shared = t.decoder.as_ref().unwrap().shared.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.audio.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "nothing decoded");
            std::thread::sleep(Duration::from_millis(5));
        }
        *slot.write().unwrap() = None;
        t.feed(&slot, packet, 1920, Loss::default());
        assert!(t.decoder.is_none());
        while !shared.finished.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the thread did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!shared.unusable.load(Ordering::Acquire));
        assert_eq!(sink.audio.lock().unwrap().len(), 1);
    }
}
