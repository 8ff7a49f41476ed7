//! 1-D layers over `[C, L]` samples (text CNNs over embeddings): `Conv1d` (stride, padding,
//! dilation, groups), `MaxPool1d`, `AvgPool1d`, a `Conv1d -> BatchNorm1d` fold, and a `Linear`
//! applied row by row to `[L, C]`, with PyTorch's tensor shapes. Against a naive `f64` forward
//! (direct convolution loops), LRP-epsilon, z+ and z^B written here; gradient x input against
//! central finite differences; conservation with biases zero.

mod common;
use common::{assert_close, assert_conserved, f64s, finite_gxi, stab, values};
use lrp::Explainable;
use lrp::layers::{AvgPool1d, Conv1d, Flatten, Linear, ReLU};
use lrp::{Tensor, Weights};

lrp::network! {
    /// [4, 8] -> [6, 8] -> [6, 4] -> 24 -> 3.
    Text(input = [4, 8], composite = Epsilon(0.01)) {
        conv: Conv1d(4, 6, kernel_size = 3, padding = 1), ReLU, MaxPool1d(2), Flatten, fc: Linear(24, 3),
    }
}

lrp::network! {
    /// z+ on the convolution, epsilon on the dense layer.
    TextPlus(input = [4, 8], composite = EpsilonPlus(epsilon = 0.01)) {
        conv: Conv1d(4, 6, kernel_size = 3, padding = 1), ReLU, MaxPool1d(2), Flatten, fc: Linear(24, 3),
    }
}

lrp::network! {
    TextTight(input = [4, 8]) {
        conv: Conv1d(4, 6, kernel_size = 3, padding = 1), ReLU, MaxPool1d(2), Flatten, fc: Linear(24, 3),
    }
}

lrp::network! {
    TextPlusTight(input = [4, 8], composite = EpsilonPlus) {
        conv: Conv1d(4, 6, kernel_size = 3, padding = 1), ReLU, MaxPool1d(2), Flatten, fc: Linear(24, 3),
    }
}

/// [4, 9] -> stride 2, padding 1, dilation 2 (span 5), 2 groups: [6, 4] -> AvgPool1d(2): [6, 2].
#[derive(Explainable)]
#[lrp(input = [4, 9], composite = Epsilon(0.01))]
struct Strided {
    #[lrp(4, 6, 3, stride = 2, padding = 1, dilation = 2, groups = 2)]
    conv: Conv1d,
    relu: ReLU,
    #[lrp(2)]
    pool: AvgPool1d,
    flat: Flatten,
    #[lrp(12, 3)]
    fc: Linear,
}

lrp::network! {
    /// The text CNN: Conv1d -> BatchNorm1d (folded) -> ReLU -> global max-pool -> Linear.
    Folded(input = [3, 7], composite = Epsilon(0.01)) {
        conv: Conv1d(3, 4, 3), bn: BatchNorm1d(4), ReLU, MaxPool1d(kernel_size = 5), Flatten, fc: Linear(4, 2),
    }
}

lrp::network! {
    /// `fc1` maps each of the 5 rows of [5, 8] to 6 features.
    Rows(input = [5, 8], composite = Epsilon(0.01)) { fc1: Linear(8, 6), ReLU, Flatten, fc2: Linear(30, 3) }
}

lrp::network! {
    /// z^B with a bound per feature of each row on the first layer.
    RowsBox(input = [5, 8], composite = Epsilon(0.01)) {
        fc1: Linear(8, 6, rule = ZBox(low = [-2, -1, -1.5, -2, -1, -2, -1.5, -1], high = [2, 1, 1.5, 2, 1, 2, 1.5, 1])),
        ReLU, Flatten, fc2: Linear(30, 3),
    }
}

lrp::network! {
    RowsTight(input = [5, 8]) { fc1: Linear(8, 6), ReLU, Flatten, fc2: Linear(30, 3) }
}

