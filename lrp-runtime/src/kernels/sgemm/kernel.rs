//! Micro-kernels: one `mu x nu` tile of `C` (at most `MR x NR`) from one packed panel of `A`
//! and one of `B`.
//!
//! Every kernel computes, for `i < mu <= MR` and `j < nu <= NR`,
//! `C[i, j] = alpha * sum_p a[p * MR + i] * b[p * NR + j] + beta * C[i, j]` where `C[i, j]` is
//! `c[j * ldc + i]` (columns of the tile are contiguous), and `beta == 0` overwrites `C` without
//! reading it. Nothing outside the `mu x nu` tile is written. The vector dimension runs along
//! `MR`, so a column of the tile is two registers and each `b` value is broadcast.
//!
//! The kernels write `C` through a [`CTile`], which is only built from a mutable slice it
//! covers (checked) or, by the threaded driver, from a pointer whose tile it owns (an `unsafe`
//! constructor with that contract). The SIMD kernels are safe `#[target_feature]` functions that
//! check their panel bounds on entry; the only `unsafe` left is the pointer loads and stores
//! inside those bounds, and the calls into them, which are sound because the kernel types below
//! can only be built after the CPU features were detected.

use std::marker::PhantomData;

use super::TILE_CAP;
use super::pack;
use crate::kernels::gemm::MatRef;
use crate::kernels::im2col::ConvCols;

/// The `mu x nu` tile of `C` a kernel call writes: element `(i, j)` at `ptr + i + j * ldc`,
/// columns apart by `ldc >= mu` (or a single column), valid for reads and writes and used by
/// nobody else for `'a`.
pub(crate) struct CTile<'a> {
    ptr: *mut f32,
    mu: usize,
    nu: usize,
    ldc: usize,
    _c: PhantomData<&'a mut [f32]>,
}

impl<'a> CTile<'a> {
    /// The tile at the start of `c`; panics unless `c` holds all of it and its columns do not
    /// overlap.
    pub(crate) fn in_slice(c: &'a mut [f32], mu: usize, nu: usize, ldc: usize) -> Self {
        assert!(mu >= 1 && nu >= 1, "sgemm kernel: empty tile");
        assert!(nu == 1 || ldc >= mu, "sgemm kernel: overlapping tile columns");
        let last = (nu - 1).checked_mul(ldc).and_then(|o| o.checked_add(mu - 1));
        assert!(last.is_some_and(|l| l < c.len()), "sgemm kernel: short C tile");
        CTile { ptr: c.as_mut_ptr(), mu, nu, ldc, _c: PhantomData }
    }

    /// The tile at `ptr`.
    ///
    /// # Safety
    /// For `'a`, every `ptr + i + j * ldc` (`i < mu`, `j < nu`) must be valid for reads and
    /// writes of an `f32` and not be accessed through any other pointer or reference; `mu, nu
    /// >= 1`, and `ldc >= mu` unless `nu == 1`.
    pub(crate) unsafe fn from_raw(ptr: *mut f32, mu: usize, nu: usize, ldc: usize) -> Self {
        CTile { ptr, mu, nu, ldc, _c: PhantomData }
    }
}

/// A register-blocked micro-kernel with its cache blocking. `MR` rows of `A` per packed panel,
/// `NR` columns of `B` per packed panel.
pub(crate) trait MicroKernel<const MR: usize, const NR: usize>: Copy + std::fmt::Debug {
    /// Depth of one packed block (`A` panel is `KC x MR`, `B` panel `KC x NR`).
    const KC: usize;
    /// Rows of `A` packed at a time (a multiple of `MR`), sized for L2.
    const MC: usize;
    /// Columns of `B` packed at a time (a multiple of `NR`).
    const NC: usize;

    /// Packs the `rows x depth` block of `a` at `(r0, d0)` into `MR`-row panels
    /// ([`pack::pack_panels`]); kernels override it where they have a faster transpose.
    fn pack_a(&self, dst: &mut [f32], a: MatRef<'_>, r0: usize, d0: usize, rows: usize, depth: usize) {
        pack::pack_panels::<MR>(dst, a, r0, d0, rows, depth);
    }

