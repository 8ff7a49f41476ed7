//! Single-precision matrix product `C = alpha A B + beta C` over strided views (transposes cost
//! nothing): [`gemm`], allocation-free on top of [`super::sgemm`] (where our kernels run; see
//! its module docs for the `matrixmultiply` route) and split over the threads of
//! [`super::parallel`] when large, and the `matrixmultiply` reference it is measured against.

use super::im2col::ConvCols;
use super::parallel;
use super::sgemm::{Isa, Operand, PackBuffers, Split, distinct_elements, in_bounds, sgemm, sgemm_oriented};
use std::cell::RefCell;

/// A read-only strided matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A mutable strided matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows x cols` view of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Whether every element (i, j) lies inside `data` (checked arithmetic).
    fn in_bounds(&self) -> bool {
        in_bounds(self.rows, self.cols, self.rs, self.cs, self.data.len())
    }
}

impl<'a> MatMut<'a> {
    /// Row-major `rows x cols` view of `data`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatMut { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Whether every element (i, j) lies inside `data` (checked arithmetic).
    fn in_bounds(&self) -> bool {
        in_bounds(self.rows, self.cols, self.rs, self.cs, self.data.len())
    }
}

/// `C = alpha A B + beta C` for `A: m x k`, `B: k x n`, `C: m x n`, by [`super::sgemm`] with
/// each thread's packing buffers (allocated once per thread, see [`prepare_thread`]), so it
/// never allocates after that (except on the `matrixmultiply` route, see [`super::sgemm`]). A
/// product of [`parallel::SPLIT_MIN_WORK`] multiply-adds or more is cut into disjoint blocks of
/// C computed at once on [`parallel::num_threads`] threads.
///
/// Panics if the views' dimensions disagree or a view reaches past its slice (its last index
/// computed with checked arithmetic, so no stride wraps around); generated code only passes
/// views whose sizes the compiler checked, so this never fires on user input.
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
    let work = c.rows.saturating_mul(c.cols).saturating_mul(a.cols);
    match Split::new(Isa::best(), alpha, a, b, beta, c, parallel::parts_for(work)) {
        Ok(split) => parallel::run(split.parts(), &|part| with_thread_pack(|pack| split.run_part(part, pack))),
        Err((a, b, c)) => with_thread_pack(|pack| sgemm(alpha, a, b, beta, c, pack)),
    }
}

/// `C = alpha W cols + beta C` for one group of a convolution: `W: cout x taps` (the group's
/// weights), `cols` the unfolded image (`taps x positions`, given as its transpose
/// [`ConvCols`]), `C: cout x positions` with unit column stride (an output image). The same as
/// [`gemm`] with the [`im2col`](super::im2col::im2col) matrix, without materialising it: the packing reads the
/// image. Split over threads like [`gemm`].
///
/// Panics if the dimensions disagree, `C` has no unit column stride, or a view reaches past its
/// slice (checked arithmetic, on the threaded path too); generated code only passes views
/// whose sizes the compiler checked.
pub fn conv_gemm(alpha: f32, w: MatRef<'_>, cols: ConvCols<'_>, beta: f32, c: MatMut<'_>) {
    conv_gemm_many(alpha, [w], cols, beta, [c]);
}

