//! Packing: copy a block of a strided matrix into contiguous panels of `R` rows, the layout the
//! micro-kernels stream through. `A` is packed as is into `MR`-row panels; `B` is packed through
//! its transpose into `NR`-row panels (that is, `NR` columns of `B`).
//!
//! Panel `q` holds rows `q R .. q R + R` of the block, depth-major: element `(q R + i, d)` lands
//! at `q R depth + d R + i`. Rows past the end of the block are zero, so the kernels never need
//! to know about a ragged edge in the packed dimension.

use crate::kernels::gemm::MatRef;
use crate::kernels::im2col::{ConvCols, valid_columns};

/// Kernel widths whose valid output columns [`pack_conv_panels`] computes once per call.
const CACHED_TAPS: usize = 16;

/// `dst = src` for the short runs of [`pack_conv_panels`] (at most a panel), eight floats at a
/// time: a call to `memcpy` would cost more than the copy.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let d: &mut [f32; 8] = d.try_into().expect("chunk of 8");
        *d = s.try_into().expect("chunk of 8");
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Packs the `rows x depth` block at `(r0, d0)` of the implicit `cols^T` of a convolution into
/// panels of `R` rows, reading the image: element `(pos, (c, ki, kj))` is
/// `x[c, oy sh + ki dh - ph, ox sw + kj dw - pw]` (0 in the padding), `pos = oy ow + ox`.
///
/// The `R` positions of a panel are cut into runs along output rows; for every tap, each run is
/// one contiguous copy of an input row (stride 1) or a strided gather, zero where it reads
/// padding. Panics if `dst` is too short or the block lies outside `src`.
pub(super) fn pack_conv_panels<const R: usize>(
    dst: &mut [f32],
    src: &ConvCols<'_>,
    r0: usize,
    d0: usize,
    rows: usize,
    depth: usize,
) {
    pack_conv_body::<R>(dst, src, r0, d0, rows, depth);
}

/// [`pack_conv_panels`] compiled for AVX-512 (its copies move whole panels in two registers);
/// the [`Avx512`](super::kernel::Avx512) value proves the CPU has it.
#[cfg(target_arch = "x86_64")]
pub(super) fn pack_conv_panels_avx512<const R: usize>(
    _cpu: super::kernel::Avx512,
    dst: &mut [f32],
    src: &ConvCols<'_>,
    r0: usize,
    d0: usize,
    rows: usize,
    depth: usize,
) {
    // SAFETY: an `Avx512` value is only built after detecting AVX-512F, the only feature
    // `pack_conv_avx512` enables.
    unsafe { x86::pack_conv_avx512::<R>(dst, src, r0, d0, rows, depth) }
}

