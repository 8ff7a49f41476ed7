//! Micro-kernels: one `MR x nu` tile of `C` from one packed panel of `A` and one of `B`.
//!
//! Every kernel computes, for `i < MR` and `j < nu <= NR`,
//! `C[i, j] = alpha * sum_p a[p * MR + i] * b[p * NR + j] + beta * C[i, j]` where `C[i, j]` is
//! `c[j * ldc + i]` (columns of the tile are contiguous), and `beta == 0` overwrites `C` without
//! reading it. The vector dimension runs along `MR`, so a column of the tile is one (AVX-512) or
//! two (AVX2) registers and each `b` value is broadcast.
//!
//! The SIMD kernels are safe `#[target_feature]` functions that check their slice bounds on
//! entry; the only `unsafe` left is the pointer loads and stores inside those bounds, and the
//! calls into them, which are sound because the kernel types below can only be built after the
//! CPU features were detected.

use super::TILE_CAP;

/// A register-blocked micro-kernel with its cache blocking. `MR` rows of `A` per packed panel,
/// `NR` columns of `B` per packed panel.
pub(crate) trait MicroKernel<const MR: usize, const NR: usize>: Copy + std::fmt::Debug {
    /// Depth of one packed block (`A` panel is `KC x MR`, `B` panel `KC x NR`).
    const KC: usize;
    /// Rows of `A` packed at a time (a multiple of `MR`), sized for L2.
    const MC: usize;
    /// Columns of `B` packed at a time (a multiple of `NR`).
    const NC: usize;

    /// The tile update described in the module docs, for the first `nu` columns.
    #[allow(clippy::too_many_arguments)]
    fn tile(&self, nu: usize, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: &mut [f32], ldc: usize);
}

/// Panics unless a tile call stays inside its slices; kernels rely on this before touching
/// memory through raw pointers.
#[inline(always)]
fn check_tile(mr: usize, nr: usize, nu: usize, kc: usize, a: &[f32], b: &[f32], c: &[f32], ldc: usize) {
    assert!((1..=nr).contains(&nu), "sgemm kernel: nu out of range");
    assert!(a.len() >= kc * mr && b.len() >= kc * nr, "sgemm kernel: short packed panel");
    assert!(nu == 1 || ldc >= mr, "sgemm kernel: overlapping tile columns");
    assert!(c.len() >= (nu - 1) * ldc + mr, "sgemm kernel: short C tile");
}

// ---------------------------------------------------------------------------------------------
// Portable kernel
// ---------------------------------------------------------------------------------------------

/// Plain-Rust kernel, `8 x 4`: the fallback on every target.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

const P_MR: usize = 8;
const P_NR: usize = 4;

impl MicroKernel<P_MR, P_NR> for Portable {
    const KC: usize = 256;
    const MC: usize = 256;
    const NC: usize = 4080;

