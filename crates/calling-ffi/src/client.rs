//! The client handle: a tokio runtime, the facade client once logged in, the
//! task that forwards its events to C, and the frame sink; and the opaque
//! configuration a client is made from.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, c_char, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use calling::{
    Calling, CallingConfig, CallingError, Codec, EncodedFrame, Events, FrameSink, InviteId,
    MediaKind, MediaType, RawAudioInput, RawVideoInput, UserId, VideoInput, VideoQuality,
};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::event::{OwnedEvent, PolledEvent, calling_event};
use crate::result::calling_result::{self, *};
use crate::result::{
    c_text, catch, guard, guard_void, opt_str_arg, out_arg, str_arg, str_array_arg, try_ffi,
};

/// How long `calling_client_logout` and `calling_client_free` wait for the
/// last events of a stopping client to be delivered.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Fewest events `calling_config_set_event_capacity` accepts.
const MIN_EVENT_CAPACITY: u32 = 16;
/// Most events `calling_config_set_event_capacity` accepts.
const MAX_EVENT_CAPACITY: u32 = 1 << 20;
/// Highest tone frequency: half the 48 kHz sample rate.
const MAX_TONE_HZ: f32 = 24_000.0;

/// Built-in video sources for `calling_client_open_camera` and
/// `calling_config_set_video_source`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_video_source {
    /// No camera: calls start with video off.
    CALLING_VIDEO_SOURCE_NONE = 0,
    /// A moving test pattern, encoded as H.264.
    CALLING_VIDEO_SOURCE_TEST_PATTERN = 1,
    /// The app's own pictures, pushed with `calling_client_push_video`.
    CALLING_VIDEO_SOURCE_RAW = 2,
}

/// Video profiles for `calling_client_set_video_quality`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_video_quality {
    /// 640x480, 800 kbit/s (the default).
    CALLING_VIDEO_QUALITY_480P = 0,
    /// 1280x720, 1.5 Mbit/s.
    CALLING_VIDEO_QUALITY_720P = 1,
    /// 1920x1080, 3 Mbit/s.
    CALLING_VIDEO_QUALITY_1080P = 2,
}

/// The kind of a media frame.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_media_kind {
    /// Audio (Opus).
    CALLING_MEDIA_KIND_AUDIO = 1,
    /// Video (H.264 or VP8).
    CALLING_MEDIA_KIND_VIDEO = 2,
}

/// The encoding of a frame's bytes.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_codec {
    /// A codec this header does not know.
    CALLING_CODEC_UNKNOWN = 0,
    /// One Opus packet, 48 kHz clock.
    CALLING_CODEC_OPUS = 1,
    /// One H.264 access unit, Annex B, 90 kHz clock.
    CALLING_CODEC_H264 = 2,
    /// One VP8 frame, 90 kHz clock.
    CALLING_CODEC_VP8 = 3,
}

/// How to create a client: an opaque builder. Make one with
/// `calling_config_new` (defaults: no server URL, app id 0, the test
/// pattern camera at 480p, a 440 Hz tone, 1024 queued events), change it
/// with the `calling_config_set_*` functions, pass it to
/// `calling_client_new` (which copies it) and free it with
/// `calling_config_free`. Use one config from one thread at a time.
#[derive(Debug, Clone)]
pub struct calling_config {
    server_url: Option<String>,
    sdk_app_id: u64,
    video: Option<VideoInput>,
    video_quality: VideoQuality,
    tone_frequency_hz: f32,
    audio_file: Option<PathBuf>,
    event_capacity: u32,
    extra_ca_pem: Option<Vec<u8>>,
    udp_addrs: Option<Vec<std::net::SocketAddr>>,
    /// The camera is the app's pushed frames (`CALLING_VIDEO_SOURCE_RAW`).
    pub(crate) video_raw: bool,
    /// The microphone: tone/file, pushed samples or a device.
    pub(crate) audio: crate::media::AudioChoice,
    /// The output device for remote audio, if any (feature `devices`).
    pub(crate) speaker: Option<crate::media::SpeakerChoice>,
}

impl Default for calling_config {
    fn default() -> Self {
        calling_config {
            server_url: None,
            sdk_app_id: 0,
            video: Some(VideoInput::TestPattern),
            video_quality: VideoQuality::P480,
            tone_frequency_hz: 440.0,
            audio_file: None,
            event_capacity: 1024,
            extra_ca_pem: None,
            udp_addrs: None,
            video_raw: false,
            audio: crate::media::AudioChoice::Tone,
            speaker: None,
        }
    }
}

impl calling_config {
    /// The SDK configuration this describes.
    fn sdk_config(&self, raw_video: &RawVideoInput, raw_audio: &RawAudioInput) -> CallingConfig {
        let mut cfg = CallingConfig::default();
        cfg.media.video_quality = self.video_quality;
        cfg.video = if self.video_raw {
            Some(VideoInput::Raw(raw_video.clone()))
        } else {
            self.video.clone()
        };
        let tone = match &self.audio_file {
            Some(path) => calling::AudioInput::OggFile {
                path: path.clone(),
                looped: true,
            },
            None => calling::AudioInput::Tone {
                frequency_hz: self.tone_frequency_hz,
                amplitude: 0.3,
            },
        };
        cfg.audio = self.audio.input(tone, raw_audio);
        crate::media::apply_speaker(&mut cfg, self.speaker.as_ref());
        cfg.event_capacity = self.capacity();
        cfg.extra_ca_pem = self.extra_ca_pem.clone();
        if let Some(addrs) = &self.udp_addrs {
            cfg.media.udp_addrs = addrs.clone();
        }
        cfg
    }

    fn capacity(&self) -> usize {
        usize::try_from(self.event_capacity).unwrap_or(1024)
    }
}

/// Runs a setter on a config: checks the handle, the panic guard around it.
pub(crate) fn with_config(
    config: *mut calling_config,
    body: impl FnOnce(&mut calling_config) -> Result<(), calling_result>,
) -> calling_result {
    guard(|| {
        // SAFETY: the C caller passes NULL or a live config from
        // `calling_config_new`, used by one thread at a time.
        let Some(config) = (unsafe { config.as_mut() }) else {
            return CALLING_RESULT_NULL_PARAMETER;
        };
        match body(config) {
            Ok(()) => CALLING_RESULT_OK,
            Err(code) => code,
        }
    })
}

/// Creates a config with the defaults and writes it to `*out`. Free it
/// with `calling_config_free`.
///
/// # Safety
///
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_new(out: *mut *mut calling_config) -> calling_result {
    guard(|| {
        try_ffi!(out_arg(out));
        // SAFETY: checked non-null; the caller promises it is writable.
        unsafe { *out = Box::into_raw(Box::new(calling_config::default())) };
        CALLING_RESULT_OK
    })
}

