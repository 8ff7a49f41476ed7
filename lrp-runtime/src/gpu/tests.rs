//! Each custom kernel and the product against a naive CPU version, on the device the
//! environment selects (`LRP_DEVICE`; the emulated device by default); NVRTC's compile of every
//! kernel; and the errors for missing libraries.

use super::*;
use crate::error::Error;

fn device() -> Device {
    Device::from_env().expect("the device LRP_DEVICE asks for")
}

/// Values with both signs, zeros among them.
fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 + salt * 11) % 29) as f32 / 4.0 - 3.5).collect()
}

/// Sizes around the block and grid limits: one thread's worth, a ragged block, and more
/// elements than one grid of threads (the grid-stride loop's second round).
const SIZES: [usize; 4] = [1, 255, 1000, (Grid::MAX_BLOCKS as usize) * (Grid::BLOCK as usize) + 77];

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

pub(super) fn check_relu(dev: &Device) {
    for n in SIZES {
        let x = values(n, 1);
        let xb = dev.upload("x", &x).unwrap();
        let mut yb = dev.zeros("y", n + 3).unwrap();
        ops::relu(dev, &xb, &mut yb, n).unwrap();
        let y = dev.download(&yb).unwrap();
        let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
        assert_close("relu", &y[..n], &want);
        assert_eq!(&y[n..], &[0.0; 3], "relu writes past n");
    }
}

pub(super) fn check_bias(dev: &Device) {
    for (rows, channels, inner) in [(1, 3, 1), (4, 5, 7), (2, 64, 33 * 33)] {
        let n = rows * channels * inner;
        let (z, b) = (values(n, 2), values(channels, 3));
        let scaled: Vec<f32> = z.iter().enumerate().map(|(i, v)| v - 0.5 * b[(i / inner) % channels]).collect();
        let bb = dev.upload("b", &b).unwrap();
        let mut zb = dev.upload("z", &z).unwrap();
        ops::add_bias(dev, &mut zb, &bb, -0.5, (channels, inner), n).unwrap();
        assert_close("add_bias", &dev.download(&zb).unwrap(), &scaled);
        let want: Vec<f32> = z.iter().enumerate().map(|(i, v)| v + b[(i / inner) % channels]).collect();
        let mut zb = dev.upload("z", &z).unwrap();
        let mut ab = dev.zeros("a", n).unwrap();
        ops::add_bias_relu(dev, &mut zb, &mut ab, &bb, (channels, inner), n).unwrap();
        assert_close("add_bias_relu z", &dev.download(&zb).unwrap(), &want);
        let relu: Vec<f32> = want.iter().map(|v| v.max(0.0)).collect();
        assert_close("add_bias_relu a", &dev.download(&ab).unwrap(), &relu);
    }
}

pub(super) fn check_product(dev: &Device) {
    for n in SIZES {
        let (x, c) = (values(n, 4), values(n, 6));
        let (xb, cb) = (dev.upload("x", &x).unwrap(), dev.upload("c", &c).unwrap());
        let mut yb = dev.zeros("y", n).unwrap();
        ops::multiply(dev, &xb, &cb, &mut yb, n).unwrap();
        let want: Vec<f32> = x.iter().zip(&c).map(|(a, b)| a * b).collect();
        assert_close("multiply", &dev.download(&yb).unwrap(), &want);
    }
}

