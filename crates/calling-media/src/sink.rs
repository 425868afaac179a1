//! Where remote frames go.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use calling_core::UserId;
use tokio::sync::mpsc;

use crate::error::MediaError;
use crate::files::Recording;
use crate::types::EncodedFrame;

/// Receives every remote frame of a session, per user.
///
/// Called from the task that polls the remote track, once per frame: it must
/// return quickly and never block (hand the frame to a channel or a buffered
/// file). Holding the task up makes webrtc-rs drop packets once the track's
/// 256-entry queue fills.
pub trait FrameSink: Send + Sync + 'static {
    /// One complete frame from `user`.
    fn on_frame(&self, user: &UserId, frame: &EncodedFrame);
}

/// A remote frame and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFrame {
    /// The remote user.
    pub user: UserId,
    /// The frame.
    pub frame: EncodedFrame,
}

/// A [`FrameSink`] that forwards frames into a bounded channel, dropping
/// (and counting) frames when the reader falls behind.
#[derive(Debug)]
pub struct ChannelSink {
    tx: mpsc::Sender<RemoteFrame>,
    dropped: AtomicU64,
}

impl ChannelSink {
    /// A sink and the receiver of its frames; `capacity` frames are buffered.
    pub fn new(capacity: usize) -> (std::sync::Arc<ChannelSink>, mpsc::Receiver<RemoteFrame>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            std::sync::Arc::new(ChannelSink {
                tx,
                dropped: AtomicU64::new(0),
            }),
            rx,
        )
    }

    /// Frames dropped because the channel was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl FrameSink for ChannelSink {
    fn on_frame(&self, user: &UserId, frame: &EncodedFrame) {
        let item = RemoteFrame {
            user: user.clone(),
            frame: frame.clone(),
        };
        if self.tx.try_send(item).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A [`FrameSink`] that records each user into files in one directory:
/// `<user>.ogg` (Opus), `<user>.h264` (Annex B) or `<user>.ivf` (VP8).
/// Writes are buffered; call [`RecorderSink::finish`] to close the files.
pub struct RecorderSink {
    dir: PathBuf,
    recordings: Mutex<HashMap<UserId, Recording>>,
    errors: AtomicU64,
}

impl std::fmt::Debug for RecorderSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderSink")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RecorderSink {
    /// Records into `dir`, which must exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecorderSink {
            dir: dir.into(),
            recordings: Mutex::new(HashMap::new()),
            errors: AtomicU64::new(0),
        }
    }

    /// Frames that could not be written.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Finishes every file (Ogg end-of-stream page, IVF frame count).
    ///
    /// # Errors
    ///
    /// The first file error met; the other files are still finished.
    pub fn finish(&self) -> Result<(), MediaError> {
        let all: Vec<Recording> = match self.recordings.lock() {
            Ok(mut m) => m.drain().map(|(_, r)| r).collect(),
            Err(_) => Vec::new(),
        };
        let mut first = Ok(());
        for r in all {
            if let Err(e) = r.finish() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl FrameSink for RecorderSink {
    fn on_frame(&self, user: &UserId, frame: &EncodedFrame) {
        let Ok(mut map) = self.recordings.lock() else {
            return;
        };
        let recording = map
            .entry(user.clone())
            .or_insert_with(|| Recording::new(self.dir.clone(), user));
        if let Err(e) = recording.write(frame) {
            tracing::warn!(%user, error = %e, "recording write failed");
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
