//! Property tests of the LRP rules on random networks built directly from the runtime API:
//! conservation of LRP-epsilon without bias, positivity of z+ (= alpha1-beta0), BatchNorm
//! folding in both directions, and gamma -> infinity approaching z+.

use std::ops::RangeInclusive;

use lrp_runtime::Rule;
use lrp_runtime::kernels::elementwise::{argmax, relu};
use lrp_runtime::kernels::{Conv2dGeom, Pool2dGeom};
use lrp_runtime::layers::{AvgPool2d, BatchNorm, LinearKind, LinearMap, MaxPool2d};
use proptest::collection::vec;
use proptest::prelude::*;

/// Range of every random weight and bias.
const W: RangeInclusive<f32> = -1.0..=1.0;

// ---------------------------------------------------------------------------------------------
// Random networks
// ---------------------------------------------------------------------------------------------

/// One layer of a random network, as proptest generates (and prints) it.
#[derive(Clone, Debug)]
enum LayerSpec {
    Linear { kind: LinearKind, weight: Vec<f32>, bias: Vec<f32> },
    Relu,
    MaxPool(Pool2dGeom),
    AvgPool(Pool2dGeom),
}

/// A random feed-forward network and one input sample.
#[derive(Clone, Debug)]
struct NetSpec {
    layers: Vec<LayerSpec>,
    input: Vec<f32>,
}

/// A built layer.
#[allow(clippy::large_enum_variant)] // a handful per test network
enum Layer {
    Linear(LinearMap),
    Relu,
    MaxPool(MaxPool2d),
    AvgPool(AvgPool2d),
}

/// A built network: every linear layer prepared for a rule.
struct Net {
    layers: Vec<Layer>,
    scratch: usize,
}

/// The forward pass of one sample: `acts[0]` the input, `acts[i + 1]` the output of layer `i`
/// (pre-activation for a linear layer), and each max-pooling layer's winners.
struct Trace {
    acts: Vec<Vec<f32>>,
    winners: Vec<Vec<u32>>,
}

impl Trace {
    fn logits(&self) -> &[f32] {
        self.acts.last().unwrap()
    }
}

fn dense(in_features: usize, out_features: usize) -> impl Strategy<Value = LayerSpec> {
    (vec(W, in_features * out_features), vec(W, out_features)).prop_map(move |(weight, bias)| LayerSpec::Linear {
        kind: LinearKind::Dense { in_features, out_features },
        weight,
        bias,
    })
}

/// Dense layers (depth 1-3, widths 1-12) with a ReLU between two of them; inputs from `input`.
fn dense_net(input: RangeInclusive<f32>) -> impl Strategy<Value = NetSpec> {
    (1..=3usize)
        .prop_flat_map(|depth| vec(1..=12usize, depth + 1))
        .prop_flat_map(move |dims| {
            let linears: Vec<_> = dims.windows(2).map(|w| dense(w[0], w[1])).collect();
            (linears, vec(input.clone(), dims[0]))
        })
        .prop_map(|(linears, input)| {
            let mut layers = Vec::new();
            for (i, l) in linears.into_iter().enumerate() {
                if i > 0 {
                    layers.push(LayerSpec::Relu);
                }
                layers.push(l);
            }
            NetSpec { layers, input }
        })
}

