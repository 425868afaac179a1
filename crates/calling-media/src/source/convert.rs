//! Raw pictures into I420, the encoder's input.
//!
//! RGBA and BGRA are converted with the BT.601 limited-range ("studio
//! swing") matrix, Y 16..=235 and U/V 16..=240, the colour space H.264
//! decoders assume when a stream says nothing else. The integer
//! coefficients are the usual 8-bit fixed-point form of that matrix;
//! chroma is taken from the average of each 2x2 block. Written here rather
//! than taken from a crate: it is a few dozen lines, needs no `unsafe`, and
//! the hot path (scaling) dominates anyway.

use openh264::formats::YUVSource;

use crate::raw::{PixelFormat, VideoFrame};

/// Borrowed I420 planes, tightly packed: Y is `width` x `height`, U and V
/// `ceil(width/2)` x `ceil(height/2)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planes<'a> {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) y: &'a [u8],
    pub(crate) u: &'a [u8],
    pub(crate) v: &'a [u8],
}

impl Planes<'_> {
    /// Width and height of the chroma planes.
    pub(crate) fn chroma(&self) -> (usize, usize) {
        (self.width.div_ceil(2), self.height.div_ceil(2))
    }
}

impl YUVSource for Planes<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let cw = self.width.div_ceil(2);
        (self.width, cw, cw)
    }

    fn y(&self) -> &[u8] {
        self.y
    }

    fn u(&self) -> &[u8] {
        self.u
    }

    fn v(&self) -> &[u8] {
        self.v
    }
}

/// An owned I420 picture, laid out as [`Planes`]; its buffers are reused
/// from frame to frame.
#[derive(Debug, Clone, Default)]
pub(crate) struct Picture {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) y: Vec<u8>,
    pub(crate) u: Vec<u8>,
    pub(crate) v: Vec<u8>,
}

impl Picture {
    /// A black picture.
    pub(crate) fn new(width: usize, height: usize) -> Self {
        let mut p = Picture::default();
        p.resize(width, height);
        p.y.fill(16);
        p
    }

    /// Sets the size, keeping the buffers' allocations where it can.
    pub(crate) fn resize(&mut self, width: usize, height: usize) {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        self.width = width;
        self.height = height;
        self.y.resize(width * height, 16);
        self.u.resize(cw * ch, 128);
        self.v.resize(cw * ch, 128);
    }

    /// The picture's planes.
    pub(crate) fn planes(&self) -> Planes<'_> {
        Planes {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
        }
    }
}

/// The planes of an I420 frame, without copying; `None` for other formats.
pub(crate) fn i420_planes(frame: &VideoFrame) -> Option<Planes<'_>> {
    if frame.format() != PixelFormat::I420 {
        return None;
    }
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let data = frame.data();
    // `VideoFrame` guarantees the length for its format and size.
    let (y, rest) = data.split_at_checked(w * h)?;
    let (u, v) = rest.split_at_checked(cw * ch)?;
    Some(Planes {
        width: w,
        height: h,
        y,
        u,
        v: v.get(..cw * ch)?,
    })
}

/// Converts `frame` (any format) into `out`, at the frame's size.
pub(crate) fn to_i420(frame: &VideoFrame, out: &mut Picture) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    out.resize(w, h);
    let data: &[u8] = frame.data();
    match frame.format() {
        PixelFormat::I420 => {
            let (y, rest) = data.split_at(out.y.len());
            let (u, v) = rest.split_at(out.u.len());
            out.y.copy_from_slice(y);
            out.u.copy_from_slice(u);
            out.v.copy_from_slice(v);
        }
        PixelFormat::Nv12 => {
            let (y, uv) = data.split_at(out.y.len());
            out.y.copy_from_slice(y);
            for ((pair, u), v) in uv.chunks_exact(2).zip(&mut out.u).zip(&mut out.v) {
                *u = pair[0];
                *v = pair[1];
            }
        }
        PixelFormat::Rgba => packed_to_i420(data, w, h, [0, 1, 2], out),
        PixelFormat::Bgra => packed_to_i420(data, w, h, [2, 1, 0], out),
    }
}

/// BT.601 limited-range luma of one pixel.
fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

/// BT.601 limited-range chroma of the average of `n` pixels whose channels
/// add up to `r`, `g`, `b`.
fn chroma(r: i32, g: i32, b: i32, n: i32) -> (u8, u8) {
    let (r, g, b) = ((r + n / 2) / n, (g + n / 2) / n, (b + n / 2) / n);
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (u.clamp(0, 255) as u8, v.clamp(0, 255) as u8)
}

