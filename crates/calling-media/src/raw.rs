//! Raw media the app captures itself: video frames in I420 (or RGBA, BGRA,
//! NV12), 48 kHz PCM audio, and the handles that carry them into a call.
//!
//! A [`FrameInput`] is a cheap, cloneable handle the app keeps for as long
//! as it likes: a session's source attaches to it while a call sends that
//! kind of media, and [`FrameInput::push`] hands frames to whichever source
//! is attached. Between calls (or with the camera closed) nothing is
//! attached and a push says [`PushError::NotSending`], so a capture loop can
//! run for the life of the app.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use crate::types::EncodedFrame;

/// Audio sample rate of raw PCM in and decoded PCM out.
pub const SAMPLE_RATE: u32 = 48_000;

/// Largest width or height of a raw video frame we take.
pub const MAX_DIMENSION: u32 = 4096;

/// Most frames per second sent from the app's raw pictures
/// ([`RawVideoInput`]): a 30 fps camera is sent at 30 fps, a 60 fps one has
/// every other frame skipped (the app's own encoded frames go as they
/// come). The generated test pattern runs at its profile's
/// [`VideoQuality::frame_rate`](crate::VideoQuality::frame_rate).
pub const MAX_FRAME_RATE: u32 = 30;

/// How the bytes of a [`VideoFrame`] are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PixelFormat {
    /// Planar 4:2:0: the Y plane, then U, then V (each chroma plane
    /// `ceil(w/2) x ceil(h/2)`).
    I420,
    /// Semi-planar 4:2:0: the Y plane, then interleaved U/V pairs.
    Nv12,
    /// Packed 8-bit red, green, blue, alpha.
    Rgba,
    /// Packed 8-bit blue, green, red, alpha.
    Bgra,
}

impl PixelFormat {
    /// The planes of a `width` x `height` frame: (bytes per row, rows) each.
    pub fn planes(self, width: u32, height: u32) -> Vec<(usize, usize)> {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match self {
            PixelFormat::I420 => vec![(w, h), (cw, ch), (cw, ch)],
            PixelFormat::Nv12 => vec![(w, h), (cw * 2, ch)],
            PixelFormat::Rgba | PixelFormat::Bgra => vec![(w * 4, h)],
        }
    }

    /// Bytes of a tightly packed `width` x `height` frame.
    pub fn frame_len(self, width: u32, height: u32) -> usize {
        self.planes(width, height).iter().map(|(r, n)| r * n).sum()
    }
}

/// Why a raw frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Width or height is zero or above [`MAX_DIMENSION`].
    #[error("frame size {width}x{height} is outside 1..={MAX_DIMENSION}")]
    BadSize {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
    },
    /// The buffer does not hold the frame the format and size describe.
    #[error("{format:?} {width}x{height} needs {needed} bytes, got {got}")]
    BadLength {
        /// The format.
        format: PixelFormat,
        /// The width.
        width: u32,
        /// The height.
        height: u32,
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// Plane count, a stride shorter than a row, or a plane shorter than
    /// its stride times its rows.
    #[error("plane {plane}: {reason}")]
    BadPlane {
        /// Which plane (0 = Y or packed).
        plane: usize,
        /// What is wrong.
        reason: String,
    },
    /// Audio: a channel count other than 1 or 2.
    #[error("{0} audio channels; 1 or 2 are supported")]
    BadChannels(u16),
    /// Audio: the sample count is not a multiple of the channel count.
    #[error("{samples} samples do not split into {channels} channels")]
    Ragged {
        /// Samples given.
        samples: usize,
        /// Channels given.
        channels: u16,
    },
    /// Audio: a float sample that is NaN or infinite.
    #[error("audio sample {0} is not finite")]
    NotFinite(usize),
}

/// One raw video frame, tightly packed (see [`PixelFormat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    format: PixelFormat,
    width: u32,
    height: u32,
    data: Bytes,
    /// When the frame was captured, on any clock that only moves forward
    /// (only differences are used: they become RTP timestamps).
    pub timestamp: Duration,
}

fn check_size(width: u32, height: u32) -> Result<(), FrameError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(FrameError::BadSize { width, height });
    }
    Ok(())
}

