//! Raw media in (the app's camera pictures and microphone samples) and
//! decoded media out (I420 pictures, 48 kHz PCM), and audio devices.

use std::ffi::{CString, c_char, c_void};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calling::{
    AudioFrame, AudioInput, CallingConfig, DecodedAudioFrame, DecodedSink, DecodedVideoFrame,
    PixelFormat, PushError, RawAudioInput, Samples, UserId, VideoFrame,
};

use crate::client::{
    Callback, Failure, calling_client, calling_config, lock, with_client, with_config,
};
use crate::result::calling_result::{self, *};
use crate::result::out_arg;

/// Most planes a picture has (I420).
const MAX_PLANES: usize = 3;
/// Most samples one `calling_client_push_audio_*` call takes: 1 s of
/// stereo.
const MAX_PUSH_SAMPLES: usize = 2 * 48_000;

/// Pixel layouts of pictures pushed with `calling_client_push_video`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_pixel_format {
    /// Planar 4:2:0: Y, U, V planes (3 planes).
    CALLING_PIXEL_FORMAT_I420 = 0,
    /// Semi-planar 4:2:0: Y plane, interleaved UV plane (2 planes).
    CALLING_PIXEL_FORMAT_NV12 = 1,
    /// Packed 8-bit R, G, B, A (1 plane).
    CALLING_PIXEL_FORMAT_RGBA = 2,
    /// Packed 8-bit B, G, R, A (1 plane).
    CALLING_PIXEL_FORMAT_BGRA = 3,
}

/// What feeds the microphone track, for `calling_config_set_audio_source`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_audio_source {
    /// The generated tone, or the Ogg/Opus file of
    /// `calling_config_set_audio_file` (the default).
    CALLING_AUDIO_SOURCE_TONE = 0,
    /// The app's own samples, pushed with `calling_client_push_audio_i16`
    /// or `calling_client_push_audio_f32`.
    CALLING_AUDIO_SOURCE_RAW = 1,
    /// A capture device: the one named with `calling_config_set_microphone`,
    /// else the system default. Needs a library built with the `devices`
    /// feature.
    CALLING_AUDIO_SOURCE_MICROPHONE = 2,
}

/// Which devices `calling_audio_devices` lists.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_device_direction {
    /// Capture devices (microphones).
    CALLING_DEVICE_INPUT = 0,
    /// Playback devices (speakers, headsets).
    CALLING_DEVICE_OUTPUT = 1,
}

/// The microphone choice a config holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AudioChoice {
    /// Tone or file.
    Tone,
    /// Pushed samples.
    Raw,
    /// A capture device, by name (`None`: the default one).
    Microphone(Option<String>),
}

/// The output device a config holds (`None` name: the default one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpeakerChoice {
    pub(crate) name: Option<String>,
}

impl AudioChoice {
    /// The SDK input for this choice.
    pub(crate) fn input(&self, tone: AudioInput, raw: &RawAudioInput) -> AudioInput {
        match self {
            AudioChoice::Tone => tone,
            AudioChoice::Raw => AudioInput::Raw(raw.clone()),
            #[cfg(feature = "devices")]
            AudioChoice::Microphone(name) => AudioInput::Microphone {
                device: name.clone(),
            },
            #[cfg(not(feature = "devices"))]
            AudioChoice::Microphone(_) => tone,
        }
    }
}

/// Puts the chosen output device, if any, in the SDK config.
pub(crate) fn apply_speaker(cfg: &mut CallingConfig, speaker: Option<&SpeakerChoice>) {
    #[cfg(feature = "devices")]
    if let Some(s) = speaker {
        cfg.audio_output = calling::AudioOutput::Device {
            speaker: s.name.clone(),
            earpiece: None,
        };
    }
    #[cfg(not(feature = "devices"))]
    let _ = (cfg, speaker);
}

