//! Runs `predict` or `explain` of a large model (random weights) a few times, for profilers:
//!
//! ```text
//! cargo build --release --example profile
//! perf record target/release/examples/profile vgg16 20 explain
//! ```
//!
//! Models: `vgg16` and `resnet50` (EpsilonGammaBox), `resnet50-plus` (EpsilonPlus), `vqa` (the
//! Relation Network of `specs/vqa.lrp` on a batch of 8 images and 9-word questions); then the
//! number of runs and `predict` (the default) or `explain`. Prints the time per run.

use lrp::runtime::weights::serialize_f32;
use std::time::Instant;

lrp::network!(file = "specs/vgg16.lrp");
lrp::network!(file = "specs/resnet50.lrp");
lrp::network!(file = "benches/resnet50_plus.lrp");
lrp::network!(file = "specs/vqa.lrp");

fn main() -> lrp::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let explain = args.get(3).is_some_and(|a| a == "explain");
    match args.get(1).map_or("vgg16", String::as_str) {
        "resnet50" => run::<ResNet50>(runs, explain),
        "resnet50-plus" => run::<ResNet50Plus>(runs, explain),
        "vqa" => run_vqa(runs, explain),
        _ => run::<Vgg16>(runs, explain),
    }
}

/// Safetensors bytes of random weights for `tensors`: uniform in `±sqrt(3 / fan_in)`, BatchNorm
/// variances in `[1, 2]`.
fn random_weights(tensors: &[(&str, &[usize])]) -> lrp::Result<Vec<u8>> {
    let data: Vec<Vec<f32>> = tensors
        .iter()
        .map(|(name, s)| {
            let fan_in = s.iter().skip(1).product::<usize>().max(1) as f32;
            let scale = (3.0 / fan_in).sqrt();
            (0..s.iter().product::<usize>())
                .map(|j| {
                    let v = ((j * 7919) % 2001) as f32 / 1000.0 - 1.0;
                    if name.ends_with("running_var") { 1.0 + v.abs() } else { v * scale }
                })
                .collect()
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    serialize_f32(&refs)
}

/// Times `runs` calls of `call` and prints the time per run.
fn time_runs(name: &str, runs: usize, explain: bool, mut call: impl FnMut() -> lrp::Result<f32>) -> lrp::Result<()> {
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(call()?);
    }
    let what = if explain { "explain" } else { "predict" };
    println!("{name} {what}: {:?} per run", start.elapsed() / runs.max(1) as u32);
    Ok(())
}

/// Loads `M` with random weights and times `runs` calls on one input.
fn run<M: lrp::TensorModel>(runs: usize, explain: bool) -> lrp::Result<()> {
    let model = M::from_bytes(&random_weights(M::TENSORS)?)?;
    let mut ws = model.workspace_for(lrp::Capacity::samples(1))?;
    let input: Vec<f32> = (0..M::INPUT_LEN).map(|i| (i % 255) as f32 / 255.0 - 0.5).collect();
    time_runs(M::NAME, runs, explain, || {
        if explain {
            Ok(model.explain(&mut ws, &input, lrp::Target::Predicted)?.relevance[0])
        } else {
            Ok(model.predict(&mut ws, &input)?[0])
        }
    })
}

/// The VQA model on 8 (image, question) pairs, as `cargo bench --bench models -- vqa/` runs it.
fn run_vqa(runs: usize, explain: bool) -> lrp::Result<()> {
    const BATCH: usize = 8;
    let model = Vqa::from_bytes(&random_weights(Vqa::TENSORS)?)?;
    let mut ws = model.workspace(9, BATCH)?;
    let image: Vec<f32> = (0..BATCH * 3 * 75 * 75).map(|i| (i % 255) as f32 / 255.0).collect();
    let questions: Vec<Vec<usize>> = (0..BATCH).map(|s| (0..9).map(|t| (s * 7 + t * 5) % 28).collect()).collect();
    let question: Vec<&[usize]> = questions.iter().map(Vec::as_slice).collect();
    let input = VqaInput { image: &image, question: &question };
    time_runs("Vqa (batch 8)", runs, explain, || {
        if explain {
            Ok(model.explain_batch(&mut ws, &input, BATCH, lrp::Target::Predicted)?.image.relevance[0])
        } else {
            Ok(model.predict_batch(&mut ws, &input, BATCH)?[0])
        }
    })
}
