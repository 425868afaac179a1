//! Sound cards: a [`Microphone`] that captures into a [`RawAudioInput`] and
//! a [`Speaker`] that plays what a session decodes (it is a
//! [`DecodedSink`]). Built on cpal; only with the `devices` feature.
//!
//! Devices are named as the platform names them: on Linux the ALSA PCM
//! names (`default`, `pulse`, `hw:CARD=0,DEV=0`, or PCMs of `type pulse`
//! that name one PulseAudio sink or source: docs/DEVICES.md). `None` opens
//! the default device. Both work at 48 kHz when the device offers it and
//! convert otherwise (linear interpolation, see [`Microphone::open`]).
//!
//! cpal streams may not move between threads on some platforms, so each
//! stream lives on a thread of its own that owns it; [`Microphone`] and
//! [`Speaker`] steer that thread through a channel and are `Send + Sync`.
//! Dropping one stops its stream and ends the thread.
//!
//! ```no_run
//! use calling_media::devices::{self, Microphone, Speaker};
//! use calling_media::RawAudioInput;
//!
//! # fn run() -> Result<(), devices::DeviceError> {
//! for d in devices::input_devices()? {
//!     println!("mic {}{}", d.name, if d.is_default { " (default)" } else { "" });
//! }
//! let input = RawAudioInput::new(); // AudioSource::Raw takes a clone of it
//! let mic = Microphone::open(None, input.clone())?;
//! let speaker = Speaker::open(None)?; // session.set_decoded_sink(Some(speaker.clone()))
//! mic.set_muted(true);
//! speaker.switch_device(Some("pulse"))?;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use calling_core::UserId;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample};

use crate::decoded::{DecodedAudioFrame, DecodedSink};
use crate::raw::{AudioFrame, PushError, RawAudioInput, SAMPLE_RATE, Samples};

/// Length of the chunks a [`Microphone`] pushes: 10 ms.
pub const CAPTURE_CHUNK: Duration = Duration::from_millis(10);

/// Most audio a [`Speaker`] holds per user. Past it the oldest audio is
/// dropped down to twice [`JITTER_PREFILL`], so that a burst (or a device
/// that started late) costs one skip instead of lasting latency.
pub const JITTER_MAX: Duration = Duration::from_millis(200);

/// Audio a [`Speaker`] gathers for a user before it starts (again) to play
/// that user, so that uneven arrival does not break the sound up.
pub const JITTER_PREFILL: Duration = Duration::from_millis(40);

/// Calls the generic `build` for the sample type of a cpal
/// `SampleFormat`; a format we have no type for returns
/// [`DeviceError::UnsupportedFormat`] for device `name`.
macro_rules! by_sample_format {
    ($format:expr, $name:ident, $build:ident($($arg:expr),*)) => {
        match $format {
            SampleFormat::F32 => $build::<f32>($($arg),*),
            SampleFormat::I16 => $build::<i16>($($arg),*),
            SampleFormat::I32 => $build::<i32>($($arg),*),
            SampleFormat::F64 => $build::<f64>($($arg),*),
            SampleFormat::U16 => $build::<u16>($($arg),*),
            SampleFormat::I8 => $build::<i8>($($arg),*),
            SampleFormat::U8 => $build::<u8>($($arg),*),
            other => {
                return Err(DeviceError::UnsupportedFormat {
                    name: $name,
                    reason: format!("sample format {other:?}"),
                });
            }
        }
    };
}

/// How long opening a device may take before it counts as failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

const fn frames_in(d: Duration) -> usize {
    (d.as_millis() as usize) * (SAMPLE_RATE as usize) / 1000
}

/// Capture or playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A microphone.
    Input,
    /// A speaker.
    Output,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Input => "input",
            Direction::Output => "output",
        })
    }
}

/// Why a device could not be listed, opened or switched to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No device of that direction has that name.
    #[error("no {direction} device named {name:?}")]
    NoSuchDevice {
        /// The name asked for.
        name: String,
        /// Input or output.
        direction: Direction,
    },
    /// The platform has no default device of that direction.
    #[error("there is no default {0} device")]
    NoDefaultDevice(Direction),
    /// The device offers no sample format, rate or channel count we use.
    #[error("device {name:?}: {reason}")]
    UnsupportedFormat {
        /// The device.
        name: String,
        /// What it offers or refused.
        reason: String,
    },
    /// The audio system failed (server gone, device busy, ...).
    #[error("audio backend: {0}")]
    Backend(String),
}

