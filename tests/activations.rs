//! `Tanh`, `Sigmoid` and `AdaptiveAvgPool2d` in chain specs (and a derived struct), against a
//! naive `f64` forward pass and LRP-epsilon written here: activations pass relevance unchanged,
//! adaptive pooling uses PyTorch's windows and the proportional rule; gradient x input against
//! central finite differences; conservation with biases zero; NaN inputs are errors.

mod common;
use common::{assert_close, assert_conserved, f64s, finite_gxi, stab, values};
use lrp::Explainable;
use lrp::layers::{AdaptiveAvgPool2d, Flatten, Linear, Sigmoid, Tanh};
use lrp::{Error, Tensor, Weights};

lrp::network! {
    TanhMlp(input = [8], composite = Epsilon(0.01)) { fc1: Linear(8, 16), Tanh, fc2: Linear(16, 4) }
}

lrp::network! {
    SigmoidMlp(input = [8], composite = Epsilon(0.01)) { fc1: Linear(8, 16), Sigmoid, fc2: Linear(16, 4) }
}

lrp::network! {
    /// 5x5 -> 2x2: the windows [0, 3) and [2, 5) overlap on the middle row and column.
    SmallCnn(input = [2, 5, 5], composite = Epsilon(0.01)) {
        conv: Conv2d(2, 4, 3, padding = 1), ReLU, AdaptiveAvgPool2d([2, 2]), Flatten, fc: Linear(16, 3),
    }
}

// The Tanh MLP and the CNN again with the default epsilon (1e-6), for conservation.
lrp::network! {
    TanhMlpTight(input = [8]) { fc1: Linear(8, 16), Tanh, fc2: Linear(16, 4) }
}

lrp::network! {
    SmallCnnTight(input = [2, 5, 5]) {
        conv: Conv2d(2, 4, 3, padding = 1), ReLU, AdaptiveAvgPool2d([2, 2]), Flatten, fc: Linear(16, 3),
    }
}

/// Sigmoid, an upsampling adaptive pool (2x2 -> 3x3 repeats inputs) and Tanh, as a struct.
#[derive(Explainable)]
#[lrp(input = [1, 2, 2], composite = Epsilon(0.01))]
struct Derived {
    sig: Sigmoid,
    #[lrp([3, 3])]
    pool: AdaptiveAvgPool2d,
    flat: Flatten,
    #[lrp(9, 4)]
    fc1: Linear,
    tanh: Tanh,
    #[lrp(4, 2)]
    fc2: Linear,
}

const EPS: f64 = 0.01;
const POOL_EPS: f64 = 1e-6;

fn tensor(name: &str, shape: &[usize], data: Vec<f32>) -> (String, Tensor) {
    (name.to_string(), Tensor { shape: shape.to_vec(), data })
}

/// `[out, in]` weights and biases (zero when `bias` is false) of a dense layer.
#[derive(Clone)]
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
}

fn dense(outputs: usize, inputs: usize, salt: usize, bias: bool) -> Dense {
    let b = if bias { values(outputs, salt + 1, 0.3) } else { vec![0.0; outputs] };
    Dense { w: values(outputs * inputs, salt, 0.6), b, inputs }
}

impl Dense {
    fn forward(&self, x: &[f64]) -> Vec<f64> {
        let rows = self.w.chunks(self.inputs).zip(&self.b);
        rows.map(|(row, &b)| row.iter().zip(x).map(|(&w, v)| w as f64 * v).sum::<f64>() + b as f64).collect()
    }

    /// LRP-epsilon: `R_j = x_j sum_k w_kj R_k / stab(z_k)`.
    fn relevance(&self, x: &[f64], r: &[f64], eps: f64) -> Vec<f64> {
        let z = self.forward(x);
        let s: Vec<f64> = r.iter().zip(&z).map(|(r, z)| r / stab(*z, eps)).collect();
        let mut out = vec![0.0; x.len()];
        for (k, row) in self.w.chunks(self.inputs).enumerate() {
            for (j, &w) in row.iter().enumerate() {
                out[j] += x[j] * w as f64 * s[k];
            }
        }
        out
    }
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// A two-layer MLP with an element-wise activation `act` in between.
struct Mlp {
    fc1: Dense,
    fc2: Dense,
    act: fn(f64) -> f64,
}

impl Mlp {
    fn new(bias: bool, act: fn(f64) -> f64) -> Mlp {
        Mlp { fc1: dense(16, 8, 1, bias), fc2: dense(4, 16, 2, bias), act }
    }

