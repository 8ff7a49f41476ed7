//! Helpers shared by the integration tests: reading the reference fixtures and comparing.
#![allow(dead_code)]

use std::collections::HashMap;

/// The tensors of a `*.cases.safetensors` fixture: f32 and int64 tensors by name; `target`.
pub struct Cases {
    pub f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub ints: HashMap<String, Vec<usize>>,
    pub target: Vec<usize>,
}

/// A fixture's path: with `LRP_FIXTURES_DIR` set, everything up to and including
/// `/tests/fixtures` in `path` is replaced by that folder (binaries built here and run on
/// another machine, see `tools/gpu_check.sh`); else `path` itself.
pub fn fixture(path: &str) -> String {
    const MARK: &str = "/tests/fixtures";
    match (std::env::var("LRP_FIXTURES_DIR"), path.find(MARK)) {
        (Ok(dir), Some(at)) if !dir.is_empty() => format!("{}{}", dir.trim_end_matches('/'), &path[at + MARK.len()..]),
        _ => path.to_string(),
    }
}

impl Cases {
    pub fn load(path: &str) -> Cases {
        let path = &fixture(path);
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid fixture");
        let mut f32s = HashMap::new();
        let mut ints = HashMap::new();
        for (name, view) in st.tensors() {
            match view.dtype() {
                safetensors::Dtype::I64 => {
                    let data = view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize);
                    ints.insert(name.clone(), data.collect());
                }
                safetensors::Dtype::F32 => {
                    let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                    f32s.insert(name.clone(), (view.shape().to_vec(), data));
                }
                other => panic!("unexpected dtype {other:?} for {name}"),
            }
        }
        let target = ints.get("target").cloned().unwrap_or_default();
        Cases { f32s, ints, target }
    }

    pub fn get(&self, name: &str) -> &[f32] {
        &self.f32s.get(name).unwrap_or_else(|| panic!("fixture has no `{name}`")).1
    }

    pub fn ints(&self, name: &str) -> &[usize] {
        self.ints.get(name).unwrap_or_else(|| panic!("fixture has no `{name}`"))
    }

    pub fn batch(&self) -> usize {
        self.target.len()
    }
}

/// Per sample: `max |got - want| <= tol * max |want|`; returns the worst ratio seen.
pub fn assert_close_per_sample(what: &str, got: &[f32], want: &[f32], n: usize, tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let len = want.len() / n;
    let mut worst = 0.0f32;
    for i in 0..n {
        let (g, w) = (&got[i * len..(i + 1) * len], &want[i * len..(i + 1) * len]);
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = g.iter().zip(w).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= tol * scale, "{what}, sample {i}: max error {err:e} > {tol:e} * max|ref| {scale:e}");
        worst = worst.max(err / scale);
    }
    worst
}

/// Element-wise relative closeness: `|got - want| <= tol * max(|want|, 1e-3)`.
pub fn assert_rel_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * b.abs().max(1e-3), "{what}[{i}]: {a} vs {b}");
    }
}

/// Deterministic values in about [-scale, scale] (the naive-reference tests' inputs and weights).
pub fn values(n: usize, salt: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + salt * 104_729) % 199) as f32 / 99.0 - 1.0) * scale).collect()
}

pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// The stabiliser of the rules: `z + eps sign(z)`, `sign(0) = +1`.
pub fn stab(z: f64, eps: f64) -> f64 {
    if z >= 0.0 { z + eps } else { z - eps }
}

/// `|got - want| <= tol * max|want|` element-wise, against a float64 reference.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - w).abs() <= tol * scale, "{what}[{i}]: {g} vs {w} (max |want| {scale})");
    }
}

/// `x_i * d f_c / d x_i` by central differences of `f`.
pub fn finite_gxi(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], c: usize) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[i] += h;
            down[i] -= h;
            x[i] * (f(&up)[c] - f(&down)[c]) / (2.0 * h)
        })
        .collect()
}

/// Conservation: the input's relevance sums to the explained logit (biases zero), within
/// `1e-4` relative; the logit must be far from zero for the check to mean something.
pub fn assert_conserved(explanation: lrp::Result<lrp::Explanation<'_>>) {
    let e = explanation.expect("explain");
    let logit = e.logits[e.targets[0]];
    let total: f64 = e.relevance.iter().map(|&r| r as f64).sum();
    assert!(logit.abs() > 0.05, "a logit far from zero: {logit}");
    assert!((total - logit as f64).abs() <= 1e-4 * logit.abs() as f64, "sum {total} vs logit {logit}");
}

/// A dense layer in f64, for the naive references.
pub struct Dense {
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    pub inputs: usize,
}

impl Dense {
    pub fn forward(&self, x: &[f64]) -> Vec<f64> {
        let row = |k: usize| (0..self.inputs).map(|j| self.w[k * self.inputs + j] * x[j]).sum::<f64>() + self.b[k];
        (0..self.b.len()).map(row).collect()
    }

