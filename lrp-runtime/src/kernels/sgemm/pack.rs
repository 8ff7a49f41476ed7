//! Packing: copy a block of a strided matrix into contiguous panels of `R` rows, the layout the
//! micro-kernels stream through. `A` is packed as is into `MR`-row panels; `B` is packed through
//! its transpose into `NR`-row panels (that is, `NR` columns of `B`).
//!
//! Panel `q` holds rows `q R .. q R + R` of the block, depth-major: element `(q R + i, d)` lands
//! at `q R depth + d R + i`. Rows past the end of the block are zero, so the kernels never need
//! to know about a ragged edge in the packed dimension.

use crate::kernels::gemm::MatRef;

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
            pack_unit_depth_stride::<R>(panel, src, i0, d0, depth);
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

/// Full panel, each row contiguous along the depth: a transpose. Blocks of `T` depth steps keep
/// the `R` source rows' reads sequential while the writes fill whole panel columns.
fn pack_unit_depth_stride<const R: usize>(panel: &mut [f32], src: MatRef<'_>, i0: usize, d0: usize, depth: usize) {
    const T: usize = 8;
    let rows: [&[f32]; R] = std::array::from_fn(|i| {
        let s = (i0 + i) * src.rs + d0;
        &src.data[s..s + depth]
    });
    let full = depth / T * T;
    for (blk, out) in panel[..full * R].chunks_exact_mut(T * R).enumerate() {
        let d = blk * T;
        for (i, row) in rows.iter().enumerate() {
            let vals: &[f32; T] = row[d..d + T].try_into().expect("block of T");
            for (t, &v) in vals.iter().enumerate() {
                out[t * R + i] = v;
            }
        }
    }
    for (t, out) in panel[full * R..].chunks_exact_mut(R).enumerate() {
        for (o, row) in out.iter_mut().zip(&rows) {
            *o = row[full + t];
        }
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

    /// Checks the packed layout of every `(r0, d0, rows, depth)` block against direct indexing.
    fn check<const R: usize>(src: MatRef<'_>, r0: usize, d0: usize, rows: usize, depth: usize) {
        let panels = rows.div_ceil(R);
        let mut dst = vec![f32::NAN; panels * R * depth + 3];
        pack_panels::<R>(&mut dst, src, r0, d0, rows, depth);
        for q in 0..panels {
            for d in 0..depth {
                for i in 0..R {
                    let got = dst[q * R * depth + d * R + i];
                    let row = q * R + i;
                    let want = if row < rows { src.data[(r0 + row) * src.rs + (d0 + d) * src.cs] } else { 0.0 };
                    assert_eq!(got.to_bits(), want.to_bits(), "R={R} panel {q} d {d} i {i}");
                }
            }
        }
        assert!(dst[panels * R * depth..].iter().all(|v| v.is_nan()), "wrote past the panels");
    }

    fn each_layout(f: impl Fn(MatRef<'_>)) {
        let (m, k) = (37, 29);
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
            ];
            for &(r0, d0, rows, depth) in &blocks {
                check::<8>(src, r0, d0, rows, depth);
                check::<16>(src, r0, d0, rows, depth);
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
