//! One safe function per custom kernel: each checks its buffers' lengths (checked arithmetic)
//! before the launch, so that the kernel stays inside them for any arguments. Element counts
//! `n` are the first `n` values of each buffer. Element-wise kernels and the rules' parts are
//! here; convolutions in [`conv`], pooling in [`pool`].

use super::buffer::DeviceBuffer;
use super::device::Device;
pub(crate) use super::launch::{Arg, Grid, launch};
use super::table::id;
use crate::error::{Error, Result};
use crate::rules::{InputMod, Mask};

pub mod checks;
pub mod conv;
pub mod graph;
pub mod occlusion;
pub mod pool;
pub mod recurrent;
pub mod sets;

/// `0..n` of `buffer`, checked.
pub(crate) fn first(buffer: &DeviceBuffer, n: usize) -> Result<std::ops::Range<usize>> {
    buffer.range(0, n)
}

/// Runs an element-wise kernel over `n` elements.
///
/// # Safety
/// As [`launch`]: the kernel touches only the first `n` values of each buffer in `args`, whose
/// ranges are `0..n` (or, for a repeated operand, its whole checked range).
pub(crate) unsafe fn elementwise(device: &Device, kernel: u32, n: usize, args: &mut [Arg<'_>]) -> Result<()> {
    // SAFETY: passed on.
    unsafe { launch(device, kernel, Grid::for_elements(n as u64), args) }
}

/// `y = max(0, x)`.
pub fn relu(device: &Device, x: &DeviceBuffer, y: &mut DeviceBuffer, n: usize) -> Result<()> {
    let (rx, ry) = (first(x, n)?, first(y, n)?);
    // SAFETY: `relu(const float* x, float* y, u64 n)` touches x[0..n] and y[0..n].
    unsafe { elementwise(device, id::RELU, n, &mut [Arg::In(x, rx), Arg::Out(y, ry), Arg::U64(n as u64)]) }
}

/// `g = g [z > 0]`: the gradient through a ReLU whose input was `z`.
pub fn relu_gradient(device: &Device, g: &mut DeviceBuffer, z: &DeviceBuffer, n: usize) -> Result<()> {
    let (rg, rz) = (first(g, n)?, first(z, n)?);
    // SAFETY: `relu_gradient(float* g, const float* z, u64 n)` touches g[0..n] and z[0..n].
    unsafe { elementwise(device, id::RELU_GRADIENT, n, &mut [Arg::Out(g, rg), Arg::In(z, rz), Arg::U64(n as u64)]) }
}

/// Checks that `n` values are whole rows of `[channels, inner]` and that `b` has `channels`.
fn bias_layout(b: &DeviceBuffer, channels: usize, inner: usize, n: usize) -> Result<std::ops::Range<usize>> {
    let per_row = channels.checked_mul(inner).ok_or_else(|| Error::SizeOverflow { what: "GPU bias layout".into() })?;
    if per_row == 0 || !n.is_multiple_of(per_row) {
        return Err(Error::InvalidParameter {
            what: format!("GPU bias `{}`", b.what()),
            message: format!("{n} values are not rows of {channels} channels x {inner}"),
        });
    }
    first(b, channels)
}

/// `z[r, c, k] += alpha b[c]` over `n` values laid out `[rows, channels, inner]`.
pub fn add_bias(
    device: &Device,
    z: &mut DeviceBuffer,
    b: &DeviceBuffer,
    alpha: f32,
    (channels, inner): (usize, usize),
    n: usize,
) -> Result<()> {
    let (rb, rz) = (bias_layout(b, channels, inner, n)?, first(z, n)?);
    let sizes = [channels, inner, n].map(|v| Arg::U64(v as u64));
    let [c, k, m] = sizes;
    let mut args = [Arg::Out(z, rz), Arg::In(b, rb), Arg::F32(alpha), c, k, m];
    // SAFETY: `add_bias(float* z, const float* b, float alpha, u64 channels, u64 inner, u64 n)`
    // touches z[0..n] and b[(i / inner) % channels], below `channels`.
    unsafe { elementwise(device, id::ADD_BIAS, n, &mut args) }
}

/// `z[r, c, k] += b[c]`, then `a = max(0, z)`, in one pass.
pub fn add_bias_relu(
    device: &Device,
    z: &mut DeviceBuffer,
    a: &mut DeviceBuffer,
    b: &DeviceBuffer,
    (channels, inner): (usize, usize),
    n: usize,
) -> Result<()> {
    let (rb, rz, ra) = (bias_layout(b, channels, inner, n)?, first(z, n)?, first(a, n)?);
    let [c, k, m] = [channels, inner, n].map(|v| Arg::U64(v as u64));
    let mut args = [Arg::Out(z, rz), Arg::Out(a, ra), Arg::In(b, rb), c, k, m];
    // SAFETY: `add_bias_relu(float* z, float* a, const float* b, u64 channels, u64 inner, u64 n)`
    // touches z[0..n], a[0..n] and b[0..channels].
    unsafe { elementwise(device, id::ADD_BIAS_RELU, n, &mut args) }
}

/// `y = x c`, element by element.
pub fn multiply(device: &Device, x: &DeviceBuffer, c: &DeviceBuffer, y: &mut DeviceBuffer, n: usize) -> Result<()> {
    let (rx, rc, ry) = (first(x, n)?, first(c, n)?, first(y, n)?);
    let mut args = [Arg::In(x, rx), Arg::In(c, rc), Arg::Out(y, ry), Arg::U64(n as u64)];
    // SAFETY: `multiply(const float* x, const float* c, float* y, u64 n)` touches the first n
    // values of each.
    unsafe { elementwise(device, id::MULTIPLY, n, &mut args) }
}

/// The kernels' number for an input modifier of a variable input (constant inputs are read
/// as they are: 0).
fn input_mode(input: InputMod) -> u32 {
    match input {
        InputMod::Positive => 1,
        InputMod::Negative => 2,
        _ => 0,
    }
}

/// `y = in(x)`: `x`, `max(0, x)` or `min(0, x)`.
pub fn input_mod(device: &Device, x: &DeviceBuffer, y: &mut DeviceBuffer, input: InputMod, n: usize) -> Result<()> {
    let (rx, ry) = (first(x, n)?, first(y, n)?);
    let mut args = [Arg::In(x, rx), Arg::Out(y, ry), Arg::U32(input_mode(input)), Arg::U64(n as u64)];
    // SAFETY: `input_mod(const float* x, float* y, unsigned mode, u64 n)` touches x[0..n] and
    // y[0..n].
    unsafe { elementwise(device, id::INPUT_MOD, n, &mut args) }
}

/// `d = a z + b p`.
#[allow(clippy::too_many_arguments)]
pub fn combine(
    device: &Device,
    d: &mut DeviceBuffer,
    z: &DeviceBuffer,
    p: &DeviceBuffer,
    a: f32,
    b: f32,
    n: usize,
) -> Result<()> {
    let (rd, rz, rp) = (first(d, n)?, first(z, n)?, first(p, n)?);
    let mut args = [Arg::Out(d, rd), Arg::In(z, rz), Arg::In(p, rp), Arg::F32(a), Arg::F32(b), Arg::U64(n as u64)];
    // SAFETY: `combine(float* d, const float* z, const float* p, float a, float b, u64 n)`
    // touches the first n values of each.
    unsafe { elementwise(device, id::COMBINE, n, &mut args) }
}

/// `dst[dst_at..dst_at + len] = src[src_at..src_at + len]` (a copy on the device).
pub fn copy(
    device: &Device,
    (src, src_at): (&DeviceBuffer, usize),
    (dst, dst_at): (&mut DeviceBuffer, usize),
    len: usize,
) -> Result<()> {
    let (rs, rd) = (src.range(src_at, len)?, dst.range(dst_at, len)?);
    let mut args = [
        Arg::Out(dst, rd),
        Arg::In(src, rs.clone()),
        Arg::In(src, rs),
        Arg::F32(1.0),
        Arg::F32(0.0),
        Arg::U64(len as u64),
    ];
    // SAFETY: `combine(float* d, const float* z, const float* p, float a, float b, u64 n)`
    // touches the first n values of each range given, all checked.
    unsafe { elementwise(device, id::COMBINE, len, &mut args) }
}

/// `d = r / stab(d)` where `mask` keeps `z`, else 0.
pub fn masked_ratio(
    device: &Device,
    d: &mut DeviceBuffer,
    z: &DeviceBuffer,
    r: &DeviceBuffer,
    (mask, eps): (Mask, f32),
    n: usize,
) -> Result<()> {
    let (rd, rz, rr) = (first(d, n)?, first(z, n)?, first(r, n)?);
    let mask = match mask {
        Mask::All => 0,
        Mask::Positive => 1,
        Mask::Negative => 2,
    };
    let mut args = [Arg::Out(d, rd), Arg::In(z, rz), Arg::In(r, rr), Arg::U32(mask), Arg::F32(eps), Arg::U64(n as u64)];
    // SAFETY: `masked_ratio(float* d, const float* z, const float* r, unsigned mask, float eps,
    // u64 n)` touches the first n values of each.
    unsafe { elementwise(device, id::MASKED_RATIO, n, &mut args) }
}

/// The input a term's share of the relevance multiplies: the layer's input `x` (first `n`
/// values, modified by `InputMod`), or a constant sample repeated over the batch.
pub enum TermInput<'a> {
    Variable(&'a DeviceBuffer, InputMod),
    Constant(&'a DeviceBuffer),
}

/// `r = factor in(x) c` (`overwrite`) or `r += factor in(x) c` over `n` values.
pub fn accumulate(
    device: &Device,
    r: &mut DeviceBuffer,
    c: &DeviceBuffer,
    input: TermInput<'_>,
    (factor, overwrite): (f32, bool),
    n: usize,
) -> Result<()> {
    let (rr, rc) = (first(r, n)?, first(c, n)?);
    let (x, rx, mode, period) = match input {
        TermInput::Variable(x, m) => (x, first(x, n)?, input_mode(m), n.max(1)),
        TermInput::Constant(k) if !k.is_empty() && n.is_multiple_of(k.len()) => (k, first(k, k.len())?, 0, k.len()),
        TermInput::Constant(k) => {
            return Err(Error::InvalidParameter {
                what: format!("GPU constant input `{}`", k.what()),
                message: format!("{n} values are not whole samples of {}", k.len()),
            });
        }
    };
    let mut args = [
        Arg::Out(r, rr),
        Arg::In(c, rc),
        Arg::In(x, rx),
        Arg::U32(mode),
        Arg::F32(factor),
        Arg::U32(u32::from(overwrite)),
        Arg::U64(period as u64),
        Arg::U64(n as u64),
    ];
    // SAFETY: `accumulate(float* r, const float* c, const float* x, unsigned mode, float factor,
    // unsigned overwrite, u64 period, u64 n)` touches r[0..n], c[0..n] and x[i % period], with
    // period the checked length of x's range (n for a variable input).
    unsafe { elementwise(device, id::ACCUMULATE, n, &mut args) }
}
