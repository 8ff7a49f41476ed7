//! Trust at the edges: inputs that used to give a plausible wrong answer or a panic are errors
//! naming the sample, index, layer or buffer, and the generic `Model` traits work without the
//! macro. Each case is one of issue 8's reproductions.

mod common;
use common::Cases;
use lrp::{Error, Model, TensorModel, TokenModel};

lrp::network!(file = "specs/digits.lrp");
lrp::network!(file = "specs/text_lstm.lrp");

lrp::network! {
    /// The CNN of the Zennit fixtures (no `input_nonnegative` promise).
    FixtureCnn(input = [3, 16, 16], composite = EpsilonGammaBox(low = -3.0, high = 3.0)) {
        features: {
            Conv2d(3, 8, kernel_size = 3, padding = 1), BatchNorm2d(8), ReLU, MaxPool2d(2),
            Conv2d(8, 16, kernel_size = 3, padding = 1), BatchNorm2d(16), ReLU, AvgPool2d(2),
        },
        Flatten,
        classifier: { Linear(256, 32), ReLU, Linear(32, 10) },
    }
}

const DIGITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/digits/weights.safetensors");
const DIGITS_SET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/digits/test_set.safetensors");
const CNN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cnn.weights.safetensors");
const CNN_CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cnn.cases.safetensors");
const LSTM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lstm.weights.safetensors");

fn digit(i: usize) -> Vec<f32> {
    let set = Cases::load(DIGITS_SET);
    set.get("images")[i * 64..(i + 1) * 64].to_vec()
}

#[test]
fn a_nan_input_is_an_error_naming_sample_and_index() {
    let model = FixtureCnn::load(CNN).unwrap();
    let mut ws = model.workspace(3).unwrap();
    let mut input = Cases::load(CNN_CASES).get("input").to_vec();
    input[2 * 768 + 100] = f32::NAN;
    // Before: ReLU turned the NaN into 0 and the logits looked confident.
    let err = model.predict_batch(&mut ws, &input, 3).unwrap_err();
    assert!(matches!(err, Error::NonFiniteInput { sample: 2, index: 100, value } if value.is_nan()), "{err}");
    assert_eq!(err.to_string(), "input sample 2 holds a non-finite value NaN at index 100");
    let single = &mut input[2 * 768..];
    single[5] = f32::NEG_INFINITY;
    let err = model.explain(&mut ws, &single[..768], 0usize).unwrap_err();
    assert!(matches!(err, Error::NonFiniteInput { sample: 0, index: 5, .. }), "{err}");
    let err = model.gradient_x_input(&mut ws, &single[..768], 0usize).unwrap_err();
    assert!(matches!(err, Error::NonFiniteInput { sample: 0, index: 5, .. }), "{err}");
}

#[test]
fn a_huge_input_is_never_ok_with_a_non_finite_value() {
    // Before: 1e30 gave finite logits and all-NaN relevance.
    let model = FixtureCnn::load(CNN).unwrap();
    let mut ws = model.workspace(1).unwrap();
    for scale in [1e30f32, 1e36, -1e37] {
        let input: Vec<f32> = Cases::load(CNN_CASES).get("input")[..768].iter().map(|v| v * scale).collect();
        let results = [
            model.explain(&mut ws, &input, lrp::Target::Predicted).map(|e| (e.logits.to_vec(), e.relevance.to_vec())),
            model.gradient_x_input(&mut ws, &input, 3usize).map(|e| (e.logits.to_vec(), e.relevance.to_vec())),
        ];
        for result in results {
            match result {
                Ok((logits, relevance)) => {
                    assert!(logits.iter().chain(&relevance).all(|v| v.is_finite()), "scale {scale}: Ok with NaN");
                }
                Err(Error::Overflow { layer, what, .. }) => {
                    assert!(!layer.is_empty() && !what.is_empty(), "scale {scale}");
                }
                Err(other) => panic!("scale {scale}: unexpected error {other}"),
            }
        }
    }
    // Inputs near f32::MAX overflow in the forward pass itself: the error names the first layer
    // whose output is not finite, and the message the pass, sample and index.
    let cases = Cases::load(CNN_CASES);
    let input = &cases.get("input")[..768];
    let scale = 0.99 * f32::MAX / input.iter().fold(0f32, |m, v| m.max(v.abs()));
    let input: Vec<f32> = input.iter().map(|v| v * scale).collect();
    let err = model.predict(&mut ws, &input).unwrap_err();
    let Error::Overflow { layer, step: None, what } = &err else { panic!("expected Overflow, got {err}") };
    assert_eq!(layer, "features.0", "{err}");
    assert!(what.starts_with("forward pass: value"), "{err}");
}

