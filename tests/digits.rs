//! The digits CNN of `specs/digits.lrp` with its shipped weights: the forward pass matches the
//! PyTorch logits of the whole test set, the accuracy matches PyTorch's, and explanations are
//! finite and reject classes that do not exist.

mod common;
use common::Cases;

lrp::network!(file = "specs/digits.lrp");

const WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/digits/weights.safetensors");
const TEST_SET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/digits/test_set.safetensors");
const N: usize = 360;

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

fn accuracy(logits: &[f32], labels: &[usize]) -> usize {
    logits.chunks_exact(DigitsCnn::CLASSES).zip(labels).filter(|(l, y)| argmax(l) == **y).count()
}

#[test]
fn shapes_and_test_set() {
    assert_eq!(DigitsCnn::INPUT_SHAPE, &[1, 8, 8]);
    assert_eq!(DigitsCnn::INPUT_LEN, 64);
    assert_eq!(DigitsCnn::CLASSES, 10);
    let cases = Cases::load(TEST_SET);
    assert_eq!(cases.ints("labels").len(), N);
    assert_eq!(cases.f32s["images"].0, [N, 1, 8, 8]);
    assert_eq!(cases.f32s["logits"].0, [N, 10]);
    // Every tensor is used, except the BatchNorm `num_batches_tracked` counters.
    DigitsCnn::load_strict(WEIGHTS).expect("strict load");
}

#[test]
fn logits_and_accuracy_match_pytorch() {
    let model = DigitsCnn::load(WEIGHTS).expect("weights load");
    let cases = Cases::load(TEST_SET);
    let mut ws = model.workspace(N).unwrap();
    let logits = model.predict_batch(&mut ws, cases.get("images"), N).expect("predict");
    let want = cases.get("logits");
    assert_eq!(logits.len(), want.len());
    for (i, (a, b)) in logits.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "logit {i} (sample {}): {a} vs PyTorch {b}", i / 10);
    }

    let ours = accuracy(logits, cases.ints("labels"));
    let pytorch = accuracy(want, cases.ints("labels"));
    assert!(ours * 10 >= N * 9, "accuracy {ours}/{N} is below 90%");
    assert_eq!(ours, pytorch, "accuracy differs from PyTorch's");
}

#[test]
fn explanations_are_finite_and_targets_checked() {
    let model = DigitsCnn::load(WEIGHTS).expect("weights load");
    let cases = Cases::load(TEST_SET);
    let batch = 16;
    let images = &cases.get("images")[..batch * DigitsCnn::INPUT_LEN];
    assert!(images.iter().all(|&v| v >= 0.0), "the spec declares the input non-negative");
    let mut ws = model.workspace(batch).unwrap();

    let e = model.explain_batch(&mut ws, images, batch, lrp::Target::Predicted).expect("explain");
    assert_eq!(e.batch, batch);
    assert_eq!(e.relevance.len(), batch * DigitsCnn::INPUT_LEN);
    for i in 0..batch {
        let logits = e.sample_logits(i);
        assert_eq!(e.targets[i], argmax(logits), "sample {i}: target is the prediction");
        assert!(e.sample(i).iter().all(|r| r.is_finite()), "sample {i}: non-finite relevance");
        assert!(e.total(i).is_finite(), "sample {i}: relevance sum {}", e.total(i));
    }

    let e = model.explain_batch(&mut ws, images, batch, lrp::Target::Class(9)).expect("explain class 9");
    assert!(e.targets.iter().all(|&t| t == 9));
    assert!(e.relevance.iter().all(|r| r.is_finite()));

    for c in [10, 11, usize::MAX] {
        match model.explain_batch(&mut ws, images, batch, lrp::Target::Class(c)) {
            Err(lrp::Error::TargetOutOfRange { target, classes }) => assert_eq!((target, classes), (c, 10)),
            other => panic!("class {c}: expected TargetOutOfRange, got {other:?}"),
        }
    }
}
