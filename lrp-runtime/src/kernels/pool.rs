//! 2-D pooling and its relevance: max-pooling sends a window's relevance to its winner,
//! average pooling redistributes in proportion to the inputs (the z-rule on constant weights).

use super::elementwise::stabilize;
use super::im2col::{axis_fits, out_extent, product};

/// Geometry of a pooling layer over one `[channels, in_h, in_w]` sample (PyTorch semantics,
/// `ceil_mode = false`; average pooling counts padding in its divisor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeom {
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Pool2dGeom {
    pub const fn out_h(&self) -> usize {
        out_extent(self.in_h, self.kernel[0], self.stride[0], self.padding[0], 1)
    }

    pub const fn out_w(&self) -> usize {
        out_extent(self.in_w, self.kernel[1], self.stride[1], self.padding[1], 1)
    }

    /// Elements of one input sample; this and [`Self::out_len`] saturate at `usize::MAX` (never
    /// wrap), and [`Self::validate`] refuses geometries where they would.
    pub const fn in_len(&self) -> usize {
        self.channels.saturating_mul(self.in_h).saturating_mul(self.in_w)
    }

    /// Checks what the kernels rely on: positive kernel and stride, padding at most half the
    /// kernel (as PyTorch requires), a non-empty input plane and output, coordinates that fit `isize` (padded
    /// extent plus stride) and input, output and window sizes that fit `usize`.
    pub fn validate(&self) -> Result<(), String> {
        if self.kernel.contains(&0) || self.stride.contains(&0) {
            return Err(format!("kernel and stride must be positive: {self:?}"));
        }
        // `2 p > k` without the overflow of `2 p`.
        if self.padding[0] > self.kernel[0] / 2 || self.padding[1] > self.kernel[1] / 2 {
            return Err(format!("padding must be at most half the kernel: {self:?}"));
        }
        if self.in_h == 0 || self.in_w == 0 {
            return Err(format!("the input is empty ({}x{})", self.in_h, self.in_w));
        }
        let axis = |i: usize| axis_fits([self.in_h, self.in_w][i], self.kernel[i], self.stride[i], self.padding[i], 1);
        if !axis(0) || !axis(1) {
            return Err(format!("the padded input or the stride exceed isize::MAX: {self:?}"));
        }
        if self.out_h() == 0 || self.out_w() == 0 {
            return Err(format!("the window does not fit the {}x{} input", self.in_h, self.in_w));
        }
        let (input, output) = ([self.channels, self.in_h, self.in_w], [self.channels, self.out_h(), self.out_w()]);
        if product(&input).is_none() || product(&output).is_none() || product(&self.kernel).is_none() {
            return Err(format!("the input, output or window size overflows usize: {self:?}"));
        }
        Ok(())
    }

    /// [`Self::validate`], and for max-pooling also an input sample of at most 2^32 elements
    /// (its winners are `u32` indices).
    pub fn validate_max(&self) -> Result<(), String> {
        self.validate()?;
        if self.in_len() as u64 > u32::MAX as u64 + 1 {
            return Err(format!("max-pooling indexes its input with u32, but a sample has {} elements", self.in_len()));
        }
        Ok(())
    }

    /// Panics unless `valid` accepts the geometry (what the kernels check on entry).
    #[track_caller]
    fn assert_valid(&self, kernel: &str, valid: fn(&Self) -> Result<(), String>) {
        if let Err(message) = valid(self) {
            panic!("{kernel}: invalid geometry: {message}");
        }
    }

    pub const fn out_len(&self) -> usize {
        self.channels.saturating_mul(self.out_h()).saturating_mul(self.out_w())
    }

    /// Calls `f(out_index, window)` for each window.
    #[inline]
    fn for_each_window(&self, f: impl FnMut(usize, Window)) {
        self.for_each_window_in(0..self.channels, f);
    }

    /// [`Self::for_each_window`] over the windows of `channels` only.
    #[inline]
    fn for_each_window_in(&self, channels: std::ops::Range<usize>, mut f: impl FnMut(usize, Window)) {
        let (oh, ow) = (self.out_h(), self.out_w());
        let clip = |start: isize, k: usize, len: usize| {
            start.max(0) as usize..((start + k as isize).min(len as isize)).max(0) as usize
        };
        for c in channels {
            let base = c * self.in_h * self.in_w;
            for oy in 0..oh {
                let ys = clip((oy * self.stride[0]) as isize - self.padding[0] as isize, self.kernel[0], self.in_h);
                for ox in 0..ow {
                    let xs = clip((ox * self.stride[1]) as isize - self.padding[1] as isize, self.kernel[1], self.in_w);
                    f((c * oh + oy) * ow + ox, Window { base, w: self.in_w, ys: ys.clone(), xs });
                }
            }
        }
    }
}

