//! GPU models against their CPU models, on the device `LRP_DEVICE` selects (the emulated one by
//! default): every method on random inputs, for models that together use every custom kernel;
//! the last check fails on a kernel no model launched.
#![cfg(feature = "cuda")]

mod common;
use common::{assert_close_per_sample, assert_rel_close, values};
use lrp::runtime::gpu::{GpuTensorModel, ToGpu, launch_counts};
use lrp::runtime::weights::serialize_f32;

lrp::network! {
    /// Padded and strided convolutions under EpsilonGammaBox (z^B on the first), max-pooling
    /// with overlapping windows, a ReLU after pooling, average and adaptive pooling.
    PoolingCnn(input = [3, 32, 28], composite = EpsilonGammaBox(low = -2.0, high = 2.0)) {
        Conv2d(3, 6, kernel_size = 3, padding = 1),
        BatchNorm2d(6),
        ReLU,
        MaxPool2d(3, stride = 2, padding = 1),
        Conv2d(6, 8, kernel_size = 3, stride = 2),
        MaxPool2d(2),
        ReLU,
        AvgPool2d(2, stride = 1),
        AdaptiveAvgPool2d([3, 2]),
        Flatten,
        Linear(48, 12),
        ReLU,
        Linear(12, 5),
    }
}

lrp::network! {
    /// Rules that read both signs of the input, and constant inputs.
    SignedMlp(input = [10], composite = Epsilon(0.1)) {
        Linear(10, 9, rule = AlphaBeta(alpha = 2, beta = 1)),
        ReLU,
        Linear(9, 8, rule = Flat),
        ReLU,
        Linear(8, 7, rule = WSquare),
        ReLU,
        Linear(7, 4, rule = Gamma(0.5)),
    }
}

lrp::network! {
    /// Sums with a shortcut (a fan-out), a concatenation, Tanh and Sigmoid.
    Branchy(input = [6], composite = Epsilon(0.01)) {
        stem: { Linear(6, 8), ReLU },
        Sum {
            main: { Linear(8, 8), ReLU, Linear(8, 8) },
            {},
        },
        ReLU,
        Concat(dim = 0) {
            left: { Linear(8, 4), Sigmoid },
            right: { Tanh, Linear(8, 3) },
        },
        head: Linear(7, 3),
    }
}

lrp::network! {
    /// A row-wise Linear, an explicit BatchNorm1d over its rows, a transpose, a 1-d convolution.
    Rows(input = [5, 8], composite = Epsilon(0.01)) {
        fc1: Linear(8, 6), bn: BatchNorm1d(5), ReLU,
        Transpose(0, 1), conv: Conv1d(6, 4, kernel_size = 3), ReLU,
        Flatten, fc2: Linear(12, 3),
    }
}

lrp::network! {
    /// A Relation Network of one input: objects, their pairs, a Linear on every pair, the set sum.
    Relations(input = [3, 3, 2], composite = Alpha1Beta0) {
        feats: { Conv2d(3, 4, kernel_size = 1), ReLU },
        objects: Objects,
        pairs: Pairs(objects),
        g: { Linear(12, 6), ReLU },
        total: SetSum,
        head: Linear(6, 3),
    }
}

/// Random weights (BatchNorm variances positive).
fn random_weights(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let data: Vec<Vec<f32>> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f32;
            let v = values(n, i + 1, (3.0 / fan_in).sqrt());
            if name.ends_with("running_var") { v.iter().map(|x| 1.0 + x.abs()).collect() } else { v }
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    serialize_f32(&refs).unwrap()
}