/// One decoded picture, valid only during the decoded video callback: I420
/// planes owned by the library. Copy what you keep. Fields may be added at
/// the end in later versions.
#[repr(C)]
#[derive(Debug)]
pub struct calling_decoded_video {
    /// Who sent it.
    pub user: *const c_char,
    /// Width in pixels; may change between pictures.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The Y plane: `height` rows of `y_stride` bytes.
    pub y: *const u8,
    /// The U plane: `(height + 1) / 2` rows of `uv_stride` bytes.
    pub u: *const u8,
    /// The V plane, as U.
    pub v: *const u8,
    /// Bytes from one Y row to the next.
    pub y_stride: u32,
    /// Bytes from one U (or V) row to the next.
    pub uv_stride: u32,
    /// The RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// Media time since the sender's first picture, in microseconds.
    pub timestamp_us: u64,
}

/// One decoded chunk of audio, valid only during the decoded audio
/// callback: interleaved float samples owned by the library. Fields may be
/// added at the end in later versions.
#[repr(C)]
#[derive(Debug)]
pub struct calling_decoded_audio {
    /// Who sent it.
    pub user: *const c_char,
    /// `frames * channels` interleaved samples, -1.0 to 1.0.
    pub samples: *const f32,
    /// Samples per channel.
    pub frames: usize,
    /// Channels (1 or 2).
    pub channels: u32,
    /// Samples per second (48000).
    pub sample_rate: u32,
    /// The RTP timestamp (48 kHz).
    pub rtp_timestamp: u32,
    /// Media time since the sender's first packet, in microseconds.
    pub timestamp_us: u64,
    /// Whether this chunk was made up for a lost packet.
    pub concealed: bool,
}

/// Called for every decoded picture of every remote user, on one of the
/// client's decoder threads (one per remote track). Return quickly: a slow
/// callback holds that user's decoding up (never the network), and
/// pictures are then skipped until the next key frame. It may call
/// `calling_client_push_*`, but no blocking `calling_client_*` function.
pub type calling_decoded_video_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, frame: *const calling_decoded_video)>;

/// Called for every decoded chunk of remote audio, under the rules of
/// [`calling_decoded_video_callback`].
pub type calling_decoded_audio_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, frame: *const calling_decoded_audio)>;

type VideoFn = unsafe extern "C" fn(*mut c_void, *const calling_decoded_video);
type AudioFn = unsafe extern "C" fn(*mut c_void, *const calling_decoded_audio);

/// The registered decoded media callbacks of a client.
#[derive(Default)]
pub(crate) struct DecodedCallbacks {
    video: Mutex<Option<Callback<VideoFn>>>,
    audio: Mutex<Option<Callback<AudioFn>>>,
}

/// The sink the SDK calls; forwards to the callbacks.
struct Bridge(Arc<DecodedCallbacks>);

