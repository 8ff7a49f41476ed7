//! Where branches of a graph meet: the element-wise sum of equal-shaped tensors (a residual
//! connection, or the relevance coming back from several consumers of one tensor) and the
//! concatenation of tensors along a dimension, each with its relevance and gradient.
//!
//! Every function checks its lengths and returns [`Error::Length`] naming `what` on a mismatch.

use super::elementwise::stabilize;
use super::parallel;
use crate::error::{Error, Result, check_len};

/// Every slice of `parts` holds `len` elements.
fn check_parts(what: &str, len: usize, parts: &[&[f32]]) -> Result<()> {
    parts.iter().try_for_each(|p| check_len(what, len, p.len()))
}

/// `y = Σ_p x_p`, element-wise (the parts in order, so the result is reproducible), over the
/// worker threads when large.
pub fn sum(what: &str, parts: &[&[f32]], y: &mut [f32]) -> Result<()> {
    check_parts(what, y.len(), parts)?;
    let Some((first, rest)) = parts.split_first() else {
        return Err(Error::InvalidParameter { what: what.to_string(), message: "a sum of no tensors".into() });
    };
    parallel::elementwise(y, &|start, y| {
        let end = start + y.len();
        y.copy_from_slice(&first[start..end]);
        for part in rest {
            for (y, x) in y.iter_mut().zip(&part[start..end]) {
                *y += x;
            }
        }
    });
    Ok(())
}

/// Relevance at a sum `y = Σ_p x_p` (Zennit's `Norm` rule on its `Sum` layer): each summand
/// keeps its share, `R_p = x_p / stab(y) · R_y`, `stab(y) = y + eps sign(y)`.
pub fn sum_relevance(
    what: &str,
    parts: &[&[f32]],
    y: &[f32],
    r_out: &[f32],
    eps: f32,
    r_in: &mut [&mut [f32]],
) -> Result<()> {
    check_len(what, y.len(), r_out.len())?;
    check_parts(what, y.len(), parts)?;
    check_len(what, parts.len(), r_in.len())?;
    r_in.iter().try_for_each(|r| check_len(what, y.len(), r.len()))?;
    // Two summands (a residual block): one pass, one division per element.
    if let ([a, b], [ra, rb]) = (parts, &mut *r_in) {
        parallel::for_each_piece_pair(
            ra,
            rb,
            1,
            y.len().saturating_mul(parallel::ELEMENTWISE_COST),
            &|start, ra, rb| {
                let end = start + ra.len();
                let rows = ra.iter_mut().zip(rb.iter_mut()).zip(&a[start..end]).zip(&b[start..end]);
                for ((((ra, rb), &a), &b), (&y, &r)) in rows.zip(y[start..end].iter().zip(&r_out[start..end])) {
                    let q = r / stabilize(y, eps);
                    (*ra, *rb) = (a * q, b * q);
                }
            },
        );
        return Ok(());
    }
    for (x, r) in parts.iter().zip(r_in.iter_mut()) {
        check_len(what, y.len(), r.len())?;
        parallel::elementwise(r, &|start, r| {
            let end = start + r.len();
            for (((r, &x), &y), &r_out) in r.iter_mut().zip(&x[start..end]).zip(&y[start..end]).zip(&r_out[start..end])
            {
                *r = x * (r_out / stabilize(y, eps));
            }
        });
    }
    Ok(())
}

/// The gradient of a sum with respect to each summand: `∂L/∂x_p = ∂L/∂y`.
pub fn sum_gradient(what: &str, g_out: &[f32], g_in: &mut [&mut [f32]]) -> Result<()> {
    for g in g_in.iter_mut() {
        check_len(what, g_out.len(), g.len())?;
        g.copy_from_slice(g_out);
    }
    Ok(())
}

/// Repetitions of a concatenation: `y` is `reps` rows of `Σ chunks` values, and part `p`
/// `reps` rows of `chunks[p]`.
fn concat_reps(what: &str, chunks: &[usize], y_len: usize, part_lens: impl Iterator<Item = usize>) -> Result<usize> {
    let row: usize = chunks
        .iter()
        .try_fold(0usize, |a, &c| a.checked_add(c))
        .ok_or_else(|| Error::SizeOverflow { what: what.to_string() })?;
    if row == 0 || !y_len.is_multiple_of(row) {
        return Err(Error::Length { what: what.to_string(), expected: row, found: y_len });
    }
    let reps = y_len / row;
    for (len, &chunk) in part_lens.zip(chunks) {
        check_len(what, reps * chunk, len)?;
    }
    Ok(reps)
}