/// The body of [`pack_conv_panels`], inlined into each instruction-set variant.
#[inline(always)]
fn pack_conv_body<const R: usize>(
    dst: &mut [f32],
    src: &ConvCols<'_>,
    r0: usize,
    d0: usize,
    rows: usize,
    depth: usize,
) {
    let g = &src.g;
    let (ow, (kh, kw)) = (g.out_w(), (g.kernel[0], g.kernel[1]));
    let (in_h, in_w, plane) = (g.in_h, g.in_w, g.in_h * g.in_w);
    assert!(r0 + rows <= src.count && d0 + depth <= src.taps(), "pack: block outside the convolution's columns");
    let panel_len = R * depth;
    if panel_len == 0 {
        return;
    }
    let mut cached = [(0, 0, 0); CACHED_TAPS];
    if kw <= CACHED_TAPS {
        cached.iter_mut().take(kw).enumerate().for_each(|(kj, v)| *v = valid_columns(g, kj));
    }
    let columns = |kj: usize| if kw <= CACHED_TAPS { cached[kj] } else { valid_columns(g, kj) };
    for (q, panel) in dst[..rows.div_ceil(R) * panel_len].chunks_exact_mut(panel_len).enumerate() {
        let live = (rows - q * R).min(R);
        // Runs `(oy, ox, offset in the panel, length)` of positions along one output row.
        let mut runs = [(0, 0, 0, 0); R];
        let (mut n_runs, mut off) = (0, 0);
        while off < live {
            let pos = src.first + r0 + q * R + off;
            let (oy, ox) = (pos / ow, pos % ow);
            let len = (ow - ox).min(live - off);
            runs[n_runs] = (oy, ox, off, len);
            (n_runs, off) = (n_runs + 1, off + len);
        }
        let (mut c, mut ki, mut kj) = ((d0 / kw) / kh, (d0 / kw) % kh, d0 % kw);
        for out in panel.chunks_exact_mut(R) {
            out[live..].fill(0.0);
            let (lo, hi, x0) = columns(kj);
            let image = &src.input[c * plane..(c + 1) * plane];
            for &(oy, ox, off, len) in &runs[..n_runs] {
                let out = &mut out[off..off + len];
                let y = (oy * g.stride[0] + ki * g.dilation[0]).checked_sub(g.padding[0]).filter(|&y| y < in_h);
                // Output columns of this run that read the image: `a..b`.
                let a = ox.max(lo).min(ox + len);
                let b = (ox + len).min(hi).max(a);
                let Some(y) = y.filter(|_| a < b) else {
                    out.fill(0.0);
                    continue;
                };
                let line = &image[y * in_w..(y + 1) * in_w];
                let x = x0 + (a - lo) * g.stride[1];
                if g.stride[1] == 1 && len == R && a == ox && b == ox + R {
                    // The common case: a whole panel inside the image, fixed-size copy.
                    let whole: &mut [f32; R] = out.try_into().expect("run of R");
                    *whole = line[x..x + R].try_into().expect("R floats");
                    continue;
                }
                out[..a - ox].fill(0.0);
                out[b - ox..].fill(0.0);
                if g.stride[1] == 1 {
                    copy_short(&mut out[a - ox..b - ox], &line[x..x + (b - a)]);
                } else {
                    for (o, xi) in out[a - ox..b - ox].iter_mut().zip((x..).step_by(g.stride[1])) {
                        *o = line[xi];
                    }
                }
            }
            kj += 1;
            if kj == kw {
                (kj, ki) = (0, ki + 1);
                if ki == kh {
                    (ki, c) = (0, c + 1);
                }
            }
        }
    }
}

/// Packs the `rows x depth` block of `src` whose top-left element is `(r0, d0)` into panels of
/// `R` rows at the start of `dst` (`rows.div_ceil(R) * R * depth` floats).
///
/// Panics if `dst` is too short or the block reaches past `src.data`.
pub(super) fn pack_panels<const R: usize>(
    dst: &mut [f32],
    src: MatRef<'_>,
    r0: usize,
    d0: usize,
    rows: usize,
    depth: usize,
) {
    pack_panels_with::<R>(dst, src, r0, d0, rows, depth, transpose_scalar::<R>);
}

/// [`pack_panels`] with the AVX-512 transpose for panels whose rows are contiguous along the
/// depth; the [`Avx512`](super::kernel::Avx512) value proves the CPU has it.
#[cfg(target_arch = "x86_64")]
pub(super) fn pack_panels_avx512<const R: usize>(
    _cpu: super::kernel::Avx512,
    dst: &mut [f32],
    src: MatRef<'_>,
    r0: usize,
    d0: usize,
    rows: usize,
    depth: usize,
) {
    pack_panels_with::<R>(dst, src, r0, d0, rows, depth, |panel, rows| {
        // SAFETY: an `Avx512` value is only built after detecting AVX-512F, the only feature
        // `transpose_avx512` enables.
        unsafe { x86::transpose_avx512::<R>(panel, rows) }
    });
}

/// The panel loop, with `transpose` packing full panels whose rows are contiguous along the depth.
fn pack_panels_with<const R: usize>(
    dst: &mut [f32],
    src: MatRef<'_>,
    r0: usize,
    d0: usize,
    rows: usize,
    depth: usize,
    transpose: impl Fn(&mut [f32], &[&[f32]; R]),
) {
    let panel_len = R * depth;
    let panels = rows.div_ceil(R);
    if panel_len == 0 {
        return;
    }
    for (q, panel) in dst[..panels * panel_len].chunks_exact_mut(panel_len).enumerate() {
        let (i0, rr) = (r0 + q * R, (rows - q * R).min(R));
        if rr == R && src.rs == 1 {
            pack_unit_row_stride::<R>(panel, src, i0, d0);
        } else if rr == R && src.cs == 1 {
            let rows: [&[f32]; R] = std::array::from_fn(|i| {
                let s = (i0 + i) * src.rs + d0;
                &src.data[s..s + depth]
            });
            transpose(panel, &rows);
        } else {
            pack_strided::<R>(panel, src, i0, d0, rr);
        }
    }
}