impl DeviceError {
    fn from_cpal(name: &str, direction: Direction, e: &cpal::Error) -> Self {
        match e.kind() {
            cpal::ErrorKind::DeviceNotAvailable => DeviceError::NoSuchDevice {
                name: name.to_owned(),
                direction,
            },
            cpal::ErrorKind::UnsupportedConfig => DeviceError::UnsupportedFormat {
                name: name.to_owned(),
                reason: e.to_string(),
            },
            _ => DeviceError::Backend(format!("{name}: {e}")),
        }
    }
}

/// One device as listed by [`input_devices`] or [`output_devices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The name to open it by (on Linux the ALSA PCM name).
    pub name: String,
    /// What the platform says it is, for people.
    pub description: String,
    /// Whether `None` opens this device.
    pub is_default: bool,
}

/// The format a device stream runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFormat {
    /// Frames per second on the device side.
    pub sample_rate: u32,
    /// Channels on the device side.
    pub channels: u16,
}

fn device_name(d: &cpal::Device) -> String {
    match d.id() {
        Ok(id) => id.id().to_owned(),
        Err(_) => d
            .description()
            .map(|x| x.name().to_owned())
            .unwrap_or_default(),
    }
}

fn device_description(d: &cpal::Device) -> String {
    d.description()
        .map(|x| x.extended().collect::<Vec<_>>().join(" "))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| device_name(d))
}

fn default_device(host: &cpal::Host, direction: Direction) -> Option<cpal::Device> {
    match direction {
        Direction::Input => host.default_input_device(),
        Direction::Output => host.default_output_device(),
    }
}

fn list(direction: Direction) -> Result<Vec<cpal::Device>, DeviceError> {
    let host = cpal::default_host();
    let e = |e: cpal::Error| DeviceError::Backend(format!("listing {direction} devices: {e}"));
    Ok(match direction {
        Direction::Input => host.input_devices().map_err(e)?.collect(),
        Direction::Output => host.output_devices().map_err(e)?.collect(),
    })
}

fn devices(direction: Direction) -> Result<Vec<DeviceInfo>, DeviceError> {
    let default = default_device(&cpal::default_host(), direction).map(|d| device_name(&d));
    let mut out: Vec<DeviceInfo> = Vec::new();
    for d in list(direction)? {
        let name = device_name(&d);
        if name.is_empty() || out.iter().any(|o| o.name == name) {
            continue;
        }
        out.push(DeviceInfo {
            is_default: default.as_deref() == Some(name.as_str()),
            description: device_description(&d),
            name,
        });
    }
    Ok(out)
}

/// The devices that can capture.
///
/// # Errors
///
/// [`DeviceError::Backend`] when the audio system cannot list them.
pub fn input_devices() -> Result<Vec<DeviceInfo>, DeviceError> {
    devices(Direction::Input)
}

/// The devices that can play.
///
/// # Errors
///
/// [`DeviceError::Backend`] when the audio system cannot list them.
pub fn output_devices() -> Result<Vec<DeviceInfo>, DeviceError> {
    devices(Direction::Output)
}

fn find(direction: Direction, name: Option<&str>) -> Result<(cpal::Device, String), DeviceError> {
    let Some(name) = name else {
        let d = default_device(&cpal::default_host(), direction)
            .ok_or(DeviceError::NoDefaultDevice(direction))?;
        let n = device_name(&d);
        return Ok((d, n));
    };
    let found = list(direction)?
        .into_iter()
        .find(|d| device_name(d) == name || d.description().is_ok_and(|x| x.name() == name));
    match found {
        Some(d) => Ok((d, name.to_owned())),
        None => Err(DeviceError::NoSuchDevice {
            name: name.to_owned(),
            direction,
        }),
    }
}

/// Lower is better; `None`: a format we do not convert.
fn format_rank(f: SampleFormat) -> Option<u8> {
    Some(match f {
        SampleFormat::F32 => 0,
        SampleFormat::I16 => 1,
        SampleFormat::I32 => 2,
        SampleFormat::F64 => 3,
        SampleFormat::U16 => 4,
        SampleFormat::I8 => 5,
        SampleFormat::U8 => 6,
        _ => return None,
    })
}

