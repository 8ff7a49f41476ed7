//! Runs VGG-16 `predict` or `explain` (random weights, EpsilonGammaBox) a few times, for
//! profilers: `cargo build --release --example profile_vgg16 && perf record
//! target/release/examples/profile_vgg16 [runs] [predict|explain]`.

use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/vgg16.lrp");

fn main() -> lrp::Result<()> {
    let data: Vec<Vec<f32>> = Vgg16::TENSORS
        .iter()
        .map(|(_, s)| (0..s.iter().product::<usize>()).map(|j| ((j * 7919) % 2001) as f32 / 1e5 - 0.01).collect())
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        Vgg16::TENSORS.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    let model = Vgg16::from_bytes(&serialize_f32(&refs)?)?;
    drop(data);
    let mut ws = model.workspace(1)?;
    let input: Vec<f32> = (0..Vgg16::INPUT_LEN).map(|i| (i % 255) as f32 / 255.0).collect();
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