thread_local! {
    /// Set while this thread runs a decoded media callback.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside a decoded media callback: blocking
/// functions are refused there (they could wait for this very thread).
pub(crate) fn in_decoded_callback() -> bool {
    IN_CALLBACK.with(std::cell::Cell::get)
}

/// Runs `f` marked as inside a decoded media callback.
fn in_callback(f: impl FnOnce()) {
    IN_CALLBACK.with(|c| c.set(true));
    f();
    IN_CALLBACK.with(|c| c.set(false));
}

impl DecodedCallbacks {
    /// A sink for the SDK when any callback is registered.
    pub(crate) fn sink(self: &Arc<Self>) -> Option<Arc<dyn DecodedSink>> {
        let any = lock(&self.video).is_some() || lock(&self.audio).is_some();
        any.then(|| Arc::new(Bridge(Arc::clone(self))) as Arc<dyn DecodedSink>)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl DecodedSink for Bridge {
    fn on_video(&self, user: &UserId, frame: &DecodedVideoFrame) {
        let cb = lock(&self.0.video);
        let Some(cb) = cb.as_ref() else { return };
        let Ok(user) = CString::new(user.as_str()) else {
            return;
        };
        let (y, u, v) = (frame.y(), frame.u(), frame.v());
        let c = calling_decoded_video {
            user: user.as_ptr(),
            width: frame.width,
            height: frame.height,
            y: y.as_ptr(),
            u: u.as_ptr(),
            v: v.as_ptr(),
            y_stride: frame.width,
            uv_stride: u32::try_from(frame.chroma_width()).unwrap_or(u32::MAX),
            rtp_timestamp: frame.rtp_timestamp,
            timestamp_us: micros(frame.timestamp),
        };
        // SAFETY: registered by C for this signature; `c` and the planes
        // outlive the call.
        in_callback(|| unsafe { (cb.f)(cb.user_data, &c) });
    }

    fn on_audio(&self, user: &UserId, frame: &DecodedAudioFrame) {
        let cb = lock(&self.0.audio);
        let Some(cb) = cb.as_ref() else { return };
        let Ok(user) = CString::new(user.as_str()) else {
            return;
        };
        let channels = usize::from(frame.channels.max(1));
        let c = calling_decoded_audio {
            user: user.as_ptr(),
            samples: frame.samples.as_ptr(),
            frames: frame.samples.len() / channels,
            channels: u32::from(frame.channels),
            sample_rate: calling::SAMPLE_RATE,
            rtp_timestamp: frame.rtp_timestamp,
            timestamp_us: micros(frame.timestamp),
            concealed: frame.concealed,
        };
        // SAFETY: as for video.
        in_callback(|| unsafe { (cb.f)(cb.user_data, &c) });
    }
}

/// Refuses to go on inside any callback of the client.
fn refuse_in_callback() -> Result<(), Failure> {
    if in_decoded_callback() || tokio::runtime::Handle::try_current().is_ok() {
        return Err(CALLING_RESULT_WRONG_THREAD.into());
    }
    Ok(())
}

/// Tells a logged-in SDK client about the callbacks now registered.
fn sync_sink(client: &calling_client) -> Result<(), Failure> {
    if client.calling().is_err() {
        // Not logged in: login sets the sink.
        return Ok(());
    }
    let sink = client.decoded.sink();
    client.run(|c| async move { c.set_decoded_sink(sink).await })
}

/// Registers the decoded video callback (NULL removes it). Decoding runs
/// only while a decoded callback (video or audio) is registered; the
/// encoded frame callback is unaffected. Replacing it waits for a call of
/// the old one in progress. Not from inside a callback
/// (`CALLING_RESULT_WRONG_THREAD`).
///
/// # Safety
///
/// `client` is NULL or live; `user_data` must be usable from any thread
/// until the callback is replaced or the client freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_set_decoded_video_callback(
    client: *mut calling_client,
    callback: calling_decoded_video_callback,
    user_data: *mut c_void,
) -> calling_result {
    with_client(
        client,
        "calling_client_set_decoded_video_callback",
        |client| {
            refuse_in_callback()?;
            *lock(&client.decoded.video) = callback.map(|f| Callback { f, user_data });
            sync_sink(client)
        },
    )
}

/// Registers the decoded audio callback (NULL removes it), as
/// `calling_client_set_decoded_video_callback`.
///
/// # Safety
///
/// As `calling_client_set_decoded_video_callback`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_set_decoded_audio_callback(
    client: *mut calling_client,
    callback: calling_decoded_audio_callback,
    user_data: *mut c_void,
) -> calling_result {
    with_client(
        client,
        "calling_client_set_decoded_audio_callback",
        |client| {
            refuse_in_callback()?;
            *lock(&client.decoded.audio) = callback.map(|f| Callback { f, user_data });
            sync_sink(client)
        },
    )
}

fn push_failure(e: PushError) -> Failure {
    let code = match &e {
        PushError::NotSending => CALLING_RESULT_NOT_SENDING,
        PushError::Full => CALLING_RESULT_QUEUE_FULL,
        _ => CALLING_RESULT_INVALID_ARGUMENT,
    };
    Failure::new(code, e.to_string())
}

fn invalid(detail: impl Into<String>) -> Failure {
    Failure::new(CALLING_RESULT_INVALID_ARGUMENT, detail)
}

/// Pushes one picture of the app's camera into the call: a `format`
/// (`calling_pixel_format`) picture of `width` x `height` pixels in
/// `plane_count` planes (`planes[i]` with `strides[i]` bytes from one row
/// to the next; I420: Y, U, V; NV12: Y, UV; RGBA/BGRA: one). The library
/// copies the picture before returning: the planes stay the caller's.
/// `timestamp_us` is the capture time on any clock that only moves
/// forward. The camera must be `CALLING_VIDEO_SOURCE_RAW`
/// (`calling_config_set_video_source` or `calling_client_open_camera`).
///
/// Never blocks; may be called from any thread, including callbacks.
/// `CALLING_RESULT_NOT_SENDING` when no call takes pictures now (none, an
/// audio call, or the camera closed), `CALLING_RESULT_QUEUE_FULL` when the
/// encoder is behind (the picture is dropped: push the next one),
/// `CALLING_RESULT_INVALID_ARGUMENT` for a malformed picture (the detail in
/// `calling_client_last_error`).
///
/// # Safety
///
/// `client` is NULL or live; `planes` and `strides` are NULL or hold
/// `plane_count` entries; each plane is NULL or readable for
/// `strides[i] * (rows - 1) + row_bytes` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_push_video(
    client: *mut calling_client,
    format: u32,
    width: u32,
    height: u32,
    planes: *const *const u8,
    strides: *const usize,
    plane_count: usize,
    timestamp_us: u64,
) -> calling_result {
    with_client(client, "calling_client_push_video", |client| {
        let format = match format {
            0 => PixelFormat::I420,
            1 => PixelFormat::Nv12,
            2 => PixelFormat::Rgba,
            3 => PixelFormat::Bgra,
            f => {
                return Err(invalid(format!(
                    "`format`: {f} is not a calling_pixel_format"
                )));
            }
        };
        if planes.is_null() || strides.is_null() {
            return Err(Failure::new(
                CALLING_RESULT_NULL_PARAMETER,
                "`planes` or `strides` is NULL",
            ));
        }
        let layout = format.planes(width, height);
        if plane_count != layout.len() || plane_count > MAX_PLANES {
            return Err(invalid(format!(
                "`plane_count`: {format:?} has {} planes, got {plane_count}",
                layout.len()
            )));
        }
        if width == 0
            || height == 0
            || width > calling::MAX_DIMENSION
            || height > calling::MAX_DIMENSION
        {
            return Err(invalid(format!("picture size {width}x{height}")));
        }
        let mut views: Vec<(&[u8], usize)> = Vec::with_capacity(plane_count);
        for (i, &(row, rows)) in layout.iter().enumerate() {
            // SAFETY: `planes` and `strides` hold `plane_count` entries.
            let (ptr, stride) = unsafe { (*planes.add(i), *strides.add(i)) };
            if ptr.is_null() {
                return Err(Failure::new(
                    CALLING_RESULT_NULL_PARAMETER,
                    format!("plane {i} is NULL"),
                ));
            }
            if stride < row {
                return Err(invalid(format!(
                    "plane {i}: stride {stride} is shorter than a row of {row} bytes"
                )));
            }
            let Some(len) = stride
                .checked_mul(rows - 1)
                .and_then(|n| n.checked_add(row))
            else {
                return Err(invalid(format!("plane {i}: stride {stride} overflows")));
            };
            // SAFETY: the caller promises `len` readable bytes at `ptr`.
            views.push((unsafe { std::slice::from_raw_parts(ptr, len) }, stride));
        }
        let frame = VideoFrame::from_planes(
            format,
            width,
            height,
            &views,
            Duration::from_micros(timestamp_us),
        )
        .map_err(|e| invalid(e.to_string()))?;
        client.raw_video.push(frame).map_err(push_failure)
    })
}