    /// LRP-epsilon: `R_j = x_j sum_k w_kj R_k / stab(z_k)`.
    pub fn epsilon(&self, x: &[f64], r: &[f64], eps: f64) -> Vec<f64> {
        let z = self.forward(x);
        (0..self.inputs)
            .map(|j| (0..self.b.len()).map(|k| x[j] * self.w[k * self.inputs + j] * r[k] / stab(z[k], eps)).sum())
            .collect()
    }
}

/// Dense layers `(name, out, in)` with deterministic weights: layer `k`'s `weight` is
/// `values(out in, w_salt + k, w_scale)`, its `bias` `values(out, b_salt + k, 0.2)` (zero if
/// `!bias`); as tensors named after the layers and as f64 layers.
pub fn dense_layers(
    layers: &[(&str, usize, usize)],
    (w_salt, b_salt, w_scale): (usize, usize, f32),
    bias: bool,
) -> (Vec<(String, lrp::Tensor)>, Vec<Dense>) {
    let (mut tensors, mut dense) = (Vec::new(), Vec::new());
    for (k, &(name, out, inp)) in layers.iter().enumerate() {
        let w = values(out * inp, w_salt + k, w_scale);
        let b = if bias { values(out, b_salt + k, 0.2) } else { vec![0.0; out] };
        tensors.push((format!("{name}.weight"), lrp::Tensor { shape: vec![out, inp], data: w.clone() }));
        tensors.push((format!("{name}.bias"), lrp::Tensor { shape: vec![out], data: b.clone() }));
        dense.push(Dense { w: f64s(&w), b: f64s(&b), inputs: inp });
    }
    (tensors, dense)
}

/// The device GPU tests run on: `LRP_DEVICE=cuda` a GPU, else the emulated device (which runs
/// the same kernels on the CPU). Says which, so that a run shows what it checked.
#[cfg(feature = "cuda")]
pub fn gpu_device() -> std::sync::Arc<lrp::runtime::gpu::Device> {
    let device = lrp::runtime::gpu::Device::from_env().expect("the device LRP_DEVICE names");
    eprintln!("GPU backend on device: {}", device.name());
    std::sync::Arc::new(device)
}

/// A model's GPU model against the fixture (`cases`, relevance `rel_key`: targets, logits
/// within 1e-5, relevance within `1e-4 max|R|` per sample) and against the CPU model
/// (gradient x input, explain_from, predict); returns the worst relevance error.
#[cfg(feature = "cuda")]
pub fn check_gpu_model<M>(model: &M, cases: &Cases, rel_key: &str) -> f32
where
    M: lrp::TensorModel + lrp::runtime::gpu::ToGpu,
{
    use lrp::runtime::gpu::GpuTensorModel;
    let (n, input, classes) = (cases.batch(), cases.get("input"), M::CLASSES);
    let device = gpu_device();
    let gpu = model.to_gpu(&device).expect("upload");
    let mut gws = gpu.workspace(n).unwrap();
    let mut ws = model.workspace_for(lrp::Capacity::samples(n)).unwrap();
    let e = gpu.explain_batch(&mut gws, input, n, lrp::Target::Predicted).expect("explain");
    assert_eq!(e.targets, &cases.target[..]);
    assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
    let worst = assert_close_per_sample(rel_key, e.relevance, cases.get(rel_key), n, 1e-4);
    eprintln!("{rel_key} on {}: worst max|R - R_ref| / max|R_ref| = {worst:.2e}", device.name());
    // The CPU model one sample at a time (the trait's methods), the GPU model on the batch.
    let (target, len) = (lrp::Target::Class(1), M::INPUT_LEN);
    let samples = || input.chunks_exact(len).take(n);
    let want: Vec<f32> =
        samples().flat_map(|x| model.gradient_x_input(&mut ws, x, target).unwrap().relevance.to_vec()).collect();
    let got = gpu.gradient_x_input_batch(&mut gws, input, n, target).unwrap();
    assert_close_per_sample("gradient x input", got.relevance, &want, n, 1e-4);
    let given: Vec<f32> = (0..n * classes).map(|i| i as f32 * 0.25 - 1.0).collect();
    let want: Vec<f32> = samples()
        .zip(given.chunks_exact(classes))
        .flat_map(|(x, r)| model.explain_from(&mut ws, x, r).unwrap().relevance.to_vec())
        .collect();
    let got = gpu.explain_from_batch(&mut gws, input, n, &given).unwrap();
    assert_close_per_sample("explain_from", got.relevance, &want, n, 1e-4);
    let one = &input[M::INPUT_LEN..2 * M::INPUT_LEN];
    let want = model.predict_batch(&mut ws, one, 1).unwrap().to_vec();
    assert_rel_close("predict", gpu.predict_batch(&mut gws, one, 1).unwrap(), &want, 1e-5);
    worst
}