/// Conv2d (kernel 1-3, stride 1-2, padding 0-1, 1-4 channels, input 1-3 x 5-9 x 5-9) -> ReLU ->
/// 2x2 max- or average pooling -> dense (1-4 classes); inputs from `input`.
fn conv_net(input: RangeInclusive<f32>) -> impl Strategy<Value = NetSpec> {
    let shape = (1..=3usize, 5..=9usize, 5..=9usize, 1..=4usize);
    let window = ([1..=3usize, 1..=3usize], [1..=2usize, 1..=2usize], [0..=1usize, 0..=1usize]);
    (shape, window, any::<bool>(), 1..=4usize)
        .prop_flat_map(move |((cin, h, w, cout), (kernel, stride, padding), max, classes)| {
            let geom = Conv2dGeom {
                in_channels: cin,
                out_channels: cout,
                in_h: h,
                in_w: w,
                kernel,
                stride,
                padding,
                dilation: [1, 1],
                groups: 1,
            };
            let pool = Pool2dGeom {
                channels: cout,
                in_h: geom.out_h(),
                in_w: geom.out_w(),
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
            };
            let conv = (vec(W, geom.weight_shape().iter().product::<usize>()), vec(W, cout))
                .prop_map(move |(weight, bias)| LayerSpec::Linear { kind: LinearKind::Conv2d(geom), weight, bias });
            let features = pool.out_len();
            let pool = if max { LayerSpec::MaxPool(pool) } else { LayerSpec::AvgPool(pool) };
            (conv, Just(pool), dense(features, classes), vec(input.clone(), geom.in_len()))
        })
        .prop_map(|(conv, pool, dense, input)| NetSpec { layers: vec![conv, LayerSpec::Relu, pool, dense], input })
}

/// Either kind of random network.
fn any_net(input: RangeInclusive<f32>) -> impl Strategy<Value = NetSpec> {
    prop_oneof![dense_net(input.clone()), conv_net(input)]
}

impl NetSpec {
    /// Builds the network with `rule` on every linear layer. The first layer's input is
    /// non-negative when `input_nonneg`; every later linear layer reads a ReLU's output.
    fn build(&self, rule: &Rule, input_nonneg: bool) -> Net {
        let mut scratch = 0;
        let mut first = true;
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| match l {
                LayerSpec::Linear { kind, weight, bias } => {
                    let mut map = LinearMap::new(&i.to_string(), *kind, weight.clone(), Some(bias.clone())).unwrap();
                    map.prepare(rule, input_nonneg || !first).unwrap();
                    first = false;
                    scratch = scratch.max(kind.scratch_len(1));
                    Layer::Linear(map)
                }
                LayerSpec::Relu => Layer::Relu,
                LayerSpec::MaxPool(g) => Layer::MaxPool(MaxPool2d::new(*g).expect("valid geometry")),
                LayerSpec::AvgPool(g) => Layer::AvgPool(AvgPool2d::new(*g).expect("valid geometry")),
            })
            .collect();
        Net { layers, scratch }
    }

    /// Biases of layer `i` (a linear one).
    fn bias(&self, i: usize) -> &[f32] {
        match &self.layers[i] {
            LayerSpec::Linear { bias, .. } => bias,
            _ => unreachable!(),
        }
    }

    /// The same linear layer `i` with `|W|` and `|b|`: applied to `|x|`, it gives
    /// `S_k = sum_j |x_j w_jk| + |b_k|`, the scale of the rounding errors of `z_k`.
    fn abs_layer(&self, i: usize) -> LinearMap {
        match &self.layers[i] {
            LayerSpec::Linear { kind, weight, bias } => {
                let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
                LinearMap::new("abs", *kind, abs(weight), Some(abs(bias))).unwrap()
            }
            _ => unreachable!(),
        }
    }
}

impl Net {
    fn forward(&self, input: &[f32]) -> Trace {
        let mut acts = vec![input.to_vec()];
        let mut winners = Vec::new();
        for layer in &self.layers {
            let x = acts.last().unwrap();
            let y = match layer {
                Layer::Linear(map) => {
                    let mut z = vec![0.0; map.kind().out_len()];
                    map.forward(x, 1, &mut z).expect("buffers sized");
                    z
                }
                Layer::Relu => {
                    let mut y = vec![0.0; x.len()];
                    relu(x, &mut y);
                    y
                }
                Layer::MaxPool(p) => {
                    let (mut y, mut idx) = (vec![0.0; p.geom.out_len()], vec![0u32; p.geom.out_len()]);
                    p.forward(x, 1, &mut y, &mut idx).expect("buffers sized");
                    winners.push(idx);
                    y
                }
                Layer::AvgPool(p) => {
                    let mut y = vec![0.0; p.geom.out_len()];
                    p.forward(x, 1, &mut y).expect("buffers sized");
                    y
                }
            };
            acts.push(y);
        }
        Trace { acts, winners }
    }

