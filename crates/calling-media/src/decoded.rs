//! Decoded media out: I420 pictures and 48 kHz PCM per remote user, to a
//! [`DecodedSink`] or, through [`DecodedChannel`], an async stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use calling_core::UserId;
use tokio::sync::mpsc;

/// One decoded picture in I420: the Y plane (`width` x `height`), then U,
/// then V (`ceil(width/2)` x `ceil(height/2)` each), tightly packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedVideoFrame {
    /// Width in pixels. May change from one frame to the next (the sender
    /// adapted its resolution).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The three planes, packed.
    pub data: Bytes,
    /// The RTP timestamp of the frame (90 kHz clock).
    pub rtp_timestamp: u32,
    /// Media time since the first frame of this track, from RTP
    /// timestamps: the sender's capture timing.
    pub timestamp: Duration,
    /// When the decoder handed the frame out.
    pub decoded_at: Instant,
}

impl DecodedVideoFrame {
    /// Width of each chroma plane.
    pub fn chroma_width(&self) -> usize {
        (self.width as usize).div_ceil(2)
    }

    /// Height of each chroma plane.
    pub fn chroma_height(&self) -> usize {
        (self.height as usize).div_ceil(2)
    }

    fn y_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    fn c_len(&self) -> usize {
        self.chroma_width() * self.chroma_height()
    }

    /// The Y plane (stride `width`).
    pub fn y(&self) -> &[u8] {
        self.data.get(..self.y_len()).unwrap_or_default()
    }

    /// The U plane (stride [`Self::chroma_width`]).
    pub fn u(&self) -> &[u8] {
        let (y, c) = (self.y_len(), self.c_len());
        self.data.get(y..y + c).unwrap_or_default()
    }

    /// The V plane (stride [`Self::chroma_width`]).
    pub fn v(&self) -> &[u8] {
        let (y, c) = (self.y_len(), self.c_len());
        self.data.get(y + c..y + 2 * c).unwrap_or_default()
    }
}

/// A decoded chunk of audio: interleaved 32-bit float PCM at
/// [`crate::raw::SAMPLE_RATE`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudioFrame {
    /// Interleaved samples, -1.0..=1.0.
    pub samples: Vec<f32>,
    /// Channels (1 or 2).
    pub channels: u16,
    /// The RTP timestamp of the packet (48 kHz clock).
    pub rtp_timestamp: u32,
    /// Media time since the first frame of this track.
    pub timestamp: Duration,
    /// Whether this chunk was concealed (made up for a lost packet) rather
    /// than decoded from one.
    pub concealed: bool,
}

impl DecodedAudioFrame {
    /// The samples as signed 16-bit PCM.
    pub fn to_i16(&self) -> Vec<i16> {
        self.samples
            .iter()
            .map(|&x| (x.clamp(-1.0, 1.0) * 32767.0).round() as i16)
            .collect()
    }
}

/// Receives decoded media per remote user.
///
/// Called from the session's decoder threads, one per remote track: a slow
/// sink holds that track's decoding up (frames queue, then the oldest
/// encoded frames are dropped and a key frame is asked for), never the
/// network. Both methods do nothing by default.
pub trait DecodedSink: Send + Sync + 'static {
    /// One decoded picture from `user`.
    fn on_video(&self, user: &UserId, frame: &DecodedVideoFrame) {
        let _ = (user, frame);
    }

    /// One decoded chunk of audio from `user`.
    fn on_audio(&self, user: &UserId, frame: &DecodedAudioFrame) {
        let _ = (user, frame);
    }
}

/// A decoded frame and who sent it, as [`DecodedChannel`] delivers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A picture.
    Video {
        /// The remote user.
        user: UserId,
        /// The picture.
        frame: DecodedVideoFrame,
    },
    /// Audio.
    Audio {
        /// The remote user.
        user: UserId,
        /// The samples.
        frame: DecodedAudioFrame,
    },
}

impl Decoded {
    /// Who sent it.
    pub fn user(&self) -> &UserId {
        match self {
            Decoded::Video { user, .. } | Decoded::Audio { user, .. } => user,
        }
    }
}

/// A [`DecodedSink`] that forwards into a bounded channel: an async stream
/// of [`Decoded`]. Frames that do not fit are dropped and counted.
#[derive(Debug)]
pub struct DecodedChannel {
    tx: mpsc::Sender<Decoded>,
    dropped: AtomicU64,
}

impl DecodedChannel {
    /// A sink and its receiver; `capacity` frames are buffered.
    pub fn new(capacity: usize) -> (Arc<DecodedChannel>, mpsc::Receiver<Decoded>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Arc::new(DecodedChannel {
                tx,
                dropped: AtomicU64::new(0),
            }),
            rx,
        )
    }

    /// Frames dropped because the reader fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, item: Decoded) {
        if self.tx.try_send(item).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl DecodedSink for DecodedChannel {
    fn on_video(&self, user: &UserId, frame: &DecodedVideoFrame) {
        self.send(Decoded::Video {
            user: user.clone(),
            frame: frame.clone(),
        });
    }

    fn on_audio(&self, user: &UserId, frame: &DecodedAudioFrame) {
        self.send(Decoded::Audio {
            user: user.clone(),
            frame: frame.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_split_odd_sizes() {
        let f = DecodedVideoFrame {
            width: 3,
            height: 3,
            data: Bytes::from((0..17u8).collect::<Vec<_>>()),
            rtp_timestamp: 0,
            timestamp: Duration::ZERO,
            decoded_at: Instant::now(),
        };
        assert_eq!(f.y().len(), 9);
        assert_eq!(f.u(), &[9, 10, 11, 12]);
        assert_eq!(f.v(), &[13, 14, 15, 16]);
    }

    #[tokio::test]
    async fn channel_delivers_and_counts_drops() {
        let (sink, mut rx) = DecodedChannel::new(1);
        let user = UserId::new("u").unwrap();
        let a = DecodedAudioFrame {
            samples: vec![0.5, -2.0],
            channels: 1,
            rtp_timestamp: 7,
            timestamp: Duration::ZERO,
            concealed: false,
        };
        assert_eq!(a.to_i16(), vec![16384, -32767]);
        sink.on_audio(&user, &a);
        sink.on_audio(&user, &a);
        assert_eq!(sink.dropped(), 1);
        let got = rx.recv().await.unwrap();
        assert_eq!(got.user(), &user);
        assert_eq!(got, Decoded::Audio { user, frame: a });
    }
}
