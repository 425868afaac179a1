//! Picture sizes and scaling: what size a picture is sent at, and an
//! area-average (box) scaler to get it there.
//!
//! Area averaging weighs each source pixel by how much of it an output
//! pixel covers, so a downscale of any ratio keeps the picture's mean and
//! does not alias the way sampling (nearest, plain bilinear) does past
//! 2:1. It runs as two separable passes in fixed point, vertical first
//! (a row-wise multiply-add the compiler vectorises), then horizontal on
//! the fewer output rows.

use super::convert::{Picture, Planes};

/// The size a `width` x `height` picture is sent at: inside `bounds`
/// (width, height; turned to portrait for a portrait picture), its shorter
/// side at most `max_short`, the aspect ratio kept, never larger than the
/// picture, both dimensions even (4:2:0 and the encoder need it) and at
/// least 2.
pub(crate) fn fit(width: u32, height: u32, bounds: (u32, u32), max_short: u32) -> (u32, u32) {
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let portrait = h > w;
    let (bw, bh) = if portrait {
        (bounds.1, bounds.0)
    } else {
        bounds
    };
    let short = w.min(h);
    // The scale factor as the smallest of these fractions (numerator,
    // denominator): no upscaling, the box, and the short side.
    let mut scale = (1u64, 1u64);
    for (num, den) in [
        (u64::from(bw), w),
        (u64::from(bh), h),
        (u64::from(max_short), short),
    ] {
        if num * scale.1 < scale.0 * den {
            scale = (num, den);
        }
    }
    // Never above the input (the scale is at most 1), so it fits.
    let even = |v: u64| -> u32 { u32::try_from((v & !1).max(2)).unwrap_or(u32::MAX - 1) };
    (even(w * scale.0 / scale.1), even(h * scale.0 / scale.1))
}

/// Fixed-point weights of one axis: for each output sample, `taps`
/// consecutive source samples from `start`, weights adding up to
/// [`ONE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Axis {
    from: usize,
    to: usize,
    taps: usize,
    start: Vec<usize>,
    weights: Vec<u32>,
}

const SHIFT: u32 = 14;
const ONE: u32 = 1 << SHIFT;

impl Axis {
    fn new(from: usize, to: usize) -> Self {
        let ratio = from as f64 / to as f64;
        let taps = ratio.ceil() as usize + 1;
        let mut start = Vec::with_capacity(to);
        let mut weights = vec![0u32; to * taps];
        for i in 0..to {
            // Output sample i covers source interval [lo, hi).
            let lo = i as f64 * ratio;
            let hi = ((i + 1) as f64 * ratio).min(from as f64);
            let first = (lo.floor() as usize).min(from - 1);
            let row = &mut weights[i * taps..(i + 1) * taps];
            // Each weight is the step between rounded running totals of
            // the coverage, so they add up to exactly ONE (a flat picture
            // stays flat) and each is within one unit of its share.
            let mut covered = 0.0;
            let mut given = 0u32;
            for (k, w) in row.iter_mut().enumerate() {
                let j = first + k;
                if j >= from {
                    break;
                }
                covered += (hi.min((j + 1) as f64) - lo.max(j as f64)).max(0.0);
                let total = ((covered / (hi - lo)).min(1.0) * f64::from(ONE)).round() as u32;
                *w = total - given;
                given = total;
            }
            // Near the end, the taps run past the last sample (with zero
            // weights): move them back inside, so that every output
            // sample reads exactly `taps` samples.
            let first = if first + taps > from && from >= taps {
                let back = first + taps - from;
                row.rotate_right(back);
                first - back
            } else {
                first
            };
            start.push(first);
        }
        Axis {
            from,
            to,
            taps,
            start,
            weights,
        }
    }

    /// The source samples and weights of output sample `i`.
    fn tap(&self, i: usize) -> (usize, &[u32]) {
        let start = self.start[i];
        let n = self.taps.min(self.from - start);
        (start, &self.weights[i * self.taps..i * self.taps + n])
    }
}

/// Scales one plane.
#[derive(Debug, Default)]
struct PlaneScaler {
    x: Axis,
    y: Axis,
    /// The vertical pass's output, 8 extra bits of precision.
    rows: Vec<u16>,
    acc: Vec<u32>,
}

