//! Pooling layers over `n` samples (see [`crate::kernels::pool`] for the per-sample kernels).

use super::check_buffers;
use crate::error::{Error, Result};
use crate::kernels::{
    Pool2dGeom, avgpool_forward, avgpool_gradient, avgpool_relevance, maxpool_forward, maxpool_relevance,
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

impl MaxPool2d {
    /// A max-pooling layer; an invalid geometry is an error.
    pub fn new(geom: Pool2dGeom) -> Result<Self> {
        geom.validate().map_err(|message| Error::InvalidParameter { what: "MaxPool2d geometry".into(), message })?;
        Ok(MaxPool2d { geom })
    }

    /// Forward of `n` samples, remembering each window's winner in `argmax`.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32], argmax: &mut [u32]) -> Result<()> {
        let (i, o) = (self.geom.in_len(), self.geom.out_len());
        check_buffers(
            "MaxPool2d",
            &[("input", n * i, x.len()), ("output", n * o, y.len()), ("argmax", n * o, argmax.len())],
        )?;
        for s in 0..n {
            maxpool_forward(&self.geom, &x[s * i..], &mut y[s * o..], &mut argmax[s * o..]);
        }
        Ok(())
    }

    /// `r_in` (overwritten) from `r_out` through the winners of the forward pass.
    pub fn relevance(&self, argmax: &[u32], r_out: &[f32], n: usize, r_in: &mut [f32]) -> Result<()> {
        let (i, o) = (self.geom.in_len(), self.geom.out_len());
        check_buffers(
            "MaxPool2d",
            &[
                ("argmax", n * o, argmax.len()),
                ("output relevance", n * o, r_out.len()),
                ("input relevance", n * i, r_in.len()),
            ],
        )?;
        for s in 0..n {
            maxpool_relevance(&self.geom, &argmax[s * o..], &r_out[s * o..], &mut r_in[s * i..]);
        }
        Ok(())
    }
}

impl MaxPool2d {
    /// Gradient: each window's gradient flows to its winner (the same routing as the relevance).
    pub fn gradient(&self, argmax: &[u32], g_out: &[f32], n: usize, g_in: &mut [f32]) -> Result<()> {
        self.relevance(argmax, g_out, n, g_in)
    }
}

impl AvgPool2d {
    /// Gradient: `g_in[j] = sum_{w ∋ j} g_out[w] / (kh kw)`.
    pub fn gradient(&self, g_out: &[f32], n: usize, g_in: &mut [f32]) -> Result<()> {
        let (i, o) = (self.geom.in_len(), self.geom.out_len());
        check_buffers("AvgPool2d", &[("output gradient", n * o, g_out.len()), ("input gradient", n * i, g_in.len())])?;
        for s in 0..n {
            avgpool_gradient(&self.geom, &g_out[s * o..], &mut g_in[s * i..]);
        }
        Ok(())
    }

    /// An average-pooling layer; an invalid geometry is an error.
    pub fn new(geom: Pool2dGeom) -> Result<Self> {
        geom.validate().map_err(|message| Error::InvalidParameter { what: "AvgPool2d geometry".into(), message })?;
        Ok(AvgPool2d { geom })
    }

    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let (i, o) = (self.geom.in_len(), self.geom.out_len());
        check_buffers("AvgPool2d", &[("input", n * i, x.len()), ("output", n * o, y.len())])?;
        for s in 0..n {
            avgpool_forward(&self.geom, &x[s * i..], &mut y[s * o..]);
        }
        Ok(())
    }

    /// `r_in` (overwritten) by the proportional rule.
    pub fn relevance(&self, x: &[f32], y: &[f32], r_out: &[f32], n: usize, r_in: &mut [f32]) -> Result<()> {
        let (i, o) = (self.geom.in_len(), self.geom.out_len());
        check_buffers(
            "AvgPool2d",
            &[
                ("input", n * i, x.len()),
                ("output", n * o, y.len()),
                ("output relevance", n * o, r_out.len()),
                ("input relevance", n * i, r_in.len()),
            ],
        )?;
        for s in 0..n {
            avgpool_relevance(
                &self.geom,
                &x[s * i..],
                &y[s * o..],
                &r_out[s * o..],
                DEFAULT_STABILIZER,
                &mut r_in[s * i..],
            );
        }
        Ok(())
    }
}