lrp::network! {
    /// BatchNorm1d(5) after the row-wise Linear normalises the 5 rows (PyTorch's dimension 1 of
    /// [N, 5, 6]): it stays explicit.
    RowsNorm(input = [5, 8], composite = Epsilon(0.01)) {
        fc1: Linear(8, 6), bn: BatchNorm1d(5), ReLU, Flatten, fc2: Linear(30, 3),
    }
}

const EPS: f64 = 0.01;
/// The stabiliser of the average pool's proportional rule and of z+.
const SMALL_EPS: f64 = 1e-6;

fn tensor(name: &str, shape: &[usize], data: &[f32]) -> (String, Tensor) {
    (name.to_string(), Tensor { shape: shape.to_vec(), data: data.to_vec() })
}

/// A linear map as its rows: `z_k = sum over taps (j, w) of w x_j + b_k`.
#[derive(Clone)]
struct Map {
    rows: Vec<(Vec<(usize, f64)>, f64)>,
    inputs: usize,
}

impl Map {
    fn forward(&self, x: &[f64]) -> Vec<f64> {
        self.rows.iter().map(|(taps, b)| taps.iter().map(|&(j, w)| w * x[j]).sum::<f64>() + b).collect()
    }

    /// LRP-epsilon: `R_j = x_j sum_k w_jk R_k / stab(z_k)`.
    fn epsilon(&self, x: &[f64], r: &[f64], eps: f64) -> Vec<f64> {
        let mut out = vec![0.0; self.inputs];
        for ((taps, _), (z, r)) in self.rows.iter().zip(self.forward(x).iter().zip(r)) {
            for &(j, w) in taps {
                out[j] += x[j] * w * r / stab(*z, eps);
            }
        }
        out
    }

    /// z^B: `R_j = sum_k (x_j w_jk - l_j w_jk^+ - h_j w_jk^-) R_k / stab(sum_l (same))`.
    fn zbox(&self, x: &[f64], low: &[f64], high: &[f64], r: &[f64]) -> Vec<f64> {
        let term = |j: usize, w: f64| x[j] * w - low[j] * w.max(0.0) - high[j] * w.min(0.0);
        let mut out = vec![0.0; self.inputs];
        for ((taps, _), r) in self.rows.iter().zip(r) {
            let z = taps.iter().map(|&(j, w)| term(j, w)).sum::<f64>();
            for &(j, w) in taps {
                out[j] += term(j, w) * r / stab(z, SMALL_EPS);
            }
        }
        out
    }

    /// z+ (Zennit's generalised form): `R_j = sum_k (x_j^+ w_jk^+ + x_j^- w_jk^-) R_k / stab(z_k^+)`,
    /// `z_k^+ = sum_l (x_l^+ w_lk^+ + x_l^- w_lk^-) + b_k^+`.
    fn zplus(&self, x: &[f64], r: &[f64]) -> Vec<f64> {
        let pos = |v: f64, w: f64| v.max(0.0) * w.max(0.0) + v.min(0.0) * w.min(0.0);
        let mut out = vec![0.0; self.inputs];
        for ((taps, b), r) in self.rows.iter().zip(r) {
            let z = taps.iter().map(|&(j, w)| pos(x[j], w)).sum::<f64>() + b.max(0.0);
            for &(j, w) in taps {
                out[j] += pos(x[j], w) * r / stab(z, SMALL_EPS);
            }
        }
        out
    }
}

/// `Conv1d` with PyTorch's `[out, in/groups, k]` weights over `[cin, len]`, by direct loops.
struct Conv {
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
    len: usize,
}

impl Conv {
    fn lout(&self) -> usize {
        (self.len + 2 * self.pad - self.dil * (self.k - 1) - 1) / self.stride + 1
    }

