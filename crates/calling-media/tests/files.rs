//! File writers against webrtc-rs's readers, and file sources over a call.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use calling_media::files::{
    AnnexBWriter, IvfWriter, OggOpusWriter, read_annexb, read_ivf, read_ogg_opus,
};
use calling_media::{
    AudioSource, ChannelSink, Codec, EncodedFrame, FrameSink, MediaConfig, MediaError, MediaKind,
    MediaSession, RecorderSink, UserId, VideoCodec, VideoSource,
};
use common::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("calling-media-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Synthetic VP8 frames: the first byte's low bit is the inverse key-frame flag.
fn vp8_frames(n: usize) -> Vec<EncodedFrame> {
    (0..n)
        .map(|i| {
            let mut data = vec![if i % 10 == 0 { 0x10 } else { 0x11 }];
            data.extend((0..(50 + i * 37) % 3000).map(|j| (i * 31 + j) as u8));
            EncodedFrame::new(Codec::Vp8, Bytes::from(data), Duration::from_millis(40))
        })
        .collect()
}

/// Writes `frames` to a 320x240 VP8 IVF file at `path`.
fn write_ivf(path: &std::path::Path, frames: &[EncodedFrame]) {
    let mut w = IvfWriter::create(path, Codec::Vp8, 320, 240).unwrap();
    for f in frames {
        w.write_frame(f).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn ivf_writer_round_trips_through_the_webrtc_rs_reader() {
    let dir = TempDir::new("ivf");
    let path = dir.0.join("v.ivf");
    let frames = vp8_frames(25);
    write_ivf(&path, &frames);
    let back = read_ivf(&path).unwrap();
    assert_eq!(back.len(), frames.len());
    for (a, b) in frames.iter().zip(&back) {
        assert_eq!(a.data, b.data);
        assert_eq!(a.keyframe, b.keyframe);
        assert_eq!(b.duration, Duration::from_millis(40));
    }
    // The header's frame count was patched in.
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(raw[24..28].try_into().unwrap()), 25);
}

#[test]
fn ogg_writer_round_trips_with_checksums_verified() {
    let dir = TempDir::new("ogg");
    let path = dir.0.join("a.ogg");
    let frames: Vec<EncodedFrame> = (0..40)
        .map(|i| {
            // Sizes straddle the 255-byte lacing boundary.
            let data: Vec<u8> = (0..(200 + i * 9)).map(|j| (i + j) as u8).collect();
            EncodedFrame::new(Codec::Opus, Bytes::from(data), Duration::from_millis(20))
        })
        .collect();
    let mut w = OggOpusWriter::create(&path, 2).unwrap();
    for f in &frames {
        w.write_frame(f).unwrap();
    }
    w.finish().unwrap();
    // read_ogg_opus parses with checksum verification on.
    let back = read_ogg_opus(&path).unwrap();
    assert_eq!(back.len(), frames.len());
    for (a, b) in frames.iter().zip(&back) {
        assert_eq!(a.data, b.data);
        assert_eq!(b.duration, Duration::from_millis(20));
    }
    // Corrupt one byte: the checksum catches it.
    let mut raw = std::fs::read(&path).unwrap();
    let n = raw.len();
    raw[n - 5] ^= 0xff;
    std::fs::write(&path, &raw).unwrap();
    assert!(matches!(
        read_ogg_opus(&path),
        Err(MediaError::MalformedFile { .. })
    ));
}

#[test]
fn annexb_reader_groups_nal_units_into_access_units() {
    let dir = TempDir::new("annexb");
    let path = dir.0.join("v.h264");
    let aus: Vec<Vec<u8>> = vec![
        // SPS, PPS, IDR with two slices (second has first_mb != 0).
        vec![
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 0x88, 9, 0, 0, 0, 1,
            0x65, 0x40, 9,
        ],
        vec![0, 0, 0, 1, 0x41, 0x9a, 7],
        vec![0, 0, 0, 1, 0x06, 5, 0, 0, 0, 1, 0x41, 0x9a, 8],
    ];
    let mut w = AnnexBWriter::create(&path).unwrap();
    for au in &aus {
        w.write_frame(&EncodedFrame::new(
            Codec::H264,
            Bytes::from(au.clone()),
            Duration::ZERO,
        ))
        .unwrap();
    }
    w.finish().unwrap();
    let back = read_annexb(&path, 25).unwrap();
    assert_eq!(back.len(), 3);
    // The webrtc-rs reader drops SEI units; everything else comes back.
    let mut expected = aus.clone();
    expected[2] = vec![0, 0, 0, 1, 0x41, 0x9a, 8];
    for (a, b) in expected.iter().zip(&back) {
        assert_eq!(&a[..], &b.data[..]);
        assert_eq!(b.duration, Duration::from_millis(40));
    }
    assert!(back[0].keyframe && !back[1].keyframe);
}

#[test]
fn bad_files_get_typed_errors() {
    let dir = TempDir::new("bad");
    let missing = dir.0.join("missing.ivf");
    assert!(matches!(read_ivf(&missing), Err(MediaError::File { .. })));
    let junk = dir.0.join("junk");
    std::fs::write(&junk, b"this is not a media file at all, not even close").unwrap();
    assert!(matches!(
        read_ivf(&junk),
        Err(MediaError::MalformedFile { .. })
    ));
    assert!(matches!(
        read_ogg_opus(&junk),
        Err(MediaError::MalformedFile { .. })
    ));
    assert!(matches!(
        read_annexb(&junk, 30),
        Err(MediaError::MalformedFile { .. })
    ));
    // IVF holds video only.
    assert!(matches!(
        IvfWriter::create(dir.0.join("opus.ivf"), Codec::Opus, 0, 0),
        Err(MediaError::File { .. })
    ));
}

struct Tee(Vec<Arc<dyn FrameSink>>);

impl FrameSink for Tee {
    fn on_frame(&self, user: &UserId, frame: &EncodedFrame) {
        for s in &self.0 {
            s.on_frame(user, frame);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_call_plays_back_as_file_sources() {
    let dir = TempDir::new("record");
    let mut m = mesh(&["alice", "bob"]).await;
    let alice = m.session("alice");
    alice
        .set_audio_source(Some(AudioSource::Tone {
            frequency_hz: 330.0,
            amplitude: 0.4,
        }))
        .unwrap();
    alice
        .set_video_source(Some(VideoSource::TestPattern))
        .unwrap();
    let recorder = Arc::new(RecorderSink::new(&dir.0));
    let (channel, frames) = ChannelSink::new(4096);
    m.node("bob").frames = frames;
    m.session("bob")
        .set_frame_sink(Some(Arc::new(Tee(vec![recorder.clone(), channel]))));
    m.connect_all().await;
    let got = m.node("bob").collect("alice", MediaKind::Video, 20).await;
    // Stop recording before reading the files back.
    m.session("bob").set_frame_sink(None);
    recorder.finish().unwrap();
    assert_eq!(recorder.errors(), 0);
    m.close().await;

    let audio: Vec<_> = of(&got, "alice", MediaKind::Audio).collect();
    let video: Vec<_> = of(&got, "alice", MediaKind::Video).collect();
    let ogg = read_ogg_opus(dir.0.join("alice.ogg")).unwrap();
    let h264 = read_annexb(dir.0.join("alice.h264"), 15).unwrap();
    // The recorder may hold a few frames that arrived after the test stopped
    // collecting, never fewer.
    assert!(ogg.len() >= audio.len() && !audio.is_empty());
    assert!(h264.len() >= video.len());
    for (a, b) in audio.iter().zip(&ogg) {
        assert_eq!(a.data, b.data);
    }
    for (a, b) in video.iter().zip(&h264) {
        assert_eq!(a.data, b.data);
    }
    assert_eq!(decode_h264(&h264[0].data), (640, 480));

    // Play the recordings from carol to dave.
    let mut m = mesh(&["carol", "dave"]).await;
    let carol = m.session("carol");
    carol
        .set_audio_source(Some(AudioSource::OggFile {
            path: dir.0.join("alice.ogg"),
            looped: true,
        }))
        .unwrap();
    carol
        .set_video_source(Some(VideoSource::H264File {
            path: dir.0.join("alice.h264"),
            fps: 15,
            looped: true,
        }))
        .unwrap();
    m.connect_all().await;
    let got = m
        .node("dave")
        .frames_until({
            let mut n = (0, 0);
            move |f| {
                match f.frame.kind() {
                    MediaKind::Audio => n.0 += 1,
                    MediaKind::Video => n.1 += 1,
                }
                n.0 >= 10 && n.1 >= 3
            }
        })
        .await;
    for a in of(&got, "carol", MediaKind::Audio) {
        assert!(
            ogg.iter().any(|f| f.data == a.data),
            "audio frame not from the file"
        );
    }
    let played: Vec<_> = of(&got, "carol", MediaKind::Video).collect();
    assert!(played[0].keyframe);
    for v in &played {
        assert!(
            h264.iter().any(|f| f.data == v.data),
            "video frame not from the file"
        );
    }
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_ivf_source_arrives_intact() {
    let dir = TempDir::new("vp8");
    let path = dir.0.join("v.ivf");
    let frames = vp8_frames(30);
    write_ivf(&path, &frames);

    let mut m = mesh_with(&["alice", "bob"], |mut c| {
        c.video_codec = VideoCodec::Vp8;
        c
    })
    .await;
    let alice = m.session("alice");
    // The generated pattern is H.264 only.
    assert!(matches!(
        alice.set_video_source(Some(VideoSource::TestPattern)),
        Err(MediaError::CodecMismatch { .. })
    ));
    alice
        .set_video_source(Some(VideoSource::IvfFile {
            path: path.clone(),
            looped: true,
        }))
        .unwrap();
    m.connect_all().await;
    let got = m.node("bob").collect("alice", MediaKind::Video, 12).await;
    let video: Vec<_> = of(&got, "alice", MediaKind::Video).collect();
    assert!(video[0].keyframe);
    for v in &video {
        assert_eq!(v.codec, Codec::Vp8);
        assert!(
            frames.iter().any(|f| f.data == v.data),
            "frame altered in transit"
        );
    }
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_start_is_refused_at_once_and_the_old_one_keeps_running() {
    let dir = TempDir::new("nostart");
    let (h264, _events) = MediaSession::new(uid("alice"), MediaConfig::loopback())
        .await
        .unwrap();
    // Our own outgoing frames reach the local sink, so it shows which
    // sources run; no peer is needed.
    let (sink, mut own) = ChannelSink::new(1024);
    h264.set_local_sink(Some(sink));
    h264.set_audio_source(Some(AudioSource::Tone {
        frequency_hz: 440.0,
        amplitude: 0.5,
    }))
    .unwrap();
    h264.set_video_source(Some(VideoSource::TestPattern))
        .unwrap();

    let missing = dir.0.join("missing");
    let junk = dir.0.join("junk");
    std::fs::write(&junk, b"neither Ogg nor Annex B nor IVF").unwrap();
    // Parameter sets and no picture: a well-formed file with no frames.
    let no_frames = dir.0.join("sps-only.h264");
    std::fs::write(&no_frames, [0, 0, 0, 1, 0x67, 0x42, 0, 0x1f]).unwrap();

    let ogg = |path: &std::path::Path| AudioSource::OggFile {
        path: path.to_owned(),
        looped: false,
    };
    let err = h264.set_audio_source(Some(ogg(&missing))).unwrap_err();
    assert!(
        matches!(&err, MediaError::File { path, source }
            if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
    let err = h264.set_audio_source(Some(ogg(&junk))).unwrap_err();
    assert!(matches!(err, MediaError::MalformedFile { .. }), "{err}");

    let annexb = |path: &std::path::Path| VideoSource::H264File {
        path: path.to_owned(),
        fps: 15,
        looped: true,
    };
    let err = h264.set_video_source(Some(annexb(&missing))).unwrap_err();
    assert!(
        matches!(&err, MediaError::File { path, .. } if *path == missing),
        "{err}"
    );
    let err = h264.set_video_source(Some(annexb(&junk))).unwrap_err();
    assert!(matches!(err, MediaError::MalformedFile { .. }), "{err}");
    let err = h264.set_video_source(Some(annexb(&no_frames))).unwrap_err();
    assert!(matches!(err, MediaError::MalformedFile { .. }), "{err}");

    // The tone and the pattern still run: fresh frames of both arrive.
    while own.try_recv().is_ok() {}
    let mut kinds = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !(kinds.contains(&MediaKind::Audio) && kinds.contains(&MediaKind::Video)) {
            let f = own.recv().await.expect("local sink open");
            assert_eq!(f.user.as_str(), "alice");
            kinds.push(f.frame.kind());
        }
    })
    .await
    .expect("the running sources survive a refused one");
    h264.close().await;

    let (vp8, _events) = MediaSession::new(
        uid("bob"),
        MediaConfig {
            video_codec: VideoCodec::Vp8,
            ..MediaConfig::loopback()
        },
    )
    .await
    .unwrap();
    let ivf = |path: &std::path::Path| VideoSource::IvfFile {
        path: path.to_owned(),
        looped: false,
    };
    let err = vp8.set_video_source(Some(ivf(&missing))).unwrap_err();
    assert!(
        matches!(&err, MediaError::File { path, .. } if *path == missing),
        "{err}"
    );
    let err = vp8.set_video_source(Some(ivf(&junk))).unwrap_err();
    assert!(matches!(err, MediaError::MalformedFile { .. }), "{err}");
    vp8.close().await;
}
