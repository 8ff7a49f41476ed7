//! The adding-task LSTM of `examples/adding.rs`: our forward pass gives PyTorch's logits on the
//! shipped test set, and the model solves the task.

mod common;
use common::{Cases, assert_close_per_sample};

lrp::network!(file = "specs/adding.lrp");

#[test]
fn forward_matches_pytorch_and_solves_the_task() {
    let root = env!("CARGO_MANIFEST_DIR");
    let model = AddingLstm::load_strict(format!("{root}/examples/adding/weights.safetensors")).unwrap();
    let set = Cases::load(&format!("{root}/examples/adding/test_set.safetensors"));
    let (tokens, lengths, labels) = (set.ints("tokens"), set.ints("lengths"), set.ints("labels"));
    let width = tokens.len() / lengths.len();
    let mut ws = model.workspace(width, 1).unwrap();
    let mut correct = 0;
    for (i, (&len, &label)) in lengths.iter().zip(labels).enumerate() {
        let logits = model.predict(&mut ws, &tokens[i * width..i * width + len]).unwrap();
        // Within 1e-5 of the largest logit (the smallest are ~1e-3, where f32 rounding shows).
        assert_close_per_sample(&format!("sequence {i}"), logits, &set.get("logits")[i * 19..(i + 1) * 19], 1, 1e-5);
        correct += usize::from(lrp::runtime::kernels::elementwise::argmax(logits) == Some(label));
    }
    assert!(correct * 100 >= 95 * labels.len(), "accuracy {correct}/{}", labels.len());
}