    fn weights(&self) -> Weights {
        Weights::from_tensors([
            tensor("fc1.weight", &[16, 8], self.fc1.w.clone()),
            tensor("fc1.bias", &[16], self.fc1.b.clone()),
            tensor("fc2.weight", &[4, 16], self.fc2.w.clone()),
            tensor("fc2.bias", &[4], self.fc2.b.clone()),
        ])
    }

    fn hidden(&self, x: &[f64]) -> Vec<f64> {
        self.fc1.forward(x).into_iter().map(self.act).collect()
    }

    fn forward(&self, x: &[f64]) -> Vec<f64> {
        self.fc2.forward(&self.hidden(x))
    }

    /// LRP-epsilon from `logit[c]` at class `c`; the activation passes relevance unchanged.
    fn relevance(&self, x: &[f64], c: usize, eps: f64) -> Vec<f64> {
        let h = self.hidden(x);
        let mut r = vec![0.0; 4];
        r[c] = self.forward(x)[c];
        self.fc1.relevance(x, &self.fc2.relevance(&h, &r, eps), eps)
    }
}

/// PyTorch's adaptive window along an axis, computed in `f64`.
fn window(i: usize, n: usize, m: usize) -> std::ops::Range<usize> {
    let (i, n, m) = (i as f64, n as f64, m as f64);
    ((i * n / m).floor() as usize)..(((i + 1.0) * n / m).ceil() as usize)
}

/// Conv2d(2, 4, 3, padding = 1) -> ReLU -> AdaptiveAvgPool2d([2, 2]) -> Flatten -> Linear(16, 3)
/// on a [2, 5, 5] input.
struct Cnn {
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    fc: Dense,
}

impl Cnn {
    fn new(bias: bool) -> Cnn {
        let conv_b = if bias { values(4, 4, 0.2) } else { vec![0.0; 4] };
        Cnn { conv_w: values(4 * 2 * 9, 3, 0.5), conv_b, fc: dense(3, 16, 5, bias) }
    }

    fn weights(&self) -> Weights {
        Weights::from_tensors([
            tensor("conv.weight", &[4, 2, 3, 3], self.conv_w.clone()),
            tensor("conv.bias", &[4], self.conv_b.clone()),
            tensor("fc.weight", &[3, 16], self.fc.w.clone()),
            tensor("fc.bias", &[3], self.fc.b.clone()),
        ])
    }

    /// The taps `(input index, weight)` of conv output `(o, y, x)`.
    fn taps(&self, o: usize, y: usize, x: usize) -> Vec<(usize, f64)> {
        let mut taps = Vec::new();
        for (c, a, b) in (0..2).flat_map(|c| (0..3).flat_map(move |a| (0..3).map(move |b| (c, a, b)))) {
            let (iy, ix) = ((y + a).wrapping_sub(1), (x + b).wrapping_sub(1));
            if iy < 5 && ix < 5 {
                taps.push(((c * 5 + iy) * 5 + ix, self.conv_w[((o * 2 + c) * 3 + a) * 3 + b] as f64));
            }
        }
        taps
    }

    fn conv(&self, x: &[f64]) -> Vec<f64> {
        let at = |o: usize, y: usize, xx: usize| {
            self.taps(o, y, xx).iter().map(|&(j, w)| w * x[j]).sum::<f64>() + self.conv_b[o] as f64
        };
        (0..4)
            .flat_map(|o| (0..5).flat_map(move |y| (0..5).map(move |xx| (o, y, xx))))
            .map(|(o, y, xx)| at(o, y, xx))
            .collect()
    }

    /// `(output index, input indices)` of the 2x2 adaptive pool over [4, 5, 5].
    fn windows() -> Vec<(usize, Vec<usize>)> {
        let mut out = Vec::new();
        for (c, oy, ox) in (0..4).flat_map(|c| (0..2).flat_map(move |oy| (0..2).map(move |ox| (c, oy, ox)))) {
            let taps = window(oy, 5, 2).flat_map(|y| window(ox, 5, 2).map(move |x| (c * 5 + y) * 5 + x)).collect();
            out.push(((c * 2 + oy) * 2 + ox, taps));
        }
        out
    }