/// Picks 48 kHz with the channels we like best (mono for capture, stereo
/// for playback) when the device offers it, else its own default format.
fn choose_config(
    device: &cpal::Device,
    direction: Direction,
    name: &str,
) -> Result<cpal::SupportedStreamConfig, DeviceError> {
    let err = |e: cpal::Error| DeviceError::from_cpal(name, direction, &e);
    let ranges: Vec<_> = match direction {
        Direction::Input => device.supported_input_configs().map_err(err)?.collect(),
        Direction::Output => device.supported_output_configs().map_err(err)?.collect(),
    };
    let channel_rank = |c: u16| match (direction, c) {
        (Direction::Input, 1) | (Direction::Output, 2) => 0,
        (_, 1 | 2) => 1,
        _ => 2 + u32::from(c),
    };
    let best = ranges
        .iter()
        .filter(|r| r.contains_rate(SAMPLE_RATE) && r.channels() > 0)
        .filter_map(|r| format_rank(r.sample_format()).map(|f| (r, f)))
        .min_by_key(|(r, f)| (channel_rank(r.channels()), *f));
    if let Some((r, _)) = best {
        return Ok(r.with_sample_rate(SAMPLE_RATE));
    }
    let default = match direction {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    }
    .map_err(err)?;
    if format_rank(default.sample_format()).is_none() || default.channels() == 0 {
        return Err(DeviceError::UnsupportedFormat {
            name: name.to_owned(),
            reason: format!(
                "{} channels of {:?} is all it offers",
                default.channels(),
                default.sample_format()
            ),
        });
    }
    Ok(default)
}

/// Asks for periods of 20 ms (cpal makes the buffer two periods) when the
/// device allows them: short enough for a call, long enough that a busy
/// machine does not miss its deadlines (at 10 ms, PulseAudio's ALSA plugin
/// reported hundreds of underruns per second on two loaded cores).
fn stream_config(supported: &cpal::SupportedStreamConfig) -> cpal::StreamConfig {
    let mut config = supported.config();
    let want = supported.sample_rate() / 50;
    if let cpal::SupportedBufferSize::Range { min, max } = *supported.buffer_size() {
        if (min..=max).contains(&want) {
            config.buffer_size = cpal::BufferSize::Fixed(want);
        }
    }
    config
}

/// A streaming linear-interpolation resampler over frames of up to two
/// channels: each input frame goes in, the output frames due by then come
/// out. With equal rates it passes frames through (one frame late).
#[derive(Debug, Clone)]
struct Resampler {
    /// Input frames per output frame.
    step: f64,
    /// Where the next output frame falls between `last` (0) and the next
    /// input frame (1).
    t: f64,
    last: [f32; 2],
}

impl Resampler {
    fn new(from_rate: u32, to_rate: u32) -> Self {
        Resampler {
            step: f64::from(from_rate.max(1)) / f64::from(to_rate.max(1)),
            t: 0.0,
            last: [0.0; 2],
        }
    }

    fn push(&mut self, x: [f32; 2], mut out: impl FnMut([f32; 2])) {
        while self.t < 1.0 {
            let t = self.t as f32;
            out([
                self.last[0] + (x[0] - self.last[0]) * t,
                self.last[1] + (x[1] - self.last[1]) * t,
            ]);
            self.t += self.step;
        }
        self.t -= 1.0;
        self.last = x;
    }
}

/// Logs the `n`th error of a stream when `n` is a power of two: a backend
/// can report the same error thousands of times a second (PulseAudio's
/// ALSA plugin does while a new stream has no timing yet).
fn log_stream_error(what: &str, n: u64, e: &cpal::Error) {
    if n.is_power_of_two() {
        tracing::warn!(error = %e, errors = n, "{what} stream error");
    }
}

fn clean(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

// ---------------------------------------------------------------- capture

/// Counters of a [`Microphone`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MicrophoneStats {
    /// Chunks handed to the input's source (or to the callback).
    pub pushed: u64,
    /// Chunks dropped because no call took them ([`PushError::NotSending`]:
    /// normal between calls).
    pub dropped_not_sending: u64,
    /// Chunks dropped because the encoder was behind ([`PushError::Full`]).
    pub dropped_full: u64,
    /// Errors the device stream reported (overruns, a vanished device).
    pub stream_errors: u64,
}

#[derive(Debug, Default)]
struct MicCounters {
    pushed: AtomicU64,
    dropped_not_sending: AtomicU64,
    dropped_full: AtomicU64,
    stream_errors: AtomicU64,
}

/// Where captured chunks go.
enum Target {
    Input(RawAudioInput),
    Callback(Box<dyn FnMut(AudioFrame) + Send>),
}

