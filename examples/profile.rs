//! Runs `predict` or `explain` of a large CNN (random weights) a few times, for profilers:
//!
//! ```text
//! cargo build --release --example profile
//! perf record target/release/examples/profile vgg16 20 explain
//! ```
//!
//! Models: `vgg16` and `resnet50` (EpsilonGammaBox), `resnet50-plus` (EpsilonPlus); then the
//! number of runs and `predict` (the default) or `explain`. Prints the time per run.

use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/vgg16.lrp");
lrp::network!(file = "specs/resnet50.lrp");
lrp::network!(file = "benches/resnet50_plus.lrp");

fn main() -> lrp::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let explain = args.get(3).is_some_and(|a| a == "explain");
    match args.get(1).map_or("vgg16", String::as_str) {
        "resnet50" => run::<ResNet50>(runs, explain),
        "resnet50-plus" => run::<ResNet50Plus>(runs, explain),
        _ => run::<Vgg16>(runs, explain),
    }
}

/// Loads `M` with random weights (BatchNorm variances positive, scaled by fan-in) and times
/// `runs` calls on one input.
fn run<M: lrp::TensorModel>(runs: usize, explain: bool) -> lrp::Result<()> {
    let data: Vec<Vec<f32>> = M::TENSORS
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
        M::TENSORS.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    let model = M::from_bytes(&serialize_f32(&refs)?)?;
    drop(data);
    let mut ws = model.workspace_for(lrp::Capacity::samples(1))?;
    let input: Vec<f32> = (0..M::INPUT_LEN).map(|i| (i % 255) as f32 / 255.0 - 0.5).collect();
    let start = std::time::Instant::now();
    for _ in 0..runs {
        if explain {
            std::hint::black_box(model.explain(&mut ws, &input, lrp::Target::Predicted)?.relevance[0]);
        } else {
            std::hint::black_box(model.predict(&mut ws, &input)?[0]);
        }
    }
    let what = if explain { "explain" } else { "predict" };
    println!("{} {what}: {:?} per run", M::NAME, start.elapsed() / runs.max(1) as u32);
    Ok(())
}
