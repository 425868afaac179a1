//! Media files: writers for received frames (IVF, Ogg/Opus, H.264 Annex B)
//! and frame readers for the file sources.
//!
//! The readers parse with webrtc-rs's own IVF, Ogg and Annex B readers, so a
//! write/read round trip checks our writers against an independent parser.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use rtc::media::io::h26x_reader::{H26xNAL, H26xReader};
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;

use calling_core::UserId;

use crate::error::MediaError;
use crate::types::{Codec, EncodedFrame};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MediaError + '_ {
    move |source| MediaError::File {
        path: path.to_owned(),
        source,
    }
}

fn malformed(path: &Path, reason: impl std::fmt::Display) -> MediaError {
    MediaError::MalformedFile {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Writes VP8 (or H.264) frames into an IVF file with a 1/90000 time base.
pub struct IvfWriter<W: Write + Seek> {
    out: W,
    frames: u32,
    timestamp: u64,
}

impl IvfWriter<BufWriter<File>> {
    /// Creates `path` and writes the IVF header.
    pub fn create(
        path: impl AsRef<Path>,
        codec: Codec,
        width: u16,
        height: u16,
    ) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(io_err(path))?;
        IvfWriter::new(BufWriter::new(file), codec, width, height).map_err(io_err(path))
    }
}

impl<W: Write + Seek> IvfWriter<W> {
    /// Writes the IVF header for `codec` (VP8 or H.264) to `out`.
    ///
    /// # Errors
    ///
    /// An [`InvalidInput`](std::io::ErrorKind::InvalidInput) error for
    /// [`Codec::Opus`], which IVF cannot hold, or the write's error.
    pub fn new(mut out: W, codec: Codec, width: u16, height: u16) -> std::io::Result<Self> {
        let fourcc: &[u8; 4] = match codec {
            Codec::H264 => b"H264",
            Codec::Vp8 => b"VP80",
            Codec::Opus => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "IVF holds video (VP8 or H.264), not Opus",
                ));
            }
        };
        let mut h = Vec::with_capacity(32);
        h.extend_from_slice(b"DKIF");
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&32u16.to_le_bytes());
        h.extend_from_slice(fourcc);
        h.extend_from_slice(&width.to_le_bytes());
        h.extend_from_slice(&height.to_le_bytes());
        h.extend_from_slice(&90_000u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        out.write_all(&h)?;
        Ok(IvfWriter {
            out,
            frames: 0,
            timestamp: 0,
        })
    }

    /// Appends one frame; its timestamp is the sum of the previous durations.
    pub fn write_frame(&mut self, frame: &EncodedFrame) -> std::io::Result<()> {
        let len = u32::try_from(frame.data.len())
            .map_err(|_| std::io::Error::other("frame larger than 4 GiB"))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&self.timestamp.to_le_bytes())?;
        self.out.write_all(&frame.data)?;
        self.frames += 1;
        self.timestamp += (frame.duration.as_secs_f64() * 90_000.0).round() as u64;
        Ok(())
    }

    /// Writes the frame count into the header and flushes; returns the sink.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.seek(SeekFrom::Start(24))?;
        self.out.write_all(&self.frames.to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes Opus packets into an Ogg file (RFC 7845), one packet per page.
/// The pages (lacing, CRC, sequence, flags) are the `ogg` crate's; the
/// Opus headers and the granule positions are ours.
pub struct OggOpusWriter<W: Write> {
    out: PacketWriter<'static, W>,
    granule: u64,
    last: Option<Bytes>,
}

const OPUS_PRE_SKIP: u16 = 312;

/// The stream's serial number ("call").
const OGG_SERIAL: u32 = 0x6361_6c6c;

impl OggOpusWriter<BufWriter<File>> {
    /// Creates `path` and writes the OpusHead and OpusTags pages.
    pub fn create(path: impl AsRef<Path>, channels: u8) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(io_err(path))?;
        OggOpusWriter::new(BufWriter::new(file), channels).map_err(io_err(path))
    }
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the OpusHead and OpusTags pages to `out`.
    pub fn new(out: W, channels: u8) -> std::io::Result<Self> {
        let mut w = OggOpusWriter {
            out: PacketWriter::new(out),
            granule: 0,
            last: None,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels.max(1));
        head.extend_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        w.page(head, 0, PacketWriteEndInfo::EndPage)?;
        let vendor = b"calling-media";
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        w.page(tags, 0, PacketWriteEndInfo::EndPage)?;
        Ok(w)
    }

    fn page(
        &mut self,
        packet: Vec<u8>,
        granule: u64,
        end: PacketWriteEndInfo,
    ) -> std::io::Result<()> {
        self.out.write_packet(packet, OGG_SERIAL, end, granule)
    }

    /// Appends one Opus packet. Pages are written one packet behind, so the
    /// last one can carry the end-of-stream flag.
    pub fn write_frame(&mut self, frame: &EncodedFrame) -> std::io::Result<()> {
        if let Some(prev) = self.last.take() {
            self.page(prev.to_vec(), self.granule, PacketWriteEndInfo::EndPage)?;
        }
        let samples = (frame.duration.as_secs_f64() * 48_000.0).round() as u64;
        self.granule += if samples == 0 { 960 } else { samples };
        self.last = Some(frame.data.clone());
        Ok(())
    }

    /// Writes the last page with the end-of-stream flag and flushes.
    pub fn finish(mut self) -> std::io::Result<W> {
        if let Some(prev) = self.last.take() {
            self.page(prev.to_vec(), self.granule, PacketWriteEndInfo::EndStream)?;
        }
        let mut out = self.out.into_inner();
        out.flush()?;
        Ok(out)
    }
}