/// What runs inside the capture callback: converts device frames to
/// 48 kHz chunks and pushes them.
struct Capture {
    device_channels: usize,
    channels: u16,
    resampler: Resampler,
    pending: Vec<f32>,
    chunk: usize,
    /// Shared so that a stream closed for muting can be built again.
    target: Arc<Mutex<Target>>,
    muted: Arc<AtomicBool>,
    counters: Arc<MicCounters>,
}

impl Capture {
    fn process(&mut self, data: impl Iterator<Item = f32>) {
        if self.muted.load(Ordering::Relaxed) {
            self.pending.clear();
            return;
        }
        let mut frame = [0.0f32; 2];
        let ch = self.device_channels;
        for (i, s) in data.enumerate() {
            let c = i % ch;
            if c < 2 {
                frame[c] = clean(s);
            }
            if c + 1 == ch {
                if ch == 1 {
                    frame[1] = frame[0];
                }
                let (pending, channels) = (&mut self.pending, self.channels);
                self.resampler.push(frame, |o| {
                    pending.push(o[0]);
                    if channels == 2 {
                        pending.push(o[1]);
                    }
                });
            }
        }
        let len = self.chunk * usize::from(self.channels);
        while self.pending.len() >= len {
            let rest = self.pending.split_off(len);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.send(chunk);
        }
    }

    fn send(&mut self, chunk: Vec<f32>) {
        let c = &self.counters;
        let frame = match AudioFrame::new(Samples::F32(chunk), self.channels) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "microphone: bad chunk dropped");
                return;
            }
        };
        let mut target = self.target.lock().unwrap_or_else(PoisonError::into_inner);
        let input = match &mut *target {
            Target::Input(input) => input,
            Target::Callback(f) => {
                f(frame);
                c.pushed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match input.push(frame) {
            Ok(()) => c.pushed.fetch_add(1, Ordering::Relaxed),
            Err(PushError::NotSending) => c.dropped_not_sending.fetch_add(1, Ordering::Relaxed),
            Err(PushError::Full) => c.dropped_full.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, "microphone: chunk refused");
                0
            }
        };
    }
}

fn build_input<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut capture: Capture,
    counters: Arc<MicCounters>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    device.build_input_stream::<T, _, _>(
        *config,
        move |data: &[T], _| capture.process(data.iter().map(|&s| f32::from_sample(s))),
        move |e| {
            let n = counters.stream_errors.fetch_add(1, Ordering::Relaxed) + 1;
            log_stream_error("microphone", n, &e);
        },
        Some(OPEN_TIMEOUT),
    )
}

enum MicCommand {
    Mute(bool),
}

struct MicOpened {
    name: String,
    format: StreamFormat,
}

fn open_input(
    name: Option<&str>,
    target: Arc<Mutex<Target>>,
    muted: Arc<AtomicBool>,
    counters: Arc<MicCounters>,
) -> Result<(cpal::Stream, MicOpened), DeviceError> {
    let (device, name) = find(Direction::Input, name)?;
    let supported = choose_config(&device, Direction::Input, &name)?;
    let config = stream_config(&supported);
    let channels = if config.channels == 1 { 1 } else { 2 };
    let capture = Capture {
        device_channels: usize::from(config.channels),
        channels,
        resampler: Resampler::new(config.sample_rate, SAMPLE_RATE),
        pending: Vec::new(),
        chunk: frames_in(CAPTURE_CHUNK),
        target,
        muted,
        counters: counters.clone(),
    };
    let c = counters;
    let stream = by_sample_format!(
        supported.sample_format(),
        name,
        build_input(&device, &config, capture, c)
    )
    .map_err(|e| DeviceError::from_cpal(&name, Direction::Input, &e))?;
    stream
        .play()
        .map_err(|e| DeviceError::from_cpal(&name, Direction::Input, &e))?;
    tracing::info!(device = %name, rate = config.sample_rate, channels = config.channels,
        format = ?supported.sample_format(), "microphone open");
    Ok((
        stream,
        MicOpened {
            name,
            format: StreamFormat {
                sample_rate: config.sample_rate,
                channels: config.channels,
            },
        },
    ))
}

/// A capture device feeding a [`RawAudioInput`]: 10 ms chunks of 48 kHz
/// mono (stereo when the device has only more channels) float PCM.
///
/// Chunks pushed while no call takes them ([`PushError::NotSending`]) are
/// dropped quietly and counted, so a microphone can stay open across calls.
/// Dropping it stops the capture.
pub struct Microphone {
    commands: Option<mpsc::Sender<MicCommand>>,
    thread: Option<JoinHandle<()>>,
    muted: Arc<AtomicBool>,
    counters: Arc<MicCounters>,
    name: String,
    format: StreamFormat,
}