/// The GPU model of `model` against the CPU model on `n` random samples: predict, explain (for
/// the predicted class), gradient x input and explain_from, per sample within `1e-4 max|R|`.
fn check<M: lrp::TensorModel + ToGpu>(model: &M, n: usize) {
    let input = values(n * M::INPUT_LEN, 3, 2.0);
    let device = common::gpu_device();
    let gpu = model.to_gpu(&device).unwrap();
    let (mut gws, mut ws) = (gpu.workspace(n).unwrap(), model.workspace_for(lrp::Capacity::samples(n)).unwrap());
    let want = model.predict_batch(&mut ws, &input, n).unwrap().to_vec();
    assert_rel_close("predict", gpu.predict_batch(&mut gws, &input, n).unwrap(), &want, 1e-5);
    let want = model.explain_batch(&mut ws, &input, n, lrp::Target::Predicted).unwrap();
    let (targets, relevance) = (want.targets.to_vec(), want.relevance.to_vec());
    let got = gpu.explain_batch(&mut gws, &input, n, lrp::Target::Predicted).unwrap();
    assert_eq!(got.targets, &targets[..]);
    assert_close_per_sample("explain", got.relevance, &relevance, n, 1e-4);
    let samples = || input.chunks_exact(M::INPUT_LEN);
    let target = lrp::Target::Class(2);
    let want: Vec<f32> =
        samples().flat_map(|x| model.gradient_x_input(&mut ws, x, target).unwrap().relevance.to_vec()).collect();
    let got = gpu.gradient_x_input_batch(&mut gws, &input, n, target).unwrap();
    assert_close_per_sample("gradient x input", got.relevance, &want, n, 1e-4);
    let given = values(n * M::CLASSES, 4, 1.0);
    let want: Vec<f32> = samples()
        .zip(given.chunks_exact(M::CLASSES))
        .flat_map(|(x, r)| model.explain_from(&mut ws, x, r).unwrap().relevance.to_vec())
        .collect();
    let got = gpu.explain_from_batch(&mut gws, &input, n, &given).unwrap();
    assert_close_per_sample("explain_from", got.relevance, &want, n, 1e-4);
}

#[test]
fn every_kernel_runs_in_a_model_and_agrees_with_the_cpu() {
    check(&PoolingCnn::from_bytes(&random_weights(PoolingCnn::TENSORS)).unwrap(), 3);
    check(&SignedMlp::from_bytes(&random_weights(SignedMlp::TENSORS)).unwrap(), 4);
    check(&Branchy::from_bytes(&random_weights(Branchy::TENSORS)).unwrap(), 3);
    check(&Rows::from_bytes(&random_weights(Rows::TENSORS)).unwrap(), 2);
    check(&Relations::from_bytes(&random_weights(Relations::TENSORS)).unwrap(), 3);
    check_several_inputs();
    check_token_models();
    check_occlusion();
    check_results_on_the_device();
    let never: Vec<&str> = launch_counts().into_iter().filter(|(_, c)| *c == 0).map(|(n, _)| n).collect();
    assert!(never.is_empty(), "kernels no GPU model launched: {never:?}");
    println!("every one of {} kernels ran in a GPU model", launch_counts().len());
}

/// Misuse of a GPU model is an error that says what is wrong, never a panic.
#[test]
fn bad_calls_are_errors() {
    let model = SignedMlp::from_bytes(&random_weights(SignedMlp::TENSORS)).unwrap();
    let gpu = model.to_gpu(&common::gpu_device()).unwrap();
    let mut ws = gpu.workspace(2).unwrap();
    let x = values(3 * 10, 5, 1.0);
    let e = gpu.predict_batch(&mut ws, &x, 3).unwrap_err();
    assert!(matches!(e, lrp::Error::BatchCapacity { capacity: 2, requested: 3 }), "{e}");
    assert!(gpu.predict_batch(&mut ws, &x[..19], 2).is_err());
    let mut bad = x[..10].to_vec();
    bad[4] = f32::NAN;
    assert!(gpu.predict_batch(&mut ws, &bad, 1).unwrap_err().to_string().contains("NaN"));
    let e = gpu.explain_batch(&mut ws, &x[..10], 1, lrp::Target::Class(4)).unwrap_err();
    assert!(matches!(e, lrp::Error::TargetOutOfRange { target: 4, classes: 4 }), "{e}");
    assert!(gpu.explain_from_batch(&mut ws, &x[..10], 1, &[1.0, f32::INFINITY, 0.0, 0.0]).is_err());
    // A huge capacity is an error, not an abort.
    assert!(gpu.workspace(usize::MAX / 2).is_err());
}

lrp::network! {
    /// Two inputs through towers, concatenated.
    Towers(inputs(a = [6], b = [3]), composite = Epsilon(0.01)) {
        left: a -> { Linear(6, 4), ReLU },
        right: b -> { Linear(3, 4), Tanh },
        joined: Concat(left, right, dim = 0),
        head: Linear(8, 2),
    }
}

