//! BatchNorm in evaluation mode, `y = s x + t` per channel with `s = gamma / sqrt(var + eps)`,
//! `t = beta - mean s`: folded into an adjacent linear layer, or kept as an explicit affine layer
//! whose relevance follows the epsilon rule.

use crate::error::{Error, Result};
use crate::kernels::elementwise::stabilize;
use crate::weights::Weights;

/// A BatchNorm1d/2d layer's per-channel affine map.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    name: String,
    /// `s_c = gamma_c / sqrt(var_c + eps)`
    pub scale: Vec<f32>,
    /// `t_c = beta_c - mean_c s_c`
    pub shift: Vec<f32>,
}

/// Tensor names of a BatchNorm layer in a state dict.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormNames<'a> {
    pub weight: &'a str,
    pub bias: &'a str,
    pub running_mean: &'a str,
    pub running_var: &'a str,
}

impl BatchNorm {
    /// From PyTorch's parameters and running statistics.
    pub fn from_stats(name: &str, gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f32) -> Result<Self> {
        let c = gamma.len();
        for (what, v) in [("bias", beta), ("running_mean", mean), ("running_var", var)] {
            if v.len() != c {
                return Err(Error::ShapeMismatch {
                    name: format!("{name}.{what}"),
                    expected: vec![c],
                    found: vec![v.len()],
                });
            }
        }
        if let Some((i, v)) = var.iter().enumerate().find(|(_, v)| **v + eps <= 0.0) {
            return Err(Error::InvalidParameter {
                what: format!("`{name}.running_var`"),
                message: format!("var + eps must be positive, got {} at channel {i}", v + eps),
            });
        }
        let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + eps).sqrt()).collect();
        let shift = beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        Ok(BatchNorm { name: name.to_string(), scale, shift })
    }

    /// Loads the four tensors of a BatchNorm layer with `channels` features.
    pub fn load(
        weights: &mut Weights,
        name: &str,
        names: BatchNormNames<'_>,
        channels: usize,
        eps: f32,
    ) -> Result<Self> {
        let mut take = |t: &str| weights.take(t, name, &[channels]);
        let (g, b, m, v) =
            (take(names.weight)?, take(names.bias)?, take(names.running_mean)?, take(names.running_var)?);
        Self::from_stats(name, &g, &b, &m, &v, eps)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    pub(crate) fn check_channels(&self, expected: usize, layer: &str) -> Result<()> {
        if self.channels() == expected {
            Ok(())
        } else {
            Err(Error::InvalidParameter {
                what: format!("BatchNorm `{}` folded into `{layer}`", self.name),
                message: format!("it has {} channels, but the layer has {expected}", self.channels()),
            })
        }
    }

    pub(crate) fn check_divides(&self, features: usize, layer: &str) -> Result<()> {
        if self.channels() > 0 && features.is_multiple_of(self.channels()) {
            Ok(())
        } else {
            Err(Error::InvalidParameter {
                what: format!("BatchNorm `{}` folded into `{layer}`", self.name),
                message: format!("its {} channels do not divide the layer's {features} inputs", self.channels()),
            })
        }
    }

    /// `y = s x + t` over `n` samples of `[C, spatial]`.
    pub fn forward(&self, x: &[f32], n: usize, spatial: usize, y: &mut [f32]) -> Result<()> {
        let len = n * self.channels() * spatial;
        super::check_buffers(&self.name, &[("input", len, x.len()), ("output", len, y.len())])?;
        for (i, (yo, xi)) in y.iter_mut().zip(x).enumerate().take(n * self.channels() * spatial) {
            let c = (i / spatial) % self.channels();
            *yo = self.scale[c] * xi + self.shift[c];
        }
        Ok(())
    }

    /// Epsilon rule on the diagonal map: `R_in = x s R_out / stab(y)`.
    #[allow(clippy::too_many_arguments)]
    pub fn relevance(
        &self,
        x: &[f32],
        y: &[f32],
        r_out: &[f32],
        n: usize,
        spatial: usize,
        eps: f32,
        r_in: &mut [f32],
    ) -> Result<()> {
        let len = n * self.channels() * spatial;
        super::check_buffers(
            &self.name,
            &[
                ("input", len, x.len()),
                ("output", len, y.len()),
                ("output relevance", len, r_out.len()),
                ("input relevance", len, r_in.len()),
            ],
        )?;
        for (i, r) in r_in.iter_mut().enumerate().take(len) {
            let c = (i / spatial) % self.channels();
            *r = x[i] * self.scale[c] * r_out[i] / stabilize(y[i], eps);
        }
        Ok(())
    }

    /// Gradient of `y = s x + t`: `g_in = s g_out`.
    pub fn gradient(&self, g_out: &[f32], n: usize, spatial: usize, g_in: &mut [f32]) -> Result<()> {
        let len = n * self.channels() * spatial;
        super::check_buffers(
            &self.name,
            &[("output gradient", len, g_out.len()), ("input gradient", len, g_in.len())],
        )?;
        for (i, (gi, go)) in g_in.iter_mut().zip(g_out).enumerate().take(len) {
            *gi = self.scale[(i / spatial) % self.channels()] * go;
        }
        Ok(())
    }
}
