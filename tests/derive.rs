//! `#[derive(Explainable)]` on structs of layers gives the same numbers as the specs: every
//! configuration of the Zennit fixtures, written as a struct.

mod common;
use common::{Cases, assert_close_per_sample, assert_rel_close};
use lrp::Explainable;
use lrp::layers::{AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The fixture MLP as a struct, PyTorch names given explicitly (an `nn.Sequential`).
macro_rules! derived_mlp {
    ($test:ident, $model:ident, $config:literal, composite = $composite:expr, rules = [$($r0:expr)?, $($r2:expr)?, $($r4:expr)?]) => {
        #[derive(Explainable)]
        #[lrp(input = [16], composite = $composite)]
        struct $model {
            #[lrp(16, 32, name = "0" $(, rule = $r0)?)]
            fc1: Linear,
            relu1: ReLU,
            #[lrp(32, 32, name = "2" $(, rule = $r2)?)]
            fc2: Linear,
            relu2: ReLU,
            #[lrp(32, 4, name = "4" $(, rule = $r4)?)]
            fc3: Linear,
        }

        #[test]
        fn $test() {
            let cases = Cases::load(&fixture("mlp.cases.safetensors"));
            let model = $model::load_strict(fixture("mlp.weights.safetensors")).expect("load");
            let mut ws = model.workspace(cases.batch()).unwrap();
            let e = model.explain_batch(&mut ws, cases.get("input"), cases.batch(), lrp::Target::Predicted).expect("explain");
            assert_eq!(e.targets, &cases.target[..]);
            assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
            assert_close_per_sample($config, e.relevance, cases.get(concat!("rel.", $config)), cases.batch(), 1e-4);
        }
    };
}

/// The fixture CNN as a struct: BatchNorm folded, max- and average pooling.
macro_rules! derived_cnn {
    ($test:ident, $model:ident, $config:literal, composite = $composite:expr) => {
        #[derive(Explainable)]
        #[lrp(input = [3, 16, 16], composite = $composite)]
        struct $model {
            #[lrp(3, 8, kernel_size = 3, padding = 1, name = "features.0")]
            conv1: Conv2d,
            #[lrp(8, name = "features.1")]
            bn1: BatchNorm2d,
            relu1: ReLU,
            #[lrp(2)]
            pool1: MaxPool2d,
            #[lrp(8, 16, kernel_size = 3, padding = 1, name = "features.4")]
            conv2: Conv2d,
            #[lrp(16, name = "features.5")]
            bn2: BatchNorm2d,
            relu2: ReLU,
            #[lrp(2)]
            pool2: AvgPool2d,
            flatten: Flatten,
            #[lrp(256, 32, name = "classifier.0")]
            fc1: Linear,
            relu3: ReLU,
            #[lrp(32, 10, name = "classifier.2")]
            fc2: Linear,
        }

        #[test]
        fn $test() {
            let cases = Cases::load(&fixture("cnn.cases.safetensors"));
            let model = $model::load_strict(fixture("cnn.weights.safetensors")).expect("load");
            let mut ws = model.workspace(cases.batch()).unwrap();
            let e = model
                .explain_batch(&mut ws, cases.get("input"), cases.batch(), lrp::Target::Predicted)
                .expect("explain");
            assert_eq!(e.targets, &cases.target[..]);
            assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
            assert_close_per_sample($config, e.relevance, cases.get(concat!("rel.", $config)), cases.batch(), 1e-4);
        }
    };
}

derived_mlp!(mlp_lrp0, MlpLrp0, "lrp0", composite = Lrp0, rules = [, , ]);
derived_mlp!(mlp_epsilon, MlpEpsilon, "epsilon", composite = Epsilon(0.25), rules = [, , ]);
derived_mlp!(mlp_epsilon_ignore_bias, MlpNoBias, "epsilon_ignore_bias", composite = Epsilon(1e-6, ignore_bias = true), rules = [, , ]);
derived_mlp!(mlp_gamma, MlpGamma, "gamma", composite = Epsilon(1e-6), rules = [, Gamma(0.25), ]);
derived_mlp!(mlp_alpha2beta1, MlpAlphaBeta, "alpha2beta1", composite = Epsilon(1e-6), rules = [, AlphaBeta(alpha = 2, beta = 1), ]);
derived_mlp!(mlp_zplus_everywhere, MlpZPlus, "zplus_everywhere", composite = ZPlus, rules = [, , ]);
derived_mlp!(mlp_flat_first, MlpFlat, "flat_first", composite = Epsilon(1e-6), rules = [Flat, , ]);
derived_mlp!(mlp_wsquare_first, MlpWSquare, "wsquare_first", composite = Epsilon(1e-6), rules = [WSquare, ZPlus,]);
derived_mlp!(
    mlp_zbox_first,
    MlpZBox,
    "zbox_first",
    composite = Epsilon(0.1),
    rules = [ZBox(low = -3.0, high = 3.0), Gamma(0.5),]
);

derived_cnn!(
    cnn_epsilon_gamma_box,
    CnnGammaBox,
    "epsilon_gamma_box",
    composite = EpsilonGammaBox(low = -3.0, high = 3.0)
);
derived_cnn!(cnn_epsilon_plus, CnnPlus, "epsilon_plus", composite = EpsilonPlus);
derived_cnn!(cnn_epsilon_alpha2beta1, CnnAlpha2Beta1, "epsilon_alpha2beta1", composite = EpsilonAlpha2Beta1);
derived_cnn!(cnn_epsilon_plus_flat, CnnPlusFlat, "epsilon_plus_flat", composite = EpsilonPlusFlat);
derived_cnn!(cnn_epsilon_everywhere, CnnEpsilon, "epsilon_everywhere", composite = Epsilon(0.01));