fn push_audio(client: &calling_client, samples: Samples, channels: u32) -> Result<(), Failure> {
    let channels =
        u16::try_from(channels).map_err(|_| invalid(format!("`channels`: {channels}")))?;
    let frame = AudioFrame::new(samples, channels).map_err(|e| invalid(e.to_string()))?;
    client.raw_audio.push(frame).map_err(push_failure)
}

/// Checks a sample buffer and its count.
/// Copies `count` samples from a C caller's buffer, refusing NULL and a
/// count outside 1..=[`MAX_PUSH_SAMPLES`].
///
/// # Safety
///
/// `samples` is NULL or readable for `count` values of `T`.
unsafe fn copy_samples<T: Copy>(samples: *const T, count: usize) -> Result<Vec<T>, Failure> {
    if samples.is_null() {
        return Err(Failure::new(
            CALLING_RESULT_NULL_PARAMETER,
            "`samples` is NULL",
        ));
    }
    if count == 0 || count > MAX_PUSH_SAMPLES {
        return Err(invalid(format!(
            "`count`: {count} is not 1 to {MAX_PUSH_SAMPLES}"
        )));
    }
    // SAFETY: not NULL, and the caller promises `count` readable samples.
    Ok(unsafe { std::slice::from_raw_parts(samples, count) }.to_vec())
}

