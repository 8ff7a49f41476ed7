//! Runs the benchmark's bidirectional LSTM explanation in a loop, for profilers.
use lrp::runtime::weights::serialize_f32;
lrp::network! {
    BiLstmBench(input = tokens, composite = Epsilon(0.001)) {
        embedding: Embedding(1000, 60),
        lstm: LSTM(60, 60, bidirectional = true, rule = LrpAll(epsilon = 0.001)),
        fc: Linear(120, 5),
    }
}
fn main() {
    let tensors = BiLstmBench::TENSORS;
    let data: Vec<Vec<f32>> = tensors
        .iter()
        .map(|(_, s)| (0..s.iter().product::<usize>()).map(|j| ((j * 7919) % 1000) as f32 / 5000.0 - 0.1).collect())
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    let model = BiLstmBench::from_bytes(&serialize_f32(&refs).unwrap()).unwrap();
    let tokens: Vec<usize> = (0..50).map(|t| (t * 37) % 1000).collect();
    let mut ws = model.workspace(50, 1).expect("workspace");
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(model.predict(&mut ws, &tokens).unwrap()[0]);
    }
    let p = t.elapsed() / n as u32;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(model.explain(&mut ws, &tokens, lrp::Target::Predicted).unwrap().relevance[0]);
    }
    println!("predict {:?}, explain {:?}", p, t.elapsed() / n as u32);
}