lrp::network! {
    /// A Relation Network: objects of an image, their pairs with a question vector.
    QuestionRn(inputs(image = [3, 2, 2], q = [3]), composite = Epsilon(0.01)) {
        objects: image -> Objects,
        pairs: Pairs(objects, q),
        g: { Linear(13, 8), ReLU, Linear(8, 8), ReLU },
        total: SetSum,
        f: { Linear(8, 8), ReLU, Linear(8, 3) },
    }
}

lrp::network! {
    /// Values and a fixed number of token ids, embedded on the device.
    Mixed(inputs(image = [4], words = tokens(3))) {
        img: image -> Linear(4, 5),
        txt: words -> { emb: Embedding(7, 2), Flatten, fc: Linear(6, 5) },
        Sum(img, txt),
        ReLU,
        head: Linear(5, 2),
    }
}

/// A model of several inputs on the GPU against the CPU: logits, targets, each input's
/// explanation and the coordinates' relevance, for explain and gradient x input.
macro_rules! check_inputs {
    ($model:ident, $input:expr, $n:expr, [$($field:ident),*], [$($coords:ident),*], $windows:expr) => {{
        check_inputs!($model, $input, $n, [$($field),*], [$($coords),*]);
        let model = $model::from_bytes(&random_weights($model::TENSORS)).unwrap();
        let gpu = model.to_gpu(&common::gpu_device()).unwrap();
        let (mut gws, mut ws) = (gpu.workspace($n).unwrap(), model.workspace($n).unwrap());
        let (input, windows): (_, &[&[usize]]) = ($input, $windows);
        let want = model.occlusion_batch(&mut ws, &input, $n, lrp::Target::Class(1), windows).unwrap();
        let got = gpu.occlusion_batch(&mut gws, &input, $n, lrp::Target::Class(1), windows).unwrap();
        $(
            assert_eq!(got.$field.relevance.len(), want.$field.relevance.len());
            assert_close_per_sample(concat!("occlusion of ", stringify!($field)), got.$field.relevance, want.$field.relevance, 1, 1e-4);
        )*
    }};
    ($model:ident, $input:expr, $n:expr, [$($field:ident),*], [$($coords:ident),*]) => {{
        let model = $model::from_bytes(&random_weights($model::TENSORS)).unwrap();
        let gpu = model.to_gpu(&common::gpu_device()).unwrap();
        let (mut gws, mut ws) = (gpu.workspace($n).unwrap(), model.workspace($n).unwrap());
        let input = $input;
        let want = model.explain_batch(&mut ws, &input, $n, lrp::Target::Predicted).unwrap();
        let got = gpu.explain_batch(&mut gws, &input, $n, lrp::Target::Predicted).unwrap();
        $(
            assert_eq!(got.$field.targets, want.$field.targets);
            assert_rel_close("logits", got.$field.logits, want.$field.logits, 1e-5);
            assert_close_per_sample(stringify!($field), got.$field.relevance, want.$field.relevance, $n, 1e-4);
        )*
        $( assert_close_per_sample(stringify!($coords), got.$coords, want.$coords, $n, 1e-4); )*
        let want = model.gradient_x_input_batch(&mut ws, &input, $n, lrp::Target::Class(1)).unwrap();
        let got = gpu.gradient_x_input_batch(&mut gws, &input, $n, lrp::Target::Class(1)).unwrap();
        $( assert_close_per_sample(stringify!($field), got.$field.relevance, want.$field.relevance, $n, 1e-4); )*
        $( assert_close_per_sample(stringify!($coords), got.$coords, want.$coords, $n, 1e-4); )*
    }};
}

/// Models of several inputs: each input's relevance and the coordinates' relevance.
fn check_several_inputs() {
    let (a, b) = (values(2 * 6, 7, 1.0), values(2 * 3, 8, 1.0));
    check_inputs!(Towers, TowersInput { a: &a, b: &b }, 2, [a, b], [], &[&[2], &[1]]);
    let (image, q) = (values(3 * 12, 9, 1.0), values(3 * 3, 10, 1.0));
    check_inputs!(
        QuestionRn,
        QuestionRnInput { image: &image, q: &q },
        3,
        [image, q],
        [objects_coordinates],
        &[&[3, 1, 2], &[2]]
    );
    let (image, words) = (values(2 * 4, 11, 1.0), [1usize, 6, 3, 0, 2, 5]);
    check_inputs!(Mixed, MixedInput { image: &image, words: &words }, 2, [image, words], []);
}