/// Writes H.264 access units as an Annex B byte stream (a `.h264` file).
pub struct AnnexBWriter<W: Write> {
    out: W,
}

impl AnnexBWriter<BufWriter<File>> {
    /// Creates `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, MediaError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(io_err(path))?;
        Ok(AnnexBWriter::new(BufWriter::new(file)))
    }
}

impl<W: Write> AnnexBWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        AnnexBWriter { out }
    }

    /// Appends one access unit. Frames we produce and receive are already
    /// Annex B; a frame that does not start with a start code gets one.
    pub fn write_frame(&mut self, frame: &EncodedFrame) -> std::io::Result<()> {
        if !(frame.data.starts_with(&[0, 0, 1]) || frame.data.starts_with(&[0, 0, 0, 1])) {
            self.out.write_all(&[0, 0, 0, 1])?;
        }
        self.out.write_all(&frame.data)
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads the frames of an IVF file with their durations.
pub fn read_ivf(path: impl AsRef<Path>) -> Result<Vec<EncodedFrame>, MediaError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let (mut reader, header) =
        IVFReader::new(BufReader::new(file)).map_err(|e| malformed(path, e))?;
    let codec = match &header.four_cc {
        b"H264" => Codec::H264,
        b"VP80" => Codec::Vp8,
        other => {
            return Err(malformed(
                path,
                format!("unsupported fourcc {:?}", String::from_utf8_lossy(other)),
            ));
        }
    };
    if header.timebase_denominator == 0 {
        return Err(malformed(path, "zero time base"));
    }
    let tick = f64::from(header.timebase_numerator) / f64::from(header.timebase_denominator);
    let mut raw = Vec::new();
    loop {
        match reader.parse_next_frame() {
            Ok((data, fh)) => raw.push((data.freeze(), fh.timestamp)),
            Err(e) => {
                if is_eof(&e) {
                    break;
                }
                return Err(malformed(path, e));
            }
        }
    }
    let mut frames = Vec::with_capacity(raw.len());
    for (i, (data, ts)) in raw.iter().enumerate() {
        let next = raw.get(i + 1).map(|(_, t)| *t);
        let ticks = next.map_or(0, |n| n.saturating_sub(*ts));
        let mut duration = Duration::from_secs_f64(ticks as f64 * tick);
        if next.is_none() && i > 0 {
            duration = frames
                .last()
                .map_or(duration, |f: &EncodedFrame| f.duration);
        }
        frames.push(EncodedFrame::new(codec, data.clone(), duration));
    }
    Ok(frames)
}

