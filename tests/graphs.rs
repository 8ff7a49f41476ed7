//! Graph specs: a residual sum whose shortcut is an empty branch, a fan-out (one tensor read by
//! two layers), a concatenation of two branches, and the same graph written with named
//! references. Against a naive `f64` forward and LRP written here (epsilon on the dense layers,
//! Zennit's `Norm` rule at the sum, relevances of a fan-out added, a concatenation split);
//! gradient x input against central finite differences; conservation with biases zero.

mod common;
use common::{Dense, assert_close, assert_conserved, dense_layers, f64s, finite_gxi, stab, values};
use lrp::{Tensor, Weights};

lrp::network! {
    /// `s = relu(stem(x))`; `u = relu(s + main(s))`; `head([left(u); right(tanh u)])`.
    Branchy(input = [6], composite = Epsilon(0.01)) {
        stem: { Linear(6, 8), ReLU },
        Sum {
            main: { Linear(8, 8), ReLU, Linear(8, 8) },
            {},
        },
        ReLU,
        Concat(dim = 0) {
            left: Linear(8, 4),
            right: { Tanh, Linear(8, 3) },
        },
        head: Linear(7, 3),
    }
}

lrp::network! {
    /// [`Branchy`] with every branch named and merged by name, written in another order.
    Named(input = [6], composite = Epsilon(0.01)) {
        stem: { Linear(6, 8), ReLU },
        main: stem -> { Linear(8, 8), ReLU, Linear(8, 8) },
        right: u -> { Tanh, Linear(8, 3) },
        u: { Sum(stem, main), ReLU },
        left: u -> Linear(8, 4),
        joined: Concat(left, right, dim = -1),
        head: Linear(7, 3),
    }
}

lrp::network! {
    BranchyTight(input = [6]) {
        stem: { Linear(6, 8), ReLU },
        Sum { main: { Linear(8, 8), ReLU, Linear(8, 8) }, {} },
        ReLU,
        Concat(dim = 0) { left: Linear(8, 4), right: { Tanh, Linear(8, 3) } },
        head: Linear(7, 3),
    }
}

lrp::network! {
    /// The input itself fans out: read by the stem and added back after it.
    InputShortcut(input = [6]) {
        Sum { { Linear(6, 6), ReLU, Linear(6, 6) }, {} },
        head: Linear(6, 2),
    }
}

const EPS: f64 = 0.01;
const SUM_EPS: f64 = 1e-6;

/// `(name, out, in)` of every dense layer of [`Branchy`].
const DENSE: [(&str, usize, usize); 6] =
    [("stem.0", 8, 6), ("main.0", 8, 8), ("main.2", 8, 8), ("left", 4, 8), ("right.1", 3, 8), ("head", 3, 7)];

/// The weights of [`Branchy`] (biases zero if `!bias`), as tensors and as f64 layers.
fn weights(bias: bool) -> (Weights, Vec<Dense>) {
    let (tensors, dense) = dense_layers(&DENSE, (11, 31, 0.6), bias);
    (Weights::from_tensors(tensors), dense)
}

/// Every intermediate value of the reference forward pass.
struct Trace {
    x: Vec<f64>,
    s: Vec<f64>,
    h: Vec<f64>,
    m: Vec<f64>,
    y: Vec<f64>,
    u: Vec<f64>,
    t: Vec<f64>,
    c: Vec<f64>,
    out: Vec<f64>,
}

fn relu(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&a| a.max(0.0)).collect()
}

fn forward(d: &[Dense], x: &[f64]) -> Trace {
    let s = relu(&d[0].forward(x));
    let h = relu(&d[1].forward(&s));
    let m = d[2].forward(&h);
    let y: Vec<f64> = s.iter().zip(&m).map(|(a, b)| a + b).collect();
    let u = relu(&y);
    let t: Vec<f64> = u.iter().map(|v| v.tanh()).collect();
    let c: Vec<f64> = d[3].forward(&u).into_iter().chain(d[4].forward(&t)).collect();
    let out = d[5].forward(&c);
    Trace { x: x.to_vec(), s, h, m, y, u, t, c, out }
}

