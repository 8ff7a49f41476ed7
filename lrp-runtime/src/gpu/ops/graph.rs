//! Where branches of a graph meet, and what only moves values (`cuda/graph.cu`): the sum of
//! tensors and its relevance, concatenation and its inverse, per-sample transposes, and tanh /
//! sigmoid with their gradients, computing what [`kernels::merge`](crate::kernels::merge),
//! [`kernels::layout`](crate::kernels::layout) and
//! [`kernels::activations`](crate::kernels::activations) compute, in the same order (the
//! activations are the CPU's polynomials, bit for bit on the emulated device).
//!
//! Buffers hold at least the values a call reads or writes, from offset 0; a shorter one is an
//! [`Error::Length`] naming `what` and the buffer. Outputs are overwritten (gradients: scaled in
//! place).

use std::ops::Range;

use super::{Arg, elementwise, first};
use crate::error::{Error, Result};
use crate::gpu::{Device, DeviceBuffer, table::id};

/// The most summands [`sum`] adds.
pub const MAX_SUMMANDS: usize = 8;

/// `0..len` of `buffer`, or an [`Error::Length`] naming `what` and the buffer.
pub(super) fn span(what: &str, buffer: &DeviceBuffer, len: usize) -> Result<Range<usize>> {
    first(buffer, len).map_err(|_| Error::Length {
        what: format!("{what}: GPU buffer `{}`", buffer.what()),
        expected: len,
        found: buffer.len(),
    })
}

/// `a b`, or an [`Error::SizeOverflow`] naming `what`.
pub(super) fn mul(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::SizeOverflow { what: format!("{what}: {a} x {b} values") })
}

/// An [`Error::Length`] unless `found == expected` (counts of parts).
fn same_count(what: &str, expected: usize, found: usize) -> Result<()> {
    crate::error::check_len(&format!("{what}: number of parts"), expected, found)
}

/// `y = Σ_p xs[p]` over the first `len` values, added in the order of `xs` (1 to
/// [`MAX_SUMMANDS`] summands).
pub fn sum(device: &Device, what: &str, xs: &[&DeviceBuffer], len: usize, y: &mut DeviceBuffer) -> Result<()> {
    let Some(&x0) = xs.first().filter(|_| xs.len() <= MAX_SUMMANDS) else {
        let message = format!("a sum of {} tensors (1 to {MAX_SUMMANDS} on the GPU)", xs.len());
        return Err(Error::InvalidParameter { what: what.to_string(), message });
    };
    let ry = span(what, y, len)?;
    let mut ranges: [Range<usize>; MAX_SUMMANDS] = std::array::from_fn(|_| 0..0);
    for (r, x) in ranges.iter_mut().zip(xs) {
        *r = span(what, x, len)?;
    }
    // Slots past the summands repeat the first (not read).
    let part = |p: usize| match xs.get(p) {
        Some(x) => Arg::In(x, ranges[p].clone()),
        None => Arg::In(x0, ranges[0].clone()),
    };
    let [a0, a1, a2, a3, a4, a5, a6, a7] = std::array::from_fn(part);
    let mut args = [a0, a1, a2, a3, a4, a5, a6, a7, Arg::Out(y, ry), Arg::U32(xs.len() as u32), Arg::U64(len as u64)];
    // SAFETY: `graph_sum(const float* x0, ..., const float* x7, float* y, unsigned parts, u64 n)`
    // touches y[0..n] and x_p[0..n] for p < parts = xs.len(), each range checked to hold n.
    unsafe { elementwise(device, id::GRAPH_SUM, len, &mut args) }
}

