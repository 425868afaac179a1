//! The audio devices of one call (feature `devices`): the microphone that
//! feeds the call's raw audio source and the speaker that plays the mixed
//! remote audio, next to the app's own decoded sink.

use std::sync::Arc;

use calling_media::{AudioSource, DecodedAudioFrame, DecodedSink, DecodedVideoFrame, UserId};

use crate::config::{AudioInput, AudioOutput};

/// Hands every decoded frame to each of its sinks.
struct Fanout(Vec<Arc<dyn DecodedSink>>);

impl DecodedSink for Fanout {
    fn on_video(&self, user: &UserId, frame: &DecodedVideoFrame) {
        for s in &self.0 {
            s.on_video(user, frame);
        }
    }

    fn on_audio(&self, user: &UserId, frame: &DecodedAudioFrame) {
        for s in &self.0 {
            s.on_audio(user, frame);
        }
    }
}

/// The devices a call has open; empty without the `devices` feature or
/// when the config names none. Dropping it closes them.
#[derive(Default)]
pub(crate) struct AudioIo {
    #[cfg(feature = "devices")]
    mic: Option<calling_media::devices::Microphone>,
    #[cfg(feature = "devices")]
    speaker: Option<Arc<calling_media::devices::Speaker>>,
}

impl std::fmt::Debug for AudioIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioIo").finish_non_exhaustive()
    }
}

impl AudioIo {
    /// The media source for `input`; a microphone device is opened here.
    ///
    /// # Errors
    ///
    /// Why the device cannot be opened.
    pub(crate) fn audio_source(&mut self, input: &AudioInput) -> Result<AudioSource, String> {
        Ok(match input {
            AudioInput::Tone {
                frequency_hz,
                amplitude,
            } => AudioSource::Tone {
                frequency_hz: *frequency_hz,
                amplitude: *amplitude,
            },
            AudioInput::OggFile { path, looped } => AudioSource::OggFile {
                path: path.clone(),
                looped: *looped,
            },
            AudioInput::Raw(input) => AudioSource::Raw(input.clone()),
            AudioInput::Encoded(input) => AudioSource::Encoded(input.clone()),
            #[cfg(feature = "devices")]
            AudioInput::Microphone { device } => {
                let raw = calling_media::RawAudioInput::new();
                let mic = calling_media::devices::Microphone::open(device.as_deref(), raw.clone())
                    .map_err(|e| e.to_string())?;
                self.mic = Some(mic);
                AudioSource::Raw(raw)
            }
        })
    }

    /// Opens the output device `output` names, on the earpiece unless
    /// `hands_free` (TRTCCalling's `setHandsFree`).
    ///
    /// # Errors
    ///
    /// Why the device cannot be opened.
    pub(crate) fn open_output(
        &mut self,
        output: &AudioOutput,
        hands_free: bool,
    ) -> Result<(), String> {
        #[cfg(not(feature = "devices"))]
        let _ = hands_free;
        match output {
            AudioOutput::App => Ok(()),
            #[cfg(feature = "devices")]
            AudioOutput::Device { .. } => {
                let name = output.device_for(hands_free);
                let speaker = calling_media::devices::Speaker::open(name.as_deref())
                    .map_err(|e| e.to_string())?;
                self.speaker = Some(speaker);
                Ok(())
            }
        }
    }

    /// The sink the call's media session decodes into: the app's, the
    /// speaker, both, or none (then nothing is decoded).
    pub(crate) fn decoded_sink(
        &self,
        app: Option<Arc<dyn DecodedSink>>,
    ) -> Option<Arc<dyn DecodedSink>> {
        let mut sinks: Vec<Arc<dyn DecodedSink>> = app.into_iter().collect();
        #[cfg(feature = "devices")]
        if let Some(s) = &self.speaker {
            sinks.push(s.clone());
        }
        match sinks.len() {
            0 => None,
            1 => sinks.pop(),
            _ => Some(Arc::new(Fanout(sinks))),
        }
    }

    /// Pauses or resumes the microphone device: muted, it is not read.
    pub(crate) fn set_mic_muted(&self, muted: bool) {
        #[cfg(feature = "devices")]
        if let Some(m) = &self.mic {
            m.set_muted(muted);
        }
        #[cfg(not(feature = "devices"))]
        let _ = muted;
    }

    /// Moves the output to the speaker (`on`) or the earpiece.
    pub(crate) fn set_hands_free(&self, output: &AudioOutput, on: bool) -> Result<(), String> {
        #[cfg(feature = "devices")]
        if let Some(s) = &self.speaker {
            return s
                .switch_device(output.device_for(on).as_deref())
                .map_err(|e| e.to_string());
        }
        let _ = (output, on);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl DecodedSink for Count {
        fn on_audio(&self, _: &UserId, _: &DecodedAudioFrame) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn without_devices_the_app_sink_is_used_alone() {
        let io = AudioIo::default();
        assert!(io.decoded_sink(None).is_none(), "nothing to decode for");
        let app = Arc::new(Count::default());
        let sink = io.decoded_sink(Some(app.clone())).unwrap();
        let frame = DecodedAudioFrame {
            samples: vec![0.0; 960],
            channels: 1,
            rtp_timestamp: 0,
            timestamp: Duration::ZERO,
            concealed: false,
        };
        sink.on_audio(&UserId::new("u").unwrap(), &frame);
        assert_eq!(app.0.load(Ordering::Relaxed), 1);
        let both = Fanout(vec![app.clone(), app.clone()]);
        both.on_audio(&UserId::new("u").unwrap(), &frame);
        assert_eq!(app.0.load(Ordering::Relaxed), 3);
    }
}