/// LRP of `out[target]`: epsilon on the dense layers, the sum shared by contribution.
fn lrp(d: &[Dense], tr: &Trace, target: usize, eps: f64) -> Vec<f64> {
    let mut r_out = vec![0.0; 3];
    r_out[target] = tr.out[target];
    let r_c = d[5].epsilon(&tr.c, &r_out, eps);
    let from_left = d[3].epsilon(&tr.u, &r_c[..4], eps);
    let from_right = d[4].epsilon(&tr.t, &r_c[4..], eps);
    // The fan-out of `u`: both consumers' relevance adds; ReLU passes it to `y`.
    let r_y: Vec<f64> = from_left.iter().zip(&from_right).map(|(a, b)| a + b).collect();
    let share = |part: &[f64]| -> Vec<f64> { (0..8).map(|i| part[i] * r_y[i] / stab(tr.y[i], SUM_EPS)).collect() };
    let (r_shortcut, r_m) = (share(&tr.s), share(&tr.m));
    let r_h = d[2].epsilon(&tr.h, &r_m, eps);
    let r_main = d[1].epsilon(&tr.s, &r_h, eps);
    let r_s: Vec<f64> = r_shortcut.iter().zip(&r_main).map(|(a, b)| a + b).collect();
    d[0].epsilon(&tr.x, &r_s, eps)
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

#[test]
fn a_residual_fan_out_and_concatenation_match_the_naive_reference() {
    let (mut w, d) = weights(true);
    let model = Branchy::from_weights(&mut w, true).unwrap();
    let mut ws = model.workspace(3).unwrap();
    let input = values(3 * 6, 5, 1.5);
    let e = model.explain_batch(&mut ws, &input, 3, lrp::Target::Predicted).unwrap();
    let (logits, relevance, targets) = (e.logits.to_vec(), e.relevance.to_vec(), e.targets.to_vec());
    for i in 0..3 {
        let x = f64s(&input[i * 6..(i + 1) * 6]);
        let tr = forward(&d, &x);
        assert_close("logits", &logits[i * 3..(i + 1) * 3], &tr.out, 1e-5);
        assert_eq!(targets[i], argmax(&tr.out));
        let want = lrp(&d, &tr, targets[i], EPS);
        assert_close(&format!("relevance of sample {i}"), &relevance[i * 6..(i + 1) * 6], &want, 1e-4);
        let g = model.gradient_x_input_batch(&mut ws, &input, 3, lrp::Target::Predicted).unwrap().relevance.to_vec();
        let f = |x: &[f64]| forward(&d, x).out;
        assert_close(
            &format!("gradient x input of sample {i}"),
            &g[i * 6..(i + 1) * 6],
            &finite_gxi(f, &x, targets[i]),
            1e-4,
        );
    }
}

#[test]
fn named_references_compute_the_same_graph() {
    let model = Branchy::from_weights(&mut weights(true).0, true).unwrap();
    let named = Named::from_weights(&mut weights(true).0, true).unwrap();
    let input = values(2 * 6, 7, 1.5);
    let (mut ws, mut ws_named) = (model.workspace(2).unwrap(), named.workspace(2).unwrap());
    let a = model.explain_batch(&mut ws, &input, 2, 1).unwrap();
    let b = named.explain_batch(&mut ws_named, &input, 2, 1).unwrap();
    assert_eq!(a.logits, b.logits);
    assert_eq!(a.relevance, b.relevance);
}

#[test]
fn relevance_is_conserved_through_sums_and_fan_outs_without_biases() {
    let model = BranchyTight::from_weights(&mut weights(false).0, true).unwrap();
    let mut ws = model.workspace(1).unwrap();
    for salt in [3, 5, 8] {
        let input = values(6, salt, 1.5);
        assert_conserved(model.explain(&mut ws, &input, lrp::Target::Predicted));
    }
    let tensors = [("0", 6, 6, 1), ("2", 6, 6, 2), ("head", 2, 6, 3)].map(|(name, out, inp, salt)| {
        [
            (format!("{name}.weight"), Tensor { shape: vec![out, inp], data: values(out * inp, salt, 0.7) }),
            (format!("{name}.bias"), Tensor { shape: vec![out], data: vec![0.0; out] }),
        ]
    });
    let shortcut = InputShortcut::from_weights(&mut Weights::from_tensors(tensors.concat()), true).unwrap();
    let mut ws = shortcut.workspace(1).unwrap();
    for salt in [1, 4] {
        assert_conserved(shortcut.explain(&mut ws, &values(6, salt, 2.0), lrp::Target::Predicted));
    }
}

lrp::network! {
    /// Two inputs: `a` through a ReLU tower, `b` through a Tanh tower, concatenated.
    Towers(inputs(a = [6], b = [3]), composite = Epsilon(0.01)) {
        left: a -> { Linear(6, 4), ReLU },
        right: b -> { Linear(3, 4), Tanh },
        joined: Concat(left, right, dim = 0),
        head: Linear(8, 2),
    }
}

lrp::network! {
    /// Two inputs projected to one size and added.
    Added(inputs(a = [6], b = [3])) {
        pa: a -> Linear(6, 5),
        pb: b -> Linear(3, 5),
        Sum(pa, pb),
        ReLU,
        head: Linear(5, 2),
    }
}

/// `(name, out, in)` of the dense layers of [`Towers`] and [`Added`].
const TOWERS: [(&str, usize, usize); 3] = [("left.0", 4, 6), ("right.0", 4, 3), ("head", 2, 8)];
const ADDED: [(&str, usize, usize); 3] = [("pa", 5, 6), ("pb", 5, 3), ("head", 2, 5)];

fn dense_weights(layers: &[(&str, usize, usize)], bias: bool) -> (Weights, Vec<Dense>) {
    let (tensors, dense) = dense_tensors(layers, bias);
    (Weights::from_tensors(tensors), dense)
}

fn dense_tensors(layers: &[(&str, usize, usize)], bias: bool) -> (Vec<(String, Tensor)>, Vec<Dense>) {
    dense_layers(layers, (41, 61, 0.7), bias)
}

#[test]
fn two_inputs_are_explained_each_against_the_naive_reference() {
    let (mut w, d) = dense_weights(&TOWERS, true);
    let model = Towers::from_weights(&mut w, true).unwrap();
    let (a, b) = (values(2 * 6, 3, 1.5), values(2 * 3, 4, 1.5));
    let mut ws = model.workspace(2).unwrap();
    let e = model.explain_batch(&mut ws, &TowersInput { a: &a, b: &b }, 2, 1).unwrap();
    assert_eq!(e.a.logits, e.b.logits);
    assert_eq!((e.a.relevance.len(), e.b.relevance.len()), (12, 6));
    let forward = |x: &[f64], y: &[f64]| {
        let u = relu(&d[0].forward(x));
        let t: Vec<f64> = d[1].forward(y).iter().map(|v| v.tanh()).collect();
        let c: Vec<f64> = u.iter().chain(&t).copied().collect();
        (u, t, c.clone(), d[2].forward(&c))
    };
    for i in 0..2 {
        let (x, y) = (f64s(&a[i * 6..(i + 1) * 6]), f64s(&b[i * 3..(i + 1) * 3]));
        let (_, _, c, out) = forward(&x, &y);
        assert_close("logits", &e.a.logits[i * 2..(i + 1) * 2], &out, 1e-5);
        let r_c = d[2].epsilon(&c, &[0.0, out[1]], EPS);
        // The concatenation splits; the ReLU and the Tanh pass relevance on.
        let (r_a, r_b) = (d[0].epsilon(&x, &r_c[..4], EPS), d[1].epsilon(&y, &r_c[4..], EPS));
        assert_close("relevance of a", &e.a.relevance[i * 6..(i + 1) * 6], &r_a, 1e-4);
        assert_close("relevance of b", &e.b.relevance[i * 3..(i + 1) * 3], &r_b, 1e-4);
    }
    let g = model.gradient_x_input_batch(&mut ws, &TowersInput { a: &a, b: &b }, 2, 1).unwrap();
    let (ga, gb) = (g.a.relevance.to_vec(), g.b.relevance.to_vec());
    for i in 0..2 {
        let (x, y) = (f64s(&a[i * 6..(i + 1) * 6]), f64s(&b[i * 3..(i + 1) * 3]));
        let joint: Vec<f64> = x.iter().chain(&y).copied().collect();
        let f = |v: &[f64]| forward(&v[..6], &v[6..]).3;
        let want = finite_gxi(f, &joint, 1);
        assert_close("gradient x input of a", &ga[i * 6..(i + 1) * 6], &want[..6], 1e-4);
        assert_close("gradient x input of b", &gb[i * 3..(i + 1) * 3], &want[6..], 1e-4);
    }
}

#[test]
fn relevance_of_several_inputs_sums_to_the_logit_without_biases() {
    let model = Added::from_weights(&mut dense_weights(&ADDED, false).0, true).unwrap();
    let mut ws = model.workspace(1).unwrap();
    let mut checked = 0;
    for salt in 0..12 {
        let (a, b) = (values(6, salt, 2.0), values(3, salt + 1, 2.0));
        let e = model.explain(&mut ws, &AddedInput { a: &a, b: &b }, lrp::Target::Predicted).unwrap();
        let logit = e.a.logits[e.a.targets[0]] as f64;
        let total: f64 = e.a.relevance.iter().chain(e.b.relevance).map(|&r| r as f64).sum();
        // Only a logit far from zero makes the check mean something.
        if logit.abs() > 0.05 {
            assert!((total - logit).abs() <= 1e-4 * logit.abs(), "sum {total} vs logit {logit}");
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} inputs with a logit far from zero");
}

#[test]
fn each_input_of_several_is_checked() {
    let model = Added::from_weights(&mut dense_weights(&ADDED, true).0, true).unwrap();
    let mut ws = model.workspace(2).unwrap();
    let (a, b) = ([0.5f32; 6], [0.5f32; 3]);
    let short = model.predict(&mut ws, &AddedInput { a: &a, b: &b[..2] }).unwrap_err();
    assert_eq!(short, lrp::Error::Length { what: "input `b` of `Added`".into(), expected: 3, found: 2 });
    let nan = [0.5, f32::NAN, 0.5];
    assert!(matches!(model.predict(&mut ws, &AddedInput { a: &a, b: &nan }), Err(lrp::Error::NonFiniteInput { .. })));
    assert_eq!(Added::INPUTS, &[("a", &[6usize][..]), ("b", &[3usize][..])]);
}

#[test]
fn occlusion_of_a_graph_is_the_drop_of_its_predictions() {
    let model = Branchy::from_weights(&mut weights(true).0, true).unwrap();
    let mut ws = model.workspace(2).unwrap();
    let input = values(2 * 6, 13, 1.5);
    let e = model.occlusion_batch(&mut ws, &input, 2, 2, &[2]).unwrap();
    let (got, logits) = (e.relevance.to_vec(), e.logits.to_vec());
    let softmax = |z: &[f32], c: usize| {
        let m = z.iter().fold(f32::MIN, |a, &b| a.max(b));
        (z[c] - m).exp() / z.iter().map(|v| (v - m).exp()).sum::<f32>()
    };
    for i in 0..2 {
        let sample = &input[i * 6..(i + 1) * 6];
        // The batch's logits are restored (a batch of one rounds a little differently).
        let alone = model.predict(&mut ws, sample).unwrap().to_vec();
        assert!(
            logits[i * 3..(i + 1) * 3].iter().zip(&alone).all(|(a, b)| (a - b).abs() < 1e-5),
            "{logits:?} {alone:?}"
        );
        let p = softmax(&logits[i * 3..(i + 1) * 3], 2);
        for w in 0..3 {
            let mut occluded = sample.to_vec();
            occluded[2 * w..2 * w + 2].fill(0.0);
            let drop = p - softmax(model.predict(&mut ws, &occluded).unwrap(), 2);
            assert!((got[i * 6 + 2 * w] - drop).abs() < 1e-6 && got[i * 6 + 2 * w + 1] == got[i * 6 + 2 * w]);
        }
    }
}

lrp::network! {
    /// Values and token ids: both explained, the tokens by their embeddings' relevance.
    Mixed(inputs(image = [4], words = tokens(3))) {
        img: image -> Linear(4, 5),
        txt: words -> { emb: Embedding(7, 2), Flatten, fc: Linear(6, 5) },
        Sum(img, txt),
        ReLU,
        head: Linear(5, 2),
    }
}

#[test]
fn values_and_token_ids_are_explained_together() {
    let layers = [("img", 5, 4), ("txt.fc", 5, 6), ("head", 2, 5)];
    let (mut tensors, _) = dense_tensors(&layers, false);
    tensors.push(("txt.emb.weight".into(), Tensor { shape: vec![7, 2], data: values(14, 71, 1.0) }));
    let model = Mixed::from_weights(&mut Weights::from_tensors(tensors), true).unwrap();
    let mut ws = model.workspace(2).unwrap();
    let (image, words) = (values(8, 5, 1.5), [1usize, 6, 3, 0, 2, 5]);
    let e =
        model.explain_batch(&mut ws, &MixedInput { image: &image, words: &words }, 2, lrp::Target::Predicted).unwrap();
    assert_eq!((e.image.relevance.len(), e.words.relevance.len(), e.words.lengths), (8, 12, &[3usize, 3][..]));
    let mut checked = 0;
    for i in 0..2 {
        let logit = e.image.logits[i * 2 + e.image.targets[i]] as f64;
        let per_token: Vec<f32> = e.words.token_relevance(i).collect();
        assert_eq!(per_token.len(), 3);
        let total: f64 = e.image.sample(i).iter().chain(&per_token).map(|&r| r as f64).sum();
        if logit.abs() > 0.05 {
            assert!((total - logit).abs() <= 1e-4 * logit.abs(), "sample {i}: sum {total} vs logit {logit}");
            checked += 1;
        }
    }
    assert!(checked >= 1);
    let out_of_range = [1usize, 7, 3];
    let err = model.predict(&mut ws, &MixedInput { image: &image[..4], words: &out_of_range }).unwrap_err();
    assert!(matches!(err, lrp::Error::TokenOutOfRange { token: 7, vocab: 7, .. }), "{err}");
}

#[test]
fn occlusion_of_several_inputs_occludes_each_in_turn() {
    let model = Towers::from_weights(&mut dense_weights(&TOWERS, true).0, true).unwrap();
    let mut ws = model.workspace(2).unwrap();
    let (a, b) = (values(2 * 6, 21, 1.5), values(2 * 3, 22, 1.5));
    let e = model.occlusion_batch(&mut ws, &TowersInput { a: &a, b: &b }, 2, 0, &[&[3], &[1]]).unwrap();
    let (got_a, got_b, logits) = (e.a.relevance.to_vec(), e.b.relevance.to_vec(), e.a.logits.to_vec());
    let softmax = |z: &[f32], c: usize| {
        let m = z.iter().fold(f32::MIN, |x, &y| x.max(y));
        (z[c] - m).exp() / z.iter().map(|v| (v - m).exp()).sum::<f32>()
    };
    for i in 0..2 {
        let (xa, xb) = (&a[i * 6..(i + 1) * 6], &b[i * 3..(i + 1) * 3]);
        let p = softmax(&logits[i * 2..(i + 1) * 2], 0);
        let mut predicted =
            |xa: &[f32], xb: &[f32]| softmax(model.predict(&mut ws, &TowersInput { a: xa, b: xb }).unwrap(), 0);
        for w in 0..2 {
            let mut occluded = xa.to_vec();
            occluded[3 * w..3 * w + 3].fill(0.0);
            let drop = p - predicted(&occluded, xb);
            assert!(got_a[i * 6 + 3 * w..i * 6 + 3 * w + 3].iter().all(|&r| (r - drop).abs() < 1e-6), "a, sample {i}");
        }
        for j in 0..3 {
            let mut occluded = xb.to_vec();
            occluded[j] = 0.0;
            let drop = p - predicted(xa, &occluded);
            assert!((got_b[i * 3 + j] - drop).abs() < 1e-6, "b, sample {i}, feature {j}");
        }
    }
    let err = model.occlusion(&mut ws, &TowersInput { a: &a[..6], b: &b[..3] }, 0, &[&[3]]).unwrap_err();
    assert!(matches!(err, lrp::Error::Length { expected: 2, found: 1, .. }), "{err}");
}

lrp::network! {
    /// Two row-wise maps of a [2, 3] sample joined along the last dimension: [2, 2] and [2, 4]
    /// give [2, 6], interleaved row by row.
    Rows(input = [2, 3], composite = Epsilon(0.01)) {
        Concat(dim = -1) { left: Linear(3, 2), right: { Linear(3, 4), Tanh } },
        Flatten,
        head: Linear(12, 2),
    }
}

#[test]
fn a_concatenation_along_the_last_dimension_interleaves_rows() {
    let layers = [("left", 2, 3), ("right.0", 4, 3), ("head", 2, 12)];
    let (mut w, d) = dense_weights(&layers, true);
    let model = Rows::from_weights(&mut w, true).unwrap();
    let mut ws = model.workspace(1).unwrap();
    let input = values(6, 17, 1.5);
    let x = f64s(&input);
    // Per row l: [left(x_l); tanh(right(x_l))].
    let mut joined = Vec::new();
    for l in 0..2 {
        let row = &x[l * 3..(l + 1) * 3];
        joined.extend(d[0].forward(row));
        joined.extend(d[1].forward(row).iter().map(|v| v.tanh()));
    }
    let out = d[2].forward(&joined);
    let e = model.explain(&mut ws, &input, 1).unwrap();
    assert_close("logits", e.logits, &out, 1e-5);
    let r_joined = d[2].epsilon(&joined, &[0.0, out[1]], EPS);
    let mut want = Vec::new();
    // Each row's relevance: the part of the left map and that of the right one (Tanh passes it).
    for l in 0..2 {
        let (row, r) = (&x[l * 3..(l + 1) * 3], &r_joined[l * 6..(l + 1) * 6]);
        let a = d[0].epsilon(row, &r[..2], EPS);
        let b = d[1].epsilon(row, &r[2..], EPS);
        want.extend(a.iter().zip(&b).map(|(a, b)| a + b));
    }
    assert_close("relevance", e.relevance, &want, 1e-4);
}