/// Concatenation: row `k` of `y` is row `k` of every part, in order (`chunks[p]` values of
/// part `p` per row). Concatenating samples of shape `[A, B_p, C]` along dimension 1 gives
/// `n A` rows with `chunks[p] = B_p C`.
pub fn concat(what: &str, parts: &[&[f32]], chunks: &[usize], y: &mut [f32]) -> Result<()> {
    check_len(what, chunks.len(), parts.len())?;
    let reps = concat_reps(what, chunks, y.len(), parts.iter().map(|p| p.len()))?;
    let mut at = 0;
    for k in 0..reps {
        for (part, &c) in parts.iter().zip(chunks) {
            y[at..at + c].copy_from_slice(&part[k * c..(k + 1) * c]);
            at += c;
        }
    }
    Ok(())
}

/// The inverse of [`concat`]: each part gets the values (relevance or gradient) of its own
/// positions.
pub fn split(what: &str, r_out: &[f32], chunks: &[usize], r_in: &mut [&mut [f32]]) -> Result<()> {
    check_len(what, chunks.len(), r_in.len())?;
    let reps = concat_reps(what, chunks, r_out.len(), r_in.iter().map(|p| p.len()))?;
    let mut at = 0;
    for k in 0..reps {
        for (part, &c) in r_in.iter_mut().zip(chunks) {
            part[k * c..(k + 1) * c].copy_from_slice(&r_out[at..at + c]);
            at += c;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_adds_and_shares_relevance_by_contribution() {
        let (a, b) = ([1.0f32, -2.0, 0.0, 3.0], [3.0f32, 2.0, 0.0, -1.0]);
        let mut y = [0.0; 4];
        sum("s", &[&a, &b], &mut y).unwrap();
        assert_eq!(y, [4.0, 0.0, 0.0, 2.0]);
        let r_out = [8.0f32, 1.0, 5.0, 2.0];
        let (mut ra, mut rb) = ([0.0f32; 4], [0.0f32; 4]);
        sum_relevance("s", &[&a, &b], &y, &r_out, 1e-6, &mut [&mut ra, &mut rb]).unwrap();
        for i in 0..4 {
            let s = f64::from(stabilize(y[i], 1e-6));
            let want = |x: f32| f64::from(x) * f64::from(r_out[i]) / s;
            assert!((f64::from(ra[i]) - want(a[i])).abs() <= 1e-6 * want(a[i]).abs().max(1.0), "{i}");
            assert!((f64::from(rb[i]) - want(b[i])).abs() <= 1e-6 * want(b[i]).abs().max(1.0), "{i}");
        }
        // Conserved where y is away from zero.
        assert!((ra[0] + rb[0] - 8.0).abs() < 1e-5 && (ra[3] + rb[3] - 2.0).abs() < 1e-5);
        let mut g = [[0.0f32; 4]; 2];
        let [g0, g1] = &mut g;
        sum_gradient("s", &r_out, &mut [g0, g1]).unwrap();
        assert_eq!(g, [r_out, r_out]);
    }

    #[test]
    fn concat_interleaves_rows_and_split_inverts_it() {
        // Two samples of [2, 1] and [2, 2] along dimension 1: rows of 1 + 2 values.
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let b = [10.0f32, 11.0, 20.0, 21.0, 30.0, 31.0, 40.0, 41.0];
        let mut y = [0.0; 12];
        concat("c", &[&a, &b], &[1, 2], &mut y).unwrap();
        assert_eq!(y, [1.0, 10.0, 11.0, 2.0, 20.0, 21.0, 3.0, 30.0, 31.0, 4.0, 40.0, 41.0]);
        let (mut ra, mut rb) = ([0.0f32; 4], [0.0f32; 8]);
        split("c", &y, &[1, 2], &mut [&mut ra, &mut rb]).unwrap();
        assert_eq!((ra, rb), (a, b));
    }

    #[test]
    fn lengths_that_disagree_are_errors_naming_the_node() {
        let mut y = [0.0f32; 3];
        let e = sum("layer1.0 (Sum)", &[&[1.0, 2.0, 3.0], &[1.0]], &mut y).unwrap_err();
        assert_eq!(e, Error::Length { what: "layer1.0 (Sum)".into(), expected: 3, found: 1 });
        assert!(sum("s", &[], &mut y).is_err());
        assert!(concat("c", &[&[1.0], &[2.0]], &[1, 1], &mut y).is_err());
        assert!(concat("c", &[&[1.0, 2.0]], &[0], &mut y).is_err());
        assert!(split("c", &[1.0, 2.0, 3.0], &[1, usize::MAX], &mut [&mut [0.0], &mut [0.0]]).is_err());
        let mut short = [0.0f32; 2];
        assert!(sum_relevance("s", &[&[1.0, 1.0, 1.0]], &[2.0; 3], &[1.0; 3], 1e-6, &mut [&mut short]).is_err());
    }
}