pub(super) fn check_rule_parts(dev: &Device) {
    use crate::rules::{InputMod, Mask};
    let modes = [(InputMod::Identity, 0), (InputMod::Positive, 1), (InputMod::Negative, 2)];
    let apply = |m: usize, v: f32| [v, v.max(0.0), v.min(0.0)][m];
    for n in SIZES {
        let (x, z, r, p) = (values(n, 10), values(n, 11), values(n, 12), values(n, 13));
        let (xb, zb, rb, pb) = (
            dev.upload("x", &x).unwrap(),
            dev.upload("z", &z).unwrap(),
            dev.upload("r", &r).unwrap(),
            dev.upload("p", &p).unwrap(),
        );
        let mut gb = dev.upload("g", &r).unwrap();
        ops::relu_gradient(dev, &mut gb, &zb, n).unwrap();
        let want: Vec<f32> = r.iter().zip(&z).map(|(g, z)| if *z > 0.0 { *g } else { 0.0 }).collect();
        assert_close("relu_gradient", &dev.download(&gb).unwrap(), &want);
        for (input, m) in modes {
            let mut yb = dev.zeros("y", n).unwrap();
            ops::input_mod(dev, &xb, &mut yb, input, n).unwrap();
            let want: Vec<f32> = x.iter().map(|v| apply(m, *v)).collect();
            assert_close("input_mod", &dev.download(&yb).unwrap(), &want);
            // r = factor in(x) c, then r += the same.
            let mut ab = dev.zeros("r_in", n).unwrap();
            for overwrite in [true, false] {
                ops::accumulate(dev, &mut ab, &rb, ops::TermInput::Variable(&xb, input), (-1.5, overwrite), n).unwrap();
            }
            let want: Vec<f32> = x.iter().zip(&r).map(|(x, c)| 2.0 * (-1.5 * apply(m, *x) * c)).collect();
            assert_close("accumulate", &dev.download(&ab).unwrap(), &want);
        }
        let mut db = dev.zeros("d", n).unwrap();
        ops::combine(dev, &mut db, &zb, &pb, 2.5, -1.0, n).unwrap();
        let want: Vec<f32> = z.iter().zip(&p).map(|(z, p)| 2.5 * z - p).collect();
        assert_close("combine", &dev.download(&db).unwrap(), &want);
        for (mask, keep) in [(Mask::All, 0), (Mask::Positive, 1), (Mask::Negative, 2)] {
            let mut db = dev.upload("d", &p).unwrap();
            ops::masked_ratio(dev, &mut db, &zb, &rb, (mask, 0.1), n).unwrap();
            let want: Vec<f32> = (0..n)
                .map(|i| {
                    let kept = [true, z[i] > 0.0, z[i] < 0.0][keep];
                    if kept { r[i] / crate::kernels::elementwise::stabilize(p[i], 0.1) } else { 0.0 }
                })
                .collect();
            assert_close("masked_ratio", &dev.download(&db).unwrap(), &want);
        }
    }
    // A constant input repeats one sample over the batch.
    let (k, c) = (values(7, 14), values(21, 15));
    let (kb, cb) = (dev.upload("k", &k).unwrap(), dev.upload("c", &c).unwrap());
    let mut ab = dev.zeros("r_in", 21).unwrap();
    ops::accumulate(dev, &mut ab, &cb, ops::TermInput::Constant(&kb), (2.0, true), 21).unwrap();
    let want: Vec<f32> = (0..21).map(|i| 2.0 * k[i % 7] * c[i]).collect();
    assert_close("accumulate (constant)", &dev.download(&ab).unwrap(), &want);
}

/// `im2col` and `col2im` against the CPU's, for padded, strided and dilated geometries, on
/// batches of samples from an offset.
pub(super) fn check_columns(dev: &Device) {
    use crate::kernels::{Conv2dGeom, col2im, im2col};
    for (k, s, p, d) in [(3, 1, 1, 1), (3, 2, 0, 1), (2, 1, 2, 2), (5, 3, 2, 1)] {
        let g = Conv2dGeom {
            in_channels: 3,
            out_channels: 1,
            in_h: 9,
            in_w: 7,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [d, d],
            groups: 1,
        };
        let (len, per) = (g.in_len(), g.col_rows() * g.col_cols());
        let x = values(4 * len, 16);
        let mut want = vec![0.0; 2 * per];
        for (i, sample) in [1, 2].into_iter().enumerate() {
            im2col(&g, &x[sample * len..], &mut want[i * per..]);
        }
        let xb = dev.upload("x", &x).unwrap();
        let mut cb = dev.zeros("cols", 2 * per).unwrap();
        ops::conv::im2col(dev, &g, (&xb, 1, 2), &mut cb).unwrap();
        assert_close("im2col", &dev.download(&cb).unwrap(), &want);
        let cols = values(2 * per, 17);
        let mut folded = vec![0.0; 2 * len];
        for i in 0..2 {
            col2im(&g, &cols[i * per..], &mut folded[i * len..]);
        }
        let colb = dev.upload("cols", &cols).unwrap();
        let mut out = dev.upload("image", &vec![7.0; 4 * len]).unwrap();
        ops::conv::col2im(dev, &g, &colb, (&mut out, 1, 2)).unwrap();
        let got = dev.download(&out).unwrap();
        assert!(got[..len].iter().chain(&got[3 * len..]).all(|v| *v == 7.0), "col2im writes outside its samples");
        assert_close("col2im", &got[len..3 * len], &folded);
    }
}