impl VideoFrame {
    /// A frame from a tightly packed buffer.
    ///
    /// # Errors
    ///
    /// [`FrameError::BadSize`] or [`FrameError::BadLength`].
    pub fn new(
        format: PixelFormat,
        width: u32,
        height: u32,
        data: impl Into<Bytes>,
        timestamp: Duration,
    ) -> Result<Self, FrameError> {
        check_size(width, height)?;
        let data = data.into();
        let needed = format.frame_len(width, height);
        if data.len() != needed {
            return Err(FrameError::BadLength {
                format,
                width,
                height,
                needed,
                got: data.len(),
            });
        }
        Ok(VideoFrame {
            format,
            width,
            height,
            data,
            timestamp,
        })
    }

    /// A frame copied from planes with their strides (bytes from one row's
    /// start to the next), as cameras and C callers hand them over. Planes
    /// in [`PixelFormat`] order.
    ///
    /// # Errors
    ///
    /// [`FrameError::BadSize`] or [`FrameError::BadPlane`].
    pub fn from_planes(
        format: PixelFormat,
        width: u32,
        height: u32,
        planes: &[(&[u8], usize)],
        timestamp: Duration,
    ) -> Result<Self, FrameError> {
        check_size(width, height)?;
        let layout = format.planes(width, height);
        if planes.len() != layout.len() {
            return Err(FrameError::BadPlane {
                plane: planes.len().min(layout.len()),
                reason: format!(
                    "{format:?} has {} planes, got {}",
                    layout.len(),
                    planes.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(format.frame_len(width, height));
        for (i, (&(data, stride), &(row, rows))) in planes.iter().zip(&layout).enumerate() {
            if stride < row {
                return Err(FrameError::BadPlane {
                    plane: i,
                    reason: format!("stride {stride} is shorter than a row of {row} bytes"),
                });
            }
            let needed = stride * (rows - 1) + row;
            if data.len() < needed {
                return Err(FrameError::BadPlane {
                    plane: i,
                    reason: format!("{} bytes, {needed} needed", data.len()),
                });
            }
            for r in 0..rows {
                out.extend_from_slice(&data[r * stride..r * stride + row]);
            }
        }
        Ok(VideoFrame {
            format,
            width,
            height,
            data: Bytes::from(out),
            timestamp,
        })
    }

    /// The pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The packed bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

/// Interleaved PCM samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// Signed 16-bit.
    I16(Vec<i16>),
    /// 32-bit float, -1.0..=1.0 (louder is clipped).
    F32(Vec<f32>),
}

impl Samples {
    /// Number of samples over all channels.
    pub fn len(&self) -> usize {
        match self {
            Samples::I16(s) => s.len(),
            Samples::F32(s) => s.len(),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A chunk of 48 kHz PCM audio of any length.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    samples: Samples,
    channels: u16,
}

impl AudioFrame {
    /// A chunk of `channels` (1 or 2) interleaved channels.
    ///
    /// # Errors
    ///
    /// [`FrameError::BadChannels`], [`FrameError::Ragged`] or
    /// [`FrameError::NotFinite`].
    pub fn new(samples: Samples, channels: u16) -> Result<Self, FrameError> {
        if !(1..=2).contains(&channels) {
            return Err(FrameError::BadChannels(channels));
        }
        if samples.len() % usize::from(channels) != 0 {
            return Err(FrameError::Ragged {
                samples: samples.len(),
                channels,
            });
        }
        if let Samples::F32(s) = &samples {
            if let Some(i) = s.iter().position(|x| !x.is_finite()) {
                return Err(FrameError::NotFinite(i));
            }
        }
        Ok(AudioFrame { samples, channels })
    }

    /// Mono 16-bit PCM.
    pub fn mono_i16(samples: Vec<i16>) -> Self {
        AudioFrame {
            samples: Samples::I16(samples),
            channels: 1,
        }
    }

    /// The samples.
    pub fn samples(&self) -> &Samples {
        &self.samples
    }

    /// 1 or 2.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels)
    }

    /// How long the chunk plays.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.frames() as f64 / f64::from(SAMPLE_RATE))
    }

    /// The chunk mixed down to mono 16-bit PCM.
    pub fn to_mono_i16(&self) -> Vec<i16> {
        let ch = usize::from(self.channels);
        let f = |x: f32| (x.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        match &self.samples {
            Samples::I16(s) if ch == 1 => s.clone(),
            Samples::I16(s) => s
                .chunks_exact(ch)
                .map(|c| ((i32::from(c[0]) + i32::from(c[1])) / 2) as i16)
                .collect(),
            Samples::F32(s) if ch == 1 => s.iter().map(|&x| f(x)).collect(),
            Samples::F32(s) => s.chunks_exact(ch).map(|c| f((c[0] + c[1]) / 2.0)).collect(),
        }
    }
}

/// Why a pushed frame did not go into the call. The frame is dropped in
/// every case; none of them harms the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// No source takes frames from this input now: no call, the camera is
    /// closed, or the call uses another input.
    #[error("no call is taking frames from this input")]
    NotSending,
    /// The encoder is behind and its queue is full.
    #[error("the encoder's queue is full; frame dropped")]
    Full,
    /// The frame is malformed.
    #[error(transparent)]
    Invalid(#[from] FrameError),
}

/// Counters of a [`FrameInput`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Frames handed to a source.
    pub accepted: u64,
    /// Frames dropped because the source's queue was full.
    pub dropped_full: u64,
    /// Frames dropped because no source was attached.
    pub dropped_idle: u64,
}

/// The attached source's queue, with the number of its attachment.
type Attached<T> = Option<(u64, std_mpsc::SyncSender<T>)>;

#[derive(Debug)]
struct Slot<T> {
    tx: Mutex<Attached<T>>,
    /// Attachments so far: tells one from the next, so that a source that
    /// stops does not detach the one that replaced it.
    attachments: AtomicU64,
    accepted: AtomicU64,
    dropped_full: AtomicU64,
    dropped_idle: AtomicU64,
}

/// A handle the app pushes frames of one kind through; see the module docs.
/// Clones share the input.
#[derive(Debug)]
pub struct FrameInput<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Clone for FrameInput<T> {
    fn clone(&self) -> Self {
        FrameInput {
            slot: self.slot.clone(),
        }
    }
}

impl<T> Default for FrameInput<T> {
    fn default() -> Self {
        FrameInput {
            slot: Arc::new(Slot {
                tx: Mutex::new(None),
                attachments: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                dropped_full: AtomicU64::new(0),
                dropped_idle: AtomicU64::new(0),
            }),
        }
    }
}

impl<T> PartialEq for FrameInput<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.slot, &other.slot)
    }
}

impl<T> FrameInput<T> {
    /// A new input with nothing attached.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands `frame` to the attached source without waiting.
    ///
    /// # Errors
    ///
    /// [`PushError::NotSending`] or [`PushError::Full`]; the frame is
    /// dropped.
    pub fn push(&self, frame: T) -> Result<(), PushError> {
        let guard = self.slot.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((_, tx)) = guard.as_ref() else {
            self.slot.dropped_idle.fetch_add(1, Ordering::Relaxed);
            return Err(PushError::NotSending);
        };
        match tx.try_send(frame) {
            Ok(()) => {
                self.slot.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(std_mpsc::TrySendError::Full(_)) => {
                self.slot.dropped_full.fetch_add(1, Ordering::Relaxed);
                Err(PushError::Full)
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => {
                self.slot.dropped_idle.fetch_add(1, Ordering::Relaxed);
                Err(PushError::NotSending)
            }
        }
    }

    /// Whether a source takes frames now.
    pub fn is_attached(&self) -> bool {
        let guard = self.slot.tx.lock().unwrap_or_else(PoisonError::into_inner);
        guard.is_some()
    }

    /// The counters so far.
    pub fn stats(&self) -> InputStats {
        InputStats {
            accepted: self.slot.accepted.load(Ordering::Relaxed),
            dropped_full: self.slot.dropped_full.load(Ordering::Relaxed),
            dropped_idle: self.slot.dropped_idle.load(Ordering::Relaxed),
        }
    }

    /// Attaches a new source with a queue of `capacity` frames, detaching
    /// any earlier one (its receiver sees the channel close). Dropping the
    /// returned [`Attachment`] detaches this source, and only this one.
    pub(crate) fn attach(&self, capacity: usize) -> (std_mpsc::Receiver<T>, Attachment<T>) {
        let (tx, rx) = std_mpsc::sync_channel(capacity.max(1));
        let mut guard = self.slot.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let number = self.slot.attachments.fetch_add(1, Ordering::Relaxed) + 1;
        *guard = Some((number, tx));
        let attachment = Attachment {
            input: self.clone(),
            number,
        };
        (rx, attachment)
    }
}

/// One source's hold on a [`FrameInput`]: dropping it detaches that source
/// unless another has attached since.
#[derive(Debug)]
pub(crate) struct Attachment<T> {
    input: FrameInput<T>,
    number: u64,
}

impl<T> Drop for Attachment<T> {
    fn drop(&mut self) {
        let mut guard = self
            .input
            .slot
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if guard.as_ref().is_some_and(|(n, _)| *n == self.number) {
            *guard = None;
        }
    }
}

/// Raw video in: [`VideoFrame`]s, encoded by the session.
pub type RawVideoInput = FrameInput<VideoFrame>;
/// Raw audio in: [`AudioFrame`]s, encoded by the session.
pub type RawAudioInput = FrameInput<AudioFrame>;
/// Frames the app encodes itself (H.264 / VP8 / Opus [`EncodedFrame`]s).
pub type EncodedInput = FrameInput<EncodedFrame>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_check_their_sizes() {
        assert!(VideoFrame::new(PixelFormat::I420, 4, 2, vec![0; 12], Duration::ZERO).is_ok());
        assert_eq!(PixelFormat::I420.frame_len(3, 3), 9 + 4 + 4);
        assert_eq!(PixelFormat::Nv12.frame_len(4, 4), 16 + 8);
        assert!(matches!(
            VideoFrame::new(PixelFormat::Rgba, 2, 2, vec![0; 15], Duration::ZERO),
            Err(FrameError::BadLength { needed: 16, .. })
        ));
        assert!(matches!(
            VideoFrame::new(PixelFormat::I420, 0, 2, vec![], Duration::ZERO),
            Err(FrameError::BadSize { .. })
        ));
    }

    #[test]
    fn planes_with_strides_are_packed() {
        let y = [1, 2, 9, 9, 3, 4, 9, 9];
        let (u, v) = ([5u8, 9], [6u8]);
        let f = VideoFrame::from_planes(
            PixelFormat::I420,
            2,
            2,
            &[(&y, 4), (&u, 2), (&v, 1)],
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(&f.data()[..], &[1, 2, 3, 4, 5, 6]);
        let short = VideoFrame::from_planes(
            PixelFormat::I420,
            2,
            2,
            &[(&y[..5], 4), (&u, 2), (&v, 1)],
            Duration::ZERO,
        );
        assert!(matches!(short, Err(FrameError::BadPlane { plane: 0, .. })));
    }

    #[test]
    fn audio_frames_check_and_mix_down() {
        assert_eq!(
            AudioFrame::new(Samples::I16(vec![0; 3]), 2),
            Err(FrameError::Ragged {
                samples: 3,
                channels: 2
            })
        );
        assert_eq!(
            AudioFrame::new(Samples::I16(vec![]), 3),
            Err(FrameError::BadChannels(3))
        );
        assert_eq!(
            AudioFrame::new(Samples::F32(vec![0.0, f32::NAN]), 1),
            Err(FrameError::NotFinite(1))
        );
        let st = AudioFrame::new(Samples::I16(vec![100, 300, -50, -150]), 2).unwrap();
        assert_eq!(st.to_mono_i16(), vec![200, -100]);
        assert_eq!(st.frames(), 2);
        let f = AudioFrame::new(Samples::F32(vec![2.0, -0.5]), 1).unwrap();
        assert_eq!(f.to_mono_i16(), vec![32767, -16384]);
    }

    #[test]
    fn inputs_report_idle_full_and_accepted() {
        let input: FrameInput<u32> = FrameInput::new();
        assert_eq!(input.push(1), Err(PushError::NotSending));
        let (rx, attachment) = input.attach(1);
        assert!(input.is_attached());
        assert_eq!(input.push(2), Ok(()));
        assert_eq!(input.push(3), Err(PushError::Full));
        assert_eq!(rx.try_recv(), Ok(2));
        drop(rx);
        assert_eq!(input.push(4), Err(PushError::NotSending));
        drop(attachment);
        assert!(!input.is_attached());
        assert_eq!(
            input.stats(),
            InputStats {
                accepted: 1,
                dropped_full: 1,
                dropped_idle: 2
            }
        );
        assert_eq!(input.clone(), input);
        assert_ne!(FrameInput::<u32>::new(), input);
    }

    #[test]
    fn a_stopped_source_detaches_only_itself() {
        let input: FrameInput<u32> = FrameInput::new();
        let (_old_rx, old) = input.attach(4);
        let (new_rx, new) = input.attach(4);
        // The earlier source stops after the new one attached: the new one
        // keeps its frames.
        drop(old);
        assert!(input.is_attached());
        assert_eq!(input.push(7), Ok(()));
        assert_eq!(new_rx.try_recv(), Ok(7));
        drop(new);
        assert!(!input.is_attached());
        assert_eq!(input.push(8), Err(PushError::NotSending));
        // The handle outlives its sources: a later one attaches again.
        let (rx, _again) = input.attach(1);
        assert_eq!(input.push(9), Ok(()));
        assert_eq!(rx.try_recv(), Ok(9));
    }
}
