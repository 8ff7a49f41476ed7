//! Sequences of any length (`tokens`) inside graphs: an image-like vector and a question read
//! together, the question reduced by an Embedding and an LSTM per sample at its own length,
//! batched with other lengths. Checked by composition against models already checked elsewhere
//! (the LSTM against its LRP-all fixtures, the dense layers against Zennit): the graph's
//! explanation must equal the head's explanation with the LSTM's output given as a tensor
//! input, continued through the question chain by `explain_from`; gradient x input against
//! central differences on the embedding table; conservation with biases zero.

mod common;
use common::values;
use lrp::runtime::weights::serialize_f32;

lrp::network! {
    /// `head([relu(img(image)); lstm(embedding(question))])`.
    Vqa(inputs(image = [6], question = tokens), composite = Epsilon(1e-9)) {
        img: image -> { Linear(6, 8, bias = false), ReLU },
        txt: question -> {
            embedding: Embedding(11, 5),
            lstm: LSTM(5, 4, bidirectional = true, rule = LrpAll(epsilon = 1e-9)),
        },
        joined: Concat(img, txt, dim = 0),
        head: { Linear(16, 8, bias = false), ReLU, Linear(8, 3, bias = false) },
    }
}

lrp::network! {
    /// [`Vqa`] with the LSTM's output given: `h`.
    Head(inputs(image = [6], h = [8]), composite = Epsilon(1e-9)) {
        img: image -> { Linear(6, 8, bias = false), ReLU },
        joined: Concat(img, h, dim = 0),
        head: { Linear(16, 8, bias = false), ReLU, Linear(8, 3, bias = false) },
    }
}

lrp::network! {
    /// [`Vqa`]'s question chain alone: its output is the LSTM's.
    Question(input = tokens) {
        txt: {
            embedding: Embedding(11, 5),
            lstm: LSTM(5, 4, bidirectional = true, rule = LrpAll(epsilon = 1e-9)),
        },
    }
}

lrp::network! {
    /// One sequence input in a graph: a residual block after the LSTM.
    Residual(input = tokens, composite = Epsilon(1e-9)) {
        embedding: Embedding(11, 5),
        lstm: LSTM(5, 8, rule = LrpAll(epsilon = 1e-9)),
        Sum { block: { Linear(8, 8, bias = false), ReLU, Linear(8, 8, bias = false) }, {} },
        head: Linear(8, 3, bias = false),
    }
}

/// The tensors of [`Vqa`] (a superset of [`Head`]'s and [`Question`]'s), biases zero; the
/// embedding table `embedding` if given.
fn vqa_tensors(seed: usize, embedding: Option<&[f32]>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let table = embedding.map_or_else(|| values(55, seed, 1.0), <[f32]>::to_vec);
    let mut tensors = vec![
        ("img.0.weight".to_string(), vec![8, 6], values(48, seed + 1, 0.6)),
        ("txt.embedding.weight".to_string(), vec![11, 5], table),
        ("head.0.weight".to_string(), vec![8, 16], values(128, seed + 2, 0.5)),
        ("head.2.weight".to_string(), vec![3, 8], values(24, seed + 3, 0.5)),
    ];
    for (k, sfx) in ["", "_reverse"].iter().enumerate() {
        let k = seed + 10 + 3 * k;
        tensors.push((format!("txt.lstm.weight_ih_l0{sfx}"), vec![16, 5], values(80, k, 0.6)));
        tensors.push((format!("txt.lstm.weight_hh_l0{sfx}"), vec![16, 4], values(64, k + 1, 0.6)));
        tensors.push((format!("txt.lstm.bias_ih_l0{sfx}"), vec![16], vec![0.0; 16]));
        tensors.push((format!("txt.lstm.bias_hh_l0{sfx}"), vec![16], vec![0.0; 16]));
    }
    tensors
}

fn bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    serialize_f32(&refs).unwrap()
}