/// One pooling window inside the image (padding left out): rows `ys` and columns `xs` of the
/// channel plane starting at `base`, `w` wide.
struct Window {
    base: usize,
    w: usize,
    ys: std::ops::Range<usize>,
    xs: std::ops::Range<usize>,
}

impl Window {
    /// The input indices of the window, row-major.
    #[inline]
    fn taps(&self) -> impl Iterator<Item = usize> + use<> {
        let (base, w, xs) = (self.base, self.w, self.xs.clone());
        self.ys.clone().flat_map(move |y| xs.clone().map(move |x| base + y * w + x))
    }
}

/// `y[w] = max_{j in w} x[j]`, remembering the winner `argmax[w]` (first maximum in row-major
/// order, as PyTorch's CPU kernel; NaN wins).
///
/// Panics if the geometry is invalid ([`Pool2dGeom::validate_max`]) or a slice is shorter
/// than `g.in_len()` (input) or `g.out_len()` (output, winners).
pub fn maxpool_forward(g: &Pool2dGeom, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    g.assert_valid("maxpool_forward", Pool2dGeom::validate_max);
    let (x, y, argmax) = (&x[..g.in_len()], &mut y[..g.out_len()], &mut argmax[..g.out_len()]);
    let plane = g.out_h() * g.out_w();
    let work = g.in_len().saturating_mul(super::parallel::ELEMENTWISE_COST);
    // Channels split over the worker threads when large.
    super::parallel::for_each_piece_pair(y, argmax, plane, work, &|start, y, argmax| {
        let c0 = start / plane.max(1);
        let channels = c0..c0 + y.len() / plane.max(1);
        if g.kernel == [2, 2] && g.stride == [2, 2] && g.padding == [0, 0] {
            maxpool_2x2(g, x, channels, y, argmax);
            return;
        }
        g.for_each_window_in(channels, |o, win| {
            let (mut best, mut best_j) = (f32::NEG_INFINITY, 0usize);
            let mut first = true;
            for yy in win.ys.clone() {
                let row = win.base + yy * win.w;
                for (j, &v) in x[row + win.xs.start..row + win.xs.end].iter().enumerate() {
                    if first || v > best || v.is_nan() {
                        (best, best_j, first) = (v, row + win.xs.start + j, false);
                    }
                }
            }
            y[o - start] = best;
            argmax[o - start] = best_j as u32;
        });
    });
}

/// [`maxpool_forward`] for 2x2 windows with stride 2 and no padding (VGG's, LeNet's), over
/// `channels`, `y` and `argmax` holding just their outputs: the same winners, without the
/// per-window bookkeeping of the general loop.
fn maxpool_2x2(g: &Pool2dGeom, x: &[f32], channels: std::ops::Range<usize>, y: &mut [f32], argmax: &mut [u32]) {
    let (oh, ow, w) = (g.out_h(), g.out_w(), g.in_w);
    let plane = g.in_h * w;
    for (k, c) in channels.enumerate() {
        for oy in 0..oh {
            let top = c * plane + 2 * oy * w;
            let (r0, r1) = (&x[top..top + w], &x[top + w..top + 2 * w]);
            let o = (k * oh + oy) * ow;
            let (y, argmax) = (&mut y[o..o + ow], &mut argmax[o..o + ow]);
            for (ox, (y, am)) in y.iter_mut().zip(argmax.iter_mut()).enumerate() {
                let i = 2 * ox;
                // Row-major order; a later tap wins if larger or NaN, as in the general loop.
                let (mut best, mut at) = (r0[i], top + i);
                for (v, j) in [(r0[i + 1], top + i + 1), (r1[i], top + w + i), (r1[i + 1], top + w + i + 1)] {
                    if v > best || v.is_nan() {
                        (best, at) = (v, j);
                    }
                }
                (*y, *am) = (best, at as u32);
            }
        }
    }
}

