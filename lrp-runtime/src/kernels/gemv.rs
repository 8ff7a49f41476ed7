//! Matrix-vector products, the `m = 1` and `n = 1` cases of [`super::gemm::gemm`]: a dot product per
//! output where the matrix is read along its contiguous rows, an axpy per input otherwise. No
//! packing, so a batch-1 dense layer reads its weights exactly once.
//!
//! The loops carry 16 independent accumulators so that they vectorise without reassociation;
//! on x86-64 the same code is also compiled with AVX-512F or AVX2+FMA enabled and chosen at run
//! time.

use super::gemm::{MatMut, MatRef};
use super::parallel;

const LANES: usize = 16;

/// `sum_i x_i y_i`, 16 lanes at a time.
#[inline(always)]
fn dot_body<const FMA: bool>(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0.0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] = if FMA { a[l].mul_add(b[l], acc[l]) } else { acc[l] + a[l] * b[l] };
        }
    }
    let tail: f32 = xr.iter().zip(yr).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}

/// Outputs kept in registers per pass over the rows.
const BLOCK: usize = 64;

/// `y += alpha sum_p x_p w_p`, `w_p = w[p rs..]` the rows: `y` is walked in blocks of 64 that
/// stay in registers while every row with `x_p != 0` is added (rows with `x_p = 0` are skipped,
/// so a zero coefficient never multiplies a row).
#[inline(always)]
fn rows_body<const FMA: bool>(alpha: f32, x: &[f32], w: &[f32], rs: usize, y: &mut [f32]) {
    let len = y.len();
    for start in (0..len).step_by(BLOCK) {
        let width = (len - start).min(BLOCK);
        let mut acc = [0.0f32; BLOCK];
        acc[..width].copy_from_slice(&y[start..start + width]);
        for (p, &xp) in x.iter().enumerate() {
            if xp == 0.0 {
                continue;
            }
            let a = alpha * xp;
            let row = &w[p * rs + start..p * rs + start + width];
            if width == BLOCK {
                let row: &[f32; BLOCK] = row.try_into().unwrap_or(&[0.0; BLOCK]);
                for i in 0..BLOCK {
                    acc[i] = if FMA { row[i].mul_add(a, acc[i]) } else { acc[i] + a * row[i] };
                }
            } else {
                for (s, &r) in acc[..width].iter_mut().zip(row) {
                    *s = if FMA { r.mul_add(a, *s) } else { *s + a * r };
                }
            }
        }
        y[start..start + width].copy_from_slice(&acc[..width]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f")]
    pub fn dot_avx512(x: &[f32], y: &[f32]) -> f32 {
        super::dot_body::<true>(x, y)
    }

    #[target_feature(enable = "avx512f")]
    pub fn rows_avx512(alpha: f32, x: &[f32], w: &[f32], rs: usize, y: &mut [f32]) {
        super::rows_body::<true>(alpha, x, w, rs, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn dot_avx2(x: &[f32], y: &[f32]) -> f32 {
        super::dot_body::<true>(x, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn rows_avx2(alpha: f32, x: &[f32], w: &[f32], rs: usize, y: &mut [f32]) {
        super::rows_body::<true>(alpha, x, w, rs, y)
    }
}

/// The instruction set the vector loops run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The best instruction set of this CPU (detected once).
pub(crate) fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    })
}

fn dot(isa: Isa, x: &[f32], y: &[f32]) -> f32 {
    match isa {
        Isa::Portable => dot_body::<false>(x, y),
        // SAFETY: `Isa::Avx512` is only chosen when the CPU reports avx512f.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::dot_avx512(x, y) },
        // SAFETY: `Isa::Avx2` is only chosen when the CPU reports avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dot_avx2(x, y) },
    }
}

fn rows(isa: Isa, alpha: f32, x: &[f32], w: &[f32], rs: usize, y: &mut [f32]) {
    match isa {
        Isa::Portable => rows_body::<false>(alpha, x, w, rs, y),
        // SAFETY: `Isa::Avx512` is only chosen when the CPU reports avx512f.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::rows_avx512(alpha, x, w, rs, y) },
        // SAFETY: `Isa::Avx2` is only chosen when the CPU reports avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::rows_avx2(alpha, x, w, rs, y) },
    }
}

/// `c = beta c` (with `beta = 0` overwriting, NaN included) over a strided vector.
fn scale(c: &mut [f32], len: usize, stride: usize, beta: f32) {
    for i in 0..len {
        let v = &mut c[i * stride];
        *v = if beta == 0.0 { 0.0 } else { beta * *v };
    }
}

/// Handles `C = alpha A B + beta C` when `C` is a single row or column and the operands are
/// laid out for a contiguous inner loop; returns `false` (touching nothing) otherwise.
pub(crate) fn try_gemv(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut MatMut<'_>) -> bool {
    try_gemv_with(isa(), alpha, a, b, beta, c)
}

pub(crate) fn try_gemv_with(isa: Isa, alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut MatMut<'_>) -> bool {
    // A column result is the transposed problem: C^T = B^T A^T.
    let (x, w, len, stride) = if c.rows == 1 && (a.cs == 1 || a.cols == 1) {
        (a, b, c.cols, c.cs)
    } else if c.cols == 1 && (b.rs == 1 || b.rows == 1) {
        (b.t(), a.t(), c.rows, c.rs)
    } else {
        return false;
    };
    // x: 1 x k, contiguous; w: k x len.
    let k = x.cols;
    if k == 0 {
        return false;
    }
    let x = &x.data[..k];
    let work = k.saturating_mul(len);
    if w.rs == 1 {
        // Column j of w is contiguous: one dot product per output.
        let dots = |first: usize, out: &mut [f32], stride: usize| {
            for (j, out) in out.iter_mut().step_by(stride).enumerate() {
                let col = &w.data[(first + j) * w.cs..(first + j) * w.cs + k];
                let v = alpha * dot(isa, x, col);
                *out = if beta == 0.0 { v } else { v + beta * *out };
            }
        };
        if stride == 1 {
            parallel::for_each_piece(&mut c.data[..len], LANES, work, &|first, out| dots(first, out, 1));
        } else {
            dots(0, &mut c.data[..(len - 1) * stride + 1], stride);
        }
        true
    } else if w.cs == 1 && stride == 1 {
        // Row p of w is contiguous: accumulate alpha x_p w_p into the output, each thread its
        // own range of outputs (columns of w).
        scale(c.data, len, 1, beta);
        parallel::for_each_piece(&mut c.data[..len], BLOCK, work, &|first, out| {
            // The last row read ends at (k - 1) rs + first + out.len() <= (k - 1) rs + len, inside
            // `w` (checked by the caller).
            rows(isa, alpha, x, &w.data[first..], w.rs, out);
        });
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] =
                    (0..a.cols).map(|p| a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64).sum();
            }
        }
        out
    }

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.61 + seed).sin()).collect()
    }

    #[test]
    fn every_isa_matches_naive_for_rows_and_columns() {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
        }
        for isa in isas {
            // The last shape is split over the worker threads (`parallel::SPLIT_MIN_WORK`).
            for &(k, n) in &[(1usize, 1usize), (17, 5), (64, 33), (100, 257), (2100, 4100)] {
                let x = data(k, 0.3);
                let w = data(k * n, 1.7);
                // Row vector times W^T given as [n, k] row-major (dense forward): dot products.
                // Row vector times W given as [k, n] row-major (transposed pass): axpys.
                for (b, label) in [(MatRef::row_major(&w, n, k).t(), "dot"), (MatRef::row_major(&w, k, n), "axpy")] {
                    let a = MatRef::row_major(&x, 1, k);
                    let want = naive(a, b);
                    let mut c = vec![f32::NAN; n];
                    assert!(try_gemv_with(isa, 2.0, a, b, 0.0, &mut MatMut::row_major(&mut c, 1, n)));
                    for (g, w) in c.iter().zip(&want) {
                        assert!((*g as f64 - 2.0 * w).abs() < 1e-4 * (1.0 + w.abs()), "{isa:?} {label} {k}x{n}");
                    }
                    // Column form: C^T = B^T a^T with beta = 1 accumulating.
                    let mut ct = vec![1.0; n];
                    assert!(try_gemv_with(isa, 1.0, b.t(), a.t(), 1.0, &mut MatMut::row_major(&mut ct, n, 1)));
                    for (g, w) in ct.iter().zip(&want) {
                        assert!((*g as f64 - (w + 1.0)).abs() < 1e-4 * (1.0 + w.abs()), "{isa:?} {label}^T {k}x{n}");
                    }
                }
            }
        }
    }

    #[test]
    fn declines_non_vector_products() {
        let (a, b) = (vec![1.0; 6], vec![1.0; 6]);
        let mut c = vec![0.0; 4];
        assert!(!try_gemv(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            0.0,
            &mut MatMut::row_major(&mut c, 2, 2)
        ));
    }
}
