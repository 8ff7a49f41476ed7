//! Types shared by the recurrent layers ([`super::Lstm`], [`super::Gru`]): their geometry, what
//! they output, and the rule for their product neurons.

use std::marker::PhantomData;

use super::check_buffers;
use crate::error::{Error, Result};
use crate::kernels::elementwise::stabilize;
use crate::kernels::{MatMut, MatRef, gemm};
use crate::weights::Weights;

/// How relevance splits at a product neuron `x_k = x_g * x_s` (a sigmoid gate times a signal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProductRule {
    /// LRP-all (signal-take-all): `R_s = R_k`, `R_g = 0`.
    #[default]
    All,
    /// LRP-prop: `R_s = x_s / stab(x_g + x_s) R_k`, `R_g = x_g / stab(x_g + x_s) R_k`.
    Prop,
    /// LRP-half: `R_s = R_g = R_k / 2`.
    Half,
}

/// What a recurrent layer hands to the next layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeqOutput {
    /// The final hidden state, as PyTorch's `h_n` of the last layer: forward `h_T`, concatenated
    /// (bidirectional) with the reverse direction's state after it has read token 0.
    #[default]
    Last,
    /// The mean over time of the last layer's outputs `[h_fwd_t, h_rev_t]`.
    Mean,
    /// The element-wise maximum over time of the last layer's outputs.
    Max,
}

/// Sizes of a recurrent layer, PyTorch's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecurrentGeom {
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub output: SeqOutput,
}

impl RecurrentGeom {
    /// 2 for a bidirectional layer, else 1.
    pub const fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Features of one time step of a layer's output: `directions * hidden_size`.
    pub const fn step_len(&self) -> usize {
        self.directions() * self.hidden_size
    }

    /// Elements of the layer's output (`Last`, `Mean` and `Max` all give one vector).
    pub const fn out_len(&self) -> usize {
        self.step_len()
    }

    /// Input features of stacked layer `layer`.
    pub const fn layer_input(&self, layer: usize) -> usize {
        if layer == 0 { self.input_size } else { self.step_len() }
    }

    /// PyTorch's parameter suffix for stacked layer `layer` and direction `dir`: `l0`, `l1_reverse`.
    pub fn suffix(layer: usize, dir: usize) -> String {
        if dir == 0 { format!("l{layer}") } else { format!("l{layer}_reverse") }
    }

    /// Checks positive sizes.
    pub fn validate(&self) -> Result<()> {
        if self.input_size == 0 || self.hidden_size == 0 || self.num_layers == 0 {
            return Err(Error::InvalidParameter {
                what: "recurrent layer geometry".into(),
                message: format!("sizes must be positive: {self:?}"),
            });
        }
        Ok(())
    }
}

/// Parameters of one direction of one stacked layer, PyTorch layout: `w_ih` is
/// `[G * hidden_size, layer input]`, `w_hh` is `[G * hidden_size, hidden_size]`, the biases
/// `[G * hidden_size]` (`None`: zero), the `G` gate blocks stacked row-wise in PyTorch's order.
#[derive(Clone, Debug, PartialEq)]
pub struct CellParams {
    pub w_ih: Vec<f32>,
    pub w_hh: Vec<f32>,
    pub b_ih: Option<Vec<f32>>,
    pub b_hh: Option<Vec<f32>>,
}

/// The epsilon of the linear maps inside a recurrent cell until `set_rule`.
pub(crate) const DEFAULT_EPSILON: f32 = 0.001;

/// [`CellParams`] with the biases made explicit.
#[derive(Clone, Debug)]
pub(crate) struct CellWeights {
    pub w_ih: Vec<f32>,
    pub w_hh: Vec<f32>,
    /// `W_hh^T` (`[d, G d]`), made at load time: the recurrent product `W_hh h` then runs as
    /// `d` contiguous axpys instead of `G d` short dot products.
    pub w_hh_t: Vec<f32>,
    pub b_ih: Vec<f32>,
    pub b_hh: Vec<f32>,
}