    /// Output `(o, t)` reads channel `g cin/groups + ci` at `t stride - pad + a dil`.
    fn map(&self) -> Map {
        let (per_in, per_out) = (self.cin / self.groups, self.cout / self.groups);
        let mut rows = Vec::new();
        for o in 0..self.cout {
            for t in 0..self.lout() {
                let mut taps = Vec::new();
                for ci in 0..per_in {
                    let c = o / per_out * per_in + ci;
                    for a in 0..self.k {
                        let pos = (t * self.stride + a * self.dil).wrapping_sub(self.pad);
                        if pos < self.len {
                            taps.push((c * self.len + pos, self.w[(o * per_in + ci) * self.k + a] as f64));
                        }
                    }
                }
                rows.push((taps, self.b[o] as f64));
            }
        }
        Map { rows, inputs: self.cin * self.len }
    }
}

/// `nn.Linear(inputs, outputs)` applied to each of `rows` rows of `[rows, inputs]`.
fn dense(w: &[f32], b: &[f32], inputs: usize, rows: usize) -> Map {
    let outputs = b.len();
    let mut out = Vec::new();
    for l in 0..rows {
        for k in 0..outputs {
            let taps = (0..inputs).map(|j| (l * inputs + j, w[k * inputs + j] as f64)).collect();
            out.push((taps, b[k] as f64));
        }
    }
    Map { rows: out, inputs: rows * inputs }
}

/// Pooling windows over `[channels, len]`: `kernel` wide, `stride` apart, no padding.
fn windows(channels: usize, len: usize, kernel: usize, stride: usize) -> Vec<Vec<usize>> {
    let out = (len - kernel) / stride + 1;
    let all = (0..channels).flat_map(|c| (0..out).map(move |t| (c, t)));
    all.map(|(c, t)| (0..kernel).map(|a| c * len + t * stride + a).collect()).collect()
}

fn relu(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|v| v.max(0.0)).collect()
}

/// A conv (or dense) map, ReLU, a max or average pool, a dense head.
struct Net {
    first: Map,
    pool: Vec<Vec<usize>>,
    max: bool,
    fc: Map,
}

/// The rule of the first layer in [`Net::relevance`].
#[derive(Clone, Copy)]
enum First {
    Epsilon,
    ZPlus,
}

impl Net {
    fn pool(&self, a: &[f64]) -> Vec<f64> {
        let reduce = |w: &Vec<usize>| match self.max {
            true => w.iter().map(|&j| a[j]).fold(f64::NEG_INFINITY, f64::max),
            false => w.iter().map(|&j| a[j]).sum::<f64>() / w.len() as f64,
        };
        self.pool.iter().map(reduce).collect()
    }

    fn forward(&self, x: &[f64]) -> Vec<f64> {
        self.fc.forward(&self.pool(&relu(self.first.forward(x))))
    }

    /// LRP from `logit[c]`: epsilon on the head, winner-take-all (max) or the proportional rule
    /// (average) on the pool, ReLU passes, `first` on the first layer.
    fn relevance(&self, x: &[f64], c: usize, head_eps: f64, first: First) -> Vec<f64> {
        let a = relu(self.first.forward(x));
        let p = self.pool(&a);
        let mut r = vec![0.0; self.fc.rows.len()];
        r[c] = self.fc.forward(&p)[c];
        let r_p = self.fc.epsilon(&p, &r, head_eps);
        let mut r_a = vec![0.0; a.len()];
        for (o, w) in self.pool.iter().enumerate() {
            if self.max {
                let best = w.iter().copied().fold(w[0], |b, j| if a[j] > a[b] { j } else { b });
                r_a[best] += r_p[o];
            } else {
                for &j in w {
                    r_a[j] += a[j] / w.len() as f64 * r_p[o] / stab(p[o], SMALL_EPS);
                }
            }
        }
        match first {
            First::Epsilon => self.first.epsilon(x, &r_a, head_eps),
            First::ZPlus => self.first.zplus(x, &r_a),
        }
    }
}

