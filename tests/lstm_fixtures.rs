//! The LSTM-LRP reference fixtures (unidirectional and bidirectional), reproduced by the specs in
//! `specs/`: LRP-all relevance, gradient x input and occlusion, per sequence.

#[macro_use]
mod common;
use common::{Cases, assert_close_per_sample, assert_rel_close};

lrp::network!(file = "specs/text_lstm.lrp");
lrp::network!(file = "specs/bilstm.lrp");

/// `tests/fixtures/<name>` (in `LRP_FIXTURES_DIR` when set: see `common::fixture`).
fn fixture(name: &str) -> String {
    common::fixture(&format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR")))
}

macro_rules! check_fixture {
    ($test:ident, $model:ident, $name:literal) => {
        #[test]
        fn $test() {
            let cases = Cases::load(&fixture(concat!($name, ".cases.safetensors")));
            let model = $model::load_strict(fixture(concat!($name, ".weights.safetensors"))).expect("load");
            let mut ws = model.workspace(16, 4).unwrap();
            let classes = $model::CLASSES;
            let e = $model::EMBEDDING_DIM;
            for (n, &target) in cases.target.iter().enumerate() {
                let tokens = cases.ints(&format!("tokens.{n}")).to_vec();
                let what = format!("{} sequence {n}", $name);
                let lrp = model.explain(&mut ws, &tokens, lrp::Target::Predicted).expect("explain");
                assert_eq!(lrp.targets, &[target], "{what}");
                assert_rel_close(&what, lrp.logits, &cases.get("logits")[n * classes..(n + 1) * classes], 1e-5);
                assert_eq!(lrp.relevance.len(), tokens.len() * e);
                assert_close_per_sample(&what, lrp.relevance, cases.get(&format!("lrp.{n}")), 1, 1e-4);
                let gxi = model.gradient_x_input(&mut ws, &tokens, target).expect("gradient x input");
                assert_close_per_sample(&what, gxi.relevance, cases.get(&format!("gxi.{n}")), 1, 1e-4);
                let occ = model.occlusion(&mut ws, &tokens, target).expect("occlusion");
                let want = cases.get(&format!("occlusion.{n}"));
                assert_eq!(occ.relevance.len(), tokens.len());
                for (t, (a, b)) in occ.relevance.iter().zip(want).enumerate() {
                    assert!((a - b).abs() <= 1e-5, "{what}, token {t}: occlusion {a} vs {b}");
                }
            }
        }

        /// The GPU model (`LRP_DEVICE` selects the device; the emulated one by default): the
        /// same fixture with the same tolerances (LRP relevance, logits and targets per
        /// sequence and as a batch, gradient x input, occlusion), then every method against the
        /// CPU model.
        #[cfg(feature = "cuda")]
        mod $test {
            use super::common::{Cases, assert_close_per_sample, assert_rel_close};

            #[test]
            fn on_the_gpu_backend() {
                let cases = Cases::load(&super::fixture(concat!($name, ".cases.safetensors")));
                let model =
                    super::$model::load_strict(super::fixture(concat!($name, ".weights.safetensors"))).expect("load");
                let device = super::common::gpu_device();
                let gpu = model.to_gpu(&device).expect("upload");
                let mut gws = gpu.workspace(16, 4).unwrap();
                let (classes, e) = (super::$model::CLASSES, super::$model::EMBEDDING_DIM);
                let sequences: Vec<Vec<usize>> =
                    (0..cases.batch()).map(|n| cases.ints(&format!("tokens.{n}")).to_vec()).collect();
                let mut worst = 0.0f32;
                for (n, (tokens, &target)) in sequences.iter().zip(&cases.target).enumerate() {
                    let what = format!("{} sequence {n} on the GPU backend", $name);
                    let lrp = gpu.explain(&mut gws, tokens, lrp::Target::Predicted).expect("explain");
                    assert_eq!(lrp.targets, &[target], "{what}");
                    assert_rel_close(&what, lrp.logits, &cases.get("logits")[n * classes..(n + 1) * classes], 1e-5);
                    assert_eq!(lrp.relevance.len(), tokens.len() * e);
                    let err = assert_close_per_sample(&what, lrp.relevance, cases.get(&format!("lrp.{n}")), 1, 1e-4);
                    worst = worst.max(err);
                    let gxi = gpu.gradient_x_input(&mut gws, tokens, target).expect("gradient x input");
                    assert_eq!(gxi.targets, &[target], "{what}");
                    assert_close_per_sample(&what, gxi.relevance, cases.get(&format!("gxi.{n}")), 1, 1e-4);
                    let occ = gpu.occlusion(&mut gws, tokens, target).expect("occlusion");
                    assert_eq!(occ.relevance.len(), tokens.len());
                    for (t, (a, b)) in occ.relevance.iter().zip(cases.get(&format!("occlusion.{n}"))).enumerate() {
                        assert!((a - b).abs() <= 1e-5, "{what}, token {t}: occlusion {a} vs {b}");
                    }
                }
                let refs: Vec<&[usize]> = sequences.iter().map(Vec::as_slice).collect();
                let logits = gpu.predict_batch(&mut gws, &refs).expect("predict_batch").to_vec();
                assert_rel_close("logits of the batch", &logits, cases.get("logits"), 1e-5);
                let batch = gpu.explain_batch(&mut gws, &refs, lrp::Target::Predicted).expect("explain_batch");
                assert_eq!(batch.targets, &cases.target[..]);
                assert_rel_close("logits of the batch", batch.logits, cases.get("logits"), 1e-5);
                for n in 0..refs.len() {
                    let what = format!("{} sequence {n} of the batch on the GPU backend", $name);
                    assert_close_per_sample(&what, batch.sample(n), cases.get(&format!("lrp.{n}")), 1, 1e-4);
                }
                eprintln!("{} on {}: worst max|R - R_ref| / max|R_ref| = {worst:.2e}", $name, device.name());
                check_gpu_tokens!(&model, &gpu, &refs);
            }
        }
    };
}

check_fixture!(lstm_matches_the_reference, TextLstm, "lstm");
check_fixture!(bilstm_matches_the_reference, BiLstm, "bilstm");

#[test]
fn batches_of_different_lengths_agree_with_single_sequences() {
    let cases = Cases::load(&fixture("bilstm.cases.safetensors"));
    let model = BiLstm::load(fixture("bilstm.weights.safetensors")).unwrap();
    let sequences: Vec<Vec<usize>> = (0..2).map(|n| cases.ints(&format!("tokens.{n}")).to_vec()).collect();
    let refs: Vec<&[usize]> = sequences.iter().map(|s| s.as_slice()).collect();
    let mut ws = model.workspace(16, 2).unwrap();
    let logits = model.predict_batch(&mut ws, &refs).unwrap().to_vec();
    assert_rel_close("batch logits", &logits, cases.get("logits"), 1e-5);
    let batch = model.explain_batch(&mut ws, &refs, lrp::Target::Predicted).unwrap();
    assert_eq!(batch.lengths, &[sequences[0].len(), sequences[1].len()]);
    assert_eq!(batch.targets, &cases.target[..]);
    let (first, second) = (batch.sample(0).to_vec(), batch.sample(1).to_vec());
    let words: Vec<f32> = batch.token_relevance(1).collect();
    assert_eq!(words.len(), sequences[1].len());
    assert_eq!(model.explain(&mut ws, refs[0], lrp::Target::Predicted).unwrap().relevance, &first[..]);
    assert_eq!(model.explain(&mut ws, refs[1], lrp::Target::Predicted).unwrap().relevance, &second[..]);
}

#[test]
fn sequence_errors() {
    let model = TextLstm::load(fixture("lstm.weights.safetensors")).unwrap();
    let mut ws = model.workspace(4, 1).unwrap();
    assert_eq!(
        model.predict(&mut ws, &[1, 2, 3, 4, 5]).unwrap_err(),
        lrp::Error::SequenceLength { length: 5, capacity: 4 }
    );
    assert_eq!(model.predict(&mut ws, &[]).unwrap_err(), lrp::Error::SequenceLength { length: 0, capacity: 4 });
    let err = model.explain(&mut ws, &[1, 20, 3], lrp::Target::Predicted).unwrap_err();
    assert_eq!(err, lrp::Error::TokenOutOfRange { position: 1, token: 20, vocab: 20 });
    assert!(err.to_string().contains("position 1"), "{err}");
    let err = model.predict_batch(&mut ws, &[&[1], &[2]]).unwrap_err();
    assert_eq!(err, lrp::Error::BatchCapacity { capacity: 1, requested: 2 });
    let err = model.predict_batch(&mut ws, &[]).unwrap_err();
    assert_eq!(err.to_string(), "invalid batch size of `TextLstm`: no sequences, but a batch holds at least one");
    assert!(model.explain_batch(&mut ws, &[], lrp::Target::Predicted).is_err());
    let err = model.explain_from(&mut ws, &[1, 2], &[0.0, 1.0, f32::INFINITY, 0.0, 0.0]).unwrap_err();
    assert_eq!(err.to_string(), "invalid output relevance of `TextLstm`: value inf at index 2 is not finite");
}