/// The LRP parameters of a cell's product neurons and linear maps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lrp {
    pub rule: ProductRule,
    pub eps: f32,
}

impl Lrp {
    /// Splits the relevance `r` of a product `gate * signal` into `(R_gate, R_signal)`.
    #[inline]
    pub fn split(self, gate: f32, signal: f32, r: f32) -> (f32, f32) {
        match self.rule {
            ProductRule::All => (0.0, r),
            ProductRule::Prop => {
                let s = r / stabilize(gate + signal, self.eps);
                (gate * s, signal * s)
            }
            ProductRule::Half => (0.5 * r, 0.5 * r),
        }
    }

    /// `r / stab(z)`.
    #[inline]
    pub fn ratio(self, r: f32, z: f32) -> f32 {
        r / stabilize(z, self.eps)
    }
}

/// What a cell sees at one time step of one direction in the backward passes.
pub(crate) struct Step<'a> {
    pub w: &'a CellWeights,
    pub hidden: usize,
    /// The layer input at this time step.
    pub x: &'a [f32],
    /// This step's record (see [`Cell::record_len`]).
    pub rec: &'a [f32],
    /// The record of the step before in this direction's reading order (`None` at its first step).
    pub prev: Option<&'a [f32]>,
    /// The hidden state before this step (`None`: zero).
    pub h_prev: Option<&'a [f32]>,
}

/// One kind of recurrent cell: its forward step and the two backward steps.
pub(crate) trait Cell {
    /// Gate blocks of the weight rows.
    const GATES: usize;

    /// f32 elements of the per-step record; its first `GATES * hidden` elements hold
    /// `W_ih x_t + b_ih` when [`Cell::forward_step`] is called.
    fn record_len(hidden: usize) -> usize;

    /// Completes `rec` and writes `h` (`h_prev = None`: zero state).
    fn forward_step(
        w: &CellWeights,
        hidden: usize,
        rec: &mut [f32],
        prev: Option<&[f32]>,
        h_prev: Option<&[f32]>,
        h: &mut [f32],
    );

