//! Lowering a 2-D convolution to a matrix product: `im2col` unfolds the receptive fields of an
//! image into columns, `col2im` folds columns back, summing where fields overlap.

/// Geometry of a 2-D convolution over one `[in_channels, in_h, in_w]` sample, PyTorch semantics
/// (zero padding, dilation, groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dGeom {
    /// `out = (in + 2 pad - dilation (kernel - 1) - 1) / stride + 1` (0 when the kernel does
    /// not fit, see [`out_extent`]).
    pub const fn out_h(&self) -> usize {
        out_extent(self.in_h, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0])
    }

    pub const fn out_w(&self) -> usize {
        out_extent(self.in_w, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1])
    }

    /// Elements of one input sample. This and the other sizes saturate at `usize::MAX` (never
    /// wrap); [`Self::validate`] refuses geometries where any of them would.
    pub const fn in_len(&self) -> usize {
        self.in_channels.saturating_mul(self.in_h).saturating_mul(self.in_w)
    }

    /// Elements of one output sample.
    pub const fn out_len(&self) -> usize {
        self.out_channels.saturating_mul(self.out_h()).saturating_mul(self.out_w())
    }

    /// Rows of the unfolded matrix: `in_channels * kh * kw`.
    pub const fn col_rows(&self) -> usize {
        self.in_channels.saturating_mul(self.kernel[0]).saturating_mul(self.kernel[1])
    }

    /// Columns of the unfolded matrix: one per output position.
    pub const fn col_cols(&self) -> usize {
        self.out_h().saturating_mul(self.out_w())
    }

    /// Checks what the kernels rely on: positive kernel, stride, dilation and groups, groups
    /// dividing both channel counts, a non-empty input plane and output, coordinates that fit `isize` (padded
    /// extent plus stride, and the dilated kernel's reach, per axis), and sizes that fit `usize`
    /// (input, output, weights, and the unfolded matrix `col_rows x col_cols`).
    pub fn validate(&self) -> Result<(), String> {
        let positive = self.kernel.iter().chain(&self.stride).chain(&self.dilation).all(|&v| v > 0);
        if !positive || self.groups == 0 {
            return Err(format!("kernel, stride, dilation and groups must be positive: {self:?}"));
        }
        if !self.in_channels.is_multiple_of(self.groups) || !self.out_channels.is_multiple_of(self.groups) {
            return Err(format!(
                "groups = {} must divide in_channels = {} and out_channels = {}",
                self.groups, self.in_channels, self.out_channels
            ));
        }
        if self.in_h == 0 || self.in_w == 0 {
            return Err(format!("the input is empty ({}x{})", self.in_h, self.in_w));
        }
        let axis = |i: usize| [self.in_h, self.in_w][i];
        if !(0..2).all(|i| axis_fits(axis(i), self.kernel[i], self.stride[i], self.padding[i], self.dilation[i])) {
            return Err(format!("the padded input, stride or dilated kernel exceed isize::MAX: {self:?}"));
        }
        if self.out_h() == 0 || self.out_w() == 0 {
            return Err(format!("the kernel does not fit the padded {}x{} input", self.in_h, self.in_w));
        }
        let ([kh, kw], [oh, ow], cin) = (self.kernel, [self.out_h(), self.out_w()], self.in_channels);
        let sizes: [&[usize]; 4] = [
            &[cin, self.in_h, self.in_w],
            &[self.out_channels, oh, ow],
            &[self.out_channels, cin / self.groups, kh, kw],
            // The unfolded matrix, and one channel of it (`cin` may be 0).
            &[cin.max(1), kh, kw, oh, ow],
        ];
        if !sizes.iter().all(|dims| product(dims).is_some()) {
            return Err(format!("the input, output, weight or unfolded sizes overflow usize: {self:?}"));
        }
        Ok(())
    }

    /// Panics unless [`Self::validate`] accepts the geometry (what the kernels check on entry).
    #[track_caller]
    pub(crate) fn assert_valid(&self, kernel: &str) {
        if let Err(message) = self.validate() {
            panic!("{kernel}: invalid geometry: {message}");
        }
    }

    /// The convolution whose forward pass is this one's transposed pass (`c = W^T s`, the
    /// gradient with respect to the input), when there is one: for stride 1 and padding at most
    /// the dilated kernel's reach, correlating `s [out_channels, out_h, out_w]` with the flipped
    /// kernels ([`Self::transpose_weights`]) under padding `dilation (k - 1) - padding` gives
    /// `[in_channels, in_h, in_w]`. `None` for strided convolutions.
    /// `None` too when either geometry is invalid.
    pub fn transposed(&self) -> Option<Conv2dGeom> {
        if self.stride != [1, 1] || self.validate().is_err() {
            return None;
        }
        // `dilation (kernel - 1)` fits: `validate` checked it.
        let pad = |i: usize| (self.dilation[i] * (self.kernel[i] - 1)).checked_sub(self.padding[i]);
        let (ph, pw) = (pad(0)?, pad(1)?);
        let t = Conv2dGeom {
            in_channels: self.out_channels,
            out_channels: self.in_channels,
            in_h: self.out_h(),
            in_w: self.out_w(),
            padding: [ph, pw],
            ..*self
        };
        t.validate().is_ok().then_some(t)
    }

    /// The weights of [`Self::transposed`]: `W'[ci, o, kh - 1 - a, kw - 1 - b] = W[g cout_g + o,
    /// ci - g cin_g, a, b]` for input channel `ci` of group `g`, in the layout
    /// `[in_channels, out_channels / groups, kh, kw]`. Panics if the geometry is invalid
    /// ([`Self::validate`]) or `w` is shorter than the weights.
    pub fn transpose_weights(&self, w: &[f32]) -> Vec<f32> {
        self.assert_valid("transpose_weights");
        let (kh, kw) = (self.kernel[0], self.kernel[1]);
        let (cin_g, cout_g) = (self.in_channels / self.groups, self.out_channels / self.groups);
        let taps = kh * kw;
        let mut out = vec![0.0; self.in_channels * cout_g * taps];
        for ci in 0..self.in_channels {
            let (group, cl) = (ci / cin_g, ci % cin_g);
            for o in 0..cout_g {
                let src = &w[((group * cout_g + o) * cin_g + cl) * taps..][..taps];
                let dst = &mut out[(ci * cout_g + o) * taps..][..taps];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
        out
    }

    /// Shape of the weight tensor, PyTorch layout `[out, in / groups, kh, kw]` (`in / groups`
    /// is 0 for `groups = 0`, which [`Self::validate`] refuses).
    pub const fn weight_shape(&self) -> [usize; 4] {
        let in_per_group = match self.in_channels.checked_div(self.groups) {
            Some(v) => v,
            None => 0,
        };
        [self.out_channels, in_per_group, self.kernel[0], self.kernel[1]]
    }
}

/// Output extent of a convolution or pooling window sliding over `input` positions:
/// `(input + 2 pad - dilation (kernel - 1) - 1) / stride + 1`, and 0 when the window does not
/// fit, `kernel`, `stride` or `dilation` is 0, or `input + 2 pad` or the reach overflow.
pub const fn out_extent(input: usize, kernel: usize, stride: usize, pad: usize, dilation: usize) -> usize {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return 0;
    }
    let (Some(reach), Some(total)) = (dilation.checked_mul(kernel - 1), padded(input, pad)) else {
        return 0;
    };
    if total <= reach { 0 } else { (total - reach - 1) / stride + 1 }
}