/// The readers report the end of the file as an I/O `UnexpectedEof`; a
/// file cut inside its last frame reads the same way, and that frame is
/// dropped.
fn is_eof(e: &rtc::shared::error::Error) -> bool {
    use rtc::shared::error::Error;
    match e {
        Error::ErrIoEOF => true,
        Error::Io(io) => io.0.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

/// Reads the Opus packets of an Ogg file, one per page, with durations from
/// the granule positions. The OpusHead and OpusTags pages are skipped.
pub fn read_ogg_opus(path: impl AsRef<Path>) -> Result<Vec<EncodedFrame>, MediaError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let (mut reader, _head) =
        OggReader::new(BufReader::new(file), true).map_err(|e| malformed(path, e))?;
    let mut frames = Vec::new();
    let mut last_granule = 0u64;
    loop {
        match reader.parse_next_page() {
            Ok((data, ph)) => {
                if data.starts_with(b"OpusTags") || data.starts_with(b"OpusHead") {
                    continue;
                }
                let samples = ph.granule_position.saturating_sub(last_granule);
                last_granule = ph.granule_position;
                frames.push(EncodedFrame::new(
                    Codec::Opus,
                    data.freeze(),
                    Duration::from_micros(samples * 1_000_000 / 48_000),
                ));
            }
            Err(e) => {
                if is_eof(&e) {
                    break;
                }
                return Err(malformed(path, e));
            }
        }
    }
    Ok(frames)
}

/// Reads an H.264 Annex B file into access units. A unit ends before the
/// next parameter set, SEI or delimiter that follows a slice, or before a
/// slice whose `first_mb_in_slice` is 0 (the start of the next picture).
/// SEI units are dropped (the webrtc-rs reader skips them); decoders do not
/// need them.
pub fn read_annexb(path: impl AsRef<Path>, fps: u32) -> Result<Vec<EncodedFrame>, MediaError> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut probe = [0u8; 4];
    let n = file.read(&mut probe).map_err(io_err(path))?;
    if !(probe[..n].starts_with(&[0, 0, 1]) || probe[..n].starts_with(&[0, 0, 0, 1])) {
        return Err(malformed(path, "no Annex B start code at the start"));
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let duration = Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
    let mut reader = H26xReader::new(BufReader::new(file), 1 << 20, false);
    let mut frames = Vec::new();
    let mut au = BytesMut::new();
    let mut au_has_slice = false;
    loop {
        let nal = match reader.next_nal() {
            Ok(H26xNAL::H264(nal)) => nal,
            Ok(_) => return Err(malformed(path, "not H.264")),
            Err(e) => {
                if is_eof(&e) {
                    break;
                }
                return Err(malformed(path, e));
            }
        };
        let data = &nal.data;
        let Some(first) = data.first() else { continue };
        let typ = first & 0x1f;
        let is_slice = typ == 1 || typ == 5;
        let starts_picture = if is_slice {
            data.get(1).is_some_and(|b| b & 0x80 != 0)
        } else {
            matches!(typ, 6..=9)
        };
        if au_has_slice && starts_picture {
            frames.push(EncodedFrame::new(
                Codec::H264,
                au.split().freeze(),
                duration,
            ));
            au_has_slice = false;
        }
        au.put_slice(&[0, 0, 0, 1]);
        au.put_slice(data);
        au_has_slice |= is_slice;
    }
    if au_has_slice {
        frames.push(EncodedFrame::new(Codec::H264, au.freeze(), duration));
    }
    Ok(frames)
}

/// Writes each received frame of one user to files in a directory:
/// `<user>.ogg` for audio, `<user>.h264` (Annex B) or `<user>.ivf` (VP8) for video.
pub struct Recording {
    dir: PathBuf,
    user: UserId,
    audio: Option<OggOpusWriter<BufWriter<File>>>,
    h264: Option<AnnexBWriter<BufWriter<File>>>,
    ivf: Option<IvfWriter<BufWriter<File>>>,
}

impl Recording {
    /// A recording of `user` into `dir`. A [`UserId`] holds only ASCII
    /// letters, digits, `-` and `_`, so it is always a safe file name. No file
    /// is created before the first frame.
    pub fn new(dir: impl Into<PathBuf>, user: &UserId) -> Self {
        Recording {
            dir: dir.into(),
            user: user.clone(),
            audio: None,
            h264: None,
            ivf: None,
        }
    }

    /// Appends a frame to the file of its codec, creating it on first use.
    pub fn write(&mut self, frame: &EncodedFrame) -> Result<(), MediaError> {
        let path = |ext: &str| self.dir.join(format!("{}.{ext}", self.user));
        match frame.codec {
            Codec::Opus => {
                if self.audio.is_none() {
                    self.audio = Some(OggOpusWriter::create(path("ogg"), 2)?);
                }
                if let Some(w) = &mut self.audio {
                    w.write_frame(frame).map_err(io_err(&path("ogg")))?;
                }
            }
            Codec::H264 => {
                if self.h264.is_none() {
                    self.h264 = Some(AnnexBWriter::create(path("h264"))?);
                }
                if let Some(w) = &mut self.h264 {
                    w.write_frame(frame).map_err(io_err(&path("h264")))?;
                }
            }
            Codec::Vp8 => {
                if self.ivf.is_none() {
                    self.ivf = Some(IvfWriter::create(path("ivf"), Codec::Vp8, 0, 0)?);
                }
                if let Some(w) = &mut self.ivf {
                    w.write_frame(frame).map_err(io_err(&path("ivf")))?;
                }
            }
        }
        Ok(())
    }

    /// Finishes every file.
    pub fn finish(self) -> Result<(), MediaError> {
        let path = |ext: &str| self.dir.join(format!("{}.{ext}", self.user));
        if let Some(w) = self.audio {
            w.finish().map_err(io_err(&path("ogg")))?;
        }
        if let Some(w) = self.h264 {
            w.finish().map_err(io_err(&path("h264")))?;
        }
        if let Some(w) = self.ivf {
            w.finish().map_err(io_err(&path("ivf")))?;
        }
        Ok(())
    }
}
