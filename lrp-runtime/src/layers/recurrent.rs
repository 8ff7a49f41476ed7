//! Types shared by the recurrent layers ([`super::Lstm`], [`super::Gru`]): their geometry, what
//! they output, and the rule for their product neurons.

use std::marker::PhantomData;

use super::check_buffers;
use crate::checks::check_finite;
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

    /// Features of one time step of a layer's output: `directions * hidden_size` (saturating:
    /// [`RecurrentGeom::validate`] refuses a geometry whose sizes overflow).
    pub const fn step_len(&self) -> usize {
        self.hidden_size.saturating_mul(self.directions())
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
        if self.hidden_size.checked_mul(self.directions()).is_none() {
            return Err(Error::SizeOverflow { what: format!("recurrent layer geometry {self:?}") });
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
    2 * gates * geom.hidden_size + widest_input(geom) + geom.hidden_size
}

/// The widest layer input: `max(input_size, step_len)`.
const fn widest_input(geom: &RecurrentGeom) -> usize {
    if geom.input_size > geom.step_len() { geom.input_size } else { geom.step_len() }
}

/// Checks that every size of a layer of cell `C` that does not depend on the sequence length
/// fits `usize`: all of them (weights `G d x widest`, records `9 d` per layer and direction,
/// scratch) are at most `num_layers * 16 G d * max(input_size, 2 d)`.
fn check_sizes<C: Cell>(name: &str, geom: &RecurrentGeom) -> Result<()> {
    let d = geom.hidden_size;
    let bound = d
        .checked_mul(2)
        .map(|sl| sl.max(geom.input_size))
        .and_then(|widest| [16 * C::GATES, d, widest].into_iter().try_fold(geom.num_layers, |a, v| a.checked_mul(v)));
    match bound {
        Some(_) => Ok(()),
        None => Err(Error::SizeOverflow { what: format!("recurrent layer `{name}` with geometry {geom:?}") }),
    }
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

impl Pass {
    /// What flows in from the output.
    fn output(self) -> &'static str {
        match self {
            Pass::Relevance => "output relevance",
            Pass::Gradient => "output gradient",
        }
    }

    /// What flows out to the input.
    fn input(self) -> &'static str {
        match self {
            Pass::Relevance => "input relevance",
            Pass::Gradient => "input gradient",
        }
    }
}

