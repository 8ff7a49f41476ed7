//! A dense or convolutional layer on a device: forward pass, relevance by any rule of
//! [`crate::rules`] (the same groups of terms as [`LinearMap`]), and gradient. Products run in
//! cuBLAS (a convolution: `im2col`, then one product per group and sample; its transposed pass:
//! the transposed product into columns, then `col2im`); the element-wise parts in the kernels of
//! `cuda/rules.cu`.

use crate::error::{Error, Result};
use crate::gpu::ops::{self, TermInput, conv};
use crate::gpu::{Device, DeviceBuffer, Mat, MatMut, gemm, gemm_batched};
use crate::kernels::Conv2dGeom;
use crate::layers::linear::{PreparedGroup, PreparedTerm};
use crate::layers::{LinearKind, LinearMap};
use crate::rules::{GroupSpec, TermSpec};

/// A term of a rule on the device; `None` parameters are the layer's own.
struct Term {
    spec: TermSpec,
    weight: Option<DeviceBuffer>,
    bias: Option<DeviceBuffer>,
    constant_input: Option<DeviceBuffer>,
    plain: bool,
}

/// A group of terms sharing a denominator (see [`crate::rules`]).
struct Group {
    spec: GroupSpec,
    constant: Option<DeviceBuffer>,
    terms: Vec<Term>,
}

/// A dense layer `y = x W^T + b` or a convolution on a device, with its prepared rule.
pub struct GpuLinear {
    name: String,
    kind: LinearKind,
    weight: DeviceBuffer,
    bias: DeviceBuffer,
    groups: Vec<Group>,
}

/// Values of unfolded convolution columns the scratch holds at most (1 GiB), unless one sample's
/// need more: the bound on memory of convolutions' batched products.
const COLUMNS_BUDGET: usize = 1 << 28;

/// Scratch buffers of [`GpuLinear`]'s passes for up to `capacity` samples: the two groups'
/// denominators (then ratios), a modified input, a transposed product, and one sample's
/// unfolded columns (convolutions).
pub struct LinearScratch {
    denominators: [DeviceBuffer; 2],
    input: DeviceBuffer,
    product: DeviceBuffer,
    columns: DeviceBuffer,
}

impl LinearScratch {
    /// Scratch for `layers`, each `(layer, rows)` called on `rows` rows per sample (a `Linear`
    /// applied to every row of `[rows, in_features]`; else 1), for `capacity` samples.
    pub fn new(device: &Device, capacity: usize, layers: &[(&GpuLinear, usize)]) -> Result<Self> {
        let max = |f: &dyn Fn(&LinearKind) -> usize| {
            layers.iter().map(|(l, rows)| f(&l.kind).saturating_mul(*rows)).max().unwrap_or(0)
        };
        let (max_in, max_out) = (max(&LinearKind::in_len), max(&LinearKind::out_len));
        // A convolution unfolds as many samples at once as fit `COLUMNS_BUDGET` (at least one).
        let columns = layers
            .iter()
            .map(|(l, _)| match l.kind {
                LinearKind::Conv2d(g) => {
                    let per = g.col_rows().saturating_mul(g.col_cols());
                    per.saturating_mul((COLUMNS_BUDGET / per.max(1)).clamp(1, capacity.max(1)))
                }
                LinearKind::Dense { .. } => 0,
            })
            .max()
            .unwrap_or(0);
        let len = |per: usize| {
            capacity.checked_mul(per).ok_or_else(|| Error::SizeOverflow { what: "GPU linear scratch".into() })
        };
        // The emulated device's products run on the CPU's GEMM: its packing buffers, and the
        // worker threads', are made now, so that no later call allocates.
        if device.is_emulated() {
            crate::kernels::gemm::prepare_thread();
        }
        Ok(LinearScratch {
            denominators: [
                device.zeros("denominator 1", len(max_out)?)?,
                device.zeros("denominator 2", len(max_out)?)?,
            ],
            input: device.zeros("modified input", len(max_in)?)?,
            product: device.zeros("transposed product", len(max_in)?)?,
            columns: device.zeros("unfolded columns", columns)?,
        })
    }
}

fn upload_opt(device: &Device, what: String, v: Option<&[f32]>) -> Result<Option<DeviceBuffer>> {
    v.map(|v| device.upload(&what, v)).transpose()
}