    fn pool(a: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; 16];
        for (o, taps) in Cnn::windows() {
            y[o] = taps.iter().map(|&j| a[j]).sum::<f64>() / taps.len() as f64;
        }
        y
    }

    fn forward(&self, x: &[f64]) -> Vec<f64> {
        let a: Vec<f64> = self.conv(x).into_iter().map(|v| v.max(0.0)).collect();
        self.fc.forward(&Cnn::pool(&a))
    }

    /// LRP: epsilon on fc and conv, the proportional rule (1e-6) on the pool, ReLU passes.
    fn relevance(&self, x: &[f64], c: usize, eps: f64) -> Vec<f64> {
        let z = self.conv(x);
        let a: Vec<f64> = z.iter().map(|v| v.max(0.0)).collect();
        let p = Cnn::pool(&a);
        let mut r = vec![0.0; 3];
        r[c] = self.fc.forward(&p)[c];
        let r_p = self.fc.relevance(&p, &r, eps);
        let mut r_a = vec![0.0; 100];
        for (o, taps) in Cnn::windows() {
            let s = r_p[o] / (taps.len() as f64 * stab(p[o], POOL_EPS));
            for j in taps {
                r_a[j] += a[j] * s;
            }
        }
        let mut r_x = vec![0.0; 50];
        for (k, (&z, r)) in z.iter().zip(&r_a).enumerate() {
            let s = r / stab(z, eps);
            for (j, w) in self.taps(k / 25, k % 25 / 5, k % 5) {
                r_x[j] += x[j] * w * s;
            }
        }
        r_x
    }
}

#[test]
fn tanh_mlp_matches_the_naive_forward_lrp_and_gradient() {
    let naive = Mlp::new(true, f64::tanh);
    let model = TanhMlp::from_weights(&mut naive.weights(), true).unwrap();
    let mut ws = model.workspace(1).unwrap();
    for salt in 0..3 {
        let x = values(8, 10 + salt, 2.0);
        let xd = f64s(&x);
        let want = naive.forward(&xd);
        assert_close("logits", model.predict(&mut ws, &x).unwrap(), &want, 1e-5);
        for c in 0..4 {
            let e = model.explain(&mut ws, &x, c).unwrap();
            assert_close("relevance", e.relevance, &naive.relevance(&xd, c, EPS), 1e-4);
            let g = model.gradient_x_input(&mut ws, &x, c).unwrap();
            assert_close("gradient x input", g.relevance, &finite_gxi(|v| naive.forward(v), &xd, c), 1e-4);
        }
    }
}

#[test]
fn sigmoid_mlp_matches_the_naive_forward_lrp_and_gradient() {
    let naive = Mlp::new(true, sigmoid);
    let model = SigmoidMlp::from_weights(&mut naive.weights(), true).unwrap();
    let mut ws = model.workspace(1).unwrap();
    let x = values(8, 20, 3.0);
    let xd = f64s(&x);
    assert_close("logits", model.predict(&mut ws, &x).unwrap(), &naive.forward(&xd), 1e-5);
    for c in 0..4 {
        let e = model.explain(&mut ws, &x, c).unwrap();
        assert_close("relevance", e.relevance, &naive.relevance(&xd, c, EPS), 1e-4);
        let g = model.gradient_x_input(&mut ws, &x, c).unwrap();
        assert_close("gradient x input", g.relevance, &finite_gxi(|v| naive.forward(v), &xd, c), 1e-4);
    }
}