/// Three questions of different lengths, and their images.
fn batch() -> (Vec<f32>, Vec<Vec<usize>>) {
    let questions = vec![vec![3, 1, 4, 1, 5], vec![9, 2, 6, 5, 3, 5, 8, 9, 7], vec![10, 0]];
    (values(3 * 6, 99, 1.5), questions)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{k}]: {g} vs {w} (max |want| {scale})");
    }
}

#[test]
fn the_question_is_explained_through_its_lstm_and_batched_over_lengths() {
    let weights = bytes(&vqa_tensors(1, None));
    let (vqa, head, question) = (
        Vqa::from_bytes(&weights).unwrap(),
        Head::from_bytes(&weights).unwrap(),
        Question::from_bytes(&weights).unwrap(),
    );
    let (images, questions) = batch();
    let refs: Vec<&[usize]> = questions.iter().map(Vec::as_slice).collect();
    let mut ws = vqa.workspace(9, 3).unwrap();
    let e =
        vqa.explain_batch(&mut ws, &VqaInput { image: &images, question: &refs }, 3, lrp::Target::Predicted).unwrap();
    assert_eq!(e.question.lengths, [5, 9, 2]);
    assert_eq!(e.question.relevance.len(), 16 * 5);
    assert_eq!(e.image.relevance.len(), 3 * 6);
    let (logits, targets) = (e.image.logits.to_vec(), e.image.targets.to_vec());
    let (r_image, r_question) = (e.image.relevance.to_vec(), e.question.relevance.to_vec());
    let (mut head_ws, mut q_ws) = (head.workspace(1).unwrap(), question.workspace(9, 1).unwrap());
    for (i, q) in questions.iter().enumerate() {
        let h = question.predict(&mut q_ws, q).unwrap().to_vec();
        let image = &images[i * 6..(i + 1) * 6];
        let r = head.explain(&mut head_ws, &HeadInput { image, h: &h }, targets[i]).unwrap();
        assert_close("logits", &logits[i * 3..(i + 1) * 3], r.image.logits, 1e-6);
        assert_close("image relevance", &r_image[i * 6..(i + 1) * 6], r.image.relevance, 1e-5);
        let r_h = r.h.relevance.to_vec();
        let want = question.explain_from(&mut q_ws, q, &r_h).unwrap().relevance.to_vec();
        let offset: usize = questions[..i].iter().map(|q| q.len() * 5).sum();
        assert_close("question relevance", &r_question[offset..offset + q.len() * 5], &want, 1e-5);
        // Biases zero and tiny epsilons: image and question share the logit.
        let total: f32 = r_image[i * 6..(i + 1) * 6].iter().chain(&r_question[offset..offset + q.len() * 5]).sum();
        let logit = logits[i * 3 + targets[i]];
        assert!((total - logit).abs() <= 1e-4 * logit.abs().max(1e-3), "sample {i}: {total} vs logit {logit}");
    }
    // One sample at a time gives the same as the batch (up to the order of the products' sums).
    let one = vqa.explain(&mut ws, &VqaInput { image: &images[6..12], question: &refs[1..2] }, targets[1]).unwrap();
    assert_close("one question", one.question.relevance, &r_question[25..70], 1e-6);
    assert_close("one image", one.image.relevance, &r_image[6..12], 1e-6);
    assert_eq!(one.question.lengths, [9]);
}

