//! `nn.GRU` over one sequence: forward pass, LRP and the exact gradient (backpropagation
//! through time).
//!
//! Per step, gate order r, z, n (PyTorch's): `r = σ(W_ir x + b_ir + W_hr h + b_hr)`,
//! `z = σ(W_iz x + b_iz + W_hz h + b_hz)`, `n = tanh(a_n)` with `a_n = (W_in x + b_in) + r * q`,
//! `q = W_hn h + b_hn`, and `h' = (1 - z) * n + z * h` (`h` the previous state, `h_0 = 0`).
//!
//! LRP, with `stab(v) = v + eps sign(v)` (`sign(0) = +1`) and the epsilon rule for every linear
//! map (bias in the denominator, its share dropped), backwards through the reading order. At a
//! product `gate * signal` the [`ProductRule`] decides the shares: LRP-all gives everything to
//! the signal; LRP-prop gives `gate / stab(gate + signal)` and `signal / stab(gate + signal)`;
//! LRP-half gives half to each.
//! 1. `h' = (1 - z) n + z h` is a sum of two terms: `R_u = (1 - z) n R(h') / stab(h')` and
//!    `R_v = z h R(h') / stab(h')`.
//! 2. `u = (1 - z) * n`: gate `(1 - z)`, signal `n`. `v = z * h`: gate `z`, signal `h`; the
//!    signal share of `v` goes straight to `R(h)`.
//! 3. `n = tanh(a_n)` passes `R(n)` to `a_n` unchanged. `a_n` is a sum of `W_in x` (bias `b_in`)
//!    and the product `r * q`: with `s_n = R(a_n) / stab(a_n)`, `R(x) += x ⊙ W_in^T s_n` and
//!    `R(r q) = r q s_n`.
//! 4. `r * q`: gate `r`, signal `q`. `q = W_hn h + b_hn`: `R(h) += h ⊙ W_hn^T (R(q) / stab(q))`.
//! 5. Gates (LRP-prop/half only; with LRP-all they receive nothing): the relevance of `(1 - z)`
//!    (from `u`) and of `z` (from `v`) are added and pass through the sigmoid unchanged to the
//!    pre-activation `a_z = W_iz x + b_iz + W_hz h + b_hz`; the relevance of `r` (from `r q`)
//!    passes to `a_r`. Each goes to `x` and `h` through its own rows of `W_ih` and `W_hh` by the
//!    epsilon rule with denominator `stab(a_z)` resp. `stab(a_r)` (both biases in it).
//!
//! With all biases zero and `eps -> 0` every step conserves relevance: what reaches `x_t` and
//! `h_{t-1}` sums to `R(h')`.

use super::recurrent::{
    Cell, CellParams, CellWeights, Lrp, Recurrent, Step, matvec_by_transpose, matvec_t, recurrent_layer,
};
use super::{ProductRule, RecurrentGeom};
use crate::error::Result;
use crate::kernels::activations::{sigmoid_inplace, tanh_inplace};
use crate::weights::Weights;

/// The GRU cell. Record of one step: `gi = W_ih x_t + b_ih` (`3d`), `gh = W_hh h + b_hh` (`3d`)
/// and the activations `r, z, n` (`3d`); `h'` lives in the layer output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GruCell;

impl Cell for GruCell {
    const GATES: usize = 3;

    fn record_len(hidden: usize) -> usize {
        9 * hidden
    }

    fn forward_step(
        w: &CellWeights,
        d: usize,
        rec: &mut [f32],
        _prev: Option<&[f32]>,
        h_prev: Option<&[f32]>,
        h: &mut [f32],
    ) {
        let (gi, rest) = rec.split_at_mut(3 * d);
        let (gh, act) = rest.split_at_mut(3 * d);
        gh.copy_from_slice(&w.b_hh);
        if let Some(hp) = h_prev {
            matvec_by_transpose(&w.w_hh_t, 3 * d, d, hp, 1.0, gh);
        }
        // r, z = sigmoid(gi + gh), n = tanh(gi_n + r gh_n), over whole gate blocks at once.
        act.iter_mut().zip(gi.iter().zip(gh.iter())).take(2 * d).for_each(|(a, (x, y))| *a = x + y);
        sigmoid_inplace(&mut act[..2 * d]);
        for j in 0..d {
            act[2 * d + j] = gi[2 * d + j] + act[j] * gh[2 * d + j];
        }
        tanh_inplace(&mut act[2 * d..3 * d]);
        for j in 0..d {
            let (z, n) = (act[d + j], act[2 * d + j]);
            let hp = h_prev.map_or(0.0, |hp| hp[j]);
            h[j] = (1.0 - z) * n + z * hp;
        }
    }

