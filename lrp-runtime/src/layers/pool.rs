//! Pooling layers over `n` samples (see [`crate::kernels::pool`] for the per-sample kernels).
//!
//! The geometry is a public field, so every pass checks it again (O(1)) and reports an invalid
//! one as an error instead of letting the kernels panic; buffer sizes `n * len` are checked.

use super::check_batch;
use crate::error::{Error, Result};
use crate::kernels::{
    AdaptivePool2dGeom, Pool2dGeom, adaptive_avgpool_forward, adaptive_avgpool_gradient, adaptive_avgpool_relevance,
    avgpool_forward, avgpool_gradient, avgpool_relevance, maxpool_forward, maxpool_relevance,
};
use crate::rules::DEFAULT_STABILIZER;

/// `nn.MaxPool2d`: relevance is winner-take-all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    pub geom: Pool2dGeom,
}

/// `nn.AvgPool2d`: relevance by the proportional rule (stabiliser 1e-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2d {
    pub geom: Pool2dGeom,
}

/// `nn.AdaptiveAvgPool2d`: PyTorch's windows `floor(i H / out) .. ceil((i + 1) H / out)` per
/// axis; relevance by the proportional rule (stabiliser 1e-6), as [`AvgPool2d`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d {
    pub geom: AdaptivePool2dGeom,
}

/// `(in_len, out_len)` of `geom` once `valid` accepts it, else [`Error::InvalidParameter`]
/// naming `layer`'s geometry.
fn lens(
    geom: &Pool2dGeom,
    layer: &str,
    valid: fn(&Pool2dGeom) -> std::result::Result<(), String>,
) -> Result<(usize, usize)> {
    valid(geom).map_err(|message| Error::InvalidParameter { what: format!("{layer} geometry"), message })?;
    Ok((geom.in_len(), geom.out_len()))
}

impl MaxPool2d {
    /// A max-pooling layer; an invalid geometry ([`Pool2dGeom::validate_max`]) is an error.
    pub fn new(geom: Pool2dGeom) -> Result<Self> {
        lens(&geom, "MaxPool2d", Pool2dGeom::validate_max)?;
        Ok(MaxPool2d { geom })
    }

    fn lens(&self) -> Result<(usize, usize)> {
        lens(&self.geom, "MaxPool2d", Pool2dGeom::validate_max)
    }

    /// Forward of `n` samples, remembering each window's winner in `argmax`.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32], argmax: &mut [u32]) -> Result<()> {
        let (i, o) = self.lens()?;
        check_batch("MaxPool2d", n, &[("input", i, x.len()), ("output", o, y.len()), ("argmax", o, argmax.len())])?;
        for s in 0..n {
            maxpool_forward(&self.geom, &x[s * i..], &mut y[s * o..], &mut argmax[s * o..]);
        }
        Ok(())
    }

    /// `r_in` (overwritten) from `r_out` through the winners of the forward pass.
    pub fn relevance(&self, argmax: &[u32], r_out: &[f32], n: usize, r_in: &mut [f32]) -> Result<()> {
        let (i, o) = self.lens()?;
        check_batch(
            "MaxPool2d",
            n,
            &[("argmax", o, argmax.len()), ("output relevance", o, r_out.len()), ("input relevance", i, r_in.len())],
        )?;
        for s in 0..n {
            maxpool_relevance(&self.geom, &argmax[s * o..], &r_out[s * o..], &mut r_in[s * i..]);
        }
        Ok(())
    }

    /// Gradient: each window's gradient flows to its winner (the same routing as the relevance).
    pub fn gradient(&self, argmax: &[u32], g_out: &[f32], n: usize, g_in: &mut [f32]) -> Result<()> {
        self.relevance(argmax, g_out, n, g_in)
    }
}

impl AvgPool2d {
    /// An average-pooling layer; an invalid geometry ([`Pool2dGeom::validate`]) is an error.
    pub fn new(geom: Pool2dGeom) -> Result<Self> {
        lens(&geom, "AvgPool2d", Pool2dGeom::validate)?;
        Ok(AvgPool2d { geom })
    }

    fn lens(&self) -> Result<(usize, usize)> {
        lens(&self.geom, "AvgPool2d", Pool2dGeom::validate)
    }