#[test]
fn gradient_x_input_of_the_question_matches_central_differences() {
    let tensors = vqa_tensors(2, None);
    let vqa = Vqa::from_bytes(&bytes(&tensors)).unwrap();
    let (images, _) = batch();
    let (image, q) = (&images[..6], [7usize, 2, 9, 4]);
    let mut ws = vqa.workspace(4, 1).unwrap();
    let input = VqaInput { image, question: &[&q] };
    let g = vqa.gradient_x_input(&mut ws, &input, 0).unwrap();
    let (g_question, g_image) = (g.question.relevance.to_vec(), g.image.relevance.to_vec());
    let table = tensors[1].2.clone();
    let logit = |table: &[f32], image: &[f32]| {
        let model = Vqa::from_bytes(&bytes(&vqa_tensors(2, Some(table)))).unwrap();
        let mut ws = model.workspace(4, 1).unwrap();
        f64::from(model.predict(&mut ws, &VqaInput { image, question: &[&q] }).unwrap()[0])
    };
    let delta = 2e-3f32;
    for (t, &token) in q.iter().enumerate() {
        for k in 0..5 {
            let (mut up, mut down) = (table.clone(), table.clone());
            up[token * 5 + k] += delta;
            down[token * 5 + k] -= delta;
            let slope = (logit(&up, image) - logit(&down, image)) / (2.0 * f64::from(delta));
            let want = slope * f64::from(table[token * 5 + k]);
            let got = f64::from(g_question[t * 5 + k]);
            assert!((got - want).abs() <= 2e-3 * want.abs().max(0.05), "token {t}, dim {k}: {got} vs {want}");
        }
    }
    for j in 0..6 {
        let (mut up, mut down) = (image.to_vec(), image.to_vec());
        up[j] += delta;
        down[j] -= delta;
        let slope = (logit(&table, &up) - logit(&table, &down)) / (2.0 * f64::from(delta));
        let want = slope * f64::from(image[j]);
        let got = f64::from(g_image[j]);
        assert!((got - want).abs() <= 2e-3 * want.abs().max(0.05), "image {j}: {got} vs {want}");
    }
}

#[test]
fn bad_sequences_are_errors_naming_what_is_wrong() {
    let vqa = Vqa::from_bytes(&bytes(&vqa_tensors(3, None))).unwrap();
    let mut ws = vqa.workspace(4, 2).unwrap();
    let image = values(12, 5, 1.0);
    let long = [1usize; 5];
    let err = vqa.predict_batch(&mut ws, &VqaInput { image: &image, question: &[&[1, 2], &long] }, 2).unwrap_err();
    assert_eq!(err, lrp::Error::SequenceLength { length: 5, capacity: 4 });
    let err = vqa.predict_batch(&mut ws, &VqaInput { image: &image, question: &[&[1, 2], &[]] }, 2).unwrap_err();
    assert_eq!(err, lrp::Error::SequenceLength { length: 0, capacity: 4 });
    let err = vqa.predict_batch(&mut ws, &VqaInput { image: &image, question: &[&[1, 2]] }, 2).unwrap_err();
    assert!(err.to_string().contains("sequences of input `question` of `Vqa`"), "{err}");
    let err = vqa.predict_batch(&mut ws, &VqaInput { image: &image, question: &[&[1, 2], &[3, 11]] }, 2).unwrap_err();
    assert_eq!(err, lrp::Error::TokenOutOfRange { position: 1, token: 11, vocab: 11 });
    // The workspace still works.
    let ok = vqa.predict_batch(&mut ws, &VqaInput { image: &image, question: &[&[1, 2], &[3, 4, 5, 6]] }, 2).unwrap();
    assert!(ok.iter().all(|v| v.is_finite()));
    assert_eq!(ws.max_len(), 4);
}

#[test]
fn one_sequence_input_may_feed_a_graph() {
    let mut tensors = vec![
        ("embedding.weight".to_string(), vec![11, 5], values(55, 7, 1.0)),
        ("block.0.weight".to_string(), vec![8, 8], values(64, 8, 0.5)),
        ("block.2.weight".to_string(), vec![8, 8], values(64, 9, 0.5)),
        ("head.weight".to_string(), vec![3, 8], values(24, 10, 0.5)),
    ];
    tensors.push(("lstm.weight_ih_l0".to_string(), vec![32, 5], values(160, 11, 0.6)));
    tensors.push(("lstm.weight_hh_l0".to_string(), vec![32, 8], values(256, 12, 0.6)));
    tensors.push(("lstm.bias_ih_l0".to_string(), vec![32], vec![0.0; 32]));
    tensors.push(("lstm.bias_hh_l0".to_string(), vec![32], vec![0.0; 32]));
    let model = Residual::from_bytes(&bytes(&tensors)).unwrap();
    let mut ws = model.workspace(8, 2).unwrap();
    let (a, b) = ([1usize, 4, 2, 8, 5, 7], [3usize, 3, 0]);
    let e = model.explain_batch(&mut ws, &[&a, &b], lrp::Target::Predicted).unwrap();
    assert_eq!(e.lengths, [6, 3]);
    for i in 0..2 {
        let total: f32 = e.token_relevance(i).sum();
        let logit = e.logits[i * 3 + e.targets[i]];
        assert!((total - logit).abs() <= 1e-4 * logit.abs().max(1e-3), "sample {i}: {total} vs logit {logit}");
    }
}

