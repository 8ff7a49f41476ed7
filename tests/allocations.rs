//! Zero overhead: once a workspace is built, `predict` and `explain` allocate nothing, for a
//! CNN (conv, BatchNorm, pooling, dense), an MLP, a bidirectional LSTM, graphs (residual
//! blocks with a downsample shortcut, a concatenation, two inputs) and a text CNN; with the
//! feature `cuda`, neither do GPU models' calls on the emulated device. A counting global
//! allocator sees every heap allocation of this test binary.
//!
//! Only where the products run on our kernels: the `matrixmultiply` route (the feature, or a CPU
//! without AVX-512 or AVX2+FMA) allocates its packing space on every product, by design.
#![cfg(not(feature = "matrixmultiply"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lrp::runtime::weights::serialize_f32;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged, only counting them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

lrp::network!(file = "specs/lenet.lrp");
lrp::network!(file = "specs/mlp.lrp");
lrp::network!(file = "specs/bilstm.lrp");

// Large enough that its convolution products are split over the worker threads.
lrp::network! {
    WideCnn(input = [8, 64, 64], composite = EpsilonGammaBox(low = 0.0, high = 1.0)) {
        Conv2d(8, 64, kernel_size = 3, padding = 1), ReLU, MaxPool2d(4),
        Flatten, Linear(16384, 64), ReLU, Linear(64, 10),
    }
}

lrp::network!(file = "specs/text_cnn.lrp");
lrp::network!(file = "specs/image_question.lrp");

lrp::network! {
    /// A small Relation Network: objects of a feature map, paired with a question of any length.
    Relations(inputs(image = [3, 12, 12], question = tokens), composite = Alpha1Beta0) {
        conv: image -> { Conv2d(3, 4, kernel_size = 3, stride = 2), ReLU, BatchNorm2d(4) },
        objects: Objects,
        embedding: question -> Embedding(10, 4),
        lstm: LSTM(4, 5, rule = LrpAll(epsilon = 0.001)),
        pairs: Pairs(objects, lstm),
        g: { Linear(17, 8), ReLU },
        total: SetSum,
        f: Linear(8, 3),
    }
}

// Two residual blocks (identity and downsample shortcuts: fan-outs and sums), a concatenation.
lrp::network! {
    Residual(input = [3, 16, 16], composite = EpsilonGammaBox(low = -1.0, high = 1.0)) {
        conv1: Conv2d(3, 8, kernel_size = 3, padding = 1, bias = false), bn1: BatchNorm2d(8), relu: ReLU,
        layer1: {
            Sum { { Conv2d(8, 8, 3, padding = 1), ReLU, Conv2d(8, 8, 1) }, {} },
            relu: ReLU,
        },
        layer2: {
            Sum {
                { Conv2d(8, 16, 3, stride = 2, padding = 1), ReLU, Conv2d(16, 16, 3, padding = 1) },
                downsample: { Conv2d(8, 16, 1, stride = 2, bias = false), BatchNorm2d(16) },
            },
            relu: ReLU,
        },
        Concat(dim = 0) { AvgPool2d(8), MaxPool2d(8) },
        Flatten,
        fc: Linear(32, 4),
    }
}

lrp::network! {
    TwoInputs(inputs(image = [2, 8, 8], features = [5]), composite = EpsilonPlus) {
        img: image -> { Conv2d(2, 4, kernel_size = 3), ReLU, Flatten, Linear(144, 6) },
        feat: features -> { Linear(5, 6), Tanh },
        Sum(img, feat),
        head: Linear(6, 3),
    }
}

fn random_weights(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let data: Vec<Vec<f32>> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            (0..n)
                .map(|j| {
                    let v = ((i * 7919 + j * 104729) % 1000) as f32 / 1000.0 - 0.5;
                    if name.ends_with("running_var") { 1.0 + v.abs() } else { v * 0.2 }
                })
                .collect()
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().zip(&data).map(|((n, s), d)| (*n, *s, d.as_slice())).collect();
    serialize_f32(&refs).unwrap()
}

/// Allocations made by `f`.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

