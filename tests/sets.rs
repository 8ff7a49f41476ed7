//! Sets of objects in graph specs (a small Relation Network): `Objects` (a feature map's cells
//! with their coordinates), `Pairs` (every ordered pair with the question appended), dense
//! layers applied to every pair, and `SetSum`. Against a naive `f64` forward and LRP written
//! here (epsilon on the dense layers, Zennit's `Norm` rule at the set's sum, the relevance of
//! every copy summed back to what was copied, the coordinates' share reported); gradient x
//! input against central differences; conservation with biases zero.

mod common;
use common::{Dense, assert_close, dense_layers, f64s, finite_gxi, stab, values};
use lrp::{Tensor, Weights};

/// A Relation Network over the 4 cells of a `[3, 2, 2]` feature map and a question `q`:
/// `f(Σ_pairs g([o_i, o_j, q]))`, with the composite and any entries between the pairs and `g`.
macro_rules! rn {
    ($(#[$doc:meta])* $name:ident, [$($composite:tt)+], [$($between:tt)*]) => {
        lrp::network! {
            $(#[$doc])*
            $name(inputs(image = [3, 2, 2], q = [3]), composite = $($composite)+) {
                objects: image -> Objects,
                pairs: Pairs(objects, q),
                $($between)*
                g: { Linear(13, 8), ReLU, Linear(8, 8), ReLU },
                total: SetSum,
                f: { Linear(8, 8), ReLU, Linear(8, 3) },
            }
        }
    };
}

rn!(
    /// The reference's network.
    Rn, [Epsilon(0.01)], []
);
rn!(
    /// [`Rn`] with the pairs made: an `Identity` between them and `g` keeps `g.0` on the rows
    /// (a Linear reading `Pairs` directly runs on the objects and the question instead).
    RnRows, [Epsilon(0.01)], [rows: Identity,]
);
rn!(
    /// [`Rn`] with a tiny epsilon, for conservation.
    RnTight, [Epsilon(1e-9)], []
);

lrp::network! {
    /// Pairs without a vector, and relevance of zero-bias layers.
    Plain(inputs(image = [2, 3, 2], q = [2]), composite = Epsilon(1e-9)) {
        objects: image -> Objects,
        pairs: Pairs(objects),
        g: { Linear(8, 6, bias = false), ReLU },
        total: SetSum,
        joined: Concat(total, q, dim = 0),
        head: Linear(8, 3, bias = false),
    }
}

const EPS: f64 = 0.01;
const SUM_EPS: f64 = 1e-6;

/// `(name, out, in)` of the dense layers of [`Rn`].
const DENSE: [(&str, usize, usize); 4] = [("g.0", 8, 13), ("g.2", 8, 8), ("f.0", 8, 8), ("f.2", 3, 8)];

fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.max(0.0)).collect()
}

fn weights(bias: bool) -> (Weights, Vec<Dense>) {
    let (tensors, dense) = dense_layers(&DENSE, (17, 31, 0.6), bias);
    (Weights::from_tensors(tensors), dense)
}

/// The naive model: its intermediate values for one sample.
struct Trace {
    objects: Vec<Vec<f64>>,
    rows: Vec<Vec<f64>>,
    g1: Vec<Vec<f64>>,
    g2: Vec<Vec<f64>>,
    total: Vec<f64>,
    f1: Vec<f64>,
    logits: Vec<f64>,
}

fn forward(d: &[Dense], image: &[f64], q: &[f64]) -> Trace {
    let coord = |i: usize| -1.0 + 2.0 * i as f64;
    let objects: Vec<Vec<f64>> =
        (0..4).map(|k| vec![image[k], image[4 + k], image[8 + k], coord(k % 2), coord(k / 2)]).collect();
    let rows: Vec<Vec<f64>> = (0..16).map(|p| [&objects[p / 4][..], &objects[p % 4][..], q].concat()).collect();
    let g1: Vec<Vec<f64>> = rows.iter().map(|r| relu(&d[0].forward(r))).collect();
    let g2: Vec<Vec<f64>> = g1.iter().map(|r| relu(&d[1].forward(r))).collect();
    let total: Vec<f64> = (0..8).map(|k| g2.iter().map(|r| r[k]).sum()).collect();
    let f1 = relu(&d[2].forward(&total));
    let logits = d[3].forward(&f1);
    Trace { objects, rows, g1, g2, total, f1, logits }
}

