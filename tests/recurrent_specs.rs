//! LSTM and GRU networks written as specs (stacked, bidirectional, every output; LRP-all and
//! LRP-half): with all biases zero and a tiny epsilon, the relevance of the embeddings sums to
//! the explained logit. LRP-prop's shares `x / (x_g + x_s)` grow without bound where gate and
//! signal nearly cancel, so its conservation is tested in `lrp-runtime/tests/recurrent.rs`
//! against a float64 reference that can tell such cases apart.

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
    ($test:ident, $model:ident, $gates:literal) => {
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
    };
}

conserves!(lstm_last_all_conserves, LstmLast, 4);
conserves!(lstm_mean_all_conserves, LstmMean, 4);
conserves!(lstm_max_half_conserves, LstmMaxHalf, 4);
conserves!(gru_last_all_conserves, GruLast, 3);
conserves!(gru_mean_half_conserves, GruMeanHalf, 3);
conserves!(gru_max_all_conserves, GruMax, 3);