    /// Gradient: `g_in[j] = sum_{w ∋ j} g_out[w] / (kh kw)`.
    pub fn gradient(&self, g_out: &[f32], n: usize, g_in: &mut [f32]) -> Result<()> {
        let (i, o) = self.lens()?;
        check_batch("AvgPool2d", n, &[("output gradient", o, g_out.len()), ("input gradient", i, g_in.len())])?;
        for s in 0..n {
            avgpool_gradient(&self.geom, &g_out[s * o..], &mut g_in[s * i..]);
        }
        Ok(())
    }

    /// Forward of `n` samples: each window's mean.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let (i, o) = self.lens()?;
        check_batch("AvgPool2d", n, &[("input", i, x.len()), ("output", o, y.len())])?;
        for s in 0..n {
            avgpool_forward(&self.geom, &x[s * i..], &mut y[s * o..]);
        }
        Ok(())
    }

    /// `r_in` (overwritten) by the proportional rule.
    pub fn relevance(&self, x: &[f32], y: &[f32], r_out: &[f32], n: usize, r_in: &mut [f32]) -> Result<()> {
        let (i, o) = self.lens()?;
        check_batch(
            "AvgPool2d",
            n,
            &[
                ("input", i, x.len()),
                ("output", o, y.len()),
                ("output relevance", o, r_out.len()),
                ("input relevance", i, r_in.len()),
            ],
        )?;
        for s in 0..n {
            let (x, y, r_out) = (&x[s * i..], &y[s * o..], &r_out[s * o..]);
            avgpool_relevance(&self.geom, x, y, r_out, DEFAULT_STABILIZER, &mut r_in[s * i..]);
        }
        Ok(())
    }
}

impl AdaptiveAvgPool2d {
    /// An adaptive average-pooling layer; an invalid geometry
    /// ([`AdaptivePool2dGeom::validate`]) is an error.
    pub fn new(geom: AdaptivePool2dGeom) -> Result<Self> {
        let layer = AdaptiveAvgPool2d { geom };
        layer.lens()?;
        Ok(layer)
    }

    fn lens(&self) -> Result<(usize, usize)> {
        let message = |message| Error::InvalidParameter { what: "AdaptiveAvgPool2d geometry".into(), message };
        self.geom.validate().map_err(message)?;
        Ok((self.geom.in_len(), self.geom.out_len()))
    }

    /// Forward of `n` samples: each window's mean.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let (i, o) = self.lens()?;
        check_batch("AdaptiveAvgPool2d", n, &[("input", i, x.len()), ("output", o, y.len())])?;
        for s in 0..n {
            adaptive_avgpool_forward(&self.geom, &x[s * i..], &mut y[s * o..]);
        }
        Ok(())
    }

    /// `r_in` (overwritten) by the proportional rule `R_in = x ⊙ Jᵀ (R_out / stab(y))`.
    pub fn relevance(&self, x: &[f32], y: &[f32], r_out: &[f32], n: usize, r_in: &mut [f32]) -> Result<()> {
        let (i, o) = self.lens()?;
        let buffers = [
            ("input", i, x.len()),
            ("output", o, y.len()),
            ("output relevance", o, r_out.len()),
            ("input relevance", i, r_in.len()),
        ];
        check_batch("AdaptiveAvgPool2d", n, &buffers)?;
        for s in 0..n {
            let (x, y, r_out) = (&x[s * i..], &y[s * o..], &r_out[s * o..]);
            adaptive_avgpool_relevance(&self.geom, x, y, r_out, DEFAULT_STABILIZER, &mut r_in[s * i..]);
        }
        Ok(())
    }

    /// Gradient (the transposed average): `g_in[j] = sum_{w ∋ j} g_out[w] / |w|`.
    pub fn gradient(&self, g_out: &[f32], n: usize, g_in: &mut [f32]) -> Result<()> {
        let (i, o) = self.lens()?;
        check_batch("AdaptiveAvgPool2d", n, &[("output gradient", o, g_out.len()), ("input gradient", i, g_in.len())])?;
        for s in 0..n {
            adaptive_avgpool_gradient(&self.geom, &g_out[s * o..], &mut g_in[s * i..]);
        }
        Ok(())
    }
}
