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
/// order, as PyTorch's CPU kernel; NaN wins, the last NaN in row-major order if several).
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
        maxpool_rows(g, x, channels, y, argmax);
    });
}

/// [`maxpool_forward`] for any geometry, over `channels`, `y` and `argmax` holding just their
/// outputs, one output row at a time.
///
/// The columns whose windows lie inside the input horizontally (all but a few at the edges)
/// go together: their windows' taps at one (row, column) offset are a slice of the input (after
/// splitting the rows by column modulo the stride, [`deinterleave`], so that columns `sw` apart
/// in the input are adjacent), and [`merge_taps`] merges such slices, in the row-major order
/// of their offsets, into every column's running maximum at once, as a vector loop can. The
/// columns at the edges go window by window ([`window_max`]). Either way a window's taps are
/// seen in row-major order, as the plain loop over them in the reference sees them, so the
/// winners are the same, ties and NaNs included.
fn maxpool_rows(g: &Pool2dGeom, x: &[f32], channels: std::ops::Range<usize>, y: &mut [f32], argmax: &mut [u32]) {
    let (oh, ow, h, w) = (g.out_h(), g.out_w(), g.in_h, g.in_w);
    let ([kh, kw], [sh, sw], [ph, pw]) = (g.kernel, g.stride, g.padding);
    // Columns `lo..hi` have their windows inside the row: `ox sw >= pw`, `ox sw - pw + kw <= w`.
    let lo = pw.div_ceil(sw).min(ow);
    let hi = (w + pw).checked_sub(kw).map_or(0, |room| room / sw + 1).clamp(lo, ow);
    let clip = |start: usize, pad: usize, k: usize, len: usize| start.saturating_sub(pad)..(start + k - pad).min(len);
    // A window's input rows, split by column modulo the stride: input column `m sw + r` of its
    // `i`-th row at `(i sw + r) span + m`. On the stack, so that pooling allocates nothing;
    // windows too large for it go window by window.
    let span = w.div_ceil(sw);
    let mut split = [0.0f32; SPLIT_CAP];
    let mut taps = [(0usize, 0u32); TAPS_CAP];
    let vector = lo < hi && kh * kw <= TAPS_CAP && (sw == 1 || kh * sw * span <= SPLIT_CAP);
    for (k, c) in channels.enumerate() {
        let plane = c * h * w;
        for oy in 0..oh {
            let rows = clip(oy * sh, ph, kh, h);
            let o = (k * oh + oy) * ow;
            let (best, at) = (&mut y[o..o + ow], &mut argmax[o..o + ow]);
            let edges = if vector { lo..hi } else { ow..ow };
            for ox in (0..edges.start).chain(edges.end..ow) {
                let cols = clip(ox * sw, pw, kw, w);
                (best[ox], at[ox]) = window_max(x, plane, w, rows.clone(), cols);
            }
            if !vector {
                continue;
            }
            // The taps of column `lo` at each offset of its window, in row-major order: where
            // they start in the source and their input index.
            let mut count = 0;
            for (i, yy) in rows.enumerate() {
                let row = plane + yy * w;
                if sw > 1 {
                    deinterleave(&x[row..row + w], w, sw, &mut split[i * sw * span..(i + 1) * sw * span]);
                }
                for col in lo * sw - pw..lo * sw - pw + kw {
                    let start = if sw > 1 { i * sw * span + (col % sw) * span + col / sw } else { row + col };
                    taps[count] = (start, (row + col) as u32);
                    count += 1;
                }
            }
            let source: &[f32] = if sw > 1 { &split } else { x };
            merge_taps(&mut best[lo..hi], &mut at[lo..hi], source, &taps[..count], sw as u32);
        }
    }
}

/// Floats of a window's split input rows [`maxpool_rows`] keeps on the stack (16 KiB).
const SPLIT_CAP: usize = 4096;

/// Taps of a window [`maxpool_rows`] merges together (a kernel of up to 8 x 8).
const TAPS_CAP: usize = 64;

/// The maximum of one window clipped to the input, rows `ys` and columns `xs` of the channel
/// plane starting at `base`, `w` wide, and its winner: the taps in row-major order, the first
/// taken as is and each later one if larger or NaN, as in [`merge_lanes`].
fn window_max(x: &[f32], base: usize, w: usize, ys: std::ops::Range<usize>, xs: std::ops::Range<usize>) -> (f32, u32) {
    let (mut best, mut at, mut first) = (f32::NEG_INFINITY, 0u32, true);
    for yy in ys {
        let row = base + yy * w;
        for (j, &v) in (row + xs.start..).zip(&x[row + xs.start..row + xs.end]) {
            if first || v > best || v.is_nan() {
                (best, at, first) = (v, j as u32, false);
            }
        }
    }
    (best, at)
}