/// The parameters and the forward/backward drivers shared by [`super::Lstm`] and [`super::Gru`]:
/// stacking, directions, time order and the pooled output; the cell `C` does one step.
///
/// Trace of a sequence of `T` steps (`S = directions * hidden`, `rec = C::record_len(hidden)`):
/// first the outputs of every stacked layer, `[num_layers][T][S]` (row `t` of layer `k` is
/// `[h_fwd_t, h_rev_t]`, the hidden states live only here); then the per-step records,
/// `[num_layers][directions][T][rec]`, indexed by time `t` (not reading order); then the pooled
/// output `y` `[S]`. Scratch: two `[T][S]` relevance (or gradient) buffers used in turn for a
/// layer's outputs and its inputs (layer 0's inputs are the caller's buffer) and their
/// exponents (`[T]` each, see [`Recurrent::backward`]), the carried `R(h)` and `R(c)` (`hidden`
/// each), one step's input share (`max(input, S)`), and a cell step's vectors
/// (`2 G hidden + max(input, S) + hidden`).
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
        check_sizes::<C>(name, &geom)?;
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
        check_sizes::<C>(name, &geom)?;
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
                let name = format!("{name}.{what}_{suffix}");
                if v.len() != shape.iter().product::<usize>() {
                    return Err(Error::ShapeMismatch { name, expected: shape.to_vec(), found: vec![v.len()] });
                }
                check_finite(&name, v)
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

    /// Every cell's weights, layer-major, direction-minor (the GPU layers upload them).
    #[cfg(feature = "cuda")]
    pub(crate) fn cells(&self) -> &[CellWeights] {
        &self.cells
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
    fn outputs_len(&self, steps: usize) -> Result<usize> {
        self.mul("outputs", self.geom.num_layers, steps).and_then(|n| self.mul("outputs", n, self.geom.step_len()))
    }

    /// Elements of all records `[num_layers][directions][steps][record_len]`.
    fn records_len(&self, steps: usize) -> Result<usize> {
        let per_step = self.geom.num_layers * self.geom.directions() * C::record_len(self.geom.hidden_size);
        self.mul("per-step records", per_step, steps)
    }

    /// `a * b`, or [`Error::SizeOverflow`] naming `what` of this layer (allocates only then).
    fn mul(&self, what: &str, a: usize, b: usize) -> Result<usize> {
        a.checked_mul(b).ok_or_else(|| self.size_overflow(what))
    }

    /// [`Error::SizeOverflow`] for the buffer `what` of this layer.
    fn size_overflow(&self, what: &str) -> Error {
        Error::SizeOverflow { what: format!("the {what} of recurrent layer `{}`", self.name) }
    }

    /// f32 elements of the trace for up to `max_steps` steps, or [`Error::SizeOverflow`].
    pub fn try_trace_len(&self, max_steps: usize) -> Result<usize> {
        let total = self.outputs_len(max_steps)?.checked_add(self.records_len(max_steps)?);
        total
            .and_then(|n| n.checked_add(self.geom.out_len()))
            .ok_or_else(|| self.size_overflow(&format!("trace for {max_steps} steps")))
    }

    /// f32 elements of the backward passes' scratch for up to `max_steps` steps: two `[T][S]`
    /// buffers and their `[T]` exponents, the carried `R(h)` and `R(c)`, one step's input
    /// relevance and a cell's vectors.
    pub fn try_scratch_len(&self, max_steps: usize) -> Result<usize> {
        let fixed = 2 * self.geom.hidden_size + widest_input(&self.geom) + cell_scratch_len(C::GATES, &self.geom);
        (2 * (self.geom.step_len() + 1))
            .checked_mul(max_steps)
            .and_then(|n| n.checked_add(fixed))
            .ok_or_else(|| self.size_overflow(&format!("scratch for {max_steps} steps")))
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
        let x_len = self.mul("input", steps, g.input_size)?;
        check_buffers(
            &self.name,
            &[
                ("input", x_len, x.len()),
                ("trace", self.try_trace_len(steps)?, trace.len()),
                ("output", g.out_len(), y.len()),
            ],
        )?;
        let (sl, rec) = (g.step_len(), C::record_len(g.hidden_size));
        // Every index below is within these checked sizes.
        let (outs, rest) = trace.split_at_mut(self.outputs_len(steps)?);
        let (recs, rest) = rest.split_at_mut(self.records_len(steps)?);
        for layer in 0..g.num_layers {
            let (before, current) = outs.split_at_mut(layer * steps * sl);
            let out = &mut current[..steps * sl];
            let input = if layer == 0 { &x[..x_len] } else { &before[(layer - 1) * steps * sl..] };
            for dir in 0..g.directions() {
                let recs = &mut recs[(layer * g.directions() + dir) * steps * rec..][..steps * rec];
                self.forward_direction(layer, dir, steps, input, recs, out)?;
            }
        }
        // The pooled output, kept in the trace too.
        let y = &mut y[..sl];
        self.pool(&outs[(g.num_layers - 1) * steps * sl..], steps, y);
        rest[..sl].copy_from_slice(y);
        Ok(())
    }

    /// Direction `dir` of stacked layer `layer` over its reading order: the records `recs`
    /// `[steps][record_len]` and its half of the outputs `out` `[steps][S]`. A NaN or infinite
    /// state is [`Error::Overflow`] at its step.
    fn forward_direction(
        &self,
        layer: usize,
        dir: usize,
        steps: usize,
        input: &[f32],
        recs: &mut [f32],
        out: &mut [f32],
    ) -> Result<()> {
        let g = self.geom;
        let (d, sl, rec, in_len) = (g.hidden_size, g.step_len(), C::record_len(g.hidden_size), g.layer_input(layer));
        let rows = C::GATES * d;
        let w = &self.cells[layer * g.directions() + dir];
        // W_ih x_t + b_ih for every step at once, into the first `rows` of each record.
        gemm(
            1.0,
            MatRef::row_major(&input[..steps * in_len], steps, in_len),
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
            let h_t = &mut h_t[dir * d..(dir + 1) * d];
            C::forward_step(w, d, rec_t, rec_p, h_p, h_t);
            if !max_abs(h_t).is_finite() {
                let v = h_t.iter().find(|v| !v.is_finite()).copied().unwrap_or(f32::NAN);
                let what =
                    format!("its hidden state holds {v}: the input holds NaN, or it or the weights are too large");
                return Err(self.overflow(layer, dir, t, what));
            }
        }
        Ok(())
    }

    /// The output `y` `[S]` pooled from the last layer's outputs `last` `[steps][S]`.
    fn pool(&self, last: &[f32], steps: usize, y: &mut [f32]) {
        let (d, sl) = (self.geom.hidden_size, self.geom.step_len());
        match self.geom.output {
            SeqOutput::Last => {
                y[..d].copy_from_slice(&last[(steps - 1) * sl..(steps - 1) * sl + d]);
                if self.geom.bidirectional {
                    y[d..].copy_from_slice(&last[d..sl]);
                }
            }
            SeqOutput::Mean => {
                y.fill(0.0);
                for row in last.chunks(sl).take(steps) {
                    y.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                let inv = 1.0 / steps as f32;
                y.iter_mut().for_each(|v| *v *= inv);
            }
            SeqOutput::Max => {
                y.copy_from_slice(&last[..sl]);
                for row in last.chunks(sl).take(steps).skip(1) {
                    y.iter_mut().zip(row).for_each(|(a, &v)| {
                        if v > *a {
                            *a = v;
                        }
                    });
                }
            }
        }
    }

    /// [`Error::Overflow`] of this layer at time step `t`, naming the stacked layer and the
    /// direction where there are several.
    fn overflow(&self, layer: usize, dir: usize, t: usize, what: String) -> Error {
        let place = match (self.geom.num_layers > 1, dir == 1) {
            (false, false) => String::new(),
            (false, true) => "reverse direction: ".to_string(),
            (true, false) => format!("stacked layer {layer}: "),
            (true, true) => format!("stacked layer {layer}, reverse direction: "),
        };
        Error::Overflow { layer: self.name.clone(), step: Some(t), what: format!("{place}{what}") }
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
    /// last, each direction backwards through its reading order ([`Self::backward_direction`]).
    /// A NaN or infinite result is [`Error::Overflow`], never `Ok`.
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
        let x_len = self.mul("input", steps, g.input_size)?;
        check_buffers(
            &self.name,
            &[
                ("input", x_len, x.len()),
                ("trace", self.try_trace_len(steps)?, trace.len()),
                (pass.output(), g.out_len(), seed.len()),
                (pass.input(), x_len, into.len()),
                ("scratch", self.try_scratch_len(steps)?, scratch.len()),
            ],
        )?;
        if let Some(i) = seed[..g.out_len()].iter().position(|v| !v.is_finite()) {
            let what = format!("the {} it receives holds {} at index {i}", pass.output(), seed[i]);
            return Err(Error::Overflow { layer: self.name.clone(), step: None, what });
        }
        let (sl, rec) = (g.step_len(), C::record_len(g.hidden_size));
        let (outs, rest) = trace.split_at(self.outputs_len(steps)?);
        let (recs, y) = rest.split_at(self.records_len(steps)?);
        // What arrives at a layer's outputs, and what leaves its inputs for the layer below: row
        // `t` stands for `2^e_t` times its values, `e_t` kept in `*_exp[t]` (an integer in f32,
        // exact below 2^24 in magnitude: [`exponent_in_f32`]).
        let (mut arriving, rest) = scratch.split_at_mut(steps * sl);
        let (mut spare, rest) = rest.split_at_mut(steps * sl);
        let (mut arriving_exp, rest) = rest.split_at_mut(steps);
        let (mut spare_exp, rest) = rest.split_at_mut(steps);
        let last = &outs[(g.num_layers - 1) * steps * sl..g.num_layers * steps * sl];
        // The seed scaled to a largest magnitude in [1, 2) (exact).
        let largest = seed[..g.out_len()].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let base = if largest > 0.0 { (largest as f64).log2().floor() as i32 } else { 0 };
        self.seed_outputs(pass, steps, last, &y[..sl], seed, pow2(-base), arriving);
        arriving_exp.fill(base as f32);
        for layer in (0..g.num_layers).rev() {
            let (target, mut target_exp) =
                if layer == 0 { (&mut into[..x_len], None) } else { (&mut spare[..], Some(&mut spare_exp[..])) };
            target.fill(0.0);
            if let Some(exps) = target_exp.as_deref_mut() {
                exps.fill(0.0);
            }
            for dir in 0..g.directions() {
                let run = Direction {
                    layer,
                    dir,
                    steps,
                    input: if layer == 0 { &x[..x_len] } else { &outs[(layer - 1) * steps * sl..layer * steps * sl] },
                    out: &outs[layer * steps * sl..(layer + 1) * steps * sl],
                    recs: &recs[(layer * g.directions() + dir) * steps * rec..][..steps * rec],
                    arriving,
                    arriving_exp,
                };
                self.backward_direction(pass, &run, target, target_exp.as_deref_mut(), rest)?;
            }
            if layer > 0 {
                std::mem::swap(&mut arriving, &mut spare);
                std::mem::swap(&mut arriving_exp, &mut spare_exp);
            }
        }
        Ok(())
    }

    /// What arrives at the last layer's outputs `[steps][S]` from the output's `seed` times
    /// `scale` (a power of two).
    #[allow(clippy::too_many_arguments)]
    fn seed_outputs(
        &self,
        pass: Pass,
        steps: usize,
        last: &[f32],
        y: &[f32],
        seed: &[f32],
        scale: f64,
        arriving: &mut [f32],
    ) {
        let (d, sl) = (self.geom.hidden_size, self.geom.step_len());
        let seed = |f: usize| (seed[f] as f64 * scale) as f32;
        arriving.fill(0.0);
        match self.geom.output {
            SeqOutput::Last => {
                // The forward direction's last state, and the reverse direction's at token 0.
                let (forward, reverse) = ((steps - 1) * sl..(steps - 1) * sl + d, d..sl);
                forward.chain(reverse).zip(0..sl).for_each(|(i, f)| arriving[i] = seed(f));
            }
            SeqOutput::Mean => {
                let inv = 1.0 / steps as f32;
                for (a_row, h_row) in arriving.chunks_mut(sl).zip(last.chunks(sl)) {
                    for f in 0..sl {
                        a_row[f] = match pass {
                            // Proportional rule: R_{h_t} = h_t (1/T) R_y / stab(y).
                            Pass::Relevance => h_row[f] * inv * self.lrp.ratio(seed(f), y[f]),
                            Pass::Gradient => seed(f) * inv,
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
                    arriving[best * sl + f] = seed(f);
                }
            }
        }
    }

    /// One direction backwards through its reading order, adding into `target` `[steps][input]`:
    /// the caller's input relevance (`target_exp = None`), or, for a stacked layer, the rows
    /// that arrive at the layer below, row `t` standing for `2^e_t` times its values (`e_t` as
    /// bits in `target_exp[t]`).
    ///
    /// Both passes are linear in what they carry, so the carried `R(h)`, `R(c)` are kept as
    /// `2^e` times the stored values, the stored ones rescaled by a power of two (exact) whenever
    /// their largest magnitude leaves `[2^-16, 2^16]`, and a step's input share is `2^e` times
    /// what the cell computes. So nothing overflows where the result is in range, and a result
    /// beyond f32, or a step whose stabilised denominators make NaN or infinity, is
    /// [`Error::Overflow`] at that step.
    fn backward_direction(
        &self,
        pass: Pass,
        run: &Direction<'_>,
        target: &mut [f32],
        mut target_exp: Option<&mut [f32]>,
        scratch: &mut [f32],
    ) -> Result<()> {
        let g = self.geom;
        let (d, sl, rec, in_len) =
            (g.hidden_size, g.step_len(), C::record_len(g.hidden_size), g.layer_input(run.layer));
        let (dir, steps) = (run.dir, run.steps);
        let (carry_h, rest) = scratch.split_at_mut(d);
        let (carry_c, rest) = rest.split_at_mut(d);
        let (x_step, tmp) = rest.split_at_mut(widest_input(&g));
        let x_step = &mut x_step[..in_len];
        carry_h.fill(0.0);
        carry_c.fill(0.0);
        let mut exp = 0i32;
        for s in (0..steps).rev() {
            let t = time_of(dir, s, steps);
            let p = s.checked_sub(1).map(|s| time_of(dir, s, steps));
            let at = |t: usize| t * sl + dir * d..t * sl + (dir + 1) * d;
            if absorb(carry_h, carry_c, &mut exp, &run.arriving[at(t)], run.arriving_exp[t] as i32) {
                exp = renormalise(carry_h, carry_c, exp).ok_or_else(|| {
                    let what = format!("the {} arriving at this step is NaN or infinite", pass.output());
                    self.overflow(run.layer, dir, t, what)
                })?;
            }
            let step = Step {
                w: &self.cells[run.layer * g.directions() + dir],
                hidden: d,
                x: &run.input[t * in_len..(t + 1) * in_len],
                rec: &run.recs[t * rec..(t + 1) * rec],
                prev: p.map(|p| &run.recs[p * rec..(p + 1) * rec]),
                h_prev: p.map(|p| &run.out[at(p)]),
            };
            x_step.fill(0.0);
            match pass {
                Pass::Relevance => C::relevance_step(&step, self.lrp, carry_h, carry_c, x_step, tmp),
                Pass::Gradient => C::gradient_step(&step, carry_h, carry_c, x_step, tmp),
            }
            let x_part = &mut target[t * in_len..(t + 1) * in_len];
            match target_exp.as_deref_mut() {
                None => add_scaled(x_part, x_step, exp),
                Some(exps) => {
                    let mut e_t = exps[t] as i32;
                    let _ = absorb(x_part, &mut [], &mut e_t, x_step, exp);
                    exps[t] = exponent_in_f32(e_t).ok_or_else(|| {
                        self.overflow(run.layer, dir, t, format!("the {} needs a scale of 2^{e_t}", pass.output()))
                    })?;
                }
            }
            if !max_abs(x_part).is_finite() {
                return Err(self.overflow(run.layer, dir, t, self.beyond_range(pass, x_step, exp)));
            }
            exp = renormalise(carry_h, carry_c, exp).ok_or_else(|| {
                let what = format!(
                    "the {} carried back through this step became NaN or infinite (a stabilised denominator \
                     near 0; epsilon = {})",
                    pass.output(),
                    self.lrp.eps
                );
                self.overflow(run.layer, dir, t, what)
            })?;
        }
        Ok(())
    }

    /// What [`Error::Overflow`] says when the input share `2^exp x_step` of a step is beyond f32.
    fn beyond_range(&self, pass: Pass, x_step: &[f32], exp: i32) -> String {
        let (layer_input, cause) = match pass {
            Pass::Relevance => (
                "relevance of its input",
                "the ratios of the stabilised denominators (and of the product rule) compound over the later \
                 steps; a larger epsilon or another product rule may keep it in range",
            ),
            Pass::Gradient => ("gradient of its input", "the gradient explodes backwards through time"),
        };
        let m = x_step.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let size = if m.is_finite() && m > 0.0 {
            format!("about 1e{:.0}", (exp as f64 + (m as f64).log2()) * std::f64::consts::LOG10_2)
        } else {
            "NaN".to_string()
        };
        format!("the {layer_input} at this step is beyond the range of f32 ({size}): {cause}")
    }
}

/// What one direction of one stacked layer reads in the backward passes.
struct Direction<'a> {
    layer: usize,
    dir: usize,
    steps: usize,
    /// The layer's input `[steps][input]`.
    input: &'a [f32],
    /// The layer's outputs `[steps][S]`.
    out: &'a [f32],
    /// This direction's records `[steps][record_len]`, by time.
    recs: &'a [f32],
    /// Relevance (or gradient) arriving at the layer's outputs `[steps][S]`: row `t` stands for
    /// `2^e_t` times its values.
    arriving: &'a [f32],
    /// `e_t` (as bits) of every row of `arriving`.
    arriving_exp: &'a [f32],
}

/// Bounds of the carried values' largest magnitude before [`renormalise`] rescales them.
const CARRY_RANGE: (f32, f32) = (1.0 / 65536.0, 65536.0);

/// The exponent `e` stored in an f32 buffer: exact while `|e| < 2^24` (beyond, a result would
/// be some `2^(2^24)` times its stored values, far outside f32: `None`).
fn exponent_in_f32(e: i32) -> Option<f32> {
    (e.unsigned_abs() < 1 << 24).then_some(e as f32)
}

/// `2^e` as f64 (`e` clamped to f64's normal range, which is far beyond f32's).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e.clamp(-1022, 1023) + 1023) as u64) << 52)
}

/// `2^e` as f32 where it is a normal f32.
fn pow2_f32(e: i32) -> Option<f32> {
    (-126..=127).contains(&e).then(|| f32::from_bits(((e + 127) as u32) << 23))
}

/// `dst += 2^e src`; `2^e src` is the exact product rounded to f32 (exact in range, infinite
/// above it), in f32 where `2^e` is one, else through f64.
fn add_scaled(dst: &mut [f32], src: &[f32], e: i32) {
    match (e, pow2_f32(e)) {
        (0, _) => dst.iter_mut().zip(src).for_each(|(d, s)| *d += s),
        (_, Some(f)) => dst.iter_mut().zip(src).for_each(|(d, s)| *d += s * f),
        (_, None) => {
            let f = pow2(e);
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += (s as f64 * f) as f32);
        }
    }
}

