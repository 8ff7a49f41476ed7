//! The recurrent layers' kernels (`cuda/recurrent.cu`): one step of an LSTM or a GRU forward, of
//! its LRP and of its gradient; the pooled output and the seed of the backward passes; the scale
//! bookkeeping between backward steps; and the embedding lookup.
//!
//! A trace (see [`crate::gpu::layers::GpuRecurrent`]) holds, per stacked layer and direction, the
//! records of `steps` time steps in blocks (LSTM: `a [steps][4d]`, `act [steps][4d]`,
//! `c [steps][d]`; GRU: `gi`, `gh`, `act`, each `[steps][3d]`). Errors of the passes go to a
//! state buffer of [`STATE_LEN`] values ([`state`]), which the layer reads back once per pass.

use super::{Arg, Grid, launch};
use crate::error::{Error, Result};
use crate::gpu::{Device, DeviceBuffer, table::id};
use crate::layers::{ProductRule, SeqOutput};

/// Values of the state buffer.
pub const STATE_LEN: usize = 8;

/// Slots of the state buffer (integers as the bits of the `f32`) and its error codes, as
/// `cuda/recurrent.cu` defines them.
pub mod state {
    /// The first error's code (0: none).
    pub const CODE: usize = 0;
    /// Its time step (the seed's index for [`FAIL_SEED`]).
    pub const STEP: usize = 1;
    /// `2 * stacked layer + direction`.
    pub const PLACE: usize = 2;
    /// A value it names (`f32`).
    pub const VALUE: usize = 3;
    /// An exponent it names (`i32`).
    pub const SCALE: usize = 4;
    /// A hidden state is NaN or infinite.
    pub const FAIL_STATE: u32 = 1;
    /// The output relevance (gradient) holds NaN or infinity.
    pub const FAIL_SEED: u32 = 2;
    /// What arrives at a step is NaN or infinite.
    pub const FAIL_ARRIVING: u32 = 3;
    /// A row's scale `2^e` needs `|e| >= 2^24`.
    pub const FAIL_EXPONENT: u32 = 4;
    /// A step's input share is beyond f32.
    pub const FAIL_RANGE: u32 = 5;
    /// What is carried back became NaN or infinite.
    pub const FAIL_CARRY: u32 = 6;
}

/// f32 values per hidden unit of one step's record (both cells).
pub const RECORD: usize = 9;

/// The kind of a recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    Lstm,
    Gru,
}

impl CellKind {
    /// Gate blocks of the weight rows: 4 (LSTM) or 3 (GRU).
    pub const fn gates(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

/// Which backward pass a step runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pass {
    /// LRP with this product rule and the epsilon of the linear maps.
    Relevance { rule: ProductRule, eps: f32 },
    /// Backpropagation.
    Gradient,
}

impl Pass {
    fn is_relevance(self) -> bool {
        matches!(self, Pass::Relevance { .. })
    }
}

/// One time step of one direction: `steps` steps of `hidden` units, at time `t`; `prev` is the
/// time of the step before in reading order (`None` at the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepAt {
    pub steps: usize,
    pub hidden: usize,
    pub t: usize,
    pub prev: Option<usize>,
}

impl StepAt {
    /// Checks `t, prev < steps`; the records' length `steps * 9 hidden`.
    fn records(&self) -> Result<usize> {
        if self.t >= self.steps || self.prev.is_some_and(|p| p >= self.steps) {
            return Err(Error::InvalidParameter {
                what: "GPU recurrent step".into(),
                message: format!("time steps {} and {:?} of a sequence of {}", self.t, self.prev, self.steps),
            });
        }
        mul(mul(self.steps, RECORD)?, self.hidden)
    }

    fn has_prev(&self) -> Arg<'static> {
        Arg::U32(u32::from(self.prev.is_some()))
    }
}

/// The sizes of one sequence through a layer: `steps` steps, `hidden` units per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqShape {
    pub steps: usize,
    pub hidden: usize,
    pub directions: usize,
}

impl SeqShape {
    /// `directions * hidden`, checked.
    fn step_len(&self) -> Result<usize> {
        mul(self.directions, self.hidden)
    }
}

fn mul(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::SizeOverflow { what: "a GPU recurrent layer's buffer".into() })
}