impl PlaneScaler {
    fn prepare(&mut self, from: (usize, usize), to: (usize, usize)) {
        if (self.x.from, self.x.to, self.y.from, self.y.to) != (from.0, to.0, from.1, to.1) {
            self.x = Axis::new(from.0, to.0);
            self.y = Axis::new(from.1, to.1);
        }
    }

    /// Scales `src` (`x.from` x `y.from`, tightly packed) into `dst`.
    fn run(&mut self, src: &[u8], dst: &mut [u8]) {
        let (sw, dw) = (self.x.from, self.x.to);
        self.rows.resize(sw * self.y.to, 0);
        self.acc.resize(sw, 0);
        for oy in 0..self.y.to {
            let (start, weights) = self.y.tap(oy);
            self.acc.fill(0);
            for (k, &w) in weights.iter().enumerate() {
                let row = &src[(start + k) * sw..(start + k + 1) * sw];
                for (a, &p) in self.acc.iter_mut().zip(row) {
                    *a += w * u32::from(p);
                }
            }
            let out = &mut self.rows[oy * sw..(oy + 1) * sw];
            for (o, &a) in out.iter_mut().zip(&self.acc) {
                *o = ((a + (1 << (SHIFT - 9))) >> (SHIFT - 8)) as u16;
            }
        }
        for oy in 0..self.y.to {
            let row = &self.rows[oy * sw..(oy + 1) * sw];
            let out = &mut dst[oy * dw..(oy + 1) * dw];
            // The usual ratios (up to 4:1) with their tap count fixed at
            // compile time, which unrolls the inner loop.
            match (sw >= self.x.taps).then_some(self.x.taps) {
                Some(2) => horizontal::<2>(&self.x, row, out),
                Some(3) => horizontal::<3>(&self.x, row, out),
                Some(4) => horizontal::<4>(&self.x, row, out),
                Some(5) => horizontal::<5>(&self.x, row, out),
                _ => {
                    for (ox, o) in out.iter_mut().enumerate() {
                        let (start, weights) = self.x.tap(ox);
                        let sum: u32 = weights
                            .iter()
                            .zip(&row[start..])
                            .map(|(&w, &p)| w * u32::from(p))
                            .sum();
                        *o = from_fixed(sum);
                    }
                }
            }
        }
    }
}

/// A horizontal pass's sum back to a sample.
fn from_fixed(sum: u32) -> u8 {
    ((sum + (1 << (SHIFT + 7))) >> (SHIFT + 8)).min(255) as u8
}

/// The horizontal pass of one row with `T` taps per output sample.
fn horizontal<const T: usize>(axis: &Axis, row: &[u16], out: &mut [u8]) {
    for ((o, &start), weights) in out
        .iter_mut()
        .zip(&axis.start)
        .zip(axis.weights.chunks_exact(T))
    {
        // Every output's taps lie inside the row (see `Axis::new`) unless
        // the row is shorter than `T`, which the general loop handles.
        let (Some(src), Ok(weights)) = (row.get(start..start + T), <&[u32; T]>::try_from(weights))
        else {
            continue;
        };
        let mut sum = 0u32;
        for k in 0..T {
            sum += weights[k] * u32::from(src[k]);
        }
        *o = from_fixed(sum);
    }
}

/// Scales I420 pictures, keeping its tables between frames of one size.
#[derive(Debug, Default)]
pub(crate) struct Scaler {
    luma: PlaneScaler,
    chroma: PlaneScaler,
}

