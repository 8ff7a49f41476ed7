//! The VQA fixtures of `tools/gen_vqa_reference.py`: a small Relation Network over an image's
//! cells (two convolutions with BatchNorm, `Objects`) and a question of any length (Embedding,
//! LSTM), every ordered pair with the question through `g`, `SetSum`, `f`. The reference is
//! Zennit 0.5.1 (AlphaBeta(1, 0) on every Conv2d and Linear, Norm at the set's sum, BatchNorms
//! folded forward beforehand) down to the image, the coordinates and the question vector, then the
//! LSTM-LRP reference algorithm (LRP-all, epsilon 0.001) down to the embeddings; gradient x input
//! by autograd; all in float64. Ours within `1e-4 * max|R|` per sample and quantity, logits within
//! `1e-5` relative, one sample at a time and the four as one batch of different lengths.

mod common;
use common::{Cases, assert_close_per_sample, assert_rel_close};

lrp::network! {
    VqaSmall(inputs(image = [3, 20, 20], question = tokens), composite = Alpha1Beta0) {
        conv: image -> {
            Conv2d(3, 6, kernel_size = 3, stride = 2), ReLU, BatchNorm2d(6),
            Conv2d(6, 6, kernel_size = 3, stride = 2), ReLU, BatchNorm2d(6),
        },
        objects: Objects,
        embedding: question -> Embedding(12, 5),
        lstm: LSTM(5, 7, rule = LrpAll(epsilon = 0.001)),
        pairs: Pairs(objects, lstm),
        g: { Linear(23, 10), ReLU, Linear(10, 10), ReLU },
        total: SetSum,
        f: { Linear(10, 10), ReLU, Linear(10, 4) },
    }
}

const WEIGHTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vqa/vqa_small.weights.safetensors");
const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vqa/vqa_small.cases.safetensors");

const IMAGE: usize = 3 * 20 * 20;
const COORDS: usize = 16 * 2;
const EMBEDDING: usize = 5;
const CLASSES: usize = 4;
const TOL: f32 = 1e-4;

struct Fixture {
    cases: Cases,
    tokens: Vec<Vec<usize>>,
}

impl Fixture {
    fn load() -> Fixture {
        let cases = Cases::load(CASES);
        let tokens = (0..cases.batch()).map(|n| cases.ints(&format!("tokens.{n}")).to_vec()).collect();
        Fixture { cases, tokens }
    }

    fn n(&self) -> usize {
        self.cases.batch()
    }

    fn lengths(&self) -> Vec<usize> {
        self.tokens.iter().map(Vec::len).collect()
    }
}

/// What one explanation (of fixture samples `first..first + n`) gives, copied out.
struct Got {
    logits: Vec<f32>,
    targets: Vec<usize>,
    image: Vec<f32>,
    question: Vec<f32>,
    lengths: Vec<usize>,
    coords: Vec<f32>,
}

/// Compares `got` with the fixture's `<kind>_image`, `<kind>_question.<n>` and (`coords`) `<kind>_coords`
/// (`kind`: `lrp` or `gxi`), each quantity per sample on its own scale; returns the worst ratio.
fn compare(what: &str, fx: &Fixture, kind: &str, first: usize, got: &Got, coords: bool) -> f32 {
    let n = got.targets.len();
    let samples = first..first + n;
    let cases = &fx.cases;
    assert_eq!(got.targets, &cases.target[samples.clone()], "{what}: targets");
    assert_rel_close(
        &format!("{what}: logits"),
        &got.logits,
        &cases.get("logits")[first * CLASSES..(first + n) * CLASSES],
        1e-5,
    );
    assert_eq!(got.lengths, &fx.lengths()[samples.clone()], "{what}: question lengths");
    let image = &cases.get(&format!("{kind}_image"))[first * IMAGE..(first + n) * IMAGE];
    let mut worst = assert_close_per_sample(&format!("{what}: {kind}_image"), &got.image, image, n, TOL);
    if coords {
        let want = &cases.get(&format!("{kind}_coords"))[first * COORDS..(first + n) * COORDS];
        worst = worst.max(assert_close_per_sample(&format!("{what}: {kind}_coords"), &got.coords, want, n, TOL));
    }
    assert_eq!(got.question.len(), got.lengths.iter().sum::<usize>() * EMBEDDING, "{what}: question relevance");
    let mut offset = 0;
    for (k, s) in samples.enumerate() {
        let len = got.lengths[k] * EMBEDDING;
        let name = format!("{kind}_question.{s}");
        let sample = &got.question[offset..offset + len];
        worst = worst.max(assert_close_per_sample(&format!("{what}: {name}"), sample, cases.get(&name), 1, TOL));
        offset += len;
    }
    worst
}

macro_rules! got {
    ($e:expr) => {{
        let e = $e;
        Got {
            logits: e.image.logits.to_vec(),
            targets: e.image.targets.to_vec(),
            image: e.image.relevance.to_vec(),
            question: e.question.relevance.to_vec(),
            lengths: e.question.lengths.to_vec(),
            coords: e.objects_coordinates.to_vec(),
        }
    }};
}

