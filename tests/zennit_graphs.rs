//! The graph fixtures of `tools/gen_graph_reference.py` (Zennit 0.5.1, float64): a tiny ResNet of
//! torchvision's `BasicBlock` and `Bottleneck` (identity and downsample shortcuts, explained
//! through Zennit's ResNet canonizer: BatchNorm folded, each residual sum by the `Norm` rule)
//! under three composites and gradient x input, and a Tanh MLP under three rules. Ours within
//! `1e-4 * max|R|` per sample, logits within `1e-5` relative.

mod common;
use common::{Cases, assert_close_per_sample, assert_rel_close};

const RESNET_WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resnet.weights.safetensors");
const RESNET_CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resnet.cases.safetensors");
const MLP_WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tanh_mlp.weights.safetensors");
const MLP_CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tanh_mlp.cases.safetensors");

/// Explains every case of `cases` with `model` (`gradient`: gradient x input instead of LRP)
/// and compares with `rel.<config>`.
macro_rules! check {
    ($model:ty, $weights:expr, $cases:expr, $config:expr, $method:ident) => {{
        let model = <$model>::load_strict(common::fixture($weights)).expect("the fixture's state_dict loads as it is");
        let cases = Cases::load($cases);
        let n = cases.batch();
        let mut ws = model.workspace(n).unwrap();
        let e = model.$method(&mut ws, cases.get("input"), n, lrp::Target::Predicted).expect("explain");
        assert_eq!(e.targets, &cases.target[..]);
        assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
        assert_close_per_sample($config, e.relevance, cases.get($config), n, 1e-4);
    }};
}

/// Next to the CPU test `$test`, `$test::on_the_gpu_backend`: the GPU model of `$model`
/// (`LRP_DEVICE` selects the device; the emulated one by default) on the same fixture with the
/// same tolerances, and (LRP) every method against the CPU model; `gradient`: gradient x input
/// for the predicted class against the fixture.
macro_rules! on_the_gpu {
    ($test:ident, $model:ident, $weights:ident, $cases:ident, $config:expr) => {
        on_the_gpu!(@ $test, $model, $weights, $cases, $config, check_gpu_model);
    };
    ($test:ident, $model:ident, $weights:ident, $cases:ident, $config:expr, gradient) => {
        on_the_gpu!(@ $test, $model, $weights, $cases, $config, check_gpu_gradient);
    };
    (@ $test:ident, $model:ident, $weights:ident, $cases:ident, $config:expr, $check:ident) => {
        #[cfg(feature = "cuda")]
        mod $test {
            #[test]
            fn on_the_gpu_backend() {
                let model = super::$model::load_strict(super::common::fixture(super::$weights)).expect("weights load");
                super::common::$check(&model, &super::Cases::load(super::$cases), $config);
            }
        }
    };
}

/// The fixture's TinyResNet, as torchvision names its modules.
macro_rules! tiny_resnet {
    ($model:ident, composite = $composite:expr) => {
        lrp::network! {
            $model(input = [3, 32, 32], composite = $composite) {
                conv1: Conv2d(3, 8, kernel_size = 3, padding = 1, bias = false),
                bn1: BatchNorm2d(8),
                relu: ReLU,
                maxpool: MaxPool2d(kernel_size = 3, stride = 2, padding = 1),
                layer1: {
                    0: {
                        Sum {
                            {
                                conv1: Conv2d(8, 8, 3, padding = 1, bias = false), bn1: BatchNorm2d(8), relu: ReLU,
                                conv2: Conv2d(8, 8, 3, padding = 1, bias = false), bn2: BatchNorm2d(8),
                            },
                            {},
                        },
                        relu: ReLU,
                    },
                },
                layer2: {
                    0: {
                        Sum {
                            {
                                conv1: Conv2d(8, 16, 3, stride = 2, padding = 1, bias = false), bn1: BatchNorm2d(16), relu: ReLU,
                                conv2: Conv2d(16, 16, 3, padding = 1, bias = false), bn2: BatchNorm2d(16),
                            },
                            downsample: { Conv2d(8, 16, 1, stride = 2, bias = false), BatchNorm2d(16) },
                        },
                        relu: ReLU,
                    },
                },
                layer3: {
                    0: {
                        Sum {
                            {
                                conv1: Conv2d(16, 8, 1, bias = false), bn1: BatchNorm2d(8), relu: ReLU,
                                conv2: Conv2d(8, 8, 3, stride = 2, padding = 1, bias = false), bn2: BatchNorm2d(8), relu: ReLU,
                                conv3: Conv2d(8, 32, 1, bias = false), bn3: BatchNorm2d(32),
                            },
                            downsample: { Conv2d(16, 32, 1, stride = 2, bias = false), BatchNorm2d(32) },
                        },
                        relu: ReLU,
                    },
                },
                layer4: {
                    0: {
                        Sum {
                            {
                                conv1: Conv2d(32, 8, 1, bias = false), bn1: BatchNorm2d(8), relu: ReLU,
                                conv2: Conv2d(8, 8, 3, padding = 1, bias = false), bn2: BatchNorm2d(8), relu: ReLU,
                                conv3: Conv2d(8, 32, 1, bias = false), bn3: BatchNorm2d(32),
                            },
                            {},
                        },
                        relu: ReLU,
                    },
                },
                avgpool: AdaptiveAvgPool2d(1),
                Flatten,
                fc: Linear(32, 5),
            }
        }
    };
}

