//! Pooling layers on a device, made from the CPU layers ([`MaxPool2d`], [`AvgPool2d`],
//! [`AdaptiveAvgPool2d`]) and computing what they compute, in the kernels of `cuda/pool.cu`.
//!
//! All three passes of all three layers take the same arguments: `x` the layer's input and `y`
//! its forward output, `n` samples of each; outputs are overwritten. Max-pooling keeps no
//! winners: its relevance and gradient find them again from `x`.

use crate::error::Result;
use crate::gpu::{Device, DeviceBuffer, ops};
use crate::kernels::{AdaptivePool2dGeom, Pool2dGeom};
use crate::layers::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
use crate::rules::DEFAULT_STABILIZER;

/// `nn.MaxPool2d` on a device: relevance (and gradient) winner-take-all, to each window's first
/// maximum in row-major order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuMaxPool2d {
    geom: Pool2dGeom,
}

/// `nn.AvgPool2d` on a device: relevance by the proportional rule (stabiliser
/// [`DEFAULT_STABILIZER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuAvgPool2d {
    geom: Pool2dGeom,
}

/// `nn.AdaptiveAvgPool2d` on a device: relevance by the proportional rule (stabiliser
/// [`DEFAULT_STABILIZER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuAdaptiveAvgPool2d {
    geom: AdaptivePool2dGeom,
}

impl GpuMaxPool2d {
    /// The layer of `cpu`'s geometry (checked on every pass).
    pub fn new(cpu: &MaxPool2d) -> Self {
        GpuMaxPool2d { geom: cpu.geom }
    }

    /// Values per sample of the input and the output.
    pub fn lens(&self) -> (usize, usize) {
        (self.geom.in_len(), self.geom.out_len())
    }

    /// `y[w] = max_{j in w} x[j]`.
    pub fn forward(&self, device: &Device, x: &DeviceBuffer, n: usize, y: &mut DeviceBuffer) -> Result<()> {
        ops::pool::maxpool_forward(device, &self.geom, n, x, y)
    }

    /// `r_in[j] = sum_{w : winner(w) = j} r_out[w]`.
    pub fn relevance(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        _y: &DeviceBuffer,
        r_out: &DeviceBuffer,
        n: usize,
        r_in: &mut DeviceBuffer,
    ) -> Result<()> {
        ops::pool::maxpool_backward(device, &self.geom, n, x, r_out, r_in)
    }

    /// `g_in[j] = sum_{w : winner(w) = j} g_out[w]`.
    pub fn gradient(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        _y: &DeviceBuffer,
        g_out: &DeviceBuffer,
        n: usize,
        g_in: &mut DeviceBuffer,
    ) -> Result<()> {
        ops::pool::maxpool_backward(device, &self.geom, n, x, g_out, g_in)
    }
}

impl GpuAvgPool2d {
    /// The layer of `cpu`'s geometry (checked on every pass).
    pub fn new(cpu: &AvgPool2d) -> Self {
        GpuAvgPool2d { geom: cpu.geom }
    }

    /// Values per sample of the input and the output.
    pub fn lens(&self) -> (usize, usize) {
        (self.geom.in_len(), self.geom.out_len())
    }

    /// `y[w] = sum_{j in w} x[j] / (kh kw)`.
    pub fn forward(&self, device: &Device, x: &DeviceBuffer, n: usize, y: &mut DeviceBuffer) -> Result<()> {
        ops::pool::avgpool_forward(device, &self.geom, n, x, y)
    }

    /// `r_in[j] = x[j] sum_{w ∋ j} r_out[w] / (kh kw stab(y[w]))`.
    pub fn relevance(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        y: &DeviceBuffer,
        r_out: &DeviceBuffer,
        n: usize,
        r_in: &mut DeviceBuffer,
    ) -> Result<()> {
        ops::pool::avgpool_relevance(device, &self.geom, n, (x, y), r_out, DEFAULT_STABILIZER, r_in)
    }

    /// `g_in[j] = sum_{w ∋ j} g_out[w] / (kh kw)`.
    pub fn gradient(
        &self,
        device: &Device,
        _x: &DeviceBuffer,
        _y: &DeviceBuffer,
        g_out: &DeviceBuffer,
        n: usize,
        g_in: &mut DeviceBuffer,
    ) -> Result<()> {
        ops::pool::avgpool_gradient(device, &self.geom, n, g_out, g_in)
    }
}