fn upload_term(device: &Device, name: &str, t: &PreparedTerm<'_>) -> Result<Term> {
    Ok(Term {
        spec: t.spec,
        weight: upload_opt(device, format!("{name}.weight ({:?})", t.spec.weight), t.weight)?,
        bias: upload_opt(device, format!("{name}.bias ({:?})", t.spec.bias), t.bias)?,
        constant_input: upload_opt(device, format!("{name}: constant input"), t.constant_input)?,
        plain: t.plain,
    })
}

fn upload_group(device: &Device, name: &str, g: &PreparedGroup<'_>) -> Result<Group> {
    Ok(Group {
        spec: g.spec.clone(),
        constant: upload_opt(device, format!("{name}: constant denominator"), g.constant)?,
        terms: g.terms.iter().map(|t| upload_term(device, name, t)).collect::<Result<_>>()?,
    })
}

/// One group of a convolution as matrices: `(cout_g, kg, P)`, the group's output channels,
/// its rows of the unfolded input (`cin_g kh kw`), and the output positions.
fn conv_group(g: &Conv2dGeom) -> (usize, usize, usize) {
    (g.out_channels / g.groups, g.col_rows() / g.groups, g.col_cols())
}

impl GpuLinear {
    /// Uploads a prepared layer (its weights and every transformed copy its rule needs).
    pub fn upload(device: &Device, layer: &LinearMap) -> Result<Self> {
        let name = layer.name();
        if let LinearKind::Conv2d(g) = layer.kind() {
            g.validate().map_err(|message| Error::InvalidParameter { what: format!("layer `{name}`"), message })?;
        }
        Ok(GpuLinear {
            name: name.to_string(),
            kind: *layer.kind(),
            weight: device.upload(&format!("{name}.weight"), layer.weight())?,
            bias: device.upload(&format!("{name}.bias"), layer.bias())?,
            groups: layer.prepared_groups().iter().map(|g| upload_group(device, name, g)).collect::<Result<_>>()?,
        })
    }

    /// The layer's name (PyTorch's module path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer's shape.
    pub fn kind(&self) -> &LinearKind {
        &self.kind
    }

    /// `(channels, values per channel)` of one output sample, as biases are added.
    fn bias_layout(&self) -> (usize, usize) {
        match self.kind {
            LinearKind::Dense { out_features, .. } => (out_features, 1),
            LinearKind::Conv2d(g) => (g.out_channels, g.col_cols()),
        }
    }