/// The device-side check of values.
pub(super) fn check_checks(dev: &Device) {
    let mut scratch = ops::checks::CheckScratch::new(dev).unwrap();
    let x = dev.upload("x", &[0.0, 1.0, f32::NAN]).unwrap();
    assert_eq!(ops::checks::first_bad(dev, (&x, 0, 3), false, &mut scratch).unwrap(), Some(2));
}

/// Occluded copies of a sample, one window each.
pub(super) fn check_occlusion(dev: &Device) {
    let windows = crate::occlusion::Windows::new(&[2, 3], &[1, 2]).unwrap();
    let x = dev.upload("x", &values(6, 18)).unwrap();
    let mut out = dev.zeros("out", 6 * windows.count()).unwrap();
    ops::occlusion::occlude(dev, &windows, (&x, 0), 0, windows.count(), &mut out).unwrap();
    let got = dev.download(&out).unwrap();
    for w in 0..windows.count() {
        let mut want = values(6, 18);
        windows.for_each_index(w, |j| want[j] = 0.0);
        assert_close("occlude_windows", &got[w * 6..(w + 1) * 6], &want);
    }
}

#[test]
fn columns_match_the_naive_version() {
    check_columns(&device());
}

/// Every pooling kernel against the CPU layers, on ResNet's stem pool (3x3 / 2, padding 1) and
/// uneven adaptive windows (9x13 -> 7x7), two samples; outputs past the samples stay untouched.
pub(super) fn check_pooling(dev: &Device) {
    use crate::kernels::{AdaptivePool2dGeom, Pool2dGeom};
    use crate::layers::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
    use ops::pool::*;
    let n = 2;
    let g = Pool2dGeom { channels: 3, in_h: 9, in_w: 10, kernel: [3, 3], stride: [2, 2], padding: [1, 1] };
    let a = AdaptivePool2dGeom { channels: 2, in_h: 9, in_w: 13, out_h: 7, out_w: 7 };
    let x = |len: usize| values(n * len, 20).iter().map(|v| v.abs() + 0.25).collect::<Vec<f32>>();
    let up = |what, v: &[f32]| dev.upload(what, &[v, &[7.0; 3]].concat()).unwrap();
    let check = |what: &str, b: &DeviceBuffer, want: &[f32]| {
        let got = dev.download(b).unwrap();
        assert_close(what, &got[..want.len()], want);
        assert_eq!(&got[want.len()..], &[7.0; 3], "{what} writes past n samples");
    };
    let (xm, xa, xd) = (values(n * g.in_len(), 21), x(g.in_len()), x(a.in_len()));
    let (r, ra) = (values(n * g.out_len(), 22), values(n * a.out_len(), 23));
    let (mut y, mut ri) = (vec![0.0; n * g.out_len()], vec![0.0; n * g.in_len()]);
    let mut argmax = vec![0; n * g.out_len()];
    let (xb, rb, mut yb, mut rib) = (up("x", &xm), up("r", &r), up("y", &y), up("r_in", &ri));
    let max = MaxPool2d::new(g).unwrap();
    max.forward(&xm, n, &mut y, &mut argmax).unwrap();
    max.relevance(&argmax, &r, n, &mut ri).unwrap();
    maxpool_forward(dev, &g, n, &xb, &mut yb).unwrap();
    maxpool_backward(dev, &g, n, &xb, &rb, &mut rib).unwrap();
    check("maxpool_forward", &yb, &y);
    check("maxpool_backward", &rib, &ri);
    let avg = AvgPool2d::new(g).unwrap();
    let xb = up("x", &xa);
    avg.forward(&xa, n, &mut y).unwrap();
    avgpool_forward(dev, &g, n, &xb, &mut yb).unwrap();
    check("avgpool_forward", &yb, &y);
    avg.relevance(&xa, &y, &r, n, &mut ri).unwrap();
    avgpool_relevance(dev, &g, n, (&xb, &yb), &rb, crate::rules::DEFAULT_STABILIZER, &mut rib).unwrap();
    check("avgpool_relevance", &rib, &ri);
    avg.gradient(&r, n, &mut ri).unwrap();
    avgpool_gradient(dev, &g, n, &rb, &mut rib).unwrap();
    check("avgpool_gradient", &rib, &ri);
    let adaptive = AdaptiveAvgPool2d::new(a).unwrap();
    let (mut y, mut ri) = (vec![0.0; n * a.out_len()], vec![0.0; n * a.in_len()]);
    let (xb, rb, mut yb, mut rib) = (up("x", &xd), up("r", &ra), up("y", &y), up("r_in", &ri));
    adaptive.forward(&xd, n, &mut y).unwrap();
    adaptive_avgpool_forward(dev, &a, n, &xb, &mut yb).unwrap();
    check("adaptive_avgpool_forward", &yb, &y);
    adaptive.relevance(&xd, &y, &ra, n, &mut ri).unwrap();
    adaptive_avgpool_relevance(dev, &a, n, (&xb, &yb), &rb, crate::rules::DEFAULT_STABILIZER, &mut rib).unwrap();
    check("adaptive_avgpool_relevance", &rib, &ri);
    adaptive.gradient(&ra, n, &mut ri).unwrap();
    adaptive_avgpool_gradient(dev, &a, n, &rb, &mut rib).unwrap();
    check("adaptive_avgpool_gradient", &rib, &ri);
}

