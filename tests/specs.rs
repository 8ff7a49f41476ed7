//! The specs shipped in `specs/` compile from their files and run: batches agree with single
//! samples, `explain_from` agrees with `explain`, nalgebra interop, and VGG-16's and the ResNets'
//! layouts (torchvision's `state_dict` names and shapes).

use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/mlp.lrp");
lrp::network!(file = "specs/lenet.lrp");
lrp::network!(file = "specs/vgg16.lrp");
lrp::network!(file = "specs/resnet18.lrp");
lrp::network!(file = "specs/resnet50.lrp");
lrp::network!(file = "specs/image_question.lrp");
lrp::network!(file = "specs/vqa.lrp");

/// Deterministic pseudo-random values in [-scale, scale].
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Random weights for `(name, shape)` tensors; BatchNorm variances positive.
fn weights(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let data: Vec<Vec<f32>> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f32;
            let v = values(i as u64 + 1, n, (3.0 / fan_in).sqrt());
            if name.ends_with("running_var") { v.iter().map(|x| 1.0 + x.abs()).collect() } else { v }
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    serialize_f32(&refs).unwrap()
}

fn lenet_weights() -> Vec<u8> {
    let bn = |p: &'static str, c: &'static [usize]| -> Vec<(String, &'static [usize])> {
        ["weight", "bias", "running_mean", "running_var"].iter().map(|t| (format!("{p}.{t}"), c)).collect()
    };
    let mut t: Vec<(String, &[usize])> = vec![
        ("features.0.weight".into(), &[6, 1, 5, 5]),
        ("features.0.bias".into(), &[6]),
        ("features.4.weight".into(), &[16, 6, 5, 5]),
        ("features.4.bias".into(), &[16]),
        ("classifier.0.weight".into(), &[120, 400]),
        ("classifier.0.bias".into(), &[120]),
        ("classifier.2.weight".into(), &[84, 120]),
        ("classifier.2.bias".into(), &[84]),
        ("classifier.4.weight".into(), &[10, 84]),
        ("classifier.4.bias".into(), &[10]),
    ];
    t.extend(bn("features.1", &[6]));
    t.extend(bn("features.5", &[16]));
    let refs: Vec<(&str, &[usize])> = t.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    weights(&refs)
}

#[test]
fn lenet_batches_agree_with_single_samples() {
    let model = LeNet::from_bytes(&lenet_weights()).expect("load");
    assert_eq!((LeNet::INPUT_SHAPE, LeNet::INPUT_LEN, LeNet::CLASSES), (&[1usize, 28, 28][..], 784, 10));
    let input: Vec<f32> = values(99, 3 * 784, 1.0).iter().map(|v| v.abs()).collect();
    let mut ws = model.workspace(3).unwrap();
    let batch = model.explain_batch(&mut ws, &input, 3, lrp::Target::Class(4)).expect("explain").relevance.to_vec();
    let logits = model.predict_batch(&mut ws, &input, 3).expect("predict").to_vec();
    let mut single_ws = model.workspace(1).unwrap();
    for i in 0..3 {
        let x = &input[i * 784..(i + 1) * 784];
        let e = model.explain(&mut single_ws, x, 4).expect("explain one");
        assert_eq!(e.targets, &[4]);
        for (a, b) in e.relevance.iter().zip(&batch[i * 784..(i + 1) * 784]) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "sample {i}: {a} vs {b}");
        }
        for (a, b) in e.logits.iter().zip(&logits[i * 10..(i + 1) * 10]) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()));
        }
    }
}

#[test]
fn mlp_explain_from_one_hot_equals_explain_and_converts_to_nalgebra() {
    let tensors: [(&str, &[usize]); 6] = [
        ("0.weight", &[512, 784]),
        ("0.bias", &[512]),
        ("2.weight", &[512, 512]),
        ("2.bias", &[512]),
        ("4.weight", &[10, 512]),
        ("4.bias", &[10]),
    ];
    let model = Mlp::from_bytes(&weights(&tensors)).expect("load");
    let x = lrp::nalgebra::DVector::from_iterator(784, values(5, 784, 1.0).into_iter().map(f32::abs));
    let mut ws = model.workspace(1).unwrap();
    let e = model.explain(&mut ws, x.as_slice(), lrp::Target::Class(3)).expect("explain");
    let (relevance, logit) = (e.to_dvector(0), e.logits[3]);
    assert_eq!(relevance.len(), 784);
    assert_eq!(e.to_dmatrix().expect("one sample is a matrix").shape(), (1, 784));
    let mut start = vec![0.0; 10];
    start[3] = logit;
    let from = model.explain_from(&mut ws, x.as_slice(), &start).expect("explain_from");
    assert_eq!(lrp::nalgebra::DVector::from_column_slice(from.relevance), relevance);
}

