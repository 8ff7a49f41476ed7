//! `nn.LSTM` over one sequence: forward pass, LSTM-LRP (Arras et al.) and the exact gradient
//! (backpropagation through time).
//!
//! Per step, gate order i, f, g, o (PyTorch's): `a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`,
//! `i, f, o = sigmoid(a_i, a_f, a_o)`, `g = tanh(a_g)`, `c_t = f c_{t-1} + i g`,
//! `h_t = o tanh(c_t)`, `h_0 = c_0 = 0`.
//!
//! LRP, with `stab(z) = z + eps sign(z)` (`sign(0) = +1`) and every linear map by the epsilon
//! rule (bias in the denominator, its share dropped), backwards through the reading order:
//! - `h_t = o * tanh(c_t)`: the product rule splits `R(h_t)` between the gate `o` and the signal
//!   `tanh(c_t)`; the signal's share passes through tanh and adds to `R(c_t)`.
//! - `c_t = f c_{t-1} + i g`: `R(f c_{t-1}) = f c_{t-1} R(c_t) / stab(c_t)`,
//!   `R(i g) = i g R(c_t) / stab(c_t)`.
//! - `f * c_{t-1}` (gate `f`, signal `c_{t-1}`) and `i * g` (gate `i`, signal `g`) split by the
//!   product rule; `c_{t-1}`'s share carries to the step before, `g`'s passes through tanh to `a_g`.
//! - Each gate pre-activation `a_k` (all four with LRP-prop/half, only `a_g` with LRP-all) sends
//!   `s_k = R(a_k) / stab(a_k)` through its rows: `R(x_t) += x_t ⊙ W_ih^T s`,
//!   `R(h_{t-1}) = h_{t-1} ⊙ W_hh^T s`.
//!
//! With [`ProductRule::All`] and `eps = 0.001` this is exactly Arras et al.'s `LSTM_bidi.lrp` with
//! `bias_factor = 0`.

use super::recurrent::{
    Cell, CellParams, CellWeights, Lrp, Recurrent, Step, matvec_by_transpose, matvec_t, recurrent_layer,
};
use super::{ProductRule, RecurrentGeom};
use crate::error::Result;
use crate::kernels::activations::{sigmoid_inplace, tanh_inplace};
use crate::weights::Weights;

/// The LSTM cell. Record of one step: the pre-activations `a` (`4d`, biases included), the gate
/// activations `i, f, g, o` (`4d`) and the cell state `c_t` (`d`); `h_t` lives in the layer output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LstmCell;

impl Cell for LstmCell {
    const GATES: usize = 4;

    fn record_len(hidden: usize) -> usize {
        9 * hidden
    }

    fn forward_step(
        w: &CellWeights,
        d: usize,
        rec: &mut [f32],
        prev: Option<&[f32]>,
        h_prev: Option<&[f32]>,
        h: &mut [f32],
    ) {
        let (a, rest) = rec.split_at_mut(4 * d);
        let (act, c) = rest.split_at_mut(4 * d);
        a.iter_mut().zip(&w.b_hh).for_each(|(v, b)| *v += b);
        if let Some(hp) = h_prev {
            matvec_by_transpose(&w.w_hh_t, 4 * d, d, hp, 1.0, a);
        }
        // i, f, o = sigmoid, g = tanh, over whole gate blocks at once.
        act.copy_from_slice(a);
        sigmoid_inplace(&mut act[..2 * d]);
        tanh_inplace(&mut act[2 * d..3 * d]);
        sigmoid_inplace(&mut act[3 * d..]);
        for j in 0..d {
            let (i, f, g) = (act[j], act[d + j], act[2 * d + j]);
            let c_prev = prev.map_or(0.0, |p| p[8 * d + j]);
            c[j] = f * c_prev + i * g;
        }
        let h = &mut h[..d];
        h.copy_from_slice(c);
        tanh_inplace(h);
        h.iter_mut().zip(&act[3 * d..]).for_each(|(hj, o)| *hj *= o);
    }