    /// LRP from `r_top` (over the logits) down: `rel[i]` is the relevance of `acts[i]`.
    fn backward(&self, trace: &Trace, r_top: &[f32]) -> Vec<Vec<f32>> {
        let mut scratch = vec![0.0; self.scratch];
        let mut rel = vec![r_top.to_vec()];
        let mut winners = trace.winners.iter().rev();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let (x, y, r_out) = (&trace.acts[i], &trace.acts[i + 1], rel.last().unwrap());
            let mut r_in = vec![f32::NAN; x.len()];
            match layer {
                Layer::Linear(map) => map.relevance(x, y, r_out, 1, &mut r_in, &mut scratch).expect("buffers sized"),
                Layer::Relu => r_in.copy_from_slice(r_out),
                Layer::MaxPool(p) => p.relevance(winners.next().unwrap(), r_out, 1, &mut r_in).expect("buffers sized"),
                Layer::AvgPool(p) => p.relevance(x, y, r_out, 1, &mut r_in).expect("buffers sized"),
            }
            rel.push(r_in);
        }
        rel.reverse();
        rel
    }
}

/// The explained class (argmax) and its score.
fn top(trace: &Trace) -> (usize, f32) {
    let c = argmax(trace.logits()).unwrap();
    (c, trace.logits()[c])
}

fn one_hot(len: usize, c: usize, value: f32) -> Vec<f32> {
    let mut r = vec![0.0; len];
    r[c] = value;
    r
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

fn sum64(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x)).sum()
}

/// How ill-conditioned the conservation of a backward pass is: returns `(amplification, lost)`.
/// `amplification` = the sum over linear layers and outputs `k` receiving relevance of
/// `|R_k| S_k / |z_k - b_k|` (the f32 rounding errors of the shares scale with it, and it is
/// large where `z_k - b_k` cancels); `lost` estimates what the stabilisers absorb:
/// `|R_k| eps / |z_k - b_k|` for linear layers and `|R_w| 1e-6 / y_w` for average pooling.
fn conditioning(spec: &NetSpec, trace: &Trace, rel: &[Vec<f32>], eps: f64) -> (f64, f64) {
    let (mut amplification, mut lost) = (0.0f64, 0.0f64);
    for (i, layer) in spec.layers.iter().enumerate() {
        let (x, y, r) = (&trace.acts[i], &trace.acts[i + 1], &rel[i + 1]);
        match layer {
            LayerSpec::Linear { kind, .. } => {
                let abs = spec.abs_layer(i);
                let x_abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                let mut s = vec![0.0; kind.out_len()];
                abs.forward(&x_abs, 1, &mut s).expect("buffers sized");
                let bias = spec.bias(i);
                let spatial = kind.out_len() / kind.out_channels();
                for k in 0..kind.out_len() {
                    if r[k] == 0.0 {
                        continue;
                    }
                    let d = (f64::from(y[k]) - f64::from(bias[k / spatial])).abs();
                    let rk = f64::from(r[k]).abs();
                    amplification += rk * f64::from(s[k]) / d;
                    lost += rk * eps / d;
                }
            }
            LayerSpec::AvgPool(_) => {
                for (&yo, &ro) in y.iter().zip(r) {
                    if ro != 0.0 {
                        lost += f64::from(ro).abs() * 1e-6 / f64::from(yo).abs();
                    }
                }
            }
            LayerSpec::Relu | LayerSpec::MaxPool(_) => {}
        }
    }
    (amplification, lost)
}

// ---------------------------------------------------------------------------------------------
// 1. Conservation
// ---------------------------------------------------------------------------------------------

/// Stabiliser of the conservation test: small enough to absorb nothing measurable.
const CONSERVATION_EPS: f32 = 1e-9;