/// Relevance at a sum `y = Σ_p x_p` (Zennit's `Norm` rule): `outs[p] = xs[p] (r_out /
/// stab(y))`, `stab(y) = y + eps sign(y)`, over the first `len` values (any number of parts).
#[allow(clippy::too_many_arguments)]
pub fn sum_relevance(
    device: &Device,
    what: &str,
    xs: &[&DeviceBuffer],
    y: &DeviceBuffer,
    r_out: &DeviceBuffer,
    eps: f32,
    len: usize,
    outs: &mut [&mut DeviceBuffer],
) -> Result<()> {
    same_count(what, xs.len(), outs.len())?;
    let (ry, rr) = (span(what, y, len)?, span(what, r_out, len)?);
    for (x, out) in xs.iter().zip(outs.iter()) {
        span(what, x, len)?;
        span(what, out, len)?;
    }
    for (x, out) in xs.iter().zip(outs.iter_mut()) {
        let (rx, ro) = (span(what, x, len)?, span(what, out, len)?);
        let (y, r_out) = (Arg::In(y, ry.clone()), Arg::In(r_out, rr.clone()));
        let mut args = [Arg::In(x, rx), y, r_out, Arg::Out(out, ro), Arg::F32(eps), Arg::U64(len as u64)];
        // SAFETY: `graph_sum_relevance(const float* x, const float* y, const float* r, float*
        // out, float eps, u64 n)` touches the first n values of each, checked above.
        unsafe { elementwise(device, id::GRAPH_SUM_RELEVANCE, len, &mut args)? };
    }
    Ok(())
}

/// The values of a row of a concatenation, `Σ chunks` (checked, not 0), after checking that
/// there is a chunk per part.
fn concat_row(what: &str, chunks: &[usize], parts: usize) -> Result<usize> {
    same_count(what, chunks.len(), parts)?;
    let row = chunks.iter().try_fold(0usize, |a, &c| a.checked_add(c));
    match row {
        Some(0) => Err(Error::InvalidParameter { what: what.to_string(), message: "rows of 0 values".into() }),
        Some(row) => Ok(row),
        None => Err(Error::SizeOverflow { what: format!("{what}: a row of {chunks:?} values") }),
    }
}

/// Concatenation: row `k` of `y` (of `Σ chunks` values) is row `k` of every part in order,
/// `chunks[p]` values of `xs[p]` each, for `rows` rows in all (`n` times the rows of a sample).
pub fn concat(
    device: &Device,
    what: &str,
    xs: &[&DeviceBuffer],
    chunks: &[usize],
    rows: usize,
    y: &mut DeviceBuffer,
) -> Result<()> {
    let row = concat_row(what, chunks, xs.len())?;
    let ry = span(what, y, mul(what, rows, row)?)?;
    for (x, &chunk) in xs.iter().zip(chunks) {
        span(what, x, rows * chunk)?;
    }
    let mut offset = 0;
    for (x, &chunk) in xs.iter().zip(chunks) {
        let part = rows * chunk;
        let sizes = [chunk, row, offset, part].map(|v| Arg::U64(v as u64));
        let [c, r, o, m] = sizes;
        let mut args = [Arg::In(x, span(what, x, part)?), Arg::Out(y, ry.clone()), c, r, o, m];
        // SAFETY: `graph_concat(const float* x, float* y, u64 chunk, u64 row, u64 offset, u64 n)`
        // reads x[0..n], n = rows chunk, and writes y[(i / chunk) row + offset + i % chunk] <
        // rows row, the checked range of y (offset + chunk <= row).
        unsafe { elementwise(device, id::GRAPH_CONCAT, part, &mut args)? };
        offset += chunk;
    }
    Ok(())
}

/// The inverse of [`concat`]: `outs[p]` gets the values (relevance or gradient) of part `p`'s
/// positions in each of the `rows` rows of `r`.
pub fn split(
    device: &Device,
    what: &str,
    r: &DeviceBuffer,
    chunks: &[usize],
    rows: usize,
    outs: &mut [&mut DeviceBuffer],
) -> Result<()> {
    let row = concat_row(what, chunks, outs.len())?;
    let rr = span(what, r, mul(what, rows, row)?)?;
    for (out, &chunk) in outs.iter().zip(chunks) {
        span(what, out, rows * chunk)?;
    }
    let mut offset = 0;
    for (out, &chunk) in outs.iter_mut().zip(chunks) {
        let part = rows * chunk;
        let [c, w, o, m] = [chunk, row, offset, part].map(|v| Arg::U64(v as u64));
        let mut args = [Arg::In(r, rr.clone()), Arg::Out(out, span(what, out, part)?), c, w, o, m];
        // SAFETY: `graph_split(const float* r, float* out, u64 chunk, u64 row, u64 offset, u64 n)`
        // writes out[0..n], n = rows chunk, and reads r below rows row, its checked range.
        unsafe { elementwise(device, id::GRAPH_SPLIT, part, &mut args)? };
        offset += chunk;
    }
    Ok(())
}

