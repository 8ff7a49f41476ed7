//! LSTM and GRU networks written as specs (stacked, bidirectional, every output; LRP-all and
//! LRP-half): with all biases zero and a tiny epsilon, the relevance of the embeddings sums to
//! the explained logit. LRP-prop's shares `x / (x_g + x_s)` grow without bound where gate and
//! signal nearly cancel, so its conservation is tested in `lrp-runtime/tests/recurrent.rs`
//! against a float64 reference that can tell such cases apart.
//!
//! With the feature `cuda`, each configuration's GPU model (and two of LRP-prop) against its
//! CPU model on the same random weights and sequences of several lengths.

#[macro_use]
mod common;
use lrp::runtime::weights::serialize_f32;

macro_rules! recurrent_net {
    ($model:ident, $cell:ident, $gates:literal, $output:ident, $rule:ident) => {
        lrp::network! {
            $model(input = tokens, composite = Epsilon(1e-9)) {
                embedding: Embedding(11, 5),
                rnn: $cell(5, 6, num_layers = 2, bidirectional = true, output = $output, rule = $rule(epsilon = 1e-9)),
                head: Linear(12, 3, bias = false),
            }
        }
    };
}

recurrent_net!(LstmLast, LSTM, 4, Last, LrpAll);
recurrent_net!(LstmMean, LSTM, 4, Mean, LrpAll);
recurrent_net!(LstmMaxHalf, LSTM, 4, Max, LrpHalf);
recurrent_net!(GruLast, GRU, 3, Last, LrpAll);
recurrent_net!(GruMeanHalf, GRU, 3, Mean, LrpHalf);
recurrent_net!(GruMax, GRU, 3, Max, LrpAll);

/// Deterministic pseudo-random values in [-scale, scale].
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(7);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

/// Weights for a 2-layer bidirectional cell with `gates` gates and zero biases.
fn weights(gates: usize, seed: u64) -> Vec<u8> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("embedding.weight".into(), vec![11, 5], values(seed, 55, 1.0)),
        ("head.weight".into(), vec![3, 12], values(seed + 1, 36, 0.5)),
    ];
    for layer in 0..2 {
        for sfx in ["", "_reverse"] {
            let input = if layer == 0 { 5 } else { 12 };
            let k = seed + 10 * layer as u64 + sfx.len() as u64;
            tensors.push((
                format!("rnn.weight_ih_l{layer}{sfx}"),
                vec![gates * 6, input],
                values(k + 2, gates * 6 * input, 0.6),
            ));
            tensors.push((format!("rnn.weight_hh_l{layer}{sfx}"), vec![gates * 6, 6], values(k + 3, gates * 36, 0.6)));
            tensors.push((format!("rnn.bias_ih_l{layer}{sfx}"), vec![gates * 6], vec![0.0; gates * 6]));
            tensors.push((format!("rnn.bias_hh_l{layer}{sfx}"), vec![gates * 6], vec![0.0; gates * 6]));
        }
    }
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    serialize_f32(&refs).unwrap()
}

macro_rules! conserves {
    ($test:ident, $model:ident, $gates:literal, $relevance:literal) => {
        #[test]
        fn $test() {
            let mut checked = 0;
            for seed in 0..6u64 {
                let model = $model::from_bytes(&weights($gates, seed)).expect("load");
                let mut ws = model.workspace(9, 1).unwrap();
                let tokens: Vec<usize> = (0..(4 + seed as usize)).map(|t| (t * 7 + seed as usize) % 11).collect();
                let e = model.explain(&mut ws, &tokens, lrp::Target::Predicted).expect("explain");
                let logit = e.logits[e.targets[0]];
                assert_eq!(e.relevance.len(), tokens.len() * 5);
                assert!(e.relevance.iter().all(|r| r.is_finite()));
                // Tiny logits make the ratio meaningless.
                if logit.abs() < 1e-2 {
                    continue;
                }
                let total: f32 = e.token_relevance(0).sum();
                assert!((total - logit).abs() <= 1e-3 * logit.abs(), "seed {seed}: sum {total} vs logit {logit}");
                checked += 1;
            }
            assert!(checked >= 4, "only {checked} seeds had a usable logit");
        }

        on_the_gpu!($test, $model, $gates, $relevance, true);
    };
}