fn check_conservation(spec: &NetSpec) -> Result<(), TestCaseError> {
    let net = spec.build(&Rule::Epsilon { epsilon: CONSERVATION_EPS, ignore_bias: true }, false);
    let trace = net.forward(&spec.input);
    let (c, f_c) = top(&trace);
    prop_assume!(f_c.abs() >= 1e-3, "score {} too small to compare against", f_c);
    let rel = net.backward(&trace, &one_hot(trace.logits().len(), c, f_c));
    // Checked before the assumptions below, which a NaN would silently fail.
    for (level, r) in rel.iter().enumerate() {
        prop_assert!(r.iter().all(|v| v.is_finite()), "level {level}: non-finite relevance {r:?}");
    }
    // Relevance is conserved at every level, not only at the input.
    let f = f64::from(f_c);
    let (amplification, lost) = conditioning(spec, &trace, &rel, f64::from(CONSERVATION_EPS));
    prop_assume!(
        amplification <= 100.0 * f.abs(),
        "ill-conditioned: {}",
        format!("amplification {amplification:e} vs f_c {f_c}")
    );
    prop_assume!(lost <= 1e-5 * f.abs(), "{}", format!("stabilisers absorb {lost:e} of f_c {f_c}"));
    for (level, r) in rel.iter().enumerate() {
        let total = sum64(r);
        prop_assert!(
            (total - f).abs() <= 1e-4 * f.abs(),
            "level {level}: sum R = {total} but f_c = {f_c} (class {c}); relevance {rel:?}, activations {:?}",
            trace.acts
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_global_rejects: 4096, ..ProptestConfig::default() })]

    /// LRP-epsilon (tiny epsilon, bias ignored) on dense ReLU networks with non-zero biases:
    /// the relevance of every layer, the input's included, sums to f_c(x).
    #[test]
    fn epsilon_without_bias_conserves_relevance_dense(spec in dense_net(-1.0..=1.0)) {
        check_conservation(&spec)?;
    }

    /// The same through conv -> ReLU -> max/avg pooling -> dense: pooling conserves too.
    #[test]
    fn epsilon_without_bias_conserves_relevance_conv(spec in conv_net(-1.0..=1.0)) {
        check_conservation(&spec)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. z+ and alpha1-beta0: non-negative relevance, identical to each other
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// On inputs in [0, 1], z+ and alpha=1, beta=0 map a non-negative output relevance (random,
    /// and one-hot |f_c|) to a non-negative relevance at every level, and agree exactly.
    #[test]
    fn zplus_and_alpha1_beta0_are_nonnegative_and_equal(
        (spec, r_top) in any_net(0.0..=1.0).prop_flat_map(|spec| {
            let classes = spec_classes(&spec);
            (Just(spec), vec(0.0f32..=1.0, classes))
        })
    ) {
        let zplus = spec.build(&Rule::ZPlus, true);
        let ab = spec.build(&Rule::AlphaBeta { alpha: 1.0, beta: 0.0 }, true);
        let trace = zplus.forward(&spec.input);
        let (c, f_c) = top(&trace);
        let one_hot_top = one_hot(r_top.len(), c, f_c.abs());
        for r in [&r_top, &one_hot_top] {
            let rel_z = zplus.backward(&trace, r);
            let rel_ab = ab.backward(&trace, r);
            for (level, (a, b)) in rel_z.iter().zip(&rel_ab).enumerate() {
                prop_assert!(a.iter().all(|v| v.is_finite() && *v >= 0.0), "z+ level {level}: {a:?} from {r:?}");
                prop_assert_eq!(a, b, "level {}: z+ and alpha1-beta0 differ", level);
            }
        }
    }
}