/// `y[s][c][r] = x[s][r][c]` for `n` samples of `[rows, cols]` (the relevance and the gradient
/// go back with `rows` and `cols` swapped).
pub fn transpose(
    device: &Device,
    what: &str,
    rows: usize,
    cols: usize,
    n: usize,
    x: &DeviceBuffer,
    y: &mut DeviceBuffer,
) -> Result<()> {
    let sample = mul(what, rows, cols)?;
    if sample == 0 {
        let message = format!("samples of [{rows}, {cols}] hold no values");
        return Err(Error::InvalidParameter { what: what.to_string(), message });
    }
    let len = mul(what, n, sample)?;
    let (rx, ry) = (span(what, x, len)?, span(what, y, len)?);
    let [r, c, m] = [rows, cols, len].map(|v| Arg::U64(v as u64));
    let mut args = [Arg::In(x, rx), Arg::Out(y, ry), r, c, m];
    // SAFETY: `graph_transpose(const float* x, float* y, u64 rows, u64 cols, u64 n)` writes
    // y[0..n] and reads x at (i / sample) sample + a permutation of 0..sample: below n.
    unsafe { elementwise(device, id::GRAPH_TRANSPOSE, len, &mut args) }
}

/// Runs a one-input, one-output element-wise kernel over the first `len` values.
fn map(device: &Device, kernel: u32, x: &DeviceBuffer, y: &mut DeviceBuffer, len: usize) -> Result<()> {
    let (rx, ry) = (first(x, len)?, first(y, len)?);
    // SAFETY: the kernels of `map` (`activation_tanh`, `activation_sigmoid`: `(const float* x,
    // float* y, u64 n)`; the gradients: `(const float* y, float* g, u64 n)`) touch the first n
    // values of each.
    unsafe { elementwise(device, kernel, len, &mut [Arg::In(x, rx), Arg::Out(y, ry), Arg::U64(len as u64)]) }
}

/// `y = tanh(x)` (`nn.Tanh`; NaN stays NaN).
pub fn tanh(device: &Device, x: &DeviceBuffer, y: &mut DeviceBuffer, len: usize) -> Result<()> {
    map(device, id::ACTIVATION_TANH, x, y, len)
}

/// `y = 1 / (1 + e^-x)` (`nn.Sigmoid`; NaN stays NaN).
pub fn sigmoid(device: &Device, x: &DeviceBuffer, y: &mut DeviceBuffer, len: usize) -> Result<()> {
    map(device, id::ACTIVATION_SIGMOID, x, y, len)
}

/// The gradient through a tanh whose output was `y`: `g = g (1 - y²)`, in place.
pub fn tanh_gradient(device: &Device, y: &DeviceBuffer, g: &mut DeviceBuffer, len: usize) -> Result<()> {
    map(device, id::ACTIVATION_TANH_GRADIENT, y, g, len)
}