/// `len` values of `b` from `offset` on, read by a kernel.
fn input(b: &DeviceBuffer, offset: usize, len: usize) -> Result<Arg<'_>> {
    Ok(Arg::In(b, b.range(offset, len)?))
}

/// `len` values of `b` from `offset` on, written by a kernel.
fn output(b: &mut DeviceBuffer, offset: usize, len: usize) -> Result<Arg<'_>> {
    let r = b.range(offset, len)?;
    Ok(Arg::Out(b, r))
}

/// `len` values where `used`, else none (at `offset`, checked either way).
fn maybe(used: bool, len: usize) -> usize {
    if used { len } else { 0 }
}

fn size(v: usize) -> Arg<'static> {
    Arg::U64(v as u64)
}

fn small(what: &str, v: usize) -> Result<Arg<'static>> {
    u32::try_from(v).map(Arg::U32).map_err(|_| Error::InvalidParameter {
        what: format!("GPU recurrent layer: {what}"),
        message: format!("{v} does not fit u32"),
    })
}

/// A grid-stride loop over `n` elements.
///
/// # Safety
/// As [`launch`].
unsafe fn over(device: &Device, kernel: u32, n: usize, args: &mut [Arg<'_>]) -> Result<()> {
    // SAFETY: passed on.
    unsafe { launch(device, kernel, Grid::for_elements(n as u64), args) }
}

/// One thread.
const ONE: Grid = Grid { grid: [1, 1, 1], block: [1, 1, 1] };

/// Where a forward step reads and writes: in the trace, the direction's records from `rec` on,
/// `h_t` at `h` and `h_{t-1}` at `h_prev` (a GRU's, with a step before); `xp = W_ih x_t`
/// (`G hidden` values at its offset), `hh = W_hh h_{t-1}` (with a step before) and the biases.
pub struct ForwardIo<'a> {
    pub rec: usize,
    pub h: usize,
    pub h_prev: usize,
    pub xp: (&'a DeviceBuffer, usize),
    pub hh: &'a DeviceBuffer,
    pub b_ih: &'a DeviceBuffer,
    pub b_hh: &'a DeviceBuffer,
}

/// One forward step of `cell` at `at.t`: LSTM `a = W_ih x + b_ih + b_hh + W_hh h_{t-1}`,
/// `c_t = f c_{t-1} + i g`, `h_t = o tanh(c_t)`; GRU `h_t = (1 - z) n + z h_{t-1}`, with the
/// records the backward passes read.
pub fn forward_step(
    device: &Device,
    cell: CellKind,
    at: StepAt,
    trace: &mut DeviceBuffer,
    io: ForwardIo<'_>,
) -> Result<()> {
    let (d, rows) = (at.hidden, mul(cell.gates(), at.hidden)?);
    trace.range(io.rec, at.records()?)?;
    trace.range(io.h, d)?;
    trace.range(io.h_prev, maybe(at.prev.is_some(), d))?;
    let (xp, hh) = (input(io.xp.0, io.xp.1, rows)?, input(io.hh, 0, rows)?);
    let (b_ih, b_hh) = (input(io.b_ih, 0, rows)?, input(io.b_hh, 0, rows)?);
    let all = trace.range(0, trace.len())?;
    let (rec, h) = (size(io.rec), size(io.h));
    let trace = Arg::Out(trace, all);
    // The LSTM reads c_{t-1} at time p in its records; the GRU reads h_{t-1} at h_prev.
    let (kernel, prev) = match cell {
        CellKind::Lstm => (id::LSTM_FORWARD_STEP, size(at.prev.unwrap_or(0))),
        CellKind::Gru => (id::GRU_FORWARD_STEP, size(io.h_prev)),
    };
    let (steps, t, d_arg) = (size(at.steps), size(at.t), size(d));
    let mut args = match cell {
        CellKind::Lstm => [trace, xp, hh, b_ih, b_hh, rec, h, steps, t, prev, d_arg, at.has_prev()],
        CellKind::Gru => [trace, xp, hh, b_ih, b_hh, rec, h, prev, steps, t, d_arg, at.has_prev()],
    };
    // SAFETY: `lstm_forward_step(float* trace, const float* xp, const float* hh, const float* b_ih,
    // const float* b_hh, u64 rec, u64 h, u64 steps, u64 t, u64 p, u64 d, unsigned has_prev)` and
    // `gru_forward_step(.., u64 rec, u64 h, u64 h_prev, u64 steps, u64 t, u64 d, unsigned
    // has_prev)` touch trace[rec..rec + 9 steps d] (t, p < steps), trace[h..h + d],
    // trace[h_prev..h_prev + d] with a step before, and G d values of the others: all checked.
    unsafe { over(device, kernel, d, &mut args) }
}

/// The layer's output `y` (`directions * hidden` values at its offset, copied to the trace at
/// `y_copy`) from the last layer's outputs at `last` in the trace (`[steps][S]`): `Last`, the
/// time `Mean` or the time `Max`.
pub fn pool(
    device: &Device,
    trace: &mut DeviceBuffer,
    (last, y_copy): (usize, usize),
    y: (&mut DeviceBuffer, usize),
    shape: SeqShape,
    output: SeqOutput,
) -> Result<()> {
    let sl = shape.step_len()?;
    if shape.steps == 0 {
        return Err(Error::InvalidParameter { what: "GPU recurrent output".into(), message: "no time steps".into() });
    }
    trace.range(last, mul(shape.steps, sl)?)?;
    trace.range(y_copy, sl)?;
    let all = trace.range(0, trace.len())?;
    let mut args = [
        Arg::Out(trace, all),
        output_arg(y, sl)?,
        size(last),
        size(y_copy),
        size(shape.steps),
        size(sl),
        size(shape.hidden),
        Arg::U32(mode_number(output)),
    ];
    // SAFETY: `rnn_pool(float* trace, float* y, u64 last, u64 y_copy, u64 steps, u64 sl, u64 d,
    // unsigned mode)` reads trace[last..last + steps sl] and writes trace[y_copy..y_copy + sl]
    // and y[0..sl], all checked (d <= sl).
    unsafe { over(device, id::RNN_POOL, sl, &mut args) }
}

/// The kernels' number of an output mode.
fn mode_number(output: SeqOutput) -> u32 {
    match output {
        SeqOutput::Last => 0,
        SeqOutput::Mean => 1,
        SeqOutput::Max => 2,
    }
}

fn output_arg<'a>((b, offset): (&'a mut DeviceBuffer, usize), len: usize) -> Result<Arg<'a>> {
    output(b, offset, len)
}