/// Full panel, the `R` rows of each depth step contiguous in `src`: one copy per step.
fn pack_unit_row_stride<const R: usize>(panel: &mut [f32], src: MatRef<'_>, i0: usize, d0: usize) {
    for (d, out) in panel.chunks_exact_mut(R).enumerate() {
        let s = i0 + (d0 + d) * src.cs;
        out.copy_from_slice(&src.data[s..s + R]);
    }
}

/// Full panel from `R` rows contiguous along the depth (all of length `depth`): a transpose,
/// `panel[d * R + i] = rows[i][d]`.
fn transpose_scalar<const R: usize>(panel: &mut [f32], rows: &[&[f32]; R]) {
    let depth = rows.first().map_or(0, |r| r.len());
    for (d, out) in panel[..depth * R].chunks_exact_mut(R).enumerate() {
        for (o, row) in out.iter_mut().zip(rows) {
            *o = row[d];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ConvCols;
    use std::arch::x86_64::*;

    /// [`super::pack_conv_body`] with AVX-512F enabled.
    #[target_feature(enable = "avx512f")]
    pub(super) fn pack_conv_avx512<const R: usize>(
        dst: &mut [f32],
        src: &ConvCols<'_>,
        r0: usize,
        d0: usize,
        rows: usize,
        depth: usize,
    ) {
        super::pack_conv_body::<R>(dst, src, r0, d0, rows, depth);
    }

    /// `panel[d * R + i] = rows[i][d]` for rows of equal length, 16 x 16 blocks at a time in
    /// registers. A last group of fewer than 16 rows (`R` not a multiple of 16) is transposed
    /// with zero rows below it and stored under a lane mask.
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose_avx512<const R: usize>(panel: &mut [f32], rows: &[&[f32]; R]) {
        const L: usize = 16;
        let depth = rows.first().map_or(0, |r| r.len());
        assert!(rows.iter().all(|r| r.len() == depth), "transpose_avx512: ragged rows");
        let full = depth / L * L;
        for (blk, out) in panel[..full * R].chunks_exact_mut(L * R).enumerate() {
            let d = blk * L;
            for h in (0..R).step_by(L) {
                let live = (R - h).min(L);
                let mut r = [_mm512_setzero_ps(); L];
                for (i, v) in r.iter_mut().enumerate().take(live) {
                    let src: &[f32; L] = rows[h + i][d..d + L].try_into().expect("16 floats");
                    // SAFETY: `src` is exactly the 16 floats the load reads.
                    *v = unsafe { _mm512_loadu_ps(src.as_ptr()) };
                }
                let mask: __mmask16 = if live == L { !0 } else { (1 << live) - 1 };
                for (t, v) in transpose16(r).into_iter().enumerate() {
                    let dst = &mut out[t * R + h..t * R + h + live];
                    // SAFETY: the mask enables exactly the first `live` lanes, which are the
                    // `live` floats of `dst` (borrowed mutably); masked-off lanes are not written.
                    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, v) };
                }
            }
        }
        for (t, out) in panel[full * R..depth * R].chunks_exact_mut(R).enumerate() {
            for (o, row) in out.iter_mut().zip(rows) {
                *o = row[full + t];
            }
        }
    }

    /// Transposes a 16 x 16 block held as 16 row registers: output `t` is column `t`.
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // Interleave row pairs: a[2k] lane l = (r2k[4l], r2k+1[4l], r2k[4l+1], r2k+1[4l+1]), a[2k+1]
        // the same for columns 4l+2, 4l+3.
        let mut a = [_mm512_setzero_ps(); 16];
        for k in 0..8 {
            a[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            a[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        // b[4k + c] lane l = column 4l + c of rows 4k .. 4k + 4.
        let mut b = [_mm512_setzero_ps(); 16];
        for k in 0..4 {
            let x: [__m512d; 4] = std::array::from_fn(|i| _mm512_castps_pd(a[4 * k + i]));
            b[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(x[0], x[2]));
            b[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x[0], x[2]));
            b[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(x[1], x[3]));
            b[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(x[1], x[3]));
        }
        // Gather lane l of b[c], b[4 + c], b[8 + c], b[12 + c] into column 4l + c.
        let mut o = [_mm512_setzero_ps(); 16];
        for c in 0..4 {
            let c0 = _mm512_shuffle_f32x4::<0x88>(b[c], b[4 + c]);
            let c1 = _mm512_shuffle_f32x4::<0xdd>(b[c], b[4 + c]);
            let d0 = _mm512_shuffle_f32x4::<0x88>(b[8 + c], b[12 + c]);
            let d1 = _mm512_shuffle_f32x4::<0xdd>(b[8 + c], b[12 + c]);
            o[c] = _mm512_shuffle_f32x4::<0x88>(c0, d0);
            o[4 + c] = _mm512_shuffle_f32x4::<0x88>(c1, d1);
            o[8 + c] = _mm512_shuffle_f32x4::<0xdd>(c0, d0);
            o[12 + c] = _mm512_shuffle_f32x4::<0xdd>(c1, d1);
        }
        o
    }
}

/// Any strides, and the ragged last panel: element by element, zero past row `rr`.
fn pack_strided<const R: usize>(panel: &mut [f32], src: MatRef<'_>, i0: usize, d0: usize, rr: usize) {
    for (d, out) in panel.chunks_exact_mut(R).enumerate() {
        let base = (d0 + d) * src.cs;
        for (i, o) in out.iter_mut().enumerate() {
            *o = if i < rr { src.data[(i0 + i) * src.rs + base] } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::{Conv2dGeom, geom, im2col};

    /// The implicit `im2col` packer against packing the materialised matrix, for panel heights
    /// of every kernel, blocks at odd offsets, and a view of a sub-range of the positions.
    fn check_conv<const R: usize>(g: &Conv2dGeom) {
        let x: Vec<f32> = (0..g.in_len()).map(|i| (i as f32 * 0.37).sin() + 1.5).collect();
        let (k, p) = (g.col_rows(), g.col_cols());
        let mut cols = vec![0.0; k * p];
        im2col(g, &x, &mut cols);
        let cols_t = MatRef::row_major(&cols, k, p).t();
        let implicit = ConvCols::new(g, &x, 0, g.in_channels);
        for (r0, d0, rows, depth) in [(0, 0, p, k), (1, 2, p - 1, k - 2), (p / 3, k / 2, p - p / 3, k - k / 2)] {
            if rows == 0 || depth == 0 {
                continue;
            }
            let len = rows.div_ceil(R) * R * depth;
            let (mut want, mut got) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            pack_panels::<R>(&mut want, cols_t, r0, d0, rows, depth);
            pack_conv_panels::<R>(&mut got, &implicit, r0, d0, rows, depth);
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "R={R} {g:?} block {r0},{d0}");
            #[cfg(target_arch = "x86_64")]
            if let Some(cpu) = super::super::kernel::Avx512::detect() {
                got.fill(f32::NAN);
                pack_conv_panels_avx512::<R>(cpu, &mut got, &implicit, r0, d0, rows, depth);
                assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "AVX-512 R={R} {g:?}");
            }
            // The same block through a view that starts at position r0.
            let view = implicit.positions_range(r0, p);
            got.fill(f32::NAN);
            pack_conv_panels::<R>(&mut got, &view, 0, d0, rows, depth);
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "R={R} {g:?} view at {r0}");
        }
    }

    #[test]
    fn conv_panels_equal_packed_im2col() {
        let cases = [
            geom(2, 9, 9, [3, 3], [1, 1], [1, 1], [1, 1]),
            geom(3, 5, 70, [3, 3], [1, 1], [1, 1], [1, 1]),
            geom(2, 11, 7, [3, 2], [2, 3], [2, 1], [2, 1]),
            geom(1, 4, 3, [5, 5], [1, 1], [3, 3], [1, 1]),
            geom(2, 6, 20, [1, 17], [1, 1], [0, 8], [1, 1]),
        ];
        for g in &cases {
            check_conv::<4>(g);
            check_conv::<8>(g);
            check_conv::<16>(g);
            check_conv::<32>(g);
        }
    }

    /// Checks the packed layout of one `(r0, d0, rows, depth)` block against direct indexing, for
    /// the portable packer and, where the CPU has it and `R` allows, the AVX-512 one.
    fn check<const R: usize>(src: MatRef<'_>, r0: usize, d0: usize, rows: usize, depth: usize) {
        let panels = rows.div_ceil(R);
        type Packer<'a> = Box<dyn Fn(&mut [f32]) + 'a>;
        let mut packers: Vec<(&str, Packer<'_>)> =
            vec![("portable", Box::new(|dst: &mut [f32]| pack_panels::<R>(dst, src, r0, d0, rows, depth)))];
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = super::super::kernel::Avx512::detect() {
            packers.push((
                "avx512",
                Box::new(move |dst: &mut [f32]| pack_panels_avx512::<R>(cpu, dst, src, r0, d0, rows, depth)),
            ));
        }
        for (name, pack) in &packers {
            let mut dst = vec![f32::NAN; panels * R * depth + 3];
            pack(&mut dst);
            for q in 0..panels {
                for d in 0..depth {
                    for i in 0..R {
                        let got = dst[q * R * depth + d * R + i];
                        let row = q * R + i;
                        let want = if row < rows { src.data[(r0 + row) * src.rs + (d0 + d) * src.cs] } else { 0.0 };
                        assert_eq!(got.to_bits(), want.to_bits(), "{name} R={R} panel {q} d {d} i {i}");
                    }
                }
            }
            assert!(dst[panels * R * depth..].iter().all(|v| v.is_nan()), "{name} wrote past the panels");
        }
    }

    fn each_layout(f: impl Fn(MatRef<'_>)) {
        let (m, k) = (70, 53);
        let data: Vec<f32> = (0..(m + 2) * (k + 3)).map(|i| i as f32 + 0.5).collect();
        // Row-major, column-major, padded leading dimension both ways, and a general stride.
        f(MatRef { data: &data, rows: m, cols: k, rs: k, cs: 1 });
        f(MatRef { data: &data, rows: m, cols: k, rs: 1, cs: m });
        f(MatRef { data: &data, rows: m, cols: k, rs: k + 3, cs: 1 });
        f(MatRef { data: &data, rows: m, cols: k, rs: 1, cs: m + 2 });
        f(MatRef { data: &data, rows: m / 2, cols: k / 2, rs: 2 * k, cs: 2 });
    }

    #[test]
    fn pack_panels_layout_and_zero_padding() {
        each_layout(|src| {
            let blocks = [
                (0, 0, src.rows, src.cols),
                (3, 5, src.rows - 3, 7.min(src.cols - 5)),
                (1, 2, 9.min(src.rows - 1), 17.min(src.cols - 2)),
                (1, 2, src.rows - 1, src.cols - 2),
            ];
            for &(r0, d0, rows, depth) in &blocks {
                check::<8>(src, r0, d0, rows, depth);
                check::<16>(src, r0, d0, rows, depth);
                check::<32>(src, r0, d0, rows, depth);
                check::<12>(src, r0, d0, rows, depth);
                check::<6>(src, r0, d0, rows, depth);
                check::<4>(src, r0, d0, rows, depth);
                check::<1>(src, r0, d0, rows, depth);
            }
        });
    }

    #[test]
    fn pack_panels_empty_block() {
        let data = [1.0f32; 4];
        let src = MatRef::row_major(&data, 2, 2);
        let mut dst = [f32::NAN; 8];
        pack_panels::<4>(&mut dst, src, 0, 0, 2, 0);
        pack_panels::<4>(&mut dst, src, 0, 0, 0, 2);
        assert!(dst.iter().all(|v| v.is_nan()));
    }
}