    fn relevance_step(step: &Step<'_>, lrp: Lrp, r_h: &mut [f32], r_c: &mut [f32], r_x: &mut [f32], tmp: &mut [f32]) {
        let d = step.hidden;
        let in_len = step.x.len();
        let (a, act, c) = (&step.rec[..4 * d], &step.rec[4 * d..8 * d], &step.rec[8 * d..9 * d]);
        let (s, rest) = tmp.split_at_mut(4 * d);
        let (cx, rest) = rest.split_at_mut(in_len);
        let ch = &mut rest[..d];
        for j in 0..d {
            let (i, f, g, o) = (act[j], act[d + j], act[2 * d + j], act[3 * d + j]);
            let c_prev = step.prev.map_or(0.0, |p| p[8 * d + j]);
            // h = o * tanh(c); LRP-all never reads tanh(c).
            let tanh_c = if lrp.rule == ProductRule::All { 0.0 } else { c[j].tanh() };
            let (r_o, r_tanh_c) = lrp.split(o, tanh_c, r_h[j]);
            let r_cell = r_c[j] + r_tanh_c;
            // c = f c_prev + i g, split in proportion to the summands.
            let ratio = lrp.ratio(r_cell, c[j]);
            let (r_fc, r_ig) = (f * c_prev * ratio, i * g * ratio);
            let (r_f, r_c_prev) = lrp.split(f, c_prev, r_fc);
            let (r_i, r_g) = lrp.split(i, g, r_ig);
            r_c[j] = r_c_prev;
            s[j] = lrp.ratio(r_i, a[j]);
            s[d + j] = lrp.ratio(r_f, a[d + j]);
            s[2 * d + j] = lrp.ratio(r_g, a[2 * d + j]);
            s[3 * d + j] = lrp.ratio(r_o, a[3 * d + j]);
        }
        matvec_t(&step.w.w_ih, 4 * d, in_len, s, 0.0, cx);
        r_x.iter_mut().zip(step.x).zip(cx.iter()).for_each(|((r, &xv), &cv)| *r += xv * cv);
        match step.h_prev {
            Some(hp) => {
                matvec_t(&step.w.w_hh, 4 * d, d, s, 0.0, ch);
                r_h.iter_mut().zip(hp).zip(ch.iter()).for_each(|((r, &hv), &cv)| *r = hv * cv);
            }
            None => r_h.fill(0.0),
        }
    }

    fn gradient_step(step: &Step<'_>, g_h: &mut [f32], g_c: &mut [f32], g_x: &mut [f32], tmp: &mut [f32]) {
        let d = step.hidden;
        let in_len = step.x.len();
        let (act, c) = (&step.rec[4 * d..8 * d], &step.rec[8 * d..9 * d]);
        let da = &mut tmp[..4 * d];
        for j in 0..d {
            let (i, f, g, o) = (act[j], act[d + j], act[2 * d + j], act[3 * d + j]);
            let c_prev = step.prev.map_or(0.0, |p| p[8 * d + j]);
            let tc = c[j].tanh();
            let dh = g_h[j];
            let d_o = dh * tc;
            let dc = g_c[j] + dh * o * (1.0 - tc * tc);
            g_c[j] = dc * f;
            da[j] = dc * g * i * (1.0 - i);
            da[d + j] = dc * c_prev * f * (1.0 - f);
            da[2 * d + j] = dc * i * (1.0 - g * g);
            da[3 * d + j] = d_o * o * (1.0 - o);
        }
        matvec_t(&step.w.w_ih, 4 * d, in_len, da, 1.0, g_x);
        match step.h_prev {
            Some(_) => matvec_t(&step.w.w_hh, 4 * d, d, da, 0.0, g_h),
            None => g_h.fill(0.0),
        }
    }
}

recurrent_layer!(
    /// `nn.LSTM` (any number of stacked layers, uni- or bidirectional) over one sequence; see the
    /// module documentation for its LRP.
    Lstm,
    LstmCell,
    4,
    "i, f, g, o"
);