/// The `Text` networks' weights (PyTorch's shapes) and their naive twin.
fn text(bias: bool) -> (Weights, Net) {
    let (w, fc_w) = (values(6 * 4 * 3, 1, 0.6), values(3 * 24, 2, 0.4));
    let (b, fc_b) = if bias { (values(6, 3, 0.2), values(3, 4, 0.2)) } else { (vec![0.0; 6], vec![0.0; 3]) };
    let weights = Weights::from_tensors([
        tensor("conv.weight", &[6, 4, 3], &w),
        tensor("conv.bias", &[6], &b),
        tensor("fc.weight", &[3, 24], &fc_w),
        tensor("fc.bias", &[3], &fc_b),
    ]);
    let conv = Conv { w, b, cin: 4, cout: 6, k: 3, stride: 1, pad: 1, dil: 1, groups: 1, len: 8 };
    assert_eq!(conv.lout(), 8);
    let net = Net { first: conv.map(), pool: windows(6, 8, 2, 2), max: true, fc: dense(&fc_w, &fc_b, 24, 1) };
    (weights, net)
}

#[test]
fn conv1d_with_max_pooling_matches_the_naive_forward_lrp_and_gradient() {
    assert_eq!(
        Text::TENSORS,
        [("conv.weight", &[6, 4, 3][..]), ("conv.bias", &[6]), ("fc.weight", &[3, 24]), ("fc.bias", &[3])]
    );
    let (mut weights, naive) = text(true);
    let model = Text::from_weights(&mut weights, true).unwrap();
    let plus = TextPlus::from_weights(&mut text(true).0, true).unwrap();
    let (mut ws, mut ws_plus) = (model.workspace(2).unwrap(), plus.workspace(1).unwrap());
    // Two samples in one batch.
    let x = values(64, 10, 1.5);
    let (x0, x1) = (f64s(&x[..32]), f64s(&x[32..]));
    let want: Vec<f64> = naive.forward(&x0).into_iter().chain(naive.forward(&x1)).collect();
    assert_close("logits", model.predict_batch(&mut ws, &x, 2).unwrap(), &want, 1e-5);
    for c in 0..3 {
        for (s, xd) in [&x0, &x1].into_iter().enumerate() {
            let input = &x[s * 32..(s + 1) * 32];
            let e = model.explain(&mut ws, input, c).unwrap();
            assert_close("epsilon", e.relevance, &naive.relevance(xd, c, EPS, First::Epsilon), 1e-4);
            let e = plus.explain(&mut ws_plus, input, c).unwrap();
            assert_close("z+", e.relevance, &naive.relevance(xd, c, EPS, First::ZPlus), 1e-4);
            let g = model.gradient_x_input(&mut ws, input, c).unwrap();
            assert_close("gradient x input", g.relevance, &finite_gxi(|v| naive.forward(v), xd, c), 1e-4);
        }
    }
}

