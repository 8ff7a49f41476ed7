//! `predict` and `explain` of GPU models (random weights) on `Device::from_env()`: a GPU with
//! `LRP_DEVICE=cuda`, else the emulated device (the same kernels on the CPU: only the MLP is
//! quick enough there). Built and run by `tools/gpu_check.sh`:
//!
//! ```text
//! cargo build --release --features cuda --example gpu_bench
//! LRP_DEVICE=cuda target/release/examples/gpu_bench [--models vgg16,mlp,bilstm] [--batches 1,16,64] [--runs N]
//! ```
//!
//! Models: `vgg16` (`specs/vgg16.lrp`, EpsilonGammaBox, and a copy with EpsilonPlus), `mlp`
//! (`specs/mlp.lrp`, Epsilon with z^B first, and a copy with EpsilonPlus) and `bilstm` (the
//! bidirectional LSTM of `benches/models.rs`, `BiLstmBench`: vocabulary 1000, embedding 60,
//! hidden 60 each way, 5 classes, LRP-all; the batch is that many sequences of 50 tokens,
//! printed as `bilstm/lrp_all/...`). Each call is timed
//! from the host input to the results copied back (which waits for the device): two warm-up
//! calls, then the median of `--runs` calls (default 10). Prints one line per measurement as
//! `benches/reference/bench_pytorch.py` does: `<model>/<composite>/<predict|explain>/<batch> median_ms`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use lrp::runtime::gpu::{Device, GpuTensorModel, ToGpu};
use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/mlp.lrp");
lrp::network!(file = "specs/vgg16.lrp");

lrp::network! {
    /// `specs/mlp.lrp`'s network with EpsilonPlus (as `benches/models.rs`).
    MlpPlus(input = [784], composite = EpsilonPlus, input_nonnegative = true) {
        Linear(784, 512), ReLU, Linear(512, 512), ReLU, Linear(512, 10),
    }
}

lrp::network! {
    /// `specs/vgg16.lrp`'s layers with EpsilonPlus (a file's composite cannot be overridden).
    Vgg16Plus(input = [3, 224, 224], composite = EpsilonPlus) {
        features: {
            Conv2d(3, 64, kernel_size = 3, padding = 1), ReLU, Conv2d(64, 64, kernel_size = 3, padding = 1), ReLU, MaxPool2d(2),
            Conv2d(64, 128, kernel_size = 3, padding = 1), ReLU, Conv2d(128, 128, kernel_size = 3, padding = 1), ReLU, MaxPool2d(2),
            Conv2d(128, 256, kernel_size = 3, padding = 1), ReLU, Conv2d(256, 256, kernel_size = 3, padding = 1), ReLU,
            Conv2d(256, 256, kernel_size = 3, padding = 1), ReLU, MaxPool2d(2),
            Conv2d(256, 512, kernel_size = 3, padding = 1), ReLU, Conv2d(512, 512, kernel_size = 3, padding = 1), ReLU,
            Conv2d(512, 512, kernel_size = 3, padding = 1), ReLU, MaxPool2d(2),
            Conv2d(512, 512, kernel_size = 3, padding = 1), ReLU, Conv2d(512, 512, kernel_size = 3, padding = 1), ReLU,
            Conv2d(512, 512, kernel_size = 3, padding = 1), ReLU, MaxPool2d(2),
        },
        avgpool: Identity,
        Flatten,
        classifier: { Linear(25088, 4096), ReLU, Dropout(0.5), Linear(4096, 4096), ReLU, Dropout(0.5), Linear(4096, 1000) },
    }
}

lrp::network! {
    /// `benches/models.rs`'s `BiLstmBench`: a bidirectional LSTM text classifier (LRP-all).
    BiLstmBench(input = tokens, composite = Epsilon(0.001)) {
        embedding: Embedding(1000, 60),
        lstm: LSTM(60, 60, bidirectional = true, rule = LrpAll(epsilon = 0.001)),
        fc: Linear(120, 5),
    }
}

/// Tokens per sequence of the `bilstm` benchmark (as `benches/models.rs`).
const BILSTM_TOKENS: usize = 50;

const USAGE: &str = "usage: gpu_bench [--models vgg16,mlp,bilstm] [--batches 1,16,64] [--runs N]";

fn main() {
    if let Err(message) = run() {
        eprintln!("gpu_bench: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let (mut models, mut batches, mut runs) = ("vgg16".to_string(), vec![1, 16, 64], 10);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--models" => models = value()?,
            "--batches" => {
                let v = value()?;
                batches = v
                    .split(',')
                    .map(|b| b.trim().parse().ok().filter(|&b| b > 0))
                    .collect::<Option<_>>()
                    .ok_or(format!("--batches {v}: expected positive sizes separated by commas"))?;
            }
            "--runs" => runs = value()?.parse().ok().filter(|&r| r > 0).ok_or("--runs: a positive number")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("unknown argument `{arg}`; {USAGE}")),
        }
    }
    if let Some(other) = models.split(',').map(str::trim).find(|m| !["mlp", "vgg16", "bilstm"].contains(m)) {
        return Err(format!("unknown model `{other}` (models: vgg16, mlp, bilstm)"));
    }
    let device = Arc::new(Device::from_env().map_err(|e| format!("no device: {e}"))?);
    eprintln!("gpu_bench on device: {}", device.name());
    for model in models.split(',') {
        match model.trim() {
            "mlp" => {
                bench::<Mlp>(&device, "mlp/epsilon_zbox", &batches, runs)?;
                bench::<MlpPlus>(&device, "mlp/epsilon_plus", &batches, runs)?;
            }
            "vgg16" => {
                bench::<Vgg16>(&device, "vgg16/epsilon_gamma_box", &batches, runs)?;
                bench::<Vgg16Plus>(&device, "vgg16/epsilon_plus", &batches, runs)?;
            }
            "bilstm" => bench_bilstm(&device, "bilstm/lrp_all", &batches, runs)?,
            _ => unreachable!("models are checked above"),
        }
    }
    Ok(())
}