/// Frees a config. NULL is accepted and ignored. Clients made from it are
/// not affected: `calling_client_new` copies what it needs.
///
/// # Safety
///
/// `config` is NULL or a config from `calling_config_new` not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_free(config: *mut calling_config) {
    guard_void(|| {
        if !config.is_null() {
            // SAFETY: from `calling_config_new`, not freed before.
            drop(unsafe { Box::from_raw(config) });
        }
    });
}

/// Sets the signaling server, e.g. `"ws://127.0.0.1:8080/ws"` (copied).
/// Required before `calling_client_new`. `CALLING_RESULT_INVALID_ARGUMENT`
/// unless it is a `ws://` or `wss://` URL.
///
/// # Safety
///
/// `config` is NULL or live; `url` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_server_url(
    config: *mut calling_config,
    url: *const c_char,
) -> calling_result {
    with_config(config, |config| {
        // SAFETY: as documented.
        let url = unsafe { str_arg(url) }?;
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"))
            .ok_or(CALLING_RESULT_INVALID_ARGUMENT)?;
        if rest.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CALLING_RESULT_INVALID_ARGUMENT);
        }
        config.server_url = Some(url.to_owned());
        Ok(())
    })
}

/// Sets the application id the UserSigs are signed for (default 0).
///
/// # Safety
///
/// `config` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_sdk_app_id(
    config: *mut calling_config,
    sdk_app_id: u64,
) -> calling_result {
    with_config(config, |config| {
        config.sdk_app_id = sdk_app_id;
        Ok(())
    })
}

/// Sets the camera used in video calls, a `calling_video_source` (default
/// the test pattern; `CALLING_VIDEO_SOURCE_NONE` starts calls with video
/// off). `CALLING_RESULT_INVALID_ARGUMENT` for another value.
///
/// # Safety
///
/// `config` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_video_source(
    config: *mut calling_config,
    source: u32,
) -> calling_result {
    with_config(config, |config| {
        (config.video, config.video_raw) = match source {
            0 => (None, false),
            1 => (Some(VideoInput::TestPattern), false),
            2 => (None, true),
            _ => return Err(CALLING_RESULT_INVALID_ARGUMENT),
        };
        Ok(())
    })
}

/// Sets the video profile, a `calling_video_quality` (default 480p).
/// `CALLING_RESULT_INVALID_ARGUMENT` for another value.
///
/// # Safety
///
/// `config` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_video_quality(
    config: *mut calling_config,
    quality: u32,
) -> calling_result {
    with_config(config, |config| {
        config.video_quality = quality_arg(quality)?;
        Ok(())
    })
}

/// Sets the frequency of the built-in microphone tone, in hertz (default
/// 440). `CALLING_RESULT_INVALID_ARGUMENT` unless above 0 and at most
/// 24000 (half the 48 kHz sample rate).
///
/// # Safety
///
/// `config` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_tone_frequency(
    config: *mut calling_config,
    hz: f32,
) -> calling_result {
    with_config(config, |config| {
        // NaN fails both comparisons.
        if !(hz > 0.0 && hz <= MAX_TONE_HZ) {
            return Err(CALLING_RESULT_INVALID_ARGUMENT);
        }
        config.tone_frequency_hz = hz;
        Ok(())
    })
}

/// Sends an Ogg/Opus file (looped) as the microphone instead of the tone;
/// NULL goes back to the tone. The path is copied; the file is opened when
/// a call starts (an ERROR event if it cannot be).
/// `CALLING_RESULT_INVALID_ARGUMENT` for an empty path.
///
/// # Safety
///
/// `config` is NULL or live; `path` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_audio_file(
    config: *mut calling_config,
    path: *const c_char,
) -> calling_result {
    with_config(config, |config| {
        // SAFETY: as documented.
        let path = unsafe { opt_str_arg(path) }?;
        if path.is_some_and(str::is_empty) {
            return Err(CALLING_RESULT_INVALID_ARGUMENT);
        }
        config.audio_file = path.map(PathBuf::from);
        Ok(())
    })
}

/// Sets how many events wait for the poll functions before the oldest are
/// dropped (and for the app before voice volumes are dropped); default
/// 1024. `CALLING_RESULT_INVALID_ARGUMENT` unless 16 to 1048576.
///
/// # Safety
///
/// `config` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_event_capacity(
    config: *mut calling_config,
    capacity: u32,
) -> calling_result {
    with_config(config, |config| {
        if !(MIN_EVENT_CAPACITY..=MAX_EVENT_CAPACITY).contains(&capacity) {
            return Err(CALLING_RESULT_INVALID_ARGUMENT);
        }
        config.event_capacity = capacity;
        Ok(())
    })
}

/// Trusts the CA certificates in a PEM file for a `wss://` server, in
/// addition to the system roots (for private deployments); NULL trusts the
/// system roots only again. The file is read now (a later change to it is
/// not seen). `CALLING_RESULT_INVALID_ARGUMENT` when it cannot be read or
/// holds no valid certificate.
///
/// # Safety
///
/// `config` is NULL or live; `path` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_extra_ca_pem(
    config: *mut calling_config,
    path: *const c_char,
) -> calling_result {
    with_config(config, |config| {
        // SAFETY: as documented.
        let path = unsafe { opt_str_arg(path) }?;
        config.extra_ca_pem = match path {
            None => None,
            Some(p) => Some(
                calling::read_ca_file(std::path::Path::new(p))
                    .map_err(|_| CALLING_RESULT_INVALID_ARGUMENT)?,
            ),
        };
        Ok(())
    })
}

/// The local UDP addresses media binds, as a comma-separated list of
/// `ip:port` (`"127.0.0.1:0"`, `"0.0.0.0:0,[::]:0"`, `"192.0.2.7:0"`; port 0
/// picks a free one per connection). `0.0.0.0` / `[::]` stand for every
/// interface; a loopback address adds candidates only this host can reach.
/// NULL restores the default: every interface (loopback on a host with
/// no other).
/// `CALLING_RESULT_INVALID_ARGUMENT` for an empty list or an entry that is
/// not an address (the config is left unchanged).
///
/// # Safety
///
/// `config` is NULL or live; `addrs` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_config_set_udp_addrs(
    config: *mut calling_config,
    addrs: *const c_char,
) -> calling_result {
    with_config(config, |config| {
        // SAFETY: as documented.
        let addrs = unsafe { opt_str_arg(addrs) }?;
        config.udp_addrs = match addrs {
            None => None,
            Some(list) => Some(parse_udp_addrs(list).ok_or(CALLING_RESULT_INVALID_ARGUMENT)?),
        };
        Ok(())
    })
}

/// `"a:1, b:2"` as addresses; `None` when empty or any entry is not one.
fn parse_udp_addrs(list: &str) -> Option<Vec<std::net::SocketAddr>> {
    let addrs = list
        .split(',')
        .map(|a| a.trim().parse().ok())
        .collect::<Option<Vec<_>>>()?;
    (!addrs.is_empty()).then_some(addrs)
}

