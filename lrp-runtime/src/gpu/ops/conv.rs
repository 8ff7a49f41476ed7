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

/// Runs `im2col` or `col2im` (`kernel`) between one sample `[C, H, W]` at `sample_offset` of
/// `image` and the columns `[C kh kw, oh ow]` at the start of `cols`.
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

/// `cols [C kh kw, oh ow]` (at the start of `cols`) = the unfolded sample of `image` starting
/// at `offset`.
pub fn im2col(
    device: &Device,
    g: &Conv2dGeom,
    image: &DeviceBuffer,
    offset: usize,
    cols: &mut DeviceBuffer,
) -> Result<()> {
    let (x, c) = (image.range(offset, g.in_len())?, cols.range(0, g.col_rows().saturating_mul(g.col_cols()))?);
    // SAFETY: `im2col` writes cols[0..C kh kw oh ow] and reads x at `(ch h + y) w + xx` for
    // `ch < C`, `y < h`, `xx < w`: inside the sample.
    unsafe { unfold(device, crate::gpu::table::id::IM2COL, g, (image, x), (cols, c)) }
}

/// The sample of `image` starting at `offset` (overwritten) = the columns at the start of
/// `cols` folded back: each input value the sum of the column entries that read it.
pub fn col2im(
    device: &Device,
    g: &Conv2dGeom,
    cols: &DeviceBuffer,
    image: &mut DeviceBuffer,
    offset: usize,
) -> Result<()> {
    let (c, x) = (cols.range(0, g.col_rows().saturating_mul(g.col_cols()))?, image.range(offset, g.in_len())?);
    // SAFETY: `col2im` writes the sample's C h w values and reads columns at rows below
    // `C kh kw` and columns below `oh ow`: inside the checked range.
    unsafe { unfold(device, crate::gpu::table::id::COL2IM, g, (cols, c), (image, x)) }
}
