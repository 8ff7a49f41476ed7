//! Pooling kernels: max-pooling (winner-take-all relevance) and average pooling
//! (proportional relevance), forward, relevance and gradient.
//!
//! Each function runs `n` samples laid out back to back (`[n, channels, h, w]`), checks the
//! geometry as the CPU layers do ([`Pool2dGeom::validate_max`], [`Pool2dGeom::validate`],
//! [`AdaptivePool2dGeom::validate`]) and the buffers' lengths, and overwrites its output.

use super::{Arg, elementwise, first};
use crate::error::{Error, Result};
use crate::gpu::{Device, DeviceBuffer, table::id};
use crate::kernels::{AdaptivePool2dGeom, Pool2dGeom};

/// A geometry the kernels accept: its sizes as the kernels' `unsigned` parameters, and the
/// values of `n` samples of input and output.
struct Checked<const K: usize> {
    sizes: [u32; K],
    input: usize,
    output: usize,
}

impl<const K: usize> Checked<K> {
    /// `valid` (the CPU layer's check) accepts it, `sizes` fit `u32`, and `n` samples of
    /// `in_len` and `out_len` values fit `usize`; errors name `layer`'s geometry.
    fn new(
        layer: &str,
        valid: std::result::Result<(), String>,
        sizes: [usize; K],
        lens: [usize; 2],
        n: usize,
    ) -> Result<Self> {
        let invalid = |message: String| Error::InvalidParameter { what: format!("GPU {layer} geometry"), message };
        valid.map_err(invalid)?;
        let mut narrow = [0u32; K];
        for (u, &s) in narrow.iter_mut().zip(&sizes) {
            *u = u32::try_from(s).map_err(|_| invalid(format!("sizes {sizes:?} must fit u32")))?;
        }
        let total = |len: usize| {
            n.checked_mul(len).ok_or_else(|| Error::SizeOverflow { what: format!("GPU {layer}: {n} samples") })
        };
        Ok(Checked { sizes: narrow, input: total(lens[0])?, output: total(lens[1])? })
    }

    /// The sizes as kernel arguments.
    fn args<'a>(&self) -> [Arg<'a>; K] {
        self.sizes.map(Arg::U32)
    }
}

/// A pooling geometry checked for max-pooling (`max`) or average pooling: the kernels'
/// `in_h, in_w, kh, kw, sh, sw, ph, pw, out_h, out_w`.
fn pool(g: &Pool2dGeom, max: bool, n: usize) -> Result<Checked<10>> {
    let (layer, valid) = if max { ("MaxPool2d", g.validate_max()) } else { ("AvgPool2d", g.validate()) };
    let ([kh, kw], [sh, sw], [ph, pw]) = (g.kernel, g.stride, g.padding);
    let sizes = [g.in_h, g.in_w, kh, kw, sh, sw, ph, pw, g.out_h(), g.out_w()];
    Checked::new(layer, valid, sizes, [g.in_len(), g.out_len()], n)
}

/// An adaptive geometry, checked: the kernels' `in_h, in_w, out_h, out_w`.
fn adaptive(g: &AdaptivePool2dGeom, n: usize) -> Result<Checked<4>> {
    let sizes = [g.in_h, g.in_w, g.out_h, g.out_w];
    Checked::new("AdaptiveAvgPool2d", g.validate(), sizes, [g.in_len(), g.out_len()], n)
}

/// `y[w] = max_{j in w} x[j]` over each window clipped to the input (padding left out).
pub fn maxpool_forward(
    device: &Device,
    g: &Pool2dGeom,
    n: usize,
    x: &DeviceBuffer,
    y: &mut DeviceBuffer,
) -> Result<()> {
    let c = pool(g, true, n)?;
    let (rx, ry) = (first(x, c.input)?, first(y, c.output)?);
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] = c.args();
    let mut args = [Arg::In(x, rx), Arg::Out(y, ry), a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, Arg::U64(c.output as u64)];
    // SAFETY: `maxpool_forward(const float* x, float* y, <geometry>, u64 n)` writes y[i] for
    // i < n = n samples' outputs and reads x in plane i / (out_h out_w) at row < in_h, column
    // < in_w: below n samples' inputs.
    unsafe { elementwise(device, id::MAXPOOL_FORWARD, c.output, &mut args) }
}