// One test function: the counter is global, and tests run on parallel threads.
#[test]
fn predict_and_explain_allocate_nothing() {
    if lrp::runtime::kernels::sgemm::kernels_in_use() == "matrixmultiply" {
        eprintln!("this CPU's products run on matrixmultiply, which allocates: not checked");
        return;
    }
    // Two threads whatever the machine, so that the split products are counted too.
    lrp::set_num_threads(2);
    let wide = WideCnn::from_bytes(&random_weights(WideCnn::TENSORS)).unwrap();
    let mut ws = wide.workspace(1).unwrap();
    let image: Vec<f32> = (0..8 * 64 * 64).map(|i| (i % 251) as f32 / 251.0).collect();
    let jobs = lrp::runtime::kernels::parallel::pool_jobs();
    assert_eq!(
        allocations(|| {
            let _ = wide.predict(&mut ws, &image).unwrap();
        }),
        0,
        "WideCnn predict"
    );
    assert_eq!(
        allocations(|| {
            let _ = wide.explain(&mut ws, &image, lrp::Target::Predicted).unwrap();
        }),
        0,
        "WideCnn explain"
    );
    assert!(lrp::runtime::kernels::parallel::pool_jobs() >= jobs + 2, "WideCnn's convolutions ran on the pool");

    let lenet = LeNet::from_bytes(&random_weights(LeNet::TENSORS)).unwrap();
    let mut ws = lenet.workspace(4).unwrap();
    let images: Vec<f32> = (0..4 * 784).map(|i| (i % 255) as f32 / 255.0).collect();
    assert_eq!(
        allocations(|| {
            let _ = lenet.predict_batch(&mut ws, &images, 4).unwrap();
        }),
        0,
        "LeNet predict"
    );
    assert_eq!(
        allocations(|| {
            let _ = lenet.explain_batch(&mut ws, &images, 4, lrp::Target::Predicted).unwrap();
        }),
        0,
        "LeNet explain"
    );
    assert_eq!(
        allocations(|| {
            let _ = lenet.explain(&mut ws, &images[..784], 3usize).unwrap();
        }),
        0,
        "LeNet explain, batch 1"
    );

    let mlp = Mlp::from_bytes(&random_weights(Mlp::TENSORS)).unwrap();
    let mut ws = mlp.workspace(2).unwrap();
    assert_eq!(
        allocations(|| {
            let _ = mlp.predict_batch(&mut ws, &images[..1568], 2).unwrap();
        }),
        0,
        "MLP predict"
    );
    assert_eq!(
        allocations(|| {
            let _ = mlp.explain(&mut ws, &images[..784], lrp::Target::Predicted).unwrap();
        }),
        0,
        "MLP explain"
    );

    let residual = Residual::from_bytes(&random_weights(Residual::TENSORS)).unwrap();
    let mut ws = residual.workspace(2).unwrap();
    let pictures: Vec<f32> = (0..2 * 3 * 256).map(|i| (i % 97) as f32 / 48.5 - 1.0).collect();
    assert_eq!(
        allocations(|| {
            let _ = residual.predict_batch(&mut ws, &pictures, 2).unwrap();
        }),
        0,
        "Residual predict"
    );
    assert_eq!(
        allocations(|| {
            let _ = residual.explain_batch(&mut ws, &pictures, 2, 1).unwrap();
        }),
        0,
        "Residual explain"
    );
    let gxi = allocations(|| {
        let _ = residual.gradient_x_input_batch(&mut ws, &pictures, 2, 1).unwrap();
    });
    assert_eq!(gxi, 0, "Residual gradient x input");

    let two = TwoInputs::from_bytes(&random_weights(TwoInputs::TENSORS)).unwrap();
    let mut ws = two.workspace(1).unwrap();
    let (image, features) = (&images[..128], &images[200..205]);
    let input = TwoInputsInput { image, features };
    assert_eq!(
        allocations(|| {
            let _ = two.predict(&mut ws, &input).unwrap();
        }),
        0,
        "TwoInputs predict"
    );
    assert_eq!(
        allocations(|| {
            let _ = two.explain(&mut ws, &input, 2).unwrap();
        }),
        0,
        "TwoInputs explain"
    );

    let vqa = ImageQuestion::from_bytes(&random_weights(ImageQuestion::TENSORS)).unwrap();
    let mut ws = vqa.workspace(12, 2).unwrap();
    let image: Vec<f32> = (0..2 * 3 * 32 * 32).map(|i| ((i * 37) % 101) as f32 / 101.0).collect();
    let (a, b): (Vec<usize>, Vec<usize>) = ((0..12).map(|t| t % 40).collect(), (0..5).map(|t| (t * 3) % 40).collect());
    let input = ImageQuestionInput { image: &image, question: &[&a, &b] };
    assert_eq!(
        allocations(|| {
            let _ = vqa.predict_batch(&mut ws, &input, 2).unwrap();
        }),
        0,
        "ImageQuestion predict"
    );
    assert_eq!(
        allocations(|| {
            let _ = vqa.explain_batch(&mut ws, &input, 2, 1).unwrap();
        }),
        0,
        "ImageQuestion explain"
    );
    assert_eq!(
        allocations(|| {
            let _ = vqa.gradient_x_input_batch(&mut ws, &input, 2, 1).unwrap();
        }),
        0,
        "ImageQuestion gradient x input"
    );

    let rn = Relations::from_bytes(&random_weights(Relations::TENSORS)).unwrap();
    let mut ws = rn.workspace(6, 2).unwrap();
    let image: Vec<f32> = (0..2 * 3 * 12 * 12).map(|i| ((i * 13) % 29) as f32 / 29.0).collect();
    let (a, b) = ([1usize, 4, 2, 8, 5, 7], [3usize, 9]);
    let input = RelationsInput { image: &image, question: &[&a, &b] };
    type Call<'a> = (&'a str, &'a dyn Fn(&mut RelationsWorkspace));
    let calls: [Call; 4] = [
        ("predict", &|ws| {
            let _ = rn.predict_batch(ws, &input, 2).unwrap();
        }),
        ("explain", &|ws| {
            let _ = rn.explain_batch(ws, &input, 2, 1).unwrap();
        }),
        ("gradient x input", &|ws| {
            let _ = rn.gradient_x_input_batch(ws, &input, 2, 1).unwrap();
        }),
        ("occlusion", &|ws| {
            let _ = rn.occlusion_batch(ws, &input, 2, 1, &[&[3, 4, 4], &[1]]).unwrap();
        }),
    ];
    for (what, call) in calls {
        assert_eq!(allocations(|| call(&mut ws)), 0, "Relations {what}");
    }

    let text = TextCnn::from_bytes(&random_weights(TextCnn::TENSORS)).unwrap();
    let mut ws = text.workspace(1).unwrap();
    let tokens: Vec<usize> = (0..12).map(|t| (t * 7) % 20).collect();
    assert_eq!(
        allocations(|| {
            let _ = text.predict(&mut ws, &tokens).unwrap();
        }),
        0,
        "TextCnn predict"
    );
    assert_eq!(
        allocations(|| {
            let _ = text.explain(&mut ws, &tokens, 0).unwrap();
        }),
        0,
        "TextCnn explain"
    );

    let lstm = BiLstm::from_bytes(&random_weights(BiLstm::TENSORS)).unwrap();
    let mut ws = lstm.workspace(12, 2).unwrap();
    let (a, b): (Vec<usize>, Vec<usize>) = ((0..12).map(|t| t % 25).collect(), (0..5).map(|t| (t * 3) % 25).collect());
    assert_eq!(
        allocations(|| {
            let _ = lstm.predict(&mut ws, &a).unwrap();
        }),
        0,
        "BiLSTM predict"
    );
    assert_eq!(
        allocations(|| {
            let _ = lstm.explain(&mut ws, &b, lrp::Target::Predicted).unwrap();
        }),
        0,
        "BiLSTM explain"
    );
    assert_eq!(
        allocations(|| {
            let _ = lstm.explain_batch(&mut ws, &[&a, &b], lrp::Target::Predicted).unwrap();
        }),
        0,
        "BiLSTM batch"
    );

    #[cfg(feature = "cuda")]
    gpu_models_allocate_nothing();
}