lrp::network! {
    /// A bidirectional two-layer LSTM (LRP-all) with a head of two dense layers.
    LstmText(input = tokens, composite = Epsilon(0.01)) {
        embedding: Embedding(11, 5),
        lstm: LSTM(5, 6, num_layers = 2, bidirectional = true, rule = LrpAll(epsilon = 0.001)),
        head: { Linear(12, 8), ReLU, Linear(8, 3) },
    }
}

lrp::network! {
    /// A GRU (LRP-half) with a residual head.
    GruText(input = tokens, composite = Epsilon(0.01)) {
        embedding: Embedding(9, 4),
        gru: GRU(4, 5, rule = LrpHalf(epsilon = 0.001)),
        Sum { block: { Linear(5, 5), ReLU, Linear(5, 5) }, {} },
        head: Linear(5, 2),
    }
}

/// A token model on the GPU against the CPU: each sequence's logits, LRP relevance, given
/// output relevance and gradient x input, and the batch of sequences of different lengths.
macro_rules! check_tokens {
    ($model:ident, $vocab:expr) => {{
        let model = $model::from_bytes(&random_weights($model::TENSORS)).unwrap();
        let gpu = model.to_gpu(&common::gpu_device()).unwrap();
        let (mut gws, mut ws) = (gpu.workspace(9, 3).unwrap(), model.workspace(9, 3).unwrap());
        let seqs: [Vec<usize>; 3] =
            [(0..7).map(|t| (t * 5 + 1) % $vocab).collect(), vec![2], (0..9).map(|t| (t * 3) % $vocab).collect()];
        let refs: Vec<&[usize]> = seqs.iter().map(Vec::as_slice).collect();
        let want = model.explain_batch(&mut ws, &refs, lrp::Target::Predicted).unwrap();
        let (logits, targets, relevance) = (want.logits.to_vec(), want.targets.to_vec(), want.relevance.to_vec());
        let got = gpu.explain_batch(&mut gws, &refs, lrp::Target::Predicted).unwrap();
        assert_eq!(got.targets, &targets[..]);
        assert_eq!(got.lengths, &[7, 1, 9][..]);
        // Per sequence, on the scale of its largest logit (a tiny logit's rounding is relative to it).
        assert_close_per_sample("logits", got.logits, &logits, 3, 1e-5);
        assert_close_per_sample("relevance of the batch", got.relevance, &relevance, 1, 1e-4);
        for tokens in &refs {
            let want = model.explain(&mut ws, tokens, lrp::Target::Class(1)).unwrap().relevance.to_vec();
            assert_close_per_sample(
                "explain",
                gpu.explain(&mut gws, tokens, lrp::Target::Class(1)).unwrap().relevance,
                &want,
                1,
                1e-4,
            );
            let want = model.gradient_x_input(&mut ws, tokens, lrp::Target::Class(0)).unwrap().relevance.to_vec();
            let got = gpu.gradient_x_input(&mut gws, tokens, lrp::Target::Class(0)).unwrap();
            assert_close_per_sample("gradient x input", got.relevance, &want, 1, 1e-4);
            let want = model.occlusion(&mut ws, tokens, lrp::Target::Class(0)).unwrap().relevance.to_vec();
            let got = gpu.occlusion(&mut gws, tokens, lrp::Target::Class(0)).unwrap();
            assert_close_per_sample("occlusion", got.relevance, &want, 1, 1e-4);
            let given = values($model::CLASSES, 12, 1.0);
            let want = model.explain_from(&mut ws, tokens, &given).unwrap().relevance.to_vec();
            assert_close_per_sample(
                "explain_from",
                gpu.explain_from(&mut gws, tokens, &given).unwrap().relevance,
                &want,
                1,
                1e-4,
            );
        }
        // The embeddings' relevance left on the device: the same numbers.
        let want = gpu.explain(&mut gws, refs[0], lrp::Target::Class(1)).unwrap().relevance.to_vec();
        let got = gpu.explain_on_device(&mut gws, refs[0], lrp::Target::Class(1)).unwrap();
        let mut on_device = vec![0.0; want.len()];
        gpu.device().read(got.relevance, 0, &mut on_device).unwrap();
        assert_eq!(on_device, want);
        let given = values($model::CLASSES, 17, 1.0);
        let want = gpu.explain_from(&mut gws, refs[2], &given).unwrap().relevance.to_vec();
        let given_d = gpu.device().upload("output relevance", &given).unwrap();
        let got = gpu.explain_from_on_device(&mut gws, refs[2], &given_d).unwrap();
        let mut on_device = vec![0.0; want.len()];
        gpu.device().read(got.relevance, 0, &mut on_device).unwrap();
        assert_eq!(on_device, want);
        let want = gpu.occlusion(&mut gws, refs[0], lrp::Target::Class(0)).unwrap().relevance.to_vec();
        let got = gpu.occlusion_on_device(&mut gws, refs[0], lrp::Target::Class(0)).unwrap();
        let mut on_device = vec![0.0; want.len()];
        gpu.device().read(got.relevance, 0, &mut on_device).unwrap();
        assert_eq!(on_device, want);
        assert!(gpu.predict(&mut gws, &[$vocab]).is_err(), "a token id out of range is an error");
        assert!(gpu.predict(&mut gws, &[0; 10]).is_err(), "a sequence longer than max_len is an error");
    }};
}

