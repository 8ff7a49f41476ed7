//! Benchmarks of `predict` and `explain`, batch 1 and 8: an MLP 784-512-512-10, LeNet-5 with
//! BatchNorm, VGG-16 and ResNet-50 (3x224x224, torchvision's layouts) with EpsilonGammaBox and
//! EpsilonPlus, a bidirectional LSTM text classifier (embedding 60, hidden 60, 5 classes, 50
//! tokens) with LRP-all, and the VQA Relation Network of `specs/vqa.lrp` (a 75x75 image and a
//! 9-word question). Random weights. `cargo bench --bench models [-- FILTER]`; see
//! BENCHMARKS.md.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lrp::runtime::weights::serialize_f32;
use std::hint::black_box;
use std::time::Duration;

lrp::network!(file = "benches/mlp_plus.lrp");
lrp::network!(file = "specs/lenet.lrp");
lrp::network!(file = "specs/vgg16.lrp");
lrp::network!(file = "specs/resnet50.lrp");
// `specs/resnet50.lrp`'s layers with `composite = EpsilonPlus` (a file's composite cannot be
// overridden, so the spec is a copy).
lrp::network!(file = "benches/resnet50_plus.lrp");
lrp::network!(file = "specs/vqa.lrp");

lrp::network! {
    LeNetPlus(input = [1, 28, 28], composite = EpsilonPlus, input_nonnegative = true) {
        features: {
            Conv2d(1, 6, kernel_size = 5, padding = 2), BatchNorm2d(6), ReLU, MaxPool2d(2),
            Conv2d(6, 16, kernel_size = 5), BatchNorm2d(16), ReLU, MaxPool2d(2),
        },
        Flatten,
        classifier: { Linear(400, 120), ReLU, Linear(120, 84), ReLU, Linear(84, 10) },
    }
}

lrp::network!(file = "benches/vgg16_plus.lrp");

lrp::network!(file = "benches/bilstm_bench.lrp");

/// Deterministic pseudo-random values in [-scale, scale].
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
fn random_weights(tensors: &[(&str, &[usize])]) -> Vec<u8> {
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
    serialize_f32(&refs).expect("consistent shapes")
}

/// `predict_batch` and `explain_batch` of any fixed-size model `M`, for each batch size;
/// `samples` criterion samples each.
fn bench_tensor_model<M: lrp::TensorModel>(c: &mut Criterion, group: &str, batches: &[usize], samples: usize) {
    let model = M::from_bytes(&random_weights(M::TENSORS)).expect("load");
    let mut group = c.benchmark_group(group);
    group.sample_size(samples).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for &batch in batches {
        let input: Vec<f32> = values(7, batch * M::INPUT_LEN, 1.0).iter().map(|v| v.abs()).collect();
        let mut ws = model.workspace_for(lrp::Capacity::samples(batch)).expect("workspace");
        group.bench_function(BenchmarkId::new("predict", batch), |b| {
            b.iter(|| black_box(model.predict_batch(&mut ws, black_box(&input), batch).expect("predict")[0]))
        });
        group.bench_function(BenchmarkId::new("explain", batch), |b| {
            b.iter(|| {
                let e = model.explain_batch(&mut ws, black_box(&input), batch, lrp::Target::Predicted);
                black_box(e.expect("explain").relevance[0])
            })
        });
    }
    group.finish();
}

fn mlp(c: &mut Criterion) {
    bench_tensor_model::<MlpPlus>(c, "mlp/epsilon_plus", &[1, 8], 50);
    // What `predict` spends checking its input (finite and >= 0), for the ratio to `predict`.
    let input: Vec<f32> = values(7, MlpPlus::INPUT_LEN, 1.0).iter().map(|v| v.abs()).collect();
    c.bench_function("mlp/input_check/1", |b| {
        b.iter(|| lrp::runtime::checks::check_samples(black_box(&input), MlpPlus::INPUT_LEN, true).expect("valid"))
    });
}