/// LRP of the naive model: the relevance of the image, the question and the coordinates.
fn explain(d: &[Dense], t: &Trace, target: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut r = vec![0.0; 3];
    r[target] = t.logits[target];
    let r_f1 = d[3].epsilon(&t.f1, &r, EPS);
    let r_total = d[2].epsilon(&t.total, &r_f1, EPS);
    let (mut r_image, mut r_q, mut r_coords) = (vec![0.0; 12], vec![0.0; 3], vec![0.0; 8]);
    for p in 0..16 {
        // Norm at the set's sum: each row keeps its share of every feature.
        let r_g2: Vec<f64> = (0..8).map(|k| t.g2[p][k] / stab(t.total[k], SUM_EPS) * r_total[k]).collect();
        let r_g1 = d[1].epsilon(&t.g1[p], &r_g2, EPS);
        let r_row = d[0].epsilon(&t.rows[p], &r_g1, EPS);
        for (slot, k) in [(0, p / 4), (5, p % 4)] {
            for c in 0..3 {
                r_image[c * 4 + k] += r_row[slot + c];
            }
            r_coords[k * 2] += r_row[slot + 3];
            r_coords[k * 2 + 1] += r_row[slot + 4];
        }
        for c in 0..3 {
            r_q[c] += r_row[10 + c];
        }
    }
    assert_eq!(t.objects.len(), 4);
    (r_image, r_q, r_coords)
}

#[test]
fn a_relation_network_is_explained_against_the_naive_reference() {
    let (mut w, d) = weights(true);
    let model = Rn::from_weights(&mut w, true).unwrap();
    let (images, qs) = (values(2 * 12, 5, 1.5), values(2 * 3, 6, 1.0));
    let mut ws = model.workspace(2).unwrap();
    let e = model.explain_batch(&mut ws, &RnInput { image: &images, q: &qs }, 2, 1).unwrap();
    assert_eq!((e.image.relevance.len(), e.q.relevance.len(), e.objects_coordinates.len()), (24, 6, 16));
    for i in 0..2 {
        let t = forward(&d, &f64s(&images[i * 12..(i + 1) * 12]), &f64s(&qs[i * 3..(i + 1) * 3]));
        assert_close("logits", &e.image.logits[i * 3..(i + 1) * 3], &t.logits, 1e-5);
        let (r_image, r_q, r_coords) = explain(&d, &t, 1);
        assert_close("image", &e.image.relevance[i * 12..(i + 1) * 12], &r_image, 1e-4);
        assert_close("question", &e.q.relevance[i * 3..(i + 1) * 3], &r_q, 1e-4);
        assert_close("coordinates", &e.objects_coordinates[i * 8..(i + 1) * 8], &r_coords, 1e-4);
        // With biases and epsilon 0.01, a part of the logit is held by no input.
        let held: f64 = r_image.iter().chain(&r_q).chain(&r_coords).sum();
        assert!((f64::from(e.absorbed(i)) - (t.logits[1] - held)).abs() <= 1e-4 * t.logits[1].abs().max(1.0));
    }
    // Gradient x input through pairs and the set's sum, against central differences.
    let g = model.gradient_x_input_batch(&mut ws, &RnInput { image: &images, q: &qs }, 2, 2).unwrap();
    let (g_image, g_q) = (g.image.relevance.to_vec(), g.q.relevance.to_vec());
    for i in 0..2 {
        let joint: Vec<f64> =
            f64s(&images[i * 12..(i + 1) * 12]).into_iter().chain(f64s(&qs[i * 3..(i + 1) * 3])).collect();
        let want = finite_gxi(|v: &[f64]| forward(&d, &v[..12], &v[12..]).logits, &joint, 2);
        assert_close("gradient x image", &g_image[i * 12..(i + 1) * 12], &want[..12], 1e-3);
        assert_close("gradient x question", &g_q[i * 3..(i + 1) * 3], &want[12..], 1e-3);
    }
}