/// `softmax(logits)[c]`.
fn prob(logits: &[f32], c: usize) -> f32 {
    let max = logits.iter().fold(f32::MIN, |m, &v| m.max(v));
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    (logits[c] - max).exp() / sum
}

#[test]
fn occlusion_zeroes_image_windows_and_single_words() {
    let tensors = vqa_tensors(4, None);
    let vqa = Vqa::from_bytes(&bytes(&tensors)).unwrap();
    let (images, _) = batch();
    // Distinct token ids within each question: zeroing a token's embedding is zeroing its row.
    let questions: [&[usize]; 2] = [&[3, 1, 4], &[9, 2, 6, 5, 8]];
    let mut ws = vqa.workspace(6, 2).unwrap();
    let input = VqaInput { image: &images[..12], question: &questions };
    let e = vqa.occlusion_batch(&mut ws, &input, 2, 0, &[&[2], &[1]]).unwrap();
    assert_eq!((e.image.relevance.len(), e.question.relevance.len(), e.question.lengths), (12, 8, &[3, 5][..]));
    assert_eq!(e.question.step_len(), 1);
    let (r_image, r_question) = (e.image.relevance.to_vec(), e.question.relevance.to_vec());
    let mut one = vqa.workspace(6, 1).unwrap();
    let p = |model: &Vqa, ws: &mut VqaWorkspace, image: &[f32], q: &[usize]| {
        prob(model.predict(ws, &VqaInput { image, question: &[q] }).unwrap(), 0)
    };
    let mut offset = 0;
    for (i, q) in questions.iter().enumerate() {
        let image = &images[i * 6..(i + 1) * 6];
        let base = p(&vqa, &mut one, image, q);
        for (t, &token) in q.iter().enumerate() {
            let mut table = tensors[1].2.clone();
            table[token * 5..(token + 1) * 5].fill(0.0);
            let zeroed = Vqa::from_bytes(&bytes(&vqa_tensors(4, Some(&table)))).unwrap();
            let want = base - p(&zeroed, &mut one, image, q);
            assert!(
                (r_question[offset + t] - want).abs() <= 1e-5,
                "sample {i} token {t}: {} vs {want}",
                r_question[offset + t]
            );
        }
        offset += q.len();
        for w in 0..3 {
            let mut occluded = image.to_vec();
            occluded[2 * w..2 * w + 2].fill(0.0);
            let want = base - p(&vqa, &mut one, &occluded, q);
            for j in 2 * w..2 * w + 2 {
                assert!((r_image[i * 6 + j] - want).abs() <= 1e-5, "sample {i} window {w}");
            }
        }
    }
    // Logits of the unoccluded batch, and a sequence's window must be one token.
    let logits = vqa.predict_batch(&mut ws, &input, 2).unwrap().to_vec();
    let e = vqa.occlusion_batch(&mut ws, &input, 2, 0, &[&[2], &[1]]).unwrap();
    assert_eq!(e.image.logits, logits);
    let err = vqa.occlusion_batch(&mut ws, &input, 2, 0, &[&[2], &[2]]).unwrap_err();
    assert!(err.to_string().contains("one token at a time"), "{err}");
}