/// Media figures of the connection with one remote user in the current
/// call (`calling_client_peer_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct calling_peer_stats {
    /// Whether media can flow (ICE and DTLS connected).
    pub connected: bool,
    /// RTP packets sent, all tracks.
    pub packets_sent: u64,
    /// RTP payload bytes sent, all tracks.
    pub bytes_sent: u64,
    /// RTP packets received, all tracks.
    pub packets_received: u64,
    /// RTP payload bytes received, all tracks.
    pub bytes_received: u64,
    /// Audio frames sent.
    pub audio_frames_sent: u64,
    /// Video frames sent.
    pub video_frames_sent: u64,
    /// Complete audio frames received.
    pub audio_frames_received: u64,
    /// Complete video frames received.
    pub video_frames_received: u64,
    /// Round-trip time in microseconds, 0 until measured.
    pub rtt_us: u64,
    /// Inbound packets lost.
    pub packets_lost: i64,
    /// Largest inbound interarrival jitter, in seconds.
    pub jitter: f64,
}

/// The kind of path media takes to a peer: how the candidates of the pair
/// ICE selected were obtained (`calling_client_peer_path`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum calling_ice_path {
    /// No pair selected yet (connecting, or the connection failed).
    CALLING_ICE_PATH_NONE = 0,
    /// Host addresses on both ends: the same LAN (or host).
    CALLING_ICE_PATH_HOST = 1,
    /// Through a NAT mapping learnt from a STUN server.
    CALLING_ICE_PATH_SERVER_REFLEXIVE = 2,
    /// Through a NAT mapping learnt from the peer's checks.
    CALLING_ICE_PATH_PEER_REFLEXIVE = 3,
    /// Through a TURN relay.
    CALLING_ICE_PATH_RELAY = 4,
}

/// One remote media frame, valid only during the frame callback.
#[repr(C)]
#[derive(Debug)]
pub struct calling_frame {
    /// Who sent it.
    pub user: *const c_char,
    /// A `calling_media_kind`.
    pub kind: u32,
    /// A `calling_codec`.
    pub codec: u32,
    /// The encoded bytes.
    pub data: *const u8,
    /// Bytes at `data`.
    pub len: usize,
    /// Whether the frame decodes on its own (always true for audio).
    pub keyframe: bool,
    /// The frame's RTP timestamp.
    pub rtp_timestamp: u32,
    /// Media time since the previous frame, in microseconds.
    pub duration_us: u64,
}

/// Called for every event, on one of the client's runtime threads. It must
/// return quickly and must not block or call blocking `calling_client_*`
/// functions (they return `CALLING_RESULT_WRONG_THREAD` there). `event` and
/// everything it points to is valid only during the call.
pub type calling_event_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const calling_event)>;

/// Called for every remote frame, on a runtime thread, under the same rules
/// as [`calling_event_callback`]. `frame` is valid only during the call.
pub type calling_frame_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, frame: *const calling_frame)>;

/// A callback and its user data.
pub(crate) struct Callback<F> {
    pub(crate) f: F,
    pub(crate) user_data: *mut c_void,
}

// SAFETY: the C API documents that user_data must be usable from any thread.
unsafe impl<F: Send> Send for Callback<F> {}

/// A mutex that survives a panic while held: the data is plain state that
/// stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the forwarding task, the frame sink and the C threads share.
struct Shared {
    /// Held while the callback runs, so that replacing or clearing it waits
    /// for a call in progress.
    event_cb: Mutex<Option<Callback<unsafe extern "C" fn(*mut c_void, *const calling_event)>>>,
    queue: Mutex<VecDeque<OwnedEvent>>,
    queued: Condvar,
    capacity: usize,
    frame_cb: Mutex<Option<Callback<unsafe extern "C" fn(*mut c_void, *const calling_frame)>>>,
    frames: Mutex<HashMap<(String, MediaKind), u64>>,
}

impl Shared {
    fn deliver(&self, event: OwnedEvent) {
        {
            let cb = lock(&self.event_cb);
            if let Some(cb) = cb.as_ref() {
                // SAFETY: the C caller registered this function for this
                // signature; the event outlives the call.
                unsafe { (cb.f)(cb.user_data, &event.raw) };
                return;
            }
        }
        let mut q = lock(&self.queue);
        if q.len() >= self.capacity {
            q.pop_front();
            tracing::warn!("event queue full: the oldest event was dropped");
        }
        q.push_back(event);
        self.queued.notify_all();
    }
}

/// The FFI's frame sink: counts every frame and hands it to the C callback.
struct Sink(Arc<Shared>);

impl FrameSink for Sink {
    fn on_frame(&self, user: &UserId, frame: &EncodedFrame) {
        let kind = frame.codec.kind();
        *lock(&self.0.frames)
            .entry((user.to_string(), kind))
            .or_insert(0) += 1;
        let cb = lock(&self.0.frame_cb);
        let Some(cb) = cb.as_ref() else { return };
        let Ok(user) = CString::new(user.as_str()) else {
            return;
        };
        let c = calling_frame {
            user: user.as_ptr(),
            kind: media_kind_code(kind),
            codec: match frame.codec {
                Codec::Opus => calling_codec::CALLING_CODEC_OPUS,
                Codec::H264 => calling_codec::CALLING_CODEC_H264,
                Codec::Vp8 => calling_codec::CALLING_CODEC_VP8,
            } as u32,
            data: frame.data.as_ptr(),
            len: frame.data.len(),
            keyframe: frame.keyframe,
            rtp_timestamp: frame.rtp_timestamp,
            duration_us: u64::try_from(frame.duration.as_micros()).unwrap_or(u64::MAX),
        };
        // SAFETY: registered by C for this signature; `c` and what it points
        // to outlive the call.
        unsafe { (cb.f)(cb.user_data, &c) };
    }
}

fn media_kind_code(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => calling_media_kind::CALLING_MEDIA_KIND_AUDIO as u32,
        MediaKind::Video => calling_media_kind::CALLING_MEDIA_KIND_VIDEO as u32,
    }
}

/// A logged-in session.
struct Session {
    calling: Calling,
    forwarder: JoinHandle<()>,
    /// Set by the forwarder before it delivers `KICKED_OUT` or
    /// `LOGIN_EXPIRED`, so that a login made in answer to either replaces
    /// this session even if it has not quite stopped yet.
    ended: Arc<AtomicBool>,
}