/// Packed 4-byte pixels (red, green and blue at `order`) into I420.
fn packed_to_i420(data: &[u8], w: usize, h: usize, order: [usize; 3], out: &mut Picture) {
    let cw = w.div_ceil(2);
    let row_len = w * 4;
    let [ri, gi, bi] = order;
    let mut sums = vec![(0i32, 0i32, 0i32, 0i32); cw];
    for cy in 0..h.div_ceil(2) {
        let rows = if 2 * cy + 1 < h { 2 } else { 1 };
        sums.fill((0, 0, 0, 0));
        for dy in 0..rows {
            let y = 2 * cy + dy;
            let src = &data[y * row_len..(y + 1) * row_len];
            let dst = &mut out.y[y * w..(y + 1) * w];
            for (x, (px, luma_out)) in src.chunks_exact(4).zip(dst.iter_mut()).enumerate() {
                let (r, g, b) = (i32::from(px[ri]), i32::from(px[gi]), i32::from(px[bi]));
                *luma_out = luma(r, g, b);
                let s = &mut sums[x / 2];
                s.0 += r;
                s.1 += g;
                s.2 += b;
                s.3 += 1;
            }
        }
        for (x, &(r, g, b, n)) in sums.iter().enumerate() {
            let (u, v) = chroma(r, g, b, n);
            out.u[cy * cw + x] = u;
            out.v[cy * cw + x] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn solid(format: PixelFormat, w: u32, h: u32, px: [u8; 4]) -> VideoFrame {
        let data: Vec<u8> = (0..w * h).flat_map(|_| px).collect();
        VideoFrame::new(format, w, h, data, Duration::ZERO).unwrap()
    }

    fn near(got: u8, want: u8) -> bool {
        got.abs_diff(want) <= 2
    }

    #[test]
    fn rgba_and_bgra_follow_bt601_limited_range() {
        // (R, G, B) -> (Y, U, V), BT.601 limited range.
        let cases = [
            ([255, 255, 255], (235, 128, 128)),
            ([0, 0, 0], (16, 128, 128)),
            ([255, 0, 0], (81, 90, 240)),
            ([0, 255, 0], (145, 54, 34)),
            ([0, 0, 255], (41, 240, 110)),
        ];
        for ([r, g, b], (y, u, v)) in cases {
            for (format, px) in [
                (PixelFormat::Rgba, [r, g, b, 255]),
                (PixelFormat::Bgra, [b, g, r, 255]),
            ] {
                // Odd sizes: the last chroma column and row average fewer pixels.
                let frame = solid(format, 5, 3, px);
                let mut pic = Picture::default();
                to_i420(&frame, &mut pic);
                assert_eq!((pic.width, pic.height), (5, 3));
                assert_eq!((pic.u.len(), pic.v.len()), (6, 6));
                assert!(
                    pic.y.iter().all(|&p| near(p, y)),
                    "{format:?} {r},{g},{b}: Y {:?}",
                    pic.y
                );
                assert!(
                    pic.u.iter().all(|&p| near(p, u)),
                    "{format:?} {r},{g},{b}: U {:?}",
                    pic.u
                );
                assert!(
                    pic.v.iter().all(|&p| near(p, v)),
                    "{format:?} {r},{g},{b}: V {:?}",
                    pic.v
                );
            }
        }
    }

    #[test]
    fn chroma_averages_each_block() {
        // A 2x2 block, left column white, right column black: chroma of
        // the grey average, luma per pixel.
        let data = [
            255, 255, 255, 0, 0, 0, 0, 0, //
            255, 255, 255, 0, 0, 0, 0, 0,
        ];
        let frame =
            VideoFrame::new(PixelFormat::Rgba, 2, 2, data.to_vec(), Duration::ZERO).unwrap();
        let mut pic = Picture::default();
        to_i420(&frame, &mut pic);
        assert_eq!(pic.y, [235, 16, 235, 16]);
        assert!(near(pic.u[0], 128) && near(pic.v[0], 128));
    }

    #[test]
    fn nv12_and_i420_keep_their_samples() {
        let (w, h) = (4u32, 2u32);
        let y: Vec<u8> = (0..8).collect();
        let nv12: Vec<u8> = y.iter().copied().chain([100, 200, 101, 201]).collect();
        let frame = VideoFrame::new(PixelFormat::Nv12, w, h, nv12, Duration::ZERO).unwrap();
        let mut pic = Picture::default();
        to_i420(&frame, &mut pic);
        assert_eq!(pic.y, y);
        assert_eq!(pic.u, [100, 101]);
        assert_eq!(pic.v, [200, 201]);

        let i420: Vec<u8> = y.iter().copied().chain([100, 101, 200, 201]).collect();
        let frame = VideoFrame::new(PixelFormat::I420, w, h, i420, Duration::ZERO).unwrap();
        let planes = i420_planes(&frame).unwrap();
        assert_eq!(
            (planes.y, planes.u, planes.v),
            (&y[..], &[100, 101][..], &[200, 201][..])
        );
        to_i420(&frame, &mut pic);
        assert_eq!(
            (pic.u.as_slice(), pic.v.as_slice()),
            (&[100, 101][..], &[200, 201][..])
        );
        assert!(i420_planes(&solid(PixelFormat::Rgba, 2, 2, [0; 4])).is_none());
    }
}