/// `input + 2 pad`, `None` on overflow.
const fn padded(input: usize, pad: usize) -> Option<usize> {
    match pad.checked_mul(2) {
        Some(p) => input.checked_add(p),
        None => None,
    }
}

/// Whether the coordinates along one axis fit `isize`: `input + 2 pad + stride` and
/// `dilation (kernel - 1)`; bounds every position and offset the kernels compute.
pub(crate) fn axis_fits(input: usize, kernel: usize, stride: usize, pad: usize, dilation: usize) -> bool {
    let max = isize::MAX as usize;
    let extent = padded(input, pad).and_then(|p| p.checked_add(stride));
    let reach = dilation.checked_mul(kernel.saturating_sub(1));
    extent.is_some_and(|e| e <= max) && reach.is_some_and(|r| r <= max)
}

/// `dims[0] dims[1] ...`, `None` on overflow.
pub(crate) fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The output columns `ox` whose tap `kj` reads a real input pixel: `lo..hi`, and the input
/// column of `ox = lo`.
#[inline]
pub(crate) fn valid_columns(g: &Conv2dGeom, kj: usize) -> (usize, usize, usize) {
    let ow = g.out_w();
    let offset = kj * g.dilation[1];
    // x = ox * stride + offset - pad must lie in 0..in_w.
    let lo = g.padding[1].saturating_sub(offset).div_ceil(g.stride[1]).min(ow);
    let hi = if g.in_w + g.padding[1] > offset {
        ((g.in_w + g.padding[1] - offset - 1) / g.stride[1] + 1).min(ow)
    } else {
        0
    };
    let hi = hi.max(lo);
    (lo, hi, lo * g.stride[1] + offset - g.padding[1].min(lo * g.stride[1] + offset))
}