fn spec_classes(spec: &NetSpec) -> usize {
    match spec.layers.last() {
        Some(LayerSpec::Linear { kind, .. }) => kind.out_len(),
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------
// 3. BatchNorm folding
// ---------------------------------------------------------------------------------------------

const BN_EPS: f32 = 1e-5;

/// Statistics of a BatchNorm with `channels` channels.
#[derive(Clone, Debug)]
struct BnSpec {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

impl BnSpec {
    fn build(&self) -> BatchNorm {
        BatchNorm::from_stats("bn", &self.gamma, &self.beta, &self.mean, &self.var, BN_EPS).unwrap()
    }
}

fn batchnorm(channels: usize) -> impl Strategy<Value = BnSpec> {
    (vec(0.5f32..=1.5, channels), vec(W, channels), vec(W, channels), vec(0.5f32..=1.5, channels))
        .prop_map(|(gamma, beta, mean, var)| BnSpec { gamma, beta, mean, var })
}

/// A layer with random weights and bias, and a random input from `input`.
#[derive(Clone, Debug)]
struct LayerCase {
    kind: LinearKind,
    weight: Vec<f32>,
    bias: Vec<f32>,
    input: Vec<f32>,
}

impl LayerCase {
    fn build(&self) -> LinearMap {
        LinearMap::new("layer", self.kind, self.weight.clone(), Some(self.bias.clone())).unwrap()
    }
}

fn layer_case(kind: LinearKind, input: RangeInclusive<f32>) -> impl Strategy<Value = LayerCase> {
    let wlen = kind.weight_shape().iter().product::<usize>();
    (vec(W, wlen), vec(W, kind.out_channels()), vec(input, kind.in_len()))
        .prop_map(move |(weight, bias, input)| LayerCase { kind, weight, bias, input })
}

/// A convolution geometry: 1-2 groups of 1-2 input and 1-3 output channels, kernel 1-3,
/// stride 1-2, the given padding range, input 3-7 x 3-7.
fn conv_geom(padding: RangeInclusive<usize>) -> impl Strategy<Value = Conv2dGeom> {
    (
        1..=2usize,
        1..=2usize,
        1..=3usize,
        3..=7usize,
        3..=7usize,
        [1..=3usize, 1..=3usize],
        [1..=2usize, 1..=2usize],
        [padding.clone(), padding],
    )
        .prop_map(|(groups, cin_g, cout_g, in_h, in_w, kernel, stride, padding)| Conv2dGeom {
            in_channels: groups * cin_g,
            out_channels: groups * cout_g,
            in_h,
            in_w,
            kernel,
            stride,
            padding,
            dilation: [1, 1],
            groups,
        })
}

fn dense_kind(in_features: RangeInclusive<usize>) -> impl Strategy<Value = LinearKind> {
    (in_features, 1..=12usize).prop_map(|(in_features, out_features)| LinearKind::Dense { in_features, out_features })
}

/// `max |got - want| <= 1e-4 (1 + |want|)`, element-wise.
fn assert_close(got: &[f32], want: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "[{}]: folded {} vs explicit {}", i, a, b);
    }
    Ok(())
}

fn forward(layer: &LinearMap, x: &[f32]) -> Vec<f32> {
    let mut z = vec![0.0; layer.kind().out_len()];
    layer.forward(x, 1, &mut z).expect("buffers sized");
    z
}

/// Dense or conv, then BatchNorm over its output channels.
fn check_fold_after(case: &LayerCase, bn: &BnSpec) -> Result<(), TestCaseError> {
    let (layer, bn) = (case.build(), bn.build());
    let z = forward(&layer, &case.input);
    let spatial = case.kind.out_len() / case.kind.out_channels();
    let mut want = vec![0.0; z.len()];
    bn.forward(&z, 1, spatial, &mut want).expect("buffers sized");
    let mut folded = layer.clone();
    folded.fold_batchnorm_after(&bn).unwrap();
    assert_close(&forward(&folded, &case.input), &want)
}

/// BatchNorm over the layer's input channels (`channels` of them), then the layer.
fn check_fold_before(case: &LayerCase, bn: &BnSpec) -> Result<(), TestCaseError> {
    let (layer, bn) = (case.build(), bn.build());
    let spatial = case.kind.in_len() / bn.channels();
    let mut normed = vec![0.0; case.input.len()];
    bn.forward(&case.input, 1, spatial, &mut normed).expect("buffers sized");
    let want = forward(&layer, &normed);
    let mut folded = layer.clone();
    folded.fold_batchnorm_before(&bn).unwrap();
    assert_close(&forward(&folded, &case.input), &want)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Dense then BatchNorm1d == the dense layer with the BatchNorm folded in.
    #[test]
    fn fold_batchnorm_after_dense_keeps_output(
        (case, bn) in dense_kind(1..=12).prop_flat_map(|kind| (layer_case(kind, W), batchnorm(kind.out_channels())))
    ) {
        check_fold_after(&case, &bn)?;
    }

    /// Conv2d (padding 0-1, groups 1-2) then BatchNorm2d == the conv with the BatchNorm folded in.
    #[test]
    fn fold_batchnorm_after_conv_keeps_output(
        (case, bn) in conv_geom(0..=1).prop_flat_map(|g| (layer_case(LinearKind::Conv2d(g), W), batchnorm(g.out_channels)))
    ) {
        check_fold_after(&case, &bn)?;
    }

    /// ReLU output -> BatchNorm (1-4 channels of 1-3 features each, as BatchNorm1d or a flattened
    /// BatchNorm2d) -> dense == the dense layer with the BatchNorm folded in.
    #[test]
    fn fold_batchnorm_before_dense_keeps_output(
        (case, bn) in (1..=4usize, 1..=3usize, 1..=12usize).prop_flat_map(|(channels, per_channel, out_features)| {
            let kind = LinearKind::Dense { in_features: channels * per_channel, out_features };
            (layer_case(kind, 0.0..=1.0), batchnorm(channels))
        })
    ) {
        check_fold_before(&case, &bn)?;
    }

    /// ReLU output -> BatchNorm2d -> Conv2d without padding (groups 1-2) == the conv with the
    /// BatchNorm folded in.
    #[test]
    fn fold_batchnorm_before_conv_keeps_output(
        (case, bn) in conv_geom(0..=0).prop_flat_map(|g| (layer_case(LinearKind::Conv2d(g), 0.0..=1.0), batchnorm(g.in_channels)))
    ) {
        check_fold_before(&case, &bn)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Gamma -> infinity approaches z+
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_global_rejects: 4096, ..ProptestConfig::default() })]

    /// On inputs in [0, 1], explaining a positive f_c, LRP-gamma with gamma = 1e4 gives the
    /// relevance of z+ up to 1e-2 of its largest magnitude (at least f_c / 10), at every level.
    /// (Only neurons with a positive pre-activation receive relevance, where gamma's positive
    /// group applies.)
    #[test]
    fn gamma_large_approaches_zplus(spec in any_net(0.0..=1.0)) {
        let zplus = spec.build(&Rule::ZPlus, true);
        let gamma = spec.build(&Rule::Gamma { gamma: 1e4 }, true);
        let trace = zplus.forward(&spec.input);
        let (c, f_c) = top(&trace);
        prop_assume!(f_c >= 1e-3, "explained score {} not positive enough", f_c);
        let r_top = one_hot(trace.logits().len(), c, f_c);
        let rel_z = zplus.backward(&trace, &r_top);
        let rel_g = gamma.backward(&trace, &r_top);
        for (level, (z, g)) in rel_z.iter().zip(&rel_g).enumerate() {
            // z+ may hand (nearly) everything to the biases, leaving a level with no relevance at
            // all, where gamma's O(1/gamma) share of the negative weights is all there is: the
            // scale has a floor of a tenth of the relevance that entered the network.
            let scale = max_abs(z).max(0.1 * f_c);
            let diff = z.iter().zip(g).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            prop_assert!(diff <= 1e-2 * scale, "level {level}: max |R_gamma - R_z+| = {diff:e} > 1e-2 * {scale:e}; z+ {z:?}, gamma {g:?}");
        }
    }
}
