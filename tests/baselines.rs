//! The baselines generated for every model: gradient x input against central finite differences,
//! and occlusion against a direct computation with `predict`, on the fixtures' models.

mod common;
use common::Cases;

lrp::network! {
    FixtureMlp(input = [16]) {
        Linear(16, 32), ReLU, Linear(32, 32), ReLU, Linear(32, 4),
    }
}

lrp::network! {
    FixtureCnn(input = [3, 16, 16], composite = EpsilonPlus) {
        features: {
            Conv2d(3, 8, kernel_size = 3, padding = 1), BatchNorm2d(8), ReLU, MaxPool2d(2),
            Conv2d(8, 16, kernel_size = 3, padding = 1), BatchNorm2d(16), ReLU, AvgPool2d(2),
        },
        Flatten,
        classifier: { Linear(256, 32), ReLU, Linear(32, 10) },
    }
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Deterministic pseudo-random values in [-1, 1].
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Checks `gradient_x_input / x` against `(f_c(x + h e_i) - f_c(x - h e_i)) / 2h` for every feature.
fn check_gradient(n_features: usize, x: &[f32], gxi: &[f32], target: usize, mut logit: impl FnMut(&[f32]) -> f32) {
    let h = 1e-3f32;
    let mut fd = Vec::with_capacity(n_features);
    for i in 0..n_features {
        let (mut plus, mut minus) = (x.to_vec(), x.to_vec());
        plus[i] += h;
        minus[i] -= h;
        fd.push((logit(&plus) - logit(&minus)) / (2.0 * h));
    }
    let grad: Vec<f32> = gxi.iter().zip(x).map(|(r, xi)| r / xi).collect();
    let scale = fd.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mismatched = grad.iter().zip(&fd).filter(|(g, f)| (*g - *f).abs() > 1e-2 * scale).count();
    // A ReLU or max-pool switching inside [x - h, x + h] breaks the finite difference at a
    // handful of features; the gradient must agree everywhere else.
    assert!(mismatched * 50 <= n_features, "target {target}: {mismatched} of {n_features} features differ");
}

#[test]
fn mlp_gradient_x_input_matches_finite_differences() {
    let model = FixtureMlp::load(fixture("mlp.weights.safetensors")).unwrap();
    let mut ws = model.workspace(1).unwrap();
    for seed in 0..5 {
        let x = values(seed, 16);
        let e = model.gradient_x_input(&mut ws, &x, lrp::Target::Predicted).unwrap();
        let (gxi, target) = (e.relevance.to_vec(), e.targets[0]);
        let mut probe = model.workspace(1).unwrap();
        check_gradient(16, &x, &gxi, target, |x| model.predict(&mut probe, x).unwrap()[target]);
    }
}

#[test]
fn cnn_gradient_x_input_matches_finite_differences() {
    let model = FixtureCnn::load(fixture("cnn.weights.safetensors")).unwrap();
    let cases = Cases::load(&fixture("cnn.cases.safetensors"));
    let mut ws = model.workspace(3).unwrap();
    let e = model.gradient_x_input_batch(&mut ws, cases.get("input"), 3, lrp::Target::Class(2)).unwrap();
    let gxi = e.relevance.to_vec();
    assert_eq!(e.targets, &[2, 2, 2]);
    let mut probe = model.workspace(1).unwrap();
    for i in 0..3 {
        let x = &cases.get("input")[i * 768..(i + 1) * 768];
        check_gradient(768, x, &gxi[i * 768..(i + 1) * 768], 2, |x| model.predict(&mut probe, x).unwrap()[2]);
    }
}

fn softmax(logits: &[f32], c: usize) -> f32 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let s: f32 = logits.iter().map(|l| (l - m).exp()).sum();
    (logits[c] - m).exp() / s
}

#[test]
fn cnn_occlusion_equals_direct_computation() {
    let model = FixtureCnn::load(fixture("cnn.weights.safetensors")).unwrap();
    let cases = Cases::load(&fixture("cnn.cases.safetensors"));
    let input = cases.get("input");
    let mut ws = model.workspace(3).unwrap();
    let e = model.occlusion_batch(&mut ws, input, 3, lrp::Target::Predicted, &[3, 4, 4]).unwrap();
    let (occ, targets, logits) = (e.relevance.to_vec(), e.targets.to_vec(), e.logits.to_vec());
    assert_eq!(targets, cases.target);
    assert_eq!(logits, model.predict_batch(&mut model.workspace(3).unwrap(), input, 3).unwrap());
    let mut probe = model.workspace(1).unwrap();
    for i in 0..3 {
        let x = &input[i * 768..(i + 1) * 768];
        let base = softmax(model.predict(&mut probe, x).unwrap(), targets[i]);
        for (wy, wx) in (0..4).flat_map(|a| (0..4).map(move |b| (a, b))) {
            let mut occluded = x.to_vec();
            let idx = |c: usize, y: usize, xx: usize| c * 256 + (wy * 4 + y) * 16 + wx * 4 + xx;
            for (c, y, xx) in (0..3).flat_map(|c| (0..4).flat_map(move |y| (0..4).map(move |xx| (c, y, xx)))) {
                occluded[idx(c, y, xx)] = 0.0;
            }
            let want = base - softmax(model.predict(&mut probe, &occluded).unwrap(), targets[i]);
            for (c, y, xx) in (0..3).flat_map(|c| (0..4).flat_map(move |y| (0..4).map(move |xx| (c, y, xx)))) {
                assert!((occ[i * 768 + idx(c, y, xx)] - want).abs() <= 1e-6, "sample {i}, window ({wy}, {wx})");
            }
        }
    }
}

#[test]
fn mlp_occlusion_of_single_features() {
    let model = FixtureMlp::load(fixture("mlp.weights.safetensors")).unwrap();
    let x = values(42, 16);
    let mut ws = model.workspace(1).unwrap();
    let occ = model.occlusion(&mut ws, &x, 1usize, &[1]).unwrap().relevance.to_vec();
    let mut probe = model.workspace(1).unwrap();
    let base = softmax(model.predict(&mut probe, &x).unwrap(), 1);
    for i in 0..16 {
        let mut o = x.clone();
        o[i] = 0.0;
        let want = base - softmax(model.predict(&mut probe, &o).unwrap(), 1);
        assert!((occ[i] - want).abs() <= 1e-6, "feature {i}: {} vs {want}", occ[i]);
    }
    let err = model.occlusion(&mut ws, &x, 1usize, &[1, 1]).unwrap_err();
    assert!(err.to_string().contains("occlusion window"), "{err}");
}