/// `$test::on_the_gpu_backend`: the GPU model of `$model` (`LRP_DEVICE` selects the device; the
/// emulated one by default) against the CPU model, for three seeds of weights, on a batch of
/// sequences of different lengths: every method, logits within 1e-5 relative; relevance within
/// `1e-4 max|R|` per sequence where `$relevance` (LRP-all). LRP-half and LRP-prop amplify float
/// rounding without bound where gate and signal nearly cancel (see above), so there the GPU's
/// relevance is checked by conservation (`$conserves`) as the CPU's is, not against the CPU's.
macro_rules! on_the_gpu {
    ($test:ident, $model:ident, $gates:literal, $relevance:literal, $conserves:literal) => {
        #[cfg(feature = "cuda")]
        mod $test {
            #[test]
            fn on_the_gpu_backend() {
                let device = super::common::gpu_device();
                let mut worst = 0.0f32;
                for seed in 0..3u64 {
                    let model = super::$model::from_bytes(&super::weights($gates, seed)).expect("load");
                    let gpu = model.to_gpu(&device).expect("upload");
                    let sequences: Vec<Vec<usize>> = [4, 1, 9, 6]
                        .iter()
                        .enumerate()
                        .map(|(s, &len)| (0..len).map(|t| (t * 7 + s * 3 + seed as usize) % 11).collect())
                        .collect();
                    let refs: Vec<&[usize]> = sequences.iter().map(Vec::as_slice).collect();
                    worst = worst.max(check_gpu_tokens!(&model, &gpu, &refs, $relevance));
                }
                // The conservation the CPU test checks, on the GPU model.
                let mut checked = 0;
                for seed in (0..6u64).filter(|_| $conserves) {
                    let model = super::$model::from_bytes(&super::weights($gates, seed)).expect("load");
                    let gpu = model.to_gpu(&device).expect("upload");
                    let mut gws = gpu.workspace(9, 1).unwrap();
                    let tokens: Vec<usize> = (0..(4 + seed as usize)).map(|t| (t * 7 + seed as usize) % 11).collect();
                    let e = gpu.explain(&mut gws, &tokens, lrp::Target::Predicted).expect("explain");
                    let logit = e.logits[e.targets[0]];
                    if logit.abs() < 1e-2 {
                        continue;
                    }
                    let total: f32 = e.token_relevance(0).sum();
                    assert!(
                        (total - logit).abs() <= 1e-3 * logit.abs(),
                        "GPU, seed {seed}: sum {total} vs logit {logit}"
                    );
                    checked += 1;
                }
                assert!(!$conserves || checked >= 4, "only {checked} seeds had a usable logit");
                eprintln!(
                    "{} on {}: worst max|R - R_cpu| / max|R_cpu| = {worst:.2e}",
                    stringify!($model),
                    device.name()
                );
            }
        }
    };
}

conserves!(lstm_last_all_conserves, LstmLast, 4, true);
conserves!(lstm_mean_all_conserves, LstmMean, 4, true);
conserves!(lstm_max_half_conserves, LstmMaxHalf, 4, false);
conserves!(gru_last_all_conserves, GruLast, 3, true);
conserves!(gru_mean_half_conserves, GruMeanHalf, 3, false);
conserves!(gru_max_all_conserves, GruMax, 3, true);

/// LRP-prop (its conservation is tested in `lrp-runtime/tests/recurrent.rs`): the GPU model
/// against the CPU model only.
macro_rules! prop_net {
    ($model:ident, $cell:ident, $output:ident) => {
        #[cfg(feature = "cuda")]
        lrp::network! {
            $model(input = tokens, composite = Epsilon(1e-9)) {
                embedding: Embedding(11, 5),
                rnn: $cell(5, 6, num_layers = 2, bidirectional = true, output = $output, rule = LrpProp(epsilon = 0.001)),
                head: Linear(12, 3, bias = false),
            }
        }
    };
}

prop_net!(LstmLastProp, LSTM, Last);
prop_net!(GruMaxProp, GRU, Max);
prop_net!(GruMeanProp, GRU, Mean);

on_the_gpu!(lstm_last_prop, LstmLastProp, 4, false, false);
on_the_gpu!(gru_max_prop, GruMaxProp, 3, false, false);
on_the_gpu!(gru_mean_prop, GruMeanProp, 3, false, false);