/// Every kernel of `graph.cu` and `sets.cu` (through their modules' checks) and of
/// `batchnorm.cu` against the CPU, once each.
pub(super) fn check_graph_kernels(dev: &Device) {
    ops::graph::tests::check_kernels(dev);
    ops::sets::tests::check_kernels(dev);
    let cpu = crate::layers::BatchNorm::from_stats("bn", &[0.5, -2.0], &[0.1, 0.3], &[1.0, -1.0], &[0.25, 4.0], 1e-5);
    let (cpu, (n, spatial, len)) = (cpu.unwrap(), (2, 5, 20));
    let bn = layers::GpuBatchNorm::upload(dev, &cpu).unwrap();
    let (x, r) = (values(len, 30), values(len, 31));
    let (mut y, mut r_in, mut g_in) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
    cpu.forward(&x, n, spatial, &mut y).unwrap();
    cpu.relevance(&x, &y, &r, n, spatial, 1e-6, &mut r_in).unwrap();
    cpu.gradient(&r, n, spatial, &mut g_in).unwrap();
    let (xb, rb) = (dev.upload("x", &x).unwrap(), dev.upload("r", &r).unwrap());
    let mut out = [(); 3].map(|_| dev.zeros("out", len).unwrap());
    let [yb, rib, gib] = &mut out;
    bn.forward(dev, &xb, n, spatial, yb).unwrap();
    bn.relevance(dev, &xb, yb, &rb, n, spatial, 1e-6, rib).unwrap();
    bn.gradient(dev, &rb, n, spatial, gib).unwrap();
    for ((what, b), want) in
        ["batchnorm_forward", "batchnorm_relevance", "batchnorm_gradient"].iter().zip(&out).zip([y, r_in, g_in])
    {
        assert_close(what, &dev.download(b).unwrap(), &want);
    }
}

