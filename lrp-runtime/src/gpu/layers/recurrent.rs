//! Recurrent layers on a device ([`GpuRecurrent`]: an [`Lstm`] or a [`Gru`], stacked and
//! bidirectional as on the CPU) and the embedding lookup ([`GpuEmbedding`]).
//!
//! One sequence per call, at an offset of a buffer that may hold several back to back. Per
//! stacked layer and direction, the forward pass runs one product for the input projections of
//! all steps (`X W_ih^T`), then per step a product `h_{t-1} W_hh^T` and the cell's kernel; the
//! backward passes run per step the cell's kernel, the products `s W_ih` and `s W_hh`, and the
//! scale bookkeeping of the CPU ([`ops::carry`]): the carried values are kept as `2^e` times their
//! stored values, so results agree with the CPU layer wherever they are in range, and a result
//! beyond f32 is the CPU's [`Error::Overflow`] at the same step, never `Ok`.
//!
//! Trace of `T` steps (`S = directions * hidden`): the outputs of every stacked layer
//! `[num_layers][T][S]`, the records `[num_layers][directions][T * 9 hidden]` (see
//! [`crate::gpu::ops::recurrent`]), the output `y` `[S]`; [`GpuRecurrent::trace_len`] is the CPU layer's.

use crate::error::{Error, Result};
use crate::gpu::ops::recurrent::{self as ops, CarryIo, CarryOp, CellKind, Pass, RECORD, STATE_LEN, SeqShape, StepAt};
use crate::gpu::{Device, DeviceBuffer, Mat, MatMut, gemm};
use crate::layers::{Embedding, Gru, Lstm, ProductRule, RecurrentGeom};

/// The weights of one direction of one stacked layer.
struct GpuCell {
    w_ih: DeviceBuffer,
    w_hh: DeviceBuffer,
    b_ih: DeviceBuffer,
    b_hh: DeviceBuffer,
}

/// An `nn.LSTM` or `nn.GRU` (any number of stacked layers, uni- or bidirectional) over one
/// sequence on a device, with the product rule and epsilon of the CPU layer it was made from.
pub struct GpuRecurrent {
    name: String,
    cell: CellKind,
    geom: RecurrentGeom,
    rule: ProductRule,
    eps: f32,
    /// Layer-major, direction-minor.
    cells: Vec<GpuCell>,
}

/// Scratch of [`GpuRecurrent`]'s passes for sequences of up to `capacity` steps: the input
/// projections, what arrives at a layer's outputs and leaves its inputs (with their exponents),
/// and one step's vectors.
pub struct RecurrentScratch {
    capacity: usize,
    /// Largest `(G hidden, hidden, S, layer input)` of the layers it was made for.
    sizes: [usize; 4],
    xp: DeviceBuffer,
    hh: DeviceBuffer,
    rows: [DeviceBuffer; 2],
    exps: [DeviceBuffer; 2],
    work: StepWork,
}

/// One backward step's vectors and the passes' state.
struct StepWork {
    r_h: DeviceBuffer,
    r_c: DeviceBuffer,
    hd: DeviceBuffer,
    ch: DeviceBuffer,
    s_x: DeviceBuffer,
    s_h: DeviceBuffer,
    cx: DeviceBuffer,
    x_step: DeviceBuffer,
    state: DeviceBuffer,
}

fn overflow(what: &str) -> Error {
    Error::SizeOverflow { what: what.to_string() }
}

impl RecurrentScratch {
    /// Scratch for sequences of up to `max_steps` steps through any of `layers`.
    pub fn new(device: &Device, max_steps: usize, layers: &[&GpuRecurrent]) -> Result<Self> {
        let mut sizes = [0; 4];
        for l in layers {
            for (s, v) in sizes.iter_mut().zip(l.sizes()) {
                *s = (*s).max(v);
            }
        }
        let [rows, d, sl, widest] = sizes;
        let len = |per: usize| max_steps.checked_mul(per).ok_or_else(|| overflow("GPU recurrent scratch"));
        let zeros = |what: &str, n: usize| device.zeros(what, n);
        Ok(RecurrentScratch {
            capacity: max_steps,
            sizes,
            xp: zeros("input projections", len(rows)?)?,
            hh: zeros("recurrent projection", rows)?,
            rows: [zeros("arriving rows", len(sl)?)?, zeros("leaving rows", len(sl)?)?],
            exps: [zeros("arriving exponents", max_steps)?, zeros("leaving exponents", max_steps)?],
            work: StepWork {
                r_h: zeros("carried h", d)?,
                r_c: zeros("carried c", d)?,
                hd: zeros("direct share of h", d)?,
                ch: zeros("share of h", d)?,
                s_x: zeros("input ratios", rows)?,
                s_h: zeros("recurrent ratios", rows)?,
                cx: zeros("share of x", widest)?,
                x_step: zeros("step input share", widest)?,
                state: zeros("recurrent state", STATE_LEN)?,
            },
        })
    }

    /// An error unless a sequence of `steps` steps through `layer` fits.
    fn check(&self, layer: &GpuRecurrent, steps: usize) -> Result<()> {
        if steps > self.capacity {
            return Err(Error::SequenceLength { length: steps, capacity: self.capacity });
        }
        if layer.sizes().iter().zip(&self.sizes).any(|(need, have)| need > have) {
            return Err(Error::InvalidParameter {
                what: format!("GPU scratch of recurrent layer `{}`", layer.name),
                message: format!("made for sizes {:?}, the layer needs {:?}", self.sizes, layer.sizes()),
            });
        }
        Ok(())
    }
}

/// Offsets in a trace of `steps` steps; each lies below `len`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    steps: usize,
    hidden: usize,
    dirs: usize,
    sl: usize,
    /// Records of one layer and direction: `steps * 9 hidden`.
    rec: usize,
    /// Elements of the outputs of all layers.
    outputs: usize,
    len: usize,
}

impl Layout {
    /// `h_t` of direction `dir` of stacked layer `layer`.
    fn out(&self, layer: usize, t: usize, dir: usize) -> usize {
        (layer * self.steps + t) * self.sl + dir * self.hidden
    }

    /// The records of direction `dir` of stacked layer `layer`.
    fn rec(&self, layer: usize, dir: usize) -> usize {
        self.outputs + (layer * self.dirs + dir) * self.rec
    }