impl fmt::Debug for Microphone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Microphone")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("muted", &self.is_muted())
            .finish_non_exhaustive()
    }
}

impl Microphone {
    /// Starts capturing from the input device `name` (see
    /// [`input_devices`]), or the default one, into `input`.
    ///
    /// The device runs at 48 kHz when it offers that; otherwise at its own
    /// rate, converted by linear interpolation (fine from 44.1 kHz and
    /// other nearby rates; from a much higher rate it does not filter out
    /// what lies above 24 kHz first). Sound servers (PulseAudio, PipeWire,
    /// CoreAudio, WASAPI) offer 48 kHz and convert themselves.
    ///
    /// # Errors
    ///
    /// [`DeviceError::NoSuchDevice`], [`DeviceError::NoDefaultDevice`],
    /// [`DeviceError::UnsupportedFormat`] or [`DeviceError::Backend`].
    pub fn open(name: Option<&str>, input: RawAudioInput) -> Result<Microphone, DeviceError> {
        Self::start(name, Target::Input(input))
    }

    /// Starts capturing from the input device `name`, or the default one,
    /// handing each chunk to `on_chunk` (on the capture thread: return
    /// quickly) instead of a call: for level meters, recording, tests.
    ///
    /// # Errors
    ///
    /// As [`Microphone::open`].
    pub fn open_with(
        name: Option<&str>,
        on_chunk: impl FnMut(AudioFrame) + Send + 'static,
    ) -> Result<Microphone, DeviceError> {
        Self::start(name, Target::Callback(Box::new(on_chunk)))
    }