    fn tile(&self, nu: usize, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: &mut [f32], ldc: usize) {
        check_tile(P_MR, P_NR, nu, kc, a, b, c, ldc);
        let mut acc = [[0.0f32; P_MR]; P_NR];
        for (ap, bp) in a[..kc * P_MR].chunks_exact(P_MR).zip(b[..kc * P_NR].chunks_exact(P_NR)) {
            for (accj, &bj) in acc.iter_mut().zip(bp) {
                for (s, &ai) in accj.iter_mut().zip(ap) {
                    *s += ai * bj;
                }
            }
        }
        for (j, accj) in acc.iter().enumerate().take(nu) {
            let col = &mut c[j * ldc..j * ldc + P_MR];
            for (dst, &s) in col.iter_mut().zip(accj) {
                *dst = if beta == 0.0 { alpha * s } else { alpha * s + beta * *dst };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// x86_64 SIMD kernels
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2Fma, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MicroKernel, check_tile};
    use std::arch::x86_64::*;

    /// Expands to a `match` on `nu` that calls `$f::<.., nu>` for each listed width, so every
    /// partial width gets its own fully unrolled kernel instead of padding with zero columns.
    macro_rules! by_width {
        ($nu:expr, [$($w:literal),*], |$n:ident| $call:expr) => {
            match $nu {
                $($w => { const $n: usize = $w; $call })*
                _ => unreachable!("nu checked by check_tile"),
            }
        };
    }

    /// AVX-512F kernel, `32 x 8`: two zmm of `A` per step, 16 zmm accumulators.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512 {
        _detected: (),
    }

    pub(in crate::kernels::sgemm) const Z_MV: usize = 2;
    pub(in crate::kernels::sgemm) const Z_MR: usize = 16 * Z_MV;
    pub(in crate::kernels::sgemm) const Z_NR: usize = 8;

    impl Avx512 {
        /// The kernel, if this CPU has AVX-512F.
        pub(crate) fn detect() -> Option<Self> {
            is_x86_feature_detected!("avx512f").then_some(Avx512 { _detected: () })
        }
    }

    impl MicroKernel<Z_MR, Z_NR> for Avx512 {
        const KC: usize = 256;
        const MC: usize = 384;
        const NC: usize = 4080;

        #[inline]
        fn tile(&self, nu: usize, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: &mut [f32], ldc: usize) {
            check_tile(Z_MR, Z_NR, nu, kc, a, b, c, ldc);
            by_width!(nu, [1, 2, 3, 4, 5, 6, 7, 8], |NU| {
                // SAFETY: `Avx512` is only built by `detect`, after checking that the CPU has
                // AVX-512F, which is the only feature `avx512_tile` enables.
                unsafe { avx512_tile::<Z_MV, Z_NR, NU>(kc, a, b, alpha, beta, c, ldc) }
            })
        }
    }

    /// `MV * 16 x NU` tile from a `KC x MV*16` panel of `A` and a `KC x NR` panel of `B`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    fn avx512_tile<const MV: usize, const NR: usize, const NU: usize>(
        kc: usize,
        a: &[f32],
        b: &[f32],
        alpha: f32,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        const L: usize = 16;
        let mr = MV * L;
        check_tile(mr, NR, NU, kc, a, b, c, ldc);
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); MV]; NU];
        for p in 0..kc {
            let mut av = [_mm512_setzero_ps(); MV];
            for v in 0..MV {
                // SAFETY: `p < kc` and `v * L + L <= mr`, so the 16 floats read lie inside
                // `a[..kc * mr]`, which `check_tile` verified.
                av[v] = unsafe { _mm512_loadu_ps(ap.add(p * mr + v * L)) };
            }
            for j in 0..NU {
                // SAFETY: `p < kc` and `j < NU <= NR`, so the index is below `kc * NR <= b.len()`.
                let bj = _mm512_set1_ps(unsafe { *bp.add(p * NR + j) });
                for v in 0..MV {
                    acc[j][v] = _mm512_fmadd_ps(av[v], bj, acc[j][v]);
                }
            }
        }
        let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
        let cp = c.as_mut_ptr();
        for j in 0..NU {
            for v in 0..MV {
                let r = _mm512_mul_ps(acc[j][v], va);
                // SAFETY: `j * ldc + v * L + L <= (NU - 1) * ldc + mr <= c.len()` (checked by
                // `check_tile`), and `c` is borrowed mutably, so nothing else aliases it.
                unsafe {
                    let dst = cp.add(j * ldc + v * L);
                    let r = if beta == 0.0 { r } else { _mm512_fmadd_ps(_mm512_loadu_ps(dst), vb, r) };
                    _mm512_storeu_ps(dst, r);
                }
            }
        }
    }

    /// AVX2 + FMA kernel, `16 x 6`: two ymm of `A` per step, 12 ymm accumulators.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2Fma {
        _detected: (),
    }

    pub(in crate::kernels::sgemm) const Y_MV: usize = 2;
    pub(in crate::kernels::sgemm) const Y_MR: usize = 8 * Y_MV;
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
        const NC: usize = 4080;

        #[inline]
        fn tile(&self, nu: usize, kc: usize, a: &[f32], b: &[f32], alpha: f32, beta: f32, c: &mut [f32], ldc: usize) {
            check_tile(Y_MR, Y_NR, nu, kc, a, b, c, ldc);
            by_width!(nu, [1, 2, 3, 4, 5, 6], |NU| {
                // SAFETY: `Avx2Fma` is only built by `detect`, after checking that the CPU has
                // AVX2 and FMA, the features `avx2_tile` enables.
                unsafe { avx2_tile::<Y_MV, Y_NR, NU>(kc, a, b, alpha, beta, c, ldc) }
            })
        }
    }

    /// `MV * 8 x NU` tile from a `KC x MV*8` panel of `A` and a `KC x NR` panel of `B`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    fn avx2_tile<const MV: usize, const NR: usize, const NU: usize>(
        kc: usize,
        a: &[f32],
        b: &[f32],
        alpha: f32,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        const L: usize = 8;
        let mr = MV * L;
        check_tile(mr, NR, NU, kc, a, b, c, ldc);
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); MV]; NU];
        for p in 0..kc {
            let mut av = [_mm256_setzero_ps(); MV];
            for v in 0..MV {
                // SAFETY: `p < kc` and `v * L + L <= mr`, so the 8 floats read lie inside
                // `a[..kc * mr]`, which `check_tile` verified.
                av[v] = unsafe { _mm256_loadu_ps(ap.add(p * mr + v * L)) };
            }
            for j in 0..NU {
                // SAFETY: `p < kc` and `j < NU <= NR`, so the index is below `kc * NR <= b.len()`.
                let bj = _mm256_set1_ps(unsafe { *bp.add(p * NR + j) });
                for v in 0..MV {
                    acc[j][v] = _mm256_fmadd_ps(av[v], bj, acc[j][v]);
                }
            }
        }
        let (va, vb) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
        let cp = c.as_mut_ptr();
        for j in 0..NU {
            for v in 0..MV {
                let r = _mm256_mul_ps(acc[j][v], va);
                // SAFETY: `j * ldc + v * L + L <= (NU - 1) * ldc + mr <= c.len()` (checked by
                // `check_tile`), and `c` is borrowed mutably, so nothing else aliases it.
                unsafe {
                    let dst = cp.add(j * ldc + v * L);
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
const _: () = assert!(PACK_A_LEN % 16 == 0);
const _: () = assert!(P_MR * P_NR <= TILE_CAP && Portable::MC % P_MR == 0 && Portable::NC % P_NR == 0);
#[cfg(target_arch = "x86_64")]
const _: () = {
    use x86::*;
    assert!(Z_MR * Z_NR <= TILE_CAP && Avx512::MC % Z_MR == 0 && Avx512::NC % Z_NR == 0);
    assert!(Y_MR * Y_NR <= TILE_CAP && Avx2Fma::MC % Y_MR == 0 && Avx2Fma::NC % Y_NR == 0);
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every width `nu`, several depths and both a tight and a padded `ldc`, against a float64
    /// loop; entries of `c` outside the tile must stay untouched, and `beta == 0` must ignore NaN.
    fn check_kernel<const MR: usize, const NR: usize, K: MicroKernel<MR, NR>>(kern: K) {
        for kc in [1, 2, 7, 64, 257] {
            let a: Vec<f32> = (0..kc * MR).map(|i| ((i * 7 + 3) % 23) as f32 * 0.25 - 2.5).collect();
            let b: Vec<f32> = (0..kc * NR).map(|i| ((i * 5 + 1) % 19) as f32 * 0.5 - 4.0).collect();
            for nu in 1..=NR {
                for ldc in [MR, MR + 3] {
                    for (alpha, beta) in [(1.0f32, 0.0f32), (-0.75, 0.0), (2.0, 0.5), (1.0, 1.0)] {
                        let len = (NR - 1) * ldc + MR + 2;
                        let init = |i: usize| if beta == 0.0 { f32::NAN } else { (i % 13) as f32 - 6.0 };
                        let mut c: Vec<f32> = (0..len).map(init).collect();
                        kern.tile(nu, kc, &a, &b, alpha, beta, &mut c, ldc);
                        for (idx, &got) in c.iter().enumerate() {
                            let (j, i) = (idx / ldc, idx % ldc);
                            if j < nu && i < MR {
                                let dot: f64 = (0..kc).map(|p| a[p * MR + i] as f64 * b[p * NR + j] as f64).sum();
                                let old = if beta == 0.0 { 0.0 } else { beta as f64 * init(idx) as f64 };
                                let want = alpha as f64 * dot + old;
                                assert!(
                                    (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                    "{kern:?} kc {kc} nu {nu} ldc {ldc} ({i}, {j}): {got} vs {want}"
                                );
                            } else {
                                assert_eq!(
                                    got.to_bits(),
                                    init(idx).to_bits(),
                                    "{kern:?} wrote outside the tile at {idx}"
                                );
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
    fn kernel_rejects_short_c() {
        let (a, b) = ([1.0f32; P_MR], [1.0f32; P_NR]);
        let mut c = [0.0f32; P_MR + 1];
        Portable.tile(2, 1, &a, &b, 1.0, 0.0, &mut c, P_MR);
    }
}
