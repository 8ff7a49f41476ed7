//! A dense layer reading every ordered pair of a set with a vector appended (`Pairs`), computed
//! without the pairs. Row `(i, j)` is `[o_i, o_j, v]`, so with `W = [W_a | W_b | W_v]`,
//! `x W^T + b = o_i W_a^T + o_j W_b^T + (v W_v^T + b)`: `2 N + 1` products of the objects and the
//! vector instead of `N²` of the rows. A rule term transforms its input element-wise and its
//! weights as a whole, so its denominator splits the same way; and its transposed pass, summed
//! back over the copies of each object, first sums the ratios over a pair's partner:
//!
//! ```text
//! R_o_k = in(o_k) ⊙ (W_a^T Σ_j s_kj + W_b^T Σ_i s_ik)        R_v = in(v) ⊙ W_v^T Σ_ij s_ij
//! ```

use super::{Derived, Error, InputMod, LinearKind, LinearMap, MAX_GROUPS, Result, Term, masked_ratio};
use crate::kernels::{MatMut, MatRef, gemm};

/// `(count, d, q)`: objects per set, features per object, length of the appended vector.
pub type PairDims = (usize, usize, usize);

/// The sizes of one sample: objects `N d`, rows `N²`, and the layer's outputs `o`.
#[derive(Clone, Copy)]
struct Sizes {
    count: usize,
    d: usize,
    q: usize,
    out: usize,
}

impl Sizes {
    fn set(self) -> usize {
        self.count * self.d
    }

    fn rows(self) -> usize {
        self.count * self.count
    }

    /// Outputs of one sample: `N² o`.
    fn z(self) -> usize {
        self.rows() * self.out
    }
}

/// Scratch of one sample's temporaries: the two object products and the vector's (`2 N o +
/// o`), the ratios summed by row, by column and in all (`2 N o + o`), the transposed products
/// (`2 N d + q`), the modified objects and vector (`N d + q`).
fn temporaries_len((count, d, q): PairDims, out: usize) -> usize {
    let per_object = count.saturating_mul(out.saturating_mul(4).saturating_add(d.saturating_mul(3)));
    per_object.saturating_add(out.saturating_mul(2)).saturating_add(q.saturating_mul(3))
}

impl LinearMap {
    /// Scratch elements [`Self::forward_pairs`], [`Self::relevance_pairs`] and
    /// [`Self::gradient_pairs`] need for `n` samples of `dims` (saturating, so that too large a
    /// capacity fails the buffer's size check).
    pub fn pair_scratch_len(&self, dims: PairDims, n: usize) -> usize {
        let z = dims.0.saturating_mul(dims.0).saturating_mul(self.kind.out_len());
        n.saturating_mul(z).saturating_mul(MAX_GROUPS).saturating_add(temporaries_len(dims, self.kind.out_len()))
    }

    /// Checks that this is a dense layer over rows of `2 d + q` and that the buffers hold `n`
    /// samples; returns the sizes.
    #[allow(clippy::too_many_arguments)]
    fn check_pairs(
        &self,
        dims: PairDims,
        n: usize,
        objects: usize,
        vector: usize,
        z: usize,
        scratch: usize,
    ) -> Result<Sizes> {
        let (count, d, q) = dims;
        let LinearKind::Dense { in_features, out_features } = self.kind else {
            return Err(self.pair_error("a convolution does not read pairs".into()));
        };
        let row = d.checked_mul(2).and_then(|r| r.checked_add(q));
        if row != Some(in_features) {
            return Err(
                self.pair_error(format!("pairs of {d} features and {q} appended do not make its {in_features} inputs"))
            );
        }
        let s = Sizes { count, d, q, out: out_features };
        let rows = count.checked_mul(count).and_then(|r| r.checked_mul(out_features));
        let rows = rows.ok_or_else(|| Error::SizeOverflow { what: format!("the pairs of layer `{}`", self.name) })?;
        super::check_batch(
            &self.name,
            n,
            &[("objects", count.saturating_mul(d), objects), ("appended vector", q, vector), ("output", rows, z)],
        )?;
        super::check_buffers(&self.name, &[("scratch", self.pair_scratch_len(dims, n), scratch)])?;
        Ok(s)
    }

    fn pair_error(&self, message: String) -> Error {
        Error::InvalidParameter { what: format!("layer `{}` on pairs", self.name), message }
    }