/// A calling client. Create with `calling_client_new`, free with
/// `calling_client_free`. Every function may be called from any thread
/// except the client's own runtime threads (inside callbacks).
pub struct calling_client {
    runtime: Option<Runtime>,
    url: String,
    sdk_app_id: u64,
    config: CallingConfig,
    session: Mutex<Option<Session>>,
    shared: Arc<Shared>,
    /// What the last failed operation said, for `calling_client_last_error`.
    last_error: Mutex<String>,
    /// Where `calling_client_push_video` frames go (the raw camera).
    pub(crate) raw_video: RawVideoInput,
    /// Where `calling_client_push_audio_*` samples go (the raw microphone).
    pub(crate) raw_audio: RawAudioInput,
    /// The decoded media callbacks.
    pub(crate) decoded: Arc<crate::media::DecodedCallbacks>,
}

/// Why an operation on a client failed: the code C gets back and, when
/// there is more to say than the code's text, the detail kept for
/// `calling_client_last_error`.
pub(crate) struct Failure {
    code: calling_result,
    detail: Option<String>,
}

impl Failure {
    /// The code C gets back.
    #[cfg(test)]
    pub(crate) fn code(&self) -> calling_result {
        self.code
    }

    pub(crate) fn new(code: calling_result, detail: impl Into<String>) -> Failure {
        Failure {
            code,
            detail: Some(detail.into()),
        }
    }
}

impl From<calling_result> for Failure {
    fn from(code: calling_result) -> Failure {
        Failure { code, detail: None }
    }
}

impl From<&CallingError> for Failure {
    fn from(e: &CallingError) -> Failure {
        Failure::new(calling_result::from(e), e.to_string())
    }
}

/// An argument check, naming the argument in the detail when it fails.
pub(crate) fn arg<T>(name: &str, checked: Result<T, calling_result>) -> Result<T, Failure> {
    checked.map_err(|code| Failure::new(code, format!("`{name}`: {}", code.describe())))
}

impl calling_client {
    fn rt(&self) -> Result<&Runtime, calling_result> {
        if tokio::runtime::Handle::try_current().is_ok() || crate::media::in_decoded_callback() {
            return Err(CALLING_RESULT_WRONG_THREAD);
        }
        self.runtime.as_ref().ok_or(CALLING_RESULT_PANIC)
    }

    /// The logged-in facade client.
    pub(crate) fn calling(&self) -> Result<Calling, calling_result> {
        lock(&self.session)
            .as_ref()
            .map(|s| s.calling.clone())
            .ok_or(CALLING_RESULT_NOT_LOGGED_IN)
    }

    /// Runs one facade operation to completion on the runtime.
    pub(crate) fn run<T, F>(&self, op: impl FnOnce(Calling) -> F) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, CallingError>>,
    {
        let rt = self.rt()?;
        let calling = self.calling()?;
        rt.block_on(op(calling)).map_err(|e| {
            tracing::debug!(error = %e, "operation failed");
            Failure::from(&e)
        })
    }

    /// The figures of the media connection with `user` in the current
    /// call; `CALLING_RESULT_NOT_IN_CALL` when there is none.
    fn peer_stats(&self, user: &str) -> Result<calling::PeerStats, Failure> {
        let all = self.run(|c| async move { c.stats().await })?;
        all.into_iter()
            .find(|p| p.user.as_str() == user)
            .ok_or_else(|| {
                Failure::new(
                    CALLING_RESULT_NOT_IN_CALL,
                    format!("no connection with {user:?} in the current call"),
                )
            })
    }

    /// Stops the session, if any: logs out, then waits (bounded) until the
    /// forwarding task has delivered the last events.
    fn stop_session(&self) -> Result<(), Failure> {
        let rt = self.rt()?;
        let Some(session) = lock(&self.session).take() else {
            return Err(CALLING_RESULT_NOT_LOGGED_IN.into());
        };
        let result = rt.block_on(session.calling.logout());
        drop(session.calling);
        let mut forwarder = session.forwarder;
        rt.block_on(async {
            if tokio::time::timeout(DRAIN_WAIT, &mut forwarder)
                .await
                .is_err()
            {
                forwarder.abort();
                let _ = forwarder.await;
            }
        });
        result.map_err(|e| Failure::from(&e))
    }

    /// Keeps what a failed operation `op` said and returns its code.
    /// `CALLING_RESULT_NO_EVENT` is an answer, not a failure: not kept.
    fn fail(&self, op: &str, failure: Failure) -> calling_result {
        if failure.code != CALLING_RESULT_NO_EVENT {
            let detail = failure
                .detail
                .unwrap_or_else(|| failure.code.describe().to_owned());
            *lock(&self.last_error) = format!("{op}: {detail}");
        }
        failure.code
    }
}

/// Runs the body of an entry point on a client, named `op` in the last
/// error: checks the handle, keeps the failure's detail for
/// `calling_client_last_error`, and turns a panic into
/// `CALLING_RESULT_PANIC` (kept too).
pub(crate) fn with_client(
    client: *const calling_client,
    op: &str,
    body: impl FnOnce(&calling_client) -> Result<(), Failure>,
) -> calling_result {
    guard(|| {
        let client = try_ffi!(client_ref(client));
        let outcome = catch(|| body(client)).unwrap_or_else(|panic| {
            Err(Failure::new(
                CALLING_RESULT_PANIC,
                format!("the library panicked: {panic}"),
            ))
        });
        match outcome {
            Ok(()) => CALLING_RESULT_OK,
            Err(failure) => client.fail(op, failure),
        }
    })
}

fn client_ref<'a>(client: *const calling_client) -> Result<&'a calling_client, calling_result> {
    // SAFETY: the C caller passes NULL or a live client from
    // `calling_client_new`.
    unsafe { client.as_ref() }.ok_or(CALLING_RESULT_NULL_PARAMETER)
}

fn media_type_arg(m: u32) -> Result<MediaType, Failure> {
    u8::try_from(m)
        .ok()
        .and_then(MediaType::from_code)
        .ok_or_else(|| {
            Failure::new(
                CALLING_RESULT_INVALID_ARGUMENT,
                format!("`media_type`: {m} is not a calling_media_type"),
            )
        })
}

