//! Sets of objects, as a Relation Network reads an image: a feature map read as the set of its
//! cells with their coordinates ([`objects`]), every ordered pair of a set with a vector
//! appended to each ([`pairs`]), and the sum over a set ([`set_sum`]); each with its relevance
//! and gradient. Samples lie back to back; every function checks its lengths (checked
//! arithmetic) and returns an error naming `what` on a mismatch.

use super::elementwise::stabilize;
use crate::error::{Error, Result, check_len};

/// `a * b`, or [`Error::SizeOverflow`] naming `what`.
fn mul(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::SizeOverflow { what: what.to_string() })
}

/// Coordinate `i` of `len` cells scaled to `[-1, 1]`: `-1 + 2 i / (len - 1)`, 0 for one cell.
fn coordinate(i: usize, len: usize) -> f32 {
    if len <= 1 { 0.0 } else { -1.0 + 2.0 * i as f32 / (len - 1) as f32 }
}

/// Elements of one sample of `[C, H, W]` and of its `[H W, C + 2]` objects.
fn object_lens(what: &str, (c, h, w): (usize, usize, usize)) -> Result<(usize, usize)> {
    let cells = mul(what, h, w)?;
    Ok((mul(what, c, cells)?, mul(what, cells, c.saturating_add(2))?))
}

/// The objects of `n` feature maps `x [C, H, W]`: `out [H W, C + 2]`, object `k = y W + x`
/// holding the cell's `C` features, then its column and row as coordinates in `[-1, 1]`.
pub fn objects(what: &str, dims: (usize, usize, usize), x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    let (c, h, w) = dims;
    let (in_len, out_len) = object_lens(what, dims)?;
    check_len(what, mul(what, n, in_len)?, x.len())?;
    check_len(what, mul(what, n, out_len)?, out.len())?;
    let cells = h * w;
    // By sample index, not by zipping chunks: with `C = 0` the inputs are empty but the
    // coordinates are not.
    for s in 0..n {
        let (xs, os) = (&x[s * in_len..(s + 1) * in_len], &mut out[s * out_len..(s + 1) * out_len]);
        for (k, o) in os.chunks_exact_mut(c + 2).enumerate() {
            for (ch, v) in o[..c].iter_mut().enumerate() {
                *v = xs[ch * cells + k];
            }
            (o[c], o[c + 1]) = (coordinate(k % w, w), coordinate(k / w, h));
        }
    }
    Ok(())
}

/// Relevance (or gradient) of `n` feature maps from that of their objects: each object's
/// features go back to its cell; what its two coordinates received goes to `coords [H W, 2]`,
/// so that none is lost silently.
pub fn objects_back(
    what: &str,
    dims: (usize, usize, usize),
    r_out: &[f32],
    n: usize,
    r_in: &mut [f32],
    coords: &mut [f32],
) -> Result<()> {
    let (c, h, w) = dims;
    let (in_len, out_len) = object_lens(what, dims)?;
    let cells = h * w;
    check_len(what, mul(what, n, out_len)?, r_out.len())?;
    check_len(what, mul(what, n, in_len)?, r_in.len())?;
    check_len(what, mul(what, n, mul(what, cells, 2)?)?, coords.len())?;
    for s in 0..n {
        let os = &r_out[s * out_len..(s + 1) * out_len];
        let (xs, cs) = (&mut r_in[s * in_len..(s + 1) * in_len], &mut coords[s * 2 * cells..(s + 1) * 2 * cells]);
        for (k, (o, co)) in os.chunks_exact(c + 2).zip(cs.chunks_exact_mut(2)).enumerate() {
            for (ch, &v) in o[..c].iter().enumerate() {
                xs[ch * cells + k] = v;
            }
            co.copy_from_slice(&o[c..]);
        }
    }
    Ok(())
}

/// Gradient x input of the objects' coordinates: in each of `n` samples, object `k`'s two
/// gradients `coords [H W, 2]` times its coordinates `x`, `y` (as [`objects`] computes them).
pub fn times_coordinates(what: &str, (h, w): (usize, usize), coords: &mut [f32], n: usize) -> Result<()> {
    let per_sample = mul(what, mul(what, h, w)?, 2)?;
    check_len(what, mul(what, n, per_sample)?, coords.len())?;
    for sample in coords.chunks_exact_mut(per_sample.max(1)) {
        for (k, c) in sample.chunks_exact_mut(2).enumerate() {
            c[0] *= coordinate(k % w, w);
            c[1] *= coordinate(k / w, h);
        }
    }
    Ok(())
}

