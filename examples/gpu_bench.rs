//! `predict` and `explain` of GPU models (random weights) on `Device::from_env()`: a GPU with
//! `LRP_DEVICE=cuda`, else the emulated device (the same kernels on the CPU: only the MLP is
//! quick enough there). Built and run by `tools/gpu_check.sh`:
//!
//! ```text
//! cargo build --release --features cuda --example gpu_bench
//! LRP_DEVICE=cuda target/release/examples/gpu_bench [--models vgg16,mlp,bilstm] [--batches 1,16,64] [--runs N] [--tf32]
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
//!
//! `--tf32` measures TF32 products (`DeviceOptions { tf32: true }`, a second device on the same
//! GPU) instead of the FP32 rows above, for `vgg16` and `mlp` (both composites each): the same
//! timings as `<model>/<composite>+tf32/<predict|explain>/<batch> median_ms`, and TF32's
//! accuracy against FP32 on the same random weights and inputs (FP32 explained first, its
//! workspace and weights freed before TF32's are made: one VGG-16 workspace on the GPU at a
//! time). Per sample `max |R_tf32 - R_fp32| / max |R_fp32|` of the relevance (TF32 explaining
//! FP32's target, seeded with its own logit, as `Target::Predicted` seeds) and of the logits;
//! printed as the worst and the median sample, and the number of samples whose predicted class
//! TF32 changes:
//!
//! ```text
//! <model>/<composite>+tf32/relevance_error/<batch> <worst> <median>
//! <model>/<composite>+tf32/logit_error/<batch> <worst> <median>
//! <model>/<composite>+tf32/target_changes/<batch> <count>
//! ```
//!
//! On the emulated device (always FP32) `--tf32` prints `SKIPPED: TF32 needs a GPU` and exits 0.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use lrp::runtime::gpu::{Device, DeviceOptions, GpuTensorModel, ToGpu};
use lrp::runtime::weights::serialize_f32;

lrp::network!(file = "specs/mlp.lrp");
lrp::network!(file = "specs/vgg16.lrp");
// The EpsilonPlus copies and the LSTM of `benches/models.rs`.
lrp::network!(file = "benches/mlp_plus.lrp");
lrp::network!(file = "benches/vgg16_plus.lrp");
lrp::network!(file = "benches/bilstm_bench.lrp");

/// Tokens per sequence of the `bilstm` benchmark (as `benches/models.rs`).
const BILSTM_TOKENS: usize = 50;

const USAGE: &str = "usage: gpu_bench [--models vgg16,mlp,bilstm] [--batches 1,16,64] [--runs N] [--tf32]";

fn main() {
    if let Err(message) = run() {
        eprintln!("gpu_bench: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let (mut models, mut batches, mut runs, mut tf32) = ("vgg16".to_string(), vec![1, 16, 64], 10, false);
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
            "--tf32" => tf32 = true,
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
    if tf32 {
        return run_tf32(&device, &models, &batches, runs);
    }
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
    Ok(median(&mut times))
}

/// The median of `values` (sorted in place; NaN last); NaN when empty.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[mid],
        _ => (values[mid - 1] + values[mid]) / 2.0,
    }
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

/// `--tf32`: [`bench_tf32`] of each model of `models` that has one (`vgg16`, `mlp`), FP32 on
/// `fp32` (the device of the environment) against TF32 on a second device of the same GPU.
fn run_tf32(fp32: &Arc<Device>, models: &str, batches: &[usize], runs: usize) -> Result<(), String> {
    if fp32.is_emulated() {
        println!("SKIPPED: TF32 needs a GPU (the emulated device computes in FP32; LRP_DEVICE=cuda)");
        return Ok(());
    }
    if std::env::var("LRP_TF32").is_ok_and(|v| v == "1") {
        return Err("--tf32 compares TF32 against FP32: unset LRP_TF32".to_string());
    }
    let ordinal = std::env::var("LRP_DEVICE").ok().and_then(|v| v.strip_prefix("cuda:")?.parse().ok()).unwrap_or(0);
    let tf32 = Device::cuda_with(ordinal, DeviceOptions { tf32: true }).map_err(|e| format!("no TF32 device: {e}"))?;
    let tf32 = Arc::new(tf32);
    eprintln!("gpu_bench --tf32 on device: {}", tf32.name());
    for model in models.split(',') {
        match model.trim() {
            "mlp" => {
                bench_tf32::<Mlp>(fp32, &tf32, "mlp/epsilon_zbox", batches, runs)?;
                bench_tf32::<MlpPlus>(fp32, &tf32, "mlp/epsilon_plus", batches, runs)?;
            }
            "vgg16" => {
                bench_tf32::<Vgg16>(fp32, &tf32, "vgg16/epsilon_gamma_box", batches, runs)?;
                bench_tf32::<Vgg16Plus>(fp32, &tf32, "vgg16/epsilon_plus", batches, runs)?;
            }
            "bilstm" => eprintln!("gpu_bench --tf32: no TF32 measurement of bilstm (its products are small)"),
            _ => unreachable!("models are checked above"),
        }
    }
    Ok(())
}

/// The larger of `a` and `b`, NaN if either is (`f64::max` would hide a NaN).
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// Per sample of `len` values: `max |a - b| / max |b|` (0 where both are all zero).
fn relative_errors(a: &[f32], b: &[f32], len: usize) -> Vec<f64> {
    a.chunks(len)
        .zip(b.chunks(len))
        .map(|(a, b)| {
            let diff = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, max_nan);
            let scale = b.iter().map(|y| f64::from(y.abs())).fold(0.0, max_nan);
            if diff == 0.0 { 0.0 } else { diff / scale }
        })
        .collect()
}