/// Clears `state`, then records the first hidden state holding NaN or infinity in the outputs
/// of `layers` stacked layers at `outs` (`[layers][steps][S]`), in the CPU's order.
pub fn check_forward(
    device: &Device,
    outs: (&DeviceBuffer, usize),
    state: &mut DeviceBuffer,
    layers: usize,
    shape: SeqShape,
) -> Result<()> {
    let len = mul(mul(layers, shape.steps)?, shape.step_len()?)?;
    let mut args = [
        input(outs.0, outs.1, len)?,
        output(state, 0, STATE_LEN)?,
        size(layers),
        size(shape.steps),
        size(shape.directions),
        size(shape.hidden),
    ];
    // SAFETY: `rnn_check_forward(const float* outs, float* state, u64 layers, u64 steps, u64 dirs,
    // u64 d)` reads outs[0..layers steps dirs d] and writes state[0..STATE_LEN], checked.
    unsafe { launch(device, id::RNN_CHECK_FORWARD, ONE, &mut args) }
}

/// Starts a backward pass: clears `state`, checks the seed (`S` values at its offset) and writes
/// `base = floor(log2 max |seed|)` into the state and into `exps[0..steps]`.
pub fn seed_scale(
    device: &Device,
    seed: (&DeviceBuffer, usize),
    state: &mut DeviceBuffer,
    exps: &mut DeviceBuffer,
    shape: SeqShape,
) -> Result<()> {
    let sl = shape.step_len()?;
    let mut args = [
        input(seed.0, seed.1, sl)?,
        output(state, 0, STATE_LEN)?,
        output(exps, 0, shape.steps)?,
        size(sl),
        size(shape.steps),
    ];
    // SAFETY: `rnn_seed_scale(const float* seed, float* state, float* exps, u64 sl, u64 steps)`
    // touches seed[0..sl], state[0..STATE_LEN] and exps[0..steps], checked.
    unsafe { launch(device, id::RNN_SEED_SCALE, ONE, &mut args) }
}