/// A model's GPU gradient x input (for the predicted class) against the fixture (`cases`,
/// relevance `rel_key`: targets, logits within 1e-5, relevance within `1e-4 max|R|` per
/// sample); returns the worst relevance error.
#[cfg(feature = "cuda")]
pub fn check_gpu_gradient<M>(model: &M, cases: &Cases, rel_key: &str) -> f32
where
    M: lrp::TensorModel + lrp::runtime::gpu::ToGpu,
{
    use lrp::runtime::gpu::GpuTensorModel;
    let (n, input) = (cases.batch(), cases.get("input"));
    let device = gpu_device();
    let gpu = model.to_gpu(&device).expect("upload");
    let mut gws = gpu.workspace(n).unwrap();
    let e = gpu.gradient_x_input_batch(&mut gws, input, n, lrp::Target::Predicted).expect("gradient x input");
    assert_eq!(e.targets, &cases.target[..]);
    assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
    let worst = assert_close_per_sample(rel_key, e.relevance, cases.get(rel_key), n, 1e-4);
    eprintln!("{rel_key} on {}: worst max|R - R_ref| / max|R_ref| = {worst:.2e}", device.name());
    worst
}

/// A token model's GPU model (`$gpu`) against its CPU model (`$model`) on `$sequences`
/// (`&[&[usize]]`, lengths may differ): the batch (logits within 1e-5, targets, lengths, each
/// sequence's relevance within `1e-4 max|R|`), then per sequence predict, explain for a class,
/// gradient x input and explain_from. Evaluates to the worst relevance error of the batch.
/// (Token models' GPU models share no trait: a macro.)
#[cfg(feature = "cuda")]
#[allow(unused_macros)]
macro_rules! check_gpu_tokens {
    ($model:expr, $gpu:expr, $sequences:expr) => {
        check_gpu_tokens!($model, $gpu, $sequences, true)
    };
    // `relevance`: compare the LRP relevance too (false where the rule makes it ill-conditioned:
    // LRP-half and LRP-prop amplify float rounding without bound where gate and signal nearly
    // cancel, so two float32 computations need not agree; the logits and gradients still must).
    ($model:expr, $gpu:expr, $sequences:expr, $relevance:expr) => {{
        use crate::common::{assert_close_per_sample, assert_rel_close};
        let (model, gpu) = ($model, $gpu);
        let sequences: &[&[usize]] = $sequences;
        let n = sequences.len();
        let max_len = sequences.iter().map(|s| s.len()).max().expect("a sequence");
        let (mut ws, mut gws) = (model.workspace(max_len, n).unwrap(), gpu.workspace(max_len, n).unwrap());
        let logits = model.predict_batch(&mut ws, sequences).unwrap().to_vec();
        let classes = logits.len() / n;
        assert_rel_close("predict_batch", gpu.predict_batch(&mut gws, sequences).unwrap(), &logits, 1e-5);
        let want = model.explain_batch(&mut ws, sequences, lrp::Target::Predicted).unwrap();
        let (targets, lengths) = (want.targets.to_vec(), want.lengths.to_vec());
        let samples: Vec<Vec<f32>> = (0..n).map(|i| want.sample(i).to_vec()).collect();
        let got = gpu.explain_batch(&mut gws, sequences, lrp::Target::Predicted).unwrap();
        assert_eq!(got.targets, &targets[..], "targets");
        assert_eq!(got.lengths, &lengths[..], "lengths");
        assert_rel_close("logits of the batch", got.logits, &logits, 1e-5);
        let mut worst = 0.0f32;
        for (i, want) in samples.iter().enumerate().filter(|_| $relevance) {
            let what = format!("relevance of sequence {i} in the batch");
            worst = worst.max(assert_close_per_sample(&what, got.sample(i), want, 1, 1e-4));
        }
        for (i, tokens) in sequences.iter().enumerate() {
            let want = model.predict(&mut ws, tokens).unwrap().to_vec();
            assert_rel_close(&format!("predict {i}"), gpu.predict(&mut gws, tokens).unwrap(), &want, 1e-5);
            let target = lrp::Target::Class((i + 1) % classes);
            let want = model.explain(&mut ws, tokens, target).unwrap().relevance.to_vec();
            let got = gpu.explain(&mut gws, tokens, target).unwrap();
            if $relevance {
                assert_close_per_sample(&format!("explain {i}"), got.relevance, &want, 1, 1e-4);
            }
            let want = model.gradient_x_input(&mut ws, tokens, target).unwrap().relevance.to_vec();
            let got = gpu.gradient_x_input(&mut gws, tokens, target).unwrap();
            assert_close_per_sample(&format!("gradient x input {i}"), got.relevance, &want, 1, 1e-4);
            let given: Vec<f32> = (0..classes).map(|c| (c + i) as f32 * 0.5 - 1.0).collect();
            let want = model.explain_from(&mut ws, tokens, &given).unwrap().relevance.to_vec();
            let got = gpu.explain_from(&mut gws, tokens, &given).unwrap();
            if $relevance {
                assert_close_per_sample(&format!("explain_from {i}"), got.relevance, &want, 1, 1e-4);
            }
        }
        worst
    }};
}