#[test]
fn strided_dilated_grouped_conv1d_with_average_pooling_in_a_derived_struct() {
    assert_eq!(Strided::TENSORS[0], ("conv.weight", &[6, 2, 3][..]));
    let (w, b, fc_w, fc_b) = (values(6 * 2 * 3, 5, 0.6), values(6, 6, 0.2), values(3 * 12, 7, 0.4), values(3, 8, 0.2));
    let mut weights = Weights::from_tensors([
        tensor("conv.weight", &[6, 2, 3], &w),
        tensor("conv.bias", &[6], &b),
        tensor("fc.weight", &[3, 12], &fc_w),
        tensor("fc.bias", &[3], &fc_b),
    ]);
    let model = Strided::from_weights(&mut weights, true).unwrap();
    let conv = Conv { w, b, cin: 4, cout: 6, k: 3, stride: 2, pad: 1, dil: 2, groups: 2, len: 9 };
    // (9 + 2 - 5) / 2 + 1 = 4 positions; output (3, 1) (group 1) reads input channels 2, 3 at
    // 1 * 2 - 1 + {0, 2, 4} = 1, 3, 5.
    assert_eq!(conv.lout(), 4);
    let first = conv.map();
    assert_eq!(first.rows[3 * 4 + 1].0.iter().map(|&(j, _)| j).collect::<Vec<_>>(), [19, 21, 23, 28, 30, 32]);
    let naive = Net { first, pool: windows(6, 4, 2, 2), max: false, fc: dense(&fc_w, &fc_b, 12, 1) };
    let mut ws = model.workspace(1).unwrap();
    for salt in 0..3 {
        let x = values(36, 20 + salt, 1.5);
        let xd = f64s(&x);
        assert_close("logits", model.predict(&mut ws, &x).unwrap(), &naive.forward(&xd), 1e-5);
        for c in 0..3 {
            let e = model.explain(&mut ws, &x, c).unwrap();
            assert_close("epsilon", e.relevance, &naive.relevance(&xd, c, EPS, First::Epsilon), 1e-4);
            let g = model.gradient_x_input(&mut ws, &x, c).unwrap();
            assert_close("gradient x input", g.relevance, &finite_gxi(|v| naive.forward(v), &xd, c), 1e-4);
        }
    }
}

#[test]
fn batchnorm1d_folds_into_the_conv1d_of_a_text_cnn() {
    let (w, b, fc_w, fc_b) =
        (values(4 * 3 * 3, 9, 0.6), values(4, 10, 0.2), values(2 * 4, 11, 0.5), values(2, 12, 0.2));
    let (gamma, beta) = ([1.5f32, 0.5, -0.75, 2.0], [0.1f32, -0.2, 0.3, 0.0]);
    let (mean, var) = ([0.2f32, -0.1, 0.05, 0.4], [0.5f32, 2.0, 1.0, 0.25]);
    let mut weights = Weights::from_tensors([
        tensor("conv.weight", &[4, 3, 3], &w),
        tensor("conv.bias", &[4], &b),
        tensor("bn.weight", &[4], &gamma),
        tensor("bn.bias", &[4], &beta),
        tensor("bn.running_mean", &[4], &mean),
        tensor("bn.running_var", &[4], &var),
        tensor("fc.weight", &[2, 4], &fc_w),
        tensor("fc.bias", &[2], &fc_b),
    ]);
    let model = Folded::from_weights(&mut weights, true).unwrap();
    // s = gamma / sqrt(var + 1e-5): W' = s W, b' = s (b - mean) + beta, per output channel.
    let s: Vec<f64> = (0..4).map(|o| gamma[o] as f64 / (var[o] as f64 + 1e-5).sqrt()).collect();
    let folded_w: Vec<f64> = w.iter().enumerate().map(|(i, &v)| v as f64 * s[i / 9]).collect();
    assert_close("folded weight", model.conv.weight(), &folded_w, 1e-6);
    let folded_b: Vec<f64> = (0..4).map(|o| s[o] * (b[o] - mean[o]) as f64 + beta[o] as f64).collect();
    assert_close("folded bias", model.conv.bias(), &folded_b, 1e-6);
    let conv = Conv {
        w: folded_w.iter().map(|&v| v as f32).collect(),
        b: folded_b.iter().map(|&v| v as f32).collect(),
        cin: 3,
        cout: 4,
        k: 3,
        stride: 1,
        pad: 0,
        dil: 1,
        groups: 1,
        len: 7,
    };
    let naive = Net { first: conv.map(), pool: windows(4, 5, 5, 5), max: true, fc: dense(&fc_w, &fc_b, 4, 1) };
    // The explicit forward: conv with the original weights, then the BatchNorm.
    let plain =
        Conv { w: w.clone(), b: b.clone(), cin: 3, cout: 4, k: 3, stride: 1, pad: 0, dil: 1, groups: 1, len: 7 };
    let explicit = |x: &[f64]| {
        let z = plain.map().forward(x);
        let bn: Vec<f64> = z
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let o = i / 5;
                (v - mean[o] as f64) * s[o] + beta[o] as f64
            })
            .collect();
        let p = Net { first: plain.map(), pool: windows(4, 5, 5, 5), max: true, fc: dense(&fc_w, &fc_b, 4, 1) };
        p.fc.forward(&p.pool(&relu(bn)))
    };
    let mut ws = model.workspace(1).unwrap();
    for salt in 0..3 {
        let x = values(21, 30 + salt, 1.5);
        let xd = f64s(&x);
        let logits = model.predict(&mut ws, &x).unwrap().to_vec();
        assert_close("logits", &logits, &explicit(&xd), 1e-5);
        assert_close("logits (folded)", &logits, &naive.forward(&xd), 1e-5);
        for c in 0..2 {
            let e = model.explain(&mut ws, &x, c).unwrap();
            assert_close("epsilon", e.relevance, &naive.relevance(&xd, c, EPS, First::Epsilon), 1e-4);
            let g = model.gradient_x_input(&mut ws, &x, c).unwrap();
            assert_close("gradient x input", g.relevance, &finite_gxi(explicit, &xd, c), 1e-4);
        }
    }
}

