//! The recurrent layers ([`Lstm`], [`Gru`]): LSTM-LRP against the reference fixtures (Arras et
//! al.'s code), both cells against a float64 implementation of the same equations written here,
//! conservation, the gradient against finite differences, and the errors.

use lrp_runtime::layers::{CellParams, Gru, Lstm, ProductRule, RecurrentGeom, SeqOutput};
use lrp_runtime::{Error, Tensor, Weights};
use safetensors::{Dtype, SafeTensors};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator for weights and inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-a, a]`.
    fn uniform(&mut self, a: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * a
    }

    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(a)).collect()
    }
}

fn max_abs(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `max |a - b|` and `max |b|`.
fn max_err(a: &[f32], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    (max_abs(a.iter().zip(b).map(|(&x, &y)| x as f64 - y)), max_abs(b.iter().copied()))
}

/// Which cell a test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Lstm,
    Gru,
}

impl Kind {
    fn gates(self) -> usize {
        match self {
            Kind::Lstm => 4,
            Kind::Gru => 3,
        }
    }
}

/// Either layer behind one interface.
enum Layer {
    Lstm(Lstm),
    Gru(Gru),
}

impl Layer {
    fn new(kind: Kind, geom: RecurrentGeom, params: Vec<CellParams>) -> Layer {
        match kind {
            Kind::Lstm => Layer::Lstm(Lstm::new("rnn", geom, params).unwrap()),
            Kind::Gru => Layer::Gru(Gru::new("rnn", geom, params).unwrap()),
        }
    }

    fn set_rule(&mut self, rule: ProductRule, eps: f32) {
        match self {
            Layer::Lstm(l) => l.set_rule(rule, eps).unwrap(),
            Layer::Gru(l) => l.set_rule(rule, eps).unwrap(),
        }
    }

    /// Forward pass: the output and the trace.
    fn forward(&self, x: &[f32], steps: usize) -> (Vec<f32>, Vec<f32>) {
        let (trace_len, out_len) = match self {
            Layer::Lstm(l) => (l.trace_len(steps), l.geom().out_len()),
            Layer::Gru(l) => (l.trace_len(steps), l.geom().out_len()),
        };
        let (mut trace, mut y) = (vec![f32::NAN; trace_len], vec![f32::NAN; out_len]);
        match self {
            Layer::Lstm(l) => l.forward(x, steps, &mut trace, &mut y).unwrap(),
            Layer::Gru(l) => l.forward(x, steps, &mut trace, &mut y).unwrap(),
        }
        (y, trace)
    }

    fn scratch(&self, steps: usize) -> Vec<f32> {
        let n = match self {
            Layer::Lstm(l) => l.scratch_len(steps),
            Layer::Gru(l) => l.scratch_len(steps),
        };
        vec![f32::NAN; n]
    }

    fn relevance(&self, x: &[f32], steps: usize, trace: &[f32], r_out: &[f32]) -> Vec<f32> {
        self.try_relevance(x, steps, trace, r_out).unwrap()
    }

    fn try_relevance(&self, x: &[f32], steps: usize, trace: &[f32], r_out: &[f32]) -> Result<Vec<f32>, Error> {
        let mut r_in = vec![f32::NAN; x.len()];
        let mut scratch = self.scratch(steps);
        match self {
            Layer::Lstm(l) => l.relevance(x, steps, trace, r_out, &mut r_in, &mut scratch)?,
            Layer::Gru(l) => l.relevance(x, steps, trace, r_out, &mut r_in, &mut scratch)?,
        }
        Ok(r_in)
    }

    fn gradient(&self, x: &[f32], steps: usize, trace: &[f32], g_out: &[f32]) -> Vec<f32> {
        self.try_gradient(x, steps, trace, g_out).unwrap()
    }

    fn try_gradient(&self, x: &[f32], steps: usize, trace: &[f32], g_out: &[f32]) -> Result<Vec<f32>, Error> {
        let mut g_in = vec![f32::NAN; x.len()];
        let mut scratch = self.scratch(steps);
        match self {
            Layer::Lstm(l) => l.gradient(x, steps, trace, g_out, &mut g_in, &mut scratch)?,
            Layer::Gru(l) => l.gradient(x, steps, trace, g_out, &mut g_in, &mut scratch)?,
        }
        Ok(g_in)
    }
}

fn geom(
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bidirectional: bool,
    output: SeqOutput,
) -> RecurrentGeom {
    RecurrentGeom { input_size, hidden_size, num_layers, bidirectional, output }
}

/// Random parameters, layer-major, direction-minor; `bias = 0.0` gives no biases.
fn random_params(kind: Kind, g: &RecurrentGeom, rng: &mut Rng, weight: f32, bias: f32) -> Vec<CellParams> {
    let rows = kind.gates() * g.hidden_size;
    let mut params = Vec::new();
    for layer in 0..g.num_layers {
        for _ in 0..g.directions() {
            let w_ih = rng.vec(rows * g.layer_input(layer), weight);
            let w_hh = rng.vec(rows * g.hidden_size, weight);
            let (b_ih, b_hh) =
                if bias > 0.0 { (Some(rng.vec(rows, bias)), Some(rng.vec(rows, bias))) } else { (None, None) };
            params.push(CellParams { w_ih, w_hh, b_ih, b_hh });
        }
    }
    params
}

// ---------------------------------------------------------------------------------------------
// A float64 implementation of the same equations, written out directly
// ---------------------------------------------------------------------------------------------

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn stab(z: f64, eps: f64) -> f64 {
    if z >= 0.0 { z + eps } else { z - eps }
}

/// `(R_gate, R_signal)` of a product.
fn split(rule: ProductRule, eps: f64, gate: f64, signal: f64, r: f64) -> (f64, f64) {
    match rule {
        ProductRule::All => (0.0, r),
        ProductRule::Prop => {
            let den = stab(gate + signal, eps);
            (gate * r / den, signal * r / den)
        }
        ProductRule::Half => (r / 2.0, r / 2.0),
    }
}

struct RefCell {
    w_ih: Vec<f64>,
    w_hh: Vec<f64>,
    b_ih: Vec<f64>,
    b_hh: Vec<f64>,
}

/// One step: LSTM `pre` = full pre-activations, `act` = i, f, g, o, `c`; GRU `pre` = W_ih x + b_ih,
/// `gh` = W_hh h + b_hh, `act` = r, z, n.
#[derive(Clone, Default)]
struct RefStep {
    pre: Vec<f64>,
    gh: Vec<f64>,
    act: Vec<f64>,
    c: Vec<f64>,
}

struct RefTrace {
    /// Per layer `[T, S]`.
    outs: Vec<Vec<f64>>,
    /// Per (layer, direction), indexed by time.
    steps: Vec<Vec<RefStep>>,
    y: Vec<f64>,
}

struct RefNet {
    kind: Kind,
    geom: RecurrentGeom,
    cells: Vec<RefCell>,
}

/// `W v` for `W: [rows, cols]`.
fn mv(w: &[f64], rows: usize, cols: usize, v: &[f64]) -> Vec<f64> {
    (0..rows).map(|i| (0..cols).map(|j| w[i * cols + j] * v[j]).sum()).collect()
}

impl RefNet {
    fn new(kind: Kind, geom: RecurrentGeom, params: &[CellParams]) -> Self {
        let rows = kind.gates() * geom.hidden_size;
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let cells = params
            .iter()
            .map(|p| RefCell {
                w_ih: f(&p.w_ih),
                w_hh: f(&p.w_hh),
                b_ih: p.b_ih.as_deref().map(f).unwrap_or(vec![0.0; rows]),
                b_hh: p.b_hh.as_deref().map(f).unwrap_or(vec![0.0; rows]),
            })
            .collect();
        RefNet { kind, geom, cells }
    }

    fn time(dir: usize, s: usize, t: usize) -> usize {
        if dir == 0 { s } else { t - 1 - s }
    }

    fn forward(&self, x: &[f32], steps: usize) -> RefTrace {
        let g = self.geom;
        let (d, dirs, sl) = (g.hidden_size, g.directions(), g.step_len());
        let mut outs: Vec<Vec<f64>> = Vec::new();
        let mut all_steps = Vec::new();
        for layer in 0..g.num_layers {
            let in_len = g.layer_input(layer);
            let input: Vec<f64> =
                if layer == 0 { x.iter().map(|&v| v as f64).collect() } else { outs[layer - 1].clone() };
            let mut out = vec![0.0; steps * sl];
            for dir in 0..dirs {
                let cell = &self.cells[layer * dirs + dir];
                let mut recs = vec![RefStep::default(); steps];
                let (mut h, mut c) = (vec![0.0; d], vec![0.0; d]);
                for s in 0..steps {
                    let t = Self::time(dir, s, steps);
                    let xt = &input[t * in_len..(t + 1) * in_len];
                    let gi: Vec<f64> = mv(&cell.w_ih, self.kind.gates() * d, in_len, xt)
                        .iter()
                        .zip(&cell.b_ih)
                        .map(|(a, b)| a + b)
                        .collect();
                    let gh: Vec<f64> = mv(&cell.w_hh, self.kind.gates() * d, d, &h)
                        .iter()
                        .zip(&cell.b_hh)
                        .map(|(a, b)| a + b)
                        .collect();
                    let rec = match self.kind {
                        Kind::Lstm => {
                            let a: Vec<f64> = gi.iter().zip(&gh).map(|(p, q)| p + q).collect();
                            let mut act = vec![0.0; 4 * d];
                            for j in 0..d {
                                act[j] = sigmoid(a[j]);
                                act[d + j] = sigmoid(a[d + j]);
                                act[2 * d + j] = a[2 * d + j].tanh();
                                act[3 * d + j] = sigmoid(a[3 * d + j]);
                                c[j] = act[d + j] * c[j] + act[j] * act[2 * d + j];
                                h[j] = act[3 * d + j] * c[j].tanh();
                            }
                            RefStep { pre: a, gh: vec![], act, c: c.clone() }
                        }
                        Kind::Gru => {
                            let mut act = vec![0.0; 3 * d];
                            for j in 0..d {
                                let r = sigmoid(gi[j] + gh[j]);
                                let z = sigmoid(gi[d + j] + gh[d + j]);
                                let n = (gi[2 * d + j] + r * gh[2 * d + j]).tanh();
                                act[j] = r;
                                act[d + j] = z;
                                act[2 * d + j] = n;
                                h[j] = (1.0 - z) * n + z * h[j];
                            }
                            RefStep { pre: gi, gh, act, c: vec![] }
                        }
                    };
                    recs[t] = rec;
                    out[t * sl + dir * d..t * sl + (dir + 1) * d].copy_from_slice(&h);
                }
                all_steps.push(recs);
            }
            outs.push(out);
        }
        let last = outs.last().unwrap();
        let y: Vec<f64> = match g.output {
            SeqOutput::Last => (0..sl).map(|f| if f < d { last[(steps - 1) * sl + f] } else { last[f] }).collect(),
            SeqOutput::Mean => {
                (0..sl).map(|f| (0..steps).map(|t| last[t * sl + f]).sum::<f64>() / steps as f64).collect()
            }
            SeqOutput::Max => {
                (0..sl).map(|f| (0..steps).map(|t| last[t * sl + f]).fold(f64::NEG_INFINITY, f64::max)).collect()
            }
        };
        RefTrace { outs, steps: all_steps, y }
    }

    /// LRP of the input; also the largest magnitude of any relevance or message on the way
    /// (`amp`, the conditioning of the case).
    fn relevance(
        &self,
        x: &[f32],
        steps: usize,
        tr: &RefTrace,
        r_out: &[f32],
        rule: ProductRule,
        eps: f64,
    ) -> (Vec<f64>, f64) {
        let g = self.geom;
        let (d, dirs, sl) = (g.hidden_size, g.directions(), g.step_len());
        let gates = self.kind.gates();
        let mut amp = 0.0f64;
        let mut track = |v: f64| amp = amp.max(v.abs());
        let last = tr.outs.last().unwrap();
        let mut arriving = vec![0.0; steps * sl];
        match g.output {
            SeqOutput::Last => {
                for f in 0..sl {
                    let t = if f < d { steps - 1 } else { 0 };
                    arriving[t * sl + f] = r_out[f] as f64;
                }
            }
            SeqOutput::Mean => {
                for t in 0..steps {
                    for f in 0..sl {
                        arriving[t * sl + f] = last[t * sl + f] / steps as f64 * r_out[f] as f64 / stab(tr.y[f], eps);
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
                    arriving[best * sl + f] = r_out[f] as f64;
                }
            }
        }
        for layer in (0..g.num_layers).rev() {
            let in_len = g.layer_input(layer);
            let input: Vec<f64> =
                if layer == 0 { x.iter().map(|&v| v as f64).collect() } else { tr.outs[layer - 1].clone() };
            let out = &tr.outs[layer];
            let mut r_in = vec![0.0; steps * in_len];
            for dir in 0..dirs {
                let cell = &self.cells[layer * dirs + dir];
                let recs = &tr.steps[layer * dirs + dir];
                let (mut r_h, mut r_c) = (vec![0.0; d], vec![0.0; d]);
                for s in (0..steps).rev() {
                    let t = Self::time(dir, s, steps);
                    let p = (s > 0).then(|| Self::time(dir, s - 1, steps));
                    let h_prev: Vec<f64> = match p {
                        Some(p) => out[p * sl + dir * d..p * sl + (dir + 1) * d].to_vec(),
                        None => vec![0.0; d],
                    };
                    for j in 0..d {
                        r_h[j] += arriving[t * sl + dir * d + j];
                        track(r_h[j]);
                    }
                    let rec = &recs[t];
                    // Relevance per row of W_ih (at its pre-activation) and per row of W_hh.
                    let (mut s_x, mut s_h) = (vec![0.0; gates * d], vec![0.0; gates * d]);
                    let mut direct = vec![0.0; d];
                    match self.kind {
                        Kind::Lstm => {
                            let (a, act) = (&rec.pre, &rec.act);
                            for j in 0..d {
                                let (i, f, gg, o) = (act[j], act[d + j], act[2 * d + j], act[3 * d + j]);
                                let c = rec.c[j];
                                let c_prev = p.map_or(0.0, |p| recs[p].c[j]);
                                let (r_o, r_tc) = split(rule, eps, o, c.tanh(), r_h[j]);
                                let r_cell = r_c[j] + r_tc;
                                let r_fc = f * c_prev * r_cell / stab(c, eps);
                                let r_ig = i * gg * r_cell / stab(c, eps);
                                let (r_f, r_cp) = split(rule, eps, f, c_prev, r_fc);
                                let (r_i, r_g) = split(rule, eps, i, gg, r_ig);
                                for v in [r_o, r_tc, r_cell, r_fc, r_ig, r_f, r_cp, r_i, r_g] {
                                    track(v);
                                }
                                r_c[j] = r_cp;
                                for (blk, r) in [r_i, r_f, r_g, r_o].into_iter().enumerate() {
                                    s_x[blk * d + j] = r / stab(a[blk * d + j], eps);
                                    s_h[blk * d + j] = s_x[blk * d + j];
                                }
                            }
                        }
                        Kind::Gru => {
                            let (gi, gh, act) = (&rec.pre, &rec.gh, &rec.act);
                            for j in 0..d {
                                let (r, z, n) = (act[j], act[d + j], act[2 * d + j]);
                                let q = gh[2 * d + j];
                                let (u, v) = ((1.0 - z) * n, z * h_prev[j]);
                                let (r_u, r_v) = (u * r_h[j] / stab(u + v, eps), v * r_h[j] / stab(u + v, eps));
                                let (r_gu, r_n) = split(rule, eps, 1.0 - z, n, r_u);
                                let (r_gv, r_d) = split(rule, eps, z, h_prev[j], r_v);
                                let a_n = gi[2 * d + j] + r * q;
                                let r_rq = r * q * r_n / stab(a_n, eps);
                                let (r_r, r_q) = split(rule, eps, r, q, r_rq);
                                for v in [r_u, r_v, r_gu, r_n, r_gv, r_d, r_rq, r_r, r_q] {
                                    track(v);
                                }
                                direct[j] = r_d;
                                s_x[j] = r_r / stab(gi[j] + gh[j], eps);
                                s_x[d + j] = (r_gu + r_gv) / stab(gi[d + j] + gh[d + j], eps);
                                s_x[2 * d + j] = r_n / stab(a_n, eps);
                                s_h[j] = s_x[j];
                                s_h[d + j] = s_x[d + j];
                                s_h[2 * d + j] = r_q / stab(q, eps);
                            }
                        }
                    }
                    let xt = &input[t * in_len..(t + 1) * in_len];
                    for (k, &sk) in s_x.iter().enumerate() {
                        for jx in 0..in_len {
                            let m = xt[jx] * cell.w_ih[k * in_len + jx] * sk;
                            track(m);
                            r_in[t * in_len + jx] += m;
                        }
                    }
                    r_h = direct;
                    for (k, &sk) in s_h.iter().enumerate() {
                        for jh in 0..d {
                            let m = h_prev[jh] * cell.w_hh[k * d + jh] * sk;
                            track(m);
                            r_h[jh] += m;
                        }
                    }
                }
            }
            arriving = r_in;
        }
        (arriving, amp)
    }
}

// ---------------------------------------------------------------------------------------------
// 1. LSTM against the reference fixtures
// ---------------------------------------------------------------------------------------------

/// A tensor of a cases file as f64 (floats) or i64 (integers), with its shape.
fn case_tensor(cases: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = cases.tensor(name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let b = t.data();
    let data = match t.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        other => panic!("{name}: dtype {other:?}"),
    };
    (t.shape().to_vec(), data)
}

/// Worst errors of one fixture model, relative to the largest reference value of the sequence.
#[derive(Debug, Default)]
struct FixtureErrors {
    logits: f64,
    lrp: f64,
    gxi: f64,
}

fn check_lstm_fixture(model: &str, bidirectional: bool) -> FixtureErrors {
    let weights_path = format!("{FIXTURES}{model}.weights.safetensors");
    let mut weights = Weights::from_file(&weights_path).unwrap();
    // Sizes from the tensors themselves: embedding [V, e], weight_hh_l0 [4d, d], logits [N, C].
    let weights_bytes = std::fs::read(&weights_path).unwrap();
    let raw = SafeTensors::deserialize(&weights_bytes).unwrap();
    let shape = |name: &str| raw.tensor(name).unwrap().shape().to_vec();
    let ([vocab, e], [_, d]) =
        (shape("embedding.weight")[..].try_into().unwrap(), shape("lstm.weight_hh_l0")[..].try_into().unwrap());
    let cases_bytes = std::fs::read(format!("{FIXTURES}{model}.cases.safetensors")).unwrap();
    let cases = SafeTensors::deserialize(&cases_bytes).unwrap();
    let (logits_shape, logits_ref) = case_tensor(&cases, "logits");
    let (n_seq, classes) = (logits_shape[0], logits_shape[1]);
    let (_, target) = case_tensor(&cases, "target");
    let embedding = weights.take("embedding.weight", "embedding", &[vocab, e]).unwrap();
    let g = geom(e, d, 1, bidirectional, SeqOutput::Last);
    let lstm = Lstm::load(&mut weights, "lstm", g, true).unwrap();
    let sl = g.out_len();
    let fc = weights.take("fc.weight", "fc", &[classes, sl]).unwrap();
    assert!(weights.finish(true).unwrap().is_empty());
    assert_eq!(lstm.name(), "lstm");
    assert_eq!((lstm.rule(), lstm.epsilon()), (ProductRule::All, 0.001));
    let layer = Layer::Lstm(lstm);

    let mut worst = FixtureErrors::default();
    for n in 0..n_seq {
        let (_, tokens) = case_tensor(&cases, &format!("tokens.{n}"));
        let steps = tokens.len();
        let x: Vec<f32> =
            tokens.iter().flat_map(|&tok| embedding[tok as usize * e..(tok as usize + 1) * e].to_vec()).collect();
        let (y, trace) = layer.forward(&x, steps);
        let logits: Vec<f32> =
            (0..classes).map(|c| (0..sl).map(|f| fc[c * sl + f] as f64 * y[f] as f64).sum::<f64>() as f32).collect();
        let (err, scale) = max_err(&logits, &logits_ref[n * classes..(n + 1) * classes]);
        worst.logits = worst.logits.max(err / scale);
        assert!(err <= 1e-5 * scale, "{model}[{n}] logits: max error {err:e}, max |logit| {scale}");

        let c = target[n] as usize;
        // R = one-hot(target) * logit through fc by the epsilon rule (denominators = logits).
        let s = logits[c] as f64 / stab(logits[c] as f64, 0.001);
        let r_out: Vec<f32> = (0..sl).map(|f| (y[f] as f64 * fc[c * sl + f] as f64 * s) as f32).collect();
        let r_in = layer.relevance(&x, steps, &trace, &r_out);
        let (_, lrp_ref) = case_tensor(&cases, &format!("lrp.{n}"));
        let (err, scale) = max_err(&r_in, &lrp_ref);
        worst.lrp = worst.lrp.max(err / scale);
        assert!(err <= 1e-4 * scale, "{model}[{n}] LRP: max error {err:e}, max |R_ref| {scale}");

        let g_out = &fc[c * sl..(c + 1) * sl];
        let g_in = layer.gradient(&x, steps, &trace, g_out);
        let gxi: Vec<f32> = g_in.iter().zip(&x).map(|(g, x)| g * x).collect();
        let (_, gxi_ref) = case_tensor(&cases, &format!("gxi.{n}"));
        let (err, scale) = max_err(&gxi, &gxi_ref);
        worst.gxi = worst.gxi.max(err / scale);
        assert!(err <= 1e-4 * scale, "{model}[{n}] gradient x input: max error {err:e}, max |ref| {scale}");
    }
    eprintln!("{model}: worst relative errors {worst:?}");
    worst
}

#[test]
fn lstm_matches_reference_fixture() {
    check_lstm_fixture("lstm", false);
}

#[test]
fn bilstm_matches_reference_fixture() {
    check_lstm_fixture("bilstm", true);
}

// ---------------------------------------------------------------------------------------------
// 2. Both cells against the float64 implementation
// ---------------------------------------------------------------------------------------------

/// Forward to 1e-5 and LRP to 1e-4 (relative to the largest value) on random weights with
/// biases, eps = 0.001. Cases whose largest intermediate relevance or message exceeds 100 times
/// the largest input relevance are ill-conditioned for f32 and skipped (counted).
fn check_against_f64(kind: Kind, rules: &[ProductRule]) {
    let (mut cases, mut skipped, mut worst_fwd, mut worst_lrp) = (0, 0, 0.0f64, 0.0f64);
    for (seed, (bidirectional, layers)) in [(false, 1), (true, 1), (false, 2), (true, 2)].into_iter().enumerate() {
        for output in [SeqOutput::Last, SeqOutput::Mean, SeqOutput::Max] {
            for &rule in rules {
                let mut rng = Rng(1000 + seed as u64 * 17 + output as u64 * 5 + rule as u64);
                let (input, hidden, steps) = (5, 4, 6);
                let g = geom(input, hidden, layers, bidirectional, output);
                let params = random_params(kind, &g, &mut rng, 0.6, 0.3);
                let reference = RefNet::new(kind, g, &params);
                let mut layer = Layer::new(kind, g, params);
                layer.set_rule(rule, 0.001);
                let x = rng.vec(steps * input, 1.0);
                let (y, trace) = layer.forward(&x, steps);
                let tr = reference.forward(&x, steps);
                let (err, scale) = max_err(&y, &tr.y);
                worst_fwd = worst_fwd.max(err / scale);
                assert!(err <= 1e-5 * scale, "{kind:?} {g:?}: forward error {err:e} (max |y| {scale})");
                let r_out: Vec<f32> = y.iter().map(|&v| v * (0.5 + rng.uniform(0.5))).collect();
                let r_in = layer.relevance(&x, steps, &trace, &r_out);
                let (r_ref, amp) = reference.relevance(&x, steps, &tr, &r_out, rule, 0.001);
                let (err, scale) = max_err(&r_in, &r_ref);
                cases += 1;
                if amp > 100.0 * scale {
                    skipped += 1;
                    continue;
                }
                worst_lrp = worst_lrp.max(err / scale);
                assert!(err <= 1e-4 * scale, "{kind:?} {rule:?} {g:?}: LRP error {err:e} (max |R| {scale})");
            }
        }
    }
    eprintln!("{kind:?} {rules:?}: worst forward {worst_fwd:e}, worst LRP {worst_lrp:e}, skipped {skipped}/{cases}");
    assert!(2 * skipped <= cases, "too many ill-conditioned cases: {skipped} of {cases}");
}

#[test]
fn gru_matches_f64_reference_lrp_all() {
    check_against_f64(Kind::Gru, &[ProductRule::All]);
}

#[test]
fn gru_matches_f64_reference_lrp_prop_half() {
    check_against_f64(Kind::Gru, &[ProductRule::Prop, ProductRule::Half]);
}

#[test]
fn lstm_stacked_matches_f64_reference_all_rules() {
    check_against_f64(Kind::Lstm, &[ProductRule::All, ProductRule::Prop, ProductRule::Half]);
}

// ---------------------------------------------------------------------------------------------
// 3. Conservation
// ---------------------------------------------------------------------------------------------

/// With all biases zero and eps = 1e-9, the input relevance sums to the output relevance within
/// 1e-3 of `sum |r_out|`. Criterion for an ill-conditioned case (skipped, counted, at most a
/// quarter): the float64 implementation's largest intermediate relevance or message exceeds
/// 1000 `sum |r_out|`, i.e. cancellation in some denominator amplifies f32 rounding past the
/// tolerance.
#[test]
fn relevance_is_conserved_without_bias() {
    let (mut cases, mut skipped, mut worst) = (0, 0, 0.0f64);
    for kind in [Kind::Lstm, Kind::Gru] {
        for (bidirectional, layers) in [(false, 1), (true, 1), (false, 2), (true, 2)] {
            for rule in [ProductRule::All, ProductRule::Prop, ProductRule::Half] {
                for output in [SeqOutput::Last, SeqOutput::Mean] {
                    for seed in 0..3u64 {
                        let mut rng = Rng(seed * 7919 + layers as u64 * 31 + bidirectional as u64 + 100 * rule as u64);
                        let (input, hidden, steps) = (4, 5, 2 + seed as usize * 3);
                        let g = geom(input, hidden, layers, bidirectional, output);
                        let params = random_params(kind, &g, &mut rng, 0.7, 0.0);
                        let reference = RefNet::new(kind, g, &params);
                        let mut layer = Layer::new(kind, g, params);
                        layer.set_rule(rule, 1e-9);
                        let x = rng.vec(steps * input, 1.0);
                        let (y, trace) = layer.forward(&x, steps);
                        let r_out: Vec<f32> = if seed == 1 {
                            // One-hot times y at the largest |y|.
                            let k = (0..y.len()).max_by(|&a, &b| y[a].abs().total_cmp(&y[b].abs())).unwrap();
                            (0..y.len()).map(|f| if f == k { y[f] } else { 0.0 }).collect()
                        } else {
                            y.iter().map(|&v| v * (rng.uniform(0.5) + 0.5)).collect()
                        };
                        let total_abs: f64 = r_out.iter().map(|&v| (v as f64).abs()).sum();
                        let r_in = layer.relevance(&x, steps, &trace, &r_out);
                        let (_, amp) =
                            reference.relevance(&x, steps, &reference.forward(&x, steps), &r_out, rule, 1e-9);
                        cases += 1;
                        if amp > 1000.0 * total_abs {
                            skipped += 1;
                            continue;
                        }
                        let sum_out: f64 = r_out.iter().map(|&v| v as f64).sum();
                        let sum_in: f64 = r_in.iter().map(|&v| v as f64).sum();
                        let rel = (sum_in - sum_out).abs() / total_abs;
                        worst = worst.max(rel);
                        assert!(
                            rel <= 1e-3,
                            "{kind:?} {rule:?} {g:?} seed {seed}: sum R_in {sum_in} vs sum R_out {sum_out}"
                        );
                    }
                }
            }
        }
    }
    eprintln!("conservation: worst relative error {worst:e}, skipped {skipped}/{cases}");
    assert!(4 * skipped <= cases, "too many ill-conditioned cases: {skipped} of {cases}");
}

// ---------------------------------------------------------------------------------------------
// 4. Gradient against finite differences
// ---------------------------------------------------------------------------------------------

/// Time step of each feature's maximum over the last layer's outputs (float64 forward pass).
fn max_winners(reference: &RefNet, x: &[f32], steps: usize) -> Vec<usize> {
    let last = reference.forward(x, steps).outs.pop().unwrap();
    let sl = reference.geom.step_len();
    (0..sl)
        .map(|f| (1..steps).fold(0, |best, t| if last[t * sl + f] > last[best * sl + f] { t } else { best }))
        .collect()
}

/// Central differences with step 1e-2 in f32, to 1e-2 of the largest gradient entry. For `Max`
/// an input coordinate whose perturbation moves some feature's maximum to another time step is
/// not differentiable across the stencil and is left out (counted; at most a third).
#[test]
fn gradient_matches_finite_differences() {
    let (mut checked, mut left_out) = (0, 0);
    for kind in [Kind::Lstm, Kind::Gru] {
        for output in [SeqOutput::Max, SeqOutput::Mean, SeqOutput::Last] {
            for layers in [1, 2] {
                let mut rng = Rng(42 + layers as u64 + 10 * output as u64 + 100 * kind.gates() as u64);
                let (input, hidden, steps) = (3, 4, 5);
                let g = geom(input, hidden, layers, true, output);
                let params = random_params(kind, &g, &mut rng, 0.8, 0.3);
                let reference = RefNet::new(kind, g, &params);
                let layer = Layer::new(kind, g, params);
                let x = rng.vec(steps * input, 1.0);
                let g_out = rng.vec(g.out_len(), 1.0);
                let (_, trace) = layer.forward(&x, steps);
                let grad = layer.gradient(&x, steps, &trace, &g_out);
                let objective = |x: &[f32]| -> f64 {
                    let (y, _) = layer.forward(x, steps);
                    y.iter().zip(&g_out).map(|(&a, &b)| a as f64 * b as f64).sum()
                };
                let h = 1e-2f32;
                let scale = max_abs(grad.iter().map(|&v| v as f64));
                let winners = max_winners(&reference, &x, steps);
                for i in 0..x.len() {
                    let (mut up, mut down) = (x.clone(), x.clone());
                    up[i] += h;
                    down[i] -= h;
                    if output == SeqOutput::Max
                        && (max_winners(&reference, &up, steps) != winners
                            || max_winners(&reference, &down, steps) != winners)
                    {
                        left_out += 1;
                        continue;
                    }
                    checked += 1;
                    let fd = (objective(&up) - objective(&down)) / (2.0 * h as f64);
                    let err = (grad[i] as f64 - fd).abs();
                    assert!(
                        err <= 1e-2 * scale,
                        "{kind:?} {output:?} layers {layers} x[{i}]: {} vs {fd} (max |grad| {scale})",
                        grad[i]
                    );
                }
            }
        }
    }
    eprintln!("finite differences: {checked} coordinates checked, {left_out} left out (Max ties)");
    assert!(3 * left_out <= checked + left_out, "{left_out} coordinates left out");
}

// ---------------------------------------------------------------------------------------------
// 5. Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn zero_steps_and_short_buffers_are_errors() {
    let g = geom(3, 2, 2, true, SeqOutput::Last);
    let mut rng = Rng(5);
    let gru = Gru::new("gru", g, random_params(Kind::Gru, &g, &mut rng, 0.5, 0.1)).unwrap();
    let steps = 4;
    let x = vec![0.5; steps * 3];
    let (mut trace, mut y) = (vec![0.0; gru.trace_len(steps)], vec![0.0; g.out_len()]);
    let mut scratch = vec![0.0; gru.scratch_len(steps)];
    let mut r_in = vec![0.0; x.len()];

    let err = gru.forward(&x, 0, &mut trace, &mut y).unwrap_err();
    assert!(matches!(&err, Error::InvalidParameter { what, .. } if what.contains("`gru`")), "{err:?}");
    let err = gru.relevance(&x, 0, &trace, &y, &mut r_in, &mut scratch).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err:?}");
    let err = gru.gradient(&x, 0, &trace, &y, &mut r_in, &mut scratch).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err:?}");

    let err = gru.forward(&x[1..], steps, &mut trace, &mut y).unwrap_err();
    assert_eq!(err, Error::Length { what: "input buffer of layer `gru`".into(), expected: 12, found: 11 });
    let short = gru.trace_len(steps) - 1;
    let err = gru.forward(&x, steps, &mut trace[..short], &mut y).unwrap_err();
    assert!(matches!(&err, Error::Length { what, .. } if what == "trace buffer of layer `gru`"), "{err:?}");
    let err = gru.forward(&x, steps, &mut trace, &mut y[..3]).unwrap_err();
    assert!(matches!(&err, Error::Length { what, expected: 4, found: 3 } if what.starts_with("output")), "{err:?}");
    gru.forward(&x, steps, &mut trace, &mut y).unwrap();
    // A shorter sequence fits a trace sized for a longer one.
    gru.forward(&x[..6], 2, &mut trace, &mut y).unwrap();
    gru.forward(&x, steps, &mut trace, &mut y).unwrap();

    let short = gru.scratch_len(steps) - 1;
    let err = gru.relevance(&x, steps, &trace, &y, &mut r_in, &mut scratch[..short]).unwrap_err();
    assert!(matches!(&err, Error::Length { what, .. } if what == "scratch buffer of layer `gru`"), "{err:?}");
    let err = gru.relevance(&x, steps, &trace, &y, &mut r_in[..5], &mut scratch).unwrap_err();
    assert!(matches!(&err, Error::Length { what, .. } if what.starts_with("input relevance")), "{err:?}");
    let err = gru.relevance(&x, steps, &trace, &y[..1], &mut r_in, &mut scratch).unwrap_err();
    assert!(matches!(&err, Error::Length { what, .. } if what.starts_with("output relevance")), "{err:?}");
    let err = gru.gradient(&x, steps, &trace[..10], &y, &mut r_in, &mut scratch).unwrap_err();
    assert!(matches!(&err, Error::Length { what, .. } if what.starts_with("trace")), "{err:?}");
    let err = gru.gradient(&x, steps, &trace, &y, &mut r_in[..5], &mut scratch).unwrap_err();
    assert!(matches!(&err, Error::Length { what, .. } if what.starts_with("input gradient")), "{err:?}");
    gru.relevance(&x, steps, &trace, &y, &mut r_in, &mut scratch).unwrap();
    gru.gradient(&x, steps, &trace, &y, &mut r_in, &mut scratch).unwrap();
}

#[test]
fn wrong_parameters_are_errors() {
    let g = geom(3, 2, 2, true, SeqOutput::Mean);
    let mut rng = Rng(9);
    let good = random_params(Kind::Lstm, &g, &mut rng, 0.5, 0.1);
    assert!(Lstm::new("lstm", g, good.clone()).is_ok());
    assert!(Gru::new("gru", g, good.clone()).is_err(), "LSTM-sized parameters are not a GRU's");

    let mut bad = good.clone();
    bad[0].w_ih.pop();
    let err = Lstm::new("lstm", g, bad).unwrap_err();
    assert_eq!(err, Error::ShapeMismatch { name: "lstm.weight_ih_l0".into(), expected: vec![8, 3], found: vec![23] });
    let mut bad = good.clone();
    bad[3].w_hh.push(0.0);
    let err = Lstm::new("lstm", g, bad).unwrap_err();
    assert!(matches!(&err, Error::ShapeMismatch { name, .. } if name == "lstm.weight_hh_l1_reverse"), "{err:?}");
    let mut bad = good.clone();
    bad[2].w_ih = vec![0.0; 8 * 3]; // layer 1 reads 2 * hidden = 4 features
    let err = Lstm::new("lstm", g, bad).unwrap_err();
    assert_eq!(err, Error::ShapeMismatch { name: "lstm.weight_ih_l1".into(), expected: vec![8, 4], found: vec![24] });
    let mut bad = good.clone();
    bad[1].b_hh = Some(vec![0.0; 7]);
    let err = Lstm::new("lstm", g, bad).unwrap_err();
    assert!(matches!(&err, Error::ShapeMismatch { name, .. } if name == "lstm.bias_hh_l0_reverse"), "{err:?}");
    let err = Lstm::new("lstm", g, good[..3].to_vec()).unwrap_err();
    assert!(matches!(&err, Error::InvalidParameter { what, .. } if what.contains("`lstm`")), "{err:?}");
    let err = Gru::new("gru", geom(3, 0, 1, false, SeqOutput::Last), vec![]).unwrap_err();
    assert!(matches!(&err, Error::InvalidParameter { what, .. } if what.contains("`gru`")), "{err:?}");

    let mut lstm = Lstm::new("lstm", g, good).unwrap();
    for eps in [f32::NAN, -1e-3, f32::INFINITY] {
        let err = lstm.set_rule(ProductRule::Half, eps).unwrap_err();
        assert!(matches!(&err, Error::InvalidParameter { what, .. } if what.contains("`lstm`")), "{err:?}");
    }
    lstm.set_rule(ProductRule::Prop, 0.0).unwrap();
    assert_eq!((lstm.rule(), lstm.epsilon()), (ProductRule::Prop, 0.0));
}

#[test]
fn load_takes_pytorch_names() {
    let g = geom(3, 2, 2, true, SeqOutput::Last);
    let mut rng = Rng(11);
    let params = random_params(Kind::Gru, &g, &mut rng, 0.5, 0.2);
    let mut tensors = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let suffix = RecurrentGeom::suffix(i / 2, i % 2);
        let in_len = g.layer_input(i / 2);
        tensors.push((format!("enc.weight_ih_{suffix}"), Tensor { shape: vec![6, in_len], data: p.w_ih.clone() }));
        tensors.push((format!("enc.weight_hh_{suffix}"), Tensor { shape: vec![6, 2], data: p.w_hh.clone() }));
        tensors.push((format!("enc.bias_ih_{suffix}"), Tensor { shape: vec![6], data: p.b_ih.clone().unwrap() }));
        tensors.push((format!("enc.bias_hh_{suffix}"), Tensor { shape: vec![6], data: p.b_hh.clone().unwrap() }));
    }
    let mut weights = Weights::from_tensors(tensors.clone());
    let loaded = Gru::load(&mut weights, "enc", g, true).unwrap();
    assert!(weights.finish(true).unwrap().is_empty());
    assert_eq!((loaded.name(), *loaded.geom()), ("enc", g));
    let direct = Layer::Gru(Gru::new("enc", g, params).unwrap());
    let loaded = Layer::Gru(loaded);
    let x = rng.vec(4 * 3, 1.0);
    assert_eq!(loaded.forward(&x, 4).0, direct.forward(&x, 4).0);

    // Without biases nothing but the weights is taken.
    let mut weights = Weights::from_tensors(tensors.clone());
    Gru::load(&mut weights, "enc", g, false).unwrap();
    assert_eq!(weights.unused().len(), 8);
    // A missing or mis-shaped tensor.
    let mut weights = Weights::from_tensors(tensors.iter().filter(|(n, _)| n != "enc.bias_hh_l1_reverse").cloned());
    let err = Gru::load(&mut weights, "enc", g, true).unwrap_err();
    assert_eq!(err, Error::MissingTensor { name: "enc.bias_hh_l1_reverse".into(), layer: "enc".into() });
    let mut weights = Weights::from_tensors(tensors);
    let err = Lstm::load(&mut weights, "enc", g, true).unwrap_err();
    assert!(matches!(&err, Error::ShapeMismatch { name, .. } if name == "enc.weight_ih_l0"), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// 6. Range: rescaling, overflow errors, sizes
// ---------------------------------------------------------------------------------------------

/// `v 2^k` for each value, exactly (`k` within f32's exponents).
fn times_pow2(v: &[f32], k: i32) -> Vec<f32> {
    v.iter().map(|&x| (x as f64 * 2f64.powi(k)) as f32).collect()
}

/// Both passes are linear in their seed and carry their values rescaled by powers of two: the
/// seed times `2^k`, with `k` as large as keeps the result in f32, gives exactly `2^k` times the
/// result, bit for bit, although the largest intermediate value (the float64 implementation's
/// `amp`) then exceeds f32 in a third of the cases (`W_ih` is small, so the input relevance is
/// much smaller than what the cell carries): there an unscaled f32 pass returned infinities or
/// NaN.
#[test]
fn results_scale_exactly_up_to_the_f32_limit() {
    let (mut cases, mut beyond) = (0, 0);
    for kind in [Kind::Lstm, Kind::Gru] {
        for (bidirectional, layers) in [(false, 1), (true, 2)] {
            for (i, rule) in [ProductRule::All, ProductRule::Prop, ProductRule::Half].into_iter().enumerate() {
                for seed in 0..3 {
                    let mut rng = Rng(300 + 10 * i as u64 + layers as u64 + kind.gates() as u64 * 100 + seed * 1000);
                    let (input, hidden, steps) = (4, 5, 12);
                    let g = geom(input, hidden, layers, bidirectional, SeqOutput::Mean);
                    let mut params = random_params(kind, &g, &mut rng, 0.6, 0.3);
                    params.iter_mut().for_each(|p| p.w_ih.iter_mut().for_each(|w| *w *= 1e-3));
                    let reference = RefNet::new(kind, g, &params);
                    let mut layer = Layer::new(kind, g, params);
                    layer.set_rule(rule, 0.001);
                    let x = rng.vec(steps * input, 1.0);
                    let (y, trace) = layer.forward(&x, steps);
                    let r_out: Vec<f32> = y.iter().map(|&v| v * (0.5 + rng.uniform(0.5))).collect();
                    for pass in ["relevance", "gradient"] {
                        let run = |seed: &[f32]| match pass {
                            "relevance" => layer.try_relevance(&x, steps, &trace, seed),
                            _ => layer.try_gradient(&x, steps, &trace, seed),
                        };
                        let small = run(&r_out).unwrap();
                        let largest = max_abs(small.iter().chain(&r_out).map(|&v| v as f64));
                        let k = (f32::MAX as f64 / largest).log2().floor() as i32 - 1;
                        let big = run(&times_pow2(&r_out, k)).unwrap();
                        assert_eq!(big, times_pow2(&small, k), "{kind:?} {rule:?} {g:?} {pass} times 2^{k}");
                        if pass == "relevance" {
                            let (_, amp) =
                                reference.relevance(&x, steps, &reference.forward(&x, steps), &r_out, rule, 1e-3);
                            cases += 1;
                            beyond += usize::from(amp * 2f64.powi(k) > f32::MAX as f64);
                        }
                    }
                }
            }
        }
    }
    eprintln!("scaled to the f32 limit: intermediate values beyond f32 in {beyond} of {cases} cases");
    assert!(4 * beyond >= cases, "only {beyond} of {cases} cases exercise intermediate overflow");
}

/// A relevance beyond f32 (the seed scaled so that the float64 implementation's largest input
/// relevance is 4 f32::MAX; weights large enough that relevance grows backwards through time) is
/// `Error::Overflow` at the first time step, in backward order, whose input relevance is beyond
/// f32 by the float64 implementation, never `Ok` with infinities.
#[test]
fn relevance_beyond_f32_is_an_overflow_error_at_its_step() {
    for kind in [Kind::Lstm, Kind::Gru] {
        for rule in [ProductRule::All, ProductRule::Prop, ProductRule::Half] {
            let mut rng = Rng(77 + rule as u64 + kind.gates() as u64 * 10);
            let (input, hidden, steps) = (3, 4, 60);
            let g = geom(input, hidden, 1, false, SeqOutput::Last);
            let params = random_params(kind, &g, &mut rng, 4.0, 0.5);
            let reference = RefNet::new(kind, g, &params);
            let mut layer = Layer::new(kind, g, params);
            layer.set_rule(rule, 0.001);
            let x = rng.vec(steps * input, 1.0);
            let (y, trace) = layer.forward(&x, steps);
            let tr = reference.forward(&x, steps);
            let (unit, _) = reference.relevance(&x, steps, &tr, &y, rule, 1e-3);
            let gain = max_abs(unit.iter().copied());
            let r_out: Vec<f32> = y.iter().map(|&v| (v as f64 * 4.0 * f32::MAX as f64 / gain) as f32).collect();
            assert!(r_out.iter().all(|v| v.is_finite()), "{kind:?} {rule:?}: gain {gain:e} too small");
            let (r_ref, _) = reference.relevance(&x, steps, &tr, &r_out, rule, 1e-3);
            let step_max = |t: usize| max_abs(r_ref[t * input..(t + 1) * input].iter().copied()) / f32::MAX as f64;
            let err = layer.try_relevance(&x, steps, &trace, &r_out).unwrap_err();
            let Error::Overflow { layer: name, step: Some(t), what } = &err else { panic!("{err:?}") };
            assert_eq!(name, "rnn");
            assert!(what.contains("relevance of its input") && what.contains("epsilon"), "{err}");
            assert!(err.to_string().starts_with(&format!("layer `rnn` overflowed at time step {t}: ")), "{err}");
            assert!(step_max(*t) > 0.99, "{kind:?} {rule:?}: step {t} is {} x f32::MAX", step_max(*t));
            for later in t + 1..steps {
                assert!(step_max(later) < 1.01, "{kind:?} {rule:?}: step {later} after {t}: {}", step_max(later));
            }
        }
    }
}

/// Where stacked layers or the reverse direction overflow, the error says which.
#[test]
fn overflow_names_the_stacked_layer_and_direction() {
    let g = geom(3, 4, 2, true, SeqOutput::Last);
    let mut rng = Rng(8);
    let mut layer = Layer::new(Kind::Lstm, g, random_params(Kind::Lstm, &g, &mut rng, 0.8, 0.3));
    layer.set_rule(ProductRule::Prop, 0.001);
    let x = rng.vec(10 * 3, 1.0);
    let (_, trace) = layer.forward(&x, 10);
    let err = layer.try_relevance(&x, 10, &trace, &vec![3e38; g.out_len()]).unwrap_err();
    let Error::Overflow { step: Some(_), what, .. } = &err else { panic!("{err:?}") };
    assert!(what.starts_with("stacked layer "), "{err}");
    // A non-finite seed is refused before anything runs.
    let mut seed = vec![1.0; g.out_len()];
    seed[5] = f32::NAN;
    let err = layer.try_gradient(&x, 10, &trace, &seed).unwrap_err();
    assert_eq!(err.to_string(), "layer `rnn` overflowed: the output gradient it receives holds NaN at index 5",);
}

/// A hidden state that is NaN or infinite in the forward pass (here from a NaN input) is
/// `Error::Overflow` at its time step. An infinite pre-activation alone saturates its gate, as in
/// PyTorch: the forward pass is `Ok`, and the relevance finite or `Overflow`.
#[test]
fn non_finite_state_is_an_overflow_error_at_its_step() {
    for kind in [Kind::Lstm, Kind::Gru] {
        let g = geom(2, 3, 1, true, SeqOutput::Max);
        let mut params = random_params(kind, &g, &mut Rng(4), 0.5, 0.1);
        params[0].w_ih[0] = 1e30;
        let layer = Layer::new(kind, g, params);
        let forward = |x: &[f32], trace: &mut [f32]| {
            let mut y = vec![0.0; g.out_len()];
            match &layer {
                Layer::Lstm(l) => l.forward(x, 6, trace, &mut y),
                Layer::Gru(l) => l.forward(x, 6, trace, &mut y),
            }
        };
        let mut trace = vec![0.0; g.out_len() + 1000];
        let mut x = vec![0.5; 6 * 2];
        x[3 * 2] = f32::NAN; // time step 3
        let err = forward(&x, &mut trace).unwrap_err();
        let Error::Overflow { layer: name, step, what } = &err else { panic!("{err:?}") };
        assert_eq!((name.as_str(), *step), ("rnn", Some(3)), "{err}");
        assert!(what.contains("hidden state holds NaN") && what.contains("too large"), "{err}");
        x[3 * 2] = 1e10; // a_0 = 1e30 * 1e10 = inf at time step 3
        forward(&x, &mut trace).unwrap();
        match layer.try_relevance(&x, 6, &trace, &[1.0; 6]) {
            Ok(r) => assert!(r.iter().all(|v| v.is_finite()), "{kind:?}: {r:?}"),
            Err(e) => assert!(matches!(e, Error::Overflow { step: Some(_), .. }), "{kind:?}: {e:?}"),
        }
    }
}

/// NaN or infinite parameters given to `new` are refused like loaded ones.
#[test]
fn non_finite_parameters_are_errors() {
    let g = geom(3, 2, 1, false, SeqOutput::Last);
    let mut params = random_params(Kind::Gru, &g, &mut Rng(3), 0.5, 0.1);
    params[0].w_hh[4] = f32::INFINITY;
    let err = Gru::new("gru", g, params).unwrap_err();
    assert_eq!(err, Error::NonFinite { name: "gru.weight_hh_l0".into(), index: 4, value: f32::INFINITY });
    let mut params = random_params(Kind::Lstm, &g, &mut Rng(3), 0.5, 0.1);
    params[0].b_ih.as_mut().unwrap()[7] = f32::NAN;
    let err = Lstm::new("lstm", g, params).unwrap_err();
    assert!(matches!(&err, Error::NonFinite { name, index: 7, .. } if name == "lstm.bias_ih_l0"), "{err:?}");
}

/// Buffer sizes for a huge `max_steps` or geometry are `Error::SizeOverflow`, never wrapped.
#[test]
fn huge_sizes_are_size_overflow_errors() {
    let g = geom(3, 2, 2, true, SeqOutput::Last);
    let lstm = Lstm::new("lstm", g, random_params(Kind::Lstm, &g, &mut Rng(1), 0.5, 0.1)).unwrap();
    assert_eq!(lstm.try_trace_len(10).unwrap(), lstm.trace_len(10));
    assert_eq!(lstm.try_scratch_len(10).unwrap(), lstm.scratch_len(10));
    for steps in [usize::MAX, 1 << 62, usize::MAX / 4 + 1] {
        let err = lstm.try_trace_len(steps).unwrap_err();
        assert!(matches!(&err, Error::SizeOverflow { what } if what.contains("`lstm`")), "{err:?}");
        assert!(matches!(lstm.try_scratch_len(steps), Err(Error::SizeOverflow { .. })));
        assert_eq!((lstm.trace_len(steps), lstm.scratch_len(steps)), (usize::MAX, usize::MAX));
        let (mut trace, mut y) = (vec![0.0; 64], vec![0.0; 4]);
        let err = lstm.forward(&[0.0; 6], steps, &mut trace, &mut y).unwrap_err();
        assert!(matches!(err, Error::SizeOverflow { .. }), "{err:?}");
    }
    let err = Gru::new("gru", geom(3, 1 << 40, 1, true, SeqOutput::Last), vec![]).unwrap_err();
    assert!(matches!(&err, Error::SizeOverflow { what } if what.contains("`gru`")), "{err:?}");
}