fn quality_arg(q: u32) -> Result<VideoQuality, calling_result> {
    match q {
        0 => Ok(VideoQuality::P480),
        1 => Ok(VideoQuality::P720),
        2 => Ok(VideoQuality::P1080),
        _ => Err(CALLING_RESULT_INVALID_ARGUMENT),
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// Hands a Rust string to C; free it with `calling_string_free`.
fn string_out(s: &str, out: *mut *mut c_char) -> Result<(), Failure> {
    // Ids are ASCII without NUL, so this only fails on a broken invariant.
    let Ok(c) = CString::new(s) else {
        return Err(Failure::new(
            CALLING_RESULT_INVALID_ARGUMENT,
            "a string to return holds a NUL byte",
        ));
    };
    // SAFETY: `out` was checked non-null by the caller of this helper.
    unsafe { *out = c.into_raw() };
    Ok(())
}

/// Creates a client (not logged in yet) from `config` and writes it to
/// `*out`. The client keeps a copy of the config: free or change the config
/// afterwards as you like. `CALLING_RESULT_INVALID_ARGUMENT` if the config
/// has no server URL.
///
/// # Safety
///
/// `config` is NULL or a live config; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_new(
    config: *const calling_config,
    out: *mut *mut calling_client,
) -> calling_result {
    guard(|| {
        try_ffi!(out_arg(out));
        // SAFETY: NULL or a live config, as documented.
        let Some(c) = (unsafe { config.as_ref() }) else {
            return CALLING_RESULT_NULL_PARAMETER;
        };
        let Some(url) = c.server_url.clone() else {
            return CALLING_RESULT_INVALID_ARGUMENT;
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("calling-ffi")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the runtime");
                return CALLING_RESULT_IO;
            }
        };
        let (raw_video, raw_audio) = (RawVideoInput::new(), RawAudioInput::new());
        let client = calling_client {
            runtime: Some(runtime),
            url,
            sdk_app_id: c.sdk_app_id,
            config: c.sdk_config(&raw_video, &raw_audio),
            session: Mutex::new(None),
            shared: Arc::new(Shared {
                event_cb: Mutex::new(None),
                queue: Mutex::new(VecDeque::new()),
                queued: Condvar::new(),
                capacity: c.capacity(),
                frame_cb: Mutex::new(None),
                frames: Mutex::new(HashMap::new()),
            }),
            last_error: Mutex::new(String::new()),
            raw_video,
            raw_audio,
            decoded: Arc::default(),
        };
        // SAFETY: checked non-null; the caller promises it is writable.
        unsafe { *out = Box::into_raw(Box::new(client)) };
        CALLING_RESULT_OK
    })
}

/// Frees a client: logs out if logged in, stops its threads and waits for
/// any callback in progress. No callback runs after this returns. NULL is
/// accepted and ignored. Must not be called from inside a callback.
///
/// # Safety
///
/// `client` is NULL or a client from `calling_client_new` not freed before,
/// and no other thread uses it any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_free(client: *mut calling_client) {
    guard_void(|| {
        if client.is_null() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking here would deadlock the runtime; leaking is the only
            // safe answer to this misuse.
            tracing::error!("calling_client_free called from a callback: the client is leaked");
            return;
        }
        // SAFETY: from `calling_client_new`, not freed before.
        let mut client = unsafe { Box::from_raw(client) };
        // No callback may start once these are cleared; taking the locks
        // waits for one in progress.
        *lock(&client.shared.event_cb) = None;
        *lock(&client.shared.frame_cb) = None;
        let _ = client.stop_session();
        if let Some(rt) = client.runtime.take() {
            rt.shutdown_timeout(DRAIN_WAIT);
        }
    });
}

/// Writes a copy of the detail of the most recent failed operation on this
/// client (from any thread) to `*out`, e.g. `"calling_client_login:
/// transport: login refused: sig_expired: ..."`: the function that failed,
/// then why. An empty string if none has failed yet. A later success does
/// not clear it; `CALLING_RESULT_NO_EVENT` is not a failure and does not
/// change it, nor does this function. Free the copy with
/// `calling_string_free`. Never blocks; may be called inside a callback.
///
/// # Safety
///
/// `client` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_last_error(
    client: *const calling_client,
    out: *mut *mut c_char,
) -> calling_result {
    guard(|| {
        let client = try_ffi!(client_ref(client));
        try_ffi!(out_arg(out));
        // A server's message could hold a NUL: cut it there.
        let text = c_text(lock(&client.last_error).clone());
        // SAFETY: checked non-null, writable as documented.
        unsafe { *out = text.into_raw() };
        CALLING_RESULT_OK
    })
}

/// Registers the event callback (NULL `callback` removes it). While one is
/// registered, events go to it and not to the poll queue. Replacing it waits
/// for a call of the old one in progress.
///
/// # Safety
///
/// `client` is NULL or live; `user_data` must be usable from any thread
/// until the callback is replaced or the client freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_set_event_callback(
    client: *mut calling_client,
    callback: calling_event_callback,
    user_data: *mut c_void,
) -> calling_result {
    with_client(client, "calling_client_set_event_callback", |client| {
        client.rt()?;
        *lock(&client.shared.event_cb) = callback.map(|f| Callback { f, user_data });
        Ok(())
    })
}

/// Registers the remote frame callback (NULL removes it). Frames are
/// counted whether or not one is registered.
///
/// # Safety
///
/// As `calling_client_set_event_callback`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_set_frame_callback(
    client: *mut calling_client,
    callback: calling_frame_callback,
    user_data: *mut c_void,
) -> calling_result {
    with_client(client, "calling_client_set_frame_callback", |client| {
        client.rt()?;
        *lock(&client.shared.frame_cb) = callback.map(|f| Callback { f, user_data });
        Ok(())
    })
}

/// Takes the oldest queued event without waiting: `CALLING_RESULT_NO_EVENT`
/// when there is none. Free the event with `calling_event_free`.
///
/// # Safety
///
/// `client` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_poll_event(
    client: *mut calling_client,
    out: *mut *mut calling_event,
) -> calling_result {
    // SAFETY: forwarded.
    unsafe { calling_client_wait_event(client, 0, out) }
}

/// Takes the oldest queued event, waiting up to `timeout_ms` milliseconds
/// for one: `CALLING_RESULT_NO_EVENT` when none came. Free the event with
/// `calling_event_free`. Waiting (`timeout_ms > 0`) is refused inside a
/// callback with `CALLING_RESULT_WRONG_THREAD`.
///
/// # Safety
///
/// `client` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_wait_event(
    client: *mut calling_client,
    timeout_ms: u32,
    out: *mut *mut calling_event,
) -> calling_result {
    with_client(client, "calling_client_wait_event", |client| {
        arg("out", out_arg(out))?;
        if timeout_ms > 0 {
            // Waiting would hold up a runtime thread, maybe the one that
            // would deliver the event.
            client.rt()?;
        }
        let q = lock(&client.shared.queue);
        let (mut q, _) = client
            .shared
            .queued
            .wait_timeout_while(q, Duration::from_millis(u64::from(timeout_ms)), |q| {
                q.is_empty()
            })
            .unwrap_or_else(|e| e.into_inner());
        let Some(event) = q.pop_front() else {
            return Err(CALLING_RESULT_NO_EVENT.into());
        };
        // SAFETY: checked non-null, writable as documented.
        unsafe { *out = PolledEvent::into_raw(event) };
        Ok(())
    })
}