/// Every kernel of `recurrent.cu`, through the layers that launch them: an LSTM and a GRU (two
/// stacked bidirectional layers, LRP-prop, mean output; forward, relevance and gradient) and an
/// embedding, against the CPU layers.
pub(super) fn check_recurrent(dev: &Device) {
    use crate::layers::{CellParams, Embedding, Gru, Lstm, ProductRule, RecurrentGeom, SeqOutput};
    use layers::{GpuEmbedding, GpuRecurrent, RecurrentScratch};
    let (steps, input, hidden) = (3, 4, 3);
    let geom = RecurrentGeom {
        input_size: input,
        hidden_size: hidden,
        num_layers: 2,
        bidirectional: true,
        output: SeqOutput::Mean,
    };
    let scaled = |n: usize, salt: usize, by: f32| values(n, salt).iter().map(|v| v / by).collect::<Vec<f32>>();
    let (x, seed) = (scaled(steps * input, 40, 4.0), values(geom.out_len(), 41));
    let close = |what: &str, got: &[f32], want: &[f32]| {
        let scale = want.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
        let e = got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale;
        assert!(got.len() == want.len() && e <= 1e-4, "{what}: relative error {e}");
    };
    for gates in [4, 3] {
        let rows = gates * hidden;
        let params: Vec<CellParams> = (0..4)
            .map(|i| CellParams {
                w_ih: scaled(rows * geom.layer_input(i / 2), 42 + i, 8.0),
                w_hh: scaled(rows * hidden, 50 + i, 8.0),
                b_ih: Some(scaled(rows, 60 + i, 8.0)),
                b_hh: Some(scaled(rows, 70 + i, 8.0)),
            })
            .collect();
        let (mut trace, mut y, mut scratch) = (vec![0.0; 1000], vec![0.0; geom.out_len()], vec![0.0; 1000]);
        let (mut r_in, mut g_in) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        macro_rules! cpu {
            ($layer:expr) => {{
                let mut l = $layer.unwrap();
                l.set_rule(ProductRule::Prop, 0.01).unwrap();
                l.forward(&x, steps, &mut trace, &mut y).unwrap();
                l.relevance(&x, steps, &trace, &seed, &mut r_in, &mut scratch).unwrap();
                l.gradient(&x, steps, &trace, &seed, &mut g_in, &mut scratch).unwrap();
                l
            }};
        }
        let gpu = match gates {
            4 => GpuRecurrent::from_lstm(dev, &cpu!(Lstm::new("lstm", geom, params))),
            _ => GpuRecurrent::from_gru(dev, &cpu!(Gru::new("gru", geom, params))),
        }
        .unwrap();
        let mut ws = RecurrentScratch::new(dev, steps, &[&gpu]).unwrap();
        let (xb, sb) = (dev.upload("x", &x).unwrap(), dev.upload("seed", &seed).unwrap());
        let mut tb = dev.zeros("trace", gpu.trace_len(steps).unwrap()).unwrap();
        let (mut yb, mut rb) = (dev.zeros("y", y.len()).unwrap(), dev.zeros("r_in", x.len()).unwrap());
        gpu.forward(dev, (&xb, 0), steps, (&mut tb, 0), (&mut yb, 0), &mut ws).unwrap();
        close("recurrent forward", &dev.download(&yb).unwrap(), &y);
        gpu.relevance(dev, (&xb, 0), steps, (&tb, 0), (&sb, 0), (&mut rb, 0), &mut ws).unwrap();
        close("recurrent relevance", &dev.download(&rb).unwrap(), &r_in);
        gpu.gradient(dev, (&xb, 0), steps, (&tb, 0), (&sb, 0), (&mut rb, 0), &mut ws).unwrap();
        close("recurrent gradient", &dev.download(&rb).unwrap(), &g_in);
    }
    let cpu = Embedding::new("emb", 5, 3, values(15, 43)).unwrap();
    let tokens = [4, 0, 2, 4];
    let mut want = vec![0.0; 12];
    cpu.forward(&tokens, &mut want).unwrap();
    let (mut ids, mut out) = (GpuEmbedding::ids_buffer(dev, 4).unwrap(), dev.zeros("out", 12).unwrap());
    GpuEmbedding::upload(dev, &cpu).unwrap().forward(dev, &tokens, &mut ids, (&mut out, 0)).unwrap();
    assert_eq!(dev.download(&out).unwrap(), want, "embedding_forward");
}

#[test]
fn rule_parts_match_the_naive_version() {
    check_rule_parts(&device());
}

#[test]
fn relu_matches_the_naive_version() {
    check_relu(&device());
}

#[test]
fn biases_match_the_naive_version() {
    check_bias(&device());
}

#[test]
fn product_matches_the_naive_version() {
    check_product(&device());
}

/// Every kernel the build found is launched by the checks above: a kernel added without a
/// test fails here.
#[test]
fn every_kernel_is_launched_by_a_unit_test() {
    let dev = device();
    check_relu(&dev);
    check_bias(&dev);
    check_product(&dev);
    check_rule_parts(&dev);
    check_columns(&dev);
    check_occlusion(&dev);
    check_checks(&dev);
    check_pooling(&dev);
    check_graph_kernels(&dev);
    check_recurrent(&dev);
    let never: Vec<&str> = launch_counts().into_iter().filter(|(_, c)| *c == 0).map(|(n, _)| n).collect();
    assert!(never.is_empty(), "kernels never launched by a unit test: {never:?}");
}