/// Pushes `count` interleaved 16-bit samples of `channels` (1 or 2)
/// channels at 48 kHz, any chunk size up to 1 s, into the call. The
/// library copies them. The microphone must be `CALLING_AUDIO_SOURCE_RAW`.
/// Never blocks; any thread. `CALLING_RESULT_NOT_SENDING` outside a call,
/// `CALLING_RESULT_QUEUE_FULL` when the encoder is over a second behind,
/// `CALLING_RESULT_INVALID_ARGUMENT` for a count that does not split into
/// the channels.
///
/// # Safety
///
/// `client` is NULL or live; `samples` is NULL or readable for `count`
/// samples.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_push_audio_i16(
    client: *mut calling_client,
    samples: *const i16,
    count: usize,
    channels: u32,
) -> calling_result {
    with_client(client, "calling_client_push_audio_i16", |client| {
        // SAFETY: the caller promises `count` readable samples.
        let s = unsafe { copy_samples(samples, count) }?;
        push_audio(client, Samples::I16(s), channels)
    })
}

/// As `calling_client_push_audio_i16`, for 32-bit float samples (-1.0 to
/// 1.0; NaN or infinity is `CALLING_RESULT_INVALID_ARGUMENT`).
///
/// # Safety
///
/// `client` is NULL or live; `samples` is NULL or readable for `count`
/// samples.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_push_audio_f32(
    client: *mut calling_client,
    samples: *const f32,
    count: usize,
    channels: u32,
) -> calling_result {
    with_client(client, "calling_client_push_audio_f32", |client| {
        // SAFETY: the caller promises `count` readable samples.
        let s = unsafe { copy_samples(samples, count) }?;
        push_audio(client, Samples::F32(s), channels)
    })
}

/// Chooses what feeds the microphone track, a `calling_audio_source`
/// (default `CALLING_AUDIO_SOURCE_TONE`). `CALLING_RESULT_UNSUPPORTED` for
/// `CALLING_AUDIO_SOURCE_MICROPHONE` in a library built without the
/// `devices` feature; `CALLING_RESULT_INVALID_ARGUMENT` for another value.
///
/// # Safety
///
/// `config` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_audio_source(
    config: *mut calling_config,
    source: u32,
) -> calling_result {
    with_config(config, |config| {
        config.audio = match source {
            0 => AudioChoice::Tone,
            1 => AudioChoice::Raw,
            2 if cfg!(feature = "devices") => AudioChoice::Microphone(match &config.audio {
                AudioChoice::Microphone(name) => name.clone(),
                _ => None,
            }),
            2 => return Err(CALLING_RESULT_UNSUPPORTED),
            _ => return Err(CALLING_RESULT_INVALID_ARGUMENT),
        };
        Ok(())
    })
}