/// Remote frames of `kind` (a `calling_media_kind`) received from `user`
/// over the client's life, written to `*out`.
///
/// # Safety
///
/// `client` is NULL or live; `user` NULL or NUL-terminated; `out` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_frames_received(
    client: *mut calling_client,
    user: *const c_char,
    kind: u32,
    out: *mut u64,
) -> calling_result {
    with_client(client, "calling_client_frames_received", |client| {
        // SAFETY: as documented.
        let user = arg("user", unsafe { str_arg(user) })?;
        arg("out", out_arg(out))?;
        let kind = match kind {
            1 => MediaKind::Audio,
            2 => MediaKind::Video,
            _ => {
                return Err(Failure::new(
                    CALLING_RESULT_INVALID_ARGUMENT,
                    format!("`kind`: {kind} is not a calling_media_kind"),
                ));
            }
        };
        let n = lock(&client.shared.frames)
            .get(&(user.to_owned(), kind))
            .copied()
            .unwrap_or(0);
        // SAFETY: checked non-null, writable as documented.
        unsafe { *out = n };
        Ok(())
    })
}

/// Logs in to the configured server as `user_id` with `user_sig`
/// (TRTCCalling `login`). Blocks until the server answers: at most about
/// 5 s to connect and log in, plus up to 5 s letting the last events of a
/// session that was kicked out or expired through first. A refusal is
/// `CALLING_RESULT_LOGIN_SIG_EXPIRED`, `_LOGIN_BAD_SIGNATURE`,
/// `_LOGIN_WRONG_APP` or `_LOGIN_REFUSED`; the server's reason is in
/// `calling_client_last_error`.
///
/// # Safety
///
/// `client` is NULL or live; the strings NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_login(
    client: *mut calling_client,
    user_id: *const c_char,
    user_sig: *const c_char,
) -> calling_result {
    with_client(client, "calling_client_login", |client| {
        // SAFETY: as documented.
        let user_id = arg("user_id", unsafe { str_arg(user_id) })?;
        // SAFETY: as documented.
        let user_sig = arg("user_sig", unsafe { str_arg(user_sig) })?;
        let rt = client.rt()?;
        let mut session = lock(&client.session);
        if let Some(s) = session.as_ref() {
            if !s.forwarder.is_finished() && !s.ended.load(Ordering::Acquire) {
                return Err(CALLING_RESULT_ALREADY_LOGGED_IN.into());
            }
        }
        // Kicked out or expired: the old session is over; let its last
        // events through before the new one starts.
        if let Some(old) = session.take() {
            let mut forwarder = old.forwarder;
            drop(old.calling);
            rt.block_on(async {
                if tokio::time::timeout(DRAIN_WAIT, &mut forwarder)
                    .await
                    .is_err()
                {
                    forwarder.abort();
                }
            });
        }
        let shared = Arc::clone(&client.shared);
        let sink: Arc<dyn FrameSink> = Arc::new(Sink(Arc::clone(&shared)));
        // Decoding costs CPU: only when C asked for decoded media.
        let decoded = client.decoded.sink();
        let logged_in = rt.block_on(async {
            let (calling, events) = Calling::login(calling::Login {
                server: client.url.to_string(),
                sdk_app_id: client.sdk_app_id,
                user_id: user_id.to_string(),
                user_sig: user_sig.to_string(),
                config: client.config.clone(),
            })
            .await?;
            calling.set_frame_sink(Some(sink)).await?;
            if let Some(sink) = decoded {
                calling.set_decoded_sink(Some(sink)).await?;
            }
            Ok::<_, CallingError>((calling, events))
        });
        let (calling, events) = logged_in.map_err(|e| {
            tracing::info!(error = %e, "login failed");
            Failure::from(&e)
        })?;
        let ended = Arc::new(AtomicBool::new(false));
        let forwarder = rt.spawn(forward(events, shared, Arc::clone(&ended)));
        *session = Some(Session {
            calling,
            forwarder,
            ended,
        });
        Ok(())
    })
}

/// Delivers every event of a session, until the client stops.
async fn forward(mut events: Events, shared: Arc<Shared>, ended: Arc<AtomicBool>) {
    while let Some(event) = events.recv().await {
        if matches!(
            event,
            calling::Event::KickedOut | calling::Event::LoginExpired
        ) {
            ended.store(true, Ordering::Release);
        }
        let owned = OwnedEvent::new(&event);
        shared.deliver(owned);
    }
}

/// Logs out (TRTCCalling `logout`): a call in progress ends. The last
/// events (CALL_END) are delivered before this returns.
/// `CALLING_RESULT_NOT_LOGGED_IN` if the client is not logged in.
///
/// # Safety
///
/// `client` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_logout(client: *mut calling_client) -> calling_result {
    // Kicked out before: the logout fails (not logged in), but the session
    // is gone now all the same.
    with_client(client, "calling_client_logout", |client| {
        client.stop_session()
    })
}

/// Calls one user (TRTCCalling `call`); `media_type` is a
/// `calling_media_type`, `timeout_secs` the ringing time (0: no timeout).
/// Writes the call id to `*out_call_id` (free with `calling_string_free`).
///
/// # Safety
///
/// `client` NULL or live; `user` NULL or NUL-terminated; `out_call_id`
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_call(
    client: *mut calling_client,
    user: *const c_char,
    media_type: u32,
    timeout_secs: u32,
    out_call_id: *mut *mut c_char,
) -> calling_result {
    with_client(client, "calling_client_call", |client| {
        // SAFETY: as documented.
        let user = arg("user", unsafe { str_arg(user) })?;
        arg("out_call_id", out_arg(out_call_id))?;
        let media = media_type_arg(media_type)?;
        let id = client.run(|c| async move { c.call(user, media, secs(timeout_secs)).await })?;
        string_out(id.as_str(), out_call_id)
    })
}

/// Calls several users at once (TRTCCalling `groupCall`): `users` holds
/// `users_len` user ids. Writes the call id to `*out_call_id`.
///
/// # Safety
///
/// `client` NULL or live; `users` NULL or `users_len` NUL-terminated
/// strings; `out_call_id` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_group_call(
    client: *mut calling_client,
    users: *const *const c_char,
    users_len: usize,
    media_type: u32,
    timeout_secs: u32,
    out_call_id: *mut *mut c_char,
) -> calling_result {
    with_client(client, "calling_client_group_call", |client| {
        // SAFETY: as documented.
        let users = arg("users", unsafe { str_array_arg(users, users_len) })?;
        arg("out_call_id", out_arg(out_call_id))?;
        let media = media_type_arg(media_type)?;
        let id =
            client.run(|c| async move { c.group_call(&users, media, secs(timeout_secs)).await })?;
        string_out(id.as_str(), out_call_id)
    })
}