#[test]
fn cnn_with_adaptive_pooling_matches_the_naive_forward_lrp_and_gradient() {
    let naive = Cnn::new(true);
    let model = SmallCnn::from_weights(&mut naive.weights(), true).unwrap();
    let mut ws = model.workspace(2).unwrap();
    // Two samples in one batch: the pool's per-sample offsets are exercised.
    let x = values(100, 30, 1.5);
    let (x0, x1) = (f64s(&x[..50]), f64s(&x[50..]));
    let want: Vec<f64> = naive.forward(&x0).into_iter().chain(naive.forward(&x1)).collect();
    assert_close("logits", model.predict_batch(&mut ws, &x, 2).unwrap(), &want, 1e-5);
    for c in 0..3 {
        for (s, xd) in [&x0, &x1].into_iter().enumerate() {
            let input = &x[s * 50..(s + 1) * 50];
            let e = model.explain(&mut ws, input, c).unwrap();
            assert_close("relevance", e.relevance, &naive.relevance(xd, c, EPS), 1e-4);
            let g = model.gradient_x_input(&mut ws, input, c).unwrap();
            assert_close("gradient x input", g.relevance, &finite_gxi(|v| naive.forward(v), xd, c), 1e-4);
        }
    }
}

#[test]
fn relevance_is_conserved_with_biases_zero() {
    let (mlp, cnn) = (Mlp::new(false, f64::tanh), Cnn::new(false));
    let tanh = TanhMlpTight::from_weights(&mut mlp.weights(), true).unwrap();
    let conv = SmallCnnTight::from_weights(&mut cnn.weights(), true).unwrap();
    let (mut ws_t, mut ws_c) = (tanh.workspace(1).unwrap(), conv.workspace(1).unwrap());
    for salt in 0..3 {
        let (x_t, x_c) = (values(8, 40 + salt, 2.0), values(50, 50 + salt, 1.5));
        assert_conserved(tanh.explain(&mut ws_t, &x_t, lrp::Target::Predicted));
        assert_conserved(conv.explain(&mut ws_c, &x_c, lrp::Target::Predicted));
    }
}

#[test]
fn upsampling_pool_sigmoid_and_tanh_in_a_derived_struct() {
    let (fc1, fc2) = (dense(4, 9, 6, true), dense(2, 4, 7, true));
    let mut weights = Weights::from_tensors([
        tensor("fc1.weight", &[4, 9], fc1.w.clone()),
        tensor("fc1.bias", &[4], fc1.b.clone()),
        tensor("fc2.weight", &[2, 4], fc2.w.clone()),
        tensor("fc2.bias", &[2], fc2.b.clone()),
    ]);
    let model = Derived::from_weights(&mut weights, true).unwrap();
    let mut ws = model.workspace(1).unwrap();
    let x = [0.5f32, -1.0, 2.0, 0.25];
    // 2 -> 3 windows per axis: [0, 1), [0, 2), [1, 2).
    let pool = |s: &[f64]| -> Vec<f64> {
        let mut y = Vec::new();
        for oy in 0..3 {
            for ox in 0..3 {
                let taps: Vec<usize> =
                    window(oy, 2, 3).flat_map(|a| window(ox, 2, 3).map(move |b| a * 2 + b)).collect();
                y.push(taps.iter().map(|&j| s[j]).sum::<f64>() / taps.len() as f64);
            }
        }
        y
    };
    let forward = |x: &[f64]| {
        let s: Vec<f64> = x.iter().map(|&v| sigmoid(v)).collect();
        let h: Vec<f64> = fc1.forward(&pool(&s)).into_iter().map(f64::tanh).collect();
        fc2.forward(&h)
    };
    let xd = f64s(&x);
    assert_close("logits", model.predict(&mut ws, &x).unwrap(), &forward(&xd), 1e-5);
    // The pool's corner output (0, 0) is input 0 alone: the window [0, 1) x [0, 1).
    assert_eq!(window(0, 2, 3), 0..1);
    let g = model.gradient_x_input(&mut ws, &x, 1usize).unwrap();
    assert_close("gradient x input", g.relevance, &finite_gxi(forward, &xd, 1), 1e-4);
}