/// What arrives at the last layer's outputs, `arriving[0..steps S]`, from `2^-base seed`
/// ([`seed_scale`]'s base in `state`) by the output mode: `Last` at the last states, `Mean`
/// (relevance: `h_t / steps * seed / stab(y)`; gradient: `seed / steps`), `Max` at the first
/// maximum. `trace` holds the last layer's outputs at `.1` and `y` at `.2`.
pub fn seed(
    device: &Device,
    arriving: &mut DeviceBuffer,
    seed: (&DeviceBuffer, usize),
    state: &DeviceBuffer,
    trace: (&DeviceBuffer, usize, usize),
    shape: SeqShape,
    (mode, pass): (SeqOutput, Pass),
) -> Result<()> {
    let sl = shape.step_len()?;
    let rows = mul(shape.steps, sl)?;
    if shape.steps == 0 {
        return Err(Error::InvalidParameter { what: "GPU recurrent seed".into(), message: "no time steps".into() });
    }
    let eps = match pass {
        Pass::Relevance { eps, .. } => eps,
        Pass::Gradient => 0.0,
    };
    let mut args = [
        output(arriving, 0, rows)?,
        input(seed.0, seed.1, sl)?,
        input(state, 0, STATE_LEN)?,
        input(trace.0, trace.1, rows)?,
        input(trace.0, trace.2, sl)?,
        size(shape.steps),
        size(sl),
        size(shape.hidden),
        Arg::U32(mode_number(mode)),
        Arg::U32(u32::from(pass.is_relevance())),
        Arg::F32(eps),
    ];
    // SAFETY: `rnn_seed(float* arriving, const float* seed, const float* state, const float* last,
    // const float* y, u64 steps, u64 sl, u64 d, unsigned mode, unsigned relevance, float eps)`
    // touches arriving[0..steps sl], last[0..steps sl], seed[0..sl], y[0..sl], state[RNN_BASE]:
    // all checked (steps >= 1, d <= sl).
    unsafe { over(device, id::RNN_SEED, sl, &mut args) }
}