    /// Packs the `rows x depth` block at `(r0, d0)` of a convolution's implicit columns into
    /// `MR`-row panels ([`pack::pack_conv_panels`]); kernels override it to compile the copies
    /// for their instruction set.
    fn pack_conv(&self, dst: &mut [f32], src: &ConvCols<'_>, r0: usize, d0: usize, rows: usize, depth: usize) {
        pack::pack_conv_panels::<MR>(dst, src, r0, d0, rows, depth);
    }

    /// Packs the `depth x cols` block of `b` at `(d0, c0)` into `NR`-column panels, that is the
    /// transpose `b^T` into `NR`-row panels.
    fn pack_b(&self, dst: &mut [f32], b: MatRef<'_>, d0: usize, c0: usize, depth: usize, cols: usize) {
        pack::pack_panels::<NR>(dst, b.t(), c0, d0, cols, depth);
    }

    /// The tile update described in the module docs, for the `c.mu` rows and `c.nu` columns
    /// of `c` (at most `MR x NR`).
    fn tile(&self, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: CTile<'_>);
}

/// Panics unless a tile call stays inside its panels and its tile fits `MR x NR`; kernels rely
/// on this before touching memory through raw pointers.
#[inline(always)]
fn check_tile(mr: usize, nr: usize, kc: usize, a: &[f32], b: &[f32], c: &CTile<'_>) {
    assert!((1..=mr).contains(&c.mu) && (1..=nr).contains(&c.nu), "sgemm kernel: tile size out of range");
    let holds = |panel: &[f32], r: usize| kc.checked_mul(r).is_some_and(|n| panel.len() >= n);
    assert!(holds(a, mr) && holds(b, nr), "sgemm kernel: short packed panel");
}

/// Writes `alpha * acc + beta * C` (or `alpha * acc` when `beta == 0`) into tile `c`; `acc` is
/// column-major with leading dimension `mr >= c.mu` and holds at least `c.nu` columns.
#[inline(always)]
fn update_scalar(acc: &[f32], mr: usize, alpha: f32, beta: f32, c: CTile<'_>) {
    assert!(mr >= c.mu && acc.len() >= c.nu * mr, "sgemm kernel: short accumulator");
    for (j, accj) in acc.chunks_exact(mr).take(c.nu).enumerate() {
        for (i, &s) in accj[..c.mu].iter().enumerate() {
            // SAFETY: `i < mu` and `j < nu`, inside the tile `CTile` guarantees.
            let dst = unsafe { &mut *c.ptr.add(i + j * c.ldc) };
            *dst = if beta == 0.0 { alpha * s } else { alpha * s + beta * *dst };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Portable kernel
// ---------------------------------------------------------------------------------------------

/// Plain-Rust kernel, `8 x 4`: the reference the packed driver is tested with on every target.
/// No CPU runs it: where neither SIMD kernel applies, products go to [`matrixmultiply`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

const P_MR: usize = 8;
const P_NR: usize = 4;

impl MicroKernel<P_MR, P_NR> for Portable {
    const KC: usize = 256;
    const MC: usize = 256;
    const NC: usize = 2040;

    fn tile(&self, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: CTile<'_>) {
        check_tile(P_MR, P_NR, kc, a, b, &c);
        let mut acc = [0.0f32; P_MR * P_NR];
        for (ap, bp) in a[..kc * P_MR].chunks_exact(P_MR).zip(b[..kc * P_NR].chunks_exact(P_NR)) {
            for (accj, &bj) in acc.chunks_exact_mut(P_MR).zip(bp) {
                for (s, &ai) in accj.iter_mut().zip(ap) {
                    *s += ai * bj;
                }
            }
        }
        update_scalar(&acc, P_MR, alpha, beta, c);
    }
}

// ---------------------------------------------------------------------------------------------
// The `matrixmultiply` crate
// ---------------------------------------------------------------------------------------------

/// `C = alpha A B + beta C` on a whole tile `c` of any size (`A: mu x k`, `B: k x nu`) by
/// `matrixmultiply::sgemm`: its own packing, allocated on every call, and its own kernels (NEON
/// on aarch64, AVX/SSE on x86). `beta == 0` overwrites C. Panics if the shapes disagree or `A`
/// or `B` reach past their slices (checked arithmetic).
pub(crate) fn matrixmultiply(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: CTile<'_>) {
    assert!(a.rows == c.mu && b.cols == c.nu && a.cols == b.rows, "matrixmultiply: dimension mismatch");
    let inside = |m: &MatRef<'_>| super::in_bounds(m.rows, m.cols, m.rs, m.cs, m.data.len());
    assert!(inside(&a) && inside(&b), "matrixmultiply: operand out of bounds");
    // Along an extent of 2 or more, a stride is below its slice's length (`in_bounds`, or the
    // `CTile` contract: one allocation), so it fits `isize`; along an extent of 1 it never
    // multiplies a non-zero index, so 0 will do.
    let stride = |extent: usize, s: usize| if extent > 1 { s as isize } else { isize::try_from(s).unwrap_or(0) };
    let (ars, acs) = (stride(a.rows, a.rs), stride(a.cols, a.cs));
    let (brs, bcs) = (stride(b.rows, b.rs), stride(b.cols, b.cs));
    // SAFETY: every element of A and B lies inside its slice (asserted above, overflow-proof),
    // and each stride passed is exact (see `stride`). `CTile` guarantees that every `c.ptr + i +
    // j ldc` (`i < mu`, `j < nu`) is valid for reads and writes and used by nobody else while
    // `c` lives, and that its columns do not overlap (`ldc >= mu`, or one column): the elements
    // of C are distinct, as matrixmultiply requires, and alias neither A nor B.
    unsafe {
        ::matrixmultiply::sgemm(
            c.mu,
            a.cols,
            c.nu,
            alpha,
            a.data.as_ptr(),
            ars,
            acs,
            b.data.as_ptr(),
            brs,
            bcs,
            beta,
            c.ptr,
            1,
            stride(c.nu, c.ldc),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// x86_64 SIMD kernels
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2Fma, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CTile, ConvCols, MatRef, MicroKernel, check_tile, pack, update_scalar};
    use std::arch::x86_64::*;

    /// Expands to a `match` on `nu` that calls the kernel instantiated for each listed width, so
    /// every partial width gets its own fully unrolled kernel instead of computing zero columns.
    macro_rules! by_width {
        ($nu:expr, [$($w:literal),*], |$n:ident| $call:expr) => {
            match $nu {
                $($w => { const $n: usize = $w; $call })*
                _ => unreachable!("nu checked by check_tile"),
            }
        };
    }

    /// AVX-512F kernel, `32 x 12`: two zmm of `A` per step, 24 zmm accumulators. A ragged last
    /// panel of up to 16 rows runs the one-register variant, and partial vectors of `C` are
    /// read and written under a lane mask.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512 {
        _detected: (),
    }

    const Z_L: usize = 16;
    pub(in crate::kernels::sgemm) const Z_MR: usize = 2 * Z_L;
    pub(in crate::kernels::sgemm) const Z_NR: usize = 12;

    impl Avx512 {
        /// The kernel, if this CPU has AVX-512F.
        pub(crate) fn detect() -> Option<Self> {
            is_x86_feature_detected!("avx512f").then_some(Avx512 { _detected: () })
        }

        /// [`MicroKernel::tile`] for a tile narrower or shorter than `32 x 12`.
        #[inline(never)]
        fn ragged_tile(&self, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: CTile<'_>) {
            check_tile(Z_MR, Z_NR, kc, a, b, &c);
            if c.mu > Z_L {
                by_width!(c.nu, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], |NU| {
                    // SAFETY: `Avx512` is only built by `detect`, after checking that the CPU has
                    // AVX-512F, the only feature `avx512_tile` enables.
                    unsafe { avx512_tile::<2, NU>(kc, a, b, alpha, beta, c) }
                })
            } else {
                by_width!(c.nu, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], |NU| {
                    // SAFETY: as above, `self` proves the CPU has AVX-512F.
                    unsafe { avx512_tile::<1, NU>(kc, a, b, alpha, beta, c) }
                })
            }
        }
    }

    impl MicroKernel<Z_MR, Z_NR> for Avx512 {
        const KC: usize = 384;
        const MC: usize = 384;
        const NC: usize = 2040;

        fn pack_a(&self, dst: &mut [f32], a: MatRef<'_>, r0: usize, d0: usize, rows: usize, depth: usize) {
            pack::pack_panels_avx512::<Z_MR>(*self, dst, a, r0, d0, rows, depth);
        }

        fn pack_b(&self, dst: &mut [f32], b: MatRef<'_>, d0: usize, c0: usize, depth: usize, cols: usize) {
            pack::pack_panels_avx512::<Z_NR>(*self, dst, b.t(), c0, d0, cols, depth);
        }

        fn pack_conv(&self, dst: &mut [f32], src: &ConvCols<'_>, r0: usize, d0: usize, rows: usize, depth: usize) {
            pack::pack_conv_panels_avx512::<Z_MR>(*self, dst, src, r0, d0, rows, depth);
        }

        #[inline(always)]
        fn tile(&self, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: CTile<'_>) {
            if c.mu == Z_MR && c.nu == Z_NR {
                // The full tile, by far the most frequent: straight to its kernel.
                // SAFETY: `Avx512` is only built by `detect`, after checking that the CPU has
                // AVX-512F, the only feature `avx512_tile` enables.
                unsafe { avx512_tile::<2, Z_NR>(kc, a, b, alpha, beta, c) }
            } else {
                self.ragged_tile(kc, a, b, alpha, beta, c);
            }
        }
    }

    /// `mu x NU` tile (`(MV - 1) * 16 < mu <= MV * 16`) from the first `MV * 16` rows of a packed
    /// `KC x 32` panel of `A` and a packed `KC x 12` panel of `B`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
    fn avx512_tile<const MV: usize, const NU: usize>(
        kc: usize,
        a: &[f32],
        b: &[f32],
        alpha: f32,
        beta: f32,
        c: CTile<'_>,
    ) {
        check_tile(Z_MR, Z_NR, kc, a, b, &c);
        let (mu, ldc) = (c.mu, c.ldc);
        assert!(NU == c.nu, "sgemm kernel: nu for NU");
        assert!(MV * Z_L <= Z_MR && (MV - 1) * Z_L < mu && mu <= MV * Z_L, "sgemm kernel: mu for MV");
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); MV]; NU];
        for p in 0..kc {
            let mut av = [_mm512_setzero_ps(); MV];
            for v in 0..MV {
                // SAFETY: `p < kc` and `v * 16 + 16 <= MV * 16 <= Z_MR`, so the 16 floats read lie
                // inside `a[..kc * Z_MR]`, which `check_tile` verified.
                av[v] = unsafe { _mm512_loadu_ps(ap.add(p * Z_MR + v * Z_L)) };
            }
            for j in 0..NU {
                // SAFETY: `p < kc` and `j < NU <= Z_NR`, so the index is below `kc * Z_NR <= b.len()`.
                let bj = _mm512_set1_ps(unsafe { *bp.add(p * Z_NR + j) });
                for v in 0..MV {
                    acc[j][v] = _mm512_fmadd_ps(av[v], bj, acc[j][v]);
                }
            }
        }
        let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
        let cp = c.ptr;
        for v in 0..MV {
            // Rows `v * 16 ..` of the tile hold `lanes >= 1` live entries (by the assert above).
            let lanes = (mu - v * Z_L).min(Z_L);
            let mask: __mmask16 = if lanes == Z_L { !0 } else { (1 << lanes) - 1 };
            for j in 0..NU {
                let r = _mm512_mul_ps(acc[j][v], va);
                // SAFETY: the live lanes are elements `(v * 16 .. v * 16 + lanes, j)` of the tile,
                // `v * 16 + lanes <= mu` and `j < NU = nu`, which `CTile` guarantees valid and
                // unaliased; masked-off lanes are neither read nor written.
                unsafe {
                    let dst = cp.add(j * ldc + v * Z_L);
                    let r = if beta == 0.0 { r } else { _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, dst), vb, r) };
                    _mm512_mask_storeu_ps(dst, mask, r);
                }
            }
        }
    }

    /// AVX2 + FMA kernel, `16 x 6`: two ymm of `A` per step, 12 ymm accumulators. Ragged tiles
    /// go through a stack tile.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2Fma {
        _detected: (),
    }

    const Y_L: usize = 8;
    pub(in crate::kernels::sgemm) const Y_MR: usize = 2 * Y_L;
    pub(in crate::kernels::sgemm) const Y_NR: usize = 6;

    impl Avx2Fma {
        /// The kernel, if this CPU has AVX2 and FMA.
        pub(crate) fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2Fma { _detected: () })
        }
    }

    impl MicroKernel<Y_MR, Y_NR> for Avx2Fma {
        const KC: usize = 256;
        const MC: usize = 384;
        const NC: usize = 2040;

        #[inline]
        fn tile(&self, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: CTile<'_>) {
            check_tile(Y_MR, Y_NR, kc, a, b, &c);
            if c.mu == Y_MR {
                by_width!(c.nu, [1, 2, 3, 4, 5, 6], |NU| {
                    // SAFETY: `Avx2Fma` is only built by `detect`, after checking that the CPU has
                    // AVX2 and FMA, the features `avx2_tile` enables.
                    unsafe { avx2_tile::<NU>(kc, a, b, alpha, beta, c) }
                })
            } else {
                let mut acc = [0.0f32; Y_MR * Y_NR];
                // SAFETY: as above, `self` proves the CPU has AVX2 and FMA.
                unsafe { avx2_tile::<Y_NR>(kc, a, b, 1.0, 0.0, CTile::in_slice(&mut acc, Y_MR, Y_NR, Y_MR)) };
                update_scalar(&acc, Y_MR, alpha, beta, c);
            }
        }
    }

    /// Full `16 x NU` tile from a packed `KC x 16` panel of `A` and a packed `KC x 6` panel of `B`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    fn avx2_tile<const NU: usize>(kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: CTile<'_>) {
        const MV: usize = Y_MR / Y_L;
        check_tile(Y_MR, Y_NR, kc, a, b, &c);
        assert!(c.mu == Y_MR && c.nu == NU, "sgemm kernel: AVX2 tile must be full height and NU wide");
        let ldc = c.ldc;
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); MV]; NU];
        for p in 0..kc {
            let mut av = [_mm256_setzero_ps(); MV];
            for v in 0..MV {
                // SAFETY: `p < kc` and `v * 8 + 8 <= Y_MR`, so the 8 floats read lie inside
                // `a[..kc * Y_MR]`, which `check_tile` verified.
                av[v] = unsafe { _mm256_loadu_ps(ap.add(p * Y_MR + v * Y_L)) };
            }
            for j in 0..NU {
                // SAFETY: `p < kc` and `j < NU <= Y_NR`, so the index is below `kc * Y_NR <= b.len()`.
                let bj = _mm256_set1_ps(unsafe { *bp.add(p * Y_NR + j) });
                for v in 0..MV {
                    acc[j][v] = _mm256_fmadd_ps(av[v], bj, acc[j][v]);
                }
            }
        }
        let (va, vb) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
        let cp = c.ptr;
        for j in 0..NU {
            for v in 0..MV {
                let r = _mm256_mul_ps(acc[j][v], va);
                // SAFETY: elements `(v * 8 .. v * 8 + 8, j)` of the tile, with `v * 8 + 8 <= Y_MR =
                // mu` and `j < NU = nu` (asserted above), which `CTile` guarantees valid and
                // unaliased.
                unsafe {
                    let dst = cp.add(j * ldc + v * Y_L);
                    let r = if beta == 0.0 { r } else { _mm256_fmadd_ps(_mm256_loadu_ps(dst), vb, r) };
                    _mm256_storeu_ps(dst, r);
                }
            }
        }
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Floats of packed `A` the largest `KC x MC` blocking needs.
#[cfg(target_arch = "x86_64")]
pub(crate) const PACK_A_LEN: usize =
    max(Portable::KC * Portable::MC, max(Avx512::KC * Avx512::MC, Avx2Fma::KC * Avx2Fma::MC));
