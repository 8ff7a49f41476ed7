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
        let model = <$model>::load_strict($weights).expect("the fixture's state_dict loads as it is");
        let cases = Cases::load($cases);
        let n = cases.batch();
        let mut ws = model.workspace(n).unwrap();
        let e = model.$method(&mut ws, cases.get("input"), n, lrp::Target::Predicted).expect("explain");
        assert_eq!(e.targets, &cases.target[..]);
        assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
        assert_close_per_sample($config, e.relevance, cases.get($config), n, 1e-4);
    }};
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

#[test]
fn resnet_epsilon_plus() {
    check!(ResNetPlus, RESNET_WEIGHTS, RESNET_CASES, "rel.epsilon_plus", explain_batch);
}

#[test]
fn resnet_epsilon_alpha2_beta1() {
    check!(ResNetAlphaBeta, RESNET_WEIGHTS, RESNET_CASES, "rel.epsilon_alpha2_beta1", explain_batch);
}

#[test]
fn resnet_gradient_x_input() {
    check!(ResNetPlus, RESNET_WEIGHTS, RESNET_CASES, "rel.gradient", gradient_x_input_batch);
}

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

#[test]
fn tanh_mlp_gamma() {
    check!(TanhGamma, MLP_WEIGHTS, MLP_CASES, "rel.gamma", explain_batch);
}

#[test]
fn tanh_mlp_alpha2_beta1() {
    check!(TanhAlphaBeta, MLP_WEIGHTS, MLP_CASES, "rel.alpha2_beta1", explain_batch);
}

#[test]
fn tanh_mlp_gradient_x_input() {
    check!(TanhEpsilon, MLP_WEIGHTS, MLP_CASES, "rel.gradient", gradient_x_input_batch);
}

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
        let model = <$model>::load_strict(TEXT_WEIGHTS).expect("the fixture's state_dict loads as it is");
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

#[test]
fn text_cnn_token_ids_are_checked() {
    let model = TextCnn::load_strict(TEXT_WEIGHTS).unwrap();
    let mut ws = model.workspace(1).unwrap();
    let mut tokens = [1usize; 12];
    tokens[5] = 20;
    let e = model.explain(&mut ws, &tokens, 0).unwrap_err();
    assert!(e.to_string().contains("20"), "{e}");
    assert!(matches!(model.predict(&mut ws, &tokens[..11]), Err(lrp::Error::Length { expected: 12, found: 11, .. })));
}