    /// `W`'s columns `from..from + cols`, `[out, cols]`.
    fn columns<'a>(&self, w: &'a [f32], from: usize, cols: usize) -> MatRef<'a> {
        let in_features = self.kind.in_len();
        MatRef { data: &w[from.min(w.len())..], rows: self.kind.out_len(), cols, rs: in_features, cs: 1 }
    }

    /// `z = alpha (in(o_i) W_a^T + in(o_j) W_b^T + in(v) W_v^T + b) + beta z` for every pair of
    /// one sample, `z` `[N², o]`; `tmp` holds at least `2 N o + o + N d + q` values.
    #[allow(clippy::too_many_arguments)]
    fn pair_product(
        &self,
        s: Sizes,
        (w, b): (&[f32], &[f32]),
        input: InputMod,
        (objects, vector): (&[f32], &[f32]),
        (alpha, beta): (f32, f32),
        z: &mut [f32],
        tmp: &mut [f32],
    ) {
        let (a, rest) = tmp.split_at_mut(s.count * s.out);
        let (bo, rest) = rest.split_at_mut(s.count * s.out);
        let (c, rest) = rest.split_at_mut(s.out);
        let (mo, rest) = rest.split_at_mut(s.set());
        let mv = &mut rest[..s.q];
        mo.iter_mut().zip(objects).for_each(|(m, &x)| *m = input.apply(x));
        mv.iter_mut().zip(vector).for_each(|(m, &x)| *m = input.apply(x));
        let objs = MatRef::row_major(mo, s.count, s.d);
        gemm(1.0, objs, self.columns(w, 0, s.d).t(), 0.0, MatMut::row_major(a, s.count, s.out));
        gemm(1.0, objs, self.columns(w, s.d, s.d).t(), 0.0, MatMut::row_major(bo, s.count, s.out));
        c.copy_from_slice(&b[..s.out]);
        if s.q > 0 {
            let v = MatRef::row_major(mv, 1, s.q);
            gemm(1.0, v, self.columns(w, 2 * s.d, s.q).t(), 1.0, MatMut::row_major(c, 1, s.out));
        }
        for (p, row) in z.chunks_exact_mut(s.out).enumerate() {
            let (ai, bj) = (&a[(p / s.count) * s.out..][..s.out], &bo[(p % s.count) * s.out..][..s.out]);
            for (((z, &x), &y), &k) in row.iter_mut().zip(ai).zip(bj).zip(c.iter()) {
                let v = alpha * (x + y + k);
                *z = if beta == 0.0 { v } else { v + beta * *z };
            }
        }
    }

    /// Forward pass of `n` sets of pairs, `z` `[n, N², o]` (the pre-activation of every pair's
    /// row, as [`Self::forward`] on the rows gives).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_pairs(
        &self,
        objects: &[f32],
        vector: &[f32],
        dims: PairDims,
        n: usize,
        z: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()> {
        let s = self.check_pairs(dims, n, objects.len(), vector.len(), z.len(), scratch.len())?;
        for i in 0..n {
            let input = (&objects[i * s.set()..(i + 1) * s.set()], &vector[i * s.q..(i + 1) * s.q]);
            let zi = &mut z[i * s.z()..(i + 1) * s.z()];
            self.pair_product(s, (&self.weight, &self.bias), InputMod::Identity, input, (1.0, 0.0), zi, scratch);
        }
        Ok(())
    }

    /// [`Self::relevance`] of the pairs' rows, returned to the objects and the vector they were
    /// made of (each the sum over its copies): `r_objects` `[n, N, d]`, `r_vector` `[n, q]`,
    /// overwritten. A rule with a term on a constant input (flat, w², z^B) does not split by
    /// pairs: [`Error::InvalidParameter`].
    #[allow(clippy::too_many_arguments)]
    pub fn relevance_pairs(
        &self,
        (objects, vector): (&[f32], &[f32]),
        dims: PairDims,
        z: &[f32],
        r_out: &[f32],
        n: usize,
        (r_objects, r_vector): (&mut [f32], &mut [f32]),
        scratch: &mut [f32],
    ) -> Result<()> {
        let s = self.check_pairs(dims, n, objects.len(), vector.len(), z.len(), scratch.len())?;
        super::check_batch(
            &self.name,
            n,
            &[
                ("output relevance", s.z(), r_out.len()),
                ("objects' relevance", s.set(), r_objects.len()),
                ("vector's relevance", s.q, r_vector.len()),
            ],
        )?;
        let constant =
            self.groups.iter().any(|g| g.constant.is_some() || g.terms.iter().any(|t| t.spec.input.is_constant()));
        if constant {
            return Err(self.pair_error(format!("the rule {:?} has a term on a constant input", self.rule)));
        }
        let total = n * s.z();
        let (denoms, tmp) = scratch.split_at_mut(MAX_GROUPS * total);
        let (first, second) = denoms.split_at_mut(total);
        let (z, r_out) = (&z[..total], &r_out[..total]);
        // Each group's denominator over every row, as on the rows themselves.
        for (gi, group) in self.groups.iter().enumerate().take(MAX_GROUPS) {
            if let (Some(Derived { forward, previous }), 1) = (group.spec.derived, gi) {
                for ((d, &zf), &p) in second.iter_mut().zip(z).zip(first.iter()) {
                    *d = forward * zf + previous * p;
                }
                continue;
            }
            let denom: &mut [f32] = if gi == 0 { &mut *first } else { &mut *second };
            let mut beta = 0.0;
            if group.spec.from_forward {
                denom.copy_from_slice(z);
                beta = 1.0;
            }
            for t in &group.terms {
                let covered = group.spec.from_forward && super::plain(t);
                if covered {
                    continue;
                }
                for i in 0..n {
                    let input = (&objects[i * s.set()..(i + 1) * s.set()], &vector[i * s.q..(i + 1) * s.q]);
                    let di = &mut denom[i * s.z()..(i + 1) * s.z()];
                    let params = (self.term_weight(t), self.term_bias(t));
                    self.pair_product(s, params, t.spec.input, input, (t.spec.sign, beta), di, tmp);
                }
                beta = 1.0;
            }
            if beta == 0.0 {
                denom.fill(0.0);
            }
        }
        // s_g = mask_g(z) R / stab(z_g); then each term goes back to the objects and the vector.
        r_objects[..n * s.set()].fill(0.0);
        r_vector[..n * s.q].fill(0.0);
        let ratios: [&mut [f32]; MAX_GROUPS] = [first, second];
        for (group, ratio) in self.groups.iter().zip(ratios) {
            masked_ratio(ratio, z, r_out, group.spec.mask, group.spec.eps);
            for t in group.terms.iter().filter(|t| t.spec.backward) {
                let factor = group.spec.coef * t.spec.sign;
                for i in 0..n {
                    let input = (&objects[i * s.set()..(i + 1) * s.set()], &vector[i * s.q..(i + 1) * s.q]);
                    let out = (&mut r_objects[i * s.set()..(i + 1) * s.set()], &mut r_vector[i * s.q..(i + 1) * s.q]);
                    let si = &ratio[i * s.z()..(i + 1) * s.z()];
                    self.pair_back(s, t, si, Some(input), factor, out, tmp);
                }
            }
        }
        Ok(())
    }

    /// The gradient of `n` sets of pairs' rows, `g_out` `[n, N², o]`, summed back to the
    /// objects (`[n, N, d]`) and the vector (`[n, q]`), overwritten.
    pub fn gradient_pairs(
        &self,
        g_out: &[f32],
        dims: PairDims,
        n: usize,
        (g_objects, g_vector): (&mut [f32], &mut [f32]),
        scratch: &mut [f32],
    ) -> Result<()> {
        let s = self.check_pairs(dims, n, g_objects.len(), g_vector.len(), g_out.len(), scratch.len())?;
        g_objects[..n * s.set()].fill(0.0);
        g_vector[..n * s.q].fill(0.0);
        let plain = Term { spec: super::plain_spec(), weight: None, weight_t: None, bias: None, constant_input: None };
        for i in 0..n {
            let out = (&mut g_objects[i * s.set()..(i + 1) * s.set()], &mut g_vector[i * s.q..(i + 1) * s.q]);
            self.pair_back(s, &plain, &g_out[i * s.z()..(i + 1) * s.z()], None, 1.0, out, scratch);
        }
        Ok(())
    }

    /// One sample's transposed pass of term `t` over the ratios (or gradients) `s_rows`
    /// `[N², o]`, added to the objects' and the vector's: `factor in(x) ⊙ (W_t^T summed s)`, or
    /// without `input` the bare products (the gradient).
    #[allow(clippy::too_many_arguments)]
    fn pair_back(
        &self,
        s: Sizes,
        t: &Term,
        s_rows: &[f32],
        input: Option<(&[f32], &[f32])>,
        factor: f32,
        (r_objects, r_vector): (&mut [f32], &mut [f32]),
        tmp: &mut [f32],
    ) {
        let (by_row, rest) = tmp.split_at_mut(s.count * s.out);
        let (by_col, rest) = rest.split_at_mut(s.count * s.out);
        let (all, rest) = rest.split_at_mut(s.out);
        let (c_objects, rest) = rest.split_at_mut(s.set());
        let c_vector = &mut rest[..s.q];
        by_row.fill(0.0);
        by_col.fill(0.0);
        all.fill(0.0);
        for (p, row) in s_rows.chunks_exact(s.out).enumerate() {
            let (i, j) = (p / s.count, p % s.count);
            by_row[i * s.out..(i + 1) * s.out].iter_mut().zip(row).for_each(|(a, v)| *a += v);
            by_col[j * s.out..(j + 1) * s.out].iter_mut().zip(row).for_each(|(a, v)| *a += v);
            all.iter_mut().zip(row).for_each(|(a, v)| *a += v);
        }
        let w = self.term_weight(t);
        let to_objects = |sums: &[f32], from: usize, beta: f32, c: &mut [f32]| {
            let sums = MatRef::row_major(sums, s.count, s.out);
            gemm(1.0, sums, self.columns(w, from, s.d), beta, MatMut::row_major(c, s.count, s.d));
        };
        to_objects(by_row, 0, 0.0, c_objects);
        to_objects(by_col, s.d, 1.0, c_objects);
        if s.q > 0 {
            let all = MatRef::row_major(all, 1, s.out);
            gemm(1.0, all, self.columns(w, 2 * s.d, s.q), 0.0, MatMut::row_major(c_vector, 1, s.q));
        }
        let scale = |r: &mut [f32], c: &[f32], x: Option<&[f32]>| match x {
            Some(x) => r.iter_mut().zip(c).zip(x).for_each(|((r, &c), &x)| *r += factor * t.spec.input.apply(x) * c),
            None => r.iter_mut().zip(c).for_each(|(r, &c)| *r += factor * c),
        };
        scale(r_objects, c_objects, input.map(|(o, _)| o));
        scale(r_vector, c_vector, input.map(|(_, v)| v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::sets::{pairs, pairs_back};
    use crate::rules::Rule;

    fn values(n: usize, salt: usize, shift: f32) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + salt * 11) % 23) as f32 / 11.0 - 1.0 + shift).collect()
    }

    fn close(what: &str, got: &[f32], want: &[f32]) {
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * scale, "{what}[{k}]: {g} vs {w}");
        }
    }

    /// Every pass on the pairs equals the same pass on the materialised rows, summed back.
    #[test]
    fn pairs_give_what_their_rows_give() {
        let (count, d, q, out, n) = (3, 2, 3, 4, 2);
        let dims = (count, d, q);
        let kind = LinearKind::Dense { in_features: 2 * d + q, out_features: out };
        let rules = [
            (Rule::Epsilon { epsilon: 0.01, ignore_bias: false }, false),
            (Rule::ZPlus, true),
            (Rule::AlphaBeta { alpha: 2.0, beta: 1.0 }, false),
            (Rule::Gamma { gamma: 0.25 }, true),
            (Rule::Gamma { gamma: 0.25 }, false),
        ];
        for (rule, nonneg) in rules {
            let mut fc =
                LinearMap::new("g", kind, values(out * (2 * d + q), 1, 0.0), Some(values(out, 2, 0.0))).unwrap();
            fc.prepare(&rule, nonneg).unwrap();
            let shift = if nonneg { 1.0 } else { 0.0 };
            let (objects, vector) = (values(n * count * d, 3, shift), values(n * q, 4, shift));
            let rows_len = n * count * count * (2 * d + q);
            let mut rows = vec![0.0; rows_len];
            pairs("pairs", dims, &objects, &vector, n, &mut rows).unwrap();
            let z_len = n * count * count * out;
            let mut scratch = vec![0.0; fc.pair_scratch_len(dims, n).max(kind.scratch_len(n * count * count))];
            let (mut want_z, mut z) = (vec![0.0; z_len], vec![0.0; z_len]);
            fc.forward(&rows, n * count * count, &mut want_z).unwrap();
            fc.forward_pairs(&objects, &vector, dims, n, &mut z, &mut scratch).unwrap();
            close("z", &z, &want_z);
            let r_out = values(z_len, 5, 0.0);
            let mut r_rows = vec![0.0; rows_len];
            fc.relevance(&rows, &want_z, &r_out, n * count * count, &mut r_rows, &mut scratch).unwrap();
            let (mut want_o, mut want_v) = (vec![0.0; objects.len()], vec![0.0; vector.len()]);
            pairs_back("pairs", dims, &r_rows, n, &mut want_o, &mut want_v).unwrap();
            let (mut r_o, mut r_v) = (vec![f32::NAN; objects.len()], vec![f32::NAN; vector.len()]);
            fc.relevance_pairs((&objects, &vector), dims, &z, &r_out, n, (&mut r_o, &mut r_v), &mut scratch).unwrap();
            close(&format!("{rule:?} objects"), &r_o, &want_o);
            close(&format!("{rule:?} vector"), &r_v, &want_v);
            let mut g_rows = vec![0.0; rows_len];
            fc.gradient(&r_out, n * count * count, &mut g_rows, &mut scratch).unwrap();
            pairs_back("pairs", dims, &g_rows, n, &mut want_o, &mut want_v).unwrap();
            fc.gradient_pairs(&r_out, dims, n, (&mut r_o, &mut r_v), &mut scratch).unwrap();
            close("gradient objects", &r_o, &want_o);
            close("gradient vector", &r_v, &want_v);
        }
    }
}