/// The transposed unfolded matrix `cols^T` (`[oh ow, C kh kw]`) of some channels of one image,
/// never materialised: the GEMM packs its blocks straight from the image (implicit `im2col`).
/// Row `pos = oy ow + ox`, column `(c kh + ki) kw + kj`: the transpose of [`im2col`]'s output.
#[derive(Clone, Copy, Debug)]
pub struct ConvCols<'a> {
    pub(crate) g: Conv2dGeom,
    /// The channels' planes, `[channels, in_h, in_w]`.
    pub(crate) input: &'a [f32],
    pub(crate) channels: usize,
    /// The rows (output positions) in view: `first..first + count`.
    pub(crate) first: usize,
    pub(crate) count: usize,
}

impl<'a> ConvCols<'a> {
    /// Channels `c0..c0 + channels` of `input [in_channels, in_h, in_w]` under geometry `g`.
    ///
    /// Panics if `g` is invalid ([`Conv2dGeom::validate`]) or the channels lie outside `input`;
    /// generated code only builds geometries the compiler checked and buffers of their size.
    pub fn new(g: &Conv2dGeom, input: &'a [f32], c0: usize, channels: usize) -> Self {
        g.assert_valid("conv cols");
        // `plane * in_channels` fits (`validate`), hence every product below once `end` is checked.
        let plane = g.in_h * g.in_w;
        let end = c0.checked_add(channels).filter(|&end| end <= g.in_channels);
        let end = end.expect("conv cols: channels outside the geometry");
        assert!(input.len() >= end * plane, "conv cols: short input");
        let input = &input[c0 * plane..end * plane];
        ConvCols { g: *g, input, channels, first: 0, count: g.col_cols() }
    }

    /// Rows: output positions in view.
    pub fn positions(&self) -> usize {
        self.count
    }

    /// Columns: `channels kh kw`.
    pub fn taps(&self) -> usize {
        self.channels * self.g.kernel[0] * self.g.kernel[1]
    }

    /// Rows `lo..hi` of this view (`lo <= hi <= positions`).
    pub(crate) fn positions_range(self, lo: usize, hi: usize) -> Self {
        assert!(lo <= hi && hi <= self.count, "conv cols: rows {lo}..{hi} of {}", self.count);
        ConvCols { first: self.first + lo, count: hi - lo, ..self }
    }

    /// Writes the view out transposed, as [`im2col`] would for these channels and positions:
    /// `dst[t positions + p] = cols^T[p, t]` for tap `t` and position `p`. Panics if `dst` is
    /// shorter than `taps * positions`.
    pub(crate) fn unfold(&self, dst: &mut [f32]) {
        let per_channel = self.g.kernel[0] * self.g.kernel[1] * self.count;
        if per_channel == 0 {
            return;
        }
        let range = (self.first, self.count);
        for (c, rows) in dst[..self.channels * per_channel].chunks_exact_mut(per_channel).enumerate() {
            im2col_channel(&self.g, self.input, c, range, rows);
        }
    }
}

/// Unfolds `input [C, H, W]` into `cols [C kh kw, oh ow]` (row-major), zeros for padding. Each
/// output row segment is written once: zeros where the tap reads padding, a contiguous copy
/// (stride 1) or a strided gather of the input row otherwise. Large images are split by
/// channels over the worker threads ([`super::parallel`]).
///
/// Panics if the geometry is invalid ([`Conv2dGeom::validate`]) or a slice is shorter than
/// `g.in_len()` (input) or `g.col_rows() * g.col_cols()` (columns).
pub fn im2col(g: &Conv2dGeom, input: &[f32], cols: &mut [f32]) {
    g.assert_valid("im2col");
    let channel_len = g.kernel[0] * g.kernel[1] * g.col_cols();
    let cols = &mut cols[..g.in_channels * channel_len];
    let input = &input[..g.in_len()];
    let work = cols.len().saturating_mul(super::parallel::ELEMENTWISE_COST);
    super::parallel::for_each_piece(cols, channel_len, work, &|start, piece| {
        for (i, rows) in piece.chunks_exact_mut(channel_len).enumerate() {
            im2col_channel(g, input, start / channel_len + i, (0, g.col_cols()), rows);
        }
    });
}