/// LRP (`explain`) or gradient x input of every fixture sample, one at a time and all as one
/// batch of different lengths, against the fixture's `kind` (`lrp` or `gxi`); returns the worst
/// error relative to each quantity's largest value.
fn check_each_and_the_batch(kind: &str) -> f32 {
    let fx = Fixture::load();
    let model = VqaSmall::load_strict(WEIGHTS).expect("the fixture's state_dict loads as it is");
    let (n, images, lrp) = (fx.n(), fx.cases.get("image"), kind == "lrp");
    let mut ws = model.workspace(9, n).unwrap();
    let run = |ws: &mut VqaSmallWorkspace, input: &VqaSmallInput, count: usize| {
        let e = match lrp {
            true => model.explain_batch(ws, input, count, lrp::Target::Predicted),
            false => model.gradient_x_input_batch(ws, input, count, lrp::Target::Predicted),
        };
        got!(e.expect("the explanation"))
    };
    let mut worst = 0f32;
    for i in 0..n {
        let input = VqaSmallInput { image: &images[i * IMAGE..(i + 1) * IMAGE], question: &[&fx.tokens[i]] };
        worst = worst.max(compare(&format!("sample {i}"), &fx, kind, i, &run(&mut ws, &input, 1), lrp));
    }
    let question: Vec<&[usize]> = fx.tokens.iter().map(Vec::as_slice).collect();
    let input = VqaSmallInput { image: images, question: &question };
    worst.max(compare("batch", &fx, kind, 0, &run(&mut ws, &input, n), lrp))
}

#[test]
fn lrp_matches_the_reference_one_sample_at_a_time_and_as_a_batch() {
    let worst = check_each_and_the_batch("lrp");
    eprintln!("LRP: worst error {worst:.1e} of max|R| (per sample and quantity)");
}

#[test]
fn gradient_x_input_matches_the_reference_one_sample_at_a_time_and_as_a_batch() {
    let worst = check_each_and_the_batch("gxi");
    eprintln!("gradient x input: worst error {worst:.1e} of max|gxi| (per sample and quantity)");
}

/// Gradient x input of the coordinates: `(cx, cy) * d f_c / d (cx, cy)` per object, as of any
/// input (the fixture's `gxi_coords`, autograd on the coordinates as a tensor).
#[test]
fn gradient_x_input_of_the_coordinates_is_coordinate_times_gradient() {
    let fx = Fixture::load();
    let model = VqaSmall::load_strict(WEIGHTS).expect("the fixture's state_dict loads as it is");
    let n = fx.n();
    let question: Vec<&[usize]> = fx.tokens.iter().map(Vec::as_slice).collect();
    let input = VqaSmallInput { image: fx.cases.get("image"), question: &question };
    let mut ws = model.workspace(9, n).unwrap();
    let e = model.gradient_x_input_batch(&mut ws, &input, n, lrp::Target::Predicted).expect("the batch");
    assert_eq!(e.image.targets, &fx.cases.target[..]);
    let (got, want) = (e.objects_coordinates, fx.cases.get("gxi_coords"));
    assert_close_per_sample("gxi_coords", got, want, n, TOL);
}

#[test]
fn the_fixture_is_the_one_described() {
    let fx = Fixture::load();
    assert_eq!(fx.n(), 4);
    assert_eq!(fx.lengths(), [3, 6, 1, 9]);
    assert_eq!(fx.cases.f32s["image"].0, [4, 3, 20, 20]);
    assert_eq!(fx.cases.f32s["lrp_coords"].0, [4, 16, 2]);
    assert_eq!(fx.cases.f32s["gxi_coords"].0, [4, 16, 2]);
    assert_eq!(fx.cases.target.len(), 4);
    for (n, len) in fx.lengths().into_iter().enumerate() {
        assert_eq!(fx.cases.f32s[&format!("lrp_question.{n}")].0, [len, EMBEDDING]);
        assert_eq!(fx.cases.f32s[&format!("gxi_question.{n}")].0, [len, EMBEDDING]);
    }
}

/// The GPU model (`LRP_DEVICE` selects the device; the emulated one by default) against the same
/// fixtures: LRP and gradient x input of the batch of different lengths, image, coordinates and
/// question, and each sample alone.
#[cfg(feature = "cuda")]
#[test]
fn the_gpu_model_matches_the_reference() {
    let fx = Fixture::load();
    let model = VqaSmall::load_strict(common::fixture(WEIGHTS)).expect("the fixture's state_dict loads as it is");
    let gpu = model.to_gpu(&common::gpu_device()).expect("upload");
    let (n, images) = (fx.n(), fx.cases.get("image"));
    let mut ws = gpu.workspace(9, n).unwrap();
    let question: Vec<&[usize]> = fx.tokens.iter().map(Vec::as_slice).collect();
    let input = VqaSmallInput { image: images, question: &question };
    let lrp = got!(gpu.explain_batch(&mut ws, &input, n, lrp::Target::Predicted).expect("explain"));
    let mut worst = compare("GPU batch", &fx, "lrp", 0, &lrp, true);
    let gxi = got!(gpu.gradient_x_input_batch(&mut ws, &input, n, lrp::Target::Predicted).expect("gradient x input"));
    worst = worst.max(compare("GPU batch", &fx, "gxi", 0, &gxi, true));
    for i in 0..n {
        let input = VqaSmallInput { image: &images[i * IMAGE..(i + 1) * IMAGE], question: &[&fx.tokens[i]] };
        let one = got!(gpu.explain_batch(&mut ws, &input, 1, lrp::Target::Predicted).expect("explain"));
        worst = worst.max(compare(&format!("GPU sample {i}"), &fx, "lrp", i, &one, true));
    }
    eprintln!("GPU: worst error {worst:.1e} of max|R| (per sample and quantity)");
}