/// Calls with every option (TUICallKit `calls`): `user_data` (shown to the
/// invitees) and `group_id` may be NULL. One user without a group id is a
/// 1v1 call, anything else a group call.
///
/// # Safety
///
/// As `calling_client_group_call`; `user_data` and `group_id` NULL or
/// NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_call_with(
    client: *mut calling_client,
    users: *const *const c_char,
    users_len: usize,
    media_type: u32,
    timeout_secs: u32,
    user_data: *const c_char,
    group_id: *const c_char,
    out_call_id: *mut *mut c_char,
) -> calling_result {
    with_client(client, "calling_client_call_with", |client| {
        // SAFETY: as documented.
        let users = arg("users", unsafe { str_array_arg(users, users_len) })?;
        // SAFETY: as documented.
        let user_data = arg("user_data", unsafe { opt_str_arg(user_data) })?;
        // SAFETY: as documented.
        let group_id = arg("group_id", unsafe { opt_str_arg(group_id) })?;
        arg("out_call_id", out_arg(out_call_id))?;
        let media = media_type_arg(media_type)?;
        let group_id = match group_id.map(calling::GroupId::new).transpose() {
            Ok(g) => g,
            Err(e) => {
                return Err(Failure::new(
                    CALLING_RESULT_INVALID_ARGUMENT,
                    format!("`group_id`: {e}"),
                ));
            }
        };
        let options = calling::CallOptions {
            timeout: timeout_secs,
            user_data: user_data.map(str::to_owned),
            group_id,
        };
        let id = client.run(|c| async move { c.call_with(&users, media, options).await })?;
        string_out(id.as_str(), out_call_id)
    })
}

/// Which answer to give an invite.
#[derive(Clone, Copy)]
enum Answer {
    Accept,
    Reject,
    Ignore,
}

fn answer(
    client: *mut calling_client,
    op: &str,
    invite_id: *const c_char,
    how: Answer,
) -> calling_result {
    with_client(client, op, |client| {
        // SAFETY: the public wrappers document the same contract.
        let invite_id = arg("invite_id", unsafe { str_arg(invite_id) })?;
        let Ok(invite_id) = InviteId::new(invite_id) else {
            return Err(Failure::new(
                CALLING_RESULT_NO_SUCH_INVITE,
                format!("`invite_id`: {invite_id:?} is not an invite id"),
            ));
        };
        client.run(|c| async move {
            match how {
                Answer::Accept => c.accept(&invite_id).await,
                Answer::Reject => c.reject(&invite_id).await,
                Answer::Ignore => c.ignore(&invite_id).await,
            }
        })?;
        Ok(())
    })
}

/// Accepts the ringing invite `invite_id` (from `CALLING_EVENT_INVITED`).
///
/// # Safety
///
/// `client` NULL or live; `invite_id` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_accept(
    client: *mut calling_client,
    invite_id: *const c_char,
) -> calling_result {
    answer(client, "calling_client_accept", invite_id, Answer::Accept)
}

/// Declines the ringing invite `invite_id`.
///
/// # Safety
///
/// As `calling_client_accept`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_reject(
    client: *mut calling_client,
    invite_id: *const c_char,
) -> calling_result {
    answer(client, "calling_client_reject", invite_id, Answer::Reject)
}

/// Stops ringing for `invite_id` without answering (TUICallKit `ignore`).
///
/// # Safety
///
/// As `calling_client_accept`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_ignore(
    client: *mut calling_client,
    invite_id: *const c_char,
) -> calling_result {
    answer(client, "calling_client_ignore", invite_id, Answer::Ignore)
}

/// Leaves the call, or cancels it if nobody answered yet. Does nothing
/// (and succeeds) without a call.
///
/// # Safety
///
/// `client` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_hangup(client: *mut calling_client) -> calling_result {
    with_client(client, "calling_client_hangup", |client| {
        client.run(|c| async move { c.hangup().await })?;
        Ok(())
    })
}

/// Invites more users into the running call; writes the invite id to
/// `*out_invite_id` (free with `calling_string_free`).
///
/// # Safety
///
/// As `calling_client_group_call`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_invite(
    client: *mut calling_client,
    users: *const *const c_char,
    users_len: usize,
    timeout_secs: u32,
    out_invite_id: *mut *mut c_char,
) -> calling_result {
    with_client(client, "calling_client_invite", |client| {
        // SAFETY: as documented.
        let users = arg("users", unsafe { str_array_arg(users, users_len) })?;
        arg("out_invite_id", out_arg(out_invite_id))?;
        let id = client.run(|c| async move { c.invite(&users, secs(timeout_secs)).await })?;
        string_out(id.as_str(), out_invite_id)
    })
}

/// Joins a running call (TUICallKit `joinInGroupCall`) with the join
/// ticket a member handed out (`calling_client_join_ticket` on the member's
/// side, text form `host:secret`). Knowing the call id alone is not enough.
///
/// # Safety
///
/// `client` NULL or live; `call_id` and `ticket` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_join(
    client: *mut calling_client,
    call_id: *const c_char,
    ticket: *const c_char,
) -> calling_result {
    with_client(client, "calling_client_join", |client| {
        // SAFETY: as documented.
        let call_id = arg("call_id", unsafe { str_arg(call_id) })?;
        // SAFETY: as documented.
        let ticket = arg("ticket", unsafe { str_arg(ticket) })?;
        client.run(|c| async move { c.join(call_id, ticket).await })?;
        Ok(())
    })
}

/// Writes the join ticket of the current call to `*out` (free it with
/// `calling_string_free`): hand it, with the call id, to whoever may join.
/// `CALLING_RESULT_NOT_IN_CALL` while not connected in a call.
///
/// # Safety
///
/// `client` NULL or live; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_join_ticket(
    client: *mut calling_client,
    out: *mut *mut c_char,
) -> calling_result {
    with_client(client, "calling_client_join_ticket", |client| {
        arg("out", out_arg(out))?;
        let snapshot = client.run(|c| async move { c.current_call().await })?;
        match snapshot.and_then(|s| s.join_ticket) {
            Some(ticket) => string_out(&ticket.to_string(), out),
            None => Err(CALLING_RESULT_NOT_IN_CALL.into()),
        }
    })
}

/// Switches the call to `media_type` (a `calling_media_type`); switching to
/// video asks the others first.
///
/// # Safety
///
/// `client` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_switch_media_type(
    client: *mut calling_client,
    media_type: u32,
) -> calling_result {
    with_client(client, "calling_client_switch_media_type", |client| {
        let to = media_type_arg(media_type)?;
        client.run(|c| async move { c.switch_media_type(to).await })?;
        Ok(())
    })
}

/// Answers `CALLING_EVENT_MEDIA_TYPE_SWITCH_REQUESTED`.
///
/// # Safety
///
/// `client` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_answer_media_switch(
    client: *mut calling_client,
    request_id: u32,
    accept: bool,
) -> calling_result {
    with_client(client, "calling_client_answer_media_switch", |client| {
        client.run(|c| async move { c.answer_media_switch(request_id, accept).await })?;
        Ok(())
    })
}