/// Floats of packed `B` the largest `KC x NC` blocking needs.
#[cfg(target_arch = "x86_64")]
pub(crate) const PACK_B_LEN: usize =
    max(Portable::KC * Portable::NC, max(Avx512::KC * Avx512::NC, Avx2Fma::KC * Avx2Fma::NC));
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const PACK_A_LEN: usize = Portable::KC * Portable::MC;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const PACK_B_LEN: usize = Portable::KC * Portable::NC;

// The B panels start right after A's, so A's length keeps them 64-byte aligned.
const _: () = assert!(PACK_A_LEN.is_multiple_of(16));
const _: () =
    assert!(P_MR * P_NR <= TILE_CAP && Portable::MC.is_multiple_of(P_MR) && Portable::NC.is_multiple_of(P_NR));
#[cfg(target_arch = "x86_64")]
const _: () = {
    use x86::*;
    assert!(Z_MR * Z_NR <= TILE_CAP && Y_MR * Y_NR <= TILE_CAP);
    assert!(Avx512::MC.is_multiple_of(Z_MR) && Avx512::NC.is_multiple_of(Z_NR));
    assert!(Avx2Fma::MC.is_multiple_of(Y_MR) && Avx2Fma::NC.is_multiple_of(Y_NR));
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every width `nu`, ragged and full heights `mu`, several depths and both a tight and a
    /// padded `ldc`, against a float64 loop. The kernel gets a `c` slice that ends exactly at the
    /// tile's last element; entries outside the tile must stay untouched, and `beta == 0` must
    /// ignore the NaN already in `c`.
    fn check_kernel<const MR: usize, const NR: usize, K: MicroKernel<MR, NR>>(kern: K) {
        let mut heights = vec![1, 3, MR / 2 - 1, MR / 2, MR / 2 + 1, MR - 1, MR];
        heights.dedup();
        for kc in [1, 2, 7, 64, 257] {
            let a: Vec<f32> = (0..kc * MR).map(|i| ((i * 7 + 3) % 23) as f32 * 0.25 - 2.5).collect();
            let b: Vec<f32> = (0..kc * NR).map(|i| ((i * 5 + 1) % 19) as f32 * 0.5 - 4.0).collect();
            let dots: Vec<f64> = (0..MR * NR)
                .map(|ij| (0..kc).map(|p| a[p * MR + ij % MR] as f64 * b[p * NR + ij / MR] as f64).sum())
                .collect();
            for (&mu, nu) in heights.iter().flat_map(|mu| std::iter::repeat(mu).zip(1..=NR)) {
                for ldc in [mu, MR + 3] {
                    for (alpha, beta) in [(1.0f32, 0.0f32), (-0.75, 0.0), (2.0, 0.5), (1.0, 1.0)] {
                        let len = (NR - 1) * ldc + MR + 2;
                        let init = |i: usize| if beta == 0.0 { f32::NAN } else { (i % 13) as f32 - 6.0 };
                        let mut c: Vec<f32> = (0..len).map(init).collect();
                        kern.tile(kc, &a, &b, alpha, beta, CTile::in_slice(&mut c[..(nu - 1) * ldc + mu], mu, nu, ldc));
                        for (idx, &got) in c.iter().enumerate() {
                            let (j, i) = (idx / ldc, idx % ldc);
                            if j < nu && i < mu {
                                let old = if beta == 0.0 { 0.0 } else { beta as f64 * init(idx) as f64 };
                                let want = alpha as f64 * dots[j * MR + i] + old;
                                assert!(
                                    (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                    "{kern:?} kc {kc} mu {mu} nu {nu} ldc {ldc} ({i}, {j}): {got} vs {want}"
                                );
                            } else {
                                let at = format!("{kern:?} mu {mu} nu {nu} ldc {ldc}: wrote outside the tile at {idx}");
                                assert_eq!(got.to_bits(), init(idx).to_bits(), "{at}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn portable_kernel_matches_reference() {
        check_kernel(Portable);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_fma_kernel_matches_reference() {
        match Avx2Fma::detect() {
            Some(k) => check_kernel(k),
            None => eprintln!("AVX2+FMA not available: kernel not tested"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernel_matches_reference() {
        match Avx512::detect() {
            Some(k) => check_kernel(k),
            None => eprintln!("AVX-512F not available: kernel not tested"),
        }
    }

    #[test]
    #[should_panic(expected = "short C tile")]
    fn tile_with_wrapping_ldc_is_refused() {
        // `(nu - 1) * ldc + mu` is `usize::MAX + 1`: it wrapped to 0, passed the length check,
        // and the kernel wrote its second column `usize::MAX` floats past the slice.
        let mut c = [0.0f32; 2];
        CTile::in_slice(&mut c, 1, 2, usize::MAX);
    }

    #[test]
    #[should_panic(expected = "short C tile")]
    fn kernel_rejects_short_c() {
        let (a, b) = ([1.0f32; P_MR], [1.0f32; P_NR]);
        let mut c = [0.0f32; P_MR + 1];
        Portable.tile(1, &a, &b, 1.0, 0.0, CTile::in_slice(&mut c, P_MR, 2, P_MR));
    }
}