/// Token models: an LSTM and a GRU, each with a head.
fn check_token_models() {
    check_tokens!(LstmText, 11);
    check_tokens!(GruText, 9);
}

lrp::network! {
    /// An image beside a question of any length: an LSTM reduces it, sample by sample.
    ImageQuestion(inputs(image = [6], question = tokens), composite = Epsilon(0.01)) {
        img: image -> { Linear(6, 8), ReLU },
        txt: question -> {
            embedding: Embedding(11, 5),
            gru: GRU(5, 4, bidirectional = true, rule = LrpProp(epsilon = 0.001)),
        },
        joined: Concat(img, txt, dim = 0),
        head: { Linear(16, 8), ReLU, Linear(8, 3) },
    }
}

/// A graph with a sequence input, on a batch of questions of different lengths: both inputs'
/// relevance and gradient x input against the CPU.
#[test]
fn a_question_of_any_length_beside_an_image_agrees_with_the_cpu() {
    let model = ImageQuestion::from_bytes(&random_weights(ImageQuestion::TENSORS)).unwrap();
    let gpu = model.to_gpu(&common::gpu_device()).unwrap();
    let (mut gws, mut ws) = (gpu.workspace(9, 3).unwrap(), model.workspace(9, 3).unwrap());
    let image = values(3 * 6, 13, 1.0);
    let (a, b, c): (Vec<usize>, Vec<usize>, Vec<usize>) =
        (vec![1, 4, 9, 2, 2], (0..9).map(|t| t % 11).collect(), vec![7]);
    let question: [&[usize]; 3] = [&a, &b, &c];
    let input = ImageQuestionInput { image: &image, question: &question };
    let want = model.explain_batch(&mut ws, &input, 3, lrp::Target::Predicted).unwrap();
    let got = gpu.explain_batch(&mut gws, &input, 3, lrp::Target::Predicted).unwrap();
    assert_eq!(got.question.lengths, &[5, 9, 1][..]);
    assert_eq!(got.image.targets, want.image.targets);
    assert_rel_close("logits", got.image.logits, want.image.logits, 1e-5);
    assert_close_per_sample("image", got.image.relevance, want.image.relevance, 3, 1e-4);
    assert_close_per_sample("question", got.question.relevance, want.question.relevance, 1, 1e-4);
    let want = model.gradient_x_input_batch(&mut ws, &input, 3, lrp::Target::Class(2)).unwrap();
    let got = gpu.gradient_x_input_batch(&mut gws, &input, 3, lrp::Target::Class(2)).unwrap();
    assert_close_per_sample("image", got.image.relevance, want.image.relevance, 3, 1e-4);
    assert_close_per_sample("question", got.question.relevance, want.question.relevance, 1, 1e-4);
    let windows: [&[usize]; 2] = [&[4], &[1]];
    let want = model.occlusion_batch(&mut ws, &input, 3, lrp::Target::Class(0), &windows).unwrap();
    let (image, question) = (want.image.relevance.to_vec(), want.question.relevance.to_vec());
    let got = gpu.occlusion_batch(&mut gws, &input, 3, lrp::Target::Class(0), &windows).unwrap();
    assert_eq!(got.question.relevance.len(), 15, "one score per token");
    assert_close_per_sample("occlusion of the image", got.image.relevance, &image, 3, 1e-4);
    assert_close_per_sample("occlusion of the words", got.question.relevance, &question, 1, 1e-4);
    assert!(gpu.occlusion_batch(&mut gws, &input, 3, 0, &[&[4], &[2]]).is_err(), "a sequence's window is [1]");
    let long: [&[usize]; 1] = [&[0; 10]];
    assert!(gpu.predict_batch(&mut gws, &ImageQuestionInput { image: &image[..6], question: &long }, 1).is_err());
}