/// Winner-take-all: `r_in[j] = sum_{w : argmax[w] = j} r_out[w]`; `r_in` is overwritten, and
/// winners outside their window's channel are ignored.
///
/// Panics if the geometry is invalid ([`Pool2dGeom::validate_max`]) or a slice is shorter
/// than `g.out_len()` (winners, output relevance) or `g.in_len()` (input relevance).
pub fn maxpool_relevance(g: &Pool2dGeom, argmax: &[u32], r_out: &[f32], r_in: &mut [f32]) {
    g.assert_valid("maxpool_relevance", Pool2dGeom::validate_max);
    let (argmax, r_out) = (&argmax[..g.out_len()], &r_out[..g.out_len()]);
    let (plane_in, plane_out) = (g.in_h * g.in_w, g.out_h() * g.out_w());
    let work = g.in_len().saturating_mul(super::parallel::ELEMENTWISE_COST);
    // Channels split over the worker threads when large: a window's winner lies in its channel.
    super::parallel::for_each_piece(&mut r_in[..g.in_len()], plane_in, work, &|start, r_in| {
        r_in.fill(0.0);
        let c0 = start / plane_in.max(1);
        let outs = c0 * plane_out..(c0 + r_in.len() / plane_in.max(1)) * plane_out;
        for (&j, &r) in argmax[outs.clone()].iter().zip(&r_out[outs]) {
            // Winners come from `maxpool_forward`, inside their channel; others are ignored.
            if let Some(v) = (j as usize).checked_sub(start).and_then(|j| r_in.get_mut(j)) {
                *v += r;
            }
        }
    });
}

/// `y[w] = sum_{j in w} x[j] / (kh kw)` (zero padding counted in the divisor).
///
/// Panics if the geometry is invalid ([`Pool2dGeom::validate`]) or a slice is shorter than
/// `g.in_len()` (input) or `g.out_len()` (output); so do the other average-pooling kernels.
pub fn avgpool_forward(g: &Pool2dGeom, x: &[f32], y: &mut [f32]) {
    g.assert_valid("avgpool_forward", Pool2dGeom::validate);
    let inv = 1.0 / (g.kernel[0] * g.kernel[1]) as f32;
    let (x, y) = (&x[..g.in_len()], &mut y[..g.out_len()]);
    g.for_each_window(|o, win| y[o] = win.taps().map(|j| x[j]).sum::<f32>() * inv);
}

/// Proportional rule: `r_in[j] = x[j] sum_{w ∋ j} r_out[w] / (kh kw stab(y[w]))`, with
/// `stab(z) = z + eps sign(z)`; `r_in` is overwritten.
pub fn avgpool_relevance(g: &Pool2dGeom, x: &[f32], y: &[f32], r_out: &[f32], eps: f32, r_in: &mut [f32]) {
    g.assert_valid("avgpool_relevance", Pool2dGeom::validate);
    let inv = 1.0 / (g.kernel[0] * g.kernel[1]) as f32;
    let (x, y, r_out, r_in) = (&x[..g.in_len()], &y[..g.out_len()], &r_out[..g.out_len()], &mut r_in[..g.in_len()]);
    r_in.fill(0.0);
    g.for_each_window(|o, win| {
        let s = r_out[o] * inv / stabilize(y[o], eps);
        for j in win.taps() {
            r_in[j] += s;
        }
    });
    for (r, &xi) in r_in.iter_mut().zip(x) {
        *r *= xi;
    }
}