    /// LRP of one step. `r_h`: in, the relevance of `h_t`; out, of `h_{t-1}`. `r_c`: the carried
    /// relevance of the cell state (LSTM), in for `c_t`, out for `c_{t-1}`. `r_x += R(x_t)`.
    /// `tmp`: [`cell_scratch_len`] elements.
    fn relevance_step(step: &Step<'_>, lrp: Lrp, r_h: &mut [f32], r_c: &mut [f32], r_x: &mut [f32], tmp: &mut [f32]);

    /// Backpropagation through one step, same conventions as [`Cell::relevance_step`] with
    /// gradients instead of relevances.
    fn gradient_step(step: &Step<'_>, g_h: &mut [f32], g_c: &mut [f32], g_x: &mut [f32], tmp: &mut [f32]);
}

/// Scratch of one cell step: two vectors over the gate rows, one over the widest layer input,
/// one over the hidden units.
pub(crate) const fn cell_scratch_len(gates: usize, geom: &RecurrentGeom) -> usize {
    let widest = if geom.input_size > geom.step_len() { geom.input_size } else { geom.step_len() };
    2 * gates * geom.hidden_size + widest + geom.hidden_size
}

/// `W^T` of a row-major `[rows, cols]` matrix.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    for (r, row) in w.chunks_exact(cols).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// `out = W v + beta out` given `w_t = W^T` (`[cols, rows]` row-major): `cols` axpys.
pub(crate) fn matvec_by_transpose(w_t: &[f32], rows: usize, cols: usize, v: &[f32], beta: f32, out: &mut [f32]) {
    matvec_t(w_t, cols, rows, v, beta, out);
}

/// `out = W^T s + beta out`, `W: [rows, cols]` row-major.
pub(crate) fn matvec_t(w: &[f32], rows: usize, cols: usize, s: &[f32], beta: f32, out: &mut [f32]) {
    gemm(
        1.0,
        MatRef::row_major(&s[..rows], 1, rows),
        MatRef::row_major(&w[..rows * cols], rows, cols),
        beta,
        MatMut::row_major(&mut out[..cols], 1, cols),
    );
}

/// The time step read at position `s` of direction `dir`'s reading order.
#[inline]
fn time_of(dir: usize, s: usize, steps: usize) -> usize {
    if dir == 0 { s } else { steps - 1 - s }
}

/// Chunk `t` of `len` elements mutably, and chunk `p` (`!= t`) shared.
fn chunk_pair(buf: &mut [f32], len: usize, t: usize, p: Option<usize>) -> (&mut [f32], Option<&[f32]>) {
    match p {
        None => (&mut buf[t * len..(t + 1) * len], None),
        Some(p) if p < t => {
            let (lo, hi) = buf.split_at_mut(t * len);
            (&mut hi[..len], Some(&lo[p * len..(p + 1) * len]))
        }
        Some(p) => {
            let (lo, hi) = buf.split_at_mut(p * len);
            (&mut lo[t * len..(t + 1) * len], Some(&hi[..len]))
        }
    }
}

/// Which backward pass [`Recurrent::backward`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Relevance,
    Gradient,
}

/// The parameters and the forward/backward drivers shared by [`super::Lstm`] and [`super::Gru`]:
/// stacking, directions, time order and the pooled output; the cell `C` does one step.
///
/// Trace of a sequence of `T` steps (`S = directions * hidden`, `rec = C::record_len(hidden)`):
/// first the outputs of every stacked layer, `[num_layers][T][S]` (row `t` of layer `k` is
/// `[h_fwd_t, h_rev_t]`, the hidden states live only here); then the per-step records,
/// `[num_layers][directions][T][rec]`, indexed by time `t` (not reading order); then the pooled
/// output `y` `[S]`. Scratch: two `[T][S]` relevance (or gradient) buffers used in turn for a
/// layer's outputs and its inputs (layer 0's inputs are the caller's buffer), the carried `R(h)`
/// and `R(c)` (`hidden` each), and a cell step's vectors (`2 G hidden + max(input, S) + hidden`).
/// The layout depends on `T`, so the backward passes must get the `steps` of the forward pass.
#[derive(Clone, Debug)]
pub(crate) struct Recurrent<C> {
    name: String,
    geom: RecurrentGeom,
    /// Layer-major, direction-minor.
    cells: Vec<CellWeights>,
    lrp: Lrp,
    cell: PhantomData<C>,
}

impl<C: Cell> Recurrent<C> {
    pub fn load(weights: &mut Weights, name: &str, geom: RecurrentGeom, has_bias: bool) -> Result<Self> {
        geom.validate().map_err(|e| Self::named(name, e))?;
        let rows = C::GATES * geom.hidden_size;
        let mut params = Vec::with_capacity(geom.num_layers * geom.directions());
        for layer in 0..geom.num_layers {
            for dir in 0..geom.directions() {
                let suffix = RecurrentGeom::suffix(layer, dir);
                let mut take =
                    |what: &str, shape: &[usize]| weights.take(&format!("{name}.{what}_{suffix}"), name, shape);
                let w_ih = take("weight_ih", &[rows, geom.layer_input(layer)])?;
                let w_hh = take("weight_hh", &[rows, geom.hidden_size])?;
                let (b_ih, b_hh) = if has_bias {
                    (Some(take("bias_ih", &[rows])?), Some(take("bias_hh", &[rows])?))
                } else {
                    (None, None)
                };
                params.push(CellParams { w_ih, w_hh, b_ih, b_hh });
            }
        }
        Self::new(name, geom, params)
    }

    /// Names the layer in a geometry error.
    fn named(name: &str, e: Error) -> Error {
        match e {
            Error::InvalidParameter { message, .. } => {
                Error::InvalidParameter { what: format!("geometry of recurrent layer `{name}`"), message }
            }
            other => other,
        }
    }

