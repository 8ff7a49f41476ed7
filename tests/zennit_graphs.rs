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