/// Occlusion on the device (each sample's occluded copies as batches) against the CPU's, with
/// windows that tile exactly and windows cut short at the edges, and a workspace smaller than a
/// sample's number of windows.
fn check_occlusion() {
    let model = PoolingCnn::from_bytes(&random_weights(PoolingCnn::TENSORS)).unwrap();
    let gpu = model.to_gpu(&common::gpu_device()).unwrap();
    let (mut gws, mut ws) = (gpu.workspace(5).unwrap(), model.workspace(5).unwrap());
    let input = values(2 * PoolingCnn::INPUT_LEN, 14, 2.0);
    for window in [[3, 8, 7], [1, 5, 6]] {
        let want = model.occlusion_batch(&mut ws, &input, 2, lrp::Target::Predicted, &window).unwrap();
        let (want_logits, want_relevance) = (want.logits.to_vec(), want.relevance.to_vec());
        let got = gpu.occlusion_batch(&mut gws, &input, 2, lrp::Target::Predicted, &window).unwrap();
        assert_rel_close("logits", got.logits, &want_logits, 1e-5);
        assert_close_per_sample("occlusion", got.relevance, &want_relevance, 2, 1e-4);
    }
    assert!(
        gpu.occlusion_batch(&mut gws, &input, 2, lrp::Target::Predicted, &[3, 8]).is_err(),
        "a window of the wrong rank"
    );
}

/// Inputs already on the device, results left there: the same numbers as through the host;
/// a NaN input or a buffer of another device is an error.
fn check_results_on_the_device() {
    let model = PoolingCnn::from_bytes(&random_weights(PoolingCnn::TENSORS)).unwrap();
    let device = common::gpu_device();
    let gpu = model.to_gpu(&device).unwrap();
    let mut gws = gpu.workspace(2).unwrap();
    let len = PoolingCnn::INPUT_LEN;
    let input = values(2 * len, 15, 2.0);
    let on_device = device.upload("images", &input).unwrap();
    let want = gpu.explain_batch(&mut gws, &input, 2, lrp::Target::Class(3)).unwrap().relevance.to_vec();
    let got = gpu.explain_on_device(&mut gws, &on_device, 2, lrp::Target::Class(3)).unwrap();
    assert_eq!(got.targets, &[3, 3]);
    let mut relevance = vec![0.0; 2 * len];
    device.read(got.relevance, 0, &mut relevance).unwrap();
    assert_eq!(relevance, want);
    let want = gpu.gradient_x_input_batch(&mut gws, &input, 2, lrp::Target::Class(0)).unwrap().relevance.to_vec();
    let got = gpu.gradient_x_input_on_device(&mut gws, &on_device, 2, lrp::Target::Class(0)).unwrap();
    device.read(got.relevance, 0, &mut relevance).unwrap();
    assert_eq!(relevance, want);
    let given = values(2 * PoolingCnn::CLASSES, 16, 1.0);
    let want = gpu.explain_from_batch(&mut gws, &input, 2, &given).unwrap().relevance.to_vec();
    let given_on_device = device.upload("output relevance", &given).unwrap();
    let got = gpu.explain_from_on_device(&mut gws, &on_device, 2, &given_on_device).unwrap();
    device.read(got.relevance, 0, &mut relevance).unwrap();
    assert_eq!(relevance, want);
    let want = gpu.occlusion_batch(&mut gws, &input, 2, lrp::Target::Class(1), &[3, 8, 7]).unwrap().relevance.to_vec();
    let got = gpu.occlusion_on_device(&mut gws, &on_device, 2, lrp::Target::Class(1), &[3, 8, 7]).unwrap();
    device.read(got.relevance, 0, &mut relevance).unwrap();
    assert_eq!(relevance, want);
    let logits = gpu.predict_on_device(&mut gws, &on_device, 1).unwrap();
    assert_eq!(device.download(logits).unwrap().len(), 2 * PoolingCnn::CLASSES);
    let mut bad = input.clone();
    bad[len + 5] = f32::NAN;
    let bad = device.upload("images", &bad).unwrap();
    let e = gpu.explain_on_device(&mut gws, &bad, 2, lrp::Target::Predicted).unwrap_err();
    assert!(matches!(e, lrp::Error::NonFiniteInput { sample: 1, index: 5, .. }), "{e}");
    let other = lrp::runtime::gpu::Device::emulated();
    let foreign = other.upload("images", &input).unwrap();
    assert!(gpu.predict_on_device(&mut gws, &foreign, 2).is_err());
}

