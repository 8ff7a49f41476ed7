//! Adaptive average pooling (`nn.AdaptiveAvgPool2d`): PyTorch's windows, output `i` of an axis
//! of `n` inputs and `m` outputs averaging inputs `floor(i n / m) .. ceil((i + 1) n / m)`.
//! Windows may overlap (non-divisible sizes) and repeat inputs (`m > n`, upsampling); `m = n`
//! is the identity and `m = 1` the global average.

use super::elementwise::stabilize;

/// Geometry of an adaptive average pooling over one `[channels, in_h, in_w]` sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptivePool2dGeom {
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl AdaptivePool2dGeom {
    /// Checks what the kernels rely on: non-empty input and output planes, and the products
    /// `out * in` per axis (bounding the window arithmetic) and the sample sizes fit `usize`.
    pub fn validate(&self) -> Result<(), String> {
        if [self.in_h, self.in_w, self.out_h, self.out_w].contains(&0) {
            return Err(format!("input and output sizes must be positive: {self:?}"));
        }
        let fits = |a: usize, b: usize| a.checked_mul(b).is_some();
        let sizes = [self.channels, self.in_h.max(self.out_h), self.in_w.max(self.out_w)];
        let sample = sizes.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if !fits(self.out_h, self.in_h) || !fits(self.out_w, self.in_w) || sample.is_none() {
            return Err(format!("the window bounds or sample sizes overflow usize: {self:?}"));
        }
        Ok(())
    }

    /// Elements of one input sample (saturating; [`Self::validate`] refuses overflow).
    pub const fn in_len(&self) -> usize {
        self.channels.saturating_mul(self.in_h).saturating_mul(self.in_w)
    }

    /// Elements of one output sample (saturating; [`Self::validate`] refuses overflow).
    pub const fn out_len(&self) -> usize {
        self.channels.saturating_mul(self.out_h).saturating_mul(self.out_w)
    }

    /// Panics unless [`Self::validate`] accepts the geometry (what the kernels check on entry).
    #[track_caller]
    fn assert_valid(&self, kernel: &str) {
        if let Err(message) = self.validate() {
            panic!("{kernel}: invalid geometry: {message}");
        }
    }

    /// Calls `f(out_index, plane_base, rows, cols)` for each window; `1 / (rows.len() cols.len())`
    /// is its weight.
    fn for_each_window(&self, mut f: impl FnMut(usize, usize, Range, Range)) {
        let (h, w) = (self.in_h, self.in_w);
        for c in 0..self.channels {
            for oy in 0..self.out_h {
                let ys = window(oy, h, self.out_h);
                for ox in 0..self.out_w {
                    f((c * self.out_h + oy) * self.out_w + ox, c * h * w, ys.clone(), window(ox, w, self.out_w));
                }
            }
        }
    }
}

type Range = std::ops::Range<usize>;

/// PyTorch's window of output `i` along an axis of `n` inputs and `m` outputs:
/// `floor(i n / m) .. ceil((i + 1) n / m)`, never empty for `n, m > 0`.
#[inline]
fn window(i: usize, n: usize, m: usize) -> Range {
    (i * n / m)..((i + 1) * n).div_ceil(m)
}

/// The input indices of a window, row-major, and its weight `1 / size`.
#[inline]
fn taps(base: usize, w: usize, ys: Range, xs: Range) -> (impl Iterator<Item = usize>, f32) {
    let inv = 1.0 / (ys.len() * xs.len()) as f32;
    (ys.flat_map(move |y| xs.clone().map(move |x| base + y * w + x)), inv)
}

/// `y[w] = sum_{j in w} x[j] / |w|`.
///
/// Panics if the geometry is invalid ([`AdaptivePool2dGeom::validate`]) or a slice is shorter
/// than `g.in_len()` (input) or `g.out_len()` (output); so do the other kernels here.
pub fn adaptive_avgpool_forward(g: &AdaptivePool2dGeom, x: &[f32], y: &mut [f32]) {
    g.assert_valid("adaptive_avgpool_forward");
    let (x, y) = (&x[..g.in_len()], &mut y[..g.out_len()]);
    g.for_each_window(|o, base, ys, xs| {
        let (taps, inv) = taps(base, g.in_w, ys, xs);
        y[o] = taps.map(|j| x[j]).sum::<f32>() * inv;
    });
}