/// [`conv_gemm`] of one image with several weights: `C_q = alpha W_q cols + beta C_q`, the
/// image unfolded and packed once for all of them (a layer's forward pass and a rule's
/// denominator read the same input).
pub fn conv_gemm_many<const N: usize>(
    alpha: f32,
    w: [MatRef<'_>; N],
    cols: ConvCols<'_>,
    beta: f32,
    c: [MatMut<'_>; N],
) {
    assert!(c.iter().all(|c| c.cs == 1 || c.cols <= 1), "conv_gemm: C must have unit column stride");
    // In the kernels' orientation: C^T = cols^T W^T, with C^T column-major.
    oriented(alpha, cols, w.map(MatRef::t), beta, c.map(MatMut::t));
}

/// `C_q = alpha A_q B + beta C_q` for products sharing their right operand (a pointwise
/// convolution's input read with several weights), `B` packed once for all of them when every
/// `C_q` is row-major with more than one row and column; otherwise one [`gemm`] each. Panics
/// like [`gemm`].
pub fn gemm_shared_rhs<const N: usize>(alpha: f32, a: [MatRef<'_>; N], b: MatRef<'_>, beta: f32, c: [MatMut<'_>; N]) {
    let row_major = c.iter().all(|c| c.cs == 1 && c.rs != 1 && c.rows > 1 && c.cols > 1);
    if !row_major || N == 1 {
        for (a, c) in a.into_iter().zip(c) {
            gemm(alpha, a, b, beta, c);
        }
        return;
    }
    for (a, c) in a.iter().zip(&c) {
        assert!(a.rows == c.rows && b.cols == c.cols && a.cols == b.rows, "gemm: dimension mismatch");
        assert!(a.in_bounds() && b.in_bounds() && c.in_bounds(), "gemm: view out of bounds");
    }
    // In the kernels' orientation: C_q^T = B^T A_q^T, with C_q^T column-major.
    oriented(alpha, b.t(), a.map(MatRef::t), beta, c.map(MatMut::t));
}

/// `C_q = alpha A B_q + beta C_q` in the kernels' orientation, `A` packed once for all, split
/// over threads when the products together are large.
fn oriented<A: Operand, const N: usize>(alpha: f32, a: A, b: [MatRef<'_>; N], beta: f32, c: [MatMut<'_>; N]) {
    let each = |c: &MatMut<'_>| c.rows.saturating_mul(c.cols).saturating_mul(a.depth());
    let work = c.iter().map(each).fold(0usize, usize::saturating_add);
    match Split::oriented(Isa::best(), a, b, c, alpha, beta, parallel::parts_for(work)) {
        Ok(split) => parallel::run(split.parts(), &|part| with_thread_pack(|pack| split.run_part(part, pack))),
        Err(c) => with_thread_pack(|pack| sgemm_oriented(alpha, a, b, beta, c, pack)),
    }
}

/// Runs `f` with this thread's packing buffers.
fn with_thread_pack<R>(f: impl FnOnce(&mut PackBuffers) -> R) -> R {
    PACK.with(|pack| match pack.try_borrow_mut() {
        Ok(mut pack) => f(&mut pack),
        // Only reachable if a GEMM ran inside a GEMM on this thread, which the crate never does.
        Err(_) => f(&mut PackBuffers::new()),
    })
}

thread_local! {
    static PACK: RefCell<PackBuffers> = RefCell::new(PackBuffers::new());
}

/// Allocates this thread's GEMM packing buffers and starts the worker threads (each with its
/// own buffers) now rather than on the first product: the generated `workspace()` calls it, so
/// that later calls allocate nothing.
pub fn prepare_thread() {
    prepare_thread_buffers();
    parallel::prepare();
}

/// Allocates this thread's GEMM packing buffers.
pub(crate) fn prepare_thread_buffers() {
    PACK.with(|pack| {
        let _ = pack.try_borrow().map(|p| p.len());
    });
}

/// The same product by `matrixmultiply::sgemm`, the reference `benches`/examples compare
/// [`gemm`] against (it allocates its packing buffer on every call): [`super::sgemm`]'s
/// `matrixmultiply` route, on one thread.
///
/// Panics if the views' dimensions disagree, a view reaches past its slice (the last element's
/// index computed with checked arithmetic, so huge strides are refused rather than wrapped), or
/// two elements of C may share memory (`matrixmultiply` requires distinct elements; accepted
/// are layouts whose smaller stride, extents of 1 left out, is positive and whose larger stride
/// is at least the extent times the smaller). Generated code never calls it.
pub fn gemm_matrixmultiply(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
    assert!(a.rows == c.rows && b.cols == c.cols && a.cols == b.rows, "gemm: dimension mismatch");
    assert!(a.in_bounds(), "gemm: A out of bounds");
    assert!(b.in_bounds(), "gemm: B out of bounds");
    assert!(c.in_bounds(), "gemm: C out of bounds");
    assert!(distinct_elements(c.rows, c.cols, c.rs, c.cs), "gemm: elements of C overlap");
    super::sgemm::sgemm_on(Isa::Matrixmultiply, alpha, a, b, beta, c, &mut PackBuffers::empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0.0f64;
                for p in 0..a.cols {
                    s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
                out[i * b.cols + j] = s as f32;
            }
        }
        out
    }

    fn seq(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 2.0).collect()
    }

    #[test]
    fn matches_naive_with_transposes_and_beta() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 70, 5)] {
            let a = seq(m * k, 0.1);
            let b = seq(k * n, 0.7);
            let bt: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
            let a_ref = MatRef::row_major(&a, m, k);
            let expect = naive(a_ref, MatRef::row_major(&b, k, n));
            // B given transposed in memory.
            let mut c = vec![1.0; m * n];
            gemm(2.0, a_ref, MatRef::row_major(&bt, n, k).t(), 0.5, MatMut::row_major(&mut c, m, n));
            for i in 0..m * n {
                let want = 2.0 * expect[i] + 0.5;
                assert!((c[i] - want).abs() <= 1e-4 * (1.0 + want.abs()), "{m}x{k}x{n} at {i}: {} vs {want}", c[i]);
            }
            // C written transposed.
            let mut ct = vec![0.0; n * m];
            gemm(1.0, a_ref, MatRef::row_major(&b, k, n), 0.0, MatMut::row_major(&mut ct, n, m).t());
            for i in 0..m {
                for j in 0..n {
                    let (got, want) = (ct[j * m + i], expect[i * n + j]);
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()));
                }
            }
        }
    }

    #[test]
    fn large_products_split_over_threads_match_naive() {
        // Above `SPLIT_MIN_WORK`: cut by rows (tall C) and by columns (wide C), C both ways.
        for &(m, k, n) in &[(700, 150, 90), (90, 150, 700)] {
            assert!(m * k * n >= parallel::SPLIT_MIN_WORK);
            let a = seq(m * k, 0.3);
            let b = seq(k * n, 0.9);
            let expect = naive(MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
            let mut c = vec![f32::NAN; m * n];
            gemm(1.0, MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), 0.0, MatMut::row_major(&mut c, m, n));
            let mut ct = vec![1.0; n * m];
            gemm(
                1.0,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                2.0,
                MatMut::row_major(&mut ct, n, m).t(),
            );
            for i in 0..m {
                for j in 0..n {
                    let want = expect[i * n + j];
                    assert!((c[i * n + j] - want).abs() <= 1e-3 * (1.0 + want.abs()), "{m}x{k}x{n} ({i}, {j})");
                    assert!(
                        (ct[j * m + i] - want - 2.0).abs() <= 1e-3 * (1.0 + want.abs()),
                        "{m}x{k}x{n} C^T ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn conv_gemm_equals_gemm_on_the_materialised_im2col() {
        use crate::kernels::im2col::{self, Conv2dGeom, im2col};
        let geom = |c, h, w, k, s, p, d, cout| Conv2dGeom { out_channels: cout, ..im2col::geom(c, h, w, k, s, p, d) };
        let cases = [
            geom(3, 13, 11, [3, 3], [1, 1], [1, 1], [1, 1], 5),
            geom(4, 9, 40, [3, 5], [2, 1], [2, 0], [1, 2], 7),
            geom(2, 7, 7, [1, 1], [1, 1], [0, 0], [1, 1], 33),
            geom(6, 30, 3, [5, 2], [1, 3], [1, 1], [1, 1], 4),
            // Wide rows, every panel inside one row; then enough work to be split over threads.
            geom(8, 8, 100, [3, 3], [1, 1], [1, 1], [1, 1], 16),
            geom(40, 56, 56, [3, 3], [1, 1], [1, 1], [1, 1], 64),
        ];
        for g in cases {
            let (k, p) = (g.col_rows(), g.col_cols());
            let x = seq(g.in_len(), 0.2);
            let w = seq(g.out_channels * k, 1.1);
            let mut cols = vec![0.0; k * p];
            im2col(&g, &x, &mut cols);
            let mut want = seq(g.out_channels * p, 0.5);
            let mut got = want.clone();
            let wm = MatRef::row_major(&w, g.out_channels, k);
            gemm(1.5, wm, MatRef::row_major(&cols, k, p), 0.5, MatMut::row_major(&mut want, g.out_channels, p));
            conv_gemm(
                1.5,
                wm,
                ConvCols::new(&g, &x, 0, g.in_channels),
                0.5,
                MatMut::row_major(&mut got, g.out_channels, p),
            );
            // Same packed values, same kernels, same blocking: bitwise equal.
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{g:?}");
        }
    }

    #[test]
    fn products_sharing_an_operand_equal_separate_products_bitwise() {
        use crate::kernels::im2col::{self, Conv2dGeom};
        let geom = |c, h, w, k, s, p, cout| Conv2dGeom { out_channels: cout, ..im2col::geom(c, h, w, k, s, p, [1, 1]) };
        // Small; more output channels than half the packing space of B holds (two column
        // blocks); ragged; and enough work to be split over threads (by rows, then columns).
        for g in [
            geom(3, 9, 7, [3, 3], [1, 1], [1, 1], 5),
            geom(4, 5, 6, [1, 1], [1, 1], [0, 0], 1100),
            geom(6, 11, 9, [3, 2], [2, 1], [1, 0], 37),
            geom(32, 28, 28, [3, 3], [1, 1], [1, 1], 64),
            geom(64, 7, 7, [3, 3], [1, 1], [1, 1], 512),
        ] {
            let (k, p, cout) = (g.col_rows(), g.col_cols(), g.out_channels);
            let x = seq(g.in_len(), 0.4);
            let (w1, w2) = (seq(cout * k, 1.3), seq(cout * k, 2.9));
            let (m1, m2) = (MatRef::row_major(&w1, cout, k), MatRef::row_major(&w2, cout, k));
            let cols = ConvCols::new(&g, &x, 0, g.in_channels);
            let (mut want1, mut want2) = (seq(cout * p, 0.5), seq(cout * p, 0.6));
            let (mut got1, mut got2) = (want1.clone(), want2.clone());
            conv_gemm(0.5, m1, cols, 1.5, MatMut::row_major(&mut want1, cout, p));
            conv_gemm(0.5, m2, cols, 1.5, MatMut::row_major(&mut want2, cout, p));
            let outs = [MatMut::row_major(&mut got1, cout, p), MatMut::row_major(&mut got2, cout, p)];
            conv_gemm_many(0.5, [m1, m2], cols, 1.5, outs);
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same(&want1, &got1) && same(&want2, &got2), "conv {g:?}");
            // The same image as the right operand of plain products (a pointwise convolution).
            let xm = MatRef::row_major(&x, g.in_channels, g.in_h * g.in_w);
            let (a1, a2) = (&w1[..cout * g.in_channels], &w2[..cout * g.in_channels]);
            let (a1, a2) = (MatRef::row_major(a1, cout, g.in_channels), MatRef::row_major(a2, cout, g.in_channels));
            let hw = g.in_h * g.in_w;
            let (mut want1, mut want2, mut got1, mut got2) =
                (vec![0.0; cout * hw], vec![0.0; cout * hw], vec![f32::NAN; cout * hw], vec![f32::NAN; cout * hw]);
            gemm(1.0, a1, xm, 0.0, MatMut::row_major(&mut want1, cout, hw));
            gemm(1.0, a2, xm, 0.0, MatMut::row_major(&mut want2, cout, hw));
            let outs = [MatMut::row_major(&mut got1, cout, hw), MatMut::row_major(&mut got2, cout, hw)];
            gemm_shared_rhs(1.0, [a1, a2], xm, 0.0, outs);
            assert!(same(&want1, &got1) && same(&want2, &got2), "pointwise {g:?}");
        }
    }

    #[test]
    fn transposed_convolution_equals_gemm_and_col2im() {
        use crate::kernels::im2col::{self, Conv2dGeom, col2im};
        let geom = |c, h, w, k, p, d, cout, groups| Conv2dGeom {
            out_channels: cout,
            groups,
            ..im2col::geom(c, h, w, k, [1, 1], p, d)
        };
        let cases = [
            geom(3, 9, 11, [3, 3], [1, 1], [1, 1], 5, 1),
            geom(4, 10, 7, [3, 5], [0, 2], [1, 1], 6, 2),
            geom(2, 12, 12, [3, 3], [2, 1], [2, 1], 4, 1),
            geom(6, 8, 9, [1, 1], [0, 0], [1, 1], 3, 3),
            geom(32, 40, 40, [3, 3], [1, 1], [1, 1], 48, 1),
        ];
        for g in cases {
            let g_t = g.transposed().expect("stride 1");
            let (k, p) = (g.col_rows(), g.col_cols());
            let w = seq(g.out_channels * k / g.groups, 0.4);
            let s = seq(g.out_len(), 1.3);
            // Reference: cols = W^T s per group, folded back by col2im.
            let (cout_g, kg) = (g.out_channels / g.groups, k / g.groups);
            let mut cols = vec![0.0; k * p];
            for gi in 0..g.groups {
                gemm(
                    1.0,
                    MatRef::row_major(&w[gi * cout_g * kg..(gi + 1) * cout_g * kg], cout_g, kg).t(),
                    MatRef::row_major(&s[gi * cout_g * p..(gi + 1) * cout_g * p], cout_g, p),
                    0.0,
                    MatMut::row_major(&mut cols[gi * kg * p..(gi + 1) * kg * p], kg, p),
                );
            }
            let mut want = vec![0.0; g.in_len()];
            col2im(&g, &cols, &mut want);
            // The transposed pass as a convolution of s with the flipped, transposed weights.
            let w_t = g.transpose_weights(&w);
            let (kg_t, p_t) = (g_t.col_rows() / g_t.groups, g_t.col_cols());
            let (cout_t, cin_t) = (g_t.out_channels / g_t.groups, g_t.in_channels / g_t.groups);
            assert_eq!((g_t.out_len(), p_t), (g.in_len(), g.in_h * g.in_w), "{g:?}");
            let mut got = vec![f32::NAN; g.in_len()];
            for gi in 0..g_t.groups {
                conv_gemm(
                    1.0,
                    MatRef::row_major(&w_t[gi * cout_t * kg_t..(gi + 1) * cout_t * kg_t], cout_t, kg_t),
                    ConvCols::new(&g_t, &s, gi * cin_t, cin_t),
                    0.0,
                    MatMut::row_major(&mut got[gi * cout_t * p_t..(gi + 1) * cout_t * p_t], cout_t, p_t),
                );
            }
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{g:?} at {i}: {a} vs {b}");
            }
        }
        // Strided convolutions have no plain transposed pass.
        let strided = Conv2dGeom { stride: [2, 1], ..geom(2, 8, 8, [3, 3], [1, 1], [1, 1], 2, 1) };
        assert!(strided.transposed().is_none());
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn rejects_short_slices() {
        let a = [1.0; 5];
        let b = [1.0; 6];
        let mut c = [0.0; 4];
        gemm(
            1.0,
            MatRef { data: &a, rows: 2, cols: 3, rs: 3, cs: 1 },
            MatRef::row_major(&b, 3, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
    }
}