/// Elements of one sample of the pairs of `count` objects of `d` features with a `q`-vector.
fn pair_len(what: &str, count: usize, d: usize, q: usize) -> Result<usize> {
    let row = mul(what, d, 2)?.checked_add(q).ok_or_else(|| Error::SizeOverflow { what: what.to_string() })?;
    mul(what, mul(what, count, count)?, row)
}

/// Every ordered pair of `n` sets of `count` objects `[count, d]`, each followed by the
/// sample's `q`-vector (`vector` empty when `q = 0`): row `i count + j` is `o_i, o_j, v`.
pub fn pairs(
    what: &str,
    (count, d, q): (usize, usize, usize),
    objects: &[f32],
    vector: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let (set_len, out_len) = (mul(what, count, d)?, pair_len(what, count, d, q)?);
    check_len(what, mul(what, n, set_len)?, objects.len())?;
    check_len(what, mul(what, n, q)?, vector.len())?;
    check_len(what, mul(what, n, out_len)?, out.len())?;
    let row = 2 * d + q;
    for s in 0..n {
        let (o, v) = (&objects[s * set_len..(s + 1) * set_len], &vector[s * q..(s + 1) * q]);
        let rows = out[s * out_len..(s + 1) * out_len].chunks_exact_mut(row.max(1));
        for (p, r) in rows.enumerate() {
            let (i, j) = (p / count, p % count);
            r[..d].copy_from_slice(&o[i * d..(i + 1) * d]);
            r[d..2 * d].copy_from_slice(&o[j * d..(j + 1) * d]);
            r[2 * d..].copy_from_slice(v);
        }
    }
    Ok(())
}

/// Relevance (or gradient: pairing only copies) of the objects and the vector from that of
/// their pairs: object `i` gets, summed over `j`, what its copy received in row `(i, j)` and in
/// row `(j, i)`; the vector gets the sum over all `count²` rows of what its copies received.
pub fn pairs_back(
    what: &str,
    (count, d, q): (usize, usize, usize),
    r_out: &[f32],
    n: usize,
    r_objects: &mut [f32],
    r_vector: &mut [f32],
) -> Result<()> {
    let (set_len, out_len) = (mul(what, count, d)?, pair_len(what, count, d, q)?);
    check_len(what, mul(what, n, out_len)?, r_out.len())?;
    check_len(what, mul(what, n, set_len)?, r_objects.len())?;
    check_len(what, mul(what, n, q)?, r_vector.len())?;
    let row = 2 * d + q;
    r_objects.fill(0.0);
    r_vector.fill(0.0);
    for s in 0..n {
        let (ro, rv) = (&mut r_objects[s * set_len..(s + 1) * set_len], &mut r_vector[s * q..(s + 1) * q]);
        for (p, r) in r_out[s * out_len..(s + 1) * out_len].chunks_exact(row.max(1)).enumerate() {
            let (i, j) = (p / count, p % count);
            ro[i * d..(i + 1) * d].iter_mut().zip(&r[..d]).for_each(|(a, b)| *a += b);
            ro[j * d..(j + 1) * d].iter_mut().zip(&r[d..2 * d]).for_each(|(a, b)| *a += b);
            rv.iter_mut().zip(&r[2 * d..]).for_each(|(a, b)| *a += b);
        }
    }
    Ok(())
}

/// Checks `x [n, count, d]` and `y [n, d]`; returns the elements of one set.
fn check_set(what: &str, (count, d): (usize, usize), x: usize, y: usize, n: usize) -> Result<usize> {
    let set_len = mul(what, count, d)?;
    check_len(what, mul(what, n, set_len)?, x)?;
    check_len(what, mul(what, n, d)?, y)?;
    Ok(set_len)
}

