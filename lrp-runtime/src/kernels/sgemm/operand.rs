//! The left operand `A` of the kernels' product, as the driver reads it: a strided matrix, or the
//! unfolded image of a convolution read straight from the image (implicit `im2col`).

use super::kernel::MicroKernel;
use crate::kernels::gemm::MatRef;
use crate::kernels::im2col::ConvCols;

/// What the blocked driver needs of `A` (`rows x depth`): packing any block into `MR`-row panels.
pub(crate) trait Operand: Copy + Sync {
    fn rows(&self) -> usize;
    fn depth(&self) -> usize;

    /// Packs the `rows x depth` block at `(r0, d0)` into `MR`-row panels (layout of [`pack`]).
    fn pack<const MR: usize, const NR: usize, K: MicroKernel<MR, NR>>(
        &self,
        kern: &K,
        dst: &mut [f32],
        r0: usize,
        d0: usize,
        rows: usize,
        depth: usize,
    );

    /// Whether each row is contiguous along the depth (a dense layer's weights), which the
    /// driver's single-column-panel path streams.
    fn rows_contiguous(&self) -> bool;

    /// Rows `lo..hi` (`lo < hi <= rows`).
    fn sub_rows(self, lo: usize, hi: usize) -> Self;

    /// `A` as a strided matrix, for kernels that read one (`matrixmultiply`): itself, or its
    /// elements written into `scratch` (a convolution's columns, materialised).
    fn matrix<'s>(&'s self, scratch: &'s mut Vec<f32>) -> MatRef<'s>;
}

impl Operand for MatRef<'_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn depth(&self) -> usize {
        self.cols
    }

    fn pack<const MR: usize, const NR: usize, K: MicroKernel<MR, NR>>(
        &self,
        kern: &K,
        dst: &mut [f32],
        r0: usize,
        d0: usize,
        rows: usize,
        depth: usize,
    ) {
        kern.pack_a(dst, *self, r0, d0, rows, depth);
    }

    fn rows_contiguous(&self) -> bool {
        self.cs == 1
    }

    fn sub_rows(self, lo: usize, hi: usize) -> Self {
        MatRef { data: &self.data[lo * self.rs..], rows: hi - lo, ..self }
    }

    fn matrix<'s>(&'s self, _scratch: &'s mut Vec<f32>) -> MatRef<'s> {
        *self
    }
}

impl Operand for ConvCols<'_> {
    fn rows(&self) -> usize {
        self.positions()
    }

    fn depth(&self) -> usize {
        self.taps()
    }

    fn pack<const MR: usize, const NR: usize, K: MicroKernel<MR, NR>>(
        &self,
        kern: &K,
        dst: &mut [f32],
        r0: usize,
        d0: usize,
        rows: usize,
        depth: usize,
    ) {
        kern.pack_conv(dst, self, r0, d0, rows, depth);
    }

    fn rows_contiguous(&self) -> bool {
        false
    }

    fn sub_rows(self, lo: usize, hi: usize) -> Self {
        self.positions_range(lo, hi)
    }

    /// The positions' columns unfolded into `scratch` (`taps x positions`, row-major, so `A`
    /// is its transpose); allocates.
    fn matrix<'s>(&'s self, scratch: &'s mut Vec<f32>) -> MatRef<'s> {
        let (rows, depth) = (self.positions(), self.taps());
        scratch.clear();
        scratch.resize(rows * depth, 0.0);
        self.unfold(scratch);
        MatRef { data: scratch, rows, cols: depth, rs: 1, cs: rows }
    }
}