/// Gradient of average pooling: `g_in[j] = sum_{w ∋ j} g_out[w] / (kh kw)`; `g_in` is overwritten.
pub fn avgpool_gradient(g: &Pool2dGeom, g_out: &[f32], g_in: &mut [f32]) {
    g.assert_valid("avgpool_gradient", Pool2dGeom::validate);
    let inv = 1.0 / (g.kernel[0] * g.kernel[1]) as f32;
    let (g_out, g_in) = (&g_out[..g.out_len()], &mut g_in[..g.in_len()]);
    g_in.fill(0.0);
    g.for_each_window(|o, win| {
        for j in win.taps() {
            g_in[j] += g_out[o] * inv;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(c: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> Pool2dGeom {
        Pool2dGeom { channels: c, in_h: h, in_w: w, kernel: [k, k], stride: [s, s], padding: [p, p] }
    }

    /// Direct definition over padded coordinates.
    fn window(g: &Pool2dGeom, c: usize, oy: usize, ox: usize) -> Vec<usize> {
        let mut out = vec![];
        for ky in 0..g.kernel[0] {
            for kx in 0..g.kernel[1] {
                let y = (oy * g.stride[0] + ky) as i64 - g.padding[0] as i64;
                let x = (ox * g.stride[1] + kx) as i64 - g.padding[1] as i64;
                if y >= 0 && x >= 0 && (y as usize) < g.in_h && (x as usize) < g.in_w {
                    out.push((c * g.in_h + y as usize) * g.in_w + x as usize);
                }
            }
        }
        out
    }

    fn data(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 10.0).collect()
    }

    #[test]
    fn pools_match_naive_including_overlap_and_padding() {
        // 2x2 / stride 2 windows take their own loop (odd sizes included); the last geometry is
        // large enough for max-pooling to be split over the worker threads.
        for geom in [
            g(2, 4, 4, 2, 2, 0),
            g(3, 7, 9, 2, 2, 0),
            g(1, 7, 7, 3, 2, 0),
            g(3, 5, 6, 3, 1, 1),
            g(2, 9, 9, 3, 2, 1),
            g(67, 64, 64, 2, 2, 0),
        ] {
            // Mixed signs for max-pooling; average pooling sees non-negative inputs (after a ReLU),
            // so its denominators stay away from zero.
            let x = data(geom.in_len());
            let x_pos: Vec<f32> = x.iter().map(|v| v.abs() + 0.1).collect();
            let (mut y, mut idx) = (vec![0.0; geom.out_len()], vec![0u32; geom.out_len()]);
            maxpool_forward(&geom, &x, &mut y, &mut idx);
            let mut ya = vec![0.0; geom.out_len()];
            avgpool_forward(&geom, &x_pos, &mut ya);
            let r_out = data(geom.out_len());
            let mut r_max = vec![0.0; geom.in_len()];
            maxpool_relevance(&geom, &idx, &r_out, &mut r_max);
            let mut r_avg = vec![0.0; geom.in_len()];
            avgpool_relevance(&geom, &x_pos, &ya, &r_out, 1e-6, &mut r_avg);
            let mut g_avg = vec![0.0; geom.in_len()];
            avgpool_gradient(&geom, &r_out, &mut g_avg);
            let mut want_grad = vec![0.0f64; geom.in_len()];

            let (mut want_max, mut want_avg) = (vec![0.0f32; geom.in_len()], vec![0.0f64; geom.in_len()]);
            let kk = (geom.kernel[0] * geom.kernel[1]) as f64;
            for c in 0..geom.channels {
                for oy in 0..geom.out_h() {
                    for ox in 0..geom.out_w() {
                        let o = (c * geom.out_h() + oy) * geom.out_w() + ox;
                        let win = window(&geom, c, oy, ox);
                        let best = win.iter().copied().fold(win[0], |b, j| if x[j] > x[b] { j } else { b });
                        assert_eq!(y[o], x[best]);
                        assert_eq!(idx[o] as usize, best);
                        want_max[best] += r_out[o];
                        let avg: f64 = win.iter().map(|&j| x_pos[j] as f64).sum::<f64>() / kk;
                        assert!((ya[o] as f64 - avg).abs() < 1e-5);
                        let stab = avg + if avg >= 0.0 { 1e-6 } else { -1e-6 };
                        for &j in &win {
                            want_avg[j] += x_pos[j] as f64 * r_out[o] as f64 / (kk * stab);
                            want_grad[j] += r_out[o] as f64 / kk;
                        }
                    }
                }
            }
            assert_eq!(r_max, want_max);
            for (a, b) in g_avg.iter().zip(&want_grad) {
                assert!((*a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
            for (a, b) in r_avg.iter().zip(&want_avg) {
                assert!((*a as f64 - b).abs() <= 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn maxpool_ties_go_to_the_first_maximum() {
        let geom = g(1, 2, 2, 2, 2, 0);
        let (mut y, mut idx) = ([0.0], [9u32]);
        maxpool_forward(&geom, &[1.0, 3.0, 3.0, 0.0], &mut y, &mut idx);
        assert_eq!((y[0], idx[0]), (3.0, 1));
    }

    #[test]
    fn maxpool_nan_wins_in_both_loops() {
        // The 2x2 loop and the general one (3x3 here) agree: the last NaN of a window wins.
        let nan = f32::NAN;
        let cases = [
            (g(1, 2, 2, 2, 2, 0), vec![1.0, nan, nan, 0.0], 2u32),
            (g(1, 3, 3, 3, 3, 0), vec![1.0, nan, 5.0, nan, 0.0, 2.0, 3.0, 4.0, 6.0], 3),
        ];
        for (geom, x, winner) in cases {
            let (mut y, mut idx) = ([0.0], [9u32]);
            maxpool_forward(&geom, &x, &mut y, &mut idx);
            assert!(y[0].is_nan() && idx[0] == winner, "{geom:?}: {idx:?}");
        }
    }
}