    /// `z = alpha x W^T + beta z` for `n` samples (no bias): a product, or per sample and group
    /// of a convolution, the weights times the unfolded input.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        device: &Device,
        w: &DeviceBuffer,
        x: &DeviceBuffer,
        n: usize,
        z: &mut DeviceBuffer,
        (alpha, beta): (f32, f32),
        columns: &mut DeviceBuffer,
    ) -> Result<()> {
        let g = match self.kind {
            LinearKind::Dense { in_features, out_features } => {
                let x = Mat { buffer: x, offset: 0, rows: n, cols: in_features, transposed: false };
                let w = Mat { buffer: w, offset: 0, rows: out_features, cols: in_features, transposed: true };
                return gemm(device, alpha, x, w, beta, MatMut { buffer: z, offset: 0, rows: n, cols: out_features });
            }
            LinearKind::Conv2d(g) => g,
        };
        let (cout_g, kg, p) = conv_group(&g);
        let per = g.col_rows() * g.col_cols();
        // Chunks of samples whose columns fit the scratch: one unfold and one batched product
        // per group each.
        let chunk = (columns.len() / per.max(1)).clamp(1, n.max(1));
        for first in (0..n).step_by(chunk) {
            let count = chunk.min(n - first);
            conv::im2col(device, &g, (x, first, count), columns)?;
            for gi in 0..g.groups {
                let w = Mat { buffer: w, offset: gi * cout_g * kg, rows: cout_g, cols: kg, transposed: false };
                let c = Mat { buffer: columns, offset: gi * kg * p, rows: kg, cols: p, transposed: false };
                let out = MatMut { buffer: z, offset: first * g.out_len() + gi * cout_g * p, rows: cout_g, cols: p };
                gemm_batched(device, alpha, w, c, beta, out, (count, [0, per, g.out_len()]))?;
            }
        }
        Ok(())
    }

    /// `c = s W` for `n` samples: the transposed pass (of a convolution, per sample and group
    /// the transposed weights times `s` into columns, folded back by `col2im`).
    fn transposed(
        &self,
        device: &Device,
        w: &DeviceBuffer,
        s: &DeviceBuffer,
        n: usize,
        c: &mut DeviceBuffer,
        columns: &mut DeviceBuffer,
    ) -> Result<()> {
        let g = match self.kind {
            LinearKind::Dense { in_features, out_features } => {
                let s = Mat { buffer: s, offset: 0, rows: n, cols: out_features, transposed: false };
                let w = Mat { buffer: w, offset: 0, rows: out_features, cols: in_features, transposed: false };
                return gemm(device, 1.0, s, w, 0.0, MatMut { buffer: c, offset: 0, rows: n, cols: in_features });
            }
            LinearKind::Conv2d(g) => g,
        };
        let (cout_g, kg, p) = conv_group(&g);
        let per = g.col_rows() * g.col_cols();
        let chunk = (columns.len() / per.max(1)).clamp(1, n.max(1));
        for first in (0..n).step_by(chunk) {
            let count = chunk.min(n - first);
            for gi in 0..g.groups {
                // W_g is [cout_g, kg]; its transpose times s_g [cout_g, P] gives the group's rows.
                let w = Mat { buffer: w, offset: gi * cout_g * kg, rows: cout_g, cols: kg, transposed: true };
                let sg = Mat {
                    buffer: s,
                    offset: first * g.out_len() + gi * cout_g * p,
                    rows: cout_g,
                    cols: p,
                    transposed: false,
                };
                let out = MatMut { buffer: &mut *columns, offset: gi * kg * p, rows: kg, cols: p };
                gemm_batched(device, 1.0, w, sg, 0.0, out, (count, [0, g.out_len(), per]))?;
            }
            conv::col2im(device, &g, columns, (c, first, count))?;
        }
        Ok(())
    }

    /// `z = alpha (x W^T + b) + beta z` for `n` samples.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        device: &Device,
        (w, b): (&DeviceBuffer, &DeviceBuffer),
        x: &DeviceBuffer,
        n: usize,
        z: &mut DeviceBuffer,
        (alpha, beta): (f32, f32),
        columns: &mut DeviceBuffer,
    ) -> Result<()> {
        self.product(device, w, x, n, z, (alpha, beta), columns)?;
        ops::add_bias(device, z, b, alpha, self.bias_layout(), n * self.kind.out_len())
    }

    /// `z = x W^T + b` for `n` samples (`x [n, in]`, `z [n, out]`).
    pub fn forward(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        n: usize,
        z: &mut DeviceBuffer,
        scratch: &mut LinearScratch,
    ) -> Result<()> {
        self.apply(device, (&self.weight, &self.bias), x, n, z, (1.0, 0.0), &mut scratch.columns)
    }

    /// [`Self::forward`], then `a = max(0, z)`: the bias and the ReLU in one pass.
    pub fn forward_relu(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        n: usize,
        (z, a): (&mut DeviceBuffer, &mut DeviceBuffer),
        scratch: &mut LinearScratch,
    ) -> Result<()> {
        self.product(device, &self.weight, x, n, z, (1.0, 0.0), &mut scratch.columns)?;
        ops::add_bias_relu(device, z, a, &self.bias, self.bias_layout(), n * self.kind.out_len())
    }

    fn term_params<'a>(&'a self, t: &'a Term) -> (&'a DeviceBuffer, &'a DeviceBuffer) {
        (t.weight.as_ref().unwrap_or(&self.weight), t.bias.as_ref().unwrap_or(&self.bias))
    }

    /// The denominator `z_g` of `group` into `d`, for `n` samples.
    fn denominator(
        &self,
        device: &Device,
        group: &Group,
        (x, z): (&DeviceBuffer, &DeviceBuffer),
        n: usize,
        d: &mut DeviceBuffer,
        (x_mod, columns): (&mut DeviceBuffer, &mut DeviceBuffer),
    ) -> Result<()> {
        let len = n * self.kind.out_len();
        // Start from the forward z (`combine` with b = 0 copies it) or zero.
        ops::combine(device, d, z, z, if group.spec.from_forward { 1.0 } else { 0.0 }, 0.0, len)?;
        if let Some(k) = &group.constant {
            ops::add_bias(device, d, k, 1.0, (self.kind.out_len(), 1), len)?;
        }
        for t in &group.terms {
            if t.spec.input.is_constant() || (group.spec.from_forward && t.plain) {
                continue;
            }
            ops::input_mod(device, x, x_mod, t.spec.input, n * self.kind.in_len())?;
            self.apply(device, self.term_params(t), x_mod, n, d, (t.spec.sign, 1.0), columns)?;
        }
        Ok(())
    }

    /// Relevance of the layer's input for `n` samples by the prepared rule: `x` its input, `z`
    /// its forward output, `r_out` the output relevance; `r_in` is overwritten:
    /// `R_in = Σ_g coef_g Σ_t sign_t in_t(x) ⊙ (W_t^T s_g)`, `s_g = mask_g(z) R_out / stab(z_g)`.
    pub fn relevance(
        &self,
        device: &Device,
        (x, z): (&DeviceBuffer, &DeviceBuffer),
        r_out: &DeviceBuffer,
        n: usize,
        r_in: &mut DeviceBuffer,
        scratch: &mut LinearScratch,
    ) -> Result<()> {
        let (in_len, out_len) = (n * self.kind.in_len(), n * self.kind.out_len());
        let LinearScratch { denominators: [d1, d2], input, product, columns } = scratch;
        for (gi, group) in self.groups.iter().enumerate().take(2) {
            let (previous, d) = if gi == 0 { (None, &mut *d1) } else { (Some(&*d1), &mut *d2) };
            match (group.spec.derived, previous) {
                (Some(derived), Some(p)) => ops::combine(device, d, z, p, derived.forward, derived.previous, out_len)?,
                _ => self.denominator(device, group, (x, z), n, d, (input, columns))?,
            }
        }
        for (group, d) in self.groups.iter().zip([&mut *d1, &mut *d2]) {
            ops::masked_ratio(device, d, z, r_out, (group.spec.mask, group.spec.eps), out_len)?;
        }
        let mut overwrite = true;
        for (group, s) in self.groups.iter().zip([&*d1, &*d2]) {
            for t in group.terms.iter().filter(|t| t.spec.backward) {
                // c = s_g W_t, then R_in (+)= coef_g sign_t in_t(x) ⊙ c.
                self.transposed(device, self.term_params(t).0, s, n, product, columns)?;
                let input = match &t.constant_input {
                    Some(k) => TermInput::Constant(k),
                    None => TermInput::Variable(x, t.spec.input),
                };
                let factor = group.spec.coef * t.spec.sign;
                ops::accumulate(device, r_in, product, input, (factor, overwrite), in_len)?;
                overwrite = false;
            }
        }
        if overwrite {
            // No term goes back: the input receives nothing.
            ops::combine(device, r_in, x, x, 0.0, 0.0, in_len)?;
        }
        Ok(())
    }

    /// Gradient with respect to the input for `n` samples: `g_in = g_out W`.
    pub fn gradient(
        &self,
        device: &Device,
        g_out: &DeviceBuffer,
        n: usize,
        g_in: &mut DeviceBuffer,
        scratch: &mut LinearScratch,
    ) -> Result<()> {
        self.transposed(device, &self.weight, g_out, n, g_in, &mut scratch.columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Bound, Rule};

    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 31 + salt * 17) % 23) as f32 / 9.0 - 1.2).collect()
    }

    /// The largest difference relative to the largest reference magnitude.
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale
    }

    fn conv(
        c: (usize, usize),
        hw: (usize, usize),
        k: usize,
        s: usize,
        p: usize,
        d: usize,
        groups: usize,
    ) -> LinearKind {
        LinearKind::Conv2d(Conv2dGeom {
            in_channels: c.0,
            out_channels: c.1,
            in_h: hw.0,
            in_w: hw.1,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [d, d],
            groups,
        })
    }

    /// The device's forward pass, relevance and gradient of one layer under `rule` equal the CPU
    /// layer's, within 1e-5 of the largest value.
    fn check_against_cpu(kind: LinearKind, rule: &Rule, nonneg: bool, gated: bool) {
        let device = Device::from_env().unwrap();
        let (inl, outl, n) = (kind.in_len(), kind.out_len(), 3);
        let wlen: usize = kind.weight_shape().iter().product();
        let mut cpu = LinearMap::new("layer", kind, values(wlen, 1), Some(values(kind.out_channels(), 2))).unwrap();
        cpu.set_output_gated(gated).unwrap();
        cpu.prepare(rule, nonneg).unwrap();
        let x: Vec<f32> = values(n * inl, 3).iter().map(|v| if nonneg { v.abs() } else { *v }).collect();
        let r_out = values(n * outl, 4);
        let mut z = vec![0.0; n * outl];
        cpu.forward(&x, n, &mut z).unwrap();
        let (mut r_in, mut g_in) = (vec![0.0; n * inl], vec![0.0; n * inl]);
        let mut cpu_scratch = vec![0.0; kind.scratch_len(n)];
        cpu.relevance(&x, &z, &r_out, n, &mut r_in, &mut cpu_scratch).unwrap();
        cpu.gradient(&r_out, n, &mut g_in, &mut cpu_scratch).unwrap();

        let gpu = GpuLinear::upload(&device, &cpu).unwrap();
        let mut scratch = LinearScratch::new(&device, n, &[(&gpu, 1)]).unwrap();
        let (xb, rb) = (device.upload("x", &x).unwrap(), device.upload("r_out", &r_out).unwrap());
        let (mut zb, mut ab) = (device.zeros("z", n * outl).unwrap(), device.zeros("a", n * outl).unwrap());
        gpu.forward_relu(&device, &xb, n, (&mut zb, &mut ab), &mut scratch).unwrap();
        let relu: Vec<f32> = z.iter().map(|v| v.max(0.0)).collect();
        let what = format!("{kind:?}, {rule:?} (input >= 0: {nonneg}, gated: {gated})");
        assert!(relative_error(&device.download(&ab).unwrap(), &relu) < 1e-5, "forward + ReLU, {what}");
        gpu.forward(&device, &xb, n, &mut zb, &mut scratch).unwrap();
        let mut rin = device.zeros("r_in", n * inl).unwrap();
        gpu.relevance(&device, (&xb, &zb), &rb, n, &mut rin, &mut scratch).unwrap();
        let mut gin = device.zeros("g_in", n * inl).unwrap();
        gpu.gradient(&device, &rb, n, &mut gin, &mut scratch).unwrap();
        assert!(relative_error(&device.download(&zb).unwrap(), &z) < 1e-5, "forward, {what}");
        assert!(relative_error(&device.download(&rin).unwrap(), &r_in) < 1e-5, "relevance, {what}");
        assert!(relative_error(&device.download(&gin).unwrap(), &g_in) < 1e-5, "gradient, {what}");
    }

    fn rules(in_channels: usize) -> Vec<Rule> {
        vec![
            Rule::Epsilon { epsilon: 0.01, ignore_bias: false },
            Rule::Epsilon { epsilon: 0.0, ignore_bias: true },
            Rule::Gamma { gamma: 0.25 },
            Rule::AlphaBeta { alpha: 2.0, beta: 1.0 },
            Rule::ZPlus,
            Rule::Flat,
            Rule::WSquare,
            Rule::ZBox {
                low: Bound::Scalar(-1.5),
                high: Bound::PerChannel(values(in_channels, 9).iter().map(|v| v.abs() + 1.5).collect()),
            },
        ]
    }

    /// Every rule, on inputs of both signs and non-negative ones, gated or not.
    #[test]
    fn a_dense_layer_matches_the_cpu_layer_under_every_rule() {
        let kind = LinearKind::Dense { in_features: 13, out_features: 7 };
        for rule in &rules(13) {
            for (nonneg, gated) in [(false, false), (true, false), (true, true)] {
                check_against_cpu(kind, rule, nonneg, gated);
            }
        }
    }

    /// Padded, strided, dilated, grouped and pointwise convolutions under every rule.
    #[test]
    fn convolutions_match_the_cpu_layer_under_every_rule() {
        let kinds = [
            conv((3, 4), (5, 6), 3, 1, 1, 1, 1),
            conv((2, 3), (9, 7), 3, 2, 0, 1, 1),
            conv((2, 2), (8, 8), 3, 1, 2, 2, 1),
            conv((4, 6), (5, 5), 3, 1, 1, 1, 2),
            conv((5, 3), (4, 3), 1, 1, 0, 1, 1),
        ];
        for kind in kinds {
            let LinearKind::Conv2d(g) = kind else { unreachable!() };
            for rule in &rules(g.in_channels) {
                for (nonneg, gated) in [(false, false), (true, true)] {
                    check_against_cpu(kind, rule, nonneg, gated);
                }
            }
        }
    }
}