#[test]
fn vgg16_has_torchvision_layout() {
    assert_eq!(Vgg16::INPUT_SHAPE, &[3, 224, 224]);
    assert_eq!(Vgg16::CLASSES, 1000);
    // An empty file names the first tensor the network needs.
    let err = Vgg16::from_bytes(&serialize_f32(&[]).unwrap()).unwrap_err();
    assert_eq!(err, lrp::Error::MissingTensor { name: "features.0.weight".into(), layer: "features.0".into() });
    // torchvision's names: the last conv is features.28, the classifier's dense layers 0, 3, 6.
    assert_eq!(Vgg16::TENSORS.len(), 2 * 13 + 2 * 3);
    assert!(Vgg16::TENSORS.contains(&("features.28.weight", &[512, 512, 3, 3])));
    assert!(Vgg16::TENSORS.contains(&("classifier.0.weight", &[4096, 25088])));
    assert!(Vgg16::TENSORS.contains(&("classifier.6.bias", &[1000])));
}

/// `(name, shape)` of every tensor of a recorded `state_dict` (`tests/fixtures/*.state_dict.txt`:
/// torchvision's, and `tools/train_vqa.py`'s model).
fn torchvision_state_dict(model: &str) -> Vec<(String, Vec<usize>)> {
    let path = format!("{}/tests/fixtures/{model}.state_dict.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let entry = |line: &str| {
        let (name, shape) = line.split_once(' ').expect("name and shape");
        (name.to_string(), shape.split(',').map(|d| d.parse().expect("a size")).collect())
    };
    text.lines().filter(|l| !l.starts_with('#')).map(entry).collect()
}

#[test]
fn resnets_read_torchvisions_state_dicts() {
    for (model, tensors) in [("resnet18", ResNet18::TENSORS), ("resnet50", ResNet50::TENSORS)] {
        let mut ours: Vec<(String, Vec<usize>)> = tensors.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect();
        let mut theirs = torchvision_state_dict(model);
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{model}");
    }
    assert_eq!((ResNet18::INPUT_SHAPE, ResNet18::CLASSES, ResNet50::CLASSES), (&[3usize, 224, 224][..], 1000, 1000));
    // Every BatchNorm folds: a strict load of random weights succeeds and uses every tensor.
    let model = ResNet18::from_weights(&mut lrp::Weights::from_bytes(&weights(ResNet18::TENSORS)).unwrap(), true);
    assert!(model.is_ok(), "{:?}", model.err());
}

#[test]
fn image_question_reads_pytorch_names_and_mixed_lengths() {
    let names: Vec<&str> = ImageQuestion::TENSORS.iter().map(|(n, _)| *n).collect();
    for name in ["cnn.0.weight", "cnn.2.bias", "rnn.embedding.weight", "rnn.lstm.weight_hh_l0", "head.2.weight"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert_eq!(ImageQuestion::INPUTS, &[("image", &[3usize, 32, 32][..]), ("question", &[][..])]);
    let model =
        ImageQuestion::from_weights(&mut lrp::Weights::from_bytes(&weights(ImageQuestion::TENSORS)).unwrap(), true)
            .expect("a strict load uses every tensor");
    let image = values(3, 2 * 3 * 32 * 32, 1.0);
    let (a, b) = ([1usize, 5, 9, 39], [2usize, 7]);
    let mut ws = model.workspace(6, 2).unwrap();
    let input = ImageQuestionInput { image: &image, question: &[&a, &b] };
    let logits = model.predict_batch(&mut ws, &input, 2).unwrap().to_vec();
    let e = model.explain_batch(&mut ws, &input, 2, lrp::Target::Predicted).unwrap();
    assert_eq!(e.image.logits, logits);
    assert_eq!(
        (e.image.relevance.len(), e.question.relevance.len(), e.question.lengths),
        (2 * 3072, 6 * 16, &[4, 2][..])
    );
    assert_eq!(e.question.token_relevance(1).count(), 2);
    assert!(e.image.relevance.iter().chain(e.question.relevance).all(|r| r.is_finite()));
    assert!(e.question.relevance.iter().any(|r| *r != 0.0));
}

#[test]
fn vqa_reads_the_state_dict_of_the_training_script() {
    let mut ours: Vec<(String, Vec<usize>)> = Vqa::TENSORS.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect();
    let mut theirs = torchvision_state_dict("vqa");
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert_eq!(Vqa::INPUTS, &[("image", &[3usize, 75, 75][..]), ("question", &[][..])]);
    // Every BatchNorm folds (into the next convolution, the last into g.0's object columns).
    let model = Vqa::from_weights(&mut lrp::Weights::from_bytes(&weights(Vqa::TENSORS)).unwrap(), true);
    assert!(model.is_ok(), "{:?}", model.err());
}
