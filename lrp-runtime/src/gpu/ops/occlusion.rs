//! Occluded copies of a sample, made on the device for a batch of occlusion forward passes.

use super::{Arg, elementwise};
use crate::error::{Error, Result};
use crate::gpu::{Device, DeviceBuffer};
use crate::occlusion::Windows;

/// `out[c]` (copy `c` of the sample at `offset` of `x`, `c < copies`) = the sample with window
/// `first + c` of `windows` set to zero; `out` holds the copies back to back from its start.
pub fn occlude(
    device: &Device,
    windows: &Windows<'_>,
    (x, offset): (&DeviceBuffer, usize),
    first: usize,
    copies: usize,
    out: &mut DeviceBuffer,
) -> Result<()> {
    let (shape, window) = (windows.shape(), windows.window());
    let len: usize = shape.iter().product();
    let n = len.checked_mul(copies).ok_or_else(|| Error::SizeOverflow { what: "occluded copies".into() })?;
    let (rx, ro) = (x.range(offset, len)?, out.range(0, n)?);
    // Dimensions padded to four at the front (size 1, window 1), windows capped at their
    // dimension, all checked to fit the kernel's `unsigned`.
    let mut dims = [[1u32; 4]; 2];
    for (k, (&s, &w)) in shape.iter().zip(window).enumerate() {
        let at = 4 - shape.len() + k;
        let fit = |v: usize| {
            u32::try_from(v).map_err(|_| Error::InvalidParameter {
                what: "occlusion window".into(),
                message: format!("the sample's dimension {v} exceeds the GPU kernels' 32-bit sizes"),
            })
        };
        dims[0][at] = fit(s)?;
        dims[1][at] = fit(w.min(s))?;
    }
    let [[s0, s1, s2, s3], [w0, w1, w2, w3]] = dims.map(|d| d.map(Arg::U32));
    let mut args = [
        Arg::In(x, rx),
        Arg::Out(out, ro),
        Arg::U64(len as u64),
        s0,
        s1,
        s2,
        s3,
        w0,
        w1,
        w2,
        w3,
        Arg::U64(first as u64),
        Arg::U64(n as u64),
    ];
    // SAFETY: `occlude_windows(const float* x, float* out, u64 len, 4 x unsigned shape, 4 x
    // unsigned window, u64 first, u64 n)` writes out[0..n] and reads x[i % len], inside the
    // sample's checked range.
    unsafe { elementwise(device, crate::gpu::table::id::OCCLUDE_WINDOWS, n, &mut args) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window of several tilings, in batches, against `Windows::for_each_index`.
    #[test]
    fn occluded_copies_zero_exactly_their_window() {
        let device = Device::from_env().unwrap();
        for (shape, window) in [
            (&[3usize, 5, 4][..], &[3usize, 2, 2][..]),
            (&[7], &[2]),
            (&[2, 3], &[usize::MAX, 2]),
            (&[1, 2, 4, 4], &[1, 1, 3, 3]),
        ] {
            let windows = Windows::new(shape, window).unwrap();
            let len: usize = shape.iter().product();
            let x: Vec<f32> = (0..2 * len).map(|i| i as f32 + 1.0).collect();
            let xb = device.upload("x", &x).unwrap();
            let mut out = device.zeros("out", windows.count() * len).unwrap();
            occlude(&device, &windows, (&xb, len), 0, windows.count(), &mut out).unwrap();
            let got = device.download(&out).unwrap();
            for w in 0..windows.count() {
                let mut want = x[len..].to_vec();
                windows.for_each_index(w, |j| want[j] = 0.0);
                assert_eq!(&got[w * len..(w + 1) * len], &want[..], "{shape:?} / {window:?}, window {w}");
            }
        }
        let windows = Windows::new(&[4], &[1]).unwrap();
        let xb = device.upload("x", &[1.0; 4]).unwrap();
        let mut out = device.zeros("out", 4).unwrap();
        assert!(occlude(&device, &windows, (&xb, 1), 0, 1, &mut out).is_err(), "a sample past the buffer");
        assert!(occlude(&device, &windows, (&xb, 0), 0, 2, &mut out).is_err(), "copies past the output");
    }
}
