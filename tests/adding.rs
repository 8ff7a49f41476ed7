//! The adding-task LSTM of `examples/adding.rs`: our forward pass gives PyTorch's logits on the
//! shipped test set, and the model solves the task.

mod common;
use common::{Cases, assert_rel_close};

lrp::network!(file = "specs/adding.lrp");

#[test]
fn forward_matches_pytorch_and_solves_the_task() {
    let root = env!("CARGO_MANIFEST_DIR");
    let model = AddingLstm::load_strict(format!("{root}/examples/adding/weights.safetensors")).unwrap();
    let set = Cases::load(&format!("{root}/examples/adding/test_set.safetensors"));
    let (tokens, lengths, labels) = (set.ints("tokens"), set.ints("lengths"), set.ints("labels"));
    let width = tokens.len() / lengths.len();
    let mut ws = model.workspace(width, 1);
    let mut correct = 0;
    for (i, (&len, &label)) in lengths.iter().zip(labels).enumerate() {
        let logits = model.predict(&mut ws, &tokens[i * width..i * width + len]).unwrap();
        assert_rel_close(&format!("sequence {i}"), logits, &set.get("logits")[i * 19..(i + 1) * 19], 1e-4);
        correct += usize::from(lrp::runtime::kernels::elementwise::argmax(logits) == Some(label));
    }
    assert!(correct * 100 >= 95 * labels.len(), "accuracy {correct}/{}", labels.len());
}
