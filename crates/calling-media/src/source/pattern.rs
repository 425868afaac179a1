//! The generated test pattern: colour bars scrolling sideways with a
//! bouncing white square, drawn in I420 at the profile's resolution and
//! sent through the same encode stage as the app's camera.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::convert::Picture;
use super::encode::H264Stage;
use super::{CHANNEL, Control, Running, fail, spawn, wait};
use crate::error::MediaError;
use crate::types::{EncodedFrame, VideoQuality};

pub(super) fn start(quality: VideoQuality, stop: Arc<AtomicBool>) -> Result<Running, MediaError> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (ctl_tx, ctl_rx) = std_mpsc::channel();
    let mut running = Running::new(rx, stop.clone());
    running.control = Some(ctl_tx);
    // The encoder is created on its thread, and we do not wait for it (a
    // few milliseconds a call start would wait): a failure to build it
    // ends the source, and the session reports it.
    let failure = running.failure.clone();
    spawn("calling-pattern", move || {
        pattern_loop(quality, &tx, &ctl_rx, &stop, &failure)
    })?;
    Ok(running)
}

fn pattern_loop(
    quality: VideoQuality,
    tx: &mpsc::Sender<EncodedFrame>,
    control: &std_mpsc::Receiver<Control>,
    stop: &AtomicBool,
    failure: &std::sync::Mutex<Option<MediaError>>,
) {
    let mut stage = match H264Stage::new(quality, quality.frame_rate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "the test pattern's encoder cannot start");
            fail(failure, e);
            return;
        }
    };
    let mut pattern = TestPattern::new(quality.resolution());
    let start = Instant::now();
    let mut deadline = start;
    while !stop.load(Ordering::Relaxed) {
        let period = Duration::from_secs(1) / stage.target().frame_rate;
        match wait(control, deadline) {
            Some(c) => {
                stage.control(c);
                let q = stage.quality();
                if pattern.size() != q.resolution() {
                    pattern = TestPattern::new(q.resolution());
                }
                // A key frame goes out at once (a new peer is waiting for
                // it); anything else waits for the next frame's time.
                if !matches!(c, Control::Keyframe) {
                    continue;
                }
            }
            None => {
                if Instant::now() < deadline {
                    continue;
                }
                deadline += period;
                let now = Instant::now();
                if now > deadline + Duration::from_millis(500) {
                    deadline = now;
                }
            }
        }
        pattern.advance();
        let frame = match stage.encode(pattern.picture.planes(), start.elapsed()) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "H.264 encode failed; pattern source stops");
                fail(failure, e);
                return;
            }
        };
        if tx.blocking_send(frame).is_err() {
            return;
        }
    }
}

/// Colour bars scrolling sideways with a bouncing white square, in I420.
struct TestPattern {
    picture: Picture,
    frame: usize,
}

const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128), // white
    (210, 16, 146),  // yellow
    (170, 166, 16),  // cyan
    (145, 54, 34),   // green
    (106, 202, 222), // magenta
    (81, 90, 240),   // red
    (41, 240, 110),  // blue
    (16, 128, 128),  // black
];

impl TestPattern {
    fn new((w, h): (u32, u32)) -> Self {
        TestPattern {
            picture: Picture::new(w as usize, h as usize),
            frame: 0,
        }
    }

    fn size(&self) -> (u32, u32) {
        (self.picture.width as u32, self.picture.height as u32)
    }

    fn advance(&mut self) {
        let Picture {
            width: w,
            height: h,
            y,
            u,
            v,
        } = &mut self.picture;
        let (w, h) = (*w, *h);
        let shift = self.frame * 4;
        let bar = |x: usize| BARS[((x + shift) * 8 / w) % 8];
        let row_y: Vec<u8> = (0..w).map(|x| bar(x).0).collect();
        for r in y.chunks_exact_mut(w) {
            r.copy_from_slice(&row_y);
        }
        let row_u: Vec<u8> = (0..w / 2).map(|x| bar(x * 2).1).collect();
        let row_v: Vec<u8> = (0..w / 2).map(|x| bar(x * 2).2).collect();
        for r in u.chunks_exact_mut(w / 2) {
            r.copy_from_slice(&row_u);
        }
        for r in v.chunks_exact_mut(w / 2) {
            r.copy_from_slice(&row_v);
        }
        // A white square bouncing across the picture.
        let side = h / 6;
        let span_x = w - side;
        let span_y = h - side;
        let t = self.frame * 7;
        let bx = if (t / span_x) % 2 == 0 {
            t % span_x
        } else {
            span_x - t % span_x
        };
        let by = if (t / span_y) % 2 == 0 {
            t % span_y
        } else {
            span_y - t % span_y
        };
        for row in by..by + side {
            y[row * w + bx..row * w + bx + side].fill(235);
        }
        for row in by / 2..(by + side) / 2 {
            u[row * w / 2 + bx / 2..row * w / 2 + (bx + side) / 2].fill(128);
            v[row * w / 2 + bx / 2..row * w / 2 + (bx + side) / 2].fill(128);
        }
        self.frame += 1;
    }
}
