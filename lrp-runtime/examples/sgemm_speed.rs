//! Quick timing of the allocation-free `kernels::sgemm` (one thread) against `matrixmultiply`
//! (`kernels::gemm::gemm_matrixmultiply`, one thread) on VGG-16 shaped products, and of
//! `kernels::gemm` (`sgemm` split over `lrp::set_num_threads` threads, `LRP_NUM_THREADS`);
//! `sgemm` takes the matrix-vector path of `kernels::gemv` when `m` or `n` is 1. Prints
//! GFLOP/s, best of alternating runs.
//!
//! `cargo run --release -p lrp-runtime --example sgemm_speed`
//!
//! Convolutions are laid out as `lrp` runs them through im2col: `W (cout x cin*9)` times
//! `cols (cin*9 x pixels)`, all row-major. Dense layers run `x (batch x in)` times `W^T` with `W`
//! row-major `out x in` (the forward pass), and `s (batch x out)` times `W` (the relevance pass).

use std::hint::black_box;
use std::time::{Duration, Instant};

use lrp_runtime::kernels::gemm::{gemm, gemm_matrixmultiply};
use lrp_runtime::kernels::parallel;
use lrp_runtime::kernels::sgemm::{PackBuffers, sgemm};
use lrp_runtime::kernels::{MatMut, MatRef};

/// Wall time of one call of `f`.
fn time_once(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn main() {
    // (label, m, k, n, B is the transposed view of a row-major n x k matrix)
    let shapes: &[(&str, usize, usize, usize, bool)] = &[
        ("conv1_1 64x27x50176", 64, 27, 50176, false),
        ("conv2_1 128x576x12544", 128, 576, 12544, false),
        ("conv3_1 256x1152x3136", 256, 1152, 3136, false),
        ("conv4_1 512x2304x784", 512, 2304, 784, false),
        ("conv5_1 512x4608x196", 512, 4608, 196, false),
        ("fc6 x.W^T 1x25088x4096", 1, 25088, 4096, true),
        ("fc6 x.W^T 8x25088x4096", 8, 25088, 4096, true),
        ("fc6 s.W 8x4096x25088", 8, 4096, 25088, false),
        ("mnist x.W^T 1x784x512", 1, 784, 512, true),
        ("mnist x.W^T 8x784x512", 8, 784, 512, true),
    ];
    let budget = Duration::from_millis(1500);
    let mut pack = PackBuffers::new();
    let threads = parallel::num_threads();
    println!(
        "{:<26} {:>12} {:>12} {:>8} {:>14}",
        "shape (m x k x n)",
        "sgemm GF/s",
        "mm GF/s",
        "ratio",
        format!("gemm x{threads} GF/s")
    );
    for &(label, m, k, n, bt) in shapes {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let b_view = if bt { MatRef::row_major(&b, n, k).t() } else { MatRef::row_major(&b, k, n) };
        let a_view = MatRef::row_major(&a, m, k);
        let mut c1 = vec![0.0f32; m * n];
        let mut c2 = vec![0.0f32; m * n];
        let mut c3 = vec![0.0f32; m * n];
        // Warm up both, then alternate them for about `budget` and keep each one's best time, so
        // that both see the same machine (this matters on a shared VM).
        let mut ours = || sgemm(1.0, a_view, b_view, 0.0, MatMut::row_major(black_box(&mut c1), m, n), &mut pack);
        let mut theirs = || gemm_matrixmultiply(1.0, a_view, b_view, 0.0, MatMut::row_major(black_box(&mut c2), m, n));
        let mut threaded = || gemm(1.0, a_view, b_view, 0.0, MatMut::row_major(black_box(&mut c3), m, n));
        ours();
        theirs();
        threaded();
        let (start, mut t1, mut t2, mut t3, mut rounds) =
            (Instant::now(), Duration::MAX, Duration::MAX, Duration::MAX, 0);
        while rounds < 5 || start.elapsed() < budget {
            t1 = t1.min(time_once(&mut ours));
            t2 = t2.min(time_once(&mut theirs));
            t3 = t3.min(time_once(&mut threaded));
            rounds += 1;
        }
        let max_diff = c1.iter().zip(&c2).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(max_diff <= 1e-3 * (k as f32).sqrt(), "{label}: results differ by {max_diff}");
        let gflops = |t: Duration| 2.0 * (m * k * n) as f64 / t.as_secs_f64() / 1e9;
        let (g1, g2, g3) = (gflops(t1), gflops(t2), gflops(t3));
        assert!(c1 == c3, "{label}: split and unsplit results differ");
        println!("{label:<26} {g1:>12.1} {g2:>12.1} {:>8.2} {g3:>14.1}", g1 / g2);
    }
}
