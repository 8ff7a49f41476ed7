//! BatchNorm in evaluation mode, `y = s x + t` per channel with `s = gamma / sqrt(var + eps)`,
//! `t = beta - mean s`: folded into an adjacent linear layer, or kept as an explicit affine layer
//! whose relevance follows the epsilon rule.

use crate::checks::check_finite;
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
    /// From PyTorch's parameters and running statistics, all finite, with `var + eps > 0`; a
    /// NaN or infinite `scale` or `shift` (a huge gamma over a tiny variance) is
    /// [`Error::NonFinite`].
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
        for (what, v) in [("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)] {
            check_finite(&format!("{name}.{what}"), v)?;
        }
        if !eps.is_finite() {
            return Err(Error::InvalidParameter { what: format!("eps of `{name}`"), message: format!("got {eps}") });
        }
        if let Some((i, v)) = var.iter().enumerate().find(|(_, v)| **v + eps <= 0.0) {
            return Err(Error::InvalidParameter {
                what: format!("`{name}.running_var`"),
                message: format!("var + eps must be positive, got {} at channel {i}", v + eps),
            });
        }
        let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + eps).sqrt()).collect();
        let shift: Vec<f32> = beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        check_finite(&format!("{name}: scale = weight / sqrt(running_var + eps)"), &scale)?;
        check_finite(&format!("{name}: shift = bias - running_mean * scale"), &shift)?;
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

    /// Elements of `n` samples of `[C, spatial]`, or [`Error::SizeOverflow`].
    fn batch_len(&self, n: usize, spatial: usize) -> Result<usize> {
        super::batch_len(&self.name, "input", self.channels(), spatial)
            .and_then(|sample| super::batch_len(&self.name, "input", n, sample))
    }

    /// `y = s x + t` over `n` samples of `[C, spatial]`.
    pub fn forward(&self, x: &[f32], n: usize, spatial: usize, y: &mut [f32]) -> Result<()> {
        let len = self.batch_len(n, spatial)?;
        super::check_buffers(&self.name, &[("input", len, x.len()), ("output", len, y.len())])?;
        for (i, (yo, xi)) in y.iter_mut().zip(x).enumerate().take(len) {
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
        let len = self.batch_len(n, spatial)?;
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
        let len = self.batch_len(n, spatial)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{LinearKind, LinearMap};

    /// A BatchNorm over 2 channels with `running_var = 0` and a huge gamma on channel 1:
    /// `scale = [1, 1e30 / sqrt(1e-5)] = [1, 3.2e32]`, finite, `shift = 0`.
    fn sharp() -> BatchNorm {
        BatchNorm::from_stats("bn", &[1.0, 1e30], &[0.0; 2], &[0.0; 2], &[0.0; 2], 1e-5).unwrap()
    }

    fn dense(weight: Vec<f32>) -> LinearMap {
        LinearMap::new("fc", LinearKind::Dense { in_features: 2, out_features: 2 }, weight, None).unwrap()
    }

    #[test]
    fn folding_into_infinite_weights_is_an_error_naming_both_layers() {
        let bn = sharp();
        assert!(bn.scale[1].is_finite() && bn.scale[1] > 1e32);
        // After: W'_{1j} = s_1 W_{1j} = 3.2e32 * 1e7 overflows at flat index 2.
        let mut fc = dense(vec![1.0, 1.0, 1e7, 2.0]);
        let err = fc.fold_batchnorm_after(&bn).unwrap_err();
        assert_eq!(err, Error::NonFinite { name: "bn folded into fc: weight".into(), index: 2, value: f32::INFINITY });
        assert_eq!(err.to_string(), "tensor `bn folded into fc: weight` holds a non-finite value inf at flat index 2");
        // The layer is left as it was: it still computes with its own weights.
        assert_eq!(fc.weight(), &[1.0, 1.0, 1e7, 2.0]);
        let mut z = [0.0; 2];
        fc.forward(&[1.0, 1.0], 1, &mut z).unwrap();
        assert_eq!(z, [2.0, 1e7 + 2.0]);
        // Before: W'_{oj} = W_{oj} s_j, column 1 overflows at flat index 1 (negative).
        let mut fc = dense(vec![1.0, -1e7, 1.0, 1.0]);
        let err = fc.fold_batchnorm_before(&bn).unwrap_err();
        assert_eq!(
            err,
            Error::NonFinite { name: "bn folded into fc: weight".into(), index: 1, value: f32::NEG_INFINITY }
        );
        // A shift that overflows the folded bias: b'_o = b_o + sum_j W_oj t_j.
        let shifted = BatchNorm::from_stats("bn", &[1.0; 2], &[3e38; 2], &[0.0; 2], &[1.0; 2], 0.0).unwrap();
        let err = dense(vec![1.0, 1.0, 0.0, 0.0]).fold_batchnorm_before(&shifted).unwrap_err();
        assert!(matches!(&err, Error::NonFinite { name, index: 0, .. } if name == "bn folded into fc: bias"), "{err}");
        // Finite folds still work.
        let mut fc = dense(vec![1.0, 1.0, 1e-3, 2.0]);
        fc.fold_batchnorm_after(&bn).unwrap();
        assert!(fc.weight().iter().all(|w| w.is_finite()));
    }

    #[test]
    fn non_finite_scale_shift_or_statistics_are_errors() {
        // gamma / sqrt(0 + 1e-5) with gamma = 3e38 overflows f32.
        let err = BatchNorm::from_stats("bn", &[1.0, 3e38], &[0.0; 2], &[0.0; 2], &[0.0; 2], 1e-5).unwrap_err();
        assert_eq!(
            err,
            Error::NonFinite {
                name: "bn: scale = weight / sqrt(running_var + eps)".into(),
                index: 1,
                value: f32::INFINITY
            }
        );
        // beta - mean * scale with a huge mean.
        let err = BatchNorm::from_stats("bn", &[1e30; 2], &[0.0; 2], &[0.0, 1e30], &[1.0; 2], 0.0).unwrap_err();
        assert!(matches!(&err, Error::NonFinite { name, index: 1, .. } if name.starts_with("bn: shift")), "{err}");
        // Statistics given directly are checked as loaded ones are.
        let err = BatchNorm::from_stats("bn", &[1.0; 2], &[0.0; 2], &[f32::NAN, 0.0], &[1.0; 2], 0.0).unwrap_err();
        assert!(matches!(&err, Error::NonFinite { name, index: 0, .. } if name == "bn.running_mean"), "{err}");
        let err = BatchNorm::from_stats("bn", &[1.0; 2], &[0.0; 2], &[0.0; 2], &[1.0; 2], f32::INFINITY).unwrap_err();
        assert!(matches!(&err, Error::InvalidParameter { what, .. } if what.contains("`bn`")), "{err}");
    }

    #[test]
    fn layers_without_inputs_or_outputs_are_refused() {
        for (i, o) in [(0, 2), (2, 0), (0, 0)] {
            let err = LinearMap::new("fc", LinearKind::Dense { in_features: i, out_features: o }, vec![], None);
            assert!(
                matches!(&err, Err(Error::InvalidParameter { what, .. }) if what == "shape of layer `fc`"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        let bn = sharp();
        for (n, spatial) in [(usize::MAX / 2 + 1, 1), (1, usize::MAX / 2 + 1), (1 << 40, 1 << 30)] {
            let err = bn.forward(&[1.0; 4], n, spatial, &mut [0.0; 4]).unwrap_err();
            assert!(matches!(&err, Error::SizeOverflow { what } if what.contains("layer `bn`")), "{err}");
            let err = bn.relevance(&[1.0; 4], &[1.0; 4], &[1.0; 4], n, spatial, 0.0, &mut [0.0; 4]).unwrap_err();
            assert!(matches!(err, Error::SizeOverflow { .. }), "{err}");
            let err = bn.gradient(&[1.0; 4], n, spatial, &mut [0.0; 4]).unwrap_err();
            assert!(matches!(err, Error::SizeOverflow { .. }), "{err}");
        }
        bn.forward(&[1.0; 4], 2, 1, &mut [0.0; 4]).unwrap();
    }
}