/// Winner-take-all routing (max-pooling's relevance, and its gradient for `r_out = g_out`):
/// `r_in[j] = sum_{w ∋ j, winner(w) = j} r_out[w]`, the winner of a window its first maximum
/// in row-major order (the last NaN if any), recomputed from `x`.
pub fn maxpool_backward(
    device: &Device,
    g: &Pool2dGeom,
    n: usize,
    x: &DeviceBuffer,
    r_out: &DeviceBuffer,
    r_in: &mut DeviceBuffer,
) -> Result<()> {
    let c = pool(g, true, n)?;
    let (rx, rr, ri) = (first(x, c.input)?, first(r_out, c.output)?, first(r_in, c.input)?);
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] = c.args();
    let (n_in, x, r_out) = (Arg::U64(c.input as u64), Arg::In(x, rx), Arg::In(r_out, rr));
    let mut args = [x, r_out, Arg::Out(r_in, ri), a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, n_in];
    // SAFETY: `maxpool_backward(const float* x, const float* r_out, float* r_in, <geometry>,
    // u64 n)` writes r_in[i] for i < n = n samples' inputs, reads x in i's plane (p = i / (in_h
    // in_w)) and r_out at p out_h out_w + oy out_w + ox, oy < out_h, ox < out_w: inside both.
    unsafe { elementwise(device, id::MAXPOOL_BACKWARD, c.input, &mut args) }
}

/// `y[w] = sum_{j in w} x[j] / (kh kw)` (padding counted in the divisor).
pub fn avgpool_forward(
    device: &Device,
    g: &Pool2dGeom,
    n: usize,
    x: &DeviceBuffer,
    y: &mut DeviceBuffer,
) -> Result<()> {
    let c = pool(g, false, n)?;
    let (rx, ry) = (first(x, c.input)?, first(y, c.output)?);
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] = c.args();
    let mut args = [Arg::In(x, rx), Arg::Out(y, ry), a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, Arg::U64(c.output as u64)];
    // SAFETY: `avgpool_forward(const float* x, float* y, <geometry>, u64 n)` touches what
    // `maxpool_forward` does.
    unsafe { elementwise(device, id::AVGPOOL_FORWARD, c.output, &mut args) }
}

/// The proportional rule: `r_in[j] = x[j] sum_{w ∋ j} r_out[w] / (kh kw stab(y[w]))`,
/// `stab(z) = z + eps sign(z)`.
pub fn avgpool_relevance(
    device: &Device,
    g: &Pool2dGeom,
    n: usize,
    (x, y): (&DeviceBuffer, &DeviceBuffer),
    r_out: &DeviceBuffer,
    eps: f32,
    r_in: &mut DeviceBuffer,
) -> Result<()> {
    let c = pool(g, false, n)?;
    let (rx, ry) = (first(x, c.input)?, first(y, c.output)?);
    let (rr, ri) = (first(r_out, c.output)?, first(r_in, c.input)?);
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] = c.args();
    let (x, y, r_out, r_in) = (Arg::In(x, rx), Arg::In(y, ry), Arg::In(r_out, rr), Arg::Out(r_in, ri));
    let mut args = [x, y, r_out, r_in, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, Arg::F32(eps), Arg::U64(c.input as u64)];
    // SAFETY: `avgpool_relevance(const float* x, const float* y, const float* r_out, float*
    // r_in, <geometry>, float eps, u64 n)` touches x[i], r_in[i] for i < n = n samples' inputs,
    // and y, r_out at outputs of i's plane: below n samples' outputs.
    unsafe { elementwise(device, id::AVGPOOL_RELEVANCE, c.input, &mut args) }
}