/// Deterministic pseudo-random values in [-scale, scale] (as `benches/models.rs`).
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

/// Random weights for every tensor a model reads (He-scaled; BatchNorm variances positive).
fn random_weights(tensors: &[(&str, &[usize])]) -> lrp::Result<Vec<u8>> {
    let data: Vec<Vec<f32>> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f32;
            let v = values(i as u64 + 1, n, (6.0 / fan_in).sqrt());
            if name.ends_with("running_var") { v.iter().map(|x| 1.0 + x.abs()).collect() } else { v }
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    serialize_f32(&refs)
}

/// The median time of `runs` calls of `call` after two warm-up calls, in milliseconds.
fn median_ms(runs: usize, mut call: impl FnMut() -> lrp::Result<f32>) -> lrp::Result<f64> {
    for _ in 0..2 {
        black_box(call()?);
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        black_box(call()?);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    Ok(if times.len() % 2 == 1 { times[mid] } else { (times[mid - 1] + times[mid]) / 2.0 })
}

/// Uploads `M` (random weights) to `device` and prints the median `predict` and `explain` time
/// for each batch size; one workspace for the largest batch serves them all.
fn bench<M: lrp::TensorModel + ToGpu>(
    device: &Arc<Device>,
    name: &str,
    batches: &[usize],
    runs: usize,
) -> Result<(), String> {
    let err = |what: &'static str| move |e: lrp::Error| format!("{name}: {what}: {e}");
    let model = M::from_bytes(&random_weights(M::TENSORS).map_err(err("weights"))?).map_err(err("load"))?;
    let gpu = model.to_gpu(device).map_err(err("upload"))?;
    let capacity = batches.iter().copied().max().unwrap_or(1);
    let mut ws = gpu.workspace(capacity).map_err(err("workspace"))?;
    let len = <M::Gpu as GpuTensorModel>::INPUT_LEN;
    let input: Vec<f32> = values(7, capacity * len, 1.0).iter().map(|v| v.abs()).collect();
    for &batch in batches {
        let x = &input[..batch * len];
        let t = median_ms(runs, || Ok(gpu.predict_batch(&mut ws, black_box(x), batch)?[0])).map_err(err("predict"))?;
        println!("{name}/predict/{batch} {t:.3}");
        let t = median_ms(runs, || {
            Ok(gpu.explain_batch(&mut ws, black_box(x), batch, lrp::Target::Predicted)?.relevance[0])
        })
        .map_err(err("explain"))?;
        println!("{name}/explain/{batch} {t:.3}");
    }
    Ok(())
}

/// [`bench`] for `BiLstmBench` (a token model: no trait shared with the tensor models' GPU
/// models): `batch` sequences of [`BILSTM_TOKENS`] random token ids each.
fn bench_bilstm(device: &Arc<Device>, name: &str, batches: &[usize], runs: usize) -> Result<(), String> {
    let err = |what: &'static str| move |e: lrp::Error| format!("{name}: {what}: {e}");
    let weights = random_weights(BiLstmBench::TENSORS).map_err(err("weights"))?;
    let model = BiLstmBench::from_bytes(&weights).map_err(err("load"))?;
    let gpu = model.to_gpu(device).map_err(err("upload"))?;
    let capacity = batches.iter().copied().max().unwrap_or(1);
    let mut ws = gpu.workspace(BILSTM_TOKENS, capacity).map_err(err("workspace"))?;
    let vocab = (BiLstmBench::VOCAB - 1) as f32;
    let sequences: Vec<Vec<usize>> = (0..capacity)
        .map(|s| values(s as u64 + 3, BILSTM_TOKENS, 1.0).iter().map(|v| (v.abs() * vocab) as usize).collect())
        .collect();
    let refs: Vec<&[usize]> = sequences.iter().map(Vec::as_slice).collect();
    for &batch in batches {
        let x = &refs[..batch];
        let t = median_ms(runs, || Ok(gpu.predict_batch(&mut ws, black_box(x))?[0])).map_err(err("predict"))?;
        println!("{name}/predict/{batch} {t:.3}");
        let t = median_ms(runs, || Ok(gpu.explain_batch(&mut ws, black_box(x), lrp::Target::Predicted)?.relevance[0]))
            .map_err(err("explain"))?;
        println!("{name}/explain/{batch} {t:.3}");
    }
    Ok(())
}