tiny_resnet!(ResNetGammaBox, composite = EpsilonGammaBox(low = -3.0, high = 3.0));
tiny_resnet!(ResNetPlus, composite = EpsilonPlus);
tiny_resnet!(ResNetAlphaBeta, composite = EpsilonAlpha2Beta1);

#[test]
fn resnet_epsilon_gamma_box() {
    check!(ResNetGammaBox, RESNET_WEIGHTS, RESNET_CASES, "rel.epsilon_gamma_box", explain_batch);
}
on_the_gpu!(resnet_epsilon_gamma_box, ResNetGammaBox, RESNET_WEIGHTS, RESNET_CASES, "rel.epsilon_gamma_box");

#[test]
fn resnet_epsilon_plus() {
    check!(ResNetPlus, RESNET_WEIGHTS, RESNET_CASES, "rel.epsilon_plus", explain_batch);
}
on_the_gpu!(resnet_epsilon_plus, ResNetPlus, RESNET_WEIGHTS, RESNET_CASES, "rel.epsilon_plus");

#[test]
fn resnet_epsilon_alpha2_beta1() {
    check!(ResNetAlphaBeta, RESNET_WEIGHTS, RESNET_CASES, "rel.epsilon_alpha2_beta1", explain_batch);
}
on_the_gpu!(resnet_epsilon_alpha2_beta1, ResNetAlphaBeta, RESNET_WEIGHTS, RESNET_CASES, "rel.epsilon_alpha2_beta1");

#[test]
fn resnet_gradient_x_input() {
    check!(ResNetPlus, RESNET_WEIGHTS, RESNET_CASES, "rel.gradient", gradient_x_input_batch);
}
on_the_gpu!(resnet_gradient_x_input, ResNetPlus, RESNET_WEIGHTS, RESNET_CASES, "rel.gradient", gradient);

macro_rules! tanh_mlp {
    ($model:ident, composite = $composite:expr) => {
        lrp::network! {
            $model(input = [10], composite = $composite) { Linear(10, 16), Tanh, Linear(16, 16), Tanh, Linear(16, 4) }
        }
    };
}

tanh_mlp!(TanhEpsilon, composite = Epsilon(0.01));
tanh_mlp!(TanhGamma, composite = Gamma(0.25));
tanh_mlp!(TanhAlphaBeta, composite = AlphaBeta(alpha = 2, beta = 1));

#[test]
fn tanh_mlp_epsilon() {
    check!(TanhEpsilon, MLP_WEIGHTS, MLP_CASES, "rel.epsilon", explain_batch);
}
on_the_gpu!(tanh_mlp_epsilon, TanhEpsilon, MLP_WEIGHTS, MLP_CASES, "rel.epsilon");

#[test]
fn tanh_mlp_gamma() {
    check!(TanhGamma, MLP_WEIGHTS, MLP_CASES, "rel.gamma", explain_batch);
}
on_the_gpu!(tanh_mlp_gamma, TanhGamma, MLP_WEIGHTS, MLP_CASES, "rel.gamma");

#[test]
fn tanh_mlp_alpha2_beta1() {
    check!(TanhAlphaBeta, MLP_WEIGHTS, MLP_CASES, "rel.alpha2_beta1", explain_batch);
}
on_the_gpu!(tanh_mlp_alpha2_beta1, TanhAlphaBeta, MLP_WEIGHTS, MLP_CASES, "rel.alpha2_beta1");

#[test]
fn tanh_mlp_gradient_x_input() {
    check!(TanhEpsilon, MLP_WEIGHTS, MLP_CASES, "rel.gradient", gradient_x_input_batch);
}
on_the_gpu!(tanh_mlp_gradient_x_input, TanhEpsilon, MLP_WEIGHTS, MLP_CASES, "rel.gradient", gradient);

const TEXT_WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/text_cnn.weights.safetensors");
const TEXT_CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/text_cnn.cases.safetensors");

// The shipped spec: EpsilonPlus (z+ on the Conv1d, epsilon on the Linear).
lrp::network!(file = "specs/text_cnn.lrp");