/// The first largest value's index of each row of `classes` values.
fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|row| row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best }))
        .collect()
}

/// `--tf32` for `M` (random weights, as [`bench`]): explains every batch size in FP32 on `fp32`
/// (kept on the host), frees that model and workspace, then times `predict` and `explain` on
/// `tf32` (`<name>+tf32/...`) and prints TF32's relative error against FP32 (module docs).
fn bench_tf32<M: lrp::TensorModel + ToGpu>(
    fp32: &Arc<Device>,
    tf32: &Arc<Device>,
    name: &str,
    batches: &[usize],
    runs: usize,
) -> Result<(), String> {
    let name = format!("{name}+tf32");
    let err = |what: &'static str| {
        let name = name.clone();
        move |e: lrp::Error| format!("{name}: {what}: {e}")
    };
    let model = M::from_bytes(&random_weights(M::TENSORS).map_err(err("weights"))?).map_err(err("load"))?;
    let capacity = batches.iter().copied().max().unwrap_or(1);
    let (len, classes) = (<M::Gpu as GpuTensorModel>::INPUT_LEN, <M::Gpu as GpuTensorModel>::CLASSES);
    let input: Vec<f32> = values(7, capacity * len, 1.0).iter().map(|v| v.abs()).collect();

    // FP32: logits, targets and relevance of each batch size, on the host. The model and its
    // workspace are dropped before TF32's are made (VGG-16 at batch 64: one workspace at a time).
    let mut reference = Vec::with_capacity(batches.len());
    {
        let gpu = model.to_gpu(fp32).map_err(err("FP32 upload"))?;
        let mut ws = gpu.workspace(capacity).map_err(err("FP32 workspace"))?;
        for &batch in batches {
            let e = gpu
                .explain_batch(&mut ws, &input[..batch * len], batch, lrp::Target::Predicted)
                .map_err(err("FP32 explain"))?;
            reference.push((e.logits.to_vec(), e.targets.to_vec(), e.relevance.to_vec()));
        }
    }
    fp32.synchronize().map_err(err("FP32 free"))?;

    let gpu = model.to_gpu(tf32).map_err(err("TF32 upload"))?;
    let mut ws = gpu.workspace(capacity).map_err(err("TF32 workspace"))?;
    for (&batch, (logits, targets, relevance)) in batches.iter().zip(&reference) {
        let x = &input[..batch * len];
        let t = median_ms(runs, || Ok(gpu.predict_batch(&mut ws, black_box(x), batch)?[0])).map_err(err("predict"))?;
        println!("{name}/predict/{batch} {t:.3}");
        let t = median_ms(runs, || {
            Ok(gpu.explain_batch(&mut ws, black_box(x), batch, lrp::Target::Predicted)?.relevance[0])
        })
        .map_err(err("explain"))?;
        println!("{name}/explain/{batch} {t:.3}");

        // FP32's targets, each seeded with TF32's logit (what `Target::Predicted` seeds with
        // wherever TF32 predicts the same class).
        let tf32_logits = gpu.predict_batch(&mut ws, x, batch).map_err(err("predict"))?.to_vec();
        let changed = argmax_rows(&tf32_logits, classes).iter().zip(targets).filter(|(a, b)| a != b).count();
        let seed: Vec<f32> = (0..batch * classes)
            .map(|i| if i % classes == targets[i / classes] { tf32_logits[i] } else { 0.0 })
            .collect();
        let e = gpu.explain_from_batch(&mut ws, x, batch, &seed).map_err(err("explain_from"))?;
        let mut r = relative_errors(e.relevance, relevance, len);
        let mut l = relative_errors(&tf32_logits, logits, classes);
        let worst = |v: &[f64]| v.iter().copied().fold(0.0, max_nan);
        println!("{name}/relevance_error/{batch} {:.3e} {:.3e}", worst(&r), median(&mut r));
        println!("{name}/logit_error/{batch} {:.3e} {:.3e}", worst(&l), median(&mut l));
        println!("{name}/target_changes/{batch} {changed}");
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