    fn start(name: Option<&str>, target: Target) -> Result<Microphone, DeviceError> {
        let muted = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(MicCounters::default());
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let asked = name.map(str::to_owned);
        let (m, c) = (muted.clone(), counters.clone());
        let target = Arc::new(Mutex::new(target));
        let thread = std::thread::Builder::new()
            .name("calling-mic".into())
            .spawn(move || {
                let open = || open_input(asked.as_deref(), target.clone(), m.clone(), c.clone());
                let (stream, opened) = match open() {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let name = opened.name.clone();
                if ready_tx.send(Ok(opened)).is_err() {
                    return;
                }
                // A device that cannot pause (PulseAudio's ALSA plugin) is
                // closed while muted and opened again after.
                let mut stream = Some(stream);
                while let Ok(MicCommand::Mute(mute)) = rx.recv() {
                    match (mute, &stream) {
                        (true, Some(s)) => {
                            if let Err(e) = s.pause() {
                                tracing::debug!(device = %name, error = %e, "microphone: closed while muted");
                                stream = None;
                            }
                        }
                        (false, Some(s)) => {
                            if let Err(e) = s.play() {
                                tracing::warn!(device = %name, error = %e, "microphone: resume failed");
                            }
                        }
                        (false, None) => match open() {
                            Ok((s, _)) => stream = Some(s),
                            Err(e) => {
                                c.stream_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(device = %name, error = %e, "microphone: reopening after mute failed");
                            }
                        },
                        (true, None) => {}
                    }
                }
                drop(stream);
                tracing::debug!(device = %name, "microphone closed");
            })
            .map_err(|e| DeviceError::Backend(format!("capture thread: {e}")))?;
        let opened = match ready_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(DeviceError::Backend(format!(
                    "opening {:?} took longer than {OPEN_TIMEOUT:?}",
                    name.unwrap_or("default")
                )));
            }
        };
        Ok(Microphone {
            commands: Some(tx),
            thread: Some(thread),
            muted,
            counters,
            name: opened.name,
            format: opened.format,
        })
    }

    /// Pauses (`true`) or resumes capture. While muted the device is not
    /// read and nothing is pushed: the stream is paused, or closed and
    /// opened again where the device cannot pause (PulseAudio's ALSA
    /// plugin cannot). A reopen that fails is logged and counted in
    /// [`MicrophoneStats::stream_errors`].
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
        if let Some(tx) = &self.commands {
            let _ = tx.send(MicCommand::Mute(muted));
        }
    }

    /// Whether capture is paused.
    pub fn is_muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The format the device runs in.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// The counters so far.
    pub fn stats(&self) -> MicrophoneStats {
        let c = &self.counters;
        MicrophoneStats {
            pushed: c.pushed.load(Ordering::Relaxed),
            dropped_not_sending: c.dropped_not_sending.load(Ordering::Relaxed),
            dropped_full: c.dropped_full.load(Ordering::Relaxed),
            stream_errors: c.stream_errors.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Microphone {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// --------------------------------------------------------------- playback

/// Counters of a [`Speaker`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpeakerStats {
    /// Decoded chunks taken in.
    pub chunks_in: u64,
    /// Chunks refused as malformed (channels not 1 or 2, ragged).
    pub chunks_bad: u64,
    /// 48 kHz frames dropped, oldest first, because a user's buffer held
    /// [`JITTER_MAX`] already.
    pub frames_overflowed: u64,
    /// 48 kHz frames the device has taken from the mix (silence included).
    pub frames_mixed: u64,
    /// Times a user's buffer ran dry while playing.
    pub underruns: u64,
    /// Errors the device stream reported (underruns, a vanished device).
    pub stream_errors: u64,
}

#[derive(Debug, Default)]
struct UserBuffer {
    frames: VecDeque<[f32; 2]>,
    playing: bool,
}

#[derive(Debug, Default)]
struct Mixer {
    users: HashMap<UserId, UserBuffer>,
    stats: SpeakerStats,
}

impl Mixer {
    fn take(&mut self, user: &UserId, frame: &DecodedAudioFrame) {
        let ch = usize::from(frame.channels);
        if !(1..=2).contains(&ch) || frame.samples.len() % ch != 0 {
            self.stats.chunks_bad += 1;
            return;
        }
        self.stats.chunks_in += 1;
        let buf = self.users.entry(user.clone()).or_default();
        for f in frame.samples.chunks_exact(ch) {
            let l = clean(f[0]);
            buf.frames
                .push_back([l, if ch == 2 { clean(f[1]) } else { l }]);
        }
        if buf.frames.len() > frames_in(JITTER_MAX) {
            let over = buf.frames.len() - 2 * frames_in(JITTER_PREFILL);
            buf.frames.drain(..over);
            self.stats.frames_overflowed += over as u64;
        }
    }

    /// Forgets users with nothing buffered and not playing (they left, or
    /// are silent): the map stays as small as the call.
    fn forget_idle(&mut self) {
        self.users.retain(|_, b| b.playing || !b.frames.is_empty());
    }

    /// The next 48 kHz frame: every playing user summed, clamped.
    fn next(&mut self) -> [f32; 2] {
        self.stats.frames_mixed += 1;
        let prefill = frames_in(JITTER_PREFILL);
        let mut sum = [0.0f32; 2];
        for buf in self.users.values_mut() {
            if !buf.playing && buf.frames.len() >= prefill {
                buf.playing = true;
            }
            if !buf.playing {
                continue;
            }
            match buf.frames.pop_front() {
                Some(f) => {
                    sum[0] += f[0];
                    sum[1] += f[1];
                }
                None => {
                    buf.playing = false;
                    self.stats.underruns += 1;
                }
            }
        }
        [sum[0].clamp(-1.0, 1.0), sum[1].clamp(-1.0, 1.0)]
    }
}

#[derive(Debug, Default)]
struct SpeakerShared {
    mixer: Mutex<Mixer>,
    muted: AtomicBool,
    stream_errors: AtomicU64,
}

impl SpeakerShared {
    fn mixer(&self) -> std::sync::MutexGuard<'_, Mixer> {
        self.mixer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What runs inside the playback callback.
struct Playback {
    shared: Arc<SpeakerShared>,
    device_channels: usize,
    resampler: Resampler,
    ready: VecDeque<[f32; 2]>,
}

impl Playback {
    fn fill<T: SizedSample + FromSample<f32>>(&mut self, data: &mut [T]) {
        let ch = self.device_channels.max(1);
        let frames = data.len() / ch;
        {
            let mut mixer = self.shared.mixer();
            mixer.forget_idle();
            while self.ready.len() < frames {
                let x = mixer.next();
                let ready = &mut self.ready;
                self.resampler.push(x, |o| ready.push_back(o));
            }
        }
        let muted = self.shared.muted.load(Ordering::Relaxed);
        for out in data.chunks_mut(ch) {
            let f = match self.ready.pop_front() {
                Some(f) if !muted => f,
                _ => [0.0; 2],
            };
            for (c, s) in out.iter_mut().enumerate() {
                let v = match (ch, c) {
                    (1, _) => (f[0] + f[1]) / 2.0,
                    (_, 0 | 1) => f[c],
                    _ => 0.0,
                };
                *s = T::from_sample(v);
            }
        }
    }
}

fn build_output<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut playback: Playback,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let shared = playback.shared.clone();
    device.build_output_stream::<T, _, _>(
        *config,
        move |data: &mut [T], _| playback.fill(data),
        move |e| {
            let n = shared.stream_errors.fetch_add(1, Ordering::Relaxed) + 1;
            log_stream_error("speaker", n, &e);
        },
        Some(OPEN_TIMEOUT),
    )
}

fn open_output(
    name: Option<&str>,
    shared: &Arc<SpeakerShared>,
) -> Result<(cpal::Stream, String, StreamFormat), DeviceError> {
    let (device, name) = find(Direction::Output, name)?;
    let supported = choose_config(&device, Direction::Output, &name)?;
    let config = stream_config(&supported);
    let playback = Playback {
        shared: shared.clone(),
        device_channels: usize::from(config.channels),
        resampler: Resampler::new(SAMPLE_RATE, config.sample_rate),
        ready: VecDeque::new(),
    };
    let stream = by_sample_format!(
        supported.sample_format(),
        name,
        build_output(&device, &config, playback)
    )
    .map_err(|e| DeviceError::from_cpal(&name, Direction::Output, &e))?;
    stream
        .play()
        .map_err(|e| DeviceError::from_cpal(&name, Direction::Output, &e))?;
    tracing::info!(device = %name, rate = config.sample_rate, channels = config.channels,
        format = ?supported.sample_format(), "speaker open");
    let format = StreamFormat {
        sample_rate: config.sample_rate,
        channels: config.channels,
    };
    Ok((stream, name, format))
}

type Opened = Result<(String, StreamFormat), DeviceError>;

enum SpeakerCommand {
    Switch(Option<String>, mpsc::Sender<Opened>),
}

/// A playback device that plays what a session decodes: set it as the
/// session's [`DecodedSink`]. Each remote user gets a jitter buffer of up to
/// [`JITTER_MAX`] (the oldest audio goes first when it overflows); the
/// device callback mixes all users (sum, clamped), converts to the device's
/// rate and channels, and plays silence when nobody speaks.
///
/// Dropping the last `Arc` stops playback.
pub struct Speaker {
    commands: Mutex<Option<mpsc::Sender<SpeakerCommand>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<SpeakerShared>,
    current: Mutex<(String, StreamFormat)>,
}

impl fmt::Debug for Speaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Speaker")
            .field("device", &self.device_name())
            .field("muted", &self.is_muted())
            .finish_non_exhaustive()
    }
}