/// `v *= 2^e`, rounded as in [`add_scaled`].
fn scale(v: &mut [f32], e: i32) {
    match pow2_f32(e) {
        Some(f) => v.iter_mut().for_each(|x| *x *= f),
        None => {
            let f = pow2(e);
            v.iter_mut().for_each(|x| *x = (*x as f64 * f) as f32);
        }
    }
}

/// `(a, b) += 2^e_src (src, 0)` for `(a, b)` stored as `2^e` times their values: `(a, b)` move
/// to the scale of `src` first where that is larger, or where they are zero (powers of two:
/// exact). Returns whether `src` was non-zero (else nothing changed).
fn absorb(a: &mut [f32], b: &mut [f32], e: &mut i32, src: &[f32], e_src: i32) -> bool {
    if max_abs(src) == 0.0 {
        return false;
    }
    if max_abs(a) == 0.0 && max_abs(b) == 0.0 {
        *e = e_src;
    } else if e_src > *e {
        scale(a, e.saturating_sub(e_src));
        scale(b, e.saturating_sub(e_src));
        *e = e_src;
    }
    add_scaled(a, src, e_src.saturating_sub(*e));
    true
}

/// Rescales `a` and `b` by one power of two `2^-k` when their largest magnitude is outside
/// [`CARRY_RANGE`] (exact) and returns `e + k`; `None` if a value is NaN or infinite.
fn renormalise(a: &mut [f32], b: &mut [f32], e: i32) -> Option<i32> {
    let (ma, mb) = (max_abs(a), max_abs(b));
    if !(ma.is_finite() && mb.is_finite()) {
        return None;
    }
    let m = ma.max(mb);
    if m == 0.0 || (CARRY_RANGE.0..=CARRY_RANGE.1).contains(&m) {
        return Some(e);
    }
    let k = (m as f64).log2().floor() as i32;
    scale(a, -k);
    scale(b, -k);
    Some(e.saturating_add(k))
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

            /// Every cell's weights, layer-major, direction-minor (the GPU layers upload them).
            #[cfg(feature = "cuda")]
            pub(crate) fn cells(&self) -> &[CellWeights] {
                self.core.cells()
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

            /// f32 elements of the forward trace for up to `max_steps` steps, or
            /// [`Error::SizeOverflow`](crate::Error::SizeOverflow) when that overflows `usize`.
            pub fn try_trace_len(&self, max_steps: usize) -> Result<usize> {
                self.core.try_trace_len(max_steps)
            }

            /// f32 elements of scratch [`Self::relevance`] and [`Self::gradient`] need for up to
            /// `max_steps` steps, or [`Error::SizeOverflow`](crate::Error::SizeOverflow).
            pub fn try_scratch_len(&self, max_steps: usize) -> Result<usize> {
                self.core.try_scratch_len(max_steps)
            }

            /// [`Self::try_trace_len`], `usize::MAX` where it overflows (no buffer fits then).
            pub fn trace_len(&self, max_steps: usize) -> usize {
                self.core.try_trace_len(max_steps).unwrap_or(usize::MAX)
            }

            /// [`Self::try_scratch_len`], `usize::MAX` where it overflows (no buffer fits then).
            pub fn scratch_len(&self, max_steps: usize) -> usize {
                self.core.try_scratch_len(max_steps).unwrap_or(usize::MAX)
            }

            /// Forward pass over `x` = `[steps, input_size]`, writing the trace and the output
            /// `y` `[geom.out_len()]`; the initial states are zero. A NaN or infinite state is
            /// [`Error::Overflow`](crate::Error::Overflow) naming its time step.
            pub fn forward(&self, x: &[f32], steps: usize, trace: &mut [f32], y: &mut [f32]) -> Result<()> {
                self.core.forward(x, steps, trace, y)
            }

            /// LRP: the relevance `r_in` `[steps, input_size]` (overwritten) of every input from
            /// the output relevance `r_out` `[out_len]`, using the trace of the last forward pass
            /// over `x`. Intermediate values are rescaled by powers of two (exact), so this fails
            /// only where a result is beyond f32: [`Error::Overflow`](crate::Error::Overflow)
            /// naming the time step, never `Ok` with NaN or infinity.
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

            /// The exact gradient `g_in = d<g_out, y>/dx` `[steps, input_size]` (overwritten);
            /// overflow as for [`Self::relevance`].
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

/// `max |v_i|`, NaN if some `v_i` is NaN (0 for an empty `v`): the largest bit pattern of
/// `|v_i|` (for non-negative floats the integer order is the float order, NaN above infinity),
/// in eight lanes so that it vectorises; the passes call it on every step's vectors.
fn max_abs(v: &[f32]) -> f32 {
    let mut lanes = [0u32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = (*l).max(x.to_bits() & 0x7fff_ffff);
        }
    }
    f32::from_bits(rest.iter().map(|x| x.to_bits() & 0x7fff_ffff).chain(lanes).fold(0, u32::max))
}
