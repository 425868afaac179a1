//! Audio sources: the generated tone and the app's raw PCM, both encoded
//! as 20 ms mono Opus frames carrying the RFC 6464 level of their samples.

use std::f32::consts::TAU;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opus_rs::{Application, OpusEncoder};
use tokio::sync::mpsc;

use super::{CHANNEL, POLL, Running, fail, spawn};
use crate::error::MediaError;
use crate::frame::audio_level_i16;
use crate::raw::{RawAudioInput, SAMPLE_RATE};
use crate::types::{Codec, EncodedFrame};

/// Samples in one Opus frame: 20 ms at 48 kHz.
const OPUS_FRAME: usize = 960;
const FRAME_TIME: Duration = Duration::from_millis(20);

/// Raw audio chunks queued for the encoder: over a second of the 10 ms
/// chunks capture devices deliver, so that a scheduling hiccup loses
/// nothing (lost audio is heard, a late frame is not).
pub(crate) const RAW_AUDIO_QUEUE: usize = 128;

fn opus_encoder() -> Result<OpusEncoder, MediaError> {
    let mut encoder = OpusEncoder::new(SAMPLE_RATE as i32, 1, Application::Voip)
        .map_err(|e| MediaError::Encoder(e.to_string()))?;
    encoder.bitrate_bps = 32_000;
    Ok(encoder)
}

/// Encodes one 20 ms frame of mono PCM.
struct Opus {
    encoder: OpusEncoder,
    out: Vec<u8>,
}

impl Opus {
    fn new() -> Result<Self, MediaError> {
        Ok(Opus {
            encoder: opus_encoder()?,
            out: vec![0u8; 1500],
        })
    }

    fn encode(&mut self, pcm: &[i16]) -> Result<EncodedFrame, String> {
        let len = self
            .encoder
            .encode_i16(pcm, OPUS_FRAME, &mut self.out)
            .map_err(|e| e.to_string())?;
        let mut frame = EncodedFrame::new(
            Codec::Opus,
            Bytes::copy_from_slice(&self.out[..len]),
            FRAME_TIME,
        );
        frame.audio_level = Some(audio_level_i16(pcm));
        Ok(frame)
    }
}

pub(super) fn start_tone(
    frequency_hz: f32,
    amplitude: f32,
    stop: Arc<AtomicBool>,
) -> Result<Running, MediaError> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let mut opus = Opus::new()?;
    let flag = stop.clone();
    spawn("calling-tone", move || {
        tone_loop(
            &mut opus,
            frequency_hz,
            amplitude.clamp(0.0, 1.0),
            &tx,
            &flag,
        )
    })?;
    Ok(Running::new(rx, stop))
}

fn tone_loop(
    opus: &mut Opus,
    frequency_hz: f32,
    amplitude: f32,
    tx: &mpsc::Sender<EncodedFrame>,
    stop: &AtomicBool,
) {
    let step = TAU * frequency_hz / SAMPLE_RATE as f32;
    let mut phase = 0.0f32;
    let mut pcm = vec![0i16; OPUS_FRAME];
    let mut deadline = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for s in pcm.iter_mut() {
            *s = (phase.sin() * amplitude * 32767.0) as i16;
            phase = (phase + step) % TAU;
        }
        let frame = match opus.encode(&pcm) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = e, "opus encode failed; tone source stops");
                return;
            }
        };
        if tx.blocking_send(frame).is_err() {
            return;
        }
        deadline += FRAME_TIME;
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        } else if now - deadline > Duration::from_millis(200) {
            deadline = now;
        }
    }
}

/// The app's PCM: chunks of any length, mono or stereo (mixed down to
/// mono), encoded as they complete 20 ms. Paced by the app's pushes, as a
/// capture device delivers in real time.
pub(super) fn start_raw(
    input: &RawAudioInput,
    stop: Arc<AtomicBool>,
) -> Result<Running, MediaError> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let mut opus = Opus::new()?;
    let (chunks, attachment) = input.attach(RAW_AUDIO_QUEUE);
    let running = Running::new(rx, stop.clone());
    let failure = running.failure.clone();
    let flag = stop;
    spawn("calling-mic", move || {
        let mut pending: Vec<i16> = Vec::with_capacity(OPUS_FRAME * 4);
        while !flag.load(Ordering::Relaxed) {
            let chunk = match chunks.recv_timeout(POLL) {
                Ok(c) => c,
                Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            };
            pending.extend(chunk.to_mono_i16());
            let mut used = 0;
            while pending.len() - used >= OPUS_FRAME {
                let frame = match opus.encode(&pending[used..used + OPUS_FRAME]) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = e, "opus encode failed; audio source stops");
                        fail(&failure, MediaError::Encoder(e));
                        return;
                    }
                };
                used += OPUS_FRAME;
                if tx.blocking_send(frame).is_err() {
                    return;
                }
            }
            pending.drain(..used);
        }
    })?;
    running.hold(attachment);
    Ok(running)
}
