//! Files a person can open to see and hear what arrived: decoded pictures
//! as Y4M (raw I420, which ffplay, mpv and VLC play) and decoded audio as
//! 16-bit WAV, written by [`Y4mWriter`] and [`WavWriter`], or per remote
//! user by the [`DecodedRecorder`] sink.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use calling_core::UserId;

use crate::decoded::{DecodedAudioFrame, DecodedSink, DecodedVideoFrame};
use crate::raw::SAMPLE_RATE;

/// Why a decoded frame could not be written to a file.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The file could not be created or written.
    #[error("{path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A picture of another size than the file's (a Y4M file has one size).
    #[error("{path:?} holds {expected:?} pictures, not {got:?}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The file's width and height.
        expected: (u32, u32),
        /// The picture's.
        got: (u32, u32),
    },
    /// A picture whose data is not the I420 its size needs.
    #[error("{path:?}: a {width}x{height} picture needs {needed} bytes, it has {got}")]
    BadPicture {
        /// The file.
        path: PathBuf,
        /// The picture's width.
        width: u32,
        /// The picture's height.
        height: u32,
        /// Bytes its size needs.
        needed: usize,
        /// Bytes it has.
        got: usize,
    },
    /// Audio with another channel count than the file's.
    #[error("{path:?} holds {expected}-channel audio, not {got}")]
    ChannelMismatch {
        /// The file.
        path: PathBuf,
        /// The file's channels.
        expected: u16,
        /// The frame's.
        got: u16,
    },
    /// A size or setting the format cannot hold (zero or huge dimensions,
    /// no channels).
    #[error("{path:?}: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What the format refused.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WriterError + '_ {
    move |source| WriterError::Io {
        path: path.to_owned(),
        source,
    }
}

fn y4m_error(path: &Path, e: y4m::Error) -> WriterError {
    match e {
        y4m::Error::IoError(source) => WriterError::Io {
            path: path.to_owned(),
            source,
        },
        other => WriterError::Unsupported {
            path: path.to_owned(),
            reason: format!("{other:?}"),
        },
    }
}