#[test]
fn broken_nonnegative_promise_is_an_error() {
    // `specs/digits.lrp` promises pixels >= 0; before, [-0.5, 0.5] inputs gave relevance 600x off.
    let model = DigitsCnn::load(DIGITS).unwrap();
    let mut ws = model.workspace(2).unwrap();
    let mut x = [digit(0), digit(1)].concat();
    assert!(model.explain_batch(&mut ws, &x, 2, lrp::Target::Predicted).is_ok());
    x[64 + 10] = -0.25;
    let err = model.explain_batch(&mut ws, &x, 2, lrp::Target::Predicted).unwrap_err();
    assert_eq!(err, Error::NegativeInput { sample: 1, index: 10, value: -0.25 });
    assert!(err.to_string().contains("input_nonnegative = true"), "{err}");
    assert!(model.predict_batch(&mut ws, &x, 2).is_err(), "predict checks the promise too");
}

#[test]
fn the_number_of_samples_is_never_inferred() {
    // Before: a 64x64 image given to a model of 32x32 ones came back as four "samples".
    let model = DigitsCnn::load(DIGITS).unwrap();
    let mut ws = model.workspace(4).unwrap();
    let big = [digit(0), digit(1), digit(2), digit(3)].concat();
    let err = model.predict(&mut ws, &big).unwrap_err();
    assert_eq!(err, Error::Length { what: "input of `DigitsCnn`".into(), expected: 64, found: 256 });
    assert_eq!(model.predict_batch(&mut ws, &big, 4).unwrap().len(), 40, "an explicit batch of four is fine");
    assert!(matches!(model.predict_batch(&mut ws, &big, 3), Err(Error::Length { expected: 192, found: 256, .. })));
}

#[test]
fn workspaces_too_large_to_address_are_errors() {
    let cnn = DigitsCnn::load(DIGITS).unwrap();
    for capacity in [usize::MAX, 1 << 62, usize::MAX / 64 + 1] {
        // Too large to address, or refused by the allocator: an error either way, not an abort.
        let err = cnn.workspace(capacity).unwrap_err();
        assert!(
            matches!(&err, Error::SizeOverflow { what } | Error::Allocation { what, .. } if what.contains("workspace buffer")),
            "{err}"
        );
    }
    let lstm = TextLstm::load(LSTM).unwrap();
    // Before: buffer sizes wrapped to 0 in release, and the next explain panicked.
    for (max_len, batch) in [(1 << 62, 1), (usize::MAX, 1), (4, usize::MAX), (1 << 40, 1 << 40)] {
        let err = lstm.workspace(max_len, batch).unwrap_err();
        assert!(matches!(err, Error::SizeOverflow { .. } | Error::Allocation { .. }), "({max_len}, {batch}): {err}");
    }
}

#[test]
fn huge_token_ids_are_out_of_range_not_aliased() {
    let model = TextLstm::load(LSTM).unwrap();
    let mut ws = model.workspace(8, 1).unwrap();
    // Before: 1 << 61 times the embedding size wrapped to token 0 in release.
    for token in [20, 1 << 61, usize::MAX] {
        let err = model.predict(&mut ws, &[3, token, 1]).unwrap_err();
        assert_eq!(err, Error::TokenOutOfRange { position: 1, token, vocab: 20 });
    }
}

#[test]
fn ragged_sequences_make_no_matrix() {
    let model = TextLstm::load(LSTM).unwrap();
    let mut ws = model.workspace(8, 3).unwrap();
    let e = model.explain_batch(&mut ws, &[&[1], &[2], &[3, 4]], lrp::Target::Predicted).unwrap();
    assert!(matches!(e.to_dmatrix(), Err(Error::Length { expected: 1, found: 2, .. })));
    let e = model.explain_batch(&mut ws, &[&[1, 5], &[3, 4]], lrp::Target::Predicted).unwrap();
    assert_eq!(e.to_dmatrix().unwrap().shape(), (2, 2 * TextLstm::EMBEDDING_DIM));
}

#[test]
fn errors_debug_print_their_message() {
    // `fn main() -> lrp::Result<()>` prints the error with `Debug`.
    let err = DigitsCnn::load("/nonexistent/weights.safetensors").unwrap_err();
    assert_eq!(format!("{err:?}"), err.to_string());
    assert!(format!("{err:?}").starts_with("cannot read weight file `/nonexistent/weights.safetensors`"));
}

/// Sums the logits of `input` and checks the explanation of the same sample: code generic over
/// fixed-size models, without the macro.
fn total_logit<M: TensorModel>(model: &M, input: &[f32]) -> lrp::Result<f32> {
    let mut ws = model.workspace_for(lrp::Capacity::samples(1))?;
    let sum = model.predict(&mut ws, input)?.iter().sum();
    let e = model.explain(&mut ws, input, lrp::Target::Predicted)?;
    assert_eq!((e.relevance.len(), e.logits.len()), (M::INPUT_LEN, M::CLASSES));
    Ok(sum)
}