/// Splits the rows of `plane` (`w` wide) by column modulo `step`: column `m step + r` of row
/// `yy` goes to `split[(yy step + r) span + m]`, `span = ceil(w / step)`; the slots past a row's
/// end keep what they held.
fn deinterleave(plane: &[f32], w: usize, step: usize, split: &mut [f32]) {
    let span = w.div_ceil(step);
    for (row, out) in plane.chunks_exact(w).zip(split.chunks_exact_mut(step * span)) {
        if step == 2 {
            let (even, odd) = out.split_at_mut(span);
            split_pairs(row, even, odd);
        } else {
            split_columns(row, step, out);
        }
    }
}

/// One row of [`deinterleave`] by 2: even columns to `even`, odd ones to `odd`. (Out of line:
/// inlined into its caller, the copy was left scalar, a quarter of the pooling's time.)
#[inline(never)]
fn split_pairs(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let (pairs, rest) = row.as_chunks::<2>();
    if let Some(&v) = rest.first() {
        even[pairs.len()] = v;
    }
    for ((e, o), &[a, b]) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
        (*e, *o) = (a, b);
    }
}

/// One row of [`deinterleave`] by any `step`: column `m step + r` to `out[r span + m]`.
fn split_columns(row: &[f32], step: usize, out: &mut [f32]) {
    let span = row.len().div_ceil(step);
    for (r, out) in out.chunks_exact_mut(span).enumerate() {
        let columns = row.chunks_exact(step);
        // The last column, past the whole chunks of `step`, when `step` does not divide `w`.
        if let Some(&v) = columns.remainder().get(r) {
            out[columns.len()] = v;
        }
        for (o, c) in out.iter_mut().zip(columns) {
            *o = c[r];
        }
    }
}

/// For each lane `i`, the maximum of the taps `split[taps[t].0 + i]` (input index
/// `taps[t].1 + i * step`) and its winner, taken in the order of `taps` (a window's, in row-major
/// order), into `best[i]` and `at[i]`: the first tap as is, a later one if larger or NaN, so
/// ties keep the first maximum and the last NaN wins. Up to [`GROUP`] taps at a time.
///
/// Panics unless `at` is as long as `best`, there is at least one tap and `split` holds
/// `best.len()` values from each tap's start.
fn merge_taps(best: &mut [f32], at: &mut [u32], split: &[f32], taps: &[(usize, u32)], step: u32) {
    let n = best.len();
    let at = &mut at[..n];
    for (g, group) in taps.chunks(GROUP).enumerate() {
        let lanes = |best: &mut [f32], at: &mut [u32], from: usize| {
            let init = g == 0;
            let tap =
                |t: usize| (&split[group[t].0 + from..][..best.len()], group[t].1.wrapping_add(from as u32 * step));
            match (group.len(), init) {
                (1, true) => merge_lanes::<1, true>(best, at, [tap(0)], step),
                (1, false) => merge_lanes::<1, false>(best, at, [tap(0)], step),
                (2, true) => merge_lanes::<2, true>(best, at, [tap(0), tap(1)], step),
                (2, false) => merge_lanes::<2, false>(best, at, [tap(0), tap(1)], step),
                (3, true) => merge_lanes::<3, true>(best, at, [tap(0), tap(1), tap(2)], step),
                (3, false) => merge_lanes::<3, false>(best, at, [tap(0), tap(1), tap(2)], step),
                (_, true) => merge_lanes::<4, true>(best, at, [tap(0), tap(1), tap(2), tap(3)], step),
                (_, false) => merge_lanes::<4, false>(best, at, [tap(0), tap(1), tap(2), tap(3)], step),
            }
        };
        if n >= BLOCK {
            // Whole blocks, then the last `BLOCK` lanes again: merging the taps it has just
            // merged leaves a lane as it is (it holds their maximum, or their last NaN), so all
            // lanes go through the vector loop and none through its scalar remainder.
            let blocks = n / BLOCK * BLOCK;
            lanes(&mut best[..blocks], &mut at[..blocks], 0);
            if blocks < n {
                lanes(&mut best[n - BLOCK..], &mut at[n - BLOCK..], n - BLOCK);
            }
        } else {
            lanes(best, at, 0);
        }
    }
}

/// Taps [`merge_taps`] merges in one pass over the lanes.
const GROUP: usize = 4;

/// Lanes [`merge_taps`] takes together: a multiple of the vector loop's width (4 lanes of
/// SSE2 or NEON, interleaved twice).
const BLOCK: usize = 8;