#[test]
fn relevance_is_conserved_across_image_question_and_coordinates() {
    let (mut w, _) = weights(false);
    let model = RnTight::from_weights(&mut w, true).unwrap();
    let (images, qs) = (values(3 * 12, 8, 1.5), values(3 * 3, 9, 1.0));
    let mut ws = model.workspace(3).unwrap();
    let input = RnTightInput { image: &images, q: &qs };
    let e = model.explain_batch(&mut ws, &input, 3, lrp::Target::Predicted).unwrap();
    for i in 0..3 {
        let logit = e.image.logits[i * 3 + e.image.targets[i]];
        let parts = [
            &e.image.relevance[i * 12..(i + 1) * 12],
            &e.q.relevance[i * 3..(i + 1) * 3],
            &e.objects_coordinates[i * 8..(i + 1) * 8],
        ];
        let total: f32 = parts.iter().flat_map(|p| p.iter()).sum();
        assert!((total - logit).abs() <= 1e-4 * logit.abs().max(1e-2), "sample {i}: {total} vs logit {logit}");
        assert!((e.absorbed(i) - (logit - total)).abs() <= 1e-5 * logit.abs().max(1.0), "sample {i}");
    }
}

#[test]
fn pairs_without_a_vector_conserve_relevance() {
    let tensors = vec![
        ("g.0.weight".to_string(), Tensor { shape: vec![6, 8], data: values(48, 3, 0.7) }),
        ("head.weight".to_string(), Tensor { shape: vec![3, 8], data: values(24, 4, 0.7) }),
    ];
    let model = Plain::from_weights(&mut Weights::from_tensors(tensors), true).unwrap();
    let (images, qs) = (values(2 * 12, 10, 1.0), values(2 * 2, 11, 1.0));
    let mut ws = model.workspace(2).unwrap();
    let e = model.explain_batch(&mut ws, &PlainInput { image: &images, q: &qs }, 2, 0).unwrap();
    for i in 0..2 {
        let logit = e.image.logits[i * 3];
        let total: f32 = e.image.relevance[i * 12..(i + 1) * 12]
            .iter()
            .chain(&e.q.relevance[i * 2..(i + 1) * 2])
            .chain(&e.objects_coordinates[i * 12..(i + 1) * 12])
            .sum();
        assert!((total - logit).abs() <= 1e-4 * logit.abs().max(1e-3), "sample {i}: {total} vs logit {logit}");
    }
}

lrp::network! {
    /// `conv → ReLU → BatchNorm → Objects → Pairs → g`: the BatchNorm folds into `g.0`'s columns
    /// of the two objects of each pair.
    WithBn(inputs(image = [1, 5, 5], q = [2]), composite = Epsilon(0.01)) {
        feats: image -> { Conv2d(1, 3, kernel_size = 3), ReLU, BatchNorm2d(3) },
        objects: Objects,
        pairs: Pairs(objects, q),
        g: { Linear(12, 6), ReLU },
        total: SetSum,
        head: Linear(6, 2),
    }
}

lrp::network! {
    /// [`WithBn`] without its BatchNorm, for weights folded by hand.
    NoBn(inputs(image = [1, 5, 5], q = [2]), composite = Epsilon(0.01)) {
        feats: image -> { Conv2d(1, 3, kernel_size = 3), ReLU },
        objects: Objects,
        pairs: Pairs(objects, q),
        g: { Linear(12, 6), ReLU },
        total: SetSum,
        head: Linear(6, 2),
    }
}