impl Scaler {
    /// Scales `src` into `dst` at `width` x `height`.
    pub(crate) fn scale(
        &mut self,
        src: Planes<'_>,
        width: usize,
        height: usize,
        dst: &mut Picture,
    ) {
        dst.resize(width, height);
        let (scw, sch) = src.chroma();
        let (dcw, dch) = (width.div_ceil(2), height.div_ceil(2));
        self.luma.prepare((src.width, src.height), (width, height));
        self.chroma.prepare((scw, sch), (dcw, dch));
        self.luma.run(src.y, &mut dst.y);
        self.chroma.run(src.u, &mut dst.u);
        self.chroma.run(src.v, &mut dst.v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_aspect_and_never_upscales() {
        let p480 = (640, 480);
        assert_eq!(fit(1280, 720, p480, 480), (640, 360));
        assert_eq!(fit(1920, 1080, (1280, 720), 720), (1280, 720));
        assert_eq!(fit(640, 480, p480, 480), (640, 480));
        // Smaller than the box: sent as it is.
        assert_eq!(fit(320, 240, (1280, 720), 720), (320, 240));
        // Odd sizes are made even.
        assert_eq!(fit(321, 241, (1280, 720), 720), (320, 240));
        // The short side limit (VideoTarget::max_height).
        assert_eq!(fit(1280, 720, p480, 180), (320, 180));
        assert_eq!(fit(1280, 720, (1280, 720), 360), (640, 360));
        // A portrait picture fits the box turned to portrait.
        assert_eq!(fit(720, 1280, p480, 480), (360, 640));
        assert_eq!(fit(720, 1280, p480, 240), (240, 426));
        // 4:3 into a 16:9 box: the height limits it.
        assert_eq!(fit(1440, 1080, (1280, 720), 720), (960, 720));
        // Never below 2x2.
        assert_eq!(fit(1, 1, p480, 480), (2, 2));
        assert_eq!(fit(4096, 2, p480, 480), (640, 2));
    }

    fn gradient(w: usize, h: usize) -> Picture {
        let mut p = Picture::new(w, h);
        for y in 0..h {
            for x in 0..w {
                p.y[y * w + x] = (16 + (x * 219) / (w - 1)) as u8;
            }
        }
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        for y in 0..ch {
            for x in 0..cw {
                p.u[y * cw + x] = (16 + (y * 224) / (ch - 1)) as u8;
                p.v[y * cw + x] = 200;
            }
        }
        p
    }

    fn mean(p: &[u8]) -> f64 {
        p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64
    }

    #[test]
    fn scaling_keeps_the_mean_and_the_shape_of_a_gradient() {
        let src = gradient(1920, 1080);
        let mut scaler = Scaler::default();
        for (w, h) in [
            (1280, 720),
            (640, 360),
            (854, 480),
            (320, 180),
            (1920, 1080),
            (2, 2),
        ] {
            let mut dst = Picture::default();
            scaler.scale(src.planes(), w, h, &mut dst);
            assert_eq!((dst.width, dst.height), (w, h));
            assert_eq!((dst.y.len(), dst.u.len()), (w * h, (w / 2) * (h / 2)));
            for (a, b) in [(&src.y, &dst.y), (&src.u, &dst.u), (&src.v, &dst.v)] {
                let (ma, mb) = (mean(a), mean(b));
                assert!((ma - mb).abs() < 0.6, "{w}x{h}: mean {ma} -> {mb}");
            }
            // A flat plane stays exactly flat.
            assert!(dst.v.iter().all(|&v| v == 200), "{w}x{h}");
            // The gradient still rises left to right, and every row alike.
            let row = &dst.y[..w];
            assert!(row.windows(2).all(|p| p[0] <= p[1]), "{w}x{h}: {row:?}");
            assert!(dst.y.chunks_exact(w).all(|r| r == row), "{w}x{h}");
            if w >= 320 {
                assert!(
                    row[0] <= 20 && row[w - 1] >= 231,
                    "{w}x{h}: {} {}",
                    row[0],
                    row[w - 1]
                );
            }
        }
    }

    #[test]
    fn a_sharp_edge_stays_where_it_was() {
        // Left half white, right half black, scaled by 1.5 and by 3.
        let (w, h) = (1920, 1080);
        let mut src = Picture::new(w, h);
        for r in src.y.chunks_exact_mut(w) {
            r[..w / 2].fill(235);
        }
        let mut scaler = Scaler::default();
        for (dw, dh) in [(1280, 720), (640, 360)] {
            let mut dst = Picture::default();
            scaler.scale(src.planes(), dw, dh, &mut dst);
            let row = &dst.y[..dw];
            assert!(row[..dw / 2].iter().all(|&v| v == 235), "{dw}");
            assert!(row[dw / 2..].iter().all(|&v| v == 16), "{dw}");
        }
    }
}