    fn relevance_step(step: &Step<'_>, lrp: Lrp, r_h: &mut [f32], _r_c: &mut [f32], r_x: &mut [f32], tmp: &mut [f32]) {
        let d = step.hidden;
        let in_len = step.x.len();
        let (gi, gh, act) = (&step.rec[..3 * d], &step.rec[3 * d..6 * d], &step.rec[6 * d..9 * d]);
        let (s_x, rest) = tmp.split_at_mut(3 * d);
        let (s_h, rest) = rest.split_at_mut(3 * d);
        let (cx, rest) = rest.split_at_mut(in_len);
        let ch = &mut rest[..d];
        for j in 0..d {
            let (r, z, n) = (act[j], act[d + j], act[2 * d + j]);
            let hp = step.h_prev.map_or(0.0, |hp| hp[j]);
            let q = gh[2 * d + j];
            // h' = (1 - z) n + z h.
            let (u, v) = ((1.0 - z) * n, z * hp);
            let ratio = lrp.ratio(r_h[j], u + v);
            let (r_u, r_v) = (u * ratio, v * ratio);
            let (r_gate_u, r_n) = lrp.split(1.0 - z, n, r_u);
            let (r_gate_v, r_direct) = lrp.split(z, hp, r_v);
            // a_n = (W_in x + b_in) + r q.
            let s_n = lrp.ratio(r_n, gi[2 * d + j] + r * q);
            let (r_gate_r, r_q) = lrp.split(r, q, r * q * s_n);
            let s_r = lrp.ratio(r_gate_r, gi[j] + gh[j]);
            let s_z = lrp.ratio(r_gate_u + r_gate_v, gi[d + j] + gh[d + j]);
            s_x[j] = s_r;
            s_x[d + j] = s_z;
            s_x[2 * d + j] = s_n;
            s_h[j] = s_r;
            s_h[d + j] = s_z;
            s_h[2 * d + j] = lrp.ratio(r_q, q);
            r_h[j] = r_direct;
        }
        matvec_t(&step.w.w_ih, 3 * d, in_len, s_x, 0.0, cx);
        r_x.iter_mut().zip(step.x).zip(cx.iter()).for_each(|((r, &xv), &cv)| *r += xv * cv);
        match step.h_prev {
            Some(hp) => {
                matvec_t(&step.w.w_hh, 3 * d, d, s_h, 0.0, ch);
                r_h.iter_mut().zip(hp).zip(ch.iter()).for_each(|((r, &hv), &cv)| *r += hv * cv);
            }
            None => r_h.fill(0.0),
        }
    }

    fn gradient_step(step: &Step<'_>, g_h: &mut [f32], _g_c: &mut [f32], g_x: &mut [f32], tmp: &mut [f32]) {
        let d = step.hidden;
        let (gh, act) = (&step.rec[3 * d..6 * d], &step.rec[6 * d..9 * d]);
        let (da_x, rest) = tmp.split_at_mut(3 * d);
        let da_h = &mut rest[..3 * d];
        for j in 0..d {
            let (r, z, n) = (act[j], act[d + j], act[2 * d + j]);
            let hp = step.h_prev.map_or(0.0, |hp| hp[j]);
            let q = gh[2 * d + j];
            let dh = g_h[j];
            let da_n = dh * (1.0 - z) * (1.0 - n * n);
            let da_z = dh * (hp - n) * z * (1.0 - z);
            let da_r = da_n * q * r * (1.0 - r);
            da_x[j] = da_r;
            da_x[d + j] = da_z;
            da_x[2 * d + j] = da_n;
            da_h[j] = da_r;
            da_h[d + j] = da_z;
            da_h[2 * d + j] = da_n * r;
            g_h[j] = dh * z;
        }
        matvec_t(&step.w.w_ih, 3 * d, step.x.len(), da_x, 1.0, g_x);
        match step.h_prev {
            Some(_) => matvec_t(&step.w.w_hh, 3 * d, d, da_h, 1.0, g_h),
            None => g_h.fill(0.0),
        }
    }
}

recurrent_layer!(
    /// `nn.GRU` (any number of stacked layers, uni- or bidirectional) over one sequence; see the
    /// module documentation for its LRP.
    Gru,
    GruCell,
    3,
    "r, z, n"
);