/// The GPU models, on the emulated device (whose buffers live in host memory, so a device
/// allocation would be counted too): every call allocates nothing once the workspace exists.
#[cfg(feature = "cuda")]
fn gpu_models_allocate_nothing() {
    let device = std::sync::Arc::new(lrp::runtime::gpu::Device::emulated());
    let lenet = LeNet::from_bytes(&random_weights(LeNet::TENSORS)).unwrap().to_gpu(&device).unwrap();
    let mut ws = lenet.workspace(2).unwrap();
    let image: Vec<f32> = (0..2 * 28 * 28).map(|i| (i % 17) as f32 / 17.0).collect();
    let on_device = device.upload("images", &image).unwrap();
    type Call<'a, W> = (&'a str, &'a dyn Fn(&mut W));
    let calls: [Call<LeNetGpuWorkspace>; 6] = [
        ("predict", &|ws| {
            let _ = lenet.predict_batch(ws, &image, 2).unwrap();
        }),
        ("explain", &|ws| {
            let _ = lenet.explain_batch(ws, &image, 2, 3).unwrap();
        }),
        ("gradient x input", &|ws| {
            let _ = lenet.gradient_x_input_batch(ws, &image, 2, 3).unwrap();
        }),
        ("explain_from", &|ws| {
            let _ = lenet.explain_from(ws, &image[..784], &[1.0; 10]).unwrap();
        }),
        ("occlusion", &|ws| {
            let _ = lenet.occlusion_batch(ws, &image, 2, 3, &[1, 7, 7]).unwrap();
        }),
        ("explain_on_device", &|ws| {
            let _ = lenet.explain_on_device(ws, &on_device, 2, 3).unwrap();
        }),
    ];
    for (what, call) in calls {
        assert_eq!(allocations(|| call(&mut ws)), 0, "LeNet on the GPU backend: {what}");
    }
    let rn = Relations::from_bytes(&random_weights(Relations::TENSORS)).unwrap().to_gpu(&device).unwrap();
    let mut ws = rn.workspace(6, 2).unwrap();
    let image: Vec<f32> = (0..2 * 3 * 12 * 12).map(|i| ((i * 13) % 29) as f32 / 29.0).collect();
    let (a, b) = ([1usize, 4, 2, 8, 5, 7], [3usize, 9]);
    let input = RelationsInput { image: &image, question: &[&a, &b] };
    assert_eq!(
        allocations(|| {
            let _ = rn.explain_batch(&mut ws, &input, 2, 1).unwrap();
        }),
        0,
        "Relations on the GPU backend"
    );
    assert_eq!(
        allocations(|| {
            let _ = rn.gradient_x_input_batch(&mut ws, &input, 2, 1).unwrap();
        }),
        0,
        "Relations on the GPU"
    );
    let lstm = BiLstm::from_bytes(&random_weights(BiLstm::TENSORS)).unwrap().to_gpu(&device).unwrap();
    let mut ws = lstm.workspace(12, 2).unwrap();
    let (a, b): (Vec<usize>, Vec<usize>) = ((0..12).map(|t| t % 25).collect(), (0..5).map(|t| (t * 3) % 25).collect());
    assert_eq!(
        allocations(|| {
            let _ = lstm.explain_batch(&mut ws, &[&a, &b], lrp::Target::Predicted).unwrap();
        }),
        0,
        "BiLSTM on the GPU"
    );
    assert_eq!(
        allocations(|| {
            let _ = lstm.gradient_x_input(&mut ws, &b, lrp::Target::Predicted).unwrap();
        }),
        0,
        "BiLSTM on the GPU"
    );
    let text = TextCnn::from_bytes(&random_weights(TextCnn::TENSORS)).unwrap().to_gpu(&device).unwrap();
    let mut ws = text.workspace(1).unwrap();
    let tokens: Vec<usize> = (0..12).map(|t| (t * 7) % 20).collect();
    assert_eq!(
        allocations(|| {
            let _ = text.explain(&mut ws, &tokens, lrp::Target::Predicted).unwrap();
        }),
        0,
        "TextCnn on the GPU"
    );
}
