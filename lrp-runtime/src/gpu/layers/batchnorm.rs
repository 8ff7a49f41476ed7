//! An explicit BatchNorm on a device (one not folded into a linear layer), made from the CPU
//! layer [`BatchNorm`] and computing what it computes, in the kernels of `cuda/batchnorm.cu`:
//! `y = s x + t` per channel over `n` samples of `[C, spatial]`, relevance by the epsilon rule
//! on the diagonal map, and the gradient. Outputs are overwritten; buffers hold at least `n`
//! samples, from offset 0.

use crate::error::{Error, Result};
use crate::gpu::ops::{Arg, elementwise, first};
use crate::gpu::{Device, DeviceBuffer, table::id};
use crate::layers::{BatchNorm, batch_len, check_buffers};

/// `nn.BatchNorm1d/2d` in evaluation mode on a device: its per-channel `scale` and `shift`.
pub struct GpuBatchNorm {
    name: String,
    channels: usize,
    scale: DeviceBuffer,
    shift: DeviceBuffer,
}

impl GpuBatchNorm {
    /// Uploads `layer`'s scale and shift.
    pub fn upload(device: &Device, layer: &BatchNorm) -> Result<Self> {
        let name = layer.name();
        if layer.shift.len() != layer.channels() {
            return Err(Error::Length {
                what: format!("shift of BatchNorm `{name}`"),
                expected: layer.channels(),
                found: layer.shift.len(),
            });
        }
        Ok(GpuBatchNorm {
            name: name.to_string(),
            channels: layer.channels(),
            scale: device.upload(&format!("{name}.scale"), &layer.scale)?,
            shift: device.upload(&format!("{name}.shift"), &layer.shift)?,
        })
    }