impl GpuAdaptiveAvgPool2d {
    /// The layer of `cpu`'s geometry (checked on every pass).
    pub fn new(cpu: &AdaptiveAvgPool2d) -> Self {
        GpuAdaptiveAvgPool2d { geom: cpu.geom }
    }

    /// Values per sample of the input and the output.
    pub fn lens(&self) -> (usize, usize) {
        (self.geom.in_len(), self.geom.out_len())
    }

    /// `y[w] = sum_{j in w} x[j] / |w|`.
    pub fn forward(&self, device: &Device, x: &DeviceBuffer, n: usize, y: &mut DeviceBuffer) -> Result<()> {
        ops::pool::adaptive_avgpool_forward(device, &self.geom, n, x, y)
    }

    /// `r_in[j] = x[j] sum_{w ∋ j} r_out[w] / (|w| stab(y[w]))`.
    pub fn relevance(
        &self,
        device: &Device,
        x: &DeviceBuffer,
        y: &DeviceBuffer,
        r_out: &DeviceBuffer,
        n: usize,
        r_in: &mut DeviceBuffer,
    ) -> Result<()> {
        ops::pool::adaptive_avgpool_relevance(device, &self.geom, n, (x, y), r_out, DEFAULT_STABILIZER, r_in)
    }

    /// `g_in[j] = sum_{w ∋ j} g_out[w] / |w|`.
    pub fn gradient(
        &self,
        device: &Device,
        _x: &DeviceBuffer,
        _y: &DeviceBuffer,
        g_out: &DeviceBuffer,
        n: usize,
        g_in: &mut DeviceBuffer,
    ) -> Result<()> {
        ops::pool::adaptive_avgpool_gradient(device, &self.geom, n, g_out, g_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    /// The CPU layer a device layer is compared with.
    enum Layer {
        Max(MaxPool2d),
        Avg(AvgPool2d),
        Adaptive(AdaptiveAvgPool2d),
    }

    /// Outputs of the forward pass, the relevance and the gradient.
    type Passes = [Vec<f32>; 3];

    fn geom(
        channels: usize,
        (in_h, in_w): (usize, usize),
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Pool2dGeom {
        Pool2dGeom { channels, in_h, in_w, kernel, stride, padding }
    }

    /// Values with both signs, few distinct ones when `ties` (several equal maxima per window).
    fn values(n: usize, salt: usize, ties: bool) -> Vec<f32> {
        let m = if ties { 5 } else { 23 };
        (0..n).map(|i| ((i * 31 + salt * 17) % m) as f32 / 4.0 - 1.2).collect()
    }

    /// The largest difference relative to the largest reference magnitude.
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale
    }

    fn lens(layer: &Layer) -> (usize, usize) {
        match layer {
            Layer::Max(l) => (l.geom.in_len(), l.geom.out_len()),
            Layer::Avg(l) => (l.geom.in_len(), l.geom.out_len()),
            Layer::Adaptive(l) => (l.geom.in_len(), l.geom.out_len()),
        }
    }

    /// The CPU layer's passes over `n` samples; `r_out` is also the output gradient.
    fn cpu_passes(layer: &Layer, x: &[f32], r_out: &[f32], n: usize) -> Passes {
        let (i, o) = lens(layer);
        let (mut y, mut r_in, mut g_in) = (vec![0.0; n * o], vec![0.0; n * i], vec![0.0; n * i]);
        match layer {
            Layer::Max(l) => {
                let mut argmax = vec![0u32; n * o];
                l.forward(x, n, &mut y, &mut argmax).unwrap();
                l.relevance(&argmax, r_out, n, &mut r_in).unwrap();
                l.gradient(&argmax, r_out, n, &mut g_in).unwrap();
            }
            Layer::Avg(l) => {
                l.forward(x, n, &mut y).unwrap();
                l.relevance(x, &y, r_out, n, &mut r_in).unwrap();
                l.gradient(r_out, n, &mut g_in).unwrap();
            }
            Layer::Adaptive(l) => {
                l.forward(x, n, &mut y).unwrap();
                l.relevance(x, &y, r_out, n, &mut r_in).unwrap();
                l.gradient(r_out, n, &mut g_in).unwrap();
            }
        }
        [y, r_in, g_in]
    }

    /// The device layer's passes over `n` samples, as [`cpu_passes`].
    fn gpu_passes(dev: &Device, layer: &Layer, x: &[f32], r_out: &[f32], n: usize) -> Passes {
        let (i, o) = lens(layer);
        let (xb, rb) = (dev.upload("x", x).unwrap(), dev.upload("r_out", r_out).unwrap());
        let mut y = dev.zeros("y", n * o).unwrap();
        // Filled with garbage: every pass overwrites its output.
        let mut r_in = dev.upload("r_in", &vec![f32::NAN; n * i]).unwrap();
        let mut g_in = dev.upload("g_in", &vec![f32::NAN; n * i]).unwrap();
        macro_rules! run {
            ($l:expr) => {{
                $l.forward(dev, &xb, n, &mut y).unwrap();
                $l.relevance(dev, &xb, &y, &rb, n, &mut r_in).unwrap();
                $l.gradient(dev, &xb, &y, &rb, n, &mut g_in).unwrap();
            }};
        }
        match layer {
            Layer::Max(l) => run!(GpuMaxPool2d::new(l)),
            Layer::Avg(l) => run!(GpuAvgPool2d::new(l)),
            Layer::Adaptive(l) => run!(GpuAdaptiveAvgPool2d::new(l)),
        }
        [&y, &r_in, &g_in].map(|b| dev.download(b).unwrap())
    }

    /// Compares the device layer with the CPU layer on `x` and an output relevance.
    fn assert_matches_cpu(dev: &Device, layer: &Layer, x: &[f32], n: usize, what: &str) {
        let r_out = values(n * lens(layer).1, 3, false);
        let want = cpu_passes(layer, x, &r_out, n);
        let got = gpu_passes(dev, layer, x, &r_out, n);
        for (pass, (g, w)) in ["forward", "relevance", "gradient"].iter().zip(got.iter().zip(&want)) {
            let e = relative_error(g, w);
            assert!(e <= 1e-5, "{what}, {pass}: relative error {e}");
        }
    }

    /// Max- and average pooling on the non-overlapping, overlapping, padded, non-square and
    /// non-tiling geometries, with and without ties, for a batch of 3.
    #[test]
    fn pooling_layers_match_the_cpu_layers() {
        let dev = Device::from_env().unwrap();
        let n = 3;
        let geoms = [
            geom(4, (8, 8), [2, 2], [2, 2], [0, 0]),
            geom(3, (15, 15), [3, 3], [2, 2], [1, 1]),
            geom(2, (7, 9), [3, 3], [1, 1], [1, 1]),
            geom(3, (7, 10), [2, 3], [1, 2], [1, 1]),
            geom(2, (8, 9), [3, 3], [2, 2], [0, 0]),
            geom(1, (7, 9), [2, 2], [2, 2], [0, 0]),
            geom(2, (5, 11), [3, 2], [3, 1], [1, 0]),
        ];
        for g in geoms {
            for ties in [true, false] {
                let x = values(n * g.in_len(), 1, ties);
                let max = Layer::Max(MaxPool2d::new(g).unwrap());
                assert_matches_cpu(&dev, &max, &x, n, &format!("MaxPool2d {g:?}, ties: {ties}"));
            }
            // Average pooling after a ReLU: inputs positive, denominators away from zero.
            let x: Vec<f32> = values(n * g.in_len(), 2, false).iter().map(|v| v.abs() + 0.1).collect();
            assert_matches_cpu(&dev, &Layer::Avg(AvgPool2d::new(g).unwrap()), &x, n, &format!("AvgPool2d {g:?}"));
        }
    }

    /// Adaptive pooling: even windows (14 -> 7), uneven and overlapping ones (9x13 -> 7x7),
    /// repeated inputs (5x3 -> 7x7), and the global average.
    #[test]
    fn adaptive_pooling_matches_the_cpu_layer() {
        let dev = Device::from_env().unwrap();
        let n = 3;
        for (channels, in_h, in_w, out_h, out_w) in
            [(3, 14, 14, 7, 7), (2, 9, 13, 7, 7), (2, 5, 3, 7, 7), (2, 6, 5, 1, 1)]
        {
            let g = AdaptivePool2dGeom { channels, in_h, in_w, out_h, out_w };
            let x: Vec<f32> = values(n * g.in_len(), 4, false).iter().map(|v| v.abs() + 0.1).collect();
            let layer = Layer::Adaptive(AdaptiveAvgPool2d::new(g).unwrap());
            assert_matches_cpu(&dev, &layer, &x, n, &format!("AdaptiveAvgPool2d {g:?}"));
        }
    }

    /// Ties go to the first maximum, NaNs win (the last in row-major order), bit for bit as on
    /// the CPU: all equal, all -inf, all NaN, and NaNs among numbers, at padded edges.
    #[test]
    fn max_pooling_ties_and_nans_route_as_on_the_cpu() {
        let dev = Device::from_env().unwrap();
        let g = geom(2, (5, 8), [3, 3], [2, 2], [1, 1]);
        let len = g.in_len();
        let nan = |k: usize| f32::from_bits(0x7fc0_0000 | k as u32);
        let mixed: Vec<f32> = (0..len).map(|i| if i % 7 == 3 { nan(i) } else { (i % 3) as f32 }).collect();
        let inputs = [vec![-0.5; len], vec![f32::NEG_INFINITY; len], (0..len).map(nan).collect(), mixed];
        let layer = Layer::Max(MaxPool2d::new(g).unwrap());
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for x in inputs {
            let r_out = values(g.out_len(), 5, false);
            let want = cpu_passes(&layer, &x, &r_out, 1);
            let got = gpu_passes(&dev, &layer, &x, &r_out, 1);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(bits(g), bits(w), "input {x:?}");
            }
        }
        // A 2x2 window of [1, 3; 3, 0]: the first 3 wins.
        let g = geom(1, (2, 2), [2, 2], [2, 2], [0, 0]);
        let got = gpu_passes(&dev, &Layer::Max(MaxPool2d::new(g).unwrap()), &[1.0, 3.0, 3.0, 0.0], &[2.0], 1);
        assert_eq!(got, [vec![3.0], vec![0.0, 2.0, 0.0, 0.0], vec![0.0, 2.0, 0.0, 0.0]]);
    }

    /// Invalid geometries, sizes past `u32` and short buffers are errors, not panics.
    #[test]
    fn misuse_is_an_error() {
        let dev = Device::from_env().unwrap();
        let (x, mut y) = (dev.zeros("x", 64).unwrap(), dev.zeros("y", 16).unwrap());
        let bad = MaxPool2d { geom: geom(1, (8, 8), [2, 2], [0, 2], [0, 0]) };
        let e = GpuMaxPool2d::new(&bad).forward(&dev, &x, 1, &mut y).unwrap_err();
        assert!(matches!(&e, Error::InvalidParameter { what, .. } if what.contains("MaxPool2d geometry")), "{e}");
        let huge = AvgPool2d { geom: geom(1, (1 << 33, 1), [1, 1], [1, 1], [0, 0]) };
        let e = GpuAvgPool2d::new(&huge).forward(&dev, &x, 1, &mut y).unwrap_err();
        assert!(e.to_string().contains("fit u32"), "{e}");
        let ok = AvgPool2d { geom: geom(1, (8, 8), [2, 2], [2, 2], [0, 0]) };
        let e = GpuAvgPool2d::new(&ok).forward(&dev, &x, 2, &mut y).unwrap_err();
        assert!(matches!(&e, Error::Length { what, .. } if what.contains("`x`")), "{e}");
        let e = GpuAvgPool2d::new(&ok).forward(&dev, &x, usize::MAX, &mut y).unwrap_err();
        assert!(matches!(e, Error::SizeOverflow { .. }), "{e}");
        let adaptive =
            AdaptiveAvgPool2d { geom: AdaptivePool2dGeom { channels: 1, in_h: 8, in_w: 8, out_h: 0, out_w: 1 } };
        let e = GpuAdaptiveAvgPool2d::new(&adaptive).forward(&dev, &x, 1, &mut y).unwrap_err();
        assert!(matches!(&e, Error::InvalidParameter { what, .. } if what.contains("AdaptiveAvgPool2d")), "{e}");
    }
}
