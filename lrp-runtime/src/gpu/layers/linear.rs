//! A dense layer on a device: forward pass, relevance by any rule of [`crate::rules`] (the same
//! groups of terms as [`LinearMap`]), and gradient. Products run in cuBLAS; the element-wise
//! parts in the kernels of `cuda/rules.cu`.

use crate::error::{Error, Result};
use crate::gpu::ops::{self, TermInput};
use crate::gpu::{Device, DeviceBuffer, Mat, MatMut, gemm};
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

/// A dense layer `y = x W^T + b` on a device, with its prepared rule.
pub struct GpuLinear {
    name: String,
    in_features: usize,
    out_features: usize,
    weight: DeviceBuffer,
    bias: DeviceBuffer,
    groups: Vec<Group>,
}

/// Scratch buffers of [`GpuLinear::relevance`] for up to `capacity` samples: the two groups'
/// denominators (then ratios), a modified input, and a transposed product.
pub struct LinearScratch {
    denominators: [DeviceBuffer; 2],
    input: DeviceBuffer,
    product: DeviceBuffer,
}

impl LinearScratch {
    /// Scratch for layers of at most `max_in` inputs and `max_out` outputs per sample, for
    /// `capacity` samples.
    pub fn new(device: &Device, capacity: usize, max_in: usize, max_out: usize) -> Result<Self> {
        let len = |per: usize| {
            capacity.checked_mul(per).ok_or_else(|| Error::SizeOverflow { what: "GPU linear scratch".into() })
        };
        Ok(LinearScratch {
            denominators: [
                device.zeros("denominator 1", len(max_out)?)?,
                device.zeros("denominator 2", len(max_out)?)?,
            ],
            input: device.zeros("modified input", len(max_in)?)?,
            product: device.zeros("transposed product", len(max_in)?)?,
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

impl GpuLinear {
    /// Uploads a prepared dense layer (its weights and every transformed copy its rule needs).
    pub fn upload(device: &Device, layer: &LinearMap) -> Result<Self> {
        let LinearKind::Dense { in_features, out_features } = *layer.kind() else {
            return Err(Error::InvalidParameter {
                what: format!("layer `{}`", layer.name()),
                message: "the GPU backend runs dense layers only, so far (convolutions are not uploaded yet)".into(),
            });
        };
        let name = layer.name();
        Ok(GpuLinear {
            name: name.to_string(),
            in_features,
            out_features,
            weight: device.upload(&format!("{name}.weight"), layer.weight())?,
            bias: device.upload(&format!("{name}.bias"), layer.bias())?,
            groups: layer.prepared_groups().iter().map(|g| upload_group(device, name, g)).collect::<Result<_>>()?,
        })
    }

    /// The layer's name (PyTorch's module path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Inputs and outputs per sample.
    pub fn features(&self) -> (usize, usize) {
        (self.in_features, self.out_features)
    }

    /// `W` as the right operand of `x W^T` (`transposed`) or of `s W`.
    fn weight_mat<'a>(&'a self, weight: &'a DeviceBuffer, transposed: bool) -> Mat<'a> {
        Mat { buffer: weight, offset: 0, rows: self.out_features, cols: self.in_features, transposed }
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
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let x = Mat { buffer: x, offset: 0, rows: n, cols: self.in_features, transposed: false };
        let out = MatMut { buffer: z, offset: 0, rows: n, cols: self.out_features };
        gemm(device, alpha, x, self.weight_mat(w, true), beta, out)?;
        ops::add_bias(device, z, b, alpha, (self.out_features, 1), n * self.out_features)
    }

    /// `z = x W^T + b` for `n` samples (`x [n, in]`, `z [n, out]`).
    pub fn forward(&self, device: &Device, x: &DeviceBuffer, n: usize, z: &mut DeviceBuffer) -> Result<()> {
        self.apply(device, (&self.weight, &self.bias), x, n, z, 1.0, 0.0)
    }

    /// [`Self::forward`], then `a = max(0, z)`: the bias and the ReLU in one pass.
    pub fn forward_relu(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        n: usize,
        z: &mut DeviceBuffer,
        a: &mut DeviceBuffer,
    ) -> Result<()> {
        let xm = Mat { buffer: x, offset: 0, rows: n, cols: self.in_features, transposed: false };
        let out = MatMut { buffer: z, offset: 0, rows: n, cols: self.out_features };
        gemm(device, 1.0, xm, self.weight_mat(&self.weight, true), 0.0, out)?;
        ops::add_bias_relu(device, z, a, &self.bias, (self.out_features, 1), n * self.out_features)
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
        x_mod: &mut DeviceBuffer,
    ) -> Result<()> {
        let len = n * self.out_features;
        // Start from the forward z (`combine` with b = 0 copies it) or zero.
        ops::combine(device, d, z, z, if group.spec.from_forward { 1.0 } else { 0.0 }, 0.0, len)?;
        if let Some(k) = &group.constant {
            ops::add_bias(device, d, k, 1.0, (self.out_features, 1), len)?;
        }
        for t in &group.terms {
            if t.spec.input.is_constant() || (group.spec.from_forward && t.plain) {
                continue;
            }
            ops::input_mod(device, x, x_mod, t.spec.input, n * self.in_features)?;
            self.apply(device, self.term_params(t), x_mod, n, d, t.spec.sign, 1.0)?;
        }
        Ok(())
    }

    /// Relevance of the layer's input for `n` samples by the prepared rule: `x` its input, `z`
    /// its forward output, `r_out` the output relevance; `r_in` is overwritten:
    /// `R_in = Σ_g coef_g Σ_t sign_t in_t(x) ⊙ (W_t^T s_g)`, `s_g = mask_g(z) R_out / stab(z_g)`.
    #[allow(clippy::too_many_arguments)]
    pub fn relevance(
        &self,
        device: &Device,
        (x, z): (&DeviceBuffer, &DeviceBuffer),
        r_out: &DeviceBuffer,
        n: usize,
        r_in: &mut DeviceBuffer,
        scratch: &mut LinearScratch,
    ) -> Result<()> {
        let len = n * self.out_features;
        let LinearScratch { denominators: [d1, d2], input, product } = scratch;
        for (gi, group) in self.groups.iter().enumerate().take(2) {
            let (previous, d) = if gi == 0 { (None, &mut *d1) } else { (Some(&*d1), &mut *d2) };
            match (group.spec.derived, previous) {
                (Some(derived), Some(p)) => ops::combine(device, d, z, p, derived.forward, derived.previous, len)?,
                _ => self.denominator(device, group, (x, z), n, d, input)?,
            }
        }
        for (group, d) in self.groups.iter().zip([&mut *d1, &mut *d2]) {
            ops::masked_ratio(device, d, z, r_out, (group.spec.mask, group.spec.eps), len)?;
        }
        let mut overwrite = true;
        for (group, s) in self.groups.iter().zip([&*d1, &*d2]) {
            for t in group.terms.iter().filter(|t| t.spec.backward) {
                // c = s_g W_t, then R_in (+)= coef_g sign_t in_t(x) ⊙ c.
                let s = Mat { buffer: s, offset: 0, rows: n, cols: self.out_features, transposed: false };
                let c = MatMut { buffer: &mut *product, offset: 0, rows: n, cols: self.in_features };
                gemm(device, 1.0, s, self.weight_mat(self.term_params(t).0, false), 0.0, c)?;
                let input = match &t.constant_input {
                    Some(k) => TermInput::Constant(k),
                    None => TermInput::Variable(x, t.spec.input),
                };
                let factor = group.spec.coef * t.spec.sign;
                ops::accumulate(device, r_in, product, input, (factor, overwrite), n * self.in_features)?;
                overwrite = false;
            }
        }
        if overwrite {
            // No term goes back: the input receives nothing.
            ops::combine(device, r_in, x, x, 0.0, 0.0, n * self.in_features)?;
        }
        Ok(())
    }

    /// Gradient with respect to the input for `n` samples: `g_in = g_out W`.
    pub fn gradient(&self, device: &Device, g_out: &DeviceBuffer, n: usize, g_in: &mut DeviceBuffer) -> Result<()> {
        let g = Mat { buffer: g_out, offset: 0, rows: n, cols: self.out_features, transposed: false };
        let out = MatMut { buffer: g_in, offset: 0, rows: n, cols: self.in_features };
        gemm(device, 1.0, g, self.weight_mat(&self.weight, false), 0.0, out)
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

    /// Every rule, on inputs of both signs and non-negative ones, gated or not: the device's
    /// forward pass, relevance and gradient equal the CPU layer's.
    #[test]
    fn a_dense_layer_matches_the_cpu_layer_under_every_rule() {
        let device = Device::from_env().unwrap();
        let (inf, outf, n) = (13, 7, 3);
        let rules = [
            Rule::Epsilon { epsilon: 0.01, ignore_bias: false },
            Rule::Epsilon { epsilon: 0.0, ignore_bias: true },
            Rule::Gamma { gamma: 0.25 },
            Rule::AlphaBeta { alpha: 2.0, beta: 1.0 },
            Rule::ZPlus,
            Rule::Flat,
            Rule::WSquare,
            Rule::ZBox {
                low: Bound::Scalar(-1.5),
                high: Bound::PerChannel(values(inf, 9).iter().map(|v| v.abs() + 1.5).collect()),
            },
        ];
        for rule in &rules {
            for (nonneg, gated) in [(false, false), (true, false), (true, true)] {
                let kind = LinearKind::Dense { in_features: inf, out_features: outf };
                let mut cpu = LinearMap::new("fc", kind, values(inf * outf, 1), Some(values(outf, 2))).unwrap();
                cpu.set_output_gated(gated).unwrap();
                cpu.prepare(rule, nonneg).unwrap();
                let x: Vec<f32> = values(n * inf, 3).iter().map(|v| if nonneg { v.abs() } else { *v }).collect();
                let r_out = values(n * outf, 4);
                let mut z = vec![0.0; n * outf];
                cpu.forward(&x, n, &mut z).unwrap();
                let (mut r_in, mut g_in) = (vec![0.0; n * inf], vec![0.0; n * inf]);
                let mut scratch = vec![0.0; kind.scratch_len(n)];
                cpu.relevance(&x, &z, &r_out, n, &mut r_in, &mut scratch).unwrap();
                cpu.gradient(&r_out, n, &mut g_in, &mut scratch).unwrap();

                let gpu = GpuLinear::upload(&device, &cpu).unwrap();
                let xb = device.upload("x", &x).unwrap();
                let rb = device.upload("r_out", &r_out).unwrap();
                let mut zb = device.zeros("z", n * outf).unwrap();
                let mut ab = device.zeros("a", n * outf).unwrap();
                gpu.forward_relu(&device, &xb, n, &mut zb, &mut ab).unwrap();
                let relu: Vec<f32> = z.iter().map(|v| v.max(0.0)).collect();
                assert!(relative_error(&device.download(&ab).unwrap(), &relu) < 1e-5);
                gpu.forward(&device, &xb, n, &mut zb).unwrap();
                let mut scratch = LinearScratch::new(&device, n, inf, outf).unwrap();
                let mut rin = device.zeros("r_in", n * inf).unwrap();
                gpu.relevance(&device, (&xb, &zb), &rb, n, &mut rin, &mut scratch).unwrap();
                let mut gin = device.zeros("g_in", n * inf).unwrap();
                gpu.gradient(&device, &rb, n, &mut gin).unwrap();
                let what = format!("{rule:?} (input >= 0: {nonneg}, gated: {gated})");
                assert!(relative_error(&device.download(&zb).unwrap(), &z) < 1e-5, "forward, {what}");
                assert!(relative_error(&device.download(&rin).unwrap(), &r_in) < 1e-5, "relevance, {what}");
                assert!(relative_error(&device.download(&gin).unwrap(), &g_in) < 1e-5, "gradient, {what}");
            }
        }
    }
}