/// [`merge_taps`] for `G` taps (each a slice as long as `best`, and the input index of its
/// first value), the first stored as is with `INIT`; the taps are indexed by a bound the
/// compiler knows and the select is branch-free, so that the loop over lanes vectorises.
#[inline(always)]
fn merge_lanes<const G: usize, const INIT: bool>(
    best: &mut [f32],
    at: &mut [u32],
    taps: [(&[f32], u32); G],
    step: u32,
) {
    let n = best.len();
    let at = &mut at[..n];
    let src = taps.map(|(s, _)| &s[..n]);
    let first = taps.map(|(_, j)| j);
    let mut offset = 0u32;
    for i in 0..n {
        let (mut b, mut a) = (best[i], at[i]);
        for t in 0..G {
            let (v, j) = (src[t][i], first[t].wrapping_add(offset));
            let take = (INIT && t == 0) | (v > b) | v.is_nan();
            (b, a) = if take { (v, j) } else { (b, a) };
        }
        (best[i], at[i]) = (b, a);
        offset = offset.wrapping_add(step);
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

    /// The per-window loop `maxpool_forward` ran (for all but 2x2 / stride 2 windows) before it
    /// went a row of windows at a time, kept as its reference: each window's taps in row-major
    /// order, the first taken as is and a later one if larger or NaN.
    fn maxpool_reference(g: &Pool2dGeom, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
        g.for_each_window(|o, win| {
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
            y[o] = best;
            argmax[o] = best_j as u32;
        });
    }

    fn data(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 10.0).collect()
    }

    #[test]
    fn pools_match_naive_including_overlap_and_padding() {
        // Odd sizes included; the last geometry is large enough for max-pooling to be split over
        // the worker threads.
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
    fn maxpool_the_last_nan_wins() {
        // 2x2 and 3x3 windows alike: the last NaN of a window in row-major order wins.
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

    /// SplitMix64: a deterministic stream for the randomised comparisons.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }
    }

    /// NaNs told apart by their payload and sign, so that a bitwise comparison sees which won.
    fn nan(k: u64) -> f32 {
        f32::from_bits(0x7fc0_0000 | (k as u32 & 0x3f_ffff) | if k & 1 == 0 { 0 } else { 0x8000_0000 })
    }

    /// Input values of one of several kinds: spread out, few distinct (ties, both zeros), with
    /// NaNs and infinities sprinkled in, all equal, all NaN, all -inf.
    fn values(rng: &mut Rng, kind: usize, n: usize) -> Vec<f32> {
        let few = [-2.0, -1.0, -0.0, 0.0, 1.0, 2.0];
        (0..n)
            .map(|_| {
                let r = rng.next();
                match kind {
                    0 => (r >> 40) as f32 / (1u64 << 20) as f32 - 8.0,
                    1 => few[(r % 6) as usize],
                    2 => match r % 10 {
                        0 => nan(r >> 8),
                        1 => f32::NEG_INFINITY,
                        2 => f32::INFINITY,
                        3 => -0.0,
                        _ => few[((r >> 8) % 6) as usize] - 10.0,
                    },
                    3 => -3.5,
                    4 => nan(r >> 8),
                    _ => f32::NEG_INFINITY,
                }
            })
            .collect()
    }

    /// `maxpool_forward` against [`maxpool_reference`] on `batch` samples of `x`, bitwise (values
    /// and winners), and the relevance its winners route against the reference's.
    fn assert_matches_reference(geom: &Pool2dGeom, x: &[f32], batch: usize, r_out: &[f32]) {
        let (n_in, n_out) = (geom.in_len(), geom.out_len());
        for b in 0..batch {
            let x = &x[b * n_in..(b + 1) * n_in];
            let (mut y, mut idx) = (vec![0.0; n_out], vec![u32::MAX; n_out]);
            maxpool_forward(geom, x, &mut y, &mut idx);
            let (mut want_y, mut want_idx) = (vec![0.0; n_out], vec![u32::MAX; n_out]);
            maxpool_reference(geom, x, &mut want_y, &mut want_idx);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(idx, want_idx, "{geom:?}, sample {b}, input {x:?}");
            assert_eq!(bits(&y), bits(&want_y), "{geom:?}, sample {b}, input {x:?}");
            let (mut r_in, mut want_r_in) = (vec![0.0; n_in], vec![0.0; n_in]);
            maxpool_relevance(geom, &idx, &r_out[..n_out], &mut r_in);
            maxpool_relevance(geom, &want_idx, &r_out[..n_out], &mut want_r_in);
            assert_eq!(bits(&r_in), bits(&want_r_in), "{geom:?}");
        }
    }

    #[test]
    fn maxpool_matches_the_per_window_reference_on_random_geometries() {
        let mut rng = Rng(0x5eed);
        let mut checked = 0;
        while checked < 3000 {
            let square = !rng.next().is_multiple_of(4);
            let kh = rng.range(1, 5);
            let kw = if square { kh } else { rng.range(1, 5) };
            let sh = rng.range(1, 3);
            let sw = if square { sh } else { rng.range(1, 3) };
            let (ph, pw) = (rng.range(0, kh / 2), rng.range(0, kw / 2));
            // Mostly small planes; some wide ones, for whole blocks of columns at every stride.
            let (h, w) =
                (rng.range(1, 20), if rng.next().is_multiple_of(5) { rng.range(20, 70) } else { rng.range(1, 20) });
            let channels = rng.range(1, 4);
            let geom = Pool2dGeom { channels, in_h: h, in_w: w, kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw] };
            if geom.validate_max().is_err() {
                continue;
            }
            let batch = rng.range(1, 3);
            let kind = rng.range(0, 5);
            let x = values(&mut rng, kind, batch * geom.in_len());
            let r_out = values(&mut rng, 0, geom.out_len());
            assert_matches_reference(&geom, &x, batch, &r_out);
            checked += 1;
        }
    }

    #[test]
    fn maxpool_matches_the_reference_when_split_over_threads() {
        // Large enough for the channels to go over the worker threads; ResNet's stem among them.
        let mut rng = Rng(7);
        for (c, hw, k, s, p) in [(64, 56, 3, 2, 1), (9, 61, 5, 1, 2), (13, 47, 3, 3, 1), (67, 64, 2, 2, 0)] {
            let geom = g(c, hw, hw, k, s, p);
            for kind in [0, 1, 2] {
                let x = values(&mut rng, kind, geom.in_len());
                let r_out = values(&mut rng, 0, geom.out_len());
                assert_matches_reference(&geom, &x, 1, &r_out);
            }
        }
    }

    #[test]
    fn maxpool_ties_nan_and_infinities_at_the_edges() {
        // 3x3 / stride 2 / padding 1 over a 20-wide row: whole blocks of columns in the middle,
        // clipped windows at the edges. All equal: every window's first tap inside the input
        // wins; all -inf likewise; all NaN: its last.
        let geom = g(1, 3, 20, 3, 2, 1);
        let (mut y, mut idx) = (vec![0.0; geom.out_len()], vec![0u32; geom.out_len()]);
        maxpool_forward(&geom, &[-0.0; 60], &mut y, &mut idx);
        assert_eq!(idx[..3], [0, 1, 3]);
        assert!(y.iter().all(|v| v.to_bits() == (-0.0f32).to_bits()));
        maxpool_forward(&geom, &[f32::NEG_INFINITY; 60], &mut y, &mut idx);
        assert_eq!(idx[..3], [0, 1, 3]);
        let x: Vec<f32> = (0..60).map(nan).collect();
        maxpool_forward(&geom, &x, &mut y, &mut idx);
        assert_eq!(idx[..3], [21, 23, 25]);
        assert!(y.iter().zip(&idx).all(|(v, &j)| v.to_bits() == x[j as usize].to_bits()));
        // -0.0 before 0.0 in the same window: the first stays, sign included.
        let mut x = vec![-1.0f32; 60];
        (x[2], x[3]) = (-0.0, 0.0);
        maxpool_forward(&geom, &x, &mut y, &mut idx);
        assert_eq!((y[1].to_bits(), idx[1]), ((-0.0f32).to_bits(), 2));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = f32> {
            prop_oneof![
                4 => (-3i32..=3).prop_map(|v| v as f32),
                2 => any::<f32>(),
                1 => Just(-0.0f32),
                1 => Just(f32::NEG_INFINITY),
                1 => (0u64..64).prop_map(nan),
            ]
        }

        fn case() -> impl Strategy<Value = (Pool2dGeom, usize, Vec<f32>)> {
            (1usize..=5, 1usize..=5, 1usize..=3, 1usize..=3, 1usize..=20, 1usize..=40, 1usize..=4, 1usize..=3)
                .prop_flat_map(|(kh, kw, sh, sw, h, w, channels, batch)| {
                    (0..=kh / 2, 0..=kw / 2).prop_map(move |(ph, pw)| {
                        let geom = Pool2dGeom {
                            channels,
                            in_h: h,
                            in_w: w,
                            kernel: [kh, kw],
                            stride: [sh, sw],
                            padding: [ph, pw],
                        };
                        (geom, batch)
                    })
                })
                .prop_filter("valid geometry", |(geom, _)| geom.validate_max().is_ok())
                .prop_flat_map(|(geom, batch)| {
                    (Just(geom), Just(batch), proptest::collection::vec(value(), batch * geom.in_len()))
                })
        }

        proptest! {
            #[test]
            fn maxpool_matches_the_reference((geom, batch, x) in case()) {
                let r_out: Vec<f32> = (0..geom.out_len()).map(|i| i as f32 - 3.0).collect();
                assert_matches_reference(&geom, &x, batch, &r_out);
            }
        }
    }
}