    pub fn new(name: &str, geom: RecurrentGeom, params: Vec<CellParams>) -> Result<Self> {
        geom.validate().map_err(|e| Self::named(name, e))?;
        let (d, dirs) = (geom.hidden_size, geom.directions());
        let rows = C::GATES * d;
        if params.len() != geom.num_layers * dirs {
            return Err(Error::InvalidParameter {
                what: format!("parameters of recurrent layer `{name}`"),
                message: format!(
                    "{} cells given, but num_layers * directions = {} * {dirs} = {}",
                    params.len(),
                    geom.num_layers,
                    geom.num_layers * dirs
                ),
            });
        }
        let mut cells = Vec::with_capacity(params.len());
        for (i, p) in params.into_iter().enumerate() {
            let (layer, dir) = (i / dirs, i % dirs);
            let suffix = RecurrentGeom::suffix(layer, dir);
            let check = |what: &str, v: &[f32], shape: &[usize]| {
                if v.len() == shape.iter().product::<usize>() {
                    Ok(())
                } else {
                    Err(Error::ShapeMismatch {
                        name: format!("{name}.{what}_{suffix}"),
                        expected: shape.to_vec(),
                        found: vec![v.len()],
                    })
                }
            };
            check("weight_ih", &p.w_ih, &[rows, geom.layer_input(layer)])?;
            check("weight_hh", &p.w_hh, &[rows, d])?;
            let bias = |what: &str, b: Option<Vec<f32>>| match b {
                Some(b) => check(what, &b, &[rows]).map(|()| b),
                None => Ok(vec![0.0; rows]),
            };
            let b_ih = bias("bias_ih", p.b_ih)?;
            let b_hh = bias("bias_hh", p.b_hh)?;
            let w_hh_t = transpose(&p.w_hh, rows, d);
            cells.push(CellWeights { w_ih: p.w_ih, w_hh: p.w_hh, w_hh_t, b_ih, b_hh });
        }
        Ok(Recurrent {
            name: name.to_string(),
            geom,
            cells,
            lrp: Lrp { rule: ProductRule::All, eps: DEFAULT_EPSILON },
            cell: PhantomData,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn geom(&self) -> &RecurrentGeom {
        &self.geom
    }

    pub fn rule(&self) -> ProductRule {
        self.lrp.rule
    }

    pub fn epsilon(&self) -> f32 {
        self.lrp.eps
    }

    pub fn set_rule(&mut self, rule: ProductRule, epsilon: f32) -> Result<()> {
        if !epsilon.is_finite() || epsilon < 0.0 {
            return Err(Error::InvalidParameter {
                what: format!("epsilon of recurrent layer `{}`", self.name),
                message: format!("must be finite and >= 0, got {epsilon}"),
            });
        }
        self.lrp = Lrp { rule, eps: epsilon };
        Ok(())
    }

    /// Elements of all layers' outputs `[num_layers][steps][step_len]`.
    fn outputs_len(&self, steps: usize) -> usize {
        self.geom.num_layers * steps * self.geom.step_len()
    }

    /// Elements of all records `[num_layers][directions][steps][record_len]`.
    fn records_len(&self, steps: usize) -> usize {
        self.geom.num_layers * self.geom.directions() * steps * C::record_len(self.geom.hidden_size)
    }

    pub fn trace_len(&self, max_steps: usize) -> usize {
        self.outputs_len(max_steps) + self.records_len(max_steps) + self.geom.out_len()
    }

    pub fn scratch_len(&self, max_steps: usize) -> usize {
        2 * max_steps * self.geom.step_len() + 2 * self.geom.hidden_size + cell_scratch_len(C::GATES, &self.geom)
    }

    fn check_steps(&self, steps: usize) -> Result<()> {
        if steps == 0 {
            return Err(Error::InvalidParameter {
                what: format!("sequence length of recurrent layer `{}`", self.name),
                message: "steps must be >= 1".into(),
            });
        }
        Ok(())
    }

    pub fn forward(&self, x: &[f32], steps: usize, trace: &mut [f32], y: &mut [f32]) -> Result<()> {
        self.check_steps(steps)?;
        let g = self.geom;
        check_buffers(
            &self.name,
            &[
                ("input", steps * g.input_size, x.len()),
                ("trace", self.trace_len(steps), trace.len()),
                ("output", g.out_len(), y.len()),
            ],
        )?;
        let (d, dirs, sl, rec) = (g.hidden_size, g.directions(), g.step_len(), C::record_len(g.hidden_size));
        let rows = C::GATES * d;
        let (outs, rest) = trace.split_at_mut(self.outputs_len(steps));
        let (recs, rest) = rest.split_at_mut(self.records_len(steps));
        for layer in 0..g.num_layers {
            let in_len = g.layer_input(layer);
            let (before, current) = outs.split_at_mut(layer * steps * sl);
            let out = &mut current[..steps * sl];
            let input = if layer == 0 { &x[..steps * in_len] } else { &before[(layer - 1) * steps * sl..] };
            for dir in 0..dirs {
                let w = &self.cells[layer * dirs + dir];
                let recs = &mut recs[(layer * dirs + dir) * steps * rec..][..steps * rec];
                // W_ih x_t + b_ih for every step at once, into the first `rows` of each record.
                gemm(
                    1.0,
                    MatRef::row_major(input, steps, in_len),
                    MatRef::row_major(&w.w_ih, rows, in_len).t(),
                    0.0,
                    MatMut { data: &mut *recs, rows: steps, cols: rows, rs: rec, cs: 1 },
                );
                for r in recs.chunks_mut(rec) {
                    r[..rows].iter_mut().zip(&w.b_ih).for_each(|(v, b)| *v += b);
                }
                for s in 0..steps {
                    let t = time_of(dir, s, steps);
                    let p = s.checked_sub(1).map(|s| time_of(dir, s, steps));
                    let (rec_t, rec_p) = chunk_pair(recs, rec, t, p);
                    let (h_t, h_p) = chunk_pair(out, sl, t, p);
                    let h_p = h_p.map(|h| &h[dir * d..(dir + 1) * d]);
                    C::forward_step(w, d, rec_t, rec_p, h_p, &mut h_t[dir * d..(dir + 1) * d]);
                }
            }
        }
        // The pooled output, kept in the trace too.
        let last = &outs[(g.num_layers - 1) * steps * sl..];
        let y = &mut y[..sl];
        match g.output {
            SeqOutput::Last => {
                y[..d].copy_from_slice(&last[(steps - 1) * sl..(steps - 1) * sl + d]);
                if dirs == 2 {
                    y[d..].copy_from_slice(&last[d..sl]);
                }
            }
            SeqOutput::Mean => {
                y.fill(0.0);
                for row in last.chunks(sl) {
                    y.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                let inv = 1.0 / steps as f32;
                y.iter_mut().for_each(|v| *v *= inv);
            }
            SeqOutput::Max => {
                y.copy_from_slice(&last[..sl]);
                for row in last.chunks(sl).skip(1) {
                    y.iter_mut().zip(row).for_each(|(a, &v)| {
                        if v > *a {
                            *a = v;
                        }
                    });
                }
            }
        }
        rest[..sl].copy_from_slice(y);
        Ok(())
    }

    pub fn relevance(
        &self,
        x: &[f32],
        steps: usize,
        trace: &[f32],
        r_out: &[f32],
        r_in: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()> {
        self.backward(Pass::Relevance, x, steps, trace, r_out, r_in, scratch)
    }

    pub fn gradient(
        &self,
        x: &[f32],
        steps: usize,
        trace: &[f32],
        g_out: &[f32],
        g_in: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()> {
        self.backward(Pass::Gradient, x, steps, trace, g_out, g_in, scratch)
    }

    /// Relevance or gradient of the inputs from that of the output, layer by layer from the
    /// last, each direction backwards through its reading order.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        pass: Pass,
        x: &[f32],
        steps: usize,
        trace: &[f32],
        seed: &[f32],
        into: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()> {
        self.check_steps(steps)?;
        let g = self.geom;
        let (what_out, what_in) = match pass {
            Pass::Relevance => ("output relevance", "input relevance"),
            Pass::Gradient => ("output gradient", "input gradient"),
        };
        check_buffers(
            &self.name,
            &[
                ("input", steps * g.input_size, x.len()),
                ("trace", self.trace_len(steps), trace.len()),
                (what_out, g.out_len(), seed.len()),
                (what_in, steps * g.input_size, into.len()),
                ("scratch", self.scratch_len(steps), scratch.len()),
            ],
        )?;
        let (d, dirs, sl, rec) = (g.hidden_size, g.directions(), g.step_len(), C::record_len(g.hidden_size));
        let (outs, rest) = trace.split_at(self.outputs_len(steps));
        let (recs, y) = rest.split_at(self.records_len(steps));
        let y = &y[..sl];
        let (mut arriving, rest) = scratch.split_at_mut(steps * sl);
        let (mut spare, rest) = rest.split_at_mut(steps * sl);
        let (carry_h, rest) = rest.split_at_mut(d);
        let (carry_c, tmp) = rest.split_at_mut(d);

        // What arrives at the last layer's outputs.
        let last = &outs[(g.num_layers - 1) * steps * sl..g.num_layers * steps * sl];
        arriving.fill(0.0);
        match g.output {
            SeqOutput::Last => {
                arriving[(steps - 1) * sl..(steps - 1) * sl + d].copy_from_slice(&seed[..d]);
                if dirs == 2 {
                    arriving[d..sl].copy_from_slice(&seed[d..sl]);
                }
            }
            SeqOutput::Mean => {
                let inv = 1.0 / steps as f32;
                for (a_row, h_row) in arriving.chunks_mut(sl).zip(last.chunks(sl)) {
                    for f in 0..sl {
                        a_row[f] = match pass {
                            // Proportional rule: R_{h_t} = h_t (1/T) R_y / stab(y).
                            Pass::Relevance => h_row[f] * inv * self.lrp.ratio(seed[f], y[f]),
                            Pass::Gradient => seed[f] * inv,
                        };
                    }
                }
            }
            SeqOutput::Max => {
                for f in 0..sl {
                    let mut best = 0;
                    for t in 1..steps {
                        if last[t * sl + f] > last[best * sl + f] {
                            best = t;
                        }
                    }
                    arriving[best * sl + f] = seed[f];
                }
            }
        }

        for layer in (0..g.num_layers).rev() {
            let in_len = g.layer_input(layer);
            let input = if layer == 0 { &x[..steps * in_len] } else { &outs[(layer - 1) * steps * sl..] };
            let out = &outs[layer * steps * sl..(layer + 1) * steps * sl];
            let target: &mut [f32] = if layer == 0 { &mut into[..steps * in_len] } else { &mut spare[..] };
            target.fill(0.0);
            for dir in 0..dirs {
                let w = &self.cells[layer * dirs + dir];
                let recs = &recs[(layer * dirs + dir) * steps * rec..][..steps * rec];
                carry_h.fill(0.0);
                carry_c.fill(0.0);
                for s in (0..steps).rev() {
                    let t = time_of(dir, s, steps);
                    let p = s.checked_sub(1).map(|s| time_of(dir, s, steps));
                    let at = |t: usize| t * sl + dir * d..t * sl + (dir + 1) * d;
                    carry_h.iter_mut().zip(&arriving[at(t)]).for_each(|(c, a)| *c += a);
                    let step = Step {
                        w,
                        hidden: d,
                        x: &input[t * in_len..(t + 1) * in_len],
                        rec: &recs[t * rec..(t + 1) * rec],
                        prev: p.map(|p| &recs[p * rec..(p + 1) * rec]),
                        h_prev: p.map(|p| &out[at(p)]),
                    };
                    let x_part = &mut target[t * in_len..(t + 1) * in_len];
                    match pass {
                        Pass::Relevance => C::relevance_step(&step, self.lrp, carry_h, carry_c, x_part, tmp),
                        Pass::Gradient => C::gradient_step(&step, carry_h, carry_c, x_part, tmp),
                    }
                }
            }
            if layer > 0 {
                std::mem::swap(&mut arriving, &mut spare);
            }
        }
        Ok(())
    }
}

/// The public face of a recurrent layer: `$name` wraps `Recurrent<$cell>` with PyTorch's
/// parameter names; `$gates` is the weight rows per hidden unit, `$order` the gate order.
macro_rules! recurrent_layer {
    ($(#[$doc:meta])* $name:ident, $cell:ty, $gates:literal, $order:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            core: Recurrent<$cell>,
        }

        impl $name {
            #[doc = concat!("Loads `{name}.weight_ih_l{k}[_reverse]` `[", $gates, "d, in_k]`, `weight_hh_l{k}` `[", $gates, "d, d]`,")]
            #[doc = concat!("`bias_ih_l{k}`, `bias_hh_l{k}` `[", $gates, "d]` (gate order ", $order, ") for every layer `k` and")]
            /// direction; `has_bias = false` loads no biases.
            pub fn load(weights: &mut Weights, name: &str, geom: RecurrentGeom, has_bias: bool) -> Result<Self> {
                Recurrent::load(weights, name, geom, has_bias).map(|core| $name { core })
            }

            /// From parameters ordered layer-major, direction-minor; validates every length.
            pub fn new(name: &str, geom: RecurrentGeom, params: Vec<CellParams>) -> Result<Self> {
                Recurrent::new(name, geom, params).map(|core| $name { core })
            }

            pub fn name(&self) -> &str {
                self.core.name()
            }

            pub fn geom(&self) -> &RecurrentGeom {
                self.core.geom()
            }

            /// The product rule (default [`ProductRule::All`]).
            pub fn rule(&self) -> ProductRule {
                self.core.rule()
            }

            /// The epsilon of the linear maps inside the cell (default 0.001).
            pub fn epsilon(&self) -> f32 {
                self.core.epsilon()
            }

            /// Product rule and epsilon of every linear map inside the cell (defaults:
            /// [`ProductRule::All`], 0.001); `epsilon` must be finite and `>= 0`.
            pub fn set_rule(&mut self, rule: ProductRule, epsilon: f32) -> Result<()> {
                self.core.set_rule(rule, epsilon)
            }

            /// f32 elements of the forward trace for up to `max_steps` steps.
            pub fn trace_len(&self, max_steps: usize) -> usize {
                self.core.trace_len(max_steps)
            }

            /// f32 elements of scratch [`Self::relevance`] and [`Self::gradient`] need for up to
            /// `max_steps` steps.
            pub fn scratch_len(&self, max_steps: usize) -> usize {
                self.core.scratch_len(max_steps)
            }

            /// Forward pass over `x` = `[steps, input_size]`, writing the trace and the output
            /// `y` `[geom.out_len()]`; the initial states are zero.
            pub fn forward(&self, x: &[f32], steps: usize, trace: &mut [f32], y: &mut [f32]) -> Result<()> {
                self.core.forward(x, steps, trace, y)
            }

            /// LRP: the relevance `r_in` `[steps, input_size]` (overwritten) of every input from
            /// the output relevance `r_out` `[out_len]`, using the trace of the last forward pass
            /// over `x`.
            pub fn relevance(
                &self,
                x: &[f32],
                steps: usize,
                trace: &[f32],
                r_out: &[f32],
                r_in: &mut [f32],
                scratch: &mut [f32],
            ) -> Result<()> {
                self.core.relevance(x, steps, trace, r_out, r_in, scratch)
            }

            /// The exact gradient `g_in = d<g_out, y>/dx` `[steps, input_size]` (overwritten).
            pub fn gradient(
                &self,
                x: &[f32],
                steps: usize,
                trace: &[f32],
                g_out: &[f32],
                g_in: &mut [f32],
                scratch: &mut [f32],
            ) -> Result<()> {
                self.core.gradient(x, steps, trace, g_out, g_in, scratch)
            }
        }
    };
}
pub(crate) use recurrent_layer;
