//! Matrix products on a device: cuBLAS on a GPU, the CPU's packed sgemm when emulated.
//! Matrices are row-major ranges of a [`DeviceBuffer`], optionally used transposed.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};

use super::buffer::{DeviceBuffer, Storage, mixed};
use super::device::{Backend, Device};
use crate::error::{Error, Result};
use crate::kernels::{self, MatRef};

/// A `rows x cols` row-major matrix stored in `buffer` from `offset` on; used as its transpose
/// (`cols x rows`) when `transposed`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub buffer: &'a DeviceBuffer,
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

/// A `rows x cols` row-major matrix written in `buffer` from `offset` on.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub buffer: &'a mut DeviceBuffer,
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Mat<'_> {
    /// (rows, cols) of the matrix as used.
    fn shape(&self) -> (usize, usize) {
        if self.transposed { (self.cols, self.rows) } else { (self.rows, self.cols) }
    }
}

fn elements(what: &str, rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols).ok_or_else(|| Error::SizeOverflow { what: what.to_string() })
}

fn as_int(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::InvalidParameter {
        what: what.to_string(),
        message: format!("{v} exceeds cuBLAS's 32-bit sizes"),
    })
}

/// `c = alpha a b + beta c` for `a` (as used) `m x k`, `b` `k x n`, `c` `m x n`. Shapes and
/// ranges are checked, and every buffer must belong to `device`.
pub fn gemm(device: &Device, alpha: f32, a: Mat<'_>, b: Mat<'_>, beta: f32, c: MatMut<'_>) -> Result<()> {
    gemm_batched(device, alpha, a, b, beta, c, (1, [0; 3]))
}

/// The last element (exclusive) a batch of `count` matrices of `len` values reaches, the `s`-th
/// `stride` values after the first at `offset`; checked.
fn batch_end(offset: usize, len: usize, (count, stride): (usize, usize)) -> Result<usize> {
    let overflow = || Error::SizeOverflow { what: "a batch of GPU products".into() };
    let span = count.saturating_sub(1).checked_mul(stride).ok_or_else(overflow)?;
    offset.checked_add(span).and_then(|v| v.checked_add(len)).ok_or_else(overflow)
}

/// [`gemm`] for `count` products at once: product `s` reads `a` and `b` and writes `c`
/// `strides[0]`, `strides[1]` and `strides[2]` values after product `s - 1`'s (a stride of 0
/// repeats one matrix). One strided batched cuBLAS call; product by product when emulated.
pub fn gemm_batched(
    device: &Device,
    alpha: f32,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: MatMut<'_>,
    (count, strides): (usize, [usize; 3]),
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let ((m, k), (k2, n)) = (a.shape(), b.shape());
    if k != k2 || c.rows != m || c.cols != n {
        return Err(Error::InvalidParameter {
            what: format!("GPU product into `{}`", c.buffer.what()),
            message: format!("shapes {m}x{k} times {k2}x{n} into {}x{}", c.rows, c.cols),
        });
    }
    let (la, lb, lc) = (
        elements("GPU product operand", a.rows, a.cols)?,
        elements("GPU product operand", b.rows, b.cols)?,
        elements("GPU product result", m, n)?,
    );
    // The whole batch's ranges, checked.
    let ra = a.buffer.range(a.offset, batch_end(a.offset, la, (count, strides[0]))? - a.offset)?;
    let rb = b.buffer.range(b.offset, batch_end(b.offset, lb, (count, strides[1]))? - b.offset)?;
    let rc = c.buffer.range(c.offset, batch_end(c.offset, lc, (count, strides[2]))? - c.offset)?;
    if count > 1 && strides[2] < lc {
        return Err(Error::InvalidParameter {
            what: format!("GPU products into `{}`", c.buffer.what()),
            message: format!("the results, {lc} values each, overlap (stride {})", strides[2]),
        });
    }
    for buffer in [a.buffer, b.buffer, &*c.buffer] {
        buffer.check_device(device)?;
    }
    match (&device.backend, &a.buffer.storage, &b.buffer.storage, &mut c.buffer.storage) {
        (Backend::Cuda(cuda), Storage::Cuda(sa), Storage::Cuda(sb), Storage::Cuda(sc)) => {
            // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS gets B first. A row-major
            // matrix read column-major is its transpose, so an operand used as stored is `N`.
            let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
            let cfg = GemmConfig {
                transa: op(b.transposed),
                transb: op(a.transposed),
                m: as_int("GPU product columns", n)?,
                n: as_int("GPU product rows", m)?,
                k: as_int("GPU product depth", k)?,
                alpha,
                lda: as_int("GPU product leading dimension", b.cols.max(1))?,
                ldb: as_int("GPU product leading dimension", a.cols.max(1))?,
                beta,
                ldc: as_int("GPU product leading dimension", n.max(1))?,
            };
            let (va, vb, mut vc) = (sa.slice(ra), sb.slice(rb), sc.slice_mut(rc));
            let stride =
                |v: usize| i64::try_from(v).map_err(|_| Error::SizeOverflow { what: "a GPU product stride".into() });
            let batched = StridedBatchedConfig {
                gemm: cfg,
                batch_size: as_int("GPU product batch", count)?,
                stride_a: stride(strides[1])?,
                stride_b: stride(strides[0])?,
                stride_c: stride(strides[2])?,
            };
            // SAFETY: each view holds every element its batch of matrices needs (ranges checked
            // above), the leading dimensions are the row lengths of row-major storage, and the
            // results do not overlap.
            unsafe { cuda.blas.gemm_strided_batched(batched, &vb, &va, &mut vc) }
                .map_err(|e| Device::cuda_error(&format!("cuBLAS product into `{}`", c.buffer.what()), e))
        }
        (Backend::Emulated, Storage::Host(ha), Storage::Host(hb), Storage::Host(hc)) => {
            let (ha, hb, hc) = (&ha[ra], &hb[rb], &mut hc[rc]);
            for s in 0..count {
                let (va, vb) = (host_view(&ha[s * strides[0]..][..la], &a), host_view(&hb[s * strides[1]..][..lb], &b));
                kernels::gemm(alpha, va, vb, beta, kernels::MatMut::row_major(&mut hc[s * strides[2]..][..lc], m, n));
            }
            Ok(())
        }
        _ => Err(mixed(c.buffer)),
    }
}

/// `mat` read from its host storage `h` (its range).
fn host_view<'h>(h: &'h [f32], mat: &Mat<'_>) -> MatRef<'h> {
    let r = MatRef::row_major(h, mat.rows, mat.cols);
    if mat.transposed { r.t() } else { r }
}