/// Proportional rule: `r_in[j] = x[j] sum_{w ∋ j} r_out[w] / (|w| stab(y[w]))`, with
/// `stab(z) = z + eps sign(z)`; `r_in` is overwritten.
pub fn adaptive_avgpool_relevance(
    g: &AdaptivePool2dGeom,
    x: &[f32],
    y: &[f32],
    r_out: &[f32],
    eps: f32,
    r_in: &mut [f32],
) {
    g.assert_valid("adaptive_avgpool_relevance");
    let (x, y, r_out, r_in) = (&x[..g.in_len()], &y[..g.out_len()], &r_out[..g.out_len()], &mut r_in[..g.in_len()]);
    r_in.fill(0.0);
    g.for_each_window(|o, base, ys, xs| {
        let (taps, inv) = taps(base, g.in_w, ys, xs);
        let s = r_out[o] * inv / stabilize(y[o], eps);
        taps.for_each(|j| r_in[j] += s);
    });
    for (r, &xi) in r_in.iter_mut().zip(x) {
        *r *= xi;
    }
}

/// Gradient (the transposed average): `g_in[j] = sum_{w ∋ j} g_out[w] / |w|`; `g_in` is overwritten.
pub fn adaptive_avgpool_gradient(g: &AdaptivePool2dGeom, g_out: &[f32], g_in: &mut [f32]) {
    g.assert_valid("adaptive_avgpool_gradient");
    let (g_out, g_in) = (&g_out[..g.out_len()], &mut g_in[..g.in_len()]);
    g_in.fill(0.0);
    g.for_each_window(|o, base, ys, xs| {
        let (taps, inv) = taps(base, g.in_w, ys, xs);
        let s = g_out[o] * inv;
        taps.for_each(|j| g_in[j] += s);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's window formula in `f64`: `floor(i n / m) .. ceil((i + 1) n / m)`.
    fn naive_window(i: usize, n: usize, m: usize) -> Range {
        let (i, n, m) = (i as f64, n as f64, m as f64);
        ((i * n / m).floor() as usize)..(((i + 1.0) * n / m).ceil() as usize)
    }

    /// The naive operator as a dense `[out_len, in_len]` matrix of `f64` weights.
    fn naive_matrix(g: &AdaptivePool2dGeom) -> Vec<Vec<f64>> {
        let mut m = vec![vec![0.0; g.in_len()]; g.out_len()];
        for c in 0..g.channels {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let (ys, xs) = (naive_window(oy, g.in_h, g.out_h), naive_window(ox, g.in_w, g.out_w));
                    let size = (ys.len() * xs.len()) as f64;
                    for y in ys {
                        for x in xs.clone() {
                            m[(c * g.out_h + oy) * g.out_w + ox][(c * g.in_h + y) * g.in_w + x] = 1.0 / size;
                        }
                    }
                }
            }
        }
        m
    }

    fn data(n: usize, salt: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + salt * 31) % 101) as f32 / 10.0 - 5.0).collect()
    }

    fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len());
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((*a as f64 - b).abs() <= tol * (1.0 + b.abs()), "{what}[{k}]: {a} vs {b}");
        }
    }

    #[test]
    fn windows_follow_pytorch() {
        // 5 -> 3: [0, 2), [1, 4), [3, 5); 3 -> 5 repeats inputs; 7 -> 7 is the identity.
        assert_eq!((0..3).map(|i| window(i, 5, 3)).collect::<Vec<_>>(), [0..2, 1..4, 3..5]);
        assert_eq!((0..5).map(|i| window(i, 3, 5)).collect::<Vec<_>>(), [0..1, 0..2, 1..2, 1..3, 2..3]);
        assert!((0..7).all(|i| window(i, 7, 7) == (i..i + 1)));
        for (n, m) in [(5, 3), (7, 7), (6, 1), (3, 5), (224, 7), (13, 4), (1, 3)] {
            assert!((0..m).all(|i| window(i, n, m) == naive_window(i, n, m)), "{n} -> {m}");
        }
    }

    #[test]
    fn forward_relevance_and_gradient_match_the_naive_operator() {
        let geoms =
            [(2, 5, 5, 3, 3), (3, 7, 7, 7, 7), (2, 6, 6, 1, 1), (1, 3, 3, 5, 5), (2, 5, 7, 3, 2), (4, 6, 5, 4, 3)];
        for (channels, in_h, in_w, out_h, out_w) in geoms {
            let g = AdaptivePool2dGeom { channels, in_h, in_w, out_h, out_w };
            let m = naive_matrix(&g);
            // Positive inputs (after a ReLU): the denominators stay away from zero.
            let x: Vec<f32> = data(g.in_len(), 1).iter().map(|v| v.abs() + 0.1).collect();
            let r_out = data(g.out_len(), 2);
            let mut y = vec![f32::NAN; g.out_len()];
            adaptive_avgpool_forward(&g, &x, &mut y);
            let want_y: Vec<f64> = m.iter().map(|row| row.iter().zip(&x).map(|(w, &v)| w * v as f64).sum()).collect();
            close(&y, &want_y, 1e-6, "forward");
            if (in_h, in_w) == (out_h, out_w) {
                assert_eq!(y, x, "equal sizes: the identity");
            }
            let mut r_in = vec![f32::NAN; g.in_len()];
            adaptive_avgpool_relevance(&g, &x, &y, &r_out, 1e-6, &mut r_in);
            let mut g_in = vec![f32::NAN; g.in_len()];
            adaptive_avgpool_gradient(&g, &r_out, &mut g_in);
            let (mut want_r, mut want_g) = (vec![0.0f64; g.in_len()], vec![0.0f64; g.in_len()]);
            for (o, row) in m.iter().enumerate() {
                let s = r_out[o] as f64 / (want_y[o] + 1e-6);
                for (j, &w) in row.iter().enumerate() {
                    want_r[j] += x[j] as f64 * w * s;
                    want_g[j] += w * r_out[o] as f64;
                }
            }
            close(&r_in, &want_r, 1e-5, "relevance");
            close(&g_in, &want_g, 1e-6, "gradient");
            // Conservation: all of the output relevance reaches the input (up to the stabiliser).
            let (sum_in, sum_out) =
                (r_in.iter().map(|&v| v as f64).sum::<f64>(), r_out.iter().map(|&v| v as f64).sum::<f64>());
            assert!((sum_in - sum_out).abs() <= 1e-4 * (1.0 + sum_out.abs()), "{sum_in} vs {sum_out}");
            // The gradient is the transpose: <g_in, x> = <r_out, y> for any x.
            let lhs: f64 = g_in.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let rhs: f64 = r_out.iter().zip(&want_y).map(|(&a, b)| a as f64 * b).sum();
            assert!((lhs - rhs).abs() <= 1e-4 * (1.0 + rhs.abs()), "{lhs} vs {rhs}");
        }
    }

    #[test]
    fn global_average_and_nan() {
        let g = AdaptivePool2dGeom { channels: 2, in_h: 2, in_w: 3, out_h: 1, out_w: 1 };
        let mut y = [0.0; 2];
        adaptive_avgpool_forward(&g, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.0], &mut y);
        assert_eq!(y, [3.5, 1.0]);
        let mut x = [1.0; 12];
        x[4] = f32::NAN;
        adaptive_avgpool_forward(&g, &x, &mut y);
        assert!(y[0].is_nan() && y[1] == 1.0, "{y:?}");
    }

    #[test]
    fn invalid_geometries_are_refused() {
        let g = AdaptivePool2dGeom { channels: 1, in_h: 4, in_w: 4, out_h: 0, out_w: 2 };
        assert!(g.validate().unwrap_err().contains("positive"));
        let g = AdaptivePool2dGeom { channels: 1, in_h: usize::MAX / 2, in_w: 1, out_h: 3, out_w: 1 };
        assert!(g.validate().unwrap_err().contains("overflow"));
    }
}