fn wav_error(path: &Path, e: hound::Error) -> WriterError {
    match e {
        hound::Error::IoError(source) => WriterError::Io {
            path: path.to_owned(),
            source,
        },
        other => WriterError::Unsupported {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// The frame rate written when the stream does not tell one.
pub const DEFAULT_FRAME_RATE: u32 = 30;

/// Writes decoded pictures of one size into a Y4M file (`C420jpeg`, 8-bit
/// I420 at a constant frame rate).
///
/// Writes go straight to the file, unbuffered: a Y4M frame is a few large
/// planes, and so every error shows at the write that met it.
pub struct Y4mWriter {
    path: PathBuf,
    encoder: y4m::Encoder<File>,
    width: u32,
    height: u32,
    frames: u64,
}

impl std::fmt::Debug for Y4mWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mWriter")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl Y4mWriter {
    /// Creates (or truncates) `path` and writes the header of a
    /// `width` x `height` stream at `frame_rate` frames per second (0: the
    /// [`DEFAULT_FRAME_RATE`]).
    ///
    /// # Errors
    ///
    /// [`WriterError::Unsupported`] for a zero size, [`WriterError::Io`] if
    /// the file cannot be created or written.
    pub fn create(
        path: impl Into<PathBuf>,
        width: u32,
        height: u32,
        frame_rate: u32,
    ) -> Result<Self, WriterError> {
        let path = path.into();
        if width == 0 || height == 0 {
            return Err(WriterError::Unsupported {
                path,
                reason: format!("a {width}x{height} picture"),
            });
        }
        let rate = if frame_rate == 0 {
            DEFAULT_FRAME_RATE
        } else {
            frame_rate
        };
        let file = File::create(&path).map_err(io_error(&path))?;
        let encoder = y4m::encode(
            width as usize,
            height as usize,
            y4m::Ratio::new(rate as usize, 1),
        )
        .with_colorspace(y4m::Colorspace::C420jpeg)
        .write_header(file)
        .map_err(|e| y4m_error(&path, e))?;
        Ok(Y4mWriter {
            path,
            encoder,
            width,
            height,
            frames: 0,
        })
    }

    /// Appends one picture, which must have the file's size.
    ///
    /// # Errors
    ///
    /// [`WriterError::SizeMismatch`], [`WriterError::BadPicture`] if its
    /// data is shorter or longer than I420 of its size, or
    /// [`WriterError::Io`].
    pub fn write(&mut self, frame: &DecodedVideoFrame) -> Result<(), WriterError> {
        if (frame.width, frame.height) != (self.width, self.height) {
            return Err(WriterError::SizeMismatch {
                path: self.path.clone(),
                expected: (self.width, self.height),
                got: (frame.width, frame.height),
            });
        }
        let needed = frame.width as usize * frame.height as usize
            + 2 * frame.chroma_width() * frame.chroma_height();
        if frame.data.len() != needed {
            return Err(WriterError::BadPicture {
                path: self.path.clone(),
                width: frame.width,
                height: frame.height,
                needed,
                got: frame.data.len(),
            });
        }
        let planes = y4m::Frame::new([frame.y(), frame.u(), frame.v()], None);
        self.encoder
            .write_frame(&planes)
            .map_err(|e| y4m_error(&self.path, e))?;
        self.frames += 1;
        Ok(())
    }

    /// Pictures written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The file's picture size.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file. Every picture is already written: nothing is
    /// buffered, so this cannot fail in a way a write did not show.
    pub fn finish(self) {}
}

/// Writes decoded audio into a WAV file: 16-bit PCM at 48 kHz.
pub struct WavWriter {
    path: PathBuf,
    writer: hound::WavWriter<BufWriter<File>>,
    channels: u16,
    frames: u64,
}

impl std::fmt::Debug for WavWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavWriter")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// How many frames go between two header updates, so that a file is
/// playable up to about a second ago even if the process dies.
const WAV_FLUSH_EVERY: u64 = 50;

impl WavWriter {
    /// Creates (or truncates) `path` for `channels` channels (1 or 2) at
    /// 48 kHz.
    ///
    /// # Errors
    ///
    /// [`WriterError::Unsupported`] for another channel count,
    /// [`WriterError::Io`] if the file cannot be created.
    pub fn create(path: impl Into<PathBuf>, channels: u16) -> Result<Self, WriterError> {
        let path = path.into();
        if !(1..=2).contains(&channels) {
            return Err(WriterError::Unsupported {
                path,
                reason: format!("{channels} channels"),
            });
        }
        let spec = hound::WavSpec {
            channels,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(&path, spec).map_err(|e| wav_error(&path, e))?;
        Ok(WavWriter {
            path,
            writer,
            channels,
            frames: 0,
        })
    }

    /// Appends one chunk of audio, which must have the file's channels.
    ///
    /// # Errors
    ///
    /// [`WriterError::ChannelMismatch`] or [`WriterError::Io`].
    pub fn write(&mut self, frame: &DecodedAudioFrame) -> Result<(), WriterError> {
        if frame.channels != self.channels {
            return Err(WriterError::ChannelMismatch {
                path: self.path.clone(),
                expected: self.channels,
                got: frame.channels,
            });
        }
        for s in frame.to_i16() {
            self.writer
                .write_sample(s)
                .map_err(|e| wav_error(&self.path, e))?;
        }
        self.frames += 1;
        if self.frames % WAV_FLUSH_EVERY == 0 {
            self.writer.flush().map_err(|e| wav_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Appends `samples` samples per channel of silence (to keep the file
    /// in time across a gap in the stream).
    ///
    /// # Errors
    ///
    /// [`WriterError::Io`].
    pub fn write_silence(&mut self, samples: u64) -> Result<(), WriterError> {
        for _ in 0..samples * u64::from(self.channels) {
            self.writer
                .write_sample(0i16)
                .map_err(|e| wav_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Samples per channel written so far.
    pub fn samples(&self) -> u64 {
        u64::from(self.writer.duration())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the final header and closes the file.
    ///
    /// # Errors
    ///
    /// [`WriterError::Io`].
    pub fn finish(self) -> Result<(), WriterError> {
        let path = self.path;
        self.writer.finalize().map_err(|e| wav_error(&path, e))
    }
}

/// Pictures held back at the start of a Y4M file to learn the stream's
/// frame rate from their timestamps.
const RATE_PROBE: usize = 8;
/// The longest gap in a user's audio filled with silence in the WAV file.
const MAX_SILENCE: Duration = Duration::from_secs(10);

/// A [`DecodedSink`] that records each remote user into files in one
/// directory: `<user>.y4m` for video and `<user>.wav` for audio (16-bit,
/// 48 kHz).
///
/// A Y4M file holds one picture size: when the sender changes resolution,
/// the recording goes on in `<user>-2.y4m`, then `<user>-3.y4m`, and so on.
/// The frame rate in a Y4M header is learnt from the timestamps of the
/// file's first eight pictures, held in memory until then
/// ([`DEFAULT_FRAME_RATE`] if they do not tell); pictures are
/// written one after the other at that rate, without filling gaps. Gaps in
/// the audio (up to 10 s) are filled with silence, so that the WAV file
/// keeps time with the call.
///
/// Frames that cannot be written are counted ([`errors`](Self::errors))
/// and logged; recording never panics. Call [`finish`](Self::finish) to
/// close the files; frames after it are ignored.
pub struct DecodedRecorder {
    dir: PathBuf,
    users: Mutex<HashMap<UserId, Arc<UserFiles>>>,
    errors: AtomicU64,
    /// The first error met, for [`DecodedRecorder::finish`] to return.
    first_error: Mutex<Option<WriterError>>,
    finished: AtomicBool,
}

impl std::fmt::Debug for DecodedRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedRecorder")
            .field("dir", &self.dir)
            .field("errors", &self.errors())
            .finish_non_exhaustive()
    }
}

/// One user's files; video and audio come from different decoder threads,
/// so each has its own lock.
#[derive(Default)]
struct UserFiles {
    video: Mutex<VideoFiles>,
    audio: Mutex<AudioFile>,
}

#[derive(Default)]
struct VideoFiles {
    /// Pictures of the file being started, before its rate is known.
    pending: Vec<DecodedVideoFrame>,
    writer: Option<Y4mWriter>,
    /// Size of the current file (also while its first pictures wait).
    size: Option<(u32, u32)>,
    /// Files started so far.
    segments: u32,
    /// The current file could not be created: its pictures are lost.
    failed: bool,
    /// Every file started, in order.
    paths: Vec<PathBuf>,
}

#[derive(Default)]
struct AudioFile {
    writer: Option<WavWriter>,
    /// The file, once started.
    path: Option<PathBuf>,
    /// Media time of the first frame written.
    start: Option<Duration>,
    failed: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each file's state stays usable after a panic elsewhere: at worst a
    // frame is missing from it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Frames per second from the timestamps of `frames`, if they span time.
///
/// The median gap between pictures decides, not the whole span: a key
/// frame sent out of schedule (at a receiver's request), or a late picture
/// followed at once by the next, leaves short gaps that would otherwise
/// raise the rate.
fn frame_rate_of(frames: &[DecodedVideoFrame]) -> Option<u32> {
    let mut gaps: Vec<Duration> = frames
        .windows(2)
        .filter_map(|w| w[1].timestamp.checked_sub(w[0].timestamp))
        .filter(|gap| !gap.is_zero())
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2].as_secs_f64();
    let fps = (1.0 / median).round();
    (1.0..=240.0).contains(&fps).then_some(fps as u32)
}

impl DecodedRecorder {
    /// Records into `dir`, which must exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DecodedRecorder {
            dir: dir.into(),
            users: Mutex::new(HashMap::new()),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            finished: AtomicBool::new(false),
        }
    }

    /// Frames that could not be written.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Every file started so far (Y4M and WAV), by user.
    pub fn files(&self) -> Vec<PathBuf> {
        let users: Vec<Arc<UserFiles>> = lock(&self.users).values().cloned().collect();
        let mut out = Vec::new();
        for u in users {
            out.extend(lock(&u.video).paths.iter().cloned());
            out.extend(lock(&u.audio).path.iter().cloned());
        }
        out.sort();
        out
    }

    fn user(&self, user: &UserId) -> Arc<UserFiles> {
        lock(&self.users).entry(user.clone()).or_default().clone()
    }

    /// Counts `n` frames lost to `error`, logs it (loudly if it is the
    /// first of its file) and keeps it if it is the first of all.
    fn failed(&self, n: u64, error: WriterError, loud: bool) {
        self.errors.fetch_add(n, Ordering::Relaxed);
        if loud {
            tracing::warn!(%error, "decoded recording: write failed");
        } else {
            tracing::debug!(%error, "decoded recording: write failed");
        }
        lock(&self.first_error).get_or_insert(error);
    }

    /// Creates the current Y4M file of `v` and writes its held-back
    /// pictures.
    fn flush_pending(&self, user: &UserId, v: &mut VideoFiles) {
        if v.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut v.pending);
        if v.writer.is_none() && !v.failed {
            let Some((w, h)) = v.size else { return };
            let name = match v.segments {
                0 | 1 => format!("{user}.y4m"),
                n => format!("{user}-{n}.y4m"),
            };
            let path = self.dir.join(name);
            let rate = frame_rate_of(&pending).unwrap_or(DEFAULT_FRAME_RATE);
            match Y4mWriter::create(&path, w, h, rate) {
                Ok(writer) => {
                    v.paths.push(path);
                    v.writer = Some(writer);
                }
                Err(e) => {
                    v.failed = true;
                    self.failed(pending.len() as u64, e, true);
                    return;
                }
            }
        }
        let Some(writer) = v.writer.as_mut() else {
            self.errors
                .fetch_add(pending.len() as u64, Ordering::Relaxed);
            return;
        };
        for (i, frame) in pending.iter().enumerate() {
            if let Err(e) = writer.write(frame) {
                self.failed(1, e, i == 0);
            }
        }
    }

    /// Ends the current Y4M file of `v`, writing what it held back.
    fn end_video_file(&self, user: &UserId, v: &mut VideoFiles) {
        self.flush_pending(user, v);
        if let Some(w) = v.writer.take() {
            w.finish();
        }
        v.size = None;
        v.failed = false;
    }

    /// Closes every file: the Y4M files get the pictures they held back,
    /// the WAV files their final header. Frames that come later are
    /// ignored.
    ///
    /// # Errors
    ///
    /// The first error met while recording or closing (each is also
    /// counted in [`errors`](Self::errors) and logged); every file is
    /// still closed.
    pub fn finish(&self) -> Result<(), WriterError> {
        self.finished.store(true, Ordering::Release);
        let users: Vec<(UserId, Arc<UserFiles>)> = lock(&self.users)
            .iter()
            .map(|(u, f)| (u.clone(), f.clone()))
            .collect();
        for (user, files) in users {
            self.end_video_file(&user, &mut lock(&files.video));
            if let Some(w) = lock(&files.audio).writer.take() {
                if let Err(e) = w.finish() {
                    self.failed(1, e, true);
                }
            }
        }
        match lock(&self.first_error).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl DecodedSink for DecodedRecorder {
    fn on_video(&self, user: &UserId, frame: &DecodedVideoFrame) {
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        let files = self.user(user);
        let mut v = lock(&files.video);
        let size = (frame.width, frame.height);
        if v.size != Some(size) {
            if v.size.is_some() {
                tracing::debug!(%user, ?size, "resolution changed: a new Y4M file");
            }
            self.end_video_file(user, &mut v);
            v.size = Some(size);
            v.segments += 1;
        }
        if v.failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(w) = v.writer.as_mut() {
            if let Err(e) = w.write(frame) {
                let loud = w.frames() == 0;
                self.failed(1, e, loud);
            }
            return;
        }
        v.pending.push(frame.clone());
        if v.pending.len() >= RATE_PROBE {
            self.flush_pending(user, &mut v);
        }
    }

    fn on_audio(&self, user: &UserId, frame: &DecodedAudioFrame) {
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        let files = self.user(user);
        let mut a = lock(&files.audio);
        if a.failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if a.writer.is_none() {
            let path = self.dir.join(format!("{user}.wav"));
            match WavWriter::create(&path, frame.channels) {
                Ok(w) => {
                    a.path = Some(path);
                    a.writer = Some(w);
                    a.start = Some(frame.timestamp);
                }
                Err(e) => {
                    a.failed = true;
                    self.failed(1, e, true);
                    return;
                }
            }
        }
        let start = a.start.unwrap_or(frame.timestamp);
        let Some(w) = a.writer.as_mut() else { return };
        // Where this frame belongs in the file, by its media time.
        let due = frame.timestamp.saturating_sub(start);
        let written = Duration::from_secs_f64(w.samples() as f64 / f64::from(SAMPLE_RATE));
        let gap = due.saturating_sub(written);
        if gap > Duration::from_millis(20) && gap <= MAX_SILENCE {
            let samples = (gap.as_secs_f64() * f64::from(SAMPLE_RATE)).round() as u64;
            if let Err(e) = w.write_silence(samples) {
                self.failed(1, e, false);
                return;
            }
        }
        if let Err(e) = w.write(frame) {
            let loud = w.samples() == 0;
            self.failed(1, e, loud);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("calling-writers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn picture(w: u32, h: u32, luma: u8, ms: u64) -> DecodedVideoFrame {
        let (cw, ch) = ((w as usize).div_ceil(2), (h as usize).div_ceil(2));
        let mut data = vec![luma; w as usize * h as usize];
        data.extend(std::iter::repeat_n(128u8, 2 * cw * ch));
        DecodedVideoFrame {
            width: w,
            height: h,
            data: Bytes::from(data),
            rtp_timestamp: (ms * 90) as u32,
            timestamp: Duration::from_millis(ms),
            decoded_at: Instant::now(),
        }
    }

    fn audio(value: f32, ms: u64, concealed: bool) -> DecodedAudioFrame {
        DecodedAudioFrame {
            samples: vec![value; 960],
            channels: 1,
            rtp_timestamp: (ms * 48) as u32,
            timestamp: Duration::from_millis(ms),
            concealed,
        }
    }

    /// The header fields and frame count of a Y4M file, parsed by hand so
    /// that the test does not trust the writer's own crate.
    fn parse_y4m(path: &Path) -> (String, usize) {
        let mut bytes = Vec::new();
        File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let header = String::from_utf8(bytes[..nl].to_vec()).unwrap();
        let field = |p: char| {
            header
                .split(' ')
                .find_map(|f| f.strip_prefix(p))
                .unwrap()
                .to_owned()
        };
        let (w, h): (usize, usize) = (field('W').parse().unwrap(), field('H').parse().unwrap());
        let frame_len = 6 + w * h + 2 * w.div_ceil(2) * h.div_ceil(2);
        let body = &bytes[nl + 1..];
        assert_eq!(body.len() % frame_len, 0, "whole frames only");
        for f in body.chunks(frame_len) {
            assert_eq!(&f[..6], b"FRAME\n");
        }
        (header, body.len() / frame_len)
    }

    #[test]
    fn y4m_writer_writes_a_header_and_whole_frames() {
        let d = dir("y4m");
        let path = d.join("a.y4m");
        let mut w = Y4mWriter::create(&path, 5, 3, 25).unwrap();
        for i in 0..4 {
            w.write(&picture(5, 3, 10 * i, 40 * u64::from(i))).unwrap();
        }
        assert!(matches!(
            w.write(&picture(4, 4, 0, 0)),
            Err(WriterError::SizeMismatch { .. })
        ));
        let mut short = picture(5, 3, 0, 0);
        short.data = short.data.slice(..10);
        assert!(matches!(
            w.write(&short),
            Err(WriterError::BadPicture { needed: 27, .. })
        ));
        assert_eq!(w.frames(), 4);
        w.finish();
        let (header, frames) = parse_y4m(&path);
        assert_eq!(header, "YUV4MPEG2 W5 H3 F25:1 C420jpeg");
        assert_eq!(frames, 4);
        // And the y4m crate reads back the last picture's luma.
        let mut r = y4m::decode(File::open(&path).unwrap()).unwrap();
        let mut last = Vec::new();
        while let Ok(f) = r.read_frame() {
            last = f.get_y_plane().to_vec();
        }
        assert_eq!(last, vec![30; 15]);
        assert!(Y4mWriter::create(d.join("z.y4m"), 0, 4, 30).is_err());
        assert!(matches!(
            Y4mWriter::create(d.join("no/such/dir.y4m"), 4, 4, 30),
            Err(WriterError::Io { .. })
        ));
    }

    #[test]
    fn wav_writer_round_trips_through_hound() {
        let d = dir("wav");
        let path = d.join("a.wav");
        let mut w = WavWriter::create(&path, 1).unwrap();
        w.write(&audio(0.5, 0, false)).unwrap();
        w.write_silence(480).unwrap();
        w.write(&audio(-0.25, 30, true)).unwrap();
        let mut stereo = audio(0.0, 0, false);
        stereo.channels = 2;
        assert!(matches!(
            w.write(&stereo),
            Err(WriterError::ChannelMismatch { .. })
        ));
        assert_eq!(w.samples(), 2400);
        w.finish().unwrap();
        let mut r = hound::WavReader::open(&path).unwrap();
        let spec = r.spec();
        assert_eq!(
            (spec.sample_rate, spec.channels, spec.bits_per_sample),
            (48_000, 1, 16)
        );
        let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s.len(), 2400);
        assert_eq!(s[0], 16384);
        assert_eq!(s[1000], 0);
        assert_eq!(s[2399], -8192);
        assert!(WavWriter::create(d.join("b.wav"), 3).is_err());
    }

    #[test]
    fn recorder_writes_per_user_files_and_splits_on_resolution_change() {
        let d = dir("rec");
        let rec = DecodedRecorder::new(&d);
        let alice = UserId::new("alice").unwrap();
        let bob = UserId::new("bob").unwrap();
        // 20 pictures at 15 fps, then 3 at a new size.
        for i in 0..20u64 {
            rec.on_video(&alice, &picture(8, 6, 100, i * 1000 / 15));
        }
        for i in 20..23u64 {
            rec.on_video(&alice, &picture(4, 4, 50, i * 1000 / 15));
        }
        // Audio with a 100 ms hole, which becomes silence.
        rec.on_audio(&bob, &audio(0.5, 0, false));
        rec.on_audio(&bob, &audio(0.5, 120, false));
        rec.finish().unwrap();
        rec.on_video(&alice, &picture(8, 6, 100, 5000));
        assert_eq!(rec.errors(), 0);
        assert_eq!(
            rec.files(),
            vec![
                d.join("alice-2.y4m"),
                d.join("alice.y4m"),
                d.join("bob.wav")
            ]
        );
        let (header, frames) = parse_y4m(&d.join("alice.y4m"));
        assert_eq!(header, "YUV4MPEG2 W8 H6 F15:1 C420jpeg");
        assert_eq!(frames, 20, "the picture after finish is ignored");
        let (header, frames) = parse_y4m(&d.join("alice-2.y4m"));
        assert_eq!(header, "YUV4MPEG2 W4 H4 F15:1 C420jpeg");
        assert_eq!(frames, 3);
        let r = hound::WavReader::open(d.join("bob.wav")).unwrap();
        assert_eq!(r.duration(), 960 + 4800 + 960);
    }

    #[test]
    fn recorder_counts_errors_and_never_panics() {
        let rec = DecodedRecorder::new("/nonexistent/calling-writers");
        let u = UserId::new("u").unwrap();
        for i in 0..3 {
            rec.on_audio(&u, &audio(0.1, i * 20, false));
        }
        // A single picture: too few for a rate, written at finish.
        rec.on_video(&u, &picture(4, 4, 0, 0));
        let mut bad = picture(4, 4, 0, 40);
        bad.data = Bytes::from_static(&[1, 2, 3]);
        rec.on_video(&u, &bad);
        assert!(matches!(rec.finish(), Err(WriterError::Io { .. })));
        assert_eq!(rec.errors(), 3 + 2);
        assert!(rec.files().is_empty());
    }

    #[test]
    fn frame_rates_come_from_timestamps() {
        let at = |ms: &[u64]| -> Vec<DecodedVideoFrame> {
            ms.iter().map(|&t| picture(2, 2, 0, t)).collect()
        };
        assert_eq!(frame_rate_of(&at(&[0, 33, 67, 100])), Some(30));
        assert_eq!(frame_rate_of(&at(&[0])), None);
        assert_eq!(frame_rate_of(&at(&[50, 50])), None);
        // A key frame sent at once between two of the schedule's (what a
        // decoder's key-frame request makes a sender do): still 15 fps.
        assert_eq!(
            frame_rate_of(&at(&[0, 67, 133, 150, 200, 267, 333, 400])),
            Some(15)
        );
        // A late picture and the next sent at once after it: likewise.
        assert_eq!(
            frame_rate_of(&at(&[0, 67, 133, 233, 240, 333, 400, 467])),
            Some(15)
        );
    }
}