/// The `kh kw` rows of `cols` that channel `c` of `input` unfolds into, over the output
/// positions `first..first + count` (rows of `count`).
fn im2col_channel(g: &Conv2dGeom, input: &[f32], c: usize, (first, count): (usize, usize), rows: &mut [f32]) {
    let ow = g.out_w();
    if count == 0 {
        return;
    }
    for ki in 0..g.kernel[0] {
        for kj in 0..g.kernel[1] {
            let row = &mut rows[(ki * g.kernel[1] + kj) * count..][..count];
            let (lo, hi, x0) = valid_columns(g, kj);
            for oy in first / ow..=(first + count - 1) / ow {
                // The output columns of row `oy` in view, `a..b`, and those reading the image.
                let a = first.max(oy * ow) - oy * ow;
                let b = (first + count).min((oy + 1) * ow) - oy * ow;
                let out = &mut row[oy * ow + a - first..oy * ow + b - first];
                let (l, h) = (lo.clamp(a, b), hi.clamp(a, b));
                let y = (oy * g.stride[0] + ki * g.dilation[0]) as isize - g.padding[0] as isize;
                if y < 0 || y >= g.in_h as isize || l >= h {
                    out.fill(0.0);
                    continue;
                }
                let src = &input[(c * g.in_h + y as usize) * g.in_w..][..g.in_w];
                let x = x0 + (l - lo) * g.stride[1];
                out[..l - a].fill(0.0);
                out[h - a..].fill(0.0);
                if g.stride[1] == 1 {
                    out[l - a..h - a].copy_from_slice(&src[x..x + (h - l)]);
                } else {
                    for (o, xi) in out[l - a..h - a].iter_mut().zip((x..).step_by(g.stride[1])) {
                        *o = src[xi];
                    }
                }
            }
        }
    }
}

/// Folds `cols [C kh kw, oh ow]` back onto `out [C, H, W]`, summing overlapping entries
/// (the adjoint of [`im2col`]): `out` is overwritten. Large images are split by channels over
/// the worker threads.
///
/// Panics if the geometry is invalid ([`Conv2dGeom::validate`]) or a slice is shorter than
/// `g.col_rows() * g.col_cols()` (columns) or `g.in_len()` (output).
pub fn col2im(g: &Conv2dGeom, cols: &[f32], out: &mut [f32]) {
    g.assert_valid("col2im");
    let channel_len = g.kernel[0] * g.kernel[1] * g.col_cols();
    let cols = &cols[..g.in_channels * channel_len];
    let plane = g.in_h * g.in_w;
    let out = &mut out[..g.in_len()];
    let work = cols.len().saturating_mul(super::parallel::ELEMENTWISE_COST);
    super::parallel::for_each_piece(out, plane, work, &|start, piece| {
        for (i, dst) in piece.chunks_exact_mut(plane).enumerate() {
            let c = start / plane + i;
            col2im_channel(g, &cols[c * channel_len..(c + 1) * channel_len], dst);
        }
    });
}

