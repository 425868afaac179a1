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
    let rgb = |px: &[u8]| {
        (
            i32::from(px[order[0]]),
            i32::from(px[order[1]]),
            i32::from(px[order[2]]),
        )
    };
    for cy in 0..h.div_ceil(2) {
        let top = 2 * cy;
        let rows = if top + 1 < h { 2 } else { 1 };
        let (u_row, v_row) = (
            &mut out.u[cy * cw..(cy + 1) * cw],
            &mut out.v[cy * cw..(cy + 1) * cw],
        );
        let mut done = 0;
        if rows == 2 {
            // Whole 2x2 blocks: the common case, kept to straight-line code.
            let src0 = &data[top * row_len..(top + 1) * row_len];
            let src1 = &data[(top + 1) * row_len..(top + 2) * row_len];
            let (y0, y1) = out.y[top * w..(top + 2) * w].split_at_mut(w);
            let blocks = src0
                .chunks_exact(8)
                .zip(src1.chunks_exact(8))
                .zip(y0.chunks_exact_mut(2).zip(y1.chunks_exact_mut(2)))
                .zip(u_row.iter_mut().zip(v_row.iter_mut()));
            for (((a, b), (ya, yb)), (u, v)) in blocks {
                let p = [rgb(&a[..4]), rgb(&a[4..]), rgb(&b[..4]), rgb(&b[4..])];
                ya[0] = luma(p[0].0, p[0].1, p[0].2);
                ya[1] = luma(p[1].0, p[1].1, p[1].2);
                yb[0] = luma(p[2].0, p[2].1, p[2].2);
                yb[1] = luma(p[3].0, p[3].1, p[3].2);
                let (r, g, b) = p
                    .iter()
                    .fold((0, 0, 0), |s, c| (s.0 + c.0, s.1 + c.1, s.2 + c.2));
                (*u, *v) = chroma(r, g, b, 4);
                done += 1;
            }
        }
        // What is left: the last column of an odd width, the last row of
        // an odd height.
        for cx in done..cw {
            let (mut r, mut g, mut b, mut n) = (0, 0, 0, 0);
            for y in top..top + rows {
                for x in 2 * cx..(2 * cx + 2).min(w) {
                    let (pr, pg, pb) = rgb(&data[y * row_len + x * 4..]);
                    out.y[y * w + x] = luma(pr, pg, pb);
                    (r, g, b, n) = (r + pr, g + pg, b + pb, n + 1);
                }
            }
            (u_row[cx], v_row[cx]) = chroma(r, g, b, n);
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
    fn every_pixel_and_block_of_an_odd_sized_picture_is_converted() {
        // Noise, 7x5: whole blocks, the odd column and the odd row.
        let (w, h) = (7usize, 5usize);
        let mut seed = 3u32;
        let data: Vec<u8> = (0..w * h * 4)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 24) as u8
            })
            .collect();
        let frame = VideoFrame::new(
            PixelFormat::Bgra,
            w as u32,
            h as u32,
            data.clone(),
            Duration::ZERO,
        )
        .unwrap();
        let mut pic = Picture::default();
        to_i420(&frame, &mut pic);
        let px = |x: usize, y: usize| {
            let p = &data[(y * w + x) * 4..];
            (i32::from(p[2]), i32::from(p[1]), i32::from(p[0]))
        };
        for y in 0..h {
            for x in 0..w {
                let (r, g, b) = px(x, y);
                assert_eq!(pic.y[y * w + x], luma(r, g, b), "Y at {x},{y}");
            }
        }
        let cw = w.div_ceil(2);
        for cy in 0..h.div_ceil(2) {
            for cx in 0..cw {
                let (mut r, mut g, mut b, mut n) = (0, 0, 0, 0);
                for y in 2 * cy..(2 * cy + 2).min(h) {
                    for x in 2 * cx..(2 * cx + 2).min(w) {
                        let p = px(x, y);
                        (r, g, b, n) = (r + p.0, g + p.1, b + p.2, n + 1);
                    }
                }
                let (u, v) = chroma(r, g, b, n);
                assert_eq!(
                    (pic.u[cy * cw + cx], pic.v[cy * cw + cx]),
                    (u, v),
                    "UV at {cx},{cy}"
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