fn lenet(c: &mut Criterion) {
    bench_tensor_model::<LeNet>(c, "lenet/epsilon_gamma_box", &[1, 8], 50);
    bench_tensor_model::<LeNetPlus>(c, "lenet/epsilon_plus", &[1, 8], 50);
}

fn vgg16(c: &mut Criterion) {
    bench_tensor_model::<Vgg16>(c, "vgg16/epsilon_gamma_box", &[1, 8], 10);
    bench_tensor_model::<Vgg16Plus>(c, "vgg16/epsilon_plus", &[1, 8], 10);
}

fn resnet50(c: &mut Criterion) {
    bench_tensor_model::<ResNet50>(c, "resnet50/epsilon_gamma_box", &[1, 8], 10);
    bench_tensor_model::<ResNet50Plus>(c, "resnet50/epsilon_plus", &[1, 8], 10);
}

/// `predict_batch` and `explain_batch` of any token model `M` on `batch` sequences of 50 tokens.
fn bench_token_model<M: lrp::TokenModel>(c: &mut Criterion, group: &str, batches: &[usize]) {
    let model = M::from_bytes(&random_weights(M::TENSORS)).expect("load");
    let mut group = c.benchmark_group(group);
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for &batch in batches {
        let sequences: Vec<Vec<usize>> = (0..batch)
            .map(|s| values(s as u64 + 3, 50, 1.0).iter().map(|v| (v.abs() * (M::VOCAB - 1) as f32) as usize).collect())
            .collect();
        let refs: Vec<&[usize]> = sequences.iter().map(|s| s.as_slice()).collect();
        let mut ws = model.workspace_for(lrp::Capacity::samples(batch).max_len(50)).expect("workspace");
        group.bench_function(BenchmarkId::new("predict", batch), |b| {
            b.iter(|| black_box(model.predict_batch(&mut ws, black_box(&refs)).expect("predict")[0]))
        });
        group.bench_function(BenchmarkId::new("explain", batch), |b| {
            b.iter(|| {
                let e = model.explain_batch(&mut ws, black_box(&refs), lrp::Target::Predicted);
                black_box(e.expect("explain").relevance[0])
            })
        });
    }
    group.finish();
}

fn bilstm(c: &mut Criterion) {
    bench_token_model::<BiLstmBench>(c, "bilstm", &[1, 8]);
}

/// The VQA model on `batch` (image, question) pairs, the questions 9 words long.
fn vqa(c: &mut Criterion) {
    let model = Vqa::from_bytes(&random_weights(Vqa::TENSORS)).expect("load");
    let mut group = c.benchmark_group("vqa");
    group.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for batch in [1, 8] {
        let images: Vec<f32> = values(5, batch * 3 * 75 * 75, 1.0).iter().map(|v| v.abs()).collect();
        let questions: Vec<Vec<usize>> = (0..batch)
            .map(|s| values(s as u64 + 11, 9, 1.0).iter().map(|v| (v.abs() * 27.0) as usize).collect())
            .collect();
        let refs: Vec<&[usize]> = questions.iter().map(Vec::as_slice).collect();
        let input = VqaInput { image: &images, question: &refs };
        let mut ws = model.workspace(9, batch).expect("workspace");
        group.bench_function(BenchmarkId::new("predict", batch), |b| {
            b.iter(|| black_box(model.predict_batch(&mut ws, black_box(&input), batch).expect("predict")[0]))
        });
        group.bench_function(BenchmarkId::new("explain", batch), |b| {
            b.iter(|| {
                let e = model.explain_batch(&mut ws, black_box(&input), batch, lrp::Target::Predicted);
                black_box(e.expect("explain").image.relevance[0])
            })
        });
    }
    group.finish();
}

criterion_group!(benches, mlp, lenet, bilstm, vgg16, resnet50, vqa);
criterion_main!(benches);
