//! `#[derive(Explainable)]` on structs of layers gives the same numbers as the specs, against
//! the same Zennit fixtures.

mod common;
use common::{Cases, assert_close_per_sample, assert_rel_close};
use lrp::Explainable;
use lrp::layers::{AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU};

/// The fixture MLP with the `gamma` configuration: gamma on the middle layer, epsilon elsewhere.
#[derive(Explainable)]
#[lrp(input = [16], composite = Epsilon(1e-6))]
struct GammaMlp {
    #[lrp(16, 32, name = "0")]
    fc1: Linear,
    #[lrp(name = "1")]
    relu1: ReLU,
    #[lrp(32, 32, name = "2", rule = Gamma(0.25))]
    fc2: Linear,
    #[lrp(name = "3")]
    relu2: ReLU,
    #[lrp(32, 4, name = "4")]
    fc3: Linear,
}

/// The fixture CNN with Zennit's EpsilonGammaBox composite.
#[derive(Explainable)]
#[lrp(input = [3, 16, 16], composite = EpsilonGammaBox(low = -3.0, high = 3.0))]
struct GammaBoxCnn {
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

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn derived_mlp_matches_zennit_gamma() {
    let cases = Cases::load(&fixture("mlp.cases.safetensors"));
    let model = GammaMlp::load_strict(fixture("mlp.weights.safetensors")).unwrap();
    let mut ws = model.workspace(cases.batch());
    let e = model.explain(&mut ws, cases.get("input"), lrp::Target::Predicted).unwrap();
    assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
    assert_close_per_sample("gamma", e.relevance, cases.get("rel.gamma"), cases.batch(), 1e-4);
}

#[test]
fn derived_cnn_matches_zennit_epsilon_gamma_box() {
    let cases = Cases::load(&fixture("cnn.cases.safetensors"));
    let model = GammaBoxCnn::load_strict(fixture("cnn.weights.safetensors")).unwrap();
    let mut ws = model.workspace(cases.batch());
    let e = model.explain(&mut ws, cases.get("input"), lrp::Target::Predicted).unwrap();
    assert_eq!(e.targets, &cases.target[..]);
    assert_rel_close("logits", e.logits, cases.get("logits"), 1e-5);
    assert_close_per_sample("epsilon_gamma_box", e.relevance, cases.get("rel.epsilon_gamma_box"), cases.batch(), 1e-4);
}