/// Models of several inputs with their values on the device: the same numbers as through the
/// host, the relevance left on the device; token ids stay on the host.
#[test]
fn several_inputs_on_the_device_agree() {
    let device = common::gpu_device();
    let model = QuestionRn::from_bytes(&random_weights(QuestionRn::TENSORS)).unwrap();
    let gpu = model.to_gpu(&device).unwrap();
    let mut ws = gpu.workspace(3).unwrap();
    let (image, q) = (values(3 * 12, 9, 1.0), values(3 * 3, 10, 1.0));
    let want = gpu.explain_batch(&mut ws, &QuestionRnInput { image: &image, q: &q }, 3, lrp::Target::Class(2)).unwrap();
    let (want_image, want_q, want_coords) =
        (want.image.relevance.to_vec(), want.q.relevance.to_vec(), want.objects_coordinates.to_vec());
    let (image_d, q_d) = (device.upload("image", &image).unwrap(), device.upload("q", &q).unwrap());
    let got = gpu
        .explain_on_device(&mut ws, &QuestionRnGpuInput { image: &image_d, q: &q_d }, 3, lrp::Target::Class(2))
        .unwrap();
    assert_eq!(got.image.targets, &[2, 2, 2]);
    let read = |b: &lrp::runtime::gpu::DeviceBuffer, len: usize| {
        let mut v = vec![0.0; len];
        device.read(b, 0, &mut v).unwrap();
        v
    };
    assert_eq!(read(got.image.relevance, want_image.len()), want_image);
    assert_eq!(read(got.q.relevance, want_q.len()), want_q);
    assert_eq!(read(got.objects_coordinates, want_coords.len()), want_coords);
    let windows: [&[usize]; 2] = [&[3, 1, 2], &[2]];
    let want = gpu.occlusion_batch(&mut ws, &QuestionRnInput { image: &image, q: &q }, 3, 0, &windows).unwrap();
    let want_image = want.image.relevance.to_vec();
    let got =
        gpu.occlusion_on_device(&mut ws, &QuestionRnGpuInput { image: &image_d, q: &q_d }, 3, 0, &windows).unwrap();
    assert_eq!(read(got.image.relevance, want_image.len()), want_image);

    let model = ImageQuestion::from_bytes(&random_weights(ImageQuestion::TENSORS)).unwrap();
    let gpu = model.to_gpu(&device).unwrap();
    let mut ws = gpu.workspace(9, 2).unwrap();
    let image = values(2 * 6, 13, 1.0);
    let question: [&[usize]; 2] = [&[1, 4, 9], &[2, 2, 7, 7, 3]];
    let want =
        gpu.gradient_x_input_batch(&mut ws, &ImageQuestionInput { image: &image, question: &question }, 2, 1).unwrap();
    let (want_image, want_question) = (want.image.relevance.to_vec(), want.question.relevance.to_vec());
    let image_d = device.upload("image", &image).unwrap();
    let input = ImageQuestionGpuInput { image: &image_d, question: &question };
    let got = gpu.gradient_x_input_on_device(&mut ws, &input, 2, 1).unwrap();
    assert_eq!(got.question.lengths, &[3, 5]);
    assert_eq!(read(got.image.relevance, want_image.len()), want_image);
    assert_eq!(read(got.question.relevance, want_question.len()), want_question);
    let mut bad = image.clone();
    bad[7] = f32::INFINITY;
    let bad = device.upload("image", &bad).unwrap();
    let e =
        gpu.explain_on_device(&mut ws, &ImageQuestionGpuInput { image: &bad, question: &question }, 2, 0).unwrap_err();
    assert!(matches!(e, lrp::Error::NonFiniteInput { sample: 1, index: 1, .. }), "{e}");
}
