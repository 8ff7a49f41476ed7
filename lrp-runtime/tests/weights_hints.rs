//! Loading errors that lead to the fix: a tensor saved under a prefix (and
//! `Weights::strip_prefix`), a PyTorch checkpoint given instead of safetensors, a layer left out
//! of or added to the spec (every later index shifted).

use lrp_runtime::Error;
use lrp_runtime::weights::{Weights, serialize_f32};

/// Weights of `(name, shape)` tensors, each filled with its index in the list.
fn weights(tensors: &[(&str, &[usize])]) -> Weights {
    let data: Vec<Vec<f32>> =
        tensors.iter().enumerate().map(|(i, (_, shape))| vec![i as f32; shape.iter().product()]).collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().zip(&data).map(|(&(name, shape), data)| (name, shape, &data[..])).collect();
    Weights::from_bytes(&serialize_f32(&refs).unwrap()).unwrap()
}

fn names(w: &Weights) -> Vec<&str> {
    w.names().collect()
}

#[test]
fn weights_missing_tensor_saved_with_a_prefix() {
    let mut w = weights(&[("module.fc.weight", &[2, 3]), ("module.fc.bias", &[2])]);
    let err = w.take("fc.weight", "fc", &[2, 3]).unwrap_err();
    let Error::MissingTensorHint { name, layer, hint } = &err else { panic!("{err:?}") };
    assert_eq!((name.as_str(), layer.as_str()), ("fc.weight", "fc"));
    assert!(hint.contains("prefix `module.`"), "{hint}");
    assert_eq!(
        err.to_string(),
        "tensor `fc.weight` (needed by layer `fc`) is missing from the weights; the file has \
         `module.fc.weight`: it was saved with the prefix `module.` (as `nn.DataParallel` does); load with \
         `LoadOptions::default().strip_prefix(\"module.\")` or `Weights::strip_prefix(\"module.\")`"
    );
    // The fix the message names works.
    assert_eq!(w.strip_prefix("module."), Ok(2));
    assert_eq!(names(&w), ["fc.bias", "fc.weight"]);
    assert_eq!(w.take("fc.weight", "fc", &[2, 3]).unwrap(), [0.0; 6]);
    assert_eq!(w.take("fc.bias", "fc", &[2]).unwrap(), [1.0; 2]);
    assert!(w.finish(true).unwrap().is_empty());
}

#[test]
fn weights_prefix_hint_names_the_prefix_most_tensors_share() {
    // `model.` is the common prefix; `head.model.fc.weight` is another tensor that happens to end
    // the same way.
    let w = weights(&[
        ("model.conv.weight", &[1]),
        ("model.fc.weight", &[1]),
        ("model.fc.bias", &[1]),
        ("head.model.fc.weight", &[1]),
    ]);
    let err = w.clone().take("fc.weight", "fc", &[1]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingTensorHint { .. }), "{err:?}");
    assert!(msg.contains("the file has `model.fc.weight`") && msg.contains("strip_prefix(\"model.\")"), "{msg}");
    // Nested prefixes: `module.model.` is the one to strip.
    let w = weights(&[("module.model.fc.weight", &[1]), ("module.model.fc.bias", &[1])]);
    let msg = w.clone().take("fc.bias", "fc", &[1]).unwrap_err().to_string();
    assert!(msg.contains("the prefix `module.model.`; load with"), "{msg}");
    // Not a prefix: a name that merely ends the same way (no `.` before the rest).
    let w = weights(&[("xfc.weight", &[1])]);
    let err = w.clone().take("fc.weight", "fc", &[1]).unwrap_err();
    assert_eq!(err, Error::MissingTensor { name: "fc.weight".into(), layer: "fc".into() });
}

#[test]
fn weights_strip_prefix_errors_leave_the_names() {
    let mut w = weights(&[("module.a", &[1]), ("a", &[1]), ("module.b", &[1])]);
    let err = w.strip_prefix("module.").unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "invalid prefix `module.`: `module.a` would become `a`, which the weights already hold"
    );
    assert_eq!(names(&w), ["a", "module.a", "module.b"]);
    let msg = w.strip_prefix("model.").unwrap_err().to_string();
    assert!(
        msg.contains("no tensor name starts with it") && msg.contains("[\"a\", \"module.a\", \"module.b\"]"),
        "{msg}"
    );
    assert!(w.strip_prefix("").unwrap_err().to_string().contains("it is empty"));
    let mut w = weights(&[("module.", &[1]), ("module.b", &[1])]);
    let msg = w.strip_prefix("module.").unwrap_err().to_string();
    assert!(msg.contains("tensor `module.` would lose its whole name"), "{msg}");
    assert_eq!(names(&w), ["module.", "module.b"]);
}