#[test]
fn nan_inputs_are_errors() {
    let (mlp, cnn) = (Mlp::new(true, sigmoid), Cnn::new(true));
    let sig = SigmoidMlp::from_weights(&mut mlp.weights(), true).unwrap();
    let tanh = TanhMlp::from_weights(&mut Mlp::new(true, f64::tanh).weights(), true).unwrap();
    let conv = SmallCnn::from_weights(&mut cnn.weights(), true).unwrap();
    let mut x = values(8, 60, 1.0);
    x[3] = f32::NAN;
    let mut ws = sig.workspace(1).unwrap();
    let errs = [
        sig.predict(&mut ws, &x).map(|_| ()).unwrap_err(),
        sig.explain(&mut ws, &x, 0usize).map(|_| ()).unwrap_err(),
        sig.gradient_x_input(&mut ws, &x, 0usize).map(|_| ()).unwrap_err(),
    ];
    let mut ws = tanh.workspace(1).unwrap();
    let tanh_err = tanh.explain(&mut ws, &x, 0usize).map(|_| ()).unwrap_err();
    let mut x = values(50, 61, 1.0);
    x[17] = f32::NAN;
    let mut ws = conv.workspace(1).unwrap();
    let conv_err = conv.gradient_x_input(&mut ws, &x, 2usize).map(|_| ()).unwrap_err();
    for err in errs.into_iter().chain([tanh_err]) {
        assert!(matches!(err, Error::NonFiniteInput { sample: 0, index: 3, value } if value.is_nan()), "{err}");
    }
    assert!(matches!(conv_err, Error::NonFiniteInput { sample: 0, index: 17, .. }), "{conv_err}");
}

lrp::network! {
    /// A Tanh in the feed-forward head after an LSTM.
    TokenTanh(input = tokens, composite = Epsilon(0.01)) {
        emb: Embedding(10, 4), lstm: LSTM(4, 6), Tanh, fc: Linear(6, 3),
    }
}

lrp::network! {
    /// The same LSTM with an identity head: its logits are the LSTM's output `h`.
    TokenIdentity(input = tokens) { emb: Embedding(10, 4), lstm: LSTM(4, 6), fc: Linear(6, 6, bias = false) }
}

#[test]
fn tanh_after_an_lstm_passes_relevance_to_the_recurrent_layer() {
    let fc = dense(3, 6, 8, true);
    let lstm = |head: Vec<(String, Tensor)>| {
        let mut t = vec![
            tensor("emb.weight", &[10, 4], values(40, 9, 2.0)),
            tensor("lstm.weight_ih_l0", &[24, 4], values(96, 10, 1.5)),
            tensor("lstm.weight_hh_l0", &[24, 6], values(144, 11, 1.5)),
            tensor("lstm.bias_ih_l0", &[24], values(24, 12, 0.5)),
            tensor("lstm.bias_hh_l0", &[24], values(24, 13, 0.5)),
        ];
        t.extend(head);
        Weights::from_tensors(t)
    };
    let identity: Vec<f32> = (0..36).map(|i| if i % 7 == 0 { 1.0 } else { 0.0 }).collect();
    let plain = TokenIdentity::from_weights(&mut lstm(vec![tensor("fc.weight", &[6, 6], identity)]), true).unwrap();
    let head = vec![tensor("fc.weight", &[3, 6], fc.w.clone()), tensor("fc.bias", &[3], fc.b.clone())];
    let model = TokenTanh::from_weights(&mut lstm(head), true).unwrap();
    let (mut ws_p, mut ws) = (plain.workspace(8, 1).unwrap(), model.workspace(8, 1).unwrap());
    let tokens = [3usize, 1, 4, 1, 5, 9, 2];
    let h: Vec<f64> = f64s(plain.predict(&mut ws_p, &tokens).unwrap());
    assert!(h.iter().any(|v| v.abs() > 0.5), "saturating outputs, where tanh differs from the identity: {h:?}");
    let th: Vec<f64> = h.iter().map(|v| v.tanh()).collect();
    let z = fc.forward(&th);
    assert_close("logits", model.predict(&mut ws, &tokens).unwrap(), &z, 1e-5);
    for (c, &zc) in z.iter().enumerate() {
        // Epsilon on `fc`, then Tanh passes: the LSTM's output receives `tanh(h) w_c z_c / stab(z_c)`.
        let r_h: Vec<f32> = (0..6).map(|j| (th[j] * fc.w[c * 6 + j] as f64 * zc / stab(zc, EPS)) as f32).collect();
        let want = f64s(plain.explain_from(&mut ws_p, &tokens, &r_h).unwrap().relevance);
        assert_close("relevance", model.explain(&mut ws, &tokens, c).unwrap().relevance, &want, 1e-4);
    }
}
