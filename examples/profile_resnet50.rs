//! Runs ResNet-50 `predict` or `explain` (random weights; EpsilonGammaBox, or with `plus`
//! EpsilonPlus) a few times, for profilers: `cargo build --release --example profile_resnet50 &&
//! perf record target/release/examples/profile_resnet50 [runs] [predict|explain] [plus]`.

use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/resnet50.lrp");
lrp::network!(file = "benches/resnet50_plus.lrp");

fn main() -> lrp::Result<()> {
    match std::env::args().nth(3).is_some_and(|a| a == "plus") {
        true => run::<ResNet50Plus>(),
        false => run::<ResNet50>(),
    }
}

fn run<M: lrp::TensorModel>() -> lrp::Result<()> {
    let data: Vec<Vec<f32>> = M::TENSORS
        .iter()
        .map(|(name, s)| {
            let n = s.iter().product::<usize>();
            let fan_in = s.iter().skip(1).product::<usize>().max(1) as f32;
            let scale = (3.0 / fan_in).sqrt();
            (0..n)
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
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let explain = std::env::args().nth(2).is_some_and(|a| a == "explain");
    let start = std::time::Instant::now();
    for _ in 0..runs {
        if explain {
            std::hint::black_box(model.explain(&mut ws, &input, lrp::Target::Predicted)?.relevance[0]);
        } else {
            std::hint::black_box(model.predict(&mut ws, &input)?[0]);
        }
    }
    let what = if explain { "explain" } else { "predict" };
    println!("{what}: {:?} per run", start.elapsed() / runs as u32);
    Ok(())
}