impl Speaker {
    /// Starts playback on the output device `name` (see
    /// [`output_devices`]), or the default one. Rate conversion as for
    /// [`Microphone::open`].
    ///
    /// # Errors
    ///
    /// [`DeviceError::NoSuchDevice`], [`DeviceError::NoDefaultDevice`],
    /// [`DeviceError::UnsupportedFormat`] or [`DeviceError::Backend`].
    pub fn open(name: Option<&str>) -> Result<Arc<Speaker>, DeviceError> {
        let shared = Arc::new(SpeakerShared::default());
        let (tx, rx) = mpsc::channel::<SpeakerCommand>();
        let (ready_tx, ready_rx) = mpsc::channel::<Opened>();
        let name_owned = name.map(str::to_owned);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("calling-speaker".into())
            .spawn(move || {
                let mut stream = match open_output(name_owned.as_deref(), &sh) {
                    Ok((stream, name, format)) => {
                        if ready_tx.send(Ok((name, format))).is_err() {
                            return;
                        }
                        stream
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(SpeakerCommand::Switch(name, reply)) = rx.recv() {
                    match open_output(name.as_deref(), &sh) {
                        Ok((new, name, format)) => {
                            // The old stream stops here; the buffers stay.
                            stream = new;
                            let _ = reply.send(Ok((name, format)));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                drop(stream);
                tracing::debug!("speaker closed");
            })
            .map_err(|e| DeviceError::Backend(format!("playback thread: {e}")))?;
        let opened = match ready_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(DeviceError::Backend(format!(
                    "opening {:?} took longer than {OPEN_TIMEOUT:?}",
                    name.unwrap_or("default")
                )));
            }
        };
        Ok(Arc::new(Speaker {
            commands: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            shared,
            current: Mutex::new(opened),
        }))
    }

    /// Moves playback to the output device `name` (or the default one)
    /// without losing buffered audio: for hands-free, speaker vs earpiece.
    /// On failure playback stays where it was.
    ///
    /// # Errors
    ///
    /// As [`Speaker::open`].
    pub fn switch_device(&self, name: Option<&str>) -> Result<(), DeviceError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        {
            let guard = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = guard.as_ref() else {
                return Err(DeviceError::Backend("speaker is closed".into()));
            };
            tx.send(SpeakerCommand::Switch(name.map(str::to_owned), reply_tx))
                .map_err(|_| DeviceError::Backend("playback thread ended".into()))?;
        }
        let opened = reply_rx
            .recv_timeout(OPEN_TIMEOUT)
            .map_err(|_| DeviceError::Backend("switching device timed out".into()))??;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = opened;
        Ok(())
    }

    /// Plays silence (`true`) or the mix again. Audio that arrives while
    /// muted is dropped, so unmuting plays what comes next, not a backlog.
    pub fn set_muted(&self, muted: bool) {
        self.shared.muted.store(muted, Ordering::Relaxed);
    }

    /// Whether playback is muted.
    pub fn is_muted(&self) -> bool {
        self.shared.muted.load(Ordering::Relaxed)
    }

    /// The current device's name.
    pub fn device_name(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// The format the current device runs in.
    pub fn format(&self) -> StreamFormat {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
    }

    /// The counters so far.
    pub fn stats(&self) -> SpeakerStats {
        let mut s = self.shared.mixer().stats;
        s.stream_errors = self.shared.stream_errors.load(Ordering::Relaxed);
        s
    }
}

impl DecodedSink for Speaker {
    fn on_audio(&self, user: &UserId, frame: &DecodedAudioFrame) {
        self.shared.mixer().take(user, frame);
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.commands
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goertzel(x: &[f32], rate: f32, freq: f32) -> f32 {
        let w = 2.0 * std::f32::consts::PI * freq / rate;
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &v in x {
            let s = v + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2).sqrt() / x.len() as f32
    }

    fn tone(rate: u32, freq: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn resampler_keeps_the_pitch() {
        for (from, to) in [
            (44_100, 48_000),
            (48_000, 44_100),
            (48_000, 48_000),
            (16_000, 48_000),
        ] {
            let input = tone(from, 1000.0, from as usize / 2);
            let mut r = Resampler::new(from, to);
            let mut out = Vec::new();
            for &x in &input {
                r.push([x, x], |o| out.push(o[0]));
            }
            let expect = input.len() as f64 * f64::from(to) / f64::from(from);
            assert!(
                (out.len() as f64 - expect).abs() <= 2.0,
                "{from}->{to}: {}",
                out.len()
            );
            let at = goertzel(&out, to as f32, 1000.0);
            let off = goertzel(&out, to as f32, 1500.0);
            assert!(at > 0.2 && off < at / 20.0, "{from}->{to}: {at} vs {off}");
        }
    }

    #[test]
    fn mixer_sums_users_and_bounds_their_buffers() {
        let mut m = Mixer::default();
        let (a, b) = (UserId::new("a").unwrap(), UserId::new("b").unwrap());
        let chunk = |v: f32, n: usize, channels: u16| DecodedAudioFrame {
            samples: vec![v; n * usize::from(channels)],
            channels,
            rtp_timestamp: 0,
            timestamp: Duration::ZERO,
            concealed: false,
        };
        // Nothing plays before the prefill is there.
        m.take(&a, &chunk(0.25, 10, 1));
        assert_eq!(m.next(), [0.0, 0.0]);
        m.take(&a, &chunk(0.25, frames_in(JITTER_PREFILL), 1));
        m.take(&b, &chunk(0.9, frames_in(JITTER_PREFILL), 2));
        assert_eq!(m.next(), [1.0, 1.0]); // 0.25 + 0.9, clamped
        m.take(&a, &chunk(0.1, 7, 3));
        assert_eq!(m.stats.chunks_bad, 1);
        m.take(&a, &chunk(0.1, frames_in(JITTER_MAX) + 100, 1));
        assert!(m.stats.frames_overflowed >= 100);
        let kept = 2 * frames_in(JITTER_PREFILL);
        assert_eq!(m.users[&a].frames.len(), kept);
        assert_eq!(
            m.users[&a].frames.back(),
            Some(&[0.1, 0.1]),
            "the newest stays"
        );
        for _ in 0..kept + 1 {
            m.next();
        }
        assert_eq!(m.stats.underruns, 2);
        assert_eq!(m.next(), [0.0, 0.0]);
        m.take(&b, &chunk(0.5, 3, 1));
        m.forget_idle();
        assert_eq!(m.users.len(), 1, "only b, with audio waiting, is kept");
    }

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Microphone>();
        send_sync::<Speaker>();
    }
}