#[test]
fn products_match_the_naive_version_for_every_transposition() {
    let dev = device();
    let (m, n, k) = (37, 19, 23);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (a, b, c0) = (values(m * k, 7), values(k * n, 8), values(m * n, 9));
        // Stored transposed where used transposed: a_t is k x m, b_t is n x k.
        let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
        let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
        let (alpha, beta) = (0.5, -2.0);
        let want: Vec<f32> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                alpha * (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f32>() + beta * c0[ij]
            })
            .collect();
        // Place each matrix at an offset, to check offsets too.
        let pad = |v: &[f32]| [vec![9.0; 5], v.to_vec()].concat();
        let (ab, bb) = (dev.upload("a", &pad(&a)).unwrap(), dev.upload("b", &pad(&b)).unwrap());
        let mut cb = dev.upload("c", &pad(&c0)).unwrap();
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        gemm(
            &dev,
            alpha,
            Mat { buffer: &ab, offset: 5, rows: ar, cols: ac, transposed: ta },
            Mat { buffer: &bb, offset: 5, rows: br, cols: bc, transposed: tb },
            beta,
            MatMut { buffer: &mut cb, offset: 5, rows: m, cols: n },
        )
        .unwrap();
        let got = dev.download(&cb).unwrap();
        assert_eq!(&got[..5], &[9.0; 5]);
        for (i, (g, w)) in got[5..].iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "({ta}, {tb}) [{i}]: {g} vs {w}");
        }
    }
}

/// A batch of products with a repeated operand (stride 0) against products one by one, and
/// results that would overlap refused.
#[test]
fn batched_products_equal_products_one_by_one() {
    let dev = device();
    let (m, n, k, count) = (5, 7, 3, 4);
    let (w, x) = (values(m * k, 1), values(count * k * n, 2));
    let (wb, xb) = (dev.upload("w", &w).unwrap(), dev.upload("x", &x).unwrap());
    let mut batched = dev.zeros("c", count * m * n).unwrap();
    let mat = |buffer, offset, rows, cols| Mat { buffer, offset, rows, cols, transposed: false };
    let out = MatMut { buffer: &mut batched, offset: 0, rows: m, cols: n };
    gemm_batched(&dev, 1.0, mat(&wb, 0, m, k), mat(&xb, 0, k, n), 0.0, out, (count, [0, k * n, m * n])).unwrap();
    let mut one = dev.zeros("c", count * m * n).unwrap();
    for s in 0..count {
        let out = MatMut { buffer: &mut one, offset: s * m * n, rows: m, cols: n };
        gemm(&dev, 1.0, mat(&wb, 0, m, k), mat(&xb, s * k * n, k, n), 0.0, out).unwrap();
    }
    assert_eq!(dev.download(&batched).unwrap(), dev.download(&one).unwrap());
    let out = MatMut { buffer: &mut batched, offset: 0, rows: m, cols: n };
    assert!(gemm_batched(&dev, 1.0, mat(&wb, 0, m, k), mat(&xb, 0, k, n), 0.0, out, (count, [0, k * n, 1])).is_err());
    let out = MatMut { buffer: &mut batched, offset: 0, rows: m, cols: n };
    assert!(
        gemm_batched(&dev, 1.0, mat(&wb, 0, m, k), mat(&xb, 0, k, n), 0.0, out, (count + 1, [0, k * n, m * n]))
            .is_err()
    );
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let dev = device();
    let x = dev.upload("x", &[1.0; 8]).unwrap();
    let mut y = dev.zeros("y", 4).unwrap();
    // A range past the end of a buffer names it.
    let e = ops::relu(&dev, &x, &mut y, 8).unwrap_err();
    assert!(matches!(&e, Error::Length { what, .. } if what.contains("`y`")), "{e}");
    assert!(dev.read(&x, 6, &mut [0.0; 4]).is_err());
    assert!(dev.write(&mut y, usize::MAX, &[1.0]).is_err());
    // A buffer of another device.
    let other = Device::emulated();
    let foreign = other.upload("foreign", &[1.0; 4]).unwrap();
    let e = ops::relu(&dev, &foreign, &mut y, 4).unwrap_err();
    assert!(e.to_string().contains("another device"), "{e}");
    // Shapes that disagree, and a bias layout that does not divide the values.
    let m = |buffer, rows, cols| Mat { buffer, offset: 0, rows, cols, transposed: false };
    let e = gemm(&dev, 1.0, m(&x, 2, 4), m(&x, 2, 4), 0.0, MatMut { buffer: &mut y, offset: 0, rows: 2, cols: 2 });
    assert!(e.is_err());
    let b = dev.upload("b", &[1.0; 3]).unwrap();
    assert!(ops::add_bias(&dev, &mut y, &b, 1.0, (3, 1), 4).is_err());
    assert!(ops::add_bias(&dev, &mut y, &b, 1.0, (0, 1), 0).is_err());
    let c = dev.upload("c", &[1.0; 4]).unwrap();
    let e = ops::accumulate(&dev, &mut y, &c, ops::TermInput::Constant(&b), (1.0, true), 4).unwrap_err();
    assert!(e.to_string().contains("not whole samples of 3"), "{e}");
}