/// Uses the capture device named `name` (as `calling_audio_devices` lists
/// it; NULL: the system default) as the microphone, and makes
/// `CALLING_AUDIO_SOURCE_MICROPHONE` the audio source. A device that cannot
/// be opened when a call starts is a `CALLING_ERROR_AUDIO_SOURCE` error
/// event, and the others see the audio unavailable.
/// `CALLING_RESULT_UNSUPPORTED` without the `devices` feature.
///
/// # Safety
///
/// `config` is NULL or live; `name` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_microphone(
    config: *mut calling_config,
    name: *const c_char,
) -> calling_result {
    // SAFETY: as documented.
    let name = match unsafe { crate::result::opt_str_arg(name) } {
        Ok(n) => n.map(str::to_owned),
        Err(code) => return code,
    };
    with_config(config, |config| {
        if !cfg!(feature = "devices") {
            return Err(CALLING_RESULT_UNSUPPORTED);
        }
        config.audio = AudioChoice::Microphone(name);
        Ok(())
    })
}

/// Plays the remote users' audio, mixed, on the playback device named
/// `name` (NULL: the system default). Hands-free
/// (`calling_client_set_hands_free`) keeps this device.
/// `CALLING_RESULT_UNSUPPORTED` without the `devices` feature.
///
/// # Safety
///
/// `config` is NULL or live; `name` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_speaker(
    config: *mut calling_config,
    name: *const c_char,
) -> calling_result {
    // SAFETY: as documented.
    let name = match unsafe { crate::result::opt_str_arg(name) } {
        Ok(n) => n.map(str::to_owned),
        Err(code) => return code,
    };
    with_config(config, |config| {
        if !cfg!(feature = "devices") {
            return Err(CALLING_RESULT_UNSUPPORTED);
        }
        config.speaker = Some(SpeakerChoice { name });
        Ok(())
    })
}

/// Writes the names of the audio devices of `direction` (a
/// `calling_device_direction`) to `*out`, one per line, the default one
/// first. Free it with `calling_string_free`. `CALLING_RESULT_UNSUPPORTED`
/// without the `devices` feature; `CALLING_RESULT_MEDIA` when the sound
/// system cannot be asked.
///
/// # Safety
///
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_audio_devices(
    direction: u32,
    out: *mut *mut c_char,
) -> calling_result {
    crate::result::guard(|| {
        if let Err(code) = out_arg(out) {
            return code;
        }
        let names = match device_names(direction) {
            Ok(n) => n,
            Err(code) => return code,
        };
        let text = crate::result::c_text(names.join("\n"));
        // SAFETY: checked non-null, writable as documented.
        unsafe { *out = text.into_raw() };
        CALLING_RESULT_OK
    })
}

#[cfg(feature = "devices")]
fn device_names(direction: u32) -> Result<Vec<String>, calling_result> {
    use calling::devices;
    let list = match direction {
        0 => devices::input_devices(),
        1 => devices::output_devices(),
        _ => return Err(CALLING_RESULT_INVALID_ARGUMENT),
    };
    let mut list = list.map_err(|e| {
        tracing::warn!(error = %e, "cannot list audio devices");
        CALLING_RESULT_MEDIA
    })?;
    list.sort_by_key(|d| !d.is_default);
    Ok(list.into_iter().map(|d| d.name).collect())
}

#[cfg(not(feature = "devices"))]
fn device_names(direction: u32) -> Result<Vec<String>, calling_result> {
    if direction > 1 {
        return Err(CALLING_RESULT_INVALID_ARGUMENT);
    }
    Err(CALLING_RESULT_UNSUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_map_to_inputs() {
        let raw = RawAudioInput::new();
        let tone = AudioInput::default();
        assert_eq!(AudioChoice::Tone.input(tone.clone(), &raw), tone);
        assert_eq!(
            AudioChoice::Raw.input(tone.clone(), &raw),
            AudioInput::Raw(raw.clone())
        );
    }

    #[test]
    fn push_errors_have_their_codes() {
        assert_eq!(
            push_failure(PushError::NotSending).code(),
            CALLING_RESULT_NOT_SENDING
        );
        assert_eq!(
            push_failure(PushError::Full).code(),
            CALLING_RESULT_QUEUE_FULL
        );
    }
}