#[test]
fn a_batchnorm_before_the_objects_folds_into_the_first_pair_layer() {
    let tensor = |shape: Vec<usize>, data: Vec<f32>| Tensor { shape, data };
    let (gamma, beta, mean, var) =
        (vec![1.5, 0.5, 2.0], vec![0.1, -0.3, 0.2], vec![0.2, 0.4, -0.1], vec![0.5, 2.0, 1.0]);
    let (w, b) = (values(72, 21, 0.5), values(6, 22, 0.2));
    let shared = |g0_w: Vec<f32>, g0_b: Vec<f32>| {
        vec![
            ("feats.0.weight".to_string(), tensor(vec![3, 1, 3, 3], values(27, 23, 0.6))),
            ("feats.0.bias".to_string(), tensor(vec![3], values(3, 24, 0.2))),
            ("g.0.weight".to_string(), tensor(vec![6, 12], g0_w)),
            ("g.0.bias".to_string(), tensor(vec![6], g0_b)),
            ("head.weight".to_string(), tensor(vec![2, 6], values(12, 25, 0.5))),
            ("head.bias".to_string(), tensor(vec![2], values(2, 26, 0.1))),
        ]
    };
    let mut with_bn = shared(w.clone(), b.clone());
    for (name, v) in [("weight", &gamma), ("bias", &beta), ("running_mean", &mean), ("running_var", &var)] {
        with_bn.push((format!("feats.2.{name}"), tensor(vec![3], v.clone())));
    }
    // By hand: each object's three features (columns 0..3 and 5..8 of a pair) are `s x + t`.
    let scale: Vec<f32> = gamma.iter().zip(&var).map(|(g, v)| g / (v + 1e-5f32).sqrt()).collect();
    let shift: Vec<f32> = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    let (mut w_folded, mut b_folded) = (w.clone(), b.clone());
    for o in 0..6 {
        for offset in [0, 5] {
            for c in 0..3 {
                b_folded[o] += w[o * 12 + offset + c] * shift[c];
                w_folded[o * 12 + offset + c] *= scale[c];
            }
        }
    }
    let folded = WithBn::from_weights(&mut Weights::from_tensors(with_bn), true).unwrap();
    let by_hand = NoBn::from_weights(&mut Weights::from_tensors(shared(w_folded, b_folded)), true).unwrap();
    let (images, qs) = (values(2 * 25, 27, 1.0), values(2 * 2, 28, 1.0));
    let (mut ws_a, mut ws_b) = (folded.workspace(2).unwrap(), by_hand.workspace(2).unwrap());
    let a = folded.explain_batch(&mut ws_a, &WithBnInput { image: &images, q: &qs }, 2, 1).unwrap();
    let b = by_hand.explain_batch(&mut ws_b, &NoBnInput { image: &images, q: &qs }, 2, 1).unwrap();
    let near = |x: &[f32], y: &[f32]| {
        let scale = y.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-5 * scale)
    };
    assert!(near(a.image.logits, b.image.logits), "{:?} vs {:?}", a.image.logits, b.image.logits);
    assert!(near(a.image.relevance, b.image.relevance) && near(a.q.relevance, b.q.relevance));
    assert!(near(a.objects_coordinates, b.objects_coordinates));
}

#[test]
fn a_layer_on_pairs_computed_without_them_equals_one_on_their_rows() {
    let model = Rn::from_weights(&mut weights(true).0, true).unwrap();
    let rows = RnRows::from_weights(&mut weights(true).0, true).unwrap();
    let (images, qs) = (values(2 * 12, 12, 1.5), values(2 * 3, 13, 1.0));
    let (mut ws, mut ws_rows) = (model.workspace(2).unwrap(), rows.workspace(2).unwrap());
    let near = |a: &[f32], b: &[f32]| {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * scale)
    };
    let e = model.explain_batch(&mut ws, &RnInput { image: &images, q: &qs }, 2, 0).unwrap();
    let r = rows.explain_batch(&mut ws_rows, &RnRowsInput { image: &images, q: &qs }, 2, 0).unwrap();
    assert!(near(e.image.logits, r.image.logits) && near(e.image.relevance, r.image.relevance));
    assert!(near(e.q.relevance, r.q.relevance) && near(e.objects_coordinates, r.objects_coordinates));
    let e = model.gradient_x_input_batch(&mut ws, &RnInput { image: &images, q: &qs }, 2, 0).unwrap();
    let r = rows.gradient_x_input_batch(&mut ws_rows, &RnRowsInput { image: &images, q: &qs }, 2, 0).unwrap();
    assert!(near(e.image.relevance, r.image.relevance) && near(e.q.relevance, r.q.relevance));
}
