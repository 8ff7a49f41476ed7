//! Convolution kernels: unfolding an image into columns (`im2col`) and folding columns back
//! (`col2im`), which cuBLAS products turn into a convolution and its transposed pass.

use super::{Arg, elementwise};
use crate::error::{Error, Result};
use crate::gpu::{Device, DeviceBuffer};
use crate::kernels::Conv2dGeom;

/// The geometry as the kernels take it: `c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow`, each
/// checked to fit `unsigned`, after [`Conv2dGeom::validate`].
fn geometry(g: &Conv2dGeom) -> Result<[u32; 13]> {
    let invalid = |message: String| Error::InvalidParameter { what: "GPU convolution geometry".into(), message };
    g.validate().map_err(invalid)?;
    let values = [
        g.in_channels,
        g.in_h,
        g.in_w,
        g.kernel[0],
        g.kernel[1],
        g.stride[0],
        g.stride[1],
        g.padding[0],
        g.padding[1],
        g.dilation[0],
        g.dilation[1],
        g.out_h(),
        g.out_w(),
    ];
    let mut out = [0u32; 13];
    for (o, v) in out.iter_mut().zip(values) {
        *o = u32::try_from(v).map_err(|_| invalid(format!("{v} exceeds the kernels' 32-bit sizes: {g:?}")))?;
    }
    Ok(out)
}

/// Runs `im2col` or `col2im` (`kernel`) between samples `[C, H, W]` of an image buffer and
/// their columns `[C kh kw, oh ow]`, over the whole destination range.
///
/// # Safety
/// `kernel` must be `im2col` (reads the image, writes the columns) or `col2im` (the reverse),
/// both with the parameters `(src, dst, 13 x unsigned geometry, u64 n)`.
unsafe fn unfold(
    device: &Device,
    kernel: u32,
    g: &Conv2dGeom,
    (src, src_range): (&DeviceBuffer, std::ops::Range<usize>),
    (dst, dst_range): (&mut DeviceBuffer, std::ops::Range<usize>),
) -> Result<()> {
    let geometry = geometry(g)?;
    let n = dst_range.len();
    let [c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow] = geometry.map(Arg::U32);
    let (src, dst) = (Arg::In(src, src_range), Arg::Out(dst, dst_range));
    let mut args = [src, dst, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, Arg::U64(n as u64)];
    // SAFETY: passed on; the kernel writes dst[0..n] and reads src inside the checked sample.
    unsafe { elementwise(device, kernel, n, &mut args) }
}

/// Elements of one sample's columns, `C kh kw oh ow`, and of `count` samples', checked.
fn columns(g: &Conv2dGeom, count: usize) -> Result<(usize, usize)> {
    let per = g
        .col_rows()
        .checked_mul(g.col_cols())
        .ok_or_else(|| Error::SizeOverflow { what: "GPU convolution columns".into() })?;
    Ok((per, per.checked_mul(count).ok_or_else(|| Error::SizeOverflow { what: "GPU convolution columns".into() })?))
}

/// `cols [count, C kh kw, oh ow]` (from the start of `cols`) = the unfolded samples of `image`
/// from sample `first` on.
pub fn im2col(
    device: &Device,
    g: &Conv2dGeom,
    (image, first, count): (&DeviceBuffer, usize, usize),
    cols: &mut DeviceBuffer,
) -> Result<()> {
    let images =
        g.in_len().checked_mul(count).ok_or_else(|| Error::SizeOverflow { what: "GPU convolution input".into() })?;
    let at =
        g.in_len().checked_mul(first).ok_or_else(|| Error::SizeOverflow { what: "GPU convolution input".into() })?;
    let (x, c) = (image.range(at, images)?, cols.range(0, columns(g, count)?.1)?);
    // SAFETY: `im2col` writes cols[0..count C kh kw oh ow] and reads sample s's x at `s C h w +
    // (ch h + y) w + xx` for `s < count`, `ch < C`, `y < h`, `xx < w`: inside the range.
    unsafe { unfold(device, crate::gpu::table::id::IM2COL, g, (image, x), (cols, c)) }
}

/// The samples of `image` from sample `first` on, `count` of them (overwritten) = the columns
/// `[count, C kh kw, oh ow]` at the start of `cols` folded back: each input value the sum of the
/// column entries that read it.
pub fn col2im(
    device: &Device,
    g: &Conv2dGeom,
    cols: &DeviceBuffer,
    (image, first, count): (&mut DeviceBuffer, usize, usize),
) -> Result<()> {
    let images =
        g.in_len().checked_mul(count).ok_or_else(|| Error::SizeOverflow { what: "GPU convolution input".into() })?;
    let at =
        g.in_len().checked_mul(first).ok_or_else(|| Error::SizeOverflow { what: "GPU convolution input".into() })?;
    let (c, x) = (cols.range(0, columns(g, count)?.1)?, image.range(at, images)?);
    // SAFETY: `col2im` writes the count samples' C h w values each and reads sample s's columns
    // at `s C kh kw oh ow +` rows below `C kh kw` and columns below `oh ow`: inside the range.
    unsafe { unfold(device, crate::gpu::table::id::COL2IM, g, (cols, c), (image, x)) }
}