/// The sum over each of `n` sets `x [count, d]`: `y [d] = Σ_k x_k`, in order.
pub fn set_sum(what: &str, dims: (usize, usize), x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    let set_len = check_set(what, dims, x.len(), y.len(), n)?;
    let d = dims.1;
    // By sample index: an empty set (`count = 0`) still sums to zeros.
    for s in 0..n {
        let (xs, ys) = (&x[s * set_len..(s + 1) * set_len], &mut y[s * d..(s + 1) * d]);
        ys.fill(0.0);
        for xk in xs.chunks_exact(d.max(1)) {
            ys.iter_mut().zip(xk).for_each(|(a, b)| *a += b);
        }
    }
    Ok(())
}

/// Relevance at a set's sum (Zennit's `Norm` rule on its `Sum` layer): each element keeps its
/// share, `R_k = x_k / stab(y) · R_y`, `stab(y) = y + eps sign(y)`.
#[allow(clippy::too_many_arguments)]
pub fn set_sum_relevance(
    what: &str,
    dims: (usize, usize),
    x: &[f32],
    y: &[f32],
    r_out: &[f32],
    n: usize,
    eps: f32,
    r_in: &mut [f32],
) -> Result<()> {
    let set_len = check_set(what, dims, x.len(), y.len(), n)?;
    check_len(what, y.len(), r_out.len())?;
    check_len(what, x.len(), r_in.len())?;
    let d = dims.1.max(1);
    let samples = x.chunks_exact(set_len.max(1)).zip(r_in.chunks_exact_mut(set_len.max(1)));
    for ((xs, rs), (ys, ro)) in samples.zip(y.chunks_exact(d).zip(r_out.chunks_exact(d))) {
        for (xk, rk) in xs.chunks_exact(d).zip(rs.chunks_exact_mut(d)) {
            for (((r, &x), &y), &ro) in rk.iter_mut().zip(xk).zip(ys).zip(ro) {
                *r = x * (ro / stabilize(y, eps));
            }
        }
    }
    Ok(())
}