    /// The pooled output.
    fn y(&self) -> usize {
        self.len - self.sl
    }

    fn shape(&self) -> SeqShape {
        SeqShape { steps: self.steps, hidden: self.hidden, directions: self.dirs }
    }
}

/// The time step read at position `s` of direction `dir`'s reading order.
fn time_of(dir: usize, s: usize, steps: usize) -> usize {
    if dir == 0 { s } else { steps - 1 - s }
}

/// What one direction of one stacked layer reads in a backward pass: its input (the layer's
/// input sequence at an offset), the trace, and what arrives at its outputs with the exponents.
struct Run<'a> {
    layer: usize,
    dir: usize,
    lay: Layout,
    input: (&'a DeviceBuffer, usize),
    trace: (&'a DeviceBuffer, usize),
    arriving: (&'a DeviceBuffer, &'a DeviceBuffer),
}

impl GpuRecurrent {
    /// Uploads an LSTM (its weights, product rule and epsilon).
    pub fn from_lstm(device: &Device, layer: &Lstm) -> Result<Self> {
        let cells = layer.cells().iter().map(|c| [&c.w_ih[..], &c.w_hh[..], &c.b_ih[..], &c.b_hh[..]]);
        let cells = cells.collect::<Vec<_>>();
        Self::upload(device, (layer.name(), CellKind::Lstm, *layer.geom()), (layer.rule(), layer.epsilon()), &cells)
    }

    /// Uploads a GRU (its weights, product rule and epsilon).
    pub fn from_gru(device: &Device, layer: &Gru) -> Result<Self> {
        let cells = layer.cells().iter().map(|c| [&c.w_ih[..], &c.w_hh[..], &c.b_ih[..], &c.b_hh[..]]);
        let cells = cells.collect::<Vec<_>>();
        Self::upload(device, (layer.name(), CellKind::Gru, *layer.geom()), (layer.rule(), layer.epsilon()), &cells)
    }

    fn upload(
        device: &Device,
        (name, cell, geom): (&str, CellKind, RecurrentGeom),
        (rule, eps): (ProductRule, f32),
        cells: &[[&[f32]; 4]],
    ) -> Result<Self> {
        let mut uploaded = Vec::with_capacity(cells.len());
        for (i, [w_ih, w_hh, b_ih, b_hh]) in cells.iter().enumerate() {
            let suffix = RecurrentGeom::suffix(i / geom.directions(), i % geom.directions());
            let up = |what: &str, v: &[f32]| device.upload(&format!("{name}.{what}_{suffix}"), v);
            uploaded.push(GpuCell {
                w_ih: up("weight_ih", w_ih)?,
                w_hh: up("weight_hh", w_hh)?,
                b_ih: up("bias_ih", b_ih)?,
                b_hh: up("bias_hh", b_hh)?,
            });
        }
        Ok(GpuRecurrent { name: name.to_string(), cell, geom, rule, eps, cells: uploaded })
    }

    /// The layer's name (PyTorch's module path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// LSTM or GRU.
    pub fn cell(&self) -> CellKind {
        self.cell
    }

    pub fn geom(&self) -> &RecurrentGeom {
        &self.geom
    }

    /// The product rule and the epsilon of the linear maps inside the cell.
    pub fn rule(&self) -> (ProductRule, f32) {
        (self.rule, self.eps)
    }

    /// `(G hidden, hidden, S, widest layer input)`.
    fn sizes(&self) -> [usize; 4] {
        let g = &self.geom;
        [self.cell.gates() * g.hidden_size, g.hidden_size, g.step_len(), g.input_size.max(g.step_len())]
    }

    /// f32 elements of the trace of a sequence of up to `max_steps` steps (the CPU layer's
    /// `trace_len`), or [`Error::SizeOverflow`].
    pub fn trace_len(&self, max_steps: usize) -> Result<usize> {
        self.layout_unchecked(max_steps).map(|l| l.len)
    }

    fn layout_unchecked(&self, steps: usize) -> Result<Layout> {
        let g = &self.geom;
        let (d, dirs, sl) = (g.hidden_size, g.directions(), g.step_len());
        let size = || overflow(&format!("the trace for {steps} steps of recurrent layer `{}`", self.name));
        let rec = steps.checked_mul(RECORD * d).ok_or_else(size)?;
        let outputs = (g.num_layers * sl).checked_mul(steps).ok_or_else(size)?;
        let records = (g.num_layers * dirs).checked_mul(rec).ok_or_else(size)?;
        let len = outputs.checked_add(records).and_then(|n| n.checked_add(sl)).ok_or_else(size)?;
        Ok(Layout { steps, hidden: d, dirs, sl, rec, outputs, len })
    }

    /// The layout of `steps` steps, checked: `1 <= steps <= u32::MAX`, `scratch` fits, and
    /// `x` (`steps * input_size` values), the trace and `(buffer, offset, len)` of `others` lie
    /// inside their buffers.
    fn layout(
        &self,
        steps: usize,
        scratch: &RecurrentScratch,
        (x, trace): ((&DeviceBuffer, usize), (&DeviceBuffer, usize)),
        others: &[(&DeviceBuffer, usize, usize)],
    ) -> Result<Layout> {
        if steps == 0 || u32::try_from(steps).is_err() {
            return Err(Error::InvalidParameter {
                what: format!("sequence length of recurrent layer `{}`", self.name),
                message: format!("steps must be >= 1 and fit u32, got {steps}"),
            });
        }
        scratch.check(self, steps)?;
        let lay = self.layout_unchecked(steps)?;
        let x_len = steps.checked_mul(self.geom.input_size).ok_or_else(|| overflow("a recurrent layer's input"))?;
        x.0.range(x.1, x_len)?;
        trace.0.range(trace.1, lay.len)?;
        for &(b, offset, len) in others {
            b.range(offset, len)?;
        }
        Ok(lay)
    }

    /// Forward pass over `x` (`[steps, input_size]` from its offset on), writing the trace and
    /// `y` (`[geom.out_len()]` from its offset on); the initial states are zero. A NaN or
    /// infinite state is [`Error::Overflow`] naming its time step, as on the CPU.
    pub fn forward(
        &self,
        device: &Device,
        x: (&DeviceBuffer, usize),
        steps: usize,
        (trace, t0): (&mut DeviceBuffer, usize),
        y: (&mut DeviceBuffer, usize),
        scratch: &mut RecurrentScratch,
    ) -> Result<()> {
        let sl = self.geom.step_len();
        let lay = self.layout(steps, scratch, (x, (&*trace, t0)), &[(&*y.0, y.1, sl)])?;
        for layer in 0..self.geom.num_layers {
            for dir in 0..lay.dirs {
                self.forward_direction(device, (layer, dir), lay, x, (&mut *trace, t0), scratch)?;
            }
        }
        ops::check_forward(device, (&*trace, t0), &mut scratch.work.state, self.geom.num_layers, lay.shape())?;
        self.status(device, &scratch.work.state, None)?;
        let last = t0 + lay.out(self.geom.num_layers - 1, 0, 0);
        ops::pool(device, trace, (last, t0 + lay.y()), y, lay.shape(), self.geom.output)
    }

    /// Direction `dir` of stacked layer `layer`: `X W_ih^T` for all steps, then per step in
    /// reading order `h_{t-1} W_hh^T` and the cell's kernel.
    fn forward_direction(
        &self,
        device: &Device,
        (layer, dir): (usize, usize),
        lay: Layout,
        x: (&DeviceBuffer, usize),
        (trace, t0): (&mut DeviceBuffer, usize),
        scratch: &mut RecurrentScratch,
    ) -> Result<()> {
        let (steps, d) = (lay.steps, lay.hidden);
        let (rows, in_len) = (self.cell.gates() * d, self.geom.layer_input(layer));
        let c = &self.cells[layer * lay.dirs + dir];
        let input = if layer == 0 { x } else { (&*trace, t0 + lay.out(layer - 1, 0, 0)) };
        gemm(
            device,
            1.0,
            Mat { buffer: input.0, offset: input.1, rows: steps, cols: in_len, transposed: false },
            Mat { buffer: &c.w_ih, offset: 0, rows, cols: in_len, transposed: true },
            0.0,
            MatMut { buffer: &mut scratch.xp, offset: 0, rows: steps, cols: rows },
        )?;
        for s in 0..steps {
            let (t, p) = (time_of(dir, s, steps), s.checked_sub(1).map(|s| time_of(dir, s, steps)));
            if let Some(p) = p {
                gemm(
                    device,
                    1.0,
                    Mat { buffer: &*trace, offset: t0 + lay.out(layer, p, dir), rows: 1, cols: d, transposed: false },
                    Mat { buffer: &c.w_hh, offset: 0, rows, cols: d, transposed: true },
                    0.0,
                    MatMut { buffer: &mut scratch.hh, offset: 0, rows: 1, cols: rows },
                )?;
            }
            let io = ops::ForwardIo {
                rec: t0 + lay.rec(layer, dir),
                h: t0 + lay.out(layer, t, dir),
                h_prev: t0 + lay.out(layer, p.unwrap_or(t), dir),
                xp: (&scratch.xp, t * rows),
                hh: &scratch.hh,
                b_ih: &c.b_ih,
                b_hh: &c.b_hh,
            };
            ops::forward_step(device, self.cell, StepAt { steps, hidden: d, t, prev: p }, trace, io)?;
        }
        Ok(())
    }

    /// LRP: the relevance `r_in` (`[steps, input_size]` from its offset on, overwritten) of
    /// every input from the output relevance `r_out` (`[out_len]`), using the trace of the forward
    /// pass over `x`. Fails only where the CPU layer fails ([`Error::Overflow`] at its step).
    #[allow(clippy::too_many_arguments)]
    pub fn relevance(
        &self,
        device: &Device,
        x: (&DeviceBuffer, usize),
        steps: usize,
        trace: (&DeviceBuffer, usize),
        r_out: (&DeviceBuffer, usize),
        r_in: (&mut DeviceBuffer, usize),
        scratch: &mut RecurrentScratch,
    ) -> Result<()> {
        let pass = Pass::Relevance { rule: self.rule, eps: self.eps };
        self.backward(device, pass, (x, steps, trace), r_out, r_in, scratch)
    }

    /// The exact gradient `g_in = d<g_out, y>/dx` (`[steps, input_size]` from its offset on,
    /// overwritten); errors as for [`Self::relevance`].
    #[allow(clippy::too_many_arguments)]
    pub fn gradient(
        &self,
        device: &Device,
        x: (&DeviceBuffer, usize),
        steps: usize,
        trace: (&DeviceBuffer, usize),
        g_out: (&DeviceBuffer, usize),
        g_in: (&mut DeviceBuffer, usize),
        scratch: &mut RecurrentScratch,
    ) -> Result<()> {
        self.backward(device, Pass::Gradient, (x, steps, trace), g_out, g_in, scratch)
    }

    /// Relevance or gradient of the inputs from that of the output, layer by layer from the
    /// last, each direction backwards through its reading order; the state is read back once.
    fn backward(
        &self,
        device: &Device,
        pass: Pass,
        (x, steps, trace): ((&DeviceBuffer, usize), usize, (&DeviceBuffer, usize)),
        seed: (&DeviceBuffer, usize),
        into: (&mut DeviceBuffer, usize),
        scratch: &mut RecurrentScratch,
    ) -> Result<()> {
        let (sl, input) = (self.geom.step_len(), self.geom.input_size);
        let x_len = steps.saturating_mul(input);
        let lay = self.layout(steps, scratch, (x, trace), &[(seed.0, seed.1, sl), (&*into.0, into.1, x_len)])?;
        let RecurrentScratch { rows: [r0, r1], exps: [e0, e1], work, .. } = scratch;
        ops::seed_scale(device, seed, &mut work.state, e0, lay.shape())?;
        let outs = (trace.0, trace.1 + lay.out(self.geom.num_layers - 1, 0, 0), trace.1 + lay.y());
        ops::seed(device, r0, seed, &work.state, outs, lay.shape(), (self.geom.output, pass))?;
        let mut flipped = false;
        for layer in (0..self.geom.num_layers).rev() {
            let (arriving, arriving_exp, spare, spare_exp) =
                if flipped { (&*r1, &*e1, &mut *r0, &mut *e0) } else { (&*r0, &*e0, &mut *r1, &mut *e1) };
            let in_len = self.geom.layer_input(layer);
            let (target, input) = match layer {
                0 => ((&mut *into.0, into.1), x),
                _ => ((spare, 0), (trace.0, trace.1 + lay.out(layer - 1, 0, 0))),
            };
            ops::fill(device, (&mut *target.0, target.1), steps * in_len, 0.0)?;
            ops::fill(device, (&mut *spare_exp, 0), steps, 0.0)?;
            for dir in 0..lay.dirs {
                let run = Run { layer, dir, lay, input, trace, arriving: (arriving, arriving_exp) };
                self.backward_direction(device, pass, &run, ((&mut *target.0, target.1), &mut *spare_exp), work)?;
            }
            flipped ^= layer > 0;
        }
        self.status(device, &work.state, Some(pass))
    }

    /// One direction backwards through its reading order, adding into `target` `[steps][input]`
    /// (a stacked layer's: with the exponents `target_exp`).
    fn backward_direction(
        &self,
        device: &Device,
        pass: Pass,
        run: &Run<'_>,
        (target, target_exp): ((&mut DeviceBuffer, usize), &mut DeviceBuffer),
        w: &mut StepWork,
    ) -> Result<()> {
        let (steps, dir) = (run.lay.steps, run.dir);
        let op = |t: usize, next: Option<usize>| CarryOp {
            reset: false,
            step_in: true,
            row_exp: run.layer > 0,
            next: next.is_some(),
            hidden: run.lay.hidden,
            in_len: self.geom.layer_input(run.layer),
            t,
            t_next: next.unwrap_or(t),
            place: 2 * run.layer + dir,
        };
        // Clear the carried values and take what arrives at the first step.
        let first = time_of(dir, steps - 1, steps);
        let start = CarryOp { reset: true, step_in: false, ..op(first, Some(first)) };
        self.carry(device, run, (&mut *target.0, target.1, &mut *target_exp), w, start)?;
        for s in (0..steps).rev() {
            let (t, p) = (time_of(dir, s, steps), s.checked_sub(1).map(|s| time_of(dir, s, steps)));
            self.step_back(device, pass, run, (t, p), w)?;
            self.carry(device, run, (&mut *target.0, target.1, &mut *target_exp), w, op(t, p))?;
        }
        Ok(())
    }

    /// One backward step at time `t` (`p`: the step before in reading order): the cell's kernel,
    /// the products `cx = s_x W_ih` and `ch = s_h W_hh`, then the carried `R(h_{t-1})` and the
    /// step's input share.
    fn step_back(
        &self,
        device: &Device,
        pass: Pass,
        run: &Run<'_>,
        (t, p): (usize, Option<usize>),
        w: &mut StepWork,
    ) -> Result<()> {
        let (lay, layer, dir) = (run.lay, run.layer, run.dir);
        let (d, in_len) = (lay.hidden, self.geom.layer_input(layer));
        let (rows, c) = (self.cell.gates() * d, &self.cells[layer * lay.dirs + dir]);
        let h_prev = (run.trace.0, run.trace.1 + lay.out(layer, p.unwrap_or(t), dir));
        let io = ops::BackwardIo {
            rec: (run.trace.0, run.trace.1 + lay.rec(layer, dir)),
            h_prev,
            carry_h: &w.r_h,
            carry_c: &mut w.r_c,
            s_x: &mut w.s_x,
            s_h: &mut w.s_h,
            hd: &mut w.hd,
        };
        ops::backward_step(device, self.cell, pass, StepAt { steps: lay.steps, hidden: d, t, prev: p }, io)?;
        let s_x = Mat { buffer: &w.s_x, offset: 0, rows: 1, cols: rows, transposed: false };
        let w_ih = Mat { buffer: &c.w_ih, offset: 0, rows, cols: in_len, transposed: false };
        gemm(device, 1.0, s_x, w_ih, 0.0, MatMut { buffer: &mut w.cx, offset: 0, rows: 1, cols: in_len })?;
        if p.is_some() {
            let s_h = if self.cell == CellKind::Lstm { &w.s_x } else { &w.s_h };
            let s_h = Mat { buffer: s_h, offset: 0, rows: 1, cols: rows, transposed: false };
            let w_hh = Mat { buffer: &c.w_hh, offset: 0, rows, cols: d, transposed: false };
            gemm(device, 1.0, s_h, w_hh, 0.0, MatMut { buffer: &mut w.ch, offset: 0, rows: 1, cols: d })?;
        }
        let io = ops::SharesIo {
            carry_h: &mut w.r_h,
            x_step: &mut w.x_step,
            hd: &w.hd,
            ch: &w.ch,
            h_prev,
            x: (run.input.0, run.input.1 + t * in_len),
            cx: &w.cx,
        };
        ops::step_shares(device, io, (d, in_len), p.is_some(), pass)
    }

    /// [`ops::carry`] of `op` on this direction: the target row of step `op.t` in `target` (rows
    /// from its offset on, exponents in `target_exp`), what arrives at step `op.t_next`.
    fn carry(
        &self,
        device: &Device,
        run: &Run<'_>,
        (target, offset, target_exp): (&mut DeviceBuffer, usize, &mut DeviceBuffer),
        w: &mut StepWork,
        op: CarryOp,
    ) -> Result<()> {
        let io = CarryIo {
            target: (target, offset + op.t * op.in_len),
            target_exp: (target_exp, op.t),
            x_step: &w.x_step,
            carry: (&mut w.r_h, &mut w.r_c),
            state: &mut w.state,
            next: (run.arriving.0, op.t_next * run.lay.sl + run.dir * run.lay.hidden),
            next_exp: (run.arriving.1, op.t_next),
        };
        ops::carry(device, io, op)
    }

    /// The first error a pass recorded in `state` (read back from the device), as the CPU layer
    /// reports it; `pass`: `None` for the forward pass.
    fn status(&self, device: &Device, state: &DeviceBuffer, pass: Option<Pass>) -> Result<()> {
        use ops::state::*;
        let mut s = [0.0f32; STATE_LEN];
        device.read(state, 0, &mut s)?;
        let code = s[CODE].to_bits();
        if code == 0 {
            return Ok(());
        }
        let (step, place, value, scale) = (s[STEP].to_bits(), s[PLACE].to_bits(), s[VALUE], s[SCALE].to_bits() as i32);
        let (output, input) = match pass {
            Some(Pass::Gradient) => ("output gradient", "gradient of its input"),
            _ => ("output relevance", "relevance of its input"),
        };
        let what = match code {
            FAIL_STATE => {
                format!("its hidden state holds {value}: the input holds NaN, or it or the weights are too large")
            }
            FAIL_SEED => {
                let what = format!("the {output} it receives holds {value} at index {step}");
                return Err(Error::Overflow { layer: self.name.clone(), step: None, what });
            }
            FAIL_ARRIVING => format!("the {output} arriving at this step is NaN or infinite"),
            FAIL_EXPONENT => format!("the {output} needs a scale of 2^{scale}"),
            FAIL_RANGE => beyond_range(pass, input, value, scale),
            FAIL_CARRY => format!(
                "the {output} carried back through this step became NaN or infinite (a stabilised denominator near \
                 0; epsilon = {})",
                self.eps
            ),
            _ => {
                let message = format!("unknown error code {code}");
                return Err(Error::Gpu { what: format!("recurrent layer `{}`", self.name), message });
            }
        };
        let (layer, reverse) = (place / 2, place % 2 == 1);
        let where_ = match (self.geom.num_layers > 1, reverse) {
            (false, false) => String::new(),
            (false, true) => "reverse direction: ".to_string(),
            (true, false) => format!("stacked layer {layer}: "),
            (true, true) => format!("stacked layer {layer}, reverse direction: "),
        };
        Err(Error::Overflow { layer: self.name.clone(), step: Some(step as usize), what: format!("{where_}{what}") })
    }
}

/// What [`Error::Overflow`] says when a step's input share `2^exp x_step` (`m = max |x_step|`) is
/// beyond f32 (the CPU layer's words).
fn beyond_range(pass: Option<Pass>, input: &str, m: f32, exp: i32) -> String {
    let cause = match pass {
        Some(Pass::Gradient) => "the gradient explodes backwards through time",
        _ => {
            "the ratios of the stabilised denominators (and of the product rule) compound over the later steps; a \
             larger epsilon or another product rule may keep it in range"
        }
    };
    let size = if m.is_finite() && m > 0.0 {
        format!("about 1e{:.0}", (exp as f64 + (m as f64).log2()) * std::f64::consts::LOG10_2)
    } else {
        "NaN".to_string()
    };
    format!("the {input} at this step is beyond the range of f32 ({size}): {cause}")
}

/// `nn.Embedding` on a device: rows of its table gathered by token id.
pub struct GpuEmbedding {
    name: String,
    vocab: usize,
    dim: usize,
    table: DeviceBuffer,
}

impl GpuEmbedding {
    /// Uploads the table of `layer`.
    pub fn upload(device: &Device, layer: &Embedding) -> Result<Self> {
        let (name, table) = layer.table();
        Ok(GpuEmbedding {
            name: name.to_string(),
            vocab: layer.num_embeddings(),
            dim: layer.embedding_dim(),
            table: device.upload(&format!("{name}.weight"), table)?,
        })
    }

    pub fn num_embeddings(&self) -> usize {
        self.vocab
    }

    pub fn embedding_dim(&self) -> usize {
        self.dim
    }

    /// A device buffer for the token ids of up to `max_tokens` tokens ([`Self::forward`]'s `ids`).
    pub fn ids_buffer(device: &Device, max_tokens: usize) -> Result<DeviceBuffer> {
        device.zeros("token ids", max_tokens)
    }

    /// `out[t] = weight[tokens[t]]` (`[tokens.len(), embedding_dim]` from its offset on); the ids
    /// are checked (`< num_embeddings`: else [`Error::TokenOutOfRange`] naming the position), then
    /// copied into `ids` (at least `tokens.len()` values) as the bits of `u32`s.
    pub fn forward(
        &self,
        device: &Device,
        tokens: &[usize],
        ids: &mut DeviceBuffer,
        out: (&mut DeviceBuffer, usize),
    ) -> Result<()> {
        let n = tokens.len().checked_mul(self.dim).ok_or_else(|| {
            overflow(&format!("the output buffer of layer `{}` ({} tokens)", self.name, tokens.len()))
        })?;
        if let Some((position, &token)) = tokens.iter().enumerate().find(|(_, t)| **t >= self.vocab) {
            return Err(Error::TokenOutOfRange { position, token, vocab: self.vocab });
        }
        ids.range(0, tokens.len())?;
        out.0.range(out.1, n)?;
        let mut chunk = [0.0f32; 256];
        for (k, part) in tokens.chunks(chunk.len()).enumerate() {
            for (c, &t) in chunk.iter_mut().zip(part) {
                let id = u32::try_from(t).map_err(|_| Error::InvalidParameter {
                    what: format!("GPU embedding `{}`", self.name),
                    message: format!("token id {t} does not fit u32"),
                })?;
                *c = f32::from_bits(id);
            }
            device.write(ids, k * chunk.len(), &chunk[..part.len()])?;
        }
        ops::embedding(device, &self.table, ids, out, (self.vocab, self.dim), tokens.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{CellParams, SeqOutput};

    /// SplitMix64 values uniform in `[-a, a]`.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self, a: f32) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let u = ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * a
        }

        fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
            (0..n).map(|_| self.uniform(a)).collect()
        }
    }

    /// Weights uniform in `[-w, w]`, biases in `[-b, b]`.
    fn params(cell: CellKind, geom: RecurrentGeom, rng: &mut Rng, (w, b): (f32, f32)) -> Vec<CellParams> {
        let rows = cell.gates() * geom.hidden_size;
        (0..geom.num_layers * geom.directions())
            .map(|i| CellParams {
                w_ih: rng.vec(rows * geom.layer_input(i / geom.directions()), w),
                w_hh: rng.vec(rows * geom.hidden_size, w),
                b_ih: Some(rng.vec(rows, b)),
                b_hh: Some(rng.vec(rows, b)),
            })
            .collect()
    }

    /// The CPU layer a device layer is compared with.
    enum Cpu {
        Lstm(Lstm),
        Gru(Gru),
    }

    /// Which backward pass.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Which {
        Relevance,
        Gradient,
    }

    impl Cpu {
        fn new(cell: CellKind, geom: RecurrentGeom, rng: &mut Rng, scales: (f32, f32)) -> Cpu {
            Cpu::from_params(cell, geom, params(cell, geom, rng, scales))
        }

        fn from_params(cell: CellKind, geom: RecurrentGeom, params: Vec<CellParams>) -> Cpu {
            match cell {
                CellKind::Lstm => Cpu::Lstm(Lstm::new("rnn", geom, params).unwrap()),
                CellKind::Gru => Cpu::Gru(Gru::new("rnn", geom, params).unwrap()),
            }
        }

        fn set_rule(&mut self, rule: ProductRule, eps: f32) {
            match self {
                Cpu::Lstm(l) => l.set_rule(rule, eps).unwrap(),
                Cpu::Gru(l) => l.set_rule(rule, eps).unwrap(),
            }
        }

        fn gpu(&self, dev: &Device) -> GpuRecurrent {
            match self {
                Cpu::Lstm(l) => GpuRecurrent::from_lstm(dev, l).unwrap(),
                Cpu::Gru(l) => GpuRecurrent::from_gru(dev, l).unwrap(),
            }
        }

        /// `(y, trace)` of the CPU's forward pass.
        fn forward(&self, x: &[f32], steps: usize) -> Result<(Vec<f32>, Vec<f32>)> {
            let (mut y, mut trace) = (vec![0.0; 64], vec![0.0; 1 << 16]);
            let r = match self {
                Cpu::Lstm(l) => l.forward(x, steps, &mut trace, &mut y),
                Cpu::Gru(l) => l.forward(x, steps, &mut trace, &mut y),
            };
            r.map(|()| (y, trace))
        }

        fn backward(&self, which: Which, x: &[f32], steps: usize, trace: &[f32], seed: &[f32]) -> Result<Vec<f32>> {
            let (mut into, mut scratch) = (vec![0.0; x.len()], vec![0.0; 1 << 16]);
            let r = match (self, which) {
                (Cpu::Lstm(l), Which::Relevance) => l.relevance(x, steps, trace, seed, &mut into, &mut scratch),
                (Cpu::Lstm(l), Which::Gradient) => l.gradient(x, steps, trace, seed, &mut into, &mut scratch),
                (Cpu::Gru(l), Which::Relevance) => l.relevance(x, steps, trace, seed, &mut into, &mut scratch),
                (Cpu::Gru(l), Which::Gradient) => l.gradient(x, steps, trace, seed, &mut into, &mut scratch),
            };
            r.map(|()| into)
        }
    }

    /// The largest difference relative to the largest reference magnitude.
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale
    }

    /// Sequences of these lengths, back to back in one buffer after a pad.
    const LENGTHS: [usize; 3] = [1, 2, 7];
    const PAD: usize = 3;

    /// The device's passes over several sequences in shared buffers, each against the CPU's.
    fn check_sequences(dev: &Device, cpu: &Cpu, rng: &mut Rng, what: &str) {
        let gpu = cpu.gpu(dev);
        let g = *gpu.geom();
        let (input, sl) = (g.input_size, g.step_len());
        let total: usize = LENGTHS.iter().sum();
        let x = rng.vec(PAD + total * input, 1.0);
        let trace_len = gpu.trace_len(7).unwrap();
        let xb = dev.upload("x", &x).unwrap();
        let mut traces = dev.zeros("traces", PAD + LENGTHS.len() * trace_len).unwrap();
        let mut ys = dev.zeros("ys", PAD + LENGTHS.len() * sl).unwrap();
        let seeds = rng.vec(PAD + LENGTHS.len() * sl, 1.0);
        let sb = dev.upload("seeds", &seeds).unwrap();
        let mut r_in = dev.upload("r_in", &vec![f32::NAN; PAD + total * input]).unwrap();
        let mut scratch = RecurrentScratch::new(dev, 7, &[&gpu]).unwrap();
        let mut at = PAD;
        for (k, &steps) in LENGTHS.iter().enumerate() {
            let xs = &x[at..at + steps * input];
            let (y, trace) = cpu.forward(xs, steps).unwrap();
            let (t0, y0) = (PAD + k * trace_len, PAD + k * sl);
            gpu.forward(dev, (&xb, at), steps, (&mut traces, t0), (&mut ys, y0), &mut scratch).unwrap();
            let mut got = vec![0.0; sl];
            dev.read(&ys, y0, &mut got).unwrap();
            let e = relative_error(&got, &y[..sl]);
            assert!(e <= 1e-4, "{what}, {steps} steps: forward, relative error {e}");
            let seed = &seeds[y0..y0 + sl];
            for which in [Which::Relevance, Which::Gradient] {
                let want = cpu.backward(which, xs, steps, &trace, seed).unwrap();
                let (x_, tr, s_, r_) = ((&xb, at), (&traces, t0), (&sb, y0), (&mut r_in, at));
                match which {
                    Which::Relevance => gpu.relevance(dev, x_, steps, tr, s_, r_, &mut scratch).unwrap(),
                    Which::Gradient => gpu.gradient(dev, x_, steps, tr, s_, r_, &mut scratch).unwrap(),
                }
                let mut got = vec![0.0; steps * input];
                dev.read(&r_in, at, &mut got).unwrap();
                let e = relative_error(&got, &want);
                assert!(e <= 1e-4, "{what}, {steps} steps: {which:?}, relative error {e}");
            }
            at += steps * input;
        }
        // Nothing outside the sequences was written.
        let mut pad = [0.0; PAD];
        dev.read(&r_in, 0, &mut pad).unwrap();
        assert!(pad.iter().all(|v| v.is_nan()), "{what}: wrote before the first sequence");
    }

    fn geom(layers: usize, bidirectional: bool, output: SeqOutput) -> RecurrentGeom {
        RecurrentGeom { input_size: 4, hidden_size: 5, num_layers: layers, bidirectional, output }
    }

    /// LSTM and GRU, one and two stacked layers, uni- and bidirectional, every output mode and
    /// product rule, sequences of 1, 2 and 7 steps at offsets of shared buffers.
    #[test]
    fn recurrent_layers_match_the_cpu_layers() {
        let dev = Device::from_env().unwrap();
        let mut rng = Rng(1);
        for cell in [CellKind::Lstm, CellKind::Gru] {
            for (layers, bidirectional) in [(1, false), (1, true), (2, false), (2, true)] {
                for output in [SeqOutput::Last, SeqOutput::Mean, SeqOutput::Max] {
                    for rule in [ProductRule::All, ProductRule::Prop, ProductRule::Half] {
                        let g = geom(layers, bidirectional, output);
                        let mut cpu = Cpu::new(cell, g, &mut rng, (0.6, 0.3));
                        cpu.set_rule(rule, 0.01);
                        check_sequences(&dev, &cpu, &mut rng, &format!("{cell:?} {g:?} {rule:?}"));
                    }
                }
            }
        }
    }

    /// The device's forward pass and `which` over one sequence.
    fn gpu_run(
        dev: &Device,
        gpu: &GpuRecurrent,
        x: &[f32],
        steps: usize,
        seed: &[f32],
        which: Which,
    ) -> Result<Vec<f32>> {
        let mut scratch = RecurrentScratch::new(dev, steps, &[gpu])?;
        let (xb, sb) = (dev.upload("x", x)?, dev.upload("seed", seed)?);
        let mut trace = dev.zeros("trace", gpu.trace_len(steps)?)?;
        let mut y = dev.zeros("y", gpu.geom().out_len())?;
        gpu.forward(dev, (&xb, 0), steps, (&mut trace, 0), (&mut y, 0), &mut scratch)?;
        let mut into = dev.zeros("into", x.len())?;
        let (x, tr, s, r) = ((&xb, 0), (&trace, 0), (&sb, 0), (&mut into, 0));
        match which {
            Which::Relevance => gpu.relevance(dev, x, steps, tr, s, r, &mut scratch)?,
            Which::Gradient => gpu.gradient(dev, x, steps, tr, s, r, &mut scratch)?,
        }
        dev.download(&into)
    }

    fn times_pow2(v: &[f32], k: i32) -> Vec<f32> {
        v.iter().map(|&x| (x as f64 * 2f64.powi(k)) as f32).collect()
    }

    /// The seed scaled up to the largest power of two that keeps the result in f32 (there the
    /// values the cell carries exceed f32 in about a third of the cases, as the CPU layer's tests
    /// show): the device's results are still the CPU's.
    #[test]
    fn results_scaled_to_the_f32_limit_match_the_cpu() {
        let dev = Device::from_env().unwrap();
        for cell in [CellKind::Lstm, CellKind::Gru] {
            for (bidirectional, layers) in [(false, 1), (true, 2)] {
                for rule in [ProductRule::All, ProductRule::Prop, ProductRule::Half] {
                    let mut rng = Rng(300 + rule as u64 + 10 * layers as u64 + 100 * cell.gates() as u64);
                    let (g, steps) = (geom(layers, bidirectional, SeqOutput::Mean), 12);
                    let mut params = params(cell, g, &mut rng, (0.6, 0.3));
                    params.iter_mut().for_each(|p| p.w_ih.iter_mut().for_each(|w| *w *= 1e-3));
                    let mut cpu = Cpu::from_params(cell, g, params);
                    cpu.set_rule(rule, 0.001);
                    let gpu = cpu.gpu(&dev);
                    let x = rng.vec(steps * g.input_size, 1.0);
                    let (y, trace) = cpu.forward(&x, steps).unwrap();
                    let r_out: Vec<f32> = y[..g.out_len()].iter().map(|&v| v * (0.5 + rng.uniform(0.5))).collect();
                    for which in [Which::Relevance, Which::Gradient] {
                        let small = cpu.backward(which, &x, steps, &trace, &r_out).unwrap();
                        let largest = small.iter().chain(&r_out).fold(0.0f64, |m, &v| m.max(v.abs() as f64));
                        let k = (f32::MAX as f64 / largest).log2().floor() as i32 - 1;
                        let seed = times_pow2(&r_out, k);
                        let want = cpu.backward(which, &x, steps, &trace, &seed).unwrap();
                        let got = gpu_run(&dev, &gpu, &x, steps, &seed, which).unwrap();
                        let e = relative_error(&got, &want);
                        assert!(e <= 1e-4, "{cell:?} {g:?} {rule:?} {which:?} times 2^{k}: relative error {e}");
                    }
                }
            }
        }
    }

    /// Relevance beyond f32 (weights that make it grow backwards through time, the seed scaled up
    /// until the CPU layer refuses it) is the CPU layer's error, at the same step.
    #[test]
    fn overflow_is_the_cpu_layers_error() {
        let dev = Device::from_env().unwrap();
        for cell in [CellKind::Lstm, CellKind::Gru] {
            for rule in [ProductRule::All, ProductRule::Prop, ProductRule::Half] {
                for (layers, bidirectional) in [(1, false), (2, true)] {
                    let mut rng = Rng(77 + rule as u64 + 10 * cell.gates() as u64);
                    let g = RecurrentGeom {
                        input_size: 3,
                        hidden_size: 4,
                        num_layers: layers,
                        bidirectional,
                        output: SeqOutput::Last,
                    };
                    let steps = 60;
                    let mut cpu = Cpu::new(cell, g, &mut rng, (4.0, 0.5));
                    cpu.set_rule(rule, 0.001);
                    let gpu = cpu.gpu(&dev);
                    let x = rng.vec(steps * g.input_size, 1.0);
                    let (y, trace) = cpu.forward(&x, steps).unwrap();
                    let y = &y[..g.out_len()];
                    let top = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let found = (0..=127).find_map(|k| {
                        let seed: Vec<f32> = times_pow2(y, k).iter().map(|v| v / top).collect();
                        cpu.backward(Which::Relevance, &x, steps, &trace, &seed).err().map(|e| (seed, e))
                    });
                    let Some((seed, want)) = found else { panic!("{cell:?} {rule:?} {g:?}: no overflow") };
                    let got = gpu_run(&dev, &gpu, &x, steps, &seed, Which::Relevance).unwrap_err();
                    assert_eq!(got, want, "{cell:?} {rule:?} {g:?}");
                }
            }
        }
    }

    /// A NaN input is the CPU's forward error at its step; a NaN or infinite seed the CPU's
    /// backward error, for both passes.
    #[test]
    fn non_finite_values_are_the_cpu_layers_errors() {
        let dev = Device::from_env().unwrap();
        for cell in [CellKind::Lstm, CellKind::Gru] {
            for (layers, bidirectional) in [(1, false), (2, true)] {
                let g = geom(layers, bidirectional, SeqOutput::Max);
                let cpu = Cpu::new(cell, g, &mut Rng(4), (0.5, 0.1));
                let gpu = cpu.gpu(&dev);
                let mut x = vec![0.5; 6 * g.input_size];
                x[3 * g.input_size + 1] = f32::NAN;
                let want = cpu.forward(&x, 6).unwrap_err();
                let got = gpu_run(&dev, &gpu, &x, 6, &[1.0; 10], Which::Gradient).unwrap_err();
                assert_eq!(got, want, "{cell:?} {g:?}");
                x[3 * g.input_size + 1] = 0.25;
                let (_, trace) = cpu.forward(&x, 6).unwrap();
                let mut seed = vec![1.0; g.out_len()];
                seed[g.out_len() - 1] = f32::INFINITY;
                for which in [Which::Relevance, Which::Gradient] {
                    let want = cpu.backward(which, &x, 6, &trace, &seed).unwrap_err();
                    assert_eq!(gpu_run(&dev, &gpu, &x, 6, &seed, which).unwrap_err(), want, "{cell:?} {g:?}");
                }
            }
        }
    }

    /// Sequences too long for the scratch, empty ones, short or foreign buffers and scratch for
    /// smaller layers are errors, not panics.
    #[test]
    fn misuse_is_an_error() {
        let dev = Device::from_env().unwrap();
        let g = geom(1, true, SeqOutput::Last);
        let gpu = Cpu::new(CellKind::Lstm, g, &mut Rng(5), (0.5, 0.1)).gpu(&dev);
        let mut scratch = RecurrentScratch::new(&dev, 4, &[&gpu]).unwrap();
        let (len, sl) = (gpu.trace_len(4).unwrap(), g.step_len());
        let x = dev.upload("x", &[0.5; 5 * 4]).unwrap();
        let (mut trace, mut y) = (dev.zeros("trace", len).unwrap(), dev.zeros("y", sl).unwrap());
        let mut run = |x: (&DeviceBuffer, usize), steps: usize, t0: usize, scratch: &mut RecurrentScratch| {
            gpu.forward(&dev, x, steps, (&mut trace, t0), (&mut y, 0), scratch)
        };
        assert_eq!(run((&x, 0), 5, 0, &mut scratch).unwrap_err(), Error::SequenceLength { length: 5, capacity: 4 });
        let e = run((&x, 0), 0, 0, &mut scratch).unwrap_err();
        assert!(matches!(&e, Error::InvalidParameter { message, .. } if message.contains(">= 1")), "{e}");
        let e = run((&x, 5), 4, 0, &mut scratch).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("`x`")), "{e}");
        let e = run((&x, 0), 4, 1, &mut scratch).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("`trace`")), "{e}");
        let e = run((&x, usize::MAX), 4, 0, &mut scratch).unwrap_err();
        assert!(matches!(e, Error::Length { .. }), "{e}");
        let other = Device::emulated();
        let foreign = other.upload("foreign", &[0.5; 16]).unwrap();
        assert!(run((&foreign, 0), 4, 0, &mut scratch).unwrap_err().to_string().contains("another device"));
        let small = Cpu::new(CellKind::Gru, geom(1, false, SeqOutput::Last), &mut Rng(6), (0.5, 0.1)).gpu(&dev);
        let mut too_small = RecurrentScratch::new(&dev, 4, &[&small]).unwrap();
        let e = run((&x, 0), 4, 0, &mut too_small).unwrap_err();
        assert!(matches!(&e, Error::InvalidParameter { what, .. } if what.contains("scratch")), "{e}");
        run((&x, 0), 4, 0, &mut scratch).unwrap();
        // The backward passes check their buffers too.
        let (seed, mut r_in) = (dev.upload("seed", &vec![1.0; sl]).unwrap(), dev.zeros("r_in", 4 * 4).unwrap());
        let e = gpu.relevance(&dev, (&x, 0), 4, (&trace, 0), (&seed, 1), (&mut r_in, 0), &mut scratch).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("`seed`")), "{e}");
        let e = gpu.gradient(&dev, (&x, 0), 4, (&trace, 0), (&seed, 0), (&mut r_in, 1), &mut scratch).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("`r_in`")), "{e}");
        assert!(matches!(gpu.trace_len(usize::MAX), Err(Error::SizeOverflow { .. })));
        assert!(matches!(RecurrentScratch::new(&dev, usize::MAX, &[&gpu]), Err(Error::SizeOverflow { .. })));
    }

    /// The embedding gathers the CPU layer's rows at an offset, over more ids than one upload
    /// chunk; unknown ids and short buffers are errors.
    #[test]
    fn embedding_gathers_the_cpu_layers_rows() {
        let dev = Device::from_env().unwrap();
        let (vocab, dim) = (7, 3);
        let cpu = Embedding::new("emb", vocab, dim, Rng(9).vec(vocab * dim, 1.0)).unwrap();
        let gpu = GpuEmbedding::upload(&dev, &cpu).unwrap();
        assert_eq!((gpu.num_embeddings(), gpu.embedding_dim()), (vocab, dim));
        let tokens: Vec<usize> = (0..300).map(|i| (i * 5 + 2) % vocab).collect();
        let mut want = vec![0.0; tokens.len() * dim];
        cpu.forward(&tokens, &mut want).unwrap();
        let mut ids = GpuEmbedding::ids_buffer(&dev, 300).unwrap();
        let mut out = dev.upload("out", &vec![7.5; 2 + want.len()]).unwrap();
        gpu.forward(&dev, &tokens, &mut ids, (&mut out, 2)).unwrap();
        let got = dev.download(&out).unwrap();
        assert_eq!((&got[..2], &got[2..]), (&[7.5, 7.5][..], &want[..]));
        let e = gpu.forward(&dev, &[1, 7, 2], &mut ids, (&mut out, 0)).unwrap_err();
        assert_eq!(e, Error::TokenOutOfRange { position: 1, token: 7, vocab });
        let e = gpu.forward(&dev, &[usize::MAX], &mut ids, (&mut out, 0)).unwrap_err();
        assert_eq!(e, Error::TokenOutOfRange { position: 0, token: usize::MAX, vocab });
        let mut few = GpuEmbedding::ids_buffer(&dev, 2).unwrap();
        assert!(matches!(gpu.forward(&dev, &[1, 2, 3], &mut few, (&mut out, 0)), Err(Error::Length { .. })));
        assert!(matches!(gpu.forward(&dev, &tokens, &mut ids, (&mut out, 3)), Err(Error::Length { .. })));
    }
}