#[test]
fn weights_strip_prefix_keeps_data_and_taken_marks() {
    // `a.a.x` becomes `a.x` while `a.x` becomes `x`: no tensor is lost on the way.
    let mut w = weights(&[("a.a.x", &[1]), ("a.x", &[2]), ("keep", &[3])]);
    assert_eq!(w.take("a.x", "l", &[2]).unwrap(), [1.0; 2]);
    assert_eq!(w.strip_prefix("a."), Ok(2));
    assert_eq!(names(&w), ["a.x", "keep", "x"]);
    assert_eq!(w.unused(), ["a.x", "keep"], "the taken tensor stays taken under its new name");
    assert_eq!(w.take("a.x", "l", &[1]).unwrap(), [0.0]);
    assert_eq!(w.take("x", "l", &[2]).unwrap(), [1.0; 2]);
    assert_eq!(w.take("keep", "l", &[3]).unwrap(), [2.0; 3]);
    assert!(w.finish(true).unwrap().is_empty());
}

/// The message of loading `bytes` from memory, and from a file (with the path replaced by
/// `<bytes>`): the two must agree.
fn load_message(tag: &str, bytes: &[u8]) -> String {
    let from_bytes = Weights::from_bytes(bytes).unwrap_err();
    assert!(matches!(from_bytes, Error::Format { .. }), "{from_bytes:?}");
    let path = std::env::temp_dir().join(format!("lrp-weights-hints-{}-{tag}.pt", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let from_file = Weights::from_file(&path).unwrap_err();
    let _ = std::fs::remove_file(&path);
    let shown = path.display().to_string();
    assert_eq!(from_file.to_string().replace(&shown, "<bytes>"), from_bytes.to_string(), "{tag}");
    from_bytes.to_string()
}

#[test]
fn weights_pytorch_checkpoints_are_recognised() {
    // `torch.save` since PyTorch 1.6: a zip archive (its first local file header).
    let mut zip = b"PK\x03\x04\x00\x00\x08\x08\x00\x00".to_vec();
    zip.extend_from_slice(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x12\x00archive/data.pkl");
    zip.resize(400, 0);
    assert_eq!(
        load_message("zip", &zip),
        "`<bytes>` is not a valid safetensors file: it is a PyTorch zip checkpoint (written by `torch.save`), \
         not safetensors; save the weights with \
         `safetensors.torch.save_file(model.state_dict(), \"weights.safetensors\")`"
    );
    // The legacy format: a pickle (protocol 2) of the magic number, then more pickles.
    let legacy = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}q\x00.";
    let msg = load_message("pickle", legacy);
    assert!(msg.contains("it is a PyTorch pickle checkpoint") && msg.contains("safetensors.torch.save_file("), "{msg}");
    for protocol in 2..=5u8 {
        let msg = load_message(&format!("p{protocol}"), &[0x80, protocol, b'}', b'.']);
        assert!(msg.contains("PyTorch pickle checkpoint"), "{protocol}: {msg}");
    }
    // Other garbage is not called a checkpoint.
    let msg = load_message("other", b"\x80\x01garbage-garbage");
    assert!(!msg.contains("PyTorch"), "{msg}");
}

#[test]
fn weights_safetensors_starting_like_a_pickle_still_loads() {
    // A valid file whose header is 640 bytes long starts with the bytes `80 02`, as a pickle
    // does: it is parsed as safetensors, not refused as a checkpoint.
    let mut header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_string();
    header.push_str(&" ".repeat(640 - header.len()));
    let mut bytes = 640u64.to_le_bytes().to_vec();
    assert_eq!(&bytes[..2], b"\x80\x02");
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&2.5f32.to_le_bytes());
    assert_eq!(Weights::from_bytes(&bytes).unwrap().take("w", "l", &[1]).unwrap(), [2.5]);
    // Such a file with a fault reports that fault (found by the fuzzer: the shape of rank 17 was
    // reported as a pickle).
    let deep = r#"{"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#;
    bytes[8..8 + deep.len()].copy_from_slice(deep.as_bytes());
    let msg = Weights::from_bytes(&bytes).unwrap_err().to_string();
    assert!(msg.contains("`w` has more than 16 dimensions") && !msg.contains("PyTorch"), "{msg}");
    // Truncated inside its header, it is reported as truncated, from bytes and from a file.
    let msg = load_message("truncated-640", &bytes[..8 + 100]);
    assert!(!msg.contains("PyTorch") && msg.contains("truncated"), "{msg}");
}

/// A VGG-like feature stack as saved: convolutions at indices 0, 2 and 5 (ReLUs and a pool
/// between them hold no tensors).
fn features() -> Weights {
    weights(&[
        ("features.0.weight", &[8, 3, 3, 3]),
        ("features.0.bias", &[8]),
        ("features.2.weight", &[16, 8, 3, 3]),
        ("features.2.bias", &[16]),
        ("features.5.weight", &[32, 16, 3, 3]),
        ("features.5.bias", &[32]),
    ])
}

#[test]
fn weights_shape_mismatch_with_a_shifted_layer() {
    // The spec leaves out the pool: it expects the third convolution at index 4.
    let mut w = features();
    let err = w.take("features.4.weight", "features.4", &[32, 16, 3, 3]).unwrap_err();
    assert!(matches!(&err, Error::MissingTensorHint { name, .. } if name == "features.4.weight"), "{err:?}");
    assert_eq!(
        err.to_string(),
        "tensor `features.4.weight` (needed by layer `features.4`) is missing from the weights; \
         `features.5.weight` has the expected shape [32, 16, 3, 3]: does the spec leave out a layer before \
         `features.4`?"
    );
    // The spec adds a layer: it expects the second convolution at index 5, where the file has the
    // third (a shape mismatch), and the second sits 3 lower.
    let err = w.take("features.5.weight", "features.5", &[16, 8, 3, 3]).unwrap_err();
    let Error::ShapeMismatchHint { name, expected, found, hint } = &err else { panic!("{err:?}") };
    assert_eq!(
        (name.as_str(), &expected[..], &found[..]),
        ("features.5.weight", &[16, 8, 3, 3][..], &[32, 16, 3, 3][..])
    );
    assert_eq!(
        hint,
        "`features.2.weight` has the expected shape [16, 8, 3, 3]: does the spec add 3 layers before `features.5`?"
    );
    assert!(err.to_string().starts_with("tensor `features.5.weight` has shape [32, 16, 3, 3], but the network expects [16, 8, 3, 3]; `features.2.weight`"), "{err}");
    // Shifted by 2, the bias of a missing index.
    let err = w.take("features.3.bias", "features.3", &[32]).unwrap_err();
    assert!(
        err.to_string().ends_with(
            "`features.5.bias` has the expected shape [32]: does the spec leave out 2 layers before `features.3`?"
        ),
        "{err}"
    );
    assert_eq!(w.unused().len(), 6, "failed takes mark nothing used");
}

#[test]
fn weights_no_shift_hint_without_a_matching_neighbour() {
    let mut w = features();
    // A wrong shape with no neighbour of the expected one: the plain error.
    let err = w.take("features.2.weight", "features.2", &[16, 8, 5, 5]).unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            name: "features.2.weight".into(),
            expected: vec![16, 8, 5, 5],
            found: vec![16, 8, 3, 3]
        }
    );
    // The neighbour at 4 shifts is too far; one without a numeric segment has none.
    let mut far = weights(&[("layers.0.w", &[2]), ("layers.4.w", &[3])]);
    let err = far.take("layers.0.w", "layers.0", &[3]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    let err = w.take("classifier.weight", "classifier", &[8]).unwrap_err();
    assert_eq!(err, Error::MissingTensor { name: "classifier.weight".into(), layer: "classifier".into() });
    // Several numeric segments: the one that shifted is found (`blocks.1.convs.3` for `.2`).
    let mut nested = weights(&[("blocks.1.convs.3.weight", &[4, 4])]);
    let msg = nested.take("blocks.1.convs.2.weight", "blocks.1.convs.2", &[4, 4]).unwrap_err().to_string();
    assert!(
        msg.contains("`blocks.1.convs.3.weight` has the expected shape [4, 4]")
            && msg.contains("before `blocks.1.convs.2`?"),
        "{msg}"
    );
}