/// Folds the `kh kw` rows of channel `c` onto its plane `dst [H, W]` (overwritten).
fn col2im_channel(g: &Conv2dGeom, rows: &[f32], dst: &mut [f32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let n = oh * ow;
    dst.fill(0.0);
    for ki in 0..g.kernel[0] {
        for kj in 0..g.kernel[1] {
            let row = ki * g.kernel[1] + kj;
            let (lo, hi, x0) = valid_columns(g, kj);
            if lo >= hi {
                continue;
            }
            for oy in 0..oh {
                let y = (oy * g.stride[0] + ki * g.dilation[0]) as isize - g.padding[0] as isize;
                if y < 0 || y >= g.in_h as isize {
                    continue;
                }
                let src = &rows[row * n + oy * ow + lo..row * n + oy * ow + hi];
                let line = &mut dst[y as usize * g.in_w..][..g.in_w];
                // Output column `lo + t` adds onto input column `x0 + t stride`.
                if g.stride[1] == 1 {
                    line[x0..x0 + src.len()].iter_mut().zip(src).for_each(|(d, s)| *d += s);
                } else {
                    line[x0..].iter_mut().step_by(g.stride[1]).zip(src).for_each(|(d, s)| *d += s);
                }
            }
        }
    }
}

/// A test geometry: `c` channels of `h x w`, kernel `k`, stride `s`, padding `p`, dilation
/// `d`, one output channel, one group.
#[cfg(test)]
pub(crate) fn geom(
    c: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    d: [usize; 2],
) -> Conv2dGeom {
    Conv2dGeom {
        in_channels: c,
        out_channels: 1,
        in_h: h,
        in_w: w,
        kernel: k,
        stride: s,
        padding: p,
        dilation: d,
        groups: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition: cols[(c,ki,kj),(oy,ox)] = x[c, oy*s - p + ki*d, ox*s - p + kj*d] or 0.
    fn naive_im2col(g: &Conv2dGeom, x: &[f32]) -> Vec<f32> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut cols = vec![0.0; g.col_rows() * oh * ow];
        for c in 0..g.in_channels {
            for ki in 0..g.kernel[0] {
                for kj in 0..g.kernel[1] {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let y = (oy * g.stride[0] + ki * g.dilation[0]) as i64 - g.padding[0] as i64;
                            let xx = (ox * g.stride[1] + kj * g.dilation[1]) as i64 - g.padding[1] as i64;
                            let v = if y >= 0 && xx >= 0 && (y as usize) < g.in_h && (xx as usize) < g.in_w {
                                x[(c * g.in_h + y as usize) * g.in_w + xx as usize]
                            } else {
                                0.0
                            };
                            cols[((c * g.kernel[0] + ki) * g.kernel[1] + kj) * oh * ow + oy * ow + ox] = v;
                        }
                    }
                }
            }
        }
        cols
    }

    #[test]
    fn im2col_matches_naive_and_col2im_is_its_adjoint() {
        let cases = [
            geom(1, 4, 4, [3, 3], [1, 1], [1, 1], [1, 1]),
            geom(2, 7, 5, [3, 2], [2, 1], [1, 0], [1, 1]),
            geom(3, 9, 9, [3, 3], [2, 2], [2, 2], [2, 2]),
            geom(2, 5, 6, [1, 1], [1, 1], [0, 0], [1, 1]),
            // Large enough to be split over the worker threads, with an odd channel count.
            geom(67, 128, 128, [3, 3], [1, 1], [1, 1], [1, 1]),
        ];
        for g in cases {
            let x: Vec<f32> = (0..g.in_len()).map(|i| (i as f32 * 0.7).cos()).collect();
            let mut cols = vec![f32::NAN; g.col_rows() * g.col_cols()];
            im2col(&g, &x, &mut cols);
            assert_eq!(cols, naive_im2col(&g, &x), "{g:?}");
            // <im2col(x), y> == <x, col2im(y)> for the adjoint.
            let y: Vec<f32> = (0..cols.len()).map(|i| (i as f32 * 0.3).sin()).collect();
            let mut back = vec![f32::NAN; g.in_len()];
            col2im(&g, &y, &mut back);
            let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{g:?}: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn unfolded_positions_equal_columns_of_naive_im2col() {
        // Strided, dilated and padded; views of some channels and of position ranges that start
        // and end inside output rows, span several, or hold one position.
        let cases = [
            geom(3, 7, 5, [3, 2], [2, 1], [1, 1], [1, 2]),
            geom(2, 6, 9, [3, 3], [1, 1], [1, 1], [1, 1]),
            geom(4, 5, 4, [1, 1], [1, 1], [0, 0], [1, 1]),
        ];
        for g in cases {
            let x: Vec<f32> = (0..g.in_len()).map(|i| (i as f32 * 0.7).cos()).collect();
            let cols = naive_im2col(&g, &x);
            let (p, ow, kk) = (g.col_cols(), g.out_w(), g.kernel[0] * g.kernel[1]);
            for (c0, channels) in [(0, g.in_channels), (1, g.in_channels - 1)] {
                let all = ConvCols::new(&g, &x, c0, channels);
                for (lo, hi) in [(0, p), (1, p - 2), (ow - 1, 2 * ow + 1), (p / 2, p / 2 + 1), (p, p)] {
                    let n = hi - lo;
                    let mut got = vec![f32::NAN; channels * kk * n];
                    all.positions_range(lo, hi).unfold(&mut got);
                    for (t, row) in got.chunks_exact(n.max(1)).enumerate() {
                        let want = &cols[(c0 * kk + t) * p + lo..][..n];
                        assert!(
                            row.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{g:?} {lo}..{hi} tap {t}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn output_extent_follows_pytorch() {
        assert_eq!(out_extent(16, 3, 1, 1, 1), 16);
        assert_eq!(out_extent(19, 5, 1, 2, 1), 19);
        assert_eq!(out_extent(9, 3, 2, 0, 1), 4);
        assert_eq!(out_extent(9, 3, 1, 0, 2), 5);
        assert_eq!(out_extent(2, 5, 1, 0, 1), 0);
    }
}