/// The gradient of a set's sum with respect to each element: `∂L/∂x_k = ∂L/∂y`.
pub fn set_sum_gradient(what: &str, dims: (usize, usize), g_out: &[f32], n: usize, g_in: &mut [f32]) -> Result<()> {
    let set_len = check_set(what, dims, g_in.len(), g_out.len(), n)?;
    let d = dims.1.max(1);
    for (gs, go) in g_in.chunks_exact_mut(set_len.max(1)).zip(g_out.chunks_exact(d)) {
        gs.chunks_exact_mut(d).for_each(|gk| gk.copy_from_slice(go));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + salt * 11) % 23) as f32 / 7.0 - 1.5).collect()
    }

    #[test]
    fn objects_read_cells_with_coordinates_and_give_relevance_back() {
        let (c, h, w, n) = (2, 2, 3, 2);
        let x = values(n * c * h * w, 1);
        let mut out = vec![f32::NAN; n * h * w * (c + 2)];
        objects("objects", (c, h, w), &x, n, &mut out).unwrap();
        for s in 0..n {
            for y in 0..h {
                for xx in 0..w {
                    let o = &out[s * 24 + (y * w + xx) * 4..][..4];
                    assert_eq!(o[0], x[s * 12 + y * w + xx]);
                    assert_eq!(o[1], x[s * 12 + 6 + y * w + xx]);
                    assert_eq!((o[2], o[3]), ([-1.0, 0.0, 1.0][xx], [-1.0, 1.0][y]));
                }
            }
        }
        // Going back: the features return to their cells, the coordinates' share is kept.
        let (mut r_in, mut coords) = (vec![f32::NAN; x.len()], vec![f32::NAN; n * h * w * 2]);
        objects_back("objects", (c, h, w), &out, n, &mut r_in, &mut coords).unwrap();
        assert_eq!(r_in, x);
        let mut times = coords.clone();
        times_coordinates("objects", (h, w), &mut times, n).unwrap();
        assert_eq!(&times[..4], &[-coords[0], -coords[1], 0.0, -coords[3]]);
        let total: f32 = out.iter().sum();
        let kept: f32 = r_in.iter().chain(&coords).sum();
        assert!((total - kept).abs() < 1e-5, "conserved: {total} vs {kept}");
        assert!(objects("objects", (c, h, w), &x[1..], n, &mut out).is_err());
    }

    #[test]
    fn pairs_hold_every_ordered_pair_and_sum_relevance_back_to_each_copy() {
        let (count, d, q, n) = (3, 2, 4, 2);
        let (o, v) = (values(n * count * d, 2), values(n * q, 3));
        let row = 2 * d + q;
        let mut out = vec![f32::NAN; n * count * count * row];
        pairs("pairs", (count, d, q), &o, &v, n, &mut out).unwrap();
        for s in 0..n {
            for i in 0..count {
                for j in 0..count {
                    let r = &out[(s * count * count + i * count + j) * row..][..row];
                    assert_eq!(&r[..d], &o[(s * count + i) * d..][..d]);
                    assert_eq!(&r[d..2 * d], &o[(s * count + j) * d..][..d]);
                    assert_eq!(&r[2 * d..], &v[s * q..(s + 1) * q]);
                }
            }
        }
        // A naive adjoint: every copy's relevance goes back to its source.
        let r = values(out.len(), 4);
        let (mut ro, mut rv) = (vec![f32::NAN; o.len()], vec![f32::NAN; v.len()]);
        pairs_back("pairs", (count, d, q), &r, n, &mut ro, &mut rv).unwrap();
        let (mut want_o, mut want_v) = (vec![0.0f32; o.len()], vec![0.0f32; v.len()]);
        for s in 0..n {
            for p in 0..count * count {
                let (i, j) = (p / count, p % count);
                let rr = &r[(s * count * count + p) * row..][..row];
                for k in 0..d {
                    want_o[(s * count + i) * d + k] += rr[k];
                    want_o[(s * count + j) * d + k] += rr[d + k];
                }
                for k in 0..q {
                    want_v[s * q + k] += rr[2 * d + k];
                }
            }
        }
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(&ro, &want_o) && close(&rv, &want_v));
        let total: f32 = r.iter().sum();
        let kept: f32 = ro.iter().chain(&rv).sum();
        assert!((total - kept).abs() < 1e-4, "conserved: {total} vs {kept}");
        // Without a vector.
        let mut bare = vec![0.0; n * count * count * 2 * d];
        pairs("pairs", (count, d, 0), &o, &[], n, &mut bare).unwrap();
        assert_eq!(&bare[2 * d..4 * d], &[&o[..d], &o[d..2 * d]].concat()[..]);
        assert!(pairs("pairs", (count, d, q), &o, &v[1..], n, &mut out).is_err());
    }

    #[test]
    fn set_sum_shares_relevance_by_contribution() {
        let (count, d, n) = (4, 3, 2);
        let x = values(n * count * d, 5);
        let mut y = vec![f32::NAN; n * d];
        set_sum("sum", (count, d), &x, n, &mut y).unwrap();
        for s in 0..n {
            for k in 0..d {
                let want: f32 = (0..count).map(|e| x[(s * count + e) * d + k]).sum();
                assert!((y[s * d + k] - want).abs() < 1e-6);
            }
        }
        let r_out = values(n * d, 6);
        let mut r_in = vec![f32::NAN; x.len()];
        set_sum_relevance("sum", (count, d), &x, &y, &r_out, n, 1e-9, &mut r_in).unwrap();
        for s in 0..n {
            for k in 0..d {
                let back: f32 = (0..count).map(|e| r_in[(s * count + e) * d + k]).sum();
                assert!((back - r_out[s * d + k]).abs() < 1e-4 * (1.0 + r_out[s * d + k].abs()), "conserved");
                let e = 1;
                let want = x[(s * count + e) * d + k] / y[s * d + k] * r_out[s * d + k];
                assert!((r_in[(s * count + e) * d + k] - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
        let mut g = vec![f32::NAN; x.len()];
        set_sum_gradient("sum", (count, d), &r_out, n, &mut g).unwrap();
        assert!(g.chunks_exact(d).enumerate().all(|(e, row)| row == &r_out[(e / count) * d..][..d]));
        assert!(set_sum("sum", (count, d), &x[1..], n, &mut y).is_err());
    }

    /// Conservation of relevance through each set operation, for random shapes and values:
    /// what goes in comes back out (the coordinates' share kept apart by `objects_back`; at a
    /// set sum, up to the stabiliser: `Σ_k R_k = R_y y / stab(y)`).
    mod conservation {
        use super::*;
        use proptest::prelude::*;

        fn close(total: f64, kept: f64, scale: f64) -> bool {
            (total - kept).abs() <= 1e-4 * (1.0 + scale)
        }

        fn sum(v: &[f32]) -> f64 {
            v.iter().map(|&x| f64::from(x)).sum()
        }

        fn abs_sum(v: &[f32]) -> f64 {
            v.iter().map(|&x| f64::from(x).abs()).sum()
        }

        proptest! {
            #[test]
            fn objects_hand_back_all_relevance(
                (c, h, w, n, r) in (0usize..4, 1usize..5, 1usize..5, 1usize..3).prop_flat_map(|(c, h, w, n)| {
                    (Just(c), Just(h), Just(w), Just(n), proptest::collection::vec(-10.0f32..10.0, n * h * w * (c + 2)))
                })
            ) {
                let (mut r_in, mut coords) = (vec![f32::NAN; n * c * h * w], vec![f32::NAN; n * h * w * 2]);
                objects_back("objects", (c, h, w), &r, n, &mut r_in, &mut coords).unwrap();
                let kept = sum(&r_in) + sum(&coords);
                prop_assert!(close(sum(&r), kept, abs_sum(&r)), "{} vs {kept}", sum(&r));
                // Forward, every object is written, coordinates too (also with `C = 0`).
                let mut out = vec![f32::NAN; r.len()];
                objects("objects", (c, h, w), &vec![1.0; n * c * h * w], n, &mut out).unwrap();
                prop_assert!(out.iter().all(|v| v.is_finite()));
            }

            #[test]
            fn pairs_hand_back_all_relevance(
                (count, d, q, n, r) in (1usize..5, 0usize..4, 0usize..4, 1usize..3).prop_flat_map(|(count, d, q, n)| {
                    let len = n * count * count * (2 * d + q);
                    (Just(count), Just(d), Just(q), Just(n), proptest::collection::vec(-10.0f32..10.0, len))
                })
            ) {
                let (mut ro, mut rv) = (vec![f32::NAN; n * count * d], vec![f32::NAN; n * q]);
                pairs_back("pairs", (count, d, q), &r, n, &mut ro, &mut rv).unwrap();
                let kept = sum(&ro) + sum(&rv);
                prop_assert!(close(sum(&r), kept, abs_sum(&r)), "{} vs {kept}", sum(&r));
            }

            #[test]
            fn a_set_sum_hands_back_its_relevance_up_to_the_stabiliser(
                (count, d, n, x, r_out) in (0usize..6, 1usize..5, 1usize..3).prop_flat_map(|(count, d, n)| {
                    (
                        Just(count), Just(d), Just(n),
                        proptest::collection::vec(-10.0f32..10.0, n * count * d),
                        proptest::collection::vec(-10.0f32..10.0, n * d),
                    )
                })
            ) {
                let eps = 1e-6;
                let mut y = vec![f32::NAN; n * d];
                set_sum("sum", (count, d), &x, n, &mut y).unwrap();
                prop_assert!(y.iter().all(|v| v.is_finite()), "an empty set sums to zeros");
                let mut r_in = vec![f32::NAN; x.len()];
                set_sum_relevance("sum", (count, d), &x, &y, &r_out, n, eps, &mut r_in).unwrap();
                for s in 0..n {
                    for k in 0..d {
                        let back: Vec<f32> = (0..count).map(|e| r_in[(s * count + e) * d + k]).collect();
                        let (yk, rk) = (f64::from(y[s * d + k]), f64::from(r_out[s * d + k]));
                        let want = rk * yk / f64::from(stabilize(y[s * d + k], eps));
                        // Each share is x_k / stab(y) R_y: as large as the largest x_k over |y|.
                        let scale = abs_sum(&back);
                        prop_assert!(close(want, sum(&back), scale), "{want} vs {}", sum(&back));
                    }
                }
            }
        }
    }
}