/// Weights of `Rows` and its naive twin: `fc1` on each of the 5 rows, then `fc2` on all 30.
fn rows(bias: bool) -> (Weights, Map, Map) {
    let (w1, w2) = (values(6 * 8, 13, 0.5), values(3 * 30, 14, 0.4));
    let (b1, b2) = if bias { (values(6, 15, 0.2), values(3, 16, 0.2)) } else { (vec![0.0; 6], vec![0.0; 3]) };
    let weights = Weights::from_tensors([
        tensor("fc1.weight", &[6, 8], &w1),
        tensor("fc1.bias", &[6], &b1),
        tensor("fc2.weight", &[3, 30], &w2),
        tensor("fc2.bias", &[3], &b2),
    ]);
    (weights, dense(&w1, &b1, 8, 5), dense(&w2, &b2, 30, 1))
}

#[test]
fn linear_maps_each_row_of_a_sequence() {
    let (mut weights, fc1, fc2) = rows(true);
    let model = Rows::from_weights(&mut weights, true).unwrap();
    let forward = |x: &[f64]| fc2.forward(&relu(fc1.forward(x)));
    let mut ws = model.workspace(2).unwrap();
    let x = values(80, 40, 1.5);
    let (x0, x1) = (f64s(&x[..40]), f64s(&x[40..]));
    let want: Vec<f64> = forward(&x0).into_iter().chain(forward(&x1)).collect();
    assert_close("logits", model.predict_batch(&mut ws, &x, 2).unwrap(), &want, 1e-5);
    for c in 0..3 {
        let e = model.explain_batch(&mut ws, &x, 2, c).unwrap();
        for (s, xd) in [&x0, &x1].into_iter().enumerate() {
            let h = relu(fc1.forward(xd));
            let mut r = vec![0.0; 3];
            r[c] = fc2.forward(&h)[c];
            let want = fc1.epsilon(xd, &fc2.epsilon(&h, &r, EPS), EPS);
            assert_close("epsilon", &e.relevance[s * 40..(s + 1) * 40], &want, 1e-4);
        }
        let g = model.gradient_x_input(&mut ws, &x[40..], c).unwrap();
        assert_close("gradient x input", g.relevance, &finite_gxi(forward, &x1, c), 1e-4);
    }
}