/// What a backward step reads and writes: the direction's records at `rec`, `h_{t-1}` at
/// `h_prev` (a GRU's, with a step before), the carried `R(h_t)` (gradient: `dL/dh_t`) and
/// `R(c_t)` (LSTM; overwritten with `R(c_{t-1})`); it writes the ratios (gradients) of the gate
/// pre-activations for `W_ih` into `s_x` and for `W_hh` into `s_h` (an LSTM: both in `s_x`), and
/// the direct share of `h_{t-1}` into `hd`.
pub struct BackwardIo<'a> {
    pub rec: (&'a DeviceBuffer, usize),
    pub h_prev: (&'a DeviceBuffer, usize),
    pub carry_h: &'a DeviceBuffer,
    pub carry_c: &'a mut DeviceBuffer,
    pub s_x: &'a mut DeviceBuffer,
    pub s_h: &'a mut DeviceBuffer,
    pub hd: &'a mut DeviceBuffer,
}

/// The element-wise part of one backward step of `cell` by `pass` (`lstm_relevance_step`,
/// `lstm_gradient_step`, `gru_relevance_step`, `gru_gradient_step`); see [`BackwardIo`].
pub fn backward_step(device: &Device, cell: CellKind, pass: Pass, at: StepAt, io: BackwardIo<'_>) -> Result<()> {
    let (d, rows) = (at.hidden, mul(cell.gates(), at.hidden)?);
    let rec = input(io.rec.0, io.rec.1, at.records()?)?;
    let (r_h, hd) = (input(io.carry_h, 0, d)?, output(io.hd, 0, d)?);
    let (steps, t, p, hidden) = (size(at.steps), size(at.t), size(at.prev.unwrap_or(0)), size(d));
    let (rule, eps) = match pass {
        Pass::Relevance { rule, eps } => (Arg::U32(rule_number(rule)), Arg::F32(eps)),
        Pass::Gradient => (Arg::U32(0), Arg::F32(0.0)),
    };
    // The gradient kernels take all but the last two arguments.
    let (kernel, mut args) = match cell {
        CellKind::Lstm => {
            let (r_c, s) = (output(io.carry_c, 0, d)?, output(io.s_x, 0, rows)?);
            let kernel = if pass.is_relevance() { id::LSTM_RELEVANCE_STEP } else { id::LSTM_GRADIENT_STEP };
            (kernel, [rec, r_h, r_c, s, hd, steps, t, p, hidden, at.has_prev(), rule, eps])
        }
        CellKind::Gru => {
            let h_prev = input(io.h_prev.0, io.h_prev.1, maybe(at.prev.is_some(), d))?;
            let (s_x, s_h) = (output(io.s_x, 0, rows)?, output(io.s_h, 0, rows)?);
            let kernel = if pass.is_relevance() { id::GRU_RELEVANCE_STEP } else { id::GRU_GRADIENT_STEP };
            (kernel, [rec, h_prev, r_h, s_x, s_h, hd, steps, t, hidden, at.has_prev(), rule, eps])
        }
    };
    let used = if pass.is_relevance() { args.len() } else { args.len() - 2 };
    // SAFETY: the LSTM kernels `(const float* rec, const float* r_h, float* r_c, float* s, float*
    // hd, u64 steps, u64 t, u64 p, u64 d, unsigned has_prev[, unsigned rule, float eps])` and the
    // GRU kernels `(const float* rec, const float* h_prev, const float* r_h, float* s_x, float*
    // s_h, float* hd, u64 steps, u64 t, u64 d, unsigned has_prev[, unsigned rule, float eps])`
    // read rec[0..9 steps d] (t, p < steps), h_prev[0..d] only with a step before, and touch d
    // or G d values of the others, all checked.
    unsafe { over(device, kernel, d, &mut args[..used]) }
}

/// The kernels' number of a product rule.
fn rule_number(rule: ProductRule) -> u32 {
    match rule {
        ProductRule::All => 0,
        ProductRule::Prop => 1,
        ProductRule::Half => 2,
    }
}

/// What [`step_shares`] reads and writes.
pub struct SharesIo<'a> {
    pub carry_h: &'a mut DeviceBuffer,
    pub x_step: &'a mut DeviceBuffer,
    pub hd: &'a DeviceBuffer,
    pub ch: &'a DeviceBuffer,
    pub h_prev: (&'a DeviceBuffer, usize),
    pub x: (&'a DeviceBuffer, usize),
    pub cx: &'a DeviceBuffer,
}

/// After a backward step's products `ch = s_h W_hh` and `cx = s_x W_ih`: the carried
/// `carry_h = hd + h_{t-1} ch` (gradient: `hd + ch`; 0 without a step before) and the step's input
/// share `x_step = x_t cx` (gradient: `cx`), for `hidden` units and `in_len` inputs.
pub fn step_shares(
    device: &Device,
    io: SharesIo<'_>,
    (hidden, in_len): (usize, usize),
    has_prev: bool,
    pass: Pass,
) -> Result<()> {
    let rel = pass.is_relevance();
    let mut args = [
        output(io.carry_h, 0, hidden)?,
        output(io.x_step, 0, in_len)?,
        input(io.hd, 0, maybe(has_prev, hidden))?,
        input(io.ch, 0, maybe(has_prev, hidden))?,
        input(io.h_prev.0, io.h_prev.1, maybe(has_prev && rel, hidden))?,
        input(io.x.0, io.x.1, maybe(rel, in_len))?,
        input(io.cx, 0, in_len)?,
        size(hidden),
        size(in_len),
        Arg::U32(u32::from(has_prev)),
        Arg::U32(u32::from(rel)),
    ];
    // SAFETY: `rnn_step_shares(float* r_h, float* x_step, const float* hd, const float* ch, const
    // float* h_prev, const float* x, const float* cx, u64 d, u64 in_len, unsigned has_prev,
    // unsigned relevance)` touches r_h[0..d], x_step and cx [0..in_len]; hd, ch [0..d] only with
    // has_prev, h_prev[0..d] only with has_prev and relevance, x[0..in_len] only with relevance:
    // the ranges checked.
    unsafe { over(device, id::RNN_STEP_SHARES, hidden.max(in_len), &mut args) }
}

/// The buffers of [`carry`]: the step's input row `target` (`in_len` values at its offset) and
/// its exponent `target_exp`, the step's input share `x_step`, the carried `(R(h), R(c))`, the
/// state, and what arrives at the next step (`hidden` values) and its exponent.
pub struct CarryIo<'a> {
    pub target: (&'a mut DeviceBuffer, usize),
    pub target_exp: (&'a mut DeviceBuffer, usize),
    pub x_step: &'a DeviceBuffer,
    pub carry: (&'a mut DeviceBuffer, &'a mut DeviceBuffer),
    pub state: &'a mut DeviceBuffer,
    pub next: (&'a DeviceBuffer, usize),
    pub next_exp: (&'a DeviceBuffer, usize),
}

/// What [`carry`] does: `reset` the carried values; `step_in`: add `2^e x_step` to the target
/// row (`row_exp`: a stacked layer's row, stored with an exponent), check it, renormalise;
/// `next`: absorb what arrives at the step at time `t_next`. `place = 2 layer + direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarryOp {
    pub reset: bool,
    pub step_in: bool,
    pub row_exp: bool,
    pub next: bool,
    pub hidden: usize,
    pub in_len: usize,
    pub t: usize,
    pub t_next: usize,
    pub place: usize,
}

/// The scale bookkeeping between two backward steps (the CPU's powers of two): see [`CarryOp`].
pub fn carry(device: &Device, io: CarryIo<'_>, op: CarryOp) -> Result<()> {
    let (d, n) = (op.hidden, op.in_len);
    let flags = u32::from(op.reset)
        | (u32::from(op.step_in) << 1)
        | (u32::from(op.step_in && op.row_exp) << 2)
        | (u32::from(op.next) << 3);
    let mut args = [
        output(io.target.0, io.target.1, maybe(op.step_in, n))?,
        output(io.target_exp.0, io.target_exp.1, maybe(op.step_in && op.row_exp, 1))?,
        input(io.x_step, 0, maybe(op.step_in, n))?,
        output(io.carry.0, 0, d)?,
        output(io.carry.1, 0, d)?,
        output(io.state, 0, STATE_LEN)?,
        input(io.next.0, io.next.1, maybe(op.next, d))?,
        input(io.next_exp.0, io.next_exp.1, maybe(op.next, 1))?,
        Arg::U32(flags),
        size(n),
        size(d),
        small("time step", op.t)?,
        small("time step", op.t_next)?,
        small("stacked layer", op.place)?,
    ];
    // SAFETY: `rnn_carry(float* target, float* target_exp, const float* x_step, float* r_h,
    // float* r_c, float* state, const float* next, const float* next_exp, unsigned flags, u64
    // in_len, u64 d, unsigned t, unsigned t_next, unsigned place)` (one thread) touches r_h, r_c
    // [0..d] and state[0..STATE_LEN]; target, x_step [0..in_len] with flag 2, target_exp[0] with
    // flags 2 and 4, next[0..d] and next_exp[0] with flag 8: the ranges checked.
    unsafe { launch(device, id::RNN_CARRY, ONE, &mut args) }
}

/// `v[offset..offset + n] = value`.
pub fn fill(device: &Device, (v, offset): (&mut DeviceBuffer, usize), n: usize, value: f32) -> Result<()> {
    let mut args = [output(v, offset, n)?, Arg::F32(value), size(n)];
    // SAFETY: `rnn_fill(float* v, float value, u64 n)` writes v[0..n] of the checked range.
    unsafe { over(device, id::RNN_FILL, n, &mut args) }
}

/// `out[t, k] = table[id_t, k]` for `tokens` ids (the bits of `u32`s in `ids`) of a table
/// `[vocab, dim]`; an id `>= vocab` gives NaN (the layer refuses them before).
pub fn embedding(
    device: &Device,
    table: &DeviceBuffer,
    ids: &DeviceBuffer,
    out: (&mut DeviceBuffer, usize),
    (vocab, dim): (usize, usize),
    tokens: usize,
) -> Result<()> {
    let n = mul(tokens, dim)?;
    let mut args = [
        input(table, 0, mul(vocab, dim)?)?,
        input(ids, 0, tokens)?,
        output(out.0, out.1, n)?,
        size(vocab),
        size(dim),
        size(n),
    ];
    // SAFETY: `embedding_forward(const float* table, const float* ids, float* out, u64 vocab, u64
    // dim, u64 n)` writes out[0..n], reads ids[i / dim] (< tokens) and table[id dim + k] only for
    // id < vocab, k < dim: inside the checked ranges.
    unsafe { over(device, id::EMBEDDING_FORWARD, n, &mut args) }
}