#[test]
fn generic_code_serves_several_models() {
    let (digits, cnn) = (DigitsCnn::load(DIGITS).unwrap(), FixtureCnn::load(CNN).unwrap());
    let x = digit(0);
    let direct: f32 = digits.predict(&mut digits.workspace(1).unwrap(), &x).unwrap().iter().sum();
    assert_eq!(total_logit(&digits, &x).unwrap(), direct);
    assert!(total_logit(&cnn, &Cases::load(CNN_CASES).get("input")[..768]).unwrap().is_finite());
    assert!(total_logit(&cnn, &x).is_err(), "a digit is not a 3x16x16 image");
    assert_eq!((<DigitsCnn as Model>::NAME, <FixtureCnn as TensorModel>::INPUT_SHAPE), ("DigitsCnn", &[3, 16, 16][..]));

    let lstm = TextLstm::load_with(LSTM, &lrp::LoadOptions::default().strict()).unwrap();
    let mut ws = lstm.workspace_for(lrp::Capacity::samples(2).max_len(6)).unwrap();
    let logits = TokenModel::predict_batch(&lstm, &mut ws, &[&[1, 2, 3], &[4]]).unwrap().to_vec();
    assert_eq!(logits.len(), 2 * <TextLstm as Model>::CLASSES);
    assert_eq!(&logits[..5], Model::predict(&lstm, &mut ws, &[1, 2, 3][..]).unwrap());
    assert_eq!(<TextLstm as TokenModel>::VOCAB, 20);
}

lrp::network! {
    /// A convolution with a BatchNorm folded into it.
    ConvBn(input = [1, 4, 4]) {
        conv: Conv2d(1, 2, kernel_size = 3),
        bn: BatchNorm2d(2),
        Flatten,
        fc: Linear(8, 2),
    }
}

#[test]
fn batchnorm_folding_into_infinite_weights_is_a_load_error() {
    // Before: `running_var = 0` and a huge gamma folded finite weights into -inf, and every
    // relevance came out NaN.
    let tensor = |name: &str, shape: &[usize], value: f32| {
        let len = shape.iter().product();
        (name.to_string(), lrp::Tensor { shape: shape.to_vec(), data: vec![value; len] })
    };
    let tensors = |gamma: f32, var: f32| {
        [
            tensor("conv.weight", &[2, 1, 3, 3], -1e10),
            tensor("conv.bias", &[2], 0.1),
            tensor("bn.weight", &[2], gamma),
            tensor("bn.bias", &[2], 0.0),
            tensor("bn.running_mean", &[2], 0.0),
            tensor("bn.running_var", &[2], var),
            tensor("fc.weight", &[2, 8], 0.25),
            tensor("fc.bias", &[2], 0.0),
        ]
    };
    let ok = ConvBn::from_weights(&mut lrp::Weights::from_tensors(tensors(2.0, 1.0)), true);
    assert!(ok.is_ok(), "{:?}", ok.err());
    let err = ConvBn::from_weights(&mut lrp::Weights::from_tensors(tensors(3e38, 0.0)), true).unwrap_err();
    assert!(err.to_string().starts_with("tensor `bn: scale = weight / sqrt(running_var + eps)` holds"), "{err}");
    // The scale 3.2e27 / sqrt(0 + 1e-5) = 1e30 is finite; the folded weight -1e10 x 1e30 is not.
    let err = ConvBn::from_weights(&mut lrp::Weights::from_tensors(tensors(3.2e27, 0.0)), true).unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { name, value, .. } if name == "bn folded into conv: weight" && value.is_infinite()),
        "{err}"
    );
}

lrp::network! {
    /// Layer names that are also the loader's parameter names or a prelude variant.
    OddNames(input = [4]) {
        weights: Linear(4, 4),
        strict: ReLU,
        None: Linear(4, 2),
    }
}

#[derive(lrp::Explainable)]
#[lrp(input = [4])]
#[allow(non_snake_case, dead_code)]
struct OddFields {
    #[lrp(4, 4)]
    weights: lrp::layers::Linear,
    strict: lrp::layers::ReLU,
    #[lrp(4, 2)]
    Ok: lrp::layers::Linear,
}

#[test]
fn layers_may_be_named_like_the_loaders_parameters() {
    let tensor = |name: &str, shape: &[usize]| {
        let len: usize = shape.iter().product();
        (name.to_string(), lrp::Tensor { shape: shape.to_vec(), data: (0..len).map(|i| i as f32 / 8.0).collect() })
    };
    let t = |first: &str, last: &str| {
        [
            tensor(&format!("{first}.weight"), &[4, 4]),
            tensor(&format!("{first}.bias"), &[4]),
            tensor(&format!("{last}.weight"), &[2, 4]),
            tensor(&format!("{last}.bias"), &[2]),
        ]
    };
    let a = OddNames::from_weights(&mut lrp::Weights::from_tensors(t("weights", "None")), true).unwrap();
    let b = OddFields::from_weights(&mut lrp::Weights::from_tensors(t("weights", "Ok")), true).unwrap();
    let x = [1.0, 0.5, 0.25, 0.0];
    let la = a.predict(&mut a.workspace(1).unwrap(), &x).unwrap().to_vec();
    assert_eq!(la, b.predict(&mut b.workspace(1).unwrap(), &x).unwrap());
    assert!(la[1] > 0.0);
}
