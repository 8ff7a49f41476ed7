//! Every CNN configuration of the Zennit fixtures (BatchNorm folded, max- and average pooling),
//! each written as a spec; Zennit's composites map to ours by name.

mod common;
use common::{Cases, assert_close_per_sample, assert_rel_close};

const WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cnn.weights.safetensors");
const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cnn.cases.safetensors");

macro_rules! cnn_config {
    ($test:ident, $model:ident, $config:literal, composite = $composite:expr) => {
        lrp::network! {
            $model(input = [3, 16, 16], composite = $composite) {
                features: {
                    Conv2d(3, 8, kernel_size = 3, padding = 1),
                    BatchNorm2d(8),
                    ReLU,
                    MaxPool2d(2),
                    Conv2d(8, 16, kernel_size = 3, padding = 1),
                    BatchNorm2d(16),
                    ReLU,
                    AvgPool2d(2),
                },
                Flatten,
                classifier: {
                    Linear(256, 32),
                    ReLU,
                    Linear(32, 10),
                },
            }
        }

        #[test]
        fn $test() {
            check(concat!("rel.", $config), |ws_cap| {
                let model = $model::load_strict(common::fixture(WEIGHTS)).expect("weights load");
                let mut ws = model.workspace(ws_cap).unwrap();
                let cases = Cases::load(CASES);
                let e = model
                    .explain_batch(&mut ws, cases.get("input"), cases.batch(), lrp::Target::Predicted)
                    .expect("explain");
                (e.logits.to_vec(), e.targets.to_vec(), e.relevance.to_vec())
            });
        }

        /// The GPU model (`LRP_DEVICE` selects the device; the emulated one by default):
        /// the same fixture, and every method against the CPU model.
        #[cfg(feature = "cuda")]
        mod $test {
            #[test]
            fn on_the_gpu_backend() {
                let model = super::$model::load_strict(super::common::fixture(super::WEIGHTS)).expect("weights load");
                super::common::check_gpu_model(&model, &super::Cases::load(super::CASES), concat!("rel.", $config));
            }
        }
    };
}

fn check(config: &str, run: impl Fn(usize) -> (Vec<f32>, Vec<usize>, Vec<f32>)) {
    let cases = Cases::load(CASES);
    let n = cases.batch();
    let (logits, targets, relevance) = run(n);
    assert_eq!(targets, cases.target);
    assert_rel_close("logits", &logits, cases.get("logits"), 1e-5);
    assert_close_per_sample(config, &relevance, cases.get(config), n, 1e-4);
}

cnn_config!(
    epsilon_gamma_box,
    CnnEpsilonGammaBox,
    "epsilon_gamma_box",
    composite = EpsilonGammaBox(low = -3.0, high = 3.0)
);
cnn_config!(epsilon_plus, CnnEpsilonPlus, "epsilon_plus", composite = EpsilonPlus);
cnn_config!(epsilon_alpha2beta1, CnnEpsilonAlpha2Beta1, "epsilon_alpha2beta1", composite = EpsilonAlpha2Beta1);
cnn_config!(epsilon_plus_flat, CnnEpsilonPlusFlat, "epsilon_plus_flat", composite = EpsilonPlusFlat);
cnn_config!(epsilon_everywhere, CnnEpsilonEverywhere, "epsilon_everywhere", composite = Epsilon(0.01));
