//! Every MLP configuration of the Zennit fixtures, each written as a spec.

mod common;
use common::{Cases, assert_close_per_sample, assert_rel_close};

const WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mlp.weights.safetensors");
const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mlp.cases.safetensors");

/// One spec per configuration: the fixture's layers, rules from the composite and overrides.
macro_rules! mlp_config {
    ($test:ident, $model:ident, $config:literal, composite = $composite:expr, rules = [$($r0:expr)?, $($r2:expr)?, $($r4:expr)?]) => {
        lrp::network! {
            $model(input = [16], composite = $composite) {
                Linear(16, 32 $(, rule = $r0)?),
                ReLU,
                Linear(32, 32 $(, rule = $r2)?),
                ReLU,
                Linear(32, 4 $(, rule = $r4)?),
            }
        }

        #[test]
        fn $test() {
            let cases = Cases::load(CASES);
            let model = $model::load_strict(common::fixture(WEIGHTS)).expect("weights load");
            let n = cases.batch();
            let mut ws = model.workspace(n).unwrap();
            let e = model.explain_batch(&mut ws, cases.get("input"), n, lrp::Target::Predicted).expect("explain");
            assert_eq!(e.targets, &cases.target[..]);
            assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
            let worst = assert_close_per_sample($config, e.relevance, cases.get(concat!("rel.", $config)), n, 1e-4);
            eprintln!("{}: worst max|R - R_ref| / max|R_ref| = {worst:.2e}", $config);
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

mlp_config!(lrp0, MlpLrp0, "lrp0", composite = Lrp0, rules = [, , ]);
mlp_config!(epsilon, MlpEpsilon, "epsilon", composite = Epsilon(0.25), rules = [, , ]);
mlp_config!(epsilon_ignore_bias, MlpEpsilonNoBias, "epsilon_ignore_bias", composite = Epsilon(1e-6, ignore_bias = true), rules = [, , ]);
mlp_config!(gamma, MlpGamma, "gamma", composite = Epsilon(1e-6), rules = [, Gamma(0.25), ]);
mlp_config!(alpha2beta1, MlpAlpha2Beta1, "alpha2beta1", composite = Epsilon(1e-6), rules = [, AlphaBeta(alpha = 2, beta = 1), ]);
mlp_config!(zplus_everywhere, MlpZPlus, "zplus_everywhere", composite = ZPlus, rules = [, , ]);
mlp_config!(flat_first, MlpFlatFirst, "flat_first", composite = Epsilon(1e-6), rules = [Flat, , ]);
mlp_config!(wsquare_first, MlpWSquareFirst, "wsquare_first", composite = Epsilon(1e-6), rules = [WSquare, ZPlus,]);
mlp_config!(
    zbox_first,
    MlpZBoxFirst,
    "zbox_first",
    composite = Epsilon(0.1),
    rules = [ZBox(low = -3.0, high = 3.0), Gamma(0.5),]
);