    /// The layer's name (PyTorch's module path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The values of `n` samples of `[C, spatial]`, after checking that each buffer `(what,
    /// buffer)` holds them; the kernels' `channels, spatial, n` arguments.
    fn check(&self, n: usize, spatial: usize, buffers: &[(&str, &DeviceBuffer)]) -> Result<(usize, [Arg<'static>; 3])> {
        let sample = batch_len(&self.name, "input", self.channels, spatial)?;
        let len = batch_len(&self.name, "input", n, sample)?;
        for &(what, b) in buffers {
            check_buffers(&self.name, &[(what, len, b.len())])?;
        }
        Ok((len, [self.channels, spatial, len].map(|v| Arg::U64(v as u64))))
    }

    /// `y = s x + t`.
    pub fn forward(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        n: usize,
        spatial: usize,
        y: &mut DeviceBuffer,
    ) -> Result<()> {
        let (len, [c, k, m]) = self.check(n, spatial, &[("input", x), ("output", y)])?;
        let (rx, ry, rs) = (first(x, len)?, first(y, len)?, first(&self.scale, self.channels)?);
        let rt = first(&self.shift, self.channels)?;
        let mut args = [Arg::In(x, rx), Arg::Out(y, ry), Arg::In(&self.scale, rs), Arg::In(&self.shift, rt), c, k, m];
        // SAFETY: `batchnorm_forward(const float* x, float* y, const float* scale, const float*
        // shift, u64 channels, u64 spatial, u64 n)` touches x[0..n], y[0..n], and scale, shift
        // at (i / spatial) % channels < channels.
        unsafe { elementwise(device, id::BATCHNORM_FORWARD, len, &mut args) }
    }

    /// Epsilon rule on the diagonal map: `r_in = x s r_out / stab(y)`, `stab(y) = y + eps
    /// sign(y)`.
    #[allow(clippy::too_many_arguments)]
    pub fn relevance(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        y: &DeviceBuffer,
        r_out: &DeviceBuffer,
        n: usize,
        spatial: usize,
        eps: f32,
        r_in: &mut DeviceBuffer,
    ) -> Result<()> {
        let buffers = [("input", x), ("output", y), ("output relevance", r_out), ("input relevance", &*r_in)];
        let (len, [c, k, m]) = self.check(n, spatial, &buffers)?;
        let (rx, ry, rr, ri) = (first(x, len)?, first(y, len)?, first(r_out, len)?, first(r_in, len)?);
        let rs = first(&self.scale, self.channels)?;
        let (x, y, r_out, r_in) = (Arg::In(x, rx), Arg::In(y, ry), Arg::In(r_out, rr), Arg::Out(r_in, ri));
        let mut args = [x, y, r_out, r_in, Arg::In(&self.scale, rs), Arg::F32(eps), c, k, m];
        // SAFETY: `batchnorm_relevance(const float* x, const float* y, const float* r_out, float*
        // r_in, const float* scale, float eps, u64 channels, u64 spatial, u64 n)` touches the
        // first n values of x, y, r_out, r_in, and scale below channels.
        unsafe { elementwise(device, id::BATCHNORM_RELEVANCE, len, &mut args) }
    }

    /// Gradient of `y = s x + t`: `g_in = s g_out`.
    pub fn gradient(
        &self,
        device: &Device,
        g_out: &DeviceBuffer,
        n: usize,
        spatial: usize,
        g_in: &mut DeviceBuffer,
    ) -> Result<()> {
        let (len, [c, k, m]) = self.check(n, spatial, &[("output gradient", g_out), ("input gradient", g_in)])?;
        let (ro, ri, rs) = (first(g_out, len)?, first(g_in, len)?, first(&self.scale, self.channels)?);
        let mut args = [Arg::In(g_out, ro), Arg::Out(g_in, ri), Arg::In(&self.scale, rs), c, k, m];
        // SAFETY: `batchnorm_gradient(const float* g_out, float* g_in, const float* scale, u64
        // channels, u64 spatial, u64 n)` touches g_out[0..n], g_in[0..n] and scale below
        // channels.
        unsafe { elementwise(device, id::BATCHNORM_GRADIENT, len, &mut args) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::ops::graph::tests::{assert_holds, garbage, values};

    /// A BatchNorm of `channels` with scales of both signs and shifts.
    fn layer(channels: usize) -> BatchNorm {
        let (gamma, beta) = (values(channels, 1), values(channels, 2));
        let mean = values(channels, 3);
        let var: Vec<f32> = values(channels, 4).iter().map(|v| v.abs() + 0.5).collect();
        BatchNorm::from_stats("bn", &gamma, &beta, &mean, &var, 1e-5).unwrap()
    }

    /// Forward, relevance and gradient against the CPU layer.
    fn check(dev: &Device, channels: usize, spatial: usize, n: usize) {
        let cpu = layer(channels);
        let gpu = GpuBatchNorm::upload(dev, &cpu).unwrap();
        let len = n * channels * spatial;
        let (x, r_out) = (values(len, 5), values(len, 6));
        let (mut y, mut r_in, mut g_in) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        cpu.forward(&x, n, spatial, &mut y).unwrap();
        cpu.relevance(&x, &y, &r_out, n, spatial, 1e-6, &mut r_in).unwrap();
        cpu.gradient(&r_out, n, spatial, &mut g_in).unwrap();
        let (xb, rb) = (dev.upload("x", &x).unwrap(), dev.upload("r_out", &r_out).unwrap());
        let (mut yb, mut rib, mut gib) = (garbage(dev, len, 1), garbage(dev, len, 1), garbage(dev, len, 1));
        gpu.forward(dev, &xb, n, spatial, &mut yb).unwrap();
        gpu.relevance(dev, &xb, &yb, &rb, n, spatial, 1e-6, &mut rib).unwrap();
        gpu.gradient(dev, &rb, n, spatial, &mut gib).unwrap();
        let shape = format!("{channels} x {spatial}, {n} samples");
        assert_holds(dev, &format!("forward {shape}"), &yb, &y, 1);
        assert_holds(dev, &format!("relevance {shape}"), &rib, &r_in, 1);
        assert_holds(dev, &format!("gradient {shape}"), &gib, &g_in, 1);
    }

    /// BatchNorm1d (spatial 1) and BatchNorm2d, one channel to many, batches of 1 to 5.
    #[test]
    fn batchnorm_matches_the_cpu_layer() {
        let dev = Device::from_env().unwrap();
        for (channels, spatial, n) in [(1, 1, 1), (7, 1, 3), (3, 25, 2), (64, 49, 4), (5, 1000, 5), (2, 3, 0)] {
            check(&dev, channels, spatial, n);
        }
    }

    #[test]
    fn misuse_is_an_error() {
        let dev = Device::from_env().unwrap();
        let gpu = GpuBatchNorm::upload(&dev, &layer(3)).unwrap();
        assert_eq!((gpu.name(), gpu.channels()), ("bn", 3));
        let (x, mut y) = (dev.zeros("x", 12).unwrap(), dev.zeros("y", 6).unwrap());
        let e = gpu.forward(&dev, &x, 2, 2, &mut y).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("output") && what.contains("`bn`")), "{e}");
        let e = gpu.gradient(&dev, &x, usize::MAX, 2, &mut y).unwrap_err();
        assert!(matches!(&e, Error::SizeOverflow { what } if what.contains("`bn`")), "{e}");
        let e = gpu.relevance(&dev, &x, &x, &y, 1, 4, 1e-6, &mut dev.zeros("r", 12).unwrap()).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("output relevance")), "{e}");
        let mut bad = layer(3);
        bad.shift.pop();
        assert!(GpuBatchNorm::upload(&dev, &bad).is_err());
    }
}