/// Mutes or unmutes the microphone; the others see
/// `CALLING_EVENT_USER_AUDIO_AVAILABLE`.
///
/// # Safety
///
/// `client` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_set_mic_mute(
    client: *mut calling_client,
    muted: bool,
) -> calling_result {
    with_client(client, "calling_client_set_mic_mute", |client| {
        client.run(|c| async move { c.set_mic_mute(muted).await })?;
        Ok(())
    })
}

/// Hands-free (TRTCCalling `setHandsFree`): `true` plays remote audio on
/// the speaker of `calling_config_set_speaker`, `false` (the default) on
/// the earpiece; with a single speaker, both play there. Without a speaker
/// the app plays the audio and this is only remembered. Never mutes.
///
/// # Safety
///
/// `client` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_set_hands_free(
    client: *mut calling_client,
    on: bool,
) -> calling_result {
    with_client(client, "calling_client_set_hands_free", |client| {
        client.run(|c| async move { c.set_hands_free(on).await })?;
        Ok(())
    })
}

/// Opens the camera with a built-in source (a `calling_video_source` other
/// than NONE); the others see `CALLING_EVENT_USER_VIDEO_AVAILABLE`.
///
/// # Safety
///
/// `client` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_open_camera(
    client: *mut calling_client,
    source: u32,
) -> calling_result {
    with_client(client, "calling_client_open_camera", |client| {
        let input = match source {
            1 => VideoInput::TestPattern,
            2 => VideoInput::Raw(client.raw_video.clone()),
            _ => {
                return Err(Failure::new(
                    CALLING_RESULT_INVALID_ARGUMENT,
                    format!("`source`: {source} is not a camera source"),
                ));
            }
        };
        client.run(|c| async move { c.open_camera(input).await })?;
        Ok(())
    })
}

/// Opens the camera on an H.264 Annex B file played at `fps` frames per
/// second, from the start again at the end if `looped`.
///
/// # Safety
///
/// `client` NULL or live; `path` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_open_camera_file(
    client: *mut calling_client,
    path: *const c_char,
    fps: u32,
    looped: bool,
) -> calling_result {
    with_client(client, "calling_client_open_camera_file", |client| {
        // SAFETY: as documented.
        let path = arg("path", unsafe { str_arg(path) })?;
        if fps == 0 || fps > 240 {
            return Err(Failure::new(
                CALLING_RESULT_INVALID_ARGUMENT,
                format!("`fps`: {fps} is not 1 to 240"),
            ));
        }
        let input = VideoInput::H264File {
            path: PathBuf::from(path),
            fps,
            looped,
        };
        client.run(|c| async move { c.open_camera(input).await })?;
        Ok(())
    })
}

/// Closes the camera.
///
/// # Safety
///
/// `client` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_close_camera(
    client: *mut calling_client,
) -> calling_result {
    with_client(client, "calling_client_close_camera", |client| {
        client.run(|c| async move { c.close_camera().await })?;
        Ok(())
    })
}

/// Sets the video profile (a `calling_video_quality`).
///
/// # Safety
///
/// `client` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_set_video_quality(
    client: *mut calling_client,
    quality: u32,
) -> calling_result {
    with_client(client, "calling_client_set_video_quality", |client| {
        let quality = quality_arg(quality).map_err(|code| {
            Failure::new(
                code,
                format!("`quality`: {quality} is not a calling_video_quality"),
            )
        })?;
        client.run(|c| async move { c.set_video_quality(quality).await })?;
        Ok(())
    })
}

/// Writes the id of the current call to `*out_call_id` (free with
/// `calling_string_free`); `CALLING_RESULT_NOT_IN_CALL` without one.
///
/// # Safety
///
/// `client` NULL or live; `out_call_id` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_current_call(
    client: *mut calling_client,
    out_call_id: *mut *mut c_char,
) -> calling_result {
    with_client(client, "calling_client_current_call", |client| {
        arg("out_call_id", out_arg(out_call_id))?;
        let snapshot = client.run(|c| async move { c.current_call().await })?;
        match snapshot {
            Some(s) => string_out(s.call_id.as_str(), out_call_id),
            None => Err(CALLING_RESULT_NOT_IN_CALL.into()),
        }
    })
}

/// Writes the kind of path media to `user` in the current call takes to
/// `*out` (`CALLING_ICE_PATH_NONE` until ICE selects a pair);
/// `CALLING_RESULT_NOT_IN_CALL` if there is no connection with `user`.
///
/// # Safety
///
/// `client` NULL or live; `user` NULL or NUL-terminated; `out` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_peer_path(
    client: *mut calling_client,
    user: *const c_char,
    out: *mut calling_ice_path,
) -> calling_result {
    with_client(client, "calling_client_peer_path", |client| {
        // SAFETY: as documented.
        let user = arg("user", unsafe { str_arg(user) })?;
        arg("out", out_arg(out))?;
        let p = client.peer_stats(user)?;
        let path = match p.selected_pair.map(|pair| pair.path()) {
            None => calling_ice_path::CALLING_ICE_PATH_NONE,
            Some(calling::CandidateKind::Host) => calling_ice_path::CALLING_ICE_PATH_HOST,
            Some(calling::CandidateKind::ServerReflexive) => {
                calling_ice_path::CALLING_ICE_PATH_SERVER_REFLEXIVE
            }
            Some(calling::CandidateKind::PeerReflexive) => {
                calling_ice_path::CALLING_ICE_PATH_PEER_REFLEXIVE
            }
            Some(calling::CandidateKind::Relay) => calling_ice_path::CALLING_ICE_PATH_RELAY,
        };
        // SAFETY: checked non-null, writable as documented.
        unsafe { out.write(path) };
        Ok(())
    })
}

/// Writes the media figures of the connection with `user` in the current
/// call to `*out`; `CALLING_RESULT_NOT_IN_CALL` if there is no such
/// connection.
///
/// # Safety
///
/// `client` NULL or live; `user` NULL or NUL-terminated; `out` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calling_client_peer_stats(
    client: *mut calling_client,
    user: *const c_char,
    out: *mut calling_peer_stats,
) -> calling_result {
    with_client(client, "calling_client_peer_stats", |client| {
        // SAFETY: as documented.
        let user = arg("user", unsafe { str_arg(user) })?;
        arg("out", out_arg(out))?;
        let p = client.peer_stats(user)?;
        let stats = calling_peer_stats {
            connected: matches!(p.state, Some(calling::PeerState::Connected)),
            packets_sent: p.packets_sent,
            bytes_sent: p.bytes_sent,
            packets_received: p.packets_received,
            bytes_received: p.bytes_received,
            audio_frames_sent: p.audio_frames_sent,
            video_frames_sent: p.video_frames_sent,
            audio_frames_received: p.audio_frames_received,
            video_frames_received: p.video_frames_received,
            rtt_us: p
                .rtt
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            packets_lost: p.packets_lost,
            jitter: p.jitter,
        };
        // SAFETY: checked non-null, writable as documented.
        unsafe { out.write(stats) };
        Ok(())
    })
}