/// The gradient: `g_in[j] = sum_{w ∋ j} g_out[w] / (kh kw)`.
pub fn avgpool_gradient(
    device: &Device,
    g: &Pool2dGeom,
    n: usize,
    g_out: &DeviceBuffer,
    g_in: &mut DeviceBuffer,
) -> Result<()> {
    let c = pool(g, false, n)?;
    let (ro, ri) = (first(g_out, c.output)?, first(g_in, c.input)?);
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] = c.args();
    let mut args =
        [Arg::In(g_out, ro), Arg::Out(g_in, ri), a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, Arg::U64(c.input as u64)];
    // SAFETY: `avgpool_gradient(const float* g_out, float* g_in, <geometry>, u64 n)` writes
    // g_in[i] for i < n = n samples' inputs and reads g_out at outputs of i's plane.
    unsafe { elementwise(device, id::AVGPOOL_GRADIENT, c.input, &mut args) }
}

/// `y[w] = sum_{j in w} x[j] / |w|` over PyTorch's adaptive windows
/// `floor(i H / out) .. ceil((i + 1) H / out)` per axis.
pub fn adaptive_avgpool_forward(
    device: &Device,
    g: &AdaptivePool2dGeom,
    n: usize,
    x: &DeviceBuffer,
    y: &mut DeviceBuffer,
) -> Result<()> {
    let c = adaptive(g, n)?;
    let (rx, ry) = (first(x, c.input)?, first(y, c.output)?);
    let [a0, a1, a2, a3] = c.args();
    let mut args = [Arg::In(x, rx), Arg::Out(y, ry), a0, a1, a2, a3, Arg::U64(c.output as u64)];
    // SAFETY: `adaptive_avgpool_forward(const float* x, float* y, unsigned in_h, unsigned in_w,
    // unsigned out_h, unsigned out_w, u64 n)` writes y[i] for i < n = n samples' outputs and
    // reads x in plane i / (out_h out_w) at row < in_h, column < in_w.
    unsafe { elementwise(device, id::ADAPTIVE_AVGPOOL_FORWARD, c.output, &mut args) }
}

/// The proportional rule: `r_in[j] = x[j] sum_{w ∋ j} r_out[w] / (|w| stab(y[w]))`.
pub fn adaptive_avgpool_relevance(
    device: &Device,
    g: &AdaptivePool2dGeom,
    n: usize,
    (x, y): (&DeviceBuffer, &DeviceBuffer),
    r_out: &DeviceBuffer,
    eps: f32,
    r_in: &mut DeviceBuffer,
) -> Result<()> {
    let c = adaptive(g, n)?;
    let (rx, ry) = (first(x, c.input)?, first(y, c.output)?);
    let (rr, ri) = (first(r_out, c.output)?, first(r_in, c.input)?);
    let [a0, a1, a2, a3] = c.args();
    let (x, y, r_out, r_in) = (Arg::In(x, rx), Arg::In(y, ry), Arg::In(r_out, rr), Arg::Out(r_in, ri));
    let mut args = [x, y, r_out, r_in, a0, a1, a2, a3, Arg::F32(eps), Arg::U64(c.input as u64)];
    // SAFETY: `adaptive_avgpool_relevance(const float* x, const float* y, const float* r_out,
    // float* r_in, <sizes>, float eps, u64 n)` touches x[i], r_in[i] for i < n = n samples'
    // inputs, and y, r_out at outputs of i's plane.
    unsafe { elementwise(device, id::ADAPTIVE_AVGPOOL_RELEVANCE, c.input, &mut args) }
}

/// The gradient: `g_in[j] = sum_{w ∋ j} g_out[w] / |w|`.
pub fn adaptive_avgpool_gradient(
    device: &Device,
    g: &AdaptivePool2dGeom,
    n: usize,
    g_out: &DeviceBuffer,
    g_in: &mut DeviceBuffer,
) -> Result<()> {
    let c = adaptive(g, n)?;
    let (ro, ri) = (first(g_out, c.output)?, first(g_in, c.input)?);
    let [a0, a1, a2, a3] = c.args();
    let mut args = [Arg::In(g_out, ro), Arg::Out(g_in, ri), a0, a1, a2, a3, Arg::U64(c.input as u64)];
    // SAFETY: `adaptive_avgpool_gradient(const float* g_out, float* g_in, <sizes>, u64 n)`
    // writes g_in[i] for i < n = n samples' inputs and reads g_out at outputs of i's plane.
    unsafe { elementwise(device, id::ADAPTIVE_AVGPOOL_GRADIENT, c.input, &mut args) }
}