/// A file of empty F32 tensors with these names (no data).
fn empty_tensors(names: impl Iterator<Item = String>) -> Weights {
    let entries: Vec<String> =
        names.map(|n| format!(r#""{n}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#)).collect();
    let header = format!("{{{}}}", entries.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    Weights::from_bytes(&bytes).unwrap()
}

#[test]
fn weights_prefix_hint_is_fast_on_hostile_files() {
    // 100,000 tensors that all end in the missing name, each under another prefix.
    let w = empty_tensors((0..100_000).map(|i| format!("p{i}.fc.weight")));
    let start = std::time::Instant::now();
    let err = w.clone().take("fc.weight", "fc", &[0]).unwrap_err();
    assert!(start.elapsed() < std::time::Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(matches!(err, Error::MissingTensorHint { .. }), "{err:?}");
    // 2,000 nested prefixes (`p.fc.weight`, `p.p.fc.weight`, ...): every one is a candidate and
    // `p.` is shared by all.
    let w = empty_tensors((1..=2_000).map(|k| format!("{}fc.weight", "p.".repeat(k))));
    let start = std::time::Instant::now();
    let msg = w.clone().take("fc.weight", "fc", &[0]).unwrap_err().to_string();
    assert!(start.elapsed() < std::time::Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(msg.contains("the prefix `p.`;"), "{}", &msg[..200]);
}
