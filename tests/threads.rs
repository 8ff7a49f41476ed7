//! Results do not depend on the number of threads: a network large enough that its products,
//! its im2col/col2im and its element-wise passes (ZBox constants included) are split over the
//! worker threads gives bitwise the same logits, relevance and gradients on one thread and on
//! two — its residual sum, the fan-out before it and its pointwise convolution included. One test function: the thread count is global to the process.

use lrp::runtime::kernels::parallel;
use lrp::runtime::weights::serialize_f32;

lrp::network! {
    Wide(input = [16, 96, 96], composite = EpsilonGammaBox(low = 0.0, high = 1.0)) {
        Conv2d(16, 32, kernel_size = 3, padding = 1), ReLU,
        Sum { main: { Conv2d(32, 32, kernel_size = 3, padding = 1), ReLU, Conv2d(32, 32, kernel_size = 1) }, {} },
        ReLU, MaxPool2d(8),
        Flatten, Linear(4608, 10),
    }
}

fn weights() -> Vec<u8> {
    let data: Vec<Vec<f32>> = Wide::TENSORS
        .iter()
        .enumerate()
        .map(|(i, (_, shape))| {
            let n: usize = shape.iter().product();
            (0..n).map(|j| (((i * 7919 + j * 104_729) % 1000) as f32 / 1000.0 - 0.45) * 0.2).collect()
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        Wide::TENSORS.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    serialize_f32(&refs).unwrap()
}

/// Logits, relevance and gradient x input of one image with `threads` threads.
fn run(model: &Wide, image: &[f32], threads: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    lrp::set_num_threads(threads);
    let mut ws = model.workspace(1).unwrap();
    let logits = model.predict(&mut ws, image).unwrap().to_vec();
    let relevance = model.explain(&mut ws, image, lrp::Target::Predicted).unwrap().relevance.to_vec();
    let gradient = model.gradient_x_input(&mut ws, image, lrp::Target::Predicted).unwrap().relevance.to_vec();
    (logits, relevance, gradient)
}

#[test]
fn one_thread_and_two_give_the_same_bits() {
    let model = Wide::from_bytes(&weights()).unwrap();
    let image: Vec<f32> = (0..Wide::INPUT_LEN).map(|i| ((i * 31) % 257) as f32 / 257.0).collect();
    let single = run(&model, &image, 1);
    let jobs = parallel::pool_jobs();
    let split = run(&model, &image, 2);
    assert!(parallel::pool_jobs() > jobs + 10, "the two-thread run used the worker pool");
    let same = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same(&single.0, &split.0), "logits differ");
    assert!(same(&single.1, &split.1), "relevance differs");
    assert!(same(&single.2, &split.2), "gradient x input differs");
    assert!(single.1.iter().any(|&r| r != 0.0), "relevance is not trivially zero");
}