lrp::network! {
    TextCnnEpsilon(input = tokens(12)) {
        embedding: Embedding(20, 6), Transpose(0, 1), conv: Conv1d(6, 8, kernel_size = 3), relu: ReLU,
        pool: MaxPool1d(kernel_size = 10), Flatten, fc: Linear(8, 3),
    }
}

/// The text CNN's explanation of every case, per embedded token and summed per token.
macro_rules! check_text {
    ($model:ty, $config:expr, $method:ident) => {{
        let model =
            <$model>::load_strict(common::fixture(TEXT_WEIGHTS)).expect("the fixture's state_dict loads as it is");
        let cases = Cases::load(TEXT_CASES);
        let n = cases.batch();
        let mut ws = model.workspace(n).unwrap();
        let e = model.$method(&mut ws, cases.ints("tokens"), n, lrp::Target::Predicted).expect("explain");
        assert_eq!(e.targets, &cases.target[..]);
        assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
        assert_close_per_sample($config, e.relevance, cases.get($config), n, 1e-4);
        let per_token: Vec<f32> = (0..n).flat_map(|i| e.token_relevance(i).collect::<Vec<_>>()).collect();
        assert_close_per_sample("per token", &per_token, cases.get(&format!("{}.tokens", $config)), n, 1e-4);
    }};
}

#[test]
fn text_cnn_epsilon_plus() {
    check_text!(TextCnn, "rel.epsilon_plus", explain_batch);
}

#[test]
fn text_cnn_epsilon() {
    check_text!(TextCnnEpsilon, "rel.epsilon", explain_batch);
}

#[test]
fn text_cnn_gradient_x_input() {
    check_text!(TextCnnEpsilon, "rel.gradient", gradient_x_input_batch);
}

/// Next to the CPU test `$test`, `$test::on_the_gpu_backend`: the text CNN's GPU model on the
/// same fixture with the same tolerances (per embedded token and per token), then its
/// explain_from against the CPU model.
macro_rules! check_text_on_the_gpu {
    ($test:ident, $model:ident, $config:expr, $method:ident) => {
        #[cfg(feature = "cuda")]
        mod $test {
            use super::common::{assert_close_per_sample, assert_rel_close};

            #[test]
            fn on_the_gpu_backend() {
                let model =
                    super::$model::load_strict(super::common::fixture(super::TEXT_WEIGHTS)).expect("weights load");
                let cases = super::Cases::load(super::TEXT_CASES);
                let (n, tokens, classes) = (cases.batch(), cases.ints("tokens"), super::$model::CLASSES);
                let device = super::common::gpu_device();
                let gpu = model.to_gpu(&device).expect("upload");
                let mut gws = gpu.workspace(n).unwrap();
                let e = gpu.$method(&mut gws, tokens, n, lrp::Target::Predicted).expect("explain");
                assert_eq!(e.targets, &cases.target[..]);
                assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
                let worst = assert_close_per_sample($config, e.relevance, cases.get($config), n, 1e-4);
                eprintln!("{} on {}: worst max|R - R_ref| / max|R_ref| = {worst:.2e}", $config, device.name());
                let per_token: Vec<f32> = (0..n).flat_map(|i| e.token_relevance(i).collect::<Vec<_>>()).collect();
                assert_close_per_sample("per token", &per_token, cases.get(&format!("{}.tokens", $config)), n, 1e-4);
                let given: Vec<f32> = (0..n * classes).map(|i| i as f32 * 0.25 - 1.0).collect();
                let mut ws = model.workspace(n).unwrap();
                let want = model.explain_from_batch(&mut ws, tokens, n, &given).unwrap().relevance.to_vec();
                let got = gpu.explain_from_batch(&mut gws, tokens, n, &given).unwrap();
                assert_close_per_sample("explain_from", got.relevance, &want, n, 1e-4);
            }
        }
    };
}

check_text_on_the_gpu!(text_cnn_epsilon_plus, TextCnn, "rel.epsilon_plus", explain_batch);
check_text_on_the_gpu!(text_cnn_epsilon, TextCnnEpsilon, "rel.epsilon", explain_batch);
check_text_on_the_gpu!(text_cnn_gradient_x_input, TextCnnEpsilon, "rel.gradient", gradient_x_input_batch);

#[test]
fn text_cnn_token_ids_are_checked() {
    let model = TextCnn::load_strict(common::fixture(TEXT_WEIGHTS)).unwrap();
    let mut ws = model.workspace(1).unwrap();
    let mut tokens = [1usize; 12];
    tokens[5] = 20;
    let e = model.explain(&mut ws, &tokens, 0).unwrap_err();
    assert!(e.to_string().contains("20"), "{e}");
    assert!(matches!(model.predict(&mut ws, &tokens[..11]), Err(lrp::Error::Length { expected: 12, found: 11, .. })));
}