/// The gradient through a sigmoid whose output was `y`: `g = g y (1 - y)`, in place.
pub fn sigmoid_gradient(device: &Device, y: &DeviceBuffer, g: &mut DeviceBuffer, len: usize) -> Result<()> {
    map(device, id::ACTIVATION_SIGMOID_GRADIENT, y, g, len)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gpu::Grid;
    use crate::kernels::{activations, layout, merge};

    /// Values with both signs and zeros among them.
    pub(crate) fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + salt * 11) % 29) as f32 / 4.0 - 3.5).collect()
    }

    /// The largest difference relative to the largest reference magnitude (NaNs must agree).
    pub(crate) fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len(), "length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.is_nan(), w.is_nan(), "[{i}]: {g} vs {w}");
        }
        let finite = |v: &&f32| v.is_finite();
        let scale = want.iter().filter(finite).fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        let diff = |(g, w): (&f32, &f32)| if g == w || g.is_nan() { 0.0 } else { (g - w).abs() };
        got.iter().zip(want).map(diff).fold(0.0f32, f32::max) / scale
    }

    /// Asserts `buffer` holds `want` (within 1e-5 of its largest magnitude), then `extra` NaNs.
    pub(crate) fn assert_holds(dev: &Device, what: &str, buffer: &DeviceBuffer, want: &[f32], extra: usize) {
        let got = dev.download(buffer).unwrap();
        let e = relative_error(&got[..want.len()], want);
        assert!(e <= 1e-5, "{what}: relative error {e}");
        assert!(got[want.len()..].len() == extra && got[want.len()..].iter().all(|v| v.is_nan()), "{what} writes past");
    }

    /// A buffer of `len` NaNs and `extra` more (outputs must overwrite them and stop at `len`).
    pub(crate) fn garbage(dev: &Device, len: usize, extra: usize) -> DeviceBuffer {
        dev.upload("out", &vec![f32::NAN; len + extra]).unwrap()
    }

    fn check_sum(dev: &Device, parts: usize, len: usize) {
        let xs: Vec<Vec<f32>> = (0..parts).map(|p| values(len, p)).collect();
        let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let mut want = vec![0.0; len];
        merge::sum("s", &refs, &mut want).unwrap();
        let bufs: Vec<DeviceBuffer> = xs.iter().map(|x| dev.upload("x", x).unwrap()).collect();
        let brefs: Vec<&DeviceBuffer> = bufs.iter().collect();
        let mut y = garbage(dev, len, 2);
        sum(dev, "s", &brefs, len, &mut y).unwrap();
        assert_holds(dev, &format!("sum of {parts}"), &y, &want, 2);
        // Relevance: each summand's share.
        let r_out = values(len, 9);
        let mut want_r: Vec<Vec<f32>> = vec![vec![0.0; len]; parts];
        let mut outs: Vec<&mut [f32]> = want_r.iter_mut().map(|r| r.as_mut_slice()).collect();
        merge::sum_relevance("s", &refs, &want, &r_out, 1e-6, &mut outs).unwrap();
        let (yb, rb) = (dev.upload("y", &want).unwrap(), dev.upload("r", &r_out).unwrap());
        let mut got: Vec<DeviceBuffer> = (0..parts).map(|_| garbage(dev, len, 1)).collect();
        let mut grefs: Vec<&mut DeviceBuffer> = got.iter_mut().collect();
        sum_relevance(dev, "s", &brefs, &yb, &rb, 1e-6, len, &mut grefs).unwrap();
        for (p, (g, w)) in got.iter().zip(&want_r).enumerate() {
            assert_holds(dev, &format!("sum_relevance {p} of {parts}"), g, w, 1);
        }
    }

    fn check_concat(dev: &Device, chunks: &[usize], rows: usize) {
        let xs: Vec<Vec<f32>> = chunks.iter().enumerate().map(|(p, c)| values(rows * c, p)).collect();
        let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let row: usize = chunks.iter().sum();
        let mut want = vec![0.0; rows * row];
        merge::concat("c", &refs, chunks, &mut want).unwrap();
        let bufs: Vec<DeviceBuffer> = xs.iter().map(|x| dev.upload("x", x).unwrap()).collect();
        let brefs: Vec<&DeviceBuffer> = bufs.iter().collect();
        let mut y = garbage(dev, want.len(), 3);
        concat(dev, "c", &brefs, chunks, rows, &mut y).unwrap();
        assert_holds(dev, &format!("concat {chunks:?} x {rows}"), &y, &want, 3);
        assert_eq!(dev.download(&y).unwrap()[..want.len()], want, "concat only copies");
        let r = values(want.len(), 7);
        let mut want_r: Vec<Vec<f32>> = chunks.iter().map(|c| vec![0.0; rows * c]).collect();
        let mut outs: Vec<&mut [f32]> = want_r.iter_mut().map(|r| r.as_mut_slice()).collect();
        merge::split("c", &r, chunks, &mut outs).unwrap();
        let rb = dev.upload("r", &r).unwrap();
        let mut got: Vec<DeviceBuffer> = chunks.iter().map(|c| garbage(dev, rows * c, 1)).collect();
        let mut grefs: Vec<&mut DeviceBuffer> = got.iter_mut().collect();
        split(dev, "c", &rb, chunks, rows, &mut grefs).unwrap();
        for (g, w) in got.iter().zip(&want_r) {
            assert_holds(dev, &format!("split {chunks:?} x {rows}"), g, w, 1);
        }
    }

    fn check_transpose(dev: &Device, rows: usize, cols: usize, n: usize) {
        let x = values(n * rows * cols, 3);
        let mut want = vec![0.0; x.len()];
        layout::transpose("t", rows, cols, &x, &mut want).unwrap();
        let xb = dev.upload("x", &x).unwrap();
        let mut y = garbage(dev, x.len(), 2);
        transpose(dev, "t", rows, cols, n, &xb, &mut y).unwrap();
        assert_holds(dev, &format!("transpose [{rows}, {cols}] x {n}"), &y, &want, 2);
        assert_eq!(dev.download(&y).unwrap()[..want.len()], want, "transpose only copies");
    }

    /// Inputs for the activations: a fine sweep of -45..45, the polynomial's switch at 0.625,
    /// the clamps of exp, infinities, NaN and subnormals.
    fn activation_inputs() -> Vec<f32> {
        let special = [0.625, -0.625, 0.624_999_9, 87.4, -87.4, 88.5, -88.5, 1e-40, -1e-40, -0.0, 0.0];
        let inf = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN];
        (-45_000..=45_000).map(|i| i as f32 * 1e-3).chain(special).chain(inf).collect()
    }

    /// tanh, sigmoid and their gradients against `kernels::activations`. Tolerance: the kernels
    /// evaluate the CPU's Cephes polynomials with unfused products, so the emulated device must
    /// agree bit for bit; a GPU (IEEE division and floor too) within 1e-6 of each value.
    pub(crate) fn check_activations(dev: &Device, x: &[f32]) {
        let len = x.len();
        let (mut t, mut s) = (vec![0.0; len], vec![0.0; len]);
        activations::tanh(x, &mut t);
        activations::sigmoid(x, &mut s);
        let g0 = values(len, 5);
        let (mut gt, mut gs) = (g0.clone(), g0.clone());
        activations::tanh_gradient_inplace(&t, &mut gt);
        activations::sigmoid_gradient_inplace(&s, &mut gs);
        let xb = dev.upload("x", x).unwrap();
        let (mut tb, mut sb) = (garbage(dev, len, 1), garbage(dev, len, 1));
        tanh(dev, &xb, &mut tb, len).unwrap();
        sigmoid(dev, &xb, &mut sb, len).unwrap();
        let mut gtb = dev.upload("g", &[&g0[..], &[f32::NAN]].concat()).unwrap();
        let mut gsb = dev.upload("g", &[&g0[..], &[f32::NAN]].concat()).unwrap();
        tanh_gradient(dev, &tb, &mut gtb, len).unwrap();
        sigmoid_gradient(dev, &sb, &mut gsb, len).unwrap();
        for (what, b, want) in [("tanh", &tb, &t), ("sigmoid", &sb, &s), ("tanh'", &gtb, &gt), ("sigmoid'", &gsb, &gs)]
        {
            let got = dev.download(b).unwrap();
            assert!(got[len].is_nan(), "{what} writes past len");
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                let tolerance = if dev.is_emulated() { 0.0 } else { 1e-6 * w.abs() };
                let close = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits() || (g - w).abs() <= tolerance;
                assert!(close, "{what}({}) = {g}, CPU {w}", x[i]);
            }
        }
    }

    /// Every kernel of `graph.cu` once against the CPU (for `gpu::tests`).
    pub(crate) fn check_kernels(dev: &Device) {
        check_sum(dev, 3, 1000);
        check_concat(dev, &[2, 3], 6);
        check_transpose(dev, 3, 5, 2);
        check_activations(dev, &activation_inputs()[44_000..46_100]);
    }

    /// Sizes around the block and grid limits.
    const LENS: [usize; 4] = [1, 255, 1000, (Grid::MAX_BLOCKS as usize) * (Grid::BLOCK as usize) + 77];

    #[test]
    fn sums_and_their_relevance_match_the_cpu() {
        let dev = Device::from_env().unwrap();
        for parts in 1..=MAX_SUMMANDS {
            check_sum(&dev, parts, 257);
        }
        for len in LENS {
            check_sum(&dev, 2, len);
        }
    }

    #[test]
    fn concat_split_and_transpose_match_the_cpu() {
        let dev = Device::from_env().unwrap();
        // Channels of samples [C_p, H W] (rows = n), rows of [A, B_p C] (rows = n A), empty
        // parts, and no rows at all.
        for (chunks, rows) in
            [(&[16, 48][..], 3), (&[1, 2][..], 4), (&[3, 0, 5, 1][..], 7), (&[4][..], 2), (&[2, 2][..], 0)]
        {
            check_concat(&dev, chunks, rows);
        }
        for (rows, cols, n) in [(1, 1, 1), (2, 3, 2), (7, 5, 3), (64, 33, 4), (1, 9, 2), (9, 1, 5)] {
            check_transpose(&dev, rows, cols, n);
        }
    }

    #[test]
    fn activations_match_the_cpu() {
        let dev = Device::from_env().unwrap();
        check_activations(&dev, &activation_inputs());
    }

    #[test]
    fn misuse_is_an_error() {
        let dev = Device::from_env().unwrap();
        let x = dev.upload("x", &[1.0; 8]).unwrap();
        let mut y = dev.zeros("y", 4).unwrap();
        let nine = [&x; 9];
        for xs in [&nine[..], &[]] {
            let e = sum(&dev, "node", xs, 4, &mut y).unwrap_err();
            assert!(matches!(&e, Error::InvalidParameter { what, .. } if what == "node"), "{e}");
        }
        let e = sum(&dev, "node", &[&x, &x], 8, &mut y).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("node") && what.contains("`y`")), "{e}");
        let e = sum_relevance(&dev, "node", &[&x, &x], &x, &x, 1e-6, 4, &mut [&mut y]).unwrap_err();
        assert!(matches!(&e, Error::Length { expected: 2, found: 1, .. }), "{e}");
        let e = concat(&dev, "cat", &[&x], &[1, 1], 2, &mut y).unwrap_err();
        assert!(matches!(e, Error::Length { .. }), "{e}");
        assert!(concat(&dev, "cat", &[&x], &[0], 2, &mut y).is_err());
        assert!(matches!(concat(&dev, "cat", &[&x, &x], &[1, usize::MAX], 1, &mut y), Err(Error::SizeOverflow { .. })));
        assert!(matches!(concat(&dev, "cat", &[&x], &[2], usize::MAX, &mut y), Err(Error::SizeOverflow { .. })));
        assert!(concat(&dev, "cat", &[&x, &x], &[1, 2], 2, &mut y).is_err(), "y holds 4 < 6");
        assert!(split(&dev, "cat", &x, &[2, 3], 2, &mut [&mut y, &mut dev.zeros("z", 6).unwrap()]).is_err());
        assert!(transpose(&dev, "t", 0, 3, 1, &x, &mut y).is_err());
        assert!(transpose(&dev, "t", 2, 3, 1, &x, &mut y).is_err());
        assert!(matches!(transpose(&dev, "t", usize::MAX, 2, 1, &x, &mut y), Err(Error::SizeOverflow { .. })));
        assert!(tanh(&dev, &x, &mut y, 5).is_err() && sigmoid_gradient(&dev, &x, &mut y, 5).is_err());
    }
}
