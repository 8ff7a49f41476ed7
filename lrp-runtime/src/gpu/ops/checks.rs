//! Checks of values that stay on the device: the first NaN, infinity or (optionally) negative
//! value of a range, found on the device; only its index comes back.

use super::{Arg, launch};
use crate::error::{Error, Result};
use crate::gpu::{Device, DeviceBuffer, Grid};

/// Threads of the scan: each notes the first bad value of its stripe.
const SCAN: Grid = Grid { grid: [64, 1, 1], block: [256, 1, 1] };
const THREADS: usize = 64 * 256;

/// Device buffers of [`first_bad`]: one flag per scanning thread, and the result.
pub struct CheckScratch {
    flags: DeviceBuffer,
    result: DeviceBuffer,
}

impl CheckScratch {
    pub fn new(device: &Device) -> Result<Self> {
        Ok(CheckScratch { flags: device.zeros("check flags", THREADS)?, result: device.zeros("check result", 1)? })
    }
}

/// The index (from `offset`) of the first of `len` values of `x` that is NaN, infinite or, with
/// `nonneg`, negative; `None` if there is none.
pub fn first_bad(
    device: &Device,
    (x, offset, len): (&DeviceBuffer, usize, usize),
    nonneg: bool,
    scratch: &mut CheckScratch,
) -> Result<Option<usize>> {
    if u32::try_from(len).map_or(true, |l| l == u32::MAX) {
        return Err(Error::InvalidParameter {
            what: format!("check of GPU buffer `{}`", x.what()),
            message: format!("{len} values exceed the check's 32-bit indices"),
        });
    }
    let CheckScratch { flags, result } = scratch;
    let (rx, rf, rr) = (x.range(offset, len)?, flags.range(0, THREADS)?, result.range(0, 1)?);
    let mut args = [Arg::In(x, rx), Arg::Out(flags, rf.clone()), Arg::U64(len as u64), Arg::U32(u32::from(nonneg))];
    // SAFETY: `scan_values(const float* x, float* flags, u64 n, unsigned nonneg)` reads x[0..n]
    // and writes flags[t] for each of the grid's THREADS threads t: both inside their ranges.
    unsafe { launch(device, crate::gpu::table::id::SCAN_VALUES, SCAN, &mut args) }?;
    let mut args = [Arg::In(flags, rf), Arg::Out(result, rr), Arg::U64(THREADS as u64)];
    // SAFETY: `first_flag(const float* flags, float* out, u64 count)` reads flags[0..count]
    // and (thread 0 only) writes out[0].
    unsafe { launch(device, crate::gpu::table::id::FIRST_FLAG, Grid::for_elements(1), &mut args) }?;
    let mut found = [0.0f32];
    device.read(result, 0, &mut found)?;
    Ok(match found[0].to_bits() {
        0 => None,
        bits => Some(bits as usize - 1),
    })
}

/// Checks `n` samples of `sample_len` values of `x` (from its start) as inputs are checked on
/// the host (`checks::check_samples`): an error names the sample, the index and the value.
pub fn check_samples(
    device: &Device,
    x: &DeviceBuffer,
    (n, sample_len): (usize, usize),
    nonneg: bool,
    scratch: &mut CheckScratch,
) -> Result<()> {
    let len =
        n.checked_mul(sample_len).ok_or_else(|| Error::SizeOverflow { what: format!("GPU buffer `{}`", x.what()) })?;
    let Some(at) = first_bad(device, (x, 0, len), nonneg, scratch)? else { return Ok(()) };
    let mut value = [0.0f32];
    device.read(x, at, &mut value)?;
    let (sample, index, value) = (at / sample_len.max(1), at % sample_len.max(1), value[0]);
    Err(if value.is_finite() {
        Error::NegativeInput { sample, index, value }
    } else {
        Error::NonFiniteInput { sample, index, value }
    })
}

/// Checks a given output relevance on the device, `n` samples of `classes` values from the start
/// of `r`, as `checks::check_given_relevance` does on the host: a NaN or infinity is an error
/// naming the sample and the class.
pub fn check_given_relevance(
    device: &Device,
    r: &DeviceBuffer,
    (n, classes): (usize, usize),
    scratch: &mut CheckScratch,
) -> Result<()> {
    let len = n.checked_mul(classes).ok_or_else(|| Error::SizeOverflow { what: "output relevance".into() })?;
    match first_bad(device, (r, 0, len), false, scratch)? {
        None => Ok(()),
        Some(at) => Err(Error::InvalidParameter {
            what: format!("output relevance on the device (`{}`)", r.what()),
            message: format!("value {} of sample {} is not finite", at % classes.max(1), at / classes.max(1)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bad value, wherever it lies in the threads' stripes, and none in clean data.
    #[test]
    fn the_first_bad_value_is_found() {
        let device = Device::from_env().unwrap();
        let mut scratch = CheckScratch::new(&device).unwrap();
        for len in [1, 300, THREADS + 5, 3 * THREADS] {
            let mut x: Vec<f32> = (0..len).map(|i| (i % 7) as f32).collect();
            let clean = device.upload("x", &x).unwrap();
            assert_eq!(first_bad(&device, (&clean, 0, len), true, &mut scratch).unwrap(), None);
            for (at, bad) in [(len - 1, f32::NAN), (len / 2, f32::INFINITY), (0, -1.0)] {
                x[at] = bad;
                let xb = device.upload("x", &x).unwrap();
                assert_eq!(first_bad(&device, (&xb, 0, len), true, &mut scratch).unwrap(), Some(at), "{len}, {at}");
                let negative_ok = first_bad(&device, (&xb, 0, len), false, &mut scratch).unwrap();
                assert_eq!(negative_ok, if bad < 0.0 { None } else { Some(at) });
                x[at] = 1.0;
            }
        }
        let x = device.upload("x", &[1.0, 2.0, -3.0, f32::NAN]).unwrap();
        let e = check_samples(&device, &x, (2, 2), true, &mut scratch).unwrap_err();
        assert!(matches!(e, Error::NegativeInput { sample: 1, index: 0, value } if value == -3.0), "{e}");
        let e = check_samples(&device, &x, (2, 2), false, &mut scratch).unwrap_err();
        assert!(matches!(e, Error::NonFiniteInput { sample: 1, index: 1, .. }), "{e}");
        let e = check_given_relevance(&device, &x, (2, 2), &mut scratch).unwrap_err();
        assert!(e.to_string().contains("value 1 of sample 1 is not finite"), "{e}");
        assert!(check_given_relevance(&device, &x, (1, 2), &mut scratch).is_ok());
    }
}