#[test]
fn a_missing_library_is_an_error_that_names_it() {
    let missing = missing_libraries();
    match Device::cuda(0) {
        Err(Error::GpuUnavailable { missing: named }) if !missing.is_empty() => assert_eq!(named, missing),
        Err(e) => assert!(missing.is_empty(), "libraries missing, but another error: {e}"),
        Ok(d) => assert!(missing.is_empty() && !d.is_emulated()),
    }
    // With TF32 products asked for, the same.
    match Device::cuda_with(0, DeviceOptions { tf32: true }) {
        Err(Error::GpuUnavailable { missing: named }) if !missing.is_empty() => assert_eq!(named, missing),
        Err(e) => assert!(missing.is_empty(), "libraries missing, but another error: {e}"),
        Ok(d) => assert!(d.name().contains("TF32")),
    }
}

/// With `LD_LIBRARY_PATH` emptied, NVRTC from a pip package (and cuBLAS) cannot be found: this
/// test runs itself again in a child process so, and the child checks the error names NVRTC.
#[test]
fn without_nvrtc_creating_a_gpu_device_names_nvrtc() {
    if std::env::var_os("LRP_GPU_CHILD").is_some() {
        let missing = missing_libraries();
        if missing.iter().all(|m| !m.starts_with("NVRTC")) {
            println!("SKIPPED: NVRTC is installed where the loader finds it without LD_LIBRARY_PATH");
            return;
        }
        let e = Device::cuda(0).unwrap_err();
        assert!(e.to_string().contains("NVRTC (libnvrtc.so.13"), "{e}");
        println!("CHILD OK: {e}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "gpu::tests::without_nvrtc_creating_a_gpu_device_names_nvrtc", "--nocapture"])
        .env("LRP_GPU_CHILD", "1")
        .env("LD_LIBRARY_PATH", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("CHILD OK") || stdout.contains("SKIPPED"), "the child ran no check: {stdout}");
    println!("{}", stdout.lines().find(|l| l.contains("CHILD OK") || l.contains("SKIPPED")).unwrap_or(""));
}

/// Every kernel source compiles with NVRTC for the A100's and the H100/H200's architectures.
/// NVRTC needs no GPU; CI installs it (`tools/nvrtc_env.sh`) and sets `LRP_REQUIRE_NVRTC=1`, so
/// that there its absence fails instead of skipping.
#[test]
fn nvrtc_compiles_every_kernel_for_sm_80_and_sm_90() {
    if missing_libraries().iter().any(|m| m.starts_with("NVRTC")) {
        assert!(std::env::var_os("LRP_REQUIRE_NVRTC").is_none(), "LRP_REQUIRE_NVRTC is set but NVRTC is missing");
        println!("SKIPPED: NVRTC not found (export LD_LIBRARY_PATH=\"$(tools/nvrtc_env.sh)\" to run this test)");
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let ptx = device::compile_kernels(arch).unwrap();
        for (p, (file, _, kernels)) in ptx.iter().zip(kernel_sources()) {
            let text = p.to_src();
            for k in kernels.iter() {
                assert!(text.contains(&format!(".entry {k}(")), "{file} for {arch}: no entry `{k}`");
            }
        }
        println!("NVRTC compiled {} kernels for {arch}", launch_counts().len());
    }
}