#[test]
fn zbox_bounds_of_a_row_wise_linear_are_per_feature() {
    let (mut weights, fc1, fc2) = rows(true);
    let model = RowsBox::from_weights(&mut weights, true).unwrap();
    let per_feature = [1.0, 0.5, 0.75, 1.0, 0.5, 1.0, 0.75, 0.5].map(|v: f64| 2.0 * v);
    let high: Vec<f64> = (0..40).map(|j| per_feature[j % 8]).collect();
    let low: Vec<f64> = high.iter().map(|h| -h).collect();
    let mut ws = model.workspace(1).unwrap();
    let x = values(40, 45, 1.0);
    let xd = f64s(&x);
    for c in 0..3 {
        let h = relu(fc1.forward(&xd));
        let mut r = vec![0.0; 3];
        r[c] = fc2.forward(&h)[c];
        let want = fc1.zbox(&xd, &low, &high, &fc2.epsilon(&h, &r, EPS));
        assert_close("z^B", model.explain(&mut ws, &x, c).unwrap().relevance, &want, 1e-4);
    }
}

#[test]
fn batchnorm1d_after_a_row_wise_linear_normalises_the_rows() {
    let (w1, b1, w2, b2) = (values(6 * 8, 13, 0.5), values(6, 15, 0.2), values(3 * 30, 14, 0.4), values(3, 16, 0.2));
    let (gamma, beta) = ([1.5f32, 0.5, -0.75, 2.0, 1.0], [0.1f32, -0.2, 0.3, 0.0, 0.25]);
    let (mean, var) = ([0.2f32, -0.1, 0.05, 0.4, 0.0], [0.5f32, 2.0, 1.0, 0.25, 4.0]);
    let mut weights = Weights::from_tensors([
        tensor("fc1.weight", &[6, 8], &w1),
        tensor("fc1.bias", &[6], &b1),
        tensor("bn.weight", &[5], &gamma),
        tensor("bn.bias", &[5], &beta),
        tensor("bn.running_mean", &[5], &mean),
        tensor("bn.running_var", &[5], &var),
        tensor("fc2.weight", &[3, 30], &w2),
        tensor("fc2.bias", &[3], &b2),
    ]);
    let model = RowsNorm::from_weights(&mut weights, true).unwrap();
    // Not folded: fc1 keeps its weights.
    assert_eq!(model.fc1.weight(), &w1[..]);
    let (fc1, fc2) = (dense(&w1, &b1, 8, 5), dense(&w2, &b2, 30, 1));
    let forward = |x: &[f64]| {
        let z = fc1.forward(x);
        let row = |i: usize| i / 6;
        let bn = z.iter().enumerate().map(|(i, &v)| {
            let l = row(i);
            (v - mean[l] as f64) / (var[l] as f64 + 1e-5).sqrt() * gamma[l] as f64 + beta[l] as f64
        });
        fc2.forward(&relu(bn.collect()))
    };
    let mut ws = model.workspace(1).unwrap();
    let x = values(40, 50, 1.5);
    let xd = f64s(&x);
    assert_close("logits", model.predict(&mut ws, &x).unwrap(), &forward(&xd), 1e-5);
    for c in 0..3 {
        let g = model.gradient_x_input(&mut ws, &x, c).unwrap();
        assert_close("gradient x input", g.relevance, &finite_gxi(forward, &xd, c), 1e-4);
    }
}

#[test]
fn relevance_is_conserved_with_biases_zero() {
    let text_eps = TextTight::from_weights(&mut text(false).0, true).unwrap();
    let text_plus = TextPlusTight::from_weights(&mut text(false).0, true).unwrap();
    let rows = RowsTight::from_weights(&mut rows(false).0, true).unwrap();
    let (mut ws_e, mut ws_p, mut ws_r) =
        (text_eps.workspace(1).unwrap(), text_plus.workspace(1).unwrap(), rows.workspace(1).unwrap());
    for salt in 0..3 {
        let (x_t, x_r) = (values(32, 60 + salt, 1.5), values(40, 70 + salt, 1.5));
        assert_conserved(text_eps.explain(&mut ws_e, &x_t, lrp::Target::Predicted));
        assert_conserved(text_plus.explain(&mut ws_p, &x_t, lrp::Target::Predicted));
        assert_conserved(rows.explain(&mut ws_r, &x_r, lrp::Target::Predicted));
    }
}
